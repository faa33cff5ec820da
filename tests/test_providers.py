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
        def __init__(self, path, options=None, providers=None, **kwargs):
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
    real_feeds = extractor._feeds
    monkeypatch.setattr(extractor, "on_gpu", True)
    monkeypatch.setattr(extractor, "batch_size", 5)
    monkeypatch.setattr(extractor, "_feeds", lambda chunk: shapes.append(chunk.shape) or real_feeds(chunk))
    padded = extractor(images)
    assert shapes == [(5, 24, 24, 3), (5, 24, 24, 3)]
    np.testing.assert_allclose(padded, expected, rtol=0, atol=1e-5 * float(np.abs(expected).max()))


def _fake_ort_with_tensorrt_provider(real, folder, needed: bytes):
    """A stand-in onnxruntime-gpu whose TensorRT provider library links against `needed` and that behaves as
    1.31 does when TensorRT cannot start: with its fallback on (the default) it prints the "EP Error" banner on
    stdout and runs on the CUDA provider; with ``enable_fallback=0`` it raises."""

    class Session(real.InferenceSession):
        def __init__(self, path, options=None, providers=None, **kwargs):
            names = [entry[0] if isinstance(entry, tuple) else entry for entry in providers or []]
            super().__init__(path, options, providers=["CPUExecutionProvider"])
            self._reported = names
            if "TensorrtExecutionProvider" in names:
                message = "RegisterTensorRTPluginsAsCustomOps Please install TensorRT libraries"
                if int(kwargs.get("enable_fallback", 1)) != 1:
                    raise RuntimeError(message)
                print("*************** EP Error ***************")
                print(f"EP Error {message} when using {names}")
                print("Falling back to ['CUDAExecutionProvider', 'CPUExecutionProvider'] and retrying.")
                self._reported = ["CUDAExecutionProvider", "CPUExecutionProvider"]

        def get_providers(self):
            return list(self._reported)

    fake = _fake_ort(real, ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    fake.InferenceSession = Session
    fake.preload_dlls = lambda: None
    (folder / "capi").mkdir(parents=True)
    (folder / "capi" / "libonnxruntime_providers_tensorrt.so").write_bytes(b"\x7fELF\0" + needed + b"\0libc.so.6\0")
    fake.__file__ = str(folder / "__init__.py")
    return fake


def test_tensorrt_not_installed_says_so_and_what_to_install(tmp_path, monkeypatch):
    import onnxruntime

    fake = _fake_ort_with_tensorrt_provider(
        onnxruntime, tmp_path / "ort", b"libnvinfer.so.11\0libnvonnxparser.so.11\0libcudart.so.12\0libcublas.so.12"
    )
    tried: list[list[str]] = []
    monkeypatch.setattr(providers, "_preload_pip_tensorrt", lambda names: tried.append(names))
    monkeypatch.setattr(providers, "gpu_driver_present", lambda: True)
    monkeypatch.setattr(providers, "any_library_loads", lambda names: not any("nvinfer" in name for name in names))
    for reason in (
        providers.why_device_unusable(fake, Device("tensorrt", 1)),
        why_no_gpu(fake, Device("tensorrt"), "Please install TensorRT libraries"),
    ):
        assert reason is not None and reason.startswith("TensorRT is not installed (libnvinfer.so.11 cannot")
        assert "pip install 'tensorrt-cu12>=11,<12'" in reason and "--device cuda" in reason
        assert "GPU index" not in reason and "driver" not in reason
    assert tried and tried[0] == ["libnvinfer.so.11", "libnvonnxparser.so.11"]
    with pytest.raises(FidkitError, match="device tensorrt asked for, but TensorRT is not installed"):
        monkeypatch.setitem(__import__("sys").modules, "onnxruntime", fake)
        providers.check_device_usable("tensorrt")
    # The CUDA provider needs no TensorRT; and with TensorRT's libraries present nothing is known in advance.
    assert providers.why_device_unusable(fake, Device("cuda")) is None
    monkeypatch.setattr(providers, "any_library_loads", lambda names: True)
    assert providers.why_device_unusable(fake, Device("tensorrt")) is None


@pytest.mark.parametrize("tensorrt_loads", [False, True])
def test_explicit_tensorrt_that_cannot_start_prints_no_onnxruntime_banner(
    tensorrt_loads, random_weights_path, extractor, tmp_path, monkeypatch, capfd
):
    """Without TensorRT (the message says so, before any session), and with TensorRT's libraries present but
    the provider failing anyway (fidkit turns onnxruntime's fallback off, so it raises instead of retrying on
    CUDA behind fidkit's back): an error, and no "EP Error ... Falling back" banner on stdout or stderr."""
    import onnxruntime

    import fidkit.inception.runtime as runtime

    fake = _fake_ort_with_tensorrt_provider(onnxruntime, tmp_path / "ort", b"libnvinfer.so.10\0libcudart.so.13")
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", fake)
    monkeypatch.setattr(runtime, "gpu_driver_present", lambda: True)
    monkeypatch.setattr(providers, "gpu_driver_present", lambda: True)
    monkeypatch.setattr(providers, "_preload_pip_tensorrt", lambda names: None)
    monkeypatch.setattr(
        providers, "any_library_loads", lambda names: tensorrt_loads or not any("nvinfer" in n for n in names)
    )
    expected = "onnxruntime could not start Tensorrt" if tensorrt_loads else "TensorRT is not installed"
    with pytest.raises(FidkitError, match=f"device tensorrt asked for, but {expected}") as caught:
        FeatureExtractor(random_weights_path, device="tensorrt")
    assert ("Please install TensorRT libraries" in str(caught.value)) == tensorrt_loads
    out, err = capfd.readouterr()
    assert "EP Error" not in out + err and "Falling back" not in out + err


def test_tf32_is_on_in_the_cuda_provider_only_when_asked_by_name():
    from fidkit.inception.providers import Device, provider_entries

    options = {precision: provider_entries(Device("cuda", 0), precision=precision, tensorrt_cache=None)[0][1]
               for precision in ("exact", "tf32")}
    assert options["exact"]["use_tf32"] == "0" and options["tf32"]["use_tf32"] == "1"


# --- hostile round 3, 25: the device probe reads the provider list --------------------------------------------------


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
