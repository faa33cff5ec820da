"""The reference TTUR trainer: models, seeded training, in-memory FID, CSV/plot/checkpoint, resume.

Everything runs on random Inception weights at tiny sizes (6 generated images per FID, 1-4 steps):
the numbers say nothing about FID as a metric; the tests check the machinery.
"""

from __future__ import annotations

import json
import logging
import math
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
from fidkit.ttur.run_files import load_checkpoint, read_metrics_csv
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
