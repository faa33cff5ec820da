"""Hostile inputs, round 3, on the sources and the statistics file: each test builds a small hostile file.

* the splits of one CIFAR archive have different fingerprints (never one another's cache entry);
* what a header declares is checked before anything is read, and no read goes past it: CIFAR members, MNIST
  ``.gz`` streams, statistics ``.npz`` members, image ``.npz`` members. Where a file could make fidkit allocate
  a lot, the test runs in a subprocess and bounds its peak memory (``VmHWM``), never its time;
* ``stats --save`` never replaces its input; misnamed ``.npy`` / ``.npz`` files, a ``FIDKIT_DATASETS`` that is a
  file and a statistics file missing ``sigma`` are one-line errors.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fidkit.cli import main
from fidkit.errors import OverwriteError
from fidkit.sources import refuse_outputs_over_inputs


# --- helpers -----------------------------------------------------------------------------------------------


RNG = np.random.default_rng(2024)


def _run_cli(argv: list[str], capsys) -> tuple[int, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.err


def _assert_one_line_error(status: int, err: str, *needles: str) -> None:
    assert status in (1, 2), err
    assert "Traceback" not in err and "internal error" not in err, err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], err


# --- 17: stats --save never replaces its input ------------------------------------------------------------


def _images_npy(path: Path) -> bytes:
    np.save(path, RNG.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8))
    return path.read_bytes()


@pytest.mark.parametrize("alias", ["same", "relative", "dotted", "absolute", "symlink", "hardlink"])
def test_stats_save_over_its_input_is_refused_naming_both(tmp_path, monkeypatch, capsys, alias):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    original = _images_npy(tmp_path / "images.npy")
    output = {
        "same": "images.npy",
        "relative": "sub/../images.npy",
        "dotted": "./images.npy",
        "absolute": str(tmp_path / "images.npy"),
        "symlink": "link.npy",
        "hardlink": "hard.npy",
    }[alias]
    if alias == "symlink":
        os.symlink("images.npy", "link.npy")
    if alias == "hardlink":
        os.link("images.npy", "hard.npy")
    for extra in ([], ["--force"]):
        status, err = _run_cli(["stats", "images.npy", "--save", output, *extra, "--quiet"], capsys)
        # (argparse's Path drops a leading "./")
        _assert_one_line_error(status, err, f"--save {os.path.normpath(output) if alias == 'dotted' else output}",
                               "the input images.npy")
        assert (tmp_path / "images.npy").read_bytes() == original


def test_refuse_output_over_input_leaves_other_outputs_and_inputs_alone(tmp_path):
    _images_npy(tmp_path / "images.npy")
    refuse_outputs_over_inputs([tmp_path / "stats.npz"], str(tmp_path / "images.npy"))
    refuse_outputs_over_inputs([tmp_path / "stats.npz"], np.zeros((2, 4, 4, 3), np.uint8), "no-such-file")
    with pytest.raises(OverwriteError, match="images.npy"):
        refuse_outputs_over_inputs([tmp_path / "images.npy"], "other", tmp_path / "images.npy")
