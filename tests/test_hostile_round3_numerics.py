"""Hostile review, round 3: the numerics items (PSD on every route, thread-safe FID.update, distributed
identity checks, value_range extremes, non-finite results, a broken process group, copy/pickle of FID, the
device probe).

Everything here runs without the network except where a test says otherwise: features are fed with
``FID._update_features`` or through a fake extractor, and the two-rank tests use gloo with statistics only.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fidkit.errors import InputError, SmallSampleWarning, StatsFileError
from fidkit.frechet import factors, fid_from_arrays, fid_from_stats, frechet_distance
from fidkit.stats import Stats


@pytest.fixture(autouse=True)
def _quiet_small_samples():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        yield


# ------------------------------------------------------------------------ 2. PSD on every route, both sides


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


# ------------------------------------------------------------------------ 7. value_range extremes


@pytest.mark.parametrize(
    "value_range, message",
    [
        ((-1e308, 1e308), "span hi - lo overflows"),
        ((-1.5e308, 0.5e308), "span hi - lo overflows"),
        ((0.0, 1e-320), "quantization step"),
        ((5e-324, 1e-310), "quantization step"),
        ((1e20, 1e20 + 1e5), "quantization step"),
        ((-3.0, -3.0 + 1e-14), "quantization step"),
        ((0.0, float("inf")), "finite with lo < hi"),
        ((float("-inf"), 0.0), "finite with lo < hi"),
        ((float("nan"), 1.0), "finite with lo < hi"),
        ((1.0, 1.0), "finite with lo < hi"),
        ((1.0, -1.0), "finite with lo < hi"),
        (("0", "1"), "pair"),
        ((0.0, 1.0, 2.0), "pair"),
        ((False, True), "pair"),
        (1.0, "pair"),
    ],
)
def test_value_ranges_that_cannot_quantize_are_refused_before_any_image(value_range, message) -> None:
    from fidkit._validate import as_image_batch, check_value_range

    with pytest.raises(InputError, match=message):
        check_value_range(value_range)
    with pytest.raises(InputError, match=message):
        as_image_batch(np.zeros((1, 4, 4, 3), np.float32), "x", value_range=value_range)


@pytest.mark.parametrize("value_range", [(0.0, 1e-300), (-1.7e308, 1.0e-300), (1e20, 1e21), (-1e-3, 1e-3), (0.0, 255.0)])
def test_extreme_but_representable_value_ranges_quantize_every_level(value_range) -> None:
    from fidkit._validate import as_image_batch

    lo, hi = value_range
    levels = np.arange(256, dtype=np.float64)
    images = (lo + levels / 255 * (hi - lo)).reshape(1, 16, 16, 1)
    quantized = as_image_batch(images, "x", value_range=value_range)
    np.testing.assert_array_equal(quantized[0, :, :, 0].ravel(), levels.astype(np.uint8))
