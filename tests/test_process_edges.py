"""The process's surroundings: no home directory, long file names, a full disk while downloading, SIGTERM, a
deleted working directory, dangling links on the way to an output."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fidkit._fs import atomic_write, cache_home
from fidkit.errors import InputError, WeightsError

REPO_ROOT = Path(__file__).resolve().parents[1]
#: A user name no system has: pathlib cannot expand ``~`` followed by it.
NO_USER = "nosuchuser-fidkit-test"


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fidkit", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}, cwd=cwd,
    )


# --- 1. no home directory ---------------------------------------------------------------------------------------


@pytest.fixture
def no_home(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a container run with a user id that has no password entry: HOME unset and the lookup fails, so
    ``os.path.expanduser`` gives ``~`` back and pathlib raises RuntimeError("Could not determine home directory.")."""
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv("FIDKIT_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)

    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    with pytest.raises(RuntimeError):
        Path.home()  # the simulation is what Python does


def test_no_home_directory_is_an_error_naming_what_to_set(no_home: None) -> None:
    with pytest.raises(InputError) as info:
        cache_home()
    message = str(info.value)
    assert "FIDKIT_HOME" in message and "HOME" in message and "set FIDKIT_HOME (or HOME)" in message
    assert f"user id {os.getuid()}" in message


@pytest.mark.parametrize("variable", ["FIDKIT_HOME", "XDG_CACHE_HOME"])
def test_a_cache_home_variable_with_an_unknown_user_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.delenv("FIDKIT_HOME", raising=False)
    monkeypatch.setenv(variable, f"~{NO_USER}/fk")
    with pytest.raises(InputError) as info:
        cache_home()
    message = str(info.value)
    assert f"{variable}=~{NO_USER}/fk" in message and f"no user {NO_USER}" in message
    assert f"set {variable} to a path without ~{NO_USER}" in message


def test_a_home_variable_with_a_tilde_and_no_home_directory(no_home: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIDKIT_HOME", "~/fk")
    with pytest.raises(InputError, match=r"FIDKIT_HOME=~/fk, and no home directory is known .* without ~ "):
        cache_home()


def test_a_save_to_a_given_path_needs_no_home_directory(no_home: None, tmp_path: Path) -> None:
    from fidkit.stats.core import Stats

    stats = Stats.from_features(np.random.default_rng(0).random((20, 8)))
    stats.save(tmp_path / "s.npz")
    assert Stats.load(tmp_path / "s.npz").mu.tolist() == stats.mu.tolist()
    with atomic_write(tmp_path / "plain.txt") as partial:
        partial.write_text("x")
    assert (tmp_path / "plain.txt").read_text() == "x"


def test_weights_with_an_unknown_user_name_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    from fidkit.home import weights_files_read
    from fidkit.inception.weights import locate_weights

    for call in (lambda: locate_weights(f"~{NO_USER}/w.pth"), lambda: weights_files_read(f"~{NO_USER}/w.pth")):
        with pytest.raises(WeightsError, match=f"--weights.*no user {NO_USER}.*give the path without ~{NO_USER}"):
            call()
    monkeypatch.setenv("FIDKIT_WEIGHTS", f"~{NO_USER}/w.pth")
    with pytest.raises(WeightsError, match=f"FIDKIT_WEIGHTS.*no user {NO_USER}"):
        locate_weights()


def test_weights_with_a_tilde_and_no_home_directory(no_home: None) -> None:
    from fidkit.inception.weights import locate_weights

    with pytest.raises(WeightsError, match="--weights.*no home directory.*give the path without ~, or set HOME"):
        locate_weights("~/w.pth")


def test_the_command_line_says_one_line_for_an_unknown_user(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((2, 8, 8, 3), np.uint8))
    listed = _cli("cache", "list", env={"FIDKIT_HOME": f"~{NO_USER}/fk"})
    assert listed.returncode == 1, listed.stderr
    assert listed.stderr.startswith("fidkit: error: fidkit's cache home cannot be determined: FIDKIT_HOME=")
    assert "Traceback" not in listed.stderr and "internal error" not in listed.stderr
    given = _cli("stats", str(tmp_path / "a.npy"), "--weights", f"~{NO_USER}/w.pth")
    assert given.returncode == 1, given.stderr
    assert given.stderr.strip().splitlines()[-1].startswith(f"fidkit: error: cannot use ~{NO_USER}/w.pth (from --weights")
    assert "Traceback" not in given.stderr


def test_a_datasets_folder_with_an_unknown_user_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from fidkit.errors import SourceError
    from fidkit.sources.named import DATASETS, DATASETS_ENV, find_dataset_file

    monkeypatch.setenv(DATASETS_ENV, f"~{NO_USER}/data")
    with pytest.raises(SourceError, match=f"{DATASETS_ENV}.*no user {NO_USER}"):
        find_dataset_file(next(iter(DATASETS.values())))
