"""fidkit: the Fréchet Inception Distance with the TensorFlow reference's numbers.

The flow is one direction: a source of images, Inception pool_3 features from an ONNX graph,
float64 statistics, the Fréchet distance, a report. Each stage is importable on its own:

- :func:`compute_fid`, :func:`compute_stats`, :func:`compute_features`: the whole path, from folders,
  archives, arrays, dataset names, statistics or features files or iterables of uint8 image batches
  (``fidkit.api``), with the run's settings as keywords or one :class:`RunOptions` (``fidkit.options``).
- :class:`Features`: feature rows kept, saved and loaded; statistics are one reduction of them
  (``fidkit.features``).
- :func:`fid_from_arrays`, :func:`fid_from_stats`, :func:`frechet_distance`: the distance alone
  (``fidkit.frechet``).
- :class:`Stats`, :class:`StatsAccumulator`: statistics, streaming and mergeable (``fidkit.stats``),
  saved as ``.npz`` files that TTUR and pytorch-fid read (``fidkit.statsfile``).
- :class:`FID`: the metric of a training loop, ``update(images)`` / ``compute()`` / ``reset()``, exact
  across ``torch.distributed`` ranks (``fidkit.metric``).
- :func:`register_extractor`, :func:`extractor_names`: the registry of feature extractors behind one
  interface (``fidkit.extractors``); :class:`FeatureExtractor` is the 2015 Inception-v3 on onnxruntime
  (``fidkit.inception``).
- :func:`open_source`: turning a path, array or iterable into image batches (``fidkit.sources``).

``import fidkit`` imports neither torch nor onnxruntime; they load when a network is first used.
See ``docs/usage.md``.
"""

from typing import TYPE_CHECKING, Any

from fidkit._version import __version__
from fidkit.errors import (
    DownloadError,
    EmptySourceError,
    FidkitError,
    FidkitWarning,
    ImageError,
    InputError,
    OverwriteError,
    ResourceError,
    SmallSampleWarning,
    SourceError,
    StatsFileError,
    WeightsError,
)

# The public names live in their modules and load on first use (PEP 562): ``import fidkit`` and the
# ``fidkit`` command (``fidkit --help``, a cached ``fidkit compute``) pay only for what they touch.
_LAZY = {
    "compute_features": "fidkit.api",
    "compute_fid": "fidkit.api",
    "compute_stats": "fidkit.api",
    "Extractor": "fidkit.extractors",
    "ExtractorEntry": "fidkit.extractors",
    "extractor_names": "fidkit.extractors",
    "register_extractor": "fidkit.extractors",
    "Features": "fidkit.features",
    "FrechetResult": "fidkit.frechet",
    "fid_from_arrays": "fidkit.frechet",
    "fid_from_stats": "fidkit.frechet",
    "frechet_distance": "fidkit.frechet",
    "FEATURE_DIM": "fidkit.inception",
    "RESIZE_MODE": "fidkit.inception",
    "FeatureExtractor": "fidkit.inception",
    "resolve_weights": "fidkit.inception",
    "FID": "fidkit.metric",
    "RunOptions": "fidkit.options",
    "FidReport": "fidkit.report",
    "SideReport": "fidkit.report",
    "Timings": "fidkit.report",
    "COLOUR_POLICY_VERSION": "fidkit.sources",
    "Source": "fidkit.sources",
    "open_source": "fidkit.sources",
    "Stats": "fidkit.stats",
    "StatsAccumulator": "fidkit.stats",
    "STATS_FORMAT_VERSION": "fidkit.statsfile",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'fidkit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs: the same names, eagerly
    from fidkit.api import compute_features, compute_fid, compute_stats
    from fidkit.extractors import Extractor, ExtractorEntry, extractor_names, register_extractor
    from fidkit.features import Features
    from fidkit.frechet import FrechetResult, fid_from_arrays, fid_from_stats, frechet_distance
    from fidkit.inception import FEATURE_DIM, RESIZE_MODE, FeatureExtractor, resolve_weights
    from fidkit.metric import FID
    from fidkit.options import RunOptions
    from fidkit.report import FidReport, SideReport, Timings
    from fidkit.sources import COLOUR_POLICY_VERSION, Source, open_source
    from fidkit.stats import Stats, StatsAccumulator
    from fidkit.statsfile import STATS_FORMAT_VERSION

__all__ = [
    "__version__",
    # the whole path
    "compute_fid",
    "compute_stats",
    "compute_features",
    "RunOptions",
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
    # features and extractors
    "Features",
    "Extractor",
    "ExtractorEntry",
    "register_extractor",
    "extractor_names",
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
    "ResourceError",
    "FidkitWarning",
    "SmallSampleWarning",
]
