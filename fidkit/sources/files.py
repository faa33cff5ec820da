"""Image files in a folder, and what folders and archives share: listing rules, the file source.

Archives (zip, tar) are opened by :mod:`fidkit.sources.archives` with the same rules and the same
:class:`FileSource`.

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
* Member names are the paths they extract to: ``./a/b.png``, ``a/./b.png``, ``a//b.png``,
  ``/a/b.png`` and ``a\\b.png`` are all ``a/b.png``. A name with a ``..`` part (``x/../a.png``,
  ``../a.png``) is not read (``tar`` refuses to extract it, ``unzip`` drops the ``..``), and is
  counted in ``source.ignored``. A zip member name without the UTF-8 flag (Info-ZIP's ``zip``
  writes them) is read as UTF-8 where its bytes are valid UTF-8 (or from its Unicode Path extra
  field), as ``unzip`` on a UTF-8 system names the file; else as cp437, the zip standard's default.
* A member name stored more than once (``a.png`` twice, or ``a.png`` and ``./a.png``): the last
  entry of the name is what extracts, as with ``tar`` and ``unzip``, whatever its kind: a later file
  is read, a later folder, link to nothing or special member of that name leaves no image there.
  The earlier copies are counted in ``source.ignored`` and a warning names the member. The same rule
  holds for zip and tar, and for the CIFAR batches read from a CIFAR ``.tar.gz``.
* Damage to an archive's structure (a damaged header in the middle of a tar, corrupt compressed
  data, a truncated file, an unsupported zip version) is a :class:`~fidkit.errors.SourceError`
  naming the archive, also with ``skip_bad``: what follows the damage is unknown, so it cannot be
  a counted skip. A compressed tar is decompressed to its end when opened, so its checksum is
  checked before any image is counted. A tar must end with its end-of-archive marker (the zero
  blocks that ``tar`` and Python's ``tarfile`` write): a file that ends at a member's header without
  one is cut short, and is a :class:`~fidkit.errors.SourceError` too.
* A file named as an archive that is not one (a zip named ``.tar``, an empty file, a web page saved
  by a failed download) is a :class:`~fidkit.errors.SourceError` that says what the file is, from
  its first bytes, and how to fix it (rename it, download it again).
* macOS resource-fork debris (anything under ``__MACOSX/`` and files named ``._*``) is ignored:
  it carries image extensions but holds no image.
* Names are relative POSIX paths (``cat/001.png``), sorted as strings: the order, and so a
  ``limit``/``seed`` subset, is the same on every platform and for the same images in a folder or
  in an archive.

Memory
------
A file or member larger than any image within Pillow's ``MAX_IMAGE_PIXELS`` could need is refused
by its size (``os.fstat``, the zip member's declared size, the tar header) before it is read, as a
bad file naming it. An archive member (whose bytes may inflate from a few KB of compressed zeros)
is bounded by its own image: of one larger than 64 KiB, the first 64 KiB are read, Pillow (or the
PNG, JPEG, WebP or TIFF header) tells its pixel count, and a member that starts no image, or that
is larger than an image of its pixels could need (the same rule, with its own pixel count), is
refused there as a bad file (counted with ``skip_bad``); only then is the rest read, into one
buffer. A TIFF whose directory follows its pixels, or that holds several pages, is bounded by the
global limit only: its first page does not bound its size. Decoded images waiting for a full batch
are emitted early as smaller batches once they pass :data:`_PENDING_PIXEL_BYTES`, so a batch of huge
images does not hold gigabytes.

Tar archives compressed as a whole have no random access: a worker reading members out of archive
order decompresses from the start again. Each worker reads its chunk in archive order, and
archives written with sorted names (Python's ``tarfile``, ``tar --sort=name``) read in one pass.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from fidkit._fs import file_kind, sha256_file
from fidkit._plain import shown_name
from fidkit._streams import RESTATED
from fidkit.errors import ImageError, SourceError
from fidkit.sources.base import (
    ReadOptions,
    SizeGrouper,
    Source,
    empty_source_error,
    select_indices,
    file_stamp,
)
from fidkit.sources.bounded import HEAD_BYTES, read_image_bytes
from fidkit.sources.decode import IMAGE_EXTENSIONS, file_too_large_error
from fidkit.sources.parallel import MemberReader, decode_stream, resolve_workers

__all__ = [
    "FolderReader",
    "FileSource",
    "open_folder",
    "refuse_special_file",
]

logger = logging.getLogger(__name__)

_LOSSY_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})
# How many example names the warning about ignored files gives per reason.
_NAMED_IGNORED = 3
# Decoded pixel bytes that may wait for a full batch before what waits is emitted early.
_PENDING_PIXEL_BYTES = 256 * 2**20
# How many bad files an error message names before saying "and N more".
_NAMED_BAD_FILES = 5


class Ignored:
    """Files seen but deliberately not read, by reason: counted and reported, never dropped unseen; and a count
    of the files that are no images at all (``n_other``, for the message of a source without images)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}
        self.n_other = 0

    def admit(self, relative: str) -> bool:
        """True for a name that is an image to read (:func:`classify`); any other name is counted here."""
        reason = classify(relative)
        if reason is None:
            return True
        if reason:
            self.add(reason, relative)
        else:
            self.n_other += 1
        return False

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
                ", ".join(shown_name(example) for example in self.examples[reason]),
                extra=RESTATED,
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
HIDDEN_FOLDER = "hidden folder, not read (dot-folders such as .ipynb_checkpoints, @eaDir, __MACOSX)"
IN_HIDDEN_FOLDER = "image in a hidden folder, not read (dot-folders such as .ipynb_checkpoints, @eaDir)"
NOT_REGULAR = "not a regular file (FIFO, socket, device or other special file), not read"
PARENT_PART = "name with a '..' part, not read (tar refuses to extract it there; unzip drops the '..')"


def is_hidden_folder(folder_name: str) -> bool:
    """True for a folder name skipped by default: dot-folders and NAS / OS debris folders."""
    return folder_name.startswith(".") or folder_name in _HIDDEN_FOLDER_NAMES


def classify(relative: str) -> str | None:
    """None for an image file to read; ``""`` for a file that is no image (or macOS debris);
    otherwise the reason an image-like file is deliberately not read (counted and reported)."""
    path = PurePosixPath(relative)
    if path.name.startswith("._") or "__MACOSX" in path.parts:
        return ""
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        if ".." in path.parts:
            # Only archive members have such names; not a hidden folder, though ".." starts with a dot.
            return PARENT_PART
        if any(is_hidden_folder(part) for part in path.parts[:-1]):
            return IN_HIDDEN_FOLDER
        return None
    if suffix in _UNREAD_IMAGE_EXTENSIONS:
        return f"image format fidkit does not read ({suffix}); convert such files to PNG to include them"
    return ""


def is_image_name(relative: str) -> bool:
    """True when a relative POSIX name is an image fidkit reads: an image extension, not macOS
    debris, not inside a hidden folder."""
    return classify(relative) is None


def normalise_member(member: str) -> str:
    """An archive member's name as the path it extracts to, relative to the folder it extracts into.

    Archives written on Windows or with ``tar -C dir .`` name members ``a\\b.png`` or ``./a/b.png``;
    ``tar -x`` and ``unzip`` also write ``a/./b.png``, ``a//b.png`` and ``/a/b.png`` to ``a/b.png``. All of
    them become ``a/b.png``, the folder's relative path, so that names that extract to one file are one
    member (a name stored twice). A ``..`` part is kept: :func:`classify` refuses such names.
    """
    parts = [part for part in member.replace("\\", "/").split("/") if part not in ("", ".")]
    return "/".join(parts)


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
            f"{name}: is {file_kind(mode)}, not a regular file or a folder; fidkit reads images "
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
                raise ImageError(f"{member}: is {file_kind(mode)}, not a regular file; not read")
            if max_bytes is None:
                return stream.read()
            size = os.fstat(stream.fileno()).st_size
            if size > max_bytes:
                raise file_too_large_error(member, size, max_bytes)
            if size > HEAD_BYTES:
                # Bounded by what its image needs, as an archive member is: the same file gets the same verdict
                # in a folder and in an archive (one holding far more than its image is a bad file in both).
                data = read_image_bytes(
                    stream, member, size,
                    lambda got: ImageError(f"{member}: ended after {got:,} of its {size:,} bytes while read "
                                           "(changed meanwhile)"),
                    start=0,
                )
            else:
                # Ask for the size it has (a read asking for more reserves that much first).
                data = stream.read(size + 1)
            # A file growing meanwhile is read on, up to the bound (a read asks for what it may get: a read of
            # max_bytes would reserve that much first, so one byte tells whether there is more).
            if len(data) >= size and (first := stream.read(1)):
                data = data + first + stream.read(max_bytes - len(data))
            if len(data) > max_bytes:
                raise file_too_large_error(member, len(data), max_bytes)
            return data

    def close(self) -> None:
        return None


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
        read: ReadOptions,
        ignored: Ignored | None = None,
        skipped_at_open: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(
            name,
            n_images=len(members),
            n_available=n_available,
            limit=read.limit,
            seed=read.seed,
            exif_transpose=read.exif_transpose,
            lossy=any(PurePosixPath(m).suffix.lower() in _LOSSY_EXTENSIONS for m in members),
        )
        self.kind = kind
        self.members = members
        #: The reading settings, with `limit` and `seed` as used (:func:`select_indices`).
        self.read = read
        self.skip_bad = read.skip_bad
        self.workers = resolve_workers(read.workers)
        self._reader = reader
        self._identity_of = identity
        ignored = ignored if ignored is not None else Ignored()
        #: ``{reason: count}`` of the files and folders seen but deliberately not read (hidden
        #: folders, image formats fidkit does not read, special files, duplicate archive members,
        #: links to nothing). Each reason is also logged as a warning when the source is opened.
        self.ignored: dict[str, int] = dict(ignored.counts)
        ignored.report(name)
        # Subfolders skipped as unreadable (skip_bad) when listing: part of every run's `skipped`.
        self._skipped_at_open = list(skipped_at_open or [])
        self.skipped = list(self._skipped_at_open)

    @property
    def skipped_at_open(self) -> tuple[tuple[str, str], ...]:
        """``(folder, reason)`` of each subfolder skipped as unreadable (``skip_bad``) when the source was listed:
        the first entries of every run's :attr:`skipped`, here or on a cluster."""
        return tuple(self._skipped_at_open)

    def members_subset(self, start: int, stop: int, *, skip_bad: bool, workers: int | None) -> FileSource:
        """A new source of members `start` to `stop` (exclusive) of this one, read by the same reader: a shard
        of a cluster job. The ignored-file counts stay with this source (they were reported when it opened)."""
        return FileSource(
            self.kind, self.name, self._reader, list(self.members[start:stop]), self._identity_of,
            n_available=self.n_available, read=dataclasses.replace(self.read, skip_bad=skip_bad, workers=workers),
        )

    def _identity(self, *, hash_content: bool) -> Any:
        # Computed when asked, from the files as they are now: a fingerprint taken after reading
        # differs from one taken before if a file changed meanwhile (the cache uses this to avoid
        # storing statistics of half-old, half-new files).
        return self._identity_of(hash_content)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        grouper = SizeGrouper(batch_size)  # checks batch_size
        self.emitted_order = None
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
                        logger.debug(
                            "%s: first bad file %s; counting the rest", shown_name(self.name), shown_name(outcome.name)
                        )
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
            logger.warning(
                "%s: skipped %d bad file(s), first %s: %s", shown_name(self.name), len(bad), shown_name(bad[0][0]),
                bad[0][1], extra=RESTATED,
            )
        if n_good == 0:
            detail = f"all {len(bad)} files were bad, first {shown_name(bad[0][0])}: {bad[0][1]}" if bad else ""
            raise empty_source_error(shown_name(self.name), detail)
        yield from grouper.finish()
        self.emitted_order = grouper.emitted_order()  # every batch taken: rows can go back to the members' order


def _bad_files_error(name: str, bad: list[tuple[str, str]], n_files: int) -> ImageError:
    named = "; ".join(f"{shown_name(member)}: {reason}" for member, reason in bad[:_NAMED_BAD_FILES])
    more = f"; and {len(bad) - _NAMED_BAD_FILES} more" if len(bad) > _NAMED_BAD_FILES else ""
    return ImageError(
        f"{shown_name(name)}: {len(bad)} of {n_files} image files could not be decoded ({named}{more}); "
        "fix or remove them, or pass --skip-bad (skip_bad=True) to skip them"
    )


def _unreadable_folder(name: str, relative: str, exc: OSError) -> SourceError:
    where = f"its subfolder {shown_name(relative + '/')}" if relative else "the folder"
    return SourceError(
        f"{shown_name(name)}: cannot read {where} ({type(exc).__name__}: {exc.strerror or exc}); its images would "
        "be missing from the count: fix its permissions, or pass --skip-bad (skip_bad=True) to skip "
        "it as a counted skip"
    )


@dataclass
class FolderListing:
    """What :func:`iter_folder_images` saw besides the images: other files, and subfolders it could not read."""

    ignored: Ignored
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def iter_folder_images(
    root: Path, name: str, listing: FolderListing, *, skip_unreadable: bool
) -> Iterator[tuple[str, os.stat_result | None]]:
    """The one walk of a folder source: yield ``(relative name, stat after following links)`` for each image file
    under `root` as it is met (``None`` for one that cannot be stat'ed: a dangling link, a file removed meanwhile;
    decoding reports it), and count everything else in `listing`.

    Symbolic links to folders are followed; every real folder is read once, under its own name when it has one
    inside `root` (real folders are walked before links), so loops end. Hidden folders are not entered; they, image
    formats fidkit does not read and special files are counted in ``listing.ignored``. A subfolder that cannot be
    read is a :class:`SourceError` unless `skip_unreadable`, and then recorded in ``listing.unreadable``; `root`
    itself that cannot be read is always an error. Names come in no particular order: callers sort them.
    """
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
                listing.ignored.add("folder already read under another name (a link to it, or a loop)", f"{relative}/")
                continue
            seen.add(key)
            with os.scandir(folder) as entries:
                children = sorted(entries, key=lambda entry: entry.name)
        except OSError as exc:
            if not relative or not skip_unreadable:
                raise _unreadable_folder(name, relative, exc) from exc
            listing.unreadable.append(
                (f"{relative}/", f"unreadable folder ({type(exc).__name__}: {exc.strerror or exc})")
            )
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
                    listing.ignored.add(HIDDEN_FOLDER, f"{child}/")
                elif entry.is_symlink():
                    sublinks.append((child, entry.path))
                else:
                    subfolders.append((child, entry.path))
                continue
            if not listing.ignored.admit(child):
                continue
            try:
                file_info = entry.stat()  # follows links: an image that is a link is the file it points to
            except OSError as exc:
                logger.debug("cannot stat %s: %s", shown_name(entry.path), exc)
                yield child, None
                continue
            if not stat.S_ISREG(file_info.st_mode):
                listing.ignored.add(NOT_REGULAR, child)
                continue
            yield child, file_info
        # Reversed, so that popping walks them in name order (only the choice among several names
        # of one folder depends on the order, and it is fixed).
        real.extend(reversed(subfolders))
        linked[:0] = reversed(sublinks)


def _walk_images(root: Path, name: str, *, skip_bad: bool, ignored: Ignored) -> tuple[list[str], FolderListing]:
    """The sorted relative names of the image files under `root` (:func:`iter_folder_images`), and what else the
    walk saw; with `skip_bad` an unreadable subfolder is a counted skip, logged."""
    listing = FolderListing(ignored)
    found = sorted(member for member, _ in iter_folder_images(root, name, listing, skip_unreadable=skip_bad))
    for folder, reason in listing.unreadable:
        logger.warning(
            "%s: cannot read subfolder %s (%s); skipped (--skip-bad)", shown_name(name), shown_name(folder), reason,
            extra=RESTATED,
        )
    return found, listing


def empty_detail(what: str, ignored: Ignored, unreadable: list[tuple[str, str]] = ()) -> str:
    kinds = "/".join(sorted(IMAGE_EXTENSIONS))
    detail = f"no {kinds} {what}; {ignored.n_other} other {what} ignored"
    for reason, count in ignored.counts.items():
        detail += f"; {count} ignored: {reason}"
    if unreadable:
        detail += f"; {len(unreadable)} unreadable folder(s) skipped, first {shown_name(unreadable[0][0])}"
    return detail


def open_members(
    kind: str,
    name: str,
    entries: list[str],
    *,
    make_reader: Callable[[list[str]], MemberReader],
    identity: Callable[[list[str], bool], Any],
    read: ReadOptions,
    ignored: Ignored | None = None,
    skipped_at_open: list[tuple[str, str]] | None = None,
) -> FileSource:
    """The one opener of image files that folders, archives and URIs share: the subset of the sorted `entries`
    that `limit` and `seed` select, a reader for those members, and their identity (``identity(members,
    hash_content)``) for the cache."""
    indices, limit_used, seed_used = select_indices(len(entries), read.limit, read.seed)
    members = [entries[i] for i in indices]
    return FileSource(
        kind,
        name,
        make_reader(members),
        members,
        lambda hash_content: identity(members, hash_content),
        n_available=len(entries),
        read=dataclasses.replace(read, limit=limit_used, seed=seed_used),
        ignored=ignored,
        skipped_at_open=skipped_at_open,
    )


def open_folder(path: Path, name: str, read: ReadOptions) -> FileSource:
    """Open a folder of image files (recursive)."""
    root = path.resolve()
    ignored = Ignored()
    entries, listing = _walk_images(root, name, skip_bad=read.skip_bad, ignored=ignored)
    if not entries:
        ignored.report(name)
        raise empty_source_error(name, empty_detail("files", ignored, listing.unreadable))

    def identity(members: list[str], hash_content: bool) -> dict[str, Any]:
        if hash_content:
            # Location-independent: the same files copied elsewhere hit the same cache entry.
            return {"members": [[member, sha256_file(root / member)] for member in members]}
        return {"root": str(root), "members": [[member, *file_stamp(root / member)] for member in members]}

    return open_members(
        "folder", name, entries, make_reader=lambda members: FolderReader(root), identity=identity, read=read,
        ignored=ignored, skipped_at_open=listing.unreadable,
    )


# What zipfile, tarfile and the decompressors raise on a damaged archive. NotImplementedError is
# zipfile's answer to an unknown "version needed to extract" or compression method.
