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
import inspect
import threading
import time
import warnings
from typing import Any

import numpy as np

from fidkit._validate import check_value_range, is_torch_tensor, uint8_range_hint, unit_range_hint
from fidkit.errors import FidkitError, FidkitWarning, InputError
from fidkit.extraction import ExtractionTimes, extract
from fidkit.frechet import fid_from_stats
from fidkit.extractors import LazyExtractor, extractor_metadata
from fidkit.features import Features
from fidkit.options import RunOptions, check_names, check_options_for_object, run_options
from fidkit.pipeline import describe, open_input, side_result
from fidkit.preflight import check_against_run
from fidkit.report import FidReport, Timings, assemble_fid_report, check_comparable
from fidkit.stats import Stats
from fidkit.metric.batches import (
    device_batch, given_images, host_batch, quantized_reference, reads_device_tensors, reference_digest,
)
from fidkit.metric.distributed import DistributedMerge, _process_group, check_timeout
from fidkit.metric.state import (
    _absolute_reference,
    _built_extractor,
    _Collected,
    _describe_input,
    _ReferenceToOpen,
    _Side,
    _thread_safe,
    _unpicklable,
    _without_session,
)


__all__ = ["FID", "DEFAULT_TIMEOUT_SECONDS"]

#: How long :meth:`FID.compute` waits for every rank to reach it before it raises, in seconds.
DEFAULT_TIMEOUT_SECONDS = 600.0


def _metadata(extractor: Any) -> dict[str, Any]:
    """What made the features (None values left out): recorded by a side at its first update, checked after."""
    return extractor_metadata(extractor)  # one check of the Extractor protocol, as compute_stats's



class FID(DistributedMerge):
    """The Fréchet Inception Distance as a metric: feed images as they are generated, compute when needed.

    Parameters
    ----------
    reference : path-like, numpy.ndarray, Stats, optional
        The real side: anything :func:`fidkit.compute_stats` accepts (a statistics ``.npz``, a folder, an
        archive, a uint8 array, a :class:`~fidkit.stats.Stats`; floating-point arrays with `value_range`). It is
        opened here (a wrong path fails at once) and its statistics are computed or loaded on the first
        :meth:`compute`, through the statistics cache like any side of :func:`fidkit.compute_fid`, then kept: the
        square root of its covariance is factored once for every later :meth:`compute`. One rule for every
        in-memory reference: a uint8 numpy array, alone or as a batch of a list or tuple of batches (a uint8 tensor
        or array-like becomes one here, sharing its memory where it can), is not copied: it must hold the same
        images at the first :meth:`compute` as here (its sha256, taken here, is checked then, before the cache is
        asked and after the images are read; an :class:`~fidkit.errors.InputError` otherwise: pass ``x.copy()``
        for a buffer you reuse). Its images draw the value-range warnings of ``update(images, real=True)``
        (`value_range`), here. Without a reference, feed the real images with ``update(images, real=True)``.
    value_range : (float, float), optional
        The range of floating-point images, e.g. ``(-1, 1)`` for a tanh generator or ``(0, 1)``; they are
        quantized as an 8-bit PNG would be (:func:`fidkit._validate.as_image_batch`), and values beyond the
        range by more than half a step are an error, never clipped. It applies to :meth:`update`'s images and to a
        `reference` given as a floating-point array or tensor (or a list of them), which is quantized here, into
        the metric's own uint8 copy. uint8 images are used as they are, as 0..255 pixels; uint8 images fed to
        :meth:`update` whose values all lie in a range other than ``(0, 255)``, e.g. 0s and 1s under ``(0, 1)``,
        draw one :class:`~fidkit.errors.FidkitWarning` per metric (see :func:`fidkit._validate.uint8_range_hint`).
        Floating-point images that all lie in [0, 1] while the range is 255 wide or more, e.g. ``(0, 255)`` (they
        quantize to 1 or 2 levels), or reaches well below 0, e.g. ``(-1, 1)`` (black becomes mid-gray), draw one
        :class:`~fidkit.errors.FidkitWarning` per metric (see :func:`fidkit._validate.unit_range_hint`).
    options : RunOptions, optional
        The run's settings as one object (:class:`fidkit.RunOptions`); keyword arguments override its fields.
    extractor : str or extractor object, optional
        A registered extractor name (default ``"inception-2015"``), or a built extractor to share with other
        computations (the reference's, say). An object runs as it was built: `weights`, `convention`, `dims`,
        `device`, `engine`, `precision` and `threads`, given explicitly, must say what it does (an ``InputError``
        otherwise, as in :func:`fidkit.compute_stats`); :meth:`update` hands it each batch as given, and a
        reference of images is read in batches of its own `batch_size` (or `batch_size`, where smaller).
    metrics : str or sequence of str
        Besides the FID (default: the FID alone): ``"kid"``, ``"is"``, ``"sfid"``, ``"prdc"`` or ``"all"``, as
        :func:`fidkit.compute_fid`; :meth:`compute`'s report then holds them in ``report.metrics``. The sides then
        keep what those metrics need, in memory: 8 KB per image for the feature rows (KID, precision/recall, an
        FID interval), 4 KB more for the logits (IS), 8 KB more for the spatial features (sFID): 50,000
        generated images with every metric hold about 1 GB. Under ``torch.distributed`` each rank keeps its
        own share and :meth:`compute` gathers every rank's rows to every rank (the same table everywhere; that
        many bytes cross the process group at each compute that follows new images); every rank must ask for
        the same metrics, `ci` and `metrics_seed` (:meth:`compute` refuses otherwise, on every rank).
    ci : fidkit.metrics.IntervalSpec, optional
        An interval for every asked metric.
    metrics_seed : int
        The metrics' one seed (KID subsets, IS splits, the intervals): an integer from 0 to 2**32 - 1, checked here.
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
        metrics: Any = ("fid",),
        ci: Any = None,
        metrics_seed: int = 0,
        **overrides: Any,
    ) -> None:
        from fidkit.metrics._common import check_seed
        from fidkit.metrics.request import outputs_to_keep, table_request

        # A misspelt keyword (metric=) lists FID's own keywords and the closest, as compute_fid's does.
        check_names(overrides, function="FID", own=_FID_KEYWORDS)
        self._asked, self._ci = table_request(metrics, ci)
        # Checked as compute_fid checks it, now: not at the first compute(), after the network time.
        self._metrics_seed = check_seed(metrics_seed, "metrics_seed")
        self._value_range = check_value_range(value_range)
        if isinstance(extractor, str):
            overrides["extractor"] = extractor
            extractor = None
        overrides.setdefault("progress", False)  # a training loop prints its own progress
        overrides = check_options_for_object(extractor, options, overrides)  # as compute_stats: it runs as built
        self._options = run_options(options, **overrides)
        self._extractor = LazyExtractor(self._options, given=extractor)
        reference, given = quantized_reference(reference, self._value_range)
        self._reference_digest = reference_digest(reference)  # its batches' arrays, kept by the caller
        self._reference_input = None if reference is None else open_input(reference, self._options)
        # What the caller gave: what a checkpoint taken before the first compute() keeps (see __getstate__), a
        # relative path made absolute now: an unpickled copy reopens it in whatever directory it runs in then.
        self._reference_spec = _absolute_reference(reference)
        # A reference file made by another network is refused at the first update(), before the network runs, not
        # at the first compute() (its check needs the weights' sha256, which constructing the metric does not).
        self._reference_unchecked = self._reference_input is not None
        if self._asked is not None:
            from fidkit.metrics.request import check_available

            # A statistics reference cannot serve KID and the like: said now, not at the first compute().
            check_available(self._asked, self._ci, {"a": None, "b": self._reference_input})
        # The evaluated side (a) is the generated one; the reference (b) is the real one (statistics keep nothing).
        sides = {"a": None, "b": self._reference_input}
        kept = outputs_to_keep(self._asked, self._ci, sides) if self._asked else {"a": None, "b": None}
        self._reference: tuple[Stats, Any] | None = None
        self._reference_features: Any = None
        self._real = _Side("real", kept["b"])
        self._generated = _Side("generated", kept["a"])
        self._last: tuple[tuple[int, int], FidReport] | None = None
        self._gloo_group: Any = None
        self._unit_range_warned = False  # the [0, 1]-images-declared-(0, 255)-or-(-1, 1) warning: once per metric
        self._uint8_range_warned = False  # the uint8-images-with-another-value_range warning: once per metric
        for images, what in given:  # the warnings update(real=True) would give these images, once per metric
            self._warn_value_range(images, what, stacklevel=3)  # the caller of FID()
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
            A bad batch (see :func:`fidkit._validate.as_image_batch`), ``real=True`` with a reference, an
            extractor whose features are not ``(N, feature_dim)``, or one whose identity (weights sha256,
            convention, engine, precision, ...) differs from the one that made the side's features so far (an
            unpickled FID rebuilds its network from ``$FIDKIT_WEIGHTS``: if that names other weights now, point it
            back, or :meth:`reset`).

        Warns
        -----
        FidkitWarning
            Once per metric: floating-point images all in [0, 1] with a `value_range` such as ``(0, 255)`` or
            ``(-1, 1)``. Once per metric: uint8 images whose values all lie in a `value_range` other than
            ``(0, 255)`` (they are used as they are, as 0..255 pixels; the range applies to floating-point images).
        """
        side = self._side(real)
        what = f"FID.update({'real=True' if real else 'generated'}) images"
        images = given_images(images, what)  # an array-like read once, and looked at as the array it is
        batch = device_batch(images, what, self._value_range)
        self._warn_value_range(images, what, stacklevel=3)  # the caller of update()
        extractor = self._shared_extractor()
        self._check_reference()  # against the network just built, before it runs
        if is_torch_tensor(batch) and not reads_device_tensors(extractor):
            # Only fidkit's own engines read a CUDA tensor where it lies; any other extractor is promised the
            # host uint8 (B, H, W, 3) array of the Extractor protocol.
            batch = host_batch(batch)
        # Checked before the network runs (an unpickled FID's rebuilt network may be another one), and again as
        # the features are added (under the side's lock).
        side.check_extractor(_metadata(extractor))
        # The network runs outside the side's lock (concurrently, for a thread-safe extractor); its features are
        # then added under the lock, all at once, so that no update from another thread is lost.
        collected = _Collected(side.outputs)
        with contextlib.nullcontext() if _thread_safe(extractor) else self._call_lock:
            times = extract([batch], extractor, collected, overlap=False)  # one batch: nothing to overlap
        side.add(collected.batches, times.network_seconds, _metadata(extractor))

    def _warn_value_range(self, images: Any, what: str, stacklevel: int) -> None:
        """The value-range warnings of the images of :meth:`update` and of the reference, each once per metric:
        float images declared (0, 255) or (-1, 1) (or alike) that all lie in [0, 1]; uint8 images that hold values
        of a value_range other than (0, 255), which they ignore. `stacklevel` as warnings.warn's, from this method."""
        if self._value_range is None:
            return
        for flag, hint_of in (("_unit_range_warned", unit_range_hint), ("_uint8_range_warned", uint8_range_hint)):
            hint = None if getattr(self, flag) else hint_of(images, self._value_range, what)
            if hint is not None:
                setattr(self, flag, True)
                warnings.warn(hint, FidkitWarning, stacklevel=stacklevel)

    def _update_features(self, features: Any, real: bool = False) -> None:
        """Add Inception features directly (tests and benchmarks; :meth:`update` is this after the network)."""
        self._side(real).update(features)

    def _check_reference(self) -> None:
        """Once: the reference, if a statistics or features file, against this metric's network (the generated
        side is always images, through it): :func:`fidkit.preflight.check_against_run`. Not under
        torch.distributed: a rank refusing alone would leave the others waiting in compute(), where every rank
        refuses together (the ranks' side reports are compared there)."""
        if not self._reference_unchecked:
            return
        with self._lock:
            if self._reference_unchecked and _process_group() is None:
                check_against_run(
                    {"the reference": self._reference_input, "the generated images": None}, self._extractor,
                    self._options, offer_allow=False,
                )
                self._reference_unchecked = False

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
        from its weights file, which must still have the same sha256; once that file is gone, from
        ``$FIDKIT_WEIGHTS`` or the weights cache if they hold the same sha256). A reference of images whose
        statistics are not computed yet is pickled as it was given (a path, an array) and opened again by the
        first compute() after unpickling; one that cannot be pickled (a generator) is refused.
        """
        state = self._copied_state()
        state["_extractor"] = _without_session(state["_extractor"])
        state["_reference_spec"] = None  # kept in the _ReferenceToOpen below when needed, else not at all
        reference = self._reference_input
        if self._reference is None:
            self._check_reference_array()  # a checkpoint keeps the array as it is now: the one given, or an error
        if self._reference is None and reference is not None and not isinstance(reference, (Stats, Features)):
            # An opened source holds functions (a folder's listing, an array's reader): what it was opened from
            # is pickled instead.
            spec = reference.spec if isinstance(reference, _ReferenceToOpen) else self._reference_spec
            problem = _unpicklable(spec)
            if problem is not None:
                raise self._uncopyable_reference("pickled", problem)
            state["_reference_input"] = _ReferenceToOpen(spec, _describe_input(reference))
        return state

    def _copied_state(self) -> dict[str, Any]:
        """:meth:`_state` with the reference as a copy needs it: once computed, its statistics (and kept rows),
        not the opened source (a folder's listing, which holds functions; an array, copied whole; a generator,
        which cannot be copied at all). A Stats input gives them back through the same pipeline."""
        state = self._state()
        if self._reference is not None:
            state["_reference_input"] = self._reference_features or self._reference[0]
            state["_reference_spec"] = None
        return state

    def _uncopyable_reference(self, how: str, exc: Exception) -> FidkitError:
        # A single-pass source a failed compute() has read from cannot be computed any more: no "compute() first".
        consumed = bool(getattr(self._reference_input, "_consumed", False))
        later = "" if consumed else (
            "; or call compute() once first, after feeding generated images with update() (the reference's "
            f"statistics are {how} then)"
        )
        return FidkitError(
            f"this FID cannot be {how} yet: its reference ({_describe_input(self._reference_input)}) is an "
            f"opened source that cannot be {how} ({type(exc).__name__}: {exc}); give reference= what can be: a "
            "path (folder, archive, .npy, statistics file), an array of images, a list of batches, or a Stats (the "
            f"result of fidkit.compute_stats on these images){later}"
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A metric pickled before the metrics beyond FID existed computes the FID alone.
        for name, default in (
            ("_asked", None), ("_ci", None), ("_metrics_seed", 0), ("_reference_features", None),
            ("_unit_range_warned", False), ("_reference_unchecked", False), ("_reference_spec", None),
            ("_uint8_range_warned", False), ("_reference_digest", None),
        ):
            state.setdefault(name, default)
        self.__dict__.update(state)
        self._init_locks()

    def __deepcopy__(self, memo: dict[int, Any]) -> FID:
        """An independent copy of the state; the built extractor is shared, not copied (it is never changed)."""
        extractor = _built_extractor(self._extractor)
        if extractor is not None:
            memo[id(extractor)] = extractor
        for given in (self._reference_spec, getattr(self._reference_input, "spec", None)):
            if isinstance(given, np.ndarray):
                memo[id(given)] = given  # the caller's array, never changed by the metric: shared, like its source
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        try:
            state = copy.deepcopy(self._copied_state(), memo)
        except TypeError as exc:  # a generator reference not computed yet
            raise self._uncopyable_reference("copied", exc) from None
        clone.__setstate__(state)
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
            Distributed only: seconds to wait for every rank to call ``compute()`` before raising; a positive finite
            number (checked on one process too).

        Returns
        -------
        FidReport
            ``float(report)`` is the FID; ``report.a`` is the real side, ``report.b`` the generated one.

        Raises
        ------
        InputError
            Fewer than 2 images on a side, no real side, a reference made with other Inception weights, or a
            `timeout` that is not a positive finite number (before any collective, on every rank).
        FidkitError
            Distributed: a rank did not call ``compute()`` within `timeout` seconds (the process group is then
            unusable: re-create it), or the ranks disagree (different references, different feature extractors).

        Notes
        -----
        Thread-safe: one ``compute()`` at a time, each on the statistics of the updates that finished before it.
        """
        timeout = check_timeout(timeout)
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
        messages = check_comparable(real_side, generated_side, allow_weights_mismatch=False)
        for message in messages:
            warnings.warn(message, FidkitWarning, stacklevel=3)  # the caller of compute()
        distance_started = time.perf_counter()
        frechet = fid_from_stats(real_stats, generated_stats)
        table = None
        if self._asked is not None:
            table = self._table(real_stats, generated_stats, frechet, distributed=dist is not None)
        timings = Timings(
            decode_seconds=0.0,
            network_seconds=self._real.network_seconds + self._generated.network_seconds,
            distance_seconds=time.perf_counter() - distance_started,
            total_seconds=time.perf_counter() - started,
        )
        report = assemble_fid_report(frechet, real_side, generated_side, messages, timings, metrics=table)
        self._last = (key, report)
        return report

    def _table(self, real_stats: Stats, generated_stats: Stats, frechet: Any, *, distributed: bool) -> Any:
        """The asked metrics of the generated side (a) against the real one (b), from the rows each side kept
        (under torch.distributed, every rank's, gathered in rank order: the same table on every rank); its FID
        is `frechet`, the report's, not computed again."""
        from dataclasses import replace

        from fidkit.metrics.table import evaluate

        def kept(side: _Side, stats: Stats) -> Any:
            if distributed:
                return replace(side.all_rows, metadata=stats.metadata) if side.all_rows is not None else stats
            return side.rows.result(metadata=stats.metadata) if side.rows is not None and side.rows.n else stats

        real = self._reference_features or kept(self._real, real_stats)
        # Side a of the table is the evaluated set (precision is the generated images' share on the real
        # manifold), the reverse of this report's a (real) and b: named in words, so the two cannot be confused.
        return evaluate(kept(self._generated, generated_stats), real, self._asked, ci=self._ci,
                        seed=self._metrics_seed, side_names=("generated", "real"), fid=frechet)

    def _reference_statistics(self) -> tuple[Stats, Any] | None:
        """The reference's statistics and side report, computed (or loaded) once through the pipeline."""
        if self._reference_input is None:
            return None
        if self._reference is None:
            if isinstance(self._reference_input, _ReferenceToOpen):  # unpickled before its first compute()
                self._reference_spec = self._reference_input.spec
                self._reference_input = open_input(self._reference_spec, self._options)
            # Before the cache is asked (which would answer for the images as they were given) and after the read
            # (which may have seen them change): either way the statistics are of the images given, or an error.
            self._check_reference_array()
            result = side_result(
                self._reference_input, self._extractor, self._options, keep_features=self._real.outputs or False
            )
            self._check_reference_array()
            self._reference, self._reference_features = (result.stats, result.report), result.features
        return self._reference

    def _check_reference_array(self) -> None:
        """Refuse a reference array (kept, not copied, until the first compute()) that no longer holds the images
        it held when the metric was created: its fingerprint (a sha256 of its bytes) against the one taken then."""
        source = self._reference_input
        if getattr(source, "in_memory", False) and source.opened_fingerprint is not None:
            changed = source.fingerprint(hash_content=False) != source.opened_fingerprint
        else:  # a list or tuple of batches: its arrays' sha256 (None for any other reference, never checked)
            given = getattr(source, "spec", self._reference_spec)  # unpickled: the copy's own batches
            changed = self._reference_digest is not None and reference_digest(given) != self._reference_digest
        if changed:
            raise InputError(
                f"FID's reference ({source.name}) changed since the metric was created: an array given as "
                "reference= (or as a batch of a list or tuple) is not copied (it may be large) and is read at the "
                "first compute(), and its bytes now differ from the ones given (sha256); keep it unchanged until "
                "then, or pass a copy (reference=x.copy(), [b.copy() for b in batches]) or its statistics "
                "(reference=fidkit.compute_stats(x, ...))"
            )

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


#: FID's own keyword-only parameters, besides the fields of RunOptions: what a misspelt keyword is compared with.
_FID_KEYWORDS = tuple(
    p.name for p in inspect.signature(FID.__init__).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
)
