"""The reference TTUR trainer and the FID validation experiments (torch).

- :mod:`fidkit.ttur.runs`: ``fidkit ttur``, a DCGAN trained with the two time-scale update rule
  and its FID tracked during training (:func:`run_ttur`, :func:`run_compare`), on
  :mod:`~fidkit.ttur.config` (the settings), :mod:`~fidkit.ttur.trainer` (the training loop),
  :mod:`~fidkit.ttur.models` (the networks) and :mod:`~fidkit.ttur.run_files` (checkpoint, CSV).
- :mod:`fidkit.ttur.validate`: FID of disturbed images against clean ones (``fidkit validate``).
- :mod:`fidkit.ttur.disturbances`: the FID paper's disturbances (numpy/scipy only).
- :mod:`fidkit.ttur.data` and :mod:`fidkit.ttur.features`: images read into memory, and their
  statistics, through fidkit's public API (:func:`fidkit.compute_stats`).

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
    "TTURConfig": "fidkit.ttur.config",
    "RunResult": "fidkit.ttur.runs",
    "CompareResult": "fidkit.ttur.runs",
    "run_ttur": "fidkit.ttur.runs",
    "run_compare": "fidkit.ttur.runs",
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
