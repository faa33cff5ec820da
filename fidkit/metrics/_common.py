"""Checks and random draws shared by the metrics of :mod:`fidkit.metrics`.

Every random draw in the package comes from one of two generators built from an explicit integer seed:
``sampling="generator"`` (the default) is :func:`numpy.random.default_rng`, ``sampling="torch-fidelity"`` is the
legacy :class:`numpy.random.RandomState` that torch-fidelity 0.4.0 seeds with ``rng_seed`` (2020 by default),
called in the same order as torch-fidelity calls it, so that the same features give the same subsets (KID) or
the same shuffle (Inception Score) and hence the same numbers.

Both draw *by position*: the same rows in the same order give the same draws (hence the same numbers, to
rounding, on any engine or device), and a rounding-level change of the values leaves the draws as they
were. The same rows in another order are another draw. An order fixed by the values (a hash of them) was tried and
given up: a one-ulp change of one value changes such a key, so the numbers jumped by their sampling noise
between engines or devices that agree to rounding.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Callable

import numpy as np

from fidkit._plain import finite_or_none
from fidkit._validate import check_features, is_count
from fidkit.errors import InputError

__all__ = [
    "SAMPLINGS",
    "check_seed",
    "check_sampling",
    "check_positive_int",
    "check_level",
    "check_pair",
    "check_resampling",
    "float_metric",
    "make_rng",
    "choice_without_replacement",
    "permutation",
    "plain_dict",
]

#: Accepted values of ``sampling=``.
SAMPLINGS = ("generator", "torch-fidelity")


def check_seed(seed: Any, name: str = "seed") -> int:
    """Return `seed` as a non-negative int, or raise :class:`~fidkit.errors.InputError` naming the argument `name`.

    None is refused on purpose: a metric that draws at random must say which draw it reports.
    """
    if not is_count(seed, 0):
        raise InputError(
            f"{name} must be a non-negative integer, got {seed!r}; the draws are reproducible only from an explicit "
            f"seed (pass e.g. {name}=0)"
        )
    if seed >= 2**32:
        # RandomState (sampling="torch-fidelity") takes seeds below 2**32 only; one rule for both samplings.
        raise InputError(f"{name} must be below 2**32, got {seed}")
    return int(seed)


def check_sampling(sampling: Any) -> str:
    if not isinstance(sampling, str) or sampling not in SAMPLINGS:
        raise InputError(f"sampling={sampling!r} is not one of {', '.join(repr(s) for s in SAMPLINGS)}")
    return sampling


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if not is_count(value, minimum):
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_level(level: Any) -> float:
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0.0 < float(level) < 1.0:
        raise InputError(f"level must be a confidence level strictly between 0 and 1 (e.g. 0.95), got {level!r}")
    return float(level)


def check_resampling(n_resamples: Any, level: Any, seed: Any) -> tuple[int, float, int]:
    """The arguments every interval takes: resamples (>= 2), a level in (0, 1), a seed."""
    return check_positive_int(n_resamples, "n_resamples", minimum=2), check_level(level), check_seed(seed)


def float_metric(metric: Any) -> Callable[[np.ndarray, np.ndarray], float]:
    """`metric(a, b)` as a function returning a float: what the interval methods evaluate on each replicate.

    Raises
    ------
    InputError
        `metric` is not callable (now), or returns something ``float()`` refuses (when called).
    """
    if not callable(metric):
        raise InputError(f"metric must be a callable metric(a, b), got {type(metric).__name__}")

    def evaluate(a: np.ndarray, b: np.ndarray) -> float:
        outcome = metric(a, b)
        try:
            return float(outcome)
        except (TypeError, ValueError) as exc:
            raise InputError(f"metric returned {type(outcome).__name__}, which float() refuses ({exc})") from exc

    return evaluate


def check_pair(features_a: Any, features_b: Any, names: tuple[str, str] = ("features_a", "features_b")):
    """Validate two ``(N, dim)`` feature arrays of the same dim (float32 kept, other types to float64)."""
    array_a = check_features(features_a, names[0])
    array_b = check_features(features_b, names[1])
    if array_a.shape[1] != array_b.shape[1]:
        raise InputError(
            f"{names[0]} has dim {array_a.shape[1]} but {names[1]} has dim {array_b.shape[1]}; both must come "
            "from the same feature extractor"
        )
    return array_a, array_b


def make_rng(seed: int, sampling: str) -> np.random.Generator | np.random.RandomState:
    return np.random.RandomState(seed) if sampling == "torch-fidelity" else np.random.default_rng(seed)


def choice_without_replacement(rng: np.random.Generator | np.random.RandomState, n: int, size: int) -> np.ndarray:
    """``size`` distinct indices out of ``range(n)``, as ``rng.choice(n, size, replace=False)`` draws them."""
    return rng.choice(n, size, replace=False)


def permutation(rng: np.random.Generator | np.random.RandomState, n: int) -> np.ndarray:
    return rng.permutation(n)


def plain_dict(result: Any) -> dict[str, Any]:
    """A JSON-ready dict of a result dataclass: tuples become lists, NaN and inf become None."""
    return {item.name: finite_or_none(getattr(result, item.name)) for item in dataclasses.fields(result)}
