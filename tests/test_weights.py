"""Weights: the manifest, resolution order, download from a local server, checksums, strict loading."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fidkit.errors import WeightsError
from fidkit.inception import weights as W
from fidkit.inception.weights import (
    WeightsManifest,
    load_manifest,
    load_state_dict,
    locate_weights,
    resolve_weights,
    save_state_dict,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
RELEASED_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"


# --- the manifest -------------------------------------------------------------------------------


def test_packaged_manifest_describes_the_released_file() -> None:
    manifest = load_manifest()
    assert manifest.file_name == "pt_inception-2015-12-05-6726825d.pth"
    assert manifest.size == 95_628_359
    assert manifest.sha256 == RELEASED_SHA256
    assert manifest.urls[0].startswith("https://github.com/mseitzer/pytorch-fid/releases/")
    assert "torch-fidelity" in manifest.urls[1]
    assert manifest.licence == "Apache-2.0"


def test_packaged_manifest_is_the_repository_manifest() -> None:
    assert W.MANIFEST_PATH.read_bytes() == (REPO_ROOT / "weights" / "manifest.json").read_bytes()


def test_malformed_manifest(tmp_path: Path) -> None:
    bad = tmp_path / "manifest.json"
    bad.write_text(json.dumps({"file": "x.pth"}))
    with pytest.raises(WeightsError, match="malformed"):
        load_manifest(bad)
    with pytest.raises(WeightsError, match="cannot read"):
        load_manifest(tmp_path / "missing.json")


# --- a local file server ------------------------------------------------------------------------

PAYLOAD = bytes(range(256)) * 4096 + b"fidkit"  # ~1 MiB: several read chunks


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, bytes] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.routes.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture(scope="module")
def file_server() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving PAYLOAD at /good.pth and other bytes at /corrupt.pth."""
    _Handler.routes = {"/good.pth": PAYLOAD, "/corrupt.pth": PAYLOAD[:-1] + b"X"}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connection refused, as offline."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/weights.pth"


def _manifest(*urls: str, payload: bytes = PAYLOAD) -> WeightsManifest:
    return WeightsManifest(
        name="test-net",
        file_name="test-weights.pth",
        size=len(payload),
        sha256=hashlib.sha256(payload).hexdigest(),
        urls=tuple(urls),
        licence="Apache-2.0",
    )


# --- resolution order and download --------------------------------------------------------------


def test_download_into_cache(fidkit_home: Path, file_server: str) -> None:
    manifest = _manifest(file_server + "/good.pth")
    found = locate_weights(manifest=manifest, progress=False)
    assert found.origin == "download" and found.matches_manifest
    assert found.path == fidkit_home / "weights" / "test-weights.pth"
    assert found.path.read_bytes() == PAYLOAD
    assert found.sha256 == manifest.sha256
    assert [p.name for p in found.path.parent.iterdir()] == ["test-weights.pth"]  # no temp left
    # Second time: from the cache, no server needed.
    again = locate_weights(manifest=_manifest(_closed_port_url()), progress=False)
    assert again.origin == "cache" and again.path == found.path


def test_download_falls_back_to_the_mirror(fidkit_home: Path, file_server: str) -> None:
    manifest = _manifest(file_server + "/missing.pth", file_server + "/good.pth")
    assert resolve_weights(manifest=manifest, progress=False).read_bytes() == PAYLOAD


def test_wrong_checksum_deletes_the_partial_file(fidkit_home: Path, file_server: str) -> None:
    manifest = _manifest(file_server + "/corrupt.pth")
    with pytest.raises(WeightsError) as info:
        locate_weights(manifest=manifest, progress=False)
    message = str(info.value)
    assert "sha256" in message and "deleted" in message and manifest.sha256 in message
    weights_dir = fidkit_home / "weights"
    assert not weights_dir.exists() or list(weights_dir.iterdir()) == []


def test_offline_error_names_the_url_and_both_ways_to_supply(fidkit_home: Path) -> None:
    url = _closed_port_url()
    manifest = _manifest(url)
    with pytest.raises(WeightsError) as info:
        locate_weights(manifest=manifest, progress=False, timeout=2.0)
    message = str(info.value)
    assert url in message
    assert "--weights" in message and "FIDKIT_WEIGHTS" in message
    assert str(fidkit_home / "weights" / "test-weights.pth") in message


def test_download_times_out_on_a_silent_server(fidkit_home: Path) -> None:
    # A socket that accepts connections (the kernel does) but never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/weights.pth"
        with pytest.raises(WeightsError, match="timed out"):
            locate_weights(manifest=_manifest(url), progress=False, timeout=0.5)


def test_no_download_when_disabled(fidkit_home: Path, file_server: str) -> None:
    with pytest.raises(WeightsError, match="not found"):
        locate_weights(manifest=_manifest(file_server + "/good.pth"), download=False)
    assert not (fidkit_home / "weights").exists()


def test_explicit_path_is_used_as_given(fidkit_home: Path, tmp_path: Path, monkeypatch) -> None:
    own = tmp_path / "my-port.pth"
    own.write_bytes(b"my own port of the network")
    # Even with a cached file and FIDKIT_WEIGHTS set, the explicit path wins.
    monkeypatch.setenv("FIDKIT_WEIGHTS", str(tmp_path / "elsewhere.pth"))
    found = locate_weights(own, manifest=_manifest(_closed_port_url()))
    assert found.path == own and found.origin == "explicit"
    assert found.sha256 == hashlib.sha256(b"my own port of the network").hexdigest()
    assert not found.matches_manifest


def test_environment_variable_is_used(fidkit_home: Path, tmp_path: Path, monkeypatch) -> None:
    own = tmp_path / "env.pth"
    own.write_bytes(PAYLOAD)
    monkeypatch.setenv("FIDKIT_WEIGHTS", str(own))
    found = locate_weights(manifest=_manifest(_closed_port_url()))
    assert found.path == own and found.origin == "environment" and found.matches_manifest


def test_missing_explicit_path(fidkit_home: Path, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        locate_weights(tmp_path / "nope.pth", manifest=_manifest(_closed_port_url()))
    monkeypatch.setenv("FIDKIT_WEIGHTS", str(tmp_path / "nope.pth"))
    with pytest.raises(WeightsError, match="FIDKIT_WEIGHTS"):
        locate_weights(manifest=_manifest(_closed_port_url()))


@pytest.mark.parametrize("blank", ["", " ", "\t \n"], ids=["empty", "space", "whitespace"])
def test_a_blank_weights_variable_counts_as_unset(fidkit_home: Path, monkeypatch, blank: str) -> None:
    # As for FIDKIT_HOME and FIDKIT_DATASETS: blanks are no path (" " would be a file named by a space here).
    monkeypatch.setenv("FIDKIT_WEIGHTS", blank)
    cached = fidkit_home / "weights" / "test-weights.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(PAYLOAD)
    found = locate_weights(manifest=_manifest(_closed_port_url()))
    assert found.path == cached and found.origin == "cache"
    cached.unlink()
    with pytest.raises(WeightsError, match="not found at") as info:
        locate_weights(manifest=_manifest(_closed_port_url()), download=False)
    assert "from the environment variable" not in str(info.value)


def test_cached_file_with_wrong_checksum(fidkit_home: Path) -> None:
    cached = fidkit_home / "weights" / "test-weights.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the weights")
    with pytest.raises(WeightsError, match="delete the file"):
        locate_weights(manifest=_manifest(_closed_port_url()))


def test_download_progress_only_on_a_terminal() -> None:
    """The download's progress bar (tqdm, counting bytes): drawn on a terminal only, never when disabled."""
    from fidkit._download import progress_bar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    quiet, loud = io.StringIO(), Terminal()
    for stream in (quiet, loud):
        with progress_bar(3 * 2**20, "downloading", stream=stream) as bar:
            for _ in range(3):
                bar.update(2**20)
    assert quiet.getvalue() == ""
    assert "downloading" in loud.getvalue() and "100%" in loud.getvalue() and "3.00M" in loud.getvalue()
    disabled = Terminal()
    with progress_bar(1000, "downloading", stream=disabled, show=False) as bar:
        bar.update(1000)
    assert disabled.getvalue() == ""


# --- loading ------------------------------------------------------------------------------------

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def reference_state(random_weights_path: Path) -> dict:
    return load_state_dict(random_weights_path)


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
@pytest.mark.parametrize("with_nbt", [True, False], ids=["with-nbt", "without-nbt"])
def test_load_formats(tmp_path: Path, reference_state: dict, legacy: bool, with_nbt: bool) -> None:
    path = save_state_dict(reference_state, tmp_path / "w.pth", legacy=legacy, num_batches_tracked=with_nbt)
    with open(path, "rb") as stream:
        is_zip = stream.read(2) == b"PK"
    assert is_zip is not legacy
    loaded = load_state_dict(path)
    assert list(loaded) == list(reference_state)
    for name, tensor in reference_state.items():
        if name.endswith("num_batches_tracked") and not with_nbt:
            assert int(loaded[name]) == 0
        else:
            assert torch.equal(loaded[name], tensor), name


def test_missing_and_unexpected_tensors_are_named(tmp_path: Path, reference_state: dict) -> None:
    state = dict(reference_state)
    del state["Mixed_6c.branch7x7_2.conv.weight"]
    state["Mixed_6c.extra.weight"] = torch.zeros(3)
    path = save_state_dict(state, tmp_path / "w.pth")
    with pytest.raises(WeightsError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert "Mixed_6c.branch7x7_2.conv.weight" in message and "Mixed_6c.extra.weight" in message
    assert "1 missing" in message and "1 unexpected" in message


def test_wrong_shape_is_named(tmp_path: Path, reference_state: dict) -> None:
    state = dict(reference_state)
    state["fc.bias"] = torch.zeros(1000)
    with pytest.raises(WeightsError, match="fc.bias"):
        load_state_dict(save_state_dict(state, tmp_path / "w.pth"))


def test_not_a_state_dict(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a torch file")
    with pytest.raises(WeightsError, match="is not an Inception weights file"):
        load_state_dict(garbage)
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], listing)
    with pytest.raises(WeightsError, match="state dict"):
        load_state_dict(listing)


class _Payload:
    """An arbitrary object: weights_only=True must refuse to unpickle it."""


def test_arbitrary_pickles_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"x": _Payload()}, path)
    with pytest.raises(WeightsError, match="is not an Inception weights file") as raised:
        load_state_dict(path)
    assert "weights_only" not in str(raised.value)  # torch's advice to unpickle anyway is never passed on


def test_unreadable_weights_file_is_a_weights_error(tmp_path: Path, monkeypatch) -> None:
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"weights")

    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    # Root reads any file whatever its mode: simulate the refusal the OS gives other users.
    monkeypatch.setattr(W, "sha256_file", refuse)
    with pytest.raises(WeightsError, match=f"cannot read weights file {weights}.*Permission denied.*--weights"):
        locate_weights(weights)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_weights_file_without_read_permission_is_a_weights_error(tmp_path: Path) -> None:
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"weights")
    weights.chmod(0)
    try:
        with pytest.raises(WeightsError, match=f"cannot read weights file {weights}"):
            locate_weights(weights)
    finally:
        weights.chmod(0o600)


# --- hostile review (issue 9), 14: a file that is not weights -------------------------------------------------------


def test_a_file_that_is_not_weights_never_relays_torchs_unsafe_advice(tmp_path):
    import collections
    import pickle

    from fidkit.errors import WeightsError
    from fidkit.inception.weights import load_state_dict

    for name, payload in [("pickle.pth", pickle.dumps(collections.Counter(a=1))), ("text.pth", b"not weights")]:
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(WeightsError) as raised:
            load_state_dict(path)
        message = str(raised.value)
        assert f"{path} is not an Inception weights file" in message
        assert "weights_only" not in message and "False" not in message


# --- round 8, 5: weights holding NaN, an infinity or a negative variance are refused at load, naming the tensor ----


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("Conv2d_1a_3x3.bn.running_var", float("nan"), "1 NaN or infinite value(s)"),
        ("Mixed_7c.branch_pool.conv.weight", float("inf"), "1 NaN or infinite value(s)"),
        ("fc.bias", float("-inf"), "1 NaN or infinite value(s)"),
        ("Mixed_5b.branch1x1.bn.running_var", -0.5, "1 negative value(s)"),
    ],
)
def test_weights_with_a_value_no_network_holds_are_refused_naming_it(
    tmp_path: Path, reference_state: dict, name: str, value: float, said: str
) -> None:
    state = dict(reference_state)
    state[name] = reference_state[name].clone()
    state[name].view(-1)[3] = value
    path = save_state_dict(state, tmp_path / "damaged.pth")
    with pytest.raises(WeightsError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert f"weights {path} hold {said} in {name} " in message and "download it again" in message


def test_the_first_damaged_tensor_is_the_one_named(tmp_path: Path, reference_state: dict) -> None:
    state = dict(reference_state)
    names = [name for name in reference_state if name.endswith("running_var")]
    for name in (names[5], names[2]):  # damaged out of order: the file's order decides which is named
        state[name] = torch.full_like(reference_state[name], float("nan"))
    with pytest.raises(WeightsError, match=f"in {names[2]} ") as info:
        load_state_dict(save_state_dict(state, tmp_path / "w.pth"))
    assert names[5] not in str(info.value)


def test_intact_weights_with_zero_variances_still_load(tmp_path: Path, reference_state: dict) -> None:
    state = dict(reference_state)
    name = "Conv2d_2a_3x3.bn.running_var"
    state[name] = torch.zeros_like(reference_state[name])  # a channel that never varied: zero is a variance
    assert torch.equal(load_state_dict(save_state_dict(state, tmp_path / "w.pth"))[name], state[name])
