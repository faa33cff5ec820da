"""Is there an NVIDIA GPU? A cheap probe that every part asking the question shares (ground floor).

Loading the driver library costs a failed ``dlopen`` on a machine without one, never an import of torch or
onnxruntime, so callers can ask before they decide to import either.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["gpu_driver_present", "any_library_loads"]


def any_library_loads(names: tuple[str, ...] | list[str]) -> bool:
    """True if one of the shared libraries `names` loads (``dlopen``; nothing is called in it)."""
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


def gpu_driver_present() -> bool:
    """True if an NVIDIA driver library loads (``libcuda.so.1``; ``nvcuda.dll`` on Windows)."""
    return any_library_loads(["nvcuda.dll"] if sys.platform == "win32" else ["libcuda.so.1", "libcuda.so"])
