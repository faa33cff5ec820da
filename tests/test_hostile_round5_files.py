"""Hostile review, round 5: statistics and features files.

- 1: an ``.npz`` member whose ``.npy`` header declares a huge length (1 MB of deflated spaces declaring 1 GiB) is
  refused before the header is read: numpy reads all of a declared header before its own limit refuses it (2 GB
  for a 1 MB file), and its message advised ``allow_pickle=True``.
- 2: ``Stats.load`` / ``Features.load`` of a folder, a FIFO or a device say what the path is (a FIFO blocked
  ``Features.load`` forever; a folder was "no such statistics file").
"""

from __future__ import annotations

import os

import pytest

import fidkit
from fidkit.errors import StatsFileError


@pytest.mark.parametrize("load", [fidkit.Stats.load, fidkit.Features.load])
def test_loading_a_path_that_is_no_regular_file_says_what_it_is(tmp_path, load):
    (tmp_path / "folder.npz").mkdir()
    os.mkfifo(tmp_path / "fifo.npz")  # opened, it would block until a writer came
    (tmp_path / "zero.npz").symlink_to("/dev/zero")
    for name, kind in (("folder.npz", "is a folder"), ("fifo.npz", "is a FIFO"), ("zero.npz", "is a character device"),
                       ("missing.npz", "no such")):
        with pytest.raises(StatsFileError, match=kind):
            load(tmp_path / name)
