"""One options object for a run: :class:`RunOptions`, built once and passed down whole.

The command line (:mod:`fidkit.cli`) and the keyword arguments of the API (:func:`fidkit.compute_fid`,
:func:`fidkit.compute_stats`, :func:`fidkit.compute_features`, :class:`fidkit.FID`) both end here: every
setting of a run has one name, one default and one check, in this file. The pipeline, the Ray cluster
path, the metric and the trainer receive the object; none of them re-reads a setting from anywhere else.

The names say one thing each:

- ``extractor``: *which* network (a name of :mod:`fidkit.extractors`' registry, ``"inception-2015"``);
- ``device``: *which hardware* (``auto``, ``cpu``, ``cuda[:N]``, ``tensorrt[:N]``);
- ``engine``: *what runs* the network there (``onnxruntime`` or ``torch``);
- ``precision``: the arithmetic (``exact`` float32, the default; ``fast`` is opt-in);
- ``convention``: the preprocessing before the network, named after the tool whose numbers it reproduces
  (``tf``, the default; ``pytorch-fid``, ``clean``, ``torchmetrics``), and ``dims``: the feature layer;
- ``cluster``: *where* the extraction runs (this process, or ``ray``);
- ``workers``: decoding processes of this machine.

Invalid values and invalid combinations are refused when the object is made (:meth:`RunOptions.__post_init__`
and the extractor's own check), before any input is opened or any network built.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import numbers
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fidkit._ray_address import check_ray_address
from fidkit._validate import check_batch_size, check_limit_seed, is_count
from fidkit.errors import FidkitWarning, InputError

if TYPE_CHECKING:
    from fidkit.sources.base import ReadOptions

__all__ = [
    "RunOptions", "DEFAULT_EXTRACTOR", "CLUSTERS", "run_options", "given_options", "check_options_for_object",
    "check_weights", "check_names",
]

#: The feature extractor of FID: the 2015 TensorFlow Inception-v3, pool_3.
DEFAULT_EXTRACTOR = "inception-2015"
#: Where extraction runs: this process (decoding in worker processes of this machine), or a Ray cluster.
CLUSTERS = ("local", "ray")


def check_weights(weights: Any) -> None:
    """Refuse a `weights` value that is not one path (or the located weights a ``ResolvedWeights`` names): anything
    else would fail only once the network is built, after the inputs were opened (an int, a bool, bytes, a list of
    paths). The one check of the option, for :class:`RunOptions` and beside an extractor object alike."""
    if weights is None:
        return
    path = getattr(weights, "path", None) if hasattr(weights, "sha256") else weights
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(
            f"weights must be the path of a weights file (a str or an os.PathLike such as pathlib.Path), not "
            f"{type(weights).__name__} {weights!r:.80}; pass one path, e.g. weights='pt_inception-2015-12-05.pth'"
        )
    text = os.fspath(path)
    if not isinstance(text, str):  # an os.PathLike of bytes: refused as bytes are
        raise InputError(
            f"weights must be the path of a weights file as text, not the bytes path {text!r:.80}; pass it as a str "
            "or a pathlib.Path"
        )
    if not text.strip():
        raise InputError(f"weights must be the path of a weights file, not the blank string {text!r}")


@dataclass(frozen=True)
class RunOptions:
    """Every setting of a run that turns inputs into features, statistics and a distance.

    Parameters
    ----------
    extractor : str
        The feature extractor, by its registry name (:func:`fidkit.extractors.extractor_names`).
    weights : path-like, optional
        The extractor's weights file; default ``$FIDKIT_WEIGHTS``, the cache, or a download.
    device : str
        ``"auto"`` (a GPU when a session really runs there, else the CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:N"``, ``"tensorrt"``, ``"tensorrt:N"``.
    engine : {"auto", "onnxruntime", "torch"}
        What runs the network: the ONNX graph on onnxruntime, or the same network in torch.
    precision : {"exact", "tf32", "bf16", "fast"}
        ``"exact"``: float32 everywhere (the default, the reference's numbers). Opt-in, faster, never the reference:
        ``"tf32"`` (TF32 on a CUDA GPU, ``device="cuda[:N]"``, either engine), ``"bf16"`` (bfloat16 autocast,
        ``engine="torch"``, CPU or CUDA), ``"fast"`` (TensorRT FP16, ``device="tensorrt"``). Recorded in the
        metadata and the cache key.
    convention : {"tf", "pytorch-fid", "clean", "torchmetrics"}
        The resize and normalization before the network, as the named tool does them
        (:mod:`fidkit.inception.conventions`, ``docs/compatibility.md``). ``"tf"`` (default): the TensorFlow
        reference, TTUR and torch-fidelity. Part of the extractor's identity: statistics of different conventions
        are never mixed without an explicit override.
    dims : {2048, 768, 192, 64}
        Feature width: pool_3 (2048, the default and the FID of the literature) or pytorch-fid's ``--dims``.
    batch_size : int, optional
        Images per network batch; default: the extractor's choice for the device it runs on.
    threads : int, optional
        CPU threads of the network (onnxruntime intra-op threads); default: the cores this process may use.
    workers : int, optional
        Image decoding processes (0: decode in this process); default from the machine.
    skip_bad : bool
        Skip undecodable files (counted and named) instead of stopping with an ``ImageError``.
    limit, seed : int, optional
        Use `limit` images per source: the first ones in sorted order, or a random subset drawn with `seed`.
    exif_transpose : bool
        Apply the EXIF orientation tag (default: pixels as stored, as the reference did).
    use_cache : bool
        Read and write the cache for folder, archive, array and dataset sources.
    hash_content : bool
        Fingerprint files by content (sha256) instead of size, modification and status-change times.
    progress : bool, optional
        A progress bar on stderr; default only when stderr is a terminal.
    cluster : {"local", "ray"}
        Where features are computed (``"ray"``: ``pip install "fidkit[ray]"``, docs/distributed.md).
    ray_address : str, optional
        With ``cluster="ray"``: the cluster (default ``$RAY_ADDRESS``, else a local instance).

    Examples
    --------
    >>> from fidkit.options import RunOptions
    >>> options = RunOptions(device="cpu", limit=1000, seed=0)
    >>> options.replace(batch_size=100).batch_size
    100
    >>> RunOptions(precision="fast", device="cpu")
    Traceback (most recent call last):
    ...
    fidkit.errors.InputError: precision='fast' runs on TensorRT (FP16): pass device='tensorrt' (--device tensorrt), or drop precision='fast' (--precision fast)
    """

    extractor: str = DEFAULT_EXTRACTOR
    weights: Any = None
    device: str = "auto"
    engine: str = "auto"
    precision: str = "exact"
    convention: str = "tf"
    dims: int = 2048
    batch_size: int | None = None
    threads: int | None = None
    workers: int | None = None
    skip_bad: bool = False
    limit: int | None = None
    seed: int | None = None
    exif_transpose: bool = False
    use_cache: bool = True
    hash_content: bool = False
    progress: bool | None = None
    cluster: str = "local"
    ray_address: str | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> RunOptions:
        check_names(kwargs)  # RunOptions(limt=3): InputError with the closest name, not __init__'s TypeError
        self = super().__new__(cls)
        # The fields the caller named, by position or keyword: an explicit default is a choice too (``--dims 2048``
        # against 64-dimensional files), which the values alone cannot tell from no choice (see :meth:`given`).
        # A call naming every field (``dataclasses.replace`` makes one) tells nothing: :meth:`changed` then decides.
        named = frozenset((*_FIELDS[: len(args)], *kwargs))
        object.__setattr__(self, "_named", named if len(named) < len(_FIELDS) else frozenset())
        return self

    def __post_init__(self) -> None:
        from fidkit.extractors import check_shared_options, extractor_entry, refuse_unread_options

        if self.batch_size is not None:
            object.__setattr__(self, "batch_size", check_batch_size(self.batch_size))
        for name, minimum, meaning in (("threads", 1, ""), ("workers", 0, " (0: decode in this process)")):
            value = getattr(self, name)
            if value is not None:
                if not is_count(value, minimum):
                    raise InputError(f"{name} must be an integer >= {minimum}{meaning}, not {value!r}")
                object.__setattr__(self, name, int(value))
        for name in ("skip_bad", "exif_transpose", "use_cache", "hash_content", "progress"):
            value = getattr(self, name)
            if not isinstance(value, bool) and not (name == "progress" and value is None):
                # A string such as "false" is truthy: taking it would turn the option on without a word.
                allowed = "True, False or None" if name == "progress" else "True or False"
                raise InputError(f"{name} must be {allowed}, not {value!r}")
        limit, seed = check_limit_seed(self.limit, self.seed)
        if seed is not None and limit is None:
            # A warning, not an error: the run is still right (every image is used), only the seed does nothing.
            warnings.warn(
                f"seed {seed} without limit has no effect: every image is used; pass limit (--limit N) to draw "
                "a random subset of N images with this seed", FidkitWarning, stacklevel=4,
            )
        object.__setattr__(self, "limit", limit)
        object.__setattr__(self, "seed", seed)
        self._check_cluster()
        # Values no extractor could take are refused whichever is named; then an option the entry does not read
        # (given other than its default); then the extractor checks what only it knows (its devices, engines,
        # precisions, widths and their combinations).
        entry = extractor_entry(self.extractor)
        check_weights(self.weights)
        for name, value in check_shared_options(self).items():
            object.__setattr__(self, name, value)
        refuse_unread_options(entry, self)
        for name, value in entry.check(self).items():
            object.__setattr__(self, name, value)

    def _check_cluster(self) -> None:
        if self.cluster not in CLUSTERS:
            raise InputError(f"cluster must be one of {', '.join(map(repr, CLUSTERS))}, not {self.cluster!r}")
        if self.ray_address is not None:
            if self.cluster != "ray":
                raise InputError(
                    f"ray_address={self.ray_address!r} is only used with cluster='ray'; pass cluster='ray' too"
                )
            check_ray_address(self.ray_address)

    @property
    def read(self) -> ReadOptions:
        """The settings of how sources read their images, as the one object every opener takes."""
        from fidkit.sources.base import ReadOptions

        return ReadOptions(
            limit=self.limit, seed=self.seed, skip_bad=self.skip_bad, exif_transpose=self.exif_transpose,
            workers=self.workers,
        )

    def changed(self) -> dict[str, Any]:
        """The fields whose value is not their default (a default passed explicitly is not among them: :meth:`given`
        has it)."""
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if getattr(self, field.name) != field.default
        }

    def given(self) -> dict[str, Any]:
        """The fields the caller gave: those named when the object was made or in :meth:`replace`, even with their
        default value (``RunOptions(dims=2048)``, ``--dims 2048``), and every one whose value is not its default."""
        named = getattr(self, "_named", frozenset())  # absent only in an object unpickled from an older fidkit
        changed = self.changed()
        return {name: getattr(self, name) for name in _FIELDS if name in named or name in changed}

    def replace(self, **changes: Any) -> RunOptions:
        """A copy with `changes` applied (and checked again); an unknown name is an ``InputError``. The copy was given
        what this object was given, and `changes`."""
        check_names(changes)
        replaced = dataclasses.replace(self, **changes)  # names every field: what was given is set below
        object.__setattr__(replaced, "_named", frozenset((*self.given(), *changes)))
        return replaced

    def to_dict(self) -> dict[str, Any]:
        """The options as plain values (the weights as a string), e.g. for ``--json``."""
        values = dataclasses.asdict(self)
        if values["weights"] is not None:
            values["weights"] = str(getattr(self.weights, "path", self.weights))
        return values


_FIELDS = tuple(field.name for field in dataclasses.fields(RunOptions))
# help(), IDEs and inspect.signature would show __new__'s (*args, **kwargs): show the fields.
RunOptions.__signature__ = inspect.signature(RunOptions.__init__).replace(  # type: ignore[attr-defined]
    parameters=list(inspect.signature(RunOptions.__init__).parameters.values())[1:]
)


def check_names(
    names: Any, *, function: str | None = None, own: Sequence[str] = (), elsewhere: Mapping[str, str] | None = None
) -> None:
    """Refuse `names` that are neither fields of :class:`RunOptions` nor keywords of the API function `function` (its
    own, `own`, as ``compute_fid``'s ``metrics``).

    The message lists both, so that the fix of ``compute_fid(a, b, metric="kid")`` is on the screen, not only the
    options; it ends with the closest known name (a misspelling), or with the function that does take a name
    (`elsewhere`: name -> function, ``compute_stats(metrics="kid")``: a keyword of ``compute_fid``).
    """
    own = tuple(name for name in own if name not in _FIELDS)  # compute_stats(extractor=) is also an option
    known = (*own, *_FIELDS)
    unknown = sorted(set(names) - set(known))
    if not unknown:
        return
    message = f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
    if own:
        message += f"{function}'s own keywords are {', '.join(own)}, and "
    message += "the options are " + ", ".join(_FIELDS)
    for name in unknown:
        if elsewhere and name in elsewhere:
            message += f"; {name} is a keyword of {elsewhere[name]}, not of {function}"
            continue
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            message += f"; did you mean {close[0]}?"
    raise InputError(message)


def _stated(extractor: Any, name: str) -> Any:
    """What a built extractor states about the network option `name`: an attribute of that name, else its
    metadata's field; ``dims`` is its ``feature_dim``; None where it states nothing."""
    from fidkit.extractors import declared_dim, extractor_metadata

    if name == "dims":
        return declared_dim(extractor)
    value = getattr(extractor, "weights_path" if name == "weights" else name, None)
    if value is None and name not in ("weights", "device", "threads"):
        value = extractor_metadata(extractor).get(name)
    if name == "precision" and isinstance(value, str):
        value = value.removeprefix("tensorrt-")  # recorded apart for TensorRT; asked for without the prefix
    return value


def _agrees(extractor: Any, name: str, value: Any, stated: Any) -> bool:
    """Whether the option `name` = `value`, given with an extractor object, says what the object does."""
    from fidkit._devices import parse_device
    from fidkit._fs import sha256_file

    if name in ("device", "engine") and value == "auto":
        return True  # "choose for me": the object has chosen
    if stated is None:
        return False
    if name == "device":
        asked, built = parse_device(value), parse_device(str(stated))
        if built.kind != "auto":
            return str(asked) == str(built)
        provider = str(getattr(extractor, "provider", "")).lower()  # where "auto" landed
        ran = "tensorrt" if "tensorrt" in provider else "cuda" if "cuda" in provider else "cpu"
        return asked.kind == ran
    if name == "weights":
        asked_path = os.path.realpath(os.path.expanduser(os.fspath(getattr(value, "path", value))))
        if asked_path == os.path.realpath(os.fspath(stated)):
            return True
        sha = getattr(extractor, "weights_sha256", None)
        try:
            return sha is not None and sha256_file(asked_path) == str(sha)
        except OSError:
            return False
    if name in ("dims", "threads"):
        value = int(value.strip()) if isinstance(value, str) and value.strip().isdigit() else value
        return is_count(value, 0) and int(value) == int(stated)
    return str(value) == str(stated)


def _shown(value: Any) -> str:
    """A value for a message: a string or a number as Python writes it, a path as its text."""
    return repr(value) if isinstance(value, (str, numbers.Integral)) else repr(str(value))


def _takes_parameter(kind: type, name: str) -> bool | None:
    """Whether ``kind(...)`` takes a parameter `name` (or any keyword); None where its signature cannot be read."""
    try:
        parameters = inspect.signature(kind).parameters
    except (TypeError, ValueError):
        return None
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _rebuild_advice(extractor: Any, name: str, value: Any) -> str:
    """The second fix of a refused option `name` = `value` beside an extractor object: an object built with it, as
    it can really be built. For fidkit's own network classes, the class that runs it
    (:func:`fidkit.extractors.network_class_for`), or what stops every one; for another class, its constructor,
    if it takes such a parameter."""
    from fidkit.extractors import network_class_for

    kind = type(extractor).__name__
    shown = f"{name}={_shown(value)}"
    settings = {option: _stated(extractor, option) for option in ("device", "convention", "dims", "precision", "threads")}
    found = network_class_for(extractor, name, value, settings)
    if found is None:
        if _takes_parameter(type(extractor), name) is False:
            return f" ({kind}() takes no {name} parameter: the object decides it)"
        return f", or build the object with it (e.g. {kind}(..., {shown})) and pass that"
    label, engine, problem = found
    if label is None:
        return f" (no network object can be built with {shown} here: {problem})"
    if name == "engine":
        return (
            f", or build a {label}(...) (the {engine} engine's class; the same weights, device, convention and dims "
            "parameters) and pass that"
        )
    return f", or build {label}(..., {shown}) and pass that"


def given_options(options: RunOptions | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The options a call gave explicitly: its keywords, and the fields its `options` object was given
    (:meth:`RunOptions.given`: named when it was made, even with their default value, or not at their default)."""
    given = {name: value for name, value in (overrides or {}).items() if name in _FIELDS}
    named = options.given() if options is not None else {}
    return {**given, **{name: value for name, value in named.items() if name not in given}}


def check_options_for_object(extractor: Any, options: RunOptions | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """Refuse a network option given with an extractor object that does not say what the object does; return the
    `overrides` to make the run's options from.

    An object is built already: ``weights``, ``convention``, ``dims``, ``device``, ``engine``, ``precision`` and
    ``threads`` cannot change it. Given explicitly (a keyword, or a field of `options` other than its default),
    each must agree with what the object states (its attribute or metadata: ``FeatureExtractor`` states them all)
    or it is an ``InputError`` naming the option and the fix; otherwise the run would print the object's numbers
    as if the option had applied. ``"auto"`` device and engine agree with anything. Called before the options
    are made, so that what is refused is what the caller gave, not a consequence of it. The keywords that agree
    are left out of the returned overrides: they change nothing, and the built-in network's rules (its widths,
    its devices) are not the object's.
    """
    from fidkit.extractors import NETWORK_OPTIONS, check_extractor_object

    if extractor is None or isinstance(extractor, str):
        return overrides
    check_extractor_object(extractor)
    given = given_options(options, overrides)
    kind = type(extractor).__name__
    if given.get("extractor", DEFAULT_EXTRACTOR) != DEFAULT_EXTRACTOR:
        raise InputError(
            f"extractor={given['extractor']!r} in the options and an extractor object ({kind}) both name the "
            "extractor: pass one of them"
        )
    for name in NETWORK_OPTIONS:
        if name not in given or given[name] is None:
            continue
        if name == "weights":
            check_weights(given[name])  # RunOptions' check, which this path runs before: not a path is not compared
        value, stated = given[name], _stated(extractor, name)
        if _agrees(extractor, name, value, stated):
            continue
        built = f"it was built with {name} {_shown(stated)}" if stated is not None else f"it states no {name}"
        raise InputError(
            f"{name}={_shown(value)} cannot apply to the extractor object {kind}, which runs as it was built "
            f"({built}): drop {name}= to use the object as it is{_rebuild_advice(extractor, name, value)}"
        )
    return {name: value for name, value in overrides.items() if name not in NETWORK_OPTIONS}


def run_options(options: RunOptions | None = None, /, **overrides: Any) -> RunOptions:
    """`options` (default ``RunOptions()``) with keyword `overrides`: how every API function reads its options.

    ``compute_fid(a, b, device="cpu")`` and ``compute_fid(a, b, options=RunOptions(device="cpu"))`` are the
    same call; given both, the keywords win.
    """
    if options is not None and not isinstance(options, RunOptions):
        raise InputError(f"options must be a fidkit.RunOptions, not {type(options).__name__}")
    check_names(overrides)
    if options is None:
        return RunOptions(**overrides)
    return options.replace(**overrides) if overrides else options
