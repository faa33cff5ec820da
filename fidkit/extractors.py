"""Feature extractors: the interface every one of them has, the registry that makes them, their identity.

An extractor turns uint8 images into float32 feature rows. Anything with this shape is one
(:class:`Extractor`, a ``typing.Protocol``): ``feature_dim``, ``batch_size``, ``__call__`` on a uint8
``(B, H, W, 3)`` batch returning ``(B, feature_dim)`` float32, ``metadata()`` (what produced the features,
recorded in statistics and feature files) and, optionally, ``identity()``.

The **identity** (:class:`ExtractorIdentity`) is what decides the numbers: the network, its weights' sha256,
the resize, the engine, the arithmetic. It names cache entries and is compared between the two sides of a
distance. A registered extractor states its identity *without being built* (:func:`identity_for`), so a
run whose inputs are all cached never loads a network.

The **registry** maps names to :class:`ExtractorEntry` objects: how to check options for it, its identity,
how to build it. ``"inception-2015"`` (the FID network, :mod:`fidkit.inception`) is built in;
:func:`register_extractor` adds others. Everything that needs an extractor (the pipeline, the Ray actors,
:class:`fidkit.FID`, the trainer) makes it here, through :func:`build_extractor`, and nowhere else.

Examples
--------
A new extractor in a few lines (here a toy: the mean colour of each image):

>>> import numpy as np
>>> from fidkit.extractors import ExtractorEntry, register_extractor
>>> class MeanColour:
...     feature_dim, batch_size = 3, 64
...     def __call__(self, images):
...         return np.asarray(images, dtype=np.float32).mean(axis=(1, 2))
...     def metadata(self):
...         return {"feature_extractor": "mean-colour", "weights_sha256": "none", "resize_mode": "none"}
>>> register_extractor(ExtractorEntry(
...     name="mean-colour", description="the mean RGB colour (an example)",
...     build=lambda options: MeanColour(),
...     identity=lambda options: {"weights_sha256": "none", "resize_mode": "none"},
... ), replace=True)
>>> import fidkit
>>> images = np.random.default_rng(0).integers(0, 256, size=(8, 4, 4, 3), dtype=np.uint8)
>>> fidkit.compute_stats(images, extractor="mean-colour", use_cache=False).dim
3
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from fidkit._validate import is_count
from fidkit.errors import InputError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np
    from numpy.typing import NDArray

    from fidkit.options import RunOptions

__all__ = [
    "NETWORK_OPTIONS",
    "check_shared_options",
    "refuse_unread_options",
    "Extractor",
    "ExtractorEntry",
    "ExtractorIdentity",
    "LazyExtractor",
    "register_extractor",
    "unregister_extractor",
    "extractor_entry",
    "extractor_names",
    "build_extractor",
    "identity_for",
    "identity_of",
    "cacheable_object",
    "check_extractor_object",
    "declared_dim",
    "declared_batch_size",
    "extractor_metadata",
]

logger = logging.getLogger(__name__)


@runtime_checkable
class Extractor(Protocol):
    """What every feature extractor offers (the built-in ones, and a user's own object).

    ``__call__`` and ``metadata()`` are required; ``metadata()`` returns a dict (string keys) of what produced
    the features, recorded in statistics and feature files. ``feature_dim`` and ``batch_size`` are positive
    integers where given; without ``feature_dim`` the width is taken from the first batch (every batch is still
    checked against it) and the statistics are not cached; without ``batch_size`` batches are of ``batch_size``
    (the option) or 50. An object that breaks this is an ``InputError`` naming the part, when it is passed.

    **Caching a user's object** (passed as ``extractor=``, not registered): its statistics are cached only when it
    states a content identity, since nothing else tells two configurations of one class apart (two channel
    selections, two layers of one network would otherwise be served each other's statistics):

    - ``identity()`` returning an :class:`ExtractorIdentity` or a dict of identity fields: the object answers
      for it naming everything that changes its numbers; or
    - ``metadata()`` with ``weights_sha256`` the 64-hex-digit sha256 of its weights and ``resize_mode``, and a
      ``feature_dim``: its identity is then every metadata field but where it ran (``provider``, ``device``, ...),
      its class's qualified name and ``feature_dim``; the metadata must name whatever else changes its numbers.
      (Metadata that names a registered extractor, as fidkit's ``FeatureExtractor`` does, is that extractor's
      identity: such an object shares the cache with the extractor named.)

    Anything else (``weights_sha256`` ``"none"`` or a name, no ``resize_mode``, no ``feature_dim``) runs every time,
    uncached; register it under a name (:func:`register_extractor`) to cache it under that name. A cache entry whose width differs from the
    extractor's ``feature_dim`` is never served, whatever its key.

    Optional: ``on_gpu`` (bool), True where the network runs on a GPU: the extraction loop then hands the
    features to the statistics in a second thread while the next batch runs (:func:`fidkit.extraction.extract`).
    The extractor itself is always called from the calling thread.
    """

    feature_dim: int
    batch_size: int

    def __call__(self, images: Any) -> NDArray[np.float32]:
        """Features of a uint8 ``(B, H, W, 3)`` batch (any size): ``(B, feature_dim)`` float32."""

    def metadata(self) -> dict[str, str]:
        """What produced the features: recorded in statistics and feature files, shown in reports."""


#: The options that choose or build a network, as opposed to how inputs are read and the run is organised. A
#: registered entry reads those it declares (:attr:`ExtractorEntry.options`); an extractor object was built already.
NETWORK_OPTIONS = ("weights", "convention", "dims", "device", "engine", "precision", "threads")

#: Metadata keys that say *where* or *how fast* features were made, not *what* they are: not part of the identity.
_NOT_IDENTITY = frozenset({"provider", "graph_sha256", "device", "batch_size"})


@dataclass(frozen=True)
class ExtractorIdentity:
    """What decides an extractor's features: its name and the fields that change the numbers.

    Two extractors with equal identities give the same features (to the rounding their engines document), so
    their statistics share cache entries; different identities never do.
    """

    name: str
    fields: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, name: str, fields: Mapping[str, Any]) -> ExtractorIdentity:
        """The identity named `name` with `fields` (a field ``extractor`` repeats the name and is dropped)."""
        return cls(
            str(name),
            tuple(sorted((str(k), str(v)) for k, v in fields.items() if v is not None and k != "extractor")),
        )

    def get(self, key: str, default: str = "") -> str:
        return dict(self.fields).get(key, default)

    @property
    def weights_sha256(self) -> str:
        return self.get("weights_sha256")

    @property
    def engine(self) -> str:
        return self.get("engine")

    @property
    def precision(self) -> str:
        return self.get("precision", "exact")

    def as_dict(self) -> dict[str, str]:
        """``{"extractor": name, **fields}``: what the cache key hashes."""
        return {"extractor": self.name, **dict(self.fields)}


@dataclass(frozen=True)
class ExtractorEntry:
    """How the registry makes one named extractor.

    Attributes
    ----------
    name : str
        The name users pass (``extractor="..."``, ``--extractor``).
    description : str
        One line for listings and error messages.
    build : callable
        ``build(options) -> Extractor``: the extractor for these :class:`~fidkit.options.RunOptions`.
    identity : callable
        ``identity(options) -> dict``: its identity fields, known without building it (cheap: no session, no
        export). Must equal what the built extractor reports (:func:`identity_of`).
    check : callable
        ``check(options) -> dict``: refuses options this extractor cannot honour (``InputError``) and returns
        normalised values to store back (e.g. a canonical device string); default: nothing to check.
    cluster_ready : bool
        Whether Ray actors can build it by name (the entry exists on every node): the built-in ones.
    probe : callable
        ``probe(options) -> None``: refuses at once (a ``FidkitError``) a device this machine cannot run, without
        building anything; called when a run or a metric starts, so that an impossible explicit GPU fails then,
        cached sides or not, and not hours later at the first batch. Default: nothing to probe.
    options : tuple of str
        The network options (of :data:`NETWORK_OPTIONS`: ``weights``, ``convention``, ``dims``, ``device``,
        ``engine``, ``precision``, ``threads``) that its `build` and `identity` read, and its `check` validates
        (the shared check holds them to the built-in network's names only where the entry does not read them).
        Any other one given with a value other than its default is refused when the options are made: it would
        change nothing, and the statistics would claim it. Default: none (the built-in network reads them all).
    feature_dim : callable
        ``feature_dim(options) -> int or None``: the width of the features it builds for these options, known
        without building it (cheap). A cache entry of another width is not served; None (the default): unknown
        until it is built, and the entry's width is then checked against the built extractor's.
    """

    name: str
    description: str
    build: Callable[[Any], Any]
    identity: Callable[[Any], Mapping[str, Any]]
    check: Callable[[Any], Mapping[str, Any]] = field(default=lambda options: {})
    cluster_ready: bool = False
    probe: Callable[[Any], None] = field(default=lambda options: None)
    options: tuple[str, ...] = ()
    feature_dim: Callable[[Any], int | None] = field(default=lambda options: None)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.options) - set(NETWORK_OPTIONS))
        if isinstance(self.options, str) or unknown:
            raise InputError(
                f"ExtractorEntry {self.name!r}: options must be a tuple of the network options it reads "
                f"({', '.join(NETWORK_OPTIONS)}), not {self.options!r}"
            )


_REGISTRY: dict[str, ExtractorEntry] = {}
#: The built-in network's name (:data:`fidkit.options.DEFAULT_EXTRACTOR`; the options import this module).
_BUILTIN = "inception-2015"


def _builtin_entries() -> dict[str, ExtractorEntry]:
    """The extractors fidkit ships, imported only when first asked for (their modules are light, their
    runtimes load when they are built)."""
    from fidkit.inception import select

    return {
        "inception-2015": ExtractorEntry(
            name="inception-2015",
            description="Inception-v3 of TensorFlow's 2015-12-05 graph, pool_3 (2048-d): the FID network",
            build=select.build_for_options,
            identity=select.identity_for_options,
            check=select.check_options,
            cluster_ready=True,
            probe=select.probe_device,
            options=NETWORK_OPTIONS,
            feature_dim=lambda options: int(options.dims),  # pool_3 or the layer of pytorch-fid's --dims
        )
    }


def _registry() -> dict[str, ExtractorEntry]:
    if not _REGISTRY:
        _REGISTRY.update(_builtin_entries())
    return _REGISTRY


def register_extractor(entry: ExtractorEntry, *, replace: bool = False) -> None:
    """Add `entry` to the registry, so that ``extractor=entry.name`` builds it everywhere (the CLI's
    ``--extractor``, :func:`fidkit.compute_fid`, :class:`fidkit.FID`).

    Parameters
    ----------
    entry : ExtractorEntry
        The name, how to build the extractor and what it states about itself before it is built.
    replace : bool, default False
        Replace an entry of the same name; without it, an existing name is an ``InputError``.
    """
    registry = _registry()
    if not isinstance(entry, ExtractorEntry):
        raise InputError(f"register_extractor takes an ExtractorEntry, not {type(entry).__name__}")
    if entry.name in registry and not replace:
        raise InputError(f"an extractor named {entry.name!r} is registered already; pass replace=True to replace it")
    registry[entry.name] = entry


def unregister_extractor(name: str) -> None:
    """Remove the entry `name` (a name that is not registered is an ``InputError``)."""
    extractor_entry(name)
    del _registry()[name]


def extractor_names() -> list[str]:
    """The registered extractor names, built-in first."""
    return list(_registry())


def extractor_entry(name: Any) -> ExtractorEntry:
    """The entry registered as `name`; an ``InputError`` listing the names otherwise."""
    registry = _registry()
    if not isinstance(name, str) or name not in registry:
        raise InputError(f"unknown extractor {name!r}; the registered extractors are {', '.join(registry)}")
    return registry[name]


def check_shared_options(options: RunOptions) -> dict[str, Any]:
    """Refuse values of the network options that no extractor could take, whichever is named: an unknown device
    string, a feature width that is not a positive integer. Returns the canonical device and dims to store back.

    ``engine``, ``precision`` and ``convention`` have the built-in network's names (``onnxruntime``, ``bf16``,
    ``clean``, ...): a value is held to them only where the built-in network reads it, or where the entry named
    does not read the option (an unknown value is then named as such, before :func:`refuse_unread_options`). An
    entry that declares the option (:attr:`ExtractorEntry.options`) reads its own values and refuses them in its
    `check`. What only one network can run (a width it does not have, a precision on a device) is its `check`.
    """
    from fidkit._devices import parse_device
    from fidkit.inception import select
    from fidkit.inception.conventions import CONVENTIONS
    from fidkit.inception.providers import PRECISIONS

    entry = extractor_entry(options.extractor)

    def inception_vocabulary(name: str) -> bool:
        # The built-in network's check is the Inception's (also under a stand-in registered in its place).
        return name not in entry.options or entry.check is select.check_options

    device = parse_device(options.device)
    if inception_vocabulary("engine") and options.engine not in select.ENGINES:
        raise InputError(f"engine must be one of {', '.join(select.ENGINES)}, not {options.engine!r}")
    if inception_vocabulary("precision") and options.precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, not {options.precision!r}")
    if inception_vocabulary("convention") and options.convention not in CONVENTIONS:
        raise InputError(
            f"unknown preprocessing convention {options.convention!r}; use one of {', '.join(map(repr, CONVENTIONS))}"
        )
    dims = options.dims
    if isinstance(dims, str) and dims.strip().isdigit():
        dims = int(dims.strip())
    if not is_count(dims):
        raise InputError(f"dims must be a positive integer (the width of the features), not {options.dims!r}")
    return {"device": str(device), "dims": int(dims)}


def refuse_unread_options(entry: ExtractorEntry, options: RunOptions) -> None:
    """Refuse a network option `entry` does not read (:attr:`ExtractorEntry.options`) given with a value other than
    its default: the run would ignore it without a word, and its statistics look as if it had applied."""
    changed = options.changed()
    for name in NETWORK_OPTIONS:
        if name in entry.options or name not in changed:
            continue
        value = changed[name]
        reads = ", ".join(entry.options) if entry.options else "none of them"
        raise InputError(
            f"{name}={value!r} does not apply to the extractor {entry.name!r}: of the network options "
            f"({', '.join(NETWORK_OPTIONS)}) it reads {reads}; drop {name} (--{name}), or, if its build reads "
            f"{name}, register it with ExtractorEntry(..., options=({name!r}, ...))"
        )


def identity_for(options: RunOptions) -> ExtractorIdentity:
    """The identity of the extractor `options` would build, without building it."""
    entry = extractor_entry(options.extractor)
    return ExtractorIdentity.of(entry.name, entry.identity(options))


def build_extractor(options: RunOptions) -> Any:
    """Build the extractor `options` names: the one place the package makes one."""
    return extractor_entry(options.extractor).build(options)


_PROTOCOL = "the Extractor protocol, fidkit.extractors.Extractor"


def _declared(extractor: Any, name: str) -> int | None:
    """`extractor`'s ``feature_dim`` or ``batch_size`` as an int, None where it declares none (absent or None)."""
    value = getattr(extractor, name, None)
    if value is None:
        return None
    if not is_count(value):
        meaning = "the width of its feature rows" if name == "feature_dim" else "the images it takes per call"
        raise InputError(
            f"{type(extractor).__name__}.{name} must be a positive integer ({meaning}) or absent, not {value!r} "
            f"({_PROTOCOL})"
        )
    return int(value)


def declared_dim(extractor: Any) -> int | None:
    """The feature width `extractor` declares (``feature_dim``), None where it declares none."""
    return _declared(extractor, "feature_dim")


def declared_batch_size(extractor: Any) -> int | None:
    """The images per call `extractor` declares (``batch_size``), None where it declares none."""
    return _declared(extractor, "batch_size")


def extractor_metadata(extractor: Any) -> dict[str, Any]:
    """``extractor.metadata()`` as a dict with string keys and no None values; an ``InputError`` naming the method
    where it is missing or returns something else than a mapping."""
    method = getattr(extractor, "metadata", None)
    if not callable(method):
        raise InputError(
            f"{type(extractor).__name__} has no metadata() method: an extractor object must have one returning a "
            f"dict of what produced its features, e.g. {{'weights_sha256': ..., 'resize_mode': ...}} ({_PROTOCOL})"
        )
    stated = method()
    if not isinstance(stated, Mapping):
        raise InputError(
            f"{type(extractor).__name__}.metadata() returned {type(stated).__name__} {stated!r:.80}, not a dict of "
            f"what produced its features ({_PROTOCOL})"
        )
    return {str(k): v for k, v in stated.items() if v is not None}


def check_extractor_object(extractor: Any) -> None:
    """Refuse, when it is passed, an object that is not an extractor: not callable, no ``metadata()`` (or one that
    returns no dict), a ``feature_dim`` or ``batch_size`` that is not a positive integer. The same rule for
    :func:`fidkit.compute_stats` and its kin and for :class:`fidkit.FID`; a missing ``feature_dim`` is allowed in
    both (the rows are checked against the first batch's width)."""
    if not callable(extractor):
        raise InputError(
            f"extractor must be a registered name or an extractor object (callable on a uint8 batch, with "
            f"metadata(): {_PROTOCOL}), not {extractor!r:.80}"
        )
    extractor_metadata(extractor)
    declared_dim(extractor)
    declared_batch_size(extractor)


def _stated_identity(extractor: Any) -> ExtractorIdentity | None:
    """What an object's own ``identity()`` states (an :class:`ExtractorIdentity` or a dict of fields), or None."""
    own = getattr(extractor, "identity", None)
    if not callable(own):
        return None
    stated = own()
    if isinstance(stated, ExtractorIdentity):
        return stated
    if isinstance(stated, Mapping):
        fields = dict(stated)
        return ExtractorIdentity.of(str(fields.get("extractor") or type(extractor).__name__), fields)
    return None


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower())


#: The metadata fields an object's identity cannot do without: the network's weights and the resize before it.
_REQUIRED_FIELDS = ("weights_sha256", "resize_mode")


def _identity_metadata(extractor: Any) -> dict[str, Any]:
    """An object's metadata, with the required fields it states as attributes instead (``weights_sha256``)."""
    metadata = extractor_metadata(extractor)
    for required in _REQUIRED_FIELDS:
        if required not in metadata and getattr(extractor, required, None) is not None:
            metadata[required] = getattr(extractor, required)
    return metadata


def identity_of(extractor: Any) -> ExtractorIdentity:
    """The identity an extractor object states: ``identity()`` when it has one, else its metadata.

    From the metadata: ``weights_sha256`` and ``resize_mode`` are required (an ``InputError`` without them: such an
    object has no identity, and :func:`cacheable_object` runs it uncached); every other field except where it ran (provider, device) is identity too, and so are the
    class's qualified name and ``feature_dim``: two objects of different classes or widths never share an identity.
    An object whose metadata names a registered extractor (``"extractor": "inception-2015"``, as fidkit's own
    engines and a wrapper of one do) states that extractor's identity fields, which name the layer: it shares the
    cache with the extractor named. Whether an identity may key the cache is :func:`cacheable_object`'s question.
    """
    stated = _stated_identity(extractor)
    if stated is not None:
        return stated
    metadata = _identity_metadata(extractor)
    for required in _REQUIRED_FIELDS:
        if required not in metadata:
            raise InputError(
                f"{type(extractor).__name__}.metadata() must name {required!r} for the object to state an identity "
                "(what names its statistics in the cache); without one it runs uncached: name it in metadata(), or "
                "give the object an identity() method"
            )
    name = str(metadata.pop("extractor", "") or type(extractor).__name__)
    fields = {k: v for k, v in metadata.items() if k not in _NOT_IDENTITY}
    if name not in _registry():
        # Nothing but the metadata tells two configurations of one class apart: the class and the width at least.
        kind = type(extractor)
        fields["class"] = f"{kind.__module__}.{kind.__qualname__}"
        dim = declared_dim(extractor)
        if dim is not None:
            fields["feature_dim"] = dim
    return ExtractorIdentity.of(name, fields)


def cacheable_object(extractor: Any) -> str | None:
    """Why an extractor object's statistics cannot be cached, or None when they can (the rule of :class:`Extractor`):
    it states its own ``identity()``, or a ``weights_sha256`` that is a sha256, a ``resize_mode`` and a
    ``feature_dim``. Exactly the objects :func:`identity_of` can name are cacheable; the others run uncached."""
    if _stated_identity(extractor) is not None:
        return None
    metadata = _identity_metadata(extractor)
    stated = metadata.get("weights_sha256")
    if not _is_sha256(stated):
        return f"its metadata() names no weights by content (weights_sha256 {stated!r} is no sha256)"
    if "resize_mode" not in metadata:
        return "its metadata() names no resize_mode (the resize before the network, part of what the cache key names)"
    if declared_dim(extractor) is None:
        return "it declares no feature_dim"
    return None


def network_class_for(
    extractor: Any, name: str, value: Any, settings: Mapping[str, Any]
) -> tuple[str | None, str | None, str | None] | None:
    """Which of fidkit's network classes can be built with the option `name` = `value`, for an object of one of them
    (:func:`fidkit.inception.select.class_for_option`); None for an object of another class."""
    from fidkit.inception.select import class_for_option

    return class_for_option(extractor, name, value, settings)


class LazyExtractor:
    """The extractor of a run, built on first use; its identity known before that.

    Building one loads weights and starts a runtime (seconds), so a run whose inputs are statistics files or
    cache hits never builds it: the cache key needs only :meth:`identity`.

    Parameters
    ----------
    options : RunOptions
        Which extractor, and how it is built.
    given : Extractor, optional
        A ready extractor (shared across calls, or a user's own); then `options` only says how to run it.
    """

    def __init__(self, options: RunOptions, given: Any = None) -> None:
        if given is not None:
            check_extractor_object(given)
        self.options = options
        self.given = given
        self._built = given
        self._identity: ExtractorIdentity | None = None

    @property
    def built(self) -> bool:
        return self._built is not None

    def identity(self) -> ExtractorIdentity:
        """What names the features in the cache, known before building.

        A given extractor states its own (:func:`identity_of`). A registered one is named by its entry
        (:func:`identity_for`), before and after it is built, with one exception: the engine that really runs
        when it is not the one expected (``engine="auto"`` on a GPU that only torch can use), so that its
        statistics are stored apart.
        """
        if self.given is not None:
            return identity_of(self.given)
        if self._identity is None:
            self._identity = identity_for(self.options)
        if self._built is not None:
            ran = str(extractor_metadata(self._built).get("engine", "") or "")
            if ran and self._identity.engine and ran != self._identity.engine:
                return ExtractorIdentity.of(self._identity.name, {**dict(self._identity.fields), "engine": ran})
        return self._identity

    def probe(self) -> None:
        """Refuse now a device the extractor could not run on here (nothing to probe for a given extractor)."""
        if self.given is None:
            extractor_entry(self.options.extractor).probe(self.options)

    def get(self) -> Any:
        """The extractor, built on the first call."""
        if self._built is None:
            self._built = build_extractor(self.options)
        return self._built

    def cache_refusal(self) -> str | None:
        """Why this run's statistics cannot be cached (a given object that states no content identity:
        :func:`cacheable_object`), or None. A registered extractor is cached under its entry's identity."""
        return None if self.given is None else cacheable_object(self.given)

    def feature_dim(self) -> int | None:
        """The width of the features, where known without building: the given or built extractor's
        ``feature_dim``, else what the registry entry in force states for the options
        (:attr:`ExtractorEntry.feature_dim`; the built-in network's ``dims``); None where neither says.

        Never taken from the name alone: an entry registered (or replaced, :func:`fidkit.testing.replaced_extractor`)
        under the built-in name may make another width, and a width assumed wrongly would refuse every cache entry.
        """
        if self._built is not None:
            return declared_dim(self._built)
        entry = extractor_entry(self.options.extractor)
        width = entry.feature_dim(self.options)
        if width is None:
            return None
        if not is_count(width):
            raise InputError(
                f"ExtractorEntry {entry.name!r}: feature_dim(options) must return a positive integer (the width of "
                f"its features) or None (unknown before it is built), not {width!r}"
            )
        return int(width)

    def batch_size(self) -> int:
        """Images per call of the extractor, as they run: its own ``batch_size``, or the option where that is
        smaller (an extractor built already does not run larger batches than it was built for: fidkit's engines
        split them); the option, else 50, for an extractor that declares none."""
        own = declared_batch_size(self.get())
        if own is None:
            return int(self.options.batch_size or 50)
        return min(own, int(self.options.batch_size)) if self.options.batch_size else own
