"""Hostile review, round 5: the Python API as a notebook or a training loop uses it.

- 1: images without pixels (a zero height or width) are an InputError naming the shape, not a TypeError from
  fingerprinting; torch tensors on the 'meta' device or sparse ones are refused, not a raw torch error.
- 2: ``copy.deepcopy(FID)`` with a generator reference: a FidkitError before compute() (as pickling), a copy after
  (of the reference's statistics, not the opened source).
- 3: ``FID(reference=file)`` made by another network is refused at the first update(), before the network runs (not
  at the first compute(), after it), with advice FID accepts (no allow_*_mismatch, which FID does not take).
- 4: in ``FID(metrics=...)``'s table side a is the generated set, the reverse of the report's a: the text names
  them "generated" and "real".
- 5: a statistics file saved without the .npz suffix is refused with what it is and the rename;
  ``compute_features(outputs="logits")`` is one output, not six letters.
- 6: ``fid_infinity(min_size=...)`` at or above N is an error: every subset was all N rows, and the "extrapolated"
  value FID(N) under sizes never used.

No network runs here: the extractors are fakes, and the refusals come before any network work.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

import fidkit
from fidkit._validate import as_image_batch
from fidkit.errors import FidkitError, FidkitWarning, InputError, SmallSampleWarning, SourceError


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        warnings.filterwarnings("ignore", message=".*not the released", category=FidkitWarning)
        yield


class Fake:
    """Mean and spread of each channel (dimension 6)."""

    feature_dim, batch_size, thread_safe = 6, 16, True

    def __call__(self, batch):
        x = np.asarray(batch, dtype=np.float32)
        return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=1).astype(np.float32)

    def metadata(self) -> dict:
        return {"feature_extractor": "fake", "weights_sha256": "f" * 64, "resize_mode": "none", "convention": "tf",
                "exporter_version": "1", "engine": "numpy", "precision": "exact", "provider": "cpu"}


def images(n: int, seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


# -- 1 -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [
    np.zeros((2, 0, 16, 3), np.uint8), np.zeros((2, 16, 0), np.uint8), torch.zeros((2, 3, 16, 0), dtype=torch.uint8),
    torch.zeros((2, 1, 0, 5), dtype=torch.uint8),
])
def test_images_without_pixels_are_refused_naming_the_shape(batch):
    with pytest.raises(InputError, match=r"images must have H, W >= 1"):
        as_image_batch(batch, "x", value_range=(0, 1))
    with pytest.raises(InputError, match=r"images must have H, W >= 1"):
        fidkit.compute_stats(batch, extractor=Fake(), use_cache=False)
    with pytest.raises(InputError, match=r"images must have H, W >= 1"):
        fidkit.FID(reference=batch, extractor=Fake())


def test_meta_and_sparse_tensors_are_refused():
    with pytest.raises(InputError, match="'meta' device holds no pixels"):
        as_image_batch(torch.empty((4, 3, 8, 6), dtype=torch.uint8, device="meta"), "x")
    with pytest.raises(InputError, match="'meta' device"):
        as_image_batch(torch.empty((4, 3, 8, 6), device="meta"), "x", value_range=(0, 1))
    with pytest.raises(InputError, match=r"sparse.*to_dense"):
        as_image_batch(torch.zeros((4, 3, 8, 6)).to_sparse(), "x", value_range=(0, 1))
    metric = fidkit.FID(reference=images(20, 0), extractor=Fake())
    with pytest.raises(InputError, match="'meta' device"):
        metric.update(torch.empty((4, 3, 8, 6), dtype=torch.uint8, device="meta"))


# -- 2 -------------------------------------------------------------------------------------------------------


def test_deepcopy_of_a_metric_with_a_generator_reference():
    batches = [images(10, 1), images(10, 2)]
    metric = fidkit.FID(reference=(batch for batch in batches), extractor=Fake())
    metric.update(images(20, 3))
    with pytest.raises(FidkitError, match=r"cannot be copied yet.*call compute\(\) once first"):
        copy.deepcopy(metric)
    value = float(metric.compute())
    clone = copy.deepcopy(metric)
    assert float(clone.compute()) == value
    clone.update(images(20, 4))
    assert float(clone.compute()) != value and float(metric.compute()) == value
    # The copy holds the reference's statistics, not the opened source.
    assert isinstance(clone._reference_input, fidkit.Stats)


def test_deepcopy_of_a_computed_metric_does_not_copy_an_array_reference():
    reference = images(30, 5)
    metric = fidkit.FID(reference=reference, extractor=Fake())
    metric.update(images(20, 6))
    metric.compute()
    clone = copy.deepcopy(metric)
    assert isinstance(clone._reference_input, fidkit.Stats)  # not the source holding the array
    assert float(clone.compute()) == float(metric.compute())


# -- 3 -------------------------------------------------------------------------------------------------------


def _reference_file(tmp_path, random_weights_path, **metadata):
    from fidkit._fs import sha256_file

    rows = np.random.default_rng(0).normal(size=(40, metadata.pop("dim", 2048)))
    fields = {"weights_sha256": sha256_file(random_weights_path), "convention": "tf", **metadata}
    path = tmp_path / "reference.npz"
    fidkit.Stats.from_features(rows, metadata=fields).save(path)
    return path


@pytest.mark.parametrize(("metadata", "expected"), [
    ({"convention": "clean"}, r"convention clean.*convention='clean'"),
    ({"weights_sha256": "0" * 64}, r"weights_sha256 0000.*weights="),
    ({"dim": 768, "feature_extractor": "pool3-768"}, r"768.*dims=768"),
])
def test_a_reference_file_of_another_network_is_refused_before_the_network_runs(
    tmp_path, random_weights_path, monkeypatch, metadata, expected
):
    monkeypatch.setenv("FIDKIT_HOME", str(tmp_path / "home"))
    path = _reference_file(tmp_path, random_weights_path, **metadata)
    metric = fidkit.FID(reference=str(path), weights=str(random_weights_path), device="cpu")

    def network_ran(*args, **kwargs):
        raise AssertionError("the network ran before the reference was checked")

    monkeypatch.setattr("fidkit.metric.extract", network_ran)
    with pytest.raises(InputError, match=expected) as refused:
        metric.update(images(2, 0))
    assert "allow_" not in str(refused.value) and "mismatch" not in str(refused.value)


def test_a_reference_file_of_the_same_network_passes_the_check_without_building_it(tmp_path, random_weights_path, monkeypatch):
    monkeypatch.setenv("FIDKIT_HOME", str(tmp_path / "home"))
    path = _reference_file(tmp_path, random_weights_path)
    metric = fidkit.FID(reference=str(path), weights=str(random_weights_path), device="cpu")
    metric._check_reference()  # what update() runs once the network is built, before it runs
    assert not metric._extractor.built and not metric._reference_unchecked


# -- 4 -------------------------------------------------------------------------------------------------------


def test_the_metric_table_of_fid_names_its_sides_generated_and_real():
    rng = np.random.default_rng(7)
    real = fidkit.Features(rng.normal(size=(30, 6)).astype(np.float32), logits=rng.normal(size=(30, 10)))
    metric = fidkit.FID(reference=real, extractor=Fake(), metrics="fid,kid")
    metric._update_features(rng.normal(size=(40, 6)))
    report = metric.compute()
    assert report.a.n == 30 and report.metrics.n_a == 40  # the report's a is real, the table's a generated
    text = report.metrics.format()
    assert "images: generated 40, real 30" in text
    assert "images: a 40, b 30" not in str(report)
    # evaluate() keeps its letters by default.
    table = fidkit.metrics.evaluate(fidkit.Features(rng.normal(size=(40, 6))), real, "fid")
    assert "images: a 40, b 30" in table.format()


# -- 5 -------------------------------------------------------------------------------------------------------


def test_statistics_saved_without_the_suffix_are_refused_with_the_rename(tmp_path):
    stats = fidkit.Stats.from_features(np.random.default_rng(0).normal(size=(20, 4)))
    stats.save(tmp_path / "reference")
    with pytest.raises(SourceError, match=r"by its content a zip archive.*rename it reference\.npz"):
        fidkit.compute_fid(str(tmp_path / "reference"), stats)
    np.save(tmp_path / "images.npy", images(3, 0))
    (tmp_path / "images.npy").rename(tmp_path / "images")
    with pytest.raises(SourceError, match=r"numpy \.npy array: rename it images\.npy"):
        fidkit.compute_stats(str(tmp_path / "images"))


def test_compute_features_takes_outputs_as_a_string():
    class WithLogits(Fake):
        def outputs(self, batch, names):
            features = self(batch)
            return {"features": features, **{name: features[:, :3] for name in names if name != "features"}}

    for outputs in ("logits", "features,logits", ["logits"]):
        kept = fidkit.compute_features(images(5, 1), extractor=WithLogits(), outputs=outputs, use_cache=False)
        assert kept.logits is not None and kept.logits.shape == (5, 3), outputs
    with pytest.raises(InputError, match="unknown output"):
        fidkit.compute_features(images(5, 1), extractor=WithLogits(), outputs="logit", use_cache=False)


# -- 6 -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("min_size", [300, 301, 1000])
def test_fid_infinity_refuses_a_min_size_that_is_not_below_n(min_size):
    rng = np.random.default_rng(0)
    features, reference = rng.normal(size=(300, 4)), rng.normal(size=(400, 4)) + 0.1
    with pytest.raises(InputError, match=rf"min_size={min_size} is not below the 300 rows"):
        fidkit.metrics.fid_infinity(features, reference, min_size=min_size, n_points=5)
    result = fidkit.metrics.fid_infinity(features, reference, min_size=100, n_points=5)
    assert result.sizes == (100, 150, 200, 250, 300) and len(set(result.fids)) == 5


def test_feature_rows_given_as_images_are_told_what_they_look_like(tmp_path):
    # clean-fid saves its features as np.savez_compressed(path, feats=...): read as images, the error pointed at
    # value_range and uint8 conversion.
    rows = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    np.savez_compressed(tmp_path / "clean_fid_feats.npz", feats=rows)
    for source in (str(tmp_path / "clean_fid_feats.npz"), rows):
        with pytest.raises(InputError, match=r"looks like feature rows, not images.*fid_from_arrays.*Features"):
            fidkit.compute_stats(source, extractor=Fake(), use_cache=False)


def test_a_stand_in_registered_under_the_built_in_name_is_checked_by_its_own_width():
    # fidkit.testing.replaced_extractor in a user's tests: a 6-wide stand-in and 6-dimensional reference statistics
    # under the built-in name (whose --dims default is 2048) compute a FID, as before the check moved to update().
    from fidkit.testing import replaced_extractor

    reference = fidkit.Stats.from_features(np.random.default_rng(0).normal(size=(40, 6)))
    with replaced_extractor(lambda options: Fake()):
        metric = fidkit.FID(reference=reference, device="cpu")
        metric.update(images(20, 1))
        assert metric.compute().b.n == 20


def test_relabelled_changes_only_metadata_and_path_and_checks_the_metadata():
    from fidkit.stats import relabelled

    stats = fidkit.Stats.from_features(np.random.default_rng(0).normal(size=(20, 4)), metadata={"a": 1})
    copied = relabelled(stats, metadata={"a": 2, "b": "x"})
    assert copied.mu is stats.mu and copied.metadata == {"a": 2, "b": "x"} and stats.metadata == {"a": 1}
    with pytest.raises(InputError, match="metadata"):
        relabelled(stats, metadata={"k": [1, 2]})
    with pytest.raises(TypeError):
        relabelled(stats, mu=np.zeros(4))
