"""fidkit.sources: MNIST idx files, CIFAR python batches (restricted unpickling), and ../shared/data."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from fidkit.errors import EmptySourceError, SourceError
from fidkit.sources import open_source
from fidkit.sources.datasets import CIFAR_MAX_BATCH_BYTES

from peak_memory import MIB, _peak_growth_mib, _zeros

REPO_ROOT = Path(__file__).resolve().parent.parent
RNG = np.random.default_rng(2024)


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


# --- hostile round 3, 13: a CIFAR member is bounded by what a batch can be ------------------------------------------


def test_a_cifar_member_larger_than_a_batch_can_be_is_refused_from_its_tar_header(tmp_path):
    # The tar header claims 3 GiB; the data is not even there: refused from the header, nothing read.
    info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    info.size = 3 * 2**30
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(gzip.compress(header + bytes(4096)))
    with pytest.raises(SourceError, match=r"data_batch_1: 3,221,225,472 bytes, more than a CIFAR python batch can be"):
        open_source(archive)


def test_a_cifar_member_of_zeros_is_refused_before_it_is_read(tmp_path):
    # A real archive (about 0.1 MB) whose one member is 96 MiB of zeros, against a bound lowered to 8 MiB in
    # the subprocess (the real one, 266 MB, would make the test slow to build): reading the member would take
    # 96 MiB, refusing it from its size takes none.
    archive = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("cifar-100-python/train")
        info.size = 96 * MIB

        class Zeros:
            left = info.size

            def read(self, n: int = -1) -> bytes:
                n = self.left if n < 0 else min(n, self.left)
                self.left -= n
                return bytes(n)

        tar.addfile(info, Zeros())
    assert archive.stat().st_size < MIB
    growth, out = _peak_growth_mib(
        """
        import fidkit.sources.datasets
        from fidkit.errors import SourceError
        fidkit.sources.datasets.CIFAR_MAX_BATCH_BYTES = 8 * 2**20
        try:
            fidkit.sources.open_source(sys.argv[1])
        except SourceError as exc:
            print("REFUSED", exc)
        """,
        str(archive),
    )
    assert "REFUSED" in out and "more than a CIFAR python batch can be" in out
    assert growth < 40, f"peak memory grew by {growth:.0f} MiB"


def test_a_cifar_batch_file_larger_than_a_batch_can_be_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    big = folder / "test_batch"
    with open(big, "wb") as stream:
        stream.write(b"\x80\x02")
        stream.truncate(CIFAR_MAX_BATCH_BYTES + 1)  # sparse: no disk used
    with pytest.raises(SourceError, match=r"test_batch: .* more than a CIFAR python batch can be"):
        open_source(big)


# --- hostile round 3, 14: an MNIST .gz is read exactly as far as its header declares --------------------------------


def _idx3_header(n: int, rows: int = 28, cols: int = 28) -> bytes:
    return struct.pack(">IIII", 0x00000803, n, rows, cols)


def _gzip_member(payload_chunks, *, forged_size: int | None = None) -> bytes:
    """One gzip member of the chunks; its trailer records `forged_size` (mod 2**32) when given."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    body, crc, size = [], 0, 0
    for chunk in payload_chunks:
        body.append(compressor.compress(chunk))
        crc, size = zlib.crc32(chunk, crc), size + len(chunk)
    body.append(compressor.flush())
    recorded = size if forged_size is None else forged_size
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + b"".join(body) + struct.pack("<II", crc & 0xFFFFFFFF, recorded % 2**32)


def test_mnist_gz_with_data_beyond_its_header_is_refused_without_decompressing_it(tmp_path):
    # The header declares 5 images; the stream holds 96 MiB more, and its trailer records the declared size
    # (as a stream 4 GiB longer would): opening succeeds, reading refuses after the declared bytes + 1.
    images = RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    declared = _idx3_header(5) + images.tobytes()
    path = tmp_path / "long-images-idx3-ubyte.gz"
    path.write_bytes(_gzip_member([declared, *_zeros(96 * MIB)], forged_size=len(declared)))
    source = open_source(path)
    assert source.n_images == 5
    with pytest.raises(SourceError, match="longer than its header declares") as raised:
        list(source.batches(5))
    assert "truncated" not in str(raised.value)
    growth, out = _peak_growth_mib(
        """
        from fidkit.errors import SourceError
        try:
            list(fidkit.sources.open_source(sys.argv[1]).batches(5))
        except SourceError as exc:
            print("REFUSED", exc)
        """,
        str(path),
    )
    assert "REFUSED" in out and "longer than its header declares" in out
    assert growth < 48, f"peak memory grew by {growth:.0f} MiB"


def test_mnist_gz_of_two_members_is_refused_as_longer_than_declared(tmp_path):
    images = RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    declared = _idx3_header(3) + images.tobytes()
    path = tmp_path / "two-images-idx3-ubyte.gz"
    # The second member as long as the first: the trailer (the last member's) records the declared size.
    path.write_bytes(gzip.compress(declared) + gzip.compress(bytes(len(declared))))
    with pytest.raises(SourceError, match="longer than its header declares") as raised:
        list(open_source(path).batches(3))
    assert "truncated" not in str(raised.value)
    # The declared images alone still read.
    good = tmp_path / "good-images-idx3-ubyte.gz"
    good.write_bytes(gzip.compress(declared))
    np.testing.assert_array_equal(np.concatenate(list(open_source(good).batches(2)))[..., 0], images)


def test_mnist_header_declaring_more_than_the_gzip_can_hold_is_refused_at_open(tmp_path):
    path = tmp_path / "huge-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx3_header(2_000_000_000, 1000, 1000)))
    with pytest.raises(SourceError, match=r"can hold at most"):
        open_source(path)


def test_plain_mnist_longer_than_its_header_is_not_called_truncated(tmp_path):
    images = RNG.integers(0, 256, (2, 28, 28), dtype=np.uint8)
    path = tmp_path / "long-idx3-ubyte"
    path.write_bytes(_idx3_header(2) + images.tobytes() + bytes(100))
    with pytest.raises(SourceError, match="longer than its header declares") as raised:
        open_source(path)
    assert "truncated" not in str(raised.value)


# --- hostile round 3, 30: the real test data is found through FIDKIT_TEST_DATA --------------------------------------


def _pytest_one_real_data_test(data: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), FIDKIT_TEST_DATA=str(data))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         "tests/test_sources_datasets.py::test_shared_cifar_npy_and_mnist"],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300,
    )


def test_fidkit_test_data_points_the_tests_at_the_data(shared_data, tmp_path):
    elsewhere = tmp_path / "my-data"  # the data under another name, as a user keeps it (links: nothing copied)
    elsewhere.mkdir()
    for name in ("cifar10", "mnist"):
        (elsewhere / name).symlink_to(shared_data / name)
    found = _pytest_one_real_data_test(elsewhere)
    assert "1 passed" in found.stdout, found.stdout + found.stderr

    missing = _pytest_one_real_data_test(tmp_path / "nowhere")
    assert "1 skipped" in missing.stdout, missing.stdout + missing.stderr
    assert "FIDKIT_TEST_DATA" in missing.stdout and str(tmp_path / "nowhere") in missing.stdout


# --- hostile round 5, 7: MNIST files of narrow or no images ---------------------------------------------------------


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


# --- round 8, 2: a CIFAR pickle is refused containers no batch holds, before the unpickler builds them --------------


def _opcodes_of(value: object) -> bytes:
    """The opcodes that push `value` (a protocol-2 pickle without its PROTO and STOP)."""
    return pickle.dumps(value, protocol=2)[2:-1]


def _dict_pickle(keys: list, *, build_between: bool = False) -> bytes:
    """A pickled dict built with EMPTY_DICT and SETITEMS (as the reviewer's crafted file), each key mapped to 0;
    with `build_between`, a BUILD with no state after each half (which leaves the dict as it is)."""
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]] if build_between else [keys]
    out = bytearray(b"\x80\x02}")
    for half in halves:
        out += b"(" + b"".join(_opcodes_of(key) + b"K\x00" for key in half) + b"u"
        if build_between:
            out += b"Nb"  # NONE, BUILD
    return bytes(out + b".")


@pytest.mark.parametrize(
    ("content", "said"),
    [
        # Keys sharing one hash (multiples of 2**61-1): inserting each compared it with all before it.
        (_dict_pickle([k * (2**61 - 1) for k in range(1, 3000)]), "a CIFAR batch's keys are strings"),
        (_dict_pickle([(k,) for k in range(3)]), "a CIFAR batch's keys are strings"),
        (_dict_pickle([f"key{k}" for k in range(17)]), "a dict or set of more than 16 keys"),
        (_dict_pickle([f"key{k}" for k in range(20)], build_between=True), "a dict or set of more than 16 keys"),
        (pickle.dumps({"data": 0, "names": {f"n{k}" for k in range(40)}}, protocol=4), "a dict or set of more than 16 keys"),
        (pickle.dumps({"data": 0, "names": frozenset(f"n{k}" for k in range(40))}, protocol=4), "a dict or set of more than 16 keys"),
        # builtins.dict called on a list of pairs: refused before the call, as the opcodes are.
        (b"\x80\x02cbuiltins\ndict\n" + _opcodes_of([(k * (2**61 - 1), 0) for k in range(1, 40)]) + b"\x85R.",
         "builtins.dict of 39 entries"),
    ],
    ids=["colliding int keys", "tuple keys", "17 keys", "keys added after a BUILD", "set", "frozenset", "dict()"],
)
def test_a_cifar_pickle_with_a_dict_no_batch_holds_is_refused(tmp_path, content, said):
    path = tmp_path / "data_batch_1"
    path.write_bytes(content)
    with pytest.raises(SourceError, match="not a CIFAR python batch file") as raised:
        open_source(path)
    assert said in str(raised.value)


def test_a_cifar_pickle_with_a_list_longer_than_a_batch_has_images_is_refused(tmp_path):
    from fidkit.sources.datasets import _CIFAR_MAX_ITEMS

    path = tmp_path / "data_batch_1"
    labels = b"]" + b"".join(b"(" + b"K\x00" * 1000 + b"e" for _ in range(_CIFAR_MAX_ITEMS // 1000 + 1))
    path.write_bytes(b"\x80\x02}(" + _opcodes_of("labels") + labels + b"u.")
    with pytest.raises(SourceError, match=f"a list or tuple of more than {_CIFAR_MAX_ITEMS:,} entries"):
        open_source(path)


def test_a_cifar_pickle_with_a_memo_index_far_beyond_its_opcodes_is_refused(tmp_path):
    # LONG_BINPUT 2**24: the unpickler would grow its memo table to 2**25 entries (256 MiB) for these 9 bytes.
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x02N" + b"r" + (2**24).to_bytes(4, "little") + b".")
    with pytest.raises(SourceError, match="a memo index 16777216 beyond"):
        open_source(path)


def test_a_cifar_batch_with_a_label_and_a_file_name_per_image_still_loads(tmp_path):
    from fidkit.testing import cifar_batch

    # As CIFAR-100's train: 50,000 fine and coarse labels and file names (here beside 4 images, to stay small).
    images = RNG.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    n = 50_000
    path = tmp_path / "data_batch_1"
    path.write_bytes(cifar_batch(
        images, fine_labels=[i % 100 for i in range(n)], coarse_labels=[i % 20 for i in range(n)],
        filenames=[f"image_{i}.png".encode() for i in range(n)],
    ))
    np.testing.assert_array_equal(np.concatenate(list(open_source(path).batches(4))), images)


# --- round 8, 3: an MNIST .gz of several gzip members (as bgzip writes) is read ------------------------------------


@pytest.mark.parametrize("cuts", [[1000], [5, 2000, 4000]], ids=["two members", "four members"])
def test_mnist_gz_of_several_members_holding_the_declared_bytes_is_read(tmp_path, digits, cuts):
    payload = _idx3_header(len(digits)) + digits.tobytes()
    bounds = [0, *cuts, len(payload)]
    path = tmp_path / "multi-images-idx3-ubyte.gz"
    path.write_bytes(b"".join(gzip.compress(payload[a:b]) for a, b in zip(bounds, bounds[1:])))
    assert gzip.decompress(path.read_bytes()) == payload
    np.testing.assert_array_equal(np.concatenate(list(open_source(path).batches(3)))[..., 0], digits)


def test_mnist_gz_of_several_members_is_still_checked_for_its_size(tmp_path, digits):
    payload = _idx3_header(len(digits)) + digits.tobytes()
    first, second = gzip.compress(payload[:1000]), gzip.compress(payload[1000:])
    cut = tmp_path / "cut-images-idx3-ubyte.gz"
    cut.write_bytes(first + second[: len(second) // 2])  # the last member cut short
    with pytest.raises(SourceError, match="truncated or not an MNIST file"):
        open_source(cut)
    short = tmp_path / "short-images-idx3-ubyte.gz"
    short.write_bytes(first + gzip.compress(payload[1000:-784]))  # whole members, one image too few
    with pytest.raises(SourceError, match=f"holds only {len(payload) - 784:,} bytes; the file is truncated"):
        open_source(short)
    longer = tmp_path / "long-images-idx3-ubyte.gz"
    longer.write_bytes(first + gzip.compress(payload[1000:] + bytes(100)))
    with pytest.raises(SourceError, match="longer than its header declares") as raised:
        open_source(longer)
    assert "truncated" not in str(raised.value)


def test_mnist_gz_of_several_members_with_much_more_data_is_refused_at_open_in_bounded_memory(tmp_path):
    # The members after the declared bytes hold 96 MiB of zeros: counting stops one byte past the declared size.
    images = RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    path = tmp_path / "long-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx3_header(5) + images.tobytes()) + _gzip_member(_zeros(96 * MIB)))
    growth, out = _peak_growth_mib(
        """
        from fidkit.errors import SourceError
        try:
            fidkit.sources.open_source(sys.argv[1])
        except SourceError as exc:
            print("REFUSED", exc)
        """,
        str(path),
    )
    assert "REFUSED" in out and "longer than its header declares" in out
    assert growth < 24, f"peak memory grew by {growth:.0f} MiB"
