"""Edges of the Ray path: what a node sees, a cluster that is busy, addresses, devices, messages, URIs.

Most cases test the mechanism at the function level (an actor given a listing that differs from its
node's files, a plan made from the resources that are free, ...); the few that need Ray share one local
instance of 2 CPUs for the module. Without Ray installed, what needs it is skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fidkit.errors import FidkitError, InputError

# Run by .ci/run with the other cluster cases (pytest -m slow).
pytestmark = pytest.mark.slow


# --- 3: host names the resolver refuses are usage errors, not tracebacks -----------------------------------------

@pytest.mark.parametrize("address", ["a..b:6379", ".:6379", "x" * 64 + ":6379", "ray://a..b:10001",
                                     "head..example.com:6379", ("a." * 130) + "b:6379"])
def test_a_host_name_with_an_empty_or_overlong_label_is_a_usage_error(address, capsys, monkeypatch):
    from fidkit._ray_address import check_ray_address
    from fidkit.cli import main
    from fidkit.cluster.connect import address_to_use

    with pytest.raises(InputError, match="is not a host name") as raised:
        check_ray_address(address)
    assert "HOST:PORT" in str(raised.value)
    assert main(["stats", "images/", "--ray-address", address]) == 2
    err = capsys.readouterr().err
    assert "is not a Ray address" in err and "Traceback" not in err and "internal error" not in err
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(InputError, match="RAY_ADDRESS"):
        address_to_use(None)


@pytest.mark.parametrize("address", ["head-node:6379", "a.b.c:6379", "x" * 63 + ".example.com:6379",
                                     "head.example.com.:6379", "10.0.0.1:6379", "ray://h_1:10001"])
def test_host_names_of_labels_up_to_63_characters_are_accepted(address):
    from fidkit._ray_address import check_ray_address

    assert check_ray_address(address) == address


def test_the_probe_turns_a_resolver_refusal_into_a_usage_error():
    # Whatever slips past the grammar: the idna codec's UnicodeError names the forms, it is no traceback.
    from fidkit.cluster.connect import check_reachable

    with pytest.raises(InputError, match="is not a Ray address.*HOST:PORT"):
        check_reachable("a..b:6379", timeout=2)


# --- 6: --json lists the skipped files of a Ray run once, as a local run does ------------------------------------

def _shard_result(n_good: int, skipped: list[tuple[str, str]], dim: int = 4):
    import numpy as np

    from fidkit.stats import StatsAccumulator

    part = StatsAccumulator(dim=dim)
    part.update(np.random.default_rng(n_good).normal(size=(n_good, dim)))
    return {"accumulator": part, "skipped": skipped, "n_good": n_good, "lossy": False, "node": "n1",
            "seconds": 0.0, "extractor_metadata": {}}


def test_skipped_files_of_a_ray_run_are_printed_but_not_listed_again_in_json_warnings(capsys):
    from types import SimpleNamespace

    from fidkit._streams import logging_to_stderr
    from fidkit.cluster.ray import _merge, plan_shards

    plan = plan_shards(8, 4, n_actors=2)
    results = {0: _shard_result(3, [("sub/003.png", "not an image Pillow can read")]), 1: _shard_result(4, [])}
    source = SimpleNamespace(name="some-bad", n_images=8, skipped_at_open=())
    with logging_to_stderr() as listed:
        run = _merge(results, plan, source, SimpleNamespace(skip_bad=True), n_actors=2, wall_seconds=0.0, batch_size=4)
    assert run.skipped == (("sub/003.png", "not an image Pillow can read"),)
    assert "skipped 1 bad file(s), first sub/003.png" in capsys.readouterr().err
    assert listed == []  # the count is in n_skipped; a local run lists no such warning either


# --- 7: a URI's listing counts what it does not read, as a folder's does ------------------------------------------

def _write_pngs(folder, names, seed=0):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)).save(path, format="PNG")


def test_a_uri_counts_and_warns_about_ignored_entries_as_the_folder_does(tmp_path, caplog):
    pytest.importorskip("pyarrow.fs")
    import logging

    from fidkit.cluster.uri import open_uri
    from fidkit.sources import ReadOptions
    from fidkit.sources import open_source

    root = tmp_path / "hid"
    _write_pngs(root, ["0.png", "a/1.png", "a/2.png"])
    _write_pngs(root, [".ipynb_checkpoints/x.png", ".ipynb_checkpoints/deeper/y.png", "a/.cache/z.png"])
    (root / "y.gif").write_bytes(b"GIF89a")
    (root / "a" / "w.heic").write_bytes(b"....")
    (root / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="fidkit"):
        folder = open_source(root, workers=0)
        folder_warnings = sorted(r.getMessage().split(": ", 1)[1] for r in caplog.records)
        caplog.clear()
        uri = open_uri(root.as_uri(), ReadOptions(workers=0))
        uri_warnings = sorted(r.getMessage().split(": ", 1)[1] for r in caplog.records)
    assert uri.members == folder.members == ["0.png", "a/1.png", "a/2.png"]
    assert uri.ignored == folder.ignored and sum(uri.ignored.values()) == 4  # 2 hidden folders, .gif, .heic
    assert uri_warnings == folder_warnings and len(uri_warnings) == 3


def test_a_uri_of_only_ignored_images_says_what_was_ignored(tmp_path):
    pytest.importorskip("pyarrow.fs")
    from fidkit.cluster.uri import open_uri
    from fidkit.sources import ReadOptions
    from fidkit.errors import EmptySourceError

    root = tmp_path / "only-hidden"
    _write_pngs(root, [".thumbnails/a.png"])
    (root / "b.gif").write_bytes(b"GIF89a")
    with pytest.raises(EmptySourceError, match=r"1 ignored: hidden folder.*1 ignored: image format"):
        open_uri(root.as_uri(), ReadOptions(workers=0))


# --- 5: a running cluster is not "a local instance", and the second side's connection is fidkit's own ----------

class _FakeRay:
    """What connected() asks of Ray: is_initialized, init, shutdown (no cluster is started)."""

    def __init__(self):
        self.inits: list[dict] = []
        self.up = False

    def is_initialized(self):
        return self.up

    def init(self, **kwargs):
        self.inits.append(kwargs)
        self.up = True

    def shutdown(self):
        self.up = False


@pytest.fixture
def fake_ray(monkeypatch):
    import fidkit.cluster.connect as connect

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(connect, "check_reachable", lambda address, timeout=None: None)
    monkeypatch.setitem(connect._session, "depth", 0)
    monkeypatch.setitem(connect._session, "started", False)
    monkeypatch.setitem(connect._session, "address", None)
    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)  # what shared_session() shuts down at its end
    return fake


@pytest.mark.parametrize("address", ["127.0.0.1:6379", "ray://head:10001", "auto"])
def test_a_cluster_reached_by_its_address_is_not_a_local_instance(fake_ray, monkeypatch, address):
    from fidkit.cluster.connect import connected

    with connected(fake_ray, address) as local_instance:
        assert local_instance is False  # so no graph export on the driver, no "(local instance)" in the log
    assert fake_ray.inits[-1]["address"] == address and not fake_ray.up
    monkeypatch.setenv("RAY_ADDRESS", address)
    with connected(fake_ray, None) as local_instance:
        assert local_instance is False


@pytest.mark.parametrize("address", [None, "local"])
def test_a_new_instance_on_this_machine_is_a_local_instance(fake_ray, address):
    from fidkit.cluster.connect import connected

    with connected(fake_ray, address) as local_instance:
        assert local_instance is True
    assert fake_ray.inits[-1]["address"] == "local" and not fake_ray.up


@pytest.mark.parametrize("address", ["127.0.0.1:6379", None])
def test_the_second_side_uses_fidkits_own_connection_without_a_warning(fake_ray, caplog, address):
    import logging

    from fidkit.cluster.connect import connected, shared_session

    with caplog.at_level(logging.WARNING, logger="fidkit"), shared_session():
        with connected(fake_ray, address) as first:
            pass
        assert fake_ray.up  # kept for side b
        with connected(fake_ray, address) as second:
            assert second == first == (address is None)
    assert len(fake_ray.inits) == 1 and not fake_ray.up
    assert [r.getMessage() for r in caplog.records] == []


def test_a_connection_made_by_the_caller_is_still_named_when_another_address_is_asked_for(fake_ray, caplog):
    import logging

    from fidkit.cluster.connect import connected

    fake_ray.up = True  # the caller's own ray.init()
    with caplog.at_level(logging.WARNING, logger="fidkit"), connected(fake_ray, "127.0.0.1:6379") as local_instance:
        assert local_instance is False
    assert "its cluster is used, not 127.0.0.1:6379" in caplog.text and fake_ray.up


# --- 4: --ray --device cuda is checked where the network runs, not on the driver ---------------------------------

@pytest.fixture
def no_gpu_here(monkeypatch):
    """This process's machine has no NVIDIA driver (whatever the test machine has)."""
    import fidkit.inception.providers as providers

    monkeypatch.setattr(providers, "gpu_driver_present", lambda: False)


def test_the_driver_does_not_refuse_a_gpu_device_that_only_the_actors_need(no_gpu_here):
    from fidkit.api import _prepare

    overrides, images = {"device": "cuda"}, (np.zeros((2, 8, 8, 3), np.uint8),)
    with pytest.raises(FidkitError, match="no NVIDIA driver on this machine"):
        _prepare(None, None, overrides, images)  # local: the device is this machine's
    options, _ = _prepare(None, None, {**overrides, "cluster": "ray"}, images)  # a CPU-only head node is fine
    assert options.device == "cuda"


class _Resources:
    def __init__(self, total, free=None):
        self.total, self.free = total, free if free is not None else total

    def cluster_resources(self):
        return dict(self.total)

    def available_resources(self):
        return dict(self.free)


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "tensorrt"])
def test_a_gpu_device_on_a_cluster_without_gpus_is_refused_naming_the_cluster(device, monkeypatch):
    from fidkit.cluster.ray import ACTORS_ENV, _actor_plan

    monkeypatch.delenv(ACTORS_ENV, raising=False)
    refused = rf"device {device} asked for, but the Ray cluster has no GPU .*--device auto"
    with pytest.raises(FidkitError, match=refused):
        _actor_plan(_Resources({"CPU": 8.0}), device)
    assert _actor_plan(_Resources({"CPU": 8.0, "GPU": 2.0}), device) == (2, True)
    assert _actor_plan(_Resources({"CPU": 8.0}), "auto") == (8, False)


def test_an_actor_without_the_device_fails_before_building_and_the_message_names_its_node(
        no_gpu_here, tmp_path, monkeypatch):
    import fidkit.extractors as extractors
    from fidkit.cluster.ray import _with_node
    from fidkit.cluster.shards import ShardWorker, work_for
    from fidkit.options import RunOptions
    from fidkit.sources import open_source

    import numpy as np

    built = []
    monkeypatch.setattr(extractors, "build_extractor", lambda options: built.append(options))
    worker = ShardWorker()
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"the driver's weights, as a shared file system shows them")
    options = RunOptions(weights=str(weights), device="cuda", batch_size=4)
    worker.work = work_for(open_source(np.zeros((4, 8, 8, 3), np.uint8)), options, "0" * 64, False)
    with pytest.raises(FidkitError) as raised:
        worker._build_extractor()
    assert not built  # refused before a graph export or a session
    message = str(_with_node(raised.value, worker.node))
    assert "device cuda asked for, but there is no NVIDIA driver" in message and "device='cpu'" in message
    assert message.endswith(f"(on node {worker.node})")


# --- 2: a cluster whose CPUs are partly held by other work: plan on what is free, never wait silently --------------

def test_the_plan_counts_the_resources_that_are_free_not_the_clusters_total(monkeypatch):
    from fidkit.cluster.ray import ACTORS_ENV, _actor_plan

    monkeypatch.delenv(ACTORS_ENV, raising=False)
    assert _actor_plan(_Resources({"CPU": 2.0}, {"CPU": 1.0}), "cpu") == (1, False)
    assert _actor_plan(_Resources({"CPU": 8.0, "GPU": 4.0}, {"CPU": 8.0, "GPU": 1.0}), "auto") == (1, True)
    # Nothing free now: one actor, whose placement the driver waits for with a deadline.
    assert _actor_plan(_Resources({"CPU": 2.0}, {}), "cpu") == (1, False)
    monkeypatch.setenv(ACTORS_ENV, "6")
    assert _actor_plan(_Resources({"CPU": 8.0}, {"CPU": 3.0}), "cpu") == (3, False)


class _Ref:
    def __init__(self, value, ready):
        self.value, self.ready = value, ready


class _Method:
    def __init__(self, call):
        self.remote = call


class _Actor:
    """A Ray actor handle of a fake cluster: `placed` says whether the cluster ever runs it."""

    def __init__(self, index, placed, ran):
        self.__ray_ready__ = _Method(lambda: _Ref(True, placed))
        self.run = _Method(lambda work_ref, shard, start, stop, count_only: (
            ran.append((index, shard)), _Ref(_shard_result(stop - start, []), placed))[1])


class _Cluster(_Resources):
    """ray.wait / ray.get over _Refs; a wait that keeps finding nothing ready stands for a run that hangs."""

    def __init__(self, total, free):
        super().__init__(total, free)
        self.empty_waits = 0

    def wait(self, refs, num_returns=1, timeout=None):
        ready = [ref for ref in refs if ref.ready][:num_returns]
        if not ready:
            self.empty_waits += 1
            assert self.empty_waits < 200, "the driver waits for ever on an actor that is never placed"
            import time

            time.sleep(0.01)
        return ready, [ref for ref in refs if ref not in ready]

    def get(self, ref):
        return ref.value


def _drive_on(cluster, placed, n_shards, monkeypatch, timeout=0.5):
    from types import SimpleNamespace

    import fidkit.cluster.ray as cluster_ray

    monkeypatch.setattr(cluster_ray, "PLACEMENT_TIMEOUT_S", timeout, raising=False)
    monkeypatch.setattr(cluster_ray, "_PLACEMENT_NOTE_S", 0.05, raising=False)
    ran: list[tuple[int, int]] = []
    actors = [_Actor(index, is_placed, ran) for index, is_placed in enumerate(placed)]
    plan = cluster_ray.plan_shards(4 * n_shards, 4, n_actors=len(actors))[:n_shards]
    source = SimpleNamespace(name="busy", n_images=4 * n_shards)
    results, n_placed = cluster_ray._drive(cluster, actors, [None], plan, source,
                                           SimpleNamespace(skip_bad=False, progress=False))
    return results, n_placed, ran


def test_shards_go_to_the_placed_actors_and_none_waits_on_an_actor_the_cluster_never_places(monkeypatch):
    pytest.importorskip("ray")
    cluster = _Cluster({"CPU": 2.0}, {"CPU": 1.0})
    results, n_placed, ran = _drive_on(cluster, [True, False], 5, monkeypatch, timeout=60.0)
    assert sorted(results) == [0, 1, 2, 3, 4] and n_placed == 1
    assert {actor for actor, _ in ran} == {0}  # nothing was handed to the unplaced actor


def test_when_no_actor_is_placed_the_run_fails_naming_the_missing_resources(monkeypatch, caplog):
    pytest.importorskip("ray")
    import logging

    cluster = _Cluster({"CPU": 2.0}, {"CPU": 0.0})
    with caplog.at_level(logging.INFO, logger="fidkit"), pytest.raises(FidkitError) as raised:
        _drive_on(cluster, [False], 3, monkeypatch, timeout=0.3)
    message = str(raised.value)
    assert "placed none of 1 fidkit actor(s) within 0.3 s" in message
    assert "takes one CPU; it has 0 of 2 CPU(s) free" in message and "ray status" in message
    assert "waiting for the Ray cluster to place 1 actor(s)" in caplog.text  # said while it waited


# --- 1: an actor compares every file it reads with the driver's listing ------------------------------------------

class _MeanColour:
    """A three-feature stand-in for the network: each image's mean colour."""

    feature_dim = 3

    def __call__(self, images):
        import numpy as np

        return np.asarray(images, np.float64).reshape(len(images), -1, 3).mean(axis=1).astype(np.float32)

    def metadata(self):
        return {"extractor": "mean-colour", "weights_sha256": "5" * 64, "resize_mode": "none"}


def _worker_for(source, **changes):
    """The actor's side, in this process: the driver's work as Ray would ship it (cloudpickled)."""
    from fidkit.cluster.shards import ShardWorker, work_for
    from fidkit.options import RunOptions

    ray = pytest.importorskip("ray")
    work = work_for(source, RunOptions(device="cpu", batch_size=2, workers=0, **changes), "5" * 64, False)
    worker = ShardWorker()
    worker.work = ray.cloudpickle.loads(ray.cloudpickle.dumps(work))
    worker.source = worker._open()
    worker.extractor = _MeanColour()
    return worker


def _error_of(worker, start, stop):
    result = worker.run([None], 0, start, stop, False)
    assert "error" in result, "the actor read files that are not the driver's"
    return result["error"]


def _same_stamp_as(path, before):
    import os

    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.mark.parametrize("skip_bad", [False, True])
def test_a_node_without_a_file_the_driver_listed_stops_the_run_naming_it(tmp_path, skip_bad):
    from fidkit.errors import SourceError
    from fidkit.sources import open_source

    root = tmp_path / "images"
    _write_pngs(root, [f"{index:03d}.png" for index in range(6)])
    worker = _worker_for(open_source(root, workers=0, skip_bad=skip_bad), skip_bad=skip_bad)
    assert worker._run(0, 0, 2, count_only=False)["n_good"] == 2  # the same files: read as before
    (root / "003.png").unlink()  # a node whose mount lacks it (or an empty folder: the mount is missing)
    error = _error_of(worker, 2, 4)
    assert isinstance(error, SourceError)  # an error, never a skipped bad file (skip_bad or not)
    assert "003.png differs on this node from the driver's listing (no such file here" in str(error)
    assert "every node must see the same files" in str(error) and "nothing was computed or cached" in str(error)


def test_a_node_whose_file_has_other_bytes_or_another_time_stops_the_run(tmp_path):
    import os

    from fidkit.errors import SourceError
    from fidkit.sources import open_source

    root = tmp_path / "images"
    _write_pngs(root, ["a.png", "b.png", "c.png", "d.png"], seed=1)
    worker = _worker_for(open_source(root, workers=0))
    original, before = (root / "b.png").read_bytes(), os.stat(root / "b.png")
    (root / "b.png").write_bytes(original + b"\0" * 7)  # another version, its modification time kept
    _same_stamp_as(root / "b.png", before)
    with pytest.raises(SourceError, match=r"b\.png differs on this node from the driver's listing \(\d[\d,]* byt"):
        worker._run(0, 0, 4, count_only=False)
    (root / "b.png").write_bytes(original)  # the same size, written at another time
    os.utime(root / "b.png", ns=(before.st_atime_ns, before.st_mtime_ns + 1))
    assert isinstance(_error_of(worker, 0, 4), SourceError)
    _same_stamp_as(root / "b.png", before)
    assert worker._run(0, 0, 4, count_only=False)["n_good"] == 4  # as the driver listed it: read


def _zip_of(path, members):
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zipped:
        for name, data in members.items():
            zipped.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)


def test_an_archive_is_compared_by_its_own_stamp_and_its_members_central_directory_entries(tmp_path):
    import os
    import tarfile

    from fidkit.errors import SourceError
    from fidkit.sources import open_source

    names = [f"p/{index}.png" for index in range(4)]
    _write_pngs(tmp_path / "src", names)
    members = {name: (tmp_path / "src" / name).read_bytes() for name in names}
    archive = tmp_path / "images.zip"
    _zip_of(archive, members)
    worker = _worker_for(open_source(archive, workers=0))
    assert worker._run(0, 0, 4, count_only=False)["n_good"] == 4
    before = os.stat(archive)
    os.utime(archive, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    with pytest.raises(SourceError, match=r"images\.zip differs on this node from the driver's listing"):
        worker._run(0, 0, 2, count_only=False)
    # Another archive of the same size and time: one member's bytes differ (its CRC-32 in the central directory).
    first = members[names[1]]
    _zip_of(archive, {**members, names[1]: first[:-5] + bytes(5 - len(first[-5:])) + bytes(b ^ 1 for b in first[-5:])})
    _same_stamp_as(archive, before)
    assert os.stat(archive).st_size == before.st_size
    assert worker._run(1, 2, 4, count_only=False)["n_good"] == 2  # shards of unchanged members are read
    error = _error_of(worker, 0, 2)
    assert isinstance(error, SourceError) and f"{names[1]} in {archive}" in str(error) and "CRC-32" in str(error)

    tarred = tmp_path / "images.tar"
    with tarfile.open(tarred, "w") as handle:
        for name in names:
            handle.add(tmp_path / "src" / name, name)
    worker = _worker_for(open_source(tarred, workers=0))
    tarred.unlink()
    with pytest.raises(SourceError, match=r"images\.tar differs on this node from the driver's listing \(no such"):
        worker._run(0, 0, 2, count_only=False)


def test_a_uri_member_that_differs_on_the_node_stops_the_run(tmp_path):
    pytest.importorskip("pyarrow.fs")
    import os

    from fidkit.cluster.uri import open_uri
    from fidkit.sources import ReadOptions
    from fidkit.errors import SourceError

    root = tmp_path / "bucket"
    _write_pngs(root, ["x/1.png", "x/2.png", "y.png"])
    source = open_uri(root.as_uri(), ReadOptions(skip_bad=True, workers=0))
    worker = _worker_for(source, skip_bad=True)
    assert worker._run(0, 0, 3, count_only=False)["n_good"] == 3
    before = os.stat(root / "x" / "2.png")
    os.utime(root / "x" / "2.png", ns=(before.st_atime_ns, before.st_mtime_ns + 5))
    with pytest.raises(SourceError, match=r"x/2\.png differs on this node from the driver's listing"):
        worker._run(0, 0, 3, count_only=False)


def test_an_array_file_of_the_same_shape_but_another_version_is_refused(tmp_path):
    import os

    import numpy as np

    from fidkit.errors import SourceError
    from fidkit.sources import open_source

    path = tmp_path / "images.npy"
    np.save(path, np.zeros((6, 4, 4, 3), np.uint8))
    worker = _worker_for(open_source(path))
    before = os.stat(path)
    np.save(path, np.full((6, 4, 4, 3), 7, np.uint8))  # what another node holds: same shape, other pixels
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    with pytest.raises(SourceError, match=r"images\.npy differs on this node from the driver's listing"):
        worker._open()


# --- on a real local Ray instance (one for the module: conftest.py's ray_instance) ---------------------------------


def test_a_run_on_a_cluster_with_a_cpu_held_by_other_work_ends_on_the_free_one(ray_instance, random_weights_path,
                                                                             tmp_path, monkeypatch):
    import numpy as np

    from fidkit.api import compute_stats_with_report

    ray = ray_instance
    monkeypatch.delenv("FIDKIT_RAY_ACTORS", raising=False)

    @ray.remote(num_cpus=1)
    class Busy:
        def ping(self):
            return 1

    busy = Busy.remote()
    try:
        ray.get(busy.ping.remote())  # one of the 2 CPUs is held for the whole run
        images = np.random.default_rng(11).integers(0, 256, size=(8, 12, 12, 3), dtype=np.uint8)
        np.save(tmp_path / "busy.npy", images)
        stats, side = compute_stats_with_report(
            tmp_path / "busy.npy", weights=random_weights_path, device="cpu", batch_size=4, cluster="ray",
            progress=False, use_cache=False,
        )
        assert stats.n == 8 and side.n == 8
        assert stats.metadata["ray_actors"] == 1 and stats.metadata["ray_shards"] == 2
    finally:
        ray.kill(busy)


# --- 5: an actor compares each batch file of a CIFAR python folder with the driver's listing ------------------------

def _cifar_folder(folder, n_per_file=2):
    import numpy as np

    from fidkit.testing import cifar_batch

    folder.mkdir()
    rng = np.random.default_rng(5)
    written = {}
    for index in range(1, 6):
        images = rng.integers(0, 256, (n_per_file, 32, 32, 3), dtype=np.uint8)
        (folder / f"data_batch_{index}").write_bytes(cifar_batch(images, labels=[0] * n_per_file))
        written[f"data_batch_{index}"] = images
    (folder / "batches.meta").write_bytes(b"not read")
    return written


def _cifar_actor(folder):
    """The actor's side, in this process: the driver's work as Ray ships it (pickled), opened as a node opens it."""
    import pickle

    from fidkit.cluster.shards import ShardWorker, work_for
    from fidkit.options import RunOptions
    from fidkit.sources import open_source

    work = work_for(open_source(folder), RunOptions(device="cpu", batch_size=2, workers=0), "5" * 64, False)
    worker = ShardWorker()
    worker.work = pickle.loads(pickle.dumps(work))
    return work, worker


def test_a_cifar_folder_sent_by_path_is_listed_file_by_file_and_checked_by_each_actor(tmp_path):
    import os

    import numpy as np

    from fidkit.errors import SourceError
    from fidkit.testing import cifar_batch

    folder = tmp_path / "cifar-10-batches-py"
    written = _cifar_folder(folder)
    work, worker = _cifar_actor(folder)
    assert work.mode == "reopen" and work.listing is not None and work.listing.kind == "files"
    assert work.listing.names == tuple(f"data_batch_{index}" for index in range(1, 6))
    assert worker._open().n_images == 10  # the same files: opened as on the driver

    third = folder / "data_batch_3"
    before = os.stat(third)
    original = third.read_bytes()
    other = cifar_batch(np.ascontiguousarray(written["data_batch_3"][::-1]), labels=[0, 0])  # the images swapped
    assert len(other) == len(original)
    third.write_bytes(other)  # another version of the same size, written later: other pixels, the same count
    os.utime(third, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    with pytest.raises(SourceError, match=r"data_batch_3 in .*cifar-10-batches-py differs on this node from the "
                                          r"driver's listing \(\d[\d,]* bytes, modified"):
        worker._open()
    third.write_bytes(original)
    os.utime(third, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert worker._open().n_images == 10
    (folder / "data_batch_5").unlink()  # a node that lacks a batch file: named, before the folder is opened
    with pytest.raises(SourceError, match=r"data_batch_5 in .* differs on this node from the driver's listing \(no "
                                          r"such file here"):
        worker._open()


# --- the fidkit command's SIGTERM handling survives ray.init (a local Ray instance in a subprocess) -------------

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_sigterm_after_ray_init_takes_the_commands_path_not_rays_exit(tmp_path):
    pytest.importorskip("ray")
    # The command's handler (SIGTERM unwound as Ctrl-C), a real ray.init through fidkit's connection, then SIGTERM
    # while connected and after the connection ended (ray.shutdown): `kill` during side b, or after both sides.
    script = textwrap.dedent("""
        import os, signal
        import ray
        from fidkit._signals import Terminated as _Terminated, _raise_terminated, sigterm_as_interrupt as _sigterm_as_interrupt
        from fidkit.cluster.connect import connected, shared_session

        def terminate_self():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(10_000):  # the handler runs between bytecodes
                    pass
            except _Terminated:
                return True
            return False

        with _sigterm_as_interrupt():
            with shared_session():
                with connected(ray, None):
                    print("inside", terminate_self(), flush=True)
                    signal.signal(signal.SIGTERM, _raise_terminated)  # it falls back to the default after one
            print("after", terminate_self(), flush=True)
        """)
    env = {name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, (done.stdout, done.stderr[-3000:])
    assert done.stdout.splitlines() == ["inside True", "after True"]
    assert "SIGTERM received" not in done.stderr


def test_the_command_killed_with_sigterm_during_a_ray_run_says_terminated_and_exits_143(tmp_path,
                                                                                      random_weights_path):
    pytest.importorskip("ray")
    import signal
    import time

    import numpy as np
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for index in range(64):  # tens of seconds on 2 CPU actors: SIGTERM lands while the actors compute
        Image.fromarray(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)).save(images / f"{index:02d}.png")
    env = {name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env["FIDKIT_HOME"] = str(tmp_path / "home")
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        command = subprocess.Popen(
            [sys.executable, "-m", "fidkit", "stats", str(images), "--ray", "--weights", str(random_weights_path),
             "--device", "cpu", "--batch-size", "2", "--no-cache", "--save", str(tmp_path / "out.npz")],
            stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=tmp_path,
        )
        try:
            ends = time.monotonic() + 240
            while "shards on" not in log.read_text() and command.poll() is None and time.monotonic() < ends:
                time.sleep(0.2)
            assert command.poll() is None, log.read_text()
            time.sleep(1)
            command.send_signal(signal.SIGTERM)
            status = command.wait(timeout=120)
        finally:
            if command.poll() is None:
                command.kill()
                command.wait()
    err = log.read_text()
    assert status == 143, err
    assert "fidkit: terminated" in err and "SIGTERM received" not in err
    assert not (tmp_path / "out.npz").exists() and list(tmp_path.glob("*.npz*")) == []


# --- hostile round 7, 3: a Ray run's rows come in the local run's order, for every kind of source -------------------

def _shard_reorders(sizes: list[tuple[int, ...]], batch_size: int, n_actors: int) -> bool:
    """Whether some shard of the plan batches its images out of their order (sizes interleaved within it): the case
    where rows on Ray would come in batching order without each shard's reordering."""
    import numpy as np

    from fidkit.cluster.shards import plan_shards
    from fidkit.sources.base import SizeGrouper

    for shard in plan_shards(len(sizes), batch_size, n_actors):
        grouper = SizeGrouper(batch_size)
        for size in sizes[shard.start:shard.stop]:
            grouper.add(np.zeros(size[:2] + (3,), dtype=np.uint8))
        grouper.finish()
        if grouper.emitted_order() is not None:
            return True
    return False


def test_the_rows_of_a_ray_run_come_in_the_local_order_for_every_kind_of_source(ray_instance, random_weights_path,
                                                                               extractor, tmp_path, monkeypatch):
    import io
    import zipfile

    import numpy as np
    from PIL import Image

    from fidkit.api import compute_features

    monkeypatch.setenv("FIDKIT_RAY_ACTORS", "2")
    batch = 4
    rng = np.random.default_rng(17)
    shapes = [(16, 16, 3), (24, 20, 3), (18, 18), (16, 16, 3), (20, 12, 3)]  # mixed sizes, one grayscale
    images = [rng.integers(0, 256, size=shapes[(index * 7) % 5], dtype=np.uint8) for index in range(13)]

    def png(pixels):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        return buffer.getvalue()

    folder = tmp_path / "folder"
    for index, pixels in enumerate(images):
        sub = folder / ("x" if index % 3 else "y/z")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{index:03d}.png").write_bytes(png(pixels))
    (folder / "x" / "005.png").write_bytes(b"not an image")  # a skipped file moves every later row up by one
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for index, pixels in enumerate(images):
            zipped.writestr(f"part{index % 2}/{index:03d}.png", png(pixels))
    same_size = rng.integers(0, 256, size=(11, 16, 16, 3), dtype=np.uint8)
    array_file = tmp_path / "images.npy"
    np.save(array_file, same_size)

    cases = [
        ("folder of mixed sizes, a bad file skipped", folder, dict(skip_bad=True)),
        ("zip archive of mixed sizes", archive, {}),
        (".npy file read by each actor, a random subset", array_file, dict(limit=9, seed=3)),
        ("in-memory array through the object store", same_size, {}),
    ]
    outputs = ("features", "logits")
    for label, source, settings in cases:
        local = compute_features(source, extractor=extractor, batch_size=batch, workers=0, use_cache=False,
                                 outputs=outputs, **settings)
        on_ray = compute_features(source, weights=random_weights_path, device="cpu", batch_size=batch,
                                  cluster="ray", use_cache=False, progress=False, outputs=outputs, **settings)
        assert on_ray.metadata["cluster"] == "ray" and on_ray.n == local.n, label
        assert int(on_ray.metadata["ray_shards"]) > 1, label  # several shards, concatenated
        for name in outputs:  # row by row, in order: not only the same set of rows
            mine, theirs = local.output(name), on_ray.output(name)
            assert float(np.abs(mine - theirs).max()) <= 1e-5 * float(np.abs(mine).max()), (label, name)
    # The folder and the archive do batch images out of their order within a shard (else the test proves nothing).
    folder_order = sorted(range(13), key=lambda i: f"{'x' if i % 3 else 'y/z'}/{i:03d}")
    folder_sizes = [images[index].shape for index in folder_order if index != 5]
    archive_sizes = [images[index].shape for index in sorted(range(13), key=lambda i: f"part{i % 2}/{i:03d}")]
    assert _shard_reorders(folder_sizes, batch, 2) and _shard_reorders(archive_sizes, batch, 2)
