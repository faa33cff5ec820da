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

import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np

__all__ = ["ExtractionTimes", "extract"]


@dataclass
class ExtractionTimes:
    """Seconds spent waiting for batches (decoding the network did not hide) and in the network (its calls' own
    time: with the network overlapped, the two may add up to more than the wall time)."""

    decode_seconds: float = 0.0
    network_seconds: float = 0.0


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
        Maps a batch to its ``(B, dim)`` float32 features.
    *sinks : objects with ``update(features)``
        Each receives every ``(B, dim)`` float32 batch of features, in order; a sink with an ``outputs``
        attribute naming other outputs too receives them all through ``update_outputs(dict)``.
    total, desc, progress
        The progress bar (tqdm, on stderr): expected images, label, and whether to show it (None: only
        when stderr is a terminal).
    overlap : bool or None
        Run the network on each host (numpy) batch in a second thread, the next batch queued behind it, while
        this thread hands the previous batch's features to the sinks and waits for the next batch: the GPU
        does not wait for the statistics and the decoding between batches. Each batch is copied before it is
        queued (a source may refill its buffer for the next one). The sinks get the same batches in the same
        order, so the numbers are those of ``overlap=False``. None (default): when the extractor runs on a GPU
        (its ``on_gpu`` attribute); on the CPU the network already keeps every core busy.

    Returns
    -------
    ExtractionTimes
        Waiting for batches, and the network's own time (summed over its calls, in whichever thread ran them).
    """
    from tqdm.auto import tqdm

    outputs = _outputs_of(sinks, extractor)
    times = ExtractionTimes()
    if overlap is None:
        overlap = bool(getattr(extractor, "on_gpu", False))

    def network(batch: Any) -> dict[str, Any]:
        tock = time.perf_counter()
        given = {"features": extractor(batch)} if outputs is None else extractor.outputs(batch, outputs)
        times.network_seconds += time.perf_counter() - tock
        return given

    def deliver(given: dict[str, Any], n_images: int) -> None:
        for sink in sinks:
            if hasattr(sink, "update_outputs"):
                sink.update_outputs(given)
            else:
                sink.update(given["features"])
        bar.update(n_images)

    iterator = iter(batches)
    # The network's thread (overlap only): one batch running, the next queued behind it. Only this thread
    # touches the iterator and the sinks; only the network thread (or this one, without overlap) the extractor.
    pool = ThreadPoolExecutor(1, thread_name_prefix="fidkit-network") if overlap else None
    in_flight: deque[tuple[Future, int]] = deque()
    try:
        with tqdm(
            total=total, desc=_short_name(desc), unit="img", disable=None if progress is None else not progress,
            leave=False, dynamic_ncols=True,
        ) as bar:
            while True:
                tick = time.perf_counter()
                try:
                    batch = next(iterator)
                except StopIteration:
                    break
                times.decode_seconds += time.perf_counter() - tick
                if pool is None or not _is_host_array(batch):
                    while in_flight:  # a device tensor runs here, after what is queued: order is kept
                        future, n_images = in_flight.popleft()
                        deliver(future.result(), n_images)
                    deliver(network(batch), len(batch))
                    continue
                in_flight.append((pool.submit(network, batch.copy()), len(batch)))
                if len(in_flight) == 2:
                    future, n_images = in_flight.popleft()
                    deliver(future.result(), n_images)
            while in_flight:
                future, n_images = in_flight.popleft()
                deliver(future.result(), n_images)
    finally:
        if pool is not None:
            # On an error or Ctrl-C: the queued batch is dropped, the running one finishes before this returns
            # (the extractor is never left running behind the caller's back).
            pool.shutdown(wait=True, cancel_futures=True)
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    return times


def _is_host_array(batch: Any) -> bool:
    """A numpy array (what the sources yield); a torch tensor, on the GPU maybe, runs in the calling thread (its
    CUDA stream is that thread's)."""
    import numpy as np

    return isinstance(batch, np.ndarray)


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
