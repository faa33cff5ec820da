"""Figures for the trainer and the validation experiments, with matplotlib as an optional extra.

matplotlib is imported only when a figure is drawn, and only its object-oriented API
(``Figure`` + the Agg canvas) is used: no pyplot, no global backend switch, no state left behind in
the caller's process. Without matplotlib every function logs a warning naming the extra to install
and returns None; the CSVs the figures are drawn from are written regardless.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fidkit._fs import atomic_write

__all__ = ["plot_fid_curves", "plot_validation", "PLOT_INSTALL_HINT"]

logger = logging.getLogger(__name__)

PLOT_INSTALL_HINT = 'figures need matplotlib: pip install "fidkit[plot]"'


def _new_figure(width: float, height: float) -> Any:
    """A matplotlib Figure drawn by the Agg canvas, or None without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning(PLOT_INSTALL_HINT)
        return None
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path) -> Path:
    with atomic_write(path, overwrite=True) as tmp_path:
        figure.savefig(tmp_path, format="png", bbox_inches="tight")
    return path


def plot_fid_curves(
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    path: str | Path,
    *,
    title: str = "FID during training",
) -> Path | None:
    """Plot FID against training step, one line per run.

    Parameters
    ----------
    curves : mapping of label to rows
        Each row holds at least ``step`` and ``fid`` (the rows of ``metrics.csv``).
    path : path-like
        Where to write the PNG (replaced if it exists).
    title : str
        The figure's title.

    Returns
    -------
    pathlib.Path or None
        `path`, or None when matplotlib is missing (a warning says how to install it).
    """
    figure = _new_figure(7.0, 4.5)
    if figure is None:
        return None
    axes = figure.add_subplot(1, 1, 1)
    for label, rows in curves.items():
        points = [(row["step"], row["fid"]) for row in rows if math.isfinite(row["fid"])]
        if points:
            steps, fids = zip(*points)
            axes.plot(steps, fids, marker="o", markersize=3, label=label)
    axes.set_xlabel("training step")
    axes.set_ylabel("FID (lower is better)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if curves:
        axes.legend()
    return _save(figure, Path(path))


def plot_validation(
    results: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    *,
    parameters: Mapping[str, str] | None = None,
    title: str = "FID against disturbance strength",
) -> Path | None:
    """Plot FID against strength, one panel per disturbance.

    Parameters
    ----------
    results : mapping of disturbance name to ``[(strength, fid), ...]``
        Strengths in [0, 1] (fractions of each disturbance's documented maximum).
    path : path-like
        Where to write the PNG (replaced if it exists).
    parameters : mapping of disturbance name to str, optional
        A description of what strength 1 means, used as the panel's x label.
    title : str
        The figure's title.

    Returns
    -------
    pathlib.Path or None
        `path`, or None when matplotlib is missing.
    """
    names = list(results)
    n_panels = max(len(names), 1)
    n_columns = min(3, n_panels)
    n_rows = math.ceil(n_panels / n_columns)
    figure = _new_figure(4.0 * n_columns, 3.2 * n_rows)
    if figure is None:
        return None
    for index, name in enumerate(names):
        axes = figure.add_subplot(n_rows, n_columns, index + 1)
        points = sorted(results[name])
        if points:
            strengths, fids = zip(*points)
            axes.plot(strengths, fids, marker="o")
        axes.set_title(name)
        xlabel = "strength"
        if parameters and name in parameters:
            xlabel = f"strength (1 = {parameters[name]})"
        axes.set_xlabel(xlabel, fontsize=8)
        axes.set_ylabel("FID")
        axes.grid(True, alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, Path(path))
