"""Refusing, before any work, to write an output over a file the run reads (``--save``, ``fidkit ttur --out``).

The sources know what a run reads: a path, the images a folder lists (by the walk that lists them), a CIFAR
folder's batch files, the file a dataset name stands for. Files are compared as the filesystem sees them, by
``(st_dev, st_ino)`` after following links, so a symbolic link, a relative path or a hard link to an input is
that input.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from fidkit.errors import OverwriteError, SourceError
from fidkit.sources.datasets import cifar_train_files
from fidkit.sources.decode import IMAGE_EXTENSIONS
from fidkit.sources.files import FolderListing, Ignored, iter_folder_images

__all__ = ["refuse_outputs_over_inputs"]


def _input_files(spec: Any) -> list[Path]:
    """The files a path source reads whole that a write could replace: the path itself, a CIFAR folder's batch
    files, or a dataset's file. (The images of a folder are looked up by :func:`_folder_members`.)"""
    if not isinstance(spec, (str, os.PathLike)):
        return []
    path = Path(spec)
    if path.is_dir():
        return cifar_train_files(path)  # [] for a folder of images
    if path.exists():
        return [path]
    from fidkit.sources.named import DATASETS, find_dataset_file

    if str(spec) in DATASETS:
        try:
            found = find_dataset_file(DATASETS[str(spec)])
        except SourceError:  # FIDKIT_DATASETS names a file: reported when the source is opened
            return []
        return [found[0]] if found is not None else []
    return []


def _file_id(path: str | os.PathLike) -> tuple[int, int] | None:
    """(st_dev, st_ino) of what `path` names after following links; None when nothing is there."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def _could_be_an_image(target: Path) -> bool:
    """Whether the existing file `target` could be an image a folder source lists: a folder lists files by image
    name, so a file whose real name has another suffix (``out.npz``) can be an image only through another name, a
    hard link. Saves walking a folder of 50,000 images (a stat each: minutes on a network file system) for nothing.
    """
    suffix = Path(os.path.realpath(target)).suffix.lower()
    if not suffix or suffix in IMAGE_EXTENSIONS:
        # No suffix: maybe the blob an image's symbolic link points to (content-addressed stores name blobs by
        # their hash), so looked for; out.npz cannot be one.
        return True
    try:
        return os.stat(target).st_nlink > 1
    except OSError:
        return False


def _folder_members(root: Path, targets: Mapping[tuple[int, int], Path]) -> Iterator[tuple[str, Path]]:
    """``(relative name, target)`` for each image of the folder source `root` that is one of the files `targets`
    (keyed by ``(st_dev, st_ino)``).

    One walk of the folder by the walk that lists it (:func:`fidkit.sources.files.iter_folder_images`, so the
    images looked at are exactly those the run reads), one ``stat`` per image, nothing kept. Folders that cannot be
    read are passed over here; the run reports them.
    """
    try:
        for member, info in iter_folder_images(root, str(root), FolderListing(Ignored()), skip_unreadable=True):
            if info is not None and (info.st_dev, info.st_ino) in targets:
                yield member, targets[info.st_dev, info.st_ino]
    except SourceError:  # the folder itself cannot be read: opening the source will say so
        return


def refuse_outputs_over_inputs(
    outputs: Iterable[str | os.PathLike],
    *inputs: Any,
    what: str = "output",
    others: Iterable[tuple[str | os.PathLike, str]] = (),
) -> None:
    """Refuse, before any work, to write any of `outputs` where it would replace a file the run reads.

    Each output is compared, as the filesystem sees them, with each input path, every image of an input folder,
    the batch files of a CIFAR folder, the file a dataset name stands for, and the `others` (each a path and
    what it is to the run, e.g. the weights file): a symbolic link, a relative path or a hard link to one of
    them is that file. Inputs that are not paths (arrays, iterables) are ignored. A folder is walked only for
    outputs that exist (a new file replaces nothing) and could be one of its images, and then once for all of
    them, comparing one (st_dev, st_ino) pair per image.

    Raises
    ------
    OverwriteError
        An output is a file the run reads; the message names both and says it is refused even with --force.
    """
    targets = [Path(output) for output in outputs]

    def refuse(target: Path, what_it_is: str) -> OverwriteError:
        return OverwriteError(
            f"{what} {target} is an input of this run: {what_it_is}; writing it would destroy what the run reads, "
            f"even with --force; choose another {what} path (a new file outside the inputs)"
        )

    # Compared as (st_dev, st_ino) after following links: symbolic links, relative paths and hard links alike.
    existing = {target_id: target for target in targets if (target_id := _file_id(target)) is not None}
    could_be_images = {target_id: target for target_id, target in existing.items() if _could_be_an_image(target)}
    walked: set[tuple[int, int]] = set()  # folders given twice (a compare's runs share their data)
    for spec in inputs:
        files = _input_files(spec)
        for path in files:
            target = existing.get(_file_id(path)) if path.is_file() else None
            if target is not None:
                alias = "" if str(target) == str(spec) else f" ({target} is the same file as {path})"
                raise refuse(target, f"the input {spec}{alias}")
        folder_id = _file_id(spec) if isinstance(spec, (str, os.PathLike)) and not files else None
        if could_be_images and folder_id is not None and folder_id not in walked and Path(spec).is_dir():
            walked.add(folder_id)
            for member, target in _folder_members(Path(spec), could_be_images):
                raise refuse(target, f"the image {member} of the input folder {spec}")
    for path, what_it_is in others:
        target = existing.get(_file_id(path))
        if target is not None:
            raise refuse(target, what_it_is)
