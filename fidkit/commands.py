"""The handlers of the ``fidkit`` commands: each takes the parsed arguments, prints the result, returns the status.

:mod:`fidkit.cli` builds the parser and runs a handler; the handlers call the API. Heavy modules are
imported inside them, so ``fidkit --help`` starts fast.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from fidkit._plain import fid_text, shown, shown_name
from fidkit.errors import FidkitWarning, OverwriteError

__all__ = ["EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_INTERRUPTED", "EXIT_TERMINATED", "EXIT_BROKEN_PIPE",
           "compute", "stats", "features", "info", "cache_list", "cache_clear", "datasets"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: Ended by SIGTERM (``timeout``, ``docker stop``, SLURM's ``scancel``, Kubernetes), cleaned up as for Ctrl-C:
#: 128 + SIGTERM.
EXIT_TERMINATED = 143
#: stdout was a pipe whose reader went away (``| head``, ``| true``): 128 + SIGPIPE, as a shell reports a
#: command that SIGPIPE ended; nothing is printed. Files the command wrote (``--save``) are complete.
EXIT_BROKEN_PIPE = 141


def _run_options(args: argparse.Namespace) -> Any:
    """The one :class:`~fidkit.options.RunOptions` of a command, from its parsed arguments.

    Only the options the user gave are passed (the parser's defaults are None, a flag's is False), so that the
    object knows them (:meth:`~fidkit.options.RunOptions.given`): ``--dims 2048`` against 64-dimensional files is
    refused as ``--dims 768`` is, where a default left alone asks for nothing. The defaults are RunOptions'.
    """
    from fidkit.options import RunOptions

    values = {
        "extractor": args.extractor,
        "weights": args.weights,
        "device": args.device,
        "engine": args.engine,
        "precision": args.precision,
        "convention": args.convention,
        "dims": args.dims,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "workers": args.workers,
        "skip_bad": args.skip_bad or None,
        "limit": args.limit,
        "seed": args.seed,
        "exif_transpose": args.exif_transpose or None,
        "use_cache": False if args.no_cache else None,
        "hash_content": args.hash_content or None,
        # None lets the bar decide (a terminal shows it); --quiet turns it off.
        "progress": False if args.quiet else None,
        "cluster": "ray" if args.ray or args.ray_address else None,
        "ray_address": args.ray_address,
    }
    return RunOptions(**{name: value for name, value in values.items() if value is not None})


def compute(args: argparse.Namespace) -> int:
    from fidkit.report import json_text, merge_warnings  # strict JSON: no NaN or Infinity
    from fidkit.api import compute_fid

    metrics = _metrics_text(args.metrics)
    ci = None
    if args.ci is not None:
        from fidkit.metrics.table import IntervalSpec

        ci = IntervalSpec(level=args.ci, **({} if args.resamples is None else {"n_resamples": args.resamples}))
    _warn_unused_metric_options(args, metrics)
    report = compute_fid(
        args.source_a, args.source_b, options=_run_options(args), allow_weights_mismatch=args.allow_weights_mismatch,
        allow_convention_mismatch=args.allow_convention_mismatch, metrics=metrics, ci=ci,
        metrics_seed=0 if args.metrics_seed is None else args.metrics_seed,
    )
    if args.json:
        data = report.to_dict()
        # Every warning printed on stderr, also those issued while the command ran that the report does not record.
        data["warnings"] = merge_warnings(_emitted_warnings(args), data["warnings"])
        print(json_text(data))
    elif report.metrics is not None:
        print(report.metrics.format())
    else:
        print(f"FID: {fid_text(report.value)}")
    return EXIT_OK


def _metrics_text(given: list[str] | None) -> str:
    """``--metrics``, given once or more: every list named (``--metrics kid --metrics is`` is ``kid,is``)."""
    return ",".join(given) if given else "fid"


def _warn_unused_metric_options(args: argparse.Namespace, metrics: str) -> None:
    """``--resamples`` without ``--ci``, and ``--metrics-seed`` with nothing it seeds, would be ignored without a
    word: the number printed is right, but not what the option suggests. Said as ``seed`` without ``limit`` is."""
    if args.resamples is not None and args.ci is None:
        warnings.warn(
            f"--resamples {args.resamples} without --ci has no effect: no interval is computed; pass --ci (e.g. --ci "
            "0.95) for intervals from that many resamples", FidkitWarning, stacklevel=2,
        )
    fid_alone = {name.strip().lower() for name in metrics.split(",")} <= {"fid", ""}
    if args.metrics_seed is not None and args.ci is None and fid_alone:
        warnings.warn(
            f"--metrics-seed {args.metrics_seed} has no effect on the FID alone (it seeds KID's subsets, IS's splits "
            "and the intervals); pass --metrics or --ci, or drop it", FidkitWarning, stacklevel=2,
        )


def stats(args: argparse.Namespace) -> int:
    from fidkit.api import compute_stats_with_report

    if args.source is None:
        from fidkit.sources.named import dataset_names

        print(
            "fidkit stats: error: no source given; give a path (folder, archive, array, ...) or a dataset name: "
            + ", ".join(dataset_names()),
            file=sys.stderr,
        )
        return EXIT_USAGE
    out_path: Path | None = args.save
    _check_save_path(out_path, args.force, args.source, args.weights)
    stats, side = compute_stats_with_report(args.source, options=_run_options(args))
    if out_path is not None:
        stats.save(out_path, overwrite=args.force)
        _saved(args, out_path)
    _print_side(args, side, stats.n, int(stats.dim), out_path)
    return EXIT_OK


def _print_side(args: argparse.Namespace, side: Any, n: int | None, dim: int, out_path: Path | None) -> None:
    """What ``stats`` and ``features`` print: one line, or the summary as JSON."""
    summary = {
        "source": side.name,
        "kind": side.kind,
        "n": n,
        "dim": dim,
        "cached": side.cached,
        "n_skipped": side.n_skipped,
        "ignored": dict(side.ignored),
        "lossy": side.lossy,
        "batch_size": side.batch_size,
        # What made the features, as the side records it: a bf16 or TensorRT summary says so, as compute's does.
        "feature_extractor": side.feature_extractor,
        "weights_sha256": side.weights_sha256,
        "convention": side.convention,
        "engine": side.engine,
        "precision": side.precision,
        "provider": side.provider,
        "saved": str(out_path) if out_path is not None else None,
        "seconds": round(side.total_seconds, 3),
    }
    from fidkit.report import unreleased_weights_warnings

    # A file made with other weights gives FIDs comparable only with its own kind: said before it is used.
    kept = "features" if args.command == "features" else "statistics"
    for message in unreleased_weights_warnings((("", side),), kept=kept):
        warnings.warn(message, FidkitWarning, stacklevel=2)
    if args.json:
        from fidkit.report import json_text, merge_warnings

        summary["warnings"] = merge_warnings(_emitted_warnings(args))  # what stderr shows, also here
        print(json_text(summary))
        return
    where = f"saved {out_path}" if out_path is not None else "computed (not saved; use --save)"
    extras = [f"from {side.kind} {shown_name(side.name)}"]
    if side.cached:
        extras.append("cached")
    if side.n_skipped:
        extras.append(f"{side.n_skipped} file(s) skipped")
    n_ignored = sum(count for _, count in side.ignored)
    if n_ignored:
        extras.append(f"{n_ignored} not read (" + "; ".join(f"{c} {r}" for r, c in side.ignored) + ")")
    if side.lossy:
        extras.append("lossy JPEG inputs")
    # A TTUR / pytorch-fid statistics file records mu and sigma only.
    count = f"N={n}" if n is not None else "N unknown (the file records no sample count)"
    print(f"{where}: {count}, dim={dim}, " + ", ".join(extras))


def _features_info(args: argparse.Namespace) -> int:
    """``fidkit info`` on a features file: N, dimension and the metadata."""
    from fidkit.features import Features
    from fidkit.report import json_text

    features = Features.load(args.path)
    summary = {"path": str(args.path), "content": "features", "n": features.n, "dim": features.dim,
               "outputs": list(features.outputs), "metadata": features.metadata}
    if args.json:
        print(json_text(summary))
    else:
        extra = [name for name in features.outputs if name != "features"]
        also = f", with {' and '.join(extra)}" if extra else ""
        print(f"{args.path}: features of {features.n} images, dim {features.dim} (float32){also}")
        for key, value in sorted(features.metadata.items()):
            print(f"  {key}: {shown(value)}")
    return EXIT_OK


def _emitted_warnings(args: argparse.Namespace) -> list[str]:
    """The fidkit warnings issued and logged so far in this command (recorded by :func:`fidkit.cli.main`), as
    printed."""
    issued = [
        str(record.message) for record in getattr(args, "emitted_warnings", ())
        if issubclass(record.category, FidkitWarning)
    ]
    return [*issued, *getattr(args, "logged_warnings", ())]


def _saved(args: argparse.Namespace, path: Path) -> None:
    """Record a file the command wrote: a failure to print the result afterwards says it is complete."""
    args.saved_files = [*getattr(args, "saved_files", ()), path]


def _check_save_path(out_path: Path | None, force: bool, source: str, weights: str | None = None) -> None:
    """Refuse a ``--save`` path before computing anything: the user learns in a second, not after the whole run."""
    if out_path is None:
        return
    from fidkit._fs import check_writable_destination
    from fidkit.home import weights_files_read
    from fidkit.sources import refuse_outputs_over_inputs

    # Even with --force: never a file the run reads (the source's files, a folder's images, the weights).
    refuse_outputs_over_inputs([out_path], source, what="--save", others=weights_files_read(weights))

    # os.path's tests: a name too long for the file system is False here and refused below, naming the limit.
    if os.path.isfile(out_path) and not os.path.islink(out_path) and not force:
        raise OverwriteError(f"{out_path} already exists; pass --force to replace it or choose another --save path")
    # A folder, FIFO, device, socket or link there, a parent that is a file, no permission: all refused now.
    check_writable_destination(out_path, overwrite=force)


def features(args: argparse.Namespace) -> int:
    from fidkit.api import compute_side

    out_path: Path | None = args.save
    _check_save_path(out_path, args.force, args.source, args.weights)
    result = compute_side(
        args.source, options=_run_options(args), keep_features=_outputs_for(_metrics_text(args.metrics))
    )
    kept = result.features
    assert kept is not None
    side = result.report
    if out_path is not None:
        kept.save(out_path, overwrite=args.force)
        _saved(args, out_path)
    _print_side(args, side, kept.n, kept.dim, out_path)
    return EXIT_OK


def _outputs_for(metrics: str) -> tuple[str, ...]:
    """What a features file must hold to serve `metrics` on either side, with intervals."""
    from fidkit.metrics.request import outputs_needed
    from fidkit.metrics.table import IntervalSpec

    needed = outputs_needed(metrics, ci=IntervalSpec())
    return tuple(dict.fromkeys(name for role in ("a", "b") for name in (needed[role] or ("features",))))


def _norm(mu: Any) -> float:
    """|mu| scaled by its largest entry, so that means near 1e200 do not overflow while squaring."""
    import numpy as np

    largest = float(np.max(np.abs(mu)))
    return largest * float(np.linalg.norm(mu / largest)) if largest > 0 else 0.0


def info(args: argparse.Namespace) -> int:
    from fidkit.features import is_features_file
    from fidkit.report import json_text  # strict JSON: no NaN or Infinity
    from fidkit.stats import Stats
    from fidkit.stats.reference import ReferenceBatch

    if is_features_file(args.path):
        return _features_info(args)
    stats = Stats.load(args.path)
    foreign = bool(stats.is_foreign)
    batch = stats if isinstance(stats, ReferenceBatch) else None
    origin = "TTUR / pytorch-fid (mu and sigma only)" if foreign else "fidkit"
    if foreign and batch is not None:
        origin = ("ADM reference batch (pool_3 and spatial statistics)" if batch.spatial is not None
                  else f"mu and sigma only, with images in {batch.images.key}")
    version = stats.metadata.get("fidkit_version")
    if version and not foreign:
        origin = f"fidkit {version}"
    spatial = batch.spatial if batch is not None else None
    images = batch.images if batch is not None else None
    # The trace is a plain sum, which overflows only when its value is beyond float64's maximum.
    info = {
        "path": str(args.path),
        "origin": origin,
        "foreign": foreign,
        "n": stats.n,
        "dim": int(stats.dim),
        "trace_sigma": stats.trace,
        "mu_norm": _norm(stats.mu),
        # ADM's reference batches: sFID's statistics (mu_s, sigma_s) and the images in arr_0 (by shape; not read).
        "spatial": None if spatial is None else {
            "dim": int(spatial.dim), "trace_sigma": spatial.trace, "mu_norm": _norm(spatial.mu),
        },
        "images": None if images is None else {
            "key": images.key, "shape": list(images.shape), "dtype": images.dtype,
        },
        "metadata": {str(name): value for name, value in sorted(stats.metadata.items())},
    }
    # A value beyond float64 is said so, never printed as inf (JSON has no such number: json_text writes null).
    values = {"trace_sigma": info["trace_sigma"], "mu_norm": info["mu_norm"]}
    if spatial is not None:
        values.update(trace_sigma_s=info["spatial"]["trace_sigma"], mu_s_norm=info["spatial"]["mu_norm"])
    overflows = [name for name, value in values.items() if not math.isfinite(value)]
    info["overflows"] = [f"{name} is beyond {sys.float_info.max:.3g} (float64's largest number)" for name in overflows]
    if args.json:
        print(json_text(info))
        return EXIT_OK

    def quantity(name: str) -> str:
        if name in overflows:
            return f"beyond {sys.float_info.max:.3g} (overflows float64)"
        return f"{values[name]:.6g}"

    print(f"file:          {info['path']}")
    print(f"origin:        {origin}")
    print(f"N:             {stats.n if stats.n is not None else 'unknown (not recorded)'}")
    print(f"dim:           {info['dim']}")
    print(f"trace(sigma):  {quantity('trace_sigma')}")
    print(f"|mu|:          {quantity('mu_norm')}")
    if spatial is not None:
        print(f"spatial:       dim {spatial.dim}, trace(sigma_s) {quantity('trace_sigma_s')}, |mu_s| "
              f"{quantity('mu_s_norm')} (mu_s and sigma_s: the statistics sFID is computed against)")
    if images is not None:
        adm = " (ADM's evaluator computes precision and recall on them)" if spatial is not None else ""
        print(f"images:        {images.describe()}{adm}")
    if info["metadata"]:
        print("metadata:")
        width = max(len(name) for name in info["metadata"])
        for name, value in info["metadata"].items():
            print(f"  {name:<{width}}  {shown(value)}")
    return EXIT_OK


def _human_bytes(n_bytes: int) -> str:
    size = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover - loop always returns


def cache_list(args: argparse.Namespace) -> int:
    from fidkit.report import json_text  # strict JSON: no NaN or Infinity
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
        print(json_text(listing))
        return EXIT_OK
    from fidkit.home import followed

    folder: Any = stats_cache_dir()
    if followed(folder) != folder:
        folder = f"{folder} (a link to {followed(folder)})"
    limit_text = f"limit {_human_bytes(limit)}" if limit else "no limit"
    if not entries:
        print(f"no cached statistics in {folder} ({limit_text}, {CACHE_MAX_BYTES_ENV})")
        return EXIT_OK
    print(f"{'key':<12}  {'N':>7}  {'size':>9}  {'created (UTC)':<19}  source")
    for entry in entries:
        created = (entry.created or entry.modified.isoformat())[:19].replace("T", " ")
        n_text = str(entry.n) if entry.n is not None else "?"
        # The absolute path where the entry records one: two folders called "real" do not look alike.
        kind = ", ".join(part for part in (entry.source_kind, "features" if entry.content == "features" else "") if part)
        source = f"{entry.source} ({kind})" if kind else entry.source
        print(f"{entry.key[:12]:<12}  {n_text:>7}  {_human_bytes(entry.size_bytes):>9}  {created:<19}  {source}")
    print(f"{len(entries)} entries, {_human_bytes(total)} in {folder} ({limit_text}, {CACHE_MAX_BYTES_ENV})")
    return EXIT_OK


def cache_clear(args: argparse.Namespace) -> int:
    from fidkit._home_dir import cache_home
    from fidkit.cache import clear_cache

    cleared = clear_cache(include_models=args.all)
    home = cache_home()
    message = f"removed {cleared.n_stats_entries} cached statistics entries"
    if args.all:
        from fidkit.home import followed

        counts = {name: 0 for name in ("onnx", "weights", "datasets")}
        # Each folder where clear_cache went: a folder of the home, or where a link of that name leads.
        names = {followed(home / name): name for name in counts} | {home / name: name for name in counts}
        for path in cleared.removed_paths:
            if path.parent in names:
                counts[names[path.parent]] += 1
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


def datasets(args: argparse.Namespace) -> int:
    from fidkit.report import json_text  # strict JSON: no NaN or Infinity

    from fidkit._download import MIRROR_ENV
    from fidkit.sources.named import (
        DATASETS,
        DATASETS_ENV,
        dataset_status,
        datasets_cache_dir,
    )

    entries = [dataset_status(dataset) for dataset in DATASETS.values()]
    # Blank values are unset, as the code that reads them takes them.
    folder, mirror = (os.environ.get(name, "").strip() or None for name in (DATASETS_ENV, MIRROR_ENV))
    if args.json:
        listing = {"cache": str(datasets_cache_dir()), "datasets_folder": folder, "mirror": mirror, "datasets": entries}
        print(json_text(listing))
        return EXIT_OK
    print(f"{'name':<15} {'images':>7}  {'file':<27} {'size':>10}  here")
    for entry in entries:
        if entry["cached"]:
            here = f"yes ({entry['location']}: {entry['path']})"
        elif entry["problem"] is not None:  # a file of another size: its first use refuses it
            here = f"no: {entry['problem']}"
        else:
            here = "no (downloaded on first use)"
        print(
            f"{entry['name']:<15} {entry['n_images']:>7}  {entry['file']:<27} {_human_bytes(entry['size']):>10}  {here}"
        )
    print("files come from:")
    for file_name, entry in {entry["file"]: entry for entry in entries}.items():
        print(f"  {file_name:<27} {' or '.join(entry['urls'])} (md5 {entry['md5']})")
    print(f"cache: {datasets_cache_dir()}; {DATASETS_ENV}: {folder or 'not set'}; {MIRROR_ENV}: {mirror or 'not set'}")
    return EXIT_OK
