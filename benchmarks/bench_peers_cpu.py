"""fidkit against torch-fidelity and pytorch-fid on the CPU, end to end: wall time and peak memory of each.

Each tool computes the FID of the same two folders of CIFAR-10 test JPEGs (from ``../shared/data``) in its own
process, with the same weights placed where it looks, on the CPU, with its own defaults (fidkit: ``fidkit
compute A B --no-cache``, batch 25; torch-fidelity: ``calculate_metrics(fid=True, cuda=False)``, batch 64;
pytorch-fid: its command line, ``python -m pytorch_fid A B --device cpu``, batch 50); fidkit also at batch 50, its previous
default. Peak memory: the largest resident set of any one of the tool's processes (``ru_maxrss``), and the
largest sum over all of them (decoding or data-loader workers included; proportional set sizes, so pages that
forked workers share count once), sampled every 20 ms. The tools run in turns,
``--rounds`` times; the best time and the largest peak of each are kept.

    python3 benchmarks/bench_peers_cpu.py                   # 300 + 300 images, 2 rounds
    python3 benchmarks/bench_peers_cpu.py --images 500 --rounds 3

Weights: random weights of the exact layout (the released file cannot be downloaded here): the same network,
arithmetic and memory; the FID values are meaningless but must agree between the tools (printed).

torchvision: both peers import it. Where the installed torchvision cannot load its compiled operators (the PyPI
wheel, built for CUDA, on a CPU-only torch), give ``--torchvision-path`` a folder holding the wheel unpacked
(``pip install --no-deps --target DIR torchvision==0.28.0``): its detection operators, which no FID run calls,
are then declared before it is imported (:data:`_SHIM`), the rest is torchvision's own code.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

#: Run in a peer's process before torchvision is imported, when --torchvision-path is given.
_SHIM = """
import torch
_library = torch.library.Library("torchvision", "DEF")
for _name in ("roi_align", "_roi_align_backward", "ps_roi_align", "_ps_roi_align_backward", "roi_pool",
              "_roi_pool_backward", "ps_roi_pool", "_ps_roi_pool_backward", "nms", "qnms", "qroi_align",
              "deform_conv2d", "_deform_conv2d_backward"):
    _library.define(_name + "(Tensor[] args) -> Tensor")
"""

_TORCH_FIDELITY = """
import json, sys, torch_fidelity
metrics = torch_fidelity.calculate_metrics(input1=sys.argv[1], input2=sys.argv[2], cuda=False, fid=True,
                                           feature_extractor_weights_path=sys.argv[3], verbose=False, cache=False)
print(json.dumps({"fid": float(metrics["frechet_inception_distance"])}))
"""

# pytorch-fid's own command line (``python -m pytorch_fid A B --device cpu``: batch 50, min(cores, 8) data-loader
# workers), which prints "FID:  <value>".
_PYTORCH_FID = """
import runpy, sys
sys.argv = ["pytorch_fid", sys.argv[1], sys.argv[2], "--device", "cpu"]
runpy.run_module("pytorch_fid", run_name="__main__")
"""


def main() -> int:
    from fidkit.testing import random_weights_file

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300, help="JPEGs per folder (default 300)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--torchvision-path", type=Path, default=None,
                        help="an unpacked torchvision wheel, imported with its detection operators declared")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fidkit-bench-peers-"))
    try:
        # Two folders: the first and the next --images test JPEGs.
        folders = [work / "a", work / "b"]
        with zipfile.ZipFile(args.data / "cifar10" / "cifar10-test-jpg.zip") as archive:
            names = sorted(name for name in archive.namelist() if name.lower().endswith(".jpg"))
            for index, folder in enumerate(folders):
                folder.mkdir()
                for name in names[index * args.images : (index + 1) * args.images]:
                    (folder / Path(name).name).write_bytes(archive.read(name))
        weights = random_weights_file(work / "inception.pth")
        torch_home = work / "torch-home"
        (torch_home / "hub" / "checkpoints").mkdir(parents=True)
        shutil.copyfile(weights, torch_home / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth")

        env = dict(os.environ, FIDKIT_HOME=str(work / "fidkit-home"), FIDKIT_WEIGHTS=str(weights),
                   TORCH_HOME=str(torch_home), PYTHONPATH=str(REPO_ROOT))
        peer_env = dict(env)
        prelude = ""
        if args.torchvision_path is not None:
            peer_env["PYTHONPATH"] = f"{args.torchvision_path}{os.pathsep}{env['PYTHONPATH']}"
            prelude = _SHIM
        a, b = (str(folder) for folder in folders)
        fidkit = [sys.executable, "-m", "fidkit", "compute", a, b, "--no-cache", "--device", "cpu", "--json"]
        tools = {
            "fidkit (batch 25, the default)": (fidkit, env),
            "fidkit, batch 50 (the previous default)": (fidkit + ["--batch-size", "50"], env),
            "torch-fidelity 0.4.0 (batch 64)": ([sys.executable, "-c", prelude + _TORCH_FIDELITY, a, b, str(weights)],
                                                peer_env),
            "pytorch-fid 0.3.0 (batch 50)": ([sys.executable, "-c", prelude + _PYTORCH_FID, a, b], peer_env),
        }
        # The graph is exported once before the timings, as a user's first run would (not part of a comparison).
        subprocess.run(fidkit[:3] + ["stats", a, "--no-cache", "--limit", "2"], env=env, capture_output=True)
        print(f"# bench_peers_cpu: {os.cpu_count()} cores, {args.images} + {args.images} CIFAR-10 test JPEGs, "
              f"{args.rounds} rounds, load average {os.getloadavg()[0]:.1f}", flush=True)
        best: dict[str, float] = {}
        peak: dict[str, float] = {}
        tree_peak: dict[str, float] = {}
        fids: dict[str, float] = {}
        for _ in range(args.rounds):
            for label, (command, tool_env) in tools.items():
                # One child at a time, each in a fresh interpreter; RUSAGE_CHILDREN's maximum is per process, so
                # each child is measured from a new grandparent to keep its peak its own.
                wrapper = [sys.executable, "-c", _ONE_CHILD, json.dumps(command)]
                started = time.perf_counter()
                result = subprocess.run(wrapper, env=tool_env, capture_output=True, text=True)
                seconds = time.perf_counter() - started
                if result.returncode != 0:
                    print(f"  {label}: failed: {result.stderr[-1500:]}", flush=True)
                    continue
                report = json.loads(result.stdout)
                fids[label] = _fid_printed(report["stdout"])
                best[label] = min(best.get(label, float("inf")), report["seconds"])
                peak[label] = max(peak.get(label, 0.0), report["peak_gb"])
                tree_peak[label] = max(tree_peak.get(label, 0.0), report["tree_peak_gb"])
                print(f"  {label}: {report['seconds']:.1f} s, peak {report['peak_gb']:.2f} GB "
                      f"(all its processes {report['tree_peak_gb']:.2f} GB) "
                      f"(FID {fids[label]:.6g}; {seconds:.1f} s with the wrapper)", flush=True)
        print()
        print("| tool | seconds (best) | images/s | peak memory, largest process | all its processes | FID |")
        print("|---|---:|---:|---:|---:|---:|")
        for label in best:
            rate = 2 * args.images / best[label]
            print(f"| {label} | {best[label]:.1f} | {rate:.1f} | {peak[label]:.2f} GB | {tree_peak[label]:.2f} GB "
                  f"| {fids[label]:.6g} |")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _fid_printed(stdout: str) -> float:
    """The FID a tool printed: fidkit's ``--json`` report (``fid``), torch-fidelity's snippet's one-line JSON (the
    last line: a library may print before it), or pytorch-fid's ``FID:  <value>`` line."""
    last = stdout.strip().splitlines()[-1]
    if last.startswith("FID:"):  # pytorch-fid's command line
        return float(last.split()[-1])
    try:
        printed = json.loads(stdout)
    except json.JSONDecodeError:
        printed = json.loads(last)
    return float(printed["fid"])


#: A fresh process that runs one command and reports as JSON its wall time, its peak memory (``peak_gb``: the
#: largest resident set of any one process of it, ``ru_maxrss``; ``tree_peak_gb``: the largest sum of the
#: proportional set sizes of the command and every process it started, sampled every 20 ms from /proc) and its
#: stdout.
_ONE_CHILD = """
import json, os, resource, subprocess, sys, time

def tree_rss(pid):
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            # PSS: a page shared by forked workers counts once in the sum, not once per process.
            with open(f"/proc/{current}/smaps_rollup") as rollup:
                total += next(int(line.split()[1]) for line in rollup if line.startswith("Pss:")) * 1024
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    pending += [int(child) for child in children.read().split()]
        except (OSError, StopIteration):
            pass
    return total

command = json.loads(sys.argv[1])
started = time.perf_counter()
process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
tree_peak = 0
import threading
out = {}
reader = threading.Thread(target=lambda: out.update(zip(("stdout", "stderr"), process.communicate())))
reader.start()
while reader.is_alive():
    tree_peak = max(tree_peak, tree_rss(process.pid))
    reader.join(0.02)
seconds = time.perf_counter() - started
if process.returncode != 0:
    sys.stderr.write(out["stderr"].decode()[-3000:])
    raise SystemExit(process.returncode)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak_gb": peak / 1e9, "tree_peak_gb": tree_peak / 1e9,
                  "stdout": out["stdout"].decode()}))
"""


if __name__ == "__main__":
    raise SystemExit(main())
