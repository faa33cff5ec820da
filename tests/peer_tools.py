"""Importing the tools whose conventions fidkit reproduces (pytorch-fid, clean-fid, torchmetrics, torch-fidelity),
for the tests that compare with them: skip where a tool is missing, and work without a loadable torchvision."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import pytest

__all__ = ["require", "torchvision_works", "torch_fidelity_module"]


def require(package: str) -> None:
    """Skip the calling test when `package` is not installed."""
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")


def torchvision_works() -> bool:
    """True when torchvision imports (the PyPI wheel does not on a CPU-only torch of another build)."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # absent, or a build for another torch (its C ops fail to register)
        return False
    return True


def torch_fidelity_module(name: str):
    """Import `name` from torch_fidelity without its package ``__init__`` when torchvision does not import (the
    ``__init__`` pulls in its CLIP, VGG and DINOv2 extractors, which need torchvision)."""
    require("torch_fidelity")
    if "torch_fidelity" not in sys.modules and not torchvision_works():
        spec = importlib.util.find_spec("torch_fidelity")
        package = types.ModuleType("torch_fidelity")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["torch_fidelity"] = package
    return importlib.import_module(name)
