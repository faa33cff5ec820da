"""Feature statistics: mean, covariance and sample count, built exactly from feature batches and merged exactly.

A :class:`Stats` holds what the Fréchet distance needs from one set of images: ``mu`` (float64, the mean
feature), ``sigma`` (float64, the covariance with ddof = 1), ``n`` (the number of images, ``None`` for files
written by TTUR or pytorch-fid, which do not record it) and free-form metadata. When ``n <= dim`` it also
carries ``factor``, the exact ``(dim, n - 1)`` square root of ``sigma`` built from the centred features
(:func:`centred_factor`): ``sigma`` of so few samples is singular, and the distance is exact only from the
features themselves. The distance's own linear algebra lives in :mod:`fidkit.frechet`; the ``.npz`` file
format in :mod:`fidkit.statsfile`.

:class:`StatsAccumulator` builds a :class:`Stats` from feature batches in float64 with memory bounded by
``dim x dim``, and merges exactly (Chan et al.'s pairwise update), so shards computed in separate processes
combine into the statistics of their union.
"""

from fidkit.stats.accumulator import StatsAccumulator
from fidkit.stats.core import MetadataValue, Stats, centred_factor, relabelled

__all__ = ["Stats", "StatsAccumulator", "MetadataValue", "centred_factor", "relabelled"]
