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
``factor-procrustes``
    The variances of a side span more than a factor ``2^20`` (features on very different scales), or a factor had
    to be computed in units of the variances (``SqrtFactor.scaled``): both factors, and the whole trace term as
    ``||L_a Q - L_b||_F^2`` with ``Q`` the optimal rotation (the orthogonal Procrustes problem), a sum of squares
    that never subtracts the huge traces of the large features from each other.
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
from dataclasses import dataclass
from typing import Any

import numpy as np

from fidkit._validate import check_features
from fidkit.errors import FidkitWarning, InputError, SmallSampleWarning
from fidkit.frechet.factors import (
    factor_at_hand,
    file_error,
    rank_bound,
    remember_psd,
    scale_spread,
    sqrt_factor,
    verify_psd,
    where,
)
from fidkit.frechet.trace_sqrt import (
    TraceSqrt,
    trace_sqrt_dense_eigh,
    trace_sqrt_factor_eigh,
    trace_sqrt_factors,
    trace_sqrt_procrustes,
    trace_sqrt_ttur,
)
from fidkit.stats import Stats
from fidkit.stats.checks import check_dim

__all__ = [
    "FrechetResult",
    "frechet_distance",
    "fid_from_stats",
    "fid_from_arrays",
    "METHODS",
]

logger = logging.getLogger(__name__)

#: Values of ``method=``: the exact and fastest route, the dense textbook route, TTUR's own computation.
METHODS = ("auto", "eigh", "ttur")
# Older names of "ttur" (the route it runs is reported as "sqrtm-ttur"): still accepted, with a warning.
_OLD_TTUR_NAMES = frozenset({"sqrtm-ttur", "sqrtm"})
# Both factors are used in an SVD (more exact than an eigensolve of L^T sigma L) when the smaller has at
# most this fraction of dim columns; for two full-rank factors the dense SVD costs ~3x the eigensolve.
_SVD_MAX_RANK_FRACTION = 0.5
# With features at hand and one side of N <= dim, the other side keeps its exact factor (its centred rows) up to
# this many rows per dimension; beyond it, its covariance is accumulated in chunks so that memory stays bounded.
_FEATURES_AS_FACTOR_MAX_RATIO = 4
# Variances of one side spanning more than this factor take the factor-procrustes route. The other factor routes
# compute tr sqrt and subtract it from the traces, so they err by eps times the largest variance, which can be all
# of a distance carried by the small features (one feature of variance 1e12 among features of 1e-3: FID 1e-3,
# floor eps * tr ~ 4e-4); the Procrustes form has no such floor (measured 1e-15 to 1e-9 relative against 50-digit
# arithmetic where the floor was 1e-8 to 1e-3). Below it the other routes keep the eps * tr floor, which is not
# small for exact features factors (N <= dim) of nearly identical sets: factor-eigh measured 2e-4 relative at a
# spread of 1e4 and 8.4e-2 just below 2^20 (Procrustes: 2.2e-11 just above); a known limitation, routing unchanged
# (docs/numerics.md). Pooled CNN features stay below it (the 2048-d test features: ~1e5); the Procrustes route
# costs 4-5.5x factor-eigh at dim 2048 (an SVD with singular vectors).
_SCALE_SPREAD_LIMIT = 2.0**20


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
        ``"torch-cuda"`` (float64 on the GPU, chosen automatically where CUDA is already running in
        the process or the rank is large enough to pay for starting it: ``fidkit.frechet.torch_route``).
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


# --------------------------------------------------------------------------------------------- helpers


def _normalise_method(method: str, stacklevel: int = 4) -> str:
    """The route `method` names (``"ttur"`` runs the route reported as ``"sqrtm-ttur"``); `stacklevel` points the
    warning about an old name at the public function's caller."""
    if isinstance(method, str) and method in _OLD_TTUR_NAMES:
        warnings.warn(
            f"method={method!r} is an older name of method='ttur'; pass 'ttur'", FidkitWarning, stacklevel=stacklevel
        )
        method = "ttur"
    if not isinstance(method, str) or method not in METHODS:
        raise InputError(f"method={method!r} is not one of {', '.join(repr(m) for m in METHODS)}")
    return "sqrtm-ttur" if method == "ttur" else method


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
    trace: TraceSqrt,
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
    elif trace.trace_term is not None:
        # The route computed the trace part itself (a sum of squares, >= 0); tr sqrt follows from it, in halves
        # so that the sum of the traces cannot overflow.
        trace_part = trace.trace_term
        trace = dataclasses.replace(trace, value=0.5 * trace_a + 0.5 * trace_b - 0.5 * trace_part)
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
    # A term of both sides names both (their files, when loaded from files), as a trace of one side names that one.
    both = f"of {names[0]} and {names[1]}"
    if not math.isfinite(mean_term):
        what = f"the mean term ||mu_a - mu_b||^2 {both} is beyond {limit} (the means are too far apart)"
    elif not math.isfinite(trace_a) or not math.isfinite(trace_b):
        name = names[0] if not math.isfinite(trace_a) else names[1]
        what = f"the trace of the covariance of {name} (the sum of its variances) is beyond {limit}"
    elif not math.isfinite(trace_sqrt):
        what = f"the trace term tr sqrt(sigma_a sigma_b) {both} is beyond {limit}"
    elif not math.isfinite(trace_part):
        what = f"the trace term tr(sigma_a) + tr(sigma_b) - 2 tr sqrt(sigma_a sigma_b) {both} is beyond {limit}"
    else:
        what = (
            f"the sum of the mean term ({mean_term:.3g}) and the trace term ({trace_part:.3g}) {both} is beyond "
            f"{limit}"
        )
    raise InputError(
        f"the Fréchet distance overflows float64: {what}, so it has no finite value; statistics this large come "
        "from features far outside the Inception range: divide the features by a constant c (mu by c, sigma by "
        "c**2) and multiply the FID by c**2"
    )


def _identical(trace: float) -> TraceSqrt:
    return TraceSqrt(value=trace, method="identical-sigma", rank=0, min_eigenvalue=0.0, clipped_negative=0.0)


# --------------------------------------------------------------------------------------------- stats path


def _dense_eigh(first: Stats, second: Stats, side: str, first_label: str) -> TraceSqrt:
    """The ``eigh`` route; its eigendecomposition of ``first.sigma`` checks that one, so it is remembered."""
    try:
        trace = trace_sqrt_dense_eigh(
            first.sigma, second.sigma, side, where(first, first_label), first.storage_eps
        )
    except InputError as exc:
        raise file_error(first, exc) from None
    remember_psd(first)
    return trace


def _fid_stats(
    stats_a: Stats, stats_b: Stats, method: str, labels: tuple[str, str] = ("stats_a", "stats_b"),
    *, route_named: bool = False,
) -> FrechetResult:
    """The distance of two Stats; `method` as the user gave it, or (`route_named`) already normalised."""
    if not isinstance(stats_a, Stats) or not isinstance(stats_b, Stats):
        raise InputError(
            "fid_from_stats takes two fidkit.Stats; build them with Stats.from_features or Stats.load, or call "
            "frechet_distance(mu1, sigma1, mu2, sigma2)"
        )
    if not route_named:  # once: "sqrtm-ttur" is both the route and an older name, which warns
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
        verify_psd(stats_a, labels[0])
        trace = _identical(trace_a)
    elif method == "sqrtm-ttur":
        verify_psd(stats_a, labels[0])
        verify_psd(stats_b, labels[1])
        trace = trace_sqrt_ttur(stats_a.sigma, stats_b.sigma)
    else:
        if method == "auto":
            for side_stats, label in ((stats_a, labels[0]), (stats_b, labels[1])):
                if side_stats.n is None:
                    # No n (a TTUR/pytorch-fid file): the rank is unknown until factored, and factoring costs
                    # a quarter of one eigensolve. A rank-deficient sigma (from N < dim) then gets the small
                    # exact problem instead of a dim-sized one full of round-off eigenvalues near zero.
                    sqrt_factor(side_stats, label)
        a_first = _route_key(stats_a) <= _route_key(stats_b)
        first, second, side = (stats_a, stats_b, "a") if a_first else (stats_b, stats_a, "b")
        first_label, second_label = labels if a_first else labels[::-1]
        if method == "eigh":
            verify_psd(second, second_label)
            trace = _dense_eigh(first, second, side, first_label)
        elif max(scale_spread(stats_a), scale_spread(stats_b)) > _SCALE_SPREAD_LIMIT:
            # Features on very different scales: the trace term as a sum of squares (both factors verified).
            trace = trace_sqrt_procrustes(sqrt_factor(first, first_label), sqrt_factor(second, second_label), side)
        else:
            both_at_hand = factor_at_hand(first) and factor_at_hand(second)
            factor = sqrt_factor(first, first_label)
            if factor.scaled or (factor_at_hand(second) and sqrt_factor(second, second_label).scaled):
                # A factor computed in units of the variances is not graded by size: the eigensolve would lose
                # the small features with it (SqrtFactor.scaled).
                trace = trace_sqrt_procrustes(factor, sqrt_factor(second, second_label), side)
            elif both_at_hand and rank_bound(first) <= _SVD_MAX_RANK_FRACTION * dim:
                # Both factors are verified: L L^T is positive semidefinite.
                trace = trace_sqrt_factors(factor, sqrt_factor(second, second_label), side)
            else:
                trace = trace_sqrt_factor_eigh(factor, second, side, lambda: verify_psd(second, second_label))
    names = (where(stats_a, labels[0]), where(stats_b, labels[1]))
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
        Not 2-D, fewer than 2 rows, NaN or inf, different dims, more than
        :data:`fidkit.statsfile.MAX_STATS_DIM` columns (refused before any covariance is allocated), unknown
        method.

    Warns
    -----
    SmallSampleWarning
        A side with fewer samples than dimensions.
    """
    method = _normalise_method(method, stacklevel=3)
    array_a = check_features(features_a, "features_a")
    array_b = check_features(features_b, "features_b")
    for name, array in (("features_a", array_a), ("features_b", array_b)):
        check_dim(array.shape[1], name)
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
    result = _fid_stats(stats_a, stats_b, method, ("features_a", "features_b"), route_named=True)
    _emit(result)
    return result
