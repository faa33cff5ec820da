"""The FID network: the 2015 TensorFlow Inception-v3, as one ONNX graph run by onnxruntime.

Importing this package imports neither torch nor onnxruntime; they load when a graph is exported
(torch) or a :class:`FeatureExtractor` is built (onnxruntime).
"""

from __future__ import annotations

from fidkit.inception.runtime import FeatureExtractor, Graph, ensure_graph
from fidkit.inception.spec import EXPORTER_VERSION, FEATURE_DIM, RESIZE_MODE
from fidkit.inception.weights import (
    ResolvedWeights,
    WeightsManifest,
    load_manifest,
    locate_weights,
    resolve_weights,
)

__all__ = [
    "FEATURE_DIM",
    "RESIZE_MODE",
    "EXPORTER_VERSION",
    "FeatureExtractor",
    "Graph",
    "ensure_graph",
    "resolve_weights",
    "locate_weights",
    "load_manifest",
    "WeightsManifest",
    "ResolvedWeights",
]
