"""Inception Score: torch-fidelity's numbers on the same logits, the plain formula, limits and edge cases."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from fidkit.errors import InputError
from fidkit.metrics import InceptionScoreResult, inception_score

_LOADER = Path(__file__).parent / "reference" / "torch_fidelity_loader.py"
CLASSES = 1008


def torch_fidelity_module(name: str):
    spec = importlib.util.spec_from_file_location("torch_fidelity_loader", _LOADER)
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    return loader.torch_fidelity_module(name)


def random_logits(seed: int, n_rows: int, classes: int = CLASSES, scale: float = 4.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # A few dominant classes per row, like a classifier that is fairly sure of itself.
    logits = rng.standard_normal((n_rows, classes)) * scale
    logits[np.arange(n_rows), rng.integers(0, classes, n_rows)] += 3 * scale
    return logits.astype(np.float32)


def plain_inception_score(logits: np.ndarray, splits: int) -> list[float]:
    """improved-gan's formula in float64 on consecutive splits, written out plainly."""
    rows = logits.astype(np.float64)
    probabilities = np.exp(rows - rows.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    scores = []
    n_rows = len(rows)
    for index in range(splits):
        part = probabilities[index * n_rows // splits : (index + 1) * n_rows // splits]
        marginal = part.mean(axis=0, keepdims=True)
        kl = np.sum(part * (np.log(part) - np.log(marginal)), axis=1)
        scores.append(math.exp(kl.mean()))
    return scores


def test_equals_torch_fidelity_on_the_same_logits():
    metric_isc = torch_fidelity_module("metric_isc")
    import torch

    logits = random_logits(0, 1234)
    theirs = metric_isc.isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=True, rng_seed=2020)
    ours = inception_score(logits, sampling="torch-fidelity")
    assert ours.mean == pytest.approx(theirs["inception_score_mean"], rel=1e-12, abs=0)
    assert ours.std == pytest.approx(theirs["inception_score_std"], rel=1e-9, abs=0)
    assert (ours.splits, ours.n, ours.classes, ours.seed) == (10, 1234, CLASSES, 2020)


def test_equals_torch_fidelity_with_other_splits_and_seed():
    metric_isc = torch_fidelity_module("metric_isc")
    import torch

    logits = random_logits(1, 777, classes=50, scale=2.0)
    theirs = metric_isc.isc_features_to_metric(torch.from_numpy(logits), splits=7, shuffle=True, rng_seed=5)
    ours = inception_score(logits, splits=7, seed=5, sampling="torch-fidelity")
    assert ours.mean == pytest.approx(theirs["inception_score_mean"], rel=1e-12, abs=0)
    unshuffled = metric_isc.isc_features_to_metric(torch.from_numpy(logits), splits=7, shuffle=False)
    assert inception_score(logits, splits=7, shuffle=False).mean == pytest.approx(
        unshuffled["inception_score_mean"], rel=1e-12, abs=0
    )


def test_unshuffled_score_is_the_plain_formula():
    logits = random_logits(2, 503, classes=40)
    result = inception_score(logits, splits=5, shuffle=False)
    np.testing.assert_allclose(result.values, plain_inception_score(logits, 5), rtol=1e-12)
    assert result.std == pytest.approx(np.std(plain_inception_score(logits, 5)), rel=1e-9)


def test_shuffle_depends_on_seed_and_sampling_only():
    logits = random_logits(3, 300, classes=30)
    first = inception_score(logits, seed=4)
    assert inception_score(logits, seed=4) == first
    assert inception_score(logits, seed=5).values != first.values
    assert inception_score(logits, seed=4, sampling="torch-fidelity").values != first.values
    # A permutation moves rows between splits, never changes them: the pooled score is the same.
    assert inception_score(logits, splits=1, seed=4).mean == pytest.approx(
        inception_score(logits, splits=1, shuffle=False).mean, rel=1e-12
    )


def test_limits_one_and_the_number_of_classes():
    assert inception_score(np.zeros((100, CLASSES), dtype=np.float32)).mean == pytest.approx(1.0, abs=1e-12)
    confident = np.full((400, 20), -60.0)
    confident[np.arange(400), np.arange(400) % 20] = 60.0
    assert inception_score(confident, splits=4, shuffle=False).mean == pytest.approx(20.0, rel=1e-12)


def test_a_class_that_underflows_everywhere_contributes_nothing():
    """torch-fidelity evaluates 0 * inf there and returns NaN; its limit is the score without that class."""
    logits = random_logits(4, 200, classes=30).astype(np.float64)
    with_dead_class = np.hstack([logits, np.full((200, 1), -2000.0)])
    result = inception_score(with_dead_class, splits=4, shuffle=False)
    assert math.isfinite(result.mean)
    assert result.mean == pytest.approx(inception_score(logits, splits=4, shuffle=False).mean, rel=1e-12)
    metric_isc = torch_fidelity_module("metric_isc")
    import torch

    theirs = metric_isc.isc_features_to_metric(torch.from_numpy(with_dead_class), splits=4, shuffle=False)
    assert math.isnan(theirs["inception_score_mean"])


def test_result_object():
    result = inception_score(random_logits(5, 60, classes=10), splits=3)
    assert isinstance(result, InceptionScoreResult)
    assert float(result) == result.mean
    assert len(result.values) == 3 and result.to_dict()["splits"] == 3


@pytest.mark.parametrize(
    "logits, kwargs, message",
    [
        (np.zeros((5, 10)), {"splits": 10}, "splits"),
        (np.zeros((20, 1)), {}, "2 classes"),
        (np.zeros((20,)), {}, "2-D"),
        (np.full((20, 4), np.inf), {}, "NaN or inf"),
        (np.zeros((20, 4)), {"splits": 0}, "splits"),
        (np.zeros((20, 4)), {"seed": None}, "seed"),
        (np.zeros((20, 4)), {"sampling": "numpy"}, "sampling"),
        (np.zeros((20, 4)), {"shuffle": "yes"}, "shuffle"),
    ],
)
def test_bad_input_is_refused(logits, kwargs, message):
    with pytest.raises(InputError, match=message):
        inception_score(logits, **kwargs)


# --- hostile round 8: a common offset of the logits -----------------------------------------------------------------


@pytest.mark.parametrize(("offset", "classes", "splits"), [(1e15, 12, 1), (-3e13, 40, 2), (-5e14, 7, 3)])
def test_a_common_offset_of_the_logits_changes_nothing(offset, classes, splits):
    """The softmax ignores a constant added to a row; rows - logsumexp(rows) rounded the small log to the offset's
    spacing (offset 1e15: IS 1.42159 for 1.42288)."""
    rng = np.random.default_rng(classes)
    spacing = np.spacing(abs(offset))
    # Logits on the offset's grid, so that offset + logits is exact and the two inputs have one softmax.
    logits = np.round(rng.standard_normal((60, classes)) * 2.0 / spacing) * spacing
    plain = inception_score(logits, splits=splits, shuffle=False)
    shifted = inception_score(logits + offset, splits=splits, shuffle=False)
    assert np.array_equal(logits + offset - offset, logits)
    for ours, reference in zip(shifted.values, plain.values):
        assert ours == pytest.approx(reference, rel=1e-13, abs=0)
