"""Image files in a folder, a zip archive or a tar archive.

Listing
-------
* A folder is walked recursively. Symbolic links to files and to folders are followed; each real
  folder is read once (under its own name when it has one inside the folder, else under the first
  link to it), so links that loop end. Files whose extension, compared case-insensitively, is one
  of :data:`~fidkit.sources.decode.IMAGE_EXTENSIONS` are images; other files are ignored.
* Nothing image-like is dropped without a count: hidden folders (dot-folders such as
  ``.ipynb_checkpoints`` and ``.thumbnails``, ``@eaDir``, ``__MACOSX``, ``$RECYCLE.BIN``) are not
  entered, and image formats fidkit does not read (``.gif``, ``.heic``, ...) and special files
  (FIFOs, sockets, devices) are not read; each reason is counted in ``source.ignored`` and logged
  as a warning. The same rules hold for archive members.
* A subfolder that cannot be listed is a :class:`~fidkit.errors.SourceError` naming it; with
  ``skip_bad`` it is a counted skip, listed in ``source.skipped`` as ``("sub/", reason)``.
* Zip and tar archives (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``) are read in place,
  never extracted to disk. A tar hard link is read as the bytes of the member it links to, a tar
  symbolic link as the member it points to inside the archive; links to nothing in the archive,
  device, FIFO and other special members are not read, and are counted in ``source.ignored``.
* A member name stored more than once (``a.png`` twice, or ``a.png`` and ``./a.png``): the last
  copy in the archive is read, as ``tar`` and ``unzip`` extract it; the earlier copies are counted
  in ``source.ignored`` and a warning names the member. The same rule holds for zip and tar.
* Damage to an archive's structure (a damaged header in the middle of a tar, corrupt compressed
  data, a truncated file, an unsupported zip version) is a :class:`~fidkit.errors.SourceError`
  naming the archive, also with ``skip_bad``: what follows the damage is unknown, so it cannot be
  a counted skip. A compressed tar is decompressed to its end when opened, so its checksum is
  checked before any image is counted.
* macOS resource-fork debris (anything under ``__MACOSX/`` and files named ``._*``) is ignored:
  it carries image extensions but holds no image.
* Names are relative POSIX paths (``cat/001.png``), sorted as strings: the order, and so a
  ``limit``/``seed`` subset, is the same on every platform and for the same images in a folder or
  in an archive.

Memory
------
A file or member larger than any image within Pillow's ``MAX_IMAGE_PIXELS`` could need is refused
by its size (``os.fstat``, the zip member's declared size, the tar header) before it is read, as a
bad file naming it. Decoded images waiting for a full batch are emitted early as smaller batches
once they pass :data:`_PENDING_PIXEL_BYTES`, so a batch of huge images does not hold gigabytes.

Tar archives compressed as a whole have no random access: a worker reading members out of archive
order decompresses from the start again. Each worker reads its chunk in archive order, and
archives written with sorted names (Python's ``tarfile``, ``tar --sort=name``) read in one pass.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import os
import posixpath
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np

from fidkit._fs import sha256_file
from fidkit.errors import ImageError, SourceError
from fidkit.sources.base import SizeGrouper, Source, empty_source_error, select_indices, size_mtime
from fidkit.sources.decode import IMAGE_EXTENSIONS, file_too_large_error
from fidkit.sources.parallel import MemberReader, decode_stream, resolve_workers

__all__ = [
    "FolderReader",
    "ZipReader",
    "TarReader",
    "FileSource",
    "open_folder",
    "open_archive",
    "is_archive",
    "refuse_special_file",
]

logger = logging.getLogger(__name__)

_LOSSY_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})
# Longest chain of symbolic links followed inside an archive (a loop ends there, unread).
_MAX_LINK_HOPS = 40
# How many example names the warning about ignored files gives per reason.
_NAMED_IGNORED = 3
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# Decoded pixel bytes that may wait for a full batch before what waits is emitted early.
_PENDING_PIXEL_BYTES = 256 * 2**20
# How many bad files an error message names before saying "and N more".
_NAMED_BAD_FILES = 5


class _Ignored:
    """Files seen but deliberately not read, by reason: counted and reported, never dropped unseen."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    def add(self, reason: str, name: str, count: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + count
        examples = self.examples.setdefault(reason, [])
        if len(examples) < _NAMED_IGNORED:
            examples.append(name)

    def report(self, source_name: str) -> None:
        for reason, count in self.counts.items():
            logger.warning(
                "%s: %d %s ignored: %s (e.g. %s)",
                source_name,
                count,
                "entry" if count == 1 else "entries",
                reason,
                ", ".join(self.examples[reason]),
            )


# Folders that hold tool debris, not a dataset's images: skipped by default, and counted.
_HIDDEN_FOLDER_NAMES = frozenset(
    {"__MACOSX", "@eaDir", "$RECYCLE.BIN", "System Volume Information", "#recycle", "#snapshot"}
)
# Image formats fidkit does not read: such files are counted as ignored, never dropped unseen.
_UNREAD_IMAGE_EXTENSIONS = frozenset(
    {".gif", ".apng", ".heic", ".heif", ".avif", ".jxl", ".jp2", ".j2k", ".jpx", ".ppm", ".pgm",
     ".pbm", ".pnm", ".pcx", ".tga", ".ico", ".icns", ".dds", ".psd", ".svg", ".exr", ".hdr",
     ".dng", ".cr2", ".nef", ".arw", ".pjpeg", ".pjp"}
)
_HIDDEN_FOLDER = "hidden folder, not read (dot-folders such as .ipynb_checkpoints, @eaDir, __MACOSX)"
_IN_HIDDEN_FOLDER = "image in a hidden folder, not read (dot-folders such as .ipynb_checkpoints, @eaDir)"
_NOT_REGULAR = "not a regular file (FIFO, socket, device or other special file), not read"


def is_hidden_folder(folder_name: str) -> bool:
    """True for a folder name skipped by default: dot-folders and NAS / OS debris folders."""
    return folder_name.startswith(".") or folder_name in _HIDDEN_FOLDER_NAMES


def _classify(relative: str) -> str | None:
    """None for an image file to read; ``""`` for a file that is no image (or macOS debris);
    otherwise the reason an image-like file is deliberately not read (counted and reported)."""
    path = PurePosixPath(relative)
    if path.name.startswith("._") or "__MACOSX" in path.parts:
        return ""
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        if any(is_hidden_folder(part) for part in path.parts[:-1]):
            return _IN_HIDDEN_FOLDER
        return None
    if suffix in _UNREAD_IMAGE_EXTENSIONS:
        return f"image format fidkit does not read ({suffix}); convert such files to PNG to include them"
    return ""


def is_image_name(relative: str) -> bool:
    """True when a relative POSIX name is an image fidkit reads: an image extension, not macOS
    debris, not inside a hidden folder."""
    return _classify(relative) is None


def _normalise_member(member: str) -> str:
    # Archives written on Windows or with "tar -C dir ." name members "a\\b.png" or "./a/b.png";
    # strip that so the names equal the folder's relative paths.
    member = member.replace("\\", "/")
    while member.startswith("./"):
        member = member[2:]
    return member.lstrip("/")


def is_archive(path: Path) -> bool:
    """True when `path` names a zip or tar archive by its suffix."""
    lower = path.name.lower()
    return lower.endswith(".zip") or lower.endswith(_TAR_SUFFIXES)


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def refuse_special_file(path: Path, name: str) -> None:
    """Raise :class:`SourceError` when `path` is neither a regular file nor a folder.

    Opening a FIFO blocks until a writer appears, and reading a device may never end: such paths are
    refused before anything opens them. Paths that cannot be stat'ed are left to the caller.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise SourceError(
            f"{name}: is {_file_kind(mode)}, not a regular file or a folder; fidkit reads images "
            "from files and folders only (reading it could block forever): save the data to a file"
        )


@dataclass
class FolderReader:
    """Reads members of a folder by relative POSIX name."""

    root: Path

    def read(self, member: str, max_bytes: int | None = None) -> bytes:
        path = self.root / member
        # Non-blocking, so that a file swapped for a FIFO since listing cannot hang the open; the
        # flag does nothing to a regular file's reads.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(descriptor, "rb") as stream:
            mode = os.fstat(stream.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise ImageError(f"{member}: is {_file_kind(mode)}, not a regular file; not read")
            if max_bytes is None:
                return stream.read()
            size = os.fstat(stream.fileno()).st_size
            if size > max_bytes:
                raise file_too_large_error(member, size, max_bytes)
            # Ask for the size it has (a read asking for more reserves that much first); a file
            # growing meanwhile is read on, up to the bound.
            data = stream.read(size + 1)
            if len(data) > size:
                data += stream.read(max_bytes + 1 - len(data))
            if len(data) > max_bytes:
                raise file_too_large_error(member, len(data), max_bytes)
            return data

    def close(self) -> None:
        return None


@dataclass
class ZipReader:
    """Reads members of a zip archive; the archive is opened on first use in each process."""

    path: Path
    # Normalised name -> name as stored, only for the few members whose stored name differs.
    stored_names: dict[str, str] = field(default_factory=dict)
    _archive: zipfile.ZipFile | None = field(default=None, repr=False)

    def read(self, member: str, max_bytes: int | None = None) -> bytes:
        if self._archive is None:
            try:
                self._archive = zipfile.ZipFile(self.path)
            except _ARCHIVE_ERRORS as exc:
                # Readable when listed, not now: changed or damaged since; no member can be trusted.
                raise _damaged_archive_error(str(self.path), exc) from exc
        info = self._archive.getinfo(self.stored_names.get(member, member))
        # zipfile never returns more than the member's declared size, so checking that bounds
        # memory even when the compressed data would inflate further.
        if max_bytes is not None and info.file_size > max_bytes:
            raise file_too_large_error(member, info.file_size, max_bytes)
        return self._archive.read(info)

    def close(self) -> None:
        if self._archive is not None:
            self._archive.close()
            self._archive = None

    def __getstate__(self) -> dict[str, Any]:
        # Open handles do not cross process boundaries; each worker opens its own.
        return {"path": self.path, "stored_names": self.stored_names, "_archive": None}


_TAR_OPENERS = {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}


@dataclass
class TarReader:
    """Reads members of a tar archive by seeking to their data; no ``tarfile`` parse per worker.

    `members` maps each name to ``(offset of its data, size)`` in the uncompressed stream.
    """

    path: Path
    compression: str  # "", "gz", "bz2" or "xz"
    members: dict[str, tuple[int, int]]
    _stream: IO[bytes] | None = field(default=None, repr=False)

    def read(self, member: str, max_bytes: int | None = None) -> bytes:
        offset, size = self.members[member]
        if max_bytes is not None and size > max_bytes:
            raise file_too_large_error(member, size, max_bytes)
        if offset < 0:
            # A hard link whose target is not an earlier member: nothing to read for this member.
            raise ImageError(f"{member}: a hard link to a file that is not in the archive")
        try:
            if self._stream is None:
                opener = _TAR_OPENERS.get(self.compression, open)
                self._stream = opener(self.path, "rb")
            self._stream.seek(offset)
            data = self._stream.read(size)
        except _ARCHIVE_ERRORS as exc:
            # The stream itself is damaged (or the file changed since it was listed): what the
            # archive holds after this point is unknown, so this is no single bad file.
            raise _damaged_archive_error(str(self.path), exc) from exc
        if len(data) != size:
            raise SourceError(
                f"{self.path}: the archive ends {size - len(data)} bytes early inside member {member}; "
                "it is truncated or changed since it was opened: copy or download it again"
            )
        return data

    def read_order(self, members: list[str]) -> list[str]:
        """The order to read `members` in: archive order, so a compressed stream only seeks ahead."""
        return sorted(members, key=lambda member: self.members[member][0])

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "compression": self.compression, "members": self.members, "_stream": None}


def _tar_compression(path: Path) -> str:
    with open(path, "rb") as stream:
        magic = stream.read(6)
    if magic[:2] == b"\x1f\x8b":
        return "gz"
    if magic[:3] == b"BZh":
        return "bz2"
    if magic == b"\xfd7zXZ\x00":
        return "xz"
    return ""


class FileSource(Source):
    """Images stored as files in a folder or an archive, decoded under the colour policy.

    Built by :func:`open_folder` / :func:`open_archive` (through ``open_source``).
    """

    def __init__(
        self,
        kind: str,
        name: str,
        reader: MemberReader,
        members: list[str],
        identity: Callable[[bool], Any],
        *,
        n_available: int,
        limit: int | None,
        seed: int | None,
        skip_bad: bool,
        exif_transpose: bool,
        workers: int | None,
        ignored: _Ignored | None = None,
        skipped_at_open: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(
            name,
            n_images=len(members),
            n_available=n_available,
            limit=limit,
            seed=seed,
            exif_transpose=exif_transpose,
            lossy=any(PurePosixPath(m).suffix.lower() in _LOSSY_EXTENSIONS for m in members),
        )
        self.kind = kind
        self.members = members
        self.skip_bad = skip_bad
        self.workers = resolve_workers(workers)
        self._reader = reader
        self._identity_of = identity
        ignored = ignored if ignored is not None else _Ignored()
        #: ``{reason: count}`` of the files and folders seen but deliberately not read (hidden
        #: folders, image formats fidkit does not read, special files, duplicate archive members,
        #: links to nothing). Each reason is also logged as a warning when the source is opened.
        self.ignored: dict[str, int] = dict(ignored.counts)
        ignored.report(name)
        # Subfolders skipped as unreadable (skip_bad) when listing: part of every run's `skipped`.
        self._skipped_at_open = list(skipped_at_open or [])
        self.skipped = list(self._skipped_at_open)

    def _identity(self, *, hash_content: bool) -> Any:
        # Computed when asked, from the files as they are now: a fingerprint taken after reading
        # differs from one taken before if a file changed meanwhile (the cache uses this to avoid
        # storing statistics of half-old, half-new files).
        return self._identity_of(hash_content)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        grouper = SizeGrouper(batch_size)  # checks batch_size
        self.skipped = list(self._skipped_at_open)
        bad: list[tuple[str, str]] = []
        any_lossy = False
        n_good = 0
        pending_bytes = 0
        stream = decode_stream(
            self._reader, self.members, workers=self.workers, exif_transpose=self.exif_transpose
        )
        try:
            for outcome in stream:
                if outcome.pixels is None:
                    bad.append((outcome.name, outcome.reason or "unknown error"))
                    if not self.skip_bad and len(bad) == 1:
                        logger.debug("%s: first bad file %s; counting the rest", self.name, outcome.name)
                    continue
                n_good += 1
                any_lossy = any_lossy or outcome.lossy
                if bad and not self.skip_bad:
                    continue  # keep decoding only to count bad files; yield nothing more
                ready = grouper.add(outcome.pixels)
                pending_bytes += outcome.pixels.nbytes - sum(batch.nbytes for batch in ready)
                if pending_bytes > _PENDING_PIXEL_BYTES:
                    # Few huge images fill memory long before batch_size of them wait: emit what
                    # waits as smaller batches (statistics do not depend on batch boundaries).
                    ready += grouper.finish()
                    pending_bytes = 0
                yield from ready
        finally:
            stream.close()
        if bad and not self.skip_bad:
            raise _bad_files_error(self.name, bad, len(self.members))
        self.skipped = self._skipped_at_open + bad
        self._lossy = any_lossy
        if bad:
            logger.warning("%s: skipped %d bad file(s), first %s: %s", self.name, len(bad), *bad[0])
        if n_good == 0:
            detail = f"all {len(bad)} files were bad, first {bad[0][0]}: {bad[0][1]}" if bad else ""
            raise empty_source_error(self.name, detail)
        yield from grouper.finish()


def _bad_files_error(name: str, bad: list[tuple[str, str]], n_files: int) -> ImageError:
    named = "; ".join(f"{member}: {reason}" for member, reason in bad[:_NAMED_BAD_FILES])
    more = f"; and {len(bad) - _NAMED_BAD_FILES} more" if len(bad) > _NAMED_BAD_FILES else ""
    return ImageError(
        f"{name}: {len(bad)} of {n_files} image files could not be decoded ({named}{more}); "
        "fix or remove them, or pass --skip-bad (skip_bad=True) to skip them"
    )


def _unreadable_folder(name: str, relative: str, exc: OSError) -> SourceError:
    where = f"its subfolder {relative}/" if relative else "the folder"
    return SourceError(
        f"{name}: cannot read {where} ({type(exc).__name__}: {exc.strerror or exc}); its images would "
        "be missing from the count: fix its permissions, or pass --skip-bad (skip_bad=True) to skip "
        "it as a counted skip"
    )


def _walk_images(
    root: Path, name: str, *, skip_bad: bool, ignored: _Ignored
) -> tuple[list[str], int, list[tuple[str, str]]]:
    """Return the sorted relative names of image files under `root`, the number of other files
    seen (for the message when there is no image), and the ``(folder/, reason)`` of subfolders
    that could not be read (only with `skip_bad`; without it they raise :class:`SourceError`).

    Symbolic links to folders are followed; every real folder is read once, under its own name
    when it has one inside `root` (real folders are walked before links), so loops end. Hidden
    folders are not entered; they, image formats fidkit does not read and special files are
    counted in `ignored`.
    """
    found: list[str] = []
    n_other = 0
    unreadable: list[tuple[str, str]] = []
    seen: set[tuple[int, int]] = set()
    # Folders reached through real names first; folders reached through a link after them all.
    real: list[tuple[str, str]] = [("", str(root))]
    linked: list[tuple[str, str]] = []
    while real or linked:
        relative, folder = real.pop() if real else linked.pop()
        try:
            info = os.stat(folder)
            key = (info.st_dev, info.st_ino)
            if key in seen:
                ignored.add("folder already read under another name (a link to it, or a loop)", f"{relative}/")
                continue
            seen.add(key)
            with os.scandir(folder) as listing:
                children = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            if not relative or not skip_bad:
                raise _unreadable_folder(name, relative, exc) from exc
            logger.warning("%s: cannot read subfolder %s/ (%s); skipped (--skip-bad)", name, relative, exc)
            unreadable.append((f"{relative}/", f"unreadable folder ({type(exc).__name__}: {exc.strerror or exc})"))
            continue
        subfolders: list[tuple[str, str]] = []
        sublinks: list[tuple[str, str]] = []
        for entry in children:
            child = f"{relative}/{entry.name}" if relative else entry.name
            try:
                is_folder = entry.is_dir()  # follows links; False for a dangling one
            except OSError:
                is_folder = False
            if is_folder:
                if is_hidden_folder(entry.name):
                    ignored.add(_HIDDEN_FOLDER, f"{child}/")
                elif entry.is_symlink():
                    sublinks.append((child, entry.path))
                else:
                    subfolders.append((child, entry.path))
                continue
            reason = _classify(child)
            if reason == "":
                n_other += 1
                continue
            if reason is not None:
                ignored.add(reason, child)
                continue
            try:
                mode = entry.stat().st_mode  # follows links
            except OSError as exc:
                # A dangling link or a file removed meanwhile: decoding will report it as bad.
                logger.debug("cannot stat %s: %s", entry.path, exc)
                found.append(child)
                continue
            if not stat.S_ISREG(mode):
                ignored.add(_NOT_REGULAR, child)
                continue
            found.append(child)
        # Reversed, so that popping walks them in name order (only the choice among several names
        # of one folder depends on the order, and it is fixed).
        real.extend(reversed(subfolders))
        linked[:0] = reversed(sublinks)
    found.sort()
    return found, n_other, unreadable


def _empty_detail(what: str, n_other: int, ignored: _Ignored, unreadable: list[tuple[str, str]]) -> str:
    kinds = "/".join(sorted(IMAGE_EXTENSIONS))
    detail = f"no {kinds} {what}; {n_other} other {what} ignored"
    for reason, count in ignored.counts.items():
        detail += f"; {count} ignored: {reason}"
    if unreadable:
        detail += f"; {len(unreadable)} unreadable folder(s) skipped, first {unreadable[0][0]}"
    return detail


def open_folder(
    path: Path,
    name: str,
    *,
    limit: int | None,
    seed: int | None,
    skip_bad: bool,
    exif_transpose: bool,
    workers: int | None,
) -> FileSource:
    """Open a folder of image files (recursive)."""
    root = path.resolve()
    ignored = _Ignored()
    entries, n_other, unreadable = _walk_images(root, name, skip_bad=skip_bad, ignored=ignored)
    if not entries:
        ignored.report(name)
        raise empty_source_error(name, _empty_detail("files", n_other, ignored, unreadable))
    indices, limit_used, seed_used = select_indices(len(entries), limit, seed)
    members = [entries[i] for i in indices]

    def identity(hash_content: bool) -> dict[str, Any]:
        if hash_content:
            # Location-independent: the same files copied elsewhere hit the same cache entry.
            return {"members": [[member, sha256_file(root / member)] for member in members]}
        return {"root": str(root), "members": [[member, *size_mtime(root / member)] for member in members]}

    return FileSource(
        "folder",
        name,
        FolderReader(root),
        members,
        identity,
        n_available=len(entries),
        limit=limit_used,
        seed=seed_used,
        skip_bad=skip_bad,
        exif_transpose=exif_transpose,
        workers=workers,
        ignored=ignored,
        skipped_at_open=unreadable,
    )


# What zipfile, tarfile and the decompressors raise on a damaged archive. NotImplementedError is
# zipfile's answer to an unknown "version needed to extract" or compression method.
_ARCHIVE_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    RuntimeError,  # NotImplementedError, and zipfile's "password required"
    KeyError,
    IndexError,
    OverflowError,
    struct.error,
    zlib.error,
    lzma.LZMAError,
    tarfile.TarError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
)


def _damaged_archive_error(name: str, exc: BaseException) -> SourceError:
    reason = str(exc) or "no detail"
    return SourceError(
        f"{name}: the archive is damaged ({type(exc).__name__}: {reason}); what follows the damage "
        "cannot be read, so no count of its images can be trusted: copy or download it again"
    )


def _warn_duplicate(name: str, member: str) -> None:
    logger.warning(
        "%s: member %s appears more than once; the last copy in the archive is read (as tar and unzip "
        "extract it), the earlier ones are ignored",
        name,
        member,
    )


def _list_zip(
    archive: Path, name: str, ignored: _Ignored
) -> tuple[dict[str, tuple[int, int]], dict[str, str], int]:
    try:
        with zipfile.ZipFile(archive) as zipped:
            infos = zipped.infolist()
    except _ARCHIVE_ERRORS as exc:
        raise SourceError(
            f"{name}: not a readable zip archive ({type(exc).__name__}: {exc}); check that it is a "
            "complete zip file (copy or download it again)"
        ) from exc
    entries: dict[str, tuple[int, int]] = {}
    stored_names: dict[str, str] = {}
    n_other = 0
    for info in infos:
        member = _normalise_member(info.filename)
        if info.is_dir():
            continue
        reason = _classify(member)
        mode = info.external_attr >> 16
        if reason is None and info.create_system == 3 and stat.S_IFMT(mode) and not stat.S_ISREG(mode):
            # A Unix mode stored with the member: a link (its bytes are a path) or a special file.
            reason = "symbolic link member of a zip, not followed" if stat.S_ISLNK(mode) else _NOT_REGULAR
        if reason is not None:
            if reason:
                ignored.add(reason, member)
            else:
                n_other += 1
            continue
        if member in entries:
            _warn_duplicate(name, member)
            ignored.add("duplicate member name (an earlier copy, not read)", member)
        entries[member] = (int(info.file_size), int(info.CRC))
        # Read by the name of this, the last, copy: zipfile's name lookup gives the last member
        # stored under a name, which is this one.
        if member != info.filename:
            stored_names[member] = info.filename
        else:
            stored_names.pop(member, None)
    return entries, stored_names, n_other


def _tar_link_target(member: str, info: tarfile.TarInfo) -> str | None:
    """The normalised name a link member points to, or None when it points out of the archive."""
    if info.islnk():
        # Hard links name their target from the archive's root.
        return _normalise_member(info.linkname)
    link = info.linkname.replace("\\", "/")
    if link.startswith("/"):
        return None
    target = posixpath.normpath(posixpath.join(posixpath.dirname(member), link))
    if target == ".." or target.startswith("../"):
        return None
    return _normalise_member(target)


def _list_tar(
    archive: Path, name: str, ignored: _Ignored
) -> tuple[str, dict[str, tuple[int, int]], int]:
    regular: dict[str, tuple[int, int]] = {}  # every regular member so far, by normalised name
    entries: dict[str, tuple[int, int]] = {}
    symlinks: dict[str, str | None] = {}
    n_other = 0
    try:
        compression = _tar_compression(archive)
        with tarfile.open(archive, "r:*") as tarred:
            while (info := tarred.next()) is not None:
                member = _normalise_member(info.name)
                if info.isreg() and info.sparse is None:
                    regular[member] = (int(info.offset_data), int(info.size))
                elif info.islnk():
                    # A hard link holds no data: it is the target's bytes, the copy stored before it.
                    target = _tar_link_target(member, info)
                    regular[member] = regular.get(target, (-1, 0)) if target is not None else (-1, 0)
                if info.isdir():
                    continue
                reason = _classify(member)
                if reason is not None:
                    if reason:
                        ignored.add(reason, member)
                    else:
                        n_other += 1
                    continue
                if not (info.isreg() or info.islnk() or info.issym()):
                    ignored.add(_NOT_REGULAR, member)
                    continue
                if info.sparse is not None:
                    ignored.add("sparse member (not supported)", member)
                    continue
                if member in entries or member in symlinks:
                    _warn_duplicate(name, member)
                    ignored.add("duplicate member name (an earlier copy, not read)", member)
                    entries.pop(member, None)
                    symlinks.pop(member, None)
                if info.issym():
                    symlinks[member] = _tar_link_target(member, info)
                else:
                    entries[member] = regular[member]
            _check_tar_end(tarred, compression)
    except _ARCHIVE_ERRORS as exc:
        if isinstance(exc, tarfile.ReadError) and not entries and not regular:
            raise SourceError(
                f"{name}: not a readable tar archive ({exc}); check that it is a complete tar file"
            ) from exc
        raise _damaged_archive_error(name, exc) from exc
    for member, target in sorted(symlinks.items()):
        # Symbolic links are read as the member they point to, as a folder's links are; one pointing
        # out of the archive or at nothing cannot be read.
        for _ in range(_MAX_LINK_HOPS):
            if target is None or target not in symlinks:
                break
            target = symlinks[target]
        if target is not None and target in regular and regular[target][0] >= 0:
            entries[member] = regular[target]
        else:
            ignored.add("symbolic link to nothing in the archive (not read)", member)
    return compression, entries, n_other


def _check_tar_end(tarred: tarfile.TarFile, compression: str) -> None:
    """Raise ``tarfile.ReadError`` unless the listing stopped at the archive's real end.

    ``tarfile`` ends its listing silently at a damaged header in the middle of an archive; what it
    read until then looks like a complete, smaller archive. The archive's end is either two zero
    blocks or the end of the file; anything else after the last member is damage.
    """
    stream = tarred.fileobj
    stream.seek(tarred.offset)
    block = stream.read(tarfile.BLOCKSIZE)
    if block.count(0) != len(block):
        raise tarfile.ReadError(
            f"damaged member header at byte {tarred.offset} of the tar data, after {len(tarred.members)} "
            "members"
        )
    if compression:
        # Decompress to the end, so that corrupt data or a checksum mismatch after the last member
        # shows now, not as a missing image later.
        while stream.read(1 << 20):
            pass


def open_archive(
    path: Path,
    name: str,
    *,
    limit: int | None,
    seed: int | None,
    skip_bad: bool,
    exif_transpose: bool,
    workers: int | None,
) -> FileSource:
    """Open a zip or tar archive of image files, read in place."""
    archive = path.resolve()
    ignored = _Ignored()
    is_zip = archive.name.lower().endswith(".zip")
    compression = ""
    # Zip: name -> (size, crc); tar: name -> (offset of its data, size). Either is enough to tell
    # members apart without reading them.
    if is_zip:
        entries, stored_names, n_other = _list_zip(archive, name, ignored)
    else:
        compression, entries, n_other = _list_tar(archive, name, ignored)
    if not entries:
        ignored.report(name)
        raise empty_source_error(name, _empty_detail("members", n_other, ignored, []))
    sorted_members = sorted(entries)
    indices, limit_used, seed_used = select_indices(len(sorted_members), limit, seed)
    members = [sorted_members[i] for i in indices]
    reader: MemberReader
    if is_zip:
        reader = ZipReader(archive, {m: stored_names[m] for m in members if m in stored_names})
        member_entries = [[member, *entries[member]] for member in members]
    else:
        reader = TarReader(archive, compression, {member: entries[member] for member in members})
        # (name, size, offset): the order fingerprints have always used.
        member_entries = [[member, entries[member][1], entries[member][0]] for member in members]

    def identity(hash_content: bool) -> dict[str, Any]:
        if hash_content:
            return {"archive_sha256": sha256_file(archive), "members": members}
        size, mtime_ns = size_mtime(archive)
        return {"archive": str(archive), "size": size, "mtime_ns": mtime_ns, "members": member_entries}

    return FileSource(
        "archive",
        name,
        reader,
        members,
        identity,
        n_available=len(sorted_members),
        limit=limit_used,
        seed=seed_used,
        skip_bad=skip_bad,
        exif_transpose=exif_transpose,
        workers=workers,
        ignored=ignored,
    )
