"""The cost of ``fidkit.FID.compute()`` in a training loop, against torchmetrics' FrechetInceptionDistance.

Both metrics are fed the same features (no network: that cost is the same graph for both and is measured by
``bench_features.py``): ``N`` generated features against one reference of ``N_REF`` features, dim 2048,
drawn with a decaying spectrum like Inception pool_3 features (non-negative mean, eigenvalues falling as a
power law). fidkit gets them through ``FID._update_features`` (what ``update`` does after the network);
torchmetrics through its own ``update`` with an identity "network" (``feature=`` a module), so its one-pass
float64 sums and its ``compute()`` (means and covariances from the sums, then ``eigvals(sigma1 @ sigma2)``)
run exactly as in training.

Timed: ``compute()`` after the generated side changed (fidkit's first call also factors the reference, once
per reference; later calls reuse it). Accuracy: both against an independent float64 route on the two-pass
statistics of the same features (eigh of the reference covariance, its square root applied to the other
covariance, eigvalsh of the product).

Usage::

    PYTHONPATH=$PWD python3 benchmarks/bench_training.py [--n 10000] [--n-ref 10000] [--repeats 3]

Needs ``pip install torchmetrics`` (the benchmark only; fidkit does not use it).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np


def realistic_features(n: int, dim: int, seed: int, rotation: np.ndarray, shift: float) -> np.ndarray:
    """Features with a power-law covariance spectrum (like pool_3's) around a non-negative mean, float32."""
    rng = np.random.default_rng(seed)
    scales = 0.8 * np.arange(1, dim + 1) ** -0.75
    latent = rng.standard_normal((n, dim)) * scales
    mean = 0.35 + 0.1 * np.abs(np.sin(np.arange(dim) * 0.37)) + shift
    return (latent @ rotation.T + mean).astype(np.float32)


def exact_fid(stats_a, stats_b) -> float:
    """Independent float64 route: sqrt(sigma_a) from eigh, then eigvalsh of sqrt(sigma_a) sigma_b sqrt(sigma_a)."""
    import scipy.linalg

    values, vectors = scipy.linalg.eigh(stats_a.sigma)
    root = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    product = root @ stats_b.sigma @ root
    product = (product + product.T) / 2
    eigenvalues = scipy.linalg.eigvalsh(product)
    trace_sqrt = float(np.sum(np.sqrt(np.clip(eigenvalues, 0, None))))
    difference = stats_a.mu - stats_b.mu
    return float(difference @ difference + np.trace(stats_a.sigma) + np.trace(stats_b.sigma) - 2 * trace_sqrt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="generated features")
    parser.add_argument("--n-ref", type=int, default=10_000, help="reference features")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import scipy.stats
    import torch

    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as error:  # torchmetrics' FID imports torch-fidelity, which needs torchvision
        raise SystemExit(f"bench_training.py compares against torchmetrics' FID, which cannot be imported here "
                         f"({error}); pip install torchmetrics torch-fidelity torchvision (torchvision pinned to "
                         "the installed torch's release)")

    import fidkit

    warnings.simplefilter("ignore")
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, torchmetrics {__import__('torchmetrics').__version__}, numpy "
          f"{np.__version__}, {threads} CPU threads; N = {args.n} generated vs {args.n_ref} reference, dim {args.dim}")

    rotation = scipy.stats.ortho_group.rvs(args.dim, random_state=0)
    reference_features = realistic_features(args.n_ref, args.dim, 1, rotation, 0.0)
    generated_features = realistic_features(args.n, args.dim, 2, rotation, 0.02)
    reference = fidkit.Stats.from_features(reference_features)
    exact = exact_fid(reference, fidkit.Stats.from_features(generated_features))

    class Identity(torch.nn.Module):
        num_features = args.dim

        def forward(self, x):
            return x

    # torchmetrics: the reference fed once (reset_real_features=False keeps it), the generated side per round.
    tm = FrechetInceptionDistance(feature=Identity(), reset_real_features=False)
    for start in range(0, args.n_ref, 500):
        tm.update(torch.from_numpy(reference_features[start : start + 500]), real=True)

    fidkit_times, tm_times = [], []
    fidkit_value = tm_value = float("nan")
    for repeat in range(args.repeats + 1):  # round 0: fidkit factors the reference (once per reference)
        metric = fidkit.FID(reference=reference)
        for start in range(0, args.n, 500):
            metric._update_features(generated_features[start : start + 500])
        started = time.perf_counter()
        fidkit_value = float(metric.compute())
        fidkit_times.append(time.perf_counter() - started)

        tm.reset()
        for start in range(0, args.n, 500):
            tm.update(torch.from_numpy(generated_features[start : start + 500]), real=False)
        started = time.perf_counter()
        tm_value = float(tm.compute())
        tm_times.append(time.perf_counter() - started)

    fidkit_first, fidkit_steady = fidkit_times[0], float(np.median(fidkit_times[1:]))
    tm_steady = float(np.median(tm_times))
    print(f"exact FID (float64 eigh route, two-pass statistics): {exact:.10f}")
    print(f"fidkit.FID.compute():        {fidkit_steady:7.3f} s per call (first call, factoring the reference: "
          f"{fidkit_first:.3f} s); FID {fidkit_value:.10f}, relative error {abs(fidkit_value - exact) / exact:.2e}")
    print(f"torchmetrics FID.compute():  {tm_steady:7.3f} s per call; FID {tm_value:.10f}, relative error "
          f"{abs(tm_value - exact) / exact:.2e}")
    print(f"speed-up: {tm_steady / fidkit_steady:.1f}x per compute() (first call: {tm_times[0] / fidkit_first:.1f}x)")


if __name__ == "__main__":
    main()
