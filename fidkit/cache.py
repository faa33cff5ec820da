"""The statistics cache: never compute the statistics of the same images with the same network twice.

Statistics of folder, archive and array sources are stored under ``cache_home()/stats/`` as ordinary
fidkit statistics files, one per key. The key is a sha256 over everything that decides the numbers:

- the source's fingerprint (sorted relative paths, sizes and modification times, or a content hash with
  ``hash_content=True``; the limit, seed and EXIF option are part of it),
- the weights' sha256, the resize mode and the ONNX graph's sha256 of the feature extractor,
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
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fidkit._fs import atomic_write, cache_home
from fidkit.errors import StatsFileError
from fidkit import statsfile

if TYPE_CHECKING:  # pragma: no cover - typing only
    from fidkit.stats import Stats

__all__ = [
    "CACHE_LAYOUT_VERSION",
    "CACHE_KEY_METADATA",
    "CacheEntry",
    "ClearedCache",
    "stats_cache_dir",
    "cache_key",
    "load_cached_stats",
    "store_cached_stats",
    "list_cache",
    "clear_cache",
    "utc_now_iso",
]

logger = logging.getLogger(__name__)

#: Version of the key recipe and entry layout in this module; bump it to orphan every old entry.
CACHE_LAYOUT_VERSION = 2

#: Metadata key, inside a cached statistics file, holding the key the entry was written under
#: (``fidkit stats --save`` drops it: a saved file is not a cache entry).
CACHE_KEY_METADATA = "cache_key"

_STATS_SUBDIR = "stats"
#: Folders under the cache home that ``clear_cache(include_models=True)`` also empties: both can be
#: rebuilt (the graph from the weights, the weights by download), unlike user files.
_MODEL_SUBDIRS = ("onnx", "weights")


def stats_cache_dir(root: str | os.PathLike | None = None) -> Path:
    """Return the folder that holds cached statistics: ``cache_home()/stats`` unless `root` is given."""
    return Path(root) if root is not None else cache_home() / _STATS_SUBDIR


def cache_key(
    source_fingerprint: str,
    *,
    weights_sha256: str,
    resize_mode: str,
    graph_sha256: str = "",
    precision: str = "exact",
    stats_format_version: int | None = None,
) -> str:
    """Return the hex sha256 that names the cache entry of one source under one feature extractor.

    Parameters
    ----------
    source_fingerprint : str
        ``source.fingerprint(hash_content=...)``; it covers the files, the subset, the EXIF option and the
        colour policy version of :mod:`fidkit.sources`.
    weights_sha256 : str
        The sha256 of the Inception weights file the features come from.
    resize_mode : str
        The extractor's resize mode (``fidkit.inception.RESIZE_MODE``).
    graph_sha256 : str
        The sha256 of the ONNX graph that computes the features (empty for an extractor without one).
    precision : str
        ``"exact"`` or ``"fast"`` (FP16 TensorRT): statistics of the fast mode never stand in for exact ones.
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
    recipe = {
        "cache_layout_version": CACHE_LAYOUT_VERSION,
        "source_fingerprint": str(source_fingerprint),
        "weights_sha256": str(weights_sha256),
        "resize_mode": str(resize_mode),
        "graph_sha256": str(graph_sha256),
        "precision": str(precision),
        "stats_format_version": int(stats_format_version),
    }
    # Canonical JSON (sorted keys, no whitespace) so the same recipe always hashes the same.
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _entry_path(key: str, root: str | os.PathLike | None) -> Path:
    return stats_cache_dir(root) / f"{key}.npz"


def _sidecar_path(entry: Path) -> Path:
    return entry.with_suffix(".json")


def _discard(entry: Path, reason: str) -> None:
    """Remove an untrustworthy entry (and its sidecar) so that the caller recomputes it."""
    logger.warning("removing corrupt statistics cache entry %s (%s); recomputing it", entry, reason)
    for path in (entry, _sidecar_path(entry)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _validate_entry(stats: Stats, key: str) -> str | None:
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


def load_cached_stats(key: str, *, root: str | os.PathLike | None = None) -> Stats | None:
    """Return the cached statistics stored under `key`, or None on a miss.

    A corrupt entry (unreadable file, not a statistics file, a recorded key that differs from `key`,
    non-finite values) is removed, logged at WARNING level, and reported as a miss.

    Parameters
    ----------
    key : str
        From :func:`cache_key`.
    root : path-like, optional
        The statistics cache folder; default ``cache_home()/stats``.

    Returns
    -------
    Stats or None
    """
    from fidkit.stats import Stats

    entry = _entry_path(key, root)
    if not entry.is_file():
        return None
    try:
        stats = Stats.load(entry)
    except FileNotFoundError:
        # Removed by another process between is_file() and load(): an ordinary miss.
        return None
    except Exception as error:  # noqa: BLE001 - any failure to read means the entry is not trustworthy
        _discard(entry, f"{type(error).__name__}: {error}")
        return None
    problem = _validate_entry(stats, key)
    if problem is not None:
        _discard(entry, problem)
        return None
    logger.debug("statistics cache hit: %s", entry)
    return stats


def store_cached_stats(
    key: str,
    stats: Stats,
    *,
    source_name: str = "",
    source_kind: str = "",
    root: str | os.PathLike | None = None,
) -> Stats:
    """Store `stats` under `key`, atomically; return the statistics as stored (with the key recorded).

    Writing the cache never fails a run: an error while writing (read-only or full disk) is logged and
    the statistics are returned all the same.

    Parameters
    ----------
    key : str
        From :func:`cache_key`.
    stats : Stats
        The statistics to store; not modified.
    source_name, source_kind : str
        Shown by ``fidkit cache list``.
    root : path-like, optional
        The statistics cache folder; default ``cache_home()/stats``.

    Returns
    -------
    Stats
        A copy of `stats` whose metadata records the key.
    """
    metadata = dict(stats.metadata)
    metadata[CACHE_KEY_METADATA] = key
    keyed = dataclasses.replace(stats, metadata=metadata)
    entry = _entry_path(key, root)
    try:
        # overwrite=True: a concurrent writer may have stored the same entry first; both are valid
        # and the rename is atomic, so the last one simply wins.
        keyed.save(entry, overwrite=True)
        sidecar = {
            "key": key,
            "source_name": source_name,
            "source_kind": source_kind,
            "n": keyed.n,
            "dim": int(keyed.dim),
            "created": str(metadata.get("created", "")),
        }
        with atomic_write(_sidecar_path(entry), overwrite=True) as tmp_path:
            tmp_path.write_text(json.dumps(sidecar, indent=1), encoding="utf-8")
        logger.debug("stored statistics cache entry %s for %s", entry, source_name)
    except (OSError, StatsFileError) as error:
        # Stats.save reports an unwritable destination as StatsFileError (naming the path for users
        # who save by hand); the sidecar write raises the plain OSError. Neither may fail the run.
        logger.warning("could not write the statistics cache entry %s: %s", entry, error)
    return keyed


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
        When the file was last written (UTC).
    """

    key: str
    path: Path
    size_bytes: int
    source_name: str
    source_kind: str
    n: int | None
    created: str
    modified: datetime

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "key": self.key,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "source_name": self.source_name,
            "source_kind": self.source_kind,
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
        info = json.loads(sidecar.read_text(encoding="utf-8"))
        size_bytes += sidecar.stat().st_size
    except (OSError, ValueError):
        # No usable sidecar (written by an interrupted run): read the entry itself.
        from fidkit.stats import Stats

        try:
            stats = Stats.load(entry)
            info = {
                "n": stats.n,
                "created": stats.metadata.get("created", ""),
                "source_name": stats.metadata.get("source_name", ""),
                "source_kind": stats.metadata.get("source_kind", ""),
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
    )


def list_cache(*, root: str | os.PathLike | None = None) -> list[CacheEntry]:
    """Return the statistics cache entries, newest first.

    Parameters
    ----------
    root : path-like, optional
        The statistics cache folder; default ``cache_home()/stats``.
    """
    folder = stats_cache_dir(root)
    if not folder.is_dir():
        return []
    entries = [_describe_entry(path) for path in folder.glob("*.npz") if not path.name.startswith(".")]
    present = [entry for entry in entries if entry is not None]
    return sorted(present, key=lambda entry: entry.modified, reverse=True)


@dataclasses.dataclass(frozen=True)
class ClearedCache:
    """What :func:`clear_cache` removed.

    Attributes
    ----------
    n_stats_entries : int
        Statistics entries removed.
    removed_paths : tuple of Path
        Every file or folder removed.
    bytes_freed : int
        Their total size.
    """

    n_stats_entries: int
    removed_paths: tuple[Path, ...]
    bytes_freed: int


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(child.stat().st_size for child in path.rglob("*") if child.is_file())


def clear_cache(*, include_models: bool = False, home: str | os.PathLike | None = None) -> ClearedCache:
    """Remove the cached statistics, and with `include_models` the ONNX graphs and downloaded weights.

    Statistics are cheap to lose (they are recomputed on the next run). The ONNX graphs are rebuilt
    from the weights on first use (a minute or so), and the weights are downloaded again (95 MB), which
    is why they are only removed when asked.

    Parameters
    ----------
    include_models : bool
        Also remove ``onnx/`` and ``weights/`` under the cache home.
    home : path-like, optional
        The cache home; default :func:`fidkit._fs.cache_home`.

    Returns
    -------
    ClearedCache
    """
    home_path = Path(home) if home is not None else cache_home()
    removed: list[Path] = []
    bytes_freed = 0
    n_stats_entries = 0
    stats_folder = home_path / _STATS_SUBDIR
    if stats_folder.is_dir():
        for path in sorted(stats_folder.iterdir()):
            if not path.is_file():
                continue
            with contextlib.suppress(FileNotFoundError):
                size = path.stat().st_size
                path.unlink()
                removed.append(path)
                bytes_freed += size
                if path.suffix == ".npz" and not path.name.startswith("."):
                    n_stats_entries += 1
    if include_models:
        for name in _MODEL_SUBDIRS:
            folder = home_path / name
            if folder.exists():
                size = _tree_size(folder)
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
                bytes_freed += size
    for path in removed:
        logger.debug("removed %s", path)
    return ClearedCache(
        n_stats_entries=n_stats_entries, removed_paths=tuple(removed), bytes_freed=bytes_freed
    )


def utc_now_iso() -> str:
    """Return the current UTC time as ISO 8601 with seconds, e.g. ``2026-11-22T17:30:35+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
