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
