"""Reading a fidkit source into one uint8 array in memory, for the trainer and the experiments.

Both the trainer and the validation experiments need random access to a fixed set of images
(mini-batches drawn at random; the same images disturbed at several strengths), so they read the
source once through :func:`fidkit.open_source` and keep it in memory. Their sizes are small
(MNIST is 47 MB, CIFAR-10 150 MB); ``--train-samples`` / ``--samples`` cap larger sources.

torch is imported only by the functions that make or read tensors (:func:`load_training_data`,
:func:`nchw_to_rgb`), so the validation experiment, which needs none, does not load it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import fidkit
from fidkit.errors import EmptySourceError, InputError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = [
    "LoadedImages",
    "TrainingData",
    "load_images",
    "load_training_data",
    "resize_images",
    "is_grayscale",
    "gan_image_size",
    "nchw_to_rgb",
    "existing_output",
]

logger = logging.getLogger(__name__)

#: Image sizes the DCGAN of :mod:`fidkit.ttur.models` is built and tested for.
GAN_SIZES = (28, 32)


@dataclass
class LoadedImages:
    """Images read from a source, all one size.

    Attributes
    ----------
    images : numpy.ndarray
        uint8 ``(N, H, W, 3)``.
    source_name : str
        The source's name, for messages and reports.
    n_resized : int
        How many images had to be resized to the common size (0 when none).
    """

    images: np.ndarray
    source_name: str
    n_resized: int


def resize_images(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 ``(N, H, W, 3)`` images to ``size = (H', W')``.

    Non-square images are centre-cropped to the target aspect ratio first so that shapes are not
    stretched; the resize itself is Pillow's antialiased bicubic filter, which is what a user
    would do by hand to shrink a dataset for a 32x32 GAN.
    """
    from PIL import (
        Image,  # Pillow is a core dependency; imported here to keep import time low
    )

    target_h, target_w = size
    resized = np.empty((images.shape[0], target_h, target_w, 3), dtype=np.uint8)
    for index, image in enumerate(images):
        height, width = image.shape[:2]
        # Crop to the target aspect ratio around the centre.
        if height * target_w > width * target_h:
            crop_h = max(1, round(width * target_h / target_w))
            top = (height - crop_h) // 2
            image = image[top : top + crop_h]
        elif height * target_w < width * target_h:
            crop_w = max(1, round(height * target_w / target_h))
            left = (width - crop_w) // 2
            image = image[:, left : left + crop_w]
        pil_image = Image.fromarray(np.ascontiguousarray(image), mode="RGB")
        resized[index] = np.asarray(
            pil_image.resize((target_w, target_h), Image.Resampling.BICUBIC), dtype=np.uint8
        )
    return resized


def is_grayscale(images: np.ndarray) -> bool:
    """Return True if every pixel of the uint8 ``(N, H, W, 3)`` images has R == G == B."""
    return bool(
        np.array_equal(images[..., 0], images[..., 1])
        and np.array_equal(images[..., 0], images[..., 2])
    )


def gan_image_size(height: int, width: int, *, grayscale: bool) -> int:
    """Choose the GAN's square image size for images of ``height x width``.

    28 and 32 are kept as they are; anything else is resized to 28 (grayscale) or 32 (colour),
    the sizes of MNIST and CIFAR-10 that the networks are built for.
    """
    if height == width and height in GAN_SIZES:
        return height
    return 28 if grayscale else 32


def existing_output(out: Path, names: Iterable[str]) -> Path | None:
    """The first of `names` that already exists in `out` (the folder is then in use), or None."""
    for name in names:
        if (out / name).exists():
            return out / name
    return None


def load_images(
    spec: object,
    *,
    limit: int | None = None,
    seed: int | None = None,
    size: tuple[int, int] | None = None,
    size_for_first: Callable[[np.ndarray], tuple[int, int]] | None = None,
    batch_size: int = 256,
) -> LoadedImages:
    """Read a fidkit source into one uint8 ``(N, H, W, 3)`` array.

    Parameters
    ----------
    spec : str, path, array or iterable of batches
        Anything :func:`fidkit.open_source` accepts that holds images (not statistics).
    limit : int, optional
        Read at most this many images (``open_source(limit=...)``).
    seed : int, optional
        Passed to ``open_source``; with `limit` it picks which images are read.
    size : (int, int), optional
        Resize every image to this ``(H, W)``. By default the size of the first batch is used,
        after `size_for_first` if given.
    size_for_first : callable, optional
        ``f(first_batch) -> (H, W)``: choose the common size from the first batch (the trainer
        uses it to go to 28 or 32).
    batch_size : int
        Batch size asked of the source while reading.

    Returns
    -------
    LoadedImages
        With a count of resized images; a warning is logged when any had to be resized.

    Raises
    ------
    EmptySourceError
        If the source yields no images.
    """
    source = fidkit.open_source(spec, limit=limit, seed=seed)
    if getattr(source, "kind", None) == "stats":
        raise InputError(
            f"{source.name} holds statistics, not images; give a folder, archive, array or "
            "dataset file"
        )
    chunks: list[np.ndarray] = []
    seen_sizes: list[tuple[int, int]] = []
    n_resized = 0
    target = size
    # Every image source's batches are uint8 (B, H, W, 3) already (Source.batches).
    batches: Iterable[np.ndarray] = source.batches(batch_size)
    for batch in batches:
        if batch.shape[0] == 0:
            continue
        batch_size_hw = (int(batch.shape[1]), int(batch.shape[2]))
        if batch_size_hw not in seen_sizes:
            seen_sizes.append(batch_size_hw)
        if target is None:
            target = size_for_first(batch) if size_for_first is not None else batch_size_hw
        if batch_size_hw != target:
            batch = resize_images(batch, target)
            n_resized += batch.shape[0]
        chunks.append(batch)
    if not chunks:
        raise EmptySourceError(f"{source.name} holds no images")
    images = np.concatenate(chunks, axis=0) if len(chunks) > 1 else chunks[0]
    if n_resized:
        logger.warning(
            "%s: resized %d of %d images from %s to %dx%d",
            source.name,
            n_resized,
            images.shape[0],
            ", ".join(f"{h}x{w}" for h, w in seen_sizes),
            target[0],
            target[1],
        )
    return LoadedImages(
        images=np.ascontiguousarray(images, dtype=np.uint8),
        source_name=str(source.name),
        n_resized=n_resized,
    )


@dataclass
class TrainingData:
    """The real images as the GAN sees them.

    Attributes
    ----------
    images : torch.Tensor
        uint8 ``(N, C, S, S)`` on the CPU; C is 1 for grayscale data, 3 for colour.
    grayscale : bool
        True if every source image had R == G == B.
    image_size : int
        S, 28 or 32 for the shipped networks.
    source_name : str
        For messages.
    n_resized : int
        Images that had to be resized to S x S.
    """

    images: torch.Tensor
    grayscale: bool
    image_size: int
    source_name: str
    n_resized: int = 0

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])


def load_training_data(
    spec: object, *, limit: int | None = None, seed: int | None = None
) -> TrainingData:
    """Read real images for training into memory once, as uint8 ``(N, C, S, S)``.

    Grayscale (R == G == B everywhere, e.g. MNIST) becomes one channel. 28x28 and 32x32 images
    are kept as they are; other sizes are resized to 28 (grayscale) or 32 (colour) and a warning
    says so.

    Parameters
    ----------
    spec : source
        Anything :func:`fidkit.open_source` reads as images.
    limit : int, optional
        At most this many images (``--train-samples``).
    seed : int, optional
        With `limit`, which images are picked (passed to ``open_source``).
    """
    import torch

    def choose_size(first_batch: np.ndarray) -> tuple[int, int]:
        size = gan_image_size(
            first_batch.shape[1], first_batch.shape[2], grayscale=is_grayscale(first_batch)
        )
        return size, size

    loaded = load_images(spec, limit=limit, seed=seed if limit is not None else None,
                         size_for_first=choose_size)
    grayscale = is_grayscale(loaded.images)
    images_hwc = loaded.images[..., :1] if grayscale else loaded.images
    images = torch.from_numpy(np.ascontiguousarray(images_hwc.transpose(0, 3, 1, 2)))
    logger.info(
        "training data %s: %d images, %dx%d, %s",
        loaded.source_name,
        images.shape[0],
        images.shape[2],
        images.shape[3],
        "grayscale" if grayscale else "colour",
    )
    return TrainingData(
        images=images,
        grayscale=grayscale,
        image_size=int(images.shape[2]),
        source_name=loaded.source_name,
        n_resized=loaded.n_resized,
    )


def nchw_to_rgb(images: torch.Tensor) -> np.ndarray:
    """Turn uint8 ``(N, C, H, W)`` images (C = 1 or 3) into uint8 ``(N, H, W, 3)`` on the CPU.

    One channel is repeated to three, as fidkit's sources do for grayscale data, so real and
    generated images meet the network, and the sample grid, in the same form.
    """
    pixels = images.permute(0, 2, 3, 1).cpu().numpy()
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return np.ascontiguousarray(pixels)
