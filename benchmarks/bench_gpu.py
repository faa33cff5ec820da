"""The one GPU verification of fidkit: each step in its own process, under its own time limit, in two device commands
of under 5 minutes each (``--plan first``, then ``--plan second``; see :data:`PLANS`).

The steps, each one's results written to the JSON as they come, so that a step that runs out of time keeps what it
had measured and the steps after it still run (a plan takes its own order; ``--steps`` this one):

1. ``setup``: versions, onnxruntime's providers, why CUDA or TensorRT cannot run (where they cannot); the
   extractor's setup split (weights hash, graph export, session creation with its first-batch plan search)
   on the CPU provider and on the GPU;
2. ``exactness``: features of images of mixed sizes from the CUDA provider and from the torch engine against
   the CPU provider (max relative error), and the FID of two halves from each;
3. ``network``: images/s per batch size of fidkit's exact network (onnxruntime CUDA, CIFAR-sized uint8 from
   the host, resized in the graph), the torch engine, and every other ``precision`` fidkit offers (its FID
   deviation from exact beside its speed), against the same weights as plain torch fp32 (TF32 off,
   ``cudnn.benchmark``, 299x299 float input already on the GPU: the exact-fp32 ceiling) and in bf16 autocast;
4. ``data``: 50,000 + 10,000 CIFAR-sized JPEGs in two zips, made on the machine from a few thousand real ones
   (``--seed-images``: a zip or folder of JPEGs, or a uint8 ``.npy``), each image a distinct variant (flips,
   shifts, brightness) of a seed;
5. ``compute-cold`` and ``compute-cached``: ``python -m fidkit compute train.zip test.zip --json`` as a
   subprocess with no other flag (the weights through ``$FIDKIT_WEIGHTS``; the graph already exported by
   ``setup``, no statistics cached for the cold run), its wall time, peak memory and the ``--json`` report's
   setup split, batch size, provider and timings;
6. ``distance``: the FID at dim 2048 with scipy's solver, and with torch's float64 CUDA solver in a process
   whose CUDA is cold (its first call) and warm, with the solver fidkit picks in each case;
7. ``torch-fidelity`` and ``pytorch-fid``, where importable: on the same images as folders, on the GPU,
   timed, and how far their GPU FID is from their own CPU FID on a 500 + 500 subset;
8. ``cuda-options``: the CUDA provider's options fidkit does not set yet (cuDNN algorithm search HEURISTIC and
   DEFAULT against fidkit's EXHAUSTIVE, ``prefer_nhwc``, CUDA graphs on fixed device buffers), each with its
   session time, first batch, images/s and features against the CPU provider; last in ``--plan second``;
9. ``overlap``: the extraction loop on the test zip (decoding workers, statistics), with the statistics in a
   second thread while the network runs the next batch (fidkit's default on a GPU) and without, alternating:
   images/s and whether the statistics are bitwise equal;
10. ``bootstrap``: ``bootstrap_fid`` at 50,000 + 10,000 x 2048 on the machine's CPU cores (resamples in threads,
   as it runs them) and on the GPU, 32 resamples each, then the CPU threads again with LAPACK's two-stage
   eigensolver (``Resampler.two_stage_in_threads``): seconds per resample, setup, 200 resamples projected, and
   the GPU's values against the CPU's (issue 18's target: under a minute for 200 on a workstation CPU). It needs
   ``threadpoolctl`` (a dependency; on the GPU machine, carry its wheel and put it on ``PYTHONPATH``);
11. ``torch-compile`` (``--compile`` only: its compilation alone can take minutes): the plain module compiled
   against eager.

It prints a markdown table at the end and writes a JSON (``--out``). Without ``--weights`` it makes random
weights of the exact layout (same graph, same arithmetic, same speed; FID values are then meaningless, their
differences are not). Each run's budget is at least the sum of its steps' limits, or the limits are scaled down
to it, so that no step is left without time by the ones before it. ``--home`` keeps the FIDKIT_HOME (the weights
made, the graph exported) for the next command. Where the CUDA provider cannot start, it stops in seconds and says
why, unless ``--quick`` asks for the CPU smoke test (every step at tiny sizes: a test of the script, not a
measurement).

On the GPU machine (``docs/performance.md`` has the whole recipe, and how onnxruntime-gpu gets there)::

    python3 benchmarks/bench_gpu.py --make-seed ../shared/data/cifar10/cifar10-test-jpg.zip .bench/seed.zip  # here
    python3 benchmarks/bench_gpu.py --plan first --home .bench-home --out $OUT/gpu-first.json               # there
    python3 benchmarks/bench_gpu.py --plan second --home .bench-home --seed-images .bench/seed.zip \\
        --out $OUT/gpu-second.json

Here, on the CPU::

    python3 benchmarks/bench_gpu.py --quick --out /tmp/bench_gpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

#: (name, limit in seconds on a GPU, limit in the quick CPU run), in the order a run without --plan takes them.
STEPS: list[tuple[str, int, int]] = [
    ("setup", 40, 300),
    ("exactness", 30, 240),
    ("network", 80, 300),
    ("data", 30, 60),
    ("compute-cold", 80, 300),
    ("compute-cached", 20, 120),
    ("distance", 30, 180),
    ("torch-fidelity", 60, 120),
    ("pytorch-fid", 60, 120),
    ("cuda-options", 70, 180),
    ("overlap", 40, 120),
    ("bootstrap", 90, 120),
    ("torch-compile", 240, 300),
]
STEP_NAMES = [name for name, _, _ in STEPS]
#: The two device commands of a GPU session (15 minutes of device time, a few of them the machine's start): each
#: under 5 minutes, its budget the sum of its steps' limits, most wanted first. ``first``: issue 17's exactness and
#: network speed and issue 18's bootstrap (third: a command stopped early still has it); ``second``: the end-to-end
#: runs of issue 17 on made data, then what fidkit's defaults could gain (overlap, the CUDA provider's options).
#: The peers (torch-fidelity, pytorch-fid: not installed on the GPU machine) and torch-compile only with --steps.
PLANS: dict[str, tuple[str, ...]] = {
    "first": ("setup", "exactness", "bootstrap", "network", "distance"),
    "second": ("setup", "data", "compute-cold", "compute-cached", "overlap", "cuda-options"),
}
#: Seconds the parent keeps for itself (its start, the GPU check, the table) beyond its steps' limits.
PARENT_S = 10
#: A run of --steps without --budget: under 5 minutes (one of the session's two device commands).
DEFAULT_BUDGET_S = 290
QUICK_BUDGET_S = 1800
#: The target batch sizes on a GPU (the issue's), and the images timed per measurement.
GPU_BATCH_SIZES = (50, 100, 200, 500)
GPU_IMAGES = 2000
#: The end-to-end data: 50,000 + 10,000 images on a GPU, as CIFAR-10.
GPU_DATA = (50_000, 10_000)
QUICK_DATA = (24, 16)


# ---------------------------------------------------------------------------------------------- recording


def _write_json(path: Path, data: Any) -> None:
    """Atomically: a reader (the parent, or a person after a timeout) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


class Recorder:
    """One step's results, rewritten to its JSON file after every value, with the table rows it prints."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"rows": []}

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        _write_json(self.path, self.data)

    def row(self, check: str, value: str, note: str = "") -> None:
        self.data["rows"].append([check, value, note])
        print(f"  {check}: {value}{'  (' + note + ')' if note else ''}", flush=True)
        _write_json(self.path, self.data)


class StepSkipped(Exception):
    """The step cannot run here (a peer library not importable): recorded as skipped, not as a failure."""


class Context:
    """What every step is given: the arguments, the shared work folder, and the machine's kind."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work: Path = args.work
        self.quick: bool = args.quick
        state = json.loads((self.work / "state.json").read_text())
        self.gpu: bool = state["gpu"]
        self.weights: str = state["weights"]
        self.device = "cuda" if self.gpu else "cpu"

    def data_path(self, name: str) -> Path:
        return self.work / "data" / name


# ---------------------------------------------------------------------------------------------- helpers


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))


def _fid(features: np.ndarray) -> float:
    from fidkit import fid_from_arrays

    half = len(features) // 2
    return float(fid_from_arrays(features[:half], features[half:]))


def _mixed_images(n_images: int, seed: int = 0) -> list[np.ndarray]:
    """Batches of one size each, 32x32 to 512x384 (the resize runs in the network); smooth, closer to photos."""
    rng = np.random.default_rng(seed)
    sizes = [(32, 32), (64, 48), (128, 128), (299, 299), (300, 400), (512, 384)]
    per_size = max(1, -(-n_images // len(sizes)))
    batches = []
    for height, width in sizes:
        low = rng.integers(0, 256, (per_size, 8, 8, 3), dtype=np.uint8)
        batch = np.repeat(np.repeat(low, -(-height // 8), axis=1), -(-width // 8), axis=2)[:, :height, :width]
        batches.append(np.ascontiguousarray(batch))
    return batches


def _rate(run: Callable[[], Any], n_images: int, sync: Callable[[], None] = lambda: None) -> float:
    """Images/s of `run` (which processes `n_images`), after one untimed call (plans, buffers, autotuning)."""
    run()
    sync()
    started = time.perf_counter()
    run()
    sync()
    return n_images / (time.perf_counter() - started)


def _in_batches(extractor: Any, images: np.ndarray, batch: int) -> Callable[[], Any]:
    def run() -> None:
        for first in range(0, len(images), batch):
            extractor(images[first : first + batch])

    return run


# ---------------------------------------------------------------------------------------------- 1. setup


def step_setup(ctx: Context, rec: Recorder) -> None:
    import onnxruntime as ort

    from fidkit.inception import FeatureExtractor
    from fidkit.inception.providers import Device, preload_gpu_libraries, why_device_unusable, why_no_gpu

    preload_gpu_libraries(ort)
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "numpy": np.__version__,
        "onnxruntime": f"{ort.__version__} ({Path(ort.__file__).parent})",
        "providers": ort.get_available_providers(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = f"{torch.cuda.get_device_name(0)}, torch CUDA {torch.version.cuda}"
    except ImportError:
        info["torch"] = None
    for key, value in info.items():
        rec.put(key, value)
        rec.row(key, str(value))
    if ctx.gpu:
        for device in ("cuda", "tensorrt"):
            problem = why_device_unusable(ort, Device(device))
            rec.put(f"{device}_problem", problem)
            rec.row(f"--device {device}", "usable" if problem is None else "not usable", problem or "")
    else:
        rec.put("cuda_problem", why_no_gpu(ort, Device("cuda")))
    # The graph is exported here, once, into the FIDKIT_HOME every later step shares: the steps after this one
    # time a user's run with the graph already built (its export time is this row).
    for device in ("cpu", "cuda") if ctx.gpu else ("cpu",):
        started = time.perf_counter()
        extractor = FeatureExtractor(ctx.weights, device=device)
        seconds = time.perf_counter() - started
        parts = {part: round(value, 3) for part, value in extractor.setup_seconds.items()}
        rec.put(f"extractor_setup_{device}", {"seconds": seconds, "parts": parts, "batch_size": extractor.batch_size})
        rec.row(f"FeatureExtractor setup, {extractor.provider}", f"{seconds:.2f} s",
                ", ".join(f"{part} {value:.2f} s" for part, value in parts.items()) + f"; default batch {extractor.batch_size}")


# ---------------------------------------------------------------------------------------------- 2. exactness


def step_exactness(ctx: Context, rec: Recorder) -> None:
    from fidkit.inception import FeatureExtractor

    batches = _mixed_images(12 if ctx.quick else 300)
    cpu = FeatureExtractor(ctx.weights, device="cpu")
    reference = np.concatenate([cpu(batch) for batch in batches])
    fid_cpu = _fid(reference)
    rec.put("n_images", len(reference))
    rec.put("fid_cpu", fid_cpu)
    candidates: list[tuple[str, Callable[[], Any]]] = []
    if ctx.gpu:
        candidates.append(("onnxruntime CUDA", lambda: FeatureExtractor(ctx.weights, device="cuda")))
    try:
        from fidkit.inception.torch_engine import TorchFeatureExtractor

        candidates.append((f"torch engine {ctx.device}", lambda: TorchFeatureExtractor(ctx.weights, device=ctx.device)))
    except ImportError as exc:
        rec.row("torch engine", "not importable", str(exc)[:120])
    for label, build in candidates:
        extractor = build()
        features = np.concatenate([extractor(batch) for batch in batches])
        # Batch 1 against the in-batch result: a GPU plan chosen per batch shape must not change the numbers.
        single = extractor(batches[0][:1])[0]
        error, fid = _relative_error(features, reference), _fid(features)
        fid_error = abs(fid - fid_cpu) / max(abs(fid_cpu), 1e-30)
        batch_one = _relative_error(single, features[0])
        rec.put(label, {"provider": extractor.provider, "max_relative_error": error, "fid": fid,
                        "fid_relative_error": fid_error, "batch_one_vs_in_batch": batch_one})
        rec.row(f"features, {label} vs CPU provider", f"{error:.1e}", f"{len(reference)} images of mixed sizes, max relative")
        rec.row(f"FID, {label} vs CPU provider", f"{fid_error:.1e}", f"relative; batch 1 vs in batch {batch_one:.1e}")


# ---------------------------------------------------------------------------------------------- 3. network


def _plain_torch(ctx: Context, rec: Recorder, batch_sizes: tuple[int, ...], n_images: int) -> dict[int, float]:
    """The same weights as a plain torch module on 299x299 float input already on the device: fp32 with TF32 off
    and cudnn.benchmark (the exact-fp32 ceiling), then bf16 autocast. Returns the fp32 rates."""
    import torch

    from fidkit.inception.network import build_network
    from fidkit.inception.weights import load_state_dict

    device = torch.device(ctx.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    model = build_network(load_state_dict(ctx.weights)).to(device).eval()
    sync = torch.cuda.synchronize if ctx.gpu else (lambda: None)
    fp32: dict[int, float] = {}
    for label, dtype in (("plain torch fp32", None), ("plain torch bf16 autocast", torch.bfloat16)):
        for batch in batch_sizes:
            x = torch.randn(batch, 3, 299, 299, device=device)
            repeats = max(1, n_images // batch)

            def run(x: Any = x, repeats: int = repeats, dtype: Any = dtype) -> None:
                autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
                with torch.inference_mode(), autocast:
                    for _ in range(repeats):
                        model(x)

            rate = _rate(run, repeats * batch, sync)
            if dtype is None:
                fp32[batch] = rate
            rec.put(f"{label} @ {batch}", rate)
            rec.row(f"{label}, batch {batch}", f"{rate:,.0f} images/s", "299x299 on the device, network only")
    return fp32


def step_network(ctx: Context, rec: Recorder) -> None:
    from fidkit.inception import FeatureExtractor
    from fidkit.inception.providers import PRECISIONS
    from fidkit.inception.spec import default_batch_size

    default = default_batch_size(ctx.gpu)
    batch_sizes = tuple(sorted({*(GPU_BATCH_SIZES if ctx.gpu else (4,)), default}))
    n_images = GPU_IMAGES if ctx.gpu else 8
    images = np.random.default_rng(1).integers(0, 256, (n_images, 32, 32, 3), dtype=np.uint8)
    rec.put("images", f"{n_images} of 32x32 uint8 from the host (resized to 299 in the network)")
    rec.put("default_batch", default)
    exact = FeatureExtractor(ctx.weights, device=ctx.device)
    exact_rates: dict[int, float] = {}
    for batch in batch_sizes:
        exact.batch_size = batch  # a new padded shape on the GPU: its plan search is in the untimed first call
        exact_rates[batch] = _rate(_in_batches(exact, images, batch), n_images)
        rec.put(f"fidkit exact @ {batch}", exact_rates[batch])
        rec.row(f"fidkit exact ({exact.provider}), batch {batch}", f"{exact_rates[batch]:,.0f} images/s",
                "the default batch" if batch == default else "")
    reference = exact(images[:200 if ctx.gpu else 8])
    try:
        from fidkit.inception.torch_engine import TorchFeatureExtractor

        engine = TorchFeatureExtractor(ctx.weights, device=ctx.device)
        for batch in batch_sizes:
            engine.batch_size = batch
            rate = _rate(_in_batches(engine, images, batch), n_images)
            rec.put(f"torch engine @ {batch}", rate)
            rec.row(f"fidkit torch engine, batch {batch}", f"{rate:,.0f} images/s")
    except ImportError as exc:
        rec.row("torch engine", "not importable", str(exc)[:120])
    # Every precision other than exact, on every engine and device that runs it (TensorRT may be missing): fast on
    # TensorRT, tf32 on the CUDA provider and the torch engine, bf16 on the torch engine.
    from fidkit.inception.select import build_feature_extractor

    where = {"fast": [("onnxruntime", "tensorrt")], "tf32": [("onnxruntime", "cuda"), ("torch", "cuda")],
             "bf16": [("torch", "cuda")]}
    for precision in [p for p in PRECISIONS if p != "exact"]:
        for engine, device in where.get(precision, []) if ctx.gpu else ():
            label = f"precision {precision} ({engine}, {device})"
            try:
                fast = build_feature_extractor(ctx.weights, device=device, engine=engine, precision=precision)
            except Exception as exc:  # noqa: BLE001 - a mode that does not start here is a finding, not a stop
                rec.put(label, f"does not start: {exc}")
                rec.row(label, "does not start", str(exc)[:150])
                continue
            rate = _rate(_in_batches(fast, images, fast.batch_size), n_images)
            features = fast(images[: len(reference)])
            deviation = _relative_error(features, reference)
            fid_deviation = abs(_fid(features) - _fid(reference)) / max(abs(_fid(reference)), 1e-30)
            rec.put(label, {"images_per_s": rate, "batch": fast.batch_size, "feature_deviation": deviation,
                            "fid_deviation": fid_deviation,
                            "vs_exact": rate / exact_rates.get(fast.batch_size, exact_rates[default])})
            rec.row(f"{label}, batch {fast.batch_size}", f"{rate:,.0f} images/s",
                    f"features {deviation:.1e} and FID {fid_deviation:.1e} from exact (relative)")
    try:
        ceiling = _plain_torch(ctx, rec, batch_sizes, n_images)
    except ImportError as exc:
        rec.row("plain torch", "not importable", str(exc)[:120])
        return
    ratio = exact_rates[default] / ceiling[default]
    rec.put("exact_vs_plain_fp32_at_default", ratio)
    rec.row("fidkit exact / plain torch fp32, default batch", f"{ratio:.2f}", "target >= 0.95 on the GPU")


# ---------------------------------------------------------------------------------------------- 4. data


def _read_seed_images(path: Path | None, count: int) -> tuple[np.ndarray, str]:
    """Up to `count` seed images, 32x32 RGB uint8: from a zip or folder of images, a uint8 .npy, or synthetic."""
    from PIL import Image

    def as_32(data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB").resize((32, 32), Image.BILINEAR), dtype=np.uint8)

    if path is None:
        rng = np.random.default_rng(4)
        low = rng.integers(0, 256, (count, 4, 4, 3), dtype=np.uint8)
        return np.repeat(np.repeat(low, 8, axis=1), 8, axis=2), "synthetic (no --seed-images)"
    if path.suffix == ".npy":
        array = np.load(path, mmap_mode="r")[:count]
        return np.ascontiguousarray(array, dtype=np.uint8), f"{len(array)} images from {path}"
    images = []
    if path.is_dir():
        for file in sorted(path.rglob("*")):
            if file.suffix.lower() in (".jpg", ".jpeg", ".png") and len(images) < count:
                images.append(as_32(file.read_bytes()))
    else:
        with zipfile.ZipFile(path) as archive:
            for name in sorted(archive.namelist()):
                if name.lower().endswith((".jpg", ".jpeg", ".png")) and len(images) < count:
                    images.append(as_32(archive.read(name)))
    if not images:
        raise FileNotFoundError(f"no JPEG or PNG images in {path}")
    return np.stack(images), f"{len(images)} images from {path}"


def _variant(seeds: np.ndarray, index: int) -> np.ndarray:
    """Image `index` of the made set: seed ``index % n``, flipped, shifted and brightened by ``index // n``."""
    image = seeds[index % len(seeds)]
    variant = index // len(seeds)
    if variant & 1:
        image = image[:, ::-1]
    shift = (variant >> 1) % 5
    if shift:
        image = np.roll(image, (shift, -shift), axis=(0, 1))
    offset = ((variant >> 1) // 5) % 7 * 6 - 18
    if offset:
        image = np.clip(image.astype(np.int16) + offset, 0, 255).astype(np.uint8)
    return image


def make_jpeg_zip(seeds: np.ndarray, start: int, count: int, path: Path, folder: Path | None) -> None:
    """`count` distinct JPEGs (quality 75, as the CIFAR-10 JPEG sets) into a stored zip, and into `folder` too."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for index in range(start, start + count):
            buffer = io.BytesIO()
            Image.fromarray(_variant(seeds, index)).save(buffer, format="JPEG", quality=75)
            name = f"{index:06d}.jpg"
            archive.writestr(f"images/{name}", buffer.getvalue())
            if folder is not None:
                (folder / name).write_bytes(buffer.getvalue())


def _peers_importable() -> list[str]:
    import importlib.util

    # find_spec only: importing them (torchvision, torch) is for their own steps.
    return [name for name in ("torch_fidelity", "pytorch_fid") if importlib.util.find_spec(name) is not None]


def step_data(ctx: Context, rec: Recorder) -> None:
    seed_path = ctx.args.seed_images
    if seed_path is None:
        default = ctx.args.data / "cifar10" / "cifar10-test-jpg.zip"
        seed_path = default if default.is_file() else None
    seeds, origin = _read_seed_images(seed_path, 48 if ctx.quick else 5000)
    rec.put("seeds", origin)
    n_train, n_test = QUICK_DATA if ctx.quick else GPU_DATA
    with_folders = bool(_peers_importable())  # torch-fidelity and pytorch-fid read folders
    started = time.perf_counter()
    for name, start, count in (("train", 0, n_train), ("test", n_train, n_test)):
        folder = ctx.data_path(name) if with_folders else None
        make_jpeg_zip(seeds, start, count, ctx.data_path(f"{name}.zip"), folder)
        rec.put(f"{name}.zip", {"images": count, "bytes": ctx.data_path(f"{name}.zip").stat().st_size})
    seconds = time.perf_counter() - started
    rec.row("data", f"{n_train:,} + {n_test:,} JPEGs", f"made in {seconds:.1f} s from {origin}"
            + ("; also as folders for the peers" if with_folders else ""))


# ---------------------------------------------------------------------------------------------- 5. compute


#: Process groups a step started (``fidkit compute`` with its decoding workers): ended with the step when the
#: parent stops it at its limit (SIGTERM, see :func:`_stop_children`).
_CHILD_GROUPS: list[int] = []


def _stop_children(signum: int, frame: Any) -> None:
    for group in _CHILD_GROUPS:
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGKILL)
    os._exit(124)


def _run_measured(command: list[str], env: dict[str, str], log: Path, timeout: float) -> tuple[int, float, float, str]:
    """(exit status, seconds, peak resident GB of the child, its stdout); stderr goes to `log`."""
    started = time.perf_counter()
    with open(log, "wb") as errors:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors, start_new_session=True)
        _CHILD_GROUPS.append(process.pid)
        deadline = started + timeout
        chunks = []
        assert process.stdout is not None
        os.set_blocking(process.stdout.fileno(), False)
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            chunk = process.stdout.read()
            if chunk:
                chunks.append(chunk)
            if pid:
                break
            if time.perf_counter() > deadline:
                os.killpg(process.pid, signal.SIGKILL)
                raise TimeoutError(f"{' '.join(command[:4])} ... did not finish in {timeout:.0f} s")
            time.sleep(0.05)
        rest = process.stdout.read()
        if rest:
            chunks.append(rest)
    seconds = time.perf_counter() - started
    return os.waitstatus_to_exitcode(status), seconds, usage.ru_maxrss * 1024 / 1e9, b"".join(chunks).decode()


def _compute(ctx: Context, rec: Recorder, label: str) -> None:
    train, test = ctx.data_path("train.zip"), ctx.data_path("test.zip")
    if not (train.is_file() and test.is_file()):
        raise FileNotFoundError(f"{train} / {test} missing: the data step did not finish")
    env = dict(os.environ, FIDKIT_WEIGHTS=str(ctx.weights))
    command = [sys.executable, "-m", "fidkit", "compute", str(train), str(test), "--json"]
    rec.put("command", "python -m fidkit compute train.zip test.zip --json  (FIDKIT_WEIGHTS set, no other flag)")
    # A little inside the step's limit, so that a run out of time is recorded as such by the step itself.
    status, seconds, peak_gb, out = _run_measured(command, env, ctx.work / f"{label}.stderr", ctx.args.limit - 3)
    rec.put("exit_status", status)
    rec.put("seconds", seconds)
    rec.put("peak_rss_gb", peak_gb)
    if status != 0:
        tail = (ctx.work / f"{label}.stderr").read_text(errors="replace")[-1500:]
        rec.put("stderr_tail", tail)
        raise RuntimeError(f"fidkit compute exited {status}: {tail[-300:]}")
    report = json.loads(out)
    rec.put("report", report)
    sides = []
    for key in ("a", "b"):
        side = report[key]
        parts = ", ".join(f"{part} {value:.2f}" for part, value in (side.get("setup_parts") or {}).items())
        sides.append(f"{key}: {'cached' if side['cached'] else 'computed'}, batch {side.get('batch_size')}, "
                     f"setup {side.get('setup_seconds', 0):.2f} s ({parts or 'none'}), network "
                     f"{side['network_seconds']:.2f} s (first batch {side.get('first_batch_seconds', 0):.2f}), "
                     f"decode wait {side['decode_seconds']:.2f} s (first {side.get('first_wait_seconds', 0):.2f})")
    timings = report["timings"]
    rec.row(f"fidkit compute, {label}", f"{seconds:.2f} s",
            f"{report['a']['n'] + report['b']['n']:,} images, peak {peak_gb:.2f} GB, provider {report['provider']}; "
            + "; ".join(sides) + f"; distance {timings['distance_seconds']:.2f} s ({report['frechet'].get('solver')})")


def step_compute_cold(ctx: Context, rec: Recorder) -> None:
    shutil.rmtree(Path(os.environ["FIDKIT_HOME"]) / "stats", ignore_errors=True)  # no statistics cached
    _compute(ctx, rec, "cold")


def step_compute_cached(ctx: Context, rec: Recorder) -> None:
    _compute(ctx, rec, "cached")


# ---------------------------------------------------------------------------------------------- 6. distance


def step_distance(ctx: Context, rec: Recorder) -> None:
    import fidkit.frechet.trace_sqrt as trace_sqrt
    from fidkit import Stats, fid_from_stats
    from fidkit.frechet.torch_route import COLD_CUDA_MIN_RANK, torch_device_for_distance

    dim = 256 if ctx.quick else 2048
    rng = np.random.default_rng(2)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    spectrum = np.geomspace(10.0, 1e-6, dim)  # decaying, as Inception features' covariances

    def stats(scale: np.ndarray, n: int) -> Stats:
        sigma = (basis * (spectrum * scale)) @ basis.T
        return Stats(mu=rng.normal(0.0, 0.01, dim), sigma=(sigma + sigma.T) / 2, n=n)

    def fresh_pair() -> tuple[Stats, Stats]:
        return stats(np.ones(dim), 50_000), stats(rng.uniform(0.8, 1.2, dim), 10_000)

    rec.put("dim", dim)
    rec.put("fidkit_choice_cold", torch_device_for_distance(dim) or "scipy")
    started = time.perf_counter()
    scipy_result = fid_from_stats(*fresh_pair())
    scipy_seconds = time.perf_counter() - started
    rec.put("scipy", {"seconds": scipy_seconds, "solver": scipy_result.solver})
    rec.row(f"distance dim {dim}, fresh pair, fidkit's choice with CUDA cold", f"{scipy_seconds:.2f} s",
            f"solver {scipy_result.solver}; torch imported: {'torch' in sys.modules}")
    device = "cuda" if ctx.gpu else "cpu"
    started = time.perf_counter()
    importlib.import_module("torch")  # timed: part of what the first GPU solve costs a process without torch

    import_seconds = time.perf_counter() - started
    original_choice, original_min = trace_sqrt.torch_device_for_distance, trace_sqrt._TORCH_SOLVER_MIN_RANK
    trace_sqrt.torch_device_for_distance = lambda rank=0: device
    trace_sqrt._TORCH_SOLVER_MIN_RANK = 1
    try:
        times = []
        for _ in range(2):  # the first pays CUDA's initialisation, the second is warm
            pair = fresh_pair()
            started = time.perf_counter()
            result = fid_from_stats(*pair)
            times.append(time.perf_counter() - started)
    finally:
        trace_sqrt.torch_device_for_distance, trace_sqrt._TORCH_SOLVER_MIN_RANK = original_choice, original_min
    rec.put("torch", {"device": device, "import_seconds": import_seconds, "first_seconds": times[0],
                      "warm_seconds": times[1], "solver": result.solver})
    first = "CUDA initialisation included" if ctx.gpu else "the first"
    rec.row(f"distance dim {dim}, torch float64 on {device}", f"{times[1]:.3f} s warm",
            f"first call {times[0]:.2f} s ({first}), import torch {import_seconds:.2f} s; scipy {scipy_seconds:.2f} s")
    rec.put("fidkit_choice_after", torch_device_for_distance(dim) or "scipy")
    rec.row("fidkit's solver choice", f"{rec.data['fidkit_choice_cold']}, then {rec.data['fidkit_choice_after']}",
            "before and after this process used CUDA: torch's solver only once CUDA is up (or rank >= "
            f"{COLD_CUDA_MIN_RANK})")


# ---------------------------------------------------------------------------------------------- 9. overlap


def step_overlap(ctx: Context, rec: Recorder) -> None:
    """The extraction loop as a run uses it (the test zip's JPEGs decoded by workers, statistics accumulated),
    with the statistics in a second thread while the network runs the next batch (the default on a GPU) and
    without, in alternating rounds after an untimed one; images/s of each, best of its rounds, and the statistics
    and the order of the batches the sinks got compared."""
    from fidkit.extraction import extract
    from fidkit.inception import FeatureExtractor
    from fidkit.sources import open_source
    from fidkit.stats import StatsAccumulator

    extractor = FeatureExtractor(ctx.weights, device=ctx.device)
    n_images = 5_000 if ctx.gpu else 16
    rec.put("images", n_images)
    data = ctx.data_path("test.zip")
    if not data.is_file():  # a call without the data step (--steps ... overlap): its own zip
        data = ctx.data_path("overlap.zip")
        data.parent.mkdir(parents=True, exist_ok=True)
        make_jpeg_zip(_read_seed_images(ctx.args.seed_images, 64)[0], 0, n_images, data, None)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_overlap import BatchOrder

    # One round untimed: the decoding workers' start and the network's first batches are paid by neither way.
    extract(open_source(data, limit=n_images, workers=os.cpu_count()).batches(extractor.batch_size), extractor,
            StatsAccumulator(dim=extractor.feature_dim), overlap=False)
    best: dict[bool, float] = {}
    stats: dict[bool, Any] = {}
    orders: dict[bool, list[str]] = {}
    for overlap in (False, True, False, True):
        source = open_source(data, limit=n_images, workers=os.cpu_count())
        accumulator, order = StatsAccumulator(dim=extractor.feature_dim), BatchOrder()
        started = time.perf_counter()
        times = extract(source.batches(extractor.batch_size), extractor, accumulator, order, overlap=overlap)
        rate = n_images / (time.perf_counter() - started)
        best[overlap] = max(best.get(overlap, 0.0), rate)
        stats[overlap] = accumulator.result()
        orders[overlap] = order.digests
        rec.put(f"overlap={overlap}", {"best_images_per_second": best[overlap], "network_seconds": times.network_seconds,
                                       "decode_wait_seconds": times.decode_seconds})
    same = bool(np.array_equal(stats[True].mu, stats[False].mu)
                and np.array_equal(stats[True].sigma, stats[False].sigma) and orders[True] == orders[False])
    rec.put("statistics_equal", same)
    rec.row("extraction loop, statistics overlapped (default on a GPU)", f"{best[True]:,.0f} images/s",
            f"{best[True] / best[False]:.2f}x the plain loop ({best[False]:,.0f}); {n_images:,} JPEGs, batch "
            f"{extractor.batch_size}, statistics and batch order {'equal' if same else 'DIFFERENT'}")


# ---------------------------------------------------------------------------------------------- 7. peers


def _peer_weights(ctx: Context) -> Path:
    """The same weights where pytorch-fid looks for its download (``$TORCH_HOME/hub/checkpoints``)."""
    torch_home = ctx.work / "torch-home"
    target = torch_home / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        shutil.copyfile(ctx.weights, target)
    os.environ["TORCH_HOME"] = str(torch_home)
    return target


def _subset_folders(ctx: Context, count: int) -> tuple[Path, Path]:
    folders = []
    for name in ("train", "test"):
        subset = ctx.work / "data" / f"{name}-subset"
        if not subset.is_dir():
            subset.mkdir()
            for file in sorted(ctx.data_path(name).iterdir())[:count]:
                shutil.copyfile(file, subset / file.name)
        folders.append(subset)
    return folders[0], folders[1]


def _peer(ctx: Context, rec: Recorder, fid_of: Callable[[Path, Path, str], float]) -> None:
    subset = _subset_folders(ctx, 500)
    if ctx.gpu:
        values = {device: fid_of(*subset, device) for device in ("cpu", "cuda")}
        deviation = abs(values["cuda"] - values["cpu"]) / max(abs(values["cpu"]), 1e-30)
        rec.put("subset_cpu_vs_gpu", {**values, "relative": deviation})
        rec.row("their GPU FID vs their CPU FID", f"{deviation:.1e}", "relative, 500 + 500 images")
    started = time.perf_counter()
    value = fid_of(ctx.data_path("train"), ctx.data_path("test"), ctx.device)
    seconds = time.perf_counter() - started
    rec.put("full", {"fid": value, "seconds": seconds, "device": ctx.device})
    n_images = sum(1 for _ in ctx.data_path("train").iterdir()) + sum(1 for _ in ctx.data_path("test").iterdir())
    rec.row(f"FID on {ctx.device}", f"{seconds:.2f} s", f"{n_images:,} images, FID {value:.4g}")


def step_torch_fidelity(ctx: Context, rec: Recorder) -> None:
    try:
        import torch_fidelity
    except ImportError as exc:  # installed without torchvision, say
        raise StepSkipped(f"torch_fidelity is not importable ({exc})") from exc

    weights = _peer_weights(ctx)
    rec.put("version", torch_fidelity.__version__)

    def fid_of(a: Path, b: Path, device: str) -> float:
        metrics = torch_fidelity.calculate_metrics(input1=str(a), input2=str(b), cuda=device == "cuda", fid=True,
                                                   feature_extractor_weights_path=str(weights), verbose=False,
                                                   cache=False)
        return float(metrics["frechet_inception_distance"])

    _peer(ctx, rec, fid_of)


def step_pytorch_fid(ctx: Context, rec: Recorder) -> None:
    try:
        from pytorch_fid.fid_score import calculate_fid_given_paths
    except ImportError as exc:  # installed without torchvision, say
        raise StepSkipped(f"pytorch_fid is not importable ({exc})") from exc

    _peer_weights(ctx)

    def fid_of(a: Path, b: Path, device: str) -> float:
        return float(calculate_fid_given_paths([str(a), str(b)], 50, device, 2048, num_workers=min(8, os.cpu_count() or 1)))

    _peer(ctx, rec, fid_of)


# ---------------------------------------------------------------------------------------------- 8. compile


def step_torch_compile(ctx: Context, rec: Recorder) -> None:
    """torch.compile of the plain module (fidkit's torch engine has no compiled mode), fp32, TF32 off."""
    import torch

    from fidkit.inception.network import build_network
    from fidkit.inception.spec import default_batch_size
    from fidkit.inception.weights import load_state_dict

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    device = torch.device(ctx.device)
    model = build_network(load_state_dict(ctx.weights)).to(device).eval()
    batch = default_batch_size(ctx.gpu) if ctx.gpu else 2
    x = torch.randn(batch, 3, 299, 299, device=device)
    sync = torch.cuda.synchronize if ctx.gpu else (lambda: None)
    started = time.perf_counter()
    compiled = torch.compile(model)
    with torch.inference_mode():
        compiled(x)
    sync()
    rec.put("compile_seconds", time.perf_counter() - started)
    repeats = max(1, (GPU_IMAGES if ctx.gpu else 4) // batch)
    for label, module in (("eager", model), ("compiled", compiled)):
        def run(module: Any = module) -> None:
            with torch.inference_mode():
                for _ in range(repeats):
                    module(x)

        rate = _rate(run, repeats * batch, sync)
        rec.put(f"{label} @ {batch}", rate)
        rec.row(f"plain torch fp32 {label}, batch {batch}", f"{rate:,.0f} images/s",
                f"compiled in {rec.data['compile_seconds']:.1f} s" if label == "compiled" else "")


# ---------------------------------------------------------------------------------------------- 8. provider options


def _session_runner(session: Any, device: str, batch: int, height: int, width: int, bound: bool) -> Callable:
    """A function that runs one full batch of uint8 images through `session` and returns its pool_3 features.

    Not `bound`: fidkit's own way (host input bound, onnxruntime copies it; output bound to a host array).
    `bound`: one input and one output buffer on `device`, bound once, the images copied into it each batch: the
    fixed addresses CUDA graphs need.
    """
    import onnxruntime as ort

    from fidkit.inception.spec import GRAPH_OUTPUTS

    input_name, output_name = session.get_inputs()[0].name, GRAPH_OUTPUTS["pool_3"]
    if not bound:
        def run(chunk: np.ndarray) -> np.ndarray:
            binding = session.io_binding()
            binding.bind_cpu_input(input_name, np.ascontiguousarray(chunk))
            out = np.empty((len(chunk), 2048), dtype=np.float32)
            binding.bind_output(output_name, "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
            session.run_with_iobinding(binding)
            return out

        return run
    images = ort.OrtValue.ortvalue_from_shape_and_type([batch, height, width, 3], np.uint8, device, 0)
    features = ort.OrtValue.ortvalue_from_shape_and_type([batch, 2048], np.float32, device, 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input(input_name, images)
    binding.bind_ortvalue_output(output_name, features)

    def run_bound(chunk: np.ndarray) -> np.ndarray:
        images.update_inplace(np.ascontiguousarray(chunk))
        binding.synchronize_inputs()  # the copy has landed before the network's stream reads it
        session.run_with_iobinding(binding)
        return features.numpy()

    return run_bound


def step_cuda_options(ctx: Context, rec: Recorder) -> None:
    """The CUDA provider's options fidkit does not set, each measured against fidkit's own at the default batch:
    the cuDNN algorithm search (fidkit: EXHAUSTIVE), NHWC kernels, CUDA graphs (fixed buffers and shape). Each
    variant's session creation, first batch (its plan search), images/s, and features against the CPU provider's:
    what to keep is what is faster at the same exactness. Without a GPU: the same harness on the CPU provider."""
    import onnxruntime as ort

    from fidkit.inception import FeatureExtractor
    from fidkit.inception.providers import Device, preload_gpu_libraries, provider_entries, quiet_onnxruntime
    from fidkit.inception.spec import default_batch_size

    batch = default_batch_size(True) if ctx.gpu else 4
    n_batches = max(1, GPU_IMAGES // batch) if ctx.gpu else 2
    height = width = 32
    images = np.random.default_rng(3).integers(0, 256, (n_batches * batch, height, width, 3), dtype=np.uint8)
    cpu = FeatureExtractor(ctx.weights, device="cpu", batch_size=batch)
    reference = cpu(images[:batch])
    graph = str(cpu.graph_path)
    quiet_onnxruntime(ort)
    if ctx.gpu:
        preload_gpu_libraries(ort)
        cuda = dict(provider_entries(Device("cuda"), precision="exact", tensorrt_cache=None)[0][1])
        variants: list[tuple[str, dict[str, str] | None, bool]] = [
            # The most wanted first: a step stopped at its limit keeps what it had measured.
            ("as fidkit (EXHAUSTIVE search)", {}, False),
            ("CUDA graph (fixed buffers)", {"enable_cuda_graph": "1"}, True),
            ("prefer_nhwc", {"prefer_nhwc": "1"}, False),
            ("fixed device buffers", {}, True),
            ("CUDA graph + prefer_nhwc", {"enable_cuda_graph": "1", "prefer_nhwc": "1"}, True),
            ("HEURISTIC search", {"cudnn_conv_algo_search": "HEURISTIC"}, False),
            ("DEFAULT search", {"cudnn_conv_algo_search": "DEFAULT"}, False),
        ]
    else:
        variants = [
            ("CPU provider (smoke test)", None, False),
            ("CPU provider, fixed buffers (smoke test)", None, True),
        ]
    rec.put("batch", batch)
    for label, options, bound in variants:
        providers = (
            ["CPUExecutionProvider"] if options is None
            else [("CUDAExecutionProvider", {**cuda, **options}), "CPUExecutionProvider"]
        )
        try:
            clock = time.perf_counter()
            no_fallback = {} if options is None else {"enable_fallback": 0}
            session = ort.InferenceSession(graph, providers=providers, **no_fallback)
            created = time.perf_counter() - clock
            run = _session_runner(session, "cpu" if options is None else "cuda", batch, height, width, bound)
            clock = time.perf_counter()
            features = run(images[:batch]).copy()
            first = time.perf_counter() - clock
            rate = _rate(lambda: [run(images[i : i + batch]) for i in range(0, len(images), batch)], len(images))
            deviation = _relative_error(features, reference)
            again = _relative_error(run(images[:batch]), features)  # a replayed CUDA graph must give the same rows
        except Exception as exc:  # noqa: BLE001 - an option this onnxruntime refuses is a finding, not a stop
            rec.put(label, f"fails: {type(exc).__name__}: {exc}")
            rec.row(label, "fails", f"{type(exc).__name__}: {str(exc)[:150]}")
            continue
        rec.put(label, {"images_per_s": rate, "session_s": created, "first_batch_s": first,
                        "feature_deviation_from_cpu": deviation, "rerun_deviation": again,
                        "provider": session.get_providers()[0]})
        rec.row(f"{label}, batch {batch}", f"{rate:,.0f} images/s",
                f"session {created:.1f} s, first batch {first:.1f} s; features {deviation:.1e} from the CPU "
                f"provider, rerun {again:.0e}")


# ---------------------------------------------------------------------------------------------- 9. bootstrap


def step_bootstrap(ctx: Context, rec: Recorder) -> None:
    """bootstrap_fid at 50,000 + 10,000 x 2048 (issue 18: 200 resamples in under a minute on a workstation's CPU):
    on this machine's cores, as bootstrap_fid runs them (resamples in threads), and on the GPU (torch), with the
    seconds per resample, the setup, what 200 resamples would take, and the GPU's values against the CPU's."""
    from fidkit.frechet import fid_from_arrays
    from fidkit.metrics import _fid_resample

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_metrics import pool3_like

    (n_a, n_b), dim, n_resamples = ((50_000, 10_000), 2048, 32) if ctx.gpu else ((600, 400), 64, 4)
    a, b = pool3_like(8, n_a, dim, shift=0.02), pool3_like(9, n_b, dim)
    rng = np.random.default_rng(0)
    draws = [_fid_resample.resample_counts(rng, n_a, n_b) for _ in range(n_resamples)]
    workers = _fid_resample.blas_threads()
    rec.put("sizes", {"n_a": n_a, "n_b": n_b, "dim": dim, "resamples_timed": n_resamples, "workers": workers})
    # (label, torch device, two-stage eigensolver in the threads): the default first; last, the CPU threads with
    # LAPACK's two-stage eigensolver, which avoids dsyevd's memory traffic (11 GB per resample at 2048): whether
    # that pays when 16 cores share one cache decides Resampler.two_stage_in_threads.
    engines = [("CPU, dsyevd", None, False)] + ([("GPU", "cuda", False)] if ctx.gpu else [])
    engines.append(("CPU, dsyevd_2stage", None, True))
    values: dict[str, np.ndarray] = {}
    clock = time.perf_counter()
    fid_from_arrays(a, b)  # bootstrap_fid's point value, once per call
    point = time.perf_counter() - clock
    for label, device, two_stage in engines:
        clock = time.perf_counter()
        resampler = _fid_resample.Resampler(a, b, "float32", device)
        resampler.two_stage_in_threads = two_stage
        setup = point + time.perf_counter() - clock
        resampler.fid(*draws[0])  # the first call: CUDA's start, plans, workspace queries
        clock = time.perf_counter()
        values[label] = np.array(resampler.fids(draws, workers))
        per_resample = (time.perf_counter() - clock) / n_resamples
        rec.put(f"{label}", {"seconds_per_resample": per_resample, "setup_seconds": setup, "routes": resampler.routes,
                             "seconds_for_200": setup + 200 * per_resample})
        rec.row(f"bootstrap_fid on the {label}, {n_a:,} + {n_b:,} x {dim}",
                f"{per_resample:.3f} s per resample",
                f"{200 * per_resample + setup:.0f} s for 200 with the setup and point value ({setup:.1f} s); "
                f"{workers if device is None else 1} at a time; routes with the warm-up: {resampler.route}")
    if "GPU" in values:
        difference = float(np.max(np.abs(values["GPU"] / values["CPU, dsyevd"] - 1.0)))
        rec.put("gpu_vs_cpu_relative", difference)
        rec.row("bootstrap_fid, GPU values against the CPU's", f"{difference:.1e}", "max relative difference")


STEP_FUNCTIONS: dict[str, Callable[[Context, Recorder], None]] = {
    "setup": step_setup,
    "exactness": step_exactness,
    "network": step_network,
    "data": step_data,
    "compute-cold": step_compute_cold,
    "compute-cached": step_compute_cached,
    "distance": step_distance,
    "overlap": step_overlap,
    "torch-fidelity": step_torch_fidelity,
    "pytorch-fid": step_pytorch_fid,
    "cuda-options": step_cuda_options,
    "bootstrap": step_bootstrap,
    "torch-compile": step_torch_compile,
}


# ---------------------------------------------------------------------------------------------- driver


def _step_name(text: str) -> str:
    """A step as the step list spells it (``cuda-options``) or as its JSON key with underscores (``cuda_options``)."""
    name = text.strip().replace("_", "-")
    if name not in STEP_NAMES:
        raise argparse.ArgumentTypeError(f"unknown step {text!r}; the steps are {', '.join(STEP_NAMES)}")
    return name


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="Inception weights .pth (default: random, exact layout)")
    parser.add_argument("--seed-images", type=Path, default=None,
                        help="the real images the end-to-end data is made from: a zip or folder of JPEGs, or a "
                             "uint8 .npy (default: DATA/cifar10/cifar10-test-jpg.zip if present, else synthetic)")
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data",
                        help="the shared data folder (for the default seed images)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "bench_gpu.json",
                        help="the JSON written (default benchmarks/out/bench_gpu.json, git-ignored)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes on whatever is there, the CPU included: a smoke test of the script. Without "
                             "it, a machine whose CUDA provider cannot start is refused at once, saying why")
    parser.add_argument("--budget", type=float, default=None,
                        help=f"seconds for the whole run (default: a --plan's steps' limits + {PARENT_S}; else "
                             f"{DEFAULT_BUDGET_S} on a GPU, {QUICK_BUDGET_S} quick); steps' limits that add up to "
                             "more are scaled down to fit")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--plan", choices=sorted(PLANS),
                       help="one of the GPU session's two device commands: " + "; ".join(
                           f"{name}: {' '.join(steps)}" for name, steps in PLANS.items()))
    which.add_argument("--steps", nargs="+", type=_step_name, default=None, metavar="STEP",
                       help=f"only these steps, in the list's order (setup always runs): {', '.join(STEP_NAMES)}")
    parser.add_argument("--home", type=Path, default=None,
                        help="FIDKIT_HOME kept after the run (the exported graph): the second device command reuses "
                             "the first's; an empty or new folder, or one an earlier run of this script made")
    parser.add_argument("--make-seed", nargs=2, type=Path, metavar=("SRC_ZIP", "DST_ZIP"),
                        help="copy the first --seed-count JPEGs of SRC_ZIP into DST_ZIP (to carry to a GPU machine)")
    parser.add_argument("--seed-count", type=int, default=2000)
    # Internal: one step, in its own process.
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=float, default=60.0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def plan_steps(args: argparse.Namespace, quick: bool) -> tuple[list[tuple[str, float]], float]:
    """The steps this run takes, each with its time limit, and the run's budget.

    A ``--plan`` runs its steps in its order; ``--steps`` (or nothing: every step) in :data:`STEPS`'s order, with
    ``setup`` first. The budget is ``--budget``, else a plan's limits plus :data:`PARENT_S`, else the default. Where
    the limits add up to more than the budget leaves the steps, each is scaled down by the same factor, so that
    every step gets its share however long the ones before it take.
    """
    if args.plan is not None:
        names = list(PLANS[args.plan])
    else:
        wanted = set(args.steps or STEP_NAMES) | {"setup"}
        names = [name for name in STEP_NAMES if name in wanted]
    if not args.compile:
        names = [name for name in names if name != "torch-compile"]
    own = {name: (quick_limit if quick else gpu_limit) for name, gpu_limit, quick_limit in STEPS}
    total = sum(own[name] for name in names)
    if args.budget is not None:
        budget = float(args.budget)
    elif args.plan is not None and not quick:
        budget = float(total + PARENT_S)
    else:
        budget = float(QUICK_BUDGET_S if quick else DEFAULT_BUDGET_S)
    scale = min(1.0, max(budget - PARENT_S, 0.0) / total) if total else 1.0
    return [(name, own[name] * scale) for name in names], budget


def _run_step(args: argparse.Namespace) -> int:
    """In the step's own process: run it, recording as it goes; an exception is recorded too."""
    import warnings

    warnings.simplefilter("ignore")  # lossy JPEG and small-sample warnings are expected here
    signal.signal(signal.SIGTERM, _stop_children)
    ctx = Context(args)
    rec = Recorder(args.work / "results" / f"{args.step}.json")
    try:
        STEP_FUNCTIONS[args.step](ctx, rec)
    except StepSkipped as exc:
        rec.put("skipped", str(exc))
        print(f"  skipped: {exc}", flush=True)
    except Exception as exc:  # noqa: BLE001 - recorded and reported by the parent
        rec.put("error", f"{type(exc).__name__}: {exc}")
        traceback.print_exc(limit=4)
        return 1
    return 0


def _make_seed(source: Path, target: Path, count: int) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as out:
        names = [name for name in sorted(archive.namelist()) if name.lower().endswith((".jpg", ".jpeg", ".png"))]
        for name in names[:count]:
            out.writestr(name, archive.read(name))
    print(f"{min(count, len(names))} images from {source} -> {target} ({target.stat().st_size / 1e6:.1f} MB)")
    return 0


def gpu_problem() -> str | None:
    """Why the CUDA provider cannot start here (asked in a child process: this one stays free of onnxruntime and
    torch), or None where it can."""
    code = (
        "import sys\n"
        "from fidkit.errors import FidkitError\n"
        "from fidkit.inception.providers import check_device_usable\n"
        "try:\n"
        "    check_device_usable('cuda', engine='onnxruntime')\n"
        "except FidkitError as error:\n"
        "    try:\n"
        "        import onnxruntime\n"
        "        where = f'onnxruntime {onnxruntime.__version__} from {onnxruntime.__file__}'\n"
        "    except ImportError as missing:\n"
        "        where = f'onnxruntime cannot be imported: {missing}'\n"
        "    print(f'{error} ({where})')\n"
        "    sys.exit(1)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO_ROOT)])))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if done.returncode == 0:
        return None
    lines = (done.stdout.strip() or done.stderr.strip()).splitlines()
    return lines[-1] if lines else f"the check exited {done.returncode} without a reason"


#: The file that marks a --home folder as this script's (only such a folder, or an empty one, is used).
HOME_MARK = "fidkit-bench-gpu-home"


def _bench_home(path: Path) -> Path:
    """`path` as the run's FIDKIT_HOME, kept after it: an empty or new folder (marked) or one marked earlier."""
    path = path.resolve()
    if path.exists() and any(path.iterdir()) and not (path / HOME_MARK).is_file():
        raise SystemExit(f"bench_gpu.py: error: --home {path} holds files this script did not make; pass an empty or "
                         "new folder (its compute-cold step clears the statistics cached there)")
    path.mkdir(parents=True, exist_ok=True)
    (path / HOME_MARK).write_text("FIDKIT_HOME of benchmarks/bench_gpu.py: the graph it exported, its statistics\n")
    return path


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.step is not None:
        return _run_step(args)
    if args.make_seed:
        return _make_seed(*args.make_seed, args.seed_count)
    started = time.perf_counter()
    problem = gpu_problem()
    gpu = problem is None
    if not gpu and not args.quick:
        # In seconds, not after half an hour of CPU smoke test that measures nothing.
        print(f"bench_gpu.py: error: CUDA cannot run here: {problem}. On the GPU machine, onnxruntime-gpu must come "
              "first on PYTHONPATH (extract .ortgpu/ort.tar.xz, docs/performance.md); pass --quick for the CPU smoke "
              "test", file=sys.stderr)
        return 2
    quick = args.quick or not gpu
    steps, budget = plan_steps(args, quick)
    deadline = started + budget
    home = _bench_home(args.home) if args.home is not None else None
    work = Path(tempfile.mkdtemp(prefix="fidkit-bench-gpu-"))
    (work / "results").mkdir()
    home = home or work / "home"
    env = dict(os.environ, FIDKIT_HOME=str(home), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO_ROOT)])))
    env.pop("FIDKIT_WEIGHTS", None)
    results: dict[str, Any] = {"gpu": gpu, "quick": quick, "budget_seconds": budget, "plan": args.plan,
                               "home": str(home) if args.home else "temporary", "steps": {}}
    if not gpu:
        print(f"No usable CUDA provider here ({problem}): every step runs on the CPU at tiny sizes (a smoke test).",
              flush=True)
    try:
        if args.weights:
            weights, results["weights"] = str(Path(args.weights).resolve()), "given weights"
        else:
            from fidkit.inception.weights import save_state_dict
            from fidkit.testing import random_state_dict

            # In a kept --home, made once and reused: the graph there is keyed by the weights file's hash (which a
            # new file of the same values does not keep).
            kept = args.home is not None and (home / "random-inception.pth").is_file()
            path = home / "random-inception.pth" if args.home is not None else work / "random-inception.pth"
            weights = str(path if kept else save_state_dict(random_state_dict(seed=0), path, legacy=True))
            results["weights"] = "random weights of the exact layout" + (" (kept in --home)" if kept else "")
        _write_json(work / "state.json", {"gpu": gpu, "weights": weights})
        for name, own_limit in steps:
            if name in ("torch-fidelity", "pytorch-fid") and name.replace("-", "_") not in _peers_importable():
                results["steps"][name] = {"status": "skipped: not importable"}
                continue
            left = deadline - time.perf_counter() - PARENT_S / 2  # the table's time kept
            limit = min(own_limit, left)
            if limit < 5:
                results["steps"][name] = {"status": f"skipped: the {budget:.0f} s budget is spent"}
                continue
            print(f"\n== {name} (limit {limit:.0f} s)", flush=True)
            command = [sys.executable, str(Path(__file__).resolve()), "--step", name, "--work", str(work),
                       "--limit", str(limit), "--data", str(args.data)]
            command += ["--quick"] if quick else []
            command += ["--seed-images", str(args.seed_images.resolve())] if args.seed_images else []
            step_started = time.perf_counter()
            process = subprocess.Popen(command, env=env, start_new_session=True)
            try:
                status = f"exit {process.wait(timeout=limit)}"
            except subprocess.TimeoutExpired:
                # SIGTERM first: the step ends what it started in other process groups (fidkit compute), then
                # SIGKILL for whatever of its own group is still there (a C call that does not return).
                with contextlib.suppress(OSError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    pass
                with contextlib.suppress(OSError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                status = f"timeout after {limit:.0f} s"
                print(f"  {name}: stopped at its limit ({limit:.0f} s); what it had measured is kept", flush=True)
            path = work / "results" / f"{name}.json"
            step = json.loads(path.read_text()) if path.exists() else {"rows": []}
            if "skipped" in step:
                step["status"] = f"skipped: {step['skipped']}"
            else:
                step["status"] = "ok" if status == "exit 0" else step.get("error", status)
            step["seconds"] = round(time.perf_counter() - step_started, 2)
            results["steps"][name] = step
            results["total_seconds"] = round(time.perf_counter() - started, 1)
            _write_json(args.out, results)  # as they come: a later timeout or crash keeps this
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    _write_json(args.out, results)
    print("\n| step | check | result | note |\n|---|---|---|---|")
    for name, step in results["steps"].items():
        for check, value, note in step.get("rows", []):
            print(f"| {name} | {check} | {value} | {note} |")
        if step.get("status") != "ok":
            print(f"| {name} | status | {step.get('status')} | {step.get('seconds', 0)} s |")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
    print(f"\nwritten {args.out} ({results['total_seconds']} s in all; largest step process {peak:.2f} GB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
