"""The state of a :class:`~fidkit.metric.FID` that travels: its sides, and extractors that survive copy and pickle."""

from __future__ import annotations

import copy
import logging
import os
import pickle
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from fidkit.errors import FidkitError, InputError, WeightsError
from fidkit.extractors import build_extractor
from fidkit.features import FeatureRows
from fidkit.options import RunOptions
from fidkit.stats import Stats, StatsAccumulator
from fidkit.statsfile import IDENTITY_KEYS

logger = logging.getLogger(__name__)


class _Side:
    """One side's running state: the accumulator, a change counter, and the statistics made from it.

    Thread-safe: every change of the accumulator, the counter and the metadata happens under `lock`, and
    :meth:`snapshot` reads them together, so that updates from several threads are all counted, once.
    """

    def __init__(self, label: str, outputs: tuple[str, ...] | None = None) -> None:
        self.label = label
        #: What the side keeps besides its accumulator (rows, logits, spatial) for the metrics beyond FID.
        self.outputs = outputs
        self.lock = threading.RLock()
        self.version = 0  # bumped by every update and reset
        self.stats_serial = 0  # bumped whenever `stats` is rebuilt (locally or from every rank)
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.accumulator = StatsAccumulator()
            self.rows = FeatureRows(outputs=self.outputs) if self.outputs else None
            #: Every rank's kept rows, gathered by the last distributed compute() (None on one process).
            self.all_rows: Any = None
            self.metadata: dict[str, Any] = {}
            self.network_seconds = 0.0
            self.stats: Stats | None = None
            self.stats_version = -1  # the version `stats` was made at
            self.version += 1

    # StatsAccumulator's interface, as extraction.extract calls it.
    def update(self, features: np.ndarray) -> None:
        with self.lock:
            if self.rows is not None and self.rows.outputs != ("features",):
                # Checked before anything changes: the statistics and the kept rows stay in step.
                raise InputError(
                    f"the {self.label} side keeps {', '.join(self.rows.outputs)} for the asked metrics; features "
                    "alone cannot feed it: use update(images)"
                )
            self.accumulator.update(features)
            if self.rows is not None:
                self.rows.update_outputs({"features": features})
            self.version += 1

    def add(self, batches: list[dict[str, np.ndarray]], network_seconds: float, metadata: dict[str, Any]) -> None:
        """Add the outputs of one :meth:`FID.update` (all its batches, or none of them) and what made them."""
        with self.lock:
            wanted = self.rows.outputs if self.rows is not None else ("features",)
            if any(name not in outputs for outputs in batches for name in wanted):
                raise InputError(f"the {self.label} side needs the outputs {', '.join(wanted)} of every batch")
            self.check_extractor(metadata)  # under the lock: the first update of another thread counts too
            for outputs in batches:
                self.accumulator.update(outputs["features"])
                if self.rows is not None:
                    self.rows.update_outputs(outputs)
            self.version += 1
            self.network_seconds += network_seconds
            if not self.metadata:
                self.metadata = dict(metadata)

    def check_extractor(self, metadata: dict[str, Any]) -> None:
        """Refuse features from an extractor whose identity differs from the one that made the side's features.

        The side records its extractor's metadata at its first update (the report names it); an extractor rebuilt
        later (an unpickled FID builds its network again from ``$FIDKIT_WEIGHTS``, which may name other weights
        by then) must be the same feature space, or the statistics would mix two networks under the first one's
        name. The keys are those the ranks of a distributed compute() compare; a key only one of the two names
        is not compared (as there). A few string comparisons per update.
        """
        with self.lock:
            if not self.metadata:
                return
            differing = [
                key for key in IDENTITY_KEYS
                if key in self.metadata and key in metadata and str(self.metadata[key]) != str(metadata[key])
            ]
            if not differing:
                return
            shown = "; ".join(
                f"{key}: the side holds {_short(self.metadata[key])}, this update's extractor has "
                f"{_short(metadata[key])}"
                for key in differing
            )
            if self.label == "real":
                restart = "make a new FID for the new extractor (reset() keeps the real side)"
            else:
                restart = "call reset() first to start the generated side again with this extractor"
            raise InputError(
                f"FID.update(): the {self.label} side's features so far come from another feature extractor than "
                f"this update's ({shown}); mixing them would give a wrong FID under the first one's name. Point "
                "FIDKIT_WEIGHTS (or weights=) at the weights the side was started with (an unpickled FID builds "
                f"its network again from them), or {restart}"
            )

    def set_stats(self, stats: Stats, version: int) -> None:
        with self.lock:
            self.stats = stats
            self.stats_version = version
            self.stats_serial += 1

    def __getstate__(self) -> dict[str, Any]:
        # A snapshot taken under the lock: an update() running in another thread meanwhile lands in the original
        # only, never half in the copy.
        with self.lock:
            state = dict(self.__dict__)
            state["accumulator"] = copy.deepcopy(self.accumulator)
            state["rows"] = copy.deepcopy(self.rows)
            state["metadata"] = dict(self.metadata)
        del state["lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A side pickled before the metrics beyond FID existed keeps no rows.
        state.setdefault("outputs", None)
        state.setdefault("rows", None)
        state.setdefault("all_rows", None)
        self.__dict__.update(state)
        self.lock = threading.RLock()


def _short(value: Any) -> str:
    """A metadata value for a message: a sha256 shortened to 16 digits, quoted."""
    text = str(value)
    return repr(text[:16] + "..." if len(text) > 24 else text)


class _Collected:
    """The sink of :func:`fidkit.extraction.extract` in :meth:`FID.update`: outputs kept until added at once."""

    def __init__(self, outputs: tuple[str, ...] | None = None) -> None:
        #: The outputs the side keeps (the extract step asks the extractor for them); () for the features alone.
        self.outputs: tuple[str, ...] = tuple(outputs or ())
        self.batches: list[dict[str, np.ndarray]] = []

    def update(self, features: np.ndarray) -> None:
        self.batches.append({"features": features})

    def update_outputs(self, outputs: dict[str, np.ndarray]) -> None:
        self.batches.append(outputs)


def _thread_safe(extractor: Any) -> bool:
    """Whether `extractor` may be called from several threads at once.

    An extractor says so with a ``thread_safe`` attribute; fidkit's onnxruntime :class:`FeatureExtractor` is
    (``InferenceSession.run`` is thread-safe, and each call binds its own buffers). Anything else (the torch
    engine, a user's object) is called by one thread at a time.
    """
    declared = getattr(extractor, "thread_safe", None)
    if isinstance(declared, bool):
        return declared
    runtime = sys.modules.get("fidkit.inception.runtime")
    return runtime is not None and type(extractor) is getattr(runtime, "FeatureExtractor", None)


class _RebuiltExtractor:
    """Stands for a fidkit extractor in a pickled :class:`FID`: rebuilt from its weights on first use.

    An onnxruntime session (or a torch model on a GPU) cannot be pickled; what made it can: the weights file,
    the device, the batch size, the engine, the precision, the convention and the feature layer (``dims``). The
    rebuilt extractor must have the same weights sha256 as the original, or it is refused; a weights file that is
    gone is replaced by ``$FIDKIT_WEIGHTS`` or the weights cache when that has the same sha256.
    """

    def __init__(self, extractor: Any, engine: str) -> None:
        self.weights_path = extractor.weights_path
        self.weights_sha256 = str(extractor.weights_sha256)
        self.device = str(extractor.device)
        self.batch_size = int(extractor.batch_size)
        self.precision = str(extractor.precision)
        self.convention = str(getattr(extractor, "convention", "tf"))
        self.dims = int(extractor.feature_dim)
        self.engine = engine
        self._lock = threading.Lock()
        self._built: Any = None

    def built(self) -> Any:
        with self._lock:
            if self._built is None:
                extractor = build_extractor(
                    RunOptions(
                        weights=self._weights_file(), device=self.device, batch_size=self.batch_size,
                        engine=self.engine, precision=self.precision, convention=self.convention, dims=self.dims,
                    )
                )
                if str(extractor.weights_sha256) != self.weights_sha256:
                    raise FidkitError(
                        f"the unpickled FID's extractor was made from weights {self.weights_path} with sha256 "
                        f"{self.weights_sha256[:16]}..., which now has sha256 {str(extractor.weights_sha256)[:16]}...; "
                        "the file changed since the FID was pickled: restore it, or make a new FID"
                    )
                self._built = extractor
            return self._built

    def _weights_file(self) -> Path:
        """The recorded weights file, or, once it is gone (a checkpoint resumed on another machine, a moved folder),
        the file a lazily built FID would use, ``$FIDKIT_WEIGHTS`` or the weights cache, if it has the recorded
        sha256: the same network wherever its file now lies. Never downloads."""
        recorded = Path(self.weights_path)
        if recorded.exists():
            return recorded  # used as it is: a changed file is refused by its sha256 in built()
        from fidkit.inception.weights import WEIGHTS_ENV, locate_weights, weights_cache_dir

        try:
            found = locate_weights(None, download=False, progress=False)
        except WeightsError as exc:
            elsewhere = f"no other weights file was found ({exc})"
        else:
            if found.sha256 == self.weights_sha256:
                logger.info("weights %s are gone: the unpickled FID uses %s (same sha256)", recorded, found.path)
                return found.path
            where = f"the environment variable {WEIGHTS_ENV}" if found.origin == "environment" else "the weights cache"
            elsewhere = f"{found.path} (from {where}) has sha256 {found.sha256[:16]}..., another network"
        raise WeightsError(
            f"the unpickled FID's extractor was made from weights {recorded}, which no longer exists, and "
            f"{elsewhere}; the FID needs weights with sha256 {self.weights_sha256}: restore {recorded}, or set "
            f"{WEIGHTS_ENV} to a copy of that file (or put it in {weights_cache_dir()} if it is the released file)"
        )

    @property
    def thread_safe(self) -> bool:
        return _thread_safe(self.built())

    def __call__(self, images: Any) -> Any:
        return self.built()(images)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_lock", "_built"):
            raise AttributeError(name)
        return getattr(self.built(), name)

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key not in ("_lock", "_built")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Pickled before conventions existed: it ran the tf convention at 2048.
        state.setdefault("convention", "tf")
        state.setdefault("dims", 2048)
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._built = None


def _picklable_extractor(extractor: Any) -> Any:
    """`extractor` itself, or a :class:`_RebuiltExtractor` for fidkit's own (which hold unpicklable sessions)."""
    if isinstance(extractor, _RebuiltExtractor):
        return extractor
    runtime = sys.modules.get("fidkit.inception.runtime")
    torch_engine = sys.modules.get("fidkit.inception.torch_engine")
    if runtime is not None and isinstance(extractor, getattr(runtime, "FeatureExtractor", ())):
        return _RebuiltExtractor(extractor, "onnxruntime")
    if torch_engine is not None and isinstance(extractor, getattr(torch_engine, "TorchFeatureExtractor", ())):
        return _RebuiltExtractor(extractor, "torch")
    return extractor


def _given_extractor(holder: Any) -> Any:
    """The extractor the caller gave the metric, if any, from the object that builds it lazily."""
    return getattr(holder, "given", None)  # fidkit.extractors.LazyExtractor


def _built_extractor(holder: Any) -> Any:
    """The extractor the lazy holder has built (or was given), without building one."""
    for name in ("_extractor", "_built"):
        if vars(holder).get(name) is not None:
            return vars(holder)[name]
    return None


def _without_session(holder: Any) -> Any:
    """A shallow copy of the lazy extractor holder that holds no built extractor: it builds one again on first use.

    A given extractor is kept, as :func:`_picklable_extractor` makes it (one of fidkit's: rebuilt from its weights).
    """
    clone = copy.copy(holder)
    given = _given_extractor(holder)
    replacement = None if given is None else _picklable_extractor(given)
    for name in ("_extractor", "_built", "given"):
        if name in vars(clone):
            setattr(clone, name, replacement)
    return clone


def _describe_input(source: Any) -> str:
    """A short name of an opened reference source, for messages."""
    return str(getattr(source, "name", type(source).__name__))


class _ReferenceToOpen:
    """A reference not computed yet, in a pickled :class:`~fidkit.metric.FID`: what the caller gave (a path, an
    array, a list of batches), opened again on first use.

    An opened source holds functions (a folder's listing, an array's reader) that pickle refuses, and nothing of
    it is worth keeping before its statistics exist: a checkpoint at step 0 keeps the path (the folder is listed
    again when the unpickled FID computes) or the array itself.
    """

    def __init__(self, spec: Any, name: str) -> None:
        self.spec = spec
        self.name = name


def _absolute_reference(spec: Any) -> Any:
    """`spec` (a reference as the caller gave it) as a copy of the metric must open it again: a relative path that
    names an existing file or folder made absolute now, against the working directory it was given in.

    A pickled FID reopens its reference at its first compute() after unpickling, in whatever directory the process
    is in then: a relative path would name another file there (or none). Only what the source opener reads as a path
    changes (an existing path; it wins over a dataset name, as there); a named dataset, a URI, arrays and batches
    stay as they are. The path stays as the user spelled it (a symlinked folder is not resolved to its target); a
    path through ``..`` is joined to the working directory without collapsing ``..``, which after a symlink names
    another folder than the lexical parent.
    """
    if not isinstance(spec, (str, os.PathLike)):
        return spec
    try:
        text = os.fspath(spec)
    except TypeError:  # a PathLike whose __fspath__ returns neither str nor bytes: the opener refuses it
        return spec
    if not isinstance(text, str) or os.path.isabs(text) or not os.path.exists(text):
        return spec
    if ".." in Path(text).parts:
        return os.path.join(os.getcwd(), text)
    return os.path.abspath(text)


def _unpicklable(spec: Any) -> Exception | None:
    """Why `spec` (a reference as the caller gave it) cannot be pickled, or None if it can.

    Paths and arrays are known to pickle (an array without being copied here). A single-pass iterator (one that is
    its own iterator, ``iter(x) is x``: a generator, ``iter(list)``, ``map``) is refused even where pickle takes
    it: what pickles is its position, so a copy made after some batches were read (by a compute() that failed
    part-way) would resume there and compute the reference from the rest alone. A re-iterable container (a list
    of batches) is read from its start by every copy. Anything else is tried.
    """
    if isinstance(spec, (str, os.PathLike, np.ndarray)):
        return None
    try:
        # Only an iterator is asked: iter() of a container may start work (a DataLoader's iterator starts workers).
        single_pass = callable(getattr(spec, "__next__", None)) and iter(spec) is spec
    except TypeError:  # __iter__ returns no iterator: pickle decides
        single_pass = False
    if single_pass:
        return TypeError(
            f"a {type(spec).__name__} is read once: a copy would hold only the batches it had not yielded yet"
        )
    try:
        pickle.dumps(spec)
    except Exception as exc:  # noqa: BLE001 - whatever the object holds that pickle refuses
        return exc
    return None
