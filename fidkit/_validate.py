"""Argument and array checks shared by every layer: the ground floor, like :mod:`fidkit.errors`.

Sources, the network and the statistics all take batch sizes, subsets, feature arrays and image arrays;
each rule lives here once, so that the same input is accepted or refused with the same message
wherever it enters. Only numpy is imported (torch only to convert an object that is a torch tensor).
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import Any

import numpy as np

from fidkit._argtypes import SEED_LIMIT
from fidkit.errors import InputError

__all__ = [
    "check_batch_size",
    "check_limit_seed",
    "check_features",
    "as_numpy",
    "check_image_array",
    "as_image_batch",
    "as_image_array",
    "check_value_range",
    "is_torch_tensor",
    "as_image_tensor",
    "unit_range_hint",
    "uint8_range_hint",
    "check_extracted",
    "is_float_dtype",
]


def is_count(value: Any, minimum: int = 1) -> bool:
    """Whether `value` is an integer (any :class:`numbers.Integral`, numpy's included; never a bool, which Python
    counts as one) of at least `minimum`: the test behind every count fidkit takes (batch sizes, widths, seeds)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= minimum


def check_batch_size(batch_size: Any) -> int:
    """Return `batch_size` as an int >= 1, or raise :class:`~fidkit.errors.InputError`."""
    if not is_count(batch_size):
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def check_limit_seed(limit: Any, seed: Any) -> tuple[int | None, int | None]:
    """Validate `limit` (positive int or None) and `seed` (an int with ``0 <= seed < 2**32``, as the CLI's
    ``--seed`` takes, or None)."""
    if limit is not None and (
        not is_count(limit)
    ):
        raise InputError(f"limit must be a positive integer or None, got {limit!r}")
    if seed is not None and (not is_count(seed, 0) or int(seed) >= SEED_LIMIT):
        raise InputError(f"seed must be an integer with 0 <= seed < 2**32, or None, got {seed!r}")
    return (None if limit is None else int(limit)), (None if seed is None else int(seed))


def check_workers(workers: Any) -> int | None:
    """Validate `workers` (decoding processes: a non-negative int, numpy integers included, bool refused, or None
    for the machine's default): the same rule as ``limit`` and ``seed``."""
    if workers is None:
        return None
    if not is_count(workers, 0):
        raise InputError(f"workers must be a non-negative integer or None, got {workers!r}")
    return int(workers)


def _extension_float(dtype: Any) -> bool:
    """Whether `dtype` is one of ml_dtypes' floating-point types (``bfloat16``, ``float8_*``, ...), what JAX and
    TensorFlow arrays hold: numpy does not count them as ``np.floating``. Never imports ml_dtypes."""
    return (
        isinstance(dtype, np.dtype)
        and not np.issubdtype(dtype, np.floating)
        and type(dtype).__module__.split(".")[0] == "ml_dtypes"
        and dtype.name.startswith(("bfloat", "float"))
    )


def is_float_dtype(dtype: Any) -> bool:
    """Whether `dtype` (a numpy dtype) holds floating-point numbers: numpy's own floats and ml_dtypes' ones."""
    return np.issubdtype(dtype, np.floating) or _extension_float(dtype)


def _standard_floats(array: np.ndarray) -> np.ndarray:
    """`array` with an ml_dtypes float type (:func:`_extension_float`) as float32, exactly (each of them is at most
    16 bits with at most float32's exponent range, so every value is a float32); any other array as it is."""
    return array.astype(np.float32) if _extension_float(array.dtype) else array


def check_features(features: Any, name: str) -> np.ndarray:
    """Return `features` as a 2-D float array (float32 kept, ml_dtypes' bfloat16 and float8 types to float32
    exactly, other types to float64).

    Raises
    ------
    InputError
        Not numeric, not 2-D, zero columns, or NaN/inf (naming the first bad row).
    """
    try:
        array = np.asarray(features)
    except Exception as exc:  # ragged lists and the like
        raise InputError(f"{name} cannot be read as an (N, dim) array ({exc}); pass a 2-D numeric array") from exc
    array = _standard_floats(array)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise InputError(f"{name} has dtype {array.dtype}; pass real-valued features (float32 or float64)")
    if array.ndim != 2:
        raise InputError(
            f"{name} has shape {array.shape}; features must be 2-D (N images, dim features), "
            "e.g. reshape a single vector with x[None, :]"
        )
    if array.shape[1] < 1:
        raise InputError(f"{name} has shape {array.shape}: zero feature dimensions")
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    if not np.isfinite(array).all():
        bad_rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
        raise InputError(
            f"{name} contains NaN or inf in {bad_rows.size} row(s) (first: row {int(bad_rows[0])}); "
            "the feature extractor produced invalid values: check the inputs of those images"
        )
    return array


def as_numpy(value: Any, what: str) -> np.ndarray:
    """``numpy.asarray(value)``, with an :class:`~fidkit.errors.InputError` naming `what` if it fails.

    The usual failure is a CUDA tensor, which refuses ``__array__``; the message says how to convert.
    """
    try:
        return np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - whatever __array__ raises
        raise InputError(
            f"{what}: cannot be read as a numpy array ({exc}); pass numpy arrays (for a torch "
            "tensor: t.cpu().numpy())"
        ) from exc


_FLOAT_ADVICE = (
    "floating-point images need their value range: pass value_range=(lo, hi), e.g. (0, 1) or (-1, 1), where "
    "the call takes one (fidkit.FID), or convert to uint8 first as an 8-bit PNG would: "
    "((x - lo) / (hi - lo) * 255).round().clip(0, 255).astype(np.uint8) (torch: .clamp(0, 255).to(torch.uint8))"
)
_OTHER_DTYPE_ADVICE = (
    "convert it to uint8 yourself; fidkit rescales only floating-point images with a stated value_range, "
    "because the range of other dtypes is ambiguous"
)


def _dtype_problem(dtype: Any, is_float: bool, what: str) -> InputError:
    advice = _FLOAT_ADVICE if is_float else _OTHER_DTYPE_ADVICE
    return InputError(f"{what}: images must be uint8, got dtype {dtype}; {advice}")


#: A 3-D array whose last axis is at most this is one (H, W, C) image, never (N, H, W) grayscale: C is the
#: channel count of an L, LA, RGB or RGBA image (PIL's modes, what numpy.asarray(Image.open(f)) gives), and
#: grayscale images at most 4 pixels wide are implausible for a network that resizes them to 299 x 299. Such a
#: batch, if really meant, has an unambiguous spelling: (N, H, W, 1).
_MAX_CHANNELS = 4
#: What a (H, W, C) image of C channels is, and how to make it a batch fidkit reads (alpha dropped).
_SINGLE_IMAGE = {
    1: ("grayscale", "x[None]"),
    2: ("LA: gray and alpha", "x[None, ..., :1]: an LA image, its alpha channel dropped"),
    3: ("RGB", "x[None]"),
    4: ("RGBA", "x[None, ..., :3]: an RGBA image, its alpha channel dropped"),
}


def _check_layout_nhwc(shape: tuple[int, ...], what: str) -> None:
    """Refuse a shape that is not a channel-last batch (numpy arrays are NHWC by convention)."""
    if len(shape) == 4 and shape[3] in (1, 3):
        return
    if len(shape) == 3 and 1 <= shape[2] <= _MAX_CHANNELS:
        # One (H, W, C) image, which would otherwise be read as H grayscale images C pixels wide.
        fix = _SINGLE_IMAGE[shape[2]][1]
        raise InputError(
            f"{what}: shape {shape} looks like a single (H, W, {shape[2]}) image; add a batch axis "
            f"({fix}) or pass (N, H, W, 3) RGB; a 3-D array is taken as (N, H, W) grayscale images only when W > "
            f"{_MAX_CHANNELS} (grayscale images {_MAX_CHANNELS} or fewer pixels wide: pass them as (N, H, W, 1))"
        )
    if len(shape) == 3:
        return
    if len(shape) == 4 and shape[1] in (1, 3):
        raise InputError(
            f"{what}: shape {shape} looks channel-first (N, C, H, W); numpy arrays are taken as channel-last "
            "(N, H, W, C): pass x.transpose(0, 2, 3, 1) (a torch tensor would be taken as (N, C, H, W))"
        )
    if len(shape) == 4 and shape[3] in (2, 4):
        keep = ":1" if shape[3] == 2 else ":3"
        raise InputError(
            f"{what}: shape {shape} is not a batch of images fidkit reads ((N, H, W, 3) RGB or (N, H, W, 1) "
            f"grayscale): it looks like {_SINGLE_IMAGE[shape[3]][0]} images; drop the alpha channel with x[..., {keep}]"
        )
    raise InputError(
        f"{what}: shape {shape} is not a batch of images; expected (N, H, W, 3) RGB or (N, H, W) grayscale"
    )


def _check_layout_nchw(shape: tuple[int, ...], what: str) -> None:
    """Refuse a shape that is not a channel-first batch (torch tensors are NCHW by convention)."""
    if len(shape) == 4 and shape[1] in (1, 3):
        return
    if len(shape) == 4 and shape[3] in (1, 3):
        raise InputError(
            f"{what}: tensor shape {shape} looks channel-last (N, H, W, C); torch tensors are taken as "
            "channel-first (N, C, H, W), the torch convention: pass x.permute(0, 3, 1, 2) (a numpy array would "
            "be taken as (N, H, W, C))"
        )
    if len(shape) == 4 and shape[1] in (2, 4):
        keep = ":1" if shape[1] == 2 else ":3"
        raise InputError(
            f"{what}: tensor shape {shape} is not a batch of images fidkit reads ((N, 3, H, W) RGB or (N, 1, H, W) "
            f"grayscale): it looks like {_SINGLE_IMAGE[shape[1]][0]} images; drop the alpha channel with x[:, {keep}]"
        )
    if len(shape) == 3:
        raise InputError(
            f"{what}: tensor shape {shape} has 3 axes; torch tensors are taken as (N, C, H, W) with C = 1 or 3: "
            "add the channel axis of grayscale images with x[:, None], or the batch axis of one (C, H, W) image "
            "with x[None]"
        )
    raise InputError(
        f"{what}: tensor shape {shape} is not a batch of images; expected (N, 3, H, W) RGB or (N, 1, H, W) "
        "grayscale (torch tensors are channel-first)"
    )


def check_image_array(dtype: np.dtype, shape: tuple[int, ...], what: str) -> None:
    """Refuse a dtype or shape that is not a batch of channel-last uint8 images, without reading pixels.

    Raises
    ------
    InputError
        Not uint8 (with how to convert), or a shape that is not a batch of images (channel-first
        batches and single images get a specific hint). The message quotes `shape` as given.
    """
    shape = tuple(int(d) for d in shape)
    if dtype != np.uint8 and len(shape) == 2 and is_float_dtype(dtype):
        # (N, dim) floats are feature rows (clean-fid's saved "feats", a network's output), not images.
        raise InputError(
            f"{what}: a 2-D {dtype} array {shape} looks like feature rows, not images ((N, H, W, 3) uint8): compare "
            "features with fidkit.fid_from_arrays(a, b), or wrap them as fidkit.Features(rows) (a features file: "
            "fidkit.Features(rows).save('features.npz'))"
        )
    if dtype != np.uint8:
        raise _dtype_problem(dtype, is_float_dtype(dtype), what)
    _check_layout_nhwc(shape, what)
    _check_sides(shape[1], shape[2], shape, what)


def _check_sides(height: int, width: int, shape: tuple[int, ...], what: str) -> None:
    """Refuse images without pixels: no network can read them, and no file could hold them."""
    if height < 1 or width < 1:
        raise InputError(f"{what}: shape {shape} holds images {height} x {width} pixels; images must have H, W >= 1")


# A quantization step (hi - lo) / 255 must span at least this many float64 spacings at the range's endpoints:
# (x - lo) is then computed to within 1/2048 of a step, so which of the 256 levels a value rounds to is decided
# by the value, not by round-off of the arithmetic.
_MIN_STEP_ULPS = 1024


def check_value_range(value_range: Any) -> tuple[float, float] | None:
    """Return `value_range` as ``(lo, hi)`` floats (None stays None), or raise InputError.

    Besides finite bounds with ``lo < hi``, the quantization ``(x - lo) / (hi - lo) * 255`` must be computable:
    the span ``hi - lo`` must not overflow float64 (``(-1e308, 1e308)`` would turn every image into 0), and
    one quantization step must be a normal float64 far above the spacing of floats at the bounds (a span of
    ``1e-320``, or ``(1e20, 1e20 + 1)``, cannot be resolved into 256 levels).
    """
    if value_range is None:
        return None
    usage = f"value_range must be a pair (lo, hi) of numbers such as (0, 1) or (-1, 1), got {value_range!r}"
    if isinstance(value_range, (str, bytes)):
        raise InputError(usage)
    try:
        bounds = list(value_range)
    except TypeError as exc:
        raise InputError(usage) from exc
    if len(bounds) != 2 or any(isinstance(v, (str, bytes, bool, np.bool_)) for v in bounds):
        raise InputError(usage)
    try:
        lo, hi = (float(v) for v in bounds)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(usage) from exc
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InputError(f"value_range must be finite with lo < hi, got {value_range!r}")
    span = hi - lo
    if not math.isfinite(span):
        raise InputError(
            f"value_range=({lo:g}, {hi:g}): its span hi - lo overflows float64 (beyond {sys.float_info.max:.3g}), "
            "so every image would quantize to 0; pass the range the images really use"
        )
    step = span / 255
    resolution = _MIN_STEP_ULPS * max(math.ulp(lo), math.ulp(hi))
    if step / 2 < sys.float_info.min or step < resolution:
        raise InputError(
            f"value_range=({lo:g}, {hi:g}): one quantization step (hi - lo) / 255 = {step:.3g} is too small to "
            f"resolve in float64 at these magnitudes (at least {max(resolution, 2 * sys.float_info.min):.3g} is "
            "needed); images that vary this little cannot be quantized to 256 levels: pass the range the images "
            "really use, or rescale them first"
        )
    return lo, hi


def is_torch_tensor(value: Any) -> bool:
    """True for a ``torch.Tensor``, a subclass defined anywhere included (a user's, MONAI's ``MetaTensor``).

    Never imports torch: an object can be a tensor only once torch is imported, so ``sys.modules`` is asked.
    """
    torch = sys.modules.get("torch")
    tensor_type = getattr(torch, "Tensor", None)  # None while torch is still being imported
    return isinstance(tensor_type, type) and isinstance(value, tensor_type)


def _out_of_range(low: float, high: float, value_range: tuple[float, float], what: str) -> InputError:
    lo, hi = value_range
    hint = ""
    if value_range == (0.0, 1.0) and low < 0.0:
        hint = " (images in [-1, 1]? pass value_range=(-1, 1))"
    elif high > hi and high <= 255.5:
        hint = " (images in [0, 255]? pass value_range=(0, 255), or convert them to uint8)"
    return InputError(
        f"{what}: values span [{low:.6g}, {high:.6g}], outside value_range=({lo:g}, {hi:g}) by more than half a "
        f"quantization step ({0.5 / 255 * (hi - lo):.3g}){hint}; fidkit never clips images: pass the range the "
        "images really use"
    )


def unit_range_hint(images: Any, value_range: tuple[float, float], what: str) -> str | None:
    """The warning for floating-point images in [0, 1] declared a range they would quantize badly in; else None.

    The opposite mistakes to the one :func:`_out_of_range` hints at: nothing is out of range, so nothing is
    refused, but the levels are wrong. Two ranges are looked at:

    - 255 wide or more, such as ``(0, 255)``: every image quantizes to 1 or 2 of the 256 levels;
    - one that reaches below 0 by a quarter of its width or more and holds [0, 1], such as ``(-1, 1)``: black
      becomes mid-gray, every image quantizes to the upper levels only (128 to 255 for ``(-1, 1)``). Images in
      such a range that are all at or above 0, in a whole batch, would have no pixel darker than mid-gray: not
      what images look like, but exactly what [0, 1] images (``sigmoid``, ``ToTensor()``) look like.

    Only floating-point numpy arrays and torch tensors are looked at (uint8 is used as it is, whatever the
    range), and not a constant batch (all zeros is a plausible image in any range). Call it on images
    :func:`as_image_batch` accepted (no NaN).
    """
    lo, hi = value_range
    too_wide = hi - lo >= 255 and lo <= 0.0 and hi >= 1.0
    reaches_below_zero = not too_wide and lo < 0.0 and hi >= 1.0 and -lo >= (hi - lo) / 4
    if not (too_wide or reaches_below_zero):
        return None
    if is_torch_tensor(images):
        floating = images.is_floating_point() and images.numel() > 0
    else:
        floating = isinstance(images, np.ndarray) and is_float_dtype(images.dtype) and images.size > 0
    if not floating:
        return None
    if not is_torch_tensor(images):
        images = _standard_floats(images)
    low, high = float(images.min()), float(images.max())
    if not (0.0 <= low < high <= 1.0):
        return None
    first = int(round((low - lo) / (hi - lo) * 255))
    last = int(round((high - lo) / (hi - lo) * 255))
    if too_wide:
        effect = f"quantizes them to {last - first + 1} of the 256 levels"
    else:
        effect = (
            f"quantizes them to levels {first}..{last} of 0..255 (0, black in [0, 1], becomes level "
            f"{int(round(-lo / (hi - lo) * 255))}: no image would be darker than that)"
        )
    return (
        f"{what}: floating-point values span [{low:.6g}, {high:.6g}], inside [0, 1]: the images look like [0, 1] "
        f"images, but value_range=({lo:g}, {hi:g}) {effect}; pass value_range=(0, 1) (said once per metric)"
    )


def uint8_range_hint(images: Any, value_range: tuple[float, float], what: str) -> str | None:
    """The warning for uint8 images whose values all lie in a `value_range` other than ``(0, 255)``; else None.

    uint8 images are used as they are, as 0..255 pixels: the range applies to floating-point images only. That is
    right for 8-bit pixels fed beside floating-point ones (they reach beyond a range such as ``(-1, 1)``), but
    silently wrong for uint8 images that hold values of the declared range (``(x > 0.5).to(torch.uint8)`` under
    ``(0, 1)``: levels 0 and 1 of 255, nearly black, where values in the range would be levels 0 and 255); the
    message names both level spans, which differ under every range but ``(0, 255)``. Those are told apart by the
    values: a batch with every value in ``[lo, hi]`` and not all equal (a constant image is plausible in any range)
    is warned about, with how to pass such images as floats. The mirror of :func:`unit_range_hint`. Reads the
    minimum and maximum.
    """
    lo, hi = value_range
    if (lo, hi) == (0.0, 255.0):
        return None
    if is_torch_tensor(images):
        import torch

        uint8 = images.dtype == torch.uint8 and images.numel() > 0
    else:
        uint8 = isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.size > 0
    if not uint8:
        return None
    low, high = int(images.min()), int(images.max())
    if not (lo <= low < high <= hi):
        return None
    first, last = (int(round((v - lo) / (hi - lo) * 255)) for v in (low, high))
    return (
        f"{what}: uint8 values span [{low}, {high}], inside value_range=({lo:g}, {hi:g}), but uint8 images are "
        f"used as they are, as 0..255 pixels (levels {low}..{high}, where values of the range would quantize to "
        f"levels {first}..{last}): value_range applies to floating-point images only; if these hold values in "
        f"({lo:g}, {hi:g}), pass them as floats (torch: "
        "x.float(), numpy: x.astype(np.float32)), or scale them to 0..255 (said once per metric)"
    )


def check_extracted(features: Any, n_images: int, extractor: Any) -> None:
    """Refuse features that are not ``(n_images, feature_dim)`` rows, naming the extractor that returned them.

    The Extractor protocol (:mod:`fidkit.extractors`) promises one row per image of the batch, of the extractor's
    ``feature_dim`` columns (checked where the extractor declares an int). Reads the shape only.
    """
    shape = tuple(int(d) for d in getattr(features, "shape", None) or np.shape(features))
    dim = getattr(extractor, "feature_dim", None)
    declared = isinstance(dim, numbers.Integral) and not isinstance(dim, bool)
    if len(shape) == 2 and shape[0] == n_images and (not declared or shape[1] == int(dim)):
        return
    expected = f"({n_images}, {int(dim)})" if declared else f"({n_images}, feature_dim)"
    raise InputError(
        f"the feature extractor {type(extractor).__name__} returned features of shape {shape} for a batch of "
        f"{n_images} image(s); expected {expected}: one row of feature_dim features per image of the uint8 "
        "(B, H, W, 3) batch (fidkit.extractors.Extractor): fix its __call__ (or its feature_dim)"
    )


def _non_finite(what: str) -> InputError:
    return InputError(f"{what}: the images contain NaN or inf; the generator produced invalid values")


def _quantize_numpy(array: np.ndarray, value_range: tuple[float, float], what: str) -> np.ndarray:
    lo, hi = value_range
    scaled = (array.astype(np.float64) - lo) / (hi - lo) * 255
    if scaled.size:
        # NaN fails both comparisons: it is caught here too.
        if not (float(scaled.min()) >= -0.5 and float(scaled.max()) <= 255.5):
            if not np.isfinite(array).all():
                raise _non_finite(what)
            raise _out_of_range(float(array.min()), float(array.max()), value_range, what)
    np.rint(scaled, out=scaled)  # round half to even, like torch.round
    np.clip(scaled, 0, 255, out=scaled)  # clips only the half-step tolerance: -0.5 -> 0, 255.5 -> 256 -> 255
    return scaled.astype(np.uint8)


def _check_tensor_kind(tensor: Any, what: str, value_range: tuple[float, float] | None) -> None:
    """Refuse a torch tensor whose device, layout or dtype holds no images fidkit reads, before any of it is read
    or sliced (a slice of a sparse tensor is an error of torch's own, not this message)."""
    import torch

    if tensor.device.type == "meta":
        raise InputError(f"{what}: a tensor on the 'meta' device holds no pixels; pass the images themselves")
    if tensor.layout != torch.strided:
        raise InputError(f"{what}: a {tensor.layout} tensor; pass dense images (x.to_dense())")
    if tensor.dtype != torch.uint8:
        if not tensor.is_floating_point():
            raise _dtype_problem(tensor.dtype, False, what)
        if value_range is None:
            raise _dtype_problem(tensor.dtype, True, what)


def as_image_tensor(tensor: Any, what: str, value_range: Any = None) -> Any:
    """A torch image tensor (NCHW, any device) as a contiguous uint8 NHWC tensor with 3 channels, on its device.

    The rules of :func:`as_image_batch` for tensors, without the copy to the host: a CUDA tensor stays on
    its GPU (quantized there), for extractors that read device memory directly.
    """
    import torch

    value_range = check_value_range(value_range)
    _check_tensor_kind(tensor, what, value_range)
    # A subclass (MONAI's MetaTensor, say) as the plain tensor it holds: its own __torch_function__ (metadata
    # kept through every operation) has nothing to do with pixels.
    tensor = tensor.detach().as_subclass(torch.Tensor)
    shape = tuple(int(d) for d in tensor.shape)
    _check_layout_nchw(shape, what)
    _check_sides(shape[2], shape[3], shape, what)
    if tensor.dtype != torch.uint8:
        lo, hi = value_range
        scaled = (tensor.to(torch.float64) - lo) / (hi - lo) * 255
        if scaled.numel():
            low, high = float(scaled.min()), float(scaled.max())
            if not (low >= -0.5 and high <= 255.5):
                if not bool(torch.isfinite(tensor).all()):
                    raise _non_finite(what)
                raise _out_of_range(float(tensor.min()), float(tensor.max()), value_range, what)
        # torch.round is round half to even, like numpy.rint: the same bytes on every device.
        tensor = scaled.round_().clamp_(0, 255).to(torch.uint8)
    if tensor.shape[1] == 1:
        tensor = tensor.expand(-1, 3, -1, -1)
    return tensor.permute(0, 2, 3, 1).contiguous()


def as_image_batch(batch: Any, what: str, value_range: Any = None) -> np.ndarray:
    """Check an image batch and return it as C-contiguous uint8 ``(N, H, W, 3)``: the one image conversion.

    Layout: numpy arrays (and array-likes) are channel-last, ``(N, H, W, 3)``, ``(N, H, W, 1)`` or
    ``(N, H, W)``; torch tensors are channel-first, ``(N, 3, H, W)`` or ``(N, 1, H, W)``, on any device
    (a CUDA tensor is quantized and transposed on its device, and only the uint8 result is copied to the
    host; torch is imported only when the object is a tensor). A shape that contradicts the convention is
    refused with the call that converts it. Grayscale becomes RGB here, and only here, by replication.

    Values: uint8 is used as it is (`value_range` is then not used). Floating point needs
    ``value_range=(lo, hi)`` and is quantized as saving an 8-bit PNG would:
    ``round((x - lo) / (hi - lo) * 255)`` computed in float64, rounding half to even (``numpy.rint``,
    ``torch.round``). Values may exceed the range by half a quantization step (``0.5 / 255 * (hi - lo)``),
    which rounds to 0 or 255; anything further out is refused, never clipped, so that a ``[-1, 1]``
    batch declared ``(0, 1)`` is caught. An input that already is C-contiguous uint8 RGB numpy is returned
    without a copy.

    Parameters
    ----------
    batch : numpy.ndarray, torch.Tensor or array_like
    what : str
        Names the input in error messages.
    value_range : (float, float), optional
        The range of floating-point images, e.g. ``(0, 1)`` or ``(-1, 1)``.

    Raises
    ------
    InputError
        Floats without `value_range`, values outside it, NaN/inf, another dtype, or a shape that is not
        a batch of images in the expected layout.

    Examples
    --------
    >>> import numpy as np
    >>> as_image_batch(np.array([[[[0.0], [0.5], [1.0]]]]), "x", value_range=(0, 1))[..., 0]  # 127.5: to even
    array([[[  0, 128, 255]]], dtype=uint8)
    """
    value_range = check_value_range(value_range)
    if is_torch_tensor(batch):
        array = as_image_tensor(batch, what, value_range).cpu().numpy()
    else:
        given = as_numpy(batch, what)
        array = _standard_floats(given)  # bfloat16 from JAX: a float like any other
        if array.dtype != np.uint8 and np.issubdtype(array.dtype, np.floating) and value_range is not None:
            _check_layout_nhwc(tuple(int(d) for d in array.shape), what)
            array = _quantize_numpy(array, value_range, what)
        # A refusal names the dtype passed (bfloat16), not the float32 it was widened to.
        check_image_array(array.dtype if array.dtype == np.uint8 else given.dtype, array.shape, what)
    if array.ndim == 3:
        array = array[:, :, :, None]
    if array.shape[3] == 1:
        array = np.repeat(array, 3, axis=3)
    return np.ascontiguousarray(array)


#: Images quantized at a time by :func:`as_image_array`: the float64 copy of a chunk stays near 64 MB (for
#: 256 x 256 RGB images, 128 of them; never fewer than one image).
_CHUNK_PIXELS = 8 << 20


def as_image_array(images: Any, what: str, value_range: Any) -> np.ndarray:
    """A whole array or tensor of images as a new uint8 ``(N, H, W, 3)`` array, quantized a chunk at a time.

    The same bytes as :func:`as_image_batch` of the whole (the shape is checked whole, so a message quotes it), with
    the float64 arithmetic of the quantization on a chunk of images at a time rather than on a copy of everything:
    for a reference of many images that is given once and kept (:class:`fidkit.FID`'s).
    """
    value_range = check_value_range(value_range)
    if is_torch_tensor(images):
        _check_tensor_kind(images, what, value_range)  # before a chunk is sliced off
        _check_layout_nchw(tuple(int(d) for d in images.shape), what)
    else:
        # Not _standard_floats here: a bfloat16 array is converted a chunk at a time by as_image_batch, and one
        # refused (no value_range) is named by its own dtype.
        images = as_numpy(images, what)
        if images.dtype == np.uint8 or not is_float_dtype(images.dtype) or value_range is None:
            return np.array(as_image_batch(images, what, value_range))  # refused, or a copy of uint8 as it is
        _check_layout_nhwc(tuple(int(d) for d in images.shape), what)
    n_images = int(images.shape[0])
    per_image = max(math.prod(int(d) for d in images.shape[1:]), 1)
    chunk = max(_CHUNK_PIXELS // per_image, 1)
    if n_images <= chunk:
        return np.array(as_image_batch(images, what, value_range))
    first = as_image_batch(images[:chunk], what, value_range)
    out = np.empty((n_images, *first.shape[1:]), dtype=np.uint8)
    out[:chunk] = first
    for start in range(chunk, n_images, chunk):
        out[start : start + chunk] = as_image_batch(images[start : start + chunk], what, value_range)
    return out
