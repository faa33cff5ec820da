"""Zip and tar archives of images, read in place with the listing rules of :mod:`fidkit.sources.files`.

Members are never extracted to disk. A tar hard link is read as the bytes of the member it links to, a
symbolic link as the member it points to inside the archive; a name stored more than once is read from
its last copy, in zip and tar alike. Damage to an archive's structure is a
:class:`~fidkit.errors.SourceError` naming the archive, also with ``skip_bad``. See
:mod:`fidkit.sources.files` for the whole set of rules.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import posixpath
import stat
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fidkit._fs import CHUNK_BYTES, sha256_file
from fidkit.errors import ImageError, SourceError
from fidkit.sources.base import empty_source_error, size_mtime
from fidkit.sources.decode import file_too_large_error
from fidkit.sources.files import (
    open_members,
    NOT_REGULAR,
    FileSource,
    Ignored,
    classify,
    empty_detail,
    normalise_member,
)
from fidkit.sources.parallel import MemberReader

__all__ = ["ZipReader", "TarReader", "open_archive", "is_archive"]

logger = logging.getLogger(__name__)

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# Longest chain of symbolic links followed inside an archive (a loop ends there, unread).
_MAX_LINK_HOPS = 40


def is_archive(path: Path) -> bool:
    """True when `path` names a zip or tar archive by its suffix."""
    lower = path.name.lower()
    return lower.endswith(".zip") or lower.endswith(_TAR_SUFFIXES)


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
    archive: Path, name: str, ignored: Ignored
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
        member = normalise_member(info.filename)
        if info.is_dir():
            continue
        reason = classify(member)
        mode = info.external_attr >> 16
        if reason is None and info.create_system == 3 and stat.S_IFMT(mode) and not stat.S_ISREG(mode):
            # A Unix mode stored with the member: a link (its bytes are a path) or a special file.
            reason = "symbolic link member of a zip, not followed" if stat.S_ISLNK(mode) else NOT_REGULAR
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
        return normalise_member(info.linkname)
    link = info.linkname.replace("\\", "/")
    if link.startswith("/"):
        return None
    target = posixpath.normpath(posixpath.join(posixpath.dirname(member), link))
    if target == ".." or target.startswith("../"):
        return None
    return normalise_member(target)


def _list_tar(
    archive: Path, name: str, ignored: Ignored
) -> tuple[str, dict[str, tuple[int, int]], int]:
    regular: dict[str, tuple[int, int]] = {}  # every regular member so far, by normalised name
    entries: dict[str, tuple[int, int]] = {}
    symlinks: dict[str, str | None] = {}
    n_other = 0
    try:
        compression = _tar_compression(archive)
        with tarfile.open(archive, "r:*") as tarred:
            while (info := tarred.next()) is not None:
                member = normalise_member(info.name)
                if info.isreg() and info.sparse is None:
                    regular[member] = (int(info.offset_data), int(info.size))
                elif info.islnk():
                    # A hard link holds no data: it is the target's bytes, the copy stored before it.
                    target = _tar_link_target(member, info)
                    regular[member] = regular.get(target, (-1, 0)) if target is not None else (-1, 0)
                if info.isdir():
                    continue
                reason = classify(member)
                if reason is not None:
                    if reason:
                        ignored.add(reason, member)
                    else:
                        n_other += 1
                    continue
                if not (info.isreg() or info.islnk() or info.issym()):
                    ignored.add(NOT_REGULAR, member)
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
        while stream.read(CHUNK_BYTES):
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
    ignored = Ignored()
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
        raise empty_source_error(name, empty_detail("members", n_other, ignored, []))

    def make_reader(members: list[str]) -> MemberReader:
        if is_zip:
            return ZipReader(archive, {m: stored_names[m] for m in members if m in stored_names})
        return TarReader(archive, compression, {member: entries[member] for member in members})

    def identity(members: list[str], hash_content: bool) -> dict[str, Any]:
        if hash_content:
            return {"archive_sha256": sha256_file(archive), "members": members}
        size, mtime_ns = size_mtime(archive)
        if is_zip:
            member_entries = [[member, *entries[member]] for member in members]
        else:
            # (name, size, offset): the order fingerprints have always used.
            member_entries = [[member, entries[member][1], entries[member][0]] for member in members]
        return {"archive": str(archive), "size": size, "mtime_ns": mtime_ns, "members": member_entries}

    return open_members(
        "archive", name, sorted(entries), make_reader=make_reader, identity=identity, limit=limit, seed=seed,
        skip_bad=skip_bad, exif_transpose=exif_transpose, workers=workers, ignored=ignored,
    )
