"""Round 6 review, part B: signals around ray.init, file:// listings, a deleted working directory, file-size
limits, a CIFAR folder's listing for Ray actors, and half-sample sizes that only the drawn sides need."""

from __future__ import annotations

import signal
import sys

import pytest

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
