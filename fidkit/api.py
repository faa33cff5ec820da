"""The high-level API: statistics of any source, and the FID between any two.

``compute_stats(source)`` turns a folder, an archive, an image array, an iterable of uint8 batches, a
statistics file or a :class:`~fidkit.stats.Stats` into statistics; ``compute_fid(a, b)`` compares two
such sources and returns a :class:`FidReport` that says how the number was made. The flow is the one in
the design: source -> uint8 batches -> Inception features (onnxruntime) -> streaming statistics ->
Fréchet distance. A statistics file, a ``Stats`` object or a statistics-cache hit skips the first
three stages, and then the network is never even built.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import time
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fidkit.cache import cache_key, load_cached_stats, store_cached_stats, utc_now_iso
from fidkit.errors import EmptySourceError, FidkitWarning, InputError
from fidkit.progress import ProgressBar
from fidkit.sources.base import check_batch_size

if TYPE_CHECKING:  # pragma: no cover - typing only
    from fidkit.frechet import FrechetResult
    from fidkit.inception import FeatureExtractor
    from fidkit.sources import Source
    from fidkit.stats import Stats

__all__ = ["compute_stats", "compute_stats_with_report", "compute_fid", "FidReport", "SideReport", "Timings"]

logger = logging.getLogger(__name__)

#: How many skipped files a statistics file names in its metadata (the count is always exact).
_MAX_SKIPPED_IN_METADATA = 20


@dataclasses.dataclass(frozen=True)
class SideReport:
    """How the statistics of one side of a comparison were obtained.

    Attributes
    ----------
    name : str
        The source's name (a path, ``"array"``, ``"batches"``...).
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


@dataclasses.dataclass(frozen=True)
class Timings:
    """Where the time of a :func:`compute_fid` call went, in seconds (both sides together)."""

    decode_seconds: float
    network_seconds: float
    distance_seconds: float
    total_seconds: float

    def to_dict(self) -> dict[str, float]:
        """Return a JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class FidReport:
    """The FID between two sources, with everything needed to trace the number.

    Behaves as a float: ``float(report)`` is ``report.value``.

    Attributes
    ----------
    value : float
        The Fréchet Inception Distance.
    frechet : FrechetResult
        The distance's terms and square-root diagnostics (method, rank, clipped spectrum).
    a, b : SideReport
        How each side's statistics were obtained (N, cached, lossy, skipped files).
    weights_sha256 : str or None
        The sha256 of the Inception weights (None if neither side recorded it).
    resize_mode : str or None
        The resize the features were computed with.
    provider : str or None
        The onnxruntime provider(s) that computed the features (e.g. ``CPUExecutionProvider``).
    warnings : tuple of str
        Everything a careful user should know: N below the feature dimension, lossy inputs, skipped
        files, statistics files that do not record N or the network.
    timings : Timings
        Decode, network, distance and total seconds.
    fidkit_version : str
        The fidkit version that made the report.
    """

    value: float
    frechet: FrechetResult
    a: SideReport
    b: SideReport
    weights_sha256: str | None
    resize_mode: str | None
    provider: str | None
    warnings: tuple[str, ...]
    timings: Timings
    fidkit_version: str

    def __float__(self) -> float:
        return float(self.value)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (plain floats, ints, strings, lists)."""
        return {
            "fid": float(self.value),
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "weights_sha256": self.weights_sha256,
            "resize_mode": self.resize_mode,
            "provider": self.provider,
            "frechet": self.frechet.to_dict(),
            "warnings": list(self.warnings),
            "timings": self.timings.to_dict(),
            "fidkit_version": self.fidkit_version,
        }


def _make_extractor(weights: Any, device: str, batch_size: int) -> FeatureExtractor:
    """Build the feature extractor: the one place the API does so (tests replace it to count calls)."""
    from fidkit.inception import FeatureExtractor

    return FeatureExtractor(weights, device=device, batch_size=batch_size)


class _LazyExtractor:
    """One feature extractor shared by both sides of a comparison, built only when a side needs it.

    Building it exports or loads the ONNX graph and starts an onnxruntime session (seconds), so a
    comparison of two statistics files or two cache hits never builds it. The cache key only needs the
    weights' sha256 and the resize mode, which are known without the network.
    """

    def __init__(self, extractor: FeatureExtractor | None, weights: Any, device: str, batch_size: int):
        self._extractor = extractor
        self._weights = weights
        self._device = device
        self._batch_size = batch_size
        self._identity: tuple[str, str] | None = None

    @property
    def built(self) -> FeatureExtractor | None:
        return self._extractor

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

    def get(self) -> FeatureExtractor:
        if self._extractor is None:
            self._extractor = _make_extractor(self._weights, self._device, self._batch_size)
        return self._extractor


def _short_name(name: str, width: int = 32) -> str:
    """The end of a long source name, which is the informative part of a path, for the progress bar."""
    return name if len(name) <= width else "..." + name[-(width - 3):]


def _str_or_none(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _side_from_stats(
    stats: Stats,
    *,
    name: str,
    kind: str,
    cached: bool,
    total_seconds: float,
    skipped=None,
    decode_seconds: float = 0.0,
    network_seconds: float = 0.0,
) -> SideReport:
    """Describe a side from its statistics' metadata: loaded (file, object, cache) or just computed.

    A computed side passes its `skipped` files (the metadata keeps only the first few) and timings.
    """
    metadata = stats.metadata
    if skipped is None:
        try:
            skipped = tuple(tuple(item) for item in json.loads(str(metadata.get("skipped_files", "[]"))))
        except ValueError:
            skipped = ()
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
        decode_seconds=decode_seconds,
        network_seconds=network_seconds,
        total_seconds=total_seconds,
    )


def _compute_side(
    spec: Any,
    holder: _LazyExtractor,
    *,
    batch_size: int,
    workers: int | None,
    skip_bad: bool,
    limit: int | None,
    seed: int | None,
    use_cache: bool,
    hash_content: bool,
    exif_transpose: bool,
    progress: bool | None,
) -> tuple[Stats, SideReport]:
    from fidkit import __version__
    from fidkit.stats import Stats, StatsAccumulator

    started = time.perf_counter()
    if isinstance(spec, Stats):
        # A Stats object needs no source at all.
        return spec, _side_from_stats(
            spec, name="Stats", kind="stats", cached=False, total_seconds=time.perf_counter() - started
        )
    from fidkit.sources import open_source

    # open_source validates limit and seed for every kind of spec, an opened Source included.
    source = open_source(
        spec, limit=limit, seed=seed, skip_bad=skip_bad, exif_transpose=exif_transpose, workers=workers
    )
    if source.kind == "stats":
        stats = source.stats
        return stats, _side_from_stats(
            stats, name=source.name, kind="stats", cached=False, total_seconds=time.perf_counter() - started
        )

    key: str | None = None
    fingerprint = ""
    if source.cacheable:
        fingerprint = source.fingerprint(hash_content=hash_content)
    if use_cache and source.cacheable:
        weights_sha256, resize_mode = holder.identity()
        key = cache_key(fingerprint, weights_sha256=weights_sha256, resize_mode=resize_mode)
        cached = load_cached_stats(key)
        # An entry made with skip_bad that did skip files must not stand in for a run that should stop
        # at those files: treat it as a miss and let the source raise its ImageError.
        if cached is not None and (skip_bad or int(cached.metadata.get("n_skipped", 0)) == 0):
            logger.info("%s: statistics read from the cache (N = %s)", source.name, cached.n)
            return cached, _side_from_stats(
                cached, name=source.name, kind=source.kind, cached=True,
                total_seconds=time.perf_counter() - started,
            )

    extractor = holder.get()
    accumulator = StatsAccumulator(dim=int(extractor.feature_dim))
    decode_seconds = 0.0
    network_seconds = 0.0
    batches: Iterator = iter(source.batches(batch_size))
    try:
        with ProgressBar(total=source.n_images, desc=_short_name(source.name), enabled=progress) as bar:
            while True:
                tick = time.perf_counter()
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                tock = time.perf_counter()
                features = extractor(batch)
                network_seconds += time.perf_counter() - tock
                decode_seconds += tock - tick
                accumulator.update(features)
                bar.update(len(batch))
    finally:
        # Stops the decoding workers at once on an error or Ctrl-C.
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    if accumulator.n == 0:
        raise EmptySourceError(f"{source.name} yielded no images; point fidkit at a source that holds images")

    skipped = tuple((str(file), str(reason)) for file, reason in source.skipped)
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
    stats = accumulator.result(metadata=metadata)

    if key is not None:
        # Only store when the source did not change while it was read; otherwise the entry would hold
        # new images under the old fingerprint. (A content hash is not recomputed: that would read
        # every file twice; the mtime fingerprint is the one that races with writers.)
        unchanged = hash_content or source.fingerprint(hash_content=False) == fingerprint
        if unchanged:
            stats = store_cached_stats(key, stats, source_name=str(source.name), source_kind=str(source.kind))
        else:
            logger.warning("%s changed while it was read; its statistics are not cached", source.name)
    side = _side_from_stats(
        stats, name=str(source.name), kind=str(source.kind), cached=False,
        total_seconds=time.perf_counter() - started, skipped=skipped,
        decode_seconds=decode_seconds, network_seconds=network_seconds,
    )
    # The rate is over the image path only: building the extractor (a graph export on first use)
    # is a one-off cost that would make a fresh cache look slow; it is reported as setup.
    image_seconds = decode_seconds + network_seconds
    logger.info(
        "%s: N = %d, %.1f images/s (decode wait %.2f s, network %.2f s, setup %.2f s)",
        source.name, stats.n, stats.n / max(image_seconds, 1e-9), decode_seconds, network_seconds,
        max(side.total_seconds - image_seconds, 0.0),
    )
    return stats, side


def compute_stats(
    source: Any,
    *,
    weights: Any = None,
    device: str = "auto",
    batch_size: int = 50,
    workers: int | None = None,
    skip_bad: bool = False,
    limit: int | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    hash_content: bool = False,
    exif_transpose: bool = False,
    progress: bool | None = None,
    extractor: FeatureExtractor | None = None,
) -> Stats:
    """Return the Inception statistics (mu, sigma, N) of a source.

    Parameters
    ----------
    source : path-like, numpy.ndarray, Stats, Source or iterable of numpy.ndarray
        A folder of images (recursive), a ``.zip``/``.tar``/``.tar.gz`` archive, a ``.npy``/``.npz``
        uint8 image array (N, H, W, 3) or (N, H, W), an MNIST idx file, a CIFAR python batch folder, a
        statistics ``.npz`` (returned as loaded), a uint8 array, a :class:`~fidkit.stats.Stats`
        (returned as is), or an iterable of uint8 batches (B, H, W, 3) such as a generator's samples.
    weights : path-like, optional
        The Inception weights (``.pth``); default ``$FIDKIT_WEIGHTS``, the cache, or a download.
    device : {"auto", "cpu", "cuda", "tensorrt"}
        Where the network runs (``"auto"``: CUDA if a GPU is usable, else the CPU).
    batch_size : int
        Images per network batch.
    workers : int, optional
        Decoding processes; default from the machine.
    skip_bad : bool
        Skip undecodable files (counted and named in the metadata) instead of stopping with
        :class:`~fidkit.errors.ImageError`.
    limit, seed : int, optional
        Use `limit` images: the first ones in sorted order, or a random subset drawn with `seed`.
    use_cache : bool
        Read and write the statistics cache for folder, archive and array sources.
    hash_content : bool
        Fingerprint files by their content (sha256) instead of size and modification time.
    exif_transpose : bool
        Apply the EXIF orientation tag (default: pixels as stored, as the reference did).
    progress : bool, optional
        Show a progress bar on stderr; default only when stderr is a terminal.
    extractor : FeatureExtractor, optional
        A feature extractor to use (and reuse across calls) instead of building one; `weights`,
        `device` are then ignored.

    Returns
    -------
    Stats
        float64 ``mu`` and ``sigma`` (ddof=1), ``n``, and metadata: the extractor's (weights sha256,
        resize mode, provider), ``fidkit_version``, ``created`` (UTC ISO), ``source_fingerprint``,
        ``n_skipped``, ``lossy_inputs``.

    Raises
    ------
    FidkitError
        A source that cannot be read (:class:`~fidkit.errors.SourceError`), bad images without
        `skip_bad` (:class:`~fidkit.errors.ImageError`), no images
        (:class:`~fidkit.errors.EmptySourceError`), missing weights
        (:class:`~fidkit.errors.WeightsError`).

    Examples
    --------
    >>> stats = compute_stats("generated/")                       # doctest: +SKIP
    >>> stats.save("generated.npz")                                # doctest: +SKIP
    """
    # locals() holds exactly the parameters above (nothing else is bound yet), so the keywords are
    # listed once, here, and compute_stats_with_report takes the same ones.
    stats, _ = compute_stats_with_report(**locals())
    return stats


_STATS_SIGNATURE = inspect.signature(compute_stats)
#: compute_stats' keywords, which compute_fid also takes (with the same defaults) and applies to each side.
_STATS_KEYWORDS = tuple(_STATS_SIGNATURE.parameters)[1:]


def _prepare_sides(options: dict[str, Any]) -> tuple[_LazyExtractor, dict[str, Any]]:
    """Split compute_stats' keywords (`source` excluded) into the shared extractor and per-side options."""
    side_options = dict(options)
    batch_size = check_batch_size(side_options["batch_size"])
    holder = _LazyExtractor(
        side_options.pop("extractor"), side_options.pop("weights"), side_options.pop("device"), batch_size
    )
    side_options["batch_size"] = batch_size
    return holder, side_options


def compute_stats_with_report(source: Any, **options: Any) -> tuple[Stats, SideReport]:
    """Like :func:`compute_stats` (the same keywords and defaults), and also return the :class:`SideReport`.

    The :class:`SideReport` says whether the statistics came from the cache, which files were skipped
    and where the time went.
    """
    # Binding to compute_stats' signature gives its defaults and its TypeError for a misspelt keyword.
    bound = _STATS_SIGNATURE.bind(source, **options)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    arguments.pop("source")
    holder, side_options = _prepare_sides(arguments)
    return _compute_side(source, holder, **side_options)


# help() and IDEs show the keywords, not **options.
compute_stats_with_report.__signature__ = _STATS_SIGNATURE.replace(  # type: ignore[attr-defined]
    return_annotation="tuple[Stats, SideReport]"
)


def _consistency_warnings(
    stats_a: Stats, side_a: SideReport, stats_b: Stats, side_b: SideReport, *, allow_weights_mismatch: bool
) -> list[str]:
    """Check the two sides were made comparably; return warnings, raise on different weights."""
    messages: list[str] = []
    labelled = (("a", side_a), ("b", side_b))
    for label, side in labelled:
        if side.n is None:
            messages.append(
                f"side {label} ({side.name}) is a statistics file with only mu and sigma (TTUR / "
                "pytorch-fid): its N is unknown and the network it was made with cannot be checked"
            )
        elif side.weights_sha256 is None and not side.foreign:
            messages.append(
                f"side {label} ({side.name}) records no weights sha256: cannot check that both sides "
                "used the same Inception network"
            )
        if side.lossy:
            messages.append(
                f"side {label} ({side.name}) holds lossy (JPEG) images: FID against lossless images is "
                "not zero even for the same pictures, and published reference statistics (e.g. "
                "CIFAR-10) were made from lossless images"
            )
        if side.n_skipped:
            examples = "; ".join(f"{file}: {reason}" for file, reason in side.skipped[:3])
            messages.append(
                f"side {label} ({side.name}): {side.n_skipped} unreadable file(s) skipped (--skip-bad)"
                + (f", e.g. {examples}" if examples else "")
            )
    if side_a.weights_sha256 and side_b.weights_sha256 and side_a.weights_sha256 != side_b.weights_sha256:
        message = (
            f"the two sides were computed with different Inception weights (a: "
            f"{side_a.weights_sha256[:16]}..., b: {side_b.weights_sha256[:16]}...): their FID is not "
            "meaningful; recompute one side with the other's weights"
        )
        if not allow_weights_mismatch:
            raise InputError(message + " (or pass allow_weights_mismatch=True / --allow-weights-mismatch)")
        messages.append(message)
    if side_a.resize_mode and side_b.resize_mode and side_a.resize_mode != side_b.resize_mode:
        messages.append(
            f"the two sides were resized differently (a: {side_a.resize_mode}, b: {side_b.resize_mode}); "
            "FID across resize modes is biased"
        )
    del stats_a, stats_b  # the sides carry what is checked; kept in the signature for future checks
    return messages


def compute_fid(
    a: Any,
    b: Any,
    *,
    weights: Any = None,
    device: str = "auto",
    batch_size: int = 50,
    workers: int | None = None,
    skip_bad: bool = False,
    limit: int | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    hash_content: bool = False,
    exif_transpose: bool = False,
    progress: bool | None = None,
    extractor: FeatureExtractor | None = None,
    method: str = "auto",
    allow_weights_mismatch: bool = False,
) -> FidReport:
    """Return the Fréchet Inception Distance between two sources, with a report of how it was made.

    Parameters
    ----------
    a, b : path-like, numpy.ndarray, Stats, Source or iterable of numpy.ndarray
        Any source :func:`compute_stats` accepts. Statistics files and ``Stats`` skip the network.
    weights, device, batch_size, workers, skip_bad, limit, seed, use_cache, hash_content, exif_transpose, progress
        As in :func:`compute_stats`; `limit` and `seed` apply to each image side.
    extractor : FeatureExtractor, optional
        Use this extractor for both sides (and across calls). By default one is built, once, and only
        if a side needs the network.
    method : str
        The Fréchet route (see :func:`fidkit.frechet.frechet_distance`); ``"auto"`` picks the exact
        and fastest one.
    allow_weights_mismatch : bool
        Turn the error for sides recorded with different weights into a warning.

    Returns
    -------
    FidReport
        ``float(report)`` is the FID; ``report.to_dict()`` is JSON-ready.

    Warns
    -----
    FidkitWarning
        Lossy inputs, skipped files, statistics files without N or weights, differing resize modes.
    SmallSampleWarning
        N below the feature dimension (from the distance).

    Raises
    ------
    InputError
        Sides recorded with different weights (unless `allow_weights_mismatch`), or different
        feature dimensions.

    Examples
    --------
    >>> report = compute_fid("real/", "generated/")               # doctest: +SKIP
    >>> print(f"FID {float(report):.4f} (N = {report.a.n} vs {report.b.n})")  # doctest: +SKIP
    """
    keywords = dict(locals())  # the parameters only: nothing else is bound yet
    from fidkit import __version__
    from fidkit.frechet import fid_from_stats

    started = time.perf_counter()
    holder, side_options = _prepare_sides({name: keywords[name] for name in _STATS_KEYWORDS})
    stats_a, side_a = _compute_side(a, holder, **side_options)
    stats_b, side_b = _compute_side(b, holder, **side_options)
    messages = _consistency_warnings(
        stats_a, side_a, stats_b, side_b, allow_weights_mismatch=allow_weights_mismatch
    )
    for message in messages:
        warnings.warn(message, FidkitWarning, stacklevel=2)

    distance_started = time.perf_counter()
    frechet = fid_from_stats(stats_a, stats_b, method=method)
    distance_seconds = time.perf_counter() - distance_started
    messages.extend(str(message) for message in frechet.warnings)

    def common(field: str) -> str | None:
        values = [getattr(side, field) for side in (side_a, side_b) if getattr(side, field)]
        return ", ".join(dict.fromkeys(values)) if values else None

    timings = Timings(
        decode_seconds=side_a.decode_seconds + side_b.decode_seconds,
        network_seconds=side_a.network_seconds + side_b.network_seconds,
        distance_seconds=distance_seconds,
        total_seconds=time.perf_counter() - started,
    )
    return FidReport(
        value=float(frechet.value),
        frechet=frechet,
        a=side_a,
        b=side_b,
        weights_sha256=common("weights_sha256"),
        resize_mode=common("resize_mode"),
        provider=common("provider"),
        warnings=tuple(messages),
        timings=timings,
        fidkit_version=__version__,
    )
