"""Time fidkit.metrics against torch-fidelity 0.4.0 on the same features, in one process; memory of the k-NN metrics.

Usage (from the repository root; nothing else heavy should run on the cores meanwhile)::

    pip install torch-fidelity==0.4.0 --no-deps prdc scikit-learn   # the baselines (torchvision is not needed)
    python3 benchmarks/bench_metrics.py [--n 10000] [--dim 2048] [--memory-n 20000] [--bootstrap-n 50000 10000]

Cases (features are synthetic, pool_3-like: non-negative, correlated, with a power-law spectrum; the real
Inception weights cannot be downloaded here, and the costs depend only on the sizes):

* KID, 100 subsets of 1000 (the defaults) between two sets of ``--n`` x dim: fidkit (float64 kernel sums) against
  ``kid_features_to_metric`` on float32 tensors (what torch-fidelity's extractor gives it, so its kernel runs in
  float32), and the difference between the two values;
* Inception Score of 50,000 x 1008 logits, 10 splits: fidkit against ``isc_features_to_metric``;
* precision and recall (k = 3) of ``--n`` against ``--n``: fidkit's exact blockwise float64 against torch-fidelity's
  ``calculate_precision_recall_full`` (float32 ``torch.cdist``), and fidkit's four numbers in one pass
  (``manifold_metrics``); the ``prdc`` package at a quarter of the size (it forms full matrices with scikit-learn);
* peak memory (``VmHWM`` of a child process) of ``precision_recall`` at ``--memory-n`` per side, against the
  child's resident memory after building the features;
* bootstrap of FID at ``--bootstrap-n`` rows x dim: seconds per resample of ``bootstrap_fid`` as it runs them
  (``workers`` resamples at a time in threads) against the same threads with LAPACK's two-stage eigensolver
  and against one at a time with BLAS's own threads; with float32 Grams
  (split into Grams and distance) and with float64, of the previous implementation, and of resampling the rows
  and calling ``fid_from_arrays``, all on the same ``--resamples`` draws; how far the float32 values are from
  the float64 ones; FID_infinity (15 points) at the same sizes (``--skip fid_infinity`` leaves it out). On a
  shared machine, ``OPENBLAS_NUM_THREADS=1`` gives steadier single-core seconds (multithreaded LAPACK slows down
  by up to 10x when other processes hold the cores).

Prints a markdown table per section: timings are seconds of one run each, wall-clock with the process's CPU
seconds (all threads) in parentheses; ratios likewise.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fidkit.frechet import fid_from_arrays, frechet_distance  # noqa: E402
from fidkit.metrics import (  # noqa: E402
    fid_infinity,
    inception_score,
    kid,
    manifold_metrics,
    precision_recall,
)

fidkit_resample = importlib.import_module("fidkit.metrics._fid_resample")


def load_torch_fidelity(name: str):
    """torch_fidelity.<name>, loaded as the tests load it (works without torchvision); None if not installed."""
    loader_path = ROOT / "tests" / "reference" / "torch_fidelity_loader.py"
    spec = importlib.util.spec_from_file_location("torch_fidelity_loader", loader_path)
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    try:
        return loader.torch_fidelity_module(name)
    except BaseException as exc:  # pytest.skip raises an Outcome, not an Exception
        print(f"torch-fidelity unavailable ({exc}); its columns are left empty", file=sys.stderr)
        return None


def pool3_like(seed: int, n_rows: int, dim: int, shift: float = 0.0) -> np.ndarray:
    """Non-negative float32 features with a power-law spectrum and dense correlations, built in chunks."""
    rng = np.random.default_rng(seed)
    mixing = np.linalg.qr(np.random.default_rng(12345).standard_normal((dim, dim)))[0].astype(np.float32)
    spectrum = (np.arange(1, dim + 1, dtype=np.float32) ** -0.5) * 2.0
    out = np.empty((n_rows, dim), dtype=np.float32)
    for start in range(0, n_rows, 8192):
        stop = min(start + 8192, n_rows)
        latent = rng.standard_normal((stop - start, dim), dtype=np.float32) * spectrum
        out[start:stop] = np.maximum(latent @ mixing + 0.5 + shift, 0.0)
    return out


class Seconds(float):
    """Wall-clock seconds that also carry the process's CPU seconds (all threads), printed as "wall (CPU)".

    On a shared machine wall time depends on the other load; CPU time much less so, and with the 2 BLAS threads
    of a quiet 2-core machine, wall time would be about CPU time / 2.
    """

    cpu: float = 0.0

    def __new__(cls, wall: float, cpu: float) -> "Seconds":
        value = super().__new__(cls, wall)
        value.cpu = cpu
        return value

    def __format__(self, spec: str) -> str:
        return f"{format(float(self), spec)} ({format(self.cpu, spec)})"


def timed(function, *args, pause: float = 0.0, **kwargs):
    """``(value, Seconds)`` of one call; `pause` seconds of sleep first, so that the idle BLAS threads of what ran
    before (numpy's and scipy's OpenBLAS each keep a pool, which spins a while after a call) do not compete."""
    time.sleep(pause)
    start, cpu = time.perf_counter(), time.process_time()
    value = function(*args, **kwargs)
    return value, Seconds(time.perf_counter() - start, time.process_time() - cpu)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ratio(ours: Seconds, theirs: Seconds | None) -> str:
    """Speed-up of fidkit over the baseline, in wall time and (CPU time)."""
    return "" if theirs is None else f"{theirs / ours:.2f}x ({theirs.cpu / ours.cpu:.2f}x)"


# --------------------------------------------------------------------------------------------- sections


def bench_kid(n: int, dim: int) -> list[str]:
    import torch

    a, b = pool3_like(1, n, dim, shift=0.02), pool3_like(2, n, dim)
    # Subsets of 1000 (both tools' default), or of every row below that: torch-fidelity refuses a larger subset.
    size = min(1000, n)
    ours, seconds = timed(kid, a, b, subset_size=size, sampling="torch-fidelity")
    generator, seconds_gen = timed(kid, a, b, subset_size=size)
    module = load_torch_fidelity("metric_kid")
    theirs, their_seconds, difference = None, None, ""
    if module is not None:
        theirs, their_seconds = timed(
            module.kid_features_to_metric, torch.from_numpy(a), torch.from_numpy(b), kid_subset_size=size,
            verbose=False,
        )
        value = theirs["kernel_inception_distance_mean"]
        difference = f"{abs(ours.mean - value) / abs(value):.1e}"
    return [
        f"KID, {n:,} vs {n:,} x {dim}, 100 x {size}",
        f"{seconds:.2f}",
        "" if their_seconds is None else f"{their_seconds:.2f}",
        ratio(seconds, their_seconds),
        f"{ours.mean:.6g} ± {ours.std:.3g} (generator draws: {generator.mean:.6g}, {seconds_gen:.2f} s)",
        difference,
    ]


def bench_is(n: int) -> list[str]:
    import torch

    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((n, 1008), dtype=np.float32) * 3.0)
    logits[np.arange(n), rng.integers(1, 1001, n)] += 12.0
    ours, seconds = timed(inception_score, logits, sampling="torch-fidelity")
    module = load_torch_fidelity("metric_isc")
    their_seconds, difference = None, ""
    if module is not None:
        theirs, their_seconds = timed(module.isc_features_to_metric, torch.from_numpy(logits))
        value = theirs["inception_score_mean"]
        difference = f"{abs(ours.mean - value) / value:.1e}"
    return [
        f"Inception Score, {n:,} x 1008, 10 splits",
        f"{seconds:.2f}",
        "" if their_seconds is None else f"{their_seconds:.2f}",
        ratio(seconds, their_seconds),
        f"{ours.mean:.6g} ± {ours.std:.3g}",
        difference,
    ]


def bench_prc(n: int, dim: int) -> list[list[str]]:
    import torch

    real, fake = pool3_like(4, n, dim), pool3_like(5, n, dim, shift=0.03)
    ours, seconds = timed(precision_recall, real, fake, k=3)
    both, seconds_both = timed(manifold_metrics, real, fake)
    module = load_torch_fidelity("metric_prc")
    their_seconds, difference = None, ""
    if module is not None:
        (precision, recall), their_seconds = timed(
            module.calculate_precision_recall_full, torch.from_numpy(fake), torch.from_numpy(real), 3, 10000
        )
        difference = f"P {ours.precision - precision:+.1e}, R {ours.recall - recall:+.1e}"
    rows = [
        [
            f"precision/recall k=3, {n:,} vs {n:,} x {dim}",
            f"{seconds:.1f}",
            "" if their_seconds is None else f"{their_seconds:.1f}",
            ratio(seconds, their_seconds),
            f"P {ours.precision:.4f} R {ours.recall:.4f} (recomputed {ours.recomputed})",
            difference,
        ],
        [
            f"manifold_metrics (P/R k=3, D/C k=5), {n:,} vs {n:,}",
            f"{seconds_both:.1f}",
            "",
            "",
            f"P {both.precision:.4f} R {both.recall:.4f} D {both.density:.4f} C {both.coverage:.4f}",
            "",
        ],
    ]
    try:
        import prdc
    except ImportError:
        return rows
    small = n // 4
    ours_small, seconds_small = timed(manifold_metrics, real[:small], fake[:small])
    with contextlib.redirect_stdout(io.StringIO()):
        theirs, their_small = timed(prdc.compute_prdc, real[:small], fake[:small], 5)
    rows.append(
        [
            f"density/coverage k=5 (+P/R k=3), {small:,} vs {small:,}, vs prdc",
            f"{seconds_small:.1f}",
            f"{their_small:.1f}",
            ratio(seconds_small, their_small),
            f"D {ours_small.density:.4f} C {ours_small.coverage:.4f}",
            f"D {ours_small.density - theirs['density']:+.1e}, C {ours_small.coverage - theirs['coverage']:+.1e}",
        ]
    )
    return rows


# VmHWM (the peak resident size of this process's memory map), not ru_maxrss: Linux carries ru_maxrss over from
# the parent across fork and exec, so a child of a large benchmark would report the parent's peak. Writing 5 to
# clear_refs resets VmHWM to the current size after the features are built.
_MEMORY_CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
sys.path.insert(0, {bench!r})
import bench_metrics as bench
from fidkit.metrics import precision_recall

def kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

real, fake = bench.pool3_like(6, {n}, {dim}), bench.pool3_like(7, {n}, {dim}, shift=0.03)
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")
before = kib("VmRSS")
start = time.perf_counter()
result = precision_recall(real, fake, memory_budget={budget})
seconds = time.perf_counter() - start
print(json.dumps({{"before_kib": before, "peak_kib": kib("VmHWM"), "seconds": seconds,
                  "precision": result.precision, "recall": result.recall}}))
"""


def bench_memory(n: int, dim: int, budget: int) -> list[str]:
    code = _MEMORY_CHILD.format(root=str(ROOT), bench=str(Path(__file__).parent), n=n, dim=dim, budget=budget)
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    numbers = json.loads(output.strip().splitlines()[-1])
    features_gib = 2 * n * dim * 4 / 2**30
    return [
        f"{n:,} vs {n:,} x {dim}",
        f"{budget / 2**20:.0f} MiB",
        f"{numbers['seconds']:.0f}",
        f"{numbers['before_kib'] / 2**20:.2f}",
        f"{numbers['peak_kib'] / 2**20:.2f}",
        f"{(numbers['peak_kib'] - numbers['before_kib']) / 2**20:.2f}",
        f"{features_gib:.2f} (float32 inputs)",
    ]


def previous_fid(side_a, side_b, counts_a: np.ndarray, counts_b: np.ndarray) -> float:
    """bootstrap_fid before the float32 Grams and the lean distance (commit effda88), on the stored float64 rows:
    one syrk over the drawn rows scaled by sqrt(count), then the full frechet_distance."""
    moments = []
    for side, counts in ((side_a, counts_a), (side_b, counts_b)):
        drawn = np.flatnonzero(counts)
        weights = counts[drawn].astype(np.float64)
        rows = side.rows[drawn]
        shift = (weights @ rows) / side.n
        rows *= np.sqrt(weights)[:, None]
        scatter = rows.T @ rows
        scatter -= side.n * np.outer(shift, shift)
        scatter /= side.n - 1
        scatter += scatter.T.copy()
        scatter *= 0.5
        moments.append((side.mean / side.scale + shift, scatter))
    (mu_a, sigma_a), (mu_b, sigma_b) = moments
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b).value * side_a.scale**2


def bench_bootstrap(
    n_a: int, n_b: int, dim: int, resamples: int, threaded_resamples: int, with_infinity: bool = True
) -> list[list[str]]:
    """Seconds per resample of each way on the same counts (alternated, so that other load hits all alike), the
    split of the float32 way into its Grams and its distance, and how far the float32 values are from float64."""
    a, b = pool3_like(8, n_a, dim, shift=0.02), pool3_like(9, n_b, dim)
    point, point_seconds = timed(fid_from_arrays, a, b)
    resamplers, setup = {}, {}
    for dtype in ("float32", "float64"):
        resamplers[dtype], setup[dtype] = timed(fidkit_resample.Resampler, a, b, dtype, None)
    seconds: dict[str, list[Seconds]] = {key: [] for key in ("float32", "grams", "distance", "float64", "previous")}
    values: dict[str, list[float]] = {key: [] for key in ("float32", "float64", "previous")}
    rng = np.random.default_rng(0)
    fast, exact = resamplers["float32"], resamplers["float64"]
    for _ in range(resamples):
        counts_a, counts_b = fidkit_resample.resample_counts(rng, n_a, n_b)
        for key, resampler in (("float32", fast), ("float64", exact)):
            value, took = timed(resampler.fid, counts_a, counts_b, pause=0.5)
            values[key].append(value)
            seconds[key].append(took)
        moments, took = timed(fast._moments, counts_a, counts_b, False, pause=0.5)
        seconds["grams"].append(took)
        difference, _, sigma_a, _, sigma_b = moments
        seconds["distance"].append(timed(fidkit_resample.lean_fid, difference, sigma_a, sigma_b, 0.0)[1])
        value, took = timed(previous_fid, *exact.sides, counts_a, counts_b, pause=0.5)
        values["previous"].append(value)
        seconds["previous"].append(took)
    _, generic = timed(lambda: fid_from_arrays(a[rng.integers(0, n_a, n_a)], b[rng.integers(0, n_b, n_b)]))
    # Many draws at once, as bootstrap_fid runs them: one at a time with BLAS's own threads, against the default,
    # as many at a time as BLAS has threads, each single-threaded (enough draws that the first one, which runs
    # alone, and the last round's idle workers weigh little).
    workers = fidkit_resample.blas_threads()
    draws = [fidkit_resample.resample_counts(rng, n_a, n_b) for _ in range(threaded_resamples)]
    routes_one_at_a_time = dict(fast.routes)  # before the runs below add theirs
    in_order, one_at_a_time = timed(fast.fids, draws, 1, pause=0.5)
    in_threads, concurrent = timed(fast.fids, draws, workers, pause=0.5)
    fast.two_stage_in_threads = True  # the same threads with LAPACK's two-stage eigensolver (not the default)
    in_threads_two_stage, two_stage = timed(fast.fids, draws, workers, pause=0.5)
    fast.two_stage_in_threads = False
    for other in (in_threads, in_threads_two_stage):
        if np.max(np.abs(np.array(in_order) / np.array(other) - 1.0)) > 1e-12:
            raise AssertionError("the resampled values depend on the number of workers or the eigensolver")

    def mean(key: str) -> Seconds:
        return Seconds(float(np.mean(seconds[key])), float(np.mean([value.cpu for value in seconds[key]])))

    float32, float64, previous = (np.array(values[key]) for key in ("float32", "float64", "previous"))
    traces = float(point.trace_a + point.trace_b)
    relative = np.max(np.abs(float32 / float64 - 1.0))
    absolute = np.max(np.abs(float32 - float64)) / traces
    per_resample = [
        Seconds(float(took) / threaded_resamples, took.cpu / threaded_resamples)
        for took in (one_at_a_time, concurrent, two_stage)
    ]
    rows = [
        [
            f"bootstrap_fid, {threaded_resamples} resamples, {workers} at a time in threads (default, workers={workers})",
            f"{per_resample[1]:.2f}",
            f"{float(one_at_a_time) / float(concurrent):.2f}x the next line, wall",
        ],
        ["  the same, one at a time with BLAS's own threads (workers=1)", f"{per_resample[0]:.2f}", ""],
        [
            "  the same threads with dsyevd_2stage instead of dsyevd (two_stage_in_threads)",
            f"{per_resample[2]:.2f}",
            f"{float(concurrent) / float(two_stage):.2f}x the first line, wall",
        ],
        ["bootstrap_fid, float32 Grams, one resample at a time", f"{mean('float32'):.2f}", f"routes: {routes_one_at_a_time}"],
        ["  its two weighted Grams (float32 syrk, float64 sums)", f"{mean('grams'):.2f}", "both sides"],
        ["  its distance (potrf x2, trmm, syrk, syevd without vectors)", f"{mean('distance'):.2f}", ""],
        ["bootstrap_fid, dtype='float64'", f"{mean('float64'):.2f}", f"routes: {exact.routes}"],
        ["previous bootstrap_fid (float64 Gram + frechet_distance)", f"{mean('previous'):.2f}", ""],
        ["resample the rows + fid_from_arrays (bootstrap)", f"{generic:.2f}", "1 resample"],
        ["setup, once: centre, reorder, store (float32 / float64)", f"{setup['float32']:.2f} / {setup['float64']:.2f}", ""],
        ["point FID (fid_from_arrays)", f"{point_seconds:.2f}", f"FID {float(point):.4f}, tr a + tr b {traces:.1f}"],
        [
            "float32 vs float64 resampled values",
            "",
            f"max relative difference {relative:.2e}; max |difference| / (tr a + tr b) {absolute:.2e}",
        ],
        [
            "float64 (lean distance) vs previous (frechet_distance)",
            "",
            f"max relative difference {np.max(np.abs(float64 / previous - 1.0)):.2e}",
        ],
    ]
    if not with_infinity:
        return rows
    infinity, took = timed(fid_infinity, a, b, seed=0)
    rows.append(
        [
            f"fid_infinity, 15 sizes {infinity.sizes[0]:,}..{infinity.sizes[-1]:,} (total)",
            f"{took:.1f}",
            f"FID_inf {infinity.value:.4f} (slope {infinity.slope:.4g})",
        ]
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="rows per side for KID and precision/recall")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--is-n", type=int, default=50000, help="rows of logits for the Inception Score")
    parser.add_argument("--memory-n", type=int, default=20000, help="rows per side for the memory run (0: skip)")
    parser.add_argument("--budget-mib", type=int, default=512, help="memory_budget of the memory run")
    parser.add_argument("--bootstrap-n", type=int, nargs=2, default=[50000, 10000], help="rows of the two sides")
    parser.add_argument("--resamples", type=int, default=3, help="bootstrap resamples to time each way on")
    parser.add_argument(
        "--threaded-resamples", type=int, default=16, help="resamples for bootstrap_fid's threads vs one at a time"
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["kid", "is", "prc", "memory", "bootstrap", "fid_infinity"])
    args = parser.parse_args()

    print(
        f"# bench_metrics: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}, "
        f"python {platform.python_version()}, load average at start {os.getloadavg()[0]:.1f}"
    )
    header = ["case", "fidkit s, wall (CPU)", "baseline s", "speed-up", "fidkit value", "difference"]
    rows = []
    if "kid" not in args.skip:
        rows.append(bench_kid(args.n, args.dim))
    if "is" not in args.skip:
        rows.append(bench_is(args.is_n))
    if "prc" not in args.skip:
        rows.extend(bench_prc(args.n, args.dim))
    if rows:
        print("\n## Against torch-fidelity 0.4.0 (and prdc) on the same features\n")
        print(table(header, rows))
    if "memory" not in args.skip and args.memory_n:
        print("\n## precision_recall memory (child process, VmHWM)\n")
        print(
            table(
                ["sizes", "budget", "seconds", "RSS before GiB", "peak RSS GiB", "added GiB", "features GiB"],
                [bench_memory(args.memory_n, args.dim, args.budget_mib * 2**20)],
            )
        )
    if "bootstrap" not in args.skip:
        n_a, n_b = args.bootstrap_n
        threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
        print(f"\n## Bootstrap of FID, {n_a:,} + {n_b:,} x {args.dim} (OPENBLAS_NUM_THREADS={threads})\n")
        rows = bench_bootstrap(
            n_a, n_b, args.dim, args.resamples, args.threaded_resamples, "fid_infinity" not in args.skip
        )
        print(table(["way", "seconds per resample, wall (CPU)", "note"], rows))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\npeak RSS of this process: {peak:.2f} GiB; load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
