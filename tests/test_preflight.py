"""fidkit.preflight: a statistics or features file that the run cannot use as asked is refused at once (hostile
round 4).

Against an image side, a file made with another layer (``--dims``), convention or weights used to be found out
only after the whole network pass over the images; with files only, ``--convention`` / ``--dims`` / ``--weights``
were ignored without a word and the number printed was not the one asked for. No network runs here: the
extract step is replaced by one that fails the test if it is reached.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from fidkit import pipeline
from fidkit.api import compute_fid, compute_stats
from fidkit.cli import main
from fidkit.errors import FidkitWarning, InputError, SmallSampleWarning
from fidkit.extractors import identity_for
from fidkit.options import run_options
from fidkit.stats import Stats


# --- hostile round 4: a file the run cannot use as asked is refused before the network ------------------------------


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def reached(*args, **kwargs):
        raise AssertionError("the network ran before the input was checked")

    monkeypatch.setattr(pipeline, "_extract_locally", reached)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        yield


@pytest.fixture
def weights(random_weights_path, monkeypatch, fidkit_home):
    monkeypatch.setenv("FIDKIT_WEIGHTS", str(random_weights_path))
    return random_weights_path


def stats_file(path, dim: int = 2048, **recorded) -> Stats:
    rng = np.random.default_rng(dim)
    features = rng.normal(size=(3 * dim if dim < 100 else 40, dim))
    stats = Stats.from_features(features, metadata={k: v for k, v in recorded.items() if v is not None})
    stats.save(path)
    return Stats.load(path)


def recorded_by(**options) -> dict[str, str]:
    """The metadata a fidkit run with these options records (its extractor's identity)."""
    return dict(identity_for(run_options(**options)).fields)


IMAGES = np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("made_with", "message"),
    [
        ({"dims": 64}, "holds 64-dimensional features, but this run's extractor makes 2048: pass --dims 64"),
        ({"convention": "clean"}, "convention clean, but this run's network has tf .*pass --convention clean"),
    ],
)
def test_a_file_made_otherwise_than_the_image_side_is_refused_before_the_network(
    tmp_path, weights, made_with, message
) -> None:
    recorded = recorded_by(weights=weights, **made_with)
    path = tmp_path / "reference.npz"
    stats_file(path, dim=made_with.get("dims", 2048), **recorded)
    with pytest.raises(InputError, match=message) as raised:
        compute_fid(path, IMAGES, use_cache=False)
    assert "reference.npz" in str(raised.value)


def test_a_file_made_with_other_weights_is_refused_unless_allowed(tmp_path, weights) -> None:
    recorded = {**recorded_by(weights=weights), "weights_sha256": "f" * 64}
    path = tmp_path / "reference.npz"
    stats_file(path, **recorded)
    with pytest.raises(InputError, match=r"weights_sha256 ffffffffffffffff\.\.\., but this run's network has"):
        compute_fid(IMAGES, path, use_cache=False)
    # Allowed: the check lets it through to the network (which this test stands in for).
    with pytest.raises(AssertionError, match="the network ran"):
        compute_fid(IMAGES, path, use_cache=False, allow_weights_mismatch=True)


def test_a_file_made_as_the_run_asks_goes_on_to_the_network(tmp_path, weights) -> None:
    path = tmp_path / "reference.npz"
    stats_file(path, **recorded_by(weights=weights, convention="pytorch-fid"))
    with pytest.raises(AssertionError, match="the network ran"):
        compute_fid(path, IMAGES, use_cache=False, convention="pytorch-fid")


@pytest.mark.parametrize(
    ("asked", "option"),
    [({"convention": "pytorch-fid"}, "convention"), ({"dims": 64}, "dims"), ({"precision": "bf16", "engine": "torch"}, "precision")],
)
def test_options_that_two_files_contradict_are_refused(tmp_path, weights, asked, option) -> None:
    recorded = recorded_by(weights=weights)
    stats_file(tmp_path / "a.npz", **recorded)
    stats_file(tmp_path / "b.npz", **recorded)
    with pytest.raises(InputError, match=f"--{option} does not apply to statistics or features files"):
        compute_fid(tmp_path / "a.npz", tmp_path / "b.npz", **asked)
    with pytest.raises(InputError, match=f"--{option} does not apply"):
        compute_stats(tmp_path / "a.npz", **asked)


def test_options_the_files_agree_with_and_the_defaults_are_accepted(tmp_path, weights) -> None:
    recorded = recorded_by(weights=weights, convention="pytorch-fid")
    stats_file(tmp_path / "a.npz", **recorded)
    stats_file(tmp_path / "b.npz", **recorded)
    asked = compute_fid(tmp_path / "a.npz", tmp_path / "b.npz", convention="pytorch-fid", weights=weights)
    plain = compute_fid(tmp_path / "a.npz", tmp_path / "b.npz")  # the defaults ask for nothing: no check
    assert float(asked) == float(plain)


def test_a_file_that_records_nothing_is_a_warning_when_an_option_is_given(tmp_path, weights) -> None:
    stats_file(tmp_path / "ttur.npz")  # mu and sigma only, as TTUR and pytorch-fid write them
    stats_file(tmp_path / "b.npz", **recorded_by(weights=weights, convention="pytorch-fid"))
    with pytest.warns(FidkitWarning, match=r"ttur\.npz\) records no convention: --convention cannot be checked"):
        compute_fid(tmp_path / "ttur.npz", tmp_path / "b.npz", convention="pytorch-fid")


def test_two_files_of_different_dimensions_are_refused_naming_both(tmp_path, weights, capsys) -> None:
    stats_file(tmp_path / "small.npz", dim=64)
    stats_file(tmp_path / "large.npz", dim=2048)
    assert main(["compute", str(tmp_path / "small.npz"), str(tmp_path / "large.npz")]) == 1
    error = capsys.readouterr().err
    assert "small.npz) 64 and side b (" in error and "large.npz) 2048" in error


# --- hostile round 4: what the check must not do (review) -----------------------------------------------------------


def test_a_registered_extractor_of_another_width_is_not_held_to_dims(tmp_path, monkeypatch) -> None:
    from fidkit.extractors import ExtractorEntry, register_extractor, unregister_extractor

    class MeanColour:
        feature_dim = 3

        def __call__(self, images):
            return np.asarray(images, dtype=np.float32).mean(axis=(1, 2))

        def metadata(self):
            return {"extractor": "mean-colour-preflight", "weights_sha256": "none", "resize_mode": "none"}

    monkeypatch.undo()  # the network runs here: it is three means per image
    register_extractor(ExtractorEntry(
        name="mean-colour-preflight", description="test", build=lambda options: MeanColour(),
        identity=lambda options: {"weights_sha256": "none", "resize_mode": "none"},
    ))
    try:
        other = np.random.default_rng(1).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
        reference = compute_stats(other, extractor="mean-colour-preflight", use_cache=False)
        from_stats = compute_fid(IMAGES, reference, extractor="mean-colour-preflight", use_cache=False)
        from_images = compute_fid(IMAGES, other, extractor="mean-colour-preflight", use_cache=False)
        assert float(from_stats) == pytest.approx(float(from_images), rel=1e-12)
    finally:
        unregister_extractor("mean-colour-preflight")


@pytest.mark.parametrize("asked", [{"dims": 64}, {"convention": "pytorch-fid"}])
def test_checking_two_files_against_options_needs_no_weights(tmp_path, fidkit_home, monkeypatch, asked) -> None:
    monkeypatch.delenv("FIDKIT_WEIGHTS", raising=False)  # and nothing in the empty home: a look-up would download

    def no_download(*args, **kwargs):
        raise AssertionError("the weights were looked for")

    monkeypatch.setattr("fidkit.inception.weights.locate_weights", no_download)
    dim = asked.get("dims", 2048)
    stats_file(tmp_path / "a.npz", dim=dim)  # mu and sigma only, as pytorch-fid writes them
    stats_file(tmp_path / "b.npz", dim=dim)
    with pytest.warns(FidkitWarning):
        assert float(compute_fid(tmp_path / "a.npz", tmp_path / "b.npz", **asked)) >= 0.0


def test_a_weights_path_with_a_tilde_is_expanded(tmp_path, weights, monkeypatch) -> None:
    import shutil

    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copy(weights, tmp_path / "w.pth")
    recorded = recorded_by(weights=weights)
    stats_file(tmp_path / "a.npz", **recorded)
    stats_file(tmp_path / "b.npz", **recorded)
    assert float(compute_fid(tmp_path / "a.npz", tmp_path / "b.npz", weights="~/w.pth")) >= 0.0


# --- hostile round 7: an explicit default is an option too; options no file reads are said to be ignored ------------


def _cli(capsys, *argv) -> tuple[int, str, str]:
    status = main(["compute", *map(str, argv)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize(("dim", "asked"), [(64, 2048), (192, 2048), (768, 64)])
def test_an_explicit_dims_is_checked_even_at_its_default(tmp_path, fidkit_home, capsys, dim, asked) -> None:
    stats_file(tmp_path / "a.npz", dim=dim)
    stats_file(tmp_path / "b.npz", dim=dim)
    status, out, err = _cli(capsys, tmp_path / "a.npz", tmp_path / "b.npz", "--dims", asked)
    assert status == 1 and out == ""
    assert f"holds {dim}-dimensional features, but this run's extractor makes {asked}: --dims does not apply" in err
    for given in ({"dims": asked}, {"options": run_options(dims=asked)}):
        with pytest.raises(InputError, match=f"holds {dim}-dimensional .* makes {asked}: --dims does not apply"):
            compute_fid(tmp_path / "a.npz", tmp_path / "b.npz", **given)
    # The width the files hold is no contradiction, given or not.
    assert _cli(capsys, tmp_path / "a.npz", tmp_path / "b.npz", "--dims", dim)[0] == 0
    assert float(compute_fid(tmp_path / "a.npz", tmp_path / "b.npz", dims=dim)) >= 0.0


@pytest.mark.parametrize(("recorded", "asked"), [("pytorch-fid", "tf"), ("clean", "tf"), ("tf", "torchmetrics")])
def test_an_explicit_convention_is_checked_even_at_its_default(tmp_path, weights, capsys, recorded, asked) -> None:
    made = recorded_by(weights=weights, convention=recorded)
    stats_file(tmp_path / "a.npz", **made)
    stats_file(tmp_path / "b.npz", **made)
    status, out, err = _cli(capsys, tmp_path / "a.npz", tmp_path / "b.npz", "--convention", asked)
    assert status == 1 and out == ""
    assert f"convention {recorded}, but this run's network has {asked}: --convention does not apply" in err
    with pytest.raises(InputError, match=f"convention {recorded}, .* has {asked}: --convention does not apply"):
        compute_fid(tmp_path / "a.npz", tmp_path / "b.npz", options=run_options(convention=asked))
    # Agreeing with both files is fine, whichever convention it is.
    status, out, _ = _cli(capsys, tmp_path / "a.npz", tmp_path / "b.npz", "--convention", recorded)
    assert status == 0 and out.startswith("FID: ")


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--engine", "torch"], ["--engine (engine='torch')"]),
        (["--batch-size", "7", "--exif-transpose"], ["--batch-size (batch_size=7)", "--exif-transpose"]),
        (["--device", "cuda"], ["--device (device='cuda')"]),
        (["--workers", "0", "--threads", "3", "--no-cache"], ["--workers (workers=0)", "--threads (threads=3)",
                                                              "--no-cache (use_cache=False)"]),
        (["--skip-bad", "--hash-content"], ["--skip-bad (skip_bad=True)", "--hash-content (hash_content=True)"]),
    ],
)
def test_options_no_file_reads_are_warned_about_not_ignored_silently(
    tmp_path, fidkit_home, capsys, monkeypatch, argv, named
) -> None:
    from fidkit.inception import providers

    monkeypatch.setattr(providers, "gpu_driver_present", lambda: False)  # --device cuda: no GPU, and none needed
    stats_file(tmp_path / "a.npz", dim=8)
    stats_file(tmp_path / "b.npz", dim=8)
    plain = _cli(capsys, tmp_path / "a.npz", tmp_path / "b.npz")
    assert "does not apply" not in plain[2] and "do not apply" not in plain[2]
    status, out, err = _cli(capsys, tmp_path / "a.npz", tmp_path / "b.npz", *argv)
    assert (status, out) == (0, plain[1])  # the same number, and a word about what was ignored
    [line] = [line for line in err.splitlines() if "not apply to statistics or features files" in line]
    assert line.startswith("fidkit: warning: ") and all(name in line for name in named), err
    # A default given explicitly asks for nothing.
    assert "not apply" not in _cli(capsys, tmp_path / "a.npz", tmp_path / "b.npz", "--device", "auto")[2]


def test_the_api_warns_about_the_same_options_and_one_file_too(tmp_path, fidkit_home) -> None:
    stats_file(tmp_path / "a.npz", dim=8)
    stats_file(tmp_path / "b.npz", dim=8)
    with pytest.warns(FidkitWarning, match=r"--batch-size \(batch_size=5\), --exif-transpose .* do not apply"):
        compute_fid(tmp_path / "a.npz", tmp_path / "b.npz", batch_size=5, exif_transpose=True)
    with pytest.warns(FidkitWarning, match=r"--engine \(engine='torch'\) does not apply to statistics"):
        compute_stats(tmp_path / "a.npz", options=run_options(engine="torch"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compute_fid(tmp_path / "a.npz", tmp_path / "b.npz", device="auto", use_cache=True)  # defaults: no warning
    assert not [w for w in caught if "not apply" in str(w.message)]


@pytest.mark.parametrize(("argv", "message"), [
    (["--resamples", "17"], "--resamples 17 without --ci has no effect"),
    (["--metrics-seed", "5"], "--metrics-seed 5 has no effect on the FID alone"),
])
def test_metric_options_without_what_they_steer_are_warned_about(tmp_path, fidkit_home, capsys, argv, message) -> None:
    stats_file(tmp_path / "a.npz", dim=8)
    stats_file(tmp_path / "b.npz", dim=8)
    status, out, err = _cli(capsys, tmp_path / "a.npz", tmp_path / "b.npz", *argv)
    assert status == 0 and out.startswith("FID: ")
    assert f"fidkit: warning: {message}" in err


def test_run_options_know_what_they_were_given_defaults_included() -> None:
    import dataclasses
    import pickle

    from fidkit.options import RunOptions, given_options

    options = RunOptions(dims=2048, convention="tf", device="cpu")
    assert options.given() == {"device": "cpu", "convention": "tf", "dims": 2048}
    assert RunOptions().given() == {} and options.changed() == {"device": "cpu"}
    assert options.replace(limit=4).given() == {"device": "cpu", "convention": "tf", "dims": 2048, "limit": 4}
    assert pickle.loads(pickle.dumps(options)).given() == options.given()  # what the Ray actors receive
    # dataclasses.replace names every field: that tells nothing, and the values decide, as before.
    assert dataclasses.replace(options, limit=4).given() == {"device": "cpu", "limit": 4}
    assert given_options(options, {"batch_size": 8}) == {"batch_size": 8, **options.given()}


# --- review 9: the extractor a file was made by is recorded and checked ------------------------------------------------


class _Colour:
    """Three numbers per image: its mean colour, or (`spread`) the spread of each channel."""

    feature_dim = 3

    def __init__(self, spread: bool) -> None:
        self.spread = spread

    def __call__(self, images):
        images = np.asarray(images, dtype=np.float32)
        return images.std(axis=(1, 2)) if self.spread else images.mean(axis=(1, 2))

    def metadata(self):
        return {"weights_sha256": "none", "resize_mode": "none"}


@pytest.fixture
def twins(monkeypatch):
    """Two registered extractors of width 3 with the same identity fields: only their names tell them apart."""
    from fidkit.extractors import ExtractorEntry, register_extractor, unregister_extractor

    monkeypatch.undo()  # the network runs here where a test lets it: three numbers per image
    for name, spread in (("twin-mean", False), ("twin-std", True)):
        register_extractor(ExtractorEntry(
            name=name, description="test", build=lambda options, spread=spread: _Colour(spread),
            identity=lambda options: {"weights_sha256": "none", "resize_mode": "none"},
        ), replace=True)
    yield
    unregister_extractor("twin-mean")
    unregister_extractor("twin-std")


OTHER = np.random.default_rng(1).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)


def test_a_file_records_the_registered_extractor_that_made_it(twins, fidkit_home) -> None:
    stats = compute_stats(IMAGES, extractor="twin-std", use_cache=False)
    assert stats.metadata["extractor"] == "twin-std"
    cached = compute_stats(IMAGES, extractor="twin-std")  # stored, then read back from the cache
    again = compute_stats(IMAGES, extractor="twin-std")
    assert cached.metadata["extractor"] == again.metadata["extractor"] == "twin-std"


def test_two_files_of_twin_extractors_are_refused_naming_both(twins, tmp_path, fidkit_home, capsys) -> None:
    compute_stats(IMAGES, extractor="twin-mean", use_cache=False).save(tmp_path / "a.npz")
    compute_stats(OTHER, extractor="twin-std", use_cache=False).save(tmp_path / "b.npz")
    code, out, err = _cli(capsys, str(tmp_path / "a.npz"), str(tmp_path / "b.npz"))
    assert code != 0 and out == ""
    assert "different feature extractors" in err and "'twin-mean'" in err and "'twin-std'" in err
    assert "recompute one side" in err


def test_a_file_against_images_of_another_extractor_is_refused_before_the_network(
    twins, tmp_path, fidkit_home, monkeypatch
) -> None:
    compute_stats(OTHER, extractor="twin-mean", use_cache=False).save(tmp_path / "ref.npz")

    def reached(*args, **kwargs):
        raise AssertionError("the network ran before the input was checked")

    monkeypatch.setattr(pipeline, "_extract_locally", reached)
    with pytest.raises(InputError, match=r"ref.npz\) was made by the feature extractor 'twin-mean', but this run's "
                                         r"extractor is 'twin-std'"):
        compute_fid(IMAGES, tmp_path / "ref.npz", extractor="twin-std", use_cache=False)
    import fidkit

    metric = fidkit.FID(str(tmp_path / "ref.npz"), extractor="twin-std")
    with pytest.raises(InputError, match="made by the feature extractor 'twin-mean'"):
        metric.update(IMAGES)
    # An extractor object is named as the cache names it: its class (its metadata names no extractor).
    with pytest.raises(InputError, match="made by the feature extractor 'twin-mean', but this run's extractor is "
                                         "'_Colour'"):
        compute_fid(IMAGES, tmp_path / "ref.npz", extractor=_Colour(spread=False), use_cache=False)


def test_files_against_an_explicit_other_extractor_are_refused(twins, tmp_path, fidkit_home, capsys) -> None:
    recorded = {"extractor": "inception-2015", "feature_extractor": "inception-2015-12-05/64_pool"}
    stats_file(tmp_path / "a.npz", 64, **recorded)
    stats_file(tmp_path / "b.npz", 64, **recorded)
    code, out, err = _cli(capsys, str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--extractor",
                          "twin-mean")
    assert code != 0 and out == ""
    assert "made by the feature extractor 'inception-2015', but this run's extractor is 'twin-mean'" in err
    assert "drop --extractor" in err


def test_files_that_record_no_extractor_are_inception_by_convention_or_unknown(twins, tmp_path, capsys) -> None:
    # Another tool's mu and sigma name no network (TTUR's, or a DINOv2 or SwAV reference of 768 or 2048 features):
    # not compared by name, as before (the review found a 16-wide one refused as "made by 'inception-2015'"); its
    # width is still checked.
    np.savez(tmp_path / "other.npz", mu=np.zeros(3), sigma=np.eye(3))
    assert math.isfinite(float(compute_fid(IMAGES, tmp_path / "other.npz", extractor="twin-mean", use_cache=False)))
    np.savez(tmp_path / "ttur.npz", mu=np.zeros(64), sigma=np.eye(64))
    with pytest.raises(InputError, match="64"):
        compute_fid(IMAGES, tmp_path / "ttur.npz", extractor="twin-mean", use_cache=False)
    # An older fidkit's file of another extractor records none: used as before, against images too.
    old = stats_file(tmp_path / "old.npz", 3, weights_sha256="none", resize_mode="none")
    assert "extractor" not in old.metadata
    assert math.isfinite(float(compute_fid(IMAGES, tmp_path / "old.npz", extractor="twin-mean", use_cache=False)))


def test_where_an_extractor_objects_class_lives_does_not_make_it_another_extractor(
    twins, tmp_path, fidkit_home
) -> None:
    """The class's module keys the cache apart but is not compared: a reference made in one script (__main__.Net) is
    the same extractor in another (myext.Net); a file that recorded the class (written before) is read the same."""
    import json

    class Net(_Colour):
        def metadata(self):
            return {"extractor": "colour-net", "weights_sha256": "none", "resize_mode": "none"}

    stats = compute_stats(IMAGES, extractor=Net(False), use_cache=False)
    assert "class" not in json.loads(stats.metadata["extractor_identity"])
    moved = {**stats.metadata, "extractor_identity": json.dumps({"class": "__main__.Net", "feature_dim": 3})}
    Stats(mu=stats.mu, sigma=stats.sigma, n=stats.n, metadata=moved).save(tmp_path / "ref.npz")
    assert math.isfinite(float(compute_fid(OTHER, tmp_path / "ref.npz", extractor=Net(False), use_cache=False)))


def test_merged_statistics_of_two_configurations_of_one_extractor_are_refused() -> None:
    def configured(layer: int, mu: float) -> Stats:
        metadata = {"extractor": "x", "extractor_identity": f'{{"layer": {layer}}}'}
        return Stats(mu=np.full(2, mu), sigma=np.eye(2), n=3, metadata=metadata)

    first, second = configured(1, 0.0), configured(2, 1.0)
    with pytest.raises(InputError, match="different extractor_identity"):
        first.merge(second)
    assert first.merge(first).metadata["extractor_identity"] == '{"layer": 1}'
