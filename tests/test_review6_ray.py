"""Round 6 review, part B, on a real local Ray instance: the fidkit command's SIGTERM handling survives ray.init."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Starts a local Ray instance in a subprocess (some 10 s); run by .ci/run with the other cluster cases.
pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_sigterm_after_ray_init_takes_the_commands_path_not_rays_exit(tmp_path):
    pytest.importorskip("ray")
    # The command's handler (SIGTERM unwound as Ctrl-C), a real ray.init through fidkit's connection, then SIGTERM
    # while connected and after the connection ended (ray.shutdown): `kill` during side b, or after both sides.
    script = textwrap.dedent("""
        import os, signal
        import ray
        from fidkit._signals import Terminated as _Terminated, _raise_terminated, sigterm_as_interrupt as _sigterm_as_interrupt
        from fidkit.cluster.connect import connected, shared_session

        def terminate_self():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(10_000):  # the handler runs between bytecodes
                    pass
            except _Terminated:
                return True
            return False

        with _sigterm_as_interrupt():
            with shared_session():
                with connected(ray, None):
                    print("inside", terminate_self(), flush=True)
                    signal.signal(signal.SIGTERM, _raise_terminated)  # it falls back to the default after one
            print("after", terminate_self(), flush=True)
        """)
    env = {name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, (done.stdout, done.stderr[-3000:])
    assert done.stdout.splitlines() == ["inside True", "after True"]
    assert "SIGTERM received" not in done.stderr


def test_the_command_killed_with_sigterm_during_a_ray_run_says_terminated_and_exits_143(tmp_path,
                                                                                      random_weights_path):
    pytest.importorskip("ray")
    import signal
    import time

    import numpy as np
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for index in range(64):  # tens of seconds on 2 CPU actors: SIGTERM lands while the actors compute
        Image.fromarray(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)).save(images / f"{index:02d}.png")
    env = {name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env["FIDKIT_HOME"] = str(tmp_path / "home")
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        command = subprocess.Popen(
            [sys.executable, "-m", "fidkit", "stats", str(images), "--ray", "--weights", str(random_weights_path),
             "--device", "cpu", "--batch-size", "2", "--no-cache", "--save", str(tmp_path / "out.npz")],
            stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=tmp_path,
        )
        try:
            ends = time.monotonic() + 240
            while "shards on" not in log.read_text() and command.poll() is None and time.monotonic() < ends:
                time.sleep(0.2)
            assert command.poll() is None, log.read_text()
            time.sleep(1)
            command.send_signal(signal.SIGTERM)
            status = command.wait(timeout=120)
        finally:
            if command.poll() is None:
                command.kill()
                command.wait()
    err = log.read_text()
    assert status == 143, err
    assert "fidkit: terminated" in err and "SIGTERM received" not in err
    assert not (tmp_path / "out.npz").exists() and list(tmp_path.glob("*.npz*")) == []
