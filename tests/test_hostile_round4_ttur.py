"""Hostile review, round 4: ``fidkit ttur`` / ``fidkit validate`` run folders.

Resuming what an interruption left (a compare stopped in its second run, a run stopped before its
first checkpoint), an ``--out`` over the data, output-folder problems found before any work,
``--train-batch-size 1``, ``--resume`` with fewer steps than done, the help's list of files.

No Inception network: a stub extractor (features are the pixels) on a tiny ``.npy``, so each test
takes about a second; the numbers say nothing about FID, the tests check the machinery.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest

import fidkit
from fidkit.errors import InputError, OverwriteError
from fidkit.ttur.config import TTURConfig
from fidkit.ttur.run_files import COMPARE_OUTPUT_NAMES, RUN_OUTPUT_NAMES, load_checkpoint
from fidkit.ttur.runs import run_compare, run_ttur

REPO_ROOT = Path(__file__).resolve().parent.parent


class PixelExtractor:
    """No network: an image's features are its pixels, tiled to the feature dimension."""

    batch_size = 50
    feature_dim = fidkit.FEATURE_DIM

    def __call__(self, images):
        flat = images.reshape(images.shape[0], -1).astype(np.float32)
        repeats = -(-self.feature_dim // flat.shape[1])
        return np.tile(flat, (1, repeats))[:, : self.feature_dim]

    def metadata(self):
        return {"weights_sha256": "pixels", "resize_mode": "none"}


@pytest.fixture(autouse=True)
def _quiet_weights_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fidkit.FidkitWarning)
        yield


@pytest.fixture
def images_npy(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "digits.npy"
    path.parent.mkdir()
    np.save(path, np.random.default_rng(7).integers(0, 256, (24, 28, 28), dtype=np.uint8))
    return path


def small_config(data: Path, out: Path, **overrides) -> TTURConfig:
    values = dict(
        data=str(data), out=out, steps=2, eval_every=1, eval_samples=6, ref_samples=12,
        train_samples=24, train_batch_size=4, device="cpu", width=8, latent_dim=8,
    )
    values.update(overrides)
    return TTURConfig(**values)


def interrupt_at(run_name: str | None = None):
    """An on_eval callback that stops the run like Ctrl-C at the first evaluation (of `run_name`)."""

    def on_eval(*arguments):
        if run_name is None or arguments[0] == run_name:
            raise KeyboardInterrupt("simulated Ctrl-C")

    return on_eval


def history(rows):
    return [(row["step"], row["fid"], row["loss_d"], row["loss_g"]) for row in rows]


# -- 1. what an interruption leaves can be resumed ---------------------------------------------------


def test_compare_stopped_in_its_second_run_resumes_both(images_npy, tmp_path, caplog):
    out = tmp_path / "cmp"
    with pytest.raises(KeyboardInterrupt):
        run_compare(small_config(images_npy, out), extractor=PixelExtractor(),
                    on_eval=interrupt_at("one-time-scale"))
    assert (out / "ttur" / "checkpoint.pt").exists()
    assert (out / "one-time-scale" / "config.json").exists()
    assert not (out / "one-time-scale" / "checkpoint.pt").exists()
    # Without --resume the folder is in use, as before.
    with pytest.raises(OverwriteError, match="--resume"):
        run_compare(small_config(images_npy, out), extractor=PixelExtractor())

    with caplog.at_level(logging.WARNING, logger="fidkit.ttur"):
        resumed = run_compare(small_config(images_npy, out, steps=3), resume=True, extractor=PixelExtractor())
    assert "one-time-scale has no checkpoint.pt" in caplog.text and "step 0" in caplog.text
    assert resumed.runs["ttur"].resumed_from_step == 2
    assert resumed.runs["one-time-scale"].resumed_from_step == 0
    for name in ("ttur", "one-time-scale"):
        assert [row["step"] for row in resumed.runs[name].rows] == [1, 2, 3]
        assert load_checkpoint(out / name / "checkpoint.pt")["step"] == 3
    assert (out / "compare.png").exists()

    # Both runs are what one uninterrupted compare gives.
    straight = run_compare(small_config(images_npy, tmp_path / "straight", steps=3), extractor=PixelExtractor())
    for name in ("ttur", "one-time-scale"):
        assert history(resumed.runs[name].rows) == history(straight.runs[name].rows), name


def test_compare_stopped_before_its_second_run_began_starts_it_with_its_own_rule(images_npy, tmp_path):
    out = tmp_path / "cmp"
    run_compare(small_config(images_npy, out, lr_d=3e-4, lr_g=2e-4), extractor=PixelExtractor())
    for path in (out / "one-time-scale").iterdir():
        path.unlink()
    (out / "one-time-scale").rmdir()
    # The command line's rates are not the runs': the missing run gets the other's, with its rule.
    resumed = run_compare(small_config(images_npy, out), resume=True, extractor=PixelExtractor())
    baseline = resumed.runs["one-time-scale"]
    assert baseline.resumed_from_step == 0 and [row["step"] for row in baseline.rows] == [1, 2]
    assert baseline.config.one_time_scale
    assert (baseline.config.effective_lr_d, baseline.config.effective_lr_g) == (2e-4, 2e-4)
    assert json.loads((out / "one-time-scale" / "config.json").read_text())["lr_d"] == 3e-4


def test_compare_resume_checks_a_config_json_run_against_the_other(images_npy, tmp_path):
    out = tmp_path / "cmp"
    with pytest.raises(KeyboardInterrupt):
        run_compare(small_config(images_npy, out), extractor=PixelExtractor(),
                    on_eval=interrupt_at("one-time-scale"))
    path = out / "one-time-scale" / "config.json"
    stored = json.loads(path.read_text())
    path.write_text(json.dumps({**stored, "train_samples": 20}))
    with pytest.raises(InputError, match="different data settings: train_samples"):
        run_compare(small_config(images_npy, out), resume=True, extractor=PixelExtractor())


def test_run_stopped_before_its_first_checkpoint_resumes_from_step_0(images_npy, tmp_path, caplog):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_ttur(small_config(images_npy, out, lr_d=3e-4), extractor=PixelExtractor(), on_eval=interrupt_at())
    assert sorted(path.name for path in out.iterdir()) == ["config.json"]
    with pytest.raises(OverwriteError, match="config.json"):
        run_ttur(small_config(images_npy, out), extractor=PixelExtractor())

    # The stored settings are used (as a checkpoint's are), not the command line's rate.
    with caplog.at_level(logging.WARNING, logger="fidkit.ttur"):
        resumed = run_ttur(small_config(images_npy, out, lr_d=1e-3), resume=True, extractor=PixelExtractor())
    assert "run has no checkpoint.pt" in caplog.text and "step 0" in caplog.text
    assert resumed.resumed_from_step == 0 and resumed.config.lr_d == 3e-4
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2
    straight = run_ttur(small_config(images_npy, tmp_path / "straight", lr_d=3e-4), extractor=PixelExtractor())
    assert history(resumed.rows) == history(straight.rows)


def test_resume_refuses_a_config_json_that_is_not_a_run_and_a_run_that_lost_its_checkpoint(images_npy, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text('{"theme": "dark"}\n')
    with pytest.raises(InputError, match=re.escape(str(out / "config.json"))):
        run_ttur(small_config(images_npy, out), resume=True, extractor=PixelExtractor())
    assert (out / "config.json").read_text() == '{"theme": "dark"}\n'

    done = tmp_path / "done"
    run_ttur(small_config(images_npy, done), extractor=PixelExtractor())
    (done / "checkpoint.pt").unlink()
    with pytest.raises(InputError, match="nothing to resume"):
        run_ttur(small_config(images_npy, done), resume=True, extractor=PixelExtractor())

    # Kept without its checkpoint and images (a copy of the small files only): its results are not restarted over.
    for name in ("samples.png", "fid.png"):
        (done / name).unlink()
    before = (done / "metrics.csv").read_bytes()
    with pytest.raises(InputError, match="metrics.csv does: the run went past its first checkpoint"):
        run_ttur(small_config(images_npy, done, steps=1), resume=True, extractor=PixelExtractor())
    assert (done / "metrics.csv").read_bytes() == before


# -- 2. --out over the data -------------------------------------------------------------------------


@pytest.fixture
def png_folder(tmp_path: Path) -> Path:
    from PIL import Image

    folder = tmp_path / "pngs"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for index in range(6):
        Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    return folder


def test_out_in_the_data_folder_is_refused(png_folder, images_npy, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(png_folder, target_is_directory=True)
    for out in (png_folder, png_folder / "runs" / "a", link, link / "sub"):
        with pytest.raises(InputError, match=re.escape(f"--data folder {png_folder}")):
            TTURConfig(data=str(png_folder), out=out)
    with pytest.raises(InputError, match=r"--out .*digits\.npy is the --data file .*digits\.npy itself"):
        TTURConfig(data=str(images_npy), out=images_npy)
    hard_link = tmp_path / "same.npy"
    os.link(images_npy, hard_link)
    with pytest.raises(InputError, match="is the --data file"):
        TTURConfig(data=str(images_npy), out=hard_link)
    # A compare whose run folder would be the data folder (--out itself holds the data).
    cmp = tmp_path / "cmp"
    (cmp / "ttur").mkdir(parents=True)
    (cmp / "ttur" / "0.png").write_bytes((png_folder / "0.png").read_bytes())
    with pytest.raises(InputError, match=re.escape(f"--out {cmp / 'ttur'} is the --data folder")):
        run_compare(TTURConfig(data=str(cmp / "ttur"), out=cmp, device="cpu"))
    # Beside the data, or holding it, is fine.
    TTURConfig(data=str(png_folder), out=tmp_path / "run")
    TTURConfig(data=str(png_folder / "0.png"), out=tmp_path / "run")


def test_resume_checks_out_against_the_stored_data(png_folder, images_npy, tmp_path):
    # The command line's --data is ignored when resuming: the run's own data folder is checked.
    run_ttur(small_config(png_folder, tmp_path / "run", train_samples=6, ref_samples=6),
             extractor=PixelExtractor())
    moved = png_folder / "run"
    (tmp_path / "run").rename(moved)
    before = {path.name: path.read_bytes() for path in moved.iterdir()}
    with pytest.raises(InputError, match=re.escape(f"--out {moved} lies inside the --data folder {png_folder}")):
        run_ttur(small_config(images_npy, moved, steps=3), resume=True, extractor=PixelExtractor())
    assert {path.name: path.read_bytes() for path in moved.iterdir()} == before


def test_cli_ttur_and_validate_refuse_an_out_in_their_input(png_folder, tmp_path, capsys):
    from fidkit.cli import main

    (png_folder / "samples.png").write_bytes(b"mine")
    before = sorted(path.name for path in png_folder.iterdir())
    status = main(["ttur", "--data", str(png_folder), "--out", str(png_folder), "--force", "--device", "cpu"])
    error = capsys.readouterr().err
    assert status == 1 and f"--out {png_folder} is the --data folder {png_folder} itself" in error
    assert "outside" in error
    status = main(["validate", str(png_folder), "--out", str(png_folder / "v"), "--device", "cpu"])
    error = capsys.readouterr().err
    assert status == 1 and f"lies inside the SRC folder {png_folder}" in error
    other = tmp_path / "other"
    other.mkdir()
    status = main(["validate", str(other), "--out", str(png_folder), "--contaminate", str(png_folder),
                   "--device", "cpu"])
    assert status == 1 and "--contaminate folder" in capsys.readouterr().err
    assert sorted(path.name for path in png_folder.iterdir()) == before
    assert (png_folder / "samples.png").read_bytes() == b"mine"


# -- 3. output-folder problems before any work -------------------------------------------------------


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if any data is loaded."""
    from fidkit.ttur import runs, validate

    def refuse(*arguments, **options):
        raise AssertionError("data loaded before the output folder was checked")

    monkeypatch.setattr(runs, "load_training_data", refuse)
    monkeypatch.setattr(validate, "load_images", refuse)


def test_an_out_under_a_file_is_refused_before_any_work(images_npy, tmp_path, no_work, capsys):
    from fidkit.cli import main
    from fidkit.ttur.validate import ValidateConfig, run_validation

    a_file = tmp_path / "afile"
    a_file.write_text("x")
    with pytest.raises(InputError, match=re.escape(f"{a_file} is a file, not a folder")):
        run_validation(ValidateConfig(source=str(images_npy), out=a_file / "sub"))
    with pytest.raises(InputError, match=re.escape(f"--out {a_file / 'sub'}")):
        run_ttur(small_config(images_npy, a_file / "sub"))
    with pytest.raises(InputError, match=re.escape(f"--out {a_file / 'sub'}")):
        run_compare(small_config(images_npy, a_file / "sub"))
    status = main(["validate", str(images_npy), "--out", str(a_file / "sub"), "--device", "cpu"])
    error = capsys.readouterr().err
    assert status == 1 and str(a_file) in error and "Errno" not in error


def test_a_link_at_an_output_name_is_refused_before_any_work_even_with_force(images_npy, tmp_path, no_work):
    from fidkit.ttur.validate import ValidateConfig, run_validation

    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.csv").write_text("mine\n")
    (tmp_path / "target.png").write_bytes(b"target")
    (out / "fid.png").symlink_to(tmp_path / "target.png")
    with pytest.raises(OverwriteError, match=re.escape(f"{out / 'fid.png'} is a symbolic link")):
        run_ttur(small_config(images_npy, out), force=True)
    assert (out / "metrics.csv").read_text() == "mine\n"
    assert not (out / "checkpoint.pt").exists()

    cmp = tmp_path / "cmp"
    (cmp / "one-time-scale").mkdir(parents=True)
    (cmp / "one-time-scale" / "samples.png").symlink_to(tmp_path / "target.png")
    with pytest.raises(OverwriteError, match="symbolic link"):
        run_compare(small_config(images_npy, cmp), force=True)
    assert not (cmp / "ttur").exists()

    report = tmp_path / "v"
    report.mkdir()
    (report / "validate.json").symlink_to(tmp_path / "target.png")
    with pytest.raises(OverwriteError, match="symbolic link"):
        run_validation(ValidateConfig(source=str(images_npy), out=report), force=True)
    assert (tmp_path / "target.png").read_bytes() == b"target"


# -- 4. --train-batch-size 1 -------------------------------------------------------------------------


def test_train_batch_size_below_two_is_a_usage_error(images_npy, tmp_path, capsys):
    from fidkit.cli import main

    out = tmp_path / "tb"
    status = main(["ttur", "--data", str(images_npy), "--out", str(out), "--train-batch-size", "1",
                   "--device", "cpu"])
    assert status == 2
    assert "--train-batch-size" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(InputError, match="train_batch_size must be at least 2"):
        small_config(images_npy, out, train_batch_size=1)


# -- 5. --resume --steps below the steps done --------------------------------------------------------


@pytest.mark.parametrize("compare", [False, True])
def test_resume_with_fewer_steps_than_done_is_refused_untouched(images_npy, tmp_path, compare):
    out = tmp_path / "run"
    run = run_compare if compare else run_ttur
    run(small_config(images_npy, out, steps=3), extractor=PixelExtractor())
    files = sorted(path for path in out.rglob("*") if path.is_file())
    before = {path: path.read_bytes() for path in files}
    checkpoint = out / "ttur" / "checkpoint.pt" if compare else out / "checkpoint.pt"
    with pytest.raises(InputError) as caught:
        run(small_config(images_npy, out, steps=2), resume=True, extractor=PixelExtractor())
    message = str(caught.value)
    assert f"{checkpoint} is at step 3" in message and "--steps above 3" in message
    assert {path: path.read_bytes() for path in files} == before
    # A larger total trains on.
    result = run(small_config(images_npy, out, steps=4), resume=True, extractor=PixelExtractor())
    for each in (result.runs.values() if compare else [result]):
        assert [row["step"] for row in each.rows] == [1, 2, 3, 4]


# -- 6. the help names every file that makes --out "in use" -------------------------------------------


def test_ttur_help_names_every_file_that_makes_out_in_use(capsys):
    from fidkit.cli import main

    assert main(["ttur", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    description = text[: text.index("TTUR: Adam")]
    for name in RUN_OUTPUT_NAMES + COMPARE_OUTPUT_NAMES:
        assert name in description, name
    assert '"in use"' in description


# -- 7. docs/metrics.md: the network gives the logits ------------------------------------------------


def test_metrics_doc_does_not_say_the_logits_must_be_applied_by_the_caller():
    text = " ".join((REPO_ROOT / "docs" / "metrics.md").read_text(encoding="utf-8").split())
    which_logits = text[text.index("**Which logits.**"): text.index("**Shuffle.**")]
    assert "pool_3 only" not in which_logits and "to be wired in" not in which_logits
    assert "logits" in which_logits and "--metrics is" in which_logits
