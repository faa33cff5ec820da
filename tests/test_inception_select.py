"""fidkit.inception.select: the registry entry's check, identity and builder, and engine="auto"'s fallback.

No network is built: the onnxruntime extractor is replaced by a stand-in that runs on a chosen provider or
fails, the torch engine by one that records how it was made, and "does torch see a GPU" is answered here.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from types import SimpleNamespace

import pytest

from fidkit.errors import FidkitError, InputError, WeightsError
from fidkit.inception import select
from fidkit.inception.spec import EXPORTER_VERSION, EXTRACTOR_NAME, FEATURE_EXTRACTOR, RESIZE_MODE


def options(**changes):
    """What the registry passes: an object with RunOptions' fields (only those select reads)."""
    values = dict(weights=None, device="auto", engine="auto", precision="exact", batch_size=None, threads=None,
                  convention="tf", dims=2048)
    values.update(changes)
    return SimpleNamespace(**values)


# --- check_options ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("device", "engine", "canonical"), [
    ("auto", "auto", "auto"),
    ("cpu", "onnxruntime", "cpu"),
    ("cuda:0", "torch", "cuda"),
    ("cuda:2", "auto", "cuda:2"),
    ("tensorrt:0", "onnxruntime", "tensorrt"),
])
def test_check_options_returns_the_canonical_device_and_engine(device, engine, canonical):
    assert select.check_options(options(device=device, engine=engine)) == {
        "device": canonical, "engine": engine, "convention": "tf", "dims": 2048
    }


def test_fast_precision_is_accepted_on_tensorrt_with_onnxruntime_only():
    assert select.check_options(options(device="tensorrt:1", precision="fast")) == {
        "device": "tensorrt:1", "engine": "auto", "convention": "tf", "dims": 2048
    }


@pytest.mark.parametrize(("changes", "message"), [
    ({"device": "gpu"}, "device must be auto, cpu, cuda"),
    ({"device": "cpu:1"}, "device must be"),
    ({"engine": "tensorflow"}, "engine must be one of auto, onnxruntime, torch, not 'tensorflow'"),
    ({"precision": "half"}, "precision must be one of exact, fast, tf32, bf16, not 'half'"),
    ({"precision": "fast", "device": "cuda"}, r"precision='fast' runs on TensorRT \(FP16\): pass device='tensorrt'"),
    ({"precision": "fast", "device": "auto"}, "runs on TensorRT"),
    # The torch engine is named first: changing the device alone would not help.
    ({"precision": "fast", "device": "cpu", "engine": "torch"}, "the torch engine computes in float32"),
    ({"precision": "fast", "device": "tensorrt", "engine": "torch"}, "pass engine='onnxruntime'"),
])
def test_check_options_refuses(changes, message):
    with pytest.raises(InputError, match=message):
        select.check_options(options(**changes))


@pytest.mark.parametrize("device", ["tensorrt", "tensorrt:1"])
def test_the_torch_engine_on_tensorrt_is_refused_with_the_options(device):
    with pytest.raises(InputError, match="torch engine"):
        select.check_options(options(engine="torch", device=device))


def test_check_engine():
    assert [select.check_engine(engine) for engine in select.ENGINES] == ["auto", "onnxruntime", "torch"]
    with pytest.raises(InputError, match="engine must be one of"):
        select.check_engine(None)


# --- identity_for_options ----------------------------------------------------------------------------------------


@pytest.fixture
def weights_file(tmp_path):
    """Any file: the identity hashes the weights, it does not load them."""
    path = tmp_path / "weights.pth"
    path.write_bytes(b"some weights" * 100)
    return path


@pytest.mark.parametrize(("device", "engine", "precision", "expected_engine", "expected_precision"), [
    ("cpu", "auto", "exact", "onnxruntime", "exact"),
    ("cuda", "onnxruntime", "exact", "onnxruntime", "exact"),
    ("cuda:1", "torch", "exact", "torch", "exact"),
    ("tensorrt", "auto", "exact", "onnxruntime", "tensorrt-exact"),  # TensorRT may use TF32: named apart
    ("tensorrt:1", "onnxruntime", "fast", "onnxruntime", "tensorrt-fast"),
])
def test_the_identity_is_known_without_building_anything(
    weights_file, fidkit_home, device, engine, precision, expected_engine, expected_precision
):
    identity = select.identity_for_options(
        options(weights=weights_file, device=device, engine=engine, precision=precision)
    )
    assert identity == {
        "extractor": EXTRACTOR_NAME,
        "feature_extractor": FEATURE_EXTRACTOR,
        "weights_sha256": hashlib.sha256(weights_file.read_bytes()).hexdigest(),
        "convention": "tf",
        "resize_mode": RESIZE_MODE,
        "exporter_version": EXPORTER_VERSION,
        "engine": expected_engine,
        "precision": expected_precision,
    }
    assert not fidkit_home.exists()  # no graph exported, nothing downloaded


def test_the_identity_of_missing_weights_is_a_weights_error(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        select.identity_for_options(options(weights=tmp_path / "missing.pth"))


# --- build_feature_extractor: the engines and the fallback of "auto" ---------------------------------------------


class FakeOnnx:
    """Stands in for runtime.FeatureExtractor: runs on `provider`, or fails as onnxruntime would."""

    provider = "CPUExecutionProvider"
    error: Exception | None = None
    made: list[dict] = []

    def __init__(self, weights, *, device, batch_size, precision, threads, convention="tf", dims=2048):
        made = dict(weights=weights, device=device, batch_size=batch_size, precision=precision, threads=threads)
        if (convention, dims) != ("tf", 2048):
            made.update(convention=convention, dims=dims)
        type(self).made.append(made)
        if type(self).error is not None:
            raise type(self).error


class FakeTorch:
    """Stands in for torch_engine.TorchFeatureExtractor, recording how it was made."""

    made: list[dict] = []

    def __init__(self, weights, *, device, batch_size, convention="tf", dims=2048, precision="exact"):
        made = dict(weights=weights, device=device, batch_size=batch_size)
        if (convention, dims) != ("tf", 2048):
            made.update(convention=convention, dims=dims)
        if precision != "exact":
            made.update(precision=precision)
        type(self).made.append(made)
        self.device = device


@pytest.fixture
def engines(monkeypatch):
    """Both engines replaced; returns a function setting onnxruntime's outcome and torch's view of the GPU."""
    import fidkit.inception.runtime as runtime
    import fidkit.inception.torch_engine as torch_engine

    onnx = type("Onnx", (FakeOnnx,), {"made": []})
    torch = type("Torch", (FakeTorch,), {"made": []})
    monkeypatch.setattr(runtime, "FeatureExtractor", onnx)
    monkeypatch.setattr(torch_engine, "TorchFeatureExtractor", torch)

    def configure(*, provider="CPUExecutionProvider", error=None, torch_cuda=False):
        onnx.provider, onnx.error = provider, error
        monkeypatch.setattr(select, "_torch_has_cuda", lambda: torch_cuda)
        return onnx, torch

    return configure


CUDA_FAILS = FidkitError("CUDAExecutionProvider cannot run: libcudnn.so.9 does not load")


def test_auto_on_a_gpu_onnxruntime_cannot_use_falls_back_to_torch_on_that_gpu(engines, caplog):
    onnx, torch = engines(error=CUDA_FAILS, torch_cuda=True)
    with caplog.at_level(logging.WARNING, logger="fidkit.inception.select"):
        built = select.build_feature_extractor("w.pth", device="cuda:1", batch_size=8)
    assert isinstance(built, torch) and torch.made == [dict(weights="w.pth", device="cuda:1", batch_size=8)]
    assert len(onnx.made) == 1  # onnxruntime was tried first
    assert "onnxruntime cannot run on cuda:1 here (CUDAExecutionProvider cannot run" in caplog.text
    assert "engine 'torch', recorded in the statistics" in caplog.text


@pytest.mark.parametrize(("device", "engine", "torch_cuda"), [
    ("cuda", "auto", False),        # torch cannot use the GPU either: onnxruntime's error, unchanged
    ("cuda", "onnxruntime", True),  # chosen explicitly: never replaced
    ("cpu", "auto", True),          # the CPU was asked for
    ("auto", "auto", True),         # onnxruntime failed outright, not a GPU it cannot use
    ("tensorrt", "auto", True),     # TensorRT has no torch counterpart
])
def test_an_onnxruntime_failure_is_raised_where_torch_is_no_answer(engines, device, engine, torch_cuda):
    onnx, torch = engines(error=CUDA_FAILS, torch_cuda=torch_cuda)
    with pytest.raises(FidkitError) as raised:
        select.build_feature_extractor("w.pth", device=device, engine=engine)
    assert raised.value is CUDA_FAILS and torch.made == []


def test_an_unexpected_error_is_never_hidden_by_the_fallback(engines):
    onnx, torch = engines(error=RuntimeError("a bug"), torch_cuda=True)
    with pytest.raises(RuntimeError, match="a bug"):
        select.build_feature_extractor("w.pth", device="cuda")
    assert torch.made == []


def test_auto_moves_to_torch_when_onnxruntime_would_quietly_run_on_the_cpu(engines, caplog):
    onnx, torch = engines(provider="CPUExecutionProvider", torch_cuda=True)
    with caplog.at_level(logging.WARNING, logger="fidkit.inception.select"):
        built = select.build_feature_extractor("w.pth", device="auto", batch_size=4)
    assert isinstance(built, torch) and torch.made == [dict(weights="w.pth", device="cuda", batch_size=4)]
    assert "pass --engine onnxruntime to keep the CPU" in caplog.text


@pytest.mark.parametrize(("device", "provider", "torch_cuda"), [
    ("auto", "CUDAExecutionProvider", True),  # onnxruntime has the GPU
    ("auto", "CPUExecutionProvider", False),  # no GPU for anyone: the CPU
    ("cpu", "CPUExecutionProvider", True),    # the CPU was asked for
])
def test_auto_keeps_onnxruntime_when_it_runs_where_asked(engines, device, provider, torch_cuda):
    onnx, torch = engines(provider=provider, torch_cuda=torch_cuda)
    built = select.build_feature_extractor("w.pth", device=device, threads=3, precision="exact")
    assert isinstance(built, onnx) and torch.made == []
    assert onnx.made == [dict(weights="w.pth", device=device, batch_size=None, precision="exact", threads=3)]


def test_explicit_engines(engines):
    onnx, torch = engines(provider="CPUExecutionProvider", torch_cuda=True)
    assert isinstance(select.build_feature_extractor("w.pth", device="auto", engine="onnxruntime"), onnx)
    assert isinstance(select.build_feature_extractor("w.pth", device="cuda:3", engine="torch"), torch)
    assert torch.made[-1]["device"] == "cuda:3" and len(onnx.made) == 1


def test_torch_engine_with_fast_precision_is_refused_before_anything_is_built(engines):
    onnx, torch = engines(torch_cuda=True)
    with pytest.raises(InputError, match="precision='fast' is onnxruntime's TensorRT mode"):
        select.build_feature_extractor("w.pth", device="cuda", engine="torch", precision="fast")
    with pytest.raises(InputError, match="engine must be one of"):
        select.build_feature_extractor("w.pth", engine="tf")
    with pytest.raises(InputError, match="device must be"):
        select.build_feature_extractor("w.pth", device="gpu")
    assert onnx.made == [] and torch.made == []


def test_build_for_options_passes_every_setting(engines):
    onnx, _ = engines(provider="CUDAExecutionProvider")
    select.build_for_options(options(weights="w.pth", device="cuda:1", engine="onnxruntime", batch_size=7, threads=2,
                                     convention="pytorch-fid", dims=768))
    assert onnx.made == [dict(weights="w.pth", device="cuda:1", batch_size=7, precision="exact", threads=2,
                              convention="pytorch-fid", dims=768)]


# --- _torch_has_cuda ------------------------------------------------------------------------------------------------


def fake_torch(monkeypatch, is_available) -> None:
    """``import torch`` gives a module whose ``torch.cuda.is_available`` is `is_available` (real torch is slow
    to import and sees no GPU here)."""
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=SimpleNamespace(is_available=is_available)))


def test_torch_is_not_asked_without_a_gpu_driver(monkeypatch):
    monkeypatch.setattr(select, "gpu_driver_present", lambda: False)
    fake_torch(monkeypatch, lambda: pytest.fail("torch should not be asked"))
    assert select._torch_has_cuda() is False


@pytest.mark.parametrize(("answer", "expected"), [(True, True), (False, False), (RuntimeError("broken"), False)])
def test_torch_sees_a_gpu_only_when_it_says_so_without_failing(monkeypatch, answer, expected):
    monkeypatch.setattr(select, "gpu_driver_present", lambda: True)

    def is_available():
        if isinstance(answer, Exception):
            raise answer
        return answer

    fake_torch(monkeypatch, is_available)
    assert select._torch_has_cuda() is expected


def test_no_torch_installed_is_no_gpu_for_torch(monkeypatch):
    monkeypatch.setattr(select, "gpu_driver_present", lambda: True)
    monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" raises ImportError
    assert select._torch_has_cuda() is False


@pytest.mark.parametrize(("device", "engine", "precision", "message"), [
    ("cpu", "auto", "tf32", "GPU arithmetic"),
    ("auto", "onnxruntime", "tf32", "GPU arithmetic"),
    ("tensorrt", "auto", "tf32", "GPU arithmetic"),
    ("cuda", "onnxruntime", "bf16", "engine='torch'"),
    ("cpu", "auto", "bf16", "engine='torch'"),
])
def test_the_fast_precisions_say_where_they_run(device, engine, precision, message):
    with pytest.raises(InputError, match=message):
        select.check_options(options(device=device, engine=engine, precision=precision))


@pytest.mark.parametrize(("device", "engine", "precision"), [
    ("cuda", "onnxruntime", "tf32"), ("cuda:1", "torch", "tf32"), ("cpu", "torch", "bf16"), ("cuda", "torch", "bf16"),
])
def test_tf32_and_bf16_are_accepted_where_they_run_and_named_in_the_identity(
    weights_file, fidkit_home, device, engine, precision
):
    select.check_options(options(device=device, engine=engine, precision=precision))
    identity = select.identity_for_options(options(weights=weights_file, device=device, engine=engine,
                                                   precision=precision))
    assert identity["precision"] == precision


def test_the_torch_engine_is_built_with_the_asked_precision(engines):
    _, torch_made = engines(provider="CUDAExecutionProvider", torch_cuda=True)
    select.build_for_options(options(weights="w.pth", device="cuda", engine="torch", precision="bf16"))
    assert torch_made.made[-1]["precision"] == "bf16"
