"""Hostile review, round 4: the metrics on degenerate and extreme features.

Identical rows (a covariance that is all round-off), a rank-0 side, kernel values beyond float64, and features so
large or so small that a float32 product overflows or underflows. Features only: no network.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from fidkit.errors import InputError, SmallSampleWarning
from fidkit.frechet import fid_from_arrays, fid_from_stats
from fidkit.metrics import kid, knn_radii, manifold_metrics
from fidkit.stats import Stats


@pytest.fixture(autouse=True)
def _quiet_small_samples():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        yield


# ------------------------------------------------------------------------ identical rows, N <= dim


@pytest.mark.parametrize(("n_rows", "dim"), [(3, 16), (10, 64), (64, 64), (40, 2048)])
def test_identical_float64_rows_give_a_zero_covariance_and_the_exact_fid(n_rows, dim, tmp_path) -> None:
    rng = np.random.default_rng(n_rows + dim)
    # float64 rows whose mean is not exact in float64: the rounded mean leaves the centred rows a residual.
    row = np.abs(rng.normal(size=(1, dim))) * np.pi
    same = np.repeat(row, n_rows, axis=0)
    other = np.abs(rng.normal(size=(3 * dim, dim)))
    stats_b = Stats.from_features(other)
    expected = float(np.sum((row[0] - stats_b.mu) ** 2) + np.trace(stats_b.sigma))

    result = fid_from_arrays(same, other)
    assert result.value == pytest.approx(expected, rel=1e-12)
    assert result.trace_a == pytest.approx(0.0, abs=1e-20 * expected)

    # The file fidkit writes for them is one it reads back.
    stats_a = Stats.from_features(same)
    stats_a.save(tmp_path / "same.npz")
    loaded = Stats.load(tmp_path / "same.npz")
    assert fid_from_stats(loaded, stats_b).value == pytest.approx(expected, rel=1e-12)


def test_the_covariance_of_few_rows_is_the_product_of_its_factor_and_agrees_with_numpy() -> None:
    rng = np.random.default_rng(7)
    rows = rng.normal(loc=3.0, size=(50, 80))
    stats = Stats.from_features(rows)
    assert stats.factor is not None
    assert np.array_equal(stats.sigma, stats.sigma.T)
    np.testing.assert_allclose(stats.sigma, stats.factor @ stats.factor.T, rtol=0, atol=1e-14)
    np.testing.assert_allclose(stats.sigma, np.cov(rows, rowvar=False), rtol=0, atol=1e-13)


# ------------------------------------------------------------------------ a rank-0 side prints nothing


def test_a_side_of_identical_rows_prints_nothing_on_stdout() -> None:
    code = (
        "import warnings, numpy as np\n"
        "warnings.simplefilter('ignore')\n"
        "from fidkit.frechet import fid_from_arrays\n"
        "from fidkit.metrics import bootstrap_fid\n"
        "rng = np.random.default_rng(0)\n"
        "other = rng.normal(size=(60, 16))\n"
        "fid_from_arrays(np.ones((30, 16)), other)\n"
        "bootstrap_fid(np.ones((30, 16)), other, n_resamples=3, workers=1)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


def test_a_rank_zero_side_gives_the_mean_term_plus_the_other_trace() -> None:
    rng = np.random.default_rng(1)
    other = rng.normal(size=(60, 16))
    expected = float(np.sum((1.0 - other.mean(axis=0)) ** 2) + np.trace(np.cov(other, rowvar=False)))
    assert fid_from_arrays(np.ones((30, 16)), other).value == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------------ KID beyond float64


@pytest.mark.parametrize(
    ("scale", "options"), [(1e60, {}), (1.0, {"coef0": 1e200}), (1.0, {"gamma": 1e300})]
)
def test_a_kernel_that_overflows_is_an_error_not_a_nan(scale, options) -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(60, 8)) * scale, rng.normal(size=(50, 8)) * scale
    with pytest.raises(InputError, match="overflows float64"):
        kid(a, b, subsets=2, subset_size=40, **options)


# ------------------------------------------------------------------------ k-NN metrics at any scale


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


# ------------------------------------------------------------------------ features beyond float32


def test_features_beyond_float32_are_refused_when_kept_not_stored_as_inf() -> None:
    from fidkit.features import Features

    with pytest.raises(InputError, match="beyond float32's range"):
        Features(np.full((10, 4), 1e39))
    with pytest.raises(InputError, match="logits holds values beyond float32"):
        Features(np.ones((10, 4)), logits=np.full((10, 3), -1e300))
    assert Features(np.full((10, 4), 3e38)).rows.dtype == np.float32
