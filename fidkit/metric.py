"""``fidkit.FID``: the FID as a training-loop metric (update / compute / reset), on one process or many.

The metric keeps one :class:`~fidkit.stats.StatsAccumulator` per side (float64 mean and sum of squared
deviations, merged exactly), feeds it through the pipeline's one extraction loop
(:func:`fidkit.extraction.extract`) and builds the network once, lazily, from the extractor registry
(:class:`fidkit.extractors.LazyExtractor`).
A reference (a statistics file, a folder, an archive, an array, a :class:`~fidkit.stats.Stats`) goes through
the pipeline like any side of :func:`fidkit.compute_fid`, statistics cache included, and is kept as one
``Stats`` object, so the square-root factor of its covariance is computed once and reused by every
:meth:`FID.compute` (see :func:`fidkit.frechet.sqrt_factor`).

Under ``torch.distributed`` (a default process group with more than one rank), :meth:`FID.compute` gathers
every rank's ``(n, mean, M2)`` per side, float64, ``O(dim^2)`` bytes whatever the number of images, and
merges them in rank order, so that every rank holds bitwise the same statistics and returns the same report.
torch is imported only when the caller has imported it already.
"""

from __future__ import annotations

import sys
import time
import warnings
from datetime import timedelta
from typing import Any

import numpy as np

from fidkit._validate import (
    as_image_batch,
    as_image_tensor,
    check_value_range,
    is_torch_tensor,
)
from fidkit.errors import FidkitError, FidkitWarning, InputError
from fidkit.extraction import ExtractionTimes, extract
from fidkit.frechet import fid_from_stats
from fidkit.extractors import LazyExtractor
from fidkit.options import RunOptions, run_options
from fidkit.pipeline import describe, open_input, side_statistics
from fidkit.report import FidReport, Timings, assemble_fid_report, consistency_warnings
from fidkit.stats import Stats, StatsAccumulator

__all__ = ["FID", "DEFAULT_TIMEOUT_SECONDS"]

#: How long :meth:`FID.compute` waits for every rank to reach it before it raises, in seconds.
DEFAULT_TIMEOUT_SECONDS = 600.0


class _Side:
    """One side's running state: the accumulator, a change counter, and the statistics made from it."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.version = 0  # bumped by every update and reset
        self.reset()

    def reset(self) -> None:
        self.accumulator = StatsAccumulator()
        self.metadata: dict[str, Any] = {}
        self.network_seconds = 0.0
        self.stats: Stats | None = None
        self.stats_version = -1  # the version `stats` was made at
        self.version += 1

    # StatsAccumulator's interface, as extraction.extract calls it.
    def update(self, features: np.ndarray) -> None:
        self.accumulator.update(features)
        self.version += 1


def _device_batch(images: Any, what: str, value_range: tuple[float, float] | None) -> Any:
    """What :meth:`FID.update` hands the extractor: checked uint8 images, kept on their GPU when they are there.

    A CUDA tensor is quantized on its device and stays a uint8 tensor in the tensor convention (NCHW), which
    the extractors read where it lies (the onnxruntime CUDA provider by pointer, the torch engine directly);
    anything else becomes the usual host uint8 NHWC array.
    """
    if is_torch_tensor(images) and images.is_cuda:
        return as_image_tensor(images, what, value_range).permute(0, 3, 1, 2)
    return as_image_batch(images, what, value_range)


def _process_group() -> Any:
    """``torch.distributed`` when a default process group of more than one rank is up, else None.

    Never imports torch: a program that has not imported it cannot have a process group.
    """
    if "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    return dist


class FID:
    """The Fréchet Inception Distance as a metric: feed images as they are generated, compute when needed.

    Parameters
    ----------
    reference : path-like, numpy.ndarray, Stats, optional
        The real side: anything :func:`fidkit.compute_stats` accepts (a statistics ``.npz``, a folder, an
        archive, a uint8 array, a :class:`~fidkit.stats.Stats`). It is opened here (a wrong path fails at
        once) and its statistics are computed or loaded on the first :meth:`compute`, through the statistics
        cache like any side of :func:`fidkit.compute_fid`, then kept: the square root of its covariance is
        factored once for every later :meth:`compute`. Without a reference, feed the real images with
        ``update(images, real=True)``.
    value_range : (float, float), optional
        The range of floating-point images, e.g. ``(-1, 1)`` for a tanh generator or ``(0, 1)``; they are
        quantized as an 8-bit PNG would be (:func:`fidkit._validate.as_image_batch`), and values beyond the
        range by more than half a step are an error, never clipped. uint8 images are used as they are.
    options : RunOptions, optional
        The run's settings as one object (:class:`fidkit.RunOptions`); keyword arguments override its fields.
    extractor : str or extractor object, optional
        A registered extractor name (default ``"inception-2015"``), or a built extractor to share with other
        computations (the reference's, say); with an object, `weights` and `device` are not used.
    **overrides
        Fields of :class:`fidkit.RunOptions`, e.g. ``weights``, ``device``, ``engine``, ``batch_size``
        (default: the extractor's, else the device's), ``use_cache`` (for the reference).

    Notes
    -----
    Images are torch tensors ``(N, C, H, W)`` (any device; a CUDA tensor is quantized on its device and only
    the uint8 result is copied) or numpy arrays ``(N, H, W, C)``, with 1 or 3 channels.

    State is one float64 accumulator per side, ``O(dim^2)`` memory, never the features. :meth:`compute` with
    nothing changed since the last call returns the previous report at no cost; otherwise it rebuilds the
    statistics of the side that changed, and the distance.

    Distributed: when a ``torch.distributed`` default process group of more than one rank is initialized,
    every rank updates with its own share of the images and :meth:`compute` combines the ranks exactly:
    each rank's ``(n, mean, M2)`` is all-gathered (float64, ``O(dim^2)``) and merged in rank order, so the
    report is the same on every rank. **Every rank must call compute()**; one that does not is reported
    after `timeout` seconds as an error naming the missing ranks, instead of a hang. The reference is
    loaded on each rank, not sent.

    Examples
    --------
    >>> import numpy as np, fidkit
    >>> rng = np.random.default_rng(0)
    >>> metric = fidkit.FID(reference=fidkit.Stats.from_features(rng.normal(size=(500, 4))))
    >>> metric._update_features(rng.normal(size=(500, 4)) + 0.5)  # what update(images) does after the network
    >>> round(float(metric.compute()), 3)
    1.134
    >>> metric.compute() is metric.compute()  # nothing changed: the same report, at no cost
    True

    In a training loop (images: a float tensor in [-1, 1], N x 3 x H x W):

    >>> metric = fidkit.FID("cifar10-train.npz", value_range=(-1, 1))   # doctest: +SKIP
    >>> for step in range(steps):                                       # doctest: +SKIP
    ...     if step % 5000 == 0:
    ...         metric.reset()
    ...         for _ in range(100):
    ...             metric.update(generator(torch.randn(100, 128, device="cuda")))
    ...         print(step, float(metric.compute()))
    """

    def __init__(
        self,
        reference: Any = None,
        *,
        value_range: Any = None,
        options: RunOptions | None = None,
        extractor: Any = None,
        **overrides: Any,
    ) -> None:
        self._value_range = check_value_range(value_range)
        if isinstance(extractor, str):
            overrides["extractor"] = extractor
            extractor = None
        overrides.setdefault("progress", False)  # a training loop prints its own progress
        self._options = run_options(options, **overrides)
        self._extractor = LazyExtractor(self._options, given=extractor)
        self._reference_input = None if reference is None else open_input(reference, self._options)
        self._reference: tuple[Stats, Any] | None = None
        self._real = _Side("real")
        self._generated = _Side("generated")
        self._last: tuple[tuple[int, int], FidReport] | None = None
        self._gloo_group: Any = None

    # ----------------------------------------------------------------------------------------- feeding

    def update(self, images: Any, real: bool = False) -> None:
        """Add a batch of images to the generated side (or, with ``real=True``, to the real side).

        Parameters
        ----------
        images : torch.Tensor or numpy.ndarray
            ``(N, C, H, W)`` tensor or ``(N, H, W, C)`` array, ``C`` = 1 or 3, uint8 or (with the
            metric's `value_range`) floating point; any size (resized inside the network).
        real : bool
            Feed the real side; refused when the metric has a `reference`.

        Raises
        ------
        InputError
            A bad batch (see :func:`fidkit._validate.as_image_batch`), or ``real=True`` with a reference.
        """
        side = self._side(real)
        what = f"FID.update({'real=True' if real else 'generated'}) images"
        batch = _device_batch(images, what, self._value_range)
        extractor = self._extractor.get()
        times = extract([batch], extractor, side)
        side.network_seconds += times.network_seconds
        if not side.metadata:
            side.metadata = {key: value for key, value in extractor.metadata().items() if value is not None}

    def _update_features(self, features: Any, real: bool = False) -> None:
        """Add Inception features directly (tests and benchmarks; :meth:`update` is this after the network)."""
        self._side(real).update(features)

    def _side(self, real: bool) -> _Side:
        if real and self._reference_input is not None:
            raise InputError(
                "update(images, real=True) on an FID with a reference: the reference is the real side; create "
                "FID() without a reference to accumulate real images"
            )
        return self._real if real else self._generated

    def reset(self) -> None:
        """Forget the generated images; keep the real side (the reference, or the real images fed so far)."""
        self._generated.reset()

    # ----------------------------------------------------------------------------------------- computing

    def compute(self, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> FidReport:
        """Return the FID between the real side and the generated images fed since the last :meth:`reset`.

        Parameters
        ----------
        timeout : float
            Distributed only: seconds to wait for every rank to call ``compute()`` before raising.

        Returns
        -------
        FidReport
            ``float(report)`` is the FID; ``report.a`` is the real side, ``report.b`` the generated one.

        Raises
        ------
        InputError
            Fewer than 2 images on a side, no real side, or a reference made with other Inception weights.
        FidkitError
            Distributed: a rank did not call ``compute()`` within `timeout` seconds, or ranks disagree.
        """
        started = time.perf_counter()
        reference = self._reference_statistics()
        dist = _process_group()
        if dist is None:
            key = (self._real.version, self._generated.version)
            if self._last is not None and self._last[0] == key:
                return self._last[1]
            if reference is None:
                self._local_statistics(self._real)
            self._local_statistics(self._generated)
        else:
            key = self._gather(dist, timeout, has_reference=reference is not None)
            if key is None:
                assert self._last is not None
                return self._last[1]
        # From here the sides are new: an error below (a weights mismatch, Ctrl-C) must not leave the previous
        # report standing as if it described them.
        self._last = None
        real_stats, real_side = reference if reference is not None else self._side_report(self._real)
        generated_stats, generated_side = self._side_report(self._generated)
        # The checks and warnings of compute_fid: different weights are an error, lossy or skipped inputs a note.
        messages = consistency_warnings(real_side, generated_side, allow_weights_mismatch=False)
        for message in messages:
            warnings.warn(message, FidkitWarning, stacklevel=2)
        distance_started = time.perf_counter()
        frechet = fid_from_stats(real_stats, generated_stats)
        timings = Timings(
            decode_seconds=0.0,
            network_seconds=self._real.network_seconds + self._generated.network_seconds,
            distance_seconds=time.perf_counter() - distance_started,
            total_seconds=time.perf_counter() - started,
        )
        report = assemble_fid_report(frechet, real_side, generated_side, messages, timings)
        self._last = ((self._real.version, self._generated.version), report)
        return report

    def _reference_statistics(self) -> tuple[Stats, Any] | None:
        """The reference's statistics and side report, computed (or loaded) once through the pipeline."""
        if self._reference_input is None:
            return None
        if self._reference is None:
            self._reference = side_statistics(self._reference_input, self._extractor, self._options)
        return self._reference

    def _local_statistics(self, side: _Side) -> None:
        """Rebuild `side.stats` from this process's accumulator, if it changed since it was built."""
        if side.stats is not None and side.stats_version == side.version:
            return
        n = side.accumulator.n
        if n < 2:
            raise self._too_few(side, n)
        side.stats = side.accumulator.result(metadata=side.metadata)
        side.stats_version = side.version

    @staticmethod
    def _too_few(side: _Side, n: int) -> InputError:
        if side.label == "real" and n == 0:
            return InputError(
                "FID has no real side: pass FID(reference=...) (statistics, a folder, an array) or feed real "
                "images with update(images, real=True)"
            )
        how = "update(images, real=True)" if side.label == "real" else "update(images)"
        return InputError(
            f"the {side.label} side holds {n} image(s); a covariance needs at least 2 (FID needs thousands): "
            f"call {how} first"
        )

    def _side_report(self, side: _Side) -> tuple[Stats, Any]:
        assert side.stats is not None
        name = "FID.update(real=True)" if side.label == "real" else "FID.update"
        return side.stats, describe(
            side.stats, name=name, kind="batches", cached=False, total_seconds=side.network_seconds,
            times=ExtractionTimes(network_seconds=side.network_seconds),
        )

    # ----------------------------------------------------------------------------------------- distributed

    def _group(self, dist: Any, timeout: float) -> Any:
        """A gloo group for the metric's CPU tensors: the default group when it is gloo, else one made once."""
        if dist.get_backend() == "gloo":
            return None
        if self._gloo_group is None:
            # NCCL cannot run monitored_barrier nor carry host arrays: a gloo group over the same ranks does.
            self._gloo_group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout))
        return self._gloo_group

    def _gather(self, dist: Any, timeout: float, *, has_reference: bool) -> tuple[int, int] | None:
        """Combine every rank's sides exactly; None when no rank changed anything since the last compute."""
        import torch

        world = dist.get_world_size()
        rank = dist.get_rank()
        try:
            group = self._group(dist, timeout)
            dist.monitored_barrier(group=group, timeout=timedelta(seconds=timeout), wait_all_ranks=True)
        except RuntimeError as exc:
            raise FidkitError(
                f"FID.compute() on rank {rank} of {world}: not every rank called compute() within {timeout:g} s "
                f"(torch.distributed: {str(exc).strip()}); every rank must call compute(), also when only rank 0 "
                "uses the value, or raise timeout= if a rank is only slow"
            ) from exc
        sides = [self._generated] if has_reference else [self._real, self._generated]
        dims = [s.accumulator.dim for s in sides if s.accumulator.dim is not None]
        header = torch.tensor(
            [float(has_reference), float(dims[0] if dims else 0)]
            + [float(not has_reference and self._real.version != self._real.stats_version)]
            + [float(self._generated.version != self._generated.stats_version)],
            dtype=torch.float64,
        )
        headers = [torch.empty_like(header) for _ in range(world)]
        dist.all_gather(headers, header, group=group)
        table = torch.stack(headers).numpy()
        if len(set(table[:, 0])) > 1:
            raise FidkitError("FID.compute(): some ranks have a reference and others do not; give every rank the same")
        known_dims = {int(d) for d in table[:, 1] if d > 0}
        if len(known_dims) > 1:
            raise FidkitError(f"FID.compute(): the ranks hold features of different dimensions {sorted(known_dims)}")
        changed = table[:, 2:].any(axis=0)[-len(sides):]
        if not changed.any() and self._last is not None and all(s.stats is not None for s in sides):
            return None
        dim = known_dims.pop() if known_dims else 0
        for side, side_changed in zip(sides, changed):
            if not side_changed and side.stats is not None:
                continue
            if dim == 0:
                raise self._too_few(side, 0)
            n, mean, m2 = side.accumulator.moments() if side.accumulator.n else (0, np.zeros(dim), np.zeros((dim, dim)))
            packed = torch.from_numpy(np.concatenate([[float(n)], mean, m2.reshape(-1)]))
            gathered = [torch.empty_like(packed) for _ in range(world)]
            dist.all_gather(gathered, packed, group=group)
            # Merged in rank order with the accumulator's exact pairwise update: the same bits on every rank.
            merged = StatsAccumulator(dim)
            for item in gathered:
                values = item.numpy()
                merged.merge(
                    StatsAccumulator.from_moments(int(values[0]), values[1 : 1 + dim], values[1 + dim :].reshape(dim, dim))
                )
            if merged.n < 2:
                raise self._too_few(side, merged.n)
            side.stats = merged.result(metadata=side.metadata)
            side.stats_version = side.version
        return (self._real.version, self._generated.version)
