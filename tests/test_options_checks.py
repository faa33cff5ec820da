"""RunOptions and the network's option checks: what every extractor refuses, what only the Inception network
refuses, and refusal messages that name what was passed and a fix that works."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import fidkit
from fidkit.errors import InputError
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
    from fidkit._fs import cache_home

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
