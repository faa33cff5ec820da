"""fidkit: the Fréchet Inception Distance with the TensorFlow reference's numbers.

The flow is one direction: a source of images, Inception pool_3 features from an ONNX graph,
float64 statistics, the Fréchet distance, a report. Each stage is importable on its own:

- :func:`compute_fid`, :func:`compute_stats`: the whole path, from folders, archives, arrays,
  statistics files or iterables of uint8 image batches (``fidkit.api``).
- :func:`fid_from_arrays`, :func:`fid_from_stats`, :func:`frechet_distance`: the distance alone
  (``fidkit.frechet``).
- :class:`Stats`, :class:`StatsAccumulator`: statistics, streaming and mergeable (``fidkit.stats``),
  saved as ``.npz`` files that TTUR and pytorch-fid read (``fidkit.statsfile``).
- :class:`FID`: the metric of a training loop, ``update(images)`` / ``compute()`` / ``reset()``, exact
  across ``torch.distributed`` ranks (``fidkit.metric``).
- :class:`FeatureExtractor`: the 2015 Inception-v3 on onnxruntime (``fidkit.inception``).
- :func:`open_source`: turning a path, array or iterable into image batches (``fidkit.sources``).

``import fidkit`` imports neither torch nor onnxruntime; they load when a network is first used.
See ``docs/usage.md``.
"""

__version__ = "0.1.0"

from fidkit.api import compute_fid, compute_stats
from fidkit.errors import (
    DownloadError,
    EmptySourceError,
    FidkitError,
    FidkitWarning,
    ImageError,
    InputError,
    OverwriteError,
    SmallSampleWarning,
    SourceError,
    StatsFileError,
    WeightsError,
)
from fidkit.frechet import (
    FrechetResult,
    fid_from_arrays,
    fid_from_stats,
    frechet_distance,
)
from fidkit.inception import FEATURE_DIM, RESIZE_MODE, FeatureExtractor, resolve_weights
from fidkit.metric import FID
from fidkit.report import FidReport, SideReport, Timings
from fidkit.sources import COLOUR_POLICY_VERSION, Source, open_source
from fidkit.stats import Stats, StatsAccumulator
from fidkit.statsfile import STATS_FORMAT_VERSION

__all__ = [
    "__version__",
    # the whole path
    "compute_fid",
    "compute_stats",
    "FidReport",
    "SideReport",
    "Timings",
    # the training-loop metric
    "FID",
    # the distance
    "frechet_distance",
    "fid_from_stats",
    "fid_from_arrays",
    "FrechetResult",
    # statistics
    "Stats",
    "StatsAccumulator",
    "STATS_FORMAT_VERSION",
    # the network
    "FeatureExtractor",
    "resolve_weights",
    "FEATURE_DIM",
    "RESIZE_MODE",
    # inputs
    "open_source",
    "Source",
    "COLOUR_POLICY_VERSION",
    # errors and warnings
    "FidkitError",
    "InputError",
    "DownloadError",
    "StatsFileError",
    "ImageError",
    "EmptySourceError",
    "SourceError",
    "WeightsError",
    "OverwriteError",
    "FidkitWarning",
    "SmallSampleWarning",
]
