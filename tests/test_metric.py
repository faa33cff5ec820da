"""fidkit.FID: update / compute / reset, the reference's factor reused, and torch.distributed on two gloo ranks.

Images through the network stay few and tiny (16x16, at most 12 per test); the statistics-only tests feed
features with ``FID._update_features``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fidkit
from fidkit.errors import FidkitError, InputError
from fidkit.stats import Stats

from ports import free_port  # tests/ports.py


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

    def counting(sigma, where="sigma"):
        factored.append(sigma is reference.sigma)
        return original(sigma, where)

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

    table = fidkit.metrics.evaluate(Features(everything), Features(features(60, 16, seed=22)), "fid,kid,prdc")
    for result in results:
        assert result["table"] == {key: table[key].value for key in ("fid", "kid", "precision", "coverage")}
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
    from fidkit.metric import _device_batch

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
