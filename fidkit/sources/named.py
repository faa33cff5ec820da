"""Named datasets: ``cifar10-train``, ``cifar10-test``, ``cifar100-train``, ``cifar100-test``, ``mnist-train``,
``mnist-test``, usable wherever a source is.

A name is resolved where paths are opened (:func:`open_if_named`, called by
:func:`fidkit.sources.open_source`): a string that is not an existing file or folder and is a registered
name stands for its dataset. A local file or folder of that name always wins.

Where the file comes from, in order:

1. ``$FIDKIT_DATASETS/<file name>``, when the variable names a folder holding the canonical file
   (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``, ``train-images-idx3-ubyte.gz``,
   ``t10k-images-idx3-ubyte.gz``); a variable that names a file is an error, not ignored;
2. ``cache_home()/datasets/<file name>``;
3. a download from the canonical URLs (``FIDKIT_MIRROR`` replaces them), checked against the published
   size and md5 before it is kept (:func:`fidkit._download.download`), into 2.

A file found in 1 or 2 must have the published size, and is checked against the md5 the first time it is
used; the check is recorded in ``cache_home()/datasets/verified.json`` (path, size, modification and
status-change times) and the file is then trusted while they stay the same. A file that fails is refused
(never deleted when it is the user's) with both checksums in the message.

The files are read in place, never extracted: the CIFAR batches from inside the ``.tar.gz``
(:func:`fidkit.sources.datasets.load_cifar_tar`, restricted unpickling), the MNIST idx ``.gz`` by the MNIST
reader. A path to ``cifar-10-python.tar.gz`` or ``cifar-100-python.tar.gz`` given as a source reads that
archive's training split, as a CIFAR batch folder does; so does a tar named otherwise (the archive gunzipped to
``cifar-10-python.tar``, or renamed) whose first folder is the one the archive holds and holds its batches (a
tar of images in a folder of that name is read as images).

A CIFAR source's fingerprint names the archive and the members it reads, so the two splits of one archive
never share a cached statistics entry.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import lzma
import os
import tarfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from fidkit._download import Checksum, DiskWriteError, download, mirror_urls
from fidkit._fs import atomic_write, file_digest, sha256_file
from fidkit._home_dir import cache_home, expand_user
from fidkit.errors import DownloadError, SourceError
from fidkit.sources.archives import is_archive
from fidkit.sources.arrays import ArraySource, file_identity
from fidkit.sources.base import Source, file_stamp
from fidkit.sources.datasets import CIFAR10_TRAIN_FILES, load_cifar_tar, open_mnist
from fidkit.sources.files import normalise_member

__all__ = [
    "DATASETS_ENV",
    "DatasetFile",
    "NamedDataset",
    "DATASETS",
    "dataset_names",
    "get_dataset",
    "datasets_cache_dir",
    "find_dataset_file",
    "locate_dataset_file",
    "open_named",
    "open_if_named",
    "dataset_status",
]

logger = logging.getLogger(__name__)

#: Environment variable naming a folder where the dataset files are looked for first, by their file names.
DATASETS_ENV = "FIDKIT_DATASETS"
_VERIFIED_FILE = "verified.json"


@dataclasses.dataclass(frozen=True)
class DatasetFile:
    """One published file: where it is, its size and md5 (the checksum its publisher gives)."""

    file_name: str
    urls: tuple[str, ...]
    md5: str
    size: int

    @property
    def checksum(self) -> Checksum:
        return Checksum("md5", self.md5)


@dataclasses.dataclass(frozen=True)
class NamedDataset:
    """A split of a dataset fidkit can fetch by name.

    Attributes
    ----------
    name : str
        The name a user types (``cifar10-train``).
    description : str
        One line for listings.
    kind : str
        ``"cifar"`` (python batches inside a ``.tar.gz``) or ``"mnist"`` (an idx3 ``.gz``).
    file : DatasetFile
        The file holding the split.
    members : tuple of str
        CIFAR: the batch members inside the archive, read in this order; empty for MNIST.
    n_images : int
        Images in the split.
    image_shape : tuple of int
        ``(height, width, channels)`` as stored (MNIST is grayscale, replicated to RGB when read).
    """

    name: str
    description: str
    kind: str
    file: DatasetFile
    members: tuple[str, ...]
    n_images: int
    image_shape: tuple[int, int, int]


_CIFAR10 = DatasetFile(
    "cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    "c58f30108f718f92721af3b95e74349a", 170_498_071,
)
_CIFAR100 = DatasetFile(
    "cifar-100-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
    "eb9058c3a382ffc7106e4002c42a8d85", 169_001_437,
)


def _mnist_file(file_name: str, md5: str, size: int) -> DatasetFile:
    return DatasetFile(
        file_name,
        (f"http://yann.lecun.com/exdb/mnist/{file_name}", f"https://ossci-datasets.s3.amazonaws.com/mnist/{file_name}"),
        md5,
        size,
    )


#: The registry: name -> dataset. Tests replace entries (URLs, checksums) with monkeypatch.setitem.
DATASETS: dict[str, NamedDataset] = {
    dataset.name: dataset
    for dataset in (
        NamedDataset(
            "cifar10-train", "CIFAR-10 training split", "cifar", _CIFAR10,
            tuple(f"cifar-10-batches-py/{member}" for member in CIFAR10_TRAIN_FILES), 50_000, (32, 32, 3),
        ),
        NamedDataset(
            "cifar10-test", "CIFAR-10 test split", "cifar", _CIFAR10, ("cifar-10-batches-py/test_batch",),
            10_000, (32, 32, 3),
        ),
        NamedDataset(
            "cifar100-train", "CIFAR-100 training split", "cifar", _CIFAR100, ("cifar-100-python/train",),
            50_000, (32, 32, 3),
        ),
        NamedDataset(
            "cifar100-test", "CIFAR-100 test split", "cifar", _CIFAR100, ("cifar-100-python/test",),
            10_000, (32, 32, 3),
        ),
        NamedDataset(
            "mnist-train", "MNIST training images", "mnist",
            _mnist_file("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9_912_422),
            (), 60_000, (28, 28, 1),
        ),
        NamedDataset(
            "mnist-test", "MNIST test images", "mnist",
            _mnist_file("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", 1_648_877),
            (), 10_000, (28, 28, 1),
        ),
    )
}


def dataset_names() -> tuple[str, ...]:
    """The registered names, in registry order."""
    return tuple(DATASETS)


def get_dataset(name: str) -> NamedDataset:
    """The registered dataset `name`; a :class:`SourceError` listing the names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise SourceError(f"{name}: not a dataset name; named datasets: {', '.join(DATASETS)}") from None


def datasets_cache_dir() -> Path:
    """``cache_home()/datasets``, where downloaded dataset files live (not created here)."""
    return cache_home() / "datasets"


def find_dataset_file(dataset: NamedDataset) -> tuple[Path, str] | None:
    """Where the dataset's file is on this machine, unchecked: ``(path, "FIDKIT_DATASETS" | "cache")`` or None."""
    folder = os.environ.get(DATASETS_ENV, "").strip()
    if folder:
        given = expand_user(folder, named=f"${DATASETS_ENV}", error=SourceError)
        if not given.exists():
            # A typo would otherwise fall through to the download the variable was set to avoid.
            raise SourceError(
                f"{DATASETS_ENV}={folder}: no such folder; set {DATASETS_ENV} to the folder that holds the dataset "
                "files, or unset it to use the cache (and download there)"
            )
        if not given.is_dir():
            # Silently looking inside a file would fall through to a download the user meant to avoid.
            raise SourceError(
                f"{DATASETS_ENV}={folder} is a file, not a folder; set {DATASETS_ENV} to the folder that holds "
                f"the dataset files (here {given.parent}), or unset it"
            )
        candidate = given / dataset.file.file_name
        if candidate.is_file():
            return candidate, DATASETS_ENV
        logger.debug("%s not in %s=%s", dataset.file.file_name, DATASETS_ENV, folder)
    cached = datasets_cache_dir() / dataset.file.file_name
    if cached.is_file():
        return cached, "cache"
    return None


def _how_to_supply(dataset: NamedDataset) -> str:
    file = dataset.file
    if dataset.kind == "cifar" and not dataset.name.endswith("-train"):
        in_place = (
            f"pass the path of {file.file_name} in place of the name (it reads the training split; for this "
            f"split extract it and pass {dataset.members[0]})"
        )
    else:
        in_place = f"pass the path of {file.file_name} in place of the name {dataset.name!r}"
    return (
        f"Download {file.urls[0]} ({file.size} bytes, md5 {file.md5}) yourself, then either {in_place}, "
        f"or put it in a folder and set {DATASETS_ENV}=that folder (or place it at "
        f"{datasets_cache_dir() / file.file_name})"
    )


# --- the record of checked files ------------------------------------------------------------------


def _verified_records() -> dict[str, Any]:
    try:
        records = json.loads((datasets_cache_dir() / _VERIFIED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def _stamp(path: Path, file: DatasetFile) -> dict[str, Any]:
    size, mtime_ns, ctime_ns = file_stamp(path)
    return {"size": size, "mtime_ns": mtime_ns, "ctime_ns": ctime_ns, "md5": file.md5}


def _record_verified(path: Path, file: DatasetFile) -> None:
    """Note that `path` (as it is now) passed the md5 check; a failure to write only costs a re-check."""
    records = _verified_records()
    records[str(path.resolve())] = _stamp(path, file)
    try:
        with atomic_write(datasets_cache_dir() / _VERIFIED_FILE, overwrite=True) as tmp:
            tmp.write_text(json.dumps(records, indent=1, sort_keys=True), encoding="utf-8")
    except OSError as exc:
        logger.debug("cannot record the check of %s (%s)", path, exc)


def _check_file(path: Path, dataset: NamedDataset, where: str) -> None:
    """Refuse a found file whose size or md5 is not the published one (md5 once, then size + mtime)."""
    file = dataset.file
    if where == DATASETS_ENV:
        advice = f"replace it with the file from {file.urls[0]}, or unset {DATASETS_ENV} to download it"
    else:
        advice = "delete it to download it again"
    size = path.stat().st_size
    if size != file.size:
        raise SourceError(
            f"{dataset.name}: {path} (from {where}) has {size} bytes, expected {file.size} bytes with md5 "
            f"{file.md5}; {advice}"
        )
    if _verified_records().get(str(path.resolve())) == _stamp(path, file):
        return
    logger.info("checking the md5 of %s", path)
    digest = file_digest(path, "md5")
    if digest != file.md5:
        raise SourceError(
            f"{dataset.name}: {path} (from {where}) has md5 {digest}, expected md5 {file.md5}; {advice}"
        )
    _record_verified(path, file)


def locate_dataset_file(dataset: NamedDataset, *, download_missing: bool = True, progress: bool = True) -> Path:
    """The checked file of `dataset`: from ``$FIDKIT_DATASETS``, the cache, or downloaded into the cache.

    Raises
    ------
    SourceError
        A found file with the wrong size or md5.
    DownloadError
        No file here and the download failed (or `download_missing` is False): the message names the URL,
        the expected md5, and how to supply the file.
    """
    found = find_dataset_file(dataset)
    if found is not None:
        path, where = found
        _check_file(path, dataset, where)
        return path
    target = datasets_cache_dir() / dataset.file.file_name
    if not download_missing:
        raise DownloadError(
            f"{dataset.name}: {dataset.file.file_name} is not on this machine. {_how_to_supply(dataset)}"
        )
    try:
        download(
            dataset.file.urls, target, checksum=dataset.file.checksum, size=dataset.file.size,
            what=f"{dataset.file.file_name} ({dataset.name})", progress=progress,
        )
    except DiskWriteError as exc:  # this disk's to fix: supplying the file here would meet it again
        raise DiskWriteError(f"{dataset.name}: {exc}") from exc
    except DownloadError as exc:
        raise DownloadError(f"{dataset.name}: {exc}. {_how_to_supply(dataset)}") from exc
    _record_verified(target, dataset.file)
    return target


# --- opening ----------------------------------------------------------------------------------------


def _cifar_identity(path: Path, members: tuple[str, ...]) -> Any:
    """The identity of the `members` of the archive `path`: which of them are read is part of it, since the
    splits of one archive (``cifar10-train``, ``cifar10-test``) are different images in the same file."""

    def identity(hash_content: bool) -> dict[str, Any]:
        where = {"file_sha256": sha256_file(path)} if hash_content else file_identity(path)
        return {**where, "members": list(members)}

    return identity


def open_named(
    name: str, *, limit: int | None = None, seed: int | None = None, download_missing: bool = True,
    progress: bool = True,
) -> Source:
    """Open the named dataset `name` (downloading its file if needed) as a ``cifar`` or ``mnist`` source.

    CIFAR pixels are read from the archive when first needed (the image count is known), so a cached
    statistics entry is found without decompressing anything.
    """
    dataset = get_dataset(name)
    path = locate_dataset_file(dataset, download_missing=download_missing, progress=progress)
    if dataset.kind == "mnist":
        source = open_mnist(path, name, limit=limit, seed=seed)
        if source.n_available != dataset.n_images:
            raise SourceError(f"{name}: {path} holds {source.n_available} images, expected {dataset.n_images}")
        return source
    held: list[np.ndarray] = []

    def load() -> np.ndarray:
        if not held:
            images = load_cifar_tar(path, dataset.members, name)
            if len(images) != dataset.n_images:
                raise SourceError(f"{name}: {path} holds {len(images)} images, expected {dataset.n_images}")
            held.append(images)
        return held[0]

    shape = (dataset.n_images, *dataset.image_shape)
    return ArraySource("cifar", name, load, shape, _cifar_identity(path, dataset.members), limit=limit, seed=seed)


def _train_split_of(file_name: str) -> NamedDataset | None:
    for dataset in DATASETS.values():
        if dataset.kind == "cifar" and dataset.file.file_name == file_name and dataset.name.endswith("-train"):
            return dataset
    return None


#: How far into a tar not named canonically the folder of a CIFAR python archive is looked for: past the
#: members that name no folder (``./`` of ``tar -cf x.tar .``, a README beside the folder), at most this many
#: members and bytes of their data, so that a tar of images is not read through (decompressed) to be told apart.
_CIFAR_LOOKAHEAD_MEMBERS = 32
_CIFAR_LOOKAHEAD_BYTES = 8 << 20


def _cifar_archive_of(path: Path) -> NamedDataset | None:
    """The training split of the CIFAR python archive `path`, or None when it is not one.

    By its canonical file name (``cifar-10-python.tar.gz``); a tar named otherwise (gunzipped to
    ``cifar-10-python.tar``, renamed ``cifar10.tar.gz``) by its members (:func:`_cifar_split_in`). A file that
    is no readable tar is None, and the archive reader says what is wrong with it.
    """
    dataset = _train_split_of(path.name)
    if dataset is not None or not is_archive(path) or path.name.lower().endswith(".zip"):
        return dataset  # a tar by its name, as the archive reader takes it: only then are its members read
    try:
        with tarfile.open(path, "r:*") as tar:  # "*": by its content, as the name may say another compression
            return _cifar_split_in(tar, path)
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError):
        return None


def _cifar_split_in(tar: tarfile.TarFile, path: Path) -> NamedDataset | None:
    """The training split of the CIFAR archive `tar` is, by its members' names; None for any other tar.

    Its first folder (the first member inside one or naming one, past at most a few members outside any folder)
    must be the one the published archive holds (``cifar-10-batches-py/``, ``cifar-100-python/``), and a member
    in it must be one of that archive's batches (``data_batch_1``, ``test_batch``; ``train``, ``test``): a tar of
    images in a folder of that name is a tar of images. The headers are read up to that batch, which the
    published archives store near their start; only a tar that holds that folder and no batch is read to its end.
    """
    batches: dict[str, set[str]] = {}  # folder -> the batch members of its archive's splits
    train: dict[str, NamedDataset] = {}
    for candidate in DATASETS.values():
        if candidate.kind == "cifar":
            folder = normalise_member(candidate.members[0]).split("/", 1)[0]
            batches.setdefault(folder, set()).update(normalise_member(member) for member in candidate.members)
            if candidate.name.endswith("-train"):
                train[folder] = candidate
    folder = None
    skipped = skipped_bytes = 0
    for member in tar:
        name = normalise_member(member.name)
        if folder is None:
            if "/" in name or (name and member.isdir()):
                folder = name.split("/", 1)[0]
                if folder not in batches or folder not in train:
                    return None
            else:  # "./", or a file beside the folder (a README): the folder may come next
                skipped += 1
                skipped_bytes += max(member.size, 0)
                if skipped > _CIFAR_LOOKAHEAD_MEMBERS or skipped_bytes > _CIFAR_LOOKAHEAD_BYTES:
                    return None
                continue
        if name in batches[folder]:
            dataset = train[folder]
            logger.info("%s holds %s: read as the CIFAR python archive %s", path, name, dataset.file.file_name)
            return dataset
    if folder is not None:
        logger.debug("%s holds %s/ but none of the CIFAR batches: not read as a CIFAR python archive", path, folder)
    return None


def open_if_named(path: Path, name: str, *, limit: int | None, seed: int | None) -> Source | None:
    """The hook of :func:`fidkit.sources.open_source` for paths: a named dataset, a CIFAR python archive, or None.

    * an existing ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``, by file name, or a tar whose first
      folder is the one such an archive holds (``cifar-10-batches-py/``, ``cifar-100-python/``) with one of its
      batches in it (the archive gunzipped or renamed): its training split, read in place (used as given, not
      checked against the md5);
    * any other existing path: None (the other readers decide);
    * a registered name that is not an existing path: the dataset (:func:`open_named`);
    * a missing path that looks like a mistyped name (``cifar10``): a :class:`SourceError` that suggests names.
    """
    if path.exists():
        dataset = _cifar_archive_of(path) if path.is_file() else None
        if dataset is None:
            return None
        images = load_cifar_tar(path, dataset.members, name)
        return ArraySource(
            "cifar", name, lambda: images, images.shape, _cifar_identity(path, dataset.members), limit=limit, seed=seed
        )
    if name in DATASETS:
        return open_named(name, limit=limit, seed=seed)
    if not any(mark in name for mark in ("/", "\\", ".")):
        typed = name.lower()
        # "cifar10" means one of its splits; otherwise the nearest spellings.
        close = [known for known in DATASETS if known.startswith(f"{typed}-")]
        close = close or difflib.get_close_matches(typed, DATASETS, n=2, cutoff=0.6)
        if close:
            raise SourceError(
                f"{name}: no such file or folder, and not a dataset name; did you mean {' or '.join(close)}? "
                f"(named datasets: {', '.join(DATASETS)})"
            )
    return None


def dataset_status(dataset: NamedDataset) -> dict[str, Any]:
    """What ``fidkit datasets`` shows of one dataset: the registry entry and whether its file is here.

    ``cached`` is True when a file of the published size is in ``$FIDKIT_DATASETS`` or the cache (its md5
    is checked when it is used, not here); ``problem`` says why a file found is not used (its size).
    """
    found = find_dataset_file(dataset)  # FIDKIT_DATASETS naming no folder: an error, as for any command
    problem = None
    here = found is not None and found[0].stat().st_size == dataset.file.size
    if found is not None and not here:
        problem = (
            f"{found[0]} has the wrong size: replace it with the published file or unset {DATASETS_ENV}"
            if found[1] == DATASETS_ENV else f"{found[0]} has the wrong size: delete it (downloaded again on first use)"
        )
    return {
        "name": dataset.name,
        "description": dataset.description,
        "kind": dataset.kind,
        "n_images": dataset.n_images,
        "image_shape": list(dataset.image_shape),
        "file": dataset.file.file_name,
        "size": dataset.file.size,
        "md5": dataset.file.md5,
        "urls": list(mirror_urls(dataset.file.urls)),
        "members": list(dataset.members),
        "cached": here,
        "problem": problem,
        "path": str(found[0]) if found is not None else None,
        "location": found[1] if found is not None else None,
    }
