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


# ---------------------------------------------------------------------------------------------
# 2. folders drop no image silently


def _refuse_scandir_of(monkeypatch, refused: Path) -> None:
    # The tests run as root, which chmod 000 does not stop: refuse the listing itself.
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == refused:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_unreadable_subfolder_is_an_error_naming_it(tmp_path, monkeypatch):
    root = tmp_path / "images"
    _folder(root / "a", 3)
    _folder(root / "b", 3, start=3)
    _refuse_scandir_of(monkeypatch, root / "b")
    with pytest.raises(SourceError, match=r"images.*subfolder b/.*Permission denied.*--skip-bad"):
        open_source(root, workers=0)


def test_unreadable_subfolder_with_skip_bad_is_a_counted_skip(tmp_path, monkeypatch):
    root = tmp_path / "images"
    _folder(root / "a", 3)
    _folder(root / "b", 3, start=3)
    _refuse_scandir_of(monkeypatch, root / "b")
    source = open_source(root, workers=0, skip_bad=True)
    assert source.n_images == 3
    assert [file for file, _ in source.skipped] == ["b/"]
    assert len(_all_pixels(source)) == 3
    assert [file for file, _ in source.skipped] == ["b/"]  # still there after a run
    assert "unreadable folder" in source.skipped[0][1]


def test_symlinked_folders_are_followed_each_real_folder_once(tmp_path):
    real = _folder(tmp_path / "real", 4)
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(real, target_is_directory=True)
    (root / "second_link").symlink_to(real, target_is_directory=True)
    (real / "loop").symlink_to(root, target_is_directory=True)  # a cycle back to the top
    source = open_source(root, workers=0)
    assert source.n_images == 4
    assert all(member.startswith("link/") for member in source.members)
    assert source.ignored == {"folder already read under another name (a link to it, or a loop)": 2}
    np.testing.assert_array_equal(_all_pixels(source), np.stack([_pixels(i) for i in range(4)]))


def test_a_folder_read_by_its_own_name_wins_over_a_link_to_it(tmp_path):
    root = tmp_path / "root"
    _folder(root / "z_real", 2)
    (root / "a_link").symlink_to(root / "z_real", target_is_directory=True)
    source = open_source(root, workers=0)
    assert source.members == ["z_real/000.png", "z_real/001.png"]


def test_image_formats_not_read_are_counted_and_reported(tmp_path, caplog):
    root = _folder(tmp_path / "images", 2)
    jpeg = io.BytesIO()
    Image.fromarray(_pixels(7)).save(jpeg, format="JPEG")
    (root / "photo.jfif").write_bytes(jpeg.getvalue())
    (root / "photo2.JPE").write_bytes(jpeg.getvalue())
    Image.fromarray(_pixels(8)).save(root / "anim.gif")
    Image.fromarray(_pixels(9)).save(root / "still.GIF")
    with caplog.at_level(logging.WARNING, logger="fidkit"):
        source = open_source(root, workers=0)
    assert source.n_images == 4  # two PNGs, and the .jfif and .jpe JPEGs
    assert source.lossy
    assert source.ignored == {
        "image format fidkit does not read (.gif); convert such files to PNG to include them": 2
    }
    assert any("2 entries ignored" in r.getMessage() and ".gif" in r.getMessage() for r in caplog.records)
    assert len(_all_pixels(source)) == 4


def test_a_folder_of_unread_formats_says_so(tmp_path):
    root = tmp_path / "gifs"
    root.mkdir()
    Image.fromarray(_pixels(1)).save(root / "a.gif")
    with pytest.raises(EmptySourceError, match=r"gifs.*1 ignored: image format fidkit does not read \(\.gif\)"):
        open_source(root)


def test_hidden_folders_are_skipped_and_counted_in_folders_and_archives(tmp_path):
    root = _folder(tmp_path / "images", 3)
    for hidden in (".ipynb_checkpoints", "@eaDir", ".thumbnails", "sub/.cache"):
        _folder(root / hidden, 2, start=10)
    source = open_source(root, workers=0)
    assert source.n_images == 3
    assert source.ignored == {
        "hidden folder, not read (dot-folders such as .ipynb_checkpoints, @eaDir, __MACOSX)": 4
    }
    target = tmp_path / "images.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(root.rglob("*.png")):
            archive.write(path, path.relative_to(root).as_posix())
    from_zip = open_source(target, workers=0)
    assert from_zip.members == source.members
    assert from_zip.ignored == {
        "image in a hidden folder, not read (dot-folders such as .ipynb_checkpoints, @eaDir)": 8
    }
    np.testing.assert_array_equal(_all_pixels(from_zip), _all_pixels(source))


# ---------------------------------------------------------------------------------------------
# 9. FIFOs and other special files never block and are never read


def _finishes(function, timeout: float = 20.0, release: Path | None = None):
    """Run `function` in a thread; return what it returned or raised, failing if it blocks."""
    import threading

    outcome: dict[str, object] = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        if release is not None:
            # Unblock a reader stuck opening the FIFO, so the thread does not outlive the test.
            try:
                os.close(os.open(release, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        pytest.fail(f"blocked for more than {timeout} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome.get("value")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize(
    "file_name", ["x.npy", "x.npz", "x.zip", "x.tar.gz", "train-images-idx3-ubyte", "data_batch_1"]
)
def test_a_fifo_given_as_the_source_is_refused_at_once(tmp_path, file_name):
    fifo = tmp_path / file_name
    os.mkfifo(fifo)
    with pytest.raises(SourceError, match=rf"{file_name}: is a FIFO \(named pipe\), not a regular file"):
        _finishes(lambda: open_source(fifo), release=fifo)


def test_a_device_given_as_the_source_is_refused(tmp_path):
    if not os.path.exists("/dev/zero"):
        pytest.skip("needs /dev/zero")
    link = tmp_path / "zeros.npy"
    link.symlink_to("/dev/zero")
    with pytest.raises(SourceError, match=r"zeros\.npy: is a character device"):
        _finishes(lambda: open_source(link))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_inside_a_folder_is_counted_not_read(tmp_path):
    root = _folder(tmp_path / "images", 2)
    os.mkfifo(root / "pipe.png")
    source = _finishes(lambda: open_source(root, workers=0), release=root / "pipe.png")
    assert source.n_images == 2
    assert source.ignored == {
        "not a regular file (FIFO, socket, device or other special file), not read": 1
    }
    assert len(_finishes(lambda: _all_pixels(source), release=root / "pipe.png")) == 2


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_file_replaced_by_a_fifo_after_listing_is_a_bad_file_not_a_hang(tmp_path):
    root = _folder(tmp_path / "images", 3)
    source = open_source(root, workers=0, skip_bad=True)
    (root / "001.png").unlink()
    os.mkfifo(root / "001.png")
    pixels = _finishes(lambda: _all_pixels(source), release=root / "001.png")
    assert len(pixels) == 2
    assert source.skipped == [("001.png", "is a FIFO (named pipe), not a regular file; not read")]


def test_special_archive_members_are_counted_not_read(tmp_path):
    tar_path = tmp_path / "special.tar"
    with tarfile.open(tar_path, "w") as archive:
        archive.addfile(*_tar_member("a.png", _png(1)))
        archive.addfile(*_tar_member("fifo.png", b"", type=tarfile.FIFOTYPE))
        archive.addfile(*_tar_member("dev.png", b"", type=tarfile.CHRTYPE, devmajor=1, devminor=5))
    zip_path = tmp_path / "special.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("a.png", _png(1))
        fifo = zipfile.ZipInfo("fifo.png")
        fifo.create_system = 3
        fifo.external_attr = (0o10644) << 16  # S_IFIFO | rw-r--r--
        archive.writestr(fifo, b"")
        link = zipfile.ZipInfo("link.png")
        link.create_system = 3
        link.external_attr = (0o120777) << 16  # S_IFLNK
        archive.writestr(link, b"a.png")
    not_regular = "not a regular file (FIFO, socket, device or other special file), not read"
    tar_source = open_source(tar_path, workers=0)
    assert tar_source.members == ["a.png"] and tar_source.ignored == {not_regular: 2}
    zip_source = open_source(zip_path, workers=0)
    assert zip_source.members == ["a.png"]
    assert zip_source.ignored == {not_regular: 1, "symbolic link member of a zip, not followed": 1}


# ---------------------------------------------------------------------------------------------
# 11. errors of zipfile / tarfile / the decompressors reach the user as FidkitErrors naming the file


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


# ---------------------------------------------------------------------------------------------
# 10. memory is bounded by the pixel limit, not by what a file claims or holds


def _peak_bytes(function) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture
def small_pixel_limit(monkeypatch):
    # 1e6 pixels: files over 8 MB + 16 MiB are refused unread.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)


def _zeros_member_archives(tmp_path: Path, size: int) -> list[Path]:
    zip_path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.png", _png(1))
        archive.writestr("huge.png", b"\x00" * size)
    tar_path = tmp_path / "bomb.tar.gz"
    with tarfile.open(tar_path, "w:gz", compresslevel=1) as archive:
        archive.addfile(*_tar_member("a.png", _png(1)))
        archive.addfile(*_tar_member("huge.png", b"\x00" * size))
    return [zip_path, tar_path]


def test_archive_members_too_large_for_the_pixel_limit_are_refused_unread(tmp_path, small_pixel_limit):
    size = 48 * 2**20
    for path in _zeros_member_archives(tmp_path, size):
        assert path.stat().st_size < 2**20
        source = open_source(path, workers=0, skip_bad=True)
        peak = _peak_bytes(lambda: list(source.batches(2)))
        assert peak < 12 * 2**20, f"{path.name}: {peak} bytes at peak"
        assert len(source.skipped) == 1
        file, reason = source.skipped[0]
        assert file == "huge.png" and f"{size:,} bytes" in reason and "refused unread" in reason
        with pytest.raises(ImageError, match=rf"{path.name}: 1 of 2 .*huge\.png: {size:,} bytes"):
            list(open_source(path, workers=0).batches(2))


def test_zip_member_declaring_four_gib_is_refused_by_its_declared_size(tmp_path):
    target = tmp_path / "claims.zip"
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("a.png", _png(1))
        archive.writestr("b.png", _png(2))
    data = bytearray(target.read_bytes())
    central = data.rindex(b"PK\x01\x02")  # the last member's entry: b.png
    data[central + 24 : central + 28] = (0xFFFFFF00).to_bytes(4, "little")  # uncompressed size
    target.write_bytes(bytes(data))
    source = open_source(target, workers=0, skip_bad=True)
    peak = _peak_bytes(lambda: list(source.batches(2)))
    assert peak < 8 * 2**20
    assert source.skipped[0][0] == "b.png" and "4,294,967,040 bytes" in source.skipped[0][1]


def test_sparse_file_too_large_for_the_pixel_limit_is_refused_unread(tmp_path, small_pixel_limit):
    root = _folder(tmp_path / "images", 2)
    with open(root / "sparse.png", "wb") as stream:
        stream.truncate(256 * 2**20)  # no disk used, 256 MiB to read
    source = open_source(root, workers=0, skip_bad=True)
    peak = _peak_bytes(lambda: list(source.batches(2)))
    assert peak < 12 * 2**20
    assert [file for file, _ in source.skipped] == ["sparse.png"]
    assert "268,435,456 bytes" in source.skipped[0][1]


def _cifar_file(tmp_path: Path, payload: bytes) -> Path:
    path = tmp_path / "test_batch"
    path.write_bytes(payload)
    return path


@pytest.mark.parametrize(
    "payload",
    [
        # bytearray(3_000_000_000): 3 GB asked for in a few bytes.
        b"\x80\x02cbuiltins\nbytearray\n\x8a\x05\x00\x5e\xd0\xb2\x00\x85R.",
        # bytes(3_000_000_000)
        b"\x80\x02cbuiltins\nbytes\n\x8a\x05\x00\x5e\xd0\xb2\x00\x85R.",
        # numpy _reconstruct(ndarray, (3_000_000_000,), 'b'): an array of any shape, no data.
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n\x8a\x05\x00\x5e\xd0\xb2\x00"
        b"\x85C\x01b\x87R.",
        # ndarray((3_000_000_000,)) called directly.
        b"\x80\x02cnumpy\nndarray\n\x8a\x05\x00\x5e\xd0\xb2\x00\x85\x85R.",
        # _codecs.encode("ab", "hex"): codecs other than latin1 could double their input each time.
        b"\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00abX\x03\x00\x00\x00hex\x86R.",
        # BYTEARRAY8 claiming 3 GB that the file does not hold.
        b"\x80\x05\x96\x00\x5e\xd0\xb2\x00\x00\x00\x00xx.",
    ],
    ids=["bytearray", "bytes", "reconstruct", "ndarray", "hex", "bytearray8"],
)
def test_cifar_pickle_cannot_allocate_more_than_its_size(tmp_path, payload):
    path = _cifar_file(tmp_path, payload)
    peak = 0

    def load():
        with pytest.raises(SourceError, match=r"test_batch: not a CIFAR python batch file"):
            open_source(path)

    peak = _peak_bytes(load)
    assert peak < 16 * 2**20


def test_genuine_cifar_pickles_still_load_within_the_budget(tmp_path):
    import pickle

    images = np.random.default_rng(0).integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
    rows = images.transpose(0, 3, 1, 2).reshape(50, -1)
    for protocol in (2, 4, 5):
        path = tmp_path / "test_batch"
        path.write_bytes(pickle.dumps({b"data": rows, b"labels": list(range(50))}, protocol=protocol))
        np.testing.assert_array_equal(_all_pixels(open_source(path), 16), images)


def _gradient_pngs(root: Path, n: int, side: int) -> np.ndarray:
    root.mkdir()
    ramp = np.linspace(0, 255, side, dtype=np.uint8)
    images = []
    for index in range(n):
        pixels = np.empty((side, side, 3), np.uint8)
        pixels[..., 0] = ramp[None, :]
        pixels[..., 1] = ramp[:, None]
        pixels[..., 2] = index
        Image.fromarray(pixels).save(root / f"{index:03d}.png", compress_level=1)
        images.append(pixels)
    return np.stack(images)


def test_decoding_memory_follows_pixels_not_file_counts(tmp_path, monkeypatch):
    import fidkit.sources.files as files
    from fidkit.sources import parallel

    expected = _gradient_pngs(tmp_path / "big", 24, 512)  # 768 KiB of pixels each, 18 MiB in all
    source = open_source(tmp_path / "big", workers=0)
    sizes: list[int] = []

    def consume():  # as the network does: one batch at a time, none kept
        sizes.clear()
        for batch in source.batches(16):
            sizes.append(len(batch))

    unbounded = _peak_bytes(consume)
    assert sizes == [16, 8]
    monkeypatch.setattr(files, "_PENDING_PIXEL_BYTES", 3 * 2**20)
    monkeypatch.setattr(parallel, "_CHUNK_PIXEL_BYTES", 3 * 2**20)
    bounded = _peak_bytes(consume)
    assert max(sizes) <= 5 and sum(sizes) == 24  # flushed early: 5 images pass 3 MiB
    assert bounded < 16 * 2**20 and 2 * bounded < unbounded, (bounded, unbounded)
    np.testing.assert_array_equal(np.concatenate(list(source.batches(16))), expected)


def test_worker_pixel_budget_keeps_order_for_archives_out_of_name_order(tmp_path, monkeypatch):
    from fidkit.sources import parallel

    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(40):
        (folder / f"{index:03d}.png").write_bytes(_png(index, 16, 16))
    target = tmp_path / "reversed.tar.gz"
    with tarfile.open(target, "w:gz") as archive:
        for path in sorted(folder.iterdir(), reverse=True):  # archive order is not name order
            archive.add(path, arcname=path.name)
    expected = _all_pixels(open_source(folder, workers=0), 8)
    monkeypatch.setattr(parallel, "IN_PROCESS_MAX_IMAGES", 0)
    monkeypatch.setattr(parallel, "_DEFAULT_CHUNK_FILES", 9)
    monkeypatch.setattr(parallel, "_CHUNK_PIXEL_BYTES", 2000)  # about two images per task
    for workers in (0, 2):
        np.testing.assert_array_equal(_all_pixels(open_source(target, workers=workers), 8), expected)


def test_absurd_worker_counts_are_capped_at_the_cpus(tmp_path, monkeypatch, caplog):
    from fidkit.sources import parallel

    root = _folder(tmp_path / "images", 6)
    monkeypatch.setattr(parallel, "IN_PROCESS_MAX_IMAGES", 0)
    monkeypatch.setattr(parallel, "_DEFAULT_CHUNK_FILES", 1)
    source = open_source(root, workers=500)
    assert source.workers == 500
    with caplog.at_level(logging.WARNING, logger="fidkit"):
        pixels = _all_pixels(source)
    assert len(pixels) == 6
    cap = max(2, parallel._available_cpus())
    assert any("500 decoding workers asked for" in r.getMessage() and f"using {cap}" in r.getMessage()
               for r in caplog.records)


# ---------------------------------------------------------------------------------------------
# 8. decode workers (and the forkserver) end when their parent is killed


_KILLED_SCRIPT = """
import sys, time
from fidkit.sources import open_source, parallel

def main():
    parallel.IN_PROCESS_MAX_IMAGES = 0
    parallel._DEFAULT_CHUNK_FILES = 2
    for index, batch in enumerate(open_source(sys.argv[1], workers=2).batches(1)):
        if index == 0:
            print("decoding", flush=True)
        time.sleep(1)  # the network, slowly: the workers wait with the files open

if __name__ == "__main__":
    main()
"""


def _proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat_file:
                fields = stat_file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def _descendants(pid: int) -> list[int]:
    children = _proc_children()
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return stat_file.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds the workers through /proc")
@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_killing_the_parent_leaves_no_worker_behind(tmp_path, signal_name):
    import signal
    import subprocess
    import sys
    import time

    root = _folder(tmp_path / "images", 40)
    script = tmp_path / "killed.py"
    script.write_text(_KILLED_SCRIPT)
    import fidkit

    package_root = str(Path(fidkit.__file__).resolve().parents[1])  # this checkout, not an installed copy
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    process = subprocess.Popen(
        [sys.executable, str(script), str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )
    left: list[int] = []
    try:
        assert process.stdout.readline().strip() == "decoding", process.stderr.read()
        helpers = _descendants(process.pid)
        assert len(helpers) >= 3, helpers  # the forkserver and two workers (and a resource tracker)
        process.send_signal(getattr(signal, signal_name))
        process.wait(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            left = [pid for pid in helpers if _running(pid)]
            if not left:
                break
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        for pid in left:  # never leave them to the next test
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    assert left == [], f"still running {15} s after {signal_name} of their parent: {left}"
