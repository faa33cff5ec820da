"""Checks of statistics arrays shared by :class:`~fidkit.stats.Stats`, the accumulator and the distance's factors:
the one conversion of mu, sigma and factor, symmetry and round-off judged per feature scale, the precision the
arrays were stored in, and the largest dimension statistics may have."""

from __future__ import annotations

from typing import Any

import numpy as np

from fidkit import statsfile
from fidkit.errors import InputError

__all__ = [
    "EPS64", "TINY", "as_real_array", "check_dim", "storage_eps_of", "stored_precision", "symmetrised",
    "variance_units",
]

# A covariance written by np.cov is symmetric to round-off only; anything beyond this asymmetry, relative to the
# two variances involved (sqrt(s_ii s_jj), the largest |s_ij| a covariance can have), is not a covariance (a
# transposed or corrupt matrix) and is refused rather than silently symmetrised.
_SYMMETRY_RTOL = 1e-6
#: float64's machine epsilon: the round-off of statistics fidkit computes (see ``Stats.storage_eps``).
EPS64 = float(np.finfo(np.float64).eps)
#: Below this a variance is subnormal: it has lost its relative precision to underflow.
TINY = float(np.finfo(np.float64).tiny)


def variance_units(diagonal: np.ndarray) -> np.ndarray:
    """The variance each feature's round-off is measured against: its own, so that every check is invariant to the
    scale of each feature (a feature of variance 1e12 beside features of 1e-3 says nothing about their round-off).

    A feature of zero (or subnormal) variance has no scale of its own: it is measured in the largest variance, so
    its covariances must be zero to the round-off of that. All zero: all zeros (nothing to measure).
    """
    units = np.array(diagonal, dtype=np.float64)
    if units.size == 0:
        return units
    no_scale = ~(units >= TINY)  # zero, subnormal, negative (refused elsewhere) or NaN
    if no_scale.any():
        units[no_scale] = max(float(np.max(units)), 0.0)
    return units


def symmetrised(matrix: np.ndarray, name: str, where: str, what: str) -> np.ndarray:
    """`matrix` made exactly symmetric, in place, or InputError when it is not symmetric to round-off.

    ``|m_ij - m_ji|`` is compared with ``_SYMMETRY_RTOL * sqrt(m_ii m_jj)`` (:func:`variance_units`), not with the
    largest entry: an antisymmetric block among small variances is refused beside a large one too. `what` says
    what a symmetric `matrix` is computed from, for the message.
    """
    skew = matrix - matrix.T
    asymmetry = float(np.max(np.abs(skew))) if skew.size else 0.0
    if asymmetry == 0.0:
        return matrix
    units = variance_units(np.diagonal(matrix))
    if float(np.max(units)) <= 0.0:  # no variance at all: measured in the largest entry, as nothing else is there
        units[:] = float(np.max(np.abs(matrix)))
    # Only when the largest asymmetry could exceed the bound of the smallest units is the bound computed per pair
    # (a dim x dim pass); round-off asymmetry (1e-16 relative) next to variances within 1e9 of each other never is.
    if not asymmetry <= _SYMMETRY_RTOL * float(np.min(units)):
        inverse_roots = 1.0 / np.sqrt(units)
        relative = np.abs(skew)
        relative *= inverse_roots[:, None]
        relative *= inverse_roots
        worst = np.unravel_index(int(np.argmax(relative)), relative.shape)
        if relative[worst] > _SYMMETRY_RTOL:
            row, column = int(worst[0]), int(worst[1])
            raise InputError(
                f"{where}: {name} is not symmetric: {name}[{row}, {column}] - {name}[{column}, {row}] = "
                f"{float(skew[worst]):.3g}, {float(relative[worst]):.3g} of sqrt({name}[{row}, {row}] * "
                f"{name}[{column}, {column}]) (round-off allows {_SYMMETRY_RTOL:g}); a covariance matrix is "
                f"symmetric: pass {what}"
            )
    # Exact symmetry makes every later product and eigensolve see one matrix, not two that differ by round-off:
    # m - skew / 2 = (m + m.T) / 2.
    skew *= 0.5
    matrix -= skew
    return matrix


def check_dim(dim: int, what: str) -> None:
    """Refuse, before anything of ``dim x dim`` is allocated, a feature dimension above the largest a statistics
    file holds (:data:`fidkit.statsfile.MAX_STATS_DIM`): its covariance could be neither saved nor loaded."""
    limit = statsfile.MAX_STATS_DIM  # read at call time: the one constant the file reader and writer use
    if dim > limit:
        raise InputError(
            f"{what} has {dim:,} feature columns, above the {limit:,} fidkit's statistics hold (their covariance "
            f"alone would be {dim * dim * 8 / 2**30:,.1f} GiB of float64); pass features of at most {limit:,} "
            "dimensions (another layer, or a projection of these)"
        )


def as_real_array(value: Any, name: str, where: str) -> np.ndarray:
    """`value` as a numpy array of real numbers (not yet float64), or InputError: the one conversion of mu, sigma
    and factor. Torch tensors convert as :func:`fidkit.fid_from_arrays` converts them: CPU tensors without
    gradients in a dtype numpy has; anything else is refused with the conversion to make."""
    try:
        array = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - whatever __array__ raises (torch: RuntimeError, TypeError)
        raise InputError(
            f"{where}: {name} cannot be read as a numpy array ({exc}); pass numpy float arrays (a torch tensor: "
            "t.detach().cpu().double().numpy())"
        ) from exc
    # numpy drops imaginary parts silently (a ComplexWarning) when converting to float64: a complex mean or
    # covariance (one that went through a complex square root, say) is refused unless it is exactly real.
    if np.iscomplexobj(array):
        imaginary = np.abs(array.imag)
        if imaginary.size and float(np.max(imaginary)) != 0.0:
            raise InputError(
                f"{where}: {name} is complex (imaginary parts up to {float(np.max(imaginary)):.3g}); "
                "statistics are real: pass the mean and covariance of real features"
            )
        array = array.real
    if array.dtype.kind not in "biuf":  # object arrays of numbers, say: converted as they are, or refused
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{where}: mu and sigma must be real float arrays ({exc})") from exc
    return array


def storage_eps_of(*arrays: np.ndarray) -> float:
    """The machine epsilon of the least precise of `arrays` as given (float32: 1.2e-7), never below float64's:
    what the positive semidefiniteness checks allow as round-off (integers are exact)."""
    return max([EPS64] + [float(np.finfo(array.dtype).eps) for array in arrays if array.dtype.kind == "f"])


def stored_precision(array: np.ndarray, storage_eps: float) -> np.ndarray:
    """`array` in the precision whose machine epsilon is `storage_eps` (float32 for statistics read from a float32
    file), for writing: a file keeps the precision its statistics came in, so reading it back allows the same
    round-off (float64 statistics are written as they are). Values beyond float16's range are written as float32."""
    for dtype in (np.float16, np.float32):
        if storage_eps == float(np.finfo(dtype).eps):
            narrowed = array.astype(dtype)
            if np.isfinite(narrowed).all():
                return narrowed
    return np.asarray(array, dtype=np.float32 if storage_eps > EPS64 else np.float64)
