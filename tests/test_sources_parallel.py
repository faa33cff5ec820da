"""fidkit.sources: decoding in worker processes gives the in-process pixels and cleans up."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fidkit.errors import ImageError, InputError
from fidkit.sources import open_source, parallel

from image_files import _folder


@pytest.fixture(scope="module")
def jpeg_zip(tmp_path_factory) -> Path:
    """A zip of 90 small JPEGs of three sizes, two of them bad: enough for several worker tasks."""
    folder = tmp_path_factory.mktemp("parallel")
    target = folder / "many.zip"
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(target, "w") as archive:
        for index in range(90):
            side = (12, 16, 20)[index % 3]
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            path = folder / "tmp.jpg"
            Image.fromarray(pixels).save(path, quality=90)
            data = path.read_bytes()
            if index in (41, 77):
                data = data[: len(data) // 3]
            archive.writestr(f"d{index % 4}/{index:03d}.JPG", data)
    return target


@pytest.fixture
def small_tasks(monkeypatch):
    # Force the pool path on a small fixture, with several tasks per worker.
    monkeypatch.setattr(parallel, "IN_PROCESS_MAX_IMAGES", 0)
    monkeypatch.setattr(parallel, "_DEFAULT_CHUNK_FILES", 7)


def _collect(source, batch_size=8):
    return [batch.copy() for batch in source.batches(batch_size)]


def test_workers_give_the_in_process_pixels(jpeg_zip, small_tasks):
    serial = open_source(jpeg_zip, workers=0, skip_bad=True)
    pooled = open_source(jpeg_zip, workers=2, skip_bad=True)
    serial_batches, pooled_batches = _collect(serial), _collect(pooled)
    assert len(serial_batches) == len(pooled_batches)
    for a, b in zip(serial_batches, pooled_batches):
        np.testing.assert_array_equal(a, b)
    assert sum(len(b) for b in pooled_batches) == 88
    assert pooled.skipped == serial.skipped
    assert [name for name, _ in pooled.skipped] == ["d1/041.JPG", "d1/077.JPG"]
    assert pooled.lossy


def test_workers_report_bad_files_like_in_process(jpeg_zip, small_tasks):
    with pytest.raises(ImageError, match=r"2 of 90.*d1/041.JPG.*d1/077.JPG.*--skip-bad"):
        _collect(open_source(jpeg_zip, workers=2))


def _live_children() -> list[multiprocessing.Process]:
    return [child for child in multiprocessing.active_children() if child.name != "ForkServerProcess"]


def test_closing_early_terminates_workers(jpeg_zip, small_tasks):
    source = open_source(jpeg_zip, workers=2, skip_bad=True)
    stream = source.batches(4)
    first = next(stream)
    assert first.shape[0] == 4
    assert len(multiprocessing.active_children()) >= 2
    stream.close()
    deadline = time.monotonic() + 10
    while _live_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _live_children() == []


def test_keyboard_interrupt_in_consumer_terminates_workers(jpeg_zip, small_tasks):
    source = open_source(jpeg_zip, workers=2, skip_bad=True)
    with pytest.raises(KeyboardInterrupt):
        for index, _ in enumerate(source.batches(4)):
            if index == 1:
                raise KeyboardInterrupt  # as if Ctrl-C arrived while the network ran
    deadline = time.monotonic() + 10
    while _live_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _live_children() == []


def test_workers_argument_is_checked():
    with pytest.raises(ValueError, match="workers"):
        parallel.resolve_workers(-1)
    assert 1 <= parallel.default_workers() <= parallel.MAX_DEFAULT_WORKERS


def test_workers_follow_the_integer_rule_of_limit_and_seed(tmp_path):
    # numpy integers are accepted like limit and seed; bool and negatives are refused.
    assert parallel.resolve_workers(np.int64(2)) == 2
    assert type(parallel.resolve_workers(np.int64(2))) is int
    for bad in (True, -1, np.int64(-1), 1.0):
        with pytest.raises(InputError, match="workers"):
            parallel.resolve_workers(bad)
    # Checked by open_source for every kind of source, not only files.
    images = np.zeros((2, 4, 4, 3), np.uint8)
    for bad in (-1, True, 2.5):
        with pytest.raises(InputError, match="workers"):
            open_source(images, workers=bad)
    assert open_source(images, workers=np.int64(0)).n_images == 2


_INTERRUPTED_SCRIPT = """
import multiprocessing, signal, sys, time
from fidkit.sources import open_source, parallel

def main():
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job inherits SIG_IGN
    parallel.IN_PROCESS_MAX_IMAGES = 0
    parallel._DEFAULT_CHUNK_FILES = 3
    for index, batch in enumerate(open_source(sys.argv[1], workers=2, skip_bad=True).batches(2)):
        if index == 0:
            pids = [p.pid for p in multiprocessing.active_children() if p.name != "ForkServerProcess"]
            print(" ".join(map(str, pids)), flush=True)
        time.sleep(0.5)  # the network, slowly

if __name__ == "__main__":
    main()
"""


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs POSIX process groups")
def test_ctrl_c_leaves_no_worker_behind(jpeg_zip, tmp_path):
    script = tmp_path / "interrupted.py"
    script.write_text(_INTERRUPTED_SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script), str(jpeg_zip)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a terminal job
    )
    try:
        worker_pids = [int(pid) for pid in process.stdout.readline().split()]
        assert len(worker_pids) == 2
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: the whole group
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    assert stderr.count("KeyboardInterrupt") == 1  # the parent's only; workers stay quiet
    deadline = time.monotonic() + 10
    while any(_pid_alive(pid) for pid in worker_pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_pid_alive(pid) for pid in worker_pids)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not "left behind" work; treat it as gone once it has exited.
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return stat_file.read().split()[2] != "Z"
    except OSError:
        return True


# --- hostile review (issue 9), 8: decode workers (and the forkserver) end when their parent is killed ---------------


_KILLED_SCRIPT = """
import sys, time
from fidkit.sources import open_source, parallel

def main():
    parallel.IN_PROCESS_MAX_IMAGES = 0
    parallel._DEFAULT_CHUNK_FILES = 2
    for index, batch in enumerate(open_source(sys.argv[1], workers=2).batches(1)):
        if index == 0:
            print("decoding", flush=True)
        time.sleep(1)  # the network, slowly: the workers wait with the files open

if __name__ == "__main__":
    main()
"""


def _proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat_file:
                fields = stat_file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def _descendants(pid: int) -> list[int]:
    children = _proc_children()
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return stat_file.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds the workers through /proc")
@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_killing_the_parent_leaves_no_worker_behind(tmp_path, signal_name):
    import signal
    import subprocess
    import sys
    import time

    root = _folder(tmp_path / "images", 40)
    script = tmp_path / "killed.py"
    script.write_text(_KILLED_SCRIPT)
    import fidkit

    package_root = str(Path(fidkit.__file__).resolve().parents[1])  # this checkout, not an installed copy
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    process = subprocess.Popen(
        [sys.executable, str(script), str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )
    left: list[int] = []
    try:
        assert process.stdout.readline().strip() == "decoding", process.stderr.read()
        helpers = _descendants(process.pid)
        assert len(helpers) >= 3, helpers  # the forkserver and two workers (and a resource tracker)
        process.send_signal(getattr(signal, signal_name))
        process.wait(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            left = [pid for pid in helpers if _running(pid)]
            if not left:
                break
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        for pid in left:  # never leave them to the next test
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    assert left == [], f"still running {15} s after {signal_name} of their parent: {left}"
