"""fidkit.cluster.uri: which strings are URIs, and a prefix listed and read through pyarrow.fs.

``file://`` URIs of a temporary folder go through the same pyarrow code as ``s3://`` and ``gs://`` (pyarrow's
LocalFileSystem), so listing, sorting, subsets and reading are checked for real, without a bucket.
"""

from __future__ import annotations

import dataclasses
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow.fs")

from fidkit.cluster.uri import ArrowReader, is_uri, open_uri  # noqa: E402
from fidkit.errors import EmptySourceError, ImageError, SourceError  # noqa: E402
from fidkit.sources import FileSource, ReadOptions, open_source  # noqa: E402
from image_files import _png  # noqa: E402 (tests/image_files.py)

READ = ReadOptions(workers=0)


@pytest.mark.parametrize(("spec", "expected"), [
    ("s3://bucket/prefix", True),
    ("gs://bucket", True),
    ("hdfs://namenode:8020/data", True),
    ("file:///srv/images", True),
    ("abfs+https://account/container", True),
    ("C://images", False),        # a Windows drive letter, not a scheme
    ("/data/images", False),
    ("images/s3://x", False),     # the scheme must come first
    ("3s://bucket", False),       # a scheme starts with a letter
    ("s3:/bucket", False),
    ("", False),
    (Path("s3://bucket"), False),  # only strings (a Path has already lost the '//')
    (b"s3://bucket", False),
    (None, False),
])
def test_is_uri(spec, expected):
    assert is_uri(spec) is expected


def write_images(folder: Path) -> dict[str, np.ndarray]:
    """PNGs in a folder and a subfolder (names chosen so that sorting by relative path matters), and a note."""
    from PIL import Image

    rng = np.random.default_rng(2)
    names = ["b.png", "a/2.png", "a/10.png", "c/d/e.PNG", "0.png"]
    images = {}
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        images[name] = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
        Image.fromarray(images[name]).save(path, format="PNG")
    (folder / "notes.txt").write_text("not an image")
    return images


@pytest.fixture
def folder(tmp_path) -> Path:
    write_images(tmp_path / "bucket" / "prefix")
    return tmp_path / "bucket" / "prefix"


def test_a_prefix_is_listed_recursively_sorted_like_the_same_local_folder(folder):
    uri = folder.as_uri()
    source = open_uri(uri, READ)
    local = open_source(folder, workers=0)
    assert isinstance(source, FileSource)
    assert (source.kind, source.name, source.n_images, source.n_available) == ("folder", uri, 5, 5)
    assert source.members == ["0.png", "a/10.png", "a/2.png", "b.png", "c/d/e.PNG"]
    assert source.members == local.members
    # The same pixels, batch for batch.
    for from_uri, from_folder in zip(source.batches(2), local.batches(2), strict=True):
        np.testing.assert_array_equal(from_uri, from_folder)


def test_a_trailing_slash_names_the_same_prefix(folder):
    assert open_uri(folder.as_uri() + "/", READ).members == open_uri(folder.as_uri(), READ).members


def test_limit_and_seed_choose_the_same_subset_as_for_a_local_folder(folder):
    for limit, seed in ((2, None), (3, 0), (3, 7)):
        source = open_uri(folder.as_uri(), dataclasses.replace(READ, limit=limit, seed=seed))
        local = open_source(folder, limit=limit, seed=seed, workers=0)
        assert source.members == local.members and len(source.members) == limit
        assert (source.limit, source.seed, source.n_available) == (local.limit, local.seed, 5)


def test_the_fingerprint_follows_the_objects_sizes(folder):
    before = open_uri(folder.as_uri(), READ).fingerprint()
    assert open_uri(folder.as_uri(), READ).fingerprint() == before
    (folder / "b.png").write_bytes((folder / "b.png").read_bytes() + b"\0")
    assert open_uri(folder.as_uri(), READ).fingerprint() != before


def test_bad_objects_are_skipped_and_named_like_bad_files(folder):
    (folder / "a" / "broken.png").write_bytes(b"not a png")
    source = open_uri(folder.as_uri(), dataclasses.replace(READ, skip_bad=True))
    n_read = sum(len(batch) for batch in source.batches(4))
    assert n_read == 5 and [name for name, _ in source.skipped] == ["a/broken.png"]


def test_a_source_travels_to_another_process_without_its_file_system(folder):
    cloudpickle = pytest.importorskip("cloudpickle")  # what Ray serialises a Work with
    source = open_uri(folder.as_uri(), READ)
    first = next(source.batches(5))  # opens the file system in this process
    copy = pickle.loads(cloudpickle.dumps(source))
    np.testing.assert_array_equal(next(copy.batches(5)), first)


@pytest.mark.parametrize(("make", "message"), [
    (lambda folder: folder / "missing", "no such prefix"),
    (lambda folder: folder / "b.png", "a single file; point at a prefix"),
])
def test_what_is_not_a_prefix_is_refused(folder, make, message):
    uri = make(folder).as_uri()
    with pytest.raises(SourceError, match=message) as raised:
        open_uri(uri, READ)
    assert str(raised.value).startswith(uri)


def test_an_archive_behind_a_uri_is_refused_with_what_to_do(tmp_path):
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("a.png", b"x")
    with pytest.raises(SourceError, match="archives behind a URI are not read; mount or download it"):
        open_uri(archive.as_uri(), READ)


def test_a_prefix_without_images_is_empty(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("x")
    (tmp_path / "docs" / "data.csv").write_text("x")
    with pytest.raises(EmptySourceError, match=r"no images to read \(no image files; 2 other files ignored\)"):
        open_uri((tmp_path / "docs").as_uri(), READ)


def test_an_unknown_scheme_is_a_source_error():
    with pytest.raises(SourceError, match=r"^nosuchfs://bucket/x: cannot open this URI's file system \("):
        open_uri("nosuchfs://bucket/x", READ)


def test_the_reader_refuses_an_object_above_the_limit_unread(folder):
    reader = ArrowReader(folder.as_uri())
    data = (folder / "b.png").read_bytes()
    assert reader.read("b.png") == data
    assert reader.read("b.png", max_bytes=len(data)) == data
    with pytest.raises(ImageError, match=f"b.png: {len(data):,} bytes, more than"):
        reader.read("b.png", max_bytes=len(data) - 1)
    reader.close()
    assert reader.read("a/2.png") == (folder / "a" / "2.png").read_bytes()  # opened again after close
    state = pickle.loads(pickle.dumps(reader))
    assert state.uri == reader.uri and state._fs is None


def test_without_pyarrow_the_reader_says_what_to_install(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.fs", None)  # "import pyarrow.fs" now fails
    with pytest.raises(SourceError, match=r"reading URIs needs pyarrow \(installed with ray\[data\]"):
        ArrowReader(folder.as_uri()).read("b.png")


def test_without_pyarrow_listing_says_what_to_install(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.fs", None)
    with pytest.raises(SourceError, match="reading URIs needs pyarrow"):
        open_uri(folder.as_uri(), READ)


# --- 2: a file:// URI lists exactly what the same local folder lists -----------------------------------------------

def _tree_with_links(root):
    import os

    for index, name in enumerate(["top.png", "real/one.png", "real/deeper/two.png", ".thumbs/hidden.png",
                                  "real/.ipynb_checkpoints/x.png", "other/three.png"]):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(_png(index, 6, 6))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    os.symlink("real", root / "again")  # a second name of a folder: read once
    os.symlink("real/deeper", root / "zlink")  # a second name of a subfolder
    os.symlink("top.png", root / "same.png")  # a link to a file is a file
    os.symlink("missing.png", root / "dangling.png")  # a link to nothing: a bad file, in both
    os.symlink(".thumbs", root / "thumbs-link")  # a hidden folder through a link is read, as the walk does
    (root / "notes.txt").write_text("x")


def _read_all(source):
    import numpy as np

    total, rows = 0, 0
    for batch in source.batches(3):
        total += int(np.asarray(batch, dtype=np.int64).sum())
        rows += len(batch)
    return rows, total, sorted(name for name, _ in source.skipped)  # the readers word the reasons their way


def test_a_file_uri_lists_and_reads_exactly_what_the_same_local_folder_does(tmp_path):
    pytest.importorskip("pyarrow.fs")
    from fidkit.cluster.uri import open_uri
    from fidkit.sources import open_source

    root = tmp_path / "tree"
    root.mkdir()
    _tree_with_links(root)
    folder = open_source(root, skip_bad=True, workers=0)
    uri = open_uri(root.as_uri(), ReadOptions(skip_bad=True, workers=0))
    assert uri.members == folder.members == [
        "broken.png", "dangling.png", "other/three.png", "real/deeper/two.png", "real/one.png", "same.png",
        "thumbs-link/hidden.png", "top.png"]
    assert uri.ignored == folder.ignored
    assert sum(uri.ignored.values()) == 4  # .thumbs/, real/.ipynb_checkpoints/, again/ and zlink/ (read already)
    assert _read_all(uri) == _read_all(folder)
    rows, _, skipped = _read_all(uri)
    assert rows == 6 and skipped == ["broken.png", "dangling.png"]
    # The listing's sizes and times are those a node's check of the listing reads (pyarrow's stat of the file).
    identity = uri._identity(hash_content=False)
    import pyarrow.fs

    file_system = pyarrow.fs.LocalFileSystem()
    for member, size, mtime_ns in identity["members"]:
        info = file_system.get_file_info(str(root / member))
        if info.type == pyarrow.fs.FileType.NotFound:
            assert (size, mtime_ns) == (-1, -1)
        else:
            assert (size, mtime_ns) == (info.size, info.mtime_ns)
