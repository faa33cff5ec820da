"""Kernel Inception Distance (Bińkowski et al. 2018): the unbiased MMD^2 with a cubic polynomial kernel.

    k(x, y) = (gamma x.y + coef0)^degree,   gamma = 1 / dim, coef0 = 1, degree = 3 by default

Each of ``subsets`` repetitions draws ``m`` rows without replacement from each side (``m = subset_size``, at most
the smaller side's N) and computes the unbiased estimator

    MMD^2_u = (sum_{i != j} k(x_i, x_j) + sum_{i != j} k(y_i, y_j)) / (m (m - 1)) - 2 sum_{i, j} k(x_i, y_j) / m^2

KID is the mean over the repetitions, reported with their standard deviation (``ddof = 0``, as torch-fidelity
reports it). The kernel sums are accumulated in float64 whatever the feature dtype, about the subsets' common
centre so that a common offset of the features costs no precision (:func:`_mmd2_and_bound`).

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
_EPS = float(np.finfo(np.float64).eps)


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


def _pair_moments(
    rows: np.ndarray,
    row_shift: np.ndarray,
    cols: np.ndarray,
    col_shift: np.ndarray,
    same: bool,
    gamma: float,
    degree: int,
) -> np.ndarray:
    """``S[q, r, s]``: the sum over pairs ``(i, j)`` of ``a_i^q b_j^r g_ij^s``, for ``q + r + s <= degree``.

    `rows` and `cols` are the centred samples ``u`` and ``v``, `row_shift` and `col_shift` the vectors ``a`` and
    ``b``, and ``g_ij = gamma u_i.v_j``. The pairs are ``i != j`` when `same` (`rows` is `cols`), all ``(i, j)``
    otherwise. Entries with ``q + r + s > degree`` are 0.
    """
    size = degree + 1
    moments = np.zeros((size, size, size))
    row_powers = np.power.outer(row_shift, np.arange(size))  # (n_rows, degree + 1): a_i^q
    col_powers = np.power.outer(col_shift, np.arange(size))
    # s = 0: the pair sums factor into a product of two sums, less the i = j terms within one sample.
    moments[:, :, 0] = np.outer(row_powers.sum(axis=0), col_powers.sum(axis=0))
    if same:
        moments[:, :, 0] -= row_powers.T @ row_powers
    n_rows = rows.shape[0]
    block = max(1, _KERNEL_BLOCK_ENTRIES // max(cols.shape[0], 1))
    for start in range(0, n_rows, block):
        stop = min(start + block, n_rows)
        # rows @ rows.T as one product lets numpy call syrk, which does half the work of gemm.
        inner = rows @ cols.T if same and start == 0 and stop == n_rows else rows[start:stop] @ cols.T
        inner *= gamma
        power = inner
        for s in range(1, size):
            # g^s by repeated multiplication, not numpy's per-element pow (1 ms against 3 ms per 1000 x 1000).
            if s == 2:
                power = power * inner
            elif s > 2:
                power *= inner
            width = size - s  # q and r run over 0 .. degree - s
            block_powers = row_powers[start:stop, :width]
            moments[:width, :width, s] += block_powers.T @ (power @ col_powers[:, :width])
            if same:
                diagonal = np.diagonal(power, offset=start)
                moments[:width, :width, s] -= block_powers.T @ (block_powers * diagonal[:, None])
    return moments


def _monomials(degree: int) -> list[tuple[int, int, int, int, int]]:
    """``(coefficient, p, q, r, s)`` of ``(K0 + a + b + g)^degree`` whose MMD^2 terms do not cancel identically.

    A term ``K0^p a_i^q`` (or ``K0^p b_j^r``) depends on one point of the pair only; its contributions to the
    three means cancel exactly against the mirror term ``K0^p b_j^q`` (the x-x and y-y means count each point
    ``m - 1`` times, the x-y mean ``m`` times), so the terms with ``s = 0`` and ``q = 0`` or ``r = 0`` are left
    out: they are the huge ones (``K0^degree`` among them) whose round-off swamped the result.
    """
    terms = []
    for s in range(degree + 1):
        for q in range(degree + 1 - s):
            for r in range(degree + 1 - s - q):
                if s == 0 and (q == 0 or r == 0):
                    continue
                p = degree - q - r - s
                coefficient = math.factorial(degree) // (
                    math.factorial(p) * math.factorial(q) * math.factorial(r) * math.factorial(s)
                )
                terms.append((coefficient, p, q, r, s))
    return terms


def _mmd2_and_bound(
    x: np.ndarray, y: np.ndarray, gamma: float, coef0: float, degree: int
) -> tuple[float, float]:
    """The unbiased MMD^2 of float64 samples `x`, `y` and a bound on its float64 round-off.

    The kernel's base is expanded about the centre ``c`` of both samples, ``x_i = c + u_i``, ``y_j = c + v_j``:

        gamma x_i.y_j + coef0 = K0 + a_i + b_j + g_ij,   K0 = gamma c.c + coef0,   a_i = gamma c.u_i,
                                                          b_j = gamma c.v_j,        g_ij = gamma u_i.v_j

    and its power into the monomials ``K0^p a^q b^r g^s``. The three means are combined per monomial (the
    small quantities cancel among themselves) before the monomial is multiplied by ``K0^p``, and the monomials that
    cancel identically are left out (:func:`_monomials`). Summing the kernel values themselves instead cancels
    numbers of size ``K0^degree`` down to the MMD^2: on features with a common offset 10^5 times their spread the
    result was off by 1 %, at 10^8 by a factor of 8.

    The bound takes each monomial's magnitude with ``|g_ij| <= gamma |u_i| |v_j|`` and ``|K0| <= gamma c.c +
    |coef0|``, and a relative round-off of ``eps (degree (dim + 4) + 2 m + 16)`` (the dot products, the pair sums,
    the powers and ``K0``).
    """
    m, dim = x.shape
    centre = (x.sum(axis=0) + y.sum(axis=0)) / (2 * m)
    u = x - centre
    v = y - centre
    centre_term = gamma * float(centre @ centre)
    k0 = np.float64(centre_term + coef0)
    # K0's round-off is relative to its two parts, not to K0 itself where a negative coef0 cancels the centre's.
    k0_size = np.float64(centre_term + abs(coef0))
    a = gamma * (u @ centre)
    b = gamma * (v @ centre)
    s_xx = _pair_moments(u, a, u, a, True, gamma, degree)
    s_yy = _pair_moments(v, b, v, b, True, gamma, degree)
    s_xy = _pair_moments(u, a, v, b, False, gamma, degree)
    same_pairs = m * (m - 1)
    means = (s_xx + s_yy) / same_pairs - 2.0 * s_xy / (m * m)
    # Magnitudes for the bound: sum_i |a_i|^q (sqrt(gamma) |u_i|)^s per sample, as a (q, s) table.
    powers = np.arange(degree + 1)
    norm_u = np.sqrt(gamma) * np.linalg.norm(u, axis=1)
    norm_v = np.sqrt(gamma) * np.linalg.norm(v, axis=1)
    size_x = np.power.outer(np.abs(a), powers).T @ np.power.outer(norm_u, powers)
    size_y = np.power.outer(np.abs(b), powers).T @ np.power.outer(norm_v, powers)
    terms = []
    sizes = []
    for coefficient, p, q, r, s in _monomials(degree):
        terms.append(float(coefficient * k0**p * means[q, r, s]))
        same_size = (size_x[q, s] * size_x[r, s] + size_y[q, s] * size_y[r, s]) / same_pairs
        magnitude = same_size + 2.0 * size_x[q, s] * size_y[r, s] / (m * m)
        # K0^p errs by p |K0|^(p-1) times K0's own round-off (eps k0_size), and by eps |K0|^p as a product: where
        # a negative coef0 cancels K0, k0_size^p would inflate the bound by (k0_size / |K0|)^(p-1).
        k0_error = abs(k0) ** p + (p * abs(k0) ** (p - 1) * k0_size if p else 0.0)
        sizes.append(float(coefficient * k0_error * magnitude))
    try:
        value = math.fsum(terms)
        # eps first: sizes near float64's limit would overflow a sum that the bound itself does not.
        bound = math.fsum(_EPS * (degree * (dim + 4) + 2 * m + 16) * size for size in sizes)
    except (OverflowError, ValueError):  # finite terms whose sum overflows; an inf or NaN term
        return math.nan, math.nan
    if not (math.isfinite(value) and math.isfinite(bound)):
        # The kernel's values (or the bound's magnitudes, which are theirs) are beyond float64.
        return math.nan, math.nan
    return value, bound


def mmd2_unbiased(
    x: np.ndarray, y: np.ndarray, *, gamma: float | None = None, coef0: float = 1.0, degree: int = 3
) -> float:
    """The unbiased MMD^2 of two equally sized float64 samples with the polynomial kernel.

    Computed about the samples' common centre, so that a common offset of the features does not cost precision
    (:func:`_mmd2_and_bound`).

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

    Raises
    ------
    InputError
        Samples of different sizes or fewer than 2 rows; kernel values beyond float64; or an MMD^2 smaller than
        the bound on its float64 round-off (not even its sign would be known).
    """
    value, bound = _checked_mmd2(x, y, gamma, coef0, degree)
    if not bound < abs(value) and bound > 0.0:
        # Not even the sign is known: a number would be noise passed off as an MMD^2.
        raise InputError(_unresolved_message(f"the MMD^2 is {value:.3g}", bound, x, y))
    return value


#: The largest kernel degree: the expansion holds (degree + 1)^3 pair sums (KID's is 3; 1000 took gigabytes).
MAX_DEGREE = 32


def _checked_degree(degree: Any) -> int:
    degree = check_positive_int(degree, "degree")
    if degree > MAX_DEGREE:
        raise InputError(f"degree must be at most {MAX_DEGREE} (KID's kernel has degree 3), got {degree}")
    return degree


def _checked_mmd2(
    x: np.ndarray, y: np.ndarray, gamma: float | None, coef0: float, degree: int
) -> tuple[float, float]:
    """:func:`_mmd2_and_bound` of two samples checked for size, with kernel values beyond float64 refused."""
    degree = _checked_degree(degree)
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
        value, bound = _mmd2_and_bound(x, y, float(gamma), float(coef0), degree)
    if not math.isfinite(value):
        # Kernel values beyond float64 (features near 1e50 at degree 3, or a huge gamma or coef0): the sums are
        # inf or inf - inf, and a NaN KID would pass for a number.
        raise InputError(_overflow_message(x, y, gamma, coef0, degree))
    return value, bound


def _overflow_message(x: np.ndarray, y: np.ndarray, gamma: float, coef0: float, degree: int) -> str:
    """Why a KID whose kernel values (or their sums, or the spread of the subsets' values) pass float64's range
    is refused, with the fix."""
    largest = max(np.abs(x).max(), np.abs(y).max())
    return (
        f"the polynomial kernel (gamma x.y + coef0)^{degree} overflows float64 on these features (gamma = "
        f"{gamma:.3g}, coef0 = {coef0:.3g}, largest |feature| {largest:.3g}); KID is defined for features of "
        "moderate size: scale them, or lower gamma or coef0"
    )


def _unresolved_message(what: str, bound: float, x: np.ndarray, y: np.ndarray) -> str:
    """Why a KID (or an MMD^2) below its float64 round-off is refused, with the features' offset and spread."""
    both = np.concatenate([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)])
    centre = both.mean(axis=0)
    offset, spread = float(np.linalg.norm(centre)), float(np.sqrt(((both - centre) ** 2).sum(axis=1).mean()))
    return (
        f"KID cannot be resolved in float64 on these features: {what} but its round-off can reach {bound:.3g} "
        f"(features at a common offset of norm {offset:.3g} with a spread of {spread:.3g} rms): the two samples' "
        "difference is below what float64 resolves there. Check the features: repeated rows, or a common offset "
        "far larger than the spread, suggest a wrong extractor or preprocessing"
    )


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
        arguments; kernel values beyond float64; a KID whose mean and std are both below the bound on its float64
        round-off.

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
    degree = _checked_degree(degree)
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
    bounds = np.empty(subsets, dtype=np.float64)
    for index in range(subsets):
        # Draw order a then b, as torch-fidelity draws input1 then input2. MMD^2 depends on the set of rows drawn,
        # not their order; sorted positions make its round-off depend on the set alone, so that at the cap (every
        # row drawn each time) every repetition gives the same number and the std is exactly 0.
        rows_a = np.sort(choice_without_replacement(rng, n_a, size))
        rows_b = np.sort(choice_without_replacement(rng, n_b, size))
        values[index], bounds[index] = _checked_mmd2(
            array_a[rows_a], array_b[rows_b], float(gamma), float(coef0), degree
        )
    # Mean and std about the first value: equal values (every repetition at the cap) give exactly that value and
    # a std of exactly 0, where np.mean's sum / n can be off by an ulp and leave a std of 1e-16.
    with np.errstate(over="ignore", invalid="ignore"):
        deviations = values - values[0]
        mean, std = float(values[0] + np.mean(deviations)), float(np.std(deviations))
        if not math.isfinite(std):
            # The squares of deviations near float64's limit overflow: the std in units of the largest deviation.
            unit = float(np.max(np.abs(deviations)))
            std = unit * float(np.std(deviations / unit))
        bound = float(np.sum(bounds / subsets))  # their mean, summed after the division so that it cannot overflow
    if not (math.isfinite(mean) and math.isfinite(std) and math.isfinite(bound)):
        # Each subset's value is finite, but near float64's limit their mean or spread is not.
        raise InputError(_overflow_message(array_a, array_b, float(gamma), float(coef0), degree))
    if not bound < max(abs(mean), std) and bound > 0.0:
        # The mean's round-off is at most the subsets' mean bound. Below the std it is honest as printed (one
        # subset's MMD^2 near 0 by chance is no reason to refuse); refused only when neither the mean nor the
        # spread is resolved.
        raise InputError(_unresolved_message(
            f"KID is {mean:.3g} with a std of {std:.3g} over {subsets} subset(s)", bound, array_a, array_b
        ))
    return KIDResult(
        mean=mean,
        std=std,
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
