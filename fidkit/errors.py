"""The errors fidkit raises.

Every error a user can meet is a :class:`FidkitError`. Its message says what went wrong, on which
file or argument, and what to do about it; the command line prints it as one line and exits 1.
"""

from __future__ import annotations

__all__ = [
    "FidkitError",
    "InputError",
    "StatsFileError",
    "ImageError",
    "EmptySourceError",
    "SourceError",
    "WeightsError",
    "DownloadError",
    "OverwriteError",
    "ResourceError",
    "FidkitWarning",
    "SmallSampleWarning",
]


class FidkitError(Exception):
    """Base class of every error that fidkit raises on purpose."""


class InputError(FidkitError, ValueError):
    """Arrays or arguments that cannot be used: wrong shape or dtype, NaN or inf, too few samples."""


class StatsFileError(FidkitError):
    """A statistics file that is missing, corrupt, or not a statistics file."""


class ImageError(FidkitError):
    """One or more image files that could not be decoded."""


class EmptySourceError(FidkitError):
    """A source that holds no usable images."""


class SourceError(FidkitError):
    """A source path or object fidkit does not know how to read."""


class WeightsError(FidkitError):
    """Inception weights that are missing, fail their checksum, or do not have the expected layout."""


class DownloadError(FidkitError):
    """A download that failed (offline, HTTP error, cut short) or gave a file with the wrong checksum."""


class OverwriteError(FidkitError, FileExistsError):
    """A write that would replace an existing user file without being asked to."""


class ResourceError(FidkitError):
    """The machine ran short while computing: memory (in decoding or in the network), open files, processes.

    Not a fault of the input, so never a counted skip (with ``skip_bad`` the count would depend on the machine):
    the message names what ran out, where, and what to lower or raise (``--batch-size``, ``--workers 0``,
    ``ulimit -n``).
    """


class FidkitWarning(UserWarning):
    """Base class of the warnings fidkit issues (small samples, lossy inputs, skipped files)."""


class SmallSampleWarning(FidkitWarning):
    """Fewer samples than feature dimensions: the covariance is singular and FID is biased."""
