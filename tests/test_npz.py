"""Numpy files read header first (fidkit._npz): statistics and image ``.npz`` members are checked against what
their headers declare before anything is read, and no read goes past it; misnamed ``.npy`` / ``.npz`` files.

Where a file could make fidkit allocate a lot, the test runs in a subprocess and bounds its peak memory
(``VmHWM``), never its time. The groups below came from the hostile-input reviews (rounds 3 and 5).
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fidkit
from fidkit.errors import InputError, SourceError, StatsFileError
from fidkit.sources import open_source
from fidkit.stats import Stats

from cli_runs import _assert_one_line_error, _run_cli
from peak_memory import MIB, _peak_growth_mib, _zeros

REPO_ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(2024)


# --- hostile round 3, 15: a statistics .npz is read header first ----------------------------------------------------


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


# --- hostile round 3, 16: an image .npz member is checked from its header, then read only as far as needed ----------


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


# --- hostile round 3, 18: misnamed .npy / .npz files ----------------------------------------------------------------


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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    for key in ("npz_as_npy", "npy_as_npz"):
        done = subprocess.run(
            [sys.executable, "-m", "fidkit", "stats", str(misnamed[key]), "--quiet"],
            capture_output=True, text=True, env=env, timeout=120,
        )
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr and "internal error" not in done.stderr
        assert done.stderr.strip().count("\n") == 0 and "rename it" in done.stderr


# --- hostile round 3, 22: a statistics file that lost sigma ---------------------------------------------------------


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


# --- hostile round 5, 1: an .npy header declaring a huge length is refused before it is read ------------------------


def _header_bomb(path, declared: int, key: str = "mu") -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
            member.write(b"\x93NUMPY\x02\x00" + struct.pack("<I", declared))
            left = declared
            while left > 0:
                member.write(b" " * min(left, 2**22))
                left -= 2**22
        archive.writestr("sigma.npy", b"")


@pytest.mark.parametrize("key", ["mu", "images"])
def test_a_npy_header_declaring_megabytes_is_refused_before_it_is_read(tmp_path, key):
    path = tmp_path / "bomb.npz"
    _header_bomb(path, 48 * 2**20, key)
    assert path.stat().st_size < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(fidkit.errors.FidkitError) as refused:
            if key == "mu":
                fidkit.Stats.load(path)
            else:
                fidkit.compute_stats(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, peak  # zip's buffers; numpy's read of the declared header took 2 GB for 1 GiB
    message = str(refused.value)
    assert "50,331,648 bytes" in message and "bomb.npz" in message, message
    assert "allow_pickle" not in message


def test_an_ordinary_header_of_either_version_still_reads(tmp_path):
    rows = np.random.default_rng(0).normal(size=(30, 5))
    stats = fidkit.Stats.from_features(rows)
    stats.save(tmp_path / "v1.npz")
    np.savez(tmp_path / "v2.npz", mu=stats.mu, sigma=stats.sigma)
    with zipfile.ZipFile(tmp_path / "v2.npz", "a") as archive:  # a version 2.0 member as numpy writes a wide header
        import io

        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, np.arange(3.0), version=(2, 0))
        archive.writestr("extra.npy", buffer.getvalue())
    for name in ("v1.npz", "v2.npz"):
        loaded = fidkit.Stats.load(tmp_path / name)
        np.testing.assert_array_equal(loaded.mu, stats.mu)
        np.testing.assert_array_equal(loaded.sigma, stats.sigma)


# --- hostile round 7, 5: statistics wider than a file holds are refused before they are written or computed ---------


def test_statistics_wider_than_a_file_holds_are_not_written(tmp_path, monkeypatch):
    import fidkit.statsfile as statsfile

    monkeypatch.setattr(statsfile, "MAX_STATS_DIM", 8)  # the one limit: the reader's and the writer's
    wide = Stats(mu=np.zeros(9), sigma=np.eye(9))
    with pytest.raises(StatsFileError, match=r"wide\.npz: not written: statistics of dim 9 are above the 8"):
        wide.save(tmp_path / "wide.npz")
    assert not (tmp_path / "wide.npz").exists() and list(tmp_path.iterdir()) == []
    Stats(mu=np.zeros(8), sigma=np.eye(8)).save(tmp_path / "fits.npz")
    assert Stats.load(tmp_path / "fits.npz").dim == 8


def test_features_wider_than_statistics_hold_are_refused_before_any_covariance_is_allocated():
    # (3, 200000) features asked numpy for a 298 GiB covariance (a raw _ArrayMemoryError); (2, 16385) made a 2.1 GB
    # statistics file that Stats.load refuses. The limit is the reader's, MAX_STATS_DIM.
    limit = fidkit.statsfile.MAX_STATS_DIM
    wide = np.zeros((3, 200_000), np.float32)
    with pytest.raises(InputError, match=r"features_a has 200,000 feature columns, above the 16,384 .* 298\.0 GiB"):
        fidkit.fid_from_arrays(wide, wide)
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=rf"features has {limit + 1:,} feature columns, above the {limit:,}"):
            Stats.from_features(np.zeros((2, limit + 1), np.float32))
        with pytest.raises(InputError, match="feature batch has 16,385 feature columns"):
            fidkit.StatsAccumulator().update(np.zeros((2, limit + 1), np.float32))
        with pytest.raises(InputError, match=r"StatsAccumulator\(dim\) has 20,000 feature columns"):
            fidkit.StatsAccumulator(20_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MIB  # the (2, 16385) features themselves, not a 2 GiB covariance
