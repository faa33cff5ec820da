"""Fixtures shared by every test module.

Nothing here touches the user's real cache: ``FIDKIT_HOME`` points at a temporary folder for the
whole session and ``FIDKIT_WEIGHTS`` is unset, so a test that forgets to pass weights fails the
same way on every machine instead of silently finding a developer's downloaded file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

_SAVED_ENV: dict[str, str | None] = {}
_SESSION_HOME: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    # Done here rather than in a fixture so that code run at collection time sees it too.
    global _SESSION_HOME
    _SESSION_HOME = Path(tempfile.mkdtemp(prefix="fidkit-test-home-"))
    for name in ("FIDKIT_HOME", "FIDKIT_WEIGHTS"):
        _SAVED_ENV[name] = os.environ.get(name)
    os.environ["FIDKIT_HOME"] = str(_SESSION_HOME)
    os.environ.pop("FIDKIT_WEIGHTS", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    for name, value in _SAVED_ENV.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if _SESSION_HOME is not None:
        shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def random_weights_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``.pth`` of random weights with the exact layout of the released file (legacy format).

    The BatchNorm statistics are calibrated on random images, so activations stay in a sane range
    and the 2048 features differ from image to image.
    """
    from fidkit.inception.weights import save_state_dict
    from fidkit.testing import random_state_dict

    path = tmp_path_factory.mktemp("weights") / "random-inception.pth"
    save_state_dict(random_state_dict(seed=0), path, legacy=True)
    return path


@pytest.fixture(scope="session")
def extractor(random_weights_path: Path):
    """A CPU :class:`fidkit.inception.FeatureExtractor` on the random weights, built once.

    The ONNX graph is exported into the session's ``FIDKIT_HOME`` on first use (tens of seconds),
    so every test that needs features shares this one.
    """
    from fidkit.inception import FeatureExtractor

    return FeatureExtractor(random_weights_path, device="cpu")


@pytest.fixture
def fidkit_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty ``FIDKIT_HOME`` for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("FIDKIT_HOME", str(home))
    return home


@pytest.fixture
def home(fidkit_home: Path) -> Path:
    """:func:`fidkit_home` under the shorter name the tests of the cache home, files and streams use."""
    return fidkit_home


#: Environment variable naming the folder of real test data (CIFAR-10 and MNIST files; README.md, Development).
TEST_DATA_ENV = "FIDKIT_TEST_DATA"


def shared_data_folder() -> Path:
    """Where the real test data is: ``$FIDKIT_TEST_DATA``, else ``<repo>/../shared/data``."""
    configured = os.environ.get(TEST_DATA_ENV)
    return Path(configured).expanduser() if configured else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (:func:`shared_data_folder`); skips the test, saying how to provide it, if absent."""
    path = shared_data_folder()
    if not path.is_dir():
        origin = f"{TEST_DATA_ENV}={os.environ[TEST_DATA_ENV]}" if os.environ.get(TEST_DATA_ENV) else "the default"
        pytest.skip(
            f"real test data not found at {path} ({origin}); set {TEST_DATA_ENV} to the folder holding "
            "cifar10/ and mnist/ (see README.md, Development)"
        )
    return path


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray instance for the tests of one module (2 CPUs, a small object store), shut down after them; one
    the test process already runs is used and left running."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    yield ray
    if started and ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def deleted_cwd(tmp_path, monkeypatch):
    """Work in a folder that is then removed (``mkdir g; cd g; rmdir ../g``); its parent (`tmp_path`) is returned."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with pytest.raises(FileNotFoundError):
        os.getcwd()
    return tmp_path
