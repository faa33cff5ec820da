"""fidkit.FID: update / compute / reset, the reference's factor reused, and torch.distributed on two gloo ranks.

Images through the network stay few and tiny (16x16, at most 12 per test); the statistics-only tests feed
features with ``FID._update_features``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import fidkit
from fidkit._validate import as_image_batch, check_image_array
from fidkit.errors import FidkitError, FidkitWarning, InputError
from fidkit.stats import Stats

from ports import free_port  # tests/ports.py
from stand_ins import FullIdentityMeanColour, noise_images


def images(n: int, seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def as_float_tensor(batch: np.ndarray):
    """uint8 NHWC -> float32 NCHW in [-1, 1], the usual generator output."""
    import torch

    return torch.from_numpy(batch).permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1


def features(n: int, dim: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)) * np.linspace(2.0, 0.1, dim) + shift


@pytest.fixture
def one_extractor(extractor):
    """The random-weights extractor for every FID (through the registry); counts how often one is built. Its
    identity is the shared extractor's, whatever weights the options name."""
    from fidkit.extractors import identity_of
    from fidkit.testing import replaced_extractor

    with replaced_extractor(lambda options: extractor, identity=lambda options: dict(identity_of(extractor).fields)) as built:
        yield built


# --------------------------------------------------------------------------------------------- one process


def test_tensor_updates_give_the_fid_of_compute_fid(extractor, one_extractor, fidkit_home):
    real, generated = images(8, seed=1), images(7, seed=2)
    metric = fidkit.FID(reference=real, value_range=(-1, 1), device="cpu")
    metric.update(as_float_tensor(generated[:4]))
    metric.update(as_float_tensor(generated[4:]))
    report = metric.compute()
    expected = fidkit.compute_fid(real, generated, extractor=extractor, use_cache=False)
    assert float(report) == pytest.approx(float(expected), rel=1e-12)
    assert (report.a.n, report.b.n) == (8, 7)
    assert report.a.kind == "array" and report.b.kind == "batches"
    assert report.weights_sha256 == extractor.weights_sha256
    assert len(one_extractor) == 1  # the reference and the updates share one lazily built network
    # A second metric finds the reference in the statistics cache, as any side of compute_fid would.
    again = fidkit.FID(reference=real, device="cpu")
    again.update(generated)  # uint8 NHWC numpy, no value_range needed
    assert float(again.compute()) == pytest.approx(float(report), rel=1e-12)
    assert again.compute().a.cached


def test_without_reference_real_images_are_fed_with_real_true(extractor, one_extractor):
    real, generated = images(6, seed=3), images(6, seed=4)
    metric = fidkit.FID(device="cpu")
    with pytest.raises(InputError, match="no real side"):
        metric._update_features(np.ones((3, 2048)))
        metric.compute()
    metric.reset()
    metric.update(real, real=True)
    metric.update(generated)
    expected = fidkit.compute_fid(real, generated, extractor=extractor, use_cache=False)
    assert float(metric.compute()) == pytest.approx(float(expected), rel=1e-12)


def test_update_real_with_a_reference_is_refused():
    metric = fidkit.FID(reference=Stats.from_features(features(20, 4, seed=0)))
    with pytest.raises(InputError, match="reference is the real side"):
        metric.update(images(2, seed=0), real=True)


def test_bad_images_are_refused_before_the_network(monkeypatch):
    import torch

    from fidkit.testing import replaced_extractor

    metric = fidkit.FID(reference=Stats.from_features(features(20, 4, seed=0)), value_range=(0, 1))
    with replaced_extractor(lambda options: pytest.fail("network built")):
        with pytest.raises(InputError, match=r"value_range=\(-1, 1\)"):
            metric.update(torch.rand(2, 3, 8, 8) * 2 - 1)
        with pytest.raises(InputError, match=r"x.permute\(0, 3, 1, 2\)"):
            metric.update(torch.rand(2, 8, 8, 3))
    with pytest.raises(InputError, match="value_range"):
        fidkit.FID(value_range=(1, 0))


def test_compute_reuses_the_report_and_the_reference_factor(monkeypatch):
    import fidkit.frechet.factors as factors

    reference = Stats.from_features(features(200, 8, seed=0))
    factored = []
    original = factors.pivoted_cholesky_factor

    def counting(sigma, where="sigma", **options):
        factored.append(sigma is reference.sigma)
        return original(sigma, where, **options)

    monkeypatch.setattr(factors, "pivoted_cholesky_factor", counting)
    metric = fidkit.FID(reference=reference)
    metric._update_features(features(100, 8, seed=1, shift=0.3))
    first = metric.compute()
    assert metric.compute() is first  # nothing changed: the same report, nothing recomputed
    values = [float(first)]
    for seed in (2, 3, 4):
        metric._update_features(features(50, 8, seed=seed, shift=0.3))
        values.append(float(metric.compute()))
    assert factored.count(True) == 1  # the reference's factor: once for all four computes
    all_generated = np.concatenate([features(100, 8, 1, 0.3)] + [features(50, 8, s, 0.3) for s in (2, 3, 4)])
    expected = fidkit.fid_from_stats(reference, Stats.from_features(all_generated)).value
    assert values[-1] == pytest.approx(expected, rel=1e-12)
    assert len(set(values)) == 4


def test_reset_forgets_the_generated_side_only():
    metric = fidkit.FID()
    metric._update_features(features(30, 4, seed=0), real=True)
    metric._update_features(features(30, 4, seed=1, shift=1.0))
    before = float(metric.compute())
    metric.reset()
    with pytest.raises(InputError, match="generated side holds 0"):
        metric.compute()
    metric._update_features(features(30, 4, seed=1, shift=1.0))
    assert float(metric.compute()) == pytest.approx(before, rel=1e-14)


def test_fid_does_not_import_torch():
    code = (
        "import sys, numpy as np, fidkit\n"
        "m = fidkit.FID(reference=fidkit.Stats.from_features(np.random.rand(9, 3)))\n"
        "m._update_features(np.random.rand(9, 3)); float(m.compute())\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))


# --------------------------------------------------------------------------------------------- two gloo ranks

_WORLD = 2




def _worker(rank: int, port: int, out_dir: str, weights: str) -> None:
    """One rank: images end to end, then precomputed features, then a missing rank (last: it breaks the group)."""
    import torch
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=_WORLD)
    result: dict = {}
    try:
        # 1. Real images end to end, uneven shares: rank 0 gets 4 real and 2 generated, rank 1 the rest.
        real, generated = images(7, seed=10), images(6, seed=11)
        cut_real, cut_generated = (slice(0, 4), slice(0, 2)) if rank == 0 else (slice(4, 7), slice(2, 6))
        metric = fidkit.FID(weights=weights, device="cpu", value_range=(-1, 1))
        metric.update(real[cut_real], real=True)
        metric.update(as_float_tensor(generated[cut_generated]))
        report = metric.compute()
        result["images"] = float(report)
        result["images_n"] = [report.a.n, report.b.n]
        result["same_object"] = metric.compute() is report

        # 2. Precomputed features (N > dim, the regime of real use) against a reference loaded on each rank;
        #    rank 1 holds a single image.
        reference = Stats.from_features(features(300, 16, seed=20))
        everything = features(41, 16, seed=21, shift=0.2)
        metric = fidkit.FID(reference=reference)
        metric._update_features(everything[:40] if rank == 0 else everything[40:])
        result["features"] = float(metric.compute())
        metric._update_features(everything[:3] if rank == 1 else everything[:0])  # only rank 1 changes
        result["features_more"] = float(metric.compute())
        result["features_n"] = metric.compute().b.n

        # 2b. The metrics beyond FID: each rank keeps its share of the rows, compute() gathers them in rank order.
        from fidkit.features import Features

        metric = fidkit.FID(reference=Features(features(60, 16, seed=22)), metrics="kid,prdc")
        metric._update_features(everything[:25] if rank == 0 else everything[25:])
        table = metric.compute().metrics
        result["table"] = {key: table[key].value for key in ("fid", "kid", "precision", "coverage")}

        # 3. Rank 1 never calls compute(): rank 0 must fail, naming the cause, instead of hanging.
        if rank == 0:
            metric.reset()
            metric._update_features(everything)
            started = time.monotonic()
            try:
                metric.compute(timeout=3)
            except FidkitError as exc:
                result["missing"] = str(exc)
                result["missing_seconds"] = time.monotonic() - started
        else:
            time.sleep(8)
    finally:
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
        if "missing" not in result:
            dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_give_the_single_process_fid(extractor, random_weights_path, tmp_path):
    torch = pytest.importorskip("torch")
    import torch.multiprocessing as mp

    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    # The ONNX graph is already exported into the session's FIDKIT_HOME (the extractor fixture): the ranks load it.
    mp.spawn(_worker, args=(free_port(), str(tmp_path), str(random_weights_path)), nprocs=_WORLD, join=True)
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(_WORLD)]

    expected = float(fidkit.compute_fid(images(7, seed=10), images(6, seed=11), extractor=extractor, use_cache=False))
    for result in results:
        assert result["images"] == results[0]["images"]  # bitwise the same on every rank
        assert result["images"] == pytest.approx(expected, rel=1e-9)
        assert result["images_n"] == [7, 6]
        assert result["same_object"]

    reference = Stats.from_features(features(300, 16, seed=20))
    everything = features(41, 16, seed=21, shift=0.2)
    from fidkit.features import Features
    from fidkit.metrics import evaluate

    table = evaluate(Features(everything), Features(features(60, 16, seed=22)), "fid,kid,prdc")
    for result in results:
        assert result["table"] == results[0]["table"]  # the same table on every rank
        # KID and the neighbour metrics from the gathered rows, as one process computes them; the table's FID is the
        # report's, from the ranks' merged statistics (moments summed in another order than the rows'): to round-off.
        assert {key: result["table"][key] for key in ("kid", "precision", "coverage")} == {
            key: table[key].value for key in ("kid", "precision", "coverage")}
        assert result["table"]["fid"] == pytest.approx(table["fid"].value, rel=1e-7)
    single = fidkit.fid_from_stats(reference, Stats.from_features(everything)).value
    more = fidkit.fid_from_stats(reference, Stats.from_features(np.concatenate([everything, everything[:3]]))).value
    for result in results:
        assert result["features"] == results[0]["features"]
        assert result["features"] == pytest.approx(single, rel=1e-9)
        assert result["features_more"] == results[0]["features_more"]
        assert result["features_more"] == pytest.approx(more, rel=1e-9)
        assert result["features_n"] == 44

    message = results[0]["missing"]
    assert "every rank must call compute()" in message and "within 3 s" in message, message
    assert results[0]["missing_seconds"] < 8


def test_what_update_hands_a_gpu_extractor_gives_the_host_features(extractor, monkeypatch):
    # On a GPU, FID.update keeps a CUDA tensor on its device and hands it on in the tensor convention (NCHW);
    # here a CPU tensor takes that same branch, and both engines must read it as the host array.
    import torch

    from fidkit._validate import as_image_batch
    from fidkit.inception.torch_engine import TorchFeatureExtractor
    from fidkit.metric.batches import device_batch as _device_batch

    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    floats = torch.rand(3, 3, 17, 23, dtype=torch.float32) * 2 - 1
    on_device = _device_batch(floats, "images", (-1.0, 1.0))
    monkeypatch.undo()
    assert isinstance(on_device, torch.Tensor) and tuple(on_device.shape) == (3, 3, 17, 23)
    host = as_image_batch(floats, "images", value_range=(-1, 1))
    np.testing.assert_array_equal(extractor(on_device), extractor(host))
    torch_engine = TorchFeatureExtractor(extractor.weights_path, device="cpu")
    np.testing.assert_array_equal(torch_engine(on_device), torch_engine(host))


def test_fid_metric_computes_the_asked_metrics_from_the_same_pass(extractor) -> None:
    import fidkit
    from fidkit.features import Features

    rng = np.random.default_rng(11)
    real = rng.integers(0, 256, size=(24, 20, 20, 3), dtype=np.uint8)
    generated = rng.integers(0, 180, size=(24, 20, 20, 3), dtype=np.uint8)
    metric = fidkit.FID(reference=real, extractor=extractor, metrics="kid,is,sfid", workers=0, use_cache=False)
    metric.update(generated[:14])
    metric.update(generated[14:])
    table = metric.compute().metrics
    names = ("features", "logits", "spatial")
    expected = fidkit.metrics.evaluate(
        Features(**dict(zip(("rows", "logits", "spatial"), extractor.outputs(generated, names).values()))),
        Features(**dict(zip(("rows", "logits", "spatial"), extractor.outputs(real, names).values()))),
        "fid,kid,is,sfid",
    )
    for key in ("fid", "kid", "is_a", "sfid"):
        assert table[key].value == pytest.approx(expected[key].value, rel=1e-9)
    metric.reset()  # the generated side's kept rows go with its statistics
    with pytest.raises(fidkit.errors.InputError):
        metric.compute()


def test_fid_metric_refuses_at_once_a_statistics_reference_for_a_metric_that_needs_rows() -> None:
    import fidkit

    with pytest.raises(fidkit.errors.InputError, match="KID needs the feature rows .* side b"):
        fidkit.FID(reference=fidkit.Stats(mu=np.zeros(3), sigma=np.eye(3)), metrics="kid")


def test_a_side_that_keeps_logits_refuses_bare_features_without_changing_its_statistics() -> None:
    import fidkit
    from fidkit.features import Features

    rng = np.random.default_rng(12)
    reference = Features(rng.normal(size=(20, 6)), logits=rng.normal(size=(20, 9)))
    metric = fidkit.FID(reference=reference, metrics="is")
    with pytest.raises(fidkit.errors.InputError, match="features alone cannot feed it"):
        metric._update_features(rng.normal(size=(5, 6)))
    assert metric._generated.accumulator.n == 0 and metric._generated.rows.n == 0


def test_a_metric_pickled_before_the_metrics_table_existed_still_computes() -> None:
    # Checkpoints hold pickled metrics: one from the previous version lacks the new fields.
    import fidkit
    from fidkit.stats import Stats

    rng = np.random.default_rng(13)
    metric = fidkit.FID(reference=Stats.from_features(rng.normal(size=(30, 4))))
    metric._update_features(rng.normal(size=(30, 4)))
    expected = float(metric.compute())
    state = metric.__getstate__()
    for name in ("_asked", "_ci", "_metrics_seed", "_reference_features"):
        del state[name]
    for side in ("_real", "_generated"):
        side_state = state[side].__getstate__()
        del side_state["outputs"], side_state["rows"]
        state[side] = type(state[side]).__new__(type(state[side]))
        state[side].__setstate__(side_state)
    old = fidkit.FID.__new__(fidkit.FID)
    old.__setstate__(state)
    assert float(old.compute()) == expected
    old._update_features(rng.normal(size=(5, 4)))
    assert old.compute().b.n == 35


# --- hostile round 3, 3: FID.update from several threads ------------------------------------------------------------


class PixelFeatures:
    """A cheap, picklable stand-in for the network: features are a fixed function of the pixels.

    `delay` sleeps inside the call (the GIL is released there, as in onnxruntime's run()), so threads interleave.
    """

    thread_safe = True
    batch_size = 16
    resize_mode = "none"

    def __init__(self, weights_sha256: str = "f" * 64, dim: int = 12, delay: float = 0.0) -> None:
        self.weights_sha256 = weights_sha256
        self.dim = dim
        self.feature_dim = dim
        self.delay = delay
        self.calls = 0

    def __call__(self, images) -> np.ndarray:
        import time

        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        flat = np.asarray(images).reshape(len(images), -1).astype(np.float32) / 255
        return flat[:, : self.dim] + flat[:, self.dim : 2 * self.dim] * np.float32(0.1)

    def metadata(self) -> dict:
        return {"feature_extractor": "fake", "weights_sha256": self.weights_sha256, "resize_mode": "none"}


def tiny_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)


def reference_stats(seed: int = 0, weights: str = "f" * 64) -> Stats:
    rng = np.random.default_rng(seed)
    return Stats.from_features(rng.uniform(0, 1.1, size=(300, 12)), metadata={"weights_sha256": weights})


@pytest.mark.parametrize("threads, per_thread", [(4, 250), (7, 90)])
def test_updates_from_threads_are_all_counted_once(threads, per_thread) -> None:
    import threading

    import fidkit

    batches = [tiny_images(3, seed) for seed in range(threads * per_thread)]
    serial = fidkit.FID(reference=reference_stats(), extractor=PixelFeatures())
    for batch in batches:
        serial.update(batch)
    expected = serial.compute()

    metric = fidkit.FID(reference=reference_stats(), extractor=PixelFeatures(delay=1e-4))
    direct = fidkit.FID(reference=reference_stats())  # features fed straight in: the accumulator alone
    extractor = PixelFeatures()
    errors: list[BaseException] = []

    def feed(start: int) -> None:
        try:
            for batch in batches[start::threads]:
                metric.update(batch)
                direct._update_features(extractor(batch))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=feed, args=(start,)) for start in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    for report in (metric.compute(), direct.compute()):
        assert report.b.n == 3 * threads * per_thread == expected.b.n
        # Chan's merge in another order: the same statistics to round-off, hence the same FID.
        assert float(report) == pytest.approx(float(expected), rel=1e-10)
    stats = metric._generated.stats
    np.testing.assert_allclose(stats.mu, serial._generated.stats.mu, rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, serial._generated.stats.sigma, rtol=1e-10, atol=1e-14)
    assert metric._generated.metadata["weights_sha256"] == "f" * 64


def test_an_extractor_that_is_not_thread_safe_is_called_by_one_thread_at_a_time() -> None:
    import threading
    import time

    import fidkit

    class Exclusive(PixelFeatures):
        thread_safe = False

        def __init__(self) -> None:
            super().__init__()
            self.inside = 0
            self.overlaps = 0

        def __call__(self, batch):
            self.inside += 1
            if self.inside > 1:
                self.overlaps += 1
            time.sleep(1e-3)
            self.inside -= 1
            return super().__call__(batch)

    extractor = Exclusive()
    metric = fidkit.FID(reference=reference_stats(), extractor=extractor)
    workers = [threading.Thread(target=lambda s=s: [metric.update(tiny_images(2, s * 100 + i)) for i in range(20)]) for s in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert extractor.overlaps == 0 and metric.compute().b.n == 160


# --- hostile round 3, 22: copy.deepcopy and pickle of FID -----------------------------------------------------------


def test_fid_deep_copies_and_pickles_after_updates_and_the_copy_computes_the_same() -> None:
    import copy
    import pickle

    import fidkit

    metric = fidkit.FID(reference=reference_stats(), extractor=PixelFeatures())
    metric.update(tiny_images(40, 1))
    first = float(metric.compute())
    metric.update(tiny_images(25, 2))
    for clone in (copy.deepcopy(metric), pickle.loads(pickle.dumps(metric))):
        assert float(clone.compute()) == float(metric.compute()) != first
        assert clone.compute().b.n == 65
        clone.update(tiny_images(10, 3))  # the copy goes its own way; the original is untouched
        assert clone.compute().b.n == 75 and metric.compute().b.n == 65
        clone.reset()
        assert metric.compute().b.n == 65
    real_side = fidkit.FID(extractor=PixelFeatures())  # no reference: both sides are accumulators
    real_side.update(tiny_images(30, 4), real=True)
    real_side.update(tiny_images(30, 5))
    assert float(pickle.loads(pickle.dumps(real_side)).compute()) == float(real_side.compute())


def test_a_built_extractor_is_not_pickled_but_built_again_on_first_use(monkeypatch) -> None:
    import pickle
    import threading

    import fidkit
    from fidkit.testing import replaced_extractor

    class Unpicklable(PixelFeatures):
        def __init__(self) -> None:
            super().__init__()
            self.session = threading.Lock()  # like an onnxruntime session: pickle refuses it

    with replaced_extractor(lambda options: Unpicklable()) as built:
        metric = fidkit.FID(reference=reference_stats(), device="cpu")
        metric.update(tiny_images(40, 1))
        assert len(built) == 1
        restored = pickle.loads(pickle.dumps(metric))
        assert len(built) == 1  # nothing built by unpickling
        assert float(restored.compute()) == float(metric.compute())
        restored.update(tiny_images(5, 2))
        assert len(built) == 2 and restored.compute().b.n == 45


@pytest.mark.filterwarnings("ignore::fidkit.errors.SmallSampleWarning")
def test_fid_with_the_onnxruntime_extractor_pickles_and_deep_copies(extractor) -> None:
    # The review's case: a bare onnxruntime TypeError ("cannot pickle ... InferenceSession").
    import copy
    import pickle

    import fidkit

    batch = np.random.default_rng(3).integers(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)
    metric = fidkit.FID(reference=Stats.from_features(np.random.default_rng(4).normal(size=(10, 2048))), extractor=extractor)
    metric.update(batch)
    clone = copy.deepcopy(metric)
    assert _built(clone) is extractor  # shared, not copied
    restored = pickle.loads(pickle.dumps(metric))
    for other in (clone, restored):
        assert float(other.compute()) == float(metric.compute())
    restored.update(batch)  # rebuilt from the weights file on first use
    metric.update(batch)
    assert float(restored.compute()) == float(metric.compute())


def _built(metric):
    from fidkit.metric import _built_extractor

    return _built_extractor(metric._extractor)


def test_a_fid_with_a_folder_reference_pickles_once_its_statistics_are_computed(tmp_path) -> None:
    # (Before: it also pickles, the folder kept as given: tests/test_metric_inputs.py.)
    import pickle

    from PIL import Image

    import fidkit

    for index in range(30):
        Image.fromarray(tiny_images(1, 100 + index)[0]).save(tmp_path / f"{index}.png")
    metric = fidkit.FID(reference=tmp_path, extractor=PixelFeatures())
    metric.update(tiny_images(40, 1))
    value = float(metric.compute())
    restored = pickle.loads(pickle.dumps(metric))
    assert float(restored.compute()) == value and restored.compute().a.n == 30
    with pytest.raises(InputError, match="reference"):
        restored.update(tiny_images(2, 3), real=True)  # still a metric with a reference


def test_an_unpickled_extractor_is_rebuilt_with_its_convention_and_layer(random_weights_path) -> None:
    # Rebuilt from the weights alone it would silently run the default tf convention at 2048 dims.
    import pickle

    from fidkit.inception.torch_engine import TorchFeatureExtractor
    from fidkit.metric.state import _picklable_extractor

    extractor = TorchFeatureExtractor(random_weights_path, device="cpu", convention="pytorch-fid", dims=768)
    restored = pickle.loads(pickle.dumps(_picklable_extractor(extractor)))
    assert (restored.convention, restored.feature_dim) == ("pytorch-fid", 768)
    batch = np.random.default_rng(5).integers(0, 256, size=(2, 20, 24, 3), dtype=np.uint8)
    np.testing.assert_array_equal(restored(batch), extractor(batch))


# --- hostile round 3, 25: the device is probed at construction ------------------------------------------------------


@pytest.fixture
def no_build():
    from fidkit.testing import replaced_extractor

    def refuse(options):
        raise AssertionError("the probe must not build an extractor")

    with replaced_extractor(refuse):
        yield


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "tensorrt"])
def test_a_gpu_device_on_a_machine_without_a_driver_is_refused_at_construction(monkeypatch, no_build, device) -> None:
    import fidkit
    from fidkit.errors import FidkitError
    from fidkit.inception import providers

    monkeypatch.setattr(providers, "gpu_driver_present", lambda: False)
    with pytest.raises(FidkitError, match=rf"device {device} asked for.*no NVIDIA driver.*device='cpu'"):
        fidkit.FID(reference=reference_stats(), device=device)
    for usable in ("cpu", "auto"):
        fidkit.FID(reference=reference_stats(), device=usable)
    # A given object runs as it was built: no probe, and a device it does not state is refused as not applying
    # (round 6: options contradicting an extractor object), not as a missing driver.
    with pytest.raises(FidkitError, match=rf"device='{device}' cannot apply to the extractor object PixelFeatures"):
        fidkit.FID(reference=reference_stats(), device=device, extractor=PixelFeatures())


# --- hostile round 3, 4, 5, 6 and 21: two gloo ranks refuse what they do not share; a broken group says so ----------


def _outcome(call) -> dict:
    """What one compute() gave on this rank: the value, or the error's type and message."""
    try:
        report = call()
    except Exception as exc:  # noqa: BLE001 - compared across ranks by the test
        return {"error": type(exc).__name__, "message": str(exc)}
    return {"value": float(report), "weights": report.b.weights_sha256, "n": report.b.n}


def _rank(rank: int, ports: tuple[int, int], out_dir: str) -> None:
    """One rank of the two: each phase is one compute() on both ranks (the last one breaks the group)."""
    import json
    import os
    import time
    from pathlib import Path

    import torch
    import torch.distributed as dist

    import fidkit

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{ports[0]}", rank=rank, world_size=2)
    result: dict = {}
    try:
        # 4. different references (same shape): refused on both ranks, naming them.
        metric = fidkit.FID(reference=reference_stats(seed=10 + rank), extractor=PixelFeatures())
        metric.update(tiny_images(20, rank))
        result["references"] = _outcome(metric.compute)

        # 5. different weights on the two ranks.
        metric = fidkit.FID(reference=reference_stats(), extractor=PixelFeatures(weights_sha256=str(rank) * 64))
        metric.update(tiny_images(20, rank))
        result["weights"] = _outcome(metric.compute)

        # 6. rank 1 holds no generated image; rank 0's weights differ from the reference's: both must refuse.
        metric = fidkit.FID(reference=reference_stats(weights="c" * 64), extractor=PixelFeatures(weights_sha256="a" * 64))
        if rank == 0:
            metric.update(tiny_images(30, 7))
        result["empty_rank_mismatch"] = _outcome(metric.compute)
        # ... and with matching weights both return the same number, with the weights recorded on both.
        metric = fidkit.FID(reference=reference_stats(weights="a" * 64), extractor=PixelFeatures(weights_sha256="a" * 64))
        if rank == 0:
            metric.update(tiny_images(30, 7))
        result["empty_rank_match"] = _outcome(metric.compute)

        # 21. rank 1 does not call compute(): rank 0 times out, and a later compute() says the group is broken.
        metric = fidkit.FID(reference=reference_stats(), extractor=PixelFeatures())
        metric.update(tiny_images(30, 8 + rank))
        if rank == 0:
            result["timeout"] = _outcome(lambda: metric.compute(timeout=2))
            started = time.monotonic()
            result["after_timeout"] = _outcome(lambda: metric.compute(timeout=30))
            result["after_timeout_seconds"] = time.monotonic() - started
        else:
            time.sleep(4)
        # The advice works: a new group, and the same metric computes again on both ranks.
        dist.destroy_process_group()
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{ports[1]}", rank=rank, world_size=2)
        result["recreated"] = _outcome(lambda: metric.compute(timeout=30))
    finally:
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
        if dist.is_initialized():
            dist.destroy_process_group()
        os._exit(0)  # no teardown of a group whose peer may be gone


def test_two_ranks_refuse_what_they_do_not_share_and_a_broken_group_says_so(tmp_path) -> None:
    import json

    torch = pytest.importorskip("torch")
    import torch.multiprocessing as mp

    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    mp.spawn(_rank, args=((free_port(), free_port()), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]

    for result in results:  # every rank reaches the same decision
        assert result["references"]["error"] == "FidkitError"
        assert "different reference statistics" in result["references"]["message"]
        assert "rank 0: n = 300, sha256" in result["references"]["message"]
        assert "rank 1: n = 300, sha256" in result["references"]["message"]
        assert result["weights"]["error"] == "FidkitError"
        assert "weights_sha256 differs (rank 0: 0000000000000000...; rank 1: 1111111111111111...)" in (
            result["weights"]["message"]
        )
        assert result["empty_rank_mismatch"]["error"] == "InputError"
        assert "different Inception weights" in result["empty_rank_mismatch"]["message"]
        assert result["empty_rank_match"]["weights"] == "a" * 64 and result["empty_rank_match"]["n"] == 30
        assert result["empty_rank_match"]["value"] == results[0]["empty_rank_match"]["value"]
        assert result["recreated"]["n"] == 60
        assert result["recreated"]["value"] == results[0]["recreated"]["value"]
    timeout = results[0]["timeout"]
    assert timeout["error"] == "FidkitError" and "within 2 s" in timeout["message"]
    assert "destroy_process_group()" in timeout["message"]
    after = results[0]["after_timeout"]
    assert after["error"] == "FidkitError" and "the process group is unusable" in after["message"]
    assert "timed out" in after["message"] and "within 30 s" not in after["message"]
    assert "destroy_process_group() and init_process_group()" in after["message"]
    assert results[0]["after_timeout_seconds"] < 1.0


# --- hostile round 4, 1: one side, one extractor --------------------------------------------------------------------


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
    fake = FullIdentityMeanColour(**{key: before})
    metric = fidkit.FID(extractor=fake)
    metric.update(noise_images(5, 1), real=True)
    metric.update(noise_images(4, 2))
    fake.fields[key] = after
    calls = len(fake.calls)
    with pytest.raises(InputError) as raised:
        metric.update(noise_images(3, 3))
    message = str(raised.value)
    assert key in message and "generated side" in message
    assert repr(before[:16] + "..." if len(before) > 24 else before) in message
    assert repr(after[:16] + "..." if len(after) > 24 else after) in message
    assert "reset()" in message and "FIDKIT_WEIGHTS" in message and "weights=" in message
    assert len(fake.calls) == calls  # refused before the network ran
    assert metric._generated.accumulator.n == 4  # nothing of it was added
    # The real side refuses too, and says reset() does not help there.
    with pytest.raises(InputError, match=rf"real side.*{key}.*make a new FID"):
        metric.update(noise_images(3, 4), real=True)
    assert metric._real.accumulator.n == 5
    # reset() starts the generated side again with the extractor as it is now: accepted and recorded.
    metric.reset()
    metric.update(noise_images(3, 3))
    assert metric._generated.metadata[key] == after


@pytest.mark.filterwarnings("ignore::fidkit.errors.SmallSampleWarning")
@pytest.mark.filterwarnings("ignore:.*not the released:fidkit.errors.FidkitWarning")
def test_what_only_says_where_features_ran_may_change_between_updates() -> None:
    fake = FullIdentityMeanColour()
    metric = fidkit.FID(extractor=fake)
    metric.update(noise_images(5, 1), real=True)
    metric.update(noise_images(4, 2))
    fake.fields["provider"] = "CUDAExecutionProvider"  # not identity: the DDP check drops it too
    fake.fields["graph_sha256"] = "c" * 64
    metric.update(noise_images(3, 3))
    assert metric._generated.accumulator.n == 7
    assert float(metric.compute()) > 0


@pytest.mark.filterwarnings("ignore:.*not the released:fidkit.errors.FidkitWarning")
def test_an_unpickled_fid_whose_network_is_rebuilt_from_other_weights_refuses_them(tmp_path, monkeypatch) -> None:
    # The reviewer's case: FID() by name builds its network from $FIDKIT_WEIGHTS, and so does the unpickled copy on
    # its first update; here the registered network is a fake whose sha256 is the file's.
    from fidkit.testing import replaced_extractor

    first, second = tmp_path / "w.pth", tmp_path / "w2.pth"
    first.write_bytes(b"one set of weights")
    second.write_bytes(b"another set of weights")

    def build(options):
        path = Path(options.weights or os.environ["FIDKIT_WEIGHTS"])
        return FullIdentityMeanColour(weights_sha256=hashlib.sha256(path.read_bytes()).hexdigest())

    with replaced_extractor(build, identity=lambda options: {"weights_sha256": "?", "resize_mode": "none"}):
        monkeypatch.setenv("FIDKIT_WEIGHTS", str(first))
        metric = fidkit.FID(device="cpu")
        metric.update(noise_images(6, 1), real=True)
        metric.update(noise_images(3, 2))
        saved = pickle.dumps(metric)
        held = metric._generated.metadata["weights_sha256"]
        assert held == hashlib.sha256(first.read_bytes()).hexdigest()

        monkeypatch.setenv("FIDKIT_WEIGHTS", str(second))
        resumed = pickle.loads(saved)
        with pytest.raises(InputError, match=rf"weights_sha256: the side holds '{held[:16]}\.\.\.'") as raised:
            resumed.update(noise_images(3, 3))
        assert hashlib.sha256(second.read_bytes()).hexdigest()[:16] in str(raised.value)
        assert resumed._generated.accumulator.n == 3

        # Pointed back at the original file, the resumed metric goes on, as if never pickled.
        monkeypatch.setenv("FIDKIT_WEIGHTS", str(first))
        resumed = pickle.loads(saved)
        resumed.update(noise_images(3, 3))
        metric.update(noise_images(3, 3))
        assert float(resumed.compute()) == float(metric.compute())
        assert resumed.compute().b.weights_sha256 == held


# --- hostile round 4, 2: what a user's extractor gets and returns ---------------------------------------------------


class MeanRGB:
    """The docstring example of fidkit/extractors.py: the mean RGB colour of a (B, H, W, 3) batch."""

    feature_dim, batch_size = 3, 64

    def __init__(self) -> None:
        self.seen: list[object] = []

    def __call__(self, batch):
        self.seen.append(batch)
        return np.asarray(batch, dtype=np.float32).mean(axis=(1, 2))

    def metadata(self) -> dict:
        return {"feature_extractor": "mean-colour", "weights_sha256": "none", "resize_mode": "none"}


def float_tensor(n: int, seed: int):
    import torch

    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.filterwarnings("ignore:.*not the released:fidkit.errors.FidkitWarning")
def test_a_cuda_tensor_reaches_a_users_extractor_as_the_host_channel_last_array(monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    real, generated = float_tensor(12, 0), float_tensor(9, 1)
    host = MeanRGB()
    expected = fidkit.FID(extractor=host, value_range=(0, 1))
    expected.update(real, real=True)
    expected.update(generated)

    # What tests/test_metric.py does to take the CUDA branch of FID.update on a machine without a GPU.
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    own = MeanRGB()
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
    from fidkit.metric.batches import reads_device_tensors as _reads_device_tensors

    assert _reads_device_tensors(FeatureExtractor.__new__(FeatureExtractor))
    pytest.importorskip("torch")
    from fidkit.inception.torch_engine import TorchFeatureExtractor

    assert _reads_device_tensors(TorchFeatureExtractor.__new__(TorchFeatureExtractor))

    class Subclass(FeatureExtractor):  # may have its own __call__: it gets the protocol's host array
        pass

    assert not _reads_device_tensors(Subclass.__new__(Subclass))
    assert not _reads_device_tensors(MeanRGB())


class Wrong(MeanRGB):
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
        metric.update(noise_images(rows, 1))
    message = str(raised.value)
    assert "Wrong" in message and f"shape {shown}" in message and f"expected ({rows}, 3)" in message
    assert metric._generated.accumulator.n == 0 and not metric._generated.metadata
    # The same loop feeds compute_stats: refused there too.
    with pytest.raises(InputError, match=rf"Wrong returned features of shape \{shown[:-1]}\).*expected \({rows}, 3\)"):
        fidkit.compute_stats(noise_images(rows, 2), extractor=extractor, use_cache=False, batch_size=rows)


def test_an_extractor_without_a_declared_dim_is_checked_for_rows_only() -> None:
    from fidkit._validate import check_extracted

    class Undeclared:
        pass

    check_extracted(np.zeros((4, 11), np.float32), 4, Undeclared())
    with pytest.raises(InputError, match=r"Undeclared returned features of shape \(3, 11\).*expected \(4, feature_dim"):
        check_extracted(np.zeros((3, 11), np.float32), 4, Undeclared())


# --- hostile round 4, 3: ranks asking for different metrics ---------------------------------------------------------


def _metrics_outcome(call) -> dict:
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
        result[name] = _metrics_outcome(lambda: metric.compute(timeout=20))

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


# --- hostile round 4, 4: a single grayscale image -------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(28, 28, 1), (5, 9, 1), (300, 200, 1)])
def test_a_single_grayscale_image_is_refused_asking_for_a_batch_axis(shape) -> None:
    for dtype in (np.uint8, np.float32):
        with pytest.raises(InputError, match=rf"shape \({shape[0]}, {shape[1]}, 1\) looks like a single \(H, W, 1\) "
                                             r"image; add a batch axis \(x\[None\]\)"):
            as_image_batch(np.zeros(shape, dtype), "images", value_range=(0, 1))
    with pytest.raises(InputError, match="add a batch axis"):
        check_image_array(np.dtype(np.uint8), shape, "images.npy")
    metric = fidkit.FID(extractor=MeanRGB())
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


# --- hostile round 4, 5: [0, 1] images declared (0, 255) ------------------------------------------------------------


def unit_floats(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 8, 8, 3))


def caught(call) -> list[str]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in seen if issubclass(w.category, FidkitWarning)]


@pytest.mark.parametrize("value_range", [(0, 255), (0.0, 255.0), (0, 65535), (-128, 127)])
def test_unit_images_declared_a_wide_range_warn_once_per_metric(value_range) -> None:
    metric = fidkit.FID(extractor=MeanRGB(), value_range=value_range)
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
    other = fidkit.FID(extractor=MeanRGB(), value_range=value_range)
    tensor = torch.from_numpy(unit_floats(3, 3)).permute(0, 3, 1, 2)
    assert len(caught(lambda: other.update(tensor))) == 1


def test_no_warning_for_uint8_constant_batches_or_images_that_use_the_range() -> None:
    torch = pytest.importorskip("torch")
    metric = fidkit.FID(extractor=MeanRGB(), value_range=(0, 255))
    assert caught(lambda: metric.update(np.zeros((4, 8, 8, 3)))) == []  # all zeros: plausible in any range
    assert caught(lambda: metric.update(np.full((4, 8, 8, 3), 0.5, np.float32))) == []  # constant
    assert caught(lambda: metric.update(np.ones((4, 8, 8, 1)))) == []
    assert caught(lambda: metric.update(np.random.default_rng(0).integers(0, 2, (4, 8, 8, 3)).astype(np.uint8))) == []
    assert caught(lambda: metric.update(unit_floats(4, 0) * 255)) == []  # really (0, 255)
    assert caught(lambda: metric.update(torch.from_numpy(unit_floats(4, 0) * 200).permute(0, 3, 1, 2))) == []
    assert metric._unit_range_warned is False
    # (0, 1) is the range such images belong to: nothing to say ((-1, 1) now warns: tests/test_metric_inputs.py).
    for value_range in ((0, 1),):
        narrow = fidkit.FID(extractor=MeanRGB(), value_range=value_range)
        assert caught(lambda: narrow.update(unit_floats(4, 0))) == []


# --- hostile round 5, 2: copy.deepcopy(FID) with a generator or array reference -------------------------------------


@pytest.mark.filterwarnings("ignore:.*not the released:fidkit.errors.FidkitWarning")
def test_deepcopy_of_a_metric_with_a_generator_reference():
    batches = [noise_images(10, 1), noise_images(10, 2)]
    metric = fidkit.FID(reference=(batch for batch in batches), extractor=FullIdentityMeanColour())
    metric.update(noise_images(20, 3))
    with pytest.raises(FidkitError, match=r"cannot be copied yet.*call compute\(\) once first"):
        copy.deepcopy(metric)
    value = float(metric.compute())
    clone = copy.deepcopy(metric)
    assert float(clone.compute()) == value
    clone.update(noise_images(20, 4))
    assert float(clone.compute()) != value and float(metric.compute()) == value
    # The copy holds the reference's statistics, not the opened source.
    assert isinstance(clone._reference_input, fidkit.Stats)


@pytest.mark.filterwarnings("ignore:.*not the released:fidkit.errors.FidkitWarning")
def test_deepcopy_of_a_computed_metric_does_not_copy_an_array_reference():
    reference = noise_images(30, 5)
    metric = fidkit.FID(reference=reference, extractor=FullIdentityMeanColour())
    metric.update(noise_images(20, 6))
    metric.compute()
    clone = copy.deepcopy(metric)
    assert isinstance(clone._reference_input, fidkit.Stats)  # not the source holding the array
    assert float(clone.compute()) == float(metric.compute())


# --- hostile round 5, 3: FID(reference=file) made by another network is refused at the first update -----------------


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
        metric.update(noise_images(2, 0))
    assert "allow_" not in str(refused.value) and "mismatch" not in str(refused.value)


def test_a_reference_file_of_the_same_network_passes_the_check_without_building_it(tmp_path, random_weights_path, monkeypatch):
    monkeypatch.setenv("FIDKIT_HOME", str(tmp_path / "home"))
    path = _reference_file(tmp_path, random_weights_path)
    metric = fidkit.FID(reference=str(path), weights=str(random_weights_path), device="cpu")
    metric._check_reference()  # what update() runs once the network is built, before it runs
    assert not metric._extractor.built and not metric._reference_unchecked


@pytest.mark.filterwarnings("ignore:.*not the released:fidkit.errors.FidkitWarning")
def test_a_stand_in_registered_under_the_built_in_name_is_checked_by_its_own_width():
    # fidkit.testing.replaced_extractor in a user's tests: a 6-wide stand-in and 6-dimensional reference statistics
    # under the built-in name (whose --dims default is 2048) compute a FID, as before the check moved to update().
    from fidkit.testing import replaced_extractor

    reference = fidkit.Stats.from_features(np.random.default_rng(0).normal(size=(40, 6)))
    with replaced_extractor(lambda options: FullIdentityMeanColour()):
        metric = fidkit.FID(reference=reference, device="cpu")
        metric.update(noise_images(20, 1))
        assert metric.compute().b.n == 20


# --- hostile round 5, 4: FID(metrics=...)'s table names its sides generated and real --------------------------------


def test_the_metric_table_of_fid_names_its_sides_generated_and_real():
    rng = np.random.default_rng(7)
    real = fidkit.Features(rng.normal(size=(30, 6)).astype(np.float32), logits=rng.normal(size=(30, 10)))
    metric = fidkit.FID(reference=real, extractor=FullIdentityMeanColour(), metrics="fid,kid")
    metric._update_features(rng.normal(size=(40, 6)))
    report = metric.compute()
    assert report.a.n == 30 and report.metrics.n_a == 40  # the report's a is real, the table's a generated
    text = report.metrics.format()
    assert "images: generated 40, real 30" in text
    assert "images: a 40, b 30" not in str(report)
    # evaluate() keeps its letters by default.
    table = fidkit.metrics.evaluate(fidkit.Features(rng.normal(size=(40, 6))), real, "fid")
    assert "images: a (evaluated) 40, b (reference) 30" in table.format()
