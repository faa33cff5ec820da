"""The settings of a ``fidkit ttur`` run: :class:`TTURConfig`, its default learning rates, and the
checks of its ``--out`` folder (shared with ``fidkit validate``).

Only the standard library is imported at module level, so ``fidkit ttur --help`` can show these defaults
without loading torch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fidkit.errors import InputError, OverwriteError

__all__ = [
    "TTURConfig", "DEFAULT_LR_D", "DEFAULT_LR_G", "DEFAULT_BETAS", "output_folder", "check_output_files",
    "make_output_folder", "prepare_output_folder", "OutFolderError",
]

#: TTUR learning rates (discriminator four times faster than generator), the DCGAN setting most
#: commonly cited from the TTUR paper. The one time-scale baseline trains both networks at
#: DEFAULT_LR_G (see :attr:`TTURConfig.effective_lr_d`).
DEFAULT_LR_D = 4e-4
DEFAULT_LR_G = 1e-4
#: Adam (beta1, beta2) of both optimisers; beta1 = 0.5 as in DCGAN.
DEFAULT_BETAS = (0.5, 0.999)


class OutFolderError(InputError):
    """An ``--out`` that cannot be the run's folder: over an input, a file, or under a file (before any work)."""


def output_folder(out: str | Path, *, inputs: Mapping[str, object] | None = None) -> Path:
    """`out` as the folder of a run's files (``--out``), refused at once when it cannot be one.

    Refused: `out` is one of the `inputs` (the same file or folder, links followed), lies inside an
    input folder (the run's PNGs would be read back as images of it, and ``--force`` would replace a
    file of the user's there), lies under an input file, or is a file. Found here, not as a bare
    "[Errno 17]" when the first file is written.

    Parameters
    ----------
    out : str or path
        The ``--out`` folder.
    inputs : mapping of str to source, optional
        What the run reads, by the option that names it (``{"--data": "mnist/"}``); sources that
        are not existing paths (arrays, dataset names) are passed over.
    """
    folder = Path(out)
    given = {option: spec for option, spec in (inputs or {}).items() if spec is not None}
    # The input itself first (its message names both), then a plain file, then inside an input.
    for option, spec in given.items():
        _refuse_out_over_input(folder, option, spec, inside=False)
    if folder.exists() and not folder.is_dir():
        raise OutFolderError(f"--out {folder} is a file, not a folder; give a folder for the run's files")
    for option, spec in given.items():
        _refuse_out_over_input(folder, option, spec, inside=True)
    return folder


def _refuse_out_over_input(folder: Path, option: str, spec: object, *, inside: bool) -> None:
    """Raise when the ``--out`` `folder` is the input `spec` of `option` (`inside`: lies inside or under it)."""
    if not isinstance(spec, (str, os.PathLike)) or not os.path.exists(spec):
        return
    source = Path(spec)
    kind = "folder" if source.is_dir() else "file"
    resolved, resolved_source = folder.resolve(), source.resolve()
    if not inside:
        try:
            # A hard link (or any other name) of the input is the input.
            same = resolved == resolved_source or (folder.exists() and os.path.samefile(folder, source))
        except OSError:
            same = False
        if not same:
            return
        where = f"is the {option} {kind} {spec} itself"
    elif resolved != resolved_source and resolved.is_relative_to(resolved_source):
        where = f"lies inside the {option} {kind} {spec}"
    else:
        return
    if kind == "folder":
        why = (
            "the run would write its files among the images it reads (a PNG written there is read "
            "back as one of them, and --force would replace a file of yours); choose an --out folder "
            f"outside {spec}"
        )
    else:
        why = f"the run's files cannot go into a file it reads; choose an --out folder, not {spec}"
    raise OutFolderError(f"--out {folder} {where}: {why}")


def check_output_files(files: Mapping[Path, Iterable[str]], *, inputs: Iterable[object] = ()) -> None:
    """Before any work: check that every file a run writes can be written: `files` maps each output folder
    to the names written in it.

    Each file must be absent or a regular file (a link, folder, FIFO... there is refused even with
    ``--force``), must not be a file the run reads (:func:`fidkit.sources.refuse_outputs_over_inputs`: an
    image of an input folder through a link, say; an input folder is walked once for all the files), and the
    nearest existing folder on the way to its folder must be a folder new files can be created in. Whether
    existing files may be replaced (``--force``, ``--resume``) is the caller's to decide first.

    Raises
    ------
    OverwriteError
        An output name is a link or not a regular file, or is one of the run's inputs.
    InputError
        A file lies on the way to an output folder, or there is no permission to create it; naming it and the fix.
    """
    from fidkit._fs import check_writable_destination
    from fidkit.sources import refuse_outputs_over_inputs

    paths = {out: [out / name for name in names] for out, names in files.items()}
    sources = [spec for spec in inputs if spec is not None]
    refuse_outputs_over_inputs([path for folder in paths.values() for path in folder], *sources, what="--out")
    for out, folder in paths.items():
        for path in folder:
            try:
                check_writable_destination(path, overwrite=True)
            except OverwriteError:  # a link or a folder at the name: its message says it all
                raise
            except OSError as error:  # a file on the way to `out`, a folder without write permission
                raise OutFolderError(f"--out {out} cannot hold the run's files: {error}") from error


def make_output_folder(out: Path) -> None:
    """Create the ``--out`` folder `out` (and its parents); an error names it and the fix."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutFolderError(
            f"--out {out} cannot be created ({error.strerror or error}); choose an --out folder in a "
            "writable place"
        ) from error


def prepare_output_folder(out: Path, names: Iterable[str], *, inputs: Iterable[object] = ()) -> None:
    """:func:`check_output_files`, then :func:`make_output_folder`: the run's folder, ready before any work."""
    check_output_files({out: names}, inputs=inputs)
    make_output_folder(out)


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
        ``"auto"``, ``"cpu"``, ``"cuda"`` (``"cuda:N"``) or ``"tensorrt"`` (``"tensorrt:N"``: the feature
        extractor on TensorRT, the GAN on ``cuda:N``); see :func:`fidkit.ttur.trainer.resolve_torch_device`.
    weights : str or None
        Inception weights (path); None resolves them the usual way.
    feature_batch_size : int or None
        Batch size of the feature extractor; None: the device's default, as for ``fidkit compute`` (200 on a GPU,
        25 on the CPU).
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
    feature_batch_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "train_batch_size", "eval_every", "eval_samples", "latent_dim", "width"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.train_batch_size < 2:
            # Batch normalisation in training mode needs two values per channel.
            raise InputError(f"train_batch_size must be at least 2, got {self.train_batch_size}")
        if self.eval_samples < 2:
            raise InputError("eval_samples must be at least 2 (a covariance needs two samples)")
        for name in ("lr_d", "lr_g"):
            if not 0 < float(getattr(self, name)) < float("inf"):
                raise InputError(f"{name} must be a positive finite number, got {getattr(self, name)}")
        # Last: the only check that looks at the filesystem.
        self.out = output_folder(self.out, inputs={"--data": self.data})

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
