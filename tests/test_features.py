"""fidkit.features: feature rows as a product (kept, saved, loaded, cached) and statistics as their reduction;
the recipe "a new metric from kept features" followed once."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import fidkit
from fidkit.errors import InputError, OverwriteError, StatsFileError
from fidkit.features import FeatureRows, Features, is_features_file
from fidkit.testing import replaced_extractor


def rows(n, dim=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def images(n, seed, size=16):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_save_load_round_trip_keeps_the_bits_and_the_metadata(tmp_path):
    features = Features(rows(20), {"extractor": "x", "n_skipped": 0})
    path = tmp_path / "f.npz"
    features.save(path)
    assert is_features_file(path)
    loaded = Features.load(path)
    assert loaded.rows.tobytes() == features.rows.tobytes() and loaded.metadata == features.metadata
    assert loaded.path == path and not loaded.rows.flags.writeable
    with pytest.raises(OverwriteError):
        features.save(path)
    features.save(path, overwrite=True)


def test_statistics_are_the_reduction_of_the_rows():
    data = rows(300, dim=5, seed=1)
    stats = Features(data).stats()
    np.testing.assert_allclose(stats.mu, data.astype(np.float64).mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(stats.sigma, np.cov(data.astype(np.float64), rowvar=False), rtol=1e-12, atol=1e-14)
    assert stats.n == 300


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"mu": np.zeros(2)}, "no 'features' member"),
        ({"features": np.zeros(3, np.float32)}, "must be 2-D"),
        ({"features": np.zeros((3, 2), np.int64)}, "must be float32"),
        ({"features": np.array([[1.0, np.nan], [0.0, 1.0]], np.float32)}, "NaN|finite"),
    ],
)
def test_damaged_or_foreign_files_are_refused_by_name(tmp_path, members, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **members)
    with pytest.raises(StatsFileError, match=message):
        Features.load(path)


def test_a_member_whose_header_claims_more_than_it_holds_is_refused_before_reading(tmp_path):
    # A header declaring 10^6 x 10^4 float32 rows (40 GB) over a few bytes of data: refused from the header.
    header = {"descr": "<f4", "fortran_order": False, "shape": (1_000_000, 10_000)}
    buffer = bytearray()
    import io

    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, header)
    buffer = stream.getvalue() + b"\0" * 64
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("features.npy", bytes(buffer))
    with pytest.raises(StatsFileError, match="damaged"):
        Features.load(path)


def test_feature_rows_sink_keeps_every_batch_in_order():
    sink = FeatureRows()
    sink.update(rows(3, seed=0))
    sink.update(rows(2, seed=1))
    result = sink.result({"a": 1})
    np.testing.assert_array_equal(result.rows, np.concatenate([rows(3, seed=0), rows(2, seed=1)]))
    with pytest.raises(InputError):
        FeatureRows().result()


def test_compute_features_are_the_extractors_rows_and_their_stats_are_compute_stats(fidkit_home, extractor):
    data = images(6, seed=3)
    features = fidkit.compute_features(data, extractor=extractor, workers=0)
    np.testing.assert_array_equal(features.rows, extractor(data))
    assert features.metadata["weights_sha256"] == extractor.weights_sha256
    stats = fidkit.compute_stats(data, extractor=extractor, workers=0, use_cache=False)
    np.testing.assert_allclose(features.stats().mu, stats.mu, rtol=1e-12)
    np.testing.assert_allclose(features.stats().sigma, stats.sigma, rtol=1e-9, atol=1e-12)


def test_features_are_cached_and_serve_statistics_without_the_network(fidkit_home, extractor):
    data = images(6, seed=4)
    with replaced_extractor(lambda options: extractor) as built:
        first = fidkit.compute_features(data, weights=extractor.weights_path, device="cpu", workers=0)
        again = fidkit.compute_features(data, weights=extractor.weights_path, device="cpu", workers=0)
        stats = fidkit.compute_stats(data, weights=extractor.weights_path, device="cpu", workers=0)
    assert len(built) == 1  # the second call and the statistics came from the cache
    np.testing.assert_array_equal(again.rows, first.rows)
    np.testing.assert_allclose(stats.mu, first.stats().mu, rtol=1e-12)


def test_a_features_file_is_a_source_and_statistics_cannot_give_features(tmp_path, fidkit_home, extractor):
    data_a, data_b = images(6, seed=5), images(7, seed=6)
    path = tmp_path / "a-features.npz"
    fidkit.compute_features(data_a, extractor=extractor, workers=0).save(path)
    direct = fidkit.compute_fid(data_a, data_b, extractor=extractor, workers=0, use_cache=False)
    with replaced_extractor(lambda options: extractor) as built:
        from_file = fidkit.compute_fid(
            path, data_b, weights=extractor.weights_path, device="cpu", workers=0, use_cache=False
        )
    assert from_file.a.kind == "features" and from_file.a.n == 6 and len(built) == 1  # only side b ran
    assert from_file.value == pytest.approx(direct.value, rel=1e-9)
    with pytest.raises(InputError, match="statistics only; this needs the feature rows"):
        fidkit.compute_features(fidkit.Stats.from_features(rows(4)))


def test_the_features_command_saves_a_file_the_other_commands_read(tmp_path, fidkit_home, extractor, capsys):
    from fidkit.cli import main

    data = tmp_path / "a.npy"
    np.save(data, images(5, seed=7))
    out = tmp_path / "a-features.npz"
    with replaced_extractor(lambda options: extractor):
        code = main(["features", str(data), "--weights", str(extractor.weights_path), "--save", str(out),
                     "--workers", "0", "--json", "-q"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 5 and summary["dim"] == 2048 and summary["saved"] == str(out)
    assert Features.load(out).n == 5 and "cache_key" not in Features.load(out).metadata
    assert main(["stats", str(out), "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "features"
    assert main(["features", str(data), "--save", str(out), "-q"]) == 1  # exists, no --force
    assert "already exists" in capsys.readouterr().err


def mean_norm(features: Features) -> float:
    """A metric from kept features (the recipe in docs/architecture.md): the mean feature norm."""
    return float(np.linalg.norm(features.rows.astype(np.float64), axis=1).mean())


def test_a_new_metric_runs_on_kept_features_from_any_source(tmp_path, fidkit_home, extractor):
    data = images(4, seed=8)
    computed = fidkit.compute_features(data, extractor=extractor, workers=0)
    computed.save(tmp_path / "f.npz")
    loaded = fidkit.compute_features(tmp_path / "f.npz")
    assert mean_norm(loaded) == mean_norm(computed) == pytest.approx(
        float(np.linalg.norm(extractor(data).astype(np.float64), axis=1).mean()), rel=1e-12
    )


def test_an_image_array_named_features_is_still_read_as_images(tmp_path, fidkit_home, extractor):
    path = tmp_path / "images.npz"
    np.savez(path, features=images(3, seed=13))
    assert not is_features_file(path)
    assert fidkit.compute_stats(path, extractor=extractor, workers=0, use_cache=False).n == 3


def test_features_carry_logits_and_spatial_through_a_file(tmp_path):
    rng = np.random.default_rng(3)
    rows, logits, spatial = (rng.normal(size=(5, k)).astype(np.float32) for k in (8, 11, 7))
    features = Features(rows, {"source": "x"}, logits=logits, spatial=spatial)
    assert features.outputs == ("features", "logits", "spatial")
    features.save(tmp_path / "f.npz")
    loaded = Features.load(tmp_path / "f.npz")
    np.testing.assert_array_equal(loaded.output("logits"), logits)
    np.testing.assert_array_equal(loaded.output("spatial"), spatial)
    bare = Features(rows)
    with pytest.raises(InputError, match="hold no 'logits'"):
        bare.output("logits")
    with pytest.raises(InputError, match="3 rows but the features have 5"):
        Features(rows, logits=logits[:3])


def test_feature_rows_keep_every_asked_output():
    sink = FeatureRows(outputs=("features", "logits"))
    for start in (0, 2):
        sink.update_outputs({"features": np.full((2, 3), start, np.float32), "logits": np.ones((2, 4)),
                             "spatial": np.zeros((2, 1))})
    kept = sink.result({"a": 1})
    assert kept.n == 4 and kept.logits.shape == (4, 4) and kept.spatial is None
    with pytest.raises(InputError):
        FeatureRows(outputs=("logits",))


# --- hostile round 4: features beyond float32 -----------------------------------------------------------------------


def test_features_beyond_float32_are_refused_when_kept_not_stored_as_inf() -> None:
    from fidkit.features import Features

    with pytest.raises(InputError, match="beyond float32's range"):
        Features(np.full((10, 4), 1e39))
    with pytest.raises(InputError, match="logits holds values beyond float32"):
        Features(np.ones((10, 4)), logits=np.full((10, 3), -1e300))
    assert Features(np.full((10, 4), 3e38)).rows.dtype == np.float32


@pytest.mark.parametrize("workers", [0, 2])
def test_rows_of_a_folder_of_mixed_sizes_are_in_the_folders_order_at_any_batch_size(tmp_path, workers):
    # Images of one size are batched together, in an order that depends on the batch size; the kept rows go back to
    # the folder's order, so KID, IS and the intervals (drawn by position) and the features cache do not depend on
    # the batch size (25 on the CPU, 200 on a GPU).
    from PIL import Image

    from stand_ins import MeanColour  # tests/stand_ins.py

    rng = np.random.default_rng(5)
    sizes = [(8, 8), (10, 12), (8, 8), (12, 10), (10, 12), (8, 8), (12, 10), (8, 8), (10, 12)] * 3
    folder = tmp_path / "mixed"
    folder.mkdir()
    expected = []
    for index, (height, width) in enumerate(sizes):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:03d}.png")
        expected.append(MeanColour()(pixels[None])[0])
    for batch_size in (2, 3, 16):
        features = fidkit.compute_features(folder, extractor=MeanColour(), batch_size=batch_size, workers=workers,
                                           use_cache=False)
        np.testing.assert_array_equal(features.rows, np.stack(expected))
