"""The evaluation table (fidkit.metrics.evaluate): each number equals its metric function, the intervals are the
bootstrap / half-sample functions' with derived seeds, statistics sides and missing outputs are refused clearly."""

from __future__ import annotations

import doctest
import importlib
import itertools
import json
import warnings

import numpy as np
import pytest

from fidkit.errors import FidkitWarning, InputError
from fidkit.features import Features
from fidkit.frechet import fid_from_arrays, fid_from_stats
from fidkit.metrics import (
    DEFAULT_METRICS,
    METRICS,
    IntervalSpec,
    MetricTable,
    bootstrap,
    bootstrap_fid,
    density_coverage,
    evaluate,
    half_sample,
    inception_score,
    kid,
    manifold_metrics,
    outputs_needed,
    parse_metrics,
    precision_recall,
)
from fidkit.metrics.halfsample import half_sample_draws, summarise_half_samples
from fidkit.stats import Stats

from cli_runs import _run
from stand_ins import _features_file

table_module = importlib.import_module("fidkit.metrics.table")

SMALL = dict(kid_subset_size=40, kid_subsets=6, is_splits=4)


def make_side(seed: int, n: int, shift: float = 0.0, outputs=("features", "logits", "spatial"), dim: int = 6):
    rng = np.random.default_rng(seed)
    extra = {}
    if "logits" in outputs:
        extra["logits"] = rng.normal(shift, 2.0, (n, 12))
    if "spatial" in outputs:
        extra["spatial"] = rng.normal(shift, 1.0, (n, 5))
    return Features(rng.normal(shift, 1.0, (n, dim)), **extra)


@pytest.fixture(scope="module")
def pair():
    return make_side(1, 120, 0.3), make_side(2, 140)


# --------------------------------------------------------------------------------------------- the numbers


def test_each_number_equals_its_metric_function(pair):
    a, b = pair
    table = evaluate(a, b, "all", seed=7, k_precision=3, k_density=4, **SMALL)
    assert table.keys() == ("fid", "kid", "is_a", "is_b", "sfid", "precision", "recall", "density", "coverage")
    assert table["fid"].value == fid_from_arrays(a.rows, b.rows).value
    assert table["sfid"].value == fid_from_arrays(a.spatial, b.spatial).value
    direct_kid = kid(a.rows, b.rows, subsets=6, subset_size=40, seed=7)
    assert (table["kid"].value, table["kid"].std) == (direct_kid.mean, direct_kid.std)
    for key, logits in (("is_a", a.logits), ("is_b", b.logits)):
        direct = inception_score(logits, splits=4, seed=7)
        assert (table[key].value, table[key].std) == (direct.mean, direct.std)
    # b is the real set: precision is the share of a on b's manifold (ADM's argument order: real, fake).
    manifold = manifold_metrics(b.rows, a.rows, k_pr=3, k_dc=4)
    pr, dc = precision_recall(b.rows, a.rows, k=3), density_coverage(b.rows, a.rows, k=4)
    for key in ("precision", "recall", "density", "coverage"):
        assert table[key].value == getattr(manifold, key)
    assert (table["precision"].value, table["recall"].value) == (pr.precision, pr.recall)
    assert (table["density"].value, table["coverage"].value) == (dc.density, dc.coverage)
    assert float(table["fid"]) == table["fid"].value
    assert table["kid"].n_a == 120 and table["kid"].n_b == 140
    assert (table["is_a"].n_a, table["is_a"].n_b, table["is_b"].n_a, table["is_b"].n_b) == (120, None, None, 140)
    assert table["fid"].std is None and table["precision"].std is None
    assert dict(table["precision"].details)["k"] == 3 and dict(table["coverage"].details)["k"] == 4


def test_torch_fidelity_sampling_passes_through(pair):
    a, b = pair
    table = evaluate(a, b, "kid,is", seed=2020, sampling="torch-fidelity", **SMALL)
    direct = kid(a.rows, b.rows, subsets=6, subset_size=40, seed=2020, sampling="torch-fidelity")
    assert table["kid"].value == direct.mean
    assert table["is_a"].value == inception_score(a.logits, splits=4, seed=2020, sampling="torch-fidelity").mean


def test_precision_is_measured_against_the_reference():
    """a concentrated inside b's support: precision (a on b's manifold) near 1, recall (b covered by a) low."""
    rng = np.random.default_rng(3)
    a = Features(rng.normal(0.0, 0.2, (150, 3)))
    b = Features(rng.normal(0.0, 1.0, (150, 3)))
    table = evaluate(a, b, "prdc")
    assert table["precision"].value > 0.95 and table["recall"].value < 0.5


def test_is_of_b_only_when_b_holds_logits(pair):
    a, _ = pair
    b = make_side(2, 140, outputs=("features",))
    table = evaluate(a, b, "is", **SMALL)
    assert table.keys() == ("is_a",)


def test_default_is_fid_and_stats_sides_give_the_fid_of_the_statistics(pair):
    a, b = pair
    assert DEFAULT_METRICS == ("fid",)
    stats_b = b.stats()
    table = evaluate(a, stats_b)
    assert table.keys() == ("fid",)
    assert table["fid"].value == fid_from_stats(a.stats(), stats_b).value
    both = evaluate(a.stats(), stats_b)
    assert both["fid"].value == table["fid"].value
    foreign = Stats(mu=stats_b.mu, sigma=stats_b.sigma)  # a TTUR / pytorch-fid file: no N
    table = evaluate(a, foreign, ["fid"])
    assert table.n_b is None and table["fid"].n_b is None
    assert "images: a (evaluated) 120, b (reference) unknown" in table.format()


# --------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "metrics, role, what",
    [("kid", "b", "feature rows"), ("prdc", "b", "feature rows"), ("sfid", "b", "spatial"), ("is", "a", "logits")],
)
def test_a_statistics_side_is_refused_naming_metric_side_and_fix(pair, metrics, role, what):
    a, b = pair
    sides = {"a": a, "b": b}
    sides[role] = Stats.from_features(sides[role].rows)
    with pytest.raises(InputError) as error:
        evaluate(sides["a"], sides["b"], metrics, **SMALL)
    message = str(error.value)
    label = {"kid": "KID", "prdc": "precision/recall", "sfid": "sFID", "is": "Inception Score"}[metrics]
    fix = f"fidkit features SRC --save F.npz --metrics {metrics}"
    for part in (label, f"side {role}", what, "statistics only", fix):
        assert part in message, (part, message)


def test_fid_interval_needs_features_of_both_sides(pair):
    a, b = pair
    with pytest.raises(InputError, match=r"an interval for FID needs the feature rows .* side b .*statistics only"):
        evaluate(a, b.stats(), "fid", ci=IntervalSpec(n_resamples=5))


@pytest.mark.parametrize("metrics, missing", [("is", "logits"), ("sfid", "spatial")])
def test_features_without_the_output_are_refused(pair, metrics, missing):
    a, b = pair
    bare = Features(a.rows)
    with pytest.raises(InputError, match=f"side a .* hold no {missing}.*--metrics {metrics}"):
        evaluate(bare, b, metrics, **SMALL)


def test_refusals_come_before_any_work(pair, monkeypatch):
    a, b = pair
    monkeypatch.setattr(table_module, "fid_from_arrays", lambda *args: pytest.fail("computed before refusing"))
    with pytest.raises(InputError, match="sFID"):
        evaluate(a, Features(b.rows), "fid,sfid")  # b holds no spatial features


def test_other_sides_and_arguments_are_refused(pair):
    a, b = pair
    with pytest.raises(InputError, match=r"fidkit.Features\(array\)"):
        evaluate(a.rows, b)
    with pytest.raises(InputError, match="IntervalSpec"):
        evaluate(a, b, ci=0.95)
    for bad in (dict(seed=-1), dict(kid_subsets=0), dict(is_splits=0), dict(k_precision=0), dict(memory_budget=0),
                dict(sampling="numpy")):
        with pytest.raises(InputError):
            evaluate(a, b, "fid", **bad)


def test_half_samples_too_small_for_a_metric_are_refused_before_work(pair):
    a, b = pair
    with pytest.raises(InputError, match="half-samples keeps 60 of the 120 images of side a.*splits"):
        evaluate(a, b, "is", is_splits=61, ci=IntervalSpec(n_resamples=2))


def test_parse_metrics():
    assert parse_metrics("fid,kid") == ("fid", "kid")
    assert parse_metrics(" KID , fid,kid,") == ("fid", "kid")
    assert parse_metrics(["prdc", "is", "fid,sfid"]) == ("fid", "is", "sfid", "prdc")
    assert parse_metrics("all") == METRICS == ("fid", "kid", "is", "sfid", "prdc")
    assert parse_metrics(("fid",)) == ("fid",)
    with pytest.raises(InputError, match="no metric named"):
        parse_metrics(" , ")
    with pytest.raises(InputError, match=r"unknown metric 'fidd'; valid names: fid, kid, is, sfid, prdc \(or all\)"):
        parse_metrics("fid,fidd")
    with pytest.raises(InputError, match="'precision' is part of 'prdc'"):
        parse_metrics("precision,recall")
    for bad in (5, [1, 2], None):
        with pytest.raises(InputError, match="valid names"):
            parse_metrics(bad)


def test_interval_spec_is_validated():
    spec = IntervalSpec()
    assert (spec.level, spec.n_resamples, spec.seed, spec.kid_subsets) == (0.95, 200, None, 10)
    for bad in (dict(level=1.0), dict(level=0), dict(n_resamples=1), dict(seed=-2), dict(seed=1.5),
                dict(kid_subsets=0), dict(n_resamples=True)):
        with pytest.raises(InputError):
            IntervalSpec(**bad)


# --------------------------------------------------------------------------------------------- outputs_needed


def test_outputs_needed_per_metric():
    spec = IntervalSpec()
    expected = {
        ("fid", False): (None, None),
        ("fid", True): (("features",), ("features",)),
        ("kid", False): (("features",), ("features",)),
        ("is", False): (("features", "logits"), None),
        ("sfid", False): (("features", "spatial"), ("features", "spatial")),
        ("prdc", False): (("features",), ("features",)),
    }
    for name in METRICS:
        for with_ci in (False, True):
            a, b = expected.get((name, with_ci), expected[(name, False)])
            assert outputs_needed(name, ci=spec if with_ci else None) == {"a": a, "b": b}, (name, with_ci)
    assert outputs_needed("all", ci=None) == {"a": ("features", "logits", "spatial"), "b": ("features", "spatial")}
    assert outputs_needed("is,fid", ci=None) == {"a": ("features", "logits"), "b": None}


def test_outputs_needed_is_exactly_what_evaluate_needs():
    """Every combination of metrics, with and without intervals: sides holding just what outputs_needed lists
    (statistics where it says None) evaluate; a side with one listed output fewer is refused."""
    spec = IntervalSpec(n_resamples=2, kid_subsets=1)
    full_a, full_b = make_side(4, 40, 0.2, dim=3), make_side(5, 44, dim=3)
    small = dict(kid_subset_size=8, kid_subsets=1, is_splits=2)

    def side(full: Features, outputs):
        if outputs is None:
            return full.stats()
        return Features(full.rows, **{name: full.output(name) for name in outputs if name != "features"})

    for size in range(1, len(METRICS) + 1):
        for names in itertools.combinations(METRICS, size):
            for ci in (None, spec):
                needed = outputs_needed(names, ci=ci)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # N < dim is fine here
                    table = evaluate(side(full_a, needed["a"]), side(full_b, needed["b"]), names, ci=ci, **small)
                assert table.metrics == names
                if size > 1:
                    continue
                for role, outputs in needed.items():
                    for dropped in outputs or ():
                        fewer = None if dropped == "features" else tuple(o for o in outputs if o != dropped)
                        sides = {"a": side(full_a, needed["a"]), "b": side(full_b, needed["b"])}
                        sides[role] = side(full_a if role == "a" else full_b, fewer)
                        with pytest.raises(InputError):
                            evaluate(sides["a"], sides["b"], names, ci=ci, **small)


# --------------------------------------------------------------------------------------------- intervals


def test_intervals_are_the_bootstrap_and_half_sample_functions_with_derived_seeds(pair):
    a, b = pair
    spec = IntervalSpec(level=0.9, n_resamples=12, kid_subsets=3)
    table = evaluate(a, b, "all", seed=11, ci=spec, **SMALL)
    boot_seed, half_seed = spec.derived_seeds(11)
    assert (table.bootstrap_seed, table.half_sample_seed) == (boot_seed, half_seed)
    assert len({11, boot_seed, half_seed}) == 3
    for key, output in (("fid", "features"), ("sfid", "spatial")):
        direct = bootstrap_fid(a.output(output), b.output(output), n_resamples=12, level=0.9, seed=boot_seed)
        interval = table[key].interval
        assert (interval.low, interval.high) == (direct.basic_low, direct.basic_high)
        assert interval.percentile == (direct.low, direct.high)
        assert (interval.method, interval.std, interval.shift, interval.seed) == ("bootstrap", direct.std,
                                                                                  direct.bias, boot_seed)
    metrics = {
        "kid": (a.rows, b.rows, lambda x, y: kid(x, y, subsets=3, subset_size=40, seed=11)),
        "is_a": (a.logits, b.logits, lambda x, y: inception_score(x, splits=4, seed=11)),
        "is_b": (a.logits, b.logits, lambda x, y: inception_score(y, splits=4, seed=11)),
        "precision": (a.rows, b.rows, lambda x, y: precision_recall(y, x, k=3).precision),
        "coverage": (a.rows, b.rows, lambda x, y: manifold_metrics(y, x).coverage),
    }
    for key, (rows_a, rows_b, metric) in metrics.items():
        direct = half_sample(rows_a, rows_b, metric, n_resamples=12, level=0.9, seed=half_seed)
        # KID's value has 6 subsets, its replicates 3 (kid_subsets): the interval is centred on the table's value.
        expected = summarise_half_samples(table[key].value, direct.values, level=0.9, seed=half_seed, n_a=120, n_b=140)
        interval = table[key].interval
        assert interval.method == "half-sample" and interval.percentile is None
        # The table moves an end beyond the metric's range onto it (above 1 for precision, below 1 for IS).
        lowest, highest = {"is_a": (1.0, np.inf), "is_b": (1.0, np.inf), "kid": (-np.inf, np.inf)}.get(key, (0.0, 1.0))
        ends = [min(max(end, lowest), highest) for end in (expected.low, expected.high)]
        assert (interval.low, interval.high, interval.std, interval.shift) == (
            *ends, expected.std, expected.shift), key
        if key != "kid":
            assert direct.value == table[key].value and (direct.low, direct.high) == (expected.low, expected.high)
    assert table["kid"].value == kid(a.rows, b.rows, subsets=6, subset_size=40, seed=11).mean  # 6, not 3


def test_each_frechet_distance_is_computed_once_with_its_interval(pair, monkeypatch):
    """The bootstrap interval is centred on the table's FID (and sFID): fid_from_arrays runs once per metric, not
    again inside the bootstrap (5 s at 50,000 + 10,000 x 2048)."""
    a, b = pair
    table_module = importlib.import_module("fidkit.metrics.table")
    bootstrap_module = importlib.import_module("fidkit.metrics.bootstrap")
    calls = []

    def counting(x, y, *args, **kwargs):
        calls.append(x.shape[1])
        return fid_from_arrays(x, y, *args, **kwargs)

    for module in (table_module, bootstrap_module):
        monkeypatch.setattr(module, "fid_from_arrays", counting)
    table = evaluate(a, b, "fid,sfid", ci=IntervalSpec(n_resamples=5), **SMALL)
    assert sorted(calls) == sorted([a.rows.shape[1], a.spatial.shape[1]])
    assert table["fid"].interval.shift == pytest.approx(
        np.mean(bootstrap_fid(a.rows, b.rows, n_resamples=5, seed=table.bootstrap_seed).values) - table["fid"].value
    )


def test_a_report_and_its_table_hold_one_fid_computed_once_from_the_statistics(pair, monkeypatch):
    """compute_fid and fidkit.FID with metrics: the table shows the report's FID (of the sides' statistics, the
    number a FID-only run gives), not a second distance from the rows (a second 1-3 s eigensolve at 2048)."""
    import fidkit
    from stand_ins import MeanColour

    a, b = pair
    fid_alone = float(fidkit.compute_fid(a, b))

    def refused(*args, **kwargs):
        raise AssertionError("the table computed the FID again")

    monkeypatch.setattr(table_module, "fid_from_arrays", refused)
    monkeypatch.setattr(table_module, "fid_from_stats", refused)
    report = fidkit.compute_fid(a, b, metrics="fid,prdc")
    assert report.value == report.metrics["fid"].value == fid_alone
    assert (report.metrics["fid"].n_a, report.metrics["fid"].n_b) == (a.n, b.n)

    metric = fidkit.FID(extractor=MeanColour(), metrics="prdc")
    images = np.random.default_rng(3).integers(0, 256, (24, 8, 8, 3), dtype=np.uint8)
    metric.update(images[:10], real=True)
    metric.update(images[10:])
    report = metric.compute()
    # The table's sides are (generated, real), the report's (real, generated): one symmetric distance.
    assert report.value == report.metrics["fid"].value
    assert (report.metrics["fid"].n_a, report.metrics["fid"].n_b) == (14, 10)


def test_intervals_are_reproducible_from_the_seed_and_change_with_it(pair):
    a, b = pair
    spec = IntervalSpec(n_resamples=8, kid_subsets=2)
    first = evaluate(a, b, "fid,kid,prdc", ci=spec, seed=3, **SMALL)
    again = evaluate(a, b, "fid,kid,prdc", ci=spec, seed=3, **SMALL)
    assert json.dumps(first.to_dict()) == json.dumps(again.to_dict())
    other = evaluate(a, b, "fid,kid,prdc", ci=spec, seed=4, **SMALL)
    for key in ("fid", "kid", "precision"):
        # (low, high): precision's ends are fractions of 60 images and one end alone may repeat.
        assert (first[key].interval.low, first[key].interval.high) != (other[key].interval.low,
                                                                       other[key].interval.high), key
    assert first["fid"].value == other["fid"].value and first["kid"].value != other["kid"].value  # subsets moved
    # An interval seed of its own moves only the intervals.
    moved = evaluate(a, b, "fid,kid,prdc", ci=IntervalSpec(n_resamples=8, kid_subsets=2, seed=99), seed=3, **SMALL)
    for key in ("fid", "kid", "precision", "recall"):
        assert moved[key].value == first[key].value
    assert moved["fid"].interval.low != first["fid"].interval.low
    assert moved["kid"].interval.low != first["kid"].interval.low
    assert moved.bootstrap_seed == IntervalSpec(seed=99).derived_seeds(0)[0]


def test_a_statistics_reference_leaves_is_intervals_to_side_a(pair):
    """IS of a needs nothing of b: with b as statistics only a is half-sampled (b's draws are skipped)."""
    a, b = pair
    spec = IntervalSpec(level=0.8, n_resamples=6)
    table = evaluate(a, b.stats(), "is", ci=spec, **SMALL)
    values = [inception_score(a.logits[rows_a], splits=4, seed=0).mean
              for rows_a, rows_b in half_sample_draws(120, None, 6, table.half_sample_seed)]
    expected = summarise_half_samples(table["is_a"].value, values, level=0.8, seed=0, n_a=120, n_b=None)
    interval = table["is_a"].interval
    assert (interval.low, interval.high, interval.std) == (expected.low, expected.high, expected.std)


def test_half_sample_draws_and_interval():
    draws = list(half_sample_draws(11, 8, 5, seed=1))
    assert len(draws) == 5
    for rows_a, rows_b in draws:
        assert rows_a.size == 5 and rows_b.size == 4
        assert np.unique(rows_a).size == 5 and np.unique(rows_b).size == 4  # no image twice
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(draws, half_sample_draws(11, 8, 5, seed=1)))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(24, 2))
    result = half_sample(x, y, lambda p, q: p.mean() - q.mean(), n_resamples=40, level=0.8, seed=2)
    values = np.array(result.values)
    q_low, q_high = np.percentile(values, [10.0, 90.0])
    assert result.value == x.mean() - y.mean()
    centre = values.mean()
    expected = (result.value - (q_high - centre), result.value - (q_low - centre))
    assert (result.low, result.high) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert (result.m_a, result.m_b) == (15, 12) and result.shift == pytest.approx(centre - result.value, abs=1e-15)
    assert result.std == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    with pytest.raises(InputError, match="at least 2 rows"):
        half_sample(x[:1], y, lambda p, q: 0.0, n_resamples=3)


def test_fid_interval_covers_a_known_fid_on_gaussians():
    """Light check of the table's FID interval: 90 % intervals over 30 samples with a known FID."""
    dim, shift = 4, 1.0
    structure = np.random.default_rng(123).standard_normal((dim, dim)) * 0.3
    sigma_b = np.eye(dim) + structure @ structure.T
    true_fid = float(fid_from_stats(Stats(mu=np.zeros(dim), sigma=np.eye(dim)),
                                    Stats(mu=np.full(dim, shift), sigma=sigma_b)))
    covered = 0
    for repetition in range(30):
        rng = np.random.default_rng(500 + repetition)
        a = Features(rng.standard_normal((200, dim)))
        b = Features(rng.standard_normal((200, dim)) @ np.linalg.cholesky(sigma_b).T + shift)
        interval = evaluate(a, b, "fid", ci=IntervalSpec(level=0.9, n_resamples=60), seed=repetition)["fid"].interval
        covered += interval.low <= true_fid <= interval.high
    assert 0.7 <= covered / 30 <= 1.0, covered


@pytest.mark.slow
def test_half_sample_intervals_cover_neighbour_metrics_where_the_bootstrap_does_not():
    """Precision on Gaussians: the expected value at N (from 200 independent samples) is covered by about 90 %
    of the 90 % half-sample intervals, and by few of the with-replacement bootstrap's (repeated images shrink
    the balls). The numbers of docs/metrics.md come from a larger run of the same design."""
    dim, n, shift = 8, 200, 0.3

    def sample(rng):
        return Features(rng.normal(shift, 1.0, (n, dim))), Features(rng.normal(0.0, 1.0, (n, dim)))

    rng = np.random.default_rng(9)
    target = np.mean([evaluate(*sample(rng), "prdc")["precision"].value for _ in range(200)])
    covered_half = covered_bootstrap = 0
    repetitions = 20
    for repetition in range(repetitions):
        a, b = sample(rng)
        table = evaluate(a, b, "prdc", ci=IntervalSpec(level=0.9, n_resamples=40), seed=repetition)
        interval = table["precision"].interval
        covered_half += interval.low <= target <= interval.high
        boot = bootstrap(a.rows, b.rows, lambda x, y: precision_recall(y, x).precision, n_resamples=40, level=0.9,
                         seed=repetition)
        covered_bootstrap += boot.low <= target <= boot.high
    assert covered_half / repetitions >= 0.75, covered_half
    assert covered_bootstrap / repetitions <= 0.4, covered_bootstrap


# --------------------------------------------------------------------------------------------- output


def test_format_without_and_with_intervals(pair):
    a, b = pair
    plain_table = evaluate(a, b, "all", **SMALL)
    text = plain_table.format()
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "value", "note"]
    assert [line.split()[0] for line in lines[1:10]] == ["FID", "KID", "IS", "IS", "sFID", "precision", "recall",
                                                          "density", "coverage"]
    assert lines[1].split()[1] == f"{plain_table['fid'].value:.4f}"
    assert lines[2].split()[1] == f"{plain_table['kid'].value:.6f}"
    assert lines[3].startswith("IS (a, evaluated)") and lines[3].split()[3] == f"{plain_table['is_a'].value:.3f}"
    assert f"std over 6 subsets of 40: {plain_table['kid'].std:.6f}" in lines[2]
    assert f"4 splits, std {plain_table['is_a'].std:.3f}" in lines[3]
    assert lines[6].endswith("k=3") and lines[9].endswith("k=5")
    assert lines[-1] == "images: a (evaluated) 120, b (reference) 140"
    value_column = lines[0].index("value")
    assert all(line[value_column - 2 : value_column] == "  " and line[value_column] != " " for line in lines[1:10])
    assert str(plain_table) == text and "interval" not in text

    table = evaluate(a, b, "fid,kid", ci=IntervalSpec(level=0.9, n_resamples=5, kid_subsets=2), seed=5, **SMALL)
    lines = table.format().splitlines()
    assert lines[0].split()[:4] == ["metric", "value", "90%", "interval"]
    fid = table["fid"].interval
    assert f"[{fid.low:.4f}, {fid.high:.4f}]" in lines[1] and f"bootstrap bias {fid.shift:+.4f}" in lines[1]
    assert f"[{table['kid'].interval.low:.6f}, {table['kid'].interval.high:.6f}]" in lines[2]
    assert lines[-1] == ("90% intervals (seed 5): FID: basic bootstrap, 5 resamples of both sides' images; "
                         "KID: 5 random half-samples, KID over 2 subsets each")


def test_to_dict_is_json_with_stable_keys(pair):
    a, b = pair
    table = evaluate(a, b, "all", ci=IntervalSpec(n_resamples=4, kid_subsets=2), seed=2, **SMALL)
    data = json.loads(json.dumps(table.to_dict(), allow_nan=False))
    assert list(data) == ["metrics", "n_a", "n_b", "seed", "interval", "entries"]
    assert data["metrics"] == list(METRICS) and (data["n_a"], data["n_b"], data["seed"]) == (120, 140, 2)
    assert data["interval"] == {"level": 0.95, "n_resamples": 4, "seed": None, "kid_subsets": 2,
                                "bootstrap_seed": table.bootstrap_seed, "half_sample_seed": table.half_sample_seed}
    assert list(data["entries"]) == list(table.keys())
    for key, entry in data["entries"].items():
        assert list(entry) == ["label", "metric", "value", "std", "interval", "no_interval", "n_a", "n_b", "details"]
        assert entry["value"] == table[key].value
        assert list(entry["interval"]) == ["low", "high", "level", "method", "std", "shift", "n_resamples", "seed",
                                           "percentile", "note"]
    assert data["entries"]["kid"]["details"] == {"subsets": 6, "subset_size": 40, "seed": 2, "sampling": "generator"}
    assert data["entries"]["fid"]["interval"]["percentile"] == list(table["fid"].interval.percentile)
    assert data["entries"]["precision"]["interval"]["percentile"] is None
    assert evaluate(a, b).to_dict()["interval"] is None
    with pytest.raises(KeyError, match="holds fid"):
        evaluate(a, b)["kid"]
    assert isinstance(table, MetricTable) and "kid" in table and "is_b" in table


def test_docstring_examples_run():
    for module, examples in ((table_module, 4), (importlib.import_module("fidkit.metrics.request"), 4)):
        failures, attempted = doctest.testmod(module, verbose=False)
        assert attempted >= examples and failures == 0, module.__name__


def test_interval_ends_stay_where_the_number_can_lie():
    """Two samples of one distribution: FID's bias exceeds its spread, the basic interval reaches below 0; the
    table's stops at 0 (its upper end and the percentile interval are the bootstrap's)."""
    rng = np.random.default_rng(8)
    a, b = Features(rng.normal(size=(60, 4))), Features(rng.normal(size=(60, 4)))
    table = evaluate(a, b, "fid", ci=IntervalSpec(n_resamples=40), seed=1)
    direct = bootstrap_fid(a.rows, b.rows, n_resamples=40, seed=table.bootstrap_seed)
    assert direct.basic_low < 0.0
    interval = table["fid"].interval
    assert (interval.low, interval.high, interval.percentile) == (0.0, direct.basic_high, (direct.low, direct.high))


# --- hostile round 4, 7: the text table never prints a non-finite number --------------------------------------------


def test_the_metrics_table_prints_no_non_finite_number(tmp_path, capsys):
    # Both sides huge, so that the subsets' KIDs (~1e209) differ and the squares of their deviations overflow:
    # the std is taken in units of the largest deviation (it was inf, printed n/a), and printed as the number it is.
    huge = _features_file(tmp_path / "huge.npz", 12, 6, scale=1e35)
    other = _features_file(tmp_path / "b.npz", 14, 6, scale=1e35)
    status, out, err = _run(["compute", str(huge), str(other), "--metrics", "kid", "--quiet"], capsys)
    assert status == 0, err
    assert "inf" not in out.lower() and "nan" not in out.lower(), out
    status, out, _ = _run(["compute", str(huge), str(other), "--metrics", "kid", "--json", "--quiet"], capsys)
    std = json.loads(out)["metrics"]["entries"]["kid"]["std"]
    assert std is not None and np.isfinite(std) and std > 1e200
    # fidkit info: a metadata value that is not finite is "n/a" too (JSON has null).
    noted = tmp_path / "noted.npz"
    Stats(mu=np.zeros(3), sigma=np.eye(3), n=5, metadata={"note": float("nan"), "big": float("-inf")}).save(noted)
    status, out, _ = _run(["info", str(noted)], capsys)
    assert status == 0 and "nan" not in out.lower() and "inf" not in out.lower().replace("info", ""), out


def test_format_table_writes_n_a_for_every_non_finite_cell():
    from fidkit.metrics._table_results import Interval, MetricEntry
    from fidkit.metrics.table import IntervalSpec, MetricTable

    inf, nan = float("inf"), float("nan")
    interval = Interval(low=-inf, high=nan, level=0.95, method="half-sample", std=inf, shift=nan, n_resamples=3,
                        seed=1)
    entries = (
        MetricEntry(key="kid", label="KID", metric="kid", value=inf, std=nan, interval=interval,
                    details=(("subsets", 3), ("subset_size", 5))),
        MetricEntry(key="is_a", label="IS (a)", metric="is", value=nan, std=inf, interval=interval,
                    details=(("splits", 2),)),
        MetricEntry(key="fid", label="FID", metric="fid", value=1.0, interval=interval),
    )
    table = MetricTable(entries=entries, metrics=("fid", "kid", "is"), n_a=5, n_b=5, seed=0,
                        ci=IntervalSpec(n_resamples=3))
    text = table.format().lower()
    assert "inf" not in text and "nan" not in text, text
    assert text.count("n/a") >= 7


# --- 6: IS (a)'s half-sample interval does not need side b's rows; IS (b)'s does, and says so before any work -------

def _features(n, *, logits, seed=0):
    import numpy as np

    from fidkit import Features

    rng = np.random.default_rng(seed)
    return Features(rng.normal(size=(n, 8)), logits=rng.normal(size=(n, 20)) if logits else None)



@pytest.mark.parametrize("n_b", [1, 2, 3])
def test_the_interval_of_is_a_does_not_depend_on_the_size_of_side_b(n_b):
    import warnings

    from fidkit.metrics import IntervalSpec, evaluate

    a = _features(100, logits=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with_b = evaluate(a, _features(n_b, logits=False, seed=n_b), "is", ci=IntervalSpec(n_resamples=10))
        reference = evaluate(a, _features(50, logits=False, seed=9), "is", ci=IntervalSpec(n_resamples=10))
    got, expected = with_b["is_a"].interval, reference["is_a"].interval
    assert (got.low, got.high) == (expected.low, expected.high)  # side b is never drawn for IS (a)


def test_is_b_whose_half_samples_are_too_small_is_refused_before_any_work_naming_it(monkeypatch):
    import fidkit.metrics.table as table
    from fidkit.errors import InputError
    from fidkit.metrics import IntervalSpec, evaluate

    def no_work(*args, **kwargs):
        raise AssertionError("the Inception Score was computed before the sizes were checked")

    monkeypatch.setattr(table, "inception_score", no_work)
    with pytest.raises(InputError, match=r"keeps 0 of the 1 images of side b, but the Inception Score's 1 splits of "
                                         r"IS \(b\) need 2 rows each in a half-sample"):
        evaluate(_features(100, logits=True), _features(1, logits=True), "is", is_splits=1,
                 ci=IntervalSpec(n_resamples=10))


# --- hostile round 7, 1: the text says which side is the evaluated one -----------------------------------------------


def test_the_text_names_each_letter_side_with_its_role_and_the_json_keys_stay(pair):
    a, b = pair
    table = evaluate(a, b, "is,prdc", **SMALL)
    lines = table.format().splitlines()
    assert [line.split("  ")[0] for line in lines[1:3]] == ["IS (a, evaluated)", "IS (b, reference)"]
    assert lines[-1] == "images: a (evaluated) 120, b (reference) 140"
    assert table.side_names == ("a (evaluated)", "b (reference)")
    data = table.to_dict()
    assert list(data["entries"]) == ["is_a", "is_b", "precision", "recall", "density", "coverage"]
    assert (data["n_a"], data["n_b"]) == (120, 140) and "side_names" not in data
    assert data["entries"]["is_a"]["label"] == "IS (a, evaluated)" and data["entries"]["is_b"]["n_b"] == 140
    # The roles follow the sides, not the numbers: swapped, b's IS is the evaluated one's.
    swapped = evaluate(b, a, "is", **SMALL)
    assert swapped["is_a"].value == table["is_b"].value and swapped["is_a"].label == "IS (a, evaluated)"
    assert swapped.format().splitlines()[-1] == "images: a (evaluated) 140, b (reference) 120"
    # A caller's own names say the role themselves (fidkit.FID's "generated" and "real"), and are shown as given.
    named = evaluate(a, b, "is", side_names=("generated", "real"), **SMALL)
    assert [entry.label for entry in named.entries] == ["IS (generated)", "IS (real)"]
    assert named.format().splitlines()[-1] == "images: generated 120, real 140"
    one = evaluate(a, b, "is", side_names=("model", "b"), **SMALL)
    assert [entry.label for entry in one.entries] == ["IS (model)", "IS (b, reference)"]
    assert one.format().splitlines()[-1] == "images: model 120, b (reference) 140"


@pytest.mark.filterwarnings("ignore::fidkit.errors.FidkitWarning")
def test_the_table_of_compute_fid_names_the_evaluated_and_reference_sides(pair):
    import fidkit

    a, b = pair
    report = fidkit.compute_fid(a, b, metrics="fid,prdc")
    text = report.metrics.format()
    assert text.splitlines()[-1] == "images: a (evaluated) 120, b (reference) 140"
    assert report.to_dict()["metrics"]["entries"]["precision"]["n_a"] == 120  # keys as they were


# --- hostile round 7: one rule for every number of the text table, the FID's --------------------------------------


@pytest.mark.parametrize("tiny", [3.2e-07, -4.567e-06, 8.76e-05, 0.0042])
def test_a_number_near_zero_keeps_four_significant_digits_in_every_row_as_the_fid_does(pair, tiny):
    import dataclasses
    import re

    from fidkit._plain import fid_text

    def text(value: float, places: int) -> str:
        # Fewer than 3 significant digits at the metric's decimals: 4 significant ones, as fid_text writes a FID.
        return f"{value:.3e}" if value != 0 and abs(value) < 10.0 ** (2 - places) else f"{value:.{places}f}"

    a, b = pair
    table = evaluate(a, b, "fid,kid,is,prdc", ci=IntervalSpec(level=0.9, n_resamples=5, kid_subsets=2), seed=5, **SMALL)
    entries = tuple(
        dataclasses.replace(
            entry, value=tiny, std=None if entry.std is None else tiny / 3,
            interval=dataclasses.replace(entry.interval, low=tiny / 2, high=tiny * 2, shift=tiny),
        )
        for entry in table.entries
    )
    printed = dataclasses.replace(table, entries=entries).format()
    decimals = {"FID": 4, "KID": 6, "IS (a, evaluated)": 3, "precision": 4, "recall": 4, "density": 4, "coverage": 4}
    for label, places in decimals.items():
        row = re.search(rf"^{re.escape(label)}\s+(\S+)\s+\[(\S+), (\S+)\]", printed, re.MULTILINE)
        assert row is not None, printed
        assert row.groups() == (text(tiny, places), text(tiny / 2, places), text(tiny * 2, places)), row.group(0)
    assert re.search(rf"^FID\s+{re.escape(fid_text(tiny))}\s", printed, re.MULTILINE)  # the FID's own rule
    assert f"bootstrap bias {'+' if tiny > 0 else ''}{text(tiny, 4)}" in printed
    assert f"subsets of 40: {text(tiny / 3, 6)}" in printed and f"splits, std {text(tiny / 3, 3)}" in printed
    assert not re.search(r"(?<![\d.])-?0\.0+(?![\d.e])", printed), printed  # no number printed as zero


# --- round 8, 2: the IS interval is refused where its replicates are degenerate, and noted where it undercovers -----


def _logits_side(n, *, seed=0, classes=50):
    import numpy as np

    rng = np.random.default_rng(seed)
    return Features(rng.normal(size=(n, 4)), logits=rng.normal(0.0, 3.0, (n, classes)))


@pytest.mark.parametrize("splits", [1, 3, 10])
def test_an_is_interval_whose_half_sample_splits_hold_one_row_is_refused_before_any_work(splits, monkeypatch):
    import fidkit.metrics.table as table

    ci = IntervalSpec(level=0.95, n_resamples=20)
    fewest = 4 * splits  # half-samples of 2 * splits rows: 2 per split
    for n in (2 * splits, 2 * splits + 1, fewest - 1):  # 2 * splits: every replicate split one row, IS exactly 1
        with monkeypatch.context() as patched:
            patched.setattr(table, "inception_score", lambda *args, **kwargs: pytest.fail("computed before checked"))
            with pytest.raises(InputError, match=rf"keeps {n // 2} of the {n} images of side a, but the Inception "
                                                 rf"Score's {splits} splits of IS \(a\) need 2 rows each in a "
                                                 rf"half-sample .*: {fewest} images or more"):
                evaluate(_logits_side(n), Features(_logits_side(n).rows), "is", ci=ci, is_splits=splits)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        entry = evaluate(_logits_side(fewest), Features(_logits_side(fewest).rows), "is", ci=ci,
                         is_splits=splits)["is_a"]
    assert entry.interval.high > entry.interval.low  # no longer a zero-width interval


@pytest.mark.parametrize(("n", "splits", "noted"), [(40, 10, True), (399, 10, True), (400, 10, False),
                                                     (119, 3, True), (120, 3, False)])
def test_an_is_interval_from_half_sample_splits_under_20_rows_carries_a_note_and_a_warning(n, splits, noted):
    a, b = _logits_side(n), _logits_side(n, seed=1)  # b holds logits: IS (b) is drawn and noted too
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = evaluate(a, b, "is", ci=IntervalSpec(level=0.9, n_resamples=10), is_splits=splits)
    notes = [table[key].interval.note for key in ("is_a", "is_b")]
    warned = [str(w.message) for w in caught if issubclass(w.category, FidkitWarning)]
    if not noted:
        assert notes == [None, None] and warned == [] and "note:" not in table.format()
        return
    per_split = (n // 2) // splits
    for label, note in zip(("IS (a, evaluated)", "IS (b, reference)"), notes):
        assert note.startswith(f"{label}'s 90% interval is unreliable: its half-samples of {n // 2} images hold "
                               f"{per_split} per split ({splits} splits), fewer than 20")
        assert f"use at least {40 * splits} images" in note and note in warned
    text = table.format()
    assert text.count("(interval unreliable: see the note below)") == 2 and f"note: {notes[0]}" in text


# --- round 8, 4: against statistics, intervals for what can have one, and FID (sFID) without one, saying why -------


def _adm_reference(path, n=300, seed=7):
    rng = np.random.default_rng(seed)
    pool, spatial = rng.normal(size=(n, 4)), rng.normal(size=(n, 5))
    np.savez(path, mu=pool.mean(0), sigma=np.cov(pool, rowvar=False), mu_s=spatial.mean(0),
             sigma_s=np.cov(spatial, rowvar=False))
    return Stats.load(path)


def _generated(n=200, seed=3):
    rng = np.random.default_rng(seed)
    return Features(rng.normal(0.2, 1.0, (n, 4)), logits=rng.normal(0.0, 3.0, (n, 30)),
                    spatial=rng.normal(0.1, 1.0, (n, 5)))


@pytest.mark.parametrize("level", [0.8, 0.95])
def test_against_statistics_the_is_interval_is_given_and_fid_has_a_note_instead(tmp_path, level):
    a, reference = _generated(), Features(np.random.default_rng(9).normal(size=(250, 4))).stats()
    ci = IntervalSpec(level=level, n_resamples=12)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = evaluate(a, reference, "fid,is", ci=ci)
    fid, score = table["fid"], table["is_a"]
    assert fid.interval is None and fid.value == pytest.approx(fid_from_stats(a.stats(), reference).value)
    assert fid.no_interval.startswith("FID has no interval: side b is statistics (mu and sigma)")
    assert "its bootstrap resamples images" in fid.no_interval and "--metrics fid" in fid.no_interval
    assert any(str(w.message) == fid.no_interval for w in caught)
    # IS (a)'s interval never reads side b: the same as against the reference's rows.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows_reference = evaluate(a, Features(np.random.default_rng(9).normal(size=(250, 4))), "fid,is", ci=ci)
    assert (score.interval.low, score.interval.high) == (rows_reference["is_a"].interval.low,
                                                         rows_reference["is_a"].interval.high)
    assert score.interval.low < score.value < score.interval.high and score.no_interval is None
    data = table.to_dict()["entries"]
    assert data["fid"]["interval"] is None and data["fid"]["no_interval"] == fid.no_interval
    assert data["is_a"]["no_interval"] is None and data["is_a"]["interval"]["level"] == level
    text = table.format()
    assert "none (see the note below)" in text.splitlines()[1] and f"note: {fid.no_interval}" in text
    (footer,) = [line for line in text.splitlines() if "intervals (seed 0)" in line]
    assert footer.endswith("intervals (seed 0): IS (a, evaluated): 12 random half-samples")  # FID's not claimed
    # With nothing that can have an interval, the interval is refused, naming the fix and dropping --ci.
    with pytest.raises(InputError, match=r"an interval for FID needs .*statistics only.*or drop the interval"):
        evaluate(a, reference, "fid", ci=ci)


def test_against_an_adm_batch_fid_and_sfid_say_why_they_have_no_interval_or_are_refused_by_name(tmp_path):
    a, batch = _generated(), _adm_reference(tmp_path / "VIRTUAL_ref.npz")
    ci = IntervalSpec(n_resamples=10)
    with pytest.raises(InputError) as refused:
        evaluate(a, batch, "fid,sfid", ci=ci)
    message = str(refused.value)
    assert message.startswith("an interval for FID and sFID needs the feature rows (pool_3) and spatial features "
                              "(sFID's) of side b (the reference): the bootstrap resamples images")
    assert "which give FID's and sFID's values only" in message and "--metrics fid,sfid" in message
    assert "or drop the interval (--ci, ci=)" in message
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = evaluate(a, batch, "fid,is,sfid", ci=ci)
    assert table["fid"].interval is None and table["sfid"].interval is None and table["is_a"].interval is not None
    assert table["sfid"].no_interval.startswith("sFID has no interval: side b is statistics (ADM reference batch")
    assert "--metrics sfid" in table["sfid"].no_interval
    # Side a must still hold what sFID needs: its spatial features are checked as before.
    with pytest.raises(InputError, match=r"sFID needs the spatial features \(sFID's\) of side a"):
        evaluate(Features(a.rows, logits=a.logits), batch, "fid,is,sfid", ci=ci)
