"""The ``fidkit`` command: a thin argparse layer over :mod:`fidkit.api`.

Results go to stdout (one line, or JSON with ``--json``); messages, warnings and the progress bar go
to stderr. Exit status: 0 success, 1 a user-facing error (one line ``fidkit: error: ...``; the
traceback only with ``--debug``), 2 a usage error, 130 interrupted (Ctrl-C; no partial files are left,
as every write is atomic), 141 stdout was a pipe whose reader went away (quietly; see
:func:`_standard_streams` for closed streams).

Heavy modules (onnxruntime, torch, the sources' decoders) are imported inside the handlers, so
``fidkit --help``, ``fidkit info`` and ``fidkit cache`` start fast and never import torch.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fidkit._argtypes import device_string, non_negative_int, positive_int
from fidkit.errors import FidkitError, FidkitWarning, OverwriteError

__all__ = ["main", "build_parser"]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: stdout was a pipe whose reader went away (``| head``, ``| true``): 128 + SIGPIPE, as a shell reports a
#: command that SIGPIPE ended; nothing is printed. Files the command wrote (``--save``) are complete.
EXIT_BROKEN_PIPE = 141

_DESCRIPTION = """\
fidkit: the Fréchet Inception Distance with the TensorFlow reference's numbers.

A source is a folder of images (recursive), a .zip / .tar / .tar.gz archive, a .npy / .npz uint8
image array (N,H,W,3) or (N,H,W), an MNIST idx file, a CIFAR-10/100 python batch folder, or a
statistics .npz (fidkit, TTUR or pytorch-fid; it skips the network)."""

_MAIN_EPILOG = """\
examples:
  fidkit compute real_images/ generated_images/
  fidkit compute cifar10-train.npz samples.zip --json > report.json
  fidkit stats real_images/ --save real.npz
  fidkit info real.npz
  fidkit cache list

run "fidkit COMMAND --help" for the options of each command.
exit status: 0 success, 1 error (one line on stderr), 2 usage error, 130 interrupted,
141 stdout's reader went away (nothing printed)."""

_COMPUTE_EPILOG = """\
examples:
  # two folders of images (PNG, JPEG, ...; searched recursively)
  fidkit compute real_images/ generated_images/

  # a saved statistics file against an archive of samples; the full report as JSON
  fidkit compute cifar10-train-stats.npz samples.zip --json

  # 10,000 random images of each side, reproducibly
  fidkit compute train.zip samples/ --limit 10000 --seed 0

  # keep going past unreadable files (they are counted and listed in the report)
  fidkit compute scraped/ generated/ --skip-bad

stdout is one line whose last token is the FID (e.g. "FID: 12.3456"), or the JSON report with --json.
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

_INFO_EPILOG = """\
examples:
  fidkit info real.npz
  fidkit info fid_stats_cifar10_train.npz --json     # a TTUR / pytorch-fid file works too"""

_CACHE_EPILOG = """\
examples:
  fidkit cache list
  fidkit cache list --json
  fidkit cache clear            # statistics entries only
  fidkit cache clear --all      # also the ONNX graphs, downloaded weights and datasets
  FIDKIT_CACHE_MAX_BYTES=500M fidkit compute a/ b/   # keep the statistics cache under 500 MiB

The cache lives in $FIDKIT_HOME (default $XDG_CACHE_HOME/fidkit or ~/.cache/fidkit). The statistics
cache stays under $FIDKIT_CACHE_MAX_BYTES (default 2G; 0 = no limit): after each store the least recently
used entries are removed. Only files fidkit wrote are removed, recognised by their exact names (and the
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


def _network_parent(common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of every command that runs the network (shared with ``fidkit ttur``/``validate``)."""
    parent = argparse.ArgumentParser(add_help=False, parents=[common])
    group = parent.add_argument_group("network")
    group.add_argument(
        "--weights", metavar="PATH", default=None,
        help="Inception weights .pth (default: $FIDKIT_WEIGHTS, the cache, or a download)",
    )
    group.add_argument(
        "--device", default="auto", type=device_string, metavar="DEVICE",
        help="where the network runs: auto, cpu, cuda, cuda:N, tensorrt, tensorrt:N (default: auto = CUDA "
        "when a session really runs there, else CPU)",
    )
    group.add_argument(
        "--batch-size", type=positive_int, default=50, metavar="N", help="images per network batch (default: 50)"
    )
    group.add_argument(
        "--engine", default="auto", choices=("auto", "onnxruntime", "torch"),
        help="what runs the network: onnxruntime (the ONNX graph) or torch (the same network); default auto = "
        "onnxruntime, or torch where a GPU is asked for that only torch can use",
    )
    group.add_argument(
        "--precision", default="exact", choices=("exact", "fast"),
        help="exact = float32 (default); fast = TensorRT FP16, with --device tensorrt (opt-in, not the reference)",
    )
    return parent


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
        "--seed", type=int, default=None, help="with --limit: a random subset drawn with this seed (default: the first N)"
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
        "--ray-address", metavar="ADDR", default=None,
        help="with --ray (implies it): the cluster to use (default: $RAY_ADDRESS, else a local Ray instance)",
    )
    cache = parent.add_argument_group("cache")
    cache.add_argument("--no-cache", action="store_true", help="neither read nor write the statistics cache")
    cache.add_argument(
        "--hash-content", action="store_true",
        help="fingerprint files by content (sha256) rather than size and modification time",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    """Return the ``fidkit`` argument parser with every subcommand registered."""
    from fidkit import __version__

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
        help="the FID between two sources", description="Compute the FID between sources A and B.",
        epilog=_COMPUTE_EPILOG,
    )
    compute.add_argument("source_a", metavar="A", help="first source (images, archive, array or statistics)")
    compute.add_argument("source_b", metavar="B", help="second source")
    compute.add_argument("--json", action="store_true", help="print the full report as JSON")
    compute.add_argument(
        "--allow-weights-mismatch", action="store_true",
        help="warn instead of failing when the two sides record different weights",
    )
    compute.set_defaults(func=_cmd_compute)

    stats = subparsers.add_parser(
        "stats", parents=[network_parent, source_parent], formatter_class=formatter,
        help="compute (and save) the statistics of one source",
        description="Compute the Inception statistics (mu, sigma, N) of a source and save them.",
        epilog=_STATS_EPILOG + _datasets_note(),
    )
    stats.add_argument(
        "source", metavar="SRC", nargs="?", default=None, help="the source: a path, or a dataset name (listed below)"
    )
    stats.add_argument("--save", metavar="OUT.npz", type=Path, default=None, help="where to write the statistics")
    stats.add_argument("--force", action="store_true", help="replace OUT.npz if it exists")
    stats.add_argument("--json", action="store_true", help="print the summary as JSON")
    stats.set_defaults(func=_cmd_stats)

    info = subparsers.add_parser(
        "info", parents=[common], formatter_class=formatter, help="what a statistics file holds",
        description="Show what a statistics .npz holds: N, dimension, metadata, origin, trace of sigma.",
        epilog=_INFO_EPILOG,
    )
    info.add_argument("path", metavar="FILE.npz", type=Path, help="a statistics file")
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.set_defaults(func=_cmd_info)

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
    cache_list.set_defaults(func=_cmd_cache_list)
    cache_clear = cache_actions.add_parser(
        "clear", parents=[common], formatter_class=formatter, help="remove cached statistics",
        description="Remove cached statistics (and with --all the ONNX graphs, downloaded weights and datasets).",
        epilog=_CACHE_CLEAR_EPILOG,
    )
    cache_clear.add_argument(
        "--all", action="store_true", help="also remove the ONNX graphs, the downloaded weights and datasets"
    )
    cache_clear.set_defaults(func=_cmd_cache_clear)

    datasets = subparsers.add_parser(
        "datasets", parents=[common], formatter_class=formatter, help="list the named datasets",
        description="List the dataset names usable as sources: images, file, size, where it comes from, "
        "whether it is here.",
        epilog=_DATASETS_EPILOG,
    )
    datasets.add_argument("--json", action="store_true", help="print as JSON")
    datasets.set_defaults(func=_cmd_datasets)

    _register_ttur(subparsers, network_parent)
    return parser


def _register_ttur(subparsers: Any, network_parent: argparse.ArgumentParser) -> None:
    """Add ``fidkit ttur`` and ``fidkit validate`` from :mod:`fidkit.ttur.cli`.

    Only a *missing* module is tolerated (a checkout or build without the trainer); any other import
    failure is a bug and propagates, so it is not silently hidden.
    """
    try:
        from fidkit.ttur.cli import register
    except ModuleNotFoundError as error:
        if error.name not in ("fidkit.ttur", "fidkit.ttur.cli"):
            raise
        logger.debug("fidkit.ttur.cli not available; the ttur and validate commands are absent")
        return
    register(subparsers, network_parent)


# ---------------------------------------------------------------------------------------------------
# handlers: each takes the parsed arguments and returns the exit status


def _progress_option(args: argparse.Namespace) -> bool | None:
    # None lets the bar decide (a terminal shows it); --quiet turns it off.
    return False if args.quiet else None


def _source_options(args: argparse.Namespace) -> dict[str, Any]:
    return dict(
        weights=args.weights,
        device=args.device,
        batch_size=args.batch_size,
        engine=args.engine,
        precision=args.precision,
        workers=args.workers,
        skip_bad=args.skip_bad,
        limit=args.limit,
        seed=args.seed,
        use_cache=not args.no_cache,
        hash_content=args.hash_content,
        exif_transpose=args.exif_transpose,
        progress=_progress_option(args),
        cluster="ray" if args.ray or args.ray_address else "local",
        ray_address=args.ray_address,
    )


def _cmd_compute(args: argparse.Namespace) -> int:
    from fidkit.api import compute_fid

    report = compute_fid(
        args.source_a, args.source_b, allow_weights_mismatch=args.allow_weights_mismatch, **_source_options(args)
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"FID: {report.value:.4f}")
    return EXIT_OK


def _cmd_stats(args: argparse.Namespace) -> int:
    from fidkit.api import compute_stats_with_report
    from fidkit.cache import CACHE_KEY_METADATA

    if args.source is None:
        from fidkit.sources.named import dataset_names

        print(
            "fidkit stats: error: no source given; give a path (folder, archive, array, ...) or a dataset name: "
            + ", ".join(dataset_names()),
            file=sys.stderr,
        )
        return EXIT_USAGE
    out_path: Path | None = args.save
    if out_path is not None:
        # Refuse before computing anything: the user learns in a second, not after the whole run.
        from fidkit._fs import check_writable_destination

        if out_path.is_file() and not out_path.is_symlink() and not args.force:
            raise OverwriteError(f"{out_path} already exists; pass --force to replace it or choose another --save path")
        # A folder, FIFO, device, socket or link there, a parent that is a file, no permission: all refused now.
        check_writable_destination(out_path, overwrite=args.force)
    stats, side = compute_stats_with_report(args.source, **_source_options(args))
    if out_path is not None:
        metadata = {name: value for name, value in stats.metadata.items() if name != CACHE_KEY_METADATA}
        dataclasses.replace(stats, metadata=metadata).save(out_path, overwrite=args.force)
    summary = {
        "source": side.name,
        "kind": side.kind,
        "n": stats.n,
        "dim": int(stats.dim),
        "cached": side.cached,
        "n_skipped": side.n_skipped,
        "ignored": dict(side.ignored),
        "lossy": side.lossy,
        "saved": str(out_path) if out_path is not None else None,
        "seconds": round(side.total_seconds, 3),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        where = f"saved {out_path}" if out_path is not None else "computed (not saved; use --save)"
        extras = [f"from {side.kind} {side.name}"]
        if side.cached:
            extras.append("cached")
        if side.n_skipped:
            extras.append(f"{side.n_skipped} file(s) skipped")
        n_ignored = sum(count for _, count in side.ignored)
        if n_ignored:
            extras.append(f"{n_ignored} not read (" + "; ".join(f"{c} {r}" for r, c in side.ignored) + ")")
        if side.lossy:
            extras.append("lossy JPEG inputs")
        print(f"{where}: N={stats.n}, dim={stats.dim}, " + ", ".join(extras))
    return EXIT_OK


def _cmd_info(args: argparse.Namespace) -> int:
    import numpy as np

    from fidkit.stats import Stats

    stats = Stats.load(args.path)
    foreign = bool(stats.is_foreign)
    origin = "TTUR / pytorch-fid (mu and sigma only)" if foreign else "fidkit"
    version = stats.metadata.get("fidkit_version")
    if version and not foreign:
        origin = f"fidkit {version}"
    info = {
        "path": str(args.path),
        "origin": origin,
        "foreign": foreign,
        "n": stats.n,
        "dim": int(stats.dim),
        "trace_sigma": stats.trace,
        "mu_norm": float(np.linalg.norm(stats.mu)),
        "metadata": {str(name): value for name, value in sorted(stats.metadata.items())},
    }
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return EXIT_OK
    print(f"file:          {info['path']}")
    print(f"origin:        {origin}")
    print(f"N:             {stats.n if stats.n is not None else 'unknown (not recorded)'}")
    print(f"dim:           {info['dim']}")
    print(f"trace(sigma):  {info['trace_sigma']:.6g}")
    print(f"|mu|:          {info['mu_norm']:.6g}")
    if info["metadata"]:
        print("metadata:")
        width = max(len(name) for name in info["metadata"])
        for name, value in info["metadata"].items():
            print(f"  {name:<{width}}  {value}")
    return EXIT_OK


def _human_bytes(n_bytes: int) -> str:
    size = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover - loop always returns


def _cmd_cache_list(args: argparse.Namespace) -> int:
    from fidkit.cache import (
        CACHE_MAX_BYTES_ENV,
        cache_max_bytes,
        list_cache,
        stats_cache_dir,
    )

    entries = list_cache()
    total = sum(entry.size_bytes for entry in entries)
    limit = cache_max_bytes()
    if args.json:
        listing = {
            "folder": str(stats_cache_dir()), "total_bytes": total, "max_bytes": limit or None,
            "entries": [e.to_dict() for e in entries],
        }
        print(json.dumps(listing, indent=2))
        return EXIT_OK
    folder = stats_cache_dir()
    limit_text = f"limit {_human_bytes(limit)}" if limit else "no limit"
    if not entries:
        print(f"no cached statistics in {folder} ({limit_text}, {CACHE_MAX_BYTES_ENV})")
        return EXIT_OK
    print(f"{'key':<12}  {'N':>7}  {'size':>9}  {'created (UTC)':<19}  source")
    for entry in entries:
        created = (entry.created or entry.modified.isoformat())[:19].replace("T", " ")
        n_text = str(entry.n) if entry.n is not None else "?"
        source = f"{entry.source_name} ({entry.source_kind})" if entry.source_kind else entry.source_name
        print(f"{entry.key[:12]:<12}  {n_text:>7}  {_human_bytes(entry.size_bytes):>9}  {created:<19}  {source}")
    print(f"{len(entries)} entries, {_human_bytes(total)} in {folder} ({limit_text}, {CACHE_MAX_BYTES_ENV})")
    return EXIT_OK


def _cmd_cache_clear(args: argparse.Namespace) -> int:
    from fidkit._fs import cache_home
    from fidkit.cache import clear_cache

    cleared = clear_cache(include_models=args.all)
    home = cache_home()
    message = f"removed {cleared.n_stats_entries} cached statistics entries"
    if args.all:
        counts = {name: 0 for name in ("onnx", "weights", "datasets")}
        for path in cleared.removed_paths:
            if path.parent.parent == home and path.parent.name in counts:
                counts[path.parent.name] += 1
        message += ", " + ", ".join(f"{count} file(s) from {name}/" for name, count in counts.items())
    print(f"{message} ({_human_bytes(cleared.bytes_freed)}) from {home}")
    # Only files fidkit recognisably wrote are removed; say what was left and why.
    for path, reason in cleared.kept[:_MAX_KEPT_SHOWN]:
        print(f"kept {path}: {reason}")
    if len(cleared.kept) > _MAX_KEPT_SHOWN:
        print(f"kept {len(cleared.kept) - _MAX_KEPT_SHOWN} more file(s) fidkit did not write")
    return EXIT_OK


#: How many kept files ``fidkit cache clear`` names (the count is always given).
_MAX_KEPT_SHOWN = 20


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


def _cmd_datasets(args: argparse.Namespace) -> int:
    import os

    from fidkit._download import MIRROR_ENV
    from fidkit.sources.named import (
        DATASETS,
        DATASETS_ENV,
        dataset_status,
        datasets_cache_dir,
    )

    entries = [dataset_status(dataset) for dataset in DATASETS.values()]
    folder, mirror = os.environ.get(DATASETS_ENV) or None, os.environ.get(MIRROR_ENV) or None
    if args.json:
        listing = {"cache": str(datasets_cache_dir()), "datasets_folder": folder, "mirror": mirror, "datasets": entries}
        print(json.dumps(listing, indent=2))
        return EXIT_OK
    print(f"{'name':<15} {'images':>7}  {'file':<27} {'size':>10}  here")
    for entry in entries:
        here = f"yes ({entry['location']}: {entry['path']})" if entry["cached"] else "no (downloaded on first use)"
        print(
            f"{entry['name']:<15} {entry['n_images']:>7}  {entry['file']:<27} {_human_bytes(entry['size']):>10}  {here}"
        )
    print("files come from:")
    for file_name, entry in {entry["file"]: entry for entry in entries}.items():
        print(f"  {file_name:<27} {' or '.join(entry['urls'])} (md5 {entry['md5']})")
    print(f"cache: {datasets_cache_dir()}; {DATASETS_ENV}: {folder or 'not set'}; {MIRROR_ENV}: {mirror or 'not set'}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _logging_to_stderr(args: argparse.Namespace) -> Iterator[None]:
    """Send fidkit's log records to stderr for one command; the only place logging is configured.

    The ``fidkit`` logger's handler, level and propagation are restored afterwards, so an
    application (or a test) that calls :func:`main` keeps its own logging setup.
    """
    handler = logging.StreamHandler(sys.stderr)
    if getattr(args, "debug", False):
        handler.setFormatter(logging.Formatter("fidkit %(levelname)s %(name)s: %(message)s"))
        level = logging.DEBUG
    else:
        handler.setFormatter(logging.Formatter("fidkit: %(message)s"))
        level = logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    package_logger = logging.getLogger("fidkit")
    saved_level, saved_propagate = package_logger.level, package_logger.propagate
    package_logger.addHandler(handler)
    package_logger.setLevel(level)
    # Records stop at the fidkit logger while the command runs: not printed twice by a root handler.
    package_logger.propagate = False
    try:
        yield
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(saved_level)
        package_logger.propagate = saved_propagate


class _StdoutGone(Exception):
    """stdout's reader went away (EPIPE): not an error of the command, so told apart from other OSErrors."""


class _GuardedStdout:
    """sys.stdout during a command: a broken pipe becomes :class:`_StdoutGone`."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError as error:
            raise _StdoutGone() from error

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError as error:
            raise _StdoutGone() from error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _TolerantStderr(_GuardedStdout):
    """sys.stderr during a command: closed or broken, messages are dropped and the command goes on."""

    def write(self, text: str) -> int:
        with contextlib.suppress(OSError, ValueError):  # ValueError: a closed file object
            return self._stream.write(text)
        return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()


def _occupy_with_devnull(fd: int) -> None:
    """Put /dev/null on a standard descriptor the process was started without (``>&-``, ``2>&-``).

    Otherwise the next file fidkit opens (an output, a temporary file) would get that descriptor, and
    anything writing to "stderr" at the OS level (onnxruntime's log) would write into it.
    """
    try:
        os.fstat(fd)
        return  # something holds it already: leave it alone
    except OSError:
        pass
    null = os.open(os.devnull, os.O_WRONLY)
    if null != fd:
        os.dup2(null, fd)
        os.close(null)


@dataclasses.dataclass
class _Streams:
    stdout_closed: bool = False


@contextlib.contextmanager
def _standard_streams() -> Iterator[_Streams]:
    """stdout and stderr for one command, whatever the shell left open.

    - stdout carries only the result. If it was closed (``>&-``) the command does not run: the result
      would be lost, so fidkit says so on stderr and exits 1.
    - stderr carries messages only; closed (``2>&-``) or a broken pipe, they are dropped and the exit
      status is what it would have been.
    - stdout a pipe whose reader went away: the command's files are complete, nothing is printed, exit 141.
    """
    saved = sys.stdout, sys.stderr
    streams = _Streams(stdout_closed=sys.stdout is None)
    if sys.stdout is None:
        _occupy_with_devnull(1)
    if sys.stderr is None:
        _occupy_with_devnull(2)
    null = None
    if sys.stdout is None or sys.stderr is None:
        null = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - closed in finally
    sys.stdout = _GuardedStdout(sys.stdout if sys.stdout is not None else null)
    sys.stderr = _TolerantStderr(sys.stderr if sys.stderr is not None else null)
    try:
        yield streams
    finally:
        sys.stdout, sys.stderr = saved
        if null is not None:
            null.close()


def _silence_stdout() -> None:
    """After a broken stdout pipe: let the interpreter's last flush go to /dev/null instead of failing."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.__stdout__.fileno())
        os.close(null)


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fidkit`` command line and return its exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        0 success, 1 error, 2 usage error, 130 interrupted, 141 stdout's reader went away.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exit_request:
        # argparse exits for --help/--version (0) and usage errors (2); return the status instead.
        code = exit_request.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_USAGE)

    debug = bool(getattr(args, "debug", False))
    caught: list[warnings.WarningMessage] = []
    with _standard_streams() as streams, _logging_to_stderr(args):
        try:
            if streams.stdout_closed:
                print("fidkit: error: stdout is closed, so the result would be lost; redirect it (> FILE or "
                      "> /dev/null) instead of closing it", file=sys.stderr)
                return EXIT_ERROR
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                status = int(args.func(args))
            sys.stdout.flush()  # a reader that went away shows here, not at the interpreter's exit
            return status
        except _StdoutGone:
            _silence_stdout()
            return EXIT_BROKEN_PIPE
        except KeyboardInterrupt:
            print("fidkit: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except (FidkitError, OSError) as error:
            if debug:
                traceback.print_exc(file=sys.stderr)
            print(f"fidkit: error: {_one_line(error)}", file=sys.stderr)
            return EXIT_ERROR
        except Exception as error:  # noqa: BLE001 - a bug: say so, with the traceback to report
            traceback.print_exc(file=sys.stderr)
            print(f"fidkit: internal error (please report it): {_one_line(error)}", file=sys.stderr)
            return EXIT_ERROR
        finally:
            _report_warnings(caught, debug)
            sys.stderr.flush()
