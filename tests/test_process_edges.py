"""The process's surroundings: no home directory, long file names, a full disk while downloading, SIGTERM, a
deleted working directory, dangling links on the way to an output."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fidkit._fs import atomic_write
from fidkit._home_dir import cache_home
from fidkit.errors import InputError, WeightsError
from image_files import _png  # tests/image_files.py

REPO_ROOT = Path(__file__).resolve().parents[1]
#: A user name no system has: pathlib cannot expand ``~`` followed by it.
NO_USER = "nosuchuser-fidkit-test"


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fidkit", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}, cwd=cwd,
    )


# --- 1. no home directory ---------------------------------------------------------------------------------------


@pytest.fixture
def no_home(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a container run with a user id that has no password entry: HOME unset and the lookup fails, so
    ``os.path.expanduser`` gives ``~`` back and pathlib raises RuntimeError("Could not determine home directory.")."""
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv("FIDKIT_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)

    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    with pytest.raises(RuntimeError):
        Path.home()  # the simulation is what Python does


def test_no_home_directory_is_an_error_naming_what_to_set(no_home: None) -> None:
    with pytest.raises(InputError) as info:
        cache_home()
    message = str(info.value)
    assert "FIDKIT_HOME" in message and "HOME" in message and "set FIDKIT_HOME (or HOME)" in message
    assert f"user id {os.getuid()}" in message


@pytest.mark.parametrize("variable", ["FIDKIT_HOME", "XDG_CACHE_HOME"])
def test_a_cache_home_variable_with_an_unknown_user_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.delenv("FIDKIT_HOME", raising=False)
    monkeypatch.setenv(variable, f"~{NO_USER}/fk")
    with pytest.raises(InputError) as info:
        cache_home()
    message = str(info.value)
    assert f"{variable}=~{NO_USER}/fk" in message and f"no user {NO_USER}" in message
    assert f"set {variable} to a path without ~{NO_USER}" in message


def test_a_home_variable_with_a_tilde_and_no_home_directory(no_home: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIDKIT_HOME", "~/fk")
    with pytest.raises(InputError, match=r"FIDKIT_HOME=~/fk, and no home directory is known .* without ~ "):
        cache_home()


def test_a_save_to_a_given_path_needs_no_home_directory(no_home: None, tmp_path: Path) -> None:
    from fidkit.stats.core import Stats

    stats = Stats.from_features(np.random.default_rng(0).random((20, 8)))
    stats.save(tmp_path / "s.npz")
    assert Stats.load(tmp_path / "s.npz").mu.tolist() == stats.mu.tolist()
    with atomic_write(tmp_path / "plain.txt") as partial:
        partial.write_text("x")
    assert (tmp_path / "plain.txt").read_text() == "x"


def test_weights_with_an_unknown_user_name_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    from fidkit.home import weights_files_read
    from fidkit.inception.weights import locate_weights

    for call in (lambda: locate_weights(f"~{NO_USER}/w.pth"), lambda: weights_files_read(f"~{NO_USER}/w.pth")):
        with pytest.raises(WeightsError, match=f"--weights.*no user {NO_USER}.*give the path without ~{NO_USER}"):
            call()
    monkeypatch.setenv("FIDKIT_WEIGHTS", f"~{NO_USER}/w.pth")
    with pytest.raises(WeightsError, match=f"FIDKIT_WEIGHTS.*no user {NO_USER}"):
        locate_weights()


def test_weights_with_a_tilde_and_no_home_directory(no_home: None) -> None:
    from fidkit.inception.weights import locate_weights

    with pytest.raises(WeightsError, match="--weights.*no home directory.*give the path without ~, or set HOME"):
        locate_weights("~/w.pth")


def test_the_command_line_says_one_line_for_an_unknown_user(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((2, 8, 8, 3), np.uint8))
    listed = _cli("cache", "list", env={"FIDKIT_HOME": f"~{NO_USER}/fk"})
    assert listed.returncode == 1, listed.stderr
    assert listed.stderr.startswith("fidkit: error: fidkit's cache home cannot be determined: FIDKIT_HOME=")
    assert "Traceback" not in listed.stderr and "internal error" not in listed.stderr
    given = _cli("stats", str(tmp_path / "a.npy"), "--weights", f"~{NO_USER}/w.pth")
    assert given.returncode == 1, given.stderr
    last = given.stderr.strip().splitlines()[-1]
    assert last.startswith(f"fidkit: error: cannot use ~{NO_USER}/w.pth (from --weights"), given.stderr
    assert "Traceback" not in given.stderr


def test_a_datasets_folder_with_an_unknown_user_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from fidkit.errors import SourceError
    from fidkit.sources.named import DATASETS, DATASETS_ENV, find_dataset_file

    monkeypatch.setenv(DATASETS_ENV, f"~{NO_USER}/data")
    with pytest.raises(SourceError, match=f"{DATASETS_ENV}.*no user {NO_USER}"):
        find_dataset_file(next(iter(DATASETS.values())))


# --- 2. long file names -----------------------------------------------------------------------------------------


def _name_max(folder: Path) -> int:
    return os.pathconf(folder, "PC_NAME_MAX")


@pytest.mark.parametrize("stem", ["n" * 200, "n" * 222, "l" * 240, "é" * 125, "x.y" * 80 + "z" * 11])
def test_the_temporary_of_a_long_legal_name_fits_and_is_recognised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stem: str
) -> None:
    import fidkit._fs as fs

    limit = _name_max(tmp_path)
    name = _shortened_to(stem + ".npz", limit)  # the longest name like it the file system takes
    with atomic_write(tmp_path / name) as partial:
        assert len(os.fsencode(partial.name)) <= limit and partial.name.endswith(".npz")
        assert fs.is_temporary_name(partial.name)
        partial.write_bytes(b"data")
        # As a later run sees it once this one is gone: removed by the cleanup of killed runs' temporaries.
        monkeypatch.setattr(fs, "pid_running", lambda pid: pid == os.getpid())
        (tmp_path / "user-file").write_bytes(b"")  # not a temporary: never removed
        gone = "9" * len(str(os.getpid()))  # a process of this machine that no longer runs
        leftover = tmp_path / partial.name.replace(f"-{os.getpid()}.", f"-{gone}.", 1)
        leftover.write_bytes(b"old")
        assert [path.name for path, _ in fs.remove_stale_temporaries(tmp_path)] == [leftover.name]
        monkeypatch.undo()
    assert (tmp_path / name).read_bytes() == b"data"
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(["user-file", name])


def test_a_name_that_is_nearly_all_suffix_still_gets_a_temporary(tmp_path: Path) -> None:
    from fidkit._fs import is_temporary_name

    name = "a." + "s" * (_name_max(tmp_path) - 2)
    with atomic_write(tmp_path / name) as partial:
        assert is_temporary_name(partial.name) and len(os.fsencode(partial.name)) <= _name_max(tmp_path)
        partial.write_bytes(b"s")
    assert [path.name for path in tmp_path.iterdir()] == [name]


def _shortened_to(name: str, limit: int) -> str:
    stem, suffix = name[: -len(".npz")], ".npz"
    while len(os.fsencode(stem + suffix)) > limit:
        stem = stem[:-1]
    return stem + suffix


@pytest.mark.parametrize("limit", [143, 200])
def test_the_temporary_fits_a_smaller_name_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    import fidkit._fs as fs

    monkeypatch.setattr(fs, "_name_max", lambda folder: limit)  # as on eCryptfs (143)
    name = "q" * (limit - 4) + ".pth"
    with atomic_write(tmp_path / name) as partial:
        assert len(partial.name) <= limit and fs.is_temporary_name(partial.name) and partial.name.endswith(".pth")
        partial.write_bytes(b"w")
    assert (tmp_path / name).read_bytes() == b"w"
    with pytest.raises(OSError, match=f"{limit + 1} bytes long, more than the {limit} .*choose a shorter name"):
        with atomic_write(tmp_path / ("q" * (limit - 3) + ".pth")):
            pytest.fail("a name the file system cannot hold must be refused before the write")


def test_a_name_longer_than_the_file_system_allows_is_refused_up_front(tmp_path: Path) -> None:
    import errno

    from fidkit._fs import check_writable_destination
    from fidkit.errors import StatsFileError
    from fidkit.stats.core import Stats

    limit = _name_max(tmp_path)
    too_long = tmp_path / "out" / ("n" * (limit - 3) + ".npz")
    with pytest.raises(OSError) as info:
        check_writable_destination(too_long)
    assert info.value.errno == errno.ENAMETOOLONG
    assert f"{limit + 1} bytes long, more than the {limit} the file system of {tmp_path} allows" in str(info.value)
    with pytest.raises(OSError, match="folder name .* more than the"):
        check_writable_destination(tmp_path / ("d" * (limit + 1)) / "s.npz")
    stats = Stats.from_features(np.random.default_rng(0).random((20, 8)))
    with pytest.raises(StatsFileError, match=f"more than the {limit} .*choose a shorter name"):
        stats.save(too_long)
    assert list(tmp_path.iterdir()) == [tmp_path / "out"] and not list((tmp_path / "out").iterdir())


def test_the_command_refuses_a_too_long_save_name_before_any_work(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((2, 8, 8, 3), np.uint8))
    limit = _name_max(tmp_path)
    out = tmp_path / "outdir" / ("n" * (limit + 10) + ".npz")
    # No weights anywhere: a check that came after the work would fail on the weights instead.
    done = _cli("stats", str(tmp_path / "a.npy"), "--no-cache", "--save", str(out))
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("fidkit: error: cannot write") and f"more than the {limit}" in last, done.stderr
    assert not (tmp_path / "outdir").exists()


# --- 3. a full or read-only disk while downloading -------------------------------------------------------------

PAYLOAD = bytes(range(256)) * 2048  # 512 KiB


@pytest.fixture
def counting_server():
    """A server on 127.0.0.1 serving PAYLOAD at every path; ``requests`` lists the paths asked for."""
    import http.server
    import threading

    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _manifest(*urls: str):
    import hashlib

    from fidkit.inception.weights import WeightsManifest

    return WeightsManifest(name="t", file_name="t.pth", size=len(PAYLOAD), sha256=hashlib.sha256(PAYLOAD).hexdigest(),
                           urls=urls, licence="Apache-2.0")


def _full_disk_after(monkeypatch: pytest.MonkeyPatch, n_bytes: int) -> None:
    """Files the download writes (mode "wb") take `n_bytes`, then fail as a full disk does."""
    import builtins
    import errno

    import fidkit._download as download_module

    class Full:
        def __init__(self, stream) -> None:
            self.stream, self.room = stream, n_bytes

        def write(self, data: bytes) -> int:
            if len(data) > self.room:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.room -= len(data)
            return self.stream.write(data)

        def __getattr__(self, name: str):
            return getattr(self.stream, name)

    def opened(file, mode="r", *args, **kwargs):
        stream = builtins.open(file, mode, *args, **kwargs)
        return Full(stream) if mode == "wb" else stream

    monkeypatch.setattr(download_module, "open", opened, raising=False)


def test_a_full_disk_stops_the_download_at_once_and_says_so(
    fidkit_home: Path, counting_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fidkit.inception.weights import locate_weights

    base, requests = counting_server
    _full_disk_after(monkeypatch, len(PAYLOAD) // 3)
    with pytest.raises(WeightsError) as info:
        locate_weights(manifest=_manifest(base + "/release/t.pth", base + "/mirror/t.pth"), progress=False)
    message = str(info.value)
    assert requests == ["/release/t.pth"]  # the mirror is not downloaded onto the same full disk
    assert "No space left on device" in message and "the disk is full" in message
    assert f"{len(PAYLOAD)} bytes are needed" in message and "FIDKIT_HOME to a folder on another disk" in message
    assert "yourself" not in message and "put it at" not in message
    assert not (fidkit_home / "weights").exists() or not list((fidkit_home / "weights").iterdir())


def test_a_read_only_disk_is_said_before_anything_is_downloaded(
    fidkit_home: Path, counting_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import fidkit._fs as fs
    from fidkit.inception.weights import locate_weights

    base, requests = counting_server

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(fs.tempfile, "mkstemp", read_only)
    with pytest.raises(WeightsError) as info:
        locate_weights(manifest=_manifest(base + "/release/t.pth", base + "/mirror/t.pth"), progress=False)
    message = str(info.value)
    assert requests == []
    assert "Read-only file system" in message and "cannot be written" in message
    assert "FIDKIT_HOME to a writable folder" in message and "put it at" not in message


def test_a_full_disk_outside_the_cache_home_names_no_variable(
    tmp_path: Path, counting_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    from fidkit._download import Checksum, DiskWriteError, download

    base, requests = counting_server
    _full_disk_after(monkeypatch, 0)
    with pytest.raises(DiskWriteError) as info:
        download([base + "/a.bin", base + "/b.bin"], tmp_path / "out" / "a.bin",
                 checksum=Checksum("sha256", hashlib.sha256(PAYLOAD).hexdigest()), size=None, progress=False)
    assert requests == ["/a.bin"]
    assert f"to {tmp_path / 'out'}" in str(info.value) and "another disk" in str(info.value)
    assert "FIDKIT_HOME" not in str(info.value) and not (tmp_path / "out").exists()


def test_a_network_failure_still_goes_on_to_the_mirror(fidkit_home: Path, counting_server) -> None:
    from fidkit.inception.weights import locate_weights

    base, requests = counting_server
    found = locate_weights(manifest=_manifest("http://127.0.0.1:1/t.pth", base + "/mirror/t.pth"), progress=False)
    assert found.path.read_bytes() == PAYLOAD and requests == ["/mirror/t.pth"]


# --- 4. SIGTERM ------------------------------------------------------------------------------------------------

#: fidkit's command with a slow stand-in network, and with SLOW_SAVE set a save that stalls half-written: each
#: announces itself on stderr, so that the test sends SIGTERM at a known point.
_SLOW_FIDKIT = '''
import os
import sys
import time

import numpy as np


class Slow:
    feature_dim = 6
    batch_size = 8
    thread_safe = True

    def __call__(self, images):
        print("STAND-IN: batch", file=sys.stderr, flush=True)
        time.sleep(0.1)
        flat = np.asarray(images, dtype=np.float32).reshape(len(images), -1, 3)
        return np.concatenate([flat.mean(axis=1), flat.std(axis=1)], axis=1)

    def metadata(self):
        return {"feature_extractor": "slow", "weights_sha256": "c" * 64, "resize_mode": "none"}


def stalled_savez(file, *args, **kwargs):
    file.write(b"PK" * 1000)
    file.flush()
    print("STAND-IN: saving", file=sys.stderr, flush=True)
    time.sleep(120)


if __name__ == "__main__":  # decoding workers re-import this script
    import fidkit.extractors
    from fidkit.cli import main

    fidkit.extractors.build_extractor = lambda options: Slow()
    if os.environ.get("SLOW_SAVE"):
        np.savez = stalled_savez
    raise SystemExit(main())
'''


def _process_group(pgid: int) -> list[str]:
    """The processes left in process group `pgid` (the command's workers and forkserver, had they survived)."""
    left = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            left.append(entry.name)
    return left


def _terminate_at(marker: str, argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, list[str]]:
    """Run `argv`, send SIGTERM to it (not its group: as timeout, docker stop and scancel do) once `marker` shows on
    its stderr; its exit status, its stderr and what is left of its process group a moment later."""
    import signal
    import time

    process = subprocess.Popen(
        argv, cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            if marker in line:
                process.send_signal(signal.SIGTERM)
                break
        rest = process.communicate(timeout=60)[1]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    left = _process_group(process.pid)
    for _ in range(50):  # the forkserver leaves once its last worker has gone
        if not left:
            break
        time.sleep(0.1)
        left = _process_group(process.pid)
    return process.returncode, "".join(lines) + rest, left


@pytest.fixture(scope="module")
def slow_fidkit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    folder = tmp_path_factory.mktemp("sigterm")
    (folder / "slow_fidkit.py").write_text(_SLOW_FIDKIT)
    (folder / "w.pth").write_bytes(b"stand-in weights")  # only hashed: the stand-in replaces the network
    images = folder / "imgs"
    images.mkdir()
    rng = np.random.default_rng(0)
    for index in range(300):  # more than fidkit decodes in its own process: worker processes decode them
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(images / f"{index:03d}.png")
    return folder


def test_sigterm_during_a_save_leaves_no_temporary_and_exits_143(slow_fidkit: Path, tmp_path: Path) -> None:
    out = tmp_path / "outdir"
    status, stderr, left = _terminate_at(
        "STAND-IN: saving",
        [sys.executable, "slow_fidkit.py", "stats", "imgs", "--workers", "0", "--limit", "16",
         "--weights", "w.pth", "--no-cache", "--save", str(out / "s.npz")],
        slow_fidkit, {"SLOW_SAVE": "1", "FIDKIT_HOME": str(tmp_path / "home")},
    )
    assert status == 143, stderr
    assert stderr.strip().splitlines()[-1] == "fidkit: terminated", stderr
    assert list(out.iterdir()) == [], "a half-written temporary was left in the user's folder"
    assert left == []


def test_sigterm_while_workers_decode_stops_them_cleanly(slow_fidkit: Path, tmp_path: Path) -> None:
    status, stderr, left = _terminate_at(
        "STAND-IN: batch",
        [sys.executable, "slow_fidkit.py", "stats", "imgs", "--workers", "2", "--weights", "w.pth", "--no-cache",
         "--save", str(tmp_path / "out" / "s.npz")],
        slow_fidkit, {"FIDKIT_HOME": str(tmp_path / "home")},
    )
    assert status == 143, stderr
    assert "fidkit: terminated" in stderr and "Traceback" not in stderr
    assert "leaked" not in stderr and "resource_tracker" not in stderr, stderr
    assert left == [], "decoding workers outlived the command"
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_the_command_puts_back_the_sigterm_handler_it_found(tmp_path: Path) -> None:
    import signal

    from fidkit.cli import main

    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        assert main(["cache", "list"]) == 0
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- 5. a deleted working directory ----------------------------------------------------------------------------


@pytest.fixture
def stand_in_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """The command's network replaced by a cheap stand-in; the ``--weights`` arguments it needs (only hashed)."""
    import fidkit.extractors
    from stand_ins import MeanColour  # tests/stand_ins.py

    monkeypatch.setattr(fidkit.extractors, "build_extractor", lambda options: MeanColour())
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"stand-in weights")
    return ["--weights", str(weights)]


def test_a_relative_output_in_a_deleted_working_directory_says_so(deleted_cwd: Path) -> None:
    from fidkit._fs import check_writable_destination

    with pytest.raises(FileNotFoundError) as info:
        check_writable_destination("rel.npz")
    assert str(info.value).startswith("cannot write rel.npz: the working directory no longer exists")
    assert str(info.value).endswith("cd to an existing folder, or give absolute paths")
    check_writable_destination(deleted_cwd / "out" / "abs.npz")  # an absolute path needs no working directory


def test_a_relative_source_in_a_deleted_working_directory_is_one_line(
    deleted_cwd: Path, stand_in_network: list[str], slow_fidkit: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fidkit.cli import main

    gone = "the working directory no longer exists (it was deleted or moved away), so a relative path cannot be " \
        "made absolute; cd to an existing folder, or give absolute paths"

    import shutil

    (deleted_cwd / "imgs").mkdir()  # a folder, not a link (a link's absolute target would need no working directory)
    for name in ("000.png", "001.png", "002.png"):
        shutil.copy(slow_fidkit / "imgs" / name, deleted_cwd / "imgs" / name)
    assert main(["stats", "../imgs", "--no-cache", "--workers", "0", *stand_in_network]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"fidkit: error: ../imgs: {gone}"
    assert main(["stats", "../imgs", "--no-cache", "--save", "rel.npz", *stand_in_network]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"fidkit: error: cannot write rel.npz: {gone}"


def test_absolute_paths_work_in_a_deleted_working_directory_workers_or_not(
    deleted_cwd: Path, stand_in_network: list[str], slow_fidkit: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fidkit.stats.core import Stats

    from fidkit.cli import main

    out = deleted_cwd / "out"
    # 300 images and two workers: multiprocessing cannot start a worker without a working directory.
    assert main(["stats", str(slow_fidkit / "imgs"), "--no-cache", "--workers", "2", "--save", str(out / "a.npz"),
                 *stand_in_network]) == 0, capsys.readouterr().err
    assert "decoding in this process instead" in capsys.readouterr().err
    assert main(["stats", str(slow_fidkit / "imgs"), "--no-cache", "--workers", "0", "--save", str(out / "b.npz"),
                 *stand_in_network]) == 0
    assert Stats.load(out / "a.npz").n == Stats.load(out / "b.npz").n == 300
    assert Stats.load(out / "a.npz").mu.tolist() == Stats.load(out / "b.npz").mu.tolist()


# --- 6. links on the way to an output --------------------------------------------------------------------------


@pytest.fixture
def linked_outdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``outdir/`` in the working directory with a dangling link, a loop, a link to a file, and a file."""
    monkeypatch.chdir(tmp_path)
    out = Path("outdir")
    out.mkdir()
    (out / "dang").symlink_to(tmp_path / "nonexistent" / "x")
    (out / "loop").symlink_to("loop")
    (out / "file").write_bytes(b"f")
    (out / "to-file").symlink_to("file")
    return out


_IN_A_FOLDER = "choose a path in a folder"


@pytest.mark.parametrize(("name", "said"), [
    ("dang", "outdir/dang is a symbolic link to a missing target ({tmp}/nonexistent/x); create that folder, remove "
             f"the link, or {_IN_A_FOLDER}"),
    ("dang/sub", "outdir/dang is a symbolic link to a missing target ({tmp}/nonexistent/x); create that folder, "
                 f"remove the link, or {_IN_A_FOLDER}"),
    ("loop", "outdir/loop is a symbolic link loop (it leads to loop, and back); fix or remove the link, or "
             f"{_IN_A_FOLDER}"),
    ("to-file", f"outdir/to-file is a symbolic link to a file (file), not a folder; {_IN_A_FOLDER}"),
    ("file", f"outdir/file is a file, not a folder; {_IN_A_FOLDER}"),
])
def test_a_link_on_the_way_to_an_output_is_said_as_it_is(
    linked_outdir: Path, tmp_path: Path, name: str, said: str
) -> None:
    from fidkit._fs import check_writable_destination

    with pytest.raises(NotADirectoryError) as info:
        check_writable_destination(linked_outdir / name / "s.npz")
    assert str(info.value) == f"cannot write outdir/{name}/s.npz: {said.format(tmp=tmp_path)}"


def test_the_command_says_a_save_path_crosses_a_dangling_link(
    linked_outdir: Path, tmp_path: Path, stand_in_network: list[str], slow_fidkit: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fidkit.cli import main

    assert main(["stats", str(slow_fidkit / "imgs"), "--save", "outdir/dang/s.npz", *stand_in_network]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"fidkit: error: cannot write outdir/dang/s.npz: outdir/dang is a symbolic link to a "
                           f"missing target ({tmp_path}/nonexistent/x)"), last


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_a_cache_home_that_is_a_broken_link_is_said_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    home = tmp_path / "home"
    home.symlink_to(tmp_path / "elsewhere" if kind == "dangling" else home)
    monkeypatch.setenv("FIDKIT_HOME", str(home))
    with pytest.raises(NotADirectoryError) as info:
        with atomic_write(cache_home() / "stats" / "entry.npz"):
            pytest.fail("nothing is written under a broken home")
    expected = "a symbolic link to a missing target" if kind == "dangling" else "a symbolic link loop"
    assert str(info.value).startswith(f"{home} is {expected}") and "File exists" not in str(info.value)


# --- 3: every relative source path in a deleted working directory gets the working-directory message ------------

_GONE = ("the working directory no longer exists (it was deleted or moved away), so a relative path cannot be made "
         "absolute; cd to an existing folder, or give absolute paths")


@pytest.fixture
def in_deleted_cwd(deleted_cwd):
    """conftest.py's deleted working directory, whose parent holds a folder of images."""
    images = deleted_cwd / "imgs"
    images.mkdir()
    for index in range(3):
        (images / f"{index}.png").write_bytes(_png(index, 6, 6))
    return deleted_cwd


@pytest.mark.parametrize("spec", ["imgs", "./imgs", "../imgs", ".", "a.npz", "sub/missing.zip"])
def test_a_relative_source_in_a_deleted_working_directory_names_the_working_directory(in_deleted_cwd, spec):
    from fidkit.errors import SourceError
    from fidkit.sources import open_source

    with pytest.raises(SourceError) as raised:
        open_source(spec, workers=0)
    assert str(raised.value) == f"{spec}: {_GONE}"
    source = open_source(in_deleted_cwd / "imgs", workers=0)  # an absolute path needs no working directory
    assert source.n_images == 3


@pytest.mark.parametrize("arguments", [["stats", "imgs"], ["stats", "./imgs"], ["compute", "imgs", "other"],
                                       ["compute", "/absent-in-this-test", "imgs"]])
def test_the_commands_say_the_working_directory_is_gone_for_a_relative_source(in_deleted_cwd, arguments, capsys):
    from fidkit.cli import main

    weights = in_deleted_cwd / "w.pth"
    weights.write_bytes(b"never read: the sources fail first")
    assert main([*arguments, "--no-cache", "--workers", "0", "--weights", str(weights)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    if arguments[1].startswith("/"):  # an absolute path that is missing is still "no such file or folder"
        assert last.startswith(f"fidkit: error: {arguments[1]}: no such file or folder")
    else:
        assert last == f"fidkit: error: {arguments[1]}: {_GONE}"


# --- 4: a write stopped by a file-size limit (EFBIG) is named as such, never as a full disk ------------------------

_UNDER_A_FILE_SIZE_LIMIT = """
import hashlib, logging, os, resource, sys
from pathlib import Path
import numpy as np
logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
from fidkit._download import Checksum, download
from fidkit.cache import store_cached_stats
from fidkit.stats import Stats
work, limit = Path(sys.argv[1]), int(sys.argv[2])
blob = work / "mirror" / "blob.bin"
blob.parent.mkdir()
blob.write_bytes(os.urandom(3 * limit))
digest = Checksum("sha256", hashlib.sha256(blob.read_bytes()).hexdigest())
stats = Stats(np.zeros(128), np.eye(128), n=10)  # about 130 kB as a file
os.environ["FIDKIT_HOME"] = str(work / "home")
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
for name, write in [
    ("download", lambda: download([blob.as_uri()], work / "out" / "blob.bin", checksum=digest, size=3 * limit)),
    ("save", lambda: stats.save(work / "out" / "stats.npz")),
    ("cache", lambda: store_cached_stats("k" * 64, stats, source_name="imgs")),
]:
    try:
        write()
        print(name, "returned")
    except Exception as error:
        print(name, type(error).__name__, error)
print("left", sorted(path.name for path in (work / "out").iterdir()))
"""


def test_a_write_stopped_by_the_file_size_limit_names_the_limit_not_a_full_disk(tmp_path):
    import os
    import subprocess
    from pathlib import Path

    limit = 40_000
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    (tmp_path / "out").mkdir()
    done = subprocess.run([sys.executable, "-c", _UNDER_A_FILE_SIZE_LIMIT, str(tmp_path), str(limit)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    by_name = {line.split(" ", 1)[0]: line for line in lines}
    named = f"this process's file-size limit ({limit:,} bytes: ulimit -f, RLIMIT_FSIZE) or than the largest file the " \
            "file system there takes, not a full disk: raise the limit (ulimit -f unlimited) and run again, or "
    assert by_name["download"].startswith("download DiskWriteError") and named in by_name["download"]
    assert by_name["save"].startswith("save StatsFileError") and named in by_name["save"]
    assert by_name["cache"] == "cache returned"  # the cache never fails a run: it warns
    warned = [line for line in lines if "are not cached" in line]
    assert len(warned) == 1 and named in warned[0] and "or pass --no-cache" in warned[0]
    assert not any("disk is full" in line or "free disk space" in line for line in lines)
    assert by_name["left"] == "left []"  # nothing half-written kept


@pytest.mark.parametrize(("hard", "advice"), [
    (None, "raise the limit (ulimit -f unlimited)"),
    (10**9, "raise the limit (ulimit -f, up to its hard limit of 1,000,000,000 bytes)"),
    (40_000, "run where the limit is higher (its hard limit forbids raising it here)"),
])
def test_the_file_size_limit_advice_follows_the_hard_limit(monkeypatch, hard, advice):
    # ulimit -f unlimited cannot work where the hard limit forbids it; EFBIG does not say which limit it met, so the
    # file system's largest file is named beside a process limit that is set.
    import errno
    import resource

    from fidkit._fs import file_size_limit_fix

    limits = (40_000, resource.RLIM_INFINITY if hard is None else hard)
    monkeypatch.setattr(resource, "getrlimit", lambda which: limits)
    fix = file_size_limit_fix(OSError(errno.EFBIG, "File too large"), elsewhere="save it elsewhere")
    assert fix.startswith("the file is larger than this process's file-size limit (40,000 bytes")
    assert "or than the largest file the file system there takes" in fix and advice in fix
    assert fix.endswith("and run again, or save it elsewhere")


def test_the_graph_cache_names_a_file_size_limit(monkeypatch, tmp_path):
    import errno
    import hashlib

    import fidkit.inception.export as export
    from fidkit.errors import FidkitError
    from fidkit.inception.runtime import ensure_graph
    from fidkit.inception.weights import ResolvedWeights

    monkeypatch.setenv("FIDKIT_HOME", str(tmp_path / "home"))

    def too_large(*args, **kwargs):
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(export, "export_graph", too_large)
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")
    resolved = ResolvedWeights(weights, hashlib.sha256(b"weights").hexdigest(), "explicit", False)
    with pytest.raises(FidkitError) as raised:
        ensure_graph(resolved)
    message = str(raised.value)
    assert "not a full disk" in message and "free disk space" not in message


# --- 7. a run leaves multiprocessing's start method to the program ----------------------------------------------------

_START_METHOD_AFTER_RUNS = r"""
import io, multiprocessing, sys
import numpy as np
import fidkit
from fidkit._download import progress_bar

images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
seen = []
for progress in (False, True):
    fidkit.compute_stats(images, weights=sys.argv[1], device="cpu", use_cache=False, progress=progress)
    seen.append(multiprocessing.get_start_method(allow_none=True))
for show in (False, True):
    with progress_bar(1000, "downloading", show=show, stream=io.StringIO()) as bar:
        bar.update(1000)
    seen.append(multiprocessing.get_start_method(allow_none=True))
multiprocessing.set_start_method("spawn")  # what the program could not do after a run
print(seen, multiprocessing.get_start_method())
"""


def test_a_run_with_or_without_a_bar_leaves_the_start_method_unset(extractor, random_weights_path: Path) -> None:
    # tqdm's default lock is a multiprocessing.RLock(), which fixes the default context ('fork') for the rest of the
    # program; fidkit makes no tqdm for a hidden bar and gives a shown one a lock of threading only. (The
    # `extractor` fixture has put the ONNX graph into the session's cache home, which the child inherits.)
    run = subprocess.run(
        [sys.executable, "-c", _START_METHOD_AFTER_RUNS, str(random_weights_path)], capture_output=True, text=True,
        timeout=300, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["[None,", "None,", "None,", "None]", "spawn"]
    assert "3/3" in run.stderr  # the shown bar was drawn
