"""End to end: ``fidkit compute`` on CIFAR-10 JPEGs, where the time goes, and what the cache saves.

Run from the repository root, on an otherwise idle machine::

    python3 benchmarks/bench_end_to_end.py            # 300 images per side
    python3 benchmarks/bench_end_to_end.py --n-images 500 --workers 2

It measures, in one process and on the same images:

1. decode only: the source's batches (zip members read and JPEG-decoded in worker processes), no network;
2. network only: the already decoded uint8 images through the ONNX feature extractor;
3. the first ``compute_fid`` (train zip vs test zip, cold cache): images/s, and the time spent waiting
   for decoded images vs in the network (decoding overlaps with the network);
4. the second, identical ``compute_fid``: both sides come from the statistics cache; the ratio
   first / second.

Weights: the released Inception weights cannot be downloaded here, so by default the script uses
random weights of the exact layout (same graph, same arithmetic, same throughput; the FID value itself
is meaningless). Pass ``--weights PATH`` to use the real file.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-images", type=int, default=300, help="images per side (default 300)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: fidkit's)")
    parser.add_argument("--weights", default=None, help="Inception weights .pth (default: random, exact layout)")
    parser.add_argument(
        "--data", type=Path, default=REPO_ROOT.parent / "shared" / "data", help="the shared data folder"
    )
    return parser.parse_args()


def _rate(n_images: int, seconds: float) -> float:
    return n_images / seconds if seconds > 0 else float("inf")


def main() -> int:
    args = _parse_args()
    home = Path(tempfile.mkdtemp(prefix="fidkit-bench-e2e-"))
    try:
        return _run(args, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _run(args: argparse.Namespace, home: Path) -> int:
    train_zip = args.data / "cifar10" / "cifar10-train-jpg.zip"
    test_zip = args.data / "cifar10" / "cifar10-test-jpg.zip"
    for path in (train_zip, test_zip):
        if not path.is_file():
            print(f"missing {path}; pass --data", file=sys.stderr)
            return 1

    # The warnings (lossy JPEG inputs, N < 2048) are expected here and would drown the table.
    warnings.simplefilter("ignore")
    # A private cache home: the first run must be cold, and the user's cache is left alone.
    os.environ["FIDKIT_HOME"] = str(home)

    from fidkit.api import compute_fid
    from fidkit.inception import FeatureExtractor
    from fidkit.sources import default_workers, open_source

    weights = args.weights
    weights_note = "real weights"
    if weights is None:
        from fidkit.inception.weights import save_state_dict
        from fidkit.testing import random_state_dict

        weights = home / "random-inception.pth"
        save_state_dict(random_state_dict(seed=0), weights, legacy=True)
        weights_note = "random weights of the exact layout (the released file is not available here)"

    started = time.perf_counter()
    extractor = FeatureExtractor(weights, device="cpu", batch_size=args.batch_size)
    build_seconds = time.perf_counter() - started
    n_images = args.n_images
    workers = args.workers if args.workers is not None else default_workers()

    print(f"fidkit end to end: CIFAR-10 JPEG zips, {n_images} images per side, batch {args.batch_size}, "
          f"{workers} decoding workers, provider {extractor.provider}, {extractor.threads} ORT threads")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; {weights_note}")
    print(f"feature extractor built in {build_seconds:.1f} s (ONNX export on first use, then cached; not counted below)")

    # 1. decode only.
    source = open_source(train_zip, limit=n_images, workers=workers)
    decoded = []
    started = time.perf_counter()
    for batch in source.batches(args.batch_size):
        decoded.append(batch)
    decode_seconds = time.perf_counter() - started
    images = np.concatenate(decoded)
    assert images.shape[0] == n_images

    # 2. network only, on the same images, after one warm-up batch (onnxruntime allocates its
    # buffers on the first run; the end-to-end run below is warm too).
    extractor(images[: min(n_images, args.batch_size)])

    def time_network_only() -> float:
        started = time.perf_counter()
        for start in range(0, n_images, args.batch_size):
            extractor(images[start : start + args.batch_size])
        return time.perf_counter() - started

    network_before = time_network_only()

    # 3. cold end to end (no cache entry yet), both sides through the network.
    started = time.perf_counter()
    first = compute_fid(train_zip, test_zip, extractor=extractor, limit=n_images, workers=workers, progress=False)
    first_seconds = time.perf_counter() - started
    assert not first.a.cached and not first.b.cached

    # 4. the same again: both sides read from the statistics cache.
    started = time.perf_counter()
    second = compute_fid(train_zip, test_zip, extractor=extractor, limit=n_images, workers=workers, progress=False)
    second_seconds = time.perf_counter() - started
    assert second.a.cached and second.b.cached
    assert abs(second.value - first.value) <= 1e-9 * max(1.0, abs(first.value))

    # The network alone once more, after the end-to-end runs: on a shared machine the load changes
    # over minutes, and the faster of two measurements is the closer to what the network can do.
    network_after = time_network_only()
    network_seconds = min(network_before, network_after)

    total_images = 2 * n_images
    decode_rate = _rate(n_images, decode_seconds)
    network_rate = _rate(n_images, network_seconds)
    serial_share = network_seconds / (decode_seconds + network_seconds)
    timings = first.timings
    print()
    print("| stage | seconds | images/s |")
    print("|---|---:|---:|")
    print(f"| decode only ({n_images} JPEGs from the zip, {workers} workers) | {decode_seconds:.2f} | {decode_rate:.1f} |")
    print(f"| network only ({n_images} decoded images, ONNX CPU; best of 2: {network_before:.1f} s before, "
          f"{network_after:.1f} s after) | {network_seconds:.2f} | {network_rate:.1f} |")
    print(f"| compute_fid, cold ({total_images} images) | {first_seconds:.2f} | {_rate(total_images, first_seconds):.1f} |")
    print(f"| compute_fid, cached (both sides from the cache) | {second_seconds:.3f} | - |")
    print()
    print(f"cold run: waiting for decoded images {timings.decode_seconds:.2f} s "
          f"({100 * timings.decode_seconds / first_seconds:.1f}%), network {timings.network_seconds:.2f} s "
          f"({100 * timings.network_seconds / first_seconds:.1f}%), distance {timings.distance_seconds:.3f} s")
    print(f"measured apart, per image: decoding is {100 * (1 - serial_share):.1f}% and the network "
          f"{100 * serial_share:.1f}% of decode + network time")
    in_run_network_rate = _rate(total_images, timings.network_seconds)
    print(f"cold run throughput / its own network-only throughput: "
          f"{_rate(total_images, first_seconds) / in_run_network_rate:.2f} "
          f"(1.00 = decoding, reading and statistics fully hidden behind the network)")
    print(f"cold run throughput / separately measured network throughput: "
          f"{_rate(total_images, first_seconds) / network_rate:.2f} (noisy on a shared machine)")
    print(f"cold / cached: {first_seconds / second_seconds:.0f}x (the cached run opens both zips, fingerprints "
          "them and loads two 2048x2048 statistics files; its time does not grow with N)")
    print(f"FID (meaningless with random weights): {first.value:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
