"""Record TensorFlow's ResizeBilinear output for each case in ``tf_resize_cases`` (sha256 of the bytes).

Not part of the test suite: TensorFlow is not a dependency. Run it in an environment that has
TensorFlow (any 2.x CPU build; its legacy ``ResizeBilinear`` kernel, ``align_corners=False``,
``half_pixel_centers=False``, is the op the 2015 Inception graph applies to its input)::

    python tests/reference/make_tf_resize_reference.py > tests/reference/tf_resize_bilinear.json

The test ``tests/test_resize.py::test_onnx_resize_matches_tensorflow`` then checks that fidkit's
ONNX graph produces the same float32 bytes.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tf_resize_cases import CASE_NAMES, OUT_SIZE, case_images  # noqa: E402


def main() -> None:
    import tensorflow as tf

    cases = {}
    for name in CASE_NAMES:
        images = tf.cast(tf.constant(case_images(name)), tf.float32)  # the graph's Cast node
        resized = tf.raw_ops.ResizeBilinear(
            images=images, size=[OUT_SIZE, OUT_SIZE], align_corners=False, half_pixel_centers=False
        ).numpy()
        assert resized.dtype == np.float32
        cases[name] = {
            "shape": list(resized.shape),
            "sha256": hashlib.sha256(np.ascontiguousarray(resized).astype("<f4").tobytes()).hexdigest(),
            "sum": float(resized.astype(np.float64).sum()),
        }
    record = {
        "what": "tf.raw_ops.ResizeBilinear(align_corners=False, half_pixel_centers=False) on float32 inputs",
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "cases": cases,
    }
    json.dump(record, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
