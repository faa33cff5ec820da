"""The reference two time-scale update rule (TTUR) trainer, with FID measured during training.

A DCGAN (:mod:`fidkit.ttur.models`) is trained with separate Adam learning rates for the
discriminator and the generator (Heusel et al. 2017, "GANs trained by a two time-scale update rule
converge to a local Nash equilibrium"). Every ``eval_every`` steps, ``eval_samples`` images are
generated from a fixed set of noise vectors and their FID against the dataset's statistics is
computed in-process: generated images -> uint8 ``(B, H, W, 3)`` -> :func:`fidkit.compute_stats`
(no cache) -> :func:`fidkit.fid_from_stats`. Nothing is written to disk on that path.

Run folder layout (``TTURConfig.out``)::

    config.json     the configuration, for people (the checkpoint holds its own copy)
    metrics.csv     step, fid, loss_d, loss_g, wall_time_s; one row per evaluation
    fid.png         FID against step (needs matplotlib: pip install "fidkit[plot]")
    checkpoint.pt   models, optimisers, RNG state, step, rows so far; written at each evaluation

Every file is written atomically, so an interrupted run leaves the last complete checkpoint and a
CSV consistent with it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import fidkit
from fidkit._fs import atomic_write
from fidkit.errors import InputError, OverwriteError, SmallSampleWarning
from fidkit.ttur.data import (
    existing_output,
    gan_image_size,
    is_grayscale,
    load_images,
    nchw_to_rgb,
)
from fidkit.ttur.features import make_extractor, stats_in_memory
from fidkit.ttur.models import GANShape, build_models

__all__ = [
    "TTURConfig",
    "TrainingData",
    "TTURTrainer",
    "RunResult",
    "CompareResult",
    "load_training_data",
    "reference_stats",
    "run_ttur",
    "run_compare",
    "write_metrics_csv",
    "read_metrics_csv",
    "DEFAULT_LR_D",
    "DEFAULT_LR_G",
    "METRICS_COLUMNS",
]

logger = logging.getLogger(__name__)

#: TTUR learning rates (discriminator four times faster than generator), the DCGAN setting most
#: commonly cited from the TTUR paper. The one time-scale baseline trains both networks at
#: DEFAULT_LR_G (see :attr:`TTURConfig.effective_lr_d`).
DEFAULT_LR_D = 4e-4
DEFAULT_LR_G = 1e-4
#: Adam (beta1, beta2) of both optimisers; beta1 = 0.5 as in DCGAN.
DEFAULT_BETAS = (0.5, 0.999)

METRICS_COLUMNS = ("step", "fid", "loss_d", "loss_g", "wall_time_s")
CHECKPOINT_FORMAT = "fidkit-ttur-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.csv"
PLOT_NAME = "fid.png"
CONFIG_NAME = "config.json"
COMPARE_PLOT_NAME = "compare.png"
SAMPLES_NAME = "samples.png"
# The sample grid shows the first SAMPLE_GRID_SIDE**2 images of the fixed evaluation noise.
SAMPLE_GRID_SIDE = 8
COMPARE_RUNS = ("ttur", "one-time-scale")
#: Every file a run writes in its folder. Any of them already there makes the folder "in use":
#: without --resume or --force the run refuses rather than replace, say, a user's own config.json.
RUN_OUTPUT_NAMES = (CHECKPOINT_NAME, METRICS_NAME, CONFIG_NAME, PLOT_NAME, SAMPLES_NAME)
#: What ``--compare`` writes in its own folder (each sub-run folder gets RUN_OUTPUT_NAMES).
COMPARE_OUTPUT_NAMES = (COMPARE_PLOT_NAME,)
#: The settings that decide the training images and the reference statistics; the two runs of a
#: resumed ``--compare`` must agree on them, as they share one copy of each.
_DATA_SETTINGS = ("data", "train_samples", "ref_samples", "seed")

# Offsets that derive independent random streams from the one user seed.
_SEED_OFFSET_TRAIN = 1
_SEED_OFFSET_EVAL = 2
# How many images are generated at once while evaluating (bounds memory for large eval sets).
_EVAL_CHUNK = 500


@dataclass
class TTURConfig:
    """Everything that defines a training run.

    Attributes
    ----------
    data : str
        The fidkit source of real images (a path, e.g. an MNIST idx file or a CIFAR-10 folder).
    out : pathlib.Path
        The run folder.
    steps : int
        Total number of training steps (one discriminator and one generator update each).
    lr_d, lr_g : float
        Adam learning rates of the discriminator and the generator.
    one_time_scale : bool
        Baseline: train both networks at `lr_g` (`lr_d` is ignored).
    beta1, beta2 : float
        Adam betas of both optimisers.
    train_batch_size : int
        GAN mini-batch size.
    eval_every : int
        Evaluate FID every this many steps (and at the last step).
    eval_samples : int
        Number of generated images per FID evaluation.
    ref_samples : int or None
        Number of dataset images in the reference statistics; None means all.
    train_samples : int or None
        Number of dataset images held in memory for training; None means all.
    seed : int
        Seeds the initialisation, the mini-batches, the noise and the evaluation noise.
    latent_dim, width : int
        Generator noise size and network width.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (``"cuda:N"``); used for torch and for the
        feature extractor.
    weights : str or None
        Inception weights (path); None resolves them the usual way.
    feature_batch_size : int
        Batch size of the feature extractor.
    """

    data: str
    out: Path
    steps: int = 20_000
    lr_d: float = DEFAULT_LR_D
    lr_g: float = DEFAULT_LR_G
    one_time_scale: bool = False
    beta1: float = DEFAULT_BETAS[0]
    beta2: float = DEFAULT_BETAS[1]
    train_batch_size: int = 64
    eval_every: int = 1000
    eval_samples: int = 10_000
    ref_samples: int | None = None
    train_samples: int | None = None
    seed: int = 0
    latent_dim: int = 100
    width: int = 64
    device: str = "auto"
    weights: str | None = None
    feature_batch_size: int = 50

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        for name in ("steps", "train_batch_size", "eval_every", "eval_samples", "latent_dim", "width"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.eval_samples < 2:
            raise InputError("eval_samples must be at least 2 (a covariance needs two samples)")
        for name in ("lr_d", "lr_g"):
            if not float(getattr(self, name)) > 0:
                raise InputError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def effective_lr_d(self) -> float:
        """The discriminator's learning rate actually used.

        In one time-scale mode both networks train at `lr_g`: the baseline keeps the generator's
        rate, so that the comparison with TTUR changes only the discriminator's time scale.
        """
        return float(self.lr_g if self.one_time_scale else self.lr_d)

    @property
    def effective_lr_g(self) -> float:
        """The generator's learning rate actually used."""
        return float(self.lr_g)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (the folder as a string, effective rates added)."""
        values = asdict(self)
        values["out"] = str(self.out)
        values["effective_lr_d"] = self.effective_lr_d
        values["effective_lr_g"] = self.effective_lr_g
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TTURConfig":
        """Inverse of :meth:`to_dict` (unknown keys, such as the effective rates, are dropped)."""
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        return cls(**known)


@dataclass
class TrainingData:
    """The real images as the GAN sees them.

    Attributes
    ----------
    images : torch.Tensor
        uint8 ``(N, C, S, S)`` on the CPU; C is 1 for grayscale data, 3 for colour.
    grayscale : bool
        True if every source image had R == G == B.
    image_size : int
        S, 28 or 32 for the shipped networks.
    source_name : str
        For messages.
    n_resized : int
        Images that had to be resized to S x S.
    """

    images: torch.Tensor
    grayscale: bool
    image_size: int
    source_name: str
    n_resized: int = 0

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])


def load_training_data(
    spec: object, *, limit: int | None = None, seed: int | None = None
) -> TrainingData:
    """Read real images for training into memory once, as uint8 ``(N, C, S, S)``.

    Grayscale (R == G == B everywhere, e.g. MNIST) becomes one channel. 28x28 and 32x32 images
    are kept as they are; other sizes are resized to 28 (grayscale) or 32 (colour) and a warning
    says so.

    Parameters
    ----------
    spec : source
        Anything :func:`fidkit.open_source` reads as images.
    limit : int, optional
        At most this many images (``--train-samples``).
    seed : int, optional
        With `limit`, which images are picked (passed to ``open_source``).
    """

    def choose_size(first_batch: np.ndarray) -> tuple[int, int]:
        size = gan_image_size(
            first_batch.shape[1], first_batch.shape[2], grayscale=is_grayscale(first_batch)
        )
        return size, size

    loaded = load_images(spec, limit=limit, seed=seed if limit is not None else None,
                         size_for_first=choose_size)
    grayscale = is_grayscale(loaded.images)
    images_hwc = loaded.images[..., :1] if grayscale else loaded.images
    images = torch.from_numpy(np.ascontiguousarray(images_hwc.transpose(0, 3, 1, 2)))
    logger.info(
        "training data %s: %d images, %dx%d, %s",
        loaded.source_name,
        images.shape[0],
        images.shape[2],
        images.shape[3],
        "grayscale" if grayscale else "colour",
    )
    return TrainingData(
        images=images,
        grayscale=grayscale,
        image_size=int(images.shape[2]),
        source_name=loaded.source_name,
        n_resized=loaded.n_resized,
    )


def resolve_torch_device(device: str) -> torch.device:
    """Map ``"auto"`` to CUDA when torch sees a GPU, else the CPU; pass other names through."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextlib.contextmanager
def deterministic_torch() -> Iterator[None]:
    """Ask torch for deterministic kernels inside the block and restore the settings after.

    ``warn_only`` keeps training possible where an op has no deterministic kernel; cuBLAS needs
    ``CUBLAS_WORKSPACE_CONFIG`` set before CUDA starts, so it is set if the user has not.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = previous[2]
        torch.backends.cudnn.deterministic = previous[3]


def images_to_uint8_rgb(images: torch.Tensor) -> np.ndarray:
    """Convert generator output ``(B, C, H, W)`` in [-1, 1] to uint8 ``(B, H, W, 3)``.

    The mapping (x + 1) * 127.5, rounded and clipped, is the inverse of how real images are fed
    to the discriminator; grayscale is repeated to three channels (:func:`nchw_to_rgb`).
    """
    pixels = ((images.detach().float() + 1.0) * 127.5).round_().clamp_(0.0, 255.0)
    return nchw_to_rgb(pixels.to(torch.uint8))


class TTURTrainer:
    """One GAN being trained: the models, their optimisers, the random streams and the step.

    Parameters
    ----------
    config : TTURConfig
        Learning rates, batch size, seed, sizes.
    data : TrainingData
        The real images (kept on `device`).
    device : torch.device, optional
        Where to train; from ``config.device`` by default.

    Notes
    -----
    Every random draw comes from explicit ``torch.Generator`` objects on the CPU (mini-batch
    indices and noise; the evaluation noise from a separately seeded one), so a run depends only
    on its seed, is unaffected by other code using the global RNG, and continues identically after
    :meth:`load_state_dict`. Draws are made on the CPU and moved, so the random numbers do not
    depend on the device either (the arithmetic may).
    """

    def __init__(self, config: TTURConfig, data: TrainingData, device: torch.device | None = None):
        self.config = config
        self.device = device if device is not None else resolve_torch_device(config.device)
        self.shape = GANShape(
            image_size=data.image_size,
            channels=data.channels,
            latent_dim=config.latent_dim,
            width=config.width,
        )
        self.data = data
        self.real_images = data.images.to(self.device)
        generator, discriminator = build_models(self.shape, seed=config.seed)
        self.generator = generator.to(self.device)
        self.discriminator = discriminator.to(self.device)
        betas = (config.beta1, config.beta2)
        self.optimizer_g = torch.optim.Adam(
            self.generator.parameters(), lr=config.effective_lr_g, betas=betas
        )
        self.optimizer_d = torch.optim.Adam(
            self.discriminator.parameters(), lr=config.effective_lr_d, betas=betas
        )
        self.train_rng = torch.Generator(device="cpu")
        self.train_rng.manual_seed(config.seed + _SEED_OFFSET_TRAIN)
        self.step = 0
        self.rows: list[dict[str, float]] = []
        self.elapsed_s = 0.0
        # Running sums of the losses since the last evaluation: a row reports interval means.
        self.loss_sums = [0.0, 0.0]
        self.loss_count = 0
        self._eval_noise: torch.Tensor | None = None
        #: The first ``SAMPLE_GRID_SIDE**2`` images of the last evaluation (uint8 ``(B, H, W, 3)``),
        #: kept for the sample grid; None before the first evaluation.
        self.samples: np.ndarray | None = None

    # -- training ---------------------------------------------------------------------------

    def _noise(self, n: int) -> torch.Tensor:
        noise = torch.randn(n, self.shape.latent_dim, generator=self.train_rng)
        return noise.to(self.device)

    def train_step(self) -> tuple[float, float]:
        """Run one discriminator update and one generator update.

        Returns
        -------
        (loss_d, loss_g) : tuple of float
            The discriminator's loss (real + fake binary cross-entropy) and the generator's
            non-saturating loss, -log D(G(z)).
        """
        batch_size = self.config.train_batch_size
        indices = torch.randint(self.data.n_images, (batch_size,), generator=self.train_rng)
        real = self.real_images[indices.to(self.device)].float().div_(127.5).sub_(1.0)
        noise = self._noise(batch_size)
        ones = torch.ones(batch_size, device=self.device)
        zeros = torch.zeros(batch_size, device=self.device)

        fake = self.generator(noise)
        self.optimizer_d.zero_grad(set_to_none=True)
        loss_d = F.binary_cross_entropy_with_logits(
            self.discriminator(real), ones
        ) + F.binary_cross_entropy_with_logits(self.discriminator(fake.detach()), zeros)
        loss_d.backward()
        self.optimizer_d.step()

        # The generator is judged by the discriminator as it is after its own update.
        self.optimizer_g.zero_grad(set_to_none=True)
        loss_g = F.binary_cross_entropy_with_logits(self.discriminator(fake), ones)
        loss_g.backward()
        self.optimizer_g.step()

        self.step += 1
        loss_values = (float(loss_d.detach()), float(loss_g.detach()))
        self.loss_sums[0] += loss_values[0]
        self.loss_sums[1] += loss_values[1]
        self.loss_count += 1
        return loss_values

    # -- evaluation -------------------------------------------------------------------------

    @property
    def eval_noise(self) -> torch.Tensor:
        """The fixed noise of every evaluation, ``(eval_samples, latent_dim)``, on the CPU."""
        if self._eval_noise is None:
            eval_rng = torch.Generator(device="cpu")
            eval_rng.manual_seed(self.config.seed + _SEED_OFFSET_EVAL)
            self._eval_noise = torch.randn(
                self.config.eval_samples, self.shape.latent_dim, generator=eval_rng
            )
        return self._eval_noise

    @torch.no_grad()
    def generate_batches(self, noise: torch.Tensor | None = None) -> Iterator[np.ndarray]:
        """Yield uint8 ``(B, H, W, 3)`` batches generated from `noise` (the eval noise by default).

        The generator runs in eval mode (batch-norm running statistics), so an image depends
        only on its own noise vector, not on the batch it is generated in.
        """
        noise = self.eval_noise if noise is None else noise
        was_training = self.generator.training
        self.generator.eval()
        try:
            for chunk in noise.split(_EVAL_CHUNK):
                yield images_to_uint8_rgb(self.generator(chunk.to(self.device)))
        finally:
            self.generator.train(was_training)

    def evaluate(self, extractor: Any, ref_stats: Any) -> Any:
        """FID of the generator's eval images against `ref_stats`, computed in memory.

        The first ``SAMPLE_GRID_SIDE**2`` of those images are kept in :attr:`samples`.

        Parameters
        ----------
        extractor : FeatureExtractor
            Maps uint8 ``(B, H, W, 3)`` to float32 ``(B, fidkit.FEATURE_DIM)``.
        ref_stats : Stats
            The dataset's statistics.

        Returns
        -------
        FrechetResult
        """
        n_samples = SAMPLE_GRID_SIDE * SAMPLE_GRID_SIDE
        kept: list[np.ndarray] = []

        def batches_keeping_samples() -> Iterator[np.ndarray]:
            n_kept = 0
            for images in self.generate_batches():
                if n_kept < n_samples:
                    kept.append(images[: n_samples - n_kept])
                    n_kept += kept[-1].shape[0]
                yield images

        generated_stats = stats_in_memory(batches_keeping_samples(), extractor)
        self.samples = np.concatenate(kept)
        with warnings.catch_warnings():
            # The run warns once about small N at its start; one warning per evaluation is noise.
            warnings.simplefilter("ignore", SmallSampleWarning)
            return fidkit.fid_from_stats(generated_stats, ref_stats)

    def record(self, fid: float) -> dict[str, float]:
        """Append a metrics row for the current step (losses are means since the last row)."""
        row = {
            "step": self.step,
            "fid": float(fid),
            "loss_d": self.loss_sums[0] / self.loss_count if self.loss_count else math.nan,
            "loss_g": self.loss_sums[1] / self.loss_count if self.loss_count else math.nan,
            "wall_time_s": float(self.elapsed_s),
        }
        self.rows.append(row)
        self.loss_sums = [0.0, 0.0]
        self.loss_count = 0
        return row

    # -- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run exactly (tensors and plain Python values only)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": self.config.to_dict(),
            "shape": self.shape.to_dict(),
            "data": {
                "source_name": self.data.source_name,
                "n_images": self.data.n_images,
                "grayscale": self.data.grayscale,
                "image_size": self.data.image_size,
            },
            "step": self.step,
            "rows": [dict(row) for row in self.rows],
            "elapsed_s": self.elapsed_s,
            "loss_sums": list(self.loss_sums),
            "loss_count": self.loss_count,
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "optimizer_g": self.optimizer_g.state_dict(),
            "optimizer_d": self.optimizer_d.state_dict(),
            "train_rng": self.train_rng.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the models must have the same shape."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise InputError("not a fidkit TTUR checkpoint")
        if state["shape"] != self.shape.to_dict():
            raise InputError(
                f"checkpoint models have shape {state['shape']}, the data gives "
                f"{self.shape.to_dict()}; resume with the same --data"
            )
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer_g.load_state_dict(state["optimizer_g"])
        self.optimizer_d.load_state_dict(state["optimizer_d"])
        self.train_rng.set_state(state["train_rng"])
        self.step = int(state["step"])
        self.rows = [dict(row) for row in state["rows"]]
        self.elapsed_s = float(state["elapsed_s"])
        self.loss_sums = [float(value) for value in state["loss_sums"]]
        self.loss_count = int(state["loss_count"])

    def save_checkpoint(self, path: Path) -> None:
        """Write :meth:`state_dict` atomically to `path` (replacing the previous checkpoint)."""
        with atomic_write(path, overwrite=True) as tmp_path:
            torch.save(self.state_dict(), tmp_path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU; only tensors and plain values are unpickled.

    Raises
    ------
    InputError
        If `path` does not exist (nothing to resume) or is not a readable fidkit TTUR checkpoint.
    """
    if not Path(path).exists():
        raise InputError(f"{path} does not exist: nothing to resume; run without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt files
        raise InputError(
            f"{path} cannot be read as a fidkit TTUR checkpoint ({error}); start again with --force"
        ) from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not a fidkit TTUR checkpoint; start again with --force")
    return state


def write_sample_grid(images: np.ndarray, path: Path, *, side: int = SAMPLE_GRID_SIDE) -> Path:
    """Write up to ``side * side`` uint8 ``(B, H, W, 3)`` images as one PNG grid (Pillow, atomic).

    FID is a number; the grid lets a user see what it is measuring. Missing cells stay black.
    """
    from PIL import Image

    n_cells = side * side
    height, width = images.shape[1:3]
    grid = np.zeros((side * height, side * width, 3), dtype=np.uint8)
    for index, image in enumerate(images[:n_cells]):
        row, column = divmod(index, side)
        grid[row * height:(row + 1) * height, column * width:(column + 1) * width] = image
    with atomic_write(path, overwrite=True) as tmp_path:
        Image.fromarray(grid).save(tmp_path, format="PNG")
    return path


def write_metrics_csv(rows: list[dict[str, float]], path: Path) -> None:
    """Write the metrics rows as CSV (columns :data:`METRICS_COLUMNS`), atomically."""
    with atomic_write(path, overwrite=True) as tmp_path:
        with open(tmp_path, "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(METRICS_COLUMNS)
            for row in rows:
                writer.writerow(
                    [
                        int(row["step"]),
                        _format_float(row["fid"]),
                        _format_float(row["loss_d"]),
                        _format_float(row["loss_g"]),
                        f"{float(row['wall_time_s']):.3f}",
                    ]
                )


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """Read a ``metrics.csv`` back into rows (``step`` as int, the rest as float)."""
    with open(path, newline="", encoding="utf-8") as stream:
        return [
            {
                name: (int(value) if name == "step" else float(value))
                for name, value in record.items()
            }
            for record in csv.DictReader(stream)
        ]


def _format_float(value: float) -> str:
    # repr-precision keeps the CSV an exact record of what the run computed.
    return repr(float(value))


def reference_stats(
    config: TTURConfig, extractor: Any, data: TrainingData | None = None
) -> Any:
    """The dataset's statistics for FID, via :func:`fidkit.compute_stats` (so cached).

    ``config.ref_samples`` images are used (all when None), picked with ``config.seed``.

    When the training images had to be resized (``data.n_resized > 0``), the reference is drawn
    from those resized training images in memory instead of the source files: the generator
    only ever produces images at the GAN's resolution, so a reference at the source's resolution
    would put the resize gap into every FID and keep even a perfect generator far from 0. The
    reference then holds at most ``data.n_images`` (``train_samples``) images.

    Parameters
    ----------
    config : TTURConfig
        Source, ``ref_samples``, seed and feature options.
    extractor : FeatureExtractor
        Shared with the evaluations.
    data : TrainingData, optional
        The training images as the GAN sees them; needed for the resized case.

    Returns
    -------
    Stats
    """
    source: Any = config.data
    if data is not None and data.n_resized > 0:
        # As the generator's output meets the extractor: uint8 (N, H, W, 3).
        source = nchw_to_rgb(data.images)
        n_reference = (
            source.shape[0] if config.ref_samples is None
            else min(config.ref_samples, source.shape[0])
        )
        logger.info(
            "reference statistics from %d of the %d training images at the GAN's resolution "
            "%dx%d (the source's images were resized for training)",
            n_reference, source.shape[0], data.image_size, data.image_size,
        )
    return fidkit.compute_stats(
        source,
        weights=config.weights,
        device=config.device,
        batch_size=config.feature_batch_size,
        limit=config.ref_samples,
        seed=config.seed if config.ref_samples is not None else None,
        extractor=extractor,
    )


@dataclass
class RunResult:
    """What a training run left behind.

    Attributes
    ----------
    config : TTURConfig
        The configuration the run used (from the checkpoint when resumed).
    rows : list of dict
        All metrics rows, resumed ones included.
    out : pathlib.Path
        The run folder.
    metrics_path, checkpoint_path : pathlib.Path
        The CSV and the checkpoint.
    plot_path : pathlib.Path or None
        The FID plot; None when matplotlib is missing.
    resumed_from_step : int
        0 for a fresh run.
    """

    config: TTURConfig
    rows: list[dict[str, float]]
    out: Path
    metrics_path: Path
    checkpoint_path: Path
    plot_path: Path | None
    resumed_from_step: int = 0

    @property
    def final_fid(self) -> float:
        """FID at the last evaluation (nan if none)."""
        return float(self.rows[-1]["fid"]) if self.rows else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "out": str(self.out),
            "config": self.config.to_dict(),
            "rows": [dict(row) for row in self.rows],
            "final_fid": self.final_fid,
            "metrics_csv": str(self.metrics_path),
            "checkpoint": str(self.checkpoint_path),
            "plot": str(self.plot_path) if self.plot_path else None,
            "resumed_from_step": self.resumed_from_step,
        }


@dataclass
class CompareResult:
    """The two runs of ``--compare`` and the figure holding both curves."""

    runs: dict[str, RunResult] = field(default_factory=dict)
    plot_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": {name: run.to_dict() for name, run in self.runs.items()},
            "plot": str(self.plot_path) if self.plot_path else None,
        }


def _refuse_overwrite(existing: Path) -> None:
    raise OverwriteError(
        f"{existing} already exists; pass --resume to continue the run there, --force to start "
        "over (replacing the run's files), or choose another --out"
    )


def _resumed_config(config: TTURConfig, state: dict[str, Any]) -> TTURConfig:
    """The configuration of a run resumed from `state`: the checkpoint's settings, except the
    folder, ``steps`` (the new total) and the device, weights and feature batch size, which
    come from `config`."""
    return replace(
        TTURConfig.from_dict(state["config"]),
        out=Path(config.out),
        steps=config.steps,
        device=config.device,
        weights=config.weights,
        feature_batch_size=config.feature_batch_size,
    )


def _check_same_data_settings(out: Path, configs: dict[str, TTURConfig]) -> dict[str, Any]:
    """The data settings the resumed compare runs in `configs` share; raise if they differ.

    Both runs share one copy of the training images and one reference, so they must have been
    made with the same data settings; the command line's are ignored, as :func:`run_ttur` ignores
    them when resuming.
    """
    first, second = (
        {key: getattr(configs[name], key) for key in _DATA_SETTINGS} for name in COMPARE_RUNS
    )
    if first != second:
        differing = ", ".join(
            f"{key} ({first[key]!r} against {second[key]!r})"
            for key in _DATA_SETTINGS if first[key] != second[key]
        )
        raise InputError(
            f"the runs in {out / COMPARE_RUNS[0]} and {out / COMPARE_RUNS[1]} were made with "
            f"different data settings: {differing}; resume each with fidkit ttur --out <run> "
            "--resume, or start over with --force"
        )
    logger.info("resuming compare in %s with the checkpoints' data settings %s", out, first)
    return first


def _curve_label(config: TTURConfig) -> str:
    """The legend of a run's FID curve: its rule and effective rates."""
    rule = "one time-scale" if config.one_time_scale else "TTUR"
    return f"{rule} (lr_d={config.effective_lr_d:g}, lr_g={config.effective_lr_g:g})"


def _should_evaluate(step: int, config: TTURConfig) -> bool:
    return step % config.eval_every == 0 or step == config.steps


def run_ttur(
    config: TTURConfig,
    *,
    resume: bool = False,
    force: bool = False,
    extractor: Any = None,
    ref_stats: Any = None,
    data: TrainingData | None = None,
    on_eval: Callable[[dict[str, float]], None] | None = None,
    state: dict[str, Any] | None = None,
) -> RunResult:
    """Train a DCGAN with TTUR (or one time-scale) and track its FID.

    Parameters
    ----------
    config : TTURConfig
        The run. With `resume`, the checkpoint's configuration is used instead, except
        ``steps`` (the new total) and the device, weights and feature batch size.
    resume : bool
        Continue from ``config.out / checkpoint.pt``.
    force : bool
        Start afresh in a folder that already holds a run (its files are replaced).
    extractor : FeatureExtractor, optional
        Reused if given (``--compare`` shares one); built from the config otherwise.
    ref_stats : Stats, optional
        The dataset's statistics; computed (and cached) with :func:`reference_stats` otherwise.
    data : TrainingData, optional
        Real images already in memory; read from ``config.data`` otherwise.
    on_eval : callable, optional
        Called with each new metrics row.
    state : dict, optional
        With `resume`: the checkpoint of ``config.out``, already loaded with
        :func:`load_checkpoint` (``--compare`` loads it once); loaded here otherwise.

    Returns
    -------
    RunResult

    Raises
    ------
    OverwriteError
        If any file the run writes (:data:`RUN_OUTPUT_NAMES`) already exists in the folder and
        neither `resume` nor `force` is given.
    InputError
        If `resume` is given and there is no readable checkpoint.
    """
    out = Path(config.out)
    checkpoint_path = out / CHECKPOINT_NAME
    metrics_path = out / METRICS_NAME
    if resume:
        if state is None:
            state = load_checkpoint(checkpoint_path)
        config = _resumed_config(config, state)
        logger.info(
            "resuming %s at step %d of %d (settings from the checkpoint)",
            out, int(state["step"]), config.steps,
        )
    else:
        state = None
        if not force and (existing := existing_output(out, RUN_OUTPUT_NAMES)) is not None:
            _refuse_overwrite(existing)

    if data is None:
        data = load_training_data(config.data, limit=config.train_samples, seed=config.seed)
    if extractor is None:
        extractor = make_extractor(config.weights, config.device, config.feature_batch_size)
    if ref_stats is None:
        ref_stats = reference_stats(config, extractor, data)
    if config.eval_samples < fidkit.FEATURE_DIM:
        logger.warning(
            "eval_samples=%d is below the feature dimension %d: FID is biased upwards and "
            "noisy; compare runs only at equal eval_samples (10000 or more for reported numbers)",
            config.eval_samples,
            fidkit.FEATURE_DIM,
        )

    with deterministic_torch():
        trainer = TTURTrainer(config, data)
        if state is not None:
            trainer.load_state_dict(state)
        resumed_from_step = trainer.step
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / CONFIG_NAME, overwrite=True) as tmp_path:
            tmp_path.write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
        logger.info(
            "training %s: %s, lr_d=%g lr_g=%g, %d steps of %d images on %s",
            out,
            "one time-scale" if config.one_time_scale else "TTUR",
            config.effective_lr_d,
            config.effective_lr_g,
            config.steps,
            config.train_batch_size,
            trainer.device,
        )
        segment_start = time.perf_counter()
        elapsed_at_start = trainer.elapsed_s
        while trainer.step < config.steps:
            trainer.train_step()
            if _should_evaluate(trainer.step, config):
                result = trainer.evaluate(extractor, ref_stats)
                trainer.elapsed_s = elapsed_at_start + time.perf_counter() - segment_start
                row = trainer.record(float(result))
                logger.info(
                    "step %d/%d  FID %.2f  loss_d %.4f  loss_g %.4f",
                    row["step"], config.steps, row["fid"], row["loss_d"], row["loss_g"],
                )
                if on_eval is not None:
                    on_eval(row)
                # CSV first, then the checkpoint: a crash in between leaves a CSV with one row
                # the checkpoint lacks, which the resume rewrites from the checkpoint's rows.
                write_metrics_csv(trainer.rows, metrics_path)
                trainer.save_checkpoint(checkpoint_path)
                write_sample_grid(trainer.samples, out / SAMPLES_NAME)

    # Always from the rows the run holds: a resume with no new steps must also replace a CSV
    # left with a row its checkpoint lacks (a crash between the two writes).
    write_metrics_csv(trainer.rows, metrics_path)
    from fidkit.ttur.plotting import plot_fid_curves

    plot_path = plot_fid_curves(
        {_curve_label(config): trainer.rows},
        out / PLOT_NAME,
        title=f"FID during training on {Path(data.source_name).name}",
    )
    return RunResult(
        config=config,
        rows=list(trainer.rows),
        out=out,
        metrics_path=metrics_path,
        checkpoint_path=checkpoint_path,
        plot_path=plot_path,
        resumed_from_step=resumed_from_step,
    )


def run_compare(
    config: TTURConfig,
    *,
    resume: bool = False,
    force: bool = False,
    extractor: Any = None,
    on_eval: Callable[[str, dict[str, float]], None] | None = None,
) -> CompareResult:
    """Run TTUR and the one time-scale baseline with the same seed; plot both FID curves.

    The runs go to ``out/ttur`` and ``out/one-time-scale``; they share the data in memory, the
    feature extractor and the reference statistics. The figure is ``out/compare.png``.

    With `resume`, the data and the reference are built from the settings saved in the two
    runs' checkpoints (as each run's model and rates are), not from `config`.

    Raises
    ------
    OverwriteError
        If any file the command writes already exists and neither `resume` nor `force` is given.
    InputError
        With `resume`: a run's checkpoint is missing or unreadable, or the two runs were made
        with different data settings (data, train_samples, ref_samples, seed).
    """
    out = Path(config.out)
    if not resume and not force:
        existing = existing_output(out, COMPARE_OUTPUT_NAMES)
        for name in COMPARE_RUNS:
            existing = existing or existing_output(out / name, RUN_OUTPUT_NAMES)
        if existing is not None:
            _refuse_overwrite(existing)
    run_configs = {
        name: replace(config, out=out / name, one_time_scale=(name == "one-time-scale"))
        for name in COMPARE_RUNS
    }
    states: dict[str, dict[str, Any]] = {}
    data_config = config
    if resume:
        # Each checkpoint is loaded once, here; its run gets it as `state`.
        states = {name: load_checkpoint(out / name / CHECKPOINT_NAME) for name in COMPARE_RUNS}
        resumed = {name: _resumed_config(run_configs[name], states[name]) for name in COMPARE_RUNS}
        data_config = replace(config, **_check_same_data_settings(out, resumed))
    data = load_training_data(
        data_config.data, limit=data_config.train_samples, seed=data_config.seed
    )
    if extractor is None:
        extractor = make_extractor(config.weights, config.device, config.feature_batch_size)
    ref_stats = reference_stats(data_config, extractor, data)
    result = CompareResult()
    for name in COMPARE_RUNS:
        callback = None if on_eval is None else (lambda row, name=name: on_eval(name, row))
        result.runs[name] = run_ttur(
            run_configs[name],
            resume=resume,
            force=force,
            extractor=extractor,
            ref_stats=ref_stats,
            data=data,
            on_eval=callback,
            state=states.get(name),
        )
    from fidkit.ttur.plotting import plot_fid_curves

    curves = {_curve_label(run.config): run.rows for run in result.runs.values()}
    result.plot_path = plot_fid_curves(
        curves, out / COMPARE_PLOT_NAME, title=f"TTUR against one time-scale on {Path(data.source_name).name}"
    )
    return result
