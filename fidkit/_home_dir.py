"""Where fidkit's cache home is, and ``~`` in paths a user gives: one-line errors where pathlib has none.

The cache home holds what fidkit downloads and computes (weights, ONNX graphs, statistics; :mod:`fidkit.home` says
what it writes there). Nothing here creates anything.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fidkit.errors import FidkitError, InputError

__all__ = ["cache_home", "expand_user"]

logger = logging.getLogger(__name__)

#: Relative values of XDG_CACHE_HOME already warned about in this process: the home is looked up on every use.
_WARNED_RELATIVE: set[str] = set()


def _unexpandable(text: str) -> tuple[str, str]:
    """Why pathlib cannot expand the leading ``~`` of `text`: ``(reason, the ~ or ~user it cannot expand)``."""
    user = text[1:].split("/", 1)[0].split(os.sep, 1)[0]
    if user:
        return f"there is no user {user} on this system", f"~{user}"
    uid = os.getuid() if hasattr(os, "getuid") else "?"
    return f"no home directory is known (HOME is unset and user id {uid} has no entry in the password database)", "~"


def expand_user(path: str | os.PathLike, *, named: str, error: type[FidkitError] = InputError) -> Path:
    """``Path(path).expanduser()``, where a ``~`` that cannot be expanded is an `error` naming `named` and the fix.

    pathlib raises a bare ``RuntimeError("Could not determine home directory.")`` for ``~nosuchuser/x``, and for
    ``~/x`` when HOME is unset and the user id has no password entry (a container started with ``--user 4242``).

    Parameters
    ----------
    path : path-like
        What the user gave.
    named : str
        Where it came from, for the message (``"--weights / weights="``, ``"the environment variable X"``).
    error : type of FidkitError, default InputError
        The error raised.
    """
    try:
        return Path(path).expanduser()
    except RuntimeError:
        reason, prefix = _unexpandable(os.fspath(path))
        fix = f"give the path without {prefix}" + (", or set HOME" if prefix == "~" else "")
        raise error(f"cannot use {os.fspath(path)} (from {named}): {reason} to expand {prefix}; {fix}") from None


def cache_home() -> Path:
    """Return fidkit's cache directory (weights, ONNX graphs, statistics): see :func:`_configured_cache_home`.

    Raises
    ------
    InputError
        No home can be determined: the variable in use starts with a ``~`` that cannot be expanded, or none is set
        and there is no home directory. The message names the variable to set.
    """
    try:
        return _configured_cache_home()
    except RuntimeError:  # pathlib's "Could not determine home directory."
        pass
    for variable in ("FIDKIT_HOME", "XDG_CACHE_HOME"):
        value = os.environ.get(variable, "")
        if value.startswith("~"):  # what pathlib could not expand (a relative XDG_CACHE_HOME is not used)
            reason, prefix = _unexpandable(value)
            raise InputError(
                f"fidkit's cache home cannot be determined: {variable}={value}, and {reason} to expand {prefix}; "
                f"set {variable} to a path without {prefix} (a writable folder)"
            ) from None
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    unset = f"FIDKIT_HOME is unset, XDG_CACHE_HOME={xdg} is relative (ignored)" if xdg.strip() else (
        "FIDKIT_HOME and XDG_CACHE_HOME are unset"
    )
    reason, _ = _unexpandable("~")
    raise InputError(
        f"fidkit's cache home cannot be determined: {unset}, and {reason}; set FIDKIT_HOME (or HOME) to a writable "
        "folder"
    ) from None


def _configured_cache_home() -> Path:
    """Fidkit's cache directory as the environment names it (:func:`cache_home`); pathlib's RuntimeError where a
    ``~`` cannot be expanded.

    ``$FIDKIT_HOME`` if set, else ``$XDG_CACHE_HOME/fidkit`` if that is an absolute path (a relative one is
    ignored, as the XDG specification says: :func:`_absolute_xdg_cache_home`), else ``~/.cache/fidkit``. Read on
    every call, never memoised, so that tests and users can redirect it at any time. The folder
    is not created here; writers create what they write. A variable set to blanks only is unset, as for
    fidkit's other variables (``FIDKIT_CACHE_MAX_BYTES``, ``FIDKIT_DATASETS``): taken as a path, ``" "`` would be a
    folder named by a space in the working directory.
    """
    explicit = os.environ.get("FIDKIT_HOME", "")
    if explicit.strip():
        return Path(explicit).expanduser()
    xdg = _absolute_xdg_cache_home()
    base = xdg if xdg is not None else Path.home() / ".cache"
    return base / "fidkit"


def _absolute_xdg_cache_home() -> Path | None:
    """``$XDG_CACHE_HOME`` (a leading ``~`` expanded) when it is set to an absolute path, else None.

    The XDG Base Directory specification says a relative value is invalid and must be ignored: one would name a
    different folder in each working directory, and a cache that moves with ``cd`` is read from or written to
    where the user does not look. It is ignored with a warning, once per value and process, so that setting it
    by mistake is seen; ``FIDKIT_HOME`` may be relative (fidkit's own variable, used as given).
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if not xdg.strip():
        return None
    path = Path(xdg).expanduser()
    if path.is_absolute():
        return path
    if xdg not in _WARNED_RELATIVE:
        _WARNED_RELATIVE.add(xdg)
        logger.warning(
            "XDG_CACHE_HOME=%s is a relative path, which the XDG Base Directory specification says to ignore: the "
            "cache home is ~/.cache/fidkit; set XDG_CACHE_HOME to an absolute path, or FIDKIT_HOME", xdg,
        )
    return None
