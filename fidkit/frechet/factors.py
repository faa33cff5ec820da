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
from fidkit.stats.checks import EPS64, TINY, variance_units

__all__ = [
    "FactorRoundOffError",
    "SqrtFactor",
    "sqrt_factor",
    "factor_at_hand",
    "rank_bound",
    "pivoted_cholesky_factor",
    "verify_factor",
    "psd_tolerance",
    "indefinite_message",
    "check_psd",
    "check_psd_from_eigenvalues",
    "unit_exponents",
    "scale_spread",
    "psd_verified",
    "remember_psd",
    "verify_psd",
]

# Positive semidefiniteness check: an eigenvalue of sigma in units of its variances (of D^-1/2 sigma D^-1/2, D the
# diagonal of sigma) below -max(floor, slack * dim^2 * eps) is more than float64 round-off; for statistics stored in
# a lower precision, dim times its epsilon more is allowed (see psd_tolerance). Probes are drawn once from a fixed
# seed so the check is deterministic.
_PSD_CHECK_RTOL_FLOOR = 1e-9
_PSD_CHECK_SLACK = 64.0
_PSD_PROBES = 2
_PSD_PROBE_SEED = 20151205


class FactorRoundOffError(InputError):
    """A factor fidkit computed does not reproduce a sigma that is positive semidefinite to round-off (the
    round-off of a low-precision covariance defeated the pivoted Cholesky): the distance takes its dense route."""


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
    scaled : bool
        The pivoted Cholesky ran on sigma in units of its variances (features on very different scales, see
        :func:`pivoted_cholesky_factor`): its columns are not ordered by size, which costs the eigensolve of
        ``factor-eigh`` its accuracy, so the distance takes ``factor-procrustes`` with it.
    """

    matrix: np.ndarray
    kind: str
    dropped_trace: float = 0.0
    scaled: bool = False

    @property
    def rank(self) -> int:
        """Number of columns of the factor."""
        return int(self.matrix.shape[1])


def unit_exponents(sigma: np.ndarray) -> np.ndarray:
    """Per feature, the exponent ``k`` with ``sigma_ii * 4^k`` in ``[0.25, 1)``: scaling row and column ``i`` by
    ``2^k`` is exact and gives every variance the same size (``D^-1/2 sigma D^-1/2`` up to factors of 2).

    The round-off decisions (whether a factor left a feature out, the positive semidefiniteness checks) are made in
    these units, so they are invariant to the scale of each feature: relative to the largest variance, a feature of
    variance 1e-3 beside one of 1e12 is below round-off, and was dropped. Features of zero (or subnormal) variance
    take the largest variance's exponent (:func:`fidkit.stats.checks.variance_units`); with no variance at all, the
    largest entry's.
    """
    units = _units(sigma)
    exponents = np.frexp(units)[1]  # units = m 2^e with m in [0.5, 1); 0 for a zero unit
    # 2^e * 4^-ceil(e / 2) is 1 or 1/2, so the scaled variance m 2^e 4^k lies in [0.25, 1).
    return np.where(units > 0.0, -((exponents + 1) // 2), 0).astype(np.int64)


def _units(sigma: np.ndarray) -> np.ndarray:
    """Per feature, the variance its round-off is measured in (see :func:`unit_exponents`)."""
    units = variance_units(np.diagonal(sigma))
    if units.size and not float(np.max(units)) > 0.0:
        units[:] = float(np.max(np.abs(sigma)))
    return units


def _unit_scaled(sigma: np.ndarray, exponents: np.ndarray) -> np.ndarray:
    """``W sigma W`` with ``W = diag(2^exponents)``, exact, as a new Fortran-ordered array (what LAPACK factors in
    place). `sigma` is symmetric, so its transpose (a Fortran-ordered view of a C-ordered array) is the same matrix
    in the layout wanted: two passes, no transposing copy."""
    scales = np.ldexp(1.0, exponents)
    work = np.multiply(sigma.T, scales[:, None], order="F")
    work *= scales
    return work


def pivoted_cholesky_factor(sigma: np.ndarray, where: str = "sigma", *, storage_eps: float = EPS64) -> SqrtFactor:
    """Return a rank-revealing factor of a positive semidefinite ``sigma`` by pivoted Cholesky (LAPACK ``pstrf``).

    Pivoting on the largest remaining diagonal makes the factorisation stop at the numerical rank instead of
    failing on a singular covariance, so covariances of ``n <= dim`` samples loaded from files without a factor
    get a factor of rank about ``n - 1``. It costs a fraction of an eigendecomposition (``dim^3 / 3`` flops).

    LAPACK's stopping rule (``dim * eps`` of the largest variance) is relative to the largest variance: beside a
    feature of variance 1e12 it cuts off every feature of variance 1e-3 as round-off. So when the factorisation
    stops early and leaves some feature more than ``64 * dim * eps`` of *its own* variance (what round-off can
    leave), sigma is factored again with every variance scaled to about 1 (:func:`unit_exponents`; exact) and the
    rows scaled back: pivots and stopping rule then measure each feature against its own variance (``scaled``).
    Otherwise the first factor stands: pivoting on the variances themselves puts the large ones first, and that
    grading keeps the small eigenvalues of the distance's product accurate (3e-14 against 2e-13 of tr sqrt at dim
    2048; with one feature 1e5 times the variance of the others, 5e-11 against 2e-6 of FID).

    Parameters
    ----------
    sigma : numpy.ndarray
        ``(dim, dim)`` float64, symmetric, finite.
    where : str
        What `sigma` belongs to (a file, an argument), for the error message.
    storage_eps : float
        Machine epsilon of the precision sigma was stored in (:attr:`fidkit.stats.Stats.storage_eps`), for the
        verification.

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
    try:
        return _pivoted_cholesky(sigma, where, storage_eps, EPS64)
    except FactorRoundOffError:
        if storage_eps <= EPS64:
            raise
    # Stop where the statistics' own round-off begins: beyond dim * eps of their storage precision (a float32
    # covariance) the remaining pivots are rounding noise, and factoring on into it yields a factor of another,
    # indefinite matrix. Only on that failure: float64's stopping rule keeps more of a float16 sigma's spectrum,
    # whose dim * eps16 is a good part of the variances.
    return _pivoted_cholesky(sigma, where, storage_eps, storage_eps)


def _pivoted_cholesky(sigma: np.ndarray, where: str, storage_eps: float, eps: float) -> SqrtFactor:
    """:func:`pivoted_cholesky_factor` with pstrf stopping at ``dim * eps`` of the largest variance."""
    dim = sigma.shape[0]
    factor = _pstrf(sigma, None, eps)
    exponents = None
    if factor.shape[1] < dim:
        units = _units(sigma)
        lost = (np.diagonal(sigma) - np.einsum("ij,ij->i", factor, factor)) / np.where(units > 0.0, units, 1.0)
        if float(np.max(lost)) > _PSD_CHECK_SLACK * dim * eps:
            exponents = unit_exponents(sigma)
            factor = _pstrf(sigma, exponents, eps)
    dropped = verify_factor(sigma, factor, where, storage_eps=storage_eps, exponents=exponents, computed=True)
    return SqrtFactor(matrix=factor, kind="pivoted-cholesky", dropped_trace=dropped, scaled=exponents is not None)


def _pstrf(sigma: np.ndarray, exponents: np.ndarray | None, eps: float = EPS64) -> np.ndarray:
    """The ``(dim, rank)`` factor ``F`` (``sigma = F F^T``) pstrf finds for sigma, or for sigma in units of its
    variances (`exponents`, :func:`unit_exponents`) with the scaling undone; it stops at pivots below
    ``dim * eps`` of the largest variance (`eps`: the storage precision's machine epsilon)."""
    # sigma.T is a Fortran-ordered view of the same (symmetric) matrix: LAPACK's copy of it is a plain one.
    work = sigma.T if exponents is None else _unit_scaled(sigma, exponents)
    # tol < 0 is LAPACK's default, dim * eps64 * max pivot; a lower storage precision stops at its own dim * eps.
    tol = -1.0 if eps <= EPS64 else sigma.shape[0] * eps * float(np.max(np.diagonal(work), initial=0.0))
    lower, pivots, rank, info = scipy.linalg.lapack.dpstrf(
        work, tol=tol, lower=1, overwrite_a=int(exponents is not None)
    )
    if info < 0:
        raise InputError(f"pivoted Cholesky rejected argument {-info}; this is a bug in fidkit, please report it")
    triangle = np.tril(lower[:, : int(rank)])
    if exponents is not None:
        # pstrf factored C = W sigma W: scale the rows back (exactly: powers of two).
        triangle *= np.ldexp(1.0, -exponents[pivots - 1])[:, None]
    # pstrf factors P^T sigma P = T T^T; undo the permutation on the rows so that sigma = F F^T.
    factor = np.empty((sigma.shape[0], int(rank)), dtype=np.float64)
    factor[pivots - 1] = triangle
    return factor


def verify_factor(
    sigma: np.ndarray, factor: np.ndarray, where: str, *, storage_eps: float = EPS64,
    exponents: np.ndarray | None = None, computed: bool = False,
) -> float:
    """Return ``tr(sigma - L L^T)``, or raise InputError unless ``factor @ factor.T`` equals `sigma` to the
    accuracy pivoted Cholesky guarantees.

    Judged in units of the variances (``C = D^-1/2 sigma D^-1/2``, :func:`unit_exponents`; the factor's rows
    scaled alike). :func:`pivoted_cholesky_factor` leaves out at most ``64 * dim * eps`` of any feature's variance,
    and pstrf stops early on an indefinite matrix at the first negative pivot: it returns a factor of a *different*
    matrix without any error (``[[1, 2], [2, 1]]`` gives ``L = [1, 2]^T``). On a positive semidefinite sigma the
    part left out is itself positive semidefinite with that small a diagonal, so its norm is at most
    ``64 * dim^2 * eps``. Two checks separate the cases:

    * the residual trace ``tr(C - L_C L_C^T)``, which is ``>= 0`` up to round-off for a PSD sigma;
    * fixed random probes ``v``: ``||(C - L_C L_C^T) v||`` against ``||v||``. The trace alone misses indefinite
      matrices whose residual has zero trace (``[[1,0,0],[0,0,1],[0,1,0]]``); a residual that is not small along
      random directions cannot be. Each probe costs ``O(dim^2)``, nothing next to the ``dim^3 / 3`` of the
      factorisation.

    The tolerance is :func:`psd_tolerance` (`storage_eps`: the precision sigma was stored in). `computed` says
    the factor is fidkit's own (:func:`pivoted_cholesky_factor`), not one stored with the statistics: when it
    fails on a sigma that is positive semidefinite to round-off, the message says so instead of blaming a file.
    """
    dim = sigma.shape[0]
    dropped = float(np.trace(sigma) - np.einsum("ij,ij->", factor, factor))
    row_norms = np.einsum("ij,ij->i", factor, factor)
    if _nothing_to_check(sigma):
        return dropped
    if exponents is None:
        exponents = unit_exponents(sigma)
    scales = np.ldexp(1.0, exponents)
    tolerance = psd_tolerance(dim, storage_eps)
    # Residual trace in units: sum_i (sigma_ii - ||L_i||^2) / unit_i.
    unit_dropped = float(np.sum(np.ldexp(np.diagonal(sigma) - row_norms, 2 * exponents)))
    probes = np.random.default_rng(_PSD_PROBE_SEED).standard_normal((_PSD_PROBES, dim))
    probe_norms = np.linalg.norm(probes, axis=1)
    # (C - L_C L_C^T) v = W (sigma - L L^T) (W v): the scales go on the probes and the residual, so sigma itself is
    # neither copied nor scaled. sigma (W v) and L^T (W v) stay near the square root of the variances: no overflow.
    probe_error = _probe_residual(sigma, factor, probes * scales, scales, probe_norms)
    # A factor fidkit computed stopped at round-off pivots: what it left out of a PSD sigma is PSD, and a PSD
    # residual R has ||R v|| <= tr(R) ||v||. For float32 statistics that trace (pivots below dim * eps32 each) can
    # exceed the tolerance; an indefinite sigma makes pstrf stop at a negative pivot instead (negative trace).
    allowed = tolerance + max(unit_dropped, 0.0) if computed else tolerance
    if unit_dropped < -dim * tolerance or not probe_error <= allowed:
        # The error path only: one eigenvalue tells an indefinite sigma (the usual case, named with its most
        # negative eigenvalue) from a positive semidefinite one whose stored factor belongs to other statistics.
        unit_smallest = _smallest_unit_eigenvalue(sigma)
        if unit_smallest < -tolerance:
            raise InputError(indefinite_message(where, _smallest_eigenvalue(sigma), unit_smallest, tolerance))
        if computed:
            raise FactorRoundOffError(
                f"{where}: the pivoted Cholesky factor fidkit computed leaves a residual of "
                f"{max(probe_error, -unit_dropped):.3g} in units of the variances although sigma is positive "
                f"semidefinite to round-off (smallest eigenvalue {unit_smallest:.3g} in those units): its round-off "
                "is too large for the factored routes; use method='eigh'"
            )
        raise InputError(
            f"{where}: factor @ factor.T does not reproduce sigma: it leaves a residual of "
            f"{max(probe_error, -unit_dropped):.3g} in units of the variances (a covariance and its own factor "
            "agree to round-off); a stored factor that belongs to other statistics, or an edited file: recompute "
            "the statistics"
        )
    return dropped


def psd_tolerance(dim: int, storage_eps: float = EPS64) -> float:
    """The most negative eigenvalue of ``D^-1/2 sigma D^-1/2`` (sigma in units of its variances) that is still
    round-off, for a ``dim x dim`` sigma stored with machine epsilon `storage_eps`.

    ``max(1e-9, 64 dim^2 eps)`` for float64: well above pstrf's truncation (``<= dim^2 eps``) and the round-off of
    computing a covariance (``dim eps``), and below any negative eigenvalue that is more than round-off (1e-9 of a
    variance is about 1e-7 of the standard deviation). Statistics stored in a lower precision (a float32 file) had
    every entry rounded by up to half its epsilon relative to ``sqrt(sigma_ii sigma_jj)``, which moves an
    eigenvalue of the scaled matrix by up to ``dim * eps / 2``: ``dim * storage_eps`` more is allowed.
    """
    tolerance = max(_PSD_CHECK_RTOL_FLOOR, _PSD_CHECK_SLACK * dim * dim * EPS64)
    if storage_eps > EPS64:
        tolerance += dim * storage_eps
    return tolerance


def _nothing_to_check(sigma: np.ndarray) -> bool:
    """True for a sigma with no entry of normal magnitude: all zero (positive semidefinite), or subnormal, where
    underflow has taken the relative precision that definiteness is judged by. Reads the diagonal first."""
    if sigma.shape[0] == 0 or float(np.max(np.diagonal(sigma))) >= TINY:
        return sigma.shape[0] == 0
    return not float(np.max(np.abs(sigma))) >= TINY


def _smallest_eigenvalue(sigma: np.ndarray) -> float:
    """The smallest eigenvalue of the symmetric `sigma` (computed in units of its scale, so it cannot overflow)."""
    if sigma.shape[0] == 0:
        return 0.0
    scale = float(np.max(np.abs(sigma)))
    exponent = int(np.clip(math.frexp(scale)[1], -1000, 1000)) if scale > 0.0 else 0
    smallest = scipy.linalg.eigh(
        np.ldexp(sigma, -exponent), eigvals_only=True, subset_by_index=[0, 0], check_finite=False
    )
    return math.ldexp(float(smallest[0]), exponent)


def _smallest_unit_eigenvalue(sigma: np.ndarray) -> float:
    """The smallest eigenvalue of ``D^-1/2 sigma D^-1/2`` (sigma in units of its variances, :func:`_units`; the
    decisions use powers of two within a factor 2 of these, for exactness); ``-inf`` when that scaling overflows,
    which only covariances far beyond ``|sigma_ij| <= sqrt(sigma_ii sigma_jj)`` do."""
    inverse_roots = 1.0 / np.sqrt(_units(sigma))
    scaled = sigma * inverse_roots[:, None] * inverse_roots
    return _smallest_eigenvalue(scaled) if np.isfinite(scaled).all() else -math.inf


def indefinite_message(where: str, smallest: float, unit_smallest: float, tolerance: float) -> str:
    """The one message for a sigma that is not positive semidefinite: where, its most negative eigenvalue, the bound."""
    return (
        f"{where}: sigma is not positive semidefinite (not a covariance matrix): its most negative eigenvalue is "
        f"{smallest:.6g} ({unit_smallest:.3g} in units of its variances, i.e. of D^-1/2 sigma D^-1/2 with D its "
        f"diagonal; round-off allows {-tolerance:.1g}); check that it was computed as a covariance of features and "
        "not edited or corrupted"
    )


def check_psd(sigma: np.ndarray, where: str, storage_eps: float = EPS64) -> None:
    """Raise InputError unless the symmetric `sigma` is positive semidefinite up to :func:`psd_tolerance`.

    A Cholesky factorisation (LAPACK ``potrf``, ``dim^3 / 3`` flops, no pivoting) of ``C + tolerance * I``, with
    ``C`` sigma in units of its variances (:func:`unit_exponents`; exact), succeeds exactly when no eigenvalue of
    ``C`` is below ``-tolerance`` (up to the factorisation's round-off, far below the tolerance); only when it
    fails is the smallest eigenvalue computed, to tell round-off from indefiniteness and to name it. The scaling
    also keeps entries near 1e300 or 1e-300 from overflowing or underflowing.

    Raises
    ------
    InputError
        `sigma` has an eigenvalue below ``-tolerance`` in units of its variances; the message names `where` and
        the eigenvalue.
    """
    dim = sigma.shape[0]
    if _nothing_to_check(sigma):
        return
    tolerance = psd_tolerance(dim, storage_eps)
    exponents = unit_exponents(sigma)
    work = _unit_scaled(sigma, exponents)
    # Shift by tolerance times each scaled variance, not by tolerance: W sigma W + tolerance * diag(W sigma W) is
    # congruent to D^-1/2 sigma D^-1/2 + tolerance * I, so this decides in exactly the units the error path (and
    # verify_factor) measure the smallest eigenvalue in; the power-of-two units alone are up to 4x off.
    work[np.diag_indices_from(work)] *= 1.0 + tolerance
    _, info = scipy.linalg.lapack.dpotrf(work, lower=1, clean=0, overwrite_a=1)
    if info < 0:
        raise InputError(f"Cholesky rejected argument {-info}; this is a bug in fidkit, please report it")
    if info == 0:
        return
    unit_smallest = _smallest_unit_eigenvalue(sigma)
    if unit_smallest < -tolerance:
        raise InputError(indefinite_message(where, _smallest_eigenvalue(sigma), unit_smallest, tolerance))


def check_psd_from_eigenvalues(sigma: np.ndarray, smallest: float, where: str, storage_eps: float = EPS64) -> None:
    """:func:`check_psd` for a sigma whose smallest eigenvalue was computed (the dense ``eigh`` route has them all).

    ``C = W sigma W`` has no eigenvalue below ``lambda * max(W)^2`` for a negative lower bound ``lambda`` of sigma's
    eigenvalues. The eigensolver's `smallest` is accurate to about ``dim * eps * max(diag)`` only, so ``lambda`` is
    `smallest` less that; when it is within the tolerance of the smallest variance this settles it for nothing,
    otherwise (variances far apart, or negative eigenvalues) the Cholesky check decides.
    """
    dim = sigma.shape[0]
    if dim == 0:
        return
    bound = smallest - dim * EPS64 * max(float(np.max(np.diagonal(sigma))), 0.0)
    largest_scale = math.ldexp(1.0, 2 * int(np.max(unit_exponents(sigma))))
    if bound >= 0.0 or bound * largest_scale >= -psd_tolerance(dim, storage_eps):
        return
    check_psd(sigma, where, storage_eps)


def _probe_residual(
    sigma: np.ndarray, factor: np.ndarray, probes: np.ndarray, scales: np.ndarray, probe_norms: np.ndarray
) -> float:
    """Return ``max_k ||W (sigma - L L^T) u_k|| / ||v_k||`` for the rows ``u_k = W v_k`` of `probes`.

    Through scipy's BLAS, the library pstrf just ran on: handing over to numpy's separately linked OpenBLAS
    right after it makes the two thread pools fight for the cores, which measured 0.11 s instead of 0.003 s
    at dim 2048 on 2 cores. ``sigma u`` reads only the lower triangle (``symv``: half the memory traffic of a
    general product, and the same triangle pstrf factored); the transposes are views in the layout BLAS wants,
    so no ``dim x dim`` copy is made for C-ordered inputs.
    """
    columns = probes.T  # (dim, k), Fortran-ordered view
    # sigma.T is Fortran-ordered; its upper triangle (lower=0) is sigma's lower triangle.
    sigma_v = np.stack([scipy.linalg.blas.dsymv(1.0, sigma.T, probe, lower=0) for probe in probes], axis=1)
    projected = scipy.linalg.blas.dgemm(1.0, factor.T, columns)  # L^T u, (rank, k)
    residual = scipy.linalg.blas.dgemm(
        -1.0, factor.T, projected, beta=1.0, c=np.asfortranarray(sigma_v), trans_a=1, overwrite_c=1
    )
    residual *= scales[:, None]
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
            verify_factor(stats.sigma, stats.factor, where(stats, label), storage_eps=stats.storage_eps)
            factor = SqrtFactor(matrix=stats.factor, kind="features", dropped_trace=0.0)
        else:
            factor = pivoted_cholesky_factor(stats.sigma, where(stats, label), storage_eps=stats.storage_eps)
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
        check_psd(stats.sigma, where(stats, label), stats.storage_eps)
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


def scale_spread(stats: Stats) -> float:
    """How far apart the scales of the features are: the largest variance over the smallest positive one (1.0 for
    a covariance without variance). The distance takes its scale-robust route beyond a bound on this."""
    diagonal = np.diagonal(stats.sigma)
    positive = diagonal[diagonal >= TINY]
    return float(np.max(positive) / np.min(positive)) if positive.size else 1.0
