"""The reference TTUR trainer: models, seeded training, in-memory FID, CSV/plot/checkpoint, resume.

Everything runs on random Inception weights at tiny sizes (6 generated images per FID, 1-4 steps):
the numbers say nothing about FID as a metric; the tests check the machinery.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fidkit
from fidkit.errors import InputError, OverwriteError
from fidkit.ttur.config import TTURConfig
from fidkit.ttur.data import TrainingData, load_training_data
from fidkit.ttur.models import GANShape, build_models, upsampling_plan
from fidkit.ttur.run_files import COMPARE_OUTPUT_NAMES, RUN_OUTPUT_NAMES, load_checkpoint, read_metrics_csv
from fidkit.ttur.runs import run_compare, run_ttur
from fidkit.ttur.trainer import TTURTrainer, images_to_uint8_rgb

MNIST_TEST = "mnist/t10k-images-idx3-ubyte.gz"
CIFAR_ARRAY = "cifar10/cifar10-test-0-999-uint8.npy"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tiny_config(data: Path, out: Path, weights: Path, **overrides) -> TTURConfig:
    """Settings small enough for a 2-core CPU: 6 eval images, 10 reference images."""
    values = dict(
        data=str(data),
        out=out,
        steps=2,
        eval_every=2,
        eval_samples=6,
        ref_samples=10,
        train_samples=64,
        train_batch_size=8,
        device="cpu",
        weights=str(weights),
        width=16,
    )
    values.update(overrides)
    return TTURConfig(**values)


def synthetic_data(n_images: int = 32, channels: int = 1, size: int = 28) -> TrainingData:
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (n_images, channels, size, size), dtype=np.uint8))
    return TrainingData(images=images, grayscale=channels == 1, image_size=size, source_name="synthetic")


# -- models ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, plan", [(28, (7, 2)), (32, (4, 3)), (64, (4, 4)), (8, (4, 1))]
)
def test_upsampling_plan_reaches_the_image_size(size, plan):
    base, doublings = upsampling_plan(size)
    assert (base, doublings) == plan
    assert base * 2**doublings == size


@pytest.mark.parametrize("size", [5, 9, 27])
def test_upsampling_plan_rejects_unreachable_sizes(size):
    with pytest.raises(InputError):
        upsampling_plan(size)


@pytest.mark.parametrize("size, channels", [(28, 1), (32, 3)])
def test_models_map_noise_to_images_and_images_to_logits(size, channels):
    shape = GANShape(image_size=size, channels=channels, latent_dim=16, width=8)
    generator, discriminator = build_models(shape, seed=0)
    with torch.no_grad():
        images = generator(torch.randn(5, 16))
    assert images.shape == (5, channels, size, size)
    assert float(images.abs().max()) <= 1.0  # tanh output
    logits = discriminator(images)
    assert logits.shape == (5,)
    assert torch.isfinite(logits).all()


def test_model_initialisation_depends_only_on_the_seed():
    shape = GANShape(image_size=32, channels=3, latent_dim=8, width=8)
    torch.manual_seed(123)  # global RNG state must not matter
    first, _ = build_models(shape, seed=7)
    torch.manual_seed(456)
    second, _ = build_models(shape, seed=7)
    third, _ = build_models(shape, seed=8)
    for a, b, c in zip(first.parameters(), second.parameters(), third.parameters()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, c) for a, c in zip(first.parameters(), third.parameters()))


def test_generated_images_become_uint8_rgb():
    images = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 2, 2)
    pixels = images_to_uint8_rgb(images)
    assert pixels.dtype == np.uint8 and pixels.shape == (1, 2, 2, 3)
    assert pixels[0, :, :, 0].tolist() == [[0, 128], [255, 255]]
    assert np.array_equal(pixels[..., 0], pixels[..., 2])  # grayscale repeated


# -- training without FID --------------------------------------------------------------------


def test_config_rates_ttur_and_one_time_scale():
    ttur = TTURConfig(data="x", out=Path("o"))
    assert (ttur.effective_lr_d, ttur.effective_lr_g) == (4e-4, 1e-4)
    baseline = TTURConfig(data="x", out=Path("o"), one_time_scale=True)
    assert baseline.effective_lr_d == baseline.effective_lr_g == 1e-4
    trainer = TTURTrainer(
        TTURConfig(data="x", out=Path("o"), one_time_scale=True, lr_g=3e-4, width=8, device="cpu"),
        synthetic_data(),
    )
    assert trainer.optimizer_d.param_groups[0]["lr"] == trainer.optimizer_g.param_groups[0]["lr"] == 3e-4
    assert trainer.optimizer_d.param_groups[0]["betas"] == (0.5, 0.999)


@pytest.mark.parametrize("bad", [{"steps": 0}, {"eval_samples": 1}, {"lr_d": 0.0}, {"eval_every": 0}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(InputError):
        TTURConfig(data="x", out=Path("o"), **bad)


@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_seeded_training_repeats_exactly(channels, size):
    data = synthetic_data(channels=channels, size=size)
    config = TTURConfig(data="x", out=Path("o"), width=8, train_batch_size=8, device="cpu", seed=3)
    runs = []
    for _ in range(2):
        trainer = TTURTrainer(config, data)
        losses = [trainer.train_step() for _ in range(3)]
        runs.append((losses, trainer.generator.state_dict(), trainer.discriminator.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(math.isfinite(value) for pair in runs[0][0] for value in pair)
    for key, tensor in runs[0][1].items():
        assert torch.equal(tensor, runs[1][1][key]), key
    for key, tensor in runs[0][2].items():
        assert torch.equal(tensor, runs[1][2][key]), key

    other = TTURTrainer(TTURConfig(data="x", out=Path("o"), width=8, train_batch_size=8,
                                   device="cpu", seed=4), data)
    assert [other.train_step() for _ in range(3)] != runs[0][0]


def test_state_dict_round_trip_continues_identically():
    data = synthetic_data()
    config = TTURConfig(data="x", out=Path("o"), width=8, train_batch_size=8, device="cpu")
    straight = TTURTrainer(config, data)
    straight_losses = [straight.train_step() for _ in range(4)]

    first = TTURTrainer(config, data)
    first_losses = [first.train_step() for _ in range(2)]
    state = first.state_dict()
    second = TTURTrainer(config, data)
    second.load_state_dict(state)
    assert second.step == 2
    assert first_losses + [second.train_step() for _ in range(2)] == straight_losses


def test_load_training_data_infers_channels_and_size(shared_data, tmp_path):
    mnist = load_training_data(shared_data / MNIST_TEST, limit=16, seed=0)
    assert mnist.images.shape == (16, 1, 28, 28) and mnist.grayscale
    assert mnist.images.dtype == torch.uint8
    cifar = load_training_data(shared_data / CIFAR_ARRAY, limit=16, seed=0)
    assert cifar.images.shape == (16, 3, 32, 32) and not cifar.grayscale
    assert cifar.n_resized == 0

    rng = np.random.default_rng(0)
    odd_colour = rng.integers(0, 256, (4, 40, 48, 3), dtype=np.uint8)
    np.save(tmp_path / "odd.npy", odd_colour)
    resized = load_training_data(tmp_path / "odd.npy")
    assert resized.images.shape == (4, 3, 32, 32) and resized.n_resized == 4
    odd_gray = rng.integers(0, 256, (4, 20, 20), dtype=np.uint8)
    np.save(tmp_path / "gray.npy", odd_gray)
    assert load_training_data(tmp_path / "gray.npy").images.shape == (4, 1, 28, 28)


# -- runs with FID ---------------------------------------------------------------------------


def _weights(result_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(result_dir / "checkpoint.pt")["generator"]


@pytest.mark.slow
def test_run_writes_csv_plot_checkpoint_resumes_and_repeats(
    shared_data, extractor, random_weights_path, tmp_path
):
    data = shared_data / MNIST_TEST
    run_dir = tmp_path / "run"
    first = run_ttur(tiny_config(data, run_dir, random_weights_path), extractor=extractor)
    assert [row["step"] for row in first.rows] == [2]
    row = first.rows[0]
    assert all(math.isfinite(row[name]) for name in ("fid", "loss_d", "loss_g"))
    assert row["fid"] > 0
    assert read_metrics_csv(run_dir / "metrics.csv") == [
        {**row, "wall_time_s": pytest.approx(row["wall_time_s"], abs=1e-3)}
    ]
    assert (run_dir / "fid.png").read_bytes().startswith(PNG_SIGNATURE)
    # The sample grid: 8 x 8 cells of 28 x 28; the 6 eval images fill the first 6, the rest black.
    from PIL import Image

    grid = np.asarray(Image.open(run_dir / "samples.png"))
    assert grid.shape == (8 * 28, 8 * 28, 3)
    cells = grid.reshape(8, 28, 8, 28, 3).transpose(0, 2, 1, 3, 4).reshape(64, 28, 28, 3)
    assert [bool(cell.any()) for cell in cells] == [True] * 6 + [False] * 58
    assert json.loads((run_dir / "config.json").read_text())["effective_lr_d"] == 4e-4

    # An existing run is never overwritten by accident.
    with pytest.raises(OverwriteError, match="--resume"):
        run_ttur(tiny_config(data, run_dir, random_weights_path), extractor=extractor)

    resumed = run_ttur(
        tiny_config(data, run_dir, random_weights_path, steps=4), resume=True, extractor=extractor
    )
    assert resumed.resumed_from_step == 2
    assert [row["step"] for row in resumed.rows] == [2, 4]
    assert resumed.rows[0] == first.rows[0]  # earlier rows kept as they were
    assert [r["step"] for r in read_metrics_csv(run_dir / "metrics.csv")] == [2, 4]
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == 4
    assert resumed.rows[1]["wall_time_s"] >= resumed.rows[0]["wall_time_s"]

    # The same seed in one go gives the same losses, FIDs and weights as the resumed run.
    straight = run_ttur(
        tiny_config(data, tmp_path / "straight", random_weights_path, steps=4),
        extractor=extractor,
    )
    for got, expected in zip(straight.rows, resumed.rows):
        for name in ("step", "fid", "loss_d", "loss_g"):
            assert got[name] == expected[name], name
    resumed_weights = _weights(run_dir)
    for key, tensor in _weights(tmp_path / "straight").items():
        assert torch.equal(tensor, resumed_weights[key]), key


def test_resume_with_no_new_steps_rewrites_the_csv_from_the_checkpoint(
    shared_data, extractor, random_weights_path, tmp_path
):
    data = shared_data / MNIST_TEST
    run_dir = tmp_path / "run"
    run_ttur(tiny_config(data, run_dir, random_weights_path), extractor=extractor)
    # A crash between the CSV and the checkpoint leaves a row the checkpoint lacks.
    csv_path = run_dir / "metrics.csv"
    with open(csv_path, "a", encoding="utf-8") as stream:
        stream.write("4,1.0,0.5,0.5,9.000\n")
    assert [r["step"] for r in read_metrics_csv(csv_path)] == [2, 4]
    resumed = run_ttur(tiny_config(data, run_dir, random_weights_path), resume=True,
                       extractor=extractor)
    assert [row["step"] for row in resumed.rows] == [2]
    assert [r["step"] for r in read_metrics_csv(csv_path)] == [2]


def test_resume_without_checkpoint_is_an_error(tmp_path, random_weights_path):
    with pytest.raises(InputError, match="nothing to resume"):
        run_ttur(tiny_config(tmp_path / "x.npy", tmp_path / "empty", random_weights_path),
                 resume=True)


def test_compare_runs_both_rules_with_one_seed(shared_data, extractor, random_weights_path, tmp_path):
    result = run_compare(
        tiny_config(shared_data / CIFAR_ARRAY, tmp_path / "cmp", random_weights_path),
        extractor=extractor,
    )
    assert set(result.runs) == {"ttur", "one-time-scale"}
    ttur, baseline = result.runs["ttur"], result.runs["one-time-scale"]
    assert (ttur.config.effective_lr_d, ttur.config.effective_lr_g) == (4e-4, 1e-4)
    assert (baseline.config.effective_lr_d, baseline.config.effective_lr_g) == (1e-4, 1e-4)
    for run in (ttur, baseline):
        assert (run.out / "metrics.csv").exists() and (run.out / "checkpoint.pt").exists()
        assert all(math.isfinite(run.rows[-1][k]) for k in ("fid", "loss_d", "loss_g"))
        assert load_checkpoint(run.out / "checkpoint.pt")["shape"]["channels"] == 3
    # Same seed, same first batch: the first discriminator update saw the same images, but the
    # rates differ, so the runs must have diverged.
    assert ttur.rows[-1]["loss_d"] != baseline.rows[-1]["loss_d"]
    assert result.plot_path is not None
    assert result.plot_path.read_bytes().startswith(PNG_SIGNATURE)


class SpyExtractor:
    """Passes batches to the real extractor and records their shapes."""

    def __init__(self, inner):
        self.inner = inner
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, images):
        self.shapes.append(tuple(images.shape))
        return self.inner(images)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_reference_of_resized_data_is_at_the_gans_resolution(extractor, random_weights_path,
                                                             tmp_path):
    # 40x40 colour PNGs are trained on at 32x32; the reference used to be computed on the
    # 40x40 files, so FID measured the resize gap, not the generator.
    from PIL import Image

    folder = tmp_path / "pngs"
    folder.mkdir()
    rng = np.random.default_rng(2024)
    for index in range(12):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
            folder / f"{index:02d}.png"
        )
    spy = SpyExtractor(extractor)
    result = run_ttur(
        tiny_config(folder, tmp_path / "run", random_weights_path, steps=1, eval_every=1,
                    train_samples=12, ref_samples=10),
        extractor=spy,
    )
    assert math.isfinite(result.final_fid)
    assert {shape[1:] for shape in spy.shapes} == {(32, 32, 3)}
    assert sum(shape[0] for shape in spy.shapes) == 10 + 6  # reference, then one evaluation


class StubExtractor:
    """No network: each image's features are its pixels, repeated to the feature dimension."""

    batch_size = 3
    feature_dim = fidkit.FEATURE_DIM

    def __init__(self):
        self.sizes: list[int] = []

    def __call__(self, images):
        self.sizes.append(images.shape[0])
        flat = images.reshape(images.shape[0], -1).astype(np.float32)
        repeats = -(-self.feature_dim // flat.shape[1])
        return np.tile(flat, (1, repeats))[:, : self.feature_dim]

    def metadata(self):
        return {}


def test_stats_in_memory_feeds_network_batches_without_the_cache_or_an_info_line(caplog):
    from fidkit.ttur.features import stats_in_memory

    class Bar:  # what stats_in_memory needs of a tqdm bar
        n = 0

        def update(self, count):
            self.n += count

    images = np.random.default_rng(5).integers(0, 256, (7, 4, 4, 3), dtype=np.uint8)
    stub = StubExtractor()
    bar = Bar()
    with caplog.at_level(logging.INFO, logger="fidkit"):
        from_array = stats_in_memory(images, stub, progress=bar)
        assert stub.sizes == [3, 3, 1] and bar.n == 7 and from_array.n == 7
        # The pipeline's per-side rate line is DEBUG for batches from memory: the trainer and
        # validate report each evaluation themselves.
        assert not [record for record in caplog.records if record.levelno == logging.INFO]

    # Generated batches larger than the network batch are split by compute_stats.
    stub.sizes.clear()
    from_batches = stats_in_memory(iter([images[:5], images[5:]]), stub)
    assert stub.sizes == [3, 2, 2]
    np.testing.assert_array_equal(from_batches.mu, from_array.mu)
    np.testing.assert_array_equal(from_batches.sigma, from_array.sigma)


def test_reference_of_resized_grayscale_is_repeated_rgb(monkeypatch, tmp_path):
    from fidkit.ttur.runs import reference_stats

    seen = {}

    def fake_compute_stats(source, **options):
        seen["source"], seen["options"] = source, options
        return "stats"

    monkeypatch.setattr(fidkit, "compute_stats", fake_compute_stats)
    data = synthetic_data(n_images=5, channels=1, size=28)
    data.n_resized = 5
    config = TTURConfig(data=str(tmp_path / "src"), out=tmp_path, ref_samples=3, seed=4)
    assert reference_stats(config, extractor=None, data=data) == "stats"
    pixels = seen["source"]
    assert isinstance(pixels, np.ndarray) and pixels.shape == (5, 28, 28, 3)
    assert pixels.dtype == np.uint8
    assert np.array_equal(pixels[..., 0], data.images[:, 0].numpy())
    assert np.array_equal(pixels[..., 0], pixels[..., 2])
    assert (seen["options"]["limit"], seen["options"]["seed"]) == (3, 4)

    # Data at its own size: the reference is still read from the source (and cached there).
    data.n_resized = 0
    reference_stats(config, extractor=None, data=data)
    assert seen["source"] == config.data


def test_resumed_compare_uses_the_checkpoints_data_and_reference(
    shared_data, extractor, random_weights_path, tmp_path, monkeypatch
):
    from fidkit.ttur import runs

    source = shared_data / MNIST_TEST
    out = tmp_path / "cmp"
    run_compare(
        tiny_config(source, out, random_weights_path, train_samples=10, ref_samples=10),
        extractor=extractor,
    )
    loaded, references, checkpoints = [], [], []
    real_load, real_reference = runs.load_training_data, runs.reference_stats
    real_checkpoint = runs.load_checkpoint

    def spy_checkpoint(path):
        checkpoints.append(Path(path))
        return real_checkpoint(path)

    def spy_load(spec, **options):
        data = real_load(spec, **options)
        loaded.append(data.n_images)
        return data

    def spy_reference(config, extractor, data=None):
        stats = real_reference(config, extractor, data)
        references.append(stats.n)
        return stats

    monkeypatch.setattr(runs, "load_training_data", spy_load)
    monkeypatch.setattr(runs, "reference_stats", spy_reference)
    monkeypatch.setattr(runs, "load_checkpoint", spy_checkpoint)
    # Other data settings on the command line must not change what the resumed runs train on
    # or are compared against.
    resumed = run_compare(
        tiny_config(source, out, random_weights_path, train_samples=40, ref_samples=20, steps=4),
        resume=True,
        extractor=extractor,
    )
    assert loaded == [10] and references == [10]
    # Each run's checkpoint is read once, for the data settings and the run alike.
    assert sorted(checkpoints) == sorted(out / name / "checkpoint.pt" for name in resumed.runs)
    for run in resumed.runs.values():
        assert [row["step"] for row in run.rows] == [2, 4]
        assert (run.config.train_samples, run.config.ref_samples) == (10, 10)

    # Runs made with different data settings cannot share one data set and reference.
    path = out / "one-time-scale" / "checkpoint.pt"
    state = load_checkpoint(path)
    state["config"]["train_samples"] = 11
    torch.save(state, path)
    # Its config.json too: one that disagrees with its checkpoint is refused on its own (round 9).
    written = json.loads((out / "one-time-scale" / "config.json").read_text())
    (out / "one-time-scale" / "config.json").write_text(json.dumps({**written, "train_samples": 11}))
    with pytest.raises(InputError, match="different data settings: train_samples"):
        run_compare(tiny_config(source, out, random_weights_path, steps=6), resume=True,
                    extractor=extractor)
    path.unlink()
    with pytest.raises(InputError, match="nothing to resume"):
        run_compare(tiny_config(source, out, random_weights_path, steps=6), resume=True,
                    extractor=extractor)


@pytest.mark.parametrize(
    "name", ["checkpoint.pt", "metrics.csv", "config.json", "fid.png", "samples.png"]
)
def test_run_refuses_to_replace_any_file_it_would_write(tmp_path, random_weights_path, name):
    out = tmp_path / "run"
    out.mkdir()
    (out / name).write_text("mine\n")
    # Refused before any work (the data does not even exist), naming the file.
    with pytest.raises(OverwriteError, match=name):
        run_ttur(tiny_config(tmp_path / "missing.npy", out, random_weights_path))
    assert (out / name).read_text() == "mine\n"


@pytest.mark.parametrize("relative", ["compare.png", "ttur/config.json", "one-time-scale/fid.png"])
def test_compare_refuses_to_replace_any_file_it_would_write(tmp_path, random_weights_path,
                                                             relative):
    out = tmp_path / "cmp"
    (out / relative).parent.mkdir(parents=True, exist_ok=True)
    (out / relative).write_text("mine\n")
    with pytest.raises(OverwriteError, match=Path(relative).name):
        run_compare(tiny_config(tmp_path / "missing.npy", out, random_weights_path))
    assert (out / relative).read_text() == "mine\n"


def test_cli_ttur_runs_and_refuses_to_overwrite(shared_data, random_weights_path, tmp_path, capsys):
    from fidkit.cli import main

    argv = [
        "ttur", "--data", str(shared_data / MNIST_TEST), "--out", str(tmp_path / "cli"),
        "--weights", str(random_weights_path), "--device", "cpu", "--steps", "1",
        "--eval-every", "1", "--eval-samples", "8", "--ref-samples", "16",
        "--train-samples", "32", "--train-batch-size", "8", "--one-time-scale", "--json",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert [row["step"] for row in report["rows"]] == [1]
    assert report["config"]["effective_lr_d"] == report["config"]["effective_lr_g"] == 1e-4
    assert Path(report["metrics_csv"]).exists()

    assert main(argv) == 1
    assert "--resume" in capsys.readouterr().err


def test_plots_degrade_to_a_hint_without_matplotlib(monkeypatch, tmp_path, caplog):
    from fidkit.ttur import plotting

    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    rows = [{"step": 1, "fid": 3.0}]
    with caplog.at_level("WARNING", logger="fidkit.ttur.plotting"):
        assert plotting.plot_fid_curves({"run": rows}, tmp_path / "f.png") is None
        assert plotting.plot_validation({"swirl": [(0.0, 0.0)]}, tmp_path / "v.png") is None
    assert not (tmp_path / "f.png").exists()
    assert 'pip install "fidkit[plot]"' in caplog.text


def test_help_does_not_import_torch():
    code = (
        "import sys, contextlib, io\n"
        "from fidkit.cli import main\n"
        "for command in ('ttur', 'validate'):\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "        assert main([command, '--help']) == 0\n"
        "    assert 'examples:' in out.getvalue()\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


def test_out_on_a_file_and_infinite_rates_are_refused_at_once(tmp_path):
    from fidkit.errors import InputError

    a_file = tmp_path / "run"
    a_file.write_text("")
    with pytest.raises(InputError, match="is a file, not a folder"):
        TTURConfig(data=str(tmp_path), out=a_file)
    with pytest.raises(InputError, match="positive finite"):
        TTURConfig(data=str(tmp_path), out=tmp_path / "out", lr_d=float("inf"))


def test_a_diverged_training_step_is_an_error_not_a_nan_curve(monkeypatch):
    from fidkit.errors import FidkitError
    from fidkit.ttur import trainer as trainer_module

    config = TTURConfig(data="x", out=Path("o"), width=8, train_batch_size=8, latent_dim=8, seed=1)
    trainer = TTURTrainer(config, synthetic_data())
    real_loss = trainer_module.F.binary_cross_entropy_with_logits
    monkeypatch.setattr(
        trainer_module.F, "binary_cross_entropy_with_logits", lambda *a, **k: real_loss(*a, **k) * float("nan")
    )
    with pytest.raises(FidkitError, match="training diverged at step 1"):
        trainer.train_step()


# --- hostile round 3, 29: long ttur / validate runs report progress on stderr, terminal or not ----------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_without_a_terminal_is_a_line_per_interval(caplog):
    from fidkit.ttur.progress import Progress

    clock = _Clock()
    caplog.set_level("INFO", logger="fidkit.ttur.progress")
    with Progress(1000, "validate", unit="img", interval=20.0, clock=clock) as progress:
        assert not progress.draws_bar  # pytest's stderr is not a terminal
        for _ in range(100):  # 10 images every 1.5 s: 150 s in all
            clock.now += 1.5
            progress.update(10)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 150 // 20 + 1  # one every 20 s, and one when done
    assert lines[0] == "validate: 140/1000 img (14%), 6.67 img/s, 21 s so far, about 2 min left"
    assert lines[-1].startswith("validate: 1000/1000 img (100%)") and lines[-1].endswith("(done)")


def test_progress_is_silent_when_disabled_or_short(caplog):
    from fidkit.ttur.progress import Progress

    clock = _Clock()
    caplog.set_level("INFO", logger="fidkit.ttur.progress")
    with Progress(10, "quiet", enabled=False, interval=1.0, clock=clock) as progress:
        clock.now += 50
        progress.update(10)
    with Progress(10, "short", interval=30.0, clock=clock) as progress:
        clock.now += 5  # done before the first line is due: no line at all
        progress.update(10)
    assert caplog.records == []


@pytest.fixture
def gray_images(tmp_path) -> Path:
    path = tmp_path / "gray.npy"
    np.save(path, np.random.default_rng(3).integers(0, 256, (24, 28, 28), dtype=np.uint8))
    return path


def test_ttur_without_a_terminal_reports_reference_training_and_evaluation(
    extractor, random_weights_path, gray_images, tmp_path, capsys, monkeypatch
):
    from fidkit.cli import main
    from fidkit.ttur import progress

    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)  # a line at every update: the test cannot wait
    argv = [
        "ttur", "--data", str(gray_images), "--out", str(tmp_path / "run"), "--weights", str(random_weights_path),
        "--device", "cpu", "--steps", "3", "--eval-every", "3", "--eval-samples", "6", "--ref-samples", "12",
        "--train-batch-size", "8", "--batch-size", "4", "--json",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["rows"][0]["step"] == 3
    err = captured.err
    assert "fidkit: reference statistics: 12/12 img (100%)" in err
    assert f"fidkit: training {tmp_path / 'run'}: 1/3 step (33%)" in err
    assert "fidkit: FID at step 3: 6/6 img (100%)" in err


def test_validate_without_a_terminal_reports_progress(extractor, random_weights_path, gray_images, tmp_path, capsys,
                                                      monkeypatch):
    from fidkit.cli import main
    from fidkit.ttur import progress

    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)
    argv = [
        "validate", str(gray_images), "--out", str(tmp_path / "v"), "--weights", str(random_weights_path),
        "--device", "cpu", "--samples", "8", "--strengths", "0,1", "--disturbances", "gaussian_noise",
        "--batch-size", "4", "--json",
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "fidkit: validate: 4/16 img (25%)" in err and "fidkit: validate: 16/16 img (100%)" in err
    # -q: no progress lines
    assert main([*argv, "--force", "-q"]) == 0
    assert "validate: " not in capsys.readouterr().err


# --- hostile round 4, 1: what an interruption leaves can be resumed -------------------------------------------------


class PixelExtractor:
    """No network: an image's features are its pixels, tiled to the feature dimension.

    StubExtractor's features, in batches of 50, under weights it names ("pixels"), recording nothing.
    """

    batch_size = 50
    feature_dim = fidkit.FEATURE_DIM

    def __call__(self, images):
        flat = images.reshape(images.shape[0], -1).astype(np.float32)
        repeats = -(-self.feature_dim // flat.shape[1])
        return np.tile(flat, (1, repeats))[:, : self.feature_dim]

    def metadata(self):
        return {"weights_sha256": "pixels", "resize_mode": "none"}


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


@pytest.mark.filterwarnings("ignore::fidkit.errors.FidkitWarning")
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


@pytest.mark.filterwarnings("ignore::fidkit.errors.FidkitWarning")
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


@pytest.mark.filterwarnings("ignore::fidkit.errors.FidkitWarning")
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


@pytest.mark.filterwarnings("ignore::fidkit.errors.FidkitWarning")
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


@pytest.mark.filterwarnings("ignore::fidkit.errors.FidkitWarning")
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


# --- hostile round 4, 2: --out over the data ------------------------------------------------------------------------


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


@pytest.mark.filterwarnings("ignore::fidkit.errors.FidkitWarning")
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


# --- hostile round 4, 3: output-folder problems before any work -----------------------------------------------------


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


# --- hostile round 4, 4: --train-batch-size 1 -----------------------------------------------------------------------


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


# --- hostile round 4, 5: --resume --steps below the steps done ------------------------------------------------------


@pytest.mark.filterwarnings("ignore::fidkit.errors.FidkitWarning")
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


# --- hostile round 4, 6: the help names every file that makes --out "in use" ----------------------------------------


def test_ttur_help_names_every_file_that_makes_out_in_use(capsys):
    from fidkit.cli import main

    assert main(["ttur", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    description = text[: text.index("TTUR: Adam")]
    for name in RUN_OUTPUT_NAMES + COMPARE_OUTPUT_NAMES:
        assert name in description, name
    assert '"in use"' in description


# --- round 7: the device is checked before any work; tensorrt trains the GAN on cuda:N ------------------------------


def _no_work(monkeypatch):
    """Reading the data or images is the first work; a device check must come before it."""
    import fidkit.ttur.runs as runs
    import fidkit.ttur.validate as validate

    def refuse(*args, **kwargs):
        raise AssertionError("the data was read before the device was checked")

    monkeypatch.setattr(runs, "load_training_data", refuse)
    monkeypatch.setattr(validate, "load_images", refuse)


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "tensorrt", "tensorrt:2"])
def test_a_gpu_the_gan_cannot_use_is_refused_before_any_work(images_npy, tmp_path, capsys, monkeypatch, device):
    # A machine where the FID network could run on `device` (its probe passes) but torch is a CPU-only build.
    import fidkit.ttur.trainer as trainer

    _no_work(monkeypatch)
    monkeypatch.setattr(trainer, "check_extractor_device", lambda *args: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    from fidkit.cli import main

    out = tmp_path / "run"
    for extra in ([], ["--compare"]):
        status = main(["ttur", "--data", str(images_npy), "--out", str(out), "--device", device, "--steps", "2",
                       *extra])
        error = capsys.readouterr().err
        assert status == 1, error
        assert "internal error" not in error and f"--device {device} asked for" in error
        assert "CUDA build of torch" in error and "--device cpu" in error
        assert ("TensorRT runs only the FID network" in error) == device.startswith("tensorrt")
        assert not out.exists()


@pytest.mark.parametrize("command", ["ttur", "validate"])
@pytest.mark.parametrize("device", ["cuda", "tensorrt:1"])
def test_a_gpu_the_network_cannot_use_is_refused_before_any_work(images_npy, tmp_path, capsys, monkeypatch,
                                                                 command, device):
    # The probe `fidkit compute` runs: here, no NVIDIA driver (whatever this machine has).
    import fidkit.inception.providers as providers

    _no_work(monkeypatch)
    monkeypatch.setattr(providers, "gpu_driver_present", lambda: False)
    from fidkit.cli import main

    out = tmp_path / "out"
    arguments = ["--data", str(images_npy)] if command == "ttur" else [str(images_npy)]
    status = main([command, *arguments, "--out", str(out), "--device", device])
    error = capsys.readouterr().err
    assert status == 1, error
    assert f"device {device} asked for, but there is no NVIDIA driver" in error and "device='cpu'" in error
    assert not out.exists()


def test_the_gan_trains_on_the_gpu_of_cuda_or_tensorrt(monkeypatch):
    from fidkit.errors import FidkitError
    from fidkit.ttur.trainer import resolve_torch_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    expected = {"cpu": "cpu", "auto": "cuda", "cuda": "cuda:0", "cuda:2": "cuda:2", "tensorrt": "cuda:0",
                "tensorrt:1": "cuda:1"}
    assert {device: str(resolve_torch_device(device)) for device in expected} == expected
    with pytest.raises(FidkitError, match=r"torch sees 3 GPU\(s\) \(cuda:0..cuda:2\).*TensorRT runs only"):
        resolve_torch_device("tensorrt:3")
    with pytest.raises(InputError, match="device must be"):
        resolve_torch_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert str(resolve_torch_device("auto")) == "cpu"


@pytest.mark.parametrize("command", ["ttur", "validate"])
def test_the_network_batch_size_defaults_to_the_devices_as_in_compute(
    extractor, random_weights_path, images_npy, tmp_path, monkeypatch, capsys, command
):
    # fidkit compute's rule (the extractor's own default for its device: 25 on the CPU, 200 on a GPU), not 50.
    import fidkit.ttur.runs as runs
    import fidkit.ttur.validate as validate
    from fidkit.cli import build_parser, main
    from fidkit.inception.spec import CPU_BATCH_SIZE

    arguments = ["--data", str(images_npy)] if command == "ttur" else [str(images_npy)]
    assert build_parser(command).parse_args([command, *arguments, "--out", str(tmp_path / "x")]).batch_size is None
    built = []

    def recording(weights, device, batch_size):
        built.append((batch_size, runs_make(weights, device, batch_size).batch_size))
        raise InputError("stop after the build")

    runs_make = runs.make_extractor
    monkeypatch.setattr(runs if command == "ttur" else validate, "make_extractor", recording)
    status = main([command, *arguments, "--out", str(tmp_path / "out"), "--weights", str(random_weights_path),
                   "--device", "cpu"])
    assert status == 1 and "stop after the build" in capsys.readouterr().err
    assert built == [(None, CPU_BATCH_SIZE)]


# --- hostile round 9: --force leaves no old run behind; a resume keeps one run and one network ----------------------


class ShaPixelExtractor(PixelExtractor):
    """PixelExtractor's features under weights named by a sha256 (so its identity is its weights')."""

    def metadata(self):
        return {"weights_sha256": "b" * 64, "resize_mode": "none"}


@pytest.mark.filterwarnings("ignore::fidkit.errors.FidkitWarning")
def test_force_stopped_before_its_first_checkpoint_leaves_only_the_new_config(images_npy, tmp_path):
    out = tmp_path / "run"
    run_ttur(small_config(images_npy, out, lr_d=3e-4, steps=3), extractor=ShaPixelExtractor())
    (out / "notes.txt").write_text("mine\n")
    with pytest.raises(KeyboardInterrupt):
        run_ttur(small_config(images_npy, out, lr_d=1e-3), force=True, extractor=ShaPixelExtractor(),
                 on_eval=interrupt_at())
    assert sorted(path.name for path in out.iterdir()) == ["config.json", "notes.txt"]
    assert (out / "notes.txt").read_text() == "mine\n"
    # --resume starts the new run from step 0 with the new settings, not the old run at step 3.
    resumed = run_ttur(small_config(images_npy, out, lr_d=5e-5), resume=True, extractor=ShaPixelExtractor())
    assert resumed.resumed_from_step == 0 and resumed.config.lr_d == 1e-3
    assert [row["step"] for row in resumed.rows] == [1, 2]
    straight = run_ttur(small_config(images_npy, tmp_path / "straight", lr_d=1e-3), extractor=ShaPixelExtractor())
    assert history(resumed.rows) == history(straight.rows)


def test_force_that_fails_before_training_keeps_the_previous_run(images_npy, tmp_path):
    """The previous run is removed once the data, the network and the reference are ready: a --force run that fails
    before (no images in --data; a reference pass interrupted) left the folder empty."""
    out = tmp_path / "run"
    run_ttur(small_config(images_npy, out, lr_d=3e-4, steps=3), extractor=ShaPixelExtractor())
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(fidkit.errors.FidkitError):
        run_ttur(small_config(empty, out, lr_d=1e-3), force=True, extractor=ShaPixelExtractor())
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    with pytest.raises(fidkit.errors.FidkitError):
        run_compare(small_config(empty, tmp_path / "cmp"), force=True, extractor=ShaPixelExtractor())


@pytest.mark.filterwarnings("ignore::fidkit.errors.FidkitWarning")
def test_compare_force_removes_both_old_runs_before_it_starts(images_npy, tmp_path):
    out = tmp_path / "cmp"
    run_compare(small_config(images_npy, out, lr_d=3e-4), extractor=ShaPixelExtractor())
    with pytest.raises(KeyboardInterrupt):
        run_compare(small_config(images_npy, out, lr_d=1e-3), force=True, extractor=ShaPixelExtractor(),
                    on_eval=interrupt_at("ttur"))
    assert not (out / "compare.png").exists()
    assert sorted(path.name for path in (out / "ttur").iterdir()) == ["config.json"]
    assert list((out / "one-time-scale").iterdir()) == []
    resumed = run_compare(small_config(images_npy, out), resume=True, extractor=ShaPixelExtractor())
    for name in ("ttur", "one-time-scale"):
        assert resumed.runs[name].resumed_from_step == 0
    assert resumed.runs["ttur"].config.lr_d == 1e-3


@pytest.mark.filterwarnings("ignore::fidkit.errors.FidkitWarning")
def test_resume_refuses_a_config_json_of_another_run_than_the_checkpoint(images_npy, tmp_path):
    out = tmp_path / "run"
    run_ttur(small_config(images_npy, out, lr_d=3e-4, seed=4), extractor=ShaPixelExtractor())
    path = out / "config.json"
    stored = json.loads(path.read_text())
    # What a resume takes from the command line may differ (a resumed segment's config.json has the new total).
    path.write_text(json.dumps({**stored, "steps": 7, "device": "auto", "weights": "elsewhere.pth"}))
    assert run_ttur(small_config(images_npy, out, steps=2), resume=True, extractor=ShaPixelExtractor()).rows
    path.write_text(json.dumps({**stored, "lr_d": 1e-3, "seed": 9}))
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(InputError, match=r"describe different runs: lr_d \(0\.001 against 0\.0003\), seed") as caught:
        run_ttur(small_config(images_npy, out, steps=3), resume=True, extractor=ShaPixelExtractor())
    assert str(path) in str(caught.value) and str(out / "checkpoint.pt") in str(caught.value)
    assert "--force" in str(caught.value)
    assert (out / "checkpoint.pt").read_bytes() == before


@pytest.mark.filterwarnings("ignore::fidkit.errors.FidkitWarning")
@pytest.mark.parametrize("compare", [False, True])
def test_resume_under_other_weights_is_refused(images_npy, tmp_path, compare):
    run = run_compare if compare else run_ttur
    out = tmp_path / "run"
    first = ShaPixelExtractor()
    run(small_config(images_npy, out), extractor=first)
    folder = out / "ttur" if compare else out
    assert load_checkpoint(folder / "checkpoint.pt")["weights_sha256"] == "b" * 64
    assert json.loads((folder / "config.json").read_text())["weights_sha256"] == "b" * 64
    before = (folder / "checkpoint.pt").read_bytes()

    class Third(ShaPixelExtractor):
        def metadata(self):
            return {"weights_sha256": "c" * 64, "resize_mode": "none"}

    with pytest.raises(InputError, match=f"sha256 {'b' * 64}.*sha256 {'c' * 64}.*--weights") as caught:
        run(small_config(images_npy, out, steps=3), resume=True, extractor=Third())
    assert "FIDKIT_WEIGHTS" in str(caught.value)
    assert (folder / "checkpoint.pt").read_bytes() == before
    assert [row["step"] for row in read_metrics_csv(folder / "metrics.csv")] == [1, 2]
    # The same weights resume.
    resumed = run(small_config(images_npy, out, steps=3), resume=True, extractor=first)
    rows = (resumed.runs["ttur"] if compare else resumed).rows
    assert [row["step"] for row in rows] == [1, 2, 3]


@pytest.mark.filterwarnings("ignore::fidkit.errors.FidkitWarning")
def test_a_checkpoint_without_a_weights_sha_resumes_as_before(images_npy, tmp_path):
    out = tmp_path / "run"
    run_ttur(small_config(images_npy, out), extractor=ShaPixelExtractor())
    state = load_checkpoint(out / "checkpoint.pt")
    del state["weights_sha256"]
    torch.save(state, out / "checkpoint.pt")
    resumed = run_ttur(small_config(images_npy, out, steps=3), resume=True, extractor=ShaPixelExtractor())
    assert resumed.resumed_from_step == 2 and [row["step"] for row in resumed.rows] == [1, 2, 3]
