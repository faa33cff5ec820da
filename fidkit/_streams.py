"""The standard streams: stdout carries only the result, whatever a library prints; stderr may be gone.

Libraries write to stdout behind fidkit's back: onnxruntime prints "Failed to load libcublasLt.so.13 ..."
and an "EP Error" block when a GPU provider cannot start, and C/C++ code may write to file descriptor 1
directly, where replacing ``sys.stdout`` does not reach. Two layers keep that off the result:

- :func:`standard_streams` (the ``fidkit`` command, :func:`fidkit.cli.main`): for the whole command,
  descriptor 1 points at stderr and the result goes to a private duplicate of the real stdout, which only
  ``sys.stdout`` writes to. A closed or broken stderr drops messages without changing the exit status; a
  broken stdout pipe ends the command quietly; a closed stdout is an error before any work.
- :func:`stdout_to_stderr` (library code, for Python API users): around the calls into a library that may
  print (onnxruntime's DLL preloading and session creation), both ``sys.stdout`` and descriptor 1 point at
  stderr.

:func:`logging_to_stderr` is how the command's own log records reach stderr (progress, and warnings that
``--json`` also lists). :func:`progress_bar` is every tqdm bar of the package, on stderr.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import io
import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

__all__ = [
    "StdoutGone", "StdoutWriteError", "standard_streams", "silence_stdout", "stdout_to_stderr", "logging_to_stderr",
    "RESTATED", "progress_bar",
]

#: ``extra=`` of a warning logged while reading whose fact the result restates (files skipped or ignored: the
#: ``n_skipped`` and ``ignored`` fields, and a warning of ``compute``'s report, from the cache too): printed, but
#: not listed again in ``--json``'s ``warnings``, which would then differ between a fresh and a cached run.
RESTATED = {"fidkit_restated": True}


class StdoutGone(Exception):
    """stdout's reader went away (EPIPE): not an error of the command, so told apart from other OSErrors."""


class StdoutWriteError(Exception):
    """Writing the result to stdout failed (a full disk, an I/O error): told apart from the command's own
    OSErrors, so that a saved file is not reported as a failed save. `error` is the OSError."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def _printable(text: str, stream: Any) -> str:
    """`text` as `stream` can encode it: a file name that is not valid UTF-8 (kept by Python as lone
    surrogates) is shown with backslash escapes instead of ending the command after its work is done."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    return text.encode(encoding, "backslashreplace").decode(encoding, "replace")


def _written_by_fidkit(frame: Any) -> bool:
    """True if `frame` (the code that called ``print`` or ``write``) is fidkit's own."""
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return name == "fidkit" or name.startswith("fidkit.")


class _GuardedStdout:
    """sys.stdout during a command: fidkit's own writes are the result, and a broken pipe becomes
    :class:`StdoutGone`.

    fidkit's code prints nothing on stdout but the result, so what other code prints there during a command
    (a library's diagnostics, e.g. onnxruntime's "EP Error" block) goes to `elsewhere` (stderr) when given.
    """

    def __init__(self, stream: Any, elsewhere: Any = None) -> None:
        self._stream = stream
        self._elsewhere = elsewhere

    def write(self, text: str) -> int:
        if self._elsewhere is not None and not _written_by_fidkit(sys._getframe(1)):
            return self._elsewhere.write(text)
        try:
            try:
                return self._stream.write(text)
            except UnicodeEncodeError:
                return self._stream.write(_printable(text, self._stream))
        except BrokenPipeError as error:
            raise StdoutGone() from error
        except OSError as error:
            raise StdoutWriteError(error) from error

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError as error:
            raise StdoutGone() from error
        except OSError as error:
            raise StdoutWriteError(error) from error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _TolerantStderr(_GuardedStdout):
    """sys.stderr during a command: closed or broken, messages are dropped and the command goes on."""

    def write(self, text: str) -> int:
        with contextlib.suppress(OSError, ValueError):  # ValueError: a closed file object
            try:
                return self._stream.write(text)
            except UnicodeEncodeError:
                return self._stream.write(_printable(text, self._stream))
        return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()


def _occupy_with_devnull(fd: int) -> None:
    """Put /dev/null on a standard descriptor the process was started without (``>&-``, ``2>&-``).

    Otherwise the next file fidkit opens (an output, a temporary file) would get that descriptor, and
    anything writing to "stderr" at the OS level (onnxruntime's log) would write into it.
    """
    try:
        os.fstat(fd)
        return  # something holds it already: leave it alone
    except OSError:
        pass
    null = os.open(os.devnull, os.O_WRONLY)
    if null != fd:
        os.dup2(null, fd)
        os.close(null)


def _writes_to_fd1(stream: Any) -> bool:
    """True if `stream` is a file object on descriptor 1 (not pytest's capture, not a notebook's stream)."""
    try:
        return stream is not None and stream.fileno() == 1
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        return False


def _flush_quietly(stream: Any) -> None:
    with contextlib.suppress(Exception):  # a closed or broken stream: nothing of ours is lost by skipping it
        stream.flush()


_LIBC: Any = None


def _flush_c_stdio() -> None:
    """Flush the C library's stdio buffers (``fflush(NULL)``).

    C and C++ code (``printf``, ``std::cout``) writing to a pipe or file is buffered by the C library and
    written to descriptor 1 later: flushed before descriptor 1 is pointed elsewhere, it lands where it
    was written to, not in the result.
    """
    global _LIBC
    with contextlib.suppress(Exception):  # no C library reachable (e.g. Windows): nothing buffered to flush
        if _LIBC is None:
            _LIBC = ctypes.CDLL(None)
        _LIBC.fflush(None)


def _point_fd1_at_stderr() -> int | None:
    """Make descriptor 1 a duplicate of descriptor 2 (or of /dev/null if 2 is closed).

    Returns a duplicate of what descriptor 1 was, to restore it, or None if it was closed.
    """
    try:
        saved: int | None = os.dup(1)
    except OSError:
        saved = None
    try:
        os.dup2(2, 1)
    except OSError:  # stderr closed too: what is printed is dropped
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    return saved


def _restore_fd1(saved: int | None) -> None:
    if saved is None:
        with contextlib.suppress(OSError):
            os.close(1)
        return
    os.dup2(saved, 1)
    os.close(saved)


_REDIRECT_LOCK = threading.RLock()
_redirect_depth = 0


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout inside the block to stderr: Python's ``print`` and C code's writes
    to descriptor 1 alike.

    For calls into libraries that print diagnostics on stdout (onnxruntime's ``preload_dlls`` and session
    creation), so that a program whose stdout is its result (``python train.py > fid.txt``, a pipe into
    ``jq``) receives nothing from them. Nested blocks redirect once. Descriptor 1 belongs to the whole
    process, so the block holds a lock: a second thread entering waits, and another thread's ``print`` to
    stdout meanwhile goes to stderr too; keep the blocks short.
    """
    global _redirect_depth
    with _REDIRECT_LOCK:
        outermost = _redirect_depth == 0
        saved: int | None = None
        if outermost:
            # What was printed before the block goes where it was meant to go.
            for stream in {id(s): s for s in (sys.stdout, sys.__stdout__) if _writes_to_fd1(s)}.values():
                _flush_quietly(stream)
            _flush_c_stdio()
            saved = _point_fd1_at_stderr()
        _redirect_depth += 1
        null = None
        target = sys.stderr
        if target is None:
            target = null = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - closed in finally
        try:
            with contextlib.redirect_stdout(target):
                yield
        finally:
            _redirect_depth -= 1
            if outermost:
                # A print to sys.__stdout__ made inside the block, and C output buffered inside it, go to
                # stderr now, before descriptor 1 is the result's again.
                if _writes_to_fd1(sys.__stdout__):
                    _flush_quietly(sys.__stdout__)
                _flush_c_stdio()
                _restore_fd1(saved)
            if null is not None:
                null.close()


@dataclasses.dataclass
class _Streams:
    stdout_closed: bool = False


@contextlib.contextmanager
def standard_streams() -> Iterator[_Streams]:
    """stdout and stderr for one command, whatever the shell left open.

    - stdout carries only the result. What code other than fidkit's prints on ``sys.stdout`` goes to
      stderr. When ``sys.stdout`` is descriptor 1 (a real run, not an in-process capture), the result
      goes to a private duplicate of it and descriptor 1 itself points at stderr until the command ends,
      so what any library or C code writes to descriptor 1 lands on stderr too.
      If stdout was closed (``>&-``) the command does not run: the result would be lost, so fidkit says
      so on stderr and exits 1.
    - stderr carries messages only; closed (``2>&-``) or a broken pipe, they are dropped and the exit
      status is what it would have been.
    - stdout a pipe whose reader went away: the command's files are complete, nothing is printed, exit 141.
    """
    saved = sys.stdout, sys.stderr
    streams = _Streams(stdout_closed=sys.stdout is None)
    if sys.stdout is None:
        _occupy_with_devnull(1)
    if sys.stderr is None:
        _occupy_with_devnull(2)
    null = None
    if sys.stdout is None or sys.stderr is None:
        null = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - closed in finally
    result = _private_result_stream(sys.stdout)
    sys.stderr = _TolerantStderr(sys.stderr if sys.stderr is not None else null)
    sys.stdout = _GuardedStdout(
        result if result is not None else sys.stdout if sys.stdout is not None else null, elsewhere=sys.stderr
    )
    try:
        yield streams
    finally:
        sys.stdout, sys.stderr = saved
        if result is not None:
            _close_result_stream(result)
        if null is not None:
            null.close()


def _private_result_stream(stdout: Any) -> io.TextIOBase | None:
    """Move the result's stdout off descriptor 1: a text stream on a private duplicate of it, and descriptor
    1 pointed at stderr. None (nothing changed) when `stdout` is not descriptor 1."""
    if not _writes_to_fd1(stdout):
        return None
    _flush_quietly(stdout)
    _flush_c_stdio()
    private = os.dup(1)  # not inheritable (os.dup's default): a program fidkit starts gets stderr as its fd 1
    os.dup2(2, 1)  # fd 2 is open: standard_streams has put /dev/null there if the shell closed it
    # Buffered as the real stdout was: line by line on a terminal, in blocks into a file or pipe.
    return open(  # noqa: SIM115 - closed by _close_result_stream
        private, "w", encoding=stdout.encoding, errors=stdout.errors, closefd=False,
        buffering=1 if getattr(stdout, "line_buffering", False) else -1,
    )


def _close_result_stream(result: io.TextIOBase) -> None:
    """Flush the result, and give descriptor 1 back the real stdout (or /dev/null if its reader went away)."""
    private = result.fileno()
    try:
        result.flush()
    except (OSError, ValueError):
        # The reader went away: what is left in the buffer goes to /dev/null, so that closing the stream
        # does not print "Exception ignored ... BrokenPipeError" at exit.
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, private)
        os.close(null)
    with contextlib.suppress(OSError, ValueError):
        result.close()
    # Output buffered during the command by C code or on sys.__stdout__ belongs to stderr, where fd 1 points.
    if _writes_to_fd1(sys.__stdout__):
        _flush_quietly(sys.__stdout__)
    _flush_c_stdio()
    os.dup2(private, 1)
    os.close(private)


def silence_stdout() -> None:
    """After a broken stdout pipe: let the interpreter's last flush go to /dev/null instead of failing."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.__stdout__.fileno())
        os.close(null)


@contextlib.contextmanager
def logging_to_stderr(*, debug: bool = False, quiet: bool = False) -> Iterator[list[str]]:
    """Send fidkit's log records to stderr for one command (the only place logging is configured); yield the
    list that collects the text of every WARNING (and higher) record, which ``--json`` lists with the warnings.

    ``fidkit: message`` for progress, ``fidkit: warning: message`` from WARNING up (as issued warnings print);
    `debug` prints every record with its level and logger, `quiet` only warnings. The ``fidkit`` logger's
    handlers, level and propagation are restored afterwards, so an application (or a test) that calls
    :func:`fidkit.cli.main` keeps its own logging setup.
    """
    handler = logging.StreamHandler(sys.stderr)
    if debug:
        handler.setFormatter(logging.Formatter("fidkit %(levelname)s %(name)s: %(message)s"))
        level = logging.DEBUG
    else:
        handler.setFormatter(_PlainFormatter())
        level = logging.WARNING if quiet else logging.INFO
    logged: list[str] = []
    collector = _CollectWarnings(logged)
    package_logger = logging.getLogger("fidkit")
    saved_level, saved_propagate = package_logger.level, package_logger.propagate
    package_logger.addHandler(handler)
    package_logger.addHandler(collector)
    package_logger.setLevel(level)
    # Records stop at the fidkit logger while the command runs: not printed twice by a root handler.
    package_logger.propagate = False
    try:
        yield logged
    finally:
        package_logger.removeHandler(handler)
        package_logger.removeHandler(collector)
        package_logger.setLevel(saved_level)
        package_logger.propagate = saved_propagate


class _PlainFormatter(logging.Formatter):
    """``fidkit: message`` for progress and notes, ``fidkit: warning: message`` from WARNING up."""

    def format(self, record: logging.LogRecord) -> str:
        kind = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        return f"fidkit: {kind}{record.getMessage()}"


class _CollectWarnings(logging.Handler):
    """Keeps the text of each WARNING (and higher) record, on one line, but those the result restates
    (:data:`RESTATED`)."""

    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(record, "fidkit_restated", False):
            self.into.append(" ".join(record.getMessage().split()))


class _NoBar:
    """The bar of a run that shows none: counts nothing, draws nothing, and makes no tqdm (see :func:`progress_bar`)."""

    def update(self, n: int = 1) -> None:
        """Ignore `n` units done."""

    def close(self) -> None:
        """Nothing to close."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@functools.cache
def _with_thread_lock(base: type) -> type:
    """`base` (a tqdm class) with a write lock made by :mod:`threading` only.

    tqdm's default lock, made with the first bar of the program, holds a ``multiprocessing.RLock()``, and making
    one fixes multiprocessing's default start method for the rest of the program: a later
    ``multiprocessing.set_start_method("spawn")`` raises "context has already been set". The subclass's own
    ``_lock`` keeps fidkit's bars off that path and leaves tqdm's class state as it was, so the program's own
    bars get tqdm's default lock when they make it, as without fidkit. Bars still share tqdm's list of bars (their
    lines on the terminal do not overlap) and, where tqdm has it, its thread lock (their writes do not interleave).
    """
    import threading

    from tqdm.std import TqdmDefaultWriteLock

    lock = getattr(TqdmDefaultWriteLock, "th_lock", None) or threading.RLock()
    return type(base.__name__, (base,), {"_lock": lock, "__module__": __name__})


def progress_bar(show: bool | None, *, auto: bool = True, file: Any = None, **options: Any) -> Any:
    """A tqdm bar on stderr (or `file`), or a stand-in with the same ``update``, ``close`` and ``with`` when it is
    not shown.

    Neither touches multiprocessing: a bar that is not shown makes no tqdm at all (a disabled tqdm still makes
    tqdm's lock and monitor thread), and a shown one takes a lock of threading only (see
    :func:`_with_thread_lock`). A program that runs fidkit can still choose its start method afterwards.

    Parameters
    ----------
    show : bool or None
        Draw the bar; None: only when the stream is a terminal.
    auto : bool
        ``tqdm.auto``'s class (a widget in a notebook) rather than the plain one.
    file : text stream, optional
        Where the bar is drawn; default stderr.
    **options
        tqdm's own arguments (``total``, ``desc``, ``unit``, ``leave``, ...).

    Returns
    -------
    tqdm.tqdm or _NoBar
    """
    stream = sys.stderr if file is None else file
    if show is None:
        try:
            show = bool(stream.isatty())
        except (AttributeError, OSError, ValueError):  # closed, or an object without isatty
            show = False
    if not show:
        return _NoBar()
    if auto:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return _with_thread_lock(tqdm)(file=stream, **options)
