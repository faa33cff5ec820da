"""Hostile round 3, the network and cache items: downloads that never end or trickle (8, 9), what a failed
download leaves (28), the statistics cache's names, links, read-only entries and size limit (28, 19), and
Ray's actor count and address (10, 11, 12, 18).

Every server here listens on 127.0.0.1 and is started by the test; every loop is bounded in count and time.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fidkit import _download
from fidkit._download import Checksum, download, download_deadline
from fidkit.errors import DownloadError, InputError, WeightsError
from fidkit.inception.weights import WeightsManifest, locate_weights

REPO_ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = bytes(range(256)) * 64 + b"fidkit"  # 16 KiB and a bit: several reads, fast


# --- a hostile file server on 127.0.0.1 -----------------------------------------------------------------------


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


# --- 8: a download stops at the expected size --------------------------------------------------------------------


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


# --- 9: a total deadline, and a bounded wait for another process's lock ------------------------------------------


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


# --- 28: a failed weights download leaves nothing -----------------------------------------------------------------


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


# --- 28: warnings name the user's source; cache list shows where each source is ------------------------------


def _small_stats(seed: int = 0):
    from fidkit.stats import Stats

    features = np.random.default_rng(seed).normal(size=(20, 8))
    return Stats.from_features(features, metadata={"created": "now"})


def test_cache_list_tells_apart_two_folders_with_the_same_name(fidkit_home, tmp_path, monkeypatch, capsys):
    from fidkit.cache import list_cache, store_cached_stats
    from fidkit.cli import main

    for index, parent in enumerate(("one", "two")):
        (tmp_path / parent / "real").mkdir(parents=True)
        monkeypatch.chdir(tmp_path / parent)
        store_cached_stats(str(index + 1) * 64, _small_stats(index), source_name="real", source_kind="folder")
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
    store_cached_stats("1" * 64, _small_stats(), source_name="cifar10-train", source_kind="cifar")
    store_cached_stats("2" * 64, _small_stats(1), source_name="s3://bucket/real", source_kind="folder")
    assert sorted(entry.source for entry in list_cache()) == ["cifar10-train", "s3://bucket/real"]


def test_a_corrupt_entry_warning_names_the_source_not_only_the_cache_file(fidkit_home, caplog):
    from fidkit.cache import load_cached_stats, stats_cache_dir, store_cached_stats

    key = "3" * 64
    store_cached_stats(key, _small_stats(), source_name="my-images/")
    (stats_cache_dir() / f"{key}.npz").write_bytes(b"not a statistics file")
    with caplog.at_level("WARNING", logger="fidkit.cache"):
        assert load_cached_stats(key, source_name="my-images/") is None
    (message,) = [record.getMessage() for record in caplog.records]
    assert message.startswith("my-images/: ") and "corrupt" in message
    assert "pass the image folder" not in message  # advice for a statistics file the user gave, not for the cache


# --- 19: a read-only cache never fails a run; a linked stats/ folder; limits below one byte -------------------


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
    store_cached_stats(key, _small_stats(), source_name="real/")
    entry = stats_cache_dir() / f"{key}.npz"
    entry.write_bytes(b"garbage")
    read_only_stats()
    with caplog.at_level("WARNING", logger="fidkit"):
        for _ in range(3):  # three runs in one process (or both sides of a comparison): one warning
            assert load_cached_stats(key, source_name="real/") is None
            stored = store_cached_stats(key, _small_stats(), source_name="real/")  # the run's store: refused too
            assert stored.n == 20
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("real/: ") and "Permission denied" in warnings[0] and str(entry) in warnings[0]
    assert entry.read_bytes() == b"garbage"  # nothing could be changed, and nothing failed


def test_an_unwritable_cache_warning_names_the_source_and_the_fix(tmp_path, caplog):
    from fidkit.cache import store_cached_stats

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level("WARNING", logger="fidkit.cache"):
        store_cached_stats("5" * 64, _small_stats(), source_name="samples.zip", root=blocker / "stats")
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
        store_cached_stats(key, _small_stats(int(key[0])), source_name=f"s{key[0]}")
        os.utime(elsewhere / f"{key}.npz", (time.time() - age, time.time() - age))
    assert sorted(path.name for path in elsewhere.glob("*.npz")) == [f"{key}.npz" for key in keys]
    assert {entry.key for entry in list_cache()} == set(keys)
    assert main(["cache", "list"]) == 0
    assert "3 entries" in (out := capsys.readouterr().out) and f"a link to {elsewhere.resolve()}" in out
    # The size limit runs there too: one entry's worth leaves the newest (the one just written) only.
    monkeypatch.setenv("FIDKIT_CACHE_MAX_BYTES", "1")
    store_cached_stats("9" * 64, _small_stats(9), source_name="s9")
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


# --- 10: never more actors than the cluster can place ---------------------------------------------------------


def test_the_actor_count_is_what_the_cluster_can_place(caplog):
    from fidkit.cluster.ray import actor_count

    assert actor_count(None, cpus=6.0, gpus=0.0, use_gpu=False) == 6
    assert actor_count("", cpus=6.0, gpus=2.0, use_gpu=True) == 2
    assert actor_count("3", cpus=6.0, gpus=0.0, use_gpu=False) == 3
    assert actor_count(" 4 ", cpus=6.5, gpus=0.0, use_gpu=False) == 4
    with caplog.at_level("WARNING", logger="fidkit.cluster.ray"):
        assert actor_count("64", cpus=6.0, gpus=0.0, use_gpu=False) == 6
        assert actor_count("3", cpus=8.0, gpus=2.0, use_gpu=True) == 2
        assert actor_count("9" * 5000, cpus=2.0, gpus=0.0, use_gpu=False) == 2
        assert actor_count("8", cpus=1.0, gpus=4.0, use_gpu=True) == 1  # each GPU actor takes a CPU too
    assert len(caplog.records) == 4
    assert "FIDKIT_RAY_ACTORS=64" in caplog.records[0].getMessage()
    assert "starting 6 actor(s)" in caplog.records[0].getMessage()


@pytest.mark.parametrize("text", ["0", "-2", "two", "1.5", "٣"])
def test_an_actor_count_that_is_not_a_positive_integer_is_refused(text):
    from fidkit.cluster.ray import actor_count

    with pytest.raises(InputError, match="FIDKIT_RAY_ACTORS must be a positive integer"):
        actor_count(text, cpus=4.0, gpus=0.0, use_gpu=False)


def test_a_cluster_without_a_whole_cpu_is_refused():
    from fidkit.cluster.ray import actor_count
    from fidkit.errors import FidkitError

    with pytest.raises(FidkitError, match="not enough for one fidkit actor"):
        actor_count(None, cpus=0.5, gpus=0.0, use_gpu=False)


# --- 12, 18: the address grammar, one place, exit 2 -----------------------------------------------------------

BAD_ADDRESSES = [
    "head:-5", "head:+6379", ":6379", "head:99999999999999999999", "head:" + "9" * 5000, "head:0", "head:65536",
    "head", "head:", "::1:6379", "ray://:10001", "ray://head", "http://head:8265", "redis://head:6379", " head:6379",
    "head:6379x", "head:６３７９",
]


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_a_malformed_ray_address_is_a_usage_error_of_one_line(address, capsys):
    from fidkit.cli import main

    assert main(["stats", "images/", "--ray-address", address]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "is not a Ray address" in lines[0] and "Traceback" not in err
    assert len(lines[0]) < 600  # a 5000-digit port is shortened


@pytest.mark.parametrize("address", BAD_ADDRESSES[:4])
def test_the_api_and_ray_address_refuse_the_same_forms(address, monkeypatch):
    from fidkit.cluster.connect import address_to_use as _address_to_use
    from fidkit.options import RunOptions

    with pytest.raises(InputError, match="is not a Ray address"):
        RunOptions(cluster="ray", ray_address=address)
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(InputError, match="the environment variable RAY_ADDRESS .* is not a Ray address"):
        _address_to_use(None)


@pytest.mark.parametrize(
    "address", ["head-node:6379", "10.0.0.1:6379", "[::1]:6379", "ray://head:10001", "ray://10.1.2.3:1", "auto",
                "local", "head.example.com:65535"],
)
def test_the_forms_ray_connects_to_are_accepted(address):
    from fidkit._ray_address import check_ray_address

    assert check_ray_address(address) == address


# --- 11: something other than Ray at the address fails in seconds ---------------------------------------------


@contextlib.contextmanager
def _listener(answer: bytes | None) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that answers each connection with `answer` (None: says nothing)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    sock.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        for _ in range(200):  # bounded: at most 40 s
            if done.is_set():
                return
            try:
                connection, _ = sock.accept()
            except OSError:
                continue
            with connection:
                if answer is None:
                    done.wait(5)  # silent until the test ends
                else:
                    connection.sendall(answer)  # then closed

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        done.set()
        thread.join(timeout=5)
        sock.close()


def test_an_http_server_at_the_address_is_not_ray(monkeypatch):
    from fidkit.cluster.connect import check_reachable as _check_reachable
    from fidkit.errors import FidkitError

    monkeypatch.delenv("RAY_USE_TLS", raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for address in (f"127.0.0.1:{server.server_address[1]}", f"ray://127.0.0.1:{server.server_address[1]}"):
            with pytest.raises(FidkitError, match="is not a Ray cluster: a web server answers there") as raised:
                _check_reachable(address)
            message = str(raised.value)
            assert address in message and "8265 is the dashboard's port" in message and "6379" in message
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [(b"HTTP/1.1 400 Bad Request\r\n\r\n", "a web server"), (b"SSH-2.0-OpenSSH_9.6\r\n", "not with gRPC"),
     (b"", "closed the connection"), (None, "did not answer as Ray within")],
)
def test_what_is_not_a_grpc_server_is_refused(answer, expected, monkeypatch):
    from fidkit.cluster import connect as ray_module
    from fidkit.errors import FidkitError

    monkeypatch.delenv("RAY_USE_TLS", raising=False)
    with _listener(answer) as port, pytest.raises(FidkitError, match=expected):
        ray_module.check_reachable(f"127.0.0.1:{port}", timeout=0.5)


def test_a_grpc_server_passes_the_probe(monkeypatch):
    from fidkit.cluster.connect import check_reachable as _check_reachable

    monkeypatch.delenv("RAY_USE_TLS", raising=False)
    settings = b"\x00\x00\x06\x04\x00\x00\x00\x00\x00" + b"\x00\x03\x00\x00\x00\x64"  # what gRPC sends first
    with _listener(settings) as port:
        _check_reachable(f"127.0.0.1:{port}", timeout=2.0)
        _check_reachable(f"ray://127.0.0.1:{port}", timeout=2.0)


def test_the_cli_fails_at_once_on_an_http_server(tmp_path, monkeypatch):
    """Through `_connected`, before ray.init: no Ray instance is started or contacted."""
    ray = pytest.importorskip("ray")
    from fidkit.cluster.connect import connected as _connected
    from fidkit.errors import FidkitError

    if ray.is_initialized():
        pytest.skip("Ray already runs in this process")
    monkeypatch.delenv("RAY_USE_TLS", raising=False)
    with _listener(b"HTTP/1.0 400 Bad Request\r\n\r\n") as port:
        with pytest.raises(FidkitError, match="a web server answers there"), _connected(ray, f"127.0.0.1:{port}"):
            pass
    assert not ray.is_initialized()


def test_with_a_local_ray_the_actor_count_is_clamped_and_its_gcs_passes_the_probe(monkeypatch, caplog):
    ray = pytest.importorskip("ray")
    from fidkit.cluster.connect import check_reachable as _check_reachable
    from fidkit.cluster.ray import _actor_plan

    if ray.is_initialized():
        pytest.skip("Ray already runs in this process")
    monkeypatch.delenv("RAY_USE_TLS", raising=False)
    ray.init(num_cpus=2, object_store_memory=100 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    try:
        monkeypatch.setenv("FIDKIT_RAY_ACTORS", "7")
        with caplog.at_level("WARNING", logger="fidkit.cluster.ray"):
            assert _actor_plan(ray, "cpu") == (2, False)
        assert "FIDKIT_RAY_ACTORS=7" in caplog.text
        _check_reachable(ray.get_runtime_context().gcs_address, timeout=5.0)
    finally:
        ray.shutdown()
