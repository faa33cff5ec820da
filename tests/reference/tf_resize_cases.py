"""Input images for checking fidkit's resize against TensorFlow's own ResizeBilinear kernel.

Pixel values come from integer arithmetic, not a random generator, so that the same bytes are
produced by any numpy version, in the environment that ran TensorFlow and in the test suite.
"""

from __future__ import annotations

import numpy as np

OUT_SIZE = 299

# name -> (batch, height, width): the sizes issue 3 names, MNIST's and CIFAR's, and an odd one.
SHAPES: dict[str, tuple[int, int, int]] = {
    "17x23": (2, 17, 23),
    "28x28": (2, 28, 28),
    "32x32": (2, 32, 32),
    "300x400": (1, 300, 400),
    "1x299": (1, 1, 299),
    "1024x1024": (1, 1024, 1024),
    "299x299": (1, 299, 299),
    "97x61": (1, 97, 61),
}


def case_images(name: str) -> np.ndarray:
    """Return the uint8 NHWC images of one case (``checkerboard-32`` or a name in `SHAPES`)."""
    if name == "checkerboard-32":
        yy, xx = np.indices((32, 32))
        board = ((yy + xx) % 2 * 255).astype(np.uint8)
        return np.repeat(board[None, :, :, None], 3, axis=3)
    batch, height, width = SHAPES[name]
    b, y, x, c = np.indices((batch, height, width, 3), dtype=np.int64)
    return ((b * 71 + y * 37 + x * 101 + c * 53 + (y * x) % 97) % 256).astype(np.uint8)


CASE_NAMES = ("checkerboard-32", *SHAPES)
