"""Hostile inputs, round 3, on the sources and the statistics file: each test builds a small hostile file.

* the splits of one CIFAR archive have different fingerprints (never one another's cache entry);
* what a header declares is checked before anything is read, and no read goes past it: CIFAR members, MNIST
  ``.gz`` streams, statistics ``.npz`` members, image ``.npz`` members. Where a file could make fidkit allocate
  a lot, the test runs in a subprocess and bounds its peak memory (``VmHWM``), never its time;
* ``stats --save`` never replaces its input; misnamed ``.npy`` / ``.npz`` files, a ``FIDKIT_DATASETS`` that is a
  file and a statistics file missing ``sigma`` are one-line errors.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import struct
import subprocess
import sys
import tarfile
import textwrap
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from fidkit.cli import main
from fidkit.errors import InputError, OverwriteError, SourceError, StatsFileError
from fidkit.sources import open_source, refuse_outputs_over_inputs
from fidkit.sources import named
from fidkit.sources.datasets import CIFAR_MAX_BATCH_BYTES
from fidkit.sources.named import DatasetFile
from fidkit.stats import Stats
from fidkit.testing import cifar_batch, tar_gz

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20


# --- helpers -----------------------------------------------------------------------------------------------


def _peak_growth_mib(script: str, *args: str) -> tuple[float, str]:
    """Run `script` in a fresh interpreter; return (peak RSS growth in MiB while it ran, its stdout).

    The script runs after ``import fidkit.sources, fidkit.stats, numpy``, so their memory is not counted. The
    peak is the process's own high-water mark (``VmHWM``): ``ru_maxrss`` would start from the parent's, which
    Linux carries across fork and exec.
    """
    prelude = textwrap.dedent(
        """
        import resource, sys
        import numpy as np
        import fidkit.sources, fidkit.stats, fidkit.statsfile

        def peak_kib():
            try:
                with open("/proc/self/status") as status:
                    return int(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
            except (OSError, StopIteration):
                return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        before = peak_kib()
        """
    )
    epilogue = "\nprint('GROWTH_KIB', peak_kib() - before)\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script) + epilogue, *args],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    growth = float(next(line.split()[1] for line in lines if line.startswith("GROWTH_KIB"))) / 1024
    return growth, "\n".join(line for line in lines if not line.startswith("GROWTH_KIB"))


def _zeros(n_bytes: int, chunk: int = 8 * MIB):
    """`n_bytes` zero bytes, in chunks (never all in memory)."""
    block = bytes(chunk)
    while n_bytes > 0:
        yield block[: min(chunk, n_bytes)]
        n_bytes -= chunk


def _npy_header(shape: tuple[int, ...], dtype: str, fortran: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": np.dtype(dtype).str, "fortran_order": fortran, "shape": shape}
    )
    return buffer.getvalue()


def _write_npz_member(archive: zipfile.ZipFile, key: str, shape: tuple[int, ...], dtype: str,
                      data: bytes | None = None) -> None:
    """A member whose header declares `shape`/`dtype`; its data is `data`, or zeros of the declared size,
    streamed through the compressor (the test process never holds them)."""
    with archive.open(f"{key}.npy", "w", force_zip64=True) as stream:
        stream.write(_npy_header(shape, dtype))
        if data is not None:
            stream.write(data)
        else:
            for block in _zeros(int(np.prod(shape)) * np.dtype(dtype).itemsize):
                stream.write(block)


RNG = np.random.default_rng(2024)


def _cifar10_archive() -> tuple[bytes, np.ndarray, np.ndarray]:
    train = [RNG.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8) for _ in range(5)]
    test = RNG.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    members = {f"cifar-10-batches-py/data_batch_{i + 1}": cifar_batch(batch) for i, batch in enumerate(train)}
    members["cifar-10-batches-py/test_batch"] = cifar_batch(test)
    return tar_gz(members), np.concatenate(train), test


def _cifar100_archive() -> tuple[bytes, np.ndarray, np.ndarray]:
    train = RNG.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    test = RNG.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    members = {"cifar-100-python/train": cifar_batch(train), "cifar-100-python/test": cifar_batch(test)}
    return tar_gz(members), train, test


def _run_cli(argv: list[str], capsys) -> tuple[int, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.err


def _assert_one_line_error(status: int, err: str, *needles: str) -> None:
    assert status in (1, 2), err
    assert "Traceback" not in err and "internal error" not in err, err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], err


# --- 1: the splits of one archive are different sources --------------------------------------------------


@pytest.fixture
def local_cifar(tmp_path, fidkit_home, monkeypatch) -> dict[str, np.ndarray]:
    """Both CIFAR archives in a FIDKIT_DATASETS folder, the registry pointing at their checksums."""
    folder = tmp_path / "datasets"
    folder.mkdir()
    expected: dict[str, np.ndarray] = {}
    for file_name, (data, train, test), prefix in (
        ("cifar-10-python.tar.gz", _cifar10_archive(), "cifar10"),
        ("cifar-100-python.tar.gz", _cifar100_archive(), "cifar100"),
    ):
        (folder / file_name).write_bytes(data)
        file = DatasetFile(file_name, ("http://127.0.0.1:9/unused",), hashlib.md5(data).hexdigest(), len(data))
        for split, images in (("train", train), ("test", test)):
            name = f"{prefix}-{split}"
            dataset = dataclasses.replace(named.DATASETS[name], file=file, n_images=len(images))
            monkeypatch.setitem(named.DATASETS, name, dataset)
            expected[name] = images
    monkeypatch.setenv("FIDKIT_DATASETS", str(folder))
    monkeypatch.delenv("FIDKIT_MIRROR", raising=False)
    return expected


@pytest.mark.parametrize("prefix", ["cifar10", "cifar100"])
@pytest.mark.parametrize("hash_content", [False, True])
def test_the_splits_of_one_cifar_archive_have_different_fingerprints(local_cifar, prefix, hash_content):
    train = open_source(f"{prefix}-train")
    test = open_source(f"{prefix}-test")
    assert train.fingerprint(hash_content=hash_content) != test.fingerprint(hash_content=hash_content)
    # Each is still stable, and reads its own images.
    assert test.fingerprint(hash_content=hash_content) == open_source(f"{prefix}-test").fingerprint(
        hash_content=hash_content
    )
    for source, name in ((train, f"{prefix}-train"), (test, f"{prefix}-test")):
        pixels = np.concatenate(list(source.batches(4)))
        np.testing.assert_array_equal(pixels, local_cifar[name])


def test_the_archive_path_is_its_training_split_and_not_its_test_split(local_cifar, tmp_path):
    archive = tmp_path / "datasets" / "cifar-10-python.tar.gz"
    by_path = open_source(archive)
    fingerprints = {open_source(name).fingerprint() for name in ("cifar10-train", "cifar10-test")}
    assert by_path.fingerprint() != open_source("cifar10-test").fingerprint()
    assert len(fingerprints) == 2


# --- 13: a CIFAR member is bounded by what a batch can be ------------------------------------------------


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


# --- 14: an MNIST .gz is read exactly as far as its header declares -------------------------------------


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


# --- 15: a statistics .npz is read header first ---------------------------------------------------------


def _stats_bomb(path: Path, dim: int) -> None:
    """mu and a zero sigma of `dim`, deflated: dim * dim * 8 bytes declared in about a thousandth of that."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        _write_npz_member(archive, "mu", (dim,), "<f8")
        _write_npz_member(archive, "sigma", (dim, dim), "<f8")


def test_a_statistics_file_declaring_a_huge_sigma_in_little_data_is_refused_before_reading(tmp_path, capsys):
    path = tmp_path / "bomb.npz"
    _stats_bomb(path, 5000)  # 200 MB of sigma in about 0.2 MB
    assert path.stat().st_size < 2 * MIB
    with pytest.raises(StatsFileError, match=r"bomb\.npz: mu, sigma declare 200,040,000 bytes held in"):
        Stats.load(path)
    growth, out = _peak_growth_mib(
        """
        from fidkit.errors import StatsFileError
        try:
            fidkit.stats.Stats.load(sys.argv[1])
        except StatsFileError as exc:
            print("REFUSED", exc)
        """,
        str(path),
    )
    assert "REFUSED" in out
    assert growth < 48, f"peak memory grew by {growth:.0f} MiB"
    status, err = _run_cli(["info", str(path)], capsys)
    _assert_one_line_error(status, err, "bomb.npz", "compress")


def test_statistics_headers_that_do_not_agree_are_refused_before_reading(tmp_path):
    cases = {
        "square.npz": (((6,), "<f8"), ((6, 5), "<f8"), r"sigma has shape \(6, 5\) but mu has length 6"),
        "dims.npz": (((6,), "<f8"), ((7, 7), "<f8"), r"sigma has shape \(7, 7\) but mu has length 6"),
        "matrix_mu.npz": (((2, 3), "<f8"), ((3, 3), "<f8"), r"mu has shape \(2, 3\); it must be a 1-D vector"),
        "text.npz": (((3,), "<U4"), ((3, 3), "<f8"), r"'mu' has dtype <U4, not numbers"),
    }
    for file_name, ((mu_shape, mu_dtype), (sigma_shape, sigma_dtype), message) in cases.items():
        with zipfile.ZipFile(tmp_path / file_name, "w") as archive:
            _write_npz_member(archive, "mu", mu_shape, mu_dtype)
            _write_npz_member(archive, "sigma", sigma_shape, sigma_dtype)
        with pytest.raises(StatsFileError, match=message):
            Stats.load(tmp_path / file_name)


def test_statistics_members_declaring_more_than_they_hold_are_refused(tmp_path):
    # Headers of 16,000 x 16,000 float64 (2 GB) and of a billion-element n, in members of a few bytes.
    with zipfile.ZipFile(tmp_path / "short.npz", "w") as archive:
        _write_npz_member(archive, "mu", (16_000,), "<f8", data=bytes(64))
        _write_npz_member(archive, "sigma", (16_000, 16_000), "<f8", data=bytes(64))
    with pytest.raises(StatsFileError, match=r"short\.npz: array '(mu|sigma)' declares shape .* holds 64 bytes"):
        Stats.load(tmp_path / "short.npz")
    with zipfile.ZipFile(tmp_path / "long_n.npz", "w") as archive:
        _write_npz_member(archive, "mu", (2,), "<f8")
        _write_npz_member(archive, "sigma", (2, 2), "<f8")
        _write_npz_member(archive, "n", (10**9,), "<i8", data=bytes(8))
    with pytest.raises(StatsFileError, match=r"long_n\.npz: array 'n' declares"):
        Stats.load(tmp_path / "long_n.npz")


def test_statistics_dim_above_the_maximum_is_refused(tmp_path, monkeypatch):
    import fidkit.statsfile as statsfile

    monkeypatch.setattr(statsfile, "MAX_STATS_DIM", 8)
    np.savez(tmp_path / "wide.npz", mu=np.zeros(9), sigma=np.eye(9))
    with pytest.raises(StatsFileError, match=r"wide\.npz: mu declares dim 9, above the 8"):
        Stats.load(tmp_path / "wide.npz")
    np.savez(tmp_path / "fits.npz", mu=np.zeros(8), sigma=np.eye(8))
    assert Stats.load(tmp_path / "fits.npz").dim == 8


def test_a_zip_directory_claiming_more_than_the_file_holds_is_refused(tmp_path):
    path = tmp_path / "lying.npz"
    np.savez(path, mu=np.zeros(3), sigma=np.eye(3))
    data = bytearray(path.read_bytes())
    # The central directory's uncompressed and compressed sizes of the first member, set to 2 GB.
    central = data.rindex(b"PK\x01\x02", 0, data.rindex(b"PK\x01\x02"))
    struct.pack_into("<II", data, central + 20, 2 * 10**9, 2 * 10**9)
    path.write_bytes(bytes(data))
    with pytest.raises(StatsFileError, match=r"lying\.npz: the zip directory says member .* cannot hold it"):
        Stats.load(path)


def test_genuine_statistics_files_still_load(tmp_path, monkeypatch):
    import fidkit.statsfile as statsfile

    rng = np.random.default_rng(3)
    features = rng.standard_normal((10, 12))
    stats = Stats.from_features(features)
    stats.save(tmp_path / "fidkit.npz")
    loaded = Stats.load(tmp_path / "fidkit.npz")
    assert loaded.n == 10 and np.array_equal(loaded.sigma, stats.sigma) and loaded.factor is not None
    np.savez_compressed(tmp_path / "compressed.npz", mu=stats.mu, sigma=np.asfortranarray(stats.sigma))
    assert np.array_equal(Stats.load(tmp_path / "compressed.npz").sigma, stats.sigma)
    # Past the bytes allowed whatever the compression (lowered here to 1 MiB, dim 362, to keep the test
    # small), a genuine sigma compressed by numpy still loads: a covariance compresses little ...
    monkeypatch.setattr(statsfile, "_STATS_FREE_BYTES", MIB)
    dim = 600
    sigma = np.cov(rng.standard_normal((dim + 10, dim)).astype(np.float32), rowvar=False)
    np.savez_compressed(tmp_path / "big.npz", mu=np.zeros(dim), sigma=sigma)
    assert Stats.load(tmp_path / "big.npz").dim == dim
    # ... and uncompressed, whatever it holds; zeros of the same size, deflated, are refused.
    np.savez(tmp_path / "stored.npz", mu=np.zeros(dim), sigma=np.zeros((dim, dim)))
    assert Stats.load(tmp_path / "stored.npz").dim == dim
    _stats_bomb(tmp_path / "zeros.npz", dim)
    with pytest.raises(StatsFileError, match=r"zeros\.npz: .*a real covariance does not compress like that"):
        Stats.load(tmp_path / "zeros.npz")


# --- 16: an image .npz member is checked from its header, then read only as far as needed ---------------


def _image_bomb(path: Path, shape: tuple[int, ...], dtype: str = "|u1") -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        _write_npz_member(archive, "images", shape, dtype)


def test_image_npz_dtype_is_checked_from_the_header_before_any_pixel(tmp_path):
    path = tmp_path / "floats.npz"
    _image_bomb(path, (4, 2000, 2000, 3), "<f4")  # 192 MB of float32 in about 0.2 MB
    growth, out = _peak_growth_mib(
        """
        from fidkit.errors import InputError
        try:
            fidkit.sources.open_source(sys.argv[1], limit=1)
        except InputError as exc:
            print("REFUSED", exc)
        """,
        str(path),
    )
    assert "REFUSED" in out and "uint8" in out
    assert growth < 48, f"peak memory grew by {growth:.0f} MiB"
    with pytest.raises(InputError, match=r"floats\.npz\[images\]: images must be uint8"):
        open_source(path)


def test_image_npz_with_limit_reads_only_the_images_it_uses(tmp_path):
    path = tmp_path / "big.npz"
    _image_bomb(path, (8, 3000, 3000, 3))  # 216 MB of pixels; one image is 27 MB
    growth, out = _peak_growth_mib(
        """
        source = fidkit.sources.open_source(sys.argv[1], limit=1)
        batches = list(source.batches(4))
        print("SHAPE", [batch.shape for batch in batches])
        """,
        str(path),
    )
    assert "SHAPE [(1, 3000, 3000, 3)]" in out
    assert growth < 100, f"peak memory grew by {growth:.0f} MiB"


def test_image_npz_members_declaring_more_than_they_hold_are_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "short.npz", "w") as archive:
        _write_npz_member(archive, "images", (8, 10_000, 10_000, 3), "|u1", data=bytes(1000))
    with pytest.raises(SourceError, match=r"short\.npz: array 'images' declares shape \(8, 10000, 10000, 3\)"):
        open_source(tmp_path / "short.npz", limit=1)


@pytest.mark.parametrize("compressed", [False, True])
def test_image_npz_subsets_and_passes_read_the_right_pixels(tmp_path, compressed):
    images = RNG.integers(0, 256, (23, 5, 7, 3), dtype=np.uint8)
    path = tmp_path / "images.npz"
    (np.savez_compressed if compressed else np.savez)(path, images=images, labels=np.arange(23))
    for limit, seed in ((None, None), (9, None), (9, 4), (1, 7)):
        source = open_source(path, limit=limit, seed=seed)
        reference = open_source(images, limit=limit, seed=seed)
        for _ in range(2):  # a second pass re-reads the member from its start
            got = np.concatenate(list(source.batches(4)))
            np.testing.assert_array_equal(got, np.concatenate(list(reference.batches(4))))
    np.savez(tmp_path / "fortran.npz", np.asfortranarray(images))
    np.testing.assert_array_equal(np.concatenate(list(open_source(tmp_path / "fortran.npz").batches(6))), images)
    gray = images[..., 0]
    np.savez(tmp_path / "gray.npz", gray)
    assert np.concatenate(list(open_source(tmp_path / "gray.npz").batches(6))).shape == (23, 5, 7, 3)


# --- 17: stats --save never replaces its input ------------------------------------------------------------


def _images_npy(path: Path) -> bytes:
    np.save(path, RNG.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8))
    return path.read_bytes()


@pytest.mark.parametrize("alias", ["same", "relative", "dotted", "absolute", "symlink", "hardlink"])
def test_stats_save_over_its_input_is_refused_naming_both(tmp_path, monkeypatch, capsys, alias):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    original = _images_npy(tmp_path / "images.npy")
    output = {
        "same": "images.npy",
        "relative": "sub/../images.npy",
        "dotted": "./images.npy",
        "absolute": str(tmp_path / "images.npy"),
        "symlink": "link.npy",
        "hardlink": "hard.npy",
    }[alias]
    if alias == "symlink":
        os.symlink("images.npy", "link.npy")
    if alias == "hardlink":
        os.link("images.npy", "hard.npy")
    for extra in ([], ["--force"]):
        status, err = _run_cli(["stats", "images.npy", "--save", output, *extra, "--quiet"], capsys)
        # (argparse's Path drops a leading "./")
        _assert_one_line_error(status, err, f"--save {os.path.normpath(output) if alias == 'dotted' else output}",
                               "the input images.npy")
        assert (tmp_path / "images.npy").read_bytes() == original


def test_refuse_output_over_input_leaves_other_outputs_and_inputs_alone(tmp_path):
    _images_npy(tmp_path / "images.npy")
    refuse_outputs_over_inputs([tmp_path / "stats.npz"], str(tmp_path / "images.npy"))
    refuse_outputs_over_inputs([tmp_path / "stats.npz"], np.zeros((2, 4, 4, 3), np.uint8), "no-such-file")
    with pytest.raises(OverwriteError, match="images.npy"):
        refuse_outputs_over_inputs([tmp_path / "images.npy"], "other", tmp_path / "images.npy")


def test_stats_save_over_a_named_datasets_file_is_refused(local_cifar, tmp_path, capsys):
    archive = tmp_path / "datasets" / "cifar-10-python.tar.gz"
    before = archive.read_bytes()
    status, err = _run_cli(["stats", "cifar10-test", "--save", str(archive), "--force", "--quiet"], capsys)
    _assert_one_line_error(status, err, "the input cifar10-test")
    assert archive.read_bytes() == before


# --- 18: misnamed .npy / .npz files -----------------------------------------------------------------------


@pytest.fixture
def misnamed(tmp_path) -> dict[str, Path]:
    images = RNG.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    npz_as_npy = tmp_path / "zip_inside.npy"
    with open(npz_as_npy, "wb") as stream:
        np.savez(stream, images=images)
    npy_as_npz = tmp_path / "array_inside.npz"
    with open(npy_as_npz, "wb") as stream:
        np.save(stream, images)
    stats_as_npy = tmp_path / "stats_inside.npy"
    with open(stats_as_npy, "wb") as stream:
        np.savez(stream, mu=np.zeros(3), sigma=np.eye(3))
    return {"npz_as_npy": npz_as_npy, "npy_as_npz": npy_as_npz, "stats_as_npy": stats_as_npy}


def test_misnamed_numpy_files_are_source_errors_naming_the_fix(misnamed):
    with pytest.raises(SourceError, match=r"zip_inside\.npy: the file holds an \.npz archive .* rename it \.npz"):
        open_source(misnamed["npz_as_npy"])
    with pytest.raises(SourceError, match=r"array_inside\.npz: the file holds a single array .* rename it \.npy"):
        open_source(misnamed["npy_as_npz"])
    with pytest.raises(StatsFileError, match=r"array_inside\.npz: holds a single array"):
        Stats.load(misnamed["npy_as_npz"])


@pytest.mark.parametrize("key", ["npz_as_npy", "npy_as_npz", "stats_as_npy"])
@pytest.mark.parametrize("command", ["stats", "info", "compute"])
def test_misnamed_numpy_files_are_one_line_cli_errors(misnamed, capsys, key, command):
    path = str(misnamed[key])
    argv = {"stats": ["stats", path, "--quiet"], "info": ["info", path], "compute": ["compute", path, path, "--quiet"]}
    status, err = _run_cli(argv[command], capsys)
    if command == "info" and key == "stats_as_npy":
        assert status == 0, err  # statistics are read by content, whatever the name
        return
    _assert_one_line_error(status, err, Path(path).name)


def test_misnamed_npz_through_python_m_fidkit(misnamed):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for key in ("npz_as_npy", "npy_as_npz"):
        done = subprocess.run(
            [sys.executable, "-m", "fidkit", "stats", str(misnamed[key]), "--quiet"],
            capture_output=True, text=True, env=env, timeout=120,
        )
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr and "internal error" not in done.stderr
        assert done.stderr.strip().count("\n") == 0 and "rename it" in done.stderr


# --- 22: FIDKIT_DATASETS naming a file; a statistics file that lost sigma ---------------------------------


def test_fidkit_datasets_naming_a_file_is_an_error(tmp_path, fidkit_home, monkeypatch, capsys):
    file = tmp_path / "cifar-10-python.tar.gz"
    file.write_bytes(b"not a folder")
    monkeypatch.setenv("FIDKIT_DATASETS", str(file))
    with pytest.raises(SourceError, match=r"FIDKIT_DATASETS=.*cifar-10-python\.tar\.gz is a file, not a folder.*"
                                          + str(tmp_path).replace("\\", "\\\\")):
        open_source("cifar10-test")
    status, err = _run_cli(["datasets"], capsys)
    _assert_one_line_error(status, err, "FIDKIT_DATASETS")


@pytest.mark.parametrize(("present", "missing"), [("mu", "sigma"), ("sigma", "mu")])
def test_a_statistics_file_missing_sigma_or_mu_is_a_broken_statistics_file(tmp_path, capsys, present, missing):
    from fidkit.statsfile import is_stats_file  # what the pipeline asks to tell statistics from images

    path = tmp_path / f"only_{present}.npz"
    arrays = {"mu": np.zeros(4), "sigma": np.eye(4)}
    np.savez(path, **{present: arrays[present]})
    assert is_stats_file(path)
    with pytest.raises(StatsFileError, match=rf"has no '{missing}'.*broken statistics file"):
        Stats.load(path)
    with pytest.raises(StatsFileError, match=rf"broken statistics file: it has '{present}' but no '{missing}'"):
        open_source(path)
    for argv in (["stats", str(path), "--quiet"], ["info", str(path)], ["compute", str(path), str(path), "--quiet"]):
        status, err = _run_cli(argv, capsys)
        _assert_one_line_error(status, err, f"'{missing}'")
        assert "uint8" not in err
    # Images saved beside a stray "mu" are still images.
    np.savez(tmp_path / "images_and_mu.npz", images=np.zeros((2, 4, 4, 3), np.uint8), mu=np.zeros(4))
    assert not is_stats_file(tmp_path / "images_and_mu.npz")
    assert open_source(tmp_path / "images_and_mu.npz").n_images == 2
