"""fidkit.sources: MNIST idx files, CIFAR python batches (restricted unpickling), and ../shared/data."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from fidkit.errors import SourceError
from fidkit.sources import open_source


def _write_idx3(path: Path, images: np.ndarray) -> Path:
    header = struct.pack(">IIII", 0x00000803, *images.shape)
    payload = header + images.astype(np.uint8).tobytes()
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as stream:
            stream.write(payload)
    else:
        path.write_bytes(payload)
    return path


@pytest.fixture
def digits() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("file_name", ["t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"])
def test_mnist_plain_and_gzipped(tmp_path, digits, file_name):
    path = _write_idx3(tmp_path / file_name, digits)
    source = open_source(path)
    assert source.kind == "mnist" and source.n_images == 7 and source.cacheable
    pixels = np.concatenate(list(source.batches(3)))
    assert pixels.shape == (7, 28, 28, 3)
    np.testing.assert_array_equal(pixels, np.repeat(digits[..., None], 3, axis=3))
    subset = open_source(path, limit=3, seed=5)
    chosen = np.sort(np.random.default_rng(5).choice(7, 3, replace=False))
    np.testing.assert_array_equal(np.concatenate(list(subset.batches(8)))[..., 0], digits[chosen])


def test_mnist_validation(tmp_path, digits):
    bad_magic = tmp_path / "bad-idx3-ubyte"
    bad_magic.write_bytes(struct.pack(">IIII", 0x00000802, 7, 28, 28) + digits.tobytes())
    with pytest.raises(SourceError, match="magic"):
        open_source(bad_magic)
    short = tmp_path / "short-idx3-ubyte"
    short.write_bytes(struct.pack(">IIII", 0x00000803, 8, 28, 28) + digits.tobytes())
    with pytest.raises(SourceError, match="truncated"):
        open_source(short)
    short_gz = tmp_path / "short-idx3-ubyte.gz"
    with gzip.open(short_gz, "wb") as stream:
        stream.write(struct.pack(">IIII", 0x00000803, 8, 28, 28) + digits.tobytes())
    with pytest.raises(SourceError, match="truncated"):
        open_source(short_gz)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    labels.write_bytes(struct.pack(">II", 0x00000801, 3) + bytes(3) + bytes(8))
    with pytest.raises(SourceError, match="label"):
        open_source(labels)



def test_mnist_gz_cut_short_or_corrupt(tmp_path, digits):
    whole = _write_idx3(tmp_path / "whole-idx3-ubyte.gz", digits).read_bytes()
    # Cut: the last 4 bytes are compressed data, not a size, so no size is quoted from them.
    cut = tmp_path / "cut-idx3-ubyte.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(SourceError, match="truncated or not an MNIST file") as raised:
        open_source(cut)
    assert "holds" not in str(raised.value)
    # Corrupt in the middle, trailer intact: found only when the pixels are read, as a SourceError.
    corrupt = tmp_path / "corrupt-idx3-ubyte.gz"
    middle = len(whole) // 2
    corrupt.write_bytes(whole[:middle] + bytes(b ^ 0xFF for b in whole[middle : middle + 64]) + whole[middle + 64 :])
    source = open_source(corrupt)
    with pytest.raises(SourceError, match="corrupt-idx3-ubyte.gz: cannot decompress"):
        list(source.batches(4))
    # A broken deflate stream raises zlib.error, which is not an OSError.
    for start in range(10, len(whole) - 8):
        candidate = whole[:start] + b"\xff\xff\xff" + whole[start + 3 :]
        try:
            gzip.decompress(candidate)
        except zlib.error:
            break
        except (OSError, EOFError):
            continue
    else:
        pytest.fail("no corruption found that zlib refuses")
    broken = tmp_path / "broken-idx3-ubyte.gz"
    broken.write_bytes(candidate)
    with pytest.raises(SourceError, match="broken-idx3-ubyte.gz: cannot"):
        list(open_source(broken).batches(4))

def _write_cifar_batch(path: Path, images: np.ndarray, *, protocol: int = 2, labels_key: str = "labels") -> None:
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # channel-major rows, as CIFAR
    batch = {b"batch_label": b"testing batch", b"data": rows, labels_key.encode(): list(range(len(images)))}
    with open(path, "wb") as stream:
        pickle.dump(batch, stream, protocol=protocol)


def test_cifar10_folder_and_single_batch(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train = [rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8) for _ in range(5)]
    for index, images in enumerate(train, start=1):
        _write_cifar_batch(folder / f"data_batch_{index}", images, protocol=2 if index % 2 else 5)
    test_images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    _write_cifar_batch(folder / "test_batch", test_images)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"cat"]}, protocol=2))
    source = open_source(folder)
    assert source.kind == "cifar" and source.n_images == 15
    np.testing.assert_array_equal(np.concatenate(list(source.batches(4))), np.concatenate(train))
    single = open_source(folder / "test_batch")
    assert single.n_images == 4
    np.testing.assert_array_equal(np.concatenate(list(single.batches(4))), test_images)
    assert open_source(folder).fingerprint() == source.fingerprint()


def test_cifar_images_are_one_c_contiguous_copy(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(3)
    train = [rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8) for _ in range(5)]
    for index, images in enumerate(train, start=1):
        _write_cifar_batch(folder / f"data_batch_{index}", images)
    source = open_source(folder)
    loaded = source._load()
    assert loaded.dtype == np.uint8 and loaded.shape == (10, 32, 32, 3)
    assert loaded.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(loaded, np.concatenate(train))


def test_cifar100_folder(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    images = np.random.default_rng(2).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    _write_cifar_batch(folder / "train", images, labels_key="fine_labels")
    _write_cifar_batch(folder / "test", images[:2], labels_key="fine_labels")
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": ["apple"]}))
    source = open_source(folder, limit=2)
    assert source.kind == "cifar" and source.n_images == 2 and source.n_available == 5
    np.testing.assert_array_equal(np.concatenate(list(source.batches(4))), images[:2])


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_cifar_pickles_cannot_run_code(tmp_path):
    folder = tmp_path / "evil"
    folder.mkdir()
    payload = {b"data": _Exploit()}
    (folder / "test_batch").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(SourceError, match="refusing to load.*system"):
        open_source(folder / "test_batch")
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8)}, protocol=2))
    with pytest.raises(SourceError, match="3072"):
        open_source(folder / "test_batch")


# ---------------------------------------------------------------------------------------------
# the real data in ../shared/data (small N)


def test_shared_cifar_jpeg_zip(shared_data):
    zip_path = shared_data / "cifar10" / "cifar10-test-jpg.zip"
    source = open_source(zip_path, limit=20, workers=0)
    assert source.kind == "archive" and source.n_available == 10000 and source.n_images == 20
    assert source.members[0] == "airplane/0000.jpg"
    batches = list(source.batches(8))
    assert [b.shape for b in batches] == [(8, 32, 32, 3), (8, 32, 32, 3), (4, 32, 32, 3)]
    assert source.lossy and source.skipped == []
    assert 40 < float(np.concatenate(batches).mean()) < 220


def test_shared_cifar_npy_and_mnist(shared_data):
    npy = open_source(shared_data / "cifar10" / "cifar10-test-0-999-uint8.npy", limit=30, seed=0)
    assert npy.n_available == 1000 and npy.n_images == 30 and not npy.lossy
    pixels = np.concatenate(list(npy.batches(16)))
    assert pixels.shape == (30, 32, 32, 3) and pixels.dtype == np.uint8
    mnist = open_source(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz", limit=25)
    assert mnist.kind == "mnist" and mnist.n_available == 10000 and mnist.n_images == 25
    digits = np.concatenate(list(mnist.batches(10)))
    assert digits.shape == (25, 28, 28, 3)
    np.testing.assert_array_equal(digits[..., 0], digits[..., 2])
    # MNIST: black background, white strokes.
    assert digits[:, 0, 0].max() == 0 and digits.max() == 255
