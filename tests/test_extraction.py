"""The extraction loop (fidkit.extraction.extract): sinks fed in order, and the network overlapped with the sinks and
the decoding on a GPU extractor, with the numbers of the plain loop."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fidkit.extraction import extract
from fidkit.features import FeatureRows
from fidkit.stats import StatsAccumulator

DIM = 6
_PROJECTION = np.random.default_rng(0).standard_normal((3, DIM)).astype(np.float32)


class FakeExtractor:
    """Features from the images' mean colours (deterministic); records the thread of each call."""

    feature_dim = DIM
    batch_size = 4

    def __init__(self, on_gpu: bool, before_call=None) -> None:
        self.on_gpu = on_gpu
        self.threads: list[str] = []
        self.before_call = before_call
        self.running = 0
        self.calls = 0

    def __call__(self, images):
        self.running += 1
        try:
            self.threads.append(threading.current_thread().name)
            if self.before_call is not None:
                self.before_call(self.calls)
            self.calls += 1
            means = np.asarray(images, dtype=np.float32).mean(axis=(1, 2))
            return means @ _PROJECTION
        finally:
            self.running -= 1

    def metadata(self):
        return {}


def image_batches(n_batches: int, size: int = 4, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, 5, 7, 3), dtype=np.uint8) for _ in range(n_batches)]


def run(batches, extractor, overlap=None):
    accumulator, rows = StatsAccumulator(dim=DIM), FeatureRows()
    times = extract(batches, extractor, accumulator, rows, overlap=overlap)
    return accumulator.result(), rows.result().rows, times


def test_a_gpu_extractor_runs_in_the_network_thread_with_the_numbers_of_the_plain_loop():
    batches = image_batches(7)
    plain_stats, plain_rows, _ = run(batches, FakeExtractor(on_gpu=False))
    gpu = FakeExtractor(on_gpu=True)
    stats, rows, times = run(batches, gpu)
    assert set(gpu.threads) == {"fidkit-network_0"}
    np.testing.assert_array_equal(rows, plain_rows)  # same batches, same order
    np.testing.assert_array_equal(stats.mu, plain_stats.mu)
    np.testing.assert_array_equal(stats.sigma, plain_stats.sigma)
    assert stats.n == plain_stats.n == 28 and times.network_seconds > 0


def test_on_the_cpu_and_when_told_not_to_the_network_runs_in_the_calling_thread():
    for extractor, overlap in ((FakeExtractor(on_gpu=False), None), (FakeExtractor(on_gpu=True), False)):
        run(image_batches(3), extractor, overlap)
        assert set(extractor.threads) == {threading.current_thread().name}


def test_the_next_batch_runs_while_the_sinks_take_the_previous_one():
    """The sinks take batch k only once batch k + 1's network call has started: that happens only if the two overlap.
    The control: the plain loop calls the network for k + 1 after the sinks return, so there the wait times out."""

    def waits(overlap: bool, timeout: float) -> list[bool]:
        started = [threading.Event() for _ in range(6)]
        waited: list[bool] = []

        class Sink:
            def update(self, features):
                k = len(waited)
                waited.append(started[k + 1].wait(timeout=timeout) if k + 1 < 6 else True)

        extractor = FakeExtractor(on_gpu=True, before_call=lambda call: started[call].set())
        extract(image_batches(6), extractor, Sink(), overlap=overlap)
        return waited

    assert waits(overlap=True, timeout=30) == [True] * 6
    assert waits(overlap=False, timeout=0.05) == [False] * 5 + [True]


def test_a_source_that_refills_one_buffer_still_gets_each_batchs_features():
    """A generator yielding the same array, refilled, for every batch: each batch is copied before it is queued, so
    the network never reads the next batch's pixels."""
    batches = image_batches(5)

    def refilled():
        buffer = np.empty_like(batches[0])
        for batch in batches:
            buffer[...] = batch
            yield buffer

    expected = run(batches, FakeExtractor(on_gpu=False))[1]
    np.testing.assert_array_equal(run(refilled(), FakeExtractor(on_gpu=True))[1], expected)


def test_a_network_error_reaches_the_caller_and_closes_the_source():
    closed = []

    def source():
        try:
            yield from image_batches(6)
        finally:
            closed.append(True)

    def failing(call: int) -> None:
        if call == 2:
            raise RuntimeError("CUDA out of memory (simulated)")

    extractor = FakeExtractor(on_gpu=True, before_call=failing)
    with pytest.raises(RuntimeError, match="simulated"):
        run(source(), extractor)
    assert closed == [True] and extractor.running == 0


def test_a_sink_error_waits_for_the_running_batch_before_it_is_raised():
    """Nothing keeps running behind the caller: when a sink fails, the batch on the network finishes first and the
    one queued behind it never starts."""
    started = threading.Event()

    class FailingSink:
        def update(self, features):
            started.wait(timeout=30)  # the next batch is on the network now
            raise ValueError("sink failed")

    extractor = FakeExtractor(on_gpu=True, before_call=lambda call: started.set() if call == 1 else None)
    with pytest.raises(ValueError, match="sink failed"):
        extract(image_batches(6), extractor, FailingSink())
    assert extractor.running == 0 and extractor.calls == 2  # batches 0 and 1; batch 2 was never queued


def test_a_torch_tensor_batch_runs_in_the_calling_thread_after_the_queued_ones():
    """A tensor (on a GPU, its CUDA stream is the caller's) is not handed to the network thread; the batches before it
    are delivered first, so the order holds."""
    torch = pytest.importorskip("torch")
    batches = image_batches(4)
    mixed = [batches[0], batches[1], torch.from_numpy(batches[2]), batches[3]]
    extractor = FakeExtractor(on_gpu=True)
    rows = run(mixed, extractor)[1]
    np.testing.assert_array_equal(rows, run(batches, FakeExtractor(on_gpu=False))[1])
    main = threading.current_thread().name
    assert extractor.threads == ["fidkit-network_0", "fidkit-network_0", main, "fidkit-network_0"]
