"""The files of a ``fidkit ttur`` run folder: their names, and how each is written and read.

Run folder layout (``TTURConfig.out``)::

    config.json     the configuration, for people (the checkpoint holds its own copy); written first,
                    so --resume restarts from it a run stopped before its first checkpoint
    metrics.csv     step, fid, loss_d, loss_g, wall_time_s; one row per evaluation
    fid.png         FID against step (needs matplotlib: pip install "fidkit[plot]")
    samples.png     an 8x8 grid of the first evaluation images
    checkpoint.pt   models, optimisers, RNG state, step, rows so far; written at each evaluation

``--compare`` writes ``compare.png`` in its folder and one run folder per rule beneath it.
Every file is written atomically, so an interrupted run leaves the last complete checkpoint and a
CSV consistent with it.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fidkit._fs import atomic_write
from fidkit.errors import InputError

__all__ = [
    "METRICS_COLUMNS",
    "RUN_OUTPUT_NAMES",
    "COMPARE_OUTPUT_NAMES",
    "COMPARE_RUNS",
    "load_checkpoint",
    "save_checkpoint",
    "read_config",
    "write_config",
    "write_metrics_csv",
    "read_metrics_csv",
    "write_sample_grid",
    "remove_run_files",
]

logger = logging.getLogger(__name__)

METRICS_COLUMNS = ("step", "fid", "loss_d", "loss_g", "wall_time_s")
CHECKPOINT_FORMAT = "fidkit-ttur-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.csv"
PLOT_NAME = "fid.png"
CONFIG_NAME = "config.json"
SAMPLES_NAME = "samples.png"
COMPARE_PLOT_NAME = "compare.png"
#: The sample grid shows the first SAMPLE_GRID_SIDE**2 images of the fixed evaluation noise.
SAMPLE_GRID_SIDE = 8
#: The sub-folders of ``--compare``, one per rule.
COMPARE_RUNS = ("ttur", "one-time-scale")
#: Every file a run writes in its folder. Any of them already there makes the folder "in use":
#: without --resume or --force the run refuses rather than replace, say, a user's own config.json.
RUN_OUTPUT_NAMES = (CHECKPOINT_NAME, METRICS_NAME, CONFIG_NAME, PLOT_NAME, SAMPLES_NAME)
#: What ``--compare`` writes in its own folder (each sub-run folder gets RUN_OUTPUT_NAMES).
COMPARE_OUTPUT_NAMES = (COMPARE_PLOT_NAME,)


def remove_run_files(out: Path, names: Iterable[str]) -> list[Path]:
    """Remove what a previous run wrote in `out` (``--force``): the regular files named `names`, in order.

    Only fidkit's own names, and only regular files: a link or a folder at such a name is left alone
    (:func:`~fidkit.ttur.config.check_output_files` refuses those before any work). Pass the
    checkpoint first: a stop part-way then leaves no checkpoint beside the new ``config.json``, so
    ``--resume`` restarts the new run rather than continue the old one.

    Returns
    -------
    list of pathlib.Path
        The files removed.
    """
    removed = []
    for name in names:
        path = Path(out) / name
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    if removed:
        logger.info("--force: removed the previous run's %s", ", ".join(str(path) for path in removed))
    return removed


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write a trainer's ``state_dict()`` atomically to `path` (replacing the previous one)."""
    import torch

    with atomic_write(path, overwrite=True) as tmp_path:
        torch.save(state, tmp_path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU; only tensors and plain values are unpickled.

    Raises
    ------
    InputError
        If `path` does not exist (nothing to resume) or is not a readable fidkit TTUR checkpoint.
    """
    import torch

    if not Path(path).exists():
        raise InputError(f"{path} does not exist: nothing to resume; run without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt files
        raise InputError(
            f"{path} cannot be read as a fidkit TTUR checkpoint ({error}); start again with --force"
        ) from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not a fidkit TTUR checkpoint; start again with --force")
    return state


def read_config(path: Path) -> dict[str, Any]:
    """Read a run's ``config.json`` back (what :func:`write_config` wrote).

    Raises
    ------
    InputError
        If `path` cannot be read or does not hold a JSON object.
    """
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputError(
            f"{path} cannot be read as the configuration of a fidkit ttur run ({error}); start again "
            "with --force (the run's files are replaced) or choose another --out"
        ) from error
    if not isinstance(values, dict):
        raise InputError(
            f"{path} is not the configuration of a fidkit ttur run (not a JSON object); start again "
            "with --force (the run's files are replaced) or choose another --out"
        )
    return values


def write_config(config: dict[str, Any], path: Path) -> None:
    """Write a run's configuration (``TTURConfig.to_dict()``) as indented JSON, atomically."""
    with atomic_write(path, overwrite=True) as tmp_path:
        tmp_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def write_sample_grid(images: np.ndarray, path: Path, *, side: int = SAMPLE_GRID_SIDE) -> Path:
    """Write up to ``side * side`` uint8 ``(B, H, W, 3)`` images as one PNG grid (Pillow, atomic).

    FID is a number; the grid lets a user see what it is measuring. Missing cells stay black.
    """
    from PIL import Image

    n_cells = side * side
    height, width = images.shape[1:3]
    grid = np.zeros((side * height, side * width, 3), dtype=np.uint8)
    for index, image in enumerate(images[:n_cells]):
        row, column = divmod(index, side)
        grid[row * height:(row + 1) * height, column * width:(column + 1) * width] = image
    with atomic_write(path, overwrite=True) as tmp_path:
        Image.fromarray(grid).save(tmp_path, format="PNG")
    return path


def write_metrics_csv(rows: Iterable[dict[str, float]], path: Path) -> None:
    """Write the metrics rows as CSV (columns :data:`METRICS_COLUMNS`), atomically."""
    with atomic_write(path, overwrite=True) as tmp_path:
        with open(tmp_path, "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(METRICS_COLUMNS)
            for row in rows:
                writer.writerow(
                    [
                        int(row["step"]),
                        _format_float(row["fid"]),
                        _format_float(row["loss_d"]),
                        _format_float(row["loss_g"]),
                        f"{float(row['wall_time_s']):.3f}",
                    ]
                )


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """Read a ``metrics.csv`` back into rows (``step`` as int, the rest as float)."""
    with open(path, newline="", encoding="utf-8") as stream:
        return [
            {
                name: (int(value) if name == "step" else float(value))
                for name, value in record.items()
            }
            for record in csv.DictReader(stream)
        ]


def _format_float(value: float) -> str:
    # repr-precision keeps the CSV an exact record of what the run computed.
    return repr(float(value))
