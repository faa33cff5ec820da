"""fidkit.sources on zip and tar archives: no member dropped without a count, the last entry of a name read,
names read as they extract, damage an error naming the file, memory bounded by what an image needs.

Every archive is built in ``tmp_path``; the groups below came from the hostile-input reviews (the issue 9 review and
round 5), whose item numbers they keep.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import shutil
import stat
import struct
import subprocess
import tarfile
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from fidkit.errors import EmptySourceError, FidkitError, ImageError, SourceError
from fidkit.sources import open_source
from fidkit.sources.files import PARENT_PART, normalise_member
from fidkit.testing import cifar_batch, tar_of

from image_files import _all_pixels, _folder, _pixels, _png, _tar_member

MIB = 2**20


# --- hostile review (issue 9), 3: tar archives lose no member silently ----------------------------------------------


def _tar_of(folder: Path, target: Path, mode: str = "w") -> Path:
    # Sorted names, so that the members come in the folder's order.
    with tarfile.open(target, mode) as archive:
        for path in sorted(folder.rglob("*")):
            archive.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return target


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


# --- hostile review (issue 9), 11: errors of zipfile / tarfile / the decompressors are FidkitErrors naming the file ---


def _zip_of_pngs(target: Path, n: int = 3) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for index in range(n):
            archive.writestr(f"{index:03d}.png", _png(index))
    return target


def test_zip_needing_an_unknown_version_to_extract_is_a_source_error(tmp_path):
    target = _zip_of_pngs(tmp_path / "future.zip")
    data = bytearray(target.read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 6] = 0xFF  # "version needed to extract": 25.5, which zipfile refuses
    target.write_bytes(bytes(data))
    with pytest.raises(SourceError, match=r"future\.zip: not a readable zip archive \(NotImplementedError"):
        open_source(target, skip_bad=True)


def test_zip_member_with_an_unknown_compression_method_is_a_bad_file_naming_it(tmp_path):
    target = _zip_of_pngs(tmp_path / "method.zip")
    data = bytearray(target.read_bytes())
    central = data.index(b"PK\x01\x02")
    local = data.index(b"PK\x03\x04")
    data[central + 10] = 99  # the first member's compression method (AES, not supported)
    data[local + 8] = 99
    target.write_bytes(bytes(data))
    with pytest.raises(ImageError, match=r"method\.zip: 1 of 3 .*000\.png: unreadable \(NotImplementedError"):
        list(open_source(target, workers=0).batches(4))
    source = open_source(target, workers=0, skip_bad=True)
    assert len(_all_pixels(source)) == 2
    assert [file for file, _ in source.skipped] == ["000.png"]


@pytest.mark.parametrize("mode, suffix", [("w:gz", ".tar.gz"), ("w:bz2", ".tar.bz2"), ("w:xz", ".tar.xz")])
@pytest.mark.parametrize("where", [0.3, 0.6, 0.9])
def test_compressed_tar_with_corrupt_data_is_a_source_error(tmp_path, mode, suffix, where):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(4):
        (folder / f"{index:03d}.png").write_bytes(_png(index, 48, 48))
    target = _tar_of(folder, tmp_path / f"bad{suffix}", mode)
    data = bytearray(target.read_bytes())
    position = int(len(data) * where)
    data[position : position + 16] = bytes(b ^ 0xA5 for b in data[position : position + 16])
    target.write_bytes(bytes(data))
    with pytest.raises(SourceError, match=rf"bad{suffix.replace('.', r'[.]')}"):
        open_source(target, skip_bad=True, workers=0)


def test_corrupt_gzip_after_opening_is_a_source_error_while_reading(tmp_path, monkeypatch):
    target = _tar_of(_folder(tmp_path / "images", 4), tmp_path / "later.tar.gz", "w:gz")
    source = open_source(target, skip_bad=True, workers=0)
    import fidkit.sources.archives as archives

    def broken_open(*args, **kwargs):
        raise gzip.BadGzipFile("Not a gzipped file (b'xx')")

    monkeypatch.setitem(archives._TAR_OPENERS, "gz", broken_open)
    with pytest.raises(SourceError, match=r"later\.tar\.gz: the archive is damaged \(BadGzipFile"):
        list(source.batches(2))


def test_every_archive_failure_is_a_fidkit_error(tmp_path):
    # A few shapes of garbage under archive names: never a raw traceback.
    garbage = {
        "empty.zip": b"",
        "half.zip": _zip_of_pngs(tmp_path / "x.zip").read_bytes()[:200],
        "empty.tar.gz": b"",
        "nogzip.tar.gz": b"\x1f\x8b" + b"\x00" * 30,
        "junk.tar.xz": b"\xfd7zXZ\x00" + b"junk" * 10,
        "junk.tar.bz2": b"BZh9" + b"junk" * 10,
    }
    for file_name, content in garbage.items():
        path = tmp_path / file_name
        path.write_bytes(content)
        with pytest.raises(FidkitError, match=file_name.replace(".", "[.]")):
            list(open_source(path, skip_bad=True, workers=0).batches(2))


# --- hostile round 5, 1: names that extract to the same path --------------------------------------------------------


DUPLICATE = "duplicate member name (an earlier copy, not read)"


def png(value: int, size: int = 4) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def first_values(source) -> list[int]:
    """The red value of each image's first pixel, in the source's order."""
    return [int(image[0, 0, 0]) for batch in source.batches(64) for image in batch]


def write_tar(path: Path, entries: list[tuple], mode: str = "w") -> Path:
    """A tar of `entries`: (name, bytes) for a file, or (name, tarfile type[, link name]) for anything else."""
    with tarfile.open(str(path), mode) as tar:
        for name, what, *link in entries:
            info = tarfile.TarInfo(name)
            if len(what) > 1:  # file data; tarfile's types are one byte
                info.size = len(what)
                tar.addfile(info, io.BytesIO(what))
            else:
                info.type = what
                info.linkname = link[0] if link else ""
                tar.addfile(info)
    return path


def write_zip(path: Path, entries: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("./a/b.png", "a/b.png"),
        ("a/./b.png", "a/b.png"),
        ("a//b.png", "a/b.png"),
        ("/a/b.png", "a/b.png"),
        (".//a/.//./b.png", "a/b.png"),
        ("a\\b.png", "a/b.png"),
        ("dir/", "dir"),
        ("x/../a.png", "x/../a.png"),
    ],
)
def test_member_names_are_the_paths_they_extract_to(stored: str, expected: str) -> None:
    assert normalise_member(stored) == expected


@pytest.mark.filterwarnings("ignore:Duplicate name")  # zipfile warns when writing them
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_names_that_extract_to_one_path_are_one_member_read_from_its_last_copy(tmp_path, caplog, kind) -> None:
    names = ["c/d.png", "a/b.png", "a/./b.png", "c/d.png", "a//b.png", "./a/b.png", "c//./d.png"]
    entries = [(name, png(10 * (index + 1))) for index, name in enumerate(names)]
    if kind == "zip":
        archive = write_zip(tmp_path / "dots.zip", entries)
    else:
        archive = write_tar(tmp_path / "dots.tar", entries)
    with caplog.at_level(logging.WARNING, logger="fidkit"):
        source = open_source(archive, workers=0)
    assert source.members == ["a/b.png", "c/d.png"]
    assert first_values(source) == [60, 70]  # the last copy of each name
    assert source.ignored == {DUPLICATE: 5}
    assert "a/b.png appears more than once" in caplog.text and "c/d.png appears more than once" in caplog.text


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_a_name_with_a_parent_part_is_counted_under_its_own_reason_not_as_a_hidden_folder(tmp_path, kind) -> None:
    entries = [("x/../a.png", png(1)), ("../b.png", png(2)), ("sub/../../c.png", png(3)), ("ok.png", png(4))]
    if kind == "zip":
        archive = write_zip(tmp_path / "up.zip", entries)
    else:
        archive = write_tar(tmp_path / "up.tar", entries)
    source = open_source(archive, workers=0)
    assert source.members == ["ok.png"]
    assert source.ignored == {PARENT_PART: 3}
    assert "'..'" in PARENT_PART and "hidden" not in PARENT_PART


# --- hostile round 5, 2: the last entry of a name wins, whatever its kind -------------------------------------------


def test_a_later_folder_link_or_special_member_replaces_an_earlier_file_in_a_tar(tmp_path, caplog) -> None:
    archive = write_tar(
        tmp_path / "kinds.tar",
        [
            ("x.png", png(10)),
            ("x.png", tarfile.DIRTYPE),
            ("x.png/y.png", png(20)),
            ("s.png", png(30)),
            ("s.png", tarfile.SYMTYPE, "nowhere.png"),
            ("f.png", png(40)),
            ("f.png", tarfile.FIFOTYPE),
            ("l.png", png(50)),
            ("l.png", tarfile.SYMTYPE, "x.png/y.png"),  # a link that resolves: read as its target
            ("k.png", png(60)),
        ],
    )
    with caplog.at_level(logging.WARNING, logger="fidkit"):
        source = open_source(archive, workers=0)
    assert source.members == ["k.png", "l.png", "x.png/y.png"]
    assert first_values(source) == [60, 20, 20]
    assert source.ignored[DUPLICATE] == 4
    assert "x.png appears more than once, the last time as a folder" in caplog.text


@pytest.mark.filterwarnings("ignore:Duplicate name")  # zipfile warns when writing them
def test_a_later_folder_or_link_member_replaces_an_earlier_file_in_a_zip(tmp_path) -> None:
    archive = tmp_path / "kinds.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("x.png", png(10))
        zipped.writestr("x.png/", b"")
        zipped.writestr("x.png/y.png", png(20))
        zipped.writestr("s.png", png(30))
        link = zipfile.ZipInfo("s.png")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zipped.writestr(link, b"a.png")
        zipped.writestr("k.png", png(40))
    source = open_source(archive, workers=0)
    assert source.members == ["k.png", "x.png/y.png"]
    assert first_values(source) == [40, 20]
    assert source.ignored[DUPLICATE] == 2


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs the tar command")
def test_the_members_of_a_tar_are_the_image_files_tar_extracts(tmp_path) -> None:
    archive = write_tar(
        tmp_path / "mixed.tar",
        [
            ("p/q.png", png(1)),
            ("p/./q.png", png(2)),
            ("x.png", png(3)),
            ("x.png", tarfile.DIRTYPE),
            ("x.png/y.png", png(4)),
            ("z.png", png(5)),
            ("z.png", png(6)),
            ("f.png", png(7)),
            ("f.png", tarfile.FIFOTYPE),
        ],
    )
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-C", str(out), "-xf", str(archive)], check=True, capture_output=True)
    extracted = sorted(
        path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file() and not path.is_symlink()
    )
    source = open_source(archive, workers=0)
    assert source.members == extracted == ["p/q.png", "x.png/y.png", "z.png"]
    assert first_values(source) == [int(np.asarray(Image.open(out / member))[0, 0, 0]) for member in extracted]


def _cifar_tar(path: Path, entries: list[tuple[str, bytes | None]]) -> Path:
    path.write_bytes(tar_of([(f"cifar-10-batches-py/{name}", data) for name, data in entries], gz=True))
    return path


def _batch(value: int, n: int = 3) -> bytes:
    return cifar_batch(np.full((n, 32, 32, 3), value, np.uint8))


def test_a_cifar_batch_stored_twice_is_read_from_its_last_copy(tmp_path, caplog) -> None:
    batches = [(f"data_batch_{i}", _batch(10 * i)) for i in range(1, 6)]
    archive = _cifar_tar(tmp_path / "cifar-10-python.tar.gz", [*batches, ("data_batch_2", _batch(99, n=2))])
    with caplog.at_level(logging.WARNING, logger="fidkit"):
        source = open_source(archive, workers=0)
    assert first_values(source) == [10] * 3 + [99] * 2 + [30] * 3 + [40] * 3 + [50] * 3
    assert "cifar-10-batches-py/data_batch_2 more than once" in caplog.text


def test_a_cifar_batch_whose_last_entry_is_a_folder_is_missing(tmp_path) -> None:
    batches = [(f"data_batch_{i}", _batch(10 * i)) for i in range(1, 6)]
    archive = _cifar_tar(tmp_path / "cifar-10-python.tar.gz", [*batches, ("data_batch_4", None)])
    with pytest.raises(SourceError, match="no member cifar-10-batches-py/data_batch_4"):
        open_source(archive, workers=0)


# --- hostile round 5, 4: zip names without the UTF-8 flag -----------------------------------------------------------


def clear_utf8_flags(path: Path) -> None:
    """Clear general-purpose bit 11 (UTF-8 names) in every header, as Info-ZIP's zip 3.0 writes zips."""
    data = bytearray(path.read_bytes())
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (found := data.find(signature, start)) >= 0:
            flags = struct.unpack_from("<H", data, found + flag_at)[0]
            struct.pack_into("<H", data, found + flag_at, flags & ~0x800)
            start = found + 4
    path.write_bytes(bytes(data))


def test_zip_names_without_the_utf8_flag_are_read_as_utf8_like_the_same_files_in_a_folder(tmp_path) -> None:
    names = {"z.png": 3, "é.png": 1, "ê.png": 2, "日本/猫.png": 4, "a.png": 5}
    folder = tmp_path / "folder"
    for name, value in names.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(png(value))
    archive = write_zip(tmp_path / "infozip.zip", [(name, png(value)) for name, value in names.items()])
    clear_utf8_flags(archive)
    with zipfile.ZipFile(archive) as zipped:  # what zipfile itself makes of them: cp437
        assert "├⌐.png" in zipped.namelist()
    from_zip, from_folder = open_source(archive, workers=0), open_source(folder, workers=0)
    assert from_zip.members == from_folder.members == sorted(names)
    assert first_values(from_zip) == first_values(from_folder)
    subset = dict(limit=3, seed=7)
    assert open_source(archive, workers=0, **subset).members == open_source(folder, workers=0, **subset).members
    # The names the cache key lists are the UTF-8 names: the same archive read before this fix had other names.
    assert "é.png" in str(from_zip._identity(hash_content=False))


def test_zip_names_that_are_not_utf8_stay_cp437_and_the_unicode_path_field_wins(tmp_path) -> None:
    archive = tmp_path / "cp437.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr(b"\x82.png".decode("cp437"), png(1))  # 'é' in cp437: b'\x82' is no UTF-8
        info = zipfile.ZipInfo(b"x\x8a.png".decode("cp437"))
        body = b"\x01" + struct.pack("<I", zlib.crc32(b"x\x8a.png")) + "xè.png".encode("utf-8")
        info.extra = struct.pack("<HH", 0x7075, len(body)) + body
        zipped.writestr(info, png(2))
    clear_utf8_flags(archive)
    source = open_source(archive, workers=0)
    assert source.members == ["xè.png", "é.png"]
    assert first_values(source) == [2, 1]


# --- hostile round 5, 5: a tar cut exactly at a member header -------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("cut_before", [1, 3])
def test_a_tar_cut_exactly_at_a_member_header_is_an_error_naming_it(tmp_path, compress, cut_before) -> None:
    full = write_tar(tmp_path / "full.tar", [(f"img{i}.png", png(10 * i)) for i in range(5)], )
    with tarfile.open(full) as tar:
        offsets = [member.offset for member in tar]
    cut = full.read_bytes()[: offsets[cut_before]]
    path = tmp_path / ("cut.tar.gz" if compress else "cut.tar")
    path.write_bytes(__import__("gzip").compress(cut) if compress else cut)
    with pytest.raises(SourceError, match="ends without tar's end-of-archive marker") as raised:
        open_source(path, workers=0)
    assert str(path) in str(raised.value) and "download it again" in str(raised.value)


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz", "w|", "w|gz"])
@pytest.mark.parametrize("format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_every_tar_that_tarfile_writes_opens(tmp_path, mode, format) -> None:
    path = tmp_path / ("t.tar" + ("." + mode[2:] if len(mode) > 2 else ""))
    with tarfile.open(str(path), mode, format=format) as tar:
        for i in range(3):
            info = tarfile.TarInfo(f"d/img{i}.png")
            data = png(i + 1)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert first_values(open_source(path, workers=0)) == [1, 2, 3]


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs the tar command")
@pytest.mark.parametrize("flags", [["-cf"], ["-czf"], ["-cjf"], ["--format=posix", "-cf"], ["--format=ustar", "-cf"],
                                   ["--format=v7", "-cf"], ["--blocking-factor=1", "-cf"]])
def test_every_tar_that_gnu_tar_writes_opens(tmp_path, flags) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        (folder / f"img{i}.png").write_bytes(png(i + 1))
    path = tmp_path / ("t.tar.gz" if "-czf" in flags else "t.tar.bz2" if "-cjf" in flags else "t.tar")
    subprocess.run(["tar", *flags, str(path), "-C", str(folder), "."], check=True, capture_output=True)
    assert first_values(open_source(path, workers=0)) == [1, 2, 3]


def test_a_tar_of_no_members_is_an_empty_source_not_a_damaged_one(tmp_path) -> None:
    for mode, suffix in (("w", ".tar"), ("w:gz", ".tar.gz")):
        path = tmp_path / f"nothing{suffix}"
        tarfile.open(path, mode).close()
        with pytest.raises(EmptySourceError, match="no images"):
            open_source(path, workers=0)


# --- hostile round 5, 6: memory follows what the image needs --------------------------------------------------------


def _with_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose header (IHDR, with its CRC) declares `width` x `height` pixels."""
    header = struct.pack(">II", width, height) + data[24:29]
    chunk = b"IHDR" + header
    return data[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


def _bombs() -> dict[str, bytes]:
    return {
        "zeros.png": bytes(32 * MIB),  # no image at all
        "appended.png": png(7) + bytes(32 * MIB),  # a 16-pixel image, then tens of MB
        "huge.png": _with_size(png(7), 60_000, 60_000) + bytes(2 * MIB),  # 3.6 Gpx declared
        "good.png": png(5),
    }


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_a_member_of_compressed_zeros_is_refused_as_a_bad_file_without_being_read_whole(tmp_path, kind) -> None:
    bombs = _bombs()
    if kind == "zip":
        archive = write_zip(tmp_path / "bomb.zip", list(bombs.items()), zipfile.ZIP_DEFLATED)
    else:
        archive = write_tar(tmp_path / "bomb.tar.gz", list(bombs.items()), "w:gz")
    assert archive.stat().st_size < 2 * MIB
    source = open_source(archive, workers=0, skip_bad=True)
    tracemalloc.start()
    try:
        values = first_values(source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert values == [5]
    reasons = dict(source.skipped)
    assert set(reasons) == {"zeros.png", "appended.png", "huge.png"}
    assert "not an image Pillow can read" in reasons["zeros.png"]
    assert "more than an image of its 16 pixels can take" in reasons["appended.png"]
    assert "decompression bomb" in reasons["huge.png"]
    assert peak < 8 * MIB, f"peak {peak / MIB:.1f} MiB: a member was read whole"
    with pytest.raises(ImageError, match="3 of 4 image files"):
        first_values(open_source(archive, workers=0))


def _images() -> dict[str, bytes]:
    """Genuine images above the head size of every format, with metadata beyond the head where it can be."""
    rng = np.random.default_rng(0)
    pixels = [Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) for _ in range(4)]
    files: dict[str, bytes] = {}

    def save(name: str, image: Image.Image, fmt: str, **options) -> None:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        files[name] = buffer.getvalue()

    text = PngImagePlugin.PngInfo()
    text.add_text("workflow", "x" * 200_000)  # a text chunk before the pixels, longer than the head
    save("a.png", pixels[0], "PNG")
    save("text.png", pixels[0], "PNG", pnginfo=text)
    save("icc.jpg", pixels[1], "JPEG", icc_profile=rng.integers(0, 256, 300_000, dtype=np.uint8).tobytes())
    save("plain.jpg", pixels[1], "JPEG", quality=100)
    save("lossy.webp", pixels[2], "WEBP", quality=100)
    save("lossless.webp", pixels[2], "WEBP", lossless=True)
    save("animated.webp", pixels[2], "WEBP", save_all=True, append_images=pixels[:3], lossless=True)
    save("raw.tif", pixels[3], "TIFF")
    save("lzw.tif", pixels[3], "TIFF", compression="tiff_lzw")  # directory after the pixels
    pages = [page.copy() for page in pixels[:3] * 3]
    save("pages.tif", pixels[3], "TIFF", save_all=True, append_images=pages)  # more than its first page holds
    save("a.bmp", pixels[0], "BMP")
    assert all(len(data) > 64 * 1024 for data in files.values()), {name: len(data) for name, data in files.items()}
    return files


def test_genuine_images_larger_than_the_head_read_as_from_a_folder(tmp_path) -> None:
    files = _images()
    folder = tmp_path / "folder"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    zipped = write_zip(tmp_path / "images.zip", list(files.items()), zipfile.ZIP_DEFLATED)
    tarred = write_tar(tmp_path / "images.tar.gz", list(files.items()), "w:gz")
    expected = [image for batch in open_source(folder, workers=0).batches(1) for image in batch]
    assert len(expected) == len(files)
    for archive in (zipped, tarred):
        source = open_source(archive, workers=0)
        got = [image for batch in source.batches(1) for image in batch]
        assert source.skipped == []
        assert len(got) == len(expected) and all(np.array_equal(a, b) for a, b in zip(got, expected))


def test_a_large_zip_member_with_a_wrong_crc_is_still_a_bad_file(tmp_path) -> None:
    data = _images()["a.bmp"]
    archive = write_zip(tmp_path / "crc.zip", [("a.bmp", data), ("b.png", png(3))])
    raw = bytearray(archive.read_bytes())
    raw[raw.find(data[:64]) + 40_000] ^= 0xFF  # one pixel byte, deep past the head
    archive.write_bytes(bytes(raw))
    source = open_source(archive, workers=0, skip_bad=True)
    assert first_values(source) == [3]
    assert [name for name, _ in source.skipped] == ["a.bmp"] and "CRC" in source.skipped[0][1]


# --- hostile round 5, 7: messages about the file --------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tgz"])
def test_a_zip_named_as_a_tar_says_it_is_a_zip_and_to_rename_it(tmp_path, suffix) -> None:
    path = write_zip(tmp_path / f"images{suffix}", [("a.png", png(1))])
    with pytest.raises(SourceError) as raised:
        open_source(path, workers=0)
    message = str(raised.value)
    assert "\n" not in message and "method gz" not in message
    assert str(path) in message and "a zip archive" in message and "rename it to end in .zip" in message


def test_an_empty_or_foreign_file_named_tar_says_what_it_is(tmp_path) -> None:
    cases = {
        "empty.tar": (b"", "empty \\(0 bytes\\)"),
        "page.tar": (b"<!DOCTYPE html><html><body>Access denied</body></html>", "web page \\(HTML\\)"),
        "junk.tar": (bytes(range(256)) * 8, "match no archive fidkit reads"),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SourceError, match=expected) as raised:
            open_source(tmp_path / name, workers=0)
        assert "\n" not in str(raised.value)
    tarred = write_tar(tmp_path / "real.tar", [("a.png", png(1))])
    shutil.copy(tarred, tmp_path / "real.zip")
    with pytest.raises(SourceError, match="it is a tar archive, not a zip archive: rename it to end in .tar"):
        open_source(tmp_path / "real.zip", workers=0)


def test_an_encrypted_zip_member_is_one_bad_file_with_a_plain_reason(tmp_path):
    # zipfile's own error was a RuntimeError quoting a ZipInfo dump.
    path = tmp_path / "some-encrypted.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.png", png(10))
        archive.writestr("b.png", png(20))
    # Mark b.png encrypted (bit 0 of the flags) in its local header and its central directory entry: zipfile
    # then asks for a password to read it. (zipfile writes no encrypted member itself.)
    data = bytearray(path.read_bytes())
    for signature, flags_at, name_at in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
        start = 0
        while (start := data.find(signature, start)) >= 0:
            if data[start + name_at : start + name_at + 5] == b"b.png":
                data[start + flags_at] |= 0x1
            start += 4
    path.write_bytes(bytes(data))
    source = open_source(path, workers=0, skip_bad=True)
    assert sum(len(batch) for batch in source.batches(4)) == 1
    assert [name for name, _ in source.skipped] == ["b.png"]
    assert "encrypted in the zip archive" in source.skipped[0][1] and "ZipInfo" not in source.skipped[0][1]


# --- hostile round 5: the review of the bounded reading -------------------------------------------------------------


def _noise_png(path: Path, side: int) -> bytes:
    Image.fromarray(np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    return path.read_bytes()


@pytest.mark.parametrize("kind", ["folder", "zip", "tar", "tar.gz"])
def test_a_large_file_is_returned_as_bytes_and_held_once(tmp_path, kind):
    # io.BytesIO copies a bytearray (not bytes): the decoder held every file over 64 KiB twice.
    from fidkit.sources import ReadOptions
    from fidkit.sources.archives import TarReader, ZipReader, open_archive
    from fidkit.sources.files import FolderReader

    folder = tmp_path / "images"
    folder.mkdir()
    expected = _noise_png(folder / "big.png", 700)  # about 1.5 MB of incompressible pixels
    if kind == "folder":
        reader = FolderReader(folder)
    else:
        suffix = {"zip": ".zip", "tar": ".tar", "tar.gz": ".tar.gz"}[kind]
        archive = tmp_path / f"images{suffix}"
        if kind == "zip":
            with zipfile.ZipFile(archive, "w") as zipped:
                zipped.write(folder / "big.png", "big.png")
        else:
            with tarfile.open(archive, "w:gz" if kind == "tar.gz" else "w") as tarred:
                tarred.add(folder / "big.png", "big.png")
        reader = open_archive(archive, str(archive), ReadOptions(workers=0))._reader
        assert isinstance(reader, (ZipReader, TarReader))
    tracemalloc.start()
    try:
        data = reader.read("big.png", 100 * 2**20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        reader.close()
    assert type(data) is bytes and data == expected
    if kind in ("folder", "tar"):  # read again from the start: one copy at any time
        assert peak < 1.5 * len(expected), (peak, len(expected))


def test_animated_images_are_bounded_by_the_global_limit_not_their_first_frame(tmp_path, monkeypatch):
    # An animated PNG or WebP of many frames is far larger than one frame can need; it was refused as a bomb.
    import fidkit.sources.bounded as bounded

    monkeypatch.setattr(bounded, "max_file_bytes", lambda pixels: pixels * 8)  # no 16 MiB of slack: a small file
    rng = np.random.default_rng(5)
    frames = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(12)]
    folder = tmp_path / "animated"
    folder.mkdir()
    frames[0].save(folder / "a.png", save_all=True, append_images=frames[1:])
    frames[0].save(folder / "b.webp", save_all=True, append_images=frames[1:], lossless=True)
    frames[0].save(folder / "still.png")
    data = (folder / "still.png").read_bytes()
    (folder / "padded.png").write_bytes(data + bytes(200_000))  # a still image far over its own bound
    for name in ("a.png", "b.webp"):
        assert (folder / name).stat().st_size > 64 * 64 * 8 and (folder / name).stat().st_size > bounded.HEAD_BYTES
    source = open_source(folder, workers=0, skip_bad=True)
    assert sum(len(batch) for batch in source.batches(8)) == 3
    assert [name for name, _ in source.skipped] == ["padded.png"]


def test_running_out_of_open_files_in_an_archive_is_no_damage(tmp_path, monkeypatch):
    # EMFILE while (re)opening the archive said "the archive is damaged ... download it again".
    import errno

    from fidkit.errors import ResourceError

    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for index in range(3):
            zipped.writestr(f"{index}.png", png(index))
    source = open_source(archive, workers=0)
    real_zipfile = zipfile.ZipFile

    def no_files_left(path, *args, **kwargs):
        if Path(path) == archive:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_zipfile(path, *args, **kwargs)

    monkeypatch.setattr(zipfile, "ZipFile", no_files_left)
    with pytest.raises(ResourceError, match=r"Too many open files.*ulimit -n"):
        list(source.batches(4))


# --- hostile round 7, 2: tar symbolic links resolved as on disk after tar -x ----------------------------------------

_FOLDER_SEEN = "folder already read under another name (a link to it, or a loop)"
_LINK_TO_NOTHING = "symbolic link to nothing in the archive (not read)"

# Links that resolve once extracted: through a link to a folder, through a chain of links of any name, ".." taken
# from where a link led (physically, as the kernel does; "deep/up/../a.png" is real/a.png, not deep/a.png), links to
# folders (one named like an image, one hidden).
_RESOLVING_LINKS = [
    ("real", tarfile.DIRTYPE),
    ("real/sub", tarfile.DIRTYPE),
    ("real/a.png", png(10)),
    ("c.png", png(20)),
    ("dirlink", tarfile.SYMTYPE, "real"),
    ("x.png", tarfile.SYMTYPE, "dirlink/a.png"),
    ("chain.png", tarfile.SYMTYPE, "b"),
    ("b", tarfile.SYMTYPE, "c.png"),
    ("twice", tarfile.SYMTYPE, "dirlink"),
    ("far/y.png", tarfile.SYMTYPE, "../twice/a.png"),
    ("deep/up", tarfile.SYMTYPE, "../real/sub"),
    ("deep/w.png", tarfile.SYMTYPE, "up/../a.png"),
    ("pics.png", tarfile.SYMTYPE, "real"),
    (".cache", tarfile.SYMTYPE, "real"),
]


def test_tar_links_through_folder_links_and_chains_are_read_as_their_target(tmp_path):
    source = open_source(write_tar(tmp_path / "links.tar", _RESOLVING_LINKS), workers=0)
    assert source.members == ["c.png", "chain.png", "deep/w.png", "far/y.png", "real/a.png", "x.png"]
    assert first_values(source) == [20, 20, 10, 10, 10, 10]
    assert source.ignored == {
        _FOLDER_SEEN: 4,  # dirlink, twice, deep/up, pics.png
        "hidden folder, not read (dot-folders such as .ipynb_checkpoints, @eaDir, __MACOSX)": 1,  # .cache
    }


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs the tar command")
def test_tar_links_give_what_tar_x_then_reading_the_folder_gives(tmp_path):
    archive = write_tar(tmp_path / "links.tar", _RESOLVING_LINKS)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-C", str(out), "-xf", str(archive)], check=True, capture_output=True)
    from_tar, from_folder = open_source(archive, workers=0), open_source(out, workers=0)
    assert from_tar.members == from_folder.members
    assert from_tar.ignored == from_folder.ignored
    np.testing.assert_array_equal(_all_pixels(from_tar), _all_pixels(from_folder))


def test_tar_links_that_leave_the_archive_loop_or_use_a_file_as_a_folder_are_counted_not_read(tmp_path):
    entries = [
        ("a.png", png(1)),
        ("loop1", tarfile.SYMTYPE, "loop2"),
        ("loop2", tarfile.SYMTYPE, "loop1"),
        ("looped.png", tarfile.SYMTYPE, "loop1/a.png"),
        ("up", tarfile.SYMTYPE, ".."),
        ("outside.png", tarfile.SYMTYPE, "up/a.png"),  # the folder above the archive's
        ("etc", tarfile.SYMTYPE, "/etc"),
        ("abs.png", tarfile.SYMTYPE, "etc/x.png"),
        ("through_file.png", tarfile.SYMTYPE, "a.png/x.png"),
        ("self.png", tarfile.SYMTYPE, "self.png"),
    ]
    source = open_source(write_tar(tmp_path / "bad_links.tar", entries), workers=0)
    assert source.members == ["a.png"]
    assert source.ignored == {_LINK_TO_NOTHING: 5}


# --- hostile round 7, 3: a file named as the wrong kind says what it is by its content ------------------------------


@pytest.mark.parametrize("n_images", [1, 2, 5])
def test_a_zip_of_images_named_npz_says_so_and_to_rename_it_zip(tmp_path, n_images) -> None:
    path = write_zip(tmp_path / "samples.npz", [(f"img{index}.jpg", png(index)) for index in range(n_images)])
    with pytest.raises(SourceError) as raised:
        open_source(path, workers=0)
    message = str(raised.value)
    assert message.startswith(f"{path}: a zip archive of image files (img0.jpg")
    assert "rename it to end in .zip" in message and "none is named" not in message
    shutil.copy(path, tmp_path / "samples.zip")  # the advice works
    assert open_source(tmp_path / "samples.zip", workers=0).n_images == n_images


def test_an_npz_whose_array_is_named_like_an_image_is_still_read(tmp_path) -> None:
    np.savez(tmp_path / "odd.npz", **{"x.png": np.zeros((3, 4, 4, 3), np.uint8)})
    assert open_source(tmp_path / "odd.npz").n_images == 3


@pytest.mark.parametrize("suffix", [".zip", ".tar", ".tar.gz"])
def test_a_numpy_array_named_as_an_archive_says_so_and_to_rename_it_npy(tmp_path, suffix) -> None:
    path = tmp_path / f"samples{suffix}"
    with open(path, "wb") as stream:
        np.save(stream, np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(SourceError) as raised:
        open_source(path, workers=0)
    message = str(raised.value)
    assert "numpy array (.npy data)" in message and "rename it to end in .npy" in message
    assert "download it again" not in message and "\n" not in message


@pytest.mark.parametrize("suffix", [".zip", ".tar"])
def test_a_numpy_archive_named_as_an_archive_of_images_says_so_and_to_rename_it_npz(tmp_path, suffix) -> None:
    np.savez(tmp_path / "arrays.npz", images=np.zeros((2, 4, 4, 3), np.uint8), labels=np.arange(2))
    path = tmp_path / f"arrays{suffix}"
    shutil.copy(tmp_path / "arrays.npz", path)
    with pytest.raises(SourceError) as raised:
        open_source(path, workers=0)
    message = str(raised.value)
    assert "numpy archive (.npz" in message and "rename it to end in .npz" in message
    assert "other members ignored" not in message
    if suffix == ".zip":
        assert "images.npy, labels.npy" in message


def test_a_zip_of_images_with_a_npy_member_keeps_its_usual_reading(tmp_path) -> None:
    path = write_zip(tmp_path / "mixed.zip", [("a.png", png(1)), ("meta.npy", b"\x93NUMPY")])
    assert open_source(path, workers=0).n_images == 1
    only_other = write_zip(tmp_path / "other.zip", [("labels.npy", b"\x93NUMPY"), ("notes.txt", b"x")])
    with pytest.raises(EmptySourceError, match="2 other members ignored"):
        open_source(only_other, workers=0)
