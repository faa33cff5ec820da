"""Turning what a user points fidkit at into uint8 RGB image batches.

:func:`open_source` accepts

* a folder of images (recursive; ``.png .jpg .jpeg .jfif .jpe .bmp .webp .tif .tiff`` in any case),
* a ``.zip`` or ``.tar`` / ``.tar.gz`` / ``.tgz`` (also ``.tar.bz2``, ``.tar.xz``) archive, read in place,
* a ``.npy`` or ``.npz`` of uint8 images ``(N, H, W, 3)`` or grayscale ``(N, H, W)``,
* an MNIST ``*-idx3-ubyte`` file, optionally ``.gz``,
* a CIFAR-10/100 python batch folder (its training split) or one batch file,
* a numpy uint8 array (or anything ``numpy.asarray`` reads, e.g. a CPU tensor), or an iterable of
  uint8 batches,

and returns a :class:`Source`. Images come out in sorted-path order; ``limit``/``seed`` choose a
reproducible subset. How image modes become RGB is the colour policy in
:mod:`fidkit.sources.decode`; bad files are handled as described in :func:`open_source`.

Statistics (a ``Stats`` object, a statistics ``.npz``) are not sources: :func:`fidkit.pipeline.open_input`
recognises them before it opens a source, and uses them as they are. :func:`refuse_outputs_over_inputs`
(:mod:`fidkit.sources.outputs`) refuses an output path that is one of a run's inputs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fidkit._fs import WORKING_DIRECTORY_GONE, working_directory_gone
from fidkit._validate import as_image_batch
from fidkit.errors import InputError, SourceError
from fidkit.sources.archives import is_archive, open_archive
from fidkit.sources.arrays import (
    ArraySource,
    BatchesSource,
    load_npz,
    open_array,
    open_npy,
    open_npz,
)
from fidkit.sources.base import ReadOptions, Source
from fidkit.sources.datasets import (
    cifar_train_files,
    is_cifar_batch_file,
    is_mnist_name,
    open_cifar,
    open_mnist,
)
from fidkit.sources.decode import COLOUR_POLICY_VERSION, IMAGE_EXTENSIONS, decode_image
from fidkit.sources.files import (
    FileSource,
    open_folder,
    refuse_special_file,
)
from fidkit.sources.outputs import refuse_outputs_over_inputs
from fidkit.sources.parallel import default_workers

__all__ = [
    "COLOUR_POLICY_VERSION",
    "IMAGE_EXTENSIONS",
    "Source",
    "FileSource",
    "ArraySource",
    "BatchesSource",
    "open_source",
    "open_with",
    "is_array_like",
    "ReadOptions",
    "refuse_outputs_over_inputs",
    "decode_image",
    "default_workers",
]

logger = logging.getLogger(__name__)

_ACCEPTED = (
    "a folder of images (.png .jpg .jpeg .jfif .jpe .bmp .webp .tif .tiff), a .zip/.tar/.tar.gz/.tgz archive of "
    "images, a .npy/.npz of uint8 images, an MNIST *-idx3-ubyte[.gz] file, a CIFAR-10/100 python "
    "batch folder or file"
)


def open_source(
    spec: Any,
    *,
    limit: int | None = None,
    seed: int | None = None,
    skip_bad: bool = False,
    exif_transpose: bool = False,
    workers: int | None = None,
) -> Source:
    """Open anything fidkit can compute statistics of.

    Parameters
    ----------
    spec : str, path-like, numpy.ndarray or iterable
        A path (folder, archive, ``.npy``, ``.npz``, MNIST idx, CIFAR batch folder/file), a uint8
        image array, or an iterable of uint8 batches.
    limit : int, optional
        Use at most this many images: the first ones in sorted order, or, with `seed`, a random
        subset (``numpy.random.default_rng(seed)``, without replacement) kept in sorted order.
    seed : int, optional
        Seed of the random subset; only meaningful with `limit`.
    skip_bad : bool, default False
        Skip files that cannot be decoded and list them in ``source.skipped``. Without it the first
        bad file stops the batches; decoding continues only to count the bad files, and then
        :class:`~fidkit.errors.ImageError` names them. Running out of memory or file descriptors is never a
        bad file (:class:`~fidkit.errors.ResourceError`, whatever `skip_bad` says); a skip for a reason that can
        pass without the file changing (permissions, I/O errors) keeps the result out of the cache
        (:mod:`fidkit.sources.parallel`).
    exif_transpose : bool, default False
        Apply EXIF orientation tags (by default pixels are used as stored, like the reference).
    workers : int, optional
        Decoding processes for files; default :func:`default_workers` (CPUs, at most 8); 0 or 1
        decodes in the calling process.

    Returns
    -------
    Source
        A source whose ``batches()`` yields uint8 ``(B, H, W, 3)`` arrays.

    Raises
    ------
    SourceError
        A path that does not exist or is of no kind listed above (the message lists the kinds).
    EmptySourceError
        A source that holds no images.
    InputError
        Arrays of the wrong dtype or shape; invalid `limit`, `seed` or `workers`.

    Examples
    --------
    >>> source = open_source("samples/", limit=5000, seed=0)  # doctest: +SKIP
    >>> for batch in source.batches(50):  # doctest: +SKIP
    ...     features = extractor(batch)
    """
    read = ReadOptions(limit=limit, seed=seed, skip_bad=skip_bad, exif_transpose=exif_transpose, workers=workers)
    return open_with(spec, read)


def open_with(spec: Any, read: ReadOptions) -> Source:
    """:func:`open_source` with its reading settings as one object (:attr:`fidkit.options.RunOptions.read`)."""
    limit, seed = read.limit, read.seed
    if isinstance(spec, Source):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        return _open_path(Path(spec), str(spec), read)
    if isinstance(spec, np.ndarray):
        return open_array(spec, limit=limit, seed=seed)
    if isinstance(spec, (bytes, bytearray, dict)):
        raise SourceError(f"cannot read a {type(spec).__name__} as images; accepted: {_ACCEPTED}, or arrays")
    if is_array_like(spec):
        # Array-likes (a torch CPU tensor, a memmap wrapper): one array, not an iterable of rows.
        return open_array(as_image_batch(spec, f"a {type(spec).__name__}"), limit=limit, seed=seed)
    if isinstance(spec, Iterable):
        if seed is not None:
            raise InputError(
                "seed needs a source of known length; an iterable of batches can only be cut with limit"
            )
        return BatchesSource(spec, limit=limit)
    raise SourceError(f"cannot read a {type(spec).__name__} as images; accepted: {_ACCEPTED}")


def is_array_like(spec: Any) -> bool:
    """Whether :func:`open_with` reads `spec` as one array of images through ``numpy.asarray`` (a torch tensor, a
    JAX array, a memmap wrapper: anything with ``__array__``), not as a path, a source or an iterable of batches
    (a list, a tuple or an iterator, which may have ``__array__`` too). A numpy array itself is not array-like."""
    return (
        hasattr(spec, "__array__")
        and not isinstance(spec, (np.ndarray, list, tuple, str, bytes, bytearray, dict, os.PathLike, Source))
        and not hasattr(spec, "__next__")
    )


def _open_path(path: Path, name: str, read: ReadOptions) -> Source:
    # Named datasets ("cifar10-train", used when no such path exists) and the CIFAR python .tar.gz.
    from fidkit.sources.named import dataset_names, open_if_named

    if not path.is_absolute() and name not in dataset_names() and working_directory_gone():
        # Every relative path is relative to a folder that is gone: "A" is missing from it, "../A" and "." cannot be
        # made absolute (folders, caches and workers need that). Named datasets live in FIDKIT_HOME, not here.
        raise SourceError(f"{name}: {WORKING_DIRECTORY_GONE}")
    limit, seed = read.limit, read.seed
    named = open_if_named(path, name, limit=limit, seed=seed)
    if named is not None:
        return named
    if not path.exists():
        raise SourceError(
            f"{name}: no such file or folder; accepted: {_ACCEPTED}, or a dataset name ({', '.join(dataset_names())})"
        )
    refuse_special_file(path, name)  # a FIFO or device would block below
    if path.is_dir():
        cifar_files = cifar_train_files(path)
        if cifar_files:
            return open_cifar(path, name, limit=limit, seed=seed, files=cifar_files)
        return open_folder(path, name, read)
    lower = path.name.lower()
    if is_archive(path):
        return open_archive(path, name, read)
    if lower.endswith(".npy"):
        return open_npy(path, name, limit=limit, seed=seed)
    if lower.endswith(".npz"):
        with load_npz(path, name) as archive:
            return open_npz(path, name, archive, limit=limit, seed=seed)
    if is_mnist_name(path):
        return open_mnist(path, name, limit=limit, seed=seed)
    if is_cifar_batch_file(path):
        return open_cifar(path, name, limit=limit, seed=seed)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        raise SourceError(
            f"{name}: a single image file; put the images in a folder (FID needs many images)"
        )
    raise SourceError(f"{name}: unknown kind of file{_content_hint(path)}; accepted: {_ACCEPTED}")


def _content_hint(path: Path) -> str:
    """What the file's first bytes say it is, when its name says nothing fidkit reads (kinds go by name)."""
    from fidkit._npz import sniff_numpy_file

    kind = sniff_numpy_file(path)
    if kind == "npy":
        return f" (by its content a numpy .npy array: rename it {path.name}.npy)"
    if kind == "npz":
        return (
            f" (by its content a zip archive: statistics or features saved by numpy, or images; rename it "
            f"{path.name}.npz or {path.name}.zip)"
        )
    return ""
