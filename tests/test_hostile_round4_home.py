"""Hostile review, round 4: the cache home and the named datasets.

The ONNX graphs fidkit builds are cleared by `cache clear --all`; other programs' temporary files in a user's
folder below the home are left alone; settings that cannot be read are errors, not tracebacks or silent downloads.
"""

from __future__ import annotations

import os
import time

import pytest

from fidkit._fs import atomic_write
from fidkit.errors import InputError
from fidkit.home import clear_cache


@pytest.mark.parametrize("convention", ["tf", "pytorch-fid", "clean", "torchmetrics"])
def test_clear_all_removes_the_graphs_fidkit_builds(fidkit_home, monkeypatch, convention) -> None:
    from fidkit.inception.runtime import graph_cache_path

    graph = graph_cache_path("0123456789abcdef" * 4, convention)
    graph.parent.mkdir(parents=True)
    graph.write_bytes(b"x" * 10)
    recorded = graph.with_name(graph.name + ".sha256")
    recorded.write_text("0" * 64)
    cleared = clear_cache(include_models=True)
    assert not graph.exists() and not recorded.exists()
    assert cleared.kept == ()


def test_a_save_below_the_home_leaves_other_programs_temporaries_alone(fidkit_home) -> None:
    results = fidkit_home / "results"  # a user's folder that happens to lie below FIDKIT_HOME
    results.mkdir(parents=True)
    theirs = [results / ".draft.abcdefgh.tmp", results / ".report.csv.k2j4m9x1.tmp.csv"]
    old = time.time() - 7200
    for path in theirs:
        path.write_text("not fidkit's")
        os.utime(path, (old, old))
    with atomic_write(results / "a_stats.npz") as temporary:
        temporary.write_bytes(b"x")
    assert all(path.exists() for path in theirs)
    # In a folder fidkit owns, its own older temporaries still go.
    stats = fidkit_home / "stats"
    stats.mkdir()
    abandoned = stats / ".entry.npz.abcdefgh.tmp.npz"
    abandoned.write_text("left by a killed fidkit 0.x")
    os.utime(abandoned, (old, old))
    with atomic_write(stats / "entry.npz") as temporary:
        temporary.write_bytes(b"x")
    assert not abandoned.exists()


def test_a_cache_limit_too_large_for_a_float_is_an_error(monkeypatch) -> None:
    from fidkit.cache import cache_max_bytes

    monkeypatch.setenv("FIDKIT_CACHE_MAX_BYTES", "9" * 400)
    with pytest.raises(InputError, match="too large to be a size"):
        cache_max_bytes()
