"""The dataset's reference statistics of a ``fidkit ttur`` run (:func:`reference_stats`)."""

from __future__ import annotations

import logging
from typing import Any

import fidkit
from fidkit.ttur.config import TTURConfig
from fidkit.ttur.data import TrainingData, nchw_to_rgb
from fidkit.ttur.progress import CountingExtractor, Progress, stderr_is_terminal

__all__ = ["reference_stats", "weights_sha256_of"]

logger = logging.getLogger(__name__)


def reference_stats(
    config: TTURConfig, extractor: Any, data: TrainingData | None = None
) -> fidkit.Stats:
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
    n_reference = config.ref_samples
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
    options = {
        "batch_size": config.feature_batch_size,
        "limit": config.ref_samples,
        "seed": config.seed if config.ref_samples is not None else None,
    }
    if extractor is None:
        # A given extractor was built already (from these settings, or as its caller chose): it runs as it is.
        options.update(weights=config.weights, device=config.device)
    if stderr_is_terminal():
        return fidkit.compute_stats(source, extractor=extractor, **options)  # fidkit's own bar
    # No bar where stderr is not a terminal: lines, counted by the extractor (the statistics stay cached).
    with Progress(n_reference, "reference statistics", unit="img", bar=False) as progress:
        return fidkit.compute_stats(source, extractor=CountingExtractor(extractor, progress), **options)


def weights_sha256_of(stats: Any) -> str | None:
    """The ``weights_sha256`` the statistics `stats` record (the network a run's FIDs come from); None if none."""
    value = getattr(stats, "metadata", {}).get("weights_sha256")
    return None if value is None else str(value)
