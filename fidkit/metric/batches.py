"""What :class:`fidkit.FID` hands its extractor: its batches (kept on their GPU where fidkit's own engines read
them there) and a floating-point reference quantized once, when the metric is made."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from fidkit._validate import as_image_array, as_image_batch, as_image_tensor, is_float_dtype, is_torch_tensor
from fidkit.metric.state import _RebuiltExtractor

__all__ = ["device_batch", "host_batch", "reads_device_tensors", "quantized_reference"]


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


def quantized_reference(reference: Any, value_range: tuple[float, float] | None) -> Any:
    """A floating-point reference array or tensor (or a list or tuple of them) as uint8 images, quantized now with
    the metric's `value_range` as :meth:`FID.update` quantizes its batches; anything else as it is.

    Now, not when the reference is read: the result is the metric's own copy, which the caller cannot change.
    """
    if value_range is None:
        return reference
    if isinstance(reference, (list, tuple)):
        return type(reference)(quantized_reference(item, value_range) for item in reference)
    if is_torch_tensor(reference):
        floating = reference.is_floating_point()
    else:
        floating = isinstance(reference, np.ndarray) and is_float_dtype(reference.dtype)
    return as_image_array(reference, "FID(reference=...) images", value_range) if floating else reference
