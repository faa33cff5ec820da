"""Bootstrap intervals (generic and the fast FID path), their coverage on Gaussians, and FID_infinity."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest

from fidkit.errors import InputError
from fidkit.frechet import fid_from_arrays, fid_from_stats
from fidkit.metrics import BootstrapResult, FIDInfinityResult, bootstrap, bootstrap_fid, fid_infinity, kid
from fidkit.stats import Stats

bootstrap_module = importlib.import_module("fidkit.metrics.bootstrap")


def gaussian_pair(seed: int, n_a: int, n_b: int, dim: int, shift: float):
    """Side a from N(0, I), side b from N(shift, sigma_b) with a fixed correlated sigma_b; and the true FID."""
    structure = np.random.default_rng(123).standard_normal((dim, dim)) * 0.3
    sigma_b = np.eye(dim) + structure @ structure.T
    delta = np.full(dim, shift)
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n_a, dim))
    b = rng.standard_normal((n_b, dim)) @ np.linalg.cholesky(sigma_b).T + delta
    true_fid = float(fid_from_stats(Stats(mu=np.zeros(dim), sigma=np.eye(dim)), Stats(mu=delta, sigma=sigma_b)))
    return a, b, true_fid


def test_fast_fid_bootstrap_equals_resampling_the_rows():
    a, b, _ = gaussian_pair(0, 260, 210, 12, 0.4)
    fast = bootstrap_fid(a, b, n_resamples=30, level=0.8, seed=5)
    slow = bootstrap(a, b, fid_from_arrays, n_resamples=30, level=0.8, seed=5)
    np.testing.assert_allclose(fast.values, slow.values, rtol=1e-10)
    assert fast.value == slow.value
    assert (fast.low, fast.high, fast.std) == pytest.approx((slow.low, slow.high, slow.std), rel=1e-10)


def test_weighted_moments_are_the_moments_of_the_resampled_rows():
    rows = np.random.default_rng(1).standard_normal((150, 6)).astype(np.float32) + 3.0
    moments = bootstrap_module._WeightedMoments(rows)
    drawn = np.random.default_rng(2).integers(0, 150, 150)
    counts = np.bincount(drawn, minlength=150)
    mu, sigma = moments.moments(counts)
    resampled = rows[drawn].astype(np.float64)
    np.testing.assert_allclose(mu, resampled.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(sigma, np.cov(resampled, rowvar=False), rtol=1e-11, atol=1e-13)
    assert np.array_equal(sigma, sigma.T)
    gram = moments.centred.T @ moments.centred
    mu_c, sigma_c = moments.moments_by_correction(counts, gram)
    np.testing.assert_allclose(mu_c, mu, rtol=1e-13)
    np.testing.assert_allclose(sigma_c, sigma, rtol=1e-11, atol=1e-13)


def test_interval_summary():
    a, b, _ = gaussian_pair(3, 120, 100, 4, 0.5)
    result = bootstrap_fid(a, b, n_resamples=40, level=0.9, seed=1)
    values = np.array(result.values)
    assert (result.low, result.high) == tuple(np.percentile(values, [5.0, 95.0]))
    assert (result.basic_low, result.basic_high) == pytest.approx((2 * result.value - result.high, 2 * result.value - result.low))
    assert result.std == pytest.approx(np.std(values, ddof=1))
    assert result.bias == pytest.approx(values.mean() - result.value)
    assert result.value == float(fid_from_arrays(a, b))
    assert (result.n_resamples, result.n_a, result.n_b, result.seed) == (40, 120, 100, 1)
    assert bootstrap_fid(a, b, n_resamples=40, level=0.9, seed=1) == result
    assert bootstrap_fid(a, b, n_resamples=40, level=0.9, seed=2).values != result.values
    assert isinstance(result, BootstrapResult) and float(result) == result.value


def test_generic_bootstrap_takes_any_metric():
    a, b, _ = gaussian_pair(4, 80, 90, 5, 0.3)
    result = bootstrap(a, b, lambda x, y: kid(x, y, subsets=2, subset_size=30), n_resamples=5, seed=0)
    assert len(result.values) == 5 and np.isfinite(result.values).all()
    rng = np.random.default_rng(0)
    rows_a, rows_b = rng.integers(0, 80, 80), rng.integers(0, 90, 90)
    assert result.values[0] == float(kid(a[rows_a], b[rows_b], subsets=2, subset_size=30))


def test_coverage_of_the_true_fid_on_gaussians():
    """90 % intervals over 50 independent samples of 300 + 300 at dim 8 with a known FID.

    Far apart (sampling spread >> bias), both intervals cover about as often as they claim. Close together, FID's
    small-sample bias is as large as its spread and the percentile interval, which carries it twice, misses far
    more often; the basic interval still covers.
    """
    repetitions, resamples = 50, 80
    for shift, check_percentile in ((1.5, True), (0.35, False)):
        covered_percentile = covered_basic = 0
        for repetition in range(repetitions):
            a, b, true_fid = gaussian_pair(1000 + repetition, 300, 300, 8, shift)
            result = bootstrap_fid(a, b, n_resamples=resamples, level=0.9, seed=repetition)
            covered_percentile += result.low <= true_fid <= result.high
            covered_basic += result.basic_low <= true_fid <= result.basic_high
        assert 0.75 <= covered_basic / repetitions <= 0.99, (shift, covered_basic)
        if check_percentile:
            assert 0.75 <= covered_percentile / repetitions <= 0.99, (shift, covered_percentile)
        else:
            assert covered_percentile < covered_basic


def test_fid_infinity_fits_a_line_in_one_over_n(monkeypatch):
    """With FID(n) = 3 + 7 / n exactly, the fit gives 3 and 7; subsets are distinct rows, reshuffled per size."""
    seen = []

    def exact_line(stats, reference):
        seen.append(stats)
        return 3.0 + 7.0 / stats.n

    monkeypatch.setattr(bootstrap_module, "fid_from_stats", exact_line)
    features = np.random.default_rng(5).standard_normal((1000, 3))
    result = fid_infinity(features, features[:50], n_points=6, seed=9)
    assert result.value == pytest.approx(3.0, rel=1e-12)
    assert result.slope == pytest.approx(7.0, rel=1e-10)
    assert result.residual_std < 1e-12
    assert result.sizes == tuple(np.linspace(100, 1000, 6).astype(int))  # min_size = N // 10 below 50,000
    rng = np.random.default_rng(9)
    for size, stats in zip(result.sizes, seen):
        expected = Stats.from_features(features[rng.permutation(1000)[:size]])
        np.testing.assert_allclose(stats.mu, expected.mu, rtol=1e-12)
    assert isinstance(result, FIDInfinityResult) and result.n == 1000 and result.n_reference == 50


def test_fid_infinity_default_sizes_follow_the_paper():
    """15 sizes from 5,000 to N for N >= 50,000, truncated to integers as the paper's code does."""
    features = np.random.default_rng(6).standard_normal((60000, 2))
    result = fid_infinity(features, Stats(mu=np.zeros(2), sigma=np.eye(2)), seed=0)
    assert result.sizes == tuple(np.linspace(5000, 60000, 15).astype(int))
    assert result.sizes[0] == 5000 and result.sizes[-1] == 60000
    assert result.n_reference is None


def test_fid_infinity_removes_most_of_the_bias():
    """Against the exact reference Gaussian, FID_N is biased up by O(1/N); the extrapolation is not, on average."""
    dim = 8
    structure = np.random.default_rng(7).standard_normal((dim, dim)) * 0.3
    sigma = np.eye(dim) + structure @ structure.T
    reference = Stats(mu=np.full(dim, 0.2), sigma=sigma)
    true_fid = float(fid_from_stats(Stats(mu=np.zeros(dim), sigma=np.eye(dim)), reference))
    errors_n, errors_infinity = [], []
    for seed in range(20):
        features = np.random.default_rng(seed).standard_normal((1500, dim))
        errors_n.append(float(fid_from_stats(Stats.from_features(features), reference)) - true_fid)
        errors_infinity.append(fid_infinity(features, reference, seed=seed).value - true_fid)
    assert np.mean(errors_n) > 0
    assert abs(np.mean(errors_infinity)) < 0.5 * np.mean(errors_n)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_resamples": 1}, "n_resamples"),
        ({"level": 1.0}, "level"),
        ({"level": 0}, "level"),
        ({"seed": None}, "seed"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    a, b, _ = gaussian_pair(0, 20, 20, 3, 0.1)
    with pytest.raises(InputError, match=message):
        bootstrap_fid(a, b, **kwargs)
    with pytest.raises(InputError, match=message):
        bootstrap(a, b, fid_from_arrays, **kwargs)


def test_bad_metrics_and_sizes_are_refused():
    a, b, _ = gaussian_pair(0, 20, 20, 3, 0.1)
    with pytest.raises(InputError, match="callable"):
        bootstrap(a, b, "fid")
    with pytest.raises(InputError, match="float"):
        bootstrap(a, b, lambda x, y: "not a number")
    with pytest.raises(InputError, match="distinct subset sizes"):
        fid_infinity(a[:10], b, n_points=15)
    with pytest.raises(InputError, match="dim"):
        fid_infinity(a, b[:, :2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match="at least 2"):
            bootstrap_fid(a[:1], b)
