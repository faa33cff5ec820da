"""What the FID network is, as numbers and names every part of ``fidkit.inception`` agrees on.

No torch and no onnxruntime here: the runtime, the torch module and the exporter all import these.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "EXTRACTOR_NAME",
    "FEATURE_DIM",
    "INPUT_SIZE",
    "RESIZE_MODE",
    "FEATURE_EXTRACTOR",
    "EXPORTER_VERSION",
    "GPU_BATCH_SIZE",
    "CPU_BATCH_SIZE",
    "default_batch_size",
    "numerics",
    "identity_fields",
    "extractor_metadata",
]

#: The name of this extractor in fidkit's registry (:mod:`fidkit.extractors`).
EXTRACTOR_NAME = "inception-2015"

#: Length of the pool_3 feature vector.
FEATURE_DIM = 2048
#: The network's input side, in pixels.
INPUT_SIZE = 299
#: The resize inside the graph: TensorFlow 1.x ResizeBilinear, align_corners=False, no antialias.
RESIZE_MODE = "tf1-bilinear-asymmetric"
#: Name recorded in statistics metadata: which network and which layer the features come from.
FEATURE_EXTRACTOR = "inception-2015-12-05/pool_3"
#: Version of the graph fidkit builds from a weights file; part of the graph cache key, so a
#: change to the export (resize, normalization, opset) never reuses an old graph.
EXPORTER_VERSION = "1"
#: Images per batch when none is asked for. On a GPU: the best measured on an H200 with the exact CUDA
#: provider (batch 50/100/200/500: 1,856/1,993/2,094/1,761 images/s). On the CPU onnxruntime's arena grows with
#: the batch (peak 0.5 / 1.0 / 1.8 GB at batch 10 / 25 / 50) while the rate does not: 25 is the smallest that kept
#: the rate of 50 within noise in every run on 2 cores; 10 was up to 25% slower in some (docs/performance.md).
GPU_BATCH_SIZE = 200
CPU_BATCH_SIZE = 25


def default_batch_size(on_gpu: bool) -> int:
    """The batch size used when the options give none: one policy for every engine."""
    return GPU_BATCH_SIZE if on_gpu else CPU_BATCH_SIZE


def numerics(precision: str, *, tensorrt: bool) -> str:
    """The precision as recorded: TensorRT may compute in TF32 even when asked for float32, so what it makes is
    named apart and never stands in for (nor is replaced by) what the exact CPU and CUDA providers make."""
    return f"tensorrt-{precision}" if tensorrt else precision


def identity_fields(*, weights_sha256: str, engine: str, precision: str) -> dict[str, str]:
    """What decides this network's features: the same fields before it is built (the cache look-up) and after
    (its metadata), so that both name the same cache entry."""
    return {
        "extractor": EXTRACTOR_NAME,
        "feature_extractor": FEATURE_EXTRACTOR,
        "weights_sha256": str(weights_sha256),
        "resize_mode": RESIZE_MODE,
        "exporter_version": EXPORTER_VERSION,
        "engine": engine,
        "precision": precision,
    }


def extractor_metadata(extractor: Any, *, engine: str) -> dict[str, str]:
    """What produced the features, for statistics files and reports: the same keys for every engine.

    `extractor` has ``weights_sha256``, ``provider``, ``graph_sha256`` (``""`` where no graph runs) and
    ``precision``; ``exporter_version`` names the version of the resize and normalization every engine
    implements. The identity fields (:func:`identity_fields`) plus where it ran.
    """
    provider = str(extractor.provider)
    precision = numerics(str(extractor.precision), tensorrt=provider == "TensorrtExecutionProvider")
    return {
        **identity_fields(weights_sha256=str(extractor.weights_sha256), engine=engine, precision=precision),
        "provider": provider,
        "graph_sha256": str(extractor.graph_sha256),
    }
