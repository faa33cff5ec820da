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


class NoResize(Colour):
    """Names its weights by sha256 (and maybe more) but not the resize before the network."""

    def __init__(self, channels, extra=None) -> None:
        super().__init__(channels, sha=SHA)
        self.extra = dict(extra or {})

    def metadata(self):
        return {"weights_sha256": self.sha, **self.extra}


@pytest.mark.parametrize("extra", [{}, {"convention": "mine"}])
@pytest.mark.parametrize("entry", ["compute_stats", "compute_fid", "FID"])
def test_an_object_that_names_no_resize_mode_runs_uncached_in_every_entry_point(fidkit_home, sides, entry, extra):
    a, b = sides
    for _ in range(2):  # the second run is not served from a cache either
        extractor = NoResize([0, 2], extra)
        if entry == "compute_stats":
            stats, side = compute_stats_with_report(a, extractor=extractor)
            assert not side.cached
            np.testing.assert_allclose(stats.mu, expected_stats(a, extractor).mu, rtol=1e-12)
        elif entry == "compute_fid":
            report = fidkit.compute_fid(a, b, extractor=extractor)
            assert not report.a.cached and not report.b.cached
            assert report.value == pytest.approx(fidkit.compute_fid(a, b, extractor=Colour([0, 2]), use_cache=False).value)
        else:
            metric = fidkit.FID(reference=a, extractor=extractor)
            metric.update(np.load(b))
            assert float(metric.compute()) == pytest.approx(float(fidkit.compute_fid(a, b, extractor=Colour([0, 2]),
                                                                                     use_cache=False)))
        assert sum(extractor.calls) == (9 if entry == "compute_stats" else 20)
    assert fidkit.cache.list_cache() == []


def test_what_says_an_object_without_resize_mode_is_uncached_is_true():
    from fidkit.extractors import cacheable_object

    reason = cacheable_object(NoResize([0]))
    assert reason is not None and "resize_mode" in reason
    with pytest.raises(InputError) as raised:
        identity_of(NoResize([0]))
    message = str(raised.value)
    assert "must name 'resize_mode'" in message and "runs uncached" in message and "compared" not in message
    # A resize_mode stated as an attribute counts, as weights_sha256 does.
    stated = NoResize([0])
    stated.resize_mode = "none"
    assert cacheable_object(stated) is None and identity_of(stated).get("resize_mode") == "none"


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


# ------------------------------------------------------------------------ 2. options that contradict the object


class BuiltNet:
    """Stands for a built FeatureExtractor: the attributes and metadata fidkit's engines state."""

    def __init__(self, weights_path, *, device="cpu", convention="tf", precision="exact", dims=4, threads=2,
                 engine="onnxruntime", provider="CPUExecutionProvider") -> None:
        self.weights_path, self.weights_sha256 = weights_path, SHA
        self.device, self.convention, self.precision = device, convention, precision
        self.feature_dim, self.threads, self.batch_size, self.provider = dims, threads, 8, provider
        self.engine_name = engine

    def __call__(self, batch):
        x = np.asarray(batch, np.float32)
        return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))[:, :1]], axis=1)[:, : self.feature_dim]

    def metadata(self):
        return {"weights_sha256": SHA, "resize_mode": "none", "convention": self.convention,
                "engine": self.engine_name, "precision": self.precision, "provider": self.provider}


@pytest.fixture
def built(tmp_path):
    weights = tmp_path / "w0.pth"
    weights.write_bytes(b"weights zero")
    return BuiltNet(weights)


_CONTRADICTIONS = [
    ("convention", "clean", "'tf'"),
    ("dims", 64, "4"),
    ("device", "cuda", "'cpu'"),
    ("device", "cuda:1", "'cpu'"),
    ("engine", "torch", "'onnxruntime'"),
    ("precision", "bf16", "'exact'"),
    ("precision", "tf32", "'exact'"),
    ("threads", 3, "2"),
]


@pytest.mark.parametrize(
    ("entry", "option", "value", "stated"),
    [(entry, *case) for entry in ("compute_stats", "FID") for case in _CONTRADICTIONS]
    # inside an options object: RunOptions(precision=...) alone is refused by RunOptions itself (it needs others)
    + [("options", *case) for case in _CONTRADICTIONS if case[0] != "precision"],
)
def test_a_network_option_that_contradicts_the_object_is_refused_naming_it_and_the_fix(
    built, entry, option, value, stated
):
    data = images(4, 5)
    with pytest.raises(InputError) as raised:
        if entry == "compute_stats":
            fidkit.compute_stats(data, extractor=built, use_cache=False, **{option: value})
        elif entry == "FID":
            fidkit.FID(extractor=built, **{option: value})
        else:  # the same option inside an options object
            fidkit.compute_stats(data, extractor=built, use_cache=False, options=fidkit.RunOptions(**{option: value}))
    message = str(raised.value)
    assert message.startswith(f"{option}={value!r} cannot apply to the extractor object BuiltNet")
    assert f"it was built with {option} {stated}" in message
    assert f"drop {option}=" in message and f"BuiltNet(..., {option}={value!r})" in message


def test_weights_given_with_the_object_must_be_its_own(built, tmp_path):
    data = images(4, 5)
    other = tmp_path / "w1.pth"
    other.write_bytes(b"weights one")
    with pytest.raises(InputError, match=r"weights=.*w1.pth.* cannot apply to the extractor object BuiltNet.*w0.pth"):
        fidkit.compute_stats(data, extractor=built, weights=other, use_cache=False)
    # Its own file (by path, or a copy with the same content, which is its sha256 here) agrees.
    copy = tmp_path / "copy.pth"
    copy.write_bytes(b"weights zero")
    built.weights_sha256 = __import__("hashlib").sha256(b"weights zero").hexdigest()
    for same in (built.weights_path, str(built.weights_path), copy):
        assert fidkit.compute_stats(data, extractor=built, weights=same, use_cache=False).dim == 4


@pytest.mark.parametrize("value", [123, True, 1.5, ["w0.pth"], "", "   ", "bytes"])
@pytest.mark.parametrize("entry", ["compute_stats", "compute_fid", "FID", "options"])
def test_weights_that_are_no_path_beside_an_object_get_the_refusal_of_run_options(built, entry, value):
    import hashlib

    # The object's sha256 is its file's: bytes naming that file were accepted through the sha256 comparison.
    built.weights_sha256 = hashlib.sha256(b"weights zero").hexdigest()
    if value == "bytes":
        value = str(built.weights_path).encode()
    with pytest.raises(InputError) as expected:
        fidkit.RunOptions(weights=value)
    data = images(4, 5)
    with pytest.raises(InputError) as raised:
        if entry == "compute_stats":
            fidkit.compute_stats(data, extractor=built, weights=value, use_cache=False)
        elif entry == "compute_fid":
            fidkit.compute_fid(data, images(4, 6), extractor=built, weights=value, use_cache=False)
        elif entry == "FID":
            fidkit.FID(extractor=built, weights=value)
        else:
            fidkit.compute_stats(data, extractor=built, use_cache=False, options=fidkit.RunOptions(weights=value))
    assert str(raised.value) == str(expected.value) and str(raised.value).startswith("weights must be the path")


def test_options_that_agree_with_the_object_or_are_left_alone_pass(built):
    data = images(4, 5)
    baseline = fidkit.compute_stats(data, extractor=built, use_cache=False)
    for agreeing in ({"device": "cpu"}, {"device": "auto"}, {"engine": "auto"}, {"engine": "onnxruntime"},
                     {"convention": "tf"}, {"dims": 4}, {"dims": np.int64(4)}, {"precision": "exact"},
                     {"threads": 2}, {"device": "cpu", "convention": "tf", "dims": 4}):
        again = fidkit.compute_stats(data, extractor=built, use_cache=False, **agreeing)
        np.testing.assert_array_equal(again.mu, baseline.mu)
    fidkit.FID(extractor=built, device="cpu", convention="tf")
    # A device left to "auto" by the object is compared with where it landed.
    landed = BuiltNet(built.weights_path, device="auto", provider="CUDAExecutionProvider")
    fidkit.FID(extractor=landed, device="cuda")
    with pytest.raises(InputError, match="device='cpu' cannot apply"):
        fidkit.FID(extractor=landed, device="cpu")


def test_the_reviews_statistics_file_case_is_refused_before_anything_runs(built, tmp_path):
    clean = fidkit.Stats.from_features(np.random.default_rng(0).normal(size=(10, 4)), metadata={"convention": "clean"})
    clean.save(tmp_path / "b_clean.npz")
    np.save(tmp_path / "a.npy", images(5, 6))
    with pytest.raises(InputError, match=r"convention='clean' cannot apply.*built with convention 'tf'.*drop convention="):
        fidkit.compute_fid(tmp_path / "b_clean.npz", tmp_path / "a.npy", extractor=built, convention="clean")


def test_an_object_that_states_no_such_setting_refuses_it_too():
    with pytest.raises(InputError, match=r"device='cpu' cannot apply to the extractor object Colour.*states no device"):
        fidkit.compute_stats(images(3, 7), extractor=Colour([0]), device="cpu", use_cache=False)
    with pytest.raises(InputError, match=r"dims=2 cannot apply.*built with dims 1"):
        fidkit.FID(extractor=Colour([0]), dims=2)

    from fidkit.extractors import ExtractorEntry, register_extractor, unregister_extractor

    register_extractor(ExtractorEntry(name="colour-x", description="x", build=lambda options: Colour([0]),
                                      identity=lambda options: {"weights_sha256": "none", "resize_mode": "none"}))
    try:
        with pytest.raises(InputError, match=r"extractor='colour-x' in the options and an extractor object"):
            fidkit.compute_stats(images(3, 7), extractor=Colour([0]), options=fidkit.RunOptions(extractor="colour-x"))
    finally:
        unregister_extractor("colour-x")


def test_the_real_network_passed_as_an_object_is_checked_against_its_options(random_weights_path, extractor):
    data = images(2, 8, size=12)
    with pytest.raises(InputError, match=r"convention='clean' cannot apply to the extractor object FeatureExtractor"):
        fidkit.compute_stats(data, extractor=extractor, convention="clean", use_cache=False)
    with pytest.raises(InputError, match=r"dims=64 cannot apply.*built with dims 2048"):
        fidkit.compute_stats(data, extractor=extractor, dims=64, use_cache=False)
    stats = fidkit.compute_stats(data, extractor=extractor, weights=random_weights_path, device="cpu",
                                 convention="tf", use_cache=False, workers=0)
    assert stats.dim == 2048


# ------------------------------------------------------------------------ 6. the batch size the report gives is what ran


@pytest.mark.parametrize(("own", "asked", "ran"), [(2, 5, 2), (2, 1, 1), (4, None, 4), (None, 5, 5), (None, None, 50)])
def test_the_report_gives_the_batch_size_the_object_ran(own, asked, ran):
    extractor = Colour([0, 1])
    extractor.batch_size = own
    data = images(6, 9)
    _, side = compute_stats_with_report(data, extractor=extractor, batch_size=asked, use_cache=False, workers=0)
    assert side.batch_size == ran
    assert max(extractor.calls) == min(ran, 6) and sum(extractor.calls) == 6


# ------------------------------------------------------------------------ 7. the width known before building


class Stand:
    """A stand-in network of any width (what fidkit.testing.replaced_extractor registers for a test)."""

    batch_size = 16

    def __init__(self, width: int) -> None:
        self.feature_dim = width

    def __call__(self, batch):
        return np.asarray(batch, np.float32).reshape(len(batch), -1)[:, : self.feature_dim].copy()

    def metadata(self):
        return {"weights_sha256": "0" * 64, "resize_mode": "none"}


@pytest.mark.parametrize("width", [8, 5])
def test_a_stand_in_under_the_built_in_name_is_served_from_the_cache(fidkit_home, tmp_path, caplog, width):
    import logging

    from fidkit.testing import replaced_extractor

    path = tmp_path / "imgs.npy"
    np.save(path, images(12, 3))
    stated = {"weights_sha256": "0" * 64, "resize_mode": "none"}
    with caplog.at_level(logging.INFO, logger="fidkit"), \
            replaced_extractor(lambda options: Stand(width), identity=lambda options: stated) as built:
        first, side = compute_stats_with_report(path, progress=False)
        again, side_again = compute_stats_with_report(path, progress=False)
        assert (first.dim, side.cached, side_again.cached, len(built)) == (width, False, True, 1)
        np.testing.assert_array_equal(first.mu, again.mu)
        # A statistics file of the stand-in's width is its width before it is built, not the Inception's 2048.
        first.save(tmp_path / "first.npz")
        report = fidkit.compute_fid(tmp_path / "first.npz", images(10, 4), progress=False, use_cache=False)
        assert report.a.n == 12 and report.b.n == 10
    assert "computing them again" not in caplog.text and "2048" not in caplog.text


def test_the_width_before_building_comes_from_the_entry_in_force():
    from fidkit.extractors import ExtractorEntry, LazyExtractor, extractor_entry, register_extractor, unregister_extractor

    assert extractor_entry("inception-2015").feature_dim(fidkit.RunOptions(dims=64)) == 64
    assert LazyExtractor(fidkit.RunOptions(dims=192)).feature_dim() == 192
    stated = {"weights_sha256": "none", "resize_mode": "none"}
    for width, expected in ((lambda options: 3, 3), (lambda options: None, None), (lambda options: 0, InputError),
                            (lambda options: "3", InputError)):
        register_extractor(ExtractorEntry(name="width-x", description="x", build=lambda options: Stand(3),
                                          identity=lambda options: stated, feature_dim=width), replace=True)
        try:
            lazy = LazyExtractor(fidkit.RunOptions(extractor="width-x"))
            if expected is InputError:
                with pytest.raises(InputError, match="feature_dim\\(options\\) must return a positive integer"):
                    lazy.feature_dim()
            else:
                assert lazy.feature_dim() == expected
                lazy.get()
                assert lazy.feature_dim() == 3  # once built, what it declares
        finally:
            unregister_extractor("width-x")


# ------------------------------------------------------------------------ 8. advice that works for each option


def _refusal(call) -> str:
    with pytest.raises(InputError) as raised:
        call()
    return str(raised.value)


def test_the_advice_beside_fidkits_own_network_objects_names_a_class_that_takes_the_option(random_weights_path,
                                                                                            extractor):
    from fidkit.inception.torch_engine import TorchFeatureExtractor

    data = images(2, 8, size=12)
    torch_class = "fidkit.inception.torch_engine.TorchFeatureExtractor"
    message = _refusal(lambda: fidkit.compute_stats(data, extractor=extractor, engine="torch", use_cache=False))
    assert f"build a {torch_class}(...)" in message and "FeatureExtractor(..., engine=" not in message
    message = _refusal(lambda: fidkit.FID(extractor=extractor, precision="bf16"))
    assert f"build {torch_class}(..., precision='bf16')" in message
    threads = extractor.threads + 1
    message = _refusal(lambda: fidkit.compute_stats(data, extractor=extractor, threads=threads, use_cache=False))
    assert f"build fidkit.FeatureExtractor(..., threads={threads})" in message
    # Where no class can run it (TF32 is a GPU arithmetic; this object is on the CPU), the advice says why.
    message = _refusal(lambda: fidkit.FID(extractor=extractor, precision="tf32"))
    assert "no network object can be built with precision='tf32' here" in message and "build " not in message

    # The advice works: the class it names, built with the option, is accepted with it.
    torch_net = TorchFeatureExtractor(random_weights_path, device="cpu", batch_size=2)
    assert fidkit.compute_stats(data, extractor=torch_net, engine="torch", use_cache=False).dim == 2048
    bf16 = TorchFeatureExtractor(random_weights_path, device="cpu", batch_size=2, precision="bf16")
    assert fidkit.compute_stats(data, extractor=bf16, precision="bf16", use_cache=False).dim == 2048
    more = fidkit.FeatureExtractor(random_weights_path, device="cpu", threads=threads)
    assert fidkit.compute_stats(data, extractor=more, threads=threads, use_cache=False, workers=0).dim == 2048

    # From the torch class: onnxruntime's options name onnxruntime's class.
    message = _refusal(lambda: fidkit.FID(extractor=torch_net, engine="onnxruntime"))
    assert "build a fidkit.FeatureExtractor(...)" in message
    message = _refusal(lambda: fidkit.FID(extractor=torch_net, threads=2))
    assert "build fidkit.FeatureExtractor(..., threads=2)" in message
    message = _refusal(lambda: fidkit.FID(extractor=torch_net, precision="bf16"))
    assert f"build {torch_class}(..., precision='bf16')" in message
    # The other class takes its own defaults for what only the object's engine has (bf16 here): a bf16 torch object
    # given threads= or engine='onnxruntime' is told to build a FeatureExtractor, which can be built (exact).
    message = _refusal(lambda: fidkit.FID(extractor=bf16, threads=2))
    assert "build fidkit.FeatureExtractor(..., threads=2)" in message and "no network object" not in message
    message = _refusal(lambda: fidkit.FID(extractor=bf16, engine="onnxruntime"))
    assert "build a fidkit.FeatureExtractor(...)" in message and "no network object" not in message


def test_the_advice_beside_another_object_follows_its_constructor():
    # Colour(channels, sha) takes no device: building it "with device=" would fail.
    message = _refusal(lambda: fidkit.FID(extractor=Colour([0]), device="cpu"))
    assert "Colour() takes no device parameter" in message and "Colour(..., device=" not in message

    class Keywords(Colour):
        def __init__(self, channels, **settings) -> None:
            super().__init__(channels)

    message = _refusal(lambda: fidkit.FID(extractor=Keywords([0]), device="cpu"))
    assert "build the object with it (e.g. Keywords(..., device='cpu'))" in message


def test_cluster_ray_with_a_torch_object_advises_another_object_not_options(tmp_path):
    from fidkit.cluster.ray import ray_extract
    from fidkit.extractors import ExtractorIdentity
    from fidkit.sources import open_source

    np.save(tmp_path / "a.npy", images(4, 1))
    source = open_source(tmp_path / "a.npy")

    class TorchLike:  # what the driver checks first: the identity an object states
        weights_path, weights_sha256, device = tmp_path / "w.pth", SHA, "cpu"

    stated = ExtractorIdentity.of("inception-2015", {"engine": "torch", "precision": "bf16"})
    with pytest.raises(InputError) as raised:
        ray_extract(source, fidkit.RunOptions(cluster="ray"), lambda: stated, given=TorchLike())
    message = str(raised.value)
    assert "build a fidkit.FeatureExtractor" in message and "precision='exact'" in message
    assert "drop cluster='ray'" in message and "pass engine=" not in message
    (tmp_path / "w.pth").write_bytes(b"weights")
    with pytest.raises(InputError, match="pass engine='onnxruntime'"):  # without an object, the options are the fix
        ray_extract(source, fidkit.RunOptions(cluster="ray", weights=tmp_path / "w.pth"), lambda: stated)



@pytest.mark.parametrize(("call_s", "shards_s"), [(12.5, 2.5), (3.0, 2.75)])
def test_ray_start_up_is_reported_as_setup_not_as_cache_time(tmp_path, monkeypatch, call_s, shards_s):
    """What a Ray run spends outside the shards' wall time (identity, connecting or starting a local instance and
    stopping it, the graph's export, merging) is the side's setup part ``ray_outside_shards``, not a "connect"
    time, so the leftover "cache look-up and store" of a --no-cache run is not Ray's start."""
    import types

    import fidkit.cluster.ray as ray_module
    from fidkit import pipeline
    from fidkit.cluster.ray import RayRun
    from fidkit.sources import open_source
    from fidkit.stats import StatsAccumulator

    clock = iter([100.0, 100.0 + call_s])
    monkeypatch.setattr(pipeline, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    accumulator = StatsAccumulator(dim=2)
    accumulator.update(np.arange(8.0).reshape(4, 2))
    run = RayRun(accumulator, None, {}, (), False, 1, 1, wall_seconds=shards_s, actor_seconds=2.0, batch_size=4)
    monkeypatch.setattr(ray_module, "ray_extract", lambda *args, **kwargs: run)
    np.save(tmp_path / "a.npy", images(4, 1))
    lazy = types.SimpleNamespace(identity=None, given=None)
    extracted = pipeline._extract_on_cluster(open_source(tmp_path / "a.npy"), lazy, fidkit.RunOptions(), ())
    assert extracted.times.network_seconds == shards_s
    assert extracted.setup_seconds == pytest.approx(call_s - shards_s)
    assert extracted.setup_parts == (("ray_outside_shards", pytest.approx(call_s - shards_s)),)


# ------------------------------------------------------------------------ 9. an entry's own option values


def _register_mc():
    from fidkit.extractors import ExtractorEntry, register_extractor

    conventions = ("mine", "theirs")

    def check(options):
        if options.convention not in conventions:
            raise InputError(f"mc reads convention {' or '.join(conventions)}, not {options.convention!r}")
        return {}

    class MC(Colour):
        def __init__(self, options) -> None:
            super().__init__(range(options.dims))
            self.convention = options.convention

        def metadata(self):
            return {**super().metadata(), "convention": self.convention}

    register_extractor(ExtractorEntry(
        name="mc", description="channels under a convention of its own", build=MC,
        identity=lambda options: {"weights_sha256": "none", "resize_mode": "none", "convention": options.convention},
        check=check, options=("convention", "dims"), feature_dim=lambda options: options.dims,
    ), replace=True)


def test_an_entry_that_reads_an_option_validates_its_values_itself():
    from fidkit.extractors import unregister_extractor

    _register_mc()
    try:
        assert fidkit.RunOptions(extractor="mc", convention="mine", dims=2).convention == "mine"
        stats = fidkit.compute_stats(images(5, 1), extractor="mc", convention="theirs", dims=3, use_cache=False)
        assert stats.dim == 3 and stats.metadata["convention"] == "theirs"
        with pytest.raises(InputError, match="mc reads convention mine or theirs, not 'clean'"):
            fidkit.RunOptions(extractor="mc", convention="clean")  # an Inception name is not one of mc's
        # The options mc does not read: refused as before, an unknown value named as unknown.
        with pytest.raises(InputError, match="engine='torch' does not apply to the extractor 'mc'"):
            fidkit.RunOptions(extractor="mc", engine="torch")
        with pytest.raises(InputError, match="engine must be one of"):
            fidkit.RunOptions(extractor="mc", engine="bogus")
        with pytest.raises(InputError, match="precision must be one of"):
            fidkit.RunOptions(extractor="mc", precision="half")
    finally:
        unregister_extractor("mc")
    # The Inception, and a stand-in in its place, keep its names.
    from fidkit.testing import replaced_extractor

    with pytest.raises(InputError, match="unknown preprocessing convention 'mine'"):
        fidkit.RunOptions(convention="mine")
    with replaced_extractor(lambda options: Colour([0]), identity=lambda options: {}):
        with pytest.raises(InputError, match="unknown preprocessing convention 'mine'"):
            fidkit.RunOptions(convention="mine")
