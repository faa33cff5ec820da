"""The standard streams: stdout holds the result only, whatever a library prints; a closed or broken stream is
quiet or an error before any work; every warning is printed on stderr as ``fidkit: warning: ...`` and listed in
``--json``'s "warnings".

The groups below came from the hostile-input reviews (the issue 9 review, rounds 3, 4 and 5), whose item numbers
they keep.
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

from fidkit.cli import main
from fidkit.stats import Stats

from cli_runs import _run, error_line
from stand_ins import _features_file, small_stats


# --- hostile review (issue 9), 12: stdout carries only the result; closed or broken streams -------------------------


REPO_ROOT = Path(__file__).resolve().parent.parent


def run_fidkit(shell_line: str, home: Path, **kwargs) -> subprocess.CompletedProcess:
    """Run ``fidkit ...`` through ``sh -c`` (so that ``2>&-``, ``>&-`` and pipes are real)."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), FIDKIT_HOME=str(home))
    command = shell_line.replace("fidkit ", f"'{sys.executable}' -m fidkit ", 1)
    return subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=120, **kwargs)


@pytest.fixture
def two_ttur_files(tmp_path):
    """Two mu/sigma-only files: comparing them needs no network and warns (N unknown) on stderr."""
    paths = []
    for index in range(2):
        stats = small_stats(index)
        path = tmp_path / f"side{index}.npz"
        np.savez(path, mu=stats.mu, sigma=stats.sigma)
        paths.append(path)
    return paths


def test_closed_stderr_keeps_json_on_stdout_and_the_exit_status(home, two_ttur_files):
    a, b = two_ttur_files
    result = run_fidkit(f"fidkit compute '{a}' '{b}' --json 2>&-", home)
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)  # only the report: the warnings were dropped, not sent to stdout
    assert report["fid"] > 0 and report["warnings"]
    missing = run_fidkit(f"fidkit compute '{a}' '{b}.missing' 2>&-", home)
    assert missing.returncode == 1 and missing.stdout == ""


def test_broken_stdout_pipe_is_quiet_and_the_saved_file_is_complete(home, two_ttur_files, tmp_path):
    a, _ = two_ttur_files
    out = tmp_path / "saved.npz"
    read_end, write_end = os.pipe()
    os.close(read_end)  # no reader at all: the first write to stdout fails with EPIPE, deterministically
    try:
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), FIDKIT_HOME=str(home))
        result = subprocess.run(
            [sys.executable, "-m", "fidkit", "stats", str(a), "--save", str(out)],
            stdout=write_end, stderr=subprocess.PIPE, env=env, text=True, timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141
    assert result.stderr == ""  # no "Broken pipe", no "Exception ignored"
    from fidkit.stats import Stats

    assert Stats.load(out).dim == 8


def test_closed_stdout_is_an_error_before_any_work(home, two_ttur_files, tmp_path):
    a, _ = two_ttur_files
    out = tmp_path / "never.npz"
    result = run_fidkit(f"fidkit stats '{a}' --save '{out}' >&-", home)
    assert result.returncode == 1
    assert "stdout is closed" in error_line(result.stderr)
    assert not out.exists()


# --- hostile round 3, 23: stdout holds the result only, whatever a library prints -----------------------------------


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


# --- hostile round 3, 26: unreleased weights are a warning in the report and in --json ------------------------------


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


# --- hostile round 4, 2: --json's warnings hold every warning printed on stderr -------------------------------------


def _stderr_warnings(err: str) -> list[str]:
    prefix = "fidkit: warning: "
    return [line[len(prefix):] for line in err.splitlines() if line.startswith(prefix)]


def test_json_warnings_hold_every_warning_printed_on_stderr(tmp_path, capsys):
    a, b = _features_file(tmp_path / "a.npz", 12, 16), _features_file(tmp_path / "b.npz", 14, 16)
    argv = ["compute", str(a), str(b), "--metrics", "fid,sfid,kid", "--limit", "5", "--seed", "2", "--json", "--quiet"]
    status, out, err = _run(argv, capsys)
    assert status == 0, err
    printed = _stderr_warnings(err)
    reported = json.loads(out)["warnings"]
    assert any("limit/seed do not apply" in text for text in printed)
    assert any("dim = 20 features" in text for text in printed)  # sFID's spatial features, N below their dim
    assert [text for text in reported if text in printed] == printed  # all of them, in the order printed
    assert len(reported) == len(set(reported))  # once each
    status, out, err = _run(["compute", str(a), str(b), "--seed", "7", "--json", "--quiet"], capsys)
    assert status == 0 and any("seed 7 without limit" in text for text in json.loads(out)["warnings"])


def test_stats_json_lists_its_warnings(tmp_path, capsys):
    stats = tmp_path / "s.npz"
    Stats(mu=np.zeros(3), sigma=np.eye(3), n=20).save(stats)
    status, out, err = _run(["stats", str(stats), "--limit", "4", "--json", "--quiet"], capsys)
    assert status == 0, err
    printed = _stderr_warnings(err)
    assert printed and json.loads(out)["warnings"] == printed
    status, out, _ = _run(["stats", str(stats), "--json", "--quiet"], capsys)
    assert json.loads(out)["warnings"] == []


# --- hostile round 4, 3: a failed write of the result to stdout -----------------------------------------------------


def _fidkit(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "fidkit", *argv], env=env, timeout=120, **kwargs)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_stdout_is_not_reported_as_a_failed_save(tmp_path):
    stats, out = tmp_path / "s.npz", tmp_path / "copy.npz"
    Stats(mu=np.zeros(3), sigma=np.eye(3), n=20).save(stats)
    with open("/dev/full", "w") as full:
        result = _fidkit(["stats", str(stats), "--save", str(out), "--quiet"], stdout=full, stderr=subprocess.PIPE,
                         text=True)
    assert result.returncode == 1
    assert "cannot write the result to stdout" in result.stderr and "No space left on device" in result.stderr
    assert f"{out} was saved" in result.stderr, result.stderr  # the save itself is complete, and said so
    assert Stats.load(out).n == 20


def test_a_reader_that_goes_away_stays_quiet(tmp_path):
    stats = tmp_path / "s.npz"
    Stats(mu=np.zeros(3), sigma=np.eye(3), n=20).save(stats)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    process = subprocess.Popen([sys.executable, "-m", "fidkit", "info", str(stats), "--json"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before anything is written
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and err == ""


# --- hostile round 5 (what the docs promise), 2 and 4: every warning printed is "fidkit: warning: ..." and in --json ---


def test_logged_warnings_say_warning_and_are_in_the_json(tmp_path, capsys, monkeypatch):
    # "50 decoding workers asked for ... using 2" printed as a plain "fidkit: ..." line, and --json's warnings was
    # [] (usage.md: warnings start with "fidkit: warning:", and --json lists every warning printed on stderr).
    from PIL import Image

    monkeypatch.setenv("FIDKIT_HOME", str(tmp_path / "home"))
    folder = tmp_path / "imgs"
    folder.mkdir()
    for index in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * index, np.uint8)).save(folder / f"{index}.png")
    import fidkit.cache as cache

    # A warning fidkit logs: the corrupt cache entry the command's look-up meets (removed and recomputed).
    (tmp_path / "home" / "stats").mkdir(parents=True)
    import fidkit.pipeline  # noqa: F401 - the look-up names its entries through pipeline.cache_key

    monkeypatch.setattr("fidkit.pipeline.cache_key", lambda *args, **kwargs: "cd" * 32)
    cache._entry_path("cd" * 32, None).write_bytes(b"not an npz either")
    from stand_ins import MeanColour
    from fidkit.testing import replaced_extractor

    with replaced_extractor(lambda options: MeanColour(), identity=lambda options: MeanColour().metadata()):
        status = main(["stats", str(folder), "--json", "--workers", "0"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    warned = [line for line in captured.err.splitlines() if "corrupt" in line]
    assert warned and all(line.startswith("fidkit: warning: ") for line in warned), captured.err
    listed = json.loads(captured.out)["warnings"]
    assert any("corrupt" in message for message in listed), listed
    # The statistics kept were made by other weights than the released file's (the stand-in's "ccc..."): said, as
    # `fidkit compute` says it of a side (it was an info line, or nothing with --quiet).
    assert any(message.startswith(f"the statistics of {folder} were computed with Inception weights of sha256 "
                                  "cccccccccccccccc...") for message in listed), listed


def test_json_warnings_are_the_same_for_a_fresh_and_a_cached_run(tmp_path, capsys, monkeypatch):
    # A bad file skipped and a hidden folder ignored were listed twice (the reading's log line and the report's
    # warning), and the cached run, which reads nothing, listed fewer.
    from PIL import Image

    from fidkit.testing import replaced_extractor
    from stand_ins import MeanColour

    monkeypatch.setenv("FIDKIT_HOME", str(tmp_path / "home"))
    sides = []
    for name in ("a", "b"):
        folder = tmp_path / name
        (folder / ".ipynb_checkpoints").mkdir(parents=True)
        for index in range(4):
            Image.fromarray(np.full((8, 8, 3), 30 * index + (name == "b"), np.uint8)).save(folder / f"{index}.png")
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / ".ipynb_checkpoints" / "old.png")
        (folder / "broken.png").write_bytes(b"not a png")
        sides.append(str(folder))
    runs = []
    with replaced_extractor(lambda options: MeanColour(), identity=lambda options: MeanColour().metadata()):
        for _ in range(2):
            assert main(["compute", *sides, "--skip-bad", "--workers", "0", "--json"]) == 0
            runs.append(json.loads(capsys.readouterr().out))
    assert not runs[0]["a"]["cached"] and runs[1]["a"]["cached"]
    assert runs[0]["warnings"] == runs[1]["warnings"]
    for fact in ("skipped", "not read"):
        assert len([message for message in runs[0]["warnings"] if "side a" in message and fact in message]) == 1
