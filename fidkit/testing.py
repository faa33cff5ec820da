"""What fidkit's own tests (and benchmarks, and a user's tests of code built on fidkit) need, in one place.

Nothing in the package imports this module. It holds:

- :func:`random_state_dict` / :func:`random_weights_file`: weights of the exact layout of the released
  Inception file, random (the real file cannot be downloaded everywhere);
- :func:`tf_resize_bilinear_numpy`: the TensorFlow 1.x resize as plain numpy, the reference the graph and
  the torch engine are checked against bit for bit;
- :func:`replaced_extractor`: a registry entry swapped for the span of a test (count builds, refuse them,
  serve a shared extractor), through the public registry rather than by patching internals;
- :func:`cifar_batch` and :func:`tar_gz`: small datasets in the real CIFAR python layout, made in memory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from fidkit.extractors import ExtractorEntry, extractor_entry, extractor_names, register_extractor, unregister_extractor
from fidkit.inception.resize import tf_resize_indices
from fidkit.options import DEFAULT_EXTRACTOR

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = [
    "random_state_dict", "random_weights_file", "tf_resize_bilinear_numpy", "replaced_extractor", "cifar_batch",
    "tar_gz",
]


def random_state_dict(seed: int = 0, *, calibration_images: int = 4) -> dict[str, torch.Tensor]:
    """Random weights with the exact layout of the released file, for tests and benchmarks.

    Convolutions are He-scaled; BatchNorm statistics are then measured on a few random images
    (pixel noise and smooth images), which keeps activations in a sane range through all 94
    layers and makes the 2048 features vary from image to image. Deterministic for a given
    `seed` on a given torch build.
    """
    import torch

    from fidkit.inception.network import FIDInceptionV3

    generator = torch.Generator().manual_seed(seed)
    model = FIDInceptionV3()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.2, generator=generator)
                module.reset_running_stats()
                module.momentum = None  # cumulative average: one pass gives the batch statistics
            elif isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, 0.01, generator=generator)
                module.bias.zero_()
        # Images in the normalized range [-1, 1], half smooth (low-resolution noise upsampled, like
        # small real images) and half pixel noise (what tests often feed), so both stay in range.
        n_smooth = max(calibration_images // 2, 1)
        coarse = torch.rand(n_smooth, 3, 19, 19, generator=generator) * 2 - 1
        smooth = torch.nn.functional.interpolate(coarse, size=(299, 299), mode="bilinear", align_corners=False)
        noise = torch.rand(calibration_images - n_smooth, 3, 299, 299, generator=generator) * 2 - 1
        images = torch.cat([smooth, noise])
        model.train()
        model(images)
        model.eval()
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                # Subtract only half of each channel's mean and divide by a correspondingly larger
                # spread. Full standardization cancels large common offsets and amplifies float32
                # round-off through the 94 layers to ~3e-5 relative (float32 vs float64), far more
                # than a trained network does; this way it stays near 3e-6 and the features still
                # vary about 10% from image to image.
                mean = module.running_mean.clone()
                module.running_mean.copy_(0.5 * mean)
                module.running_var.add_(0.5 * mean**2).clamp_(min=1e-3)
                module.momentum = 0.1
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def tf_resize_bilinear_numpy(images: NDArray, out_size: int = 299) -> NDArray[np.float32]:
    """Resize NHWC images to ``out_size x out_size`` the TensorFlow 1.x way, in float32.

    The plain reference implementation against which the ONNX graph is tested.

    Parameters
    ----------
    images : ndarray, shape (B, H, W, C)
        Any real dtype; cast to float32 first, as the graph does.
    out_size : int
        Output height and width.

    Returns
    -------
    ndarray, float32, shape (B, out_size, out_size, C)
    """
    x = np.asarray(images).astype(np.float32)
    _, height, width, _ = x.shape
    x0, x1, wx = tf_resize_indices(width, out_size)
    y0, y1, wy = tf_resize_indices(height, out_size)
    # Width first, then height: the order of TF's compute_lerp (top/bottom rows, then between them).
    left = x[:, :, x0, :]
    right = x[:, :, x1, :]
    rows = left + (right - left) * wx[None, None, :, None]
    top = rows[:, y0, :, :]
    bottom = rows[:, y1, :, :]
    out = top + (bottom - top) * wy[None, :, None, None]
    return out.astype(np.float32, copy=False)


def random_weights_file(path: str | os.PathLike, *, seed: int = 0, legacy: bool = True) -> Path:
    """Write :func:`random_state_dict` to `path` as the released file is saved; return the path."""
    from fidkit.inception.weights import save_state_dict

    return save_state_dict(random_state_dict(seed=seed), path, legacy=legacy)


@contextlib.contextmanager
def replaced_extractor(
    build: Callable[[Any], Any],
    *,
    identity: Callable[[Any], Any] | None = None,
    name: str = DEFAULT_EXTRACTOR,
    feature_dim: Callable[[Any], int | None] | None = None,
) -> Iterator[list[Any]]:
    """Register `build` as the extractor `name` (the FID network by default) for the span; yield the list of the
    options it was built with (one item per build).

    `identity` states its identity without building it (default: the replaced entry's, e.g. the weights' sha256
    of the options); the options' check, the options it reads and the device probe stay the replaced entry's.
    `feature_dim` states its width without building it (:attr:`fidkit.extractors.ExtractorEntry.feature_dim`);
    default unknown until built, never the replaced network's. The original entry comes back at the end.
    """
    original = extractor_entry(name) if name in extractor_names() else None
    built: list[Any] = []

    def counted(options: Any) -> Any:
        built.append(options)
        return build(options)

    if identity is None:
        if original is None:
            raise ValueError(f"no extractor {name!r} to take the identity from; pass identity=")
        identity = original.identity
    register_extractor(
        ExtractorEntry(
            name=name, description=f"(replaced for a test) {original.description if original else name}",
            build=counted, identity=identity, check=original.check if original else (lambda options: {}),
            probe=original.probe if original else (lambda options: None),
            options=original.options if original else (),
            **({} if feature_dim is None else {"feature_dim": feature_dim}),
        ),
        replace=True,
    )
    try:
        yield built
    finally:
        if original is not None:
            register_extractor(original, replace=True)
        else:
            unregister_extractor(name)


def cifar_batch(images: NDArray[np.uint8], **extra: Any) -> bytes:
    """A pickled CIFAR python batch of uint8 ``(N, 32, 32, 3)`` images: rows of 1024 red, 1024 green and 1024 blue
    values, as the real ``data_batch_*`` files; `extra` keys (``labels``, ...) are added to the dict."""
    import pickle

    rows = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), 3072)
    return pickle.dumps({"batch_label": "synthetic", "data": rows, **extra}, protocol=2)


def tar_gz(members: dict[str, bytes]) -> bytes:
    """A ``.tar.gz`` holding `members` (name -> bytes), in memory."""
    return tar_of(list(members.items()), gz=True)


def tar_of(entries: list[tuple[str, bytes | None]], *, gz: bool) -> bytes:
    """A tar (gzipped with `gz`) of ``(name, data)`` entries in this order, in memory; None data is a folder entry."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
