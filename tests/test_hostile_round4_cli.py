"""The command line under hostile use (hostile round 4).

- 1: ``--save`` never replaces a file the run reads, even with ``--force``: an image of a folder source, a CIFAR
  batch of a CIFAR folder, the weights file (``--weights``, ``$FIDKIT_WEIGHTS``, the cached one), through links
  and hard links alike; other paths in the folder stay writable, and a folder is listed only when the path exists.
- 2: ``--json``'s "warnings" holds every warning printed on stderr (limit/seed, sFID's small samples...).
- 3: a failed write of the result to stdout says so, not "the save failed"; a reader that went away stays quiet.
- 4: ``--save newdir/`` names a folder: refused, not written as a file called ``newdir``.
- 5: every seed option is checked by argparse: exit 2, the option named, 0 <= seed < 2**32.
- 6: KID's "subset_size capped" line is debug, not one INFO line per half-sample.
- 7: the text table never prints a non-finite number.
- 8: ``fidkit stats`` of a file without N says N is unknown, not ``N=None``.

No test here runs the network: the refusals come before it, and the other sources are statistics or features files.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fidkit.cli import build_parser, main
from fidkit.errors import OverwriteError
from fidkit.features import Features
from fidkit.sources import refuse_outputs_over_inputs
from fidkit.stats import Stats

REPO_ROOT = Path(__file__).resolve().parent.parent
RNG = np.random.default_rng(4)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def dummy_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file standing for the weights (never loaded: every refusal comes first), and a fresh FIDKIT_HOME."""
    monkeypatch.setenv("FIDKIT_HOME", str(tmp_path / "home"))
    path = tmp_path / "weights" / "w.pth"
    path.parent.mkdir()
    path.write_bytes(b"not really weights" * 100)
    monkeypatch.setenv("FIDKIT_WEIGHTS", str(path))
    return path


def _image_folder(folder: Path, n: int = 4) -> Path:
    (folder / "sub").mkdir(parents=True)
    for index in range(n):
        where = folder / "sub" if index % 2 else folder
        Image.fromarray(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(where / f"{index:03d}.png")
    return folder


def _assert_refused_as_input(status: int, err: str, path: Path | str, *also: str) -> None:
    assert status == 1, err
    line = next(line for line in err.splitlines() if line.startswith("fidkit: error:"))
    assert str(path) in line and "input of this run" in line and "--save" in line, line
    for text in also:
        assert text in line, line


# --- 1: --save never replaces a file the run reads --------------------------------------------------------


@pytest.mark.parametrize("command", ["stats", "features"])
def test_save_over_an_image_of_a_folder_source_is_refused_even_with_force(tmp_path, dummy_weights, capsys, command):
    folder = _image_folder(tmp_path / "images")
    for member in (folder / "000.png", folder / "sub" / "001.png", folder / "sub" / ".." / "002.png"):
        before = member.read_bytes()
        status, out, err = _run([command, str(folder), "--save", str(member), "--force", "--quiet"], capsys)
        _assert_refused_as_input(status, err, member, "choose")
        assert out == "" and member.read_bytes() == before


def test_a_link_or_hard_link_to_an_image_of_the_folder_is_that_image(tmp_path, dummy_weights, capsys):
    folder = _image_folder(tmp_path / "images")
    outside = tmp_path / "elsewhere.png"  # read by the run through the link inside the folder
    Image.fromarray(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(outside)
    (folder / "linked.png").symlink_to(outside)
    hard = tmp_path / "hard.npz"
    os.link(folder / "sub" / "003.png", hard)
    for target in (outside, hard):
        before = target.read_bytes()
        status, _, err = _run(["stats", str(folder), "--save", str(target), "--force", "--quiet"], capsys)
        _assert_refused_as_input(status, err, target)
        assert target.read_bytes() == before


def test_files_of_the_folder_that_the_run_does_not_read_stay_writable(tmp_path):
    folder = _image_folder(tmp_path / "images")
    (folder / "stats.npz").write_bytes(b"an earlier result")
    (folder / ".hidden").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / ".hidden" / "x.png")
    for output in (folder / "stats.npz", folder / ".hidden" / "x.png", folder / "new.npz", tmp_path / "out.npz"):
        refuse_outputs_over_inputs([output], str(folder), what="--save")
    with pytest.raises(OverwriteError, match="input of this run"):
        refuse_outputs_over_inputs([folder / "sub" / "001.png"], str(folder), what="--save")


def test_a_missing_output_path_does_not_list_the_folder(tmp_path, monkeypatch):
    # Nothing there, nothing to destroy: a folder of 50,000 images is not walked for a new file.
    import fidkit.sources.outputs as sources

    folder = _image_folder(tmp_path / "images")

    def walked(*args, **kwargs):
        raise AssertionError("the folder was listed")

    monkeypatch.setattr(sources, "_folder_members", walked)
    refuse_outputs_over_inputs([tmp_path / "new.npz"], str(folder), what="--save")
    refuse_outputs_over_inputs([folder / "new.png"], str(folder), what="--save")


def test_the_save_check_looks_at_exactly_the_images_the_folder_source_reads(tmp_path):
    # One walk serves both: a file is an image of the run exactly when the folder source lists it, through links to
    # files and folders, loops, hidden folders, other suffixes and special files alike.
    import fidkit.sources.outputs as sources
    from fidkit.sources import open_source

    folder = _image_folder(tmp_path / "images")
    outside = _image_folder(tmp_path / "outside")
    (folder / "linked-folder").symlink_to(outside, target_is_directory=True)
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)
    (folder / "file-link.png").symlink_to(outside / "000.png")
    (folder / ".hidden").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / ".hidden" / "x.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "anim.gif")
    (folder / "notes.txt").write_text("not an image")
    os.mkfifo(folder / "pipe.png")
    every_file = {
        (info.st_dev, info.st_ino): path
        for root in (folder, outside)
        for path in root.rglob("*")
        if (info := path.stat() if path.is_file() else None) is not None
    }
    found = {member for member, _ in sources._folder_members(folder, every_file)}
    assert found == set(open_source(str(folder)).members)
    assert "file-link.png" in found and "linked-folder/001.png" not in found  # outside/sub/001.png
    assert "linked-folder/000.png" in found and ".hidden/x.png" not in found and "anim.gif" not in found


def test_a_run_folder_with_its_outputs_in_place_lists_the_data_folder_once(tmp_path, monkeypatch):
    # fidkit ttur --compare --resume over a data folder of 50,000 images: one walk for all of the command's existing
    # output files (five PNGs among them), not one per file.
    import fidkit.sources.outputs as sources
    from fidkit.ttur.config import check_output_files
    from fidkit.ttur.run_files import COMPARE_OUTPUT_NAMES, RUN_OUTPUT_NAMES

    data = _image_folder(tmp_path / "data")
    out = tmp_path / "out"
    folders = {out: COMPARE_OUTPUT_NAMES, out / "ttur": RUN_OUTPUT_NAMES, out / "one-time-scale": RUN_OUTPUT_NAMES}
    for folder, names in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            (folder / name).write_bytes(b"an earlier output")
    walks = []
    walk = sources.iter_folder_images

    def counted(*args, **kwargs):
        walks.append(args[0])
        return walk(*args, **kwargs)

    monkeypatch.setattr(sources, "iter_folder_images", counted)
    check_output_files(folders, inputs=(str(data), str(data)))
    assert len(walks) == 1
    # And one of them being an image of the data is still found, whichever it is.
    (out / "ttur" / RUN_OUTPUT_NAMES[-1]).unlink()
    os.link(data / "sub" / "001.png", out / "ttur" / RUN_OUTPUT_NAMES[-1])
    with pytest.raises(OverwriteError, match="the image sub/001.png of the input folder"):
        check_output_files(folders, inputs=(str(data),))


def test_save_over_a_batch_of_a_cifar_folder_is_refused(tmp_path, dummy_weights, capsys):
    from fidkit.testing import cifar_batch

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for index in range(1, 6):
        (folder / f"data_batch_{index}").write_bytes(cifar_batch(RNG.integers(0, 256, (2, 32, 32, 3), np.uint8)))
    target = folder / "data_batch_3"
    before = target.read_bytes()
    status, _, err = _run(["stats", str(folder), "--save", str(target), "--force", "--quiet"], capsys)
    _assert_refused_as_input(status, err, target)
    assert target.read_bytes() == before


def test_save_over_the_weights_of_the_run_is_refused(tmp_path, dummy_weights, capsys, monkeypatch):
    source = tmp_path / "images.npy"
    np.save(source, RNG.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8))
    explicit = tmp_path / "mine.pth"
    explicit.write_bytes(b"other weights")
    hard = tmp_path / "hard.pth"
    os.link(dummy_weights, hard)
    cases = [
        (["--weights", str(explicit)], explicit),  # --weights
        ([], dummy_weights),  # $FIDKIT_WEIGHTS
        ([], hard),  # a hard link to it
    ]
    for command in ("stats", "features"):
        for options, target in cases:
            before = target.read_bytes()
            argv = [command, str(source), "--save", str(target), "--force", "--quiet", *options]
            status, _, err = _run(argv, capsys)
            _assert_refused_as_input(status, err, target, "weights")
            assert target.read_bytes() == before
    # No --weights and no $FIDKIT_WEIGHTS: the cached weights file the run would load.
    from fidkit.inception.weights import load_manifest, weights_cache_dir

    monkeypatch.delenv("FIDKIT_WEIGHTS")
    cached = weights_cache_dir() / load_manifest().file_name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"cached weights")
    status, _, err = _run(["stats", str(source), "--save", str(cached), "--force", "--quiet"], capsys)
    _assert_refused_as_input(status, err, cached, "weights")
    assert cached.read_bytes() == b"cached weights"


# --- 2: --json's warnings hold every warning printed on stderr ---------------------------------------------


def _features_file(path: Path, n: int, dim: int, *, scale: float = 1.0) -> Path:
    rng = np.random.default_rng(n)
    Features(
        rng.normal(size=(n, dim)) * scale, metadata={"feature_extractor": "test"},
        logits=rng.normal(size=(n, 10)), spatial=rng.normal(size=(n, dim + 4)),
    ).save(path)
    return path


def _stderr_warnings(err: str) -> list[str]:
    prefix = "fidkit: warning: "
    return [line[len(prefix):] for line in err.splitlines() if line.startswith(prefix)]


def test_json_warnings_hold_every_warning_printed_on_stderr(tmp_path, capsys):
    a, b = _features_file(tmp_path / "a.npz", 12, 16), _features_file(tmp_path / "b.npz", 14, 16)
    argv = ["compute", str(a), str(b), "--metrics", "fid,sfid,kid", "--limit", "5", "--seed", "2", "--json", "--quiet"]
    status, out, err = _run(argv, capsys)
    assert status == 0, err
    printed = _stderr_warnings(err)
    reported = json.loads(out)["warnings"]
    assert any("limit/seed do not apply" in text for text in printed)
    assert any("dim = 20 features" in text for text in printed)  # sFID's spatial features, N below their dim
    assert [text for text in reported if text in printed] == printed  # all of them, in the order printed
    assert len(reported) == len(set(reported))  # once each
    status, out, err = _run(["compute", str(a), str(b), "--seed", "7", "--json", "--quiet"], capsys)
    assert status == 0 and any("seed 7 without limit" in text for text in json.loads(out)["warnings"])


def test_stats_json_lists_its_warnings(tmp_path, capsys):
    stats = tmp_path / "s.npz"
    Stats(mu=np.zeros(3), sigma=np.eye(3), n=20).save(stats)
    status, out, err = _run(["stats", str(stats), "--limit", "4", "--json", "--quiet"], capsys)
    assert status == 0, err
    printed = _stderr_warnings(err)
    assert printed and json.loads(out)["warnings"] == printed
    status, out, _ = _run(["stats", str(stats), "--json", "--quiet"], capsys)
    assert json.loads(out)["warnings"] == []


# --- 3: a failed write of the result to stdout --------------------------------------------------------------


def _fidkit(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "fidkit", *argv], env=env, timeout=120, **kwargs)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_stdout_is_not_reported_as_a_failed_save(tmp_path):
    stats, out = tmp_path / "s.npz", tmp_path / "copy.npz"
    Stats(mu=np.zeros(3), sigma=np.eye(3), n=20).save(stats)
    with open("/dev/full", "w") as full:
        result = _fidkit(["stats", str(stats), "--save", str(out), "--quiet"], stdout=full, stderr=subprocess.PIPE,
                         text=True)
    assert result.returncode == 1
    assert "cannot write the result to stdout" in result.stderr and "No space left on device" in result.stderr
    assert f"{out} was saved" in result.stderr, result.stderr  # the save itself is complete, and said so
    assert Stats.load(out).n == 20


def test_a_reader_that_goes_away_stays_quiet(tmp_path):
    stats = tmp_path / "s.npz"
    Stats(mu=np.zeros(3), sigma=np.eye(3), n=20).save(stats)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    process = subprocess.Popen([sys.executable, "-m", "fidkit", "info", str(stats), "--json"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before anything is written
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and err == ""


# --- 4: a --save path that names a folder -------------------------------------------------------------------


@pytest.mark.parametrize("command", ["stats", "features"])
@pytest.mark.parametrize("suffix", ["/", "/.", os.sep + os.sep])
def test_a_save_path_ending_with_a_separator_is_refused(tmp_path, capsys, command, suffix):
    source = _features_file(tmp_path / "f.npz", 5, 3)  # a source of both commands that runs no network
    target = tmp_path / "newdir"
    status, out, err = _run([command, str(source), "--save", f"{target}{suffix}", "--quiet"], capsys)
    assert status != 0 and out == "" and not target.exists(), err
    assert "--save" in err and "name the file" in err and str(target) in err


# --- 5: seeds are checked by argparse ----------------------------------------------------------------------


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


# --- 6: KID's capped subset size is a debug line ------------------------------------------------------------


def test_kid_capping_its_subset_size_is_not_an_info_line(caplog):
    from fidkit.metrics.kid import kid

    rng = np.random.default_rng(0)
    with caplog.at_level(logging.DEBUG, logger="fidkit"):
        result = kid(rng.normal(size=(20, 4)), rng.normal(size=(25, 4)), subset_size=1000, subsets=3)
    capped = [record for record in caplog.records if "capped" in record.getMessage()]
    assert capped and all(record.levelno == logging.DEBUG for record in capped)
    assert result.subset_size == 20


# --- 7: the text table never prints a non-finite number -----------------------------------------------------


def test_the_metrics_table_prints_no_non_finite_number(tmp_path, capsys):
    huge, other = _features_file(tmp_path / "huge.npz", 12, 6, scale=1e35), _features_file(tmp_path / "b.npz", 14, 6)
    status, out, err = _run(["compute", str(huge), str(other), "--metrics", "kid", "--quiet"], capsys)
    assert status == 0, err
    assert "inf" not in out.lower() and "nan" not in out.lower(), out
    assert "n/a" in out  # KID's std overflows: said so in its cell
    status, out, _ = _run(["compute", str(huge), str(other), "--metrics", "kid", "--json", "--quiet"], capsys)
    assert json.loads(out)["metrics"]["entries"]["kid"]["std"] is None
    # fidkit info: a metadata value that is not finite is "n/a" too (JSON has null).
    noted = tmp_path / "noted.npz"
    Stats(mu=np.zeros(3), sigma=np.eye(3), n=5, metadata={"note": float("nan"), "big": float("-inf")}).save(noted)
    status, out, _ = _run(["info", str(noted)], capsys)
    assert status == 0 and "nan" not in out.lower() and "inf" not in out.lower().replace("info", ""), out


def test_format_table_writes_n_a_for_every_non_finite_cell():
    from fidkit.metrics._table_results import Interval, MetricEntry
    from fidkit.metrics.table import IntervalSpec, MetricTable

    inf, nan = float("inf"), float("nan")
    interval = Interval(low=-inf, high=nan, level=0.95, method="half-sample", std=inf, shift=nan, n_resamples=3,
                        seed=1)
    entries = (
        MetricEntry(key="kid", label="KID", metric="kid", value=inf, std=nan, interval=interval,
                    details=(("subsets", 3), ("subset_size", 5))),
        MetricEntry(key="is_a", label="IS (a)", metric="is", value=nan, std=inf, interval=interval,
                    details=(("splits", 2),)),
        MetricEntry(key="fid", label="FID", metric="fid", value=1.0, interval=interval),
    )
    table = MetricTable(entries=entries, metrics=("fid", "kid", "is"), n_a=5, n_b=5, seed=0,
                        ci=IntervalSpec(n_resamples=3))
    text = table.format().lower()
    assert "inf" not in text and "nan" not in text, text
    assert text.count("n/a") >= 7


# --- 8: a statistics file without N -------------------------------------------------------------------------


def test_stats_of_a_file_without_n_says_it_is_unknown(tmp_path, capsys):
    foreign = tmp_path / "ttur.npz"
    np.savez(foreign, mu=np.zeros(4), sigma=np.eye(4))  # what TTUR writes: mu and sigma only
    for extra in ([], ["--save", str(tmp_path / "copy.npz")]):
        status, out, err = _run(["stats", str(foreign), "--quiet", *extra], capsys)
        assert status == 0, err
        assert "None" not in out and "N unknown" in out, out


def test_an_existing_output_that_cannot_be_an_image_does_not_list_the_folder(tmp_path, monkeypatch):
    # out.npz with one link is not an image the folder lists by name: no walk of 50,000 stats for it. A hard link
    # to an image (hard.npz in the test above) has two links and is still looked for.
    import fidkit.sources.outputs as sources

    folder = _image_folder(tmp_path / "images")
    (tmp_path / "out.npz").write_bytes(b"an earlier result")
    (folder / "stats.npz").write_bytes(b"an earlier result")

    def walked(*args, **kwargs):
        raise AssertionError("the folder was listed")

    monkeypatch.setattr(sources, "_folder_members", walked)
    refuse_outputs_over_inputs([tmp_path / "out.npz"], str(folder), what="--save")
    refuse_outputs_over_inputs([folder / "stats.npz"], str(folder), what="--save")
    os.link(folder / "sub" / "001.png", tmp_path / "hard.npz")
    with pytest.raises(AssertionError, match="listed"):
        refuse_outputs_over_inputs([tmp_path / "hard.npz"], str(folder), what="--save")


def test_the_blob_an_image_link_points_to_is_still_looked_for(tmp_path):
    # Content-addressed stores (a hub cache): images are links to blobs named by their hash, without a suffix.
    folder = _image_folder(tmp_path / "images")
    blob = tmp_path / "blobs" / "3f2a9c"
    blob.parent.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(blob, format="PNG")
    (folder / "linked.png").symlink_to(blob)
    with pytest.raises(OverwriteError, match="input of this run"):
        refuse_outputs_over_inputs([blob], str(folder), what="--save")
