"""Images in memory -> Inception statistics, through fidkit's public API only.

The trainer and the validation experiment build their :class:`fidkit.FeatureExtractor` here
(:func:`make_extractor`) and turn the images they hold in memory (generated, disturbed) into
statistics here (:func:`stats_in_memory`), with :func:`fidkit.compute_stats` over an iterable of
batches: no cache, no files, no progress bar of its own. Statistics of a dataset on disk are not
made here: those go to :func:`fidkit.compute_stats` with the source itself, and are cached.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

import fidkit

__all__ = ["check_extractor_device", "make_extractor", "stats_in_memory"]


def make_extractor(weights: Any, device: str, batch_size: int | None) -> Any:
    """Build the Inception feature extractor from fidkit's registry (the one place ``fidkit.ttur`` does so).

    Parameters
    ----------
    weights : path-like or None
        The Inception weights; None resolves them as everywhere in fidkit.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``...
    batch_size : int or None
        Images per network batch; None: the device's default, chosen by the extractor as for ``fidkit compute``.
    """
    from fidkit.extractors import build_extractor

    return build_extractor(fidkit.RunOptions(weights=weights, device=device, batch_size=batch_size))


def check_extractor_device(weights: Any, device: str, batch_size: int | None) -> None:
    """Refuse now a device the FID network cannot run on here, as ``fidkit compute`` does before reading anything
    (the registry's probe: :meth:`fidkit.extractors.LazyExtractor.probe`); nothing is built.

    Raises
    ------
    FidkitError
        No NVIDIA driver, no runtime for the device (onnxruntime without its provider, TensorRT missing, no CUDA
        torch either); the message says why and what to install or pass.
    """
    from fidkit.extractors import LazyExtractor

    LazyExtractor(fidkit.RunOptions(weights=weights, device=device, batch_size=batch_size)).probe()


def stats_in_memory(
    images: np.ndarray | Iterable[np.ndarray], extractor: Any, *, progress: Any = None
) -> fidkit.Stats:
    """Statistics of uint8 images held in memory, computed with `extractor`.

    :func:`fidkit.compute_stats` over batches, with ``use_cache=False`` and its own progress bar
    off; there, batches larger than ``extractor.batch_size`` are split into network batches.

    Parameters
    ----------
    images : numpy.ndarray or iterable of numpy.ndarray
        One uint8 ``(N, H, W, 3)`` array, given to the network in slices of
        ``extractor.batch_size`` (so that `progress` moves per network batch), or an iterable of
        uint8 ``(B, H, W, 3)`` batches, read once (e.g. a generator's samples).
    extractor : FeatureExtractor
        Shared by every call of a run.
    progress : tqdm.tqdm, optional
        A bar spanning several calls, told of each batch done.
    """
    batch_size = int(extractor.batch_size)
    batches: Iterable[np.ndarray] = (
        _slices(images, batch_size) if isinstance(images, np.ndarray) else images
    )
    if progress is not None:
        batches = _counted(batches, progress)
    return fidkit.compute_stats(batches, extractor=extractor, batch_size=batch_size, use_cache=False, progress=False)


def _slices(images: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, images.shape[0], size):
        yield images[start : start + size]


def _counted(batches: Iterable[np.ndarray], progress: Any) -> Iterator[np.ndarray]:
    """Yield `batches`, telling `progress` of each one once the consumer comes back for more."""
    for batch in batches:
        yield batch
        progress.update(batch.shape[0])
