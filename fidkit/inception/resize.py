"""The TensorFlow 1.x bilinear resize, as ONNX nodes and as plain numpy.

TensorFlow 1.x ``ResizeBilinear(align_corners=False)``, which the 2015 Inception graph applies to
its input, maps output index ``d`` to the source coordinate ``src = d * scale`` with
``scale = float32(in) / float32(out)`` (no half-pixel centres), takes ``i0 = floor(src)``,
``i1 = min(i0 + 1, in - 1)``, ``w = src - i0``, and interpolates along the width first, then the
height, each as ``a + (b - a) * w`` in float32.

onnxruntime's own ``Resize(mode="linear", coordinate_transformation_mode="asymmetric")`` does not
reproduce this: it divides by a float32 scale (``d / (out / in)``) and blends as
``a * (1 - w) + b * w``, which was measured to be off by up to 7e-4 gray levels at 32->299 and
2.2e-2 at 1024->299. So the graph builds the resize from the same arithmetic: index and weight
tensors computed from the input's shape, then Gather, Sub, Mul, Add. Every step is a single
correctly rounded float32 operation, so the graph agrees with :func:`fidkit.testing.tf_resize_bilinear_numpy`
bit for bit.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["tf_resize_indices", "resize_nodes", "build_resize_model"]


def tf_resize_indices(in_size: int, out_size: int) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """Return ``(i0, i1, w)`` of the TF 1.x asymmetric bilinear resize along one axis.

    All arithmetic in float32, in TensorFlow's order.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.arange(out_size, dtype=np.float32) * scale
    floor = np.floor(src)
    i0 = floor.astype(np.int64)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w = (src - floor).astype(np.float32)
    return i0, i1, w


def resize_nodes(input_name: str, output_name: str, out_size: int = 299, prefix: str = "tf_resize/"):
    """ONNX nodes and initializers resizing uint8 NHWC ``input_name`` to float32 ``output_name``.

    The input may have any batch, height and width; the index and weight tensors are computed
    inside the graph from the input's shape. Gathers run on uint8 (exact) before the cast, so the
    float32 tensors are only as large as the output needs.

    Returns
    -------
    nodes : list of onnx.NodeProto
    initializers : list of onnx.TensorProto
    """
    from onnx import TensorProto, helper, numpy_helper

    def name(suffix: str) -> str:
        return prefix + suffix

    initializers = [
        numpy_helper.from_array(np.arange(out_size, dtype=np.float32), name("out_index")),
        numpy_helper.from_array(np.array(out_size, dtype=np.float32), name("out_size")),
        numpy_helper.from_array(np.array(1, dtype=np.int64), name("one")),
        numpy_helper.from_array(np.array(1, dtype=np.int64), name("axis_h")),
        numpy_helper.from_array(np.array(2, dtype=np.int64), name("axis_w")),
        numpy_helper.from_array(np.array([out_size, 1], dtype=np.int64), name("col_shape")),
        numpy_helper.from_array(np.array([out_size, 1, 1], dtype=np.int64), name("plane_shape")),
    ]
    nodes = [helper.make_node("Shape", [input_name], [name("shape")])]

    def axis_tables(axis: str) -> None:
        # src = d * (float(in) / float(out)); i0 = floor(src); i1 = min(i0 + 1, in - 1); w = src - i0
        n = name(f"{axis}_in")
        nodes.extend([
            helper.make_node("Gather", [name("shape"), name(f"axis_{axis}")], [n], axis=0),
            helper.make_node("Cast", [n], [name(f"{axis}_in_f")], to=TensorProto.FLOAT),
            helper.make_node("Div", [name(f"{axis}_in_f"), name("out_size")], [name(f"{axis}_scale")]),
            helper.make_node("Mul", [name("out_index"), name(f"{axis}_scale")], [name(f"{axis}_src")]),
            helper.make_node("Floor", [name(f"{axis}_src")], [name(f"{axis}_floor")]),
            helper.make_node("Sub", [name(f"{axis}_src"), name(f"{axis}_floor")], [name(f"{axis}_w")]),
            helper.make_node("Cast", [name(f"{axis}_floor")], [name(f"{axis}_i0")], to=TensorProto.INT64),
            helper.make_node("Add", [name(f"{axis}_i0"), name("one")], [name(f"{axis}_i0_plus")]),
            helper.make_node("Sub", [n, name("one")], [name(f"{axis}_last")]),
            helper.make_node("Min", [name(f"{axis}_i0_plus"), name(f"{axis}_last")], [name(f"{axis}_i1")]),
        ])

    axis_tables("w")
    axis_tables("h")
    nodes.extend([
        # Width pass on every input row.
        helper.make_node("Gather", [input_name, name("w_i0")], [name("left_u8")], axis=2),
        helper.make_node("Gather", [input_name, name("w_i1")], [name("right_u8")], axis=2),
        helper.make_node("Cast", [name("left_u8")], [name("left")], to=TensorProto.FLOAT),
        helper.make_node("Cast", [name("right_u8")], [name("right")], to=TensorProto.FLOAT),
        helper.make_node("Reshape", [name("w_w"), name("col_shape")], [name("w_col")]),
        helper.make_node("Sub", [name("right"), name("left")], [name("row_delta")]),
        helper.make_node("Mul", [name("row_delta"), name("w_col")], [name("row_step")]),
        helper.make_node("Add", [name("left"), name("row_step")], [name("rows")]),
        # Height pass between the interpolated rows.
        helper.make_node("Gather", [name("rows"), name("h_i0")], [name("top")], axis=1),
        helper.make_node("Gather", [name("rows"), name("h_i1")], [name("bottom")], axis=1),
        helper.make_node("Reshape", [name("h_w"), name("plane_shape")], [name("h_plane")]),
        helper.make_node("Sub", [name("bottom"), name("top")], [name("col_delta")]),
        helper.make_node("Mul", [name("col_delta"), name("h_plane")], [name("col_step")]),
        helper.make_node("Add", [name("top"), name("col_step")], [output_name]),
    ])
    return nodes, initializers


def build_resize_model(out_size: int = 299, *, opset: int = 17, ir_version: int = 8):
    """A standalone ONNX model: uint8 ``(B, H, W, C)`` -> float32 ``(B, out_size, out_size, C)``.

    The same nodes as the full graph's resize; used by tests (fast, no network) and for inspection.
    """
    from onnx import TensorProto, helper

    nodes, initializers = resize_nodes("images", "resized", out_size)
    graph = helper.make_graph(
        nodes,
        "tf1_bilinear_resize",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", "height", "width", "channels"])],
        [helper.make_tensor_value_info("resized", TensorProto.FLOAT, ["batch", out_size, out_size, "channels"])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    return model
