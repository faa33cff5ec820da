"""Build the ONNX graph fidkit runs: uint8 NHWC images in, pool_3 features (and the other outputs) out.

The graph of a convention (:mod:`fidkit.inception.conventions`) is the concatenation of

1. the convention's resize to 299x299 on uint8 NHWC input of any batch, height and width: for ``tf`` the
   TensorFlow 1.x bilinear resize written with ONNX primitives (:mod:`fidkit.inception.resize`); for the others a
   separable linear map ``Wh @ X @ Ww^T`` whose two matrices, computed on the host for each input size, are graph
   inputs (``resize_rows`` ``(299, H)`` and ``resize_cols_t`` ``(W, 299)``);
2. the convention's normalization (``(x - 128) * 0.0078125`` for ``tf``) and the NHWC -> NCHW transpose;
3. the network of :mod:`fidkit.inception.network`, exported with torch's TorchScript-based
   exporter, which folds each BatchNorm into the convolution before it, with every output of
   :data:`~fidkit.inception.network.OUTPUT_DIMS` (pool_3 is named ``features``); a run fetches only what it
   needs, and the others cost a few small reductions and one 2048 x 1008 product per image.

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

from fidkit.inception.conventions import convention as convention_named
from fidkit.inception.network import OUTPUT_DIMS, build_network
from fidkit.inception.resize import resize_nodes
from fidkit.inception.spec import GRAPH_OUTPUTS, INPUT_SIZE, RESIZE_COLS, RESIZE_ROWS
from fidkit.inception.weights import load_state_dict

__all__ = ["OPSET", "IR_VERSION", "INPUT_NAME", "OUTPUT_NAME", "export_network", "build_graph", "export_graph"]

logger = logging.getLogger(__name__)

#: ONNX opset of the graph (supported by onnxruntime >= 1.14).
OPSET = 17
#: IR version written into the file. onnx 1.23 would write 14, which onnxruntime 1.31 refuses;
#: 8 is the version that goes with opset 17 and is read by every onnxruntime since 1.10.
IR_VERSION = 8
INPUT_NAME = "images"
#: The pool_3 output's name in the graph.
OUTPUT_NAME = GRAPH_OUTPUTS["pool_3"]


class _EveryOutput(torch.nn.Module):
    """The network with every output of OUTPUT_DIMS as a tuple, in that order (what the exporter traces)."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.network.outputs(x, OUTPUT_DIMS)
        return tuple(outputs[name] for name in OUTPUT_DIMS)


def export_network(state_dict: dict[str, torch.Tensor]) -> onnx.ModelProto:
    """Export the bare network (float32 NCHW 299x299, normalized) to an in-memory ONNX model with every output."""
    model = _EveryOutput(build_network(state_dict)).eval()
    example = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE, dtype=torch.float32)
    names = [GRAPH_OUTPUTS[name] for name in OUTPUT_DIMS]
    buffer = io.BytesIO()
    # Traced under the caller's CPU autocast (a bf16 training loop), the graph would hold bfloat16 operations that
    # onnxruntime refuses: the graph is float32 whatever the caller runs under.
    with warnings.catch_warnings(), torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
        # The TorchScript exporter is deprecated in favour of torch.export, which needs
        # onnxscript (not a dependency); it still exports this static network correctly.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            input_names=["normalized"],
            output_names=names,
            dynamic_axes={"normalized": {0: "batch"}, **{name: {0: "batch"} for name in names}},
            opset_version=OPSET,
            do_constant_folding=True,  # folds each BatchNorm into its convolution
        )
    return onnx.load_from_string(buffer.getvalue())


def _constant(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=np.float32), name)


def _preprocess(convention_name: str, net_input: str) -> tuple[list, list, list]:
    """Nodes, initializers and extra graph inputs from uint8 NHWC ``images`` to the normalized NCHW `net_input`."""
    convention = convention_named(convention_name)
    inputs: list = []
    if convention.name == "tf":
        # TF's exact arithmetic on uint8 NHWC, then (x - 128) * 0.0078125 and the transpose, as since version 1.
        nodes, inits = resize_nodes(INPUT_NAME, "pre/resized", INPUT_SIZE, prefix="pre/")
        resized, layout_done = "pre/resized", False  # NHWC until normalized, as in every version
    else:
        # Wh @ X @ Ww^T on float32 NCHW: the width pass first, then the height pass, as PIL and torch do it.
        nodes = [
            helper.make_node("Cast", [INPUT_NAME], ["pre/pixels"], to=TensorProto.FLOAT),
            helper.make_node("Transpose", ["pre/pixels"], ["pre/pixels_nchw"], perm=[0, 3, 1, 2]),
        ]
        inits = []
        source = "pre/pixels_nchw"
        if convention.input_divisor != 1.0:
            inits.append(_constant("pre/divisor", convention.input_divisor))
            nodes.append(helper.make_node("Div", [source, "pre/divisor"], ["pre/divided"]))
            source = "pre/divided"
        nodes += [
            helper.make_node("MatMul", [source, RESIZE_COLS], ["pre/width_pass"]),
            helper.make_node("MatMul", [RESIZE_ROWS, "pre/width_pass"], ["pre/resized_nchw"]),
        ]
        resized, layout_done = "pre/resized_nchw", True
        if convention.clip is not None:
            inits += [_constant("pre/clip_low", convention.clip[0]), _constant("pre/clip_high", convention.clip[1])]
            nodes.append(helper.make_node("Clip", [resized, "pre/clip_low", "pre/clip_high"], ["pre/clipped"]))
            resized = "pre/clipped"
        inputs = [
            helper.make_tensor_value_info(RESIZE_ROWS, TensorProto.FLOAT, [INPUT_SIZE, "height"]),
            helper.make_tensor_value_info(RESIZE_COLS, TensorProto.FLOAT, ["width", INPUT_SIZE]),
        ]
    inits += [_constant("pre/mean", convention.offset), _constant("pre/scale", convention.scale)]
    normalized = net_input if layout_done else "pre/normalized_nhwc"
    nodes += [
        helper.make_node("Sub", [resized, "pre/mean"], ["pre/centred"]),
        helper.make_node("Mul", ["pre/centred", "pre/scale"], [normalized]),
    ]
    if not layout_done:
        nodes.append(helper.make_node("Transpose", [normalized], [net_input], perm=[0, 3, 1, 2]))
    return nodes, inits, inputs


def build_graph(
    state_dict: dict[str, torch.Tensor], *, convention: str = "tf", metadata: dict[str, str] | None = None
) -> onnx.ModelProto:
    """Return the full graph of `convention`: uint8 ``(B, H, W, 3)`` -> float32 ``(B, 2048)`` features and the
    other outputs of :data:`~fidkit.inception.spec.GRAPH_OUTPUTS`.

    Parameters
    ----------
    state_dict : dict
        Weights of :class:`fidkit.inception.network.FIDInceptionV3`.
    convention : str
        The preprocessing (:mod:`fidkit.inception.conventions`); ``"tf"`` needs no input besides the images, the
        others take the two resize matrices of each input size as inputs.
    metadata : dict, optional
        Strings stored in the model's ``metadata_props`` (weights sha256, exporter version).
    """
    network = export_network(state_dict)
    net_graph = network.graph
    net_input = net_graph.input[0].name
    pre_nodes, pre_inits, extra_inputs = _preprocess(convention, net_input)
    graph = helper.make_graph(
        pre_nodes + list(net_graph.node),
        "fid_inception_v3_2015_12_05",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", "height", "width", 3]), *extra_inputs],
        [
            helper.make_tensor_value_info(GRAPH_OUTPUTS[name], TensorProto.FLOAT, ["batch", width])
            for name, width in OUTPUT_DIMS.items()
        ],
        pre_inits + list(net_graph.initializer),
        value_info=list(net_graph.value_info),
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="fidkit",
        doc_string=f"FID Inception-v3 (TF inception-2015-12-05, pool_3 and the other outputs) with the {convention!r} "
        "convention's resize to 299x299 and normalization inside the graph.",
    )
    model.ir_version = IR_VERSION
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(model)
    return model


def export_graph(
    weights_path: str | os.PathLike,
    target: str | os.PathLike,
    *,
    convention: str = "tf",
    metadata: dict[str, str] | None = None,
) -> Path:
    """Load `weights_path` strictly, build the full graph of `convention` and save it to `target` (not atomic).

    Callers that publish into a cache wrap this in :func:`fidkit._fs.atomic_write`.
    """
    state_dict = load_state_dict(weights_path)
    model = build_graph(state_dict, convention=convention, metadata=metadata)
    target = Path(target)
    target.write_bytes(model.SerializeToString())
    logger.debug("exported the ONNX graph of %s to %s", weights_path, target)
    return target
