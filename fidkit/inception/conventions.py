"""Preprocessing conventions: how other FID tools turn uint8 RGB into the 2015 Inception's input.

Every tool below feeds the same 2015 Inception weights (pool_3); they differ only in what happens
between the decoded uint8 RGB image and the network's first convolution. A :class:`Convention`
names one tool's steps exactly, in this order::

    x = float32(uint8) / input_divisor          # skipped when the divisor is 1
    x = Wh @ x @ Ww.T                           # per image and channel: the tool's resize to 299x299
    x = clip(x, *clip)                          # only where the tool clips
    x = (x - offset) * scale                    # the tool's normalization, NCHW float32

``tf`` is the exception in the middle step: its graph keeps TensorFlow's own index/lerp arithmetic
(:mod:`fidkit.inception.resize`), which is bit exact; :meth:`Convention.resize_matrices` still
returns its matrices, which agree with it only to float32 rounding. The other conventions' resizes
are linear maps computed here from the tools' published formulas (no torch or PIL at run time),
so the graph can apply them as two matrix products with host-computed matrices.

What each tool does (the versions named; their Python sources as installed, the C kernels of torch
and Pillow from their repositories, every weight checked bit for bit against torch 2.13.0 and Pillow
13.0.0 by tests/test_conventions.py)
-----------------------------------------------------------------------------------------------------
``tf`` (the reference; also torch-fidelity 0.4.0's default and torchmetrics with ``antialias=False``)
    TF 1.x ``ResizeBilinear(align_corners=False)`` on float32 pixel values: ``src = d * in / out``,
    no half-pixel centres, no antialias; then ``(x - 128) * 0.0078125``. torch-fidelity 0.4.0:
    ``torch_fidelity/feature_extractor_inceptionv3.py`` ``FeatureExtractorInceptionV3.forward``
    (uint8 -> float32, ``interpolate_bilinear_2d_like_tensorflow1x(..., align_corners=False)``,
    ``(x - 128) / 128``).

``pytorch-fid`` (pytorch-fid 0.3.0)
    ``pytorch_fid/fid_score.py`` ``ImagePathDataset.__getitem__`` decodes with
    ``Image.open(path).convert('RGB')``; ``get_activations`` applies ``torchvision.transforms.ToTensor``
    (``to_tensor``: uint8 HWC -> CHW, ``.to(float32).div(255)``, so the divide comes BEFORE the
    resize). ``pytorch_fid/inception.py`` ``InceptionV3.forward`` (``resize_input=True``,
    ``normalize_input=True`` by default): ``F.interpolate(x, size=(299, 299), mode='bilinear',
    align_corners=False)`` (no antialias), then ``2 * x - 1``. No clip. torch's kernel
    (``aten/src/ATen/native/UpSample.h`` ``area_pixel_compute_scale``,
    ``area_pixel_compute_source_index``, ``guard_index_and_lambda``,
    ``compute_source_index_and_lambda``; ``cpu/UpSampleKernel.cpp``
    ``HelperInterpLinear::compute_indices_weights``), in float32: ``scale = float(in) / out``,
    ``src = max(scale * (d + 0.5) - 0.5, 0)`` (evaluated in double, stored as float),
    ``i0 = min(floor(src), in - 1)``,
    ``l1 = clamp(src - i0, 0, 1)``, ``i1 = i0 + (i0 < in - 1)``, weights ``1 - l1`` and ``l1``; an
    axis whose size does not change is copied. ``(x - 0.5) * 2`` equals ``2 * x - 1`` bit for bit
    (scaling by 2 commutes with rounding).

``clean`` (clean-fid 0.1.35, mode "clean", the default of ``cleanfid.fid.compute_fid``)
    ``cleanfid/utils.py`` ``ResizeDataset.__getitem__``: ``np.array(Image.open(path).convert('RGB'))``
    (uint8), then ``cleanfid/resize.py`` ``build_resizer("clean")`` = ``make_resizer("PIL", False,
    "bicubic", (299, 299))``: each channel as a float32 PIL ``'F'`` image,
    ``.resize((299, 299), resample=Image.BICUBIC)``, ``np.asarray(...).clip(0, 255)``, no
    quantisation; ``ToTensor`` on that float32 array only transposes (no divide).
    ``cleanfid/features.py`` ``build_feature_extractor("clean")`` uses ``InceptionV3W`` with
    ``resize_inside=False``; ``cleanfid/inception_torchscript.py`` ``InceptionV3W.forward``:
    ``x1 = x - 128; x2 = x1 / 128`` into the 2015 graph's layers (its own resize skipped).
    Pillow (13.0.0; ``src/libImaging/Resample.c`` ``precompute_coeffs``, ``bicubic_filter``,
    ``_ImagingResample{Horizontal,Vertical}_32bpc``, ``ImagingResampleInner``): Keys cubic with
    ``a = -0.5``, support 2 scaled by ``max(in / out, 1)`` (antialias when downsampling), centre
    ``(d + 0.5) * in / out``, taps ``xmin = int(centre - support + 0.5)`` (clamped to 0) up to
    ``int(centre + support + 0.5)`` (clamped to ``in``), weights normalised to sum 1, all in double;
    horizontal pass first (rows stored as float32), then vertical; a pass whose size does not
    change is skipped (``Image.resize`` returns a copy at equal size).

``torchmetrics`` (torchmetrics 1.9.0 ``FrechetInceptionDistance()`` defaults: ``feature=2048``,
``normalize=False``, ``antialias=True``)
    ``torchmetrics/image/fid.py`` ``NoTrainInceptionV3._torch_fidelity_forward``: asserts uint8
    NCHW, ``x.to(torch.float)`` (float64 only after ``set_dtype``), ``F.interpolate(x, size=(299,
    299), mode="bilinear", align_corners=False, antialias=True)``, then ``(x - 128) / 128``. No clip
    (the triangle's weights are never negative). With ``normalize=True`` ``update`` first does
    ``(imgs * 255).byte()`` (truncation, not rounding) on float [0, 1] input; fidkit's uint8 input
    is what that yields. torch's antialiased kernel for float32 (``cpu/UpSampleKernel.cpp``
    ``HelperInterpLinear::aa_filter``, ``HelperInterpBase::_compute_indices_min_size_weights_aa``,
    ``_compute_index_ranges_weights``): ``scale = float(in) / out``, ``support = scale`` when
    ``scale >= 1`` else 1, centre ``scale * (d + 0.5)``, taps as Pillow's, triangle
    ``max(1 - |t|, 0)`` at ``t = (j + xmin - centre + 0.5) / max(scale, 1)``, normalised, in float32;
    width pass first, then height; an axis whose size does not change is skipped.

Each matrix row is the tool's own weights bit for bit (float32 for torch; Pillow's double weights
rounded once to float32, which is what an 'F' image stores). Applied as two products they agree with
each tool to a few float32 ulps of the normalized values (measured: at most 2.4e-7 over the sizes in
tests/test_conventions.py), since only the order of the float32 roundings differs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fidkit._validate import is_count
from fidkit.errors import InputError
from fidkit.inception.resize import tf_resize_indices
from fidkit.inception.spec import INPUT_SIZE, RESIZE_MODE

__all__ = [
    "CONVENTIONS",
    "DEFAULT_CONVENTION",
    "Convention",
    "convention",
    "preprocess_reference",
    "preprocess_with_matrices",
]

#: Every convention's name, the default first.
CONVENTIONS: tuple[str, ...] = ("tf", "pytorch-fid", "clean", "torchmetrics")
#: The TensorFlow reference's preprocessing: what FID has meant since 2017, and fidkit's default.
DEFAULT_CONVENTION = "tf"

# The axis cache holds one (out, in) float32 matrix per (kind, in, out), the pair cache references
# to two of them, so at most 64 + 2 * 64 matrices stay alive: 0.3 MB each for a 256-pixel side, 4.9 MB
# for 4096. A dataset's few sizes always hit; a folder of many sizes recomputes (milliseconds each).
_AXIS_CACHE = 64
_PAIR_CACHE = 64


# --------------------------------------------------------------------------------------------
# One axis of each resize: the (out, in) matrix whose row d holds output d's weights.
# --------------------------------------------------------------------------------------------


def _tf_axis(in_size: int, out_size: int) -> NDArray[np.float32]:
    """TF 1.x asymmetric bilinear: ``a + (b - a) * w`` is ``(1 - w) * a + w * b``."""
    i0, i1, w = tf_resize_indices(in_size, out_size)
    rows = np.arange(out_size)
    matrix = np.zeros((out_size, in_size), dtype=np.float32)
    np.add.at(matrix, (rows, i0), np.float32(1) - w)
    np.add.at(matrix, (rows, i1), w)
    return matrix


def _torch_bilinear_axis(in_size: int, out_size: int) -> NDArray[np.float32]:
    """torch ``F.interpolate(mode="bilinear", align_corners=False)``, no antialias, float32 input."""
    if in_size == out_size:  # compute_source_index_and_lambda: "scale_factor = 1, simply copy"
        return np.eye(out_size, dtype=np.float32)
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)  # area_pixel_compute_scale<float>
    rows = np.arange(out_size)
    # area_pixel_compute_source_index: `scale * (dst_index + 0.5) - 0.5` with double literals, stored as float
    src = (float(scale) * (rows.astype(np.float64) + 0.5) - 0.5).astype(f32)
    src = np.where(src < 0, f32(0), src).astype(f32)  # clamped at 0 for linear modes
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)  # guard_index_and_lambda
    lambda1 = np.clip(src - i0.astype(f32), f32(0), f32(1)).astype(f32)
    i1 = i0 + (i0 < in_size - 1)
    matrix = np.zeros((out_size, in_size), dtype=np.float32)
    np.add.at(matrix, (rows, i0), f32(1) - lambda1)
    np.add.at(matrix, (rows, i1), lambda1)
    return matrix


def _normalised_rows(
    in_size: int, out_size: int, centre: NDArray, support: float, weight: Callable[[NDArray], NDArray], dtype: type
) -> NDArray:
    """Pillow's (and torch's antialiased) taps: a filter around each centre, clipped to the image and
    normalised to sum 1, accumulated left to right in `dtype` as both tools do."""
    n_taps = int(math.ceil(support)) * 2 + 1
    # (int) casts truncate toward zero; the lower bound is then clamped to 0.
    first = np.maximum(np.trunc((centre - dtype(support)).astype(np.float64) + 0.5).astype(np.int64), 0)
    last = np.minimum(np.trunc((centre + dtype(support)).astype(np.float64) + 0.5).astype(np.int64), in_size)
    count = np.clip(last - first, 0, n_taps)
    taps = np.arange(n_taps)
    used = taps[None, :] < count[:, None]
    w = np.where(used, weight((first[:, None] + taps[None, :]).astype(dtype) - centre[:, None]), dtype(0))
    total = np.zeros(out_size, dtype=dtype)
    for j in range(n_taps):  # sequential sum, as the C loops
        total = (total + w[:, j]).astype(dtype)
    w = np.where(total[:, None] != 0, w / np.where(total == 0, dtype(1), total)[:, None], w).astype(dtype)
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_size)[:, None], w.shape)
    cols = np.minimum(first[:, None] + taps[None, :], in_size - 1)
    np.add.at(matrix, (rows[used], cols[used]), w[used].astype(np.float64))
    return matrix


def _torch_bilinear_antialias_axis(in_size: int, out_size: int) -> NDArray[np.float32]:
    """torch ``F.interpolate(mode="bilinear", align_corners=False, antialias=True)`` on float32."""
    if in_size == out_size:  # separable_upsample_generic_Nd_kernel_impl skips an unchanged axis
        return np.eye(out_size, dtype=np.float32)
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    # Mixed float/double promotions of _compute_indices_min_size_weights_aa with scalar_t = float.
    support = f32((2 * 0.5) * float(scale)) if scale >= 1.0 else f32(1.0)
    invscale = f32(1.0 / float(scale)) if scale >= 1.0 else f32(1.0)
    centre = (float(scale) * (np.arange(out_size, dtype=np.float64) + 0.5)).astype(f32)

    def triangle(offset: NDArray) -> NDArray:  # offset = (j + xmin) - centre, in float32
        t = np.abs(((offset.astype(np.float64) + 0.5) * float(invscale)).astype(f32))
        return np.where(t < 1.0, (1.0 - t.astype(np.float64)).astype(f32), f32(0))

    return _normalised_rows(in_size, out_size, centre, float(support), triangle, f32).astype(np.float32)


def _pil_bicubic_axis(in_size: int, out_size: int) -> NDArray[np.float32]:
    """Pillow ``Image.resize(resample=BICUBIC)``: Keys cubic a = -0.5, antialiased, in double."""
    if in_size == out_size:  # Image.resize copies; ImagingResampleInner skips an unchanged pass
        return np.eye(out_size, dtype=np.float32)
    scale = float(np.float32(in_size)) / out_size  # box floats (0, in), (in1 - in0) / outSize
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    inv_filterscale = 1.0 / filterscale
    centre = (np.arange(out_size, dtype=np.float64) + 0.5) * scale

    def keys_cubic(offset: NDArray) -> NDArray:
        a = -0.5
        x = np.abs((offset + 0.5) * inv_filterscale)
        near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
        far = (((x - 5) * x + 8) * x - 4) * a
        return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))

    return _normalised_rows(in_size, out_size, centre, support, keys_cubic, np.float64).astype(np.float32)


_AXES: dict[str, Callable[[int, int], NDArray[np.float32]]] = {
    "tf": _tf_axis,
    "pytorch-fid": _torch_bilinear_axis,
    "clean": _pil_bicubic_axis,
    "torchmetrics": _torch_bilinear_antialias_axis,
}


@functools.lru_cache(maxsize=_AXIS_CACHE)
def _axis_matrix(name: str, in_size: int, out_size: int) -> NDArray[np.float32]:
    matrix = np.ascontiguousarray(_AXES[name](in_size, out_size), dtype=np.float32)
    matrix.setflags(write=False)  # cached and shared: nobody may change it
    return matrix


@functools.lru_cache(maxsize=_PAIR_CACHE)
def _matrices(name: str, height: int, width: int, size: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    return _axis_matrix(name, height, size), _axis_matrix(name, width, size)


def _check_side(value: object, what: str) -> int:
    if not is_count(value):
        raise InputError(f"resize_matrices: {what} must be a positive integer, got {value!r}; pass the image's pixels")
    return int(value)


# --------------------------------------------------------------------------------------------
# The conventions.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Convention:
    """One tool's preprocessing between decoded uint8 RGB and the 2015 Inception's input.

    Attributes
    ----------
    name : str
        The convention's name, one of :data:`CONVENTIONS`.
    tool : str
        Which tool, version and call it reproduces.
    resize_mode : str
        The resize as recorded in metadata; ``"tf1-bilinear-asymmetric"`` for ``tf``.
    input_divisor : float
        uint8 values cast to float32 are divided by this before the resize (255 for pytorch-fid's
        ``ToTensor``, else 1).
    clip : tuple of float or None
        Bounds the resized values are clamped to (clean-fid's ``clip(0, 255)``); None if the tool
        does not clamp.
    offset, scale : float
        The normalization ``(resized - offset) * scale``.
    """

    name: str
    tool: str
    resize_mode: str
    input_divisor: float
    clip: tuple[float, float] | None
    offset: float
    scale: float

    @property
    def matrix_resize(self) -> bool:
        """Whether the graph resizes with :meth:`resize_matrices`; False for ``tf``, whose graph keeps
        TensorFlow's index/lerp arithmetic bit for bit."""
        return self.resize_mode != RESIZE_MODE

    def resize_matrices(
        self, height: int, width: int, size: int = INPUT_SIZE
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """``(Wh, Ww)``, float32 of shapes ``(size, height)`` and ``(size, width)``, such that
        ``Wh @ X @ Ww.T`` is this tool's resize of one channel ``X`` of shape ``(height, width)``.

        Cached per (convention, height, width, size); the arrays are read-only and shared. For
        ``tf`` these are TensorFlow's interpolation weights, equal to its resize only to float32
        rounding (the graph does not use them; see :attr:`matrix_resize`).

        Raises
        ------
        InputError
            If a side is not a positive integer.
        """
        height = _check_side(height, "height")
        width = _check_side(width, "width")
        size = _check_side(size, "size")
        return _matrices(self.name, height, width, size)


_TABLE: dict[str, Convention] = {
    "tf": Convention(
        name="tf",
        tool="TensorFlow FID reference (TTUR fid.py, 2015 Inception graph); also torch-fidelity 0.4.0 default",
        resize_mode=RESIZE_MODE,
        input_divisor=1.0,
        clip=None,
        offset=128.0,
        scale=0.0078125,
    ),
    "pytorch-fid": Convention(
        name="pytorch-fid",
        tool="pytorch-fid 0.3.0: ToTensor (/255), InceptionV3.forward bilinear interpolate, 2 * x - 1",
        resize_mode="torch-bilinear-half-pixel",
        input_divisor=255.0,
        clip=None,
        offset=0.5,
        scale=2.0,
    ),
    "clean": Convention(
        name="clean",
        tool='clean-fid 0.1.35 mode "clean": PIL bicubic on float32 channels, clip(0, 255), (x - 128) / 128',
        resize_mode="pil-bicubic-antialias-float",
        input_divisor=1.0,
        clip=(0.0, 255.0),
        offset=128.0,
        scale=0.0078125,
    ),
    "torchmetrics": Convention(
        name="torchmetrics",
        tool="torchmetrics 1.9.0 FrechetInceptionDistance default: antialiased bilinear interpolate, (x - 128) / 128",
        resize_mode="torch-bilinear-antialias",
        input_divisor=1.0,
        clip=None,
        offset=128.0,
        scale=0.0078125,
    ),
}
assert tuple(_TABLE) == CONVENTIONS


def convention(name: str) -> Convention:
    """The :class:`Convention` called `name`.

    Raises
    ------
    InputError
        If `name` is not one of :data:`CONVENTIONS`; the message lists them.
    """
    try:
        return _TABLE[name]
    except (KeyError, TypeError):
        valid = ", ".join(repr(n) for n in CONVENTIONS)
        raise InputError(f"unknown preprocessing convention {name!r}; use one of {valid}") from None


# --------------------------------------------------------------------------------------------
# numpy references.
# --------------------------------------------------------------------------------------------


def _check_images(images: object) -> NDArray[np.uint8]:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise InputError(f"preprocessing reference: expected uint8 images of shape (B, H, W, 3), got {got}")
    if images.shape[1] < 1 or images.shape[2] < 1:
        raise InputError(f"preprocessing reference: images of shape {images.shape} have no pixels")
    return images


def _normalize(resized: NDArray[np.float32], conv: Convention) -> NDArray[np.float32]:
    """Clip (where the tool clips), then ``(x - offset) * scale`` in float32."""
    if conv.clip is not None:
        resized = np.clip(resized, np.float32(conv.clip[0]), np.float32(conv.clip[1]))
    return ((resized - np.float32(conv.offset)) * np.float32(conv.scale)).astype(np.float32, copy=False)


def preprocess_with_matrices(
    images: NDArray[np.uint8], conv: Convention, wh: NDArray[np.floating], ww: NDArray[np.floating]
) -> NDArray[np.float32]:
    """The separable pipeline with the given resize matrices: uint8 ``(B, H, W, 3)`` -> float32
    ``(B, 3, size, size)``.

    What the graph computes for a matrix convention: divide, ``wh @ X @ ww.T`` per image and
    channel, clip, normalize. The products run in float64 on the given (float32) weights and are
    rounded once, so the result does not depend on a BLAS's summation order.
    """
    images = _check_images(images)
    wh = np.asarray(wh, dtype=np.float64)
    ww = np.asarray(ww, dtype=np.float64)
    if wh.ndim != 2 or ww.ndim != 2 or wh.shape[1] != images.shape[1] or ww.shape[1] != images.shape[2]:
        raise InputError(
            f"preprocess_with_matrices: matrices {wh.shape} and {ww.shape} do not fit images of "
            f"{images.shape[1]}x{images.shape[2]}; use convention(...).resize_matrices(height, width)"
        )
    x = images.transpose(0, 3, 1, 2).astype(np.float32)
    if conv.input_divisor != 1.0:
        x = x / np.float32(conv.input_divisor)  # correctly rounded float32, as torch's div
    resized = (wh @ x.astype(np.float64) @ ww.T).astype(np.float32)
    return np.ascontiguousarray(_normalize(resized, conv))


def _tf_resize(images: NDArray[np.uint8], size: int) -> NDArray[np.float32]:
    """TF 1.x bilinear in float32, the arithmetic of the graph and of
    :func:`fidkit.testing.tf_resize_bilinear_numpy` (which this unit may not import: it sits above)."""
    x = images.astype(np.float32)
    x0, x1, wx = tf_resize_indices(images.shape[2], size)
    y0, y1, wy = tf_resize_indices(images.shape[1], size)
    left, right = x[:, :, x0, :], x[:, :, x1, :]
    rows = left + (right - left) * wx[None, None, :, None]  # width first, as TF's compute_lerp
    top, bottom = rows[:, y0, :, :], rows[:, y1, :, :]
    return (top + (bottom - top) * wy[None, :, None, None]).astype(np.float32, copy=False)


def preprocess_reference(images: NDArray[np.uint8], name: str, size: int = INPUT_SIZE) -> NDArray[np.float32]:
    """numpy reference of convention `name`'s whole preprocessing.

    Parameters
    ----------
    images : ndarray, uint8, shape (B, H, W, 3)
        Decoded RGB images.
    name : str
        One of :data:`CONVENTIONS`.
    size : int
        Output side (299 for the network).

    Returns
    -------
    ndarray, float32, shape (B, 3, size, size)
        The normalized network input. For ``tf`` the TF 1.x resize in float32 then
        ``(x - 128) * 0.0078125``, bit for bit the graph's; for the others
        :func:`preprocess_with_matrices` with :meth:`Convention.resize_matrices`.

    Raises
    ------
    InputError
        For an unknown convention, a bad size, or images that are not uint8 ``(B, H, W, 3)``.
    """
    conv = convention(name)
    images = _check_images(images)
    size = _check_side(size, "size")
    if not conv.matrix_resize:
        resized = _tf_resize(images, size).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(_normalize(resized, conv))
    wh, ww = conv.resize_matrices(images.shape[1], images.shape[2], size)
    return preprocess_with_matrices(images, conv, wh, ww)
