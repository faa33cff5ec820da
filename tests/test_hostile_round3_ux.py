"""What a new user tripped on (hostile round 3): library noise on stdout, unreleased weights, progress.

- 23: what a library prints on stdout (onnxruntime's "Failed to load libcublasLt.so.13 ..." lines and its
  "EP Error" block, from Python ``print`` or from C code writing to descriptor 1) lands on stderr; stdout holds
  the result only, on the command line and in the Python API.
- 26: features from weights other than the released file are a warning in the report (and ``--json``).
- 29: ``fidkit ttur`` / ``validate`` report progress on stderr when stderr is not a terminal.
- 30: the shared test data is found through ``FIDKIT_TEST_DATA``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Three ways a library writes to stdout: Python's print, a write(2) on descriptor 1 (what C code does), and
# C stdio's printf, buffered by the C library and written to descriptor 1 whenever it flushes.
NOISE = textwrap.dedent(
    """
    import ctypes, os, sys
    _libc = ctypes.CDLL(None)

    def noise(tag):
        print(f"py-noise-{tag}")
        os.write(1, f"fd-noise-{tag}\\n".encode())
        _libc.printf(f"stdio-noise-{tag}\\n".encode())
    """
)


def _run_python(script: str, **env: str) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), **env)
    return subprocess.run(
        [sys.executable, "-c", NOISE + textwrap.dedent(script)],
        capture_output=True, text=True, env=full_env, timeout=120,
    )


def _stats_file(path: Path, seed: int, *, weights_sha256: str | None = None) -> Path:
    from fidkit.stats import Stats

    features = np.random.default_rng(seed).normal(size=(20, 8))
    metadata = {"created": "now"} if weights_sha256 is None else {"weights_sha256": weights_sha256}
    Stats.from_features(features, metadata=metadata).save(path)
    return path


# --- 23: stdout holds the result only, whatever a library prints ------------------------------------------


def test_a_library_writing_to_stdout_during_a_command_cannot_spoil_the_json(tmp_path):
    a = _stats_file(tmp_path / "a.npz", 0)
    b = _stats_file(tmp_path / "b.npz", 1)
    # json.dumps makes the report: noise right before the result is printed, and again inside the command.
    result = _run_python(
        f"""
        import json
        import fidkit.stats
        real_dumps, real_load = json.dumps, fidkit.stats.Stats.load

        def noisy_dumps(*args, **kwargs):
            noise("dumps")
            return real_dumps(*args, **kwargs)

        def noisy_load(*args, **kwargs):
            noise("load")
            return real_load(*args, **kwargs)

        json.dumps = noisy_dumps
        fidkit.stats.Stats.load = noisy_load
        from fidkit.cli import main
        raise SystemExit(main(["compute", {str(a)!r}, {str(b)!r}, "--json", "-q"]))
        """,
        FIDKIT_HOME=str(tmp_path / "home"),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # the whole of stdout is the report
    assert report["fid"] > 0
    for tag in ("dumps", "load"):
        for kind in ("fd", "stdio"):  # written below Python: only a descriptor-level redirection catches them
            assert f"{kind}-noise-{tag}" in result.stderr
    assert "py-noise-load" in result.stderr


def test_stdout_is_restored_after_the_command(tmp_path):
    """main() called in-process: after it returns, descriptor 1 and sys.stdout are the caller's again."""
    a = _stats_file(tmp_path / "a.npz", 0)
    result = _run_python(
        f"""
        from fidkit.cli import main
        status = main(["info", {str(a)!r}, "--json"])
        noise("after")
        print("status", status)
        """,
        FIDKIT_HOME=str(tmp_path / "home"),
    )
    assert result.returncode == 0, result.stderr
    info, end = json.JSONDecoder().raw_decode(result.stdout)
    assert info["n"] == 20
    rest = result.stdout[end:].split()
    assert sorted(rest) == sorted(["py-noise-after", "fd-noise-after", "stdio-noise-after", "status", "0"])


def test_stdout_to_stderr_moves_python_and_descriptor_writes(capfd):
    import ctypes

    from fidkit._streams import stdout_to_stderr

    libc = ctypes.CDLL(None)
    print("before")
    with stdout_to_stderr():
        print("py inside")
        os.write(1, b"fd inside\n")
        libc.printf(b"stdio inside\n")
        with stdout_to_stderr():  # nested: one redirection, undone once
            os.write(1, b"nested inside\n")
        os.write(1, b"still inside\n")
    print("after", flush=True)
    os.write(1, b"fd after\n")
    out, err = capfd.readouterr()
    assert out == "before\nafter\nfd after\n"
    for line in ("py inside", "fd inside", "stdio inside", "nested inside", "still inside"):
        assert line in err


def test_preloading_gpu_libraries_prints_nothing_on_stdout(capfd):
    from fidkit.inception.providers import preload_gpu_libraries

    class Runtime:
        @staticmethod
        def preload_dlls():
            print("Failed to load libcublasLt.so.13: cannot open shared object file")
            os.write(1, b"Please follow https://onnxruntime.ai/docs/install/ to install CUDA.\n")

    preload_gpu_libraries(Runtime())
    out, err = capfd.readouterr()
    assert out == ""
    assert "libcublasLt" in err and "onnxruntime.ai" in err


def test_feature_extractor_sessions_print_nothing_on_stdout(extractor, random_weights_path, tmp_path):
    """The Python API: onnxruntime's probes and session creation (patched to print as it does when a GPU
    library is missing) never reach the caller's stdout, for the CPU and for an explicit GPU that fails."""
    result = _run_python(
        f"""
        import numpy as np
        import onnxruntime as ort
        import fidkit
        from fidkit.inception import FeatureExtractor

        real_session, real_available = ort.InferenceSession, ort.get_available_providers

        def noisy_session(path, options, providers=None):
            noise("session")
            return real_session(path, options, providers=["CPUExecutionProvider"])

        def noisy_available():
            noise("probe")
            return ["CUDAExecutionProvider", *real_available()]

        ort.InferenceSession, ort.get_available_providers = noisy_session, noisy_available
        ort.preload_dlls = lambda: noise("preload")
        features = FeatureExtractor({str(random_weights_path)!r}, device="cpu")(np.zeros((2, 16, 16, 3), np.uint8))
        try:
            FeatureExtractor({str(random_weights_path)!r}, device="cuda:1")
        except fidkit.FidkitError:
            pass
        print("RESULT", features.shape[0])
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "RESULT 2\n"
    for tag in ("session", "probe", "preload"):
        for kind in ("py", "fd", "stdio"):
            assert f"{kind}-noise-{tag}" in result.stderr


@pytest.mark.parametrize("device", ["cuda", "tensorrt:1"])
def test_an_explicit_gpu_device_leaves_stdout_empty_or_json(device, extractor, random_weights_path, tmp_path):
    """For real: on a machine without the CUDA libraries onnxruntime-gpu prints "Failed to load ..." lines (and
    an "EP Error" block for TensorRT) on stdout; on one with a GPU the run succeeds. Either way stdout is the
    JSON report or nothing."""
    rng = np.random.default_rng(5)
    paths = []
    for name in ("a.npy", "b.npy"):
        np.save(tmp_path / name, rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8))
        paths.append(str(tmp_path / name))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "fidkit", "compute", *paths, "--weights", str(random_weights_path),
         "--device", device, "--json", "-q", "--no-cache", "--workers", "0"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    if result.returncode == 0:
        assert json.loads(result.stdout)["fid"] >= 0
    else:
        assert result.stdout == "", result.stdout
        assert "fidkit: error: device" in result.stderr


def test_the_training_loop_metric_on_an_explicit_gpu_prints_nothing_on_stdout(extractor, random_weights_path):
    """For real, as a user's script: ``FID(device="cuda:0").update(...)`` (an error without a usable GPU)."""
    result = _run_python(
        f"""
        import numpy as np
        import fidkit

        images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
        try:  # refused at construction where no GPU can run, else by the first update if its session fails
            metric = fidkit.FID(reference=images, device="cuda:0", weights={str(random_weights_path)!r})
            metric.update(images)
            outcome = "ran"
        except fidkit.FidkitError:
            outcome = "refused"
        print("RESULT", outcome)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout in ("RESULT ran\n", "RESULT refused\n"), result.stdout


# --- 26: unreleased weights are a warning in the report -----------------------------------------------------


def test_unreleased_weights_are_a_report_warning(tmp_path):
    import fidkit
    from fidkit.inception.weights import load_manifest
    from fidkit.stats import Stats

    other = "ab" * 32
    a = Stats.load(_stats_file(tmp_path / "a.npz", 0, weights_sha256=other))
    b = Stats.load(_stats_file(tmp_path / "b.npz", 1, weights_sha256=other))
    with pytest.warns(fidkit.FidkitWarning, match="not the released"):
        report = fidkit.compute_fid(a, b)
    weights_warnings = [message for message in report.warnings if "not the released" in message]
    assert len(weights_warnings) == 1  # one weights file, one warning naming both sides
    assert other[:16] in weights_warnings[0] and "sides a" in weights_warnings[0]

    released = load_manifest().sha256
    a_released = Stats.load(_stats_file(tmp_path / "c.npz", 0, weights_sha256=released))
    b_released = Stats.load(_stats_file(tmp_path / "d.npz", 1, weights_sha256=released))
    assert not [m for m in fidkit.compute_fid(a_released, b_released).warnings if "released" in m]


def test_unreleased_weights_reach_the_json_also_with_quiet(tmp_path):
    other = "cd" * 32
    a = _stats_file(tmp_path / "a.npz", 0, weights_sha256=other)
    b = _stats_file(tmp_path / "b.npz", 1, weights_sha256=other)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), FIDKIT_HOME=str(tmp_path / "home"))
    result = subprocess.run(
        [sys.executable, "-m", "fidkit", "compute", str(a), str(b), "--json", "-q"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    warnings = json.loads(result.stdout)["warnings"]
    assert any("not the released" in message and other[:16] in message for message in warnings)
    assert "fidkit: warning:" in result.stderr and "not the released" in result.stderr


# --- 29: long ttur / validate runs report progress on stderr, terminal or not --------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_without_a_terminal_is_a_line_per_interval(caplog):
    from fidkit.ttur.progress import Progress

    clock = _Clock()
    caplog.set_level("INFO", logger="fidkit.ttur.progress")
    with Progress(1000, "validate", unit="img", interval=20.0, clock=clock) as progress:
        assert not progress.draws_bar  # pytest's stderr is not a terminal
        for _ in range(100):  # 10 images every 1.5 s: 150 s in all
            clock.now += 1.5
            progress.update(10)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 150 // 20 + 1  # one every 20 s, and one when done
    assert lines[0] == "validate: 140/1000 img (14%), 6.67 img/s, 21 s so far, about 2 min left"
    assert lines[-1].startswith("validate: 1000/1000 img (100%)") and lines[-1].endswith("(done)")


def test_progress_is_silent_when_disabled_or_short(caplog):
    from fidkit.ttur.progress import Progress

    clock = _Clock()
    caplog.set_level("INFO", logger="fidkit.ttur.progress")
    with Progress(10, "quiet", enabled=False, interval=1.0, clock=clock) as progress:
        clock.now += 50
        progress.update(10)
    with Progress(10, "short", interval=30.0, clock=clock) as progress:
        clock.now += 5  # done before the first line is due: no line at all
        progress.update(10)
    assert caplog.records == []


@pytest.fixture
def gray_images(tmp_path) -> Path:
    path = tmp_path / "gray.npy"
    np.save(path, np.random.default_rng(3).integers(0, 256, (24, 28, 28), dtype=np.uint8))
    return path


def test_ttur_without_a_terminal_reports_reference_training_and_evaluation(
    extractor, random_weights_path, gray_images, tmp_path, capsys, monkeypatch
):
    from fidkit.cli import main
    from fidkit.ttur import progress

    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)  # a line at every update: the test cannot wait
    argv = [
        "ttur", "--data", str(gray_images), "--out", str(tmp_path / "run"), "--weights", str(random_weights_path),
        "--device", "cpu", "--steps", "3", "--eval-every", "3", "--eval-samples", "6", "--ref-samples", "12",
        "--train-batch-size", "8", "--batch-size", "4", "--json",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["rows"][0]["step"] == 3
    err = captured.err
    assert "fidkit: reference statistics: 12/12 img (100%)" in err
    assert f"fidkit: training {tmp_path / 'run'}: 1/3 step (33%)" in err
    assert "fidkit: FID at step 3: 6/6 img (100%)" in err


def test_validate_without_a_terminal_reports_progress(extractor, random_weights_path, gray_images, tmp_path, capsys,
                                                      monkeypatch):
    from fidkit.cli import main
    from fidkit.ttur import progress

    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)
    argv = [
        "validate", str(gray_images), "--out", str(tmp_path / "v"), "--weights", str(random_weights_path),
        "--device", "cpu", "--samples", "8", "--strengths", "0,1", "--disturbances", "gaussian_noise",
        "--batch-size", "4", "--json",
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "fidkit: validate: 4/16 img (25%)" in err and "fidkit: validate: 16/16 img (100%)" in err
    # -q: no progress lines
    assert main([*argv, "--force", "-q"]) == 0
    assert "validate: " not in capsys.readouterr().err
