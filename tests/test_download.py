"""Downloads (fidkit._download) from a hostile server: stopped at the expected size, within a total deadline, a
bounded wait for another process's lock, and nothing left behind by a failed weights download (hostile round 3).

Every server here listens on 127.0.0.1 and is started by the test; every loop is bounded in count and time.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fidkit import _download
from fidkit._download import Checksum, download, download_deadline
from fidkit.errors import DownloadError, InputError, WeightsError
from fidkit.inception.weights import WeightsManifest, locate_weights


# --- hostile round 3, 8: a download stops at the expected size ------------------------------------------------------


PAYLOAD = bytes(range(256)) * 64 + b"fidkit"  # 16 KiB and a bit: several reads, fast


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET /<mode>: ``good`` the payload; ``endless`` a body that never stops (no length); ``long`` the payload
    and 50 KiB more under a Content-Length that says so; ``liar`` a Content-Length of the payload's size and
    more bytes behind it (which HTTP does not count as the body); ``trickle`` one byte every 50 ms; ``slowhead``
    the status line and a header a byte at a time, every 50 ms."""

    stop = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        mode = self.path.strip("/")
        try:
            if mode == "good":
                self._head(len(PAYLOAD))
                self._send(PAYLOAD)
            elif mode == "long":
                body = PAYLOAD + b"x" * 50 * 1024
                self._head(len(body))
                self._send(body)
            elif mode == "liar":
                self._head(len(PAYLOAD))
                for _ in range(200):  # bounded: 200 x 16 KiB at most
                    self._send(PAYLOAD)
            elif mode == "endless":
                self.send_response(200)
                self.end_headers()  # no Content-Length: the body ends when the connection does
                for _ in range(20_000):  # bounded: ~320 MiB at most, far more than any test reads
                    if self.stop.is_set():
                        return
                    self._send(PAYLOAD)
            elif mode == "trickle":
                self._head(len(PAYLOAD))
                for byte in PAYLOAD[:200]:  # bounded: 200 bytes, 10 s
                    if self.stop.is_set():
                        return
                    self._send(bytes([byte]))
                    time.sleep(0.05)
            elif mode == "slowhead":
                for byte in b"HTTP/1.0 200 OK\r\nX-Slow: " + b"a" * 200:
                    if self.stop.is_set():
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.05)
            else:
                self.send_error(404)
        except OSError:
            pass  # the client hung up, as it should

    def _head(self, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def hostile_server() -> Iterator[str]:
    _Handler.stop.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        _Handler.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


CHECKSUM = Checksum("sha256", hashlib.sha256(PAYLOAD).hexdigest())


def _get(url: str, target: Path, **options) -> Path:
    return download([url], target, checksum=CHECKSUM, size=len(PAYLOAD), progress=False, **options)


def _leftovers(home: Path) -> list[str]:
    return sorted(str(path.relative_to(home)) for path in home.rglob("*")) if home.exists() else []


def test_a_body_longer_than_expected_is_refused_at_the_first_byte_too_many(hostile_server, fidkit_home):
    target = fidkit_home / "datasets" / "file.bin"
    with pytest.raises(DownloadError, match=f"more than the expected {len(PAYLOAD)} bytes") as raised:
        _get(f"{hostile_server}/endless", target)
    assert f"refused at byte {len(PAYLOAD) + 1}" in str(raised.value)
    assert not target.exists() and _leftovers(fidkit_home) == []  # the partial file is gone, and its folders


def test_a_longer_announced_length_is_refused_before_reading(hostile_server, fidkit_home):
    target = fidkit_home / "weights" / "w.pth"
    with pytest.raises(DownloadError, match=f"announces {len(PAYLOAD) + 50 * 1024} bytes, expected {len(PAYLOAD)}"):
        _get(f"{hostile_server}/long", target)
    assert _leftovers(fidkit_home) == []


@pytest.mark.parametrize("mode", ["good", "liar"])
def test_the_expected_size_still_downloads(hostile_server, fidkit_home, mode):
    # "liar": bytes past the announced length are not part of the body (HTTP framing) and are never read.
    target = fidkit_home / "datasets" / "file.bin"
    assert _get(f"{hostile_server}/{mode}", target).read_bytes() == PAYLOAD
    assert _leftovers(fidkit_home) == ["datasets", "datasets/file.bin"]  # no lock file or locks/ left either


# --- hostile round 3, 9: a total deadline, and a bounded wait for another process's lock ----------------------------


@pytest.mark.parametrize("mode", ["trickle", "slowhead"])
def test_a_trickling_server_is_cut_off_at_the_deadline(hostile_server, fidkit_home, mode):
    target = fidkit_home / "weights" / "w.pth"
    began = time.monotonic()
    with pytest.raises(DownloadError, match="not finished within the deadline of 0.4 s"):
        _get(f"{hostile_server}/{mode}", target, deadline=0.4, timeout=5.0)
    assert time.monotonic() - began < 5.0  # the per-read timeout (5 s) was never reached
    assert _leftovers(fidkit_home) == []


def test_the_deadline_comes_from_the_environment(hostile_server, fidkit_home, monkeypatch):
    monkeypatch.setenv("FIDKIT_DOWNLOAD_DEADLINE", "0.3")
    with pytest.raises(DownloadError, match="deadline of 0.3 s.*FIDKIT_DOWNLOAD_DEADLINE"):
        _get(f"{hostile_server}/trickle", fidkit_home / "w.pth", timeout=5.0)


@pytest.mark.parametrize("text", ["0", "-3", "soon", "nan", "inf"])
def test_a_deadline_that_is_not_a_positive_number_is_refused(monkeypatch, text):
    monkeypatch.setenv("FIDKIT_DOWNLOAD_DEADLINE", text)
    with pytest.raises(InputError, match="FIDKIT_DOWNLOAD_DEADLINE"):
        download_deadline(1000)
    with pytest.raises(InputError, match="not a download deadline"):
        download_deadline(1000, 0.0)


def test_the_default_deadline_grows_with_the_size(monkeypatch):
    monkeypatch.delenv("FIDKIT_DOWNLOAD_DEADLINE", raising=False)
    assert download_deadline(0) == 300.0
    assert download_deadline(95_628_359) == pytest.approx(300 + 95_628_359 / 65536)
    assert download_deadline(None) == 3600.0
    assert download_deadline(10, 2.5) == 2.5


def test_a_waiter_gives_up_naming_the_lock_file_and_its_holder(hostile_server, fidkit_home):
    import fcntl

    target = fidkit_home / "weights" / "w.pth"
    lock_path = _download._lock_path(target)
    lock_path.parent.mkdir(parents=True)
    with open(lock_path, "a+b") as holder:  # another download holds the lock (flock is per open file)
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        holder.write(str(os.getpid()).encode())
        holder.flush()
        with pytest.raises(DownloadError) as raised:
            _get(f"{hostile_server}/good", target, deadline=0.2, timeout=0.2)
    message = str(raised.value)
    assert str(lock_path) in message and f"process {os.getpid()}, running here" in message
    assert "wait for it to end or stop it" in message
    assert not target.exists()


def test_a_lock_file_of_a_dead_process_is_taken_over(hostile_server, fidkit_home):
    target = fidkit_home / "weights" / "w.pth"
    lock_path = _download._lock_path(target)
    lock_path.parent.mkdir(parents=True)
    # A process that took the lock and died: the kernel released it, only the file (with its pid) is left.
    script = (
        "import fcntl, os, sys; f = open(sys.argv[1], 'a+b'); fcntl.flock(f, fcntl.LOCK_EX); f.write(b'1'); "
        "os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", script, str(lock_path)], check=True, timeout=30)
    assert lock_path.exists()
    assert _get(f"{hostile_server}/good", target, deadline=5.0).read_bytes() == PAYLOAD
    assert not lock_path.exists()  # the holder removes its lock file when done


def test_the_second_of_two_downloads_waits_and_uses_the_first_ones_file(hostile_server, fidkit_home):
    target = fidkit_home / "datasets" / "file.bin"
    results: list[object] = []

    def fetch() -> None:
        try:
            results.append(_get(f"{hostile_server}/good", target, deadline=10.0))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            results.append(error)

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [target] * 3 and target.read_bytes() == PAYLOAD
    assert _leftovers(fidkit_home) == ["datasets", "datasets/file.bin"]


# --- hostile round 3, 28: a failed weights download leaves nothing --------------------------------------------------


def _manifest(url: str) -> WeightsManifest:
    return WeightsManifest(
        name="test-net", file_name="test-weights.pth", size=len(PAYLOAD),
        sha256=hashlib.sha256(PAYLOAD).hexdigest(), urls=(url,), licence="Apache-2.0",
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("what", ["offline", "wrong file"])
def test_a_failed_weights_download_leaves_no_folder_or_lock(hostile_server, fidkit_home, what):
    url = f"http://127.0.0.1:{_closed_port()}/w.pth" if what == "offline" else f"{hostile_server}/endless"
    with pytest.raises(WeightsError):
        locate_weights(manifest=_manifest(url), progress=False, timeout=2.0)
    assert not fidkit_home.exists()  # fidkit created the home, weights/ and locks/: all gone again


def test_a_failed_download_keeps_the_folders_it_did_not_create(hostile_server, fidkit_home):
    (fidkit_home / "weights").mkdir(parents=True)
    mine = fidkit_home / "locks" / "my-notes.txt"
    mine.parent.mkdir()
    mine.write_text("mine")
    with pytest.raises(WeightsError):
        locate_weights(manifest=_manifest(f"{hostile_server}/long"), progress=False)
    assert _leftovers(fidkit_home) == ["locks", "locks/my-notes.txt", "weights"]


# --- round 8, 1: a lock path that cannot be a lock file never spins, and is never written through -------------------


def _download_in_thread(url: str, target: Path, stuck: Path) -> list[object]:
    """Download in a thread given 30 s; if it is still running then (spinning), remove `stuck` so that it can end."""
    results: list[object] = []

    def fetch() -> None:
        try:
            results.append(_get(url, target, deadline=5.0, timeout=5.0))
        except Exception as error:  # noqa: BLE001 - reported by the assertion of the caller
            results.append(error)

    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    thread.join(timeout=30)
    if thread.is_alive():
        stuck.unlink()  # lets a spinning loop out, so that the failed test does not burn a core until pytest ends
        thread.join(timeout=10)
        pytest.fail("the download did not end: its lock loop spins")
    return results


def test_a_broken_symbolic_link_at_the_lock_path_is_no_endless_loop(hostile_server, fidkit_home, caplog):
    target = fidkit_home / "datasets" / "file.bin"
    lock_path = _download._lock_path(target)
    lock_path.parent.mkdir(parents=True)
    lock_path.symlink_to(fidkit_home / "no-such-folder" / "lock")
    with caplog.at_level("WARNING", logger="fidkit._download.locks"):
        results = _download_in_thread(f"{hostile_server}/good", target, lock_path)
    assert results == [target] and target.read_bytes() == PAYLOAD  # downloaded without a lock
    assert lock_path.is_symlink()  # not fidkit's file: left as it was
    assert any(str(lock_path) in r.getMessage() and "symbolic link" in r.getMessage() for r in caplog.records)


def test_a_lock_path_linked_to_a_file_never_writes_that_file(hostile_server, fidkit_home):
    target = fidkit_home / "datasets" / "file.bin"
    precious = fidkit_home / "notes.txt"
    precious.parent.mkdir(parents=True)
    precious.write_text("my notes")
    lock_path = _download._lock_path(target)
    lock_path.parent.mkdir(parents=True)
    lock_path.symlink_to(precious)
    assert _download_in_thread(f"{hostile_server}/good", target, lock_path) == [target]
    assert precious.read_text() == "my notes"  # the holder writes its pid in its lock file, never through a link
    assert lock_path.is_symlink() and target.read_bytes() == PAYLOAD


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_at_the_lock_path_is_warned_about_and_never_blocks(hostile_server, fidkit_home, caplog):
    # Review of round 8, 3: a FIFO was opened, then refused by os.fdopen (not seekable) before the check of its
    # kind, and the download went on without a lock and without a warning.
    target = fidkit_home / "datasets" / "data.bin"
    lock_path = _download._lock_path(target)
    lock_path.parent.mkdir(parents=True)
    os.mkfifo(lock_path)
    with caplog.at_level("WARNING", logger="fidkit._download.locks"):
        results = _download_in_thread(f"{hostile_server}/good", target, lock_path)
    assert results == [target] and target.read_bytes() == PAYLOAD  # downloaded without a lock
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(str(lock_path) in message and "FIFO" in message and "remove it" in message for message in warnings)
    assert stat.S_ISFIFO(os.lstat(lock_path).st_mode)  # not fidkit's file: left as it was


def test_a_regular_lock_file_is_opened_blocking_and_locked(fidkit_home):
    # The open is non-blocking (for a FIFO's sake); the handle of a regular file is made blocking again.
    import fcntl

    from fidkit._download import locks

    lock_path = fidkit_home / "locks" / "y.lock"
    handle = locks._acquire(lock_path, fcntl, 1.0, "y")
    try:
        assert os.get_blocking(handle.fileno()) and handle.seekable()
        assert lock_path.read_text(encoding="ascii") == str(os.getpid())
    finally:
        handle.close()


def test_a_lock_file_that_keeps_being_replaced_ends_at_the_deadline(fidkit_home, monkeypatch):
    import fcntl

    from fidkit._download import locks

    lock_path = fidkit_home / "locks" / "x.lock"
    # A file system whose lock file is never the one locked (as if another process replaced it each time).
    monkeypatch.setattr(locks.os.path, "samestat", lambda first, second: False)
    results: list[object] = []

    def acquire() -> None:
        try:
            results.append(locks._acquire(lock_path, fcntl, 0.3, "x"))
        except Exception as error:  # noqa: BLE001 - checked below
            results.append(error)

    thread = threading.Thread(target=acquire, daemon=True)
    thread.start()
    thread.join(timeout=20)
    if thread.is_alive():
        monkeypatch.undo()  # the real samestat lets the spinning loop out
        thread.join(timeout=10)
        pytest.fail("_acquire did not end: its loop spins past the deadline")
    assert len(results) == 1 and isinstance(results[0], OSError) and "removed or replaced" in str(results[0])


# --- round 8, 4: something fidkit must not replace at the download's path is said as it is --------------------------


def _put_in_the_way(home: Path, case: str, file_name: str) -> Path:
    """Make `case` stand in the way of ``home/weights/file_name``; return the path that is in the way."""
    if case == "home is a file":
        home.parent.mkdir(parents=True, exist_ok=True)
        home.write_text("not a folder")
        return home
    if case == "weights/ is a broken link":
        home.mkdir(parents=True)
        (home / "weights").symlink_to(home / "gone")
        return home / "weights"
    (home / "weights").mkdir(parents=True)
    blocker = home / "weights" / file_name
    if case == "a folder":
        blocker.mkdir()
    elif case == "a broken link":
        blocker.symlink_to(home / "nowhere" / file_name)
    return blocker


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ("a folder", "is a folder, not a file"),
        ("a broken link", "is a symbolic link to a missing target"),
        ("home is a file", "is a file, not a folder"),
        ("weights/ is a broken link", "is a symbolic link to a missing target"),
    ],
)
def test_what_is_in_the_way_of_a_download_is_named_with_its_fix(hostile_server, tmp_path, monkeypatch, case, said):
    home = tmp_path / "home"
    monkeypatch.setenv("FIDKIT_HOME", str(home))
    manifest = _manifest(f"{hostile_server}/good")
    blocker = _put_in_the_way(home, case, manifest.file_name)
    with pytest.raises(WeightsError) as raised:
        locate_weights(manifest=manifest, progress=False, timeout=2.0)
    message = str(raised.value)
    assert f"{blocker} {said}" in message
    assert f"move or remove {blocker}" in message and "FIDKIT_HOME to another folder" in message
    # Not a permission problem, and no --force replaces a folder or a link.
    assert "writable" not in message and "--force" not in message
    assert os.path.lexists(blocker)  # left as it was


def test_a_dataset_download_onto_a_link_names_it_and_leaves_its_file_alone(hostile_server, fidkit_home):
    target = fidkit_home / "datasets" / "file.bin"
    mine = fidkit_home / "mine.bin"
    target.parent.mkdir(parents=True)
    mine.write_bytes(b"mine")
    target.symlink_to(mine)
    with pytest.raises(_download.DiskWriteError) as raised:
        _get(f"{hostile_server}/good", target)
    assert f"{target} is a symbolic link to a file ({mine})" in str(raised.value)
    assert "writable" not in str(raised.value) and mine.read_bytes() == b"mine"
