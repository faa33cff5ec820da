"""k-nearest-neighbour manifold metrics: precision and recall, density and coverage, with exact radii, blockwise.

Each sample's manifold ball has radius ``r_k(x)``, the distance to its k-th nearest neighbour among the *other*
samples of its own set (equivalently the (k + 1)-th smallest distance with the sample itself counted, as ADM's
evaluator, torch-fidelity and the ``prdc`` package all take it; a duplicate of a sample is a neighbour at
distance 0).

Precision and recall (Kynkäänniemi et al. 2019, ``k = 3``), as OpenAI's ADM evaluator (``ManifoldEstimator``)
and torch-fidelity compute them, with inclusive balls:

    precision = fraction of fake samples y with  d(y, x) <= r_k(x)  for some real x
    recall    = fraction of real samples x with  d(x, y) <= r_k(y)  for some fake y

Density and coverage (Naeem et al. 2020, ``k = 5``), as the ``prdc`` package computes them, with strict balls
(``prdc`` also reports precision and recall with strict balls, at its k):

    density   = (1 / (k N_fake)) sum_y #{x real : d(y, x) < r_k(x)}
    coverage  = fraction of real x with  min_y d(x, y) < r_k(x)

How it is computed, and why it is exact
---------------------------------------
Squared distances are computed in blocks of rows against all columns as ``|x|^2 + |y|^2 - 2 x.y``, the product
in float32 (twice the speed of float64) and the rest in float64, on features centred (on each side's own mean for
its radii, on the common mean for the cross pass: the norms, hence the error, shrink to the spread of the points),
with the block height chosen so that the blocks stay under ``memory_budget``: no ``N x N`` matrix is ever formed,
and 50,000 against 50,000 runs in a few GB. That fast value has a rounding error bounded by
``tol = ((dim + 8) 2^-24 + 4 (dim + 8) 2^-53) (|x| + |y|)^2`` (a forward error bound, whatever the order of the
sums, with a factor 2 of margin; :func:`_tolerance_factor`).
Every decision is then taken on the *reference distance* ``t(x, y)``: the float64 sum of squares of the float64
difference of the features as given (:func:`exact_sq_distances`), deterministic for each pair:

* a radius is the reference distance of the k-th neighbour; only when another candidate lies within ``2 tol``
  of the k-th one are all those candidates recomputed and ranked by their reference distances;
* a comparison ``d <= r`` or ``d < r`` whose fast value lies within ``tol`` of the radius is recomputed (in the
  cross pass ``tol`` is taken at the largest norms of both sides, one bound for all pairs).

The band is about ``5e-4`` of the distances at dim 2048 (``1e-12`` with torch, which screens in float64), so about
one distance per sample is recomputed beyond one per radius (measured: 7,846 for 5,000 against 5,000 pool_3-like
features, of 75 million pairs), and the results equal a brute-force computation with full matrices of reference
distances, ties included (duplicates are at exactly 0, equal pairs give equal values). Squared distances are
compared, which is the same as comparing distances. A block whose float32 screen leaves more than 2 % of its
entries to recompute (a set made of clusters far apart against their spread, where the norms dwarf the
neighbour distances) is computed again in float64 instead (``precise_blocks`` in the results).

The reference tools compute the distances in lower precision (ADM in float16 with a float32 fallback,
torch-fidelity and ``prdc``/scikit-learn in float32 from the matrix-product formula), so on real features they
can differ from these exact numbers where a point sits within their round-off of a ball's edge
(``docs/metrics.md`` gives the measured differences).

With a torch ``device`` (a CUDA GPU, or ``"cpu"``) the blocks, the k smallest values and the comparisons run in
torch on that device, in float64 throughout (a float32 product there may run in TF32, which the bound does not
cover); the recomputations and the radii's reference distances stay in numpy, so the results are the same.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from fidkit._validate import is_count
from fidkit.errors import InputError
from fidkit.metrics._common import check_pair, check_positive_int, plain_dict
from fidkit.metrics.neighbours import DEFAULT_MEMORY_BUDGET, exact_sq_distances, neighbour_tallies, radii_of

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "PrecisionRecallResult",
    "DensityCoverageResult",
    "ManifoldResult",
    "precision_recall",
    "density_coverage",
    "manifold_metrics",
    "knn_radii",
    "exact_sq_distances",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PrecisionRecallResult:
    """Improved precision and recall (Kynkäänniemi et al. 2019), inclusive balls, as ADM's evaluator.

    Attributes
    ----------
    precision : float
        Fraction of fake samples inside some real sample's k-NN ball.
    recall : float
        Fraction of real samples inside some fake sample's k-NN ball.
    k : int
    n_real, n_fake, dim : int
    recomputed : int
        Distances recomputed from the features because the fast formula could not decide (ties, near-ties).
    precise_blocks : int
        Row blocks computed again in float64 because the float32 screen left too much undecided (sets made of
        clusters far apart against their spread); 0 on typical features.
    """

    precision: float
    recall: float
    k: int
    n_real: int
    n_fake: int
    dim: int
    recomputed: int
    precise_blocks: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return plain_dict(self)


@dataclass(frozen=True)
class DensityCoverageResult:
    """Precision, recall, density and coverage as the ``prdc`` package computes them (strict balls).

    Attributes
    ----------
    precision, recall : float
        As :class:`PrecisionRecallResult` but with strict balls ``d < r`` and this k (prdc's convention).
    density : float
        Mean number of real balls containing a fake sample, divided by k (can exceed 1).
    coverage : float
        Fraction of real samples whose ball contains some fake sample.
    k : int
    n_real, n_fake, dim : int
    recomputed, precise_blocks : int
        As in :class:`PrecisionRecallResult`.
    """

    precision: float
    recall: float
    density: float
    coverage: float
    k: int
    n_real: int
    n_fake: int
    dim: int
    recomputed: int
    precise_blocks: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return plain_dict(self)


@dataclass(frozen=True)
class ManifoldResult:
    """The four numbers of an evaluation table from one pass over the distances.

    Attributes
    ----------
    precision, recall : float
        ADM's (inclusive balls, ``k_pr`` neighbours).
    density, coverage : float
        prdc's (strict balls, ``k_dc`` neighbours).
    k_pr, k_dc : int
    n_real, n_fake, dim : int
    recomputed, precise_blocks : int
        As in :class:`PrecisionRecallResult`.
    """

    precision: float
    recall: float
    density: float
    coverage: float
    k_pr: int
    k_dc: int
    n_real: int
    n_fake: int
    dim: int
    recomputed: int
    precise_blocks: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return plain_dict(self)


def _check_k(k: Any, name: str, n_real: int, n_fake: int) -> int:
    k = check_positive_int(k, name)
    smallest = min(n_real, n_fake)
    if k > smallest - 1:
        raise InputError(
            f"{name}={k} needs at least {k + 1} samples per side (a ball of k other samples), but the smaller side "
            f"has {smallest}; pass a smaller {name} or more samples"
        )
    return k


def _check_budget(memory_budget: Any) -> int:
    if not is_count(memory_budget):
        raise InputError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
    return int(memory_budget)


def knn_radii(features: Any, k: int, *, memory_budget: int = DEFAULT_MEMORY_BUDGET, device: Any = None) -> np.ndarray:
    """Squared distance of each sample to its k-th nearest other sample (reference distances, blockwise).

    Parameters
    ----------
    features : array_like
        ``(N, dim)``, ``N > k``.
    k : int
    memory_budget : int
        Bytes for the distance blocks.
    device : torch device or str, optional
        Compute the blocks with torch on this device.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64 squared radii.
    """
    array, _ = check_pair(features, features, ("features", "features"))
    k = _check_k(k, "k", array.shape[0], array.shape[0])
    memory_budget = _check_budget(memory_budget)
    return radii_of(array, k, memory_budget, device)


def precision_recall(
    real: Any, fake: Any, *, k: int = 3, memory_budget: int = DEFAULT_MEMORY_BUDGET, device: Any = None
) -> PrecisionRecallResult:
    """Improved precision and recall (Kynkäänniemi et al. 2019) as OpenAI's ADM evaluator computes them.

    Parameters
    ----------
    real, fake : array_like
        ``(N_real, dim)`` reference features and ``(N_fake, dim)`` generated features (pool_3), at least
        ``k + 1`` rows each.
    k : int
        Neighbourhood size (ADM and torch-fidelity: 3).
    memory_budget : int
        Bytes for the distance blocks (512 MiB by default); the features' float64 centred copies
        (``8 N dim`` bytes per side) come on top.
    device : torch device or str, optional
        Compute the distance blocks with torch on this device (``"cuda"``); None: numpy on the CPU.

    Returns
    -------
    PrecisionRecallResult

    Raises
    ------
    InputError
        Arrays that are not finite ``(N, dim)`` floats, different dims, ``k >= N``, bad arguments.

    Notes
    -----
    Cost: three ``N x N x dim`` products in float64 (real-real, fake-fake, fake-real), i.e. ``6 N^2 dim`` flops
    for two sides of N; the measured times are in ``docs/metrics.md``.
    """
    memory_budget = _check_budget(memory_budget)
    array_real, array_fake = check_pair(real, fake, ("real", "fake"))
    k = _check_k(k, "k", array_real.shape[0], array_fake.shape[0])
    tallies, (n_real, n_fake, dim), counter = neighbour_tallies(array_real, array_fake, (k,), memory_budget, device)
    tally = tallies[k]
    return PrecisionRecallResult(
        precision=float(np.mean(tally.fake_in_real_inclusive)),
        recall=float(np.mean(tally.real_in_fake_inclusive)),
        k=k,
        n_real=n_real,
        n_fake=n_fake,
        dim=dim,
        recomputed=counter.recomputed,
        precise_blocks=counter.precise_blocks,
    )


def density_coverage(
    real: Any, fake: Any, *, k: int = 5, memory_budget: int = DEFAULT_MEMORY_BUDGET, device: Any = None
) -> DensityCoverageResult:
    """Precision, recall, density and coverage as ``prdc.compute_prdc(real, fake, nearest_k=k)`` computes them.

    Parameters
    ----------
    real, fake : array_like
        ``(N_real, dim)`` and ``(N_fake, dim)`` features, at least ``k + 1`` rows each.
    k : int
        Neighbourhood size (Naeem et al. recommend 5).
    memory_budget, device
        As in :func:`precision_recall`.

    Returns
    -------
    DensityCoverageResult

    Raises
    ------
    InputError
        As :func:`precision_recall`.
    """
    memory_budget = _check_budget(memory_budget)
    array_real, array_fake = check_pair(real, fake, ("real", "fake"))
    k = _check_k(k, "k", array_real.shape[0], array_fake.shape[0])
    tallies, (n_real, n_fake, dim), counter = neighbour_tallies(array_real, array_fake, (k,), memory_budget, device)
    tally = tallies[k]
    return DensityCoverageResult(
        precision=float(np.mean(tally.fake_ball_count_strict > 0)),
        recall=float(np.mean(tally.real_in_fake_strict)),
        density=float(tally.fake_ball_count_strict.sum() / (k * n_fake)),
        coverage=float(np.mean(tally.real_covered_strict)),
        k=k,
        n_real=n_real,
        n_fake=n_fake,
        dim=dim,
        recomputed=counter.recomputed,
        precise_blocks=counter.precise_blocks,
    )


def manifold_metrics(
    real: Any,
    fake: Any,
    *,
    k_pr: int = 3,
    k_dc: int = 5,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    device: Any = None,
) -> ManifoldResult:
    """ADM's precision and recall (``k_pr``) and prdc's density and coverage (``k_dc``) in one pass.

    The three distance products are computed once for both neighbourhood sizes, so this costs about what one of
    :func:`precision_recall` or :func:`density_coverage` costs. Arguments as in those functions.

    Returns
    -------
    ManifoldResult
    """
    memory_budget = _check_budget(memory_budget)
    array_real, array_fake = check_pair(real, fake, ("real", "fake"))
    k_pr = _check_k(k_pr, "k_pr", array_real.shape[0], array_fake.shape[0])
    k_dc = _check_k(k_dc, "k_dc", array_real.shape[0], array_fake.shape[0])
    ks = tuple(sorted({k_pr, k_dc}))
    tallies, (n_real, n_fake, dim), counter = neighbour_tallies(array_real, array_fake, ks, memory_budget, device)
    pr, dc = tallies[k_pr], tallies[k_dc]
    return ManifoldResult(
        precision=float(np.mean(pr.fake_in_real_inclusive)),
        recall=float(np.mean(pr.real_in_fake_inclusive)),
        density=float(dc.fake_ball_count_strict.sum() / (k_dc * n_fake)),
        coverage=float(np.mean(dc.real_covered_strict)),
        k_pr=k_pr,
        k_dc=k_dc,
        n_real=n_real,
        n_fake=n_fake,
        dim=dim,
        recomputed=counter.recomputed,
        precise_blocks=counter.precise_blocks,
    )
