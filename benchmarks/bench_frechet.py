"""Time fidkit's Fréchet distance against the sqrtm and eigvals routes, in one process, on 2048-d statistics.

Usage (from the repository root; the lock keeps two benchmarks from sharing the cores)::

    python3 benchmarks/bench_frechet.py [--dim 2048] [--repeats 3]

Baselines, as other FID packages compute ``tr sqrt(sigma_a sigma_b)``:

* ``scipy sqrtm``: ``np.trace(scipy.linalg.sqrtm(S1 @ S2)).real`` (TTUR, pytorch-fid, clean-fid);
* ``eigvals``: ``sum(sqrt(clip(real(np.linalg.eigvals(S1 @ S2)), 0)))`` (torchmetrics, torch-fidelity).

Features are synthetic but realistic in the way that matters numerically: a power-law spectrum (like pooled
CNN features) rotated by a random orthogonal matrix, so the covariances are dense and ill-conditioned. The
reference for every error column is the exact identity ``tr sqrt(S1 S2) = ||Xc Yc^T||_* / sqrt((n-1)(m-1))``
computed from the features with an SVD (accurate on the square-root scale).

Cases: a fresh pair of full-rank statistics (N >= dim on both sides), the same with the reference's factor
already cached (FID during training against one reference), and one side with N < dim.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy
import scipy.linalg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fidkit.errors import SmallSampleWarning  # noqa: E402
from fidkit.frechet import fid_from_arrays, fid_from_stats, frechet_distance  # noqa: E402
from fidkit.frechet.factors import sqrt_factor
from fidkit.stats import Stats  # noqa: E402


def make_features(rng: np.random.Generator, rotation: np.ndarray, n_rows: int, shift: float) -> np.ndarray:
    dim = rotation.shape[0]
    spectrum = np.arange(1, dim + 1, dtype=np.float64) ** -1.0  # variances decay like 1/k^2
    latent = rng.standard_normal((n_rows, dim)) * spectrum
    return (latent @ rotation + shift).astype(np.float32)


def exact_trace_sqrt(features_a: np.ndarray, features_b: np.ndarray) -> float:
    rows_a, rows_b = features_a.astype(np.float64), features_b.astype(np.float64)
    centred_a, centred_b = rows_a - rows_a.mean(axis=0), rows_b - rows_b.mean(axis=0)
    singular_values = scipy.linalg.svdvals(centred_a @ centred_b.T)
    return float(singular_values.sum() / math.sqrt((len(rows_a) - 1) * (len(rows_b) - 1)))


def trace_sqrt_sqrtm(sigma_a: np.ndarray, sigma_b: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(np.trace(scipy.linalg.sqrtm(sigma_a @ sigma_b)).real)


def trace_sqrt_eigvals(sigma_a: np.ndarray, sigma_b: np.ndarray) -> float:
    eigenvalues = np.linalg.eigvals(sigma_a @ sigma_b)
    return float(np.sum(np.sqrt(np.clip(eigenvalues.real, 0.0, None))))


def best_time(function: Callable[[], float], repeats: int) -> tuple[float, float, float]:
    """(best wall seconds, CPU seconds of that run, value of the last call).

    CPU seconds (all threads of this process) are printed beside wall time because the development machine
    is shared: other processes stretch wall time, CPU time much less so.
    """
    best_wall, best_cpu, value = math.inf, math.inf, math.nan
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        value = function()
        wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
        if wall < best_wall:
            best_wall, best_cpu = wall, cpu
    return best_wall, best_cpu, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--n-full", type=int, default=4096, help="samples per full-rank side (>= dim)")
    parser.add_argument("--n-small", type=int, default=500, help="samples on the N < dim side")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the fidkit routes (baselines run once)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", SmallSampleWarning)

    dim = args.dim
    rng = np.random.default_rng(2015)
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    reference_features = make_features(rng, rotation, args.n_full, 0.0)
    generated_features = make_features(rng, rotation, args.n_full, 0.002)
    small_features = make_features(rng, rotation, args.n_small, 0.002)

    reference = Stats.from_features(reference_features)
    generated = Stats.from_features(generated_features)
    small = Stats.from_features(small_features)
    exact_full = exact_trace_sqrt(generated_features, reference_features)
    exact_small = exact_trace_sqrt(small_features, reference_features)

    print(f"# bench_frechet: dim {dim}, full-rank N = {args.n_full}, small N = {args.n_small}")
    print(
        f"# python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"{os.cpu_count()} CPUs, no GPU"
    )
    rows: list[tuple[str, str, float, float, float]] = []

    def record(case: str, route: str, timing: tuple[float, float, float], exact: float) -> None:
        seconds, cpu_seconds, trace_sqrt = timing
        rows.append((case, route, seconds, cpu_seconds, abs(trace_sqrt - exact) / exact))
        print(
            f"  {case:<22} {route:<40} {seconds:8.3f} s wall {cpu_seconds:8.3f} s CPU  rel err {rows[-1][4]:.1e}",
            flush=True,
        )

    # -- fresh pair: only mu and sigma at hand, nothing cached
    case = "fresh pair"
    timing = best_time(lambda: trace_sqrt_sqrtm(generated.sigma, reference.sigma), 1)
    record(case, "scipy sqrtm(S1 @ S2)", timing, exact_full)
    timing = best_time(lambda: trace_sqrt_eigvals(generated.sigma, reference.sigma), 1)
    record(case, "np.linalg.eigvals(S1 @ S2)", timing, exact_full)
    timing = best_time(
        lambda: frechet_distance(generated.mu, generated.sigma, reference.mu, reference.sigma).trace_sqrt,
        args.repeats,
    )
    record(case, "fidkit auto (pivoted Cholesky + eigh)", timing, exact_full)
    timing = best_time(
        lambda: frechet_distance(
            generated.mu, generated.sigma, reference.mu, reference.sigma, method="eigh"
        ).trace_sqrt,
        args.repeats,
    )
    record(case, "fidkit method=eigh (dense)", timing, exact_full)

    # -- cached reference: the reference's factor is computed once, each new generated set is fresh
    case = "cached reference"
    sqrt_factor(reference)

    def cached() -> float:
        fresh_generated = Stats(generated.mu, generated.sigma, n=generated.n)  # no factor of its own
        return fid_from_stats(fresh_generated, reference).trace_sqrt

    timing = best_time(cached, args.repeats)
    record(case, "fidkit auto (reference factor cached)", timing, exact_full)

    # -- one side with N < dim
    case = f"N = {args.n_small} < dim"
    timing = best_time(lambda: trace_sqrt_sqrtm(small.sigma, reference.sigma), 1)
    record(case, "scipy sqrtm(S1 @ S2)", timing, exact_small)
    timing = best_time(lambda: trace_sqrt_eigvals(small.sigma, reference.sigma), 1)
    record(case, "np.linalg.eigvals(S1 @ S2)", timing, exact_small)
    timing = best_time(
        lambda: fid_from_stats(Stats.from_features(small_features), reference).trace_sqrt, args.repeats
    )
    record(case, "fidkit features -> Stats, ref cached", timing, exact_small)
    timing = best_time(lambda: fid_from_stats(small, reference).trace_sqrt, args.repeats)
    record(case, "fidkit stats file (factor stored)", timing, exact_small)
    timing = best_time(
        lambda: fid_from_arrays(small_features, reference_features).trace_sqrt, args.repeats
    )
    record(case, "fidkit fid_from_arrays (both features)", timing, exact_small)
    # A TTUR/pytorch-fid file holds no n and no factor: a fresh object each time, so the factor is recomputed.
    timing = best_time(
        lambda: fid_from_stats(Stats(small.mu, small.sigma), reference).trace_sqrt, args.repeats
    )
    record(case, "fidkit foreign file (mu, sigma only)", timing, exact_small)

    # -- summary table with ratios against the sqrtm baseline of each case
    print()
    print("| case | route | wall s | speed-up vs sqrtm | CPU s | CPU speed-up | rel. error of tr sqrt |")
    print("|---|---|---:|---:|---:|---:|---:|")
    baseline = {c: (s, cpu) for c, r, s, cpu, _ in rows if r.startswith("scipy sqrtm")}
    baseline["cached reference"] = baseline["fresh pair"]
    for case_name, route, seconds, cpu_seconds, error in rows:
        base_wall, base_cpu = baseline[case_name]
        print(
            f"| {case_name} | {route} | {seconds:.3f} | {base_wall / seconds:.1f}x | {cpu_seconds:.3f} | "
            f"{base_cpu / cpu_seconds:.1f}x | {error:.1e} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
