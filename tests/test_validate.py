"""The FID paper's disturbances and the validation experiment.

Pixel-space properties are checked on smooth synthetic images (no network). The experiment itself
runs on random Inception weights with a handful of images: it checks the report, not FID.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from fidkit.errors import InputError, OverwriteError
from fidkit.ttur.disturbances import DISTURBANCES, get_disturbance, swirl_coordinates
from fidkit.ttur.validate import ValidateConfig, run_validation

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def smooth_images(n_images: int = 6, size: int = 32, seed: int = 0) -> np.ndarray:
    """Gradients plus a bright disc: smooth like photographs, so blur and swirl change them."""
    rng = np.random.default_rng(seed)
    grid_y, grid_x = np.mgrid[0:size, 0:size] / (size - 1)
    images = np.empty((n_images, size, size, 3), dtype=np.uint8)
    for index in range(n_images):
        centre = rng.uniform(0.3, 0.7, size=2)
        disc = np.hypot(grid_y - centre[0], grid_x - centre[1]) < rng.uniform(0.15, 0.3)
        for channel in range(3):
            slope = rng.uniform(-1, 1, size=2)
            base = 40 + 150 * (0.5 + 0.5 * (slope[0] * grid_y + slope[1] * grid_x) / 2)
            images[index, ..., channel] = np.clip(base + 60 * disc, 0, 255).astype(np.uint8)
    return images


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    return smooth_images()


@pytest.fixture(scope="module")
def foreign() -> np.ndarray:
    return np.random.default_rng(9).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)


def _apply(name, images, strength, other, seed=5):
    return get_disturbance(name).apply(images, strength, seed=seed, other=other)


@pytest.mark.parametrize("name", [d.name for d in DISTURBANCES])
def test_strength_zero_leaves_images_unchanged(name, clean, foreign):
    disturbed = _apply(name, clean, 0.0, foreign)
    assert disturbed.dtype == np.uint8 and disturbed.shape == clean.shape
    assert np.array_equal(disturbed, clean)
    assert disturbed is not clean  # a copy: disturbing never aliases the clean set


@pytest.mark.parametrize("name", [d.name for d in DISTURBANCES])
def test_each_disturbance_grows_with_its_strength_in_pixel_space(name, clean, foreign):
    distances = [
        float(np.abs(_apply(name, clean, s, foreign).astype(np.int16) - clean).mean())
        for s in STRENGTHS
    ]
    assert distances[0] == 0.0
    assert all(later > earlier for earlier, later in zip(distances, distances[1:])), distances


@pytest.mark.parametrize("name", [d.name for d in DISTURBANCES])
def test_disturbances_are_seeded(name, clean, foreign):
    first = _apply(name, clean, 0.6, foreign, seed=1)
    assert np.array_equal(first, _apply(name, clean, 0.6, foreign, seed=1))
    if name not in ("gaussian_blur", "swirl"):  # the deterministic ones ignore the seed
        assert not np.array_equal(first, _apply(name, clean, 0.6, foreign, seed=2))


@pytest.mark.parametrize("name", ["black_rectangles", "salt_and_pepper", "contamination"])
def test_disturbed_pixels_are_nested_across_strengths(name, clean, foreign):
    weaker = np.any(_apply(name, clean, 0.5, foreign) != clean, axis=-1)
    stronger = np.any(_apply(name, clean, 1.0, foreign) != clean, axis=-1)
    assert weaker.any()
    assert not np.any(weaker & ~stronger)


@pytest.mark.parametrize("name", ["gaussian_blur", "salt_and_pepper", "gaussian_noise"])
def test_results_do_not_depend_on_internal_chunking(name, clean):
    # 300 images span more than one internal chunk (256); image i is disturbed from (seed, i)
    # alone, so the first six come out as when the six are disturbed on their own.
    big = np.concatenate([clean] * 50)
    assert np.array_equal(_apply(name, big, 0.5, None)[:6], _apply(name, clean, 0.5, None))


def test_disturbance_parameters_are_the_papers_largest_levels():
    maxima = {d.name: d.max_value for d in DISTURBANCES}
    assert maxima == {
        "gaussian_noise": 0.75, "gaussian_blur": 4.0, "black_rectangles": 0.75,
        "swirl": 4.0, "salt_and_pepper": 0.3, "contamination": 0.75,
    }
    assert get_disturbance("gaussian_blur").value(0.5) == 2.0


def test_swirl_at_zero_is_the_identity_map():
    coordinates = swirl_coordinates(9, 7, 0.0)
    grid = np.mgrid[0:9, 0:7].astype(np.float64)
    np.testing.assert_allclose(coordinates, grid, atol=1e-12)


def test_bad_arguments_are_refused(clean, foreign):
    with pytest.raises(InputError):
        get_disturbance("gaussian_noise").apply(clean, 1.5)
    with pytest.raises(InputError):
        get_disturbance("contamination").apply(clean, 0.5)  # needs other images
    with pytest.raises(InputError):
        get_disturbance("contamination").apply(clean, 0.5, other=foreign[:, :16])
    with pytest.raises(InputError, match="choose from"):
        get_disturbance("fog")
    with pytest.raises(InputError):
        get_disturbance("swirl").apply(clean.astype(np.float32), 0.5)


def test_contamination_uses_the_other_images(clean, foreign):
    disturbed = _apply("contamination", clean, 1.0, foreign)
    replaced = [i for i in range(len(clean)) if not np.array_equal(disturbed[i], clean[i])]
    assert len(replaced) == round(0.75 * len(clean))
    for index in replaced:
        assert any(np.array_equal(disturbed[index], other) for other in foreign)


# -- the experiment --------------------------------------------------------------------------


def test_validation_writes_csv_figure_and_report(extractor, tmp_path, clean, foreign):
    np.save(tmp_path / "clean.npy", clean[:4])
    np.save(tmp_path / "other.npy", foreign)
    config = ValidateConfig(
        source=str(tmp_path / "clean.npy"), out=tmp_path / "out", samples=4,
        strengths=(1.0,), contaminate=str(tmp_path / "other.npy"), device="cpu",
    )
    assert config.strengths == (0.0, 1.0)  # the clean point is always included
    seen = []
    report = run_validation(config, extractor=extractor, on_result=lambda *a: seen.append(a))

    assert [c.disturbance for c in report.curves] == [d.name for d in DISTURBANCES]
    assert len(seen) == 2 * len(DISTURBANCES)
    for curve in report.curves:
        assert curve.fids[0] == 0.0 and curve.fids[1] > 0.0
        assert curve.monotonic
    assert report.all_monotonic and report.n_images == 4 and report.image_size == (32, 32)

    with open(report.csv_path, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 2 * len(DISTURBANCES)
    assert {row["disturbance"] for row in rows} == {d.name for d in DISTURBANCES}
    assert float(rows[1]["fid"]) == report.curves[0].fids[1]
    assert report.plot_path.read_bytes().startswith(PNG_SIGNATURE)
    saved = json.loads(report.json_path.read_text())
    assert saved["all_monotonic"] is True and len(saved["curves"]) == len(DISTURBANCES)
    assert "monotonic" in report.format_table()

    with pytest.raises(OverwriteError, match="--force"):
        run_validation(config, extractor=extractor)


def test_cli_validate_skips_contamination_without_other(random_weights_path, tmp_path, capsys,
                                                         clean):
    from fidkit.cli import main

    np.save(tmp_path / "clean.npy", clean[:4])
    argv = [
        "validate", str(tmp_path / "clean.npy"), "--out", str(tmp_path / "v"),
        "--weights", str(random_weights_path), "--device", "cpu", "--samples", "4",
        "--strengths", "0,1", "--disturbances", "swirl,contamination", "--json",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert [c["disturbance"] for c in report["curves"]] == ["swirl"]
    assert report["skipped"][0]["disturbance"] == "contamination"
    assert report["curves"][0]["strengths"] == [0.0, 1.0]
    assert Path(report["csv"]).exists()

    assert main(argv[:-1] + ["--force"]) == 0
    out = capsys.readouterr().out
    assert "swirl" in out and "skipped" in out and "monotonic" in out


def test_validate_config_rejects_bad_values(tmp_path):
    with pytest.raises(InputError):
        ValidateConfig(source="x", out=tmp_path, strengths=(0.5, 2.0))
    with pytest.raises(InputError):
        ValidateConfig(source="x", out=tmp_path, disturbances=("fog",))
    with pytest.raises(InputError):
        ValidateConfig(source="x", out=tmp_path, samples=1)


@pytest.mark.slow
def test_a_disturbance_alone_draws_as_in_the_full_run(extractor, tmp_path, clean, foreign):
    # Seeding from the position in the selection made `--disturbances black_rectangles` alone
    # draw other rectangles (so another FID) than the same disturbance within a full run.
    np.save(tmp_path / "clean.npy", clean[:4])
    np.save(tmp_path / "other.npy", foreign)
    common = dict(source=str(tmp_path / "clean.npy"), samples=4, strengths=(1.0,),
                  contaminate=str(tmp_path / "other.npy"), device="cpu")
    full = run_validation(ValidateConfig(out=tmp_path / "full", **common), extractor=extractor)
    full_fids = {curve.disturbance: curve.fids for curve in full.curves}
    for name in ("black_rectangles", "salt_and_pepper"):
        alone = run_validation(
            ValidateConfig(out=tmp_path / name, disturbances=(name,), **common),
            extractor=extractor,
        )
        assert [c.disturbance for c in alone.curves] == [name]
        assert alone.curves[0].fids == full_fids[name], name


@pytest.mark.parametrize("name", ["validate.csv", "validate.png", "validate.json"])
def test_validation_refuses_any_existing_output(tmp_path, name):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text("mine\n")
    config = ValidateConfig(source=str(tmp_path / "missing.npy"), out=out, samples=4)
    # Refused before any work (the source does not even exist), naming the file.
    with pytest.raises(OverwriteError, match=name):
        run_validation(config)
    assert (out / name).read_text() == "mine\n"


def test_cli_validate_refuses_existing_figure_without_force(tmp_path, capsys):
    from fidkit.cli import main

    (tmp_path / "validate.png").write_text("mine\n")
    argv = ["validate", str(tmp_path / "missing.npy"), "--out", str(tmp_path), "--samples", "4"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "validate.png" in err and "--force" in err
    assert (tmp_path / "validate.png").read_text() == "mine\n"


def test_out_on_a_file_is_refused_at_once(tmp_path):
    from fidkit.errors import InputError
    from fidkit.ttur.validate import ValidateConfig

    a_file = tmp_path / "report"
    a_file.write_text("")
    with pytest.raises(InputError, match="is a file, not a folder"):
        ValidateConfig(source=str(tmp_path), out=a_file)
