"""The eigensolve of the ``factor-eigh`` route in float64 with torch, on a GPU when there is one.

The ``factor-eigh`` route of :mod:`fidkit.frechet.distance` sums ``sqrt(max(eig(P), 0))`` for the symmetric
``P = L^T sigma L``; at dim 2048 the eigensolve is most of the time of a comparison, and it runs poorly on
a few CPU cores. :func:`eigvalsh_float64` computes the same eigenvalues with ``torch.linalg.eigvalsh`` in
float64 (cuSOLVER on a GPU, LAPACK on the CPU): everything before (the scaling, the product) and after it
(the sums, the clipping diagnostics) stays in distance.py, so the route keeps its accuracy guarantees; the
solvers differ, so results agree with the scipy solver to about ``1e-12`` relative, not bit for bit.
float64 is not touched by TF32 or reduced-precision matmul settings.

:func:`torch_device_for_distance` says whether to use it. Importing this module does not import torch.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings

import numpy as np

from fidkit._gpu import gpu_driver_present
from fidkit.errors import FidkitError

__all__ = ["eigvalsh_float64", "torch_device_for_distance"]


def eigvalsh_float64(symmetric: np.ndarray, device: str) -> np.ndarray:
    """The eigenvalues (ascending, float64 numpy) of the symmetric `symmetric`, computed by torch on `device`.

    Raises
    ------
    FidkitError
        torch cannot be imported, or the solve fails on `device` (no CUDA, out of memory, no convergence).
    """
    try:
        import torch
    except ImportError as exc:
        raise FidkitError(f"the torch eigensolver needs torch, which cannot be imported ({exc})") from exc
    try:
        with warnings.catch_warnings():
            # Stats arrays are read-only; the tensor is only read.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            matrix = torch.from_numpy(np.ascontiguousarray(symmetric, dtype=np.float64)).to(device)
        return torch.linalg.eigvalsh(matrix).cpu().numpy()
    except (RuntimeError, AssertionError) as exc:  # torch: CUDA absent, out of memory, solver failure
        raise FidkitError(f"the torch eigensolver failed on device {device!r}: {type(exc).__name__}: {exc}") from exc


def torch_device_for_distance() -> str | None:
    """``"cuda"`` when torch is installed and can use a CUDA GPU, else None; torch is imported only if it can.

    torch is imported only when it is already imported, or when it is installed *and* an NVIDIA driver library
    loads: on a machine without a GPU (or without torch) this costs a spec look-up and a failed ``dlopen``,
    never the second or two of ``import torch``. A CPU-only torch gives None: on the CPU, scipy's solver is
    the one to use.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        if importlib.util.find_spec("torch") is None or not gpu_driver_present():
            return None
        try:
            import torch
        except ImportError:
            return None
    try:
        return "cuda" if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA setup means no GPU solver, never a failed distance
        return None
