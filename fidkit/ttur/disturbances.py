"""The image disturbances of the FID paper (Heusel et al. 2017, appendix), at a strength in [0, 1].

Each disturbance maps uint8 ``(N, H, W, 3)`` images and a strength ``s`` in [0, 1] to disturbed
uint8 images of the same shape. ``s`` is a fraction of a documented maximum: the paper's largest
level for each disturbance.

=================  =============================================  ====================  ==========
name               what                                           parameter             value at 1
=================  =============================================  ====================  ==========
gaussian_noise     ``(1 - a) X + a N``, N Gaussian noise scaled   a, noise weight       0.75
                   per image to [0, 255]
gaussian_blur      Gaussian filter over height and width          sigma, pixels         4
black_rectangles   5 black rectangles of ``a * H`` by ``a * W``   a, side / image side  0.75
                   at random centres
swirl              rotation by ``t * exp(-r ln 2 / R)`` around    t, radians            4
                   the centre, R = half the shorter side
salt_and_pepper    a fraction of pixels set to black or white     p, pixel fraction     0.3
                   (each with probability 1/2)
contamination      a fraction of the images replaced by images    f, image fraction     0.75
                   from another source
=================  =============================================  ====================  ==========

The random choices (noise, rectangle centres, which pixels or images are hit) are drawn from the
seed only, never from the strength: the sets at increasing strengths are nested (a rectangle at
``s = 0.5`` lies inside the one at ``s = 1``; the pixels flipped at ``p = 0.1`` are flipped at
``p = 0.2`` too), so the disturbance grows monotonically in pixel space and the FID curve is not
blurred by fresh randomness at each level. Per-image random streams come from ``(seed, index)``,
so image ``i`` is disturbed identically whatever the batch it is processed in.

Strength 0 returns an unchanged copy of the images.

The swirl is implemented here with :func:`scipy.ndimage.map_coordinates` (no scikit-image
dependency).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fidkit.errors import InputError

__all__ = [
    "Disturbance",
    "DISTURBANCES",
    "get_disturbance",
    "gaussian_noise",
    "gaussian_blur",
    "black_rectangles",
    "swirl",
    "salt_and_pepper",
    "contaminate",
]

#: Number of rectangles per image (the paper's five).
N_RECTANGLES = 5
# Images processed at once by the vectorised disturbances (bounds float64 memory).
_CHUNK = 256


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    return images


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _image_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index)])


def gaussian_noise(images: np.ndarray, alpha: float, *, seed: int = 0) -> np.ndarray:
    """Blend each image with Gaussian noise: ``(1 - alpha) X + alpha N``.

    N is standard normal noise of the image's shape, min-max scaled per image to [0, 255] (the
    paper's "Gaussian noise scaled to [0, 255]").
    """
    images = _check_images(images)
    if alpha == 0:
        return images.copy()
    disturbed = np.empty_like(images)
    for index, image in enumerate(images):
        noise = _image_rng(seed, index).standard_normal(image.shape)
        noise = (noise - noise.min()) * (255.0 / max(np.ptp(noise), 1e-12))
        disturbed[index] = _to_uint8((1.0 - alpha) * image.astype(np.float64) + alpha * noise)
    return disturbed


def gaussian_blur(images: np.ndarray, sigma: float, *, seed: int = 0) -> np.ndarray:
    """Convolve each image with a Gaussian of standard deviation `sigma` pixels (per channel).

    Borders are reflected (``scipy.ndimage.gaussian_filter``, mode ``"reflect"``). `seed` is
    unused (the blur is deterministic); it is accepted for a uniform signature.
    """
    images = _check_images(images)
    if sigma == 0:
        return images.copy()
    disturbed = np.empty_like(images)
    for start in range(0, images.shape[0], _CHUNK):
        chunk = images[start : start + _CHUNK].astype(np.float64)
        blurred = ndimage.gaussian_filter(chunk, sigma=(0, sigma, sigma, 0), mode="reflect")
        disturbed[start : start + _CHUNK] = _to_uint8(blurred)
    return disturbed


def black_rectangles(images: np.ndarray, alpha: float, *, seed: int = 0) -> np.ndarray:
    """Paint :data:`N_RECTANGLES` black rectangles of ``alpha*H`` by ``alpha*W`` on each image.

    The centres are uniform over the image and do not depend on `alpha`; rectangles are clipped
    at the borders. A rectangle at a smaller `alpha` lies inside the one at a larger `alpha`.
    """
    images = _check_images(images)
    height, width = images.shape[1:3]
    rect_h = int(round(alpha * height))
    rect_w = int(round(alpha * width))
    disturbed = images.copy()
    if rect_h == 0 or rect_w == 0:
        return disturbed
    for index in range(images.shape[0]):
        rng = _image_rng(seed, index)
        centres_y = rng.integers(0, height, size=N_RECTANGLES)
        centres_x = rng.integers(0, width, size=N_RECTANGLES)
        for centre_y, centre_x in zip(centres_y, centres_x):
            top = max(int(centre_y) - rect_h // 2, 0)
            left = max(int(centre_x) - rect_w // 2, 0)
            bottom = int(centre_y) - rect_h // 2 + rect_h
            right = int(centre_x) - rect_w // 2 + rect_w
            disturbed[index, top:bottom, left:right] = 0
    return disturbed


def swirl_coordinates(height: int, width: int, amount: float) -> np.ndarray:
    """Source coordinates ``(2, H, W)`` of the swirl: where each output pixel is read from.

    The output pixel at radius r and angle phi around the centre reads the input at radius r and
    angle ``phi + amount * exp(-r ln 2 / R)``, R being half the shorter side: the rotation is
    `amount` radians at the centre and half of it at distance R.
    """
    centre_y = (height - 1) / 2.0
    centre_x = (width - 1) / 2.0
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float64)
    offset_y = grid_y - centre_y
    offset_x = grid_x - centre_x
    radius = np.hypot(offset_y, offset_x)
    half_side = min(height, width) / 2.0
    angle = np.arctan2(offset_y, offset_x) + amount * np.exp(-radius * math.log(2.0) / half_side)
    return np.stack([centre_y + radius * np.sin(angle), centre_x + radius * np.cos(angle)])


def swirl(images: np.ndarray, amount: float, *, seed: int = 0) -> np.ndarray:
    """Swirl each image around its centre by `amount` radians (see :func:`swirl_coordinates`).

    Bilinear interpolation, reflected borders. `seed` is unused (the swirl is deterministic).
    """
    images = _check_images(images)
    if amount == 0:
        return images.copy()
    height, width = images.shape[1:3]
    coordinates = swirl_coordinates(height, width, amount)
    disturbed = np.empty_like(images)
    for index, image in enumerate(images):
        for channel in range(3):
            warped = ndimage.map_coordinates(
                image[..., channel].astype(np.float64), coordinates, order=1, mode="reflect"
            )
            disturbed[index, ..., channel] = _to_uint8(warped)
    return disturbed


def salt_and_pepper(images: np.ndarray, fraction: float, *, seed: int = 0) -> np.ndarray:
    """Set a `fraction` of each image's pixels to black or white (all channels, 1/2 each).

    Pixel ``(y, x)`` is hit when its uniform draw is below `fraction`; its colour comes from a
    second draw. Both draws ignore `fraction`, so the pixels hit at a lower fraction are hit at
    every higher one, with the same colour.
    """
    images = _check_images(images)
    disturbed = images.copy()
    if fraction == 0:
        return disturbed
    for index in range(images.shape[0]):
        rng = _image_rng(seed, index)
        hit_draw = rng.random(images.shape[1:3])
        white = rng.random(images.shape[1:3]) < 0.5
        hit = hit_draw < fraction
        disturbed[index][hit & white] = 255
        disturbed[index][hit & ~white] = 0
    return disturbed


def contaminate(
    images: np.ndarray, fraction: float, *, other: np.ndarray, seed: int = 0
) -> np.ndarray:
    """Replace ``round(fraction * N)`` of the images with images from `other`.

    Which images are replaced follows one seeded permutation, so the replaced set grows with
    `fraction`. `other` must have the images' height and width; it is cycled if it holds fewer
    images than are replaced.
    """
    images = _check_images(images)
    other = _check_images(other)
    if other.shape[1:] != images.shape[1:]:
        raise InputError(
            f"contamination images are {other.shape[1]}x{other.shape[2]}, the images are "
            f"{images.shape[1]}x{images.shape[2]}; resize them first"
        )
    if other.shape[0] == 0:
        raise InputError("no contamination images given")
    disturbed = images.copy()
    n_replaced = int(round(fraction * images.shape[0]))
    if n_replaced == 0:
        return disturbed
    order = np.random.default_rng([int(seed), 0x5EED]).permutation(images.shape[0])
    replaced = order[:n_replaced]
    disturbed[replaced] = other[np.arange(n_replaced) % other.shape[0]]
    return disturbed


@dataclass(frozen=True)
class Disturbance:
    """One disturbance and the meaning of its strength.

    Attributes
    ----------
    name : str
        Identifier used in the CSV, the figure and on the command line.
    parameter : str
        What the strength scales, e.g. ``"sigma (pixels)"``.
    max_value : float
        The parameter's value at strength 1 (the paper's largest level).
    needs_other : bool
        True for contamination, which needs images from another source.
    function : callable
        ``f(images, value, seed=..., [other=...]) -> images``.
    """

    name: str
    parameter: str
    max_value: float
    needs_other: bool
    function: Callable[..., np.ndarray]

    def value(self, strength: float) -> float:
        """The parameter at `strength` (``strength * max_value``)."""
        return float(strength) * self.max_value

    def describe_max(self) -> str:
        """E.g. ``"sigma = 4 pixels"``, for labels."""
        return f"{self.parameter} = {self.max_value:g}"

    def apply(
        self,
        images: np.ndarray,
        strength: float,
        *,
        seed: int = 0,
        other: np.ndarray | None = None,
    ) -> np.ndarray:
        """Disturb uint8 ``(N, H, W, 3)`` `images` at `strength` in [0, 1]."""
        if not 0.0 <= float(strength) <= 1.0:
            raise InputError(f"strength must lie in [0, 1], got {strength}")
        value = self.value(strength)
        if self.needs_other:
            if other is None:
                raise InputError(f"{self.name} needs images from another source (--contaminate)")
            return self.function(images, value, other=other, seed=seed)
        return self.function(images, value, seed=seed)


#: The disturbances of the FID paper, in its order.
DISTURBANCES: tuple[Disturbance, ...] = (
    Disturbance("gaussian_noise", "noise weight a", 0.75, False, gaussian_noise),
    Disturbance("gaussian_blur", "sigma (pixels)", 4.0, False, gaussian_blur),
    Disturbance("black_rectangles", "side/image side a", 0.75, False, black_rectangles),
    Disturbance("swirl", "swirl (radians)", 4.0, False, swirl),
    Disturbance("salt_and_pepper", "pixel fraction p", 0.3, False, salt_and_pepper),
    Disturbance("contamination", "image fraction f", 0.75, True, contaminate),
)


def get_disturbance(name: str) -> Disturbance:
    """Look a disturbance up by name."""
    for disturbance in DISTURBANCES:
        if disturbance.name == name:
            return disturbance
    names = ", ".join(d.name for d in DISTURBANCES)
    raise InputError(f"unknown disturbance {name!r}; choose from {names}")
