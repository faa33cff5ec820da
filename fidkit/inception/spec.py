"""What the FID network is, as numbers and names every part of ``fidkit.inception`` agrees on.

No torch and no onnxruntime here: the runtime, the torch module and the exporter all import these.
"""

from __future__ import annotations

__all__ = ["FEATURE_DIM", "INPUT_SIZE", "RESIZE_MODE", "FEATURE_EXTRACTOR", "EXPORTER_VERSION"]

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
