"""compute_stats / compute_fid on every kind of input, the report, the warnings, the progress bar.

Images through the network stay few and small (8-16 images of 16x16 or 32x32 per side).
"""

from __future__ import annotations

import json
import warnings
from datetime import datetime, timezone

import numpy as np
import pytest
from PIL import Image

import fidkit
from fidkit.errors import EmptySourceError, FidkitWarning, ImageError, InputError, SourceError

from stand_ins import FullIdentityMeanColour, noise_images


def random_images(n_images: int, seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n_images, size, size, 3), dtype=np.uint8)


def small_stats(seed: int = 0, *, n: int = 40, dim: int = 8, metadata=None):
    from fidkit.stats import Stats

    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, dim)) + seed
    return Stats.from_features(features, metadata=dict(metadata or {}))


@pytest.fixture(autouse=True)
def _own_cache(fidkit_home):
    """Every test here gets an empty cache, so no test hits another's entries."""
    return fidkit_home


@pytest.fixture
def no_extractor_built():
    from fidkit.testing import replaced_extractor

    def refuse(options):
        raise AssertionError("the feature extractor was built although no side needs the network")

    with replaced_extractor(refuse) as built:
        yield built


# --- arrays, stats, iterables -----------------------------------------------------------------------


def test_compute_fid_array_vs_array_report(extractor):
    from fidkit.api import FidReport, compute_fid

    images_a, images_b = random_images(12, seed=1), random_images(10, seed=2, size=32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = compute_fid(images_a, images_b, extractor=extractor, workers=0)
    assert isinstance(report, FidReport)
    assert float(report) == report.value == report.frechet.value
    assert report.value > 0
    assert (report.a.n, report.b.n) == (12, 10)
    assert report.a.kind == report.b.kind == "array"
    assert not report.a.cached and not report.b.cached
    assert report.weights_sha256 == extractor.weights_sha256
    assert report.resize_mode == extractor.resize_mode
    assert report.provider == extractor.provider
    # N < 2048 is always said, in the report and as a warning.
    assert any("2048" in message for message in report.warnings)
    assert any("2048" in str(record.message) for record in caught)
    assert report.timings.network_seconds > 0
    assert report.timings.total_seconds >= report.timings.network_seconds
    data = json.loads(json.dumps(report.to_dict()))
    assert data["fid"] == pytest.approx(report.value)
    assert data["a"]["n"] == 12 and data["b"]["n"] == 10
    assert data["frechet"]["n_a"] == 12
    assert set(data["timings"]) == {"decode_seconds", "network_seconds", "distance_seconds", "total_seconds"}
    # The first batch's one-off costs, within the side's totals (12 images at the fixture's batch: one or more).
    for side in (report.a, report.b):
        assert 0 < side.first_batch_seconds <= side.network_seconds
        assert 0 <= side.first_wait_seconds <= side.decode_seconds
        assert data["a"]["first_batch_seconds"] == report.a.first_batch_seconds


def test_a_cached_side_reports_no_first_batch(extractor, tmp_path, monkeypatch):
    from fidkit.api import compute_fid

    monkeypatch.setenv("FIDKIT_HOME", str(tmp_path))
    images = random_images(6, seed=3)
    compute_fid(images, images, extractor=extractor, workers=0)
    report = compute_fid(images, images, extractor=extractor, workers=0)
    assert report.a.cached and report.a.first_batch_seconds == report.a.first_wait_seconds == 0.0


def test_fid_of_a_set_with_itself_is_zero_and_the_second_side_is_cached(extractor):
    from fidkit.api import compute_fid

    images = random_images(10, seed=3)
    report = compute_fid(images, images.copy(), extractor=extractor, workers=0)
    assert report.b.cached  # the same array content: the first side's cache entry
    assert report.value == pytest.approx(0.0, abs=1e-6 * report.frechet.trace_a)


def test_stats_vs_array_equals_array_vs_array(extractor):
    from fidkit.api import compute_fid, compute_stats

    images_a, images_b = random_images(10, seed=4), random_images(10, seed=5)
    stats_a = compute_stats(images_a, extractor=extractor, workers=0, use_cache=False)
    assert stats_a.n == 10 and stats_a.mu.dtype == np.float64 and stats_a.sigma.shape == (2048, 2048)
    from_stats = compute_fid(stats_a, images_b, extractor=extractor, workers=0, use_cache=False)
    from_arrays = compute_fid(images_a, images_b, extractor=extractor, workers=0, use_cache=False)
    assert from_stats.a.kind == "stats"
    assert from_stats.value == pytest.approx(from_arrays.value, rel=1e-9)


def test_iterable_of_batches_equals_the_array(extractor):
    from fidkit.api import compute_stats_with_report

    images = random_images(16, seed=6)

    def generator_samples():
        for start in range(0, 16, 8):
            yield images[start : start + 8]

    from_batches, side = compute_stats_with_report(generator_samples(), extractor=extractor, batch_size=8)
    from_array = compute_stats_with_report(images, extractor=extractor, batch_size=8, use_cache=False)[0]
    assert side.kind == "batches" and side.n == 16 and not side.cached
    np.testing.assert_allclose(from_batches.mu, from_array.mu, rtol=1e-10)
    np.testing.assert_allclose(from_batches.sigma, from_array.sigma, rtol=1e-9, atol=1e-12)
    from fidkit.cache import list_cache

    assert list_cache() == []  # an iterable has no identity: nothing cached


def test_metadata_of_computed_stats(extractor):
    from fidkit import __version__
    from fidkit.api import compute_stats

    stats = compute_stats(random_images(8, seed=7), extractor=extractor, workers=0, use_cache=False)
    metadata = stats.metadata
    assert metadata["weights_sha256"] == extractor.weights_sha256
    assert metadata["resize_mode"] == extractor.resize_mode
    assert metadata["provider"] == extractor.provider
    assert metadata["fidkit_version"] == __version__
    created = datetime.fromisoformat(str(metadata["created"]))
    assert created.tzinfo is not None and created.utcoffset() == timezone.utc.utcoffset(None)
    assert len(str(metadata["source_fingerprint"])) == 64
    assert metadata["n_skipped"] == 0
    assert metadata["lossy_inputs"] is False or metadata["lossy_inputs"] == 0


def test_two_stats_never_touch_the_network(no_extractor_built):
    from fidkit.api import compute_fid
    from fidkit.frechet import fid_from_stats

    stats_a, stats_b = small_stats(1), small_stats(2)
    report = compute_fid(stats_a, stats_b)
    assert report.value == pytest.approx(fid_from_stats(stats_a, stats_b).value, rel=1e-12)
    assert report.timings.network_seconds == 0


def test_stats_files_fidkit_and_ttur(tmp_path, no_extractor_built):
    from fidkit.api import compute_fid

    stats_a, stats_b = small_stats(1), small_stats(2)
    path_a = tmp_path / "a.npz"
    stats_a.save(path_a)
    ttur_path = tmp_path / "ttur.npz"
    np.savez(ttur_path, mu=stats_b.mu, sigma=stats_b.sigma)  # how TTUR / pytorch-fid write them
    with pytest.warns(FidkitWarning, match="only mu and sigma"):
        report = compute_fid(path_a, ttur_path)
    assert report.a.n == 40 and report.b.n is None
    assert report.b.foreign and not report.a.foreign
    assert report.value == pytest.approx(compute_fid(stats_a, stats_b).value, rel=1e-9)


def test_different_weights_are_an_error_unless_allowed(no_extractor_built):
    from fidkit.api import compute_fid

    stats_a = small_stats(1, metadata={"weights_sha256": "a" * 64, "resize_mode": "tf1"})
    stats_b = small_stats(2, metadata={"weights_sha256": "b" * 64, "resize_mode": "tf1"})
    with pytest.raises(InputError, match="different Inception weights"):
        compute_fid(stats_a, stats_b)
    with pytest.warns(FidkitWarning, match="different Inception weights"):
        report = compute_fid(stats_a, stats_b, allow_weights_mismatch=True)
    assert report.value > 0


def test_different_resize_modes_or_unrecorded_weights_warn(no_extractor_built):
    from fidkit.api import compute_fid

    stats_a = small_stats(1, metadata={"weights_sha256": "a" * 64, "resize_mode": "tf1"})
    stats_b = small_stats(2, metadata={"weights_sha256": "a" * 64, "resize_mode": "pil-bicubic"})
    with pytest.warns(FidkitWarning, match="resized differently"):
        report = compute_fid(stats_a, stats_b)
    assert any("resized differently" in message for message in report.warnings)
    with pytest.warns(FidkitWarning, match="records no weights sha256"):
        compute_fid(stats_a, small_stats(3))


# --- files: bad, skipped, empty ---------------------------------------------------------------------


def _png_folder(folder, n_images: int, seed: int):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for index, pixels in enumerate(random_images(n_images, seed)):
        Image.fromarray(pixels).save(folder / f"{index:03d}.png")
    return folder


def test_bad_file_stops_the_run_or_is_skipped_and_reported(tmp_path, extractor):
    from fidkit.api import compute_fid, compute_stats

    folder = _png_folder(tmp_path / "images", 8, seed=8)
    (folder / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageError, match="broken.png") as raised:
        compute_stats(folder, extractor=extractor, workers=0)
    assert "--skip-bad" in str(raised.value)
    with pytest.warns(FidkitWarning, match="1 unreadable file"):
        report = compute_fid(folder, random_images(8, seed=9), extractor=extractor, workers=0, skip_bad=True)
    assert report.a.n == 8 and report.a.n_skipped == 1
    assert report.a.skipped[0][0].endswith("broken.png")
    assert report.to_dict()["a"]["skipped"][0]["file"].endswith("broken.png")
    # The cached entry made with --skip-bad does not excuse a later run without it.
    with pytest.raises(ImageError):
        compute_stats(folder, extractor=extractor, workers=0)
    cached = compute_fid(folder, random_images(8, seed=9), extractor=extractor, workers=0, skip_bad=True)
    assert cached.a.cached and cached.a.n_skipped == 1 and cached.a.skipped == report.a.skipped


def test_empty_folder_is_an_error(tmp_path, extractor):
    from fidkit.api import compute_stats

    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptySourceError):
        compute_stats(tmp_path / "empty", extractor=extractor)


def test_bad_batch_size_is_an_input_error():
    from fidkit.api import compute_stats

    with pytest.raises(InputError, match="batch_size"):
        compute_stats(random_images(2, seed=0), batch_size=0)



@pytest.mark.parametrize("batch_size", [0, 2.5, True, "8"])
def test_batch_size_is_checked_by_the_one_shared_rule(batch_size):
    """The API uses the sources' check: fractional, boolean and text sizes are refused, not truncated."""
    from fidkit.api import compute_stats

    with pytest.raises(InputError, match="batch_size must be a positive integer"):
        compute_stats(random_images(2, seed=0), batch_size=batch_size)


def test_limit_and_seed_are_checked_for_an_opened_source_too():
    from fidkit.api import compute_stats
    from fidkit.sources import open_source

    source = open_source(random_images(4, seed=0))
    with pytest.raises(InputError, match="limit"):
        compute_stats(source, limit=0)


def test_every_entry_point_takes_the_run_options_by_keyword_or_as_one_object():
    import inspect

    import fidkit
    from fidkit.api import compute_features, compute_fid, compute_stats, compute_stats_with_report

    for function in (compute_stats, compute_stats_with_report, compute_features, compute_fid, fidkit.FID):
        parameters = inspect.signature(function).parameters
        assert "options" in parameters and "extractor" in parameters
        assert parameters[list(parameters)[-1]].kind is inspect.Parameter.VAR_KEYWORD
    images = random_images(2, seed=0)
    for function in (compute_stats, compute_stats_with_report, compute_features):
        with pytest.raises(InputError, match="unknown option skipbad"):
            function(images, skipbad=True)
        with pytest.raises(InputError, match="batch_size"):
            function(images, batch_size=0)
    with pytest.raises(InputError, match="unknown option skipbad"):
        compute_fid(images, images, skipbad=True)
    with pytest.raises(InputError, match="unknown option skipbad"):
        fidkit.FID(skipbad=True)
    with pytest.raises(InputError, match="must be a fidkit.RunOptions"):
        compute_stats(images, options={"device": "cpu"})


def test_weights_are_hashed_once_per_call(random_weights_path, extractor, monkeypatch, tmp_path):
    # The cache key needs the weights' sha256 before the network is built; the extractor built after
    # a cache miss must reuse that hash (a second read of a 100 MB file, and a repeated log line).
    import shutil

    import fidkit.inception.weights as weights_module
    from fidkit.api import compute_fid
    from fidkit.testing import replaced_extractor

    # A copy: a new file (inode) that this process has not hashed yet.
    weights = shutil.copy(random_weights_path, tmp_path / "copy.pth")
    hashed = []
    real_sha256_file = weights_module.sha256_file
    monkeypatch.setattr(weights_module, "sha256_file", lambda path: hashed.append(path) or real_sha256_file(path))
    from fidkit.inception import locate_weights

    with replaced_extractor(lambda options: locate_weights(options.weights) and extractor) as built:
        report = compute_fid(random_images(4, seed=1), random_images(4, seed=2), weights=weights, workers=0)
    assert report.weights_sha256 == extractor.weights_sha256
    assert len(hashed) == 1  # for the cache key, and not again to build the network
    assert len(built) == 1 and str(built[0].weights) == str(weights)

# --- real data ---------------------------------------------------------------------------------------


def test_cifar_jpeg_zip_vs_lossless_array_warns_lossy(shared_data, extractor):
    from fidkit.api import compute_fid

    jpeg_zip = shared_data / "cifar10" / "cifar10-test-jpg.zip"
    lossless = shared_data / "cifar10" / "cifar10-test-0-999-uint8.npy"
    with pytest.warns(FidkitWarning, match="lossy"):
        report = compute_fid(jpeg_zip, lossless, extractor=extractor, limit=10, workers=1)
    assert (report.a.n, report.b.n) == (10, 10)
    assert report.a.kind == "archive" and report.a.lossy
    assert report.b.kind == "array" and not report.b.lossy
    assert report.value > 0 and np.isfinite(report.value)


# --- progress bar -------------------------------------------------------------------------------------


def test_progress_goes_to_stderr_only_when_asked_or_on_a_terminal(capsys):
    # The bar is tqdm's; fidkit's rule is: stderr only, on a terminal by default, off with progress=False.
    from fidkit.extraction import extract
    from fidkit.stats import StatsAccumulator

    def features(batch):
        return np.asarray(batch, dtype=np.float32).reshape(len(batch), -1)[:, :4]

    batches = [random_images(3, seed=seed) for seed in range(2)]
    for progress, drawn in ((True, True), (False, False), (None, False)):  # None: stderr is not a terminal here
        accumulator = StatsAccumulator()
        times = extract(iter(batches), features, accumulator, total=6, desc="some/dir", progress=progress)
        captured = capsys.readouterr()
        assert captured.out == ""
        assert ("some/dir" in captured.err and "/6" in captured.err) is drawn
        assert accumulator.n == 6 and times.network_seconds >= 0.0


def test_what_a_folder_does_not_read_is_counted_in_the_report(tmp_path, extractor):
    # Hidden folders and formats fidkit does not read are never dropped without a count.
    from fidkit.api import compute_fid, compute_stats_with_report

    folder = tmp_path / "images"
    (folder / ".ipynb_checkpoints").mkdir(parents=True)
    for index, image in enumerate(random_images(3, seed=9)):
        Image.fromarray(image).save(folder / f"{index}.png")
    Image.fromarray(random_images(1, seed=10)[0]).save(folder / ".ipynb_checkpoints" / "0.png")
    (folder / "anim.gif").write_bytes(b"GIF89a")
    stats, side = compute_stats_with_report(folder, extractor=extractor, workers=0, use_cache=False)
    assert stats.n == 3 and sum(count for _, count in side.ignored) == 2
    with pytest.warns(FidkitWarning, match="not read"):
        report = compute_fid(folder, random_images(3, seed=11), extractor=extractor, workers=0, use_cache=False)
    assert report.a.to_dict()["ignored"] and "2 ignored" in str(report.a)


def test_an_impossible_explicit_gpu_is_an_error_even_when_both_sides_are_cached(extractor, monkeypatch):
    # Hostile round 3, item 24: a cached run once printed a FID for --device cuda on a machine without a GPU.
    from fidkit.api import compute_fid
    from fidkit.errors import FidkitError
    from fidkit.inception import providers
    from fidkit.testing import replaced_extractor

    images_a, images_b = random_images(4, seed=31), random_images(5, seed=32)
    with replaced_extractor(lambda options: extractor):
        compute_fid(images_a, images_b, weights=extractor.weights_path, device="cpu", workers=0)  # both cached now
        monkeypatch.setattr(providers, "gpu_driver_present", lambda: False)
        with pytest.raises(FidkitError, match="device cuda asked for, but there is no NVIDIA driver"):
            compute_fid(images_a, images_b, weights=extractor.weights_path, device="cuda", workers=0)
        assert compute_fid(images_a, images_b, weights=extractor.weights_path, device="cpu", workers=0).a.cached


def test_different_conventions_are_an_error_unless_allowed_and_foreign_files_warn(no_extractor_built):
    from fidkit.api import compute_fid

    def side(seed, convention, resize_mode):
        return small_stats(seed, metadata={"weights_sha256": "a" * 64, "convention": convention,
                                           "resize_mode": resize_mode})

    clean, pytorch = side(1, "clean", "pil-bicubic-antialias-float"), side(2, "pytorch-fid", "torch-bilinear-half-pixel")
    with pytest.raises(InputError, match="'clean' convention .* under 'pytorch-fid'.*--allow-convention-mismatch"):
        compute_fid(clean, pytorch)
    with pytest.warns(FidkitWarning, match="mixes two preprocessings"):
        report = compute_fid(clean, pytorch, allow_convention_mismatch=True)
    assert report.convention == "clean, pytorch-fid"
    # A fidkit file from before conventions, resized the TF way, is the tf convention.
    old = small_stats(3, metadata={"weights_sha256": "a" * 64, "resize_mode": "tf1-bilinear-asymmetric"})
    with pytest.raises(InputError, match="under 'tf'"):
        compute_fid(clean, old)
    # Another tool's file (mu and sigma only): compared, with a warning naming the unknown convention.
    from fidkit.stats import Stats

    foreign = Stats(mu=clean.mu + 1, sigma=clean.sigma)
    with pytest.warns(FidkitWarning, match="its convention .* is unknown too"):
        compute_fid(clean, foreign)


# --- hostile round 5, 5: a file without its suffix; outputs given as a string; feature rows given as images ---------


def test_statistics_saved_without_the_suffix_are_refused_with_the_rename(tmp_path):
    stats = fidkit.Stats.from_features(np.random.default_rng(0).normal(size=(20, 4)))
    stats.save(tmp_path / "reference")
    with pytest.raises(SourceError, match=r"by its content a zip archive.*rename it reference\.npz"):
        fidkit.compute_fid(str(tmp_path / "reference"), stats)
    np.save(tmp_path / "images.npy", noise_images(3, 0))
    (tmp_path / "images.npy").rename(tmp_path / "images")
    with pytest.raises(SourceError, match=r"numpy \.npy array: rename it images\.npy"):
        fidkit.compute_stats(str(tmp_path / "images"))


def test_compute_features_takes_outputs_as_a_string():
    class WithLogits(FullIdentityMeanColour):
        def outputs(self, batch, names):
            features = self(batch)
            return {"features": features, **{name: features[:, :3] for name in names if name != "features"}}

    for outputs in ("logits", "features,logits", ["logits"]):
        kept = fidkit.compute_features(noise_images(5, 1), extractor=WithLogits(), outputs=outputs, use_cache=False)
        assert kept.logits is not None and kept.logits.shape == (5, 3), outputs
    with pytest.raises(InputError, match="unknown output"):
        fidkit.compute_features(noise_images(5, 1), extractor=WithLogits(), outputs="logit", use_cache=False)


def test_feature_rows_given_as_images_are_told_what_they_look_like(tmp_path):
    # clean-fid saves its features as np.savez_compressed(path, feats=...): read as images, the error pointed at
    # value_range and uint8 conversion.
    rows = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    np.savez_compressed(tmp_path / "clean_fid_feats.npz", feats=rows)
    for source in (str(tmp_path / "clean_fid_feats.npz"), rows):
        with pytest.raises(InputError, match=r"looks like feature rows, not images.*fid_from_arrays.*Features"):
            fidkit.compute_stats(source, extractor=FullIdentityMeanColour(), use_cache=False)


# --- hostile round 7, 5: a misspelt keyword names the function's own keywords and the closest one -------------------


def test_a_misspelt_keyword_lists_the_functions_own_keywords_and_suggests_the_closest(no_extractor_built):
    from fidkit.api import compute_features, compute_fid, compute_stats, compute_stats_with_report

    a, b = small_stats(0), small_stats(1)
    with pytest.raises(InputError, match=r"unknown option metric; compute_fid's own keywords are") as raised:
        compute_fid(a, b, metric="kid")
    message = str(raised.value)
    for keyword in ("metrics", "ci", "metrics_seed", "method", "allow_weights_mismatch", "allow_convention_mismatch",
                    "batch_size", "ray_address"):
        assert f" {keyword}," in message or f" {keyword};" in message, (keyword, message)
    assert message.endswith("did you mean metrics?")
    with pytest.raises(InputError, match=r"did you mean metrics_seed\?$"):
        compute_fid(a, b, metric_seed=3)
    with pytest.raises(InputError, match=r"did you mean allow_weights_mismatch\?$"):
        compute_fid(a, b, allow_weight_mismatch=True)
    with pytest.raises(InputError, match=r"compute_fid's own keywords .*did you mean batch_size\?$"):
        compute_fid(a, b, batchsize=8)
    # What only another function takes: the message says which one.
    for function in (compute_stats, compute_stats_with_report, compute_features):
        for keyword, owner in (("metrics", "compute_fid"), ("ci", "compute_fid"), ("metrics_seed", "compute_fid")):
            with pytest.raises(InputError, match=rf"unknown option {keyword}; {function.__name__}'s own keywords are "
                                                 rf"options[^;]*, and the options are extractor, .*; {keyword} is a keyword of {owner}, not of "
                                                 rf"{function.__name__}$"):
                function(a, **{keyword: "kid"})
    with pytest.raises(InputError, match=r"outputs is a keyword of compute_features, not of compute_stats$"):
        compute_stats(a, outputs="logits")
    # A name close to nothing: both lists, no guess.
    with pytest.raises(InputError, match=r"unknown option zzz; compute_stats's own keywords are options, "
                                         r"and the options are extractor, .*, ray_address$"):
        compute_stats(a, zzz=1)
    # The keywords that are the function's own still pass the check.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FidkitWarning)  # Stats without weights
        report = compute_fid(a, b, metrics="fid", metrics_seed=1, method="auto", device="cpu")
    assert report.value == fidkit.fid_from_stats(a, b).value


# --- round 8, 3: a side too small for an asked metric is refused before the network runs -----------------------------


def _numbered_png_folder(folder, n_images: int):
    folder.mkdir()
    for index, pixels in enumerate(random_images(n_images, seed=7)):
        Image.fromarray(pixels).save(folder / f"{index:03d}.png")
    return folder


@pytest.mark.parametrize("kind", ["array", "npy", "folder", "folder-limit", "features"])
def test_a_side_too_small_for_the_inception_score_is_refused_before_the_network_runs(kind, tmp_path, no_extractor_built):
    n_small = 7
    if kind == "array":
        small, limit = random_images(n_small, seed=3), None
    elif kind == "npy":
        small, limit = tmp_path / "b.npy", None
        np.save(small, random_images(n_small, seed=3))
    elif kind == "folder":
        small, limit = _numbered_png_folder(tmp_path / "small", n_small), None
    elif kind == "folder-limit":  # 30 files, of which --limit keeps 7
        small, limit = _numbered_png_folder(tmp_path / "small", 30), n_small
    else:
        rng = np.random.default_rng(3)
        small, limit = tmp_path / "small.npz", None
        fidkit.Features(rng.normal(size=(n_small, 6)), logits=rng.normal(size=(n_small, 9))).save(small)
    large = random_images(40, seed=4)
    with pytest.raises(InputError, match=rf"the Inception Score needs at least 10 images on side a .*which holds "
                                         rf"{n_small}: use at least 10 images there, or leave 'is' out"):
        fidkit.compute_fid(small, large, metrics="is", use_cache=False, limit=limit)
    assert no_extractor_built == []  # refused when the inputs were opened
    if kind != "features":  # as side b, images keep no logits: the Inception Score of side a alone, no refusal
        return
    with pytest.raises(InputError, match=rf"needs at least 10 images on side b .*which holds {n_small}"):
        fidkit.compute_fid(large, small, metrics="is", use_cache=False)
    assert no_extractor_built == []


@pytest.mark.parametrize(("n_images", "metrics", "match"), [
    (10, "is", r"keeps 5 of the 10 images of side a, but the Inception Score's 10 splits"),
    (9, "prdc", r"keeps 4 of the 9 images of side a, but a ball of k = 5 other samples needs 6"),
])
def test_a_side_too_small_for_a_half_sample_interval_is_refused_before_the_network_runs(
    n_images, metrics, match, no_extractor_built
):
    from fidkit.metrics import IntervalSpec

    with pytest.raises(InputError, match=match):
        fidkit.compute_fid(random_images(n_images, seed=1), random_images(60, seed=2), metrics=metrics,
                           ci=IntervalSpec(n_resamples=5), use_cache=False)
    assert no_extractor_built == []
