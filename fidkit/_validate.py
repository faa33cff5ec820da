"""Argument and array checks shared by every layer: the ground floor, like :mod:`fidkit.errors`.

Sources, the network and the statistics all take batch sizes, subsets, feature arrays and image arrays;
each rule lives here once, so that the same input is accepted or refused with the same message
wherever it enters. Only numpy is imported.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from fidkit.errors import InputError

__all__ = [
    "check_batch_size",
    "check_limit_seed",
    "check_features",
    "as_numpy",
    "check_image_array",
    "as_image_batch",
]


def check_batch_size(batch_size: Any) -> int:
    """Return `batch_size` as an int >= 1, or raise :class:`~fidkit.errors.InputError`."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def check_limit_seed(limit: Any, seed: Any) -> tuple[int | None, int | None]:
    """Validate `limit` (positive int or None) and `seed` (non-negative int or None)."""
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1
    ):
        raise InputError(f"limit must be a positive integer or None, got {limit!r}")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0
    ):
        raise InputError(f"seed must be a non-negative integer or None, got {seed!r}")
    return (None if limit is None else int(limit)), (None if seed is None else int(seed))


def check_features(features: Any, name: str) -> np.ndarray:
    """Return `features` as a 2-D float array (float32 kept, other types to float64).

    Raises
    ------
    InputError
        Not numeric, not 2-D, zero columns, or NaN/inf (naming the first bad row).
    """
    try:
        array = np.asarray(features)
    except Exception as exc:  # ragged lists and the like
        raise InputError(f"{name} cannot be read as an (N, dim) array ({exc}); pass a 2-D numeric array") from exc
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
    "convert it yourself, e.g. for floats in [0, 1]: "
    "(x * 255).round().clip(0, 255).astype(np.uint8); fidkit does not rescale other dtypes because "
    "their range is ambiguous"
)


def check_image_array(dtype: np.dtype, shape: tuple[int, ...], what: str) -> None:
    """Refuse a dtype or shape that is not a batch of channel-last uint8 images, without reading pixels.

    Raises
    ------
    InputError
        Not uint8 (with how to convert), or a shape that is not a batch of images (channel-first
        batches and single images get a specific hint). The message quotes `shape` as given.
    """
    if dtype != np.uint8:
        raise InputError(f"{what}: images must be uint8, got dtype {dtype}; {_FLOAT_ADVICE}")
    shape = tuple(int(d) for d in shape)
    if len(shape) == 4 and shape[3] in (1, 3):
        return
    if len(shape) == 3 and shape[2] == 3:
        # Grayscale images 3 pixels wide are implausible; this is a single (H, W, 3) RGB image.
        raise InputError(
            f"{what}: shape {shape} looks like a single (H, W, 3) image; add a batch axis "
            "(x[None]) or pass (N, H, W) grayscale / (N, H, W, 3) RGB"
        )
    if len(shape) == 3:
        return
    if len(shape) == 4 and shape[1] in (1, 3):
        raise InputError(
            f"{what}: shape {shape} looks channel-first (N, C, H, W); fidkit takes channel-last numpy "
            "arrays: x.transpose(0, 2, 3, 1)"
        )
    raise InputError(
        f"{what}: shape {shape} is not a batch of images; expected (N, H, W, 3) RGB or (N, H, W) grayscale"
    )


def as_image_batch(batch: Any, what: str) -> np.ndarray:
    """Check an image array and return it as C-contiguous uint8 ``(N, H, W, 3)``.

    The one place grayscale becomes RGB: ``(N, H, W)`` and ``(N, H, W, 1)`` are replicated to three
    channels. An input that already is C-contiguous uint8 RGB is returned without a copy.

    Raises
    ------
    InputError
        See :func:`check_image_array`.
    """
    array = as_numpy(batch, what)
    check_image_array(array.dtype, array.shape, what)
    if array.ndim == 3:
        array = array[:, :, :, None]
    if array.shape[3] == 1:
        array = np.repeat(array, 3, axis=3)
    return np.ascontiguousarray(array)
