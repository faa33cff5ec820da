"""`Stats`: mean, covariance, sample count and metadata of one image set, validated; loading and saving."""

from __future__ import annotations

import copy
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union

import numpy as np

from fidkit._validate import check_features
from fidkit.errors import InputError, StatsFileError
from fidkit.stats.checks import EPS64, TINY, as_real_array, check_dim, storage_eps_of, stored_precision, symmetrised
from fidkit.statsfile import IDENTITY_KEYS, read_stats_file, write_stats_file

__all__ = ["Stats", "MetadataValue", "centred_factor", "check_metadata", "relabelled"]

logger = logging.getLogger(__name__)

MetadataValue = Union[str, int, float, bool]

# A stored factor must reproduce sigma's diagonal; float64 round-off is ~1e-16, a mismatched factor is O(1).
# (The distance verifies the whole factor before using it; this cheap check catches a swapped file early.)
_FACTOR_DIAG_RTOL = 1e-8
# Above this many rows, Stats.from_features goes through the accumulator in chunks so that memory stays
# bounded by chunk x dim instead of holding a float64 copy of all features.
_CHUNK_ROWS = 4096


# --------------------------------------------------------------------------------------------- validation


# The most round-off the statistics' precision may stand for, dim x eps in units of the variances (float16 allows about
# 100 features; float32 and float64 any fidkit reads).
_MAX_ROUND_OFF_UNITS = 0.1


def _check_mu_sigma(mu: Any, sigma: Any, where: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Validate and return float64 copies of a mean and covariance (sigma made exactly symmetric), and the machine
    epsilon of the precision sigma was given in (:attr:`Stats.storage_eps`).

    Raises InputError naming `where` (e.g. "side a" or a file) and what to do.
    """
    mu_array, sigma_array = as_real_array(mu, "mu", where), as_real_array(sigma, "sigma", where)
    mu64 = np.array(mu_array, dtype=np.float64)
    sigma64 = np.array(sigma_array, dtype=np.float64)
    if mu64.ndim != 1 or mu64.size < 1:
        raise InputError(f"{where}: mu has shape {mu64.shape}; it must be a 1-D vector of length dim")
    dim = mu64.shape[0]
    if sigma64.ndim != 2 or sigma64.shape[0] != sigma64.shape[1]:
        raise InputError(
            f"{where}: sigma has shape {sigma64.shape}; it must be a square (dim, dim) covariance matrix"
        )
    if sigma64.shape[0] != dim:
        raise InputError(
            f"{where}: mu has length {dim} but sigma is {sigma64.shape[0]}x{sigma64.shape[1]}; "
            "they must come from the same features"
        )
    # max |x| is NaN or inf exactly when x holds a NaN or an inf: one pass finds bad values.
    if not np.isfinite(mu64).all() or not math.isfinite(float(np.max(np.abs(sigma64)))):
        raise InputError(f"{where}: mu or sigma contains NaN or inf; recompute the statistics from valid features")
    symmetrised(sigma64, "sigma", where, "np.cov(features, rowvar=False)")
    if np.any(np.diagonal(sigma64) < 0):
        raise InputError(
            f"{where}: sigma has negative entries on its diagonal (variances); it is not a covariance matrix"
        )
    storage_eps = storage_eps_of(sigma_array)
    if dim * storage_eps > _MAX_ROUND_OFF_UNITS:
        # The checks allow dim * eps of round-off in units of the variances: in float16 past about 100 features that
        # is a whole variance, and a matrix that is no covariance (a correlation of 1.8) would pass as one.
        raise InputError(
            f"{where}: sigma is stored in {sigma_array.dtype}, too coarse for {dim} features (its round-off, "
            f"{dim} x {storage_eps:.1e}, could hide that it is no covariance); store the statistics in float32 or "
            "float64 (e.g. sigma.astype(numpy.float32))"
        )
    return mu64, sigma64, storage_eps


def check_metadata(metadata: Any) -> dict[str, MetadataValue]:
    """Metadata as files store it: str keys, and str/int/float/bool values (numpy scalars become Python ones)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InputError(f"metadata must be a dict of str -> str/int/float/bool, not {type(metadata).__name__}")
    checked: dict[str, MetadataValue] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise InputError(f"metadata key {key!r} is not a string")
        if isinstance(value, (np.generic,)):
            value = value.item()
        if not isinstance(value, (str, int, float, bool)):
            raise InputError(
                f"metadata[{key!r}] is a {type(value).__name__}; only str, int, float and bool are stored "
                "(convert it, e.g. with str())"
            )
        checked[key] = value
    return checked


def _read_only(array: np.ndarray) -> np.ndarray:
    # The distance remembers a factor of each Stats' sigma; frozen arrays keep it from going stale.
    array.flags.writeable = False
    return array


def _symmetric_gram(centred: np.ndarray, divisor: int) -> np.ndarray:
    """``centred.T @ centred / divisor``, exactly symmetric (BLAS gemm does not guarantee it bit for bit)."""
    gram = centred.T @ centred
    gram += gram.T.copy()
    gram *= 0.5 / divisor
    return gram


# --------------------------------------------------------------------------------------------- the exact factor


def centred_factor(centred: np.ndarray) -> np.ndarray:
    """Return the exact ``(dim, n - 1)`` factor of the covariance of ``n`` centred feature rows.

    The centred rows ``Xc`` (``n x dim``) satisfy ``sigma = Xc.T @ Xc / (n - 1)`` but have rank ``n - 1`` at
    most: their rows sum to zero. Reflecting them with the Householder matrix ``P`` that maps the all-ones
    vector onto the first axis puts that null direction in the first row (zero up to round-off), and the
    other ``n - 1`` rows carry the whole covariance. Dropping the first row removes the structural zero
    singular value, which an eigensolver would otherwise report as ``+-eps`` and whose square root would
    cost ``sqrt(eps)`` in the trace.

    Parameters
    ----------
    centred : numpy.ndarray
        ``(n, dim)`` float64, rows minus their mean, ``n >= 2``.

    Returns
    -------
    numpy.ndarray
        ``(dim, n - 1)`` float64 ``L`` with ``L @ L.T == sigma`` to round-off.
    """
    n_rows = centred.shape[0]
    sqrt_n = math.sqrt(n_rows)
    # P = I - 2 v v^T / (v^T v), v = 1 + sqrt(n) e_1, v^T v = 2 (n + sqrt(n)); rows 2..n of P @ Xc are
    # Xc_i - w with w = v^T Xc / (n + sqrt(n)) because v_i = 1 there.
    reflector = np.ones(n_rows, dtype=np.float64)
    reflector[0] += sqrt_n
    shift = (reflector @ centred) / (n_rows + sqrt_n)
    reflected = centred[1:] - shift
    reflected /= math.sqrt(n_rows - 1)
    # A transposed view, not a copy: BLAS takes either layout and this saves an (n x dim) float64 copy.
    return reflected.T


# --------------------------------------------------------------------------------------------- Stats


@dataclass(eq=False)
class Stats:
    """Mean, covariance and sample count of one set of features, with metadata.

    Parameters
    ----------
    mu : numpy.ndarray
        ``(dim,)`` mean feature; stored as float64.
    sigma : numpy.ndarray
        ``(dim, dim)`` covariance with ddof = 1; stored as float64, must be symmetric.
    n : int or None
        Number of samples. ``None`` for files from TTUR or pytorch-fid, which record only ``mu`` and ``sigma``.
    metadata : dict
        ``str -> str | int | float | bool``: feature_extractor, weights_sha256, resize_mode, fidkit_version,
        created, source_fingerprint, provider, lossy_inputs, n_skipped, ...
    factor : numpy.ndarray or None
        Exact ``(dim, r)`` square-root factor with ``sigma = factor @ factor.T`` and ``r <= n - 1``; kept (and
        saved) when ``n <= dim``. ``None`` otherwise (the distance factors ``sigma`` itself when it needs to).
    path : pathlib.Path or None
        The file these statistics were loaded from, for messages.

    Attributes
    ----------
    storage_eps : float
        Machine epsilon of the precision ``sigma`` (and ``factor``) were given or stored in: float64's (2.2e-16)
        for statistics fidkit computes, float32's (1.2e-7) for a file or arrays saved in float32, and so on. They
        are kept in float64 either way; the positive semidefiniteness checks of the distance allow the round-off
        of this precision (``docs/numerics.md``).

    Notes
    -----
    The arrays are copied and made read-only: the distance remembers the factor of ``sigma`` it computed
    for this object (:func:`fidkit.frechet.sqrt_factor`), and writable arrays would let that go stale.
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int | None = None
    metadata: dict[str, MetadataValue] = field(default_factory=dict)
    factor: np.ndarray | None = field(default=None, repr=False)
    path: Path | None = field(default=None, repr=False)
    # Not a field: set from the arrays given; the class default serves objects pickled before it existed.
    storage_eps: ClassVar[float] = EPS64
    # The precision sigma and factor were *given* in, which save() writes them back in: set only for arrays given
    # or loaded, never for results fidkit computes (a merge with float32 statistics has a float32 tolerance, but
    # its values are float64 and are written so). Class defaults: float64, also for objects pickled before.
    _sigma_given_eps: ClassVar[float] = EPS64
    _factor_given_eps: ClassVar[float] = EPS64

    def __post_init__(self) -> None:
        where = f"statistics {self.path}" if self.path is not None else "statistics"
        mu, sigma, storage_eps = _check_mu_sigma(self.mu, self.sigma, where)
        self.mu = _read_only(mu)
        self.sigma = _read_only(sigma)
        self.storage_eps = storage_eps  # type: ignore[misc]  # per object; ClassVar only for the default
        self._sigma_given_eps = storage_eps  # type: ignore[misc]
        if self.n is not None:
            if isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer)):
                raise InputError(f"{where}: n must be an int or None, not {type(self.n).__name__}")
            self.n = int(self.n)
            if self.n < 2:
                raise InputError(
                    f"{where}: n = {self.n}; a covariance needs at least 2 samples: use more images"
                )
        self.metadata = check_metadata(self.metadata)
        if self.factor is not None:
            self.factor = _read_only(self._checked_factor(self.factor, where))

    def _checked_factor(self, factor: Any, where: str) -> np.ndarray:
        given = as_real_array(factor, "factor", where)
        # A factor stored in float32 reproduces sigma to float32's round-off only.
        self._factor_given_eps = storage_eps_of(given)  # type: ignore[misc]
        self.storage_eps = max(self.storage_eps, self._factor_given_eps)  # type: ignore[misc]
        matrix = np.array(given, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[0] != self.dim or matrix.shape[1] < 1:
            raise InputError(f"{where}: factor has shape {matrix.shape}; expected ({self.dim}, rank)")
        if self.n is not None and matrix.shape[1] > self.n - 1:
            raise InputError(
                f"{where}: factor has {matrix.shape[1]} columns but a covariance of n = {self.n} samples has "
                f"rank <= {self.n - 1}"
            )
        if not np.isfinite(matrix).all():
            raise InputError(f"{where}: factor contains NaN or inf")
        # Cheap consistency check, O(dim * rank): the factor must reproduce sigma's diagonal.
        diagonal = np.einsum("ij,ij->i", matrix, matrix)
        mismatch = float(np.max(np.abs(diagonal - np.diagonal(self.sigma))))
        rtol = max(_FACTOR_DIAG_RTOL, 4.0 * self.storage_eps)
        if mismatch > rtol * max(float(np.max(np.diagonal(self.sigma))), TINY):
            raise InputError(
                f"{where}: factor @ factor.T does not reproduce sigma (diagonal off by {mismatch:.3g}); "
                "the factor belongs to other statistics: recompute them"
            )
        return matrix

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Unpickling bypasses __post_init__; keep the arrays read-only there too.
        self.__dict__.update(state)
        for array in (self.mu, self.sigma, self.factor):
            if array is not None:
                array.flags.writeable = False

    @classmethod
    def _computed(
        cls,
        mu: np.ndarray,
        sigma: np.ndarray,
        n: int,
        metadata: dict[str, MetadataValue] | None,
        factor: np.ndarray | None = None,
        storage_eps: float = EPS64,
    ) -> Stats:
        """Wrap float64 arrays fidkit has just computed (finite, exactly symmetric, owned), skipping validation.

        Validation copies and scans sigma several times (about 0.1 s at dim 2048); arrays that come out of
        from_features, the accumulator or merge are valid by construction and owned by nobody else. They carry
        float64 round-off, unless computed from statistics stored at a lower precision (`storage_eps`, a merge).
        """
        # The one check that is not by construction: squares of features beyond about 1e154 overflow float64,
        # and an inf covariance would make FID NaN. The diagonal suffices: the variances are sums of squares,
        # and every covariance is bounded by them (Cauchy-Schwarz), so a finite diagonal means a finite sigma.
        variances = np.diagonal(sigma)
        if not (np.isfinite(variances).all() and np.isfinite(mu).all()):
            raise InputError(
                "the features are too large for float64 statistics: their covariance overflows (variances beyond "
                f"{np.finfo(np.float64).max:.3g}, i.e. features beyond about 1e154 in magnitude); divide the features "
                "by a constant c and multiply the resulting FID by c**2"
            )
        stats = cls.__new__(cls)
        stats.mu = _read_only(mu)
        stats.sigma = _read_only(sigma)
        stats.n = int(n)
        stats.metadata = check_metadata(metadata)
        stats.factor = None if factor is None else _read_only(factor)
        stats.path = None
        stats.storage_eps = storage_eps  # type: ignore[misc]
        return stats

    # -- properties

    @property
    def dim(self) -> int:
        """Feature dimension."""
        return int(self.mu.shape[0])

    @property
    def is_foreign(self) -> bool:
        """True for statistics without a sample count (files from TTUR or pytorch-fid hold only mu and sigma)."""
        return self.n is None

    @property
    def trace(self) -> float:
        """``tr(sigma)``, the total variance."""
        return float(np.trace(self.sigma))

    # -- construction

    @classmethod
    def from_features(
        cls, features: Any, metadata: dict[str, MetadataValue] | None = None, *, keep_factor: bool = False
    ) -> Stats:
        """Compute statistics of an ``(N, dim)`` feature array in float64.

        Parameters
        ----------
        features : array_like
            ``(N, dim)`` float32 or float64, ``N >= 2``, finite.
        metadata : dict, optional
            Stored as is (see :class:`Stats`).
        keep_factor : bool
            Keep the exact factor (the reflected centred rows, ``dim x (N - 1)``) also when ``N > dim``, at
            ``N x dim`` float64 of memory: :func:`fidkit.fid_from_arrays` does, so that a small sample against a
            moderately larger one is compared through both exact factors, to round-off.

        Returns
        -------
        Stats
            With ``n = N``; for ``N <= dim`` (or with `keep_factor`) also the exact factor.

        Raises
        ------
        InputError
            Not 2-D, fewer than 2 rows, NaN or inf, more than :data:`fidkit.statsfile.MAX_STATS_DIM` columns.
        """
        array = check_features(features, "features")
        n_rows, dim = array.shape
        check_dim(dim, "features")
        if n_rows < 2:
            raise InputError(
                f"features has {n_rows} row; a covariance needs at least 2 samples (FID needs thousands)"
            )
        if n_rows > max(_CHUNK_ROWS, dim) and not keep_factor:
            from fidkit.stats.accumulator import StatsAccumulator

            accumulator = StatsAccumulator(dim)
            for start in range(0, n_rows, _CHUNK_ROWS):
                accumulator._update_checked(array[start : start + _CHUNK_ROWS])
            return accumulator.result(metadata)
        return cls._from_checked_rows(np.asarray(array, dtype=np.float64), metadata, keep_factor=keep_factor)

    @classmethod
    def _from_checked_rows(
        cls, rows: np.ndarray, metadata: dict[str, MetadataValue] | None, *, keep_factor: bool = False
    ) -> Stats:
        n_rows, dim = rows.shape
        # Two-pass: subtract the (pairwise-summed) mean first, so the products never cancel.
        mu = rows.mean(axis=0, dtype=np.float64)
        centred = rows - mu
        if not (n_rows <= dim or keep_factor):
            return cls._computed(mu, _symmetric_gram(centred, n_rows - 1), n_rows, metadata)
        factor = np.ascontiguousarray(centred_factor(centred))
        # sigma from the factor, not from the centred rows: the rounded mean leaves the centred rows a residual
        # sum r, and their Gram carries an extra r r^T / n that the factor (which drops the all-ones direction)
        # does not. That is round-off against any real spread, but for rows that are (nearly) all the same it is
        # all there is, and a sigma and factor that disagree are refused as "belonging to other statistics".
        # L L^T is the corrected two-pass covariance (Chan, Golub & LeVeque), as exact as the plain one.
        sigma = _symmetric_gram(factor.T, 1)
        return cls._computed(mu, sigma, n_rows, metadata, factor)

    def merge(self, other: Stats) -> Stats:
        """Return the statistics of the union of the two sample sets (exact, Chan et al.'s pairwise update).

        ``sigma`` of the union is ``((n_a - 1) sigma_a + (n_b - 1) sigma_b + n_a n_b / n delta delta^T) / (n - 1)``
        with ``delta = mu_b - mu_a``; it agrees with the statistics of the concatenated features to round-off.
        When the union still has ``n <= dim`` and both sides carry their exact factor, the union's exact factor
        is built from them (their columns, scaled, plus one column along ``delta``).

        Raises
        ------
        InputError
            Different dimensions, a side without ``n`` (TTUR/pytorch-fid files cannot be merged), or metadata
            saying the two were computed with different feature extractors.
        """
        if not isinstance(other, Stats):
            raise InputError(f"can only merge Stats with Stats, not {type(other).__name__}")
        if self.dim != other.dim:
            raise InputError(f"cannot merge statistics of dimension {self.dim} and {other.dim}")
        if self.n is None or other.n is None:
            raise InputError(
                "cannot merge statistics without a sample count (a TTUR or pytorch-fid file records only mu "
                "and sigma); recompute them with fidkit"
            )
        metadata = _merge_metadata(self.metadata, other.metadata)
        n_a, n_b = self.n, other.n
        n_total = n_a + n_b
        delta = other.mu - self.mu
        mu = self.mu + delta * (n_b / n_total)
        m2 = (n_a - 1) * self.sigma + (n_b - 1) * other.sigma + np.outer(delta, delta) * (n_a * n_b / n_total)
        sigma = m2 / (n_total - 1)  # a sum of exactly symmetric terms: exactly symmetric
        factor = None
        if n_total <= self.dim and self.factor is not None and other.factor is not None:
            factor = np.hstack(
                [
                    self.factor * math.sqrt((n_a - 1) / (n_total - 1)),
                    other.factor * math.sqrt((n_b - 1) / (n_total - 1)),
                    (delta * math.sqrt(n_a * n_b / (n_total * (n_total - 1))))[:, None],
                ]
            )
        # Round-off of a side stored in float32 stays in the union.
        return Stats._computed(mu, sigma, n_total, metadata, factor, max(self.storage_eps, other.storage_eps))

    # -- files

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write the statistics to an ``.npz`` file, atomically (format: :mod:`fidkit.statsfile`).

        The file holds ``mu`` and ``sigma`` (float64; sigma in float32 only for statistics given or read as float32
        arrays and not recomputed: a merge is written in float64), which TTUR and pytorch-fid read unchanged, and
        the extra keys ``n``, ``factor`` (only when ``n <= dim``), ``fidkit_format_version`` and
        ``fidkit_metadata_json``, so it loads with ``allow_pickle=False``. The path is used exactly as given
        (no ``.npz`` is appended).

        Raises
        ------
        OverwriteError
            `path` exists and `overwrite` is False.
        StatsFileError
            `path` is a folder, or cannot be written (its parent is a file, no permission, disk full).
        """
        # sigma and factor in the precision they were given in (float32 for a float32 file), so that read back they
        # are allowed the same round-off; anything fidkit computed (a merge, too) in float64, losing nothing.
        factor = None if self.factor is None else stored_precision(self.factor, self._factor_given_eps)
        write_stats_file(
            path, mu=self.mu, sigma=stored_precision(self.sigma, self._sigma_given_eps), n=self.n, factor=factor,
            metadata=self.metadata, overwrite=overwrite,
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> Stats:
        """Read statistics from an ``.npz`` written by fidkit, TTUR or pytorch-fid.

        Files holding only ``mu`` and ``sigma`` load with ``n = None`` (:attr:`is_foreign` is True). A file in ADM's
        reference batch layout (``mu_s``, ``sigma_s``, ``arr_0`` beside them) loads as a
        :class:`fidkit.stats.reference.ReferenceBatch`, which also carries those.

        Raises
        ------
        StatsFileError
            Missing, unreadable or corrupt file; no ``mu``/``sigma``; wrong shapes; NaN/inf; non-symmetric
            sigma; written by a newer fidkit. The message names the file and what to do.
        """
        file_path = Path(path)
        contents = read_stats_file(file_path)
        try:
            stats = cls(
                mu=contents.mu,
                sigma=contents.sigma,
                n=contents.n,
                metadata=contents.metadata,
                factor=contents.factor,
                path=file_path,
            )
        except InputError as exc:
            raise StatsFileError(f"{exc}; the file is corrupt or not FID statistics: recompute it") from exc
        if not contents.reference_keys:
            return stats
        from fidkit.stats.reference import with_reference_contents  # imports this module

        # ADM's reference batches also hold the spatial statistics (mu_s, sigma_s) and images (arr_0).
        return with_reference_contents(stats, file_path)


def _merge_metadata(
    first: dict[str, MetadataValue], second: dict[str, MetadataValue]
) -> dict[str, MetadataValue]:
    # extractor_identity too: two configurations of one named extractor (another layer, say) are another space.
    for key in (*IDENTITY_KEYS, "extractor_identity"):
        if key in first and key in second and first[key] != second[key]:
            raise InputError(
                f"cannot merge statistics with different {key} ({first[key]!r} vs {second[key]!r}): their "
                "features live in different spaces; recompute both with the same extractor"
            )
    merged: dict[str, MetadataValue] = {}
    for key in first.keys() & second.keys():
        if first[key] == second[key]:
            merged[key] = first[key]
    # Counts add up and "any lossy input" stays true across shards; everything else that differs
    # (creation time, source fingerprint) describes one shard only and is dropped.
    if isinstance(first.get("n_skipped"), int) and isinstance(second.get("n_skipped"), int):
        merged["n_skipped"] = int(first["n_skipped"]) + int(second["n_skipped"])
    if "lossy_inputs" in first or "lossy_inputs" in second:
        merged["lossy_inputs"] = bool(first.get("lossy_inputs", False)) or bool(second.get("lossy_inputs", False))
    return merged


_UNCHANGED: Any = object()


def relabelled(entry: Any, *, metadata: Any = _UNCHANGED, path: Any = _UNCHANGED) -> Any:
    """A copy of a :class:`Stats` or :class:`~fidkit.features.Features` with other `metadata` (checked) or `path`,
    sharing its arrays: they were checked when it was made and are read-only, so they are neither copied nor
    checked again (that costs about 70 ms for 2048-dimensional statistics, on every cache hit)."""
    copied = copy.copy(entry)
    if metadata is not _UNCHANGED:
        object.__setattr__(copied, "metadata", check_metadata(metadata))  # Features is a frozen dataclass
    if path is not _UNCHANGED:
        object.__setattr__(copied, "path", None if path is None else Path(path))
    return copied
