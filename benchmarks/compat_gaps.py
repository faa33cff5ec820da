"""How far apart the tools' FIDs are for the same images: the FID under each convention, on real CIFAR-10.

Three sets of real CIFAR-10 images from the lossless arrays of ``shared/data/cifar10`` (32x32, upscaled to 299x299
by each convention's resize): the first ``--n`` training images, the first ``--n`` test images, and those test images
through JPEG at quality 75 (Pillow, 4:2:0). Three FIDs: train vs test (two real samples, near the sampling floor),
test vs its JPEG copy (the same images, mildly degraded) and train vs the JPEG copy (both). Each is computed under
every preprocessing convention of :mod:`fidkit.inception.conventions` (``tf``, ``pytorch-fid``, ``clean``,
``torchmetrics``) with the same weights, the same images and the same Fréchet distance: only the resize and
normalization differ. Printed: a markdown table of the FIDs, and one of the pairwise gaps between conventions
(absolute and relative); the numbers are written as JSON to ``--json`` (default ``compat_gaps.json`` in the working
directory).

Weights: the released Inception weights cannot be downloaded here, so by default random weights of the exact layout
(:func:`fidkit.testing.random_state_dict`, seed 0) are used, and the tables say so. Such gaps still measure how much
each resize changes the features of real images, but not the released network's sensitivity to that change: the
numbers to quote for the published FIDs need ``--weights`` pointing at the real file (then no caveat is printed).
With random weights the ONNX graphs are exported into a temporary ``FIDKIT_HOME`` and removed afterwards.

Usage (from the repository root; the four graphs are exported once each, tens of seconds, then ``4 * 3 * n`` images
through the network: about 16 images per second on two idle CPU cores, 4 on busy ones)::

    python3 benchmarks/compat_gaps.py --n 1000 --json compat_gaps.json   # random weights, CPU
    python3 benchmarks/compat_gaps.py --n 1000 --device cuda --weights ~/pt_inception-2015-12-05-6726825d.pth \\
        --json gaps.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from itertools import combinations
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: The lossless CIFAR-10 arrays (shared/data/README.md) and how many images each holds.
TRAIN_FILE = "cifar10/cifar10-train-0-3999-uint8.npy"
TEST_FILE = "cifar10/cifar10-test-0-999-uint8.npy"
MAX_N = 1000  # the test array's length: every set takes its first n images
#: The third set: the test images through JPEG at this quality (the lossy CIFAR-10 zips are about this).
JPEG_QUALITY = 75


def _default_data() -> Path:
    configured = os.environ.get("FIDKIT_TEST_DATA")
    return Path(configured).expanduser() if configured else ROOT.parent / "shared" / "data"


def _jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    """Each image through PIL's JPEG encoder (4:2:0, Pillow's default) and back: a mild, familiar degradation."""
    from PIL import Image

    out = np.empty_like(images)
    for index, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        out[index] = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return out


def _load(data: Path, n: int) -> dict[str, np.ndarray]:
    train = np.load(data / TRAIN_FILE, mmap_mode="r")
    test = np.load(data / TEST_FILE, mmap_mode="r")
    for name, array in ((TRAIN_FILE, train), (TEST_FILE, test)):
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1:] != (32, 32, 3) or len(array) < n:
            raise SystemExit(
                f"{data / name}: expected at least {n} uint8 32x32x3 images, got {array.dtype} {array.shape}"
            )
    test_n = np.ascontiguousarray(test[:n])
    return {
        "train": np.ascontiguousarray(train[:n]),
        "test": test_n,
        f"test JPEG q{JPEG_QUALITY}": _jpeg(test_n, JPEG_QUALITY),
    }


def _pairs(sets: dict[str, np.ndarray]) -> list[tuple[str, str]]:
    train, test, jpeg = sets
    return [(train, test), (test, jpeg), (train, jpeg)]


def _fids(sets: dict[str, np.ndarray], weights: Path, device: str, engine: str) -> dict[str, dict]:
    """For each convention: the statistics of every set (one extractor), then the FID of every pair."""
    import fidkit
    from fidkit.frechet import fid_from_stats
    from fidkit.inception.conventions import CONVENTIONS, convention

    results: dict[str, dict] = {}
    for name in CONVENTIONS:
        started = time.perf_counter()
        with warnings.catch_warnings():
            # N below 2048 per side (the table says N), and the random weights (the table says so): not repeated.
            warnings.simplefilter("ignore", fidkit.SmallSampleWarning)
            warnings.simplefilter("ignore", fidkit.FidkitWarning)
            stats = {
                label: fidkit.compute_stats(
                    images, weights=weights, convention=name, device=device, engine=engine, use_cache=False,
                    progress=False,
                )
                for label, images in sets.items()
            }
            fids = {f"{a} vs {b}": float(fid_from_stats(stats[a], stats[b]).value) for a, b in _pairs(sets)}
        seconds = time.perf_counter() - started
        results[name] = {
            "fid": fids,
            "resize_mode": convention(name).resize_mode,
            "tool": convention(name).tool,
            "seconds": seconds,
        }
        print(f"{name}: {fids} ({seconds:.0f} s)", file=sys.stderr, flush=True)
    return results


def _gaps(results: dict[str, dict]) -> list[dict]:
    rows = []
    for first, second in combinations(results, 2):
        for pair, fid_a in results[first]["fid"].items():
            fid_b = results[second]["fid"][pair]
            rows.append(
                {"a": first, "b": second, "pair": pair, "fid_a": fid_a, "fid_b": fid_b, "gap": fid_b - fid_a,
                 "relative": (fid_b - fid_a) / fid_a}
            )
    return rows


def _tables(results: dict[str, dict], gaps: list[dict], n: int, random_weights: bool, command: str) -> str:
    weights_note = (
        "random weights of the exact layout (fidkit.testing.random_state_dict, seed 0): the gaps measure how much "
        "each resize changes the features of real images, NOT the released network's sensitivity; do not quote them "
        "as the gaps between published FIDs"
        if random_weights
        else "the weights given with --weights"
    )
    pairs = list(results["tf"]["fid"])
    lines = [
        f"CIFAR-10, lossless 32x32: train = training images 0..{n - 1}, test = test images 0..{n - 1}, test JPEG q"
        f"{JPEG_QUALITY} = the same test images through JPEG; N = {n} images per set; {weights_note}.",
        f"Measured with `{command}`.",
        "",
        "| convention | resize | " + " | ".join(f"FID {pair}" for pair in pairs) + " |",
        "|---|---|" + "---:|" * len(pairs),
    ]
    for name, row in results.items():
        cells = []
        for pair in pairs:
            reference = results["tf"]["fid"][pair]
            fid = row["fid"][pair]
            cells.append(f"{fid:.4f}" if name == "tf" else f"{fid:.4f} ({(fid - reference) / reference:+.2%} vs tf)")
        lines.append(f"| `{name}` | {row['resize_mode']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| a | b | " + " | ".join(f"FID(b) − FID(a), {pair}" for pair in pairs) + " |",
        "|---|---|" + "---:|" * len(pairs),
    ]
    for first, second in combinations(results, 2):
        cells = []
        for pair in pairs:
            (row,) = [g for g in gaps if g["a"] == first and g["b"] == second and g["pair"] == pair]
            cells.append(f"{row['gap']:+.4f} ({row['relative']:+.2%})")
        lines.append(f"| `{first}` | `{second}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help=f"images per side, at most {MAX_N} (default 500)")
    parser.add_argument("--data", type=Path, default=_default_data(), help="the shared data folder (holds cifar10/)")
    parser.add_argument("--weights", type=Path, default=None, help="Inception weights (.pth); default: random weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--engine", default="auto", choices=["auto", "onnxruntime", "torch"])
    parser.add_argument("--json", type=Path, default=Path("compat_gaps.json"), help="where to write the numbers")
    args = parser.parse_args(argv)
    if not 2 <= args.n <= MAX_N:
        parser.error(f"--n must be between 2 and {MAX_N}")
    command = "python3 benchmarks/compat_gaps.py " + " ".join(argv if argv is not None else sys.argv[1:])
    sets = _load(args.data, args.n)

    with tempfile.TemporaryDirectory(prefix="fidkit-compat-gaps-") as scratch:
        random_weights = args.weights is None
        if random_weights:
            # Graphs of throw-away weights stay out of the user's cache.
            os.environ["FIDKIT_HOME"] = str(Path(scratch) / "home")
            from fidkit.inception.weights import save_state_dict
            from fidkit.testing import random_state_dict

            weights = Path(scratch) / "random-inception.pth"
            save_state_dict(random_state_dict(seed=0), weights, legacy=True)
        else:
            weights = args.weights
        started = time.perf_counter()
        results = _fids(sets, weights, args.device, args.engine)
        total = time.perf_counter() - started

    gaps = _gaps(results)
    print(_tables(results, gaps, args.n, random_weights, command.strip()))
    if args.json:
        payload = {
            "n": args.n,
            "sets": {
                "train": f"{TRAIN_FILE}[0:{args.n}]",
                "test": f"{TEST_FILE}[0:{args.n}]",
                f"test JPEG q{JPEG_QUALITY}": f"{TEST_FILE}[0:{args.n}] through Pillow JPEG, quality {JPEG_QUALITY}",
            },
            "weights": "random (fidkit.testing.random_state_dict, seed 0)" if random_weights else str(args.weights),
            "device": args.device,
            "engine": args.engine,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "seconds": total,
            "conventions": results,
            "gaps": gaps,
        }
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        os.replace(tmp, args.json)  # atomic: a reader never sees half a file
        print(f"numbers written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
