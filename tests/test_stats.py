"""Statistics: accuracy, streaming accumulation, exact merges, and the .npz format (fidkit's and foreign)."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fidkit
from fidkit.errors import InputError, OverwriteError, StatsFileError
from fidkit.frechet import fid_from_arrays, fid_from_stats, frechet_distance
from fidkit.frechet.factors import sqrt_factor
from fidkit.stats import Stats, StatsAccumulator
from fidkit.statsfile import STATS_FORMAT_VERSION


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def features(seed: int, n_rows: int, dim: int, *, offset: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.linspace(2.0, 0.05, dim)
    return (rng.standard_normal((n_rows, dim)) * scales + rng.standard_normal(dim) + offset).astype(np.float32)


METADATA = {
    "feature_extractor": "inception-2015-12-05",
    "weights_sha256": "6726825d" * 8,
    "resize_mode": "tf1-bilinear-asymmetric",
    "n_skipped": 2,
    "lossy_inputs": False,
    "created": "2025-01-01T00:00:00Z",
    "scale": 0.5,
}


# ------------------------------------------------------------------------------------------------ Stats


@pytest.mark.parametrize("n_rows", [5, 16, 300])
def test_from_features_matches_numpy_in_float64(n_rows: int) -> None:
    rows = features(1, n_rows, 16)
    stats = Stats.from_features(rows)
    rows64 = rows.astype(np.float64)
    assert stats.mu.dtype == np.float64 and stats.sigma.dtype == np.float64
    assert stats.n == n_rows and stats.dim == 16 and not stats.is_foreign
    assert relative_error(stats.mu, rows64.mean(axis=0)) <= 1e-12
    assert relative_error(stats.sigma, np.cov(rows64, rowvar=False)) <= 1e-12
    assert np.array_equal(stats.sigma, stats.sigma.T)
    if n_rows <= 16:
        # The exact factor: n - 1 columns, reproduces sigma.
        assert stats.factor is not None and stats.factor.shape == (16, n_rows - 1)
        assert relative_error(stats.factor @ stats.factor.T, stats.sigma) <= 1e-13
    else:
        assert stats.factor is None


def test_arrays_are_copied_and_read_only() -> None:
    mu, sigma = np.zeros(3), np.eye(3)
    stats = Stats(mu, sigma, n=10)
    mu[0] = 5.0
    assert stats.mu[0] == 0.0
    with pytest.raises(ValueError):
        stats.sigma[0, 0] = 2.0
    # Stats cross process boundaries (sharded computation); they stay frozen there too.
    restored = pickle.loads(pickle.dumps(stats))
    assert np.array_equal(restored.sigma, stats.sigma) and restored.n == 10
    with pytest.raises(ValueError):
        restored.mu[0] = 1.0


def test_invalid_stats_raise_input_error() -> None:
    with pytest.raises(InputError, match="at least 2 samples"):
        Stats(np.zeros(2), np.eye(2), n=1)
    with pytest.raises(InputError, match="at least 2 samples"):
        Stats.from_features(np.ones((1, 4)))
    with pytest.raises(InputError, match="not symmetric"):
        Stats(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(InputError, match="negative"):
        Stats(np.zeros(2), np.diag([1.0, -1.0]))
    with pytest.raises(InputError, match="does not reproduce sigma"):
        Stats(np.zeros(2), np.eye(2), n=3, factor=np.ones((2, 2)))
    with pytest.raises(InputError, match="rank <= 2"):
        Stats(np.zeros(4), np.eye(4), n=3, factor=np.eye(4))
    with pytest.raises(InputError, match="only str, int, float and bool"):
        Stats(np.zeros(2), np.eye(2), metadata={"bad": [1, 2]})


# ------------------------------------------------------------------------------------------------ streaming


@pytest.mark.parametrize("batch_size", [1, 7, 50])
def test_accumulator_equals_statistics_of_the_whole(batch_size: int) -> None:
    dim = 24
    rows = features(2, 203, dim, offset=300.0)  # a large common offset: one-pass float32 moments fail here
    accumulator = StatsAccumulator(dim)
    for start in range(0, len(rows), batch_size):
        accumulator.update(rows[start : start + batch_size])
    assert accumulator.n == 203
    streamed = accumulator.result(METADATA)
    whole = rows.astype(np.float64)
    assert streamed.n == 203 and streamed.metadata == METADATA
    assert relative_error(streamed.mu, whole.mean(axis=0)) <= 1e-12
    assert relative_error(streamed.sigma, np.cov(whole, rowvar=False)) <= 1e-12
    # Bounded state: nothing held grows with N (at most one dim x dim matrix plus vectors).
    held = [value for value in vars(accumulator).values() if isinstance(value, np.ndarray)]
    assert sum(array.size for array in held) <= dim * dim + dim
    assert accumulator._rows is None


def test_accumulator_keeps_the_exact_factor_while_n_le_dim() -> None:
    rows = features(3, 20, 32)
    accumulator = StatsAccumulator()
    accumulator.update(rows[:8])
    accumulator.update(rows[8:].astype(np.float64))
    streamed = accumulator.result()
    assert streamed.factor is not None and streamed.factor.shape == (32, 19)
    assert relative_error(streamed.sigma, Stats.from_features(rows).sigma) <= 1e-14
    assert accumulator.dim == 32


def test_accumulator_rejects_bad_batches() -> None:
    accumulator = StatsAccumulator(4)
    with pytest.raises(InputError, match="dim 5"):
        accumulator.update(np.zeros((3, 5)))
    with pytest.raises(InputError, match="NaN or inf"):
        accumulator.update(np.array([[0.0, np.nan, 0.0, 0.0]]))
    with pytest.raises(InputError, match="2-D"):
        accumulator.update(np.zeros(4))
    accumulator.update(np.zeros((1, 4)))
    with pytest.raises(InputError, match="at least 2 samples"):
        accumulator.result()


def test_shard_merge_equals_union_to_1e_12() -> None:
    dim = 16
    shards = [features(10 + index, n_rows, dim, offset=50.0) for index, n_rows in enumerate([9, 40, 3, 77])]
    union = np.concatenate(shards).astype(np.float64)
    merged = Stats.from_features(shards[0])
    for shard in shards[1:]:
        merged = merged.merge(Stats.from_features(shard))
    assert merged.n == len(union)
    assert relative_error(merged.mu, union.mean(axis=0)) <= 1e-12
    assert relative_error(merged.sigma, np.cov(union, rowvar=False)) <= 1e-12

    accumulators = []
    for shard in shards:
        accumulator = StatsAccumulator()
        accumulator.update(shard)
        accumulators.append(accumulator)
    combined = accumulators[0]
    for accumulator in accumulators[1:]:
        combined.merge(accumulator)
    assert combined.n == len(union)
    assert relative_error(combined.result().sigma, np.cov(union, rowvar=False)) <= 1e-12


def test_merge_keeps_the_exact_factor_below_dim() -> None:
    dim = 64
    first, second = features(20, 12, dim), features(21, 30, dim, offset=1.0)
    merged = Stats.from_features(first).merge(Stats.from_features(second))
    union = np.concatenate([first, second])
    assert merged.factor is not None and merged.factor.shape == (dim, 41)
    assert relative_error(merged.factor @ merged.factor.T, np.cov(union.astype(np.float64), rowvar=False)) <= 1e-12
    other = features(22, 25, dim, offset=0.5)
    with pytest.warns(UserWarning):
        assert fid_from_stats(merged, Stats.from_features(other)).value == pytest.approx(
            fid_from_arrays(union, other).value, rel=1e-10
        )


def test_merge_refuses_what_cannot_be_merged() -> None:
    stats = Stats.from_features(features(30, 10, 4), metadata=METADATA)
    with pytest.raises(InputError, match="sample count"):
        stats.merge(Stats(stats.mu, stats.sigma))
    with pytest.raises(InputError, match="dimension"):
        stats.merge(Stats.from_features(features(31, 10, 5)))
    with pytest.raises(InputError, match="weights_sha256"):
        stats.merge(Stats.from_features(features(32, 10, 4), metadata={**METADATA, "weights_sha256": "0" * 64}))
    merged = stats.merge(Stats.from_features(features(33, 10, 4), metadata={**METADATA, "created": "later"}))
    assert merged.metadata["n_skipped"] == 4 and "created" not in merged.metadata
    assert merged.metadata["weights_sha256"] == METADATA["weights_sha256"]


@pytest.mark.parametrize(
    ("key", "other"),
    [("convention", "clean"), ("engine", "torch"), ("exporter_version", "0"), ("precision", "tf32"),
     ("feature_extractor", "pool_3-768")],
)
def test_merge_refuses_statistics_of_another_feature_space(key: str, other: str) -> None:
    # Every key that names a feature space refuses a merge (the convention, engine and exporter version once
    # merged silently and were dropped from the result), the same keys the ranks and Ray actors compare.
    from fidkit.inception.spec import identity_fields
    from fidkit.statsfile import IDENTITY_KEYS

    assert set(identity_fields(weights_sha256="0" * 64, engine="onnxruntime", precision="exact")) == set(IDENTITY_KEYS)
    identity = identity_fields(weights_sha256="0" * 64, engine="onnxruntime", precision="exact")
    stats = Stats.from_features(features(34, 10, 4), metadata=identity)
    with pytest.raises(InputError, match=f"different {key}"):
        stats.merge(Stats.from_features(features(35, 10, 4), metadata={**identity, key: other}))


# ------------------------------------------------------------------------------------------------ files


@pytest.mark.parametrize("n_rows", [6, 40])
def test_round_trip_keeps_everything(tmp_path, n_rows: int) -> None:
    stats = Stats.from_features(features(40, n_rows, 8), metadata=METADATA)
    path = tmp_path / "stats.npz"
    stats.save(path)
    loaded = Stats.load(path)
    assert np.array_equal(loaded.mu, stats.mu) and np.array_equal(loaded.sigma, stats.sigma)
    assert loaded.n == n_rows and loaded.metadata == METADATA and not loaded.is_foreign
    assert loaded.path == path
    if stats.factor is None:
        assert loaded.factor is None
    else:
        assert np.array_equal(loaded.factor, stats.factor)
    # What TTUR and pytorch-fid do with it: plain keys, float64, no pickles needed.
    with np.load(path, allow_pickle=False) as raw:
        assert raw["mu"].dtype == np.float64 and raw["sigma"].shape == (8, 8)
        assert int(raw["n"]) == n_rows and int(raw["fidkit_format_version"]) == STATS_FORMAT_VERSION
        assert json.loads(str(raw["fidkit_metadata_json"])) == METADATA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.npz"]  # no temporary left behind


def test_save_uses_the_path_as_given_and_never_clobbers(tmp_path) -> None:
    stats = Stats.from_features(features(41, 10, 4))
    path = tmp_path / "reference-stats"
    stats.save(path)
    assert path.is_file() and not (tmp_path / "reference-stats.npz").exists()
    with pytest.raises(OverwriteError):
        stats.save(path)
    replacement = Stats.from_features(features(42, 10, 4))
    replacement.save(path, overwrite=True)
    assert np.array_equal(Stats.load(path).mu, replacement.mu)


def test_loads_a_file_written_the_ttur_way(tmp_path) -> None:
    rows = features(50, 30, 6).astype(np.float64)
    mu, sigma = np.mean(rows, axis=0), np.cov(rows, rowvar=False)
    path = tmp_path / "ttur_stats.npz"
    np.savez(path, mu=mu, sigma=sigma)
    loaded = Stats.load(path)
    assert loaded.is_foreign and loaded.n is None and loaded.metadata == {} and loaded.factor is None
    assert np.allclose(loaded.mu, mu, rtol=0, atol=0) and np.allclose(loaded.sigma, sigma, rtol=1e-15, atol=0)
    assert fid_from_stats(loaded, Stats.from_features(rows)).value == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(InputError, match="sample count"):
        loaded.merge(loaded)


def test_loads_a_file_written_the_pytorch_fid_way(tmp_path) -> None:
    rows = features(51, 30, 6)
    path = tmp_path / "pytorch_fid_stats.npz"
    # Compressed, float32 covariance: both occur in the wild.
    np.savez_compressed(path, mu=rows.mean(axis=0), sigma=np.cov(rows, rowvar=False).astype(np.float32))
    loaded = Stats.load(path)
    assert loaded.is_foreign and loaded.sigma.dtype == np.float64 and loaded.dim == 6


def test_corrupt_and_foreign_files_raise_stats_file_error(tmp_path) -> None:
    def expect_error(name: str, pattern: str) -> None:
        with pytest.raises(StatsFileError, match=pattern) as caught:
            Stats.load(tmp_path / name)
        assert name in str(caught.value)

    expect_error("missing.npz", "no such statistics file")
    (tmp_path / "garbage.npz").write_bytes(b"this is not a zip file at all")
    expect_error("garbage.npz", "not a readable .npz")
    good = tmp_path / "good.npz"
    Stats.from_features(features(52, 20, 4)).save(good)
    (tmp_path / "truncated.npz").write_bytes(good.read_bytes()[:200])
    expect_error("truncated.npz", "npz")
    np.save(tmp_path / "single.npy", np.zeros(4))
    expect_error("single.npy", "single array")
    np.savez(tmp_path / "no_sigma.npz", mu=np.zeros(4))
    expect_error("no_sigma.npz", "'sigma'")
    np.savez(tmp_path / "shape.npz", mu=np.zeros(4), sigma=np.eye(3))
    expect_error("shape.npz", "mu has length 4")
    np.savez(tmp_path / "asymmetric.npz", mu=np.zeros(2), sigma=np.array([[1.0, 2.0], [0.0, 1.0]]))
    expect_error("asymmetric.npz", "not symmetric")
    np.savez(tmp_path / "nan.npz", mu=np.zeros(2), sigma=np.full((2, 2), np.nan))
    expect_error("nan.npz", "NaN")
    np.savez(tmp_path / "pickled.npz", mu=np.array([{"a": 1}], dtype=object), sigma=np.eye(1))
    expect_error("pickled.npz", "pickle|npz")
    with zipfile.ZipFile(good) as archive, zipfile.ZipFile(tmp_path / "newer.npz", "w") as newer:
        for item in archive.namelist():
            data = archive.read(item)
            if item == "fidkit_format_version.npy":
                newer.writestr(item, _npy_bytes(np.asarray(STATS_FORMAT_VERSION + 1, dtype=np.int64)))
            else:
                newer.writestr(item, data)
    expect_error("newer.npz", "newer fidkit")


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("n_rows", [3, 30])
def test_accumulator_merged_with_itself_counts_every_row_twice(n_rows: int) -> None:
    rows = features(60, n_rows, 8)
    accumulator = StatsAccumulator()
    accumulator.update(rows)
    accumulator.merge(accumulator)
    doubled = np.concatenate([rows, rows]).astype(np.float64)
    assert accumulator.n == 2 * n_rows
    assert relative_error(accumulator.result().sigma, np.cov(doubled, rowvar=False)) <= 1e-12


def test_from_features_in_chunks_for_many_rows() -> None:
    rows = features(70, 9000, 3, offset=1000.0)  # more rows than one chunk: goes through the accumulator
    stats = Stats.from_features(rows)
    assert stats.n == 9000 and stats.factor is None
    assert relative_error(stats.sigma, np.cov(rows.astype(np.float64), rowvar=False)) <= 1e-12


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty or cut short"), (b"mu,sigma\n1,2\n", "no numpy or zip header")],
)
def test_load_of_a_file_that_is_not_numpy_says_so(tmp_path, content, reason):
    path = tmp_path / "stats.npz"
    path.write_bytes(content)
    with pytest.raises(StatsFileError, match=reason) as raised:
        Stats.load(path)
    assert str(path) in str(raised.value) and "pickle" not in str(raised.value)


# ------------------------------------------------------------------------------------ positive semidefiniteness


@pytest.mark.parametrize(
    "sigma",
    [
        [[1.0, 2.0], [2.0, 1.0]],  # residual trace -3: pstrf stops at the negative pivot
        [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]],  # residual trace 0: only the probes see it
    ],
)
def test_indefinite_sigma_is_refused_not_factored(sigma) -> None:
    dim = len(sigma)
    with pytest.raises(InputError, match="mu1/sigma1: sigma is not positive semidefinite"):
        frechet_distance(np.zeros(dim), sigma, np.zeros(dim), np.eye(dim))
    with pytest.raises(InputError, match="stats_b: sigma is not positive semidefinite"):
        fid_from_stats(Stats(mu=np.zeros(dim), sigma=np.eye(dim)), Stats(mu=np.zeros(dim), sigma=sigma))
    # Every route refuses it (hostile round 3, item 2), naming the most negative eigenvalue.
    for method in ("eigh", "ttur"):
        with pytest.raises(InputError, match="mu1/sigma1: sigma is not positive semidefinite.*eigenvalue is -1"):
            frechet_distance(np.zeros(dim), sigma, np.zeros(dim), np.eye(dim), method=method)


def test_indefinite_sigma_from_a_file_names_the_file(tmp_path) -> None:
    path = tmp_path / "ttur.npz"
    np.savez(path, mu=np.zeros(2), sigma=np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(StatsFileError, match=f"{path}.*not positive semidefinite"):
        sqrt_factor(Stats.load(path))


def test_psd_check_accepts_round_off_negative_eigenvalues() -> None:
    rng = np.random.default_rng(31)
    dim = 120
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    for scale in (1.0, 1e-150 ** 2 * 1e10, 1e280):
        eigenvalues = np.concatenate([rng.uniform(1.0, 2.0, 80), np.full(40, -1e-13)]) * scale
        sigma = (basis * eigenvalues) @ basis.T
        sigma = (sigma + sigma.T) / 2
        factor = sqrt_factor(Stats(mu=np.zeros(dim), sigma=sigma))
        assert 80 <= factor.rank < dim
        assert abs(factor.dropped_trace) <= 1e-10 * np.trace(sigma)


# ------------------------------------------------------------------------------------------ unwritable paths


def test_save_onto_a_folder_is_a_stats_file_error(tmp_path) -> None:
    stats = Stats(mu=np.zeros(2), sigma=np.eye(2), n=5)
    folder = tmp_path / "out"
    folder.mkdir()
    for overwrite in (False, True):
        with pytest.raises(StatsFileError, match=f"{folder} is a folder.*stats.npz"):
            stats.save(folder, overwrite=overwrite)
    assert list(folder.iterdir()) == [] and [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp files


def test_save_where_the_parent_cannot_be_a_folder_is_a_stats_file_error(tmp_path) -> None:
    # A parent that is a regular file fails for root too (chmod would not stop root).
    stats = Stats(mu=np.zeros(2), sigma=np.eye(2), n=5)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / "stats.npz"
    with pytest.raises(StatsFileError, match=f"cannot write statistics to {target}.*writable folder"):
        stats.save(target)
    # A missing parent is not an error: it is created.
    stats.save(tmp_path / "new" / "deeper" / "stats.npz")
    assert Stats.load(tmp_path / "new" / "deeper" / "stats.npz").n == 5


# ------------------------------------------------------------------------------------------ stored factors


def test_a_stored_factor_that_disagrees_with_sigma_is_refused_naming_the_file(tmp_path) -> None:
    # sigma replaced by its diagonal while the factor is kept: the diagonals still agree, so only a check
    # beyond the diagonal finds it (it once gave FID 0 against the original).
    rng = np.random.default_rng(5)
    features = rng.standard_normal((40, 64)) @ rng.standard_normal((64, 64))
    original = Stats.from_features(features)
    original.save(tmp_path / "original.npz")
    with np.load(tmp_path / "original.npz") as loaded:
        arrays = {key: loaded[key] for key in loaded.files}
    arrays["sigma"] = np.diag(np.diagonal(arrays["sigma"]))
    np.savez(tmp_path / "edited.npz", **arrays)
    edited = Stats.load(tmp_path / "edited.npz")
    with pytest.raises(StatsFileError, match="edited.npz"):
        fid_from_stats(edited, Stats.from_features(rng.standard_normal((50, 64))))
    assert fid_from_stats(Stats.load(tmp_path / "original.npz"), original).value == 0.0


def test_an_indefinite_sigma_with_a_factor_is_refused(tmp_path) -> None:
    rng = np.random.default_rng(6)
    factor = rng.standard_normal((8, 3))
    swap = np.zeros((8, 8))
    swap[0, 1] = swap[1, 0] = 10.0 * np.abs(factor).max() ** 2
    sigma = factor @ factor.T + swap  # the diagonal still matches the factor, the matrix is indefinite
    assert np.linalg.eigvalsh(sigma).min() < 0
    np.savez(tmp_path / "bad.npz", mu=np.zeros(8), sigma=sigma, n=np.int64(4), factor=factor)
    with pytest.raises(StatsFileError, match="bad.npz"):
        fid_from_stats(Stats.load(tmp_path / "bad.npz"), Stats(mu=np.zeros(8), sigma=np.eye(8)))


def test_moments_round_trip_and_merge_exactly_including_single_and_empty_pieces() -> None:
    # What ranks exchange under torch.distributed (fidkit.FID): (n, mean, M2) per process, merged in order.
    rng = np.random.default_rng(12)
    chunks = [rng.standard_normal((n_rows, 6)) for n_rows in (5, 1, 0, 9)]
    merged = StatsAccumulator(6)
    for chunk in chunks:
        accumulator = StatsAccumulator(6)
        accumulator.update(chunk)
        merged.merge(StatsAccumulator.from_moments(*accumulator.moments()))
    expected = Stats.from_features(np.concatenate(chunks))
    result = merged.result()
    assert result.n == 15
    np.testing.assert_allclose(result.mu, expected.mu, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(result.sigma, expected.sigma, rtol=1e-12, atol=1e-14)
    n_rows, mean, m2 = StatsAccumulator.from_moments(1, chunks[1][0], np.zeros((6, 6))).moments()
    assert n_rows == 1 and np.array_equal(mean, chunks[1][0]) and not m2.any()
    with pytest.raises(InputError, match="no moments"):
        StatsAccumulator().moments()


# --- hostile review (issue 9), 14: complex numbers and hostile metadata in statistics files -------------------------


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


# --- hostile round 4: the covariance of few rows --------------------------------------------------------------------


def test_the_covariance_of_few_rows_is_the_product_of_its_factor_and_agrees_with_numpy() -> None:
    rng = np.random.default_rng(7)
    rows = rng.normal(loc=3.0, size=(50, 80))
    stats = Stats.from_features(rows)
    assert stats.factor is not None
    assert np.array_equal(stats.sigma, stats.sigma.T)
    np.testing.assert_allclose(stats.sigma, stats.factor @ stats.factor.T, rtol=0, atol=1e-14)
    np.testing.assert_allclose(stats.sigma, np.cov(rows, rowvar=False), rtol=0, atol=1e-13)


# --- hostile round 5: relabelled statistics -------------------------------------------------------------------------


def test_relabelled_changes_only_metadata_and_path_and_checks_the_metadata():
    from fidkit.stats import relabelled

    stats = fidkit.Stats.from_features(np.random.default_rng(0).normal(size=(20, 4)), metadata={"a": 1})
    copied = relabelled(stats, metadata={"a": 2, "b": "x"})
    assert copied.mu is stats.mu and copied.metadata == {"a": 2, "b": "x"} and stats.metadata == {"a": 1}
    with pytest.raises(InputError, match="metadata"):
        relabelled(stats, metadata={"k": [1, 2]})
    with pytest.raises(TypeError):
        relabelled(stats, mu=np.zeros(4))


# --- hostile round 5, 2: loading a folder, a FIFO or a device says what the path is ---------------------------------


@pytest.mark.parametrize("load", [fidkit.Stats.load, fidkit.Features.load])
def test_loading_a_path_that_is_no_regular_file_says_what_it_is(tmp_path, load):
    (tmp_path / "folder.npz").mkdir()
    os.mkfifo(tmp_path / "fifo.npz")  # opened, it would block until a writer came
    (tmp_path / "zero.npz").symlink_to("/dev/zero")
    for name, kind in (("folder.npz", "is a folder"), ("fifo.npz", "is a FIFO"), ("zero.npz", "is a character device"),
                       ("missing.npz", "no such")):
        with pytest.raises(StatsFileError, match=kind):
            load(tmp_path / name)


# --- hostile round 7, 2: statistics stored in float32 are allowed float32's round-off ------------------------------


def relu_features(rng: np.random.Generator, n_rows: int, dim: int, shift: float) -> np.ndarray:
    """Pooled-activation-like rows: non-negative, correlated, with a decaying spectrum."""
    mixing = rng.standard_normal((dim, dim)) * np.exp(-np.arange(dim) / 20.0)
    return np.maximum(rng.standard_normal((n_rows, dim)) @ mixing.T * 0.1 + 0.3 + shift, 0.0)


@pytest.mark.parametrize("method", ["auto", "eigh", "ttur"])
def test_statistics_stored_in_float32_are_judged_at_float32_round_off(tmp_path, method) -> None:
    # Rounding a covariance of N < dim rows to float32 moves its zero eigenvalues by ~1e-7 of the variances, which
    # the float64 tolerance (1e-9) refused as "not positive semidefinite", on every method, while pytorch-fid
    # computes a FID from such files.
    rng = np.random.default_rng(5)
    sides = [relu_features(rng, 30, 64, shift) for shift in (0.0, 0.02)]
    pairs = {}
    for precision in (np.float64, np.float32):
        paths = []
        for index, rows in enumerate(sides):
            path = tmp_path / f"side{index}-{np.dtype(precision).name}.npz"
            np.savez(path, mu=rows.mean(axis=0).astype(precision), sigma=np.cov(rows, rowvar=False).astype(precision))
            paths.append(path)
        pairs[precision] = [Stats.load(path) for path in paths]
    exact = fid_from_stats(*pairs[np.float64], method=method).value
    in_memory = [Stats(mu=np.load(path)["mu"], sigma=np.load(path)["sigma"]) for path in
                 (tmp_path / "side0-float32.npz", tmp_path / "side1-float32.npz")]
    for stats_a, stats_b in (pairs[np.float32], in_memory):
        assert stats_a.storage_eps == np.finfo(np.float32).eps
        assert fid_from_stats(stats_a, stats_b, method=method).value == pytest.approx(exact, rel=1e-4)
    # Saved by fidkit, they stay float32 in the file, so reading them back allows the same round-off.
    pairs[np.float32][0].save(tmp_path / "resaved.npz")
    assert np.load(tmp_path / "resaved.npz")["sigma"].dtype == np.float32
    resaved = Stats.load(tmp_path / "resaved.npz")
    assert fid_from_stats(resaved, pairs[np.float32][1], method=method).value == pytest.approx(exact, rel=1e-4)
    # The very same values handed over as float64 claim float64 precision, and are refused as before.
    rounded = pairs[np.float32][0]
    claimed = Stats(mu=rounded.mu, sigma=rounded.sigma.copy())
    assert claimed.storage_eps == np.finfo(np.float64).eps
    with pytest.raises(InputError, match="not positive semidefinite"):
        fid_from_stats(claimed, pairs[np.float64][1], method=method)
    # float32 round-off excuses no real indefiniteness: an eigenvalue of -1e-3 of the variances is refused.
    basis, _ = np.linalg.qr(rng.standard_normal((64, 64)))
    spectrum = np.r_[np.full(63, 1.0), -1e-3]
    indefinite = ((basis * spectrum) @ basis.T).astype(np.float32)
    with pytest.raises(InputError, match="not positive semidefinite"):
        fid_from_stats(Stats(mu=np.zeros(64, np.float32), sigma=indefinite), pairs[np.float64][1], method=method)


def test_statistics_stored_in_float16_are_judged_at_float16_round_off() -> None:
    rng = np.random.default_rng(6)
    sides = [relu_features(rng, 30, 64, shift) for shift in (0.0, 0.05)]
    exact = fid_from_arrays(*sides).value
    half = [Stats(mu=rows.mean(axis=0).astype(np.float16), sigma=np.cov(rows, rowvar=False).astype(np.float16))
            for rows in sides]
    assert half[0].storage_eps == np.finfo(np.float16).eps
    assert fid_from_stats(*half).value == pytest.approx(exact, rel=1e-2)



@pytest.mark.parametrize("dim", [128, 2048])
def test_float16_statistics_too_coarse_for_their_width_are_refused(dim) -> None:
    # Review of round 7: at dim 2048 the allowance dim x eps16 ~ 2 variances let a matrix with a correlation of 1.8
    # (an eigenvalue of -0.99 in units of the variances) pass as a covariance and give a FID.
    sigma = np.eye(dim)
    sigma[0, 1] = sigma[1, 0] = 1.8
    with pytest.raises(InputError, match=rf"sigma is stored in float16, too coarse for {dim} features.*float32"):
        Stats(mu=np.zeros(dim, np.float16), sigma=sigma.astype(np.float16))
    Stats(mu=np.zeros(dim, np.float32), sigma=np.eye(dim, dtype=np.float32))  # float32 is fine at any width read

# --- hostile round 7, 1: symmetry is judged against the variances of the pair ---------------------------------------


def test_asymmetry_is_judged_against_the_two_variances_it_sits_between(tmp_path) -> None:
    # An antisymmetric +-0.5 between two unit variances, beside a variance of 1e12: it was compared with 1e-6 of the
    # largest entry (1e6) and silently averaged away.
    sigma = np.diag([1e12, 1.0, 1.0])
    sigma[1, 2], sigma[2, 1] = 0.5, -0.5
    with pytest.raises(InputError, match=r"sigma is not symmetric: sigma\[1, 2\] - sigma\[2, 1\] = 1, 1 of sqrt"):
        Stats(mu=np.zeros(3), sigma=sigma)
    np.savez(tmp_path / "skew.npz", mu=np.zeros(3), sigma=sigma)
    with pytest.raises(StatsFileError, match=r"skew\.npz: sigma is not symmetric"):
        Stats.load(tmp_path / "skew.npz")
    # Round-off asymmetry is still accepted beside it, and made exact.
    sigma[1, 2], sigma[2, 1] = 0.5, np.nextafter(0.5, 1.0)
    stats = Stats(mu=np.zeros(3), sigma=sigma)
    assert np.array_equal(stats.sigma, stats.sigma.T) and stats.sigma[1, 2] == pytest.approx(0.5, rel=1e-15)


# --- hostile round 7, 3: StatsAccumulator.from_moments checks what it is given ---------------------------------------


def test_from_moments_refuses_what_is_no_moments_naming_the_argument() -> None:
    rng = np.random.default_rng(13)
    rows = rng.standard_normal((50, 4))
    mean = rows.mean(axis=0)
    m2 = (rows - mean).T @ (rows - mean)
    cases = {
        "m2 has shape \\(5, 5\\) but mean has length 4": (50, mean, np.eye(5)),
        "m2 has shape \\(4,\\)": (50, mean, np.ones(4)),
        "mean has shape \\(1, 4\\)": (50, mean[None], m2),
        "n must be a non-negative integer count of rows, not 50.7": (50.7, mean, m2),
        "n must be a non-negative integer count of rows, not -3": (-3, mean, m2),
        "n must be a non-negative integer count of rows, not True": (True, mean, m2),
        "m2 has negative entries on its diagonal": (50, mean, -m2),
    }
    nan_m2 = m2.copy()
    nan_m2[0, 1] = np.nan
    cases["m2 contains NaN or inf"] = (50, mean, nan_m2)
    skewed = m2.copy()
    skewed[0, 1] += 30.0
    cases[r"m2 is not symmetric: m2\[0, 1\] - m2\[1, 0\] = 30"] = (50, mean, skewed)
    for message, (n_rows, given_mean, given_m2) in cases.items():
        with pytest.raises(InputError, match=f"from_moments: {message}"):
            StatsAccumulator.from_moments(n_rows, given_mean, given_m2)
    # Genuine moments (numpy integers too) still give the statistics of the rows; round-off asymmetry is made exact.
    roundoff = m2.copy()
    roundoff[0, 1] = np.nextafter(roundoff[0, 1], np.inf)
    result = StatsAccumulator.from_moments(np.int64(50), mean, roundoff).result()
    np.testing.assert_allclose(result.sigma, np.cov(rows, rowvar=False), rtol=1e-12)
    assert np.array_equal(result.sigma, result.sigma.T)


@pytest.mark.parametrize("dim", [3, 7])
def test_from_moments_refuses_moments_no_rows_can_have(dim) -> None:
    """One row has M2 = 0 exactly and no rows have zero moments: anything else skewed every merge silently."""
    rng = np.random.default_rng(dim)
    rows = rng.standard_normal((50, dim))
    rest = StatsAccumulator()
    rest.update(rows[1:])
    for m2 in (100 * np.eye(dim), np.full((dim, dim), 1e-300)):
        with pytest.raises(InputError, match="from_moments: n is 1 but m2 has non-zero entries"):
            StatsAccumulator.from_moments(1, rows[0], m2)
    for mean, m2 in ((np.full(dim, 5.0), np.zeros((dim, dim))), (np.zeros(dim), np.eye(dim)), (rows[0], np.eye(dim))):
        with pytest.raises(InputError, match="from_moments: n is 0 but mean or m2 has non-zero entries"):
            StatsAccumulator.from_moments(0, mean, m2)
    # What moments() gives for one row and for nothing is accepted, and merges to the statistics of the rows.
    one = StatsAccumulator()
    one.update(rows[:1])
    merged = StatsAccumulator.from_moments(*one.moments())
    merged.merge(StatsAccumulator.from_moments(0, np.zeros(dim), -0.0 * np.eye(dim)))
    merged.merge(rest)
    expected = Stats.from_features(rows)
    np.testing.assert_allclose(merged.result().sigma, expected.sigma, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(merged.result().mu, expected.mu, rtol=1e-13, atol=1e-15)


# --- hostile round 7, 4: torch tensors as mu and sigma are converted once, or refused as fid_from_arrays does -------


def test_torch_tensors_as_statistics_convert_or_are_refused_like_features() -> None:
    torch = pytest.importorskip("torch")
    rows = torch.randn(50, 4, dtype=torch.float64)
    mu, sigma = rows.mean(0), torch.cov(rows.T)
    plain = Stats(mu=mu, sigma=sigma)  # a CPU tensor without gradients converts, as in fid_from_arrays
    assert np.allclose(plain.sigma, sigma.numpy())
    refused = {
        "requires grad": (mu.clone().requires_grad_(), sigma.clone().requires_grad_()),
        "BFloat16": (mu.bfloat16(), sigma.bfloat16()),
    }
    for reason, (given_mu, given_sigma) in refused.items():
        with pytest.raises(InputError, match=f"statistics: mu cannot be read as a numpy array.*{reason}.*detach"):
            Stats(mu=given_mu, sigma=given_sigma)
        with pytest.raises(InputError, match=f"mu1/sigma1: mu cannot be read as a numpy array.*{reason}"):
            fidkit.frechet_distance(given_mu, given_sigma, mu, sigma)
        with pytest.raises(InputError, match=reason):
            fid_from_arrays(rows.bfloat16() if reason == "BFloat16" else rows.clone().requires_grad_(), rows)
    with pytest.raises(InputError, match="statistics: factor cannot be read as a numpy array"):
        Stats(mu=mu, sigma=sigma, factor=torch.ones(4, 3, requires_grad=True))


# --- hostile round 7, 6: a format version below fidkit's first is a damaged file ------------------------------------


@pytest.mark.parametrize("version", [0, -5])
def test_a_format_version_below_the_first_is_a_damaged_file(tmp_path, version) -> None:
    def with_version(good: Path, name: str) -> Path:
        with zipfile.ZipFile(good) as archive, zipfile.ZipFile(tmp_path / name, "w") as old:
            for item in archive.namelist():
                data = archive.read(item)
                if item == "fidkit_format_version.npy":
                    data = _npy_bytes(np.asarray(version, dtype=np.int64))
                old.writestr(item, data)
        return tmp_path / name

    Stats.from_features(features(52, 20, 4)).save(tmp_path / "good.npz")
    with pytest.raises(StatsFileError, match=rf"old\.npz: declares format version {version}, .*damaged"):
        Stats.load(with_version(tmp_path / "good.npz", "old.npz"))
    fidkit.Features(np.ones((3, 4))).save(tmp_path / "features.npz")
    with_version(tmp_path / "features.npz", "old-f.npz")
    with pytest.raises(StatsFileError, match=rf"old-f\.npz: declares format version {version}"):
        fidkit.Features.load(tmp_path / "old-f.npz")


@pytest.mark.parametrize(("n_big", "n_small", "dim"), [(5000, 50, 16), (700, 9, 5)])
def test_merge_with_float32_statistics_is_saved_in_float64(tmp_path, n_big: int, n_small: int, dim: int) -> None:
    """The union is computed in float64: its file keeps float64 (float32 tolerance, float64 values); statistics
    given in float32 and not recomputed are still written back in float32."""
    rng = np.random.default_rng(n_big)
    big_rows, small_rows = rng.standard_normal((n_big, dim)), rng.standard_normal((n_small, dim))
    small = Stats(
        mu=small_rows.mean(0).astype(np.float32), sigma=np.cov(small_rows, rowvar=False).astype(np.float32),
        n=n_small,
    )
    merged = Stats.from_features(big_rows).merge(small)
    assert merged.storage_eps == float(np.finfo(np.float32).eps)
    merged.save(tmp_path / "merged.npz")
    with np.load(tmp_path / "merged.npz") as contents:
        assert contents["sigma"].dtype == np.float64
        np.testing.assert_array_equal(contents["sigma"], merged.sigma)
    small.save(tmp_path / "small.npz")
    with np.load(tmp_path / "small.npz") as contents:
        assert contents["sigma"].dtype == np.float32
