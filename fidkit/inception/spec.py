"""What the FID network is, as numbers and names every part of ``fidkit.inception`` agrees on.

No torch and no onnxruntime here: the runtime, the torch module and the exporter all import these.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FEATURE_DIM", "INPUT_SIZE", "RESIZE_MODE", "FEATURE_EXTRACTOR", "EXPORTER_VERSION", "extractor_metadata"]

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


def extractor_metadata(extractor: Any, *, engine: str) -> dict[str, str]:
    """What produced the features, for statistics files and reports: the same keys for every engine.

    `extractor` has ``weights_sha256``, ``resize_mode``, ``provider``, ``graph_sha256`` (``""`` where no
    graph runs) and ``precision``; ``exporter_version`` names the version of the resize and normalization
    every engine implements.
    """
    return {
        "feature_extractor": FEATURE_EXTRACTOR,
        "weights_sha256": str(extractor.weights_sha256),
        "resize_mode": str(extractor.resize_mode),
        "provider": str(extractor.provider),
        "exporter_version": EXPORTER_VERSION,
        "graph_sha256": str(extractor.graph_sha256),
        "engine": engine,
        "precision": str(extractor.precision),
    }
