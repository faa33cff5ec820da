"""The Ray address grammar: one check for ``ray_address=``, ``--ray-address`` and ``$RAY_ADDRESS``.

On the ground floor: the options (:mod:`fidkit.options`), the command line and the cluster path
(:mod:`fidkit.cluster.ray`) all read addresses the same way, and none imports upward for it.
"""

from __future__ import annotations

import argparse
import re

from fidkit.errors import InputError

__all__ = ["RAY_ADDRESS_FORMS", "check_ray_address", "ray_address_argument"]

#: The forms of a Ray address fidkit accepts, as its messages name them.
RAY_ADDRESS_FORMS = (
    "HOST:PORT of the head node's GCS (usually port 6379, e.g. head-node:6379), ray://HOST:PORT of its Ray "
    "client server (usually port 10001), 'auto' (the cluster `ray start` runs on this machine) or 'local' (a new "
    "instance here); the dashboard's port (8265) is not one of them"
)
#: A host name or IPv4 address (no ':'): dot-separated labels of 1 to 63 characters (no empty label, as in
#: ``a..b`` or ``.``; a trailing dot ends a fully qualified name), or an IPv6 address in brackets. Python's
#: resolver refuses (with a UnicodeError from its idna codec) what the labels' rule leaves out.
_LABEL = r"[A-Za-z0-9_-]{1,63}"
_HOST = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?\]")
#: The longest host name a resolver takes (RFC 1035: 253 characters in its dotted form).
_MAX_HOST_CHARS = 253


def check_ray_address(address: object, origin: str = "ray_address") -> str:
    """Return `address` if it has a form Ray connects to, else raise one :class:`InputError` that says which forms do.

    Accepted: ``HOST:PORT`` (a GCS), ``ray://HOST:PORT`` (a Ray client server), ``auto`` and ``local``; HOST a
    name, an IPv4 address or an IPv6 address in brackets, PORT 1 to 65535 in digits only. Anything else is
    refused here, before Ray sees it: Ray takes ``host:-5``, ``host:+6379``, ``:6379`` or a port past 65535 as
    an address and then retries, hangs or fails with a traceback.

    Parameters
    ----------
    address : object
        The address as given.
    origin : str
        How the message names where it came from (``ray_address``, ``--ray-address``, ``RAY_ADDRESS``).
    """
    if not isinstance(address, str):
        raise InputError(f"{origin} must be a string, not {type(address).__name__}: give {RAY_ADDRESS_FORMS}")
    problem = _ray_address_problem(address)
    if problem is not None:
        shown = repr(address) if len(address) <= 80 else f"{address[:40]!r}...({len(address)} characters)"
        raise InputError(f"{origin} {shown} is not a Ray address ({problem}): give {RAY_ADDRESS_FORMS}")
    return address


def _ray_address_problem(address: str) -> str | None:
    """Why `address` is not a Ray address fidkit accepts, or None when it is one."""
    if address in ("auto", "local"):
        return None
    if not address:
        return "it is empty"
    if address != address.strip():
        return "it has spaces around it"
    inner = address
    if "://" in address:
        scheme, _, inner = address.partition("://")
        if scheme in ("http", "https"):
            return "an http address is the dashboard's or the job API's, not the cluster's"
        if scheme != "ray":
            return f"{scheme}:// is not ray://"
    host, colon, port = inner.rpartition(":")
    if not colon:
        return "no :PORT"
    if not host:
        return "no host before the ':'"
    if _HOST.fullmatch(host) is None or len(host.rstrip(".")) > _MAX_HOST_CHARS:
        if ":" in host:
            return "an IPv6 host goes in brackets, [::1]:6379"
        shown = repr(host) if len(host) <= 40 else f"{host[:20]!r}...({len(host)} characters)"
        return (f"{shown} is not a host name (dot-separated labels of 1 to 63 letters, digits, '-' or '_', "
                f"{_MAX_HOST_CHARS} characters at most)")
    if not (port.isascii() and port.isdigit()):
        return f"the port {port!r} is not a number of digits" if port else "no port after the ':'"
    if len(port.lstrip("0")) > 5 or not 1 <= int(port) <= 65535:
        # Counted before int(): a port of thousands of digits is past Python's int() limit, not only Ray's.
        shown = port if len(port) <= 24 else f"{port[:12]}...({len(port)} digits)"
        return f"the port {shown} is not between 1 and 65535"
    return None


def ray_address_argument(text: str) -> str:
    """The ``--ray-address`` converter of argparse: :func:`check_ray_address`, as a usage error (exit status 2)."""
    try:
        return check_ray_address(text, "")
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc).lstrip()) from None
