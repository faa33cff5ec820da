"""Build the one ONNX graph fidkit runs: uint8 NHWC images in, 2048-d pool_3 features out.

The graph is the concatenation of

1. the TensorFlow 1.x bilinear resize to 299x299, written with ONNX primitives
   (:mod:`fidkit.inception.resize`), on uint8 NHWC input of any batch, height and width;
2. the normalization ``(x - 128) * 0.0078125`` and the NHWC -> NCHW transpose;
3. the network of :mod:`fidkit.inception.network`, exported with torch's TorchScript-based
   exporter, which folds each BatchNorm into the convolution before it.

The network is exported with torch (which knows how to fold and serialize it) and the
preprocessing is written directly in ONNX (whose arithmetic has to match TensorFlow bit for bit,
which a traced torch resize would not guarantee). Export takes a few seconds and happens once per
weights file: :func:`fidkit.inception.runtime.ensure_graph` caches the result.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from fidkit.inception.network import build_network
from fidkit.inception.resize import resize_nodes
from fidkit.inception.spec import FEATURE_DIM, INPUT_SIZE
from fidkit.inception.weights import load_state_dict

__all__ = ["OPSET", "IR_VERSION", "INPUT_NAME", "OUTPUT_NAME", "export_network", "build_graph", "export_graph"]

logger = logging.getLogger(__name__)

#: ONNX opset of the graph (supported by onnxruntime >= 1.14).
OPSET = 17
#: IR version written into the file. onnx 1.23 would write 14, which onnxruntime 1.31 refuses;
#: 8 is the version that goes with opset 17 and is read by every onnxruntime since 1.10.
IR_VERSION = 8
INPUT_NAME = "images"
OUTPUT_NAME = "features"
#: Normalization of the 2015 graph: (x - 128) / 128, not x / 127.5 - 1.
PIXEL_MEAN = 128.0
PIXEL_SCALE = 0.0078125


def export_network(state_dict: dict[str, torch.Tensor]) -> onnx.ModelProto:
    """Export the bare network (float32 NCHW 299x299, normalized) to an in-memory ONNX model."""
    model = build_network(state_dict)
    example = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE, dtype=torch.float32)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export, which needs
        # onnxscript (not a dependency); it still exports this static network correctly.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            input_names=["normalized"],
            output_names=[OUTPUT_NAME],
            dynamic_axes={"normalized": {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,  # folds each BatchNorm into its convolution
        )
    return onnx.load_from_string(buffer.getvalue())


def build_graph(
    state_dict: dict[str, torch.Tensor], *, metadata: dict[str, str] | None = None
) -> onnx.ModelProto:
    """Return the full graph: uint8 ``(B, H, W, 3)`` -> float32 ``(B, 2048)``.

    Parameters
    ----------
    state_dict : dict
        Weights of :class:`fidkit.inception.network.FIDInceptionV3`.
    metadata : dict, optional
        Strings stored in the model's ``metadata_props`` (weights sha256, exporter version).
    """
    network = export_network(state_dict)
    net_graph = network.graph
    net_input = net_graph.input[0].name

    resize, resize_inits = resize_nodes(INPUT_NAME, "pre/resized", INPUT_SIZE, prefix="pre/")
    pre_inits = [
        numpy_helper.from_array(np.array(PIXEL_MEAN, dtype=np.float32), "pre/mean"),
        numpy_helper.from_array(np.array(PIXEL_SCALE, dtype=np.float32), "pre/scale"),
    ]
    normalize = [
        helper.make_node("Sub", ["pre/resized", "pre/mean"], ["pre/centred"]),
        helper.make_node("Mul", ["pre/centred", "pre/scale"], ["pre/normalized_nhwc"]),
        helper.make_node("Transpose", ["pre/normalized_nhwc"], [net_input], perm=[0, 3, 1, 2]),
    ]
    graph = helper.make_graph(
        resize + normalize + list(net_graph.node),
        "fid_inception_v3_2015_12_05",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", "height", "width", 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", FEATURE_DIM])],
        resize_inits + pre_inits + list(net_graph.initializer),
        value_info=list(net_graph.value_info),
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="fidkit",
        doc_string="FID Inception-v3 (TF inception-2015-12-05, pool_3) with TF1.x bilinear resize "
        "to 299x299 and (x - 128) / 128 normalization inside the graph.",
    )
    model.ir_version = IR_VERSION
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(model)
    return model


def export_graph(
    weights_path: str | os.PathLike, target: str | os.PathLike, *, metadata: dict[str, str] | None = None
) -> Path:
    """Load `weights_path` strictly, build the full graph and save it to `target` (not atomic).

    Callers that publish into a cache wrap this in :func:`fidkit._fs.atomic_write`.
    """
    state_dict = load_state_dict(weights_path)
    model = build_graph(state_dict, metadata=metadata)
    target = Path(target)
    target.write_bytes(model.SerializeToString())
    logger.debug("exported the ONNX graph of %s to %s", weights_path, target)
    return target
