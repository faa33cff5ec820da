"""fidkit.cluster.shards: the shard plan, what each actor is sent, and the actor's work on one shard.

No Ray cluster: the plan is a pure function, and a ShardWorker's steps run in this process with its work,
source and extractor set by hand (the Ray runs are in tests/test_ray.py). The extractor is a mean colour per
image, so the numbers are checked exactly without the Inception network.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest

from fidkit.cluster.shards import MIN_SHARDS, SHARDS_PER_ACTOR, Shard, ShardWorker, plan_shards, work_for
from fidkit.errors import InputError, SourceError, WeightsError
from fidkit.options import RunOptions
from fidkit.sources import ArraySource, FileSource, open_source
from fidkit.stats import Stats, StatsAccumulator
from fidkit.testing import replaced_extractor

SHA = "5" * 64


class MeanColour:
    """A three-feature extractor: each image's mean R, G, B; counts its calls."""

    feature_dim = 3
    batch_size = 2
    weights_sha256 = SHA
    weights_path = Path("mean-colour.pth")

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.asarray(images, np.float64).reshape(len(images), -1, 3).mean(axis=1).astype(np.float32)

    def metadata(self) -> dict:
        return {"extractor": "mean-colour", "weights_sha256": SHA, "resize_mode": "none", "provider": "numpy",
                "unused": None}


def features_of(images: np.ndarray) -> np.ndarray:
    return MeanColour()(images)


# --- plan_shards ---------------------------------------------------------------------------------------------


def check_plan(plan: list[Shard], n_images: int, batch_size: int, n_actors: int) -> None:
    n_batches = -(-n_images // batch_size)
    target = max(MIN_SHARDS, SHARDS_PER_ACTOR * max(n_actors, 1))
    assert [shard.index for shard in plan] == list(range(len(plan)))
    # Contiguous, covering every image once, in order.
    assert plan[0].start == 0 and plan[-1].stop == n_images
    assert all(left.stop == right.start for left, right in zip(plan, plan[1:]))
    # Whole batches: every start is on a batch boundary; every shard but the last has the same number of
    # batches, and the last is no longer.
    assert all(shard.start % batch_size == 0 for shard in plan)
    lengths = [shard.stop - shard.start for shard in plan]
    assert len(set(lengths[:-1])) <= 1 and lengths[-1] <= lengths[0]
    assert all(length % batch_size == 0 for length in lengths[:-1])
    # The count: at most the target; more than half of it when there are that many batches, else one batch each.
    assert len(plan) <= target
    if n_batches >= target:
        assert len(plan) > target / 2
    else:
        assert len(plan) == n_batches


def test_plans_are_contiguous_whole_batches_within_the_shard_count_bound():
    for n_images, batch_size, n_actors in itertools.product(
        (1, 2, 49, 50, 51, 999, 1000, 1601, 6399, 50_000), (1, 7, 50, 200), (0, 1, 3, 8, 9, 64)
    ):
        plan = plan_shards(n_images, batch_size, n_actors)
        check_plan(plan, n_images, batch_size, n_actors)
        assert plan_shards(n_images, batch_size, n_actors) == plan  # a function of its arguments only


@pytest.mark.parametrize(("n_images", "batch_size", "n_actors", "n_shards", "per_shard"), [
    (1000, 25, 2, 20, 50),         # 40 batches, target 32: two batches a shard
    (10_000, 50, 16, 50, 200),     # 200 batches, target 64: four batches a shard
    (10_000, 50, 100, 200, 50),    # 200 batches, target 400: one batch a shard
    (7, 50, 4, 1, 7),              # fewer images than a batch: one shard
    (33 * 10, 10, 1, 17, 20),      # 33 batches, target 32: 17 shards of two, the last of one
])
def test_plan_sizes(n_images, batch_size, n_actors, n_shards, per_shard):
    plan = plan_shards(n_images, batch_size, n_actors)
    assert len(plan) == n_shards
    assert plan[0] == Shard(0, 0, min(per_shard, n_images))


def test_nothing_to_plan_for_an_empty_source():
    assert plan_shards(0, 50, 4) == []


# --- work_for --------------------------------------------------------------------------------------------------


def write_pngs(folder: Path, n_images: int, *, size: int = 6, bad: tuple[int, ...] = ()) -> np.ndarray:
    """PNGs 000.png, 001.png, ... (sorted = written order); the indices in `bad` hold garbage instead."""
    from PIL import Image

    images = np.random.default_rng(3).integers(0, 256, size=(n_images, size, size, 3), dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        path = folder / f"{index:03d}.png"
        if index in bad:
            path.write_bytes(b"not a png")
        else:
            Image.fromarray(image).save(path)
    return np.delete(images, list(bad), axis=0)


def options(**changes) -> RunOptions:
    values = dict(device="cpu", batch_size=2, workers=0)
    values.update(changes)
    return RunOptions(**values)


def test_a_folder_is_sent_as_its_members(tmp_path):
    write_pngs(tmp_path / "images", 5)
    source = open_source(tmp_path / "images", workers=0, limit=4, seed=1)
    work = work_for(source, options(), SHA, False, keep_features=True)
    assert isinstance(source, FileSource)
    assert (work.mode, work.source, work.path) == ("members", source, None)
    assert (work.kind, work.n_images, work.limit, work.seed) == ("folder", 4, 4, 1)
    assert work.batch_size == 2 and work.keep_features and not work.weights_in_manifest
    assert work.name == str(tmp_path / "images") and work.weights_sha256 == SHA


def test_an_array_file_is_reopened_by_each_actor_from_its_absolute_path(tmp_path, monkeypatch):
    np.save(tmp_path / "images.npy", np.zeros((6, 4, 4, 3), np.uint8))
    monkeypatch.chdir(tmp_path)
    source = open_source("images.npy", limit=3)
    work = work_for(source, options(), SHA, True)
    assert (work.mode, work.source) == ("reopen", None)
    assert work.path == str((tmp_path / "images.npy").resolve())  # the same file from any working folder
    assert (work.kind, work.n_images, work.limit) == ("array", 3, 3)


def test_a_named_dataset_is_reopened_by_its_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file of that name here
    images = np.zeros((4, 4, 4, 3), np.uint8)
    source = ArraySource("mnist", "mnist-test", lambda: images, images.shape, lambda hash_content: {}, limit=None,
                         seed=None)
    work = work_for(source, options(), SHA, True)
    assert (work.mode, work.path, work.source, work.kind) == ("reopen", "mnist-test", None, "mnist")


def test_an_array_in_memory_or_an_iterable_travels_as_the_object(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    in_memory = open_source(np.zeros((5, 4, 4, 3), np.uint8))
    work = work_for(in_memory, options(), SHA, True)
    assert (work.mode, work.source, work.path, work.n_images) == ("object", in_memory, None, 5)
    batches = open_source(iter([np.zeros((2, 4, 4, 3), np.uint8)]))
    assert work_for(batches, options(), SHA, True).mode == "object"


# --- ShardWorker, in this process -------------------------------------------------------------------------------


def worker_for(source, *, keep_features: bool = False, extractor=None, **option_changes) -> ShardWorker:
    worker = ShardWorker()
    worker.work = work_for(source, options(**option_changes), SHA, False, keep_features=keep_features)
    worker.source = worker._open()
    worker.extractor = extractor if extractor is not None else MeanColour()
    return worker


def assert_same_stats(merged: Stats, expected: Stats) -> None:
    assert merged.n == expected.n
    np.testing.assert_allclose(merged.mu, expected.mu, rtol=1e-13, atol=0)
    np.testing.assert_allclose(merged.sigma, expected.sigma, rtol=1e-12, atol=1e-12 * np.abs(expected.sigma).max())


def test_the_shards_of_a_folder_merge_to_the_statistics_of_the_whole(tmp_path):
    images = write_pngs(tmp_path / "images", 9)
    worker = worker_for(open_source(tmp_path / "images", workers=0))
    plan = plan_shards(9, 2, n_actors=2)
    assert len(plan) == 5
    merged = StatsAccumulator(dim=3)
    for shard in plan:
        result = worker._run(shard.index, shard.start, shard.stop, count_only=False)
        assert result["shard"] == shard.index and result["n_good"] == shard.stop - shard.start
        assert result["skipped"] == [] and result["lossy"] is False and result["features"] is None
        assert result["node"] == worker.node
        assert result["extractor_metadata"] == {
            "extractor": "mean-colour", "weights_sha256": SHA, "resize_mode": "none", "provider": "numpy"
        }
        merged.merge(result["accumulator"])
    assert_same_stats(merged.result(), Stats.from_features(features_of(images).astype(np.float64)))


def test_a_shard_reports_its_own_bad_files_and_counts_only_when_asked(tmp_path):
    write_pngs(tmp_path / "images", 6, bad=(3,))
    worker = worker_for(open_source(tmp_path / "images", workers=0))
    extractor = worker.extractor
    # Images 2..3: 003.png is bad; the shard skips it and says so (the driver applies skip_bad).
    result = worker._run(1, 2, 4, count_only=False)
    assert result["n_good"] == 1 and result["accumulator"].n == 1
    assert [file for file, _ in result["skipped"]] == ["003.png"]
    assert worker._run(0, 0, 2, count_only=False)["skipped"] == []
    # Counting only (a bad file was seen without skip_bad): decode, no network.
    calls = extractor.calls
    counted = worker._run(2, 4, 6, count_only=True)
    assert counted["accumulator"] is None and counted["n_good"] == 2 and extractor.calls == calls
    # A shard of bad files only: nothing good, reported rather than raised.
    only_bad = worker._run(3, 3, 4, count_only=False)
    assert only_bad["n_good"] == 0 and [file for file, _ in only_bad["skipped"]] == ["003.png"]


def test_the_shards_of_an_array_give_its_rows_in_order(tmp_path):
    images = np.random.default_rng(5).integers(0, 256, size=(7, 4, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    worker = worker_for(open_source(tmp_path / "images.npy"), keep_features=True)
    assert worker.work.mode == "reopen" and worker.source.n_images == 7
    rows = []
    for shard in plan_shards(7, 2, n_actors=1):
        result = worker._run(shard.index, shard.start, shard.stop, count_only=False)
        assert result["n_good"] == shard.stop - shard.start
        rows.append(result["features"].rows)
    np.testing.assert_array_equal(np.concatenate(rows), features_of(images))


def test_a_source_that_does_not_give_the_planned_images_is_refused_with_the_node(tmp_path):
    source = open_source(np.zeros((5, 4, 4, 3), np.uint8))
    worker = worker_for(source)
    with pytest.raises(InputError, match=r"gave 1 images for images 4\.\.5; it cannot be split into shards"):
        worker._run(2, 4, 6, count_only=False)
    # Through run(), a FidkitError comes back as the result, with the node, instead of killing the actor.
    result = worker.run([None], 2, 4, 6, False)
    assert isinstance(result["error"], InputError) and result["node"] == worker.node and result["shard"] == 2


def test_a_node_that_sees_another_file_under_the_path_refuses_it(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((6, 4, 4, 3), np.uint8))
    worker = worker_for(open_source(tmp_path / "images.npy"))
    np.save(tmp_path / "images.npy", np.zeros((5, 4, 4, 3), np.uint8))  # what another node would see
    with pytest.raises(SourceError, match="holds a array of 5 images, not the array of 6 the driver opened"):
        worker._open()


def test_the_actor_builds_the_drivers_network_by_name_and_checks_its_weights(tmp_path):
    worker = ShardWorker()
    source = open_source(np.zeros((4, 4, 4, 3), np.uint8))
    missing = tmp_path / "not-on-this-node.pth"

    # The driver's own weights file, not on this node: refused, naming the node.
    worker.work = work_for(source, options(weights=missing), SHA, False)
    with replaced_extractor(lambda options: MeanColour(), identity=lambda options: {}) as built:
        with pytest.raises(WeightsError, match=f"is not on node {re.escape(worker.node)}"):
            worker._build_extractor()
        assert built == []

        # The released weights: this node finds its own (weights=None), on onnxruntime whatever the driver ran.
        worker.work = work_for(source, options(weights=missing, engine="auto"), SHA, True)
        assert isinstance(worker._build_extractor(), MeanColour)
        assert (built[-1].weights, built[-1].engine, built[-1].batch_size) == (None, "onnxruntime", 2)

        # Weights that hash differently on this node.
        worker.work = work_for(source, options(weights=missing), "6" * 64, True)
        with pytest.raises(WeightsError, match="every node must see the same weights"):
            worker._build_extractor()


def test_actors_take_a_given_extractors_convention_and_layer_and_their_features_are_checked():
    # A given extractor of another convention used to lend only its weights and device: the actors ran tf at 2048
    # and their rows were cached under the given extractor's key.
    from types import SimpleNamespace

    from fidkit.cluster.ray import _actor_options, _check_identity
    from fidkit.errors import FidkitError
    from fidkit.extractors import ExtractorIdentity
    from fidkit.options import RunOptions

    given = SimpleNamespace(weights_path="/tmp/w.pth", weights_sha256="ab" * 32, device="cpu", convention="clean",
                            feature_dim=768)
    options, sha256, _ = _actor_options(RunOptions(cluster="ray"), given)
    assert (options.convention, options.dims, sha256) == ("clean", 768, "ab" * 32)
    stated = ExtractorIdentity.of("inception-2015", {"weights_sha256": "ab" * 32, "convention": "clean",
                                                     "feature_extractor": "inception-2015-12-05/mixed_7/mean"})
    _check_identity({"weights_sha256": "ab" * 32, "convention": "clean",
                     "feature_extractor": "inception-2015-12-05/mixed_7/mean"}, stated)
    with pytest.raises(FidkitError, match="convention 'tf', not 'clean'"):
        _check_identity({"weights_sha256": "ab" * 32, "convention": "tf",
                         "feature_extractor": "inception-2015-12-05/mixed_7/mean"}, stated)
