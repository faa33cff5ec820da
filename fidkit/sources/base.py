"""The :class:`Source` interface every input kind implements, and helpers they share.

A source turns what a user points fidkit at (a folder, an archive, an array, a dataset file, a
stream of batches) into uint8 image batches ``(B, H, W, 3)`` in a deterministic
order, and says who it is (:meth:`Source.fingerprint`) so that its statistics can be cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fidkit._validate import check_batch_size, check_limit_seed, check_workers
from fidkit.errors import EmptySourceError, SourceError
from fidkit.sources.decode import COLOUR_POLICY_VERSION

__all__ = ["ReadOptions", "Source", "select_indices", "file_stamp", "SizeGrouper", "empty_source_error"]

logger = logging.getLogger(__name__)

# Version of the fingerprint recipe (which fields, how they are serialised) and of the rules of which files' bytes
# are read as which images. 2: a file's status-change time is part of its stamp (file_stamp); archive names as tar
# and unzip extract them (a/./b.png is a/b.png, a later entry of a name replaces it); a file holding far more than
# its image is a bad file (fidkit.sources.bounded).
_FINGERPRINT_VERSION = 2

# Pillow's own default for PIL.Image.MAX_IMAGE_PIXELS (its definition, PIL/Image.py). Written out
# rather than read from PIL.Image, which the caller may have changed before importing fidkit.
_PILLOW_DEFAULT_MAX_IMAGE_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)
# Kinds whose images are files decoded by Pillow, so that its decompression-bomb limit decides which
# of them are read (the others skipped as bad with skip_bad): arrays and datasets are not decoded.
_DECODED_KINDS = frozenset({"folder", "archive"})


@dataclass(frozen=True)
class ReadOptions:
    """How a source reads its images: the reading settings of a run, passed whole from :func:`fidkit.open_source`
    (or :attr:`fidkit.options.RunOptions.read`) to every opener, checked when the object is made.

    Parameters
    ----------
    limit, seed : int, optional
        Read at most `limit` images: the first ones in sorted order, or with `seed` a random subset
        (:func:`select_indices`).
    skip_bad : bool, default False
        Skip undecodable files (counted and named) instead of stopping with an ``ImageError``.
    exif_transpose : bool, default False
        Apply the EXIF orientation tag (by default pixels are used as stored, like the reference).
    workers : int, optional
        Decoding processes (0: decode in the calling process); None: the machine's default, resolved where the
        processes start (:func:`fidkit.sources.parallel.resolve_workers`).

    Raises
    ------
    InputError
        `limit`, `seed` or `workers` that is not a count (a bool, a float, a negative number).
    """

    limit: int | None = None
    seed: int | None = None
    skip_bad: bool = False
    exif_transpose: bool = False
    workers: int | None = None

    def __post_init__(self) -> None:
        # numpy integers become ints here, so that a fingerprint or a message never sees np.int64(5).
        limit, seed = check_limit_seed(self.limit, self.seed)
        object.__setattr__(self, "limit", limit)
        object.__setattr__(self, "seed", seed)
        object.__setattr__(self, "workers", check_workers(self.workers))
        object.__setattr__(self, "skip_bad", bool(self.skip_bad))
        object.__setattr__(self, "exif_transpose", bool(self.exif_transpose))


class Source:
    """Base class of every fidkit input.

    Attributes
    ----------
    kind : str
        ``"folder"``, ``"archive"``, ``"array"``, ``"mnist"``, ``"cifar"`` or ``"batches"``.
    name : str
        How messages and reports refer to the source (usually the path as given).
    n_images : int or None
        Number of images that :meth:`batches` will try to yield, after `limit`; None when unknown
        (iterables). Files skipped as bad are not subtracted.
    n_available : int or None
        Number of images before `limit` was applied.
    cacheable : bool
        Whether :meth:`fingerprint` can identify the source (False for iterables).
    skipped : list of (str, str)
        ``(file, reason)`` of each file skipped by the last :meth:`batches` run with
        ``skip_bad=True``.
    ignored : dict of str to int
        What was deliberately not read, counted by reason (see :mod:`fidkit.sources.files`).
    limit, seed : int or None
        The subset actually used: ``limit`` is None when it did not cut anything, and ``seed`` is
        None when it did not matter.
    exif_transpose : bool
        Whether EXIF orientation is applied.
    emitted_order : numpy.ndarray or None
        After a :meth:`batches` run that went to its end: each emitted image's position among the images read, in
        the order the batches gave them, where that is not the source's order (a folder of mixed image sizes is
        batched by size, in an order that depends on the batch size); None where the batches keep the source's
        order. :meth:`fidkit.features.FeatureRows.result` puts rows back in the source's order with it.
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
        self.emitted_order: np.ndarray | None = None
        #: ``{reason: count}`` of what was seen but deliberately not read (hidden folders, formats
        #: fidkit does not read, special files, duplicate archive members); empty for arrays.
        self.ignored: dict[str, int] = {}
        #: The :meth:`fingerprint` (sizes and modification times) taken when the pipeline opened the source, and
        #: with ``hash_content`` the content fingerprint taken then (None until then): the cache files the
        #: statistics under the one asked for, and stores them only if the first still holds at the end.
        self.opened_fingerprint: str | None = None
        self.opened_content_fingerprint: str | None = None
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
            sizes and mtimes, or content hashes), `limit`, `seed`, `exif_transpose`,
            :data:`~fidkit.sources.COLOUR_POLICY_VERSION` and, for image files, Pillow's
            ``PIL.Image.MAX_IMAGE_PIXELS`` as it is now when it is not Pillow's default.

        Raises
        ------
        SourceError
            The source cannot be identified (an iterable of batches).
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
        max_pixels = Image.MAX_IMAGE_PIXELS
        if self.kind in _DECODED_KINDS and max_pixels != _PILLOW_DEFAULT_MAX_IMAGE_PIXELS:
            # The limit decides which files are refused as decompression bombs (skipped with
            # skip_bad): statistics computed under a low limit must not be served once the user
            # raises it. Only a non-default limit is recorded, so every key made under the
            # default (every key made before this field existed) stays valid.
            identity["max_image_pixels"] = None if max_pixels is None else int(max_pixels)
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


def file_stamp(path: Path) -> tuple[int, int, int]:
    """``(size, modification time, status-change time)`` of a file in ns, or ``(-1, -1, -1)`` when it cannot be
    stat'ed: the cheap identity of a file's content.

    The status-change time (``st_ctime``) is the kernel's: no tool can set it. ``tar -x``, ``unzip`` and ``cp -p``
    set the modification time from the archive or the source (Python's ``tarfile`` writes 1970, ``zipfile``
    1980), so samples extracted every epoch into files of one size looked unchanged by size and mtime alone.
    (A chmod or a rename changes it too: a recompute, never a stale number.) A file gone since it was opened
    still has a valid identity, one that differs from before: a fingerprint taken after reading then shows the
    change instead of raising.
    """
    try:
        info = path.stat()
    except OSError:
        return -1, -1, -1
    return int(info.st_size), int(info.st_mtime_ns), int(info.st_ctime_ns)


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


class SizeGrouper:
    """Collect images into batches of one size each, in a deterministic order.

    Images are kept in a pending list per ``(H, W)``; a list that reaches `batch_size` is emitted
    at once. When many sizes are mixed (photos of all shapes), the pending images could grow to the
    whole dataset, so once more than `max_pending` images wait, the largest pending group is
    emitted early as a smaller batch. Statistics do not depend on order, and the order depends only
    on the input sequence and the batch size, never on timing; :meth:`emitted_order` records it, so that kept
    feature rows can be put back in the input's order (the draws of KID, IS and the intervals are by position).
    """

    def __init__(self, batch_size: int, *, max_pending: int | None = None) -> None:
        self.batch_size = check_batch_size(batch_size)
        self.max_pending = max_pending if max_pending is not None else max(4 * self.batch_size, 64)
        self._pending: dict[tuple[int, int], list[np.ndarray]] = {}
        self._positions: dict[tuple[int, int], list[int]] = {}
        self._n_pending = 0
        self._n_added = 0
        self._emitted: list[int] = []

    def add(self, pixels: np.ndarray) -> list[np.ndarray]:
        """Add one ``(H, W, 3)`` image; return the batches that became ready (often none)."""
        size = (int(pixels.shape[0]), int(pixels.shape[1]))
        group = self._pending.setdefault(size, [])
        group.append(pixels)
        self._positions.setdefault(size, []).append(self._n_added)
        self._n_added += 1
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

    def emitted_order(self) -> np.ndarray | None:
        """Each emitted image's position among those added, in the order of the batches emitted so far; None when
        that is the order they were added in (one image size, or sizes that never interleaved)."""
        order = np.asarray(self._emitted, dtype=np.int64)
        return None if np.array_equal(order, np.arange(order.size)) else order

    def _flush(self, size: tuple[int, int]) -> np.ndarray:
        group = self._pending.pop(size)
        self._emitted.extend(self._positions.pop(size))
        self._n_pending -= len(group)
        return np.ascontiguousarray(np.stack(group, axis=0), dtype=np.uint8)


def empty_source_error(name: str, detail: str = "") -> EmptySourceError:
    """The error for a source without usable images."""
    suffix = f" ({detail})" if detail else ""
    return EmptySourceError(f"{name}: no images to read{suffix}")
