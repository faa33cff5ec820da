"""The pipeline: one side's input becomes statistics (and, when asked for, kept features), in four steps.

    open_input  ->  look_up  ->  extract  ->  store
    (statistics,    (the cache,   (batches ->     (the cache,
     features or     by key)       features ->     when the source
     a source)                     sinks)          did not change)

:func:`side_result` runs them in that order for one input; :func:`fidkit.compute_stats`,
:func:`fidkit.compute_features`, :func:`fidkit.compute_fid` and :class:`fidkit.FID` all come through it.
The extract step is :func:`fidkit.extraction.extract` (here, or on the actors of a Ray cluster), which hands
every batch of features to a :class:`~fidkit.stats.StatsAccumulator` and, when the caller keeps features,
to a :class:`~fidkit.features.FeatureRows`.

A :class:`~fidkit.stats.Stats`, a statistics file, :class:`~fidkit.features.Features` or a features file is
recognised here, in :func:`open_input`, and nowhere else: it skips the other three steps, and then the
network is never built. The extractor comes from the registry through a
:class:`~fidkit.extractors.LazyExtractor`, which names cache entries without being built.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, replace
from typing import Any

from fidkit._plain import shown_name
from fidkit._version import __version__
from fidkit.cache import cache_key, load_cached_features, load_cached_stats, store_cached_features, store_cached_stats, utc_now_iso
from fidkit.errors import EmptySourceError, FidkitWarning, InputError
from fidkit.extraction import ExtractionTimes, extract
from fidkit.extractors import ExtractorIdentity, LazyExtractor, declared_dim, extractor_metadata
from fidkit.features import EXTRA_OUTPUTS, FeatureRows, Features, is_features_file
from fidkit.options import RunOptions
from fidkit.preflight import (
    identity_record, recorded_convention, recorded_extractor, recorded_identity, recorded_text, run_identity,
)
from fidkit.report import SideReport
from fidkit.sources import Source, open_with
from fidkit.sources.parallel import skip_is_not_cached
from fidkit.stats import Stats, StatsAccumulator, relabelled
from fidkit.stats.reference import ReferenceBatch, images_hint
from fidkit.statsfile import is_stats_file

__all__ = [
    "SideResult",
    "open_input",
    "is_file_input",
    "look_up",
    "store",
    "side_result",
    "describe",
]

logger = logging.getLogger(__name__)

#: How many skipped files a statistics file names in its metadata (the count is always exact).
_MAX_SKIPPED_IN_METADATA = 20


@dataclass(frozen=True)
class SideResult:
    """What the pipeline makes of one input: its statistics, how they were obtained, and its features when kept."""

    stats: Stats
    report: SideReport
    features: Features | None = None


# --------------------------------------------------------------------------------------------- step 1: open


def open_input(spec: Any, options: RunOptions) -> Stats | Features | Source:
    """Step 1: statistics or features as they are, or an opened source of images.

    A :class:`~fidkit.stats.Stats` or :class:`~fidkit.features.Features` is returned as is; a statistics
    ``.npz`` (keys ``mu`` and ``sigma``: fidkit, TTUR or pytorch-fid) or a features ``.npz`` is loaded: this
    is the one place the package decides that an input is not images. Anything else goes to
    :func:`fidkit.sources.open_source` (or, for ``s3://``-style URIs with ``cluster="ray"``, to the cluster's
    lister).
    """
    if isinstance(spec, (Stats, Features)):
        _warn_unused_subset(f"{type(spec).__name__} object", options)
        return spec
    if isinstance(spec, (str, os.PathLike)):
        if is_stats_file(spec):
            _warn_unused_subset(str(spec), options)
            return Stats.load(spec)
        if is_features_file(spec):
            _warn_unused_subset(str(spec), options)
            return Features.load(spec)
    if options.cluster == "ray" and isinstance(spec, str) and "://" in spec:
        from fidkit.cluster.uri import is_uri, open_uri

        if is_uri(spec):  # s3://, gs://, ...: listed here, read by the actors
            return _fingerprint_now(open_uri(spec, options.read), options)
    source = open_with(spec, options.read)
    _fingerprint_now(source, options)
    available = getattr(source, "n_available", None)
    if options.limit is not None and available is not None and options.limit > available:
        warnings.warn(
            f"{shown_name(source.name)}: limit {options.limit} is above its {available} images; all {available} "
            "are used",
            FidkitWarning, stacklevel=3,
        )
    return source


def is_file_input(spec: Any) -> bool:
    """Whether :func:`open_input` takes `spec` as statistics or features, which no network reads (a file's archive
    directory is looked at, no array is read)."""
    if isinstance(spec, (Stats, Features)):
        return True
    return isinstance(spec, (str, os.PathLike)) and (is_stats_file(spec) or is_features_file(spec))


def _fingerprint_now(source: Source, options: RunOptions) -> Source:
    """Fingerprint `source` as it is opened: the identity its statistics are cached under, and checked against.

    A CIFAR batch is loaded and a folder's file list taken when the source is opened, and ``compute_fid`` opens
    both inputs before computing either: a fingerprint taken later (after the other side's extraction) could
    describe files replaced meanwhile, and statistics of what was opened (or of what was read later) would be
    cached under a name that is not theirs. Taken now, the store step compares the sizes and modification
    times at the end with these, with or without ``hash_content``, and any change between the two is not cached.
    """
    if source.cacheable:
        source.opened_fingerprint = source.fingerprint(hash_content=False)
        if options.hash_content:
            source.opened_content_fingerprint = source.fingerprint(hash_content=True)
    return source


def _warn_unused_subset(name: str, options: RunOptions) -> None:
    if options.limit is not None or options.seed is not None:
        warnings.warn(
            f"{name}: limit/seed do not apply to statistics or features; they are used as they are",
            FidkitWarning, stacklevel=4,
        )


# --------------------------------------------------------------------------------------------- step 2: look up


@dataclass(frozen=True)
class CacheLookup:
    """What step 2 found: the keys to store under (None: do not cache), the fingerprint, and the hits."""

    stats_key: str | None
    features_key: str | None
    fingerprint: str
    stats: Stats | None = None
    features: Features | None = None
    identity: ExtractorIdentity | None = None  # the extractor's, which the keys name (None: not cached)


def _usable(entry: Any, options: RunOptions, dim: int | None, source_name: str) -> bool:
    """An entry made with ``skip_bad`` that did skip files does not stand in for a run that should stop at them;
    an entry of another width than the extractor's (`dim`, where known) is never served, whatever its key said."""
    if entry is None or not (options.skip_bad or _count(entry.metadata.get("n_skipped"), 0) == 0):
        return False
    if dim is not None and entry.dim != dim:
        logger.warning(
            "%s: the cache entry holds %d-dimensional features, but the extractor makes %d; computing them again",
            source_name, entry.dim, dim,
        )
        return False
    return True


def look_up(
    source: Source, lazy: LazyExtractor, options: RunOptions, fingerprint: str = "", *, keep_features: bool = False
) -> CacheLookup:
    """Step 2: the cached statistics and features of `source` under the extractor's identity, if any.

    Only sources that can be fingerprinted (files, arrays, datasets) are cached, and only then is the identity
    asked for. An entry is read only when it can serve: for statistics, the statistics entry, else the features
    entry (statistics are one reduction of the rows, no network needed); with `keep_features`, the features
    entry, and then its statistics entry (cheaper to read than to recompute from the rows).
    """
    if not source.cacheable:
        return CacheLookup(None, None, "")
    opened = source.opened_content_fingerprint if options.hash_content else source.opened_fingerprint
    fingerprint = fingerprint or opened or source.fingerprint(hash_content=options.hash_content)
    if not options.use_cache:
        return CacheLookup(None, None, fingerprint)
    name = str(source.name)
    refusal = lazy.cache_refusal()
    if refusal is not None:
        # A user's object that states no content identity: two configurations of its class would share entries.
        logger.info("%s: not cached: %s (fidkit.extractors.Extractor says how to cache it)", name, refusal)
        return CacheLookup(None, None, fingerprint)
    identity = lazy.identity()
    stats_key = cache_key(fingerprint, identity.as_dict(), product="stats")
    # "-in-source-order": entries written before rows of mixed-size folders were put back in the source's order
    # hold them in batching order; they are not served (statistics do not depend on the order and keep their key).
    features_key = cache_key(fingerprint, identity.as_dict(), product="features-in-source-order")
    dim = lazy.feature_dim()

    def stats_entry() -> Stats | None:
        stats = load_cached_stats(stats_key, source_name=name)
        return stats if _usable(stats, options, dim, name) else None

    def features_entry() -> Features | None:
        features = load_cached_features(features_key, source_name=name)
        return features if _usable(features, options, dim, name) else None

    if keep_features:
        features = features_entry()
        stats = stats_entry() if features is not None else None
    else:
        stats = stats_entry()
        features = features_entry() if stats is None else None
    return CacheLookup(stats_key, features_key, fingerprint, stats, features, identity)


# --------------------------------------------------------------------------------------------- step 3: extract


def _metadata_of_run(
    source: Source, extractor_metadata: dict[str, Any], fingerprint: str, skipped: tuple[tuple[str, str], ...],
    identity: ExtractorIdentity,
) -> dict[str, str | int | float | bool]:
    """What a computed side records beside its numbers: the network and which extractor it is (its `identity`'s name
    and fields: :func:`~fidkit.preflight.identity_record`, compared between sides), the source, the skipped files."""
    metadata: dict[str, str | int | float | bool] = {**extractor_metadata, **identity_record(identity)}
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



@dataclass
class _Extracted:
    """What the extract step returns, here or on a cluster."""

    accumulator: StatsAccumulator
    rows: Features | None
    extractor_metadata: dict[str, Any]
    run_metadata: dict[str, Any]
    times: ExtractionTimes
    batch_size: int
    setup_seconds: float
    skipped: tuple[tuple[str, str], ...]
    setup_parts: tuple[tuple[str, float], ...] = ()


def _extract_locally(
    source: Source, lazy: LazyExtractor, options: RunOptions, kept: tuple[str, ...], setup_seconds: float
) -> _Extracted:
    extractor = lazy.get()
    batch_size = lazy.batch_size()
    accumulator = StatsAccumulator(dim=declared_dim(extractor))  # undeclared: the first batch's, then checked
    rows = FeatureRows(outputs=kept) if kept else None
    sinks = (accumulator,) if rows is None else (accumulator, rows)
    times = extract(
        source.batches(batch_size), extractor, *sinks, total=source.n_images, desc=source.name,
        progress=options.progress,
    )
    metadata = extractor_metadata(extractor)
    features = rows.result(emitted_order=source.emitted_order) if rows is not None and rows.n else None
    skipped = tuple((str(file), str(reason)) for file, reason in source.skipped)
    recorded = getattr(extractor, "setup_seconds", None)
    parts = tuple(recorded.items()) if setup_seconds and isinstance(recorded, dict) else ()
    return _Extracted(accumulator, features, metadata, {}, times, batch_size, setup_seconds, skipped, parts)


def _extract_on_cluster(source: Source, lazy: LazyExtractor, options: RunOptions, kept: tuple[str, ...]) -> _Extracted:
    from fidkit.cluster.ray import ray_extract

    # The same step on a cluster: partial statistics (or rows, logits, spatial features) of shards, merged exactly
    # here. The shards' wall time is reported as network time (decoding runs on the actors, between batches); the
    # rest of the call, as setup "ray_outside_shards": the identity (it may hash the weights), connecting to Ray
    # or starting a local instance (seconds) and stopping it, the graph's export before the actors start, merging
    # the shards and checking their identity. ray_extract does not time these apart, so they are one part.
    started = time.perf_counter()
    run = ray_extract(source, options, lazy.identity, given=lazy.given, keep_features=kept)
    setup_seconds = max(time.perf_counter() - started - run.wall_seconds, 0.0)
    times = ExtractionTimes(decode_seconds=0.0, network_seconds=run.wall_seconds)
    return _Extracted(
        run.accumulator, run.features, run.metadata(), run.run_metadata(), times, run.batch_size, setup_seconds,
        run.skipped, (("ray_outside_shards", setup_seconds),),
    )


def kept_outputs(keep_features: bool | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """What a side keeps besides its statistics: ``()`` (nothing), or outputs with ``"features"`` first
    (``True`` is the features alone; ``("logits",)`` is the features and the logits)."""
    if isinstance(keep_features, bool):
        return ("features",) if keep_features else ()
    names = tuple(dict.fromkeys(["features", *keep_features]))
    unknown = [name for name in names if name != "features" and name not in EXTRA_OUTPUTS]
    if unknown:
        raise InputError(f"unknown output(s) {', '.join(map(repr, unknown))}; outputs are features, "
                         + ", ".join(EXTRA_OUTPUTS))
    return names


def side_result(
    opened: Stats | Features | Source,
    lazy: LazyExtractor,
    options: RunOptions,
    *,
    keep_features: bool | tuple[str, ...] = False,
) -> SideResult:
    """Steps 2 to 4 for an input that step 1 (:func:`open_input`) has opened.

    Callers open every input first, so that a typo in the second path is reported before the first side's
    network time is spent. With `keep_features`, the result holds the feature rows too (from the cache, a
    features file, or the extract step); statistics alone cannot give them. A tuple of outputs
    (:func:`kept_outputs`) keeps the logits or the spatial features of the same forward pass as well.
    """
    started = time.perf_counter()
    kept = kept_outputs(keep_features)
    if isinstance(opened, Stats):
        return _side_of_stats(opened, kept)
    if isinstance(opened, Features):
        return _side_of_features(opened, kept, started)
    return _side_of_source(opened, lazy, options, kept, started)


def _side_of_stats(stats: Stats, kept: tuple[str, ...]) -> SideResult:
    """A statistics side: as it is; it cannot give the feature rows a metric beyond FID needs."""
    if kept:
        raise InputError(
            f"{stats.path or 'a Stats object'} holds statistics only; this needs the feature rows: give the "
            f"images (or a features file: fidkit features SRC --save FILE.npz) instead{images_hint(stats)}"
        )
    name = str(stats.path) if stats.path is not None else "Stats"
    return SideResult(stats, describe(stats, name=name, kind="stats", cached=False, total_seconds=0.0))


def _side_of_features(features: Features, kept: tuple[str, ...], started: float) -> SideResult:
    """A features side: its statistics, and the rows themselves where outputs are kept."""
    stats = features.stats()
    name = str(features.path) if features.path is not None else "Features"
    for output in kept:
        features.output(output)  # an InputError saying how to compute what the file lacks
    report = describe(stats, name=name, kind="features", cached=False, total_seconds=time.perf_counter() - started)
    return SideResult(stats, report, features if kept else None)


def _side_of_source(
    source: Source, lazy: LazyExtractor, options: RunOptions, kept: tuple[str, ...], started: float
) -> SideResult:
    """An image source: from the cache, or through the network and into the cache."""
    lookup = look_up(source, lazy, options, keep_features=bool(kept))
    hit = _from_cache(source, lookup, options, kept, started)
    if hit is not None:
        return hit
    asked = kept
    if lookup.features is not None:
        # A cached features entry lacking an asked-for output: compute everything it held too, so that the new
        # entry replaces it with a superset (the extra outputs come from the same forward pass); the caller still
        # gets only what it asked for.
        kept = tuple(dict.fromkeys([*kept, *lookup.features.outputs]))

    if options.cluster == "ray":
        extracted = _extract_on_cluster(source, lazy, options, kept)
    else:
        expected = lazy.identity() if lookup.stats_key is not None else None
        setup_started = time.perf_counter()
        built_before = lazy.built
        lazy.get()
        setup_seconds = 0.0 if built_before else time.perf_counter() - setup_started
        if expected is not None and lazy.identity() != expected:
            # The engine that runs is not the one the key expected (engine auto on a GPU only torch can use):
            # its identity names the entry, which may even be cached already.
            lookup = look_up(source, lazy, options, lookup.fingerprint, keep_features=bool(kept))
            hit = _from_cache(source, lookup, options, kept, started)
            if hit is not None:
                return hit
        extracted = _extract_locally(source, lazy, options, kept, setup_seconds)
    accumulator = extracted.accumulator
    if accumulator.n == 0:
        raise EmptySourceError(
            f"{shown_name(source.name)} yielded no images; point fidkit at a source that holds images"
        )
    if accumulator.n < 2:
        raise InputError(
            f"{shown_name(source.name)} yielded only {accumulator.n} image; a covariance needs at least 2 (FID needs "
            "thousands)"
        )
    skipped = extracted.skipped
    metadata = {
        **_metadata_of_run(source, extracted.extractor_metadata, lookup.fingerprint, skipped, run_identity(lazy)),
        **extracted.run_metadata,
    }
    stats = accumulator.result(metadata=metadata)
    features = None
    if extracted.rows is not None:
        features = replace(extracted.rows, metadata=metadata)
    store(source, lookup, stats, features, options, skipped=skipped)
    if features is not None:
        features = features.narrowed(asked)  # the superset was for the cache entry, not for the caller

    side = describe(
        stats, name=str(source.name), kind=str(source.kind), cached=False,
        total_seconds=time.perf_counter() - started, skipped=skipped, times=extracted.times,
        batch_size=extracted.batch_size, setup_seconds=extracted.setup_seconds, setup_parts=extracted.setup_parts,
    )
    _log_side(source, side, extracted)
    return SideResult(stats, side, features)


def _log_side(source: Source, side: SideReport, extracted: _Extracted) -> None:
    """Where a computed side's time went: one line at INFO (DEBUG for batches from memory), the first batch at
    DEBUG."""
    times = extracted.times
    # The rate is over the image path only: building the extractor (a graph export on first use)
    # is a one-off cost that would make a fresh cache look slow; it is reported as setup, the number the report
    # calls setup_seconds, and the rest of the side's time (the cache look-up, the store) apart.
    image_seconds = times.decode_seconds + times.network_seconds
    # Batches from memory (a generator's samples, evaluated again and again) are logged at DEBUG: their
    # callers report each evaluation themselves, and a line per call would break their progress bars.
    (logger.debug if source.kind == "batches" else logger.info)(
        "%s: N = %d, %.1f images/s (batch %d; decode wait %.2f s, network %.2f s, setup %.2f s, cache look-up "
        "and store %.2f s)", shown_name(source.name), extracted.accumulator.n,
        extracted.accumulator.n / max(image_seconds, 1e-9), extracted.batch_size,
        times.decode_seconds, times.network_seconds, side.setup_seconds,
        max(side.total_seconds - image_seconds - side.setup_seconds, 0.0),
    )
    logger.debug(
        "%s: first batch: waited %.2f s for it (decoding workers' start), network %.2f s (on a GPU, the plan search)",
        shown_name(source.name), times.first_wait_seconds, times.first_batch_seconds,
    )


def _from_cache(
    source: Source, lookup: CacheLookup, options: RunOptions, kept: tuple[str, ...], started: float
) -> SideResult | None:
    """The side from the cache when it holds what is asked for: statistics, or features (which give statistics),
    with every output in `kept`."""
    features = lookup.features
    stats = lookup.stats
    if kept and (features is None or not set(kept) <= set(features.outputs)):
        return None
    if stats is None and features is None:
        return None
    if stats is None:
        assert features is not None
        # Statistics are one reduction of cached features: no network, and the statistics are cached too.
        stats = features.stats()
        store(source, CacheLookup(lookup.stats_key, None, lookup.fingerprint), stats, None, options)
    logger.info("%s: read from the cache (N = %s)", shown_name(source.name), stats.n)
    # An entry is shared by every source of the same content (--hash-content: a copy of the folder): what it
    # records as its source is this run's, so a file saved from it names what the user gave.
    here = {
        "source_name": str(source.name), "source_kind": str(source.kind),
        "ignored_json": json.dumps(dict(sorted(source.ignored.items()))),  # its own listing's, not the other's
        **(identity_record(lookup.identity) if lookup.identity is not None else {}),  # entries of older fidkit too
    }
    stats = relabelled(stats, metadata={**stats.metadata, **here})
    if features is not None:
        features = relabelled(features, metadata={**features.metadata, **here})
    report = describe(stats, name=source.name, kind=source.kind, cached=True, total_seconds=time.perf_counter() - started)
    return SideResult(stats, report, features.narrowed(kept) if kept else None)


# --------------------------------------------------------------------------------------------- step 4: store


def store(
    source: Source,
    lookup: CacheLookup,
    stats: Stats,
    features: Features | None,
    options: RunOptions,
    *,
    skipped: tuple[tuple[str, str], ...] = (),
) -> None:
    """Step 4: keep `stats` (and `features`) in the cache, unless the source changed while it was read, or a
    file was skipped for a reason that can go away without the file changing.

    A source that changed would leave new images under the old fingerprint. (A content hash is not
    recomputed: that would read every file twice; the mtime fingerprint is the one that races with writers.)
    A file in `skipped` (``(file, reason)``) that could not be read for a permission or an I/O error
    (:func:`fidkit.sources.parallel.skip_is_not_cached`) may read on the next run with the same fingerprint:
    cached, the smaller N would be served for good.
    """
    if lookup.stats_key is None:
        return
    passing = [file for file, reason in skipped if skip_is_not_cached(reason)]
    if passing:
        logger.warning(
            "%s: %d file(s) skipped for a reason that may not last (first %s: a permission or an I/O error); "
            "these statistics are not cached, so the next run reads them again",
            shown_name(source.name), len(passing), passing[0],
        )
        return
    # Sizes and modification times as opened (or, for a source opened elsewhere, as looked up) against now: a
    # content hash is not taken again, which would read every file twice.
    before = source.opened_fingerprint or (None if options.hash_content else lookup.fingerprint)
    if before is not None and source.fingerprint(hash_content=False) != before:
        logger.warning("%s changed while it was read; its statistics are not cached", shown_name(source.name))
        return
    kind = dict(source_name=_display_name(source), source_kind=str(source.kind))
    if features is not None and lookup.features_key is not None:
        store_cached_features(lookup.features_key, features, **kind)
    store_cached_stats(lookup.stats_key, stats, **kind)


def _display_name(source: Source) -> str:
    """The source as ``fidkit cache list`` shows it: an absolute path where it is a path, else its name."""
    name = str(source.name)
    return os.path.abspath(name) if os.path.exists(name) else name


# --------------------------------------------------------------------------------------------- the steps in order


def _count(value: Any, default: int) -> int:
    """A count recorded in metadata, or `default` where a file records none or something that is not one.

    Metadata is free-form in files fidkit did not write; a count that cannot be read is treated as unknown,
    never as an error in the middle of a comparison.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value == value or value < 0:
        return default
    return int(value)


def describe(
    stats: Stats,
    *,
    name: str,
    kind: str,
    cached: bool,
    total_seconds: float,
    skipped: tuple[tuple[str, str], ...] | None = None,
    times: ExtractionTimes | None = None,
    batch_size: int | None = None,
    setup_seconds: float = 0.0,
    setup_parts: tuple[tuple[str, float], ...] = (),
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
        weights_sha256=recorded_text(metadata.get("weights_sha256")),
        resize_mode=recorded_text(metadata.get("resize_mode")),
        convention=recorded_convention(metadata),
        feature_extractor=recorded_text(metadata.get("feature_extractor")),
        extractor=recorded_extractor(metadata),
        extractor_identity=recorded_identity(metadata),
        provider=recorded_text(metadata.get("provider")),
        engine=recorded_text(metadata.get("engine")),
        precision=recorded_text(metadata.get("precision")),
        decode_seconds=times.decode_seconds,
        network_seconds=times.network_seconds,
        total_seconds=total_seconds,
        batch_size=batch_size,
        setup_seconds=setup_seconds,
        setup_parts=tuple((str(part), float(seconds)) for part, seconds in setup_parts),
        first_wait_seconds=times.first_wait_seconds,
        first_batch_seconds=times.first_batch_seconds,
        contents=stats.contents if isinstance(stats, ReferenceBatch) else None,
    )
