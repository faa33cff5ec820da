"""Features as a product: the float32 rows an extractor gives, kept, saved, loaded and reduced.

Statistics (:class:`~fidkit.stats.Stats`) are one reduction of features; metrics that need the rows
themselves (kernel distances, nearest-neighbour radii, resampling for error bars) take a :class:`Features`.
The extract step (:func:`fidkit.extraction.extract`) feeds every batch to its sinks: a
:class:`~fidkit.stats.StatsAccumulator` reduces on the fly, a :class:`FeatureRows` keeps the rows.

The file format is an ``.npz`` beside the statistics format, with the same self-describing metadata:

- ``features``: float32 ``(N, dim)``;
- ``fidkit_format_version`` (int64) and ``fidkit_metadata_json`` (a 0-d unicode array holding JSON: the
  extractor's identity, the source, the skipped files, as in a statistics file);
- ``fidkit_content``: the string ``"features"``.

A features file is accepted wherever a source is (``fidkit compute feats.npz stats.npz``): it skips the
network, and its statistics are computed from the rows.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fidkit._validate import check_features
from fidkit.errors import InputError, StatsFileError
from fidkit.stats.core import check_metadata
from fidkit.statsfile import STATS_FORMAT_VERSION, NpzReader, write_npz

__all__ = ["Features", "FeatureRows", "is_features_file", "FEATURES_KEY"]

logger = logging.getLogger(__name__)

#: The member holding the rows.
FEATURES_KEY = "features"
_KEY_VERSION = "fidkit_format_version"
_KEY_METADATA = "fidkit_metadata_json"
_KEY_CONTENT = "fidkit_content"
#: The largest metadata member read (it holds a few hundred bytes of JSON).
_MAX_METADATA_BYTES = 1 << 20


@dataclass(frozen=True, eq=False)
class Features:
    """The feature rows of one image set, with how they were made.

    Parameters
    ----------
    rows : array_like
        ``(N, dim)`` finite features; stored as float32 (what every extractor gives). Rows come in the order the
        extractor saw the images: the source's order, except that a folder or archive of mixed image sizes
        batches images of one size together (per shard, on a Ray cluster). Every fidkit metric is a function of
        the set of rows, not of their order.
    metadata : dict
        What made them (the extractor's metadata, the source, skipped files): str keys, str/int/float/bool
        values, as in statistics files (numpy scalars are converted; anything else is an ``InputError``).
    path : Path, optional
        The file they were loaded from.

    Examples
    --------
    >>> import numpy as np
    >>> from fidkit import Features
    >>> features = Features(np.random.default_rng(0).normal(size=(100, 8)))
    >>> features.n, features.dim, features.rows.dtype
    (100, 8, dtype('float32'))
    >>> features.stats().n
    100
    """

    rows: NDArray[np.float32]
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        rows = check_features(self.rows, "features")
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        rows.setflags(write=False)
        object.__setattr__(self, "rows", rows)
        object.__setattr__(self, "metadata", check_metadata(self.metadata))

    @property
    def n(self) -> int:
        """Number of images (rows)."""
        return int(self.rows.shape[0])

    @property
    def dim(self) -> int:
        """Feature dimension."""
        return int(self.rows.shape[1])

    def stats(self) -> Any:
        """The statistics of these features (float64 mu and sigma, ddof 1), with the same metadata."""
        from fidkit.stats import Stats

        return Stats.from_features(self.rows, metadata=self.metadata)

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write the features to an ``.npz`` file, atomically.

        Raises
        ------
        OverwriteError
            `path` exists and `overwrite` is False.
        StatsFileError
            `path` is a folder or cannot be written.
        """
        arrays = {
            FEATURES_KEY: self.rows,
            _KEY_VERSION: np.asarray(STATS_FORMAT_VERSION, dtype=np.int64),
            _KEY_METADATA: np.asarray(json.dumps(self.metadata, sort_keys=True), dtype=np.str_),
            _KEY_CONTENT: np.asarray("features", dtype=np.str_),
        }
        write_npz(path, arrays, what="features", example="features.npz", overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Features:
        """Read a features ``.npz``; each member's header is checked before its data is read
        (:class:`fidkit.statsfile.NpzReader`), so a crafted file is refused before any allocation.

        Raises
        ------
        StatsFileError
            Not a features file, a member of the wrong dtype or shape, non-finite rows, bad metadata.
        """
        file_path = Path(path)
        fix = "recompute it with fidkit features SRC --save FILE.npz"
        with NpzReader(file_path, str(file_path), StatsFileError, fix) as reader:
            keys = reader.keys
            if FEATURES_KEY not in keys:
                raise StatsFileError(f"{file_path} is not a features file: it has no '{FEATURES_KEY}' member; {fix}")
            header = reader.header(FEATURES_KEY)
            if len(header.shape) != 2:
                raise StatsFileError(f"{file_path}: features must be 2-D (N, dim), not {header.describe()}; {fix}")
            if header.dtype not in (np.float32, np.float64):
                raise StatsFileError(f"{file_path}: features must be float32 (or float64), not {header.dtype}; {fix}")
            rows = reader.read(FEATURES_KEY, header)
            metadata: dict[str, Any] = {}
            if _KEY_METADATA in keys:
                if reader.header(_KEY_METADATA).nbytes > _MAX_METADATA_BYTES:
                    raise StatsFileError(f"{file_path}: its metadata is larger than metadata can be; {fix}")
                try:
                    decoded = json.loads(str(reader.read(_KEY_METADATA)[()]))
                except (ValueError, RecursionError) as exc:
                    raise StatsFileError(f"{file_path}: its metadata is not valid JSON ({exc})") from None
                if not isinstance(decoded, dict):
                    raise StatsFileError(f"{file_path}: its metadata is not a JSON object")
                metadata = decoded
        try:
            return cls(rows, metadata, path=file_path)
        except InputError as exc:
            raise StatsFileError(f"{file_path}: {exc}") from None


def is_features_file(path: str | os.PathLike) -> bool:
    """True if `path` is a readable ``.npz`` that fidkit wrote as features (``features`` and the
    ``fidkit_content`` marker, no ``mu``): not images that happen to be named ``features``, nor statistics.
    Reads only the archive's directory."""
    file_path = Path(path)
    if not file_path.name.lower().endswith(".npz") or not file_path.is_file():
        return False
    try:
        with zipfile.ZipFile(file_path) as archive:
            names = {name.removesuffix(".npy") for name in archive.namelist()}
    except (zipfile.BadZipFile, OSError):
        return False
    return FEATURES_KEY in names and _KEY_CONTENT in names and "mu" not in names


class FeatureRows:
    """A sink of the extract step that keeps every feature row (``O(N x dim)`` float32 memory).

    Examples
    --------
    >>> import numpy as np
    >>> rows = FeatureRows()
    >>> rows.update(np.ones((2, 3), dtype=np.float32)); rows.update(np.zeros((1, 3), dtype=np.float32))
    >>> rows.result().n
    3
    """

    def __init__(self) -> None:
        self._batches: list[np.ndarray] = []

    @property
    def n(self) -> int:
        return sum(batch.shape[0] for batch in self._batches)

    def update(self, features: np.ndarray) -> None:
        self._batches.append(np.array(features, dtype=np.float32, copy=True))

    def result(self, metadata: dict[str, Any] | None = None) -> Features:
        if not self._batches:
            raise InputError("no features were extracted")
        return Features(np.concatenate(self._batches, axis=0), dict(metadata or {}))
