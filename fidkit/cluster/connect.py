"""Connecting to a Ray cluster: the address to use (checked, then probed so that a port where something else
listens fails in seconds), a local instance shared by both sides of a comparison, and the actors' environment."""

from __future__ import annotations

import contextlib
import logging
import os
import site
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fidkit._signals import signal_handlers_kept
from fidkit.errors import (
    FidkitError,
    InputError,
)

__all__ = ["actor_env", "shared_session", "connected", "address_to_use", "check_reachable"]

logger = logging.getLogger(__name__)

# Object store of a local instance fidkit starts: partial statistics are at most dim x dim float64
# (32 MiB), a few per actor in flight; Ray spills to disk beyond it.
_LOCAL_OBJECT_STORE_BYTES = 1 << 30


def actor_env() -> dict[str, str]:
    """Environment of the actors: fidkit's own variables, and a PYTHONPATH that finds this fidkit.

    A fidkit imported from a source tree (``PYTHONPATH=.``, an editable install through a path) is
    found by the actors of this machine and of nodes that mount the same path; an installed fidkit
    needs nothing.
    """
    env = {name: value for name, value in os.environ.items() if name.startswith("FIDKIT_")}
    package_parent = str(Path(__file__).resolve().parents[2])  # the folder holding fidkit/
    installed = {str(Path(entry).resolve()) for entry in [*site.getsitepackages(), site.getusersitepackages()]}
    if package_parent not in installed:
        entries = [package_parent] + [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(os.path.abspath(entry) for entry in entries))
    return env


# Depth of nested shared_session() spans; whether fidkit connected (or started an instance) inside them, which then
# stays until the outermost span ends; the address it connected to (None: a new local instance).
_session: dict[str, Any] = {"depth": 0, "started": False, "address": None}


@contextlib.contextmanager
def shared_session() -> Iterator[None]:
    """Within it, a Ray connection that :func:`ray_extract` makes (or a local instance it starts) stays up until the
    span ends: both sides of a comparison use one."""
    _session["depth"] += 1
    try:
        yield
    finally:
        _session["depth"] -= 1
        if _session["depth"] == 0 and _session["started"]:
            _session["started"] = False
            _session["address"] = None
            ray = sys.modules.get("ray")
            if ray is not None and ray.is_initialized():
                with signal_handlers_kept():
                    ray.shutdown()


def _is_new_local(address: str | None) -> bool:
    """Whether connecting to `address` (as :func:`address_to_use` gives it) starts a new instance on this machine."""
    return address is None or address == "local"


@contextlib.contextmanager
def connected(ray: Any, address: str | None) -> Iterator[bool]:
    """Use the Ray connection of this process, or connect / start one; yield whether the cluster is a new local
    instance that fidkit started (not a cluster that was running already, reached by its address or ``auto``)."""
    if ray.is_initialized():
        if _session["depth"] > 0 and _session["started"]:
            # The connection fidkit made for an earlier side of this comparison.
            wanted = address_to_use(address)
            if wanted != _session["address"] and not (_is_new_local(wanted) and _is_new_local(_session["address"])):
                logger.warning("Ray is already connected to %s in this process; it is used, not %s",
                               _session["address"] or "a local instance", wanted or "a local instance")
            yield _is_new_local(_session["address"])
            return
        if address is not None:
            logger.warning("Ray is already initialized in this process; its cluster is used, not %s", address)
        yield False
        return
    address = address_to_use(address)
    if address is not None and address != "local":
        check_reachable(address)
    try:
        with signal_handlers_kept():
            if _is_new_local(address):
                # "local": a new instance on this machine, never one that someone else's `ray start` runs.
                ray.init(
                    address="local", include_dashboard=False, object_store_memory=_LOCAL_OBJECT_STORE_BYTES,
                    log_to_driver=False, logging_level=logging.WARNING,
                )
            else:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError, ...
        where = "a local Ray instance" if _is_new_local(address) else f"the Ray cluster at {address}"
        raise FidkitError(
            f"cannot start or reach {where} ({type(exc).__name__}: {exc}); check the address (ray status), "
            "or unset RAY_ADDRESS to start a local instance"
        ) from exc
    if _session["depth"] > 0:
        # Kept for the other side of the comparison; disconnected (or shut down) when the shared session ends.
        _session["started"] = True
        _session["address"] = None if _is_new_local(address) else address
        yield _is_new_local(address)
        return
    try:
        yield _is_new_local(address)
    finally:
        with signal_handlers_kept():
            ray.shutdown()


def address_to_use(address: str | None) -> str | None:
    """`address`, else ``$RAY_ADDRESS``, checked for a form Ray connects to; None for a new local instance."""
    from fidkit._ray_address import check_ray_address

    if address:
        return check_ray_address(address)
    from_environment = os.environ.get("RAY_ADDRESS") or None
    if from_environment is None:
        return None
    return check_ray_address(from_environment, "the environment variable RAY_ADDRESS")


#: Seconds to connect to a Ray address and to hear it answer as Ray before giving up.
_PROBE_TIMEOUT_S = 10.0
#: What an HTTP/2 client sends first (RFC 9113, 3.4): the preface and an empty SETTINGS frame.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_FRAME_HEADER_BYTES = 9
_SETTINGS_FRAME = 0x04
_DASHBOARD_PORT = 8265


def check_reachable(address: str, timeout: float = _PROBE_TIMEOUT_S) -> None:
    """Fail in seconds, not minutes, on a ``host:port`` where Ray does not listen (Ray retries for a long time).

    Both a GCS (``host:6379``) and a Ray client server (``ray://host:10001``) speak gRPC, that is HTTP/2; a
    gRPC server answers a client's HTTP/2 preface with a SETTINGS frame at once. Anything else (an HTTP/1
    server such as the dashboard on 8265, a banner, silence) is not Ray, and the message says what to check.
    ``auto`` and ``local`` are Ray's to resolve; with ``RAY_USE_TLS`` set only the connection is tried.
    """
    if address in ("auto", "local"):
        return
    host, _, port_text = address.removeprefix("ray://").rpartition(":")
    host, port = host.strip("[]"), int(port_text)
    where = f"the Ray cluster at {address}"
    advice = (
        "give the head node's GCS address (HOST:6379 by default, `ray status` on the head node shows it) or its "
        "Ray client server (ray://HOST:10001); 8265 is the dashboard's port, not the cluster's. Or unset "
        "RAY_ADDRESS and drop --ray-address to use a local instance"
    )
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            if os.environ.get("RAY_USE_TLS", "").strip().lower() in ("1", "true"):
                return  # a TLS handshake first: the plain HTTP/2 preface would only be refused
            answer = _first_answer(connection, timeout)
    except OSError as exc:
        raise FidkitError(
            f"cannot reach {where} ({exc.strerror or exc}); start it with `ray start --head` on the head node, or "
            f"{advice}"
        ) from exc
    except ValueError as exc:  # UnicodeError too: the resolver's idna codec refuses an empty or over-long label
        from fidkit._ray_address import RAY_ADDRESS_FORMS

        raise InputError(
            f"{address} is not a Ray address (the host {host!r} is not a name a resolver takes: "
            f"{type(exc).__name__}: {exc}): give {RAY_ADDRESS_FORMS}"
        ) from exc
    verdict = _not_ray_because(answer, port, timeout)
    if verdict is not None:
        raise FidkitError(f"what listens at {address} is not a Ray cluster: {verdict}; {advice}")


def _first_answer(connection: socket.socket, timeout: float) -> bytes | None:
    """What the server answers to an HTTP/2 preface: the first frame header's bytes, or None when it said nothing
    within `timeout` seconds (bounded in time and in reads)."""
    connection.sendall(_HTTP2_PREFACE)
    ends = time.monotonic() + timeout
    answer = b""
    for _ in range(_FRAME_HEADER_BYTES):  # each read returns at least one byte, or ends the loop
        left = ends - time.monotonic()
        if left <= 0:
            return answer or None
        connection.settimeout(left)
        try:
            chunk = connection.recv(_FRAME_HEADER_BYTES - len(answer))
        except TimeoutError:
            return answer or None
        except ConnectionResetError:
            return answer
        if not chunk:
            return answer
        answer += chunk
        if len(answer) >= _FRAME_HEADER_BYTES:
            break
    return answer


def _not_ray_because(answer: bytes | None, port: int, timeout: float) -> str | None:
    """Why `answer` (see :func:`_first_answer`) is not a gRPC server's, or None when it is."""
    dashboard = f" (port {_DASHBOARD_PORT} is the Ray dashboard's)" if port == _DASHBOARD_PORT else ""
    if answer is None:
        return f"it accepted the connection but did not answer as Ray within {timeout:g} s{dashboard}"
    if answer.startswith((b"HTTP/", b"<")):
        # An HTTP/1 status line, or the HTML page of a server that takes the preface for an HTTP/0.9 request.
        return f"a web server answers there{dashboard or ' (such as the Ray dashboard or a job API)'}"
    if not answer:
        return f"it closed the connection without answering as Ray{dashboard}"
    if len(answer) == _FRAME_HEADER_BYTES and answer[3] == _SETTINGS_FRAME and answer[5:9] == b"\x00\x00\x00\x00":
        return None
    return f"it answers with {answer[:_FRAME_HEADER_BYTES]!r}, not with gRPC (HTTP/2) as Ray does{dashboard}"
