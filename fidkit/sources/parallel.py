"""Decoding image files in worker processes, overlapping with whoever consumes the pixels.

Why processes, and which start method
-------------------------------------
Decoding is CPU work in Pillow; the consumer (the network on onnxruntime) runs in the parent. The
workers are started with ``forkserver`` where the platform has it (Linux, macOS), else ``spawn``:
``fork`` would copy a parent that may already run onnxruntime or torch threads, which can deadlock
the child. The forkserver is told to preload this module, so each worker starts with numpy and
Pillow already imported (about a tenth of a second saved per worker; see ``docs/performance.md``).
Both methods re-import the caller's ``__main__`` module in the workers: scripts must keep their
work under ``if __name__ == "__main__":``, as for any ``multiprocessing`` code.

Workers receive file *names* in chunks (never open file handles: each worker opens the folder or
archive itself) and return decoded arrays. At most ``2 * workers`` chunks are in flight, so memory
stays bounded when the consumer is slower than decoding. Results are consumed in submission order,
so the output order never depends on timing or on the number of workers.

Workers ignore SIGINT: on Ctrl-C only the parent sees ``KeyboardInterrupt``, and the generator's
``finally`` terminates and joins them. Closing the generator early does the same.

Small sources (at most :data:`IN_PROCESS_MAX_IMAGES` files) and ``workers`` of 0 or 1 are decoded in
the calling process: starting workers would cost more than it saves.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import multiprocessing
import numbers
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from fidkit.errors import ImageError, InputError, SourceError
from fidkit.sources.decode import decode_image_bytes

__all__ = [
    "IN_PROCESS_MAX_IMAGES",
    "DecodeOutcome",
    "MemberReader",
    "default_workers",
    "resolve_workers",
    "decode_stream",
]

logger = logging.getLogger(__name__)

#: Sources with at most this many files are decoded in the calling process.
IN_PROCESS_MAX_IMAGES = 256
#: Largest default number of workers: beyond this, reading files, not decoding, limits.
MAX_DEFAULT_WORKERS = 8
# Files per task sent to a worker: big enough that the inter-process overhead (about 1 ms per
# task) is small against decoding, small enough that the first batch arrives quickly.
_DEFAULT_CHUNK_FILES = 64


class MemberReader(Protocol):
    """Reads one file's bytes from a folder or archive by its relative name.

    Implementations must be picklable before and after use (they open their files lazily and drop
    handles when pickled), because each worker gets its own copy.
    """

    def read(self, member: str) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class DecodeOutcome:
    """The result of decoding one file: pixels, or the reason it is bad."""

    index: int
    name: str
    pixels: np.ndarray | None
    reason: str | None
    lossy: bool


def default_workers() -> int:
    """The number of decoding workers used when none is given: CPUs available, at most 8."""
    try:
        n_cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n_cpus = os.cpu_count() or 1
    return max(1, min(n_cpus, MAX_DEFAULT_WORKERS))


def resolve_workers(workers: int | None) -> int:
    """Return `workers` checked (an integer >= 0, numpy integers included, bool refused) as an
    int, or the machine default when None: the same rule as ``limit`` and ``seed``."""
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 0:
        raise InputError(f"workers must be a non-negative integer or None, got {workers!r}")
    return int(workers)


def _decode_members(
    reader: MemberReader,
    chunk: Sequence[tuple[int, str]],
    exif_transpose: bool,
    max_pixels: int | None,
) -> list[tuple[int, str, np.ndarray | None, str | None, bool]]:
    # Plain tuples: cheaper to pickle back from a worker than dataclasses.
    decoded: list[tuple[int, str, np.ndarray | None, str | None, bool]] = []
    read_order = getattr(reader, "read_order", None)
    if read_order is not None:
        # Compressed tar: read in archive order so the stream seeks forward only.
        index_of = {member: index for index, member in chunk}
        chunk = [(index_of[member], member) for member in read_order([member for _, member in chunk])]
    for index, member in chunk:
        try:
            data = reader.read(member)
        except SourceError:
            # Damage to the folder or archive as a whole, not to this one file: what else it holds
            # is unknown, so this ends the run whatever skip_bad says.
            raise
        except ImageError as exc:  # the reader's own verdict on this one file
            decoded.append((index, member, None, _reason(exc, member), False))
            continue
        except Exception as exc:  # noqa: BLE001 - any other read failure makes this one file bad
            decoded.append((index, member, None, f"unreadable ({type(exc).__name__}: {exc})", False))
            continue
        try:
            image = decode_image_bytes(
                data, member, exif_transpose=exif_transpose, max_pixels=max_pixels
            )
        except ImageError as exc:
            decoded.append((index, member, None, _reason(exc, member), False))
            continue
        decoded.append((index, member, image.pixels, None, image.lossy))
    if read_order is not None:
        decoded.sort(key=lambda outcome: outcome[0])
    return decoded


def _reason(exc: ImageError, member: str) -> str:
    reason = str(exc)
    prefix = f"{member}: "
    return reason[len(prefix):] if reason.startswith(prefix) else reason


# Per-worker-process state, set once by the pool initializer (never in the parent).
_worker_reader: MemberReader | None = None
_worker_exif_transpose = False


def _init_worker(reader: MemberReader, exif_transpose: bool, max_pixels: int | None) -> None:
    global _worker_reader, _worker_exif_transpose
    # Ctrl-C is the parent's to handle: it terminates the workers; tracebacks from every worker
    # would only bury the one message that matters.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_reader = reader
    _worker_exif_transpose = exif_transpose
    # Mirror the parent's decompression-bomb limit, for Pillow's own check and for ours (the
    # worker reads it back from here).
    Image.MAX_IMAGE_PIXELS = max_pixels


def _decode_chunk_in_worker(
    chunk: Sequence[tuple[int, str]],
) -> list[tuple[int, str, np.ndarray | None, str | None, bool]]:
    assert _worker_reader is not None, "worker used before its initializer ran"
    return _decode_members(_worker_reader, chunk, _worker_exif_transpose, Image.MAX_IMAGE_PIXELS)


def _chunks(names: Sequence[str], size: int) -> Iterator[list[tuple[int, str]]]:
    """``(index, name)`` pairs of `names` in consecutive chunks of at most `size`."""
    for start in range(0, len(names), size):
        yield [(index, names[index]) for index in range(start, min(start + size, len(names)))]


def _mp_context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods and sys.platform != "win32":
        context = multiprocessing.get_context("forkserver")
        # Only takes effect when the forkserver is first started; later calls are harmless.
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


def _terminate(executor: concurrent.futures.ProcessPoolExecutor) -> None:
    # The standard library has no public way to kill a ProcessPoolExecutor's workers before
    # Python 3.14 (terminate_workers); reach for its process table, which has been stable since 3.2.
    terminate_workers = getattr(executor, "terminate_workers", None)
    if terminate_workers is not None:
        terminate_workers()
        return
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)


def decode_stream(
    reader: MemberReader,
    names: Sequence[str],
    *,
    workers: int,
    exif_transpose: bool = False,
) -> Iterator[DecodeOutcome]:
    """Decode `names` from `reader`, yielding one outcome per name in the given order.

    Parameters
    ----------
    reader : MemberReader
        Where the bytes come from; copied into each worker.
    names : sequence of str
        Members to decode, in output order.
    workers : int
        Worker processes; 0 or 1 (or a small source) decodes in this process.
    exif_transpose : bool
        Passed to the decoder.

    Yields
    ------
    DecodeOutcome
        Bad files come back as outcomes with ``pixels=None`` and a ``reason``; nothing is raised
        for them here.
    """
    max_pixels = Image.MAX_IMAGE_PIXELS
    n_names = len(names)
    chunk_size = _DEFAULT_CHUNK_FILES
    if workers <= 1 or n_names <= IN_PROCESS_MAX_IMAGES:
        try:
            for chunk in _chunks(names, chunk_size):
                for outcome in _decode_members(reader, chunk, exif_transpose, max_pixels):
                    yield DecodeOutcome(*outcome)
        finally:
            reader.close()
        return

    # Never more workers than chunks: idle workers only cost start-up time.
    chunk_size = max(1, min(chunk_size, -(-n_names // workers)))
    n_workers = min(workers, -(-n_names // chunk_size))
    chunks = _chunks(names, chunk_size)
    logger.debug("decoding %d files with %d workers, %d per task", n_names, n_workers, chunk_size)
    executor = concurrent.futures.ProcessPoolExecutor(
        max_workers=n_workers,
        mp_context=_mp_context(),
        initializer=_init_worker,
        initargs=(reader, exif_transpose, max_pixels),
    )
    in_flight: collections.deque[tuple[concurrent.futures.Future, list[tuple[int, str]]]] = (
        collections.deque()
    )
    finished = False
    try:
        for chunk in chunks:
            in_flight.append((executor.submit(_decode_chunk_in_worker, chunk), chunk))
            if len(in_flight) >= 2 * n_workers:
                break
        while in_flight:
            future, chunk = in_flight.popleft()
            try:
                outcomes = future.result()
            except BrokenProcessPool as exc:
                raise ImageError(
                    f"a decoding worker process died while decoding one of {chunk[0][1]} .. "
                    f"{chunk[-1][1]}: a crash in the decoder, memory exhausted, or, if this is the "
                    "first batch, a calling script without 'if __name__ == \"__main__\":' (worker "
                    "processes re-import it). Rerun with workers=0 (--workers 0) to decode in this "
                    "process"
                ) from exc
            next_chunk = next(chunks, None)
            if next_chunk is not None:
                in_flight.append((executor.submit(_decode_chunk_in_worker, next_chunk), next_chunk))
            for outcome in outcomes:
                yield DecodeOutcome(*outcome)
        finished = True
    finally:
        if finished:
            executor.shutdown(wait=True)
        else:
            # Early close, an error, or Ctrl-C: do not wait for queued work.
            _terminate(executor)
        reader.close()
