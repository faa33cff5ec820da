"""The :class:`Source` interface every input kind implements, and helpers they share.

A source turns what a user points fidkit at (a folder, an archive, an array, a dataset file, a
statistics file, a stream of batches) into uint8 image batches ``(B, H, W, 3)`` in a deterministic
order, and says who it is (:meth:`Source.fingerprint`) so that its statistics can be cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import numbers
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fidkit.errors import EmptySourceError, InputError, SourceError
from fidkit.sources.decode import COLOUR_POLICY_VERSION

if TYPE_CHECKING:  # pragma: no cover - typing only
    from fidkit.stats import Stats

__all__ = ["Source", "StatsSource", "select_indices", "as_numpy", "as_rgb_batch", "SizeGrouper"]

logger = logging.getLogger(__name__)

# Version of the fingerprint recipe itself (which fields, how they are serialised).
_FINGERPRINT_VERSION = 1


class Source:
    """Base class of every fidkit input.

    Attributes
    ----------
    kind : str
        ``"folder"``, ``"archive"``, ``"array"``, ``"mnist"``, ``"cifar"``, ``"stats"`` or
        ``"batches"``.
    name : str
        How messages and reports refer to the source (usually the path as given).
    n_images : int or None
        Number of images that :meth:`batches` will try to yield, after `limit`; None when unknown
        (iterables). Files skipped as bad are not subtracted.
    n_available : int or None
        Number of images before `limit` was applied.
    cacheable : bool
        Whether :meth:`fingerprint` can identify the source (False for iterables and ``Stats``).
    skipped : list of (str, str)
        ``(file, reason)`` of each file skipped by the last :meth:`batches` run with
        ``skip_bad=True``.
    limit, seed : int or None
        The subset actually used: ``limit`` is None when it did not cut anything, and ``seed`` is
        None when it did not matter.
    exif_transpose : bool
        Whether EXIF orientation is applied.
    """

    kind: str = "unknown"
    cacheable: bool = True

    def __init__(
        self,
        name: str,
        *,
        n_images: int | None,
        n_available: int | None = None,
        limit: int | None = None,
        seed: int | None = None,
        exif_transpose: bool = False,
        lossy: bool = False,
    ) -> None:
        self.name = name
        self.n_images = n_images
        self.n_available = n_available if n_available is not None else n_images
        self.limit = limit
        self.seed = seed
        self.exif_transpose = exif_transpose
        self.skipped: list[tuple[str, str]] = []
        self._lossy = lossy

    def __repr__(self) -> str:
        return f"<{type(self).__name__} kind={self.kind!r} name={self.name!r} n_images={self.n_images}>"

    @property
    def lossy(self) -> bool:
        """True if any input went through lossy compression (JPEG, lossy WebP).

        Before :meth:`batches` has run this is judged from file extensions; after a complete run
        it is the decoded truth (file formats, not names).
        """
        return self._lossy

    def fingerprint(self, *, hash_content: bool = False) -> str:
        """Return a hex digest identifying the images this source yields and how.

        Parameters
        ----------
        hash_content : bool, default False
            Hash file contents instead of trusting sizes and modification times. Arrays are
            always identified by their content.

        Returns
        -------
        str
            64 hex characters. Covers the source kind, the files (sorted relative paths with
            sizes and mtimes, or content hashes), `limit`, `seed`, `exif_transpose` and
            :data:`~fidkit.sources.COLOUR_POLICY_VERSION`.

        Raises
        ------
        SourceError
            The source cannot be identified (an iterable of batches, a ``Stats`` object).
        """
        if not self.cacheable:
            raise SourceError(
                f"{self.name}: a {self.kind} source has no stable identity and cannot be "
                "fingerprinted or cached"
            )
        identity = {
            "fingerprint_version": _FINGERPRINT_VERSION,
            "kind": self.kind,
            "limit": self.limit,
            "seed": self.seed,
            "exif_transpose": bool(self.exif_transpose),
            "colour_policy_version": COLOUR_POLICY_VERSION,
            "content": self._identity(hash_content=hash_content),
        }
        encoded = json.dumps(identity, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return hashlib.sha256(encoded).hexdigest()

    def _identity(self, *, hash_content: bool) -> Any:
        """JSON-ready description of what is read; subclasses that are cacheable override it."""
        raise NotImplementedError

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Yield uint8 ``(B, H, W, 3)`` C-contiguous batches, all images of a batch one size.

        Parameters
        ----------
        batch_size : int
            Largest number of images per batch (>= 1). Batches may be smaller: the last one of
            each image size, and any flushed early to bound memory when many sizes are mixed.

        Yields
        ------
        numpy.ndarray

        Raises
        ------
        ImageError
            Bad files without ``skip_bad`` (after the batches that precede the first bad file).
        EmptySourceError
            No image at all could be read.

        Notes
        -----
        Close the generator (``contextlib.closing``) when stopping early, so worker processes end
        at once rather than at garbage collection.
        """
        raise NotImplementedError


class StatsSource(Source):
    """A source that already is statistics (a ``Stats`` object or a statistics ``.npz``).

    It skips the network: use :attr:`stats`. :meth:`batches` raises :class:`SourceError`.

    Attributes
    ----------
    stats : fidkit.stats.Stats
        The statistics.
    path : pathlib.Path or None
        The file they were loaded from, if any.
    """

    kind = "stats"
    cacheable = False

    def __init__(self, stats: Stats, name: str, *, path: Path | None = None) -> None:
        metadata = getattr(stats, "metadata", None) or {}
        super().__init__(
            name,
            n_images=getattr(stats, "n", None),
            lossy=bool(metadata.get("lossy_inputs", False)),
        )
        self.stats = stats
        self.path = path

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        raise SourceError(
            f"{self.name} holds statistics, not images; use its .stats directly (no network needed)"
        )


def check_batch_size(batch_size: int) -> int:
    """Return `batch_size` as an int >= 1, or raise :class:`InputError`."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def size_mtime(path: Path) -> tuple[int, int]:
    """Size and modification time (ns) of a file, or ``(-1, -1)`` when it cannot be stat'ed.

    A file gone since it was opened still has a valid identity, one that differs from before: a
    fingerprint taken after reading then shows the change instead of raising.
    """
    try:
        info = path.stat()
    except OSError:
        return -1, -1
    return int(info.st_size), int(info.st_mtime_ns)


def check_limit_seed(limit: int | None, seed: int | None) -> tuple[int | None, int | None]:
    """Validate `limit` (positive int or None) and `seed` (non-negative int or None)."""
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1
    ):
        raise InputError(f"limit must be a positive integer or None, got {limit!r}")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0
    ):
        raise InputError(f"seed must be a non-negative integer or None, got {seed!r}")
    return (None if limit is None else int(limit)), (None if seed is None else int(seed))


def select_indices(
    n_total: int, limit: int | None, seed: int | None
) -> tuple[np.ndarray, int | None, int | None]:
    """Choose which of `n_total` sorted items to use.

    Without `limit` (or with ``limit >= n_total``) all of them. With `limit` and no `seed` the
    first `limit`. With both, ``np.random.default_rng(seed).choice(n_total, limit,
    replace=False)``, then sorted, so the subset is reproducible and still in path order.

    Returns
    -------
    indices : numpy.ndarray
        int64, increasing.
    effective_limit, effective_seed : int or None
        What actually shaped the subset (None where it made no difference), for fingerprints:
        ``limit=10**9`` on 100 files is the same input as no limit.
    """
    if limit is None or limit >= n_total:
        return np.arange(n_total, dtype=np.int64), None, None
    if seed is None:
        return np.arange(limit, dtype=np.int64), limit, None
    chosen = np.random.default_rng(seed).choice(n_total, size=limit, replace=False)
    return np.sort(chosen.astype(np.int64)), limit, seed


_FLOAT_ADVICE = (
    "convert it yourself, e.g. for floats in [0, 1]: "
    "(x * 255).round().clip(0, 255).astype(np.uint8); fidkit does not rescale other dtypes because "
    "their range is ambiguous"
)


def as_numpy(value: Any, what: str) -> np.ndarray:
    """``numpy.asarray(value)``, with an :class:`~fidkit.errors.InputError` naming `what` if it fails.

    The usual failure is a CUDA tensor, which refuses ``__array__``; the message says how to convert.
    """
    try:
        return np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - whatever __array__ raises
        raise InputError(
            f"{what}: cannot be read as a numpy array ({exc}); pass numpy arrays (for a torch "
            "tensor: t.cpu().numpy())"
        ) from exc


def as_rgb_batch(batch: Any, what: str) -> np.ndarray:
    """Check an image array and return it as uint8 ``(N, H, W, 3)``.

    Grayscale ``(N, H, W)`` and ``(N, H, W, 1)`` are replicated to three channels. The result is
    C-contiguous; an input that already is so is returned without a copy.

    Raises
    ------
    InputError
        Not uint8 (with how to convert), or a shape that is not a batch of images (channel-first
        batches and single images get a specific hint).
    """
    array = as_numpy(batch, what)
    if array.dtype != np.uint8:
        raise InputError(f"{what}: images must be uint8, got dtype {array.dtype}; {_FLOAT_ADVICE}")
    shape = array.shape
    if array.ndim == 4 and shape[3] == 3:
        rgb = array
    elif array.ndim == 4 and shape[3] == 1:
        rgb = np.repeat(array, 3, axis=3)
    elif array.ndim == 3 and shape[2] == 3:
        # Grayscale images 3 pixels wide are implausible; this is a single (H, W, 3) RGB image.
        raise InputError(
            f"{what}: shape {shape} looks like a single (H, W, 3) image; add a batch axis "
            "(x[None]) or pass (N, H, W) grayscale / (N, H, W, 3) RGB"
        )
    elif array.ndim == 3:
        rgb = np.repeat(array[:, :, :, None], 3, axis=3)
    elif array.ndim == 4 and shape[1] in (1, 3):
        raise InputError(
            f"{what}: shape {shape} looks channel-first (N, C, H, W); fidkit takes channel-last: "
            "x.transpose(0, 2, 3, 1)"
        )
    else:
        raise InputError(
            f"{what}: shape {shape} is not a batch of images; expected (N, H, W, 3) RGB or "
            "(N, H, W) grayscale"
        )
    return np.ascontiguousarray(rgb, dtype=np.uint8)


class SizeGrouper:
    """Collect images into batches of one size each, in a deterministic order.

    Images are kept in a pending list per ``(H, W)``; a list that reaches `batch_size` is emitted
    at once. When many sizes are mixed (photos of all shapes), the pending images could grow to the
    whole dataset, so once more than `max_pending` images wait, the largest pending group is
    emitted early as a smaller batch. Statistics do not depend on order, and the order depends only
    on the input sequence, never on timing.
    """

    def __init__(self, batch_size: int, *, max_pending: int | None = None) -> None:
        self.batch_size = check_batch_size(batch_size)
        self.max_pending = max_pending if max_pending is not None else max(4 * self.batch_size, 64)
        self._pending: dict[tuple[int, int], list[np.ndarray]] = {}
        self._n_pending = 0

    def add(self, pixels: np.ndarray) -> list[np.ndarray]:
        """Add one ``(H, W, 3)`` image; return the batches that became ready (often none)."""
        size = (int(pixels.shape[0]), int(pixels.shape[1]))
        group = self._pending.setdefault(size, [])
        group.append(pixels)
        self._n_pending += 1
        ready: list[np.ndarray] = []
        if len(group) >= self.batch_size:
            ready.append(self._flush(size))
        if self._n_pending > self.max_pending:
            # Largest group first; ties go to the size seen first (dicts keep insertion order).
            largest = max(self._pending, key=lambda key: len(self._pending[key]))
            ready.append(self._flush(largest))
        return ready

    def finish(self) -> list[np.ndarray]:
        """Return the remaining partial batches, in the order their sizes were first seen."""
        return [self._flush(size) for size in list(self._pending)]

    def _flush(self, size: tuple[int, int]) -> np.ndarray:
        group = self._pending.pop(size)
        self._n_pending -= len(group)
        return np.ascontiguousarray(np.stack(group, axis=0), dtype=np.uint8)


def empty_source_error(name: str, detail: str = "") -> EmptySourceError:
    """The error for a source without usable images."""
    suffix = f" ({detail})" if detail else ""
    return EmptySourceError(f"{name}: no images to read{suffix}")
