"""`fidkit compute --metrics/--ci` and `fidkit features --metrics`: the evaluation table from the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fidkit.cli import main
from fidkit.features import Features


@pytest.fixture(autouse=True)
def _own_cache(fidkit_home):
    return fidkit_home


@pytest.fixture
def args(random_weights_path):
    return ["--workers", "0", "--quiet", "--device", "cpu", "--weights", str(random_weights_path)]


@pytest.fixture
def session_extractor(extractor):
    """The CLI builds the session's Inception extractor (random weights, graph exported once per session)."""
    from fidkit.testing import replaced_extractor

    with replaced_extractor(lambda options: extractor) as built:
        yield built


def image_file(path, n_images, seed, high=256):
    np.save(path, np.random.default_rng(seed).integers(0, high, size=(n_images, 24, 24, 3), dtype=np.uint8))
    return str(path)


def test_compute_prints_the_table_and_the_json_holds_every_metric(tmp_path, capsys, session_extractor, args):
    a, b = image_file(tmp_path / "a.npy", 30, 0), image_file(tmp_path / "b.npy", 30, 1, high=180)
    assert main(["compute", a, b, "--metrics", "all", *args]) == 0
    table = capsys.readouterr().out
    for label in ("FID", "KID", "IS (a, evaluated)", "sFID", "precision", "recall", "density", "coverage"):
        assert any(line.startswith(label) for line in table.splitlines()), table
    assert main(["compute", a, b, "--metrics", "fid,kid,is,sfid", "--json", *args]) == 0
    report = json.loads(capsys.readouterr().out)
    entries = report["metrics"]["entries"]
    assert set(entries) >= {"fid", "kid", "is_a", "sfid"}
    assert entries["fid"]["value"] == pytest.approx(report["fid"], rel=1e-12)  # one FID, computed once
    # The same numbers as the pure functions on the features of the same pass.
    import fidkit

    features = [fidkit.compute_features(path, outputs=("features", "logits", "spatial"), device="cpu", workers=0,
                                        weights=args[-1]) for path in (a, b)]
    expected = fidkit.metrics.evaluate(features[0], features[1], "fid,kid,is,sfid")
    for key in ("kid", "sfid", "is_a"):
        assert entries[key]["value"] == pytest.approx(expected[key].value, rel=1e-9)


def test_features_keep_what_the_metrics_need_and_serve_them_without_the_network(tmp_path, capsys, session_extractor, args):
    a, b = image_file(tmp_path / "a.npy", 25, 2), image_file(tmp_path / "b.npy", 25, 3)
    for source, out in ((a, "fa.npz"), (b, "fb.npz")):
        assert main(["features", source, "--save", str(tmp_path / out), "--metrics", "is,sfid", *args]) == 0
    saved = Features.load(tmp_path / "fa.npz")
    assert saved.outputs == ("features", "logits", "spatial")
    assert saved.logits.shape == (25, 1008) and saved.spatial.shape == (25, 2023)
    capsys.readouterr()
    built = len(session_extractor)
    assert main(["compute", str(tmp_path / "fa.npz"), str(tmp_path / "fb.npz"), "--metrics", "is,sfid",
                 "--json", *args]) == 0
    assert len(session_extractor) == built  # the files served everything
    keys = set(json.loads(capsys.readouterr().out)["metrics"]["entries"])
    assert {"fid", "is_a", "is_b", "sfid"} <= keys


def test_a_statistics_side_serves_the_fid_but_not_kid(tmp_path, capsys, session_extractor, args):
    a = image_file(tmp_path / "a.npy", 20, 4)
    assert main(["stats", a, "--save", str(tmp_path / "a_stats.npz"), *args]) == 0
    capsys.readouterr()
    assert main(["compute", a, str(tmp_path / "a_stats.npz"), "--metrics", "kid", *args]) == 1
    err = capsys.readouterr().err
    assert "KID" in err and "side b" in err and "fidkit features" in err


def test_metric_and_interval_flags_refuse_bad_values(capsys):
    assert main(["compute", "a", "b", "--ci", "1.5"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
    assert main(["compute", "a", "b", "--ci", "--resamples", "1"]) == 2
    assert "--resamples: expected an integer >= 2" in capsys.readouterr().err
    assert main(["compute", "a", "b", "--metrics-seed", "-1"]) == 2
    assert "--metrics-seed: expected an integer >= 0" in capsys.readouterr().err
    assert main(["compute", "a", "b", "--ci", "1.5"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
    assert main(["compute", "a", "b", "--metrics", "fid,precision"]) == 1
    assert "prdc" in capsys.readouterr().err


# --- hostile round 7: --metrics given twice, --ci before the sources -------------------------------------------------


def features_file(path, seed: int, n: int = 60) -> str:
    rng = np.random.default_rng(seed)
    Features(rng.normal(size=(n, 6)), logits=rng.normal(size=(n, 12))).save(path)
    return str(path)


def test_metrics_given_twice_are_all_computed(tmp_path, capsys):
    a, b = features_file(tmp_path / "a.npz", 0), features_file(tmp_path / "b.npz", 1)
    assert main(["compute", a, b, "--metrics", "kid", "--metrics", "is", "--json", "-q"]) == 0
    twice = json.loads(capsys.readouterr().out)["metrics"]["entries"]
    assert main(["compute", a, b, "--metrics", "kid,is", "--json", "-q"]) == 0
    once = json.loads(capsys.readouterr().out)["metrics"]["entries"]
    assert set(twice) == set(once) == {"fid", "kid", "is_a", "is_b"}
    assert twice["kid"]["value"] == once["kid"]["value"] and twice["is_a"]["value"] == once["is_a"]["value"]
    assert main(["compute", "--help"]) == 0
    assert "--metrics kid --metrics is = --metrics kid,is" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("word", ["samples", "real_images", "b.npz"])
def test_ci_before_the_sources_says_it_took_the_first_as_its_level(capsys, word):
    assert main(["compute", "--ci", word, "other"]) == 2
    err = capsys.readouterr().err
    assert f"not {word!r} (--ci takes an optional level, so {word!r} after it was read as one)" in err
    assert "put --ci after the sources, or give the level (--ci 0.95)" in err


# --- round 8, 3: the command line refuses a side too small for a metric before the network runs ----------------------


@pytest.mark.parametrize("n_small", [3, 8])
def test_compute_refuses_too_few_images_for_the_inception_score_before_the_network_runs(tmp_path, capsys, n_small):
    from fidkit.testing import replaced_extractor

    def refuse(options):
        raise AssertionError("the network was built for a run the sizes refuse")

    small, large = image_file(tmp_path / "small.npy", n_small, 0), image_file(tmp_path / "large.npy", 12, 1)
    with replaced_extractor(refuse) as built:
        assert main(["compute", small, large, "--metrics", "is", "--no-cache", "--quiet", "--device", "cpu"]) == 1
        assert built == []
    err = capsys.readouterr().err
    assert "the Inception Score needs at least 10 images on side a" in err and f"which holds {n_small}" in err


# --- round 8, 4: --ci against a statistics reference gives the intervals that can be had, and says why FID has none --


def test_ci_against_statistics_gives_the_is_interval_and_fid_without_one_saying_why(tmp_path, capsys):
    rng = np.random.default_rng(5)
    generated = features_file(tmp_path / "ra.npz", 0, n=80)
    Features(rng.normal(size=(90, 6))).stats().save(tmp_path / "rb_stats.npz")
    reference = str(tmp_path / "rb_stats.npz")
    assert main(["compute", generated, reference, "--metrics", "is", "--ci", "0.9", "--resamples", "8", "--json",
                 "-q"]) == 0
    captured = capsys.readouterr()
    entries = json.loads(captured.out)["metrics"]["entries"]
    assert entries["fid"]["interval"] is None
    assert "FID has no interval: side b is statistics" in entries["fid"]["no_interval"]
    assert entries["is_a"]["interval"]["level"] == 0.9 and entries["is_a"]["no_interval"] is None
    assert "FID has no interval" in captured.err  # the warning, where the JSON is not read
    assert main(["compute", generated, reference, "--metrics", "is", "--ci", "0.9", "--resamples", "8", "-q"]) == 0
    text = capsys.readouterr().out
    assert "none (see the note below)" in text and "note: FID has no interval" in text
    # FID alone has nothing to give an interval for: refused, saying to drop --ci.
    assert main(["compute", generated, reference, "--ci", "-q"]) == 1
    err = capsys.readouterr().err
    assert "an interval for FID needs" in err and "drop the interval (--ci" in err


def test_sfid_with_ci_against_an_adm_batch_names_sfid_in_the_refusal(tmp_path, capsys):
    rng = np.random.default_rng(6)
    pool, spatial = rng.normal(size=(50, 6)), rng.normal(size=(50, 5))
    np.savez(tmp_path / "VIRTUAL_ref.npz", mu=pool.mean(0), sigma=np.cov(pool, rowvar=False), mu_s=spatial.mean(0),
             sigma_s=np.cov(spatial, rowvar=False))
    Features(rng.normal(size=(40, 6)), spatial=rng.normal(size=(40, 5))).save(tmp_path / "a.npz")
    assert main(["compute", str(tmp_path / "a.npz"), str(tmp_path / "VIRTUAL_ref.npz"), "--metrics", "sfid", "--ci",
                 "-q"]) == 1
    err = capsys.readouterr().err
    assert "an interval for FID and sFID needs the feature rows (pool_3) and spatial features (sFID's)" in err
    assert "which give FID's and sFID's values only" in err and "drop the interval (--ci" in err
