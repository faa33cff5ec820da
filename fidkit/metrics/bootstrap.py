"""How sure is a metric of its own value: bootstrap intervals, and FID extrapolated to infinitely many images.

:func:`bootstrap` resamples the images of both sides with replacement (``N_a`` rows out of ``N_a``, ``N_b`` out of
``N_b``, drawn from ``numpy.random.default_rng(seed)``: ``integers(0, N_a, N_a)`` then ``integers(0, N_b, N_b)``
per resample) and recomputes any metric of two feature arrays; it reports the percentile interval at ``level``,
the point value on the original features, and the standard deviation and mean shift (bias) of the resampled
values.

:func:`bootstrap_fid` draws the same resamples for the Fréchet distance without building the resampled arrays:
with ``c_i`` the number of times row ``i`` was drawn, the resample's mean and covariance are

    mu = sum_i c_i x_i / N,   sigma = (sum_i c_i (x_i - m)(x_i - m)^T - N (mu - m)(mu - m)^T) / (N - 1)

(``m`` the mean of all rows, subtracted once so that nothing cancels), and the weighted sum runs over the rows drawn
at least once (1 - 1/e, about 63 % of them), as symmetric rank-k products of the rows grouped by count, in float32
by default (``dtype``); the distance follows from two Cholesky factors and one eigensolve without vectors, in
float64. Each resample is checked on the way and recomputed in float64, or by the full
:func:`fidkit.frechet.frechet_distance`, where the fast route cannot be trusted (:mod:`fidkit.metrics._fid_resample`
has the routes; ``docs/metrics.md`` the timings and the measured accuracy). With ``dtype="float64"`` the numbers
are those of ``bootstrap(a, b, fid_from_arrays)`` with the same seed, to round-off; with float32 Grams, to about
``1e-8`` relative. A GPU is used when torch is already imported and sees one (``device``).

FID is biased upwards at finite N, and a bootstrap resample, which repeats rows, has fewer distinct images than N:
the resampled values are shifted up by about the bias again (:attr:`BootstrapResult.bias` reports the shift). The
percentile interval (:attr:`~BootstrapResult.low`, :attr:`~BootstrapResult.high`) carries that shift; the basic
interval (:attr:`~BootstrapResult.basic_low`, :attr:`~BootstrapResult.basic_high`) reflects it away. Where the bias
is not small against the spread (few samples per dimension, close distributions), the percentile interval covers
the true FID much less often than its level says and the basic one should be used (``docs/metrics.md`` has the
measured coverage of both). Neither is an interval for the FID at infinite N, which :func:`fid_infinity` estimates.
With few images per dimension the basic interval fails too: the bootstrap's bias estimate, computed from the
sample's own covariances, falls short of the true bias by about ``dim / (2 N)`` times itself, which outgrows the
spread as dim grows. :func:`bootstrap_fid` then says so (:attr:`BootstrapResult.note` and a ``FidkitWarning``,
where ``N / dim < bias / std``: :func:`small_sample_note`).

:func:`fid_infinity` is FID_infinity (Chong & Forsyth 2020, "Effectively Unbiased FID and Inception Score and where
to find them"): FID of random subsets of the first side at ``n_points`` sizes evenly spaced between ``min_size``
(5,000 for N >= 50,000) and N, each subset drawn without replacement by a fresh shuffle as their code does, against
the whole second side; a least-squares line in ``1 / n``; its value at ``1 / n = 0``.

Every draw here (resamples, subsets) is of positions: the same features in the same order give the same interval
and the same FID_infinity on any engine or device (to rounding; a rounding-level change of the features changes
them at rounding level only). The same rows in another order (a ``torch.distributed`` gather of another world
size) are another draw, which differs within the reported spread; to compare exactly, compute from
the same saved features.
"""

from __future__ import annotations

import logging
import numbers
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from fidkit.errors import FidkitWarning, InputError
from fidkit.frechet import fid_from_arrays, fid_from_stats
from fidkit.metrics._common import check_pair, check_positive_int, check_resampling, check_seed, float_metric, plain_dict
from fidkit.metrics._fid_resample import GRAM_DTYPES, Resampler, blas_threads, resample_counts, torch_cuda_if_imported
from fidkit.stats import Stats

__all__ = [
    "small_sample_note",
    "BootstrapResult",
    "FIDInfinityResult",
    "bootstrap",
    "bootstrap_fid",
    "fid_infinity",
]

logger = logging.getLogger(__name__)

# The default workers of bootstrap_fid stop here: each holds ~150 MiB at dim 2048 (up to twice that on the float64
# route), and 32 resamples at a time already take 200 resamples at 50,000 + 10,000 well under a minute.
_MAX_DEFAULT_WORKERS = 32
# Chong & Forsyth's smallest subset, for 50,000 images.
_FID_INFINITY_MIN_SIZE = 5000


@dataclass(frozen=True)
class BootstrapResult:
    """A metric, its bootstrap percentile interval and spread. ``float(result)`` is :attr:`value`.

    Attributes
    ----------
    value : float
        The metric on the original features.
    low, high : float
        The percentile interval: percentiles ``(1 - level) / 2`` and ``(1 + level) / 2`` of the resampled values
        (linear interpolation).
    basic_low, basic_high : float
        The basic (reflected) interval ``(2 value - high, 2 value - low)``: it subtracts the bootstrap's estimate
        of the bias, which the percentile interval keeps twice; for FID at few samples per dimension it covers
        the true value far more often (``docs/metrics.md``).
    std : float
        Standard deviation (``ddof = 1``) of the resampled values: the bootstrap standard error.
    bias : float
        Mean of the resampled values minus :attr:`value`.
    level : float
    n_resamples, seed : int
    n_a, n_b : int
        Rows of each side (each resample has as many).
    values : tuple of float
        The resampled values, in drawing order.
    route : str
        How the resamples were computed: ``"resampled-rows"`` (:func:`bootstrap`: the metric on resampled
        arrays), ``"weighted-moments-float32"`` or ``"-float64"`` (:func:`bootstrap_fid` on the CPU, by the
        precision of its Gram products), with ``"-torch-cuda"`` (or another torch device) appended on torch.
    note : str or None
        :func:`bootstrap_fid` only: why the basic interval cannot be trusted to cover the true FID at its level,
        where it cannot (:func:`small_sample_note`: too few images per dimension for the bootstrap to estimate
        FID's bias); None otherwise.
    """

    value: float
    low: float
    high: float
    basic_low: float
    basic_high: float
    std: float
    bias: float
    level: float
    n_resamples: int
    seed: int
    n_a: int
    n_b: int
    values: tuple[float, ...]
    route: str = "resampled-rows"
    note: str | None = None

    def __float__(self) -> float:
        return float(self.value)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists for tuples, None for NaN)."""
        return plain_dict(self)


@dataclass(frozen=True)
class FIDInfinityResult:
    """FID extrapolated to infinitely many images. ``float(result)`` is :attr:`value`.

    Attributes
    ----------
    value : float
        Intercept of the least-squares line ``FID(n) = value + slope / n``.
    slope : float
    sizes : tuple of int
        The subset sizes n.
    fids : tuple of float
        FID of each subset against the whole second side.
    residual_std : float
        Root mean square of the residuals of the line (how straight FID(n) is in 1 / n).
    n, n_reference : int or None
        Rows of the subsampled side; rows of the other side (None for statistics without a count).
    seed : int
    """

    value: float
    slope: float
    sizes: tuple[int, ...]
    fids: tuple[float, ...]
    residual_std: float
    n: int
    n_reference: int | None
    seed: int

    def __float__(self) -> float:
        return float(self.value)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists for tuples, None for NaN)."""
        return plain_dict(self)


def _summarise(
    value: float, resampled: np.ndarray, level: float, seed: int, n_a: int, n_b: int, route: str
) -> BootstrapResult:
    tail = (1.0 - level) / 2.0
    low, high = np.percentile(resampled, [100.0 * tail, 100.0 * (1.0 - tail)])
    return BootstrapResult(
        value=float(value),
        low=float(low),
        high=float(high),
        basic_low=float(2.0 * value - high),
        basic_high=float(2.0 * value - low),
        std=float(np.std(resampled, ddof=1)),
        bias=float(np.mean(resampled) - value),
        level=level,
        n_resamples=int(resampled.size),
        seed=seed,
        n_a=n_a,
        n_b=n_b,
        values=tuple(float(v) for v in resampled),
        route=route,
    )


def small_sample_note(
    bias: float, std: float, n_a: int, n_b: int, dim: int, level: float,
    label: str = "FID", names: tuple[str, str] = ("features_a", "features_b"),
) -> str | None:
    """Why a basic bootstrap interval of a Fréchet distance cannot be trusted at its level, or None where it can.

    The bootstrap estimates FID's small-sample bias from the sample's own covariances, whose spectrum is spread
    by sampling: its estimate falls short of the true bias by about ``dim / (2 N)`` times itself (measured 0.45 to
    0.47 ``dim / N`` on identity and power-law spectra at N / dim from 2 to 40, ``docs/metrics.md``), and the basic
    interval, which reflects that estimate away, lies that much too high. Where the shortfall
    ``bias dim / (2 N)``, with the smaller side's N, exceeds half the bootstrap's standard deviation, i.e. where
    ``N / dim < bias / std``, the interval was measured to cover the true FID far less often than its level says
    (``docs/metrics.md`` has the table), and this returns a note saying so.
    """
    n_min = min(n_a, n_b)
    if not (std > 0.0 and bias > 0.0 and n_min * std < dim * bias):
        return None
    side = "each side" if n_a == n_b else names[0] if n_a < n_b else names[1]
    return (
        f"{label}'s {100.0 * level:.10g}% interval is unreliable: {n_min} images for {dim} dimensions ({side}, "
        f"N/dim = {n_min / dim:.3g}) are fewer per dimension than the bootstrap's bias/spread ratio "
        f"({bias:.3g}/{std:.3g} = {bias / std:.3g}); there the bootstrap underestimates FID's small-sample bias "
        f"(by about dim/(2N) x its estimate, {bias * dim / (2.0 * n_min):.3g} here) and the interval misses the "
        "true value far more often than it claims (docs/metrics.md, 'Bootstrap intervals'); use "
        "fidkit.metrics.fid_infinity (FD-infinity, without the 1/N bias) or more images"
    )


def bootstrap(
    features_a: Any,
    features_b: Any,
    metric: Callable[[np.ndarray, np.ndarray], Any],
    *,
    n_resamples: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Bootstrap percentile interval of any metric of two feature arrays.

    Parameters
    ----------
    features_a, features_b : array_like
        ``(N_a, dim)`` and ``(N_b, dim)`` features.
    metric : callable
        ``metric(a, b)`` on two arrays of the same layout, returning a float or anything ``float()`` accepts
        (:class:`~fidkit.frechet.FrechetResult`, :class:`~fidkit.metrics.KIDResult`, ...). Called once on the
        original arrays and once per resample.
    n_resamples : int
        Resamples (>= 2). The tails of a 95 % interval need about 1,000 for two stable digits; 200 is a
        compromise for costly metrics.
    level : float
        Confidence level of the percentile interval, in (0, 1).
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    BootstrapResult

    Raises
    ------
    InputError
        Invalid features or arguments, or a metric that returns something ``float()`` refuses.
    """
    array_a, array_b = check_pair(features_a, features_b)
    n_resamples, level, seed = check_resampling(n_resamples, level, seed)
    evaluate = float_metric(metric)
    n_a, n_b = array_a.shape[0], array_b.shape[0]

    value = evaluate(array_a, array_b)
    rng = np.random.default_rng(seed)
    resampled = np.empty(n_resamples, dtype=np.float64)
    for index in range(n_resamples):
        rows_a = rng.integers(0, n_a, n_a)
        rows_b = rng.integers(0, n_b, n_b)
        resampled[index] = evaluate(array_a[rows_a], array_b[rows_b])
    return _summarise(value, resampled, level, seed, n_a, n_b, "resampled-rows")


# --------------------------------------------------------------------------------------------- FID, fast


def _resolve_device(device: Any) -> Any:
    """None for numpy on the CPU, else the torch device to use."""
    if isinstance(device, str) and device == "auto":
        return torch_cuda_if_imported()
    if device is None:
        return None
    try:
        import torch

        return torch.device(device)
    except (ImportError, RuntimeError, TypeError) as exc:
        raise InputError(
            f"device={device!r} is not a torch device torch can use ({type(exc).__name__}: {exc}); pass None "
            "(numpy on the CPU), 'auto', or e.g. 'cuda'"
        ) from exc


def bootstrap_fid(
    features_a: Any,
    features_b: Any,
    *,
    n_resamples: int = 200,
    level: float = 0.95,
    seed: int = 0,
    dtype: str = "float32",
    device: Any = "auto",
    workers: int | None = None,
) -> BootstrapResult:
    """Bootstrap percentile interval of the FID between two feature arrays, from weighted moments.

    The same resamples as ``bootstrap(features_a, features_b, fid_from_arrays, ...)`` with the same seed and
    arguments, at a fraction of its cost (see the module docstring); features of any dim (pool_3, the 2023
    spatial features of sFID, ...). With ``dtype="float64"`` the resampled values equal those of
    :func:`bootstrap` to round-off (``1e-10`` relative in the tests); with the default float32 Grams they differ
    from the float64 ones by about ``1e-8`` relative on pool_3-like features at dim 2048 (``3e-10`` of
    ``tr(sigma_a) + tr(sigma_b)``), up to ``1e-7`` where the FID is a few hundredths of the traces
    (``docs/metrics.md``): far below the digits an interval is reported to.

    Parameters
    ----------
    features_a, features_b : array_like
        ``(N_a, dim)`` and ``(N_b, dim)`` features, ``N >= 2``.
    n_resamples, level, seed
        As in :func:`bootstrap`.
    dtype : {"float32", "float64"}
        Precision of the weighted Gram products (the bulk of the work; everything else is float64). float32 is
        about twice as fast; a resample whose covariance is too close to singular for it is recomputed in float64
        (and every resample, where the first one is).
    device : "auto", None, or a torch device
        ``"auto"``: a CUDA GPU when torch is *already imported* and sees one (torch is never imported for this),
        else numpy on the CPU. None: numpy on the CPU. A torch device (``"cuda"``, ``"cpu"``): torch on it (Grams
        in float64 where float32 products may run in TF32).
    workers : int or None
        Resamples computed at a time on the CPU, each in its own thread with single-threaded BLAS (BLAS's own
        threads are set to one meanwhile, in the whole process). None: as many as BLAS would use threads
        (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``, else the CPUs this process may run on), at most 32; 1
        where threadpoolctl cannot control the BLAS (Apple's Accelerate). The values do not depend on it beyond
        round-off (measured: under 1e-14 relative). Memory per worker: about 150 MiB at dim 2048 with float32
        Grams (measured; it grows as ``dim^2``), up to twice that on the float64 route. The resamples run one at
        a time where the first one's covariances are singular (fewer distinct rows than dimensions:
        :func:`~fidkit.frechet.frechet_distance` takes them, in the calling thread), and one threaded bootstrap
        runs at a time per process (BLAS's thread count is process-wide).

    Returns
    -------
    BootstrapResult
        :attr:`~BootstrapResult.value` is ``fid_from_arrays(features_a, features_b)``; :attr:`~BootstrapResult.route`
        says how the resamples were computed; :attr:`~BootstrapResult.note` says where the basic interval cannot be
        trusted (too few images per dimension, :func:`small_sample_note`).

    Warns
    -----
    FidkitWarning
        With that note, where there is one.

    Raises
    ------
    InputError
        Invalid features or arguments.

    Notes
    -----
    Cost per resample: ``(1 - 1/e) (N_a + N_b) dim^2`` flops for the two weighted covariances plus
    ``(2/3 + 2) dim^3`` for two Cholesky factorisations, a triangular product and a ``syrk``, and one eigensolve
    of size dim without vectors: 2.8 s of one core at 50,000 + 10,000 x 2048, so the resamples are spread over
    the cores (`workers`). Memory: a centred copy of both sides in the Gram dtype. ``docs/metrics.md`` has the
    timings.
    """
    array_a, array_b = check_pair(features_a, features_b)
    n_resamples, level, seed = check_resampling(n_resamples, level, seed)
    if not isinstance(dtype, str) or dtype not in GRAM_DTYPES:
        raise InputError(f"dtype={dtype!r} is not one of {', '.join(repr(d) for d in GRAM_DTYPES)}")
    if workers is not None:
        workers = check_positive_int(workers, "workers")
    for name, n_rows in (("features_a", array_a.shape[0]), ("features_b", array_b.shape[0])):
        if n_rows < 2:
            raise InputError(f"{name} has {n_rows} row; a covariance needs at least 2 samples")
    value = float(fid_from_arrays(array_a, array_b))
    result = _resampled_fid(array_a, array_b, value, n_resamples, level, seed, dtype, device, workers)
    if result.note is not None:
        warnings.warn(result.note, FidkitWarning, stacklevel=2)
    return result


def _resampled_fid(
    array_a: np.ndarray,
    array_b: np.ndarray,
    value: float,
    n_resamples: int,
    level: float,
    seed: int,
    dtype: str = "float32",
    device: Any = "auto",
    workers: int | None = None,
    label: str = "FID",
    names: tuple[str, str] = ("features_a", "features_b"),
) -> BootstrapResult:
    """:func:`bootstrap_fid` around `value`, the FID of the two arrays themselves, on arguments valid for it
    (finite float arrays of one dim, at least 2 rows each, as :class:`~fidkit.Features` rows are).

    For callers that have just computed that FID from the same arrays (:func:`fidkit.metrics.evaluate`), so that
    it is not computed twice (5 s of a 2-core machine at 50,000 + 10,000 x 2048). `label` and `names` name the
    distance and the sides in the result's :attr:`~BootstrapResult.note` (:func:`small_sample_note`), returned,
    not warned.
    """
    n_a, n_b = array_a.shape[0], array_b.shape[0]
    if workers is None:
        workers = min(blas_threads(), _MAX_DEFAULT_WORKERS)
    resampler = Resampler(array_a, array_b, dtype, _resolve_device(device))
    rng = np.random.default_rng(seed)

    # The same draws as bootstrap(), drawn as the threads take them.
    draws = (resample_counts(rng, n_a, n_b) for _ in range(n_resamples))
    with warnings.catch_warnings():
        # The small-sample warning was issued once for the point value; it says the same for every resample.
        warnings.simplefilter("ignore")
        resampled = np.array(resampler.fids(draws, workers), dtype=np.float64)
    logger.info("bootstrap_fid: %s; resamples by route: %s", resampler.route, resampler.routes)
    result = _summarise(value, resampled, level, seed, n_a, n_b, resampler.route)
    note = small_sample_note(result.bias, result.std, n_a, n_b, array_a.shape[1], level, label, names)
    return replace(result, note=note) if note is not None else result


# --------------------------------------------------------------------------------------------- FID infinity


def _reference_stats(reference: Any) -> Stats:
    if isinstance(reference, Stats):
        return reference
    return Stats.from_features(check_pair(reference, reference, ("reference", "reference"))[0])


def fid_infinity(
    features: Any,
    reference: Any,
    *,
    n_points: int = 15,
    min_size: int | None = None,
    seed: int = 0,
) -> FIDInfinityResult:
    """FID_infinity (Chong & Forsyth 2020): FID at several subset sizes, extrapolated linearly in 1/N to 0.

    Parameters
    ----------
    features : array_like
        ``(N, dim)`` features of the side that is subsampled (the generated images, in the paper).
    reference : array_like or Stats
        ``(N_ref, dim)`` features or the :class:`~fidkit.stats.Stats` of the other side, used whole.
    n_points : int
        Number of subset sizes (15 in the paper), at least 2.
    min_size : int, optional
        Smallest subset; default ``min(5000, N // 10)``: the paper's 5,000 for N >= 50,000, and a tenth of N
        below that, which keeps the paper's span of 1/N. Sizes are ``linspace(min_size, N, n_points)``
        truncated to integers, as in the paper's code; they must be distinct.
    seed : int
        Seed of ``numpy.random.default_rng``; each size draws its subset by a fresh permutation of the positions
        (module docstring).

    Returns
    -------
    FIDInfinityResult

    Raises
    ------
    InputError
        Invalid features, different dims, ``min_size >= N``, sizes that are not distinct or below 2, bad
        arguments.

    Notes
    -----
    Cost: ``n_points`` covariances of on average ``(min_size + N) / 2`` rows and as many Fréchet distances;
    the reference side is factored once (its :class:`Stats` keeps the factor).
    """
    array = check_pair(features, features, ("features", "features"))[0]
    n_points = check_positive_int(n_points, "n_points", minimum=2)
    seed = check_seed(seed)
    stats_reference = _reference_stats(reference)
    n_rows, dim = array.shape
    if stats_reference.dim != dim:
        raise InputError(
            f"features have dim {dim} but the reference has dim {stats_reference.dim}; both must come from the "
            "same feature extractor"
        )
    if min_size is None:
        min_size = min(_FID_INFINITY_MIN_SIZE, n_rows // 10)
    elif isinstance(min_size, bool) or not isinstance(min_size, numbers.Integral):
        raise InputError(f"min_size must be an integer or None, got {min_size!r}")
    elif min_size >= n_rows:
        # Subsets cannot be larger than N: every "size" would be all N rows, the line flat, the value FID(N).
        raise InputError(
            f"min_size={min_size} is not below the {n_rows} rows of features: the subsets run from min_size up to "
            "N; pass a smaller min_size (default: min(5000, N // 10))"
        )
    sizes = np.linspace(int(min_size), n_rows, n_points).astype(np.int64)
    if int(min_size) < 2 or np.unique(sizes).size != n_points:
        raise InputError(
            f"features has {n_rows} rows: {n_points} distinct subset sizes from min_size={min_size} up to N, each "
            "at least 2, are not possible; FID_infinity needs thousands of images (pass fewer n_points or more rows)"
        )
    rng = np.random.default_rng(seed)
    fids = []
    for size in sizes.tolist():
        subset = array[rng.permutation(n_rows)[:size]]
        fids.append(float(fid_from_stats(Stats.from_features(subset), stats_reference)))
    inverse = 1.0 / sizes.astype(np.float64)
    design = np.column_stack([np.ones_like(inverse), inverse])
    (intercept, slope), *_ = np.linalg.lstsq(design, np.array(fids), rcond=None)
    residuals = np.array(fids) - (intercept + slope * inverse)
    return FIDInfinityResult(
        value=float(intercept),
        slope=float(slope),
        sizes=tuple(int(s) for s in sizes),
        fids=tuple(fids),
        residual_std=float(np.sqrt(np.mean(residuals**2))),
        n=n_rows,
        n_reference=stats_reference.n,
        seed=seed,
    )
