"""Named datasets (cifar10-train, mnist-test, ...): download from a local server, checksum, cache, reading in
place, FIDKIT_MIRROR, FIDKIT_DATASETS, the offline error, and `fidkit datasets`.

The archives served are small synthetic ones in the real formats (CIFAR python pickles in a .tar.gz with the
real member layout, gzipped MNIST idx3); the registry's URLs and checksums are replaced for each test.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import json
import pickle
import socket
import struct
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from fidkit.cli import main
from fidkit.errors import DownloadError, SourceError
from fidkit.sources import named, open_source
from fidkit.sources.named import DatasetFile
from fidkit.testing import cifar_batch, tar_gz, tar_of

from cli_runs import _assert_one_line_error, _run_cli

# --- synthetic files in the real formats ---------------------------------------------------------------

RNG = np.random.default_rng(13)
CIFAR10_TRAIN = [RNG.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8) for _ in range(5)]  # data_batch_1..5
CIFAR10_TEST = RNG.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
CIFAR100_TRAIN = RNG.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
CIFAR100_TEST = RNG.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
MNIST_TRAIN = RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8)
MNIST_TEST = RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8)


def _idx3_gz(images: np.ndarray) -> bytes:
    return gzip.compress(struct.pack(">IIII", 0x00000803, *images.shape) + images.tobytes(), mtime=0)


CIFAR10_ARCHIVE = tar_gz(
    {
        **{
            f"cifar-10-batches-py/data_batch_{i + 1}": cifar_batch(batch, labels=[0] * len(batch))
            for i, batch in enumerate(CIFAR10_TRAIN)
        },
        "cifar-10-batches-py/test_batch": cifar_batch(CIFAR10_TEST, labels=[1] * len(CIFAR10_TEST)),
        "cifar-10-batches-py/batches.meta": pickle.dumps({"label_names": ["a"] * 10}, protocol=2),
        "cifar-10-batches-py/readme.html": b"<html></html>",
    }
)
CIFAR100_ARCHIVE = tar_gz(
    {
        "cifar-100-python/file.txt~": b"",
        "cifar-100-python/meta": pickle.dumps({"fine_label_names": ["a"] * 100}, protocol=2),
        "cifar-100-python/test": cifar_batch(CIFAR100_TEST, fine_labels=[0, 1]),
        "cifar-100-python/train": cifar_batch(CIFAR100_TRAIN, fine_labels=list(range(6))),
    }
)
FILES = {
    "cifar-10-python.tar.gz": CIFAR10_ARCHIVE,
    "cifar-100-python.tar.gz": CIFAR100_ARCHIVE,
    "train-images-idx3-ubyte.gz": _idx3_gz(MNIST_TRAIN),
    "t10k-images-idx3-ubyte.gz": _idx3_gz(MNIST_TEST),
}
EXPECTED = {
    "cifar10-train": np.concatenate(CIFAR10_TRAIN),
    "cifar10-test": CIFAR10_TEST,
    "cifar100-train": CIFAR100_TRAIN,
    "cifar100-test": CIFAR100_TEST,
    "mnist-train": np.repeat(MNIST_TRAIN[..., None], 3, axis=3),
    "mnist-test": np.repeat(MNIST_TEST[..., None], 3, axis=3),
}


# --- a local file server ---------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, bytes] = {}
    cut: set[str] = set()  # paths whose body stops half way (the server closes the connection)
    hits: list[str] = []
    delay_s = 0.0

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.hits.append(self.path)
        body = self.routes.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.delay_s:
            time.sleep(self.delay_s)
        self.wfile.write(body[: len(body) // 2] if self.path in self.cut else body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """An HTTP/1.0 server on 127.0.0.1 (one request per connection), stopped at the end of the module."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _fresh(server, fidkit_home, monkeypatch) -> None:
    """Each test: an empty cache home, no FIDKIT_DATASETS / FIDKIT_MIRROR, the server's routes reset."""
    monkeypatch.delenv("FIDKIT_DATASETS", raising=False)
    monkeypatch.delenv("FIDKIT_MIRROR", raising=False)
    _Handler.routes = {f"/kriz/{name}": data for name, data in FILES.items()}
    _Handler.cut = set()
    _Handler.hits = []
    _Handler.delay_s = 0.0


def _closed_port_base() -> str:
    """A base URL where nothing listens: connection refused, as offline."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _point_registry(monkeypatch, base: str, *, md5_of: dict[str, bytes] | None = None) -> None:
    """Make every registered dataset fetch its synthetic file from `base`/kriz/<file name>."""
    md5_of = md5_of or FILES
    for name, dataset in list(named.DATASETS.items()):
        file_name = dataset.file.file_name
        data = md5_of[file_name]
        file = DatasetFile(file_name, (f"{base}/kriz/{file_name}",), hashlib.md5(data).hexdigest(), len(data))
        monkeypatch.setitem(
            named.DATASETS, name, dataclasses.replace(dataset, file=file, n_images=len(EXPECTED[name]))
        )


@pytest.fixture
def registry(server, monkeypatch) -> str:
    _point_registry(monkeypatch, server)
    return server


def _pixels(spec, batch_size: int = 4, **options) -> np.ndarray:
    return np.concatenate(list(open_source(spec, **options).batches(batch_size)))


# --- the registry ----------------------------------------------------------------------------------------


def test_the_registry_has_the_published_files() -> None:
    assert named.dataset_names() == (
        "cifar10-train", "cifar10-test", "cifar100-train", "cifar100-test", "mnist-train", "mnist-test",
    )
    cifar10 = named.get_dataset("cifar10-train").file
    assert cifar10.urls == ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)
    assert (cifar10.md5, cifar10.size) == ("c58f30108f718f92721af3b95e74349a", 170_498_071)
    assert named.get_dataset("cifar10-test").file == cifar10
    assert named.get_dataset("cifar100-test").file.md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    mnist = named.get_dataset("mnist-train").file
    assert mnist.urls == (
        "http://yann.lecun.com/exdb/mnist/train-images-idx3-ubyte.gz",
        "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
    )
    assert mnist.md5 == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert named.get_dataset("mnist-test").file.md5 == "9fb629c4189551a2d022fa330f9573f3"
    assert [named.get_dataset(name).n_images for name in named.dataset_names()] == [
        50_000, 10_000, 50_000, 10_000, 60_000, 10_000,
    ]


# --- download, checksum, cache, pixels ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(EXPECTED))
def test_download_then_pixels_equal_the_array(name, registry, fidkit_home) -> None:
    source = open_source(name)
    assert source.name == name and source.kind == name.split("-")[0].rstrip("0123456789")
    assert source.n_images == len(EXPECTED[name])
    pixels = _pixels(name)
    np.testing.assert_array_equal(pixels, EXPECTED[name])
    # The same images given as an array come out the same, subsets included.
    np.testing.assert_array_equal(pixels, _pixels(EXPECTED[name]))
    np.testing.assert_array_equal(_pixels(name, limit=2, seed=1), _pixels(EXPECTED[name], limit=2, seed=1))
    file_name = named.get_dataset(name).file.file_name
    assert sorted(p.name for p in (fidkit_home / "datasets").iterdir()) == [file_name, "verified.json"]
    assert (fidkit_home / "datasets" / file_name).read_bytes() == FILES[file_name]


def test_second_use_reads_the_cache_and_the_splits_share_the_file(registry, fidkit_home) -> None:
    np.testing.assert_array_equal(_pixels("cifar10-train"), EXPECTED["cifar10-train"])
    assert _Handler.hits == ["/kriz/cifar-10-python.tar.gz"]
    np.testing.assert_array_equal(_pixels("cifar10-test"), EXPECTED["cifar10-test"])
    np.testing.assert_array_equal(_pixels("cifar10-train"), EXPECTED["cifar10-train"])
    assert _Handler.hits == ["/kriz/cifar-10-python.tar.gz"]  # one download for both splits, then the cache


def test_two_downloads_at_once_fetch_the_file_once(registry, fidkit_home) -> None:
    _Handler.delay_s = 0.3  # the first download is still running when the second starts
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(_pixels("mnist-test"))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 2
    for pixels in results:
        np.testing.assert_array_equal(pixels, EXPECTED["mnist-test"])
    assert _Handler.hits == ["/kriz/t10k-images-idx3-ubyte.gz"]
    kept = sorted(p.name for p in (fidkit_home / "datasets").iterdir())
    assert kept == ["t10k-images-idx3-ubyte.gz", "verified.json"]


def test_wrong_file_is_refused_and_nothing_kept(server, monkeypatch, fidkit_home) -> None:
    _point_registry(monkeypatch, server)
    served = FILES["t10k-images-idx3-ubyte.gz"]
    _Handler.routes["/kriz/t10k-images-idx3-ubyte.gz"] = served[:-1] + bytes([served[-1] ^ 1])
    expected_md5 = named.get_dataset("mnist-test").file.md5
    with pytest.raises(DownloadError) as raised:
        open_source("mnist-test")
    message = str(raised.value)
    wrong_md5 = hashlib.md5(_Handler.routes["/kriz/t10k-images-idx3-ubyte.gz"]).hexdigest()
    assert expected_md5 in message and wrong_md5 in message and "refused and deleted" in message
    folder = fidkit_home / "datasets"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_interrupted_download_leaves_nothing_that_looks_complete(registry, fidkit_home) -> None:
    _Handler.cut = {"/kriz/cifar-100-python.tar.gz"}
    with pytest.raises(DownloadError, match="closed after"):
        open_source("cifar100-test")
    folder = fidkit_home / "datasets"
    assert not folder.exists() or list(folder.iterdir()) == []
    # The next try downloads it whole.
    _Handler.cut = set()
    np.testing.assert_array_equal(_pixels("cifar100-test"), EXPECTED["cifar100-test"])


def test_a_damaged_cached_file_is_refused(registry, fidkit_home) -> None:
    _pixels("mnist-test")
    cached = fidkit_home / "datasets" / "t10k-images-idx3-ubyte.gz"
    cached.write_bytes(b"x" * cached.stat().st_size)  # same size, new mtime: the md5 is checked again
    with pytest.raises(SourceError, match="delete it to download it again"):
        open_source("mnist-test")


# --- FIDKIT_MIRROR, FIDKIT_DATASETS, paths -----------------------------------------------------------------


def test_fidkit_mirror_redirects_every_download(server, monkeypatch, fidkit_home) -> None:
    _point_registry(monkeypatch, _closed_port_base())  # the canonical host is unreachable
    _Handler.routes = {f"/mirror/files/{name}": data for name, data in FILES.items()}
    monkeypatch.setenv("FIDKIT_MIRROR", f"{server}/mirror/files/")
    np.testing.assert_array_equal(_pixels("mnist-train"), EXPECTED["mnist-train"])
    assert _Handler.hits == ["/mirror/files/train-images-idx3-ubyte.gz"]
    # The weights too, and the checksum still applies.
    from fidkit.errors import WeightsError
    from fidkit.inception.weights import WeightsManifest, locate_weights

    payload = b"weights" * 1000
    _Handler.routes["/mirror/files/w.pth"] = payload
    manifest = WeightsManifest(
        name="net", file_name="w.pth", size=len(payload), sha256=hashlib.sha256(payload).hexdigest(),
        urls=(f"{_closed_port_base()}/release/w.pth",), licence="MIT",
    )
    assert locate_weights(manifest=manifest, progress=False).path.read_bytes() == payload
    wrong = dataclasses.replace(manifest, file_name="v.pth", urls=("https://example.invalid/w.pth",), sha256="0" * 64)
    with pytest.raises(WeightsError, match="FIDKIT_MIRROR.*refused and deleted"):
        locate_weights(manifest=wrong, progress=False)


def test_fidkit_datasets_folder_is_used_first_and_checked(registry, monkeypatch, tmp_path, fidkit_home) -> None:
    folder = tmp_path / "archives"
    folder.mkdir()
    (folder / "cifar-100-python.tar.gz").write_bytes(CIFAR100_ARCHIVE)
    monkeypatch.setenv("FIDKIT_DATASETS", str(folder))
    np.testing.assert_array_equal(_pixels("cifar100-train"), EXPECTED["cifar100-train"])
    np.testing.assert_array_equal(_pixels("cifar100-test"), EXPECTED["cifar100-test"])
    assert _Handler.hits == []
    assert not (fidkit_home / "datasets" / "cifar-100-python.tar.gz").exists()
    records = json.loads((fidkit_home / "datasets" / "verified.json").read_text())
    assert str((folder / "cifar-100-python.tar.gz").resolve()) in records
    # A file of another name is not there: downloaded into the cache as usual.
    np.testing.assert_array_equal(_pixels("mnist-test"), EXPECTED["mnist-test"])
    assert _Handler.hits == ["/kriz/t10k-images-idx3-ubyte.gz"]
    # The wrong file is refused, and the user's file is left alone.
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(FILES["train-images-idx3-ubyte.gz"])
    with pytest.raises(SourceError, match="FIDKIT_DATASETS"):
        open_source("mnist-test")
    assert (folder / "t10k-images-idx3-ubyte.gz").exists()


def test_a_local_path_of_that_name_wins(registry, monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "images.npy", EXPECTED["cifar10-test"][:2])
    (tmp_path / "cifar10-test").mkdir()
    from PIL import Image

    Image.fromarray(EXPECTED["cifar10-test"][0]).save(tmp_path / "cifar10-test" / "a.png")
    source = open_source("cifar10-test")
    assert source.kind == "folder" and source.n_images == 1
    assert _Handler.hits == []


def test_the_archive_path_in_place_of_the_name(tmp_path) -> None:
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(CIFAR10_ARCHIVE)
    source = open_source(archive)
    assert source.kind == "cifar" and source.n_images == 15
    np.testing.assert_array_equal(_pixels(archive), EXPECTED["cifar10-train"])
    mnist = tmp_path / "t10k-images-idx3-ubyte.gz"
    mnist.write_bytes(FILES["t10k-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(_pixels(mnist), EXPECTED["mnist-test"])


def test_a_mistyped_name_suggests_the_names(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceError, match="did you mean cifar10-train or cifar10-test"):
        open_source("cifar10")
    with pytest.raises(SourceError, match="no such file or folder.*mnist-train"):
        open_source("samples/")


# --- offline --------------------------------------------------------------------------------------------


def test_offline_error_names_the_url_the_checksum_and_the_ways_to_supply(monkeypatch, fidkit_home) -> None:
    base = _closed_port_base()
    _point_registry(monkeypatch, base)
    dataset = named.get_dataset("cifar10-train")
    with pytest.raises(DownloadError) as raised:
        open_source("cifar10-train")
    message = str(raised.value)
    assert f"{base}/kriz/cifar-10-python.tar.gz" in message
    assert dataset.file.md5 in message and str(dataset.file.size) in message
    assert "in place of the name" in message and "FIDKIT_DATASETS" in message
    assert str(fidkit_home / "datasets" / "cifar-10-python.tar.gz") in message
    # The test split says how to give that split by hand.
    with pytest.raises(DownloadError, match="cifar-10-batches-py/test_batch"):
        open_source("cifar10-test")


def test_offline_on_the_command_line_is_one_line_exit_1(monkeypatch, tmp_path, capsys) -> None:
    _point_registry(monkeypatch, _closed_port_base())
    assert main(["stats", "mnist-test", "--save", str(tmp_path / "m.npz")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fidkit: error:")]
    assert len(errors) == 1 and "t10k-images-idx3-ubyte.gz" in errors[0] and "FIDKIT_DATASETS" in errors[0]
    assert not (tmp_path / "m.npz").exists()


# --- the command line ---------------------------------------------------------------------------------------


def test_fidkit_datasets_lists_names_sizes_counts_sources_and_cache(registry, capsys, fidkit_home) -> None:
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in named.dataset_names():
        assert name in out
    assert "cifar-10-python.tar.gz" in out and f"{registry}/kriz/cifar-10-python.tar.gz" in out
    assert str(fidkit_home / "datasets") in out
    _pixels("mnist-test")
    assert main(["datasets", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    by_name = {entry["name"]: entry for entry in listing["datasets"]}
    assert set(by_name) == set(named.dataset_names())
    assert by_name["mnist-test"]["cached"] is True and by_name["mnist-train"]["cached"] is False
    assert by_name["mnist-test"]["path"] == str(fidkit_home / "datasets" / "t10k-images-idx3-ubyte.gz")
    assert by_name["mnist-test"]["n_images"] == 3
    assert by_name["mnist-test"]["size"] == len(FILES["t10k-images-idx3-ubyte.gz"])
    assert listing["cache"] == str(fidkit_home / "datasets")


def test_fidkit_datasets_lists_blank_folder_and_mirror_variables_as_not_set(registry, capsys, fidkit_home, monkeypatch):
    # The readers take a blank value as unset; the listing said "FIDKIT_DATASETS:  " and "datasets_folder": " ".
    monkeypatch.setenv("FIDKIT_DATASETS", "  ")
    monkeypatch.setenv("FIDKIT_MIRROR", " ")
    assert main(["datasets"]) == 0
    assert "FIDKIT_DATASETS: not set; FIDKIT_MIRROR: not set" in capsys.readouterr().out
    assert main(["datasets", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["datasets_folder"] is None and listing["mirror"] is None


def test_stats_help_and_a_missing_source_name_the_datasets(capsys) -> None:
    assert main(["stats", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in named.dataset_names())
    assert main(["stats", "--save", "x.npz"]) == 2
    err = capsys.readouterr().err
    assert "no source" in err and all(name in err for name in named.dataset_names())


# --- end to end ---------------------------------------------------------------------------------------------


def test_compute_stats_of_a_name_equals_the_array(registry, extractor, monkeypatch) -> None:
    from fidkit.api import compute_stats

    by_name = compute_stats("mnist-test", extractor=extractor, workers=0, use_cache=False)
    by_array = compute_stats(EXPECTED["mnist-test"], extractor=extractor, workers=0, use_cache=False)
    assert by_name.n == by_array.n == 3
    np.testing.assert_array_equal(by_name.mu, by_array.mu)
    np.testing.assert_array_equal(by_name.sigma, by_array.sigma)
    # Cached like any source: the second time the network does not run.
    from fidkit.api import compute_stats_with_report

    compute_stats_with_report("cifar10-test", extractor=extractor, workers=0)

    def no_decompression(*args):
        raise AssertionError("a cache hit decompressed the archive")

    monkeypatch.setattr(named, "load_cifar_tar", no_decompression)
    again, side = compute_stats_with_report("cifar10-test", extractor=extractor, workers=0)
    assert side.cached and again.n == len(EXPECTED["cifar10-test"])


# --- hostile round 3, 1: the splits of one CIFAR archive are different sources --------------------------------------


def _cifar10_archive() -> tuple[bytes, np.ndarray, np.ndarray]:
    train = [RNG.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8) for _ in range(5)]
    test = RNG.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    members = {f"cifar-10-batches-py/data_batch_{i + 1}": cifar_batch(batch) for i, batch in enumerate(train)}
    members["cifar-10-batches-py/test_batch"] = cifar_batch(test)
    return tar_gz(members), np.concatenate(train), test


def _cifar100_archive() -> tuple[bytes, np.ndarray, np.ndarray]:
    train = RNG.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    test = RNG.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    members = {"cifar-100-python/train": cifar_batch(train), "cifar-100-python/test": cifar_batch(test)}
    return tar_gz(members), train, test


@pytest.fixture
def local_cifar(tmp_path, fidkit_home, monkeypatch) -> dict[str, np.ndarray]:
    """Both CIFAR archives in a FIDKIT_DATASETS folder, the registry pointing at their checksums."""
    folder = tmp_path / "datasets"
    folder.mkdir()
    expected: dict[str, np.ndarray] = {}
    for file_name, (data, train, test), prefix in (
        ("cifar-10-python.tar.gz", _cifar10_archive(), "cifar10"),
        ("cifar-100-python.tar.gz", _cifar100_archive(), "cifar100"),
    ):
        (folder / file_name).write_bytes(data)
        file = DatasetFile(file_name, ("http://127.0.0.1:9/unused",), hashlib.md5(data).hexdigest(), len(data))
        for split, images in (("train", train), ("test", test)):
            name = f"{prefix}-{split}"
            dataset = dataclasses.replace(named.DATASETS[name], file=file, n_images=len(images))
            monkeypatch.setitem(named.DATASETS, name, dataset)
            expected[name] = images
    monkeypatch.setenv("FIDKIT_DATASETS", str(folder))
    monkeypatch.delenv("FIDKIT_MIRROR", raising=False)
    return expected


@pytest.mark.parametrize("prefix", ["cifar10", "cifar100"])
@pytest.mark.parametrize("hash_content", [False, True])
def test_the_splits_of_one_cifar_archive_have_different_fingerprints(local_cifar, prefix, hash_content):
    train = open_source(f"{prefix}-train")
    test = open_source(f"{prefix}-test")
    assert train.fingerprint(hash_content=hash_content) != test.fingerprint(hash_content=hash_content)
    # Each is still stable, and reads its own images.
    assert test.fingerprint(hash_content=hash_content) == open_source(f"{prefix}-test").fingerprint(
        hash_content=hash_content
    )
    for source, name in ((train, f"{prefix}-train"), (test, f"{prefix}-test")):
        pixels = np.concatenate(list(source.batches(4)))
        np.testing.assert_array_equal(pixels, local_cifar[name])


def test_the_archive_path_is_its_training_split_and_not_its_test_split(local_cifar, tmp_path):
    archive = tmp_path / "datasets" / "cifar-10-python.tar.gz"
    by_path = open_source(archive)
    fingerprints = {open_source(name).fingerprint() for name in ("cifar10-train", "cifar10-test")}
    assert by_path.fingerprint() != open_source("cifar10-test").fingerprint()
    assert len(fingerprints) == 2


# --- hostile round 3, 17: stats --save never replaces a named dataset's file ----------------------------------------


def test_stats_save_over_a_named_datasets_file_is_refused(local_cifar, tmp_path, capsys):
    archive = tmp_path / "datasets" / "cifar-10-python.tar.gz"
    before = archive.read_bytes()
    status, err = _run_cli(["stats", "cifar10-test", "--save", str(archive), "--force", "--quiet"], capsys)
    _assert_one_line_error(status, err, "the input cifar10-test")
    assert archive.read_bytes() == before


# --- hostile round 3, 22: FIDKIT_DATASETS naming a file -------------------------------------------------------------


def test_fidkit_datasets_naming_a_file_is_an_error(tmp_path, fidkit_home, monkeypatch, capsys):
    file = tmp_path / "cifar-10-python.tar.gz"
    file.write_bytes(b"not a folder")
    monkeypatch.setenv("FIDKIT_DATASETS", str(file))
    with pytest.raises(SourceError, match=r"FIDKIT_DATASETS=.*cifar-10-python\.tar\.gz is a file, not a folder.*"
                                          + str(tmp_path).replace("\\", "\\\\")):
        open_source("cifar10-test")
    status, err = _run_cli(["datasets"], capsys)
    _assert_one_line_error(status, err, "FIDKIT_DATASETS")


# --- hostile round 4: a FIDKIT_DATASETS that cannot be used is an error, not a download; the listing ----------------


def test_a_datasets_folder_that_does_not_exist_is_an_error_not_a_download(monkeypatch, tmp_path, fidkit_home) -> None:
    from fidkit.sources.named import DATASETS, find_dataset_file

    monkeypatch.setenv("FIDKIT_DATASETS", str(tmp_path / "typo"))
    with pytest.raises(SourceError, match="no such folder"):
        find_dataset_file(DATASETS["mnist-test"])


def test_the_listing_says_a_file_of_the_wrong_size_must_go(monkeypatch, tmp_path, fidkit_home, capsys) -> None:
    monkeypatch.delenv("FIDKIT_DATASETS", raising=False)
    folder = fidkit_home / "datasets"
    folder.mkdir(parents=True)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"x" * 1000)
    assert main(["datasets"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("mnist-test"))
    assert "has the wrong size: delete it" in line


def test_the_listing_stops_at_a_datasets_folder_that_does_not_exist(monkeypatch, tmp_path, fidkit_home, capsys) -> None:
    # As for a FIDKIT_DATASETS that names a file (round 3): one line that names the variable, exit 1.
    monkeypatch.setenv("FIDKIT_DATASETS", str(tmp_path / "typo"))
    assert main(["datasets"]) == 1
    error = capsys.readouterr().err.strip()
    assert "FIDKIT_DATASETS=" in error and "no such folder" in error and len(error.splitlines()) == 1


def test_the_listing_does_not_advise_deleting_a_file_in_the_users_folder(monkeypatch, tmp_path, fidkit_home, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"x" * 1000)
    monkeypatch.setenv("FIDKIT_DATASETS", str(folder))
    assert main(["datasets"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("mnist-test"))
    assert "replace it with the published file or unset FIDKIT_DATASETS" in line and "delete" not in line


# --- round 8, 7: a CIFAR archive gunzipped or renamed is still read as one, by the folder it holds ------------------


@pytest.mark.parametrize(
    ("file_name", "archive", "split"),
    [
        ("cifar-10-python.tar", "cifar10", "gunzipped"),
        ("cifar10.tar.gz", "cifar10", "renamed"),
        ("my-cifar.tgz", "cifar10", "renamed"),
        ("cifar-100-python.tar", "cifar100", "gunzipped"),
        ("c100.tar.gz", "cifar100", "renamed"),
        ("cifar10.tar", "cifar10", "gzipped but named .tar"),
    ],
)
def test_a_cifar_archive_gunzipped_or_renamed_reads_its_training_split(tmp_path, file_name, archive, split):
    data = CIFAR10_ARCHIVE if archive == "cifar10" else CIFAR100_ARCHIVE
    path = tmp_path / file_name
    path.write_bytes(gzip.decompress(data) if split == "gunzipped" else data)
    source = open_source(path)
    assert source.kind == "cifar" and source.n_images == len(EXPECTED[f"{archive}-train"])
    np.testing.assert_array_equal(_pixels(path), EXPECTED[f"{archive}-train"])


def test_a_tar_of_images_in_another_folder_is_still_read_as_images(tmp_path):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(CIFAR10_TEST[0]).save(buffer, format="PNG")
    path = tmp_path / "cifar10.tar.gz"
    path.write_bytes(tar_gz({"cifar-10-png/a.png": buffer.getvalue()}))
    source = open_source(path)
    assert source.kind != "cifar" and source.n_images == 1


# --- review of round 8, 1-2: a tar is a CIFAR archive by its batches, not by its folder's name alone -----------------


def _pngs(count: int) -> list[bytes]:
    import io

    from PIL import Image

    out = []
    for image in np.random.default_rng(count).integers(0, 256, (count, 8, 8, 3), dtype=np.uint8):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


@pytest.mark.parametrize(
    ("folder", "count", "file_name", "gz"),
    [
        ("cifar-10-batches-py", 7, "myimages.tar", False),
        ("cifar-100-python", 5, "myimages.tar.gz", True),
        ("./cifar-10-batches-py", 3, "shots.tgz", True),
    ],
)
def test_a_tar_of_images_in_a_cifar_named_folder_is_read_as_images(tmp_path, folder, count, file_name, gz):
    entries: list[tuple[str, bytes | None]] = [(folder, None)]
    entries += [(f"{folder}/img{i:03d}.png", data) for i, data in enumerate(_pngs(count))]
    path = tmp_path / file_name
    path.write_bytes(tar_of(entries, gz=gz))
    source = open_source(path)
    assert source.kind != "cifar" and source.n_images == count


def _cifar10_entries() -> list[tuple[str, bytes | None]]:
    """CIFAR-10's members in the published order (the folder, then data_batch_4 first)."""
    batches = {
        f"data_batch_{i + 1}": cifar_batch(batch, labels=[0] * len(batch)) for i, batch in enumerate(CIFAR10_TRAIN)
    }
    batches["test_batch"] = cifar_batch(CIFAR10_TEST, labels=[1] * len(CIFAR10_TEST))
    order = ["data_batch_4", "test_batch", "data_batch_3", "data_batch_2", "data_batch_5", "data_batch_1"]
    return [("cifar-10-batches-py", None)] + [(f"cifar-10-batches-py/{name}", batches[name]) for name in order]


@pytest.mark.parametrize(
    ("layout", "gz"),
    [
        ("dot", False),  # tar -cf x.tar . inside the folder above: "./", "./cifar-10-batches-py/", ...
        ("dot", True),
        ("readme", False),  # a README beside the folder, first
        ("readme", True),
        ("readme-and-dot", False),
    ],
)
def test_a_cifar_archive_with_dot_members_or_a_readme_first_reads_its_training_split(tmp_path, layout, gz):
    entries = _cifar10_entries()
    if "dot" in layout:
        entries = [("./", None)] + [(f"./{name}", data) for name, data in entries]
    if "readme" in layout:
        entries = [("README.txt", b"CIFAR-10, as downloaded\n" * 50), ("NOTES", b"")] + entries
    path = tmp_path / ("c10.tar.gz" if gz else "c10.tar")
    path.write_bytes(tar_of(entries, gz=gz))
    source = open_source(path)
    assert source.kind == "cifar" and source.n_images == len(EXPECTED["cifar10-train"])
    np.testing.assert_array_equal(_pixels(path), EXPECTED["cifar10-train"])


def test_a_renamed_cifar_archive_missing_a_training_batch_says_which(tmp_path):
    # It holds CIFAR batches, so it is a CIFAR archive: the error names the batches it lacks, not "no images".
    entries = [(name, data) for name, data in _cifar10_entries() if not name.endswith(("_2", "_5"))]
    path = tmp_path / "c10.tar"
    path.write_bytes(tar_of(entries, gz=False))
    with pytest.raises(SourceError, match=r"no member cifar-10-batches-py/data_batch_2, .*/data_batch_5; not a CIFAR"):
        open_source(path)
