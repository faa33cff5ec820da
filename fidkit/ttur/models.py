"""A small DCGAN-style generator and discriminator for 28x28 and 32x32 images.

The networks are deliberately plain (strided convolutions, batch normalisation in the generator
and in every discriminator layer but the first, LeakyReLU 0.2, tanh output, N(0, 0.02)
initialisation, as in Radford et al. 2016): the trainer exists to show how FID tracks GAN training, not to reach a
state-of-the-art FID.

Spatial sizes are derived from the image size: the generator starts from a ``base x base`` map
and doubles it until it reaches the image size (28 = 7 * 2**2, 32 = 4 * 2**3); the discriminator
mirrors that path with stride-2 convolutions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fidkit.errors import InputError

__all__ = ["GANShape", "Generator", "Discriminator", "build_models", "upsampling_plan"]

#: Standard deviation of the DCGAN weight initialisation (Radford et al. 2016).
INIT_STD = 0.02
#: Slope of the LeakyReLU in the discriminator.
LEAKY_SLOPE = 0.2
#: The smallest feature map the generator starts from and the discriminator ends on.
MIN_BASE_SIZE = 4


@dataclass(frozen=True)
class GANShape:
    """What the generator produces and the discriminator reads.

    Attributes
    ----------
    image_size : int
        Height and width of the square images (28 or 32 are the tested sizes).
    channels : int
        1 for grayscale, 3 for RGB.
    latent_dim : int
        Length of the noise vector fed to the generator.
    width : int
        Number of channels of the widest-resolution convolution; deeper layers use multiples.
    """

    image_size: int
    channels: int
    latent_dim: int = 100
    width: int = 64

    def to_dict(self) -> dict[str, int]:
        """Return the shape as plain ints (for checkpoints)."""
        return {
            "image_size": self.image_size,
            "channels": self.channels,
            "latent_dim": self.latent_dim,
            "width": self.width,
        }


def upsampling_plan(image_size: int) -> tuple[int, int]:
    """Return ``(base_size, n_doublings)`` with ``base_size * 2**n_doublings == image_size``.

    Halve while the size stays even and at least :data:`MIN_BASE_SIZE`: 32 -> (4, 3),
    28 -> (7, 2), 64 -> (4, 4).

    Raises
    ------
    InputError
        If the size cannot be doubled up from a base of at least 4 in at least one step.
    """
    if image_size < 2 * MIN_BASE_SIZE:
        raise InputError(
            f"image size {image_size} is too small for the DCGAN; use images of at least "
            f"{2 * MIN_BASE_SIZE} pixels (28 or 32 are the tested sizes)"
        )
    base_size = image_size
    n_doublings = 0
    while base_size % 2 == 0 and base_size // 2 >= MIN_BASE_SIZE:
        base_size //= 2
        n_doublings += 1
    if n_doublings == 0:
        raise InputError(
            f"image size {image_size} cannot be reached by doubling a feature map; "
            "use 28 or 32 (images are resized to one of these when needed)"
        )
    return base_size, n_doublings


class Generator(nn.Module):
    """Map noise ``(B, latent_dim)`` to images ``(B, channels, size, size)`` in [-1, 1]."""

    def __init__(self, shape: GANShape) -> None:
        super().__init__()
        self.shape = shape
        base_size, n_doublings = upsampling_plan(shape.image_size)
        self.base_size = base_size
        # The deepest map is widest so that each doubling halves the channel count.
        top_channels = shape.width * 2 ** (n_doublings - 1)
        self.project = nn.Sequential(
            nn.Linear(shape.latent_dim, top_channels * base_size * base_size, bias=False),
            nn.BatchNorm1d(top_channels * base_size * base_size),
            nn.ReLU(inplace=True),
        )
        self.top_channels = top_channels
        layers: list[nn.Module] = []
        in_channels = top_channels
        for index in range(n_doublings):
            last = index == n_doublings - 1
            out_channels = shape.channels if last else in_channels // 2
            layers.append(
                nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=last)
            )
            if last:
                layers.append(nn.Tanh())
            else:
                layers += [nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
            in_channels = out_channels
        self.upsample = nn.Sequential(*layers)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        projected = self.project(noise)
        feature_map = projected.view(-1, self.top_channels, self.base_size, self.base_size)
        return self.upsample(feature_map)


class Discriminator(nn.Module):
    """Map images ``(B, channels, size, size)`` in [-1, 1] to one logit per image ``(B,)``."""

    def __init__(self, shape: GANShape) -> None:
        super().__init__()
        self.shape = shape
        base_size, n_doublings = upsampling_plan(shape.image_size)
        layers: list[nn.Module] = []
        in_channels = shape.channels
        out_channels = shape.width
        for index in range(n_doublings):
            layers.append(nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False))
            # DCGAN's discriminator: batch norm on every layer but the first (normalising the raw
            # pixels would hide their overall brightness). Measured on MNIST (20,000 images,
            # batch 64, CPU): without it, TTUR's faster discriminator (4e-4 / 1e-4) drove the
            # generator to flat grey (pixel std 79 -> 6 by step 1000) while equal rates learned
            # digits; with it, both rules learn digits within 1,000 steps.
            if index > 0:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.LeakyReLU(LEAKY_SLOPE, inplace=True))
            in_channels = out_channels
            out_channels *= 2
        self.features = nn.Sequential(*layers)
        self.classify = nn.Linear(in_channels * base_size * base_size, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(images).flatten(1)).squeeze(1)


def _init_weights(module: nn.Module, generator: torch.Generator) -> None:
    """DCGAN initialisation, drawn from `generator` so that it does not touch global RNG state."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(layer.weight, 0.0, INIT_STD, generator=generator)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(layer.weight, 1.0, INIT_STD, generator=generator)
            nn.init.zeros_(layer.bias)


def build_models(shape: GANShape, *, seed: int) -> tuple[Generator, Discriminator]:
    """Build and initialise a generator and a discriminator, reproducibly from `seed`.

    Parameters
    ----------
    shape : GANShape
        Image size, channels, latent size and width.
    seed : int
        Seed of the initialisation; the same seed gives bit-identical weights.

    Returns
    -------
    (Generator, Discriminator)
        On the CPU, in training mode; move them with ``.to(device)``.
    """
    init_rng = torch.Generator(device="cpu")
    init_rng.manual_seed(seed)
    generator = Generator(shape)
    discriminator = Discriminator(shape)
    _init_weights(generator, init_rng)
    _init_weights(discriminator, init_rng)
    return generator, discriminator
