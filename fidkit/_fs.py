"""Filesystem edges shared by every module that writes: atomic writes, hashing, output checks.

Nothing here knows about images, statistics or networks.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from fidkit._home_dir import cache_home
from fidkit.errors import InputError, OverwriteError

__all__ = [
    "atomic_write",
    "check_destination",
    "check_writable_destination",
    "not_a_folder",
    "described_link",
    "remove_stale_temporaries",
    "is_temporary_name",
    "file_digest",
    "sha256_file",
    "in_cache_home_folders",
    "CHUNK_BYTES",
    "pid_running",
    "working_directory_gone",
    "WORKING_DIRECTORY_GONE",
    "out_of_space",
    "file_size_limit_fix",
]

logger = logging.getLogger(__name__)

#: How much a streaming read (hashing, downloading) takes at a time.
CHUNK_BYTES = 1 << 20

#: The folders fidkit writes under its cache home (:func:`cache_home`); ``fidkit.home`` clears only these.
HOME_SUBDIRS = ("stats", "onnx", "weights", "datasets", "locks", "tensorrt")
#: A temporary file of :func:`atomic_write` not modified for this long is abandoned, whoever made it.
STALE_TEMPORARY_AGE_S = 3600.0
#: ``.<name>.<host tag>-<pid>.<8 random>.tmp<suffix>``: who made it (host and process) is in the name.
_TEMPORARY_NAME = re.compile(
    r"\.(?P<name>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)\.[a-z0-9_]{8}\.tmp(?P<suffix>\.[^.]*)?"
)
#: The name fidkit 0.x used before the pid was recorded: ``.<name>.<8 random>.tmp<suffix>`` (age only).
_OLD_TEMPORARY_NAME = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp(?P<suffix>\.[^.]*)?")


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
        Replace an existing regular file. Without it an existing `path` raises :class:`OverwriteError`
        before anything is written. Only regular files are ever replaced: a folder, FIFO, device, socket
        or symbolic link at `path` is an :class:`OverwriteError` even with `overwrite` (see
        :func:`check_destination`).

    Yields
    ------
    pathlib.Path
        Where to write. The caller may write it any way (``np.savez``, ``open``, ``torch.save``);
        the suffix of `path` is kept so that libraries that append extensions do not.
    """
    target = Path(path)
    check_destination(target, overwrite=overwrite)
    _make_folders(target.parent)
    # What a killed run (kill -9, power loss) left here is removed now, by the exact name pattern; the
    # older, pid-less form (which other programs' mkstemp names can match) only in the folders fidkit owns
    # under its cache home, not in a user's folder that happens to lie below it (FIDKIT_HOME=~).
    remove_stale_temporaries(target.parent, older_names=in_cache_home_folders(target.parent))
    # Refused before the caller writes anything: the rename onto a name the file system cannot hold would fail
    # only after the whole write.
    _refuse_long_names(target, target.parent, (target.name,))
    prefix, suffix = _temporary_affixes(target)
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=target.parent)
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
        if not overwrite and _link_unless_exists(tmp_path, target):
            return
        if not overwrite and os.path.lexists(target):
            raise _appeared(target)
        # Checked again just before the rename: what appeared meanwhile must be a regular file too.
        check_destination(target, overwrite=overwrite)
        os.replace(tmp_path, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


#: What :func:`atomic_write`'s temporary name adds to the name it embeds, but for the host and pid tag and the
#: suffix: ``.`` + ``.`` + ``.`` + mkstemp's 8 random characters + ``.tmp``.
_TEMPORARY_OVERHEAD = 1 + 1 + 1 + 8 + len(".tmp")
#: Bytes of a shortened embedded name given to the hash of the whole name (``-`` and 8 hex).
_HASH_PART = 1 + 8
#: A file name's length when the file system does not say its limit (POSIX's NAME_MAX on every common one).
_DEFAULT_NAME_MAX = 255


def _name_max(folder: Path) -> int:
    """The longest file name, in bytes, the file system of `folder` (an existing folder) takes."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows), or the file system does not say
        return _DEFAULT_NAME_MAX
    return limit if limit and limit > 0 else _DEFAULT_NAME_MAX


def _shortened(text: str, n_bytes: int) -> str:
    """The longest start of `text` that is at most `n_bytes` long in the file system's encoding (whole characters)."""
    encoded = os.fsencode(text)
    if len(encoded) <= n_bytes:
        return text
    cut = text[:n_bytes]
    while len(os.fsencode(cut)) > n_bytes:
        cut = cut[:-1]
    return cut


def _temporary_affixes(target: Path) -> tuple[str, str]:
    """The ``prefix`` and ``suffix`` of :func:`atomic_write`'s ``mkstemp`` name beside `target`, whose name fits.

    ``.<name>.<host tag>-<pid>.<8 random>.tmp<suffix>`` holds the whole name when the file system allows; a name
    too long for that (a final name of 220 to 255 bytes is legal) is embedded shortened, as its start, ``-``, 8 hex
    of its sha256 and its suffix: still the pattern :func:`is_temporary_name` recognises (the embedded name ends
    with the suffix), so that the cleanup of killed runs finds it. A suffix too long to keep twice is dropped (no
    library appends such an extension).
    """
    tag = f"{_host_tag()}-{os.getpid()}"
    name, suffix = target.name, target.suffix
    room = _name_max(target.parent) - _TEMPORARY_OVERHEAD - len(tag)  # for the embedded name and the suffix
    if len(os.fsencode(name)) + len(os.fsencode(suffix)) <= room:
        return f".{name}.{tag}.", f".tmp{suffix}"
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:8]
    start = room - _HASH_PART - 2 * len(os.fsencode(suffix))
    if start < 1:
        suffix = ""
        start = room - _HASH_PART
    stem = name[: len(name) - len(suffix)] if suffix else name
    return f".{_shortened(stem, start)}-{digest}{suffix}.{tag}.", f".tmp{suffix}"


def _name_too_long(message: str) -> OSError:
    error = OSError(message)
    error.errno = errno.ENAMETOOLONG
    return error


def _refuse_long_names(target: Path, existing: Path, names: tuple[str, ...]) -> None:
    """Raise an OSError (``ENAMETOOLONG``) when one of `names`, the folders still to create on the way from the
    existing folder `existing` to `target` and then the file's own name, is longer than that folder's file system
    allows."""
    limit = _name_max(existing)
    for index, name in enumerate(names):
        size = len(os.fsencode(name))
        if size > limit:
            what = "file name" if index == len(names) - 1 else "folder name"
            raise _name_too_long(
                f"cannot write {target}: its {what} {_shortened(name, 24)}... is {size} bytes long, more than the "
                f"{limit} the file system of {existing} allows; choose a shorter name"
            )


def out_of_space(error: BaseException | None) -> bool:
    """Whether a write failed for want of room (a full disk, a quota, a file-size limit), not of permission: the
    fix is to free space or write elsewhere, not a writable folder (for a file-size limit,
    :func:`file_size_limit_fix` says what to do: no disk is full then)."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def file_size_limit_fix(error: BaseException | None, elsewhere: str = "write it on another file system") -> str | None:
    """What stopped a write that failed with EFBIG, and the fix (`elsewhere`: how to write on another file system,
    when the file system's own limit stopped it); None for any other error.

    EFBIG is no full disk: the file grew past this process's file-size limit (``ulimit -f``, RLIMIT_FSIZE; Python
    ignores the SIGXFSZ that would otherwise end the process) or past the largest file the file system takes (4 GiB
    on FAT32). A limit that is set is named, with its value; freeing space would change nothing.
    """
    if not (isinstance(error, OSError) and error.errno == errno.EFBIG):
        return None
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        unlimited = soft == resource.RLIM_INFINITY
    except (ImportError, OSError, ValueError):  # no such limit on this platform
        soft, hard, unlimited = None, None, True
    if not unlimited:
        # EFBIG does not say which limit it met: with one set, it is the likelier, and the file system's is named too.
        if hard == resource.RLIM_INFINITY:
            raise_it = "raise the limit (ulimit -f unlimited)"
        elif hard > soft:
            raise_it = f"raise the limit (ulimit -f, up to its hard limit of {hard:,} bytes)"
        else:
            raise_it = "run where the limit is higher (its hard limit forbids raising it here)"
        return (
            f"the file is larger than this process's file-size limit ({soft:,} bytes: ulimit -f, RLIMIT_FSIZE) or "
            f"than the largest file the file system there takes, not a full disk: {raise_it} and run again, or "
            f"{elsewhere}"
        )
    return (
        "the file is larger than the file system there takes (its largest file size, e.g. 4 GiB on FAT32), not a "
        f"full disk: {elsewhere}"
    )


def _appeared(target: Path) -> OverwriteError:
    return OverwriteError(
        f"{target} appeared while it was being written; choose another path or pass overwrite=True (--force)"
    )


def _link_unless_exists(written: Path, target: Path) -> bool:
    """Give `written` the name `target` only if nothing has it, in one step (a hard link fails when the name
    exists; a check and then a rename would let two writers both succeed, one file silently lost). False where the
    file system has no hard links (then the caller checks and renames)."""
    try:
        os.link(written, target)
    except FileExistsError:
        raise _appeared(target) from None
    except OSError as error:
        if error.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            return False
        raise
    return True


def _host_tag() -> str:
    """8 hex characters naming this machine and its process-id namespace: a pid is only meaningful there.

    Containers that share a hostname (host networking) still have their own pid namespaces, told apart by the
    namespace's inode.
    """
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = ""
    return hashlib.sha256(f"{socket.gethostname()}|{namespace}".encode("utf-8", "replace")).hexdigest()[:8]


def in_cache_home_folders(folder: str | os.PathLike) -> bool:
    """True when `folder` is one of fidkit's folders under the cache home (or below one). The home is asked only to
    choose how much to clean: where it cannot be determined (no HOME, a ``~user`` that does not exist), `folder`
    cannot be one of its folders, and a save to a path the user gave goes on without it."""
    try:
        home = cache_home()
    except InputError:
        return False
    return any(_inside(Path(folder), home / subdir) for subdir in HOME_SUBDIRS)


def _inside(folder: Path, root: Path) -> bool:
    try:
        return folder.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # RuntimeError: a loop of links (pathlib before 3.13)
        pass
    try:  # as named, links not followed
        return folder.absolute().is_relative_to(root.absolute())
    except OSError:  # no working directory
        return False


def pid_running(pid: int) -> bool:
    """True if a process with this pid runs here (including one owned by another user)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, owned by someone else
        return True
    return True


def is_temporary_name(name: str) -> bool:
    """True when `name` is the name of a temporary file of :func:`atomic_write` (current or older form)."""
    for pattern in (_TEMPORARY_NAME, _OLD_TEMPORARY_NAME):
        match = pattern.fullmatch(name)
        if match is not None and match.group("name").endswith(match.group("suffix") or ""):
            return True
    return False


def _is_stale(name: str, mtime: float, now: float) -> bool:
    if now - mtime >= STALE_TEMPORARY_AGE_S:
        return True
    match = _TEMPORARY_NAME.fullmatch(name)
    # Made on this machine by a process that is gone: abandoned at once. Elsewhere (a cache home shared by
    # machines or containers) the pid means nothing here, and only the age counts.
    return match is not None and match.group("host") == _host_tag() and not pid_running(int(match.group("pid")))


def remove_stale_temporaries(folder: str | os.PathLike, *, older_names: bool = False) -> list[tuple[Path, int]]:
    """Remove the temporary files :func:`atomic_write` left in `folder` when its process was killed.

    Only regular files whose name is exactly an :func:`atomic_write` temporary name are considered, in
    `folder` only (no recursion), and removed when stale: made on this machine by a process that no
    longer runs, or not modified for an hour (:data:`STALE_TEMPORARY_AGE_S`). The older name form
    without the host and pid (``.<name>.<8 random>.tmp<suffix>``, also what other programs' ``mkstemp``
    makes) is considered only with `older_names`, which the cache home's own folders use; a user's
    folder is never cleaned by it. Never raises.

    Returns
    -------
    list of Path
        The files removed, with their sizes in bytes.
    """
    removed: list[tuple[Path, int]] = []
    now = time.time()
    try:
        with os.scandir(folder) as entries:
            candidates = [entry for entry in entries if entry.name.startswith(".") and ".tmp" in entry.name]
    except OSError:
        return removed
    for entry in candidates:
        try:
            if not is_temporary_name(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            if not older_names and _TEMPORARY_NAME.fullmatch(entry.name) is None:
                continue
            info = entry.stat(follow_symlinks=False)
            if _is_stale(entry.name, info.st_mtime, now):
                os.unlink(entry.path)
                removed.append((Path(entry.path), int(info.st_size)))
        except OSError:
            continue
    if removed:
        logger.info(
            "removed %d temporary file(s) left in %s by an interrupted fidkit run", len(removed), folder
        )
    return removed


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a path of this ``st_mode`` is, in words ("a folder", "a FIFO (named pipe)", ...), for messages."""
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "not a regular file"


def not_a_folder(path: str | os.PathLike) -> tuple[str, str]:
    """What `path`, a name on the way to a file to write, is instead of a folder, and the fix: ``(what, fix)``.

    "a file, not a folder", or for a symbolic link what it leads to: a missing target (``ln -s /nonexistent/x``),
    a loop of links, or something that is not a folder.
    """
    where = Path(path)
    elsewhere = "choose a path in a folder"
    try:
        info = where.lstat()
    except OSError as error:  # gone meanwhile
        return f"not a folder ({error.strerror or error})", elsewhere
    if not stat.S_ISLNK(info.st_mode):
        kind = "a file" if stat.S_ISREG(info.st_mode) else file_kind(info.st_mode)
        return f"{kind}, not a folder", elsewhere
    leads_to, what = described_link(where)
    if leads_to == "loop":
        return what, f"fix or remove the link, or {elsewhere}"
    if leads_to == "nothing":
        return what, f"create that folder, remove the link, or {elsewhere}"
    return f"{what}, not a folder", elsewhere


def described_link(path: str | os.PathLike) -> tuple[str, str]:
    """A symbolic link in words by what it leads to: ``("loop" | "nothing" | "something", what)``, e.g.
    ``("nothing", "a symbolic link to a missing target (/gone/x)")``, ``"a symbolic link to a folder (data)"``."""
    try:
        pointed = os.readlink(path)
    except OSError:  # pragma: no cover - raced away
        pointed = "?"
    try:
        followed = os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "loop", f"a symbolic link loop (it leads to {pointed}, and back)"
        return "nothing", f"a symbolic link to a missing target ({pointed})"
    kind = "a file" if stat.S_ISREG(followed.st_mode) else file_kind(followed.st_mode)
    return "something", f"a symbolic link to {kind} ({pointed})"


def _make_folders(folder: Path) -> None:
    """``mkdir -p`` `folder`; a name on the way that is not a folder is said as it is (mkdir says "File exists" for
    a symbolic link to a missing target, which explains nothing). The caller's message says what to do."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        if not isinstance(error, (FileExistsError, NotADirectoryError)) and error.errno != errno.ELOOP:
            raise
        for depth in range(1, len(folder.parts) + 1):
            step = Path(*folder.parts[:depth])
            if os.path.lexists(step) and not step.is_dir():
                raise NotADirectoryError(f"{step} is {not_a_folder(step)[0]}") from None
        raise


def check_destination(path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Refuse, before anything is written, a destination fidkit must not replace.

    Nothing there: fine. A regular file: fine with `overwrite`, else :class:`OverwriteError`. Anything
    else is an :class:`OverwriteError` naming what it is, whatever `overwrite` says: a folder, a FIFO, a
    device (as root, ``--force`` would otherwise replace ``/dev/null``), a socket, and a symbolic link of
    any kind. A link is refused rather than written through, so that a write never lands outside the
    folder it names (a link into ``/etc`` under root) and a link is never silently turned into a file.
    """
    target = Path(path)
    try:
        info = target.lstat()
    except OSError:
        return  # absent (or its folder is): the write creates it, or fails with the OS's own reason
    if stat.S_ISLNK(info.st_mode):
        try:
            pointed = os.readlink(target)
        except OSError:  # pragma: no cover - raced away
            pointed = "?"
        raise OverwriteError(
            f"{target} is a symbolic link (to {pointed}); fidkit replaces only regular files, never a link nor "
            "what it points to, even with --force: remove the link or give the path of its target"
        )
    if not stat.S_ISREG(info.st_mode):
        raise OverwriteError(
            f"{target} is {file_kind(info.st_mode)}, not a regular file; fidkit never replaces it, even with "
            "--force: give the path of a file"
        )
    if not overwrite:
        raise OverwriteError(f"{target} already exists; choose another path or pass overwrite=True (--force)")


#: What fidkit says when the working directory was deleted (``os.getcwd`` fails), and what to do.
WORKING_DIRECTORY_GONE = (
    "the working directory no longer exists (it was deleted or moved away), so a relative path cannot be made "
    "absolute; cd to an existing folder, or give absolute paths"
)


def working_directory_gone(error: BaseException | None = None) -> bool:
    """True when this process's working directory was deleted: ``os.getcwd`` fails, and with it every making of a
    relative path absolute (``Path.absolute``, ``Path.resolve``) and the start of worker processes.

    With `error`: only when `error` is what ``os.getcwd`` raises then (a FileNotFoundError naming no file), not a
    file that is missing.
    """
    if error is not None and not (
        isinstance(error, FileNotFoundError) and error.filename is None and error.strerror is not None
    ):
        return False
    try:
        os.getcwd()
    except FileNotFoundError:
        return True
    return False


def _writable_folder(folder: Path) -> bool:
    """True when new files can be created in `folder` (tests replace this to simulate permissions)."""
    return os.access(folder, os.W_OK | os.X_OK)


def check_writable_destination(path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Check, before any work, that :func:`atomic_write` could write `path`; raise what it would raise.

    :func:`check_destination` first; then the nearest folder that exists on the way to `path` must be a
    folder (missing folders below it are created by the write, as :func:`atomic_write` does) in which
    new files can be created.

    Raises
    ------
    OverwriteError
        See :func:`check_destination`.
    NotADirectoryError
        A component of the parent path is a file.
    PermissionError
        The folder does not allow creating files there (permissions, a read-only filesystem).
    """
    target = Path(path)
    check_destination(target, overwrite=overwrite)
    if not target.is_absolute() and working_directory_gone():
        raise FileNotFoundError(f"cannot write {target}: {WORKING_DIRECTORY_GONE}")
    # As given (relative or not): the message names the path the way the user wrote it.
    ancestor = target.parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        what, fix = not_a_folder(ancestor)
        raise NotADirectoryError(f"cannot write {target}: {ancestor} is {what}; {fix}")
    _refuse_long_names(target, ancestor, target.parts[len(ancestor.parts):])
    if not _writable_folder(ancestor):
        raise PermissionError(
            f"cannot write {target}: no permission to create files in {ancestor}; choose a path in a writable "
            "folder"
        )


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
