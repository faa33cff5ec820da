"""The TF 1.x bilinear resize: numpy reference vs the literal formula, and the ONNX nodes vs numpy.

The ONNX side runs the resize-only model built from the same nodes as the full graph, so these
tests are fast and need no network weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from fidkit.inception.resize import build_resize_model, tf_resize_indices
from fidkit.testing import tf_resize_bilinear_numpy

ort = pytest.importorskip("onnxruntime")


def _literal_resize(image: np.ndarray, out_size: int) -> np.ndarray:
    """weights.md's formula written out pixel by pixel in float32, as independently as possible."""
    height, width, channels = image.shape
    img = image.astype(np.float32)
    out = np.empty((out_size, out_size, channels), dtype=np.float32)
    scale_y = np.float32(height) / np.float32(out_size)
    scale_x = np.float32(width) / np.float32(out_size)
    for dy in range(out_size):
        sy = np.float32(dy) * scale_y
        y0 = int(math.floor(sy))
        y1 = min(y0 + 1, height - 1)
        wy = np.float32(sy - np.float32(y0))
        for dx in range(out_size):
            sx = np.float32(dx) * scale_x
            x0 = int(math.floor(sx))
            x1 = min(x0 + 1, width - 1)
            wx = np.float32(sx - np.float32(x0))
            top = img[y0, x0] + (img[y0, x1] - img[y0, x0]) * wx
            bottom = img[y1, x0] + (img[y1, x1] - img[y1, x0]) * wx
            out[dy, dx] = top + (bottom - top) * wy
    return out


def _checkerboard(size: int, cell: int = 1) -> np.ndarray:
    yy, xx = np.indices((size, size))
    board = (((yy // cell) + (xx // cell)) % 2 * 255).astype(np.uint8)
    return np.repeat(board[None, :, :, None], 3, axis=3)


@pytest.fixture(scope="module")
def resize_session():
    model = build_resize_model(299)
    assert model.ir_version <= 13  # onnxruntime 1.31 refuses IR 14
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _onnx_resize(session, images: np.ndarray) -> np.ndarray:
    return session.run(None, {"images": images})[0]


@pytest.mark.parametrize("in_size", [1, 2, 17, 32, 299, 300, 1024])
def test_indices_follow_the_formula(in_size: int) -> None:
    i0, i1, w = tf_resize_indices(in_size, 299)
    src = np.arange(299, dtype=np.float32) * (np.float32(in_size) / np.float32(299))
    np.testing.assert_array_equal(i0, np.floor(src).astype(np.int64))
    assert i0.min() == 0 and i0.max() <= in_size - 1
    np.testing.assert_array_equal(i1, np.minimum(i0 + 1, in_size - 1))
    assert w.dtype == np.float32 and w.min() >= 0.0 and w.max() < 1.0


@pytest.mark.parametrize("shape", [(5, 7), (1, 3), (4, 1), (8, 6)])
def test_numpy_reference_equals_literal_formula(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    out_size = 13  # small, so the pixel-by-pixel loop stays fast
    expected = _literal_resize(image, out_size)
    got = tf_resize_bilinear_numpy(image[None], out_size)[0]
    np.testing.assert_array_equal(got, expected)


CASES = {
    "checkerboard-32": _checkerboard(32)[0:1].repeat(2, axis=0),
    "17x23": np.random.default_rng(2).integers(0, 256, (2, 17, 23, 3), dtype=np.uint8),
    "300x400": np.random.default_rng(3).integers(0, 256, (1, 300, 400, 3), dtype=np.uint8),
    "1x299": np.random.default_rng(4).integers(0, 256, (1, 1, 299, 3), dtype=np.uint8),
    "1024x1024": np.random.default_rng(5).integers(0, 256, (1, 1024, 1024, 3), dtype=np.uint8),
    "299x299": np.random.default_rng(6).integers(0, 256, (2, 299, 299, 3), dtype=np.uint8),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnx_resize_matches_numpy_bit_for_bit(resize_session, case: str) -> None:
    images = CASES[case]
    got = _onnx_resize(resize_session, images)
    expected = tf_resize_bilinear_numpy(images)
    assert got.shape == (images.shape[0], 299, 299, 3) and got.dtype == np.float32
    assert np.max(np.abs(got - expected)) <= 1e-4  # the bound, on the 0..255 scale
    np.testing.assert_array_equal(got, expected)  # and in fact exact: same float32 operations


def test_identity_at_299(resize_session) -> None:
    images = CASES["299x299"]
    np.testing.assert_array_equal(_onnx_resize(resize_session, images), images.astype(np.float32))


def test_checkerboard_upscale_keeps_its_values(resize_session) -> None:
    # 32 -> 299 with asymmetric coordinates: output 0 samples input pixel 0 exactly, and the
    # last output samples src = 298 * 32/299 < 31, so it interpolates between pixels 31 and 31.
    got = _onnx_resize(resize_session, CASES["checkerboard-32"])[0, :, :, 0]
    assert got[0, 0] == 0.0 and got.min() >= 0.0 and got.max() <= 255.0
    assert len(np.unique(got)) > 2  # interpolated, not nearest


def test_resize_is_asymmetric_not_half_pixel() -> None:
    """onnxruntime's own Resize: close to ours in asymmetric mode, far from it in half-pixel mode."""
    from onnx import TensorProto, helper

    images = CASES["checkerboard-32"][:1].astype(np.float32)
    ours = tf_resize_bilinear_numpy(images)
    diffs = {}
    for mode in ("asymmetric", "half_pixel"):
        node = helper.make_node(
            "Resize", ["x", "", "", "sizes"], ["y"], mode="linear", coordinate_transformation_mode=mode
        )
        graph = helper.make_graph(
            [node],
            "resize",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 32, 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 299, 299, 3])],
            [helper.make_tensor("sizes", TensorProto.INT64, [4], [1, 299, 299, 3])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        diffs[mode] = float(np.max(np.abs(session.run(None, {"x": images})[0] - ours)))
    assert diffs["asymmetric"] < 0.05  # same sampling positions up to float32 rounding
    assert diffs["half_pixel"] > 10.0  # a different resize altogether


# --- against TensorFlow itself ------------------------------------------------------------------
# tests/reference/tf_resize_bilinear.json holds the sha256 of TensorFlow's own ResizeBilinear output
# (align_corners=False, half_pixel_centers=False: the op in the 2015 graph) for each input of
# tests/reference/tf_resize_cases.py, recorded with tests/reference/make_tf_resize_reference.py.
# TensorFlow is not needed to run this: the graph must produce the very same float32 bytes.

_REFERENCE_DIR = Path(__file__).parent / "reference"


def _tf_reference() -> dict:
    return json.loads((_REFERENCE_DIR / "tf_resize_bilinear.json").read_text(encoding="utf-8"))


def _load_tf_cases():
    spec = importlib.util.spec_from_file_location("tf_resize_cases", _REFERENCE_DIR / "tf_resize_cases.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_TF_CASES = _load_tf_cases()


def test_tf_reference_covers_every_case() -> None:
    assert sorted(_tf_reference()["cases"]) == sorted(_TF_CASES.CASE_NAMES)


@pytest.mark.parametrize("case", _TF_CASES.CASE_NAMES)
def test_onnx_resize_matches_tensorflow_bit_for_bit(resize_session, case: str) -> None:
    recorded = _tf_reference()["cases"][case]
    images = _TF_CASES.case_images(case)
    got = _onnx_resize(resize_session, images)
    assert list(got.shape) == recorded["shape"]
    # The sum says how far off a mismatch is; the hash says the bytes are TensorFlow's.
    assert float(got.astype(np.float64).sum()) == pytest.approx(recorded["sum"], rel=1e-12)
    assert hashlib.sha256(np.ascontiguousarray(got).astype("<f4").tobytes()).hexdigest() == recorded["sha256"]
