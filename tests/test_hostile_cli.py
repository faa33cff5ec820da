"""Hostile inputs around files, the cache and the standard streams (issue 9).

Every case is built in ``tmp_path`` with ``FIDKIT_HOME`` pointed into it. The network is a counting fake
(8 random features per image), so nothing here exports or runs the Inception graph; what is tested is
what fidkit writes, deletes, prints and returns.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fidkit.cli import main

REPO_ROOT = Path(__file__).resolve().parent.parent


# --- helpers ---------------------------------------------------------------------------------------


class CountingExtractor:
    """A stand-in for the Inception network: deterministic features of dimension 8, every call counted."""

    feature_dim = 8
    weights_sha256 = "f" * 64
    resize_mode = "fake-resize"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, images):
        self.calls += 1
        images = np.asarray(images)
        flat = images.reshape(len(images), -1).astype(np.float32)
        # Eight different linear views of the pixels: features vary from image to image.
        return np.stack([flat[:, index::8].mean(axis=1) for index in range(8)], axis=1).astype(np.float32)

    def metadata(self):
        return {"weights_sha256": self.weights_sha256, "resize_mode": self.resize_mode, "provider": "fake"}


@pytest.fixture
def home(tmp_path, monkeypatch):
    folder = tmp_path / "home"
    monkeypatch.setenv("FIDKIT_HOME", str(folder))
    return folder


@pytest.fixture
def network():
    """The CLI's network is a CountingExtractor (through the registry); returns it (``.calls``) and counts builds
    in ``.builds`` and identity look-ups in ``.identities``."""
    from fidkit.extractors import identity_of
    from fidkit.testing import replaced_extractor

    built: list = []

    class Counted(CountingExtractor):
        builds = property(lambda self: len(built))

    fake = Counted()
    fake.identities = 0

    def identity(options):
        fake.identities += 1  # finding (or downloading) and hashing the weights: network time too
        return dict(identity_of(fake).fields)  # the fake has one without any file

    with replaced_extractor(lambda options: fake, identity=identity) as builds:
        built = builds
        yield fake


def image_array(tmp_path: Path, n_images: int = 6, seed: int = 0, name: str = "images.npy") -> Path:
    path = tmp_path / name
    rng = np.random.default_rng(seed)
    np.save(path, rng.integers(0, 256, size=(n_images, 8, 8, 3), dtype=np.uint8))
    return path


def small_stats(seed: int = 0, *, n: int = 20, dim: int = 8, metadata=None):
    from fidkit.stats import Stats

    rng = np.random.default_rng(seed)
    return Stats.from_features(rng.normal(size=(n, dim)), metadata=dict(metadata or {"created": "now"}))


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("fidkit: error:")]
    assert len(lines) == 1, err
    return lines[0]


def run_fidkit(shell_line: str, home: Path, **kwargs) -> subprocess.CompletedProcess:
    """Run ``fidkit ...`` through ``sh -c`` (so that ``2>&-``, ``>&-`` and pipes are real)."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), FIDKIT_HOME=str(home))
    command = shell_line.replace("fidkit ", f"'{sys.executable}' -m fidkit ", 1)
    return subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=120, **kwargs)


# --- 5: only regular files are ever replaced ------------------------------------------------------------


def test_cli_save_force_refuses_a_fifo_and_a_link(home, tmp_path, capsys):
    source = tmp_path / "source.npz"
    small_stats().save(source)
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    assert main(["stats", str(source), "--save", str(fifo), "--force", "--quiet"]) == 1
    assert "FIFO" in error_line(capsys.readouterr().err) and stat.S_ISFIFO(fifo.lstat().st_mode)
    (tmp_path / "target.npz").write_bytes(b"kept")
    (tmp_path / "link.npz").symlink_to(tmp_path / "target.npz")
    assert main(["stats", str(source), "--save", str(tmp_path / "link.npz"), "--force", "--quiet"]) == 1
    assert "symbolic link" in error_line(capsys.readouterr().err)
    assert (tmp_path / "link.npz").is_symlink() and (tmp_path / "target.npz").read_bytes() == b"kept"


# --- 12: stdout carries only the result; closed or broken streams -------------------------------------------


@pytest.fixture
def two_ttur_files(tmp_path):
    """Two mu/sigma-only files: comparing them needs no network and warns (N unknown) on stderr."""
    paths = []
    for index in range(2):
        stats = small_stats(index)
        path = tmp_path / f"side{index}.npz"
        np.savez(path, mu=stats.mu, sigma=stats.sigma)
        paths.append(path)
    return paths


def test_closed_stderr_keeps_json_on_stdout_and_the_exit_status(home, two_ttur_files):
    a, b = two_ttur_files
    result = run_fidkit(f"fidkit compute '{a}' '{b}' --json 2>&-", home)
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)  # only the report: the warnings were dropped, not sent to stdout
    assert report["fid"] > 0 and report["warnings"]
    missing = run_fidkit(f"fidkit compute '{a}' '{b}.missing' 2>&-", home)
    assert missing.returncode == 1 and missing.stdout == ""


def test_broken_stdout_pipe_is_quiet_and_the_saved_file_is_complete(home, two_ttur_files, tmp_path):
    a, _ = two_ttur_files
    out = tmp_path / "saved.npz"
    read_end, write_end = os.pipe()
    os.close(read_end)  # no reader at all: the first write to stdout fails with EPIPE, deterministically
    try:
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), FIDKIT_HOME=str(home))
        result = subprocess.run(
            [sys.executable, "-m", "fidkit", "stats", str(a), "--save", str(out)],
            stdout=write_end, stderr=subprocess.PIPE, env=env, text=True, timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141
    assert result.stderr == ""  # no "Broken pipe", no "Exception ignored"
    from fidkit.stats import Stats

    assert Stats.load(out).dim == 8


def test_closed_stdout_is_an_error_before_any_work(home, two_ttur_files, tmp_path):
    a, _ = two_ttur_files
    out = tmp_path / "never.npz"
    result = run_fidkit(f"fidkit stats '{a}' --save '{out}' >&-", home)
    assert result.returncode == 1
    assert "stdout is closed" in error_line(result.stderr)
    assert not out.exists()


# --- 13: nothing is computed before the inputs and the destination are known to be usable ------------------


def test_a_typo_in_the_second_source_costs_no_network_time(home, tmp_path, network, capsys):
    real = image_array(tmp_path)
    assert main(["compute", str(real), str(tmp_path / "typo"), "--workers", "0", "--quiet"]) == 1
    assert "typo" in error_line(capsys.readouterr().err)
    assert (network.builds, network.calls, network.identities) == (0, 0, 0)


def test_a_typo_in_the_second_source_through_the_api(home, tmp_path):
    import fidkit
    from fidkit.errors import FidkitError

    counting = CountingExtractor()
    with pytest.raises(FidkitError, match="typo"):
        fidkit.compute_fid(image_array(tmp_path), tmp_path / "typo", extractor=counting, workers=0)
    assert counting.calls == 0


def _make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    ("make", "force", "message"),
    [
        (lambda tmp: (tmp / "out.npz").mkdir() or tmp / "out.npz", True, "is a folder"),
        (lambda tmp: _make_fifo(tmp / "out.npz"), True, "is a FIFO"),
        (lambda tmp: (tmp / "file").write_bytes(b"x") and tmp / "file" / "sub" / "out.npz", False, "is a file, not a folder"),
        (lambda tmp: (tmp / "out.npz").write_bytes(b"x") and tmp / "out.npz", False, "already exists; pass --force"),
    ],
    ids=["folder", "fifo", "parent-is-a-file", "exists"],
)
def test_an_unusable_save_destination_is_refused_before_computing(home, tmp_path, network, capsys, make, force, message):
    source = image_array(tmp_path)
    destination = make(tmp_path)
    argv = ["stats", str(source), "--save", str(destination), "--workers", "0", "--quiet"] + (["--force"] if force else [])
    assert main(argv) == 1
    line = error_line(capsys.readouterr().err)
    assert message in line and str(destination) in line
    assert (network.builds, network.calls, network.identities) == (0, 0, 0)


def test_a_save_destination_without_permission_is_refused_before_computing(home, tmp_path, network, monkeypatch, capsys):
    import fidkit._fs

    # Tests run as root, which may write anywhere: simulate a folder the user may not write.
    monkeypatch.setattr(fidkit._fs, "_writable_folder", lambda folder: folder != tmp_path / "readonly")
    (tmp_path / "readonly").mkdir()
    destination = tmp_path / "readonly" / "out.npz"
    assert main(["stats", str(image_array(tmp_path)), "--save", str(destination), "--workers", "0", "--quiet"]) == 1
    assert "no permission to create files in" in error_line(capsys.readouterr().err)
    assert network.calls == 0 and not destination.exists()


def test_a_missing_save_folder_is_created(home, tmp_path, network, capsys):
    from fidkit.stats import Stats

    destination = tmp_path / "new" / "deeper" / "out.npz"
    assert main(["stats", str(image_array(tmp_path)), "--save", str(destination), "--workers", "0", "--quiet"]) == 0
    assert Stats.load(destination).n == 6 and network.calls > 0


# --- 14: messages ------------------------------------------------------------------------------------------


def test_seed_without_limit_is_a_warning(home, tmp_path, network, capsys):
    assert main(["stats", str(image_array(tmp_path)), "--seed", "3", "--workers", "0", "--quiet"]) == 0
    assert "fidkit: warning: seed 3 without limit has no effect" in capsys.readouterr().err


def test_limit_above_the_number_of_images_is_a_warning(home, tmp_path, network, capsys):
    source = image_array(tmp_path)
    assert main(["stats", str(source), "--limit", "100", "--json", "--workers", "0", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n"] == 6
    assert f"fidkit: warning: {source}: limit 100 is above its 6 images; all 6 are used" in captured.err
    assert main(["stats", str(source), "--limit", "4", "--workers", "0", "--quiet"]) == 0
    # (The stand-in network's weights are not the released file's: that warning is another one.)
    assert "is above its" not in capsys.readouterr().err


def test_weights_given_as_a_folder_says_so(home, tmp_path, capsys):
    folder = tmp_path / "weights-folder"
    folder.mkdir()
    assert main(["stats", str(image_array(tmp_path)), "--weights", str(folder), "--workers", "0", "--quiet"]) == 1
    line = error_line(capsys.readouterr().err)
    assert "is a folder, not a weights file; pass the .pth file itself" in line and "does not exist" not in line


def test_complex_statistics_are_refused_unless_exactly_real(tmp_path):
    from fidkit.errors import InputError, StatsFileError
    from fidkit.stats import Stats

    sigma = np.eye(3) + 1e-3j * np.ones((3, 3))
    with pytest.raises(InputError, match="sigma is complex"):
        Stats(mu=np.zeros(3), sigma=sigma)
    with pytest.raises(InputError, match="mu is complex"):
        Stats(mu=np.array([0, 1j, 0]), sigma=np.eye(3))
    path = tmp_path / "complex.npz"
    np.savez(path, mu=np.zeros(3), sigma=sigma)
    with pytest.raises(StatsFileError, match="complex.npz.*sigma is complex"):
        Stats.load(path)
    exact = Stats(mu=np.zeros(3) + 0j, sigma=np.eye(3) + 0j)
    assert exact.sigma.dtype == np.float64 and np.array_equal(exact.sigma, np.eye(3))


def test_a_single_image_names_the_side(home, tmp_path, network, capsys):
    one = image_array(tmp_path, n_images=1, name="one.npy")
    assert main(["compute", str(image_array(tmp_path)), str(one), "--workers", "0", "--quiet"]) == 1
    line = error_line(capsys.readouterr().err)
    assert str(one) in line and "only 1 image" in line


def test_a_file_name_that_is_not_utf8_is_printed_escaped_not_a_traceback(tmp_path):
    import os
    import subprocess
    import sys

    path = os.fsencode(tmp_path) + b"/caf\xe9.npz"
    env = dict(os.environ, PYTHONIOENCODING="utf-8", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    result = subprocess.run([sys.executable, "-m", "fidkit", "info", path], capture_output=True, env=env, timeout=120)
    assert result.returncode == 1
    assert b"Traceback" not in result.stderr and b"no such statistics file" in result.stderr
    assert b"caf\\udce9" in result.stderr


def test_statistics_with_hostile_metadata_are_file_errors_or_read_as_unknown(tmp_path, capsys):
    import json

    import numpy as np

    from fidkit.cli import main

    deep = "[" * 100_000 + "]" * 100_000
    np.savez(tmp_path / "deep.npz", mu=np.zeros(2), sigma=np.eye(2), fidkit_metadata_json=np.asarray(deep))
    assert main(["info", str(tmp_path / "deep.npz")]) == 1
    assert "nested too deeply" in capsys.readouterr().err
    lots = json.dumps({"n_skipped": "lots", "skipped_files": "not a list"})
    np.savez(tmp_path / "lots.npz", mu=np.zeros(2), sigma=np.eye(2), n=np.int64(5), fidkit_metadata_json=np.asarray(lots))
    assert main(["compute", str(tmp_path / "lots.npz"), str(tmp_path / "lots.npz"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fid"] == 0.0 and report["a"]["n_skipped"] == 0
