"""What a run writes: ``--save`` never replaces a file the run reads (an image of a folder source, a CIFAR batch of a
CIFAR folder, the weights, its own input; through links and hard links alike), nor anything but a regular file,
and a path that names a folder is refused.

No test here runs the network: the refusals come before it. The groups below came from the hostile-input reviews
(the issue 9 review, rounds 3 and 4), whose item numbers they keep.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fidkit.cli import main
from fidkit.errors import OverwriteError
from fidkit.sources import refuse_outputs_over_inputs

from cli_runs import _assert_one_line_error, _run, _run_cli, error_line
from stand_ins import _features_file, small_stats


# --- hostile review (issue 9), 5: --save --force replaces only a regular file ---------------------------------------


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


# --- hostile round 3, 17: stats --save never replaces its input -----------------------------------------------------


RNG = np.random.default_rng(2024)


def _images_npy(path: Path) -> bytes:
    np.save(path, RNG.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8))
    return path.read_bytes()


@pytest.mark.parametrize("alias", ["same", "relative", "dotted", "absolute", "symlink", "hardlink"])
def test_stats_save_over_its_input_is_refused_naming_both(tmp_path, monkeypatch, capsys, alias):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    original = _images_npy(tmp_path / "images.npy")
    output = {
        "same": "images.npy",
        "relative": "sub/../images.npy",
        "dotted": "./images.npy",
        "absolute": str(tmp_path / "images.npy"),
        "symlink": "link.npy",
        "hardlink": "hard.npy",
    }[alias]
    if alias == "symlink":
        os.symlink("images.npy", "link.npy")
    if alias == "hardlink":
        os.link("images.npy", "hard.npy")
    for extra in ([], ["--force"]):
        status, err = _run_cli(["stats", "images.npy", "--save", output, *extra, "--quiet"], capsys)
        # (argparse's Path drops a leading "./")
        _assert_one_line_error(status, err, f"--save {os.path.normpath(output) if alias == 'dotted' else output}",
                               "the input images.npy")
        assert (tmp_path / "images.npy").read_bytes() == original


def test_refuse_output_over_input_leaves_other_outputs_and_inputs_alone(tmp_path):
    _images_npy(tmp_path / "images.npy")
    refuse_outputs_over_inputs([tmp_path / "stats.npz"], str(tmp_path / "images.npy"))
    refuse_outputs_over_inputs([tmp_path / "stats.npz"], np.zeros((2, 4, 4, 3), np.uint8), "no-such-file")
    with pytest.raises(OverwriteError, match="images.npy"):
        refuse_outputs_over_inputs([tmp_path / "images.npy"], "other", tmp_path / "images.npy")


# --- hostile round 4, 1: --save never replaces a file the run reads -------------------------------------------------


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


# --- hostile round 4, 4: a --save path that names a folder ----------------------------------------------------------


@pytest.mark.parametrize("command", ["stats", "features"])
@pytest.mark.parametrize("suffix", ["/", "/.", os.sep + os.sep])
def test_a_save_path_ending_with_a_separator_is_refused(tmp_path, capsys, command, suffix):
    source = _features_file(tmp_path / "f.npz", 5, 3)  # a source of both commands that runs no network
    target = tmp_path / "newdir"
    status, out, err = _run([command, str(source), "--save", f"{target}{suffix}", "--quiet"], capsys)
    assert status != 0 and out == "" and not target.exists(), err
    assert "--save" in err and "name the file" in err and str(target) in err
