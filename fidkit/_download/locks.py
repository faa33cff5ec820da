"""Download locks: two processes downloading the same file take turns (:func:`fidkit._download.download`).

The lock is a file under ``cache_home()/locks`` held with ``fcntl.flock``; the holder writes its pid there (for
the message of a waiter that gives up) and removes the file before it lets go. The kernel releases the lock of
a process that dies, so a dead process never blocks anyone.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fidkit._fs import pid_running
from fidkit._home_dir import cache_home
from fidkit.errors import DownloadError

logger = logging.getLogger(__name__)

#: How often a process waiting for another one's download lock tries again.
_LOCK_POLL_S = 0.2


def _lock_path(target: Path) -> Path:
    # os.path.realpath, not Path.resolve: the same path, and a loop of links is left as it is, not a RuntimeError
    # (the download then says what the loop is).
    key = hashlib.sha256(os.path.realpath(target).encode("utf-8")).hexdigest()[:16]
    return cache_home() / "locks" / f"{target.name}.{key}.lock"


def _lock_holder(lock_path: Path) -> str:
    """Who holds a download lock, as far as its file says (the holder writes its pid there)."""
    try:
        pid = int(lock_path.read_text(encoding="ascii").strip() or "0")
    except (OSError, ValueError):
        pid = 0
    if pid <= 0:
        return "a process that did not record its id"
    state = "running here" if pid_running(pid) else "not running on this machine: on another one sharing the folder"
    return f"process {pid}, {state}"


def _acquire(lock_path: Path, fcntl: Any, wait_s: float, what: str) -> Any:
    """Open and lock `lock_path`, waiting at most `wait_s` seconds for another holder; return the open handle.

    The holder removes the file before it lets go, so a waiter that gets the lock checks that the path still
    names the file it locked; if not it starts again on the new file. Raises DownloadError after `wait_s`.
    """
    ends = time.monotonic() + wait_s
    announced = False
    while True:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle = open(lock_path, "a+b")  # noqa: SIM115 - returned, or closed below
        except FileNotFoundError:
            continue  # the folder was removed by the holder that just finished: make it again
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            left = ends - time.monotonic()
            if left <= 0:
                raise DownloadError(
                    f"gave up waiting for {what} after {wait_s:.3g} s: another download holds the lock {lock_path} "
                    f"({_lock_holder(lock_path)}); wait for it to end or stop it, then try again (the lock of a "
                    "process that died is released by the system; only a holder on another machine sharing this "
                    "folder can leave it held: then delete that lock file)"
                ) from None
            if not announced:
                logger.info("waiting for another process that is downloading %s (lock %s)", what, lock_path)
                announced = True
            time.sleep(min(_LOCK_POLL_S, left))
            continue
        except BaseException:
            handle.close()
            raise
        try:
            same = os.path.samestat(os.fstat(handle.fileno()), os.stat(lock_path))
        except OSError:
            same = False
        if same:
            # Who holds it, for the message of a waiter that gives up.
            with contextlib.suppress(OSError):
                handle.seek(0)
                handle.truncate()
                handle.write(str(os.getpid()).encode("ascii"))
                handle.flush()
            return handle
        handle.close()  # the file was removed (or replaced) while this process waited: lock the current one


@contextlib.contextmanager
def _download_lock(target: Path, *, wait_s: float, what: str) -> Iterator[None]:
    """Hold an exclusive lock for downloading `target`, waiting at most `wait_s` seconds for another process
    (best effort: without fcntl or on a failing filesystem, no lock; the atomic rename still keeps the result
    whole). The lock file is removed when done."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock_path = _lock_path(target)
    handle = None
    try:
        handle = _acquire(lock_path, fcntl, wait_s, what)
    except OSError as exc:
        logger.debug("no download lock for %s (%s); going on without one", target, exc)
    try:
        yield
    finally:
        if handle is not None:
            # Removed while still held: a waiter that locks the removed file sees it is gone and starts again.
            with contextlib.suppress(OSError):
                if os.path.samestat(os.fstat(handle.fileno()), os.stat(lock_path)):
                    lock_path.unlink()
            handle.close()  # closing releases the lock
