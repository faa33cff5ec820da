"""fidkit.options: one RunOptions object, checked once, built the same way from the CLI and from keywords."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from fidkit.errors import FidkitWarning, InputError
from fidkit.options import RunOptions, run_options


def test_defaults_are_the_reference_and_the_object_is_frozen_and_picklable():
    options = RunOptions()
    assert (options.extractor, options.device, options.engine, options.precision) == (
        "inception-2015", "auto", "auto", "exact"
    )
    assert options.batch_size is None  # the extractor chooses for its device
    assert options.cluster == "local" and options.use_cache
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.device = "cpu"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(options)) == options  # what the Ray actors receive


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"threads": 0}, "threads"),
        ({"workers": -1}, "workers"),
        ({"limit": 0}, "limit"),
        ({"device": "gpu"}, "device must be"),
        ({"device": "cuda:x"}, "GPU index"),
        ({"engine": "tensorflow"}, "engine must be"),
        ({"precision": "half"}, "precision must be"),
        ({"precision": "fast", "device": "cpu"}, "TensorRT"),
        ({"precision": "fast", "device": "tensorrt", "engine": "torch"}, "torch engine"),
        ({"cluster": "slurm"}, "cluster must be"),
        ({"ray_address": "head:6379"}, "only used with cluster='ray'"),
        ({"extractor": "clip"}, "unknown extractor 'clip'"),
        ({"weights": ""}, "weights"),
    ],
)
def test_every_invalid_value_or_combination_is_refused_when_the_object_is_made(changes, message):
    with pytest.raises(InputError, match=message):
        RunOptions(**changes)


def test_replace_checks_again_and_unknown_names_list_the_options():
    options = RunOptions(device="cpu")
    assert options.replace(batch_size=10).batch_size == 10
    with pytest.raises(InputError, match="TensorRT"):
        options.replace(precision="fast")
    with pytest.raises(InputError, match=r"unknown option batchsize; the options are extractor, weights, device"):
        options.replace(batchsize=10)


def test_device_strings_are_normalised_and_seed_without_limit_warns():
    assert RunOptions(device="cuda:0").device == "cuda"
    with pytest.warns(FidkitWarning, match="seed 3 without limit"):
        RunOptions(seed=3)


def test_keywords_override_an_options_object():
    base = RunOptions(device="cpu", limit=5)
    merged = run_options(base, limit=7)
    assert (merged.device, merged.limit) == ("cpu", 7)
    assert run_options(base) is base
    assert run_options(None, device="cpu") == RunOptions(device="cpu")


def test_the_command_line_builds_the_same_object(tmp_path):
    from fidkit.cli import build_parser
    from fidkit.commands import _run_options

    args = build_parser("compute").parse_args(
        ["compute", "a", "b", "--device", "cpu", "--batch-size", "7", "--limit", "3", "--seed", "1", "--no-cache",
         "--workers", "0", "--threads", "2", "-q"]
    )
    assert _run_options(args) == RunOptions(
        device="cpu", batch_size=7, limit=3, seed=1, use_cache=False, workers=0, threads=2, progress=False
    )
    args = build_parser("stats").parse_args(["stats", "x", "--ray-address", "head:6379"])
    assert _run_options(args).cluster == "ray"  # --ray-address implies --ray


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"skip_bad": "false"}, "skip_bad must be True or False"),
        ({"use_cache": "no"}, "use_cache must be True or False"),
        ({"progress": "off"}, "progress must be True, False or None"),
        ({"threads": 2.0}, "threads must be an integer"),
        ({"engine": "torch", "threads": 2}, "torch engine uses torch's own"),
        ({"cluster": "ray", "engine": "torch"}, "cluster='ray' runs the onnxruntime network"),
        ({"cluster": "ray", "device": "tensorrt"}, "cluster='ray' runs the onnxruntime network"),
    ],
)
def test_truthy_strings_and_combinations_nothing_would_honour_are_refused(changes, message):
    with pytest.raises(InputError, match=message):
        RunOptions(**changes)


def test_numpy_integers_are_taken_as_integers():
    import numpy as np

    options = RunOptions(threads=np.int64(2), workers=np.int64(0), batch_size=np.int64(8))
    assert (options.threads, options.workers, options.batch_size) == (2, 0, 8)
    assert type(options.threads) is int and type(options.workers) is int


def test_the_reading_settings_travel_as_one_checked_object():
    import numpy as np

    from fidkit.sources import ReadOptions

    options = RunOptions(device="cpu", limit=np.int64(7), seed=3, skip_bad=True, exif_transpose=True, workers=0)
    assert options.read == ReadOptions(limit=7, seed=3, skip_bad=True, exif_transpose=True, workers=0)
    assert type(options.read.limit) is int
    # Every reading setting of RunOptions is in ReadOptions, under the same name: none is passed beside it.
    assert {f.name for f in dataclasses.fields(ReadOptions)} <= {f.name for f in dataclasses.fields(RunOptions)}
    for changes, message in (
        (dict(limit=0), "limit must be a positive integer"),
        (dict(seed=-1), r"seed must be an integer with 0 <= seed < 2\*\*32"),
        (dict(seed=2**32), r"seed must be an integer with 0 <= seed < 2\*\*32"),  # as the CLI's --seed
        (dict(workers=True), "workers must be a non-negative integer"),
        (dict(workers=1.5), "workers must be a non-negative integer"),
    ):
        with pytest.raises(InputError, match=message):
            ReadOptions(**changes)


def test_a_misspelt_field_is_an_input_error_with_the_closest_name_and_the_signature_shows_the_fields():
    # RunOptions.__new__ (which remembers what was named) hid both: a bare TypeError, and (*args, **kwargs) in help().
    with pytest.raises(InputError, match="did you mean limit"):
        RunOptions(limt=3)
    import inspect

    parameters = inspect.signature(RunOptions).parameters
    assert list(parameters) == [field.name for field in dataclasses.fields(RunOptions)]
    assert parameters["dims"].default == 2048
