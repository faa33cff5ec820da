"""fidkit.commands: each handler called with the Namespace the real parser makes, its stdout and its status.

Statistics files need no network; where one runs, the registry serves the session's CPU extractor on random
weights (``replaced_extractor``), and the list it yields says whether (and with what options) one was built.
``_run_options`` is tested in tests/test_options.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fidkit import commands
from fidkit.cli import build_parser
from fidkit.errors import FidkitWarning, InputError, OverwriteError
from fidkit.features import Features
from fidkit.frechet import fid_from_stats
from fidkit.stats import Stats
from fidkit.testing import replaced_extractor

N_IMAGES = 2  # Inception costs the same per image whatever its size (~0.1-1 s here): keep the count small


def parse(*argv: str):
    """The Namespace ``fidkit <argv>`` gives its handler."""
    return build_parser(argv[0]).parse_args(list(argv))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    args = parse(*argv)
    status = args.func(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def small_stats(seed: int = 0, *, n: int = 20, dim: int = 4, **metadata) -> Stats:
    features = np.random.default_rng(seed).normal(loc=seed, size=(n, dim))
    return Stats.from_features(features, metadata=metadata)


def refuse_to_build(options):
    raise AssertionError("no network should be built here")


@pytest.fixture(autouse=True)
def _own_cache(fidkit_home):
    return fidkit_home


@pytest.fixture
def images_npy(tmp_path) -> Path:
    path = tmp_path / "images.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, size=(N_IMAGES, 12, 12, 3), dtype=np.uint8))
    return path


# --- stats and features ------------------------------------------------------------------------------------


def test_stats_without_a_source_is_a_usage_error_listing_the_dataset_names(capsys):
    from fidkit.sources.named import dataset_names

    status, out, err = run(capsys, "stats")
    assert status == commands.EXIT_USAGE == 2
    assert out == ""
    assert err.startswith("fidkit stats: error: no source given")
    assert all(name in err for name in dataset_names())


def test_stats_saves_without_the_cache_key_and_a_second_run_is_a_cache_hit(
    capsys, tmp_path, images_npy, extractor, random_weights_path
):
    out_path = tmp_path / "out" / "real.npz"
    network = ["--weights", str(random_weights_path), "--device", "cpu", "--batch-size", "1", "-q"]
    with replaced_extractor(lambda options: extractor) as built:
        status, out, _ = run(capsys, "stats", str(images_npy), "--save", str(out_path), "--json", *network)
        assert status == commands.EXIT_OK and len(built) == 1
        assert (built[0].device, built[0].batch_size, built[0].progress) == ("cpu", 1, False)
        summary = json.loads(out)
        assert summary["n"] == N_IMAGES and summary["dim"] == 2048 and summary["kind"] == "array"
        assert summary["cached"] is False and summary["batch_size"] == 1
        assert summary["saved"] == str(out_path) and summary["source"] == str(images_npy)
        assert summary["n_skipped"] == 0 and summary["ignored"] == {} and summary["lossy"] is False
        saved = Stats.load(out_path)
        assert saved.n == N_IMAGES and "cache_key" not in saved.metadata  # a saved file is not a cache entry
        assert saved.metadata["weights_sha256"] == extractor.weights_sha256

        # The same source again: from the cache, nothing built; the text form says so.
        status, out, _ = run(capsys, "stats", str(images_npy), *network)
        assert status == 0 and len(built) == 1
        assert out == f"computed (not saved; use --save): N={N_IMAGES}, dim=2048, from array {images_npy}, cached\n"

        # An existing --save file is refused before anything is computed, and replaced with --force.
        np.save(tmp_path / "other.npy", np.zeros((N_IMAGES, 8, 8, 3), np.uint8))
        with pytest.raises(OverwriteError, match="already exists; pass --force"):
            run(capsys, "stats", str(tmp_path / "other.npy"), "--save", str(out_path), *network)
        assert len(built) == 1
        status, out, _ = run(capsys, "stats", str(images_npy), "--save", str(out_path), "--force", *network)
        assert status == 0 and out.startswith(f"saved {out_path}: N={N_IMAGES}, dim=2048, from array")


def test_a_save_path_that_is_a_folder_is_refused_even_with_force(capsys, tmp_path, images_npy):
    folder = tmp_path / "folder.npz"
    folder.mkdir()
    with replaced_extractor(refuse_to_build):
        for command in ("stats", "features"):
            with pytest.raises(OverwriteError):
                run(capsys, command, str(images_npy), "--save", str(folder), "--force", "--device", "cpu")


def test_features_saves_the_rows_in_source_order(capsys, tmp_path, images_npy, extractor, random_weights_path):
    out_path = tmp_path / "rows.npz"
    with replaced_extractor(lambda options: extractor):
        status, out, _ = run(
            capsys, "features", str(images_npy), "--save", str(out_path), "--json", "--weights",
            str(random_weights_path), "--device", "cpu", "-q",
        )
    assert status == 0
    summary = json.loads(out)
    assert (summary["n"], summary["dim"], summary["saved"], summary["cached"]) == (N_IMAGES, 2048, str(out_path), False)
    saved = Features.load(out_path)
    assert saved.rows.shape == (N_IMAGES, 2048) and "cache_key" not in saved.metadata
    first = extractor(np.load(images_npy)[:1])[0]  # the first row is the first image's
    np.testing.assert_allclose(saved.rows[0], first, rtol=0, atol=1e-6 * float(np.abs(first).max()))
    assert not np.allclose(saved.rows[1], first)


# --- compute -------------------------------------------------------------------------------------------------


def test_compute_on_two_statistics_files_prints_the_fid_without_a_network(capsys, tmp_path):
    meta = dict(weights_sha256="a" * 64, resize_mode="tf1-bilinear-asymmetric")
    a, b = small_stats(1, **meta), small_stats(2, **meta)
    a.save(tmp_path / "a.npz")
    b.save(tmp_path / "b.npz")
    expected = fid_from_stats(a, b).value
    with replaced_extractor(refuse_to_build) as built:
        status, out, _ = run(capsys, "compute", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "-q")
        assert status == 0 and out == f"FID: {expected:.4f}\n"
        status, out, _ = run(capsys, "compute", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--json", "-q")
    assert status == 0 and built == []
    report = json.loads(out)
    assert report["fid"] == pytest.approx(expected, rel=1e-12)
    assert (report["a"]["n"], report["b"]["n"], report["weights_sha256"]) == (20, 20, "a" * 64)


def test_compute_refuses_different_weights_unless_allowed(capsys, tmp_path):
    small_stats(1, weights_sha256="a" * 64).save(tmp_path / "a.npz")
    small_stats(2, weights_sha256="b" * 64).save(tmp_path / "b.npz")
    sources = (str(tmp_path / "a.npz"), str(tmp_path / "b.npz"))
    with pytest.raises(InputError, match="different Inception weights"):
        run(capsys, "compute", *sources, "-q")
    with pytest.warns(FidkitWarning, match="different Inception weights"):
        status, out, _ = run(capsys, "compute", *sources, "--allow-weights-mismatch", "--json", "-q")
    assert status == 0
    assert any("different Inception weights" in message for message in json.loads(out)["warnings"])


# --- info ----------------------------------------------------------------------------------------------------


def test_info_shows_a_fidkit_file(capsys, tmp_path):
    from fidkit import __version__

    stats = small_stats(3, n=30, dim=5, fidkit_version=__version__, source_name="real/")
    stats.save(tmp_path / "real.npz")
    status, out, _ = run(capsys, "info", str(tmp_path / "real.npz"))
    assert status == 0
    lines = out.splitlines()
    assert lines[:6] == [
        f"file:          {tmp_path / 'real.npz'}",
        f"origin:        fidkit {__version__}",
        "N:             30",
        "dim:           5",
        f"trace(sigma):  {np.trace(stats.sigma):.6g}",
        f"|mu|:          {np.linalg.norm(stats.mu):.6g}",
    ]
    assert lines[6] == "metadata:" and "  source_name     real/" in lines

    status, out, _ = run(capsys, "info", str(tmp_path / "real.npz"), "--json")
    info = json.loads(out)
    assert (status, info["n"], info["dim"], info["foreign"]) == (0, 30, 5, False)
    assert info["trace_sigma"] == pytest.approx(np.trace(stats.sigma), rel=1e-12)
    assert info["mu_norm"] == pytest.approx(np.linalg.norm(stats.mu), rel=1e-12)
    assert info["metadata"]["source_name"] == "real/"


def test_info_names_a_ttur_file_and_its_unknown_n(capsys, tmp_path):
    stats = small_stats(4, dim=3)
    np.savez(tmp_path / "ttur.npz", mu=stats.mu, sigma=stats.sigma)
    status, out, _ = run(capsys, "info", str(tmp_path / "ttur.npz"))
    assert status == 0
    assert "origin:        TTUR / pytorch-fid (mu and sigma only)\n" in out
    assert "N:             unknown (not recorded)\n" in out
    info = json.loads(run(capsys, "info", str(tmp_path / "ttur.npz"), "--json")[1])
    assert info["foreign"] is True and info["n"] is None and info["origin"].startswith("TTUR")


# --- cache list / clear --------------------------------------------------------------------------------------


def test_cache_list_empty_then_with_entries(capsys, monkeypatch, fidkit_home):
    from fidkit.cache import list_cache, store_cached_stats

    status, out, _ = run(capsys, "cache", "list")
    assert status == 0
    assert out == f"no cached statistics in {fidkit_home / 'stats'} (limit 2.0 GiB, FIDKIT_CACHE_MAX_BYTES)\n"

    store_cached_stats("a" * 64, small_stats(1, n=12), source_name="real/", source_kind="folder")
    store_cached_stats("b" * 64, small_stats(2, n=34), source_name="fake.zip", source_kind="archive")
    monkeypatch.setenv("FIDKIT_CACHE_MAX_BYTES", "unlimited")
    status, out, _ = run(capsys, "cache", "list")
    lines = out.splitlines()
    assert status == 0 and lines[0].split() == ["key", "N", "size", "created", "(UTC)", "source"]
    rows = {line.split()[0]: line for line in lines[1:3]}
    assert set(rows) == {"a" * 12, "b" * 12}
    assert rows["a" * 12].split()[1] == "12" and rows["a" * 12].endswith("real/ (folder)")
    assert rows["b" * 12].split()[1] == "34" and rows["b" * 12].endswith("fake.zip (archive)")
    assert lines[3].startswith("2 entries, ")
    assert lines[3].endswith(f"in {fidkit_home / 'stats'} (no limit, FIDKIT_CACHE_MAX_BYTES)")

    monkeypatch.setenv("FIDKIT_CACHE_MAX_BYTES", "500M")
    listing = json.loads(run(capsys, "cache", "list", "--json")[1])
    assert listing["folder"] == str(fidkit_home / "stats") and listing["max_bytes"] == 500 * 1024**2
    assert sorted(entry["key"] for entry in listing["entries"]) == ["a" * 64, "b" * 64]
    assert listing["total_bytes"] == sum(entry.size_bytes for entry in list_cache())


def test_cache_clear_says_what_it_removed_and_names_what_it_kept(capsys, fidkit_home):
    from fidkit.cache import store_cached_stats

    store_cached_stats("a" * 64, small_stats(1), source_name="real/", source_kind="folder")
    stats_folder = fidkit_home / "stats"
    user_files = [stats_folder / f"mine-{index:02d}.npz" for index in range(23)]
    for path in user_files:
        path.write_bytes(b"mine")
    graph = fidkit_home / "onnx" / "0123456789abcdef-1.onnx"
    graph.parent.mkdir()
    graph.write_bytes(b"g" * 2048)

    status, out, _ = run(capsys, "cache", "clear")
    lines = out.splitlines()
    assert status == 0
    assert lines[0].startswith("removed 1 cached statistics entries (") and lines[0].endswith(f") from {fidkit_home}")
    # Twenty kept files named with the reason, then a count of the rest.
    assert lines[1:21] == [f"kept {path}: not a statistics cache entry" for path in user_files[:20]]
    assert lines[21:] == ["kept 3 more file(s) fidkit did not write"]
    assert graph.exists()

    for path in user_files:
        path.unlink()
    status, out, _ = run(capsys, "cache", "clear", "--all")
    assert status == 0 and not graph.exists()
    assert out == (
        "removed 0 cached statistics entries, 1 file(s) from onnx/, 0 file(s) from weights/, 0 file(s) from "
        f"datasets/ (2.0 KiB) from {fidkit_home}\n"
    )


def test_sizes_are_shown_in_binary_units():
    assert [commands._human_bytes(n) for n in (0, 1023, 1024, 1536, 5 * 1024**2, 3 * 1024**3, 2048 * 1024**3)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "5.0 MiB", "3.0 GiB", "2048.0 GiB"
    ]


# --- datasets ------------------------------------------------------------------------------------------------


def test_datasets_lists_every_name_and_where_a_present_file_is(capsys, monkeypatch, tmp_path, fidkit_home):
    from fidkit.sources.named import DATASETS

    monkeypatch.delenv("FIDKIT_DATASETS", raising=False)
    monkeypatch.delenv("FIDKIT_MIRROR", raising=False)
    status, out, _ = run(capsys, "datasets")
    assert status == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:1 + len(DATASETS)]}
    assert set(rows) == set(DATASETS)
    assert all(line.endswith("no (downloaded on first use)") for line in rows.values())
    assert out.splitlines()[-1] == (
        f"cache: {fidkit_home / 'datasets'}; FIDKIT_DATASETS: not set; FIDKIT_MIRROR: not set"
    )

    # A file of the published size in $FIDKIT_DATASETS counts as here (its md5 is checked on use); a sparse
    # file keeps this cheap.
    mnist = DATASETS["mnist-test"].file
    folder = tmp_path / "archives"
    folder.mkdir()
    with open(folder / mnist.file_name, "wb") as handle:
        handle.truncate(mnist.size)
    monkeypatch.setenv("FIDKIT_DATASETS", str(folder))
    monkeypatch.setenv("FIDKIT_MIRROR", "https://mirror.example/fidkit")
    status, out, _ = run(capsys, "datasets")
    rows = {line.split()[0]: line for line in out.splitlines()[1:1 + len(DATASETS)]}
    assert rows["mnist-test"].endswith(f"yes (FIDKIT_DATASETS: {folder / mnist.file_name})")
    assert rows["mnist-train"].endswith("no (downloaded on first use)")
    assert f"  {mnist.file_name:<27} https://mirror.example/fidkit/{mnist.file_name} (md5 {mnist.md5})" in out

    listing = json.loads(run(capsys, "datasets", "--json")[1])
    assert (listing["datasets_folder"], listing["mirror"]) == (str(folder), "https://mirror.example/fidkit")
    entries = {entry["name"]: entry for entry in listing["datasets"]}
    assert entries["mnist-test"]["cached"] is True and entries["mnist-test"]["location"] == "FIDKIT_DATASETS"
    assert entries["cifar10-train"]["cached"] is False and entries["cifar10-train"]["path"] is None
