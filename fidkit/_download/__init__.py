"""Downloads: URLs tried in order, the checksum checked before the file is kept, an atomic move into place.

Every file fidkit downloads (the Inception weights, the named datasets) goes through :func:`download`:

* the URLs are tried in order (a release, then its mirrors); with ``FIDKIT_MIRROR=URL`` set, each URL's scheme,
  host and folder are replaced by that URL, so only ``URL/<file name>`` is tried (:func:`mirror_urls`);
* the bytes are hashed (sha256 or md5) while they stream into a temporary file beside the destination; the
  size and checksum are compared *before* the file is moved into place, and a file that fails is deleted and
  reported with both checksums. With a known size, a server that announces another length is refused before
  its body is read, and one that sends more is refused at the first byte too many: no mirror can fill the
  disk;
* each URL has a deadline for the whole transfer (``FIDKIT_DOWNLOAD_DEADLINE`` seconds, default from the size:
  :func:`download_deadline`), besides the per-operation socket timeout: a server that trickles a byte at a
  time is cut off at the deadline, however slowly it sends;
* the move is :func:`fidkit._fs.atomic_write`'s ``os.replace``: an interrupted download (Ctrl-C, a closed
  connection, a timeout) leaves no file under the final name, only nothing or a hidden ``.NAME.*.tmp`` that a
  killed process could not remove;
* two processes downloading the same file take turns on a lock file (``fcntl.flock``) under
  ``cache_home()/locks`` (:mod:`fidkit._download.locks`); the second finds the first one's file, checks it and
  uses it. A waiter gives up after the deadlines of the holder's download have passed, naming the lock file and
  its holder. The kernel releases the lock of a process that dies, so a dead process never blocks anyone; the
  lock file is removed by whoever holds it when done (a waiter that then holds a removed file tries again).
  Where locks are not available the unique temporary files and the atomic rename still keep the result whole;
* a failure to write the file here (a full or read-only disk, no permission: :class:`DiskWriteError`) ends the
  download at once: it is not the server's fault, and the next mirror would fill the same disk again. So does
  something fidkit must not replace on the way (a folder or a link at the file's path, ``FIDKIT_HOME`` naming a
  file): the message names it and says to move it or point ``FIDKIT_HOME`` elsewhere;
* a download leaves no lock behind (``locks/`` is removed when it is empty), and a failed one no folder: those
  it created (the destination's, the cache home) are removed again when empty; nothing else is touched;
* progress is drawn with tqdm on stderr, only when stderr is a terminal.

Ground floor: nothing here knows about weights, datasets or images.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import http.client
import logging
import math
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from fidkit._download.disk import DiskWriteError, disk_write_error, in_the_way, path_in_the_way_error
from fidkit._download.locks import _download_lock, _lock_path
from fidkit._fs import CHUNK_BYTES, atomic_write, file_digest
from fidkit.errors import DownloadError, InputError, OverwriteError

__all__ = [
    "MIRROR_ENV",
    "DEADLINE_ENV",
    "DEFAULT_TIMEOUT_S",
    "Checksum",
    "DiskWriteError",
    "mirror_urls",
    "download_deadline",
    "progress_bar",
    "download",
]

logger = logging.getLogger(__name__)

#: Environment variable with a base URL that replaces the scheme, host and folder of every download.
MIRROR_ENV = "FIDKIT_MIRROR"
#: Seconds any one socket operation (connect, each read) may wait before the download gives up.
DEFAULT_TIMEOUT_S = 30.0
#: Environment variable: seconds the whole transfer from one URL may take (default: :func:`download_deadline`).
DEADLINE_ENV = "FIDKIT_DOWNLOAD_DEADLINE"
#: The default deadline is this many seconds plus the time the file takes at :data:`_SLOWEST_RATE`.
_DEADLINE_BASE_S = 300.0
#: Bytes per second below which a download is taken for a stalled or hostile server (64 KiB/s).
_SLOWEST_RATE = 64 * 1024
#: The default deadline of a file of unknown size.
_DEADLINE_UNKNOWN_SIZE_S = 3600.0
_ALGORITHMS = ("sha256", "md5")


@dataclasses.dataclass(frozen=True)
class Checksum:
    """The expected digest of a file.

    Attributes
    ----------
    algorithm : str
        ``"sha256"`` or ``"md5"`` (md5 only where the publisher gives nothing else, as for CIFAR and
        MNIST; together with the size it identifies the file).
    hexdigest : str
        The lower-case hex digest.
    """

    algorithm: str
    hexdigest: str

    def __post_init__(self) -> None:
        if self.algorithm not in _ALGORITHMS:
            raise ValueError(f"unknown checksum algorithm {self.algorithm!r}; expected one of {_ALGORITHMS}")
        object.__setattr__(self, "hexdigest", self.hexdigest.lower())

    def hasher(self) -> Any:
        """A new hashlib object of this algorithm (md5 marked as not for security, for FIPS builds)."""
        return hashlib.new(self.algorithm, usedforsecurity=False)

    def __str__(self) -> str:
        return f"{self.algorithm} {self.hexdigest}"


def mirror_urls(urls: Sequence[str], mirror: str | None = None) -> tuple[str, ...]:
    """The URLs to try: `urls` as they are, or with ``FIDKIT_MIRROR`` set, ``MIRROR/<file name>`` for each.

    Parameters
    ----------
    urls : sequence of str
        The canonical URLs, in order.
    mirror : str, optional
        A base URL (``https://host/folder``, ``file:///srv/fidkit``); default ``$FIDKIT_MIRROR``.
        It replaces each URL's scheme, host and folder; the file name is kept. Duplicates (two
        canonical URLs with the same file name) are tried once.
    """
    base = os.environ.get(MIRROR_ENV, "") if mirror is None else mirror
    base = base.strip()
    if not base:
        return tuple(urls)
    redirected: list[str] = []
    for url in urls:
        file_name = PurePosixPath(urllib.parse.urlsplit(url).path).name
        candidate = f"{base.rstrip('/')}/{file_name}"
        if candidate not in redirected:
            redirected.append(candidate)
    return tuple(redirected)


def progress_bar(total: int | None, desc: str, *, show: bool | None = None, stream: TextIO | None = None) -> Any:
    """A tqdm bar counting bytes (shown in KiB/MiB), on `stream` (default stderr).

    `show`: ``None`` draws only when the stream is a terminal, ``True`` always, ``False`` never (then no tqdm
    is made: see :func:`fidkit._streams.progress_bar`).
    """
    from fidkit._streams import progress_bar as bar  # tqdm, imported there only when a bar is drawn

    return bar(
        show, auto=False, file=stream, total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
        mininterval=0.25, leave=True,
    )


def download_deadline(size: int | None = None, deadline: float | None = None) -> float:
    """Seconds the transfer from one URL may take in all: `deadline`, else ``$FIDKIT_DOWNLOAD_DEADLINE``, else
    5 minutes plus the file's time at 64 KiB/s (an hour for a file of unknown size).

    The socket timeout bounds each operation only; this bounds the whole, so that a server sending a byte every
    few seconds cannot keep a run waiting for ever.

    Raises
    ------
    InputError
        `deadline` or the environment variable is not a positive finite number of seconds.
    """
    where = "deadline"
    if deadline is None:
        text = os.environ.get(DEADLINE_ENV, "").strip()
        if not text:
            if size is None:
                return _DEADLINE_UNKNOWN_SIZE_S
            return _DEADLINE_BASE_S + size / _SLOWEST_RATE
        where = f"{DEADLINE_ENV}={text!r}"
        try:
            deadline = float(text)
        except ValueError:
            deadline = math.nan
    try:
        value = float(deadline)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 < value < math.inf:
        raise InputError(
            f"{where} is not a download deadline: give the seconds one download may take in all, a positive "
            f"number such as 1800 (unset {DEADLINE_ENV} for the default, which grows with the file's size)"
        )
    return value


class _Refused(Exception):
    """Internal: a download that finished but is not the expected file (or was cut short)."""


class _NetworkFailed(Exception):
    """Internal: the server could not be reached or the transfer broke off (the message says which URL and why)."""


class _LocalWriteFailed(Exception):
    """Internal: writing the downloaded bytes to the local file failed (`error`), not reading them."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


@contextlib.contextmanager
def _writing_locally() -> Iterator[None]:
    """Mark an OSError raised in the block as the local file's, so that it is never taken for the network's."""
    try:
        yield
    except OSError as error:
        raise _LocalWriteFailed(error) from error


class _Watchdog:
    """Shuts down the sockets of one download when its deadline passes.

    A socket timeout bounds each read; a server that sends a byte just before each timeout (in the body or in
    the headers) would still never end. At the deadline this cuts every connection the download opened
    (redirects included): the blocked read returns at once and :attr:`expired` says why.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()

    def remaining(self) -> float:
        return self.ends - time.monotonic()

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            self._shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        # The plain socket's shutdown, also under TLS: it wakes a read blocked in another thread, which a close
        # would not, and leaves the TLS object to fail on its own.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _watched(connection_class: type, watchdog: _Watchdog) -> type:
    """`connection_class` (http.client's HTTP or HTTPS connection) that hands its socket to `watchdog`."""

    class Watched(connection_class):  # type: ignore[misc, valid-type]
        def connect(self) -> None:
            super().connect()
            watchdog.watch(self.sock)

    return Watched


class _WatchedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self._connection = _watched(http.client.HTTPConnection, watchdog)

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(self._connection, req)


class _WatchedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self._connection = _watched(http.client.HTTPSConnection, watchdog)

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(self._connection, req, context=self._context)


def _missing_folders(folder: Path) -> list[Path]:
    """The folders from `folder` up that do not exist yet, deepest first (what a write there would create)."""
    missing: list[Path] = []
    current = folder
    while not current.exists() and current.parent != current:
        missing.append(current)
        current = current.parent
    return missing


def _remove_if_empty(folders: Sequence[Path]) -> None:
    """Remove `folders` (deepest first) that are empty: only ones this download created, never a non-empty one."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (someone else's file, or another download), or gone: leave it and what is above


def _is_expected_file(path: Path, checksum: Checksum, size: int | None) -> bool:
    try:
        if size is not None and path.stat().st_size != size:
            return False
        return file_digest(path, checksum.algorithm) == checksum.hexdigest
    except OSError:
        return False


def _read_some(response: Any, limit: int) -> bytes:
    """At most `limit` bytes from one read of the connection (not a loop that waits for all of them)."""
    read1 = getattr(response, "read1", None)
    return read1(limit) if read1 is not None else response.read(limit)


def _fetch(url: str, partial: Path, checksum: Checksum, *, size: int | None, desc: str, show: bool | None,
           timeout: float, deadline: float) -> tuple[int, str]:
    """Stream `url` into `partial` within `deadline` seconds; return the number of bytes written and their digest.

    With a known `size`, never reads more than one byte past it: a longer body is refused there.
    """
    watchdog = _Watchdog(deadline)
    try:
        with watchdog:
            return _transfer(url, partial, checksum, size=size, desc=desc, show=show, timeout=timeout,
                             watchdog=watchdog)
    except (_Refused, _LocalWriteFailed):
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        if not watchdog.expired:
            raise
        raise _Refused(_too_slow(url, deadline)) from exc


def _too_slow(url: str, deadline: float) -> str:
    return (
        f"{url}: not finished within the deadline of {deadline:.6g} s; nothing was kept (a slow or stalled "
        f"server; on a slow connection set {DEADLINE_ENV} to more seconds)"
    )


def _transfer(url: str, partial: Path, checksum: Checksum, *, size: int | None, desc: str, show: bool | None,
              timeout: float, watchdog: _Watchdog) -> tuple[int, str]:
    digest = checksum.hasher()
    n_bytes = 0
    request = urllib.request.Request(url, headers={"User-Agent": "fidkit"})
    opener = urllib.request.build_opener(_WatchedHTTPHandler(watchdog), _WatchedHTTPSHandler(watchdog))
    with opener.open(request, timeout=max(min(timeout, watchdog.remaining()), 0.001)) as response:
        length = response.headers.get("Content-Length") if response.headers is not None else None
        announced = int(length) if length and length.strip().isdigit() else None
        if size is not None and announced is not None and announced != size:
            # Known to be the wrong file before a byte of it is read (a 4 GB "mirror" never fills the disk).
            raise _Refused(
                f"{url}: the server announces {announced} bytes, expected {size}; refused before reading it, "
                "nothing was kept"
            )
        with _writing_locally():
            out = open(partial, "wb")  # noqa: SIM115 - closed below
        try:
            with progress_bar(announced if announced is not None else size, desc, show=show) as bar:
                while True:
                    # One byte past the expected size is enough to know the file is wrong.
                    want = CHUNK_BYTES if size is None else min(CHUNK_BYTES, size + 1 - n_bytes)
                    chunk = _read_some(response, want)
                    if watchdog.expired or watchdog.remaining() <= 0:
                        raise _Refused(_too_slow(url, watchdog.seconds))
                    if not chunk:
                        break
                    with _writing_locally():
                        out.write(chunk)
                    digest.update(chunk)
                    n_bytes += len(chunk)
                    bar.update(len(chunk))
                    if size is not None and n_bytes > size:
                        raise _Refused(
                            f"{url}: the server sends more than the expected {size} bytes; refused at byte "
                            f"{n_bytes}, nothing was kept"
                        )
        finally:
            with _writing_locally():
                out.close()  # writes the last buffered bytes: a full disk shows here too
    if announced is not None and n_bytes != announced:
        raise _Refused(f"{url}: the connection closed after {n_bytes} of {announced} bytes; nothing was kept")
    return n_bytes, digest.hexdigest()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    reason = getattr(exc, "reason", None)
    return str(reason if reason is not None else exc) or type(exc).__name__


def download(
    urls: Sequence[str],
    target: str | os.PathLike,
    *,
    checksum: Checksum,
    size: int | None = None,
    what: str | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
    deadline: float | None = None,
) -> Path:
    """Download a file to `target`, verified against `checksum` (and `size`) before it is kept.

    Parameters
    ----------
    urls : sequence of str
        Where the file is published, tried in order; ``FIDKIT_MIRROR`` replaces them (:func:`mirror_urls`).
    target : path-like
        The final path. Its folder is created (and removed again if the download fails and it is empty). An
        existing file there is replaced only by a verified one.
    checksum : Checksum
        The expected digest.
    size : int, optional
        The expected size in bytes. A server that announces another length is refused before its body is
        read; one that sends more is refused at the first byte past it.
    what : str, optional
        How messages name the file (default: its file name).
    progress : bool, default True
        Draw a progress bar on stderr when stderr is a terminal; False never draws.
    timeout : float
        Seconds a single socket operation may block.
    deadline : float, optional
        Seconds the whole transfer from one URL may take; default ``$FIDKIT_DOWNLOAD_DEADLINE``, else
        :func:`download_deadline` of `size`. A process that finds another one downloading the same file waits
        at most as long as that one's URLs may take, then gives up naming the lock file.

    Returns
    -------
    pathlib.Path
        `target`.

    Raises
    ------
    DownloadError
        No URL gave the expected file: the message lists what happened at each URL (for a wrong file,
        its size and checksum and the expected ones); or another process held the lock for too long.
    DiskWriteError
        The file could not be written at `target` (a full or read-only disk, no permission, a quota): raised at
        the first such failure, no other URL tried; the message says what to free or where else to write.
    InputError
        `deadline` or ``$FIDKIT_DOWNLOAD_DEADLINE`` is not a positive number of seconds.
    """
    target = Path(target)
    what = what or target.name
    tried = mirror_urls(urls)
    show = None if progress else False
    seconds = download_deadline(size, deadline)
    failures: list[str] = []
    # What this call creates, removed again if it fails: the destination's folders and the cache home. The
    # locks/ folder is fidkit's own and holds nothing once no download runs: removed whenever it is empty.
    created = _missing_folders(target.parent)
    lock_folder = _lock_path(target).parent
    created_for_lock = [lock_folder, *(folder for folder in _missing_folders(lock_folder) if folder != lock_folder)]
    # A waiter waits as long as the holder's URLs may take: each its deadline, and a socket timeout for the
    # connection, which is opened before the deadline's watchdog can cut it.
    wait_s = (seconds + timeout) * max(len(tried), 1)
    try:
        with _download_lock(target, wait_s=wait_s, what=what):
            try:
                if target.is_file() and _is_expected_file(target, checksum, size):
                    # Another process finished the same download while this one waited for the lock.
                    logger.info("%s is already at %s", what, target)
                    return target
                for url in tried:
                    if _try_url(url, target, checksum, size=size, what=what, show=show, timeout=timeout,
                                deadline=seconds, failures=failures):
                        return target
            except BaseException:
                _remove_if_empty(created)  # while the lock is held: no other download is filling them
                raise
            _remove_if_empty(created)
    finally:
        _remove_if_empty(created_for_lock)
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    note = f" ({MIRROR_ENV}={mirror} replaced the URLs)" if mirror else ""
    raise DownloadError(f"could not download {what}{note} ({'; '.join(failures) or 'no URL to try'})")


def _try_url(url: str, target: Path, checksum: Checksum, *, size: int | None, what: str, show: bool | None,
             timeout: float, deadline: float, failures: list[str]) -> bool:
    """Download `url` to `target` if it is the expected file; else add what happened to `failures`."""
    logger.info("downloading %s from %s", what, url)
    try:
        # overwrite=True: only a verified file ever gets past the check below.
        with atomic_write(target, overwrite=True) as partial:
            try:
                n_bytes, digest = _fetch(
                    url, partial, checksum, size=size, desc=f"downloading {target.name}", show=show,
                    timeout=timeout, deadline=deadline,
                )
            except _LocalWriteFailed as exc:
                raise disk_write_error(what, target, exc.error, size) from exc.error
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                # OSError covers timeouts and refused or reset connections; ValueError an unknown URL
                # scheme (a FIDKIT_MIRROR without one). info, not warning: the final error says what matters.
                # Raised, not returned: leaving the block normally would keep the partial file.
                raise _NetworkFailed(f"{url}: {_reason(exc)}") from exc
            if digest != checksum.hexdigest or (size is not None and n_bytes != size):
                expected_size = f"{size} bytes" if size is not None else "a file"
                # Raising inside atomic_write deletes the temporary file: nothing is kept.
                raise _Refused(
                    f"{url}: got {n_bytes} bytes with {checksum.algorithm} {digest}, expected "
                    f"{expected_size} with {checksum}; the download was refused and deleted"
                )
    except _Refused as exc:
        logger.warning("%s", exc)
        failures.append(str(exc))
        return False
    except _NetworkFailed as exc:
        logger.info("download failed: %s", exc)
        failures.append(str(exc))
        return False
    except OSError as exc:
        # Not the network's (its errors are handled above): atomic_write's own file operations here (creating the
        # folder and the temporary file, the flush to disk, the rename). Every other URL would meet the same disk.
        blocking = in_the_way(target) if isinstance(exc, (OverwriteError, FileExistsError, NotADirectoryError)) or (
            exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EEXIST, errno.EISDIR)
        ) else None
        if blocking is not None:  # something at the path, not the disk or its permissions
            raise path_in_the_way_error(what, target, *blocking) from exc
        raise disk_write_error(what, target, exc, size) from exc
    logger.info("%s saved to %s", what, target)
    return True
