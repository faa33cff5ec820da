"""Exact k-nearest-neighbour radii and ball counts in bounded memory: the engine of :mod:`fidkit.metrics.prdc`.

Pairwise distances are formed in row blocks under a memory budget, never as an N x N matrix; products run in
float32 and every decision within a proven rounding-error bound is redone with an exact float64 distance, so
the results equal a full-matrix float64 brute force (ties and duplicates included).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fidkit.errors import InputError

__all__ = ["DEFAULT_MEMORY_BUDGET", "exact_sq_distances", "neighbour_tallies", "radii_of"]

logger = logging.getLogger(__name__)


#: Default bound on the memory of the distance blocks (bytes).
DEFAULT_MEMORY_BUDGET = 512 * 2**20
# Bytes held per entry of a row block: the block itself (8), two masks (2), the index array of the k smallest in
# the radii pass (8) and numpy's temporaries (argpartition's working copy, 8).
_BYTES_PER_ENTRY = 32
# A block whose float32 screen leaves more than this fraction of its entries to recompute one by one is redone
# in float64 instead. An estimate, not a measurement: a reference distance is a few dim flops of numpy elementwise
# work, some 20-50 times slower per flop than the BLAS product, so beyond a few per cent the product wins.
_PRECISE_FALLBACK = 0.02
# Rows centred per chunk when building a screen.
_SCREEN_CHUNK_ROWS = 4096
# Unit round-offs of float64 and float32.
_U64 = 2.0**-53
_U32 = 2.0**-24


def _tolerance_factor(dim: int, screen_float32: bool) -> float:
    """c with |fast - reference| <= c (|x| + |y|)^2 for every pair, |x| the norms of the screening copies.

    float64 screening: the formula |x|^2 + |y|^2 - 2 x.y errs by gamma_dim (|x| + |y|)^2, centring by about
    2 u (|x| + |y|)^2, the reference distance itself by gamma_(dim+1) |x - y|^2: (2 dim + 6) u64 in all.
    float32 screening adds the product in float32, gamma_dim 2 |x| |y| <= dim u32 (|x| + |y|)^2 / 2, and the
    rounding of the centred features to float32, about 2 u32 (|x| + |y|)^2. Each is doubled for margin.
    """
    factor = 4.0 * (dim + 8) * _U64
    if screen_float32:
        factor += (dim + 8) * _U32
    return factor


def _underflow_floor(dim: int, screen_float32: bool) -> float:
    """An absolute term added to the bound for gradual underflow: each float32 (float64) product, sum or rounding
    of a centred value near 0 can err by up to half the smallest subnormal besides its relative error; the smallest
    normal number per term, doubled, covers the dim products, the sums and the rounding of both rows. Negligible
    against any distance of features scaled to a spread near 1 (:func:`_spread_scaled`), it keeps the bound true
    for points within 1e-19 of the centre (float32 products of their coordinates underflow)."""
    return 4.0 * (dim + 8) * (2.0**-126 if screen_float32 else 2.0**-1022)


# --------------------------------------------------------------------------------------------- reference distance


def exact_sq_distances(rows_a: np.ndarray, rows_b: np.ndarray) -> np.ndarray:
    """The reference squared distances of paired rows: ``sum((a_i - b_i)^2)`` in float64, row by row.

    Deterministic per pair (the same two feature vectors always give the same bits), exactly 0 for equal rows.

    Parameters
    ----------
    rows_a, rows_b : numpy.ndarray
        ``(m, dim)`` each (any float dtype; converted to float64, which represents float32 values exactly).

    Returns
    -------
    numpy.ndarray
        ``(m,)`` float64.
    """
    difference = np.asarray(rows_a, dtype=np.float64) - np.asarray(rows_b, dtype=np.float64)
    difference *= difference
    return difference.sum(axis=1)


# --------------------------------------------------------------------------------------------- backends


class _NumpyBackend:
    """Blocks as numpy arrays."""

    name = "numpy"
    # The products, most of the time, run in float32 (twice as fast); the error bound and the recomputation of
    # every decision inside it keep the results those of the reference distances.
    screen_float32 = True

    def put(self, array: np.ndarray) -> np.ndarray:
        return array

    def host(self, array: Any) -> np.ndarray:
        return np.asarray(array)

    def sq_distances(self, rows: np.ndarray, row_norms: np.ndarray, cols: np.ndarray, col_norms: np.ndarray):
        # float32 product, assembled in float64 (the norms are float64 of the float32 values).
        block = np.multiply(rows @ cols.T, -2.0, dtype=np.float64)
        block += row_norms[:, None]
        block += col_norms[None, :]
        np.maximum(block, 0.0, out=block)
        return block

    def count(self, mask: np.ndarray, axis: int) -> np.ndarray:
        return np.count_nonzero(mask, axis=axis)

    def exclude_self(self, block: np.ndarray, start: int) -> None:
        rows = np.arange(block.shape[0])
        block[rows, start + rows] = np.inf

    def smallest(self, block: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The `count` smallest values of each row, ascending, and their column indices."""
        if count < block.shape[1]:
            index = np.argpartition(block, count - 1, axis=1)[:, :count]
        else:
            index = np.broadcast_to(np.arange(block.shape[1]), block.shape).copy()
        values = np.take_along_axis(block, index, axis=1)
        order = np.argsort(values, axis=1, kind="stable")
        return np.take_along_axis(values, order, axis=1), np.take_along_axis(index, order, axis=1)


class _TorchBackend:
    """Blocks as float64 torch tensors on one device (a GPU, or the CPU for checking)."""

    name = "torch"
    # float64 throughout: a float32 product on a GPU may run in TF32 (torch.set_float32_matmul_precision), whose
    # error the bound does not cover.
    screen_float32 = False

    def __init__(self, device: Any) -> None:
        import torch

        self.torch = torch
        try:
            self.device = torch.device(device)
            torch.empty(1, dtype=torch.float64, device=self.device)
        except (RuntimeError, TypeError, AssertionError) as exc:
            raise InputError(f"device={device!r} cannot be used by torch ({type(exc).__name__}: {exc})") from exc

    def put(self, array: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64)).to(self.device)

    def host(self, tensor: Any) -> np.ndarray:
        return tensor.cpu().numpy() if hasattr(tensor, "cpu") else np.asarray(tensor)

    def sq_distances(self, rows, row_norms, cols, col_norms):
        block = rows @ cols.T
        block.mul_(-2.0)
        block.add_(row_norms[:, None])
        block.add_(col_norms[None, :])
        block.clamp_(min=0.0)
        return block

    def count(self, mask, axis: int) -> np.ndarray:
        return self.host(mask.sum(axis))

    def exclude_self(self, block, start: int) -> None:
        rows = self.torch.arange(block.shape[0], device=self.device)
        block[rows, start + rows] = float("inf")

    def smallest(self, block, count: int) -> tuple[np.ndarray, np.ndarray]:
        values, index = self.torch.topk(block, count, dim=1, largest=False, sorted=True)
        return self.host(values), self.host(index)


def _backend(device: Any) -> _NumpyBackend | _TorchBackend:
    if device is None:
        return _NumpyBackend()
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise InputError(f"device={device!r} needs torch, which cannot be imported ({exc}); pass device=None") from exc
    return _TorchBackend(device)


# --------------------------------------------------------------------------------------------- the engine


@dataclass
class _Screen:
    """Centred rows on the backend, as the fast distances read them, with their norms and error bound."""

    centred: Any  # rows minus the centre: float32 (numpy's fast screen) or float64
    norms: Any  # squared norms of those rows (float64 of their values), on the backend
    norms_host: np.ndarray
    max_norm: float  # largest norm (not squared)
    factor: float  # |fast - reference| <= factor (|x| + |y|)^2 + floor
    floor: float


@dataclass
class _Side:
    original: np.ndarray  # the features as given (float32 or float64): the reference distances use these
    centre: np.ndarray
    fast: _Screen
    precise_screen: _Screen | None = None

    @property
    def n(self) -> int:
        return int(self.original.shape[0])

    def precise(self, backend, dim: int) -> _Screen:
        """A float64 screen (built on first use, for blocks where the float32 one leaves too much undecided)."""
        if not backend.screen_float32:
            return self.fast
        if self.precise_screen is None:
            self.precise_screen = _screen(self.original, self.centre, backend, dim, precise=True)
        return self.precise_screen


def _screen(original: np.ndarray, centre: np.ndarray, backend, dim: int, precise: bool = False) -> _Screen:
    float32 = backend.screen_float32 and not precise
    n_rows = original.shape[0]
    centred = np.empty((n_rows, dim), dtype=np.float32 if float32 else np.float64)
    norms = np.empty(n_rows, dtype=np.float64)
    # In chunks, so that a float32 screen never needs a float64 copy of all the features on the way.
    for start in range(0, n_rows, _SCREEN_CHUNK_ROWS):
        stop = min(start + _SCREEN_CHUNK_ROWS, n_rows)
        centred[start:stop] = np.asarray(original[start:stop], dtype=np.float64) - centre
        # Norms in float64 of the screen's values: the bound is stated for those.
        norms[start:stop] = np.einsum("ij,ij->i", centred[start:stop], centred[start:stop], dtype=np.float64)
    rows = centred if isinstance(backend, _NumpyBackend) else backend.put(centred)
    return _Screen(
        centred=rows,
        norms=backend.put(norms),
        norms_host=norms,
        max_norm=math.sqrt(float(norms.max())),
        factor=_tolerance_factor(dim, float32),
        floor=_underflow_floor(dim, float32),
    )


def _prepare(original: np.ndarray, centre: np.ndarray, backend, dim: int) -> _Side:
    return _Side(original=original, centre=centre, fast=_screen(original, centre, backend, dim))


# Features whose spread (the largest range of a column over all rows) lies outside [2^-_SAFE_EXPONENT,
# 2^_SAFE_EXPONENT] are brought near 1 first.
_SAFE_EXPONENT = 20


def _column_bounds(arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest value of each column over the rows of all `arrays` (float64)."""
    lowest = np.min([np.min(array, axis=0) for array in arrays], axis=0).astype(np.float64)
    highest = np.max([np.max(array, axis=0) for array in arrays], axis=0).astype(np.float64)
    return lowest, highest


def _centre(*arrays: np.ndarray) -> np.ndarray:
    """The float64 mean of the rows of `arrays`, exactly the value of every column constant over them.

    Any centre leaves the distances as they are; its size matters only for the screens' error bound and range. A
    computed mean of a constant column can miss the value by a few units in its last place: a column constant at
    1e300 would then be centred to about 1e284, beyond float32's range, instead of 0.
    """
    total = sum(array.sum(axis=0, dtype=np.float64) for array in arrays)
    centre = total / sum(array.shape[0] for array in arrays)
    lowest, highest = _column_bounds(arrays)
    constant = lowest == highest
    centre[constant] = lowest[constant]
    return centre


def _spread_scaled(*arrays: np.ndarray) -> tuple[tuple[np.ndarray, ...], int]:
    """The arrays divided by a common power of two ``2^e`` that brings their spread near 1, and e.

    The spread is the largest range of a column (largest minus smallest value, over all rows): the fast distances
    work on centred rows, whose size is the spread, not the size of the values (a column constant at 1.0 beside
    columns spread over 1e-22 has values near 1 and a spread of 1e-22). The error bound of the fast distances holds
    only where nothing overflows or underflows: a float32 product of centred values near 1e20 is inf, one of
    centred values near 1e-22 underflows (1e-44 is below float32's range), and float64 squared differences
    underflow near 1e-154 and overflow near 1e154. Dividing by a power of two is exact in float64's normal range,
    so every difference, hence every reference distance, is scaled by exactly ``4^-e`` and every comparison between
    two of them, hence every count, is that of the unscaled features (where their own float64 squares neither
    underflow nor overflow; where they do, the scaled ones are the exact values). Features of ordinary spread
    (e = 0) are passed through as they are, without a copy.

    Columns equal in every row of every array are set to 0 when scaling: they add exactly 0 to every difference
    either way, and kept they could overflow (a column at 1e300 beside a spread of 1e-10). Every other column
    spans at least one unit in the last place of its largest value, so after scaling no value exceeds about 2^54.
    """
    lowest, highest = _column_bounds(arrays)
    half_span = float(np.max(highest * 0.5 - lowest * 0.5))  # halves: the range itself can overflow
    exponent = math.frexp(half_span)[1] + 1 if half_span > 0.0 else 0
    if -_SAFE_EXPONENT <= exponent <= _SAFE_EXPONENT:
        return arrays, 0
    constant = lowest == highest
    scaled = []
    for array in arrays:
        copy = np.asarray(array, dtype=np.float64).copy()
        copy[:, constant] = 0.0
        scaled.append(np.ldexp(copy, -exponent))
    return tuple(scaled), exponent


def _block_rows(n_cols: int, memory_budget: int) -> int:
    return max(1, memory_budget // (_BYTES_PER_ENTRY * max(n_cols, 1)))


class _Counter:
    def __init__(self) -> None:
        self.recomputed = 0
        self.precise_blocks = 0


def _radii(side: _Side, ks: tuple[int, ...], backend, memory_budget: int, dim: int, counter: _Counter) -> dict:
    """Reference squared distance to the k-th nearest other sample, for each k in `ks`."""
    n_rows = side.n
    radii = {k: np.empty(n_rows, dtype=np.float64) for k in ks}
    count = min(max(ks) + 1, n_rows)  # one beyond the largest k, to see whether the k-th is isolated
    step = _block_rows(n_rows, memory_budget)
    for start in range(0, n_rows, step):
        stop = min(start + step, n_rows)
        rows = np.arange(stop - start)

        def scan(screen: _Screen):
            block = backend.sq_distances(
                screen.centred[start:stop], screen.norms[start:stop], screen.centred, screen.norms
            )
            backend.exclude_self(block, start)
            values, index = backend.smallest(block, count)
            band = 2.0 * screen.factor * (np.sqrt(screen.norms_host[start:stop]) + screen.max_norm) ** 2
            band += 2.0 * screen.floor
            isolated = {}
            for k in ks:
                kth = values[:, k - 1]
                alone = np.ones(stop - start, dtype=bool)
                if k >= 2:
                    alone &= values[:, k - 2] < kth - band
                if count > k:
                    alone &= values[:, k] > kth + band
                isolated[k] = alone
            return block, values, index, band, isolated

        block, values, index, band, isolated = scan(side.fast)
        if side.precise(backend, dim) is not side.fast and _many_candidates(
            block, values, band, isolated, ks, backend
        ):
            # Points far from the centre against their spacing (several separate clusters): the float32 bound is
            # wide against the neighbour distances. Redo the block in float64 rather than recompute most rows.
            counter.precise_blocks += 1
            del block
            block, values, index, band, isolated = scan(side.precise(backend, dim))
        for k in ks:
            kth = values[:, k - 1]
            # The common case: no other candidate within the band, so the k-th neighbour is that one sample.
            clean = rows[isolated[k]]
            radii[k][start + clean] = exact_sq_distances(
                side.original[start + clean], side.original[index[clean, k - 1]]
            )
            counter.recomputed += int(clean.size)
            for row in rows[~isolated[k]].tolist():
                radii[k][start + row] = _kth_by_reference(
                    side, backend.host(block[row]), start + row, k, float(kth[row]), float(band[row]), counter
                )
    return radii


def _many_candidates(block, values: np.ndarray, band: np.ndarray, isolated: dict, ks, backend) -> bool:
    """Whether the rows of a block that the fast values leave undecided hold more than _PRECISE_FALLBACK of its
    entries as candidates: then recomputing them costs more than redoing the block's product in float64.
    """
    budget = _PRECISE_FALLBACK * block.shape[0] * block.shape[1]
    candidates = 0
    for k in ks:
        for row in np.flatnonzero(~isolated[k]).tolist():
            fast_row = backend.host(block[row])
            candidates += int(np.count_nonzero(np.abs(fast_row - values[row, k - 1]) <= band[row]))
            if candidates > budget:
                return True
    return False


def _kth_by_reference(
    side: _Side, fast_row: np.ndarray, row: int, k: int, kth: float, band: float, counter: _Counter
) -> float:
    """The k-th smallest reference distance of `row`, from the candidates within `band` of the fast k-th value.

    Everything below the band is certainly nearer than the k-th neighbour and everything above it certainly
    farther (the fast values are within band / 2 of the reference ones), so the k-th reference value is the
    ``(k - below)``-th smallest among the candidates.
    """
    below = int(np.count_nonzero(fast_row < kth - band))
    candidates = np.flatnonzero(np.abs(fast_row - kth) <= band)
    reference = exact_sq_distances(np.broadcast_to(side.original[row], (candidates.size, side.original.shape[1])),
                                   side.original[candidates])
    counter.recomputed += int(candidates.size)
    return float(np.sort(reference)[k - 1 - below])


@dataclass
class _Tallies:
    """Per-k counts of one cross pass."""

    fake_in_real_inclusive: np.ndarray  # (n_fake,) bool: inside some real ball, d <= r
    fake_ball_count_strict: np.ndarray  # (n_fake,) int: number of real balls with d < r
    real_covered_strict: np.ndarray  # (n_real,) bool: some fake with d < r(real)
    real_in_fake_inclusive: np.ndarray  # (n_real,) bool: inside some fake ball, d <= r(fake)
    real_in_fake_strict: np.ndarray  # (n_real,) bool: d < r(fake)


def _cross(
    real: _Side,
    fake: _Side,
    radii_real: dict,
    radii_fake: dict,
    ks: tuple[int, ...],
    backend,
    memory_budget: int,
    dim: int,
    counter: _Counter,
) -> dict[int, _Tallies]:
    tallies = {
        k: _Tallies(
            fake_in_real_inclusive=np.zeros(fake.n, dtype=bool),
            fake_ball_count_strict=np.zeros(fake.n, dtype=np.int64),
            real_covered_strict=np.zeros(real.n, dtype=bool),
            real_in_fake_inclusive=np.zeros(real.n, dtype=bool),
            real_in_fake_strict=np.zeros(real.n, dtype=bool),
        )
        for k in ks
    }
    # One error bound for every pair of this pass (the largest norms on both sides): comparing the blocks with
    # radius -/+ tol vectors needs no block-sized temporary, and the bound is at most a few times a per-pair one.
    def bounds(screen_fake: _Screen, screen_real: _Screen) -> dict:
        tol = screen_fake.factor * (screen_fake.max_norm + screen_real.max_norm) ** 2 + screen_fake.floor
        return {
            "real_below": {k: backend.put(radii_real[k] - tol)[None, :] for k in ks},
            "real_above": {k: backend.put(radii_real[k] + tol)[None, :] for k in ks},
            "fake_below": {k: backend.put(radii_fake[k] - tol) for k in ks},
            "fake_above": {k: backend.put(radii_fake[k] + tol) for k in ks},
        }

    fast = bounds(fake.fast, real.fast)
    precise = None
    first = ks[0]
    step = _block_rows(real.n, memory_budget)
    for start in range(0, fake.n, step):
        stop = min(start + step, fake.n)
        block = backend.sq_distances(
            fake.fast.centred[start:stop], fake.fast.norms[start:stop], real.fast.centred, real.fast.norms
        )
        limits = fast
        if fake.precise(backend, dim) is not fake.fast:
            undecided = int(
                np.sum(backend.count(block <= fast["real_above"][first], 1) - backend.count(block < fast["real_below"][first], 1))
            )
            if undecided > _PRECISE_FALLBACK * (stop - start) * real.n:
                # As in _radii: redo a block that the float32 bound leaves largely undecided in float64.
                counter.precise_blocks += 1
                screen_fake, screen_real = fake.precise(backend, dim), real.precise(backend, dim)
                if precise is None:
                    precise = bounds(screen_fake, screen_real)
                del block
                block = backend.sq_distances(
                    screen_fake.centred[start:stop], screen_fake.norms[start:stop], screen_real.centred, screen_real.norms
                )
                limits = precise
        for k in ks:
            tally = tallies[k]
            # Real balls: fake row j against r(real i). Outside [r - tol, r + tol] the comparison is certain, and
            # strict and inclusive agree; inside it the reference distance decides.
            sure = block < limits["real_below"][k]
            maybe = block <= limits["real_above"][k]
            sure_count = backend.count(sure, 1)
            maybe_count = backend.count(maybe, 1)
            tally.fake_ball_count_strict[start:stop] += sure_count
            tally.fake_in_real_inclusive[start:stop] |= sure_count > 0
            tally.real_covered_strict |= backend.host(sure.any(0))
            for row in np.flatnonzero(maybe_count != sure_count).tolist():
                cols = np.flatnonzero(backend.host(maybe[row] & ~sure[row]))
                reference = _pair_reference(fake, start + row, real, cols, counter)
                radius = radii_real[k][cols]
                strict = reference < radius
                tally.fake_ball_count_strict[start + row] += int(np.count_nonzero(strict))
                tally.fake_in_real_inclusive[start + row] |= bool(np.any(reference <= radius))
                tally.real_covered_strict[cols[strict]] = True
            del sure, maybe
            # Fake balls: real i against r(fake j) of this block's rows.
            sure = block < limits["fake_below"][k][start:stop][:, None]
            maybe = block <= limits["fake_above"][k][start:stop][:, None]
            tally.real_in_fake_inclusive |= backend.host(sure.any(0))
            sure_count = backend.count(sure, 1)
            maybe_count = backend.count(maybe, 1)
            for row in np.flatnonzero(maybe_count != sure_count).tolist():
                cols = np.flatnonzero(backend.host(maybe[row] & ~sure[row]))
                reference = _pair_reference(fake, start + row, real, cols, counter)
                radius = radii_fake[k][start + row]
                tally.real_in_fake_inclusive[cols[reference <= radius]] = True
                tally.real_in_fake_strict[cols[reference < radius]] = True
            tally.real_in_fake_strict |= backend.host(sure.any(0))
            del sure, maybe
    return tallies


def _pair_reference(rows_side: _Side, row: int, cols_side: _Side, cols: np.ndarray, counter: _Counter) -> np.ndarray:
    counter.recomputed += int(cols.size)
    repeated = np.broadcast_to(rows_side.original[row], (cols.size, rows_side.original.shape[1]))
    return exact_sq_distances(repeated, cols_side.original[cols])


def neighbour_tallies(array_real: np.ndarray, array_fake: np.ndarray, ks: tuple[int, ...], memory_budget: int, device: Any):
    """Radii of both sides and the cross tallies for each k, on validated arrays."""
    backend = _backend(device)
    (array_real, array_fake), _ = _spread_scaled(array_real, array_fake)
    n_real, n_fake, dim = array_real.shape[0], array_fake.shape[0], array_real.shape[1]
    # Centring changes no distance and shrinks the norms, hence the error bound, to the spread of the points:
    # each side on its own mean for its radii, both on their common mean for the cross pass (two sets far
    # apart would otherwise make every within-set distance small against the bound).
    counter = _Counter()
    radii_real = _radii(_prepare(array_real, _centre(array_real), backend, dim), ks, backend, memory_budget, dim, counter)
    radii_fake = _radii(_prepare(array_fake, _centre(array_fake), backend, dim), ks, backend, memory_budget, dim, counter)
    centre = _centre(array_real, array_fake)
    side_real = _prepare(array_real, centre, backend, dim)
    side_fake = _prepare(array_fake, centre, backend, dim)
    # The radii need one reference distance per sample and k; only what goes beyond counts as recomputed.
    counter.recomputed -= len(ks) * (n_real + n_fake)
    tallies = _cross(side_real, side_fake, radii_real, radii_fake, ks, backend, memory_budget, dim, counter)
    logger.debug(
        "manifold metrics: %d distances recomputed from the features, %d blocks redone in float64",
        counter.recomputed,
        counter.precise_blocks,
    )
    return tallies, (n_real, n_fake, dim), counter


def radii_of(array: np.ndarray, k: int, memory_budget: int, device: Any) -> np.ndarray:
    """Squared k-th neighbour radii of one validated array (what :func:`fidkit.metrics.knn_radii` returns)."""
    backend = _backend(device)
    (array,), exponent = _spread_scaled(array)
    centre = _centre(array)
    dim = array.shape[1]
    scaled = _radii(_prepare(array, centre, backend, dim), (k,), backend, memory_budget, dim, _Counter())[k]
    with np.errstate(over="ignore", under="ignore"):
        radii = np.ldexp(scaled, 2 * exponent)  # squared distances: back by 4^e
    if not np.isfinite(radii).all():
        raise InputError(
            f"squared k-NN radii of features spread this wide (columns spanning up to {np.ldexp(1.0, exponent):.3g}) "
            "overflow float64; scale the features down (precision, recall, density and coverage do not change)"
        )
    if np.any((scaled > 0.0) & (radii < np.finfo(np.float64).tiny)):
        raise InputError(
            f"squared k-NN radii of features spread this narrowly (columns spanning up to "
            f"{np.ldexp(1.0, exponent):.3g}) fall below float64's normal range and cannot be returned exactly; scale the features up "
            "(precision, recall, density and coverage do not change)"
        )
    return radii
