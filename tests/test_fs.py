"""The filesystem edges: atomic writes never leave partial files, never clobber; the cache home."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fidkit
from fidkit._fs import atomic_write, sha256_file
from fidkit._home_dir import cache_home
from fidkit.errors import OverwriteError, StatsFileError

from stand_ins import small_stats

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_atomic_write_creates_file_and_parent(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.npz"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp.suffix == ".npz"
        tmp.write_bytes(b"payload")
    assert target.read_bytes() == b"payload"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.npz"]


def test_atomic_write_refuses_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "out.npz"
    target.write_bytes(b"user data")
    with pytest.raises(OverwriteError, match="already exists"):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"new")
    assert target.read_bytes() == b"user data"
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]


def test_atomic_write_overwrite_replaces(tmp_path: Path) -> None:
    target = tmp_path / "out.npz"
    target.write_bytes(b"old")
    with atomic_write(target, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_atomic_write_failure_leaves_nothing(tmp_path: Path, exc: type[BaseException]) -> None:
    target = tmp_path / "out.npz"
    with pytest.raises(exc):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"half")
            raise exc()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_refuses_file_that_appears_meanwhile(tmp_path: Path) -> None:
    target = tmp_path / "out.npz"
    with pytest.raises(OverwriteError, match="appeared"):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"ours")
            target.write_bytes(b"theirs")
    assert target.read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 5000  # > 1 MiB, so more than one chunk
    path = tmp_path / "blob"
    path.write_bytes(payload)
    assert sha256_file(path) == hashlib.sha256(payload).hexdigest()


def test_cache_home_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FIDKIT_HOME", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_home() == tmp_path / "explicit"
    monkeypatch.delenv("FIDKIT_HOME")
    assert cache_home() == tmp_path / "xdg" / "fidkit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_home() == tmp_path / "home" / ".cache" / "fidkit"


def test_atomic_write_gives_the_mode_of_a_new_file(tmp_path: Path) -> None:
    """mkstemp makes 0600 files; a saved result must be readable like any file the user creates."""
    import os
    import stat

    previous = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "shared.npz") as tmp:
            tmp.write_bytes(b"x")
        reference = tmp_path / "reference"
        reference.write_bytes(b"x")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "shared.npz").stat().st_mode)
    assert mode == stat.S_IMODE(reference.stat().st_mode) == 0o644


def test_atomic_write_flushes_to_disk_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash after the rename must not leave an empty file under the final name."""
    import os

    import fidkit._fs as fs

    events: list[str] = []
    real_fsync, real_replace, real_link = os.fsync, os.replace, os.link
    monkeypatch.setattr(fs.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(fs.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    monkeypatch.setattr(fs.os, "link", lambda a, b: (events.append("link"), real_link(a, b))[1])
    with atomic_write(tmp_path / "out.npz") as tmp:
        tmp.write_bytes(b"payload")
    with atomic_write(tmp_path / "out.npz", overwrite=True) as tmp:
        tmp.write_bytes(b"payload")
    assert events == ["fsync", "link", "fsync", "replace"]  # a new file is linked, an existing one replaced


def test_two_writers_of_one_new_file_never_both_succeed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The other writer's file lands between this writer's check and its rename (hostile round 5: 7 of 200 rounds of
    # four processes both "succeeded", one file lost). The name is taken in one step: the second writer is refused.
    import fidkit._fs as fs

    target = tmp_path / "out.npz"
    with pytest.raises(OverwriteError, match="appeared while it was being written"):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"second writer")
            target.write_bytes(b"first writer")  # its rename has just happened
            monkeypatch.setattr(fs.os.path, "lexists", lambda path: False)  # ... after this writer's check
    monkeypatch.undo()
    assert target.read_bytes() == b"first writer"
    assert [path.name for path in tmp_path.iterdir()] == ["out.npz"]


def test_without_hard_links_a_new_file_is_still_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    import fidkit._fs as fs

    def no_links(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")  # FAT, some network file systems

    monkeypatch.setattr(fs.os, "link", no_links)
    with atomic_write(tmp_path / "new.npz") as tmp:
        tmp.write_bytes(b"data")
    assert (tmp_path / "new.npz").read_bytes() == b"data" and len(os.listdir(tmp_path)) == 1


# --- hostile review (issue 9), 5: only regular files are ever replaced ----------------------------------------------


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


# --- hostile review (issue 9), 7: temporaries of killed runs are removed by the next run ----------------------------


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


# --- hostile round 4: a save below the home leaves other programs' temporaries alone --------------------------------


def test_a_save_below_the_home_leaves_other_programs_temporaries_alone(fidkit_home) -> None:
    results = fidkit_home / "results"  # a user's folder that happens to lie below FIDKIT_HOME
    results.mkdir(parents=True)
    theirs = [results / ".draft.abcdefgh.tmp", results / ".report.csv.k2j4m9x1.tmp.csv"]
    old = time.time() - 7200
    for path in theirs:
        path.write_text("not fidkit's")
        os.utime(path, (old, old))
    with atomic_write(results / "a_stats.npz") as temporary:
        temporary.write_bytes(b"x")
    assert all(path.exists() for path in theirs)
    # In a folder fidkit owns, its own older temporaries still go.
    stats = fidkit_home / "stats"
    stats.mkdir()
    abandoned = stats / ".entry.npz.abcdefgh.tmp.npz"
    abandoned.write_text("left by a killed fidkit 0.x")
    os.utime(abandoned, (old, old))
    with atomic_write(stats / "entry.npz") as temporary:
        temporary.write_bytes(b"x")
    assert not abandoned.exists()


# --- hostile round 5: a full disk is said to be full ----------------------------------------------------------------


def test_a_full_disk_is_said_to_be_full_not_unwritable(tmp_path, monkeypatch):
    # ENOSPC (and a quota, a file-size limit) asked the user for "a writable folder", which they had.
    import errno

    import fidkit._fs as fs

    stats = fidkit.Stats.from_features(np.random.default_rng(0).normal(size=(20, 4)))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fs.tempfile, "mkstemp", full)
    with pytest.raises(StatsFileError, match=r"No space left on device\); free disk space, or choose a path on another"):
        stats.save(tmp_path / "stats.npz")
    monkeypatch.setattr(fs.tempfile, "mkstemp", lambda *a, **k: (_ for _ in ()).throw(PermissionError(errno.EACCES, "Permission denied")))
    with pytest.raises(StatsFileError, match=r"choose a path in a writable folder"):
        stats.save(tmp_path / "stats.npz")
