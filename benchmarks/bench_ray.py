"""The Ray engine against the single process, on the same CIFAR-10 images, and what Ray costs.

Run from the repository root, on an otherwise idle machine (Ray installed: ``pip install "fidkit[ray]"``)::

    python3 benchmarks/bench_ray.py                    # 2,000 JPEGs from the CIFAR-10 train zip
    python3 benchmarks/bench_ray.py --n-images 500 --actors 2 --source npy

It measures, in one process and on the same images:

1. ``compute_stats`` with the local engine (decoding in worker processes, the network in this process
   with one onnxruntime thread per core);
2. ``compute_stats(..., cluster="ray")`` as a user runs it: fidkit starts a local Ray instance with one
   CPU actor per core (``--actors`` overrides, through ``FIDKIT_RAY_ACTORS``), runs the job, shuts the
   instance down. Reported both with the instance's start and stop and for the job alone (actors
   starting, shards, merge);

then prints images/s, the ratio Ray / single process (above 1: Ray is slower) and the largest relative
difference of mu and sigma between the two.

Weights: random weights of the exact layout unless ``--weights PATH`` (the released file cannot be
downloaded here); the graph, its arithmetic and the throughput are the same, the statistics meaningless.
A GPU cluster (one actor per GPU) is not measured by this script on a CPU machine.
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
    parser.add_argument("--n-images", type=int, default=2000, help="images (default 2000)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--source", choices=("zip", "npy"), default="zip",
                        help="the CIFAR-10 JPEG zip (decoding included) or the lossless uint8 array")
    parser.add_argument("--actors", type=int, default=None, help="Ray actors (default: one per CPU)")
    parser.add_argument("--weights", default=None, help="Inception weights .pth (default: random, exact layout)")
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data",
                        help="the shared data folder")
    return parser.parse_args()


def main() -> int:
    args = _parse_args()
    try:
        import ray  # noqa: F401
    except ImportError:
        print('Ray is not installed: pip install "fidkit[ray]"', file=sys.stderr)
        return 1
    home = Path(tempfile.mkdtemp(prefix="fidkit-bench-ray-"))
    try:
        return _run(args, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _run(args: argparse.Namespace, home: Path) -> int:
    name = "cifar10-train-jpg.zip" if args.source == "zip" else "cifar10-train-0-3999-uint8.npy"
    source = args.data / "cifar10" / name
    if not source.is_file():
        print(f"missing {source}; pass --data", file=sys.stderr)
        return 1
    warnings.simplefilter("ignore")  # lossy JPEG inputs, N < 2048: expected here
    os.environ["FIDKIT_HOME"] = str(home)  # a private cache and graph home, inherited by the actors
    os.environ.pop("RAY_ADDRESS", None)
    if args.actors is not None:
        os.environ["FIDKIT_RAY_ACTORS"] = str(args.actors)

    from fidkit.api import compute_stats_with_report
    from fidkit.inception import FeatureExtractor

    weights = args.weights
    if weights is None:
        from fidkit.inception.weights import save_state_dict
        from fidkit.testing import random_state_dict

        weights = home / "random-inception.pth"
        save_state_dict(random_state_dict(seed=0), weights, legacy=True)
    started = time.perf_counter()
    FeatureExtractor(weights, device="cpu")  # the ONNX export, once, outside both timings
    print(f"graph ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)

    common = dict(weights=weights, device="cpu", batch_size=args.batch_size, limit=args.n_images,
                  use_cache=False, progress=None)
    started = time.perf_counter()
    local, local_side = compute_stats_with_report(str(source), **common)
    local_seconds = time.perf_counter() - started

    started = time.perf_counter()
    stats, side = compute_stats_with_report(str(source), cluster="ray", **common)
    ray_seconds = time.perf_counter() - started
    job_seconds = side.network_seconds  # the Ray job: actors starting, shards, merge

    n = local.n
    print(f"fidkit Ray engine benchmark: {n} images of {source.name}, batch {args.batch_size}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}")
    print(f"{'run':<46} {'seconds':>8} {'images/s':>9}")
    print(f"{'single process (local engine)':<46} {local_seconds:8.2f} {n / local_seconds:9.1f}")
    print(f"{'Ray, with starting/stopping the local instance':<46} {ray_seconds:8.2f} {n / ray_seconds:9.1f}")
    print(f"{'Ray, the job alone':<46} {job_seconds:8.2f} {n / job_seconds:9.1f}")
    print(f"actors: {stats.metadata['ray_actors']}, shards: {stats.metadata['ray_shards']}")
    print(f"overhead ratio (Ray / single process): {ray_seconds / local_seconds:.2f}x with the instance start, "
          f"{job_seconds / local_seconds:.2f}x for the job alone")
    print(f"largest relative difference: mu {_relative(stats.mu, local.mu):.1e}, "
          f"sigma {_relative(stats.sigma, local.sigma):.1e} (N {stats.n} vs {local.n})")
    del local_side
    return 0


if __name__ == "__main__":
    sys.exit(main())
