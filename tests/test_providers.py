"""Device strings, provider choice and the errors when a GPU cannot run, with onnxruntime's provider list
mocked (no GPU is needed: the stand-in creates real CPU sessions and reports what a GPU machine would)."""

from __future__ import annotations

import logging
import types

import numpy as np
import pytest

from fidkit.errors import FidkitError, InputError
from fidkit.inception import FeatureExtractor, providers
from fidkit.inception.providers import (
    Device,
    parse_device,
    provider_entries,
    why_no_gpu,
)


def test_device_strings():
    assert parse_device("auto") == Device("auto") and parse_device("cpu") == Device("cpu")
    assert parse_device("cuda") == Device("cuda", 0) and parse_device("cuda:3") == Device("cuda", 3)
    assert parse_device("tensorrt:1") == Device("tensorrt", 1) and str(Device("cuda", 2)) == "cuda:2"
    for bad in ("gpu", "cuda:x", "cpu:1", "cuda:-1", "cuda:", "cuda:01", "CUDA", " cpu", "", None, 0):
        with pytest.raises(InputError, match="device"):
            parse_device(bad)


def test_cuda_entries_keep_float32_and_name_the_gpu():
    (cuda, options), cpu = provider_entries(Device("cuda", 2), precision="exact", tensorrt_cache=None)
    assert cuda == "CUDAExecutionProvider" and cpu == "CPUExecutionProvider"
    assert options["use_tf32"] == "0" and options["device_id"] == "2"
    (trt, trt_options), _, _ = provider_entries(Device("tensorrt"), precision="exact", tensorrt_cache=None)
    assert trt == "TensorrtExecutionProvider" and trt_options["trt_fp16_enable"] == "False"
    fast = provider_entries(Device("tensorrt"), precision="fast", tensorrt_cache=None)[0][1]
    assert fast["trt_fp16_enable"] == "True"


def _fake_ort(real, providers_listed, *, severities=None):
    """A stand-in onnxruntime module: lists `providers_listed`, but every session really runs on the CPU."""

    class Session(real.InferenceSession):
        def __init__(self, path, options=None, providers=None):
            super().__init__(path, options, providers=["CPUExecutionProvider"])

    fake = types.SimpleNamespace(**{name: getattr(real, name) for name in dir(real) if not name.startswith("__")})
    fake.get_available_providers = lambda: list(providers_listed)
    fake.InferenceSession = Session
    fake.set_default_logger_severity = lambda level: (severities if severities is not None else []).append(level)
    return fake


def test_cpu_only_onnxruntime_says_what_to_install(monkeypatch):
    import onnxruntime

    fake = _fake_ort(onnxruntime, ["CPUExecutionProvider"])
    monkeypatch.setattr(providers, "_installed", lambda name: name == "onnxruntime")
    assert "CPU-only build" in why_no_gpu(fake, Device("cuda")) and "fidkit[cuda]" in why_no_gpu(fake, Device("cuda"))
    monkeypatch.setattr(providers, "_installed", lambda name: True)
    assert "shadows" in why_no_gpu(fake, Device("cuda")) and "pip uninstall" in why_no_gpu(fake, Device("cuda"))


def test_missing_driver_and_libraries_are_named(monkeypatch):
    import onnxruntime

    fake = _fake_ort(onnxruntime, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(providers, "gpu_driver_present", lambda: False)
    assert "no NVIDIA driver" in why_no_gpu(fake, Device("cuda"))
    monkeypatch.setattr(providers, "gpu_driver_present", lambda: True)
    monkeypatch.setattr(providers, "any_library_loads", lambda names: not any("cudnn" in name for name in names))
    assert "cuDNN 9" in why_no_gpu(fake, Device("cuda")) and "CUDA runtime" not in why_no_gpu(fake, Device("cuda"))


def test_explicit_cuda_that_falls_back_is_an_error_and_auto_uses_the_cpu_quietly(
    random_weights_path, extractor, monkeypatch, caplog
):
    import onnxruntime

    import fidkit.inception.runtime as runtime

    severities: list[int] = []
    fake = _fake_ort(onnxruntime, ["CUDAExecutionProvider", "CPUExecutionProvider"], severities=severities)
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", fake)
    monkeypatch.setattr(runtime, "gpu_driver_present", lambda: True)
    monkeypatch.setattr(providers, "gpu_driver_present", lambda: True)
    monkeypatch.setattr(providers, "any_library_loads", lambda names: "libcudart.so.13" not in names)
    with pytest.raises(FidkitError, match=r"device cuda asked for, but .*CUDA runtime"):
        FeatureExtractor(random_weights_path, device="cuda")
    with caplog.at_level(logging.INFO, logger="fidkit"):
        auto = FeatureExtractor(random_weights_path, device="auto")
    assert auto.provider == "CPUExecutionProvider" and "fell back" in caplog.text
    assert severities and set(severities) == {4}  # onnxruntime's own log lines stay quiet without --debug


def test_fast_precision_needs_tensorrt(random_weights_path):
    with pytest.raises(InputError, match="TensorRT"):
        FeatureExtractor(random_weights_path, device="cpu", precision="fast")
    with pytest.raises(InputError, match="precision"):
        FeatureExtractor(random_weights_path, device="cpu", precision="fp16")


def test_gpu_padding_of_the_last_batch_keeps_the_features(extractor, monkeypatch):
    # On a GPU every run has batch_size images; pretend this CPU session is one and compare.
    images = np.random.default_rng(3).integers(0, 256, (7, 24, 24, 3), dtype=np.uint8)
    expected = extractor(images)
    shapes: list[tuple[int, ...]] = []
    real_run = extractor._run
    monkeypatch.setattr(extractor, "_on_gpu", True)
    monkeypatch.setattr(extractor, "batch_size", 5)
    monkeypatch.setattr(extractor, "_run", lambda chunk, out: shapes.append(chunk.shape) or real_run(chunk, out))
    padded = extractor(images)
    assert shapes == [(5, 24, 24, 3), (5, 24, 24, 3)]
    np.testing.assert_allclose(padded, expected, rtol=0, atol=1e-5 * float(np.abs(expected).max()))
