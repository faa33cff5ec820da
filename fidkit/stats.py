"""Feature statistics: mean, covariance, sample count, a square-root factor, and their ``.npz`` files.

A :class:`Stats` holds what the Fréchet distance needs from one set of images: ``mu`` (float64, the mean
feature), ``sigma`` (float64, the covariance with ddof = 1), ``n`` (the number of images, ``None`` for files
written by TTUR or pytorch-fid, which do not record it) and free-form metadata.

It also holds a *square-root factor* ``L`` with ``sigma = L @ L.T``. The distance never needs ``sigma``'s own
square root, only a factor (see ``docs/numerics.md``):

* when ``n <= dim`` the factor is built from the features themselves, has ``n - 1`` columns, is exact, and is
  saved in the file (it is smaller than ``sigma``);
* otherwise it is a pivoted Cholesky factor computed from ``sigma`` the first time a comparison needs it and
  cached on the object, so that comparing many sets against one reference pays for it once.

:class:`StatsAccumulator` builds a :class:`Stats` from feature batches in float64 with memory bounded by
``dim x dim``, and merges exactly (Chan et al.'s pairwise update), so shards computed in separate processes
combine into the statistics of their union.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import scipy.linalg

from fidkit._fs import atomic_write
from fidkit.errors import InputError, OverwriteError, StatsFileError

__all__ = ["STATS_FORMAT_VERSION", "Stats", "StatsAccumulator", "SqrtFactor"]

logger = logging.getLogger(__name__)

#: What :func:`numpy.load` raises for a file that is not (or no longer) a whole .npy / .npz:
#: an empty file is an EOFError, a cut zip a BadZipFile, text a ValueError.
NUMPY_LOAD_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)


def numpy_load_problem(exc: BaseException) -> str:
    """numpy's reason for refusing a file, fit for a user.

    With ``allow_pickle=False`` numpy reports any file without a .npy or zip header as "pickled
    (object) data" and suggests unpickling it: wrong for a text or image file, and advice fidkit
    must never give, since a pickle can run code.
    """
    text = str(exc) or type(exc).__name__
    if isinstance(exc, EOFError):
        return "the file is empty or cut short"
    if "pickle" in text:
        return "neither a .npy nor a .npz file: it has no numpy or zip header"
    return text

#: Version of the extra keys fidkit writes beside ``mu`` and ``sigma``. Bump it when their meaning changes.
STATS_FORMAT_VERSION: int = 1

MetadataValue = Union[str, int, float, bool]

# Keys of the .npz file. ``mu`` and ``sigma`` are the ones TTUR and pytorch-fid read; the others are ignored
# by them and carry what fidkit needs to stay exact and traceable.
_KEY_MU = "mu"
_KEY_SIGMA = "sigma"
_KEY_N = "n"
_KEY_FACTOR = "factor"
_KEY_VERSION = "fidkit_format_version"
_KEY_METADATA = "fidkit_metadata_json"
_FIDKIT_KEYS = frozenset({_KEY_N, _KEY_FACTOR, _KEY_VERSION, _KEY_METADATA})

# A covariance written by np.cov is symmetric to round-off only; anything beyond this relative asymmetry is
# not a covariance (a transposed or corrupt matrix) and is refused rather than silently symmetrised.
_SYMMETRY_RTOL = 1e-6
# A stored factor must reproduce sigma's diagonal; float64 round-off is ~1e-16, a mismatched factor is O(1).
_FACTOR_DIAG_RTOL = 1e-8
# Positive semidefiniteness check of a pivoted Cholesky factor (see _check_factor_reproduces): relative tolerance
# max(floor, slack * dim^2 * eps), probes drawn once from a fixed seed so the check is deterministic.
_PSD_CHECK_RTOL_FLOOR = 1e-9
_PSD_CHECK_SLACK = 64.0
_PSD_PROBES = 2
_PSD_PROBE_SEED = 20151205
# Above this many rows, Stats.from_features goes through the accumulator in chunks so that memory stays
# bounded by chunk x dim instead of holding a float64 copy of all features.
_CHUNK_ROWS = 4096
# Metadata keys that identify the feature space: shards that differ in these measure different things.
_IDENTITY_KEYS = ("feature_extractor", "weights_sha256", "resize_mode")


# --------------------------------------------------------------------------------------------- validation


def _check_features(features: Any, name: str) -> np.ndarray:
    """Return `features` as a 2-D float array (float32 kept, other types to float64); InputError if unusable."""
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


def _check_mu_sigma(mu: Any, sigma: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return float64 copies of a mean and covariance; symmetrise sigma exactly.

    Raises InputError naming `where` (e.g. "side a" or a file) and what to do.
    """
    try:
        mu64 = np.array(mu, dtype=np.float64)
        sigma64 = np.array(sigma, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: mu and sigma must be real float arrays ({exc})") from exc
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
    # max |x| is NaN or inf exactly when x holds a NaN or an inf: one pass finds both the scale and bad values.
    scale = float(np.max(np.abs(sigma64)))
    if not np.isfinite(mu64).all() or not math.isfinite(scale):
        raise InputError(f"{where}: mu or sigma contains NaN or inf; recompute the statistics from valid features")
    skew = sigma64 - sigma64.T
    asymmetry = float(np.max(np.abs(skew)))
    if asymmetry > _SYMMETRY_RTOL * scale:
        raise InputError(
            f"{where}: sigma is not symmetric (max |sigma - sigma.T| = {asymmetry:.3g} against entries up to "
            f"{scale:.3g}); a covariance matrix is symmetric: pass np.cov(features, rowvar=False)"
        )
    if np.any(np.diagonal(sigma64) < 0):
        raise InputError(
            f"{where}: sigma has negative entries on its diagonal (variances); it is not a covariance matrix"
        )
    if asymmetry > 0.0:
        # Exact symmetry makes every later product and eigensolve see one matrix, not two that differ by
        # round-off: sigma - skew / 2 = (sigma + sigma.T) / 2.
        skew *= 0.5
        sigma64 -= skew
    return mu64, sigma64


def _check_metadata(metadata: Any) -> dict[str, MetadataValue]:
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
    # Stats cache a factor of sigma; freezing the arrays keeps the cache from going stale behind our back.
    array.flags.writeable = False
    return array


def _symmetric_gram(centred: np.ndarray, divisor: int) -> np.ndarray:
    """``centred.T @ centred / divisor``, exactly symmetric (BLAS gemm does not guarantee it bit for bit)."""
    gram = centred.T @ centred
    gram += gram.T.copy()
    gram *= 0.5 / divisor
    return gram


# --------------------------------------------------------------------------------------------- factors


@dataclass(frozen=True)
class SqrtFactor:
    """A square-root factor ``L`` of a covariance: ``sigma = L @ L.T`` up to round-off.

    Attributes
    ----------
    matrix : numpy.ndarray
        ``(dim, rank)`` float64.
    kind : str
        ``"features"`` (exact, from the centred features; ``rank = n - 1``) or ``"pivoted-cholesky"``
        (computed from ``sigma``; rank is the numerical rank found by the pivoting).
    dropped_trace : float
        ``tr(sigma) - ||L||_F^2``: the part of sigma's spectrum the factor leaves out because the pivoted
        Cholesky stopped at round-off level. Zero for ``"features"``.
    """

    matrix: np.ndarray
    kind: str
    dropped_trace: float = 0.0

    @property
    def rank(self) -> int:
        """Number of columns of the factor."""
        return int(self.matrix.shape[1])


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


def pivoted_cholesky_factor(sigma: np.ndarray, where: str = "sigma") -> SqrtFactor:
    """Return a rank-revealing factor of a positive semidefinite ``sigma`` by pivoted Cholesky (LAPACK ``pstrf``).

    Pivoting on the largest remaining diagonal makes the factorisation stop at the numerical rank (LAPACK's
    tolerance ``dim * eps * max(diag)``) instead of failing on a singular covariance, so covariances of
    ``n <= dim`` samples loaded from files without a factor get a factor of rank about ``n - 1``. It costs a
    fraction of an eigendecomposition (``dim^3 / 3`` flops).

    Parameters
    ----------
    sigma : numpy.ndarray
        ``(dim, dim)`` float64, symmetric, finite.
    where : str
        What `sigma` belongs to (a file, an argument), for the error message.

    Returns
    -------
    SqrtFactor
        ``kind="pivoted-cholesky"``; ``dropped_trace`` is the (round-off sized, possibly slightly negative)
        ``tr(sigma - L L^T)``.

    Raises
    ------
    InputError
        `sigma` is not positive semidefinite: ``L @ L.T`` does not reproduce it.
    """
    lower, pivots, rank, info = scipy.linalg.lapack.dpstrf(sigma, lower=1)
    if info < 0:
        raise InputError(f"pivoted Cholesky rejected argument {-info}; this is a bug in fidkit, please report it")
    rank = int(rank)
    triangle = np.tril(lower)[:, :rank]
    factor = np.empty_like(triangle)
    # pstrf factors P^T sigma P = T T^T; undo the permutation on the rows so that sigma = F F^T.
    factor[pivots - 1] = triangle
    factor = np.ascontiguousarray(factor)
    dropped = float(np.trace(sigma) - np.einsum("ij,ij->", factor, factor))
    _check_factor_reproduces(sigma, factor, dropped, where)
    return SqrtFactor(matrix=factor, kind="pivoted-cholesky", dropped_trace=dropped)


def _check_factor_reproduces(sigma: np.ndarray, factor: np.ndarray, dropped: float, where: str) -> None:
    """Raise InputError unless ``factor @ factor.T`` equals `sigma` to the accuracy pivoted Cholesky guarantees.

    pstrf stops as soon as the largest remaining diagonal is at most ``dim * eps * max(diag)``, and on an
    indefinite matrix that happens at the first negative pivot: it returns a factor of a *different* matrix
    without any error (``[[1, 2], [2, 1]]`` gives ``L = [1, 2]^T``). On a positive semidefinite sigma the part
    left out is itself positive semidefinite with diagonal below that tolerance, so its norm is at most
    ``dim^2 * eps * max(diag)``. Two checks separate the cases:

    * the residual trace ``tr(sigma - L L^T)``, which is ``>= 0`` up to round-off for a PSD sigma;
    * fixed random probes ``v``: ``||(sigma - L L^T) v||`` against ``max(diag) * ||v||``. The trace alone
      misses indefinite matrices whose residual has zero trace (``[[1,0,0],[0,0,1],[0,1,0]]``); a residual
      that is not small along random directions cannot be. Each probe costs ``O(dim^2)``, nothing next to the
      ``dim^3 / 3`` of the factorisation.
    """
    dim = sigma.shape[0]
    if dim == 0:
        return
    largest_diagonal = float(np.max(np.diagonal(sigma)))
    # A zero (or all-negative-diagonal) sigma: any nonzero entry is indefiniteness; compare against the entries.
    scale = max(largest_diagonal, float(np.max(np.abs(sigma))) if largest_diagonal <= 0.0 else 0.0)
    if scale == 0.0:
        return
    # Well above pstrf's truncation (<= dim^2 eps max(diag)) and round-off (dim eps ||sigma||), and below any
    # negative eigenvalue that is more than round-off: 1e-9 relative is about 1e-7 of the standard deviation.
    # The absolute term is the same bound in units of the smallest subnormal: a sigma with entries near 1e-320
    # has lost its relative precision to underflow and says nothing about definiteness.
    tolerance = max(_PSD_CHECK_RTOL_FLOOR, _PSD_CHECK_SLACK * dim * dim * np.finfo(np.float64).eps) * scale
    tolerance += _PSD_CHECK_SLACK * dim * dim * math.ulp(0.0)
    probes = np.random.default_rng(_PSD_PROBE_SEED).standard_normal((_PSD_PROBES, dim))
    probe_norms = np.linalg.norm(probes, axis=1)
    # Work in units of `scale`: covariances of features near 1e150 have entries near 1e300, and sigma @ v would
    # overflow. Dividing the probes by a power of two (not the dim x dim sigma: no copy) keeps every product
    # near 1; the exponent is clipped so that the divisor itself stays finite.
    exponent = int(np.clip(math.frexp(scale)[1], -1000, 1000))
    scaled_probes = np.ldexp(probes, -exponent)
    probe_error = _probe_residual(sigma, factor, scaled_probes, probe_norms) * math.ldexp(1.0, exponent)
    if not math.isfinite(probe_error):
        # Only for a scale beyond the clipped exponent (sigma entries below 1e-301): scale the matrices instead.
        # Divide, not multiply by 1 / scale, which overflows for a subnormal scale.
        unit_sigma, unit_factor = sigma / scale, np.ascontiguousarray(factor / math.sqrt(scale))
        probe_error = _probe_residual(unit_sigma, unit_factor, probes, probe_norms) * scale
    if dropped < -dim * tolerance or not probe_error <= tolerance:
        raise InputError(
            f"{where}: sigma is not positive semidefinite (not a covariance matrix): its pivoted Cholesky factor "
            f"leaves a residual of {max(probe_error, -dropped) / scale:.3g} relative to its largest variance "
            "(a covariance has none beyond round-off); check that it was computed as a covariance of features "
            "and not edited or corrupted"
        )


def _probe_residual(sigma: np.ndarray, factor: np.ndarray, probes: np.ndarray, probe_norms: np.ndarray) -> float:
    """Return ``max_k ||(sigma - L L^T) v_k|| / ||v_k||`` for the rows ``v_k`` of `probes`.

    Through scipy's BLAS, the library pstrf just ran on: handing over to numpy's separately linked OpenBLAS
    right after it makes the two thread pools fight for the cores, which measured 0.11 s instead of 0.003 s
    at dim 2048 on 2 cores. ``sigma v`` reads only the lower triangle (``symv``: half the memory traffic of a
    general product, and the same triangle pstrf factored); the transposes are views in the layout BLAS wants,
    so no ``dim x dim`` copy is made for C-ordered inputs.
    """
    columns = probes.T  # (dim, k), Fortran-ordered view
    # sigma.T is Fortran-ordered; its upper triangle (lower=0) is sigma's lower triangle.
    sigma_v = np.stack([scipy.linalg.blas.dsymv(1.0, sigma.T, probe, lower=0) for probe in probes], axis=1)
    projected = scipy.linalg.blas.dgemm(1.0, factor.T, columns)  # L^T v, (rank, k)
    residual = scipy.linalg.blas.dgemm(
        -1.0, factor.T, projected, beta=1.0, c=np.asfortranarray(sigma_v), trans_a=1, overwrite_c=1
    )
    return float(np.max(np.linalg.norm(residual, axis=0) / probe_norms))


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
        saved) when ``n <= dim``. ``None`` otherwise: :meth:`sqrt_factor` computes one on demand.
    path : pathlib.Path or None
        The file these statistics were loaded from, for messages.

    Notes
    -----
    The arrays are copied and made read-only: a factor of ``sigma`` is cached on the object the first time
    a comparison needs it, and writable arrays would let that cache go stale.
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int | None = None
    metadata: dict[str, MetadataValue] = field(default_factory=dict)
    factor: np.ndarray | None = field(default=None, repr=False)
    path: Path | None = field(default=None, repr=False)
    _cached_factor: SqrtFactor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        where = f"statistics {self.path}" if self.path is not None else "statistics"
        mu, sigma = _check_mu_sigma(self.mu, self.sigma, where)
        self.mu = _read_only(mu)
        self.sigma = _read_only(sigma)
        if self.n is not None:
            if isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer)):
                raise InputError(f"{where}: n must be an int or None, not {type(self.n).__name__}")
            self.n = int(self.n)
            if self.n < 2:
                raise InputError(
                    f"{where}: n = {self.n}; a covariance needs at least 2 samples: use more images"
                )
        self.metadata = _check_metadata(self.metadata)
        if self.factor is not None:
            self.factor = _read_only(self._checked_factor(self.factor, where))

    def _checked_factor(self, factor: Any, where: str) -> np.ndarray:
        matrix = np.array(factor, dtype=np.float64)
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
        if mismatch > _FACTOR_DIAG_RTOL * max(float(np.max(np.diagonal(self.sigma))), np.finfo(np.float64).tiny):
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
    ) -> Stats:
        """Wrap float64 arrays fidkit has just computed (finite, exactly symmetric, owned), skipping validation.

        Validation copies and scans sigma several times (about 0.1 s at dim 2048); arrays that come out of
        from_features, the accumulator or merge are valid by construction and owned by nobody else.
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
        stats.metadata = _check_metadata(metadata)
        stats.factor = None if factor is None else _read_only(factor)
        stats.path = None
        stats._cached_factor = None
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

    @property
    def has_factor(self) -> bool:
        """True if a square-root factor is at hand without computation (stored or already cached)."""
        return self.factor is not None or self._cached_factor is not None

    def sqrt_factor(self) -> SqrtFactor:
        """Return a factor ``L`` with ``sigma = L @ L.T``, computing and caching it on first use.

        The stored exact factor when there is one (``n <= dim``); otherwise a pivoted Cholesky factor of
        ``sigma``, computed once per object and reused by every later comparison.
        """
        if self.factor is not None:
            return SqrtFactor(matrix=self.factor, kind="features", dropped_trace=0.0)
        if self._cached_factor is None:
            where = f"statistics {self.path}" if self.path is not None else "statistics"
            factor = pivoted_cholesky_factor(self.sigma, where)
            factor.matrix.flags.writeable = False
            self._cached_factor = factor
        return self._cached_factor

    def rank_bound(self) -> int:
        """Upper bound on the rank of sigma known without computation: ``min(n - 1, dim)`` or the factor's rank."""
        if self.factor is not None:
            return int(self.factor.shape[1])
        if self._cached_factor is not None:
            return self._cached_factor.rank
        if self.n is not None:
            return min(self.n - 1, self.dim)
        return self.dim

    # -- construction

    @classmethod
    def from_features(cls, features: Any, metadata: dict[str, MetadataValue] | None = None) -> Stats:
        """Compute statistics of an ``(N, dim)`` feature array in float64.

        Parameters
        ----------
        features : array_like
            ``(N, dim)`` float32 or float64, ``N >= 2``, finite.
        metadata : dict, optional
            Stored as is (see :class:`Stats`).

        Returns
        -------
        Stats
            With ``n = N``; for ``N <= dim`` also the exact factor (``dim x (N - 1)``).

        Raises
        ------
        InputError
            Not 2-D, fewer than 2 rows, NaN or inf.
        """
        array = _check_features(features, "features")
        n_rows, dim = array.shape
        if n_rows < 2:
            raise InputError(
                f"features has {n_rows} row; a covariance needs at least 2 samples (FID needs thousands)"
            )
        if n_rows > max(_CHUNK_ROWS, dim):
            accumulator = StatsAccumulator(dim)
            for start in range(0, n_rows, _CHUNK_ROWS):
                accumulator._update_checked(array[start : start + _CHUNK_ROWS])
            return accumulator.result(metadata)
        return cls._from_checked_rows(np.asarray(array, dtype=np.float64), metadata)

    @classmethod
    def _from_checked_rows(cls, rows: np.ndarray, metadata: dict[str, MetadataValue] | None) -> Stats:
        n_rows, dim = rows.shape
        # Two-pass: subtract the (pairwise-summed) mean first, so the products never cancel.
        mu = rows.mean(axis=0, dtype=np.float64)
        centred = rows - mu
        sigma = _symmetric_gram(centred, n_rows - 1)
        factor = np.ascontiguousarray(centred_factor(centred)) if n_rows <= dim else None
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
        return Stats._computed(mu, sigma, n_total, metadata, factor)

    # -- files

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write the statistics to an ``.npz`` file, atomically.

        The file holds ``mu`` and ``sigma`` (float64), which TTUR and pytorch-fid read unchanged, and the extra
        keys ``n``, ``factor`` (only when ``n <= dim``), ``fidkit_format_version`` and
        ``fidkit_metadata_json`` (a 0-d unicode array holding JSON), so it loads with ``allow_pickle=False``.
        The path is used exactly as given (no ``.npz`` is appended).

        Raises
        ------
        OverwriteError
            `path` exists and `overwrite` is False.
        StatsFileError
            `path` is a folder, or cannot be written (its parent is a file, no permission, disk full).
        """
        arrays: dict[str, np.ndarray] = {
            _KEY_MU: np.asarray(self.mu, dtype=np.float64),
            _KEY_SIGMA: np.asarray(self.sigma, dtype=np.float64),
            _KEY_VERSION: np.asarray(STATS_FORMAT_VERSION, dtype=np.int64),
            _KEY_METADATA: np.asarray(json.dumps(self.metadata, sort_keys=True), dtype=np.str_),
        }
        if self.n is not None:
            arrays[_KEY_N] = np.asarray(self.n, dtype=np.int64)
        if self.factor is not None:
            arrays[_KEY_FACTOR] = np.asarray(self.factor, dtype=np.float64)
        target = Path(path)
        if target.is_dir():
            # Checked first: os.replace would fail only after the whole file was written, with IsADirectoryError.
            raise StatsFileError(
                f"{target} is a folder; give a file path for the statistics, e.g. {target / 'stats.npz'}"
            )
        try:
            with atomic_write(target, overwrite=overwrite) as temporary:
                # Through a handle: np.savez appends ".npz" to a path that lacks it, which would miss the rename.
                with open(temporary, "wb") as stream:
                    np.savez(stream, **arrays)
        except OverwriteError:
            raise
        except OSError as exc:
            # A parent that is a regular file, a read-only or full disk, no permission: all say the same thing.
            raise StatsFileError(
                f"cannot write statistics to {target} ({exc.strerror or exc}); choose a path in a writable folder"
            ) from exc
        logger.debug("saved statistics (n=%s, dim=%d) to %s", self.n, self.dim, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Stats:
        """Read statistics from an ``.npz`` written by fidkit, TTUR or pytorch-fid.

        Files holding only ``mu`` and ``sigma`` load with ``n = None`` (:attr:`is_foreign` is True).

        Raises
        ------
        StatsFileError
            Missing, unreadable or corrupt file; no ``mu``/``sigma``; wrong shapes; NaN/inf; non-symmetric
            sigma; written by a newer fidkit. The message names the file and what to do.
        """
        file_path = Path(path)
        if not file_path.is_file():
            raise StatsFileError(f"{file_path}: no such statistics file; check the path or compute the statistics")
        try:
            loaded = np.load(file_path, allow_pickle=False)
        except NUMPY_LOAD_ERRORS as exc:
            raise StatsFileError(
                f"{file_path}: not a readable .npz statistics file ({numpy_load_problem(exc)}); recompute it or "
                "pass the image folder"
            ) from exc
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise StatsFileError(
                f"{file_path}: holds a single array, not statistics; a statistics file is an .npz with keys "
                "'mu' and 'sigma'"
            )
        try:
            with loaded:
                keys = set(loaded.files)
                missing = [key for key in (_KEY_MU, _KEY_SIGMA) if key not in keys]
                if missing:
                    raise StatsFileError(
                        f"{file_path}: has no {' or '.join(repr(k) for k in missing)} (keys: "
                        f"{', '.join(sorted(keys)) or 'none'}); this is not an FID statistics file"
                    )
                contents = {key: loaded[key] for key in keys & ({_KEY_MU, _KEY_SIGMA} | _FIDKIT_KEYS)}
        except StatsFileError:
            raise
        except (*NUMPY_LOAD_ERRORS, KeyError) as exc:
            raise StatsFileError(
                f"{file_path}: corrupt statistics file ({exc}); delete it and compute the statistics again"
            ) from exc
        return cls._from_file_contents(contents, file_path)

    @classmethod
    def _from_file_contents(cls, contents: dict[str, np.ndarray], file_path: Path) -> Stats:
        version = 0
        if _KEY_VERSION in contents:
            version = _scalar_int(contents[_KEY_VERSION], _KEY_VERSION, file_path)
            if version > STATS_FORMAT_VERSION:
                raise StatsFileError(
                    f"{file_path}: written by a newer fidkit (format {version}, this one reads up to "
                    f"{STATS_FORMAT_VERSION}); upgrade fidkit"
                )
        n_samples = _scalar_int(contents[_KEY_N], _KEY_N, file_path) if _KEY_N in contents else None
        metadata: dict[str, MetadataValue] = {}
        if _KEY_METADATA in contents:
            raw = contents[_KEY_METADATA]
            try:
                metadata = json.loads(str(raw.item()) if raw.ndim == 0 else "")
            except (ValueError, TypeError) as exc:
                raise StatsFileError(f"{file_path}: metadata is not valid JSON ({exc}); recompute the file") from exc
        for key in (_KEY_MU, _KEY_SIGMA, _KEY_FACTOR):
            if key in contents and not np.issubdtype(contents[key].dtype, np.number):
                raise StatsFileError(f"{file_path}: {key!r} has dtype {contents[key].dtype}, not numbers")
        try:
            return cls(
                mu=contents[_KEY_MU],
                sigma=contents[_KEY_SIGMA],
                n=n_samples,
                metadata=metadata,
                factor=contents.get(_KEY_FACTOR),
                path=file_path,
            )
        except InputError as exc:
            raise StatsFileError(f"{exc}; the file is corrupt or not FID statistics: recompute it") from exc


def _scalar_int(value: np.ndarray, key: str, file_path: Path) -> int:
    if value.ndim != 0 or not np.issubdtype(value.dtype, np.integer):
        raise StatsFileError(f"{file_path}: {key!r} should be a single integer, found {value.dtype} {value.shape}")
    return int(value)


def _merge_metadata(
    first: dict[str, MetadataValue], second: dict[str, MetadataValue]
) -> dict[str, MetadataValue]:
    for key in _IDENTITY_KEYS:
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


# --------------------------------------------------------------------------------------------- streaming


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
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1):
            raise InputError(f"dim must be a positive int, not {dim!r}")
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
        batch = _check_features(features, "feature batch")
        self._update_checked(batch)

    def _update_checked(self, batch: np.ndarray) -> None:
        if self._dim is None:
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
