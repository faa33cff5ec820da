"""When the machine runs short (memory, open files, a worker killed), not the input (hostile round 5).

1. A file that fails because of the environment is not a bad file: running out of memory while reading or
   decoding it, or of file descriptors (EMFILE, ENFILE, ENOMEM), stops the run with an error naming the file
   and the fix, also with ``skip_bad``. A file skipped for a cause that can go away without the file changing
   (permissions, EIO, a stale or timed-out network file system) is a counted skip that is not cached, so the
   next run reads it again; a file that is bad in itself (ELOOP, EISDIR, a truncated image) stays cached.
2. A decoding worker killed mid-run (the out-of-memory killer) is reported as such, whichever call of the pool
   meets the broken pool first (``submit`` or ``result``).
3. Memory running out in the network (onnxruntime's "Failed to allocate memory", CUDA's allocation failures)
   is an error saying so with the batch size and what to lower; when creating the session, it is not taken for
   a damaged cached graph (which would be rebuilt and the user told to delete it).
4. Too few file descriptors (``ulimit -n``) or no usable temporary folder when the decoding workers start is an
   error saying which limit to raise, or to decode in the calling process.

Every failure here is injected (a reader, ``Image.load``, a pool or a session that raises): none needs the
machine to run out of anything.
"""

from __future__ import annotations

import concurrent.futures
import errno
import os
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fidkit.errors import FidkitError, ImageError, ResourceError
from fidkit.sources import files, open_source, parallel

from image_files import _count, _noise
from stand_ins import MeanColour


# --- hostile round 5, 1: the environment is not the file's fault ----------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Five small PNGs; ``c.png`` alone is 13x13 (the others 10x10), so a patched decoder can single it out."""
    root = tmp_path / "imgs"
    root.mkdir()
    for index, name in enumerate("abcde"):
        _noise(13 if name == "c" else 10, index).save(root / f"{name}.png")
    return root


def _fail_reading(monkeypatch, member: str, exc: BaseException) -> dict[str, bool]:
    """Make the folder reader raise `exc` for `member` while the returned switch is on."""
    real = files.FolderReader.read
    switch = {"on": True}

    def read(self, name, max_bytes=None):
        if switch["on"] and name == member:
            raise exc
        return real(self, name, max_bytes)

    monkeypatch.setattr(files.FolderReader, "read", read)
    return switch


def test_memory_running_out_while_decoding_stops_the_run_naming_the_file(folder, monkeypatch):
    real_load = Image.Image.load

    def load(self):
        if self.size == (13, 13):
            raise MemoryError
        return real_load(self)

    monkeypatch.setattr(Image.Image, "load", load)
    for skip_bad in (True, False):
        with pytest.raises(ResourceError, match=r"c\.png.*memory") as caught:
            _count(open_source(folder, workers=0, skip_bad=skip_bad))
        message = str(caught.value)
        assert "--workers 0" in message and "--batch-size" in message
        assert "--skip-bad" not in message  # not offered as a way out: it would make N depend on the machine


def test_memory_running_out_while_reading_stops_the_run_naming_the_file(folder, monkeypatch):
    _fail_reading(monkeypatch, "d.png", MemoryError())
    with pytest.raises(ResourceError, match=r"d\.png.*memory.*--workers 0"):
        _count(open_source(folder, workers=0, skip_bad=True))


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOMEM])
def test_running_out_of_descriptors_or_kernel_memory_while_reading_stops_the_run(folder, monkeypatch, code):
    _fail_reading(monkeypatch, "b.png", OSError(code, os.strerror(code), str(folder / "b.png")))
    with pytest.raises(ResourceError, match=r"b\.png") as caught:
        _count(open_source(folder, workers=0, skip_bad=True))
    message = str(caught.value)
    assert os.strerror(code) in message and "--workers 0" in message
    assert {errno.EMFILE: "ulimit -n", errno.ENFILE: "fs.file-max", errno.ENOMEM: "free memory"}[code] in message


@pytest.mark.parametrize(
    "code", [errno.EACCES, errno.EPERM, errno.EIO, errno.ETIMEDOUT, errno.ESTALE, errno.EAGAIN, errno.EBUSY]
)
def test_a_skip_that_can_go_away_without_the_file_changing_is_not_cached(folder, fidkit_home, monkeypatch, code):
    from fidkit.api import compute_stats_with_report

    switch = _fail_reading(monkeypatch, "e.png", OSError(code, os.strerror(code), str(folder / "e.png")))
    first, first_side = compute_stats_with_report(folder, extractor=MeanColour(), workers=0, skip_bad=True)
    assert first.n == 4
    assert [name for name, _ in first_side.skipped] == ["e.png"]
    assert "not cached" in first_side.skipped[0][1]
    assert not list(fidkit_home.rglob("*.npz"))  # nothing stored under the folder's key

    switch["on"] = False  # chmod fixed, the network file system back
    second, second_side = compute_stats_with_report(folder, extractor=MeanColour(), workers=0, skip_bad=True)
    assert not second_side.cached
    assert second.n == 5 and second_side.skipped == ()
    # A clean run is cached as usual.
    third, third_side = compute_stats_with_report(folder, extractor=MeanColour(), workers=0, skip_bad=True)
    assert third_side.cached and third.n == 5


@pytest.mark.parametrize("code", [errno.ELOOP, errno.EISDIR, errno.ENAMETOOLONG])
def test_a_file_bad_in_itself_is_a_counted_skip_that_is_cached(folder, fidkit_home, monkeypatch, code):
    from fidkit.api import compute_stats_with_report

    _fail_reading(monkeypatch, "a.png", OSError(code, os.strerror(code), str(folder / "a.png")))
    first, first_side = compute_stats_with_report(folder, extractor=MeanColour(), workers=0, skip_bad=True)
    assert first.n == 4 and [name for name, _ in first_side.skipped] == ["a.png"]
    again, again_side = compute_stats_with_report(folder, extractor=MeanColour(), workers=0, skip_bad=True)
    assert again_side.cached and again.n == 4


def test_a_permission_skip_is_read_again_once_the_file_is_readable(folder, fidkit_home):
    """The real thing, where the user may change permissions: chmod 000, then chmod 644."""
    from fidkit.api import compute_stats_with_report

    locked = folder / "b.png"
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as a user who reads any file (root)")
        first, first_side = compute_stats_with_report(folder, extractor=MeanColour(), workers=0, skip_bad=True)
    finally:
        locked.chmod(0o644)
    assert first.n == 4 and [name for name, _ in first_side.skipped] == ["b.png"]
    second, second_side = compute_stats_with_report(folder, extractor=MeanColour(), workers=0, skip_bad=True)
    assert not second_side.cached and second.n == 5


class _ReaderOutOfMemoryOn:
    """A picklable folder reader that runs out of memory on one member (in whichever process reads it)."""

    def __init__(self, root: Path, member: str) -> None:
        self.inner = files.FolderReader(root)
        self.member = member

    def read(self, member: str, max_bytes: int | None = None) -> bytes:
        if member == self.member:
            raise MemoryError
        return self.inner.read(member, max_bytes)

    def close(self) -> None:
        self.inner.close()


def test_memory_running_out_in_a_worker_process_is_the_same_error(tmp_path, monkeypatch):
    monkeypatch.setattr(parallel, "IN_PROCESS_MAX_IMAGES", 0)
    monkeypatch.setattr(parallel, "_DEFAULT_CHUNK_FILES", 3)
    root = tmp_path / "many"
    root.mkdir()
    names = [f"{index:02d}.png" for index in range(12)]
    for index, name in enumerate(names):
        _noise(8, index).save(root / name)
    stream = parallel.decode_stream(_ReaderOutOfMemoryOn(root, "07.png"), names, workers=2)
    with pytest.raises(ResourceError, match=r"07\.png.*memory.*--workers 0"):
        for _ in stream:
            pass


# --- hostile round 5, 2 and 4: the pool of decoding workers ---------------------------------------------------------


class _Pool:
    """Stands in for ProcessPoolExecutor: decodes in this process, and breaks like a pool whose worker was
    killed once `breaks_after` tasks were submitted (``submit`` raises BrokenProcessPool)."""

    breaks_after = 0
    submit_error: type[BaseException] | BaseException = BrokenProcessPool

    def __init__(self, max_workers, mp_context, initializer, initargs):
        self.reader, self.exif_transpose, self.max_pixels, self.budget, _ = initargs
        self.submitted = 0

    def submit(self, function, chunk):
        self.submitted += 1
        if self.submitted > self.breaks_after:
            error = self.submit_error
            raise error("A child process terminated abruptly, the process pool is not usable anymore") if isinstance(
                error, type
            ) else error
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_result(
            parallel._decode_members(self.reader, chunk, self.exif_transpose, self.max_pixels, self.budget)
        )
        return future

    def shutdown(self, wait=True, cancel_futures=False):
        pass

    def terminate_workers(self):
        pass


@pytest.fixture
def many(tmp_path: Path) -> Path:
    root = tmp_path / "many"
    root.mkdir()
    for index in range(30):
        _noise(8, index).save(root / f"{index:02d}.png")
    return root


@pytest.mark.parametrize(
    "breaks_after, pixel_budget",
    [
        (0, None),  # the first submission (filling the pipeline)
        (5, None),  # a later submission (the next chunk, once one is consumed)
        (5, 1),  # a resubmission of a chunk's rest (a worker stopped at its pixel budget)
    ],
)
def test_a_worker_killed_is_reported_when_submit_meets_the_broken_pool(many, monkeypatch, breaks_after, pixel_budget):
    monkeypatch.setattr(parallel, "IN_PROCESS_MAX_IMAGES", 0)
    monkeypatch.setattr(parallel, "_DEFAULT_CHUNK_FILES", 3)
    if pixel_budget is not None:
        monkeypatch.setattr(parallel, "_CHUNK_PIXEL_BYTES", pixel_budget)
    monkeypatch.setattr(_Pool, "breaks_after", breaks_after)
    monkeypatch.setattr(parallel.concurrent.futures, "ProcessPoolExecutor", _Pool)
    with pytest.raises(ImageError, match=r"decoding worker process died.*memory exhausted.*--workers 0"):
        _count(open_source(many, workers=2, skip_bad=True))


def test_memory_running_out_in_a_worker_outside_one_file_is_a_resource_error(many, monkeypatch):
    # A worker whose task fails with MemoryError outside the decoding of one file (sending its pixels back).
    class _PoolOutOfMemory(_Pool):
        breaks_after = 10**6

        def submit(self, function, chunk):
            future = super().submit(function, chunk)
            failed: concurrent.futures.Future = concurrent.futures.Future()
            failed.set_exception(MemoryError())
            return failed if chunk[0][0] >= 6 else future

    monkeypatch.setattr(parallel, "IN_PROCESS_MAX_IMAGES", 0)
    monkeypatch.setattr(parallel, "_DEFAULT_CHUNK_FILES", 3)
    monkeypatch.setattr(parallel.concurrent.futures, "ProcessPoolExecutor", _PoolOutOfMemory)
    with pytest.raises(ResourceError, match=r"memory ran out in a decoding worker.*06\.png \.\. 08\.png.*--workers 0"):
        _count(open_source(many, workers=2, skip_bad=True))


def test_a_worker_killed_for_real_is_reported_not_an_internal_error(many, monkeypatch):
    """SIGKILL one worker (as the out-of-memory killer does) after the first image: whichever of submit and
    result meets the broken pool first, the error says a worker died and what to do."""
    import multiprocessing
    import signal
    import time

    monkeypatch.setattr(parallel, "IN_PROCESS_MAX_IMAGES", 0)
    monkeypatch.setattr(parallel, "_DEFAULT_CHUNK_FILES", 1)
    names = sorted(path.name for path in many.iterdir())
    stream = parallel.decode_stream(files.FolderReader(many), names, workers=2)
    with pytest.raises(ImageError, match=r"decoding worker process died.*--workers 0"):
        for position, _ in enumerate(stream):
            if position == 0:
                workers = [child for child in multiprocessing.active_children() if child.name != "ForkServerProcess"]
                os.kill(workers[-1].pid, signal.SIGKILL)
                time.sleep(0.3)  # the pool notices; the next submit (or result) meets the broken pool


@pytest.mark.parametrize("code, limit", [(errno.EMFILE, "ulimit -n"), (errno.ENFILE, "fs.file-max")])
def test_too_few_file_descriptors_to_start_the_workers_says_which_limit(many, monkeypatch, code, limit):
    monkeypatch.setattr(parallel, "IN_PROCESS_MAX_IMAGES", 0)

    def no_pool(*args, **kwargs):
        raise OSError(code, os.strerror(code))  # the pool's pipes, made in its constructor

    monkeypatch.setattr(parallel.concurrent.futures, "ProcessPoolExecutor", no_pool)
    expected = rf"decoding worker processes: {os.strerror(code)}.*{limit}.*--workers 0"
    with pytest.raises(ResourceError, match=expected):
        _count(open_source(many, workers=2))

    # The same when the descriptors run out as the workers start (in submit, first or later).
    monkeypatch.setattr(parallel.concurrent.futures, "ProcessPoolExecutor", _Pool)
    monkeypatch.setattr(_Pool, "submit_error", OSError(code, os.strerror(code)))
    for breaks_after in (0, 1):
        monkeypatch.setattr(_Pool, "breaks_after", breaks_after)
        with pytest.raises(ResourceError, match=expected):
            _count(open_source(many, workers=2))


def test_the_forkserver_ending_while_starting_a_worker_says_what_to_do(many, monkeypatch):
    # What a forkserver that ran out of descriptors receiving a new worker's ends gives the caller (in submit).
    monkeypatch.setattr(parallel, "IN_PROCESS_MAX_IMAGES", 0)
    monkeypatch.setattr(parallel.concurrent.futures, "ProcessPoolExecutor", _Pool)
    monkeypatch.setattr(_Pool, "submit_error", EOFError("unexpected EOF"))
    with pytest.raises(ResourceError, match=r"decoding worker processes.*ulimit -n.*--workers 0"):
        _count(open_source(many, workers=2))


def test_no_usable_temporary_folder_for_the_forkserver_says_what_to_do(many, monkeypatch):
    # What tempfile raises when it cannot create a file in any candidate folder: out of descriptors, or every
    # temporary folder full or read-only. The forkserver needs one for its socket.
    monkeypatch.setattr(parallel, "IN_PROCESS_MAX_IMAGES", 0)
    monkeypatch.setattr(parallel.concurrent.futures, "ProcessPoolExecutor", _Pool)
    monkeypatch.setattr(
        _Pool, "submit_error",
        FileNotFoundError(errno.ENOENT, "No usable temporary directory found in ['/tmp', '/var/tmp', '/usr/tmp']"),
    )
    with pytest.raises(ResourceError, match=r"temporary.*TMPDIR.*ulimit -n.*--workers 0"):
        _count(open_source(many, workers=2))


# --- hostile round 5, 3: memory running out in the network ----------------------------------------------------------


class _Input:
    name = "images"


class _Session:
    """A stand-in onnxruntime session whose runs fail with `error`."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    def get_providers(self):
        return ["CPUExecutionProvider"]

    def get_inputs(self):
        return [_Input()]

    def run(self, names, feeds):
        if self.error is not None:
            raise self.error
        return [np.zeros((len(feeds["images"]), 2048), np.float32) for _ in names]

    def io_binding(self):
        return _Binding()

    def run_with_iobinding(self, binding):
        if self.error is not None:
            raise self.error


class _Binding:
    def bind_cpu_input(self, key, value):
        pass

    def bind_output(self, *args, **kwargs):
        pass

    def copy_outputs_to_cpu(self):
        return []


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """FeatureExtractor's set-up without weights or a graph export; returns the list of ensure_graph calls and a
    setter for what creating a session does."""
    from fidkit.inception import runtime
    from fidkit.inception.weights import ResolvedWeights

    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")
    graph = tmp_path / "graph.onnx"
    graph.write_bytes(b"graph")
    calls: list[bool] = []

    def ensure_graph(resolved, *, convention="tf", rebuild=False):
        calls.append(rebuild)
        return runtime.Graph(graph, "0" * 64, built=rebuild)

    resolved = ResolvedWeights(weights, "a" * 64, "explicit", False)
    monkeypatch.setattr(runtime, "locate_weights", lambda weights_arg, progress=True: resolved)
    monkeypatch.setattr(runtime, "ensure_graph", ensure_graph)
    return calls


def _session_factory(monkeypatch, create):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "InferenceSession", create)


@pytest.mark.parametrize(
    "text",
    [
        "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Conv node. Status Message: "
        "bfc_arena.cc:360 void* onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, onnxruntime::Stream*) "
        "Failed to allocate memory for requested buffer of size 829785600",
        "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : std::bad_alloc",
        "CUDNN failure 4: CUDNN_STATUS_ALLOC_FAILED ; GPU=0 ; expr=cudnnFindConvolutionForwardAlgorithmEx",
        "CUDA failure 2: out of memory ; GPU=0 ; expr=cudaMalloc(&p, size)",
        "cudaErrorMemoryAllocation",
    ],
)
@pytest.mark.parametrize("on_gpu", [False, True])
def test_memory_running_out_in_the_network_names_the_batch_size(no_network, monkeypatch, text, on_gpu):
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    from fidkit.inception.runtime import FeatureExtractor

    _session_factory(monkeypatch, lambda *args, **kwargs: _Session(Fail(text)))
    extractor = FeatureExtractor(device="cpu", batch_size=7)
    extractor.on_gpu = on_gpu  # the GPU path binds host buffers and runs with io_binding
    with pytest.raises(ResourceError) as caught:
        extractor(np.zeros((10, 16, 16, 3), np.uint8))
    message = str(caught.value)
    assert "memory" in message and "batch size 7" in message
    assert "--batch-size" in message and "batch_size=" in message
    assert "\n" not in message


def test_other_network_failures_are_not_taken_for_memory(no_network, monkeypatch):
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    from fidkit.inception.runtime import FeatureExtractor

    _session_factory(monkeypatch, lambda *args, **kwargs: _Session(Fail("Got invalid dimensions for input")))
    extractor = FeatureExtractor(device="cpu", batch_size=4)
    with pytest.raises(Fail):
        extractor(np.zeros((3, 16, 16, 3), np.uint8))
    _session_factory(monkeypatch, lambda *args, **kwargs: _Session(None))
    assert FeatureExtractor(device="cpu", batch_size=4)(np.zeros((3, 16, 16, 3), np.uint8)).shape == (3, 2048)


def test_memory_running_out_creating_the_session_is_not_a_damaged_graph(no_network, monkeypatch):
    from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

    from fidkit.inception.runtime import FeatureExtractor

    def create(*args, **kwargs):
        raise RuntimeException(
            "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Exception during initialization: std::bad_alloc"
        )

    _session_factory(monkeypatch, create)
    with pytest.raises(ResourceError, match=r"memory") as caught:
        FeatureExtractor(device="cpu")
    assert "delete" not in str(caught.value)
    assert no_network == [False]  # the cached graph was not rebuilt


@pytest.fixture
def gpu_listed(monkeypatch):
    """An onnxruntime that lists CUDA (no GPU is needed: sessions are stand-ins)."""
    from fidkit.inception import runtime

    monkeypatch.setattr(runtime, "why_device_unusable", lambda ort, device: None)
    monkeypatch.setattr(runtime, "preload_gpu_libraries", lambda ort: None)


def test_a_full_gpu_when_creating_the_session_is_a_memory_error_not_an_unusable_gpu(
    no_network, gpu_listed, monkeypatch
):
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    from fidkit.inception.runtime import FeatureExtractor

    def create(*args, **kwargs):
        raise Fail("CUDA failure 2: out of memory ; GPU=0 ; hostname=x ; file=cuda_call.cc ; expr=cudaMalloc")

    _session_factory(monkeypatch, create)
    with pytest.raises(ResourceError, match=r"GPU memory ran out.*not damaged.*--device cpu"):
        FeatureExtractor(device="cuda")
    assert no_network == [False]


def test_a_full_gpu_at_the_warm_up_batch_is_a_memory_error(no_network, gpu_listed, monkeypatch):
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    from fidkit.inception.runtime import FeatureExtractor

    class _GpuSession(_Session):
        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    _session_factory(monkeypatch, lambda *args, **kwargs: _GpuSession(Fail("CUDNN_STATUS_ALLOC_FAILED")))
    with pytest.raises(ResourceError, match=r"GPU memory ran out.*CUDNN_STATUS_ALLOC_FAILED"):
        FeatureExtractor(device="cuda")


def test_resource_errors_are_fidkit_errors_printed_on_one_line():
    assert issubclass(ResourceError, FidkitError)


def test_the_torch_engine_running_out_of_memory_names_the_batch_size(random_weights_path, monkeypatch):
    # torch.cuda.OutOfMemoryError (a RuntimeError) ended as "internal error (please report it)".
    from fidkit.errors import ResourceError
    from fidkit.inception.torch_engine import TorchFeatureExtractor

    engine = TorchFeatureExtractor(random_weights_path, device="cpu", batch_size=4)

    def exhausted(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total capacity)")

    monkeypatch.setattr(engine._model, "outputs", exhausted)
    images = np.zeros((6, 40, 30, 3), np.uint8)
    with pytest.raises(ResourceError, match=r"memory ran out in the network at batch size 4 \(4 images of 40x30.*--batch-size"):
        engine(images)

    def broken(*args, **kwargs):
        raise RuntimeError("some other failure")

    monkeypatch.setattr(engine._model, "outputs", broken)
    with pytest.raises(RuntimeError, match="some other failure"):
        engine(images)


def test_a_store_racing_cache_clear_makes_the_folder_again_without_a_warning(tmp_path, monkeypatch, caplog):
    # `fidkit cache clear` removes the empty stats/ folder; a store between its mkdir and its write said "make
    # .../stats writable" (and, warned once per folder, hid later real problems).
    import logging

    import fidkit.cache as cache
    from fidkit.stats import Stats

    monkeypatch.setenv("FIDKIT_HOME", str(tmp_path / "home"))
    import fidkit._fs as fs

    stats = Stats.from_features(np.random.default_rng(0).normal(size=(20, 4)))
    real_mkstemp, calls = fs.tempfile.mkstemp, []

    def cleared_meanwhile(*args, **kwargs):
        calls.append(kwargs.get("dir"))
        if len(calls) == 1:  # `cache clear` removes the empty folder between atomic_write's mkdir and this
            Path(kwargs["dir"]).rmdir()
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(fs.tempfile, "mkstemp", cleared_meanwhile)
    with caplog.at_level(logging.WARNING, logger="fidkit"):
        cache.store_cached_stats("ab" * 32, stats, source_name="imgs/")
    assert len(calls) >= 2 and not [r for r in caplog.records if "not cached" in r.getMessage()]
    stored = cache.load_cached_stats("ab" * 32)
    assert stored is not None and stored.n == 20


def test_memory_running_out_where_no_step_names_it_is_an_error_not_a_bug(tmp_path, monkeypatch, capsys):
    # A MemoryError while a batch is assembled (not while one file decodes) printed "internal error (please report
    # it)" and a traceback.
    from fidkit.cli import main

    np.save(tmp_path / "images.npy", np.zeros((4, 8, 8, 3), np.uint8))

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr("fidkit.api.compute_stats_with_report", exhausted)
    status = main(["stats", str(tmp_path / "images.npy"), "--no-cache", "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 1 and "memory ran out" in err and "--batch-size" in err
    assert "internal error" not in err and "Traceback" not in err
