"""Statistics files in ADM's reference batch layout: pool_3 and spatial statistics, and the reference images.

OpenAI's ADM evaluator (guided-diffusion ``evaluations/evaluator.py``) publishes its reference batches (e.g.
``VIRTUAL_imagenet256_labeled.npz``) as ``.npz`` files holding

- ``mu`` (2048,) and ``sigma`` (2048, 2048): the pool_3 statistics of the whole dataset (what FID reads);
- ``mu_s`` (2023,) and ``sigma_s`` (2023, 2023): the statistics of the spatial features over the whole dataset
  (the first 7 channels of TF's ``mixed_6/conv``, 17 x 17 x 7 values flattened in NHWC order: what sFID reads);
- ``arr_0`` (10,000, H, W, 3) uint8: a sample of the dataset's images, on whose pool_3 features the evaluator
  computes precision and recall.

None of them records N or the network: the evaluator computes them with TF's 2015 Inception, under what fidkit
calls the ``tf`` convention (docs/compatibility.md). :meth:`fidkit.stats.Stats.load` returns such a file as a
:class:`ReferenceBatch`, a :class:`~fidkit.stats.Stats` of ``mu`` and ``sigma`` that also carries
:attr:`~ReferenceBatch.spatial` (a Stats of ``mu_s`` and ``sigma_s``, checked exactly as ``mu`` and ``sigma`` are)
and :attr:`~ReferenceBatch.images` (the shape of ``arr_0``, read from its header: the images are never read here).
A statistics file without any of these keys loads as a plain Stats.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from fidkit._npz import NpzReader
from fidkit.errors import InputError, StatsFileError
from fidkit.stats.core import Stats, relabelled
from fidkit.statsfile import KEY_MU_S, KEY_REFERENCE_IMAGES as KEY_IMAGES, KEY_SIGMA_S, _check_stats_headers

__all__ = ["ReferenceBatch", "ImagesInFile", "with_reference_contents", "images_hint"]

# The keys are spelled in fidkit.statsfile, the file format (its reader says which of them a file holds).
# arr_0 is the only key ADM's evaluator reads images from (``open_npz_array(path, "arr_0")``).
_SPATIAL_KEYS = (KEY_MU_S, KEY_SIGMA_S)


class ImagesInFile(NamedTuple):
    """An image array stored in a statistics file, as its ``.npy`` header declares it (its data is not read)."""

    key: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def what(self) -> str:
        """``"10,000 images of 256x256x3 uint8"``, or the bare shape for an array that is not NHWC images."""
        if len(self.shape) == 4:
            n, height, width, channels = self.shape
            return f"{n:,} image{'' if n == 1 else 's'} of {height}x{width}x{channels} {self.dtype}"
        return f"an array of shape {self.shape} {self.dtype}"

    def describe(self) -> str:
        """``"10,000 images of 256x256x3 uint8 in arr_0"``."""
        return f"{self.what} in {self.key}"


@dataclass(eq=False)
class ReferenceBatch(Stats):
    """Statistics of ``mu`` and ``sigma`` from a file in ADM's reference batch layout (module docstring).

    Parameters
    ----------
    mu, sigma, n, metadata, factor, path
        As :class:`~fidkit.stats.Stats`: the pool_3 statistics (``n`` None: ADM records no N).
    spatial : Stats or None
        The statistics of the spatial features (``mu_s``, ``sigma_s``: 2023-dimensional for the 2015
        Inception), which sFID is computed against; None when the file holds none.
    images : ImagesInFile or None
        The reference images stored beside the statistics (``arr_0``), by shape only; None when there are none.
    """

    spatial: Stats | None = None
    images: ImagesInFile | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.spatial is not None and not isinstance(self.spatial, Stats):
            raise InputError(f"spatial must be a fidkit.Stats of the spatial features or None, not "
                             f"{type(self.spatial).__name__}")
        if self.images is not None and not isinstance(self.images, ImagesInFile):
            raise InputError(f"images must be an ImagesInFile or None, not {type(self.images).__name__}")

    @classmethod
    def _wrapping(cls, stats: Stats, spatial: Stats | None, images: ImagesInFile | None) -> ReferenceBatch:
        """`stats` (already checked, read-only arrays: shared, not copied nor checked again) with the extras."""
        batch = cls.__new__(cls)
        batch.__dict__.update(stats.__dict__)
        batch.spatial = spatial
        batch.images = images
        return batch

    @property
    def contents(self) -> str:
        """What the file holds, in words: ``"ADM reference batch: pool_3 and spatial statistics, 10,000 images of
        256x256x3 uint8 in arr_0"``."""
        if self.spatial is not None:
            held = "ADM reference batch: pool_3 and spatial statistics (mu, sigma, mu_s, sigma_s)"
        else:
            held = "mu and sigma"
        return f"{held}, {self.images.describe() if self.images is not None else 'no images'}"


def with_reference_contents(stats: Stats, file_path: Path) -> Stats:
    """`stats`, loaded from `file_path`, as a :class:`ReferenceBatch` when the file also holds ``mu_s`` and
    ``sigma_s`` or images in ``arr_0``; `stats` itself otherwise.

    ``mu_s`` and ``sigma_s`` are checked exactly as ``mu`` and ``sigma`` are: their headers by
    :mod:`fidkit.statsfile` (a vector and its square covariance, a bounded size) before they are read, their
    values by :class:`~fidkit.stats.Stats` (finite, symmetric, non-negative variances; positive semidefinite
    where the distance uses them). Only the header of ``arr_0`` is read.

    Raises
    ------
    StatsFileError
        One of ``mu_s`` and ``sigma_s`` without the other, or either not valid statistics; a damaged ``arr_0``
        header.
    """
    label = f"{file_path} (spatial statistics mu_s and sigma_s)"
    with NpzReader(file_path, str(file_path), StatsFileError, "recompute it or pass the image folder") as npz:
        keys = set(npz.keys)
        if not keys & {*_SPATIAL_KEYS, KEY_IMAGES}:
            return stats
        present = [key for key in _SPATIAL_KEYS if key in keys]
        if len(present) == 1:
            missing = next(key for key in _SPATIAL_KEYS if key not in keys)
            raise StatsFileError(
                f"{file_path}: has {present[0]!r} but no {missing!r}: the spatial statistics (ADM's reference batch "
                "layout) are cut in half; the file is damaged: download or recompute it"
            )
        spatial = None
        if present:
            headers = {"mu": npz.header(KEY_MU_S), "sigma": npz.header(KEY_SIGMA_S)}
            # The checks of mu and sigma, one place; the label says which arrays "mu" and "sigma" mean here.
            _check_stats_headers(headers, stats.n, npz, Path(label))
            mu_s, sigma_s = (npz.read(header.key, header) for header in headers.values())
            spatial = _spatial_stats(mu_s, sigma_s, stats, label, file_path)
        images = None
        if KEY_IMAGES in keys:
            header = npz.header(KEY_IMAGES)
            images = ImagesInFile(KEY_IMAGES, header.shape, str(header.dtype))
    return ReferenceBatch._wrapping(stats, spatial, images)


def _spatial_stats(mu_s: Any, sigma_s: Any, stats: Stats, label: str, file_path: Path) -> Stats:
    try:
        # The same n and metadata as the pool_3 statistics: the same images through the same network.
        spatial = Stats(mu=mu_s, sigma=sigma_s, n=stats.n, metadata=stats.metadata)
    except InputError as exc:
        raise StatsFileError(f"{label}: {exc}; the file is corrupt: download or recompute it") from exc
    return relabelled(spatial, path=file_path)


def images_hint(side: Any) -> str:
    """For a metric a statistics file cannot serve: how to use the reference images it holds in ``arr_0``, as a
    clause to append to the refusal (``""`` when it holds none)."""
    images = getattr(side, "images", None)
    if not isinstance(side, ReferenceBatch) or images is None or side.path is None:
        return ""
    path = Path(side.path)
    target = path.with_name(f"{path.stem}_{images.key}.npy")
    # Double-quoted Python strings (JSON's are valid ones) inside a single-quoted shell word.
    code = (f"import numpy as np; np.save({json.dumps(str(target))}, "
            f"np.load({json.dumps(str(path))})[{json.dumps(images.key)}])")
    return (
        f"; {path} holds ADM's reference images in {images.key} ({images.what}), on whose pool_3 features "
        "ADM's evaluator computes precision and recall: save them as a .npy and pass that as the side instead: "
        f"python -c {shlex.quote(code)} (FID and sFID against those images are not ADM's, which use the file's "
        "statistics of the whole dataset)"
    )
