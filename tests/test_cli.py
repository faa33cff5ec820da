"""The ``fidkit`` command: help, exit codes, one-line errors, JSON reports, info, cache, end to end.

The CLI runs in-process through ``main([...])``; the network runs through the session's extractor
(``fidkit.pipeline.build_extractor`` is replaced so that no test exports the graph again).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fidkit.cli import build_parser, main

from cli_runs import _run, error_line

REPO_ROOT = Path(__file__).resolve().parent.parent


def random_images(n_images: int, seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n_images, size, size, 3), dtype=np.uint8)


def small_stats(seed: int = 0, *, n: int = 40, dim: int = 8, metadata=None):
    from fidkit.stats import Stats

    features = np.random.default_rng(seed).normal(size=(n, dim)) + seed
    return Stats.from_features(features, metadata=dict(metadata or {}))


@pytest.fixture(autouse=True)
def _own_cache(fidkit_home):
    return fidkit_home


@pytest.fixture
def session_extractor(extractor, random_weights_path):
    """Make the CLI use the session's extractor (through the registry); yields the options of each build."""
    from fidkit.testing import replaced_extractor

    with replaced_extractor(lambda options: extractor) as built:
        yield built


@pytest.fixture
def weights_args(random_weights_path):
    return ["--weights", str(random_weights_path), "--workers", "0", "--quiet"]


# --- help and usage -----------------------------------------------------------------------------------


def _all_command_paths():
    parser = build_parser()
    paths = [[]]

    def walk(current_parser, prefix):
        for action in current_parser._actions:
            choices = getattr(action, "choices", None)
            if isinstance(choices, dict):
                for name, sub in choices.items():
                    paths.append(prefix + [name])
                    walk(sub, prefix + [name])

    walk(parser, [])
    return paths


@pytest.mark.parametrize("command", _all_command_paths(), ids=lambda path: " ".join(path) or "fidkit")
def test_help_on_every_command_has_examples(command, capsys):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: fidkit" in out
    assert "example" in out.lower()


def test_core_commands_are_registered():
    commands = {tuple(path) for path in _all_command_paths()}
    assert {("compute",), ("stats",), ("info",), ("cache",), ("cache", "list"), ("cache", "clear")} <= commands


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["compute", "only-one-source"],
        ["compute", "a", "b", "--batch-size", "0"],
        ["compute", "a", "b", "--limit", "-3"],
        ["compute", "a", "b", "--device", "tpu"],
        ["cache"],
        ["cache", "explode"],
        ["nonsense"],
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compute", "a", "b", "--batch-size", "0"], "expected a positive integer, got 0"),
        (["compute", "a", "b", "--limit", "x"], "expected a positive integer, got 'x'"),
        (["compute", "a", "b", "--workers", "-1"], "expected an integer >= 0, got -1"),
        (["ttur", "--data", "d", "--out", "o", "--steps", "0"], "expected a positive integer, got 0"),
        (["ttur", "--data", "d", "--out", "o", "--lr-d", "0"], "expected a positive finite number, got 0.0"),
        (["ttur", "--data", "d", "--out", "o", "--lr-g", "fast"], "expected a number, got 'fast'"),
        (["validate", "src", "--out", "o", "--samples", "-2"], "expected a positive integer, got -2"),
    ],
)
def test_numeric_options_name_what_they_expect(argv, message, capsys):
    # fidkit and its ttur / validate commands share one set of converters (fidkit._argtypes).
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_subprocess_help_and_no_torch_for_light_commands(tmp_path):
    env = {**os.environ, "FIDKIT_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [sys.executable, "-m", "fidkit", "--help"], capture_output=True, text=True, cwd=REPO_ROOT, env=env
    )
    assert result.returncode == 0 and "fidkit compute" in result.stdout
    stats_path = tmp_path / "s.npz"
    small_stats().save(stats_path)
    probe = (
        "import sys\n"
        "from fidkit.cli import main\n"
        "for argv in (['--help'], ['compute', '--help'], ['info', sys.argv[1]], ['cache', 'list']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(stats_path)], capture_output=True, text=True, cwd=REPO_ROOT, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "NO-TORCH"


# --- errors: one line, exit 1 ---------------------------------------------------------------------------


def test_nonexistent_source_is_one_line_exit_1(tmp_path, capsys, weights_args):
    missing = tmp_path / "does-not-exist"
    assert main(["compute", str(missing), str(missing), *weights_args]) == 1
    captured = capsys.readouterr()
    assert str(missing) in error_line(captured)
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_debug_adds_the_traceback(tmp_path, capsys, weights_args):
    missing = tmp_path / "does-not-exist"
    assert main(["compute", str(missing), str(missing), *weights_args, "--debug"]) == 1
    captured = capsys.readouterr()
    assert "Traceback" in captured.err
    error_line(captured)


def test_info_on_a_bad_npz(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage, not a zip")
    assert main(["info", str(bad)]) == 1
    assert "bad.npz" in error_line(capsys.readouterr())
    wrong_keys = tmp_path / "wrong.npz"
    np.savez(wrong_keys, features=np.zeros((3, 3)))
    assert main(["info", str(wrong_keys)]) == 1
    assert "wrong.npz" in error_line(capsys.readouterr())


def test_stats_refuses_to_overwrite_without_force(tmp_path, capsys):
    source = tmp_path / "source.npz"
    small_stats(1).save(source)
    out = tmp_path / "out.npz"
    out.write_bytes(b"precious")
    assert main(["stats", str(source), "--save", str(out)]) == 1
    assert "--force" in error_line(capsys.readouterr())
    assert out.read_bytes() == b"precious"
    # A statistics file as the source needs no network; --force replaces the file.
    assert main(["stats", str(source), "--save", str(out), "--force"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"saved {out}") and "N=40" in captured.out
    from fidkit.stats import Stats

    assert Stats.load(out).n == 40


def test_bad_files_without_and_with_skip_bad(tmp_path, capsys, session_extractor, weights_args):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for index, pixels in enumerate(random_images(8, seed=1)):
        Image.fromarray(pixels).save(folder / f"{index}.png")
    (folder / "truncated.png").write_bytes((folder / "0.png").read_bytes()[:40])
    out = tmp_path / "out.npz"
    assert main(["stats", str(folder), "--save", str(out), *weights_args]) == 1
    line = error_line(capsys.readouterr())
    assert "truncated.png" in line and "--skip-bad" in line
    assert not out.exists()  # nothing written by a failed run
    assert main(["stats", str(folder), "--save", str(out), "--skip-bad", *weights_args]) == 0
    captured = capsys.readouterr()
    assert "N=8" in captured.out and "1 file(s) skipped" in captured.out
    assert out.exists()


def test_ctrl_c_exits_130_without_partial_files(tmp_path, capsys, monkeypatch):
    import fidkit.api
    import fidkit.pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fidkit.api, "compute_stats_with_report", interrupted)
    out = tmp_path / "out.npz"
    assert main(["stats", "anything", "--save", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --- compute ---------------------------------------------------------------------------------------


def test_compute_prints_one_line_with_the_fid_last(tmp_path, capsys, session_extractor, weights_args):
    path_a, path_b = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(path_a, random_images(8, seed=1))
    np.save(path_b, random_images(8, seed=2, size=32))
    assert main(["compute", str(path_a), str(path_b), *weights_args]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("FID: ")
    fid = float(lines[0].split()[-1])
    assert fid > 0
    assert "fidkit: warning:" in captured.err and "2048" in captured.err  # N < dim is said

    # The same with --json, served from the cache this time.
    assert main(["compute", str(path_a), str(path_b), *weights_args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fid"] == pytest.approx(fid, abs=1e-4)
    assert report["a"]["n"] == 8 and report["b"]["n"] == 8
    assert report["a"]["cached"] and report["b"]["cached"]
    assert report["a"]["kind"] == "array"
    assert len(report["weights_sha256"]) == 64
    assert report["resize_mode"] and report["provider"]
    for field in ("mean_term", "trace_a", "trace_b", "trace_sqrt", "method", "rank", "clipped_negative"):
        assert field in report["frechet"]
    assert any("2048" in message for message in report["warnings"])
    assert set(report["timings"]) >= {"decode_seconds", "network_seconds", "distance_seconds", "total_seconds"}
    assert len(session_extractor) == 1  # built once for both sides, and not at all when both were cached


def test_compute_two_stats_files_without_weights(tmp_path, capsys, monkeypatch):
    from fidkit.testing import replaced_extractor

    path_a, path_b = tmp_path / "a.npz", tmp_path / "b.npz"
    small_stats(1).save(path_a)
    small_stats(2).save(path_b)
    with replaced_extractor(lambda options: pytest.fail("network built")):
        assert main(["compute", str(path_a), str(path_b)]) == 0
    from fidkit.frechet import fid_from_stats

    expected = fid_from_stats(small_stats(1), small_stats(2)).value
    assert float(capsys.readouterr().out.split()[-1]) == pytest.approx(expected, abs=1e-4)


# --- info ---------------------------------------------------------------------------------------------


def test_info_on_a_fidkit_file(tmp_path, capsys):
    path = tmp_path / "s.npz"
    stats = small_stats(1, metadata={"weights_sha256": "c" * 64, "resize_mode": "tf1"})
    stats.save(path)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "origin:        fidkit" in out
    assert "N:             40" in out and "dim:           8" in out
    assert "c" * 64 in out
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n"] == 40 and info["dim"] == 8 and info["foreign"] is False
    assert info["trace_sigma"] == pytest.approx(float(np.trace(stats.sigma)))
    assert info["metadata"]["weights_sha256"] == "c" * 64


def test_info_on_a_ttur_file(tmp_path, capsys):
    stats = small_stats(2)
    path = tmp_path / "fid_stats_ttur.npz"
    np.savez(path, mu=stats.mu, sigma=stats.sigma)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "TTUR / pytorch-fid" in out and "unknown" in out
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["foreign"] is True and info["n"] is None and info["dim"] == 8


# --- cache ----------------------------------------------------------------------------------------------


def test_cache_list_and_clear(tmp_path, capsys, session_extractor, weights_args, fidkit_home):
    assert main(["cache", "list"]) == 0
    assert "no cached statistics" in capsys.readouterr().out
    source = tmp_path / "images.npy"
    np.save(source, random_images(8, seed=3))
    assert main(["stats", str(source), *weights_args]) == 0
    assert "computed (not saved" in capsys.readouterr().out
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert "images.npy" in out and "1 entries" in out
    assert main(["cache", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["entries"][0]["n"] == 8
    assert main(["stats", str(source), *weights_args]) == 0
    assert "cached" in capsys.readouterr().out
    (fidkit_home / "onnx").mkdir(parents=True, exist_ok=True)  # the cache key names the graph, so it exists
    assert main(["cache", "clear"]) == 0
    assert "removed 1 cached statistics entries" in capsys.readouterr().out
    assert (fidkit_home / "onnx").exists()
    assert main(["cache", "clear", "--all"]) == 0
    assert "onnx" in capsys.readouterr().out
    assert list((fidkit_home / "onnx").iterdir()) == []  # emptied; folders are never removed


# --- end to end on the shared data ------------------------------------------------------------------------


def test_end_to_end_cifar_jpeg_zip_vs_lossless_npy(shared_data, capsys, session_extractor, weights_args):
    jpeg_zip = shared_data / "cifar10" / "cifar10-train-jpg.zip"
    lossless = shared_data / "cifar10" / "cifar10-train-0-3999-uint8.npy"
    argv = ["compute", str(jpeg_zip), str(lossless), "--limit", "10", "--json", *weights_args]
    assert main(argv) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["a"]["n"] == 10 and report["b"]["n"] == 10
    assert report["a"]["lossy"] is True and report["b"]["lossy"] is False
    assert any("lossy" in message for message in report["warnings"])
    assert "lossy" in captured.err
    assert report["fid"] > 0


def test_main_restores_the_package_logger(capsys):
    """main() configures logging for one command only: an embedding application keeps its setup."""
    import logging

    package_logger = logging.getLogger("fidkit")
    before = (package_logger.level, package_logger.propagate, list(package_logger.handlers))
    assert main(["cache", "list"]) == 0
    capsys.readouterr()
    assert (package_logger.level, package_logger.propagate, list(package_logger.handlers)) == before


def test_the_cli_spells_the_conventions_and_dims_of_the_network():
    from fidkit import cli
    from fidkit.inception.conventions import CONVENTIONS
    from fidkit.inception.spec import DIMS

    assert cli.CONVENTIONS == CONVENTIONS
    assert sorted(cli.DIMS) == sorted(DIMS)


# --- hostile review (issue 9), 13: nothing is computed before the inputs and the destination are known to be usable ---


class CountingPixelMeans:
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
def network():
    """The CLI's network is a CountingExtractor (through the registry); returns it (``.calls``) and counts builds
    in ``.builds`` and identity look-ups in ``.identities``."""
    from fidkit.extractors import identity_of
    from fidkit.testing import replaced_extractor

    built: list = []

    class Counted(CountingPixelMeans):
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


def test_a_typo_in_the_second_source_costs_no_network_time(home, tmp_path, network, capsys):
    real = image_array(tmp_path)
    assert main(["compute", str(real), str(tmp_path / "typo"), "--workers", "0", "--quiet"]) == 1
    assert "typo" in error_line(capsys.readouterr().err)
    assert (network.builds, network.calls, network.identities) == (0, 0, 0)


def test_a_typo_in_the_second_source_through_the_api(home, tmp_path):
    import fidkit
    from fidkit.errors import FidkitError

    counting = CountingPixelMeans()
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


# --- hostile review (issue 9), 14: messages -------------------------------------------------------------------------


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


# --- hostile round 4, 5: seeds are checked by argparse --------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["compute", "a", "b", "--seed", "-5"],
        ["compute", "a", "b", "--seed", str(2**32)],
        ["stats", "a", "--seed", "-1"],
        ["features", "a", "--seed", "x"],
        ["compute", "a", "b", "--metrics-seed", "99999999999999999999999"],
        ["compute", "a", "b", "--metrics-seed", "-1"],
        ["ttur", "--data", "a", "--out", "o", "--seed", "-3"],
        ["validate", "a", "--out", "o", "--seed", str(2**40)],
    ],
)
def test_every_seed_option_is_a_usage_error_naming_it(argv, capsys):
    option = argv[-2]
    status, out, err = _run(argv, capsys)
    assert status == 2 and out == ""
    assert f"argument {option}" in err and "2**32" in err, err


def test_seeds_in_range_are_accepted():
    largest = str(2**32 - 1)
    args = build_parser("compute").parse_args(["compute", "a", "b", "--seed", "0", "--metrics-seed", largest])
    assert (args.seed, args.metrics_seed) == (0, 2**32 - 1)
    assert build_parser("ttur").parse_args(["ttur", "--data", "a", "--out", "o", "--seed", largest]).seed == 2**32 - 1


# --- hostile round 4, 8: a statistics file without N ----------------------------------------------------------------


def test_stats_of_a_file_without_n_says_it_is_unknown(tmp_path, capsys):
    foreign = tmp_path / "ttur.npz"
    np.savez(foreign, mu=np.zeros(4), sigma=np.eye(4))  # what TTUR writes: mu and sigma only
    for extra in ([], ["--save", str(tmp_path / "copy.npz")]):
        status, out, err = _run(["stats", str(foreign), "--quiet", *extra], capsys)
        assert status == 0, err
        assert "None" not in out and "N unknown" in out, out


@pytest.mark.parametrize("command", ["compute", "stats", "info"])
def test_a_failed_json_run_prints_nothing_on_stdout_as_the_docs_say(command, tmp_path, capsys):
    # No JSON error object: stdout stays empty, the error is one line on stderr, the status is 1. The docs once
    # said that `--json > report.json` "always parses", which an empty file does not.
    missing = tmp_path / "no such dir" / "x.npz"
    argv = [command, str(missing), *([str(missing)] if command == "compute" else []), "--json"]
    status, out, err = _run(argv, capsys)
    assert (status, out) == (1, "")
    assert str(missing) in error_line(err)
    usage = (Path(__file__).resolve().parent.parent / "docs" / "usage.md").read_text(encoding="utf-8")
    assert "always parses" not in usage
    assert "Only status 0 prints a result. With any other status stdout gets nothing, with `--json` too" in usage
