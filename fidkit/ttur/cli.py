"""``fidkit ttur`` and ``fidkit validate``: the reference trainer and the validation experiments.

Only argparse and the torch-free :mod:`fidkit.ttur.config` are imported here: ``fidkit --help``
must stay fast, so torch, numpy and the trainer are imported inside the handlers.
"""

from __future__ import annotations

import argparse
from typing import Any

from fidkit._argtypes import int_at_least, positive_float, positive_int, seed_value
from fidkit.ttur.config import DEFAULT_LR_D, DEFAULT_LR_G

__all__ = ["register", "handle_ttur", "handle_validate"]

_TTUR_DESCRIPTION = """\
Train a small DCGAN (28x28 grayscale or 32x32 colour, inferred from the data) with the two
time-scale update rule and record its FID against the dataset's statistics every --eval-every
steps. Writes config.json, metrics.csv (step, fid, loss_d, loss_g, wall_time_s), checkpoint.pt,
samples.png and fid.png in --out; --compare trains TTUR and the one time-scale baseline from the
same seed into OUT/ttur and OUT/one-time-scale and draws both curves in OUT/compare.png.
Any of these files already there makes --out "in use": the run stops before any work unless
--resume (continue the run; one stopped before its first checkpoint restarts from step 0) or
--force (start again, replacing them). --out must lie outside --data.

TTUR: Adam(lr_d) for the discriminator, Adam(lr_g) for the generator, betas (0.5, 0.999).
One time-scale: both networks at lr_g (only the discriminator's time scale changes)."""

_TTUR_EPILOG = """\
examples:
  # GPU, MNIST, the defaults (20000 steps, FID of 10000 samples every 1000 steps)
  fidkit ttur --data mnist/train-images-idx3-ubyte.gz --out runs/mnist
  # TTUR against one time-scale on CIFAR-10, same seed, one figure
  fidkit ttur --data cifar10/cifar10-train-jpg.zip --out runs/cifar --compare
  # continue a run to 40000 steps
  fidkit ttur --data mnist/train-images-idx3-ubyte.gz --out runs/mnist --resume --steps 40000
  # CPU-friendly smoke run (FID at 200 samples is biased upwards: compare runs only at equal N)
  fidkit ttur --data mnist/train-images-idx3-ubyte.gz --out runs/cpu --device cpu \\
      --steps 300 --eval-every 100 --eval-samples 200 --ref-samples 2000 --train-samples 10000"""

_VALIDATE_DESCRIPTION = """\
The FID paper's validation experiment: disturb --samples images of SRC with Gaussian noise,
Gaussian blur, black rectangles, swirl, salt-and-pepper noise and (with --contaminate) images of
another source, each at increasing strength, and compute the FID of each disturbed set against the
clean set's statistics. Strength s in [0, 1] is a fraction of each disturbance's maximum (the
paper's largest level): noise weight 0.75, blur sigma 4 px, rectangle side 0.75 of the image,
swirl 4 rad, salt-and-pepper fraction 0.3, contamination fraction 0.75. Writes validate.csv,
validate.png and validate.json in --out (which must lie outside SRC and --contaminate) and prints,
per disturbance, whether FID rose monotonically."""

_VALIDATE_EPILOG = """\
examples:
  fidkit validate cifar10/cifar10-train-0-3999-uint8.npy --out runs/validate \\
      --contaminate mnist/t10k-images-idx3-ubyte.gz
  # CPU-friendly: 200 images, three strengths, JSON on stdout
  fidkit validate cifar10/cifar10-test-0-999-uint8.npy --out runs/v --device cpu \\
      --samples 200 --strengths 0,0.5,1 --json"""


#: GAN mini-batches: batch normalisation in training mode needs two images per batch.
_train_batch_size = int_at_least(2, "an integer >= 2 (batch normalisation needs two images per batch)")
_train_batch_size.__name__ = "train_batch_size"


def _strength_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers in [0, 1], got {text!r}"
        ) from None
    if not values or any(not 0.0 <= value <= 1.0 for value in values):
        raise argparse.ArgumentTypeError(f"strengths must lie in [0, 1], got {text!r}")
    return values


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def register(subparsers: Any, network_parent: argparse.ArgumentParser) -> None:
    """Add the ``ttur`` and ``validate`` subcommands.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``parser.add_subparsers()``.
    network_parent : argparse.ArgumentParser
        Parent parser (``add_help=False``) holding ``--weights --device --batch-size --quiet
        --debug``; both subcommands inherit it.
    """
    formatter = argparse.RawDescriptionHelpFormatter
    ttur = subparsers.add_parser(
        "ttur",
        parents=[network_parent],
        formatter_class=formatter,
        help="train the reference DCGAN with TTUR and track its FID",
        description=_TTUR_DESCRIPTION,
        epilog=_TTUR_EPILOG,
    )
    data = ttur.add_argument_group("data")
    data.add_argument("--data", required=True, metavar="SRC",
                      help="real images: any fidkit source (MNIST idx file, CIFAR-10 folder or zip, .npy, folder)")
    data.add_argument("--train-samples", type=positive_int, default=None, metavar="N",
                      help="hold at most N images for training, picked with --seed (default: all)")
    data.add_argument("--ref-samples", type=positive_int, default=None, metavar="N",
                      help="images in the reference statistics, cached (default: all)")
    training = ttur.add_argument_group("training")
    training.add_argument("--out", required=True, metavar="DIR", help="run folder")
    training.add_argument("--steps", type=positive_int, default=20_000, metavar="N",
                          help="total training steps, one D and one G update each (default: 20000)")
    training.add_argument("--lr-d", type=positive_float, default=DEFAULT_LR_D, metavar="LR",
                          help=f"discriminator learning rate (default: {DEFAULT_LR_D:g})")
    training.add_argument("--lr-g", type=positive_float, default=DEFAULT_LR_G, metavar="LR",
                          help=f"generator learning rate (default: {DEFAULT_LR_G:g})")
    mode = training.add_mutually_exclusive_group()
    mode.add_argument("--one-time-scale", action="store_true",
                      help="baseline: both networks at --lr-g")
    mode.add_argument("--compare", action="store_true",
                      help="run TTUR and one time-scale with the same seed; plot both")
    training.add_argument("--train-batch-size", type=_train_batch_size, default=64, metavar="N",
                          help="GAN mini-batch size, at least 2 (default: 64; --batch-size is the network's)")
    training.add_argument("--seed", type=seed_value, default=0, help="seed of everything random (default: 0)")
    training.add_argument("--resume", action="store_true",
                          help="continue the run in --out from its checkpoint (from step 0 if it has none "
                               "yet); --steps is the new total")
    training.add_argument("--force", action="store_true",
                          help="start afresh even if --out holds a run (its files are replaced)")
    evaluation = ttur.add_argument_group("evaluation")
    evaluation.add_argument("--eval-every", type=positive_int, default=1000, metavar="N",
                            help="compute FID every N steps and at the end (default: 1000)")
    evaluation.add_argument("--eval-samples", type=positive_int, default=10_000, metavar="N",
                            help="generated images per FID (default: 10000)")
    ttur.add_argument("--json", action="store_true", help="print the result as JSON")
    ttur.set_defaults(func=handle_ttur)

    validate = subparsers.add_parser(
        "validate",
        parents=[network_parent],
        formatter_class=formatter,
        help="check that FID rises as images are disturbed (the FID paper's experiment)",
        description=_VALIDATE_DESCRIPTION,
        epilog=_VALIDATE_EPILOG,
    )
    validate.add_argument("source", metavar="SRC", help="clean images: any fidkit image source")
    validate.add_argument("--out", required=True, metavar="DIR", help="folder for the CSV, figure and JSON")
    validate.add_argument("--samples", type=positive_int, default=5000, metavar="N",
                          help="images of SRC (and of --contaminate) to use (default: 5000)")
    validate.add_argument("--strengths", type=_strength_list, default=(0.0, 0.25, 0.5, 0.75, 1.0),
                          metavar="S,S,...", help="strengths in [0, 1] (default: 0,0.25,0.5,0.75,1)")
    validate.add_argument("--disturbances", type=_name_list, default=None, metavar="NAME,...",
                          help="subset to run: gaussian_noise, gaussian_blur, black_rectangles, "
                               "swirl, salt_and_pepper, contamination (default: all)")
    validate.add_argument("--contaminate", default=None, metavar="OTHER",
                          help="source of foreign images for the contamination experiment")
    validate.add_argument("--seed", type=seed_value, default=0, help="seed of the disturbances (default: 0)")
    validate.add_argument("--force", action="store_true", help="replace an earlier report in --out")
    validate.add_argument("--json", action="store_true", help="print the report as JSON")
    validate.set_defaults(func=handle_validate)


def _format_rows(rows: list[dict[str, float]]) -> str:
    lines = [f"{'step':>8}  {'fid':>10}  {'loss_d':>8}  {'loss_g':>8}  {'time_s':>8}"]
    for row in rows:
        lines.append(
            f"{int(row['step']):>8}  {row['fid']:>10.3f}  {row['loss_d']:>8.4f}  "
            f"{row['loss_g']:>8.4f}  {row['wall_time_s']:>8.1f}"
        )
    return "\n".join(lines)


def handle_ttur(args: argparse.Namespace) -> int:
    """Run ``fidkit ttur``; print the metrics (or JSON) on stdout and return 0."""
    from fidkit.report import json_text  # strict JSON: a run without an evaluation has null, not NaN
    from fidkit.ttur.config import TTURConfig
    from fidkit.ttur.plotting import PLOT_INSTALL_HINT
    from fidkit.ttur.runs import run_compare, run_ttur

    config = TTURConfig(
        data=args.data,
        out=args.out,
        steps=args.steps,
        lr_d=args.lr_d,
        lr_g=args.lr_g,
        one_time_scale=args.one_time_scale,
        train_batch_size=args.train_batch_size,
        eval_every=args.eval_every,
        eval_samples=args.eval_samples,
        ref_samples=args.ref_samples,
        train_samples=args.train_samples,
        seed=args.seed,
        device=args.device,
        weights=args.weights,
        feature_batch_size=args.batch_size,
    )
    if args.compare:
        comparison = run_compare(config, resume=args.resume, force=args.force)
        if args.json:
            print(json_text(comparison.to_dict()))
            return 0
        for name, run in comparison.runs.items():
            print(f"{name}: lr_d={run.config.effective_lr_d:g} lr_g={run.config.effective_lr_g:g}"
                  f"  ({run.metrics_path})")
            print(_format_rows(run.rows))
        print(f"figure: {comparison.plot_path}" if comparison.plot_path else PLOT_INSTALL_HINT)
        return 0

    result = run_ttur(config, resume=args.resume, force=args.force)
    if args.json:
        print(json_text(result.to_dict()))
        return 0
    mode = "one time-scale" if result.config.one_time_scale else "TTUR"
    print(f"{mode}: lr_d={result.config.effective_lr_d:g} lr_g={result.config.effective_lr_g:g}"
          f"  ({result.metrics_path})")
    print(_format_rows(result.rows))
    print(f"figure: {result.plot_path}" if result.plot_path else PLOT_INSTALL_HINT)
    return 0


def handle_validate(args: argparse.Namespace) -> int:
    """Run ``fidkit validate``; print the table (or JSON) on stdout and return 0."""
    from fidkit.report import json_text  # strict JSON
    from fidkit.ttur.plotting import PLOT_INSTALL_HINT
    from fidkit.ttur.validate import ValidateConfig, run_validation

    options: dict[str, Any] = {}
    if args.disturbances is not None:
        options["disturbances"] = args.disturbances
    config = ValidateConfig(
        source=args.source,
        out=args.out,
        samples=args.samples,
        strengths=args.strengths,
        contaminate=args.contaminate,
        seed=args.seed,
        device=args.device,
        weights=args.weights,
        feature_batch_size=args.batch_size,
        **options,
    )
    report = run_validation(config, force=args.force, progress=False if args.quiet else None)
    if args.json:
        print(json_text(report.to_dict()))
        return 0
    print(f"FID of disturbed sets against {report.n_images} clean images of {report.source_name}")
    print(report.format_table())
    print(f"csv: {report.csv_path}")
    print(f"figure: {report.plot_path}" if report.plot_path else PLOT_INSTALL_HINT)
    return 0
