"""RunOptions and the network's option checks: what every extractor refuses, what only the Inception network
refuses, and refusal messages that name what was passed and a fix that works."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

import fidkit
from fidkit.errors import FidkitWarning, InputError
from fidkit.options import RunOptions


# ------------------------------------------------------------------------ weights: a path, checked when made


@pytest.mark.parametrize("weights", [123, True, b"w0.pth", ["w0.pth"], 1.5, {"path": "w0.pth"}])
def test_weights_that_are_not_a_path_are_refused_when_the_options_are_made(weights):
    with pytest.raises(InputError, match=r"weights must be the path of a weights file \(a str or an os.PathLike") as raised:
        RunOptions(weights=weights, device="cpu")
    assert type(weights).__name__ in str(raised.value)


def test_weights_not_a_path_are_refused_before_the_source_is_opened(tmp_path):
    # The source does not exist: the weights are what is refused, first.
    with pytest.raises(InputError, match=r"weights must be the path.*not int 7"):
        fidkit.compute_stats(tmp_path / "missing.npy", weights=7, device="cpu")


def test_paths_and_located_weights_are_accepted(tmp_path, random_weights_path):
    from fidkit.inception.weights import locate_weights

    assert RunOptions(weights=str(tmp_path / "w.pth")).weights == str(tmp_path / "w.pth")
    assert RunOptions(weights=pathlib.Path("w.pth")).weights == pathlib.Path("w.pth")
    located = locate_weights(random_weights_path)
    assert RunOptions(weights=located).to_dict()["weights"] == str(random_weights_path)
    with pytest.raises(InputError, match="blank"):
        RunOptions(weights="  ")


# ------------------------------------------------------------------------ the environment and numpy integers


@pytest.mark.parametrize("blank", ["", " ", "\t", "  \n"])
def test_a_blank_fidkit_home_is_unset_and_makes_no_folder_in_the_working_directory(blank, tmp_path, monkeypatch):
    from fidkit._home_dir import cache_home

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FIDKIT_HOME", blank)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_home() == tmp_path / "xdg" / "fidkit"
    monkeypatch.setenv("XDG_CACHE_HOME", blank)
    assert cache_home() == pathlib.Path.home() / ".cache" / "fidkit"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dims", [np.int64(64), np.int32(192), np.uint16(768), 2048])
def test_dims_take_numpy_integers_as_batch_size_and_limit_do(dims):
    options = RunOptions(dims=dims, batch_size=np.int64(8), limit=np.int32(3))
    assert options.dims == int(dims) and type(options.dims) is int


@pytest.mark.parametrize("dims", [True, np.bool_(True), 64.0, np.float64(64), np.int64(65)])
def test_dims_that_are_no_layer_are_still_refused(dims):
    with pytest.raises(InputError, match="dims must be"):
        RunOptions(dims=dims)


# ------------------------------------------------------------------------ refusals name what was passed, fixes work


_FIX = re.compile(r"(pass|drop) (\w+)=('[^']*'|\d+)|use cluster='local'")
_DEFAULTS = {"engine": "auto", "precision": "exact", "threads": None, "device": "auto"}


def _apply(fix: str, passed: dict) -> dict:
    changed = dict(passed)
    for found in _FIX.finditer(fix):
        if found.group(0).startswith("use cluster"):
            changed["cluster"] = "local"
            continue
        verb, name, value = found.groups()
        changed[name] = _DEFAULTS[name] if verb == "drop" else (value.strip("'") if value.startswith("'") else int(value))
    return changed


_COMBINATIONS = [
    dict(device=device, engine=engine, precision=precision, threads=threads, cluster=cluster)
    for device in ("auto", "cpu", "cuda", "cuda:1", "tensorrt", "tensorrt:2")
    for engine in ("auto", "onnxruntime", "torch")
    for precision in ("exact", "tf32", "bf16", "fast")
    for threads in (None, 2)
    for cluster in ("local", "ray")
]


@pytest.mark.parametrize("passed", _COMBINATIONS, ids=lambda passed: "-".join(str(v) for v in passed.values()))
def test_every_refused_combination_names_what_was_passed_and_each_fix_offered_works(passed):
    try:
        RunOptions(**passed)
    except InputError as exc:
        message = str(exc)
    else:
        return
    problem, _, fixes = message.partition(": ")
    assert fixes, message
    # The problem names only values that were passed (never a precision or device the user did not give).
    for name, value in re.findall(r"(\w+)=('[^']*'|\d+)", problem):
        if name in passed:
            assert str(passed[name]) == value.strip("'"), message
    alternatives = fixes.split(", or ")
    for fix in alternatives:
        assert _FIX.search(fix), message
        # Each "drop name=value" names the value as passed.
        for verb, name, value in re.findall(r"(drop) (\w+)=('[^']*'|\d+)", fix):
            assert str(passed[name]) == value.strip("'"), message
        RunOptions(**_apply(fix, passed))  # the fix, as offered, is accepted


def test_the_reviews_cases_name_tf32_and_bf16_and_offer_no_device_that_fails():
    with pytest.raises(InputError) as raised:
        RunOptions(cluster="ray", device="cuda", precision="tf32")
    message = str(raised.value)
    assert "precision='tf32'" in message and "fast" not in message and "tensorrt" not in message
    assert "engine='torch'" not in message
    with pytest.raises(InputError) as raised:
        RunOptions(cluster="ray", engine="torch", precision="bf16")
    message = str(raised.value)
    assert "engine='torch'" in message and "precision='bf16'" in message and "fast" not in message
    with pytest.raises(InputError) as raised:
        RunOptions(precision="fast", device="tensorrt", engine="torch")
    message = str(raised.value)
    assert "engine='onnxruntime'" in message and "device='cuda'" not in message


# ------------------------------------------------------------------------ stats/features --json record the network


_RECORDED = {
    "feature_extractor": "inception-2015-12-05/pool_3", "weights_sha256": "c" * 64, "convention": "clean",
    "engine": "torch", "precision": "bf16", "provider": "CUDAExecutionProvider",
}


@pytest.mark.parametrize("command", ["stats", "features"])
def test_stats_and_features_json_say_which_precision_engine_provider_and_convention_made_them(
    command, tmp_path, capsys, fidkit_home
):
    import json

    from fidkit.cli import build_parser

    rows = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    path = tmp_path / "side.npz"
    if command == "stats":
        fidkit.Stats.from_features(rows, metadata=_RECORDED).save(path)
    else:
        fidkit.Features(rows, metadata=_RECORDED).save(path)
    args = build_parser(command).parse_args([command, str(path), "--json"])
    with pytest.warns(FidkitWarning, match="not the released"):  # the made-up weights are said to be no release
        assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {key: summary[key] for key in _RECORDED} == _RECORDED


# ------------------------------------------------------------------------ any extractor: shared checks, unread options


class _MeanColour:
    feature_dim, batch_size = 3, 8

    def __call__(self, images):
        return np.asarray(images, dtype=np.float32).mean(axis=(1, 2))

    def metadata(self):
        return {"weights_sha256": "none", "resize_mode": "none"}


@pytest.fixture
def registered():
    """Two entries: one reads no network option, one reads the device (and records what it was built with)."""
    from fidkit.extractors import ExtractorEntry, register_extractor, unregister_extractor

    built = []
    register_extractor(ExtractorEntry(
        name="colour-plain", description="reads no network option", build=lambda options: _MeanColour(),
        identity=lambda options: {"weights_sha256": "none", "resize_mode": "none"},
    ), replace=True)
    register_extractor(ExtractorEntry(
        name="colour-device", description="reads the device", build=lambda options: built.append(options) or _MeanColour(),
        identity=lambda options: {"weights_sha256": "none", "resize_mode": "none"}, options=("device",),
    ), replace=True)
    yield built
    unregister_extractor("colour-plain")
    unregister_extractor("colour-device")


@pytest.mark.parametrize(("changes", "message"), [
    ({"device": "bogus"}, r"device must be auto, cpu, cuda.*not 'bogus'"),
    ({"device": "cuda:x"}, "GPU index"),
    ({"engine": "xyz"}, r"engine must be one of auto, onnxruntime, torch, not 'xyz'"),
    ({"precision": "nonsense"}, r"precision must be one of exact, fast, tf32, bf16, not 'nonsense'"),
    ({"convention": "nope"}, r"unknown preprocessing convention 'nope'; use one of 'tf'"),
    ({"dims": -5}, r"dims must be a positive integer .*not -5"),
    ({"dims": 0}, r"dims must be a positive integer"),
    ({"dims": "wide"}, r"dims must be a positive integer"),
])
@pytest.mark.parametrize("name", ["colour-plain", "colour-device", "inception-2015"])
def test_values_no_extractor_could_take_are_refused_whichever_is_named(registered, name, changes, message):
    with pytest.raises(InputError, match=message):
        RunOptions(extractor=name, **changes)


@pytest.mark.parametrize(("name", "value"), [
    ("device", "cpu"), ("device", "cuda:1"), ("engine", "torch"), ("precision", "bf16"), ("convention", "clean"),
    ("dims", 64), ("threads", 2), ("weights", "w.pth"),
])
def test_a_network_option_the_entry_does_not_read_is_refused_naming_it_and_the_fix(registered, name, value):
    with pytest.raises(InputError) as raised:
        RunOptions(extractor="colour-plain", **{name: value})
    message = str(raised.value)
    assert f"{name}={value!r} does not apply to the extractor 'colour-plain'" in message
    assert f"drop {name} (--{name})" in message and f"options=({name!r}, ...)" in message


def test_defaults_and_declared_options_pass_and_reach_the_build(registered):
    RunOptions(extractor="colour-plain", device="auto", engine="auto", precision="exact", convention="tf", dims=2048)
    options = RunOptions(extractor="colour-device", device="cuda:0", workers=0)
    assert options.device == "cuda"  # canonical, as for the built-in network
    stats = fidkit.compute_stats(np.zeros((4, 5, 5, 3), np.uint8), extractor="colour-device", device="cpu",
                                 use_cache=False, workers=0)
    assert stats.dim == 3 and registered[-1].device == "cpu"
    with pytest.raises(InputError, match="precision='tf32' does not apply to the extractor 'colour-device'.*reads device"):
        RunOptions(extractor="colour-device", device="cuda", precision="tf32")


def test_an_entry_declaring_an_option_that_is_no_network_option_is_refused():
    from fidkit.extractors import ExtractorEntry

    with pytest.raises(InputError, match="options must be a tuple of the network options"):
        ExtractorEntry(name="x", description="x", build=lambda o: None, identity=lambda o: {}, options=("batch_size",))
    with pytest.raises(InputError, match="options must be a tuple"):
        ExtractorEntry(name="x", description="x", build=lambda o: None, identity=lambda o: {}, options="device")
