"""Does the FID alone pay for the other outputs of the graph (logits, spatial features, the --dims means)?

The version-2 graph declares every output of the network; a run fetches only what it needs. This compares, in
the same run and on the same images, the graph as fidkit builds it against the same graph with every output but
``features`` removed (onnxruntime then drops the nodes only they used: the version-1 graph's computation), on
the CPU provider:

- images/s fetching ``features`` only (what ``fidkit compute A B`` does) from each graph, and the ratio;
- images/s fetching every output (what ``--metrics all`` does);
- that the features are bitwise the same from both graphs.

Random weights of the exact layout (the released file cannot be downloaded everywhere), CIFAR-sized random
images; rounds alternate between the graphs so that load on the machine hits both alike.

    python3 benchmarks/bench_outputs.py [--images 200] [--rounds 5] [--batch-size 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def images_per_second(session, feeds: dict, outputs: list[str], n_images: int, batch_size: int) -> float:
    started = time.perf_counter()
    for start in range(0, n_images, batch_size):
        session.run(outputs, {name: value[start:start + batch_size] if name == "images" else value
                              for name, value in feeds.items()})
    return n_images / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="images per timed round (default: 200)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per configuration (default: 5)")
    parser.add_argument("--batch-size", type=int, default=50, help="images per run (default: 50)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fidkit-bench-outputs-") as tmp:
        os.environ["FIDKIT_HOME"] = str(Path(tmp) / "home")
        sys.path.insert(0, str(REPO))
        import onnx
        import onnxruntime as ort

        from fidkit.inception import FeatureExtractor
        from fidkit.testing import random_weights_file

        weights = random_weights_file(Path(tmp) / "weights.pth")
        extractor = FeatureExtractor(weights, device="cpu")  # exports the graph fidkit runs
        full = onnx.load(str(extractor.graph_path))
        pruned = onnx.load(str(extractor.graph_path))
        keep = [output for output in pruned.graph.output if output.name == "features"]
        del pruned.graph.output[:]
        pruned.graph.output.extend(keep)
        pruned_path = Path(tmp) / "features-only.onnx"
        onnx.save(pruned, str(pruned_path))

        options = ort.SessionOptions()
        options.intra_op_num_threads = extractor.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sessions = {
            "every output declared (fidkit)": ort.InferenceSession(
                str(extractor.graph_path), options, providers=["CPUExecutionProvider"]),
            "features only (pruned)": ort.InferenceSession(str(pruned_path), options, providers=["CPUExecutionProvider"]),
        }
        images = np.random.default_rng(0).integers(0, 256, size=(args.images, 32, 32, 3), dtype=np.uint8)
        feeds = {"images": images}
        features = {name: session.run(["features"], {"images": images[:8]})[0] for name, session in sessions.items()}
        first, second = features.values()
        print(f"features bitwise equal from both graphs: {np.array_equal(first, second)}")
        everything = [output.name for output in full.graph.output]

        runs: dict[str, list[float]] = {}
        for session in sessions.values():  # warm-up: first runs allocate
            session.run(["features"], {"images": images[: args.batch_size]})
        for _ in range(args.rounds):
            for name, session in sessions.items():
                runs.setdefault(f"{name}, fetch features", []).append(
                    images_per_second(session, feeds, ["features"], args.images, args.batch_size))
            runs.setdefault("every output declared (fidkit), fetch all", []).append(
                images_per_second(sessions["every output declared (fidkit)"], feeds, everything, args.images,
                                  args.batch_size))
        baseline = statistics.median(runs["features only (pruned), fetch features"])
        print(f"\n{args.images} images of 32x32 per round, batch {args.batch_size}, {args.rounds} rounds, "
              f"{extractor.threads} threads, median images/s\n")
        print("| graph, fetched | images/s | vs features-only graph |")
        print("|---|---:|---:|")
        for name, rates in runs.items():
            rate = statistics.median(rates)
            print(f"| {name} | {rate:.1f} | {rate / baseline:.3f}x |")


if __name__ == "__main__":
    main()
