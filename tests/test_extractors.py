"""fidkit.extractors: one interface, one registry, identities known before building (the recipe "add an
extractor", followed here end to end)."""

from __future__ import annotations

import numpy as np
import pytest

import fidkit
from fidkit.errors import InputError
from fidkit.extractors import (
    Extractor,
    ExtractorEntry,
    LazyExtractor,
    build_extractor,
    extractor_entry,
    extractor_names,
    identity_for,
    identity_of,
    register_extractor,
    unregister_extractor,
)
from fidkit.options import RunOptions


class CountingMeanColour:
    """A toy extractor: the mean colour and its spread per image (dimension 6).

    Not stand_ins.MeanColour: its metadata names it ("extractor": "mean-colour", the identity's name, as a
    registered extractor's does), it takes batches of 4 and counts the images it is given.
    """

    feature_dim = 6
    batch_size = 4

    def __init__(self) -> None:
        self.images = 0

    def __call__(self, images):
        images = np.asarray(images, dtype=np.float32)
        self.images += len(images)
        return np.concatenate([images.mean(axis=(1, 2)), images.std(axis=(1, 2))], axis=1).astype(np.float32)

    def metadata(self):
        return {"extractor": "mean-colour", "weights_sha256": "none", "resize_mode": "none", "provider": "numpy"}


@pytest.fixture
def mean_colour():
    built: list[CountingMeanColour] = []

    def build(options):
        built.append(CountingMeanColour())
        return built[-1]

    register_extractor(ExtractorEntry(
        name="mean-colour", description="mean colour (a test)", build=build,
        identity=lambda options: {"weights_sha256": "none", "resize_mode": "none"},
    ))
    yield built
    unregister_extractor("mean-colour")


def images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)


def test_the_registry_lists_the_fid_network_and_refuses_unknown_names():
    assert extractor_names()[0] == "inception-2015"
    assert "Inception" in extractor_entry("inception-2015").description
    with pytest.raises(InputError, match="unknown extractor 'nope'; the registered extractors are inception-2015"):
        extractor_entry("nope")
    with pytest.raises(InputError, match="registered already"):
        register_extractor(extractor_entry("inception-2015"))


def test_a_registered_extractor_runs_through_every_entry_point_and_is_cached_apart(fidkit_home, mean_colour):
    data = images(10, seed=0)
    stats = fidkit.compute_stats(data, extractor="mean-colour", workers=0)
    assert stats.dim == 6 and stats.metadata["extractor"] == "mean-colour" and len(mean_colour) == 1
    expected = CountingMeanColour()(data).astype(np.float64)
    np.testing.assert_allclose(stats.mu, expected.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(expected, rowvar=False), rtol=1e-10, atol=1e-9)
    # Cached under its own identity: no build the second time.
    again = fidkit.compute_stats(data, extractor="mean-colour", workers=0)
    assert len(mean_colour) == 1 and np.array_equal(again.mu, stats.mu)
    features = fidkit.compute_features(data, extractor="mean-colour", workers=0)
    np.testing.assert_array_equal(features.rows, CountingMeanColour()(data))
    report = fidkit.compute_fid(data, images(12, seed=1), extractor="mean-colour", workers=0)
    assert report.a.n == 10 and report.b.n == 12 and report.value > 0
    metric = fidkit.FID(reference=data, extractor="mean-colour")
    metric.update(images(12, seed=1))
    assert float(metric.compute()) == pytest.approx(report.value, rel=1e-9)


def test_a_users_own_object_keeps_working_without_registering(fidkit_home):
    own = CountingMeanColour()
    assert isinstance(own, Extractor)
    stats = fidkit.compute_stats(images(5, seed=2), extractor=own, workers=0)
    assert stats.dim == 6 and own.images == 5
    identity = identity_of(own)
    assert identity.name == "mean-colour" and identity.get("provider") == ""  # where it ran is not identity


def test_an_object_without_a_weights_identity_is_refused_clearly():
    class Anonymous:
        feature_dim = 2

        def __call__(self, images):
            return np.zeros((len(images), 2), np.float32)

        def metadata(self):
            return {}

    with pytest.raises(InputError, match="must name 'weights_sha256'"):
        identity_of(Anonymous())


def test_the_identity_before_building_is_the_built_extractors(random_weights_path, extractor):
    options = RunOptions(weights=random_weights_path, device="cpu")
    before = identity_for(options)
    assert before == identity_of(extractor)
    assert before.name == "inception-2015" and before.weights_sha256 == extractor.weights_sha256
    assert before.engine == "onnxruntime" and before.precision == "exact"
    assert identity_for(options.replace(device="tensorrt")).precision == "tensorrt-exact"
    assert identity_for(options.replace(engine="torch")).engine == "torch"


def test_lazy_extractor_builds_once_and_only_when_asked(mean_colour):
    lazy = LazyExtractor(RunOptions(extractor="mean-colour"))
    assert lazy.identity().name == "mean-colour" and not lazy.built and mean_colour == []
    assert lazy.get() is lazy.get() and len(mean_colour) == 1
    assert lazy.batch_size() == 4  # the extractor's own choice when the options give none
    assert isinstance(build_extractor(RunOptions(extractor="mean-colour")), CountingMeanColour)
    with pytest.raises(InputError, match="registered name or an extractor object"):
        LazyExtractor(RunOptions(), given=42)


def test_the_fid_network_chooses_its_batch_size_for_its_device(random_weights_path):
    from fidkit.inception.spec import CPU_BATCH_SIZE

    built = build_extractor(RunOptions(weights=random_weights_path, device="cpu"))
    # The smallest batch measured to keep the CPU's rate, at about half the memory of 50 (docs/performance.md).
    assert built.batch_size == CPU_BATCH_SIZE == 25
    assert build_extractor(RunOptions(weights=random_weights_path, device="cpu", batch_size=7)).batch_size == 7


def test_the_setup_of_a_side_is_split_into_its_parts(fidkit_home, random_weights_path):
    from fidkit.api import compute_stats_with_report
    from fidkit.inception.spec import CPU_BATCH_SIZE

    _, side = compute_stats_with_report(
        images(3, seed=9), weights=random_weights_path, device="cpu", workers=0, use_cache=False
    )
    parts = dict(side.setup_parts)
    assert set(parts) == {"weights", "graph_check", "session"} or set(parts) == {"weights", "graph_export", "session"}
    assert all(seconds >= 0 for seconds in parts.values()) and side.setup_seconds >= max(parts.values())
    assert side.to_dict()["setup_parts"] == parts and side.batch_size == CPU_BATCH_SIZE


def test_two_registered_extractors_of_one_class_never_share_cache_entries(fidkit_home):
    # The review's case: entries built from one class, whose metadata does not repeat the registry name.
    class Scaled:
        feature_dim, batch_size = 3, 8

        def __init__(self, k: float) -> None:
            self.k = k

        def __call__(self, images):
            return (np.asarray(images, dtype=np.float32).mean(axis=(1, 2)) * self.k).astype(np.float32)

        def metadata(self):
            return {"weights_sha256": "none", "resize_mode": "none"}

    builds = []
    for name, k in (("scaled-x1", 1.0), ("scaled-x10", 10.0)):
        register_extractor(ExtractorEntry(
            name=name, description=name, build=lambda options, k=k: builds.append(k) or Scaled(k),
            identity=lambda options: {"weights_sha256": "none", "resize_mode": "none"},
        ), replace=True)
    try:
        data = images(6, seed=11)
        x1 = fidkit.compute_stats(data, extractor="scaled-x1", workers=0)
        x10 = fidkit.compute_stats(data, extractor="scaled-x10", workers=0)
        np.testing.assert_allclose(x10.mu, 10 * x1.mu, rtol=1e-6)
        again = fidkit.compute_stats(data, extractor="scaled-x1", workers=0)
        assert np.array_equal(again.mu, x1.mu) and builds == [1.0, 10.0]  # the third came from the cache
    finally:
        unregister_extractor("scaled-x1")
        unregister_extractor("scaled-x10")


def test_numpy_scalars_in_an_extractors_metadata_are_stored_as_numbers(fidkit_home, tmp_path):
    class WithCounts(CountingMeanColour):
        def metadata(self):
            return {**super().metadata(), "n_layers": np.int64(3), "scale": np.float32(0.5)}

    features = fidkit.compute_features(images(4, seed=12), extractor=WithCounts(), workers=0)
    assert features.metadata["n_layers"] == 3 and type(features.metadata["n_layers"]) is int
    features.save(tmp_path / "f.npz")
    assert fidkit.Features.load(tmp_path / "f.npz").metadata["scale"] == 0.5
