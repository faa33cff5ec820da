"""Image files in a folder, a zip archive or a tar archive.

Listing
-------
* A folder is walked recursively (symbolic links to files are followed, links to folders are not,
  which avoids cycles). Files whose extension, compared case-insensitively, is one of
  :data:`~fidkit.sources.decode.IMAGE_EXTENSIONS` are images; other files are ignored.
* Zip and tar archives (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``) are read in place,
  never extracted to disk. Directory entries, links and other non-regular members are ignored.
* macOS resource-fork debris (anything under ``__MACOSX/`` and files named ``._*``) is ignored:
  it carries image extensions but holds no image.
* Names are relative POSIX paths (``cat/001.png``), sorted as strings: the order, and so a
  ``limit``/``seed`` subset, is the same on every platform and for the same images in a folder or
  in an archive.

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
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np

from fidkit._fs import sha256_file
from fidkit.errors import ImageError, SourceError
from fidkit.sources.base import SizeGrouper, Source, empty_source_error, select_indices, size_mtime
from fidkit.sources.decode import IMAGE_EXTENSIONS
from fidkit.sources.parallel import MemberReader, decode_stream, resolve_workers

__all__ = ["FolderReader", "ZipReader", "TarReader", "FileSource", "open_folder", "open_archive", "is_archive"]

logger = logging.getLogger(__name__)

_LOSSY_EXTENSIONS = frozenset({".jpg", ".jpeg"})
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# How many bad files an error message names before saying "and N more".
_NAMED_BAD_FILES = 5


def is_image_name(relative: str) -> bool:
    """True when a relative POSIX name has an image extension and is not macOS debris."""
    path = PurePosixPath(relative)
    if path.name.startswith("._") or "__MACOSX" in path.parts:
        return False
    return path.suffix.lower() in IMAGE_EXTENSIONS


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


@dataclass
class FolderReader:
    """Reads members of a folder by relative POSIX name."""

    root: Path

    def read(self, member: str) -> bytes:
        return (self.root / member).read_bytes()

    def close(self) -> None:
        return None


@dataclass
class ZipReader:
    """Reads members of a zip archive; the archive is opened on first use in each process."""

    path: Path
    # Normalised name -> name as stored, only for the few members whose stored name differs.
    stored_names: dict[str, str] = field(default_factory=dict)
    _archive: zipfile.ZipFile | None = field(default=None, repr=False)

    def read(self, member: str) -> bytes:
        if self._archive is None:
            self._archive = zipfile.ZipFile(self.path)
        return self._archive.read(self.stored_names.get(member, member))

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

    def read(self, member: str) -> bytes:
        if self._stream is None:
            opener = _TAR_OPENERS.get(self.compression, open)
            self._stream = opener(self.path, "rb")
        offset, size = self.members[member]
        self._stream.seek(offset)
        data = self._stream.read(size)
        if len(data) != size:
            raise EOFError(f"archive ends {size - len(data)} bytes early")
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

    def _identity(self, *, hash_content: bool) -> Any:
        # Computed when asked, from the files as they are now: a fingerprint taken after reading
        # differs from one taken before if a file changed meanwhile (the cache uses this to avoid
        # storing statistics of half-old, half-new files).
        return self._identity_of(hash_content)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        grouper = SizeGrouper(batch_size)  # checks batch_size
        self.skipped = []
        bad: list[tuple[str, str]] = []
        any_lossy = False
        n_good = 0
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
                yield from grouper.add(outcome.pixels)
        finally:
            stream.close()
        if bad and not self.skip_bad:
            raise _bad_files_error(self.name, bad, len(self.members))
        self.skipped = bad
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


def _walk_images(root: Path) -> tuple[list[str], int]:
    """Return the sorted relative names of image files under `root`, and the number of other
    files seen (for the message when there is no image)."""
    found: list[str] = []
    n_other = 0
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        folder_path = Path(folder)
        for file_name in files:
            full = folder_path / file_name
            relative = full.relative_to(root).as_posix()
            if not is_image_name(relative):
                n_other += 1
                continue
            try:
                info = full.stat()
            except OSError as exc:
                # A dangling link or a file removed meanwhile: decoding will report it as bad.
                logger.debug("cannot stat %s: %s", full, exc)
                found.append(relative)
                continue
            if not stat.S_ISREG(info.st_mode):
                n_other += 1
                continue
            found.append(relative)
    found.sort()
    return found, n_other


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
    entries, n_other = _walk_images(root)
    if not entries:
        detail = f"no .png/.jpg/.jpeg/.bmp/.webp/.tif/.tiff files; {n_other} other files ignored"
        raise empty_source_error(name, detail)
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
    )


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
    # Zip: name -> (size, crc); tar: name -> (offset of its data, size). Either is enough to tell
    # members apart without reading them.
    entries: dict[str, tuple[int, int]] = {}
    stored_names: dict[str, str] = {}
    n_other = 0
    is_zip = archive.name.lower().endswith(".zip")
    if is_zip:
        try:
            with zipfile.ZipFile(archive) as zipped:
                infos = zipped.infolist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise SourceError(f"{name}: not a readable zip archive ({exc})") from exc
        for info in infos:
            member = _normalise_member(info.filename)
            if info.is_dir():
                continue
            if not is_image_name(member):
                n_other += 1
                continue
            if member in entries:
                logger.warning("%s: member %s appears twice; the last copy is read", name, member)
            entries[member] = (int(info.file_size), int(info.CRC))
            if member != info.filename:
                stored_names[member] = info.filename
    else:
        try:
            compression = _tar_compression(archive)
            with tarfile.open(archive, "r:*") as tarred:
                infos = tarred.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise SourceError(f"{name}: not a readable tar archive ({exc})") from exc
        for info in infos:
            member = _normalise_member(info.name)
            if not info.isreg():
                continue
            if not is_image_name(member):
                n_other += 1
                continue
            if info.sparse is not None:
                logger.warning("%s: sparse member %s is not supported; skipped", name, member)
                continue
            entries[member] = (int(info.offset_data), int(info.size))
    if not entries:
        raise empty_source_error(name, f"no image members; {n_other} other members ignored")
    sorted_members = sorted(entries)
    indices, limit_used, seed_used = select_indices(len(sorted_members), limit, seed)
    members = [sorted_members[i] for i in indices]
    reader: MemberReader
    if is_zip:
        reader = ZipReader(archive, stored_names)
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
    )
