"""`StatsAccumulator`: exact float64 streaming of feature batches into :class:`~fidkit.stats.Stats`, and merges."""

from __future__ import annotations

from typing import Any

import numpy as np

from fidkit._validate import check_features, is_count
from fidkit.errors import InputError
from fidkit.stats.checks import check_dim, symmetrised
from fidkit.stats.core import MetadataValue, Stats

__all__ = ["StatsAccumulator"]


class StatsAccumulator:
    """Build :class:`Stats` from feature batches in float64, in memory bounded by ``dim x dim``.

    While at most ``dim`` rows have been seen the rows themselves are kept (that is at most ``dim x dim``
    floats), so the result carries the exact square-root factor. Past that the state is the running mean and
    the sum of squared deviations ``M2``: each batch is centred on its own mean (two-pass, in float64) and
    merged with Chan et al.'s pairwise update, which never subtracts two large one-pass moments.

    Parameters
    ----------
    dim : int, optional
        Feature dimension; taken from the first batch when omitted.
    """

    def __init__(self, dim: int | None = None) -> None:
        if dim is not None and not is_count(dim):
            raise InputError(f"dim must be a positive int, not {dim!r}")
        if dim is not None:
            check_dim(int(dim), "StatsAccumulator(dim)")
        self._dim: int | None = None if dim is None else int(dim)
        self._n = 0
        self._rows: list[np.ndarray] | None = []  # None once folded into the moments
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of feature rows seen."""
        return self._n

    @property
    def dim(self) -> int | None:
        """Feature dimension, or None before the first batch when not given."""
        return self._dim

    def update(self, features: np.ndarray) -> None:
        """Add a ``(B, dim)`` batch of float32/float64 features.

        Raises
        ------
        InputError
            Not 2-D, NaN or inf, or a dimension different from earlier batches.
        """
        batch = check_features(features, "feature batch")
        self._update_checked(batch)

    def _update_checked(self, batch: np.ndarray) -> None:
        if self._dim is None:
            check_dim(int(batch.shape[1]), "feature batch")
            self._dim = int(batch.shape[1])
        elif batch.shape[1] != self._dim:
            raise InputError(
                f"feature batch has dim {batch.shape[1]} but the accumulator holds dim {self._dim}; "
                "all batches must come from the same feature extractor"
            )
        if batch.shape[0] == 0:
            return
        rows = np.array(batch, dtype=np.float64)  # always a copy: callers reuse their batch buffers
        if self._rows is not None and self._n + rows.shape[0] <= self._dim:
            self._rows.append(rows)
            self._n += rows.shape[0]
            return
        self._fold_rows()
        batch_mean = rows.mean(axis=0)
        centred = rows - batch_mean
        self._combine(rows.shape[0], batch_mean, centred.T @ centred)

    def _fold_rows(self) -> None:
        """Turn the kept rows into (mean, M2) once they can no longer give the exact factor."""
        if self._rows is None:
            return
        kept, self._rows = self._rows, None
        if self._dim is None:
            return
        self._mean = np.zeros(self._dim, dtype=np.float64)
        self._m2 = np.zeros((self._dim, self._dim), dtype=np.float64)
        count, self._n = self._n, 0
        if count:
            rows = np.concatenate(kept, axis=0)
            mean = rows.mean(axis=0)
            centred = rows - mean
            self._combine(count, mean, centred.T @ centred)

    def _combine(self, count: int, mean: np.ndarray, m2: np.ndarray) -> None:
        """Chan et al.: merge a block's (count, mean, M2) into the running state."""
        assert self._mean is not None and self._m2 is not None
        if self._n == 0:
            self._mean = mean.copy()
            self._m2 = m2.copy()
            self._n = count
            return
        total = self._n + count
        delta = mean - self._mean
        self._mean += delta * (count / total)
        self._m2 += m2
        self._m2 += np.outer(delta, delta) * (self._n * count / total)
        self._n = total

    def merge(self, other: StatsAccumulator) -> None:
        """Add everything `other` has seen (exactly: the result equals accumulating both streams)."""
        if not isinstance(other, StatsAccumulator):
            raise InputError(f"can only merge a StatsAccumulator, not {type(other).__name__}")
        if other._n == 0:
            return
        if self._dim is None:
            self._dim = other._dim
        elif other._dim is not None and other._dim != self._dim:
            raise InputError(f"cannot merge accumulators of dim {self._dim} and {other._dim}")
        assert self._dim is not None
        if self._rows is not None and other._rows is not None and self._n + other._n <= self._dim:
            # Snapshot first: `other` may be `self`, and extending a list while iterating it never ends.
            self._rows.extend([row.copy() for row in other._rows])
            self._n += other._n
            return
        self._fold_rows()
        if other._rows is not None:
            rows = np.concatenate(other._rows, axis=0)
            mean = rows.mean(axis=0)
            centred = rows - mean
            self._combine(rows.shape[0], mean, centred.T @ centred)
        else:
            assert other._mean is not None and other._m2 is not None
            self._combine(other._n, other._mean, other._m2)

    def moments(self) -> tuple[int, np.ndarray, np.ndarray]:
        """``(n, mean, M2)`` in float64: the whole mergeable state (``M2`` is the sum of squared deviations).

        What shards exchange: :meth:`from_moments` rebuilds an accumulator from it, and :meth:`merge` combines
        those exactly. Zeros of the accumulator's dimension when nothing was seen.

        Raises
        ------
        InputError
            Nothing seen and no dimension given.
        """
        if self._dim is None:
            raise InputError("an accumulator that has seen nothing and was given no dim has no moments")
        if self._rows is not None:
            if self._n == 0:
                return 0, np.zeros(self._dim), np.zeros((self._dim, self._dim))
            rows = np.concatenate(self._rows, axis=0)
            mean = rows.mean(axis=0)
            centred = rows - mean
            return self._n, mean, centred.T @ centred
        assert self._mean is not None and self._m2 is not None
        return self._n, self._mean.copy(), self._m2.copy()

    @classmethod
    def from_moments(cls, n: int, mean: np.ndarray, m2: np.ndarray) -> StatsAccumulator:
        """An accumulator holding ``(n, mean, M2)`` as :meth:`moments` gave them (for instance from another process).

        It carries no feature rows, so its statistics have no exact factor even when ``n <= dim``.

        Raises
        ------
        InputError
            `n` is not a non-negative integer; `mean` is not a finite ``(dim,)`` vector; `m2` is not a finite,
            symmetric ``(dim, dim)`` matrix with a non-negative diagonal (sums of squared deviations); moments no
            data could have: ``n == 1`` with a non-zero `m2` (one row deviates from its own mean by exactly 0), or
            ``n == 0`` with a non-zero `mean` or `m2` (:meth:`moments` of nothing is zeros). Nothing of this is
            checked again: :meth:`result` trusts the state as its own.
        """
        if not is_count(n, 0):
            raise InputError(f"from_moments: n must be a non-negative integer count of rows, not {n!r}")
        mean, m2 = _checked_moments(mean, m2)
        _check_moments_fit_count(int(n), mean, m2)
        accumulator = cls(dim=int(mean.shape[0]))
        accumulator._fold_rows()
        if n > 0:
            accumulator._combine(int(n), mean, m2)
        return accumulator

    def result(self, metadata: dict[str, MetadataValue] | None = None) -> Stats:
        """Return the statistics of everything seen so far (the accumulator can keep going).

        Raises
        ------
        InputError
            Fewer than 2 rows seen.
        """
        if self._n < 2:
            raise InputError(
                f"only {self._n} feature row(s) seen; a covariance needs at least 2 samples (FID needs thousands)"
            )
        if self._rows is not None:
            return Stats._from_checked_rows(np.concatenate(self._rows, axis=0), metadata)
        assert self._mean is not None and self._m2 is not None
        sigma = self._m2 / (self._n - 1)
        sigma = (sigma + sigma.T) * 0.5  # M2 sums gemm products, which BLAS does not keep exactly symmetric
        return Stats._computed(self._mean.copy(), sigma, self._n, metadata)


def _checked_moments(mean: Any, m2: Any) -> tuple[np.ndarray, np.ndarray]:
    """`mean` and `m2` of :meth:`StatsAccumulator.from_moments` as float64 arrays (m2 made exactly symmetric), or
    InputError naming the argument."""
    arrays = []
    for name, value in (("mean", mean), ("m2", m2)):
        try:
            arrays.append(np.array(value, dtype=np.float64))
        except Exception as exc:  # noqa: BLE001 - whatever the conversion raises (torch: RuntimeError)
            raise InputError(
                f"from_moments: {name} cannot be read as a float array ({exc}); pass numpy arrays"
            ) from exc
    mean64, m2_64 = arrays
    if mean64.ndim != 1 or mean64.size < 1:
        raise InputError(f"from_moments: mean has shape {mean64.shape}; it must be a (dim,) vector")
    dim = mean64.shape[0]
    check_dim(dim, "from_moments: mean")
    if m2_64.shape != (dim, dim):
        raise InputError(
            f"from_moments: m2 has shape {m2_64.shape} but mean has length {dim}; m2 must be the ({dim}, {dim}) "
            "sum of squared deviations of the same features (StatsAccumulator.moments())"
        )
    for name, array in (("mean", mean64), ("m2", m2_64)):
        if not np.isfinite(array).all():
            raise InputError(f"from_moments: {name} contains NaN or inf; pass the moments of valid features")
    symmetrised(m2_64, "m2", "from_moments", "StatsAccumulator.moments()")
    if np.any(np.diagonal(m2_64) < 0):
        raise InputError(
            "from_moments: m2 has negative entries on its diagonal; they are sums of squared deviations, never "
            "negative: pass StatsAccumulator.moments()"
        )
    return mean64, m2_64


def _check_moments_fit_count(n: int, mean: np.ndarray, m2: np.ndarray) -> None:
    """InputError for ``(n, mean, M2)`` that no rows can have (the few-row cases; larger `n` allow any PSD M2).

    Such moments were accepted and then skewed every merge silently: ``n = 1`` with ``M2 = 100 I`` merged into 49
    real rows more than doubled the covariance's diagonal, and ``n = 0`` with a mean was dropped without a word.
    """
    if n == 1 and np.any(m2 != 0.0):
        raise InputError(
            f"from_moments: n is 1 but m2 has non-zero entries (largest |entry| {np.abs(m2).max():.3g}); one row "
            "deviates from its own mean by exactly 0, so its m2 is all zeros: pass StatsAccumulator.moments() of "
            "that row, or the n the moments belong to"
        )
    if n == 0 and (np.any(mean != 0.0) or np.any(m2 != 0.0)):
        raise InputError(
            "from_moments: n is 0 but mean or m2 has non-zero entries; moments of no rows are zeros "
            "(StatsAccumulator.moments() of an empty accumulator): pass the n the moments belong to"
        )
