"""The reference TTUR trainer and the FID validation experiments (torch).

- :mod:`fidkit.ttur.trainer`: a DCGAN trained with the two time-scale update rule, FID tracked
  during training (``fidkit ttur``).
- :mod:`fidkit.ttur.validate`: FID of disturbed images against clean ones (``fidkit validate``).
- :mod:`fidkit.ttur.disturbances`: the FID paper's disturbances (numpy/scipy only).

This package's ``__init__`` imports nothing heavy: ``fidkit.ttur.cli`` is imported by
``fidkit --help``, which must not pay for torch. The names below load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "TTURConfig",
    "RunResult",
    "CompareResult",
    "run_ttur",
    "run_compare",
    "ValidateConfig",
    "ValidationReport",
    "run_validation",
    "DISTURBANCES",
]

_LAZY = {
    "TTURConfig": "fidkit.ttur.trainer",
    "RunResult": "fidkit.ttur.trainer",
    "CompareResult": "fidkit.ttur.trainer",
    "run_ttur": "fidkit.ttur.trainer",
    "run_compare": "fidkit.ttur.trainer",
    "ValidateConfig": "fidkit.ttur.validate",
    "ValidationReport": "fidkit.ttur.validate",
    "run_validation": "fidkit.ttur.validate",
    "DISTURBANCES": "fidkit.ttur.disturbances",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fidkit.ttur' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
