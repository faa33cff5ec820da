"""The eigensolve of the ``factor-eigh`` route in float64 with torch, on a GPU when there is one.

The ``factor-eigh`` route of :mod:`fidkit.frechet.distance` sums ``sqrt(max(eig(P), 0))`` for the symmetric
``P = L^T sigma L``; at dim 2048 the eigensolve is most of the time of a comparison, and it runs poorly on
a few CPU cores. :func:`eigvalsh_float64` computes the same eigenvalues with ``torch.linalg.eigvalsh`` in
float64 (cuSOLVER on a GPU, LAPACK on the CPU): everything before (the scaling, the product) and after it
(the sums, the clipping diagnostics) stays in distance.py, so the route keeps its accuracy guarantees; the
solvers differ, so results agree with the scipy solver to about ``1e-12`` relative, not bit for bit.
float64 is not touched by TF32 or reduced-precision matmul settings.

:func:`torch_device_for_distance` says whether to use it, for one call: only where the GPU is faster *including*
what reaching it costs. Importing this module does not import torch.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from typing import Any

import numpy as np

from fidkit._gpu import gpu_driver_present
from fidkit.errors import FidkitError

__all__ = ["COLD_CUDA_MIN_RANK", "eigvalsh_float64", "torch_device_for_distance"]

#: The smallest eigenproblem for which one call starts CUDA itself (torch not imported, or CUDA not initialised).
#: Measured on an H200 (issue 17): the first CUDA call of a process costs about 4.5 s (context, cuSOLVER, kernel
#: loading), plus ``import torch`` when it is not imported yet; scipy solves the rank-2048 problem of an
#: Inception FID in about 1-3 s on a CPU (a whole fresh comparison takes 1.3 s on 2 cores,
#: ``docs/performance.md``). The CPU solve grows as rank^3: at 4096 it is 8x that, about 8-25 s, more than
#: starting CUDA at either end of those ranges; at 2048 it is less at both, so one FID of Inception features
#: never starts CUDA for its distance. Not yet measured on a GPU by ``benchmarks/bench_gpu.py``: a guess
#: from those two figures, on the side of not starting CUDA.
COLD_CUDA_MIN_RANK = 4096


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


def _import_torch() -> Any:
    """``import torch``, or None when it cannot be imported (a broken install counts as none)."""
    try:
        import torch
    except Exception:  # noqa: BLE001 - ImportError, or a broken install's OSError: no torch solver either way
        return None
    return torch


def torch_device_for_distance(rank: int = 0) -> str | None:
    """``"cuda"`` when torch's CUDA solver is the faster way to do one eigensolve of `rank`, else None (scipy).

    The GPU solve itself is fast, but reaching the GPU is not: the first CUDA call of a process initialises CUDA
    (about 4.5 s on an H200) and, if torch is not imported yet, imports it. So:

    - torch already imported *and* CUDA already initialised in this process (``torch.cuda.is_initialized()``:
      a training loop, the torch feature engine on a GPU): ``"cuda"``, whatever the rank (the caller keeps small
      problems on the CPU itself);
    - otherwise only a problem of rank :data:`COLD_CUDA_MIN_RANK` or more, whose CPU solve costs more than
      starting CUDA, goes to the GPU: torch is imported (when installed and an NVIDIA driver library loads) and
      ``"cuda"`` returned if it can use one;
    - else None: scipy. An Inception FID (rank 2048) in a process that has not used CUDA, such as ``fidkit
      compute`` with both sides cached, never imports torch nor starts CUDA for its distance.

    Never raises: a broken torch or CUDA setup means no GPU solver.
    """
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_initialized():
            return "cuda"
    except Exception:  # noqa: BLE001 - a broken CUDA setup means no GPU solver, never a failed distance
        return None
    if rank < COLD_CUDA_MIN_RANK:
        return None
    if torch is None:
        if importlib.util.find_spec("torch") is None or not gpu_driver_present():
            return None
        torch = _import_torch()
        if torch is None:
            return None
    try:
        return "cuda" if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA setup means no GPU solver, never a failed distance
        return None
