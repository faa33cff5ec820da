"""Zip and tar archives of images, read in place with the listing rules of :mod:`fidkit.sources.files`.

Members are never extracted to disk. A tar hard link is read as the bytes of the member it links to, a
symbolic link as what it leads to after ``tar -x`` (through links to folders, chains of links); a name
stored more than once is what its last entry is (a file is read, a folder or link to nothing is no image),
in zip and tar alike. Damage to an archive's structure, and a tar without its end-of-archive marker, is a
:class:`~fidkit.errors.SourceError` naming the archive, also with ``skip_bad``. A member larger than
64 KiB is read in full only once its first bytes show an image that may be that large. See
:mod:`fidkit.sources.files` for the whole set of rules.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import stat
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fidkit._fs import CHUNK_BYTES, sha256_file
from fidkit._npz import sniff_numpy_file
from fidkit._plain import shown_name
from fidkit._streams import RESTATED
from fidkit.errors import ImageError, SourceError
from fidkit.sources.base import ReadOptions, empty_source_error, file_stamp
from fidkit.sources.bounded import HEAD_BYTES, read_image_bytes
from fidkit.sources.decode import file_too_large_error
from fidkit.sources.files import (
    open_members,
    HIDDEN_FOLDER,
    NOT_REGULAR,
    FileSource,
    Ignored,
    classify,
    empty_detail,
    is_hidden_folder,
    normalise_member,
)
from fidkit.sources.parallel import MemberReader, ran_short

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
                if ran_short(exc):  # out of open files or memory: the machine's, not the archive's
                    raise
                # Readable when listed, not now: changed or damaged since; no member can be trusted.
                raise _damaged_archive_error(str(self.path), exc) from exc
        info = self._archive.getinfo(self.stored_names.get(member, member))
        if info.flag_bits & 0x1:
            raise ImageError(f"{member}: encrypted in the zip archive; fidkit reads no password-protected member: "
                             "extract it with its password and zip it again without one")
        # zipfile never returns more than the member's declared size, so checking that bounds
        # memory even when the compressed data would inflate further.
        size = int(info.file_size)
        if max_bytes is not None and size > max_bytes:
            raise file_too_large_error(member, size, max_bytes)
        if size <= HEAD_BYTES:
            return self._archive.read(info)

        def cut_short(got: int) -> ImageError:
            # Zip members are stored one by one: a damaged one is one bad file.
            return ImageError(f"{member}: its data ends after {got:,} of its declared {size:,} bytes (damaged)")

        with self._archive.open(info) as stream:
            data = read_image_bytes(stream, member, size, cut_short)
            stream.read(1)  # at the end: zipfile checks the CRC-32 (it raises BadZipFile on a mismatch)
        return data

    def close(self) -> None:
        if self._archive is not None:
            self._archive.close()
            self._archive = None

    def __getstate__(self) -> dict[str, Any]:
        # Open handles do not cross process boundaries; each worker opens its own.
        return {"path": self.path, "stored_names": self.stored_names, "_archive": None}


_TAR_OPENERS = {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}
_TAR_OPENERS_BY_SUFFIX = {f".{kind}": opener for kind, opener in _TAR_OPENERS.items()}


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

        def cut_short(got: int) -> SourceError:
            return SourceError(
                f"{self.path}: the archive ends {size - got} bytes early inside member {member}; "
                "it is truncated or changed since it was opened: copy or download it again"
            )

        try:
            if self._stream is None:
                opener = _TAR_OPENERS.get(self.compression, open)
                self._stream = opener(self.path, "rb")
            self._stream.seek(offset)
            # An uncompressed tar seeks back for free: read again from the start, no second copy held.
            again = offset if self.compression not in _TAR_OPENERS else None
            return read_image_bytes(self._stream, member, size, cut_short, start=again)
        except (ImageError, SourceError):
            raise
        except _ARCHIVE_ERRORS as exc:
            if ran_short(exc):  # out of open files or memory: the machine's, not the archive's
                raise
            # The stream itself is damaged (or the file changed since it was listed): what the
            # archive holds after this point is unknown, so this is no single bad file.
            raise _damaged_archive_error(str(self.path), exc) from exc

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


_DUPLICATE = "duplicate member name (an earlier copy, not read)"


def _replace_earlier(
    name: str, member: str, later: str | None, ignored: Ignored, *listed: dict[str, Any]
) -> None:
    """A name met again: its earlier entry leaves the `listed` tables and is counted in `ignored`, with a warning.

    `later` says what the new entry is when it is no file (``"a folder"``): extracting keeps only the last
    entry of a name, whatever its kind.
    """
    if later is None:
        logger.warning(
            "%s: member %s appears more than once; the last copy in the archive is read (as tar and unzip "
            "extract it), the earlier ones are ignored",
            name,
            shown_name(member),
            extra=RESTATED,  # counted in source.ignored
        )
    else:
        logger.warning(
            "%s: member %s appears more than once, the last time as %s; extracting keeps only the last entry "
            "of a name, so the earlier copies are not read",
            name,
            shown_name(member),
            later,
            extra=RESTATED,
        )
    ignored.add(_DUPLICATE, member)
    for table in listed:
        table.pop(member, None)


# What a file holds, by its first bytes: (magic, offset, description, the suffix it should have).
_MAGIC_BYTES = (
    (b"PK\x03\x04", 0, "a zip archive", ".zip"),
    (b"PK\x05\x06", 0, "an empty zip archive", ".zip"),
    (b"ustar", 257, "a tar archive", ".tar"),
    (b"\x1f\x8b", 0, "gzip-compressed data", ".gz"),
    (b"BZh", 0, "bzip2-compressed data", ".bz2"),
    (b"\xfd7zXZ\x00", 0, "xz-compressed data", ".xz"),
    (b"(\xb5/\xfd", 0, "zstd-compressed data", ".zst"),
    (b"7z\xbc\xaf\x27\x1c", 0, "a 7-Zip archive", ".7z"),
    (b"Rar!\x1a\x07", 0, "a RAR archive", ".rar"),
    (b"\x89PNG\r\n\x1a\n", 0, "a PNG image", ".png"),
    (b"\xff\xd8\xff", 0, "a JPEG image", ".jpg"),
)


def _content_kind(head: bytes) -> tuple[str, str] | None:
    """(description, suffix) of what `head`, a file's first bytes, starts like; None when unknown."""
    for magic, offset, description, suffix in _MAGIC_BYTES:
        if head[offset : offset + len(magic)] == magic:
            return description, suffix
    text = head[:1024].lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text:
        return "a web page (HTML)", ".html"
    return None


def _what_it_is(archive: Path, expected: str) -> str:
    """Why a file named as a `expected` (``"zip"`` or ``"tar"``) archive does not open as one, from its first
    bytes, and the fix: one sentence for the end of an error message."""
    try:
        with open(archive, "rb") as stream:
            head = stream.read(tarfile.BLOCKSIZE)
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    if not head:
        return "it is empty (0 bytes): copy or download it again"
    if sniff_numpy_file(archive) == "npy":
        return "by its content it is a numpy array (.npy data), not an archive: rename it to end in .npy"
    if _numpy_archive_members(archive):
        return f"by its content it is a numpy archive (.npz), not a {expected} archive: rename it to end in .npz"
    found = _content_kind(head)
    if found is not None and found[1] in _TAR_OPENERS_BY_SUFFIX:
        # Compressed: say what the compressed data holds.
        try:
            with _TAR_OPENERS_BY_SUFFIX[found[1]](archive, "rb") as stream:
                inner = stream.read(tarfile.BLOCKSIZE)
        except _ARCHIVE_ERRORS:
            return f"it is {found[0]} that cannot be decompressed (damaged or cut short): copy or download it again"
        inside = _content_kind(inner)
        if inside is not None and inside[1] == ".tar" and expected != "tar":
            return f"it is a compressed tar archive, not a {expected} archive: rename it to end in .tar{found[1]}"
        if expected == "tar" and inside is None and len(inner) == tarfile.BLOCKSIZE:
            return (
                f"it is {found[0]}, and what it holds is not a tar archive (its first header is damaged): "
                "copy or download it again"
            )
        holds = f"that holds {inside[0]}" if inside is not None else "that holds no archive fidkit knows"
        return f"it is {found[0]} {holds}: decompress it and pass what it holds"
    if found is None:
        return (
            "its first bytes match no archive fidkit reads (zip; tar, plain or compressed with gzip, bzip2 "
            "or xz): check that it is a complete file (copy or download it again)"
        )
    description, suffix = found
    if suffix == ".zst":
        return (
            "it is zstd-compressed: fidkit reads tar compressed with gzip, bzip2 or xz; decompress it first "
            "(zstd -d)"
        )
    if suffix in (".zip", ".tar") and suffix != f".{expected}":
        return f"it is {description}, not a {expected} archive: rename it to end in {suffix}"
    if suffix in (".zip", ".tar"):
        return (
            f"it starts like {description} but its structure is damaged or cut short (an interrupted "
            "download?): copy or download it again"
        )
    if suffix == ".html":
        return "it is a web page (HTML), not an archive: the download saved an error or login page; download it again"
    return f"it is {description}, not an archive: pass a zip or tar archive, or a folder"


def _numpy_archive_members(archive: Path) -> list[str]:
    """The members of a zip that holds only ``.npy`` members (what numpy.savez writes); [] for any other file."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            names = [info.filename for info in zipped.infolist() if not info.is_dir()]
    except _ARCHIVE_ERRORS:
        return []
    return names if names and all(name.endswith(".npy") for name in names) else []


# General-purpose flag bit 11: the member's name is UTF-8. Without it zipfile decodes names as cp437.
_ZIP_UTF8_FLAG = 0x800
# The Info-ZIP Unicode Path extra field: version 1, the CRC-32 of the stored name, the name in UTF-8.
_ZIP_UNICODE_PATH_FIELD = 0x7075


def _zip_member_name(info: zipfile.ZipInfo) -> str:
    """The name `info` extracts to with ``unzip`` on a UTF-8 system.

    Zips without the UTF-8 flag (Info-ZIP's ``zip`` 3.0 writes them) store the name as raw bytes that
    ``zipfile`` decodes as cp437, turning ``é.png`` into ``├⌐.png``: the order, a ``limit`` subset and the
    messages would differ from the same images in a folder. The name of the Unicode Path extra field wins
    when its CRC matches the stored name; else the stored bytes when they are valid UTF-8; else cp437.
    """
    if info.flag_bits & _ZIP_UTF8_FLAG:
        return info.filename
    try:
        raw = info.filename.encode("cp437")
    except UnicodeEncodeError:
        return info.filename  # zipfile did not decode it as cp437: its own reading stands
    extra = info.extra
    position = 0
    while position + 4 <= len(extra):
        field_id, length = struct.unpack_from("<HH", extra, position)
        body = extra[position + 4 : position + 4 + length]
        position += 4 + length
        if field_id == _ZIP_UNICODE_PATH_FIELD and len(body) > 5 and body[0] == 1:
            if struct.unpack_from("<I", body, 1)[0] == zlib.crc32(raw):
                try:
                    return body[5:].decode("utf-8")
                except UnicodeDecodeError:
                    break
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return info.filename


def _zip_is_dir(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return info.is_dir() or (info.create_system == 3 and stat.S_ISDIR(mode))


def _list_zip(archive: Path, name: str, ignored: Ignored) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    try:
        with zipfile.ZipFile(archive) as zipped:
            infos = zipped.infolist()
    except _ARCHIVE_ERRORS as exc:
        raise SourceError(
            f"{name}: not a readable zip archive ({type(exc).__name__}: {exc}); "
            f"{_what_it_is(archive, 'zip')}"
        ) from exc
    entries: dict[str, tuple[int, int]] = {}
    stored_names: dict[str, str] = {}
    for info in infos:
        member = normalise_member(_zip_member_name(info))
        is_dir = _zip_is_dir(info)
        mode = info.external_attr >> 16
        special = bool(not is_dir and info.create_system == 3 and stat.S_IFMT(mode) and not stat.S_ISREG(mode))
        if member in entries:
            # The last entry of a name is what extracts, whatever its kind: a later folder, link or
            # special member of that name replaces the earlier file, as a later file does.
            later = "a folder" if is_dir else "a link or special member" if special else None
            _replace_earlier(name, member, later, ignored, entries, stored_names)
        if is_dir:
            continue
        if not ignored.admit(member):
            continue
        if special:
            # A Unix mode stored with the member: a link (its bytes are a path) or a special file.
            ignored.add("symbolic link member of a zip, not followed" if stat.S_ISLNK(mode) else NOT_REGULAR, member)
            continue
        entries[member] = (int(info.file_size), int(info.CRC))
        # Read by the name zipfile knows this, the last, copy by: its name lookup gives the last member
        # stored under a name, which is this one.
        if member != info.filename:
            stored_names[member] = info.filename
    return entries, stored_names


def _resolve_in_tar(name: str, links: dict[str, str], regular: dict[str, tuple[int, int]]) -> str | None:
    """The path `name` reaches after ``tar -x``, resolved part by part as the kernel does: a link met on the way
    (``dirlink`` in ``dirlink/a.png``; `links` maps each link member to its target as stored) is replaced by its
    target, relative to the folder holding it, and ``..`` goes up from where links led. None when it leaves the
    archive (an absolute link, ``..`` above the root), uses a file as a folder, or follows more than
    :data:`_MAX_LINK_HOPS` links (a loop)."""
    done: list[str] = []
    todo = name.split("/")[::-1]  # the parts still to walk, the next one last
    hops = 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not done:
                return None  # above the folder the archive extracts into
            done.pop()
            continue
        here = "/".join([*done, part])
        target = links.get(here)
        if target is None:
            if here in regular and any(rest not in ("", ".") for rest in todo):
                return None  # a file used as a folder: "Not a directory"
            done.append(part)
            continue
        hops += 1
        if hops > _MAX_LINK_HOPS or target.startswith("/"):
            return None
        todo.extend(target.split("/")[::-1])
    return "/".join(done)


# A link to a folder: what a folder walk (fidkit.sources.files.iter_folder_images) counts it as after tar -x.
_FOLDER_SEEN = "folder already read under another name (a link to it, or a loop)"


def _list_tar(archive: Path, name: str, ignored: Ignored) -> tuple[str, dict[str, tuple[int, int]]]:
    regular: dict[str, tuple[int, int]] = {}  # every regular member so far, by normalised name
    entries: dict[str, tuple[int, int]] = {}
    # Every symbolic link member whatever its name (a link to a folder, or a link in a chain, need not look like
    # an image), with its target as stored; and the image-named ones, read as what they resolve to.
    links: dict[str, str] = {}
    image_links: set[str] = set()
    folders: set[str] = set()  # what tar -x makes: folder members, and every member's parents on the way
    try:
        compression = _tar_compression(archive)
        with tarfile.open(archive, "r:*") as tarred:
            while (info := tarred.next()) is not None:
                member = normalise_member(info.name)
                parts = member.split("/")
                if ".." not in parts:  # tar refuses to extract such a name: it makes no folder
                    folders.update("/".join(parts[:end]) for end in range(1, len(parts) + info.isdir()))
                if info.isreg() and info.sparse is None:
                    regular[member] = (int(info.offset_data), int(info.size))
                elif info.islnk():
                    # A hard link holds no data: it is the bytes of its target (named from the archive's root),
                    # the copy stored before it.
                    regular[member] = regular.get(normalise_member(info.linkname), (-1, 0))
                else:
                    # A folder, symbolic link or special member replaces a file of its name when extracted.
                    regular.pop(member, None)
                if info.issym():
                    links[member] = info.linkname.replace("\\", "/")
                else:
                    links.pop(member, None)  # ... and any later entry replaces a link of its name
                if member in entries or member in image_links:
                    # The last entry of a name is what extracts, whatever its kind (tar -x replaces the
                    # file with a later folder, link or special file of its name).
                    later = None
                    if info.isdir():
                        later = "a folder"
                    elif not (info.isreg() or info.islnk()):
                        later = "a symbolic link" if info.issym() else "a special member"
                    image_links.discard(member)
                    _replace_earlier(name, member, later, ignored, entries)
                if info.isdir() or info.issym():
                    # Links are counted once resolved: one to a folder is a folder, whatever its name.
                    if info.issym() and classify(member) is None:
                        image_links.add(member)
                    continue
                if not ignored.admit(member):
                    continue
                if not (info.isreg() or info.islnk()):
                    ignored.add(NOT_REGULAR, member)
                    continue
                if info.sparse is not None:
                    ignored.add("sparse member (not supported)", member)
                    continue
                entries[member] = regular[member]
            _check_tar_end(tarred, compression, name)
    except _ARCHIVE_ERRORS as exc:
        if isinstance(exc, tarfile.ReadError) and not entries and not regular:
            raise SourceError(f"{name}: not a readable tar archive: {_what_it_is(archive, 'tar')}") from exc
        raise _damaged_archive_error(name, exc) from exc
    for member in sorted(links):
        # Symbolic links are read as what they lead to once extracted, as a folder's links are.
        target = _resolve_in_tar(member, links, regular)
        if target is not None and (target == "" or target in folders):
            # A link to a folder: a folder of the archive read under another name, as a folder walk counts it.
            hidden = is_hidden_folder(member.rsplit("/", 1)[-1])
            ignored.add(HIDDEN_FOLDER if hidden else _FOLDER_SEEN, f"{member}/")
        elif member not in image_links:
            ignored.admit(member)  # no image name: counted like any other such file
        elif target is not None and target in regular and regular[target][0] >= 0:
            entries[member] = regular[target]
        else:
            ignored.add("symbolic link to nothing in the archive (not read)", member)
    return compression, entries


def _check_tar_end(tarred: tarfile.TarFile, compression: str, name: str) -> None:
    """Raise unless the listing stopped at the archive's real end, its end-of-archive marker.

    ``tarfile`` ends its listing silently at a damaged header in the middle of an archive, and at the end
    of the file: what it read until then looks like a complete, smaller archive. ``tar`` and ``tarfile``
    end every archive with zero blocks (two, padded to a 10 KiB record), so the block after the last
    member must be a whole zero block: anything else is damage (``tarfile.ReadError``), and nothing at all
    is a file cut short exactly at a member's header (a :class:`SourceError`).
    """
    stream = tarred.fileobj
    stream.seek(tarred.offset)
    block = stream.read(tarfile.BLOCKSIZE)
    if block.count(0) != len(block):
        raise tarfile.ReadError(
            f"damaged member header at byte {tarred.offset} of the tar data, after {len(tarred.members)} "
            "members"
        )
    if len(block) < tarfile.BLOCKSIZE:
        raise SourceError(
            f"{name}: ends without tar's end-of-archive marker, after {len(tarred.members)} members: it looks "
            "truncated (an interrupted download or copy?), and what followed is unknown, so no count of its "
            "images can be trusted: copy or download it again"
        )
    if compression:
        # Decompress to the end, so that corrupt data or a checksum mismatch after the last member
        # shows now, not as a missing image later.
        while stream.read(CHUNK_BYTES):
            pass


def open_archive(path: Path, name: str, read: ReadOptions) -> FileSource:
    """Open a zip or tar archive of image files, read in place."""
    archive = path.resolve()
    ignored = Ignored()
    is_zip = archive.name.lower().endswith(".zip")
    compression = ""
    # Zip: name -> (size, crc); tar: name -> (offset of its data, size). Either is enough to tell
    # members apart without reading them.
    if is_zip:
        entries, stored_names = _list_zip(archive, name, ignored)
    else:
        compression, entries = _list_tar(archive, name, ignored)
    if not entries:
        ignored.report(name)
        arrays = _numpy_archive_members(archive) if is_zip else []
        if arrays:
            listed = ", ".join(arrays[:3]) + (", ..." if len(arrays) > 3 else "")
            raise SourceError(f"{name}: by its content a numpy archive (.npz, members {listed}), not a zip of "
                              "image files: rename it to end in .npz")
        raise empty_source_error(name, empty_detail("members", ignored))

    def make_reader(members: list[str]) -> MemberReader:
        if is_zip:
            return ZipReader(archive, {m: stored_names[m] for m in members if m in stored_names})
        return TarReader(archive, compression, {member: entries[member] for member in members})

    def identity(members: list[str], hash_content: bool) -> dict[str, Any]:
        if hash_content:
            return {"archive_sha256": sha256_file(archive), "members": members}
        size, mtime_ns, ctime_ns = file_stamp(archive)
        if is_zip:
            member_entries = [[member, *entries[member]] for member in members]
        else:
            # (name, size, offset): the order fingerprints have always used.
            member_entries = [[member, entries[member][1], entries[member][0]] for member in members]
        return {"archive": str(archive), "size": size, "mtime_ns": mtime_ns, "ctime_ns": ctime_ns,
                "members": member_entries}

    return open_members(
        "archive", name, sorted(entries), make_reader=make_reader, identity=identity, read=read, ignored=ignored,
    )
