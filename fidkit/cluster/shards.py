"""The shards of a Ray job and the actors that compute them (:mod:`fidkit.cluster.ray` drives them).

A shard is a contiguous run of whole batches of the sorted source; an actor opens its part of the source
with fidkit's own readers (so the numbers are the single-machine numbers), runs
:func:`fidkit.extraction.extract` on it with one ``FeatureExtractor``, and returns the shard's
``StatsAccumulator``, its bad files and the node it ran on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fidkit.errors import (
    EmptySourceError,
    FidkitError,
    InputError,
    SourceError,
    WeightsError,
)
from fidkit.features import FeatureRows
from fidkit.sources import FileSource, Source, open_source
from fidkit.sources.base import file_stamp
from fidkit.stats import StatsAccumulator

logger = logging.getLogger(__name__)

__all__ = ["Shard", "plan_shards", "Work", "work_for", "ShardWorker", "CRASH_ENV", "MIN_SHARDS", "SHARDS_PER_ACTOR"]

#: A job aims at this many shards (more than half of it when it has that many batches), for balance
#: between actors and a progress bar that moves ...
MIN_SHARDS = 32
#: ... or at this many per actor, when that is more.
SHARDS_PER_ACTOR = 4
#: For the test suite only: "<shard>:<marker file>" makes the first attempt at that shard exit the
#: actor process after its first batch (and create the marker, so that the retry runs normally).
CRASH_ENV = "FIDKIT_RAY_TEST_CRASH"


# --------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Shard:
    """Images ``start`` to ``stop`` (exclusive) of a source, in its sorted order; ``start`` is a
    multiple of the batch size."""

    index: int
    start: int
    stop: int


def plan_shards(n_images: int, batch_size: int, n_actors: int) -> list[Shard]:
    """Cut `n_images` into contiguous shards of whole batches.

    At most ``target = max(MIN_SHARDS, SHARDS_PER_ACTOR * n_actors)`` shards, each of the same whole number
    of batches (the last one shorter): more than ``target / 2`` when there are at least ``target``
    batches, one batch each when there are fewer. The plan depends only on its arguments, so a rerun on the same
    cluster merges the same partial statistics in the same order and gives the same bits.
    """
    if n_images < 1:
        return []
    n_batches = -(-n_images // batch_size)
    target = max(MIN_SHARDS, SHARDS_PER_ACTOR * max(int(n_actors), 1))
    per_shard = max(1, -(-n_batches // target))
    return [
        Shard(index, first * batch_size, min(n_images, (first + per_shard) * batch_size))
        for index, first in enumerate(range(0, n_batches, per_shard))
    ]


@dataclass(frozen=True)
class Work:
    """What every actor receives once: how to read a shard, and the options its extractor is built from."""

    mode: str  # "members" (a FileSource), "reopen" (a path every node opens), "object" (a Source)
    name: str
    source: Source | None
    path: str | None
    kind: str
    limit: int | None
    seed: int | None
    n_images: int
    options: Any  # RunOptions: weights as the driver's path, batch size and threads decided
    weights_sha256: str
    weights_in_manifest: bool
    #: What the shards keep besides their statistics: () nothing, else outputs with "features" first (the rows,
    #: and the logits or spatial features of the same pass).
    keep_features: tuple[str, ...] = ()
    #: The files as the driver saw them, for each actor to compare with what its node sees (None: nothing to
    #: compare, e.g. an array in the object store or a named dataset).
    listing: Listing | None = None

    @property
    def batch_size(self) -> int:
        return int(self.options.batch_size)


def work_for(
    source: Source, options: Any, weights_sha256: str, weights_in_manifest: bool,
    keep_features: bool | tuple[str, ...] = (),
) -> Work:
    if isinstance(keep_features, bool):
        keep_features = ("features",) if keep_features else ()
    common = dict(name=str(source.name), kind=str(source.kind), limit=source.limit, seed=source.seed,
                  n_images=int(source.n_images or 0), options=options, weights_sha256=weights_sha256,
                  weights_in_manifest=weights_in_manifest, keep_features=keep_features)
    if isinstance(source, FileSource):
        return Work(mode="members", source=source, path=None, listing=listing_of(source), **common)
    from fidkit.sources.named import dataset_names

    path = Path(str(source.name))
    if source.cacheable and path.exists():
        # Each actor opens the file itself (a .npy is read batch by batch), instead of receiving its pixels.
        resolved = path.resolve()
        if resolved.is_file():
            listing: Listing | None = Listing("file", str(resolved), stamp=_stamp(resolved))
        else:
            listing = _folder_files_listing(source, resolved)
        return Work(mode="reopen", source=None, path=str(resolved), listing=listing, **common)
    if source.cacheable and str(source.name) in dataset_names():
        # A named dataset: each node's fidkit finds it in its own cache (or downloads it).
        return Work(mode="reopen", source=None, path=str(source.name), **common)
    return Work(mode="object", source=source, path=None, **common)


# --------------------------------------------------------------------------------------------- the driver's files


@dataclass(frozen=True)
class Listing:
    """The files of a source as the driver's fingerprint recorded them, for each actor to compare with its node.

    An actor reads the files itself, by the path the driver gave it: a node that mounts another folder under that
    path (or none) would compute, and the cache would keep, statistics of other images. So before reading a shard
    an actor compares each file it is about to read with this listing, and a difference is an error naming the
    file and the node: never a skipped file, never a number.

    ``kind`` says what is compared: ``"folder"`` and ``"uri"``: each member's size and modification time (ns);
    ``"zip"``: the archive's size and modification time, and each member's size and CRC-32 in its central
    directory; ``"tar"``: the archive's size and modification time; ``"file"`` (an array file each actor opens):
    its size and modification time; ``"files"`` (a folder each actor opens whole, a CIFAR python batch folder):
    each of the ``names`` in it that the source reads, by size and modification time. Per-member values are arrays
    aligned with the source's ``members`` (with ``names`` for ``"files"``); a size of -1 is a file the driver
    could not stat (decoding reports it as a bad file, on the driver's terms).
    """

    kind: str
    location: str
    stamp: tuple[int, int] | None = None
    sizes: Any = None
    marks: Any = None  # per member: the mtime_ns (folder, uri, files), or the CRC-32 (zip)
    names: tuple[str, ...] = ()  # "files": the files in `location` the source reads


def _folder_files_listing(source: Source, folder: Path) -> Listing | None:
    """The files a folder source that each actor opens whole reads (a CIFAR python folder's batch files), by size
    and modification time; None for any other folder source (nothing known to compare)."""
    import numpy as np

    from fidkit.sources.datasets import cifar_train_files

    if source.kind != "cifar":
        return None
    files = cifar_train_files(folder)
    if not files:
        return None
    stamps = [_stamp(file) for file in files]  # through the folder's names: what a node's open reads
    return Listing(
        "files", str(folder), sizes=np.array([size for size, _ in stamps], dtype=np.int64),
        marks=np.array([mark for _, mark in stamps], dtype=np.int64), names=tuple(file.name for file in files),
    )


def _stamp(path: Path) -> tuple[int, int]:
    """``(size, mtime_ns)`` of `path`, as a fingerprint records it (``-1, -1`` when it cannot be stat'ed)."""
    size, mtime_ns, _ = file_stamp(path)
    return size, mtime_ns


def listing_of(source: FileSource) -> Listing | None:
    """What the driver's fingerprint records of `source`'s files (its identity without content hashes)."""
    import numpy as np

    identity = source._identity(hash_content=False)
    members = identity.get("members") or []
    if [str(entry[0]) for entry in members] != list(source.members):
        logger.debug("%s: the identity's members are not the source's; the actors do not compare files", source.name)
        return None

    def column(position: int) -> Any:
        return np.array([int(entry[position]) for entry in members], dtype=np.int64)

    if "root" in identity:  # a folder: [member, size, mtime_ns, ctime_ns]
        return Listing("folder", str(identity["root"]), sizes=column(1), marks=column(2))
    if "uri" in identity:  # [member, size, mtime_ns]
        return Listing("uri", str(identity["uri"]), sizes=column(1), marks=column(2))
    if "archive" in identity:
        stamp = (int(identity["size"]), int(identity["mtime_ns"]))
        if str(identity["archive"]).lower().endswith(".zip"):  # [member, size, crc]
            return Listing("zip", str(identity["archive"]), stamp=stamp, sizes=column(1), marks=column(2))
        return Listing("tar", str(identity["archive"]), stamp=stamp)
    return None


def _described(kind: str, seen: tuple[int, int] | None) -> str:
    if seen is None or seen[0] < 0:
        return "no such file"
    if kind == "zip-member":
        return f"{seen[0]:,} bytes, CRC-32 {seen[1] & 0xFFFFFFFF:08x}"
    if seen[1] < 0:
        return f"{seen[0]:,} bytes"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seen[1] // 1_000_000_000))
    return f"{seen[0]:,} bytes, modified {when}.{seen[1] % 1_000_000_000:09d} UTC"


def _not_the_drivers(
    name: str, what: str, kind: str, expected: tuple[int, int], seen: tuple[int, int] | None
) -> SourceError:
    return SourceError(
        f"{name}: {what} differs on this node from the driver's listing ({_described(kind, seen)} here; "
        f"{_described(kind, expected)} on the driver); every node must see the same files under the same path "
        "(one shared file system, mounted on every node): nothing was computed or cached"
    )


class _NodeFiles:
    """An actor's side of :class:`Listing`: what its node sees of the files a shard is about to read."""

    def __init__(self, listing: Listing, name: str) -> None:
        self.listing = listing
        self.name = name
        self._zip_entries: tuple[tuple[int, ...], dict[str, tuple[int, int]]] | None = None
        self._file_system: Any = None

    def check_file(self) -> None:
        """The archive's (or array file's) own size and modification time."""
        listing = self.listing
        assert listing.stamp is not None
        seen = _stamp(Path(listing.location))
        if seen != listing.stamp:
            raise _not_the_drivers(self.name, listing.location, "file", listing.stamp,
                                   None if seen[0] < 0 else seen)

    def check_opened(self) -> None:
        """What a source each actor opens itself read: its array file, or each file of its folder."""
        listing = self.listing
        if listing.kind == "file":
            self.check_file()
            return
        folder = Path(listing.location)
        for name, size, mark in zip(listing.names, listing.sizes, listing.marks):
            expected = (int(size), int(mark))
            seen = _stamp(folder / name)
            if seen != expected:
                raise _not_the_drivers(self.name, f"{name} in {folder}", "file", expected,
                                       None if seen[0] < 0 else seen)

    def check_members(self, members: list[str], start: int, stop: int, reader: Any) -> None:
        """Members `start` to `stop` (exclusive) of `members` (the source's, in its order)."""
        listing = self.listing
        if listing.kind in ("zip", "tar", "file"):
            self.check_file()
        if listing.kind in ("tar", "file"):
            return
        seen_of = {"folder": self._in_folder, "uri": self._under_uri, "zip": self._in_zip}[listing.kind]
        names = members[start:stop]
        for offset, (member, seen) in enumerate(zip(names, seen_of(names, reader))):
            expected = (int(listing.sizes[start + offset]), int(listing.marks[start + offset]))
            if expected[0] < 0 and seen is None:
                continue  # the driver could not stat it either: decoding reports it, as on one machine
            if seen != expected:
                kind = "zip-member" if listing.kind == "zip" else "file"
                what = f"{member} in {listing.location}" if listing.kind == "zip" else member
                raise _not_the_drivers(self.name, what, kind, expected, seen)

    def _in_folder(self, names: list[str], reader: Any) -> Iterator[tuple[int, int] | None]:
        root = Path(self.listing.location)
        for member in names:
            try:
                info = os.stat(root / member)
            except OSError:
                yield None
            else:
                yield int(info.st_size), int(info.st_mtime_ns)

    def _under_uri(self, names: list[str], reader: Any) -> Iterator[tuple[int, int] | None]:
        import pyarrow.fs

        from fidkit.cluster.uri import _file_system

        if self._file_system is None:
            self._file_system = _file_system(self.listing.location)
        file_system, root = self._file_system
        infos = file_system.get_file_info([f"{root.rstrip('/')}/{member}" for member in names])
        for info in infos:
            if info.type == pyarrow.fs.FileType.NotFound:
                yield None
            else:  # as the driver's listing records it (fidkit.cluster.uri)
                yield int(info.size if info.size is not None else -1), int(info.mtime_ns or -1)

    def _in_zip(self, names: list[str], reader: Any) -> Iterator[tuple[int, int] | None]:
        import zipfile

        try:
            info = os.stat(self.listing.location)
            # Read again only when the file is another one, or written since (its status-change time moves then).
            version = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
            if self._zip_entries is None or self._zip_entries[0] != version:
                with zipfile.ZipFile(self.listing.location) as archive:
                    # The last entry of a name is the one read (zipfile's getinfo gives it, as the listing did).
                    entries = {entry.filename: (int(entry.file_size), int(entry.CRC)) for entry in archive.infolist()}
                self._zip_entries = (version, entries)
        except (OSError, zipfile.BadZipFile) as exc:
            raise SourceError(
                f"{self.name}: cannot read the central directory of {self.listing.location} on this node "
                f"({type(exc).__name__}: {exc}); every node must see the driver's archive under the same path"
            ) from exc
        stored_names = getattr(reader, "stored_names", {})
        for member in names:
            yield self._zip_entries[1].get(stored_names.get(member, member))


# --------------------------------------------------------------------------------------------- the actors


def _node_name() -> str:
    try:
        import ray.util

        address = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - a name for messages only
        address = "?"
    return f"{socket.gethostname()} ({address})"


def _batch_range(batches: Iterator[Any], first: int, stop: int) -> Iterator[Any]:
    """Batches `first` to `stop` (exclusive) of `batches`; the source's generator is closed at the end."""
    try:
        for position, batch in enumerate(batches):
            if position >= stop:
                break
            if position >= first:
                yield batch
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def _crash_after_first_batch(batches: Iterator[Any], marker: Path) -> Iterator[Any]:
    """The test hook of :data:`CRASH_ENV`: die like a killed actor, once, partway through a shard."""
    for position, batch in enumerate(batches):
        if position == 1:
            break
        yield batch
    marker.touch()
    os._exit(17)


class ShardWorker:
    """A Ray actor: one feature extractor, and the partial statistics of one shard per call."""

    def __init__(self) -> None:
        # Warnings of the sources (e.g. "skipped 2 bad files" per shard) would reach the driver's
        # terminal prefixed by Ray; the driver reports the merged outcome itself.
        logging.getLogger("fidkit").addHandler(logging.NullHandler())
        self.node = _node_name()
        self.work: Work | None = None
        self.source: Source | None = None
        self.extractor: Any = None
        self.files: _NodeFiles | None = None

    def _set_up(self, work_ref: list[Any]) -> None:
        """Fetch the work and build the extractor, on the first shard (and again after a restart).

        The work's reference comes with each call, wrapped in a list so that Ray does not resolve it
        per call; it is not a constructor argument, because Ray cannot promise to restart an actor
        whose constructor arguments live in the object store.
        """
        import ray

        self.work = ray.get(work_ref[0])
        self.extractor = self._build_extractor()
        self.source = self._open()

    def _build_extractor(self) -> Any:
        from fidkit.extractors import build_extractor, extractor_entry

        work = self.work
        assert work is not None
        options = work.options
        # The driver did not check the device (it may be a head node without a GPU): this node does, before the
        # graph is exported or a session started; the message names the device, and the driver adds the node.
        extractor_entry(options.extractor).probe(options)
        if not Path(str(options.weights)).is_file():
            if not work.weights_in_manifest:
                raise WeightsError(
                    f"the weights file {options.weights} is not on node {self.node}; put it on a path every "
                    "node sees (a shared file system), or use the released weights, which each node finds "
                    "in its cache or downloads"
                )
            options = options.replace(weights=None)  # $FIDKIT_WEIGHTS, this node's cache, or a download
        # From the registry by name, as everywhere else; ONNX Runtime on the device the driver chose.
        extractor = build_extractor(options.replace(engine="onnxruntime"))
        if extractor.weights_sha256 != work.weights_sha256:
            raise WeightsError(
                f"node {self.node}: {extractor.weights_path} has sha256 {extractor.weights_sha256[:16]}..., but "
                f"the driver's weights have {work.weights_sha256[:16]}...; every node must see the same weights"
            )
        return extractor

    def _open(self) -> Source:
        work = self.work
        assert work is not None
        self.files = _NodeFiles(work.listing, work.name) if work.listing is not None else None
        if work.mode != "reopen":
            assert work.source is not None
            return work.source
        assert work.path is not None
        if self.files is not None and self.files.listing.kind == "files":
            # Before too: a node without one of the folder's files would open the folder as another kind of source.
            self.files.check_opened()
        source = open_source(work.path, limit=work.limit, seed=work.seed, workers=0)
        if source.kind != work.kind or source.n_images != work.n_images:
            raise SourceError(
                f"{work.name}: on node {self.node} this path holds a {source.kind} of {source.n_images} "
                f"images, not the {work.kind} of {work.n_images} the driver opened; every node must see the "
                "same files"
            )
        if self.files is not None:
            self.files.check_opened()  # the same array file or batch files, not only the same kind and count
        return source

    def run(self, work_ref: list[Any], shard: int, start: int, stop: int, count_only: bool) -> dict[str, Any]:
        """Partial statistics of images `start` to `stop`; with `count_only`, only decode (count bad files).

        A :class:`~fidkit.errors.FidkitError` (weights missing on this node, a source that differs)
        comes back as the result, with the node, rather than as a crash of the actor.
        """
        try:
            if self.source is None:
                self._set_up(work_ref)
            return self._run(shard, start, stop, count_only)
        except FidkitError as exc:
            return {"shard": shard, "error": exc, "node": self.node}

    def _run(self, shard: int, start: int, stop: int, count_only: bool) -> dict[str, Any]:
        from fidkit.extraction import extract

        work, source = self.work, self.source
        assert work is not None and source is not None
        part: Source = source
        if isinstance(source, FileSource):
            if self.files is not None:
                # Before a file is read: one that this node lacks or holds in another version is an error naming
                # it, not a bad file that skip_bad would skip (statistics of other images would be cached).
                self.files.check_members(source.members, start, stop, source._reader)
            # Report the shard's bad files (the driver applies skip_bad); this actor is the worker: decode here,
            # between network batches.
            part = source.members_subset(start, stop, skip_bad=True, workers=0)
            batches = part.batches(work.batch_size)
        else:
            batches = _batch_range(
                source.batches(work.batch_size), start // work.batch_size, -(-stop // work.batch_size)
            )
        crash = os.environ.get(CRASH_ENV, "")
        if crash:
            crash_shard, _, marker = crash.partition(":")
            if crash_shard == str(shard) and not Path(marker).exists():
                batches = _crash_after_first_batch(batches, Path(marker))

        accumulator: StatsAccumulator | None = None
        rows: FeatureRows | None = None
        n_good = 0
        started = time.perf_counter()
        decode_seconds = network_seconds = 0.0
        try:
            if count_only:
                with contextlib.closing(batches):
                    for batch in batches:
                        n_good += len(batch)
            else:
                accumulator = StatsAccumulator(dim=int(self.extractor.feature_dim))
                rows = FeatureRows(outputs=tuple(work.keep_features)) if work.keep_features else None
                sinks = (accumulator,) if rows is None else (accumulator, rows)
                times = extract(batches, self.extractor, *sinks, progress=False)
                n_good = accumulator.n
                decode_seconds, network_seconds = times.decode_seconds, times.network_seconds
        except EmptySourceError:
            if not part.skipped:
                raise
            n_good = 0  # every file of this shard was bad: reported below, judged by the driver
        skipped = [(str(file), str(reason)) for file, reason in part.skipped]
        if not isinstance(source, FileSource) and n_good != stop - start:
            raise InputError(
                f"{work.name}: a {work.kind} source gave {n_good} images for images {start}..{stop - 1}; "
                "it cannot be split into shards: use cluster='local'"
            )
        return {
            "shard": shard,
            "accumulator": accumulator,
            "features": rows.result(emitted_order=part.emitted_order) if rows is not None and rows.n else None,
            "n_good": n_good,
            "skipped": skipped,
            "lossy": bool(part.lossy) and n_good > 0,
            "node": self.node,
            "extractor_metadata": {str(k): str(v) for k, v in self.extractor.metadata().items() if v is not None},
            "decode_seconds": decode_seconds,
            "network_seconds": network_seconds,
            "seconds": time.perf_counter() - started,
        }
