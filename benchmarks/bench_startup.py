"""What a user waits for before and around the network: `fidkit --help`, and `fidkit compute` when both sides
are cached (with the ONNX graph on disk, and without it), against the same command computing both sides.

Each command runs in a fresh subprocess (as a user runs it), `--repeats` times, the uncached baseline too; the
median is printed with the ratio to the uncached run of the same command in the same run. Random weights of the exact layout (the real file
cannot be downloaded everywhere) and two small uint8 arrays.

    python3 benchmarks/bench_startup.py [--images 40] [--repeats 5] [--checkout PATH]

``--checkout PATH`` times the commands of another fidkit tree (e.g. an older commit checked out with
``git worktree add``), with the same inputs, for a before/after comparison.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def timed(command: list[str], env: dict[str, str], repeats: int, before=None) -> float:
    seconds = []
    for _ in range(repeats):
        if before is not None:
            before()
        started = time.perf_counter()
        # cwd: "python -m" puts the working folder first on sys.path, before PYTHONPATH's tree.
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       cwd=env["FIDKIT_HOME"] + "-cwd")
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40, help="images per side (default: 40)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command (default: 5)")
    parser.add_argument("--checkout", type=Path, default=REPO, help="the fidkit tree whose commands are timed")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fidkit-bench-startup-") as tmp:
        root = Path(tmp)
        env = {**os.environ, "FIDKIT_HOME": str(root / "home"), "PYTHONPATH": str(args.checkout.resolve())}
        (root / "home-cwd").mkdir()
        sys.path.insert(0, str(REPO))
        from fidkit.testing import random_weights_file

        weights = random_weights_file(root / "weights.pth")
        rng = np.random.default_rng(0)
        for name in ("a", "b"):
            np.save(root / f"{name}.npy", rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8))
        fidkit = [sys.executable, "-m", "fidkit"]
        compute = [*fidkit, "compute", str(root / "a.npy"), str(root / "b.npy"), "--weights", str(weights),
                   "--device", "cpu", "-q"]

        where = dict(env=env, check=True, capture_output=True, cwd=root / "home-cwd")
        subprocess.run(compute + ["--no-cache"], **where)  # exports the graph once
        uncached = timed(compute + ["--no-cache"], env, args.repeats)  # the baseline: as many runs as the others
        subprocess.run(compute, **where)  # fills the cache
        cached = timed(compute, env, args.repeats)
        graphs = root / "home" / "onnx"
        cached_no_graph = timed(compute, env, args.repeats, before=lambda: shutil.rmtree(graphs, ignore_errors=True))
        graph_rebuilt = graphs.exists() and any(graphs.glob("*.onnx"))
        helped = timed([*fidkit, "--help"], env, args.repeats)

    rows = [
        ("compute, both sides computed (--no-cache; the baseline)", uncached),
        ("compute, both sides cached", cached),
        ("compute, both sides cached, no ONNX graph on disk", cached_no_graph),
        ("fidkit --help", helped),
    ]
    print(f"fidkit tree: {args.checkout.resolve()}")
    print(f"| command ({args.images} images per side, median of {args.repeats}) | seconds | vs the baseline |")
    print("|---|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} | {uncached / seconds:.1f}x faster |")
    print(f"\nthe cached run without a graph on disk exported one: {graph_rebuilt}")


if __name__ == "__main__":
    main()
