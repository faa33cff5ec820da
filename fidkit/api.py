"""The public API: features and statistics of any input, and the FID between any two.

``compute_stats(source)`` turns a folder, an archive, an image array, an iterable of uint8 batches, a
dataset name, a statistics or features file, a :class:`~fidkit.stats.Stats` or
:class:`~fidkit.features.Features` into statistics; ``compute_features(source)`` keeps the feature rows
themselves; ``compute_fid(a, b)`` compares two inputs and returns a :class:`~fidkit.report.FidReport` that
says how the number was made. All run the steps of :mod:`fidkit.pipeline` (open -> look up the cache ->
extract -> store) and then, for a comparison, the distance of :mod:`fidkit.frechet` and the report of
:mod:`fidkit.report`.

Every function takes the run's settings as keyword arguments, the fields of
:class:`~fidkit.options.RunOptions` (``device``, ``batch_size``, ``limit``, ``use_cache``, ...), or as one
``options=RunOptions(...)`` object; the keywords are checked once, there.
"""

from __future__ import annotations

import inspect
import time
import warnings
from collections.abc import Callable
from typing import Any

from fidkit.errors import FidkitWarning
from fidkit.extractors import LazyExtractor
from fidkit.features import Features
from fidkit.frechet import fid_from_stats
from fidkit.options import RunOptions, check_names, check_options_for_object, run_options
from fidkit.pipeline import SideResult, is_file_input, open_input, side_result
from fidkit.preflight import check_against_run
from fidkit.report import (
    FidReport,
    SideReport,
    Timings,
    assemble_fid_report,
    check_comparable,
)
from fidkit.stats import Stats

__all__ = [
    "compute_stats",
    "compute_stats_with_report",
    "compute_features",
    "compute_side",
    "compute_fid",
    "FidReport",
    "SideReport",
    "Timings",
]


def _own_keywords(function: Callable[..., Any]) -> tuple[str, ...]:
    """The keyword-only parameters of an API function: what it takes besides the fields of RunOptions."""
    parameters = inspect.signature(function).parameters.values()
    return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _check_keywords(function: Callable[..., Any], overrides: dict[str, Any]) -> None:
    """Refuse a keyword of a call of `function` that is neither its own nor a RunOptions field, listing both and the
    closest name: ``compute_fid(a, b, metric="kid")`` is a misspelt ``metrics``, not an unknown run option, and
    ``compute_stats(source, metrics="kid")`` asks for what only ``compute_fid`` computes."""
    if all(name in RunOptions.__dataclass_fields__ for name in overrides):
        return
    elsewhere = {
        name: other.__name__
        for other in (compute_fid, compute_features)
        if other is not function
        for name in _own_keywords(other)
        if name not in _own_keywords(function)
    }
    check_names(overrides, function=function.__name__, own=_own_keywords(function), elsewhere=elsewhere)


def _prepare(
    options: RunOptions | None, extractor: Any, overrides: dict[str, Any], inputs: tuple[Any, ...]
) -> tuple[RunOptions, LazyExtractor]:
    """The run's options and its extractor: `extractor` is a registered name (an option) or an object. The device
    is probed unless every one of `inputs` is statistics or features, which no network reads."""
    if isinstance(extractor, str):
        overrides = {**overrides, "extractor": extractor}
        extractor = None
    overrides = check_options_for_object(extractor, options, overrides)  # an object runs as built: none may say else
    resolved = run_options(options, **overrides)
    lazy = LazyExtractor(resolved, given=extractor)
    # On a cluster the actors' nodes run the network: they check the device. With files only, the device does not
    # apply (fidkit.preflight warns, as for the other options of the network's run).
    if resolved.cluster != "ray" and not all(map(is_file_input, inputs)):
        lazy.probe()  # an impossible explicit GPU is an error now, even when every side turns out to be cached
    return resolved, lazy


def _session(options: RunOptions) -> Any:
    """A span in which both sides share the cluster's set-up (one local Ray instance, not two)."""
    import contextlib

    if options.cluster == "ray":
        from fidkit.cluster.connect import shared_session

        return shared_session()
    return contextlib.nullcontext()


def compute_stats(source: Any, *, options: RunOptions | None = None, extractor: Any = None, **overrides: Any) -> Stats:
    """Return the statistics (mu, sigma, N) of a source's features.

    Parameters
    ----------
    source : path-like, str, numpy.ndarray, Stats, Features, Source or iterable of numpy.ndarray
        A folder of images (recursive), a ``.zip``/``.tar``/``.tar.gz`` archive, a ``.npy``/``.npz`` uint8
        image array (N, H, W, 3) or (N, H, W), an MNIST idx file, a CIFAR python batch folder, a dataset name
        (``"cifar10-train"``), a statistics ``.npz`` (returned as loaded), a features ``.npz``, a uint8 array,
        a :class:`~fidkit.stats.Stats` (returned as is), :class:`~fidkit.features.Features`, or an iterable of
        uint8 batches (B, H, W, 3) such as a generator's samples.
    options : RunOptions, optional
        The run's settings as one object; the keyword arguments below override its fields.
    extractor : str or extractor object, optional
        A registered extractor name (default ``"inception-2015"``), or a built extractor to use (and reuse
        across calls: :class:`fidkit.extractors.Extractor` says what it needs, and when its statistics are
        cached). An object runs as it was built: ``weights``, ``convention``, ``dims``, ``device``, ``engine``,
        ``precision`` and ``threads``, given explicitly, must say what it does, or they are an ``InputError``.
        Batches are of its own ``batch_size``, or of ``batch_size`` where that is smaller (the report says which).
    **overrides
        Fields of :class:`~fidkit.options.RunOptions`: ``weights``, ``device``, ``engine``, ``precision``,
        ``batch_size``, ``workers``, ``skip_bad``, ``limit``, ``seed``, ``exif_transpose``, ``use_cache``,
        ``hash_content``, ``progress``, ``cluster``, ``ray_address``, ``threads``.

    Returns
    -------
    Stats
        float64 ``mu`` and ``sigma`` (ddof=1), ``n``, and metadata: the extractor's (name, weights sha256,
        resize mode, engine, precision, provider), ``fidkit_version``, ``created`` (UTC ISO),
        ``source_fingerprint``, ``n_skipped``, ``lossy_inputs``.

    Raises
    ------
    FidkitError
        A source that cannot be read (:class:`~fidkit.errors.SourceError`), bad images without `skip_bad`
        (:class:`~fidkit.errors.ImageError`), no images (:class:`~fidkit.errors.EmptySourceError`), missing
        weights (:class:`~fidkit.errors.WeightsError`), an unknown option or an invalid combination
        (:class:`~fidkit.errors.InputError`).

    Examples
    --------
    >>> import numpy as np, fidkit
    >>> stats = fidkit.compute_stats(fidkit.Stats(mu=np.zeros(2), sigma=np.eye(2)))  # statistics: as they are
    >>> stats.dim
    2
    >>> stats = compute_stats("generated/", device="cpu", limit=10_000)   # doctest: +SKIP
    >>> stats.save("generated.npz")                                     # doctest: +SKIP
    """
    _check_keywords(compute_stats, overrides)
    stats, _ = compute_stats_with_report(source, options=options, extractor=extractor, **overrides)
    return stats


def compute_stats_with_report(
    source: Any, *, options: RunOptions | None = None, extractor: Any = None, **overrides: Any
) -> tuple[Stats, SideReport]:
    """Like :func:`compute_stats` (the same parameters), and also return the :class:`SideReport`.

    The :class:`SideReport` says whether the statistics came from the cache, which files were skipped,
    the batch size chosen and where the time went.
    """
    _check_keywords(compute_stats_with_report, overrides)
    result = compute_side(source, options=options, extractor=extractor, **overrides)
    return result.stats, result.report


def compute_features(
    source: Any,
    *,
    options: RunOptions | None = None,
    extractor: Any = None,
    outputs: str | tuple[str, ...] = ("features",),
    **overrides: Any,
) -> Features:
    """Return the feature rows of a source (float32, ``(N, dim)``), with the metadata of how they were made.

    Parameters
    ----------
    source, options, extractor, **overrides
        As for :func:`compute_stats`; a statistics file or :class:`~fidkit.stats.Stats` cannot give rows and is
        an ``InputError``.
    outputs : str or tuple of str, default ("features",)
        What to keep from the same forward pass: ``"features"`` (pool_3, always kept), ``"logits"`` (the
        Inception Score's) and ``"spatial"`` (sFID's); a string names them comma-separated (``"logits,spatial"``).

    Returns
    -------
    Features
        The rows, the asked-for outputs, and the same metadata as :func:`compute_stats`' statistics.

    Notes
    -----
    Features are cached (keyed like statistics, under the same size limit as statistics) and can be saved
    (:meth:`Features.save`) and given back as a source. A statistics file cannot give features: it is refused with what to supply instead. The metrics of two such sides take the
    evaluated (generated) one first and the reference second: ``fidkit.metrics.evaluate(generated, reference)``,
    ``compute_fid(generated, reference, metrics=...)``.

    Examples
    --------
    >>> import numpy as np, fidkit
    >>> rows = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    >>> fidkit.compute_features(fidkit.Features(rows)).n
    10
    >>> features = compute_features("generated/", limit=1000)          # doctest: +SKIP
    >>> features.save("generated-features.npz")                        # doctest: +SKIP
    """
    _check_keywords(compute_features, overrides)
    # A string names outputs ("logits", "logits,spatial"), as metrics="kid,is" names metrics: not its letters.
    names = tuple(name.strip() for name in outputs.split(",")) if isinstance(outputs, str) else tuple(outputs)
    result = compute_side(source, options=options, extractor=extractor, keep_features=names, **overrides)
    assert result.features is not None
    return result.features


def compute_side(
    source: Any, *, options: RunOptions | None = None, extractor: Any = None,
    keep_features: bool | tuple[str, ...] = False, **overrides: Any,
) -> SideResult:
    """The whole :class:`~fidkit.pipeline.SideResult` of one source: statistics, report, and kept features (with
    `keep_features` True, or a tuple of outputs as :func:`fidkit.pipeline.kept_outputs` reads it)."""
    _check_keywords(compute_side, overrides)
    resolved, lazy = _prepare(options, extractor, overrides, (source,))
    opened = open_input(source, resolved)
    check_against_run({"the input": opened}, lazy, resolved)
    with _session(resolved):
        return side_result(opened, lazy, resolved, keep_features=keep_features)


def compute_fid(
    a: Any,
    b: Any,
    *,
    options: RunOptions | None = None,
    extractor: Any = None,
    method: str = "auto",
    allow_weights_mismatch: bool = False,
    allow_convention_mismatch: bool = False,
    metrics: Any = ("fid",),
    ci: Any = None,
    metrics_seed: int = 0,
    **overrides: Any,
) -> FidReport:
    """Return the Fréchet Inception Distance between two sources, with a report of how it was made.

    Parameters
    ----------
    a, b : path-like, str, numpy.ndarray, Stats, Features, Source or iterable of numpy.ndarray
        Any source :func:`compute_stats` accepts. Statistics, features and cache hits skip the network. `a` is the
        evaluated set (the generated images) and `b` the reference (the real images), as in ``fidkit compute A B``:
        the FID is the same either way, the other `metrics` are not (see `metrics`).
    options, extractor, **overrides
        As in :func:`compute_stats`; `limit` and `seed` apply to each image side. By default one extractor is
        built, once, and only if a side needs the network; with ``cluster="ray"`` each image side is one job.
    method : str
        The Fréchet route (see :func:`fidkit.frechet.frechet_distance`); ``"auto"`` picks the exact
        and fastest one.
    allow_weights_mismatch : bool
        Turn the error for sides recorded with different weights into a warning.
    allow_convention_mismatch : bool
        Turn the error for sides recorded under different conventions (``convention``, the resize and
        normalization: docs/compatibility.md) into a warning.
    metrics : str or sequence of str
        What to compute besides the FID (which the table always holds): ``"kid"``, ``"is"``, ``"sfid"``,
        ``"prdc"``, or ``"all"`` (:func:`fidkit.metrics.parse_metrics`; default: the FID alone), of `a` as the
        evaluated set against `b` as the reference (:func:`fidkit.metrics.evaluate`'s order): ``is_a`` is the
        Inception Score of `a` (and ``is_b`` of `b`, where its logits are kept), precision is the share of `a` on
        `b`'s manifold, recall the share of `b` on `a`'s, density and coverage take `b` as the real set. Passing
        the real images first gives the reference's numbers as the model's; the text table says which side is
        which (``IS (a, evaluated)``). Each side keeps only what the asked metrics need (feature rows, logits,
        spatial features: :func:`fidkit.metrics.outputs_needed`), from the same forward pass; the result is
        ``report.metrics``, a :class:`fidkit.metrics.MetricTable`.
    ci : IntervalSpec, optional
        An interval for every asked metric (:class:`fidkit.metrics.IntervalSpec`: ``level``, ``n_resamples``,
        ``seed``), in the same order of the sides.
    metrics_seed : int
        The one seed of the metrics (KID subsets, IS splits, the intervals' streams).

    Returns
    -------
    FidReport
        ``float(report)`` is the FID; ``report.to_dict()`` is JSON-ready.

    Warns
    -----
    FidkitWarning
        Lossy inputs, skipped files, statistics files without N or weights, differing resize modes.
    SmallSampleWarning
        N below the feature dimension (from the distance).

    Raises
    ------
    InputError
        Sides recorded with different weights (unless `allow_weights_mismatch`) or conventions (unless
        `allow_convention_mismatch`), or different feature dimensions.

    Examples
    --------
    >>> import numpy as np, fidkit
    >>> a = fidkit.Stats(mu=np.zeros(2), sigma=np.eye(2), n=10)
    >>> b = fidkit.Stats(mu=np.ones(2), sigma=np.eye(2), n=10)
    >>> float(fidkit.compute_fid(a, b))
    2.0
    >>> report = compute_fid("generated/", "real/", device="cpu")   # doctest: +SKIP
    >>> print(f"FID {float(report):.4f} (N = {report.a.n} vs {report.b.n})")  # doctest: +SKIP
    """
    started = time.perf_counter()
    _check_keywords(compute_fid, overrides)
    resolved, lazy = _prepare(options, extractor, overrides, (a, b))
    asked = None
    if ci is not None or metrics not in ("fid", ("fid",)):
        # The metrics package (numpy, scipy.linalg.blas, every metric) is loaded only for a table: the FID alone,
        # a cached run's case, would pay about 60 ms of imports for nothing.
        from fidkit.metrics.request import table_request

        asked, ci = table_request(metrics, ci)
    # Both inputs are opened (and checked) before either side spends network time.
    opened_a = open_input(a, resolved)
    opened_b = open_input(b, resolved)
    check_against_run(
        {"side a": opened_a, "side b": opened_b}, lazy, resolved, allow_weights_mismatch=allow_weights_mismatch,
        allow_convention_mismatch=allow_convention_mismatch,
    )
    kept: dict[str, Any] = {"a": None, "b": None}
    if asked is not None:
        from fidkit.metrics.request import check_available, check_sizes, outputs_to_keep
        from fidkit.metrics.table import evaluate

        # A statistics side cannot give rows, logits or spatial features, nor can 8 images give 10 IS splits: said
        # now, before any network time, wherever the sizes are known when the inputs are opened.
        check_available(asked, ci, {"a": opened_a, "b": opened_b})
        kept = outputs_to_keep(asked, ci, {"a": opened_a, "b": opened_b})
        check_sizes(asked, ci, {"a": opened_a, "b": opened_b}, kept=kept)
    with _session(resolved):
        side_a = side_result(opened_a, lazy, resolved, keep_features=kept["a"] or False)
        side_b = side_result(opened_b, lazy, resolved, keep_features=kept["b"] or False)
    messages = check_comparable(
        side_a.report, side_b.report, allow_weights_mismatch=allow_weights_mismatch,
        allow_convention_mismatch=allow_convention_mismatch,
    )
    for message in messages:
        warnings.warn(message, FidkitWarning, stacklevel=2)

    distance_started = time.perf_counter()
    frechet = fid_from_stats(side_a.stats, side_b.stats, method=method)
    table = None
    if asked is not None:
        table = evaluate(
            side_a.features or side_a.stats, side_b.features or side_b.stats, asked, ci=ci, seed=metrics_seed,
            fid=frechet,
        )
    timings = Timings(
        decode_seconds=side_a.report.decode_seconds + side_b.report.decode_seconds,
        network_seconds=side_a.report.network_seconds + side_b.report.network_seconds,
        distance_seconds=time.perf_counter() - distance_started,
        total_seconds=time.perf_counter() - started,
    )
    return assemble_fid_report(frechet, side_a.report, side_b.report, messages, timings, metrics=table)

