"""The Fréchet distance: against a 50-digit reference, the exact low-rank identity, and its properties."""

from __future__ import annotations

import json
import math
import warnings

import mpmath
import numpy as np
import pytest
import scipy.linalg

from fidkit.errors import FidkitError, FidkitWarning, InputError, SmallSampleWarning
from fidkit.frechet import (
    FrechetResult,
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
