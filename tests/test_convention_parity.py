"""Each convention's features and FID against the tools' OWN networks and distances, on the same random weights.

tests/test_conventions.py compares each convention's preprocessing with each tool's; here the whole chain is
compared: the same random weights of the exact layout (the session's ``random_weights_path``) loaded into each tool's
own network, the same uint8 images (pixel noise, and a smooth image with a black/white step where bicubic overshoots)
at 32x32, 256x256 and 61x400 (one side up, the other down), through each tool's own code, against fidkit's two
engines (the ONNX graph and the torch engine) under the convention named after the tool:

* ``pytorch-fid`` (0.3.0): ``pytorch_fid.inception.InceptionV3`` (``resize_input=True``, ``normalize_input=True``),
  its download replaced by our state dict (the key names are the same), fed by its ``ImagePathDataset`` and
  ``ToTensor`` from PNG files as ``fid_score.get_activations`` is, with that function's loop (one forward for the four
  blocks: pool_3 and ``--dims`` 64, 192, 768 through ``adaptive_avg_pool2d``); its ``calculate_frechet_distance`` on
  ``np.mean``/``np.cov`` of those activations (``calculate_activation_statistics``).
* ``clean`` (clean-fid 0.1.35): ``cleanfid.resize.build_resizer("clean")``, its ``ToTensor`` and
  ``InceptionV3W.forward``'s ``(x - 128) / 128``, into fidkit's torch ``FIDInceptionV3`` with the same weights,
  eager: clean-fid's own network is a TorchScript file of the released weights that cannot take other weights;
  its ``fid_from_feats`` for the distance.
* ``torchmetrics`` (1.9.0): ``FrechetInceptionDistance(feature=2048)`` with its default antialias, built offline
  on our weights (``feature_extractor_weights_path``: torch-fidelity's key names are fidkit's), fed uint8 NCHW through
  ``update``; its ``compute()`` for the distance (float32, as it returns).
* ``tf``: torch-fidelity 0.4.0's ``FeatureExtractorInceptionV3`` (its default extractor) on our weights; the FID by
  torchmetrics with ``antialias=False`` (torch-fidelity's resize, torchmetrics' distance) and, where its module
  imports, torch-fidelity's own ``fid_statistics_to_metric``.

Features must agree within 1e-5 relative (max abs difference over the max abs value) and FIDs within 1e-6 relative;
each test also asserts that every OTHER convention's features miss the tool's by far more than the tolerance, so a
swapped resize fails it. The two FID sets are the noise images (one per size) and the smooth ones.

torchvision: pytorch-fid and clean-fid import it at module level, pytorch-fid builds its network from torchvision's
``inception_v3`` and patches four kinds of blocks with its own. Where torchvision is missing or broken (a wheel built
for another torch fails to register its C ops, as here), they import against a stand-in module, within this module's
fixtures only: torchvision's unpatched Inception blocks are taken from torch-fidelity (its own copy of the same
torchvision blocks: same layers, same forward) and ``ToTensor`` is the two torch calls torchvision 0.28's
``to_tensor`` makes for a PIL RGB image (``.to(float32).div(255)``) and a float32 array (a transpose). With a working
torchvision the real modules run.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fidkit.inception.conventions import CONVENTIONS  # noqa: E402
from peer_tools import require, torch_fidelity_module, torchvision_works  # noqa: E402

#: Square up (CIFAR), square down, and non-square with one side up and the other down.
SIZES = [(32, 32), (256, 256), (61, 400)]
FEATURE_TOLERANCE = 1e-5  # max |fidkit - tool| / max |tool|
#: |fidkit - tool| / tool. Each float32 evaluation of the network lies up to about 1e-6 of an FID this small away
#: from a float64 evaluation of the same network on the same inputs (measured on these sets: torchmetrics' own FID
#: -1.0e-6, the torch engine's -8.1e-7 under the torchmetrics convention, the graph's within 4.4e-7), so two float32
#: evaluations can differ by twice that. Measured against the tools: the torch engine (eager float32 kernels, as the
#: tools) at most 5.8e-7; the ONNX graph (BatchNorm folded into the convolutions, onnxruntime's summation order) up
#: to 1.33e-6 (torchmetrics at 2048), hence 3e-6 for it.
FID_TOLERANCE = {"torch": 1e-6, "onnxruntime": 3e-6}
#: Another convention's features must miss the tool's by at least this much (relative), so that a swap fails.
SWAP_MARGIN = 10 * FEATURE_TOLERANCE
#: The graph engine exports one ONNX graph per convention (tens of seconds each on a busy CPU): the slow suite.
ENGINES = [pytest.param("onnxruntime", marks=pytest.mark.slow), "torch"]
#: --dims of pytorch-fid; 2048's distance needs the tools' 2048x2048 sqrtm or eigvals (tens of seconds): slow.
DISTANCE_DIMS = [pytest.param(2048, marks=pytest.mark.slow), 768, 192, 64]


def _size_id(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _images(height: int, width: int) -> np.ndarray:
    """Two images: pixel noise, and a smooth field with a black/white step (bicubic overshoots there, so
    clean-fid's clip matters)."""
    rng = np.random.default_rng(7 * height + width)
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    y, x = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    phases = rng.uniform(0, 2 * np.pi, (3, 2))
    smooth = np.stack(
        [127.5 + 100 * np.sin(2 * np.pi * (1.5 * x + p)) * np.cos(2 * np.pi * (y + q)) for p, q in phases], axis=-1
    )
    smooth[:, width // 3 : width // 3 + max(width // 8, 1)] = 0
    smooth[:, width // 3 + max(width // 8, 1) : width // 2 + 1] = 255
    return np.stack([noise, np.clip(np.rint(smooth), 0, 255).astype(np.uint8)])


IMAGES = {size: _images(*size) for size in SIZES}


def _relative(got: np.ndarray, expected: np.ndarray) -> float:
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def _sets(features: dict[tuple[int, int], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The two FID sets: the noise image of each size, and the smooth image of each size."""
    return (
        np.concatenate([features[size][:1] for size in SIZES]),
        np.concatenate([features[size][1:] for size in SIZES]),
    )


# ------------------------------------------------------------------------------------------------
# Importing the tools (with a stand-in torchvision where the real one does not import).
# ------------------------------------------------------------------------------------------------


class _ToTensor:
    """torchvision 0.28 ``transforms.ToTensor`` for the two inputs the tools give it here."""

    def __call__(self, picture):
        if isinstance(picture, np.ndarray):  # clean-fid's resized float32 HWC array: transposed, not scaled
            tensor = torch.from_numpy(picture.transpose((2, 0, 1))).contiguous()
        else:  # pytorch-fid's PIL RGB image
            pixels = torch.from_numpy(np.array(picture, np.uint8, copy=True))
            tensor = pixels.view(picture.size[1], picture.size[0], 3).permute((2, 0, 1)).contiguous()
        if tensor.dtype == torch.uint8:
            return tensor.to(dtype=torch.get_default_dtype()).div(255)
        return tensor


def _stand_in_torchvision() -> dict[str, types.ModuleType]:
    """The parts of torchvision that pytorch-fid and clean-fid touch, from torch-fidelity's copies of its blocks."""
    blocks = torch_fidelity_module("torch_fidelity.feature_extractor_inceptionv3")

    def inception_v3(*, num_classes=1000, aux_logits=True, init_weights=None, weights=None):
        """torchvision's ``Inception3`` layers (what pytorch-fid keeps of it), without its auxiliary classifier."""
        assert weights is None and not aux_logits
        net = torch.nn.Module()
        net.Conv2d_1a_3x3 = blocks.BasicConv2d(3, 32, kernel_size=3, stride=2)
        net.Conv2d_2a_3x3 = blocks.BasicConv2d(32, 32, kernel_size=3)
        net.Conv2d_2b_3x3 = blocks.BasicConv2d(32, 64, kernel_size=3, padding=1)
        net.Conv2d_3b_1x1 = blocks.BasicConv2d(64, 80, kernel_size=1)
        net.Conv2d_4a_3x3 = blocks.BasicConv2d(80, 192, kernel_size=3)
        net.Mixed_5b = blocks.InceptionA(192, pool_features=32)  # the A, C and E blocks are replaced by pytorch-fid
        net.Mixed_5c = blocks.InceptionA(256, pool_features=64)
        net.Mixed_5d = blocks.InceptionA(288, pool_features=64)
        net.Mixed_6a = blocks.InceptionB(288)
        net.Mixed_6b = blocks.InceptionC(768, channels_7x7=128)
        net.Mixed_6c = blocks.InceptionC(768, channels_7x7=160)
        net.Mixed_6d = blocks.InceptionC(768, channels_7x7=160)
        net.Mixed_6e = blocks.InceptionC(768, channels_7x7=192)
        net.Mixed_7a = blocks.InceptionD(768)
        net.Mixed_7b = blocks.InceptionE_1(1280)
        net.Mixed_7c = blocks.InceptionE_1(2048)
        net.fc = torch.nn.Linear(2048, num_classes)
        return net

    root = types.ModuleType("torchvision")
    root.__version__ = "0.28.0"  # pytorch-fid reads it to pass init_weights=False
    models = types.ModuleType("torchvision.models")
    inception = types.ModuleType("torchvision.models.inception")
    inception.InceptionA, inception.InceptionC, inception.InceptionE = (
        blocks.InceptionA,
        blocks.InceptionC,
        blocks.InceptionE_1,
    )
    models.inception, models.inception_v3 = inception, inception_v3
    transforms = types.ModuleType("torchvision.transforms")
    transforms.ToTensor = _ToTensor
    root.models, root.transforms = models, transforms
    return {
        "torchvision": root,
        "torchvision.models": models,
        "torchvision.models.inception": inception,
        "torchvision.transforms": transforms,
    }


@contextlib.contextmanager
def _tool_imports():
    """Fresh imports of pytorch_fid and cleanfid against the stand-in; sys.modules is restored afterwards (the
    imported modules keep their references to the stand-in)."""
    if torchvision_works():
        yield
        return
    families = ("torchvision", "pytorch_fid", "cleanfid")
    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] in families}
    sys.modules.update(_stand_in_torchvision())
    try:
        yield
    finally:
        for name in [name for name in sys.modules if name.split(".")[0] in families]:
            del sys.modules[name]
        sys.modules.update(saved)


# ------------------------------------------------------------------------------------------------
# Shared fixtures: the weights and fidkit's features (each built once per module).
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def state_dict(random_weights_path: Path) -> dict:
    from fidkit.inception.weights import load_state_dict

    return load_state_dict(random_weights_path)


@pytest.fixture(scope="module")
def fidkit_extractors(random_weights_path: Path):
    """``get(convention, engine, dims)``: a fidkit extractor, built once (one graph export per convention)."""
    from fidkit.inception import FeatureExtractor
    from fidkit.inception.torch_engine import TorchFeatureExtractor

    built: dict = {}

    def get(convention: str, engine: str, dims: int = 2048):
        key = (convention, engine, dims)
        if key not in built:
            kind = FeatureExtractor if engine == "onnxruntime" else TorchFeatureExtractor
            built[key] = kind(random_weights_path, device="cpu", convention=convention, dims=dims)
        return built[key]

    return get


@pytest.fixture(scope="module")
def fidkit_features(fidkit_extractors):
    """``get(convention, engine, dims)``: {size: fidkit's features of IMAGES[size]}, computed once."""
    computed: dict = {}

    def get(convention: str, engine: str, dims: int = 2048) -> dict[tuple[int, int], np.ndarray]:
        key = (convention, engine, dims)
        if key not in computed:
            extractor = fidkit_extractors(convention, engine, dims)
            computed[key] = {size: extractor(IMAGES[size]) for size in SIZES}
        return computed[key]

    return get


def _check_features(
    tool: np.ndarray, name: str, engine: str, size, fidkit_features, dims: int = 2048, others=CONVENTIONS
) -> None:
    """fidkit's features under `name` equal the tool's; under each of the `others` conventions they do not."""
    deviation = _relative(fidkit_features(name, engine, dims)[size], tool)
    print(f"{name} {engine} {_size_id(size)} dims {dims}: relative deviation {deviation:.3g}")
    assert deviation <= FEATURE_TOLERANCE
    for other in others:
        if other != name:
            missed = _relative(fidkit_features(other, engine, dims)[size], tool)
            print(f"  under {other}: {missed:.3g}")
            assert missed > SWAP_MARGIN, f"convention {other!r} also matches {name!r}'s tool ({missed:.3g})"


def _fidkit_fid(fidkit_extractors, name: str, engine: str, dims: int = 2048):
    """fidkit's FID between the two sets through the public API (each set an iterable of batches of one size)."""
    import fidkit

    extractor = fidkit_extractors(name, engine, dims)
    noise = [IMAGES[size][:1] for size in SIZES]
    smooth = [IMAGES[size][1:] for size in SIZES]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # N = 3 per side (SmallSampleWarning), and random weights (FidkitWarning)
        report = fidkit.compute_fid(noise, smooth, extractor=extractor, use_cache=False, progress=False)
    assert any(issubclass(warning.category, fidkit.SmallSampleWarning) for warning in caught)
    assert report.convention == name and report.a.n == report.b.n == len(SIZES)
    return float(report)


# ------------------------------------------------------------------------------------------------
# pytorch-fid
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pytorch_fid(state_dict, tmp_path_factory):
    """pytorch-fid's activations of IMAGES at every block (by --dims), and its distance of the two sets."""
    require("pytorch_fid")
    from PIL import Image

    with _tool_imports():
        inception = importlib.import_module("pytorch_fid.inception")
        fid_score = importlib.import_module("pytorch_fid.fid_score")
    with pytest.MonkeyPatch.context() as patch:
        # fid_inception_v3 downloads the released weights: ours instead (same key names, loaded strictly).
        patch.setattr(inception, "load_state_dict_from_url", lambda *args, **kwargs: dict(state_dict))
        model = inception.InceptionV3(sorted(inception.InceptionV3.BLOCK_INDEX_BY_DIM.values())).eval()
    assert model.resize_input and model.normalize_input  # the defaults
    folder = tmp_path_factory.mktemp("pytorch-fid-images")
    activations: dict[int, dict] = {dims: {} for dims in inception.InceptionV3.BLOCK_INDEX_BY_DIM}
    for size in SIZES:
        files = []
        for index, image in enumerate(IMAGES[size]):
            files.append(folder / f"{_size_id(size)}-{index}.png")  # lossless: decodes to the same uint8
            Image.fromarray(image).save(files[-1])
        # fid_score.get_activations' loop, with one forward for every block instead of one model per --dims.
        dataset = fid_score.ImagePathDataset(files, transforms=fid_score.TF.ToTensor())
        loader = torch.utils.data.DataLoader(dataset, batch_size=len(files), shuffle=False, drop_last=False)
        (batch,) = list(loader)
        with torch.no_grad():
            outputs = model(batch)
        for dims, block in inception.InceptionV3.BLOCK_INDEX_BY_DIM.items():
            pred = outputs[block]
            if pred.size(2) != 1 or pred.size(3) != 1:
                pred = fid_score.adaptive_avg_pool2d(pred, output_size=(1, 1))
            array = np.empty((len(files), dims))  # float64, as get_activations stores them
            array[:] = pred.squeeze(3).squeeze(2).cpu().numpy()
            activations[dims][size] = array
    distances: dict[int, float] = {}

    def distance(dims: int) -> float:
        """calculate_activation_statistics' mean and covariance, then calculate_frechet_distance (once per dims)."""
        if dims not in distances:
            stats = [(np.mean(act, axis=0), np.cov(act, rowvar=False)) for act in _sets(activations[dims])]
            with _quiet_scipy():
                distances[dims] = float(fid_score.calculate_frechet_distance(*stats[0], *stats[1]))
        return distances[dims]

    return types.SimpleNamespace(activations=activations, distance=distance)


@contextlib.contextmanager
def _quiet_scipy():
    """pytorch-fid's and clean-fid's sqrtm warn that the covariances of 3 images are singular (they are)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # sqrtm's disp argument, in scipy >= 1.16
        with contextlib.suppress(ImportError):
            from scipy.linalg import LinAlgWarning

            warnings.simplefilter("ignore", LinAlgWarning)
        yield


@pytest.mark.parametrize("size", SIZES, ids=_size_id)
@pytest.mark.parametrize("engine", ENGINES)
def test_pytorch_fid_features(pytorch_fid, fidkit_features, engine: str, size) -> None:
    _check_features(pytorch_fid.activations[2048][size], "pytorch-fid", engine, size, fidkit_features)


@pytest.mark.parametrize("dims", [768, 192, 64])
@pytest.mark.parametrize("engine", ENGINES)
def test_pytorch_fid_dims(pytorch_fid, fidkit_features, engine: str, dims: int) -> None:
    """``--dims``: the spatial means of InceptionV3([block]) equal fidkit's features of that width (and tf's miss:
    every pair of conventions is told apart at 2048 above)."""
    for size in SIZES:
        tool = pytorch_fid.activations[dims][size]
        _check_features(tool, "pytorch-fid", engine, size, fidkit_features, dims, others=["tf"])


@pytest.mark.parametrize("dims", DISTANCE_DIMS)
@pytest.mark.parametrize("engine", ENGINES)
def test_pytorch_fid_distance(pytorch_fid, fidkit_extractors, engine: str, dims: int) -> None:
    expected = pytorch_fid.distance(dims)
    got = _fidkit_fid(fidkit_extractors, "pytorch-fid", engine, dims)
    relative = abs(got - expected) / expected
    print(f"pytorch-fid FID {engine} dims {dims}: tool {expected!r} fidkit {got!r} ({relative:.3g})")
    assert abs(got - expected) <= FID_TOLERANCE[engine] * expected


@pytest.mark.slow
# 64 and 192: the means over 73 x 73 and 35 x 35 maps, where the sum's round-off dominated; at 768 the network's own
# float32 round-off (about 1e-6 on both engines) is what remains.
@pytest.mark.parametrize("dims", [64, 192])
def test_graph_dims_means_are_float32_accurate(state_dict, fidkit_features, dims: int) -> None:
    """The graph's --dims features within 1e-6 of the feature scale of a float64 evaluation of the same network on
    the same (float32) input, as pool_3 and the torch engine's are."""
    from fidkit.inception.conventions import preprocess_reference
    from fidkit.inception.network import build_network

    network = build_network(state_dict).double().eval()
    output = f"dims_{dims}"
    for size in SIZES:
        normalized = torch.from_numpy(preprocess_reference(IMAGES[size], "pytorch-fid")).double()
        with torch.no_grad():
            exact = network.outputs(normalized, {output})[output].numpy()
        assert _relative(fidkit_features("pytorch-fid", "torch", dims)[size], exact) <= 1e-6
        deviation = _relative(fidkit_features("pytorch-fid", "onnxruntime", dims)[size], exact)
        print(f"graph dims {dims} {_size_id(size)}: {deviation:.3g} of a float64 evaluation")
        assert deviation <= 1e-6


# ------------------------------------------------------------------------------------------------
# clean-fid, mode "clean"
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean_fid(state_dict):
    """clean-fid's resize and normalization into fidkit's torch network (eager), and clean-fid's distance."""
    require("cleanfid")
    from fidkit.inception.network import build_network

    with _tool_imports():
        resize = importlib.import_module("cleanfid.resize")
        utils = importlib.import_module("cleanfid.utils")
        torchscript = importlib.import_module("cleanfid.inception_torchscript")
        fid = importlib.import_module("cleanfid.fid")
    network = build_network(state_dict)
    # InceptionV3W.forward with resize_inside=False (build_feature_extractor("clean")): its normalization, then
    # its layers, here the same architecture with our weights.
    extractor = types.SimpleNamespace(resize_inside=False, layers=types.SimpleNamespace(forward=network))
    resizer = resize.build_resizer("clean")
    to_tensor = utils.torchvision.transforms.ToTensor()  # ResizeDataset's transform
    features = {}
    for size in SIZES:
        batch = torch.stack([to_tensor(resizer(image)) for image in IMAGES[size]])
        with torch.no_grad():
            features[size] = torchscript.InceptionV3W.forward(extractor, batch).numpy()

    @functools.cache
    def distance() -> float:
        # get_folder_features returns float32 rows (np_feats); fid_from_feats takes its mean and np.cov.
        with _quiet_scipy():
            return float(fid.fid_from_feats(*_sets(features)))

    return types.SimpleNamespace(features=features, distance=distance)


@pytest.mark.parametrize("size", SIZES, ids=_size_id)
@pytest.mark.parametrize("engine", ENGINES)
def test_clean_fid_features(clean_fid, fidkit_features, engine: str, size) -> None:
    _check_features(clean_fid.features[size], "clean", engine, size, fidkit_features)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_clean_fid_distance(clean_fid, fidkit_extractors, engine: str) -> None:
    expected = clean_fid.distance()
    got = _fidkit_fid(fidkit_extractors, "clean", engine)
    print(f"clean FID {engine}: tool {expected!r} fidkit {got!r} ({abs(got - expected) / expected:.3g})")
    assert abs(got - expected) <= FID_TOLERANCE[engine] * expected


# ------------------------------------------------------------------------------------------------
# torchmetrics, and tf (torch-fidelity's default extractor)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_weights_file(state_dict, tmp_path_factory) -> Path:
    """Our state dict as ``torch.save`` writes it: what torch-fidelity's ``torch.load`` reads."""
    path = tmp_path_factory.mktemp("torch-fidelity") / "weights.pth"
    torch.save(state_dict, path)
    return path


def _torchmetrics_run(torch_weights_file: Path, *, antialias: bool):
    """torchmetrics' FrechetInceptionDistance on our weights, updated with the two sets (noise images as real,
    smooth as fake): the features of IMAGES as its network gave them (a forward hook), and ``distance()``, its
    ``compute()`` (once)."""
    require("torchmetrics")
    fid_module = torch_fidelity_module("torchmetrics.image.fid")
    metric = fid_module.FrechetInceptionDistance(
        feature=2048, feature_extractor_weights_path=str(torch_weights_file), antialias=antialias
    )
    seen: list = []
    metric.inception.register_forward_hook(lambda module, args, output: seen.append(output.detach().clone()))
    features = {}
    for size in SIZES:
        batch = torch.from_numpy(IMAGES[size].transpose(0, 3, 1, 2).copy())  # uint8 NCHW, what update() takes
        metric.update(batch[:1], real=True)
        metric.update(batch[1:], real=False)
        features[size] = torch.cat(seen[-2:]).numpy()
    return types.SimpleNamespace(features=features, distance=functools.cache(lambda: float(metric.compute())))


@pytest.fixture(scope="module")
def torchmetrics_default(torch_weights_file):
    import inspect

    torch_fidelity_module("torch_fidelity.feature_extractor_inceptionv3")
    fid_module = torch_fidelity_module("torchmetrics.image.fid")
    defaults = inspect.signature(fid_module.FrechetInceptionDistance.__init__).parameters
    assert defaults["antialias"].default is True and defaults["normalize"].default is False
    return _torchmetrics_run(torch_weights_file, antialias=True)


@pytest.mark.parametrize("size", SIZES, ids=_size_id)
@pytest.mark.parametrize("engine", ENGINES)
def test_torchmetrics_features(torchmetrics_default, fidkit_features, engine: str, size) -> None:
    _check_features(torchmetrics_default.features[size], "torchmetrics", engine, size, fidkit_features)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_torchmetrics_distance(torchmetrics_default, fidkit_extractors, engine: str) -> None:
    expected = torchmetrics_default.distance()
    got = _fidkit_fid(fidkit_extractors, "torchmetrics", engine)
    print(f"torchmetrics FID {engine}: tool {expected!r} fidkit {got!r} ({abs(got - expected) / expected:.3g})")
    # compute() returns float32: its rounding (3e-8 relative) is well inside the tolerance.
    assert abs(got - expected) <= FID_TOLERANCE[engine] * expected


@pytest.fixture(scope="module")
def torch_fidelity(torch_weights_file):
    """torch-fidelity's default feature extractor on our weights: {size: features of IMAGES[size]}."""
    module = torch_fidelity_module("torch_fidelity.feature_extractor_inceptionv3")
    network = module.FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(torch_weights_file)
    )
    features = {}
    for size in SIZES:
        with torch.no_grad():
            (rows,) = network(torch.from_numpy(IMAGES[size].transpose(0, 3, 1, 2).copy()))
        features[size] = rows.numpy()
    return features


@pytest.mark.parametrize("size", SIZES, ids=_size_id)
@pytest.mark.parametrize("engine", ENGINES)
def test_tf_features_are_torch_fidelitys(torch_fidelity, fidkit_features, engine: str, size) -> None:
    _check_features(torch_fidelity[size], "tf", engine, size, fidkit_features)


@pytest.fixture(scope="module")
def tf_distances(torch_fidelity, torch_weights_file):
    """tf's FID by the tools: torchmetrics with antialias=False (torch-fidelity's resize and network, torchmetrics'
    distance) and, where its module imports (it needs torchvision), torch-fidelity's own distance."""
    legacy = _torchmetrics_run(torch_weights_file, antialias=False)
    for size in SIZES:  # the same network and resize as torch-fidelity's: the same features
        assert _relative(legacy.features[size], torch_fidelity[size]) <= FEATURE_TOLERANCE
    distances = {"torchmetrics(antialias=False)": legacy.distance()}
    if torchvision_works():
        metric_fid = importlib.import_module("torch_fidelity.metric_fid")
        stats = [metric_fid.fid_features_to_statistics(torch.from_numpy(rows)) for rows in _sets(torch_fidelity)]
        distances["torch-fidelity"] = metric_fid.fid_statistics_to_metric(*stats, verbose=False)[
            metric_fid.KEY_METRIC_FID
        ]
    return distances


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_tf_distance(tf_distances, fidkit_extractors, engine: str) -> None:
    got = _fidkit_fid(fidkit_extractors, "tf", engine)
    for tool, expected in tf_distances.items():
        print(f"tf FID {engine}: {tool} {expected!r} fidkit {got!r} ({abs(got - expected) / expected:.3g})")
        assert abs(got - expected) <= FID_TOLERANCE[engine] * expected
