"""Square-root factors of covariances: the linear algebra the Fréchet distance is built on.

The distance never needs ``sqrt(sigma)``, only a factor ``L`` with ``sigma = L @ L.T`` (see
``docs/numerics.md``). A :class:`~fidkit.stats.Stats` of ``n <= dim`` samples carries its exact factor (the
centred features, ``n - 1`` columns); any other covariance gets a pivoted Cholesky factor here, computed
once per ``Stats`` object and remembered, so that comparing many sets against one reference factors the
reference once. Every factor is verified against its ``sigma`` before it is used: a factor that does not
reproduce ``sigma`` (an indefinite matrix, or a file whose ``sigma`` and ``factor`` disagree) is refused,
never trusted. :func:`check_psd` and :func:`verify_psd` check a covariance that is used without a factor of its
own (once per ``Stats``, remembered like the factors).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from fidkit.errors import InputError, StatsFileError
from fidkit.stats import Stats

__all__ = [
    "SqrtFactor",
    "sqrt_factor",
    "factor_at_hand",
    "rank_bound",
    "pivoted_cholesky_factor",
    "verify_factor",
    "psd_tolerance",
    "indefinite_message",
    "check_psd",
    "psd_verified",
    "remember_psd",
    "verify_psd",
]

# Positive semidefiniteness check of a factor (see verify_factor): relative tolerance
# max(floor, slack * dim^2 * eps), probes drawn once from a fixed seed so the check is deterministic.
_PSD_CHECK_RTOL_FLOOR = 1e-9
_PSD_CHECK_SLACK = 64.0
_PSD_PROBES = 2
_PSD_PROBE_SEED = 20151205


@dataclass(frozen=True)
class SqrtFactor:
    """A square-root factor ``L`` of a covariance: ``sigma = L @ L.T`` up to round-off.

    Attributes
    ----------
    matrix : numpy.ndarray
        ``(dim, rank)`` float64.
    kind : str
        ``"features"`` (exact, from the centred features; ``rank = n - 1``) or ``"pivoted-cholesky"``
        (computed from ``sigma``; rank is the numerical rank found by the pivoting).
    dropped_trace : float
        ``tr(sigma) - ||L||_F^2``: the part of sigma's spectrum the factor leaves out because the pivoted
        Cholesky stopped at round-off level. Zero for ``"features"``.
    """

    matrix: np.ndarray
    kind: str
    dropped_trace: float = 0.0

    @property
    def rank(self) -> int:
        """Number of columns of the factor."""
        return int(self.matrix.shape[1])



def pivoted_cholesky_factor(sigma: np.ndarray, where: str = "sigma") -> SqrtFactor:
    """Return a rank-revealing factor of a positive semidefinite ``sigma`` by pivoted Cholesky (LAPACK ``pstrf``).

    Pivoting on the largest remaining diagonal makes the factorisation stop at the numerical rank (LAPACK's
    tolerance ``dim * eps * max(diag)``) instead of failing on a singular covariance, so covariances of
    ``n <= dim`` samples loaded from files without a factor get a factor of rank about ``n - 1``. It costs a
    fraction of an eigendecomposition (``dim^3 / 3`` flops).

    Parameters
    ----------
    sigma : numpy.ndarray
        ``(dim, dim)`` float64, symmetric, finite.
    where : str
        What `sigma` belongs to (a file, an argument), for the error message.

    Returns
    -------
    SqrtFactor
        ``kind="pivoted-cholesky"``; ``dropped_trace`` is the (round-off sized, possibly slightly negative)
        ``tr(sigma - L L^T)``.

    Raises
    ------
    InputError
        `sigma` is not positive semidefinite: ``L @ L.T`` does not reproduce it.
    """
    lower, pivots, rank, info = scipy.linalg.lapack.dpstrf(sigma, lower=1)
    if info < 0:
        raise InputError(f"pivoted Cholesky rejected argument {-info}; this is a bug in fidkit, please report it")
    rank = int(rank)
    triangle = np.tril(lower)[:, :rank]
    factor = np.empty_like(triangle)
    # pstrf factors P^T sigma P = T T^T; undo the permutation on the rows so that sigma = F F^T.
    factor[pivots - 1] = triangle
    factor = np.ascontiguousarray(factor)
    dropped = float(np.trace(sigma) - np.einsum("ij,ij->", factor, factor))
    verify_factor(sigma, factor, dropped, where)
    return SqrtFactor(matrix=factor, kind="pivoted-cholesky", dropped_trace=dropped)


def verify_factor(sigma: np.ndarray, factor: np.ndarray, dropped: float, where: str) -> None:
    """Raise InputError unless ``factor @ factor.T`` equals `sigma` to the accuracy pivoted Cholesky guarantees.

    pstrf stops as soon as the largest remaining diagonal is at most ``dim * eps * max(diag)``, and on an
    indefinite matrix that happens at the first negative pivot: it returns a factor of a *different* matrix
    without any error (``[[1, 2], [2, 1]]`` gives ``L = [1, 2]^T``). On a positive semidefinite sigma the part
    left out is itself positive semidefinite with diagonal below that tolerance, so its norm is at most
    ``dim^2 * eps * max(diag)``. Two checks separate the cases:

    * the residual trace ``tr(sigma - L L^T)``, which is ``>= 0`` up to round-off for a PSD sigma;
    * fixed random probes ``v``: ``||(sigma - L L^T) v||`` against ``max(diag) * ||v||``. The trace alone
      misses indefinite matrices whose residual has zero trace (``[[1,0,0],[0,0,1],[0,1,0]]``); a residual
      that is not small along random directions cannot be. Each probe costs ``O(dim^2)``, nothing next to the
      ``dim^3 / 3`` of the factorisation.
    """
    dim = sigma.shape[0]
    if dim == 0:
        return
    tolerance, scale = psd_tolerance(sigma)
    if scale == 0.0:
        return
    probes = np.random.default_rng(_PSD_PROBE_SEED).standard_normal((_PSD_PROBES, dim))
    probe_norms = np.linalg.norm(probes, axis=1)
    # Work in units of `scale`: covariances of features near 1e150 have entries near 1e300, and sigma @ v would
    # overflow. Dividing the probes by a power of two (not the dim x dim sigma: no copy) keeps every product
    # near 1; the exponent is clipped so that the divisor itself stays finite.
    exponent = int(np.clip(math.frexp(scale)[1], -1000, 1000))
    scaled_probes = np.ldexp(probes, -exponent)
    probe_error = _probe_residual(sigma, factor, scaled_probes, probe_norms) * math.ldexp(1.0, exponent)
    if not math.isfinite(probe_error):
        # Only for a scale beyond the clipped exponent (sigma entries below 1e-301): scale the matrices instead.
        # Divide, not multiply by 1 / scale, which overflows for a subnormal scale.
        unit_sigma, unit_factor = sigma / scale, np.ascontiguousarray(factor / math.sqrt(scale))
        probe_error = _probe_residual(unit_sigma, unit_factor, probes, probe_norms) * scale
    if dropped < -dim * tolerance or not probe_error <= tolerance:
        # The error path only: one eigenvalue tells an indefinite sigma (the usual case, named with its most
        # negative eigenvalue) from a positive semidefinite one whose stored factor belongs to other statistics.
        smallest = _smallest_eigenvalue(sigma)
        if smallest < -tolerance:
            raise InputError(indefinite_message(where, smallest, scale, tolerance))
        raise InputError(
            f"{where}: factor @ factor.T does not reproduce sigma: it leaves a residual of "
            f"{max(probe_error, -dropped) / scale:.3g} relative to its largest variance (a covariance and its own "
            "factor agree to round-off); a stored factor that belongs to other statistics, or an edited file: "
            "recompute the statistics"
        )


def psd_tolerance(sigma: np.ndarray) -> tuple[float, float]:
    """Return ``(tolerance, scale)`` for the positive semidefiniteness checks of `sigma`.

    `scale` is the largest variance (the largest entry when no diagonal entry is positive: then any nonzero
    entry is indefiniteness); an eigenvalue below ``-tolerance`` is more than round-off. Zero `scale`: an all-zero
    sigma, which is positive semidefinite.
    """
    dim = sigma.shape[0]
    if dim == 0:
        return 0.0, 0.0
    largest_diagonal = float(np.max(np.diagonal(sigma)))
    scale = max(largest_diagonal, float(np.max(np.abs(sigma))) if largest_diagonal <= 0.0 else 0.0)
    # Well above pstrf's truncation (<= dim^2 eps max(diag)) and round-off (dim eps ||sigma||), and below any
    # negative eigenvalue that is more than round-off: 1e-9 relative is about 1e-7 of the standard deviation.
    # The absolute term is the same bound in units of the smallest subnormal: a sigma with entries near 1e-320
    # has lost its relative precision to underflow and says nothing about definiteness.
    tolerance = max(_PSD_CHECK_RTOL_FLOOR, _PSD_CHECK_SLACK * dim * dim * np.finfo(np.float64).eps) * scale
    tolerance += _PSD_CHECK_SLACK * dim * dim * math.ulp(0.0)
    return tolerance, scale


def _unit_exponent(scale: float) -> int:
    """The exponent ``k`` with ``scale / 2^k`` in [0.5, 1): dividing by ``2^k`` is exact and brings entries near 1."""
    return int(np.clip(math.frexp(scale)[1], -1000, 1000)) if scale > 0.0 else 0


def _smallest_eigenvalue(sigma: np.ndarray) -> float:
    """The smallest eigenvalue of the symmetric `sigma` (computed in units of its scale, so it cannot overflow)."""
    if sigma.shape[0] == 0:
        return 0.0
    exponent = _unit_exponent(float(np.max(np.abs(sigma))))
    smallest = scipy.linalg.eigh(
        np.ldexp(sigma, -exponent), eigvals_only=True, subset_by_index=[0, 0], check_finite=False
    )
    return math.ldexp(float(smallest[0]), exponent)


def indefinite_message(where: str, smallest: float, scale: float, tolerance: float) -> str:
    """The one message for a sigma that is not positive semidefinite: where, its most negative eigenvalue, the bound."""
    return (
        f"{where}: sigma is not positive semidefinite (not a covariance matrix): its most negative eigenvalue is "
        f"{smallest:.6g} ({smallest / scale:.3g} relative to its largest variance {scale:.6g}; round-off allows "
        f"{-tolerance / scale:.1g}); check that it was computed as a covariance of features and not edited or "
        "corrupted"
    )


def check_psd(sigma: np.ndarray, where: str) -> None:
    """Raise InputError unless the symmetric `sigma` is positive semidefinite up to :func:`psd_tolerance`.

    A Cholesky factorisation (LAPACK ``potrf``, ``dim^3 / 3`` flops, no pivoting) of ``sigma + tolerance * I``
    succeeds exactly when no eigenvalue of sigma is below ``-tolerance`` (up to the factorisation's round-off,
    far below the tolerance); only when it fails is the smallest eigenvalue computed, to tell round-off from
    indefiniteness and to name it. Works on a copy scaled by a power of two (exact), so entries near 1e300 or
    1e-300 neither overflow nor underflow.

    Raises
    ------
    InputError
        `sigma` has an eigenvalue below ``-tolerance``; the message names `where` and the eigenvalue.
    """
    tolerance, scale = psd_tolerance(sigma)
    if scale == 0.0:
        return
    exponent = _unit_exponent(scale)
    # sigma.T is a Fortran-ordered view of a C-ordered sigma, and sigma is symmetric: ldexp writes the scaled
    # copy in the layout LAPACK wants, so potrf factors it in place without another copy.
    work = np.ldexp(sigma.T, -exponent)
    if not work.flags.f_contiguous:
        work = np.asfortranarray(work)
    work[np.diag_indices_from(work)] += math.ldexp(tolerance, -exponent)
    _, info = scipy.linalg.lapack.dpotrf(work, lower=1, clean=0, overwrite_a=1)
    if info < 0:
        raise InputError(f"Cholesky rejected argument {-info}; this is a bug in fidkit, please report it")
    if info == 0:
        return
    smallest = _smallest_eigenvalue(sigma)
    if smallest < -tolerance:
        raise InputError(indefinite_message(where, smallest, scale, tolerance))


def _probe_residual(sigma: np.ndarray, factor: np.ndarray, probes: np.ndarray, probe_norms: np.ndarray) -> float:
    """Return ``max_k ||(sigma - L L^T) v_k|| / ||v_k||`` for the rows ``v_k`` of `probes`.

    Through scipy's BLAS, the library pstrf just ran on: handing over to numpy's separately linked OpenBLAS
    right after it makes the two thread pools fight for the cores, which measured 0.11 s instead of 0.003 s
    at dim 2048 on 2 cores. ``sigma v`` reads only the lower triangle (``symv``: half the memory traffic of a
    general product, and the same triangle pstrf factored); the transposes are views in the layout BLAS wants,
    so no ``dim x dim`` copy is made for C-ordered inputs.
    """
    columns = probes.T  # (dim, k), Fortran-ordered view
    # sigma.T is Fortran-ordered; its upper triangle (lower=0) is sigma's lower triangle.
    sigma_v = np.stack([scipy.linalg.blas.dsymv(1.0, sigma.T, probe, lower=0) for probe in probes], axis=1)
    projected = scipy.linalg.blas.dgemm(1.0, factor.T, columns)  # L^T v, (rank, k)
    residual = scipy.linalg.blas.dgemm(
        -1.0, factor.T, projected, beta=1.0, c=np.asfortranarray(sigma_v), trans_a=1, overwrite_c=1
    )
    return float(np.max(np.linalg.norm(residual, axis=0) / probe_norms))


# What sqrt_factor has computed and verified, per Stats object, with the very arrays it was computed from:
# the arrays are read-only, and an entry is used only while the object still holds those same arrays (so
# assigning a new sigma to a Stats cannot bring back the old factor). The weak keys drop an entry with its
# Stats. The memo only saves time: the factor it returns is the one a fresh computation would give.
_VERIFIED: weakref.WeakKeyDictionary[Stats, tuple[np.ndarray, np.ndarray | None, SqrtFactor]] = (
    weakref.WeakKeyDictionary()
)


def _remembered(stats: Stats) -> SqrtFactor | None:
    entry = _VERIFIED.get(stats)
    if entry is None or entry[0] is not stats.sigma or entry[1] is not stats.factor:
        return None
    return entry[2]


def where(stats: Stats, label: str = "statistics") -> str:
    """How a message names statistics: their file, else `label` (the caller's argument, ``"stats_a"``, say)."""
    return f"statistics {stats.path}" if stats.path is not None else label


def file_error(stats: Stats, exc: InputError) -> InputError:
    """`exc` as raised: about a file, it says the file is at fault (a StatsFileError)."""
    if stats.path is not None:
        return StatsFileError(f"{exc}; the file is corrupt or was edited: recompute it")
    return exc


def sqrt_factor(stats: Stats, label: str = "statistics") -> SqrtFactor:
    """Return a verified factor ``L`` with ``stats.sigma = L @ L.T``, computing it on first use.

    The stored exact factor when the statistics carry one (``n <= dim``); otherwise a pivoted Cholesky
    factor of ``sigma``. Either is checked against ``sigma`` (:func:`verify_factor`) once per object. Errors
    name the statistics' file, else `label`.

    Raises
    ------
    InputError
        ``sigma`` is not positive semidefinite, or the stored factor does not reproduce it.
    StatsFileError
        The same, for statistics loaded from a file (the message names it).
    """
    known = _remembered(stats)
    if known is not None:
        return known
    try:
        if stats.factor is not None:
            matrix = stats.factor
            dropped = float(np.trace(stats.sigma) - np.einsum("ij,ij->", matrix, matrix))
            verify_factor(stats.sigma, matrix, dropped, where(stats, label))
            factor = SqrtFactor(matrix=matrix, kind="features", dropped_trace=0.0)
        else:
            factor = pivoted_cholesky_factor(stats.sigma, where(stats, label))
            factor.matrix.flags.writeable = False
    except InputError as exc:
        raise file_error(stats, exc) from None
    _VERIFIED[stats] = (stats.sigma, stats.factor, factor)
    return factor


# Statistics whose sigma has been checked positive semidefinite without keeping a factor (the other side of a
# factor-eigh comparison, the dense routes), with the very sigma array that was checked, as _VERIFIED.
_PSD_CHECKED: weakref.WeakKeyDictionary[Stats, np.ndarray] = weakref.WeakKeyDictionary()


def psd_verified(stats: Stats) -> bool:
    """True if ``stats.sigma`` is known positive semidefinite: its factor was verified, or it was checked."""
    return _remembered(stats) is not None or _PSD_CHECKED.get(stats) is stats.sigma


def remember_psd(stats: Stats) -> None:
    """Record that ``stats.sigma`` (this very array) was found positive semidefinite, so it is not checked again."""
    _PSD_CHECKED[stats] = stats.sigma


def verify_psd(stats: Stats, label: str = "statistics") -> None:
    """Check once per object that ``stats.sigma`` is positive semidefinite (see :func:`check_psd`).

    With a stored factor, the factor is verified instead (:func:`sqrt_factor`: ``O(dim^2)``, and a verified
    ``L L^T`` is positive semidefinite); otherwise a Cholesky factorisation of the shifted sigma. Errors name
    the statistics' file, else `label`.

    Raises
    ------
    InputError
        `sigma` is not positive semidefinite.
    StatsFileError
        The same, for statistics loaded from a file (the message names it).
    """
    if psd_verified(stats):
        return
    if stats.factor is not None:
        sqrt_factor(stats, label)
        return
    try:
        check_psd(stats.sigma, where(stats, label))
    except InputError as exc:
        raise file_error(stats, exc) from None
    remember_psd(stats)


def factor_at_hand(stats: Stats) -> bool:
    """True if a factor of `stats` costs nothing more than (at most) its verification: stored or computed before."""
    return stats.factor is not None or _remembered(stats) is not None


def rank_bound(stats: Stats) -> int:
    """Upper bound on the rank of sigma known without a factorisation: the factor's rank, else ``min(n - 1, dim)``."""
    if stats.factor is not None:
        return int(stats.factor.shape[1])
    known = _remembered(stats)
    if known is not None:
        return known.rank
    if stats.n is not None:
        return min(stats.n - 1, stats.dim)
    return stats.dim
