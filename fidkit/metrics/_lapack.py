"""The BLAS/LAPACK routines of a bootstrap resample, callable from several threads at once.

Private to :mod:`fidkit.metrics._fid_resample`. ``scipy.linalg.blas`` and ``scipy.linalg.lapack`` (f2py wrappers)
hold the GIL for the whole call: resamples computed in worker threads ran one at a time (measured: two threads
calling ``ssyrk`` or ``eigh`` took exactly as long as one thread calling them twice). SciPy also exports every
routine as a C function pointer, through the Cython modules ``scipy.linalg.cython_blas`` and
``scipy.linalg.cython_lapack`` (their documented ``cimport`` interface, stored in ``__pyx_capi__``, which numba
binds to in the same way). Called through :mod:`ctypes`, which releases the GIL for a foreign call, the same
routines of the same OpenBLAS run concurrently.

Every matrix here is a Fortran-ordered (column-major) array of the routine's dtype; only lower triangles are read
and written. The callers check nothing further: the checks below are of the layout, which a mistake would turn
into wrong numbers or a crash rather than an exception.

LAPACK's two-stage eigensolver (``dsyevd_2stage``) is not in SciPy's Cython interface; where the LAPACK library
behind it has one, it is found by name beside ``dsyevd`` and checked against it once before use
(:func:`two_stage_available`).
"""

from __future__ import annotations

import ctypes
import logging
import re
import sys
import threading
from typing import Any

import numpy as np
import scipy.linalg.cython_blas as cython_blas
import scipy.linalg.cython_lapack as cython_lapack

__all__ = ["cholesky_lower", "eigenvalues_lower", "syrk_lower", "triangular_transpose_times", "two_stage_available"]

logger = logging.getLogger(__name__)

_P = ctypes.c_void_p  # every argument of the Fortran ABI is a pointer


def _bind(module: Any, name: str, *types: str) -> Any:
    capsule = module.__pyx_capi__[name]
    # Indexing a ctypes library makes a new function object: setting its types does not touch the shared
    # ctypes.pythonapi.PyCapsule_* that other code may have typed differently.
    get_name = ctypes.pythonapi["PyCapsule_GetName"]
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi["PyCapsule_GetPointer"]
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    signature = get_name(capsule)  # the C signature, e.g. b"void (char *, int *, __pyx_t_..._d *, int *, int *)"
    # SciPy's typedefs of float and double (__pyx_t_<module path>_s, _d), or the plain types, to s and d; then
    # the exact signature.
    plain = re.sub(rb"__pyx_t_\w+?_([sd]) \*", rb"\1 *", signature).decode()
    plain = re.sub(r"\bfloat \*", "s *", re.sub(r"\bdouble \*", "d *", plain))
    if plain != f"void ({', '.join(types)})":
        raise ImportError(f"scipy.linalg's {name} has the signature {plain!r}, not void ({', '.join(types)})")
    return ctypes.CFUNCTYPE(None, *([_P] * len(types)))(get_pointer(capsule, signature))


_CHAR, _INT, _S, _D = "char *", "int *", "s *", "d *"
# Each routine's argument types, in the reference BLAS/LAPACK order (s, d: float, double).
_SYRK = {
    np.dtype(np.float32): _bind(cython_blas, "ssyrk", _CHAR, _CHAR, _INT, _INT, _S, _S, _INT, _S, _S, _INT),
    np.dtype(np.float64): _bind(cython_blas, "dsyrk", _CHAR, _CHAR, _INT, _INT, _D, _D, _INT, _D, _D, _INT),
}
_DTRMM = _bind(cython_blas, "dtrmm", _CHAR, _CHAR, _CHAR, _CHAR, _INT, _INT, _D, _D, _INT, _D, _INT)
_DPOTRF = _bind(cython_lapack, "dpotrf", _CHAR, _INT, _D, _INT, _INT)
_DSYEVD = _bind(cython_lapack, "dsyevd", _CHAR, _CHAR, _INT, _D, _INT, _D, _D, _INT, _INT, _INT, _INT)
# Optimal dsyevd workspace per size (the minimum would make its tridiagonal reduction unblocked: several x slower).
_WORKSPACE: dict[tuple[int, bool], tuple[int, int]] = {}
_WORKSPACE_LOCK = threading.Lock()


def _int(value: int) -> ctypes.c_int:
    return ctypes.c_int(value)


def _ref(value: Any) -> Any:
    return ctypes.byref(value)


def _square(matrix: np.ndarray, dtype: Any = np.float64) -> int:
    if not (matrix.ndim == 2 and matrix.shape[0] == matrix.shape[1] and matrix.flags.f_contiguous):
        raise ValueError(f"expected a square Fortran-ordered matrix, got shape {matrix.shape}")
    if matrix.dtype != dtype or not matrix.flags.writeable:
        raise ValueError(f"expected a writeable {np.dtype(dtype)} matrix, got {matrix.dtype}")
    return matrix.shape[0]


def syrk_lower(alpha: float, rows: np.ndarray, gram: np.ndarray) -> None:
    """``gram += alpha * rows^T rows`` on the lower triangle, in the dtype of both (float32 or float64).

    `rows` is a C-ordered ``(k, d)`` block (read in place as the Fortran ``d x k`` matrix it is), `gram` a
    Fortran-ordered ``(d, d)`` matrix.
    """
    if gram.dtype not in _SYRK:
        raise ValueError(f"expected a float32 or float64 Gram, got {gram.dtype}")
    d = _square(gram, gram.dtype)
    if not (rows.ndim == 2 and rows.shape[1] == d and rows.flags.c_contiguous and rows.dtype == gram.dtype):
        raise ValueError(f"expected C-ordered {gram.dtype} rows of width {d}, got {rows.dtype} {rows.shape}")
    if rows.shape[0] == 0 or d == 0:
        return
    scalar = ctypes.c_float if gram.dtype == np.float32 else ctypes.c_double
    _SYRK[gram.dtype](
        b"L", b"N", _ref(_int(d)), _ref(_int(rows.shape[0])), _ref(scalar(alpha)), rows.ctypes.data,
        _ref(_int(d)), _ref(scalar(1.0)), gram.ctypes.data, _ref(_int(d)),
    )


def cholesky_lower(matrix: np.ndarray) -> int:
    """Overwrite the lower triangle of a float64 matrix with its Cholesky factor; LAPACK's ``info`` (0: done).

    The strict upper triangle is left as it was.
    """
    n, info = _square(matrix), _int(0)
    if n > 0:
        _DPOTRF(b"L", _ref(_int(n)), matrix.ctypes.data, _ref(_int(n)), _ref(info))
    return info.value


def triangular_transpose_times(lower: np.ndarray, matrix: np.ndarray) -> None:
    """``matrix <- L^T matrix`` (``dtrmm``), `L` the lower triangle of `lower` (its strict upper part is not
    read); both float64, Fortran-ordered, of one size."""
    n = _square(matrix)
    if _square(lower) != n:
        raise ValueError(f"shapes differ: {lower.shape} and {matrix.shape}")
    if n > 0:
        _DTRMM(
            b"L", b"L", b"T", b"N", _ref(_int(n)), _ref(_int(n)), _ref(ctypes.c_double(1.0)), lower.ctypes.data,
            _ref(_int(n)), matrix.ctypes.data, _ref(_int(n)),
        )


def _workspace(n: int, two_stage: bool) -> tuple[int, int]:
    """Optimal ``(lwork, liwork)`` of ``dsyevd`` (or ``dsyevd_2stage``) without vectors at size ``n >= 1``."""
    with _WORKSPACE_LOCK:
        if (n, two_stage) not in _WORKSPACE:
            work = np.zeros(1)
            scratch, values = np.zeros((n, n), order="F"), np.zeros(n)
            info, liwork = _call_dsyevd(two_stage, scratch, values, work, -1, -1)
            if info != 0:
                raise RuntimeError(f"{'dsyevd_2stage' if two_stage else 'dsyevd'} workspace query failed (info {info})")
            _WORKSPACE[n, two_stage] = (max(int(work[0]), 2 * n + 1), max(liwork, 1))
        return _WORKSPACE[n, two_stage]


def _call_dsyevd(
    two_stage: bool, matrix: np.ndarray, values: np.ndarray, work: np.ndarray, lwork: int, liwork: int
) -> tuple[int, int]:
    """One call of ``dsyevd`` (SciPy's) or ``dsyevd_2stage`` (found beside it, with the same 32-bit integers:
    :func:`_find_two_stage`) without vectors: ``(info, iwork[0])``; ``lwork = liwork = -1`` is the workspace
    query."""
    n, info, iwork = matrix.shape[0], _int(0), np.zeros(max(liwork, 1), dtype=np.intc)
    routine = _TWO_STAGE["routine"] if two_stage else _DSYEVD
    routine(
        b"N", b"L", _ref(_int(n)), matrix.ctypes.data, _ref(_int(n)), values.ctypes.data, work.ctypes.data,
        _ref(_int(lwork)), iwork.ctypes.data, _ref(_int(liwork)), _ref(info),
        *((1, 1) if two_stage else ()),  # the lengths of the two character arguments (gfortran's convention)
    )
    return info.value, int(iwork[0])


def _eigenvalues(matrix: np.ndarray, two_stage: bool) -> tuple[np.ndarray, int]:
    n = _square(matrix)
    if n == 0:
        return np.empty(0), 0
    lwork, liwork = _workspace(n, two_stage)
    values, work = np.empty(n), np.empty(lwork)
    return values, _call_dsyevd(two_stage, matrix, values, work, lwork, liwork)[0]


def eigenvalues_lower(matrix: np.ndarray, two_stage: bool = False) -> tuple[np.ndarray, int]:
    """``(eigenvalues ascending, info)`` of the symmetric matrix in the lower triangle of `matrix` (destroyed).

    ``dsyevd`` without vectors (a tridiagonal reduction and ``dsterf``), or with `two_stage` LAPACK's
    ``dsyevd_2stage`` (the reduction through a band matrix: BLAS-3 work and a band that stays in cache, where the
    one-stage reduction reads the whole trailing matrix from memory for every column). `two_stage` needs
    :func:`two_stage_available`.
    """
    if two_stage and not two_stage_available():
        raise RuntimeError("LAPACK's dsyevd_2stage is not available here (see two_stage_available)")
    return _eigenvalues(matrix, two_stage)


# --- the two-stage eigensolver ------------------------------------------------------------------------------------

#: Names LAPACK libraries give ``dsyevd``: SciPy's OpenBLAS wheels prefix ``scipy_``; others use Fortran's plain
#: name with or without the trailing underscore.
_NAME_PATTERNS = ("scipy_{}_", "{}_", "{}")
_TWO_STAGE: dict[str, Any] = {}
_TWO_STAGE_LOCK = threading.Lock()


def _find_two_stage() -> Any:
    """``dsyevd_2stage`` of the LAPACK library SciPy's ``cython_lapack`` calls, or None.

    Looked up through the extension module's own handle, so the search runs through the libraries it was linked
    against (the dynamic loader's rule for a handle), and under the name pattern its ``dsyevd`` has there. Its
    integers are those of that ``dsyevd``, 32-bit (checked by :func:`_bind`): a 64-bit integer build would name
    its routines differently (``scipy_dsyevd_64_``), which no pattern here matches.
    """
    if sys.platform == "win32":  # GetProcAddress does not search a module's dependencies
        return None
    try:
        library = ctypes.CDLL(cython_lapack.__file__)
    except OSError:
        return None
    for pattern in _NAME_PATTERNS:
        if hasattr(library, pattern.format("dsyevd")):
            routine = getattr(library, pattern.format("dsyevd_2stage"), None)
            if routine is None:
                return None
            # Eleven pointers, then the lengths of the two character arguments (gfortran's convention; other
            # compilers' LAPACK ignore them).
            routine.restype, routine.argtypes = None, [_P] * 11 + [ctypes.c_size_t] * 2
            return routine
    return None


def _agrees_with_dsyevd() -> bool:
    """Eigenvalues of a fixed symmetric matrix by both routines, equal to round-off (a wrong binding is not)."""
    rng = np.random.default_rng(0)
    for n in (1, 7, 300):
        factor = rng.standard_normal((n, n))
        matrix = np.asfortranarray(factor @ factor.T + np.eye(n))
        expected, info = _eigenvalues(matrix.copy(order="F"), two_stage=False)
        got, info_two = _eigenvalues(matrix.copy(order="F"), two_stage=True)
        if info != 0 or info_two != 0 or np.max(np.abs(got - expected)) > 1e-12 * np.max(np.abs(expected)):
            return False
    return True


def two_stage_available() -> bool:
    """Whether :func:`eigenvalues_lower` can run ``dsyevd_2stage``: found beside SciPy's ``dsyevd`` (LAPACK >= 3.7;
    not on Windows) and agreeing with it on three matrices, checked once per process."""
    with _TWO_STAGE_LOCK:
        if "available" not in _TWO_STAGE:
            _TWO_STAGE["routine"] = _find_two_stage()
            _TWO_STAGE["available"] = _TWO_STAGE["routine"] is not None
            if _TWO_STAGE["available"]:
                try:
                    _TWO_STAGE["available"] = _agrees_with_dsyevd()
                except Exception as exc:  # noqa: BLE001 - anything wrong with it means: not used
                    logger.debug("dsyevd_2stage failed its check: %s", exc)
                    _TWO_STAGE["available"] = False
            logger.debug("LAPACK dsyevd_2stage %s", "found and checked" if _TWO_STAGE["available"] else "not used")
        return _TWO_STAGE["available"]
