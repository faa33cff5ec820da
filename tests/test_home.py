"""fidkit.home: how fidkit recognises its own files in the cache home, and clear_cache removing only those.

The released weights (95 MB) and the dataset files cannot be built here: small stand-ins take their place in
the weights manifest and the dataset registry, with their true checksums, so recognition by size and checksum
is exercised for real.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from fidkit.cache import store_cached_stats
from fidkit.cli import main
from fidkit.home import CACHE_KEY_METADATA, ClearedCache, clear_cache, entry_files, is_cache_entry
from fidkit.stats import Stats

KEY_A = "a" * 64
KEY_B = "0123456789abcdef" * 4


def small_stats(seed: int = 0, *, n: int = 20, dim: int = 4, metadata=None) -> Stats:
    features = np.random.default_rng(seed).normal(size=(n, dim))
    return Stats.from_features(features, metadata=dict(metadata or {}))


def stats_dir(home: Path) -> Path:
    return home / "stats"


@dataclasses.dataclass
class FakeDownloads:
    weights_name: str
    weights_bytes: bytes
    dataset_name: str
    dataset_bytes: bytes


def replace_downloads(monkeypatch) -> FakeDownloads:
    """The weights manifest and one dataset file replaced by small files of known checksums."""
    import fidkit.inception.weights as weights_module
    from fidkit.sources import named

    weights_bytes = bytes(range(256)) * 3
    manifest = dataclasses.replace(
        weights_module.load_manifest(), size=len(weights_bytes), sha256=hashlib.sha256(weights_bytes).hexdigest()
    )
    monkeypatch.setattr(weights_module, "load_manifest", lambda path=None: manifest)
    dataset_bytes = b"\x1f\x8b" + bytes(range(200))
    dataset = named.DATASETS["mnist-test"]
    file = dataclasses.replace(dataset.file, size=len(dataset_bytes), md5=hashlib.md5(dataset_bytes).hexdigest())
    monkeypatch.setitem(named.DATASETS, "mnist-test", dataclasses.replace(dataset, file=file))
    return FakeDownloads(manifest.file_name, weights_bytes, file.file_name, dataset_bytes)


@pytest.fixture
def fake_downloads(monkeypatch) -> FakeDownloads:
    """:func:`replace_downloads` for one test."""
    return replace_downloads(monkeypatch)


def write(path: Path, payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def kept_reasons(cleared: ClearedCache) -> dict[Path, str]:
    return {path: reason for path, reason in cleared.kept}


# --- is_cache_entry and entry_files ------------------------------------------------------------------------


def test_a_stored_entry_is_recognised_by_its_name_and_the_key_it_records(fidkit_home):
    store_cached_stats(KEY_A, small_stats(), source_name="a/", source_kind="folder")
    entry = stats_dir(fidkit_home) / f"{KEY_A}.npz"
    assert is_cache_entry(entry) and is_cache_entry(str(entry))
    assert Stats.load(entry).metadata[CACHE_KEY_METADATA] == KEY_A

    # The same bytes under another key's name record the wrong key: not fidkit's entry for that name.
    other_name = shutil.copyfile(entry, stats_dir(fidkit_home) / f"{KEY_B}.npz")
    assert not is_cache_entry(other_name)
    # Statistics saved by a user (no recorded key) under an entry's name.
    users = stats_dir(fidkit_home) / f"{'c' * 64}.npz"
    small_stats(1).save(users)
    assert not is_cache_entry(users)
    # A file that is not a statistics file at all, or not an .npz, or not 64 lowercase hex.
    assert not is_cache_entry(write(stats_dir(fidkit_home) / f"{'d' * 64}.npz", b"not a zip"))
    assert not is_cache_entry(shutil.copyfile(entry, fidkit_home / f"{KEY_A.upper()}.npz"))
    assert not is_cache_entry(shutil.copyfile(entry, fidkit_home / f"{KEY_A[:63]}.npz"))
    assert not is_cache_entry(stats_dir(fidkit_home) / f"{'e' * 64}.npz")  # missing


def test_a_link_to_an_entry_is_not_an_entry(fidkit_home, tmp_path):
    store_cached_stats(KEY_A, small_stats(), source_name="a/", source_kind="folder")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = elsewhere / f"{KEY_A}.npz"
    link.symlink_to(stats_dir(fidkit_home) / f"{KEY_A}.npz")
    assert not is_cache_entry(link)  # never followed out of (or into) the cache


def test_entry_files_lists_every_entry_shaped_file_with_its_sidecar_size(fidkit_home, tmp_path):
    store_cached_stats(KEY_A, small_stats(), source_name="a/", source_kind="folder")
    folder = stats_dir(fidkit_home)
    entry, sidecar = folder / f"{KEY_A}.npz", folder / f"{KEY_A}.json"
    assert sidecar.is_file()
    foreign = write(folder / f"{KEY_B}.npz", b"12345")  # named like one: listed (eviction checks it later)
    write(folder / "notes.txt", b"x")
    write(folder / f"{'f' * 64}.json", b"{}")  # a sidecar alone is no entry
    (folder / f"{'9' * 64}.npz").symlink_to(entry)
    found = {path: size for path, size, _ in entry_files(folder)}
    assert found == {entry: entry.stat().st_size + sidecar.stat().st_size, foreign: 5}
    assert all(isinstance(mtime, float) for _, _, mtime in entry_files(folder))
    assert entry_files(tmp_path / "no such folder") == []


# --- clear_cache: statistics ---------------------------------------------------------------------------------


def test_clearing_removes_recognised_entries_and_their_sidecars_and_lists_what_it_kept(fidkit_home):
    folder = stats_dir(fidkit_home)
    store_cached_stats(KEY_A, small_stats(1), source_name="a/", source_kind="folder")
    store_cached_stats(KEY_B, small_stats(2), source_name="b/", source_kind="folder")
    removable = [folder / f"{key}{suffix}" for key in (KEY_A, KEY_B) for suffix in (".npz", ".json")]
    # A sidecar left alone by an interrupted run, recording its own key: fidkit's, removed.
    orphan = write(folder / f"{'1' * 64}.json", f'{{"key": "{"1" * 64}"}}'.encode())
    removable.append(orphan)
    sizes = sum(path.stat().st_size for path in removable)
    # Kept: a user's statistics under an entry's name (and the sidecar beside it), a sidecar recording
    # another key, a user's file, a user's folder, and a user's file at the top of the home.
    users_entry = folder / f"{'c' * 64}.npz"
    small_stats(3).save(users_entry)
    users_sidecar = write(folder / f"{'c' * 64}.json", b'{"key": "' + b"c" * 64 + b'"}')
    wrong_sidecar = write(folder / f"{'2' * 64}.json", b'{"key": "something else"}')
    notes = write(folder / "notes.txt", b"mine")
    subfolder = folder / "old"
    subfolder.mkdir()
    top = write(fidkit_home / "README.md", b"mine")

    cleared = clear_cache()

    assert cleared.n_stats_entries == 2
    assert set(cleared.removed_paths) == set(removable)
    assert cleared.bytes_freed == sizes
    assert not any(path.exists() for path in removable)
    reasons = kept_reasons(cleared)
    assert reasons[users_entry] == "named like a cache entry but does not record that key: not written by fidkit"
    assert reasons[wrong_sidecar] == reasons[notes] == reasons[subfolder] == "not a statistics cache entry"
    assert reasons[top] == "not a folder fidkit writes"
    assert reasons[users_sidecar] == f"the sidecar of {users_entry.name}, which is kept" and users_sidecar.exists()
    assert all(path.exists() for path in reasons)
    assert folder.is_dir()  # not empty: kept


def test_clearing_keeps_the_emptied_stats_folder_and_leaves_the_models_alone(fidkit_home):
    store_cached_stats(KEY_A, small_stats(), source_name="a/", source_kind="folder")
    graph = write(fidkit_home / "onnx" / "0123456789abcdef-1.onnx", b"graph")
    cleared = clear_cache()
    assert cleared.n_stats_entries == 1
    assert stats_dir(fidkit_home) not in cleared.removed_paths and list(stats_dir(fidkit_home).iterdir()) == []
    assert graph.exists() and cleared.kept == ()


def test_clearing_an_absent_home_or_another_home(fidkit_home, tmp_path):
    assert clear_cache() == ClearedCache(n_stats_entries=0, removed_paths=(), bytes_freed=0, kept=())
    other = tmp_path / "other-home"
    store_cached_stats(KEY_A, small_stats(), root=other / "stats")
    store_cached_stats(KEY_B, small_stats())  # in FIDKIT_HOME
    cleared = clear_cache(home=other)
    assert cleared.n_stats_entries == 1 and list((other / "stats").iterdir()) == []
    assert (stats_dir(fidkit_home) / f"{KEY_B}.npz").exists()  # the home of this process is untouched


def test_a_stats_folder_that_is_a_link_is_followed_and_the_link_kept(fidkit_home, tmp_path):
    # The policy of docs/usage.md: a home folder that is a link to a folder is used through it (store, read,
    # the size limit, list and clear); the link itself is never removed.
    target = tmp_path / "somewhere"
    store_cached_stats(KEY_A, small_stats(), root=target)
    fidkit_home.mkdir()
    stats_dir(fidkit_home).symlink_to(target, target_is_directory=True)
    cleared = clear_cache()
    assert cleared.n_stats_entries == 1 and not (target / f"{KEY_A}.npz").exists()
    assert stats_dir(fidkit_home).is_symlink() and target.is_dir()


def _stale_temporary(folder: Path, name: str, payload: bytes) -> Path:
    """A temporary file of an interrupted write, in the older name form, last modified two hours ago."""
    path = write(folder / f".{name}.abcd1234.tmp{Path(name).suffix}", payload)
    old = time.time() - 7200
    os.utime(path, (old, old))
    return path


def test_stale_temporaries_of_killed_runs_are_removed_and_fresh_ones_kept(fidkit_home):
    folder = stats_dir(fidkit_home)
    stale = _stale_temporary(folder, f"{KEY_A}.npz", b"half an entry")
    fresh = write(folder / f".{KEY_B}.npz.efgh5678.tmp.npz", b"being written")
    cleared = clear_cache()
    assert not stale.exists() and stale in cleared.removed_paths
    assert fresh.exists()
    assert kept_reasons(cleared)[fresh] == (
        "a temporary file of a fidkit run in progress (removed once that run is gone)"
    )


def test_bytes_freed_counts_the_stale_temporaries_removed(fidkit_home):
    payload = b"x" * 1000
    stale = _stale_temporary(fidkit_home / "onnx", "0123456789abcdef-1.onnx", payload)
    cleared = clear_cache(include_models=True)
    assert stale in cleared.removed_paths
    assert cleared.bytes_freed == len(payload)


# --- clear_cache(include_models=True): graphs, weights, datasets, locks --------------------------------------


def test_graphs_are_recognised_by_their_exact_names(fidkit_home):
    onnx = fidkit_home / "onnx"
    graphs = [write(onnx / "0123456789abcdef-1.onnx", b"g" * 7), write(onnx / "0123456789abcdef-1.onnx.sha256", b"s")]
    graphs.append(write(onnx / "fedcba9876543210-2.1.onnx", b"g" * 3))
    kept = [write(onnx / "model.onnx", b"mine"), write(onnx / "0123456789ABCDEF-1.onnx", b"mine"),
            write(onnx / "deeper" / "0123456789abcdef-1.onnx", b"mine")]
    cleared = clear_cache(include_models=True)
    assert not any(path.exists() for path in graphs)
    assert cleared.bytes_freed == 11 and cleared.n_stats_entries == 0
    reasons = kept_reasons(cleared)
    for path in (kept[0], kept[1], onnx / "deeper"):
        assert reasons[path] == "not an ONNX graph fidkit built (<16 hex>-<version>-<convention>.onnx[.sha256])"
    assert kept[2].exists()  # never entered


def test_weights_are_removed_only_when_name_size_and_sha256_are_the_released_files(fidkit_home, fake_downloads):
    folder = fidkit_home / "weights"
    weights = write(folder / fake_downloads.weights_name, fake_downloads.weights_bytes)
    mine = write(folder / "my-inception.pth", fake_downloads.weights_bytes)  # right bytes, other name
    cleared = clear_cache(include_models=True)
    assert not weights.exists() and weights in cleared.removed_paths
    assert cleared.bytes_freed == len(fake_downloads.weights_bytes)
    assert kept_reasons(cleared) == {mine: f"not the downloaded weights file {fake_downloads.weights_name}"}

    # The released name over other bytes: same size with another sha256, or another size.
    for payload in (fake_downloads.weights_bytes[::-1], fake_downloads.weights_bytes + b"!"):
        impostor = write(folder / fake_downloads.weights_name, payload)
        cleared = clear_cache(include_models=True)
        assert impostor.exists()
        assert kept_reasons(cleared)[impostor] == (
            "named like the released weights but not that file (size or sha256 differ)"
        )


def test_dataset_files_are_removed_only_when_they_match_the_published_md5(fidkit_home, fake_downloads):
    folder = fidkit_home / "datasets"
    dataset = write(folder / fake_downloads.dataset_name, fake_downloads.dataset_bytes)
    verified = write(folder / "verified.json", b"{}")
    # A registered name holding other bytes of the published size (the real CIFAR size is not built here).
    other = write(folder / "train-images-idx3-ubyte.gz", b"not the published file")
    mine = write(folder / "my-dataset.zip", b"mine")
    cleared = clear_cache(include_models=True)
    assert not dataset.exists() and not verified.exists()
    assert {dataset, verified} <= set(cleared.removed_paths)
    assert cleared.bytes_freed == len(fake_downloads.dataset_bytes) + 2
    reasons = kept_reasons(cleared)
    assert reasons[other] == "named like a dataset file but not the published file (size or md5 differ)"
    assert reasons[mine] == "not a dataset file fidkit downloads"


def test_download_locks_of_known_files_are_removed_and_others_kept(fidkit_home, fake_downloads):
    folder = fidkit_home / "locks"
    locks = [write(folder / f"{fake_downloads.weights_name}.0123456789abcdef.lock", b""),
             write(folder / f"{fake_downloads.dataset_name}.fedcba9876543210.lock", b"")]
    unknown = write(folder / "someone-elses.bin.0123456789abcdef.lock", b"")
    cleared = clear_cache(include_models=True)
    assert not any(path.exists() for path in locks) and set(locks) <= set(cleared.removed_paths)
    assert kept_reasons(cleared) == {unknown: "not a download lock of fidkit"}


def test_the_tensorrt_cache_is_named_and_left_alone(fidkit_home):
    engine = write(fidkit_home / "tensorrt" / "TensorrtExecutionProvider_abc.engine", b"e")
    assert kept_reasons(clear_cache()) == {}  # only looked at with include_models
    cleared = clear_cache(include_models=True)
    assert engine.exists()
    assert kept_reasons(cleared) == {
        fidkit_home / "tensorrt": "TensorRT engine cache (names chosen by onnxruntime); remove it by hand"
    }


# --- hostile review (issue 9), 6: cache clear --all removes only what fidkit wrote ----------------------------------


def _fake_registry(monkeypatch, tmp_path):
    """:func:`replace_downloads` as (weights name, weights bytes, dataset file name, dataset bytes)."""
    return dataclasses.astuple(replace_downloads(monkeypatch))


def test_cache_clear_all_removes_only_files_fidkit_wrote(home, tmp_path, monkeypatch, capsys):
    from fidkit.cache import store_cached_stats

    weights_name, weights_bytes, dataset_name, dataset_bytes = _fake_registry(monkeypatch, tmp_path)
    # A FIDKIT_HOME that is also a project folder: tracked files, a user's statistics, a user's weights.
    (home / "weights").mkdir(parents=True)
    user_files = {
        home / "README.md": b"tracked",
        home / "mine.npz": b"user statistics",
        home / "weights" / "manifest.json": b"{}",
        home / "weights" / "my-own-inception.pth": b"user weights",
    }
    store_cached_stats("a" * 64, small_stats(1), source_name="a/", source_kind="folder")
    stats_folder = home / "stats"
    user_files[stats_folder / "mine.npz"] = b"user statistics in the stats folder"
    small_stats(2).save(stats_folder / ("b" * 64 + ".npz"))  # the right name, but not a cache entry
    user_files[stats_folder / ("c" * 64 + ".json")] = b'{"key": "not this one"}'
    (home / "onnx" / "subfolder").mkdir(parents=True)
    graph = home / "onnx" / ("0123456789abcdef-1.onnx")
    graph.write_bytes(b"graph")
    user_files[home / "onnx" / "notes.txt"] = b"notes"
    user_files[home / "onnx" / "subfolder" / "deep-0123456789abcdef-1.onnx"] = b"deep"
    (home / "weights" / weights_name).write_bytes(weights_bytes)
    (home / "datasets").mkdir()
    (home / "datasets" / dataset_name).write_bytes(dataset_bytes)
    (home / "datasets" / "verified.json").write_text("{}")
    user_files[home / "datasets" / "cifar-10-python.tar.gz"] = b"not the published archive"
    user_files[home / "datasets" / "my-dataset.zip"] = b"user archive"
    (home / "locks").mkdir()
    (home / "locks" / f"{weights_name}.0123456789abcdef.lock").write_bytes(b"")
    for path, payload in user_files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
    outside = tmp_path / "target.npz"
    small_stats(3).save(outside)
    (stats_folder / ("d" * 64 + ".npz")).symlink_to(outside)

    assert main(["cache", "clear", "--all"]) == 0
    out = capsys.readouterr().out

    for path, payload in user_files.items():
        assert path.read_bytes() == payload, path
    assert (stats_folder / ("b" * 64 + ".npz")).exists()
    assert (stats_folder / ("d" * 64 + ".npz")).is_symlink() and outside.exists()
    assert not (stats_folder / ("a" * 64 + ".npz")).exists() and not (stats_folder / ("a" * 64 + ".json")).exists()
    assert not graph.exists()
    assert not (home / "weights" / weights_name).exists()
    assert not (home / "datasets" / dataset_name).exists() and not (home / "datasets" / "verified.json").exists()
    assert list((home / "locks").iterdir()) == []  # emptied; the folder stays (folders are never removed)
    assert "removed 1 cached statistics entries" in out
    assert "1 file(s) from onnx/" in out and "1 file(s) from weights/" in out and "2 file(s) from datasets/" in out  # the file and verified.json
    assert f"kept {home / 'weights' / 'my-own-inception.pth'}: not the downloaded weights file" in out
    assert f"kept {home / 'datasets' / 'cifar-10-python.tar.gz'}: named like a dataset file but not" in out
    assert f"kept {stats_folder / ('b' * 64 + '.npz')}: named like a cache entry" in out
    assert f"kept {home / 'README.md'}: not a folder fidkit writes" in out


def test_cache_clear_keeps_weights_named_like_the_release_but_not_it(home, tmp_path, monkeypatch):
    from fidkit.cache import clear_cache

    weights_name, weights_bytes, _, _ = _fake_registry(monkeypatch, tmp_path)
    (home / "weights").mkdir(parents=True)
    (home / "weights" / weights_name).write_bytes(weights_bytes[::-1])  # same size, other bytes
    cleared = clear_cache(include_models=True)
    assert (home / "weights" / weights_name).exists()
    assert [path.name for path, _ in cleared.kept] == [weights_name]


def test_cache_clear_keeps_a_lock_in_use(home, tmp_path, monkeypatch):
    import fcntl

    from fidkit.cache import clear_cache

    weights_name, *_ = _fake_registry(monkeypatch, tmp_path)
    lock = home / "locks" / f"{weights_name}.0123456789abcdef.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        cleared = clear_cache(include_models=True)
    assert lock.exists()
    assert (lock, "in use by a running download") in cleared.kept


def test_cache_clear_without_all_touches_only_stats(home, monkeypatch, tmp_path):
    from fidkit.cache import clear_cache, store_cached_stats

    store_cached_stats("a" * 64, small_stats(1), source_name="a/", source_kind="folder")
    (home / "onnx").mkdir()
    graph = home / "onnx" / "0123456789abcdef-1.onnx"
    graph.write_bytes(b"graph")
    cleared = clear_cache()
    assert cleared.n_stats_entries == 1 and graph.exists()


# --- hostile round 4: cache clear --all removes the graphs fidkit builds --------------------------------------------


@pytest.mark.parametrize("convention", ["tf", "pytorch-fid", "clean", "torchmetrics"])
def test_clear_all_removes_the_graphs_fidkit_builds(fidkit_home, monkeypatch, convention) -> None:
    from fidkit.inception.runtime import graph_cache_path

    graph = graph_cache_path("0123456789abcdef" * 4, convention)
    graph.parent.mkdir(parents=True)
    graph.write_bytes(b"x" * 10)
    recorded = graph.with_name(graph.name + ".sha256")
    recorded.write_text("0" * 64)
    cleared = clear_cache(include_models=True)
    assert not graph.exists() and not recorded.exists()
    assert cleared.kept == ()


# --- hostile round 7: no folder is removed; what blocks an entry's name is kept, its sidecar is not ----------------


def test_cache_clear_all_keeps_the_folders_of_the_home_even_empty(home, monkeypatch, capsys):
    replace_downloads(monkeypatch)
    made = [home / name for name in ("stats", "onnx", "weights", "datasets", "locks")]
    for folder in made:
        folder.mkdir(parents=True)  # made by the user (a mount point, a folder with its own permissions)
    store_cached_stats(KEY_A, small_stats(), source_name="a/", source_kind="folder")
    assert main(["cache", "clear", "--all"]) == 0
    out = capsys.readouterr().out
    assert all(folder.is_dir() and list(folder.iterdir()) == [] for folder in made)
    assert "removed 1 cached statistics entries" in out
    cleared = clear_cache(include_models=True)
    assert cleared.removed_paths == () and all(folder.is_dir() for folder in made)


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_something_at_an_entry_name_is_kept_with_what_it_is_and_its_sidecar_removed(fidkit_home, kind):
    store_cached_stats(KEY_A, small_stats(), source_name="a/", source_kind="folder")
    entry, sidecar = stats_dir(fidkit_home) / f"{KEY_A}.npz", stats_dir(fidkit_home) / f"{KEY_A}.json"
    entry.unlink()
    entry.mkdir() if kind == "folder" else os.mkfifo(entry)
    cleared = clear_cache()
    assert cleared.removed_paths == (sidecar,) and not sidecar.exists()  # fidkit's, and describing no entry now
    what = "a folder" if kind == "folder" else "a FIFO (named pipe)"
    assert kept_reasons(cleared) == {entry: f"{what} at a cache entry's name: not written by fidkit; remove it by hand"}
    assert os.path.lexists(entry)


# --- round 8, 6: a blank FIDKIT_WEIGHTS is unset, as fidkit's other variables ---------------------------------------


@pytest.mark.parametrize("blank", [" ", "\t"])
def test_a_blank_weights_variable_names_no_file_a_run_reads(fidkit_home, monkeypatch, tmp_path, blank):
    from fidkit.home import weights_files_read
    from fidkit.inception.weights import load_manifest

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FIDKIT_WEIGHTS", blank)
    files = weights_files_read(None)
    cached = fidkit_home / "weights" / load_manifest().file_name
    # Only the cached download, which a run without weights named loads: not a file named by blanks here.
    assert files == [(cached, "fidkit's cached Inception weights file, which it loads")]


# --- a cache home fidkit cannot use is an error for `cache list` and `cache clear` too, as for a run ------------------


def _unusable_home(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    """(the FIDKIT_HOME to set, the name the message must say is not a folder)."""
    if kind == "file":
        (tmp_path / "afile").write_text("notes")
        return tmp_path / "afile", tmp_path / "afile"
    if kind == "under a file":
        (tmp_path / "afile").write_text("notes")
        return tmp_path / "afile" / "deeper" / "home", tmp_path / "afile"
    (tmp_path / "home").symlink_to(tmp_path / "missing")  # "dangling"
    return tmp_path / "home", tmp_path / "home"


@pytest.mark.parametrize("kind", ["file", "under a file", "dangling"])
@pytest.mark.parametrize("argv", [["cache", "list"], ["cache", "list", "--json"], ["cache", "clear"],
                                  ["cache", "clear", "--all"]])
def test_cache_list_and_clear_refuse_a_home_that_is_not_a_folder(tmp_path, monkeypatch, capsys, kind, argv):
    home, culprit = _unusable_home(tmp_path, kind)
    monkeypatch.setenv("FIDKIT_HOME", str(home))
    assert main(argv) == 1  # a user-facing error, as a run on that home is; not "no cached statistics", status 0
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.strip().splitlines()
    what = "a symbolic link to a missing target" if kind == "dangling" else "a file, not a folder"
    assert line.startswith("fidkit: error: cannot ") and f"({culprit} is {what}" in line, line
    assert line.endswith("; set the environment variable FIDKIT_HOME to a writable folder"), line
    assert not (tmp_path / "missing").exists()  # nothing was made on the way


def test_a_root_or_home_given_to_the_api_that_is_a_file_is_an_error(fidkit_home):
    from fidkit.cache import list_cache
    from fidkit.errors import InputError

    fidkit_home.mkdir()
    other = fidkit_home / "elsewhere.txt"
    other.write_text("x")
    with pytest.raises(InputError, match="pass a folder as root="):
        list_cache(root=other)
    with pytest.raises(InputError, match="pass a folder as home="):
        clear_cache(home=other)


def test_a_home_not_made_yet_is_still_an_empty_cache(fidkit_home, capsys):
    from fidkit.cache import list_cache

    assert not fidkit_home.exists()
    assert list_cache() == [] and clear_cache().n_stats_entries == 0
    assert main(["cache", "list"]) == 0 and "no cached statistics" in capsys.readouterr().out
    assert not fidkit_home.exists()


# --- a relative XDG_CACHE_HOME is ignored, as the XDG Base Directory specification says ---------------------------


@pytest.mark.parametrize("value", ["rel", "./rel", "cache/deeper", "."])
def test_a_relative_xdg_cache_home_is_ignored_with_one_warning(tmp_path, monkeypatch, caplog, value):
    from fidkit import _home_dir
    from fidkit._home_dir import cache_home

    monkeypatch.setattr(_home_dir, "_WARNED_RELATIVE", set())
    monkeypatch.delenv("FIDKIT_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_CACHE_HOME", value)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="fidkit"):
        assert cache_home() == cache_home() == tmp_path / "user" / ".cache" / "fidkit"
    [warning] = [record.getMessage() for record in caplog.records]  # once, however often the home is looked up
    assert f"XDG_CACHE_HOME={value} is a relative path" in warning and "~/.cache/fidkit" in warning


@pytest.mark.parametrize("value", ["{tmp}/xdg", "~/xdg"])
def test_an_absolute_xdg_cache_home_is_used(tmp_path, monkeypatch, caplog, value):
    from fidkit._home_dir import cache_home

    monkeypatch.delenv("FIDKIT_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", value.format(tmp=tmp_path))
    with caplog.at_level(logging.WARNING, logger="fidkit"):
        assert cache_home() == tmp_path / "xdg" / "fidkit"
    assert caplog.records == []


def test_a_relative_fidkit_home_is_still_used_as_given(tmp_path, monkeypatch):
    from fidkit._home_dir import cache_home

    monkeypatch.setenv("FIDKIT_HOME", "rel-home")
    monkeypatch.setenv("XDG_CACHE_HOME", "rel")
    assert cache_home() == Path("rel-home")


def test_no_home_directory_and_a_relative_xdg_cache_home_says_both(monkeypatch):
    import pwd

    from fidkit._home_dir import cache_home
    from fidkit.errors import InputError

    monkeypatch.delenv("FIDKIT_HOME", raising=False)
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "rel")

    def no_entry(uid):
        raise KeyError(uid)

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    with pytest.raises(InputError, match=r"XDG_CACHE_HOME=rel is relative \(ignored\), and no home directory is known"):
        cache_home()


# --- review of round 8: stats/ under the home that is not a folder is an error for `cache list` and `cache clear` ----


@pytest.mark.parametrize("kind", ["file", "link to a file"])
@pytest.mark.parametrize("argv", [["cache", "list"], ["cache", "list", "--json"], ["cache", "clear"],
                                  ["cache", "clear", "--all"]])
def test_cache_list_and_clear_refuse_a_stats_name_that_is_not_a_folder(fidkit_home, capsys, kind, argv):
    fidkit_home.mkdir()
    (fidkit_home / "notes.txt").write_text("kept")
    stats = fidkit_home / "stats"
    if kind == "file":
        stats.write_text("not statistics")
    else:
        stats.symlink_to(fidkit_home / "notes.txt")
    assert main(argv) == 1  # as a run that warns it cannot store there; not "no cached statistics", status 0
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.strip().splitlines()
    assert line.startswith("fidkit: error: cannot ") and f"({stats} is " in line and "not a folder" in line, line
    assert "fidkit keeps its stats folder there); move it away, or set the environment variable FIDKIT_HOME" in line
    assert stats.is_file() and (fidkit_home / "notes.txt").read_text() == "kept"  # nothing was removed


@pytest.mark.parametrize("name", ["onnx", "weights", "datasets", "locks"])
def test_cache_clear_all_refuses_a_model_folder_name_that_is_a_file(fidkit_home, name):
    from fidkit.errors import InputError

    (fidkit_home / "stats").mkdir(parents=True)
    (fidkit_home / name).write_text("x")
    with pytest.raises(InputError, match=f"{name} is a file, not a folder: fidkit keeps its {name} folder there"):
        clear_cache(include_models=True)
    assert clear_cache().n_stats_entries == 0  # the statistics alone: that folder is not looked at
