"""Images per second of fidkit's ONNX feature extractor against the same network in torch eager.

Both run in this one process on the same weights and the same uint8 batches:

* fidkit: :class:`fidkit.inception.FeatureExtractor` (onnxruntime; resize, normalization and
  network all inside the graph);
* baselines: :class:`fidkit.inception.network.FIDInceptionV3` in torch eager mode, with the
  resize done by ``torch.nn.functional.interpolate`` (bilinear) and the same normalization, fed
  in torch's default NCHW layout (as pytorch-fid does) and in channels-last layout.

The ratio printed is torch's seconds per image over fidkit's (> 1: fidkit is faster); each
figure is the best of a few interleaved rounds after a warm-up.

Inputs are batches of 299x299 images (no resize needed) and of 32x32 images (CIFAR-sized,
upscaled inside the graph). Random weights of the exact layout are used unless ``--weights`` is
given: speed does not depend on the values.

Run under the shared CPU lock so that two benchmarks never overlap::

    python3 benchmarks/bench_features.py
    python3 benchmarks/bench_features.py --device cuda --batch-sizes 50 100 200 500
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Multiply-adds of one 299x299 forward pass (convolutions; counted with forward hooks).
GMAC_PER_IMAGE = 5.711


def _images(n: int, side: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def _best_seconds_per_image(runs: dict, images: np.ndarray, rounds: int) -> dict[str, float]:
    """Best-of-`rounds` seconds per image for each runner, the runners interleaved.

    Interleaving and taking the best round keep a burst of load from another process (the
    development machine is shared) from landing on one side of a ratio only.
    """
    for run in runs.values():
        run(images)  # warm-up: allocator, kernels, (on GPU) cuDNN algorithm search
    best = {name: float("inf") for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run(images)
            best[name] = min(best[name], (time.perf_counter() - start) / len(images))
    return best


def _torch_runner(model, device: str, channels_last: bool):
    import torch
    import torch.nn.functional as F

    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float()
            if x.shape[-2:] != (299, 299):
                x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            # The layout decides which convolution kernels torch picks on CPU: NCHW (torch's
            # default, what pytorch-fid feeds) or channels-last (oneDNN's faster blocked path).
            x = ((x - 128.0) * 0.0078125).contiguous(memory_format=memory_format)
            out = model(x)
            if device != "cpu":
                torch.cuda.synchronize()
            return out.cpu().numpy()

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="weights file (default: random weights of the right layout)")
    parser.add_argument("--device", choices=["cpu", "cuda", "tensorrt"], default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[50])
    parser.add_argument("--sizes", type=int, nargs="+", default=[299, 32], help="input image sides")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per case, best taken (after one warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for both (default: all cores)")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch eager baselines")
    parser.add_argument("--peak-gflops", type=float, default=None,
                        help="the device's float32 peak, to print the fraction of it that fidkit reaches")
    args = parser.parse_args(argv)

    import torch

    from fidkit.inception import FeatureExtractor
    from fidkit.inception.network import build_network
    from fidkit.inception.runtime import _machine_threads
    from fidkit.inception.weights import load_state_dict, save_state_dict
    from fidkit.testing import random_state_dict

    threads = args.threads or _machine_threads()
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="fidkit-bench-") as tmp:
        os.environ.setdefault("FIDKIT_HOME", str(Path(tmp) / "home"))
        weights = args.weights
        if weights is None:
            weights = save_state_dict(random_state_dict(seed=0), Path(tmp) / "random.pth")
        t0 = time.perf_counter()
        extractor = FeatureExtractor(weights, device=args.device, batch_size=max(args.batch_sizes), threads=threads)
        setup_s = time.perf_counter() - t0
        torch_device = "cpu" if args.device == "cpu" else "cuda"
        baselines = {}
        if not args.no_torch:
            if torch_device == "cuda" and not torch.cuda.is_available():
                print("torch has no CUDA here: torch baseline skipped", file=sys.stderr)
            else:
                model = build_network(load_state_dict(weights)).to(torch_device)
                if torch_device == "cuda":
                    # Same precision as onnxruntime's use_tf32=0: a float32 baseline.
                    torch.backends.cuda.matmul.allow_tf32 = False
                    torch.backends.cudnn.allow_tf32 = False
                baselines["torch NCHW"] = _torch_runner(model, torch_device, channels_last=False)
                baselines["torch NHWC"] = _torch_runner(model, torch_device, channels_last=True)

        print(f"# bench_features: {platform.processor() or platform.machine()}, {threads} threads, "
              f"torch {torch.__version__}, onnxruntime provider {extractor.provider}")
        print(f"# graph ready in {setup_s:.1f} s (export on first use, then cached)")
        header = f"{'input':>9} {'batch':>5} {'fidkit img/s':>13} {'GFLOP/s':>8}"
        if args.peak_gflops:
            header += f" {'of peak':>7}"
        for name in baselines:
            header += f" {name + ' img/s':>17} {'ratio':>6}"
        print(header)
        for batch in args.batch_sizes:
            extractor.batch_size = batch
            for side in args.sizes:
                images = _images(batch, side, seed=side)
                seconds = _best_seconds_per_image({"fidkit": extractor, **baselines}, images, args.rounds)
                onnx_s = seconds.pop("fidkit")
                gflops = 2 * GMAC_PER_IMAGE / onnx_s
                line = f"{side:>4}x{side:<4} {batch:>5} {1 / onnx_s:>13.2f} {gflops:>8.0f}"
                if args.peak_gflops:
                    line += f" {gflops / args.peak_gflops:>7.1%}"
                for torch_s in seconds.values():
                    line += f" {1 / torch_s:>17.2f} {torch_s / onnx_s:>5.2f}x"
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
