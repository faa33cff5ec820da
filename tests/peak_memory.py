"""Files that declare more than they hold, and the peak memory of reading one in a fresh interpreter.

Each helper keeps the name it had in the test module it came from, so the tests read as they did there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20


def _peak_growth_mib(script: str, *args: str) -> tuple[float, str]:
    """Run `script` in a fresh interpreter; return (peak RSS growth in MiB while it ran, its stdout).

    The script runs after ``import fidkit.sources, fidkit.stats, numpy``, so their memory is not counted. The
    peak is the process's own high-water mark (``VmHWM``): ``ru_maxrss`` would start from the parent's, which
    Linux carries across fork and exec.
    """
    prelude = textwrap.dedent(
        """
        import resource, sys
        import numpy as np
        import fidkit.sources, fidkit.stats, fidkit.statsfile

        def peak_kib():
            try:
                with open("/proc/self/status") as status:
                    return int(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
            except (OSError, StopIteration):
                return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        before = peak_kib()
        """
    )
    epilogue = "\nprint('GROWTH_KIB', peak_kib() - before)\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script) + epilogue, *args],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    growth = float(next(line.split()[1] for line in lines if line.startswith("GROWTH_KIB"))) / 1024
    return growth, "\n".join(line for line in lines if not line.startswith("GROWTH_KIB"))


def _zeros(n_bytes: int, chunk: int = 8 * MIB):
    """`n_bytes` zero bytes, in chunks (never all in memory)."""
    block = bytes(chunk)
    while n_bytes > 0:
        yield block[: min(chunk, n_bytes)]
        n_bytes -= chunk
