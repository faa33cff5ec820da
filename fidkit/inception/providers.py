"""Where the graph runs: device strings, onnxruntime's providers and their options, and why a GPU cannot.

A device is ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"tensorrt"`` or ``"tensorrt:N"``. This module
turns it into onnxruntime provider entries (TF32 off on CUDA: FID is defined in float32), preloads the CUDA
and cuDNN libraries that ``pip install "fidkit[cuda]"`` brings, keeps onnxruntime's own log lines quiet
unless fidkit logs at DEBUG, sends what onnxruntime prints on stdout to stderr (:func:`stdout_to_stderr`,
around every call that may print), and, when CUDA or TensorRT cannot run, says why and what to install instead
of letting onnxruntime fall back to another provider without a word. onnxruntime is imported by the caller and
passed in, so that tests can hand a stand-in with any provider list.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import re
import sys
from pathlib import Path
from typing import Any

from fidkit._gpu import any_library_loads, gpu_driver_present
from fidkit._devices import Device, parse_device
from fidkit._streams import stdout_to_stderr
from fidkit.errors import FidkitError

__all__ = [
    "Device",
    "parse_device",
    "PRECISIONS",
    "provider_entries",
    "quiet_onnxruntime",
    "preload_gpu_libraries",
    "gpu_driver_present",
    "why_no_gpu",
    "why_device_unusable",
    "tensorrt_missing",
    "stdout_to_stderr",
    "check_device_usable",
]

logger = logging.getLogger(__name__)

#: ``"exact"``: float32 everywhere (the default). The others trade exactness for speed, opt-in, never the
#: reference's numbers, recorded in the metadata and the cache key (their deviation from the exact features is
#: measured by ``benchmarks/bench_gpu.py``): ``"fast"``: TensorRT with FP16 kernels allowed; ``"tf32"``: on a CUDA
#: GPU, convolutions and products with TF32's 10-bit mantissa (onnxruntime's CUDA provider or the torch engine, no
#: TensorRT needed); ``"bf16"``: the torch engine under bfloat16 autocast (CPU or CUDA).
PRECISIONS = ("exact", "fast", "tf32", "bf16")

def provider_entries(device: Device, *, precision: str, tensorrt_cache: Path | None) -> list[Any]:
    """onnxruntime provider entries (with options) for `device`, the CPU last as the fallback for nodes."""
    if device.kind == "cpu":
        return ["CPUExecutionProvider"]
    cuda = (
        "CUDAExecutionProvider",
        {
            "device_id": str(device.index),
            # onnxruntime's CUDA provider computes convolutions in TF32 unless told not to; FID is float32, unless
            # TF32 was asked for by name.
            "use_tf32": "1" if precision == "tf32" else "0",
            # One plan search per shape; batches are padded to one shape on the GPU, so it is paid once.
            "cudnn_conv_algo_search": "EXHAUSTIVE",
            "do_copy_in_default_stream": "1",
        },
    )
    if device.kind == "cuda":
        return [cuda, "CPUExecutionProvider"]
    tensorrt = (
        "TensorrtExecutionProvider",
        {
            "device_id": str(device.index),
            "trt_fp16_enable": "True" if precision == "fast" else "False",
            "trt_int8_enable": "False",
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(tensorrt_cache),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(tensorrt_cache),
        },
    )
    return [tensorrt, cuda, "CPUExecutionProvider"]


def quiet_onnxruntime(ort: Any) -> None:
    """Keep onnxruntime's own (coloured, C++) log lines off stderr unless fidkit logs at DEBUG (``--debug``).

    fidkit reports what went wrong itself, in one line that says what to do.
    """
    verbose = logging.getLogger("fidkit").isEnabledFor(logging.DEBUG)
    # onnxruntime's severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal.
    ort.set_default_logger_severity(2 if verbose else 4)


def preload_gpu_libraries(ort: Any) -> None:
    """Load the CUDA and cuDNN libraries of the ``nvidia-*`` wheels before a GPU session is created.

    ``onnxruntime.preload_dlls()`` (onnxruntime >= 1.21) finds the libraries that ``pip install
    "fidkit[cuda]"`` installed; when torch is already imported with CUDA, its libraries are loaded anyway.
    Failures are left to the session, whose error :func:`why_no_gpu` then explains.
    Whatever it prints ("Failed to load libcublasLt.so.13 ...", on stdout) goes to stderr: stdout is the
    caller's result.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        with stdout_to_stderr():
            preload()
    except Exception as exc:  # noqa: BLE001 - best effort: the session reports the real failure
        logger.debug("onnxruntime.preload_dlls() failed: %s", exc)


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


_INSTALL = 'pip install "fidkit[cuda]" (onnxruntime-gpu with its CUDA and cuDNN wheels)'

#: The TensorRT library names in onnxruntime's TensorRT provider library (``libnvinfer.so.10`` for onnxruntime-gpu
#: 1.18 to 1.31 at least) and the CUDA runtime it was built for (``libcudart.so.13``): read from the provider
#: library itself, so the message names what this onnxruntime needs, not what one version needed.
_NVINFER_SONAME = re.compile(rb"libnvinfer\.so\.(\d+)")
_CUDART_SONAME = re.compile(rb"libcudart\.so\.(\d+)")


def _tensorrt_requirement(ort: Any) -> tuple[str | None, str | None]:
    """(TensorRT major, CUDA major) that onnxruntime's TensorRT provider library links against; None if unknown.

    The provider library (``capi/libonnxruntime_providers_tensorrt.so``, about 1 MB) names them among its needed
    libraries. A stand-in module without a file, Windows (``nvinfer_10.dll``) or an unreadable file gives None,
    and the message falls back to naming no version.
    """
    module_file = getattr(ort, "__file__", None)
    if not module_file:
        return None, None
    library = Path(module_file).parent / "capi" / "libonnxruntime_providers_tensorrt.so"
    try:
        data = library.read_bytes()
    except OSError:
        return None, None
    tensorrt = {match.group(1).decode() for match in _NVINFER_SONAME.finditer(data)}
    cuda = {match.group(1).decode() for match in _CUDART_SONAME.finditer(data)}
    return (tensorrt.pop() if len(tensorrt) == 1 else None), (cuda.pop() if len(cuda) == 1 else None)


def _preload_pip_tensorrt(names: list[str]) -> None:
    """Load TensorRT's libraries from its pip wheels, which the loader does not search by itself.

    ``pip install tensorrt-cu13`` puts ``libnvinfer.so.N`` in site-packages (the ``tensorrt_libs`` package),
    not on the loader's path; once loaded by full path here, onnxruntime's ``dlopen`` by name finds them.
    Importing NVIDIA's ``tensorrt`` module, which loads them itself, covers a wheel that keeps them elsewhere.
    Best effort: what is still missing afterwards is reported by :func:`tensorrt_missing`.
    """
    import ctypes

    try:
        spec = importlib.util.find_spec("tensorrt_libs")
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        for name in names:
            candidate = Path(folder) / name
            if candidate.is_file():
                try:
                    ctypes.CDLL(str(candidate))
                except OSError as exc:
                    logger.debug("cannot load %s: %s", candidate, exc)
    if not any_library_loads(names[:1]):
        try:
            if importlib.util.find_spec("tensorrt") is not None:
                with stdout_to_stderr():
                    import tensorrt  # noqa: F401 - NVIDIA's module loads libnvinfer on import
        except Exception as exc:  # noqa: BLE001 - best effort: the check below reports what is missing
            logger.debug("importing tensorrt failed: %s", exc)


def tensorrt_missing(ort: Any) -> str | None:
    """Why onnxruntime's TensorRT provider cannot start here for want of TensorRT itself, or None if it can.

    onnxruntime-gpu lists ``TensorrtExecutionProvider`` whether or not TensorRT is installed (the wheel brings
    only the provider library, not TensorRT), and without TensorRT creating a session fails with "Please install
    TensorRT libraries" (or, with onnxruntime's fallback on, prints an "EP Error ... Falling back" banner and runs
    on the CUDA provider instead). A failed ``dlopen`` of TensorRT's libraries tells it before any session.
    """
    if sys.platform == "win32":
        return None  # nvinfer_10.dll and its search path: left to the session's own error there
    tensorrt, cuda = _tensorrt_requirement(ort)
    if tensorrt is not None:
        names = [f"libnvinfer.so.{tensorrt}", f"libnvonnxparser.so.{tensorrt}"]
    else:
        names = ["libnvinfer.so", "libnvonnxparser.so"]
    if all(any_library_loads([name]) for name in names):
        return None
    # TensorRT's libraries may need the CUDA ones loaded first (the session would load them anyway).
    preload_gpu_libraries(ort)
    _preload_pip_tensorrt(names)
    missing = [name for name in names if not any_library_loads([name])]
    if not missing:
        return None
    if tensorrt is not None:
        wheel = f"tensorrt-cu{cuda}" if cuda is not None else "tensorrt"
        install = (
            f"pip install '{wheel}>={tensorrt},<{int(tensorrt) + 1}' (this onnxruntime's TensorRT provider needs "
            f"TensorRT {tensorrt}{f' for CUDA {cuda}' if cuda else ''}; see onnxruntime's TensorRT execution "
            "provider requirements)"
        )
    else:
        install = "install the TensorRT version that onnxruntime's TensorRT execution provider requirements name"
    return (
        f"TensorRT is not installed ({' and '.join(missing)} cannot be loaded; onnxruntime-gpu brings only its "
        f"TensorRT provider, not TensorRT); {install}, or use --device cuda, which needs no TensorRT"
    )


def why_device_unusable(ort: Any, device: Device) -> str | None:
    """Why an explicit GPU `device` cannot start, known before creating a session; None when nothing is known.

    Its provider missing from onnxruntime's list (:func:`why_no_gpu`), or, for ``tensorrt`` on a machine with an
    NVIDIA driver, TensorRT itself missing (:func:`tensorrt_missing`). Failures that only a session shows (no
    driver, a missing cuDNN, a GPU index that does not exist) are explained by :func:`why_no_gpu` once the
    session has failed.
    """
    if device.kind in ("auto", "cpu"):
        return None
    if device.provider not in ort.get_available_providers():
        return why_no_gpu(ort, device)
    if device.kind == "tensorrt" and gpu_driver_present():
        return tensorrt_missing(ort)
    return None


def why_no_gpu(ort: Any, device: Device, detail: str = "") -> str:
    """Say why `device` cannot run here and what to install; `detail` is onnxruntime's own message, if any."""
    available = list(ort.get_available_providers())
    wanted = device.provider
    if wanted not in available:
        if _installed("onnxruntime") and _installed("onnxruntime-gpu"):
            return (
                f"both onnxruntime and onnxruntime-gpu are installed and the CPU build shadows the GPU one (no "
                f"{wanted}); run: pip uninstall -y onnxruntime onnxruntime-gpu && {_INSTALL}"
            )
        return f"this onnxruntime is a CPU-only build (providers: {', '.join(available)}); {_INSTALL}"
    if not gpu_driver_present():
        return "no NVIDIA driver on this machine (libcuda.so.1 does not load); use --device cpu, or a machine with a GPU"
    missing = [
        label
        for label, names in (
            ("the CUDA runtime (libcudart)", ("libcudart.so.13", "libcudart.so.12", "libcudart.so")),
            ("cuBLAS (libcublas)", ("libcublas.so.13", "libcublas.so.12", "libcublas.so")),
            ("cuDNN 9 (libcudnn)", ("libcudnn.so.9", "libcudnn.so")),
        )
        if not any_library_loads(names)
    ]
    if missing:
        return (
            f"{' and '.join(missing)} cannot be loaded; {_INSTALL}, whose versions match this onnxruntime "
            "(onnxruntime-gpu 1.31 needs CUDA 13 and a driver of the 580 series or newer)"
        )
    no_tensorrt = tensorrt_missing(ort) if device.kind == "tensorrt" else None
    if no_tensorrt is not None:
        return no_tensorrt
    suffix = f" (onnxruntime: {detail.strip().splitlines()[0][:300]})" if detail.strip() else ""
    if device.kind == "tensorrt":
        # TensorRT's libraries load, yet the provider fails: a TensorRT version this onnxruntime was not built for.
        return (
            f"onnxruntime could not start {wanted} on GPU {device.index}{suffix}; check that the installed TensorRT "
            "is the version this onnxruntime-gpu needs (onnxruntime's TensorRT execution provider requirements) "
            "and that the GPU index exists (nvidia-smi), or use --device cuda, which needs no TensorRT"
        )
    return (
        f"onnxruntime could not start {wanted} on GPU {device.index}{suffix}; check that the GPU index exists "
        f"(nvidia-smi) and that the driver supports this CUDA version, or use --device cpu"
    )


def check_device_usable(device: Any, *, engine: str = "auto") -> None:
    """Raise at once when `device` asks for a GPU that nothing can run on here; build nothing.

    The cheap part of what building an extractor would find out hours later: no NVIDIA driver
    (:func:`gpu_driver_present`, a failed ``dlopen``), or no runtime for the GPU: onnxruntime without the
    device's provider (``onnxruntime.get_available_providers()``) and, for ``cuda`` with `engine` ``"auto"``
    or ``"torch"``, no CUDA torch either (torch is imported only when a driver is there). ``"auto"`` and
    ``"cpu"`` always pass. A device that passes can still fail when its session starts (a missing cuDNN, a
    GPU index that does not exist); that error comes with the extractor, and says why.

    Parameters
    ----------
    device : str
        A device string (:func:`parse_device`).
    engine : {"auto", "onnxruntime", "torch"}
        Which runtimes may run it (see :mod:`fidkit.inception.select`).

    Raises
    ------
    InputError
        Not a device string.
    FidkitError
        The device cannot run here; the message says why and what to use instead.
    """
    parsed = parse_device(device)
    if parsed.kind in ("auto", "cpu"):
        return
    fix = "pass device='cpu' (or 'auto', which uses a GPU only when one works), or run on a machine with a GPU"
    if not gpu_driver_present():
        raise FidkitError(
            f"device {parsed} asked for, but there is no NVIDIA driver on this machine (libcuda.so.1 does not "
            f"load); {fix}"
        )
    ort: Any = None
    if engine != "torch":
        try:
            import onnxruntime as ort
        except ImportError:
            ort = None
        if ort is not None and parsed.provider in ort.get_available_providers():
            if parsed.kind == "tensorrt":
                missing = tensorrt_missing(ort)
                if missing is not None:
                    raise FidkitError(f"device {parsed} asked for, but {missing}")
            return
    if parsed.kind == "cuda" and engine in ("auto", "torch"):
        from fidkit.inception.select import _torch_has_cuda

        if _torch_has_cuda():
            return
    if ort is not None:
        reason = why_no_gpu(ort, parsed)
    elif engine == "torch":
        reason = "torch cannot use CUDA here (not installed, or a CPU-only build)"
    else:
        reason = f"onnxruntime cannot be imported; {_INSTALL}"
    raise FidkitError(f"device {parsed} asked for, but {reason}; or {fix}")
