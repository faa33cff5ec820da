"""Which runtime computes the features: onnxruntime (the default) or the torch engine, and on what device.

``engine="auto"`` runs the ONNX graph on onnxruntime. When a GPU was asked for (``device="auto"`` or
``"cuda[:N]"``) and onnxruntime cannot run there while torch can (an onnxruntime-gpu built for a newer CUDA
than the driver, a CPU-only onnxruntime next to a CUDA torch), the same network runs in torch on that GPU
instead (:mod:`fidkit.inception.torch_engine`, TF32 off), with one warning; the statistics record which
engine ran, and the cache keeps the two apart. ``engine="onnxruntime"`` and ``engine="torch"`` choose
explicitly.
"""

from __future__ import annotations

import logging
from typing import Any

from fidkit._gpu import gpu_driver_present
from fidkit.errors import FidkitError, InputError
from fidkit.inception.providers import parse_device

__all__ = ["ENGINES", "check_engine", "build_feature_extractor"]

logger = logging.getLogger(__name__)

#: Values of ``engine`` (``--engine``).
ENGINES = ("auto", "onnxruntime", "torch")


def check_engine(engine: Any) -> str:
    """Return `engine` if it is one of :data:`ENGINES`, else raise InputError."""
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    return str(engine)


def _torch_has_cuda() -> bool:
    """True when torch is installed and sees a GPU; imports torch only when a driver is there at all."""
    if not gpu_driver_present():
        return False
    try:
        import torch
    except ImportError:
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken CUDA setup is no GPU for torch either
        return False


def build_feature_extractor(
    weights: Any = None,
    *,
    device: str = "auto",
    batch_size: int = 50,
    engine: str = "auto",
    precision: str = "exact",
) -> Any:
    """Build the feature extractor for `engine` on `device` (see the module docstring for ``"auto"``).

    Returns a :class:`~fidkit.inception.FeatureExtractor` or a
    :class:`~fidkit.inception.torch_engine.TorchFeatureExtractor`; both take the same images and give the
    same features (to float32 round-off, about 4e-6 of the feature scale).
    """
    from fidkit.inception.runtime import FeatureExtractor

    engine = check_engine(engine)
    parsed = parse_device(device)
    if engine == "torch":
        if precision != "exact":
            raise InputError("precision='fast' is onnxruntime's TensorRT mode; the torch engine computes in float32")
        return _torch_extractor(weights, device, batch_size)
    if engine == "onnxruntime":
        return FeatureExtractor(weights, device=device, batch_size=batch_size, precision=precision)
    try:
        extractor = FeatureExtractor(weights, device=device, batch_size=batch_size, precision=precision)
    except FidkitError as exc:
        if parsed.kind != "cuda" or not _torch_has_cuda():
            raise
        logger.warning(
            "onnxruntime cannot run on %s here (%s); running the same network with torch on %s instead "
            "(engine 'torch', recorded in the statistics)", device, exc, device,
        )
        return _torch_extractor(weights, device, batch_size)
    if parsed.kind == "auto" and extractor.provider == "CPUExecutionProvider" and _torch_has_cuda():
        logger.warning(
            "onnxruntime cannot use the GPU here (it runs on the CPU); running the same network with torch on "
            "the GPU instead (engine 'torch', recorded in the statistics); pass --engine onnxruntime to keep the CPU"
        )
        return _torch_extractor(weights, "cuda", batch_size)
    return extractor


def _torch_extractor(weights: Any, device: str, batch_size: int) -> Any:
    from fidkit.inception.torch_engine import TorchFeatureExtractor

    return TorchFeatureExtractor(weights, device=device, batch_size=batch_size)
