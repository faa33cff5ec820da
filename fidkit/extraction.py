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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np

__all__ = ["ExtractionTimes", "extract"]


@dataclass
class ExtractionTimes:
    """Seconds spent waiting for batches (decoding the network did not hide) and in the network."""

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
    """
    from tqdm.auto import tqdm

    outputs = _outputs_of(sinks, extractor)
    times = ExtractionTimes()
    iterator = iter(batches)
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
                tock = time.perf_counter()
                if outputs is None:
                    features = extractor(batch)
                    given = {"features": features}
                else:
                    given = extractor.outputs(batch, outputs)
                    features = given["features"]
                times.network_seconds += time.perf_counter() - tock
                times.decode_seconds += tock - tick
                for sink in sinks:
                    if hasattr(sink, "update_outputs"):
                        sink.update_outputs(given)
                    else:
                        sink.update(features)
                bar.update(len(batch))
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    return times


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
