"""Images per second and peak memory of the CPU provider at several batch sizes: the CPU's default batch.

Random weights of the exact layout, CIFAR-sized 32x32 uint8 images, onnxruntime's CPU provider with one
thread per core, in two parts:

* memory: each batch size in its own process (peak resident memory, ``ru_maxrss``, is per process): a
  session, then ``--memory-images`` images in batches of that size (onnxruntime's arena keeps growing over the
  first few batches, so one batch would understate it);
* speed: one process, one session, the batch sizes interleaved in short rounds (``--images`` images per
  batch size per round) after a warm-up of each, the best round of each kept. Interleaving at this grain keeps
  a burst of load from another process (the development machine is shared) from landing on one batch size.

    python3 benchmarks/bench_cpu_batch.py                      # batch 10, 25, 50; 50 images; 8 rounds
    python3 benchmarks/bench_cpu_batch.py --batch-sizes 10 50 --images 100 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_MEMORY = r"""
import json, resource, sys
import numpy as np
from fidkit.inception import FeatureExtractor
weights, batch, n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) or None
extractor = FeatureExtractor(weights, device="cpu", batch_size=batch, threads=threads)
images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
for first in range(0, n, batch):
    extractor(images[first:first + batch])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
print(json.dumps({"batch": batch, "peak_rss_gb": peak / 1e9}))
"""

_SPEED = r"""
import json, sys, time
import numpy as np
from fidkit.inception import FeatureExtractor
weights, n, rounds, sizes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
extractor = FeatureExtractor(weights, device="cpu", threads=int(sys.argv[5]) or None)
images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)

def seconds(batch):
    started = time.perf_counter()
    for first in range(0, n, batch):
        extractor(images[first:first + batch])
    return time.perf_counter() - started

for batch in sizes:
    seconds(batch)  # warm-up: the arena grows to this batch's size once
best = {batch: float("inf") for batch in sizes}
for _ in range(rounds):
    for batch in sizes:
        best[batch] = min(best[batch], seconds(batch))
print(json.dumps({batch: n / value for batch, value in best.items()}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--images", type=int, default=50, help="images per batch size per round")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (default: one per core)")
    parser.add_argument("--memory-images", type=int, default=200,
                        help="images per memory run: the arena reaches its steady size over several batches")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fidkit-cpu-batch-") as tmp:
        env = dict(os.environ, FIDKIT_HOME=str(Path(tmp) / "home"),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        # The weights and their graph, made once here so that no measured process exports the graph.
        setup = ("import sys; from pathlib import Path; from fidkit.inception import FeatureExtractor; "
                 "from fidkit.inception.weights import save_state_dict; from fidkit.testing import random_state_dict; "
                 "p = save_state_dict(random_state_dict(seed=0), Path(sys.argv[1])); FeatureExtractor(p, device='cpu')")
        weights = str(Path(tmp) / "random.pth")
        subprocess.run([sys.executable, "-c", setup, weights], env=env, check=True)

        def child(code: str, *arguments: str) -> dict:
            out = subprocess.run([sys.executable, "-c", code, weights, *arguments], env=env, check=True,
                                 capture_output=True, text=True).stdout
            return json.loads(out.strip().splitlines()[-1])

        memory = {batch: child(_MEMORY, str(batch), str(args.memory_images), str(args.threads))["peak_rss_gb"]
                  for batch in args.batch_sizes}
        speed = child(_SPEED, str(args.images), str(args.rounds), json.dumps(args.batch_sizes), str(args.threads))
    print(f"# {platform.machine()}, {os.cpu_count()} cores, {args.threads or 'one per core'} threads, 32x32 images; "
          f"speed: best of {args.rounds} interleaved rounds of {args.images} images per batch size, one session; "
          f"memory: {args.memory_images} images per process")
    print("| batch | images/s | peak RSS (GB) |")
    print("|---|---|---|")
    for batch in args.batch_sizes:
        print(f"| {batch} | {speed[str(batch)]:.2f} | {memory[batch]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
