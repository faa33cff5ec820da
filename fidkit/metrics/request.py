"""What a metrics table is asked for, and whether two sides can serve it: checked before any work.

:func:`parse_metrics` reads ``--metrics``; :func:`table_request` and :func:`outputs_needed` say what each side must
keep from the forward pass; :func:`check_available`, :func:`check_sizes` and the width check refuse, naming the
metric, the side and the fix, what :func:`fidkit.metrics.table.evaluate` could not compute: before the network runs
(:func:`fidkit.compute_fid` calls the first two as it opens its inputs; sizes only where they are known then) or any
metric starts (evaluate calls all three).
"""

from __future__ import annotations

from typing import Any, Iterable

from fidkit._validate import is_count
from fidkit.errors import InputError
from fidkit.features import Features
from fidkit.metrics._table_results import IntervalSpec
from fidkit.stats import Stats
from fidkit.stats.reference import images_hint

__all__ = [
    "METRICS", "DEFAULT_METRICS", "parse_metrics", "table_request", "outputs_needed", "outputs_to_keep",
    "check_available", "check_sizes", "intervals_from_statistics",
]


#: The names ``--metrics`` takes, in the order the table reports them. ``prdc``: precision, recall, density,
#: coverage.
METRICS = ("fid", "kid", "is", "sfid", "prdc")
#: What is computed when nothing is asked.
DEFAULT_METRICS = ("fid",)
#: The outputs of :class:`~fidkit.features.Features`, in the order :func:`outputs_needed` lists them.
_OUTPUT_ORDER = ("features", "logits", "spatial")
_OUTPUT_WORDS = {"features": "feature rows (pool_3)", "logits": "logits", "spatial": "spatial features (sFID's)"}
_ROLE_NAMES = {"a": "side a (the evaluated images)", "b": "side b (the reference)"}
_LABELS = {"fid": "FID", "kid": "KID", "is": "the Inception Score", "sfid": "sFID", "prdc": "precision/recall"}
# Names people type for what lives under another name; the error says where.
_HINTS = {
    "precision": "prdc",
    "recall": "prdc",
    "density": "prdc",
    "coverage": "prdc",
    "pr": "prdc",
    "prc": "prdc",
    "isc": "is",
    "inception_score": "is",
    "s-fid": "sfid",
}


def parse_metrics(text_or_names: str | Iterable[str]) -> tuple[str, ...]:
    """The metric names of ``"fid,kid"``, ``["fid", "kid"]`` or ``"all"``, in :data:`METRICS` order.

    Case and surrounding spaces are ignored, duplicates dropped; ``"all"`` is every metric.

    Raises
    ------
    InputError
        Nothing named, an unknown name (the message lists the valid ones), or not a string or list of strings.
    """
    if isinstance(text_or_names, str):
        pieces = text_or_names.split(",")
    else:
        try:
            items = list(text_or_names)
        except TypeError:
            items = None
        if items is None or not all(isinstance(item, str) for item in items):
            raise InputError(
                f"metrics must be a comma-separated string or a list of names, got {text_or_names!r}; valid names: "
                f"{', '.join(METRICS)} (or all)"
            )
        pieces = [piece for item in items for piece in item.split(",")]
    names = [piece.strip().lower() for piece in pieces if piece.strip()]
    if not names:
        raise InputError(f"no metric named; choose from {', '.join(METRICS)} (or all), e.g. 'fid,kid'")
    if "all" in names:
        return METRICS
    unknown = [name for name in dict.fromkeys(names) if name not in METRICS]
    if unknown:
        hints = [f"{name!r} is part of {_HINTS[name]!r}" for name in unknown if name in _HINTS]
        raise InputError(
            f"unknown metric{'s' if len(unknown) > 1 else ''} {', '.join(repr(name) for name in unknown)}; valid "
            f"names: {', '.join(METRICS)} (or all)" + (f" ({'; '.join(hints)})" if hints else "")
        )
    return tuple(name for name in METRICS if name in names)


def _check_ci(ci: Any) -> IntervalSpec | None:
    if ci is None or isinstance(ci, IntervalSpec):
        return ci
    raise InputError(f"ci must be an IntervalSpec (e.g. IntervalSpec(level=0.95, n_resamples=200)) or None, got {ci!r}")


def table_request(metrics: Any, ci: Any) -> tuple[tuple[str, ...] | None, IntervalSpec | None]:
    """What a FID report's table holds: ``(metrics, ci)`` checked, the FID always among them (it is the report's
    number), or ``(None, None)`` for the FID alone without an interval (no table: the report is the FID).

    Examples
    --------
    >>> table_request("kid", None)
    (('fid', 'kid'), None)
    >>> table_request("fid", None)
    (None, None)
    """
    asked = parse_metrics(("fid", *parse_metrics(metrics)))
    ci = _check_ci(ci)
    if asked == ("fid",) and ci is None:
        return None, None
    return asked, ci


def outputs_needed(metrics: str | Iterable[str], *, ci: IntervalSpec | None) -> dict[str, tuple[str, ...] | None]:
    """Which outputs each side must keep for :func:`evaluate` to compute `metrics` (with intervals if `ci`).

    Returns
    -------
    dict
        ``{"a": ..., "b": ...}``: a tuple of :class:`~fidkit.features.Features` outputs (``"features"`` first, then
        ``"logits"`` and/or ``"spatial"``), or None where the side's statistics suffice (FID without an interval;
        also a side no asked metric reads, such as b for the Inception Score alone).

    Examples
    --------
    >>> outputs_needed("fid", ci=None)
    {'a': None, 'b': None}
    >>> outputs_needed("fid,is,sfid", ci=None)
    {'a': ('features', 'logits', 'spatial'), 'b': ('features', 'spatial')}
    >>> outputs_needed("fid", ci=IntervalSpec())
    {'a': ('features',), 'b': ('features',)}
    """
    names = parse_metrics(metrics)
    ci = _check_ci(ci)
    needed: dict[str, set[str]] = {"a": set(), "b": set()}
    for name in names:
        if name == "fid" and ci is not None or name in ("kid", "prdc"):
            for role in needed:
                needed[role].add("features")
        elif name == "is":
            needed["a"].update(("features", "logits"))
        elif name == "sfid":
            for role in needed:
                needed[role].update(("features", "spatial"))
    return {role: tuple(o for o in _OUTPUT_ORDER if o in outputs) or None for role, outputs in needed.items()}


def outputs_to_keep(
    names: str | Iterable[str], ci: IntervalSpec | None, sides: dict[str, Any]
) -> dict[str, tuple[str, ...] | None]:
    """What each of `sides` (as :func:`check_available` takes them, which has passed) keeps from the forward pass:
    :func:`outputs_needed`, but nothing for a side given as statistics, which serves the metrics it passed from its
    statistics (FID; sFID from an ADM reference batch's spatial statistics) and has no rows to keep.

    Examples
    --------
    >>> import numpy as np
    >>> from fidkit import Stats
    >>> outputs_to_keep("sfid", None, {"a": "generated/", "b": Stats(mu=np.zeros(2), sigma=np.eye(2))})
    {'a': ('features', 'spatial'), 'b': None}
    """
    needed = outputs_needed(names, ci=ci)
    return {role: None if isinstance(sides.get(role), Stats) else outputs for role, outputs in needed.items()}


# --------------------------------------------------------------------------------------------- checks


def _check_side(side: Any, role: str) -> Features | Stats:
    if isinstance(side, (Features, Stats)):
        return side
    raise InputError(
        f"{_ROLE_NAMES[role]} must be fidkit.Features or fidkit.Stats, got {type(side).__name__}; wrap an (N, dim) "
        "array of features as fidkit.Features(array)"
    )


def _where(side: Features | Stats) -> str:
    return f" ({side.path})" if side.path is not None else ""


def _statistics_words(side: Stats) -> str:
    """What a statistics side holds, for a refusal: ``mu and sigma``, or an ADM reference batch's contents."""
    return f"{getattr(side, 'contents', None) or 'mu and sigma'}{_where(side)}"


def intervals_from_statistics(names: tuple[str, ...], ci: IntervalSpec | None, sides: dict[str, Any]) -> dict[str, str]:
    """The asked metrics whose value a statistics side serves but whose interval it cannot: ``{name: note}``.

    FID, and sFID against an ADM reference batch, are computed from statistics; their bootstrap intervals resample
    images, which statistics are not. Where another asked metric can have an interval (the Inception Score of side
    a, which never reads side b), these are reported without one, the note saying why and how to get one; where
    none can, the interval is refused, naming every such metric, the side and the fix.
    """
    if ci is None:
        return {}
    stats_roles = [role for role in ("a", "b") if isinstance(sides.get(role), Stats)]
    if not stats_roles:
        return {}
    # sFID's value needs every statistics side to hold spatial statistics; where one does not, check_available
    # refuses sFID itself.
    with_spatial = all(getattr(sides[role], "spatial", None) is not None for role in stats_roles)
    served = [name for name in names if name == "fid" or (name == "sfid" and with_spatial)]
    if not served:
        return {}
    role = stats_roles[0]
    side = sides[role]
    labels = " and ".join(_LABELS[name] for name in served)
    what = " and ".join(_OUTPUT_WORDS[{"fid": "features", "sfid": "spatial"}[name]] for name in served)

    def fix(metrics: list[str]) -> str:
        return (f"supply the images of side {role}, or a features file of them made with `fidkit features SRC "
                f"--save F.npz --metrics {','.join(metrics)}`")

    if all(name in served for name in names):
        values = " and ".join(f"{_LABELS[name]}'s" for name in served) + (" value" if len(served) == 1 else " values")
        raise InputError(
            f"an interval for {labels} needs the {what} of {_ROLE_NAMES[role]}: the bootstrap resamples images, but "
            f"side {role} is statistics only ({_statistics_words(side)}), which give {values} only; {fix(served)}, "
            f"or drop the interval (--ci, ci=){images_hint(side)}"
        )
    return {
        name: (
            f"{_LABELS[name]} has no interval: side {role} is statistics ({_statistics_words(side)}), which give its "
            f"value, but its bootstrap resamples images; for one, {fix([name])}"
        )
        for name in served
    }


def check_available(names: tuple[str, ...], ci: IntervalSpec | None, sides: dict[str, Any]) -> None:
    """Refuse, before computing anything, a metric whose inputs a side does not hold.

    `sides` maps ``"a"`` and ``"b"`` to what each side is: a Stats or Features is checked; anything else (images
    not yet run through the network, which can give every output) passes. Statistics serve FID, and sFID where they
    hold spatial statistics (an ADM reference batch), without an interval: with `ci`, they are given without one
    where another asked metric has one, else refused (:func:`intervals_from_statistics`).
    """
    without = intervals_from_statistics(names, ci, sides)
    for name in names:
        label = "an interval for FID" if name == "fid" else _LABELS[name]
        for role, outputs in outputs_needed((name,), ci=ci).items():
            if outputs is None:
                continue
            side = sides[role]
            if not isinstance(side, (Stats, Features)):
                continue
            output = outputs[-1]  # the most specific: logits or spatial if asked, else the rows
            what = f"the {_OUTPUT_WORDS[output]} of {_ROLE_NAMES[role]}"
            fix = (
                f"supply the images of side {role}, or a features file of them made with `fidkit features SRC "
                f"--save F.npz --metrics {name}`"
            )
            if isinstance(side, Stats):
                if name in without:
                    continue  # its value from the statistics, without an interval (another metric has one)
                if name == "sfid" and getattr(side, "spatial", None) is not None and ci is None:
                    continue  # sFID from an ADM reference batch's mu_s and sigma_s
                also = ", or an ADM reference batch (it holds them as mu_s and sigma_s)" if name == "sfid" else ""
                raise InputError(
                    f"{label} needs {what}, but side {role} is statistics only ({_statistics_words(side)}), from "
                    f"which it cannot be computed; {fix}{also}{images_hint(side)}"
                )
            missing = [o for o in outputs if o not in side.outputs]
            if missing:
                raise InputError(
                    f"{label} needs {what}, but the features of side {role}{_where(side)} hold no "
                    f"{_OUTPUT_WORDS[missing[0]]}; {fix} (or compute_features(..., outputs={outputs!r}))"
                )


#: :func:`fidkit.metrics.evaluate`'s defaults of the parameters that decide the sizes a metric needs, here so that
#: :func:`check_sizes` and :func:`fidkit.compute_fid` (which takes evaluate's defaults) check what evaluate will run.
DEFAULT_IS_SPLITS = 10
DEFAULT_K_PRECISION = 3
DEFAULT_K_DENSITY = 5

#: One side as the size checks see it: its number of images and the outputs it holds (or will hold), or None
#: where its size is unknown or no metric reads its rows (statistics).
_Sized = tuple[int, tuple[str, ...]] | None


def _sized(side: Any, kept: tuple[str, ...] | None = None) -> _Sized:
    """What the size checks know of `side`: a Features' rows and outputs; an opened image source's number of images
    (``n_images``, after ``limit``: files skipped as bad only make it smaller) and the outputs it will keep (`kept`,
    from :func:`outputs_to_keep`); None for statistics, a source of unknown size (an iterable) or one that keeps no
    rows."""
    if isinstance(side, Features):
        return side.n, side.outputs
    if isinstance(side, Stats) or not kept:
        return None
    n = getattr(side, "n_images", None)
    return (n, tuple(kept)) if is_count(n) else None


def check_sizes(
    names: Iterable[str],
    ci: IntervalSpec | None,
    sides: dict[str, Any],
    *,
    kept: dict[str, tuple[str, ...] | None] | None = None,
    side_names: tuple[str, str] = ("a", "b"),
    is_splits: int = DEFAULT_IS_SPLITS,
    k_largest: int = max(DEFAULT_K_PRECISION, DEFAULT_K_DENSITY),
) -> None:
    """Refuse a side too small for an asked metric, or (with `ci`) for its half-sample interval, before the network
    runs: `sides` as :func:`check_available` takes them (which has passed), `kept` what each image side will keep
    (:func:`outputs_to_keep`).

    A Features side is checked on its rows; an opened image source where its number of images is known when it is
    opened (arrays, ``.npy`` files, a folder's or an archive's file count, after ``limit``); an iterable of batches,
    whose size is known only once read, is checked by :func:`fidkit.metrics.evaluate` on its features.
    """
    names = parse_metrics(names)
    kept = kept or {}
    sizes = {role: _sized(side, kept.get(role)) for role, side in sides.items()}
    _check_sizes(names, sizes, side_names, is_splits=is_splits, k_largest=k_largest)
    if _check_ci(ci) is not None:
        _check_half_sizes(names, sizes, is_splits=is_splits, k_largest=k_largest)


def _check_sizes(names, sides, side_names: tuple[str, str], *, is_splits: int, k_largest: int) -> None:
    """Refuse, before any work, a side too small for an asked metric, naming the side, the images it needs and
    the fix (the metrics' own checks name neither: ``logits has 8 rows for 10 splits``). `sides` maps a role to
    :data:`_Sized` (:func:`_sized`)."""
    rows = {role: side for role, side in sides.items() if side is not None}
    needs = []
    if any(name in names for name in ("fid", "kid", "sfid")):
        key = next(name for name in ("fid", "sfid", "kid") if name in names)
        why = "KID's unbiased estimator" if key == "kid" else "a covariance"
        needs += [(role, 2, key, why) for role in rows]
    if "is" in names:
        roles = [role for role in ("a", "b") if role in rows and (role == "a" or "logits" in rows[role][1])]
        needs += [(role, is_splits, "is", f"its {is_splits} splits hold one image or more each") for role in roles]
    if "prdc" in names:
        needs += [(role, k_largest + 1, "prdc", f"a ball of k = {k_largest} other images around each")
                  for role in rows]
    labels = {"fid": "FID", "sfid": "sFID", "kid": "KID", "is": "the Inception Score",
              "prdc": "precision/recall/density/coverage"}
    for role, minimum, key, why in needs:
        n = rows[role][0]
        if n < minimum:
            name = side_names[0 if role == "a" else 1]
            who = f"side {role}" if name == role else f"the {name} side"
            leave = "" if key == "fid" else f", or leave {key!r} out of the metrics asked"
            raise InputError(
                f"{labels[key]} needs at least {minimum} images on {who} ({why}), which holds {n}: use at least "
                f"{minimum} {'' if name == role else name + ' '}images there{leave}"
            )


def _check_dims(names: tuple[str, ...], sides: dict[str, Features | Stats]) -> None:
    """Refuse, before computing anything, two sides whose rows a metric compares but whose widths differ, naming the
    metric, the output, both sides and their files (the metric functions only know ``features_a`` and ``features_b``).
    """
    compared = {"features": [name for name in names if name in ("fid", "kid", "prdc")],
                "spatial": [name for name in names if name == "sfid"]}
    for output, metrics in compared.items():
        if not metrics:
            continue
        dims = {}
        for role, side in sides.items():
            if isinstance(side, Features) and output in side.outputs:
                dims[role] = side.output(output).shape[1]
            elif isinstance(side, Stats) and output == "features":
                dims[role] = side.dim
            elif isinstance(side, Stats) and getattr(side, "spatial", None) is not None:
                dims[role] = side.spatial.dim  # an ADM reference batch's mu_s and sigma_s
        if len(dims) == 2 and dims["a"] != dims["b"]:
            labels = " and ".join(_LABELS[name] for name in metrics)
            raise InputError(
                f"{labels} compare{'s' if len(metrics) == 1 else ''} the {_OUTPUT_WORDS[output]} of both sides, but "
                f"side a's{_where(sides['a'])} have {dims['a']} values per image and side b's{_where(sides['b'])} "
                f"have {dims['b']}; both sides must come from the same feature extractor: compute both with the same "
                "network (e.g. `fidkit features SRC --save F.npz` for each side)"
            )


def _half_sample_sides(names, sides) -> tuple[str, ...]:
    """The sides whose rows the half-sample intervals draw: ``"a"`` for KID, IS and the neighbour metrics; ``"b"``
    only for KID, the neighbour metrics and IS (b), which exists when side b has logits. IS (a)'s interval never
    reads side b, so side b's size (one row, or statistics) is no concern of it. `sides` maps a role to
    :data:`_Sized` (:func:`_sized`)."""
    drawn = {"a"} if {"kid", "is", "prdc"} & set(names) else set()
    b_logits = sides["b"] is not None and "logits" in sides["b"][1]
    if {"kid", "prdc"} & set(names) or ("is" in names and b_logits):
        drawn.add("b")
    return tuple(role for role in ("a", "b") if role in drawn)


#: The fewest rows an Inception Score split of a half-sample may hold: a split of one row scores exactly 1.
MIN_ROWS_PER_HALF_SPLIT = 2
#: Below this many rows per split of a half-sample, the IS interval carries a note (docs/metrics.md, "Intervals":
#: measured 90 % intervals covered in 55 to 65 % of samples at 2 to 10 rows per split, 78 to 88 % at 20, 92 % at 50).
RELIABLE_ROWS_PER_HALF_SPLIT = 20


def _check_half_sizes(names, sides, *, is_splits: int, k_largest: int) -> None:
    """With intervals, refuse sizes whose half-samples the metrics cannot take (before any work): on each side that
    :func:`_half_sample_sides` draws, and there only for the metrics whose intervals draw it."""
    drawn = _half_sample_sides(names, sides)
    needs = []
    if "kid" in names:
        needs += [(role, 2, "KID's unbiased estimator needs 2") for role in ("a", "b")]
    if "is" in names:
        # A split of one row has an Inception Score of exactly 1: every replicate would be 1.0 and the interval
        # of zero width, whatever the value (measured: 20 rows, 10 splits gave 1.7509 [1.7509, 1.7509]).
        minimum = MIN_ROWS_PER_HALF_SPLIT * is_splits
        needs += [(role, minimum, f"the Inception Score's {is_splits} splits of IS ({role}) need "
                                  f"{MIN_ROWS_PER_HALF_SPLIT} rows each in a half-sample (a split of one row scores "
                                  f"exactly 1): {2 * minimum} images or more (or fewer is_splits)")
                  for role in ("a", "b") if role in drawn]
    if "prdc" in names:
        why = f"a ball of k = {k_largest} other samples needs {k_largest + 1}"
        needs += [(role, k_largest + 1, why) for role in ("a", "b")]
    for role, minimum, why in needs:
        if sides[role] is None:  # statistics (refused by check_available) or a size not known yet
            continue
        n = sides[role][0]
        half = n // 2
        if half < minimum:
            raise InputError(
                f"an interval by half-samples keeps {half} of the {n} images of side {role}, "
                f"but {why}; pass more images or drop the interval"
            )


def _check_budget(memory_budget: Any) -> int:
    if not is_count(memory_budget):
        raise InputError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
    return int(memory_budget)


# --------------------------------------------------------------------------------------------- the numbers
