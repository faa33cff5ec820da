"""Stand-ins for the network that tests share: cheap, deterministic, picklable (decode workers, Ray actors)."""

from __future__ import annotations

import numpy as np


class MeanColour:
    """Each image's mean colour and its spread, dimension 6: enough to tell images apart, no network.

    `weights_sha256` and `name` are its identity (``metadata()``), which tests vary to stand for other networks.
    """

    feature_dim = 6
    batch_size = 16
    thread_safe = True

    def __init__(self, weights_sha256: str = "c" * 64, name: str = "mean-colour") -> None:
        self.weights_sha256 = weights_sha256
        self.name = name

    def __call__(self, images) -> np.ndarray:
        flat = np.asarray(images, dtype=np.float32).reshape(len(images), -1, 3)
        return np.concatenate([flat.mean(axis=1), flat.std(axis=1)], axis=1).astype(np.float32)

    def metadata(self) -> dict:
        return {"feature_extractor": self.name, "weights_sha256": self.weights_sha256, "resize_mode": "none"}
