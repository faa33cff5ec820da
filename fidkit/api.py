"""The public API: statistics of any input, and the FID between any two.

``compute_stats(source)`` turns a folder, an archive, an image array, an iterable of uint8 batches, a
statistics file or a :class:`~fidkit.stats.Stats` into statistics; ``compute_fid(a, b)`` compares two
such inputs and returns a :class:`~fidkit.report.FidReport` that says how the number was made. Both run
the steps of :mod:`fidkit.pipeline` (open -> look up the cache -> extract -> store) and then, for a
comparison, the distance of :mod:`fidkit.frechet` and the report of :mod:`fidkit.report`.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any

from fidkit.cluster import cluster_session
from fidkit.errors import FidkitWarning
from fidkit.frechet import fid_from_stats
from fidkit.pipeline import Network, SideOptions, open_input, side_statistics
from fidkit.report import (
    FidReport,
    SideReport,
    Timings,
    assemble_fid_report,
    consistency_warnings,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from fidkit.inception import FeatureExtractor
    from fidkit.stats import Stats

__all__ = ["compute_stats", "compute_stats_with_report", "compute_fid", "FidReport", "SideReport", "Timings"]


def compute_stats(
    source: Any,
    *,
    weights: Any = None,
    device: str = "auto",
    batch_size: int = 50,
    workers: int | None = None,
    skip_bad: bool = False,
    limit: int | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    hash_content: bool = False,
    exif_transpose: bool = False,
    progress: bool | None = None,
    extractor: FeatureExtractor | None = None,
    engine: str = "auto",
    precision: str = "exact",
    cluster: str = "local",
    ray_address: str | None = None,
) -> Stats:
    """Return the Inception statistics (mu, sigma, N) of a source.

    Parameters
    ----------
    source : path-like, numpy.ndarray, Stats, Source or iterable of numpy.ndarray
        A folder of images (recursive), a ``.zip``/``.tar``/``.tar.gz`` archive, a ``.npy``/``.npz``
        uint8 image array (N, H, W, 3) or (N, H, W), an MNIST idx file, a CIFAR python batch folder, a
        statistics ``.npz`` (returned as loaded), a uint8 array, a :class:`~fidkit.stats.Stats`
        (returned as is), or an iterable of uint8 batches (B, H, W, 3) such as a generator's samples.
    weights : path-like, optional
        The Inception weights (``.pth``); default ``$FIDKIT_WEIGHTS``, the cache, or a download.
    device : {"auto", "cpu", "cuda", "tensorrt"}
        Where the network runs (``"auto"``: CUDA if a GPU is usable, else the CPU).
    batch_size : int
        Images per network batch.
    workers : int, optional
        Decoding processes; default from the machine.
    skip_bad : bool
        Skip undecodable files (counted and named in the metadata) instead of stopping with
        :class:`~fidkit.errors.ImageError`.
    limit, seed : int, optional
        Use `limit` images: the first ones in sorted order, or a random subset drawn with `seed`.
    use_cache : bool
        Read and write the statistics cache for folder, archive and array sources.
    hash_content : bool
        Fingerprint files by their content (sha256) instead of size and modification time.
    exif_transpose : bool
        Apply the EXIF orientation tag (default: pixels as stored, as the reference did).
    progress : bool, optional
        Show a progress bar on stderr; default only when stderr is a terminal.
    extractor : FeatureExtractor, optional
        A feature extractor to use (and reuse across calls) instead of building one; `weights`,
        `device`, `engine` and `precision` are then ignored.
    engine : {"auto", "onnxruntime", "torch"}
        What runs the network: the ONNX graph on onnxruntime, or the same network in torch
        (:mod:`fidkit.inception.torch_engine`). ``"auto"``: onnxruntime, except where a GPU is asked for,
        onnxruntime cannot use it and torch can (then torch, with a warning). Recorded in the statistics.
    precision : {"exact", "fast"}
        ``"fast"``: TensorRT with FP16 (``device="tensorrt"``), opt-in; ``"exact"`` float32 otherwise.
    cluster : {"local", "ray"}
        Where features are computed: this process (decoding in worker processes of this machine), or the
        actors of a Ray cluster (``pip install "fidkit[ray]"``; see ``docs/distributed.md``). Both give the
        same statistics and share the cache. With ``"ray"``, `workers` is not used (each actor decodes its
        own shard) and `extractor` only lends its weights and device.
    ray_address : str, optional
        The Ray cluster to use with ``cluster="ray"`` (e.g. ``"ray://head:10001"``); default
        ``$RAY_ADDRESS``, else a local Ray instance started for this call and shut down after it.

    Returns
    -------
    Stats
        float64 ``mu`` and ``sigma`` (ddof=1), ``n``, and metadata: the extractor's (weights sha256,
        resize mode, provider), ``fidkit_version``, ``created`` (UTC ISO), ``source_fingerprint``,
        ``n_skipped``, ``lossy_inputs``.

    Raises
    ------
    FidkitError
        A source that cannot be read (:class:`~fidkit.errors.SourceError`), bad images without
        `skip_bad` (:class:`~fidkit.errors.ImageError`), no images
        (:class:`~fidkit.errors.EmptySourceError`), missing weights
        (:class:`~fidkit.errors.WeightsError`).

    Examples
    --------
    >>> import numpy as np, fidkit
    >>> stats = fidkit.compute_stats(fidkit.Stats(mu=np.zeros(2), sigma=np.eye(2)))  # statistics: as they are
    >>> stats.dim
    2
    >>> stats = compute_stats("generated/")                       # doctest: +SKIP
    >>> stats.save("generated.npz")                                # doctest: +SKIP
    """
    stats, _ = compute_stats_with_report(
        source, weights=weights, device=device, batch_size=batch_size, workers=workers, skip_bad=skip_bad,
        limit=limit, seed=seed, use_cache=use_cache, hash_content=hash_content, exif_transpose=exif_transpose,
        progress=progress, extractor=extractor, engine=engine, precision=precision, cluster=cluster,
        ray_address=ray_address,
    )
    return stats


def compute_stats_with_report(
    source: Any,
    *,
    weights: Any = None,
    device: str = "auto",
    batch_size: int = 50,
    workers: int | None = None,
    skip_bad: bool = False,
    limit: int | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    hash_content: bool = False,
    exif_transpose: bool = False,
    progress: bool | None = None,
    extractor: FeatureExtractor | None = None,
    engine: str = "auto",
    precision: str = "exact",
    cluster: str = "local",
    ray_address: str | None = None,
) -> tuple[Stats, SideReport]:
    """Like :func:`compute_stats` (the same parameters), and also return the :class:`SideReport`.

    The :class:`SideReport` says whether the statistics came from the cache, which files were skipped
    and where the time went.
    """
    options = SideOptions(
        batch_size=batch_size, workers=workers, skip_bad=skip_bad, limit=limit, seed=seed, use_cache=use_cache,
        hash_content=hash_content, exif_transpose=exif_transpose, progress=progress, cluster=cluster,
        ray_address=ray_address,
    )
    network = Network(
        extractor, weights=weights, device=device, batch_size=options.batch_size, engine=engine, precision=precision
    )
    return side_statistics(open_input(source, options), network, options)


def compute_fid(
    a: Any,
    b: Any,
    *,
    weights: Any = None,
    device: str = "auto",
    batch_size: int = 50,
    workers: int | None = None,
    skip_bad: bool = False,
    limit: int | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    hash_content: bool = False,
    exif_transpose: bool = False,
    progress: bool | None = None,
    extractor: FeatureExtractor | None = None,
    engine: str = "auto",
    precision: str = "exact",
    cluster: str = "local",
    ray_address: str | None = None,
    method: str = "auto",
    allow_weights_mismatch: bool = False,
) -> FidReport:
    """Return the Fréchet Inception Distance between two sources, with a report of how it was made.

    Parameters
    ----------
    a, b : path-like, numpy.ndarray, Stats, Source or iterable of numpy.ndarray
        Any source :func:`compute_stats` accepts. Statistics files and ``Stats`` skip the network.
    weights, device, batch_size, workers, skip_bad, limit, seed, use_cache, hash_content, exif_transpose, progress
        As in :func:`compute_stats`; `limit` and `seed` apply to each image side.
    engine, precision, cluster, ray_address
        As in :func:`compute_stats`; with ``cluster="ray"`` each image side is one Ray job.
    extractor : FeatureExtractor, optional
        Use this extractor for both sides (and across calls). By default one is built, once, and only
        if a side needs the network.
    method : str
        The Fréchet route (see :func:`fidkit.frechet.frechet_distance`); ``"auto"`` picks the exact
        and fastest one.
    allow_weights_mismatch : bool
        Turn the error for sides recorded with different weights into a warning.

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
        Sides recorded with different weights (unless `allow_weights_mismatch`), or different
        feature dimensions.

    Examples
    --------
    >>> import numpy as np, fidkit
    >>> a = fidkit.Stats(mu=np.zeros(2), sigma=np.eye(2), n=10)
    >>> b = fidkit.Stats(mu=np.ones(2), sigma=np.eye(2), n=10)
    >>> float(fidkit.compute_fid(a, b))
    2.0
    >>> report = compute_fid("real/", "generated/")               # doctest: +SKIP
    >>> print(f"FID {float(report):.4f} (N = {report.a.n} vs {report.b.n})")  # doctest: +SKIP
    """
    started = time.perf_counter()
    options = SideOptions(
        batch_size=batch_size, workers=workers, skip_bad=skip_bad, limit=limit, seed=seed, use_cache=use_cache,
        hash_content=hash_content, exif_transpose=exif_transpose, progress=progress, cluster=cluster,
        ray_address=ray_address,
    )
    network = Network(
        extractor, weights=weights, device=device, batch_size=options.batch_size, engine=engine, precision=precision
    )
    # Both inputs are opened (and checked) before either side spends network time.
    opened_a = open_input(a, options)
    opened_b = open_input(b, options)
    with cluster_session(options.cluster):  # with Ray: one local instance for both sides, not two
        stats_a, side_a = side_statistics(opened_a, network, options)
        stats_b, side_b = side_statistics(opened_b, network, options)
    messages = consistency_warnings(side_a, side_b, allow_weights_mismatch=allow_weights_mismatch)
    for message in messages:
        warnings.warn(message, FidkitWarning, stacklevel=2)

    distance_started = time.perf_counter()
    frechet = fid_from_stats(stats_a, stats_b, method=method)
    timings = Timings(
        decode_seconds=side_a.decode_seconds + side_b.decode_seconds,
        network_seconds=side_a.network_seconds + side_b.network_seconds,
        distance_seconds=time.perf_counter() - distance_started,
        total_seconds=time.perf_counter() - started,
    )
    return assemble_fid_report(frechet, side_a, side_b, messages, timings)
