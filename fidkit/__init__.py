"""fidkit: the Fréchet Inception Distance with the TensorFlow reference's numbers.

The public API is re-exported here; see ``docs/usage.md``.
"""

from fidkit.errors import (
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

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "FidkitError",
    "InputError",
    "StatsFileError",
    "ImageError",
    "EmptySourceError",
    "SourceError",
    "WeightsError",
    "OverwriteError",
    "FidkitWarning",
    "SmallSampleWarning",
]
