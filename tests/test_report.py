"""fidkit.report: the consistency checks between two sides, the assembled FidReport, and its JSON form.

No network: the sides are SideReport values written here, the distances come from small feature arrays.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from fidkit import __version__
from fidkit.errors import InputError, SmallSampleWarning
from fidkit.frechet import FrechetResult, fid_from_stats
from fidkit.report import SideReport, Timings, assemble_fid_report, check_comparable
from fidkit.stats import Stats

SHA_A = "a" * 64
SHA_B = "b" * 64


def checks(side_a: SideReport, side_b: SideReport, **options) -> list[str]:
    """check_comparable without the note on weights other than the released file (every side here uses such
    made-up weights; that note has its own tests in test_streams.py)."""
    return [m for m in check_comparable(side_a, side_b, **options) if "not the released" not in m]


def side(**changes) -> SideReport:
    """A complete, clean side (fidkit statistics of 100 PNGs on onnxruntime), with `changes`."""
    values = dict(
        name="real/", kind="folder", n=100, cached=False, lossy=False, skipped=(), n_skipped=0, ignored=(),
        foreign=False, weights_sha256=SHA_A, resize_mode="tf1-bilinear-asymmetric",
        provider="CPUExecutionProvider", engine="onnxruntime", precision="exact", decode_seconds=0.5,
        network_seconds=2.0, total_seconds=3.0, batch_size=50, setup_seconds=0.25,
    )
    values.update(changes)
    return SideReport(**values)


def small_result(seed: int = 0, *, n: int = 40, dim: int = 6) -> FrechetResult:
    rng = np.random.default_rng(seed)
    stats_a = Stats.from_features(rng.normal(size=(n, dim)))
    stats_b = Stats.from_features(rng.normal(loc=0.5, size=(n, dim)))
    return fid_from_stats(stats_a, stats_b)


TIMINGS = Timings(decode_seconds=1.0, network_seconds=4.0, distance_seconds=0.01, total_seconds=6.0)


# --- check_comparable --------------------------------------------------------------------------------


def test_two_clean_sides_made_the_same_way_give_no_warning():
    assert checks(side(), side(name="fake/"), allow_weights_mismatch=False) == []


def test_different_weights_are_an_error_unless_allowed_then_a_warning_naming_both():
    a, b = side(weights_sha256="0123456789abcdef" + "1" * 48), side(weights_sha256="fedcba9876543210" + "2" * 48)
    with pytest.raises(InputError) as raised:
        checks(a, b, allow_weights_mismatch=False)
    message = str(raised.value)
    assert "different Inception weights (a: 0123456789abcdef..., b: fedcba9876543210...)" in message
    assert "allow_weights_mismatch=True / --allow-weights-mismatch" in message

    messages = checks(a, b, allow_weights_mismatch=True)
    assert len(messages) == 1
    assert messages[0].startswith("the two sides were computed with different Inception weights (a: 0123456789abcdef")
    assert "--allow-weights-mismatch" not in messages[0]  # the hint is for the error only


def test_a_side_without_a_recorded_sha_warns_and_cannot_raise_a_mismatch():
    # Only one sha is known: nothing to compare, so no error, but the user is told it could not be checked.
    messages = checks(side(), side(name="old.npz", weights_sha256=None), allow_weights_mismatch=False)
    assert messages == [
        "side b (old.npz) records no weights sha256: cannot check that both sides used the same Inception network"
    ]


def test_a_foreign_statistics_file_is_named_once_as_such():
    ttur = side(name="fid_stats_cifar10.npz", kind="stats", n=None, foreign=True, weights_sha256=None,
                resize_mode=None, provider=None, engine=None, precision=None)
    messages = checks(ttur, side(), allow_weights_mismatch=False)
    assert len(messages) == 1
    assert messages[0].startswith("side a (fid_stats_cifar10.npz) is a statistics file with only mu and sigma")
    assert "its N is unknown" in messages[0]


@pytest.mark.parametrize(("field", "value_a", "value_b", "expected"), [
    ("precision", "exact", "tensorrt-fast", "different precisions (a: exact, b: tensorrt-fast)"),
    ("precision", "exact", "bf16", "different precisions (a: exact, b: bf16)"),
    ("resize_mode", "tf1-bilinear-asymmetric", "pil-bicubic", "resized differently (a: tf1-bilinear-asymmetric, "
                                                              "b: pil-bicubic)"),
])
def test_a_different_precision_or_resize_is_a_warning_and_an_unknown_one_is_not(field, value_a, value_b, expected):
    messages = checks(side(**{field: value_a}), side(**{field: value_b}), allow_weights_mismatch=False)
    assert len(messages) == 1 and expected in messages[0] and "FP16" not in messages[0]  # bf16 and TF32 are fast too
    # Unknown on one side (an older file): nothing to compare, no warning.
    assert checks(side(**{field: value_a}), side(**{field: None}), allow_weights_mismatch=False) == []


def test_sides_computed_by_different_engines_are_comparable_and_the_report_names_both():
    # onnxruntime and the torch engine agree to float32 round-off (docs/compatibility.md): no warning, but the
    # report says which engines and providers ran.
    a = side()
    b = side(engine="torch", provider="torch-cuda:0")
    assert checks(a, b, allow_weights_mismatch=False) == []
    report = assemble_fid_report(small_result(), a, b, [], TIMINGS)
    assert report.engine == "onnxruntime, torch"
    assert report.provider == "CPUExecutionProvider, torch-cuda:0"


def test_lossy_ignored_and_skipped_files_are_reported_per_side():
    skipped = tuple((f"bad{index}.png", "cannot identify image file") for index in range(5))
    a = side(name="jpegs/", lossy=True)
    b = side(name="scraped/", ignored=(("hidden folders", 3), ("formats fidkit does not read", 2)),
             skipped=skipped, n_skipped=5)
    messages = checks(a, b, allow_weights_mismatch=False)
    assert len(messages) == 3
    assert messages[0].startswith("side a (jpegs/) holds lossy (JPEG) images")
    assert messages[1] == (
        "side b (scraped/): 5 file(s) or folder(s) not read: 3 hidden folders; 2 formats fidkit does not read"
    )
    assert messages[2].startswith("side b (scraped/): 5 unreadable file(s) skipped (--skip-bad), e.g. ")
    # Three examples, not all five.
    assert "bad2.png: cannot identify image file" in messages[2] and "bad3.png" not in messages[2]


def test_skipped_files_known_only_by_count_give_no_empty_example_list():
    # A cached or loaded side may record how many were skipped but not which.
    messages = checks(side(n_skipped=4), side(), allow_weights_mismatch=False)
    assert messages == ["side a (real/): 4 unreadable file(s) skipped (--skip-bad)"]


# --- assemble_fid_report -----------------------------------------------------------------------------------


def test_the_report_carries_the_distance_both_sides_and_the_warnings_in_order():
    with pytest.warns(SmallSampleWarning):
        result = small_result(n=5, dim=6)  # N below dim: the distance adds its own small-sample warnings
    assert len(result.warnings) == 2  # one per side
    a, b = side(n=5), side(name="fake/", n=5, lossy=True)
    messages = checks(a, b, allow_weights_mismatch=False)
    report = assemble_fid_report(result, a, b, messages, TIMINGS)
    assert report.value == float(result.value) and float(report) == report.value
    assert report.frechet is result and report.a is a and report.b is b
    # The consistency messages first, then the distance's own.
    assert report.warnings == tuple(messages) + tuple(result.warnings)
    assert report.weights_sha256 == SHA_A  # the same on both sides: named once
    assert report.resize_mode == "tf1-bilinear-asymmetric" and report.precision == "exact"
    assert report.timings is TIMINGS and report.fidkit_version == __version__
    assert str(report) == f"FID {result.value:.4f}: a = {a}, b = {b}"


def test_fields_known_on_one_side_only_come_from_that_side():
    report = assemble_fid_report(
        small_result(), side(weights_sha256=None, provider=None), side(name="b/", weights_sha256=SHA_B),
        [], TIMINGS,
    )
    assert report.weights_sha256 == SHA_B and report.provider == "CPUExecutionProvider"
    none_known = assemble_fid_report(
        small_result(), side(engine=None), side(engine=None), [], TIMINGS
    )
    assert none_known.engine is None


def test_to_dict_is_strict_json_for_nan_diagnostics_and_a_non_finite_fid_is_an_error():
    finite = small_result()
    with pytest.raises(InputError, match="not a finite number"):
        assemble_fid_report(dataclasses.replace(finite, value=math.inf), side(), side(name="b/"), [], TIMINGS)
    result = dataclasses.replace(finite, min_eigenvalue=math.nan)  # e.g. the TTUR sqrtm route
    skipped = (("x/bad.png", "truncated"),)
    a = side(skipped=skipped, n_skipped=1, ignored=(("hidden folders", 2),))
    report = assemble_fid_report(result, a, side(name="b/"), ["a message"], TIMINGS)
    text = json.dumps(report.to_dict(), allow_nan=False)  # raises on NaN or inf
    data = json.loads(text)
    assert data["fid"] == float(finite.value)
    assert data["frechet"]["min_eigenvalue"] is None
    assert data["a"]["skipped"] == [{"file": "x/bad.png", "reason": "truncated"}]
    assert data["a"]["ignored"] == {"hidden folders": 2}
    assert data["a"]["n"] == 100 and data["a"]["batch_size"] == 50 and data["a"]["setup_seconds"] == 0.25
    assert data["warnings"] == ["a message"]
    assert data["timings"] == {"decode_seconds": 1.0, "network_seconds": 4.0, "distance_seconds": 0.01,
                               "total_seconds": 6.0}
    assert data["fidkit_version"] == __version__ and data["engine"] == "onnxruntime"

    finite_report = assemble_fid_report(finite, side(), side(name="b/"), [], TIMINGS)
    assert json.loads(json.dumps(finite_report.to_dict(), allow_nan=False))["fid"] == float(finite.value)


def test_a_side_reads_as_one_line():
    assert str(side()) == "real/ (N=100, folder)"
    busy = side(name="mixed.zip", kind="archive", cached=True, lossy=True, n_skipped=2,
                ignored=(("hidden folders", 3), ("special files", 1)))
    assert str(busy) == "mixed.zip (N=100, archive, cached, lossy, 2 skipped, 4 ignored)"
    assert str(side(name="fid_stats.npz", kind="stats", n=None)) == "fid_stats.npz (N unknown, stats)"


def test_a_number_that_is_not_finite_is_null_in_json_and_n_a_in_text():
    # One spelling for the whole package (fidkit._plain): metadata tables, the metrics table and every JSON.
    from fidkit._plain import finite_or_none, shown

    for value in (math.inf, -math.inf, math.nan, np.float32("inf"), np.float64("nan")):
        assert shown(value) == "n/a" and shown(value, ".3f") == "n/a"
    assert shown(1.25, ".1f") == "1.2" and shown(np.float32(2.5)) == "2.5" and shown(7) == "7" and shown("abc") == "abc"
    assert finite_or_none({"a": (1.0, math.inf), "b": [math.nan, {"c": -math.inf}], "d": "x"}) == {
        "a": [1.0, None], "b": [None, {"c": None}], "d": "x"
    }


# --- hostile round 3, 20: non-finite results are never printed; the JSON stays valid --------------------------------


def _strict_json(text: str):
    import json

    def refuse(constant: str):
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_fidkit_compute_and_info_never_print_a_non_finite_number(tmp_path, capsys) -> None:
    from fidkit.cli import main

    dim = 5
    good, far, wide = tmp_path / "good.npz", tmp_path / "far.npz", tmp_path / "wide.npz"
    Stats(mu=np.zeros(dim), sigma=np.eye(dim), n=100).save(good)
    Stats(mu=np.full(dim, 3e155), sigma=np.eye(dim), n=100).save(far)
    Stats(mu=np.full(dim, 1e150), sigma=np.eye(dim) * 1e308, n=100, metadata={"note": float("nan")}).save(wide)
    for other, term in ((far, "mean term"), (wide, f"trace of the covariance of statistics {wide}")):
        for json_flag in ([], ["--json"]):
            code = main(["compute", str(good), str(other), "--quiet", *json_flag])
            captured = capsys.readouterr()
            assert code == 1 and captured.out == "", captured.out
            assert "overflows float64" in captured.err and term in captured.err
    assert main(["info", str(wide), "--json"]) == 0
    info = _strict_json(capsys.readouterr().out)
    assert info["trace_sigma"] is None and info["mu_norm"] == pytest.approx(1e150 * np.sqrt(dim))
    assert info["metadata"]["note"] is None and info["overflows"] == ["trace_sigma is beyond 1.8e+308 (float64's largest number)"]
    assert main(["info", str(far), "--json"]) == 0  # |mu| whose square overflows: scaled, so still a number
    info = _strict_json(capsys.readouterr().out)
    assert info["mu_norm"] == pytest.approx(3e155 * np.sqrt(dim)) and info["overflows"] == []
    assert main(["info", str(wide)]) == 0
    text = capsys.readouterr().out
    assert "trace(sigma):  beyond 1.8e+308 (overflows float64)" in text and "inf" not in text.lower().replace("info", "")
    assert main(["compute", str(good), str(good), "--json", "--quiet"]) == 0
    assert _strict_json(capsys.readouterr().out)["fid"] == 0.0


def test_json_text_writes_null_for_values_that_are_not_numbers() -> None:
    from fidkit.report import json_text

    value = {"a": float("inf"), "b": [float("nan"), 1.5, (float("-inf"), "x")], "c": {"d": 2}}
    assert _strict_json(json_text(value)) == {"a": None, "b": [None, 1.5, [None, "x"]], "c": {"d": 2}}


# --- hostile round 5 (what the docs promise), 3: a FID below 0.0001 is not printed as 0.0000 ------------------------


def test_a_tiny_fid_is_not_printed_as_zero():
    from fidkit._plain import fid_text

    assert fid_text(3.0301e-09) == "3.030e-09" and fid_text(0.0) == "0.0000" and fid_text(12.34567) == "12.3457"
    assert fid_text(0.05) == "0.0500" and fid_text(float("inf")) == "n/a"
    # The metrics table prints a FID (and sFID, and their intervals) the same way.
    from fidkit.metrics._table_results import _number

    assert _number("fid", 3.0301e-09) == "3.030e-09" and _number("sfid", 2.5) == "2.5000"
    # KID keeps its 6 decimals, and one near zero its 4 significant digits as a FID does (hostile round 7).
    assert _number("kid", 0.0123) == "0.012300" and _number("kid", 1e-7) == "1.000e-07"


# --- hostile round 7: the log's "setup" is the report's setup_seconds; the rest of the side's time is named apart ---


def test_the_logged_setup_is_the_reports_setup_seconds(fidkit_home, monkeypatch, caplog) -> None:
    import re
    import time

    from fidkit import pipeline
    from fidkit.api import compute_stats_with_report

    from stand_ins import FullIdentityMeanColour, noise_images

    stored = pipeline.store

    def slow_store(*args, **kwargs):
        time.sleep(0.05)  # the cache's store: part of the side's time, not of building the extractor
        return stored(*args, **kwargs)

    monkeypatch.setattr(pipeline, "store", slow_store)
    with caplog.at_level("INFO", logger="fidkit.pipeline"):
        _, report = compute_stats_with_report(noise_images(12, seed=3), extractor=FullIdentityMeanColour(), workers=0)
    assert report.setup_seconds == 0.0  # the extractor was given, built: nothing was set up for this side
    (line,) = [record.getMessage() for record in caplog.records if "images/s" in record.getMessage()]
    logged = re.search(r"setup (\d+\.\d+) s, cache look-up and store (\d+\.\d+) s\)", line)
    assert logged is not None, line
    assert float(logged.group(1)) == round(report.setup_seconds, 2)
    assert float(logged.group(2)) >= 0.05


# --- review 9: two sides made by different extractors of one width are refused ----------------------------------------


def test_sides_made_by_different_extractors_are_refused_naming_both() -> None:
    with pytest.raises(InputError, match=r"different feature extractors \(a, real/: 'mean-colour'; b, fake/: "
                                         r"'std-colour'\).*recompute one side with the other's extractor"):
        checks(side(extractor="mean-colour"), side(name="fake/", extractor="std-colour"), allow_weights_mismatch=True)


def test_sides_of_one_extractor_configured_differently_are_refused() -> None:
    with pytest.raises(InputError, match=r"'probe' configured differently .*\{\"mode\": \"a\"\}.*\{\"mode\": \"b\"\}"):
        checks(side(extractor="probe", extractor_identity='{"mode": "a"}'),
               side(extractor="probe", extractor_identity='{"mode": "b"}'), allow_weights_mismatch=False)


def test_a_side_whose_extractor_is_unknown_is_compared_as_before() -> None:
    # An older fidkit's file of another extractor records no name: not refused (its width is still checked).
    assert checks(side(extractor=None), side(extractor="mean-colour"), allow_weights_mismatch=False) == []
    assert checks(side(extractor="probe", extractor_identity=None),
                  side(extractor="probe", extractor_identity='{"mode": "b"}'), allow_weights_mismatch=False) == []
