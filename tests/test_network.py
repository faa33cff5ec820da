"""The network module, the exported graph and the feature extractor, on random weights.

Inception runs at roughly 10-20 images/s on the development CPU, so every test here feeds a
handful of images; the graph is exported once per session by the ``extractor`` fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fidkit.errors import FidkitError, InputError
from fidkit.inception import (
    EXPORTER_VERSION,
    FEATURE_DIM,
    RESIZE_MODE,
    FeatureExtractor,
)
from fidkit.inception.providers import gpu_driver_present as _gpu_driver_present
from fidkit.inception.spec import CPU_BATCH_SIZE
from fidkit.testing import tf_resize_bilinear_numpy
from fidkit.inception.runtime import graph_cache_path

torch = pytest.importorskip("torch")

LAYOUT_JSON = Path(__file__).resolve().parents[2] / "shared" / "reference" / "inception-2015-12-05-state-dict-layout.json"


def _images(seed: int, n: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def torch_model(random_weights_path: Path):
    from fidkit.inception.network import build_network
    from fidkit.inception.weights import load_state_dict

    return build_network(load_state_dict(random_weights_path))


def _torch_features(model, images: np.ndarray) -> np.ndarray:
    """The reference path: numpy TF resize, normalization, the eager torch module."""
    normalized = (tf_resize_bilinear_numpy(images) - np.float32(128.0)) * np.float32(0.0078125)
    with torch.no_grad():
        return model(torch.from_numpy(normalized).permute(0, 3, 1, 2).contiguous()).numpy()


def _assert_relative_close(got: np.ndarray, expected: np.ndarray, rtol: float = 1e-5) -> None:
    # Relative to the features' scale: pool_3 outputs near 0 (ReLU means) make an elementwise
    # relative error meaningless.
    scale = float(np.max(np.abs(expected)))
    assert scale > 0
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * scale)


# --- the torch module ---------------------------------------------------------------------------


def test_parameter_names_match_the_released_layout() -> None:
    from fidkit.inception.network import FIDInceptionV3

    if not LAYOUT_JSON.is_file():
        pytest.skip(f"layout reference not found at {LAYOUT_JSON}")
    layout = json.loads(LAYOUT_JSON.read_text())["layout"]
    expected = [(t["name"], tuple(t["shape"]), t["dtype"]) for t in layout]
    got = [
        (name, tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."))
        for name, tensor in FIDInceptionV3().state_dict().items()
    ]
    assert got == expected


def test_network_has_the_2015_graph_quirks() -> None:
    from fidkit.inception.network import FIDInceptionV3, _avg_pool_3x3

    model = FIDInceptionV3()
    eps = {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert eps == {1e-3}
    # Average pools ignore the padding: a constant map stays constant at the borders.
    ones = torch.ones(1, 1, 5, 5)
    assert torch.equal(_avg_pool_3x3(ones), ones)
    assert model.Mixed_7c.max_pool_branch and not model.Mixed_7b.max_pool_branch
    # Mixed_7c's pool branch is a max pool: a single spike spreads unchanged to its neighbours.
    block = model.Mixed_7c.eval()
    x = torch.zeros(1, 2048, 8, 8)
    x[0, :, 4, 4] = 1.0
    with torch.no_grad():
        block.branch_pool.conv.weight.zero_()
        block.branch_pool.conv.weight[:, 0] = 1.0
        block.branch_pool.bn.reset_parameters()
        block.branch_pool.bn.reset_running_stats()
        out = block.branch_pool(torch.nn.functional.max_pool2d(x, 3, 1, 1))
        pooled = block(x)[:, -192:]
    torch.testing.assert_close(pooled, out)
    assert pooled[0, 0, 3:6, 3:6].min() > 0 and pooled[0, 0, 0, 0] == 0


def test_torch_module_outputs_2048_features(torch_model) -> None:
    out = _torch_features(torch_model, _images(0, 2, 32, 32))
    assert out.shape == (2, FEATURE_DIM) and out.dtype == np.float32
    assert np.all(np.isfinite(out))


# --- the graph and the extractor ----------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 32, 32), (1, 299, 299), (1, 17, 23)])
def test_graph_features_equal_torch_module(extractor, torch_model, shape) -> None:
    images = _images(10, *shape)
    got = extractor(images)
    expected = _torch_features(torch_model, images)
    assert got.shape == (shape[0], FEATURE_DIM) and got.dtype == np.float32
    _assert_relative_close(got, expected)


def test_features_are_not_degenerate(extractor) -> None:
    features = extractor(_images(11, 3, 32, 32))
    assert np.all(np.isfinite(features))
    assert np.all(features >= 0)  # means of ReLU outputs
    assert np.mean(features > 0) > 0.5
    assert np.min(np.max(np.abs(features[:, None] - features[None]), axis=2) + np.eye(3)) > 1e-3


@pytest.mark.slow
def test_batch_size_invariance(extractor) -> None:
    images = _images(12, 50, 32, 32)
    batched = extractor(images)
    for index in (0, 31, 49):
        alone = extractor(images[index : index + 1])
        _assert_relative_close(alone[0], batched[index])


def test_chunking_by_batch_size(random_weights_path: Path, extractor) -> None:
    images = _images(13, 5, 24, 24)
    small = FeatureExtractor(random_weights_path, device="cpu", batch_size=2, threads=1)
    assert small.graph_path == extractor.graph_path  # cached, not exported again
    _assert_relative_close(small(images), extractor(images))


def test_io_binding_path_gives_the_same_features(random_weights_path: Path, extractor) -> None:
    # The GPU path binds the host input and the caller's output buffer; onnxruntime accepts the
    # same binding on the CPU provider, which is the only place it can be checked without a GPU.
    bound = FeatureExtractor(random_weights_path, device="cpu", batch_size=2)
    bound.on_gpu = True
    images = _images(17, 3, 32, 32)
    plain = FeatureExtractor(random_weights_path, device="cpu", batch_size=2)
    np.testing.assert_array_equal(bound(images), plain(images))


def test_same_input_gives_identical_output(extractor) -> None:
    images = _images(14, 3, 40, 30)
    np.testing.assert_array_equal(extractor(images), extractor(images))


def test_empty_batch(extractor) -> None:
    out = extractor(np.zeros((0, 32, 32, 3), dtype=np.uint8))
    assert out.shape == (0, FEATURE_DIM) and out.dtype == np.float32


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((1, 32, 32, 3), dtype=np.float32),
        np.zeros((32, 32, 3), dtype=np.uint8),
        np.zeros((1, 32, 32, 4), dtype=np.uint8),
        np.zeros((1, 0, 32, 3), dtype=np.uint8),
        [[0]],
    ],
)
def test_bad_input_is_an_input_error(extractor, bad) -> None:
    with pytest.raises(InputError):
        extractor(bad)


def test_non_contiguous_input(extractor) -> None:
    images = _images(15, 2, 32, 32)
    flipped = images[:, :, ::-1]
    np.testing.assert_array_equal(extractor(flipped), extractor(np.ascontiguousarray(flipped)))


def test_extractor_attributes_and_metadata(extractor, random_weights_path: Path) -> None:
    from fidkit._fs import sha256_file

    assert extractor.weights_path == random_weights_path
    assert extractor.weights_sha256 == sha256_file(random_weights_path)
    assert extractor.provider == "CPUExecutionProvider"
    assert extractor.feature_dim == FEATURE_DIM and extractor.resize_mode == RESIZE_MODE
    assert extractor.batch_size == CPU_BATCH_SIZE
    meta = extractor.metadata()
    assert meta["weights_sha256"] == extractor.weights_sha256
    assert meta["provider"] == "CPUExecutionProvider"
    assert meta["resize_mode"] == RESIZE_MODE and meta["exporter_version"] == EXPORTER_VERSION
    assert meta["feature_extractor"]


def test_graph_is_cached_by_sha_and_exporter_version(extractor) -> None:
    import onnx

    path = extractor.graph_path
    assert path == graph_cache_path(extractor.weights_sha256)
    assert path.name == f"{extractor.weights_sha256[:16]}-{EXPORTER_VERSION}-tf.onnx"
    model = onnx.load(str(path), load_external_data=False)
    assert model.ir_version <= 13
    props = {p.key: p.value for p in model.metadata_props}
    assert props["weights_sha256"] == extractor.weights_sha256
    (graph_input,) = model.graph.input
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = graph_input.type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[:3]] == ["batch", "height", "width"] and dims[3].dim_value == 3
    assert not [f for f in path.parent.iterdir() if f.name.startswith(".")]  # no temp files left


def test_cached_graph_is_not_rebuilt(random_weights_path: Path, extractor, monkeypatch) -> None:
    import fidkit.inception.export as export

    def refuse(*args, **kwargs):
        raise AssertionError("graph exported twice")

    monkeypatch.setattr(export, "export_graph", refuse)
    before = extractor.graph_path.stat().st_mtime_ns
    again = FeatureExtractor(random_weights_path, device="cpu")
    assert again.graph_path.stat().st_mtime_ns == before



def test_located_weights_are_not_hashed_again(random_weights_path: Path, extractor, monkeypatch) -> None:
    import fidkit.inception.weights as weights_module
    from fidkit.inception import locate_weights

    resolved = locate_weights(random_weights_path)

    def refuse(*args, **kwargs):
        raise AssertionError("weights hashed again")

    monkeypatch.setattr(weights_module, "sha256_file", refuse)
    again = FeatureExtractor(resolved, device="cpu")
    assert again.weights_sha256 == extractor.weights_sha256 and again.weights_path == resolved.path
    images = _images(17, 2, 24, 24)
    np.testing.assert_array_equal(again(images), extractor(images))

def test_corrupt_cached_graph_is_rebuilt(random_weights_path: Path, extractor, fidkit_home: Path) -> None:
    from fidkit._fs import sha256_file

    path = graph_cache_path(sha256_file(random_weights_path))
    assert path.parent.parent == fidkit_home
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an onnx graph")
    rebuilt = FeatureExtractor(random_weights_path, device="cpu")
    assert rebuilt.graph_path == path and path.stat().st_size > 1_000_000
    images = _images(16, 1, 32, 32)
    np.testing.assert_array_equal(rebuilt(images), extractor(images))


def test_bad_device_and_batch_size(random_weights_path: Path) -> None:
    with pytest.raises(InputError, match="device"):
        FeatureExtractor(random_weights_path, device="gpu")
    for batch_size in (0, 2.5, True):  # the sources' rule: refused, never truncated
        with pytest.raises(InputError, match="batch_size"):
            FeatureExtractor(random_weights_path, device="cpu", batch_size=batch_size)


def test_cuda_without_gpu_is_an_error_not_a_silent_fallback(random_weights_path: Path, extractor) -> None:
    if _gpu_driver_present():
        pytest.skip("a GPU driver is present")
    with pytest.raises(FidkitError, match="cuda"):
        FeatureExtractor(random_weights_path, device="cuda")


def test_auto_device_reports_what_runs(random_weights_path: Path, extractor) -> None:
    auto = FeatureExtractor(random_weights_path, device="auto")
    expected = {"CPUExecutionProvider"} if not _gpu_driver_present() else {"CPUExecutionProvider", "CUDAExecutionProvider"}
    assert auto.provider in expected


def test_importing_the_package_does_not_import_torch_or_onnxruntime() -> None:
    code = (
        "import sys, fidkit.inception, fidkit.inception.weights, fidkit.inception.runtime;"
        "print('torch' in sys.modules, 'onnxruntime' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["False", "False"]


def _copy_graph_instead_of_exporting(source: Path, monkeypatch) -> list[Path]:
    """Make ensure_graph 'export' by copying `source` (seconds saved per test); returns the targets written."""
    import fidkit.inception.export as export

    written: list[Path] = []

    def copy(weights_path, target, *, convention="tf", metadata=None):
        Path(target).write_bytes(source.read_bytes())
        written.append(Path(target))
        return Path(target)

    monkeypatch.setattr(export, "export_graph", copy)
    return written


@pytest.mark.parametrize("content", [b"", b"\x00garbage\xff" * 7], ids=["empty", "garbage"])
def test_cached_graph_that_does_not_load_is_rebuilt_once(
    random_weights_path: Path, extractor, fidkit_home: Path, monkeypatch, content: bytes
) -> None:
    from fidkit._fs import sha256_file

    path = graph_cache_path(sha256_file(random_weights_path))
    path.parent.mkdir(parents=True)
    path.write_bytes(content)  # what a crash mid-write, or a foreign tool, can leave
    written = _copy_graph_instead_of_exporting(extractor.graph_path, monkeypatch)
    rebuilt = FeatureExtractor(random_weights_path, device="cpu")
    assert len(written) == 1 and rebuilt.graph_path == path
    assert path.read_bytes() == extractor.graph_path.read_bytes()
    images = _images(18, 1, 32, 32)
    np.testing.assert_array_equal(rebuilt(images), extractor(images))


def test_rebuilt_graph_that_still_does_not_load_is_a_fidkit_error(
    random_weights_path: Path, extractor, fidkit_home: Path, monkeypatch
) -> None:
    from fidkit._fs import sha256_file

    path = graph_cache_path(sha256_file(random_weights_path))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    empty = fidkit_home / "empty.onnx"
    empty.write_bytes(b"")
    written = _copy_graph_instead_of_exporting(empty, monkeypatch)  # the "export" writes an empty file again
    with pytest.raises(FidkitError, match=f"cannot load the ONNX graph {path}.*delete") as caught:
        FeatureExtractor(random_weights_path, device="cpu")
    assert type(caught.value) is FidkitError and len(written) == 1  # rebuilt once, not in a loop


def test_unwritable_graph_cache_says_to_set_fidkit_home(random_weights_path: Path, tmp_path: Path, monkeypatch) -> None:
    # Running as root makes chmod ineffective; a cache home under a regular file fails for everyone.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("FIDKIT_HOME", str(blocker / "home"))
    with pytest.raises(FidkitError, match=f"cannot write the ONNX graph cache {blocker}.*FIDKIT_HOME"):
        FeatureExtractor(random_weights_path, device="cpu")


def test_a_cached_graph_altered_but_loadable_is_rebuilt_not_used(
    random_weights_path: Path, extractor, fidkit_home: Path, monkeypatch, caplog
) -> None:
    # Flipping bits inside the largest initializer once changed FID silently (the graph still loads).
    written = _copy_graph_instead_of_exporting(extractor.graph_path, monkeypatch)
    first = FeatureExtractor(random_weights_path, device="cpu")
    assert len(written) == 1 and first.graph_sha256 == sha256_of(extractor.graph_path)
    altered = bytearray(first.graph_path.read_bytes())
    middle = len(altered) // 2
    altered[middle : middle + 64] = bytes(b ^ 0x01 for b in altered[middle : middle + 64])
    first.graph_path.write_bytes(bytes(altered))
    again = FeatureExtractor(random_weights_path, device="cpu")
    assert len(written) == 2 and "does not match the checksum" in caplog.text
    assert again.graph_path.read_bytes() == extractor.graph_path.read_bytes()
    images = _images(19, 2, 20, 20)
    np.testing.assert_array_equal(again(images), extractor(images))
    assert again.metadata()["graph_sha256"] == extractor.graph_sha256


def test_statistics_cache_key_names_the_exporter_not_the_graph_file(random_weights_path: Path, extractor) -> None:
    # The graph is derived from the weights by a versioned exporter: the key names that version, so a cached
    # run needs no graph on disk (no export); the graph that really ran is still recorded in the metadata.
    from fidkit.cache import cache_key
    from fidkit.extractors import identity_for
    from fidkit.inception.spec import EXPORTER_VERSION
    from fidkit.options import RunOptions

    identity = identity_for(RunOptions(weights=random_weights_path))
    assert identity.get("exporter_version") == EXPORTER_VERSION and identity.get("graph_sha256") == ""
    assert extractor.metadata()["graph_sha256"] == extractor.graph_sha256 == sha256_of(extractor.graph_path)
    fields = identity.as_dict()
    assert cache_key("f" * 64, fields) != cache_key("f" * 64, {**fields, "exporter_version": "0"})


def sha256_of(path: Path) -> str:
    from fidkit._fs import sha256_file

    return sha256_file(path)


# --- hostile round 8, 1 and 4: the graph exported on first use is float32 whatever the caller runs under --------


@pytest.mark.parametrize("setting", ["cpu-bf16-autocast", "float64-default"])
def test_the_graph_exported_under_the_callers_autocast_or_default_dtype_is_the_float32_one(
    random_weights_path: Path, extractor, fidkit_home: Path, setting
) -> None:
    # First use inside a bf16 training loop's autocast exported a bfloat16 graph that onnxruntime refused; under
    # torch.set_default_dtype(torch.float64) the export failed on float64 weights.
    import contextlib

    images = _images(41, 2, 30, 26)
    saved = torch.get_default_dtype()
    try:
        if setting == "float64-default":
            torch.set_default_dtype(torch.float64)
        autocast = setting == "cpu-bf16-autocast"
        with torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
            exported_now = FeatureExtractor(random_weights_path, device="cpu")  # a fresh home: exported here
            got = exported_now(images)
    finally:
        torch.set_default_dtype(saved)
    assert exported_now.graph_path.parent.parent == fidkit_home
    np.testing.assert_array_equal(got, extractor(images))


def test_build_network_is_float32_under_a_float64_default_dtype() -> None:
    from fidkit.inception.network import build_network

    saved = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        model = build_network()
    finally:
        torch.set_default_dtype(saved)
    assert {p.dtype for p in model.state_dict().values() if p.is_floating_point()} == {torch.float32}
