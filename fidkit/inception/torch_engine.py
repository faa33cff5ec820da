"""The FID network run eagerly in torch: the same computation as the ONNX graph, without onnxruntime.

:class:`TorchFeatureExtractor` has the interface of :class:`fidkit.inception.FeatureExtractor` and computes
the same features: uint8 NHWC images of any size in, float32 ``(B, 2048)`` pool_3 features out, through

1. the TensorFlow 1.x bilinear resize to 299x299, written with the same float32 operations in the same
   order as the graph's (:mod:`fidkit.inception.resize`): index and weight tables from
   :func:`~fidkit.inception.resize.tf_resize_indices` (``src = d * (float32(in) / float32(out))``,
   ``i0 = floor(src)``, ``i1 = min(i0 + 1, in - 1)``, ``w = src - i0``), the width pass
   ``left + (right - left) * w`` on gathered uint8 columns cast to float32, then the height pass the same
   way between the interpolated rows. Each step is one correctly rounded float32 operation in its own
   kernel (eager torch never contracts ``a + b * c`` across kernels into a fused multiply-add), so the
   result is bit for bit the graph's and TensorFlow's;
2. ``(x - 128) * 0.0078125`` and NHWC -> NCHW;
3. :class:`fidkit.inception.network.FIDInceptionV3` loaded strictly from the weights file, float32 whatever
   ``torch.get_default_dtype()`` is, in eval mode, under ``torch.inference_mode()`` and with the caller's
   ``torch.autocast`` turned off (``precision="bf16"`` turns on its own, for the network alone).

That is the ``tf`` convention. The others (:mod:`fidkit.inception.conventions`) resize as the graph does for them:
``Wh @ X @ Ww^T`` on float32 NCHW with the convention's two matrices, the width pass first, then their clip and
normalization.

What differs from the graph is only the float32 summation order inside the convolutions and that BatchNorm
is applied as its own operation (the exported graph folds it into the convolution weights); see
``docs/compatibility.md`` ("The torch engine") for the measured agreement.

TF32: during each call float32 convolutions and products are IEEE float32 (cuDNN's default lets convolutions run
with a 10-bit mantissa), through whichever of torch's two TF32 APIs the torch has, and the caller's settings are
put back afterwards (:func:`fidkit._tf32.float32_mode`). These are process-wide settings: another thread running
torch at the same time computes under them too, and a thread that changes them during a call has its change undone
when the call returns.

Importing this module imports neither torch nor onnxruntime; torch is imported when an extractor is built.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from fidkit._tf32 import float32_mode
from fidkit._validate import as_image_batch, as_image_tensor, check_batch_size
from fidkit.errors import FidkitError, InputError
from fidkit.inception.conventions import DEFAULT_CONVENTION, Convention
from fidkit.inception.conventions import convention as convention_named
from fidkit.inception.providers import parse_device
from fidkit.inception.resize import tf_resize_indices
from fidkit.inception.spec import (
    network_memory_error,
    out_of_memory,
    FEATURE_DIM,
    INPUT_SIZE,
    OUTPUT_DIMS,
    check_dims,
    default_batch_size,
    extractor_metadata,
    extractor_outputs,
)
from fidkit.inception.weights import ResolvedWeights, locate_weights

if TYPE_CHECKING:
    import torch

__all__ = ["TorchFeatureExtractor", "ENGINE", "torch_resize_bilinear"]

logger = logging.getLogger(__name__)

#: The value of ``metadata()["engine"]`` for features computed here.
ENGINE = "torch"
#: Image sizes whose resize tables stay on the device (least recently used dropped first).
_MAX_TABLES = 32


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise FidkitError(
            f"the torch engine needs torch, which cannot be imported here ({exc}); install torch "
            "(pip install torch) or use the default onnxruntime engine (fidkit.inception.FeatureExtractor)"
        ) from exc
    return torch


def _check_device_string(device: Any) -> str:
    """The package's device grammar (:func:`fidkit.inception.providers.parse_device`), less TensorRT."""
    parsed = parse_device(device)
    if parsed.kind == "tensorrt":
        raise InputError(f"device {device!r} is onnxruntime's TensorRT; the torch engine runs on 'cpu' or 'cuda[:N]'")
    return str(parsed) if parsed.kind != "cuda" or ":" not in str(device) else f"cuda:{parsed.index}"


def _resolve_device(torch: Any, device: str) -> torch.device:
    """The torch device for a checked device string; FidkitError where CUDA is asked for and absent."""
    if device == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if device == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if available else torch.device("cpu")
    if not available:
        why = (
            "this torch build has no CUDA support"
            if torch.version.cuda is None
            else f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no usable GPU"
        )
        raise FidkitError(
            f"device {device!r} asked for but torch has no CUDA here: {why}; install a CUDA build of torch on a "
            "machine with an NVIDIA GPU, or use device='cpu'"
        )
    index = torch.cuda.current_device() if device == "cuda" else int(device.split(":", 1)[1])
    count = torch.cuda.device_count()
    if index >= count:
        raise FidkitError(
            f"device {device!r} asked for but torch sees only {count} GPU(s) (cuda:0..cuda:{count - 1}); "
            "pick one of those or set CUDA_VISIBLE_DEVICES"
        )
    return torch.device("cuda", index)


def _provider_name(device: torch.device) -> str:
    return "torch-cpu" if device.type == "cpu" else f"torch-cuda:{device.index}"


def _from_numpy(torch: Any, array: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy`` without its warning about read-only arrays: these tensors are only ever read."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _resize_tables(torch: Any, height: int, width: int, device: torch.device) -> tuple:
    """``(x0, x1, wx, y0, y1, wy)`` on `device`: the tf graph's index and weight tables for one input size."""
    x0, x1, wx = tf_resize_indices(width, INPUT_SIZE)
    y0, y1, wy = tf_resize_indices(height, INPUT_SIZE)
    return (
        torch.from_numpy(x0).to(device),
        torch.from_numpy(x1).to(device),
        torch.from_numpy(wx).to(device).view(1, 1, INPUT_SIZE, 1),
        torch.from_numpy(y0).to(device),
        torch.from_numpy(y1).to(device),
        torch.from_numpy(wy).to(device).view(1, INPUT_SIZE, 1, 1),
    )


def _resize_with_tables(images: torch.Tensor, tables: tuple) -> torch.Tensor:
    x0, x1, wx, y0, y1, wy = tables
    # Width pass: gather uint8 columns (exact), cast, then left + (right - left) * w, one rounding per op.
    left = images.index_select(2, x0).float()
    right = images.index_select(2, x1).float()
    rows = left + (right - left) * wx
    # Height pass between the interpolated rows, the same way.
    top = rows.index_select(1, y0)
    bottom = rows.index_select(1, y1)
    return top + (bottom - top) * wy


def _matrix_tables(torch: Any, chosen: Convention, height: int, width: int, device: torch.device) -> tuple:
    """``(Wh, Ww^T)`` on `device`: a matrix convention's resize for one input size."""
    rows, cols = chosen.resize_matrices(height, width)
    return torch.from_numpy(np.array(rows)).to(device), torch.from_numpy(np.ascontiguousarray(cols.T)).to(device)


def _normalized_nchw(chunk: torch.Tensor, chosen: Convention, tables: tuple) -> torch.Tensor:
    """uint8 NHWC `chunk` -> the network's float32 NCHW input under `chosen`, as the convention's graph computes it."""
    if chosen.name == "tf":
        resized = _resize_with_tables(chunk, tables)
        return ((resized - chosen.offset) * chosen.scale).permute(0, 3, 1, 2)  # channels_last strides
    rows, cols_t = tables
    pixels = chunk.permute(0, 3, 1, 2).float()
    if chosen.input_divisor != 1.0:
        pixels = pixels / chosen.input_divisor
    resized = rows @ (pixels @ cols_t)
    if chosen.clip is not None:
        resized = resized.clamp(chosen.clip[0], chosen.clip[1])
    return (resized - chosen.offset) * chosen.scale


def torch_resize_bilinear(images: torch.Tensor) -> torch.Tensor:
    """Resize uint8 NHWC `images` (a torch tensor, any device) to float32 ``(B, 299, 299, C)`` the TF 1.x way.

    Bit for bit :func:`fidkit.inception.resize.tf_resize_bilinear_numpy` and the ONNX graph's resize.
    """
    import torch

    if images.dtype != torch.uint8 or images.ndim != 4:
        raise InputError(f"images must be a uint8 (B, H, W, C) tensor, got {images.dtype} {tuple(images.shape)}")
    tables = _resize_tables(torch, int(images.shape[1]), int(images.shape[2]), images.device)
    return _resize_with_tables(images, tables)


class TorchFeatureExtractor:
    """Images in, FID features out: the 2015 Inception-v3 run eagerly in torch, on the CPU or a CUDA GPU.

    A drop-in alternative to :class:`fidkit.inception.FeatureExtractor` (same call, attributes and metadata
    keys) that needs torch instead of onnxruntime and keeps images already on the GPU there.

    Parameters
    ----------
    weights : path-like or ResolvedWeights, optional
        The weights file, resolved as for ``FeatureExtractor``
        (:func:`fidkit.inception.weights.locate_weights`) and loaded strictly.
    device : {"auto", "cpu", "cuda", "cuda:N"}
        ``"auto"``: torch's current CUDA device when torch has CUDA, else the CPU. ``"cuda"`` is torch's current
        CUDA device. Anything else is an :class:`~fidkit.errors.InputError`; a CUDA device that torch cannot
        use is a :class:`~fidkit.errors.FidkitError`.
    batch_size : int
        Images per forward pass; larger inputs are split.
    download_progress : bool
        Progress bar on stderr if the weights have to be downloaded.
    convention, dims
        As for :class:`~fidkit.inception.FeatureExtractor`.

    Attributes
    ----------
    weights_path : pathlib.Path
    weights_sha256 : str
    graph_sha256 : str
        Always ``""``: no ONNX graph is involved. The network is defined by the weights (``weights_sha256``),
        the preprocessing by ``resize_mode`` and ``EXPORTER_VERSION``.
    provider : str
        ``"torch-cpu"`` or ``"torch-cuda:N"``: where the network really runs.
    device : str
        The device string asked for.
    feature_dim : int
    convention : str
    resize_mode : str
    batch_size : int
    """

    def __init__(
        self,
        weights: str | os.PathLike | ResolvedWeights | None = None,
        *,
        device: str = "auto",
        batch_size: int | None = None,
        download_progress: bool = True,
        convention: str = DEFAULT_CONVENTION,
        dims: int = FEATURE_DIM,
        precision: str = "exact",
    ) -> None:
        device = _check_device_string(device)
        if precision not in ("exact", "tf32", "bf16"):
            raise InputError(f"the torch engine computes with precision exact, tf32 or bf16, not {precision!r}")
        self._convention = convention_named(convention)
        dims = check_dims(dims)
        if batch_size is not None:
            batch_size = check_batch_size(batch_size)
        torch = _import_torch()
        self._torch = torch
        self._device = _resolve_device(torch, device)
        # A ResolvedWeights from the caller is used as is (not hashed again).
        clock = time.perf_counter()
        #: Where the set-up time went (as FeatureExtractor.setup_seconds): the weights, then the model.
        self.setup_seconds: dict[str, float] = {}
        resolved = locate_weights(weights, progress=download_progress)
        self.setup_seconds["weights"] = time.perf_counter() - clock
        clock = time.perf_counter()
        self.weights_path: Path = resolved.path
        self.weights_sha256: str = resolved.sha256
        self.graph_sha256: str = ""
        #: "exact": float32 with TF32 off; "tf32": TF32 on (CUDA only); "bf16": the network under bfloat16 autocast
        #: (the preprocessing stays float32, the outputs are returned as float32).
        self.precision: str = precision
        if precision == "tf32" and self._device.type != "cuda":
            raise InputError("precision='tf32' is a GPU arithmetic: pass device='cuda'")
        self.feature_dim: int = dims
        self.convention: str = self._convention.name
        self.resize_mode: str = self._convention.resize_mode
        #: Whether the network runs on a GPU.
        self.on_gpu: bool = self._device.type == "cuda"
        self.batch_size: int = batch_size or default_batch_size(self.on_gpu)
        self.device: str = device
        self.provider: str = _provider_name(self._device)

        from fidkit.inception.network import build_network
        from fidkit.inception.weights import load_state_dict

        model = build_network(load_state_dict(resolved.path))  # strict, eval mode
        # On the CPU, oneDNN convolutions are faster in channels_last, and the NHWC -> NCHW permute of the
        # resized images already has channels_last strides, so no layout copy is made. On CUDA the float32
        # cuDNN path is left in the default NCHW layout (channels_last there pays off mainly for half precision;
        # not measured).
        self._channels_last = self._device.type == "cpu"
        memory_format = torch.channels_last if self._channels_last else torch.contiguous_format
        self._model = model.to(device=self._device, memory_format=memory_format).eval()
        for parameter in self._model.parameters():
            parameter.requires_grad_(False)
        self._tables: dict[tuple[int, int], tuple] = {}
        self.setup_seconds["model"] = time.perf_counter() - clock
        logger.info("torch feature extractor on %s (batch %d)", self.provider, self.batch_size)

    # --- input -------------------------------------------------------------------------------------

    def _as_tensor_batch(self, images: Any) -> torch.Tensor:
        """A uint8 ``(B, H, W, 3)`` tensor, from numpy-like input or a torch tensor, where it already is.

        A uint8 NCHW tensor (the package's convention for tensors) is used where it lies (no host round trip
        when it is on this extractor's GPU); host arrays are wrapped without a copy. Each batch_size chunk
        is moved to the device in :meth:`__call__`, so a large host input never has to fit on the GPU at
        once. Everything but tensors goes through :func:`fidkit._validate.as_image_batch`, which accepts and
        refuses exactly what ``FeatureExtractor`` does.
        """
        torch = self._torch
        if isinstance(images, torch.Tensor):
            # The package's rule for tensors (NCHW, uint8), applied where the tensor lies.
            tensor = as_image_tensor(images, "images")
        else:
            tensor = _from_numpy(torch, as_image_batch(images, "images"))
        if tensor.shape[1] < 1 or tensor.shape[2] < 1:
            raise InputError(f"images must have H, W >= 1, got shape {tuple(tensor.shape)}")
        return tensor

    # --- running -----------------------------------------------------------------------------------

    def __call__(self, images: Any) -> NDArray[np.float32]:
        """Return the features (pool_3, or the layer of ``dims``) of a batch of images.

        Parameters
        ----------
        images : array_like or torch.Tensor, uint8, shape (B, H, W, 3), (B, H, W) or (B, H, W, 1)
            Images, all the same size, any size; resized to 299x299 as the graph does. Accepted under the same
            rules as :class:`~fidkit.inception.FeatureExtractor` (:func:`fidkit._validate.as_image_batch`);
            a uint8 torch tensor on this extractor's device is read where it is.

        Returns
        -------
        ndarray, float32, shape (B, feature_dim)
        """
        return self.outputs(images, ("features",))["features"]

    def outputs(self, images: Any, names: tuple[str, ...] = ("features",)) -> dict[str, NDArray[np.float32]]:
        """Several outputs of one forward pass (``"features"``, ``"logits"``, ``"spatial"``), as
        :meth:`fidkit.inception.FeatureExtractor.outputs`; only what is asked for is computed."""
        torch = self._torch
        network_names = extractor_outputs(names, self.feature_dim)
        batch = self._as_tensor_batch(images)
        n_images, height, width = (int(d) for d in batch.shape[:3])
        results = {
            name: np.empty((n_images, OUTPUT_DIMS[output]), dtype=np.float32) for name, output in network_names.items()
        }
        if n_images == 0:
            return results
        tables = self._tables.pop((height, width), None)
        if tables is None:
            if self._convention.name == "tf":
                tables = _resize_tables(torch, height, width, self._device)
            else:
                tables = _matrix_tables(torch, self._convention, height, width, self._device)
        # Most recently used last; a folder of many image sizes keeps only the last few sizes' tables on the
        # device (a matrix convention's are 299 x (H + W) floats, about 1 MB at 500 x 375).
        self._tables[(height, width)] = tables
        while len(self._tables) > _MAX_TABLES:
            self._tables.pop(next(iter(self._tables)))
        hosts = {name: torch.from_numpy(array) for name, array in results.items()}
        # The precision is this extractor's, whatever autocast the caller runs under (a training loop's bf16):
        # autocast is off for the preprocessing and, except in "bf16" (bfloat16 for the network alone), for the
        # network. Features computed under the caller's autocast would be recorded as "exact" and cached as such.
        autocast = (
            torch.autocast(device_type=self._device.type, dtype=torch.bfloat16)
            if self.precision == "bf16"
            else contextlib.nullcontext()
        )
        with (
            torch.inference_mode(),
            torch.autocast(device_type=self._device.type, enabled=False),
            float32_mode(torch, tf32=self.precision == "tf32"),
        ):
            for start in range(0, n_images, self.batch_size):
                stop = min(start + self.batch_size, n_images)
                try:
                    chunk = batch[start:stop].to(self._device)
                    nchw = _normalized_nchw(chunk, self._convention, tables)
                    if not self._channels_last:
                        nchw = nchw.contiguous()
                    with autocast:
                        computed = self._model.outputs(nchw, set(network_names.values()))
                    for name, output in network_names.items():
                        hosts[name][start:stop].copy_(computed[output].float())
                except (RuntimeError, MemoryError) as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
                    if not out_of_memory(exc):
                        raise
                    raise network_memory_error(
                        exc, self.on_gpu, self.batch_size, stop - start, (height, width), self.provider
                    ) from exc
        return results

    def metadata(self) -> dict[str, str]:
        """What produced the features: ``FeatureExtractor.metadata()``'s keys, with ``engine="torch"``.

        ``exporter_version`` names the version of the preprocessing definition (resize and normalization)
        that this engine implements too; ``graph_sha256`` is ``""`` (no graph).
        """
        return extractor_metadata(self, engine=ENGINE)

    def __repr__(self) -> str:
        return (
            f"TorchFeatureExtractor(weights={str(self.weights_path)!r}, provider={self.provider!r}, "
            f"batch_size={self.batch_size})"
        )
