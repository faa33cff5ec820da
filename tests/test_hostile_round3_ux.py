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
from pathlib import Path

import numpy as np
import pytest


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
