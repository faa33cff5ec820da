"""The extraction loop (fidkit.extraction.extract): sinks fed in order, and, on a GPU extractor, fed in a second
thread while the network runs the next batch, with the numbers of the plain loop."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fidkit.errors import InputError
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


def closing(batches: list[np.ndarray], closed: list[bool]):
    """`batches` from a generator that records in `closed` that it was closed (as a source's stops its decoders)."""
    try:
        yield from batches
    finally:
        closed.append(True)


def run(batches, extractor, overlap=None):
    accumulator, rows = StatsAccumulator(dim=DIM), FeatureRows()
    times = extract(batches, extractor, accumulator, rows, overlap=overlap)
    return accumulator.result(), rows.result().rows, times


def sink_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "fidkit-sinks"]


class RecordingSink:
    def __init__(self) -> None:
        self.threads: list[str] = []

    def update(self, features):
        self.threads.append(threading.current_thread().name)


def test_on_a_gpu_the_sinks_run_in_a_second_thread_with_the_numbers_of_the_plain_loop():
    """The network stays in the calling thread (per-thread GPU state, CUDA streams); the sinks move."""
    batches = image_batches(7)
    plain_stats, plain_rows, _ = run(batches, FakeExtractor(on_gpu=False))
    gpu, recording = FakeExtractor(on_gpu=True), RecordingSink()
    accumulator, rows = StatsAccumulator(dim=DIM), FeatureRows()
    times = extract(batches, gpu, accumulator, rows, recording)
    stats = accumulator.result()
    assert set(gpu.threads) == {threading.current_thread().name}
    assert set(recording.threads) == {"fidkit-sinks"} and len(recording.threads) == 7
    np.testing.assert_array_equal(rows.result().rows, plain_rows)  # same batches, same order
    np.testing.assert_array_equal(stats.mu, plain_stats.mu)
    np.testing.assert_array_equal(stats.sigma, plain_stats.sigma)
    assert stats.n == plain_stats.n == 28 and 0 < times.first_batch_seconds <= times.network_seconds
    assert 0 <= times.first_wait_seconds <= times.decode_seconds and not sink_threads()


def test_on_the_cpu_and_when_told_not_to_everything_runs_in_the_calling_thread():
    for extractor, overlap in ((FakeExtractor(on_gpu=False), None), (FakeExtractor(on_gpu=True), False)):
        recording = RecordingSink()
        extract(image_batches(3), extractor, recording, overlap=overlap)
        assert set(extractor.threads) == set(recording.threads) == {threading.current_thread().name}


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


def test_a_network_error_waits_for_the_sinks_before_it_is_raised_and_closes_the_source():
    """When the network fails, the sink finishes the batch it holds (nothing keeps running behind the caller), what
    waits is dropped, and the helper thread is gone before the error reaches the caller."""
    import time

    closed, failed, sink_busy = [], threading.Event(), threading.Event()
    running, delivered = [], []

    class SlowSink:
        def update(self, features):
            running.append(1)
            sink_busy.set()
            failed.wait(timeout=30)  # still busy with batch 0 when the network fails on batch 3
            time.sleep(0.2)
            delivered.append(features)
            running.pop()

    def failing(call: int) -> None:
        if call == 3:  # batches 1 and 2 wait in the (full) queue
            sink_busy.wait(timeout=30)
            failed.set()
            raise RuntimeError("CUDA out of memory (simulated)")

    with pytest.raises(RuntimeError, match="simulated"):
        extract(closing(image_batches(12), closed), FakeExtractor(on_gpu=True, before_call=failing), SlowSink())
    assert running == [] and len(delivered) == 1  # batch 0, which it held; batches 1 and 2 were dropped
    assert closed == [True] and not sink_threads()


def test_a_sink_error_stops_the_network_and_reaches_the_caller():
    """The calling thread sees a sink's error at its next hand-over: with two batches waiting at most, the network
    runs at most a few batches more, not the whole source."""
    started_second, closed = threading.Event(), []

    class FailingSink:
        def update(self, features):
            started_second.wait(timeout=30)
            raise ValueError("sink failed")

    extractor = FakeExtractor(on_gpu=True, before_call=lambda call: started_second.set() if call == 1 else None)
    with pytest.raises(ValueError, match="sink failed"):
        extract(closing(image_batches(20), closed), extractor, FailingSink())
    assert extractor.calls <= 4 and closed == [True] and not sink_threads()


def test_a_source_that_refills_one_buffer_still_gets_each_batchs_features():
    """A generator yielding the same array, refilled, for every batch: the network reads each batch before the next
    is asked for, and the sinks get the features (fresh arrays), not the images."""
    batches = image_batches(5)

    def refilled():
        buffer = np.empty_like(batches[0])
        for batch in batches:
            buffer[...] = batch
            yield buffer

    expected = run(batches, FakeExtractor(on_gpu=False))[1]
    np.testing.assert_array_equal(run(refilled(), FakeExtractor(on_gpu=True))[1], expected)


def test_a_sink_error_on_the_last_batch_is_raised_at_the_exit():
    """No hand-over follows the last batch: the exit raises its sink's error (else the statistics would silently
    miss a batch)."""
    calls = []

    class LastFails:
        def update(self, features):
            calls.append(1)
            if len(calls) == 3:
                raise ValueError("last batch failed")

    with pytest.raises(ValueError, match="last batch failed"):
        extract(image_batches(3), FakeExtractor(on_gpu=True), LastFails())
    assert not sink_threads()


def test_a_sink_error_is_kept_under_a_network_error_that_follows_it():
    sink_failed = threading.Event()

    class FailingSink:
        def update(self, features):
            sink_failed.set()
            raise ValueError("sink failed")

    def failing(call: int) -> None:
        if call == 1:
            sink_failed.wait(timeout=30)
            raise RuntimeError("network failed")

    with pytest.raises(RuntimeError, match="network failed") as caught:
        extract(image_batches(4), FakeExtractor(on_gpu=True, before_call=failing), FailingSink())
    assert isinstance(caught.value.__context__, ValueError)


def test_ctrl_c_while_the_sinks_finish_leaves_no_sink_running(monkeypatch):
    """Ctrl-C (a real SIGINT) while the exit waits for the sinks: the update in progress ends before extract raises,
    the batches waiting are dropped, and the progress bar is not updated after it is closed."""
    import os
    import signal
    import time

    import fidkit.extraction

    events, exhausted = [], threading.Event()

    class Bar:
        def __init__(self, *args, **kwargs):
            self.closed = False

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.closed = True

        def update(self, n):
            events.append("update after close" if self.closed else "update")

    monkeypatch.setattr(fidkit.extraction, "progress_bar", Bar)

    def source():
        yield from image_batches(3)
        exhausted.set()

    class Sink:
        def update(self, features):
            events.append("start")
            if events.count("start") == 1:
                exhausted.wait(timeout=30)  # the caller waits in the exit now; batches 1 and 2 are queued
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.3)
            events.append("end")

    with pytest.raises(KeyboardInterrupt):
        extract(source(), FakeExtractor(on_gpu=True), Sink())
    at_raise = list(events)
    time.sleep(0.5)
    assert at_raise == events == ["start", "end", "update"] and not sink_threads()


class OutputsExtractor:
    """An extractor with ``outputs()`` that breaks its promise in one way (`mode`) from its second batch on."""

    feature_dim = 3
    batch_size = 4

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.calls = 0

    def __call__(self, images):
        return np.asarray(images, dtype=np.float32).mean(axis=(1, 2))

    def outputs(self, images, names):
        self.calls += 1
        features = self(images)
        logits = np.concatenate([features, features[:, :1]], axis=1) / 100  # 4 wide
        broken = self.calls > 1
        if broken and self.mode == "width":
            logits = logits[:, :2]
        if broken and self.mode == "rows":
            logits = logits[:-1]
        if broken and self.mode == "nan":
            logits[1, 0] = np.nan
        if broken and self.mode == "1d":
            logits = logits[:, 0]
        if broken and self.mode == "text":
            logits = logits.astype(str)
        if broken and self.mode == "tuple":
            return (features, logits)
        if broken and self.mode == "none":
            return None
        if broken and self.mode == "no-features":
            return {"logits": logits}
        if broken and self.mode == "no-logits":
            return {"features": features}
        return {"features": features, "logits": logits}

    def metadata(self):
        return {}


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        ("width", "returned logits 2 wide for this batch of 4 image(s), but 4 wide for the first batch"),
        ("rows", "returned 3 rows of logits for a batch of 4 image(s)"),
        ("nan", "contains NaN or inf in 1 row(s) (first: row 1)"),
        ("1d", "has shape (4,)"),
        ("text", "pass real-valued features"),
        ("tuple", "returned tuple"),
        ("none", "returned NoneType"),
        ("no-features", "returned no 'features' for a batch of 4 image(s) (it returned 'logits')"),
        ("no-logits", "returned no 'logits'"),
    ],
)
def test_a_broken_outputs_batch_is_refused_at_that_batch_naming_the_extractor_and_the_fix(mode, said):
    extractor = OutputsExtractor(mode)
    rows = FeatureRows(outputs=("features", "logits"))
    accumulator = StatsAccumulator()
    with pytest.raises(InputError) as caught:
        extract(image_batches(3), extractor, accumulator, rows)
    message = str(caught.value)
    assert said in message
    assert "OutputsExtractor" in message and "fix its outputs()" in message
    assert extractor.calls == 2  # refused at the second batch, not after the whole pass
    assert rows.n == 4 and accumulator.n == 4  # the sinks took the first batch only


def test_features_whose_width_changes_without_a_declared_feature_dim_are_refused_before_the_sinks():
    class Drifting(FakeExtractor):
        feature_dim = None

        def __call__(self, images):
            features = super().__call__(images)
            return features if self.calls < 2 else features[:, :4]

    rows = FeatureRows()
    with pytest.raises(InputError, match=r"returned features 4 wide for this batch of 4 image\(s\), but 6 wide for "
                                         r"the first batch: fix its __call__"):
        extract(image_batches(3), Drifting(on_gpu=False), rows)
    assert rows.n == 4


def test_feature_rows_refuse_an_output_whose_width_changes_and_keep_what_they_held():
    rows = FeatureRows(outputs=("features", "logits"))
    rows.update_outputs({"features": np.ones((2, 3)), "logits": np.ones((2, 5))})
    with pytest.raises(InputError, match="this batch's logits are 4 wide, but the rows kept so far are 5 wide"):
        rows.update_outputs({"features": np.ones((2, 3)), "logits": np.ones((2, 4))})
    assert rows.n == 2
    assert rows.result().output("logits").shape == (2, 5)
