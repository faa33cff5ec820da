"""The pipeline: one side's input becomes statistics, in four named steps.

    open_input  ->  look_up  ->  extract  ->  store
    (statistics     (the cache,   (batches ->     (the cache,
     or a source)    by key)       features ->     when the source
                                   accumulator)    did not change)

:func:`side_statistics` runs them in that order for one input; :func:`fidkit.compute_stats`,
:func:`fidkit.compute_fid` and :class:`fidkit.FID` all come through it. The extract step is
:func:`fidkit.extraction.extract`, the one loop of the package that turns image batches into features and
features into a :class:`~fidkit.stats.StatsAccumulator` (here, or on the actors of a Ray cluster).

A :class:`~fidkit.stats.Stats` object or a statistics file is recognised here, in :func:`open_input`, and
nowhere else: it skips the other three steps, and then the network is never built.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fidkit import __version__
from fidkit._validate import check_batch_size, check_limit_seed
from fidkit.cache import cache_key, load_cached_stats, store_cached_stats, utc_now_iso
from fidkit.cluster import check_cluster
from fidkit.errors import EmptySourceError, FidkitWarning, InputError
from fidkit.extraction import ExtractionTimes, extract
from fidkit.report import SideReport
from fidkit.sources import Source, open_source
from fidkit.stats import Stats, StatsAccumulator
from fidkit.statsfile import is_stats_file

if TYPE_CHECKING:  # pragma: no cover - typing only
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
    cluster: str = "local"
    ray_address: str | None = None

    def __post_init__(self) -> None:
        # Checked once here, before any input is opened or any network is built.
        object.__setattr__(self, "batch_size", check_batch_size(self.batch_size))
        object.__setattr__(self, "cluster", check_cluster(self.cluster, self.ray_address))
        limit, seed = check_limit_seed(self.limit, self.seed)
        if seed is not None and limit is None:
            # A warning, not an error: the run is still right (every image is used), only the seed does nothing.
            warnings.warn(
                f"seed {seed} without limit has no effect: every image is used; pass limit (--limit N) to draw "
                "a random subset of N images with this seed", FidkitWarning, stacklevel=3,
            )
        object.__setattr__(self, "limit", limit)
        object.__setattr__(self, "seed", seed)


@dataclass(frozen=True)
class ExtractorIdentity:
    """What decides the features: the weights, the resize, and the exact graph that runs them."""

    weights_sha256: str
    resize_mode: str
    graph_sha256: str = ""
    precision: str = "exact"
    engine: str = "onnxruntime"


def _numerics(precision: str, *, tensorrt: bool) -> str:
    """The precision as the cache key names it: TensorRT may compute in TF32 even when asked for float32, so its
    statistics never stand in for (nor are replaced by) those of the exact CPU and CUDA providers."""
    return f"tensorrt-{precision}" if tensorrt else precision


def _identity_of(extractor: Any) -> ExtractorIdentity:
    """The identity an extractor (built here, or given) states about itself."""
    return ExtractorIdentity(
        weights_sha256=str(extractor.weights_sha256),
        resize_mode=str(extractor.resize_mode),
        graph_sha256=str(getattr(extractor, "graph_sha256", "")),
        precision=_numerics(
            str(getattr(extractor, "precision", "exact")),
            tensorrt=getattr(extractor, "provider", "") == "TensorrtExecutionProvider",
        ),
        engine=str(extractor.metadata().get("engine", "")),
    )


def build_extractor(
    weights: Any, device: str, batch_size: int, *, engine: str = "auto", precision: str = "exact"
) -> FeatureExtractor:
    """Build the feature extractor: the one place the package does so (tests replace it to count calls)."""
    from fidkit.inception.select import build_feature_extractor

    return build_feature_extractor(weights, device=device, batch_size=batch_size, engine=engine, precision=precision)


class Network:
    """The feature extractor of a computation, built only when a side needs it.

    Building it exports or loads the ONNX graph and starts an onnxruntime session (seconds), so a
    comparison of two statistics files or two cache hits never builds it: the cache key needs only
    :meth:`identity`, which is known without a session.

    Parameters
    ----------
    extractor : FeatureExtractor, optional
        Use this one (then `weights`, `device`, `engine` and `precision` are not used).
    weights, device, batch_size, engine, precision
        What :func:`build_extractor` is given when the extractor is first needed (checked here, at once).
    """

    def __init__(
        self, extractor: FeatureExtractor | None = None, *, weights: Any = None, device: str = "auto",
        batch_size: int = 50, engine: str = "auto", precision: str = "exact",
    ) -> None:
        from fidkit.inception.providers import PRECISIONS, parse_device
        from fidkit.inception.select import check_engine

        self._extractor = extractor
        self._given = extractor is not None
        self._weights = weights
        self._device = str(parse_device(device)) if extractor is None else device
        self._batch_size = batch_size
        self._engine = check_engine(engine)
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self._precision = precision
        self._identity: ExtractorIdentity | None = None

    def identity(self) -> ExtractorIdentity:
        """What names the feature space in the cache key, known without starting a session.

        Once the extractor is built (or when one was given) it says it itself. Before that: the weights'
        sha256 (the file is found, or downloaded, and hashed once; the extractor built later is handed that
        result), the resize mode, the sha256 of the verified ONNX graph (exported first if this machine has
        none yet), the precision, and the engine expected to run: onnxruntime unless torch was asked for.
        With ``engine="auto"`` on a GPU that only torch can use, the engine that really runs is learned when
        the extractor is built; :func:`side_statistics` then looks up again under that identity.
        """
        if self._extractor is not None:
            return _identity_of(self._extractor)
        if self._identity is None:
            from fidkit.inception import RESIZE_MODE, ensure_graph

            resolved = self.resolved_weights()
            engine = "torch" if self._engine == "torch" else "onnxruntime"
            # The torch engine runs no graph; the onnxruntime one is named by its verified graph.
            graph_sha256 = ensure_graph(resolved).sha256 if engine == "onnxruntime" else ""
            self._identity = ExtractorIdentity(
                str(resolved.sha256), RESIZE_MODE, graph_sha256,
                precision=_numerics(self._precision, tensorrt=self._device.startswith("tensorrt")), engine=engine,
            )
        return self._identity

    def resolved_weights(self) -> Any:
        """The weights file, located (or downloaded) and hashed once: a ``ResolvedWeights``."""
        from fidkit.inception import locate_weights

        self._weights = locate_weights(self._weights)  # a ResolvedWeights comes back as it is
        return self._weights

    @property
    def given_extractor(self) -> FeatureExtractor | None:
        """The extractor the caller gave, if any (not one this network built)."""
        return self._extractor if self._given else None

    def build_settings(self) -> tuple[Any, str, int]:
        """``(located weights, device, batch_size)``: what builds this extractor elsewhere (a Ray actor)."""
        return self.resolved_weights(), self._device, self._batch_size

    def extractor(self) -> FeatureExtractor:
        """The feature extractor, built on first use."""
        if self._extractor is None:
            self._extractor = build_extractor(
                self._weights, self._device, self._batch_size, engine=self._engine, precision=self._precision
            )
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
    if options.cluster == "ray" and isinstance(spec, str) and "://" in spec:
        from fidkit.cluster.uri import is_uri, open_uri

        if is_uri(spec):  # s3://, gs://, ...: listed here, read by the actors
            return open_uri(
                spec, limit=options.limit, seed=options.seed, skip_bad=options.skip_bad,
                exif_transpose=options.exif_transpose, workers=options.workers,
            )
    source = open_source(
        spec, limit=options.limit, seed=options.seed, skip_bad=options.skip_bad,
        exif_transpose=options.exif_transpose, workers=options.workers,
    )
    available = getattr(source, "n_available", None)
    if options.limit is not None and available is not None and options.limit > available:
        warnings.warn(
            f"{source.name}: limit {options.limit} is above its {available} images; all {available} are used",
            FidkitWarning, stacklevel=3,
        )
    return source


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
    return _look_up_key(source, fingerprint, _key_of(fingerprint, network.identity()), options)


def _key_of(fingerprint: str, identity: ExtractorIdentity) -> str:
    return cache_key(
        fingerprint, weights_sha256=identity.weights_sha256, resize_mode=identity.resize_mode,
        graph_sha256=identity.graph_sha256, precision=identity.precision, engine=identity.engine,
    )


def _look_up_key(source: Source, fingerprint: str, key: str, options: SideOptions) -> CacheLookup:
    cached = load_cached_stats(key, source_name=str(source.name))
    if cached is not None and (options.skip_bad or _count(cached.metadata.get("n_skipped"), 0) == 0):
        logger.info("%s: statistics read from the cache (N = %s)", source.name, cached.n)
        return CacheLookup(key, fingerprint, cached)
    return CacheLookup(key, fingerprint, None)


# --------------------------------------------------------------------------------------------- step 3: extract


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
        ignored_json=json.dumps(dict(sorted(source.ignored.items()))),
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


def _count(value: Any, default: int) -> int:
    """A count recorded in metadata, or `default` where a file records none or something that is not one.

    Metadata is free-form in files fidkit did not write; a count that cannot be read is treated as unknown,
    never as an error in the middle of a comparison.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value == value or value < 0:
        return default
    return int(value)


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
        except (ValueError, TypeError, RecursionError):
            skipped = ()
        if not all(len(item) == 2 for item in skipped):
            skipped = ()
    times = times or ExtractionTimes()
    try:
        ignored_counts = json.loads(str(metadata.get("ignored_json", "{}")))
        ignored = tuple((str(reason), int(count)) for reason, count in dict(ignored_counts).items())
    except (ValueError, TypeError, RecursionError, AttributeError):
        ignored = ()
    return SideReport(
        name=name,
        kind=kind,
        n=stats.n,
        cached=cached,
        lossy=bool(metadata.get("lossy_inputs", False)),
        skipped=tuple(skipped),
        n_skipped=_count(metadata.get("n_skipped"), len(skipped)),
        ignored=ignored,
        foreign=stats.is_foreign,
        weights_sha256=_str_or_none(metadata.get("weights_sha256")),
        resize_mode=_str_or_none(metadata.get("resize_mode")),
        provider=_str_or_none(metadata.get("provider")),
        engine=_str_or_none(metadata.get("engine")),
        precision=_str_or_none(metadata.get("precision")),
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
    if options.cluster == "ray":
        from fidkit.cluster.ray import ray_statistics

        # The same step on a cluster: partial statistics of shards, merged exactly here. Its wall
        # time is reported as network time (decoding runs on the actors, between batches).
        run = ray_statistics(source, network, options)
        extractor, accumulator, run_metadata = run, run.accumulator, run.run_metadata()
        times = ExtractionTimes(decode_seconds=0.0, network_seconds=run.wall_seconds)
    else:
        extractor = network.extractor()
        if lookup.key is not None:
            # The extractor may not be the one the key expected (engine auto on a GPU only torch can use):
            # its own identity names the entry, which may even be cached already.
            key = _key_of(lookup.fingerprint, network.identity())
            if key != lookup.key:
                lookup = _look_up_key(source, lookup.fingerprint, key, options)
                if lookup.hit is not None:
                    return lookup.hit, describe(
                        lookup.hit, name=source.name, kind=source.kind, cached=True,
                        total_seconds=time.perf_counter() - started,
                    )
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
    # Batches from memory (a generator's samples, evaluated again and again) are logged at DEBUG: their
    # callers report each evaluation themselves, and a line per call would break their progress bars.
    (logger.debug if source.kind == "batches" else logger.info)(
        "%s: N = %d, %.1f images/s (decode wait %.2f s, network %.2f s, setup %.2f s)",
        source.name, stats.n, stats.n / max(image_seconds, 1e-9), times.decode_seconds, times.network_seconds,
        max(side.total_seconds - image_seconds, 0.0),
    )
    return stats, side
