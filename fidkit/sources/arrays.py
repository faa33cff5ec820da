"""Images that already are pixels: numpy arrays, ``.npy``/``.npz`` files, and streams of batches.

Arrays must be uint8, shaped ``(N, H, W, 3)`` (RGB), ``(N, H, W)`` or ``(N, H, W, 1)`` (grayscale,
replicated to RGB like grayscale image files). Any other dtype is refused with an
:class:`~fidkit.errors.InputError` that says how to convert: floats in particular are never
rescaled silently, because ``[0, 1]``, ``[-1, 1]`` and ``[0, 255]`` conventions all exist.

A ``.npz`` holding ``mu`` and ``sigma`` is a statistics file, not images (the pipeline in
:mod:`fidkit.api` reads those before any source is opened). Otherwise the images are its only
array, or its ``images`` or ``arr_0`` array.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fidkit._fs import sha256_file
from fidkit._validate import as_image_batch, check_batch_size, check_image_array
from fidkit.errors import SourceError
from fidkit.sources.base import Source, empty_source_error, select_indices, size_mtime
from fidkit.statsfile import NUMPY_LOAD_ERRORS, numpy_load_problem

__all__ = ["ArraySource", "BatchesSource", "open_array", "open_npy", "open_npz", "load_npz", "IMAGE_KEYS"]

logger = logging.getLogger(__name__)

#: Keys tried, in order, for the images of a ``.npz`` holding several arrays.
IMAGE_KEYS = ("images", "arr_0")


def array_content_sha256(array: np.ndarray) -> str:
    """sha256 over an array's dtype, shape and bytes (C order)."""
    digest = hashlib.sha256()
    digest.update(f"{array.dtype.str}|{tuple(int(d) for d in array.shape)}|".encode("ascii"))
    digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return digest.hexdigest()


def file_identity(path: Path) -> dict[str, Any]:
    """Cheap identity of a file: resolved path, size, modification time in ns (-1 and -1 for a
    file that is gone, like the members of a folder)."""
    size, mtime_ns = size_mtime(path)
    return {"path": str(path.resolve()), "size": size, "mtime_ns": mtime_ns}


class ArraySource(Source):
    """Images held in an array (in memory, memory-mapped, or loaded on first use).

    Parameters
    ----------
    kind, name : str
        See :class:`~fidkit.sources.base.Source`.
    load : callable
        Returns the full image array (uint8, checked shape); called when pixels are needed.
    image_shape : tuple of int
        Shape of the whole array, known without loading it.
    identity : callable
        ``identity(hash_content)`` -> JSON-ready identity of the data.
    """

    def __init__(
        self,
        kind: str,
        name: str,
        load: Callable[[], np.ndarray],
        image_shape: tuple[int, ...],
        identity: Callable[[bool], Any],
        *,
        limit: int | None,
        seed: int | None,
    ) -> None:
        n_available = int(image_shape[0])
        if n_available == 0:
            raise empty_source_error(name, f"array of shape {image_shape}")
        self._indices, limit_used, seed_used = select_indices(n_available, limit, seed)
        super().__init__(
            name,
            n_images=len(self._indices),
            n_available=n_available,
            limit=limit_used,
            seed=seed_used,
            lossy=False,
        )
        self.kind = kind
        self.image_shape = tuple(int(d) for d in image_shape)
        self._load = load
        self._identity_of = identity

    def _identity(self, *, hash_content: bool) -> Any:
        return self._identity_of(hash_content)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        batch_size = check_batch_size(batch_size)
        self.skipped = []
        images = self._load()
        indices = self._indices
        for start in range(0, len(indices), batch_size):
            chosen = indices[start : start + batch_size]
            first, last = int(chosen[0]), int(chosen[-1])
            if last - first + 1 == len(chosen):
                # A run of consecutive images: a slice reads a memory-mapped file sequentially.
                batch = images[first : last + 1]
            else:
                batch = images[chosen]
            yield as_image_batch(batch, self.name)


def _image_array_source(
    name: str, images: np.ndarray, identity: Callable[[bool], Any], *, what: str, limit: int | None,
    seed: int | None,
) -> ArraySource:
    """An ``"array"`` source over `images` (in memory or memory-mapped), checked before any pixel is read.

    `what` names the array in error messages (a file, or a file and its key).
    """
    # Validate dtype and shape without touching the data, which may be a large memory map.
    check_image_array(images.dtype, images.shape, what)
    return ArraySource("array", name, lambda: images, images.shape, identity, limit=limit, seed=seed)


def open_array(array: np.ndarray, *, limit: int | None, seed: int | None) -> ArraySource:
    """A source over an in-memory array (identified by a hash of its bytes)."""
    name = f"array{tuple(int(d) for d in array.shape)} {array.dtype}"
    return _image_array_source(
        name, array, lambda hash_content: {"array_sha256": array_content_sha256(array)},
        what=name, limit=limit, seed=seed,
    )


def open_npy(path: Path, name: str, *, limit: int | None, seed: int | None) -> ArraySource:
    """A source over a ``.npy`` file of uint8 images, memory-mapped."""
    try:
        images = np.load(path, mmap_mode="r", allow_pickle=False)
    except NUMPY_LOAD_ERRORS as exc:
        raise SourceError(f"{name}: not a readable .npy array file ({numpy_load_problem(exc)})") from exc
    return _image_array_source(
        name, images,
        lambda hash_content: {"file_sha256": sha256_file(path)} if hash_content else file_identity(path),
        what=name, limit=limit, seed=seed,
    )


def load_npz(path: Path, name: str) -> np.lib.npyio.NpzFile:
    """Open a ``.npz`` file once (arrays are read on access); the caller closes it.

    A file named ``.npz`` that holds ``.npy`` data (one array, which ``numpy.load`` returns as is)
    is refused like its twin in :meth:`fidkit.stats.Stats.load`.
    """
    try:
        loaded = np.load(path, allow_pickle=False)
    except NUMPY_LOAD_ERRORS as exc:
        raise SourceError(f"{name}: not a readable .npz file ({numpy_load_problem(exc)})") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise SourceError(
            f"{name}: the file holds a single array (.npy data), not an .npz archive; rename it .npy"
        )
    return loaded


def open_npz(
    path: Path, name: str, archive: np.lib.npyio.NpzFile, *, limit: int | None, seed: int | None
) -> ArraySource:
    """A source over the images array of an open ``.npz`` (its only array, or ``images``/``arr_0``).

    `archive` is the file opened by :func:`load_npz`; the images are read from it here, so the file
    is opened once for its keys and its array. The caller closes it.
    """
    keys = list(archive.files)
    if len(keys) == 1:
        key = keys[0]
    else:
        key = next((candidate for candidate in IMAGE_KEYS if candidate in keys), None)
        if key is None and "mu" in keys and "sigma" in keys:
            raise SourceError(
                f"{name}: a statistics file (mu, sigma), not images; compute_stats and compute_fid "
                "use it as it is"
            )
        if key is None:
            raise SourceError(
                f"{name}: .npz holds several arrays ({', '.join(keys)}) and none is named "
                f"{' or '.join(IMAGE_KEYS)}; save the images alone or under the key 'images'"
            )
    try:
        images = archive[key]
    except NUMPY_LOAD_ERRORS as exc:
        raise SourceError(f"{name}: cannot read array {key!r} ({numpy_load_problem(exc)})") from exc
    return _image_array_source(
        name, images,
        lambda hash_content: {
            "key": key,
            **({"file_sha256": sha256_file(path)} if hash_content else file_identity(path)),
        },
        what=f"{name}[{key}]", limit=limit, seed=seed,
    )


class BatchesSource(Source):
    """An iterable of uint8 image batches, e.g. a generator's samples; read once, never cached.

    Each item is an array (or anything ``numpy.asarray`` accepts) shaped ``(B, H, W, 3)``,
    ``(B, H, W)`` or ``(B, H, W, 1)``, uint8. Batches may differ in size and image size; each
    yielded batch holds one image size. `limit` stops after that many images; a `seed` needs a
    known length and is refused.
    """

    kind = "batches"
    cacheable = False

    def __init__(self, iterable: Iterable[Any], *, limit: int | None) -> None:
        super().__init__(f"batches from {type(iterable).__name__}", n_images=None, limit=limit)
        self._iterable = iterable
        self._single_pass = iter(iterable) is iterable
        self._consumed = False

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        batch_size = check_batch_size(batch_size)
        if self._single_pass and self._consumed:
            raise SourceError(
                f"{self.name}: this iterator was already consumed; pass a fresh one (or a list)"
            )
        self._consumed = True
        self.skipped = []
        n_seen = 0
        for position, item in enumerate(self._iterable):
            batch = as_image_batch(item, f"{self.name}, batch {position}")
            if self.limit is not None:
                batch = batch[: self.limit - n_seen]
            n_seen += len(batch)
            for start in range(0, len(batch), batch_size):
                yield np.ascontiguousarray(batch[start : start + batch_size])
            if self.limit is not None and n_seen >= self.limit:
                break
        if n_seen == 0:
            raise empty_source_error(self.name, "the iterable yielded no images")
        self.n_images = n_seen
