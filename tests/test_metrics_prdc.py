"""Precision, recall, density, coverage: brute force with full matrices, ties, the prdc package, torch-fidelity."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest

from fidkit.errors import InputError
from fidkit.metrics import (
    density_coverage,
    exact_sq_distances,
    knn_radii,
    manifold_metrics,
    precision_recall,
)

prdc_module = importlib.import_module("fidkit.metrics.prdc")
neighbours_module = importlib.import_module("fidkit.metrics.neighbours")  # the blockwise engine
_LOADER = Path(__file__).parent / "reference" / "torch_fidelity_loader.py"


def torch_fidelity_module(name: str):
    spec = importlib.util.spec_from_file_location("torch_fidelity_loader", _LOADER)
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    return loader.torch_fidelity_module(name)


def features(seed: int, n_rows: int, dim: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # A common offset far from 0, as pool_3 features have: the centring in the fast formula must cope with it.
    return (rng.standard_normal((n_rows, dim)) * scale + shift + 5.0).astype(np.float32)


def full_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All reference squared distances, pair by pair, as a full (len(a), len(b)) matrix."""
    rows = np.repeat(np.arange(len(a)), len(b))
    cols = np.tile(np.arange(len(b)), len(a))
    return exact_sq_distances(a[rows], b[cols]).reshape(len(a), len(b))


def brute_force(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Every number from full matrices: radii = (k+1)-th smallest with self included (ADM, prdc, torch-fidelity)."""
    real_real, fake_fake, fake_real = full_matrix(real, real), full_matrix(fake, fake), full_matrix(fake, real)
    radius_real = np.sort(real_real, axis=1)[:, k]
    radius_fake = np.sort(fake_fake, axis=1)[:, k]
    return {
        "adm_precision": float(np.mean((fake_real <= radius_real[None, :]).any(axis=1))),
        "adm_recall": float(np.mean((fake_real <= radius_fake[:, None]).any(axis=0))),
        "precision": float(np.mean((fake_real < radius_real[None, :]).any(axis=1))),
        "recall": float(np.mean((fake_real < radius_fake[:, None]).any(axis=0))),
        "density": float((fake_real < radius_real[None, :]).sum() / (k * len(fake))),
        "coverage": float(np.mean(fake_real.min(axis=0) < radius_real)),
        "radius_real": radius_real,
    }


@pytest.mark.parametrize("budget", [prdc_module.DEFAULT_MEMORY_BUDGET, 40_000])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_equals_brute_force(k, budget):
    real, fake = features(0, 230, 24), features(1, 190, 24, shift=0.3, scale=1.2)
    expected = brute_force(real, fake, k)
    pr = precision_recall(real, fake, k=k, memory_budget=budget)
    dc = density_coverage(real, fake, k=k, memory_budget=budget)
    assert (pr.precision, pr.recall) == (expected["adm_precision"], expected["adm_recall"])
    assert (dc.precision, dc.recall, dc.density, dc.coverage) == pytest.approx(
        (expected["precision"], expected["recall"], expected["density"], expected["coverage"]), rel=1e-15, abs=0
    )
    np.testing.assert_array_equal(knn_radii(real, k, memory_budget=budget), expected["radius_real"])


def test_ties_and_duplicates_equal_brute_force():
    """Duplicated samples and fakes that are copies of reals: balls of radius 0, distances exactly on a radius."""
    base = features(2, 60, 16)
    real = np.vstack([base, base[:20], base[:5]])  # 20 samples twice, 5 of them three times
    fake = np.vstack([base[::3], features(3, 50, 16, shift=0.2)])
    for k in (1, 2, 3, 5):
        expected = brute_force(real, fake, k)
        pr = precision_recall(real, fake, k=k, memory_budget=30_000)
        dc = density_coverage(real, fake, k=k, memory_budget=30_000)
        assert (pr.precision, pr.recall) == (expected["adm_precision"], expected["adm_recall"])
        assert (dc.precision, dc.recall, dc.coverage) == (expected["precision"], expected["recall"], expected["coverage"])
        assert dc.density == pytest.approx(expected["density"], rel=1e-15)
        np.testing.assert_array_equal(knn_radii(real, k), expected["radius_real"])
    assert dc.recomputed > 0  # the ties were decided on the reference distances
    assert knn_radii(real, 1)[:20].max() == 0.0 and knn_radii(real, 2)[:5].max() == 0.0
    assert knn_radii(real, 2)[5:20].min() > 0.0


def test_a_set_against_itself():
    real = features(4, 150, 12)
    same = manifold_metrics(real, real.copy())
    assert (same.precision, same.recall, same.coverage) == (1.0, 1.0, 1.0)
    # Each sample lies strictly inside its own ball and the balls whose k nearest include it, minus the edges.
    assert same.density == pytest.approx(brute_force(real, real, 5)["density"], rel=1e-15)


def test_far_apart_sets_are_decided_without_recomputing_everything():
    """Two sets far from each other: within-set distances are tiny against the sets' offset, and stay exact."""
    real = features(19, 150, 32) + 400.0
    fake = features(20, 140, 32, shift=0.1) - 400.0
    near = np.vstack([fake[:20] + 800.0])  # a few fakes inside the real set
    fake = np.vstack([fake, near])
    expected = brute_force(real, fake, 3)
    pr = precision_recall(real, fake, k=3)
    assert (pr.precision, pr.recall) == (expected["adm_precision"], expected["adm_recall"])
    assert pr.recomputed < 0.01 * len(real) * len(fake)
    assert pr.precise_blocks > 0  # the fake side's two clusters: its radii were redone in float64


def test_equals_the_prdc_package():
    prdc = pytest.importorskip("prdc")
    real, fake = features(5, 400, 32), features(6, 350, 32, shift=0.25)
    with contextlib.redirect_stdout(io.StringIO()):  # compute_prdc prints the sample counts
        theirs = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    ours = density_coverage(real, fake, k=5)
    assert ours.precision == theirs["precision"]
    assert ours.recall == theirs["recall"]
    assert ours.density == pytest.approx(theirs["density"], rel=1e-12)
    assert ours.coverage == theirs["coverage"]


def test_equals_torch_fidelity_precision_recall():
    metric_prc = torch_fidelity_module("metric_prc")
    import torch

    real, fake = features(7, 300, 32), features(8, 280, 32, shift=0.3)
    # torch-fidelity: features_1 is generated, features_2 real; radius = kthvalue(k + 1) with self, d <= r.
    precision, recall = metric_prc.calculate_precision_recall_full(
        torch.from_numpy(fake), torch.from_numpy(real), neighborhood=3, batch_size=100
    )
    ours = precision_recall(real, fake, k=3)
    assert (ours.precision, ours.recall) == (pytest.approx(precision, abs=1e-7), pytest.approx(recall, abs=1e-7))


def test_manifold_metrics_is_both_in_one_pass():
    real, fake = features(9, 200, 20), features(10, 210, 20, shift=0.2)
    both = manifold_metrics(real, fake, k_pr=3, k_dc=5, memory_budget=50_000)
    pr, dc = precision_recall(real, fake, k=3), density_coverage(real, fake, k=5)
    assert (both.precision, both.recall, both.density, both.coverage) == (pr.precision, pr.recall, dc.density, dc.coverage)
    assert both.to_dict()["k_dc"] == 5


def test_torch_backend_gives_the_same_numbers():
    pytest.importorskip("torch")
    base = features(11, 80, 16)
    real = np.vstack([base, base[:10]])
    fake = np.vstack([base[::4], features(12, 70, 16, shift=0.2)])
    on_numpy = manifold_metrics(real, fake, memory_budget=20_000)
    on_torch = manifold_metrics(real, fake, memory_budget=20_000, device="cpu")
    # numpy screens in float32 and torch in float64, so they recompute different numbers of distances, but the
    # decisions are the reference distances' in both.
    assert dataclasses.replace(on_torch, recomputed=0, precise_blocks=0) == dataclasses.replace(
        on_numpy, recomputed=0, precise_blocks=0
    )
    np.testing.assert_array_equal(knn_radii(real, 3, device="cpu"), knn_radii(real, 3))


def test_blocks_stay_under_the_memory_budget(monkeypatch):
    """No N x N matrix: every distance block has at most budget / 32 entries when the budget allows one row."""
    shapes = []
    original = neighbours_module._NumpyBackend.sq_distances

    def spy(self, rows, row_norms, cols, col_norms):
        block = original(self, rows, row_norms, cols, col_norms)
        shapes.append(block.shape)
        return block

    monkeypatch.setattr(neighbours_module._NumpyBackend, "sq_distances", spy)
    real, fake = features(13, 500, 8), features(14, 400, 8)
    budget = 32 * 500 * 37  # 37 rows of 500 columns
    precision_recall(real, fake, memory_budget=budget)
    assert max(rows * cols for rows, cols in shapes) * 32 <= budget
    assert max(rows for rows, cols in shapes if cols == 500) == 37
    assert sum(rows for rows, cols in shapes if cols == 400) == 400  # every fake row against the fakes once


def test_float64_and_float32_inputs_use_the_values_given():
    real, fake = features(15, 120, 10), features(16, 110, 10, shift=0.3)
    as32 = density_coverage(real, fake)
    as64 = density_coverage(real.astype(np.float64), fake.astype(np.float64))
    assert as32 == as64


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 0}, "k"),
        ({"k": 10}, "at least 11 samples"),
        ({"memory_budget": 0}, "memory_budget"),
        ({"device": "no-such-device"}, "device"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    if "device" in kwargs:
        pytest.importorskip("torch")
    with pytest.raises(InputError, match=message):
        precision_recall(features(17, 10, 4), features(18, 30, 4), **kwargs)


def test_bad_features_are_refused():
    with pytest.raises(InputError, match="dim"):
        density_coverage(features(1, 20, 4), features(2, 20, 5))
    with pytest.raises(InputError, match="real"):
        density_coverage(np.full((20, 4), np.nan), features(2, 20, 4))


# --- hostile round 4: k-NN metrics at any scale ---------------------------------------------------------------------


def _brute_force(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """ADM's precision and recall from full float64 distance matrices."""

    def sq(a, b):
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)

    def radii(x):
        d = sq(x, x)
        np.fill_diagonal(d, np.inf)
        return np.sort(d, axis=1)[:, k - 1]

    r_real, r_fake = radii(real), radii(fake)
    cross = sq(fake, real)
    precision = float(np.mean((cross <= r_real[None, :]).any(axis=1)))
    recall = float(np.mean((cross.T <= r_fake[None, :]).any(axis=1)))
    return precision, recall


@pytest.mark.parametrize("scale", [2.0**-110, 1e-30, 1e20, 1e39, 1e200, 1e-200])
@pytest.mark.parametrize("device", [None, "cpu"])
def test_precision_recall_density_coverage_do_not_depend_on_the_scale(scale, device) -> None:
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(60, 8)), rng.normal(size=(50, 8)) + 0.3
    reference = manifold_metrics(real, fake)
    assert (reference.precision, reference.recall) == pytest.approx(_brute_force(real, fake))
    scaled = manifold_metrics(real * scale, fake * scale, device=device)
    for name in ("precision", "recall", "density", "coverage"):
        assert getattr(scaled, name) == getattr(reference, name), name


def test_radii_are_scaled_back_exactly_and_refused_when_they_overflow() -> None:
    features = np.random.default_rng(4).normal(size=(60, 8)).astype(np.float32)
    radii = knn_radii(features, 3)
    assert np.array_equal(knn_radii(features * np.float32(2.0**30), 3), radii * 2.0**60)
    assert np.array_equal(knn_radii(features * 2.0**-90, 3), radii * 2.0**-180)
    with pytest.raises(InputError, match="overflow float64"):
        knn_radii(features.astype(np.float64) * 1e200, 3)
