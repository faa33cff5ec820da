"""The statistics file format: ``.npz`` files that fidkit, TTUR and pytorch-fid all read.

A file holds ``mu`` and ``sigma`` (float64; the two keys TTUR and pytorch-fid read) and, when fidkit
wrote it, the extra keys ``n`` (int64), ``factor`` (float64, only for ``n <= dim``),
``fidkit_format_version`` (int64) and ``fidkit_metadata_json`` (a 0-d unicode array holding JSON).
Everything loads with ``allow_pickle=False``.

This module knows the file, not the numbers: :func:`write_stats_file` writes arrays it is given and
:func:`read_stats_file` returns the arrays it finds (checked for presence, dtype and format version);
:class:`fidkit.stats.Stats` validates them as statistics. It also holds the safe numpy-loading helpers
that the array sources share.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from fidkit._fs import atomic_write
from fidkit.errors import OverwriteError, StatsFileError

__all__ = [
    "STATS_FORMAT_VERSION",
    "NUMPY_LOAD_ERRORS",
    "numpy_load_problem",
    "StatsFileContents",
    "read_stats_file",
    "write_stats_file",
    "is_stats_file",
]

logger = logging.getLogger(__name__)

#: Version of the extra keys fidkit writes beside ``mu`` and ``sigma``. Bump it when their meaning changes.
STATS_FORMAT_VERSION: int = 1

MetadataValue = Union[str, int, float, bool]

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
    """True if `path` is a readable ``.npz`` holding both ``mu`` and ``sigma``: statistics, not images.

    Reads only the archive's directory. Anything unreadable is False; the reader that then opens it
    as images says what is wrong.
    """
    file_path = Path(path)
    if not file_path.name.lower().endswith(".npz") or not file_path.is_file():
        return False
    try:
        with np.load(file_path, allow_pickle=False) as loaded:
            keys = set(getattr(loaded, "files", ()))
    except (*NUMPY_LOAD_ERRORS, AttributeError):
        # AttributeError: .npy data in a file named .npz loads as a plain array, not a context manager.
        return False
    return {_KEY_MU, _KEY_SIGMA} <= keys


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
    target = Path(path)
    if target.is_dir():
        # Checked first: os.replace would fail only after the whole file was written, with IsADirectoryError.
        raise StatsFileError(
            f"{target} is a folder; give a file path for the statistics, e.g. {target / 'stats.npz'}"
        )
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
            f"cannot write statistics to {target} ({exc.strerror or exc}); choose a path in a writable folder"
        ) from exc
    logger.debug("saved statistics (n=%s, dim=%d) to %s", n, arrays[_KEY_MU].shape[0], target)


def read_stats_file(path: str | os.PathLike) -> StatsFileContents:
    """Read the arrays of a statistics ``.npz`` written by fidkit, TTUR or pytorch-fid.

    Raises
    ------
    StatsFileError
        Missing, unreadable or corrupt file; no ``mu``/``sigma``; arrays that are not numbers; metadata
        that is not JSON; written by a newer fidkit. The message names the file and what to do.
    """
    file_path = Path(path)
    if not file_path.is_file():
        raise StatsFileError(f"{file_path}: no such statistics file; check the path or compute the statistics")
    try:
        loaded = np.load(file_path, allow_pickle=False)
    except NUMPY_LOAD_ERRORS as exc:
        raise StatsFileError(
            f"{file_path}: not a readable .npz statistics file ({numpy_load_problem(exc)}); recompute it or "
            "pass the image folder"
        ) from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise StatsFileError(
            f"{file_path}: holds a single array, not statistics; a statistics file is an .npz with keys "
            "'mu' and 'sigma'"
        )
    try:
        with loaded:
            keys = set(loaded.files)
            missing = [key for key in (_KEY_MU, _KEY_SIGMA) if key not in keys]
            if missing:
                raise StatsFileError(
                    f"{file_path}: has no {' or '.join(repr(k) for k in missing)} (keys: "
                    f"{', '.join(sorted(keys)) or 'none'}); this is not an FID statistics file"
                )
            contents = {key: loaded[key] for key in keys & ({_KEY_MU, _KEY_SIGMA} | _FIDKIT_KEYS)}
    except StatsFileError:
        raise
    except (*NUMPY_LOAD_ERRORS, KeyError) as exc:
        raise StatsFileError(
            f"{file_path}: corrupt statistics file ({exc}); delete it and compute the statistics again"
        ) from exc
    return _parse(contents, file_path)


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
