"""Which eigensolver one distance call uses: torch's CUDA solver only where CUDA is up already or the problem
pays for starting it, scipy otherwise. torch is replaced by a stand-in module, so no GPU (and no torch) is
needed: the policy is asserted, not the speed."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import fidkit
from fidkit.frechet import torch_route
from fidkit.frechet.torch_route import COLD_CUDA_MIN_RANK, torch_device_for_distance


def _fake_torch(*, initialized: bool, available: bool = True) -> types.ModuleType:
    fake = types.ModuleType("torch")
    calls: list[str] = []

    def is_initialized() -> bool:
        calls.append("is_initialized")
        return initialized

    def is_available() -> bool:
        calls.append("is_available")
        return available

    fake.cuda = types.SimpleNamespace(is_initialized=is_initialized, is_available=is_available)
    fake.calls = calls
    return fake


@pytest.fixture
def no_torch(monkeypatch):
    """torch not imported; importing it is recorded (and gives the stand-in), never done for real."""
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    imported: list[types.ModuleType] = []

    def fake_import():
        module = _fake_torch(initialized=False)
        imported.append(module)
        return module

    monkeypatch.setattr(torch_route, "_import_torch", fake_import)
    monkeypatch.setattr(torch_route.importlib.util, "find_spec", lambda name, *a: object() if name == "torch" else None)
    monkeypatch.setattr(torch_route, "gpu_driver_present", lambda: True)
    return imported


def test_cuda_already_initialised_is_used_at_any_rank(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(initialized=True))
    assert torch_device_for_distance(2048) == "cuda" and torch_device_for_distance(600) == "cuda"


def test_torch_imported_without_cuda_started_keeps_one_inception_fid_on_scipy(monkeypatch, no_torch):
    fake = _fake_torch(initialized=False)
    monkeypatch.setitem(sys.modules, "torch", fake)
    assert torch_device_for_distance(2048) is None
    assert fake.calls == ["is_initialized"]  # not even is_available(), which may start CUDA's driver API
    # Large enough to pay for starting CUDA: the GPU, when torch can reach one.
    assert torch_device_for_distance(COLD_CUDA_MIN_RANK) == "cuda"
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(initialized=False, available=False))
    assert torch_device_for_distance(2 * COLD_CUDA_MIN_RANK) is None
    assert not no_torch  # torch was already there: nothing imported


def test_torch_not_imported_is_imported_only_for_a_large_problem(no_torch, monkeypatch):
    assert torch_device_for_distance(2048) is None and torch_device_for_distance() is None
    assert not no_torch and "torch" not in sys.modules
    assert torch_device_for_distance(COLD_CUDA_MIN_RANK + 1) == "cuda" and len(no_torch) == 1
    # No NVIDIA driver: no import, whatever the size.
    monkeypatch.setattr(torch_route, "gpu_driver_present", lambda: False)
    assert torch_device_for_distance(4 * COLD_CUDA_MIN_RANK) is None and len(no_torch) == 1


def test_a_broken_cuda_means_scipy(monkeypatch):
    fake = _fake_torch(initialized=False)

    def broken() -> bool:
        raise RuntimeError("CUDA driver initialization failed")

    fake.cuda.is_initialized = broken
    monkeypatch.setitem(sys.modules, "torch", fake)
    assert torch_device_for_distance(COLD_CUDA_MIN_RANK) is None


def test_a_cached_inception_sized_distance_imports_no_torch(monkeypatch, no_torch):
    """The distance of two rank-512+ statistics in a process that has not used CUDA: scipy, torch not imported."""
    import fidkit.frechet.trace_sqrt as trace_sqrt

    monkeypatch.setattr(trace_sqrt, "_TORCH_SOLVER_MIN_RANK", 8)
    rng = np.random.default_rng(3)
    dim = 64
    stats = []
    for _ in range(2):
        basis = rng.normal(size=(dim, dim))
        stats.append(fidkit.Stats(mu=rng.normal(size=dim), sigma=basis @ basis.T / dim, n=10 * dim))
    result = fidkit.fid_from_stats(*stats)
    assert result.method == "factor-eigh" and result.solver == "scipy"
    assert not no_torch and "torch" not in sys.modules
