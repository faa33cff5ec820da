"""Which runtime computes the features: onnxruntime (the default) or the torch engine, and on what device.

``engine="auto"`` runs the ONNX graph on onnxruntime. When a GPU was asked for (``device="auto"`` or
``"cuda[:N]"``) and onnxruntime cannot run there while torch can (an onnxruntime-gpu built for a newer CUDA
than the driver, a CPU-only onnxruntime next to a CUDA torch), the same network runs in torch on that GPU
instead (:mod:`fidkit.inception.torch_engine`, TF32 off), with one warning; the statistics record which
engine ran, and the cache keeps the two apart. ``engine="onnxruntime"`` and ``engine="torch"`` choose
explicitly.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

from fidkit._gpu import gpu_driver_present
from fidkit.errors import FidkitError, InputError
from fidkit.inception.conventions import convention as convention_named
from fidkit.inception.providers import PRECISIONS, parse_device
from fidkit.inception.spec import check_dims, identity_fields, numerics

__all__ = [
    "ENGINES",
    "check_engine",
    "check_options",
    "probe_device",
    "identity_for_options",
    "build_for_options",
    "build_feature_extractor",
]

logger = logging.getLogger(__name__)

#: Values of ``engine`` (``--engine``).
ENGINES = ("auto", "onnxruntime", "torch")


def check_engine(engine: Any) -> str:
    """Return `engine` if it is one of :data:`ENGINES`, else raise InputError."""
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    return str(engine)


def check_options(options: Any) -> dict[str, str]:
    """The registry's check of :class:`~fidkit.options.RunOptions` for this network: every refusal of a device,
    engine or precision, and of their combinations, is here. Returns the canonical device, engine, convention and
    dims."""
    device = parse_device(options.device)
    convention = convention_named(getattr(options, "convention", "tf")).name
    dims = check_dims(getattr(options, "dims", 2048))
    engine = check_engine(options.engine)
    if options.precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, not {options.precision!r}")
    refused = _refused_combination(options, device, engine)
    if refused is not None:
        problem, candidates = refused
        raise InputError(f"{problem}: {_working_fixes(options, candidates)}")
    return {"device": str(device), "engine": engine, "convention": convention, "dims": dims}


#: What each option of a combination falls back to when a fix drops it.
_DROPPED = {"engine": "auto", "precision": "exact", "threads": None, "cluster": "local"}


def _refused_combination(options: Any, device: Any, engine: str) -> tuple[str, list[dict[str, Any]]] | None:
    """The first combination of `options` this network cannot run: what is wrong, naming what was passed, and the
    changes that could fix it (:func:`_working_fixes` offers those that pass every check)."""
    precision = options.precision
    threads, cluster = getattr(options, "threads", None), getattr(options, "cluster", "local")
    cuda = f"cuda:{device.index}" if device.index else "cuda"
    tensorrt = f"tensorrt:{device.index}" if device.index else "tensorrt"
    if cluster == "ray":
        # Each actor builds the onnxruntime network in exact float32 (fidkit.cluster.ray): what differs is named.
        fix = {
            **({"engine": "auto"} if engine == "torch" else {}),
            **({"precision": "exact"} if precision != "exact" else {}),
            **({"device": cuda} if device.kind == "tensorrt" else {}),
        }
        if fix:
            passed = " and ".join(f"{name}={getattr(options, name)!r}" for name in fix)
            return (
                f"cluster='ray' runs the onnxruntime network in exact float32 on CPU or CUDA actors, not {passed}",
                [fix, {"cluster": "local"}],
            )
    if engine == "torch" and device.kind == "tensorrt":
        return (
            f"device={str(device)!r} is onnxruntime's TensorRT provider; the torch engine runs on cpu or cuda",
            [{"engine": "onnxruntime"}, {"device": cuda}],
        )
    if engine == "torch" and threads is not None:
        return (
            f"threads={threads} sets onnxruntime's threads; the torch engine uses torch's own (torch.set_num_threads)",
            [{"threads": None}, {"engine": "onnxruntime"}],
        )
    if precision == "tf32" and device.kind != "cuda":
        return (
            f"precision='tf32' is a GPU arithmetic (TF32 tensor cores) and device={str(device)!r} is no CUDA GPU (on "
            "the CPU the features are float32, the default precision)",
            [{"device": cuda}, {"precision": "exact"}],
        )
    if precision == "bf16" and engine != "torch":
        return (
            f"precision='bf16' runs the network in torch under bfloat16 autocast, not on engine={engine!r}",
            [{"engine": "torch"}, *([{"engine": "torch", "device": cuda}] if device.kind == "tensorrt" else []),
             {"precision": "exact"}],
        )
    if precision == "fast" and engine == "torch":
        return (
            "precision='fast' is onnxruntime's TensorRT mode; the torch engine computes in float32",
            [{"engine": "onnxruntime"}, {"engine": "onnxruntime", "device": tensorrt}, {"precision": "exact"}],
        )
    if precision == "fast" and device.kind != "tensorrt":
        return (
            "precision='fast' runs on TensorRT (FP16)",
            [{"device": tensorrt}, {"precision": "exact"}],
        )
    return None


def _working_fixes(options: Any, candidates: list[dict[str, Any]]) -> str:
    """The candidate changes that pass every combination check of :func:`check_options`, as text for the API and the command
    line: a fix a refusal offers must work as offered (``fast`` needs TensorRT, so ``device='cuda'`` is no fix for
    it). Where none does, dropping every option of the combination does (the defaults always pass)."""
    from types import SimpleNamespace

    names = ("device", "convention", "dims", "engine", "precision", "threads", "cluster")
    current = {name: getattr(options, name, default) for name, default in zip(
        names, ("auto", "tf", 2048, "auto", "exact", None, "local"))}

    def works(change: dict[str, Any]) -> bool:
        trial = SimpleNamespace(**{**current, **change})
        return _refused_combination(trial, parse_device(trial.device), trial.engine) is None

    working = [change for change in candidates if works(change)]
    if not working:
        working = [{name: value for name, value in {**_DROPPED, "device": "auto"}.items() if current[name] != value}]

    def said(name: str, value: Any) -> str:
        passed = current[name]
        if name == "cluster":
            return f"use cluster={value!r} (drop --ray)"
        if value == _DROPPED.get(name, "auto"):
            return f"drop {name}={passed!r} (--{name} {passed})"
        return f"pass {name}={value!r} (--{name} {value})"

    return ", or ".join(" and ".join(said(name, value) for name, value in change.items()) for change in working)


def probe_device(options: Any) -> None:
    """The registry's device probe for this network: :func:`fidkit.inception.providers.check_device_usable`."""
    from fidkit.inception.providers import check_device_usable

    check_device_usable(options.device, engine=options.engine)


def identity_for_options(options: Any) -> dict[str, str]:
    """The identity fields of the network `options` builds, without building it: the weights are located and
    hashed (once per file and process), nothing is exported and no runtime is loaded. With ``engine="auto"``
    on a GPU that only torch can use, the engine that really runs is learned when it is built."""
    from fidkit.inception.weights import locate_weights

    resolved = locate_weights(options.weights)
    tensorrt = parse_device(options.device).kind == "tensorrt"
    engine = "torch" if options.engine == "torch" else "onnxruntime"
    return identity_fields(
        weights_sha256=resolved.sha256,
        engine=engine,
        precision=numerics(options.precision, tensorrt=tensorrt),
        convention=options.convention,
        dims=options.dims,
    )


def build_for_options(options: Any) -> Any:
    """The network `options` names (the registry's builder for ``"inception-2015"``)."""
    return build_feature_extractor(
        options.weights, device=options.device, batch_size=options.batch_size, engine=options.engine,
        precision=options.precision, threads=options.threads, convention=options.convention, dims=options.dims,
    )


def _torch_has_cuda() -> bool:
    """True when torch is installed and sees a GPU; imports torch only when a driver is there at all."""
    if not gpu_driver_present():
        return False
    try:
        import torch
    except ImportError:
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken CUDA setup is no GPU for torch either
        return False


def build_feature_extractor(
    weights: Any = None,
    *,
    device: str = "auto",
    batch_size: int | None = None,
    engine: str = "auto",
    precision: str = "exact",
    threads: int | None = None,
    convention: str = "tf",
    dims: int = 2048,
) -> Any:
    """Build the feature extractor for `engine` on `device` (see the module docstring for ``"auto"``).

    Returns a :class:`~fidkit.inception.FeatureExtractor` or a
    :class:`~fidkit.inception.torch_engine.TorchFeatureExtractor`; both take the same images and give the
    same features (to float32 round-off, about 4e-6 of the feature scale).
    """
    from fidkit.inception.runtime import FeatureExtractor

    engine = check_engine(engine)
    parsed = parse_device(device)
    network = {"convention": convention, "dims": dims}
    if engine == "torch":
        if precision == "fast":
            raise InputError("precision='fast' is onnxruntime's TensorRT mode; the torch engine has exact, tf32, bf16")
        return _torch_extractor(weights, device, batch_size, precision=precision, **network)
    if engine == "onnxruntime":
        return FeatureExtractor(
            weights, device=device, batch_size=batch_size, precision=precision, threads=threads, **network
        )
    try:
        extractor = FeatureExtractor(
            weights, device=device, batch_size=batch_size, precision=precision, threads=threads, **network
        )
    except FidkitError as exc:
        if parsed.kind != "cuda" or not _torch_has_cuda():
            raise
        logger.warning(
            "onnxruntime cannot run on %s here (%s); running the same network with torch on %s instead "
            "(engine 'torch', recorded in the statistics)", device, exc, device,
        )
        return _torch_extractor(weights, device, batch_size, precision=precision, **network)
    if parsed.kind == "auto" and extractor.provider == "CPUExecutionProvider" and _torch_has_cuda():
        logger.warning(
            "onnxruntime cannot use the GPU here (it runs on the CPU); running the same network with torch on "
            "the GPU instead (engine 'torch', recorded in the statistics); pass --engine onnxruntime to keep the CPU"
        )
        return _torch_extractor(weights, "cuda", batch_size, precision=precision, **network)
    return extractor


def _torch_extractor(weights: Any, device: str, batch_size: int | None, **network: Any) -> Any:
    from fidkit.inception.torch_engine import TorchFeatureExtractor

    return TorchFeatureExtractor(weights, device=device, batch_size=batch_size, **network)


#: fidkit's own classes of the FID network, by the engine each runs: (module, class, the name users import).
_ENGINE_CLASSES = {
    "onnxruntime": ("fidkit.inception.runtime", "FeatureExtractor", "fidkit.FeatureExtractor"),
    "torch": (
        "fidkit.inception.torch_engine", "TorchFeatureExtractor", "fidkit.inception.torch_engine.TorchFeatureExtractor"
    ),
}


def _engine_of_object(extractor: Any) -> str | None:
    """The engine of `extractor` when it is one of fidkit's own network classes, else None. Imports neither module:
    an object of a class whose module was never imported is no instance of it."""
    for engine, (module, name, _) in _ENGINE_CLASSES.items():
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and isinstance(extractor, cls):
            return engine
    return None


def class_for_option(
    extractor: Any, name: str, value: Any, settings: Mapping[str, Any]
) -> tuple[str | None, str | None, str | None] | None:
    """Which of fidkit's network classes can be built with the option `name` = `value`, for an object of one of them
    that runs with `settings` (its device, convention, dims, precision, threads; None where it states none).

    Returns None for an object of another class; else ``(class name, its engine, None)`` for the class that takes
    it (its own first; for ``engine`` the class of that engine: ``TorchFeatureExtractor`` has no ``engine``
    parameter, it *is* the torch engine), checked with the network's own rules on the object's other settings (the
    other class gets only what both take, the convention, the layer and a device both run on; its own defaults
    otherwise: ``threads`` are onnxruntime's, ``bf16`` the torch engine's, TensorRT onnxruntime's); or
    ``(None, None, why)`` where none can.
    """
    from types import SimpleNamespace

    own = _engine_of_object(extractor)
    if own is None:
        return None
    candidates = [value] if name == "engine" else [own, *(engine for engine in _ENGINE_CLASSES if engine != own)]
    problem = None
    for engine in candidates:
        trial = {"device": "auto", "convention": "tf", "dims": 2048, "precision": "exact", "threads": None,
                 "cluster": "local"}
        trial.update({option: stated for option, stated in settings.items()
                      if stated is not None and (engine == own or _both_take(option, stated))})
        trial.update({name: value, "engine": engine})
        try:
            check_options(SimpleNamespace(**trial))
        except InputError as exc:
            problem = problem or str(exc)
            continue
        return _ENGINE_CLASSES[engine][2], engine, None
    return None, None, problem


def _both_take(option: str, value: Any) -> bool:
    """Whether both engines' classes take `option` = `value` (carried over to the other class in advice)."""
    if option in ("convention", "dims"):
        return True
    return option == "device" and not str(value).startswith("tensorrt")
