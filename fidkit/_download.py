"""Downloads: URLs tried in order, the checksum checked before the file is kept, an atomic move into place.

Every file fidkit downloads (the Inception weights, the named datasets) goes through :func:`download`:

* the URLs are tried in order (a release, then its mirrors); with ``FIDKIT_MIRROR=URL`` set, each URL's scheme,
  host and folder are replaced by that URL, so only ``URL/<file name>`` is tried (:func:`mirror_urls`);
* the bytes are hashed (sha256 or md5) while they stream into a temporary file beside the destination; the
  size and checksum are compared *before* the file is moved into place, and a file that fails is deleted and
  reported with both checksums;
* the move is :func:`fidkit._fs.atomic_write`'s ``os.replace``: an interrupted download (Ctrl-C, a closed
  connection, a timeout) leaves no file under the final name, only nothing or a hidden ``.NAME.*.tmp`` that a
  killed process could not remove;
* two processes downloading the same file take turns on a lock file (``fcntl.flock``) under
  ``cache_home()/locks``; the second finds the first one's file, checks it and uses it. Where locks are not
  available the unique temporary files and the atomic rename still keep the result whole;
* progress is drawn with tqdm on stderr, only when stderr is a terminal.

Ground floor: nothing here knows about weights, datasets or images.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import logging
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from fidkit._fs import CHUNK_BYTES, atomic_write, cache_home, file_digest
from fidkit.errors import DownloadError

__all__ = [
    "MIRROR_ENV",
    "DEFAULT_TIMEOUT_S",
    "Checksum",
    "mirror_urls",
    "progress_bar",
    "download",
]

logger = logging.getLogger(__name__)

#: Environment variable with a base URL that replaces the scheme, host and folder of every download.
MIRROR_ENV = "FIDKIT_MIRROR"
#: Seconds any one socket operation (connect, each read) may wait before the download gives up.
DEFAULT_TIMEOUT_S = 30.0
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

    `show`: ``None`` draws only when the stream is a terminal, ``True`` always, ``False`` never (a
    disabled tqdm costs nothing per update).
    """
    from tqdm import tqdm  # imported here: only a download needs it

    stream = stream if stream is not None else sys.stderr
    if show is None:
        isatty = getattr(stream, "isatty", None)
        show = bool(isatty and isatty())
    return tqdm(
        total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=stream,
        disable=not show, mininterval=0.25, leave=True,
    )


class _Refused(Exception):
    """Internal: a download that finished but is not the expected file (or was cut short)."""


@contextlib.contextmanager
def _download_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock for downloading `target` (best effort: without fcntl or on a failing
    filesystem, no lock; the atomic rename still keeps the result whole)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    key = hashlib.sha256(str(target.resolve()).encode("utf-8")).hexdigest()[:16]
    lock_path = cache_home() / "locks" / f"{target.name}.{key}.lock"
    handle = None
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "a+b")  # noqa: SIM115 - closed in finally
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process that is downloading %s", target.name)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    except OSError as exc:
        logger.debug("no download lock for %s (%s); going on without one", target, exc)
        if handle is not None:
            handle.close()
            handle = None
    try:
        yield
    finally:
        if handle is not None:
            handle.close()  # closing releases the lock


def _is_expected_file(path: Path, checksum: Checksum, size: int | None) -> bool:
    try:
        if size is not None and path.stat().st_size != size:
            return False
        return file_digest(path, checksum.algorithm) == checksum.hexdigest
    except OSError:
        return False


def _fetch(url: str, partial: Path, checksum: Checksum, *, size: int | None, desc: str, show: bool | None,
           timeout: float) -> tuple[int, str]:
    """Stream `url` into `partial`; return the number of bytes written and their digest."""
    digest = checksum.hasher()
    n_bytes = 0
    request = urllib.request.Request(url, headers={"User-Agent": "fidkit"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(partial, "wb") as out:
        length = response.headers.get("Content-Length")
        announced = int(length) if length and length.strip().isdigit() else None
        with progress_bar(announced if announced is not None else size, desc, show=show) as bar:
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                n_bytes += len(chunk)
                bar.update(len(chunk))
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
) -> Path:
    """Download a file to `target`, verified against `checksum` (and `size`) before it is kept.

    Parameters
    ----------
    urls : sequence of str
        Where the file is published, tried in order; ``FIDKIT_MIRROR`` replaces them (:func:`mirror_urls`).
    target : path-like
        The final path. Its folder is created. An existing file there is replaced only by a verified one.
    checksum : Checksum
        The expected digest.
    size : int, optional
        The expected size in bytes.
    what : str, optional
        How messages name the file (default: its file name).
    progress : bool, default True
        Draw a progress bar on stderr when stderr is a terminal; False never draws.
    timeout : float
        Seconds a single socket operation may block.

    Returns
    -------
    pathlib.Path
        `target`.

    Raises
    ------
    DownloadError
        No URL gave the expected file: the message lists what happened at each URL (for a wrong file,
        its size and checksum and the expected ones).
    """
    target = Path(target)
    what = what or target.name
    tried = mirror_urls(urls)
    show = None if progress else False
    failures: list[str] = []
    with _download_lock(target):
        if target.is_file() and _is_expected_file(target, checksum, size):
            # Another process finished the same download while this one waited for the lock.
            logger.info("%s is already at %s", what, target)
            return target
        for url in tried:
            logger.info("downloading %s from %s", what, url)
            try:
                # overwrite=True: only a verified file ever gets past the check below.
                with atomic_write(target, overwrite=True) as partial:
                    n_bytes, digest = _fetch(
                        url, partial, checksum, size=size, desc=f"downloading {target.name}", show=show,
                        timeout=timeout,
                    )
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
                continue
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                # OSError covers timeouts and refused or reset connections; ValueError an unknown URL
                # scheme (a FIDKIT_MIRROR without one). info, not warning: the final error says what matters.
                logger.info("download from %s failed: %s", url, _reason(exc))
                failures.append(f"{url}: {_reason(exc)}")
                continue
            logger.info("%s saved to %s", what, target)
            return target
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    note = f" ({MIRROR_ENV}={mirror} replaced the URLs)" if mirror else ""
    raise DownloadError(f"could not download {what}{note} ({'; '.join(failures) or 'no URL to try'})")
