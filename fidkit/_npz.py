"""Reading numpy files that may be hostile: an ``.npz`` header first, every read bounded by what it declares.

Every ``.npz`` is read header first (:class:`NpzReader`): the zip directory is checked against the file's size
(deflate expands at most 1032-fold), a member's ``.npy`` header (its declared length first, then shape and dtype)
is read and checked before its data, and every read is bounded by what that header declares, so a 2 MB file
cannot make fidkit allocate gigabytes. Nothing is ever unpickled, and no message advises ``allow_pickle=True``
(:func:`numpy_load_problem`). Statistics files (:mod:`fidkit.statsfile`), features files and image arrays
(:mod:`fidkit.sources`) are all read through it.
"""

from __future__ import annotations

import io
import math
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fidkit.errors import FidkitError

__all__ = [
    "NUMPY_LOAD_ERRORS", "ZIP_READ_ERRORS", "NpyHeader", "NpzReader", "numpy_load_problem", "read_exactly",
    "sniff_numpy_file",
]

#: What :func:`numpy.load` raises for a file that is not (or no longer) a whole .npy / .npz:
#: an empty file is an EOFError, a cut zip a BadZipFile, text a ValueError.
NUMPY_LOAD_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)


#: deflate expands at most 1032-fold: a zip directory that says a member is larger lies.
_DEFLATE_MAX_RATIO = 1032
_NPY_MAGIC = b"\x93NUMPY"
# numpy's own limit on a .npy header (``max_header_size``); what numpy writes is a few hundred bytes.
_MAX_NPY_HEADER_BYTES = 10_000
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a member first, or an empty archive's directory
#: What reading a zip member can raise besides the numpy load errors: a damaged stream, an unsupported or
#: encrypted member.
ZIP_READ_ERRORS = (*(OSError, ValueError, EOFError, zipfile.BadZipFile), zlib.error, NotImplementedError,
                    RuntimeError)


def sniff_numpy_file(path: str | os.PathLike) -> str | None:
    """What a file holds by its first bytes: ``"npy"`` (a numpy array), ``"npz"`` (a zip archive) or None.

    The name is not looked at: numpy reads by content, so fidkit checks the content before trusting a name.
    """
    try:
        with open(path, "rb") as stream:
            head = stream.read(len(_NPY_MAGIC))
    except OSError:
        return None
    if head.startswith(_NPY_MAGIC):
        return "npy"
    if head.startswith(_ZIP_MAGICS):
        return "npz"
    return None


@dataclass(frozen=True)
class NpyHeader:
    """The header of one ``.npy`` member: what its data is, read before the data."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    #: Bytes before the data inside the member (magic and header).
    offset: int

    @property
    def count(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of data the header declares (Python ints: no overflow)."""
        return self.count * self.dtype.itemsize

    def describe(self) -> str:
        return f"shape {self.shape} {self.dtype} ({self.nbytes:,} bytes)"


class NpzReader:
    """An ``.npz`` opened member by member: each ``.npy`` header is read and checked before its data.

    Unlike :func:`numpy.load`, nothing is read until asked for, and no read goes past what the member's
    header declares; a header that declares more than the member holds (by the zip directory, which is
    itself checked against the file's size and deflate's largest expansion) is refused before any
    allocation.

    Parameters
    ----------
    path : path-like
        The file.
    what : str
        How messages name it.
    error : type of FidkitError
        Raised for anything wrong (:class:`~fidkit.errors.StatsFileError` for statistics,
        :class:`~fidkit.errors.SourceError` for images).
    fix : str
        What the user should do, appended to messages about a damaged file.

    Raises
    ------
    `error`
        The file holds ``.npy`` data (a single array), is not a zip archive, or its directory is damaged
        or claims more than the file holds.
    """

    def __init__(self, path: str | os.PathLike, what: str, error: type[FidkitError], fix: str) -> None:
        self.path = Path(path)
        self.what = what
        self.error = error
        self.fix = fix
        kind = sniff_numpy_file(self.path)
        if kind == "npy":
            # Renaming helps only a file misnamed .npz; one named .npy already is what it says.
            advice = fix if self.path.suffix.lower() == ".npy" else "rename it .npy"
            raise error(f"{what}: the file holds a single array (.npy data), not an .npz archive; {advice}")
        try:
            file_bytes = self.path.stat().st_size
            self._zip = zipfile.ZipFile(self.path)
        except ZIP_READ_ERRORS as exc:
            if isinstance(exc, EOFError) or (isinstance(exc, zipfile.BadZipFile) and _is_empty(self.path)):
                problem = "the file is empty or cut short"
            elif kind is None:
                problem = "neither a .npy nor a .npz file: it has no numpy or zip header"
            else:
                problem = str(exc) or type(exc).__name__
            raise error(f"{what}: not a readable .npz file ({problem}); {fix}") from exc
        try:
            self._members: dict[str, zipfile.ZipInfo] = {}
            for info in self._zip.infolist():
                if info.is_dir():
                    continue
                self._check_directory_entry(info, file_bytes)
                # numpy's keys: the member name less ".npy"; a repeated name means its last copy, as zipfile.
                self._members[info.filename.removesuffix(".npy")] = info
        except BaseException:
            self._zip.close()
            raise

    def _check_directory_entry(self, info: zipfile.ZipInfo, file_bytes: int) -> None:
        key = info.filename.removesuffix(".npy")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self.error(
                f"{self.what}: member {key!r} uses zip compression method {info.compress_type}; fidkit reads "
                "the stored and deflated members numpy.savez and numpy.savez_compressed write; save it again "
                "with numpy"
            )
        bound = info.compress_size if info.compress_type == zipfile.ZIP_STORED else (
            info.compress_size * _DEFLATE_MAX_RATIO + 1024
        )
        if info.compress_size > file_bytes or info.file_size > bound:
            raise self.error(
                f"{self.what}: the zip directory says member {key!r} is {info.file_size:,} bytes "
                f"({info.compress_size:,} compressed) in a file of {file_bytes:,} bytes, which cannot hold it; "
                f"the file is damaged or crafted; {self.fix}"
            )

    # -- the context manager

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> NpzReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- members

    @property
    def keys(self) -> list[str]:
        """The arrays' names, in archive order (as :attr:`numpy.lib.npyio.NpzFile.files`)."""
        return list(self._members)

    def stored_bytes(self, key: str) -> int:
        """Bytes the member takes in the file (compressed or not)."""
        return int(self._members[key].compress_size)

    def header(self, key: str) -> NpyHeader:
        """Read and check the ``.npy`` header of `key`; its data is not read.

        Raises `error` for a member that is not a ``.npy`` array, an object dtype (pickles are never
        loaded), a negative dimension, or data the member is too short to hold.
        """
        info = self._members[key]
        try:
            with self._zip.open(info) as stream:
                header = self._read_header(stream, key)
        except FidkitError:
            raise
        except ZIP_READ_ERRORS as exc:
            raise self.error(
                f"{self.what}: cannot read the header of array {key!r} ({exc or type(exc).__name__}); {self.fix}"
            ) from exc
        available = info.file_size - header.offset
        if header.nbytes > available:
            raise self.error(
                f"{self.what}: array {key!r} declares {header.describe()} but its member holds "
                f"{max(available, 0):,} bytes of data; the file is cut short, damaged or crafted; {self.fix}"
            )
        return header

    def _read_header(self, stream: Any, key: str) -> NpyHeader:
        magic = stream.read(len(_NPY_MAGIC) + 2)
        if not magic.startswith(_NPY_MAGIC) or len(magic) < len(_NPY_MAGIC) + 2:
            raise self.error(f"{self.what}: member {key!r} is not a numpy array (no .npy header); {self.fix}")
        version = (magic[-2], magic[-1])
        length_format = {(1, 0): "<H", (2, 0): "<I"}.get(version)
        if length_format is None:
            raise self.error(
                f"{self.what}: array {key!r} has .npy format version {version[0]}.{version[1]}, which fidkit "
                "does not read (1.0 and 2.0, what numpy writes for plain arrays); save it again with numpy.savez"
            )
        # The header's length is checked before the header is read: numpy reads all of a declared length (up to
        # 4 GiB in version 2.0, inflated from a few MB of a compressed member) before its own limit refuses it.
        length_bytes = stream.read(struct.calcsize(length_format))
        complete = len(length_bytes) == struct.calcsize(length_format)
        header_length = struct.unpack(length_format, length_bytes)[0] if complete else -1
        if not 0 <= header_length <= _MAX_NPY_HEADER_BYTES:
            raise self.error(
                f"{self.what}: array {key!r} declares a .npy header of {header_length:,} bytes (numpy writes a "
                f"few hundred; fidkit reads up to {_MAX_NPY_HEADER_BYTES:,}); the file is damaged or crafted; "
                f"{self.fix}"
            )
        header_text = stream.read(header_length)
        if len(header_text) < header_length:
            raise self.error(f"{self.what}: the .npy header of array {key!r} is cut short; {self.fix}")
        try:
            read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            shape, fortran_order, dtype = read_header[version](io.BytesIO(length_bytes + header_text))
        except (ValueError, TypeError, SyntaxError) as exc:
            raise self.error(
                f"{self.what}: the .npy header of array {key!r} cannot be read ({numpy_load_problem(exc)}); "
                f"{self.fix}"
            ) from exc
        dtype = np.dtype(dtype)
        if dtype.hasobject:
            raise self.error(
                f"{self.what}: array {key!r} holds Python objects (dtype {dtype}); fidkit never unpickles "
                "them: save numeric arrays"
            )
        if any(int(d) < 0 for d in shape):
            raise self.error(f"{self.what}: array {key!r} declares a negative dimension {tuple(shape)}; {self.fix}")
        offset = len(magic) + len(length_bytes) + header_length
        return NpyHeader(key, tuple(int(d) for d in shape), dtype, bool(fortran_order), offset)

    def open_data(self, key: str) -> tuple[Any, NpyHeader]:
        """``(stream, header)``: the member opened and positioned at its data, header checked; the caller
        closes the stream and reads at most ``header.nbytes`` from it."""
        header = self.header(key)
        stream = self._zip.open(self._members[key])
        try:
            stream.read(header.offset)
        except BaseException:
            stream.close()
            raise
        return stream, header

    def read(self, key: str, header: NpyHeader | None = None) -> np.ndarray:
        """Read array `key`: its header is checked first (:meth:`header`), then exactly its data."""
        expected = header if header is not None else self.header(key)
        try:
            stream, header = self.open_data(key)
            with stream:
                if header != expected:
                    raise self.error(f"{self.what}: array {key!r} changed while it was read; {self.fix}")
                flat = np.empty(header.count, dtype=header.dtype)
                read_exactly(stream, flat, f"{self.what}: array {key!r}", self.error, self.fix)
        except FidkitError:
            raise
        except ZIP_READ_ERRORS as exc:
            problem = exc or type(exc).__name__
            raise self.error(f"{self.what}: cannot read array {key!r} ({problem}); {self.fix}") from exc
        if header.fortran_order:
            return flat.reshape(header.shape[::-1]).transpose()
        return flat.reshape(header.shape)


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def read_exactly(stream: Any, out: np.ndarray, what: str, error: type[FidkitError], fix: str) -> None:
    """Fill the C-contiguous `out` from `stream`, or raise `error` when the stream ends first."""
    view = memoryview(out).cast("B")
    filled = 0
    while filled < len(view):
        got = stream.readinto(view[filled : filled + (1 << 24)])
        if not got:
            raise error(f"{what}: the data ends after {filled:,} of {len(view):,} bytes; the file is cut short; {fix}")
        filled += got


def numpy_load_problem(exc: BaseException) -> str:
    """numpy's reason for refusing a file, fit for a user.

    With ``allow_pickle=False`` numpy reports any file without a .npy or zip header as "pickled
    (object) data" and suggests unpickling it: wrong for a text or image file, and advice fidkit
    must never give, since a pickle can run code.
    """
    text = str(exc) or type(exc).__name__
    if isinstance(exc, EOFError):
        return "the file is empty or cut short"
    if "pickle" in text:
        return "neither a .npy nor a .npz file: it has no numpy or zip header"
    return text
