"""The exact ``torch.distributed`` merge of :class:`~fidkit.metric.FID`: every rank ends with the same statistics,
or raises the same error, and a group broken by a timeout is said so at once."""

from __future__ import annotations

import hashlib
import math
import numbers
import sys
import threading
import weakref
from datetime import timedelta
from typing import Any

import numpy as np

from fidkit.errors import FidkitError, InputError
from fidkit.features import Features
from fidkit.stats import Stats, StatsAccumulator
from fidkit.statsfile import IDENTITY_KEYS


# Process groups on which a collective of FID.compute() timed out or failed, with what happened: torch.distributed
# cannot use such a group again (gloo and NCCL leave it with unmatched operations), so a later compute() says so
# at once instead of timing out again with a message that blames the other ranks. The groups themselves are kept
# (not their ids), so that a new group, made after destroy_process_group(), is never mistaken for a broken one.
_BROKEN_GROUPS: list[tuple[Any, str]] = []
_BROKEN_GROUPS_LOCK = threading.Lock()


# The fingerprint of each reference, with the arrays it was computed from (hashing sigma takes about 50 ms at
# dim 2048, once per reference instead of once per compute()).
_FINGERPRINTS: weakref.WeakKeyDictionary[Stats, tuple[np.ndarray, np.ndarray, str]] = weakref.WeakKeyDictionary()


def _reference_fingerprint(stats: Stats) -> str:
    """``n`` and the sha256 of the reference's mu and sigma: ranks compare it instead of the statistics."""
    known = _FINGERPRINTS.get(stats)
    if known is not None and known[0] is stats.mu and known[1] is stats.sigma:
        return known[2]
    digest = hashlib.sha256()
    digest.update(f"{stats.dim}:{stats.n}:".encode())
    digest.update(np.ascontiguousarray(stats.mu).data)
    digest.update(np.ascontiguousarray(stats.sigma).data)
    fingerprint = f"n = {stats.n}, sha256 {digest.hexdigest()[:16]}"
    _FINGERPRINTS[stats] = (stats.mu, stats.sigma, fingerprint)
    return fingerprint


def check_timeout(timeout: Any) -> float:
    """`timeout` of :meth:`FID.compute` as seconds, or :class:`~fidkit.errors.InputError`: checked on every process
    count before any collective, so that a bad value is a plain error on every rank, not a timeout that breaks the
    process group (a negative one) nor a TypeError from ``timedelta`` (None, NaN, infinity)."""
    usage = f"FID.compute(): timeout must be a positive finite number of seconds, not {timeout!r}"
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise InputError(f"{usage} (e.g. timeout=600)")
    seconds = float(timeout)
    if not (math.isfinite(seconds) and seconds > 0):
        raise InputError(f"{usage}; to wait longer for a slow rank pass a larger number (e.g. timeout=3600)")
    try:
        timedelta(seconds=seconds)
    except OverflowError:
        # What torch.distributed takes: a datetime.timedelta, at most 999,999,999 days.
        raise InputError(f"{usage}: {seconds:g} s is beyond what datetime.timedelta holds (about 8.6e13 s)") from None
    return seconds


def _ranks(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(str(rank) for rank in ranks)


def _by_value(values: list[Any]) -> str:
    """``"rank 0: a; ranks 1, 2: b"``: which ranks hold which value (None: ranks that hold nothing)."""
    groups: dict[str, list[int]] = {}
    for rank, value in enumerate(values):
        groups.setdefault("nothing" if value is None else str(value), []).append(rank)
    return "; ".join(f"{_ranks(ranks)}: {value}" for value, ranks in groups.items())


def _merged_identity(label: str, metadata: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's metadata for every rank: from the ranks that have any, refusing feature spaces that differ.

    A rank that fed no images has no metadata: it takes the others' (so that every rank then makes the same
    checks against the real side, and reaches the same decision). Keys that differ but do not name the feature
    space (the provider, say) are dropped.
    """
    holders = [(rank, entry) for rank, entry in enumerate(metadata) if entry]
    for key in IDENTITY_KEYS:
        values = {str(entry[key]) for _, entry in holders if key in entry}
        if len(values) > 1:
            shown = [entry.get(key) if entry else None for entry in metadata]
            shown = [value[:16] + "..." if isinstance(value, str) and len(value) > 24 else value for value in shown]
            raise FidkitError(
                f"FID.compute(): the ranks' {label} features come from different feature extractors: {key} differs "
                f"({_by_value(shown)}); their statistics cannot be merged: give every rank the same weights, "
                "engine and precision"
            )
    if not holders:
        return {}
    merged = dict(holders[0][1])
    for _, entry in holders[1:]:
        merged = {key: value for key, value in merged.items() if entry.get(key) == value}
    return merged


def _process_group() -> Any:
    """``torch.distributed`` when a default process group of more than one rank is up, else None.

    Never imports torch: a program that has not imported it cannot have a process group.
    """
    if "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    return dist


class DistributedMerge:
    """The distributed part of :class:`~fidkit.metric.FID` (a mixin: it uses the metric's sides and locks)."""

    def _group(self, dist: Any, timeout: float) -> Any:
        """A gloo group for the metric's CPU tensors: the default group when it is gloo, else one made once."""
        if dist.get_backend() == "gloo":
            return None
        world_group = _default_group(dist)
        if self._gloo_group is None or getattr(self, "_gloo_parent", None) is not world_group:
            # NCCL cannot run monitored_barrier nor carry host arrays: a gloo group over the same ranks does
            # (made again when the default group was re-created).
            self._gloo_group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout))
            self._gloo_parent = world_group
        return self._gloo_group

    def _kept_description(self) -> str:
        """The asked metrics, their interval and seed, and what each side keeps for them: equal on every rank."""
        if self._asked is None:
            return "fid (statistics only)"
        text = ", ".join(self._asked)
        if self._ci is not None:
            text += f" with ci={self._ci!r}"
        kept = "; ".join(
            f"{side.label} keeps {', '.join(side.outputs) if side.outputs else 'statistics only'}"
            for side in (self._real, self._generated)
        )
        return f"{text}, metrics_seed={self._metrics_seed} ({kept})"

    def _collective(self, dist: Any, what: str, call: Any) -> Any:
        """Run one collective; a failure (a rank that died, a broken connection) breaks the group for good."""
        try:
            return call()
        except RuntimeError as exc:
            reason = f"{what} failed on rank {dist.get_rank()} (torch.distributed: {str(exc).strip()[:500]})"
            _mark_broken(dist, reason)
            raise FidkitError(
                f"FID.compute(): {reason}; the process group cannot be used after this: {_RECREATE}"
            ) from exc

    def _gather(self, dist: Any, timeout: float, reference: tuple[Stats, Any] | None) -> None:
        """Combine every rank's sides exactly, after checking that the ranks measure the same thing.

        Every rank ends with the same statistics, or raises the same error: each check below looks at what
        every rank sent, never at this rank alone.
        """
        import torch

        world = dist.get_world_size()
        rank = dist.get_rank()
        _check_not_broken(dist, rank, world)
        try:
            group = self._group(dist, timeout)
            dist.monitored_barrier(group=group, timeout=timedelta(seconds=timeout), wait_all_ranks=True)
        except RuntimeError as exc:
            reason = f"not every rank called compute() within {timeout:g} s (torch.distributed: {str(exc).strip()})"
            _mark_broken(dist, f"an earlier compute() timed out: {reason}")
            raise FidkitError(
                f"FID.compute() on rank {rank} of {world}: {reason}; every rank must call compute(), also when "
                f"only rank 0 uses the value. The process group cannot be used after this: {_RECREATE}; if a "
                "rank is only slow, pass a larger timeout= to compute() then"
            ) from exc
        has_reference = reference is not None
        sides = [self._generated] if has_reference else [self._real, self._generated]
        header = {
            "reference": _reference_fingerprint(reference[0]) if reference is not None else None,
            "dim": next((s.accumulator.dim for s in sides if s.accumulator.dim is not None), 0),
            "changed": [s.version != s.stats_version or s.stats is None for s in sides],
            "metadata": [dict(s.metadata) for s in sides],
            "metrics": self._kept_description(),
        }
        headers: list[Any] = [None] * world
        self._collective(dist, "exchanging what each rank holds", lambda: dist.all_gather_object(headers, header, group=group))
        references = [entry["reference"] for entry in headers]
        if len(set(references)) > 1:
            if None in references:
                raise FidkitError(
                    f"FID.compute(): some ranks have a reference and others do not ({_by_value(references)}); "
                    "give every rank the same reference"
                )
            raise FidkitError(
                f"FID.compute(): the ranks hold different reference statistics ({_by_value(references)}); their "
                "FIDs would differ: give every rank the same reference (the same statistics file)"
            )
        asked = [entry["metrics"] for entry in headers]
        if len(set(asked)) > 1:
            # What each side keeps decides the collectives below (the kept rows are gathered only where a metric
            # needs them): ranks that differ would run mismatched collectives (gloo aborts one, another may
            # return a wrong number), and their tables would differ anyway.
            raise FidkitError(
                f"FID.compute(): the ranks ask for different metrics ({_by_value(asked)}); their reports would "
                "differ: give every rank the same metrics=, ci= and metrics_seed="
            )
        known_dims = {int(entry["dim"]) for entry in headers if entry["dim"]}
        if len(known_dims) > 1:
            raise FidkitError(
                f"FID.compute(): the ranks hold features of different dimensions "
                f"({_by_value([entry['dim'] or None for entry in headers])})"
            )
        merged_metadata = [
            _merged_identity(side.label, [entry["metadata"][index] for entry in headers])
            for index, side in enumerate(sides)
        ]
        changed = np.array([entry["changed"] for entry in headers]).any(axis=0)
        if not changed.any() and self._last is not None and all(s.stats is not None for s in sides):
            return
        dim = known_dims.pop() if known_dims else 0
        for side, side_changed, metadata in zip(sides, changed, merged_metadata):
            if not side_changed and side.stats is not None:
                continue
            if dim == 0:
                raise self._too_few(side, 0)
            with side.lock:  # the moments, the kept rows and the version they belong to, together
                version = side.version
                n, mean, m2 = side.accumulator.moments() if side.accumulator.n else (0, np.zeros(dim), np.zeros((dim, dim)))
                rows = side.rows.result() if side.rows is not None and side.rows.n else None
            packed = torch.from_numpy(np.concatenate([[float(n)], mean, m2.reshape(-1)]))
            gathered = [torch.empty_like(packed) for _ in range(world)]
            self._collective(dist, "gathering the statistics", lambda: dist.all_gather(gathered, packed, group=group))
            # Merged in rank order with the accumulator's exact pairwise update: the same bits on every rank.
            merged = StatsAccumulator(dim)
            for item in gathered:
                values = item.numpy()
                merged.merge(
                    StatsAccumulator.from_moments(int(values[0]), values[1 : 1 + dim], values[1 + dim :].reshape(dim, dim))
                )
            if merged.n < 2:
                raise self._too_few(side, merged.n)
            if side.rows is not None:
                # The rows the asked metrics need (FID(metrics=...)), every rank's in rank order: N x dim floats
                # per side through the process group, as pickled objects (ranks hold different N).
                parts: list[Any] = [None] * world
                self._collective(dist, "gathering the kept rows", lambda: dist.all_gather_object(parts, rows, group=group))
                present = [part for part in parts if part is not None]
                side.all_rows = Features.concatenate(present) if present else None
            # The metadata merged from every rank that has some: the same on every rank, so the checks against
            # the real side (different weights are an error) reach the same decision everywhere.
            side.set_stats(merged.result(metadata=metadata), version)


_RECREATE = (
    "call torch.distributed.destroy_process_group() and init_process_group() again on every rank before the next "
    "compute()"
)


def _default_group(dist: Any) -> Any:
    """The default process group object (a new one after destroy_process_group() and init_process_group())."""
    return getattr(dist.group, "WORLD", None)


def _mark_broken(dist: Any, reason: str) -> None:
    with _BROKEN_GROUPS_LOCK:
        _BROKEN_GROUPS.append((_default_group(dist), reason))


def _check_not_broken(dist: Any, rank: int, world: int) -> None:
    """Refuse at once a process group on which an earlier compute() timed out or failed."""
    world_group = _default_group(dist)
    with _BROKEN_GROUPS_LOCK:
        reasons = [reason for group, reason in _BROKEN_GROUPS if group is world_group]
    if reasons:
        raise FidkitError(
            f"FID.compute() on rank {rank} of {world}: the process group is unusable: {reasons[-1]}; torch.distributed "
            f"does not recover a group after a timed-out or failed collective, so waiting longer cannot help: {_RECREATE}"
        )
