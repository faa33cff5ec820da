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
Squared distances are computed in float64 blocks of rows against all columns,
``|x|^2 + |y|^2 - 2 x.y`` on features centred on their common mean (centring keeps the norms small against the
distances, so little cancels), with the block height chosen so that the blocks stay under ``memory_budget``:
no ``N x N`` matrix is ever formed, and 50,000 against 50,000 runs in a few GB. That fast formula has a rounding
error bounded by ``tol = 4 (dim + 8) 2^-53 (|x| + |y|)^2`` (a forward error bound, whatever the order of the sums).
Every decision is then taken on the *reference distance* ``t(x, y)``: the float64 sum of squares of the float64
difference of the features as given (:func:`exact_sq_distances`), deterministic for each pair:

* a radius is the reference distance of the k-th neighbour; only when another candidate lies within ``2 tol``
  of the k-th one are all those candidates recomputed and ranked by their reference distances;
* a comparison ``d <= r`` or ``d < r`` whose fast value lies within ``tol`` of the radius is recomputed (in the
  cross pass ``tol`` is taken at the largest norms of both sides, one bound for all pairs).

In float64 the band is about ``1e-12`` of the distances, so outside exact ties (duplicated images) nothing but
the one neighbour per radius is recomputed, and the results equal a brute-force computation with full matrices
of reference distances, ties included (duplicates are at exactly 0, equal pairs give equal values). Squared
distances are compared, which is the same as comparing distances.

The reference tools compute the distances in lower precision (ADM in float16 with a float32 fallback,
torch-fidelity and ``prdc``/scikit-learn in float32 from the matrix-product formula), so on real features they
can differ from these exact numbers where a point sits within their round-off of a ball's edge
(``docs/metrics.md`` gives the measured differences).

With a torch ``device`` (a CUDA GPU, or ``"cpu"``) the blocks, the k smallest values and the comparisons run in
torch in float64 on that device; the recomputations and the radii's reference distances stay in numpy, so the
results are the same.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from fidkit.errors import InputError
from fidkit.metrics._common import check_pair, check_positive_int, plain_dict

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

#: Default bound on the memory of the distance blocks (bytes).
DEFAULT_MEMORY_BUDGET = 512 * 2**20
# Bytes held per entry of a row block: the block itself (8), two masks (2), the index array of the k smallest in
# the radii pass (8) and numpy's temporaries (argpartition's working copy, 8).
_BYTES_PER_ENTRY = 32
# u = 2^-53, float64's unit round-off. Forward error of |x|^2 + |y|^2 - 2 x.y against the reference distance:
# gamma_dim (|x| + |y|)^2 for the formula, about 2u (|x| + |y|)^2 for centring, gamma_(dim+1) |x - y|^2 for the
# reference itself; (2 dim + 6) u in all, doubled for margin.
_UNIT_ROUNDOFF = 2.0**-53


def _tolerance_factor(dim: int) -> float:
    return 4.0 * (dim + 8) * _UNIT_ROUNDOFF


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
    """

    precision: float
    recall: float
    k: int
    n_real: int
    n_fake: int
    dim: int
    recomputed: int

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
    recomputed : int
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
    recomputed : int
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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return plain_dict(self)


# --------------------------------------------------------------------------------------------- reference distance


def exact_sq_distances(rows_a: np.ndarray, rows_b: np.ndarray) -> np.ndarray:
    """The reference squared distances of paired rows: ``sum((a_i - b_i)^2)`` in float64, row by row.

    Deterministic per pair (the same two feature vectors always give the same bits), exactly 0 for equal rows.

    Parameters
    ----------
    rows_a, rows_b : numpy.ndarray
        ``(m, dim)`` each (any float dtype; converted to float64, which represents float32 values exactly).

    Returns
    -------
    numpy.ndarray
        ``(m,)`` float64.
    """
    difference = np.asarray(rows_a, dtype=np.float64) - np.asarray(rows_b, dtype=np.float64)
    difference *= difference
    return difference.sum(axis=1)


# --------------------------------------------------------------------------------------------- backends


class _NumpyBackend:
    """Blocks as numpy arrays."""

    name = "numpy"

    def put(self, array: np.ndarray) -> np.ndarray:
        return array

    def host(self, array: Any) -> np.ndarray:
        return np.asarray(array)

    def sq_distances(self, rows: np.ndarray, row_norms: np.ndarray, cols: np.ndarray, col_norms: np.ndarray):
        block = rows @ cols.T
        block *= -2.0
        block += row_norms[:, None]
        block += col_norms[None, :]
        np.maximum(block, 0.0, out=block)
        return block

    def count(self, mask: np.ndarray, axis: int) -> np.ndarray:
        return np.count_nonzero(mask, axis=axis)

    def exclude_self(self, block: np.ndarray, start: int) -> None:
        rows = np.arange(block.shape[0])
        block[rows, start + rows] = np.inf

    def smallest(self, block: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The `count` smallest values of each row, ascending, and their column indices."""
        if count < block.shape[1]:
            index = np.argpartition(block, count - 1, axis=1)[:, :count]
        else:
            index = np.broadcast_to(np.arange(block.shape[1]), block.shape).copy()
        values = np.take_along_axis(block, index, axis=1)
        order = np.argsort(values, axis=1, kind="stable")
        return np.take_along_axis(values, order, axis=1), np.take_along_axis(index, order, axis=1)


class _TorchBackend:
    """Blocks as float64 torch tensors on one device (a GPU, or the CPU for checking)."""

    name = "torch"

    def __init__(self, device: Any) -> None:
        import torch

        self.torch = torch
        try:
            self.device = torch.device(device)
            torch.empty(1, dtype=torch.float64, device=self.device)
        except (RuntimeError, TypeError, AssertionError) as exc:
            raise InputError(f"device={device!r} cannot be used by torch ({type(exc).__name__}: {exc})") from exc

    def put(self, array: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64)).to(self.device)

    def host(self, tensor: Any) -> np.ndarray:
        return tensor.cpu().numpy() if hasattr(tensor, "cpu") else np.asarray(tensor)

    def sq_distances(self, rows, row_norms, cols, col_norms):
        block = rows @ cols.T
        block.mul_(-2.0)
        block.add_(row_norms[:, None])
        block.add_(col_norms[None, :])
        block.clamp_(min=0.0)
        return block

    def count(self, mask, axis: int) -> np.ndarray:
        return self.host(mask.sum(axis))

    def exclude_self(self, block, start: int) -> None:
        rows = self.torch.arange(block.shape[0], device=self.device)
        block[rows, start + rows] = float("inf")

    def smallest(self, block, count: int) -> tuple[np.ndarray, np.ndarray]:
        values, index = self.torch.topk(block, count, dim=1, largest=False, sorted=True)
        return self.host(values), self.host(index)


def _backend(device: Any) -> _NumpyBackend | _TorchBackend:
    if device is None:
        return _NumpyBackend()
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise InputError(f"device={device!r} needs torch, which cannot be imported ({exc}); pass device=None") from exc
    return _TorchBackend(device)


# --------------------------------------------------------------------------------------------- the engine


@dataclass
class _Side:
    original: np.ndarray  # the features as given (float32 or float64): the reference distances use these
    centred: Any  # float64 rows minus the common mean, on the backend
    norms: Any  # squared norms of the centred rows, on the backend
    norms_host: np.ndarray
    max_norm: float  # largest norm (not squared)

    @property
    def n(self) -> int:
        return int(self.original.shape[0])


def _prepare(original: np.ndarray, centre: np.ndarray, backend) -> _Side:
    centred = np.asarray(original, dtype=np.float64) - centre
    norms = np.einsum("ij,ij->i", centred, centred)
    return _Side(
        original=original,
        centred=backend.put(centred),
        norms=backend.put(norms),
        norms_host=norms,
        max_norm=math.sqrt(float(norms.max())),
    )


def _block_rows(n_cols: int, memory_budget: int) -> int:
    return max(1, memory_budget // (_BYTES_PER_ENTRY * max(n_cols, 1)))


class _Counter:
    def __init__(self) -> None:
        self.recomputed = 0


def _radii(side: _Side, ks: tuple[int, ...], backend, memory_budget: int, dim: int, counter: _Counter) -> dict:
    """Reference squared distance to the k-th nearest other sample, for each k in `ks`."""
    n_rows = side.n
    radii = {k: np.empty(n_rows, dtype=np.float64) for k in ks}
    count = min(max(ks) + 1, n_rows)  # one beyond the largest k, to see whether the k-th is isolated
    factor = _tolerance_factor(dim)
    step = _block_rows(n_rows, memory_budget)
    for start in range(0, n_rows, step):
        stop = min(start + step, n_rows)
        block = backend.sq_distances(side.centred[start:stop], side.norms[start:stop], side.centred, side.norms)
        backend.exclude_self(block, start)
        values, index = backend.smallest(block, count)
        band = 2.0 * factor * (np.sqrt(side.norms_host[start:stop]) + side.max_norm) ** 2
        rows = np.arange(stop - start)
        for k in ks:
            kth = values[:, k - 1]
            isolated = np.ones(stop - start, dtype=bool)
            if k >= 2:
                isolated &= values[:, k - 2] < kth - band
            if count > k:
                isolated &= values[:, k] > kth + band
            # The common case: no other candidate within the band, so the k-th neighbour is that one sample.
            clean = rows[isolated]
            radii[k][start + clean] = exact_sq_distances(
                side.original[start + clean], side.original[index[clean, k - 1]]
            )
            counter.recomputed += int(clean.size)
            for row in rows[~isolated].tolist():
                radii[k][start + row] = _kth_by_reference(
                    side, backend.host(block[row]), start + row, k, float(kth[row]), float(band[row]), counter
                )
    return radii


def _kth_by_reference(
    side: _Side, fast_row: np.ndarray, row: int, k: int, kth: float, band: float, counter: _Counter
) -> float:
    """The k-th smallest reference distance of `row`, from the candidates within `band` of the fast k-th value.

    Everything below the band is certainly nearer than the k-th neighbour and everything above it certainly
    farther (the fast values are within band / 2 of the reference ones), so the k-th reference value is the
    ``(k - below)``-th smallest among the candidates.
    """
    below = int(np.count_nonzero(fast_row < kth - band))
    candidates = np.flatnonzero(np.abs(fast_row - kth) <= band)
    reference = exact_sq_distances(np.broadcast_to(side.original[row], (candidates.size, side.original.shape[1])),
                                   side.original[candidates])
    counter.recomputed += int(candidates.size)
    return float(np.sort(reference)[k - 1 - below])


@dataclass
class _Tallies:
    """Per-k counts of one cross pass."""

    fake_in_real_inclusive: np.ndarray  # (n_fake,) bool: inside some real ball, d <= r
    fake_ball_count_strict: np.ndarray  # (n_fake,) int: number of real balls with d < r
    real_covered_strict: np.ndarray  # (n_real,) bool: some fake with d < r(real)
    real_in_fake_inclusive: np.ndarray  # (n_real,) bool: inside some fake ball, d <= r(fake)
    real_in_fake_strict: np.ndarray  # (n_real,) bool: d < r(fake)


def _cross(
    real: _Side,
    fake: _Side,
    radii_real: dict,
    radii_fake: dict,
    ks: tuple[int, ...],
    backend,
    memory_budget: int,
    dim: int,
    counter: _Counter,
) -> dict[int, _Tallies]:
    tallies = {
        k: _Tallies(
            fake_in_real_inclusive=np.zeros(fake.n, dtype=bool),
            fake_ball_count_strict=np.zeros(fake.n, dtype=np.int64),
            real_covered_strict=np.zeros(real.n, dtype=bool),
            real_in_fake_inclusive=np.zeros(real.n, dtype=bool),
            real_in_fake_strict=np.zeros(real.n, dtype=bool),
        )
        for k in ks
    }
    # One error bound for every pair of this pass (the largest norms on both sides): comparing the blocks with
    # radius -/+ tol vectors needs no block-sized temporary, and in float64 the bound stays ~1e-12 of the distances.
    tol = _tolerance_factor(dim) * (fake.max_norm + real.max_norm) ** 2
    real_below = {k: backend.put(radii_real[k] - tol)[None, :] for k in ks}
    real_above = {k: backend.put(radii_real[k] + tol)[None, :] for k in ks}
    fake_below = {k: backend.put(radii_fake[k] - tol) for k in ks}
    fake_above = {k: backend.put(radii_fake[k] + tol) for k in ks}
    step = _block_rows(real.n, memory_budget)
    for start in range(0, fake.n, step):
        stop = min(start + step, fake.n)
        block = backend.sq_distances(fake.centred[start:stop], fake.norms[start:stop], real.centred, real.norms)
        for k in ks:
            tally = tallies[k]
            # Real balls: fake row j against r(real i). Outside [r - tol, r + tol] the comparison is certain, and
            # strict and inclusive agree; inside it the reference distance decides.
            sure = block < real_below[k]
            maybe = block <= real_above[k]
            sure_count = backend.count(sure, 1)
            maybe_count = backend.count(maybe, 1)
            tally.fake_ball_count_strict[start:stop] += sure_count
            tally.fake_in_real_inclusive[start:stop] |= sure_count > 0
            tally.real_covered_strict |= backend.host(sure.any(0))
            for row in np.flatnonzero(maybe_count != sure_count).tolist():
                cols = np.flatnonzero(backend.host(maybe[row] & ~sure[row]))
                reference = _pair_reference(fake, start + row, real, cols, counter)
                radius = radii_real[k][cols]
                strict = reference < radius
                tally.fake_ball_count_strict[start + row] += int(np.count_nonzero(strict))
                tally.fake_in_real_inclusive[start + row] |= bool(np.any(reference <= radius))
                tally.real_covered_strict[cols[strict]] = True
            del sure, maybe
            # Fake balls: real i against r(fake j) of this block's rows.
            sure = block < fake_below[k][start:stop][:, None]
            maybe = block <= fake_above[k][start:stop][:, None]
            tally.real_in_fake_inclusive |= backend.host(sure.any(0))
            sure_count = backend.count(sure, 1)
            maybe_count = backend.count(maybe, 1)
            for row in np.flatnonzero(maybe_count != sure_count).tolist():
                cols = np.flatnonzero(backend.host(maybe[row] & ~sure[row]))
                reference = _pair_reference(fake, start + row, real, cols, counter)
                radius = radii_fake[k][start + row]
                tally.real_in_fake_inclusive[cols[reference <= radius]] = True
                tally.real_in_fake_strict[cols[reference < radius]] = True
            tally.real_in_fake_strict |= backend.host(sure.any(0))
            del sure, maybe
    return tallies


def _pair_reference(rows_side: _Side, row: int, cols_side: _Side, cols: np.ndarray, counter: _Counter) -> np.ndarray:
    counter.recomputed += int(cols.size)
    repeated = np.broadcast_to(rows_side.original[row], (cols.size, rows_side.original.shape[1]))
    return exact_sq_distances(repeated, cols_side.original[cols])


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
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, numbers.Integral) or memory_budget < 1:
        raise InputError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
    return int(memory_budget)


def _run(array_real: np.ndarray, array_fake: np.ndarray, ks: tuple[int, ...], memory_budget: int, device: Any):
    """Radii of both sides and the cross tallies for each k, on validated arrays."""
    backend = _backend(device)
    n_real, n_fake, dim = array_real.shape[0], array_fake.shape[0], array_real.shape[1]
    # The common mean, computed in float64: distances do not change, and the norms shrink to the spread.
    centre = (
        array_real.sum(axis=0, dtype=np.float64) + array_fake.sum(axis=0, dtype=np.float64)
    ) / (n_real + n_fake)
    side_real = _prepare(array_real, centre, backend)
    side_fake = _prepare(array_fake, centre, backend)
    counter = _Counter()
    radii_real = _radii(side_real, ks, backend, memory_budget, dim, counter)
    radii_fake = _radii(side_fake, ks, backend, memory_budget, dim, counter)
    # The radii need one reference distance per sample and k; only what goes beyond counts as recomputed.
    counter.recomputed -= len(ks) * (n_real + n_fake)
    tallies = _cross(side_real, side_fake, radii_real, radii_fake, ks, backend, memory_budget, dim, counter)
    logger.debug("manifold metrics: %d distances recomputed from the features", counter.recomputed)
    return tallies, (n_real, n_fake, dim), counter.recomputed


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
    backend = _backend(device)
    centre = array.mean(axis=0, dtype=np.float64)
    return _radii(_prepare(array, centre, backend), (k,), backend, memory_budget, array.shape[1], _Counter())[k]


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
    tallies, (n_real, n_fake, dim), recomputed = _run(array_real, array_fake, (k,), memory_budget, device)
    tally = tallies[k]
    return PrecisionRecallResult(
        precision=float(np.mean(tally.fake_in_real_inclusive)),
        recall=float(np.mean(tally.real_in_fake_inclusive)),
        k=k,
        n_real=n_real,
        n_fake=n_fake,
        dim=dim,
        recomputed=recomputed,
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
    tallies, (n_real, n_fake, dim), recomputed = _run(array_real, array_fake, (k,), memory_budget, device)
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
        recomputed=recomputed,
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
    tallies, (n_real, n_fake, dim), recomputed = _run(array_real, array_fake, ks, memory_budget, device)
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
        recomputed=recomputed,
    )
