"""The one loop of the package that turns image batches into features and hands them to their sinks.

:func:`extract` is step 3 of the pipeline (:mod:`fidkit.pipeline`), the body of :meth:`fidkit.FID.update`,
and what each actor of a Ray cluster runs on its shard (:mod:`fidkit.cluster.shards`). It knows batches, an
extractor and sinks (anything with ``update(features)``: a :class:`~fidkit.stats.StatsAccumulator` reduces
the rows to statistics, a :class:`~fidkit.features.FeatureRows` keeps them), nothing about sources, caches
or reports. A sink that names more ``outputs`` than ``"features"`` (a ``FeatureRows`` keeping the logits, say)
makes the loop ask the extractor for all of them from the same forward pass (``extractor.outputs``) and receives
them through ``update_outputs``.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fidkit._streams import progress_bar
from fidkit._validate import check_extracted, check_features
from fidkit.errors import InputError

__all__ = ["ExtractionTimes", "extract"]


@dataclass
class ExtractionTimes:
    """Seconds spent waiting for batches (decoding the network did not hide) and in the network; and, of those, the
    first batch's: its wait includes the decoding workers' start, its network call a GPU's plan search for the
    batch shape (cuDNN's, or TensorRT's engine build), one-off costs that a slow start is explained by."""

    decode_seconds: float = 0.0
    network_seconds: float = 0.0
    first_wait_seconds: float = 0.0
    first_batch_seconds: float = 0.0


def _short_name(name: str, width: int = 32) -> str:
    """The end of a long source name, which is the informative part of a path, for the progress bar."""
    return name if len(name) <= width else "..." + name[-(width - 3):]


def extract(
    batches: Iterable[np.ndarray],
    extractor: Any,
    *sinks: Any,
    total: int | None = None,
    desc: str = "",
    progress: bool | None = False,
    overlap: bool | None = None,
) -> ExtractionTimes:
    """Step 3: features of every batch, handed to each of `sinks`; the one such loop of the package.

    Parameters
    ----------
    batches : iterable of numpy.ndarray
        Image batches as the extractor takes them. A generator is closed at the end, on an error or on
        Ctrl-C too, so that decoding workers stop at once.
    extractor : FeatureExtractor
        Maps a batch to its ``(B, dim)`` float32 features. Always called from the calling thread.
    *sinks : objects with ``update(features)``
        Each receives every ``(B, dim)`` float32 batch of features, in order; a sink with an ``outputs``
        attribute naming other outputs too receives them all through ``update_outputs(dict)``.
    total, desc, progress
        The progress bar (tqdm, on stderr): expected images, label, and whether to show it (None: only
        when stderr is a terminal).
    overlap : bool or None
        Hand the features to the sinks in a second thread, so that the next batch's network call does not wait
        for them (a float64 product per batch for the statistics: 40 ms at 200 x 2048 on 2 cores, a GPU's
        batch takes about 100 ms). The sinks get the same batches in the same order, one at a time, so the
        numbers are those of ``overlap=False``; at most two batches of features wait for them. None
        (default): when the extractor runs on a GPU (its ``on_gpu`` attribute); on the CPU the network keeps
        every core busy and the sinks are about 1 % of a batch.

    Returns
    -------
    ExtractionTimes
        Waiting for batches, and time in the network, both in the calling thread.
    """
    outputs = _outputs_of(sinks, extractor)
    times = ExtractionTimes()
    if overlap is None:
        overlap = bool(getattr(extractor, "on_gpu", False))
    iterator = iter(batches)
    first = True
    widths: dict[str, int] = {}  # each output's width, from the first batch: every later one must have it
    try:
        with progress_bar(
            progress, total=total, desc=_short_name(desc), unit="img", leave=False, dynamic_ncols=True,
        ) as bar, _Delivery(sinks, bar, in_thread=overlap) as delivery:
            while True:
                tick = time.perf_counter()
                try:
                    batch = next(iterator)
                except StopIteration:
                    break
                tock = time.perf_counter()
                given = {"features": extractor(batch)} if outputs is None else extractor.outputs(batch, outputs)
                network_seconds = time.perf_counter() - tock
                if first:
                    times.first_wait_seconds, times.first_batch_seconds, first = tock - tick, network_seconds, False
                times.network_seconds += network_seconds
                times.decode_seconds += tock - tick
                _check_outputs(given, outputs, len(batch), extractor, widths)  # before any sink takes them
                delivery.put(given, len(batch))
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    return times


def _check_outputs(
    given: Any, names: tuple[str, ...] | None, n_images: int, extractor: Any, widths: dict[str, int]
) -> None:
    """Refuse, at the batch that breaks it, what the extractor returned for a batch of `n_images` images: a mapping
    (from ``outputs()``) holding ``"features"`` and every output in `names`, each ``(n_images, width)`` finite and
    real-valued, with the width of the first batch (`widths`, filled here). Found only when the rows are joined
    at the end, a bad batch was an internal error after the whole network pass.
    """
    kind = type(extractor).__name__
    fix = "fix its __call__" if names is None else (
        "fix its outputs(): it must return a dict holding every name asked for, each a (B, width) float array with "
        "one row per image of the batch and the same width in every batch (fidkit.extractors.Extractor)"
    )
    if not isinstance(given, Mapping):
        raise InputError(
            f"the feature extractor {kind}.outputs() returned {type(given).__name__} for a batch of "
            f"{n_images} image(s), not a dict of the outputs asked for ({', '.join(names or ())}): {fix}"
        )
    missing = [name for name in names or ("features",) if name not in given]
    if missing:
        raise InputError(
            f"the feature extractor {kind}.outputs() returned no {', '.join(map(repr, missing))} for a batch of "
            f"{n_images} image(s) (it returned {', '.join(map(repr, given)) or 'an empty dict'}): {fix}"
        )
    check_extracted(given["features"], n_images, extractor)  # the shape of the features, as __call__'s
    for name in names or ("features",):
        if name == "features":
            width = int(np.shape(given[name])[1])  # 2-D: checked just above
        else:
            try:  # 2-D, real-valued and finite (the features' values are checked by the statistics they feed)
                rows = check_features(given[name], f"the {name} that {kind}.outputs() returned")
            except InputError as exc:
                raise InputError(f"{exc}; {fix}") from None
            if rows.shape[0] != n_images:
                raise InputError(
                    f"the feature extractor {kind}.outputs() returned {rows.shape[0]} rows of {name} for a batch of "
                    f"{n_images} image(s): {fix}"
                )
            width = int(rows.shape[1])
        first = widths.setdefault(name, width)
        if width != first:
            raise InputError(
                f"the feature extractor {kind} returned {name} {width} wide for this batch of {n_images} image(s), "
                f"but {first} wide for the first batch: {fix}"
            )


class _Delivery:
    """Hands each batch's outputs to the sinks, in order: at once, or (`in_thread`) in one helper thread, at most
    two batches behind.

    Leaving the ``with`` block waits for the helper to finish what it holds; on an error (or Ctrl-C) in the
    calling thread it drops what has not started. An error in a sink reaches the calling thread at its next
    :meth:`put` or at the exit, whichever comes first.
    """

    _DONE = object()

    def __init__(self, sinks: tuple[Any, ...], bar: Any, in_thread: bool) -> None:
        self.sinks, self.bar = sinks, bar
        self.queue: queue.Queue | None = queue.Queue(maxsize=2) if in_thread else None
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        # Set by the helper as it leaves: waited on instead of join(), which after a Ctrl-C can return at once on
        # Python 3.11 while the thread still runs.
        self.finished = threading.Event()

    def __enter__(self) -> _Delivery:
        if self.queue is not None:
            self.thread = threading.Thread(target=self._run, name="fidkit-sinks", daemon=True)
            try:
                self.thread.start()
            except BaseException:  # Ctrl-C in start(): no __exit__ will stop the helper
                self.stop.set()
                raise
        return self

    def _deliver(self, given: dict[str, Any], n_images: int) -> None:
        for sink in self.sinks:
            if hasattr(sink, "update_outputs"):
                sink.update_outputs(given)
            else:
                sink.update(given["features"])
        self.bar.update(n_images)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    item = self.queue.get(timeout=0.1)  # polls `stop`: no _DONE is needed to end it
                except queue.Empty:
                    continue
                if item is self._DONE or self.stop.is_set():
                    return
                try:
                    self._deliver(*item)
                except BaseException as exc:  # noqa: BLE001 - handed to the calling thread, which raises it
                    self.error = exc
                    return
        finally:
            self.finished.set()

    def _raise_sink_error(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, given: dict[str, Any], n_images: int) -> None:
        if self.queue is None:
            self._deliver(given, n_images)
            return
        while True:  # a timeout, so that a failed helper (which takes nothing more) cannot block this thread
            self._raise_sink_error()
            try:
                self.queue.put((given, n_images), timeout=0.1)
                return
            except queue.Full:
                continue

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        if self.thread is None:
            return
        if kind is not None:
            self.stop.set()  # an error here: what the helper has not started is dropped
        try:
            while not self.finished.is_set():
                with contextlib.suppress(queue.Full):
                    self.queue.put(self._DONE, timeout=0.1)
                    break
            self.finished.wait()
        except BaseException:  # Ctrl-C while waiting: drop the rest, but let the update in progress end
            self.stop.set()
            self.finished.wait()  # one sink update at most; a second Ctrl-C leaves without it
            raise
        self.thread.join()
        if kind is None:
            self._raise_sink_error()
        elif self.error is not None and self.error is not error and error.__context__ is None:
            error.__context__ = self.error  # a sink failed too: shown under the error that ends the loop


def _outputs_of(sinks: tuple[Any, ...], extractor: Any) -> tuple[str, ...] | None:
    """Every output the sinks want, ``"features"`` first; None when that is the features alone (the plain call)."""
    wanted = dict.fromkeys(["features", *(name for sink in sinks for name in getattr(sink, "outputs", ()))])
    if len(wanted) == 1:
        return None
    if not callable(getattr(extractor, "outputs", None)):
        from fidkit.errors import InputError

        extra = ", ".join(name for name in wanted if name != "features")
        raise InputError(
            f"{type(extractor).__name__} gives features only, not {extra}: those come from the Inception extractor "
            "(extractor='inception-2015'), which computes them in the same forward pass"
        )
    return tuple(wanted)
