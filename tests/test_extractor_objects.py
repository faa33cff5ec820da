"""A user's extractor object (passed as ``extractor=``, not registered): what it must offer, when its statistics are
cached, what the options may say about it, and the batch size it runs at. The same rules for compute_* and FID."""

from __future__ import annotations

import numpy as np
import pytest

import fidkit
from fidkit.api import compute_stats_with_report
from fidkit.errors import InputError
from fidkit.extractors import ExtractorIdentity, identity_of

SHA = "ab" * 32

# Made-up weights are said not to be the released Inception file; that is not what these tests are about.
pytestmark = pytest.mark.filterwarnings("ignore:.*not the released:fidkit.errors.FidkitWarning")


def images(n: int, seed: int, size: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture
def sides(tmp_path):
    """Two image files (cacheable sources) of 9 and 11 images."""
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(a, images(9, 1))
    np.save(b, images(11, 2))
    return a, b


class Colour:
    """The review's extractor: chosen channels of the mean colour; the metadata does not say which channels."""

    batch_size = 8

    def __init__(self, channels, sha: str = "none") -> None:
        self.channels = list(channels)
        self.feature_dim = len(self.channels)
        self.sha = sha
        self.calls: list[int] = []

    def __call__(self, batch):
        self.calls.append(len(batch))
        return np.asarray(batch, np.float32).mean(axis=(1, 2))[:, self.channels]

    def metadata(self):
        return {"weights_sha256": self.sha, "resize_mode": "none"}


def expected_stats(path, extractor) -> fidkit.Stats:
    rows = Colour(extractor.channels)(np.load(path)).astype(np.float64)
    return fidkit.Stats.from_features(rows)


# ------------------------------------------------------------------------ 1. never another configuration's statistics


@pytest.mark.parametrize(("first", "second"), [([0, 1], [1, 2]), ([0, 2], [1, 2]), ([0], [1])])
def test_two_configurations_of_one_class_are_never_served_each_others_statistics(fidkit_home, sides, first, second):
    a, b = sides
    one = fidkit.compute_fid(a, b, extractor=Colour(first))
    other = fidkit.compute_fid(a, b, extractor=Colour(second))
    fresh = fidkit.compute_fid(a, b, extractor=Colour(second), use_cache=False)
    assert other.value == pytest.approx(fresh.value, rel=1e-12) and other.value != pytest.approx(one.value)
    assert not other.a.cached and not other.b.cached  # "none" names no weights: not cached at all
    assert fidkit.cache.list_cache() == []


def test_a_narrower_configuration_after_a_wider_one_has_its_own_width(fidkit_home, sides):
    a, _ = sides
    assert fidkit.compute_stats(a, extractor=Colour([0, 1, 2])).dim == 3
    narrow = fidkit.compute_stats(a, extractor=Colour([2]))
    assert narrow.dim == 1
    np.testing.assert_allclose(narrow.mu, expected_stats(a, Colour([2])).mu, rtol=1e-12)


def test_an_object_with_a_content_identity_is_cached_apart_by_class_and_width(fidkit_home, sides):
    a, _ = sides
    first, side = compute_stats_with_report(a, extractor=Colour([0, 1, 2], sha=SHA))
    again, side_again = compute_stats_with_report(a, extractor=Colour([0, 1, 2], sha=SHA))
    assert not side.cached and side_again.cached and np.array_equal(first.mu, again.mu)
    # The same sha256, another width: its own entry, never the wider one's.
    narrow, side_narrow = compute_stats_with_report(a, extractor=Colour([1], sha=SHA))
    assert not side_narrow.cached and narrow.dim == 1
    np.testing.assert_allclose(narrow.mu, expected_stats(a, Colour([1])).mu, rtol=1e-12)

    # Another class with the same metadata and width: another identity, another entry.
    class Reversed(Colour):
        def __call__(self, batch):
            return super().__call__(batch)[:, ::-1].copy()

    reversed_stats, side_reversed = compute_stats_with_report(a, extractor=Reversed([0, 1, 2], sha=SHA))
    assert not side_reversed.cached
    np.testing.assert_allclose(reversed_stats.mu, first.mu[::-1], rtol=1e-12)
    identity = identity_of(Reversed([0, 1, 2], sha=SHA))
    assert identity.get("class").endswith("Reversed") and identity.get("feature_dim") == "3"


def test_a_cache_entry_of_another_width_is_never_served_even_under_the_same_key(fidkit_home, sides):
    a, _ = sides

    class Stated(Colour):
        def identity(self):  # the object answers for its identity, and says too little: both widths share a key
            return ExtractorIdentity.of("stated", {"weights_sha256": SHA, "resize_mode": "none"})

    assert fidkit.compute_stats(a, extractor=Stated([0, 1])).dim == 2
    _, hit = compute_stats_with_report(a, extractor=Stated([0, 1]))
    assert hit.cached  # a stated identity is cached
    narrow, side = compute_stats_with_report(a, extractor=Stated([2]))
    assert not side.cached and narrow.dim == 1
    np.testing.assert_allclose(narrow.mu, expected_stats(a, Colour([2])).mu, rtol=1e-12)
    features = fidkit.compute_features(a, extractor=Stated([0, 1, 2]))
    assert features.dim == 3


# ------------------------------------------------------------------------ 5. the Extractor protocol, one rule


class NoMetadata:
    feature_dim, batch_size = 3, 4

    def __call__(self, batch):
        return np.asarray(batch, np.float32).mean(axis=(1, 2))


class ListMetadata(NoMetadata):
    def metadata(self):
        return ["weights_sha256", "none"]


class Undeclared:
    """No feature_dim (nor batch_size): the width comes from the first batch."""

    def __call__(self, batch):
        return np.asarray(batch, np.float32).mean(axis=(1, 2))

    def metadata(self):
        return {"weights_sha256": SHA, "resize_mode": "none"}


class NoneDim(Undeclared):
    feature_dim = None
    batch_size = None


def _bad_dim(value):
    return type("BadDim", (Undeclared,), {"feature_dim": value})()


def _bad_batch(value):
    return type("BadBatch", (Undeclared,), {"batch_size": value})()


@pytest.mark.parametrize(("extractor", "message"), [
    (NoMetadata(), r"NoMetadata has no metadata\(\) method.*Extractor protocol"),
    (ListMetadata(), r"ListMetadata.metadata\(\) returned list .*not a dict"),
    (_bad_dim("3"), r"BadDim.feature_dim must be a positive integer .*not '3'"),
    (_bad_dim(0), r"BadDim.feature_dim must be a positive integer"),
    (_bad_dim(True), r"BadDim.feature_dim must be a positive integer"),
    (_bad_dim(2.0), r"BadDim.feature_dim must be a positive integer"),
    (_bad_batch(0), r"BadBatch.batch_size must be a positive integer"),
    (_bad_batch("8"), r"BadBatch.batch_size must be a positive integer"),
    (42, r"extractor must be a registered name or an extractor object"),
])
@pytest.mark.parametrize("entry", ["compute_stats", "compute_fid", "compute_features", "FID"])
def test_an_object_that_breaks_the_protocol_is_refused_naming_the_part_in_every_entry_point(entry, extractor, message):
    data = images(4, 3)
    calls = {
        "compute_stats": lambda: fidkit.compute_stats(data, extractor=extractor, use_cache=False),
        "compute_fid": lambda: fidkit.compute_fid(data, images(4, 4), extractor=extractor, use_cache=False),
        "compute_features": lambda: fidkit.compute_features(data, extractor=extractor, use_cache=False),
        "FID": lambda: fidkit.FID(extractor=extractor),
    }
    with pytest.raises(InputError, match=message):
        calls[entry]()


@pytest.mark.parametrize("kind", [Undeclared, NoneDim])
def test_an_object_without_a_feature_dim_works_in_compute_and_in_fid_alike(fidkit_home, sides, kind):
    a, b = sides
    stats = fidkit.compute_stats(a, extractor=kind())
    rows = np.load(a).astype(np.float32).mean(axis=(1, 2)).astype(np.float64)
    assert stats.dim == 3
    np.testing.assert_allclose(stats.mu, rows.mean(axis=0), rtol=1e-12)
    _, side = compute_stats_with_report(a, extractor=kind())
    assert not side.cached  # its width is not declared: nothing to check an entry against, so nothing is cached
    report = fidkit.compute_fid(a, b, extractor=kind())
    metric = fidkit.FID(reference=a, extractor=kind())
    metric.update(np.load(b))
    assert float(metric.compute()) == pytest.approx(report.value, rel=1e-9)


# ------------------------------------------------------------------------ 6. the batch size the report gives is what ran


@pytest.mark.parametrize(("own", "asked", "ran"), [(2, 5, 2), (2, 1, 1), (4, None, 4), (None, 5, 5), (None, None, 50)])
def test_the_report_gives_the_batch_size_the_object_ran(own, asked, ran):
    extractor = Colour([0, 1])
    extractor.batch_size = own
    data = images(6, 9)
    _, side = compute_stats_with_report(data, extractor=extractor, batch_size=asked, use_cache=False, workers=0)
    assert side.batch_size == ran
    assert max(extractor.calls) == min(ran, 6) and sum(extractor.calls) == 6
