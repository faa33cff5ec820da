"""The trace of the matrix square root, tr sqrt(sigma_a sigma_b), by each route: from two square-root factors
(SVD, eigensolve, or the Procrustes form of the whole trace term), dense (eigh), or as TTUR computed it (sqrtm).
Pure float64 kernels; which route runs is decided by :mod:`fidkit.frechet.distance`."""

from __future__ import annotations

import logging
import math
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from fidkit.errors import FidkitError
from fidkit.frechet.factors import (
    SqrtFactor,
    check_psd_from_eigenvalues,
    remember_psd,
)
from fidkit.frechet.torch_route import eigvalsh_float64, torch_device_for_distance
from fidkit.stats import Stats
from fidkit.stats.checks import EPS64

logger = logging.getLogger(__name__)

# TTUR's offset added to both diagonals when sqrtm of the product is not finite.
TTUR_EPS = 1e-6
# TTUR's tolerance on the imaginary part of the diagonal of sqrtm(sigma_a sigma_b).
TTUR_IMAG_ATOL = 1e-3
# Magnitudes between which products need no rescaling (2^-200 .. 2^200; float64 spans 2^-1074 .. 2^1024).
_SAFE_MAGNITUDE_LOW = 2.0**-200
_SAFE_MAGNITUDE_HIGH = 2.0**200
# Below this rank the factor-eigh eigensolve stays on the CPU even when a GPU is there.
_TORCH_SOLVER_MIN_RANK = 512
# Statistics whose sigma has no Cholesky factorisation (singular or indefinite), with that very sigma array: the
# factor-eigh route forms its product without one for them, instead of failing the factorisation every time.
_NOT_DEFINITE: weakref.WeakKeyDictionary[Stats, np.ndarray] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class TraceSqrt:
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
    #: The whole trace term tr(sigma_a) + tr(sigma_b) - 2 tr sqrt, when the route computes it without that
    #: cancellation (factor-procrustes); None: the caller forms it from `value`.
    trace_term: float | None = None


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


def trace_sqrt_factors(first: SqrtFactor, second: SqrtFactor, side: str) -> TraceSqrt:
    scale_first, scale_second = _power_of_two_scale(first.matrix), _power_of_two_scale(second.matrix)
    total, smallest = _nuclear_norm(_scaled(first.matrix, scale_first).T @ _scaled(second.matrix, scale_second))
    scale = scale_first * scale_second
    return TraceSqrt(
        value=total * scale,
        method="factor-svd",
        rank=min(first.rank, second.rank),
        min_eigenvalue=smallest * scale * scale,
        clipped_negative=0.0,
        factor_side=side,
        factor_dropped=first.dropped_trace + second.dropped_trace,
    )


def trace_sqrt_procrustes(first: SqrtFactor, second: SqrtFactor, side: str) -> TraceSqrt:
    """The trace term ``tr(L_a L_a^T) + tr(L_b L_b^T) - 2 ||L_a^T L_b||_*`` as ``||L_a Q - L_b||_F^2``.

    ``Q`` is the rotation that brings the smaller factor closest to the other (the orthogonal Procrustes problem:
    ``Q = U V^T`` from the SVD ``L_a^T L_b = U S V^T``, with ``L_a`` the factor of fewer columns), and the minimum
    of ``||L_a Q - L_b||_F^2`` over rotations is exactly that trace term (the squared Bures distance). Formed as a
    sum of squared differences it never subtracts the traces from each other: when features of very different
    scales make the traces huge next to the distance, the traces and ``2 tr sqrt`` agree to all their digits but
    the last few, and their difference is round-off of the large features, while this sum keeps the small
    features' contribution at their own precision. ``Q`` enters to second order only (the sum is stationary at
    the optimum), so its round-off does not matter either. Costs an SVD with singular vectors and two products of
    the factors' size: the distance takes this route only for such covariances.
    """
    if first.rank > second.rank:
        first, second, side = second, first, {"a": "b", "b": "a"}.get(side, side)
    scale_first, scale_second = _power_of_two_scale(first.matrix), _power_of_two_scale(second.matrix)
    rotated, target = _scaled(first.matrix, scale_first), _scaled(second.matrix, scale_second)
    smallest = 0.0
    if first.rank:
        cross = rotated.T @ target  # (rank_first, rank_second)
        try:
            left, singular, right = scipy.linalg.svd(cross, full_matrices=False, check_finite=False)
        except np.linalg.LinAlgError:  # gesdd fails to converge on rare inputs; gesvd is slower but more robust
            left, singular, right = scipy.linalg.svd(
                cross, full_matrices=False, check_finite=False, lapack_driver="gesvd"
            )
        scale = scale_first * scale_second
        smallest = float(np.square(singular.min())) * scale * scale  # inf, not OverflowError, beyond float64
        rotated = rotated @ (left @ right)
    else:
        rotated = np.zeros_like(target)
    # Both sides in the units of the larger scale (powers of two: exact), then the sum of squared differences.
    common = max(scale_first, scale_second)
    difference = rotated * (scale_first / common) - target * (scale_second / common)
    trace_term = float(np.einsum("ij,ij->", difference, difference)) * common * common
    return TraceSqrt(
        value=math.nan,  # the caller derives it from trace_term and the traces
        method="factor-procrustes",
        rank=first.rank,
        min_eigenvalue=smallest,
        clipped_negative=0.0,
        factor_side=side,
        factor_dropped=first.dropped_trace + second.dropped_trace,
        trace_term=trace_term,
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
    if factor.shape[1] == 0:
        # A rank-0 factor (every row the same): L^T sigma L is 0 x 0. BLAS refuses the empty product with a line
        # on stdout (dsyrk's "illegal value" for its leading dimension) instead of returning it.
        return np.zeros((0, 0), dtype=np.float64)
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


def trace_sqrt_factor_eigh(
    factor: SqrtFactor, other: Stats, side: str, check_other: Callable[[], None]
) -> TraceSqrt:
    """``sum sqrt(eig(L^T sigma_other L))``; `other`'s sigma is checked positive semidefinite on the way.

    `factor` has been verified (so its own sigma is positive semidefinite); `other`'s sigma enters only through
    the product, which sees it on the columns of ``L`` alone, so it is checked here unless it was before: by
    the Cholesky factorisation the product is formed through (no extra cost), or, when that fails because
    sigma is singular, by `check_other` (:func:`~fidkit.frechet.factors.verify_psd` with the caller's labels).
    """
    sigma_other = other.sigma
    scale_factor, scale_sigma = _power_of_two_scale(factor.matrix), _power_of_two_scale(sigma_other)
    # The eigensolve is most of the cost at dim 2048; a GPU does it faster where CUDA is up already (or the
    # problem pays for starting it: torch_device_for_distance). Small problems stay on the CPU, where the
    # transfer would cost more than the solve.
    device = torch_device_for_distance(factor.rank) if factor.rank >= _TORCH_SOLVER_MIN_RANK else None
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
    return TraceSqrt(
        value=total * root_scale,
        method="factor-eigh",
        rank=factor.rank,
        min_eigenvalue=smallest * scale_factor * scale_factor * scale_sigma,
        clipped_negative=clipped * root_scale,
        factor_side=side,
        factor_dropped=factor.dropped_trace,
        solver=f"torch-{device}" if device is not None else "scipy",
    )


def trace_sqrt_dense_eigh(
    sigma_root_side: np.ndarray, sigma_other: np.ndarray, side: str, where: str = "sigma",
    storage_eps: float = EPS64,
) -> TraceSqrt:
    """tr sqrt(sqrt(S1) S2 sqrt(S1)) with sqrt(S1) from a symmetric eigendecomposition (clipped at 0).

    The eigendecomposition also checks that S1 is positive semidefinite (InputError naming `where` if not; S1
    stored with machine epsilon `storage_eps`); the caller checks S2.
    """
    scale_root, scale_other = _power_of_two_scale(sigma_root_side), _power_of_two_scale(sigma_other)
    eigenvalues, eigenvectors = scipy.linalg.eigh(_scaled(sigma_root_side, scale_root), check_finite=False)
    if eigenvalues.size:
        check_psd_from_eigenvalues(sigma_root_side, float(eigenvalues.min()) * scale_root, where, storage_eps)
    negative_root = eigenvalues[eigenvalues < 0]
    root = (eigenvectors * np.sqrt(np.maximum(eigenvalues, 0.0))) @ eigenvectors.T
    total, smallest, clipped = _sum_sqrt_eigenvalues(_sandwich(root, _scaled(sigma_other, scale_other)))
    root_scale = math.sqrt(scale_root) * math.sqrt(scale_other)  # the product itself may overflow
    return TraceSqrt(
        value=total * root_scale,
        method="eigh",
        rank=int(sigma_root_side.shape[0]),
        min_eigenvalue=min(smallest * scale_root * scale_other, float(eigenvalues.min()) * scale_root),
        # Clipping lambda < 0 of sigma_a moves sqrt(sigma_a) by sqrt(-lambda) along one direction, which moves
        # trace_sqrt by at most sqrt(-lambda * ||sigma_b||); in scaled units ||sigma_b|| is about 1.
        clipped_negative=(clipped + float(np.sum(np.sqrt(-negative_root)))) * root_scale,
        factor_side=side,
    )


def trace_sqrt_ttur(sigma_a: np.ndarray, sigma_b: np.ndarray) -> TraceSqrt:
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
    return TraceSqrt(
        value=float(np.trace(root)),
        method="sqrtm-ttur",
        rank=int(sigma_a.shape[0]),
        min_eigenvalue=math.nan,
        clipped_negative=0.0,
        warnings=tuple(notes),
    )
