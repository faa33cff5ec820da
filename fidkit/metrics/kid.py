"""Kernel Inception Distance (Bińkowski et al. 2018): the unbiased MMD^2 with a cubic polynomial kernel.

    k(x, y) = (gamma x.y + coef0)^degree,   gamma = 1 / dim, coef0 = 1, degree = 3 by default

Each of ``subsets`` repetitions draws ``m`` rows without replacement from each side (``m = subset_size``, at most
the smaller side's N) and computes the unbiased estimator

    MMD^2_u = (sum_{i != j} k(x_i, x_j) + sum_{i != j} k(y_i, y_j)) / (m (m - 1)) - 2 sum_{i, j} k(x_i, y_j) / m^2

KID is the mean over the repetitions, reported with their standard deviation (``ddof = 0``, as torch-fidelity
reports it). The kernel sums are accumulated in float64 whatever the feature dtype.

``sampling="generator"`` (the default) draws the subsets' positions from ``numpy.random.default_rng(seed)``. Both
samplings draw by position: the same features in the same order give the same KID on any engine or device (to
rounding; a rounding-level change of the features changes KID at rounding level only). The same rows in another
order (a ``torch.distributed`` gather of another world size) are another draw, whose KID differs within
the reported std; to compare exactly, compute from the same saved features.

``sampling="torch-fidelity"`` draws the subsets exactly as torch-fidelity 0.4.0 does
(``np.random.RandomState(seed)``, one ``choice(N_a, m, replace=False)`` then one ``choice(N_b, m,
replace=False)`` per repetition, ``features_a`` being its ``input1``): on float64 features the numbers then
equal its ``kid_features_to_metric`` to round-off. On float32 features torch-fidelity computes the kernel in
float32 and differs from this float64 computation by the float32 round-off (``docs/metrics.md`` gives the
measured size).
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from fidkit.errors import InputError
from fidkit.metrics._common import (
    check_pair,
    check_positive_int,
    check_sampling,
    check_seed,
    choice_without_replacement,
    make_rng,
    plain_dict,
)

__all__ = ["KIDResult", "kid", "mmd2_unbiased"]

logger = logging.getLogger(__name__)

# Kernel blocks larger than this many float64 entries are summed in row blocks (only for subset sizes far above
# the customary 1000, whose 1000 x 1000 blocks are 8 MB).
_KERNEL_BLOCK_ENTRIES = 1 << 23
# Up to this degree the kernel's power is taken by repeated multiplication (see _integer_power).
_MULTIPLY_MAX_DEGREE = 8


@dataclass(frozen=True)
class KIDResult:
    """KID and how it was drawn. ``float(result)`` is :attr:`mean`.

    Attributes
    ----------
    mean, std : float
        Mean and standard deviation (``ddof = 0``) of the unbiased MMD^2 over the subsets.
    values : tuple of float
        The MMD^2 of each subset, in drawing order.
    subsets, subset_size : int
        Repetitions and rows drawn per side per repetition (the requested size, capped at the smaller N).
    n_a, n_b, dim : int
        Rows of each side and feature dimension.
    seed : int
    sampling : str
        ``"generator"`` or ``"torch-fidelity"`` (see the module docstring).
    degree : int
    gamma, coef0 : float
        The kernel ``(gamma x.y + coef0)^degree`` actually used.
    """

    mean: float
    std: float
    values: tuple[float, ...]
    subsets: int
    subset_size: int
    n_a: int
    n_b: int
    dim: int
    seed: int
    sampling: str
    degree: int
    gamma: float
    coef0: float

    def __float__(self) -> float:
        return float(self.mean)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists for tuples, None for NaN)."""
        return plain_dict(self)


def _integer_power(values: np.ndarray, degree: int) -> None:
    """``values **= degree`` in place, by repeated multiplication for small degrees.

    numpy's ``**`` calls ``pow`` per element: 3 ms per 1000 x 1000 block against 1 ms for two multiplications
    (measured; a symmetric product of that block costs 8 ms at dim 256, 50 ms at dim 2048). Two multiplications
    are about 1 ulp less accurate than ``pow``, far below what the sums of a million kernel values resolve.
    """
    if degree > _MULTIPLY_MAX_DEGREE:
        values **= degree
        return
    base = values.copy() if degree > 1 else values
    for _ in range(degree - 1):
        values *= base


def _kernel_sum(
    rows: np.ndarray, cols: np.ndarray, same: bool, gamma: float, coef0: float, degree: int
) -> tuple[float, float]:
    """(sum of all entries, sum of the diagonal) of ``(gamma rows @ cols.T + coef0) ** degree`` in float64.

    The diagonal sum is meaningful only when `same` (rows is cols); it is 0.0 otherwise.
    """
    n_rows = rows.shape[0]
    block = max(1, _KERNEL_BLOCK_ENTRIES // max(cols.shape[0], 1))
    total = 0.0
    diagonal = 0.0
    for start in range(0, n_rows, block):
        stop = min(start + block, n_rows)
        # rows @ rows.T as one product lets numpy call syrk, which does half the work of gemm.
        product = rows @ cols.T if same and start == 0 and stop == n_rows else rows[start:stop] @ cols.T
        product *= gamma
        product += coef0
        _integer_power(product, degree)
        total += float(product.sum())
        if same:
            diagonal += float(np.trace(product, offset=start))
    return total, diagonal


def mmd2_unbiased(
    x: np.ndarray, y: np.ndarray, *, gamma: float | None = None, coef0: float = 1.0, degree: int = 3
) -> float:
    """The unbiased MMD^2 of two equally sized float64 samples with the polynomial kernel.

    Parameters
    ----------
    x, y : numpy.ndarray
        ``(m, dim)`` each, ``m >= 2``; converted to float64.
    gamma : float, optional
        ``1 / dim`` when None.
    coef0 : float
    degree : int

    Returns
    -------
    float
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    m = x.shape[0]
    if y.shape[0] != m or m < 2:
        raise InputError(f"mmd2_unbiased needs two samples of the same size >= 2, got {x.shape[0]} and {y.shape[0]}")
    if gamma is None:
        gamma = 1.0 / x.shape[1]
    # Overflow can only give inf or inf - inf = NaN, which the check below refuses with the reason: numpy's own
    # RuntimeWarnings would only print noise on stderr before that error.
    with np.errstate(over="ignore", invalid="ignore"):
        sum_xx, diag_xx = _kernel_sum(x, x, True, gamma, coef0, degree)
        sum_yy, diag_yy = _kernel_sum(y, y, True, gamma, coef0, degree)
        sum_xy, _ = _kernel_sum(x, y, False, gamma, coef0, degree)
        value = ((sum_xx - diag_xx) + (sum_yy - diag_yy)) / (m * (m - 1)) - 2.0 * sum_xy / (m * m)
    if not math.isfinite(value):
        # Kernel values beyond float64 (features near 1e50 at degree 3, or a huge gamma or coef0): the sums are
        # inf or inf - inf, and a NaN KID would pass for a number.
        raise InputError(
            f"the polynomial kernel (gamma x.y + coef0)^{degree} overflows float64 on these features (gamma = "
            f"{gamma:.3g}, coef0 = {coef0:.3g}, largest |feature| {max(np.abs(x).max(), np.abs(y).max()):.3g}); "
            "KID is defined for features of moderate size: scale them, or lower gamma or coef0"
        )
    return value


def kid(
    features_a: Any,
    features_b: Any,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 2020,
    sampling: str = "generator",
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
) -> KIDResult:
    """Kernel Inception Distance between two feature arrays.

    Parameters
    ----------
    features_a, features_b : array_like
        ``(N_a, dim)`` and ``(N_b, dim)`` float features (pool_3 for the customary KID), ``N >= 2``. With
        ``sampling="torch-fidelity"``, `features_a` is torch-fidelity's ``input1`` (the generated images).
    subsets : int
        Repetitions (torch-fidelity's ``kid_subsets``, 100).
    subset_size : int
        Rows drawn per side per repetition (``kid_subset_size``, 1000); capped at ``min(N_a, N_b)``, where
        torch-fidelity refuses instead. At the cap every repetition draws every row and the std is 0.
    seed : int
        Seed of the draws (torch-fidelity's ``rng_seed`` is 2020).
    sampling : {"generator", "torch-fidelity"}
        ``"generator"``: ``numpy.random.default_rng(seed)``; ``"torch-fidelity"``: its ``RandomState`` draws. Both
        draw positions in the rows' given order (module docstring).
    degree, gamma, coef0 : int, float or None, float
        The kernel ``(gamma x.y + coef0)^degree``; ``gamma=None`` is ``1 / dim``.

    Returns
    -------
    KIDResult

    Raises
    ------
    InputError
        Arrays that are not ``(N, dim)`` finite floats, different dims, fewer than 2 rows on a side, or bad
        arguments.

    Notes
    -----
    Cost: ``subsets`` times two ``m x m x dim`` symmetric products and one general product, i.e. about
    ``4 m^2 dim`` flops per repetition (0.8 Tflop for the defaults at dim 2048; ``docs/metrics.md`` has timings).
    Memory: the subsets (``2 m dim`` float64) and one ``m x m`` kernel block.
    """
    array_a, array_b = check_pair(features_a, features_b)
    subsets = check_positive_int(subsets, "subsets")
    subset_size = check_positive_int(subset_size, "subset_size", minimum=2)
    seed = check_seed(seed)
    sampling = check_sampling(sampling)
    degree = check_positive_int(degree, "degree")
    if isinstance(coef0, bool) or not isinstance(coef0, numbers.Real) or not np.isfinite(coef0):
        raise InputError(f"coef0 must be a finite number, got {coef0!r}")
    n_a, n_b, dim = array_a.shape[0], array_b.shape[0], array_a.shape[1]
    if gamma is None:
        gamma = 1.0 / dim
    elif isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not (np.isfinite(gamma) and gamma > 0):
        raise InputError(f"gamma must be a positive number or None (1 / dim), got {gamma!r}")
    for name, n_rows in (("features_a", n_a), ("features_b", n_b)):
        if n_rows < 2:
            raise InputError(f"{name} has {n_rows} row; the unbiased MMD needs at least 2 samples per side")
    size = min(subset_size, n_a, n_b)
    if size < subset_size:
        # Debug, not info: a --ci run calls KID once per half-sample, and the result records the size used.
        logger.debug("KID: subset_size %d capped at min(N_a, N_b) = %d", subset_size, size)
    rng = make_rng(seed, sampling)
    values = np.empty(subsets, dtype=np.float64)
    for index in range(subsets):
        # Draw order a then b, as torch-fidelity draws input1 then input2.
        rows_a = choice_without_replacement(rng, n_a, size)
        rows_b = choice_without_replacement(rng, n_b, size)
        values[index] = mmd2_unbiased(
            array_a[rows_a], array_b[rows_b], gamma=float(gamma), coef0=float(coef0), degree=degree
        )
    return KIDResult(
        mean=float(np.mean(values)),
        std=float(np.std(values)),
        values=tuple(float(v) for v in values),
        subsets=subsets,
        subset_size=size,
        n_a=n_a,
        n_b=n_b,
        dim=dim,
        seed=seed,
        sampling=sampling,
        degree=degree,
        gamma=float(gamma),
        coef0=float(coef0),
    )
