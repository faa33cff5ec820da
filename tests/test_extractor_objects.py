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
    report = fidkit.compute_fid(a, b, extractor=kind())
    metric = fidkit.FID(reference=a, extractor=kind())
    metric.update(np.load(b))
    assert float(metric.compute()) == pytest.approx(report.value, rel=1e-9)
