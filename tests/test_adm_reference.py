"""ADM's reference batches (guided-diffusion ``evaluations/evaluator.py``): one ``.npz`` holding the pool_3 statistics
(``mu``, ``sigma``), the spatial statistics sFID is computed against (``mu_s``, ``sigma_s``) and the reference images
(``arr_0``). sFID against ``mu_s``/``sigma_s`` through FID's distance code, the checks of those arrays, refusals
that say how to use ``arr_0``, and what reports, warnings and ``fidkit info`` say about such a file.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fidkit
from fidkit.errors import FidkitWarning, InputError, StatsFileError
from fidkit.features import Features
from fidkit.frechet import fid_from_arrays, fid_from_stats
from fidkit.metrics import IntervalSpec, evaluate
from fidkit.stats import Stats
from fidkit.stats.reference import ImagesInFile, ReferenceBatch

from cli_runs import _run
from peak_memory import _zeros


def adm_batch(path: Path, pool: np.ndarray, spatial: np.ndarray | None, images: np.ndarray | None = None,
              **extra: np.ndarray) -> Path:
    """A reference batch as ADM's evaluator reads one: np.mean and np.cov (ddof 1) of the rows, images in arr_0."""
    pool = np.asarray(pool, dtype=np.float64)
    arrays = {"mu": pool.mean(axis=0), "sigma": np.cov(pool, rowvar=False)}
    if spatial is not None:
        spatial = np.asarray(spatial, dtype=np.float64)
        arrays.update(mu_s=spatial.mean(axis=0), sigma_s=np.cov(spatial, rowvar=False))
    arrays.update(extra)
    if images is not None:
        np.savez(path, images, **arrays)  # positional: numpy names it arr_0, as ADM's files
    else:
        np.savez(path, **arrays)
    return path


def stand_in(seed: int, n: int, pool_dim: int = 6, spatial_dim: int = 5, shift: float = 0.0) -> Features:
    rng = np.random.default_rng(seed)
    return Features(rng.normal(shift, 1.0, (n, pool_dim)), spatial=rng.normal(shift, 1.0, (n, spatial_dim)))


def images(n: int, seed: int = 0, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture
def reference(tmp_path) -> tuple[Path, Features, np.ndarray]:
    """A small reference batch (pool_3 dim 6, spatial dim 5, 3 images of 8x8) and the rows it was made from."""
    rows = stand_in(1, 40)
    pictures = images(3)
    return adm_batch(tmp_path / "VIRTUAL_ref.npz", rows.rows, rows.spatial, pictures), rows, pictures


# --- 1. the file is read with its spatial statistics; sFID is computed against them -------------------------------


def test_a_reference_batch_loads_its_spatial_statistics_and_the_shape_of_its_images(reference, tmp_path):
    path, rows, pictures = reference
    batch = Stats.load(path)
    assert isinstance(batch, ReferenceBatch) and batch.n is None and batch.dim == 6
    spatial = np.asarray(rows.spatial, dtype=np.float64)
    np.testing.assert_array_equal(batch.spatial.mu, spatial.mean(axis=0))
    np.testing.assert_allclose(batch.spatial.sigma, np.cov(spatial, rowvar=False), rtol=1e-15, atol=0)
    assert batch.spatial.dim == 5 and batch.spatial.n is None and batch.spatial.path == path
    assert batch.images == ImagesInFile("arr_0", (3, 8, 8, 3), "uint8")
    assert batch.contents == (
        "ADM reference batch: pool_3 and spatial statistics (mu, sigma, mu_s, sigma_s), 3 images of 8x8x3 uint8 in "
        "arr_0"
    )
    # A TTUR / pytorch-fid file stays a plain Stats.
    np.savez(tmp_path / "ttur.npz", mu=batch.mu, sigma=batch.sigma)
    assert type(Stats.load(tmp_path / "ttur.npz")) is Stats


def test_sfid_against_adm_shaped_statistics_is_fid_s_distance_of_mu_s_and_sigma_s(tmp_path):
    # ADM's shapes: pool_3 2048, spatial 17 x 17 x 7 = 2023.
    real, generated = stand_in(2, 60, 2048, 2023), stand_in(3, 50, 2048, 2023, shift=0.1)
    path = adm_batch(tmp_path / "ref.npz", real.rows, real.spatial, images(4))
    batch = Stats.load(path)
    assert batch.spatial.mu.shape == (2023,) and batch.spatial.sigma.shape == (2023, 2023)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # N below dim
        table = evaluate(generated, batch, "fid,sfid")
        # The same distance code as FID's with a statistics side, on the spatial statistics: the same number.
        expected = fid_from_stats(Stats.from_features(generated.spatial), Stats(mu=batch.spatial.mu,
                                                                                sigma=batch.spatial.sigma))
        assert table["sfid"].value == expected.value
        # ... which is the sFID of the rows the file was made from, to round-off.
        assert table["sfid"].value == pytest.approx(fid_from_arrays(generated.spatial, real.spatial).value, rel=1e-9)
    assert table["sfid"].n_b is None and table["sfid"].n_a == 50


def test_sfid_between_two_reference_batches_and_against_a_features_file(reference, tmp_path):
    path, rows, _ = reference
    other = stand_in(4, 30, shift=0.2)
    second = adm_batch(tmp_path / "second.npz", other.rows, other.spatial)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = evaluate(Stats.load(second), Stats.load(path), "fid,sfid")
        assert table["sfid"].value == pytest.approx(fid_from_arrays(other.spatial, rows.spatial).value, rel=1e-9)
        # The API, from paths: a features file with the spatial output against the batch, which keeps no rows.
        other.save(tmp_path / "features.npz")
        report = fidkit.compute_fid(str(tmp_path / "features.npz"), str(path), metrics="fid,sfid")
    assert report.metrics["sfid"].value == pytest.approx(table["sfid"].value, rel=1e-12)
    assert report.metrics["sfid"].value == pytest.approx(fid_from_arrays(other.spatial, rows.spatial).value, rel=1e-9)


def test_spatial_widths_that_differ_are_refused_naming_both_sides(reference):
    path, _, _ = reference
    with pytest.raises(InputError, match=r"sFID compares the spatial features .* have 9 values per image .* have 5"):
        evaluate(stand_in(5, 20, spatial_dim=9), Stats.load(path), "sfid")


def _member(archive: zipfile.ZipFile, key: str, shape: tuple[int, ...], dtype: str = "<f8") -> None:
    """A member declaring `shape`, its data zeros streamed through the compressor (never all in memory)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                  "shape": shape})
    with archive.open(f"{key}.npy", "w", force_zip64=True) as stream:
        stream.write(header.getvalue())
        for block in _zeros(int(np.prod(shape)) * np.dtype(dtype).itemsize):
            stream.write(block)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_spatial_statistics_are_checked_as_mu_and_sigma_are(tmp_path):
    rows = stand_in(6, 20)
    pool = rows.rows
    spatial_mu, spatial_sigma = rows.spatial.mean(axis=0), np.cov(rows.spatial, rowvar=False)
    skewed = spatial_sigma.copy()
    skewed[0, 1] += 1.0
    with_nan = spatial_sigma.copy()
    with_nan[2, 2] = np.nan
    cases = {
        "half.npz": (dict(mu_s=spatial_mu), r"has 'mu_s' but no 'sigma_s'"),
        "shape.npz": (dict(mu_s=spatial_mu, sigma_s=spatial_sigma[:, :4]),
                      r"spatial statistics mu_s and sigma_s\): sigma has shape \(5, 4\) but mu has length 5"),
        "text.npz": (dict(mu_s=np.array(["a"] * 5), sigma_s=spatial_sigma), r"'mu' has dtype <U1, not numbers"),
        "nan.npz": (dict(mu_s=spatial_mu, sigma_s=with_nan), r"spatial statistics mu_s and sigma_s\).*NaN or inf"),
        "skew.npz": (dict(mu_s=spatial_mu, sigma_s=skewed), r"spatial statistics mu_s and sigma_s\).*not symmetric"),
    }
    for name, (extra, message) in cases.items():
        adm_batch(tmp_path / name, pool, None, **extra)
        with pytest.raises(StatsFileError, match=message):
            Stats.load(tmp_path / name)
    # A sigma_s declaring 72 MB in a few kB of zeros is refused from its header, before anything is read.
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("mu.npy", _npy_bytes(pool.mean(axis=0)))
        archive.writestr("sigma.npy", _npy_bytes(np.cov(pool, rowvar=False)))
        _member(archive, "mu_s", (3000,))
        _member(archive, "sigma_s", (3000, 3000))
    with pytest.raises(StatsFileError,
                       match=r"spatial statistics mu_s and sigma_s\): mu, sigma declare 72,024,000 bytes"):
        Stats.load(tmp_path / "bomb.npz")


def test_a_sigma_s_that_is_not_positive_semidefinite_is_refused_by_the_distance_naming_it(tmp_path):
    rows = stand_in(7, 20, spatial_dim=2)
    path = adm_batch(tmp_path / "indefinite.npz", rows.rows, None, mu_s=np.zeros(2),
                     sigma_s=np.array([[1.0, 2.0], [2.0, 1.0]]))  # eigenvalues 3 and -1
    batch = Stats.load(path)  # symmetric, non-negative variances: only the distance sees it is no covariance
    with pytest.raises(StatsFileError, match=r"sFID, from the spatial statistics mu_s and sigma_s of .*indefinite"
                                             r"\.npz: .*positive semidefinite"):
        evaluate(rows, batch, "sfid")


# --- 1. what statistics cannot serve is refused, saying how to use the images in arr_0 -----------------------------


def _hint_command(message: str) -> list[str]:
    found = re.search(r"python -c ('[^']*')", message)
    assert found, message
    return [sys.executable, "-c", *shlex.split(found.group(1))]


def test_metrics_that_need_rows_point_at_arr_0_with_a_command_that_works(reference, tmp_path):
    path, rows, pictures = reference
    batch = Stats.load(path)
    generated = stand_in(8, 30)
    for metric in ("kid", "prdc"):
        with pytest.raises(InputError) as refused:
            evaluate(generated, batch, metric)
        message = str(refused.value)
        assert "side b is statistics only (ADM reference batch: pool_3 and spatial statistics" in message
        assert "holds ADM's reference images in arr_0 (3 images of 8x8x3 uint8)" in message
        assert "ADM's evaluator computes precision and recall" in message and "not ADM's" in message
    # The command in the message writes exactly the images of arr_0, as a .npy fidkit reads as a source.
    subprocess.run(_hint_command(message), check=True, cwd=tmp_path)
    np.testing.assert_array_equal(np.load(tmp_path / "VIRTUAL_ref_arr_0.npy"), pictures)
    # The same hint where the pipeline is asked for the rows of the file.
    with pytest.raises(InputError, match=r"holds statistics only; .* python -c"):
        fidkit.compute_features(str(path))


def test_an_interval_for_sfid_against_statistics_is_refused_naming_the_fix(reference):
    path, _, _ = reference
    with pytest.raises(InputError) as refused:
        evaluate(stand_in(9, 30), Stats.load(path), "sfid", ci=IntervalSpec(n_resamples=10))
    message = str(refused.value)
    assert message.startswith("an interval for sFID needs the spatial features (sFID's) of side b (the reference): "
                              "the bootstrap resamples images")
    assert "give sFID's value only" in message and "or drop the interval (--ci, ci=)" in message
    assert "python -c" in message


def test_statistics_without_mu_s_still_refuse_sfid(reference, tmp_path):
    path, rows, pictures = reference
    ttur = adm_batch(tmp_path / "ttur.npz", rows.rows, None)
    with pytest.raises(InputError, match=r"statistics only \(mu and sigma \(.*ttur\.npz\)\).* or an ADM reference "
                                         r"batch \(it holds them as mu_s and sigma_s\)$"):
        evaluate(stand_in(10, 20), Stats.load(ttur), "sfid")
    with_images = adm_batch(tmp_path / "images.npz", rows.rows, None, pictures)
    batch = Stats.load(with_images)
    assert batch.spatial is None and batch.contents == "mu and sigma, 3 images of 8x8x3 uint8 in arr_0"
    with pytest.raises(InputError, match=r"sFID needs .* python -c"):
        evaluate(stand_in(10, 20), batch, "sfid")


# --- 2. the warning and the side's description say what the file holds ----------------------------------------------


def test_the_report_says_the_file_is_an_adm_reference_batch(reference, tmp_path):
    path, _, _ = reference
    with pytest.warns(FidkitWarning) as caught:
        report = fidkit.compute_fid(stand_in(11, 30), str(path), metrics="fid,sfid")
    messages = [str(warning.message) for warning in caught]
    adm = [message for message in messages if str(path) in message]
    assert len(adm) == 1, messages
    assert adm[0].startswith(
        f"side b ({path}) is a statistics file (ADM reference batch: pool_3 and spatial statistics (mu, sigma, mu_s, "
        "sigma_s), 3 images of 8x8x3 uint8 in arr_0): its N is unknown"
    )
    assert "only mu and sigma" not in adm[0] and "TTUR's and ADM's evaluator's --convention tf" in adm[0]
    assert report.b.contents.startswith("ADM reference batch")
    assert report.to_dict()["b"]["contents"] == report.b.contents
    assert str(report.b) == f"{path} (N unknown, {report.b.contents})"
    # A TTUR file is described as before.
    ttur = tmp_path / "ttur.npz"
    np.savez(ttur, mu=Stats.load(path).mu, sigma=Stats.load(path).sigma)
    with pytest.warns(FidkitWarning, match=r"is a statistics file with only mu and sigma \(TTUR / pytorch-fid\)"):
        report = fidkit.compute_fid(stand_in(11, 30), str(ttur))
    assert report.b.contents is None


def test_info_shows_the_spatial_statistics_and_the_images(reference, capsys):
    path, rows, _ = reference
    batch = Stats.load(path)
    status, out, _ = _run(["info", str(path)], capsys)
    assert status == 0
    lines = out.splitlines()
    assert lines[1] == "origin:        ADM reference batch (pool_3 and spatial statistics)"
    assert lines[6] == (
        f"spatial:       dim 5, trace(sigma_s) {batch.spatial.trace:.6g}, |mu_s| "
        f"{np.linalg.norm(batch.spatial.mu):.6g} (mu_s and sigma_s: the statistics sFID is computed against)"
    )
    assert lines[7] == (
        "images:        3 images of 8x8x3 uint8 in arr_0 (ADM's evaluator computes precision and recall on them)"
    )
    status, out, _ = _run(["info", str(path), "--json"], capsys)
    info = json.loads(out)
    assert info["spatial"]["dim"] == 5 and info["spatial"]["trace_sigma"] == pytest.approx(batch.spatial.trace)
    assert info["images"] == {"key": "arr_0", "shape": [3, 8, 8, 3], "dtype": "uint8"}


# --- 3. the conventions: ADM's spatial features are fidkit's, and the file is not assumed to be any convention ------


def test_the_spatial_output_is_adm_s_mixed_6_conv_first_7_channels_flattened_nhwc(random_weights_path):
    import torch

    from fidkit.inception.network import build_network
    from fidkit.inception.weights import load_state_dict

    network = build_network(load_state_dict(random_weights_path))
    seen = {}
    network.Mixed_6d.branch1x1.register_forward_hook(lambda module, args, out: seen.setdefault("conv", out))
    x = torch.rand(1, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        spatial = network.outputs(x, ("spatial",))["spatial"]
    # ADM: spatial = mixed_6/conv[..., :7] (NHWC), then reshape([N, -1]).
    nhwc = seen["conv"].permute(0, 2, 3, 1)
    assert nhwc.shape == (1, 17, 17, 192)
    assert torch.equal(spatial, nhwc[..., :7].reshape(1, -1)) and spatial.shape == (1, 2023)
    assert not torch.equal(spatial, seen["conv"][:, :7].reshape(1, -1))  # channels first would be another order


def test_a_reference_batch_is_checked_against_no_convention_like_a_ttur_file(reference):
    path, _, _ = reference
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Nothing recorded: not refused under any convention (as a TTUR file), only warned about, naming ADM's.
        report = fidkit.compute_fid(stand_in(12, 30), str(path), convention="pytorch-fid")
    assert report.b.convention is None and report.b.foreign
    assert any("its convention (resize and normalization) is unknown too" in str(warning.message)
               and "ADM's evaluator's --convention tf" in str(warning.message) for warning in caught)


def test_adm_s_layout_end_to_end_images_against_a_reference_batch(tmp_path, capsys, extractor, random_weights_path):
    """The review's case: ADM's sample batch (images in arr_0) against its reference batch, --metrics fid,sfid."""
    from fidkit.testing import replaced_extractor

    names = ("features", "spatial")
    real, generated = images(5, 1, 20), images(5, 2, 20)
    real_out, generated_out = extractor.outputs(real, names), extractor.outputs(generated, names)
    ref = adm_batch(tmp_path / "ref.npz", real_out["features"], real_out["spatial"], real)
    np.savez(tmp_path / "sample.npz", generated)  # arr_0, as ADM's sample batches
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected_sfid = fid_from_arrays(generated_out["spatial"], real_out["spatial"]).value
        expected_fid = fid_from_arrays(generated_out["features"], real_out["features"]).value
    args = ["--workers", "0", "--quiet", "--device", "cpu", "--weights", str(random_weights_path), "--no-cache"]
    with replaced_extractor(lambda options: extractor):
        status, out, err = _run(["compute", str(tmp_path / "sample.npz"), str(ref), "--metrics", "fid,sfid", "--json",
                                 *args], capsys)
    assert status == 0, err
    report = json.loads(out)
    assert report["metrics"]["entries"]["sfid"]["value"] == pytest.approx(expected_sfid, rel=1e-6)
    assert report["metrics"]["entries"]["fid"]["value"] == pytest.approx(expected_fid, rel=1e-6)
    assert any("(ADM reference batch: pool_3 and spatial statistics" in warning for warning in report["warnings"])
    # The training-loop metric takes the file as its reference for sFID too.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = fidkit.FID(reference=str(ref), extractor=extractor, metrics="sfid", workers=0, use_cache=False)
        metric.update(generated)
        table = metric.compute().metrics
    assert table["sfid"].value == pytest.approx(expected_sfid, rel=1e-6)
