"""Statistics on a Ray cluster: ``compute_stats(..., cluster="ray")``, ``fidkit stats SRC --ray``.

How a run goes
--------------
1. The driver (this process) connects to Ray: `ray_address`, else ``$RAY_ADDRESS``, else a new local
   instance on this machine that it shuts down at the end (also on an error or Ctrl-C). An address is
   checked first (:func:`fidkit._ray_address.check_ray_address`) and probed (:func:`check_reachable`: what
   listens there must answer as a gRPC server does), so a wrong one fails in seconds.
2. The source's sorted images are cut into contiguous shards of whole batches (:func:`plan_shards`:
   at most ``max(MIN_SHARDS, SHARDS_PER_ACTOR * actors)``, of equal whole numbers of batches).
3. One actor per GPU (``num_gpus=1``) when the cluster has GPUs and the device allows them, else one
   actor per CPU (``num_cpus=1``, one onnxruntime thread); ``$FIDKIT_RAY_ACTORS`` overrides the
   count, up to what the cluster can place (:func:`actor_count`: more would wait for ever), and no more
   than its free resources allow (``ray.available_resources()``; at least one). Shards wait in one queue
   and go, one at a time, to whichever actor is placed and free: an actor the cluster does not place
   (other work holds its CPU) holds no shard. The driver says while it waits for placement; after
   :data:`PLACEMENT_TIMEOUT_S` it goes on with the actors placed so far, or, with none, fails naming the
   resources. Each actor builds one :class:`~fidkit.inception.FeatureExtractor` and, per shard, decodes the shard's files with fidkit's decoder and colour policy and runs :func:`fidkit.extraction.extract`
   on them: it returns the shard's partial statistics (a :class:`~fidkit.stats.StatsAccumulator`:
   n, mean and M2 in float64, or the rows while n <= dim; never per-image features), its bad files
   and the node it ran on.
4. The driver keeps one result per shard id and merges them in shard order, so the statistics are
   deterministic and equal the single-process ones to rounding (the merge is exact algebra).

Which sources
-------------
* Folders and archives (zip, tar): the :class:`~fidkit.sources.FileSource` is shipped once to every
  actor, which reads its shard's members itself, so the path must name the same files on every
  node (a shared file system). With it goes what the driver's fingerprint recorded of the files
  (:class:`~fidkit.cluster.shards.Listing`); an actor compares each file with it before reading, and
  a missing or different file is an error naming the file and the node (never a skipped file). Zip
  members are read at random; a compressed tar is decompressed from its start by each actor that reads
  a later shard.
* ``.npy`` / ``.npz`` arrays, MNIST and CIFAR files given by a path: each actor opens the path itself
  (a ``.npy`` is read batch by batch) and takes its shard's batches.
* Named datasets (``cifar10-train``, ...): each actor opens the name, from its node's cache or a download.
* In-memory arrays: the source object goes through the object store once.
* ``s3://``, ``gs://`` (any ``pyarrow.fs`` URI): listed on the driver, read by the actors
  (:mod:`fidkit.cluster.uri`; best effort).
* Iterables of batches live in this process only and are refused.

Failures
--------
Bad files are reported per shard and counted as locally: with ``skip_bad`` they are skipped and
listed; without it the run ends with an :class:`~fidkit.errors.ImageError` naming each file and the
node that read it. An actor that dies (killed, out of memory, node lost) is restarted by Ray and its
shard retried (up to :data:`ACTOR_RESTARTS` times); a shard's partial statistics come back only
from a finished attempt and the driver keeps one per shard id, so no image counts twice. Ctrl-C kills
the actors, shuts down a Ray instance fidkit started, and re-raises: nothing is stored or saved.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fidkit._plain import shown_name
from fidkit._streams import RESTATED, progress_bar
from fidkit.cluster.shards import (
    MIN_SHARDS,
    SHARDS_PER_ACTOR,
    Shard,
    ShardWorker,
    plan_shards,
    work_for,
)
from fidkit.errors import (
    FidkitError,
    ImageError,
    InputError,
)
from fidkit.sources import Source
from fidkit.sources.base import empty_source_error
from fidkit.stats import StatsAccumulator
from fidkit.statsfile import IDENTITY_KEYS

from fidkit.cluster.connect import actor_env, connected, shared_session

__all__ = [
    "INSTALL_HINT",
    "ACTORS_ENV",
    "MIN_SHARDS",
    "SHARDS_PER_ACTOR",
    "ACTOR_RESTARTS",
    "Shard",
    "RayRun",
    "actor_count",
    "import_ray",
    "plan_shards",
    "ray_extract",
    "shared_session",
]

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "fidkit[ray]"'
#: Environment variable: the number of actors (default: GPUs of the cluster, else its CPUs).
ACTORS_ENV = "FIDKIT_RAY_ACTORS"
#: Times Ray restarts a dead actor, and retries the shards it was running.
ACTOR_RESTARTS = 3
#: Seconds to wait for the cluster to place an actor (start its process on a node with a free CPU, and GPU). Past
#: it the run goes on with the actors placed so far (the others join if they are placed later), or, when none
#: is, fails naming the resources it waited for.
PLACEMENT_TIMEOUT_S = 120.0
# How often the driver says that it still waits for actors to be placed.
_PLACEMENT_NOTE_S = 15.0
# How many bad files an error message names before saying "and N more" (as for local runs).
_NAMED_BAD_FILES = 5


def import_ray() -> Any:
    """Import Ray, or raise a :class:`~fidkit.errors.FidkitError` that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise FidkitError(f"cluster='ray' (--ray) needs Ray, which is not installed here: {INSTALL_HINT}") from exc
    return ray


def _actor_options(options: Any, given: Any) -> tuple[Any, str, bool]:
    """The options every actor builds its extractor from, the weights' sha256 they must find, and whether the
    weights are the released file (which a node may find in its own cache or download)."""
    from fidkit.extractors import extractor_entry
    from fidkit.inception.weights import locate_weights

    if given is not None:
        if not all(hasattr(given, name) for name in ("weights_path", "weights_sha256", "device")):
            raise InputError(
                f"cluster='ray' builds a registered extractor on every actor; a custom extractor "
                f"({type(given).__name__}) runs with cluster='local' only"
            )
        # A FeatureExtractor lends its weights, device, convention and layer to the actors: what decides its numbers.
        options = options.replace(
            weights=str(given.weights_path), device=str(given.device),
            convention=str(getattr(given, "convention", "tf")), dims=int(getattr(given, "feature_dim", 2048)),
        )
        return options, str(given.weights_sha256), False
    if not extractor_entry(options.extractor).cluster_ready:
        raise InputError(
            f"cluster='ray' builds extractors by name on every node; {options.extractor!r} is registered in this "
            "process only: use cluster='local'"
        )
    weights = locate_weights(options.weights)
    return options.replace(weights=str(weights.path)), str(weights.sha256), bool(weights.matches_manifest)


# --------------------------------------------------------------------------------------------- the driver


@dataclass(frozen=True)
class RayRun:
    """The merged outcome of a Ray job: what :func:`fidkit.pipeline.side_result` records.

    Attributes
    ----------
    accumulator : StatsAccumulator
        The shards' partial statistics merged in shard order.
    features : Features or None
        The shards' feature rows in shard order, when they were asked for.
    extractor_metadata : dict
        The actors' extractor metadata (a field that differs across actors, such as the provider on a
        cluster of GPU and CPU nodes, lists each value once, comma-separated).
    skipped : tuple of (str, str)
        Bad files skipped, in source order.
    lossy : bool
        Whether any decoded image was lossy.
    actors, shards : int
        Actors started and shards computed.
    wall_seconds : float
        From the first shard submitted to the last result merged (actor start-up included).
    actor_seconds : float
        Time the actors spent on shards, summed over actors.
    batch_size : int
        Images per network batch on the actors.
    """

    accumulator: StatsAccumulator
    features: Any
    extractor_metadata: dict[str, str]
    skipped: tuple[tuple[str, str], ...]
    lossy: bool
    actors: int
    shards: int
    wall_seconds: float
    actor_seconds: float
    batch_size: int

    def metadata(self) -> dict[str, str]:
        """What produced the features, as :meth:`FeatureExtractor.metadata` says it."""
        return dict(self.extractor_metadata)

    def run_metadata(self) -> dict[str, str | int | bool]:
        """What a statistics file records about the run: ``cluster``, ``ray_actors``, ``ray_shards``,
        and ``lossy_inputs`` as decoded on the actors."""
        return {"cluster": "ray", "ray_actors": int(self.actors), "ray_shards": int(self.shards),
                "lossy_inputs": bool(self.lossy)}


def _actor_plan(ray: Any, device: str) -> tuple[int, bool]:
    """How many actors, and whether each takes a GPU: :func:`actor_count` of the cluster's resources, lowered to
    what is free now (``ray.available_resources()``: other jobs' actors and tasks hold the rest), at least one."""
    from fidkit._devices import parse_device

    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0))
    use_gpu = int(gpus) > 0 and device != "cpu"
    if not use_gpu and parse_device(device).kind in ("cuda", "tensorrt"):
        # Checked here rather than on the driver's own machine: the actors run the network, on their nodes.
        raise FidkitError(
            f"device {device} asked for, but the Ray cluster has no GPU ({float(resources.get('CPU', 0)):g} CPU(s), "
            f"{gpus:g} GPU(s)): the actors run the network on their nodes; add nodes with a GPU (`ray start "
            "--num-gpus N`), or pass --device auto (device='auto'), which uses the cluster's GPUs when it has some"
        )
    count = actor_count(os.environ.get(ACTORS_ENV), cpus=float(resources.get("CPU", 0)), gpus=gpus, use_gpu=use_gpu)
    free = ray.available_resources()
    free_cpus, free_gpus = float(free.get("CPU", 0)), float(free.get("GPU", 0))
    placeable_now = int(free_cpus) if not use_gpu else min(int(free_cpus), int(free_gpus))
    if placeable_now < count:
        # An actor planned beyond what is free would wait for other work to end (for ever, if it never does).
        # At least one is started: the driver waits for its placement with a deadline, and says so.
        has = f"{free_cpus:g} of {float(resources.get('CPU', 0)):g} CPU(s)"
        if use_gpu:
            has += f" and {free_gpus:g} of {gpus:g} GPU(s)"
        logger.info("the Ray cluster has %s free (other work holds the rest): starting %d actor(s), not %d",
                    has, max(placeable_now, 1), count)
        count = max(placeable_now, 1)
    return count, use_gpu


def actor_count(requested: str | None, *, cpus: float, gpus: float, use_gpu: bool) -> int:
    """The number of actors to start: what the cluster can place, or fewer when ``$FIDKIT_RAY_ACTORS`` says so.

    Every actor takes one CPU (and one GPU with `use_gpu`), so the cluster places at most ``floor(CPUs)`` of
    them (and ``floor(GPUs)``); an actor beyond that would wait for resources that never come, and its shards
    with it. By default there is one actor per GPU with `use_gpu`, else one per CPU. A larger request is
    lowered to what fits, with a warning.

    Parameters
    ----------
    requested : str or None
        The value of ``$FIDKIT_RAY_ACTORS`` (None or empty: the default).
    cpus, gpus : float
        The cluster's resources (``ray.cluster_resources()``).
    use_gpu : bool
        Whether each actor takes a GPU.

    Raises
    ------
    InputError
        `requested` is not a positive integer.
    FidkitError
        The cluster cannot place a single actor (less than one CPU, or no GPU with `use_gpu`).
    """
    placeable = int(cpus) if not use_gpu else min(int(cpus), int(gpus))
    if placeable < 1:
        need = "one CPU and one GPU" if use_gpu else "one CPU"
        raise FidkitError(
            f"the Ray cluster has {cpus:g} CPU(s) and {gpus:g} GPU(s): not enough for one fidkit actor, which takes "
            f"{need}; add nodes, or start the head with `ray start --head --num-cpus N`"
        )
    text = (requested or "").strip()
    if not text:
        return placeable
    # Past 18 digits only "more than any cluster" matters (and int() refuses thousands of digits).
    count = (int(text) if len(text) <= 18 else 10**18) if text.isascii() and text.isdigit() else 0
    if count < 1:
        raise InputError(f"{ACTORS_ENV} must be a positive integer, not {requested!r}")
    if count > placeable:
        has = f"{cpus:g} CPU(s) and {gpus:g} GPU(s)" if use_gpu else f"{cpus:g} CPU(s)"
        takes = "one GPU and one CPU" if use_gpu else "one CPU"
        logger.warning(
            "%s=%d, but the Ray cluster has %s and each actor takes %s: starting %d actor(s), as more would wait "
            "for resources for ever", ACTORS_ENV, count, has, takes, placeable,
        )
        return placeable
    return count


def _with_node(error: FidkitError, node: str) -> FidkitError:
    """The same kind of error, its message ending with the node it happened on."""
    message = f"{error} (on node {node})"
    try:
        return type(error)(message)
    except Exception:  # an error class with another constructor
        return FidkitError(message)


def ray_extract(
    source: Source, options: Any, identity: Callable[[], Any], *, given: Any = None,
    keep_features: bool | tuple[str, ...] = False,
) -> RayRun:
    """The extract step of the pipeline, on a Ray cluster (see the module's description).

    Parameters
    ----------
    source : Source
        An opened source of known length (not an iterable of batches).
    options : RunOptions
        The run's options: the extractor the actors build (by its registry name), ``batch_size``,
        ``skip_bad``, ``progress`` and ``ray_address``.
    identity : callable
        Returns the identity the statistics will be stored under (the actors must compute exactly that);
        asked for once the source is known to suit a cluster (it may locate and hash the weights).
    given : extractor, optional
        A built ``FeatureExtractor`` whose weights and device the actors use.
    keep_features : bool or tuple of str
        Also bring back every shard's feature rows (``N x dim`` float32 through the object store); a tuple of
        outputs (``("features", "logits")``) brings those of the same forward pass too.

    Returns
    -------
    RayRun
        The merged partial statistics (and rows), and what to record about them.

    Raises
    ------
    FidkitError
        Ray is not installed, the cluster cannot be reached, an actor failed for good.
    ImageError, EmptySourceError
        As for a local run (bad files without ``skip_bad``; no good image).
    InputError
        An iterable of batches, or a custom extractor.
    """
    if source.n_images is None:
        raise InputError(
            f"{shown_name(source.name)}: cluster='ray' reads folders, archives, arrays and files every node can "
            "open; an iterable of batches lives in this process: use cluster='local'"
        )
    actor_options, weights_sha256, weights_in_manifest = _actor_options(options, given)
    stated = identity()
    if stated.engine != "onnxruntime" or stated.precision != "exact":
        # The actors run fidkit's ONNX graph in exact float32; anything else would be stored under a key that
        # says otherwise.
        if given is not None:
            # Options cannot change an object (they are refused beside one): the fix is another object, or here.
            fix = (
                f"the extractor object {type(given).__name__} runs as it was built, so build a "
                "fidkit.FeatureExtractor (onnxruntime) with the same weights, device, convention and dims and "
                "precision='exact' (its default) and pass that, or drop cluster='ray' to run this object here"
            )
        else:
            fix = "pass engine='onnxruntime' (or 'auto') and precision='exact', or use cluster='local'"
        raise InputError(
            f"cluster='ray' runs the onnxruntime network in exact float32 on every actor, not engine "
            f"{stated.engine!r} with precision {stated.precision!r}: {fix}"
        )
    ray = import_ray()
    with connected(ray, options.ray_address) as local_instance:
        if local_instance and given is None:
            # The actors of a local instance share this machine's graph cache: export the graph once,
            # here, rather than in every actor at the same time.
            from fidkit.inception.runtime import ensure_graph
            from fidkit.inception.weights import locate_weights

            ensure_graph(locate_weights(actor_options.weights), convention=actor_options.convention)
        n_actors, use_gpu = _actor_plan(ray, actor_options.device)
        from fidkit.inception.spec import default_batch_size

        batch_size = int(options.batch_size or default_batch_size(use_gpu))
        plan = plan_shards(int(source.n_images), batch_size, n_actors)
        n_actors = min(n_actors, len(plan))
        actor_options = actor_options.replace(batch_size=batch_size, threads=None if use_gpu else 1)
        work = work_for(source, actor_options, weights_sha256, weights_in_manifest, keep_features)
        logger.info(
            "%s: %d images in %d shards on %d Ray %s actor(s)%s", shown_name(source.name), source.n_images,
            len(plan), n_actors, "GPU" if use_gpu else "CPU", " (local instance)" if local_instance else "",
        )
        actor_class = ray.remote(ShardWorker).options(
            num_cpus=1, num_gpus=1 if use_gpu else 0, max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS,
            runtime_env={"env_vars": actor_env()},
        )
        began = time.perf_counter()
        work_ref = ray.put(work)
        actors = [actor_class.remote() for _ in range(n_actors)]
        try:
            results, n_actors = _drive(ray, actors, [work_ref], plan, source, options, use_gpu=use_gpu)
        finally:
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor)
            del work_ref
        wall_seconds = time.perf_counter() - began
    run = _merge(results, plan, source, options, n_actors, wall_seconds, batch_size)
    _check_identity(run.metadata(), stated)
    return run


def _check_identity(ran: dict[str, str], stated: Any) -> None:
    """The actors' features must be what the cache key says they are: the same feature space (IDENTITY_KEYS)."""
    for key in IDENTITY_KEYS:
        expected = stated.get(key)
        if expected and ran.get(key) != expected:
            raise FidkitError(
                f"the Ray actors computed features with {key} {ran.get(key)!r}, not {expected!r} as this run asked; "
                "nothing was cached. Check that every node runs the same fidkit version, or use cluster='local'"
            )


def _drive(
    ray: Any, actors: list[Any], work_ref: list[Any], plan: list[Shard], source: Source, options: Any, *,
    use_gpu: bool = False,
) -> tuple[dict[int, dict[str, Any]], int]:
    """Hand the shards out, one at a time, to whichever placed actor is free; return one result per shard id and
    the number of actors that were placed.

    No shard is bound to an actor before the actor runs: one that the cluster does not place (its CPUs or GPUs
    are held by other work) holds no shard, and the others take the queue. The driver says when it still waits
    for placement; past :data:`PLACEMENT_TIMEOUT_S` it goes on with the actors placed so far, or fails naming the
    resources it waited for when none is.
    """
    from ray.exceptions import RayActorError, RayError

    name = str(source.name)
    queue = deque(plan)
    in_flight: dict[Any, tuple[Shard, int]] = {}
    # An actor's __ray_ready__ answers once its process runs on a node: then, and only then, it gets a shard.
    unplaced: dict[Any, int] = {actor.__ray_ready__.remote(): index for index, actor in enumerate(actors)}
    idle: deque[int] = deque()
    n_placed = 0
    results: dict[int, dict[str, Any]] = {}
    count_only = False  # set once a bad file is seen without skip_bad: the run will fail, only count
    began = time.monotonic()
    next_note = began + _PLACEMENT_NOTE_S
    gave_up_waiting = False

    def submit(actor_index: int) -> None:
        shard = queue.popleft()
        ref = actors[actor_index].run.remote(work_ref, shard.index, shard.start, shard.stop, count_only)
        in_flight[ref] = (shard, actor_index)

    with progress_bar(
        options.progress, total=source.n_images, desc=name if len(name) <= 32 else "..." + name[-29:], unit="img",
        leave=False, dynamic_ncols=True,
    ) as bar:
        while len(results) < len(plan):
            while queue and idle:
                submit(idle.popleft())
            ready, _ = ray.wait([*in_flight, *unplaced], num_returns=1, timeout=1.0)
            for ref in ready:
                if ref in unplaced:
                    actor_index = unplaced.pop(ref)
                    try:
                        ray.get(ref)
                    except RayError as exc:
                        raise FidkitError(
                            f"{name}: a Ray actor could not start ({_first_line(exc)}); check that every node has "
                            f"fidkit ({INSTALL_HINT}) and the same Python and Ray versions as the driver"
                        ) from exc
                    n_placed += 1
                    idle.append(actor_index)
                    continue
                shard, actor_index = in_flight.pop(ref)
                try:
                    result = ray.get(ref)
                except RayActorError as exc:
                    raise FidkitError(
                        f"{name}: a Ray actor failed on images {shard.start}..{shard.stop - 1} and was not "
                        f"brought back after {ACTOR_RESTARTS} restarts ({_first_line(exc)}); check that every "
                        f"node has fidkit ({INSTALL_HINT}) and enough memory"
                    ) from exc
                if "error" in result:
                    raise _with_node(result["error"], result["node"])
                if shard.index not in results:  # one result per shard, whatever Ray retried
                    results[shard.index] = result
                    count_only = count_only or (bool(result["skipped"]) and not options.skip_bad)
                    bar.update(shard.stop - shard.start)
                idle.append(actor_index)
            if not unplaced or gave_up_waiting:
                continue
            now = time.monotonic()
            if now - began >= PLACEMENT_TIMEOUT_S:
                if n_placed == 0:
                    raise FidkitError(_not_placed_message(ray, name, len(actors), use_gpu))
                logger.info(
                    "%s: %d of %d Ray actor(s) not placed after %g s (the cluster's resources are held by other "
                    "work); going on with %d (the others join if they are placed)", name, len(unplaced),
                    len(actors), PLACEMENT_TIMEOUT_S, n_placed,
                )
                gave_up_waiting = True
            elif n_placed == 0 and now >= next_note:
                logger.info(
                    "%s: waiting for the Ray cluster to place %d actor(s), each taking one CPU%s (%.0f s so far; "
                    "giving up after %g s)", name, len(actors), " and one GPU" if use_gpu else "", now - began,
                    PLACEMENT_TIMEOUT_S,
                )
                next_note = now + _PLACEMENT_NOTE_S
    return results, n_placed


def _not_placed_message(ray: Any, name: str, n_actors: int, use_gpu: bool) -> str:
    """Why no actor was placed: what each needs, and what the cluster has free of what it has."""
    try:
        total, free = ray.cluster_resources(), ray.available_resources()
        has = f"{float(free.get('CPU', 0)):g} of {float(total.get('CPU', 0)):g} CPU(s)"
        if use_gpu:
            has += f" and {float(free.get('GPU', 0)):g} of {float(total.get('GPU', 0)):g} GPU(s)"
        has = f"; it has {has} free"
    except Exception:  # noqa: BLE001 - only for the message
        has = ""
    takes = "one CPU and one GPU" if use_gpu else "one CPU"
    return (
        f"{name}: the Ray cluster placed none of {n_actors} fidkit actor(s) within {PLACEMENT_TIMEOUT_S:g} s; each "
        f"takes {takes}{has} (other jobs' actors and tasks hold the rest, see `ray status`). Wait for them to end "
        "or stop them, add nodes, or use cluster='local' (no --ray)"
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _merge(
    results: dict[int, dict[str, Any]], plan: list[Shard], source: Source, options: Any, n_actors: int,
    wall_seconds: float, batch_size: int,
) -> RayRun:
    """Merge the shards in order; apply the bad-file policy as a local run does."""
    bad: list[tuple[str, str, str]] = []
    accumulator: StatsAccumulator | None = None
    rows: list[Any] = []
    metadata: dict[str, list[str]] = {}
    n_good = 0
    lossy = False
    actor_seconds = 0.0
    for shard in plan:
        result = results[shard.index]
        bad.extend((file, reason, result["node"]) for file, reason in result["skipped"])
        n_good += int(result["n_good"])
        lossy = lossy or bool(result["lossy"])
        actor_seconds += float(result["seconds"])
        for key, value in result["extractor_metadata"].items():
            values = metadata.setdefault(key, [])
            if value not in values:
                values.append(value)
        if result.get("features") is not None:
            rows.append(result["features"])
        part = result["accumulator"]
        if part is not None:
            if accumulator is None:
                accumulator = StatsAccumulator(dim=part.dim)
            accumulator.merge(part)
    name = str(source.name)
    if bad and not options.skip_bad:
        named = "; ".join(
            f"{shown_name(file)}: {reason} (node {node})" for file, reason, node in bad[:_NAMED_BAD_FILES]
        )
        more = f"; and {len(bad) - _NAMED_BAD_FILES} more" if len(bad) > _NAMED_BAD_FILES else ""
        raise ImageError(
            f"{name}: {len(bad)} of {source.n_images} image files could not be decoded ({named}{more}); "
            "fix or remove them, or pass --skip-bad (skip_bad=True) to skip them"
        )
    # Subfolders the driver could not list (skip_bad) come first, as in a local run's `skipped`.
    skipped = tuple(getattr(source, "skipped_at_open", ())) + tuple((file, reason) for file, reason, _ in bad)
    if skipped:
        # Restated by the result (n_skipped, skipped_files, compute's report): printed, not listed again in --json,
        # as a local run's FileSource does.
        logger.warning(
            "%s: skipped %d bad file(s), first %s: %s", name, len(skipped), shown_name(skipped[0][0]), skipped[0][1],
            extra=RESTATED,
        )
    if n_good == 0:
        detail = f"all {len(bad)} files were bad, first {shown_name(bad[0][0])}: {bad[0][1]}" if bad else ""
        raise empty_source_error(name, detail)
    assert accumulator is not None
    features = None
    if rows:
        from fidkit.features import Features

        features = Features.concatenate(rows)  # in shard order
    return RayRun(
        accumulator=accumulator,
        features=features,
        extractor_metadata={key: ", ".join(values) for key, values in metadata.items()},
        skipped=skipped,
        lossy=lossy,
        actors=n_actors,
        shards=len(plan),
        wall_seconds=wall_seconds,
        actor_seconds=actor_seconds,
        batch_size=batch_size,
    )
