"""fidkit.sources on hostile and unusual input (issue 9): nothing is dropped without a count, damage
is an error naming the file, nothing blocks, memory stays bounded, workers die with their parent.

Every case is built in tmp_path.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fidkit.errors import EmptySourceError, FidkitError, ImageError, SourceError
from fidkit.sources import open_source


def _pixels(seed: int, height: int = 8, width: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _png(seed: int, height: int = 8, width: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_pixels(seed, height, width)).save(buffer, format="PNG")
    return buffer.getvalue()


def _all_pixels(source, batch_size: int = 4) -> np.ndarray:
    return np.concatenate(list(source.batches(batch_size)), axis=0)


def _folder(root: Path, n: int = 6, start: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for index in range(start, start + n):
        (root / f"{index:03d}.png").write_bytes(_png(index))
    return root


def _tar_of(folder: Path, target: Path, mode: str = "w") -> Path:
    # Sorted names, so that the members come in the folder's order.
    with tarfile.open(target, mode) as archive:
        for path in sorted(folder.rglob("*")):
            archive.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return target


def _tar_member(name: str, data: bytes, **fields) -> tuple[tarfile.TarInfo, io.BytesIO | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, (io.BytesIO(data) if info.isreg() else None)


# ---------------------------------------------------------------------------------------------
# 3. tar archives lose no member silently


def test_tar_hard_links_are_read_as_their_targets_bytes(tmp_path):
    folder = _folder(tmp_path / "images", 6)
    os.link(folder / "001.png", folder / "101.png")
    os.link(folder / "004.png", folder / "104.png")
    target = _tar_of(folder, tmp_path / "linked.tar")
    with tarfile.open(target) as archive:
        assert sum(info.islnk() for info in archive.getmembers()) == 2  # what tar writes for them
    from_folder = open_source(folder, workers=0)
    from_tar = open_source(target, workers=0)
    assert from_folder.n_images == from_tar.n_images == 8
    np.testing.assert_array_equal(_all_pixels(from_tar), _all_pixels(from_folder))


def test_tar_symbolic_link_members_are_read_as_their_target(tmp_path):
    target = tmp_path / "sym.tar"
    with tarfile.open(target, "w") as archive:
        archive.addfile(*_tar_member("a/real.png", _png(1)))
        archive.addfile(*_tar_member("b/link.png", b"", type=tarfile.SYMTYPE, linkname="../a/real.png"))
        archive.addfile(*_tar_member("b/nowhere.png", b"", type=tarfile.SYMTYPE, linkname="/etc/x.png"))
    source = open_source(target, workers=0)
    assert source.members == ["a/real.png", "b/link.png"]
    assert source.ignored == {"symbolic link to nothing in the archive (not read)": 1}
    pixels = _all_pixels(source)
    np.testing.assert_array_equal(pixels[0], pixels[1])


def _damage_header(tar_path: Path, member_index: int) -> None:
    with tarfile.open(tar_path) as archive:
        offset = archive.getmembers()[member_index].offset
    data = bytearray(tar_path.read_bytes())
    data[offset : offset + 8] = b"\xff" * 8  # the name field: the header checksum no longer matches
    tar_path.write_bytes(bytes(data))


@pytest.mark.parametrize("skip_bad", [False, True])
def test_tar_with_a_damaged_header_in_the_middle_is_an_error(tmp_path, skip_bad):
    target = _tar_of(_folder(tmp_path / "images", 8), tmp_path / "damaged.tar")
    _damage_header(target, 4)
    with pytest.raises(SourceError, match=r"damaged\.tar.*damaged"):
        open_source(target, skip_bad=skip_bad, workers=0)


@pytest.mark.parametrize("skip_bad", [False, True])
def test_tar_gz_with_corrupt_deflate_data_is_an_error(tmp_path, skip_bad):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(6):
        # Incompressible pixels, so that the compressed stream is long and a flip lands in data.
        (folder / f"{index:03d}.png").write_bytes(_png(index, 64, 64))
    target = _tar_of(folder, tmp_path / "corrupt.tar.gz", "w:gz")
    data = bytearray(target.read_bytes())
    for position in range(len(data) // 2, len(data) // 2 + 64):
        data[position] ^= 0x55
    target.write_bytes(bytes(data))
    with pytest.raises(SourceError, match=r"corrupt\.tar\.gz"):
        open_source(target, skip_bad=skip_bad, workers=0)


def test_truncated_tar_gz_is_an_error(tmp_path):
    target = _tar_of(_folder(tmp_path / "images", 6), tmp_path / "cut.tar.gz", "w:gz")
    data = target.read_bytes()
    target.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(SourceError, match=r"cut\.tar\.gz"):
        open_source(target, skip_bad=True, workers=0)


def test_tar_changed_after_opening_is_an_error_not_a_bad_file(tmp_path):
    target = _tar_of(_folder(tmp_path / "images", 6), tmp_path / "shrunk.tar")
    source = open_source(target, skip_bad=True, workers=0)
    data = target.read_bytes()
    target.write_bytes(data[:2048])  # the members after the first are gone
    with pytest.raises(SourceError, match=r"shrunk\.tar"):
        list(source.batches(2))


def test_duplicate_members_read_the_last_copy_in_zip_and_tar_alike(tmp_path, caplog):
    # Two copies of a.png (the second one stored as "./a.png" in one archive and plainly in the
    # other), and two of b.png under the very same name.
    copies = [("a.png", 1), ("./a.png", 2), ("b.png", 3), ("b.png", 4)]
    zip_path = tmp_path / "dup.zip"
    with zipfile.ZipFile(zip_path, "w") as archive, pytest.warns(UserWarning, match="Duplicate"):
        for member, seed in copies:
            archive.writestr(member, _png(seed))
    tar_path = tmp_path / "dup.tar"
    with tarfile.open(tar_path, "w") as archive:
        for member, seed in copies:
            archive.addfile(*_tar_member(member, _png(seed)))
    last = np.stack([_pixels(2), _pixels(4)])
    for path in (zip_path, tar_path):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fidkit"):
            source = open_source(path, workers=0)
        assert source.members == ["a.png", "b.png"]
        assert source.ignored == {"duplicate member name (an earlier copy, not read)": 2}
        np.testing.assert_array_equal(_all_pixels(source), last)
        messages = [r.getMessage() for r in caplog.records if "appears more than once" in r.getMessage()]
        assert len(messages) == 2 and all("the last copy in the archive is read" in m for m in messages)
