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

import contextlib
import copy
import hashlib
import pickle
import sys
import threading
import time
import warnings
import weakref
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

# Metadata that names the feature space: ranks whose features differ in any of these measure different things.
_IDENTITY_KEYS = ("feature_extractor", "weights_sha256", "resize_mode", "exporter_version", "engine", "precision")

# Process groups on which a collective of FID.compute() timed out or failed, with what happened: torch.distributed
# cannot use such a group again (gloo and NCCL leave it with unmatched operations), so a later compute() says so
# at once instead of timing out again with a message that blames the other ranks. The groups themselves are kept
# (not their ids), so that a new group, made after destroy_process_group(), is never mistaken for a broken one.
_BROKEN_GROUPS: list[tuple[Any, str]] = []
_BROKEN_GROUPS_LOCK = threading.Lock()


class _Side:
    """One side's running state: the accumulator, a change counter, and the statistics made from it.

    Thread-safe: every change of the accumulator, the counter and the metadata happens under `lock`, and
    :meth:`snapshot` reads them together, so that updates from several threads are all counted, once.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.lock = threading.RLock()
        self.version = 0  # bumped by every update and reset
        self.stats_serial = 0  # bumped whenever `stats` is rebuilt (locally or from every rank)
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.accumulator = StatsAccumulator()
            self.metadata: dict[str, Any] = {}
            self.network_seconds = 0.0
            self.stats: Stats | None = None
            self.stats_version = -1  # the version `stats` was made at
            self.version += 1

    # StatsAccumulator's interface, as extraction.extract calls it.
    def update(self, features: np.ndarray) -> None:
        with self.lock:
            self.accumulator.update(features)
            self.version += 1

    def add(self, batches: list[np.ndarray], network_seconds: float, metadata: dict[str, Any]) -> None:
        """Add the features of one :meth:`FID.update` (all its batches, or none of them) and what made them."""
        with self.lock:
            for features in batches:
                self.accumulator.update(features)
            self.version += 1
            self.network_seconds += network_seconds
            if not self.metadata:
                self.metadata = dict(metadata)

    def set_stats(self, stats: Stats, version: int) -> None:
        with self.lock:
            self.stats = stats
            self.stats_version = version
            self.stats_serial += 1

    def __getstate__(self) -> dict[str, Any]:
        # A snapshot taken under the lock: an update() running in another thread meanwhile lands in the original
        # only, never half in the copy.
        with self.lock:
            state = dict(self.__dict__)
            state["accumulator"] = copy.deepcopy(self.accumulator)
            state["metadata"] = dict(self.metadata)
        del state["lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.lock = threading.RLock()


class _Collected:
    """The sink of :func:`fidkit.extraction.extract` in :meth:`FID.update`: features kept until added at once."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def update(self, features: np.ndarray) -> None:
        self.batches.append(features)


def _thread_safe(extractor: Any) -> bool:
    """Whether `extractor` may be called from several threads at once.

    An extractor says so with a ``thread_safe`` attribute; fidkit's onnxruntime :class:`FeatureExtractor` is
    (``InferenceSession.run`` is thread-safe, and each call binds its own buffers). Anything else (the torch
    engine, a user's object) is called by one thread at a time.
    """
    declared = getattr(extractor, "thread_safe", None)
    if isinstance(declared, bool):
        return declared
    runtime = sys.modules.get("fidkit.inception.runtime")
    return runtime is not None and type(extractor) is getattr(runtime, "FeatureExtractor", None)


class _RebuiltExtractor:
    """Stands for a fidkit extractor in a pickled :class:`FID`: rebuilt from its weights on first use.

    An onnxruntime session (or a torch model on a GPU) cannot be pickled; what made it can: the weights file,
    the device, the batch size, the engine and the precision. The rebuilt extractor must have the same weights
    sha256 as the original, or it is refused.
    """

    def __init__(self, extractor: Any, engine: str) -> None:
        self.weights_path = extractor.weights_path
        self.weights_sha256 = str(extractor.weights_sha256)
        self.device = str(extractor.device)
        self.batch_size = int(extractor.batch_size)
        self.precision = str(extractor.precision)
        self.engine = engine
        self._lock = threading.Lock()
        self._built: Any = None

    def built(self) -> Any:
        with self._lock:
            if self._built is None:
                from fidkit.inception.select import build_feature_extractor

                extractor = build_feature_extractor(
                    self.weights_path, device=self.device, batch_size=self.batch_size, engine=self.engine,
                    precision=self.precision,
                )
                if str(extractor.weights_sha256) != self.weights_sha256:
                    raise FidkitError(
                        f"the unpickled FID's extractor was made from weights {self.weights_path} with sha256 "
                        f"{self.weights_sha256[:16]}..., which now has sha256 {str(extractor.weights_sha256)[:16]}...; "
                        "the file changed since the FID was pickled: restore it, or make a new FID"
                    )
                self._built = extractor
            return self._built

    @property
    def thread_safe(self) -> bool:
        return _thread_safe(self.built())

    def __call__(self, images: Any) -> Any:
        return self.built()(images)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_lock", "_built"):
            raise AttributeError(name)
        return getattr(self.built(), name)

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key not in ("_lock", "_built")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._built = None


def _picklable_extractor(extractor: Any) -> Any:
    """`extractor` itself, or a :class:`_RebuiltExtractor` for fidkit's own (which hold unpicklable sessions)."""
    if isinstance(extractor, _RebuiltExtractor):
        return extractor
    runtime = sys.modules.get("fidkit.inception.runtime")
    torch_engine = sys.modules.get("fidkit.inception.torch_engine")
    if runtime is not None and isinstance(extractor, getattr(runtime, "FeatureExtractor", ())):
        return _RebuiltExtractor(extractor, "onnxruntime")
    if torch_engine is not None and isinstance(extractor, getattr(torch_engine, "TorchFeatureExtractor", ())):
        return _RebuiltExtractor(extractor, "torch")
    return extractor


def _given_extractor(holder: Any) -> Any:
    """The extractor the caller gave the metric, if any, from the object that builds it lazily."""
    return getattr(holder, "given", None)  # fidkit.extractors.LazyExtractor


def _built_extractor(holder: Any) -> Any:
    """The extractor the lazy holder has built (or was given), without building one."""
    for name in ("_extractor", "_built"):
        if vars(holder).get(name) is not None:
            return vars(holder)[name]
    return None


def _without_session(holder: Any) -> Any:
    """A shallow copy of the lazy extractor holder that holds no built extractor: it builds one again on first use.

    A given extractor is kept, as :func:`_picklable_extractor` makes it (one of fidkit's: rebuilt from its weights).
    """
    clone = copy.copy(holder)
    given = _given_extractor(holder)
    replacement = None if given is None else _picklable_extractor(given)
    for name in ("_extractor", "_built", "given"):
        if name in vars(clone):
            setattr(clone, name, replacement)
    return clone


def _describe_input(source: Any) -> str:
    """A short name of an opened reference source, for messages."""
    return str(getattr(source, "name", type(source).__name__))


# The fingerprint of each reference, with the arrays it was computed from (hashing sigma takes about 50 ms at
# dim 2048, once per reference instead of once per compute()).
_FINGERPRINTS: weakref.WeakKeyDictionary[Stats, tuple[np.ndarray, np.ndarray, str]] = weakref.WeakKeyDictionary()


def _reference_fingerprint(stats: Stats) -> str:
    """``n`` and the sha256 of the reference's mu and sigma: ranks compare it instead of the statistics."""
    known = _FINGERPRINTS.get(stats)
    if known is not None and known[0] is stats.mu and known[1] is stats.sigma:
        return known[2]
    digest = hashlib.sha256()
    digest.update(f"{stats.dim}:{stats.n}:".encode())
    digest.update(np.ascontiguousarray(stats.mu).data)
    digest.update(np.ascontiguousarray(stats.sigma).data)
    fingerprint = f"n = {stats.n}, sha256 {digest.hexdigest()[:16]}"
    _FINGERPRINTS[stats] = (stats.mu, stats.sigma, fingerprint)
    return fingerprint


def _ranks(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(str(rank) for rank in ranks)


def _by_value(values: list[Any]) -> str:
    """``"rank 0: a; ranks 1, 2: b"``: which ranks hold which value (None: ranks that hold nothing)."""
    groups: dict[str, list[int]] = {}
    for rank, value in enumerate(values):
        groups.setdefault("nothing" if value is None else str(value), []).append(rank)
    return "; ".join(f"{_ranks(ranks)}: {value}" for value, ranks in groups.items())


def _merged_identity(label: str, metadata: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's metadata for every rank: from the ranks that have any, refusing feature spaces that differ.

    A rank that fed no images has no metadata: it takes the others' (so that every rank then makes the same
    checks against the real side, and reaches the same decision). Keys that differ but do not name the feature
    space (the provider, say) are dropped.
    """
    holders = [(rank, entry) for rank, entry in enumerate(metadata) if entry]
    for key in _IDENTITY_KEYS:
        values = {str(entry[key]) for _, entry in holders if key in entry}
        if len(values) > 1:
            shown = [entry.get(key) if entry else None for entry in metadata]
            shown = [value[:16] + "..." if isinstance(value, str) and len(value) > 24 else value for value in shown]
            raise FidkitError(
                f"FID.compute(): the ranks' {label} features come from different feature extractors: {key} differs "
                f"({_by_value(shown)}); their statistics cannot be merged: give every rank the same weights, "
                "engine and precision"
            )
    if not holders:
        return {}
    merged = dict(holders[0][1])
    for _, entry in holders[1:]:
        merged = {key: value for key, value in merged.items() if entry.get(key) == value}
    return merged


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
        self._extractor.probe()  # an impossible GPU fails here, not at the first update() hours into training
        self._init_locks()

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
        extractor = self._shared_extractor()
        # The network runs outside the side's lock (concurrently, for a thread-safe extractor); its features are
        # then added under the lock, all at once, so that no update from another thread is lost.
        collected = _Collected()
        with contextlib.nullcontext() if _thread_safe(extractor) else self._call_lock:
            times = extract([batch], extractor, collected)
        metadata = {key: value for key, value in extractor.metadata().items() if value is not None}
        side.add(collected.batches, times.network_seconds, metadata)

    def _update_features(self, features: Any, real: bool = False) -> None:
        """Add Inception features directly (tests and benchmarks; :meth:`update` is this after the network)."""
        self._side(real).update(features)

    def _shared_extractor(self) -> Any:
        """The extractor, built once even when several threads call :meth:`update` at the same time."""
        with self._lock:
            return self._extractor.get()

    # ----------------------------------------------------------------------------------------- copies

    def _init_locks(self) -> None:
        # _lock: building the extractor, and one compute() at a time; _call_lock: one network call at a time
        # for an extractor that is not thread-safe. Neither is copied or pickled.
        self._lock = threading.RLock()
        self._call_lock = threading.Lock()

    def _state(self) -> dict[str, Any]:
        """What a copy holds: everything but the locks and the process group (a copy makes its own)."""
        with self._lock:
            state = {key: value for key, value in self.__dict__.items() if key not in ("_lock", "_call_lock")}
        state["_gloo_group"] = None
        return state

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the state (accumulators, reference statistics, options), never an onnxruntime session.

        The extractor is built again on first use after unpickling (one of fidkit's that was given is rebuilt
        from its weights file, which must still have the same sha256).
        """
        state = self._state()
        state["_extractor"] = _without_session(state["_extractor"])
        if self._reference is not None:
            # Its statistics are what the metric uses from now on; the opened source (a folder's listing, which
            # holds functions) need not travel, and a Stats input gives them back through the same pipeline.
            state["_reference_input"] = self._reference[0]
        elif self._reference_input is not None and not isinstance(self._reference_input, Stats):
            try:
                pickle.dumps(self._reference_input)
            except Exception as exc:  # noqa: BLE001 - whatever the source holds that pickle refuses
                raise FidkitError(
                    f"this FID cannot be pickled yet: its reference ({_describe_input(self._reference_input)}) is an "
                    f"opened source that pickle refuses ({type(exc).__name__}: {exc}); call compute() once first "
                    "(the reference's statistics are pickled then), or give reference= a statistics file or a Stats"
                ) from None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_locks()

    def __deepcopy__(self, memo: dict[int, Any]) -> FID:
        """An independent copy of the state; the built extractor is shared, not copied (it is never changed)."""
        extractor = _built_extractor(self._extractor)
        if extractor is not None:
            memo[id(extractor)] = extractor
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        clone.__setstate__(copy.deepcopy(self._state(), memo))
        return clone

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
            Distributed: a rank did not call ``compute()`` within `timeout` seconds (the process group is then
            unusable: re-create it), or the ranks disagree (different references, different feature extractors).

        Notes
        -----
        Thread-safe: one ``compute()`` at a time, each on the statistics of the updates that finished before it.
        """
        with self._lock:
            return self._compute(timeout)

    def _compute(self, timeout: float) -> FidReport:
        """:meth:`compute`, under the metric's lock."""
        started = time.perf_counter()
        reference = self._reference_statistics()
        dist = _process_group()
        if dist is None:
            if reference is None:
                self._local_statistics(self._real)
            self._local_statistics(self._generated)
        else:
            self._gather(dist, timeout, reference)
        # Which statistics the report would describe: unchanged since the last compute(), it is that report.
        key = (self._real.stats_serial, self._generated.stats_serial)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        # From here the sides are new: an error below (a weights mismatch, Ctrl-C) must not leave the previous
        # report standing as if it described them.
        self._last = None
        real_stats, real_side = reference if reference is not None else self._side_report(self._real)
        generated_stats, generated_side = self._side_report(self._generated)
        # The checks and warnings of compute_fid: different weights are an error, lossy or skipped inputs a note.
        messages = consistency_warnings(real_side, generated_side, allow_weights_mismatch=False)
        for message in messages:
            warnings.warn(message, FidkitWarning, stacklevel=3)  # the caller of compute()
        distance_started = time.perf_counter()
        frechet = fid_from_stats(real_stats, generated_stats)
        timings = Timings(
            decode_seconds=0.0,
            network_seconds=self._real.network_seconds + self._generated.network_seconds,
            distance_seconds=time.perf_counter() - distance_started,
            total_seconds=time.perf_counter() - started,
        )
        report = assemble_fid_report(frechet, real_side, generated_side, messages, timings)
        self._last = (key, report)
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
        with side.lock:
            if side.stats is not None and side.stats_version == side.version:
                return
            n = side.accumulator.n
            if n < 2:
                raise self._too_few(side, n)
            side.set_stats(side.accumulator.result(metadata=side.metadata), side.version)

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
        world_group = _default_group(dist)
        if self._gloo_group is None or getattr(self, "_gloo_parent", None) is not world_group:
            # NCCL cannot run monitored_barrier nor carry host arrays: a gloo group over the same ranks does
            # (made again when the default group was re-created).
            self._gloo_group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout))
            self._gloo_parent = world_group
        return self._gloo_group

    def _collective(self, dist: Any, what: str, call: Any) -> Any:
        """Run one collective; a failure (a rank that died, a broken connection) breaks the group for good."""
        try:
            return call()
        except RuntimeError as exc:
            reason = f"{what} failed on rank {dist.get_rank()} (torch.distributed: {str(exc).strip()[:500]})"
            _mark_broken(dist, reason)
            raise FidkitError(
                f"FID.compute(): {reason}; the process group cannot be used after this: {_RECREATE}"
            ) from exc

    def _gather(self, dist: Any, timeout: float, reference: tuple[Stats, Any] | None) -> None:
        """Combine every rank's sides exactly, after checking that the ranks measure the same thing.

        Every rank ends with the same statistics, or raises the same error: each check below looks at what
        every rank sent, never at this rank alone.
        """
        import torch

        world = dist.get_world_size()
        rank = dist.get_rank()
        _check_not_broken(dist, rank, world)
        try:
            group = self._group(dist, timeout)
            dist.monitored_barrier(group=group, timeout=timedelta(seconds=timeout), wait_all_ranks=True)
        except RuntimeError as exc:
            reason = f"not every rank called compute() within {timeout:g} s (torch.distributed: {str(exc).strip()})"
            _mark_broken(dist, f"an earlier compute() timed out: {reason}")
            raise FidkitError(
                f"FID.compute() on rank {rank} of {world}: {reason}; every rank must call compute(), also when "
                f"only rank 0 uses the value. The process group cannot be used after this: {_RECREATE}; if a "
                "rank is only slow, pass a larger timeout= to compute() then"
            ) from exc
        has_reference = reference is not None
        sides = [self._generated] if has_reference else [self._real, self._generated]
        header = {
            "reference": _reference_fingerprint(reference[0]) if reference is not None else None,
            "dim": next((s.accumulator.dim for s in sides if s.accumulator.dim is not None), 0),
            "changed": [s.version != s.stats_version or s.stats is None for s in sides],
            "metadata": [dict(s.metadata) for s in sides],
        }
        headers: list[Any] = [None] * world
        self._collective(dist, "exchanging what each rank holds", lambda: dist.all_gather_object(headers, header, group=group))
        references = [entry["reference"] for entry in headers]
        if len(set(references)) > 1:
            if None in references:
                raise FidkitError(
                    f"FID.compute(): some ranks have a reference and others do not ({_by_value(references)}); "
                    "give every rank the same reference"
                )
            raise FidkitError(
                f"FID.compute(): the ranks hold different reference statistics ({_by_value(references)}); their "
                "FIDs would differ: give every rank the same reference (the same statistics file)"
            )
        known_dims = {int(entry["dim"]) for entry in headers if entry["dim"]}
        if len(known_dims) > 1:
            raise FidkitError(
                f"FID.compute(): the ranks hold features of different dimensions "
                f"({_by_value([entry['dim'] or None for entry in headers])})"
            )
        merged_metadata = [
            _merged_identity(side.label, [entry["metadata"][index] for entry in headers])
            for index, side in enumerate(sides)
        ]
        changed = np.array([entry["changed"] for entry in headers]).any(axis=0)
        if not changed.any() and self._last is not None and all(s.stats is not None for s in sides):
            return
        dim = known_dims.pop() if known_dims else 0
        for side, side_changed, metadata in zip(sides, changed, merged_metadata):
            if not side_changed and side.stats is not None:
                continue
            if dim == 0:
                raise self._too_few(side, 0)
            with side.lock:  # the moments and the version they belong to, together
                version = side.version
                n, mean, m2 = side.accumulator.moments() if side.accumulator.n else (0, np.zeros(dim), np.zeros((dim, dim)))
            packed = torch.from_numpy(np.concatenate([[float(n)], mean, m2.reshape(-1)]))
            gathered = [torch.empty_like(packed) for _ in range(world)]
            self._collective(dist, "gathering the statistics", lambda: dist.all_gather(gathered, packed, group=group))
            # Merged in rank order with the accumulator's exact pairwise update: the same bits on every rank.
            merged = StatsAccumulator(dim)
            for item in gathered:
                values = item.numpy()
                merged.merge(
                    StatsAccumulator.from_moments(int(values[0]), values[1 : 1 + dim], values[1 + dim :].reshape(dim, dim))
                )
            if merged.n < 2:
                raise self._too_few(side, merged.n)
            # The metadata merged from every rank that has some: the same on every rank, so the checks against
            # the real side (different weights are an error) reach the same decision everywhere.
            side.set_stats(merged.result(metadata=metadata), version)


_RECREATE = (
    "call torch.distributed.destroy_process_group() and init_process_group() again on every rank before the next "
    "compute()"
)


def _default_group(dist: Any) -> Any:
    """The default process group object (a new one after destroy_process_group() and init_process_group())."""
    return getattr(dist.group, "WORLD", None)


def _mark_broken(dist: Any, reason: str) -> None:
    with _BROKEN_GROUPS_LOCK:
        _BROKEN_GROUPS.append((_default_group(dist), reason))


def _check_not_broken(dist: Any, rank: int, world: int) -> None:
    """Refuse at once a process group on which an earlier compute() timed out or failed."""
    world_group = _default_group(dist)
    with _BROKEN_GROUPS_LOCK:
        reasons = [reason for group, reason in _BROKEN_GROUPS if group is world_group]
    if reasons:
        raise FidkitError(
            f"FID.compute() on rank {rank} of {world}: the process group is unusable: {reasons[-1]}; torch.distributed "
            f"does not recover a group after a timed-out or failed collective, so waiting longer cannot help: {_RECREATE}"
        )
