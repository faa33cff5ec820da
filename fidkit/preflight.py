"""Step 1's check: a statistics or features input that the run cannot use as asked is refused before any image is read.

A file compared with images must have been made by the network this run builds (same weights, convention and
layer); found out after the extraction, the mismatch cost the whole network pass. With files only, no network
runs: an option that selects the network and contradicts what a file records would print another number than
the one asked for. :func:`check_against_run` is called by :mod:`fidkit.api` right after both inputs are opened;
:func:`recorded_convention` and :func:`recorded_text` read what a file records, here and in the reports of
:mod:`fidkit.pipeline`.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from fidkit._devices import parse_device
from fidkit._fs import sha256_file
from fidkit._home_dir import expand_user
from fidkit.errors import FidkitWarning, InputError
from fidkit.extractors import ExtractorIdentity, LazyExtractor, extractor_metadata, identity_of
from fidkit.features import Features
from fidkit.inception.spec import numerics
from fidkit.options import DEFAULT_EXTRACTOR, RunOptions
from fidkit.stats import Stats

__all__ = [
    "check_against_run", "recorded_convention", "recorded_text", "recorded_extractor", "recorded_identity",
    "run_identity", "identity_record",
]

#: Identity fields that files record apart and that are compared apart (weights and convention refused unless allowed,
#: the layer through the width, engine and precision a warning): left out of ``extractor_identity``, which holds what
#: else an extractor's identity names (a registered entry's own fields, an object's class and width).
_COMPARED_APART = frozenset({
    "weights_sha256", "convention", "resize_mode", "feature_extractor", "engine", "precision", "exporter_version",
    "provider", "device", "graph_sha256", "batch_size",
    # Where an object's class lives (__main__.Net in one script, myext.Net in another) keys the cache apart but
    # does not make its features another extractor's; the width is compared by its own check.
    "class", "feature_dim",
})


def recorded_text(value: Any) -> str | None:
    """A metadata value as text, None where nothing is recorded (missing or empty)."""
    return None if value in (None, "") else str(value)


def recorded_convention(metadata: dict[str, Any]) -> str | None:
    """The recorded convention; a fidkit file from before conventions existed, resized the TF way, is ``tf``."""
    recorded = recorded_text(metadata.get("convention"))
    if recorded is None and metadata.get("resize_mode") == "tf1-bilinear-asymmetric":
        return "tf"
    return recorded


def recorded_extractor(metadata: dict[str, Any]) -> str | None:
    """Which extractor made a file's features: the name it records (``extractor``, as fidkit writes it).

    A file that records none is Inception (``inception-2015``) where it names an Inception layer
    (``feature_extractor``: an older fidkit's); otherwise it is unknown (None) and not compared, as before names
    were recorded: another tool's ``mu`` and ``sigma`` (TTUR's, pytorch-fid's, ADM's, but also a DINOv2 or SwAV
    reference of 768 or 2048 features, which no width tells from the Inception's), an older fidkit's file of another
    extractor, a :class:`~fidkit.stats.Stats` made in code. Their widths are still checked.
    """
    named = recorded_text(metadata.get("extractor"))
    if named is not None:
        return named
    if str(metadata.get("feature_extractor", "")).startswith("inception-2015-12-05/"):
        return DEFAULT_EXTRACTOR
    return None


def run_identity(lazy: LazyExtractor) -> ExtractorIdentity:
    """The identity a run's features are recorded under: the registered entry's (its name), a given object's own
    (:func:`~fidkit.extractors.identity_of`: the name its metadata states, else its class's), the one that keys the
    cache. An object that states none (it runs uncached) is named by its metadata's ``extractor`` or its class."""
    try:
        return lazy.identity()
    except InputError:
        if lazy.given is None:
            raise
        kind = type(lazy.given)
        name = recorded_text(extractor_metadata(lazy.given).get("extractor")) or kind.__name__
        return ExtractorIdentity.of(name, {"class": f"{kind.__module__}.{kind.__qualname__}"})


def recorded_identity(metadata: dict[str, Any]) -> str | None:
    """A file's recorded ``extractor_identity`` as it is compared: without the fields compared apart or not at all
    (a file written when ``class`` was recorded is the same extractor as one written after); None if none."""
    text = recorded_text(metadata.get("extractor_identity"))
    try:
        fields = json.loads(text) if text is not None else None
    except ValueError:
        return text  # not JSON: compared as it is
    if not isinstance(fields, dict):
        return text
    return _identity_text(fields.items())


def identity_record(identity: ExtractorIdentity) -> dict[str, str]:
    """What a statistics or features file records of the extractor that made it: ``extractor`` (its name) and
    ``extractor_identity`` (JSON of the identity's fields not recorded and compared apart: ``{}`` for Inception)."""
    return {"extractor": identity.name, "extractor_identity": _identity_text(identity.fields)}


def _identity_text(fields: Any) -> str:
    """The ``extractor_identity`` of identity `fields` (``(key, value)`` pairs), as recorded and compared: those not
    compared apart, as sorted JSON."""
    return json.dumps({key: value for key, value in fields if key not in _COMPARED_APART}, sort_keys=True)


def _run_extractor_name(lazy: LazyExtractor, options: RunOptions) -> str:
    """The name of the run's extractor, without building it or hashing its weights."""
    return options.extractor if lazy.given is None else run_identity(lazy).name


def _check_extractor_of(
    where: str, side: Stats | Features, lazy: LazyExtractor, options: RunOptions, *, files_only: bool
) -> None:
    """Refuse a file made by another extractor than the run's (its recorded name, or, under the same name, its
    recorded identity fields); a file that records neither is not refused (:func:`recorded_extractor`)."""
    recorded = recorded_extractor(side.metadata)
    if recorded is None:
        return
    expected = _run_extractor_name(lazy, options)
    fix = (_NOT_FOR_FILES.format(option="extractor") if files_only else
           "compute the other side with the file's extractor (--extractor / extractor=), or recompute the file with "
           "this one")
    if recorded != expected:
        raise InputError(f"{where} was made by the feature extractor {recorded!r}, but this run's extractor is "
                         f"{expected!r}: features of two extractors are not comparable; {fix}")
    stated = recorded_identity(side.metadata)
    if stated is None or (stated == "{}" and expected == DEFAULT_EXTRACTOR):
        return  # nothing more recorded (Inception's identity is its weights, convention and layer: checked below)
    ours = identity_record(run_identity(lazy))["extractor_identity"]
    if stated != ours:
        raise InputError(f"{where} was made by the feature extractor {recorded!r} with identity {stated}, but this "
                         f"run's has {ours}: {fix}")


def _file_label(label: str, opened: Stats | Features) -> str:
    path = opened.path
    return f"{label} ({path})" if path is not None else f"{label} (a {type(opened).__name__} object)"


def _weights_sha256(path: Any) -> str:
    """The sha256 of the weights file the user named (explicitly: it is never looked for or downloaded)."""
    try:
        return sha256_file(expand_user(path, named="--weights / weights="))
    except OSError as exc:
        raise InputError(f"weights file {path} (from --weights / weights=) cannot be read ({exc}); give the "
                         "weights the statistics were made with, or drop --weights") from exc


_NOT_FOR_FILES = (
    "--{option} does not apply to statistics or features files (no network runs; they are used as they are): "
    "drop --{option}, or recompute the file with it"
)
# The options that steer how the network runs or how images are read, with their flag: given (other than their
# default) when every input is a statistics or features file, none applies, and one warning names them. limit and
# seed are not here: fidkit.pipeline.open_input warns about them for each file, beside an image side too.
_RUN_ONLY = (
    ("device", "--device"), ("engine", "--engine"), ("batch_size", "--batch-size"), ("threads", "--threads"),
    ("workers", "--workers"), ("skip_bad", "--skip-bad"), ("exif_transpose", "--exif-transpose"),
    ("use_cache", "--no-cache"), ("hash_content", "--hash-content"), ("cluster", "--ray"),
    ("ray_address", "--ray-address"),
)
# What a statistics or features file records of its network, and the option that selects each.
_RECORDED = (
    ("weights_sha256", "weights"),
    ("convention", "convention"),
    ("feature_extractor", "dims"),
    ("precision", "precision"),  # two files only: with images, a precision difference is a warning after the run
)


def _warn_run_only_options(options: RunOptions) -> None:
    """Warn, once for them all, about the options given that no input reads when every one is a file: the run is
    right (the files are used as they are), but the option was ignored. A default given explicitly (``--device
    auto``) asks for nothing and is not named."""
    changed = options.changed()
    named = [f"{flag} ({name}={changed[name]!r})" for name, flag in _RUN_ONLY if name in changed]
    if named:
        warnings.warn(
            f"{', '.join(named)} {'does' if len(named) == 1 else 'do'} not apply to statistics or features files (no "
            "network runs and no image is read; they are used as they are): ignored; drop "
            f"{'it' if len(named) == 1 else 'them'}", FidkitWarning, stacklevel=4,
        )


def check_against_run(
    opened: dict[str, Any],
    lazy: LazyExtractor,
    options: RunOptions,
    *,
    allow_weights_mismatch: bool = False,
    allow_convention_mismatch: bool = False,
    offer_allow: bool = True,
) -> None:
    """Refuse now, before any network time, a statistics or features input that the run cannot use as asked.

    With an image side (whose features this run's extractor makes, or whose cache entry it names), each file
    side must record the same weights, convention and layer (``--dims``) as that extractor, and have its
    feature dimension; otherwise the error came after the whole network pass. With files only, no network
    runs and the files are used as they are: an option that selects the built-in network (``--convention``,
    ``--dims``, ``--weights``, ``--precision``), given (:meth:`RunOptions.given`, its default value too), must agree
    with what each file records, or the number printed would not be the one asked for (a file that records nothing
    is a warning); an option of the network's run or of image reading (``--device``, ``--batch-size``,
    ``--exif-transpose``, ...) given other than its default is named in one warning, as not applying.
    That check needs no weights unless ``--weights`` names a file: nothing is located or downloaded.
    `offer_allow` False leaves the ``allow_*_mismatch`` options out of the advice (``fidkit.FID`` has none).
    """
    files = {label: side for label, side in opened.items() if isinstance(side, (Stats, Features))}
    if not files:
        return
    dims = {label: side.dim for label, side in files.items()}
    if len(set(dims.values())) > 1:
        described = " and ".join(f"{_file_label(label, files[label])} {dim}" for label, dim in dims.items())
        raise InputError(
            f"the inputs hold features of different dimensions: {described}; both sides must come from the same "
            "feature extractor and layer (--dims): recompute one of them"
        )
    inception = lazy.given is None and options.extractor == DEFAULT_EXTRACTOR
    files_only = len(files) == len(opened)
    if not files_only or lazy.given is not None or "extractor" in options.given():
        # Before the width: two extractors of one width (a twin registered beside another) would pass it.
        for label, side in files.items():
            _check_extractor_of(_file_label(label, side), side, lazy, options, files_only=files_only)
    if len(files) < len(opened):
        checked = {"weights_sha256", "convention", "feature_extractor"}
        recorded_any = any(
            (recorded_convention(side.metadata) if key == "convention" else recorded_text(side.metadata.get(key)))
            for side in files.values() for key in checked
        )
        try:
            # Only when a file records something to compare: the identity needs the weights' sha256 (located,
            # maybe downloaded), which a file recording nothing (TTUR's, a bare Stats) must not cost.
            # A built extractor states what really runs (a stand-in registered under a name states its own).
            identity = (identity_of(lazy.get()) if lazy.built else lazy.identity()) if recorded_any else None
            expected = dict(identity.fields) if identity is not None else {}
        except InputError:
            # A user's extractor that states no identity (it can then not be cached either): its dimension is
            # still checked here, the rest after the run as before.
            expected = {}
        # The width the extractor states (a built or given one), else the one its registry entry in force states
        # for these options (the built-in network's --dims): never assumed from the name, which a stand-in may take.
        expected_dim = lazy.feature_dim()
    else:
        _warn_run_only_options(options)
        if not inception:
            return
        # From the options alone: comparing two files must not need the network's weights (nor download them).
        # Every option the caller gave is checked, its default too: --dims 2048 against 64-dimensional files would
        # print their FID as if it were pool_3's.
        given = options.given()
        expected = {
            "convention": options.convention if "convention" in given else "",
            "weights_sha256": _weights_sha256(options.weights) if options.weights is not None else "",
            # As the network records it: TensorRT's precisions are named apart.
            "precision": (
                numerics(options.precision, tensorrt=parse_device(options.device).kind == "tensorrt")
                if "precision" in given else ""
            ),
        }
        checked = {key for key, value in expected.items() if value}
        expected_dim = options.dims if "dims" in given else None
    for label, side in files.items():
        where = _file_label(label, side)
        dim = side.dim
        if expected_dim is not None and dim != expected_dim:
            if len(files) == len(opened):
                fix = _NOT_FOR_FILES.format(option="dims")
            elif inception:
                fix = f"pass --dims {dim} (dims={dim}) to compute the other side as the file was"
            else:
                fix = "compute both sides with the same extractor"
            raise InputError(
                f"{where} holds {dim}-dimensional features, but this run's extractor makes {expected_dim}: {fix}"
            )
        metadata = side.metadata
        recorded = {"convention": recorded_convention(metadata)}
        for key, option in _RECORDED:
            if key not in checked or not expected.get(key):
                continue
            value = recorded.get(key) or recorded_text(metadata.get(key))
            if value is None:
                if len(files) == len(opened):
                    warnings.warn(
                        f"{where} records no {key}: --{option} cannot be checked against it (the file is used as "
                        "it is; no network runs)", FidkitWarning, stacklevel=3,
                    )
                continue
            if value == expected[key]:
                continue
            shown = (lambda text: text[:16] + "...") if key == "weights_sha256" else str
            message = (
                f"{where} was computed with {key} {shown(value)}, but this run's network has "
                f"{shown(expected[key])}"
            )
            if len(files) == len(opened):
                raise InputError(f"{message}: {_NOT_FOR_FILES.format(option=option)}")
            if key == "weights_sha256" and allow_weights_mismatch:
                continue
            if key == "convention" and allow_convention_mismatch:
                continue
            fix = {
                "weights_sha256": "pass the weights the file was made with (--weights, weights=), or recompute the "
                "file" + (" (or pass allow_weights_mismatch=True / --allow-weights-mismatch)" if offer_allow else ""),
                "convention": f"pass --convention {value} (convention={value!r}), or recompute the file"
                + (" (or pass allow_convention_mismatch=True / --allow-convention-mismatch)" if offer_allow else ""),
                "feature_extractor": f"pass --dims {dim} (dims={dim}), or recompute the file",
            }[key]
            raise InputError(f"{message} (found before computing the other side): {fix}")
