"""What stops a download from being written here, said as it is: a full or read-only disk, a file-size limit, or
something at the file's path that fidkit must not replace (:class:`DiskWriteError`, raised by
:func:`fidkit._download.download` at once, without trying another URL: every one would meet the same disk).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from fidkit._fs import described_link, file_kind, file_size_limit_fix, in_cache_home_folders, not_a_folder, out_of_space
from fidkit.errors import DownloadError

__all__ = ["DiskWriteError", "disk_write_error", "in_the_way", "path_in_the_way_error"]


class DiskWriteError(DownloadError):
    """A download that could not be written on this machine (a full or read-only disk, no permission, a quota).

    Not the server's fault: no other URL is tried (each would fill the same disk again), and the message names
    the fix here (free space, another folder) rather than another source of the file.
    """


def disk_write_error(what: str, target: Path, error: OSError, size: int | None) -> DiskWriteError:
    """The error of a download that could not be written at `target`: which disk, why, and what to do."""
    full = out_of_space(error)
    where = "a folder on another disk" if full else "a writable folder"
    elsewhere = (
        f"set the environment variable FIDKIT_HOME to {where}" if in_cache_home_folders(target.parent)
        else f"download it to {where}"
    )
    limit_fix = file_size_limit_fix(error, elsewhere)
    if limit_fix is not None:  # EFBIG: a file-size limit, not a full disk
        fix = limit_fix + (f"; the file has {size:,} bytes" if size is not None else "")
    elif full:
        needed = f" ({size} bytes are needed)" if size is not None else ""
        fix = f"the disk is full: free space there{needed}, or {elsewhere}"
    else:
        fix = f"the folder cannot be written: make it writable, or {elsewhere}"
    return DiskWriteError(
        f"cannot write {what} to {target.parent} ({error.strerror or error}); {fix}. Nothing was kept, and no other "
        "URL was tried: the network is not at fault"
    )


def in_the_way(target: Path) -> tuple[Path, str] | None:
    """What stands where the download must write, and is not fidkit's to replace: ``(path, what it is)``, or None.

    A name on the way to `target` that is not a folder (``FIDKIT_HOME`` naming a file, a link to a missing folder),
    or at `target` itself anything but a regular file (a folder, a symbolic link of any kind).
    """
    for depth in range(1, len(target.parent.parts) + 1):
        step = Path(*target.parent.parts[:depth])
        if os.path.lexists(step) and not step.is_dir():
            return step, not_a_folder(step)[0]
    try:
        info = target.lstat()
    except OSError:
        return None
    if stat.S_ISREG(info.st_mode):
        return None
    if not stat.S_ISLNK(info.st_mode):
        return target, f"{file_kind(info.st_mode)}, not a file"
    return target, described_link(target)[1]


def path_in_the_way_error(what: str, target: Path, blocker: Path, kind: str) -> DiskWriteError:
    """The error of a download whose path holds something fidkit must not replace: what it is, and the fix."""
    # A folder or a link could hold or lead to the user's own files: fidkit never replaces or deletes them, so
    # the fix is the user's (no --force helps, and the folder's permissions are not at fault).
    if in_cache_home_folders(target.parent):
        elsewhere = "or set the environment variable FIDKIT_HOME to another folder (fidkit's cache home)"
    else:
        elsewhere = "or download it to another folder"
    return DiskWriteError(
        f"cannot download {what} to {target}: {blocker} is {kind}; fidkit does not replace or delete what it did "
        f"not write there: move or remove {blocker}, {elsewhere}. Nothing was downloaded, and no other URL was "
        "tried: the network is not at fault"
    )
