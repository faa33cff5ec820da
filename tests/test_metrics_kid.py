"""KID: the unbiased MMD^2 by its definition, torch-fidelity's numbers on the same subsets, the draws."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import logging
from pathlib import Path

import numpy as np
import pytest

from fidkit.errors import InputError
from fidkit.metrics import KIDResult, kid, mmd2_unbiased

# The function kid shadows its module as an attribute of fidkit.metrics; import_module returns the module.
kid_module = importlib.import_module("fidkit.metrics.kid")
_LOADER = Path(__file__).parent / "reference" / "torch_fidelity_loader.py"


def torch_fidelity_module(name: str):
    spec = importlib.util.spec_from_file_location("torch_fidelity_loader", _LOADER)
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    return loader.torch_fidelity_module(name)


def features(seed: int, n_rows: int, dim: int, shift: float = 0.0, dtype=np.float64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Non-negative and skewed like pool_3 activations, so the kernel values are far from 1.
    return (np.abs(rng.standard_normal((n_rows, dim))) * 0.6 + shift).astype(dtype)


def mmd_by_definition(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> float:
    """The unbiased estimator written out with Python sums over pairs (tiny samples only)."""
    m, dim = x.shape

    def k(u, v):
        return (float(np.dot(u, v)) / dim + coef0) ** degree

    same = sum(k(x[i], x[j]) + k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2))
    cross = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return same / (m * (m - 1)) - 2.0 * cross / (m * m)


def test_mmd_matches_its_definition():
    x, y = features(1, 7, 5), features(2, 7, 5, shift=0.3)
    assert mmd2_unbiased(x, y) == pytest.approx(mmd_by_definition(x, y), rel=1e-13)
    assert mmd2_unbiased(x, y, degree=2, coef0=0.5) == pytest.approx(mmd_by_definition(x, y, 2, 0.5), rel=1e-13)


def test_kid_equals_torch_fidelity_on_the_same_subsets():
    metric_kid = torch_fidelity_module("metric_kid")
    import torch

    a, b = features(3, 310, 48, shift=0.05), features(4, 270, 48)
    ours = kid(a, b, subsets=25, subset_size=120, seed=2021, sampling="torch-fidelity")
    theirs = metric_kid.kid_features_to_metric(
        torch.from_numpy(a), torch.from_numpy(b), kid_subsets=25, kid_subset_size=120, rng_seed=2021, verbose=False
    )
    assert ours.mean == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-9, abs=0)
    assert ours.std == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-9, abs=0)
    assert ours.subset_size == 120 and len(ours.values) == 25


def test_kid_defaults_are_torch_fidelitys():
    """100 subsets of 1000, seed 2020, cubic kernel with gamma 1/dim and coef0 1 (torch-fidelity's defaults)."""
    metric_kid = torch_fidelity_module("metric_kid")
    import torch

    a, b = features(5, 1000, 16, shift=0.1), features(6, 1000, 16)
    ours = kid(a, b, subsets=3, sampling="torch-fidelity")
    theirs = metric_kid.kid_features_to_metric(torch.from_numpy(a), torch.from_numpy(b), kid_subsets=3, verbose=False)
    assert ours.mean == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-9, abs=0)
    assert (ours.seed, ours.subset_size, ours.degree, ours.coef0) == (2020, 1000, 3, 1.0)
    assert ours.gamma == 1.0 / 16


def test_kid_on_float32_is_computed_in_float64():
    """float32 features give the float64 result of the same values; torch-fidelity's float32 kernel is near it."""
    metric_kid = torch_fidelity_module("metric_kid")
    import torch

    a, b = features(7, 400, 64, shift=0.2, dtype=np.float32), features(8, 400, 64, dtype=np.float32)
    ours = kid(a, b, subsets=10, subset_size=200, sampling="torch-fidelity")
    in_float64 = kid(a.astype(np.float64), b.astype(np.float64), subsets=10, subset_size=200, sampling="torch-fidelity")
    assert ours.values == in_float64.values
    theirs = metric_kid.kid_features_to_metric(
        torch.from_numpy(a), torch.from_numpy(b), kid_subsets=10, kid_subset_size=200, verbose=False
    )
    assert ours.mean == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-3)


def test_subsets_are_drawn_without_replacement_in_torch_fidelitys_order(monkeypatch):
    drawn = []
    real_mmd = kid_module._checked_mmd2

    def spy(x, y, *args):
        drawn.append((x.copy(), y.copy()))
        return real_mmd(x, y, *args)

    monkeypatch.setattr(kid_module, "_checked_mmd2", spy)
    a = np.arange(40, dtype=np.float64)[:, None] * np.ones((1, 3))
    b = -np.arange(30, dtype=np.float64)[:, None] * np.ones((1, 3))
    kid(a, b, subsets=4, subset_size=10, seed=11, sampling="torch-fidelity")
    assert len(drawn) == 4
    rng = np.random.RandomState(11)
    for x, y in drawn:
        rows_a = rng.choice(40, 10, replace=False)
        rows_b = rng.choice(30, 10, replace=False)
        # The drawn rows are passed in position order (the MMD^2 depends on the set only).
        np.testing.assert_array_equal(x[:, 0], np.sort(rows_a))
        np.testing.assert_array_equal(y[:, 0], -np.sort(rows_b))
        assert len(set(rows_a.tolist())) == 10
    drawn.clear()
    kid(a, b, subsets=2, subset_size=10, seed=11)
    generator = np.random.default_rng(11)
    np.testing.assert_array_equal(drawn[0][0][:, 0], np.sort(generator.choice(40, 10, replace=False)))


def test_seed_and_sampling_determine_the_draws():
    a, b = features(9, 200, 8, shift=0.2), features(10, 200, 8)
    first = kid(a, b, subsets=5, subset_size=50, seed=1)
    assert kid(a, b, subsets=5, subset_size=50, seed=1) == first
    assert kid(a, b, subsets=5, subset_size=50, seed=2).values != first.values
    assert kid(a, b, subsets=5, subset_size=50, seed=1, sampling="torch-fidelity").values != first.values
    assert first.std == pytest.approx(np.std(first.values), rel=1e-15)
    assert float(first) == first.mean
    assert isinstance(first.to_dict()["values"], list)


def test_subset_size_is_capped_at_the_smaller_side():
    a, b = features(11, 60, 6, shift=0.3), features(12, 60, 6)
    result = kid(a, b, subsets=3, subset_size=1000)
    assert result.subset_size == 60
    assert result.std == 0.0
    assert result.mean == pytest.approx(mmd2_unbiased(a, b), rel=1e-12)


def test_large_subsets_are_summed_in_blocks(monkeypatch):
    a, b = features(13, 90, 10, shift=0.1), features(14, 90, 10)
    whole = mmd2_unbiased(a, b)
    monkeypatch.setattr(kid_module, "_KERNEL_BLOCK_ENTRIES", 700)  # 7 rows of 90 per block
    assert mmd2_unbiased(a, b) == pytest.approx(whole, rel=1e-12)


def test_kid_separates_distributions():
    same = kid(features(15, 600, 12), features(16, 600, 12), subsets=20, subset_size=300)
    shifted = kid(features(15, 600, 12), features(16, 600, 12, shift=0.2), subsets=20, subset_size=300)
    assert abs(same.mean) < 3 * same.std + 1e-3
    assert shifted.mean > 10 * abs(same.mean)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seed": None}, "seed"),
        ({"seed": -1}, "seed"),
        ({"sampling": "torch"}, "sampling"),
        ({"subsets": 0}, "subsets"),
        ({"subset_size": 1}, "subset_size"),
        ({"gamma": 0.0}, "gamma"),
        ({"degree": 0}, "degree"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        kid(features(1, 20, 4), features(2, 20, 4), **kwargs)


def test_bad_features_are_refused():
    with pytest.raises(InputError, match="dim"):
        kid(features(1, 20, 4), features(2, 20, 5))
    with pytest.raises(InputError, match="NaN"):
        kid(np.full((5, 4), np.nan), features(2, 20, 4))
    with pytest.raises(InputError, match="at least 2"):
        kid(features(1, 1, 4), features(2, 20, 4))
    assert isinstance(kid(features(1, 20, 4), features(2, 20, 4), subsets=1), KIDResult)


# --- hostile round 4, 6: KID's capped subset size is a debug line ---------------------------------------------------


def test_kid_capping_its_subset_size_is_not_an_info_line(caplog):
    from fidkit.metrics.kid import kid

    rng = np.random.default_rng(0)
    with caplog.at_level(logging.DEBUG, logger="fidkit"):
        result = kid(rng.normal(size=(20, 4)), rng.normal(size=(25, 4)), subset_size=1000, subsets=3)
    capped = [record for record in caplog.records if "capped" in record.getMessage()]
    assert capped and all(record.levelno == logging.DEBUG for record in capped)
    assert result.subset_size == 20


# --- hostile round 4: KID beyond float64 ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scale", "options"), [(1e60, {}), (1.0, {"coef0": 1e200}), (1.0, {"gamma": 1e300})]
)
def test_a_kernel_that_overflows_is_an_error_not_a_nan(scale, options) -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(60, 8)) * scale, rng.normal(size=(50, 8)) * scale
    with pytest.raises(InputError, match="overflows float64"):
        kid(a, b, subsets=2, subset_size=40, **options)


# --- hostile round 8: KID under a common offset of the features -----------------------------------------------------


def exact_mmd(x: np.ndarray, y: np.ndarray, gamma=None, coef0: float = 1.0, degree: int = 3) -> float:
    """The unbiased MMD^2 of the arrays' float values in exact integer arithmetic, rounded once to float."""
    from fractions import Fraction

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, dim = x.shape
    g = Fraction(1, dim) if gamma is None else Fraction(gamma)
    c = Fraction(coef0)
    # Every float is an integer over a power of two, so the largest denominator is a common one.
    scale = max(Fraction(v).denominator for v in np.concatenate([x.ravel(), y.ravel()]).tolist())

    def as_ints(a):
        return np.array([[int(Fraction(v) * scale) for v in row] for row in a.tolist()], dtype=object)

    xi, yi = as_ints(x), as_ints(y)
    # (g dot / scale^2 + c) = (dot g.num c.den + c.num g.den scale^2) / (g.den c.den scale^2)
    denominator = g.denominator * c.denominator * scale * scale

    def pair_sum(a, b, same):
        base = a.dot(b.T) * (g.numerator * c.denominator) + c.numerator * g.denominator * scale * scale
        kernel = base**degree
        return sum(kernel.ravel().tolist()) - (sum(kernel[i, i] for i in range(m)) if same else 0)

    value = Fraction(pair_sum(xi, xi, True) + pair_sum(yi, yi, True), m * (m - 1)) - Fraction(
        2 * pair_sum(xi, yi, False), m * m
    )
    return float(value / Fraction(denominator) ** degree)


def offset_features(seed, m, dim, offset, spread, dtype=np.float64):
    rng = np.random.default_rng(seed)
    centre = np.full(dim, float(offset)) if np.isscalar(offset) else offset
    x = (centre + rng.standard_normal((m, dim)) * spread).astype(dtype)
    y = (centre + rng.standard_normal((m, dim)) * spread * 1.05).astype(dtype)
    return x, y


@pytest.mark.parametrize(
    ("m", "dim", "offset", "spread", "dtype", "kernel"),
    [
        (300, 8, 100.0, 1e-3, np.float32, {}),  # the review's case: 1.3 % off
        (40, 8, 1e3, 1e-5, np.float64, {}),  # off by a factor of 8
        (40, 8, 1e3, 1e-4, np.float32, {}),
        (25, 12, 1e5, 1e-3, np.float64, {}),
        (30, 16, np.linspace(-3e4, 5e4, 16), 1.0, np.float64, {}),
        (30, 16, np.linspace(-3e4, 5e4, 16), 1.0, np.float64, {"degree": 2, "coef0": 0.5}),
        (20, 6, 1e4, 1e-2, np.float64, {"degree": 5, "gamma": 0.01}),
        (50, 20, 0.3, 0.6, np.float64, {}),  # ordinary features
        (50, 20, 0.0, 1.0, np.float32, {"coef0": -1.3}),
    ],
)
def test_mmd_under_a_common_offset_is_exact(m, dim, offset, spread, dtype, kernel):
    """The kernel values are ~K0^3 and MMD^2 a difference of their sums: about the centre it is exact."""
    x, y = offset_features(m + dim, m, dim, offset, spread, dtype)
    exact = exact_mmd(x, y, **kernel)
    assert mmd2_unbiased(x, y, **kernel) == pytest.approx(exact, rel=1e-11, abs=0)
    # The round-off bound that decides the refusal is a bound: the true error lies within it.
    gamma = kernel.get("gamma", 1.0 / dim)
    value, bound = kid_module._mmd2_and_bound(
        x.astype(np.float64), y.astype(np.float64), gamma, kernel.get("coef0", 1.0), kernel.get("degree", 3)
    )
    assert abs(value - exact) <= bound < abs(exact)


def test_kid_under_a_common_offset_is_exact():
    x, y = offset_features(0, 60, 10, 300.0, 2e-4, np.float32)
    result = kid(x, y, subsets=2, subset_size=60)
    assert result.values[0] == result.values[1] == result.mean
    assert result.mean == pytest.approx(exact_mmd(x, y), rel=1e-11, abs=0)


@pytest.mark.parametrize(("offset", "m", "dim"), [(1e3, 30, 8), (1e6, 12, 5), (1.0, 7, 3)])
def test_an_mmd_below_its_round_off_is_refused(offset, m, dim):
    """Samples of one repeated row, one of them with a row moved: MMD^2_u is exactly 0, the float64 result noise."""
    x = np.full((m, dim), offset)
    y = x.copy()
    y[0, 0] += offset * 1e-7
    assert exact_mmd(x, y) == 0.0
    with pytest.raises(InputError, match="cannot be resolved in float64"):
        mmd2_unbiased(x, y)
    with pytest.raises(InputError, match="cannot be resolved in float64"):
        kid(x, y, subsets=1)
    # Identical constant samples are exactly 0 with no round-off at all: a number, not an error.
    assert mmd2_unbiased(x, x) == 0.0


def test_one_subset_below_its_round_off_is_no_reason_to_refuse_the_kid(monkeypatch):
    """A subset's MMD^2 near 0 by chance (two sets of one distribution) is honest beside the subsets' spread; only a
    KID whose mean and std are both below the round-off bound is refused."""
    results = iter([(1e-15, 1e-12), (1e-3, 1e-12), (-1e-3, 1e-12)])
    monkeypatch.setattr(kid_module, "_mmd2_and_bound", lambda *args: next(results))
    rows = np.random.default_rng(0).normal(size=(20, 4))
    result = kid(rows, rows + 1.0, subsets=3, subset_size=10)
    assert result.values == (1e-15, 1e-3, -1e-3)
    assert result.std > 1e-4
    results = iter([(1e-15, 1e-12), (2e-15, 1e-12), (-1e-15, 1e-12)])
    with pytest.raises(InputError, match="KID is 6.67e-16 with a std of 1.25e-15"):
        kid(rows, rows + 1.0, subsets=3, subset_size=10)


def test_kernels_at_the_edge_of_float64_are_a_kid_or_the_overflow_error_never_a_traceback_or_other_advice():
    """Finite terms whose fsum overflows raised OverflowError; a bound or a std past float64 (the squares of
    values near 1e300) gave "cannot be resolved ... repeated rows" instead of the overflow's fix."""
    rng = np.random.default_rng(3)
    base_x, base_y = np.abs(rng.standard_normal((2, 50, 8)))
    for scale in np.geomspace(1e49, 1e52, 10):
        try:
            result = kid(base_x * scale, base_y * scale, subsets=2, subset_size=20)
        except InputError as error:
            assert "overflows float64" in str(error) and "scale them" in str(error)
        else:
            assert np.isfinite(result.mean) and np.isfinite(result.std)
    # Values near 1e300 whose squares overflow: a KID with a finite std.
    result = kid(base_x * 1e50, base_y * 1e50, subsets=3, subset_size=20)
    assert np.isfinite(result.std) and result.std > 0
    features = np.abs(rng.standard_normal((40, 16))) * 0.6
    with pytest.raises(InputError, match="overflows float64"):
        kid(features[:20], features[20:], subsets=2, subset_size=20, gamma=7.462935686310053e101)


def test_a_negative_coef0_cancelling_k0_does_not_inflate_the_round_off_bound():
    """K0^p errs by p |K0|^(p-1) eps k0_size: bounding it by k0_size^p refused an exact KID (-43.15 against a
    bound of 1e3 at degree 5)."""
    rng = np.random.default_rng(0)
    centre = np.array([300.0, 100.0, 200.0, 50.0])
    x = centre + 0.01 * rng.standard_normal((12, 4))
    y = centre + 0.01 * rng.standard_normal((12, 4))
    gamma = 1.0 / 4
    coef0 = -gamma * float(centre @ centre)
    value = mmd2_unbiased(x, y, coef0=coef0, degree=5)
    exact = exact_mmd(x, y, coef0=coef0, degree=5)
    assert value == pytest.approx(exact, rel=1e-9)


def test_a_kernel_degree_above_the_bound_is_refused_before_any_allocation():
    # (degree + 1)^3 pair sums: degree 1000 took gigabytes and was killed.
    rows = np.random.default_rng(1).normal(size=(10, 3))
    assert np.isfinite(kid(rows, rows + 1.0, subsets=1, subset_size=5, degree=kid_module.MAX_DEGREE).mean)
    for call in (lambda: kid(rows, rows + 1.0, degree=1000), lambda: mmd2_unbiased(rows, rows + 1.0, degree=33)):
        with pytest.raises(InputError, match="degree must be at most 32"):
            call()
