"""The extraction loop with the statistics in a second thread (fidkit's default on a GPU) against the plain loop.

A GPU leaves the CPU idle while it runs a batch; in the plain loop the GPU then waits while the CPU accumulates
the batch's statistics and takes the next decoded batch. The statistics are what the overlap hides, and they
can be measured without a GPU: the network is replaced by a stand-in that takes a fixed time per image without
holding the CPU or the GIL (as a session waiting on the GPU does) and returns features of the right shape. Every
other part is the real one: the CIFAR-10 test JPEGs of ``../shared/data`` decoded by fidkit's worker processes,
the statistics accumulated by ``StatsAccumulator``. After one untimed round (the workers' start), rounds alternate
overlap off and on; the best of each counts. The stand-in's features are the images' own pixels, so the two
loops' statistics differ where either lost, repeated or mixed up images; a second sink records each batch's
digest in the order it came, which must be the same in both loops (sums do not show order but through rounding).

    python3 benchmarks/bench_overlap.py                         # 0.48 ms per image: the H200's exact rate
    python3 benchmarks/bench_overlap.py --network-ms 0.2 --batch-size 500

What it cannot show is a real GPU's figure (``benchmarks/bench_gpu.py``'s ``overlap`` step measures that).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


class StandInNetwork:
    """Sleeps `ms_per_image` per image (the GIL released, the CPU free) and returns each image's own features: its
    pixels, tiled to 2048 values. So the statistics depend on which images came in which batch and order (a lost,
    repeated, swapped or reordered batch changes them), and "bitwise equal" between the two loops means something;
    making them costs about 0.1 ms per batch of 200."""

    on_gpu = True
    feature_dim = 2048

    def __init__(self, ms_per_image: float, batch_size: int) -> None:
        self.seconds_per_image = ms_per_image / 1000.0
        self.batch_size = batch_size

    def __call__(self, images: np.ndarray) -> np.ndarray:
        time.sleep(self.seconds_per_image * len(images))
        return pixel_features(images, self.feature_dim)

    def metadata(self) -> dict[str, str]:
        return {}


class BatchOrder:
    """A sink that records, in the order it is given them, a digest of each batch's rows (their first 64 values:
    the start of each image's pixels, cheap to hash): the two loops must hand the sinks the same batches in the
    same order, which statistics, sums that hide order up to rounding, cannot show by themselves."""

    def __init__(self) -> None:
        self.digests: list[str] = []

    def update(self, features: np.ndarray) -> None:
        head = np.ascontiguousarray(features[:, :64])
        self.digests.append(f"{len(features)}:{hashlib.blake2b(head.tobytes(), digest_size=8).hexdigest()}")


def pixel_features(images: np.ndarray, dim: int = 2048) -> np.ndarray:
    """float32 ``(B, dim)``: each image's pixels in order, repeated until `dim` values."""
    flat = np.asarray(images).reshape(len(images), -1).astype(np.float32)
    return np.tile(flat, (1, -(-dim // flat.shape[1])))[:, :dim]


def main() -> int:
    from fidkit.extraction import extract
    from fidkit.sources import open_source
    from fidkit.stats import StatsAccumulator

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4000, help="JPEGs of the test zip per round (default 4000)")
    parser.add_argument("--batch-size", type=int, default=200, help="the GPU's default batch (200)")
    parser.add_argument("--network-ms", type=float, default=1000 / 2094,
                        help="stand-in network time per image, ms (default: 1/2,094 s, the H200's exact rate)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each way, alternating (default 3)")
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    args = parser.parse_args()

    network = StandInNetwork(args.network_ms, args.batch_size)
    zip_path = args.data / "cifar10" / "cifar10-test-jpg.zip"
    network_only = args.images * args.network_ms / 1000.0
    print(f"# bench_overlap: {os.cpu_count()} cores, {args.images} JPEGs of {zip_path.name} per round, batch "
          f"{args.batch_size}, stand-in network {args.network_ms:.3f} ms per image ({network_only:.2f} s per round), "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    # One round untimed first: it pays what only the first round would (the decoding workers' forkserver and its
    # imports, the zip in the page cache), so neither way's first timed round does.
    extract(open_source(zip_path, limit=args.images).batches(args.batch_size), network, StatsAccumulator(dim=2048),
            overlap=False)
    best: dict[bool, float] = {}
    results = {}
    orders: dict[bool, list[str]] = {}
    for _ in range(args.rounds):
        for overlap in (False, True):
            source = open_source(zip_path, limit=args.images)
            accumulator, order = StatsAccumulator(dim=2048), BatchOrder()
            started = time.perf_counter()
            times = extract(source.batches(args.batch_size), network, accumulator, order, overlap=overlap)
            seconds = time.perf_counter() - started
            best[overlap] = min(best.get(overlap, float("inf")), seconds)
            results[overlap] = accumulator.result()
            if orders.setdefault(overlap, order.digests) != order.digests:
                print(f"  overlap={overlap}: the batches came in another order than in its first round", flush=True)
                orders[overlap] = []
            print(f"  overlap={overlap!s:5}: {seconds:.2f} s (network {times.network_seconds:.2f} s, waiting for "
                  f"batches {times.decode_seconds:.2f} s)", flush=True)
    same = (
        np.array_equal(results[True].sigma, results[False].sigma)
        and np.array_equal(results[True].mu, results[False].mu)
        and bool(orders[False])
        and orders[True] == orders[False]
    )
    batches = -(-args.images // args.batch_size)
    print()
    print("| loop | seconds (best) | images/s | host work the GPU waits for, per batch |")
    print("|---|---:|---:|---:|")
    for overlap, label in ((False, "plain (before; the CPU's default)"), (True, "statistics overlapped (GPU default)")):
        waited = (best[overlap] - network_only) / batches * 1000
        print(f"| {label} | {best[overlap]:.2f} | {args.images / best[overlap]:,.0f} | {waited:.1f} ms |")
    print(f"| the stand-in network alone | {network_only:.2f} | {args.images / network_only:,.0f} | - |")
    print(f"\noverlapped / plain: {best[False] / best[True]:.2f}x; statistics and the sinks' batch order "
          f"{'bitwise equal' if same else 'DIFFERENT'}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
