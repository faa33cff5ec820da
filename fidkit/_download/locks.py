"""Download locks: two processes downloading the same file take turns (:func:`fidkit._download.download`).

The lock is a file under ``cache_home()/locks`` held with ``fcntl.flock``; the holder writes its pid there (for
the message of a waiter that gives up) and removes the file before it lets go. The kernel releases the lock of
a process that dies, so a dead process never blocks anyone.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fidkit._fs import described_link, file_kind, pid_running
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


class _UnusableLock(OSError):
    """Internal: the lock path holds something that is not a lock file fidkit can use (a symbolic link, a folder),
    or the file system never shows the file that was locked: the download goes on without a lock."""


def _open_lock_file(lock_path: Path) -> Any:
    """Open (creating) the regular file at `lock_path` for reading and writing, never through a symbolic link.

    The holder truncates the file and writes its pid there: through a link that would overwrite whatever file the
    link points to, and a broken link would make the open fail for ever. Raises :class:`_UnusableLock` for a link
    or anything but a regular file at `lock_path` (a FIFO, a socket, a device), FileNotFoundError when its folder
    is gone.
    """
    # O_NONBLOCK: the open of a FIFO or a device someone put there must not wait for a writer or the device; it
    # is cleared again once fstat shows a regular file (where it changes nothing anyway).
    flags = (
        os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        | getattr(os, "O_NONBLOCK", 0)
    )
    try:
        fd = os.open(lock_path, flags, 0o666)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.EISDIR, errno.EMLINK, errno.ENXIO) or not _is_regular_or_gone(lock_path):
            raise _UnusableLock(
                f"{lock_path} is {_what_is_at(lock_path)}, not a lock file ({error.strerror or error}); remove it"
            ) from error
        raise
    try:
        # Before os.fdopen: its buffered reader-writer refuses a FIFO (not seekable) with io.UnsupportedOperation,
        # which would pass for a failing file system (no lock, and only a debug line saying why).
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _UnusableLock(f"{lock_path} is {_what_is_at(lock_path)}, not a lock file; remove it")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "r+b")
    except BaseException:
        os.close(fd)
        raise


def _is_regular_or_gone(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return True  # gone (or unreadable): the open's own error says what is wrong


def _what_is_at(path: Path) -> str:
    try:
        info = path.lstat()
    except OSError:
        return "gone"
    if stat.S_ISLNK(info.st_mode):
        return described_link(path)[1]
    return file_kind(info.st_mode)


def _acquire(lock_path: Path, fcntl: Any, wait_s: float, what: str) -> Any:
    """Open and lock `lock_path`, waiting at most `wait_s` seconds for another holder; return the open handle.

    The holder removes the file before it lets go, so a waiter that gets the lock checks that the path still
    names the file it locked; if not it starts again on the new file. Every way round the loop either sleeps or
    checks the deadline: raises DownloadError after `wait_s` when another process holds the lock,
    :class:`_UnusableLock` (an OSError: the caller goes on without a lock) when the path cannot be a lock file.
    """
    ends = time.monotonic() + wait_s
    announced = False
    retries = 0  # rounds that found the file removed or replaced (a holder that just finished): normally one
    while True:
        if retries:
            left = ends - time.monotonic()
            if left <= 0:
                raise _UnusableLock(
                    f"{lock_path} was removed or replaced {retries} times while this process tried to lock it, "
                    "until the deadline passed"
                )
            if retries > 1:  # the first retry is at once (the usual case); then not faster than a waiter polls
                time.sleep(min(_LOCK_POLL_S, left))
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle = _open_lock_file(lock_path)
        except FileNotFoundError:
            retries += 1
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
            # lstat: a link put in the file's place is not the file that was locked.
            same = os.path.samestat(os.fstat(handle.fileno()), os.lstat(lock_path))
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
        retries += 1


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
    except _UnusableLock as exc:  # the user's to fix, but no reason to stop the download
        logger.warning("no download lock for %s: %s; going on without one", target, exc)
    except OSError as exc:
        logger.debug("no download lock for %s (%s); going on without one", target, exc)
    try:
        yield
    finally:
        if handle is not None:
            # Removed while still held: a waiter that locks the removed file sees it is gone and starts again.
            with contextlib.suppress(OSError):
                if os.path.samestat(os.fstat(handle.fileno()), os.lstat(lock_path)):
                    lock_path.unlink()
            handle.close()  # closing releases the lock
