"""Hostile review, round 4: inputs that change while fidkit reads them.

A trainer that publishes new samples over the file being evaluated (atomically, or by rewriting it in place) must
neither leave the old samples' statistics cached under the new file, nor kill the process. A toy extractor
(mean colour) stands in for the network.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fidkit.api import compute_fid
from fidkit.errors import SourceError
from fidkit.sources import open_source

# The toy extractor's weights are not the released ones: said once per comparison, beside the point here.
pytestmark = pytest.mark.filterwarnings("ignore::fidkit.errors.FidkitWarning")


class MeanColour:
    feature_dim = 6

    def __call__(self, images):
        images = np.asarray(images, dtype=np.float32)
        return np.concatenate([images.mean(axis=(1, 2)), images.std(axis=(1, 2))], axis=1).astype(np.float32)

    def metadata(self):
        return {"extractor": "mean-colour", "weights_sha256": "0" * 64, "resize_mode": "none"}


class ChangesOnFirstCall(MeanColour):
    """Runs `change` once, at its first call: while the first side is being computed."""

    def __init__(self, change) -> None:
        self.change = change

    def __call__(self, images):
        if self.change is not None:
            self.change()
            self.change = None
        return super().__call__(images)


def images(seed: int, count: int, high: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, (count, 8, 8, 3), dtype=np.uint8)


def test_a_file_replaced_while_the_other_side_runs_is_not_cached_under_its_new_name(tmp_path, fidkit_home) -> None:
    samples = tmp_path / "samples.npy"
    np.save(samples, images(1, 30))
    real = images(2, 40)

    def publish_new_samples() -> None:  # as a trainer does: write aside, then rename over
        np.save(tmp_path / "next.npy", images(3, 30, high=60))
        os.replace(tmp_path / "next.npy", samples)

    compute_fid(real, samples, extractor=ChangesOnFirstCall(publish_new_samples), workers=0)
    again = compute_fid(real, samples, extractor=MeanColour(), workers=0)
    truth = compute_fid(real, samples, extractor=MeanColour(), workers=0, use_cache=False)
    assert not again.b.cached
    assert float(again) == float(truth)


def test_a_file_added_to_a_folder_while_the_other_side_runs_is_counted_next_time(tmp_path, fidkit_home) -> None:
    from PIL import Image

    folder = tmp_path / "generated"
    folder.mkdir()
    for index, image in enumerate(images(4, 6)):
        Image.fromarray(image).save(folder / f"{index}.png")
    real = images(5, 20)

    def add_an_image() -> None:
        Image.fromarray(images(6, 1)[0]).save(folder / "late.png")

    first = compute_fid(real, folder, extractor=ChangesOnFirstCall(add_an_image), workers=0)
    assert first.b.n == 6  # the folder as it was listed when opened
    again = compute_fid(real, folder, extractor=MeanColour(), workers=0)
    assert not again.b.cached
    assert again.b.n == 7


_CUT_WHILE_READ = """
import numpy as np
from fidkit.api import compute_stats

class CutsTheFile:
    feature_dim = 3
    calls = 0
    def __call__(self, batch):
        CutsTheFile.calls += 1
        if CutsTheFile.calls == 2:
            {cut}
        return np.asarray(batch, dtype=np.float32).mean(axis=(1, 2))
    def metadata(self):
        return {{"extractor": "mean", "weights_sha256": "0" * 64, "resize_mode": "none"}}

compute_stats({path!r}, extractor=CutsTheFile(), use_cache=False, batch_size=100, workers=0)
"""


@pytest.mark.parametrize("kind", ["npy", "mnist"])
def test_a_file_cut_short_while_it_is_read_is_an_error_not_a_crash(tmp_path, kind) -> None:
    if kind == "npy":
        path = tmp_path / "samples.npy"
        np.save(path, images(7, 1000))
        cut = f"np.save({str(path)!r}, np.zeros((10, 8, 8, 3), np.uint8))  # rewritten in place, shorter"
    else:
        path = tmp_path / "train-images-idx3-ubyte"
        pixels = np.random.default_rng(8).integers(0, 256, (1000, 28, 28), dtype=np.uint8)
        path.write_bytes(np.array([2051, 1000, 28, 28], dtype=">u4").tobytes() + pixels.tobytes())
        cut = f"open({str(path)!r}, 'r+b').truncate(16 + 150 * 28 * 28)"
    code = textwrap.dedent(_CUT_WHILE_READ.format(cut=cut, path=str(path)))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])  # not -7 (SIGBUS)
    assert "SourceError" in done.stderr and "the file is cut short" in done.stderr
    assert str(path) in done.stderr


def test_array_files_are_read_in_batches_exactly_as_numpy_loads_them(tmp_path) -> None:
    data = images(9, 257)
    np.save(tmp_path / "c.npy", data)
    np.save(tmp_path / "f.npy", np.asfortranarray(data))
    for name in ("c.npy", "f.npy"):
        whole = np.concatenate(list(open_source(tmp_path / name).batches(50)))
        assert np.array_equal(whole, data)
        subset = open_source(tmp_path / name, limit=100, seed=3)
        assert np.array_equal(np.concatenate(list(subset.batches(7))), data[subset._indices])


def test_a_file_that_changed_shape_between_open_and_read_is_refused(tmp_path) -> None:
    path = tmp_path / "samples.npy"
    np.save(path, images(10, 20))
    source = open_source(path)
    np.save(path, images(11, 25))
    with pytest.raises(SourceError, match="changed since it was opened"):
        next(source.batches(10))


def test_the_file_is_closed_when_the_batches_end(tmp_path) -> None:
    path = tmp_path / "samples.npy"
    np.save(path, images(12, 20))
    before = set(os.listdir("/proc/self/fd")) if Path("/proc/self/fd").exists() else None
    batches = open_source(path).batches(8)
    next(batches)
    batches.close()
    if before is not None:
        assert set(os.listdir("/proc/self/fd")) <= before


def test_with_content_hashes_a_file_replaced_while_the_other_side_runs_is_not_cached(tmp_path, fidkit_home) -> None:
    samples = tmp_path / "samples.npy"
    original = images(13, 30)
    np.save(samples, original)
    real = images(14, 40)

    def publish_new_samples() -> None:
        np.save(tmp_path / "next.npy", images(15, 30, high=60))
        os.replace(tmp_path / "next.npy", samples)

    compute_fid(real, samples, extractor=ChangesOnFirstCall(publish_new_samples), workers=0, hash_content=True)
    np.save(samples, original)  # the old samples again, byte for byte: the content hash of the first open
    again = compute_fid(real, samples, extractor=MeanColour(), workers=0, hash_content=True)
    truth = compute_fid(real, samples, extractor=MeanColour(), workers=0, use_cache=False)
    assert float(again) == float(truth)


def test_file_rows_that_cannot_open_their_file_raise_once_and_print_nothing(tmp_path) -> None:
    code = (
        "import numpy as np\n"
        "from fidkit.sources.arrays import FileRows\n"
        "from fidkit.errors import SourceError\n"
        "try:\n"
        f"    FileRows({str(tmp_path / 'gone.npy')!r}, 0, (2, 2), np.uint8, 'gone.npy', fix='f')\n"
        "except SourceError as exc:\n"
        "    print('refused:', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("refused: gone.npy: cannot open the file again")
    assert done.stderr == ""
