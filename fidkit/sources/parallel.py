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
archive itself) and return decoded arrays. At most ``2 * workers`` chunks are in flight, and a
chunk stops once its decoded pixels pass :data:`_CHUNK_PIXEL_BYTES` (its rest is sent again), so
memory stays bounded by pixels, not only by file counts, when the consumer is slower than decoding
or the images are huge. More workers than CPUs are not started (a warning says so). Results are consumed in submission order,
so the output order never depends on timing or on the number of workers.

Workers ignore SIGINT: on Ctrl-C only the parent sees ``KeyboardInterrupt``, and the generator's
``finally`` terminates and joins them. Closing the generator early does the same. When the parent
is killed outright (SIGTERM, SIGKILL, the out-of-memory killer), no ``finally`` runs: each worker
then ends by itself within moments (it watches the parent's pid, and on Linux also asks the kernel
for a signal when its own parent ends), and the forkserver follows once no worker is left.

Small sources (at most :data:`IN_PROCESS_MAX_IMAGES` files) and ``workers`` of 0 or 1 are decoded in
the calling process: starting workers would cost more than it saves.

Bad files, and files that fail for a reason outside them
--------------------------------------------------------
A file is *bad* (a counted skip with ``skip_bad``, else an error listing the bad files) only for what
it is: not an image, truncated, too large, a mode the colour policy refuses, or a read failure that
stays as long as the file does (``ENOENT`` removed, ``ENOTDIR``, ``EISDIR``, ``ELOOP``,
``ENAMETOOLONG``; an archive member the archive cannot give). Otherwise the count of images would
depend on the machine or on the moment:

* Memory running out while one file is read or decoded (``MemoryError``), or the process or system
  running out of file descriptors or kernel memory (``EMFILE``, ``ENFILE``, ``ENOMEM``,
  ``ENOBUFS``), stops the run with a :class:`~fidkit.errors.ResourceError` naming the file and what
  to change (free memory, fewer workers or ``--workers 0``, a smaller ``--batch-size``, ``ulimit -n``),
  also with ``skip_bad``.
* Any other read failure (``EACCES``/``EPERM``, which a ``chmod`` fixes; ``EIO``, ``ETIMEDOUT``,
  ``ESTALE``, ``EAGAIN``, ``EBUSY`` of a disk or network file system) is a counted skip, but one that
  can go away without the file changing, and so without its fingerprint changing: its reason ends
  with :data:`NOT_CACHED_MARK`, and statistics of a run that skipped such a file are not cached
  (:func:`skip_is_not_cached`), so that the next run reads the file again.
* A decoding worker that dies (killed by the out-of-memory killer, say) ends the run with an
  :class:`~fidkit.errors.ImageError` saying so, as does anything that keeps the workers from starting
  (a :class:`~fidkit.errors.ResourceError`: raise ``ulimit -n``, or ``--workers 0``).
"""

from __future__ import annotations

import collections
import concurrent.futures
import errno
import logging
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image, ImageFile

from fidkit._validate import check_workers
from fidkit._fs import pid_running, working_directory_gone
from fidkit.errors import ImageError, ResourceError, SourceError
from fidkit.sources.decode import decode_image_bytes, max_file_bytes

__all__ = [
    "IN_PROCESS_MAX_IMAGES",
    "DecodeOutcome",
    "MemberReader",
    "default_workers",
    "resolve_workers",
    "decode_stream",
    "NOT_CACHED_MARK",
    "skip_is_not_cached",
    "ran_short",
]

logger = logging.getLogger(__name__)

#: Sources with at most this many files are decoded in the calling process.
IN_PROCESS_MAX_IMAGES = 256
#: Largest default number of workers: beyond this, reading files, not decoding, limits.
MAX_DEFAULT_WORKERS = 8
# Decoded pixel bytes one task returns at most (plus one image): a task of huge images stops there
# and the rest of it is sent again, so memory follows pixels, not only file counts. At most
# 2 * workers tasks are in flight.
_CHUNK_PIXEL_BYTES = 64 * 2**20
# Files per task sent to a worker: big enough that the inter-process overhead (about 1 ms per
# task) is small against decoding, small enough that the first batch arrives quickly.
_DEFAULT_CHUNK_FILES = 64

# Read failures that stay as long as the file does: counted skips whose statistics may be cached.
_ERRNOS_OF_THE_FILE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.ENAMETOOLONG})
# The process or the system ran short: the run stops (a skip would make N depend on the machine).
_ERRNOS_OF_SHORTAGE = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: How the reason of a file skipped for a cause that can go away without the file changing ends: a
#: run that skipped such a file is not cached (see the module's notes on bad files).
NOT_CACHED_MARK = "not cached: a later run reads it again"


def ran_short(exc: BaseException) -> bool:
    """Whether `exc` says the machine ran short (open files, kernel memory) rather than anything about the file
    being read: such a failure is a :class:`~fidkit.errors.ResourceError`, never a bad file or a damaged archive."""
    return isinstance(exc, OSError) and exc.errno in _ERRNOS_OF_SHORTAGE


def skip_is_not_cached(reason: str) -> bool:
    """True for the reason of a skipped file that may read on a later run without changing (a
    permission, an I/O error): statistics of a run that skipped it must not be cached."""
    return str(reason).endswith(NOT_CACHED_MARK)


class MemberReader(Protocol):
    """Reads one file's bytes from a folder or archive by its relative name.

    Implementations must be picklable before and after use (they open their files lazily and drop
    handles when pickled), because each worker gets its own copy.
    """

    def read(self, member: str, max_bytes: int | None = None) -> bytes:
        """The member's bytes; an :class:`ImageError` without reading when it holds more than
        `max_bytes` (None: no bound)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class DecodeOutcome:
    """The result of decoding one file: pixels, or the reason it is bad."""

    index: int
    name: str
    pixels: np.ndarray | None
    reason: str | None
    lossy: bool


def _available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers() -> int:
    """The number of decoding workers used when none is given: CPUs available, at most 8."""
    return max(1, min(_available_cpus(), MAX_DEFAULT_WORKERS))


def _cap_workers(workers: int) -> int:
    """At most one worker per available CPU (but 2 may always be asked for): more only multiply
    the memory held in flight without decoding any faster."""
    cap = max(2, _available_cpus())
    if workers > cap:
        logger.warning(
            "%d decoding workers asked for, %d CPUs available: using %d (more would not decode "
            "faster and would hold more images in memory)",
            workers,
            _available_cpus(),
            cap,
        )
        return cap
    return workers


def resolve_workers(workers: int | None) -> int:
    """Return `workers` checked (an integer >= 0, numpy integers included, bool refused) as an
    int, or the machine default when None: the same rule as ``limit`` and ``seed``."""
    checked = check_workers(workers)
    return default_workers() if checked is None else checked


_Outcome = tuple[int, str, "np.ndarray | None", "str | None", bool]


def _decode_members(
    reader: MemberReader,
    chunk: Sequence[tuple[int, str]],
    exif_transpose: bool,
    max_pixels: int | None,
    max_out_bytes: int | None = None,
) -> tuple[list[_Outcome], list[tuple[int, str]]]:
    """Decode `chunk`; return the outcomes, in index order, and what is left to decode.

    Once the decoded pixels exceed `max_out_bytes`, decoding stops and the rest of the chunk comes
    back undone, so that a chunk of huge images never holds more than about that many bytes. The
    outcomes returned always precede everything left (in index order): the caller can yield them at
    once and decode the rest next.
    """
    # Plain tuples: cheaper to pickle back from a worker than dataclasses.
    decoded: list[_Outcome] = []
    max_bytes = max_file_bytes(max_pixels)
    lowest = min(index for index, _ in chunk) if chunk else 0
    read_order = getattr(reader, "read_order", None)
    if read_order is not None:
        # Compressed tar: read in archive order so the stream seeks forward only.
        index_of = {member: index for index, member in chunk}
        chunk = [(index_of[member], member) for member in read_order([member for _, member in chunk])]
    out_bytes = 0
    position = 0
    for position, (index, member) in enumerate(chunk, start=1):
        outcome = _decode_one(reader, index, member, exif_transpose, max_pixels, max_bytes)
        decoded.append(outcome)
        if outcome[2] is not None:
            out_bytes += outcome[2].nbytes
        # Stop early only once the lowest index is done, so that every call makes progress.
        if max_out_bytes is not None and out_bytes >= max_out_bytes and position < len(chunk):
            if any(done[0] == lowest for done in decoded):
                break
    else:
        position = len(chunk)
    left = list(chunk[position:])
    if read_order is not None:
        decoded.sort(key=lambda outcome: outcome[0])
    if left:
        # Read out of index order (an archive not in name order): outcomes past the first undone
        # index go back undone, their pixels dropped, so the caller never waits on a gap.
        first_left = min(index for index, _ in left)
        keep = [outcome for outcome in decoded if outcome[0] < first_left]
        left += [(outcome[0], outcome[1]) for outcome in decoded if outcome[0] > first_left]
        left.sort()
        decoded = keep
    return decoded, left


def _decode_one(
    reader: MemberReader,
    index: int,
    member: str,
    exif_transpose: bool,
    max_pixels: int | None,
    max_bytes: int | None,
) -> _Outcome:
    try:
        data = reader.read(member, max_bytes)
    except SourceError:
        # Damage to the folder or archive as a whole, not to this one file: what else it holds
        # is unknown, so this ends the run whatever skip_bad says.
        raise
    except ImageError as exc:  # the reader's own verdict on this one file
        return (index, member, None, _reason(exc, member), False)
    except MemoryError as exc:
        raise _out_of_memory(f"{_where(reader, member)}: memory ran out while reading it") from exc
    except OSError as exc:
        if ran_short(exc):
            raise _ran_short_reading(reader, member, exc) from exc
        reason = f"unreadable ({type(exc).__name__}: {exc})"
        # An OSError without errno comes from Python code judging the bytes (a bad gzip stream), as
        # the errno-less exceptions below do; every failing system call carries one.
        if exc.errno is not None and exc.errno not in _ERRNOS_OF_THE_FILE:
            reason += f"; {NOT_CACHED_MARK}"
        return (index, member, None, reason, False)
    except Exception as exc:  # noqa: BLE001 - any other read failure makes this one file bad
        return (index, member, None, f"unreadable ({type(exc).__name__}: {exc})", False)
    try:
        image = decode_image_bytes(data, member, exif_transpose=exif_transpose, max_pixels=max_pixels)
    except ImageError as exc:
        return (index, member, None, _reason(exc, member), False)
    except MemoryError as exc:
        raise _out_of_memory(f"{_where(reader, member)}: memory ran out while decoding it") from exc
    finally:
        del data
    return (index, member, image.pixels, None, image.lossy)


def _where(reader: MemberReader, member: str) -> str:
    """`member` as the user finds it: a path in a folder, ``member in archive`` in an archive."""
    root = getattr(reader, "root", None)
    if root is not None:
        return os.path.join(os.fspath(root), member)
    archive = getattr(reader, "path", None)
    return f"{member} in {os.fspath(archive)}" if archive is not None else member


# What to change when the process or the system ran short, by errno (MemoryError is ENOMEM's), each followed by
# _FEWER_PROCESSES: the messages of a file that could not be read and of workers that could not start.
_SHORTAGE_FIXES = {
    errno.EMFILE: "this process ran out of open files: raise its limit (ulimit -n 4096)",
    errno.ENFILE: "the system's table of open files is full: close other programs or raise fs.file-max (ulimit -n "
    "does not help)",
    errno.EAGAIN: "the limit on processes was reached (ulimit -u)",
    errno.ENOMEM: "free memory",
}
_FEWER_PROCESSES = "decode with fewer processes (--workers N, workers=N; --workers 0 decodes in this process alone)"
_NOT_SKIPPED = "That is no fault of the file, so it is not skipped (the number of images would depend on the machine)"


def _out_of_memory(what_happened: str) -> ResourceError:
    """The error for memory running out as `what_happened` says (where, and while doing what)."""
    return ResourceError(
        f"{what_happened}. {_NOT_SKIPPED}: free memory, {_FEWER_PROCESSES}, or pass a smaller "
        "--batch-size (batch_size=); to refuse images this large as bad files instead, lower "
        "PIL.Image.MAX_IMAGE_PIXELS"
    )


def _ran_short_reading(reader: MemberReader, member: str, exc: OSError) -> ResourceError:
    name = errno.errorcode.get(exc.errno or 0, "?")
    fix = _SHORTAGE_FIXES.get(exc.errno or 0, _SHORTAGE_FIXES[errno.ENOMEM])
    return ResourceError(
        f"{_where(reader, member)}: cannot read it: {exc.strerror or exc} ({name}). {_NOT_SKIPPED}: {fix}, or "
        f"{_FEWER_PROCESSES}"
    )


def _reason(exc: ImageError, member: str) -> str:
    reason = str(exc)
    prefix = f"{member}: "
    return reason[len(prefix):] if reason.startswith(prefix) else reason


# Per-worker-process state, set once by the pool initializer (never in the parent).
_worker_reader: MemberReader | None = None
_worker_exif_transpose = False
_worker_chunk_pixel_bytes = _CHUNK_PIXEL_BYTES


# prctl(2) option: the signal the kernel sends this process when its parent ends.
_PR_SET_PDEATHSIG = 1
# How often a worker without pidfd support checks that the process it works for is alive.
_PARENT_POLL_SECONDS = 0.5


def _die_with_parent(owner_pid: int) -> None:
    """End this worker when `owner_pid` (the process that asked for it) ends, however it ends.

    A SIGKILL'ed owner runs no cleanup, and the pool's queues give its workers no end-of-file (each
    worker holds a copy of both ends), so they would wait for work for ever with the folder or
    archive open. Two guards: the kernel signals the worker when its parent (the forkserver, or the
    owner under spawn) ends, and a thread waits for the owner itself to end. The forkserver ends by
    itself once neither the owner nor any worker holds its pipe.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl: the thread still guards
            pass
    threading.Thread(target=_watch_owner, args=(owner_pid,), name="fidkit-owner-watch", daemon=True).start()


def _watch_owner(owner_pid: int) -> None:
    try:
        pidfd = os.pidfd_open(owner_pid)  # Linux >= 5.3: readable once the process has ended
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is not None:
        select.select([pidfd], [], [])
        os._exit(1)
    while pid_running(owner_pid):  # pragma: no cover - platforms without pidfd
        time.sleep(_PARENT_POLL_SECONDS)
    os._exit(1)  # pragma: no cover


def _init_worker(
    reader: MemberReader,
    exif_transpose: bool,
    max_pixels: int | None,
    chunk_pixel_bytes: int,
    owner_pid: int | None = None,
) -> None:
    global _worker_reader, _worker_exif_transpose, _worker_chunk_pixel_bytes
    if owner_pid is not None:
        _die_with_parent(owner_pid)
    # Ctrl-C is the parent's to handle: it terminates the workers; tracebacks from every worker
    # would only bury the one message that matters.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_reader = reader
    _worker_exif_transpose = exif_transpose
    _worker_chunk_pixel_bytes = chunk_pixel_bytes
    # Mirror the parent's decompression-bomb limit, for Pillow's own check and for ours (the
    # worker reads it back from here).
    Image.MAX_IMAGE_PIXELS = max_pixels
    # Truncated images are errors in fidkit. A worker re-imports the caller's main script, which
    # may set this True for its own loading; this process is fidkit's, so it stays False for good
    # (decode_image_bytes also forces it False around each image, as in the caller's process).
    ImageFile.LOAD_TRUNCATED_IMAGES = False


def _decode_chunk_in_worker(
    chunk: Sequence[tuple[int, str]],
) -> tuple[list[_Outcome], list[tuple[int, str]]]:
    assert _worker_reader is not None, "worker used before its initializer ran"
    return _decode_members(
        _worker_reader, chunk, _worker_exif_transpose, Image.MAX_IMAGE_PIXELS, _worker_chunk_pixel_bytes
    )


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


def _worker_died(first: str, last: str) -> ImageError:
    return ImageError(
        f"a decoding worker process died while decoding one of {first} .. {last}: a crash in the "
        "decoder, memory exhausted, or, if this is the first batch, a calling script without "
        "'if __name__ == \"__main__\":' (worker processes re-import it). Rerun with workers=0 "
        "(--workers 0) to decode in this process"
    )


def _workers_cannot_start(exc: OSError | EOFError, n_workers: int) -> ResourceError:
    """The error for worker processes that could not be started (or their pipes made)."""
    what = f"cannot start {n_workers} decoding worker processes"
    fallback = "or decode in this process with --workers 0 (workers=0)"
    if isinstance(exc, EOFError):
        return ResourceError(
            f"{what}: the server process that starts them ended unexpectedly; it shares this process's limits, "
            f"so open files (raise ulimit -n) or memory ran out; {fallback}"
        )
    if "No usable temporary directory" in str(exc):
        # tempfile's verdict when it cannot create a file in any candidate folder; the forkserver
        # needs one for its socket. Out of file descriptors fails there first.
        return ResourceError(
            f"{what}: no usable temporary folder ({exc}): the temporary folders are full or not writable "
            f"(set TMPDIR to a writable folder), or this process ran out of open files (raise ulimit -n); "
            f"{fallback}"
        )
    name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    hint = _SHORTAGE_FIXES.get(exc.errno or 0, "the system refused")
    return ResourceError(f"{what}: {exc.strerror or exc} ({name}); {hint}; {fallback}")


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
        for them here. A reason ending with :data:`NOT_CACHED_MARK` is a skip that a later run may
        not repeat (see the module's notes).

    Raises
    ------
    ResourceError
        Memory or file descriptors ran out reading or decoding a file (named), or the workers could
        not start: no file is counted bad for what the machine lacks.
    ImageError
        A decoding worker process died.
    SourceError
        Damage to the archive as a whole.
    """
    max_pixels = Image.MAX_IMAGE_PIXELS
    n_names = len(names)
    chunk_size = _DEFAULT_CHUNK_FILES
    workers = _cap_workers(workers)
    if workers > 1 and n_names > IN_PROCESS_MAX_IMAGES and working_directory_gone():
        logger.warning("the working directory no longer exists, and multiprocessing cannot start worker processes "
                       "without one: decoding in this process instead (slower); cd to an existing folder to decode "
                       "with %d workers", workers)
        workers = 0
    if workers <= 1 or n_names <= IN_PROCESS_MAX_IMAGES:
        try:
            for chunk in _chunks(names, chunk_size):
                while chunk:
                    outcomes, chunk = _decode_members(
                        reader, chunk, exif_transpose, max_pixels, _CHUNK_PIXEL_BYTES
                    )
                    for outcome in outcomes:
                        yield DecodeOutcome(*outcome)
        finally:
            reader.close()
        return

    # Never more workers than chunks: idle workers only cost start-up time.
    chunk_size = max(1, min(chunk_size, -(-n_names // workers)))
    n_workers = min(workers, -(-n_names // chunk_size))
    chunks = _chunks(names, chunk_size)
    logger.debug("decoding %d files with %d workers, %d per task", n_names, n_workers, chunk_size)
    try:
        executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=n_workers,
            mp_context=_mp_context(),
            initializer=_init_worker,
            initargs=(reader, exif_transpose, max_pixels, _CHUNK_PIXEL_BYTES, os.getpid()),
        )
    except OSError as exc:  # its pipes: out of file descriptors
        reader.close()
        raise _workers_cannot_start(exc, n_workers) from exc
    in_flight: collections.deque[tuple[concurrent.futures.Future, list[tuple[int, str]]]] = (
        collections.deque()
    )

    def submit(chunk: list[tuple[int, str]]) -> concurrent.futures.Future:
        # Workers start on demand, in submit: this is where they fail to start (file descriptors,
        # the forkserver's temporary socket), and where a pool whose worker died says so first.
        try:
            return executor.submit(_decode_chunk_in_worker, chunk)
        except BrokenProcessPool as exc:
            # The worker died on one of the chunks in flight (or, with none, on the one submitted).
            pending = [queued for _, queued in in_flight] or [chunk]
            raise _worker_died(pending[0][0][1], pending[-1][-1][1]) from exc
        except (OSError, EOFError) as exc:
            # EOFError: the forkserver (which shares this process's limits) ended while starting one.
            raise _workers_cannot_start(exc, n_workers) from exc

    finished = False
    try:
        for chunk in chunks:
            in_flight.append((submit(chunk), chunk))
            if len(in_flight) >= 2 * n_workers:
                break
        while in_flight:
            future, chunk = in_flight.popleft()
            try:
                outcomes, left = future.result()
            except BrokenProcessPool as exc:
                raise _worker_died(chunk[0][1], chunk[-1][1]) from exc
            except MemoryError as exc:
                # Outside the decoding of one file (which names it): sending the pixels back, say.
                raise _out_of_memory(
                    f"memory ran out in a decoding worker process while it decoded one of {chunk[0][1]} .. "
                    f"{chunk[-1][1]}"
                ) from exc
            if left:
                # The worker stopped at its pixel budget: the rest of the chunk comes next in the
                # output, so it goes to the front, in the place of the chunk it came from.
                in_flight.appendleft((submit(left), left))
            else:
                next_chunk = next(chunks, None)
                if next_chunk is not None:
                    in_flight.append((submit(next_chunk), next_chunk))
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
