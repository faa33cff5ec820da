"""The pipeline: one side's input becomes statistics, in four named steps.

    open_input  ->  look_up  ->  extract  ->  store
    (statistics     (the cache,   (batches ->     (the cache,
     or a source)    by key)       features ->     when the source
                                   accumulator)    did not change)

:func:`side_statistics` runs them in that order for one input; :func:`fidkit.compute_stats`,
:func:`fidkit.compute_fid` and the trainer all come through it. :func:`extract` is the one loop of the
package that turns image batches into features and features into a :class:`~fidkit.stats.StatsAccumulator`.

A :class:`~fidkit.stats.Stats` object or a statistics file is recognised here, in :func:`open_input`, and
nowhere else: it skips the other three steps, and then the network is never built.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fidkit import __version__
from fidkit._validate import check_batch_size, check_limit_seed
from fidkit.cache import cache_key, load_cached_stats, store_cached_stats, utc_now_iso
from fidkit.engines import check_engine
from fidkit.errors import EmptySourceError, FidkitWarning, InputError
from fidkit.sources import Source, open_source
from fidkit.stats import Stats, StatsAccumulator
from fidkit.statsfile import is_stats_file

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np

    from fidkit.inception import FeatureExtractor

__all__ = [
    "SideOptions",
    "SideReport",
    "Network",
    "build_extractor",
    "open_input",
    "look_up",
    "extract",
    "store",
    "side_statistics",
]

logger = logging.getLogger(__name__)

#: How many skipped files a statistics file names in its metadata (the count is always exact).
_MAX_SKIPPED_IN_METADATA = 20


@dataclass(frozen=True)
class SideOptions:
    """How one input becomes statistics (see :func:`fidkit.compute_stats` for each field)."""

    batch_size: int = 50
    workers: int | None = None
    skip_bad: bool = False
    limit: int | None = None
    seed: int | None = None
    use_cache: bool = True
    hash_content: bool = False
    exif_transpose: bool = False
    progress: bool | None = None
    engine: str = "local"
    ray_address: str | None = None

    def __post_init__(self) -> None:
        # Checked once here, before any input is opened or any network is built.
        object.__setattr__(self, "batch_size", check_batch_size(self.batch_size))
        object.__setattr__(self, "engine", check_engine(self.engine, self.ray_address))
        limit, seed = check_limit_seed(self.limit, self.seed)
        object.__setattr__(self, "limit", limit)
        object.__setattr__(self, "seed", seed)


@dataclass(frozen=True)
class SideReport:
    """How the statistics of one side were obtained.

    Attributes
    ----------
    name : str
        The source's name (a path, ``"array(...)"``, ``"batches from ..."``, ``"Stats"``).
    kind : str
        ``"folder"``, ``"archive"``, ``"array"``, ``"mnist"``, ``"cifar"``, ``"stats"`` or ``"batches"``.
    n : int or None
        Images in the statistics; None for a TTUR / pytorch-fid file that did not record it.
    cached : bool
        True when the statistics came from the statistics cache (the network did not run).
    lossy : bool
        True when the images include lossy (JPEG) files.
    skipped : tuple of (str, str)
        ``(file, reason)`` of the files skipped with ``skip_bad`` (as far as known; a cached or loaded
        side names at most 20).
    n_skipped : int
        How many files were skipped.
    foreign : bool
        True for a statistics file holding only ``mu`` and ``sigma`` (TTUR, pytorch-fid).
    weights_sha256, resize_mode, provider : str or None
        What the features were computed with, as recorded; None when unknown.
    decode_seconds : float
        Time spent waiting for decoded images (decoding overlaps with the network, so this is the part
        of decoding the network did not hide).
    network_seconds : float
        Time spent in the feature extractor.
    total_seconds : float
        Wall time for this side, opening and cache lookup included.
    """

    name: str
    kind: str
    n: int | None
    cached: bool
    lossy: bool
    skipped: tuple[tuple[str, str], ...]
    n_skipped: int
    foreign: bool
    weights_sha256: str | None
    resize_mode: str | None
    provider: str | None
    decode_seconds: float
    network_seconds: float
    total_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        data = dataclasses.asdict(self)
        data["skipped"] = [{"file": file, "reason": reason} for file, reason in self.skipped]
        return data

    def __str__(self) -> str:
        n_text = "N unknown" if self.n is None else f"N={self.n}"
        extras = [self.kind] + (["cached"] if self.cached else []) + (["lossy"] if self.lossy else [])
        if self.n_skipped:
            extras.append(f"{self.n_skipped} skipped")
        return f"{self.name} ({n_text}, {', '.join(extras)})"


def build_extractor(weights: Any, device: str, batch_size: int) -> FeatureExtractor:
    """Build the feature extractor: the one place the package does so (tests replace it to count calls)."""
    from fidkit.inception import FeatureExtractor

    return FeatureExtractor(weights, device=device, batch_size=batch_size)


class Network:
    """The feature extractor of a computation, built only when a side needs it.

    Building it exports or loads the ONNX graph and starts an onnxruntime session (seconds), so a
    comparison of two statistics files or two cache hits never builds it: the cache key needs only the
    weights' sha256 and the resize mode, which are known without the network.

    Parameters
    ----------
    extractor : FeatureExtractor, optional
        Use this one (then `weights` and `device` are not used).
    weights, device, batch_size
        What :func:`build_extractor` is given when the extractor is first needed.
    """

    def __init__(
        self, extractor: FeatureExtractor | None = None, *, weights: Any = None, device: str = "auto",
        batch_size: int = 50,
    ) -> None:
        self._extractor = extractor
        self._weights = weights
        self._device = device
        self._batch_size = batch_size
        self._identity: tuple[str, str] | None = None

    def identity(self) -> tuple[str, str]:
        """Return ``(weights_sha256, resize_mode)`` without building the extractor."""
        if self._extractor is not None:
            return str(self._extractor.weights_sha256), str(self._extractor.resize_mode)
        if self._identity is None:
            from fidkit.inception import RESIZE_MODE, locate_weights

            # Finds (or downloads) the file and hashes it: the same sha256 the extractor records.
            # The extractor, if built later, is handed this result instead of hashing the file again.
            resolved = locate_weights(self._weights)
            self._weights = resolved
            self._identity = (str(resolved.sha256), RESIZE_MODE)
        return self._identity

    @property
    def given_extractor(self) -> FeatureExtractor | None:
        """The extractor given or already built, if any (None: not built yet)."""
        return self._extractor

    def build_settings(self) -> tuple[Any, str, int]:
        """``(located weights, device, batch_size)``: what builds this extractor elsewhere (a Ray actor)."""
        self.identity()  # locates (and hashes) the weights once
        return self._weights, self._device, self._batch_size

    def extractor(self) -> FeatureExtractor:
        """The feature extractor, built on first use."""
        if self._extractor is None:
            self._extractor = build_extractor(self._weights, self._device, self._batch_size)
        return self._extractor


# --------------------------------------------------------------------------------------------- step 1: open


def open_input(spec: Any, options: SideOptions) -> Stats | Source:
    """Step 1: statistics as they are, or an opened source of images.

    A :class:`~fidkit.stats.Stats` is returned as is and a statistics ``.npz`` (keys ``mu`` and
    ``sigma``: fidkit, TTUR or pytorch-fid) is loaded: this is the one place the package decides that
    an input already is statistics. Anything else goes to :func:`fidkit.sources.open_source`.
    """
    if isinstance(spec, Stats):
        _warn_unused_subset("statistics object", options)
        return spec
    if isinstance(spec, (str, os.PathLike)) and is_stats_file(spec):
        _warn_unused_subset(str(spec), options)
        return Stats.load(spec)
    if options.engine == "ray" and isinstance(spec, str) and "://" in spec:
        from fidkit.engines.uri import is_uri, open_uri

        if is_uri(spec):  # s3://, gs://, ...: listed here, read by the actors
            return open_uri(
                spec, limit=options.limit, seed=options.seed, skip_bad=options.skip_bad,
                exif_transpose=options.exif_transpose, workers=options.workers,
            )
    return open_source(
        spec, limit=options.limit, seed=options.seed, skip_bad=options.skip_bad,
        exif_transpose=options.exif_transpose, workers=options.workers,
    )


def _warn_unused_subset(name: str, options: SideOptions) -> None:
    if options.limit is not None or options.seed is not None:
        warnings.warn(
            f"{name}: limit/seed do not apply to statistics; they are used as they are", FidkitWarning, stacklevel=4
        )


# --------------------------------------------------------------------------------------------- step 2: look up


@dataclass(frozen=True)
class CacheLookup:
    """What step 2 found: the key to store under (None: do not cache), the fingerprint, and a hit."""

    key: str | None
    fingerprint: str
    hit: Stats | None


def look_up(source: Source, network: Network, options: SideOptions) -> CacheLookup:
    """Step 2: the cached statistics of `source` under this network, if any.

    Only sources that can be fingerprinted (files, arrays) are cached. An entry made with ``skip_bad`` that
    did skip files does not stand in for a run that should stop at those files.
    """
    if not source.cacheable:
        return CacheLookup(None, "", None)
    fingerprint = source.fingerprint(hash_content=options.hash_content)
    if not options.use_cache:
        return CacheLookup(None, fingerprint, None)
    weights_sha256, resize_mode = network.identity()
    key = cache_key(fingerprint, weights_sha256=weights_sha256, resize_mode=resize_mode)
    cached = load_cached_stats(key)
    if cached is not None and (options.skip_bad or int(cached.metadata.get("n_skipped", 0)) == 0):
        logger.info("%s: statistics read from the cache (N = %s)", source.name, cached.n)
        return CacheLookup(key, fingerprint, cached)
    return CacheLookup(key, fingerprint, None)


# --------------------------------------------------------------------------------------------- step 3: extract


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
    extractor: FeatureExtractor,
    accumulator: StatsAccumulator,
    *,
    total: int | None = None,
    desc: str = "",
    progress: bool | None = False,
) -> ExtractionTimes:
    """Step 3: features of every batch, added to `accumulator`; the one such loop of the package.

    Parameters
    ----------
    batches : iterable of numpy.ndarray
        Image batches as the extractor takes them. A generator is closed at the end, on an error or on
        Ctrl-C too, so that decoding workers stop at once.
    extractor : FeatureExtractor
        Maps a batch to its ``(B, dim)`` float32 features.
    accumulator : StatsAccumulator
        Receives the features.
    total, desc, progress
        The progress bar (tqdm, on stderr): expected images, label, and whether to show it (None: only
        when stderr is a terminal).
    """
    from tqdm.auto import tqdm

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
                features = extractor(batch)
                times.network_seconds += time.perf_counter() - tock
                times.decode_seconds += tock - tick
                accumulator.update(features)
                bar.update(len(batch))
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    return times


def _metadata_of_run(
    source: Source, extractor: FeatureExtractor, fingerprint: str, skipped: tuple[tuple[str, str], ...]
) -> dict[str, str | int | float | bool]:
    """What a computed side records beside its numbers: the network, the source, the skipped files."""
    metadata: dict[str, str | int | float | bool] = {
        str(name): value for name, value in extractor.metadata().items() if value is not None
    }
    metadata.update(
        fidkit_version=__version__,
        created=utc_now_iso(),
        source_name=str(source.name),
        source_kind=str(source.kind),
        source_fingerprint=fingerprint,
        n_skipped=len(skipped),
        skipped_files=json.dumps([list(item) for item in skipped[:_MAX_SKIPPED_IN_METADATA]]),
        lossy_inputs=bool(source.lossy),
    )
    return metadata


# --------------------------------------------------------------------------------------------- step 4: store


def store(source: Source, lookup: CacheLookup, stats: Stats, options: SideOptions) -> Stats:
    """Step 4: keep `stats` in the cache, unless the source changed while it was read.

    A source that changed would leave new images under the old fingerprint. (A content hash is not
    recomputed: that would read every file twice; the mtime fingerprint is the one that races with writers.)
    Returns the statistics as stored (their metadata records the key), or `stats` itself.
    """
    if lookup.key is None:
        return stats
    if not options.hash_content and source.fingerprint(hash_content=False) != lookup.fingerprint:
        logger.warning("%s changed while it was read; its statistics are not cached", source.name)
        return stats
    return store_cached_stats(lookup.key, stats, source_name=str(source.name), source_kind=str(source.kind))


# --------------------------------------------------------------------------------------------- the steps in order


def _str_or_none(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def describe(
    stats: Stats,
    *,
    name: str,
    kind: str,
    cached: bool,
    total_seconds: float,
    skipped: tuple[tuple[str, str], ...] | None = None,
    times: ExtractionTimes | None = None,
) -> SideReport:
    """The :class:`SideReport` of a side, from its statistics' metadata (loaded, cached or just computed).

    A computed side passes its `skipped` files (the metadata keeps only the first few) and its times.
    """
    metadata = stats.metadata
    if skipped is None:
        try:
            skipped = tuple(tuple(item) for item in json.loads(str(metadata.get("skipped_files", "[]"))))
        except ValueError:
            skipped = ()
    times = times or ExtractionTimes()
    return SideReport(
        name=name,
        kind=kind,
        n=stats.n,
        cached=cached,
        lossy=bool(metadata.get("lossy_inputs", False)),
        skipped=tuple(skipped),
        n_skipped=int(metadata.get("n_skipped", len(skipped))),
        foreign=stats.is_foreign,
        weights_sha256=_str_or_none(metadata.get("weights_sha256")),
        resize_mode=_str_or_none(metadata.get("resize_mode")),
        provider=_str_or_none(metadata.get("provider")),
        decode_seconds=times.decode_seconds,
        network_seconds=times.network_seconds,
        total_seconds=total_seconds,
    )


def side_statistics(opened: Stats | Source, network: Network, options: SideOptions) -> tuple[Stats, SideReport]:
    """Steps 2 to 4 for an input that step 1 (:func:`open_input`) has opened.

    Callers open every input first, so that a typo in the second path is reported before the first side's
    network time is spent.
    """
    started = time.perf_counter()
    if isinstance(opened, Stats):
        name = str(opened.path) if opened.path is not None else "Stats"
        return opened, describe(opened, name=name, kind="stats", cached=False, total_seconds=0.0)
    source = opened
    lookup = look_up(source, network, options)
    if lookup.hit is not None:
        return lookup.hit, describe(
            lookup.hit, name=source.name, kind=source.kind, cached=True, total_seconds=time.perf_counter() - started
        )

    run_metadata: dict[str, str | int | bool] = {}
    if options.engine == "ray":
        from fidkit.engines.ray import ray_statistics

        # The same step on a cluster: partial statistics of shards, merged exactly here. Its wall
        # time is reported as network time (decoding runs on the actors, between batches).
        run = ray_statistics(source, network, options)
        extractor, accumulator, run_metadata = run, run.accumulator, run.run_metadata()
        times = ExtractionTimes(decode_seconds=0.0, network_seconds=run.wall_seconds)
    else:
        extractor = network.extractor()
        accumulator = StatsAccumulator(dim=int(extractor.feature_dim))
        times = extract(
            source.batches(options.batch_size), extractor, accumulator,
            total=source.n_images, desc=source.name, progress=options.progress,
        )
    if accumulator.n == 0:
        raise EmptySourceError(f"{source.name} yielded no images; point fidkit at a source that holds images")
    if accumulator.n < 2:
        raise InputError(
            f"{source.name} yielded only {accumulator.n} image; a covariance needs at least 2 (FID needs thousands)"
        )
    skipped = tuple((str(file), str(reason)) for file, reason in source.skipped)
    metadata = _metadata_of_run(source, extractor, lookup.fingerprint, skipped)  # type: ignore[arg-type]
    stats = accumulator.result(metadata={**metadata, **run_metadata})
    stats = store(source, lookup, stats, options)

    side = describe(
        stats, name=str(source.name), kind=str(source.kind), cached=False,
        total_seconds=time.perf_counter() - started, skipped=skipped, times=times,
    )
    # The rate is over the image path only: building the extractor (a graph export on first use)
    # is a one-off cost that would make a fresh cache look slow; it is reported as setup.
    image_seconds = times.decode_seconds + times.network_seconds
    logger.info(
        "%s: N = %d, %.1f images/s (decode wait %.2f s, network %.2f s, setup %.2f s)",
        source.name, stats.n, stats.n / max(image_seconds, 1e-9), times.decode_seconds, times.network_seconds,
        max(side.total_seconds - image_seconds, 0.0),
    )
    return stats, side
