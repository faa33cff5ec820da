"""The Fréchet distance: against a 50-digit reference, the exact low-rank identity, and its properties."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import mpmath
import numpy as np
import pytest
import scipy.linalg

import fidkit
from fidkit.errors import FidkitError, FidkitWarning, InputError, SmallSampleWarning, StatsFileError
from fidkit.frechet import (
    FrechetResult,
    factors,
    fid_from_arrays,
    fid_from_stats,
    frechet_distance,
)
from fidkit.frechet.factors import factor_at_hand, sqrt_factor
from fidkit.stats import Stats

FEATURE_DIM = 2048


# ------------------------------------------------------------------------------------------------ helpers


def decaying_features(rng: np.random.Generator, n_rows: int, dim: int, *, shift: float = 0.0) -> np.ndarray:
    """float32 features with a power-law spectrum and correlated coordinates, like pooled CNN features."""
    scales = np.arange(1, dim + 1, dtype=np.float64) ** -0.75
    latent = rng.standard_normal((n_rows, dim)) * scales
    # A cheap correlating mix: each coordinate also picks up its neighbour (keeps it O(n dim)).
    mixed = latent + 0.5 * np.roll(latent, 1, axis=1) + shift
    return mixed.astype(np.float32)


def exact_lowrank_fid(features_a: np.ndarray, features_b: np.ndarray) -> tuple[float, float]:
    """(FID, tr sqrt) from the identity tr sqrt(S_a S_b) = ||Xc Yc^T||_* / sqrt((n-1)(m-1)), written out plainly."""
    rows_a = features_a.astype(np.float64)
    rows_b = features_b.astype(np.float64)
    centred_a = rows_a - rows_a.mean(axis=0)
    centred_b = rows_b - rows_b.mean(axis=0)
    n_a, n_b = len(rows_a), len(rows_b)
    trace_sqrt = np.linalg.svd(centred_a @ centred_b.T, compute_uv=False).sum() / math.sqrt((n_a - 1) * (n_b - 1))
    mean_term = float(np.sum((rows_a.mean(axis=0) - rows_b.mean(axis=0)) ** 2))
    fid = mean_term + np.sum(centred_a**2) / (n_a - 1) + np.sum(centred_b**2) / (n_b - 1) - 2 * trace_sqrt
    return float(fid), float(trace_sqrt)


def mpmath_fid(mu1, sigma1, mu2, sigma2, digits: int = 60) -> float:
    """FID with every step in `digits`-digit arithmetic: sqrt(S1) and the eigenvalues of sqrt(S1) S2 sqrt(S1)."""
    with mpmath.workdps(digits):
        s1 = mpmath.matrix(sigma1.tolist())
        s2 = mpmath.matrix(sigma2.tolist())
        eigenvalues, eigenvectors = mpmath.eigsy(s1)
        root_diag = mpmath.diag([mpmath.sqrt(max(value, 0)) for value in eigenvalues])
        root = eigenvectors * root_diag * eigenvectors.T
        inner = root * s2 * root
        inner = (inner + inner.T) / 2
        inner_eigenvalues, _ = mpmath.eigsy(inner)
        trace_sqrt = mpmath.fsum(mpmath.sqrt(max(value, 0)) for value in inner_eigenvalues)
        mean_term = mpmath.fsum((mpmath.mpf(a) - mpmath.mpf(b)) ** 2 for a, b in zip(mu1.tolist(), mu2.tolist()))
        traces = mpmath.fsum(s1[i, i] for i in range(s1.rows)) + mpmath.fsum(s2[i, i] for i in range(s2.rows))
        return float(mean_term + traces - 2 * trace_sqrt)


def random_covariance(rng: np.random.Generator, dim: int, condition: float) -> np.ndarray:
    orthogonal, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    spectrum = np.geomspace(1.0, 1.0 / condition, dim)
    sigma = (orthogonal * spectrum) @ orthogonal.T
    return (sigma + sigma.T) / 2


# ------------------------------------------------------------------------------------------------ accuracy


@pytest.mark.parametrize("dim", [1, 2, 5, 8])
@pytest.mark.parametrize("condition", [1.0e1, 1.0e6])
@pytest.mark.parametrize("method", ["auto", "eigh"])
def test_matches_50_digit_reference(dim: int, condition: float, method: str) -> None:
    rng = np.random.default_rng(dim * 1000 + int(math.log10(condition)))
    mu1, mu2 = rng.standard_normal(dim), rng.standard_normal(dim)
    sigma1 = random_covariance(rng, dim, condition)
    sigma2 = 2.0 * random_covariance(rng, dim, condition)
    reference = mpmath_fid(mu1, sigma1, mu2, sigma2)
    result = frechet_distance(mu1, sigma1, mu2, sigma2, method=method)
    assert result.value == pytest.approx(reference, rel=1e-9, abs=0)
    assert math.isfinite(result.value) and result.value >= 0


@pytest.mark.parametrize("dim", [3, 6])
def test_features_path_matches_50_digit_reference(dim: int) -> None:
    rng = np.random.default_rng(dim)
    features_a = rng.standard_normal((40, dim)) * np.linspace(1.0, 0.01, dim)
    features_b = rng.standard_normal((55, dim)) + 0.3
    reference = mpmath_fid(
        features_a.mean(axis=0), np.cov(features_a, rowvar=False),
        features_b.mean(axis=0), np.cov(features_b, rowvar=False),
    )
    assert fid_from_arrays(features_a, features_b).value == pytest.approx(reference, rel=1e-9, abs=0)
    stats_a, stats_b = Stats.from_features(features_a), Stats.from_features(features_b)
    assert fid_from_stats(stats_a, stats_b).value == pytest.approx(reference, rel=1e-9, abs=0)


def test_ttur_method_reproduces_sqrtm_of_product() -> None:
    rng = np.random.default_rng(7)
    dim = 6
    mu1, mu2 = rng.standard_normal(dim), rng.standard_normal(dim)
    sigma1, sigma2 = random_covariance(rng, dim, 10.0), random_covariance(rng, dim, 100.0)
    classic = float(
        (mu1 - mu2) @ (mu1 - mu2) + np.trace(sigma1) + np.trace(sigma2)
        - 2 * np.trace(scipy.linalg.sqrtm(sigma1 @ sigma2)).real
    )
    result = frechet_distance(mu1, sigma1, mu2, sigma2, method="ttur")
    assert result.method == "sqrtm-ttur"
    assert result.value == pytest.approx(classic, rel=1e-12)
    assert result.value == pytest.approx(mpmath_fid(mu1, sigma1, mu2, sigma2), rel=1e-8)
    assert math.isnan(result.min_eigenvalue) and result.to_dict()["min_eigenvalue"] is None
    for alias in ("sqrtm", "sqrtm-ttur"):
        assert frechet_distance(mu1, sigma1, mu2, sigma2, method=alias).value == result.value


def test_ttur_method_retries_with_eps_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[np.ndarray] = []
    real_sqrtm = scipy.linalg.sqrtm

    def flaky_sqrtm(matrix):
        calls.append(matrix)
        if len(calls) == 1:  # what old SciPy returned for a singular product
            return np.full_like(matrix, np.nan)
        return real_sqrtm(matrix)

    monkeypatch.setattr(scipy.linalg, "sqrtm", flaky_sqrtm)
    sigma = np.diag([1.0, 2.0, 0.0])
    mu = np.zeros(3)
    with pytest.warns(FidkitWarning, match="1e-06"):
        result = frechet_distance(mu, sigma, mu + 1.0, 2.0 * sigma, method="ttur")
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], (sigma + 1e-6 * np.eye(3)) @ (2.0 * sigma + 1e-6 * np.eye(3)))
    assert any("1e-06" in message for message in result.warnings)


def test_ttur_method_refuses_large_imaginary_part(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda matrix: np.eye(len(matrix)) * (1.0 + 0.5j))
    sigma = np.eye(3)
    with pytest.raises(FidkitError, match="imaginary"):
        frechet_distance(np.zeros(3), sigma, np.ones(3), 2.0 * sigma, method="ttur")


# ------------------------------------------------------------------------------------------------ dim 2048


@pytest.fixture(scope="module")
def small_sets() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2048)
    return (
        decaying_features(rng, 200, FEATURE_DIM),
        decaying_features(rng, 300, FEATURE_DIM, shift=0.01),
    )


def test_lowrank_identity_features_path(small_sets) -> None:
    features_a, features_b = small_sets
    fid, trace_sqrt = exact_lowrank_fid(features_a, features_b)
    with pytest.warns(SmallSampleWarning) as record:
        result = fid_from_arrays(features_a, features_b)
    assert result.method == "factor-svd"
    assert result.rank == 199
    assert result.trace_sqrt == pytest.approx(trace_sqrt, rel=1e-9)
    assert result.value == pytest.approx(fid, rel=1e-9)
    messages = [str(item.message) for item in record]
    assert any("N = 200" in m and "dim = 2048" in m and "biased" in m and "unstable" in m for m in messages)
    assert any("N = 300" in m for m in messages)
    assert set(messages) == set(result.warnings)


def test_lowrank_identity_through_fidkit_files(small_sets, tmp_path) -> None:
    features_a, features_b = small_sets
    fid, trace_sqrt = exact_lowrank_fid(features_a, features_b)
    Stats.from_features(features_a).save(tmp_path / "a.npz")
    Stats.from_features(features_b).save(tmp_path / "b.npz")
    loaded_a, loaded_b = Stats.load(tmp_path / "a.npz"), Stats.load(tmp_path / "b.npz")
    assert loaded_a.factor is not None and loaded_a.factor.shape == (FEATURE_DIM, 199)
    with pytest.warns(SmallSampleWarning):
        result = fid_from_stats(loaded_a, loaded_b)
    assert result.method == "factor-svd"
    assert result.trace_sqrt == pytest.approx(trace_sqrt, rel=1e-9)
    assert result.value == pytest.approx(fid, rel=1e-9)


def test_lowrank_against_full_rank_reference_file(small_sets, tmp_path) -> None:
    features_a, _ = small_sets
    reference_features = decaying_features(np.random.default_rng(5), FEATURE_DIM + 100, FEATURE_DIM, shift=0.02)
    fid, trace_sqrt = exact_lowrank_fid(features_a, reference_features)
    Stats.from_features(reference_features).save(tmp_path / "reference.npz")
    reference = Stats.load(tmp_path / "reference.npz")
    assert reference.factor is None  # n > dim: sigma only, the factor is computed on demand
    with pytest.warns(SmallSampleWarning):
        result = fid_from_stats(Stats.from_features(features_a), reference)
    assert result.method == "factor-eigh" and result.factor_side == "a" and result.rank == 199
    assert result.trace_sqrt == pytest.approx(trace_sqrt, rel=1e-9)
    assert result.value == pytest.approx(fid, rel=1e-9)
    with pytest.warns(SmallSampleWarning):
        from_arrays = fid_from_arrays(features_a, reference_features)
    assert from_arrays.value == pytest.approx(fid, rel=1e-9)
    # The small side as a foreign file (mu and sigma only) against the reference whose factor is now cached:
    # factoring the foreign side reveals its rank, and the SVD of the two factors stays exact.
    rows_a = features_a.astype(np.float64)
    np.savez(tmp_path / "small_ttur.npz", mu=rows_a.mean(axis=0), sigma=np.cov(rows_a, rowvar=False))
    sqrt_factor(reference)
    foreign = fid_from_stats(reference, Stats.load(tmp_path / "small_ttur.npz"))
    assert foreign.method == "factor-svd" and foreign.factor_side == "b" and foreign.rank == 199
    assert foreign.value == pytest.approx(fid, rel=1e-9)


def test_foreign_files_with_only_mu_and_sigma(small_sets, tmp_path) -> None:
    features_a, features_b = small_sets
    fid, trace_sqrt = exact_lowrank_fid(features_a, features_b)
    for name, features in (("a.npz", features_a), ("b.npz", features_b)):
        rows = features.astype(np.float64)
        np.savez(tmp_path / name, mu=rows.mean(axis=0), sigma=np.cov(rows, rowvar=False))
    stats_a, stats_b = Stats.load(tmp_path / "a.npz"), Stats.load(tmp_path / "b.npz")
    assert stats_a.is_foreign and stats_a.n is None
    result = fid_from_stats(stats_a, stats_b)  # no n: no small-sample warning can be given
    assert result.n_a is None and result.n_b is None
    assert result.method == "factor-svd"
    # The pivoted Cholesky finds the numerical rank n - 1 and leaves only round-off out.
    assert result.rank == 199
    assert 0.0 <= result.factor_dropped <= 1e-10 * result.trace_a
    assert result.clipped_negative >= 0.0
    assert result.value == pytest.approx(fid, rel=1e-9)


def test_dense_eigh_route_reports_the_spectrum_it_clips() -> None:
    # Rank-deficient sigma (n < dim) through the dense route: round-off puts some eigenvalues below zero.
    rng = np.random.default_rng(11)
    features_a = decaying_features(rng, 40, 256)
    features_b = decaying_features(rng, 60, 256, shift=0.05)
    fid, _ = exact_lowrank_fid(features_a, features_b)
    stats_a = Stats(features_a.astype(np.float64).mean(axis=0), np.cov(features_a.astype(np.float64), rowvar=False))
    stats_b = Stats(features_b.astype(np.float64).mean(axis=0), np.cov(features_b.astype(np.float64), rowvar=False))
    dense = fid_from_stats(stats_a, stats_b, method="eigh")
    assert dense.method == "eigh" and dense.rank == 256
    assert dense.min_eigenvalue < 0 and dense.clipped_negative > 0
    assert dense.value == pytest.approx(fid, rel=1e-3)  # the round-off floor of the eigen route
    factored = fid_from_stats(stats_a, stats_b)
    assert factored.value == pytest.approx(fid, rel=1e-9)


# ------------------------------------------------------------------------------------------------ properties


@pytest.fixture(scope="module")
def full_rank_pair() -> tuple[Stats, Stats]:
    rng = np.random.default_rng(3)
    return (
        Stats.from_features(decaying_features(rng, 200, 48)),
        Stats.from_features(decaying_features(rng, 150, 48, shift=0.1)),
    )


@pytest.mark.parametrize("method", ["auto", "eigh"])
def test_symmetric_in_its_arguments(full_rank_pair, method: str) -> None:
    stats_a, stats_b = full_rank_pair
    forward = fid_from_stats(stats_a, stats_b, method=method)
    backward = fid_from_stats(stats_b, stats_a, method=method)
    assert forward.value == backward.value
    assert (forward.trace_a, forward.n_a) == (backward.trace_b, backward.n_b)


def test_symmetric_features_path() -> None:
    rng = np.random.default_rng(4)
    features_a, features_b = decaying_features(rng, 30, 64), decaying_features(rng, 30, 64, shift=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        assert fid_from_arrays(features_a, features_b).value == fid_from_arrays(features_b, features_a).value


def test_identical_sets_give_zero(full_rank_pair, small_sets, tmp_path) -> None:
    stats_a, _ = full_rank_pair
    assert fid_from_stats(stats_a, stats_a).value == 0.0
    stats_a.save(tmp_path / "a.npz")
    assert fid_from_stats(stats_a, Stats.load(tmp_path / "a.npz")).value == 0.0
    features = small_sets[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        assert fid_from_arrays(features, features.copy()).value == 0.0
        # A shifted copy has the same covariance up to the round-off of centring.
        shifted = fid_from_arrays(features[:, :64], features[:, :64] + np.float32(0.5))
    assert shifted.value == pytest.approx(64 * 0.25, rel=1e-6)


def test_equal_covariances_give_exactly_the_mean_term(full_rank_pair) -> None:
    stats_a, _ = full_rank_pair
    rng = np.random.default_rng(9)
    mu2 = rng.standard_normal(stats_a.dim)
    expected = float((stats_a.mu - mu2) @ (stats_a.mu - mu2))
    for method in ("auto", "eigh", "ttur"):
        result = frechet_distance(stats_a.mu, stats_a.sigma, mu2, stats_a.sigma, method=method)
        assert result.value == expected
        assert result.method == "identical-sigma"
        # Equal but distinct arrays too.
        assert frechet_distance(stats_a.mu, stats_a.sigma, mu2, stats_a.sigma.copy()).value == expected


def test_never_negative_nan_or_complex_on_degenerate_input() -> None:
    rng = np.random.default_rng(12)
    constant = np.ones((10, 5))
    other = rng.standard_normal((10, 5)) * 1e-12
    tiny = rng.standard_normal((8, 5)) * 1e-150
    huge = rng.standard_normal((8, 5)) * 1e150
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        cases = [
            fid_from_arrays(constant, other),
            fid_from_arrays(constant, constant + 1.0),
            fid_from_arrays(tiny, tiny * 2),
            fid_from_stats(Stats.from_features(huge), Stats.from_features(huge * 0.5)),
            fid_from_stats(Stats.from_features(huge), Stats.from_features(huge * 0.5), method="eigh"),
            frechet_distance(np.zeros(4), np.zeros((4, 4)), np.ones(4), np.eye(4)),
            frechet_distance(np.zeros(4), np.zeros((4, 4)), np.ones(4), np.eye(4), method="eigh"),
        ]
    for result in cases:
        assert isinstance(result.value, float) and math.isfinite(result.value) and result.value >= 0.0
    assert cases[1].value == 5.0
    assert cases[5].value == pytest.approx(4.0 + 4.0)
    # sigma_b = sigma_a / 4: FID = mean term + tr(sigma_a) (1 + 1/4 - 2 * 1/2), even at 1e300 scale.
    huge_mean_term = float(np.sum((huge.mean(axis=0) * 0.5) ** 2))
    huge_trace = float(np.trace(np.cov(huge, rowvar=False)))
    for result in cases[3:5]:
        assert result.value == pytest.approx(huge_mean_term + 0.25 * huge_trace, rel=1e-9)
    tiny_mean_term = float(np.sum((tiny.mean(axis=0) * 1.0) ** 2))
    tiny_trace = float(np.trace(np.cov(tiny, rowvar=False)))
    assert cases[2].value == pytest.approx(tiny_mean_term + (1 + 4 - 2 * 2) * tiny_trace, rel=1e-9)


def test_result_behaves_as_float_and_serialises(full_rank_pair) -> None:
    result = fid_from_stats(*full_rank_pair)
    assert isinstance(result, FrechetResult)
    assert float(result) == result.value and result.value > 0
    assert result.value == pytest.approx(
        result.mean_term + result.trace_a + result.trace_b - 2 * result.trace_sqrt, rel=1e-12
    )
    as_dict = json.loads(json.dumps(result.to_dict()))
    assert as_dict["value"] == result.value and as_dict["method"] == result.method
    assert as_dict["n_a"] == 200 and as_dict["dim"] == 48 and as_dict["warnings"] == []
    with pytest.raises(AttributeError):
        result.value = 0.0  # type: ignore[misc]


def test_reference_factor_is_computed_once_and_reused() -> None:
    rng = np.random.default_rng(21)
    reference = Stats.from_features(decaying_features(rng, 300, 32))
    assert not factor_at_hand(reference)
    first = fid_from_stats(Stats.from_features(decaying_features(rng, 100, 32, shift=0.1)), reference)
    factor = sqrt_factor(reference)
    assert factor_at_hand(reference) and factor.kind == "pivoted-cholesky" and factor.rank == 32
    np.testing.assert_allclose(factor.matrix @ factor.matrix.T, reference.sigma, rtol=0, atol=1e-14)
    second = fid_from_stats(reference, Stats.from_features(decaying_features(rng, 120, 32, shift=0.2)))
    assert sqrt_factor(reference) is factor
    assert first.method == second.method == "factor-eigh"
    assert second.factor_side == "a"  # the reference, whose factor was at hand


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_inputs_raise_input_error_saying_what_to_do() -> None:
    rng = np.random.default_rng(0)
    good = rng.standard_normal((20, 4))
    with pytest.raises(InputError, match="dim 4.*dim 5"):
        fid_from_arrays(good, rng.standard_normal((20, 5)))
    with pytest.raises(InputError, match="at least 2 samples"):
        fid_from_arrays(good, good[:1])
    with pytest.raises(InputError, match="2-D"):
        fid_from_arrays(good, good[0])
    nan_features = good.copy()
    nan_features[3, 1] = np.nan
    with pytest.raises(InputError, match="NaN or inf.*row 3"):
        fid_from_arrays(nan_features, good)
    with pytest.raises(InputError, match="NaN or inf"):
        fid_from_arrays(good, np.full((20, 4), np.inf))
    mu, sigma = np.zeros(4), np.eye(4)
    with pytest.raises(InputError, match="square"):
        frechet_distance(mu, np.ones((4, 3)), mu, sigma)
    asymmetric = np.eye(4)
    asymmetric[0, 1] = 0.5
    with pytest.raises(InputError, match="not symmetric"):
        frechet_distance(mu, asymmetric, mu, sigma)
    with pytest.raises(InputError, match="same feature extractor"):
        frechet_distance(mu, sigma, np.zeros(3), np.eye(3))
    with pytest.raises(InputError, match="mu has length 3"):
        frechet_distance(np.zeros(3), sigma, mu, sigma)
    with pytest.raises(InputError, match="NaN or inf"):
        frechet_distance(mu, sigma * np.nan, mu, sigma)
    with pytest.raises(InputError, match="method"):
        frechet_distance(mu, sigma, mu, sigma, method="magic")
    with pytest.raises(InputError, match="different dimensions"):
        fid_from_stats(Stats(np.zeros(3), np.eye(3)), Stats(mu, sigma))
    assert issubclass(InputError, ValueError)


def test_small_sample_warning_from_stats_names_n_and_dim() -> None:
    rng = np.random.default_rng(1)
    stats_small = Stats.from_features(rng.standard_normal((10, 16)))
    stats_large = Stats.from_features(rng.standard_normal((40, 16)))
    with pytest.warns(SmallSampleWarning, match=r"N = 10 samples for dim = 16.*biased and unstable"):
        result = fid_from_stats(stats_small, stats_large)
    assert len(result.warnings) == 1 and "side a" in result.warnings[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fid_from_stats(stats_large, stats_large)


def test_features_path_with_a_very_large_other_side() -> None:
    # The large side exceeds 4 x dim rows: its statistics are accumulated in chunks, the small side's exact
    # factor still removes the structural zeros.
    rng = np.random.default_rng(31)
    features_a, features_b = decaying_features(rng, 6, 8), decaying_features(rng, 50, 8, shift=0.1)
    fid, _ = exact_lowrank_fid(features_a, features_b)
    with pytest.warns(SmallSampleWarning, match="N = 6"):
        result = fid_from_arrays(features_a, features_b)
    assert result.method == "factor-eigh" and result.rank == 5
    assert result.value == pytest.approx(fid, rel=1e-9)


def test_huge_features_below_dim_give_a_finite_result_not_overflow_error() -> None:
    # Singular values of L_a^T L_b near 1e200: their square (the min_eigenvalue diagnostic) is beyond float64.
    rng = np.random.default_rng(41)
    small_a, small_b = rng.standard_normal((10, 20)), rng.standard_normal((12, 20))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        reference = fid_from_arrays(small_a, small_b)
        huge = fid_from_arrays(small_a * 1e100, small_b * 1e100)
    assert huge.method == "factor-svd" and math.isfinite(huge.value)
    assert huge.value == pytest.approx(reference.value * 1e200, rel=1e-9)


def test_features_whose_covariance_overflows_raise_input_error_not_nan() -> None:
    rng = np.random.default_rng(42)
    features_a, features_b = rng.standard_normal((30, 5)) * 1e155, rng.standard_normal((40, 5)) * 1e155
    with pytest.raises(InputError, match="too large for float64.*divide the features"):
        fid_from_arrays(features_a, features_b)
    with pytest.raises(InputError, match="too large for float64"):
        Stats.from_features(features_a)


def test_a_remembered_factor_is_never_used_for_another_sigma() -> None:
    # Stats fields can be reassigned; the factor remembered for the old sigma must not come back.
    rng = np.random.default_rng(40)
    x = Stats.from_features(rng.standard_normal((300, 24)))
    w = Stats.from_features(rng.standard_normal((300, 24)) * 3.0)
    y = Stats.from_features(rng.standard_normal((300, 24)) + 0.5)
    sqrt_factor(x)  # remembered: x is now the side whose factor is at hand
    x.sigma = w.sigma
    fresh = Stats(mu=x.mu, sigma=w.sigma, n=300)
    assert fid_from_stats(x, y).value == pytest.approx(fid_from_stats(fresh, y).value, rel=1e-12)


def test_small_features_against_a_moderately_larger_set_are_exact_to_round_off() -> None:
    # N_a <= dim / 2 and dim < N_b <= 4 dim: both sides keep their exact factors, the trace is their nuclear norm.
    rng = np.random.default_rng(42)
    dim = 64
    small = rng.standard_normal((20, dim)) @ np.diag(1.0 / np.arange(1, dim + 1))
    large = rng.standard_normal((200, dim)) @ np.diag(1.0 / np.arange(1, dim + 1)) + 0.01
    with pytest.warns(SmallSampleWarning):
        result = fid_from_arrays(small, large)
    centred_small, centred_large = small - small.mean(axis=0), large - large.mean(axis=0)
    exact = np.linalg.svd(centred_small @ centred_large.T, compute_uv=False).sum() / math.sqrt(19 * 199)
    assert result.method == "factor-svd"
    assert abs(result.trace_sqrt - exact) <= 1e-13 * exact


# --- hostile round 3, 2: a sigma that is not PSD is refused on every route, either side -----------------------------


def indefinite(dim: int, seed: int, negative: float) -> np.ndarray:
    """A symmetric matrix with a positive diagonal, large trace and one eigenvalue `negative` (< 0)."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    eigenvalues = rng.uniform(5.0, 10.0, dim)
    eigenvalues[dim // 2] = negative
    sigma = (basis * eigenvalues) @ basis.T
    sigma = (sigma + sigma.T) / 2
    assert np.all(np.diagonal(sigma) > 0)
    return sigma


def small_trace_stats(dim: int, n: int, seed: int) -> Stats:
    return Stats.from_features(np.random.default_rng(seed).standard_normal((n, dim)) * 0.1)


@pytest.mark.parametrize("dim, n_bad, negative", [(12, 500, -3.0), (40, 41, -1e-4), (33, 1000, -0.5)])
@pytest.mark.parametrize("method", ["auto", "eigh", "ttur"])
def test_an_indefinite_sigma_with_n_and_the_larger_trace_is_refused_naming_the_file(
    tmp_path, dim, n_bad, negative, method
) -> None:
    # It used to be applied as the "other" side of factor-eigh, never checked: FID printed.
    sigma = indefinite(dim, seed=dim, negative=negative)
    path = tmp_path / f"bad-{dim}.npz"
    np.savez(path, mu=np.zeros(dim), sigma=sigma, n=np.int64(n_bad))
    bad = Stats.load(path)
    assert bad.trace > 10 * small_trace_stats(dim, 3 * dim, 1).trace
    for good in (small_trace_stats(dim, 3 * dim, 1), small_trace_stats(dim, dim // 3, 2)):  # full rank, N < dim
        for pair in ((good, bad), (bad, good)):
            with pytest.raises(StatsFileError, match=rf"{path.name}.*not positive semidefinite.*eigenvalue is -") as raised:
                fid_from_stats(*pair, method=method)
            reported = float(str(raised.value).split("eigenvalue is ")[1].split(" ")[0])
            assert reported == pytest.approx(negative, rel=1e-6)


@pytest.mark.parametrize("method", ["auto", "eigh", "ttur"])
def test_an_indefinite_sigma_without_a_file_names_the_argument(method) -> None:
    dim = 9
    sigma = indefinite(dim, seed=4, negative=-2.0)
    good = small_trace_stats(dim, 50, 3)
    with pytest.raises(InputError, match="stats_b: sigma is not positive semidefinite.*eigenvalue is -2"):
        fid_from_stats(good, Stats(mu=np.zeros(dim), sigma=sigma, n=80), method=method)
    with pytest.raises(InputError, match="mu2/sigma2: sigma is not positive semidefinite"):
        frechet_distance(good.mu, good.sigma, np.zeros(dim), sigma, method=method)
    # identical covariances (the trace terms cancel) are checked too
    with pytest.raises(InputError, match="stats_a: sigma is not positive semidefinite"):
        fid_from_stats(Stats(mu=np.zeros(dim), sigma=sigma, n=80), Stats(mu=np.ones(dim), sigma=sigma, n=80))


@pytest.mark.filterwarnings("ignore::fidkit.errors.SmallSampleWarning")
def test_the_other_side_is_checked_once_and_definite_sides_take_no_extra_factorisation(monkeypatch) -> None:
    # The check of the side the factor is applied to comes from the Cholesky factorisation the product is
    # formed through: a definite sigma never reaches the shifted check, and results do not depend on the cache.
    calls = []
    original = factors.check_psd
    monkeypatch.setattr(factors, "check_psd", lambda *args: calls.append(args) or original(*args))
    rng = np.random.default_rng(8)
    dim = 30
    reference = Stats.from_features(rng.standard_normal((200, dim)) * np.linspace(3, 0.5, dim))
    generated = Stats(*(lambda s: (s.mu, s.sigma))(Stats.from_features(rng.standard_normal((90, dim)))), n=90)
    first = fid_from_stats(generated, reference)
    assert first.method == "factor-eigh" and calls == []
    assert factors.psd_verified(generated) and factors.psd_verified(reference)
    again = fid_from_stats(reference, generated)
    assert again.value == first.value and calls == []
    # A singular (positive semidefinite) other side: checked with a shift once, then remembered.
    features = rng.standard_normal((100, dim))
    features[:, 0] = 0.0  # a dead feature: sigma is singular, Cholesky fails, the shifted check passes
    singular = Stats(*(lambda s: (s.mu, s.sigma))(Stats.from_features(features)), n=100)
    small_features = rng.standard_normal((10, dim))
    small = Stats.from_features(small_features)
    values = [fid_from_stats(small, singular).value for _ in range(3)]
    assert len(calls) == 1 and values[0] == values[1] == values[2]
    exact = fid_from_arrays(small_features, features)  # both exact factors: the nuclear-norm identity
    assert exact.method == "factor-svd"
    assert values[0] == pytest.approx(exact.value, rel=1e-12)


@pytest.mark.parametrize("scale", [1e-290, 1.0, 1e290])
def test_the_psd_check_of_the_other_side_works_at_extreme_scales(scale) -> None:
    dim = 16
    rng = np.random.default_rng(9)
    good = Stats(mu=np.zeros(dim), sigma=np.cov(rng.standard_normal((60, dim)), rowvar=False) * scale, n=60)
    bad = Stats(mu=np.zeros(dim), sigma=indefinite(dim, 5, -1.0) * scale, n=60)
    with pytest.raises(InputError, match="stats_b: sigma is not positive semidefinite") as raised:
        fid_from_stats(good, bad)
    reported = float(str(raised.value).split("eigenvalue is ")[1].split(" ")[0])
    assert reported == pytest.approx(-1.0 * scale, rel=1e-6)
    # Round-off-sized negative eigenvalues (relative 1e-13) on the other side are accepted.
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    eigenvalues = np.concatenate([rng.uniform(1.0, 2.0, dim - 4), np.full(4, -1e-13)]) * scale
    near = (basis * eigenvalues) @ basis.T
    result = fid_from_stats(good, Stats(mu=np.zeros(dim), sigma=(near + near.T) / 2, n=60))
    assert np.isfinite(result.value)


# --- hostile round 3, 20: a distance that overflows float64 is an error ---------------------------------------------


@pytest.mark.parametrize("dim", [3, 17])
def test_a_distance_that_overflows_is_an_error_naming_the_term(dim) -> None:
    eye = np.eye(dim)
    with pytest.raises(InputError, match=r"overflows float64: the mean term \|\|mu_a - mu_b\|\|\^2"):
        frechet_distance(np.full(dim, 1e160), eye, np.zeros(dim), eye)
    with pytest.raises(InputError, match="overflows float64: the mean term"):
        frechet_distance(np.full(dim, 1.5e308), eye, np.full(dim, -1.5e308), eye)  # mu_a - mu_b itself overflows
    huge = eye * (1.5e308 / 2)  # trace dim * 7.5e307 > 1.8e308
    for method in ("auto", "eigh", "ttur"):
        with pytest.raises(InputError, match="trace of the covariance of mu2/sigma2 .*is beyond 1.8e\\+308"):
            frechet_distance(np.zeros(dim), eye, np.zeros(dim), huge, method=method)
    # Both traces finite but their sum beyond float64: the trace term is computed in two halves.
    big = np.diag(np.r_[1.2e308, np.ones(dim - 1)])
    result = frechet_distance(np.zeros(dim), big, np.zeros(dim), big * 0.9)
    expected = 1.2e308 * (1 + 0.9 - 2 * np.sqrt(0.9)) + (dim - 1) * (1 + 0.9 - 2 * np.sqrt(0.9))
    assert np.isfinite(result.value) and result.value == pytest.approx(expected, rel=1e-12)
    # The same covariance on both sides: exactly the mean term, whatever its trace.
    assert frechet_distance(np.ones(dim), huge, np.zeros(dim), huge).value == dim
    # A sum of two finite terms beyond float64.
    with pytest.raises(InputError, match="overflows float64: the sum of the mean term"):
        frechet_distance(np.r_[1.1e154, np.zeros(dim - 1)], eye, np.zeros(dim), np.diag(np.r_[1.7e308, np.ones(dim - 1)]))


@pytest.mark.parametrize(("first", "second", "dim"), [("z0.npz", "far-away.npz", 4), ("ref stats.npz", "gen.npz", 9)])
def test_an_overflowing_term_of_both_sides_names_both_files(first, second, dim, tmp_path) -> None:
    """The mean term, the trace term and their sum belong to both sides: the error names both files."""
    eye = np.eye(dim)
    Stats(mu=np.zeros(dim), sigma=eye, n=100).save(tmp_path / first)
    Stats(mu=np.full(dim, 1e200), sigma=eye, n=100).save(tmp_path / second)
    with pytest.raises(InputError, match="overflows float64: the mean term") as caught:
        fid_from_stats(Stats.load(tmp_path / first), Stats.load(tmp_path / second))
    assert first in str(caught.value) and second in str(caught.value)
    # A finite mean term and trace term whose sum is beyond float64.
    (tmp_path / "sum").mkdir()
    Stats(mu=np.r_[1.1e154, np.zeros(dim - 1)], sigma=eye, n=100).save(tmp_path / "sum" / first)
    Stats(mu=np.zeros(dim), sigma=np.diag(np.r_[1.7e308, np.ones(dim - 1)]), n=100).save(tmp_path / "sum" / second)
    with pytest.raises(InputError, match="overflows float64: the sum of the mean term") as caught:
        fid_from_stats(Stats.load(tmp_path / "sum" / first), Stats.load(tmp_path / "sum" / second))
    assert first in str(caught.value) and second in str(caught.value)
    # Arrays are named by their arguments.
    with pytest.raises(InputError, match=r"the mean term \|\|mu_a - mu_b\|\|\^2 of mu1/sigma1 and mu2/sigma2"):
        frechet_distance(np.full(dim, 1e160), eye, np.zeros(dim), eye)


# --- hostile round 4: identical rows and a rank-0 side --------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::fidkit.errors.SmallSampleWarning")
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


# --- hostile round 5 (what the docs promise), 1: method="ttur" is the documented name -------------------------------


def test_the_documented_ttur_method_does_not_warn_and_the_old_name_warns_once():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 4)), rng.normal(size=(60, 4)) + 0.1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ttur = fidkit.fid_from_arrays(x, y, method="ttur")
    assert not [w for w in caught if issubclass(w.category, FidkitWarning)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = fidkit.fid_from_arrays(x, y, method="sqrtm")
    old_name = [w for w in caught if "older name" in str(w.message)]
    assert len(old_name) == 1 and old_name[0].filename == __file__  # pointed at the caller's line
    assert old.value == ttur.value


# --- hostile round 7, 1: features on very different scales -------------------------------------------------------


def scale_disparate_sets(dim: int, huge: float, small: float, widen: float, seed: int) -> tuple[np.ndarray, ...]:
    """Two sets of 400 rows: feature 0 the same column of variance `huge` in both, the others of variance `small`
    (times `widen` squared in the second set)."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal(400) * math.sqrt(huge)
    sets = []
    for factor in (1.0, widen):
        rows = rng.standard_normal((400, dim)) * math.sqrt(small) * factor
        rows[:, 0] = shared
        sets.append(rows)
    return tuple(sets)


@pytest.mark.parametrize(
    ("dim", "huge", "small", "widen"),
    [(10, 1e12, 9e-4, 1.0), (10, 1e12, 9e-4, 1.5), (16, 1e8, 1e-2, 1.0), (7, 1e6, 1e-3, 1.2)],
)
def test_features_on_very_different_scales_match_50_digit_reference(dim, huge, small, widen) -> None:
    # The pivoted Cholesky cut every direction below dim * eps * (largest variance), i.e. all the small features
    # (FID 0.11 instead of 0.001 at 1e12 against 9e-4); and below that cut-off the eigensolve lost the small
    # features to round-off of the large one (0.9 relative at a spread of 1e9).
    features_a, features_b = scale_disparate_sets(dim, huge, small, widen, seed=dim)
    mu_a, mu_b = features_a.mean(axis=0), features_b.mean(axis=0)
    sigma_a, sigma_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    reference = mpmath_fid(mu_a, sigma_a, mu_b, sigma_b)
    # float64's floor for tr(sigma_a) + tr(sigma_b) - 2 tr sqrt: the traces alone are rounded to eps of their size.
    # The Procrustes form does not subtract them, and stays far below it (1e-4 of it at a spread of 1e15, where
    # the error left is the factors' round-off of the large variance).
    floor = np.finfo(np.float64).eps * (np.trace(sigma_a) + np.trace(sigma_b))
    results = [fid_from_arrays(features_a, features_b), frechet_distance(mu_a, sigma_a, mu_b, sigma_b)]
    for result in results:
        assert result.method == "factor-procrustes" and result.rank == dim
        assert abs(result.value - reference) <= 1e-2 * floor, (result.value, reference, floor)
        assert result.value == pytest.approx(
            result.mean_term + result.trace_a + result.trace_b - 2 * result.trace_sqrt, abs=4 * floor
        )
    assert results[0].value == fid_from_arrays(features_b, features_a).value  # argument order never matters


def test_a_foreign_file_of_few_rows_on_very_different_scales_keeps_its_rank(tmp_path) -> None:
    # The rank of a pivoted Cholesky factor is decided per feature: the small features are not round-off of the
    # large one, so a covariance of 12 rows has rank 11, not 1.
    features, _ = scale_disparate_sets(40, 1e12, 9e-4, 1.0, seed=3)
    rows = features[:12]
    np.savez(tmp_path / "few.npz", mu=rows.mean(axis=0), sigma=np.cov(rows, rowvar=False))
    stats = Stats.load(tmp_path / "few.npz")
    factor = sqrt_factor(stats)
    assert factor.rank == 11
    # Reproduced to round-off of each entry's own scale sqrt(sigma_ii sigma_jj), not of the largest variance.
    scale = np.sqrt(np.outer(np.diagonal(stats.sigma), np.diagonal(stats.sigma)))
    assert np.max(np.abs(factor.matrix @ factor.matrix.T - stats.sigma) / scale) < 1e-12
    exact = fid_from_arrays(rows, features[12:30])
    assert fid_from_stats(stats, Stats.from_features(features[12:30])).value == pytest.approx(exact.value, rel=1e-6)


def test_a_factor_that_had_to_be_computed_in_units_of_the_variances_takes_the_procrustes_route() -> None:
    # Feature 1 is 0.01 x feature 0 up to 1e-6 of noise: LAPACK's rule (dim eps of the largest variance) stopped
    # before it and left out 1e-12 of its variance, more than round-off of its own; factored again in units of
    # the variances, that factor's columns are not graded by size, and the Procrustes form keeps the accuracy.
    rng = np.random.default_rng(1)
    sides = []
    for widen in (1.0, 1.1):
        rows = rng.standard_normal((300, 6)) * widen
        rows[:, 1] = 0.01 * (rows[:, 0] + 1e-6 * rng.standard_normal(300))
        sides.append(Stats(mu=rows.mean(axis=0), sigma=np.cov(rows, rowvar=False)))
    factor = sqrt_factor(sides[0])
    assert factor.scaled and factor.rank == 6
    assert factors.scale_spread(sides[0]) < 2.0**20
    result = fid_from_stats(*sides)
    assert result.method == "factor-procrustes"
    reference = mpmath_fid(sides[0].mu, sides[0].sigma, sides[1].mu, sides[1].sigma)
    assert result.value == pytest.approx(reference, rel=1e-12)


@pytest.mark.parametrize("huge", [1e12, 1e10])
@pytest.mark.parametrize("method", ["auto", "eigh", "ttur"])
def test_an_indefinite_sigma_beside_a_huge_variance_is_refused(method, huge, tmp_path) -> None:
    # diag(huge, 1, 1) with sigma[1, 2] = 2 has the eigenvalue -1: -1e-12 of the largest variance, which passed
    # as round-off on the factor routes (FID 0.0); in units of the variances it is -1.
    sigma = np.diag([huge, 1.0, 1.0])
    sigma[1, 2] = sigma[2, 1] = 2.0
    good = Stats.from_features(np.random.default_rng(0).standard_normal((50, 3)) * [math.sqrt(huge), 1, 1])
    bad = Stats(mu=np.zeros(3), sigma=sigma, n=50)
    for pair in ((good, bad), (bad, good), (bad, Stats(mu=np.ones(3), sigma=sigma, n=50))):
        with pytest.raises(InputError, match=r"not positive semidefinite.*eigenvalue is -1 \(-1 in units of its"):
            fid_from_stats(*pair, method=method)
    np.savez(tmp_path / "bad.npz", mu=np.zeros(3), sigma=sigma)
    with pytest.raises(StatsFileError, match=r"bad\.npz: sigma is not positive semidefinite"):
        fid_from_stats(Stats.load(tmp_path / "bad.npz"), good, method=method)
    # The same block among tiny variances is refused too; round-off-sized negative eigenvalues are not.
    tiny = np.diag([huge, 1e-6, 1e-6])
    tiny[1, 2] = tiny[2, 1] = 2e-6
    with pytest.raises(InputError, match="not positive semidefinite"):
        fid_from_stats(good, Stats(mu=np.zeros(3), sigma=tiny, n=50), method=method)
    near = np.diag([huge, 1e-6, 1e-6])
    near[1, 2] = near[2, 1] = 1e-6 * (1 + 1e-13)
    assert math.isfinite(fid_from_stats(good, Stats(mu=np.zeros(3), sigma=near, n=50), method=method).value)


@pytest.mark.parametrize(("n", "dim", "seed"), [(300, 64, 0), (600, 256, 1)])
def test_float32_covariance_factored_at_its_own_round_off(n: int, dim: int, seed: int) -> None:
    """A float32 covariance computed as (X^T X - n mu mu^T) / (n - 1), spectrum decaying into float32 noise: the
    pivoted Cholesky stops at float32's round-off and the factor route agrees with the dense ones (it used to run
    on into the noise and blame a 'stored factor' there is none of)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0] * np.logspace(0, -4, dim)
    rows = (rng.random((n, dim)) @ basis.T + 0.02).astype(np.float32)
    mu = rows.mean(axis=0)
    sigma = (rows.T @ rows - n * np.outer(mu, mu)) / (n - 1)
    first = Stats(mu=mu, sigma=((sigma + sigma.T) / 2).astype(np.float32))
    second = Stats.from_features(rows[: dim // 2].astype(np.float64))
    values = {m: fid_from_stats(first, second, method=m).value for m in ("eigh", "auto", "ttur")}
    scale = dim * float(np.finfo(np.float32).eps) * (first.trace + second.trace)
    assert abs(values["auto"] - values["eigh"]) <= scale
    assert abs(values["ttur"] - values["eigh"]) <= scale
