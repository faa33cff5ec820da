"""Preprocessing conventions: each one's numpy reference against the tool's OWN preprocessing code.

The tools' networks need weights that cannot be downloaded here, so each tool's forward method runs
on a stand-in ``self`` whose first layer records its input and stops: the lines that run are the
tool's own resize and normalization, nothing re-typed. A tool that is not installed is skipped.

torchvision: pytorch-fid and torch-fidelity import it at module level for parts not used here. Where
it is missing or broken (a wheel built for another torch fails to register its C ops), pytorch-fid
imports against a stand-in module (the three Inception block classes it subclasses) and
torch-fidelity's package ``__init__`` (which pulls in its CLIP and DINOv2 extractors) is bypassed;
pytorch-fid's ``ToTensor`` then runs as the two torch calls torchvision 0.28's ``to_tensor`` makes
for uint8 (``.to(float32).div(255)``). With a working torchvision the real ``ToTensor`` runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fidkit.errors import InputError
from fidkit.inception.conventions import (
    CONVENTIONS,
    DEFAULT_CONVENTION,
    convention,
    preprocess_reference,
    preprocess_with_matrices,
)
from fidkit.testing import tf_resize_bilinear_numpy
from peer_tools import require, torch_fidelity_module, torchvision_works

torch = pytest.importorskip("torch")

#: Square up, identity, non-square up, down in both, and up in one side while down in the other.
SIZES = [(32, 32), (256, 256), (299, 299), (37, 61), (512, 384), (17, 700)]
MATRIX_CONVENTIONS = [name for name in CONVENTIONS if name != "tf"]
TOLERANCE = 1e-5  # absolute, on the normalized values (about 1/800 of a gray level)


def _images(height: int, width: int, n: int = 2) -> np.ndarray:
    """Pixel noise (the hardest case for a resize) plus one black/white step, where bicubic overshoots."""
    rng = np.random.default_rng(1000 * height + width)
    images = rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8)
    images[-1, :, : width // 2] = 0
    images[-1, :, width // 2 :] = 255
    return images


# ------------------------------------------------------------------------------------------------
# Running the tools' own code.
# ------------------------------------------------------------------------------------------------


class _Captured(Exception):
    def __init__(self, x) -> None:
        super().__init__("captured")
        self.x = x


def _first_layer(x):
    raise _Captured(x.detach().clone())


def _pytorch_fid_inception():
    require("pytorch_fid")
    if "pytorch_fid.inception" in sys.modules or torchvision_works():
        return importlib.import_module("pytorch_fid.inception")
    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == "torchvision"}
    # The stand-in holds only what pytorch_fid/inception.py touches at import: the three torchvision
    # Inception blocks it subclasses (for the network, which is never built here).
    stand_in = types.ModuleType("torchvision")
    blocks = {name: type(name, (torch.nn.Module,), {}) for name in ("InceptionA", "InceptionC", "InceptionE")}
    stand_in.models = SimpleNamespace(inception=SimpleNamespace(**blocks))
    sys.modules["torchvision"] = stand_in
    try:
        return importlib.import_module("pytorch_fid.inception")
    finally:
        del sys.modules["torchvision"]
        sys.modules.update(saved)


def _to_tensor(image: np.ndarray):
    """pytorch-fid's transform: torchvision ``ToTensor`` on the decoded PIL image."""
    if torchvision_works():
        import torchvision.transforms as TF
        from PIL import Image

        return TF.ToTensor()(Image.fromarray(image))
    # torchvision 0.28 transforms/functional.py to_tensor, for a uint8 HWC array.
    return torch.from_numpy(image.transpose((2, 0, 1))).contiguous().to(dtype=torch.get_default_dtype()).div(255)


def _pytorch_fid(images: np.ndarray) -> np.ndarray:
    inception = _pytorch_fid_inception()
    defaults = inspect.signature(inception.InceptionV3.__init__).parameters
    assert defaults["resize_input"].default is True and defaults["normalize_input"].default is True
    batch = torch.stack([_to_tensor(image) for image in images])
    network = SimpleNamespace(
        resize_input=True, normalize_input=True, blocks=[lambda x: x], output_blocks=[0], last_needed_block=0
    )
    with torch.no_grad():
        return inception.InceptionV3.forward(network, batch)[0].numpy()


def _clean(images: np.ndarray) -> np.ndarray:
    require("cleanfid")
    from cleanfid.inception_torchscript import InceptionV3W
    from cleanfid.resize import build_resizer

    resize = build_resizer("clean")
    resized = np.stack([resize(image) for image in images])
    assert resized.dtype == np.float32  # so ResizeDataset's ToTensor only transposes (no / 255)
    batch = torch.from_numpy(resized.transpose(0, 3, 1, 2).copy())
    seen = {}

    def layers(x):
        seen["x"] = x.clone()
        return torch.zeros(x.shape[0], 2048)

    network = SimpleNamespace(resize_inside=False, layers=SimpleNamespace(forward=layers))
    with torch.no_grad():
        InceptionV3W.forward(network, batch)
    return seen["x"].numpy()


def _torchmetrics(images: np.ndarray, *, antialias: bool = True) -> np.ndarray:
    require("torchmetrics")
    fid = torch_fidelity_module("torchmetrics.image.fid")
    defaults = inspect.signature(fid.FrechetInceptionDistance.__init__).parameters
    assert defaults["antialias"].default is True and defaults["normalize"].default is False
    network = SimpleNamespace(
        use_antialias=antialias,
        INPUT_IMAGE_SIZE=fid.NoTrainInceptionV3.INPUT_IMAGE_SIZE,
        features_list=["2048"],
        Conv2d_1a_3x3=_first_layer,
    )
    batch = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())  # uint8 NCHW, what update() takes
    with pytest.raises(_Captured) as caught, torch.no_grad():
        fid.NoTrainInceptionV3._torch_fidelity_forward(network, batch)
    return caught.value.x.numpy()


def _torch_fidelity(images: np.ndarray) -> np.ndarray:
    module = torch_fidelity_module("torch_fidelity.feature_extractor_inceptionv3")
    network = SimpleNamespace(
        features_list=["2048"],
        feature_extractor_internal_dtype=module.text_to_dtype(None, "float32"),  # its __init__'s default
        INPUT_IMAGE_SIZE=module.FeatureExtractorInceptionV3.INPUT_IMAGE_SIZE,
        Conv2d_1a_3x3=_first_layer,
    )
    batch = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    with pytest.raises(_Captured) as caught, torch.no_grad():
        module.FeatureExtractorInceptionV3.forward(network, batch)
    return caught.value.x.numpy()


TOOLS = {"pytorch-fid": _pytorch_fid, "clean": _clean, "torchmetrics": _torchmetrics}


# ------------------------------------------------------------------------------------------------
# Each convention equals its tool.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", MATRIX_CONVENTIONS)
def test_reference_equals_the_tools_own_preprocessing(name: str, size: tuple[int, int]) -> None:
    images = _images(*size)
    expected = TOOLS[name](images)
    got = preprocess_reference(images, name)
    assert got.shape == expected.shape == (len(images), 3, 299, 299) and got.dtype == np.float32
    deviation = float(np.abs(got.astype(np.float64) - expected).max())
    print(f"{name} {size[0]}x{size[1]}: max |reference - tool| = {deviation:.3g}")
    assert deviation <= TOLERANCE


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("tool", ["torch-fidelity", "torchmetrics-antialias-false"])
def test_tf_is_torch_fidelitys_default_and_torchmetrics_without_antialias(tool: str, size: tuple[int, int]) -> None:
    images = _images(*size)
    expected = _torch_fidelity(images) if tool == "torch-fidelity" else _torchmetrics(images, antialias=False)
    deviation = float(np.abs(preprocess_reference(images, "tf").astype(np.float64) - expected).max())
    print(f"tf vs {tool} {size[0]}x{size[1]}: {deviation:.3g}")
    assert deviation <= TOLERANCE


@pytest.mark.parametrize(
    ("name", "other"), [(name, other) for name in MATRIX_CONVENTIONS for other in CONVENTIONS if other != name]
)
def test_another_conventions_matrices_fail_the_comparison(name: str, other: str) -> None:
    """The comparison above detects a wrong resize: with any other convention's matrices it fails."""
    size = (512, 384)  # downsampling: every pair of resizes differs here
    images = _images(*size)
    expected = TOOLS[name](images)
    wh, ww = convention(other).resize_matrices(*size)
    swapped = preprocess_with_matrices(images, convention(name), wh, ww)
    assert float(np.abs(swapped.astype(np.float64) - expected).max()) > 100 * TOLERANCE
    own = preprocess_with_matrices(images, convention(name), *convention(name).resize_matrices(*size))
    assert float(np.abs(own.astype(np.float64) - expected).max()) <= TOLERANCE


def test_upsampling_torch_antialias_is_plain_bilinear_and_tf_differs() -> None:
    """A finding, pinned: when no side shrinks, torch's antialiased bilinear IS half-pixel bilinear, so at
    32x32 torchmetrics and pytorch-fid differ only in the normalization; TF's asymmetric grid differs."""
    for side in (2, 32, 61, 298):
        plain = convention("pytorch-fid").resize_matrices(side, side)[0]
        np.testing.assert_allclose(convention("torchmetrics").resize_matrices(side, side)[0], plain, atol=1e-5)
        # TF's grid is shifted by (1 - side / 299) / 2 pixels: 0.45 at 2, 0.0017 at 298.
        shift = (1 - side / 299) / 2
        assert np.abs(convention("tf").resize_matrices(side, side)[0] - plain).max() > 0.5 * shift
    shrink = convention("torchmetrics").resize_matrices(512, 512)[0]
    assert np.abs(shrink - convention("pytorch-fid").resize_matrices(512, 512)[0]).max() > 0.1


# ------------------------------------------------------------------------------------------------
# The matrices themselves.
# ------------------------------------------------------------------------------------------------


def _torch_weights(in_size: int, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """torch's own weights: one axis of an identity image resized (the other axis keeps its size)."""
    eye = torch.eye(in_size)[None, None]
    kwargs = {"mode": "bilinear", "align_corners": False, "antialias": antialias}
    rows = torch.nn.functional.interpolate(eye, size=(299, in_size), **kwargs)[0, 0].numpy()
    cols = torch.nn.functional.interpolate(eye, size=(in_size, 299), **kwargs)[0, 0].numpy().T
    return rows, cols


def _pil_weights(in_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's own weights (as float32), the same way, on an 'F' image as clean-fid resizes."""
    from PIL import Image

    eye = Image.fromarray(np.eye(in_size, dtype=np.float32), mode="F")
    rows = np.asarray(eye.resize((in_size, 299), resample=Image.BICUBIC))
    cols = np.asarray(eye.resize((299, in_size), resample=Image.BICUBIC)).T
    return rows, cols


@pytest.mark.parametrize("in_size", [1, 2, 7, 32, 37, 61, 256, 298, 299, 300, 384, 512, 1023])
@pytest.mark.parametrize("name", MATRIX_CONVENTIONS)
def test_matrices_are_the_tools_weights_bit_for_bit(name: str, in_size: int) -> None:
    if name == "clean":
        tool_rows, tool_cols = _pil_weights(in_size)
    else:
        tool_rows, tool_cols = _torch_weights(in_size, antialias=name == "torchmetrics")
    wh, ww = convention(name).resize_matrices(in_size, in_size)
    np.testing.assert_array_equal(wh, tool_rows)
    np.testing.assert_array_equal(ww, tool_cols)


@pytest.mark.parametrize("in_size", [1, 2, 3, 7, 32, 37, 61, 256, 299, 384, 512, 1000, 4096])
@pytest.mark.parametrize("name", CONVENTIONS)
def test_rows_sum_to_one(name: str, in_size: int) -> None:
    """Every tool's weights are normalised: bilinear's (1 - w, w), and PIL's and torch's antialiased taps."""
    wh, ww = convention(name).resize_matrices(in_size, 2 * in_size + 1)
    for matrix in (wh, ww):
        assert matrix.dtype == np.float32
        np.testing.assert_allclose(matrix.astype(np.float64).sum(axis=1), 1.0, atol=1e-6, rtol=0)


def test_matrices_shapes_cache_and_read_only() -> None:
    conv = convention("clean")
    wh, ww = conv.resize_matrices(37, 61)
    assert wh.shape == (299, 37) and ww.shape == (299, 61)
    assert conv.resize_matrices(37, 61)[0] is wh  # cached
    assert convention("clean").resize_matrices(61, 37)[1] is wh  # one axis, shared
    small = conv.resize_matrices(37, 61, size=64)
    assert small[0].shape == (64, 37) and small[1].shape == (64, 61)
    with pytest.raises(ValueError):
        wh[0, 0] = 1.0
    for bad in ((0, 5), (5, -1), (5.0, 5), (True, 5)):
        with pytest.raises(InputError, match="positive integer"):
            conv.resize_matrices(*bad)


def test_tf_matrices_reproduce_the_tf_resize() -> None:
    """tf's matrices are TensorFlow's weights (the graph does not use them: matrix_resize is False)."""
    images = _images(37, 61)
    wh, ww = convention("tf").resize_matrices(37, 61)
    planes = images.transpose(0, 3, 1, 2).astype(np.float64)
    via_matrices = (wh.astype(np.float64) @ planes @ ww.astype(np.float64).T).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(via_matrices, tf_resize_bilinear_numpy(images), atol=1e-3, rtol=0)
    assert not convention("tf").matrix_resize
    assert all(convention(name).matrix_resize for name in MATRIX_CONVENTIONS)


# ------------------------------------------------------------------------------------------------
# tf, names and errors.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES + [(1, 1), (5, 3)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_tf_reference_is_the_tf_resize_bit_for_bit(size: tuple[int, int]) -> None:
    images = _images(*size)
    expected = (tf_resize_bilinear_numpy(images) - np.float32(128)) * np.float32(0.0078125)
    got = preprocess_reference(images, "tf")
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected.transpose(0, 3, 1, 2))


def test_the_conventions_and_their_fields() -> None:
    assert CONVENTIONS == ("tf", "pytorch-fid", "clean", "torchmetrics") and DEFAULT_CONVENTION == "tf"
    assert convention("tf").resize_mode == "tf1-bilinear-asymmetric"
    assert len({convention(name).resize_mode for name in CONVENTIONS}) == 4
    assert convention("pytorch-fid").input_divisor == 255.0
    assert [name for name in CONVENTIONS if convention(name).clip is not None] == ["clean"]
    assert convention("clean").clip == (0.0, 255.0)
    assert all(convention(name).tool for name in CONVENTIONS)


@pytest.mark.parametrize("bad", ["nope", "TF", "", None, 3])
def test_an_unknown_convention_names_the_valid_ones(bad: object) -> None:
    with pytest.raises(InputError) as caught:
        convention(bad)
    for name in CONVENTIONS:
        assert repr(name) in str(caught.value)
    with pytest.raises(InputError):
        preprocess_reference(_images(4, 4), bad)


def test_the_reference_takes_only_uint8_rgb_batches() -> None:
    good = _images(8, 8)
    for bad in (good.astype(np.float32), good[0], good[..., :1], good.tolist(), good[:, :0]):
        with pytest.raises(InputError, match="preprocessing reference"):
            preprocess_reference(bad, "clean")
    with pytest.raises(InputError, match="do not fit"):
        preprocess_with_matrices(good, convention("clean"), *convention("clean").resize_matrices(9, 8))
    assert preprocess_reference(good, "pytorch-fid", size=17).shape == (2, 3, 17, 17)


def test_importing_the_module_loads_neither_torch_nor_pil(tmp_path) -> None:
    probe = (
        "import json, sys, numpy as np\n"
        "from fidkit.inception.conventions import preprocess_reference\n"
        "preprocess_reference(np.zeros((1, 5, 7, 3), np.uint8), 'clean')\n"
        "print(json.dumps(sorted(m for m in ('torch', 'onnxruntime', 'onnx', 'PIL') if m in sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path, env=env
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
