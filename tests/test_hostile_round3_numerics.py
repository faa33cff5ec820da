"""Hostile review, round 3: the numerics items (PSD on every route, thread-safe FID.update, distributed
identity checks, value_range extremes, non-finite results, a broken process group, copy/pickle of FID, the
device probe).

Everything here runs without the network except where a test says otherwise: features are fed with
``FID._update_features`` or through a fake extractor, and the two-rank tests use gloo with statistics only.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fidkit.errors import InputError, SmallSampleWarning, StatsFileError
from fidkit.frechet import factors, fid_from_arrays, fid_from_stats, frechet_distance
from fidkit.stats import Stats

from ports import free_port  # tests/ports.py


@pytest.fixture(autouse=True)
def _quiet_small_samples():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        yield


# ------------------------------------------------------------------------ 2. PSD on every route, both sides


def indefinite(dim: int, seed: int, negative: float) -> np.ndarray:
    """A symmetric matrix with a positive diagonal, large trace and one eigenvalue `negative` (< 0)."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    eigenvalues = rng.uniform(5.0, 10.0, dim)
    eigenvalues[dim // 2] = negative
    sigma = (basis * eigenvalues) @ basis.T
    sigma = (sigma + sigma.T) / 2
    assert np.all(np.diagonal(sigma) > 0)
    return sigma


def small_trace_stats(dim: int, n: int, seed: int) -> Stats:
    return Stats.from_features(np.random.default_rng(seed).standard_normal((n, dim)) * 0.1)


@pytest.mark.parametrize("dim, n_bad, negative", [(12, 500, -3.0), (40, 41, -1e-4), (33, 1000, -0.5)])
@pytest.mark.parametrize("method", ["auto", "eigh", "ttur"])
def test_an_indefinite_sigma_with_n_and_the_larger_trace_is_refused_naming_the_file(
    tmp_path, dim, n_bad, negative, method
) -> None:
    # It used to be applied as the "other" side of factor-eigh, never checked: FID printed.
    sigma = indefinite(dim, seed=dim, negative=negative)
    path = tmp_path / f"bad-{dim}.npz"
    np.savez(path, mu=np.zeros(dim), sigma=sigma, n=np.int64(n_bad))
    bad = Stats.load(path)
    assert bad.trace > 10 * small_trace_stats(dim, 3 * dim, 1).trace
    for good in (small_trace_stats(dim, 3 * dim, 1), small_trace_stats(dim, dim // 3, 2)):  # full rank, N < dim
        for pair in ((good, bad), (bad, good)):
            with pytest.raises(StatsFileError, match=rf"{path.name}.*not positive semidefinite.*eigenvalue is -") as raised:
                fid_from_stats(*pair, method=method)
            reported = float(str(raised.value).split("eigenvalue is ")[1].split(" ")[0])
            assert reported == pytest.approx(negative, rel=1e-6)


@pytest.mark.parametrize("method", ["auto", "eigh", "ttur"])
def test_an_indefinite_sigma_without_a_file_names_the_argument(method) -> None:
    dim = 9
    sigma = indefinite(dim, seed=4, negative=-2.0)
    good = small_trace_stats(dim, 50, 3)
    with pytest.raises(InputError, match="stats_b: sigma is not positive semidefinite.*eigenvalue is -2"):
        fid_from_stats(good, Stats(mu=np.zeros(dim), sigma=sigma, n=80), method=method)
    with pytest.raises(InputError, match="mu2/sigma2: sigma is not positive semidefinite"):
        frechet_distance(good.mu, good.sigma, np.zeros(dim), sigma, method=method)
    # identical covariances (the trace terms cancel) are checked too
    with pytest.raises(InputError, match="stats_a: sigma is not positive semidefinite"):
        fid_from_stats(Stats(mu=np.zeros(dim), sigma=sigma, n=80), Stats(mu=np.ones(dim), sigma=sigma, n=80))


def test_the_other_side_is_checked_once_and_definite_sides_take_no_extra_factorisation(monkeypatch) -> None:
    # The check of the side the factor is applied to comes from the Cholesky factorisation the product is
    # formed through: a definite sigma never reaches the shifted check, and results do not depend on the cache.
    calls = []
    original = factors.check_psd
    monkeypatch.setattr(factors, "check_psd", lambda *args: calls.append(args) or original(*args))
    rng = np.random.default_rng(8)
    dim = 30
    reference = Stats.from_features(rng.standard_normal((200, dim)) * np.linspace(3, 0.5, dim))
    generated = Stats(*(lambda s: (s.mu, s.sigma))(Stats.from_features(rng.standard_normal((90, dim)))), n=90)
    first = fid_from_stats(generated, reference)
    assert first.method == "factor-eigh" and calls == []
    assert factors.psd_verified(generated) and factors.psd_verified(reference)
    again = fid_from_stats(reference, generated)
    assert again.value == first.value and calls == []
    # A singular (positive semidefinite) other side: checked with a shift once, then remembered.
    features = rng.standard_normal((100, dim))
    features[:, 0] = 0.0  # a dead feature: sigma is singular, Cholesky fails, the shifted check passes
    singular = Stats(*(lambda s: (s.mu, s.sigma))(Stats.from_features(features)), n=100)
    small_features = rng.standard_normal((10, dim))
    small = Stats.from_features(small_features)
    values = [fid_from_stats(small, singular).value for _ in range(3)]
    assert len(calls) == 1 and values[0] == values[1] == values[2]
    exact = fid_from_arrays(small_features, features)  # both exact factors: the nuclear-norm identity
    assert exact.method == "factor-svd"
    assert values[0] == pytest.approx(exact.value, rel=1e-12)


@pytest.mark.parametrize("scale", [1e-290, 1.0, 1e290])
def test_the_psd_check_of_the_other_side_works_at_extreme_scales(scale) -> None:
    dim = 16
    rng = np.random.default_rng(9)
    good = Stats(mu=np.zeros(dim), sigma=np.cov(rng.standard_normal((60, dim)), rowvar=False) * scale, n=60)
    bad = Stats(mu=np.zeros(dim), sigma=indefinite(dim, 5, -1.0) * scale, n=60)
    with pytest.raises(InputError, match="stats_b: sigma is not positive semidefinite") as raised:
        fid_from_stats(good, bad)
    reported = float(str(raised.value).split("eigenvalue is ")[1].split(" ")[0])
    assert reported == pytest.approx(-1.0 * scale, rel=1e-6)
    # Round-off-sized negative eigenvalues (relative 1e-13) on the other side are accepted.
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    eigenvalues = np.concatenate([rng.uniform(1.0, 2.0, dim - 4), np.full(4, -1e-13)]) * scale
    near = (basis * eigenvalues) @ basis.T
    result = fid_from_stats(good, Stats(mu=np.zeros(dim), sigma=(near + near.T) / 2, n=60))
    assert np.isfinite(result.value)


# ------------------------------------------------------------------------ 7. value_range extremes


@pytest.mark.parametrize(
    "value_range, message",
    [
        ((-1e308, 1e308), "span hi - lo overflows"),
        ((-1.5e308, 0.5e308), "span hi - lo overflows"),
        ((0.0, 1e-320), "quantization step"),
        ((5e-324, 1e-310), "quantization step"),
        ((1e20, 1e20 + 1e5), "quantization step"),
        ((-3.0, -3.0 + 1e-14), "quantization step"),
        ((0.0, float("inf")), "finite with lo < hi"),
        ((float("-inf"), 0.0), "finite with lo < hi"),
        ((float("nan"), 1.0), "finite with lo < hi"),
        ((1.0, 1.0), "finite with lo < hi"),
        ((1.0, -1.0), "finite with lo < hi"),
        (("0", "1"), "pair"),
        ((0.0, 1.0, 2.0), "pair"),
        ((False, True), "pair"),
        (1.0, "pair"),
    ],
)
def test_value_ranges_that_cannot_quantize_are_refused_before_any_image(value_range, message) -> None:
    from fidkit._validate import as_image_batch, check_value_range

    with pytest.raises(InputError, match=message):
        check_value_range(value_range)
    with pytest.raises(InputError, match=message):
        as_image_batch(np.zeros((1, 4, 4, 3), np.float32), "x", value_range=value_range)


@pytest.mark.parametrize("value_range", [(0.0, 1e-300), (-1.7e308, 1.0e-300), (1e20, 1e21), (-1e-3, 1e-3), (0.0, 255.0)])
def test_extreme_but_representable_value_ranges_quantize_every_level(value_range) -> None:
    from fidkit._validate import as_image_batch

    lo, hi = value_range
    levels = np.arange(256, dtype=np.float64)
    images = (lo + levels / 255 * (hi - lo)).reshape(1, 16, 16, 1)
    quantized = as_image_batch(images, "x", value_range=value_range)
    np.testing.assert_array_equal(quantized[0, :, :, 0].ravel(), levels.astype(np.uint8))


# ------------------------------------------------------------------------ shared by the FID tests


class FakeExtractor:
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


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)


def reference_stats(seed: int = 0, weights: str = "f" * 64) -> Stats:
    rng = np.random.default_rng(seed)
    return Stats.from_features(rng.uniform(0, 1.1, size=(300, 12)), metadata={"weights_sha256": weights})


# ------------------------------------------------------------------------ 3. FID.update from several threads


@pytest.mark.parametrize("threads, per_thread", [(4, 250), (7, 90)])
def test_updates_from_threads_are_all_counted_once(threads, per_thread) -> None:
    import threading

    import fidkit

    batches = [images(3, seed) for seed in range(threads * per_thread)]
    serial = fidkit.FID(reference=reference_stats(), extractor=FakeExtractor())
    for batch in batches:
        serial.update(batch)
    expected = serial.compute()

    metric = fidkit.FID(reference=reference_stats(), extractor=FakeExtractor(delay=1e-4))
    direct = fidkit.FID(reference=reference_stats())  # features fed straight in: the accumulator alone
    extractor = FakeExtractor()
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

    class Exclusive(FakeExtractor):
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
    workers = [threading.Thread(target=lambda s=s: [metric.update(images(2, s * 100 + i)) for i in range(20)]) for s in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert extractor.overlaps == 0 and metric.compute().b.n == 160


# ------------------------------------------------------------------------ 22. copy.deepcopy and pickle of FID


def test_fid_deep_copies_and_pickles_after_updates_and_the_copy_computes_the_same() -> None:
    import copy
    import pickle

    import fidkit

    metric = fidkit.FID(reference=reference_stats(), extractor=FakeExtractor())
    metric.update(images(40, 1))
    first = float(metric.compute())
    metric.update(images(25, 2))
    for clone in (copy.deepcopy(metric), pickle.loads(pickle.dumps(metric))):
        assert float(clone.compute()) == float(metric.compute()) != first
        assert clone.compute().b.n == 65
        clone.update(images(10, 3))  # the copy goes its own way; the original is untouched
        assert clone.compute().b.n == 75 and metric.compute().b.n == 65
        clone.reset()
        assert metric.compute().b.n == 65
    real_side = fidkit.FID(extractor=FakeExtractor())  # no reference: both sides are accumulators
    real_side.update(images(30, 4), real=True)
    real_side.update(images(30, 5))
    assert float(pickle.loads(pickle.dumps(real_side)).compute()) == float(real_side.compute())


def test_a_built_extractor_is_not_pickled_but_built_again_on_first_use(monkeypatch) -> None:
    import pickle
    import threading

    import fidkit
    from fidkit.testing import replaced_extractor

    class Unpicklable(FakeExtractor):
        def __init__(self) -> None:
            super().__init__()
            self.session = threading.Lock()  # like an onnxruntime session: pickle refuses it

    with replaced_extractor(lambda options: Unpicklable()) as built:
        metric = fidkit.FID(reference=reference_stats(), device="cpu")
        metric.update(images(40, 1))
        assert len(built) == 1
        restored = pickle.loads(pickle.dumps(metric))
        assert len(built) == 1  # nothing built by unpickling
        assert float(restored.compute()) == float(metric.compute())
        restored.update(images(5, 2))
        assert len(built) == 2 and restored.compute().b.n == 45


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


# ------------------------------------------------------------------------ 25. the device is probed at construction


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
    fidkit.FID(reference=reference_stats(), device=device, extractor=FakeExtractor())  # a given one runs already


def test_the_device_probe_reads_the_provider_list(monkeypatch) -> None:
    import onnxruntime

    from fidkit.errors import FidkitError
    from fidkit.inception import providers, select
    from fidkit.inception.providers import check_device_usable

    monkeypatch.setattr(providers, "gpu_driver_present", lambda: True)
    monkeypatch.setattr(providers, "_installed", lambda name: name == "onnxruntime")
    monkeypatch.setattr(select, "_torch_has_cuda", lambda: False)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    for device in ("cuda", "cuda:2", "tensorrt:1"):
        with pytest.raises(FidkitError, match="CPU-only build"):
            check_device_usable(device)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    check_device_usable("cuda:1")
    with pytest.raises(FidkitError, match="CPU-only build|TensorrtExecutionProvider"):
        check_device_usable("tensorrt")
    with pytest.raises(FidkitError, match="torch cannot use CUDA"):
        check_device_usable("cuda", engine="torch")
    # onnxruntime cannot, torch can: engine "auto" runs the torch engine there (not for TensorRT).
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(select, "_torch_has_cuda", lambda: True)
    check_device_usable("cuda")
    check_device_usable("cuda", engine="torch")
    with pytest.raises(FidkitError):
        check_device_usable("cuda", engine="onnxruntime")
    with pytest.raises(FidkitError):
        check_device_usable("tensorrt")
    with pytest.raises(InputError, match="device must be"):
        check_device_usable("gpu")


# ------------------------------------------------------------------------ 4, 5, 6, 21. two gloo ranks


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
        metric = fidkit.FID(reference=reference_stats(seed=10 + rank), extractor=FakeExtractor())
        metric.update(images(20, rank))
        result["references"] = _outcome(metric.compute)

        # 5. different weights on the two ranks.
        metric = fidkit.FID(reference=reference_stats(), extractor=FakeExtractor(weights_sha256=str(rank) * 64))
        metric.update(images(20, rank))
        result["weights"] = _outcome(metric.compute)

        # 6. rank 1 holds no generated image; rank 0's weights differ from the reference's: both must refuse.
        metric = fidkit.FID(reference=reference_stats(weights="c" * 64), extractor=FakeExtractor(weights_sha256="a" * 64))
        if rank == 0:
            metric.update(images(30, 7))
        result["empty_rank_mismatch"] = _outcome(metric.compute)
        # ... and with matching weights both return the same number, with the weights recorded on both.
        metric = fidkit.FID(reference=reference_stats(weights="a" * 64), extractor=FakeExtractor(weights_sha256="a" * 64))
        if rank == 0:
            metric.update(images(30, 7))
        result["empty_rank_match"] = _outcome(metric.compute)

        # 21. rank 1 does not call compute(): rank 0 times out, and a later compute() says the group is broken.
        metric = fidkit.FID(reference=reference_stats(), extractor=FakeExtractor())
        metric.update(images(30, 8 + rank))
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


# ------------------------------------------------------------------------ 20. non-finite results, valid JSON


@pytest.mark.parametrize("dim", [3, 17])
def test_a_distance_that_overflows_is_an_error_naming_the_term(dim) -> None:
    eye = np.eye(dim)
    with pytest.raises(InputError, match=r"overflows float64: the mean term \|\|mu_a - mu_b\|\|\^2"):
        frechet_distance(np.full(dim, 1e160), eye, np.zeros(dim), eye)
    with pytest.raises(InputError, match="overflows float64: the mean term"):
        frechet_distance(np.full(dim, 1.5e308), eye, np.full(dim, -1.5e308), eye)  # mu_a - mu_b itself overflows
    huge = eye * (1.5e308 / 2)  # trace dim * 7.5e307 > 1.8e308
    for method in ("auto", "eigh", "ttur"):
        with pytest.raises(InputError, match="trace of the covariance of mu2/sigma2 .*is beyond 1.8e\\+308"):
            frechet_distance(np.zeros(dim), eye, np.zeros(dim), huge, method=method)
    # Both traces finite but their sum beyond float64: the trace term is computed in two halves.
    big = np.diag(np.r_[1.2e308, np.ones(dim - 1)])
    result = frechet_distance(np.zeros(dim), big, np.zeros(dim), big * 0.9)
    expected = 1.2e308 * (1 + 0.9 - 2 * np.sqrt(0.9)) + (dim - 1) * (1 + 0.9 - 2 * np.sqrt(0.9))
    assert np.isfinite(result.value) and result.value == pytest.approx(expected, rel=1e-12)
    # The same covariance on both sides: exactly the mean term, whatever its trace.
    assert frechet_distance(np.ones(dim), huge, np.zeros(dim), huge).value == dim
    # A sum of two finite terms beyond float64.
    with pytest.raises(InputError, match="overflows float64: the sum of the mean term"):
        frechet_distance(np.r_[1.1e154, np.zeros(dim - 1)], eye, np.zeros(dim), np.diag(np.r_[1.7e308, np.ones(dim - 1)]))


def test_a_fid_with_a_folder_reference_pickles_once_its_statistics_are_computed(tmp_path) -> None:
    import pickle

    from PIL import Image

    import fidkit
    from fidkit.errors import FidkitError

    for index in range(30):
        Image.fromarray(images(1, 100 + index)[0]).save(tmp_path / f"{index}.png")
    metric = fidkit.FID(reference=tmp_path, extractor=FakeExtractor())
    metric.update(images(40, 1))
    with pytest.raises(FidkitError, match=rf"cannot be pickled yet.*{tmp_path.name}.*call compute\(\) once first"):
        pickle.dumps(metric)
    value = float(metric.compute())
    restored = pickle.loads(pickle.dumps(metric))
    assert float(restored.compute()) == value and restored.compute().a.n == 30
    with pytest.raises(InputError, match="reference"):
        restored.update(images(2, 3), real=True)  # still a metric with a reference


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
