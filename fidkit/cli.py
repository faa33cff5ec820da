"""The ``fidkit`` command: a thin argparse layer over :mod:`fidkit.api`.

Results go to stdout (one line, or JSON with ``--json``) and nothing else does: messages, warnings, the
progress bar and whatever a library prints (onnxruntime's loader lines, C code writing to descriptor 1) go
to stderr (:func:`fidkit._streams.standard_streams`). Exit status: 0 success, 1 a user-facing error (one line ``fidkit: error: ...``; the
traceback only with ``--debug``), 2 a usage error, 130 interrupted (Ctrl-C; no partial files are left,
as every write is atomic), 143 terminated (SIGTERM, cleaned up as for Ctrl-C), 141 stdout was a pipe whose
reader went away (quietly; see :mod:`fidkit._streams` for closed streams).

Heavy modules (onnxruntime, torch, the sources' decoders) are imported inside the handlers, so
``fidkit --help``, ``fidkit info`` and ``fidkit cache`` start fast and never import torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fidkit import commands
from fidkit._argtypes import (
    device_string, interval_level, non_negative_int, positive_int, resample_count, seed_value,
)
from fidkit._streams import StdoutGone, StdoutWriteError, logging_to_stderr, silence_stdout, standard_streams
from fidkit._ray_address import ray_address_argument
from fidkit._signals import Terminated, sigterm_arrived, sigterm_as_interrupt
from fidkit.commands import (
    EXIT_BROKEN_PIPE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
)
from fidkit.errors import FidkitError, FidkitWarning

__all__ = ["main", "build_parser"]

#: The values of --convention and --dims, spelled here so that --help imports no numpy; tests/test_cli.py checks
#: them against fidkit.inception.conventions.CONVENTIONS and fidkit.inception.spec.DIMS.
CONVENTIONS = ("tf", "pytorch-fid", "clean", "torchmetrics")
DIMS = (2048, 768, 192, 64)

logger = logging.getLogger(__name__)

_DESCRIPTION = """\
fidkit: the Fréchet Inception Distance with the TensorFlow reference's numbers.

A source is a folder of images (recursive), a .zip / .tar / .tar.gz archive, a .npy / .npz uint8
image array (N,H,W,3) or (N,H,W), an MNIST idx file, a CIFAR-10/100 python batch folder, a dataset
name (fidkit datasets), a statistics .npz (fidkit, TTUR or pytorch-fid) or a features .npz (fidkit
features); the last two skip the network."""

_MAIN_EPILOG = """\
examples:
  fidkit compute generated_images/ real_images/
  fidkit compute samples.zip cifar10-train.npz --json > report.json
  fidkit stats real_images/ --save real.npz
  fidkit info real.npz
  fidkit cache list

run "fidkit COMMAND --help" for the options of each command.
exit status: 0 success, 1 error (one line on stderr), 2 usage error, 130 interrupted,
143 terminated (SIGTERM), 141 stdout's reader went away (nothing printed)."""

_COMPUTE_EPILOG = """\
examples:
  # two folders of images (PNG, JPEG, ...; searched recursively)
  fidkit compute generated_images/ real_images/

  # an archive of samples against a saved statistics file; the full report as JSON
  fidkit compute samples.zip cifar10-train-stats.npz --json

  # 10,000 random images of each side, reproducibly
  fidkit compute samples/ train.zip --limit 10000 --seed 0

  # keep going past unreadable files (they are counted and listed in the report)
  fidkit compute generated/ scraped/ --skip-bad

  # a paper's table from one pass: FID, KID, Inception Score, sFID, precision/recall/density/coverage,
  # each with a 95% interval from 200 resamples
  fidkit compute samples.zip cifar10-train --metrics all --ci

  # the number pytorch-fid (or clean-fid, torchmetrics) would print for the same images
  fidkit compute generated/ real/ --convention pytorch-fid

stdout is one line whose last token is the FID (e.g. "FID: 12.3456"), or with --metrics/--ci a small table
(one row per number), or the JSON report with --json.
Statistics of folders, archives and arrays are cached: a second run on the same files does not run
the network (see "fidkit cache --help"; --no-cache to bypass)."""

_STATS_EPILOG = """\
examples:
  fidkit stats real_images/ --save real.npz
  fidkit stats cifar10-train-jpg.zip --save cifar10-train.npz --limit 10000 --seed 0
  fidkit stats real_images/ --save real.npz --force      # replace an existing file

The file keeps the keys "mu" and "sigma", so TTUR and pytorch-fid read it unchanged; N and the
metadata (weights sha256, resize mode, source) go in extra keys. Without --save the statistics are
only computed and cached."""

_FEATURES_EPILOG = """\
examples:
  fidkit features samples/ --save samples-features.npz
  fidkit features cifar10-test --save cifar10-test-features.npz --limit 5000 --seed 0
  fidkit compute samples-features.npz cifar10-train.npz     # a features file is a source

The file holds "features" (float32, N x dim) and the same metadata as a statistics file (extractor, weights
sha256, source, skipped files). Features are cached like statistics (same keys, same size limit)."""

_INFO_EPILOG = """\
examples:
  fidkit info real.npz
  fidkit info fid_stats_cifar10_train.npz --json     # a TTUR / pytorch-fid file works too
  fidkit info samples-features.npz                   # a features file: N, dim, the outputs kept, the metadata"""

_CACHE_EPILOG = """\
examples:
  fidkit cache list
  fidkit cache list --json
  fidkit cache clear            # statistics entries only
  fidkit cache clear --all      # also the ONNX graphs, downloaded weights and datasets
  FIDKIT_CACHE_MAX_BYTES=500M fidkit compute a/ b/   # keep the statistics cache under 500 MiB

The cache lives in $FIDKIT_HOME (default $XDG_CACHE_HOME/fidkit when absolute, or ~/.cache/fidkit). The statistics
cache stays under $FIDKIT_CACHE_MAX_BYTES (default 2G; "unlimited" for no limit): after each store the least
recently used entries are removed. Only files fidkit wrote are removed, recognised by their exact names (and the
weights and datasets by their checksums); anything else there is kept and listed."""

_CACHE_LIST_EPILOG = """\
examples:
  fidkit cache list
  fidkit cache list --json"""

_CACHE_CLEAR_EPILOG = """\
examples:
  fidkit cache clear            # remove cached statistics (recomputed on the next run)
  fidkit cache clear --all      # also ONNX graphs (rebuilt on first use), weights and datasets (downloaded again)

Files fidkit did not write are never removed: each one kept is listed with the reason."""


def _common_parent() -> argparse.ArgumentParser:
    """Options every command has: --quiet and --debug."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no info messages")
    parent.add_argument("--debug", action="store_true", help="debug logging, and tracebacks on errors")
    return parent


def _network_parent(common: argparse.ArgumentParser, *, full: bool = True) -> argparse.ArgumentParser:
    """Options of every command that runs the network. ``fidkit ttur``/``validate`` (``full=False``) take the
    weights, the device and the batch size only: they run the FID network in exact float32 on onnxruntime."""
    parent = argparse.ArgumentParser(add_help=False, parents=[common])
    group = parent.add_argument_group("network")
    group.add_argument(
        "--weights", metavar="PATH", default=None,
        help="Inception weights .pth (default: $FIDKIT_WEIGHTS, the cache, or a download)",
    )
    # No defaults here (None): what the user gave is told from what was left alone (fidkit.options.RunOptions.given
    # has the defaults), as a file compared with --dims 2048 must be (ttur and validate keep theirs).
    group.add_argument(
        "--device", default=None if full else "auto", type=device_string, metavar="DEVICE",
        help="where the network runs: auto, cpu, cuda, cuda:N, tensorrt, tensorrt:N (default: auto = CUDA "
        "when a session really runs there, else CPU)",
    )
    group.add_argument(
        "--batch-size", type=positive_int, default=None, metavar="N",
        help="images per network batch (default: chosen for the device: 200 on a GPU, 25 on the CPU"
        + ("; the report says which)" if full else ")"),
    )
    if not full:
        return parent
    group.add_argument(
        "--extractor", default=None, metavar="NAME", type=_extractor_name,
        help="the feature extractor, by its registered name (default: inception-2015, the FID network)",
    )
    group.add_argument(
        "--engine", default=None, choices=("auto", "onnxruntime", "torch"),
        help="what runs the network: onnxruntime (the ONNX graph) or torch (the same network); default auto = "
        "onnxruntime, or torch where a GPU is asked for that only torch can use",
    )
    group.add_argument(
        "--precision", default=None, choices=("exact", "fast", "tf32", "bf16"),
        help="exact = float32 (default, the reference's numbers); opt-in and never the reference: tf32 = TF32 on a "
        "CUDA GPU (--device cuda), bf16 = bfloat16 autocast (--engine torch), fast = TensorRT FP16 (--device "
        "tensorrt)",
    )
    group.add_argument(
        "--threads", type=positive_int, default=None, metavar="N",
        help="CPU threads of the network (default: the cores this process may use)",
    )
    group.add_argument(
        "--convention", default=None, choices=CONVENTIONS,
        help="whose resize and normalization to reproduce: tf (default: the TensorFlow reference, TTUR, "
        "torch-fidelity), pytorch-fid, clean (clean-fid), torchmetrics; see docs/compatibility.md",
    )
    group.add_argument(
        "--dims", type=int, default=None, choices=DIMS, metavar="{2048,768,192,64}",
        help="feature width: 2048 = pool_3 (default, the FID of the literature), or pytorch-fid's other layers",
    )
    return parent


def _save_path(text: str) -> Path:
    """``--save``: the path of a file. One ending with a separator (``newdir/``, ``newdir/.``) names a folder, which
    ``Path`` would silently turn into a file of that name: refused, as a usage error naming the fix."""
    separators = tuple(sep for sep in (os.sep, os.altsep) if sep)
    last = text
    for sep in separators:
        last = last.rsplit(sep, 1)[-1]
    if text.endswith(separators) or last in (".", ".."):
        folder = text.rstrip("".join(separators)) or text
        raise argparse.ArgumentTypeError(
            f"{text!r} names a folder, not a file; name the file to write, e.g. {Path(folder) / 'out.npz'}"
        )
    return Path(text)


def _extractor_name(text: str) -> str:
    """``--extractor``: a registered name, else a usage error listing them (the registry loads only here)."""
    from fidkit.errors import InputError
    from fidkit.extractors import extractor_entry

    try:
        return extractor_entry(text).name
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _source_parent() -> argparse.ArgumentParser:
    """Options of the commands that read image sources (compute, stats)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("sources")
    group.add_argument(
        "--workers", type=non_negative_int, default=None, metavar="N",
        help="image decoding processes (default: from the machine; 0 decodes in this process)",
    )
    group.add_argument(
        "--skip-bad", action="store_true",
        help="skip unreadable image files (counted and listed) instead of stopping",
    )
    group.add_argument("--limit", type=positive_int, default=None, metavar="N", help="use N images per source")
    group.add_argument(
        "--seed", type=seed_value, default=None, metavar="SEED",
        help="with --limit: a random subset drawn with this seed, 0 <= SEED < 2**32 (default: the first N)",
    )
    group.add_argument(
        "--exif-transpose", action="store_true",
        help="apply the EXIF orientation tag (default: pixels as stored, like the reference)",
    )
    cluster = parent.add_argument_group("cluster")
    cluster.add_argument(
        "--ray", action="store_true",
        help='compute the statistics on a Ray cluster (pip install "fidkit[ray]"; see docs/distributed.md)',
    )
    cluster.add_argument(
        "--ray-address", metavar="ADDR", default=None, type=ray_address_argument,
        help="with --ray (implies it): the cluster to use (default: $RAY_ADDRESS, else a local Ray instance)",
    )
    cache = parent.add_argument_group("cache")
    cache.add_argument("--no-cache", action="store_true", help="neither read nor write the statistics cache")
    cache.add_argument(
        "--hash-content", action="store_true",
        help="fingerprint files by content (sha256) rather than size, modification and status-change times",
    )
    return parent


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Return the ``fidkit`` argument parser with every subcommand registered.

    `command` is the subcommand about to run, when known: ``ttur`` and ``validate`` load their module (and its
    imports) only then.
    """
    from fidkit._version import __version__

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="fidkit", description=_DESCRIPTION, epilog=_MAIN_EPILOG, formatter_class=formatter
    )
    parser.add_argument("--version", action="version", version=f"fidkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    common = _common_parent()
    network_parent = _network_parent(common)
    source_parent = _source_parent()

    compute = subparsers.add_parser(
        "compute", parents=[network_parent, source_parent], formatter_class=formatter,
        help="the FID between two sources", description="Compute the FID between A, the evaluated set (generated "
        "images), and B, the reference (real images):\nthe FID is the same either way, the other --metrics are not.",
        epilog=_COMPUTE_EPILOG,
    )
    compute.add_argument("source_a", metavar="A", help="the evaluated source: generated images, archive, array, ...")
    compute.add_argument("source_b", metavar="B", help="the reference source: the real images, their statistics, ...")
    compute.add_argument("--json", action="store_true", help="print the full report as JSON")
    compute.add_argument(
        "--allow-weights-mismatch", action="store_true",
        help="warn instead of failing when the two sides record different weights",
    )
    compute.add_argument(
        "--allow-convention-mismatch", action="store_true",
        help="warn instead of failing when the two sides record different conventions (--convention)",
    )
    metrics = compute.add_argument_group("metrics (docs/metrics.md)")
    metrics.add_argument(
        "--metrics", action="append", default=None, metavar="LIST",
        help="comma-separated: fid, kid, is, sfid, prdc, or all (default: fid); given more than once, all are computed "
        "(--metrics kid --metrics is = --metrics kid,is); A is the evaluated side, B the reference; sides keep only "
        "what the metrics need (feature rows, logits, spatial features)",
    )
    metrics.add_argument(
        "--ci", nargs="?", const=0.95, default=None, type=interval_level, metavar="LEVEL",
        help="an interval for every number, at LEVEL (default 0.95): bootstrap for FID/sFID, half-samples for the "
        "others",
    )
    metrics.add_argument(
        "--resamples", type=resample_count, default=None, metavar="N", help="resamples of --ci (default: 200)"
    )
    metrics.add_argument(
        "--metrics-seed", type=seed_value, default=None, metavar="N",
        help="the seed of KID's subsets, IS's splits and the intervals, 0 <= N < 2**32 (default: 0)",
    )
    compute.set_defaults(func=commands.compute)

    stats = subparsers.add_parser(
        "stats", parents=[network_parent, source_parent], formatter_class=formatter,
        help="compute (and save) the statistics of one source",
        description="Compute the Inception statistics (mu, sigma, N) of a source and save them.",
        # The dataset names come from the sources package: listed only when this command's parser is the one used.
        epilog=_STATS_EPILOG + (_datasets_note() if command == "stats" else ""),
    )
    stats.add_argument(
        "source", metavar="SRC", nargs="?", default=None, help="the source: a path, or a dataset name (listed below)"
    )
    stats.add_argument(
        "--save", metavar="OUT.npz", type=_save_path, default=None, help="where to write the statistics (a file)"
    )
    stats.add_argument("--force", action="store_true", help="replace OUT.npz if it exists")
    stats.add_argument("--json", action="store_true", help="print the summary as JSON")
    stats.set_defaults(func=commands.stats)

    features = subparsers.add_parser(
        "features", parents=[network_parent, source_parent], formatter_class=formatter,
        help="compute (and save) the feature rows of one source",
        description="Compute the feature rows (N x dim, float32) of a source and save them: the input of metrics "
        "that need the rows, and a source again for compute and stats.",
        epilog=_FEATURES_EPILOG,
    )
    features.add_argument("source", metavar="SRC", help="the source: a path, or a dataset name")
    features.add_argument(
        "--save", metavar="OUT.npz", type=_save_path, default=None, help="where to write the features (a file)"
    )
    features.add_argument("--force", action="store_true", help="replace OUT.npz if it exists")
    features.add_argument("--json", action="store_true", help="print the summary as JSON")
    features.add_argument(
        "--metrics", action="append", default=None, metavar="LIST",
        help="keep what these metrics need besides the rows: is adds the logits, sfid the spatial features, all "
        "both (default: fid, the rows only); given more than once, what all of them need",
    )
    features.set_defaults(func=commands.features)

    info = subparsers.add_parser(
        "info", parents=[common], formatter_class=formatter, help="what a statistics or features file holds",
        description="What a statistics or features .npz holds: N, dimension, metadata (statistics: trace of sigma).",
        epilog=_INFO_EPILOG,
    )
    info.add_argument("path", metavar="FILE.npz", type=Path, help="a statistics file or a features file")
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.set_defaults(func=commands.info)

    cache = subparsers.add_parser(
        # No common options here: they live on "list" and "clear", since argparse lets a nested
        # parser's defaults overwrite values given at this level.
        "cache", formatter_class=formatter, help="list or clear the statistics cache",
        description="List or clear fidkit's cache.", epilog=_CACHE_EPILOG,
    )
    cache_actions = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    cache_list = cache_actions.add_parser(
        "list", parents=[common], formatter_class=formatter, help="list cached statistics",
        description="List the cached statistics: source, N, size, date.", epilog=_CACHE_LIST_EPILOG,
    )
    cache_list.add_argument("--json", action="store_true", help="print as JSON")
    cache_list.set_defaults(func=commands.cache_list)
    cache_clear = cache_actions.add_parser(
        "clear", parents=[common], formatter_class=formatter, help="remove cached statistics",
        description="Remove cached statistics (and with --all the ONNX graphs, downloaded weights and datasets).",
        epilog=_CACHE_CLEAR_EPILOG,
    )
    cache_clear.add_argument(
        "--all", action="store_true", help="also remove the ONNX graphs, the downloaded weights and datasets"
    )
    cache_clear.set_defaults(func=commands.cache_clear)

    datasets = subparsers.add_parser(
        "datasets", parents=[common], formatter_class=formatter, help="list the named datasets",
        description="List the dataset names usable as sources: images, file, size, where it comes from, "
        "whether it is here.",
        epilog=_DATASETS_EPILOG,
    )
    datasets.add_argument("--json", action="store_true", help="print as JSON")
    datasets.set_defaults(func=commands.datasets)

    _register_ttur(subparsers, _network_parent(common, full=False), load=command in _TTUR_COMMANDS)
    return parser


#: The commands of :mod:`fidkit.ttur.cli`: their module (and torch) is imported only when one of them runs.
_TTUR_COMMANDS = {
    "ttur": "train the reference DCGAN with TTUR and track its FID",
    "validate": "check that FID rises as images are disturbed (the FID paper's experiment)",
}


def _register_ttur(subparsers: Any, network_parent: argparse.ArgumentParser, *, load: bool) -> None:
    """Add ``fidkit ttur`` and ``fidkit validate``: the real parsers from :mod:`fidkit.ttur.cli` when one of them
    is the command (`load`), else a one-line entry each for ``fidkit --help``.

    Only a *missing* module is tolerated (a checkout or build without the trainer); any other import
    failure is a bug and propagates, so it is not silently hidden.
    """
    if not load:
        for name, summary in _TTUR_COMMANDS.items():
            subparsers.add_parser(name, help=summary, add_help=False)
        return
    try:
        from fidkit.ttur.cli import register
    except ModuleNotFoundError as error:
        if error.name not in ("fidkit.ttur", "fidkit.ttur.cli"):
            raise
        logger.debug("fidkit.ttur.cli not available; the ttur and validate commands are absent")
        return
    register(subparsers, network_parent)


_DATASETS_EPILOG = """\
examples:
  fidkit datasets
  fidkit datasets --json
  fidkit stats cifar10-train --save cifar10-train.npz    # downloaded once into $FIDKIT_HOME/datasets
  FIDKIT_DATASETS=/data/archives fidkit compute samples/ cifar10-test

A local file or folder with a dataset's name is used instead of the dataset. FIDKIT_DATASETS=DIR: a folder
searched first for the files by their names; FIDKIT_MIRROR=URL: fetch every file from URL/<file name>."""


def _datasets_note() -> str:
    from fidkit.sources.named import dataset_names

    return (
        "\n\ndataset names (downloaded on first use; see \"fidkit datasets\"):\n  " + ", ".join(dataset_names())
    )


# ---------------------------------------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())


def _report_warnings(caught: list[warnings.WarningMessage], debug: bool) -> None:
    seen: set[str] = set()
    for record in caught:
        message = _one_line(record.message) if isinstance(record.message, Warning) else str(record.message)
        if message in seen:
            continue
        seen.add(message)
        if issubclass(record.category, FidkitWarning):
            print(f"fidkit: warning: {message}", file=sys.stderr)
        elif debug:
            print(f"fidkit: {record.category.__name__}: {message} ({record.filename}:{record.lineno})", file=sys.stderr)


def _stdout_failure(error: StdoutWriteError, saved: Sequence[Path]) -> str:
    """The message of a result that could not be written to stdout: which write failed, and that the files the
    command saved are complete (they were written, atomically, before the result was printed)."""
    what = f"cannot write the result to stdout ({_one_line(error.error)})"
    if saved:
        return (
            f"{what}; {', '.join(str(path) for path in saved)} was saved completely, only the printed summary is lost"
        )
    return f"{what}; redirect stdout to a file or device that can take it"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fidkit`` command line and return its exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        0 success, 1 error, 2 usage error, 130 interrupted, 143 terminated, 141 stdout's reader went away.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(next((word for word in arguments if not word.startswith("-")), None))
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exit_request:
        # argparse exits for --help/--version (0) and usage errors (2); return the status instead.
        code = exit_request.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_USAGE)

    debug = bool(getattr(args, "debug", False))
    caught: list[warnings.WarningMessage] = []
    with sigterm_as_interrupt(), standard_streams() as streams, logging_to_stderr(
        debug=debug, quiet=bool(getattr(args, "quiet", False))
    ) as args.logged_warnings:
        try:
            if streams.stdout_closed:
                print("fidkit: error: stdout is closed, so the result would be lost; redirect it (> FILE or "
                      "> /dev/null) instead of closing it", file=sys.stderr)
                return EXIT_ERROR
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                # The handler reads the warnings recorded so far: --json lists them with its result.
                args.emitted_warnings = caught
                status = int(args.func(args))
            sys.stdout.flush()  # a reader that went away shows here, not at the interpreter's exit
            return status
        except StdoutGone:
            silence_stdout()
            return EXIT_BROKEN_PIPE
        except StdoutWriteError as error:
            if debug:
                traceback.print_exc(file=sys.stderr)
            print(f"fidkit: error: {_stdout_failure(error, getattr(args, 'saved_files', ()))}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt as stop:
            terminated = isinstance(stop, Terminated) or sigterm_arrived()
            print(f"fidkit: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
            return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
        except (FidkitError, OSError) as error:
            if debug:
                traceback.print_exc(file=sys.stderr)
            from fidkit._fs import WORKING_DIRECTORY_GONE, working_directory_gone  # not loaded for --help

            # os.getcwd's bare "[Errno 2] No such file or directory" (a relative path made absolute): say what is gone.
            text = WORKING_DIRECTORY_GONE if working_directory_gone(error) else _one_line(error)
            print(f"fidkit: error: {text}", file=sys.stderr)
            return EXIT_ERROR
        except MemoryError:
            # Where no step named it (the places that can say which file or batch raise ResourceError): the
            # machine ran short, not a bug to report.
            if debug:
                traceback.print_exc(file=sys.stderr)
            print("fidkit: error: memory ran out; pass a smaller --batch-size, decode with fewer processes "
                  "(--workers 0), or free memory (other processes)", file=sys.stderr)
            return EXIT_ERROR
        except Exception as error:  # noqa: BLE001 - a bug: say so, with the traceback to report
            traceback.print_exc(file=sys.stderr)
            print(f"fidkit: internal error (please report it): {_one_line(error)}", file=sys.stderr)
            return EXIT_ERROR
        finally:
            _report_warnings(caught, debug)
            sys.stderr.flush()
