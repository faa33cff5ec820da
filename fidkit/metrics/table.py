"""The evaluation table of a generative model: every asked-for metric of two feature sets, with its interval.

:func:`evaluate` is a pure layer over kept features: it takes the two sides as :class:`~fidkit.features.Features`
(rows, and the logits and spatial features of the same forward pass where kept) or :class:`~fidkit.stats.Stats`,
calls the metric functions of :mod:`fidkit.metrics` and :mod:`fidkit.frechet` on them, and returns a
:class:`MetricTable`: one :class:`MetricEntry` per reported number, printable (:meth:`MetricTable.format`) and
JSON-ready (:meth:`MetricTable.to_dict`). Side a is the evaluated (generated) set, side b the reference.

The metrics, by their ``--metrics`` names (:data:`~fidkit.metrics.request.METRICS`):

- ``fid``: the Fréchet distance of the pool_3 features (:func:`~fidkit.frechet.fid_from_arrays` on two Features,
  :func:`~fidkit.frechet.fid_from_stats` when a side is statistics);
- ``kid``: :func:`~fidkit.metrics.kid` of a against b;
- ``is``: :func:`~fidkit.metrics.inception_score` of a's logits, and of b's where b holds logits;
- ``sfid``: the Fréchet distance of the spatial features, through the same code as FID (:func:`fid_from_stats`
  against the spatial statistics ``mu_s`` and ``sigma_s`` of an ADM reference batch,
  :class:`~fidkit.stats.reference.ReferenceBatch`);
- ``prdc``: :func:`~fidkit.metrics.manifold_metrics` with b as the real set: precision and recall (ADM's, k = 3),
  density and coverage (prdc's, k = 5).

Randomness. One integer ``seed`` drives everything. KID's subsets and the Inception Score's shuffle use it as given
(``kid(..., seed=seed)``, ``inception_score(..., seed=seed)``: the numbers can be recomputed directly). The
intervals draw from two further streams derived from it (or from :attr:`IntervalSpec.seed` when set) by
:class:`numpy.random.SeedSequence`, independent of those draws and of each other: the bootstrap resamples of FID and
sFID (the same resampled images for both) and the half-samples of KID, IS and precision/recall/density/coverage
(the same half-samples for all of them; each side's from its own stream, so that the interval of side a's Inception
Score does not depend on side b). Both derived seeds are reported. Every draw is of positions: the same features in
the same order give the same table on any engine or device (to rounding), and a Ray run's rows come in the local
run's order; the same rows in another order (a ``torch.distributed`` gather of another world size) give another draw
of KID, IS and the intervals, which differ within their reported spread (FID, sFID and the neighbour metrics do not
depend on the order).

Intervals. FID and sFID: :func:`~fidkit.metrics.bootstrap_fid` (images of both sides resampled with
replacement), reporting its basic interval, which covers the true value at the level claimed where the percentile
one, also kept, does not, unless there are too few images per dimension for the bootstrap to estimate the bias:
there the interval carries a note and a ``FidkitWarning`` is issued (``docs/metrics.md``,
:func:`~fidkit.metrics.bootstrap.small_sample_note`). KID, IS and the neighbour metrics: random half-samples
(:mod:`fidkit.metrics.halfsample`), because a with-replacement resample repeats images, which the k-NN balls and
KID's unbiased sums count as distinct points at distance 0 (measured: bootstrap intervals of precision and recall
covered their target in 0 to 15 % of samples at a 90 % level, half-sample intervals in 85 to 95 %).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import replace
from typing import Any, Iterable

import numpy as np

from fidkit.errors import FidkitWarning, InputError, StatsFileError
from fidkit.features import Features
from fidkit.frechet import FrechetResult, fid_from_arrays, fid_from_stats
from fidkit.metrics._common import check_positive_int, check_sampling, check_seed
from fidkit.metrics._table_results import Interval, IntervalSpec, MetricEntry, MetricTable, within_range
from fidkit.metrics.bootstrap import _resampled_fid
from fidkit.metrics.halfsample import half_sample_draws, summarise_half_samples
from fidkit.metrics.inception_score import check_logits, inception_score
from fidkit.metrics.kid import kid
from fidkit.metrics.prdc import DEFAULT_MEMORY_BUDGET, manifold_metrics
from fidkit.metrics.request import (
    DEFAULT_METRICS,
    RELIABLE_ROWS_PER_HALF_SPLIT,
    _check_budget,
    _check_ci,
    _check_dims,
    DEFAULT_IS_SPLITS,
    DEFAULT_K_DENSITY,
    DEFAULT_K_PRECISION,
    _check_side,
    _half_sample_sides,
    _sized,
    _where,
    check_available,
    check_sizes,
    intervals_from_statistics,
    parse_metrics,
)
from fidkit.stats import Stats

__all__ = ["IntervalSpec", "Interval", "MetricEntry", "MetricTable", "evaluate"]

logger = logging.getLogger(__name__)

#: What each side is. The text table says it beside a side's letter: the Inception Score and precision, recall,
#: density and coverage depend on which side is evaluated (FID, sFID and KID do not), and a user who passed the
#: reference first would otherwise read the reference's numbers as the model's.
_ROLES = {"a": "evaluated", "b": "reference"}


def _side_titles(side_names: tuple[str, str]) -> tuple[str, str]:
    """What the text calls each side: a letter with its role (``"a (evaluated)"``); a caller's own name
    (``fidkit.FID``'s ``"generated"``, ``"real"``) says the role itself."""
    return tuple(  # type: ignore[return-value]
        f"{name} ({_ROLES[letter]})" if name == letter else name for name, letter in zip(side_names, "ab")
    )


def _fid_entry(
    key: str, label: str, sides: dict[str, Features | Stats], output: str, given: FrechetResult | None = None
) -> MetricEntry:
    a, b = sides["a"], sides["b"]
    if given is not None:
        result = given
    elif isinstance(a, Features) and isinstance(b, Features):
        result = fid_from_arrays(a.output(output), b.output(output))
    elif output == "features":
        stats = [side.stats() if isinstance(side, Features) else side for side in (a, b)]
        result = fid_from_stats(stats[0], stats[1])
    else:  # sFID with a statistics side: an ADM reference batch's mu_s and sigma_s (check_available saw them)
        result = _spatial_fid(a, b)
    return MetricEntry(
        key=key,
        label=label,
        metric=key,
        value=float(result.value),
        n_a=a.n,  # the sides' own, as `given` may be the distance of b to a
        n_b=b.n,
        details=(("dim", result.dim), ("method", result.method)),
        result=result,
    )


def _spatial_fid(a: Features | Stats, b: Features | Stats) -> FrechetResult:
    """sFID where a side is statistics: through FID's own distance code (:func:`fid_from_stats`), on the spatial
    statistics of the file (ADM's ``mu_s`` and ``sigma_s``) and of the other side's spatial rows (or file)."""
    stats = [
        Stats.from_features(side.spatial, metadata=side.metadata) if isinstance(side, Features) else side.spatial
        for side in (a, b)
    ]
    try:
        return fid_from_stats(stats[0], stats[1])
    except (InputError, StatsFileError) as exc:
        # The distance names the file; say that it was its spatial statistics, not its mu and sigma, at fault.
        files = [str(side.path) for side in (a, b) if isinstance(side, Stats) and side.path is not None]
        if not files:
            raise
        raise type(exc)(f"sFID, from the spatial statistics mu_s and sigma_s of {' and '.join(files)}: {exc}") from exc


def _is_entry(features: Features, role: str, name: str, splits: int, seed: int, sampling: str) -> MetricEntry:
    # Checked here first so that a refusal (probabilities kept as logits) names the side and its file.
    check_logits(features.logits, f"the logits of side {role}{_where(features)}")
    result = inception_score(features.logits, splits=splits, seed=seed, sampling=sampling)
    return MetricEntry(
        key=f"is_{role}",
        label=f"IS ({name}, {_ROLES[role]})" if name == role else f"IS ({name})",
        metric="is",
        value=result.mean,
        std=result.std,
        n_a=result.n if role == "a" else None,
        n_b=result.n if role == "b" else None,
        details=(("splits", splits), ("shuffle", result.shuffle), ("seed", seed), ("sampling", sampling),
                 ("classes", result.classes)),
        result=result,
    )


def _prdc_entries(result: Any, k_precision: int, k_density: int) -> list[MetricEntry]:
    return [
        MetricEntry(
            key=key,
            label=key,
            metric="prdc",
            value=float(getattr(result, key)),
            n_a=result.n_fake,
            n_b=result.n_real,
            details=(("k", k), ("balls", "inclusive" if k_key == "pr" else "strict")),
            result=result,
        )
        for key, k, k_key in (
            ("precision", k_precision, "pr"),
            ("recall", k_precision, "pr"),
            ("density", k_density, "dc"),
            ("coverage", k_density, "dc"),
        )
    ]


def _bootstrap_interval(entry: MetricEntry, a: np.ndarray, b: np.ndarray, ci: IntervalSpec, seed: int) -> Interval:
    """The bootstrap interval of an FID `entry` of the arrays `a` and `b` (its value is their FID: not computed
    again), with bootstrap_fid's defaults."""
    with warnings.catch_warnings():
        # The point value already warned about small samples; the resamples would warn again for the same arrays.
        warnings.simplefilter("ignore")
        result = _resampled_fid(a, b, entry.value, ci.n_resamples, ci.level, seed, label=entry.label,
                                names=("side a", "side b"))
    return Interval(
        low=result.basic_low,
        high=result.basic_high,
        level=result.level,
        method="bootstrap",
        std=result.std,
        shift=result.bias,
        n_resamples=result.n_resamples,
        seed=seed,
        percentile=(result.low, result.high),
        note=result.note,
    )


def evaluate(
    a: Features | Stats,
    b: Features | Stats,
    metrics: str | Iterable[str] = DEFAULT_METRICS,
    *,
    ci: IntervalSpec | None = None,
    seed: int = 0,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    is_splits: int = DEFAULT_IS_SPLITS,
    k_precision: int = DEFAULT_K_PRECISION,
    k_density: int = DEFAULT_K_DENSITY,
    sampling: str = "generator",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    device: Any = None,
    side_names: tuple[str, str] = ("a", "b"),
    fid: FrechetResult | None = None,
) -> MetricTable:
    """Compute the asked-for metrics of side a (evaluated) against side b (reference), with intervals if asked.

    Parameters
    ----------
    a, b : Features or Stats
        The evaluated (generated) images and the reference. A :class:`~fidkit.stats.Stats` side serves FID, and
        sFID where it holds spatial statistics (an ADM reference batch,
        :class:`~fidkit.stats.reference.ReferenceBatch`), without an interval: with `ci`, they are given without one
        (:attr:`MetricEntry.no_interval` says why, and a ``FidkitWarning``) where another asked metric has one (the
        Inception Score of side a), and the interval is refused where none has; every other metric needs a
        :class:`~fidkit.features.Features` holding what :func:`outputs_needed` lists (the error names the metric,
        the side and what to supply).
    metrics : str or iterable of str
        Names of :data:`METRICS` (``"fid,kid"``, ``["is", "prdc"]``, ``"all"``; :func:`parse_metrics`).
    ci : IntervalSpec, optional
        Draw an interval for every number (module docstring); None: values only.
    seed : int
        The one seed: KID's subsets and the IS shuffle use it as given, the intervals streams derived from it.
    kid_subset_size, kid_subsets : int
        KID's subsets (:func:`~fidkit.metrics.kid`'s ``subset_size``, ``subsets``).
    is_splits : int
        Inception Score splits.
    k_precision, k_density : int
        Neighbourhood sizes of precision/recall (ADM: 3) and density/coverage (prdc: 5).
    sampling : {"generator", "torch-fidelity"}
        How KID and IS draw (:func:`~fidkit.metrics.kid`): ``"torch-fidelity"`` with ``seed=2020`` gives
        torch-fidelity's KID and ISC numbers.
    memory_budget : int
        Bytes for the distance blocks of the neighbour metrics.
    device : torch device or str, optional
        Where the neighbour metrics' distance blocks run (``"cuda"``); None: numpy on the CPU.
    side_names : (str, str)
        What the text table calls sides a and b (``fidkit.FID``: ``("generated", "real")``); keys stay ``is_a``,
        ``n_a``, ... whatever the names. The letters ``"a"`` and ``"b"`` (the default) are printed with their
        roles, ``IS (a, evaluated)`` and ``images: a (evaluated) 300, b (reference) 400``: which side is which
        decides the Inception Score's row and precision, recall, density and coverage.
    fid : FrechetResult, optional
        The FID of these two sides as the caller already computed it from their statistics (in either order:
        the distance is symmetric): the table shows it rather than computing it again from the rows, so that a
        report and its table give the same number, computed once.

    Returns
    -------
    MetricTable

    Raises
    ------
    InputError
        Unknown metrics, bad arguments, a side that lacks what a metric needs, sizes a metric cannot take.

    Examples
    --------
    >>> import numpy as np
    >>> from fidkit import Features, fid_from_arrays
    >>> from fidkit.metrics import IntervalSpec, evaluate
    >>> rng = np.random.default_rng(0)
    >>> generated = Features(rng.normal(0.3, 1.0, (300, 8)), logits=rng.normal(0.0, 3.0, (300, 20)))
    >>> reference = Features(rng.normal(0.0, 1.0, (400, 8)))
    >>> table = evaluate(generated, reference, "fid,kid,is,prdc", kid_subset_size=100, kid_subsets=20)
    >>> table.keys()
    ('fid', 'kid', 'is_a', 'precision', 'recall', 'density', 'coverage')
    >>> table["fid"].value == fid_from_arrays(generated.rows, reference.rows).value
    True
    >>> print(table.format())
    metric             value     note
    FID                0.6925
    KID                0.239839  std over 20 subsets of 100: 0.080471
    IS (a, evaluated)  4.944     10 splits, std 0.281
    precision          0.8567    k=3
    recall             0.8500    k=3
    density            0.9367    k=5
    coverage           0.9050    k=5
    images: a (evaluated) 300, b (reference) 400
    >>> with_ci = evaluate(generated, reference, "fid", ci=IntervalSpec(level=0.9, n_resamples=50))
    >>> print(with_ci.format())  # the value is biased up (by about the bias shown): the interval can lie below it
    metric  value   90% interval      note
    FID     0.6925  [0.3930, 0.7078]  bootstrap bias +0.1270
    images: a (evaluated) 300, b (reference) 400
    90% intervals (seed 0): FID: basic bootstrap, 50 resamples of both sides' images
    """
    started = time.perf_counter()
    names = parse_metrics(metrics)
    ci = _check_ci(ci)
    seed = check_seed(seed)
    sampling = check_sampling(sampling)
    kid_subset_size = check_positive_int(kid_subset_size, "kid_subset_size", minimum=2)
    kid_subsets = check_positive_int(kid_subsets, "kid_subsets")
    is_splits = check_positive_int(is_splits, "is_splits")
    k_precision = check_positive_int(k_precision, "k_precision")
    k_density = check_positive_int(k_density, "k_density")
    memory_budget = _check_budget(memory_budget)
    sides = {"a": _check_side(a, "a"), "b": _check_side(b, "b")}
    check_available(names, ci, sides)
    _check_dims(names, sides)
    check_sizes(names, ci, sides, side_names=side_names, is_splits=is_splits, k_largest=max(k_precision, k_density))
    a, b = sides["a"], sides["b"]
    b_logits = isinstance(b, Features) and b.logits is not None

    entries: list[MetricEntry] = []
    for name in names:
        if name == "fid":
            entries.append(_fid_entry("fid", "FID", sides, "features", given=fid))
        elif name == "kid":
            result = kid(a.rows, b.rows, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed, sampling=sampling)
            entries.append(
                MetricEntry(
                    key="kid",
                    label="KID",
                    metric="kid",
                    value=result.mean,
                    std=result.std,
                    n_a=result.n_a,
                    n_b=result.n_b,
                    details=(("subsets", result.subsets), ("subset_size", result.subset_size), ("seed", seed),
                             ("sampling", sampling)),
                    result=result,
                )
            )
        elif name == "is":
            entries.append(_is_entry(a, "a", side_names[0], is_splits, seed, sampling))
            if b_logits:
                entries.append(_is_entry(b, "b", side_names[1], is_splits, seed, sampling))
        elif name == "sfid":
            entries.append(_fid_entry("sfid", "sFID", sides, "spatial"))
        else:  # prdc: b is the real set, a the fake one (precision: how much of a lies on b's manifold)
            result = manifold_metrics(
                b.rows, a.rows, k_pr=k_precision, k_dc=k_density, memory_budget=memory_budget, device=device
            )
            entries.extend(_prdc_entries(result, k_precision, k_density))
    logger.info("evaluate: %s in %.2f s", ", ".join(names), time.perf_counter() - started)

    bootstrap_seed = half_seed = None
    if ci is not None:
        bootstrap_seed, half_seed = ci.derived_seeds(seed)
        intervals: dict[str, Interval] = {}
        # FID (sFID) from a statistics side: its value, without an interval, where another metric has one.
        without = intervals_from_statistics(names, ci, sides)
        for entry in entries:
            output = {"fid": "features", "sfid": "spatial"}.get(entry.key)
            if output is not None and entry.key not in without:
                intervals[entry.key] = _bootstrap_interval(
                    entry, a.output(output), b.output(output), ci, bootstrap_seed
                )
        if any(name in names for name in ("kid", "is", "prdc")):
            params = dict(kid_subset_size=kid_subset_size, is_splits=is_splits, k_precision=k_precision,
                          k_density=k_density, sampling=sampling, memory_budget=memory_budget, device=device)
            intervals.update(_half_sample_intervals(names, a, b, entries, ci, seed, half_seed, **params))
        entries = [
            replace(entry, no_interval=without[entry.key]) if entry.key in without
            else replace(entry, interval=within_range(entry.key, intervals[entry.key]))
            for entry in entries
        ]
        for entry in entries:
            note = entry.no_interval or entry.interval.note
            if note:
                warnings.warn(note, FidkitWarning, stacklevel=2)
        logger.info("evaluate: intervals after %.2f s", time.perf_counter() - started)

    return MetricTable(
        entries=tuple(entries),
        metrics=names,
        n_a=a.n,
        n_b=b.n,
        seed=seed,
        ci=ci,
        bootstrap_seed=bootstrap_seed,
        half_sample_seed=half_seed,
        side_names=_side_titles(side_names),
    )


def _half_sample_intervals(
    names: tuple[str, ...],
    a: Features,
    b: Features | Stats,
    entries: list[MetricEntry],
    ci: IntervalSpec,
    seed: int,
    half_seed: int,
    *,
    kid_subset_size: int,
    is_splits: int,
    k_precision: int,
    k_density: int,
    sampling: str,
    memory_budget: int,
    device: Any,
) -> dict[str, Interval]:
    """The half-sample intervals of KID, IS and the neighbour metrics, all from the same half-samples: each side's
    from its own stream, so that IS (a)'s interval does not depend on side b."""
    points = {entry.key: entry.value for entry in entries}
    labels = {entry.key: entry.label for entry in entries}
    keys = [key for key in points if key not in ("fid", "sfid")]
    replicates: dict[str, list[float]] = {key: [] for key in keys}
    # Side b is drawn only where an interval reads it (KID, prdc, IS (b)): IS (a)'s never does, nor a statistics side.
    n_b = b.n if "b" in _half_sample_sides(names, {"a": _sized(a), "b": _sized(b)}) else None
    for rows_a, rows_b in half_sample_draws(a.n, n_b, ci.n_resamples, half_seed):
        if "kid" in names:
            result = kid(a.rows[rows_a], b.rows[rows_b], subsets=ci.kid_subsets, subset_size=kid_subset_size,
                         seed=seed, sampling=sampling)
            replicates["kid"].append(result.mean)
        for key, side, rows in (("is_a", a, rows_a), ("is_b", b, rows_b)):
            if key in replicates:
                replicates[key].append(
                    inception_score(side.logits[rows], splits=is_splits, seed=seed, sampling=sampling).mean
                )
        if "prdc" in names:
            result = manifold_metrics(b.rows[rows_b], a.rows[rows_a], k_pr=k_precision, k_dc=k_density,
                                      memory_budget=memory_budget, device=device)
            for key in ("precision", "recall", "density", "coverage"):
                replicates[key].append(float(getattr(result, key)))
    intervals = {}
    for key, values in replicates.items():
        summary = summarise_half_samples(points[key], values, level=ci.level, seed=half_seed, n_a=a.n, n_b=n_b)
        intervals[key] = Interval(
            low=summary.low,
            high=summary.high,
            level=summary.level,
            method="half-sample",
            std=summary.std,
            shift=summary.shift,
            n_resamples=summary.n_resamples,
            seed=half_seed,
            note=_is_interval_note(labels[key], (a.n if key == "is_a" else b.n) // 2, is_splits, ci.level)
            if key in ("is_a", "is_b") else None,
        )
    return intervals


def _is_interval_note(label: str, half: int, splits: int, level: float) -> str | None:
    """Why the half-sample interval of an Inception Score cannot be trusted at its level, or None where it can.

    Each replicate scores `half` rows in `splits` splits: with few rows per split, a split's marginal is far from
    the population's, and the half-samples' spread (about the score at half the size, which is lower) was measured
    to miss the score of the full size far more often than the level says (docs/metrics.md, "Intervals").
    """
    per_split = half // splits
    if per_split >= RELIABLE_ROWS_PER_HALF_SPLIT:
        return None
    return (
        f"{label}'s {100.0 * level:.10g}% interval is unreliable: its half-samples of {half} images hold {per_split} "
        f"per split ({splits} splits), fewer than {RELIABLE_ROWS_PER_HALF_SPLIT}; there 90% intervals were measured "
        f"to cover the true score in 55 to 65% of samples (78 to 88% at 20 per split, 92% at 50: docs/metrics.md, "
        f"'Intervals'); use at least {2 * RELIABLE_ROWS_PER_HALF_SPLIT * splits} images, or fewer splits (is_splits)"
    )
