"""What :func:`fidkit.metrics.evaluate` returns: :class:`MetricTable` of :class:`MetricEntry`, and how it reads.

Digits: FID and sFID with 4 decimals (as every fidkit report prints FID), KID with 6 (its values are of order
1e-3 to 1e-1), the Inception Score with 3, precision, recall, density and coverage with 4 (fractions of N images;
more digits than N resolves only at N > 10,000). An interval is printed with its value's digits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fidkit._plain import finite_or_none, shown
from fidkit.metrics._common import check_level, check_positive_int, check_seed

__all__ = ["IntervalSpec", "Interval", "MetricEntry", "MetricTable", "format_table", "within_range", "DECIMALS"]

# The streams derived from the one seed (SeedSequence([seed, stream])).
_STREAM_BOOTSTRAP = 1
_STREAM_HALF = 2


@dataclass(frozen=True)
class IntervalSpec:
    """How :func:`evaluate` draws its intervals.

    Attributes
    ----------
    level : float
        Confidence level, in (0, 1).
    n_resamples : int
        Bootstrap resamples (FID, sFID) and half-samples (KID, IS, neighbour metrics), >= 2. With 200 each end of
        a 95 % interval carries a Monte Carlo error of about 5 % of the interval's width (0.19 standard errors),
        with 1,000 about 2 %.
    seed : int or None
        Base of the interval streams; None (the default) takes :func:`evaluate`'s `seed`. Either way the two
        streams are derived from it (module docstring), so the point values stay fixed when only this changes.
    kid_subsets : int
        KID subsets per half-sample (100 for the value), of ``kid_subset_size`` rows capped at the half-sample's,
        each costing about ``4 m^2 dim`` flops. Their own noise widens the interval against 100-subset replicates
        by the variance ``s^2 (1 / kid_subsets - 1 / 100)`` (``s``: KID's std over subsets), never narrows it.
    """

    level: float = 0.95
    n_resamples: int = 200
    seed: int | None = None
    kid_subsets: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "level", check_level(self.level))
        object.__setattr__(self, "n_resamples", check_positive_int(self.n_resamples, "n_resamples", minimum=2))
        if self.seed is not None:
            object.__setattr__(self, "seed", check_seed(self.seed))
        object.__setattr__(self, "kid_subsets", check_positive_int(self.kid_subsets, "kid_subsets"))

    def derived_seeds(self, seed: int) -> tuple[int, int]:
        """``(bootstrap_seed, half_sample_seed)`` for :func:`evaluate`'s `seed`."""
        base = check_seed(seed) if self.seed is None else self.seed
        return tuple(  # type: ignore[return-value]
            int(np.random.SeedSequence([base, stream]).generate_state(1)[0])
            for stream in (_STREAM_BOOTSTRAP, _STREAM_HALF)
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "level": self.level,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "kid_subsets": self.kid_subsets,
        }


#: Decimals printed per metric name.
DECIMALS = {"fid": 4, "sfid": 4, "kid": 6, "is": 3, "prdc": 4}


# Where each number can lie. An interval end beyond it (the basic interval reflects the resamples about the value,
# so FID's can reach below 0 where its bias exceeds its spread) is moved onto it: the true value lies there too.
_RANGES = {
    "fid": (0.0, math.inf),
    "sfid": (0.0, math.inf),
    "is_a": (1.0, math.inf),
    "is_b": (1.0, math.inf),
    "precision": (0.0, 1.0),
    "recall": (0.0, 1.0),
    "density": (0.0, math.inf),
    "coverage": (0.0, 1.0),
}


def within_range(key: str, interval: Interval) -> Interval:
    """`interval` with its ends moved into the range the number `key` can take (KID's is unbounded)."""
    lowest, highest = _RANGES.get(key, (-math.inf, math.inf))
    return replace(interval, low=min(max(interval.low, lowest), highest), high=max(min(interval.high, highest), lowest))


def _number(metric: str, value: float, sign: str = "") -> str:
    """A number in `metric`'s units as the table prints it: its :data:`DECIMALS`, and 4 significant digits where
    they would keep fewer than 3 (``.3e``), as :func:`fidkit._plain.fid_text` prints a FID (4 decimals, below 0.01
    ``3.030e-09``): a KID near zero is not ``0.000000``. `sign` ``"+"`` always writes the sign."""
    decimals = DECIMALS[metric]
    if value != 0 and abs(value) < 10.0 ** (2 - decimals):
        return shown(value, f"{sign}.3e")
    return shown(value, f"{sign}.{decimals}f")


def _note(entry: Any) -> str:
    details = dict(entry.details)
    if entry.metric == "kid":
        return f"std over {details['subsets']} subsets of {details['subset_size']}: {_number('kid', entry.std)}"
    if entry.metric == "is":
        unreliable = " (interval unreliable: see the note below)" if entry.interval and entry.interval.note else ""
        return f"{details['splits']} splits, std {_number('is', entry.std)}{unreliable}"
    if entry.metric == "prdc":
        return f"k={details['k']}"
    if entry.interval is not None and entry.interval.method == "bootstrap":
        # FID's small-sample bias can be as large as its spread: the basic interval then lies off the value.
        bias = f"bootstrap bias {_number(entry.metric, entry.interval.shift, '+')}"
        return bias + (" (underestimated: see the note below)" if entry.interval.note else "")
    return ""


def _level(level: float) -> str:
    return f"{100.0 * level:.10g}%"


def _interval_footer(table: Any) -> str:
    """One line saying how the intervals were drawn, naming only the numbers present."""
    by_method: dict[str, list[str]] = {}
    for entry in table.entries:
        if entry.interval is not None:  # one without says why in its note
            by_method.setdefault(entry.interval.method, []).append(entry.label)
    ci = table.ci
    parts = []
    if "bootstrap" in by_method:
        parts.append(
            f"{', '.join(by_method['bootstrap'])}: basic bootstrap, {ci.n_resamples} resamples of both sides' images"
        )
    if "half-sample" in by_method:
        kid_note = f", KID over {ci.kid_subsets} subsets each" if "kid" in table.metrics else ""
        parts.append(f"{', '.join(by_method['half-sample'])}: {ci.n_resamples} random half-samples{kid_note}")
    seed = f"interval seed {ci.seed}" if ci.seed is not None else f"seed {table.seed}"
    return f"{_level(ci.level)} intervals ({seed}): " + "; ".join(parts)


def format_table(table: Any) -> str:
    """The aligned plain-text table of `table` (a :class:`~fidkit.metrics.table.MetricTable`), no final newline."""
    with_interval = table.ci is not None
    header = ["metric", "value"] + ([f"{_level(table.ci.level)} interval"] if with_interval else []) + ["note"]
    rows = [header]
    for entry in table.entries:
        row = [entry.label, _number(entry.metric, entry.value)]
        if with_interval and entry.interval is None:
            row.append("none (see the note below)")
        elif with_interval:
            low, high = (_number(entry.metric, bound) for bound in (entry.interval.low, entry.interval.high))
            row.append(f"[{low}, {high}]")
        rows.append(row + [_note(entry)])
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    lines = ["  ".join([cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]).rstrip() for row in rows]
    count = lambda n: "unknown" if n is None else str(n)  # noqa: E731
    name_a, name_b = table.side_names
    lines.append(f"images: {name_a} {count(table.n_a)}, {name_b} {count(table.n_b)}")
    if with_interval and table.entries:
        lines.append(_interval_footer(table))
        lines.extend(f"note: {entry.no_interval}" for entry in table.entries if entry.no_interval)
        lines.extend(
            f"note: {entry.interval.note}" for entry in table.entries if entry.interval and entry.interval.note
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Interval:
    """A confidence interval of one number.

    Attributes
    ----------
    low, high : float
        The interval: the basic bootstrap interval (``method="bootstrap"``) or the half-sample interval
        (``method="half-sample"``, :mod:`fidkit.metrics.halfsample`), with an end that falls outside the values
        the number can take moved onto that range (FID and sFID >= 0, IS >= 1, precision, recall and coverage in
        [0, 1], density >= 0): the basic interval of a FID whose bias exceeds its spread reaches below 0.
    level : float
    method : str
        ``"bootstrap"`` (FID, sFID) or ``"half-sample"`` (KID, IS, neighbour metrics).
    std : float
        Standard deviation (``ddof = 1``) of the replicates: the estimated standard error of the value.
    shift : float
        Mean of the replicates minus the value (the bootstrap's bias estimate; for half-samples what halving N does).
    n_resamples, seed : int
        Replicates and the (derived) seed they were drawn from.
    percentile : tuple of float or None
        The bootstrap's percentile interval, kept beside the basic one (None for half-samples).
    note : str or None
        Why the interval cannot be trusted to cover the true value at its level, where it cannot: FID's and sFID's
        where there are too few images per dimension for the bootstrap to estimate their small-sample bias
        (:func:`~fidkit.metrics.bootstrap.small_sample_note`), and the Inception Score's where its half-samples
        hold fewer than 20 rows per split; None otherwise. The table prints it below itself.
    """

    low: float
    high: float
    level: float
    method: str
    std: float
    shift: float
    n_resamples: int
    seed: int
    percentile: tuple[float, float] | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN and inf become None)."""
        return finite_or_none(
            {
                "low": self.low,
                "high": self.high,
                "level": self.level,
                "method": self.method,
                "std": self.std,
                "shift": self.shift,
                "n_resamples": self.n_resamples,
                "seed": self.seed,
                "percentile": None if self.percentile is None else list(self.percentile),
                "note": self.note,
            }
        )


@dataclass(frozen=True)
class MetricEntry:
    """One reported number. ``float(entry)`` is :attr:`value`.

    Attributes
    ----------
    key : str
        Its key in the table: ``fid``, ``kid``, ``is_a``, ``is_b``, ``sfid``, ``precision``, ``recall``,
        ``density``, ``coverage``.
    label : str
        As printed: ``FID``, ``KID``, ``IS (a, evaluated)``, ``IS (b, reference)`` (``IS (generated)`` in
        ``fidkit.FID``'s table), ``sFID``, ``precision``, ...
    metric : str
        The :data:`~fidkit.metrics.request.METRICS` name that asked for it.
    value : float
    std : float or None
        The metric's own spread where it has one: KID's over its subsets, IS's over its splits (``ddof = 0``, as
        torch-fidelity reports them). Not a standard error; :attr:`interval` has that.
    interval : Interval or None
    no_interval : str or None
        In a table with intervals, why this number has none (FID from a statistics side, whose bootstrap would
        resample images: :func:`~fidkit.metrics.request.intervals_from_statistics`); None otherwise.
    n_a, n_b : int or None
        Images of each side the number is computed from (None: not used, or a statistics file without N).
    details : tuple of (str, value)
        How it was computed (k, subsets, splits, seeds, the distance's route, ...).
    result : object
        The metric function's own result (:class:`~fidkit.frechet.FrechetResult`, :class:`~fidkit.metrics.KIDResult`,
        ...), for callers that need its diagnostics; not in :meth:`to_dict`.
    """

    key: str
    label: str
    metric: str
    value: float
    std: float | None = None
    interval: Interval | None = None
    n_a: int | None = None
    n_b: int | None = None
    details: tuple[tuple[str, Any], ...] = ()
    no_interval: str | None = None
    result: Any = field(default=None, repr=False, compare=False)

    def __float__(self) -> float:
        return float(self.value)

    def to_dict(self) -> dict[str, Any]:
        """``{"label", "metric", "value", "std", "interval", "no_interval", "n_a", "n_b", "details"}``, JSON-ready."""
        return finite_or_none(
            {
                "label": self.label,
                "metric": self.metric,
                "value": self.value,
                "std": self.std,
                "interval": None if self.interval is None else self.interval.to_dict(),
                "no_interval": self.no_interval,
                "n_a": self.n_a,
                "n_b": self.n_b,
                "details": dict(self.details),
            }
        )


@dataclass(frozen=True)
class MetricTable:
    """Every number :func:`evaluate` computed. ``table["fid"]`` is the :class:`MetricEntry` of that key.

    Attributes
    ----------
    entries : tuple of MetricEntry
        In the order of :data:`~fidkit.metrics.request.METRICS` (IS of a before IS of b; precision, recall, density,
        coverage).
    metrics : tuple of str
        The names asked for.
    n_a, n_b : int or None
        Images of each side (None for statistics without N).
    seed : int
        The one seed (module docstring).
    ci : IntervalSpec or None
        How the intervals were drawn; None without intervals.
    bootstrap_seed, half_sample_seed : int or None
        The seeds derived for the intervals (None without intervals).
    side_names : (str, str)
        What the text table calls sides a and b (side a is always the evaluated set).
    """

    entries: tuple[MetricEntry, ...]
    metrics: tuple[str, ...]
    n_a: int | None
    n_b: int | None
    seed: int
    ci: IntervalSpec | None = None
    bootstrap_seed: int | None = None
    half_sample_seed: int | None = None
    side_names: tuple[str, str] = ("a", "b")

    def __getitem__(self, key: str) -> MetricEntry:
        for entry in self.entries:
            if entry.key == key:
                return entry
        raise KeyError(f"{key!r} is not in this table; it holds {', '.join(self.keys())}")

    def __contains__(self, key: object) -> bool:
        return any(entry.key == key for entry in self.entries)

    def keys(self) -> tuple[str, ...]:
        """The entries' keys, in order."""
        return tuple(entry.key for entry in self.entries)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with stable keys.

        ``{"metrics": [...], "n_a", "n_b", "seed", "interval": None or {"level", "n_resamples", "seed",
        "kid_subsets", "bootstrap_seed", "half_sample_seed"}, "entries": {key: MetricEntry.to_dict()}}``; the
        entries keep the table's order.
        """
        interval = None
        if self.ci is not None:
            interval = {
                **self.ci.to_dict(),
                "bootstrap_seed": self.bootstrap_seed,
                "half_sample_seed": self.half_sample_seed,
            }
        return {
            "metrics": list(self.metrics),
            "n_a": self.n_a,
            "n_b": self.n_b,
            "seed": self.seed,
            "interval": interval,
            "entries": {entry.key: entry.to_dict() for entry in self.entries},
        }

    def format(self) -> str:
        """A small aligned plain-text table (what ``fidkit compute --metrics ...`` prints), no final newline."""
        return format_table(self)

    def __str__(self) -> str:
        return self.format()
