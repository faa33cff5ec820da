"""Round 6 review, part B: signals around ray.init, file:// listings, a deleted working directory, file-size
limits, a CIFAR folder's listing for Ray actors, and half-sample sizes that only the drawn sides need."""

from __future__ import annotations

import signal
import sys

import pytest

# --- 1: ray.init does not keep the SIGTERM / SIGINT handlers installed before it ---------------------------------


class _RayThatTakesSignals:
    """What Ray does to the driver's signals: init installs its own SIGTERM handler (sys.exit), here SIGINT's too;
    shutdown leaves SIGTERM at the default."""

    def __init__(self):
        self.up = False

    def is_initialized(self):
        return self.up

    def init(self, **kwargs):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.up = True

    def shutdown(self):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # what Ray's shutdown does from C
        self.up = False


@pytest.fixture
def signals_kept():
    """The test's own handlers, put back as they were whatever the test does."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("shared", [False, True])
def test_the_handlers_installed_before_ray_init_are_put_back_right_after_it(monkeypatch, signals_kept, shared):
    import contextlib

    import fidkit.cluster.connect as connect

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setitem(connect._session, "depth", 0)
    monkeypatch.setitem(connect._session, "started", False)
    monkeypatch.setitem(connect._session, "address", None)
    fake = _RayThatTakesSignals()
    monkeypatch.setitem(sys.modules, "ray", fake)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    def on_int(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_int)
    with connect.shared_session() if shared else contextlib.nullcontext():
        with connect.connected(fake, None):
            assert fake.up
            assert signal.getsignal(signal.SIGTERM) is on_term and signal.getsignal(signal.SIGINT) is on_int
    assert not fake.up
    assert signal.getsignal(signal.SIGTERM) is on_term and signal.getsignal(signal.SIGINT) is on_int


def test_the_handlers_are_put_back_when_ray_init_fails(monkeypatch, signals_kept):
    import fidkit.cluster.connect as connect
    from fidkit.errors import FidkitError

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setitem(connect._session, "depth", 0)
    fake = _RayThatTakesSignals()

    def failing_init(**kwargs):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise RuntimeError("no room for an instance")

    fake.init = failing_init
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with pytest.raises(FidkitError, match="no room for an instance"):
        with connect.connected(fake, None):
            pass
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_that_code_waiting_in_c_turns_into_a_plain_interrupt_still_ends_as_terminated(monkeypatch, capsys,
                                                                                              signals_kept):
    # ray.get (and other waits in C) catch what the handler raises and raise a new, plain KeyboardInterrupt.
    import os

    from fidkit import cli

    def waits_in_c(args):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000):  # the handler runs between bytecodes
                pass
        except KeyboardInterrupt:
            raise KeyboardInterrupt from None
        return 0

    monkeypatch.setattr(cli.commands, "info", waits_in_c)
    assert cli.main(["info", "anything.npz"]) == 143
    assert "fidkit: terminated" in capsys.readouterr().err

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.commands, "info", interrupted)
    assert cli.main(["info", "anything.npz"]) == 130  # the next command starts afresh: Ctrl-C is an interrupt
    assert "fidkit: interrupted" in capsys.readouterr().err


# --- 2: a file:// URI lists exactly what the same local folder lists -----------------------------------------------

def _png_bytes(seed: int, side: int = 6) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _tree_with_links(root):
    import os

    for index, name in enumerate(["top.png", "real/one.png", "real/deeper/two.png", ".thumbs/hidden.png",
                                  "real/.ipynb_checkpoints/x.png", "other/three.png"]):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(_png_bytes(index))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    os.symlink("real", root / "again")  # a second name of a folder: read once
    os.symlink("real/deeper", root / "zlink")  # a second name of a subfolder
    os.symlink("top.png", root / "same.png")  # a link to a file is a file
    os.symlink("missing.png", root / "dangling.png")  # a link to nothing: a bad file, in both
    os.symlink(".thumbs", root / "thumbs-link")  # a hidden folder through a link is read, as the walk does
    (root / "notes.txt").write_text("x")


def _read_all(source):
    import numpy as np

    total, rows = 0, 0
    for batch in source.batches(3):
        total += int(np.asarray(batch, dtype=np.int64).sum())
        rows += len(batch)
    return rows, total, sorted(name for name, _ in source.skipped)  # the readers word the reasons their way


def test_a_file_uri_lists_and_reads_exactly_what_the_same_local_folder_does(tmp_path):
    pytest.importorskip("pyarrow.fs")
    from fidkit.cluster.uri import open_uri
    from fidkit.sources import open_source

    root = tmp_path / "tree"
    root.mkdir()
    _tree_with_links(root)
    read = dict(limit=None, seed=None, skip_bad=True, exif_transpose=False, workers=0)
    folder = open_source(root, **read)
    uri = open_uri(root.as_uri(), **read)
    assert uri.members == folder.members == [
        "broken.png", "dangling.png", "other/three.png", "real/deeper/two.png", "real/one.png", "same.png",
        "thumbs-link/hidden.png", "top.png"]
    assert uri.ignored == folder.ignored
    assert sum(uri.ignored.values()) == 4  # .thumbs/, real/.ipynb_checkpoints/, again/ and zlink/ (read already)
    assert _read_all(uri) == _read_all(folder)
    rows, _, skipped = _read_all(uri)
    assert rows == 6 and skipped == ["broken.png", "dangling.png"]
    # The listing's sizes and times are those a node's check of the listing reads (pyarrow's stat of the file).
    identity = uri._identity(hash_content=False)
    import pyarrow.fs

    file_system = pyarrow.fs.LocalFileSystem()
    for member, size, mtime_ns in identity["members"]:
        info = file_system.get_file_info(str(root / member))
        if info.type == pyarrow.fs.FileType.NotFound:
            assert (size, mtime_ns) == (-1, -1)
        else:
            assert (size, mtime_ns) == (info.size, info.mtime_ns)


# --- 3: every relative source path in a deleted working directory gets the working-directory message ------------

_GONE = ("the working directory no longer exists (it was deleted or moved away), so a relative path cannot be made "
         "absolute; cd to an existing folder, or give absolute paths")


@pytest.fixture
def in_deleted_cwd(deleted_cwd):
    """conftest.py's deleted working directory, whose parent holds a folder of images."""
    images = deleted_cwd / "imgs"
    images.mkdir()
    for index in range(3):
        (images / f"{index}.png").write_bytes(_png_bytes(index))
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
    named = f"this process's file-size limit ({limit:,} bytes: ulimit -f, RLIMIT_FSIZE), not a full disk: " \
            "raise the limit (ulimit -f unlimited)"
    assert by_name["download"].startswith("download DiskWriteError") and named in by_name["download"]
    assert by_name["save"].startswith("save StatsFileError") and named in by_name["save"]
    assert by_name["cache"] == "cache returned"  # the cache never fails a run: it warns
    warned = [line for line in lines if "are not cached" in line]
    assert len(warned) == 1 and named in warned[0] and "or pass --no-cache" in warned[0]
    assert not any("disk is full" in line or "free disk space" in line for line in lines)
    assert by_name["left"] == "left []"  # nothing half-written kept


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


# --- 5: an actor compares each batch file of a CIFAR python folder with the driver's listing ------------------------

def _cifar_folder(folder, n_per_file=2):
    import numpy as np

    from fidkit.testing import cifar_batch

    folder.mkdir()
    rng = np.random.default_rng(5)
    written = {}
    for index in range(1, 6):
        images = rng.integers(0, 256, (n_per_file, 32, 32, 3), dtype=np.uint8)
        (folder / f"data_batch_{index}").write_bytes(cifar_batch(images, labels=[0] * n_per_file))
        written[f"data_batch_{index}"] = images
    (folder / "batches.meta").write_bytes(b"not read")
    return written


def _cifar_actor(folder):
    """The actor's side, in this process: the driver's work as Ray ships it (pickled), opened as a node opens it."""
    import pickle

    from fidkit.cluster.shards import ShardWorker, work_for
    from fidkit.options import RunOptions
    from fidkit.sources import open_source

    work = work_for(open_source(folder), RunOptions(device="cpu", batch_size=2, workers=0), "5" * 64, False)
    worker = ShardWorker()
    worker.work = pickle.loads(pickle.dumps(work))
    return work, worker


def test_a_cifar_folder_sent_by_path_is_listed_file_by_file_and_checked_by_each_actor(tmp_path):
    import os

    import numpy as np

    from fidkit.errors import SourceError
    from fidkit.testing import cifar_batch

    folder = tmp_path / "cifar-10-batches-py"
    written = _cifar_folder(folder)
    work, worker = _cifar_actor(folder)
    assert work.mode == "reopen" and work.listing is not None and work.listing.kind == "files"
    assert work.listing.names == tuple(f"data_batch_{index}" for index in range(1, 6))
    assert worker._open().n_images == 10  # the same files: opened as on the driver

    third = folder / "data_batch_3"
    before = os.stat(third)
    original = third.read_bytes()
    other = cifar_batch(np.ascontiguousarray(written["data_batch_3"][::-1]), labels=[0, 0])  # the images swapped
    assert len(other) == len(original)
    third.write_bytes(other)  # another version of the same size, written later: other pixels, the same count
    os.utime(third, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    with pytest.raises(SourceError, match=r"data_batch_3 in .*cifar-10-batches-py differs on this node from the "
                                          r"driver's listing \(\d[\d,]* bytes, modified"):
        worker._open()
    third.write_bytes(original)
    os.utime(third, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert worker._open().n_images == 10
    (folder / "data_batch_5").unlink()  # a node that lacks a batch file: named, before the folder is opened
    with pytest.raises(SourceError, match=r"data_batch_5 in .* differs on this node from the driver's listing \(no "
                                          r"such file here"):
        worker._open()


# --- 6: IS (a)'s half-sample interval does not need side b's rows; IS (b)'s does, and says so before any work -------

def _features(n, *, logits, seed=0):
    import numpy as np

    from fidkit import Features

    rng = np.random.default_rng(seed)
    return Features(rng.normal(size=(n, 8)), logits=rng.normal(size=(n, 20)) if logits else None)



@pytest.mark.parametrize("n_b", [1, 2, 3])
def test_the_interval_of_is_a_does_not_depend_on_the_size_of_side_b(n_b):
    import warnings

    from fidkit.metrics import IntervalSpec, evaluate

    a = _features(100, logits=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with_b = evaluate(a, _features(n_b, logits=False, seed=n_b), "is", ci=IntervalSpec(n_resamples=10))
        reference = evaluate(a, _features(50, logits=False, seed=9), "is", ci=IntervalSpec(n_resamples=10))
    got, expected = with_b["is_a"].interval, reference["is_a"].interval
    assert (got.low, got.high) == (expected.low, expected.high)  # side b is never drawn for IS (a)


def test_is_b_whose_half_samples_are_too_small_is_refused_before_any_work_naming_it(monkeypatch):
    import fidkit.metrics.table as table
    from fidkit.errors import InputError
    from fidkit.metrics import IntervalSpec, evaluate

    def no_work(*args, **kwargs):
        raise AssertionError("the Inception Score was computed before the sizes were checked")

    monkeypatch.setattr(table, "inception_score", no_work)
    with pytest.raises(InputError, match=r"keeps 0 of the 1 images of side b, but the Inception Score's 1 splits of "
                                         r"IS \(b\) need one row each"):
        evaluate(_features(100, logits=True), _features(1, logits=True), "is", is_splits=1,
                 ci=IntervalSpec(n_resamples=10))
