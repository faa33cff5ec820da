"""The Fréchet distance between two Gaussians, with a stable trace of the matrix square root.

    FID = ||mu_a - mu_b||^2 + tr(sigma_a) + tr(sigma_b) - 2 tr sqrt(sigma_a sigma_b)

``tr sqrt(sigma_a sigma_b)`` is the sum of the square roots of the eigenvalues of ``sigma_a sigma_b``, which
are those of the symmetric positive semidefinite ``L_a^T sigma_b L_a`` for any factor ``sigma_a = L_a L_a^T``.
fidkit never forms the non-symmetric product and never calls ``scipy.linalg.sqrtm`` outside the TTUR
compatibility method. The routes (``FrechetResult.method``):

``factor-svd``
    Both sides have a factor at hand and the smaller has rank ``<= dim / 2`` (``N <= dim`` features, or
    fidkit files with ``n <= dim``, which store their exact factor): ``tr sqrt = ||L_a^T L_b||_*``, the
    nuclear norm (sum of singular values), i.e. ``||Xc Yc^T||_* / sqrt((n-1)(m-1))`` for centred features.
    Singular values are accurate to ``eps * ||L_a^T L_b||``, on the square-root scale, so nothing is lost
    to round-off.
``factor-eigh``
    ``sum sqrt(eig(L^T sigma_other L))``: one symmetric eigensolve of size ``rank(L)``, with ``L`` the
    smaller-rank side's factor (stored, or pivoted Cholesky, see :mod:`fidkit.frechet.factors`); the product
    is formed through the Cholesky factor of ``sigma_other``, which checks that one too.
``eigh``
    (forced with ``method="eigh"``) the dense textbook route ``sqrt(sigma_a) sigma_b sqrt(sigma_a)`` with
    ``sqrt(sigma_a)`` from a symmetric eigendecomposition.
``sqrtm-ttur``
    (``method="ttur"``) TTUR's historical computation: ``scipy.linalg.sqrtm(sigma_a @ sigma_b)``, retried
    with ``eps * I`` added to both covariances when that is not finite, imaginary part checked and dropped.
``identical-sigma``
    The two covariances are the same array: the trace terms cancel exactly and FID is ``||mu_a - mu_b||^2``.

Every covariance that enters the distance is checked positive semidefinite on every route (an indefinite one is
refused, naming its most negative eigenvalue), and a distance that overflows float64 is refused naming the term.
See ``docs/numerics.md`` for why each route is stable and what every diagnostic means.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg

from fidkit._validate import check_features
from fidkit.errors import FidkitError, FidkitWarning, InputError, SmallSampleWarning, StatsFileError
from fidkit.frechet.factors import (
    SqrtFactor,
    factor_at_hand,
    indefinite_message,
    psd_tolerance,
    rank_bound,
    remember_psd,
    sqrt_factor,
    verify_psd,
)
from fidkit.frechet.torch_route import eigvalsh_float64, torch_device_for_distance
from fidkit.stats import Stats

__all__ = [
    "FrechetResult",
    "frechet_distance",
    "fid_from_stats",
    "fid_from_arrays",
    "METHODS",
]

logger = logging.getLogger(__name__)

#: Accepted values of ``method=``; ``"ttur"`` and ``"sqrtm"`` are aliases of ``"sqrtm-ttur"``.
METHODS = ("auto", "eigh", "sqrtm-ttur", "ttur", "sqrtm")
_TTUR_ALIASES = frozenset({"sqrtm-ttur", "ttur", "sqrtm"})
# TTUR's offset added to both diagonals when sqrtm of the product is not finite.
TTUR_EPS = 1e-6
# TTUR's tolerance on the imaginary part of the diagonal of sqrtm(sigma_a sigma_b).
TTUR_IMAG_ATOL = 1e-3
# Magnitudes between which products need no rescaling (2^-200 .. 2^200; float64 spans 2^-1074 .. 2^1024).
_SAFE_MAGNITUDE_LOW = 2.0**-200
_SAFE_MAGNITUDE_HIGH = 2.0**200
# Both factors are used in an SVD (more exact than an eigensolve of L^T sigma L) when the smaller has at
# most this fraction of dim columns; for two full-rank factors the dense SVD costs ~3x the eigensolve.
_SVD_MAX_RANK_FRACTION = 0.5
# With features at hand and one side of N <= dim, the other side keeps its exact factor (its centred rows) up to
# this many rows per dimension; beyond it, its covariance is accumulated in chunks so that memory stays bounded.
_FEATURES_AS_FACTOR_MAX_RATIO = 4
# Below this rank the factor-eigh eigensolve stays on the CPU even when a GPU is there.
_TORCH_SOLVER_MIN_RANK = 512
# Statistics whose sigma has no Cholesky factorisation (singular or indefinite), with that very sigma array: the
# factor-eigh route forms its product without one for them, instead of failing the factorisation every time.
_NOT_DEFINITE: weakref.WeakKeyDictionary[Stats, np.ndarray] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class FrechetResult:
    """The Fréchet distance and the diagnostics of how it was computed.

    Behaves as a float: ``float(result)`` is :attr:`value`.

    Attributes
    ----------
    value : float
        The distance, ``mean_term + trace_a + trace_b - 2 trace_sqrt``, never negative.
    mean_term : float
        ``||mu_a - mu_b||^2``.
    trace_a, trace_b : float
        ``tr(sigma_a)``, ``tr(sigma_b)``.
    trace_sqrt : float
        ``tr sqrt(sigma_a sigma_b)``.
    n_a, n_b : int or None
        Samples per side; None where a statistics file did not record it.
    dim : int
        Feature dimension.
    method : str
        The route that computed ``trace_sqrt`` (see the module docstring).
    rank : int
        Size of the eigenproblem or the smaller side of the SVD actually solved (0 for ``identical-sigma``).
    min_eigenvalue : float
        Smallest eigenvalue of the symmetric matrix whose eigenvalue square roots sum to ``trace_sqrt``,
        before clipping (for SVD routes: the smallest squared singular value, never negative). Units of
        variance squared. NaN for ``sqrtm-ttur``, which has no eigenvalues to show.
    clipped_negative : float
        ``sum(sqrt(-lambda))`` over the negative eigenvalues clipped to zero: an upper bound on how much the
        clipping changed ``trace_sqrt`` (same units as ``trace_sqrt``; FID moves by at most twice this).
        For ``eigh`` it also counts the negative eigenvalues of ``sigma_a`` clipped before its square root.
    warnings : tuple of str
        Messages also issued as warnings (small samples, TTUR offset retries).
    factor_side : str
        ``"a"`` or ``"b"``: whose factor (or square root) was applied to the other's covariance; ``""`` when
        not applicable.
    factor_dropped : float
        For a pivoted-Cholesky factor: ``tr(sigma) - ||L||_F^2``, the variance left out because the pivoting
        stopped at round-off level (numerical rank below dim).
    solver : str
        Who solved the eigenproblem of ``factor-eigh``: ``"scipy"`` (LAPACK on the CPU), or
        ``"torch-cuda"`` (float64 on the GPU, chosen automatically when torch can reach one).
    """

    value: float
    mean_term: float
    trace_a: float
    trace_b: float
    trace_sqrt: float
    n_a: int | None
    n_b: int | None
    dim: int
    method: str
    rank: int
    min_eigenvalue: float
    clipped_negative: float
    warnings: tuple[str, ...] = ()
    factor_side: str = ""
    factor_dropped: float = 0.0
    solver: str = "scipy"

    def __float__(self) -> float:
        return float(self.value)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (plain floats, ints, strings; NaN becomes None)."""
        plain: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, float) and not math.isfinite(value):
                value = None
            plain[item.name] = value
        return plain


@dataclass(frozen=True)
class _TraceSqrt:
    """What a trace-of-square-root route found, before assembling the FrechetResult."""

    value: float
    method: str
    rank: int
    min_eigenvalue: float
    clipped_negative: float
    factor_side: str = ""
    factor_dropped: float = 0.0
    warnings: tuple[str, ...] = ()
    solver: str = "scipy"


# --------------------------------------------------------------------------------------------- kernels


def _sum_sqrt_eigenvalues(symmetric: np.ndarray, device: str | None = None) -> tuple[float, float, float]:
    """Return (sum sqrt(max(lambda, 0)), min lambda, sum sqrt(-lambda) over negatives) of a symmetric matrix.

    With a torch `device` the eigenvalues come from :func:`fidkit.frechet.torch_route.eigvalsh_float64`,
    otherwise from scipy; the sums are the same code either way.
    """
    if symmetric.shape[0] == 0:  # a zero covariance has a rank-0 factor
        return 0.0, 0.0, 0.0
    if device is not None:
        eigenvalues = eigvalsh_float64(symmetric, device)
    else:
        eigenvalues = scipy.linalg.eigh(symmetric, eigvals_only=True, check_finite=False, overwrite_a=True)
    negative = eigenvalues[eigenvalues < 0]
    total = float(np.sum(np.sqrt(np.maximum(eigenvalues, 0.0))))
    return total, float(eigenvalues.min()), float(np.sum(np.sqrt(-negative)))


def _nuclear_norm(matrix: np.ndarray) -> tuple[float, float]:
    """Return (sum of singular values, smallest squared singular value)."""
    if min(matrix.shape) == 0:  # a zero covariance has a rank-0 factor
        return 0.0, 0.0
    try:
        # numpy's SVD, not scipy's: the product was just formed by numpy's BLAS, and handing over to the
        # separate OpenBLAS that scipy links makes two thread pools fight for the cores (measured 0.20 s
        # against 0.12 s for a 499 x 2048 product at dim 2048 on 2 cores).
        singular_values = np.linalg.svd(matrix, compute_uv=False)
    except np.linalg.LinAlgError:
        # gesdd can fail to converge on rare inputs; gesvd is slower but more robust.
        singular_values = scipy.linalg.svd(matrix, compute_uv=False, check_finite=False, lapack_driver="gesvd")
    # numpy's square, not Python's **: a singular value beyond 1e154 squares to inf (a diagnostic only)
    # instead of raising OverflowError.
    smallest = float(np.square(singular_values.min())) if singular_values.size else 0.0
    return float(np.sum(singular_values)), smallest


def _power_of_two_scale(array: np.ndarray) -> float:
    """A power of two near max|array| (1.0 for an all-zero array).

    Products such as ``L^T sigma L`` are formed on arrays divided by this and the result multiplied back:
    a power of two changes only exponents, so no rounding is added, and products of representable factors
    and covariances (features of magnitude up to about 1e150 or down to 1e-150) neither overflow to inf nor
    underflow to 0. It cannot extend the range of the inputs themselves: a covariance needs the squares of
    the features, so features beyond about 1e154 are refused when their statistics are computed
    (:class:`~fidkit.errors.InputError`), and below about 1e-154 the covariance loses precision to underflow.
    """
    if array.size == 0:
        return 1.0
    largest = max(float(np.max(array)), -float(np.min(array)))  # no |array| temporary
    if _SAFE_MAGNITUDE_LOW <= largest <= _SAFE_MAGNITUDE_HIGH or largest == 0.0:
        # Products of up to four such arrays summed over dim terms stay far from overflow and underflow:
        # skip the division (and its copy of the array), which would change nothing.
        return 1.0
    # 2^(e - 1) <= largest < 2^e: divided by 2^(e - 1) the entries lie in [1, 2), and 2^(e - 1) is finite even
    # for entries near float64's maximum (2^e would be 2^1024, which overflows).
    return math.ldexp(1.0, math.frexp(largest)[1] - 1)


def _scaled(array: np.ndarray, scale: float) -> np.ndarray:
    return array if scale == 1.0 else array / scale


def _sandwich(factor: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Return ``L^T sigma L`` exactly symmetric."""
    product = factor.T @ (sigma @ factor)
    return (product + product.T) * 0.5


def _trace_sqrt_factors(first: SqrtFactor, second: SqrtFactor, side: str) -> _TraceSqrt:
    scale_first, scale_second = _power_of_two_scale(first.matrix), _power_of_two_scale(second.matrix)
    total, smallest = _nuclear_norm(_scaled(first.matrix, scale_first).T @ _scaled(second.matrix, scale_second))
    scale = scale_first * scale_second
    return _TraceSqrt(
        value=total * scale,
        method="factor-svd",
        rank=min(first.rank, second.rank),
        min_eigenvalue=smallest * scale * scale,
        clipped_negative=0.0,
        factor_side=side,
        factor_dropped=first.dropped_trace + second.dropped_trace,
    )


def _cholesky_sandwich(factor: np.ndarray, sigma: np.ndarray) -> np.ndarray | None:
    """Return ``L^T sigma L`` as ``B^T B`` with ``B = R^T L`` and ``sigma = R R^T`` (Cholesky), or None.

    None when the Cholesky factorisation (LAPACK ``potrf``) fails, i.e. when `sigma` is not numerically
    positive definite (singular, or indefinite). Its success is a certificate that `sigma` is positive
    semidefinite up to round-off, and it costs no more than the product it replaces: ``potrf`` (``dim^3 / 3``)
    plus ``trmm`` and ``syrk`` (half a general product each) against two general products for
    ``L^T (sigma L)`` (0.79 s against 0.81 s of CPU at dim 2048). ``B^T B`` is positive semidefinite by
    construction, and agrees with the general product to ``1e-15`` relative.
    """
    # sigma.T is a Fortran-ordered view of a C-ordered sigma (which is symmetric): the copy potrf overwrites is
    # made in the layout LAPACK wants.
    work = np.array(sigma.T, dtype=np.float64, order="F")
    lower, info = scipy.linalg.lapack.dpotrf(work, lower=1, clean=1, overwrite_a=1)
    if info != 0:
        return None
    product = scipy.linalg.blas.dtrmm(1.0, lower, np.asfortranarray(factor), lower=1, trans_a=1)  # R^T L
    gram = scipy.linalg.blas.dsyrk(1.0, product, trans=1, lower=1)  # lower triangle of B^T B
    gram = np.tril(gram)
    gram += np.tril(gram, -1).T
    return gram


def _trace_sqrt_factor_eigh(
    factor: SqrtFactor, other: Stats, side: str, check_other: Callable[[], None]
) -> _TraceSqrt:
    """``sum sqrt(eig(L^T sigma_other L))``; `other`'s sigma is checked positive semidefinite on the way.

    `factor` has been verified (so its own sigma is positive semidefinite); `other`'s sigma enters only through
    the product, which sees it on the columns of ``L`` alone, so it is checked here unless it was before: by
    the Cholesky factorisation the product is formed through (no extra cost), or, when that fails because
    sigma is singular, by `check_other` (:func:`~fidkit.frechet.factors.verify_psd` with the caller's labels).
    """
    sigma_other = other.sigma
    scale_factor, scale_sigma = _power_of_two_scale(factor.matrix), _power_of_two_scale(sigma_other)
    # The eigensolve is most of the cost at dim 2048; a GPU does it faster when torch can reach one. Small
    # problems stay on the CPU, where the transfer would cost more than the solve.
    device = torch_device_for_distance() if factor.rank >= _TORCH_SOLVER_MIN_RANK else None
    scaled_factor = _scaled(factor.matrix, scale_factor)
    # Always through the Cholesky factorisation when sigma has one, whether or not it was checked before: the
    # product then depends on the two covariances alone, never on what an earlier call cached (so FID(a, b)
    # and FID(b, a) stay bitwise equal). A sigma without one (singular) is remembered, so it costs one failed
    # factorisation per object, and is checked with a shift once (check_other).
    sandwich = None
    if _NOT_DEFINITE.get(other) is not sigma_other:
        sandwich = _cholesky_sandwich(scaled_factor, _scaled(sigma_other, scale_sigma))
    if sandwich is None:
        _NOT_DEFINITE[other] = sigma_other
        check_other()  # raises for an indefinite sigma; a singular positive semidefinite one is fine
        sandwich = _sandwich(scaled_factor, _scaled(sigma_other, scale_sigma))
    else:
        remember_psd(other)
    try:
        total, smallest, clipped = _sum_sqrt_eigenvalues(sandwich, device)
    except FidkitError as exc:
        if device is None:
            raise
        # A GPU that fails (out of memory, a broken CUDA setup) costs speed, never the distance.
        logger.warning("the GPU eigensolver failed (%s); solving on the CPU", exc)
        device = None
        total, smallest, clipped = _sum_sqrt_eigenvalues(sandwich, None)
    # scale_sigma is a power of two, but an odd power has no exact square root; that one rounding is 1 ulp.
    root_scale = scale_factor * math.sqrt(scale_sigma)
    return _TraceSqrt(
        value=total * root_scale,
        method="factor-eigh",
        rank=factor.rank,
        min_eigenvalue=smallest * scale_factor * scale_factor * scale_sigma,
        clipped_negative=clipped * root_scale,
        factor_side=side,
        factor_dropped=factor.dropped_trace,
        solver=f"torch-{device}" if device is not None else "scipy",
    )


def _trace_sqrt_dense_eigh(
    sigma_root_side: np.ndarray, sigma_other: np.ndarray, side: str, where: str = "sigma"
) -> _TraceSqrt:
    """tr sqrt(sqrt(S1) S2 sqrt(S1)) with sqrt(S1) from a symmetric eigendecomposition (clipped at 0).

    The eigendecomposition also checks that S1 is positive semidefinite (InputError naming `where` if not);
    the caller checks S2.
    """
    scale_root, scale_other = _power_of_two_scale(sigma_root_side), _power_of_two_scale(sigma_other)
    eigenvalues, eigenvectors = scipy.linalg.eigh(_scaled(sigma_root_side, scale_root), check_finite=False)
    if eigenvalues.size:
        tolerance, scale = psd_tolerance(sigma_root_side)
        smallest = float(eigenvalues.min()) * scale_root
        if smallest < -tolerance:
            raise InputError(indefinite_message(where, smallest, scale, tolerance))
    negative_root = eigenvalues[eigenvalues < 0]
    root = (eigenvectors * np.sqrt(np.maximum(eigenvalues, 0.0))) @ eigenvectors.T
    total, smallest, clipped = _sum_sqrt_eigenvalues(_sandwich(root, _scaled(sigma_other, scale_other)))
    root_scale = math.sqrt(scale_root) * math.sqrt(scale_other)  # the product itself may overflow
    return _TraceSqrt(
        value=total * root_scale,
        method="eigh",
        rank=int(sigma_root_side.shape[0]),
        min_eigenvalue=min(smallest * scale_root * scale_other, float(eigenvalues.min()) * scale_root),
        # Clipping lambda < 0 of sigma_a moves sqrt(sigma_a) by sqrt(-lambda) along one direction, which moves
        # trace_sqrt by at most sqrt(-lambda * ||sigma_b||); in scaled units ||sigma_b|| is about 1.
        clipped_negative=(clipped + float(np.sum(np.sqrt(-negative_root)))) * root_scale,
        factor_side=side,
    )


def _trace_sqrt_ttur(sigma_a: np.ndarray, sigma_b: np.ndarray) -> _TraceSqrt:
    """TTUR's computation: sqrtm of the product, eps retry, imaginary-part check (argument order kept)."""
    notes: list[str] = []

    def root_of_product(first: np.ndarray, second: np.ndarray) -> np.ndarray | None:
        try:
            with warnings.catch_warnings():
                # SciPy warns about singular products itself; TTUR's retry below is what we report.
                warnings.simplefilter("ignore")
                root = np.asarray(scipy.linalg.sqrtm(first @ second))
        except (np.linalg.LinAlgError, ValueError, ZeroDivisionError):
            return None
        return root if np.isfinite(root).all() else None

    root = root_of_product(sigma_a, sigma_b)
    if root is None:
        message = (
            f"sqrtm(sigma_a @ sigma_b) is not finite (singular product); as TTUR does, added {TTUR_EPS:g} to "
            "the diagonal of both covariances and retried"
        )
        notes.append(message)
        offset = np.eye(sigma_a.shape[0], dtype=np.float64) * TTUR_EPS
        root = root_of_product(sigma_a + offset, sigma_b + offset)
        if root is None:
            raise FidkitError(
                "method='ttur': sqrtm of the covariance product is not finite even after TTUR's eps offset; "
                "use method='auto'"
            )
    if np.iscomplexobj(root):
        if not np.allclose(np.diagonal(root).imag, 0.0, atol=TTUR_IMAG_ATOL):
            largest = float(np.max(np.abs(root.imag)))
            raise FidkitError(
                f"method='ttur': sqrtm has an imaginary component of {largest:.3g} (TTUR's check, tolerance "
                f"{TTUR_IMAG_ATOL:g}); the result would be meaningless: use method='auto'"
            )
        root = root.real
    return _TraceSqrt(
        value=float(np.trace(root)),
        method="sqrtm-ttur",
        rank=int(sigma_a.shape[0]),
        min_eigenvalue=math.nan,
        clipped_negative=0.0,
        warnings=tuple(notes),
    )


# --------------------------------------------------------------------------------------------- helpers


def _normalise_method(method: str) -> str:
    if not isinstance(method, str) or method not in METHODS:
        raise InputError(f"method={method!r} is not one of {', '.join(repr(m) for m in METHODS)}")
    return "sqrtm-ttur" if method in _TTUR_ALIASES else method


def _small_sample_messages(n_a: int | None, n_b: int | None, dim: int) -> list[str]:
    messages = []
    for side, n_samples in (("a", n_a), ("b", n_b)):
        if n_samples is not None and n_samples < dim:
            messages.append(
                f"side {side} has N = {n_samples} samples for dim = {dim} features: the covariance is singular "
                f"(rank <= N - 1 = {n_samples - 1}) and FID is biased and unstable at this size; use at least "
                f"{dim} samples per side (FID is customarily reported on 10,000 to 50,000)"
            )
    return messages


def _emit(result: FrechetResult) -> None:
    """Issue the result's messages as warnings: SmallSampleWarning for N < dim, FidkitWarning otherwise."""
    small_sample = set(_small_sample_messages(result.n_a, result.n_b, result.dim))
    for message in result.warnings:
        category = SmallSampleWarning if message in small_sample else FidkitWarning
        # stacklevel 3: the user's call of the public function, not this helper.
        warnings.warn(message, category, stacklevel=3)


def _route_key(stats: Stats) -> tuple:
    """Which side's factor is applied to the other's covariance: the smaller rank first, then one whose factor
    is at hand, then an order of contents (trace, then the mean) that does not depend on argument order.

    Exact ties of rank, trace and mean with different covariances do not occur in practice; for them side a
    goes first.
    """
    return (rank_bound(stats), not factor_at_hand(stats), stats.trace, tuple(stats.mu))


def _assemble(
    mean_term: float,
    trace_a: float,
    trace_b: float,
    trace: _TraceSqrt,
    n_a: int | None,
    n_b: int | None,
    dim: int,
    messages: list[str],
    names: tuple[str, str] = ("sigma_a", "sigma_b"),
) -> FrechetResult:
    # Trace part first: when trace_sqrt equals both traces it cancels to exactly 0 and FID is exactly the
    # mean term. The trace part is the squared Bures distance, >= 0 in exact arithmetic: clip round-off.
    if trace.method == "identical-sigma":
        trace_part = 0.0  # the same covariance on both sides: exactly 0, also where its trace overflows
    else:
        trace_part = (trace_a + trace_b) - 2.0 * trace.value
        if not math.isfinite(trace_part) and math.isfinite(trace_a) and math.isfinite(trace_b):
            # trace_a + trace_b beyond float64's maximum while each is below it: the same in two halves.
            trace_part = (trace_a - trace.value) + (trace_b - trace.value)
    value = mean_term + max(trace_part, 0.0)
    _check_finite(value, mean_term, trace_a, trace_b, trace.value, trace_part, names)
    return FrechetResult(
        value=float(value),
        mean_term=float(mean_term),
        trace_a=float(trace_a),
        trace_b=float(trace_b),
        trace_sqrt=float(trace.value),
        n_a=n_a,
        n_b=n_b,
        dim=dim,
        method=trace.method,
        rank=int(trace.rank),
        min_eigenvalue=float(trace.min_eigenvalue),
        clipped_negative=float(trace.clipped_negative),
        warnings=tuple(messages) + trace.warnings,
        factor_side=trace.factor_side,
        factor_dropped=float(trace.factor_dropped),
        solver=trace.solver,
    )


def _check_finite(
    value: float,
    mean_term: float,
    trace_a: float,
    trace_b: float,
    trace_sqrt: float,
    trace_part: float,
    names: tuple[str, str],
) -> None:
    """Refuse a distance that is not a finite number, naming the term that overflowed float64.

    Statistics are finite, but their terms need not be: ``||mu_a - mu_b||^2`` squares the means, and a trace sums
    up to dim variances; beyond about 1.8e308 float64 holds only inf, and an inf (or the NaN of inf - inf) is
    never returned as a FID.
    """
    if math.isfinite(value):
        return
    limit = f"{sys.float_info.max:.3g}"
    if not math.isfinite(mean_term):
        what = f"the mean term ||mu_a - mu_b||^2 is beyond {limit} (the means are too far apart)"
    elif not math.isfinite(trace_a) or not math.isfinite(trace_b):
        name = names[0] if not math.isfinite(trace_a) else names[1]
        what = f"the trace of the covariance of {name} (the sum of its variances) is beyond {limit}"
    elif not math.isfinite(trace_sqrt):
        what = f"the trace term tr sqrt(sigma_a sigma_b) is beyond {limit}"
    elif not math.isfinite(trace_part):
        what = f"the trace term tr(sigma_a) + tr(sigma_b) - 2 tr sqrt(sigma_a sigma_b) is beyond {limit}"
    else:
        what = f"the sum of the mean term ({mean_term:.3g}) and the trace term ({trace_part:.3g}) is beyond {limit}"
    raise InputError(
        f"the Fréchet distance overflows float64: {what}, so it has no finite value; statistics this large come "
        "from features far outside the Inception range: divide the features by a constant c (mu by c, sigma by "
        "c**2) and multiply the FID by c**2"
    )


def _identical(trace: float) -> _TraceSqrt:
    return _TraceSqrt(value=trace, method="identical-sigma", rank=0, min_eigenvalue=0.0, clipped_negative=0.0)


# --------------------------------------------------------------------------------------------- stats path


def _labelled(stats: Stats, label: str, function: Callable[[Stats], Any]) -> Any:
    """``function(stats)``, with errors about statistics that have no file named by the caller's argument."""
    try:
        return function(stats)
    except InputError as exc:
        message = str(exc)
        if stats.path is None and message.startswith("statistics:"):
            raise InputError(message.replace("statistics:", f"{label}:", 1)) from None
        raise


def _name(stats: Stats, label: str) -> str:
    """How messages name a side: its file, else the caller's argument."""
    return f"statistics {stats.path}" if stats.path is not None else label


def _factor_of(stats: Stats, label: str) -> SqrtFactor:
    """:func:`sqrt_factor`, with errors about statistics that have no file named by the caller's argument."""
    return _labelled(stats, label, sqrt_factor)


def _check_psd(stats: Stats, label: str) -> None:
    """:func:`verify_psd` (once per object), with errors named as in :func:`_factor_of`."""
    _labelled(stats, label, verify_psd)


def _dense_eigh(first: Stats, second: Stats, side: str, first_label: str) -> _TraceSqrt:
    """The ``eigh`` route; its eigendecomposition of ``first.sigma`` checks that one, so it is remembered."""
    where = _name(first, first_label)
    try:
        trace = _trace_sqrt_dense_eigh(first.sigma, second.sigma, side, where)
    except InputError as exc:
        if first.path is not None:
            raise StatsFileError(f"{exc}; the file is corrupt or was edited: recompute it") from None
        raise
    remember_psd(first)
    return trace


def _fid_stats(
    stats_a: Stats, stats_b: Stats, method: str, labels: tuple[str, str] = ("stats_a", "stats_b")
) -> FrechetResult:
    if not isinstance(stats_a, Stats) or not isinstance(stats_b, Stats):
        raise InputError(
            "fid_from_stats takes two fidkit.Stats; build them with Stats.from_features or Stats.load, or call "
            "frechet_distance(mu1, sigma1, mu2, sigma2)"
        )
    method = _normalise_method(method)
    if stats_a.dim != stats_b.dim:
        raise InputError(
            f"the statistics have different dimensions ({stats_a.dim} vs {stats_b.dim}); both sides must come "
            "from the same feature extractor"
        )
    dim = stats_a.dim
    messages = _small_sample_messages(stats_a.n, stats_b.n, dim)
    difference = stats_a.mu - stats_b.mu
    mean_term = float(difference @ difference)
    trace_a = stats_a.trace
    trace_b = stats_b.trace

    # Every covariance that enters the distance is checked positive semidefinite, on every route, whichever
    # side it is on: an indefinite "covariance" gives a number that is no distance between Gaussians. The
    # factor routes check as part of what they compute anyway (a verified factor, the Cholesky factorisation
    # the product is formed through); the others pay one Cholesky factorisation per Stats object.
    if stats_a is stats_b or stats_a.sigma is stats_b.sigma or np.array_equal(stats_a.sigma, stats_b.sigma):
        _check_psd(stats_a, labels[0])
        trace = _identical(trace_a)
    elif method == "sqrtm-ttur":
        _check_psd(stats_a, labels[0])
        _check_psd(stats_b, labels[1])
        trace = _trace_sqrt_ttur(stats_a.sigma, stats_b.sigma)
    else:
        if method == "auto":
            for side_stats, label in ((stats_a, labels[0]), (stats_b, labels[1])):
                if side_stats.n is None:
                    # No n (a TTUR/pytorch-fid file): the rank is unknown until factored, and factoring costs
                    # a quarter of one eigensolve. A rank-deficient sigma (from N < dim) then gets the small
                    # exact problem instead of a dim-sized one full of round-off eigenvalues near zero.
                    _factor_of(side_stats, label)
        a_first = _route_key(stats_a) <= _route_key(stats_b)
        first, second, side = (stats_a, stats_b, "a") if a_first else (stats_b, stats_a, "b")
        first_label, second_label = labels if a_first else labels[::-1]
        if method == "eigh":
            _check_psd(second, second_label)
            trace = _dense_eigh(first, second, side, first_label)
        elif factor_at_hand(first) and factor_at_hand(second) and rank_bound(first) <= _SVD_MAX_RANK_FRACTION * dim:
            # Both factors are verified: L L^T is positive semidefinite.
            trace = _trace_sqrt_factors(_factor_of(first, first_label), _factor_of(second, second_label), side)
        else:
            trace = _trace_sqrt_factor_eigh(
                _factor_of(first, first_label), second, side, lambda: _check_psd(second, second_label)
            )
    names = (_name(stats_a, labels[0]), _name(stats_b, labels[1]))
    return _assemble(mean_term, trace_a, trace_b, trace, stats_a.n, stats_b.n, dim, messages, names)


def fid_from_stats(stats_a: Stats, stats_b: Stats, *, method: str = "auto") -> FrechetResult:
    """Fréchet distance between two :class:`~fidkit.stats.Stats`.

    Parameters
    ----------
    stats_a, stats_b : Stats
        Same dimension. Their square-root factors (stored, or computed here and cached on the objects) are
        reused by later calls, so comparing many sets against one reference factors the reference once.
    method : {"auto", "eigh", "ttur"}
        ``"auto"``: the factor routes (exact when the statistics carry their factor). ``"eigh"``: the dense
        symmetric route. ``"ttur"`` (alias ``"sqrtm"``, ``"sqrtm-ttur"``): TTUR's sqrtm computation, for
        matching historical numbers.

    Returns
    -------
    FrechetResult

    Raises
    ------
    InputError
        Different dimensions or an unknown method.

    Warns
    -----
    SmallSampleWarning
        A side with fewer samples than dimensions.
    """
    result = _fid_stats(stats_a, stats_b, method)
    _emit(result)
    return result


def frechet_distance(
    mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, *, method: str = "auto"
) -> FrechetResult:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Parameters
    ----------
    mu1, mu2 : array_like
        ``(dim,)`` means.
    sigma1, sigma2 : array_like
        ``(dim, dim)`` symmetric covariances.
    method : {"auto", "eigh", "ttur"}
        See :func:`fid_from_stats`.

    Returns
    -------
    FrechetResult

    Raises
    ------
    InputError
        Shapes that do not match, NaN or inf, a non-square or non-symmetric sigma.
    """
    sides = []
    for label, mu, sigma in (("mu1/sigma1", mu1, sigma1), ("mu2/sigma2", mu2, sigma2)):
        try:
            sides.append(Stats(mu=mu, sigma=sigma))
        except InputError as exc:
            raise InputError(str(exc).replace("statistics:", f"{label}:", 1)) from None
    stats_a, stats_b = sides
    if stats_a.dim != stats_b.dim:
        raise InputError(
            f"mu1/sigma1 have dim {stats_a.dim} but mu2/sigma2 have dim {stats_b.dim}; both must come from "
            "the same feature extractor"
        )
    result = _fid_stats(stats_a, stats_b, method, ("mu1/sigma1", "mu2/sigma2"))
    _emit(result)
    return result


# --------------------------------------------------------------------------------------------- features path


def fid_from_arrays(features_a: Any, features_b: Any, *, method: str = "auto") -> FrechetResult:
    """Fréchet distance between the Gaussians fitted to two feature arrays.

    Parameters
    ----------
    features_a, features_b : array_like
        ``(N_a, dim)`` and ``(N_b, dim)`` float arrays, ``N >= 2``, finite.
    method : {"auto", "eigh", "ttur"}
        As in :func:`fid_from_stats`, on the statistics of the two arrays. With ``N <= dim`` rows on a side (and
        at most ``4 * dim`` on the other), ``"auto"`` keeps the exact factors of both sides' centred features
        and uses the exact low-rank identity ``tr sqrt(S_a S_b) = ||Xc Yc^T||_* / sqrt((N_a - 1)(N_b - 1))``.

    Returns
    -------
    FrechetResult

    Raises
    ------
    InputError
        Not 2-D, fewer than 2 rows, NaN or inf, different dims, unknown method.

    Warns
    -----
    SmallSampleWarning
        A side with fewer samples than dimensions.
    """
    method = _normalise_method(method)
    array_a = check_features(features_a, "features_a")
    array_b = check_features(features_b, "features_b")
    for name, array in (("features_a", array_a), ("features_b", array_b)):
        if array.shape[0] < 2:
            raise InputError(
                f"{name} has {array.shape[0]} row; a covariance needs at least 2 samples (FID needs thousands)"
            )
    if array_a.shape[1] != array_b.shape[1]:
        raise InputError(
            f"features_a has dim {array_a.shape[1]} but features_b has dim {array_b.shape[1]}; both must come "
            "from the same feature extractor"
        )
    # Statistics of N <= dim features carry their exact factor. With a side that small and the other at most
    # _FEATURES_AS_FACTOR_MAX_RATIO * dim rows, the larger side keeps its exact factor too (its centred rows),
    # so the pair goes through the nuclear norm of the two factors, exact to round-off, instead of an
    # eigensolve of a sigma (measured at dim 2048, N = 500 against 4,096: 1e-16 against 2e-12). The same
    # features twice give the same Stats, hence exactly 0.
    n_a, n_b, dim = array_a.shape[0], array_b.shape[0], array_a.shape[1]
    keep_factor = method == "auto" and min(n_a, n_b) <= dim and max(n_a, n_b) <= _FEATURES_AS_FACTOR_MAX_RATIO * dim
    stats_a = Stats.from_features(array_a, keep_factor=keep_factor)
    same = features_a is features_b or (array_a.shape == array_b.shape and np.array_equal(array_a, array_b))
    stats_b = stats_a if same else Stats.from_features(array_b, keep_factor=keep_factor)
    result = _fid_stats(stats_a, stats_b, method, ("features_a", "features_b"))
    _emit(result)
    return result
