"""Ray before any work is sent (fidkit.cluster.connect, .ray, fidkit._ray_address): the actor count, the address
grammar, and the probe of what answers at the address (hostile round 3).

No cluster is needed: every server here listens on 127.0.0.1 and is started by the test; one test starts a local
Ray instance of 2 CPUs, if Ray is installed.
"""

from __future__ import annotations

import contextlib
import http.server
import signal
import socket
import sys
import threading
from collections.abc import Iterator

import pytest

from fidkit.errors import InputError


# --- hostile round 3, 10: never more actors than the cluster can place ----------------------------------------------


def test_the_actor_count_is_what_the_cluster_can_place(caplog):
    from fidkit.cluster.ray import actor_count

    assert actor_count(None, cpus=6.0, gpus=0.0, use_gpu=False) == 6
    assert actor_count("", cpus=6.0, gpus=2.0, use_gpu=True) == 2
    assert actor_count("3", cpus=6.0, gpus=0.0, use_gpu=False) == 3
    assert actor_count(" 4 ", cpus=6.5, gpus=0.0, use_gpu=False) == 4
    with caplog.at_level("WARNING", logger="fidkit.cluster.ray"):
        assert actor_count("64", cpus=6.0, gpus=0.0, use_gpu=False) == 6
        assert actor_count("3", cpus=8.0, gpus=2.0, use_gpu=True) == 2
        assert actor_count("9" * 5000, cpus=2.0, gpus=0.0, use_gpu=False) == 2
        assert actor_count("8", cpus=1.0, gpus=4.0, use_gpu=True) == 1  # each GPU actor takes a CPU too
    assert len(caplog.records) == 4
    assert "FIDKIT_RAY_ACTORS=64" in caplog.records[0].getMessage()
    assert "starting 6 actor(s)" in caplog.records[0].getMessage()


@pytest.mark.parametrize("text", ["0", "-2", "two", "1.5", "٣"])
def test_an_actor_count_that_is_not_a_positive_integer_is_refused(text):
    from fidkit.cluster.ray import actor_count

    with pytest.raises(InputError, match="FIDKIT_RAY_ACTORS must be a positive integer"):
        actor_count(text, cpus=4.0, gpus=0.0, use_gpu=False)


def test_a_cluster_without_a_whole_cpu_is_refused():
    from fidkit.cluster.ray import actor_count
    from fidkit.errors import FidkitError

    with pytest.raises(FidkitError, match="not enough for one fidkit actor"):
        actor_count(None, cpus=0.5, gpus=0.0, use_gpu=False)


# --- hostile round 3, 12 and 18: the address grammar, one place, exit 2 ---------------------------------------------


BAD_ADDRESSES = [
    "head:-5", "head:+6379", ":6379", "head:99999999999999999999", "head:" + "9" * 5000, "head:0", "head:65536",
    "head", "head:", "::1:6379", "ray://:10001", "ray://head", "http://head:8265", "redis://head:6379", " head:6379",
    "head:6379x", "head:６３７９",
]


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_a_malformed_ray_address_is_a_usage_error_of_one_line(address, capsys):
    from fidkit.cli import main

    assert main(["stats", "images/", "--ray-address", address]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "is not a Ray address" in lines[0] and "Traceback" not in err
    assert len(lines[0]) < 600  # a 5000-digit port is shortened


@pytest.mark.parametrize("address", BAD_ADDRESSES[:4])
def test_the_api_and_ray_address_refuse_the_same_forms(address, monkeypatch):
    from fidkit.cluster.connect import address_to_use as _address_to_use
    from fidkit.options import RunOptions

    with pytest.raises(InputError, match="is not a Ray address"):
        RunOptions(cluster="ray", ray_address=address)
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(InputError, match="the environment variable RAY_ADDRESS .* is not a Ray address"):
        _address_to_use(None)


@pytest.mark.parametrize(
    "address", ["head-node:6379", "10.0.0.1:6379", "[::1]:6379", "ray://head:10001", "ray://10.1.2.3:1", "auto",
                "local", "head.example.com:65535"],
)
def test_the_forms_ray_connects_to_are_accepted(address):
    from fidkit._ray_address import check_ray_address

    assert check_ray_address(address) == address


# --- hostile round 3, 11: something other than Ray at the address fails in seconds ----------------------------------


@contextlib.contextmanager
def _listener(answer: bytes | None) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that answers each connection with `answer` (None: says nothing)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    sock.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        for _ in range(200):  # bounded: at most 40 s
            if done.is_set():
                return
            try:
                connection, _ = sock.accept()
            except OSError:
                continue
            with connection:
                if answer is None:
                    done.wait(5)  # silent until the test ends
                else:
                    connection.sendall(answer)  # then closed

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        done.set()
        thread.join(timeout=5)
        sock.close()


def test_an_http_server_at_the_address_is_not_ray(monkeypatch):
    from fidkit.cluster.connect import check_reachable as _check_reachable
    from fidkit.errors import FidkitError

    monkeypatch.delenv("RAY_USE_TLS", raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for address in (f"127.0.0.1:{server.server_address[1]}", f"ray://127.0.0.1:{server.server_address[1]}"):
            with pytest.raises(FidkitError, match="is not a Ray cluster: a web server answers there") as raised:
                _check_reachable(address)
            message = str(raised.value)
            assert address in message and "8265 is the dashboard's port" in message and "6379" in message
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [(b"HTTP/1.1 400 Bad Request\r\n\r\n", "a web server"), (b"SSH-2.0-OpenSSH_9.6\r\n", "not with gRPC"),
     (b"", "closed the connection"), (None, "did not answer as Ray within")],
)
def test_what_is_not_a_grpc_server_is_refused(answer, expected, monkeypatch):
    from fidkit.cluster import connect as ray_module
    from fidkit.errors import FidkitError

    monkeypatch.delenv("RAY_USE_TLS", raising=False)
    with _listener(answer) as port, pytest.raises(FidkitError, match=expected):
        ray_module.check_reachable(f"127.0.0.1:{port}", timeout=0.5)


def test_a_grpc_server_passes_the_probe(monkeypatch):
    from fidkit.cluster.connect import check_reachable as _check_reachable

    monkeypatch.delenv("RAY_USE_TLS", raising=False)
    settings = b"\x00\x00\x06\x04\x00\x00\x00\x00\x00" + b"\x00\x03\x00\x00\x00\x64"  # what gRPC sends first
    with _listener(settings) as port:
        _check_reachable(f"127.0.0.1:{port}", timeout=2.0)
        _check_reachable(f"ray://127.0.0.1:{port}", timeout=2.0)


def test_the_cli_fails_at_once_on_an_http_server(tmp_path, monkeypatch):
    """Through `_connected`, before ray.init: no Ray instance is started or contacted."""
    ray = pytest.importorskip("ray")
    from fidkit.cluster.connect import connected as _connected
    from fidkit.errors import FidkitError

    if ray.is_initialized():
        pytest.skip("Ray already runs in this process")
    monkeypatch.delenv("RAY_USE_TLS", raising=False)
    with _listener(b"HTTP/1.0 400 Bad Request\r\n\r\n") as port:
        with pytest.raises(FidkitError, match="a web server answers there"), _connected(ray, f"127.0.0.1:{port}"):
            pass
    assert not ray.is_initialized()


def test_with_a_local_ray_the_actor_count_is_clamped_and_its_gcs_passes_the_probe(monkeypatch, caplog):
    ray = pytest.importorskip("ray")
    from fidkit.cluster.connect import check_reachable as _check_reachable
    from fidkit.cluster.ray import _actor_plan

    if ray.is_initialized():
        pytest.skip("Ray already runs in this process")
    monkeypatch.delenv("RAY_USE_TLS", raising=False)
    ray.init(num_cpus=2, object_store_memory=100 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    try:
        monkeypatch.setenv("FIDKIT_RAY_ACTORS", "7")
        with caplog.at_level("WARNING", logger="fidkit.cluster.ray"):
            assert _actor_plan(ray, "cpu") == (2, False)
        assert "FIDKIT_RAY_ACTORS=7" in caplog.text
        _check_reachable(ray.get_runtime_context().gcs_address, timeout=5.0)
    finally:
        ray.shutdown()


# --- 1: ray.init does not keep the SIGTERM / SIGINT handlers installed before it ---------------------------------


class _RayThatTakesSignals:
    """What Ray does to the driver's signals: init installs its own SIGTERM handler (sys.exit), here SIGINT's too;
    shutdown leaves SIGTERM at the default."""

    def __init__(self):
        self.up = False

    def is_initialized(self):
        return self.up

    def init(self, **kwargs):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.up = True

    def shutdown(self):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # what Ray's shutdown does from C
        self.up = False


@pytest.fixture
def signals_kept():
    """The test's own handlers, put back as they were whatever the test does."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("shared", [False, True])
def test_the_handlers_installed_before_ray_init_are_put_back_right_after_it(monkeypatch, signals_kept, shared):
    import contextlib

    import fidkit.cluster.connect as connect

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setitem(connect._session, "depth", 0)
    monkeypatch.setitem(connect._session, "started", False)
    monkeypatch.setitem(connect._session, "address", None)
    fake = _RayThatTakesSignals()
    monkeypatch.setitem(sys.modules, "ray", fake)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    def on_int(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_int)
    with connect.shared_session() if shared else contextlib.nullcontext():
        with connect.connected(fake, None):
            assert fake.up
            assert signal.getsignal(signal.SIGTERM) is on_term and signal.getsignal(signal.SIGINT) is on_int
    assert not fake.up
    assert signal.getsignal(signal.SIGTERM) is on_term and signal.getsignal(signal.SIGINT) is on_int


def test_the_handlers_are_put_back_when_ray_init_fails(monkeypatch, signals_kept):
    import fidkit.cluster.connect as connect
    from fidkit.errors import FidkitError

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setitem(connect._session, "depth", 0)
    fake = _RayThatTakesSignals()

    def failing_init(**kwargs):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise RuntimeError("no room for an instance")

    fake.init = failing_init
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with pytest.raises(FidkitError, match="no room for an instance"):
        with connect.connected(fake, None):
            pass
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_that_code_waiting_in_c_turns_into_a_plain_interrupt_still_ends_as_terminated(monkeypatch, capsys,
                                                                                              signals_kept):
    # ray.get (and other waits in C) catch what the handler raises and raise a new, plain KeyboardInterrupt.
    import os

    from fidkit import cli

    def waits_in_c(args):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000):  # the handler runs between bytecodes
                pass
        except KeyboardInterrupt:
            raise KeyboardInterrupt from None
        return 0

    monkeypatch.setattr(cli.commands, "info", waits_in_c)
    assert cli.main(["info", "anything.npz"]) == 143
    assert "fidkit: terminated" in capsys.readouterr().err

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.commands, "info", interrupted)
    assert cli.main(["info", "anything.npz"]) == 130  # the next command starts afresh: Ctrl-C is an interrupt
    assert "fidkit: interrupted" in capsys.readouterr().err
