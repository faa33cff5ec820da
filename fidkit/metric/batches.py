"""What :class:`fidkit.FID` hands its extractor: its batches (kept on their GPU where fidkit's own engines read
them there) and a floating-point reference quantized once, when the metric is made."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from fidkit._validate import (
    as_image_array,
    as_image_batch,
    as_image_tensor,
    as_numpy,
    is_float_dtype,
    is_torch_tensor,
)
from fidkit.metric.state import _RebuiltExtractor
from fidkit.sources.arrays import array_content_sha256

__all__ = [
    "device_batch", "host_batch", "reads_device_tensors", "given_images", "quantized_reference", "reference_digest"
]


def device_batch(images: Any, what: str, value_range: tuple[float, float] | None) -> Any:
    """What :meth:`FID.update` hands the extractor: checked uint8 images, kept on their GPU when they are there.

    A CUDA tensor is quantized on its device and stays a uint8 tensor in the tensor convention (NCHW), which
    fidkit's own engines read where it lies (the onnxruntime CUDA provider by pointer, the torch engine directly;
    :meth:`FID.update` hands any other extractor :func:`host_batch` of it); anything else becomes the usual host
    uint8 NHWC array.
    """
    if is_torch_tensor(images) and images.is_cuda:
        return as_image_tensor(images, what, value_range).permute(0, 3, 1, 2)
    return as_image_batch(images, what, value_range)


def host_batch(batch: Any) -> np.ndarray:
    """A batch of :func:`device_batch` on the GPU as the host uint8 (B, H, W, 3) array every extractor takes."""
    return np.ascontiguousarray(batch.permute(0, 2, 3, 1).cpu().numpy())


def reads_device_tensors(extractor: Any) -> bool:
    """Whether `extractor` is one of fidkit's two engines, which read a uint8 (B, 3, H, W) CUDA tensor in place.

    The exact classes (a subclass may have its own ``__call__``); one rebuilt after unpickling is looked through.
    """
    if isinstance(extractor, _RebuiltExtractor):
        extractor = extractor.built()
    own = (
        getattr(sys.modules.get("fidkit.inception.runtime"), "FeatureExtractor", None),
        getattr(sys.modules.get("fidkit.inception.torch_engine"), "TorchFeatureExtractor", None),
    )
    return type(extractor) in own


def given_images(images: Any, what: str) -> Any:
    """`images` as :meth:`FID.update` and a reference look at them: an array-like (a JAX array, anything with
    ``__array__`` that :func:`fidkit.sources.open_with` reads as one array) as the numpy array it gives, once; a
    numpy array, a torch tensor, a list and anything else as it is."""
    from fidkit.sources import is_array_like

    return as_numpy(images, what) if is_array_like(images) and not is_torch_tensor(images) else images


def quantized_reference(
    reference: Any, value_range: tuple[float, float] | None
) -> tuple[Any, list[tuple[Any, str]]]:
    """A reference as :class:`FID` keeps it, and its images as given, each with what messages call it.

    An array, tensor or array-like (:func:`given_images`) is one batch; a list or tuple (a namedtuple included) is
    a sequence of batches, kept as a plain list or tuple (it is only read as a sequence); anything else (a path,
    statistics, an iterator) is kept as it is and has no images here. With `value_range`, a floating-point batch
    is quantized now, as :meth:`FID.update` quantizes its batches, into the metric's own uint8 copy, which the
    caller cannot change. A batch of a list that is not a numpy array (a uint8 tensor, an array-like) becomes the
    uint8 array it is read as (:func:`~fidkit._validate.as_image_batch`), as a reference tensor is when opened:
    every in-memory batch kept is then a numpy array, which :func:`reference_digest` fingerprints.

    The images as given (array-likes as numpy arrays) are what :meth:`FID.update`'s value-range warnings look at.
    """
    if isinstance(reference, (list, tuple)):
        kept, given = [], []
        for position, item in enumerate(reference):
            what = f"FID(reference=...) batch {position}"
            item = given_images(item, what)
            given.append((item, what))
            kept.append(_kept_batch(item, what, value_range, convert=not isinstance(item, np.ndarray)))
        return (tuple(kept) if isinstance(reference, tuple) else kept), given
    what = "FID(reference=...) images"
    if isinstance(reference, Iterator) and value_range is not None:
        # Batches read once, at the first compute: quantized then, with the range given now (no fingerprint: an
        # iterator cannot be read twice).
        return (_kept_batch(given_images(batch, what), what, value_range, convert=True) for batch in reference), []
    reference = given_images(reference, what) if value_range is not None else reference
    if not (is_torch_tensor(reference) or isinstance(reference, np.ndarray)):
        return reference, []
    return _kept_batch(reference, what, value_range, convert=False), [(reference, what)]


def _kept_batch(images: Any, what: str, value_range: tuple[float, float] | None, *, convert: bool) -> Any:
    """One batch of a reference as the metric keeps it: quantized into its own copy (floating point, with
    `value_range`), made the uint8 array it is read as (`convert`), or as it is."""
    if is_torch_tensor(images):
        floating = images.is_floating_point()
    else:
        floating = isinstance(images, np.ndarray) and is_float_dtype(images.dtype)
    if floating and value_range is not None:
        return as_image_array(images, what, value_range)  # a chunk at a time: no float copy of a large reference
    # A nested list of floats is quantized here too, as update() takes it; uint8 images ignore the range.
    return as_image_batch(images, what, value_range) if convert else images


def reference_digest(reference: Any) -> str | None:
    """A sha256 over the numpy arrays of a list or tuple reference as :func:`quantized_reference` keeps it (their
    dtypes, shapes and bytes, and which item each is), None for any other reference.

    What the reference's images are when its batches are read at the first :meth:`FID.compute`: they are not copied
    (a uint8 array kept by the caller, or a view of a uint8 tensor's memory), so :class:`FID` takes this at
    construction and compares it then, as it compares an array reference's fingerprint.
    """
    if not isinstance(reference, (list, tuple)):
        return None
    digest = hashlib.sha256()
    for item in reference:
        # uint8 arrays only: those are read as they are; any other dtype is refused when the batches are read
        # (and a bfloat16 or datetime64 array has no bytes a memoryview can hash).
        uint8 = isinstance(item, np.ndarray) and item.dtype == np.uint8
        digest.update(array_content_sha256(item).encode() if uint8 else b"-")
    return digest.hexdigest()
