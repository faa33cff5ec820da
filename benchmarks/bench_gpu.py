"""One script that verifies and measures fidkit on a GPU machine, in under 8 minutes.

Run from the repository root::

    python3 benchmarks/bench_gpu.py --data DIR --out gpu.json     # DIR holds cifar10/cifar10-*-jpg.zip
    python3 benchmarks/bench_gpu.py --quick                         # smaller sizes, a first look

What it checks and measures, each step reported even when an earlier one failed:

1. setup: Python, numpy, torch (and its CUDA), onnxruntime (its device, its providers, which CUDA/cuDNN
   libraries load, and why CUDA cannot run when it cannot);
2. exactness: features of 200 images of mixed sizes on the CUDA provider against the CPU provider (max
   relative error) and the FID of two halves computed from each; the same for the torch engine;
3. network throughput in images/s at batch sizes 50 to 500: exact fp32 (CUDA provider), the fast mode
   (TensorRT FP16; its FID deviation from the exact mode printed beside its speed), torch eager and
   ``torch.compile`` on the same weights;
4. CIFAR-10 end to end: ``compute_fid`` of the 50,000 training JPEGs against the 10,000 test JPEGs, cold
   (fresh statistics cache) and cached, with where the time went (decode wait, network, distance);
5. the distance at dim 2048: the CPU factor route against the torch float64 route on the GPU.

It prints a markdown table and writes a JSON (``--out``). Without the released weights it makes random
weights of the exact layout (same graph, same arithmetic, same speed; FID values are then meaningless but
CPU-vs-GPU differences are not). On a machine without a GPU it says so, runs the CPU-side checks on small
sizes, and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

RESULTS: dict[str, Any] = {}
ROWS: list[tuple[str, str, str]] = []


def _row(check: str, value: str, note: str = "") -> None:
    ROWS.append((check, value, note))
    print(f"  {check}: {value}{'  (' + note + ')' if note else ''}", flush=True)


def _step(name: str, function: Callable[[], Any]) -> Any:
    """Run one step; a failure is recorded and printed, and the next step still runs."""
    print(f"\n== {name}", flush=True)
    started = time.perf_counter()
    try:
        result = function()
    except Exception as exc:  # noqa: BLE001 - the script reports every failure and goes on
        RESULTS.setdefault("failures", {})[name] = f"{type(exc).__name__}: {exc}"
        _row(name, "FAILED", f"{type(exc).__name__}: {str(exc)[:200]}")
        traceback.print_exc(limit=3)
        return None
    RESULTS.setdefault("step_seconds", {})[name] = round(time.perf_counter() - started, 2)
    return result


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="Inception weights .pth (default: random, exact layout)")
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data",
                        help="folder with cifar10/cifar10-train-jpg.zip and cifar10-test-jpg.zip")
    parser.add_argument("--out", type=Path, default=Path("bench_gpu.json"), help="the JSON written")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a first look, or a CPU machine)")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: fidkit's)")
    return parser.parse_args()


# ------------------------------------------------------------------------------------------------ steps


def setup_report() -> dict[str, Any]:
    import onnxruntime as ort

    from fidkit.inception.providers import (
        Device,
        gpu_driver_present,
        preload_gpu_libraries,
        why_no_gpu,
    )

    preload_gpu_libraries(ort)
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "onnxruntime_device": ort.get_device(),
        "providers": ort.get_available_providers(),
        "gpu_driver": gpu_driver_present(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = bool(torch.cuda.is_available())
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["torch_cuda_version"] = torch.version.cuda
    except ImportError:
        info["torch"] = None
        info["torch_cuda"] = False
    cuda_ready = "CUDAExecutionProvider" in info["providers"] and info["gpu_driver"]
    info["cuda_problem"] = None if cuda_ready else why_no_gpu(ort, Device("cuda"))
    for key, value in info.items():
        _row(key, str(value))
    return info


def make_weights(args: argparse.Namespace, home: Path) -> tuple[Any, str]:
    if args.weights:
        return args.weights, "given weights"
    from fidkit.inception.weights import save_state_dict
    from fidkit.testing import random_state_dict

    path = home / "random-inception.pth"
    save_state_dict(random_state_dict(seed=0), path, legacy=True)
    return path, "random weights of the exact layout"


def mixed_images(n_images: int, seed: int = 0) -> list[np.ndarray]:
    """Batches of one size each, sizes from 32 to 512 (the resize runs in the graph)."""
    rng = np.random.default_rng(seed)
    sizes = [(32, 32), (64, 48), (128, 128), (299, 299), (300, 400), (512, 384)]
    per_size = -(-n_images // len(sizes))
    batches = []
    for height, width in sizes:
        # Smooth images (a random low-resolution pattern, upsampled) rather than noise: closer to photos.
        low = rng.integers(0, 256, (per_size, 8, 8, 3), dtype=np.uint8)
        batch = np.repeat(np.repeat(low, -(-height // 8), axis=1), -(-width // 8), axis=2)[:, :height, :width]
        batches.append(np.ascontiguousarray(batch))
    return batches


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))


def exactness(weights: Any, n_images: int, gpu: bool) -> dict[str, Any]:
    from fidkit import fid_from_arrays
    from fidkit.inception import FeatureExtractor

    batches = mixed_images(n_images)
    cpu = FeatureExtractor(weights, device="cpu", batch_size=50)
    reference = np.concatenate([cpu(batch) for batch in batches])
    half = len(reference) // 2
    fid_cpu = float(fid_from_arrays(reference[:half], reference[half:]))
    out: dict[str, Any] = {"n_images": len(reference), "fid_cpu": fid_cpu}
    candidates: list[tuple[str, Callable[[], Any]]] = []
    if gpu:
        candidates.append(("onnxruntime-cuda", lambda: FeatureExtractor(weights, device="cuda", batch_size=50)))
    try:
        from fidkit.inception.torch_engine import TorchFeatureExtractor

        candidates.append(("torch-" + ("cuda" if gpu else "cpu"),
                           lambda: TorchFeatureExtractor(weights, device="cuda" if gpu else "cpu", batch_size=50)))
    except ImportError:
        pass
    for label, build in candidates:
        extractor = build()
        features = np.concatenate([extractor(batch) for batch in batches])
        error = relative_error(features, reference)
        fid = float(fid_from_arrays(features[:half], features[half:]))
        fid_error = abs(fid - fid_cpu) / max(abs(fid_cpu), 1e-30)
        out[label] = {"provider": extractor.provider, "max_relative_error": error, "fid": fid,
                      "fid_relative_error": fid_error}
        _row(f"features {label} vs CPU provider", f"{error:.2e}", f"{len(reference)} images, mixed sizes; target 1e-5")
        _row(f"FID {label} vs CPU provider", f"{fid_error:.2e}", "relative; target 1e-6")
    return out


def _images_per_second(extractor: Any, images: np.ndarray, repeats: int) -> float:
    extractor(images[: extractor.batch_size])  # warm-up: plans, engines, buffers
    started = time.perf_counter()
    for _ in range(repeats):
        extractor(images)
    return repeats * len(images) / (time.perf_counter() - started)


def throughput(weights: Any, gpu: bool, quick: bool) -> dict[str, Any]:
    from fidkit.inception import FeatureExtractor

    batch_sizes = (50,) if not gpu else ((50, 200) if quick else (50, 100, 200, 500))
    n_images = 100 if not gpu else (1000 if quick else 2000)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n_images, 32, 32, 3), dtype=np.uint8)  # CIFAR-sized, resized in the graph
    results: dict[str, Any] = {"n_images": n_images, "image_size": "32x32 (resized to 299 in the graph)"}
    exact_features = None
    configurations: list[tuple[str, Callable[[int], Any]]] = [
        ("onnxruntime exact fp32", lambda b: FeatureExtractor(weights, device="cuda" if gpu else "cpu", batch_size=b)),
    ]
    if gpu:
        configurations.append(("onnxruntime fast (TensorRT fp16)",
                               lambda b: FeatureExtractor(weights, device="tensorrt", batch_size=b, precision="fast")))
    try:
        from fidkit.inception.torch_engine import TorchFeatureExtractor

        configurations.append(("torch eager fp32",
                               lambda b: TorchFeatureExtractor(weights, device="cuda" if gpu else "cpu", batch_size=b)))
        if gpu:
            configurations.append(("torch.compile fp32",
                                   lambda b: TorchFeatureExtractor(weights, device="cuda", batch_size=b, compile=True)))
    except ImportError:
        pass
    for label, build in configurations:
        for batch_size in batch_sizes:
            try:
                extractor = build(batch_size)
                rate = _images_per_second(extractor, images, repeats=1 if not gpu else 3)
            except Exception as exc:  # noqa: BLE001 - a configuration that does not run is a finding
                results[f"{label} @ {batch_size}"] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
                _row(f"{label}, batch {batch_size}", "failed", f"{type(exc).__name__}: {str(exc)[:120]}")
                break
            results[f"{label} @ {batch_size}"] = rate
            note = ""
            if label.startswith("onnxruntime exact") and batch_size == batch_sizes[-1]:
                exact_features = extractor(images[:500])
            if "fast" in label and exact_features is not None:
                from fidkit import fid_from_arrays

                fast_features = extractor(images[:500])
                fid_exact = float(fid_from_arrays(exact_features[:250], exact_features[250:]))
                fid_fast = float(fid_from_arrays(fast_features[:250], fast_features[250:]))
                deviation = abs(fid_fast - fid_exact) / max(abs(fid_exact), 1e-30)
                results[f"{label} fid_deviation"] = deviation
                note = f"FID deviation from exact {deviation:.2e}"
            _row(f"{label}, batch {batch_size}", f"{rate:,.0f} images/s", note)
    return results


def end_to_end(weights: Any, data: Path, gpu: bool, quick: bool, workers: int | None, home: Path) -> dict[str, Any]:
    from fidkit.api import compute_fid
    from fidkit.inception import FeatureExtractor

    train_zip = data / "cifar10" / "cifar10-train-jpg.zip"
    test_zip = data / "cifar10" / "cifar10-test-jpg.zip"
    if not (train_zip.is_file() and test_zip.is_file()):
        raise FileNotFoundError(f"{train_zip} / {test_zip} missing: pass --data")
    limit = None if gpu and not quick else (2000 if gpu else 100)
    os.environ["FIDKIT_HOME"] = str(home / "e2e-home")  # a fresh statistics cache: the first run is cold
    extractor = FeatureExtractor(weights, device="cuda" if gpu else "cpu", batch_size=500 if gpu else 50)
    runs = {}
    for label in ("cold", "cached"):
        started = time.perf_counter()
        report = compute_fid(train_zip, test_zip, extractor=extractor, limit=limit, workers=workers, progress=False)
        seconds = time.perf_counter() - started
        n_total = (report.a.n or 0) + (report.b.n or 0)
        runs[label] = {
            "seconds": seconds, "n_images": n_total, "cached": [report.a.cached, report.b.cached],
            "decode_wait_seconds": report.timings.decode_seconds,
            "network_seconds": report.timings.network_seconds,
            "distance_seconds": report.timings.distance_seconds, "fid": report.value,
        }
        _row(f"CIFAR-10 end to end, {label}", f"{seconds:.2f} s",
             f"{n_total} images; decode wait {report.timings.decode_seconds:.2f} s, network "
             f"{report.timings.network_seconds:.2f} s, distance {report.timings.distance_seconds:.3f} s"
             + ("; target cold <= 15 s exact, cached <= 1 s" if gpu and limit is None else ""))
    return runs


def distance(gpu: bool, quick: bool) -> dict[str, Any]:
    import fidkit.frechet.distance as frechet_distance
    from fidkit import Stats, fid_from_stats

    dim = 2048
    rng = np.random.default_rng(2)
    results: dict[str, Any] = {}
    # Covariances with a decaying spectrum, as Inception features have; the reference's factor is computed
    # once (the training-loop case), so the timing is of the comparison itself.
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    spectrum = np.geomspace(10.0, 1e-6, dim)
    sigma_ref = (basis * spectrum) @ basis.T
    sigma_gen = (basis * (spectrum * rng.uniform(0.8, 1.2, dim))) @ basis.T
    reference = Stats(mu=np.zeros(dim), sigma=(sigma_ref + sigma_ref.T) / 2, n=50_000)
    generated = Stats(mu=np.full(dim, 0.01), sigma=(sigma_gen + sigma_gen.T) / 2, n=10_000)

    def timed(min_rank: int) -> tuple[float, Any]:
        saved = frechet_distance._TORCH_SOLVER_MIN_RANK
        frechet_distance._TORCH_SOLVER_MIN_RANK = min_rank
        try:
            fid_from_stats(generated, reference)  # factors the reference once; warms CUDA up
            started = time.perf_counter()
            result = fid_from_stats(Stats(mu=generated.mu, sigma=generated.sigma, n=generated.n), reference)
            return time.perf_counter() - started, result
        finally:
            frechet_distance._TORCH_SOLVER_MIN_RANK = saved

    cpu_seconds, cpu = timed(10**9)  # scipy's solver, whatever the machine
    results["cpu"] = {"seconds": cpu_seconds, "fid": cpu.value, "solver": cpu.solver}
    _row("distance, CPU (scipy) factor-eigh, reference factored", f"{cpu_seconds:.3f} s", cpu.method)
    auto_seconds, auto = timed(frechet_distance._TORCH_SOLVER_MIN_RANK)
    agreement = abs(auto.value - cpu.value) / cpu.value
    results["auto"] = {"seconds": auto_seconds, "solver": auto.solver, "fid_relative_difference": agreement}
    _row(f"distance, auto ({auto.solver})", f"{auto_seconds:.3f} s",
         f"FID differs from the CPU solver by {agreement:.1e} relative; {cpu_seconds / auto_seconds:.1f}x")
    return results


def main() -> int:
    args = _parse_args()
    warnings.simplefilter("ignore")  # lossy JPEG and small-sample warnings are expected here
    home = Path(tempfile.mkdtemp(prefix="fidkit-bench-gpu-"))
    os.environ["FIDKIT_HOME"] = str(home)
    started = time.perf_counter()
    try:
        info = _step("setup", setup_report) or {}
        RESULTS["setup"] = info
        gpu = bool(info) and info.get("cuda_problem") is None
        if not gpu:
            print("\nNo usable GPU here: running the CPU-side checks on small sizes only.", flush=True)
        weights, weights_note = make_weights(args, home)
        RESULTS["weights"] = weights_note
        quick = args.quick or not gpu
        RESULTS["exactness"] = _step("exactness", lambda: exactness(weights, 60 if not gpu else 200, gpu))
        RESULTS["throughput"] = _step("throughput", lambda: throughput(weights, gpu, quick))
        RESULTS["end_to_end"] = _step(
            "end to end", lambda: end_to_end(weights, args.data, gpu, quick, args.workers, home)
        )
        RESULTS["distance"] = _step("distance", lambda: distance(gpu, quick))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    RESULTS["total_seconds"] = round(time.perf_counter() - started, 1)
    print("\n| check | result | note |\n|---|---|---|")
    for check, value, note in ROWS:
        print(f"| {check} | {value} | {note} |")
    args.out.write_text(json.dumps(RESULTS, indent=2, default=str))
    print(f"\nwritten {args.out} ({RESULTS['total_seconds']} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
