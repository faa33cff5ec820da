"""One GAN trained with the two time-scale update rule: :class:`TTURTrainer`.

A DCGAN (:mod:`fidkit.ttur.models`) is trained with separate Adam learning rates for the
discriminator and the generator (Heusel et al. 2017, "GANs trained by a two time-scale update rule
converge to a local Nash equilibrium"). :meth:`TTURTrainer.evaluate` measures the FID of images
generated from a fixed set of noise vectors against the dataset's statistics, in memory:
generated images -> uint8 ``(B, H, W, 3)`` -> :func:`fidkit.compute_stats` (no cache) ->
:func:`fidkit.fid_from_stats`. Nothing is written to disk on that path.

The run around it (folders, reference statistics, resume, ``--compare``) is
:mod:`fidkit.ttur.runs`; the files it writes are :mod:`fidkit.ttur.run_files`.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import fidkit
from fidkit._devices import parse_device
from fidkit.errors import FidkitError, InputError, SmallSampleWarning
from fidkit.ttur.config import TTURConfig
from fidkit.ttur.data import TrainingData, nchw_to_rgb
from fidkit.ttur.features import check_extractor_device
from fidkit.ttur.models import GANShape, build_models
from fidkit.ttur.run_files import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    SAMPLE_GRID_SIDE,
    save_checkpoint,
)

__all__ = ["TTURTrainer", "check_devices", "deterministic_torch", "images_to_uint8_rgb", "resolve_torch_device"]

# Offsets that derive independent random streams from the one user seed.
_SEED_OFFSET_TRAIN = 1
_SEED_OFFSET_EVAL = 2
# How many images are generated at once while evaluating (bounds memory for large eval sets).
_EVAL_CHUNK = 500


def resolve_torch_device(device: str) -> torch.device:
    """The torch device the GAN trains on, for fidkit's device string (:func:`fidkit._devices.parse_device`).

    ``"auto"``: CUDA when torch sees a GPU, else the CPU. ``"cuda"`` / ``"cuda:N"``: that GPU (``"cuda"`` is GPU 0,
    as for the FID network). ``"tensorrt"`` / ``"tensorrt:N"``: TensorRT runs only the FID network (through
    onnxruntime); the GAN trains with torch on the same GPU, ``cuda:N``.

    Raises
    ------
    InputError
        Not a device string.
    FidkitError
        A GPU asked for that this torch cannot use (a CPU-only build, no GPU, an index past the GPUs it sees); the
        message says what to install or pass instead. Checked before any work (:func:`fidkit.ttur.runs.run_ttur`).
    """
    parsed = parse_device(device)
    if parsed.kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if parsed.kind == "cpu":
        return torch.device("cpu")
    role = " (TensorRT runs only the FID network; the GAN trains with torch on that GPU)" * (parsed.kind == "tensorrt")
    if not torch.cuda.is_available():
        why = (
            "this torch is a CPU-only build"
            if torch.version.cuda is None
            else f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no usable GPU"
        )
        raise FidkitError(
            f"--device {parsed} asked for, but the GAN trains with torch, which cannot use CUDA here: {why}{role}; "
            "install a CUDA build of torch (https://pytorch.org/get-started/locally/) on a machine with an NVIDIA "
            "GPU, or pass --device cpu"
        )
    count = torch.cuda.device_count()
    if parsed.index >= count:
        raise FidkitError(
            f"--device {parsed} asked for, but torch sees {count} GPU(s) (cuda:0..cuda:{count - 1}){role}; pick one "
            "of those or set CUDA_VISIBLE_DEVICES"
        )
    return torch.device("cuda", parsed.index)


def check_devices(config: TTURConfig, extractor: Any = None) -> None:
    """Refuse, before any work, a ``config.device`` that the FID network (unless `extractor` is given, built already)
    or the GAN cannot run on here (:func:`~fidkit.ttur.features.check_extractor_device`,
    :func:`resolve_torch_device`): not after the data, the network and the reference
    statistics."""
    if extractor is None:
        check_extractor_device(config.weights, config.device, config.feature_batch_size)
    resolve_torch_device(config.device)


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
        #: The sha256 of the Inception weights the run's FIDs come from (the reference statistics'
        #: ``weights_sha256``), kept in the checkpoint so a resume under other weights is refused; None: unknown.
        self.weights_sha256: str | None = None
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
        if not (math.isfinite(loss_values[0]) and math.isfinite(loss_values[1])):
            # Training on NaN or inf losses only produces a broken generator and a meaningless FID curve.
            raise FidkitError(
                f"training diverged at step {self.step}: loss_d = {loss_values[0]}, loss_g = {loss_values[1]} "
                f"(lr_d {self.config.effective_lr_d:g}, lr_g {self.config.effective_lr_g:g}); lower the learning "
                "rates, or start again from an earlier checkpoint"
            )
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

    def evaluate(self, metric: fidkit.FID, progress: Any = None) -> fidkit.FrechetResult:
        """FID of the generator's eval images, through the training-loop metric :class:`fidkit.FID`.

        `metric` holds the dataset's statistics as its reference; its generated side is reset and fed
        the eval images, in memory. The first ``SAMPLE_GRID_SIDE**2`` of them are kept in
        :attr:`samples`. `progress` (a :class:`~fidkit.ttur.progress.Progress`), if given, is told of
        each batch of images done.

        Returns
        -------
        FrechetResult
            ``float(result)`` is the FID; ``metric.compute()`` holds the whole report.
        """
        n_samples = SAMPLE_GRID_SIDE * SAMPLE_GRID_SIDE
        kept: list[np.ndarray] = []
        metric.reset()
        for images in self.generate_batches():
            n_kept = sum(len(batch) for batch in kept)
            if n_kept < n_samples:
                kept.append(images[: n_samples - n_kept])
            metric.update(images)
            if progress is not None:
                progress.update(len(images))
        self.samples = np.concatenate(kept)
        with warnings.catch_warnings():
            # The run warns once about small N at its start; one warning per evaluation is noise.
            warnings.simplefilter("ignore", SmallSampleWarning)
            return metric.compute().frechet

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
            "weights_sha256": self.weights_sha256,
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
        # Absent from checkpoints written before it was recorded: unknown, as then.
        stored_sha = state.get("weights_sha256")
        self.weights_sha256 = None if stored_sha is None else str(stored_sha)

    def save_checkpoint(self, path: Path) -> None:
        """Write :meth:`state_dict` atomically to `path` (replacing the previous checkpoint)."""
        save_checkpoint(self.state_dict(), path)
