"""The cache home (``$FIDKIT_HOME``): what fidkit writes there, how it recognises its own files, and clearing it.

fidkit writes, under :func:`fidkit._home_dir.cache_home`, only these folders: ``stats/`` (the statistics cache,
:mod:`fidkit.cache`), ``onnx/`` (graphs built from the weights), ``weights/`` (the downloaded weights),
``datasets/`` (downloaded named datasets), ``locks/`` (download locks) and ``tensorrt/`` (onnxruntime's
engine cache). Each file it writes has an exact name; :func:`clear_cache` removes a file only when it has
such a name and, where the name alone could lie, its contents say the same (a cache entry records its key,
a download matches its published checksum). Everything else is kept and reported. How much ``stats/`` may hold
is :func:`cache_max_bytes` (``$FIDKIT_CACHE_MAX_BYTES``), read here and by :mod:`fidkit.cache`'s eviction.

Symbolic links: the cache home and each of these folders may be a link to a folder elsewhere (a bigger disk);
every reader, writer, the size limit and :func:`clear_cache` follow it alike (:func:`followed`), and leave the
link itself in place. Below that level no link is ever followed: a linked file or folder inside is kept, not
entered or removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from fidkit._fs import HOME_SUBDIRS, file_digest, file_kind, is_temporary_name, not_a_folder, remove_stale_temporaries
from fidkit._home_dir import cache_home, expand_user
from fidkit.errors import InputError

__all__ = [
    "STATS_SUBDIR", "CACHE_KEY_METADATA", "CACHE_MAX_BYTES_ENV", "DEFAULT_CACHE_MAX_BYTES", "cache_max_bytes",
    "ClearedCache", "is_cache_entry", "entry_files", "followed", "clear_cache",
    "weights_files_read", "HOME_FIX", "check_home_folder",
]

logger = logging.getLogger(__name__)

#: The folder of the statistics cache under the cache home.
STATS_SUBDIR = "stats"
#: Metadata key, inside a cached statistics file, holding the key the entry was written under
#: (``fidkit stats --save`` drops it: a saved file is not a cache entry).
CACHE_KEY_METADATA = "cache_key"


#: Environment variable: the most the statistics cache may hold, e.g. ``500M``, ``2G``, ``1073741824``
#: (K, M, G, T are powers of 1024; a trailing ``B`` or ``iB`` is allowed); ``unlimited`` for no limit.
CACHE_MAX_BYTES_ENV = "FIDKIT_CACHE_MAX_BYTES"
#: The limit when the variable is not set: 2 GiB, about 60 entries of 2048-dimensional statistics.
DEFAULT_CACHE_MAX_BYTES = 2 * 1024**3
_SIZE_TEXT = re.compile(r"(?P<number>[-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?P<unit>[kmgt]?)(?:i?b)?", re.IGNORECASE)
_NO_LIMIT = "unlimited"


def cache_max_bytes() -> int:
    """Return the statistics cache's size limit in bytes from ``$FIDKIT_CACHE_MAX_BYTES`` (0: ``unlimited``).

    Read on every call; unset or empty gives the default (2 GiB).

    Raises
    ------
    InputError
        The value is not a size (``500M``, ``2G``, ``1073741824``, ``unlimited``), or is less than one byte
        (``0``, ``0.5``, a negative number): a limit that small would mean something else to each reader (no
        limit, no cache); to run without the cache pass ``--no-cache`` (``use_cache=False``).
    """
    text = os.environ.get(CACHE_MAX_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_CACHE_MAX_BYTES
    if text.lower() == _NO_LIMIT:
        return 0
    match = _SIZE_TEXT.fullmatch(text)
    value = 0
    if match is not None:
        scale = 1024 ** " kmgt".index(match.group("unit").lower() or " ")
        number = float(match.group("number")) * scale
        if not math.isfinite(number):  # 400 digits: beyond float, no limit anyone means
            raise InputError(
                f"{CACHE_MAX_BYTES_ENV}={text[:40]}... is too large to be a size; give a size such as 500M or 2G, "
                f"or {_NO_LIMIT!r} for no limit"
            )
        value = int(number)
    if value < 1:
        problem = "is less than one byte" if match is not None else "is not a size"
        raise InputError(
            f"{CACHE_MAX_BYTES_ENV}={text!r} {problem}: give the most the statistics cache may hold, at least one "
            f"byte (e.g. 500M, 2G; K, M, G, T are powers of 1024), or {_NO_LIMIT!r} for no limit; to run without "
            "the cache pass --no-cache (use_cache=False)"
        )
    return value


@dataclasses.dataclass(frozen=True)
class ClearedCache:
    """What :func:`clear_cache` removed, and what it left in place.

    Attributes
    ----------
    n_stats_entries : int
        Statistics entries removed.
    removed_paths : tuple of Path
        Every file removed (files only: no folder is ever removed).
    bytes_freed : int
        Their total size.
    kept : tuple of (Path, str)
        Files and folders left in place, each with the reason (not written by fidkit, not verifiable, in use).
    """

    n_stats_entries: int
    removed_paths: tuple[Path, ...]
    bytes_freed: int
    kept: tuple[tuple[Path, str], ...] = ()


#: What fidkit writes under the cache home, by exact name. Nothing else is ever removed.
_KEY_NAME = re.compile(r"[0-9a-f]{64}")
#: ``inception.runtime.graph_cache_path``: ``<sha256[:16]>-<exporter version>-<convention>.onnx`` (before
#: conventions, ``<sha256[:16]>-<exporter version>.onnx``), and beside it the ``.onnx.sha256`` recorded at its export.
_GRAPH_NAME = re.compile(r"[0-9a-f]{16}-[0-9A-Za-z.]+(-[0-9a-z-]+)?\.onnx(\.sha256)?")
#: ``_download._download_lock``: ``<downloaded file name>.<16 hex>.lock``.
_LOCK_NAME = re.compile(r"(?P<file>.+)\.[0-9a-f]{16}\.lock")
#: The member of a statistics ``.npz`` holding its metadata as JSON (``fidkit.statsfile``, format version 1).
_METADATA_MEMBER = "fidkit_metadata_json"


def weights_files_read(weights: str | os.PathLike | None) -> list[tuple[Path, str]]:
    """The weights files a run given `weights` (``--weights``) may read, each with what it is to the run.

    The file it loads (`weights`, else ``$FIDKIT_WEIGHTS``, else the cached download, as
    :func:`fidkit.inception.weights.locate_weights` looks), and the cached download in any case (every run
    without weights named loads it): an output path is checked against them so that no write replaces them.
    Nothing is hashed or downloaded here.
    """
    from fidkit.errors import WeightsError
    from fidkit.inception.weights import WEIGHTS_ENV, load_manifest, weights_cache_dir, weights_from_environment

    files: list[tuple[Path, str]] = []
    from_environment = weights_from_environment()
    if weights is not None:
        path = expand_user(weights, named="--weights / weights=", error=WeightsError)
        files.append((path, f"the Inception weights file it loads (--weights {weights})"))
    elif from_environment is not None:
        path = expand_user(from_environment, named=f"${WEIGHTS_ENV}", error=WeightsError)
        files.append((path, f"the Inception weights file it loads (${WEIGHTS_ENV})"))
    try:
        cached = weights_cache_dir() / load_manifest().file_name
    except WeightsError:  # a broken installation: said where the weights are needed
        return files
    except InputError:  # no cache home: there is no cached file to protect (a run that needs one says so)
        return files
    loaded = "it loads" if not files else f"every run without --weights or ${WEIGHTS_ENV} loads"
    files.append((cached, f"fidkit's cached Inception weights file, which {loaded}"))
    return files


def _is_regular_file(path: Path) -> bool:
    """True for a regular file that is not a symbolic link (never follow a link out of the cache)."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def followed(folder: str | os.PathLike) -> Path:
    """`folder`, or the folder it links to when it is a symbolic link to one (the cache home and its own folders
    may be links; every part of fidkit that reads, writes or cleans them goes where the link goes)."""
    path = Path(folder)
    try:
        if path.is_symlink() and path.is_dir():
            return path.resolve()
    except (OSError, RuntimeError):  # a loop of links: not a folder
        pass
    return path


#: The fix of a cache home fidkit cannot use, in every message that says so (a run's writes, ``cache list``,
#: ``cache clear``): FIDKIT_HOME comes before XDG_CACHE_HOME and HOME, so setting it is a fix whichever was used.
HOME_FIX = "set the environment variable FIDKIT_HOME to a writable folder"


def check_home_folder(
    folder: str | os.PathLike, doing: str, *, fix: str = HOME_FIX, inside: tuple[str, ...] = ()
) -> None:
    """Refuse a folder of the cache home that cannot be one, as a run that writes there would fail on it.

    `folder` (the cache home, or ``stats/`` under it) is fine when it is a folder, or a link to one, or when it
    does not exist yet under a folder (nothing is cached; writers create it). It is refused when it, or the
    first name on the way to it that exists, is something else: a file (``FIDKIT_HOME=notes.txt``), a link to
    a missing target or a loop, a FIFO; or when it cannot be looked at. Without this, ``cache list`` would say
    "no cached statistics" and ``cache clear`` "removed 0", exit status 0, where every run fails.

    The folders of `folder` named in `inside` (``stats``) are refused the same way when they exist and are not
    folders, links followed (``hh/stats`` a file, which a run warns about as it stores nothing there). A link among
    them to nowhere, or a loop, is not refused here: ``cache list`` shows it as empty and ``cache clear`` names it
    among what it kept (a folder on a disk not mounted now, say).

    Parameters
    ----------
    folder : path-like
        The folder to read.
    doing : str
        What could not be done, for the message (``"list the statistics cache"``).
    fix : str
        The message's advice; default :data:`HOME_FIX`.
    inside : tuple of str
        Names of folders the home holds (``HOME_SUBDIRS``) that must be folders where they exist.

    Raises
    ------
    InputError
        ``cannot <doing> <folder> (<name> is a file, not a folder); <fix>``.
    """
    path = Path(folder)
    _check_on_the_way(path, doing, fix)
    for name in inside:
        child = path / name
        if os.path.exists(child) and not os.path.isdir(child):  # a link to nowhere does not exist: left as said
            what, _ = not_a_folder(child)
            raise InputError(
                f"cannot {doing} {path} ({child} is {what}: fidkit keeps its {name} folder there); move it away, "
                f"or {fix}"
            )


def _check_on_the_way(path: Path, doing: str, fix: str) -> None:
    """:func:`check_home_folder` of `path` itself and the names on the way to it."""
    for step in (path, *path.parents):
        try:
            info = step.stat()  # follows links, as every reader and writer of the home does
        except (FileNotFoundError, NotADirectoryError):
            if os.path.lexists(step):  # a link to a missing target
                break
            continue  # not there yet: what is on the way decides
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                break
            raise InputError(f"cannot {doing} {path} ({step}: {exc.strerror or exc}); {fix}") from None
        if stat.S_ISDIR(info.st_mode):
            return
        break
    else:
        return
    what, _ = not_a_folder(step)
    raise InputError(f"cannot {doing} {path} ({step} is {what}); {fix}")


def _link_note(folder: Path) -> str | None:
    """Why a link at `folder` cannot be followed (it does not lead to a folder), or None."""
    if not folder.is_symlink():
        return None
    if followed(folder) != folder:
        return None
    try:
        target = os.readlink(folder)
    except OSError:
        target = "?"
    return f"a symbolic link to {target}, which is not a folder: fidkit cannot use it; remove it or point it at one"


def _recorded_key(entry: Path) -> str | None:
    """The key recorded in a statistics file's metadata (one small zip member is read), or None."""
    import numpy as np

    try:
        with np.load(entry, allow_pickle=False) as loaded:
            recorded = json.loads(str(loaded[_METADATA_MEMBER][()]))
    except Exception:  # noqa: BLE001 - anything unreadable is simply not a recognisable entry
        return None
    key = recorded.get(CACHE_KEY_METADATA) if isinstance(recorded, dict) else None
    return key if isinstance(key, str) else None


def _sidecar_key(sidecar: Path) -> str | None:
    try:
        recorded = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    key = recorded.get("key") if isinstance(recorded, dict) else None
    return key if isinstance(key, str) else None


def is_cache_entry(path: str | os.PathLike) -> bool:
    """True when `path` is a statistics cache entry fidkit wrote: a regular file ``<64 hex>.npz`` whose
    metadata records that same key. Only such files are ever evicted or cleared."""
    entry = Path(path)
    return (
        entry.suffix == ".npz" and _KEY_NAME.fullmatch(entry.stem) is not None and _is_regular_file(entry)
        and _recorded_key(entry) == entry.stem
    )


def entry_files(folder: Path) -> list[tuple[Path, int, float]]:
    """``(path, bytes with the sidecar, last use)`` of every file named like an entry: ``<64 hex>.npz``, regular."""
    found = []
    for path in _children(followed(folder)):
        if path.suffix != ".npz" or _KEY_NAME.fullmatch(path.stem) is None:
            continue
        try:
            info = path.lstat()
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        size = info.st_size
        sidecar = path.with_suffix(".json")
        if _is_regular_file(sidecar):
            with contextlib.suppress(OSError):
                size += sidecar.lstat().st_size
        found.append((path, size, info.st_mtime))
    return found


def _file_matches(path: Path, size: int, algorithm: str, digest: str) -> bool:
    try:
        return path.stat().st_size == size and file_digest(path, algorithm) == digest
    except OSError:
        return False


class _Clearing:
    """Collects what one :func:`clear_cache` call removed and kept."""

    def __init__(self) -> None:
        self.removed: list[Path] = []
        self.kept: list[tuple[Path, str]] = []
        self.bytes_freed = 0
        self.n_stats_entries = 0

    def remove(self, path: Path) -> bool:
        try:
            size = path.lstat().st_size
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as error:
            self.kept.append((path, f"could not be removed ({error.strerror or error})"))
            return False
        self.removed.append(path)
        self.bytes_freed += size
        return True

    def keep(self, path: Path, reason: str) -> None:
        if is_temporary_name(path.name):
            reason = "a temporary file of a fidkit run in progress (removed once that run is gone)"
        self.kept.append((path, reason))


def _children(folder: Path) -> list[Path]:
    if folder.is_symlink() or not folder.is_dir():
        return []
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def _clear_stats(folder: Path, run: _Clearing) -> None:
    children = _children(folder)
    removed_keys: set[str] = set()
    for path in children:
        if path.suffix == ".npz" and _KEY_NAME.fullmatch(path.stem):
            if is_cache_entry(path):
                if run.remove(path):
                    run.n_stats_entries += 1
                    removed_keys.add(path.stem)
            elif not _is_regular_file(path):
                run.keep(path, f"{_what_is(path)} at a cache entry's name: not written by fidkit; remove it by hand")
            else:
                run.keep(path, "named like a cache entry but does not record that key: not written by fidkit")
    for path in children:
        if path.suffix == ".npz" and _KEY_NAME.fullmatch(path.stem):
            continue
        if path.suffix == ".json" and _KEY_NAME.fullmatch(path.stem) and _is_regular_file(path):
            entry = path.with_suffix(".npz")
            # No file of fidkit's there any more (removed, missing, or a folder, FIFO or link in its place): the
            # sidecar describes nothing and is removed when it is fidkit's.
            entry_gone = path.stem in removed_keys or not _is_regular_file(entry)
            if entry_gone and _sidecar_key(path) == path.stem:
                run.remove(path)
                continue
            if not entry_gone:
                run.keep(path, f"the sidecar of {entry.name}, which is kept")
                continue
        run.keep(path, "not a statistics cache entry")


def _what_is(path: Path) -> str:
    """What `path` is, in words ("a folder", "a FIFO (named pipe)", "a symbolic link"), for the reasons kept."""
    try:
        mode = path.lstat().st_mode
    except OSError:
        return "something that is gone"
    return "a symbolic link" if stat.S_ISLNK(mode) else file_kind(mode)


def _clear_graphs(folder: Path, run: _Clearing) -> None:
    for path in _children(folder):
        if _GRAPH_NAME.fullmatch(path.name) and _is_regular_file(path):
            run.remove(path)
        else:
            run.keep(path, "not an ONNX graph fidkit built (<16 hex>-<version>-<convention>.onnx[.sha256])")


def _clear_weights(folder: Path, run: _Clearing) -> None:
    from fidkit.inception.weights import load_manifest

    manifest = load_manifest()
    for path in _children(folder):
        if path.name != manifest.file_name or not _is_regular_file(path):
            run.keep(path, f"not the downloaded weights file {manifest.file_name}")
        elif not _file_matches(path, manifest.size, "sha256", manifest.sha256):
            run.keep(path, "named like the released weights but not that file (size or sha256 differ)")
        else:
            run.remove(path)


def _dataset_files() -> dict[str, Any]:
    # Imported here, not at the top: only clearing needs the registry, and fidkit.sources is heavy.
    from fidkit.sources.named import DATASETS

    return {dataset.file.file_name: dataset.file for dataset in DATASETS.values()}


def _clear_datasets(folder: Path, run: _Clearing) -> None:
    known = _dataset_files()
    for path in _children(folder):
        file = known.get(path.name)
        if path.name == "verified.json" and _is_regular_file(path):
            run.remove(path)  # fidkit's record of checked files: rebuilt on the next use
        elif file is None or not _is_regular_file(path):
            run.keep(path, "not a dataset file fidkit downloads")
        elif not _file_matches(path, file.size, "md5", file.md5):
            run.keep(path, "named like a dataset file but not the published file (size or md5 differ)")
        else:
            run.remove(path)


def _clear_locks(folder: Path, run: _Clearing) -> None:
    from fidkit.inception.weights import load_manifest

    known = set(_dataset_files()) | {load_manifest().file_name}
    for path in _children(folder):
        match = _LOCK_NAME.fullmatch(path.name)
        if match is None or match.group("file") not in known or not _is_regular_file(path):
            run.keep(path, "not a download lock of fidkit")
            continue
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            run.remove(path)
            continue
        try:
            with open(path, "a+b") as handle:
                # Removed only while this process holds it: a lock in use by a download stays.
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                run.remove(path)
        except BlockingIOError:
            run.keep(path, "in use by a running download")
        except OSError as error:
            run.keep(path, f"could not be checked ({error.strerror or error})")


def clear_cache(*, include_models: bool = False, home: str | os.PathLike | None = None) -> ClearedCache:
    """Remove what fidkit wrote to its cache: the statistics, and with `include_models` more.

    Only files fidkit recognisably wrote are removed, by their exact names, never by folder:

    - ``stats/<64 hex>.npz`` whose metadata records that key, and its ``<64 hex>.json`` sidecar;
    - in each folder it clears, the temporary files of killed fidkit runs
      (:func:`fidkit._fs.remove_stale_temporaries`);
    - with `include_models`: ``onnx/<16 hex>-<version>-<convention>.onnx`` graphs (rebuilt from the weights on first use,
      a minute or so); ``weights/<manifest file>`` only when its size and sha256 are the released file's
      (downloaded again, 95 MB); ``datasets/<registered file name>`` only when its size and md5 are the
      published file's, and ``datasets/verified.json``; ``locks/<file>.<16 hex>.lock`` not held by a
      running download.

    Anything else (a user's file, a folder, a symbolic link, a file whose contents do not match) is kept
    and reported in :attr:`ClearedCache.kept`, and no folder is entered beyond these. No folder is removed, not
    even one left empty: fidkit cannot tell the folders it made from those made for it.

    Parameters
    ----------
    include_models : bool
        Also remove the graphs, the downloaded weights and datasets, and the download locks.
    home : path-like, optional
        The cache home; default :func:`fidkit._home_dir.cache_home`.

    Returns
    -------
    ClearedCache

    Raises
    ------
    InputError
        The home, or a name on the way to it, or a folder of it that would be cleared, is not a folder
        (:func:`check_home_folder`).
    """
    home_path = Path(home) if home is not None else cache_home()
    scans = [(STATS_SUBDIR, _clear_stats)]
    if include_models:
        scans += [("onnx", _clear_graphs), ("weights", _clear_weights), ("datasets", _clear_datasets)]
        scans += [("locks", _clear_locks)]
    # Every folder it would clear checked before anything is removed: a file where one is expected is an error, as
    # it is for a run, not "removed 0".
    check_home_folder(home_path, "clear the cache home", fix=HOME_FIX if home is None else "pass a folder as home=",
                      inside=tuple(name for name, _ in scans))
    run = _Clearing()
    for name, scan in scans:
        link = home_path / name
        folder = followed(link)
        note = _link_note(link)
        if note is not None:
            run.keep(link, note)
            continue
        if folder != link:
            logger.info("%s is a link to %s: clearing there", link, folder)
        # Temporaries of killed runs first (they are fidkit's by their exact names); live ones are kept. The
        # older, pid-less name form only in a folder of the home itself, not in one a link leads to.
        for path, size in remove_stale_temporaries(folder, older_names=folder == link):
            run.removed.append(path)
            run.bytes_freed += size
        scan(folder, run)
    if include_models:
        if (home_path / "tensorrt").exists():
            run.keep(home_path / "tensorrt", "TensorRT engine cache (names chosen by onnxruntime); remove it by hand")
    # No folder is removed, not even an emptied one: fidkit cannot tell one it made from one made for it (a mount
    # point, a folder with its own owner or permissions), and its writers make them again when needed.
    for path in _children(followed(home_path)):
        if path.name not in HOME_SUBDIRS:
            run.keep(path, "not a folder fidkit writes")
    for path in run.removed:
        logger.debug("removed %s", path)
    return ClearedCache(
        n_stats_entries=run.n_stats_entries, removed_paths=tuple(run.removed), bytes_freed=run.bytes_freed,
        kept=tuple(run.kept),
    )
