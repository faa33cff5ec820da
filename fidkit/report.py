"""What a computation tells its user: how each side was obtained, the FID, and what to be careful about.

:class:`SideReport` describes one side (N, cached or computed, skipped and ignored files, the network);
:class:`FidReport` the comparison (the value, both sides, the square-root diagnostics, warnings, timings).
:func:`assemble_fid_report` builds the latter the same way for :func:`fidkit.compute_fid` and
:class:`fidkit.FID`, with the warnings of :func:`check_comparable`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fidkit._plain import fid_text, finite_or_none, shown_name
from fidkit._version import __version__
from fidkit.errors import InputError
from fidkit.frechet import FrechetResult

__all__ = [
    "SideReport", "Timings", "FidReport", "check_comparable", "assemble_fid_report", "json_text", "merge_warnings",
    "unreleased_weights_warnings",
]


def json_text(value: Any, *, indent: int | None = 2) -> str:
    """The JSON fidkit prints or writes: always valid JSON (RFC 8259), never ``NaN`` or ``Infinity``.

    Python's json module writes ``Infinity`` and ``NaN`` by default, which JSON parsers other than Python's
    refuse. Here a float that is not finite becomes ``null`` (in fidkit's dicts it means "no value": a TTUR run
    without an evaluation, a diagnostic a method does not have); a FID is never such a value, since the distance
    refuses to return one. ``allow_nan=False`` then guarantees the output.
    """
    return json.dumps(finite_or_none(value), indent=indent, allow_nan=False)


def merge_warnings(*groups: Iterable[str]) -> list[str]:
    """The warnings of `groups`, in order, each once and on one line (as ``fidkit`` prints them on stderr).

    ``fidkit --json`` lists every warning the command printed: the ones a report records and the ones only
    issued while it ran (a limit above a source's size, a seed without a limit, sFID's small samples).
    """
    merged: dict[str, None] = {}
    for group in groups:
        for message in group:
            merged.setdefault(" ".join(str(message).split()), None)
    return list(merged)


@dataclass(frozen=True)
class SideReport:
    """How the statistics of one side were obtained.

    Attributes
    ----------
    name : str
        The source's name (a path, ``"array(...)"``, ``"batches from ..."``, ``"Stats"``).
    kind : str
        ``"folder"``, ``"archive"``, ``"array"``, ``"mnist"``, ``"cifar"``, ``"stats"`` or ``"batches"``.
    n : int or None
        Images in the statistics; None for a TTUR / pytorch-fid file that did not record it.
    cached : bool
        True when the statistics came from the statistics cache (the network did not run).
    lossy : bool
        True when the images include lossy (JPEG) files.
    skipped : tuple of (str, str)
        ``(file, reason)`` of the files skipped with ``skip_bad`` (as far as known; a cached or loaded
        side names at most 20).
    n_skipped : int
        How many files were skipped.
    ignored : tuple of (str, int)
        ``(reason, count)`` of what the source deliberately did not read (hidden folders, formats
        fidkit does not read, special files, duplicate archive members).
    foreign : bool
        True for a statistics file that records no N: ``mu`` and ``sigma`` only (TTUR, pytorch-fid), or an ADM
        reference batch.
    weights_sha256, resize_mode, provider, engine, precision : str or None
        What the features were computed with, as recorded (``engine``: ``onnxruntime`` or ``torch``;
        ``precision``: ``exact``, ``fast``, ``tf32`` or ``bf16``, prefixed ``tensorrt-`` when TensorRT ran);
        None when unknown.
    convention : str or None
        The preprocessing convention (``tf``, ``pytorch-fid``, ``clean``, ``torchmetrics``); a fidkit file from
        before conventions, resized the TF way, is ``tf``; None when unknown (another tool's statistics file).
    feature_extractor : str or None
        The layer the features come from (``inception-2015-12-05/pool_3``, or a ``--dims`` layer).
    extractor, extractor_identity : str or None
        Which extractor made the features (its registered name, or what names an extractor object) and, as JSON,
        the identity fields it records beyond the others; a file that records no name is ``inception-2015`` where
        it names an Inception layer (an older fidkit's), else None (another tool's, say: unknown, not compared):
        :func:`fidkit.preflight.recorded_extractor`.
    contents : str or None
        What a statistics file holds beyond ``mu`` and ``sigma``, in words (``"ADM reference batch: pool_3 and
        spatial statistics (mu, sigma, mu_s, sigma_s), 10,000 images of 256x256x3 uint8 in arr_0"``); None otherwise.
    decode_seconds : float
        Time spent waiting for decoded images (decoding overlaps with the network, so this is the part
        of decoding the network did not hide).
    network_seconds : float
        Time spent in the feature extractor.
    total_seconds : float
        Wall time for this side, opening and cache lookup included.
    batch_size : int or None
        Images per network batch, as chosen (None where the network did not run).
    setup_seconds : float
        Time spent building the extractor for this side (weights, graph, session); 0 when it was built
        before or not needed.
    setup_parts : tuple of (str, float)
        Where that time went, as the extractor says (e.g. ``weights``, ``graph_export`` or ``graph_check``,
        ``session``), or ``ray_outside_shards`` on a Ray cluster: the whole Ray call but the shards' wall time
        (the extractor's identity, which may hash the weights; connecting to Ray, or starting a local instance
        and stopping it; the graph's export before the actors start; merging the shards and checking their
        identity); empty when it was not built for this side.
    first_wait_seconds, first_batch_seconds : float
        Of `decode_seconds` and `network_seconds`, the first batch's: the wait for it includes the decoding
        workers' start, its network call a GPU's plan search for the batch shape. 0 where the network did not
        run.
    """

    name: str
    kind: str
    n: int | None
    cached: bool
    lossy: bool
    skipped: tuple[tuple[str, str], ...]
    n_skipped: int
    ignored: tuple[tuple[str, int], ...]
    foreign: bool
    weights_sha256: str | None
    resize_mode: str | None
    provider: str | None
    engine: str | None
    precision: str | None
    decode_seconds: float
    network_seconds: float
    total_seconds: float
    batch_size: int | None = None
    setup_seconds: float = 0.0
    setup_parts: tuple[tuple[str, float], ...] = ()
    first_wait_seconds: float = 0.0
    first_batch_seconds: float = 0.0
    convention: str | None = None
    feature_extractor: str | None = None
    contents: str | None = None
    extractor: str | None = None
    extractor_identity: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        data = dataclasses.asdict(self)
        data["skipped"] = [{"file": file, "reason": reason} for file, reason in self.skipped]
        data["ignored"] = {reason: count for reason, count in self.ignored}
        data["setup_parts"] = {part: seconds for part, seconds in self.setup_parts}
        return data

    def __str__(self) -> str:
        n_text = "N unknown" if self.n is None else f"N={self.n}"
        extras = [self.contents or self.kind] + (["cached"] if self.cached else []) + (["lossy"] if self.lossy else [])
        if self.n_skipped:
            extras.append(f"{self.n_skipped} skipped")
        n_ignored = sum(count for _, count in self.ignored)
        if n_ignored:
            extras.append(f"{n_ignored} ignored")
        return f"{self.name} ({n_text}, {', '.join(extras)})"


@dataclasses.dataclass(frozen=True)
class Timings:
    """Where the time of a :func:`compute_fid` call went, in seconds (both sides together).

    Attributes
    ----------
    decode_seconds : float
        Waiting for decoded images (the network idle).
    network_seconds : float
        Running the network, the statistics' accumulation included.
    distance_seconds : float
        The Fréchet distance (and the other asked-for metrics).
    total_seconds : float
        The whole call, setup and cache look-ups included.
    """

    decode_seconds: float
    network_seconds: float
    distance_seconds: float
    total_seconds: float

    def to_dict(self) -> dict[str, float]:
        """Return a JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class FidReport:
    """The FID between two sources, with everything needed to trace the number.

    Behaves as a float: ``float(report)`` is ``report.value``.

    Attributes
    ----------
    value : float
        The Fréchet Inception Distance.
    frechet : FrechetResult
        The distance's terms and square-root diagnostics (method, rank, clipped spectrum).
    a, b : SideReport
        How each side's statistics were obtained (N, cached, lossy, skipped files).
    weights_sha256 : str or None
        The sha256 of the Inception weights (None if neither side recorded it).
    resize_mode : str or None
        The resize the features were computed with.
    convention : str or None
        The preprocessing convention of both sides (``tf``, ``pytorch-fid``, ``clean``, ``torchmetrics``).
    metrics : MetricTable or None
        The other asked-for metrics and the intervals (:func:`fidkit.metrics.evaluate`), when more than the
        FID alone was asked for; None otherwise.
    provider : str or None
        The onnxruntime provider(s) that computed the features (e.g. ``CPUExecutionProvider``).
    engine, precision : str or None
        What ran the network (``onnxruntime``, ``torch``) and at which precision (``exact``, ``fast``, ``tf32``,
        ``bf16``, as :class:`SideReport` records it).
    warnings : tuple of str
        Everything a careful user should know: N below the feature dimension, lossy inputs, skipped
        files, statistics files that do not record N or the network.
    timings : Timings
        Decode, network, distance and total seconds.
    fidkit_version : str
        The fidkit version that made the report.
    """

    value: float
    frechet: FrechetResult
    a: SideReport
    b: SideReport
    weights_sha256: str | None
    resize_mode: str | None
    provider: str | None
    engine: str | None
    precision: str | None
    warnings: tuple[str, ...]
    timings: Timings
    fidkit_version: str
    convention: str | None = None
    metrics: Any = None

    def __float__(self) -> float:
        return float(self.value)

    def __str__(self) -> str:
        return f"FID {fid_text(self.value)}: a = {self.a}, b = {self.b}"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (plain floats, ints, strings, lists; a non-finite FID is None)."""
        return {
            "fid": float(self.value) if math.isfinite(self.value) else None,
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "weights_sha256": self.weights_sha256,
            "convention": self.convention,
            "resize_mode": self.resize_mode,
            "provider": self.provider,
            "engine": self.engine,
            "precision": self.precision,
            "frechet": self.frechet.to_dict(),
            "warnings": list(self.warnings),
            "timings": self.timings.to_dict(),
            "fidkit_version": self.fidkit_version,
            **({"metrics": self.metrics.to_dict()} if self.metrics is not None else {}),
        }


def check_comparable(
    side_a: SideReport, side_b: SideReport, *, allow_weights_mismatch: bool, allow_convention_mismatch: bool = False
) -> list[str]:
    """Check that the two sides can be compared: raise on different weights or conventions (unless allowed), and
    return the warnings (lossy or skipped inputs, unknown provenance, different resize modes or precisions).

    Files are checked against the run's network before any image is read (:func:`fidkit.preflight.check_against_run`,
    so that no network time is spent on a refused comparison); this checks what only the finished sides record,
    and covers sides that never met a network (two statistics files, ``fidkit.FID``'s accumulated images).
    """
    messages: list[str] = []
    labelled = (("a", side_a), ("b", side_b))
    for label, side in labelled:
        if side.n is None:
            held = f"({side.contents})" if side.contents else "with only mu and sigma (TTUR / pytorch-fid)"
            messages.append(
                f"side {label} ({shown_name(side.name)}) is a statistics file {held}: its N is unknown and the "
                "network it was made with cannot be checked"
                + (
                    "; its convention (resize and normalization) is unknown too, and the FID is only meaningful "
                    "under the same convention on both sides (pytorch-fid files match --convention pytorch-fid, "
                    "clean-fid's --convention clean, TTUR's and ADM's evaluator's --convention tf)"
                    if side.convention is None else ""
                )
            )
        elif side.weights_sha256 is None and not side.foreign:
            messages.append(
                f"side {label} ({shown_name(side.name)}) records no weights sha256: cannot check that both sides "
                "used the same Inception network"
            )
        if side.lossy:
            messages.append(
                f"side {label} ({shown_name(side.name)}) holds lossy (JPEG) images: FID against lossless images is "
                "not zero even for the same pictures, and published reference statistics (e.g. "
                "CIFAR-10) were made from lossless images"
            )
        n_ignored = sum(count for _, count in side.ignored)
        if n_ignored:
            reasons = "; ".join(f"{count} {reason}" for reason, count in side.ignored)
            messages.append(
                f"side {label} ({shown_name(side.name)}): {n_ignored} file(s) or folder(s) not read: {reasons}"
            )
        if side.n_skipped:
            examples = "; ".join(f"{shown_name(file)}: {reason}" for file, reason in side.skipped[:3])
            messages.append(
                f"side {label} ({shown_name(side.name)}): {side.n_skipped} unreadable file(s) skipped (--skip-bad)"
                + (f", e.g. {examples}" if examples else "")
            )
    if side_a.extractor and side_b.extractor and side_a.extractor != side_b.extractor:
        raise InputError(
            f"the two sides were made by different feature extractors (a, {shown_name(side_a.name)}: "
            f"{side_a.extractor!r}; b, {shown_name(side_b.name)}: {side_b.extractor!r}): their FID is not meaningful; "
            "recompute one side with the other's extractor (--extractor, extractor=)"
        )
    identities = (side_a.extractor_identity, side_b.extractor_identity)
    if side_a.extractor and side_a.extractor == side_b.extractor and all(identities) and identities[0] != identities[1]:
        raise InputError(
            f"the two sides were made by the feature extractor {side_a.extractor!r} configured differently (a, "
            f"{shown_name(side_a.name)}: {identities[0]}; b, {shown_name(side_b.name)}: {identities[1]}): their FID "
            "is not meaningful; recompute one side with the other's settings"
        )
    messages.extend(unreleased_weights_warnings(labelled))
    if side_a.weights_sha256 and side_b.weights_sha256 and side_a.weights_sha256 != side_b.weights_sha256:
        message = (
            f"the two sides were computed with different Inception weights (a: "
            f"{side_a.weights_sha256[:16]}..., b: {side_b.weights_sha256[:16]}...): their FID is not "
            "meaningful; recompute one side with the other's weights"
        )
        if not allow_weights_mismatch:
            raise InputError(message + " (or pass allow_weights_mismatch=True / --allow-weights-mismatch)")
        messages.append(message)
    if side_a.precision and side_b.precision and side_a.precision != side_b.precision:
        messages.append(
            f"the two sides were computed at different precisions (a: {side_a.precision}, b: {side_b.precision}); "
            "a fast mode (TF32, half precision) is not the reference's float32: compute both sides exactly for "
            "reported numbers"
        )
    messages.extend(_convention_warnings(labelled, allow_convention_mismatch))
    return messages


def _convention_warnings(labelled: tuple[tuple[str, SideReport], ...], allow_mismatch: bool) -> list[str]:
    """Sides made under different conventions measure different things: refused unless allowed. (A side whose
    convention is unknown, another tool's statistics file, is said so by the foreign-file warning.)"""
    known = {label: side.convention for label, side in labelled if side.convention}
    if len(set(known.values())) > 1:
        (label_a, side_a), (label_b, side_b) = labelled
        message = (
            f"side {label_a} ({shown_name(side_a.name)}) was computed under the {side_a.convention!r} convention and "
            f"side {label_b} ({shown_name(side_b.name)}) under {side_b.convention!r} ({side_a.resize_mode} vs "
            f"{side_b.resize_mode}): "
            "their FID mixes two preprocessings and matches no tool's number (docs/compatibility.md gives the size "
            "of the gap); recompute one side with --convention " + str(side_a.convention)
        )
        if not allow_mismatch:
            raise InputError(message + " (or pass allow_convention_mismatch=True / --allow-convention-mismatch)")
        return [message]
    messages = []
    (_, first), (_, second) = labelled
    if first.resize_mode and second.resize_mode and first.resize_mode != second.resize_mode:
        messages.append(
            f"the two sides were resized differently (a: {first.resize_mode}, b: {second.resize_mode}); "
            "FID across resize modes is biased"
        )
    return messages


def unreleased_weights_warnings(labelled: tuple[tuple[str, SideReport], ...], *, kept: str = "") -> list[str]:
    """A warning per weights file other than the released one that a side's features were computed with
    (`kept`: ``"statistics"`` or ``"features"``, what ``fidkit stats``/``features`` computes to keep).

    Such a FID is not the published metric (random or retrained weights, another port): comparable only with
    FIDs from the same file. Checked on the recorded sha256, so a cached side or a saved statistics file is
    checked as well as a fresh computation.
    """
    # Imported here: the manifest belongs to the network's package, which this module otherwise never needs.
    from fidkit.errors import WeightsError
    from fidkit.inception.weights import load_manifest

    try:
        manifest = load_manifest()
    except WeightsError:  # a broken installation says so wherever the weights are needed; no FID is lost here
        return []
    sides_by_weights: dict[str, list[str]] = {}
    for label, side in labelled:
        if side.weights_sha256 and side.weights_sha256 != manifest.sha256:
            named = f"{label} ({shown_name(side.name)})" if label else shown_name(side.name)
            sides_by_weights.setdefault(side.weights_sha256, []).append(named)
    released = f"not the released {manifest.file_name} ({manifest.sha256[:16]}...)"
    if kept:
        return [
            f"the {kept} of {' and '.join(sides)} were computed with Inception weights of sha256 {sha256[:16]}..., "
            f"{released}: their FIDs are comparable only with FIDs from the same weights file, not with published "
            "numbers; use the released file for numbers you report"
            for sha256, sides in sides_by_weights.items()
        ]
    return [
        f"{'sides' if len(sides) > 1 else 'side'} {' and '.join(sides)} {'were' if len(sides) > 1 else 'was'} "
        f"computed with Inception weights of sha256 {sha256[:16]}..., {released}: this FID is comparable only with "
        "FIDs from the same weights file, not with published numbers; use the released file for numbers you report"
        for sha256, sides in sides_by_weights.items()
    ]


def assemble_fid_report(
    frechet: FrechetResult,
    side_a: SideReport,
    side_b: SideReport,
    messages: list[str],
    timings: Timings,
    metrics: Any = None,
) -> FidReport:
    """The :class:`FidReport` of a distance and its two sides; `messages` are the consistency warnings, `metrics`
    the table of the other asked-for metrics (if any)."""

    def common(field: str) -> str | None:
        values = [getattr(side, field) for side in (side_a, side_b) if getattr(side, field)]
        return ", ".join(dict.fromkeys(values)) if values else None

    if not math.isfinite(frechet.value):
        # fidkit.frechet refuses such a distance itself; a report never carries one either.
        raise InputError(f"the FID is {frechet.value}, not a finite number; it cannot be reported")

    return FidReport(
        value=float(frechet.value),
        frechet=frechet,
        a=side_a,
        b=side_b,
        weights_sha256=common("weights_sha256"),
        convention=common("convention"),
        resize_mode=common("resize_mode"),
        provider=common("provider"),
        engine=common("engine"),
        precision=common("precision"),
        warnings=tuple(messages) + tuple(str(message) for message in frechet.warnings),
        timings=timings,
        fidkit_version=__version__,
        metrics=metrics,
    )
