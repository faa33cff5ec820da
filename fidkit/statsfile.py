"""The statistics file format: ``.npz`` files that fidkit, TTUR and pytorch-fid all read.

A file holds ``mu`` and ``sigma`` (float64; the two keys TTUR and pytorch-fid read) and, when fidkit
wrote it, the extra keys ``n`` (int64), ``factor`` (float64, only for ``n <= dim``),
``fidkit_format_version`` (int64) and ``fidkit_metadata_json`` (a 0-d unicode array holding JSON).
Everything loads with ``allow_pickle=False``.

This module knows the file, not the numbers: :func:`write_stats_file` writes arrays it is given and
:func:`read_stats_file` returns the arrays it finds (checked for presence, dtype and format version);
:class:`fidkit.stats.Stats` validates them as statistics. It also holds the safe numpy-loading helpers
that the array sources share, among them :class:`NpzReader`.

Every ``.npz`` is read header first: the ``.npy`` header of a member (shape, dtype) is read and checked
before its data, every read is bounded by what that header declares, and a header that declares more than
the member holds (or, for statistics, an implausible shape) is refused before anything is allocated. A
2 MB file cannot make fidkit allocate gigabytes.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from fidkit._fs import atomic_write, file_kind
from fidkit.errors import FidkitError, OverwriteError, StatsFileError

__all__ = [
    "STATS_FORMAT_VERSION",
    "NUMPY_LOAD_ERRORS",
    "numpy_load_problem",
    "sniff_numpy_file",
    "NpyHeader",
    "NpzReader",
    "MAX_STATS_DIM",
    "IMAGE_KEYS",
    "read_exactly",
    "StatsFileContents",
    "read_stats_file",
    "write_stats_file",
    "write_npz",
    "is_stats_file",
]

logger = logging.getLogger(__name__)

#: Version of the extra keys fidkit writes beside ``mu`` and ``sigma``. Bump it when their meaning changes.
STATS_FORMAT_VERSION: int = 1

MetadataValue = Union[str, int, float, bool]

#: Keys that hold the images of a ``.npz`` with several arrays, in the order they are tried.
IMAGE_KEYS = ("images", "arr_0")

#: What :func:`numpy.load` raises for a file that is not (or no longer) a whole .npy / .npz:
#: an empty file is an EOFError, a cut zip a BadZipFile, text a ValueError.
NUMPY_LOAD_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)

# Keys of the .npz file. ``mu`` and ``sigma`` are the ones TTUR and pytorch-fid read; the others are ignored
# by them and carry what fidkit needs to stay exact and traceable.
_KEY_MU = "mu"
_KEY_SIGMA = "sigma"
_KEY_N = "n"
_KEY_FACTOR = "factor"
_KEY_VERSION = "fidkit_format_version"
_KEY_METADATA = "fidkit_metadata_json"
_FIDKIT_KEYS = frozenset({_KEY_N, _KEY_FACTOR, _KEY_VERSION, _KEY_METADATA})


#: The largest feature dimension a statistics file may declare: sigma is then 2 GiB of float64. Inception's
#: is 2048; the largest in common use (VGG fc7) 4096.
MAX_STATS_DIM = 16384
#: mu, sigma and factor may declare this many bytes in all whatever the file's size (dim 2896 at most) ...
_STATS_FREE_BYTES = 64 * 2**20
#: ... and beyond it at most this many times the compressed bytes that hold them. A genuine covariance is
#: dense float64 and does not compress (about 1.1:1 with numpy.savez_compressed); 2 MB of zeros declaring a
#: 2 GB sigma (1000:1) is a bomb, not statistics.
_STATS_MAX_RATIO = 32
#: Any other key (n, the format version, the metadata JSON) is small: a number, or a few kB of text.
_SMALL_MEMBER_BYTES = 16 * 2**20
#: deflate expands at most 1032-fold: a zip directory that says a member is larger lies.
_DEFLATE_MAX_RATIO = 1032
_NPY_MAGIC = b"\x93NUMPY"
# numpy's own limit on a .npy header (``max_header_size``); what numpy writes is a few hundred bytes.
_MAX_NPY_HEADER_BYTES = 10_000
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a member first, or an empty archive's directory
#: What reading a zip member can raise besides the numpy load errors: a damaged stream, an unsupported or
#: encrypted member.
_ZIP_READ_ERRORS = (*(OSError, ValueError, EOFError, zipfile.BadZipFile), zlib.error, NotImplementedError,
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
            raise error(f"{what}: the file holds a single array (.npy data), not an .npz archive; rename it .npy")
        try:
            file_bytes = self.path.stat().st_size
            self._zip = zipfile.ZipFile(self.path)
        except _ZIP_READ_ERRORS as exc:
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
        except _ZIP_READ_ERRORS as exc:
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
        except _ZIP_READ_ERRORS as exc:
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


@dataclass(frozen=True)
class StatsFileContents:
    """The arrays of a statistics file, as found (not yet validated as statistics)."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int | None = None
    factor: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def is_stats_file(path: str | os.PathLike) -> bool:
    """True if `path` is an ``.npz`` of statistics, not images: ``mu`` and ``sigma``, or one of them and no images key.

    A file with only one of the two is a broken statistics file: it is recognised here so that
    :func:`read_stats_file` says which key is missing, rather than an image reader calling ``mu`` pixels.
    Reads only the archive's directory. Anything unreadable is False; the reader that then opens it as
    images says what is wrong.
    """
    file_path = Path(path)
    if not file_path.name.lower().endswith(".npz") or not file_path.is_file():
        return False
    if sniff_numpy_file(file_path) != "npz":
        return False
    try:
        with zipfile.ZipFile(file_path) as archive:
            keys = {name.removesuffix(".npy") for name in archive.namelist()}
    except _ZIP_READ_ERRORS:
        return False
    if {_KEY_MU, _KEY_SIGMA} <= keys:
        return True
    return bool({_KEY_MU, _KEY_SIGMA} & keys) and not keys & set(IMAGE_KEYS)


def write_stats_file(
    path: str | os.PathLike,
    *,
    mu: np.ndarray,
    sigma: np.ndarray,
    n: int | None,
    factor: np.ndarray | None,
    metadata: dict[str, MetadataValue],
    overwrite: bool = False,
) -> None:
    """Write statistics to an ``.npz`` file, atomically; the path is used exactly as given.

    Raises
    ------
    OverwriteError
        `path` exists and `overwrite` is False.
    StatsFileError
        `path` is a folder, or cannot be written (its parent is a file, no permission, disk full).
    """
    arrays: dict[str, np.ndarray] = {
        _KEY_MU: np.asarray(mu, dtype=np.float64),
        _KEY_SIGMA: np.asarray(sigma, dtype=np.float64),
        _KEY_VERSION: np.asarray(STATS_FORMAT_VERSION, dtype=np.int64),
        _KEY_METADATA: np.asarray(json.dumps(metadata, sort_keys=True), dtype=np.str_),
    }
    if n is not None:
        arrays[_KEY_N] = np.asarray(n, dtype=np.int64)
    if factor is not None:
        arrays[_KEY_FACTOR] = np.asarray(factor, dtype=np.float64)
    write_npz(path, arrays, what="statistics", example="stats.npz", overwrite=overwrite)
    logger.debug("saved statistics (n=%s, dim=%d) to %s", n, arrays[_KEY_MU].shape[0], path)


def write_npz(
    path: str | os.PathLike, arrays: dict[str, np.ndarray], *, what: str, example: str, overwrite: bool
) -> None:
    """Write `arrays` to an ``.npz`` at exactly `path`, atomically: the one writer of fidkit's ``.npz`` files
    (statistics and features). `what` names the content in errors, `example` a file name to suggest.

    Raises
    ------
    OverwriteError
        `path` exists and `overwrite` is False.
    StatsFileError
        `path` is a folder, or cannot be written (its parent is a file, no permission, disk full).
    """
    target = Path(path)
    if target.is_dir():
        # Checked first: os.replace would fail only after the whole file was written, with IsADirectoryError.
        raise StatsFileError(f"{target} is a folder; give a file path for the {what}, e.g. {target / example}")
    try:
        with atomic_write(target, overwrite=overwrite) as temporary:
            # Through a handle: np.savez appends ".npz" to a path that lacks it, which would miss the rename.
            with open(temporary, "wb") as stream:
                np.savez(stream, **arrays)
    except OverwriteError:
        raise
    except OSError as exc:
        # A parent that is a regular file, a read-only or full disk, no permission: all say the same thing.
        raise StatsFileError(
            f"cannot write {what} to {target} ({exc.strerror or exc}); choose a path in a writable folder"
        ) from exc


def check_regular_file(path: Path, what: str, fix: str) -> None:
    """Raise :class:`StatsFileError` unless `path` is a regular file (after links): missing, or a folder, FIFO or
    device, each said as it is (reading a FIFO or ``/dev/zero`` would block or never end)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise StatsFileError(f"{path}: no such {what}; {fix}") from None
    if not stat.S_ISREG(mode):
        raise StatsFileError(f"{path}: is {file_kind(mode)}, not a {what}; {fix}")


def read_stats_file(path: str | os.PathLike) -> StatsFileContents:
    """Read the arrays of a statistics ``.npz`` written by fidkit, TTUR or pytorch-fid.

    The ``.npy`` headers are read first (:class:`NpzReader`); shapes that do not make statistics (``sigma``
    not ``dim x dim`` for ``mu``'s ``dim``, ``dim`` above :data:`MAX_STATS_DIM`, arrays far larger than the
    compressed bytes holding them) are refused before any array is read.

    Raises
    ------
    StatsFileError
        Missing, unreadable or corrupt file; no ``mu``/``sigma``; inconsistent or implausible shapes;
        arrays that are not numbers; metadata that is not JSON; written by a newer fidkit. The message names
        the file and what to do.
    """
    file_path = Path(path)
    check_regular_file(file_path, "statistics file", "check the path or compute the statistics")
    if sniff_numpy_file(file_path) == "npy":
        raise StatsFileError(
            f"{file_path}: holds a single array (.npy data), not statistics; a statistics file is an .npz with "
            "keys 'mu' and 'sigma'"
        )
    with NpzReader(file_path, str(file_path), StatsFileError, "recompute it or pass the image folder") as npz:
        keys = set(npz.keys)
        missing = [key for key in (_KEY_MU, _KEY_SIGMA) if key not in keys]
        if missing:
            present = [key for key in (_KEY_MU, _KEY_SIGMA) if key in keys]
            what = (
                f"a broken statistics file: it has {present[0]!r} but no {missing[0]!r}; recompute it"
                if present else "this is not an FID statistics file"
            )
            raise StatsFileError(
                f"{file_path}: has no {' or '.join(repr(k) for k in missing)} (keys: "
                f"{', '.join(sorted(keys)) or 'none'}); {what}"
            )
        headers = {key: npz.header(key) for key in sorted(keys & ({_KEY_MU, _KEY_SIGMA} | _FIDKIT_KEYS))}
        for key, header in headers.items():
            if key not in (_KEY_MU, _KEY_SIGMA, _KEY_FACTOR) and header.nbytes > _SMALL_MEMBER_BYTES:
                raise StatsFileError(
                    f"{file_path}: {key!r} declares {header.describe()}; in a statistics file it is a number "
                    "or a short text; the file is damaged or crafted: recompute it"
                )
        # The small keys first: n bounds the factor's columns.
        large = (_KEY_MU, _KEY_SIGMA, _KEY_FACTOR)
        contents = {key: npz.read(key, headers[key]) for key in headers if key not in large}
        n_declared = None
        if _KEY_N in contents:
            n_declared = _scalar_int(contents[_KEY_N], _KEY_N, file_path)
        _check_stats_headers(headers, n_declared, npz, file_path)
        for key in (_KEY_MU, _KEY_SIGMA, _KEY_FACTOR):
            if key in headers:
                contents[key] = npz.read(key, headers[key])
    return _parse(contents, file_path)


def _check_stats_headers(
    headers: dict[str, NpyHeader], n_declared: int | None, npz: NpzReader, file_path: Path
) -> None:
    """Refuse shapes that are not statistics, from the headers alone (nothing large is read yet)."""
    for key in (_KEY_MU, _KEY_SIGMA, _KEY_FACTOR):
        if key in headers and headers[key].dtype.kind not in "iufc":
            raise StatsFileError(f"{file_path}: {key!r} has dtype {headers[key].dtype}, not numbers")
    mu, sigma = headers[_KEY_MU], headers[_KEY_SIGMA]
    if len(mu.shape) != 1 or mu.shape[0] < 1:
        raise StatsFileError(
            f"{file_path}: mu has shape {mu.shape}; it must be a 1-D vector of length dim; the file is corrupt "
            "or not FID statistics: recompute it"
        )
    dim = mu.shape[0]
    if dim > MAX_STATS_DIM:
        raise StatsFileError(
            f"{file_path}: mu declares dim {dim:,}, above the {MAX_STATS_DIM:,} fidkit reads (sigma alone would be "
            f"{dim * dim * 8:,} bytes); the file is damaged or not FID statistics: recompute it"
        )
    if sigma.shape != (dim, dim):
        raise StatsFileError(
            f"{file_path}: sigma has shape {sigma.shape} but mu has length {dim}; sigma must be the square "
            f"({dim}, {dim}) covariance of the same features; the file is corrupt: recompute it"
        )
    arrays = [mu, sigma]
    if _KEY_FACTOR in headers:
        factor = headers[_KEY_FACTOR]
        max_rank = max(n_declared - 1, 1) if n_declared is not None else dim
        if len(factor.shape) != 2 or factor.shape[0] != dim or not 1 <= factor.shape[1] <= max_rank:
            limit = f"n - 1 = {max_rank}" if n_declared is not None else f"dim = {dim}"
            raise StatsFileError(
                f"{file_path}: factor has shape {factor.shape}; expected ({dim}, rank) with 1 <= rank <= {limit}; "
                "the file is corrupt: recompute it"
            )
        arrays.append(factor)
    declared = sum(header.nbytes for header in arrays)
    stored = sum(npz.stored_bytes(header.key) for header in arrays)
    if declared > max(_STATS_FREE_BYTES, _STATS_MAX_RATIO * stored):
        raise StatsFileError(
            f"{file_path}: mu, sigma{' and factor' if len(arrays) == 3 else ''} declare {declared:,} bytes held in "
            f"{stored:,} compressed bytes ({declared / max(stored, 1):,.0f}:1); a real covariance does not "
            "compress like that, so the file is crafted or damaged. If it is genuine, save it uncompressed "
            "(numpy.savez) and load it again"
        )


def _parse(contents: dict[str, np.ndarray], file_path: Path) -> StatsFileContents:
    if _KEY_VERSION in contents:
        version = _scalar_int(contents[_KEY_VERSION], _KEY_VERSION, file_path)
        if version > STATS_FORMAT_VERSION:
            raise StatsFileError(
                f"{file_path}: written by a newer fidkit (format {version}, this one reads up to "
                f"{STATS_FORMAT_VERSION}); upgrade fidkit"
            )
    n_samples = _scalar_int(contents[_KEY_N], _KEY_N, file_path) if _KEY_N in contents else None
    metadata: dict[str, Any] = {}
    if _KEY_METADATA in contents:
        raw = contents[_KEY_METADATA]
        try:
            metadata = json.loads(str(raw.item()) if raw.ndim == 0 else "")
        except (ValueError, TypeError) as exc:
            raise StatsFileError(f"{file_path}: metadata is not valid JSON ({exc}); recompute the file") from exc
        except RecursionError:
            raise StatsFileError(
                f"{file_path}: metadata JSON nested too deeply to read (not written by fidkit); recompute the file"
            ) from None
        if not isinstance(metadata, dict):
            raise StatsFileError(
                f"{file_path}: metadata is JSON {type(metadata).__name__}, not an object; recompute the file"
            )
    for key in (_KEY_MU, _KEY_SIGMA, _KEY_FACTOR):
        if key in contents and not np.issubdtype(contents[key].dtype, np.number):
            raise StatsFileError(f"{file_path}: {key!r} has dtype {contents[key].dtype}, not numbers")
    return StatsFileContents(
        mu=contents[_KEY_MU],
        sigma=contents[_KEY_SIGMA],
        n=n_samples,
        factor=contents.get(_KEY_FACTOR),
        metadata=metadata,
    )


def _scalar_int(value: np.ndarray, key: str, file_path: Path) -> int:
    if value.ndim != 0 or not np.issubdtype(value.dtype, np.integer):
        raise StatsFileError(f"{file_path}: {key!r} should be a single integer, found {value.dtype} {value.shape}")
    return int(value)
