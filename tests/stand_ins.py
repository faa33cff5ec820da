"""Stand-ins that the tests of several subjects share: for the network (cheap, deterministic, picklable for
decode workers and Ray actors) and for small inputs (images, statistics, a features file)."""

from __future__ import annotations

from pathlib import Path

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


class FullIdentityMeanColour:
    """Mean and spread of each channel (dimension 6), like :class:`MeanColour`, but under every identity field
    fidkit compares (convention, engine, precision, ...): ``fields`` is the metadata, which a test can change;
    every batch it is given is kept in ``calls``."""

    feature_dim, batch_size, thread_safe = 6, 16, True

    def __init__(self, weights_sha256: str = "f" * 64, **fields: str) -> None:
        self.fields = {"feature_extractor": "fake", "weights_sha256": weights_sha256, "resize_mode": "none",
                       "convention": "tf", "exporter_version": "1", "engine": "numpy", "precision": "exact",
                       "provider": "cpu", **fields}
        self.calls: list[object] = []

    def __call__(self, batch):
        self.calls.append(batch)
        x = np.asarray(batch, dtype=np.float32)
        return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=1).astype(np.float32)

    def metadata(self) -> dict:
        return dict(self.fields)


def noise_images(n: int, seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def small_stats(seed: int = 0, *, n: int = 20, dim: int = 8, metadata=None):
    from fidkit.stats import Stats

    rng = np.random.default_rng(seed)
    return Stats.from_features(rng.normal(size=(n, dim)), metadata=dict(metadata or {"created": "now"}))


def _features_file(path: Path, n: int, dim: int, *, scale: float = 1.0) -> Path:
    from fidkit.features import Features

    rng = np.random.default_rng(n)
    Features(
        rng.normal(size=(n, dim)) * scale, metadata={"feature_extractor": "test"},
        logits=rng.normal(size=(n, 10)), spatial=rng.normal(size=(n, dim + 4)),
    ).save(path)
    return path
