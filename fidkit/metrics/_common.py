"""Checks and random draws shared by the metrics of :mod:`fidkit.metrics`.

Every random draw in the package comes from one of two generators built from an explicit integer seed:
``sampling="generator"`` (the default) is :func:`numpy.random.default_rng`, ``sampling="torch-fidelity"`` is the
legacy :class:`numpy.random.RandomState` that torch-fidelity 0.4.0 seeds with ``rng_seed`` (2020 by default),
called in the same order as torch-fidelity calls it, so that the same features give the same subsets (KID) or
the same shuffle (Inception Score) and hence the same numbers.

``sampling="generator"`` draws over a canonical order of the rows (:func:`canonical_order`), which depends on their
values only: the numbers are then functions of the set of rows, as every fidkit metric should be, whatever order a
gather across processes or a sharded run delivers them in. ``"torch-fidelity"`` draws by position, as
torch-fidelity does (its numbers on the same order need it): it depends on the row order.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable

import numpy as np

from fidkit._plain import finite_or_none
from fidkit._validate import check_features
from fidkit.errors import InputError

__all__ = [
    "SAMPLINGS",
    "check_seed",
    "check_sampling",
    "check_positive_int",
    "check_level",
    "check_pair",
    "check_resampling",
    "float_metric",
    "make_rng",
    "choice_without_replacement",
    "permutation",
    "canonical_order",
    "plain_dict",
]

#: Accepted values of ``sampling=``.
SAMPLINGS = ("generator", "torch-fidelity")


def check_seed(seed: Any, name: str = "seed") -> int:
    """Return `seed` as a non-negative int, or raise :class:`~fidkit.errors.InputError` naming the argument `name`.

    None is refused on purpose: a metric that draws at random must say which draw it reports.
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(
            f"{name} must be a non-negative integer, got {seed!r}; the draws are reproducible only from an explicit "
            f"seed (pass e.g. {name}=0)"
        )
    if seed >= 2**32:
        # RandomState (sampling="torch-fidelity") takes seeds below 2**32 only; one rule for both samplings.
        raise InputError(f"{name} must be below 2**32, got {seed}")
    return int(seed)


def check_sampling(sampling: Any) -> str:
    if not isinstance(sampling, str) or sampling not in SAMPLINGS:
        raise InputError(f"sampling={sampling!r} is not one of {', '.join(repr(s) for s in SAMPLINGS)}")
    return sampling


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_level(level: Any) -> float:
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0.0 < float(level) < 1.0:
        raise InputError(f"level must be a confidence level strictly between 0 and 1 (e.g. 0.95), got {level!r}")
    return float(level)


def check_resampling(n_resamples: Any, level: Any, seed: Any) -> tuple[int, float, int]:
    """The arguments every interval takes: resamples (>= 2), a level in (0, 1), a seed."""
    return check_positive_int(n_resamples, "n_resamples", minimum=2), check_level(level), check_seed(seed)


def float_metric(metric: Any) -> Callable[[np.ndarray, np.ndarray], float]:
    """`metric(a, b)` as a function returning a float: what the interval methods evaluate on each replicate.

    Raises
    ------
    InputError
        `metric` is not callable (now), or returns something ``float()`` refuses (when called).
    """
    if not callable(metric):
        raise InputError(f"metric must be a callable metric(a, b), got {type(metric).__name__}")

    def evaluate(a: np.ndarray, b: np.ndarray) -> float:
        outcome = metric(a, b)
        try:
            return float(outcome)
        except (TypeError, ValueError) as exc:
            raise InputError(f"metric returned {type(outcome).__name__}, which float() refuses ({exc})") from exc

    return evaluate


def check_pair(features_a: Any, features_b: Any, names: tuple[str, str] = ("features_a", "features_b")):
    """Validate two ``(N, dim)`` feature arrays of the same dim (float32 kept, other types to float64)."""
    array_a = check_features(features_a, names[0])
    array_b = check_features(features_b, names[1])
    if array_a.shape[1] != array_b.shape[1]:
        raise InputError(
            f"{names[0]} has dim {array_a.shape[1]} but {names[1]} has dim {array_b.shape[1]}; both must come "
            "from the same feature extractor"
        )
    return array_a, array_b


def make_rng(seed: int, sampling: str) -> np.random.Generator | np.random.RandomState:
    return np.random.RandomState(seed) if sampling == "torch-fidelity" else np.random.default_rng(seed)


def choice_without_replacement(rng: np.random.Generator | np.random.RandomState, n: int, size: int) -> np.ndarray:
    """``size`` distinct indices out of ``range(n)``, as ``rng.choice(n, size, replace=False)`` draws them."""
    return rng.choice(n, size, replace=False)


def permutation(rng: np.random.Generator | np.random.RandomState, n: int) -> np.ndarray:
    return rng.permutation(n)


# canonical_order: the first key reads this many columns (all of them below); rows are converted to float64 and
# hashed in chunks of about this many values (2 MB: they stay in cache through the four passes over them, which
# measured 2.5x faster than 16 MB chunks; and no float64 copy of all the features is made).
_KEY_COLUMNS = 64
_KEY_CHUNK_VALUES = 1 << 18
# Odd 64-bit multipliers, one per column (a fixed stream: the order must not depend on anything but the values).
_KEY_MULTIPLIERS = np.random.default_rng(0x0FD1C0DE).integers(0, 2**63, 1 << 16, dtype=np.uint64) * np.uint64(2) + 1


def _row_keys(arrays: tuple[np.ndarray, ...], rows: np.ndarray | None, widths: list[int | None]) -> np.ndarray:
    """A 64-bit hash of each row's float64 values (in the first `widths` columns of each array; None: all) and of
    `rows` only (None: all), exact and order-free.

    Integer arithmetic modulo 2^64 is exact and associative, so the key of a row does not depend on where the row
    sits, on alignment or on the order of a sum; ``+ 0.0`` turns -0.0 into 0.0 (equal values, equal keys), and
    float32 input is converted to float64 first (so float32 and float64 arrays of the same values get the same
    keys). Each array is first divided by the power of two that brings its largest hashed |value| into [0.5, 1)
    (exact), so that features scaled by a power of two keep their order (and every resample and subset). The high
    word is folded into the low one so that float32 values, whose low 29 mantissa bits are zero in float64, still
    spread over all 64 bits.
    """
    n_rows = arrays[0].shape[0] if rows is None else rows.size
    keys = np.zeros(n_rows, dtype=np.uint64)
    offset = 0
    for array, width in zip(arrays, widths):
        width = array.shape[1] if width is None else min(width, array.shape[1])
        multipliers = _KEY_MULTIPLIERS[np.arange(offset, offset + width) % _KEY_MULTIPLIERS.size]
        offset += width
        step = max(1, _KEY_CHUNK_VALUES // width)
        chunks = [slice(start, start + step) if rows is None else rows[start : start + step]
                  for start in range(0, n_rows, step)]
        largest = max(float(np.max(np.abs(array[index, :width]))) for index in chunks)
        exponent = math.frexp(largest)[1] if largest > 0.0 else 0
        for start, index in zip(range(0, n_rows, step), chunks):
            values = np.ldexp(array[index, :width], -exponent, dtype=np.float64)
            values += 0.0
            bits = values.view(np.uint64)
            bits ^= bits >> np.uint64(32)
            bits *= multipliers
            keys[start : start + step] += bits.sum(axis=1, dtype=np.uint64)
    return keys


def _run_starts(*sorted_keys: np.ndarray) -> np.ndarray:
    """For each position of keys sorted together, the position where its run of equal keys starts."""
    n_rows = sorted_keys[0].size
    same = np.ones(max(n_rows - 1, 0), dtype=bool)
    for keys in sorted_keys:
        same &= keys[1:] == keys[:-1]
    starts = np.arange(n_rows)
    starts[1:][same] = 0
    return np.maximum.accumulate(starts)


def canonical_order(*arrays: np.ndarray) -> np.ndarray:
    """Indices that put the rows of `arrays` in an order that depends only on their values, not on their positions.

    `arrays` hold the same N rows (one image's outputs: its feature row, its logits, ...). Rows are sorted by a
    hash of the float64 values of the first array's first 64 columns (all of them below 64); rows that share it, by
    a hash of all their values; rows that share that too, by their values, lexicographically. Rows equal in every
    value are interchangeable to any metric, so their relative order (kept as given) does not matter. float32 and
    float64 arrays of the same values get the same order.

    Cost: the first hash reads 64 contiguous columns (20-40 ms at N = 50,000); the full hash runs only on rows whose
    first keys collide (duplicates, or rows equal in those columns), at most one pass over the values (0.3 s at
    50,000 x 2048 on one core), and the comparison only on rows whose full hashes collide.
    """
    n_rows, dim = arrays[0].shape
    if n_rows < 2:
        return np.arange(n_rows)
    # Contiguous columns: one cache line or a few per row (evenly spaced ones cost a cache miss each, 10x slower).
    keys = _row_keys(arrays[:1], None, [_KEY_COLUMNS])
    order = np.argsort(keys, kind="stable")
    starts = _run_starts(keys[order])
    tied = order[starts != np.arange(n_rows)]
    if tied.size == 0:
        return order
    # Rows sharing a first key: each with a hash of all its values, as the second key.
    tied = np.union1d(tied, order[starts[starts != np.arange(n_rows)]])
    full = np.zeros(n_rows, dtype=np.uint64)
    full[tied] = _row_keys(arrays, tied, [None] * len(arrays))
    order = np.lexsort((full, keys))
    starts = _run_starts(keys[order], full[order])
    repeats = np.flatnonzero(starts != np.arange(n_rows))
    if repeats.size == 0:
        return order
    # Rows sharing both keys are, but for a 2^-64 chance, equal rows (duplicates): check against their run's first.
    distinct = []
    step = max(1, _KEY_CHUNK_VALUES // sum(array.shape[1] for array in arrays))
    for begin in range(0, repeats.size, step):
        chunk = repeats[begin : begin + step]
        differ = np.zeros(chunk.size, dtype=bool)
        for array in arrays:
            members = np.asarray(array[order[chunk]], dtype=np.float64)
            firsts = np.asarray(array[order[starts[chunk]]], dtype=np.float64)
            differ |= np.any(members != firsts, axis=1)
        distinct.extend(np.unique(starts[chunk[differ]]).tolist())
    for start in sorted(set(distinct)):
        stop = start + 1
        while stop < n_rows and starts[stop] == start:
            stop += 1
        group = order[start:stop]
        values = np.hstack([np.asarray(array[group], dtype=np.float64) + 0.0 for array in arrays])
        # Distinct rows with equal hashes: by their values (np.unique sorts rows lexicographically).
        _, inverse = np.unique(values, axis=0, return_inverse=True)
        order[start:stop] = group[np.argsort(inverse.ravel(), kind="stable")]
    return order


def plain_dict(result: Any) -> dict[str, Any]:
    """A JSON-ready dict of a result dataclass: tuples become lists, NaN and inf become None."""
    return {item.name: finite_or_none(getattr(result, item.name)) for item in dataclasses.fields(result)}
