"""What fidkit.FID and the features files accept, checked where they are given: image ranges, compute()'s timeout,
the constructor's arguments, a checkpoint whose weights moved or whose reference is not computed yet, the format
version of a features file, and the messages of a few refusals.

No network is built here unless a test needs fidkit's own extractor (items about its weights file): the others
use a fake extractor of a few features.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import fidkit
from fidkit.errors import FidkitWarning, InputError, SmallSampleWarning, StatsFileError, WeightsError
from fidkit.stats import Stats

from ports import free_port  # tests/ports.py


@pytest.fixture(autouse=True)
def _quiet_small_samples():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        warnings.filterwarnings("ignore", message=".*not the released", category=FidkitWarning)  # random weights
        warnings.filterwarnings("ignore", message=".*records no weights sha256", category=FidkitWarning)  # features
        yield


class Moments:
    """Each channel's mean and spread, and two pixels (dimension 12): a fake network that sees every level."""

    feature_dim, batch_size = 12, 64

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def __call__(self, batch):
        x = np.asarray(batch, dtype=np.float64)
        self.seen.append(np.array(batch))
        return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2)), x[:, 0, 0, :], x[:, -1, -1, :]],
                              axis=1).astype(np.float32)

    def metadata(self) -> dict:
        return {"feature_extractor": "moments", "weights_sha256": "none", "resize_mode": "none"}


def uint8_images(n: int, seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def fidkit_warnings(call) -> list[str]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in seen if issubclass(w.category, FidkitWarning)]


# ------------------------------------------------------------------- 1. [0, 1] images declared (-1, 1)


@pytest.mark.parametrize("value_range", [(-1, 1), (-1.0, 1.0), (-2, 2), (-0.5, 1)])
@pytest.mark.parametrize("shape", [(16, 32, 32, 3), (1, 5, 7, 1)])
def test_unit_images_declared_a_range_below_zero_warn_once_per_metric(value_range, shape) -> None:
    unit = np.random.default_rng(0).random(shape)  # in [0, 1): what sigmoid or ToTensor() gives
    metric = fidkit.FID(extractor=Moments(), value_range=value_range)
    first = fidkit_warnings(lambda: metric.update(unit))
    assert len(first) == 1, first
    lo, hi = value_range
    assert "look like [0, 1] images" in first[0] and "pass value_range=(0, 1)" in first[0]
    assert f"value_range=({lo:g}, {hi:g})" in first[0]
    black = int(np.rint(-lo / (hi - lo) * 255))
    assert f"becomes level {black}" in first[0]
    # What the network saw: no level below the one 0 maps to (the reason for the warning).
    assert metric._extractor.get().seen[0].min() >= black
    # Once per metric, whichever side or batch.
    assert fidkit_warnings(lambda: metric.update(np.random.default_rng(1).random(shape), real=True)) == []
    torch = pytest.importorskip("torch")
    other = fidkit.FID(extractor=Moments(), value_range=value_range)
    assert len(fidkit_warnings(lambda: other.update(torch.sigmoid(torch.randn(4, 3, 8, 8))))) == 1


def test_images_that_use_a_range_below_zero_do_not_warn() -> None:
    torch = pytest.importorskip("torch")
    metric = fidkit.FID(extractor=Moments(), value_range=(-1, 1))
    rng = np.random.default_rng(0)
    assert fidkit_warnings(lambda: metric.update(rng.uniform(-1, 1, (4, 8, 8, 3)))) == []  # really [-1, 1]
    assert fidkit_warnings(lambda: metric.update(torch.tanh(torch.randn(4, 3, 8, 8))))== []
    assert fidkit_warnings(lambda: metric.update(np.zeros((4, 8, 8, 3)))) == []  # constant mid-gray: plausible
    assert fidkit_warnings(lambda: metric.update(uint8_images(4, 0))) == []  # uint8 is used as it is
    assert metric._unit_range_warned is False
    # A range with little below 0 is one [0, 1] images belong to.
    for value_range in ((0, 1), (-0.1, 1), (-0.01, 1.01)):
        narrow = fidkit.FID(extractor=Moments(), value_range=value_range)
        assert fidkit_warnings(lambda: narrow.update(rng.random((4, 8, 8, 3)))) == []


# ------------------------------------------------------------------- 2. compute(timeout=...)

BAD_TIMEOUTS = [-1, 0, -0.5, None, float("nan"), float("inf"), -float("inf"), "600", True, 1e300, [1]]


def features(n: int, dim: int, seed: int, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)) + shift


def _fed_metric(rank: int = 0, world: int = 1) -> fidkit.FID:
    metric = fidkit.FID(reference=Stats.from_features(features(50, 4, seed=0)))
    metric._update_features(np.array_split(features(31, 4, seed=1, shift=0.3), world)[rank])
    return metric


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS)
def test_a_bad_timeout_is_refused_on_one_process(timeout) -> None:
    metric = _fed_metric()
    with pytest.raises(InputError, match="timeout must be a positive finite number of seconds, not"):
        metric.compute(timeout=timeout)
    for good in (0.001, 3, np.float32(2.5), Fraction(1, 3), 8e13):
        assert math.isfinite(float(metric.compute(timeout=good)))


def _timeout_worker(rank: int, port: int, world: int, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    result: dict = {"refused": []}
    try:
        metric = _fed_metric(rank, world)
        for timeout in BAD_TIMEOUTS:
            try:
                metric.compute(timeout=timeout)
                result["refused"].append("accepted")
            except Exception as exc:  # noqa: BLE001 - the test compares what each rank saw
                result["refused"].append(f"{type(exc).__name__}: {exc}")
        # The group is still usable: a good timeout merges every rank.
        report = metric.compute(timeout=30)
        result["fid"], result["n"] = float(report), report.b.n
    finally:
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
        dist.destroy_process_group()


def test_a_bad_timeout_is_refused_on_every_rank_before_any_collective(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    import torch.multiprocessing as mp

    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    world = 2
    mp.spawn(_timeout_worker, args=(free_port(), world, str(tmp_path)), nprocs=world, join=True)
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(world)]
    expected = float(_fed_metric().compute())
    for result in results:
        assert len(result["refused"]) == len(BAD_TIMEOUTS)
        for message in result["refused"]:
            assert message.startswith("InputError: FID.compute(): timeout must be a positive finite number"), message
        assert result["n"] == 31
        assert result["fid"] == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------------------------- 3. the constructor's arguments, checked there


@pytest.mark.parametrize("seed", [-1, 2.9, 1.5, None, "abc", "3", True, 2**32, np.float64(2.0)])
def test_a_bad_metrics_seed_is_refused_at_construction(seed) -> None:
    with pytest.raises(InputError, match=r"metrics_seed must be (a non-negative integer|below 2\*\*32)"):
        fidkit.FID(extractor=Moments(), metrics="kid", metrics_seed=seed)
    # The same without metrics beyond the FID (the seed is then unused, but a wrong one is still wrong).
    with pytest.raises(InputError, match="metrics_seed must be"):
        fidkit.FID(extractor=Moments(), metrics_seed=seed)


def test_a_good_metrics_seed_is_kept_as_an_int() -> None:
    for seed, expected in ((0, 0), (7, 7), (np.int64(5), 5), (2**32 - 1, 2**32 - 1)):
        metric = fidkit.FID(extractor=Moments(), metrics="kid", metrics_seed=seed)
        assert metric._metrics_seed == expected and type(metric._metrics_seed) is int


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(metrics="nope"), "unknown metric"),
        (dict(metrics=None), "metrics must be"),
        (dict(ci=0.95), "ci must be an IntervalSpec"),
        (dict(value_range=(1, -1)), "value_range"),
        (dict(value_range="0,1"), "value_range"),
        (dict(batch_size=0), "batch_size"),
        (dict(extractor=42), "extractor must be"),
        (dict(bogus=1), "unknown option bogus"),
    ],
)
def test_other_constructor_arguments_are_refused_at_construction(arguments, message) -> None:
    arguments.setdefault("extractor", Moments())
    with pytest.raises(InputError, match=message):
        fidkit.FID(**arguments)


# ------------------------------------------------------------------- 4. a checkpoint whose weights file moved


@pytest.fixture
def checkpoint(extractor, random_weights_path, tmp_path, monkeypatch):
    """A pickled FID built with a FeatureExtractor on weights that are then deleted: (bytes, sha256, old path)."""
    from fidkit.inception import FeatureExtractor

    monkeypatch.delenv("FIDKIT_WEIGHTS", raising=False)
    old = tmp_path / "run" / "w_old.pth"
    old.parent.mkdir()
    shutil.copyfile(random_weights_path, old)
    metric = fidkit.FID(extractor=FeatureExtractor(old, device="cpu"))  # the graph exported by `extractor`: reused
    metric.update(uint8_images(3, 0, size=16), real=True)
    metric.update(uint8_images(3, 1, size=16))
    blob = pickle.dumps(metric)
    metric.update(uint8_images(2, 2, size=16))
    expected = float(metric.compute())  # what the resumed metric must give after the same update
    old.unlink()
    return blob, extractor.weights_sha256, old, expected


def test_a_checkpoint_resumes_from_an_identical_copy_of_its_moved_weights(checkpoint, random_weights_path, tmp_path,
                                                                        monkeypatch) -> None:
    blob, sha256, old, expected = checkpoint
    copy = tmp_path / "elsewhere" / "inception.pth"
    copy.parent.mkdir()
    shutil.copyfile(random_weights_path, copy)
    monkeypatch.setenv("FIDKIT_WEIGHTS", str(copy))
    resumed = pickle.loads(blob)
    resumed.update(uint8_images(2, 2, size=16))
    assert float(resumed.compute()) == pytest.approx(expected, rel=1e-9)
    assert resumed._extractor.get().built().weights_path == copy


def test_a_checkpoint_whose_weights_moved_names_the_sha256_it_needs(checkpoint, tmp_path, monkeypatch) -> None:
    blob, sha256, old, _ = checkpoint
    # Another network (here: another file) under FIDKIT_WEIGHTS is still refused.
    other = tmp_path / "other.pth"
    other.write_bytes(b"not the same weights")
    monkeypatch.setenv("FIDKIT_WEIGHTS", str(other))
    with pytest.raises(WeightsError) as raised:
        pickle.loads(blob).update(uint8_images(2, 2, size=16))
    message = str(raised.value)
    assert str(old) in message and "no longer exists" in message and str(other) in message
    assert sha256 in message and "FIDKIT_WEIGHTS" in message and f"restore {old}" in message
    # Nothing anywhere: the same advice.
    monkeypatch.delenv("FIDKIT_WEIGHTS")
    with pytest.raises(WeightsError) as raised:
        pickle.loads(blob).update(uint8_images(2, 2, size=16))
    assert sha256 in str(raised.value) and "FIDKIT_WEIGHTS" in str(raised.value)
    # The recorded file back, but changed: refused as before, by its sha256.
    old.write_bytes(b"changed")
    with pytest.raises(fidkit.errors.FidkitError):
        pickle.loads(blob).update(uint8_images(2, 2, size=16))


# ------------------------------------------------------------------- 5. a features file from a newer fidkit


def _resaved(path: Path, target: Path, **changes) -> Path:
    with np.load(path) as archive:
        members = {key: archive[key] for key in archive.files}
    members.update(changes)
    np.savez(target, **members)
    return target


@pytest.mark.parametrize("version", [2, 99, 2**40])
def test_a_features_file_from_a_newer_fidkit_is_refused_like_a_statistics_file(tmp_path, version) -> None:
    rows = features(30, 6, seed=0)
    fidkit.Features(rows).save(tmp_path / "f.npz")
    newer = _resaved(tmp_path / "f.npz", tmp_path / "newer.npz", fidkit_format_version=np.int64(version))
    with pytest.raises(StatsFileError, match=rf"written by a newer fidkit \(format {version}, .*upgrade fidkit"):
        fidkit.Features.load(newer)
    # The same words as a statistics file's.
    fidkit.Stats.from_features(rows).save(tmp_path / "s.npz")
    stats = _resaved(tmp_path / "s.npz", tmp_path / "s_newer.npz", fidkit_format_version=np.int64(version))
    with pytest.raises(StatsFileError) as from_stats:
        fidkit.Stats.load(stats)
    with pytest.raises(StatsFileError) as from_features:
        fidkit.Features.load(newer)
    assert str(from_features.value).replace(str(newer), "F") == str(from_stats.value).replace(str(stats), "F")
    # Through compute_fid (the pipeline reads features files with Features.load): no number.
    with pytest.raises(StatsFileError, match="newer fidkit"):
        fidkit.compute_fid(newer, tmp_path / "s.npz")
    # This fidkit's own version, and a file without one (older), still load.
    assert fidkit.Features.load(tmp_path / "f.npz").n == 30
    current = _resaved(tmp_path / "f.npz", tmp_path / "v1.npz", fidkit_format_version=np.int64(1))
    assert fidkit.Features.load(current).n == 30


def test_a_features_file_whose_version_is_not_one_integer_is_refused(tmp_path) -> None:
    fidkit.Features(features(10, 3, seed=0)).save(tmp_path / "f.npz")
    for bad in (np.arange(10**6, dtype=np.int64), np.float64(1.0)):
        broken = _resaved(tmp_path / "f.npz", tmp_path / "bad.npz", fidkit_format_version=bad)
        with pytest.raises(StatsFileError, match="fidkit_format_version"):
            fidkit.Features.load(broken)


# ------------------------------------------------------------------- 6. a checkpoint before the first compute()


def _reference_kinds(tmp_path: Path) -> dict:
    """The same 12 reference images as an array, a .npy file and a folder of PNGs."""
    from PIL import Image

    array = uint8_images(12, 5)
    np.save(tmp_path / "real.npy", array)
    folder = tmp_path / "real"
    folder.mkdir()
    for i, image in enumerate(array):
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    return {"array": array, "npy": tmp_path / "real.npy", "npy-str": str(tmp_path / "real.npy"), "folder": folder,
            "batches": [array[:5], array[5:]]}


@pytest.mark.parametrize("kind", ["array", "npy", "npy-str", "folder", "batches"])
def test_a_metric_with_an_image_reference_pickles_before_its_first_compute(tmp_path, kind) -> None:
    reference = _reference_kinds(tmp_path)[kind]
    generated = uint8_images(7, 6)
    expected = fidkit.FID(reference=reference, extractor=Moments())
    expected.update(generated)
    expected = float(expected.compute())

    metric = fidkit.FID(reference=reference, extractor=Moments())
    at_step_0 = pickle.loads(pickle.dumps(metric))  # before any image: was "call compute() once first"
    at_step_0.update(generated)
    assert float(at_step_0.compute()) == expected
    metric.update(generated[:3])
    resumed = pickle.loads(pickle.dumps(metric))  # after updates, still before the first compute()
    resumed.update(generated[3:])
    assert float(resumed.compute()) == expected
    twice = pickle.loads(pickle.dumps(pickle.loads(pickle.dumps(metric))))  # unpickled, pickled again
    twice.update(generated[3:])
    assert float(twice.compute()) == expected
    # Once computed, only the statistics travel: not the array, nor the source.
    state = resumed.__getstate__()
    assert isinstance(state["_reference_input"], (fidkit.Stats, fidkit.Features)) and state["_reference_spec"] is None


def test_a_path_reference_checkpoint_holds_the_path_not_the_pixels(tmp_path) -> None:
    kinds = _reference_kinds(tmp_path)
    small = len(pickle.dumps(fidkit.FID(reference=kinds["folder"], extractor=Moments())))
    assert small < len(pickle.dumps(kinds["array"]))


def test_only_an_unpicklable_reference_is_refused_with_a_fix_that_works(tmp_path) -> None:
    array = uint8_images(12, 5)
    metric = fidkit.FID(reference=(batch for batch in (array[:6], array[6:])), extractor=Moments())
    with pytest.raises(fidkit.errors.FidkitError, match="cannot be pickled yet") as raised:
        pickle.dumps(metric)
    message = str(raised.value)
    assert "compute_stats" in message and "generated images" in message and "path" in message
    # The fixes it names work: the Stats of these images as the reference ...
    stats = fidkit.compute_stats(array, extractor=Moments())
    pickle.loads(pickle.dumps(fidkit.FID(reference=stats, extractor=Moments())))
    # ... or a pickle after a compute() that had generated images.
    metric.update(uint8_images(4, 6))
    metric.compute()
    assert pickle.loads(pickle.dumps(metric)).compute().b.n == 4


class _OwnIterator:
    """A picklable single-pass iterator of batches (pickle keeps its position, as it does a list_iterator's)."""

    def __init__(self, batches) -> None:
        self.batches, self.position = list(batches), 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.position == len(self.batches):
            raise StopIteration
        self.position += 1
        return self.batches[self.position - 1]


@pytest.mark.parametrize("make", [iter, _OwnIterator, lambda batches: map(np.asarray, batches)])
@pytest.mark.parametrize("bad_at", [1, 3])
def test_a_single_pass_iterator_reference_is_refused_for_pickling_not_resumed_half_read(make, bad_at) -> None:
    good = [uint8_images(10, seed) for seed in (31, 32, 33)]
    batches = [*good]
    batches.insert(bad_at, np.zeros((2, 8, 8, 3)))  # float images without a value_range: refused when read
    metric = fidkit.FID(reference=make(batches), extractor=Moments())
    metric.update(uint8_images(9, 34))
    with pytest.raises(InputError, match=f"batch {bad_at}"):
        metric.compute()  # read part of the iterator, then failed
    with pytest.raises(fidkit.errors.FidkitError, match="cannot be pickled yet") as raised:
        pickle.dumps(metric)
    message = str(raised.value)
    assert "is read once" in message and "a path" in message and "an array of images" in message
    assert "a list of batches" in message and "compute() once first" not in message  # it cannot be computed now
    # Refused before any compute() too: the same object, whatever its position (there, computing first is a fix).
    with pytest.raises(fidkit.errors.FidkitError, match=r"cannot be pickled yet.*compute\(\) once first"):
        pickle.dumps(fidkit.FID(reference=make(good), extractor=Moments()))
    # The fixes it names work: a list of the batches (read from its start by every copy), or an array.
    for fixed in (list(good), np.concatenate(good)):
        copy_ = pickle.loads(pickle.dumps(fidkit.FID(reference=fixed, extractor=Moments())))
        copy_.update(uint8_images(9, 34))
        assert copy_.compute().a.n == 30


def _two_directories(tmp_path: Path) -> tuple[Path, Path]:
    """Directories A and B, each holding a real.npy and a folder real/ (links: real-link -> real), of other images."""
    from PIL import Image

    made = []
    for name, seed in (("A", 21), ("B", 22)):
        where = tmp_path / name
        (where / "real").mkdir(parents=True)
        array = uint8_images(10 + seed % 2, seed)
        np.save(where / "real.npy", array)
        for i, image in enumerate(array):
            Image.fromarray(image).save(where / "real" / f"{i:02d}.png")
        (where / "real-link").symlink_to(where / "real", target_is_directory=True)
        made.append(where)
    return made[0], made[1]


@pytest.mark.parametrize("given", ["real.npy", Path("real.npy"), "./real", Path("real"), "real-link", "sub/../real.npy"])
def test_a_pickled_metric_reopens_a_relative_reference_where_it_was_given_not_in_the_new_directory(
    tmp_path, monkeypatch, given
) -> None:
    a, b = _two_directories(tmp_path)
    (a / "sub").mkdir()
    (b / "sub").mkdir()
    generated = uint8_images(9, 23)
    monkeypatch.chdir(a)
    metric = fidkit.FID(reference=given, extractor=Moments())
    metric.update(generated)
    blob = pickle.dumps(metric)
    expected = float(metric.compute())
    monkeypatch.chdir(b)  # another real.npy and real/ here: what the relative path would name now
    resumed = pickle.loads(blob)
    report = resumed.compute()
    assert float(report) == expected and report.a.n == 11  # A holds 11 images, B 10
    wrong = fidkit.FID(reference=given, extractor=Moments())  # B's own images, to be sure they differ
    wrong.update(generated)
    assert float(wrong.compute()) != expected


def test_a_reference_spec_is_kept_absolute_only_where_it_is_a_local_path(tmp_path, monkeypatch) -> None:
    from fidkit.metric.state import _absolute_reference

    a, _ = _two_directories(tmp_path)
    monkeypatch.chdir(a)
    assert _absolute_reference("real.npy") == str(a / "real.npy")
    assert _absolute_reference(Path("real")) == str(a / "real")
    assert _absolute_reference("real-link") == str(a / "real-link")  # as named, not the link's target
    assert _absolute_reference(str(a / "real.npy")) == str(a / "real.npy")
    # What the opener does not read as a local path stays as given: dataset names, URIs, arrays, batches.
    for kept in ("cifar10-train", "s3://bucket/real", "missing.npy"):
        assert _absolute_reference(kept) == kept
    array = uint8_images(3, 1)
    batches = [array, array]
    assert _absolute_reference(array) is array and _absolute_reference(batches) is batches
    # The metric keeps the absolute path (and still names the reference as the caller did until it is reopened).
    metric = fidkit.FID(reference="real.npy", extractor=Moments())
    assert metric._reference_spec == str(a / "real.npy")


# ------------------------------------------------------------------- 7. messages that name the right thing


@pytest.mark.parametrize("name", ["cf.npy", "rows.features", "f.NPY"])
def test_features_load_of_rows_saved_with_numpy_save_says_how_to_use_them(tmp_path, name) -> None:
    rows = features(10, 8, seed=0).astype(np.float32)
    path = tmp_path / name
    with open(path, "wb") as stream:
        np.save(stream, rows)
    with pytest.raises(StatsFileError) as raised:
        fidkit.Features.load(path)
    message = str(raised.value)
    assert str(path) in message and "rename it .npy" not in message
    assert f"fidkit.Features(numpy.load({str(path)!r}))" in message
    # The advice works.
    assert np.array_equal(fidkit.Features(np.load(path)).rows, rows)


def test_the_npz_reader_advises_a_rename_only_to_a_file_not_named_npy(tmp_path) -> None:
    from fidkit._npz import NpzReader

    for name, rename in (("a.npy", False), ("a.npz", True)):
        with open(tmp_path / name, "wb") as stream:
            np.save(stream, np.zeros(3))
        with pytest.raises(StatsFileError) as raised:
            NpzReader(tmp_path / name, name, StatsFileError, "THE FIX")
        assert ("rename it .npy" in str(raised.value)) is rename
        assert ("THE FIX" in str(raised.value)) is not rename


def _tensor_subclasses():
    torch = pytest.importorskip("torch")

    class Plain(torch.Tensor):
        """A user's subclass, defined outside torch."""

    class WithMetadata(torch.Tensor):
        """Like MONAI's MetaTensor: carries metadata through every operation (its own __torch_function__)."""

        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            result = super().__torch_function__(func, types, args, kwargs or {})
            if isinstance(result, WithMetadata):
                result.meta = {"affine": "eye"}
            return result

    return torch, (Plain, WithMetadata)


def test_tensor_subclasses_defined_outside_torch_are_tensors() -> None:
    from fidkit._validate import as_image_batch, is_torch_tensor

    torch, subclasses = _tensor_subclasses()
    assert all(not subclass.__module__.startswith("torch") for subclass in subclasses)
    # (N, C, H, W) with W = 3: read as numpy (N, H, W, C) it would pass as other, wrong images.
    plain = torch.randint(0, 256, (2, 3, 5, 3), dtype=torch.uint8)
    floats = torch.rand(2, 1, 4, 6)
    for subclass in subclasses:
        assert is_torch_tensor(plain.as_subclass(subclass))
        assert np.array_equal(as_image_batch(plain.as_subclass(subclass), "x"), as_image_batch(plain, "x"))
        assert np.array_equal(as_image_batch(floats.as_subclass(subclass), "x", value_range=(0, 1)),
                              as_image_batch(floats, "x", value_range=(0, 1)))
        metric = fidkit.FID(extractor=Moments(), value_range=(0, 1))
        metric.update(floats.as_subclass(subclass))
        seen = metric._extractor.get().seen[0]
        assert type(seen) is np.ndarray and seen.shape == (2, 4, 6, 3)
    for other in (np.zeros((2, 4, 4, 3), np.uint8), [1, 2], "torch", object()):
        assert not is_torch_tensor(other)


def test_is_torch_tensor_never_imports_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, numpy as np; from fidkit._validate import is_torch_tensor; "
            "assert not is_torch_tensor(np.zeros(3)) and not is_torch_tensor(object()); print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("n", [0, 1])
def test_a_features_file_too_small_for_a_covariance_is_named(tmp_path, n) -> None:
    small = tmp_path / f"small{n}.npz"
    fidkit.Features(features(n, 12, seed=0)).save(small)
    fidkit.Features(features(40, 12, seed=1)).save(tmp_path / "other.npz")
    expected = re.escape(f"{small}: holds {n} feature row") + "s?; a covariance needs at least 2"
    for call in (
        lambda: fidkit.compute_fid(small, tmp_path / "other.npz"),
        lambda: fidkit.compute_fid(tmp_path / "other.npz", small),
        lambda: fidkit.compute_stats(small),
        lambda: fidkit.Features.load(small).stats(),
    ):
        with pytest.raises(InputError, match=expected):
            call()
    metric = fidkit.FID(reference=small, extractor=Moments())
    metric.update(uint8_images(5, 0))
    with pytest.raises(InputError, match=expected):
        metric.compute()


class MomentsAndLogits(Moments):
    """:class:`Moments` that also gives logits (6 classes: the channel means and spreads), as the Inception does."""

    def outputs(self, images, names=("features",)):
        rows = self(images)
        return {"features": rows, "logits": rows[:, :6].copy()} if "logits" in names else {"features": rows}


@pytest.mark.parametrize("n_generated", [2, 8, 9])
def test_too_few_generated_images_for_the_inception_score_says_which_side_how_many_and_the_fix(n_generated) -> None:
    metric = fidkit.FID(extractor=MomentsAndLogits(), metrics="is")
    metric.update(uint8_images(30, 0), real=True)
    metric.update(uint8_images(n_generated, 1))
    with pytest.raises(InputError) as raised:
        metric.compute()
    message = str(raised.value)
    assert "Inception Score needs at least 10 images on the generated side" in message
    assert f"which holds {n_generated}" in message and "use at least 10 generated images" in message
    assert "leave 'is' out of the metrics" in message
    # The fix works: one more batch, and the FID and IS come back.
    metric.update(uint8_images(10 - n_generated, 2))
    report = metric.compute()
    assert report.b.n == 10 and set(report.metrics.keys()) == {"fid", "is_a"}
    assert float(report) == pytest.approx(fidkit.fid_from_arrays(
        Moments()(uint8_images(30, 0)), np.concatenate([Moments()(uint8_images(n_generated, 1)),
                                                        Moments()(uint8_images(10 - n_generated, 2))])).value)


def test_evaluate_names_a_side_too_small_for_precision_recall() -> None:
    from fidkit.metrics import evaluate

    small, large = fidkit.Features(features(4, 5, seed=0)), fidkit.Features(features(40, 5, seed=1))
    with pytest.raises(InputError, match=r"needs at least 6 images on side b .*which holds 4.*leave 'prdc' out"):
        evaluate(large, small, "fid,prdc")
    with pytest.raises(InputError, match=r"needs at least 6 images on the real side .*use at least 6 real images"):
        evaluate(large, small, "prdc", side_names=("generated", "real"))


def test_a_misspelt_keyword_of_fid_lists_its_own_keywords_and_suggests_the_closest():
    import fidkit
    from fidkit.errors import InputError

    with pytest.raises(InputError, match=r"FID's own keywords are .*metrics.*did you mean metrics\?"):
        fidkit.FID(metric="kid")


# ------------------------------------------------------------------- hostile round 8: the reference array, ranges


class Changing(Moments):
    """Moments that overwrites `buffer` with `other` at its first call: the caller reusing the reference's buffer
    while the reference is being read."""

    def __init__(self, buffer: np.ndarray, other: np.ndarray) -> None:
        super().__init__()
        self.buffer, self.other = buffer, other

    def __call__(self, batch):
        if not self.seen:
            self.buffer[:] = self.other
        return super().__call__(batch)


def _truth(real: np.ndarray, generated: np.ndarray) -> float:
    metric = fidkit.FID(reference=real.copy(), extractor=Moments(), use_cache=False)
    metric.update(generated)
    return float(metric.compute())


@pytest.mark.parametrize("warm_cache", [False, True])
@pytest.mark.parametrize(("n", "size"), [(40, 8), (23, 5)])
def test_a_reference_array_changed_before_the_first_compute_is_an_error_whatever_the_cache_holds(
    fidkit_home, warm_cache, n, size
) -> None:
    real, generated = uint8_images(n, 1, size), uint8_images(n, 2, size) // 2
    truth = _truth(real, generated)
    if warm_cache:  # the statistics of the real images are in the cache, under the sha256 of their bytes
        fidkit.compute_stats(real.copy(), extractor=Moments())
    buffer = real.copy()
    metric = fidkit.FID(reference=buffer, extractor=Moments())
    buffer[:] = generated  # a training loop reusing its buffer for the generated samples
    metric.update(buffer)
    with pytest.raises(InputError, match=r"reference .* changed since the metric was created.*x\.copy\(\)"):
        metric.compute()
    # Pickled as it is now: the same error, not a checkpoint of other images.
    with pytest.raises(InputError, match="changed since the metric was created"):
        pickle.dumps(metric)
    # Put back, it is the reference given: the right number, from the cache or the array.
    buffer[:] = real
    assert float(metric.compute()) == pytest.approx(truth, rel=1e-12)
    buffer[:] = generated  # once computed, the statistics are the metric's: the array is not read again
    assert float(metric.compute()) == pytest.approx(truth, rel=1e-12)


def test_a_reference_array_changed_while_it_is_read_is_an_error_and_not_cached(fidkit_home) -> None:
    real, generated = uint8_images(40, 3), uint8_images(40, 4) // 2
    buffer = real.copy()
    metric = fidkit.FID(reference=buffer, extractor=Changing(buffer, generated), batch_size=8)
    metric._update_features(Moments()(generated))
    with pytest.raises(InputError, match="changed since the metric was created"):
        metric.compute()
    assert not (fidkit_home / "stats").exists() or not any((fidkit_home / "stats").iterdir())


def test_a_reference_array_kept_unchanged_gives_the_same_number_as_a_copy(fidkit_home) -> None:
    real, generated = uint8_images(30, 5), uint8_images(30, 6)
    metric = fidkit.FID(reference=real, extractor=Moments())
    metric.update(generated)
    assert float(metric.compute()) == pytest.approx(_truth(real, generated), rel=1e-12)
    copied = pickle.loads(pickle.dumps(fidkit.FID(reference=real, extractor=Moments())))
    copied.update(generated)
    assert float(copied.compute()) == pytest.approx(_truth(real, generated), rel=1e-12)


@pytest.mark.parametrize("value_range", [(0, 1), (-1, 1), (-3.0, 5.5)])
@pytest.mark.parametrize("layout", ["numpy", "numpy-gray", "torch", "list"])
def test_a_float_reference_takes_the_metrics_value_range_like_update_real(value_range, layout) -> None:
    lo, hi = value_range
    real = uint8_images(12, 7, size=6)
    if layout == "numpy-gray":
        real = np.ascontiguousarray(np.repeat(real[..., :1], 3, axis=3))
    floats = lo + real.astype(np.float64) / 255 * (hi - lo)
    if layout == "numpy-gray":
        reference = floats[..., 0]
    elif layout == "torch":
        torch = pytest.importorskip("torch")
        reference = torch.from_numpy(floats).permute(0, 3, 1, 2).float()
    elif layout == "list":
        reference = [floats[:5].astype(np.float32), floats[5:]]
    else:
        reference = floats.astype(np.float32)
    generated = uint8_images(12, 8, size=6)
    fed = fidkit.FID(extractor=Moments(), value_range=value_range)
    fed.update(floats if layout != "numpy-gray" else floats[..., 0], real=True)
    fed.update(generated)
    metric = fidkit.FID(reference=reference, extractor=Moments(), value_range=value_range)
    metric.update(generated)
    assert float(metric.compute()) == float(fed.compute()) == pytest.approx(_truth(real, generated), rel=1e-12)
    if layout == "numpy":  # quantized at construction, into the metric's copy: the caller's array is free
        reference[:] = lo
        again = fidkit.FID(reference=floats.astype(np.float32), extractor=Moments(), value_range=value_range)
        again.update(generated)
        assert float(again.compute()) == float(metric.compute())
    if layout != "list":  # a list of batches is read, and refused, at the first compute()
        with pytest.raises(InputError, match="floating-point images need their value range"):
            fidkit.FID(reference=reference, extractor=Moments())
    with pytest.raises(InputError, match=r"outside value_range"):
        fidkit.FID(reference=floats.astype(np.float32) * 3 + 10, extractor=Moments(), value_range=value_range)


def test_a_large_float_reference_is_quantized_a_chunk_at_a_time_to_the_same_bytes(monkeypatch) -> None:
    from fidkit import _validate

    floats = np.random.default_rng(9).random((37, 6, 5, 3)).astype(np.float32)
    whole = _validate.as_image_batch(floats, "x", value_range=(0, 1))
    monkeypatch.setattr(_validate, "_CHUNK_PIXELS", 6 * 5 * 3 * 4)  # 4 images a chunk
    np.testing.assert_array_equal(_validate.as_image_array(floats, "x", (0, 1)), whole)
    torch = pytest.importorskip("torch")
    tensor = torch.from_numpy(floats).permute(0, 3, 1, 2)
    np.testing.assert_array_equal(_validate.as_image_array(tensor, "x", (0, 1)), whole)
    with pytest.raises(InputError, match=r"shape \(6, 5, 3\) looks like a single"):  # the whole shape is quoted
        _validate.as_image_array(floats[0], "x", (0, 1))


@pytest.mark.parametrize(("value_range", "high"), [((0, 1), 1), ((-1, 1), 1), ((0, 10), 7), ((0, 1000), 255)])
def test_uint8_images_holding_values_of_another_value_range_warn_once_per_metric(value_range, high) -> None:
    torch = pytest.importorskip("torch")
    binary = (torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * (high + 1)).to(torch.uint8)
    metric = fidkit.FID(extractor=Moments(), value_range=value_range)
    first = fidkit_warnings(lambda: metric.update(binary))
    assert len(first) == 1, first
    lo, hi = value_range
    assert f"uint8 values span [0, {high}], inside value_range=({lo:g}, {hi:g})" in first[0]
    assert "used as they are" in first[0] and "x.float()" in first[0]
    assert metric._extractor.get().seen[0].max() == high  # what the network saw: the values as they are
    assert fidkit_warnings(lambda: metric.update(binary.numpy().transpose(0, 2, 3, 1), real=True)) == []  # once
    fresh = pickle.loads(pickle.dumps(fidkit.FID(extractor=Moments(), value_range=value_range)))
    assert len(fidkit_warnings(lambda: fresh.update(binary.numpy().transpose(0, 2, 3, 1)))) == 1  # numpy too


def test_uint8_pixels_beside_a_float_range_and_uint8_under_0_255_do_not_warn() -> None:
    pixels = uint8_images(6, 11)  # 0..255: 8-bit pixels, whatever range the floating-point images have
    for value_range in ((0, 1), (-1, 1), (0, 255), (0.0, 255.0)):
        metric = fidkit.FID(extractor=Moments(), value_range=value_range)
        assert fidkit_warnings(lambda: metric.update(pixels)) == []
    binary = (pixels > 127).astype(np.uint8)
    for quiet in (fidkit.FID(extractor=Moments(), value_range=(0, 255)), fidkit.FID(extractor=Moments())):
        assert fidkit_warnings(lambda: quiet.update(binary)) == []
    constant = np.ones((4, 8, 8, 3), np.uint8)  # a constant image is plausible in any range
    assert fidkit_warnings(lambda: fidkit.FID(extractor=Moments(), value_range=(0, 1)).update(constant)) == []


# ------------------------------------------------------------------- review of round 8: the reference's inputs


class _ArrayLike:
    """An object with __array__ and nothing else of numpy's (a JAX array, say)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __array__(self, dtype=None, copy=None):
        return self.array if dtype is None else self.array.astype(dtype)


def _warnings_and_metric(**kwargs):
    made = []
    seen = fidkit_warnings(lambda: made.append(fidkit.FID(extractor=Moments(), **kwargs)))
    return seen, made[0]


@pytest.mark.parametrize("value_range", [(-1, 1), (0, 255), (-2.5, 3)])
@pytest.mark.parametrize("layout", ["numpy", "torch", "list", "array-like"])
def test_a_float_reference_draws_the_unit_range_warning_of_update_real_once(value_range, layout) -> None:
    unit = np.random.default_rng(40).random((9, 6, 5, 3)).astype(np.float32)  # [0, 1] images
    fed = fidkit.FID(extractor=Moments(), value_range=value_range)
    with warnings.catch_warnings(record=True) as fed_seen:
        warnings.simplefilter("always")
        fed.update(unit, real=True)
    expected = [str(w.message) for w in fed_seen if issubclass(w.category, FidkitWarning)]
    assert len(expected) == 1 and "look like [0, 1] images" in expected[0]
    assert fed_seen[-1].filename == __file__  # update()'s caller, as the reference's below is FID()'s
    if layout == "torch":
        torch = pytest.importorskip("torch")
        reference = torch.from_numpy(unit).permute(0, 3, 1, 2)
    else:
        reference = {"numpy": unit, "list": [unit[:4], unit[4:]], "array-like": _ArrayLike(unit)}[layout]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        metric = fidkit.FID(reference=reference, extractor=Moments(), value_range=value_range)
    ours = [w for w in seen if issubclass(w.category, FidkitWarning)]
    assert len(ours) == 1, [str(w.message) for w in ours]  # once per metric, a list of two batches included
    if layout != "list":  # the same images as one batch: update(real=True)'s words, but the name
        assert str(ours[0].message).split(": ", 1)[1] == expected[0].split(": ", 1)[1]
    assert str(ours[0].message).startswith("FID(reference=...)") and ours[0].filename == __file__  # the caller's line
    # Once per metric: the same mistake in update() is not said again.
    assert fidkit_warnings(lambda: metric.update(unit)) == []


@pytest.mark.parametrize(("value_range", "high"), [((0, 1), 1), ((-1, 1), 1), ((0, 10), 7)])
@pytest.mark.parametrize("layout", ["numpy", "torch", "tuple"])
def test_a_uint8_reference_holding_values_of_another_value_range_warns_like_update_real(
    value_range, high, layout
) -> None:
    mask = (np.random.default_rng(41).random((8, 6, 6, 3)) * (high + 1)).astype(np.uint8)
    fed = fidkit.FID(extractor=Moments(), value_range=value_range)
    expected = fidkit_warnings(lambda: fed.update(mask, real=True))
    assert len(expected) == 1
    if layout == "torch":
        torch = pytest.importorskip("torch")
        reference = torch.from_numpy(mask).permute(0, 3, 1, 2)
    else:
        reference = mask if layout == "numpy" else (mask[:3], mask[3:])
    seen, metric = _warnings_and_metric(reference=reference, value_range=value_range)
    assert len(seen) == 1, seen
    assert f"uint8 values span [0, {high}]" in seen[0] and "used as they are" in seen[0]
    if layout != "tuple":  # one batch of the same images: the same words as update(real=True)'s, but the name
        assert seen[0].split(": ", 1)[1] == expected[0].split(": ", 1)[1]
    assert fidkit_warnings(lambda: metric.update(mask)) == []  # once per metric
    # Pixels 0..255 and the (0, 255) range stay quiet, as in update().
    assert _warnings_and_metric(reference=uint8_images(6, 42), value_range=value_range)[0] == []
    assert _warnings_and_metric(reference=mask, value_range=(0, 255))[0] == []


def test_a_namedtuple_of_float_batches_is_a_reference_of_batches() -> None:
    from collections import namedtuple

    real, generated = uint8_images(11, 43, size=5), uint8_images(11, 44, size=5)
    unit = real.astype(np.float64) / 255
    Halves = namedtuple("Halves", "first second")
    metric = fidkit.FID(reference=Halves(unit[:6], unit[6:]), extractor=Moments(), value_range=(0, 1))
    metric.update(generated)
    assert float(metric.compute()) == pytest.approx(_truth(real, generated), rel=1e-12)
    Three = namedtuple("Three", "a b c")  # uint8 batches without a value_range too
    plain = fidkit.FID(reference=Three(real[:2], real[2:7], real[7:]), extractor=Moments())
    plain.update(generated)
    assert float(plain.compute()) == pytest.approx(_truth(real, generated), rel=1e-12)


@pytest.mark.parametrize("value_range", [(0, 1), (-1, 1)])
def test_an_array_like_float_reference_is_quantized_with_the_value_range(value_range) -> None:
    lo, hi = value_range
    real, generated = uint8_images(10, 45, size=6), uint8_images(10, 46, size=6)
    floats = (lo + real.astype(np.float64) / 255 * (hi - lo)).astype(np.float32)
    for reference in (_ArrayLike(floats), [_ArrayLike(floats[:3]), _ArrayLike(floats[3:])]):
        metric = fidkit.FID(reference=reference, extractor=Moments(), value_range=value_range)
        metric.update(generated)
        assert float(metric.compute()) == pytest.approx(_truth(real, generated), rel=1e-12)
    with pytest.raises(InputError, match="floating-point images need their value range"):
        fidkit.FID(reference=_ArrayLike(floats), extractor=Moments())
    with pytest.raises(InputError, match="outside value_range"):
        fidkit.FID(reference=_ArrayLike(floats * 4 + 3), extractor=Moments(), value_range=value_range)


@pytest.mark.parametrize("container", [list, tuple])
@pytest.mark.parametrize("changed", [0, 2])
def test_the_uint8_batches_of_a_list_reference_changed_before_the_first_compute_are_an_error(
    container, changed
) -> None:
    real, generated = uint8_images(21, 47, size=5), uint8_images(21, 48, size=5) // 3
    truth = _truth(real, generated)
    batches = [real[:4].copy(), real[4:13].copy(), real[13:].copy()]
    metric = fidkit.FID(reference=container(batches), extractor=Moments())
    metric.update(generated)
    saved = batches[changed].copy()
    batches[changed][:] = 0  # a buffer reused after the metric was made
    with pytest.raises(InputError, match=r"reference \(batches from .*\) changed since the metric was created"):
        metric.compute()
    with pytest.raises(InputError, match="changed since the metric was created"):
        pickle.dumps(metric)  # a checkpoint would keep other images
    batches[changed][:] = saved  # put back: the images given, and the right number
    assert float(metric.compute()) == pytest.approx(truth, rel=1e-12)
    batches[changed][:] = 0  # computed: the statistics are the metric's own
    assert float(metric.compute()) == pytest.approx(truth, rel=1e-12)
    # A copy (pickled before the first compute) holds its own batches: the caller's buffer is not read again.
    fresh = container(b.copy() for b in (real[:4], real[4:13], real[13:]))
    copied = pickle.loads(pickle.dumps(fidkit.FID(reference=fresh, extractor=Moments())))
    fresh[changed][:] = 0
    copied.update(generated)
    assert float(copied.compute()) == pytest.approx(truth, rel=1e-12)


def test_a_uint8_tensor_batch_of_a_list_reference_sharing_its_memory_is_checked_too() -> None:
    torch = pytest.importorskip("torch")
    real, generated = uint8_images(12, 49, size=5), uint8_images(12, 50, size=5) // 3
    shared = torch.from_numpy(real[6:].copy()).permute(0, 3, 1, 2)  # channels-last memory: read without a copy
    metric = fidkit.FID(reference=[real[:6].copy(), shared], extractor=Moments())
    metric.update(generated)
    shared[:] = 0
    with pytest.raises(InputError, match="changed since the metric was created"):
        metric.compute()
    shared[:] = torch.from_numpy(real[6:]).permute(0, 3, 1, 2)
    assert float(metric.compute()) == pytest.approx(_truth(real, generated), rel=1e-12)


def test_float_batches_as_nested_lists_or_from_an_iterator_take_the_reference_value_range() -> None:
    """update() takes a nested list of floats with the metric's value_range; the reference refused one ("pass
    value_range", which was passed), and an iterator's batches, read at the first compute, were read without it."""
    real, generated = uint8_images(10, 47, size=6), uint8_images(10, 48, size=6)
    unit = real.astype(np.float64) / 255
    for reference in ([unit[:4].tolist(), unit[4:].tolist()], iter([unit[:5], unit[5:]]), (b for b in [unit])):
        metric = fidkit.FID(reference=reference, extractor=Moments(), value_range=(0, 1))
        metric.update(generated)
        assert float(metric.compute()) == pytest.approx(_truth(real, generated), rel=1e-12)


@pytest.mark.parametrize("dtype", ["datetime64[s]", "U3", "bfloat16"])
def test_a_list_reference_of_an_unreadable_dtype_is_refused_as_a_batch_not_a_traceback(dtype) -> None:
    # The fingerprint of a list reference hashed every array: bfloat16 or datetime64 have no bytes a memoryview can
    # read (ValueError: cannot include dtype 'E' in a buffer). uint8 arrays alone are hashed; others are refused
    # when the batches are read, as before.
    if dtype == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        batch = uint8_images(4, 49, size=6).astype(ml_dtypes.bfloat16)
    else:
        batch = np.zeros((4, 6, 6, 3), dtype=dtype)
    metric = fidkit.FID(reference=[uint8_images(4, 50, size=6), batch], extractor=Moments())
    metric.update(uint8_images(6, 51, size=6))
    with pytest.raises(InputError, match="batch 1: images must be uint8"):
        metric.compute()
