"""The settings of a ``fidkit ttur`` run: :class:`TTURConfig` and its default learning rates.

Only the standard library is imported here, so ``fidkit ttur --help`` can show these defaults
without loading torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fidkit.errors import InputError

__all__ = ["TTURConfig", "DEFAULT_LR_D", "DEFAULT_LR_G", "DEFAULT_BETAS", "output_folder"]

#: TTUR learning rates (discriminator four times faster than generator), the DCGAN setting most
#: commonly cited from the TTUR paper. The one time-scale baseline trains both networks at
#: DEFAULT_LR_G (see :attr:`TTURConfig.effective_lr_d`).
DEFAULT_LR_D = 4e-4
DEFAULT_LR_G = 1e-4
#: Adam (beta1, beta2) of both optimisers; beta1 = 0.5 as in DCGAN.
DEFAULT_BETAS = (0.5, 0.999)


def output_folder(out: str | Path) -> Path:
    """`out` as the folder of a run's files (``--out``), refused at once when it is a file.

    Found here, not as a bare "[Errno 17]" when the first file is written.
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--out {folder} is a file, not a folder; give a folder for the run's files")
    return folder


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
        self.out = output_folder(self.out)
        for name in ("steps", "train_batch_size", "eval_every", "eval_samples", "latent_dim", "width"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.eval_samples < 2:
            raise InputError("eval_samples must be at least 2 (a covariance needs two samples)")
        for name in ("lr_d", "lr_g"):
            if not 0 < float(getattr(self, name)) < float("inf"):
                raise InputError(f"{name} must be a positive finite number, got {getattr(self, name)}")

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
    def from_dict(cls, values: dict[str, Any]) -> TTURConfig:
        """Inverse of :meth:`to_dict` (unknown keys, such as the effective rates, are dropped)."""
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        return cls(**known)
