"""Decoding (fidkit.sources.decode, .parallel): truncated files whatever the caller set, modes Pillow converts, the
decompression-bomb limit in the fingerprint, and memory bounded by the pixel limit, not by what a file claims.

The groups below came from the hostile-input reviews (the issue 9 review and round 4), whose item numbers they keep.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import struct
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from fidkit.errors import ImageError, SourceError
from fidkit.sources import base, decode, open_source
from fidkit.sources.decode import decode_image_bytes

from image_files import (
    _all_pixels, _count, _folder, _noise, _png, _png_file, _png_raw_length, _png_row_ends, _tar_member,
)
from stand_ins import MeanColour


# --- hostile review (issue 9), 10: memory is bounded by the pixel limit, not by what a file claims or holds ---------


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


# --- hostile round 4, 1: LOAD_TRUNCATED_IMAGES set by the caller ----------------------------------------------------


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def truncated_folder(tmp_path: Path) -> Path:
    """Three good images, then a PNG and a JPEG each cut to half their bytes."""
    folder = tmp_path / "cut"
    folder.mkdir()
    for index in range(3):
        _noise(24, index).save(folder / f"good{index}.png")
    _noise(48, 10).save(folder / "half.png")
    _noise(48, 11).save(folder / "half.jpg", quality=90)
    _cut_in_half(folder / "half.png")
    _cut_in_half(folder / "half.jpg")
    return folder


@pytest.fixture
def caller_loads_truncated(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's process has set LOAD_TRUNCATED_IMAGES (monkeypatch restores the real value after)."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)


@pytest.mark.parametrize("member", ["half.png", "half.jpg"])
def test_pillow_itself_accepts_the_cut_files_under_the_callers_flag(truncated_folder, caller_loads_truncated, member):
    # What makes the tests below meaningful: with the flag True, Pillow decodes the half file without a word.
    with Image.open(truncated_folder / member) as image:
        image.load()
        assert image.size == (48, 48)


@pytest.mark.parametrize("member", ["half.png", "half.jpg"])
def test_decode_refuses_a_truncated_file_whatever_the_caller_set(truncated_folder, caller_loads_truncated, member):
    with pytest.raises(ImageError, match=rf"^{member}: cannot decode .*truncated"):
        decode_image_bytes((truncated_folder / member).read_bytes(), member)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True
    # A good file decodes, and the flag is the caller's again after it too.
    assert decode_image_bytes((truncated_folder / "good0.png").read_bytes(), "good0.png").pixels.shape == (24, 24, 3)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_in_process_decoding_refuses_truncated_files_under_the_callers_flag(truncated_folder, caller_loads_truncated):
    with pytest.raises(ImageError, match=r"2 of 5 .*half\.jpg.*truncated.*half\.png"):
        _count(open_source(truncated_folder, workers=0))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True

    source = open_source(truncated_folder, workers=0, skip_bad=True)
    assert _count(source) == 3
    assert [name for name, _ in source.skipped] == ["half.jpg", "half.png"]
    assert all("truncated" in reason for _, reason in source.skipped)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_the_callers_flag_is_restored_when_decoding_fails_and_left_alone_when_false(truncated_folder, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    with pytest.raises(ImageError):
        decode_image_bytes((truncated_folder / "half.png").read_bytes(), "half.png")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert decode._strict_depth == 0


def test_decodes_in_several_threads_all_refuse_truncation_and_restore_the_flag(truncated_folder, caller_loads_truncated):
    from concurrent.futures import ThreadPoolExecutor

    files = {name: (truncated_folder / name).read_bytes() for name in ("half.png", "half.jpg", "good0.png", "good1.png")}

    def attempt(name: str) -> str:
        try:
            decode_image_bytes(files[name], name)
        except ImageError:
            return "refused"
        return "decoded"

    names = list(files) * 25
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(attempt, names))
    assert outcomes == ["decoded" if name.startswith("good") else "refused" for name in names]
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True
    assert decode._strict_depth == 0


_WORKER_SCRIPT = """
import sys
from PIL import ImageFile

# What a training script does at import time: worker processes re-import this module, and so set it too.
ImageFile.LOAD_TRUNCATED_IMAGES = True

if __name__ == "__main__":
    from fidkit.errors import ImageError
    from fidkit.sources import open_source, parallel

    parallel.IN_PROCESS_MAX_IMAGES = 0   # the pool even for a handful of files
    parallel._DEFAULT_CHUNK_FILES = 2    # several tasks, both workers busy
    used_pool = []
    real_stream = parallel.decode_stream
    def spy(reader, names, *, workers, exif_transpose=False):
        used_pool.append(workers > 1 and len(names) > parallel.IN_PROCESS_MAX_IMAGES)
        return real_stream(reader, names, workers=workers, exif_transpose=exif_transpose)
    import fidkit.sources.files as files
    files.decode_stream = spy

    try:
        sum(len(b) for b in open_source(sys.argv[1], workers=2).batches(4))
        print("error: none")
    except ImageError as exc:
        print("error:", exc)
    source = open_source(sys.argv[1], workers=2, skip_bad=True)
    print("n:", sum(len(b) for b in source.batches(4)))
    for name, reason in source.skipped:
        print("skipped:", name, "|", reason)
    print("pool:", all(used_pool) and len(used_pool) == 2)
    print("flag:", ImageFile.LOAD_TRUNCATED_IMAGES)
"""


def test_worker_processes_refuse_truncated_files_although_the_script_sets_the_flag(truncated_folder, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(_WORKER_SCRIPT))
    done = subprocess.run(
        [sys.executable, str(script), str(truncated_folder)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "pool: True" in lines, done.stdout
    error = next(line for line in lines if line.startswith("error:"))
    assert "2 of 5" in error and "half.jpg" in error and "half.png" in error and "truncated" in error, error
    assert "n: 3" in lines, done.stdout
    skipped = [line for line in lines if line.startswith("skipped:")]
    assert [line.split()[1] for line in skipped] == ["half.jpg", "half.png"]
    assert all("truncated" in line for line in skipped)
    assert "flag: True" in lines, done.stdout


# --- hostile round 4, 2: premultiplied gray ("La") and mode failures ------------------------------------------------


def _premultiplied_gray_tiff(values: np.ndarray, alpha: np.ndarray) -> bytes:
    """A TIFF of gray + associated (premultiplied) alpha: Pillow writes LA with ExtraSamples = 2
    (unassociated alpha); setting that tag to 1 (associated) makes Pillow open it as mode "La"."""
    image = Image.fromarray(np.stack([values, alpha], axis=2), "LA")
    buffer = io.BytesIO()
    image.save(buffer, "TIFF")
    data = bytearray(buffer.getvalue())
    entry = struct.pack("<HHI", 338, 3, 1)  # ExtraSamples, SHORT, one value
    at = data.find(entry)
    assert at > 0
    data[at + 8 : at + 10] = struct.pack("<H", 1)
    with Image.open(io.BytesIO(bytes(data))) as check:
        assert check.mode == "La"
    return bytes(data)


# Stored (premultiplied) values and their alpha, chosen to hit every case of the rule: alpha 0 (kept),
# alpha 255 (kept), exact and inexact divisions (floored), and stored values above alpha (clipped to 255).
_STORED = np.array([[0, 10, 1, 50, 100, 127, 128, 200], [64, 3, 255, 30, 7, 90, 254, 1]], dtype=np.uint8)


_ALPHA = np.array([[0, 0, 1, 128, 128, 128, 128, 255], [128, 3, 255, 60, 200, 180, 255, 2]], dtype=np.uint8)


def _unpremultiplied_by_hand() -> np.ndarray:
    expected = np.empty(_STORED.shape, dtype=np.uint8)
    for (row, col), value in np.ndenumerate(_STORED):
        alpha = int(_ALPHA[row, col])
        expected[row, col] = value if alpha == 0 else min(255, (255 * int(value)) // alpha)
    return expected


def test_premultiplied_gray_tiff_is_unpremultiplied_and_replicated():
    expected = _unpremultiplied_by_hand()
    # Spot checks of the hand rule itself: 100 at alpha 128 is 199.2 -> 199; 200 at 128 is clipped.
    assert expected[0, 4] == 199 and expected[0, 6] == 255 and expected[0, 1] == 10 and expected[1, 0] == 127
    decoded = decode_image_bytes(_premultiplied_gray_tiff(_STORED, _ALPHA), "gray_premultiplied.tif")
    assert decoded.mode == "La"
    np.testing.assert_array_equal(decoded.pixels, np.repeat(expected[:, :, None], 3, axis=2))


def test_a_premultiplied_gray_tiff_in_a_folder_is_read(tmp_path):
    folder = tmp_path / "la"
    folder.mkdir()
    (folder / "gray_premultiplied.tif").write_bytes(_premultiplied_gray_tiff(_STORED, _ALPHA))
    for index in range(3):
        Image.new("RGB", (8, 2), (index * 40, 0, 0)).save(folder / f"ok{index}.png")
    source = open_source(folder, workers=0)
    assert _count(source) == 4
    assert source.skipped == []


def _cmyk_tiff() -> bytes:
    buffer = io.BytesIO()
    Image.new("CMYK", (6, 2), (0, 255, 255, 0)).save(buffer, "TIFF")
    return buffer.getvalue()


@pytest.mark.parametrize("failure", [RuntimeError("boom"), TypeError("bad band"), KeyError("mode")])
def test_any_failure_converting_a_mode_is_an_image_error_naming_file_and_mode(monkeypatch, failure):
    real_convert = Image.Image.convert

    def failing_convert(self, mode=None, *args, **kwargs):
        if self.mode in ("CMYK", "La"):
            raise failure
        return real_convert(self, mode, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "convert", failing_convert)
    with pytest.raises(ImageError, match=rf"^ink\.tif: image mode CMYK could not be converted.*{type(failure).__name__}"):
        decode_image_bytes(_cmyk_tiff(), "ink.tif")
    # The La route too (a Pillow without the La -> LA conversion would fail here).
    with pytest.raises(ImageError, match=r"^g\.tif: image mode La could not be converted"):
        decode_image_bytes(_premultiplied_gray_tiff(_STORED, _ALPHA), "g.tif")


def test_a_failing_mode_conversion_is_a_counted_skip_with_skip_bad(tmp_path, monkeypatch):
    folder = tmp_path / "modes"
    folder.mkdir()
    (folder / "ink.tif").write_bytes(_cmyk_tiff())
    for index in range(2):
        _noise(8, index).save(folder / f"ok{index}.png")
    real_convert = Image.Image.convert

    def failing_convert(self, mode=None, *args, **kwargs):
        if self.mode == "CMYK":
            raise RuntimeError("converter crashed")
        return real_convert(self, mode, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "convert", failing_convert)
    source = open_source(folder, workers=0, skip_bad=True)
    assert _count(source) == 2
    assert len(source.skipped) == 1
    name, reason = source.skipped[0]
    assert name == "ink.tif"
    assert "mode CMYK" in reason and "converter crashed" in reason

    with pytest.raises(ImageError, match=r"1 of 3 .*ink\.tif.*mode CMYK"):
        _count(open_source(folder, workers=0))


def test_running_out_of_memory_while_converting_is_not_turned_into_a_bad_file(monkeypatch):
    def no_memory(self, *args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(Image.Image, "convert", no_memory)
    with pytest.raises(MemoryError):
        decode_image_bytes(_cmyk_tiff(), "ink.tif")


# --- hostile round 4, 3: the decompression-bomb limit and the cache -------------------------------------------------


@pytest.fixture
def folder_with_a_big_image(tmp_path: Path) -> Path:
    folder = tmp_path / "bomb"
    folder.mkdir()
    for index in range(4):
        _noise(10, index).save(folder / f"{index}.png")
    _noise(30, 9).save(folder / "big.png")  # 900 pixels
    return folder


def test_a_file_skipped_under_a_low_pixel_limit_is_read_once_the_limit_is_raised(
    folder_with_a_big_image, fidkit_home, monkeypatch
):
    from fidkit.api import compute_stats_with_report

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    low, low_side = compute_stats_with_report(folder_with_a_big_image, extractor=MeanColour(), workers=0, skip_bad=True)
    assert low.n == 4
    assert [name for name, _ in low_side.skipped] == ["big.png"]

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10**6)  # what the skip message says to do
    raised, raised_side = compute_stats_with_report(
        folder_with_a_big_image, extractor=MeanColour(), workers=0, skip_bad=True
    )
    assert not raised_side.cached
    assert raised.n == 5
    assert raised_side.skipped == ()

    # Back under the low limit: its own entry is still there.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    again, again_side = compute_stats_with_report(
        folder_with_a_big_image, extractor=MeanColour(), workers=0, skip_bad=True
    )
    assert again_side.cached and again.n == 4


def test_the_fingerprint_under_pillows_default_limit_is_the_one_made_before_the_limit_counted(
    folder_with_a_big_image, monkeypatch
):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", base._PILLOW_DEFAULT_MAX_IMAGE_PIXELS)
    source = open_source(folder_with_a_big_image, workers=0)
    # The recipe without the limit (it takes part only when not Pillow's default): no cache key changed for it.
    identity = {
        "fingerprint_version": base._FINGERPRINT_VERSION,
        "kind": "folder",
        "limit": None,
        "seed": None,
        "exif_transpose": False,
        "colour_policy_version": decode.COLOUR_POLICY_VERSION,
        "content": source._identity(hash_content=False),
    }
    before = hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()
    default = source.fingerprint()
    assert default == before

    fingerprints = {default}
    for limit in (500, 10**6, None):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        fingerprints.add(source.fingerprint())
    assert len(fingerprints) == 4


def test_arrays_are_not_decoded_so_the_pixel_limit_leaves_their_fingerprint_alone(monkeypatch):
    source = open_source(np.zeros((3, 4, 4, 3), dtype=np.uint8))
    default = source.fingerprint()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    assert source.fingerprint() == default


def test_pillows_default_pixel_limit_is_the_one_fidkit_writes_out():
    done = subprocess.run(
        [sys.executable, "-c", "import PIL.Image; print(PIL.Image.MAX_IMAGE_PIXELS)"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == base._PILLOW_DEFAULT_MAX_IMAGE_PIXELS


# --- hostile round 7, 1: cut files that decode without an error (a PNG short of data, a JPEG closed after a cut) ---

# Every (colour type, bit depth) PNG defines, and the samples per pixel of each colour type.
_PNG_KINDS = [(0, 1), (0, 2), (0, 4), (0, 8), (0, 16), (2, 8), (2, 16), (3, 1), (3, 2), (3, 4), (3, 8), (4, 8),
              (4, 16), (6, 8), (6, 16)]
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Sizes where some Adam7 passes are empty (one row, one column, fewer than 8).
_PNG_SIZES = [(1, 1), (1, 9), (7, 1), (5, 3), (13, 17)]


def _png_samples(colour_type: int, bit_depth: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(colour_type * 100 + bit_depth + height * width)
    return rng.integers(0, 2**bit_depth, (height, width, _PNG_SAMPLES[colour_type]))


@pytest.mark.parametrize("colour_type, bit_depth", _PNG_KINDS)
def test_complete_pngs_of_every_colour_type_depth_and_interlace_are_read(colour_type, bit_depth):
    for height, width in _PNG_SIZES:
        samples = _png_samples(colour_type, bit_depth, height, width)
        plain = decode_image_bytes(_png_file(samples, bit_depth, colour_type), "plain.png").pixels
        interlaced = decode_image_bytes(
            _png_file(samples, bit_depth, colour_type, interlace=1, idat_chunks=3), "adam7.png"
        ).pixels
        assert plain.shape == (height, width, 3)
        np.testing.assert_array_equal(interlaced, plain)
        if (colour_type, bit_depth) == (2, 8):
            np.testing.assert_array_equal(plain, samples)


@pytest.mark.parametrize("colour_type, bit_depth", _PNG_KINDS)
@pytest.mark.parametrize("interlace", [0, 1])
def test_a_png_whose_image_data_ends_early_is_refused(colour_type, bit_depth, interlace):
    silent = 0
    for height, width in _PNG_SIZES[2:]:
        samples = _png_samples(colour_type, bit_depth, height, width)
        ends = _png_row_ends(height, width, bit_depth, samples.shape[2], interlace)
        full = _png_raw_length(_png_file(samples, bit_depth, colour_type, interlace=interlace))
        assert ends[-1] == full
        for keep in [*ends[:-1], full - 1]:
            data = _png_file(samples, bit_depth, colour_type, interlace=interlace, keep=keep, idat_chunks=2)
            try:
                with Image.open(io.BytesIO(data)) as image:
                    image.load()  # Pillow (strict) reads a stream of whole rows without a word
                silent += 1
                message = rf"image file is truncated: its PNG image data inflates to {keep:,} of the {full:,} bytes "
            except OSError:
                message = r"truncated"  # cut inside a row: Pillow finds it itself
            with pytest.raises(ImageError, match=rf"^cut\.png: cannot decode \(.*{message}"):
                decode_image_bytes(data, "cut.png")
    assert silent > 0  # the cuts that matter were among them


def test_pngs_pillow_writes_in_every_mode_are_read():
    rng = np.random.default_rng(5)
    rgba = Image.fromarray(rng.integers(0, 256, (300, 260, 4), dtype=np.uint8))  # several IDAT chunks
    images = [rgba.convert(mode) for mode in ("1", "L", "LA", "P", "RGB", "RGBA")]
    images.append(Image.fromarray(rng.integers(0, 65536, (40, 30), dtype=np.uint16)))  # I;16
    for image in images:
        for options in ({}, {"optimize": True}, {"compress_level": 0}):
            buffer = io.BytesIO()
            image.save(buffer, "PNG", **options)
            with Image.open(io.BytesIO(buffer.getvalue())) as reference:
                expected = decode._to_rgb_array(reference, "reference")
            np.testing.assert_array_equal(decode_image_bytes(buffer.getvalue(), "ok.png").pixels, expected)
    animated = io.BytesIO()
    images[5].save(animated, "PNG", save_all=True, append_images=[images[4].convert("RGBA")])
    np.testing.assert_array_equal(
        decode_image_bytes(animated.getvalue(), "animated.png").pixels, np.asarray(images[5])[:, :, :3]
    )


def _jpeg(mode: str, size: tuple[int, int], progressive: bool, *, grey_corner: bool = True, seed: int = 0) -> bytes:
    """A noisy JPEG whose last 16x16 block (a whole MCU) is flat 128 grey when `grey_corner`: a complete file
    whose bottom-right pixel decodes to exactly the grey libjpeg fills the rest of a cut file with."""
    width, height = size
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    if grey_corner:
        pixels[-16:, -16:] = 128
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, "JPEG", quality=90, progressive=progressive)
    return buffer.getvalue()


# Small (always probed) and larger than 256x256 (a sequential one probed only with a grey last pixel).
_JPEG_CASES = [
    (mode, size, progressive)
    for mode in ("L", "RGB")
    for size in ((48, 32), (272, 256))
    for progressive in (False, True)
]


@pytest.fixture
def probes(monkeypatch) -> list[int]:
    """Counts the second decodes of the JPEG probe (Image.open of a file with the probe's filler before its end)."""
    calls: list[int] = []
    real_open = Image.open

    def spy(stream, *args, **kwargs):
        if isinstance(stream, io.BytesIO) and stream.getvalue().endswith(decode._JPEG_PROBE_FILLER + b"\xff\xd9"):
            calls.append(1)
        return real_open(stream, *args, **kwargs)

    monkeypatch.setattr(decode.Image, "open", spy)
    return calls


def test_complete_jpegs_with_a_grey_last_pixel_are_probed_and_read_unchanged(tmp_path, probes):
    folder = tmp_path / "jpegs"
    folder.mkdir()
    for index, (mode, size, progressive) in enumerate(_JPEG_CASES):
        data = _jpeg(mode, size, progressive, seed=index)
        with Image.open(io.BytesIO(data)) as check:
            assert check.getpixel((size[0] - 1, size[1] - 1)) in (128, (128, 128, 128))  # what the test is about
        (folder / f"{index:02d}.jpg").write_bytes(data)
    source = open_source(folder, workers=0)
    images = [image for batch in source.batches(3) for image in batch]  # two sizes: batched by size
    assert source.skipped == [] and len(probes) == len(images) == len(_JPEG_CASES)
    order = source.emitted_order if source.emitted_order is not None else np.arange(len(images))
    for row, position in zip(images, order):
        with Image.open(folder / source.members[position]) as reference:
            np.testing.assert_array_equal(row, np.asarray(reference.convert("RGB")))


def test_a_large_sequential_jpeg_whose_last_pixel_is_not_grey_is_not_probed(probes):
    for mode in ("L", "RGB"):
        data = _jpeg(mode, (272, 256), False, grey_corner=False)
        assert decode_image_bytes(data, "photo.jpg").pixels.shape == (256, 272, 3)
    assert probes == []


def _first_scan(data: bytes) -> int:
    return data.index(b"\xff\xda")


@pytest.mark.parametrize("mode, size, progressive", _JPEG_CASES)
def test_a_jpeg_cut_and_closed_with_an_end_marker_is_refused(mode, size, progressive, caller_loads_truncated):
    data = _jpeg(mode, size, progressive)
    scan = _first_scan(data)
    for fraction in (0.3, 0.6, 0.9):
        cut = data[: scan + int((len(data) - scan) * fraction)] + b"\xff\xd9"
        with Image.open(io.BytesIO(cut)) as silent:
            silent.load()  # Pillow itself decodes it without a word
        with pytest.raises(ImageError, match=r"^cut\.jpg: cannot decode \(image file is truncated: its JPEG image"):
            decode_image_bytes(cut, "cut.jpg")


@pytest.mark.parametrize("progressive", [False, True])
def test_the_two_decodes_of_a_large_jpeg_are_compared_strip_by_strip(monkeypatch, progressive):
    monkeypatch.setattr(decode, "_COMPARED_BYTES", 3000)  # strips of 3 rows: the cut shows in the last ones
    data = _jpeg("RGB", (272, 256), progressive)
    assert decode_image_bytes(data, "whole.jpg").pixels.shape == (256, 272, 3)
    scan = _first_scan(data)
    cut = data[: scan + int((len(data) - scan) * 0.97)] + b"\xff\xd9"
    with pytest.raises(ImageError, match=r"image file is truncated: its JPEG image data was cut"):
        decode_image_bytes(cut, "cut.jpg")


def test_cut_files_that_decode_are_counted_skips_with_skip_bad(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    samples = _png_samples(2, 8, 13, 17)
    (folder / "a_good.png").write_bytes(_png_file(samples, 8, 2))
    (folder / "b_short.png").write_bytes(_png_file(samples, 8, 2, keep=200))
    good = _jpeg("RGB", (64, 48), True, seed=3)
    (folder / "c_good.jpg").write_bytes(good)
    (folder / "d_closed.jpg").write_bytes(good[: len(good) // 2] + b"\xff\xd9")
    with pytest.raises(ImageError, match=r"2 of 4 .*b_short\.png.*truncated.*d_closed\.jpg"):
        _count(open_source(folder, workers=0))
    source = open_source(folder, workers=0, skip_bad=True)
    assert _count(source) == 2
    assert [name for name, _ in source.skipped] == ["b_short.png", "d_closed.jpg"]
    assert all("image file is truncated" in reason for _, reason in source.skipped)


def test_a_progressive_jpeg_cut_between_whole_scans_is_a_valid_file_and_is_read():
    # The documented limit of the probe: such a file is a progressive JPEG of fewer scans, coarser but whole.
    data = _jpeg("RGB", (64, 48), True)
    third_scan = data.index(b"\xff\xda", data.index(b"\xff\xda", _first_scan(data) + 2) + 2)
    fewer_scans = data[:third_scan] + b"\xff\xd9"
    pixels = decode_image_bytes(fewer_scans, "coarse.jpg").pixels
    assert not np.array_equal(pixels, decode_image_bytes(data, "whole.jpg").pixels)


def test_statistics_cached_before_cut_files_were_refused_are_not_served():
    # Policy 2 read such files (half black or grey); version 3 refuses them: every fingerprint changed.
    assert decode.COLOUR_POLICY_VERSION >= 3


# --- hostile round 7, 4: a JPEG-compressed TIFF is lossy -----------------------------------------------------------


def _encoded(image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(
        buffer, image_format, **options
    )
    return buffer.getvalue()


@pytest.mark.parametrize(
    "image_format, options, lossy",
    [
        ("TIFF", {"compression": "jpeg"}, True),
        ("TIFF", {"compression": "jpeg", "quality": 95}, True),
        ("TIFF", {}, False),
        ("TIFF", {"compression": "tiff_lzw"}, False),
        ("TIFF", {"compression": "tiff_adobe_deflate"}, False),
        ("TIFF", {"compression": "packbits"}, False),
        ("WEBP", {"quality": 90}, True),
        ("WEBP", {"lossless": True}, False),
        ("JPEG", {}, True),
        ("PNG", {}, False),
    ],
)
def test_lossy_follows_the_compression_inside_a_tiff(image_format, options, lossy):
    decoded = decode_image_bytes(_encoded(image_format, **options), "x")
    assert decoded.format == image_format and decoded.lossy is lossy


def test_the_old_style_jpeg_compression_of_a_tiff_is_lossy_too():
    # Pillow writes no old-style ("tiff_jpeg", compression 6) TIFF; what it reports for one is the name checked.
    assert decode._is_lossy("TIFF", b"", "tiff_jpeg") and decode._is_lossy("TIFF", b"", "jpeg")
    assert not decode._is_lossy("TIFF", b"", "tiff_lzw") and not decode._is_lossy("TIFF", b"", None)


def test_a_folder_of_jpeg_compressed_tiffs_is_lossy_after_reading(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "a.tif").write_bytes(_encoded("TIFF", compression="tiff_lzw"))
    (folder / "b.tiff").write_bytes(_encoded("TIFF", compression="jpeg"))
    source = open_source(folder, workers=0)
    assert _count(source) == 2 and source.lossy is True
    (folder / "b.tiff").unlink()
    lossless = open_source(folder, workers=0)
    assert _count(lossless) == 1 and lossless.lossy is False


# --- review of round 7: the JPEG probe's false positives --------------------------------------------------------

# A small arithmetic-coded JPEG (jpegtran -arithmetic of random pixels) whose probe decoding differs although the
# file is complete: the arithmetic decoder reads ahead of its last decisions.
_ARITHMETIC_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQERMU"
    "FRUVDA8XGBYUGBIUFRT/2wBDAQMEBAUEBQkFBQkUDQsNFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU"
    "FBQUFBQUFBT/yQARCAAIAAgDASIAAhEBAxEB/8wACgAQEAUBEBEF/9oADAMBAAIRAxEAPwDI9S0QK1Z8dZVBiHK3L/WoydTL1rPt"
    "88F2/IX2r6OxwLpx7GQU4ZTiyCbxN+YF5WOnlQWP5rl5kMyQy46V8n6bEWXoP9RnbhH8IolIZUbmSUzVhyQ2x/n9QSU4MgFEy6EK"
    "skLDrqTDcdwYXLTDtoX/2Q=="
)


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("fill", [1, 3])
def test_a_jpeg_with_fill_bytes_before_its_end_marker_reads_as_pillow_reads_it(progressive, fill):
    # T.81 B.1.1.2: any marker may be preceded by FF fill bytes; the probe's filler goes before them.
    from fidkit.sources.decode import decode_image_bytes

    pixels = np.random.default_rng(3).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, progressive=progressive)
    data = buffer.getvalue()[:-2] + b"\xff" * fill + b"\xff\xd9"
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(decode_image_bytes(data, "filled.jpg").pixels, expected)


def test_an_arithmetic_coded_jpeg_is_read_not_refused_as_cut():
    from fidkit.sources.decode import decode_image_bytes

    expected = np.asarray(Image.open(io.BytesIO(_ARITHMETIC_JPEG)).convert("RGB"))
    np.testing.assert_array_equal(decode_image_bytes(_ARITHMETIC_JPEG, "arith.jpg").pixels, expected)
