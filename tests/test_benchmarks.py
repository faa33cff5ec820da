"""The benchmark scripts' own logic, where it is cheap to check without running a benchmark: the GPU script's plans
fit the device's limits, its arguments are checked, and a machine without CUDA is refused in seconds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench_gpu():
    return _load("bench_gpu")


#: One device command may run 600 s; a session has 15 minutes of device time, a few of them the machine's start:
#: each of the two commands stays under 5 minutes.
COMMAND_S = 300


@pytest.mark.parametrize("plan", ["first", "second"])
def test_each_plan_fits_one_device_command_with_every_step_its_full_limit(bench_gpu, plan):
    steps, budget = bench_gpu.plan_steps(bench_gpu._parse_args(["--plan", plan]), quick=False)
    own = {name: limit for name, limit, _ in bench_gpu.STEPS}
    assert [name for name, _ in steps] == list(bench_gpu.PLANS[plan]) and steps[0][0] == "setup"
    assert all(limit == own[name] for name, limit in steps)  # not scaled: the budget holds them all
    assert sum(limit for _, limit in steps) + bench_gpu.PARENT_S == budget <= COMMAND_S


def test_the_bootstrap_is_in_the_first_command_and_not_last(bench_gpu):
    first = bench_gpu.PLANS["first"]
    assert "bootstrap" in first and first[-1] != "bootstrap"
    assert {step for plan in bench_gpu.PLANS.values() for step in plan} >= {
        "setup", "exactness", "network", "data", "compute-cold", "compute-cached", "distance", "overlap",
        "cuda-options", "bootstrap",
    }


@pytest.mark.parametrize("budget", [60.0, 150.0, 2000.0])
def test_limits_that_exceed_a_budget_are_scaled_to_it(bench_gpu, budget):
    args = bench_gpu._parse_args(["--steps", "network", "cuda_options", "bootstrap", "--budget", str(budget)])
    steps, got = bench_gpu.plan_steps(args, quick=False)
    assert got == budget and [name for name, _ in steps] == ["setup", "network", "cuda-options", "bootstrap"]
    own = {name: limit for name, limit, _ in bench_gpu.STEPS}
    total = sum(own[name] for name, _ in steps)
    scale = min(1.0, (budget - bench_gpu.PARENT_S) / total)
    assert [limit for _, limit in steps] == pytest.approx([own[name] * scale for name, _ in steps])
    assert sum(limit for _, limit in steps) <= budget - bench_gpu.PARENT_S + 1e-9


def test_an_unknown_step_is_a_usage_error_naming_the_steps(bench_gpu, capsys):
    with pytest.raises(SystemExit) as stopped:
        bench_gpu._parse_args(["--steps", "cuda-option"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "unknown step 'cuda-option'" in error and "cuda-options" in error and "compute-cold" in error
    assert bench_gpu._parse_args(["--steps", "compute_cold", "cuda-options"]).steps == ["compute-cold", "cuda-options"]


def test_without_cuda_it_stops_at_once_saying_why_unless_quick(bench_gpu, monkeypatch, tmp_path, capsys):
    reason = "this onnxruntime is a CPU-only build (providers: CPUExecutionProvider)"
    monkeypatch.setattr(bench_gpu, "gpu_problem", lambda: reason)
    monkeypatch.setattr(bench_gpu.tempfile, "mkdtemp", lambda **kw: pytest.fail("work began"))
    assert bench_gpu.main(["--plan", "first", "--out", str(tmp_path / "g.json")]) == 2
    error = capsys.readouterr().err
    assert f"CUDA cannot run here: {reason}" in error and "PYTHONPATH" in error and "--quick" in error
    assert not (tmp_path / "g.json").exists()


def test_a_home_it_did_not_make_is_refused(bench_gpu, tmp_path):
    foreign = tmp_path / "cache"
    foreign.mkdir()
    (foreign / "stats").mkdir()
    with pytest.raises(SystemExit, match="holds files this script did not make"):
        bench_gpu._bench_home(foreign)
    fresh = bench_gpu._bench_home(tmp_path / "new")
    (fresh / "onnx").mkdir()
    assert bench_gpu._bench_home(fresh) == fresh  # marked by the first run: reused


# --- what the evidence scripts measure is what docs/performance.md says --------------------------------------------


def test_overlap_stand_in_rows_are_the_images_and_the_batch_order_is_recorded():
    bench_overlap = _load("bench_overlap")
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8) for _ in range(2)]
    network = bench_overlap.StandInNetwork(0.0, 3)
    rows = [network(batch) for batch in batches]
    assert rows[0].shape == (3, 2048) and rows[0].dtype == np.float32
    np.testing.assert_array_equal(rows[0][:, :3072 % 2048], batches[0].reshape(3, -1)[:, :3072 % 2048])
    assert not np.array_equal(rows[0], rows[1])  # a batch's rows are its own, not a fixed block
    small = rng.integers(0, 256, (2, 8, 8), dtype=np.uint8)  # fewer pixels than features: tiled
    np.testing.assert_array_equal(network(small)[:, 64:128], small.reshape(2, -1))
    in_order, swapped = bench_overlap.BatchOrder(), bench_overlap.BatchOrder()
    for features in rows:
        in_order.update(features)
    for features in rows[::-1]:
        swapped.update(features)
    assert len(in_order.digests) == 2 and in_order.digests != swapped.digests
    assert sorted(in_order.digests) == sorted(swapped.digests)


def test_startup_times_the_baseline_as_often_as_the_other_commands(monkeypatch, tmp_path, capsys):
    bench_startup = _load("bench_startup")
    counts = []
    monkeypatch.setattr(bench_startup, "timed", lambda command, env, repeats, before=None: counts.append(repeats) or 1.0)
    monkeypatch.setattr(bench_startup.subprocess, "run", lambda *args, **kwargs: None)
    monkeypatch.setattr(sys, "argv", ["bench_startup.py", "--images", "2", "--repeats", "7"])
    monkeypatch.setattr("fidkit.testing.random_weights_file", lambda path: path)  # no 95 MB file
    bench_startup.main()
    assert counts == [7, 7, 7, 7]  # baseline, cached, cached without a graph, --help
    assert "median of 7" in capsys.readouterr().out


def test_frechet_times_every_fidkit_route_best_of_repeats_and_baselines_once(monkeypatch, capsys):
    bench_frechet = _load("bench_frechet")
    repeats = []

    def counted(function, times):
        repeats.append(times)
        return 1.0, 1.0, function()

    monkeypatch.setattr(bench_frechet, "best_time", counted)
    monkeypatch.setattr(sys, "argv", ["bench_frechet.py", "--dim", "8", "--n-full", "16", "--n-small", "4",
                                      "--repeats", "5"])
    assert bench_frechet.main() == 0
    routes = [line.split("|")[2].strip() for line in capsys.readouterr().out.splitlines() if line.count("|") == 8]
    routes = routes[2:]  # the header and its rule
    assert len(routes) == len(repeats) == 11
    for route, times in zip(routes, repeats):
        assert times == (1 if route.startswith(("scipy", "np.linalg")) else 5), route
