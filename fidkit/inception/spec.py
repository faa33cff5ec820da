"""What the FID network is, as numbers and names every part of ``fidkit.inception`` agrees on.

No torch and no onnxruntime here: the runtime, the torch module and the exporter all import these.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Iterable
from typing import Any

from fidkit.errors import ResourceError

__all__ = [
    "out_of_memory",
    "network_memory_error",
    "EXTRACTOR_NAME",
    "FEATURE_DIM",
    "INPUT_SIZE",
    "N_CLASSES",
    "SPATIAL_CHANNELS",
    "OUTPUT_DIMS",
    "extractor_outputs",
    "RESIZE_MODE",
    "FEATURE_EXTRACTOR",
    "EXPORTER_VERSION",
    "GRAPH_OUTPUTS",
    "RESIZE_ROWS",
    "RESIZE_COLS",
    "DIMS",
    "feature_output",
    "feature_extractor_name",
    "check_dims",
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
#: Number of classes of the 2015 graph's classifier (1000 ImageNet classes + 8 unused).
N_CLASSES = 1008
#: Channels of ``mixed_6/conv`` (17 x 17) kept for sFID, as the ADM evaluator does (``spatial[..., :7]``).
SPATIAL_CHANNELS = 7
#: Every output of the network (:meth:`fidkit.inception.network.FIDInceptionV3.outputs`) and its width per image.
OUTPUT_DIMS: dict[str, int] = {
    "pool_3": FEATURE_DIM,
    "logits": N_CLASSES,
    "spatial": SPATIAL_CHANNELS * 17 * 17,
    "dims_64": 64,
    "dims_192": 192,
    "dims_768": 768,
}
#: The resize inside the graph: TensorFlow 1.x ResizeBilinear, align_corners=False, no antialias.
RESIZE_MODE = "tf1-bilinear-asymmetric"
#: Name recorded in statistics metadata: which network and which layer the features come from.
FEATURE_EXTRACTOR = "inception-2015-12-05/pool_3"
#: Version of the graph fidkit builds from a weights file; part of the graph cache key, so a
#: change to the export (resize, normalization, opset) never reuses an old graph. Version 2: every output of
#: the network (logits, spatial, the --dims means) beside pool_3, and the conventions.
EXPORTER_VERSION = "2"
#: The graph's output names, by network output (:data:`fidkit.inception.network.OUTPUT_DIMS`).
GRAPH_OUTPUTS = {
    "pool_3": "features",
    "logits": "logits",
    "spatial": "spatial",
    "dims_64": "dims_64",
    "dims_192": "dims_192",
    "dims_768": "dims_768",
}
#: Graph inputs of the conventions that resize by two matrices: ``Wh`` ``(299, H)`` and ``Ww^T`` ``(W, 299)``.
RESIZE_ROWS = "resize_rows"
RESIZE_COLS = "resize_cols_t"
#: pytorch-fid's ``--dims``: the feature width and the TF layer whose spatial mean the features are (2048 is
#: ``pool_3`` itself, the FID of the literature; the others come from the same graph at no cost to it).
DIMS = {2048: "pool_3", 768: "mixed_7/mean", 192: "pool_1/mean", 64: "pool/mean"}
#: Images per batch when none is asked for. On a GPU: the best measured on an H200 with the exact CUDA
#: provider (batch 50/100/200/500: 1,856/1,993/2,094/1,761 images/s). On the CPU onnxruntime's arena grows with
#: the batch (peak 0.5 / 1.0 / 1.8 GB at batch 10 / 25 / 50) while the rate does not: 25 is the smallest that kept
#: the rate of 50 within noise in every run on 2 cores; 10 was up to 25% slower in some (docs/performance.md).
GPU_BATCH_SIZE = 200
CPU_BATCH_SIZE = 25


def check_dims(dims: object) -> int:
    """`dims` as one of :data:`DIMS`, else an InputError naming them."""
    from fidkit.errors import InputError

    # Any integer (a numpy one too, as batch_size, limit and threads take), or its text (--dims 64).
    if isinstance(dims, numbers.Integral) and not isinstance(dims, bool):
        dims = int(dims)
    if not isinstance(dims, (int, str)) or str(dims).strip() not in {str(d) for d in DIMS}:
        raise InputError(f"dims must be one of {', '.join(str(d) for d in DIMS)} (pytorch-fid's choices), not {dims!r}")
    return int(str(dims).strip())


def feature_output(dims: int) -> str:
    """The network output (:data:`fidkit.inception.network.OUTPUT_DIMS`) that gives features of width `dims`."""
    return "pool_3" if dims == FEATURE_DIM else f"dims_{dims}"


def extractor_outputs(names: Iterable[str], dims: int) -> dict[str, str]:
    """The network output behind each extractor output in `names`: ``"features"`` is the layer of `dims`,
    ``"logits"`` and ``"spatial"`` are themselves. An InputError names the valid outputs otherwise."""
    from fidkit.errors import InputError

    chosen: dict[str, str] = {}
    for name in names:
        if name == "features":
            chosen[name] = feature_output(dims)
        elif name in ("logits", "spatial"):
            chosen[name] = name
        else:
            raise InputError(f"unknown output {name!r}: the Inception extractor gives features, logits and spatial")
    return chosen


def feature_extractor_name(dims: int) -> str:
    """What the features are, as recorded in metadata: ``inception-2015-12-05/pool_3`` at 2048."""
    return f"inception-2015-12-05/{DIMS[dims]}"


def default_batch_size(on_gpu: bool) -> int:
    """The batch size used when the options give none: one policy for every engine."""
    return GPU_BATCH_SIZE if on_gpu else CPU_BATCH_SIZE


def numerics(precision: str, *, tensorrt: bool) -> str:
    """The precision as recorded: TensorRT may compute in TF32 even when asked for float32, so what it makes is
    named apart and never stands in for (nor is replaced by) what the exact CPU and CUDA providers make."""
    return f"tensorrt-{precision}" if tensorrt else precision


def identity_fields(
    *, weights_sha256: str, engine: str, precision: str, convention: str = "tf", dims: int = FEATURE_DIM
) -> dict[str, str]:
    """What decides this network's features: the same fields before it is built (the cache look-up) and after
    (its metadata), so that both name the same cache entry. The convention names the preprocessing (its resize
    mode is recorded too, for readers that know only that field); `dims` the layer."""
    from fidkit.inception.conventions import convention as convention_named

    chosen = convention_named(convention)
    return {
        "extractor": EXTRACTOR_NAME,
        "feature_extractor": feature_extractor_name(dims),
        "weights_sha256": str(weights_sha256),
        "convention": chosen.name,
        "resize_mode": chosen.resize_mode,
        "exporter_version": EXPORTER_VERSION,
        "engine": engine,
        "precision": precision,
    }


def extractor_metadata(extractor: Any, *, engine: str) -> dict[str, str]:
    """What produced the features, for statistics files and reports: the same keys for every engine.

    `extractor` has ``weights_sha256``, ``provider``, ``graph_sha256`` (``""`` where no graph runs),
    ``precision``, ``convention`` and ``feature_dim``; ``exporter_version`` names the version of the resize and
    normalization every engine implements. The identity fields (:func:`identity_fields`) plus where it ran.
    """
    provider = str(extractor.provider)
    precision = numerics(str(extractor.precision), tensorrt=provider == "TensorrtExecutionProvider")
    return {
        **identity_fields(
            weights_sha256=str(extractor.weights_sha256),
            engine=engine,
            precision=precision,
            convention=str(extractor.convention),
            dims=int(extractor.feature_dim),
        ),
        "provider": provider,
        "graph_sha256": str(extractor.graph_sha256),
    }


# How onnxruntime (its CPU arena, std::bad_alloc) and the CUDA, cuDNN and cuBLAS libraries under it word an
# allocation that failed. onnxruntime raises its own exception types (Fail, RuntimeException) for all of them.
_OUT_OF_MEMORY = re.compile(
    r"failed to allocate memory|bad_alloc|out of memory|CUDNN_STATUS_ALLOC_FAILED|cudaErrorMemoryAllocation|"
    r"CUBLAS_STATUS_ALLOC_FAILED",
    re.IGNORECASE,
)


def out_of_memory(exc: BaseException | str) -> str | None:
    """What says that memory ran out in `exc` (an exception or its text), or None when nothing does."""
    if isinstance(exc, MemoryError):
        return "MemoryError"
    found = _OUT_OF_MEMORY.search(str(exc))
    return found.group(0) if found is not None else None

def network_memory_error(
    exc: BaseException, on_gpu: bool, batch_size: int, n_images: int, size: tuple[int, int], provider: str
) -> ResourceError:
    """The error for memory running out in a forward pass (either engine): the batch size (and the image size)
    is what the user can lower."""
    where = "GPU memory" if on_gpu else "memory"
    height, width = size
    return ResourceError(
        f"{where} ran out in the network at batch size {batch_size} ({n_images} images of {height}x{width} pixels "
        f"on {provider}: {out_of_memory(exc)}); pass a smaller batch size (--batch-size N, batch_size=N) or free "
        f"{where} (other processes, other models in this one)"
    )
