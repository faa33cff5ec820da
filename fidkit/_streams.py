"""The standard streams of the ``fidkit`` command: stdout carries only the result, stderr may be gone.

A closed or broken stderr drops messages without changing the exit status; a broken stdout pipe ends the
command quietly; a closed stdout is an error before any work. Used by :func:`fidkit.cli.main` only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["StdoutGone", "standard_streams", "silence_stdout"]


class StdoutGone(Exception):
    """stdout's reader went away (EPIPE): not an error of the command, so told apart from other OSErrors."""


def _printable(text: str, stream: Any) -> str:
    """`text` as `stream` can encode it: a file name that is not valid UTF-8 (kept by Python as lone
    surrogates) is shown with backslash escapes instead of ending the command after its work is done."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    return text.encode(encoding, "backslashreplace").decode(encoding, "replace")


class _GuardedStdout:
    """sys.stdout during a command: a broken pipe becomes :class:`StdoutGone`."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            try:
                return self._stream.write(text)
            except UnicodeEncodeError:
                return self._stream.write(_printable(text, self._stream))
        except BrokenPipeError as error:
            raise StdoutGone() from error

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError as error:
            raise StdoutGone() from error

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


@dataclasses.dataclass
class _Streams:
    stdout_closed: bool = False


@contextlib.contextmanager
def standard_streams() -> Iterator[_Streams]:
    """stdout and stderr for one command, whatever the shell left open.

    - stdout carries only the result. If it was closed (``>&-``) the command does not run: the result
      would be lost, so fidkit says so on stderr and exits 1.
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
    sys.stdout = _GuardedStdout(sys.stdout if sys.stdout is not None else null)
    sys.stderr = _TolerantStderr(sys.stderr if sys.stderr is not None else null)
    try:
        yield streams
    finally:
        sys.stdout, sys.stderr = saved
        if null is not None:
            null.close()


def silence_stdout() -> None:
    """After a broken stdout pipe: let the interpreter's last flush go to /dev/null instead of failing."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.__stdout__.fileno())
        os.close(null)
