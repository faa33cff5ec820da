"""argparse ``type=`` converters shared by ``fidkit`` (:mod:`fidkit.cli`) and its ``ttur`` / ``validate``
commands (:mod:`fidkit.ttur.cli`).

Only argparse is imported at module level (``device_string`` imports the device grammar of :mod:`fidkit._devices` when it runs),
so that the command modules load without torch or onnxruntime and ``fidkit --help`` stays fast. Each converter raises :class:`argparse.ArgumentTypeError`, which argparse turns into a usage
error (exit status 2) that quotes the message.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = [
    "int_at_least", "positive_int", "non_negative_int", "resample_count", "seed_value", "positive_float",
    "device_string", "interval_level",
]


def int_at_least(minimum: int, expected: str, *, below: int | None = None) -> Callable[[str], int]:
    """Return a converter to int that refuses values below `minimum` (and from `below` on, when given), naming
    what it `expected`."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < minimum or (below is not None and value >= below):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return convert


#: An int >= 1 (counts, sizes, steps).
positive_int = int_at_least(1, "a positive integer")
positive_int.__name__ = "positive_int"
#: An int >= 0 (e.g. worker processes, where 0 means "decode in this process").
non_negative_int = int_at_least(0, "an integer >= 0")
non_negative_int.__name__ = "non_negative_int"
#: An int >= 2 (resamples: an interval needs at least two).
resample_count = int_at_least(2, "an integer >= 2")
resample_count.__name__ = "resample_count"


#: Seeds lie in 0 <= seed < 2**32: what every seeded draw in fidkit accepts (the metrics refuse more, and
#: numpy's legacy generators of the torch-fidelity sampling take no more), checked for every seed option alike.
SEED_LIMIT = 2**32


#: A seed option (``--seed``, ``--metrics-seed``): an integer with ``0 <= seed < 2**32``.
seed_value = int_at_least(0, "an integer >= 0 and < 2**32 (a seed)", below=SEED_LIMIT)
seed_value.__name__ = "seed_value"


def positive_float(text: str) -> float:
    """Convert to a finite float > 0 (NaN and infinity are refused too)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {value}")
    return value


def device_string(text: str) -> str:
    """A device as :func:`fidkit.inception.providers.parse_device` reads it (``auto``, ``cpu``, ``cuda:1``...)."""
    from fidkit._devices import parse_device
    from fidkit.errors import InputError

    try:
        return str(parse_device(text))
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def interval_level(text: str) -> float:
    """``--ci LEVEL``: a probability strictly between 0 and 1.

    ``--ci`` takes its level optionally, so the word after it is read as one: ``--ci a b`` reads the source ``a`` as
    the level. A word that is no number says so, with the two ways to write it.
    """
    try:
        level = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"the interval level must be a number between 0 and 1, not {text!r} (--ci takes an optional level, so "
            f"{text!r} after it was read as one): put --ci after the sources, or give the level (--ci 0.95)"
        ) from None
    if not 0.0 < level < 1.0:
        raise argparse.ArgumentTypeError(f"the interval level must be between 0 and 1 (e.g. 0.95), not {text!r}")
    return level
