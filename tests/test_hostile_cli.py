"""Hostile inputs around files, the cache and the standard streams (issue 9).

Every case is built in ``tmp_path`` with ``FIDKIT_HOME`` pointed into it. The network is a counting fake
(8 random features per image), so nothing here exports or runs the Inception graph; what is tested is
what fidkit writes, deletes, prints and returns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fidkit.cli import main

REPO_ROOT = Path(__file__).resolve().parent.parent


# --- helpers ---------------------------------------------------------------------------------------


class CountingExtractor:
    """A stand-in for the Inception network: deterministic features of dimension 8, every call counted."""

    feature_dim = 8
    weights_sha256 = "f" * 64
    resize_mode = "fake-resize"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, images):
        self.calls += 1
        images = np.asarray(images)
        flat = images.reshape(len(images), -1).astype(np.float32)
        # Eight different linear views of the pixels: features vary from image to image.
        return np.stack([flat[:, index::8].mean(axis=1) for index in range(8)], axis=1).astype(np.float32)

    def metadata(self):
        return {"weights_sha256": self.weights_sha256, "resize_mode": self.resize_mode, "provider": "fake"}


@pytest.fixture
def home(tmp_path, monkeypatch):
    folder = tmp_path / "home"
    monkeypatch.setenv("FIDKIT_HOME", str(folder))
    return folder


@pytest.fixture
def network():
    """The CLI's network is a CountingExtractor (through the registry); returns it (``.calls``) and counts builds
    in ``.builds`` and identity look-ups in ``.identities``."""
    from fidkit.extractors import identity_of
    from fidkit.testing import replaced_extractor

    built: list = []

    class Counted(CountingExtractor):
        builds = property(lambda self: len(built))

    fake = Counted()
    fake.identities = 0

    def identity(options):
        fake.identities += 1  # finding (or downloading) and hashing the weights: network time too
        return dict(identity_of(fake).fields)  # the fake has one without any file

    with replaced_extractor(lambda options: fake, identity=identity) as builds:
        built = builds
        yield fake


def image_array(tmp_path: Path, n_images: int = 6, seed: int = 0, name: str = "images.npy") -> Path:
    path = tmp_path / name
    rng = np.random.default_rng(seed)
    np.save(path, rng.integers(0, 256, size=(n_images, 8, 8, 3), dtype=np.uint8))
    return path


def small_stats(seed: int = 0, *, n: int = 20, dim: int = 8, metadata=None):
    from fidkit.stats import Stats

    rng = np.random.default_rng(seed)
    return Stats.from_features(rng.normal(size=(n, dim)), metadata=dict(metadata or {"created": "now"}))


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("fidkit: error:")]
    assert len(lines) == 1, err
    return lines[0]


def run_fidkit(shell_line: str, home: Path, **kwargs) -> subprocess.CompletedProcess:
    """Run ``fidkit ...`` through ``sh -c`` (so that ``2>&-``, ``>&-`` and pipes are real)."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), FIDKIT_HOME=str(home))
    command = shell_line.replace("fidkit ", f"'{sys.executable}' -m fidkit ", 1)
    return subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=120, **kwargs)


# --- 6: cache clear removes only what fidkit wrote ----------------------------------------------------------


def _fake_registry(monkeypatch, tmp_path):
    """Small stand-ins for the released weights and one dataset file, with their true checksums."""
    import fidkit.inception.weights as weights_module
    from fidkit.sources import named

    weights_bytes = b"released weights" * 10
    manifest = weights_module.load_manifest()
    small_manifest = dataclasses.replace(
        manifest, size=len(weights_bytes), sha256=hashlib.sha256(weights_bytes).hexdigest()
    )
    monkeypatch.setattr(weights_module, "load_manifest", lambda path=None: small_manifest)
    dataset_bytes = b"mnist test images" * 10
    dataset = named.DATASETS["mnist-test"]
    small_file = dataclasses.replace(
        dataset.file, size=len(dataset_bytes), md5=hashlib.md5(dataset_bytes).hexdigest()
    )
    monkeypatch.setitem(named.DATASETS, "mnist-test", dataclasses.replace(dataset, file=small_file))
    return small_manifest.file_name, weights_bytes, small_file.file_name, dataset_bytes


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
    assert not (home / "locks").exists()  # emptied, so removed
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


# --- 5: only regular files are ever replaced ------------------------------------------------------------


def _special_destinations(folder: Path) -> dict[str, Path]:
    """A FIFO, a socket, a folder, links to them and to a regular file, a dangling link; a device if allowed."""
    made: dict[str, Path] = {}
    os.mkfifo(folder / "fifo")
    made["a FIFO"] = folder / "fifo"
    (folder / "folder").mkdir()
    made["a folder"] = folder / "folder"
    server = socket.socket(socket.AF_UNIX)
    cwd = os.getcwd()
    os.chdir(folder)  # a relative name: AF_UNIX paths are limited to about 100 bytes
    try:
        server.bind("sock")
    finally:
        os.chdir(cwd)
        server.close()
    made["a socket"] = folder / "sock"
    try:
        os.mknod(folder / "device", 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null
        made["a character device"] = folder / "device"
    except (PermissionError, OSError):
        pass
    (folder / "regular.npz").write_bytes(b"the user's file")
    for name, target in [("link-to-fifo", "fifo"), ("link-to-regular", "regular.npz"), ("dangling", "missing")]:
        (folder / name).symlink_to(folder / target)
        made[f"a symbolic link ({name})"] = folder / name
    return made


def _kind_of_path(path: Path) -> int:
    return stat.S_IFMT(path.lstat().st_mode)


@pytest.mark.parametrize("overwrite", [False, True])
def test_atomic_write_replaces_only_regular_files(tmp_path, overwrite):
    from fidkit._fs import atomic_write
    from fidkit.errors import OverwriteError

    destinations = _special_destinations(tmp_path)
    for kind, path in destinations.items():
        before = _kind_of_path(path)
        with pytest.raises(OverwriteError) as raised:
            with atomic_write(path, overwrite=overwrite) as tmp:
                tmp.write_bytes(b"new")
        assert str(path) in str(raised.value), kind
        if overwrite:
            expected = "symbolic link" if "link" in kind else kind
            assert expected in str(raised.value) and "even with --force" in str(raised.value)
        assert _kind_of_path(path) == before, kind
    assert (tmp_path / "regular.npz").read_bytes() == b"the user's file"  # never written through the link
    assert not [name for name in os.listdir(tmp_path) if ".tmp" in name]


def test_stats_save_overwrite_refuses_a_fifo(tmp_path):
    from fidkit.errors import OverwriteError

    fifo = tmp_path / "out.npz"
    os.mkfifo(fifo)
    with pytest.raises(OverwriteError, match="FIFO"):
        small_stats().save(fifo, overwrite=True)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_cli_save_force_refuses_a_fifo_and_a_link(home, tmp_path, capsys):
    source = tmp_path / "source.npz"
    small_stats().save(source)
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    assert main(["stats", str(source), "--save", str(fifo), "--force", "--quiet"]) == 1
    assert "FIFO" in error_line(capsys.readouterr().err) and stat.S_ISFIFO(fifo.lstat().st_mode)
    (tmp_path / "target.npz").write_bytes(b"kept")
    (tmp_path / "link.npz").symlink_to(tmp_path / "target.npz")
    assert main(["stats", str(source), "--save", str(tmp_path / "link.npz"), "--force", "--quiet"]) == 1
    assert "symbolic link" in error_line(capsys.readouterr().err)
    assert (tmp_path / "link.npz").is_symlink() and (tmp_path / "target.npz").read_bytes() == b"kept"


# --- 12: stdout carries only the result; closed or broken streams -------------------------------------------


@pytest.fixture
def two_ttur_files(tmp_path):
    """Two mu/sigma-only files: comparing them needs no network and warns (N unknown) on stderr."""
    paths = []
    for index in range(2):
        stats = small_stats(index)
        path = tmp_path / f"side{index}.npz"
        np.savez(path, mu=stats.mu, sigma=stats.sigma)
        paths.append(path)
    return paths


def test_closed_stderr_keeps_json_on_stdout_and_the_exit_status(home, two_ttur_files):
    a, b = two_ttur_files
    result = run_fidkit(f"fidkit compute '{a}' '{b}' --json 2>&-", home)
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)  # only the report: the warnings were dropped, not sent to stdout
    assert report["fid"] > 0 and report["warnings"]
    missing = run_fidkit(f"fidkit compute '{a}' '{b}.missing' 2>&-", home)
    assert missing.returncode == 1 and missing.stdout == ""


def test_broken_stdout_pipe_is_quiet_and_the_saved_file_is_complete(home, two_ttur_files, tmp_path):
    a, _ = two_ttur_files
    out = tmp_path / "saved.npz"
    read_end, write_end = os.pipe()
    os.close(read_end)  # no reader at all: the first write to stdout fails with EPIPE, deterministically
    try:
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), FIDKIT_HOME=str(home))
        result = subprocess.run(
            [sys.executable, "-m", "fidkit", "stats", str(a), "--save", str(out)],
            stdout=write_end, stderr=subprocess.PIPE, env=env, text=True, timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141
    assert result.stderr == ""  # no "Broken pipe", no "Exception ignored"
    from fidkit.stats import Stats

    assert Stats.load(out).dim == 8


def test_closed_stdout_is_an_error_before_any_work(home, two_ttur_files, tmp_path):
    a, _ = two_ttur_files
    out = tmp_path / "never.npz"
    result = run_fidkit(f"fidkit stats '{a}' --save '{out}' >&-", home)
    assert result.returncode == 1
    assert "stdout is closed" in error_line(result.stderr)
    assert not out.exists()


# --- 13: nothing is computed before the inputs and the destination are known to be usable ------------------


def test_a_typo_in_the_second_source_costs_no_network_time(home, tmp_path, network, capsys):
    real = image_array(tmp_path)
    assert main(["compute", str(real), str(tmp_path / "typo"), "--workers", "0", "--quiet"]) == 1
    assert "typo" in error_line(capsys.readouterr().err)
    assert (network.builds, network.calls, network.identities) == (0, 0, 0)


def test_a_typo_in_the_second_source_through_the_api(home, tmp_path):
    import fidkit
    from fidkit.errors import FidkitError

    counting = CountingExtractor()
    with pytest.raises(FidkitError, match="typo"):
        fidkit.compute_fid(image_array(tmp_path), tmp_path / "typo", extractor=counting, workers=0)
    assert counting.calls == 0


def _make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    ("make", "force", "message"),
    [
        (lambda tmp: (tmp / "out.npz").mkdir() or tmp / "out.npz", True, "is a folder"),
        (lambda tmp: _make_fifo(tmp / "out.npz"), True, "is a FIFO"),
        (lambda tmp: (tmp / "file").write_bytes(b"x") and tmp / "file" / "sub" / "out.npz", False, "is a file, not a folder"),
        (lambda tmp: (tmp / "out.npz").write_bytes(b"x") and tmp / "out.npz", False, "already exists; pass --force"),
    ],
    ids=["folder", "fifo", "parent-is-a-file", "exists"],
)
def test_an_unusable_save_destination_is_refused_before_computing(home, tmp_path, network, capsys, make, force, message):
    source = image_array(tmp_path)
    destination = make(tmp_path)
    argv = ["stats", str(source), "--save", str(destination), "--workers", "0", "--quiet"] + (["--force"] if force else [])
    assert main(argv) == 1
    line = error_line(capsys.readouterr().err)
    assert message in line and str(destination) in line
    assert (network.builds, network.calls, network.identities) == (0, 0, 0)


def test_a_save_destination_without_permission_is_refused_before_computing(home, tmp_path, network, monkeypatch, capsys):
    import fidkit._fs

    # Tests run as root, which may write anywhere: simulate a folder the user may not write.
    monkeypatch.setattr(fidkit._fs, "_writable_folder", lambda folder: folder != tmp_path / "readonly")
    (tmp_path / "readonly").mkdir()
    destination = tmp_path / "readonly" / "out.npz"
    assert main(["stats", str(image_array(tmp_path)), "--save", str(destination), "--workers", "0", "--quiet"]) == 1
    assert "no permission to create files in" in error_line(capsys.readouterr().err)
    assert network.calls == 0 and not destination.exists()


def test_a_missing_save_folder_is_created(home, tmp_path, network, capsys):
    from fidkit.stats import Stats

    destination = tmp_path / "new" / "deeper" / "out.npz"
    assert main(["stats", str(image_array(tmp_path)), "--save", str(destination), "--workers", "0", "--quiet"]) == 0
    assert Stats.load(destination).n == 6 and network.calls > 0


# --- 15: the statistics cache stays under a size limit, least recently used out first --------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 2 * 1024**3), ("unlimited", 0), ("1048576", 1024**2), ("500M", 500 * 1024**2), ("2G", 2 * 1024**3),
     ("1.5k", 1536), ("64MiB", 64 * 1024**2)],  # "0" and "lots" are errors: test_hostile_round3_net.py
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


# --- 7: temporaries of killed runs are removed by the next run ---------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporaries_of_a_killed_save_are_removed_by_the_next_save(tmp_path):
    from fidkit.stats import Stats

    folder = tmp_path / "out"
    killer = (
        "import os, signal, sys\n"
        "from fidkit._fs import atomic_write\n"
        "with atomic_write(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'x' * 100000)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run([sys.executable, "-c", killer, str(folder / "a.npz")], env=env, timeout=60)
    assert result.returncode == -9
    leftovers = os.listdir(folder)
    assert len(leftovers) == 1 and leftovers[0].startswith(".a.npz.")  # what kill -9 leaves
    small_stats().save(folder / "b.npz")
    assert os.listdir(folder) == ["b.npz"]
    assert Stats.load(folder / "b.npz").dim == 8


def test_only_stale_temporaries_of_fidkit_are_removed(tmp_path):
    from fidkit._fs import _host_tag, remove_stale_temporaries

    here, dead, old = _host_tag(), _dead_pid(), time.time() - 2 * 3600
    names = {
        f".a.npz.{here}-{dead}.abcd1234.tmp.npz": ("fresh", True),  # this machine, its process is gone
        f".b.npz.{here}-{os.getpid()}.abcd1234.tmp.npz": ("fresh", False),  # a run in progress
        f".c.npz.00000000-{dead}.abcd1234.tmp.npz": ("fresh", False),  # another machine: only age counts
        f".d.npz.00000000-{dead}.abcd1234.tmp.npz": ("old", True),
        ".e.onnx.abcd1234.tmp.onnx": ("fresh", False),  # the older name without a pid: age only
        ".f.onnx.abcd1234.tmp.onnx": ("old", True),
        ".notes.tmp": ("old", False),  # not fidkit's pattern
        f".g.npz.{here}-{dead}.abcd1234.tmp.json": ("old", False),  # the suffix does not match the name
        "h.npz": ("old", False),
    }
    for name, (age, _) in names.items():
        (tmp_path / name).write_bytes(b"x")
        if age == "old":
            os.utime(tmp_path / name, (old, old))
    (tmp_path / f".i.npz.{here}-{dead}.abcd1234.tmp.npz").mkdir()  # a folder with the name: never
    (tmp_path / f".j.npz.{here}-{dead}.abcd1234.tmp.npz").symlink_to(tmp_path / "h.npz")  # a link: never
    removed = {path.name for path, _ in remove_stale_temporaries(tmp_path)}
    # A user's folder: the older, pid-less form is never fidkit's to judge (other programs' mkstemp names).
    assert removed == {name for name, (_, stale) in names.items() if stale and not name.startswith((".e", ".f"))}
    removed = {path.name for path, _ in remove_stale_temporaries(tmp_path, older_names=True)}
    assert removed == {".f.onnx.abcd1234.tmp.onnx"}  # inside the cache home only
    assert (tmp_path / "h.npz").exists() and (tmp_path / f".i.npz.{here}-{dead}.abcd1234.tmp.npz").is_dir()


def test_cache_clear_removes_stale_temporaries_and_keeps_live_ones(home):
    from fidkit._fs import _host_tag
    from fidkit.cache import clear_cache

    (home / "onnx").mkdir(parents=True)
    stale = home / "onnx" / f".0123456789abcdef-1.onnx.{_host_tag()}-{_dead_pid()}.abcd1234.tmp.onnx"
    live = home / "onnx" / f".fedcba9876543210-1.onnx.{_host_tag()}-{os.getpid()}.abcd1234.tmp.onnx"
    stale.write_bytes(b"half a graph")
    live.write_bytes(b"a graph being written")
    cleared = clear_cache(include_models=True)
    assert not stale.exists() and live.exists()
    assert [reason for path, reason in cleared.kept if path == live] == [
        "a temporary file of a fidkit run in progress (removed once that run is gone)"
    ]


# --- 14: messages ------------------------------------------------------------------------------------------


def test_seed_without_limit_is_a_warning(home, tmp_path, network, capsys):
    assert main(["stats", str(image_array(tmp_path)), "--seed", "3", "--workers", "0", "--quiet"]) == 0
    assert "fidkit: warning: seed 3 without limit has no effect" in capsys.readouterr().err


def test_limit_above_the_number_of_images_is_a_warning(home, tmp_path, network, capsys):
    source = image_array(tmp_path)
    assert main(["stats", str(source), "--limit", "100", "--json", "--workers", "0", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n"] == 6
    assert f"fidkit: warning: {source}: limit 100 is above its 6 images; all 6 are used" in captured.err
    assert main(["stats", str(source), "--limit", "4", "--workers", "0", "--quiet"]) == 0
    # (The stand-in network's weights are not the released file's: that warning is another one.)
    assert "is above its" not in capsys.readouterr().err


def test_weights_given_as_a_folder_says_so(home, tmp_path, capsys):
    folder = tmp_path / "weights-folder"
    folder.mkdir()
    assert main(["stats", str(image_array(tmp_path)), "--weights", str(folder), "--workers", "0", "--quiet"]) == 1
    line = error_line(capsys.readouterr().err)
    assert "is a folder, not a weights file; pass the .pth file itself" in line and "does not exist" not in line


def test_a_file_that_is_not_weights_never_relays_torchs_unsafe_advice(tmp_path):
    import collections
    import pickle

    from fidkit.errors import WeightsError
    from fidkit.inception.weights import load_state_dict

    for name, payload in [("pickle.pth", pickle.dumps(collections.Counter(a=1))), ("text.pth", b"not weights")]:
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(WeightsError) as raised:
            load_state_dict(path)
        message = str(raised.value)
        assert f"{path} is not an Inception weights file" in message
        assert "weights_only" not in message and "False" not in message


def test_complex_statistics_are_refused_unless_exactly_real(tmp_path):
    from fidkit.errors import InputError, StatsFileError
    from fidkit.stats import Stats

    sigma = np.eye(3) + 1e-3j * np.ones((3, 3))
    with pytest.raises(InputError, match="sigma is complex"):
        Stats(mu=np.zeros(3), sigma=sigma)
    with pytest.raises(InputError, match="mu is complex"):
        Stats(mu=np.array([0, 1j, 0]), sigma=np.eye(3))
    path = tmp_path / "complex.npz"
    np.savez(path, mu=np.zeros(3), sigma=sigma)
    with pytest.raises(StatsFileError, match="complex.npz.*sigma is complex"):
        Stats.load(path)
    exact = Stats(mu=np.zeros(3) + 0j, sigma=np.eye(3) + 0j)
    assert exact.sigma.dtype == np.float64 and np.array_equal(exact.sigma, np.eye(3))


def test_a_single_image_names_the_side(home, tmp_path, network, capsys):
    one = image_array(tmp_path, n_images=1, name="one.npy")
    assert main(["compute", str(image_array(tmp_path)), str(one), "--workers", "0", "--quiet"]) == 1
    line = error_line(capsys.readouterr().err)
    assert str(one) in line and "only 1 image" in line


def test_a_file_name_that_is_not_utf8_is_printed_escaped_not_a_traceback(tmp_path):
    import os
    import subprocess
    import sys

    path = os.fsencode(tmp_path) + b"/caf\xe9.npz"
    env = dict(os.environ, PYTHONIOENCODING="utf-8", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    result = subprocess.run([sys.executable, "-m", "fidkit", "info", path], capture_output=True, env=env, timeout=120)
    assert result.returncode == 1
    assert b"Traceback" not in result.stderr and b"no such statistics file" in result.stderr
    assert b"caf\\udce9" in result.stderr


def test_statistics_with_hostile_metadata_are_file_errors_or_read_as_unknown(tmp_path, capsys):
    import json

    import numpy as np

    from fidkit.cli import main

    deep = "[" * 100_000 + "]" * 100_000
    np.savez(tmp_path / "deep.npz", mu=np.zeros(2), sigma=np.eye(2), fidkit_metadata_json=np.asarray(deep))
    assert main(["info", str(tmp_path / "deep.npz")]) == 1
    assert "nested too deeply" in capsys.readouterr().err
    lots = json.dumps({"n_skipped": "lots", "skipped_files": "not a list"})
    np.savez(tmp_path / "lots.npz", mu=np.zeros(2), sigma=np.eye(2), n=np.int64(5), fidkit_metadata_json=np.asarray(lots))
    assert main(["compute", str(tmp_path / "lots.npz"), str(tmp_path / "lots.npz"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fid"] == 0.0 and report["a"]["n_skipped"] == 0
