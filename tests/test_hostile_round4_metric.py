"""Hostile review, round 4: the metric items (one side fed by two extractors, what a user's extractor is handed and
must return, ranks that ask for different metrics, a single grayscale image, [0, 1] images declared (0, 255)).

No network is built here: the extractors are fakes with controllable metadata (built by name through the registry
where the item is about a metric that builds its own), and the two-rank test feeds features with
``FID._update_features`` over gloo.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

import fidkit
from fidkit._validate import as_image_batch, check_image_array
from fidkit.errors import FidkitWarning, InputError, SmallSampleWarning

from ports import free_port  # tests/ports.py


@pytest.fixture(autouse=True)
def _quiet_small_samples():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        warnings.filterwarnings("ignore", message=".*not the released", category=FidkitWarning)  # fake weights
        yield


def images(n: int, seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


class Fake:
    """Mean and spread of each channel (dimension 6); its identity fields are attributes a test can change."""

    feature_dim, batch_size, thread_safe = 6, 16, True

    def __init__(self, weights_sha256: str = "a" * 64, **fields: str) -> None:
        self.fields = {"feature_extractor": "fake", "weights_sha256": weights_sha256, "resize_mode": "none",
                       "convention": "tf", "exporter_version": "1", "engine": "numpy", "precision": "exact",
                       "provider": "cpu", **fields}
        self.calls: list[object] = []

    def __call__(self, batch):
        self.calls.append(batch)
        x = np.asarray(batch, dtype=np.float32)
        return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=1).astype(np.float32)

    def metadata(self) -> dict:
        return dict(self.fields)


class MeanColour:
    """The docstring example of fidkit/extractors.py: the mean RGB colour of a (B, H, W, 3) batch."""

    feature_dim, batch_size = 3, 64

    def __init__(self) -> None:
        self.seen: list[object] = []

    def __call__(self, batch):
        self.seen.append(batch)
        return np.asarray(batch, dtype=np.float32).mean(axis=(1, 2))

    def metadata(self) -> dict:
        return {"feature_extractor": "mean-colour", "weights_sha256": "none", "resize_mode": "none"}


# ------------------------------------------------------------------------ 1. one side, one extractor


@pytest.mark.parametrize(
    "key, before, after",
    [
        ("weights_sha256", "a" * 64, "b" * 64),
        ("weights_sha256", "0123456789abcdef" * 4, "fedcba9876543210" * 4),
        ("convention", "tf", "clean"),
        ("precision", "exact", "fast"),
        ("engine", "onnxruntime", "torch"),
        ("exporter_version", "3", "4"),
        ("feature_extractor", "fake", "other"),
    ],
)
def test_an_update_from_another_extractor_is_refused_naming_both_and_the_fix(key, before, after) -> None:
    fake = Fake(**{key: before})
    metric = fidkit.FID(extractor=fake)
    metric.update(images(5, 1), real=True)
    metric.update(images(4, 2))
    fake.fields[key] = after
    calls = len(fake.calls)
    with pytest.raises(InputError) as raised:
        metric.update(images(3, 3))
    message = str(raised.value)
    assert key in message and "generated side" in message
    assert repr(before[:16] + "..." if len(before) > 24 else before) in message
    assert repr(after[:16] + "..." if len(after) > 24 else after) in message
    assert "reset()" in message and "FIDKIT_WEIGHTS" in message and "weights=" in message
    assert len(fake.calls) == calls  # refused before the network ran
    assert metric._generated.accumulator.n == 4  # nothing of it was added
    # The real side refuses too, and says reset() does not help there.
    with pytest.raises(InputError, match=rf"real side.*{key}.*make a new FID"):
        metric.update(images(3, 4), real=True)
    assert metric._real.accumulator.n == 5
    # reset() starts the generated side again with the extractor as it is now: accepted and recorded.
    metric.reset()
    metric.update(images(3, 3))
    assert metric._generated.metadata[key] == after


def test_what_only_says_where_features_ran_may_change_between_updates() -> None:
    fake = Fake()
    metric = fidkit.FID(extractor=fake)
    metric.update(images(5, 1), real=True)
    metric.update(images(4, 2))
    fake.fields["provider"] = "CUDAExecutionProvider"  # not identity: the DDP check drops it too
    fake.fields["graph_sha256"] = "c" * 64
    metric.update(images(3, 3))
    assert metric._generated.accumulator.n == 7
    assert float(metric.compute()) > 0


def test_an_unpickled_fid_whose_network_is_rebuilt_from_other_weights_refuses_them(tmp_path, monkeypatch) -> None:
    # The reviewer's case: FID() by name builds its network from $FIDKIT_WEIGHTS, and so does the unpickled copy on
    # its first update; here the registered network is a fake whose sha256 is the file's.
    from fidkit.testing import replaced_extractor

    first, second = tmp_path / "w.pth", tmp_path / "w2.pth"
    first.write_bytes(b"one set of weights")
    second.write_bytes(b"another set of weights")

    def build(options):
        path = Path(options.weights or os.environ["FIDKIT_WEIGHTS"])
        return Fake(weights_sha256=hashlib.sha256(path.read_bytes()).hexdigest())

    with replaced_extractor(build, identity=lambda options: {"weights_sha256": "?", "resize_mode": "none"}):
        monkeypatch.setenv("FIDKIT_WEIGHTS", str(first))
        metric = fidkit.FID(device="cpu")
        metric.update(images(6, 1), real=True)
        metric.update(images(3, 2))
        saved = pickle.dumps(metric)
        held = metric._generated.metadata["weights_sha256"]
        assert held == hashlib.sha256(first.read_bytes()).hexdigest()

        monkeypatch.setenv("FIDKIT_WEIGHTS", str(second))
        resumed = pickle.loads(saved)
        with pytest.raises(InputError, match=rf"weights_sha256: the side holds '{held[:16]}\.\.\.'") as raised:
            resumed.update(images(3, 3))
        assert hashlib.sha256(second.read_bytes()).hexdigest()[:16] in str(raised.value)
        assert resumed._generated.accumulator.n == 3

        # Pointed back at the original file, the resumed metric goes on, as if never pickled.
        monkeypatch.setenv("FIDKIT_WEIGHTS", str(first))
        resumed = pickle.loads(saved)
        resumed.update(images(3, 3))
        metric.update(images(3, 3))
        assert float(resumed.compute()) == float(metric.compute())
        assert resumed.compute().b.weights_sha256 == held


# ------------------------------------------------------------------------ 2. what a user's extractor gets and returns


def float_tensor(n: int, seed: int):
    import torch

    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_a_cuda_tensor_reaches_a_users_extractor_as_the_host_channel_last_array(monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    real, generated = float_tensor(12, 0), float_tensor(9, 1)
    host = MeanColour()
    expected = fidkit.FID(extractor=host, value_range=(0, 1))
    expected.update(real, real=True)
    expected.update(generated)

    # What tests/test_metric.py does to take the CUDA branch of FID.update on a machine without a GPU.
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    own = MeanColour()
    metric = fidkit.FID(extractor=own, value_range=(0, 1))
    metric.update(real, real=True)
    metric.update(generated)
    monkeypatch.undo()

    assert [type(batch) for batch in own.seen] == [np.ndarray, np.ndarray]
    assert [batch.shape for batch in own.seen] == [(12, 8, 8, 3), (9, 8, 8, 3)]
    assert all(batch.dtype == np.uint8 and batch.flags.c_contiguous for batch in own.seen)
    for seen, wanted in zip(own.seen, host.seen):
        np.testing.assert_array_equal(seen, wanted)
    assert metric._generated.accumulator.dim == 3
    assert float(metric.compute()) == float(expected.compute())


def test_only_fidkits_own_engines_are_handed_device_tensors() -> None:
    from fidkit.inception.runtime import FeatureExtractor
    from fidkit.metric import _reads_device_tensors

    assert _reads_device_tensors(FeatureExtractor.__new__(FeatureExtractor))
    pytest.importorskip("torch")
    from fidkit.inception.torch_engine import TorchFeatureExtractor

    assert _reads_device_tensors(TorchFeatureExtractor.__new__(TorchFeatureExtractor))

    class Subclass(FeatureExtractor):  # may have its own __call__: it gets the protocol's host array
        pass

    assert not _reads_device_tensors(Subclass.__new__(Subclass))
    assert not _reads_device_tensors(MeanColour())


class Wrong(MeanColour):
    """Returns `shape(batch_rows)` features whatever it is given."""

    def __init__(self, shape) -> None:
        super().__init__()
        self.shape = shape

    def __call__(self, batch):
        return np.zeros(self.shape(len(batch)), np.float32)


@pytest.mark.parametrize(
    "shape, rows, shown",
    [
        (lambda n: (n, 4), 5, "(5, 4)"),  # more columns than feature_dim
        (lambda n: (n, 2), 7, "(7, 2)"),
        (lambda n: (n - 1, 3), 5, "(4, 3)"),  # a row missing
        (lambda n: (1, 3), 6, "(1, 3)"),  # one row for the batch
        (lambda n: (n, 8, 3), 4, "(4, 8, 3)"),  # the NCHW batch averaged over the wrong axes
        (lambda n: (n * 3,), 2, "(6,)"),
    ],
)
def test_features_that_are_not_one_row_per_image_of_feature_dim_are_refused(shape, rows, shown) -> None:
    extractor = Wrong(shape)
    metric = fidkit.FID(extractor=extractor)
    with pytest.raises(InputError) as raised:
        metric.update(images(rows, 1))
    message = str(raised.value)
    assert "Wrong" in message and f"shape {shown}" in message and f"expected ({rows}, 3)" in message
    assert metric._generated.accumulator.n == 0 and not metric._generated.metadata
    # The same loop feeds compute_stats: refused there too.
    with pytest.raises(InputError, match=rf"Wrong returned features of shape \{shown[:-1]}\).*expected \({rows}, 3\)"):
        fidkit.compute_stats(images(rows, 2), extractor=extractor, use_cache=False, batch_size=rows)


def test_an_extractor_without_a_declared_dim_is_checked_for_rows_only() -> None:
    from fidkit._validate import check_extracted

    class Undeclared:
        pass

    check_extracted(np.zeros((4, 11), np.float32), 4, Undeclared())
    with pytest.raises(InputError, match=r"Undeclared returned features of shape \(3, 11\).*expected \(4, feature_dim"):
        check_extracted(np.zeros((3, 11), np.float32), 4, Undeclared())


# ------------------------------------------------------------------------ 3. ranks asking for different metrics




def _outcome(call) -> dict:
    try:
        report = call()
    except Exception as exc:  # noqa: BLE001 - compared across ranks by the test
        return {"error": type(exc).__name__, "message": str(exc)}
    return {"value": float(report), "n": report.b.n}


def _metrics_rank(rank: int, port: int, out_dir: str) -> None:
    """One of two gloo ranks: each phase builds a metric per rank and computes once on both ranks."""
    import json
    import os
    from datetime import timedelta
    from pathlib import Path

    import torch
    import torch.distributed as dist

    from fidkit.metrics import IntervalSpec

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=30))
    rng = np.random.default_rng(rank)
    result: dict = {}

    def phase(name: str, **kwargs) -> None:
        metric = fidkit.FID(**kwargs)
        metric._update_features(rng.normal(size=(12, 4)), real=True)
        metric._update_features(rng.normal(size=(10, 4)) + 0.5)
        result[name] = _outcome(lambda: metric.compute(timeout=20))

    try:
        phase("kid_or_fid", metrics=("kid",) if rank == 0 else ("fid",))
        phase("kid_or_prdc", metrics="kid" if rank == 0 else "prdc")
        phase("ci_or_not", ci=IntervalSpec(n_resamples=5) if rank == 1 else None)
        phase("seeds", metrics="kid", metrics_seed=rank)
        phase("same", metrics="kid")  # the group still works, and the same table comes back on both ranks
    finally:
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
        if dist.is_initialized():
            dist.destroy_process_group()
        os._exit(0)


def test_ranks_that_ask_for_different_metrics_all_refuse_naming_them(tmp_path) -> None:
    import json

    torch = pytest.importorskip("torch")
    import torch.multiprocessing as mp

    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    mp.spawn(_metrics_rank, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    for result in results:  # every rank reaches the same decision, before any mismatched collective
        for phase, shown in (
            ("kid_or_fid", ("rank 0: fid, kid, metrics_seed=0", "rank 1: fid (statistics only)")),
            ("kid_or_prdc", ("rank 0: fid, kid,", "rank 1: fid, prdc,")),
            ("ci_or_not", ("rank 0: fid (statistics only)", "rank 1: fid with ci=IntervalSpec(")),
            ("seeds", ("metrics_seed=0", "metrics_seed=1")),
        ):
            assert result[phase]["error"] == "FidkitError", (phase, result[phase])
            assert "the ranks ask for different metrics" in result[phase]["message"]
            assert "give every rank the same metrics=, ci= and metrics_seed=" in result[phase]["message"]
            for text in shown:
                assert text in result[phase]["message"], (phase, text)
        assert "keeps features" in result["kid_or_fid"]["message"]
        assert result["same"]["n"] == 20
        assert result["same"]["value"] == results[0]["same"]["value"]


# ------------------------------------------------------------------------ 4. a single grayscale image


@pytest.mark.parametrize("shape", [(28, 28, 1), (5, 9, 1), (300, 200, 1)])
def test_a_single_grayscale_image_is_refused_asking_for_a_batch_axis(shape) -> None:
    for dtype in (np.uint8, np.float32):
        with pytest.raises(InputError, match=rf"shape \({shape[0]}, {shape[1]}, 1\) looks like a single \(H, W, 1\) "
                                             r"image; add a batch axis \(x\[None\]\)"):
            as_image_batch(np.zeros(shape, dtype), "images", value_range=(0, 1))
    with pytest.raises(InputError, match="add a batch axis"):
        check_image_array(np.dtype(np.uint8), shape, "images.npy")
    metric = fidkit.FID(extractor=MeanColour())
    with pytest.raises(InputError, match="single"):
        metric.update(np.zeros(shape, np.uint8))
    # With the batch axis, and as (N, H, W) grayscale, the same image is one image.
    single = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    for batch in (single[None], single[None, ..., 0]):
        converted = as_image_batch(batch, "images")
        assert converted.shape == (1, shape[0], shape[1], 3)
        np.testing.assert_array_equal(converted[..., 2], single[..., 0][None])


def test_grayscale_and_rgb_batches_are_still_taken() -> None:
    for shape, expected in (((4, 8, 6), (4, 8, 6, 3)), ((4, 8, 6, 1), (4, 8, 6, 3)), ((2, 5, 7, 3), (2, 5, 7, 3)),
                            ((3, 28, 28), (3, 28, 28, 3))):
        assert as_image_batch(np.zeros(shape, np.uint8), "images").shape == expected
    with pytest.raises(InputError, match=r"single \(H, W, 3\) image"):  # unchanged
        as_image_batch(np.zeros((8, 6, 3), np.uint8), "images")


# ------------------------------------------------------------------------ 5. [0, 1] images declared (0, 255)


def unit_floats(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 8, 8, 3))


def caught(call) -> list[str]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in seen if issubclass(w.category, FidkitWarning)]


@pytest.mark.parametrize("value_range", [(0, 255), (0.0, 255.0), (0, 65535), (-128, 127)])
def test_unit_images_declared_a_wide_range_warn_once_per_metric(value_range) -> None:
    metric = fidkit.FID(extractor=MeanColour(), value_range=value_range)
    first = caught(lambda: metric.update(unit_floats(4, 0), real=True))
    assert len(first) == 1
    assert "look like [0, 1] images" in first[0] and "pass value_range=(0, 1)" in first[0]
    assert f"value_range=({value_range[0]:g}, {value_range[1]:g})" in first[0]
    assert "of the 256 levels" in first[0]
    # Once per metric: neither the next batches nor the other side warn again.
    assert caught(lambda: metric.update(unit_floats(4, 1), real=True)) == []
    assert caught(lambda: metric.update(unit_floats(5, 2).astype(np.float32))) == []
    # A new metric warns again, for a torch tensor too.
    torch = pytest.importorskip("torch")
    other = fidkit.FID(extractor=MeanColour(), value_range=value_range)
    tensor = torch.from_numpy(unit_floats(3, 3)).permute(0, 3, 1, 2)
    assert len(caught(lambda: other.update(tensor))) == 1


def test_no_warning_for_uint8_constant_batches_or_images_that_use_the_range() -> None:
    torch = pytest.importorskip("torch")
    metric = fidkit.FID(extractor=MeanColour(), value_range=(0, 255))
    assert caught(lambda: metric.update(np.zeros((4, 8, 8, 3)))) == []  # all zeros: plausible in any range
    assert caught(lambda: metric.update(np.full((4, 8, 8, 3), 0.5, np.float32))) == []  # constant
    assert caught(lambda: metric.update(np.ones((4, 8, 8, 1)))) == []
    assert caught(lambda: metric.update(np.random.default_rng(0).integers(0, 2, (4, 8, 8, 3)).astype(np.uint8))) == []
    assert caught(lambda: metric.update(unit_floats(4, 0) * 255)) == []  # really (0, 255)
    assert caught(lambda: metric.update(torch.from_numpy(unit_floats(4, 0) * 200).permute(0, 3, 1, 2))) == []
    assert metric._unit_range_warned is False
    # (0, 1) is the range such images belong to: nothing to say ((-1, 1) now warns: tests/test_metric_inputs.py).
    for value_range in ((0, 1),):
        narrow = fidkit.FID(extractor=MeanColour(), value_range=value_range)
        assert caught(lambda: narrow.update(unit_floats(4, 0))) == []
