"""The filesystem edges: atomic writes never leave partial files, never clobber; the cache home."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fidkit._fs import atomic_write, cache_home, sha256_file
from fidkit.errors import OverwriteError


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
