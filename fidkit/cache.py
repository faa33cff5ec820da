"""The statistics cache: never compute the statistics of the same images with the same network twice.

Statistics of folder, archive and array sources are stored under ``cache_home()/stats/`` as ordinary
fidkit statistics files, one per key. The key is a sha256 over everything that decides the numbers:

- the source's fingerprint (sorted relative paths, sizes and modification times, or a content hash with
  ``hash_content=True``; the limit, seed and EXIF option are part of it, and for image files Pillow's
  ``MAX_IMAGE_PIXELS`` when it is not Pillow's default; taken when the source is opened),
- the feature extractor's identity (:mod:`fidkit.extractors`: its name, the weights' sha256, the resize, the
  exporter version, the engine and the precision; not the graph file, so a look-up needs no export),
- what the entry holds: statistics, or the feature rows (kept when a metric needs them),
- the statistics format version of :mod:`fidkit.statsfile` (the colour policy version of
  :mod:`fidkit.sources` is part of the fingerprint),
- this module's own layout version.

Change any of them and the key changes, so a stale entry is never found rather than found and
invalidated. Entries are written atomically (a temporary file renamed into place), so two processes
computing the same entry at once both succeed and the last rename wins; both wrote valid, identical
statistics. An entry that cannot be read, or whose recorded key is not the key it is stored under, is
removed with a log message and recomputed, never trusted.

Beside each ``<key>.npz`` a small ``<key>.json`` holds what ``fidkit cache list`` shows (source name,
N, creation time), so listing does not read every 32 MiB covariance. The ``.npz`` is the truth: a
missing or stale sidecar only makes listing slower.

The cache stays under ``$FIDKIT_CACHE_MAX_BYTES`` (default 2 GiB, ``unlimited`` for no limit; a value below
one byte is an error): after each store the least recently used entries go (:func:`evict_cache`; a hit
refreshes the entry's modification time). Eviction removes only entries fidkit recognisably wrote
(:func:`fidkit.home.is_cache_entry`); ``fidkit cache clear`` is :func:`fidkit.home.clear_cache`, re-exported here.

The cache never fails a run: an entry that cannot be read or removed (a read-only cache) is a miss, with one
warning naming the source it was for; a store that cannot be written is a warning too. ``stats/`` may be a
symbolic link to a folder elsewhere: reading, writing, listing, eviction and clearing all follow it alike
(:func:`fidkit.home.followed`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fidkit import statsfile
from fidkit._fs import atomic_write, file_size_limit_fix, out_of_space
from fidkit._home_dir import cache_home
from fidkit.errors import InputError, StatsFileError
from fidkit.home import (
    CACHE_KEY_METADATA,
    CACHE_MAX_BYTES_ENV,
    DEFAULT_CACHE_MAX_BYTES,
    STATS_SUBDIR,
    ClearedCache,
    cache_max_bytes,
    check_home_folder,
    clear_cache,
    entry_files,
    _is_regular_file,
    followed,
    is_cache_entry,
)
from fidkit.stats import relabelled

if TYPE_CHECKING:  # pragma: no cover - typing only
    from fidkit.features import Features
    from fidkit.stats import Stats

__all__ = [
    "CACHE_LAYOUT_VERSION", "CACHE_KEY_METADATA", "CACHE_MAX_BYTES_ENV", "DEFAULT_CACHE_MAX_BYTES",
    "CacheEntry", "ClearedCache", "stats_cache_dir", "cache_key", "cache_max_bytes", "cache_size_bytes",
    "load_cached_stats", "store_cached_stats", "load_cached_features", "store_cached_features",
    "list_cache", "clear_cache", "is_cache_entry", "evict_cache", "utc_now_iso",
]

logger = logging.getLogger(__name__)

#: Version of the key recipe and entry layout in this module; bump it to orphan every old entry.
CACHE_LAYOUT_VERSION = 3


def stats_cache_dir(root: str | os.PathLike | None = None) -> Path:
    """Return the folder that holds cached statistics: ``cache_home()/stats`` unless `root` is given."""
    return Path(root) if root is not None else cache_home() / STATS_SUBDIR


def cache_key(
    source_fingerprint: str,
    identity: Mapping[str, Any] | None = None,
    *,
    product: str = "stats",
    stats_format_version: int | None = None,
    **identity_fields: Any,
) -> str:
    """Return the hex sha256 that names the cache entry of one source under one feature extractor.

    Parameters
    ----------
    source_fingerprint : str
        ``source.fingerprint(hash_content=...)``; it covers the files, the subset, the EXIF option, the
        colour policy version of :mod:`fidkit.sources` and a pixel limit other than Pillow's default.
    identity : mapping of str to str
        The extractor's identity (:meth:`fidkit.extractors.ExtractorIdentity.as_dict`): its name, the weights'
        sha256, the resize, the engine and the precision. Keyword `identity_fields` are added to it.
    product : {"stats", "features"}
        What the entry holds: statistics, or the feature rows they reduce.
    stats_format_version : int, optional
        Default: the statistics file format (:data:`fidkit.statsfile.STATS_FORMAT_VERSION`) of this fidkit;
        explicit values are for tests.

    Returns
    -------
    str
        64 hex characters.
    """
    if stats_format_version is None:
        stats_format_version = statsfile.STATS_FORMAT_VERSION  # read at call time: tests change it
    fields = {str(k): str(v) for k, v in {**dict(identity or {}), **identity_fields}.items()}
    recipe = {
        "cache_layout_version": CACHE_LAYOUT_VERSION,
        "source_fingerprint": str(source_fingerprint),
        "extractor_identity": fields,
        "product": str(product),
        "stats_format_version": int(stats_format_version),
    }
    # Canonical JSON (sorted keys, no whitespace) so the same recipe always hashes the same.
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _entry_path(key: str, root: str | os.PathLike | None) -> Path:
    return stats_cache_dir(root) / f"{key}.npz"


def _sidecar_path(entry: Path) -> Path:
    return entry.with_suffix(".json")


#: Folders of the statistics cache already warned about as not writable by this process: warned once, then
#: only logged at debug level (a read-only cache would otherwise warn at every lookup and every store).
_WARNED_UNWRITABLE: set[str] = set()


def _warn_unwritable_once(folder: Path, message: str, *args: object) -> None:
    if str(folder) in _WARNED_UNWRITABLE:
        logger.debug(message, *args)
        return
    _WARNED_UNWRITABLE.add(str(folder))
    logger.warning(message, *args)


def _short_reason(error: BaseException, entry: Path) -> str:
    """An error's text without the entry's path (said once already) and without advice meant for a user's file."""
    text = str(error).removeprefix(f"{entry}: ").split("; ")[0]
    return f"{type(error).__name__}: {text}"


def _source_label(source_name: str) -> str:
    return f"{source_name}: " if source_name else ""


def _discard(entry: Path, reason: str, source_name: str = "") -> None:
    """Remove an untrustworthy entry (and its sidecar) so that the caller recomputes it.

    A cache that cannot be written (read-only) keeps the entry: it is ignored all the same, with one warning.
    """
    label = _source_label(source_name)
    try:
        for path in (entry, _sidecar_path(entry)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    except OSError as error:
        _warn_unwritable_once(
            entry.parent,
            "%sthe statistics cache entry %s is corrupt (%s) and cannot be removed (%s): it is ignored and the "
            "statistics are computed from the source, not cached (the cache folder %s is not writable)",
            label, entry, reason, error.strerror or error, entry.parent,
        )
        return
    logger.warning("%sremoving corrupt statistics cache entry %s (%s); recomputing it", label, entry, reason)


def _validate_entry(stats: Any, key: str) -> str | None:
    """Return why a loaded entry cannot be trusted, or None when it can.

    Shapes, NaN/inf and N < 2 are refused by ``Stats.load`` itself (a StatsFileError, handled as a
    corrupt entry by the caller); what only the cache can check is which key the entry belongs to and
    that it records N, as every entry fidkit writes does.
    """
    recorded_key = stats.metadata.get(CACHE_KEY_METADATA)
    if recorded_key != key:
        return f"it records key {recorded_key!r}, not the key it is stored under"
    if stats.n is None:
        return "it does not record N"
    return None


def load_cached_features(
    key: str, *, root: str | os.PathLike | None = None, source_name: str = ""
) -> Features | None:
    """The cached feature rows stored under `key`, or None on a miss (a corrupt entry is removed, as for
    statistics: see :func:`load_cached_stats`)."""
    from fidkit.features import Features

    return _load_entry(key, root, Features.load, source_name)


def store_cached_features(
    key: str, features: Features, *, source_name: str = "", source_kind: str = "",
    root: str | os.PathLike | None = None,
) -> None:
    """Store feature rows under `key`, atomically, under the same size limit and LRU as statistics; the file
    records the key, `features` is not modified."""
    keyed = relabelled(features, metadata={**features.metadata, CACHE_KEY_METADATA: key}, path=None)  # all outputs
    _store_entry(key, keyed, source_name=source_name, source_kind=source_kind, root=root)


def load_cached_stats(key: str, *, root: str | os.PathLike | None = None, source_name: str = "") -> Stats | None:
    """Return the cached statistics stored under `key`, or None on a miss.

    A corrupt entry (unreadable file, not a statistics file, a recorded key that differs from `key`,
    non-finite values) is removed, logged at WARNING level, and reported as a miss; one that cannot be
    removed (a read-only cache) is a miss too. Reading the cache never fails a run.

    Parameters
    ----------
    key : str
        From :func:`cache_key`.
    root : path-like, optional
        The statistics cache folder; default ``cache_home()/stats``.
    source_name : str, optional
        The source the entry is for, as the user gave it: warnings name it.

    Returns
    -------
    Stats or None

    Raises
    ------
    InputError
        ``$FIDKIT_CACHE_MAX_BYTES`` is not a valid limit (checked here, before anything is computed, rather
        than when the result is stored).
    """
    from fidkit.stats import Stats

    return _load_entry(key, root, Stats.load, source_name)


def _load_entry(key: str, root: str | os.PathLike | None, load: Any, source_name: str) -> Any:
    """The entry under `key` read with `load` (``Stats.load`` or ``Features.load``), or None on a miss."""
    cache_max_bytes()
    entry = _entry_path(key, root)
    if not _is_file(entry):  # missing, or in a folder that cannot be searched: a miss
        return None
    try:
        loaded = load(entry)
    except Exception as error:  # noqa: BLE001 - any failure to read means the entry is not trustworthy
        if not _is_file(entry):
            # Removed (evicted, cleared) by another process while it was read: an ordinary miss, and nothing
            # to discard (another process may already have stored a new entry under this name).
            return None
        _discard(entry, _short_reason(error, entry), source_name)
        return None
    problem = _validate_entry(loaded, key)
    if problem is not None:
        _discard(entry, problem, source_name)
        return None
    # The modification time is the entry's last use: the least recently used go first when over the limit.
    with contextlib.suppress(OSError):
        os.utime(entry)
    _restore_sidecar(entry, key, loaded, source_name)
    logger.debug("cache hit: %s", entry)
    # Messages about these numbers name the user's input (the report's side), not a hashed file in the cache;
    # the key is the entry's own business (checked above), not something a caller could save into its file.
    return relabelled(loaded, metadata=_without_key(loaded.metadata), path=None)


def _without_key(metadata: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in metadata.items() if name != CACHE_KEY_METADATA}


def _not_a_file_here(path: Path) -> bool:
    """Something other than a regular file is at `path` (a folder, a FIFO, a link): nothing fidkit wrote."""
    return os.path.lexists(path) and not _is_regular_file(path)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _local_path_of(source_name: str) -> str:
    """The absolute path a source name stands for when it names something here ("" for a dataset name or a URI):
    ``fidkit cache list`` tells apart two folders called ``real`` by it."""
    if not source_name or "://" in source_name:
        return ""
    try:
        path = Path(source_name).expanduser()
        return str(path.resolve()) if path.exists() else ""
    except (OSError, RuntimeError, ValueError):
        return ""


def store_cached_stats(
    key: str,
    stats: Stats,
    *,
    source_name: str = "",
    source_kind: str = "",
    root: str | os.PathLike | None = None,
) -> None:
    """Store `stats` under `key`, atomically. The file records the key (a look-up checks it); `stats` is not
    modified.

    Writing the cache never fails a run: an error while writing (read-only or full disk) is logged.

    Parameters
    ----------
    key : str
        From :func:`cache_key`.
    stats : Stats
        The statistics to store; not modified.
    source_name, source_kind : str
        Shown by ``fidkit cache list``; a name that is a local path is recorded as its absolute path too.
    root : path-like, optional
        The statistics cache folder; default ``cache_home()/stats``.
    """
    keyed = relabelled(stats, metadata={**stats.metadata, CACHE_KEY_METADATA: key})
    _store_entry(key, keyed, source_name=source_name, source_kind=source_kind, root=root)


def _write_sidecar(entry: Path, key: str, keyed: Any, *, source_name: str, source_kind: str) -> None:
    """Write the ``<key>.json`` beside `entry`: what ``fidkit cache list`` shows of `keyed` (statistics or features)."""
    sidecar = {
        "key": key,
        "source_name": source_name,
        "source_path": _local_path_of(source_name),
        "source_kind": source_kind,
        "content": type(keyed).__name__.lower(),
        "n": keyed.n,
        "dim": int(keyed.dim),
        "created": str(keyed.metadata.get("created", "")),
    }
    with atomic_write(_sidecar_path(entry), overwrite=True) as tmp_path:
        tmp_path.write_text(json.dumps(sidecar, indent=1), encoding="utf-8")


def _restore_sidecar(entry: Path, key: str, loaded: Any, source_name: str) -> None:
    """Write the sidecar of an entry that has none (a run killed between the two writes), on a hit: else the entry
    is listed from its whole file on every ``cache list``. Anything at the sidecar's name is left alone."""
    if os.path.lexists(_sidecar_path(entry)):
        return
    recorded = loaded.metadata
    try:
        _write_sidecar(entry, key, loaded, source_name=source_name or str(recorded.get("source_name", "")),
                       source_kind=str(recorded.get("source_kind", "")))
    except OSError as error:  # a read-only cache: listing reads the entry instead, as before
        logger.debug("could not restore the sidecar of %s (%s)", entry, error)


def _store_entry(
    key: str, keyed: Any, *, source_name: str, source_kind: str, root: str | os.PathLike | None, again: bool = False,
) -> None:
    """Write `keyed` (statistics or features recording `key`) and its sidecar, then evict; never fails a run."""
    entry = _entry_path(key, root)
    what = "statistics" if type(keyed).__name__ == "Stats" else "features"
    try:
        # overwrite=True: a concurrent writer may have stored the same entry first; both are valid
        # and the rename is atomic, so the last one simply wins.
        keyed.save(entry, overwrite=True)
        _write_sidecar(entry, key, keyed, source_name=source_name, source_kind=source_kind)
        logger.debug("stored cache entry %s for %s", entry, source_name)
        evict_cache(keep=key, root=root)
    except (OSError, StatsFileError, InputError, TypeError, ValueError) as error:
        # Stats.save reports an unwritable destination as StatsFileError (naming the path and advising another
        # --save path, which is not the fix here); the sidecar write raises the plain OSError. Neither may fail
        # the run, and the warning says which source went uncached and what to do about the folder.
        cause = error.__cause__ if isinstance(error.__cause__, OSError) else error
        if isinstance(cause, FileNotFoundError) and not again:  # `cache clear` removed the empty folder meanwhile
            return _store_entry(key, keyed, source_name=source_name, source_kind=source_kind, root=root, again=True)
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else _short_reason(error, entry)
        limit_fix = file_size_limit_fix(cause, "set FIDKIT_HOME to a folder on another file system")
        # A folder, FIFO or link at the entry's (or sidecar's) name: no permission would help, and fidkit never
        # deletes what it did not write.
        blocker = next((path for path in (entry, _sidecar_path(entry)) if _not_a_file_here(path)), None)
        fix = (f"{limit_fix}; or pass --no-cache" if limit_fix is not None else
               "free disk space there, set FIDKIT_HOME to a folder on another disk, or pass --no-cache"
               if out_of_space(cause) else
               f"remove {blocker} (fidkit did not write it and never deletes it), or pass --no-cache"
               if blocker is not None else
               f"make {entry.parent} writable, set FIDKIT_HOME to a writable folder, or pass --no-cache")
        _warn_unwritable_once(
            entry.parent,
            "%sthe %s are not cached: could not write the %s cache entry %s (%s); %s",
            _source_label(source_name), what, what, entry, reason, fix,
        )


def evict_cache(
    *, keep: str | None = None, max_bytes: int | None = None, root: str | os.PathLike | None = None
) -> list[Path]:
    """Remove the least recently used statistics entries until the cache is within its size limit.

    Run after every store. Only entries fidkit wrote (:func:`is_cache_entry`) are removed, with their
    sidecars, and never the entry `keep` (the one just written), even when it alone is over the limit.

    Parameters
    ----------
    keep : str, optional
        A key that stays.
    max_bytes : int, optional
        The limit; default :func:`cache_max_bytes` (``$FIDKIT_CACHE_MAX_BYTES``, 2 GiB). 0: no limit (what
        ``unlimited`` gives).
    root : path-like, optional
        The statistics cache folder; default ``cache_home()/stats``.

    Returns
    -------
    list of Path
        The entries removed.
    """
    limit = cache_max_bytes() if max_bytes is None else int(max_bytes)
    if limit <= 0:
        return []  # unlimited
    entries = entry_files(stats_cache_dir(root))
    total = sum(size for _, size, _ in entries)
    evicted: list[Path] = []
    for path, size, _ in sorted(entries, key=lambda item: item[2]):
        if total <= limit:
            break
        if path.stem == keep or not is_cache_entry(path):
            continue
        for member in (path, _sidecar_path(path)):
            with contextlib.suppress(FileNotFoundError):
                member.unlink()
        total -= size
        evicted.append(path)
    if evicted:
        logger.info(
            "removed %d least recently used statistics cache entr%s to stay under %s (%s=%d bytes)",
            len(evicted), "y" if len(evicted) == 1 else "ies", f"{limit / 1024**3:.3g} GiB", CACHE_MAX_BYTES_ENV,
            limit,
        )
    return evicted


def cache_size_bytes(*, root: str | os.PathLike | None = None) -> int:
    """Return the bytes the statistics cache entries (and their sidecars) take, as the limit counts them."""
    return sum(size for _, size, _ in entry_files(stats_cache_dir(root)))


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One statistics cache entry as ``fidkit cache list`` shows it.

    Attributes
    ----------
    key : str
        The entry's key (file stem).
    path : Path
        The ``.npz`` file.
    size_bytes : int
        Size of the ``.npz`` plus its sidecar.
    source_name, source_kind : str
        What the statistics were computed from ("" when unknown).
    n : int or None
        Number of images.
    created : str
        UTC ISO time the statistics were computed ("" when unknown).
    modified : datetime
        When the entry was last written or read (UTC): over the size limit, the oldest go first.
    source_path : str
        The absolute path of the source when its name was a local path ("" for a dataset name, a URI, or an
        entry written by an older fidkit).
    content : str
        What the entry holds: ``"stats"`` or ``"features"`` (the rows, kept when they were asked for).
    """

    key: str
    path: Path
    size_bytes: int
    source_name: str
    source_kind: str
    n: int | None
    created: str
    modified: datetime
    source_path: str = ""
    content: str = "stats"

    @property
    def source(self) -> str:
        """The source as ``fidkit cache list`` shows it: its absolute path where known, else its name."""
        return self.source_path or self.source_name

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "key": self.key,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "source_name": self.source_name,
            "source_path": self.source_path,
            "source_kind": self.source_kind,
            "content": self.content,
            "n": self.n,
            "created": self.created,
            "modified": self.modified.isoformat(timespec="seconds"),
        }


def _describe_entry(entry: Path) -> CacheEntry | None:
    try:
        entry_stat = entry.stat()
    except FileNotFoundError:
        return None
    sidecar = _sidecar_path(entry)
    size_bytes = entry_stat.st_size
    info: Mapping[str, Any] = {}
    try:
        if not _is_regular_file(sidecar):  # a FIFO would block the read for ever; a folder or link is not fidkit's
            raise FileNotFoundError(sidecar)
        info = json.loads(sidecar.read_text(encoding="utf-8"))
        if not isinstance(info, Mapping):
            raise ValueError("the sidecar is not a JSON object")
        size_bytes += sidecar.stat().st_size
    except (OSError, ValueError):
        # No usable sidecar (a run killed between the two writes): read the entry itself, as what it holds.
        from fidkit.features import Features, is_features_file
        from fidkit.stats import Stats

        try:
            loaded = Features.load(entry) if is_features_file(entry) else Stats.load(entry)
            info = {
                "n": loaded.n,
                "created": loaded.metadata.get("created", ""),
                "source_name": loaded.metadata.get("source_name", ""),
                "source_kind": loaded.metadata.get("source_kind", ""),
                "content": type(loaded).__name__.lower(),
            }
        except Exception as error:  # noqa: BLE001 - listing must not fail on a bad entry
            info = {"source_name": f"(unreadable: {type(error).__name__})"}
    n_value = info.get("n")
    return CacheEntry(
        key=entry.stem,
        path=entry,
        size_bytes=size_bytes,
        source_name=str(info.get("source_name", "")),
        source_kind=str(info.get("source_kind", "")),
        n=int(n_value) if isinstance(n_value, int) else None,
        created=str(info.get("created", "")),
        modified=datetime.fromtimestamp(entry_stat.st_mtime, tz=timezone.utc),
        source_path=str(info.get("source_path", "") or ""),
        # The sidecar says what the entry holds ("stats" or "features"; "stats" for entries of older fidkits).
        content=str(info.get("content", "stats") or "stats"),
    )


def list_cache(*, root: str | os.PathLike | None = None) -> list[CacheEntry]:
    """Return the statistics cache entries, newest first.

    Parameters
    ----------
    root : path-like, optional
        The statistics cache folder; default ``cache_home()/stats``.

    Raises
    ------
    InputError
        The cache home (or `root`), or a name on the way to it, is not a folder
        (:func:`fidkit.home.check_home_folder`): a run could not use it either, so "no entries" would hide it; so
        is a ``stats/`` there that is not a folder. One that is a link to nowhere is only empty here; ``clear_cache``
        names it.
    """
    if root is None:
        check_home_folder(cache_home(), "list the statistics cache in the cache home", inside=(STATS_SUBDIR,))
    else:
        check_home_folder(root, "list the statistics cache", fix="pass a folder as root=")
    folder = followed(stats_cache_dir(root))
    if not folder.is_dir():  # not made yet: nothing cached
        return []
    entries = [_describe_entry(path) for path, _, _ in entry_files(folder)]
    present = [entry for entry in entries if entry is not None]
    return sorted(present, key=lambda entry: entry.modified, reverse=True)


def utc_now_iso() -> str:
    """Return the current UTC time as ISO 8601 with seconds, e.g. ``2026-11-22T17:30:35+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
