"""Run the FID graph with onnxruntime: provider choice, threads, batching, the graph cache.

The graph for a weights file and a convention is exported once (:mod:`fidkit.inception.export`, which needs
torch) and cached at ``cache_home()/onnx/<sha256[:16]>-<EXPORTER_VERSION>-<convention>.onnx``; after that, feature
extraction needs only numpy and onnxruntime. onnxruntime is imported when a
:class:`FeatureExtractor` is built, never at import time.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fidkit._fs import atomic_write, file_size_limit_fix, out_of_space, sha256_file
from fidkit._home_dir import cache_home
from fidkit._streams import stdout_to_stderr
from fidkit._validate import (
    as_image_batch,
    as_image_tensor,
    check_batch_size,
    is_torch_tensor,
)
from fidkit.errors import FidkitError, InputError, ResourceError
from fidkit.inception.providers import (
    PRECISIONS,
    Device,
    gpu_driver_present,
    parse_device,
    preload_gpu_libraries,
    provider_entries,
    quiet_onnxruntime,
    why_device_unusable,
    why_no_gpu,
)
from fidkit.inception.conventions import DEFAULT_CONVENTION
from fidkit.inception.conventions import convention as convention_named
from fidkit.inception.spec import (
    EXPORTER_VERSION,
    FEATURE_DIM,
    GRAPH_OUTPUTS,
    OUTPUT_DIMS,
    RESIZE_COLS,
    RESIZE_ROWS,
    check_dims,
    default_batch_size,
    extractor_metadata,
    extractor_outputs,
    feature_extractor_name,
    network_memory_error,
    out_of_memory,
)
from fidkit.inception.weights import ResolvedWeights, locate_weights

__all__ = [
    "FeatureExtractor",
    "graph_cache_path",
    "ensure_graph",
]

logger = logging.getLogger(__name__)

def graph_cache_path(weights_sha256: str, convention: str = DEFAULT_CONVENTION) -> Path:
    """Where the graph for weights with this sha256 and this convention is cached."""
    return cache_home() / "onnx" / f"{weights_sha256[:16]}-{EXPORTER_VERSION}-{convention_named(convention).name}.onnx"


@dataclass(frozen=True)
class Graph:
    """The cached ONNX graph of a weights file: where it is, its sha256, and whether this call built it."""

    path: Path
    sha256: str
    built: bool


def _checksum_path(graph: Path) -> Path:
    """Beside each graph, the sha256 recorded when fidkit built it."""
    return graph.with_name(graph.name + ".sha256")


# Graphs whose bytes were checked in this process, by (path, size, mtime): hashing 100 MB once per process
# is enough, and an edit changes the size or the modification time.
_CHECKED_GRAPHS: dict[tuple[str, int, int], str] = {}


def _recorded_sha256(graph: Path) -> str | None:
    """The graph's sha256 when it matches the one recorded at its export, else None (missing, changed, cut)."""
    try:
        info = graph.stat()
        recorded = _checksum_path(graph).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    key = (str(graph), info.st_size, info.st_mtime_ns)
    if _CHECKED_GRAPHS.get(key) == recorded:
        return recorded
    if sha256_file(graph) != recorded:
        return None
    _CHECKED_GRAPHS[key] = recorded
    return recorded


def ensure_graph(weights: ResolvedWeights, *, convention: str = DEFAULT_CONVENTION, rebuild: bool = False) -> Graph:
    """Return the cached graph for `weights` and `convention`, verified against the sha256 recorded when it was built.

    The graph is derived data: a cached file that is missing, cut short, edited (even if it still loads)
    or has no recorded checksum is rebuilt from the weights, never used. The export is written to a
    temporary file and renamed into place, so a concurrent reader never sees half a graph; the checksum
    is written after the graph, so a crash between the two leaves a graph that is rebuilt on next use.
    """
    chosen = convention_named(convention)
    target = graph_cache_path(weights.sha256, chosen.name)
    if not rebuild:
        digest = _recorded_sha256(target)
        if digest is not None:
            return Graph(target, digest, built=False)
        if target.exists():
            logger.warning(
                "cached ONNX graph %s does not match the checksum recorded when fidkit built it (changed, cut short "
                "or not fidkit's); rebuilding it from the weights", target,
            )
    logger.info("building the ONNX graph for %s (once per weights file)", weights.path)
    # torch is needed only here, on the first use of a weights file.
    from fidkit.inception.export import export_graph

    metadata = {
        "weights_sha256": weights.sha256,
        "exporter_version": EXPORTER_VERSION,
        "convention": chosen.name,
        "resize_mode": chosen.resize_mode,
        "feature_extractor": feature_extractor_name(FEATURE_DIM),
    }
    try:
        with atomic_write(target, overwrite=True) as tmp:
            export_graph(weights.path, tmp, convention=chosen.name, metadata=metadata)
            digest = sha256_file(tmp)
        with atomic_write(_checksum_path(target), overwrite=True) as tmp:
            tmp.write_text(digest + "\n", encoding="ascii")
    except OSError as exc:
        if exc.filename is not None and Path(exc.filename) == Path(weights.path):
            raise  # about the weights file, not the cache
        # An unwritable or read-only cache home (a shared account, a container): say which setting moves it.
        fix = file_size_limit_fix(
            exc, "set the environment variable FIDKIT_HOME to a folder on another file system"
        ) or ("free disk space there, or set the environment variable FIDKIT_HOME to a folder on another disk" if (
            out_of_space(exc)
        ) else "set the environment variable FIDKIT_HOME to a writable folder")
        raise FidkitError(f"cannot write the ONNX graph cache {target} ({exc.strerror or exc}); {fix}") from exc
    # Logged here, not by export_graph: it only sees the temporary name.
    logger.info("exported the ONNX graph of %s to %s", weights.path, target)
    # Another process may have published its own export between our two renames: name what is on disk now
    # (its graph and checksum agree), which is what the session will load.
    on_disk = _recorded_sha256(target)
    if on_disk is None and not rebuild:
        logger.warning("the graph %s changed while it was written (another process?); building it again", target)
        return ensure_graph(weights, convention=chosen.name, rebuild=True)
    return Graph(target, on_disk or digest, built=True)


def _machine_threads() -> int:
    """CPU cores this process may run on (respects affinity masks and container CPU sets)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return max(os.cpu_count() or 1, 1)


class _UnreadableGraph(Exception):
    """Internal: onnxruntime could not parse the cached graph file."""


class FeatureExtractor:
    """Images in, FID features out: the ONNX graph of the 2015 Inception-v3 on onnxruntime.

    Parameters
    ----------
    weights : path-like or ResolvedWeights, optional
        The weights file; by default ``$FIDKIT_WEIGHTS``, the cached file, or a download
        (see :func:`fidkit.inception.weights.locate_weights`). A ``ResolvedWeights`` from
        ``locate_weights`` is used as is, without hashing the file again.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"tensorrt"`` or ``"tensorrt:N"``. ``"auto"``
        uses CUDA only when a session really runs there (its providers are checked after creation and
        a tiny warm-up batch runs), else the CPU. ``"cuda"`` and ``"tensorrt"`` raise, saying why and
        what to install, if that provider cannot start; they never fall back to the CPU. TensorRT is
        never chosen automatically: it may compute in TF32 (onnxruntime exposes no option to clear
        TensorRT's TF32 flag; ``NVIDIA_TF32_OVERRIDE=0`` does) and it builds a new engine for every
        new input size.
    batch_size : int, optional
        Images per onnxruntime run; larger inputs are split. On a GPU every run has this many images
        (the last batch is padded), so one cuDNN plan serves them all. Default: chosen for the provider
        that runs (:func:`fidkit.inception.spec.default_batch_size`).
    threads : int, optional
        Intra-op threads; by default the cores this process may use.
    download_progress : bool
        Progress bar on stderr if the weights have to be downloaded.
    precision : {"exact", "fast", "tf32"}
        ``"exact"`` (default): float32 everywhere, TF32 off. ``"fast"``: TensorRT with FP16 kernels
        allowed; needs ``device="tensorrt"``. ``"tf32"``: the CUDA provider with TF32 on; needs
        ``device="cuda[:N]"``. Never the default.
    convention : str
        The preprocessing before the network (:mod:`fidkit.inception.conventions`): ``"tf"`` (default, the
        TensorFlow reference), ``"pytorch-fid"``, ``"clean"``, ``"torchmetrics"``.
    dims : {2048, 768, 192, 64}
        Width of the features: pool_3 (2048, the FID of the literature) or the spatial mean of an earlier block,
        as pytorch-fid's ``--dims``.

    Attributes
    ----------
    weights_path : pathlib.Path
    weights_sha256 : str
    provider : str
        The provider that really runs the graph (``session.get_providers()[0]``).
    on_gpu : bool
        Whether that provider is CUDA or TensorRT.
    feature_dim : int
    convention : str
    resize_mode : str
    batch_size : int
    graph_path : pathlib.Path
    graph_sha256 : str
        The sha256 of the ONNX graph that runs, verified against the one recorded when it was built;
        part of the statistics cache key and of the statistics' metadata.
    """

    def __init__(
        self,
        weights: str | os.PathLike | ResolvedWeights | None = None,
        *,
        device: str = "auto",
        batch_size: int | None = None,
        threads: int | None = None,
        download_progress: bool = True,
        precision: str = "exact",
        convention: str = DEFAULT_CONVENTION,
        dims: int = FEATURE_DIM,
    ) -> None:
        parsed = parse_device(device)
        chosen = convention_named(convention)
        dims = check_dims(dims)
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        if precision == "fast" and parsed.kind != "tensorrt":
            raise InputError("precision='fast' runs on TensorRT (FP16): pass device='tensorrt' (or --device tensorrt)")
        if precision == "tf32" and parsed.kind != "cuda":
            raise InputError("precision='tf32' runs on the CUDA provider: pass device='cuda' (or --device cuda)")
        if precision == "bf16":
            raise InputError("precision='bf16' runs on the torch engine: pass engine='torch' (or --engine torch)")
        if batch_size is not None:
            batch_size = check_batch_size(batch_size)
        if threads is not None and int(threads) < 1:
            raise InputError(f"threads must be at least 1, not {threads}")
        # A ResolvedWeights from the caller is used as is (not hashed again).
        clock = time.perf_counter()
        #: Where the set-up time went, in seconds: locating and hashing the weights, loading (or exporting) the
        #: graph, creating the session (on a GPU, with its warm-up batch). Reported as the side's setup.
        self.setup_seconds: dict[str, float] = {}
        resolved = locate_weights(weights, progress=download_progress)
        self.setup_seconds["weights"] = time.perf_counter() - clock
        self.weights_path: Path = resolved.path
        self.weights_sha256: str = resolved.sha256
        self.feature_dim: int = dims
        self.convention: str = chosen.name
        self.resize_mode: str = chosen.resize_mode
        self._convention = chosen
        self._input_name = "images"  # the graph's image input (fidkit.inception.export.INPUT_NAME)
        self.batch_size: int = batch_size or 0  # decided below once the provider is known, when not given
        self.threads: int = int(threads) if threads is not None else _machine_threads()
        self.device: str = str(parsed)
        self.precision: str = precision
        clock = time.perf_counter()
        graph = ensure_graph(resolved, convention=chosen.name)
        self.setup_seconds["graph_export" if graph.built else "graph_check"] = time.perf_counter() - clock
        clock = time.perf_counter()
        self.graph_path: Path = graph.path
        self.graph_sha256: str = graph.sha256
        try:
            self._session = self._make_session(parsed)
        except _UnreadableGraph as exc:
            if graph.built:
                raise self._graph_error(exc) from None
            # A verified cached graph that does not load (onnxruntime changed under it, say): it is only
            # a cache, so rebuild it once from the weights.
            logger.warning("cached graph %s does not load (%s); rebuilding it", self.graph_path, exc)
            graph = ensure_graph(resolved, convention=chosen.name, rebuild=True)
            self.graph_sha256 = graph.sha256
            try:
                self._session = self._make_session(parsed)
            except _UnreadableGraph as again:
                raise self._graph_error(again) from None
        self.setup_seconds["session"] = time.perf_counter() - clock
        self.provider: str = self._session.get_providers()[0]
        self._input_name = self._session.get_inputs()[0].name
        self.on_gpu: bool = self.provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        self.batch_size = batch_size or default_batch_size(self.on_gpu)
        logger.info("feature extractor on %s (%d threads, batch %d)", self.provider, self.threads, self.batch_size)
        logger.debug(
            "feature extractor set-up: %s", ", ".join(f"{part} {seconds:.2f} s" for part, seconds in self.setup_seconds.items())
        )

    # --- session -----------------------------------------------------------------------------

    def _graph_error(self, exc: _UnreadableGraph) -> FidkitError:
        """The error for a graph fidkit has just built and onnxruntime still cannot load."""
        return FidkitError(
            f"onnxruntime cannot load the ONNX graph {self.graph_path} that fidkit built from {self.weights_path} "
            f"({exc}); delete {self.graph_path} and retry, and if it persists check that the onnxruntime "
            "installation works (python -c 'import onnxruntime') and report it"
        )

    @stdout_to_stderr()  # onnxruntime prints on stdout when a provider fails; stdout is the caller's result
    def _graph_loads_on_cpu(self) -> bool:
        """True if the graph file loads with the CPU provider: tells a provider failure from a bad graph."""
        import onnxruntime as ort

        try:
            ort.InferenceSession(str(self.graph_path), self._session_options(), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own exception types are not importable by a stable name
            if out_of_memory(exc):
                raise self._session_memory_error(Device("cpu"), exc) from exc
            return False
        return True

    def _session_memory_error(self, device: Device, exc: BaseException | str) -> ResourceError:
        """The error for memory running out as onnxruntime loads the graph: not a damaged graph."""
        where = "GPU memory" if device.kind != "cpu" else "memory"
        other = " or pass --device cpu (device='cpu')" if device.kind != "cpu" else ""
        return ResourceError(
            f"{where} ran out while onnxruntime loaded the ONNX graph {self.graph_path} on {device.provider} "
            f"({out_of_memory(exc)}); the graph is not damaged: free {where} (other processes, other models in "
            f"this one) and retry{other}"
        )

    def _session_options(self) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = self.threads
        # One graph, run sequentially: inter-op threads would only compete with intra-op ones.
        options.inter_op_num_threads = 1
        return options

    def _provider_entries(self, device: Device) -> list[Any]:
        trt_cache = None
        if device.kind == "tensorrt":
            trt_cache = cache_home() / "tensorrt"
            try:
                trt_cache.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise FidkitError(
                    f"cannot create the TensorRT engine cache {trt_cache} ({exc.strerror or exc}); set the "
                    "environment variable FIDKIT_HOME to a writable folder"
                ) from exc
        return provider_entries(device, precision=self.precision, tensorrt_cache=trt_cache)

    @stdout_to_stderr()  # "Failed to load libcublasLt...", "EP Error" blocks: printed on stdout by onnxruntime
    def _make_session(self, device: Device) -> Any:
        import onnxruntime as ort

        quiet_onnxruntime(ort)
        available = ort.get_available_providers()
        explicit = device.kind != "auto"
        if explicit:
            reason = why_device_unusable(ort, device)  # a provider not listed, TensorRT not installed
            if reason is not None:
                raise FidkitError(f"device {device} asked for, but {reason}")
            candidates = [device]
        else:
            candidates = [Device("cpu")]
            if "CUDAExecutionProvider" in available and gpu_driver_present():
                candidates.insert(0, Device("cuda"))
        for candidate in candidates:
            on_gpu = candidate.kind != "cpu"
            if on_gpu:
                preload_gpu_libraries(ort)
            try:
                session = ort.InferenceSession(
                    str(self.graph_path), self._session_options(), providers=self._provider_entries(candidate),
                    # No retry on other providers behind fidkit's back (and no "EP Error ... Falling back" banner):
                    # a GPU that cannot start is reported below, with why.
                    **({"enable_fallback": 0} if on_gpu else {}),
                )
            except Exception as exc:  # onnxruntime raises its own types for provider failures
                if out_of_memory(exc):
                    # An allocation that failed (std::bad_alloc, a full GPU) says nothing about the graph file:
                    # rebuilding it would not help, and the user would be told to delete a good file.
                    if on_gpu and not explicit:
                        logger.warning("%s ran out of memory starting (%s); using the CPU", candidate.provider,
                                       out_of_memory(exc))
                        continue
                    raise self._session_memory_error(candidate, exc) from exc
                # A graph the CPU provider cannot load is a bad file, whatever type onnxruntime gives it (an
                # empty file is InvalidArgument "No graph was found in the protobuf"); for the other providers
                # the same question is asked of the CPU provider before blaming the provider.
                if (
                    type(exc).__name__ in ("InvalidProtobuf", "InvalidGraph", "NoSuchFile")
                    or not on_gpu
                    or not self._graph_loads_on_cpu()
                ):
                    raise _UnreadableGraph(f"{type(exc).__name__}: {exc}") from exc
                if explicit:
                    raise FidkitError(f"device {device} asked for, but {why_no_gpu(ort, candidate, str(exc))}") from None
                logger.info("%s could not start (%s); using the CPU", candidate.provider, exc)
                continue
            actual = session.get_providers()[0]
            problem = None
            if actual != candidate.provider:
                # onnxruntime fell back without a word (missing CUDA libraries, no GPU).
                problem = f"onnxruntime fell back to {actual}"
            elif on_gpu:
                problem = self._warm_up(session)
                if problem is not None and explicit and out_of_memory(problem):
                    raise self._session_memory_error(candidate, problem)
            if problem is None:
                return session
            if explicit:
                raise FidkitError(f"device {device} asked for, but {why_no_gpu(ort, candidate, problem)}")
            logger.info("%s does not run here (%s); using the CPU", candidate.provider, problem)
        raise FidkitError(f"could not start onnxruntime on device {device}")  # pragma: no cover - CPU always starts

    def _warm_up(self, session: Any) -> str | None:
        """Run one tiny batch: a GPU session that was created may still fail on its first run (cuDNN)."""
        try:
            session.run(None, self._feeds(np.zeros((1, 16, 16, 3), dtype=np.uint8)))
        except Exception as exc:  # noqa: BLE001 - any failure means the provider does not really run
            return f"{type(exc).__name__}: {exc}"
        return None

    # --- running -----------------------------------------------------------------------------

    def __call__(self, images: Any) -> NDArray[np.float32]:
        """Return the features of a batch of images (pool_3, or the layer of ``dims``).

        Parameters
        ----------
        images : array_like, uint8, shape (B, H, W, 3), (B, H, W) or (B, H, W, 1)
            Images, all the same size, any size; resized to 299x299 inside the graph. Accepted under the
            same rules as every other image input (:func:`fidkit._validate.as_image_batch`): grayscale is
            replicated to RGB, other dtypes are refused with how to convert.

        Returns
        -------
        ndarray, float32, shape (B, feature_dim)
        """
        return self.outputs(images, ("features",))["features"]

    def outputs(self, images: Any, names: tuple[str, ...] = ("features",)) -> dict[str, NDArray[np.float32]]:
        """Several outputs of one forward pass: ``"features"``, ``"logits"`` (1008, the classifier without its
        bias) and ``"spatial"`` (2023, sFID's), each float32 ``(B, width)``; `images` as for :meth:`__call__`."""
        network_names = extractor_outputs(names, self.feature_dim)
        graph_names = {name: GRAPH_OUTPUTS[output] for name, output in network_names.items()}
        widths = {name: OUTPUT_DIMS[output] for name, output in network_names.items()}
        if self.on_gpu and is_torch_tensor(images) and images.is_cuda:
            tensor = as_image_tensor(images, "images")
            n_images, height, width = (int(d) for d in tensor.shape[:3])
            run = self._run_device_chunk
        else:
            tensor = as_image_batch(images, "images")
            n_images, height, width = tensor.shape[:3]
            run = self._run_host_chunk
        if height < 1 or width < 1:
            raise InputError(f"images must have H, W >= 1, got shape {tuple(tensor.shape)}")
        results = {name: np.empty((n_images, widths[name]), dtype=np.float32) for name in graph_names}
        for start in range(0, n_images, self.batch_size):
            stop = min(start + self.batch_size, n_images)
            chunk = tensor[start:stop]
            try:
                if self.on_gpu and stop - start < self.batch_size:
                    # One input shape per image size on the GPU, so that one cuDNN plan (searched once, at the
                    # first batch) serves every batch: run a padded batch, keep its own rows.
                    padded = {
                        graph_names[name]: np.empty((self.batch_size, widths[name]), np.float32) for name in graph_names
                    }
                    run(chunk, padded, pad_to=self.batch_size)
                    for name in graph_names:
                        results[name][start:stop] = padded[graph_names[name]][: stop - start]
                else:
                    run(chunk, {graph_names[name]: results[name][start:stop] for name in graph_names})
            except Exception as exc:  # onnxruntime's Fail / RuntimeException, numpy's MemoryError
                if not out_of_memory(exc):
                    raise
                raise network_memory_error(exc, self.on_gpu, self.batch_size, stop - start, (height, width), self.provider) from exc
        return results

    def _feeds(self, chunk: Any) -> dict[str, Any]:
        """The graph's inputs for one chunk: the images, and for a matrix convention its two resize matrices."""
        feeds = {self._input_name: chunk}
        if self._convention.name != "tf":
            rows, cols = self._convention.resize_matrices(int(chunk.shape[1]), int(chunk.shape[2]))
            feeds[RESIZE_ROWS] = rows
            feeds[RESIZE_COLS] = np.ascontiguousarray(cols.T)
        return feeds

    def _run_host_chunk(self, chunk: NDArray[np.uint8], outs: dict[str, NDArray[np.float32]], pad_to: int = 0) -> None:
        """Run one chunk of host images, writing each output named in `outs` into its array there."""
        chunk = np.ascontiguousarray(chunk)
        if pad_to > len(chunk):
            padded = np.zeros((pad_to, *chunk.shape[1:]), dtype=np.uint8)
            padded[: len(chunk)] = chunk
            chunk = padded
        feeds = self._feeds(chunk)
        names = list(outs)
        if not self.on_gpu:
            for name, value in zip(names, self._session.run(names, feeds)):
                outs[name][...] = value
            return
        # On GPU: bind the host inputs and let onnxruntime copy them to the device once, and bind each output
        # to the caller's host buffer so the results land there with no extra copy.
        binding = self._session.io_binding()
        for key, value in feeds.items():
            binding.bind_cpu_input(key, value)
        self._bind_outputs_and_run(binding, outs)

    def _run_device_chunk(self, chunk: Any, outs: dict[str, NDArray[np.float32]], pad_to: int = 0) -> None:
        """Run one chunk of a contiguous uint8 NHWC CUDA tensor, bound by pointer: the images never visit the host.

        Each chunk of `batch_size` rows of a contiguous tensor is itself contiguous, so its address is bound as the
        graph's input on the GPU; a short chunk is padded on the device. Written for the CUDA provider; not run
        where this was written (no GPU): see benchmarks/bench_gpu.py.
        """
        import torch

        if pad_to > len(chunk):
            padded = torch.zeros((pad_to, *chunk.shape[1:]), dtype=torch.uint8, device=chunk.device)
            padded[: len(chunk)] = chunk
            chunk = padded
        binding = self._session.io_binding()
        binding.bind_input(
            self._input_name, "cuda", chunk.device.index or 0, np.uint8, list(chunk.shape), chunk.data_ptr()
        )
        for key, value in self._feeds(chunk).items():
            if key != self._input_name:
                binding.bind_cpu_input(key, value)
        torch.cuda.current_stream(chunk.device).synchronize()  # the quantization kernels have finished
        self._bind_outputs_and_run(binding, outs)

    def _bind_outputs_and_run(self, binding: Any, outs: dict[str, NDArray[np.float32]]) -> None:
        if all(out.flags.c_contiguous for out in outs.values()):
            for name, out in outs.items():
                binding.bind_output(name, "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
            self._session.run_with_iobinding(binding)
            return
        for name in outs:
            binding.bind_output(name, "cpu")
        self._session.run_with_iobinding(binding)
        for out, value in zip(outs.values(), binding.copy_outputs_to_cpu()):
            out[...] = value

    def metadata(self) -> dict[str, str]:
        """What produced the features, for statistics files and reports."""
        return extractor_metadata(self, engine="onnxruntime")

    def __repr__(self) -> str:
        return (
            f"FeatureExtractor(weights={str(self.weights_path)!r}, provider={self.provider!r}, "
            f"convention={self.convention!r}, batch_size={self.batch_size}, threads={self.threads})"
        )
