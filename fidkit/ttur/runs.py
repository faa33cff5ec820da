"""``fidkit ttur``: a training run with FID tracked, resumable, and the TTUR / one time-scale comparison.

:func:`run_ttur` prepares what a run needs (the training images in memory, the feature extractor,
the dataset's reference statistics), drives a :class:`~fidkit.ttur.trainer.TTURTrainer` to
``steps``, evaluates FID every ``eval_every`` steps and writes the run folder
(:mod:`fidkit.ttur.run_files`) after each evaluation. :func:`run_compare` runs both rules from
one seed on shared data, extractor and reference, and draws both curves in one figure.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import fidkit
from fidkit.errors import InputError, OverwriteError
from fidkit.ttur.config import (
    OutFolderError,
    TTURConfig,
    check_output_files,
    make_output_folder,
    prepare_output_folder,
)
from fidkit.ttur.data import (
    TrainingData,
    existing_output,
    load_training_data,
)
from fidkit.ttur.features import make_extractor
from fidkit.ttur.plotting import plot_fid_curves
from fidkit.ttur.progress import Progress
from fidkit.ttur.reference import reference_stats, weights_sha256_of
from fidkit.ttur.run_files import (
    CHECKPOINT_NAME,
    COMPARE_OUTPUT_NAMES,
    COMPARE_PLOT_NAME,
    COMPARE_RUNS,
    CONFIG_NAME,
    METRICS_NAME,
    PLOT_NAME,
    RUN_OUTPUT_NAMES,
    SAMPLES_NAME,
    load_checkpoint,
    read_config,
    remove_run_files,
    write_config,
    read_metrics_csv,
    write_metrics_csv,
    write_sample_grid,
)
from fidkit.ttur.trainer import TTURTrainer, check_devices, deterministic_torch

__all__ = ["RunResult", "CompareResult", "run_ttur", "run_compare", "reference_stats"]

logger = logging.getLogger(__name__)

#: The settings that decide the training images and the reference statistics; the two runs of a
#: resumed ``--compare`` must agree on them, as they share one copy of each.
_DATA_SETTINGS = ("data", "train_samples", "ref_samples", "seed")


@dataclass
class RunResult:
    """What a training run left behind.

    Attributes
    ----------
    config : TTURConfig
        The configuration the run used (from the checkpoint when resumed).
    rows : list of dict
        All metrics rows, resumed ones included.
    out : pathlib.Path
        The run folder.
    metrics_path, checkpoint_path : pathlib.Path
        The CSV and the checkpoint.
    plot_path : pathlib.Path or None
        The FID plot; None when matplotlib is missing.
    resumed_from_step : int
        0 for a fresh run.
    """

    config: TTURConfig
    rows: list[dict[str, float]]
    out: Path
    metrics_path: Path
    checkpoint_path: Path
    plot_path: Path | None
    resumed_from_step: int = 0

    @property
    def final_fid(self) -> float:
        """FID at the last evaluation (nan if none)."""
        return float(self.rows[-1]["fid"]) if self.rows else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "out": str(self.out),
            "config": self.config.to_dict(),
            "rows": [dict(row) for row in self.rows],
            "final_fid": self.final_fid,
            "metrics_csv": str(self.metrics_path),
            "checkpoint": str(self.checkpoint_path),
            "plot": str(self.plot_path) if self.plot_path else None,
            "resumed_from_step": self.resumed_from_step,
        }


@dataclass
class CompareResult:
    """The two runs of ``--compare`` and the figure holding both curves."""

    runs: dict[str, RunResult] = field(default_factory=dict)
    plot_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": {name: run.to_dict() for name, run in self.runs.items()},
            "plot": str(self.plot_path) if self.plot_path else None,
        }


def _refuse_overwrite(existing: Path) -> None:
    raise OverwriteError(
        f"{existing} already exists; pass --resume to continue the run there, --force to start "
        "over (replacing the run's files), or choose another --out"
    )


#: Files a run writes only after its first checkpoint: a folder holding one of them but no
#: checkpoint lost its checkpoint, and is not restarted from step 0 by --resume.
_WRITTEN_AFTER_CHECKPOINT = (SAMPLES_NAME, PLOT_NAME)


def _resumed_config(config: TTURConfig, stored: dict[str, Any], source: Path) -> TTURConfig:
    """The configuration of a run resumed with the `stored` settings (a checkpoint's or a config.json's,
    read from `source`): those settings, except the folder, ``steps`` (the new total) and the device,
    weights and feature batch size, which come from `config`."""
    values = {
        **stored,
        "out": str(config.out),
        "steps": config.steps,
        "device": config.device,
        "weights": config.weights,
        "feature_batch_size": config.feature_batch_size,
    }
    try:
        return TTURConfig.from_dict(values)
    except OutFolderError:  # about --out, not the stored settings: its message says so
        raise
    except (TypeError, ValueError, InputError) as error:
        raise InputError(
            f"{source} does not hold the settings of a fidkit ttur run ({error}); start again with "
            "--force (the run's files are replaced) or choose another --out"
        ) from error


@dataclass
class _ResumePoint:
    """Where a resumed run starts: its configuration and its checkpoint (None: from step 0)."""

    config: TTURConfig
    state: dict[str, Any] | None


def _stored_run(out: Path) -> tuple[dict[str, Any], dict[str, Any] | None, Path] | None:
    """The settings a run folder holds: ``(settings, checkpoint or None, file read)``; None when it holds none.

    The checkpoint when there is one; else the ``config.json`` of a run stopped before its first
    checkpoint (written before the first training step). A folder that also holds a file written
    only after a checkpoint (``samples.png``, ``fid.png``) lost its checkpoint: refused, rather
    than silently restarted from step 0 over its results.
    """
    checkpoint_path = out / CHECKPOINT_NAME
    config_path = out / CONFIG_NAME
    if checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        if config_path.exists():
            _check_config_matches(read_config(config_path), config_path, state["config"], checkpoint_path)
        return state["config"], state, checkpoint_path
    if not config_path.exists():
        return None
    later = existing_output(out, _WRITTEN_AFTER_CHECKPOINT)
    if later is None and _evaluations_recorded(out / METRICS_NAME) > 1:
        # One row can be a crash between the first evaluation's CSV and its checkpoint; more cannot.
        later = out / METRICS_NAME
    if later is not None:
        raise InputError(
            f"{checkpoint_path} does not exist, but {later} does: the run went past its first "
            "checkpoint and lost it, so there is nothing to resume; start again with --force (the "
            "run's files are replaced) or restore the checkpoint"
        )
    return read_config(config_path), None, config_path


#: Settings a resume takes from the command line (:func:`_resumed_config`): a config.json written at
#: the start of a resumed segment may differ from its checkpoint in these, and only these.
_RESUME_OVERRIDES = ("out", "steps", "device", "weights", "feature_batch_size")


def _check_config_matches(
    written: dict[str, Any], config_path: Path, stored: dict[str, Any], checkpoint_path: Path
) -> None:
    """Refuse a run folder whose ``config.json`` describes another run than its checkpoint."""
    keys = [key for key in TTURConfig.__dataclass_fields__ if key not in _RESUME_OVERRIDES]
    differing = [key for key in keys if written.get(key) != stored.get(key)]
    if differing:
        shown = ", ".join(f"{key} ({written.get(key)!r} against {stored.get(key)!r})" for key in differing)
        raise InputError(
            f"{config_path} and {checkpoint_path} describe different runs: {shown}; they are not one "
            "run to resume: start again with --force (the run's files are replaced) or choose another --out"
        )


def _evaluations_recorded(path: Path) -> int:
    """Rows of a run's ``metrics.csv`` (0 when there is none); one that cannot be read counts as many."""
    if not path.exists():
        return 0
    try:
        return len(read_metrics_csv(path))
    except (OSError, ValueError, KeyError, TypeError):
        return 2**31  # not ours to restart over


def _resume_point(
    config: TTURConfig, stored: dict[str, Any], state: dict[str, Any] | None, source: Path
) -> _ResumePoint:
    """Resume `config`'s run from `stored` settings and `state`; refuse a --steps below the checkpoint's step."""
    out = Path(config.out)
    config = _resumed_config(config, stored, source)
    if state is None:
        logger.warning(
            "%s has no %s (the run stopped before its first checkpoint): starting it from step 0 "
            "with the settings of %s", out, CHECKPOINT_NAME, source,
        )
        return _ResumePoint(config, None)
    done = int(state["step"])
    if done > config.steps:
        raise InputError(
            f"{source} is at step {done}, past --steps {config.steps}: resuming would train nothing and "
            f"rewrite the run's files with the smaller total; pass --steps above {done} to train further"
        )
    logger.info("resuming %s at step %d of %d (settings from the checkpoint)", out, done, config.steps)
    return _ResumePoint(config, state)


def _resume_run(config: TTURConfig) -> _ResumePoint:
    """The resume point of the single run in ``config.out``; raise when there is nothing to resume."""
    out = Path(config.out)
    found = _stored_run(out)
    if found is None:
        raise InputError(
            f"{out} holds neither {CHECKPOINT_NAME} nor {CONFIG_NAME}: nothing to resume; run without --resume"
        )
    return _resume_point(config, *found)


def _resume_compare(out: Path, run_configs: dict[str, TTURConfig]) -> dict[str, _ResumePoint]:
    """The resume points of both runs of a ``--compare`` in `out`; each settings file is read once.

    A run with a checkpoint continues; one with only ``config.json`` starts from step 0 with it; one
    with neither (stopped before it began) starts from step 0 with the other run's settings and its
    own rule, as ``--compare`` would have started it.
    """
    found = {name: _stored_run(Path(run_configs[name].out)) for name in COMPARE_RUNS}
    if all(stored is None for stored in found.values()):
        folders = " nor ".join(str(out / name) for name in COMPARE_RUNS)
        raise InputError(
            f"neither {folders} holds {CHECKPOINT_NAME} or {CONFIG_NAME}: nothing to resume; run "
            "without --resume"
        )
    points = {
        name: _resume_point(run_configs[name], *stored)
        for name, stored in found.items() if stored is not None
    }
    for name in COMPARE_RUNS:
        if name in points:
            continue
        run_out = out / name
        if (existing := existing_output(run_out, RUN_OUTPUT_NAMES)) is not None:
            raise InputError(
                f"{existing} exists, but {run_out} holds neither {CHECKPOINT_NAME} nor {CONFIG_NAME}: it "
                "is not a run --resume can continue; move that file away, or start over with --force"
            )
        other = next(iter(points.values())).config
        points[name] = _ResumePoint(
            replace(other, out=run_out, one_time_scale=(name == "one-time-scale")), None
        )
        logger.warning(
            "%s holds no run yet: starting it from step 0 with the settings of %s and its own rule",
            run_out, other.out,
        )
    return {name: points[name] for name in COMPARE_RUNS}


def _check_same_data_settings(out: Path, configs: dict[str, TTURConfig]) -> dict[str, Any]:
    """The data settings the resumed compare runs in `configs` share; raise if they differ.

    Both runs share one copy of the training images and one reference, so they must have been
    made with the same data settings; the command line's are ignored, as :func:`run_ttur` ignores
    them when resuming.
    """
    first, second = (
        {key: getattr(configs[name], key) for key in _DATA_SETTINGS} for name in COMPARE_RUNS
    )
    if first != second:
        differing = ", ".join(
            f"{key} ({first[key]!r} against {second[key]!r})"
            for key in _DATA_SETTINGS if first[key] != second[key]
        )
        raise InputError(
            f"the runs in {out / COMPARE_RUNS[0]} and {out / COMPARE_RUNS[1]} were made with "
            f"different data settings: {differing}; resume each with fidkit ttur --out <run> "
            "--resume, or start over with --force"
        )
    logger.info("resuming compare in %s with the runs' saved data settings %s", out, first)
    return first


def _check_same_weights(point: _ResumePoint, weights_sha256: str | None) -> None:
    """Refuse to continue a checkpoint's FID curve under other Inception weights than it was made with.

    A checkpoint without a recorded sha (written before it was recorded) resumes as before.
    """
    recorded = None if point.state is None else point.state.get("weights_sha256")
    if recorded is None or str(recorded) == str(weights_sha256):
        return
    raise InputError(
        f"{Path(point.config.out) / CHECKPOINT_NAME} was made with the Inception weights of sha256 {recorded}, "
        f"but these weights have sha256 {weights_sha256}: resuming would put two networks' FIDs in one "
        "curve; pass the weights the run was made with (--weights PATH, or FIDKIT_WEIGHTS as then), or "
        "start again with --force"
    )


def _curve_label(config: TTURConfig) -> str:
    """The legend of a run's FID curve: its rule and effective rates."""
    rule = "one time-scale" if config.one_time_scale else "TTUR"
    return f"{rule} (lr_d={config.effective_lr_d:g}, lr_g={config.effective_lr_g:g})"


def _should_evaluate(step: int, config: TTURConfig) -> bool:
    return step % config.eval_every == 0 or step == config.steps


def run_ttur(
    config: TTURConfig,
    *,
    resume: bool = False,
    force: bool = False,
    extractor: Any = None,
    ref_stats: Any = None,
    data: TrainingData | None = None,
    on_eval: Callable[[dict[str, float]], None] | None = None,
    state: dict[str, Any] | None = None,
) -> RunResult:
    """Train a DCGAN with TTUR (or one time-scale) and track its FID.

    Parameters
    ----------
    config : TTURConfig
        The run. With `resume`, the checkpoint's configuration is used instead (the
        ``config.json``'s for a run stopped before its first checkpoint), except ``steps`` (the
        new total) and the device, weights and feature batch size.
    resume : bool
        Continue from ``config.out / checkpoint.pt``; a folder with ``config.json`` but no
        checkpoint yet starts again from step 0 with the settings of that file (said on stderr).
    force : bool
        Start afresh in a folder that already holds a run (its files are replaced).
    extractor : FeatureExtractor, optional
        Reused if given (``--compare`` shares one); built from the config otherwise.
    ref_stats : Stats, optional
        The dataset's statistics; computed (and cached) with :func:`reference_stats` otherwise.
    data : TrainingData, optional
        Real images already in memory; read from ``config.data`` otherwise.
    on_eval : callable, optional
        Called with each new metrics row.
    state : dict, optional
        With `resume`: the checkpoint of ``config.out``, already loaded with
        :func:`load_checkpoint`; looked up in the folder otherwise.

    Returns
    -------
    RunResult

    Raises
    ------
    OverwriteError
        If any file the run writes (:data:`~fidkit.ttur.run_files.RUN_OUTPUT_NAMES`) already
        exists in the folder and neither `resume` nor `force` is given; or one of them is a link
        or not a regular file (even with `force`). Checked before any work.
    InputError
        With `resume`: the folder holds neither a checkpoint nor a ``config.json``, one of them
        cannot be read, or the checkpoint is past ``config.steps``. Also when ``config.out``
        cannot be created. Checked before any work.
    FidkitError
        ``config.device`` cannot run here (:func:`~fidkit.ttur.trainer.check_devices`); checked first.
    """
    check_devices(config, extractor)
    if resume:
        if state is None:
            point = _resume_run(config)
        else:
            point = _resume_point(config, state["config"], state, Path(config.out) / CHECKPOINT_NAME)
    else:
        out = Path(config.out)
        if not force and (existing := existing_output(out, RUN_OUTPUT_NAMES)) is not None:
            _refuse_overwrite(existing)
        point = _ResumePoint(config, None)
    prepare_output_folder(Path(point.config.out), RUN_OUTPUT_NAMES, inputs=(point.config.data,))
    return _train(
        point, extractor=extractor, ref_stats=ref_stats, data=data, on_eval=on_eval, replace=force and not resume
    )


def _train(
    point: _ResumePoint,
    *,
    extractor: Any = None,
    ref_stats: Any = None,
    data: TrainingData | None = None,
    on_eval: Callable[[dict[str, float]], None] | None = None,
    replace: bool = False,
) -> RunResult:
    """The training loop of :func:`run_ttur`, from `point`, in a folder already checked; with `replace`
    (``--force``), the previous run's files are removed once the data, the network and the reference are ready."""
    config, state = point.config, point.state
    out = Path(config.out)
    checkpoint_path = out / CHECKPOINT_NAME
    metrics_path = out / METRICS_NAME

    if data is None:
        data = load_training_data(config.data, limit=config.train_samples, seed=config.seed)
    if extractor is None:
        extractor = make_extractor(config.weights, config.device, config.feature_batch_size)
    if ref_stats is None:
        ref_stats = reference_stats(config, extractor, data)
    weights_sha256 = weights_sha256_of(ref_stats)
    _check_same_weights(point, weights_sha256)
    if replace:
        # Before the new config.json (--resume would continue an old checkpoint beside it), after all that can fail.
        remove_run_files(out, RUN_OUTPUT_NAMES)
    if config.eval_samples < fidkit.FEATURE_DIM:
        logger.warning(
            "eval_samples=%d is below the feature dimension %d: FID is biased upwards and "
            "noisy; compare runs only at equal eval_samples (10000 or more for reported numbers)",
            config.eval_samples,
            fidkit.FEATURE_DIM,
        )

    with deterministic_torch():
        trainer = TTURTrainer(config, data)
        if state is not None:
            trainer.load_state_dict(state)
        resumed_from_step = trainer.step
        trainer.weights_sha256 = weights_sha256
        out.mkdir(parents=True, exist_ok=True)
        write_config({**config.to_dict(), "weights_sha256": weights_sha256}, out / CONFIG_NAME)
        logger.info(
            "training %s: %s, lr_d=%g lr_g=%g, %d steps of %d images on %s",
            out,
            "one time-scale" if config.one_time_scale else "TTUR",
            config.effective_lr_d,
            config.effective_lr_g,
            config.steps,
            config.train_batch_size,
            trainer.device,
        )
        # The trainer is the first user of the training-loop metric: the reference's factor is computed once.
        metric = fidkit.FID(reference=ref_stats, extractor=extractor)
        segment_start = time.perf_counter()
        elapsed_at_start = trainer.elapsed_s
        # Lines, also on a terminal: the evaluations' log lines come between them.
        steps = Progress(config.steps, f"training {out}", unit="step", bar=False, initial=trainer.step)
        while trainer.step < config.steps:
            trainer.train_step()
            steps.update()
            if _should_evaluate(trainer.step, config):
                with Progress(config.eval_samples, f"FID at step {trainer.step}", unit="img") as images_done:
                    result = trainer.evaluate(metric, progress=images_done)
                trainer.elapsed_s = elapsed_at_start + time.perf_counter() - segment_start
                row = trainer.record(float(result))
                logger.info(
                    "step %d/%d  FID %.2f  loss_d %.4f  loss_g %.4f",
                    row["step"], config.steps, row["fid"], row["loss_d"], row["loss_g"],
                )
                if on_eval is not None:
                    on_eval(row)
                # CSV first, then the checkpoint: a crash in between leaves a CSV with one row
                # the checkpoint lacks, which the resume rewrites from the checkpoint's rows.
                write_metrics_csv(trainer.rows, metrics_path)
                trainer.save_checkpoint(checkpoint_path)
                write_sample_grid(trainer.samples, out / SAMPLES_NAME)

    # Always from the rows the run holds: a resume with no new steps must also replace a CSV
    # left with a row its checkpoint lacks (a crash between the two writes).
    write_metrics_csv(trainer.rows, metrics_path)
    plot_path = plot_fid_curves(
        {_curve_label(config): trainer.rows},
        out / PLOT_NAME,
        title=f"FID during training on {Path(data.source_name).name}",
    )
    return RunResult(
        config=config,
        rows=list(trainer.rows),
        out=out,
        metrics_path=metrics_path,
        checkpoint_path=checkpoint_path,
        plot_path=plot_path,
        resumed_from_step=resumed_from_step,
    )


def run_compare(
    config: TTURConfig,
    *,
    resume: bool = False,
    force: bool = False,
    extractor: Any = None,
    on_eval: Callable[[str, dict[str, float]], None] | None = None,
) -> CompareResult:
    """Run TTUR and the one time-scale baseline with the same seed; plot both FID curves.

    The runs go to ``out/ttur`` and ``out/one-time-scale``; they share the data in memory, the
    feature extractor and the reference statistics. The figure is ``out/compare.png``.

    With `resume`, each run with a checkpoint continues from it and each run without one starts
    from step 0 (said on stderr): from its ``config.json`` when it has one (it stopped before its
    first checkpoint), else from the other run's settings. The data and the reference are built
    from the settings saved in the runs (as each run's model and rates are), not from `config`.

    Raises
    ------
    OverwriteError
        If any file the command writes already exists and neither `resume` nor `force` is given,
        or one of them is a link or not a regular file (even with `force`).
    InputError
        With `resume`: neither run holds a checkpoint or a ``config.json``, one of them is
        unreadable or past ``config.steps``, or the two runs were made with different data
        settings (data, train_samples, ref_samples, seed). All checked before any work.
    FidkitError
        ``config.device`` cannot run here (:func:`~fidkit.ttur.trainer.check_devices`); checked first.
    """
    check_devices(config, extractor)
    out = Path(config.out)
    run_configs = {
        name: replace(config, out=out / name, one_time_scale=(name == "one-time-scale"))
        for name in COMPARE_RUNS
    }
    data_config = config
    if resume:
        points = _resume_compare(out, run_configs)
        data_config = replace(
            config, **_check_same_data_settings(out, {name: point.config for name, point in points.items()})
        )
    else:
        if not force:
            existing = existing_output(out, COMPARE_OUTPUT_NAMES)
            for name in COMPARE_RUNS:
                existing = existing or existing_output(out / name, RUN_OUTPUT_NAMES)
            if existing is not None:
                _refuse_overwrite(existing)
        points = {name: _ResumePoint(run_configs[name], None) for name in COMPARE_RUNS}
    # Every file of the command, in both run folders, can be written: all checked before any
    # work, and before any folder is made.
    check_output_files(
        {out: COMPARE_OUTPUT_NAMES, **{Path(point.config.out): RUN_OUTPUT_NAMES for point in points.values()}},
        inputs=(data_config.data, *(point.config.data for point in points.values())),
    )
    for point in points.values():
        make_output_folder(Path(point.config.out))
    data = load_training_data(
        data_config.data, limit=data_config.train_samples, seed=data_config.seed
    )
    if extractor is None:
        extractor = make_extractor(config.weights, config.device, config.feature_batch_size)
    ref_stats = reference_stats(data_config, extractor, data)
    for point in points.values():  # both, before either trains
        _check_same_weights(point, weights_sha256_of(ref_stats))
    if force and not resume:
        # Both run folders, before either new config.json and once nothing before training can fail: see _train.
        remove_run_files(out, COMPARE_OUTPUT_NAMES)
        for point in points.values():
            remove_run_files(Path(point.config.out), RUN_OUTPUT_NAMES)
    result = CompareResult()
    for name in COMPARE_RUNS:
        callback = None if on_eval is None else (lambda row, name=name: on_eval(name, row))
        result.runs[name] = _train(
            points[name], extractor=extractor, ref_stats=ref_stats, data=data, on_eval=callback
        )
    curves = {_curve_label(run.config): run.rows for run in result.runs.values()}
    result.plot_path = plot_fid_curves(
        curves, out / COMPARE_PLOT_NAME, title=f"TTUR against one time-scale on {Path(data.source_name).name}"
    )
    return result
