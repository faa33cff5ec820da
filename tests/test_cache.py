"""The statistics cache: keys, hits without the network, misses after any change, corrupt entries,
concurrent writers.

Images through the network are kept few and small (8 images of 16x16 per source): Inception runs at
about 10 images/s on this CPU whatever the input size, since every image is resized to 299x299.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import fidkit
from fidkit.api import compute_stats_with_report
from fidkit.cache import (
    cache_key,
    clear_cache,
    list_cache,
    load_cached_stats,
    stats_cache_dir,
    store_cached_stats,
)
from fidkit.cli import main
from fidkit.errors import InputError

from stand_ins import FullIdentityMeanColour, noise_images, small_stats

N_IMAGES = 8


class CountingWrapper:
    """Wraps a FeatureExtractor: counts calls and images, and can pretend to hold other weights."""

    def __init__(self, inner, *, weights_sha256: str | None = None, resize_mode: str | None = None):
        self._inner = inner
        self.calls = 0
        self.n_images = 0
        self.weights_sha256 = weights_sha256 or inner.weights_sha256
        self.resize_mode = resize_mode or inner.resize_mode

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __call__(self, images):
        self.calls += 1
        self.n_images += len(images)
        return self._inner(images)

    def metadata(self):
        metadata = dict(self._inner.metadata())
        metadata.update(weights_sha256=self.weights_sha256, resize_mode=self.resize_mode)
        return metadata


def write_png_folder(folder: Path, n_images: int = N_IMAGES, *, seed: int = 0, size: int = 16) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(n_images):
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{index:03d}.png")
    return folder


# --- keys ---------------------------------------------------------------------------------------


def test_cache_key_is_deterministic_and_changes_with_every_ingredient():
    base = dict(weights_sha256="a" * 64, resize_mode="tf1", stats_format_version=1)
    key = cache_key("f" * 64, **base)
    assert key == cache_key("f" * 64, **base)
    assert len(key) == 64 and int(key, 16) >= 0
    variants = {
        cache_key("e" * 64, **base),
        cache_key("f" * 64, **{**base, "weights_sha256": "b" * 64}),
        cache_key("f" * 64, **{**base, "resize_mode": "pil-bicubic"}),
        cache_key("f" * 64, **{**base, "stats_format_version": 2}),
    }
    assert key not in variants
    assert len(variants) == 4


def test_cache_key_defaults_to_the_current_format_version():
    from fidkit.statsfile import STATS_FORMAT_VERSION

    key = cache_key("f" * 64, weights_sha256="a" * 64, resize_mode="tf1")
    assert key == cache_key("f" * 64, weights_sha256="a" * 64, resize_mode="tf1", stats_format_version=STATS_FORMAT_VERSION)
    assert cache_key("f" * 64, weights_sha256="a" * 64, resize_mode="tf1", stats_format_version=STATS_FORMAT_VERSION + 1) != key


# --- storage ------------------------------------------------------------------------------------


def test_store_then_load_round_trips_and_records_the_key(fidkit_home):
    stats = small_stats()
    key = "1" * 64
    assert load_cached_stats(key) is None
    store_cached_stats(key, stats, source_name="dir/", source_kind="folder")
    assert "cache_key" not in stats.metadata  # the caller's object is not modified
    from fidkit.stats import Stats

    assert Stats.load(stats_cache_dir() / f"{key}.npz").metadata["cache_key"] == key  # the entry's file records it
    loaded = load_cached_stats(key)
    # ... and a hit does not hand it on: a caller saving the statistics makes a file, not a cache entry
    assert loaded is not None and "cache_key" not in loaded.metadata
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    assert loaded.n == stats.n == 20
    assert (stats_cache_dir() / f"{key}.npz").is_file()
    assert stats_cache_dir() == fidkit_home / "stats"


@pytest.mark.parametrize(
    "mu, n",
    [(np.array([np.nan, 0.0]), 5), (np.zeros(2), 1), (np.zeros(2), None)],
    ids=["nan-mu", "n-below-2", "n-missing"],
)
def test_entry_with_impossible_contents_is_not_trusted(fidkit_home, caplog, mu, n):
    """Refused by Stats.load (NaN, N < 2) or by the cache (no N): removed and reported as a miss."""
    import json

    key = "2" * 64
    entry = stats_cache_dir() / f"{key}.npz"
    entry.parent.mkdir(parents=True)
    extra = {} if n is None else {"n": np.array(n)}
    np.savez(entry, mu=mu, sigma=np.eye(2), fidkit_metadata_json=np.array(json.dumps({"cache_key": key})), **extra)
    with caplog.at_level(logging.WARNING, logger="fidkit.cache"):
        assert load_cached_stats(key) is None
    assert not entry.exists()
    assert "corrupt" in caplog.text


def test_a_cache_that_cannot_be_written_never_fails_the_run(tmp_path, caplog):
    """A read-only or broken cache folder is logged, not raised."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="fidkit.cache"):
        store_cached_stats("0" * 64, small_stats(), root=blocker / "stats")
    assert "could not write the statistics cache entry" in caplog.text


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a statistics file")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [_garbage, _truncate, _empty], ids=["garbage", "truncated", "empty"])
def test_corrupt_entry_is_removed_and_reported_as_a_miss(fidkit_home, caplog, damage):
    key = "2" * 64
    store_cached_stats(key, small_stats(), source_name="dir/")
    entry = stats_cache_dir() / f"{key}.npz"
    damage(entry)
    with caplog.at_level(logging.WARNING, logger="fidkit.cache"):
        assert load_cached_stats(key) is None
    assert not entry.exists()
    assert not entry.with_suffix(".json").exists()
    assert any("corrupt" in record.getMessage() and key in record.getMessage() for record in caplog.records)


def test_entry_stored_under_another_key_is_not_trusted(fidkit_home, caplog):
    right_key, wrong_key = "3" * 64, "4" * 64
    store_cached_stats(wrong_key, small_stats(), source_name="dir/")
    # An entry renamed (or copied by hand) to another key records the key it was made for.
    os.replace(stats_cache_dir() / f"{wrong_key}.npz", stats_cache_dir() / f"{right_key}.npz")
    with caplog.at_level(logging.WARNING, logger="fidkit.cache"):
        assert load_cached_stats(right_key) is None
    assert not (stats_cache_dir() / f"{right_key}.npz").exists()
    assert "records key" in caplog.text


def _store_many(home: str, key: str, seed: int, rounds: int) -> None:
    os.environ["FIDKIT_HOME"] = home
    for _ in range(rounds):
        store_cached_stats(key, small_stats(seed, dim=64, n=100), source_name=f"writer-{seed}")


def test_two_processes_writing_the_same_entry_leave_a_valid_one(fidkit_home, caplog):
    key = "5" * 64
    context = multiprocessing.get_context("spawn")
    writers = [
        context.Process(target=_store_many, args=(str(fidkit_home), key, seed, 15)) for seed in (1, 2)
    ]
    for writer in writers:
        writer.start()
    # Read while they write: every read is a miss or a valid entry, never a corrupt one.
    with caplog.at_level(logging.WARNING, logger="fidkit.cache"):
        while any(writer.is_alive() for writer in writers):
            loaded = load_cached_stats(key)
            if loaded is not None:
                assert loaded.n == 100
    assert "corrupt" not in caplog.text  # a reader never saw a half-written entry
    for writer in writers:
        writer.join(timeout=120)
        assert writer.exitcode == 0
    loaded = load_cached_stats(key)
    assert loaded is not None
    candidates = [small_stats(seed, dim=64, n=100) for seed in (1, 2)]
    assert any(np.array_equal(loaded.mu, candidate.mu) for candidate in candidates)
    # No temporary files are left behind.
    assert sorted(path.name for path in stats_cache_dir().iterdir()) == [f"{key}.json", f"{key}.npz"]


def test_list_and_clear(fidkit_home):
    assert list_cache() == []
    store_cached_stats("6" * 64, small_stats(1), source_name="a/", source_kind="folder")
    store_cached_stats("7" * 64, small_stats(2, n=30), source_name="b.zip", source_kind="archive")
    entries = {entry.source_name: entry for entry in list_cache()}
    assert set(entries) == {"a/", "b.zip"}
    assert entries["b.zip"].n == 30 and entries["b.zip"].source_kind == "archive"
    assert all(entry.size_bytes > 0 for entry in entries.values())
    (fidkit_home / "onnx").mkdir()
    graph = fidkit_home / "onnx" / "0123456789abcdef-1.onnx"  # graph_cache_path's name pattern
    graph.write_bytes(b"x" * 10)
    cleared = clear_cache()
    assert cleared.n_stats_entries == 2
    assert list_cache() == []
    assert graph.exists()  # models only with include_models
    cleared_all = clear_cache(include_models=True)
    assert list((fidkit_home / "onnx").iterdir()) == []  # emptied; folders are never removed
    assert cleared_all.bytes_freed == 10 and cleared_all.removed_paths == (graph,)


# --- through the API: hits skip the network, changes miss -------------------------------------------


@pytest.fixture
def image_folder(tmp_path):
    return write_png_folder(tmp_path / "images")


def test_second_compute_reads_the_cache_and_never_runs_the_network(fidkit_home, image_folder, extractor):
    from fidkit.api import compute_stats_with_report

    first_extractor = CountingWrapper(extractor)
    first, first_side = compute_stats_with_report(image_folder, extractor=first_extractor, workers=0)
    assert first_extractor.n_images == N_IMAGES and not first_side.cached
    second_extractor = CountingWrapper(extractor)
    second, second_side = compute_stats_with_report(image_folder, extractor=second_extractor, workers=0)
    assert second_extractor.calls == 0
    assert second_side.cached
    np.testing.assert_array_equal(second.mu, first.mu)
    np.testing.assert_array_equal(second.sigma, first.sigma)
    assert second.n == N_IMAGES


def test_cache_hit_does_not_even_build_the_extractor(
    fidkit_home, image_folder, extractor, random_weights_path, monkeypatch
):
    from fidkit.api import compute_stats
    from fidkit.testing import replaced_extractor

    assert extractor.weights_path.resolve() == Path(random_weights_path).resolve()
    reference = compute_stats(image_folder, extractor=extractor, workers=0)

    def refuse(options):
        raise AssertionError("the feature extractor was built on a cache hit")

    with replaced_extractor(refuse):
        again = compute_stats(image_folder, weights=random_weights_path, workers=0)
    np.testing.assert_array_equal(again.mu, reference.mu)


def test_changed_file_misses(fidkit_home, image_folder, extractor):
    from fidkit.api import compute_stats

    first = compute_stats(image_folder, extractor=extractor, workers=0)
    write_png_folder(image_folder, n_images=1, seed=99)  # rewrites img000.png with other pixels
    counting = CountingWrapper(extractor)
    second = compute_stats(image_folder, extractor=counting, workers=0)
    assert counting.n_images == N_IMAGES
    assert not np.array_equal(second.mu, first.mu)


def test_touched_file_misses(fidkit_home, image_folder, extractor):
    from fidkit.api import compute_stats

    compute_stats(image_folder, extractor=extractor, workers=0)
    target = image_folder / "img003.png"
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    counting = CountingWrapper(extractor)
    compute_stats(image_folder, extractor=counting, workers=0)
    assert counting.n_images == N_IMAGES
    # With a content hash the same touch is a hit after the first content-hashed run.
    compute_stats(image_folder, extractor=extractor, workers=0, hash_content=True)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 9_000_000_000))
    content_counting = CountingWrapper(extractor)
    compute_stats(image_folder, extractor=content_counting, workers=0, hash_content=True)
    assert content_counting.calls == 0


def test_a_file_rewritten_with_its_size_and_time_restored_misses(fidkit_home, tmp_path, extractor):
    # tar -x, unzip and cp -p set the modification time from the archive (Python's tarfile writes 1970 for every
    # member): samples extracted every epoch into a file of one size looked unchanged, and the first epoch's
    # statistics were served (hostile round 5). The status-change time, which no tool can set, is in the key.
    from fidkit.api import compute_stats_with_report

    path = tmp_path / "samples.npy"
    rng = np.random.default_rng(0)
    np.save(path, rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8))
    os.utime(path, ns=(0, 0))
    first, first_report = compute_stats_with_report(str(path), extractor=extractor)
    np.save(path, rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8))  # same size, other pixels
    os.utime(path, ns=(0, 0))
    second, second_report = compute_stats_with_report(str(path), extractor=extractor)
    assert not first_report.cached and not second_report.cached
    assert not np.array_equal(first.mu, second.mu)


def test_other_weights_miss(fidkit_home, image_folder, extractor):
    from fidkit.api import compute_stats

    compute_stats(image_folder, extractor=extractor, workers=0)
    other_weights = CountingWrapper(extractor, weights_sha256="0" * 64)
    stats = compute_stats(image_folder, extractor=other_weights, workers=0)
    assert other_weights.n_images == N_IMAGES
    assert stats.metadata["weights_sha256"] == "0" * 64
    other_resize = CountingWrapper(extractor, resize_mode="another-resize")
    compute_stats(image_folder, extractor=other_resize, workers=0)
    assert other_resize.n_images == N_IMAGES


def test_other_colour_policy_or_stats_format_misses(fidkit_home, image_folder, extractor, monkeypatch):
    import fidkit.sources.base
    import fidkit.statsfile
    from fidkit.api import compute_stats

    compute_stats(image_folder, extractor=extractor, workers=0)
    monkeypatch.setattr(fidkit.sources.base, "COLOUR_POLICY_VERSION", fidkit.sources.base.COLOUR_POLICY_VERSION + 100)
    policy_counting = CountingWrapper(extractor)
    compute_stats(image_folder, extractor=policy_counting, workers=0)
    assert policy_counting.n_images == N_IMAGES
    monkeypatch.setattr(fidkit.statsfile, "STATS_FORMAT_VERSION", fidkit.statsfile.STATS_FORMAT_VERSION + 100)
    format_counting = CountingWrapper(extractor)
    compute_stats(image_folder, extractor=format_counting, workers=0)
    assert format_counting.n_images == N_IMAGES


def test_no_cache_neither_reads_nor_writes(fidkit_home, image_folder, extractor):
    from fidkit.api import compute_stats

    compute_stats(image_folder, extractor=extractor, workers=0, use_cache=False)
    assert list_cache() == []
    compute_stats(image_folder, extractor=extractor, workers=0)
    counting = CountingWrapper(extractor)
    compute_stats(image_folder, extractor=counting, workers=0, use_cache=False)
    assert counting.n_images == N_IMAGES


def test_corrupt_entry_is_recomputed_through_the_api(fidkit_home, image_folder, extractor, caplog):
    from fidkit.api import compute_stats

    first = compute_stats(image_folder, extractor=extractor, workers=0)
    (entry,) = list_cache()
    _truncate(entry.path)
    counting = CountingWrapper(extractor)
    with caplog.at_level(logging.WARNING, logger="fidkit.cache"):
        second = compute_stats(image_folder, extractor=counting, workers=0)
    assert counting.n_images == N_IMAGES
    assert "corrupt" in caplog.text
    np.testing.assert_allclose(second.mu, first.mu, rtol=1e-12)
    # The entry was rewritten and is valid again.
    third_counting = CountingWrapper(extractor)
    compute_stats(image_folder, extractor=third_counting, workers=0)
    assert third_counting.calls == 0


def test_two_threads_computing_the_same_entry(fidkit_home, image_folder, extractor):
    from fidkit.api import compute_stats

    results = {}
    errors = []
    barrier = threading.Barrier(2)

    def worker(index: int) -> None:
        try:
            barrier.wait()
            results[index] = compute_stats(image_folder, extractor=extractor, workers=0)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    np.testing.assert_allclose(results[0].mu, results[1].mu, rtol=1e-12)
    (entry,) = list_cache()
    assert entry.n == N_IMAGES
    counting = CountingWrapper(extractor)
    compute_stats(image_folder, extractor=counting, workers=0)
    assert counting.calls == 0


def test_the_key_names_what_really_ran_and_tensorrt_is_kept_apart(fidkit_home, extractor, random_weights_path, monkeypatch):
    # engine="auto" expects onnxruntime; where the torch engine runs instead (a GPU only torch can use), the
    # statistics go under the torch identity, and the next run finds them there without computing again.
    from fidkit.api import compute_stats_with_report
    from fidkit.extractors import identity_for
    from fidkit.options import RunOptions
    from fidkit.testing import replaced_extractor

    class AsTorch(CountingWrapper):
        graph_sha256 = ""

        def metadata(self):
            return {**super().metadata(), "engine": "torch", "graph_sha256": ""}

    built = []
    images = np.random.default_rng(8).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    with replaced_extractor(lambda options: built.append(AsTorch(extractor)) or built[-1]):
        first, first_side = compute_stats_with_report(images, weights=random_weights_path, device="cpu", workers=0)
        assert not first_side.cached and first.metadata["engine"] == "torch" and built[0].n_images == 6
        again, again_side = compute_stats_with_report(images, weights=random_weights_path, device="cpu", workers=0)
    assert again_side.cached and built[1].n_images == 0
    onnx = identity_for(RunOptions(weights=random_weights_path, device="cpu"))
    tensorrt = identity_for(RunOptions(weights=random_weights_path, device="tensorrt"))
    assert onnx.engine == "onnxruntime" and onnx.precision == "exact" and tensorrt.precision == "tensorrt-exact"


# --- hostile review (issue 9), 15: the cache stays under a size limit, least recently used out first ----------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 2 * 1024**3), ("unlimited", 0), ("1048576", 1024**2), ("500M", 500 * 1024**2), ("2G", 2 * 1024**3),
     ("1.5k", 1536), ("64MiB", 64 * 1024**2)],  # "0" and "lots" are errors: tested below
)
def test_cache_size_limit_from_the_environment(monkeypatch, text, expected):
    from fidkit.cache import cache_max_bytes

    monkeypatch.setenv("FIDKIT_CACHE_MAX_BYTES", text)
    assert cache_max_bytes() == expected


def test_cache_evicts_the_least_recently_used_entries_after_a_store(home, monkeypatch):
    from fidkit.cache import (
        cache_size_bytes,
        load_cached_stats,
        stats_cache_dir,
        store_cached_stats,
    )

    keys = [str(digit) * 64 for digit in range(1, 5)]
    store_cached_stats(keys[0], small_stats(0), source_name="s0")
    entry_bytes = cache_size_bytes()
    for index, key in enumerate(keys[1:3], start=1):
        store_cached_stats(key, small_stats(index), source_name=f"s{index}")
    folder = stats_cache_dir()
    for age, key in zip((300, 200, 100), keys[:3]):  # written 5, 3 and 1 minutes ago: key 0 is the oldest
        os.utime(folder / f"{key}.npz", (time.time() - age, time.time() - age))
    assert load_cached_stats(keys[0]) is not None  # a hit makes key 0 the most recently used
    user_file = folder / ("e" * 64 + ".npz")  # named like an entry, but fidkit did not write it
    small_stats(9).save(user_file)
    os.utime(user_file, (0, 0))
    monkeypatch.setenv("FIDKIT_CACHE_MAX_BYTES", str(int(3.5 * entry_bytes) + user_file.stat().st_size))
    store_cached_stats(keys[3], small_stats(3), source_name="s3")
    present = {path.stem for path in folder.glob("*.npz")}
    assert present == {keys[0], keys[2], keys[3], "e" * 64}  # key 1, least recently used, went
    assert not (folder / f"{keys[1]}.json").exists()


def test_cache_never_evicts_the_entry_just_written(home, monkeypatch):
    from fidkit.cache import list_cache, store_cached_stats

    store_cached_stats("1" * 64, small_stats(1))
    monkeypatch.setenv("FIDKIT_CACHE_MAX_BYTES", "1")
    store_cached_stats("2" * 64, small_stats(2))
    assert [entry.key for entry in list_cache()] == ["2" * 64]


def test_cache_list_shows_the_total_and_the_limit(home, monkeypatch, capsys):
    from fidkit.cache import cache_size_bytes, store_cached_stats

    monkeypatch.setenv("FIDKIT_CACHE_MAX_BYTES", "500M")
    store_cached_stats("1" * 64, small_stats(1), source_name="a/", source_kind="folder")
    assert main(["cache", "list"]) == 0
    assert "1 entries" in (out := capsys.readouterr().out) and "limit 500.0 MiB" in out
    assert main(["cache", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["max_bytes"] == 500 * 1024**2 and listing["total_bytes"] == cache_size_bytes() > 0


# --- hostile round 3, 28: warnings name the user's source; cache list shows where each source is --------------------


def test_cache_list_tells_apart_two_folders_with_the_same_name(fidkit_home, tmp_path, monkeypatch, capsys):
    from fidkit.cache import list_cache, store_cached_stats
    from fidkit.cli import main

    for index, parent in enumerate(("one", "two")):
        (tmp_path / parent / "real").mkdir(parents=True)
        monkeypatch.chdir(tmp_path / parent)
        store_cached_stats(str(index + 1) * 64, small_stats(index), source_name="real", source_kind="folder")
    by_key = {entry.key: entry for entry in list_cache()}
    assert by_key["1" * 64].source == str((tmp_path / "one" / "real").resolve())
    assert by_key["2" * 64].source == str((tmp_path / "two" / "real").resolve())
    assert by_key["1" * 64].source_name == "real"  # the name as typed is still recorded
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert f"{(tmp_path / 'one' / 'real').resolve()} (folder)" in out
    assert f"{(tmp_path / 'two' / 'real').resolve()} (folder)" in out
    assert main(["cache", "list", "--json"]) == 0
    listed = {entry["key"]: entry for entry in json.loads(capsys.readouterr().out)["entries"]}
    assert listed["2" * 64]["source_path"] == str((tmp_path / "two" / "real").resolve())


def test_a_dataset_name_or_uri_is_listed_as_given(fidkit_home, tmp_path, monkeypatch):
    from fidkit.cache import list_cache, store_cached_stats

    monkeypatch.chdir(tmp_path)
    store_cached_stats("1" * 64, small_stats(), source_name="cifar10-train", source_kind="cifar")
    store_cached_stats("2" * 64, small_stats(1), source_name="s3://bucket/real", source_kind="folder")
    assert sorted(entry.source for entry in list_cache()) == ["cifar10-train", "s3://bucket/real"]


def test_a_corrupt_entry_warning_names_the_source_not_only_the_cache_file(fidkit_home, caplog):
    from fidkit.cache import load_cached_stats, stats_cache_dir, store_cached_stats

    key = "3" * 64
    store_cached_stats(key, small_stats(), source_name="my-images/")
    (stats_cache_dir() / f"{key}.npz").write_bytes(b"not a statistics file")
    with caplog.at_level("WARNING", logger="fidkit.cache"):
        assert load_cached_stats(key, source_name="my-images/") is None
    (message,) = [record.getMessage() for record in caplog.records]
    assert message.startswith("my-images/: ") and "corrupt" in message
    assert "pass the image folder" not in message  # advice for a statistics file the user gave, not for the cache


# --- hostile round 3, 19: a read-only cache never fails a run; a linked stats/ folder; limits below one byte --------


@pytest.fixture
def read_only_stats(fidkit_home, monkeypatch):
    """The statistics folder refuses every change, as a read-only cache does (root ignores file modes)."""
    import tempfile

    from fidkit.cache import stats_cache_dir

    folder = stats_cache_dir()
    real_unlink, real_mkstemp = Path.unlink, tempfile.mkstemp

    def unlink(self, missing_ok=False):
        if Path(self).parent == folder:
            raise PermissionError(13, "Permission denied", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    def mkstemp(*args, **kwargs):
        if Path(kwargs.get("dir", "")) == folder:
            raise PermissionError(13, "Permission denied", str(folder))
        return real_mkstemp(*args, **kwargs)

    def turn_on() -> None:
        monkeypatch.setattr(Path, "unlink", unlink)
        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)

    return turn_on


def test_a_corrupt_entry_in_a_read_only_cache_is_a_miss_with_one_warning(fidkit_home, read_only_stats, caplog):
    from fidkit.cache import load_cached_stats, stats_cache_dir, store_cached_stats

    key = "4" * 64
    store_cached_stats(key, small_stats(), source_name="real/")
    entry = stats_cache_dir() / f"{key}.npz"
    entry.write_bytes(b"garbage")
    read_only_stats()
    with caplog.at_level("WARNING", logger="fidkit"):
        for _ in range(3):  # three runs in one process (or both sides of a comparison): one warning
            assert load_cached_stats(key, source_name="real/") is None
            store_cached_stats(key, small_stats(), source_name="real/")  # the run's store: refused too, not raised
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("real/: ") and "Permission denied" in warnings[0] and str(entry) in warnings[0]
    assert entry.read_bytes() == b"garbage"  # nothing could be changed, and nothing failed


def test_an_unwritable_cache_warning_names_the_source_and_the_fix(tmp_path, caplog):
    from fidkit.cache import store_cached_stats

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level("WARNING", logger="fidkit.cache"):
        store_cached_stats("5" * 64, small_stats(), source_name="samples.zip", root=blocker / "stats")
    (message,) = [record.getMessage() for record in caplog.records]
    assert message.startswith("samples.zip: the statistics are not cached") and "--no-cache" in message
    assert "choose a path" not in message  # the advice for --save, which the user did not give


def test_a_linked_stats_folder_is_followed_by_store_list_eviction_and_clear(fidkit_home, tmp_path, monkeypatch,
                                                                            capsys):
    from fidkit.cache import clear_cache, list_cache, load_cached_stats, store_cached_stats
    from fidkit.cli import main

    elsewhere = tmp_path / "bigger-disk" / "fidkit-stats"
    elsewhere.mkdir(parents=True)
    fidkit_home.mkdir()
    (fidkit_home / "stats").symlink_to(elsewhere, target_is_directory=True)
    keys = [str(digit) * 64 for digit in range(1, 4)]
    for age, key in zip((300, 200, 100), keys):
        store_cached_stats(key, small_stats(int(key[0])), source_name=f"s{key[0]}")
        os.utime(elsewhere / f"{key}.npz", (time.time() - age, time.time() - age))
    assert sorted(path.name for path in elsewhere.glob("*.npz")) == [f"{key}.npz" for key in keys]
    assert {entry.key for entry in list_cache()} == set(keys)
    assert main(["cache", "list"]) == 0
    assert "3 entries" in (out := capsys.readouterr().out) and f"a link to {elsewhere.resolve()}" in out
    # The size limit runs there too: one entry's worth leaves the newest (the one just written) only.
    monkeypatch.setenv("FIDKIT_CACHE_MAX_BYTES", "1")
    store_cached_stats("9" * 64, small_stats(9), source_name="s9")
    assert [path.name for path in elsewhere.glob("*.npz")] == ["9" * 64 + ".npz"]
    assert load_cached_stats("9" * 64) is not None
    cleared = clear_cache()
    assert cleared.n_stats_entries == 1 and list(elsewhere.iterdir()) == []
    assert (fidkit_home / "stats").is_symlink() and elsewhere.is_dir()  # the link and its folder stay


def test_a_stats_link_to_nowhere_is_named_by_cache_clear(fidkit_home, tmp_path):
    from fidkit.cache import clear_cache, list_cache

    fidkit_home.mkdir()
    (fidkit_home / "stats").symlink_to(tmp_path / "gone")
    assert list_cache() == []
    cleared = clear_cache()
    assert [(path, "not a folder" in reason) for path, reason in cleared.kept] == [(fidkit_home / "stats", True)]


@pytest.mark.parametrize("text", ["0", "0.5", ".4", "-1", "-0", "-2G", "lots", "1e9"])
def test_a_cache_limit_below_one_byte_or_not_a_size_is_an_error(fidkit_home, monkeypatch, text):
    from fidkit.cache import cache_max_bytes, load_cached_stats

    monkeypatch.setenv("FIDKIT_CACHE_MAX_BYTES", text)
    with pytest.raises(InputError, match=f"FIDKIT_CACHE_MAX_BYTES='{text}'.*'unlimited' for no limit"):
        cache_max_bytes()
    # Checked at the lookup, before anything is computed, not after the run when its result is stored.
    with pytest.raises(InputError, match="FIDKIT_CACHE_MAX_BYTES"):
        load_cached_stats("1" * 64)


def test_an_unlimited_cache_and_small_limits(monkeypatch):
    from fidkit.cache import cache_max_bytes

    for text, expected in (("unlimited", 0), ("UNLIMITED", 0), ("1", 1), ("1.5", 1), ("0.5k", 512), ("+2k", 2048)):
        monkeypatch.setenv("FIDKIT_CACHE_MAX_BYTES", text)
        assert cache_max_bytes() == expected, text


def test_a_cache_limit_error_on_the_command_line_is_one_line(fidkit_home, monkeypatch, capsys):
    from fidkit.cli import main

    monkeypatch.setenv("FIDKIT_CACHE_MAX_BYTES", "0")
    assert main(["cache", "list"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fidkit: error: FIDKIT_CACHE_MAX_BYTES='0' is less than one byte")


# --- hostile round 4: a cache limit too large for a float -----------------------------------------------------------


def test_a_cache_limit_too_large_for_a_float_is_an_error(monkeypatch) -> None:
    from fidkit.cache import cache_max_bytes

    monkeypatch.setenv("FIDKIT_CACHE_MAX_BYTES", "9" * 400)
    with pytest.raises(InputError, match="too large to be a size"):
        cache_max_bytes()


# --- hostile round 5: statistics from the cache name the user's source, not the entry -------------------------------


def test_statistics_from_the_cache_do_not_name_the_cache_file(tmp_path, monkeypatch):
    # Messages about them would name a hashed file the user never gave (.../stats/<sha256>.npz).
    monkeypatch.setenv("FIDKIT_HOME", str(tmp_path / "home"))
    array = noise_images(12, 8)
    first, first_report = compute_stats_with_report(array, extractor=FullIdentityMeanColour())
    again, again_report = compute_stats_with_report(array, extractor=FullIdentityMeanColour())
    assert again_report.cached and not first_report.cached
    assert first.path is None and again.path is None


def test_statistics_served_from_an_entry_another_source_made_name_this_source(tmp_path, monkeypatch):
    # With hash_content, a copy of a folder hits the original's entry: a file saved from it recorded the other
    # folder as its source (and `fidkit info` showed it).
    import shutil

    from PIL import Image

    monkeypatch.setenv("FIDKIT_HOME", str(tmp_path / "home"))
    original = tmp_path / "png"
    original.mkdir()
    for index, array in enumerate(noise_images(6, 2)):
        Image.fromarray(array).save(original / f"{index}.png")
    copy_of_it = tmp_path / "pngcopy"
    shutil.copytree(original, copy_of_it)
    (original / ".ipynb_checkpoints").mkdir()  # ignored in the original only: not the copy's to report
    Image.fromarray(noise_images(1, 3)[0]).save(original / ".ipynb_checkpoints" / "0.png")
    fidkit.compute_stats(str(original), extractor=FullIdentityMeanColour(), hash_content=True, workers=0)
    stats, report = compute_stats_with_report(str(copy_of_it), extractor=FullIdentityMeanColour(), hash_content=True, workers=0)
    assert report.cached and report.ignored == ()
    assert stats.metadata["source_name"] == str(copy_of_it) and stats.path is None


# --- hostile round 7: sidecars killed, FIFOs and folders at an entry's names ------------------------------------------


def _features(seed: int = 0, n: int = 13, dim: int = 6):
    from fidkit.features import Features

    rows = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return Features(rows, metadata={"created": "2026-01-02T03:04:05+00:00", "source_name": "gen",
                                    "source_kind": "folder"})


@pytest.mark.parametrize("content", ["features", "stats"])
def test_an_entry_whose_sidecar_was_never_written_is_listed_as_what_it_holds_and_repaired_on_a_hit(
    fidkit_home, tmp_path, content
) -> None:
    from fidkit.cache import load_cached_features, store_cached_features

    key = ("e" if content == "features" else "f") * 64
    source = tmp_path / "gen"
    source.mkdir()
    if content == "features":
        store_cached_features(key, _features(n=13), source_name=str(source), source_kind="folder")
        load = load_cached_features
    else:
        store_cached_stats(key, small_stats(n=13, metadata={"created": "now", "source_kind": "folder"}),
                           source_name=str(source), source_kind="folder")
        load = load_cached_stats
    sidecar = stats_cache_dir() / f"{key}.json"
    sidecar.unlink()  # what a SIGKILL between the entry's write and its sidecar's leaves
    (entry,) = list_cache()
    assert (entry.content, entry.n, entry.source_kind) == (content, 13, "folder")
    assert "unreadable" not in entry.source_name
    assert load(key, source_name=str(source)) is not None  # a hit writes the missing sidecar again
    recorded = json.loads(sidecar.read_text(encoding="utf-8"))
    assert (recorded["key"], recorded["content"], recorded["n"]) == (key, content, 13)
    (entry,) = list_cache()
    assert (entry.content, entry.n, entry.source) == (content, 13, str(source))


def test_a_fifo_at_a_sidecar_name_is_never_opened_by_cache_list(fidkit_home, capsys) -> None:
    key = "9" * 64
    store_cached_stats(key, small_stats(n=17), source_name="real/", source_kind="folder")
    sidecar = stats_cache_dir() / f"{key}.json"
    sidecar.unlink()
    os.mkfifo(sidecar)
    listed: list = []
    worker = threading.Thread(target=lambda: listed.append(main(["cache", "list", "--json"])), daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():  # blocked opening the FIFO: let it go (a writer that closes at once), then fail
        os.close(os.open(sidecar, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=20)
        pytest.fail("cache list opened the FIFO at the sidecar's name and waited for a writer")
    assert listed == [0]
    (entry,) = json.loads(capsys.readouterr().out)["entries"]
    assert entry["n"] == 17 and entry["content"] == "stats"
    assert load_cached_stats(key) is not None  # a hit leaves what is at the sidecar's name alone
    assert stat_kind(sidecar) == "fifo"


def stat_kind(path: Path) -> str:
    import stat

    mode = path.lstat().st_mode
    return "fifo" if stat.S_ISFIFO(mode) else "dir" if stat.S_ISDIR(mode) else "file"


@pytest.mark.parametrize("where", ["entry", "sidecar"])
def test_a_folder_or_fifo_at_an_entry_name_is_named_with_the_fix_not_permissions(
    fidkit_home, caplog, where
) -> None:
    key = ("b" if where == "entry" else "c") * 64
    folder = stats_cache_dir()
    folder.mkdir(parents=True)
    blocker = folder / f"{key}.{'npz' if where == 'entry' else 'json'}"
    blocker.mkdir() if where == "entry" else os.mkfifo(blocker)
    with caplog.at_level("WARNING", logger="fidkit.cache"):
        store_cached_stats(key, small_stats(), source_name="samples/", source_kind="folder")
    (message,) = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert message.startswith("samples/: the statistics are not cached")
    assert f"remove {blocker} (fidkit did not write it and never deletes it), or pass --no-cache" in message
    assert "writable" not in message
    assert stat_kind(blocker) == ("dir" if where == "entry" else "fifo")  # left alone


# --- round 8: a cache hit gives the outputs asked for, not every output its entry holds -----------------------------


class MeanColourAndOutputs(FullIdentityMeanColour):
    """:class:`FullIdentityMeanColour` that also gives logits (7 classes) and spatial features (4), as the
    Inception does from the same forward pass."""

    def outputs(self, batch, names):
        rows = self(batch)
        given = {"features": rows}
        if "logits" in names:
            given["logits"] = np.concatenate([rows, rows[:, :1] ** 2], axis=1) / 50.0
        if "spatial" in names:
            given["spatial"] = rows[:, :4] * 2.0
        return given


@pytest.mark.parametrize("n_images", [5, 13])
def test_a_cache_hit_gives_the_outputs_asked_for_whatever_its_entry_holds(fidkit_home, n_images):
    extractor = MeanColourAndOutputs()
    images = noise_images(n_images, 3)
    everything = fidkit.compute_features(images, extractor=extractor, outputs="logits,spatial")
    assert everything.outputs == ("features", "logits", "spatial")
    for asked, expected in (("features", ("features",)), ("logits", ("features", "logits")),
                            (("spatial",), ("features", "spatial"))):
        calls = len(extractor.calls)
        served = fidkit.compute_features(images, extractor=extractor, outputs=asked)
        assert len(extractor.calls) == calls  # from the cache
        fresh = fidkit.compute_features(images, extractor=extractor, outputs=asked, use_cache=False)
        assert served.outputs == fresh.outputs == expected, asked
        for name in expected:
            np.testing.assert_array_equal(served.output(name), fresh.output(name))
    # The entry itself kept its superset: every output is still served without the network.
    before = len(extractor.calls)
    assert fidkit.compute_features(images, extractor=extractor, outputs="logits,spatial").outputs == everything.outputs
    assert len(extractor.calls) == before


def test_a_recomputed_superset_is_cached_but_the_caller_gets_what_it_asked_for(fidkit_home):
    extractor = MeanColourAndOutputs()
    images = noise_images(9, 4)
    assert fidkit.compute_features(images, extractor=extractor, outputs="logits").outputs == ("features", "logits")
    # The entry lacks the spatial features: computed again with the logits too (for the entry), given without them.
    spatial = fidkit.compute_features(images, extractor=extractor, outputs="spatial")
    assert spatial.outputs == ("features", "spatial")
    before = len(extractor.calls)
    both = fidkit.compute_features(images, extractor=extractor, outputs="logits,spatial")
    assert both.outputs == ("features", "logits", "spatial") and len(extractor.calls) == before


def test_logits_cached_for_one_run_add_no_inception_score_of_the_reference_to_another(fidkit_home):
    extractor = MeanColourAndOutputs()
    generated, reference = noise_images(30, 5), noise_images(8, 6)
    kwargs = dict(extractor=extractor, metrics="sfid,is", allow_weights_mismatch=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cold = fidkit.compute_fid(generated, reference, **kwargs)
        assert cold.metrics.keys() == ("fid", "is_a", "sfid")
        # Another run keeps the reference's logits in its cache entry (fidkit features b8.npy --metrics is) ...
        fidkit.compute_features(reference, extractor=extractor, outputs="logits,spatial")
        # ... which neither adds an IS (b) row nor makes the 8 reference images too few for one.
        warm = fidkit.compute_fid(generated, reference, **kwargs)
        uncached = fidkit.compute_fid(generated, reference, use_cache=False, **kwargs)
    assert warm.metrics.keys() == uncached.metrics.keys() == ("fid", "is_a", "sfid")
    assert warm.metrics["is_a"].value == uncached.metrics["is_a"].value
