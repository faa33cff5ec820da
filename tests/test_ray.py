"""The Ray engine against the single-process path, on a local Ray instance with 2 CPUs.

Ray starts once for the module (a few seconds); each Ray run starts its 2 actors afresh (an onnxruntime
session each). Sources hold 9-12 small images, batches of 4, so every run has several shards. Without
Ray installed everything here but the "not installed" message is skipped.
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fidkit.errors import FidkitError, ImageError

# A local Ray instance and its actors: about 90 s for the module on 2 cores; run by .ci/run (pytest -m slow).
pytestmark = pytest.mark.slow

BATCH = 4


def _same(ray_stats, local_stats) -> None:
    assert ray_stats.n == local_stats.n
    for ours, theirs in ((ray_stats.mu, local_stats.mu), (ray_stats.sigma, local_stats.sigma)):
        scale = float(np.abs(theirs).max())
        assert float(np.abs(ours - theirs).max()) <= 1e-12 * scale


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _images(n: int, seed: int) -> list[np.ndarray]:
    """Mixed sizes (16x16, 24x20, grayscale 18x18), as a folder of photos would be."""
    rng = np.random.default_rng(seed)
    shapes = [(16, 16, 3), (24, 20, 3), (18, 18)]
    return [rng.integers(0, 256, size=shapes[i % 3], dtype=np.uint8) for i in range(n)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Images in nested subfolders, three sizes, one grayscale in three."""
    root = tmp_path_factory.mktemp("ray-folder")
    for index, pixels in enumerate(_images(11, seed=1)):
        sub = root / ("a" if index % 2 else "b/c")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{index:03d}.png").write_bytes(_png(pixels))
    return root


@pytest.fixture
def run(random_weights_path, extractor):
    """compute_stats_with_report, local (with the shared extractor) or on Ray (actors build theirs)."""
    from fidkit.api import compute_stats_with_report

    def compute(source, cluster="local", **kwargs):
        kwargs.setdefault("use_cache", False)
        kwargs.setdefault("workers", 0)
        if cluster == "ray":
            return compute_stats_with_report(
                source, weights=random_weights_path, device="cpu", batch_size=BATCH, cluster="ray", progress=False,
                **kwargs,
            )
        return compute_stats_with_report(source, extractor=extractor, batch_size=BATCH, progress=False, **kwargs)

    return compute


def test_folder_with_subfolders_and_mixed_sizes_equals_the_local_statistics(ray_instance, run, folder):
    local, _ = run(folder)
    stats, side = run(folder, cluster="ray")
    _same(stats, local)
    assert stats.metadata["cluster"] == "ray"
    assert stats.metadata["ray_actors"] == 2
    assert int(stats.metadata["ray_shards"]) == 3  # 11 images, batches of 4
    assert stats.metadata["weights_sha256"] == local.metadata["weights_sha256"]
    assert stats.metadata["source_fingerprint"] == local.metadata["source_fingerprint"]
    assert side.kind == "folder" and not side.cached and side.n == 11


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_equals_the_local_statistics(ray_instance, run, tmp_path, kind):
    archive = tmp_path / f"images.{kind}"
    images = _images(9, seed=2)
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zipped:
            for index, pixels in enumerate(images):
                zipped.writestr(f"part{index % 2}/{index:03d}.png", _png(pixels))
    else:
        with tarfile.open(archive, "w:gz") as tarred:
            for index, pixels in enumerate(images):
                data = _png(pixels)
                info = tarfile.TarInfo(f"part{index % 2}/{index:03d}.png")
                info.size = len(data)
                tarred.addfile(info, io.BytesIO(data))
    local, _ = run(archive)
    stats, _ = run(archive, cluster="ray")
    _same(stats, local)


@pytest.mark.filterwarnings("ignore::fidkit.errors.SmallSampleWarning")
def test_npy_file_and_in_memory_array_equal_the_local_statistics(ray_instance, run, tmp_path, extractor,
                                                                 random_weights_path):
    images = np.random.default_rng(3).integers(0, 256, size=(10, 16, 16, 3), dtype=np.uint8)
    path = tmp_path / "images.npy"
    np.save(path, images)
    local, _ = run(path, limit=9, seed=4)  # a subset too: the actors draw the same images
    stats, _ = run(path, cluster="ray", limit=9, seed=4)
    _same(stats, local)

    # compute_fid: an in-memory array (through the object store) against the file, each side one job.
    from fidkit.api import compute_fid

    settings = dict(batch_size=BATCH, use_cache=False, progress=False)
    local_fid = compute_fid(images[:6], path, extractor=extractor, **settings)
    ray_fid = compute_fid(images[:6], path, weights=random_weights_path, device="cpu", cluster="ray", **settings)
    assert (ray_fid.a.n, ray_fid.b.n) == (6, 10)
    assert ray_fid.value == pytest.approx(local_fid.value, rel=1e-9)


def test_uri_of_a_folder_equals_the_folder(ray_instance, run, folder):
    pytest.importorskip("pyarrow")
    local, _ = run(folder)
    stats, side = run(folder.resolve().as_uri(), cluster="ray")
    _same(stats, local)
    assert side.kind == "folder"


def test_bad_files_are_skipped_and_counted_as_locally_or_named_with_their_node(ray_instance, run, tmp_path):
    root = tmp_path / "some-bad"
    root.mkdir()
    for index, pixels in enumerate(_images(9, seed=5)):
        (root / f"{index:03d}.png").write_bytes(_png(pixels))
    (root / "001.png").write_bytes(b"not a png")
    (root / "006.png").write_bytes(_png(_images(1, seed=6)[0])[:40])  # truncated
    local, local_side = run(root, skip_bad=True)
    stats, side = run(root, cluster="ray", skip_bad=True)
    _same(stats, local)
    assert side.n_skipped == local_side.n_skipped == 2
    assert side.skipped == local_side.skipped
    assert stats.metadata["n_skipped"] == local.metadata["n_skipped"] == 2
    assert stats.metadata["skipped_files"] == local.metadata["skipped_files"]

    with pytest.raises(ImageError) as raised:
        run(root, cluster="ray")
    message = str(raised.value)
    assert "2 of 9 image files" in message and "001.png" in message and "006.png" in message
    assert "node" in message and "--skip-bad" in message


def test_an_actor_killed_mid_run_is_retried_and_no_image_counts_twice(ray_instance, run, folder, tmp_path, monkeypatch):
    marker = tmp_path / "crashed-once"
    # The first attempt at shard 1 exits its actor process after its first batch (see fidkit.cluster.ray).
    monkeypatch.setenv("FIDKIT_RAY_TEST_CRASH", f"1:{marker}")
    stats, _ = run(folder, cluster="ray")
    assert marker.exists(), "the actor did not crash: the test proves nothing"
    _same(stats, run(folder)[0])


def test_a_ray_run_and_a_local_run_share_the_cache(ray_instance, run, tmp_path):
    images = np.random.default_rng(7).integers(0, 256, size=(9, 16, 16, 3), dtype=np.uint8)
    path = tmp_path / "cached.npy"
    np.save(path, images)
    stats, side = run(path, cluster="ray", use_cache=True)
    assert not side.cached
    again, local_side = run(path, use_cache=True)
    assert local_side.cached and again.metadata["cluster"] == "ray"
    np.testing.assert_array_equal(again.sigma, stats.sigma)


def test_iterables_and_custom_extractors_are_refused_clearly(ray_instance):
    from fidkit.api import compute_stats

    with pytest.raises(FidkitError, match="cluster='local'"):
        compute_stats(iter([np.zeros((2, 8, 8, 3), np.uint8)]), cluster="ray")

    class Own:
        feature_dim, batch_size = 2, 4

        def __call__(self, images):
            return np.zeros((len(images), 2), np.float32)

        def metadata(self):
            return {"weights_sha256": "own", "resize_mode": "none"}

    with pytest.raises(FidkitError, match="cluster='local' only"):
        compute_stats(np.zeros((2, 8, 8, 3), np.uint8), cluster="ray", extractor=Own(), use_cache=False)
    with pytest.raises(FidkitError, match="ray_address"):
        compute_stats(np.zeros((2, 8, 8, 3), np.uint8), ray_address="ray://x:1")


def test_without_ray_the_error_says_how_to_install_it(monkeypatch):
    from fidkit.cluster.ray import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" raises ImportError
    with pytest.raises(FidkitError, match=r'pip install "fidkit\[ray\]"'):
        import_ray()


def test_ctrl_c_stops_the_instance_fidkit_started_and_saves_nothing(ray_instance, random_weights_path, folder,
                                                                   tmp_path, monkeypatch, extractor):
    from fidkit.cli import main

    ray = ray_instance
    ray.shutdown()  # fidkit starts its own local instance in this test
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    waited = []

    def interrupted_wait(*args, **kwargs):
        waited.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(ray, "wait", interrupted_wait)
    out = tmp_path / "out.npz"
    try:
        code = main([
            "stats", str(folder), "--save", str(out), "--ray", "--weights", str(random_weights_path),
            "--device", "cpu", "--batch-size", str(BATCH), "--no-cache", "-q",
        ])
        assert code == 130 and waited
        assert not out.exists() and not list(tmp_path.glob("*.npz*"))
        assert not ray.is_initialized()
    finally:
        monkeypatch.undo()
        if not ray.is_initialized():
            ray.init(num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False, log_to_driver=False)


def test_an_unreachable_address_fails_at_once():
    pytest.importorskip("ray")
    from fidkit.cluster.connect import check_reachable as _check_reachable

    with pytest.raises(FidkitError, match="cannot reach the Ray cluster at 127.0.0.1:1"):
        _check_reachable("127.0.0.1:1")


def test_the_driver_merges_moments_of_large_shards_exactly_in_shard_order():
    """Past `dim` rows a shard's state is (n, mean, M2); the merge must equal one stream (no Ray needed)."""
    from types import SimpleNamespace

    from fidkit.cluster.ray import _merge, plan_shards
    from fidkit.stats import StatsAccumulator

    features = np.random.default_rng(8).normal(loc=3.0, size=(1000, 8)) * np.linspace(0.1, 10.0, 8)
    plan = plan_shards(len(features), 25, n_actors=2)
    assert len(plan) == 20 and plan[-1].stop == 1000  # 40 batches of 25: 20 shards of 2 batches
    results = {}
    for shard in reversed(plan):  # arrival order does not matter
        part = StatsAccumulator(dim=8)
        for start in range(shard.start, shard.stop, 25):
            part.update(features[start:start + 25])
        results[shard.index] = {"accumulator": part, "skipped": [], "n_good": part.n, "lossy": False,
                                "node": "n", "seconds": 0.0, "extractor_metadata": {"provider": "CPU"}}
    source = SimpleNamespace(name="features", n_images=1000, skipped=[])
    run = _merge(results, plan, source, SimpleNamespace(skip_bad=False), n_actors=2, wall_seconds=0.0, batch_size=4)
    one_stream = StatsAccumulator(dim=8)
    for start in range(0, 1000, 25):
        one_stream.update(features[start:start + 25])
    _same(run.accumulator.result(), one_stream.result())
    _same(run.accumulator.result(), __import__("fidkit").Stats.from_features(features))


def test_ray_refuses_what_its_actors_would_not_run(tmp_path, random_weights_path):
    # The actors run the onnxruntime graph in exact float32: a torch or fast request is refused before Ray
    # starts, rather than stored under a key that says otherwise.
    from fidkit.api import compute_stats
    from fidkit.errors import InputError

    images = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(InputError, match="cluster='ray' runs the onnxruntime network"):
        compute_stats(images, weights=random_weights_path, device="cpu", engine="torch", cluster="ray")


def test_features_are_sharded_and_gathered_whole(ray_instance, folder, random_weights_path, extractor):
    from fidkit.api import compute_features

    local = compute_features(folder, extractor=extractor, batch_size=BATCH, workers=0, use_cache=False)
    on_ray = compute_features(
        folder, weights=random_weights_path, device="cpu", batch_size=BATCH, cluster="ray", use_cache=False,
        progress=False,
    )
    assert on_ray.n == local.n == 11 and on_ray.metadata["cluster"] == "ray"
    # The same rows in the same order: the folder's, on either side (each shard puts the rows of its batches by
    # image size back in its members' order, and shards are joined in order).
    scale = float(np.abs(local.rows).max())
    assert float(np.abs(on_ray.rows - local.rows).max()) <= 1e-6 * scale


def test_logits_and_spatial_features_come_back_aligned_with_the_rows(ray_instance, folder, random_weights_path, extractor):
    # The metrics beyond FID on a cluster: every shard keeps the asked outputs of its own forward passes.
    from fidkit.api import compute_features

    outputs = ("features", "logits", "spatial")
    local = compute_features(folder, extractor=extractor, batch_size=BATCH, workers=0, use_cache=False, outputs=outputs)
    on_ray = compute_features(
        folder, weights=random_weights_path, device="cpu", batch_size=BATCH, cluster="ray", use_cache=False,
        progress=False, outputs=outputs,
    )
    assert on_ray.outputs == outputs and on_ray.logits.shape == (11, 1008) and on_ray.spatial.shape == (11, 2023)
    # Rows are in the folder's order on either side: every output agrees row by row.
    for name in outputs:
        mine, theirs = local.output(name), on_ray.output(name)
        assert float(np.abs(mine - theirs).max()) <= 1e-5 * float(np.abs(mine).max()), name


def test_subfolders_skipped_when_listed_are_reported_as_locally(ray_instance, run, tmp_path, monkeypatch):
    # Root cannot make a folder unreadable: the listing of one subfolder fails as a permission error would.
    import fidkit.sources.files as files

    root = tmp_path / "with-unreadable"
    for index, pixels in enumerate(_images(6, seed=7)):
        sub = root / ("locked" if index < 2 else "open")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{index:03d}.png").write_bytes(_png(pixels))
    real_scandir = os.scandir

    def scandir(path):
        if os.path.basename(os.fspath(path)) == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(files.os, "scandir", scandir)
    local, local_side = run(root, skip_bad=True)
    stats, side = run(root, cluster="ray", skip_bad=True)
    _same(stats, local)
    assert local_side.skipped[0][0] == "locked/"
    assert side.skipped == local_side.skipped
    assert stats.metadata["n_skipped"] == local.metadata["n_skipped"] == 1
