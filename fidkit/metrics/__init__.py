"""Evaluation metrics beyond FID, as pure functions of feature arrays (or logits).

Each function takes numpy arrays (``(N, dim)`` float32 or float64 features, or ``(N, classes)`` logits) and returns
a small frozen dataclass with the numbers and how they were obtained; nothing here reads images or runs a network.
Every random draw comes from an explicit seed. See ``docs/metrics.md`` for the definitions, which published tool
each function reproduces, defaults and costs.

- :func:`kid` (:mod:`fidkit.metrics.kid`): Kernel Inception Distance, torch-fidelity's numbers with
  ``sampling="torch-fidelity"``.
- :func:`inception_score` (:mod:`fidkit.metrics.inception_score`): from the 1008 unbiased Inception logits.
- :func:`precision_recall`, :func:`density_coverage`, :func:`manifold_metrics` (:mod:`fidkit.metrics.prdc`):
  k-NN manifold metrics with exact radii, blockwise under a memory budget, optionally on a torch device.
- :func:`bootstrap`, :func:`bootstrap_fid`, :func:`fid_infinity` (:mod:`fidkit.metrics.bootstrap`): bootstrap
  percentile intervals (fast for FID) and FID extrapolated to infinitely many images.
- :func:`half_sample` (:mod:`fidkit.metrics.halfsample`): intervals from random half-samples, for the metrics a
  with-replacement bootstrap distorts (k-NN balls and KID's unbiased sums count a repeated image twice).
- :func:`evaluate` (:mod:`fidkit.metrics.table`): the evaluation table (FID, KID, IS, sFID, precision/recall/
  density/coverage) of two :class:`~fidkit.features.Features` or :class:`~fidkit.stats.Stats`, with intervals.
"""

from fidkit.metrics._common import SAMPLINGS
from fidkit.metrics.bootstrap import BootstrapResult, FIDInfinityResult, bootstrap, bootstrap_fid, fid_infinity
from fidkit.metrics.halfsample import HalfSampleResult, half_sample
from fidkit.metrics.inception_score import InceptionScoreResult, inception_score
from fidkit.metrics.kid import KIDResult, kid, mmd2_unbiased
from fidkit.metrics.prdc import (
    DEFAULT_MEMORY_BUDGET,
    DensityCoverageResult,
    ManifoldResult,
    PrecisionRecallResult,
    density_coverage,
    exact_sq_distances,
    knn_radii,
    manifold_metrics,
    precision_recall,
)
from fidkit.metrics.request import DEFAULT_METRICS, METRICS, outputs_needed, parse_metrics
from fidkit.metrics.table import Interval, IntervalSpec, MetricEntry, MetricTable, evaluate

__all__ = [
    "SAMPLINGS",
    "kid",
    "mmd2_unbiased",
    "KIDResult",
    "inception_score",
    "InceptionScoreResult",
    "precision_recall",
    "density_coverage",
    "manifold_metrics",
    "knn_radii",
    "exact_sq_distances",
    "PrecisionRecallResult",
    "DensityCoverageResult",
    "ManifoldResult",
    "DEFAULT_MEMORY_BUDGET",
    "bootstrap",
    "bootstrap_fid",
    "fid_infinity",
    "BootstrapResult",
    "FIDInfinityResult",
    "half_sample",
    "HalfSampleResult",
    "evaluate",
    "parse_metrics",
    "outputs_needed",
    "METRICS",
    "DEFAULT_METRICS",
    "IntervalSpec",
    "Interval",
    "MetricEntry",
    "MetricTable",
]
