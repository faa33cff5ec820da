"""Filesystem edges shared by every module that writes: atomic writes, hashing, the cache home.

Nothing here knows about images, statistics or networks.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fidkit.errors import OverwriteError

__all__ = ["atomic_write", "file_digest", "sha256_file", "cache_home", "CHUNK_BYTES"]

#: How much a streaming read (hashing, downloading) takes at a time.
CHUNK_BYTES = 1 << 20


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it onto `path` only if the block succeeds.

    The temporary file lives in the destination's folder so that the final ``os.replace`` is a
    rename on one filesystem, which is atomic: readers see the old file or the new one, never a
    half-written one. On any exception (Ctrl-C included) the temporary file is removed.

    Parameters
    ----------
    path : path-like
        The destination. Its parent folder is created if missing.
    overwrite : bool, default False
        Replace an existing file. Without it an existing `path` raises :class:`OverwriteError`
        before anything is written.

    Yields
    ------
    pathlib.Path
        Where to write. The caller may write it any way (``np.savez``, ``open``, ``torch.save``);
        the suffix of `path` is kept so that libraries that append extensions do not.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise OverwriteError(
            f"{target} already exists; choose another path or pass overwrite=True (--force)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        # mkstemp creates the file 0600; a saved statistics file should get the mode any new file
        # gets (0666 less the umask), so that colleagues on a shared server can read it.
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        yield tmp_path
        # Flush the bytes to disk before the rename: after a crash or power loss the rename may
        # otherwise survive while the data does not, leaving an empty file under the final name.
        with open(tmp_path, "rb") as written:
            os.fsync(written.fileno())
        if not overwrite and target.exists():
            # Someone else created it while we were writing: still never clobber.
            raise OverwriteError(
                f"{target} appeared while it was being written; choose another path or pass "
                "overwrite=True (--force)"
            )
        os.replace(tmp_path, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def _current_umask() -> int:
    """Return the process umask without changing it where the OS lets us read it."""
    try:
        # Linux reports it directly; os.umask can only read it by setting it, briefly, for all threads.
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Return the hex digest of a file with a hashlib `algorithm` (``"sha256"``, ``"md5"``), read in 1 MiB chunks.

    md5 is only ever used to check downloads against the checksums their publishers give, hence
    ``usedforsecurity=False`` (which FIPS builds require for it).
    """
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Return the hex sha256 of a file, read in 1 MiB chunks."""
    return file_digest(path, "sha256")


def cache_home() -> Path:
    """Return fidkit's cache directory (weights, ONNX graphs, statistics).

    ``$FIDKIT_HOME`` if set, else ``$XDG_CACHE_HOME/fidkit``, else ``~/.cache/fidkit``. Read on
    every call, never memoised, so that tests and users can redirect it at any time. The folder
    is not created here; writers create what they write.
    """
    explicit = os.environ.get("FIDKIT_HOME")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fidkit"
