"""Hostile inputs around files, the cache and the standard streams (issue 9).

Every case is built in ``tmp_path`` with ``FIDKIT_HOME`` pointed into it. The network is a counting fake
(8 random features per image), so nothing here exports or runs the Inception graph; what is tested is
what fidkit writes, deletes, prints and returns.
"""

from __future__ import annotations


import numpy as np
import pytest



# --- 14: messages ------------------------------------------------------------------------------------------


def test_complex_statistics_are_refused_unless_exactly_real(tmp_path):
    from fidkit.errors import InputError, StatsFileError
    from fidkit.stats import Stats

    sigma = np.eye(3) + 1e-3j * np.ones((3, 3))
    with pytest.raises(InputError, match="sigma is complex"):
        Stats(mu=np.zeros(3), sigma=sigma)
    with pytest.raises(InputError, match="mu is complex"):
        Stats(mu=np.array([0, 1j, 0]), sigma=np.eye(3))
    path = tmp_path / "complex.npz"
    np.savez(path, mu=np.zeros(3), sigma=sigma)
    with pytest.raises(StatsFileError, match="complex.npz.*sigma is complex"):
        Stats.load(path)
    exact = Stats(mu=np.zeros(3) + 0j, sigma=np.eye(3) + 0j)
    assert exact.sigma.dtype == np.float64 and np.array_equal(exact.sigma, np.eye(3))


def test_statistics_with_hostile_metadata_are_file_errors_or_read_as_unknown(tmp_path, capsys):
    import json

    import numpy as np

    from fidkit.cli import main

    deep = "[" * 100_000 + "]" * 100_000
    np.savez(tmp_path / "deep.npz", mu=np.zeros(2), sigma=np.eye(2), fidkit_metadata_json=np.asarray(deep))
    assert main(["info", str(tmp_path / "deep.npz")]) == 1
    assert "nested too deeply" in capsys.readouterr().err
    lots = json.dumps({"n_skipped": "lots", "skipped_files": "not a list"})
    np.savez(tmp_path / "lots.npz", mu=np.zeros(2), sigma=np.eye(2), n=np.int64(5), fidkit_metadata_json=np.asarray(lots))
    assert main(["compute", str(tmp_path / "lots.npz"), str(tmp_path / "lots.npz"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fid"] == 0.0 and report["a"]["n_skipped"] == 0
