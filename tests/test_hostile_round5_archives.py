"""Hostile inputs, round 5, on archives: each test builds a small hostile zip, tar or dataset file.

* names that extract to one path (``a/b.png``, ``a/./b.png``, ``a//b.png``) are one member, read from its last copy;
  a name with a ``..`` part is counted under its own reason;
* the last entry of a name wins whatever its kind: a later folder, link to nothing or special member of a name
  leaves no image there (as ``tar -x`` leaves none), in tar and zip, and a CIFAR batch stored twice in its
  ``.tar.gz`` is read from its last copy;
* zip names without the UTF-8 flag are read as UTF-8 where they are, so order and subsets match a folder;
* a tar cut exactly at a member's header (no end-of-archive marker) is an error, while every tar that ``tar`` and
  ``tarfile`` write opens;
* a member's memory follows its image: a few KB of compressed zeros declaring tens of MB are refused as a bad file
  after their first bytes, and genuine images of every format read as from a folder;
* a file named as a tar that is not one, and an MNIST file of images 1 or 3 pixels wide, get messages about the file.
"""

from __future__ import annotations

import io
import logging
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

from fidkit.errors import EmptySourceError, ImageError, SourceError
from fidkit.sources import open_source
from fidkit.sources.files import PARENT_PART, normalise_member
from fidkit.testing import cifar_batch

MIB = 2**20
DUPLICATE = "duplicate member name (an earlier copy, not read)"


# --- helpers -----------------------------------------------------------------------------------------------


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


def _with_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose header (IHDR, with its CRC) declares `width` x `height` pixels."""
    header = struct.pack(">II", width, height) + data[24:29]
    chunk = b"IHDR" + header
    return data[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


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


# --- 1. names that extract to the same path ----------------------------------------------------------------


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


# --- 2. the last entry of a name wins, whatever its kind ---------------------------------------------------


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
    with tarfile.open(path, "w:gz") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
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


# --- 4. zip names without the UTF-8 flag -------------------------------------------------------------------


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


# --- 5. a tar cut exactly at a member header ---------------------------------------------------------------


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


# --- 6. memory follows what the image needs -----------------------------------------------------------------


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


# --- 7. messages about the file ---------------------------------------------------------------------------


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


@pytest.mark.parametrize("width", [1, 3])
@pytest.mark.parametrize("gzipped", [False, True])
def test_an_mnist_file_of_images_1_or_3_pixels_wide_is_read_as_images(tmp_path, width, gzipped) -> None:
    n, height = 4, 5
    pixels = np.arange(n * height * width, dtype=np.uint8).reshape(n, height, width)
    raw = struct.pack(">IIII", 0x803, n, height, width) + pixels.tobytes()
    path = tmp_path / ("x-idx3-ubyte.gz" if gzipped else "x-idx3-ubyte")
    path.write_bytes(__import__("gzip").compress(raw) if gzipped else raw)
    source = open_source(path, workers=0)
    images = np.concatenate(list(source.batches(2)))
    assert images.shape == (n, height, width, 3)
    assert np.array_equal(images, np.repeat(pixels[..., None], 3, axis=3))


def test_an_mnist_file_of_no_images_says_so_from_its_header(tmp_path) -> None:
    path = tmp_path / "none-idx3-ubyte"
    path.write_bytes(struct.pack(">IIII", 0x803, 0, 28, 28))
    with pytest.raises(EmptySourceError, match="the MNIST header says 0 images of 28x28"):
        open_source(path, workers=0)


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


# -- the review of the bounded reading ------------------------------------------------------------------------


def _noise_png(path: Path, side: int) -> bytes:
    Image.fromarray(np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    return path.read_bytes()


@pytest.mark.parametrize("kind", ["folder", "zip", "tar", "tar.gz"])
def test_a_large_file_is_returned_as_bytes_and_held_once(tmp_path, kind):
    # io.BytesIO copies a bytearray (not bytes): the decoder held every file over 64 KiB twice.
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
        reader = open_archive(archive, str(archive), limit=None, seed=None, skip_bad=False, exif_transpose=False,
                              workers=0)._reader
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
