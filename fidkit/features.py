"""Features as a product: the float32 rows an extractor gives, kept, saved, loaded and reduced.

Statistics (:class:`~fidkit.stats.Stats`) are one reduction of features; metrics that need the rows
themselves (kernel distances, nearest-neighbour radii, resampling for error bars) take a :class:`Features`.
The extract step (:func:`fidkit.extraction.extract`) feeds every batch to its sinks: a
:class:`~fidkit.stats.StatsAccumulator` reduces on the fly, a :class:`FeatureRows` keeps the rows.

The file format is an ``.npz`` beside the statistics format, with the same self-describing metadata:

- ``features``: float32 ``(N, dim)``;
- ``fidkit_format_version`` (int64) and ``fidkit_metadata_json`` (a 0-d unicode array holding JSON: the
  extractor's identity, the source, the skipped files, as in a statistics file);
- ``fidkit_content``: the string ``"features"``;
- optionally ``logits`` (float32 ``(N, 1008)``, the Inception Score's input) and ``spatial`` (float32 ``(N, 2023)``,
  sFID's input): the other outputs of the same forward pass (:data:`EXTRA_OUTPUTS`), kept when a metric needs them.

A features file is accepted wherever a source is (``fidkit compute feats.npz stats.npz``): it skips the
network, and its statistics are computed from the rows.
"""

from __future__ import annotations

import copy
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
from fidkit._npz import NpzReader, sniff_numpy_file
from fidkit.statsfile import STATS_FORMAT_VERSION, check_format_version, check_regular_file, write_npz

__all__ = ["Features", "FeatureRows", "is_features_file", "FEATURES_KEY", "EXTRA_OUTPUTS"]

logger = logging.getLogger(__name__)

#: The member holding the rows.
FEATURES_KEY = "features"
#: The other outputs of an extractor's forward pass a :class:`Features` may carry beside its rows, each ``(N, k)``
#: with the same N: ``logits`` (the Inception Score's input) and ``spatial`` (sFID's input).
EXTRA_OUTPUTS = ("logits", "spatial")
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
        ``(N, dim)`` finite features; stored as float32 (what every extractor gives). Rows come in the source's
        order (a folder or archive of mixed image sizes is batched by size, and its rows put back in the source's
        order; on a Ray cluster each shard's rows too, and the shards in order). FID, sFID and precision, recall,
        density and coverage are functions of the set of rows (FID's sums to round-off). KID's subsets, the
        Inception Score's shuffle (or its chunks, with ``shuffle=False``), FD-infinity's subsets and every
        interval's resamples are drawn by position from the seed: the same rows in the same order give the same
        numbers on any engine or device, to rounding; in another order (another ``torch.distributed`` world size)
        they are another draw, within the reported spread. To compare exactly, compute from the same
        saved features.
    metadata : dict
        What made them (the extractor's metadata, the source, skipped files): str keys, str/int/float/bool
        values, as in statistics files (numpy scalars are converted; anything else is an ``InputError``).
    path : Path, optional
        The file they were loaded from.
    logits, spatial : array_like, optional
        Other outputs of the same forward pass, one row per image, in the rows' order: the classifier's logits
        (``(N, 1008)`` for the 2015 Inception, without the bias) and the spatial features sFID uses (``(N, 2023)``).
        Stored as float32; None when the run did not ask for them.

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
    logits: NDArray[np.float32] | None = None
    spatial: NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        rows = _frozen_float32(self.rows, "features")
        object.__setattr__(self, "rows", rows)
        for name in EXTRA_OUTPUTS:
            value = getattr(self, name)
            if value is None:
                continue
            array = _frozen_float32(value, name)
            if array.shape[0] != rows.shape[0]:
                raise InputError(
                    f"{name} has {array.shape[0]} rows but the features have {rows.shape[0]}: every output needs one "
                    "row per image, in the same order"
                )
            object.__setattr__(self, name, array)
        object.__setattr__(self, "metadata", check_metadata(self.metadata))

    @property
    def outputs(self) -> tuple[str, ...]:
        """The outputs held: ``"features"`` and those of :data:`EXTRA_OUTPUTS` that are not None."""
        return ("features", *(name for name in EXTRA_OUTPUTS if getattr(self, name) is not None))

    def output(self, name: str) -> NDArray[np.float32]:
        """The rows of output `name` (``"features"``, ``"logits"`` or ``"spatial"``).

        Raises
        ------
        InputError
            The output is not held: the message says how to compute it.
        """
        if name == "features":
            return self.rows
        if name not in EXTRA_OUTPUTS:
            raise InputError(f"unknown output {name!r}; outputs are: features, {', '.join(EXTRA_OUTPUTS)}")
        value = getattr(self, name)
        if value is None:
            where = f" ({self.path})" if self.path is not None else ""
            raise InputError(
                f"these features{where} hold no {name!r}; compute them again asking for it (fidkit features SRC "
                f"--metrics ... or compute_features(..., outputs=('features', {name!r})))"
            )
        return value

    def narrowed(self, outputs: tuple[str, ...]) -> Features:
        """These features holding exactly `outputs` (``"features"`` and any of :data:`EXTRA_OUTPUTS`), sharing the
        read-only arrays.

        A side computed from images gives what was asked, whatever else its cache entry holds: an entry is shared by
        every run of the same source, and one that kept the logits for an earlier ``--metrics is`` would otherwise
        add rows to this run's table (``IS (b)``), size checks for them, and outputs to a saved file, which a run
        without the cache would not.
        """
        if set(self.outputs) == set(outputs):
            return self
        narrow = copy.copy(self)  # the arrays and the metadata shared: they are read-only
        for name in EXTRA_OUTPUTS:
            if name not in outputs:
                object.__setattr__(narrow, name, None)  # a frozen dataclass
        return narrow

    @property
    def n(self) -> int:
        """Number of images (rows)."""
        return int(self.rows.shape[0])

    @property
    def dim(self) -> int:
        """Feature dimension."""
        return int(self.rows.shape[1])

    def stats(self) -> Any:
        """The statistics of these features (float64 mu and sigma, ddof 1), with the same metadata.

        Raises
        ------
        InputError
            Fewer than 2 rows; the message names the file they were loaded from.
        """
        from fidkit.stats import Stats

        if self.n < 2:  # said here, where the file is known (a reference, a side of compute_fid)
            where = f"{self.path}: holds" if self.path is not None else "these features hold"
            raise InputError(
                f"{where} {self.n} feature row{'' if self.n == 1 else 's'}; a covariance needs at least 2 "
                "(FID needs thousands): compute the features of more images (fidkit features SRC --save FILE.npz)"
            )
        return Stats.from_features(self.rows, metadata=self.metadata)

    @classmethod
    def concatenate(cls, parts: list[Features], metadata: dict[str, Any] | None = None) -> Features:
        """The rows of `parts` one after the other (shards, ranks), every output joined in the same order so that
        rows stay aligned across outputs; the outputs are those of the first part (each part must hold them)."""
        if not parts:
            raise InputError("no features to concatenate")
        joined = {name: np.concatenate([part.output(name) for part in parts], axis=0) for name in parts[0].outputs}
        return cls(joined.pop("features"), dict(metadata or {}), **joined)

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
            **{name: getattr(self, name) for name in EXTRA_OUTPUTS if getattr(self, name) is not None},
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
            Not a features file, a member of the wrong dtype or shape, non-finite rows, bad metadata, written by a
            newer fidkit.
        """
        file_path = Path(path)
        fix = "recompute it with fidkit features SRC --save FILE.npz"
        check_regular_file(file_path, "features file", fix)
        if sniff_numpy_file(file_path) == "npy":
            # Rows saved with numpy.save (clean-fid's features, say): not a features file, but usable as one.
            raise StatsFileError(
                f"{file_path}: holds a single array (.npy data), not a features file (an .npz written by "
                "fidkit.Features.save); if it holds feature rows, one per image, use "
                f"fidkit.Features(numpy.load({str(file_path)!r})) (and .save('features.npz') to make a features file)"
            )
        with NpzReader(file_path, str(file_path), StatsFileError, fix) as reader:
            keys = reader.keys
            if _KEY_VERSION in keys:  # first: a newer format's members may mean something else
                member = reader.header(_KEY_VERSION)
                if member.shape != ():
                    raise StatsFileError(
                        f"{file_path}: {_KEY_VERSION!r} should be a single integer, not {member.describe()}; {fix}"
                    )
                check_format_version(reader.read(_KEY_VERSION, member), file_path)
            if FEATURES_KEY not in keys:
                raise StatsFileError(f"{file_path} is not a features file: it has no '{FEATURES_KEY}' member; {fix}")
            header = reader.header(FEATURES_KEY)
            if len(header.shape) != 2:
                raise StatsFileError(f"{file_path}: features must be 2-D (N, dim), not {header.describe()}; {fix}")
            if header.dtype not in (np.float32, np.float64):
                raise StatsFileError(f"{file_path}: features must be float32 (or float64), not {header.dtype}; {fix}")
            rows = reader.read(FEATURES_KEY, header)
            extra = {}
            for name in EXTRA_OUTPUTS:
                if name not in keys:
                    continue
                member = reader.header(name)
                if len(member.shape) != 2 or member.shape[0] != header.shape[0]:
                    raise StatsFileError(
                        f"{file_path}: {name} must be 2-D with one row per feature row ({header.shape[0]}), "
                        f"not {member.describe()}; {fix}"
                    )
                if member.dtype not in (np.float32, np.float64):
                    raise StatsFileError(f"{file_path}: {name} must be float32 (or float64), not {member.dtype}; {fix}")
                extra[name] = reader.read(name, member)
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
            return cls(rows, metadata, path=file_path, **extra)
        except InputError as exc:
            raise StatsFileError(f"{file_path}: {exc}") from None


def _frozen_float32(values: Any, name: str) -> NDArray[np.float32]:
    """`values` checked as finite ``(N, k)`` features, as a read-only C-contiguous float32 array."""
    checked = check_features(values, name)
    with np.errstate(over="ignore"):
        array = np.ascontiguousarray(checked, dtype=np.float32)
    if checked.dtype != np.float32 and not np.isfinite(array).all():
        # Finite in float64 but beyond float32 (|x| > 3.4e38): kept as inf, they would be refused later as
        # "invalid values" of the extractor, or skew a metric that does not check.
        raise InputError(
            f"{name} holds values beyond float32's range (|x| up to {float(np.max(np.abs(checked))):.3g}); features "
            "are stored as float32: scale them down"
        )
    array.setflags(write=False)
    return array


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

    With `outputs` naming more than ``"features"``, it also keeps those outputs of each batch (the extract step
    then calls :meth:`update_outputs` with every output the sinks asked for).

    Examples
    --------
    >>> import numpy as np
    >>> rows = FeatureRows()
    >>> rows.update(np.ones((2, 3), dtype=np.float32)); rows.update(np.zeros((1, 3), dtype=np.float32))
    >>> rows.result().n
    3
    """

    def __init__(self, outputs: tuple[str, ...] = ("features",)) -> None:
        unknown = [name for name in outputs if name != "features" and name not in EXTRA_OUTPUTS]
        if unknown or "features" not in outputs:
            raise InputError(f"FeatureRows keeps 'features' and any of {', '.join(EXTRA_OUTPUTS)}, not {outputs!r}")
        #: What this sink keeps; the extract step asks the extractor for these.
        self.outputs: tuple[str, ...] = tuple(outputs)
        self._batches: dict[str, list[np.ndarray]] = {name: [] for name in self.outputs}

    @property
    def n(self) -> int:
        return sum(batch.shape[0] for batch in self._batches["features"])

    def update(self, features: np.ndarray) -> None:
        self.update_outputs({"features": features})

    def update_outputs(self, outputs: dict[str, np.ndarray]) -> None:
        """Keep this batch's rows of every output this sink holds (`outputs` may hold more); all or none."""
        missing = [name for name in self._batches if name not in outputs]
        if missing:
            raise InputError(f"no {', '.join(map(repr, missing))} output given for this batch (it holds "
                             f"{', '.join(map(repr, outputs))}); the rows kept so far are unchanged")
        arrays = {name: np.array(outputs[name], dtype=np.float32, copy=True) for name in self._batches}
        for name, array in arrays.items():
            # Checked per batch (the extract step checks first, naming the extractor): found when the rows are
            # joined at the end, a width that changed was an internal error after the whole pass.
            kept = self._batches[name][0] if self._batches[name] else None
            if array.ndim != 2:
                raise InputError(f"{name} has shape {array.shape}, not (B, width) rows; the rows kept so far are "
                                 "unchanged")
            if kept is not None and array.shape[1] != kept.shape[1]:
                raise InputError(
                    f"this batch's {name} are {array.shape[1]} wide, but the rows kept so far are "
                    f"{kept.shape[1]} wide: every batch of an output needs the same width (one extractor); the rows kept so far are unchanged"
                )
        for name, batches in self._batches.items():
            batches.append(arrays[name])

    def result(self, metadata: dict[str, Any] | None = None, *, emitted_order: np.ndarray | None = None) -> Features:
        """The rows kept, as :class:`Features`; with `emitted_order` (a source's
        :attr:`~fidkit.sources.base.Source.emitted_order`: each row's position in the source) in the source's order,
        so that the rows of a folder of mixed image sizes do not depend on the batch size."""
        if not self._batches["features"]:
            raise InputError("no features were extracted")
        joined = {name: np.concatenate(batches, axis=0) for name, batches in self._batches.items()}
        if emitted_order is not None:
            if len(emitted_order) != len(joined["features"]):
                raise InputError(f"{len(joined['features'])} rows kept for {len(emitted_order)} images emitted; this is "
                                 "a bug in fidkit, please report it")
            in_source_order = np.argsort(emitted_order, kind="stable")
            joined = {name: array[in_source_order] for name, array in joined.items()}
        rows = joined.pop("features")
        return Features(rows, dict(metadata or {}), **joined)
