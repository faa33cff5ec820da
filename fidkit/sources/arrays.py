"""Images that already are pixels: numpy arrays, ``.npy``/``.npz`` files, and streams of batches.

Arrays must be uint8, shaped ``(N, H, W, 3)`` (RGB), ``(N, H, W)`` or ``(N, H, W, 1)`` (grayscale,
replicated to RGB like grayscale image files). Any other dtype is refused with an
:class:`~fidkit.errors.InputError` that says how to convert: floats in particular are never
rescaled silently, because ``[0, 1]``, ``[-1, 1]`` and ``[0, 255]`` conventions all exist.

A ``.npz`` holding ``mu`` and ``sigma`` is a statistics file, not images (the pipeline in
:mod:`fidkit.api` reads those before any source is opened). Otherwise the images are its only
array, or its ``images`` or ``arr_0`` array.

Files are told apart by content, not name: a ``.npy`` holding a zip archive or a ``.npz`` holding one
array is refused with the name it should have. A ``.npz`` member's header (dtype, shape) is checked
before any pixel is read, and its images are then read forward from the archive as batches ask for them
(:class:`_NpzMemberRows`): ``--limit 1`` reads one image, and nothing is ever read past what the header
declares.
"""

from __future__ import annotations

import hashlib
import logging
import math
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fidkit._fs import sha256_file
from fidkit._validate import as_image_batch, check_batch_size, check_image_array
from fidkit.errors import SourceError, StatsFileError
from fidkit.sources.base import Source, empty_source_error, file_stamp, select_indices
from fidkit.sources.files import classify
from fidkit._npz import NUMPY_LOAD_ERRORS, NpyHeader, NpzReader, numpy_load_problem, read_exactly, sniff_numpy_file
from fidkit.statsfile import IMAGE_KEYS

__all__ = ["ArraySource", "BatchesSource", "FileRows", "open_array", "open_npy", "open_npz", "load_npz", "IMAGE_KEYS"]

logger = logging.getLogger(__name__)


def array_content_sha256(array: np.ndarray) -> str:
    """sha256 over an array's dtype, shape and bytes (C order)."""
    digest = hashlib.sha256()
    digest.update(f"{array.dtype.str}|{tuple(int(d) for d in array.shape)}|".encode("ascii"))
    if array.size:  # memoryview cannot cast an empty array (a zero in its shape)
        digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return digest.hexdigest()


def file_identity(path: Path) -> dict[str, Any]:
    """Cheap identity of a file: resolved path and :func:`~fidkit.sources.base.file_stamp` (-1s for a file
    that is gone, like the members of a folder)."""
    size, mtime_ns, ctime_ns = file_stamp(path)
    return {"path": str(path.resolve()), "size": size, "mtime_ns": mtime_ns, "ctime_ns": ctime_ns}


class ArraySource(Source):
    """Images held in an array (in memory, or read from a file as batches ask for them).

    Parameters
    ----------
    kind, name : str
        See :class:`~fidkit.sources.base.Source`.
    load : callable
        Returns the full image array (uint8, checked shape), or an object that reads its rows on demand
        (:class:`_NpzMemberRows`: slices and increasing index arrays); called when pixels are needed.
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
        #: Whether the images are an array in this process's memory, read where the caller keeps it (not copied):
        #: whoever keeps the source to read later (fidkit.FID's reference) checks that its fingerprint, a sha256
        #: of the bytes, is still the one taken when it was opened.
        self.in_memory = False
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
        try:
            for start in range(0, len(indices), batch_size):
                chosen = indices[start : start + batch_size]
                first, last = int(chosen[0]), int(chosen[-1])
                if last - first + 1 == len(chosen):
                    # A run of consecutive images: one sequential read of a file.
                    batch = images[first : last + 1]
                else:
                    batch = images[chosen]
                yield as_image_batch(batch, self.name)
        finally:
            close = getattr(images, "close", None)  # a file's rows (FileRows, _NpzMemberRows); not an array
            if close is not None:
                close()


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
    source = _image_array_source(
        name, array, lambda hash_content: {"array_sha256": array_content_sha256(array)},
        what=name, limit=limit, seed=seed,
    )
    source.in_memory = True
    return source


def open_npy(path: Path, name: str, *, limit: int | None, seed: int | None) -> ArraySource:
    """A source over a ``.npy`` file of uint8 images, read batch by batch (:class:`FileRows`)."""
    layout = _npy_layout(path, name)
    shape, dtype, fortran_order, _ = layout
    # Validate dtype and shape from the header alone: no pixel is read before this.
    check_image_array(dtype, shape, name)

    def load() -> Any:
        # Opened again when the pixels are needed: a file replaced since must still hold the same array.
        now = _npy_layout(path, name)
        if now != layout:
            raise SourceError(
                f"{name}: the file changed since it was opened (now shape {now[0]} {now[1]}, was {shape} {dtype}); "
                "run again once it is written"
            )
        rows = FileRows(path, layout[3], shape, dtype, name, fix="save the images again with numpy.save")
        if not fortran_order:
            return rows
        # Column-major data cannot be read image by image: all of it, as numpy.load would.
        with rows:
            flat = rows.read_flat()
        return flat.reshape(shape[::-1]).transpose()

    return ArraySource(
        "array", name, load, shape,
        lambda hash_content: {"file_sha256": sha256_file(path)} if hash_content else file_identity(path),
        limit=limit, seed=seed,
    )


def _npy_layout(path: Path, name: str) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """``(shape, dtype, fortran_order, data offset)`` of a ``.npy`` file, from its header; no data is read.

    numpy parses the header (every format version) for a memory map, which is dropped at once: mapping reads
    nothing, and the data are read with plain reads, which a file cut short turns into an error rather than
    the SIGBUS that kills a process touching a mapped page past the end of its file.
    """
    if sniff_numpy_file(path) == "npz":
        # numpy.load reads by content and would hand back an NpzFile where an array is expected.
        raise SourceError(
            f"{name}: the file holds an .npz archive (zip data), not a single .npy array; rename it .npz"
        )
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except NUMPY_LOAD_ERRORS as exc:
        raise SourceError(f"{name}: not a readable .npy array file ({numpy_load_problem(exc)})") from exc
    if not isinstance(mapped, np.memmap):  # pragma: no cover - sniffed above; a file replaced meanwhile
        raise SourceError(f"{name}: not a single .npy array; rename it to what it holds")
    fortran_order = bool(mapped.flags.f_contiguous and not mapped.flags.c_contiguous)
    layout = (tuple(int(d) for d in mapped.shape), mapped.dtype, fortran_order, int(mapped.offset))
    del mapped  # the map, unused, goes with it
    return layout


class FileRows:
    """The rows of a C-order array stored raw in a file from `offset`: read as they are asked for.

    Indexing with a slice (step 1) or an index array returns those rows as an array, each consecutive run with
    one positioned read. It replaces a memory map: a mapped file that is cut short while it is read (a trainer
    saving new samples over it) kills the process with SIGBUS; a short read here is a
    :class:`~fidkit.errors.SourceError` naming the file. The file is open from construction to :meth:`close`.
    """

    def __init__(
        self, path: Path, offset: int, shape: tuple[int, ...], dtype: Any, what: str, *, fix: str
    ) -> None:
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self._offset = int(offset)
        self._row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize
        self._what = what
        self._fix = fix
        self._file: Any = None  # for close() in __del__ when open() fails
        try:
            self._file = open(path, "rb")
        except OSError as exc:
            raise SourceError(f"{what}: cannot open the file again to read its images ({exc})") from exc

    def __len__(self) -> int:
        return self.shape[0]

    def __enter__(self) -> FileRows:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __del__(self) -> None:
        self.close()

    def _read(self, out: np.ndarray, first: int) -> None:
        if self._file is None:
            raise ValueError("read from closed FileRows")
        try:
            self._file.seek(self._offset + first * self._row_bytes)
            read_exactly(
                self._file, out, self._what, SourceError,
                f"if it was being written, run again once it is complete; otherwise {self._fix}",
            )
        except OSError as exc:
            raise SourceError(f"{self._what}: cannot read the images ({exc})") from exc

    def read_flat(self) -> np.ndarray:
        """Every element, in file order."""
        flat = np.empty(math.prod(self.shape), dtype=self.dtype)
        self._read(flat, 0)
        return flat

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, slice):
            first, stop, step = index.indices(len(self))
            if step != 1:
                raise IndexError("only contiguous slices are read from a file's rows")
            out = np.empty((max(stop - first, 0), *self.shape[1:]), dtype=self.dtype)
            self._read(out, first)
            return out
        chosen = np.asarray(index, dtype=np.int64)
        if chosen.ndim != 1 or np.any((chosen < 0) | (chosen >= len(self))):
            raise IndexError("rows are read by a 1-D array of indices within the file's rows")
        out = np.empty((len(chosen), *self.shape[1:]), dtype=self.dtype)
        # Runs of consecutive indices, each one read.
        breaks = np.flatnonzero(np.diff(chosen) != 1) + 1
        for run_start, run_stop in zip([0, *breaks.tolist()], [*breaks.tolist(), len(chosen)]):
            self._read(out[run_start:run_stop], int(chosen[run_start]))
        return out


_NPZ_FIX = "save the images again with numpy.save or numpy.savez"


def load_npz(path: Path, name: str) -> NpzReader:
    """Open a ``.npz`` file for its directory; arrays are read only when asked for. The caller closes it.

    A file named ``.npz`` that holds ``.npy`` data is refused like its twin in :meth:`fidkit.stats.Stats.load`
    (without reading the array).
    """
    return NpzReader(path, name, SourceError, _NPZ_FIX)


def open_npz(
    path: Path, name: str, archive: NpzReader, *, limit: int | None, seed: int | None
) -> ArraySource:
    """A source over the images array of an open ``.npz`` (its only array, or ``images``/``arr_0``).

    `archive` is the file opened by :func:`load_npz`; here only the member's header is read (dtype and
    shape are checked before any pixel), and the pixels are read when batches are asked for, only as far as
    they are needed. The caller closes `archive`.

    Raises
    ------
    StatsFileError
        The file has ``mu`` or ``sigma`` and no images: statistics (broken ones when only one is there).
    SourceError, InputError
        No images array to choose, a damaged member, or an array that is not uint8 images.
    """
    keys = archive.keys
    stats_keys = [key for key in ("mu", "sigma") if key in keys]
    image_keys = [key for key in IMAGE_KEYS if key in keys]
    if stats_keys and not image_keys:
        if len(stats_keys) == 2:
            raise SourceError(
                f"{name}: a statistics file (mu, sigma), not images; compute_stats and compute_fid "
                "use it as it is"
            )
        missing = "sigma" if stats_keys == ["mu"] else "mu"
        raise StatsFileError(
            f"{name}: a broken statistics file: it has {stats_keys[0]!r} but no {missing!r} (keys: "
            f"{', '.join(sorted(keys))}); recompute the statistics"
        )
    if not image_keys and any(classify(key) is None for key in keys):
        _refuse_a_zip_of_image_files(archive, name)
    if len(keys) == 1:
        key = keys[0]
    elif image_keys:
        key = image_keys[0]
    elif not keys:
        raise SourceError(f"{name}: the .npz holds no arrays; {_NPZ_FIX}")
    else:
        raise SourceError(
            f"{name}: .npz holds several arrays ({', '.join(keys)}) and none is named "
            f"{' or '.join(IMAGE_KEYS)}; save the images alone or under the key 'images'"
        )
    header = archive.header(key)
    what = f"{name}[{key}]"
    # Validate dtype and shape from the header alone: nothing is read or allocated before this.
    check_image_array(header.dtype, header.shape, what)
    if header.fortran_order:
        # Column-major data cannot be read image by image; its size was checked against the member.
        images: Any = archive.read(key, header)
        load: Callable[[], Any] = lambda: images
    else:
        load = lambda: _NpzMemberRows(path, key, header, what)
    return ArraySource(
        "array", name, load, header.shape,
        lambda hash_content: {
            "key": key,
            **({"file_sha256": sha256_file(path)} if hash_content else file_identity(path)),
        },
        limit=limit, seed=seed,
    )


def _refuse_a_zip_of_image_files(archive: NpzReader, name: str) -> None:
    """Raise when the ``.npz`` is a zip of image files (a member named like an image that holds no ``.npy`` data):
    fidkit reads such a zip as a source of images, by its name."""
    images = [key for key in archive.keys if classify(key) is None]
    try:
        archive.header(images[0])
    except SourceError:
        listed = ", ".join(images[:3]) + (", ..." if len(images) > 3 else "")
        raise SourceError(
            f"{name}: a zip archive of image files ({listed}), not numpy arrays: rename it to end in .zip "
            "to read its images"
        ) from None


class _NpzMemberRows:
    """The images of one C-order ``.npz`` member, read forward from the archive as they are asked for.

    Indexing with a slice (step 1) or an increasing index array returns those images as an array; the
    images before them are decompressed and dropped, those after them are not read. A request behind the
    current position reopens the member (a new pass). Each read is bounded by the header, which
    :meth:`NpzReader.header` checked against what the member holds.
    """

    def __init__(self, path: Path, key: str, header: NpyHeader, what: str) -> None:
        self._path = path
        self._key = key
        self._header = header
        self._what = what
        self.shape = header.shape
        self.dtype = header.dtype
        self._row_bytes = math.prod(header.shape[1:]) * header.dtype.itemsize
        self._reader: NpzReader | None = None
        self._stream: Any = None
        self._next_row = 0

    def __len__(self) -> int:
        return self.shape[0]

    def _open(self) -> None:
        self.close()
        self._reader = NpzReader(self._path, self._what, SourceError, _NPZ_FIX)
        self._stream, header = self._reader.open_data(self._key)
        if header != self._header:
            self.close()
            raise SourceError(
                f"{self._what}: the file changed since it was opened (now {header.describe()}); open it again"
            )
        self._next_row = 0

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        if self._reader is not None:
            self._reader.close()
        self._stream = self._reader = None

    def __del__(self) -> None:
        self.close()

    def _skip_to(self, row: int) -> None:
        if self._stream is None or row < self._next_row:
            self._open()
        to_skip = (row - self._next_row) * self._row_bytes
        while to_skip:
            dropped = len(self._stream.read(min(to_skip, 1 << 24)))
            if not dropped:
                raise SourceError(f"{self._what}: the data ends before image {row}; the file is cut short; {_NPZ_FIX}")
            to_skip -= dropped
        self._next_row = row

    def _read_rows(self, first: int, count: int) -> np.ndarray:
        out = np.empty((count, *self.shape[1:]), dtype=self.dtype)
        try:
            self._skip_to(first)
            read_exactly(self._stream, out, self._what, SourceError, _NPZ_FIX)
        except NUMPY_LOAD_ERRORS + (zlib.error,) as exc:
            problem = exc or type(exc).__name__
            raise SourceError(f"{self._what}: cannot read the images ({problem}); {_NPZ_FIX}") from exc
        self._next_row = first + count
        return out

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, slice):
            first, stop, step = index.indices(len(self))
            if step != 1:
                raise IndexError("only contiguous slices are read from an .npz member")
            return self._read_rows(first, max(stop - first, 0))
        chosen = np.asarray(index, dtype=np.int64)
        if chosen.ndim != 1 or (len(chosen) > 1 and np.any(np.diff(chosen) <= 0)):
            raise IndexError("rows of an .npz member are read in increasing order")
        return np.stack([self._read_rows(int(row), 1)[0] for row in chosen]) if len(chosen) else self._read_rows(0, 0)


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
