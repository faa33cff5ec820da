"""The statistics file format: ``.npz`` files that fidkit, TTUR and pytorch-fid all read.

A file holds ``mu`` and ``sigma`` (float64, or sigma in float32 for statistics that came in float32; the two
keys TTUR and pytorch-fid read) and, when fidkit wrote it, the extra keys ``n`` (int64), ``factor`` (float64,
only for ``n <= dim``), ``fidkit_format_version`` (int64) and ``fidkit_metadata_json`` (a 0-d unicode array
holding JSON).
Everything loads with ``allow_pickle=False``.

This module knows the file, not the numbers: :func:`write_stats_file` writes arrays it is given and
:func:`read_stats_file` returns the arrays it finds (checked for presence, dtype and format version);
:class:`fidkit.stats.Stats` validates them as statistics.

Files are read through :class:`fidkit._npz.NpzReader`, header first, every read bounded by what the header
declares; here, beyond that, shapes that do not make statistics (and arrays far larger than the compressed
bytes holding them) are refused before anything is allocated. A 2 MB file cannot make fidkit allocate
gigabytes.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from fidkit._fs import atomic_write, file_kind, file_size_limit_fix, out_of_space
from fidkit._npz import ZIP_READ_ERRORS, NpyHeader, NpzReader, sniff_numpy_file
from fidkit.errors import OverwriteError, StatsFileError

__all__ = [
    "STATS_FORMAT_VERSION",
    "MAX_STATS_DIM",
    "IDENTITY_KEYS",
    "IMAGE_KEYS",
    "StatsFileContents",
    "read_stats_file",
    "write_stats_file",
    "write_npz",
    "is_stats_file",
]

logger = logging.getLogger(__name__)

#: Version of the extra keys fidkit writes beside ``mu`` and ``sigma``. Bump it when their meaning changes.
STATS_FORMAT_VERSION: int = 1
#: The first version fidkit ever wrote (it has written no other yet): a file declaring a lower one is damaged.
_FIRST_FORMAT_VERSION = 1

MetadataValue = Union[str, int, float, bool]

#: The metadata keys that name a feature space: the extractor, the layer, the weights, the preprocessing (its
#: convention and resize mode, and the exporter version that implements them), the engine and the precision.
#: Statistics or features that differ in any of them measure different things and are never merged, whether as
#: shards (``Stats.merge``), ranks (``fidkit.FID`` under torch.distributed) or Ray actors. The Inception's
#: ``identity_fields`` states exactly these (a test holds the two equal); a key only one side records is not
#: compared (another tool's file, a custom extractor).
IDENTITY_KEYS = (
    "extractor", "feature_extractor", "weights_sha256", "convention", "resize_mode", "exporter_version", "engine",
    "precision",
)

#: Keys that hold the images of a ``.npz`` with several arrays, in the order they are tried.
IMAGE_KEYS = ("images", "arr_0")

# Keys of the .npz file. ``mu`` and ``sigma`` are the ones TTUR and pytorch-fid read; the others are ignored
# by them and carry what fidkit needs to stay exact and traceable.
_KEY_MU = "mu"
_KEY_SIGMA = "sigma"
_KEY_N = "n"
_KEY_FACTOR = "factor"
_KEY_VERSION = "fidkit_format_version"
_KEY_METADATA = "fidkit_metadata_json"
_FIDKIT_KEYS = frozenset({_KEY_N, _KEY_FACTOR, _KEY_VERSION, _KEY_METADATA})
#: Keys of ADM's reference batches beside ``mu`` and ``sigma``: the spatial statistics sFID reads, and the
#: reference images (:mod:`fidkit.stats.reference`).
KEY_MU_S = "mu_s"
KEY_SIGMA_S = "sigma_s"
KEY_REFERENCE_IMAGES = "arr_0"
REFERENCE_BATCH_KEYS = frozenset({KEY_MU_S, KEY_SIGMA_S, KEY_REFERENCE_IMAGES})


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


@dataclass(frozen=True)
class StatsFileContents:
    """The arrays of a statistics file, as found (not yet validated as statistics)."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int | None = None
    factor: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Keys of :data:`REFERENCE_BATCH_KEYS` the file also holds (not read here).
    reference_keys: frozenset[str] = frozenset()


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
    except ZIP_READ_ERRORS:
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
        `path` is a folder, or cannot be written (its parent is a file, no permission, disk full); or the
        statistics have more than :data:`MAX_STATS_DIM` dimensions, which :func:`read_stats_file` refuses
        (checked before anything is written).
    """
    dim = int(np.shape(mu)[0]) if np.ndim(mu) == 1 else 0
    if dim > MAX_STATS_DIM:
        raise StatsFileError(
            f"{path}: not written: statistics of dim {dim:,} are above the {MAX_STATS_DIM:,} a statistics file may "
            f"hold (sigma alone would be {dim * dim * 8:,} bytes), so fidkit could not read it back; keep them in "
            f"memory, or reduce the features to at most {MAX_STATS_DIM:,} dimensions"
        )
    arrays: dict[str, np.ndarray] = {
        _KEY_MU: np.asarray(mu, dtype=np.float64),
        _KEY_SIGMA: _as_float(sigma),
        _KEY_VERSION: np.asarray(STATS_FORMAT_VERSION, dtype=np.int64),
        _KEY_METADATA: np.asarray(json.dumps(metadata, sort_keys=True), dtype=np.str_),
    }
    if n is not None:
        arrays[_KEY_N] = np.asarray(n, dtype=np.int64)
    if factor is not None:
        arrays[_KEY_FACTOR] = _as_float(factor)
    write_npz(path, arrays, what="statistics", example="stats.npz", overwrite=overwrite)
    logger.debug("saved statistics (n=%s, dim=%d) to %s", n, arrays[_KEY_MU].shape[0], path)


def _as_float(array: Any) -> np.ndarray:
    """`array` as float64, unless it is float32 or float16 already: statistics read from a float32 file are written
    back in float32, so that reading them again allows the round-off of that precision (``Stats.storage_eps``)."""
    given = np.asarray(array)
    return given if given.dtype in (np.float16, np.float32, np.float64) else given.astype(np.float64)


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
    if os.path.isdir(target):  # os.path's: a name too long for the file system is refused by atomic_write
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
        if exc.errno == errno.ENAMETOOLONG and exc.strerror is None:  # atomic_write's refusal names it all
            raise StatsFileError(str(exc)) from exc
        # A parent that is a regular file, a read-only or full disk, no permission: all say the same thing.
        fix = file_size_limit_fix(exc, "choose a path on another file system") or (
            "free disk space, or choose a path on another disk" if out_of_space(exc) else (
            "choose a shorter name" if exc.errno == errno.ENAMETOOLONG else "choose a path in a writable folder"
        ))
        raise StatsFileError(f"cannot write {what} to {target} ({exc.strerror or exc}); {fix}") from exc


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
    return _parse(contents, file_path, frozenset(keys & REFERENCE_BATCH_KEYS))


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


def check_format_version(value: np.ndarray, file_path: Path) -> int:
    """The ``fidkit_format_version`` member of a statistics or features file, refused when a newer fidkit wrote it
    (its members may mean something this one does not know) or when it is below the first version fidkit ever
    wrote (no fidkit wrote it: the file is damaged or edited): the one check of both file kinds."""
    version = _scalar_int(value, _KEY_VERSION, file_path)
    if version < _FIRST_FORMAT_VERSION:
        raise StatsFileError(
            f"{file_path}: declares format version {version}, but fidkit's formats start at "
            f"{_FIRST_FORMAT_VERSION} (this one reads {_FIRST_FORMAT_VERSION} to {STATS_FORMAT_VERSION}); no fidkit "
            "wrote it, so the file is damaged or was edited: recompute it"
        )
    if version > STATS_FORMAT_VERSION:
        raise StatsFileError(
            f"{file_path}: written by a newer fidkit (format {version}, this one reads up to "
            f"{STATS_FORMAT_VERSION}); upgrade fidkit"
        )
    return version


def _parse(
    contents: dict[str, np.ndarray], file_path: Path, reference_keys: frozenset[str] = frozenset()
) -> StatsFileContents:
    if _KEY_VERSION in contents:
        check_format_version(contents[_KEY_VERSION], file_path)
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
        reference_keys=reference_keys,
    )


def _scalar_int(value: np.ndarray, key: str, file_path: Path) -> int:
    if value.ndim != 0 or not np.issubdtype(value.dtype, np.integer):
        raise StatsFileError(f"{file_path}: {key!r} should be a single integer, found {value.dtype} {value.shape}")
    return int(value)
