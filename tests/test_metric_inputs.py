"""What fidkit.FID and the features files accept, checked where they are given: image ranges, compute()'s timeout,
the constructor's arguments, a checkpoint whose weights moved or whose reference is not computed yet, the format
version of a features file, and the messages of a few refusals.

No network is built here unless a test needs fidkit's own extractor (items about its weights file): the others
use a fake extractor of a few features.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import fidkit
from fidkit.errors import FidkitWarning, InputError, SmallSampleWarning


@pytest.fixture(autouse=True)
def _quiet_small_samples():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        warnings.filterwarnings("ignore", message=".*not the released", category=FidkitWarning)  # random weights
        yield


class Moments:
    """Each channel's mean and spread, and two pixels (dimension 12): a fake network that sees every level."""

    feature_dim, batch_size = 12, 64

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def __call__(self, batch):
        x = np.asarray(batch, dtype=np.float64)
        self.seen.append(np.array(batch))
        return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2)), x[:, 0, 0, :], x[:, -1, -1, :]],
                              axis=1).astype(np.float32)

    def metadata(self) -> dict:
        return {"feature_extractor": "moments", "weights_sha256": "none", "resize_mode": "none"}


def uint8_images(n: int, seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def fidkit_warnings(call) -> list[str]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in seen if issubclass(w.category, FidkitWarning)]


# ------------------------------------------------------------------- 1. [0, 1] images declared (-1, 1)


@pytest.mark.parametrize("value_range", [(-1, 1), (-1.0, 1.0), (-2, 2), (-0.5, 1)])
@pytest.mark.parametrize("shape", [(16, 32, 32, 3), (1, 5, 7, 1)])
def test_unit_images_declared_a_range_below_zero_warn_once_per_metric(value_range, shape) -> None:
    unit = np.random.default_rng(0).random(shape)  # in [0, 1): what sigmoid or ToTensor() gives
    metric = fidkit.FID(extractor=Moments(), value_range=value_range)
    first = fidkit_warnings(lambda: metric.update(unit))
    assert len(first) == 1, first
    lo, hi = value_range
    assert "look like [0, 1] images" in first[0] and "pass value_range=(0, 1)" in first[0]
    assert f"value_range=({lo:g}, {hi:g})" in first[0]
    black = int(np.rint(-lo / (hi - lo) * 255))
    assert f"becomes level {black}" in first[0]
    # What the network saw: no level below the one 0 maps to (the reason for the warning).
    assert metric._extractor.get().seen[0].min() >= black
    # Once per metric, whichever side or batch.
    assert fidkit_warnings(lambda: metric.update(np.random.default_rng(1).random(shape), real=True)) == []
    torch = pytest.importorskip("torch")
    other = fidkit.FID(extractor=Moments(), value_range=value_range)
    assert len(fidkit_warnings(lambda: other.update(torch.sigmoid(torch.randn(4, 3, 8, 8))))) == 1


def test_images_that_use_a_range_below_zero_do_not_warn() -> None:
    torch = pytest.importorskip("torch")
    metric = fidkit.FID(extractor=Moments(), value_range=(-1, 1))
    rng = np.random.default_rng(0)
    assert fidkit_warnings(lambda: metric.update(rng.uniform(-1, 1, (4, 8, 8, 3)))) == []  # really [-1, 1]
    assert fidkit_warnings(lambda: metric.update(torch.tanh(torch.randn(4, 3, 8, 8))))== []
    assert fidkit_warnings(lambda: metric.update(np.zeros((4, 8, 8, 3)))) == []  # constant mid-gray: plausible
    assert fidkit_warnings(lambda: metric.update(uint8_images(4, 0))) == []  # uint8 is used as it is
    assert metric._unit_range_warned is False
    # A range with little below 0 is one [0, 1] images belong to.
    for value_range in ((0, 1), (-0.1, 1), (-0.01, 1.01)):
        narrow = fidkit.FID(extractor=Moments(), value_range=value_range)
        assert fidkit_warnings(lambda: narrow.update(rng.random((4, 8, 8, 3)))) == []
