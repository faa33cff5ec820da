"""Hostile review, round 5: what the documentation promises against what fidkit does.

- 1: ``fid_from_arrays(method="ttur")``, the documented name, does not warn that it is an old name (it did, and
  ``"sqrtm"`` warned twice).
- 2: a warning fidkit logs (too many workers, a corrupt cache entry, a side not cached) is printed as
  ``fidkit: warning: ...`` and listed in ``--json``'s ``warnings``, as usage.md says of every warning.
- 3: a FID below 0.0001 is not printed as ``0.0000``.
- 4: ``fidkit stats``/``features`` warn when the statistics they keep come from weights other than the released
  file (``compute`` did; these printed an info line once per process, nothing with ``--quiet``).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import fidkit
from fidkit.cli import main
from fidkit.errors import FidkitWarning


def test_the_documented_ttur_method_does_not_warn_and_the_old_name_warns_once():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 4)), rng.normal(size=(60, 4)) + 0.1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ttur = fidkit.fid_from_arrays(x, y, method="ttur")
    assert not [w for w in caught if issubclass(w.category, FidkitWarning)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = fidkit.fid_from_arrays(x, y, method="sqrtm")
    old_name = [w for w in caught if "older name" in str(w.message)]
    assert len(old_name) == 1 and old_name[0].filename == __file__  # pointed at the caller's line
    assert old.value == ttur.value


def test_a_tiny_fid_is_not_printed_as_zero():
    from fidkit._plain import fid_text

    assert fid_text(3.0301e-09) == "3.030e-09" and fid_text(0.0) == "0.0000" and fid_text(12.34567) == "12.3457"
    assert fid_text(0.05) == "0.0500" and fid_text(float("inf")) == "n/a"
    # The metrics table prints a FID (and sFID, and their intervals) the same way.
    from fidkit.metrics._table_results import _number

    assert _number("fid", 3.0301e-09) == "3.030e-09" and _number("sfid", 2.5) == "2.5000"
    assert _number("kid", 1e-7) == "0.000000"  # KID keeps its 6 decimals


def test_logged_warnings_say_warning_and_are_in_the_json(tmp_path, capsys, monkeypatch):
    # "50 decoding workers asked for ... using 2" printed as a plain "fidkit: ..." line, and --json's warnings was
    # [] (usage.md: warnings start with "fidkit: warning:", and --json lists every warning printed on stderr).
    from PIL import Image

    monkeypatch.setenv("FIDKIT_HOME", str(tmp_path / "home"))
    folder = tmp_path / "imgs"
    folder.mkdir()
    for index in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * index, np.uint8)).save(folder / f"{index}.png")
    import fidkit.cache as cache

    # A warning fidkit logs: the corrupt cache entry the command's look-up meets (removed and recomputed).
    (tmp_path / "home" / "stats").mkdir(parents=True)
    import fidkit.pipeline  # noqa: F401 - the look-up names its entries through pipeline.cache_key

    monkeypatch.setattr("fidkit.pipeline.cache_key", lambda *args, **kwargs: "cd" * 32)
    cache._entry_path("cd" * 32, None).write_bytes(b"not an npz either")
    from stand_ins import MeanColour
    from fidkit.testing import replaced_extractor

    with replaced_extractor(lambda options: MeanColour(), identity=lambda options: MeanColour().metadata()):
        status = main(["stats", str(folder), "--json", "--workers", "0"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    warned = [line for line in captured.err.splitlines() if "corrupt" in line]
    assert warned and all(line.startswith("fidkit: warning: ") for line in warned), captured.err
    listed = json.loads(captured.out)["warnings"]
    assert any("corrupt" in message for message in listed), listed
    # The statistics kept were made by other weights than the released file's (the stand-in's "ccc..."): said, as
    # `fidkit compute` says it of a side (it was an info line, or nothing with --quiet).
    assert any(message.startswith(f"the statistics of {folder} were computed with Inception weights of sha256 "
                                  "cccccccccccccccc...") for message in listed), listed


def test_json_warnings_are_the_same_for_a_fresh_and_a_cached_run(tmp_path, capsys, monkeypatch):
    # A bad file skipped and a hidden folder ignored were listed twice (the reading's log line and the report's
    # warning), and the cached run, which reads nothing, listed fewer.
    from PIL import Image

    from fidkit.testing import replaced_extractor
    from stand_ins import MeanColour

    monkeypatch.setenv("FIDKIT_HOME", str(tmp_path / "home"))
    sides = []
    for name in ("a", "b"):
        folder = tmp_path / name
        (folder / ".ipynb_checkpoints").mkdir(parents=True)
        for index in range(4):
            Image.fromarray(np.full((8, 8, 3), 30 * index + (name == "b"), np.uint8)).save(folder / f"{index}.png")
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / ".ipynb_checkpoints" / "old.png")
        (folder / "broken.png").write_bytes(b"not a png")
        sides.append(str(folder))
    runs = []
    with replaced_extractor(lambda options: MeanColour(), identity=lambda options: MeanColour().metadata()):
        for _ in range(2):
            assert main(["compute", *sides, "--skip-bad", "--workers", "0", "--json"]) == 0
            runs.append(json.loads(capsys.readouterr().out))
    assert not runs[0]["a"]["cached"] and runs[1]["a"]["cached"]
    assert runs[0]["warnings"] == runs[1]["warnings"]
    for fact in ("skipped", "not read"):
        assert len([message for message in runs[0]["warnings"] if "side a" in message and fact in message]) == 1
