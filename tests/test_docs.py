"""Every ```python block of README.md and docs/*.md runs as written; README's first commands are real.

The blocks of one document run in order in one namespace (as a reader goes down the page), in a subprocess
whose working folder holds small stand-ins for the files the examples name (``real_images/``,
``generated_images/``, ``cifar10-train.npz``...), with ``FIDKIT_WEIGHTS`` set to random weights of the exact
layout and ``FIDKIT_HOME`` to the test session's cache.

A block that cannot run here is marked in the markdown by an HTML comment on the line right before it:

- ``<!-- docs-test: skip (why) -->``: not run; the reason is required (a download, a GPU, a cluster);
- ``<!-- docs-test: torchrun -->``: a script for ``torchrun``, run alone with the environment torchrun gives
  one process (``RANK=0``, ``WORLD_SIZE=1``, ``LOCAL_RANK=0``, ``MASTER_ADDR``, ``MASTER_PORT``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ports import free_port  # tests/ports.py

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```(\w*)\s*$")
_MARKER = re.compile(r"^<!--\s*docs-test:\s*(?P<what>skip|torchrun)\s*(?:\((?P<why>[^)]*)\))?\s*-->\s*$")


@dataclasses.dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    marker: str | None  # "skip", "torchrun" or None
    reason: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


def code_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file, each with the docs-test marker right before it, if any."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        marker = _MARKER.match(lines[index - 1].strip()) if index > 0 else None
        blocks.append(
            Block(
                path=path,
                line=index + 1,
                language=opening.group(1),
                code="\n".join(lines[index + 1 : end]) + "\n",
                marker=marker.group("what") if marker else None,
                reason=(marker.group("why") or "").strip() or None if marker else None,
            )
        )
        index = end + 1
    return blocks


def python_blocks(path: Path) -> list[Block]:
    return [block for block in code_blocks(path) if block.language == "python"]


# --- the markers are few and honest --------------------------------------------------------------------------


def test_every_document_is_read_and_markers_stand_before_python_blocks():
    names = {path.name for path in DOCUMENTS}
    assert {"README.md", "usage.md", "ttur.md", "distributed.md", "architecture.md"} <= names
    for path in DOCUMENTS:
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            if "docs-test:" not in line:
                continue
            assert _MARKER.match(line.strip()), f"{path.name}:{number + 1}: unknown docs-test marker {line!r}"
            following = lines[number + 1] if number + 1 < len(lines) else ""
            assert following.strip() == "```python", f"{path.name}:{number + 1}: a marker must precede a python block"


def test_skipped_blocks_say_why_and_are_few():
    blocks = [block for path in DOCUMENTS for block in python_blocks(path)]
    skipped = [block for block in blocks if block.marker == "skip"]
    assert all(block.reason for block in skipped), [block.where for block in skipped if not block.reason]
    # Three: a download, a Ray cluster, and a fragment of a torchrun job (the recovery step after a timeout).
    assert len(skipped) <= 3 and len(blocks) - len(skipped) >= 6, [block.where for block in skipped]


# --- the python blocks run -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, extractor) -> Path:
    """Small stand-ins for what the examples name: two image folders (and their short names), a statistics file."""
    from PIL import Image

    import fidkit

    root = tmp_path_factory.mktemp("docs-workspace")
    rng = np.random.default_rng(7)
    for folder in ("real_images", "generated_images"):
        (root / folder).mkdir()
        for index in range(12):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / folder / f"{index:03d}.png")
    shutil.copytree(root / "real_images", root / "real")
    shutil.copytree(root / "generated_images", root / "generated")
    fidkit.compute_stats(root / "real_images", extractor=extractor, use_cache=False).save(root / "cifar10-train.npz")
    return root




_RUNNER = textwrap.dedent(
    """
    import sys, traceback, warnings
    warnings.simplefilter("ignore")  # FidkitWarning, SmallSampleWarning: expected at these sizes
    namespace = {"__name__": "__main__"}
    for where, code in BLOCKS:
        try:
            exec(compile(code, where, "exec"), namespace)
        except BaseException:
            traceback.print_exc()
            print(f"DOCS-TEST FAILED: {where}", file=sys.stderr)
            sys.exit(1)
    """
)


def _run_blocks(blocks: list[Block], cwd: Path, weights: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), FIDKIT_WEIGHTS=str(weights), MPLBACKEND="Agg", **extra_env)
    script = f"BLOCKS = {[(block.where, block.code) for block in blocks]!r}\n" + _RUNNER
    return subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    "document", [path for path in DOCUMENTS if python_blocks(path)], ids=lambda path: path.name
)
def test_python_blocks_run_as_written(document, workspace, random_weights_path, tmp_path):
    cwd = tmp_path / "cwd"
    shutil.copytree(workspace, cwd)  # a block may write files (real.npz): each document starts afresh
    blocks = python_blocks(document)
    plain = [block for block in blocks if block.marker is None]
    if plain:
        result = _run_blocks(plain, cwd, random_weights_path)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    for block in blocks:
        if block.marker == "torchrun":
            result = _run_blocks(
                [block], cwd, random_weights_path,
                RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
                MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
            )
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


# --- README: the first command runs the main job on something that exists -----------------------------------


def _readme_commands() -> list[list[str]]:
    """The shell commands of README's first two bash blocks, split at ``&&`` (install, then fidkit ...)."""
    bash = [block for block in code_blocks(REPO_ROOT / "README.md") if block.language == "bash"]
    return [[part.strip() for part in block.code.strip().split("&&")] for block in bash[:3]]


def _cifar_archive(train: list[np.ndarray], test: np.ndarray) -> bytes:
    """A small cifar-10-python.tar.gz in the real layout (pickled batches of 3072-byte rows)."""

    from fidkit.testing import cifar_batch, tar_gz

    def batch(images: np.ndarray) -> bytes:
        return cifar_batch(images, labels=[0] * len(images))

    members = {f"cifar-10-batches-py/data_batch_{i + 1}": batch(images) for i, images in enumerate(train)}
    members["cifar-10-batches-py/test_batch"] = batch(test)
    return tar_gz(members)


def test_readme_first_command_computes_a_fid_of_named_datasets(
    extractor, random_weights_path, tmp_path, monkeypatch, capsys
):
    from fidkit.cli import main
    from fidkit.sources import named

    install, *rest = _readme_commands()[0]
    assert install.startswith("pip install torch==") and rest[0] == "pip install -e ."
    argv = shlex.split(rest[1])
    assert argv[:2] == ["fidkit", "compute"], rest
    sources = [arg for arg in argv[2:] if not arg.startswith("-") and not arg.isdigit()]
    assert sorted(sources) == ["cifar10-test", "cifar10-train"], sources  # named: nothing to create first
    assert "--limit" in argv  # small enough to finish in minutes on a CPU

    # The dataset file, in the real format, where FIDKIT_DATASETS says (this machine has no internet).
    rng = np.random.default_rng(11)
    archive = _cifar_archive([rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8) for _ in range(5)],
                             rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8))
    folder = tmp_path / "datasets"
    folder.mkdir()
    n_images = {"cifar10-train": 15, "cifar10-test": 6}
    for name in sources:
        dataset = named.DATASETS[name]
        (folder / dataset.file.file_name).write_bytes(archive)
        file = dataclasses.replace(dataset.file, md5=hashlib.md5(archive).hexdigest(), size=len(archive))
        monkeypatch.setitem(
            named.DATASETS, name, dataclasses.replace(dataset, file=file, n_images=n_images[name])
        )
    monkeypatch.setenv("FIDKIT_DATASETS", str(folder))
    monkeypatch.setenv("FIDKIT_WEIGHTS", str(random_weights_path))
    assert main(argv[1:]) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(r"FID: \d+\.\d{4}\n", out), out


def test_readme_gpu_check_runs_the_network_now():
    from fidkit.cli import build_parser

    gpu_line = next(line for block in _readme_commands() for line in block if "--device cuda" in line)
    command, _, grep = gpu_line.partition("|")
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert args.device == "cuda" and args.json
    assert args.no_cache  # a cached side would report the provider of an earlier (CPU) run, not this one
    assert shlex.split(grep) == ["grep", '"provider"']


# --- hostile round 4: docs/metrics.md says the network gives the logits ---------------------------------------------


def test_metrics_doc_does_not_say_the_logits_must_be_applied_by_the_caller():
    text = " ".join((REPO_ROOT / "docs" / "metrics.md").read_text(encoding="utf-8").split())
    which_logits = text[text.index("**Which logits.**"): text.index("**Shuffle.**")]
    assert "pool_3 only" not in which_logits and "to be wired in" not in which_logits
    assert "logits" in which_logits and "--metrics is" in which_logits


# --- hostile round 7: the examples put the evaluated set first; info reads features; every error is listed --------

_EVALUATED = re.compile(r"generat|sample|fake", re.IGNORECASE)
_REFERENCE = re.compile(r"(?:^|[^a-z])(?:real|ref|reference)(?:[^a-z]|$)", re.IGNORECASE)


def _first_two_arguments(text: str, start: int) -> tuple[str, str] | None:
    """The first two top-level arguments of the call whose "(" is at `start` (nested calls and strings kept whole)."""
    depth, quote, current, found = 0, None, "", []
    for char in text[start + 1:]:
        if quote:
            current += char
            quote = None if char == quote else quote
            continue
        if char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                found.append(current.strip())
                break
            depth -= 1
        elif char == "," and depth == 0:
            found.append(current.strip())
            current = ""
            if len(found) == 2:
                break
            continue
        current += char
    return (found[0], found[1]) if len(found) >= 2 else None


def _comparisons() -> list[tuple[str, str, str]]:
    """``(where, A, B)`` of every ``compute_fid(A, B, ...)`` and ``fidkit compute A B`` in the documents, the
    package's docstrings and the command line's help."""
    files = [*DOCUMENTS, *sorted((REPO_ROOT / "fidkit").rglob("*.py"))]
    found = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        where = lambda offset: f"{path.relative_to(REPO_ROOT)}:{text.count(chr(10), 0, offset) + 1}"  # noqa: E731
        for match in re.finditer(r"compute_fid\(", text):
            pair = _first_two_arguments(text, match.end() - 1)
            if pair is not None:
                found.append((where(match.start()), *pair))
        for match in re.finditer(r"fidkit compute ([^\s`'\"|>-][^\s`'\"|>]*) ([^\s`'\"|>-][^\s`'\"|>]*)", text):
            found.append((where(match.start()), match.group(1), match.group(2)))
    return found


def test_every_example_puts_the_evaluated_set_first_and_the_reference_second():
    comparisons = _comparisons()
    assert len(comparisons) > 40  # README, usage.md, metrics.md, distributed.md, compatibility.md, --help, docstrings
    wrong = [(where, a, b) for where, a, b in comparisons if _REFERENCE.search(a) or _EVALUATED.search(b)]
    assert wrong == [], "\n".join(f"{where}: {a} {b}" for where, a, b in wrong)
    # The heuristic sees the order it must refuse.
    assert _REFERENCE.search("real_images/") and _REFERENCE.search('"ref.npz"') and _EVALUATED.search("samples.zip")
    assert not _REFERENCE.search("prefix/") and not _REFERENCE.search("cifar10-train")


def test_the_order_of_the_sides_is_stated_where_the_metrics_are_described():
    from fidkit.api import compute_features, compute_fid

    text = " ".join(compute_fid.__doc__.split())
    assert "`a` is the evaluated set (the generated images) and `b` the reference (the real images)" in text
    assert "of `a` as the evaluated set against `b` as the reference" in text
    assert "evaluated (generated) one first and the reference second" in " ".join(compute_features.__doc__.split())
    usage = " ".join((REPO_ROOT / "docs" / "usage.md").read_text(encoding="utf-8").split())
    assert "`A` is the evaluated set (the generated images), `B` the reference (the real images)" in usage
    readme = " ".join((REPO_ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "fidkit.compute_fid(generated, real)" in readme and "the other `--metrics` are not" in readme


def _help(argv: list[str], capsys) -> str:
    from fidkit.cli import main

    assert main(argv) == 0
    return " ".join(capsys.readouterr().out.split())


def test_info_documents_features_files_in_its_help_and_in_usage(capsys):
    help_text = _help(["info", "--help"], capsys)
    assert "FILE.npz a statistics file or a features file" in help_text
    assert "statistics or features .npz" in help_text and "features.npz" in help_text
    compute_help = _help(["compute", "--help"], capsys)
    assert "A, the evaluated set (generated images), and B, the reference (real images)" in compute_help
    usage = (REPO_ROOT / "docs" / "usage.md").read_text(encoding="utf-8")
    section = usage[usage.index("### `fidkit info FILE.npz`"):usage.index("### `fidkit cache list`")]
    section = " ".join(section.split())
    assert "What a statistics file or a features file holds" in section
    assert "`outputs`" in section and "fidkit info generated-features.npz" in section


def test_usage_lists_every_exported_error_with_when_it_is_raised():
    import fidkit

    exported = {
        name for name in fidkit.__all__
        if isinstance(getattr(fidkit, name), type) and issubclass(getattr(fidkit, name), fidkit.FidkitError)
        and getattr(fidkit, name) is not fidkit.FidkitError
    }
    assert {"DownloadError", "ResourceError", "InputError"} <= exported
    usage = (REPO_ROOT / "docs" / "usage.md").read_text(encoding="utf-8")
    start = usage.index("Errors are `fidkit.FidkitError` subclasses")
    table = usage[start:usage.index("\n\n", usage.index("| error |", start))]
    rows = re.findall(r"^\| `(\w+)`[^|]*\| (.+) \|$", table, re.MULTILINE)
    assert {name for name, _ in rows} == exported, table
    assert len(rows) == len(exported) and all(len(when.split()) >= 5 for _, when in rows)


def test_the_docs_say_kept_rows_come_in_the_sources_order_locally_and_on_ray():
    usage = " ".join((REPO_ROOT / "docs" / "usage.md").read_text(encoding="utf-8").split())
    metrics = " ".join((REPO_ROOT / "docs" / "metrics.md").read_text(encoding="utf-8").split())
    assert "in the order the network saw the images" not in usage
    assert "Rows come in the source's order" in usage
    assert "do not depend on the batch size, the device or `--ray`" in usage
    assert "in an order that may differ from a local run's" not in metrics and "Ray run's shards" not in metrics
    assert "the shards keep and return the same outputs in the local run's order" in metrics


def test_the_cuda_extra_installs_where_the_base_takes_the_gpu_build_and_the_docs_say_where_not():
    tomllib = pytest.importorskip("tomllib")
    text = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    project = tomllib.loads(text)["project"]
    base = [item for item in project["dependencies"] if item.startswith("onnxruntime-gpu")]
    extra = project["optional-dependencies"]["cuda"]
    assert len(base) == 1 and len(extra) == 1
    # One marker for both: the extra never adds a GPU build beside the CPU onnxruntime the base install took.
    assert extra[0].split(";", 1)[1].strip() == base[0].split(";", 1)[1].strip()
    assert "python_version >= '3.11'" in base[0]
    assert 'engine="ray"' not in text and 'cluster="ray"' in text
    for document in (REPO_ROOT / "README.md", REPO_ROOT / "docs" / "usage.md"):
        words = " ".join(document.read_text(encoding="utf-8").split())
        assert "CPython 3.11 or newer on x86-64 Linux or Windows" in words or \
            "CPython 3.11 or newer, on x86-64 Linux or Windows" in words, document
        assert "3.10" in words and "1.24" in words, document
