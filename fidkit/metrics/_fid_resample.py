"""The per-resample work of :func:`fidkit.metrics.bootstrap_fid`: weighted moments and a lean Fréchet distance.

Private to :mod:`fidkit.metrics.bootstrap`. Per resample, by the first route that can be trusted for it
(:class:`Resampler`):

1. ``float32`` (the default ``dtype``): each side's rows, centred on their mean, reordered by decreasing variance
   and divided by a power of two once (:func:`numpy_sides`), are stored in float32; the resample's weighted Gram
   is accumulated by BLAS ``ssyrk`` over the drawn rows, grouped by how often they were drawn (each group's
   product is added ``count`` times, so no row is rescaled and the weights are exact); the mean shift and
   everything after the Gram are float64. The distance is :func:`lean_fid`: ``||mu_a - mu_b||^2 + tr(S_a) +
   tr(S_b) - 2 sum sqrt(eig(B B^T))``, ``B = R_b^T R_a`` from the Cholesky factors ``S = R R^T`` (``potrf``,
   ``trmm``, ``syrk``, ``syevd`` without vectors): the ``factor-eigh`` route of :mod:`fidkit.frechet` without
   its pivoted Cholesky, factor checks and diagnostics, which the Cholesky factorisation of a covariance built as
   a weighted Gram makes unnecessary. It is trusted only where both covariances have a Cholesky factorisation
   and the smallest pivot ratio (:func:`_cholesky`) is at least ``_MIN_RATIO["float32"]``: a covariance closer
   to singular than that is where float32 round-off in the Gram moves the distance by more than ~1e-7.
2. ``float64``: the same with float64 Grams (on the stored rows when ``dtype="float64"``, else on rows centred
   afresh from the features), trusted down to a pivot ratio of ``_MIN_RATIO["float64"]``.
3. :func:`fidkit.frechet.frechet_distance` on the float64 moments: singular covariances (fewer distinct rows
   drawn than dimensions) and anything else the lean route declines.

:class:`TorchEngine` runs route 1 (or 2) on a torch device instead, falling back to 2 and 3 on the CPU.

On the CPU, :meth:`Resampler.fids` computes several resamples at a time, in threads, with the BLAS and LAPACK
routines of :mod:`fidkit.metrics._lapack` (which release the GIL) and BLAS's own threads set to one.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from fidkit._tf32 import tf32_possible
from fidkit.frechet import frechet_distance
from fidkit.metrics._lapack import (
    cholesky_lower,
    eigenvalues_lower,
    syrk_lower,
    triangular_transpose_times,
    two_stage_available,
)

__all__ = [
    "GRAM_DTYPES",
    "NumpySide",
    "Resampler",
    "TorchEngine",
    "blas_threads",
    "lean_fid",
    "numpy_sides",
    "resample_counts",
    "torch_cuda_if_imported",
]

logger = logging.getLogger(__name__)

#: Accepted values of ``dtype=`` of :func:`~fidkit.metrics.bootstrap_fid`.
GRAM_DTYPES = ("float32", "float64")
# Rows per syrk call: large enough that BLAS runs at full speed, small enough that a gathered block (32 MiB of
# float32 at dim 2048) stays a small fraction of the stored rows.
_BLOCK_ROWS = 4096
# Smallest pivot ratio (see _cholesky) at which the lean route is trusted, per Gram dtype. float32: measured at
# dim 512 on covariances with a tail of small eigenvalues, the distance from float32 Grams differs from the
# float64 one by 2e-8 relative at ratio 7e-5, 1e-7 at 7e-6 and 2.5e-7 at 2e-6 (docs/metrics.md). float64: far
# below any covariance of N > dim samples in general position, far above a singular one.
_MIN_RATIO = {"float32": 1e-4, "float64": 1e-10}


def resample_counts(rng: np.random.Generator, n_a: int, n_b: int) -> tuple[np.ndarray, np.ndarray]:
    """One bootstrap draw as row multiplicities: ``integers(0, N_a, N_a)`` then ``integers(0, N_b, N_b)`` from
    `rng` (the draws of :func:`fidkit.metrics.bootstrap`), counted per row."""
    counts_a = np.bincount(rng.integers(0, n_a, n_a), minlength=n_a)
    return counts_a, np.bincount(rng.integers(0, n_b, n_b), minlength=n_b)


def _column_summary(features: np.ndarray, mean: np.ndarray) -> tuple[float, np.ndarray]:
    """``(max |x - mean|, sum over rows of (x - mean)^2 per column)``, in row blocks (no float64 copy of all rows)."""
    largest, squares = 0.0, np.zeros(features.shape[1])
    for start in range(0, features.shape[0], _BLOCK_ROWS):
        block = features[start : start + _BLOCK_ROWS] - mean
        largest = max(largest, float(np.max(block)), -float(np.min(block)))
        squares += np.einsum("ij,ij->j", block, block)
    return largest, squares


def numpy_sides(array_a: np.ndarray, array_b: np.ndarray, dtype: str) -> tuple["NumpySide", "NumpySide", float]:
    """Both sides centred on their own means, in one column order, divided by one power of two; and the mean term
    of the features left out, in those units.

    * The columns are put in order of decreasing variance (of both sides together). The distance does not depend
      on the order of the coordinates, but its eigensolve does: with the large variances first, the small
      eigenvalues of a graded covariance (nearly constant features next to large ones) keep their relative
      accuracy (measured at dim 96 with 20 features scaled by 1e-4, against 50-digit arithmetic: 1e-9 relative
      in this order against 3e-7 in the given one, which is what the pivoting in
      :func:`fidkit.frechet.factors.pivoted_cholesky_factor` achieves there).
    * The power of two puts the largest centred value of either side in ``[0.5, 1)``, so that float32 products
      neither overflow nor underflow whatever the units of the features (dividing by it is exact; distances in
      these units are multiplied by its square).
    * Features constant on both sides (dead units) are left out: their centred values are exactly 0, so they add
      nothing to either covariance, only their mean difference to the distance (the returned term), and kept
      they would make every covariance singular and send every resample to the slow route.
    """
    means = [array.mean(axis=0, dtype=np.float64) for array in (array_a, array_b)]
    (largest_a, squares_a), (largest_b, squares_b) = (
        _column_summary(array, mean) for array, mean in zip((array_a, array_b), means)
    )
    largest = max(largest_a, largest_b)
    scale = math.ldexp(1.0, math.frexp(largest)[1]) if largest > 0.0 else 1.0
    variances = squares_a / array_a.shape[0] + squares_b / array_b.shape[0]
    varying = np.flatnonzero(variances > 0.0)
    if varying.size == 0:  # constant features on both sides: the covariances are zero, frechet_distance takes it
        varying = np.arange(variances.size)
    order = varying[np.argsort(-variances[varying], kind="stable")]
    constant = np.setdiff1d(np.arange(variances.size), order)
    mean_term = float(np.sum(np.square((means[0][constant] - means[1][constant]) / scale)))
    side_a, side_b = (NumpySide(array, mean, order, scale, dtype) for array, mean in zip((array_a, array_b), means))
    return side_a, side_b, mean_term


class NumpySide:
    """One side's rows, centred, reordered and scaled once, and the float64 moments of any bootstrap counts.

    Parameters
    ----------
    features : numpy.ndarray
        ``(N, dim)`` float32 or float64, checked finite. Kept (not copied) for :meth:`moments` with ``exact``.
    mean : numpy.ndarray
        Its float64 mean.
    order : numpy.ndarray
        The columns kept, in their order.
    scale : float
        A power of two the centred rows are divided by (see :func:`numpy_sides`).
    dtype : {"float32", "float64"}
        Precision of the stored rows and of their Gram products.
    """

    def __init__(self, features: np.ndarray, mean: np.ndarray, order: np.ndarray, scale: float, dtype: str) -> None:
        self.features, self.order, self.scale = features, order, scale
        self.n, self.dim = features.shape[0], order.size
        self.mean = mean[order]
        # Centred in float64 block by block, then stored in the Gram dtype. Centring first keeps the products
        # small: resample means differ from this one by O(1/sqrt(N)), so nothing large cancels when the resample
        # mean is taken out again.
        self.rows = np.empty((self.n, self.dim), dtype=dtype)
        for start in range(0, self.n, _BLOCK_ROWS):
            self.rows[start : start + _BLOCK_ROWS] = self._centred(slice(start, start + _BLOCK_ROWS))

    def _centred(self, rows: slice | np.ndarray) -> np.ndarray:
        """Rows of the features, float64, centred, reordered and scaled."""
        # np.take on axis 1 (C-ordered, 6x faster than indexing with [:, order], whose result is transposed in
        # memory: measured 15 against 96 ms for 4096 x 2048 float32); syrk_lower reads C-ordered blocks.
        block = np.subtract(np.take(self.features[rows], self.order, axis=1), self.mean)
        block /= self.scale
        return block

    def moments(self, counts: np.ndarray, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(shift, sigma)`` of the resample with row multiplicities `counts`, in the side's units.

        ``shift`` is the resample mean minus :attr:`mean`, float64; ``sigma`` the resample covariance
        (``ddof = 1``), float64, its lower triangle only (the rest zero). Rows are grouped by count: the group
        drawn ``k`` times adds ``k`` times its product, so no row is multiplied and the weights are exact. With
        `exact` the products are float64 on rows centred afresh from the features, whatever the stored dtype.
        """
        exact = exact and self.rows.dtype != np.float64
        gram_dtype = np.float64 if exact else self.rows.dtype
        groups = [(count, np.flatnonzero(counts == count)) for count in range(1, int(counts.max()) + 1)]

        def blocks():
            for count, chosen in groups:
                for start in range(0, chosen.size, _BLOCK_ROWS):
                    rows = chosen[start : start + _BLOCK_ROWS]
                    yield count, (self._centred(rows) if exact else self.rows[rows])

        # The resample's mean first, then the products of the rows centred on it: a sum of squares, so the
        # variances can never come out negative (subtracting n * shift shift^T afterwards could, by rounding, for
        # a nearly constant feature: a covariance frechet_distance would refuse).
        total = np.zeros(self.dim, dtype=np.float64)
        for count, block in blocks():
            total += count * block.sum(axis=0, dtype=np.float64)
        shift = total / self.n
        centre = shift.astype(gram_dtype)
        gram = np.zeros((self.dim, self.dim), dtype=gram_dtype, order="F")
        for count, block in blocks():
            syrk_lower(float(count), block - centre, gram)  # gram += count * block^T block (lower)
        sigma = np.asarray(gram, dtype=np.float64, order="F")
        sigma /= self.n - 1
        return shift, sigma


def _cholesky(sigma: np.ndarray) -> float:
    """Overwrite the lower triangle of `sigma` with its Cholesky factor ``R``; return the smallest pivot ratio
    ``min_k R_kk^2 / sigma_kk``, or 0.0 where the factorisation fails.

    ``R_kk^2 / sigma_kk`` is ``1 - r_k^2``, ``r_k`` the multiple correlation of coordinate ``k`` with the ones
    before it: the share of its variance that is new. It does not depend on the units of the coordinates (a
    nearly constant feature is not small here), and it is small where the covariance is nearly singular in a
    direction, which is where round-off in the covariance moves the distance most.
    """
    variances = np.diagonal(sigma).copy()
    if cholesky_lower(sigma) != 0:
        return 0.0
    return float(np.min(np.square(np.diagonal(sigma)) / variances))


def _zero_upper(matrix: np.ndarray) -> None:
    """Set the strict upper triangle of a Fortran-ordered square matrix to 0, column by column (in place)."""
    for column in range(1, matrix.shape[1]):
        matrix[:column, column] = 0.0


def lean_fid(
    difference: np.ndarray, sigma_a: np.ndarray, sigma_b: np.ndarray, min_ratio: float, two_stage: bool = False
) -> tuple[float | None, float]:
    """``(distance, smallest pivot ratio)`` from the difference of means and two covariances (lower triangles,
    float64, Fortran order, both overwritten); the distance is None where a Cholesky factorisation fails, the
    smallest pivot ratio of either (see :func:`_cholesky`) is below `min_ratio`, or the value is not finite. Same
    units as the inputs.

    ``tr sqrt(S_a S_b)`` is the sum of the square roots of the eigenvalues of ``B B^T``, ``B = R_b^T R_a`` from
    the Cholesky factors ``S = R R^T`` (``B B^T = R_b^T S_a R_b`` has the spectrum of ``S_a S_b``): a triangular
    product and a ``syrk``, both one BLAS-3 call that threads well. (LAPACK's ``dsygst`` forms ``R_a^T S_b R_a``,
    of the same spectrum, in half the flops, but as many small calls: with BLAS's own threads, measured 1.5-3x
    slower at sizes 64-256 on an idle machine and stalling for seconds when other work holds the cores;
    single-threaded it saves about 4 % of a resample at size 2048.) `two_stage`: the eigenvalues by LAPACK's
    two-stage reduction (:func:`fidkit.metrics._lapack.eigenvalues_lower`).
    """
    trace = float(np.trace(sigma_a)) + float(np.trace(sigma_b))
    ratio = _cholesky(sigma_a)
    if ratio > 0.0:
        ratio = min(ratio, _cholesky(sigma_b))
    if ratio <= 0.0 or ratio < min_ratio:
        return None, ratio
    _zero_upper(sigma_a)  # R_a enters the product as a full matrix
    triangular_transpose_times(sigma_b, sigma_a)  # sigma_a <- B = R_b^T R_a
    gram = np.zeros_like(sigma_a, order="F")
    syrk_lower(1.0, sigma_a.T, gram)  # B B^T: sigma_a.T is B's memory read as C-ordered rows of B^T
    eigenvalues, info = eigenvalues_lower(gram, two_stage=two_stage)
    if info != 0:
        return None, ratio
    trace_sqrt = float(np.sum(np.sqrt(np.maximum(eigenvalues, 0.0))))
    value = float(np.sum(np.square(difference))) + max(trace - 2.0 * trace_sqrt, 0.0)
    return (value if math.isfinite(value) else None), ratio


# Held by a threaded run of Resampler.fids (see there).
_THREADED_RUN = threading.Lock()


def _one_blas_thread() -> None:
    """A bootstrap worker thread's start: BLAS single-threaded in it (for an OpenMP build of OpenBLAS, whose
    limit is per thread; with its pthreads the main thread's limit already holds, and this does nothing)."""
    threadpool_limits(limits=1, user_api="blas")


def blas_threads() -> int:
    """The threads BLAS would use in this process (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS`` or the CPUs it
    may run on): the default number of resamples computed at a time. 1 where threadpoolctl sees no BLAS it can
    control (Apple's Accelerate): there the resamples run one at a time, on BLAS's own threads."""
    threads = [entry.get("num_threads", 1) for entry in threadpool_info() if entry.get("user_api") == "blas"]
    return max(1, max(threads, default=1))


def torch_cuda_if_imported() -> str | None:
    """``"cuda"`` when torch is already imported and sees a GPU, else None (never imports torch)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        return "cuda" if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA setup means the CPU engine, never a failed bootstrap
        return None


def torch_gram_dtype(device: Any, dtype: str) -> str:
    """The Gram dtype a torch device gets: float64 where a float32 product may run in TF32 (a 10-bit mantissa)."""
    import torch

    if dtype == "float32" and torch.device(device).type == "cuda" and tf32_possible(torch):
        logger.info("float32 products may run in TF32 on %s: the bootstrap Grams use float64", device)
        return "float64"
    return dtype


class TorchEngine:
    """Both sides' stored rows on a torch device; :meth:`fid` is :func:`lean_fid` of a resample's moments there.

    The Grams in the stored rows' dtype (see :func:`torch_gram_dtype`), everything after them in float64. Weights
    are applied as ``sqrt(count)`` on the drawn rows (in float64 exactly up to the rounding of the square root).
    """

    def __init__(self, side_a: NumpySide, side_b: NumpySide, device: Any) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.sides = [(side.n, torch.from_numpy(side.rows).to(self.device)) for side in (side_a, side_b)]
        self.mean_difference = torch.from_numpy(side_a.mean - side_b.mean).to(self.device) / side_a.scale
        self.description = f"torch-{self.device.type}-{side_a.rows.dtype}"

    def _moments(self, index: int, counts: np.ndarray) -> tuple[Any, Any]:
        torch = self.torch
        n_rows, rows = self.sides[index]
        weights = torch.from_numpy(counts).to(self.device)
        drawn = torch.nonzero(weights).squeeze(1)
        picked = rows.index_select(0, drawn)
        weight = weights.index_select(0, drawn).to(torch.float64)
        shift = (weight @ picked.to(torch.float64)) / n_rows
        # Centred on the resample's mean before the product, as NumpySide.moments: variances never negative.
        picked = (picked - shift.to(rows.dtype)) * weight.sqrt().to(rows.dtype)[:, None]
        sigma = (picked.T @ picked).to(torch.float64)
        sigma /= n_rows - 1
        return shift, sigma

    def fid(self, counts_a: np.ndarray, counts_b: np.ndarray, min_ratio: float) -> tuple[float | None, float]:
        """As :func:`lean_fid`, for the resample with counts `counts_a` and `counts_b`."""
        torch = self.torch
        shift_a, sigma_a = self._moments(0, counts_a)
        shift_b, sigma_b = self._moments(1, counts_b)
        difference = self.mean_difference + shift_a - shift_b
        lowers, ratios = [], []
        for sigma in (sigma_a, sigma_b):
            lower, info = torch.linalg.cholesky_ex(sigma)
            if int(info.item()) != 0:
                return None, 0.0
            lowers.append(lower)
            ratios.append(float((torch.diagonal(lower).square() / torch.diagonal(sigma)).min().item()))
        if min(ratios) < min_ratio:
            return None, min(ratios)
        product = lowers[1].T @ lowers[0]
        eigenvalues = torch.linalg.eigvalsh(product.T @ product)
        trace_sqrt = eigenvalues.clamp_min(0.0).sqrt().sum()
        trace_part = torch.diagonal(sigma_a).sum() + torch.diagonal(sigma_b).sum() - 2.0 * trace_sqrt
        value = float((difference @ difference + trace_part.clamp_min(0.0)).item())
        return (value if math.isfinite(value) else None), min(ratios)


# --------------------------------------------------------------------------------------------- the resamples


def _full(lower: np.ndarray) -> np.ndarray:
    return lower + np.tril(lower, -1).T


class Resampler:
    """Each resample's FID, by the fastest route that can be trusted for it (see the module docstring).

    Parameters
    ----------
    array_a, array_b : numpy.ndarray
        Checked ``(N, dim)`` features, ``N >= 2``.
    dtype : {"float32", "float64"}
        Precision of the Gram products.
    device : str or torch.device or None
        None: numpy and scipy on the CPU; else torch on that device.

    Notes
    -----
    Whether float32 Grams serve the data at all is decided once, by the first resample (:meth:`fids`): where its
    covariances are too close to singular for them, every resample is computed in float64. After that each
    resample's route depends on its own counts only, so the values do not depend on how many run at a time.
    """

    def __init__(self, array_a: np.ndarray, array_b: np.ndarray, dtype: str, device: Any) -> None:
        if device is not None:
            dtype = torch_gram_dtype(device, dtype)
        self.dtype = dtype
        *self.sides, self.constant_term = numpy_sides(array_a, array_b, dtype)
        self.engine = TorchEngine(*self.sides, device) if device is not None else None
        self.float32 = dtype == "float32"
        self.routes: dict[str, int] = {}
        #: Whether the resamples computed in threads use LAPACK's two-stage eigensolver where it is available (see
        #: :meth:`fids`). Off until measured faster where it should be: benchmarks compare the two.
        self.two_stage_in_threads = False

    @property
    def route(self) -> str:
        """``"weighted-moments: "`` and how many resamples each route computed, e.g. ``"float32 199, float64 1"``."""
        return "weighted-moments: " + ", ".join(f"{route} {count}" for route, count in self.routes.items())

    def fid(self, counts_a: np.ndarray, counts_b: np.ndarray) -> float:
        """The FID of the resample with row multiplicities `counts_a` and `counts_b`."""
        if self.engine is None:
            return self._finish(self._cpu_fid(counts_a, counts_b))
        value, route = self._engine_fid(counts_a, counts_b)
        if value is None:  # declined (too close to singular) or failed: float64 on the CPU, not float32 again
            return self._finish(self._float64(counts_a, counts_b))
        return self._finish((value, route))

    def fids(self, draws: Iterable[tuple[np.ndarray, np.ndarray]], workers: int) -> list[float]:
        """The FID of each resample of `draws` (pairs of counts), in their order; on the CPU, `workers` at a time.

        The first resample runs alone and decides whether float32 Grams serve this data (see the class notes).
        The others run in `workers` threads, each with single-threaded BLAS (the GIL-free routines of
        :mod:`fidkit.metrics._lapack`): the eigensolve, which dominates once the Grams are shared among many
        cores, scales poorly within one call (1.6x on 2 cores), and not at all across calls made one after
        another. The draws are consumed as the threads take them: at most ``2 * workers`` wait in memory.

        With :attr:`two_stage_in_threads`, the threads take the eigenvalues from LAPACK's two-stage reduction
        (``dsyevd_2stage``) where it is available. ``dsyevd``'s one-stage reduction reads the whole trailing matrix
        for each of the 2048 columns (about 11 GB at size 2048): fast while one matrix's triangle (17 MB) stays in
        cache, slower once it does not; the two-stage one does BLAS-3 work on the matrix and reduces a band that
        stays in cache. Measured single-threaded on a 32 MB cache: ``dsyevd`` 1.1x faster at size 2048, the
        two-stage one 1.04-1.19x faster from 2304 to 3072; in 2 threads of a bootstrap at 50,000 + 10,000,
        ``dsyevd`` 3 % faster per resample. Many cores sharing one cache may reverse that; until that is measured
        (``benchmarks/bench_gpu.py --steps bootstrap`` on 16 cores), ``dsyevd`` stays. With BLAS's own threads
        ``dsyevd`` is the faster (0.27 against 0.36 s at 2048 on 2 cores): the one-at-a-time routes keep it.

        One at a time instead, with BLAS's own threads: on the torch engine; where the first resample needed
        :func:`frechet_distance` (singular covariances: fewer distinct rows than dimensions), which runs in this
        thread only (:meth:`_finish`); and where BLAS's threads cannot be set to one (another thread holds
        threadpoolctl's control of a pthreads OpenBLAS). One threaded run at a time per process: BLAS's thread
        count is process-wide, and two overlapping runs would restore each other's limit wrongly.
        """
        draws = iter(draws)
        first = next(draws, None)
        if first is None:
            return []
        values = [self.fid(*first)]
        if self.float32 and self.routes.get("float32", 0) == 0 and self.engine is None:
            self.float32 = False
            logger.info(
                "the first resample's covariances are too close to singular for float32 Grams (smallest pivot "
                "ratio below %.3g): every resample is computed in float64", _MIN_RATIO["float32"],
            )
        if self.engine is not None or workers <= 1 or "frechet_distance" in self.routes:
            values.extend(self.fid(*draw) for draw in draws)
            return values
        # BLAS's threads set to one in this thread (OpenBLAS's pthreads: process-wide) and in each worker (an
        # OpenMP build: per thread).
        with _THREADED_RUN, threadpool_limits(limits=1, user_api="blas"):
            if blas_threads() > 1:
                logger.info(
                    "BLAS's threads could not be set to one (another thread controls them): the resamples run one "
                    "at a time"
                )
                values.extend(self.fid(*draw) for draw in draws)
                return values
            pool = ThreadPoolExecutor(workers, thread_name_prefix="fidkit-bootstrap", initializer=_one_blas_thread)
            with pool:
                pending: deque[Future] = deque()
                try:
                    two_stage = self.two_stage_in_threads and two_stage_available()
                    for draw in draws:
                        pending.append(pool.submit(self._cpu_fid, *draw, two_stage))
                        if len(pending) >= 2 * workers:
                            values.append(self._finish(pending.popleft().result()))
                    while pending:
                        values.append(self._finish(pending.popleft().result()))
                except BaseException:  # an error or Ctrl-C: the queued resamples are not started
                    for future in pending:
                        future.cancel()
                    raise
        return values

    def _finish(self, outcome: tuple[float, str] | tuple[None, tuple[np.ndarray, ...]]) -> float:
        """The FID from ``(value, route)``, or from ``(None, moments)`` by :func:`frechet_distance`, here: it may
        run on torch (CUDA) and sets warning filters, neither of which a worker thread should do. Counts the
        route."""
        value, route = outcome
        if value is None:
            value, route = self._frechet(*route), "frechet_distance"
        self.routes[route] = self.routes.get(route, 0) + 1
        return (value + self.constant_term) * self.sides[0].scale ** 2

    def _engine_fid(self, counts_a: np.ndarray, counts_b: np.ndarray) -> tuple[float | None, str]:
        try:
            return self.engine.fid(counts_a, counts_b, _MIN_RATIO[self.dtype])[0], self.engine.description
        except RuntimeError as exc:  # torch: out of memory, a broken CUDA setup
            logger.warning("bootstrap_fid on %s failed (%s); the resamples run on the CPU", self.engine.device, exc)
            self.engine = None
            return None, ""

    def _cpu_fid(self, counts_a: np.ndarray, counts_b: np.ndarray, two_stage: bool = False) -> tuple[Any, Any]:
        """``(value in the sides' units, route)`` of one resample on the CPU, or ``(None, moments)`` for
        :meth:`_finish`; reads the sides only (thread-safe). `two_stage` as for :func:`lean_fid`."""
        if self.float32:
            value, ratio = self._lean(counts_a, counts_b, exact=False, two_stage=two_stage)
            if value is not None:
                return value, "float32"
            logger.debug("a resample too close to singular for float32 Grams (ratio %.3g): redone in float64", ratio)
        return self._float64(counts_a, counts_b, two_stage)

    def _moments(self, counts_a: np.ndarray, counts_b: np.ndarray, exact: bool) -> tuple[np.ndarray, ...]:
        side_a, side_b = self.sides
        shift_a, sigma_a = side_a.moments(counts_a, exact=exact)
        shift_b, sigma_b = side_b.moments(counts_b, exact=exact)
        difference = (side_a.mean - side_b.mean) / side_a.scale + shift_a - shift_b
        return difference, shift_a, sigma_a, shift_b, sigma_b

    def _lean(
        self, counts_a: np.ndarray, counts_b: np.ndarray, exact: bool, two_stage: bool
    ) -> tuple[float | None, float]:
        difference, _, sigma_a, _, sigma_b = self._moments(counts_a, counts_b, exact)
        return lean_fid(difference, sigma_a, sigma_b, _MIN_RATIO[self.dtype], two_stage)

    def _float64(self, counts_a: np.ndarray, counts_b: np.ndarray, two_stage: bool = False) -> tuple[Any, Any]:
        """``(value, "float64")`` by the lean route on float64 moments; where it cannot be trusted, ``(None,
        moments)``: :meth:`_finish` gives those to :func:`frechet_distance`."""
        difference, shift_a, sigma_a, shift_b, sigma_b = self._moments(counts_a, counts_b, exact=True)
        value, _ = lean_fid(
            difference, sigma_a.copy(order="F"), sigma_b.copy(order="F"), _MIN_RATIO["float64"], two_stage
        )
        if value is not None:
            return value, "float64"
        return None, (shift_a, sigma_a, shift_b, sigma_b)

    def _frechet(self, shift_a: np.ndarray, sigma_a: np.ndarray, shift_b: np.ndarray, sigma_b: np.ndarray) -> float:
        side_a, side_b = self.sides
        # In the sides' units (the means divided by the same power of two, exactly), like everything here.
        mu_a, mu_b = side_a.mean / side_a.scale + shift_a, side_b.mean / side_b.scale + shift_b
        return frechet_distance(mu_a, _full(sigma_a), mu_b, _full(sigma_b)).value
