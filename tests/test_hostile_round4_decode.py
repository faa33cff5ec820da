"""Hostile input, round 4: decoding (fidkit.sources.decode, .parallel, Source.fingerprint).

1. A caller that set ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True`` (many training scripts do) still gets
   truncated files as errors, in process and in worker processes, and gets its flag back unchanged.
2. A premultiplied-alpha gray TIFF (Pillow mode ``La``) decodes by un-premultiplying; any failure converting
   one file's mode is an ImageError naming the file and the mode (a counted skip with skip_bad).
3. Pillow's decompression-bomb limit is part of a folder's fingerprint when it is not Pillow's default: files
   skipped under a low limit are read once the user raises it, not served from the cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from fidkit.errors import ImageError
from fidkit.sources import base, decode, open_source
from fidkit.sources.decode import decode_image_bytes

from stand_ins import MeanColour  # tests/stand_ins.py


def _noise(side: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8))


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _count(source, batch_size: int = 4) -> int:
    return sum(len(batch) for batch in source.batches(batch_size))


# ---------------------------------------------------------------- 1. LOAD_TRUNCATED_IMAGES set by the caller


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


# ---------------------------------------------------------------- 2. premultiplied gray ("La") and mode failures


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


# ---------------------------------------------------------------- 3. the decompression-bomb limit and the cache


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
