"""Signals: SIGTERM unwound as Ctrl-C is while a command runs, and handlers kept across code that replaces them.

Only the ``fidkit`` command installs a handler (:func:`sigterm_as_interrupt`); library code never does, and puts
back what it found where Ray replaces it (:func:`signal_handlers_kept`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["Terminated", "sigterm_as_interrupt", "sigterm_arrived", "signal_handlers_kept"]


class Terminated(KeyboardInterrupt):
    """SIGTERM, unwound as Ctrl-C is (temporaries removed, workers stopped); the command then exits 143."""


# Whether SIGTERM arrived during this command: code that waits in C (ray.get) turns any exception the handler
# raises into a new, plain KeyboardInterrupt, so the exception's type alone cannot tell.
_sigterm_seen = {"during_command": False}


def _raise_terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM (a cleanup that hangs) ends the process at once
    _sigterm_seen["during_command"] = True
    raise Terminated()


def sigterm_arrived() -> bool:
    """Whether SIGTERM arrived during the command that :func:`sigterm_as_interrupt` spans (or the last one)."""
    return _sigterm_seen["during_command"]


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the command runs, SIGTERM (timeout, docker stop, scancel, Kubernetes) takes the path of Ctrl-C; by
    default it ends the process as kill -9 does (a half-written --save temporary left, semaphores leaked). Only the
    command does this, never library code; the handler found is put back afterwards."""
    _sigterm_seen["during_command"] = False
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (main called from a thread): signals are not this code's to handle
        yield
        return
    try:
        yield
    finally:  # None: a handler installed from C, which Python cannot put back; the default is the closest
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


# Signals whose handlers ray.init replaces in the driver and fidkit puts back (see signal_handlers_kept).
_KEPT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def signal_handlers_kept() -> Iterator[None]:
    """Put back, when the span ends, the SIGTERM and SIGINT handlers installed before it (around ray.init and
    ray.shutdown).

    ray.init installs its own SIGTERM handler in the driver (``sys.exit(signum)``, from Python) and its core
    worker a failure handler (from C, which prints "*** SIGTERM received ***"); the Python one stays after
    ray.shutdown, which in turn sets SIGTERM back to the default from C (the process ends as kill -9 leaves
    it). Either would take SIGTERM away from whoever installed a handler first: the fidkit command, which
    unwinds SIGTERM as Ctrl-C (temporaries removed, actors stopped, "fidkit: terminated", exit 143), or a
    user's program. Each handler is set again even where Python still reports it, since a handler set from
    C replaces the one Python installed without Python knowing. Only the main thread can set handlers; a
    handler Python cannot name (None: set from C before Python saw it) is left as Ray leaves it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in _KEPT_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)
