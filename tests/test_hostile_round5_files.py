"""Hostile review, round 5: statistics and features files.

- 1: an ``.npz`` member whose ``.npy`` header declares a huge length (1 MB of deflated spaces declaring 1 GiB) is
  refused before the header is read: numpy reads all of a declared header before its own limit refuses it (2 GB
  for a 1 MB file), and its message advised ``allow_pickle=True``.
- 2: ``Stats.load`` / ``Features.load`` of a folder, a FIFO or a device say what the path is (a FIFO blocked
  ``Features.load`` forever; a folder was "no such statistics file").
"""

from __future__ import annotations

import os
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

import fidkit
from fidkit.errors import StatsFileError


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


@pytest.mark.parametrize("load", [fidkit.Stats.load, fidkit.Features.load])
def test_loading_a_path_that_is_no_regular_file_says_what_it_is(tmp_path, load):
    (tmp_path / "folder.npz").mkdir()
    os.mkfifo(tmp_path / "fifo.npz")  # opened, it would block until a writer came
    (tmp_path / "zero.npz").symlink_to("/dev/zero")
    for name, kind in (("folder.npz", "is a folder"), ("fifo.npz", "is a FIFO"), ("zero.npz", "is a character device"),
                       ("missing.npz", "no such")):
        with pytest.raises(StatsFileError, match=kind):
            load(tmp_path / name)


def test_a_full_disk_is_said_to_be_full_not_unwritable(tmp_path, monkeypatch):
    # ENOSPC (and a quota, a file-size limit) asked the user for "a writable folder", which they had.
    import errno

    import fidkit._fs as fs

    stats = fidkit.Stats.from_features(np.random.default_rng(0).normal(size=(20, 4)))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fs.tempfile, "mkstemp", full)
    with pytest.raises(StatsFileError, match=r"No space left on device\); free disk space, or choose a path on another"):
        stats.save(tmp_path / "stats.npz")
    monkeypatch.setattr(fs.tempfile, "mkstemp", lambda *a, **k: (_ for _ in ()).throw(PermissionError(errno.EACCES, "Permission denied")))
    with pytest.raises(StatsFileError, match=r"choose a path in a writable folder"):
        stats.save(tmp_path / "stats.npz")
