"""The FID Inception weights: manifest, resolution, download, checksum, strict loading.

Resolution order (:func:`locate_weights`):

1. an explicit path (``weights=`` in the API, ``--weights`` on the command line), else the
   environment variable ``FIDKIT_WEIGHTS`` (blanks only count as unset): used as given, its sha256 recorded;
2. ``cache_home()/weights/<file>`` when present; it must match the manifest's sha256;
3. a download from the manifest's URLs in order (release, then mirror; ``FIDKIT_MIRROR`` replaces
   them), verified against the manifest's size and sha256 and moved into the cache atomically
   (:func:`fidkit._download.download`: a wrong size is refused at the first byte too many, each URL has a
   deadline, ``$FIDKIT_DOWNLOAD_DEADLINE``; a failed download leaves no folder or lock file behind).

torch is imported only inside the functions that load or build state dicts, so that resolving a
path and hashing a file stay light.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fidkit._download import DEFAULT_TIMEOUT_S, Checksum, DiskWriteError, download
from fidkit._fs import atomic_write, sha256_file
from fidkit._home_dir import cache_home, expand_user
from fidkit.errors import DownloadError, WeightsError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "WeightsManifest",
    "ResolvedWeights",
    "MANIFEST_PATH",
    "WEIGHTS_ENV",
    "load_manifest",
    "weights_cache_dir",
    "weights_from_environment",
    "locate_weights",
    "resolve_weights",
    "download_weights",
    "load_state_dict",
    "save_state_dict",
]

logger = logging.getLogger(__name__)

#: The manifest shipped with the package (a link to ``weights/manifest.json`` in the source tree).
MANIFEST_PATH = Path(__file__).with_name("manifest.json")
#: Environment variable naming a weights file, used when no explicit path is passed.
WEIGHTS_ENV = "FIDKIT_WEIGHTS"


@dataclasses.dataclass(frozen=True)
class WeightsManifest:
    """What the released weights file is and where to get it.

    Attributes
    ----------
    name : str
        Name of the network the weights belong to (``inception-2015-12-05``).
    file_name : str
        File name in the cache directory.
    size : int
        Size in bytes.
    sha256 : str
        Hex sha256 of the file.
    urls : tuple of str
        Download URLs, tried in order (release first, then mirror).
    licence : str
        SPDX identifier of the weights' licence.
    """

    name: str
    file_name: str
    size: int
    sha256: str
    urls: tuple[str, ...]
    licence: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WeightsManifest:
        """Build from the JSON object of ``manifest.json`` (keys ``file``, ``size``, ...)."""
        try:
            return cls(
                name=str(data["name"]),
                file_name=str(data["file"]),
                size=int(data["size"]),
                sha256=str(data["sha256"]).lower(),
                urls=tuple(str(url) for url in data["urls"]),
                licence=str(data["licence"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"weights manifest is malformed ({exc!r}); reinstall fidkit") from exc


@dataclasses.dataclass(frozen=True)
class ResolvedWeights:
    """A weights file found by :func:`locate_weights`.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    sha256 : str
        Its hex sha256 (computed, not trusted from the manifest).
    origin : str
        How it was found: ``"explicit"``, ``"environment"``, ``"cache"`` or ``"download"``.
    matches_manifest : bool
        True if the sha256 is the released file's.
    """

    path: Path
    sha256: str
    origin: str
    matches_manifest: bool


def load_manifest(path: str | os.PathLike | None = None) -> WeightsManifest:
    """Read a weights manifest; the packaged one by default.

    Parameters
    ----------
    path : path-like, optional
        Another manifest (tests point one at a local file server).
    """
    manifest_path = Path(path) if path is not None else MANIFEST_PATH
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(
            f"cannot read the weights manifest {manifest_path} ({exc}); reinstall fidkit"
        ) from exc
    return WeightsManifest.from_dict(data)


def weights_from_environment() -> str | None:
    """``$FIDKIT_WEIGHTS``, or None when it is unset or blank: blanks only count as unset, as for fidkit's other
    variables (``FIDKIT_HOME``, ``FIDKIT_DATASETS``); taken as a path, ``" "`` would name a file called by a
    space in the working directory. The value is returned as given (a path may end in a space)."""
    value = os.environ.get(WEIGHTS_ENV, "")
    return value if value.strip() else None


def weights_cache_dir() -> Path:
    """Return ``cache_home()/weights``, where downloaded weights live (not created here)."""
    return cache_home() / "weights"


def _how_to_supply(manifest: WeightsManifest) -> str:
    target = weights_cache_dir() / manifest.file_name
    return (
        f"Download {manifest.urls[0]} (sha256 {manifest.sha256}) yourself and either pass it "
        f"with --weights PATH / weights=PATH / the environment variable {WEIGHTS_ENV}, "
        f"or put it at {target}"
    )


# sha256 of weights files hashed in this process, by (path, device, inode, size, mtime): a run looks its weights
# up for the cache key and again to build the network, and 95 MB once per process is enough (any rewrite
# changes the size, the inode or the modification time).
_HASHED: dict[tuple[str, int, int, int, int], str] = {}


def _hash_weights(path: Path) -> str:
    """sha256 of a weights file; an unreadable file (permissions, a folder, an I/O error) is a WeightsError."""
    try:
        info = path.stat()
        key = (str(path.resolve()), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        if key not in _HASHED:
            _HASHED[key] = sha256_file(path)
        return _HASHED[key]
    except OSError as exc:
        raise WeightsError(
            f"cannot read weights file {path} ({exc.strerror or exc}); make it readable or pass another file with "
            f"--weights / weights=PATH / {WEIGHTS_ENV}"
        ) from exc


def locate_weights(
    weights: str | os.PathLike | ResolvedWeights | None = None,
    *,
    download: bool = True,
    progress: bool = True,
    manifest: WeightsManifest | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    deadline: float | None = None,
) -> ResolvedWeights:
    """Find the weights file, downloading it if needed, and hash it.

    Parameters
    ----------
    weights : path-like or ResolvedWeights, optional
        An explicit weights file. Used as given (a user may bring their own port of the same
        network); its sha256 is recorded whether or not it matches the manifest. A
        ``ResolvedWeights`` (what this function returned before) is returned as it is: a caller
        that already located and hashed the file never reads 100 MB again.
    download : bool, default True
        Download into the cache when neither an explicit path nor a cached file exists.
    progress : bool, default True
        Show a progress bar on stderr while downloading (only when stderr is a terminal).
    manifest : WeightsManifest, optional
        The file to look for; the packaged manifest by default.
    timeout : float
        Seconds a single socket operation may block.
    deadline : float, optional
        Seconds the download from one URL may take in all (default ``$FIDKIT_DOWNLOAD_DEADLINE``, else from the
        size: :func:`fidkit._download.download_deadline`).

    Returns
    -------
    ResolvedWeights

    Raises
    ------
    WeightsError
        An explicit file that does not exist or cannot be read, a cached file with the wrong checksum, a download
        that fails (offline, wrong checksum), or no file with ``download=False``.
    """
    if isinstance(weights, ResolvedWeights):
        return weights
    manifest = manifest if manifest is not None else load_manifest()
    origin = "explicit"
    from_environment = weights_from_environment() if weights is None else None
    if from_environment is not None:
        weights, origin = from_environment, "environment"
    if weights is not None:
        where = f"the environment variable {WEIGHTS_ENV}" if origin == "environment" else "weights"
        path = expand_user(
            weights, named=f"${WEIGHTS_ENV}" if origin == "environment" else "--weights / weights=", error=WeightsError
        )
        if not path.is_file():
            if path.is_dir():
                raise WeightsError(
                    f"weights {path} (from {where}) is a folder, not a weights file; pass the .pth file itself, "
                    f"e.g. {path / manifest.file_name}"
                )
            if path.exists():
                raise WeightsError(f"weights {path} (from {where}) is not a regular file; give a .pth file")
            raise WeightsError(f"weights file {path} (from {where}) does not exist; give an existing .pth file")
        already_hashed = len(_HASHED)
        digest = _hash_weights(path)
        matches = digest == manifest.sha256
        if not matches and len(_HASHED) > already_hashed:  # said once per file and process, when first hashed
            logger.info(
                "weights %s have sha256 %s, not the released %s's %s; features are comparable only "
                "with features from the same file",
                path, digest, manifest.file_name, manifest.sha256,
            )
        return ResolvedWeights(path=path, sha256=digest, origin=origin, matches_manifest=matches)

    cached = weights_cache_dir() / manifest.file_name
    if cached.is_file():
        digest = _hash_weights(cached)
        if digest != manifest.sha256:
            raise WeightsError(
                f"cached weights {cached} have sha256 {digest}, expected {manifest.sha256}; "
                "delete the file to download it again, or pass your own file with --weights"
            )
        return ResolvedWeights(path=cached, sha256=digest, origin="cache", matches_manifest=True)

    if not download:
        raise WeightsError(f"Inception weights not found at {cached}. {_how_to_supply(manifest)}")
    path = download_weights(manifest, cached.parent, progress=progress, timeout=timeout, deadline=deadline)
    return ResolvedWeights(path=path, sha256=manifest.sha256, origin="download", matches_manifest=True)


def resolve_weights(
    weights: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: bool = True,
    manifest: WeightsManifest | None = None,
) -> Path:
    """Return the path of the weights file: explicit, ``$FIDKIT_WEIGHTS``, cached, or downloaded.

    Parameters
    ----------
    weights : path-like, optional
        A weights file to use as it is; None looks at ``$FIDKIT_WEIGHTS``, then the cache, then downloads.
    download : bool, default True
        Download the released file into the cache when it is not there; False makes its absence an error.
    progress : bool, default True
        Show the download's progress on stderr.
    manifest : WeightsManifest, optional
        Which file to fetch and verify (URL, size, sha256); the released 2015 Inception by default.

    See :func:`locate_weights`, which also returns the file's sha256.
    """
    return locate_weights(weights, download=download, progress=progress, manifest=manifest).path


def download_weights(
    manifest: WeightsManifest,
    dest_dir: str | os.PathLike,
    *,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
    deadline: float | None = None,
) -> Path:
    """Download the weights into `dest_dir`, verify size and sha256, move into place atomically.

    URLs are tried in the manifest's order (or ``$FIDKIT_MIRROR/<file name>``). A download whose
    size or checksum is wrong is deleted and the next URL tried; a server that sends more than the
    manifest's size is cut off at the first byte too many, and each URL has `deadline` seconds in all
    (default ``$FIDKIT_DOWNLOAD_DEADLINE``, else from the size). When every URL fails, the folders the
    download created (``dest_dir``, the lock's folder) are removed again if empty. Progress is drawn with
    tqdm on stderr when it is a terminal (see :mod:`fidkit._download`).

    Returns
    -------
    pathlib.Path
        ``dest_dir / manifest.file_name``.

    Raises
    ------
    WeightsError
        When no URL gave the right file: the message lists what happened at each URL and how to
        supply the file by hand. When the file could not be written here (a full or read-only disk): at once,
        without trying the next URL, saying what to free or where to point ``FIDKIT_HOME``.
    """
    target = Path(dest_dir) / manifest.file_name
    try:
        return download(
            manifest.urls, target, checksum=Checksum("sha256", manifest.sha256), size=manifest.size,
            what="the Inception weights", progress=progress, timeout=timeout, deadline=deadline,
        )
    except DiskWriteError as exc:  # this disk's to fix: supplying the file elsewhere would meet it again
        raise WeightsError(str(exc)) from exc
    except DownloadError as exc:
        raise WeightsError(f"{exc}. {_how_to_supply(manifest)}") from exc


# --- loading -------------------------------------------------------------------------------------


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a weights file safely and check it has exactly the network's tensors.

    Accepts the legacy (pre-zip) torch serialization of the released file and the zip format,
    with or without ``num_batches_tracked`` entries (missing ones are filled with zeros: they
    play no part in inference).

    Raises
    ------
    WeightsError
        Unreadable file, not a state dict, missing or unexpected tensors, wrong shapes, a NaN or infinite
        value in any tensor, or a negative BatchNorm running variance (the message names the first such tensor).
    """
    import torch

    from fidkit.inception.network import FIDInceptionV3

    path = Path(path)
    try:
        # weights_only=True: never unpickle arbitrary objects from a downloaded file.
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises a variety of types for bad files
        # torch's own text is not passed on: for a pickle it advises weights_only=False, which would run
        # whatever code the file holds. What matters is that this is not a weights file.
        raise WeightsError(
            f"{path} is not an Inception weights file: torch cannot read it as a state dict of tensors "
            f"({exc.__class__.__name__}); pass the released pt_inception-2015-12-05 .pth file or a port of it "
            "with the same tensor names"
        ) from exc
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"weights {path} do not hold a state dict of tensors")
    state = dict(loaded)
    expected = FIDInceptionV3().state_dict()
    for name, tensor in expected.items():
        if name.endswith("num_batches_tracked") and name not in state:
            state[name] = torch.zeros_like(tensor)
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    if missing or unexpected:
        raise WeightsError(
            f"weights {path} do not match the FID Inception-v3 layout: "
            f"{len(missing)} missing tensor(s) {_first_names(missing)}, "
            f"{len(unexpected)} unexpected tensor(s) {_first_names(unexpected)}; "
            "use the released pt_inception-2015-12-05 file or a port with the same names"
        )
    wrong_shape = [
        f"{name} {tuple(state[name].shape)} != {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if tuple(state[name].shape) != tuple(tensor.shape)
    ]
    if wrong_shape:
        raise WeightsError(f"weights {path} have tensors of the wrong shape: {_first_names(wrong_shape)}")
    ordered = {name: state[name] for name in expected}
    _check_values(path, ordered)
    return ordered


def _check_values(path: Path, state: Mapping[str, torch.Tensor]) -> None:
    """Refuse weights holding a NaN or an infinity, or a negative BatchNorm running variance, naming the first such
    tensor: one pass over them (milliseconds). Loaded anyway, they make every feature NaN, and the error would
    then blame the images."""
    import torch

    for name, tensor in state.items():
        if not (tensor.is_floating_point() or tensor.is_complex()):
            continue  # integers (num_batches_tracked) are always finite
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            bad = int(finite.numel() - finite.sum())
            raise WeightsError(
                f"weights {path} hold {bad:,} NaN or infinite value(s) in {name} (of {tensor.numel():,}; the first "
                "such tensor); the file is damaged or not a trained network: download it again, or pass the "
                "released pt_inception-2015-12-05 file or an intact port of it"
            )
        if name.endswith(".running_var") and not tensor.is_complex() and bool((tensor < 0).any()):
            bad = int((tensor < 0).sum())
            raise WeightsError(
                f"weights {path} hold {bad:,} negative value(s) in {name} (of {tensor.numel():,}), a BatchNorm "
                "running variance, which is never negative; the file is damaged or not a trained network: "
                "download it again, or pass the released pt_inception-2015-12-05 file or an intact port of it"
            )


def _first_names(names: Sequence[str], limit: int = 8) -> str:
    if not names:
        return "[]"
    shown = ", ".join(names[:limit])
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return f"[{shown}{more}]"


def save_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    legacy: bool = True,
    num_batches_tracked: bool = True,
) -> Path:
    """Save a state dict as the released file is saved (legacy format) or in torch's zip format.

    Parameters
    ----------
    legacy : bool, default True
        Pre-zip serialization, as ``pt_inception-2015-12-05-6726825d.pth``.
    num_batches_tracked : bool, default True
        Keep the ``num_batches_tracked`` entries (files older than torch 0.4.1 lack them).
    """
    import collections

    import torch

    path = Path(path)
    ordered = collections.OrderedDict(
        (name, tensor)
        for name, tensor in state_dict.items()
        if num_batches_tracked or not name.endswith("num_batches_tracked")
    )
    with atomic_write(path, overwrite=True) as tmp:
        torch.save(ordered, tmp, _use_new_zipfile_serialization=not legacy)
    return path
