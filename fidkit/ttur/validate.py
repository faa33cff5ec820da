"""The FID paper's validation experiment: FID should rise steadily as images are disturbed.

``--samples`` images of a source are read once; their statistics (the clean set's) are computed
once; then each disturbance of :mod:`fidkit.ttur.disturbances` is applied at each strength and the
FID of the disturbed set against the clean statistics is computed in memory (images ->
:func:`fidkit.compute_stats`, no cache -> :func:`fidkit.fid_from_stats`). Strength 0 is the clean
set itself, whose FID is 0 by construction, so it is not recomputed.

Outputs (``out`` folder): ``validate.csv`` (disturbance, strength, parameter, fid),
``validate.png`` (one panel per disturbance; needs matplotlib) and ``validate.json`` (the whole
report, including whether each curve rose monotonically).
"""

from __future__ import annotations

import csv
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import fidkit
from fidkit._fs import atomic_write
from fidkit.errors import InputError, OverwriteError, SmallSampleWarning
from fidkit.report import json_text
from fidkit.ttur.config import output_folder, prepare_output_folder
from fidkit.ttur.data import existing_output, load_images
from fidkit.ttur.disturbances import DISTURBANCES, Disturbance, get_disturbance
from fidkit.ttur.features import check_extractor_device, make_extractor, stats_in_memory
from fidkit.ttur.plotting import plot_validation
from fidkit.ttur.progress import Progress

__all__ = [
    "ValidateConfig",
    "CurveResult",
    "ValidationReport",
    "run_validation",
    "DEFAULT_STRENGTHS",
    "CSV_NAME",
    "PLOT_NAME",
    "JSON_NAME",
]

logger = logging.getLogger(__name__)

DEFAULT_STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
CSV_NAME = "validate.csv"
PLOT_NAME = "validate.png"
JSON_NAME = "validate.json"
CSV_COLUMNS = ("disturbance", "strength", "parameter_value", "fid")
#: Every file ``run_validation`` writes in ``out``: any of them already there makes the folder
#: "in use" (refused without ``force``), so a user's own file of the same name is never replaced.
OUTPUT_NAMES = (CSV_NAME, PLOT_NAME, JSON_NAME)


@dataclass
class ValidateConfig:
    """The validation experiment's settings.

    Attributes
    ----------
    source : str
        The fidkit source of clean images.
    out : pathlib.Path
        Folder for the CSV, figure and JSON report.
    samples : int
        Number of images read from `source` (and from `contaminate`).
    strengths : tuple of float
        Strengths in [0, 1], fractions of each disturbance's maximum (0 is always included).
    disturbances : tuple of str
        Names to run (default: all of :data:`DISTURBANCES`).
    contaminate : str or None
        Source of foreign images for the contamination experiment; skipped when None.
    seed : int
        Seeds which images are read (with a limit) and every random disturbance.
    device, weights, feature_batch_size
        Feature extractor options (``feature_batch_size`` None: the device's default, as for ``fidkit compute``).
    """

    source: str
    out: Path
    samples: int = 5000
    strengths: tuple[float, ...] = DEFAULT_STRENGTHS
    disturbances: tuple[str, ...] = tuple(d.name for d in DISTURBANCES)
    contaminate: str | None = None
    seed: int = 0
    device: str = "auto"
    weights: str | None = None
    feature_batch_size: int | None = None

    def __post_init__(self) -> None:
        self.out = output_folder(self.out, inputs={"SRC": self.source, "--contaminate": self.contaminate})
        if self.samples < 2:
            raise InputError(f"samples must be at least 2, got {self.samples}")
        strengths = sorted({float(s) for s in self.strengths} | {0.0})
        for strength in strengths:
            if not 0.0 <= strength <= 1.0:
                raise InputError(f"strengths must lie in [0, 1], got {strength}")
        self.strengths = tuple(strengths)
        for name in self.disturbances:
            get_disturbance(name)  # raises InputError naming the choices
        self.disturbances = tuple(self.disturbances)


@dataclass
class CurveResult:
    """FID against strength for one disturbance.

    Attributes
    ----------
    disturbance : str
        Its name.
    parameter : str
        What strength 1 means, e.g. ``"sigma (pixels) = 4"``.
    strengths : list of float
        Increasing, starting at 0.
    parameter_values : list of float
        ``strength * max_value``.
    fids : list of float
        FID against the clean statistics at each strength.
    """

    disturbance: str
    parameter: str
    strengths: list[float]
    parameter_values: list[float]
    fids: list[float]

    @property
    def monotonic(self) -> bool:
        """True if FID rises strictly from each strength to the next."""
        return all(later > earlier for earlier, later in zip(self.fids, self.fids[1:]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "disturbance": self.disturbance,
            "parameter": self.parameter,
            "strengths": list(self.strengths),
            "parameter_values": list(self.parameter_values),
            "fids": list(self.fids),
            "monotonic": self.monotonic,
        }


@dataclass
class ValidationReport:
    """The whole experiment: one curve per disturbance, and where it was written."""

    source_name: str
    n_images: int
    image_size: tuple[int, int]
    seed: int
    curves: list[CurveResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (disturbance, why)
    csv_path: Path | None = None
    plot_path: Path | None = None
    json_path: Path | None = None
    extractor: dict[str, Any] = field(default_factory=dict)

    @property
    def all_monotonic(self) -> bool:
        """True if every curve run rose monotonically."""
        return all(curve.monotonic for curve in self.curves)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source_name,
            "n_images": self.n_images,
            "image_size": list(self.image_size),
            "seed": self.seed,
            "curves": [curve.to_dict() for curve in self.curves],
            "all_monotonic": self.all_monotonic,
            "skipped": [{"disturbance": name, "reason": why} for name, why in self.skipped],
            "csv": str(self.csv_path) if self.csv_path else None,
            "plot": str(self.plot_path) if self.plot_path else None,
            "json": str(self.json_path) if self.json_path else None,
            "extractor": dict(self.extractor),
        }

    def format_table(self) -> str:
        """A plain-text table: one row per disturbance, FID at each strength, monotonic or not."""
        if not self.curves:
            return "no disturbance was run"
        strengths = self.curves[0].strengths
        name_width = max(len(curve.disturbance) for curve in self.curves)
        header = f"{'disturbance':<{name_width}}  " + "  ".join(
            f"{'s=' + format(s, 'g'):>9}" for s in strengths
        ) + "  monotonic"
        lines = [header]
        for curve in self.curves:
            values = "  ".join(f"{fid:9.3f}" for fid in curve.fids)
            lines.append(
                f"{curve.disturbance:<{name_width}}  {values}  {'yes' if curve.monotonic else 'NO'}"
            )
        for name, why in self.skipped:
            lines.append(f"{name:<{name_width}}  skipped: {why}")
        return "\n".join(lines)


def _write_csv(curves: Sequence[CurveResult], path: Path, *, overwrite: bool) -> None:
    with atomic_write(path, overwrite=overwrite) as tmp_path:
        with open(tmp_path, "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(CSV_COLUMNS)
            for curve in curves:
                for strength, value, fid in zip(curve.strengths, curve.parameter_values, curve.fids):
                    writer.writerow([curve.disturbance, f"{strength:g}", f"{value:g}", repr(fid)])


def _disturbance_seed(seed: int, disturbance: Disturbance) -> int:
    """The random stream of `disturbance` under the experiment's `seed`.

    Derived from the disturbance's index in :data:`DISTURBANCES`, which is fixed whatever
    subset is run (and equal to the old selection index for a full run, so full-run numbers are
    unchanged).
    """
    index = [d.name for d in DISTURBANCES].index(disturbance.name)
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def run_validation(
    config: ValidateConfig,
    *,
    force: bool = False,
    extractor: Any = None,
    on_result: Callable[[str, float, float], None] | None = None,
    progress: bool | None = None,
) -> ValidationReport:
    """Run every disturbance at every strength and write the CSV, figure and JSON report.

    Parameters
    ----------
    config : ValidateConfig
        Source, sample count, strengths, seed.
    force : bool
        Replace existing output files (:data:`OUTPUT_NAMES`) in ``config.out``.
    extractor : FeatureExtractor, optional
        Reused if given; built from the config otherwise.
    on_result : callable, optional
        Called as ``on_result(disturbance, strength, fid)`` after each FID.
    progress : bool or None
        Progress on stderr over all images sent through the network (:class:`~fidkit.ttur.progress.Progress`):
        a bar on a terminal, else a log line every few seconds; False shows none.

    Returns
    -------
    ValidationReport

    Raises
    ------
    OverwriteError
        If any file of :data:`OUTPUT_NAMES` exists in the output folder and `force` is not given,
        or one of them is a link or not a regular file (even with `force`). Checked before any work.
    InputError
        If the output folder cannot be created (a file on its path, no permission); checked
        before any work.
    FidkitError
        ``config.device`` cannot run the network here (no driver, no runtime for it); checked first.
    """
    if extractor is None:  # a device the network cannot run on is refused now, not after reading the images
        check_extractor_device(config.weights, config.device, config.feature_batch_size)
    out = Path(config.out)
    if not force and (existing := existing_output(out, OUTPUT_NAMES)) is not None:
        raise OverwriteError(f"{existing} already exists; choose another --out or pass --force")
    # The folder and every name in it are checked (and the folder made) now, not after all the work.
    prepare_output_folder(out, OUTPUT_NAMES, inputs=(config.source, config.contaminate))

    loaded = load_images(config.source, limit=config.samples, seed=config.seed)
    images = loaded.images
    logger.info(
        "validate %s: %d images of %dx%d", loaded.source_name, images.shape[0],
        images.shape[1], images.shape[2],
    )
    other: np.ndarray | None = None
    report = ValidationReport(
        source_name=loaded.source_name,
        n_images=int(images.shape[0]),
        image_size=(int(images.shape[1]), int(images.shape[2])),
        seed=config.seed,
    )
    selected: list[Disturbance] = [get_disturbance(name) for name in config.disturbances]
    if any(d.needs_other for d in selected):
        if config.contaminate is None:
            report.skipped.append(("contamination", "no --contaminate source given"))
            logger.warning("contamination skipped: give images of another source with --contaminate")
            selected = [d for d in selected if not d.needs_other]
        else:
            other = load_images(
                config.contaminate,
                limit=config.samples,
                seed=config.seed,
                size=report.image_size,
            ).images

    if extractor is None:
        extractor = make_extractor(config.weights, config.device, config.feature_batch_size)
    report.extractor = dict(extractor.metadata())

    if images.shape[0] < fidkit.FEATURE_DIM:
        logger.warning(
            "%d images is fewer than the %d feature dimensions: every FID here is biased "
            "upwards; the curves' shape is still meaningful, their values are not comparable "
            "with FIDs at other N",
            images.shape[0],
            fidkit.FEATURE_DIM,
        )
    n_nonzero = sum(1 for strength in config.strengths if strength > 0.0)
    # One count across every set, on stderr: a bar on a terminal, a line every few seconds elsewhere.
    bar = Progress(
        images.shape[0] * (1 + n_nonzero * len(selected)),
        "validate",
        unit="img",
        enabled=progress,
    )
    with bar, warnings.catch_warnings():
        # Warned once above; one SmallSampleWarning per FID would bury the report.
        warnings.simplefilter("ignore", SmallSampleWarning)
        clean_stats = stats_in_memory(images, extractor, progress=bar)
        for disturbance in selected:
            # Each disturbance gets its own stream, the same at every strength (nested sets).
            # It is keyed by the disturbance's place in the full registry, not in the selection,
            # so `--disturbances black_rectangles` alone draws what a full run draws.
            disturbance_seed = _disturbance_seed(config.seed, disturbance)
            fids: list[float] = []
            for strength in config.strengths:
                if strength == 0.0:
                    fid = 0.0  # the clean set against its own statistics
                else:
                    disturbed = disturbance.apply(
                        images, strength, seed=disturbance_seed, other=other
                    )
                    disturbed_stats = stats_in_memory(disturbed, extractor, progress=bar)
                    fid = float(fidkit.fid_from_stats(disturbed_stats, clean_stats))
                fids.append(fid)
                # With a bar drawn on the terminal, per-level lines would break it; log them only
                # where there is no bar (logs, CI).
                (logger.debug if bar.draws_bar else logger.info)(
                    "%s strength %g: FID %.3f", disturbance.name, strength, fid
                )
                if on_result is not None:
                    on_result(disturbance.name, strength, fid)
            report.curves.append(
                CurveResult(
                    disturbance=disturbance.name,
                    parameter=disturbance.describe_max(),
                    strengths=list(config.strengths),
                    parameter_values=[disturbance.value(s) for s in config.strengths],
                    fids=fids,
                )
            )

    report.csv_path = out / CSV_NAME
    _write_csv(report.curves, report.csv_path, overwrite=True)
    report.plot_path = plot_validation(
        {c.disturbance: list(zip(c.strengths, c.fids)) for c in report.curves},
        out / PLOT_NAME,
        parameters={c.disturbance: c.parameter for c in report.curves},
        title=f"FID against disturbance strength ({report.n_images} images of "
        f"{Path(report.source_name).name})",
    )
    report.json_path = out / JSON_NAME
    with atomic_write(report.json_path, overwrite=True) as tmp_path:
        tmp_path.write_text(json_text(report.to_dict()) + "\n", encoding="utf-8")
    return report

