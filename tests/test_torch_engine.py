"""The torch engine (TorchFeatureExtractor) and the torch float64 route of the distance, on the CPU.

The engine is checked against the ONNX graph it must reproduce: the resize bit for bit against the numpy
reference (itself pinned to TensorFlow's bytes), the features and an FID against the onnxruntime
FeatureExtractor on the same random weights. Inception runs at a few images per second here, so every test
feeds a handful of small images and the features are computed once per module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from types import SimpleNamespace

import numpy as np
import pytest

import fidkit
from fidkit.errors import FidkitError, InputError
from fidkit.inception import EXPORTER_VERSION, FEATURE_DIM, RESIZE_MODE
from fidkit.inception.spec import CPU_BATCH_SIZE
from fidkit.testing import tf_resize_bilinear_numpy

torch = pytest.importorskip("torch")

from fidkit.frechet.torch_route import torch_device_for_distance  # noqa: E402
from fidkit.inception.torch_engine import TorchFeatureExtractor, torch_resize_bilinear  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent

#: max |torch - onnx| / max |feature| asserted between the two engines. Both are float32 evaluations of the
#: same network that differ in convolution summation order and in BatchNorm folded (graph) or applied
#: (torch); on these random weights each sits 1.4e-6 .. 2e-6 of the feature scale from a float64 evaluation
#: (test_both_engines_are_float32_roundoff_from_float64), so they differ by up to about 7e-6 from each other:
#: the requested 1e-6 is below float32 round-off through 94 layers and cannot be met by any reordering.
FEATURE_RTOL = 1e-5
#: The same for an FID of two small sets computed from each engine's features (measured: 3.7e-8; the feature
#: differences are round-off, uncorrelated with the differences between the sets).
FID_RTOL = 1e-6


def _noise(seed: int, n: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def _smooth(seed: int, n: int, height: int, width: int) -> np.ndarray:
    """Low-resolution noise upsampled by nearest neighbour: a different distribution from pixel noise."""
    coarse = _noise(seed, n, 4, 4)
    rows = np.arange(height) * 4 // height
    cols = np.arange(width) * 4 // width
    return np.ascontiguousarray(coarse[:, rows][:, :, cols])


def _relative(got: np.ndarray, expected: np.ndarray) -> float:
    scale = float(np.max(np.abs(expected)))
    assert scale > 0
    return float(np.max(np.abs(got - expected))) / scale


# Each set is batches of different sizes; an extractor takes one size per call.
SET_A = [("noise", 1, 2, 32, 32), ("noise", 2, 1, 17, 23), ("noise", 3, 1, 299, 299)]
SET_B = [("smooth", 4, 2, 32, 32), ("smooth", 5, 1, 300, 400), ("smooth", 6, 1, 1, 299)]


def _batches(spec):
    make = {"noise": _noise, "smooth": _smooth}
    return [make[kind](seed, n, h, w) for kind, seed, n, h, w in spec]


@pytest.fixture(scope="module")
def torch_extractor(random_weights_path: Path) -> TorchFeatureExtractor:
    return TorchFeatureExtractor(random_weights_path, device="cpu")


@pytest.fixture(scope="module")
def features(torch_extractor, extractor) -> dict[str, list[np.ndarray]]:
    """Features of SET_A and SET_B by both engines, per batch: {"torch_a": [...], "onnx_a": [...], ...}."""
    out: dict[str, list[np.ndarray]] = {}
    for side, spec in (("a", SET_A), ("b", SET_B)):
        batches = _batches(spec)
        out[f"torch_{side}"] = [torch_extractor(batch) for batch in batches]
        out[f"onnx_{side}"] = [extractor(batch) for batch in batches]
    return out


# --- import hygiene -------------------------------------------------------------------------------------


def test_modules_import_without_torch() -> None:
    code = (
        "import json, sys\n"
        "import fidkit, fidkit.inception.torch_engine, fidkit.frechet.torch_route\n"
        "loaded = 'torch' in sys.modules\n"
        "from fidkit._gpu import gpu_driver_present\n"
        "from fidkit.frechet.torch_route import torch_device_for_distance\n"
        "device = torch_device_for_distance()\n"
        "print(json.dumps({'loaded': loaded, 'device': device, 'driver': gpu_driver_present(),\n"
        "                  'after': 'torch' in sys.modules}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] is False
    # CUDA not started in this process and no problem size to pay for starting it: scipy, without paying for
    # `import torch`, driver or not (tests/test_distance_solver.py has the rest of the policy).
    assert report["device"] is None and report["after"] is False


def test_device_for_distance_with_torch_imported() -> None:
    assert torch_device_for_distance(2048) == ("cuda" if torch.cuda.is_initialized() else None)


# --- the resize -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(32, 32), (17, 23), (300, 400), (1, 299), (299, 299), (1024, 1024)])
def test_resize_is_bitwise_the_numpy_reference(size) -> None:
    images = _noise(20, 2, *size)
    got = torch_resize_bilinear(torch.from_numpy(images)).numpy()
    expected = tf_resize_bilinear_numpy(images)
    assert got.dtype == np.float32 and got.shape == (2, 299, 299, 3)
    assert got.tobytes() == expected.tobytes()


def test_resize_checkerboard_and_non_contiguous_input() -> None:
    board = (np.indices((32, 32)).sum(axis=0) % 2 * 255).astype(np.uint8)
    images = np.stack([board, 255 - board, board], axis=-1)[None]
    got = torch_resize_bilinear(torch.from_numpy(images)).numpy()
    assert got.tobytes() == tf_resize_bilinear_numpy(images).tobytes()
    strided = torch.from_numpy(_noise(22, 1, 40, 60))[:, :, ::2]
    assert not strided.is_contiguous()
    got = torch_resize_bilinear(strided).numpy()
    assert got.tobytes() == tf_resize_bilinear_numpy(strided.numpy()).tobytes()


# --- features against the ONNX graph --------------------------------------------------------------------


@pytest.mark.slow
def test_features_match_the_onnx_graph(features) -> None:
    worst = 0.0
    for side in ("a", "b"):
        for got, expected in zip(features[f"torch_{side}"], features[f"onnx_{side}"]):
            assert got.dtype == np.float32 and got.shape == expected.shape and got.shape[1] == FEATURE_DIM
            assert np.all(np.isfinite(got))
            worst = max(worst, _relative(got, expected))
    print(f"torch vs onnx features: max |diff| / max |feature| = {worst:.3g}")
    assert worst <= FEATURE_RTOL


@pytest.mark.filterwarnings("ignore::fidkit.SmallSampleWarning")
def test_fid_matches_the_onnx_graph(features) -> None:
    torch_fid = fidkit.fid_from_arrays(np.concatenate(features["torch_a"]), np.concatenate(features["torch_b"]))
    onnx_fid = fidkit.fid_from_arrays(np.concatenate(features["onnx_a"]), np.concatenate(features["onnx_b"]))
    relative = abs(torch_fid.value - onnx_fid.value) / onnx_fid.value
    print(f"FID torch {torch_fid.value!r} onnx {onnx_fid.value!r}: relative difference {relative:.3g}")
    assert onnx_fid.value > 0 and relative <= FID_RTOL


def test_both_engines_are_float32_roundoff_from_float64(torch_extractor, features) -> None:
    """Why the engines differ by a few 1e-6: each is that far from a float64 evaluation of the same network."""
    images = _batches(SET_A)[0]
    from fidkit.inception.network import build_network
    from fidkit.inception.weights import load_state_dict

    model64 = build_network(load_state_dict(torch_extractor.weights_path)).double()
    with torch.inference_mode():
        normalized = (torch_resize_bilinear(torch.from_numpy(images)) - 128.0) * 0.0078125
        reference = model64(normalized.double().permute(0, 3, 1, 2).contiguous()).numpy()
    torch_error = _relative(features["torch_a"][0], reference)
    onnx_error = _relative(features["onnx_a"][0], reference)
    print(f"vs float64: torch {torch_error:.3g}, onnx {onnx_error:.3g}")
    assert torch_error <= 5e-6 and onnx_error <= 5e-6


# --- the extractor's interface --------------------------------------------------------------------------


def test_attributes_and_metadata(torch_extractor, extractor, random_weights_path: Path) -> None:
    assert torch_extractor.weights_path == random_weights_path
    assert torch_extractor.weights_sha256 == extractor.weights_sha256
    assert torch_extractor.graph_sha256 == ""
    assert torch_extractor.provider == "torch-cpu"
    assert torch_extractor.feature_dim == FEATURE_DIM and torch_extractor.resize_mode == RESIZE_MODE
    assert torch_extractor.batch_size == CPU_BATCH_SIZE
    meta = torch_extractor.metadata()
    # The onnxruntime extractor's keys (which gain "engine" elsewhere), plus "engine".
    assert set(meta) == (set(extractor.metadata()) | {"engine"})
    assert meta["engine"] == "torch"
    assert meta["provider"] == "torch-cpu" and meta["graph_sha256"] == ""
    assert meta["weights_sha256"] == extractor.weights_sha256
    assert meta["resize_mode"] == RESIZE_MODE and meta["exporter_version"] == EXPORTER_VERSION
    assert meta["feature_extractor"] == extractor.metadata()["feature_extractor"]
    assert all(isinstance(value, str) for value in meta.values())


def test_batches_are_split_by_batch_size(random_weights_path: Path, features) -> None:
    small = TorchFeatureExtractor(random_weights_path, device="cpu", batch_size=1)
    got = small(_batches(SET_A)[0])
    assert _relative(got, features["torch_a"][0]) <= 1e-6


def test_tensor_and_grayscale_inputs(torch_extractor) -> None:
    gray = np.random.default_rng(30).integers(0, 256, (1, 20, 28), dtype=np.uint8)
    from_numpy = torch_extractor(gray)  # (B, H, W) grayscale, replicated to RGB
    np.testing.assert_array_equal(torch_extractor(np.repeat(gray[..., None], 3, axis=3)), from_numpy)
    # Tensors follow the package's one rule (fidkit._validate): channel-first, as torch models produce them.
    np.testing.assert_array_equal(torch_extractor(torch.from_numpy(gray[:, None])), from_numpy)
    rgb_nchw = torch.from_numpy(np.repeat(gray[:, None], 3, axis=1))
    np.testing.assert_array_equal(torch_extractor(rgb_nchw), from_numpy)


@pytest.mark.filterwarnings("error")
def test_read_only_input_gives_the_same_features_without_a_warning(torch_extractor, features) -> None:
    images = _batches(SET_A)[1]
    images.flags.writeable = False
    np.testing.assert_array_equal(torch_extractor(images), features["torch_a"][1])


def test_empty_batch(torch_extractor) -> None:
    out = torch_extractor(np.zeros((0, 32, 32, 3), dtype=np.uint8))
    assert out.shape == (0, FEATURE_DIM) and out.dtype == np.float32


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((1, 32, 32, 3), dtype=np.float32),
        np.zeros((32, 32, 3), dtype=np.uint8),
        np.zeros((1, 32, 32, 4), dtype=np.uint8),
        np.zeros((1, 0, 32, 3), dtype=np.uint8),
        [[0]],
        "torch-float",
        "torch-hwc",
        "torch-empty-side",
    ],
)
def test_bad_input_is_an_input_error(torch_extractor, bad) -> None:
    tensors = {
        "torch-float": lambda: torch.zeros(1, 32, 32, 3),
        "torch-hwc": lambda: torch.zeros(1, 32, 32, 3, dtype=torch.uint8),  # channel-last: refused with the fix
        "torch-empty-side": lambda: torch.zeros(1, 3, 32, 0, dtype=torch.uint8),
    }
    if isinstance(bad, str):
        bad = tensors[bad]()
    with pytest.raises(InputError):
        torch_extractor(bad)


#: (backend, operation) pairs of torch's fp32_precision tree (torch >= 2.9) that the engine sets for a call.
_OPERATIONS = [(backend, op) for backend in ("cuda", "mkldnn") for op in ("matmul", "conv", "rnn")]
HAS_TREE = hasattr(torch._C, "_get_fp32_precision_getter") and hasattr(torch.backends, "fp32_precision")


def _arithmetic() -> dict:
    """What float32 convolutions and products would run as now: the tree's values, or the legacy flags."""
    if HAS_TREE:
        return {f"{b}.{op}": torch._C._get_fp32_precision_getter(b, op) for b, op in _OPERATIONS}
    return {"cublas": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}


def _recording_model(seen: list):
    def recorder(x):
        seen.append(
            (
                torch.is_inference_mode_enabled(),
                _arithmetic(),
                tuple(x.shape),
                x.dtype,
                x.is_contiguous(memory_format=torch.channels_last),
            )
        )
        return {"pool_3": torch.zeros(x.shape[0], FEATURE_DIM)}

    return SimpleNamespace(outputs=lambda x, names: recorder(x))


def _exact() -> dict:
    if HAS_TREE:
        return {f"{b}.{op}": "ieee" for b, op in _OPERATIONS}
    return {"cublas": False, "cudnn": False}


def test_call_runs_in_inference_mode_with_tf32_off_and_restores_it(torch_extractor, monkeypatch) -> None:
    seen: list = []
    monkeypatch.setattr(torch_extractor, "_model", _recording_model(seen))
    before = _arithmetic()
    torch_extractor(np.zeros((3, 8, 8, 3), dtype=np.uint8))
    assert _arithmetic() == before
    assert seen == [(True, _exact(), (3, 3, 299, 299), torch.float32, True)]


def test_precision_tf32_turns_tf32_on_through_the_same_helper(torch_extractor, monkeypatch) -> None:
    # precision="tf32" needs a GPU to be built; the call's arithmetic is what it would get there.
    seen: list = []
    monkeypatch.setattr(torch_extractor, "_model", _recording_model(seen))
    monkeypatch.setattr(torch_extractor, "precision", "tf32")
    before = _arithmetic()
    torch_extractor(np.zeros((1, 8, 8, 3), dtype=np.uint8))
    assert _arithmetic() == before
    if HAS_TREE:  # cuBLAS and cuDNN in TF32, oneDNN on the CPU still IEEE
        want = {key: ("tf32" if key.startswith("cuda") else "ieee") for key in _exact()}
    else:
        want = {"cublas": True, "cudnn": True}
    assert seen[0][1] == want


def test_calls_in_several_threads_share_one_change_and_the_last_puts_the_settings_back() -> None:
    import threading

    from fidkit._tf32 import float32_mode

    before = _arithmetic()
    first_in, second_in, first_out, exact_out = (threading.Event() for _ in range(4))
    seen: dict = {}

    def first() -> None:
        with float32_mode(torch):
            first_in.set()
            second_in.wait(10)
        first_out.set()

    def second() -> None:
        first_in.wait(10)
        with float32_mode(torch):
            second_in.set()
            first_out.wait(10)
            seen["second, after the first ended"] = _arithmetic()
        exact_out.set()

    def other_mode() -> None:  # TF32 asked while exact calls run: it waits for them
        first_in.wait(10)
        with float32_mode(torch, tf32=True):
            seen["tf32 entered after the exact calls"] = exact_out.is_set()

    threads = [threading.Thread(target=target) for target in (first, second, other_mode)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert seen == {"second, after the first ended": _exact(), "tf32 entered after the exact calls": True}
    assert _arithmetic() == before


# The program's TF32 setting through torch's new API (torch >= 2.9), as a user writes it: (attribute owner, value).
_NEW_API_SETTINGS = {
    "global tf32": ("", "tf32"),
    "cuBLAS tf32": ("cuda.matmul", "tf32"),
    "cuDNN backend tf32": ("cudnn", "tf32"),
    "global bf16": ("", "bf16"),
}


@pytest.mark.skipif(not HAS_TREE, reason="this torch has no fp32_precision API")
@pytest.mark.parametrize("setting", sorted(_NEW_API_SETTINGS))
def test_features_are_exact_whatever_tf32_setting_the_program_made(torch_extractor, setting) -> None:
    images = _noise(31, 2, 32, 32)
    want = torch_extractor(images)
    path, value = _NEW_API_SETTINGS[setting]
    owner = torch.backends
    for name in filter(None, path.split(".")):
        owner = getattr(owner, name)
    saved = owner.fp32_precision  # "none" in this process: nothing else sets these, so this puts it back exactly
    try:
        owner.fp32_precision = value
        state = _arithmetic()
        np.testing.assert_array_equal(torch_extractor(images), want)
        assert _arithmetic() == state and owner.fp32_precision == value
    finally:
        owner.fp32_precision = saved


# Run in a fresh process: each case forks it, so that every case starts from torch's own defaults (cuDNN's
# operations inherit yet are TF32 when nothing above them is set, a state no setter makes again). Each case is run
# twice, without and with a call of the engine (its network a stub that reads the arithmetic it runs under) between
# the program's settings and later changes to them, and must read the same throughout: the tree's values, the legacy
# flags (or that they raise), after each later change.
_RESTORE_SCRIPT = r"""
import json, os, sys
import torch
torch.set_num_threads(1)
import numpy as np
from types import SimpleNamespace
from fidkit.inception.torch_engine import TorchFeatureExtractor
b = torch.backends
extractor = TorchFeatureExtractor(sys.argv[2], device="cpu")
inside = []
def stub(x, names):
    inside.append(state())
    return {"pool_3": torch.zeros(x.shape[0], 2048)}
extractor._model = SimpleNamespace(outputs=stub)
G = getattr(torch._C, "_get_fp32_precision_getter", None)
NODES = [("generic", "all")] + [(x, op) for x in ("cuda", "mkldnn") for op in ("all", "matmul", "conv", "rnn")]
def read(get):
    try:
        return get()
    except RuntimeError:
        return "raises"
def state():
    values = {f"{x}.{op}": G(x, op) for x, op in NODES} if G else {}
    values.update(matmul=read(torch.get_float32_matmul_precision), cublas=read(lambda: b.cuda.matmul.allow_tf32),
                  cudnn=read(lambda: b.cudnn.allow_tf32))
    return values
LATER_TREE = ["b.fp32_precision = 'ieee'", "b.fp32_precision = 'tf32'", "b.cudnn.fp32_precision = 'ieee'",
              "b.fp32_precision = 'none'", "b.cudnn.fp32_precision = 'none'"]
LATER_LEGACY = ["torch.set_float32_matmul_precision('high')", "b.cudnn.allow_tf32 = False"]
def run(program, tf32, with_fidkit):
    trace = []
    for line in program:
        exec(line)
    trace.append(state())
    if with_fidkit:
        extractor.precision = "tf32" if tf32 else "exact"  # "tf32" is refused at construction without a GPU
        extractor(np.zeros((1, 4, 4, 3), dtype=np.uint8))
        if G:
            want = "tf32" if tf32 else "ieee"
            assert all(inside[-1][f"cuda.{op}"] == want for op in ("matmul", "conv", "rnn")), inside
            assert all(inside[-1][f"mkldnn.{op}"] == "ieee" for op in ("matmul", "conv", "rnn")), inside
    trace.append(state())
    for line in (LATER_TREE if G else []) + LATER_LEGACY:
        exec(line)
        trace.append(state())
    return trace
def forked(*args):
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            text = json.dumps(run(*args))
        except BaseException as exc:
            text = json.dumps(f"{type(exc).__name__}: {exc}")
        with os.fdopen(write_end, "w") as out:
            out.write(text)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as got:
        text = got.read()
    os.waitpid(pid, 0)
    return json.loads(text)
failures = []
for program in json.loads(sys.argv[1]):
    if not G and any("fp32_precision" in line for line in program):
        continue
    for tf32 in (False, True):
        plain, wrapped = forked(program, tf32, False), forked(program, tf32, True)
        if plain != wrapped:
            failures.append({"program": program, "tf32": tf32, "without": plain, "with": wrapped})
print(json.dumps(failures))
"""

_PROGRAMS = [
    [],  # torch's defaults
    ["b.fp32_precision = 'tf32'"],
    ["b.cuda.matmul.fp32_precision = 'tf32'"],
    ["b.fp32_precision = 'tf32'", "b.cudnn.allow_tf32 = False"],  # the convolutions inherit the global tf32
    ["b.fp32_precision = 'tf32'", "b.cudnn.conv.fp32_precision = 'ieee'", "b.cudnn.rnn.fp32_precision = 'none'"],
    ["b.cudnn.fp32_precision = 'tf32'", "b.cuda.matmul.fp32_precision = 'ieee'"],
    ["b.fp32_precision = 'bf16'", "b.mkldnn.conv.fp32_precision = 'tf32'"],
    ["b.cuda.matmul.allow_tf32 = True", "b.cudnn.allow_tf32 = True"],
    ["torch.set_float32_matmul_precision('medium')", "b.cudnn.allow_tf32 = False"],
]


def test_the_programs_tf32_settings_are_put_back_exactly(random_weights_path: Path) -> None:
    # One thread: an OpenMP pool started before a fork would hang the children.
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", _RESTORE_SCRIPT, json.dumps(_PROGRAMS), str(random_weights_path)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_model_is_in_eval_mode_without_gradients(torch_extractor) -> None:
    model = torch_extractor._model
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:-1", "cuda:01", "CUDA", "tensorrt", "", " cpu", None, 0])
def test_bad_device_is_an_input_error(random_weights_path: Path, device) -> None:
    with pytest.raises(InputError, match="device"):
        TorchFeatureExtractor(random_weights_path, device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_a_fidkit_error(random_weights_path: Path, device) -> None:
    with pytest.raises(FidkitError, match="torch has no CUDA here") as info:
        TorchFeatureExtractor(random_weights_path, device=device)
    assert not isinstance(info.value, InputError)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_auto_falls_back_to_the_cpu(random_weights_path: Path) -> None:
    assert TorchFeatureExtractor(random_weights_path, device="auto").provider == "torch-cpu"


def test_bad_batch_size_is_an_input_error(random_weights_path: Path) -> None:
    with pytest.raises(InputError):
        TorchFeatureExtractor(random_weights_path, device="cpu", batch_size=0)


# --- the torch float64 route of the distance -------------------------------------------------------------


def _decaying_covariance(rng: np.random.Generator, dim: int, decay: float) -> np.ndarray:
    """A random rotation of eigenvalues decaying geometrically (with jitter), like pool_3 covariances."""
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    eigenvalues = decay ** np.arange(dim) * rng.uniform(0.5, 1.5, dim)
    sigma = (q * eigenvalues) @ q.T
    return (sigma + sigma.T) / 2


def _check_route_against_scipy(stats_a: fidkit.Stats, stats_b: fidkit.Stats, monkeypatch) -> float:
    """fid_from_stats with scipy's eigensolver, then with torch's (the GPU choice pointed at the CPU)."""
    import fidkit.frechet.trace_sqrt as distance  # where the solver is chosen

    scipy_result = fidkit.fid_from_stats(stats_a, stats_b)
    assert scipy_result.method == "factor-eigh" and scipy_result.solver == "scipy"
    monkeypatch.setattr(distance, "torch_device_for_distance", lambda rank=0: "cpu")
    monkeypatch.setattr(distance, "_TORCH_SOLVER_MIN_RANK", 1)
    result = fidkit.fid_from_stats(stats_a, stats_b)
    monkeypatch.undo()
    assert result.solver == "torch-cpu" and result.factor_side == scipy_result.factor_side
    assert abs(result.trace_sqrt - scipy_result.trace_sqrt) <= 1e-12 * scipy_result.trace_sqrt
    # Eigenvalues are accurate to eps * ||P||; the smallest one is compared on that scale.
    assert abs(result.min_eigenvalue - scipy_result.min_eigenvalue) <= 1e-12 * scipy_result.trace_sqrt**2
    assert result.clipped_negative == pytest.approx(scipy_result.clipped_negative, abs=1e-12 * result.trace_sqrt)
    relative = abs(result.value - scipy_result.value) / scipy_result.value
    assert relative <= 1e-12
    return relative


@pytest.mark.parametrize("dim, decay", [(256, 0.97), (256, 0.9), pytest.param(2048, 0.997, marks=pytest.mark.slow)])
def test_torch_route_equals_the_scipy_route(dim, decay, monkeypatch) -> None:
    rng = np.random.default_rng(dim + int(decay * 1000))
    stats = [
        fidkit.Stats(mu=rng.normal(0.0, 0.1, dim), sigma=_decaying_covariance(rng, dim, decay), n=10 * dim)
        for _ in range(2)
    ]
    relative = _check_route_against_scipy(*stats, monkeypatch)
    print(f"dim {dim} decay {decay}: FID via torch route vs fid_from_stats, relative {relative:.3g}")


def test_torch_route_rescales_tiny_covariances_like_the_scipy_route(monkeypatch) -> None:
    rng = np.random.default_rng(7)
    dim, tiny = 64, 2.0**-700
    stats = [
        fidkit.Stats(mu=rng.normal(0.0, 1e-106, dim), sigma=_decaying_covariance(rng, dim, 0.9) * tiny, n=1000)
        for _ in range(2)
    ]
    _check_route_against_scipy(*stats, monkeypatch)


def test_torch_eigensolver_reports_negative_eigenvalues_and_bad_devices() -> None:
    from fidkit.frechet.torch_route import eigvalsh_float64

    # An indefinite matrix gives negative eigenvalues: reported, not hidden (distance.py clips and counts them).
    np.testing.assert_array_equal(eigvalsh_float64(np.diag([4.0, -1.0]), "cpu"), [-1.0, 4.0])
    with pytest.raises(FidkitError, match="not-a-device"):
        eigvalsh_float64(np.eye(3), "not-a-device")


def test_a_failing_gpu_solver_falls_back_to_the_cpu(monkeypatch) -> None:
    import fidkit.frechet.trace_sqrt as distance  # where the solver is chosen

    rng = np.random.default_rng(41)
    stats = [fidkit.Stats(mu=rng.normal(0.0, 0.1, 64), sigma=_decaying_covariance(rng, 64, 0.9), n=640) for _ in range(2)]
    expected = fidkit.fid_from_stats(*stats)
    monkeypatch.setattr(distance, "torch_device_for_distance", lambda rank=0: "not-a-device")
    monkeypatch.setattr(distance, "_TORCH_SOLVER_MIN_RANK", 1)
    result = fidkit.fid_from_stats(fidkit.Stats(mu=stats[0].mu, sigma=stats[0].sigma, n=640), stats[1])
    assert result.solver == "scipy" and result.value == pytest.approx(expected.value, rel=1e-12)


def test_resize_tables_of_many_image_sizes_stay_bounded(random_weights_path, monkeypatch) -> None:
    import fidkit.inception.torch_engine as torch_engine

    monkeypatch.setattr(torch_engine, "_MAX_TABLES", 2)
    extractor = torch_engine.TorchFeatureExtractor(random_weights_path, device="cpu", convention="clean")
    for side in (9, 10, 11, 10):
        extractor(np.zeros((1, side, side, 3), dtype=np.uint8))
    assert list(extractor._tables) == [(11, 11), (10, 10)]  # the least recently used size went first


def test_bf16_runs_on_the_cpu_near_the_exact_features_and_says_so(random_weights_path) -> None:
    # The fast mode anyone can run: bfloat16 autocast, outputs float32, the preprocessing untouched.
    from fidkit.inception.torch_engine import TorchFeatureExtractor

    images = np.random.default_rng(21).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    exact = TorchFeatureExtractor(random_weights_path, device="cpu")
    fast = TorchFeatureExtractor(random_weights_path, device="cpu", precision="bf16")
    got, want = fast(images), exact(images)
    assert got.dtype == np.float32 and fast.metadata()["precision"] == "bf16"
    deviation = float(np.abs(got - want).max() / np.abs(want).max())
    assert 1e-5 < deviation < 0.1  # bfloat16's 8-bit mantissa: clearly not exact, still the same features
    with pytest.raises(InputError, match="GPU arithmetic"):
        TorchFeatureExtractor(random_weights_path, device="cpu", precision="tf32")


def test_a_call_of_the_other_mode_nested_in_one_thread_is_refused_not_a_hang() -> None:
    # Found by the review of round 7: the inner call waited for the outer one (its own thread) to end.
    import torch

    from fidkit._tf32 import float32_mode

    with float32_mode(torch):
        with float32_mode(torch):  # the same mode nests
            pass
        with pytest.raises(RuntimeError, match="inside a full float32 one in the same thread"):
            with float32_mode(torch, tf32=True):
                pass
    with float32_mode(torch, tf32=True):  # and the settings were put back: the other mode runs afterwards
        pass


def test_a_changed_private_precision_api_falls_back_to_the_legacy_flags(monkeypatch) -> None:
    # Review of round 7: _tf32 reaches two private torch functions; one whose signature changed in a later torch must
    # not fail every torch-engine call.
    import torch

    from fidkit import _tf32

    def changed(*args):
        raise TypeError("_get_fp32_precision_getter(): incompatible function arguments")

    monkeypatch.setattr(torch._C, "_get_fp32_precision_getter", changed, raising=False)
    assert _tf32._has_precision_tree(torch) is False


# --- hostile round 8, 1 and 4: the caller's autocast and default dtype do not reach the network --------------------


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("convention", ["tf", "clean"])
def test_the_callers_autocast_changes_neither_the_features_nor_the_precision(random_weights_path, dtype, convention):
    # A bf16 training loop evaluating its FID inside `with torch.autocast(...)`: the features were 2.4e-2 off,
    # recorded as "exact" and cached as such.
    images = np.random.default_rng(31).integers(0, 256, (2, 24, 20, 3), dtype=np.uint8)
    exact = TorchFeatureExtractor(random_weights_path, device="cpu", convention=convention)
    fast = TorchFeatureExtractor(random_weights_path, device="cpu", convention=convention, precision="bf16")
    want, want_fast = exact(images), fast(images)
    with torch.autocast("cpu", dtype=getattr(torch, dtype)):
        got, got_fast = exact(images), fast(images)
        assert torch.is_autocast_enabled("cpu")  # the caller's autocast is back after each call
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_fast, want_fast)  # bf16 is the extractor's own bfloat16, not the caller's
    assert exact.metadata()["precision"] == "exact" and fast.metadata()["precision"] == "bf16"


def test_an_fid_updated_under_autocast_is_the_fid_without_it(torch_extractor):
    images = np.random.default_rng(32).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2)
    plain = fidkit.FID(extractor=torch_extractor)
    plain.update(tensor, real=True)
    plain.update(tensor)
    metric = fidkit.FID(extractor=torch_extractor)
    metric.update(tensor, real=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        metric.update(tensor)  # identical images: the FID of identical features
    report, expected = metric.compute(), plain.compute()
    assert float(report) == float(expected) and abs(float(report)) < 1e-6  # was 0.0696
    assert report.b.precision == "exact"


@pytest.mark.parametrize("default", ["float64", "float16"])
def test_the_torch_engine_runs_in_float32_whatever_the_default_dtype(random_weights_path, torch_extractor, default):
    # A scientific code base's torch.set_default_dtype(torch.float64) made every call a raw RuntimeError.
    images = np.random.default_rng(33).integers(0, 256, (2, 21, 18, 3), dtype=np.uint8)
    want = torch_extractor(images)
    saved = torch.get_default_dtype()
    if default == "float16":
        pytest.importorskip("torch", minversion="2.1")
    try:
        torch.set_default_dtype(getattr(torch, default))
        built_now = TorchFeatureExtractor(random_weights_path, device="cpu")
        assert all(p.dtype == torch.float32 for p in built_now._model.parameters())
        assert all(b.dtype == torch.float32 for b in built_now._model.buffers() if b.is_floating_point())
        got, again = built_now(images), torch_extractor(images)  # built now, and built before the change
    finally:
        torch.set_default_dtype(saved)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(again, want)
