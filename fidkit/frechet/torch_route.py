"""The ``factor-eigh`` trace of the matrix square root in float64 with torch, for a GPU.

:func:`trace_sqrt_factor_eigh_torch` computes what :mod:`fidkit.frechet.distance` computes for its
``factor-eigh`` route, ``sum sqrt(max(eig(L^T sigma L), 0))``, with the same steps:

1. ``L`` and ``sigma`` are each divided by a power of two near their largest magnitude when that magnitude lies
   outside ``2^-200 .. 2^200`` (exponent changes only: no rounding), so ``L^T sigma L`` neither overflows nor
   underflows;
2. ``P = L^T (sigma L)`` in float64, made exactly symmetric as ``(P + P^T) / 2``;
3. the eigenvalues of ``P`` with ``torch.linalg.eigvalsh`` in float64 (cuSOLVER on a GPU, LAPACK on the CPU);
4. on the host, exactly as distance.py: ``sum sqrt(max(lambda, 0))``, the smallest ``lambda`` and
   ``sum sqrt(-lambda)`` over the negative ones, each scaled back.

Everything is float64: TF32 and reduced-precision matmul settings apply to float32 only and do not touch it.
The result agrees with the scipy route to round-off (measured on the CPU: see tests/test_torch_engine.py);
the eigenvalue solvers differ, so agreement is to about ``1e-12`` relative on well-conditioned spectra, not
bit for bit.

How distance.py can use it (not wired here): in ``_trace_sqrt_factor_eigh``, when
:func:`torch_device_for_distance` returns a device (and the rank is large enough for the transfer to pay, say
``>= 512``: not measured), call ``trace_sqrt_factor_eigh_torch(factor.matrix, sigma_other, device)`` and build
the ``_TraceSqrt`` from its ``(total, min_eigenvalue, clipped_negative)`` in place of the scipy computation,
perhaps with a method name such as ``"factor-eigh-torch"`` so reports show which solver ran.

Importing this module does not import torch.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import warnings

import numpy as np

from fidkit.errors import FidkitError, InputError

__all__ = ["trace_sqrt_factor_eigh_torch", "torch_device_for_distance"]

# The same bounds as fidkit.frechet.distance: magnitudes between which products need no rescaling.
_SAFE_MAGNITUDE_LOW = 2.0**-200
_SAFE_MAGNITUDE_HIGH = 2.0**200


def _power_of_two_scale(array: np.ndarray) -> float:
    """A power of two near max|array|, or 1.0 when no rescaling is needed: distance.py's rule, kept in step."""
    if array.size == 0:
        return 1.0
    largest = max(float(np.max(array)), -float(np.min(array)))
    if _SAFE_MAGNITUDE_LOW <= largest <= _SAFE_MAGNITUDE_HIGH or largest == 0.0:
        return 1.0
    return math.ldexp(1.0, math.frexp(largest)[1])


def trace_sqrt_factor_eigh_torch(
    factor: np.ndarray, sigma_other: np.ndarray, device: str
) -> tuple[float, float, float]:
    """``tr sqrt(L L^T sigma_other)`` as ``sum sqrt(max(eig(L^T sigma_other L), 0))``, with torch in float64.

    Parameters
    ----------
    factor : ndarray, (dim, rank)
        ``L`` with ``sigma_this = L L^T`` (a :class:`~fidkit.frechet.factors.SqrtFactor`'s ``matrix``).
    sigma_other : ndarray, (dim, dim)
        The other side's symmetric covariance.
    device : str
        A torch device: ``"cuda"``, ``"cuda:N"`` or ``"cpu"``.

    Returns
    -------
    total : float
        ``sum sqrt(max(lambda, 0))``, the trace of the square root.
    min_eigenvalue : float
        The smallest eigenvalue of ``L^T sigma_other L`` before clipping (units of variance squared).
    clipped_negative : float
        ``sum sqrt(-lambda)`` over the negative eigenvalues clipped to zero (same units as `total`).

    Raises
    ------
    InputError
        Shapes that do not fit together.
    FidkitError
        torch cannot be imported, or cannot use `device`.
    """
    factor = np.asarray(factor, dtype=np.float64)
    sigma_other = np.asarray(sigma_other, dtype=np.float64)
    if factor.ndim != 2 or sigma_other.shape != (factor.shape[0], factor.shape[0]):
        raise InputError(
            f"factor {factor.shape} and sigma_other {sigma_other.shape} do not fit: expected (dim, rank) and "
            "(dim, dim)"
        )
    if factor.shape[1] == 0:  # a zero covariance has a rank-0 factor
        return 0.0, 0.0, 0.0
    try:
        import torch
    except ImportError as exc:
        raise FidkitError(f"the torch distance route needs torch, which cannot be imported ({exc})") from exc
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"device {device!r} is not a torch device ({exc})") from exc

    scale_factor, scale_sigma = _power_of_two_scale(factor), _power_of_two_scale(sigma_other)
    try:
        # from_numpy shares the host buffer (Stats arrays are read-only, and these tensors are only read);
        # the division by an exact power of two happens on the device.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            L = torch.from_numpy(np.ascontiguousarray(factor)).to(target)
            S = torch.from_numpy(np.ascontiguousarray(sigma_other)).to(target)
        if scale_factor != 1.0:
            L = L / scale_factor
        if scale_sigma != 1.0:
            S = S / scale_sigma
        product = L.T @ (S @ L)
        symmetric = (product + product.T) * 0.5
        eigenvalues = torch.linalg.eigvalsh(symmetric).cpu().numpy()
    except (RuntimeError, AssertionError) as exc:  # torch: CUDA absent, out of memory, solver failure
        raise FidkitError(
            f"the torch distance route failed on device {device!r}: {type(exc).__name__}: {exc}"
        ) from exc

    # From here on exactly distance.py's arithmetic on the eigenvalues, in numpy.
    negative = eigenvalues[eigenvalues < 0]
    total = float(np.sum(np.sqrt(np.maximum(eigenvalues, 0.0))))
    smallest = float(eigenvalues.min())
    clipped = float(np.sum(np.sqrt(-negative)))
    # scale_sigma is a power of two, but an odd power has no exact square root; that one rounding is 1 ulp.
    root_scale = scale_factor * math.sqrt(scale_sigma)
    return (
        total * root_scale,
        smallest * scale_factor * scale_factor * scale_sigma,
        clipped * root_scale,
    )


def torch_device_for_distance() -> str | None:
    """``"cuda"`` when torch is installed and can use a CUDA GPU, else None; torch is imported only if it can.

    torch is imported only when it is already imported, or when it is installed *and* an NVIDIA driver library
    loads: on a machine without a GPU (or without torch) this costs a spec look-up and a failed ``dlopen``,
    never the second or two of ``import torch``, so calling it on the metric path keeps ``fid_from_arrays``
    fast. A CPU-only torch gives None: on the CPU the scipy route is the one to use.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        if importlib.util.find_spec("torch") is None or not _nvidia_driver_loads():
            return None
        try:
            import torch
        except ImportError:
            return None
    try:
        return "cuda" if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA setup means no GPU route, never a failed distance
        return None


def _nvidia_driver_loads() -> bool:
    """True if the NVIDIA driver library loads (the same cheap test the onnxruntime runtime makes)."""
    import ctypes

    names = ["nvcuda.dll"] if sys.platform == "win32" else ["libcuda.so.1", "libcuda.so"]
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False
