"""Folders of images behind an object-store URI (``s3://``, ``gs://``, ``hdfs://``, ``file://``), best effort.

Used with cluster="ray", whose actors on other nodes read the files themselves: a prefix is listed once
on the driver through ``pyarrow.fs`` (installed with ``ray[data]``), its image files are sorted by
their names relative to the prefix, exactly like a local folder's (a ``file://`` folder is walked as the same
folder given as a path is: links followed once, dangling ones listed), and every process that reads a
member opens the file system again from the URI (credentials come from the environment of each
node, as pyarrow finds them: ``AWS_*`` variables, instance roles, ``GOOGLE_APPLICATION_CREDENTIALS``).

Only folders (prefixes) are read; an archive behind a URI is refused with a message to mount or
download it. The listing rules (hidden folders and image formats fidkit does not read are counted in
``source.ignored`` and warned about), decoding, the colour policy and bad files are those of any other folder.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from fidkit._streams import RESTATED
from fidkit.errors import SourceError
from fidkit.sources import FileSource
from fidkit.sources.archives import is_archive
from fidkit.sources.base import ReadOptions, empty_source_error
from fidkit.sources.decode import file_too_large_error
from fidkit.sources.files import (
    HIDDEN_FOLDER,
    NOT_REGULAR,
    FolderListing,
    Ignored,
    is_hidden_folder,
    iter_folder_images,
    open_members,
)

__all__ = ["is_uri", "open_uri", "ArrowReader"]

logger = logging.getLogger(__name__)

# A scheme of two or more letters: "C://" style Windows drive letters are paths, not URIs.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def is_uri(spec: Any) -> bool:
    """True for a string such as ``s3://bucket/prefix`` (a scheme, then ``://``)."""
    return isinstance(spec, str) and _URI.match(spec) is not None


def _file_system(uri: str) -> tuple[Any, str]:
    try:
        import pyarrow.fs
    except ImportError as exc:
        raise SourceError(
            f"{uri}: reading URIs needs pyarrow (installed with ray[data]: pip install \"fidkit[ray]\")"
        ) from exc
    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ... per scheme
        raise SourceError(f"{uri}: cannot open this URI's file system ({type(exc).__name__}: {exc})") from exc


@dataclass
class ArrowReader:
    """Reads members under a URI prefix; each process opens the file system from the URI on first use."""

    uri: str
    _fs: Any = field(default=None, repr=False)
    _root: str = field(default="", repr=False)

    def read(self, member: str, max_bytes: int | None = None) -> bytes:
        """The object's bytes; refused unread (by the size the store reports) when above `max_bytes`."""
        if self._fs is None:
            self._fs, self._root = _file_system(self.uri)
        path = f"{self._root.rstrip('/')}/{member}"
        if max_bytes is not None:
            size = self._fs.get_file_info(path).size
            if size is not None and size > max_bytes:
                raise file_too_large_error(member, int(size), max_bytes)
        with self._fs.open_input_stream(path) as stream:
            return bytes(stream.read() if max_bytes is None else stream.read(max_bytes + 1))

    def close(self) -> None:
        self._fs = None

    def __getstate__(self) -> dict[str, Any]:
        # File system objects hold connections and credentials: every process makes its own.
        return {"uri": self.uri, "_fs": None, "_root": ""}


def open_uri(uri: str, read: ReadOptions) -> FileSource:
    """A ``"folder"`` source over the image files under `uri`, listed recursively and sorted by name."""
    fs, root = _file_system(uri)  # first: it says what to install when pyarrow is missing
    import pyarrow.fs

    root = root.rstrip("/")
    try:
        top = fs.get_file_info(root)
        if top.type == pyarrow.fs.FileType.File:
            if is_archive(PurePosixPath(root)):  # type: ignore[arg-type]
                raise SourceError(f"{uri}: archives behind a URI are not read; mount or download it, or unpack it")
            raise SourceError(f"{uri}: a single file; point at a prefix (folder) of images")
        if top.type == pyarrow.fs.FileType.NotFound:
            raise SourceError(f"{uri}: no such prefix (folder)")
        local = isinstance(fs, pyarrow.fs.LocalFileSystem)
        if not local:
            infos = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
    except SourceError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise SourceError(f"{uri}: cannot list it ({type(exc).__name__}: {exc})") from exc
    unreadable: list[tuple[str, str]] = []
    if local:
        # file://: pyarrow's recursive listing follows links to folders without noticing a folder met twice (its
        # images would be read twice) and drops a dangling link without a word; the walk of a local folder lists
        # exactly what the same folder given as a path does. Object stores have no links.
        found, ignored, unreadable = _walk_local(root, uri, skip_bad=read.skip_bad)
    else:
        found, ignored = _classify_listing(infos, root)
    if not found:
        ignored.report(uri)
        ignored_detail = "".join(f"; {count} ignored: {reason}" for reason, count in ignored.counts.items())
        if unreadable:
            ignored_detail += f"; {len(unreadable)} unreadable folder(s) skipped, first {unreadable[0][0]}"
        raise empty_source_error(uri, f"no image files; {ignored.n_other} other files ignored{ignored_detail}")

    def identity(members: list[str], hash_content: bool) -> dict[str, Any]:
        # Sizes and modification times as the store reports them (hash_content is not offered: it
        # would download every object on the driver).
        return {"uri": uri, "members": [[member, *found[member]] for member in members]}

    return open_members(
        "folder", uri, sorted(found), make_reader=lambda members: ArrowReader(uri), identity=identity,
        read=read, ignored=ignored, skipped_at_open=unreadable,
    )


def _walk_local(
    root: str, uri: str, *, skip_bad: bool
) -> tuple[dict[str, tuple[int, int]], Ignored, list[tuple[str, str]]]:
    """The image files under the local folder `root` of a ``file://`` URI, by the walk of a folder source
    (:func:`~fidkit.sources.files.iter_folder_images`): name -> (size, mtime_ns) after following links (-1, -1 for
    one that cannot be stat'ed, which decoding reports as a bad file), what was not read (with the other files in
    its n_other), and the subfolders that could not be read (skipped with `skip_bad`, else an error)."""
    listing = FolderListing(Ignored())
    found: dict[str, tuple[int, int]] = {}
    for member, info in iter_folder_images(Path(root), uri, listing, skip_unreadable=skip_bad):
        # As pyarrow reports a local file (and an actor's check of the listing reads it): size, mtime in ns.
        found[member] = (-1, -1) if info is None else (int(info.st_size), int(info.st_mtime_ns))
    for folder, reason in listing.unreadable:
        logger.warning("%s: cannot read subfolder %s (%s); skipped (--skip-bad)", uri, folder, reason,
                       extra=RESTATED)
    return found, listing.ignored, listing.unreadable


def _classify_listing(infos: list[Any], root: str) -> tuple[dict[str, tuple[int, int]], Ignored]:
    """The image files of a recursive listing under `root` (name -> (size, mtime_ns)), what was deliberately not
    read (counted by reason, as a local folder's walk counts it, and the other files in its n_other).

    A hidden folder (``.ipynb_checkpoints``, ``__MACOSX``, ...) counts once, under its name, as the walk of a folder
    that does not enter it counts it: object stores have no folders, so it is known by the names under it (and by
    its own entry where the store lists one). Image formats fidkit does not read are counted by reason; entries
    that are neither files nor folders (a local special file) as not regular files.
    """
    import pyarrow.fs

    found: dict[str, tuple[int, int]] = {}
    ignored = Ignored()
    hidden: set[str] = set()
    for info in sorted(infos, key=lambda info: info.path):
        relative = info.path[len(root) + 1:] if info.path.startswith(root + "/") else info.path
        parts = relative.split("/")
        is_folder = info.type == pyarrow.fs.FileType.Directory
        folders = parts if is_folder else parts[:-1]
        first_hidden = next((index for index, part in enumerate(folders) if is_hidden_folder(part)), None)
        if first_hidden is not None:
            folder = "/".join(parts[:first_hidden + 1])
            if folder not in hidden:
                hidden.add(folder)
                ignored.add(HIDDEN_FOLDER, f"{folder}/")
            continue
        if is_folder:
            continue
        if not ignored.admit(relative):
            continue
        if info.type != pyarrow.fs.FileType.File:
            ignored.add(NOT_REGULAR, relative)
        else:
            found[relative] = (int(info.size if info.size is not None else -1), int(info.mtime_ns or -1))
    return found, ignored

