"""Hostile review, round 4: the cache home and the named datasets.

The ONNX graphs fidkit builds are cleared by `cache clear --all`; other programs' temporary files in a user's
folder below the home are left alone; settings that cannot be read are errors, not tracebacks or silent downloads.
"""

from __future__ import annotations

import os
import time

import pytest

from fidkit._fs import atomic_write
from fidkit.cli import main
from fidkit.errors import InputError, SourceError
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


def test_a_datasets_folder_that_does_not_exist_is_an_error_not_a_download(monkeypatch, tmp_path, fidkit_home) -> None:
    from fidkit.sources.named import DATASETS, find_dataset_file

    monkeypatch.setenv("FIDKIT_DATASETS", str(tmp_path / "typo"))
    with pytest.raises(SourceError, match="no such folder"):
        find_dataset_file(DATASETS["mnist-test"])


def test_the_listing_says_a_file_of_the_wrong_size_must_go(monkeypatch, tmp_path, fidkit_home, capsys) -> None:
    monkeypatch.delenv("FIDKIT_DATASETS", raising=False)
    folder = fidkit_home / "datasets"
    folder.mkdir(parents=True)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"x" * 1000)
    assert main(["datasets"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("mnist-test"))
    assert "has the wrong size: delete it" in line


def test_the_listing_stops_at_a_datasets_folder_that_does_not_exist(monkeypatch, tmp_path, fidkit_home, capsys) -> None:
    # As for a FIDKIT_DATASETS that names a file (round 3): one line that names the variable, exit 1.
    monkeypatch.setenv("FIDKIT_DATASETS", str(tmp_path / "typo"))
    assert main(["datasets"]) == 1
    error = capsys.readouterr().err.strip()
    assert "FIDKIT_DATASETS=" in error and "no such folder" in error and len(error.splitlines()) == 1


def test_the_listing_does_not_advise_deleting_a_file_in_the_users_folder(monkeypatch, tmp_path, fidkit_home, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"x" * 1000)
    monkeypatch.setenv("FIDKIT_DATASETS", str(folder))
    assert main(["datasets"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("mnist-test"))
    assert "replace it with the published file or unset FIDKIT_DATASETS" in line and "delete" not in line
