"""Known dataset formats: MNIST idx files and CIFAR-10/100 python batches.

MNIST
-----
An ``*-idx3-ubyte`` file, optionally gzipped (``*-idx3-ubyte.gz``): a big-endian header (magic
``0x00000803`` = unsigned bytes, 3 dimensions; then N, rows, columns as int32) followed by
``N * rows * columns`` pixel bytes. The magic number and the data size are checked: a plain file must
be exactly as long as its header declares; a ``.gz`` must be able to hold it (deflate expands at most
1032-fold) and, when the file is opened, its gzip trailer must record that size, or else (a file of several
gzip members, as ``bgzip`` writes, records only its last member's size) the stream is decompressed in chunks
and counted then, stopping one byte past the declared size. When it is read exactly the declared bytes are
decompressed (into an array allocated from the header), after which the stream must end: data beyond what
the header declares (in the same gzip member or another one) is refused, never decompressed. Images are
grayscale and replicated to RGB, whatever their size (images 1 or 3 pixels wide are images, not the columns of
one RGB image). Label files (``idx1``) are refused with a
hint.

CIFAR
-----
The "python version" of CIFAR-10 (``cifar-10-batches-py``) and CIFAR-100 (``cifar-100-python``).
Either the folder, meaning its training split (CIFAR-10 ``data_batch_1`` .. ``data_batch_5``,
50,000 images; CIFAR-100 ``train``), or one batch file (``test_batch``, ``test``, ``data_batch_3``)
for just that file. Each file is a pickled dict whose ``data`` is ``(N, 3072)`` uint8, each row
1024 red, then 1024 green, then 1024 blue values of a 32x32 image (row-major). The same batches
can be read from inside the downloaded ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``
in place (:func:`load_cifar_tar`, used by :mod:`fidkit.sources.named`); a batch stored there more than
once is read from its last copy, as ``tar -x`` extracts it, with a warning. A batch file or member larger
than :data:`CIFAR_MAX_BATCH_BYTES` is refused from its size (the file's, or the size the tar header
gives) before anything is read.

These files are pickles by format, and unpickling arbitrary data can run arbitrary code. fidkit
reads them with a restricted unpickler (:mod:`fidkit.sources.unpickle`) that can only rebuild numpy
arrays and dtypes and plain containers (dict, list, tuple, str, bytes, numbers); any other global
(a function, a class, ``os.system``) stops loading with a :class:`~fidkit.errors.SourceError`.
What unpickling may allocate is bounded by the file's size: a crafted file cannot ask for a 3 GB
``bytearray`` or array in 56 bytes. Before the unpickler runs, one pass over the opcodes refuses what no
batch holds and the unpickler would build at any cost: a dict or set of more than 16 keys or with a number
or a container as a key (keys crafted to share one hash make building it quadratic), a list or tuple of
more entries than a batch can have images, and a memo index beyond the opcodes before it (the unpickler's
memo table grows to twice that index).
"""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import struct
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from fidkit._fs import sha256_file
from fidkit.errors import SourceError
from fidkit.sources.arrays import ArraySource, FileRows, file_identity
from fidkit.sources.base import empty_source_error
from fidkit.sources.files import normalise_member
from fidkit.sources.unpickle import RestrictedUnpickler, load_restricted
from fidkit._npz import read_exactly

__all__ = [
    "MNIST_IMAGES_MAGIC",
    "CIFAR10_TRAIN_FILES",
    "CIFAR_TEST_FILES",
    "CIFAR_MAX_BATCH_BYTES",
    "RestrictedUnpickler",
    "is_mnist_name",
    "is_cifar_batch_file",
    "open_mnist",
    "open_cifar",
]

logger = logging.getLogger(__name__)

MNIST_IMAGES_MAGIC = 0x00000803
_MNIST_LABELS_MAGIC = 0x00000801
_MNIST_HEADER = struct.Struct(">IIII")

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILES = ("test_batch", "test")
_CIFAR_SIDE = 32
_CIFAR_ROW = 3 * _CIFAR_SIDE * _CIFAR_SIDE
#: The largest a CIFAR python batch can be: the largest published one, CIFAR-100's ``train``, holds 50,000
#: images in 155 MB (3,072 pixel bytes an image, plus labels and file names); this allows 80,000 of them.
CIFAR_MAX_BATCH_BYTES = 80_000 * (_CIFAR_ROW + 256)
#: The most entries a list or tuple in a CIFAR batch may hold: one per image (labels, file names), and a batch of
#: :data:`CIFAR_MAX_BATCH_BYTES` holds fewer images than this.
_CIFAR_MAX_ITEMS = CIFAR_MAX_BATCH_BYTES // _CIFAR_ROW
#: The most keys a dict (or set) in a CIFAR batch may hold: a batch is a dict of 4 or 5 names. Every key added is
#: hashed against those already there, and keys crafted to share one hash make that quadratic.
_CIFAR_MAX_KEYS = 16
#: deflate expands at most 1032-fold: a gzip file cannot decompress to more (plus its header).
_DEFLATE_MAX_RATIO = 1032


def is_mnist_name(path: Path) -> bool:
    """True for MNIST-style idx file names (``...idx3-ubyte``, ``...idx1-ubyte``, optionally .gz)."""
    lower = path.name.lower().removesuffix(".gz")
    return lower.endswith(("idx3-ubyte", "idx1-ubyte", ".idx3", ".idx1"))


def _read_mnist_header(header: bytes, name: str) -> tuple[int, int, int]:
    if len(header) < _MNIST_HEADER.size:
        raise SourceError(f"{name}: too short for an MNIST idx file ({len(header)} bytes)")
    magic, n_images, n_rows, n_cols = _MNIST_HEADER.unpack(header[: _MNIST_HEADER.size])
    if magic >> 8 == _MNIST_LABELS_MAGIC >> 8 and magic & 0xFF == 1:
        raise SourceError(f"{name}: an MNIST label file (idx1), not images; pass the *-idx3-ubyte file")
    if magic != MNIST_IMAGES_MAGIC:
        raise SourceError(
            f"{name}: not an MNIST image file (magic number 0x{magic:08x}, expected "
            f"0x{MNIST_IMAGES_MAGIC:08x} for unsigned bytes in 3 dimensions)"
        )
    if n_rows == 0 or n_cols == 0:
        raise SourceError(f"{name}: MNIST header gives images of {n_rows}x{n_cols} pixels")
    return n_images, n_rows, n_cols


def _check_gzip_length(path: Path, name: str, expected_bytes: int, declared: str) -> None:
    """Decompress the gzip file `path` (all its members) in chunks, discarding them, and refuse it unless it holds
    exactly `expected_bytes`: never more than one byte past them is decompressed, and memory stays one chunk."""
    fix = "download it again"
    buffer = bytearray(1 << 20)
    total = 0
    try:
        with gzip.open(path, "rb") as stream, memoryview(buffer) as view:
            while total <= expected_bytes:
                got = stream.readinto(view[: min(len(buffer), expected_bytes + 1 - total)])
                if not got:
                    break
                total += got
    except EOFError:  # the last member has no end: the file was cut short
        raise SourceError(
            f"{name}: {declared} but the gzip stream is cut short (it ends without its end marker, before the "
            f"declared size); the file is truncated or not an MNIST file ({fix})"
        ) from None
    except (OSError, zlib.error) as exc:
        raise SourceError(f"{name}: cannot decompress the MNIST file ({exc}); {fix}") from exc
    if total < expected_bytes:
        raise SourceError(
            f"{name}: {declared} but the gzip stream holds only {total:,} bytes; the file is truncated or not an "
            f"MNIST file ({fix})"
        )
    if total > expected_bytes:
        raise SourceError(
            f"{name}: the gzip stream is longer than its header declares ({declared}): more data follows the last "
            f"image; it is not an MNIST file as published ({fix})"
        )


def open_mnist(path: Path, name: str, *, limit: int | None, seed: int | None) -> ArraySource:
    """Open an MNIST idx3 image file (plain or gzipped) as a grayscale array source.

    Only the 16-byte header is read here; the sizes it declares are checked against the file (see the
    module's notes). The pixels are read when batches are first asked for: exactly what the header
    declares, and a stream that goes on beyond it is refused without being decompressed.
    """
    gzipped = path.name.lower().endswith(".gz")
    try:
        if gzipped:
            with gzip.open(path, "rb") as stream:
                header = stream.read(_MNIST_HEADER.size)
        else:
            with open(path, "rb") as stream:
                header = stream.read(_MNIST_HEADER.size)
        file_bytes = path.stat().st_size
    except (OSError, EOFError, zlib.error) as exc:
        raise SourceError(f"{name}: cannot read MNIST file ({exc})") from exc
    n_images, n_rows, n_cols = _read_mnist_header(header, name)
    # Grayscale, with its channel axis: an idx3 file is always N images of rows x columns, so images 1 or 3
    # pixels wide are not mistaken for a single RGB image, as an (N, H, 3) array would be.
    shape = (n_images, n_rows, n_cols, 1)
    expected_bytes = _MNIST_HEADER.size + n_images * n_rows * n_cols
    declared = f"header says {n_images} images of {n_rows}x{n_cols} ({expected_bytes:,} bytes"
    if gzipped:
        most = file_bytes * _DEFLATE_MAX_RATIO + 1024
        if expected_bytes > most:
            raise SourceError(
                f"{name}: {declared} uncompressed) but a gzip file of {file_bytes:,} bytes can hold at most "
                f"{most:,}; the header is damaged or this is not an MNIST file (download it again)"
            )
        # The gzip trailer holds the uncompressed size mod 2**32 of the last gzip member: for a file of one
        # member (as published), a cheap check before reading. Otherwise (a file cut short has no trailer, its
        # last 4 bytes are compressed data; a file of several members, as bgzip writes, records only the last
        # one's size) the stream is decompressed once here, in chunks, and counted: no further than one byte
        # past what the header declares.
        with open(path, "rb") as stream:
            stream.seek(-4, 2)
            stored_size = struct.unpack("<I", stream.read(4))[0]
        if stored_size != expected_bytes % 2**32:
            _check_gzip_length(path, name, expected_bytes, f"{declared} uncompressed)")
    elif file_bytes < expected_bytes:
        raise SourceError(
            f"{name}: {declared}) but the file has only {file_bytes:,} bytes; it is truncated or not an MNIST "
            "file (download it again)"
        )
    elif file_bytes > expected_bytes:
        raise SourceError(
            f"{name}: the file ({file_bytes:,} bytes) is longer than its header declares ({declared})), by "
            f"{file_bytes - expected_bytes:,} bytes; it is not an MNIST file as published (download it again)"
        )

    def load() -> np.ndarray:
        if not gzipped:
            # Read as batches ask, not memory-mapped: a mapped file cut short kills the process (SIGBUS).
            return FileRows(path, _MNIST_HEADER.size, shape, np.uint8, name, fix="download it again")
        # Exactly the declared bytes, into an array sized from the header (bounded above); then the stream
        # must end. Reading it whole instead would decompress whatever it holds beyond the header.
        pixels = np.empty(shape, dtype=np.uint8)
        fix = "download it again"
        try:
            with gzip.open(path, "rb") as stream:
                stream.read(_MNIST_HEADER.size)
                read_exactly(stream, pixels, f"{name}: MNIST pixels, {declared})", SourceError, fix)
                beyond = stream.read(1)
        except (OSError, EOFError, zlib.error) as exc:  # a corrupt or cut stream is only seen here
            raise SourceError(f"{name}: cannot decompress the MNIST file ({exc}); {fix}") from exc
        if beyond:
            raise SourceError(
                f"{name}: the gzip stream is longer than its header declares ({declared})): more data follows "
                f"the last image; it is not an MNIST file as published ({fix})"
            )
        return pixels

    if n_images == 0:
        raise empty_source_error(name, f"the MNIST header says 0 images of {n_rows}x{n_cols}")
    return ArraySource(
        "mnist",
        name,
        load,
        shape,
        lambda hash_content: {"file_sha256": sha256_file(path)} if hash_content else file_identity(path),
        limit=limit,
        seed=seed,
    )


def _refuse_oversized_batch(path: Path | str, size: int) -> None:
    if size > CIFAR_MAX_BATCH_BYTES:
        raise SourceError(
            f"{path}: {size:,} bytes, more than a CIFAR python batch can be ({CIFAR_MAX_BATCH_BYTES:,} bytes; the "
            "largest published one, CIFAR-100's train, is 155 MB); not a CIFAR batch file (download it again)"
        )


def _read_batch_bytes(stream: BinaryIO, size: int | None, path: Path | str) -> bytearray:
    """The bytes of a batch of `size` bytes (None: unknown), refused above :data:`CIFAR_MAX_BATCH_BYTES`
    before anything is read; never more is allocated than the size allows (``read(n)`` would reserve n)."""
    if size is None:
        content = bytearray()
        while chunk := stream.read(1 << 20):
            content += chunk
            _refuse_oversized_batch(path, len(content))
        return content
    _refuse_oversized_batch(path, size)
    content = bytearray(size)
    with memoryview(content) as view:
        filled = 0
        while filled < size and (got := stream.readinto(view[filled:])):
            filled += got
    del content[filled:]  # cut short: the unpickler says so
    if filled == size and stream.read(1):
        raise SourceError(f"{path}: the file grew while it was read; read it again when it is complete")
    return content


def load_cifar_batch(
    path: Path | str, name: str, stream: BinaryIO | None = None, *, size: int | None = None
) -> np.ndarray:
    """Read one CIFAR python batch file into ``(N, 32, 32, 3)`` uint8 (restricted unpickling).

    `stream`, when given, is read instead of opening `path` (a member of a tar archive, see
    :func:`load_cifar_tar`); `path` then only names it in messages, and `size` is the member's size as
    its header gives it. A file or member above :data:`CIFAR_MAX_BATCH_BYTES` is refused before it is
    read, and no read goes past that bound.
    """
    try:
        if stream is None:
            with open(path, "rb") as opened:
                content = _read_batch_bytes(opened, os.fstat(opened.fileno()).st_size, path)
        else:
            content = _read_batch_bytes(stream, size, path)
        # Opcodes checked first: what no CIFAR batch holds is refused before the unpickler builds any of it.
        batch = load_restricted(content, max_keys=_CIFAR_MAX_KEYS, max_items=_CIFAR_MAX_ITEMS)
        del content
    except (
        pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, OSError, KeyError,
        IndexError, OverflowError, MemoryError,
    ) as exc:
        raise SourceError(f"{path}: not a CIFAR python batch file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(batch, dict):
        raise SourceError(f"{path}: a CIFAR batch must be a pickled dict, got {type(batch).__name__}")
    data = batch.get("data", batch.get(b"data"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_ROW:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", None)
        raise SourceError(
            f"{path}: its 'data' must be uint8 (N, {_CIFAR_ROW}) rows of 32x32 RGB, got "
            f"{type(data).__name__} shape {shape} dtype {dtype}"
        )
    # Rows are channel-major (all R, then G, then B): (N, 3, 32, 32) -> (N, 32, 32, 3). A view:
    # open_cifar copies it once, into the array of all batches.
    return data.reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE).transpose(0, 2, 3, 1)


def _has_pickle_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as stream:
            return stream.read(1) == b"\x80"
    except OSError:
        return False


def cifar_train_files(folder: Path) -> list[Path]:
    """The training batch files of a CIFAR-10 or CIFAR-100 python folder, or [] if it is not one."""
    cifar10 = [folder / file_name for file_name in CIFAR10_TRAIN_FILES]
    if all(path.is_file() for path in cifar10):
        return cifar10
    if (folder / "train").is_file() and (folder / "meta").is_file() and _has_pickle_magic(folder / "train"):
        return [folder / "train"]
    return []


def is_cifar_batch_file(path: Path) -> bool:
    """True for a file named like a CIFAR python batch that starts like a pickle."""
    known = path.name in CIFAR10_TRAIN_FILES or path.name in CIFAR_TEST_FILES or path.name == "train"
    return known and path.is_file() and _has_pickle_magic(path)


def open_cifar(
    path: Path, name: str, *, limit: int | None, seed: int | None, files: list[Path] | None = None
) -> ArraySource:
    """Open a CIFAR python folder (its training split) or a single batch file.

    `files`, when given, are the folder's training files as :func:`cifar_train_files` found them
    (so a caller that already looked does not list them again).
    """
    if files is None:
        files = cifar_train_files(path) if path.is_dir() else [path]
    if not files:
        raise SourceError(f"{name}: not a CIFAR-10/100 python batch folder")
    # Batch files hold 10,000 images each; reading them at open gives the exact count and checks
    # the format before any network work. 150 MB for the whole CIFAR-10 training split, copied
    # once: each batch is a transposed view, written straight into the C-contiguous result.
    batches = [load_cifar_batch(file, name) for file in files]
    images = np.empty((sum(len(batch) for batch in batches), _CIFAR_SIDE, _CIFAR_SIDE, 3), np.uint8)
    np.concatenate(batches, axis=0, out=images)
    del batches
    return ArraySource(
        "cifar",
        name,
        lambda: images,
        images.shape,
        lambda hash_content: {
            "files": [
                [file.name, sha256_file(file)] if hash_content else file_identity(file) for file in files
            ]
        },
        limit=limit,
        seed=seed,
    )


def load_cifar_tar(archive: Path, members: Sequence[str], name: str) -> np.ndarray:
    """Read CIFAR python batches from inside a ``.tar.gz`` in place, in the order of `members`.

    One pass over the archive (nothing is extracted to disk); each member is unpickled with the
    :class:`RestrictedUnpickler` as a batch file would be. A batch stored more than once is read from its
    last copy, as ``tar -x`` extracts it (with a warning naming it): the pass goes to the archive's end,
    since only the end shows that no later copy follows. Returns ``(N, 32, 32, 3)`` uint8.
    """
    wanted = {normalise_member(member) for member in members}
    found: dict[str, np.ndarray] = {}
    seen: set[str] = set()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                member_name = normalise_member(member.name)
                if member_name not in wanted:
                    continue
                if member_name in seen:
                    logger.warning(
                        "%s: %s holds %s more than once; the last copy is read, as tar extracts it",
                        name, archive, member.name,
                    )
                seen.add(member_name)
                # The last entry of a name is what extracts: a later folder or link replaces the batch.
                found.pop(member_name, None)
                if member.isfile():
                    where = f"{archive}:{member.name}"
                    # The tar header gives the member's size: an oversized one is refused before reading.
                    _refuse_oversized_batch(where, member.size)
                    with tar.extractfile(member) as stream:  # a regular file: never None
                        found[member_name] = load_cifar_batch(where, name, stream, size=member.size)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise SourceError(f"{name}: cannot read the CIFAR archive {archive} ({exc}); it is damaged or not a "
                          "CIFAR python archive") from exc
    missing = [member for member in members if normalise_member(member) not in found]
    if missing:
        raise SourceError(f"{name}: {archive} has no member {', '.join(missing)}; not a CIFAR python archive")
    batches = [found[normalise_member(member)] for member in members]
    images = np.empty((sum(len(batch) for batch in batches), _CIFAR_SIDE, _CIFAR_SIDE, 3), np.uint8)
    np.concatenate(batches, axis=0, out=images)
    return images

