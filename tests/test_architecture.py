"""docs/architecture.md is the code: the layer table's imports are the real imports, every import points down,
light entry points stay light, and the recipe for a new source kind works as written."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "fidkit"
GROUND = {"_validate", "_plain", "_npz", "_fs", "_home_dir", "_signals", "_download", "_gpu", "_tf32", "_devices", "_streams", "_ray_address", "_argtypes", "_version", "errors"}


def _unit(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "fidkit":
        return None
    if len(parts) == 1:
        return "fidkit"
    name = parts[1]
    if name in GROUND:
        return "ground"
    return "cli" if name == "__main__" else name


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skipped.update(id(sub) for sub in ast.walk(node))
    return skipped


def import_graph() -> dict[str, set[str]]:
    """Unit -> the units it imports (module level or lazily; not under TYPE_CHECKING), from the source."""
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        source = _unit(module)
        assert source is not None
        edges.setdefault(source, set())
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] if node.module != "fidkit" else [f"fidkit.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                target = _unit(name)
                if target is not None and target != source:
                    edges[source].add(target)
    return edges


def documented_layers() -> list[tuple[str, set[str]]]:
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text.split("<!-- layers:start -->")[1].split("<!-- layers:end -->")[0]
    rows = []
    for line in table.strip().splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        unit = cells[0].strip("`")
        rows.append((unit, set(re.findall(r"`([\w.]+)`", cells[2]))))
    return rows


def test_the_layer_table_lists_every_unit_with_its_real_imports():
    graph = import_graph()
    layers = documented_layers()
    documented = {unit for unit, _ in layers}
    assert documented == set(graph) - {"ground"}, "units in the code but not in docs/architecture.md, or back"
    for unit, imports in layers:
        assert imports == graph[unit] - {"ground"}, f"docs/architecture.md row {unit!r}"


def test_every_import_points_down_so_there_is_no_cycle():
    graph = import_graph()
    order = {unit: position for position, (unit, _) in enumerate(documented_layers())}
    order["ground"] = len(order)
    upward = sorted(
        (source, target) for source, targets in graph.items() for target in targets if order[target] <= order[source]
    )
    assert upward == [], f"imports that point up or sideways: {upward}"
    assert graph["ground"] == set()


def _modules_loaded(code: str, tmp_path: Path) -> dict[str, object]:
    probe = (
        "import json, sys\n" + code + "\n"
        "print(json.dumps({'fidkit': sorted(m for m in sys.modules if m.startswith('fidkit')),"
        " 'heavy': sorted(m for m in ('torch', 'onnxruntime', 'onnx', 'numpy', 'scipy', 'PIL') if m in sys.modules)}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, check=True,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_fidkit_and_the_help_load_almost_nothing(tmp_path):
    loaded = _modules_loaded("import fidkit", tmp_path)
    assert loaded["heavy"] == [] and len(loaded["fidkit"]) <= 4
    loaded = _modules_loaded(
        "import contextlib, io, fidkit.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    fidkit.cli.main(['--help'])", tmp_path,
    )
    assert loaded["heavy"] == [], loaded
    assert len(loaded["fidkit"]) <= 10, loaded["fidkit"]


def test_a_cached_compute_builds_nothing_and_imports_neither_torch_nor_onnxruntime(tmp_path, extractor):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    rng = np.random.default_rng(0)
    np.save(a, rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8))
    np.save(b, rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8))
    home = tmp_path / "home"
    run = (
        "import os, contextlib, io\n"
        f"os.environ['FIDKIT_HOME'] = {str(home)!r}\n"
        "import fidkit.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        f"    assert fidkit.cli.main(['compute', {str(a)!r}, {str(b)!r}, '--weights', {str(extractor.weights_path)!r},"
        " '--device', 'cpu', '--workers', '0', '-q']) == 0\n"
    )
    first = _modules_loaded(run, tmp_path)
    assert "onnxruntime" in first["heavy"]  # the first run computed both sides
    graphs = sorted((home / "onnx").glob("*.onnx"))
    for graph in graphs:
        graph.unlink()  # a cached run must not need (nor rebuild) the graph
    second = _modules_loaded(run, tmp_path)
    assert "torch" not in second["heavy"] and "onnxruntime" not in second["heavy"], second
    assert not list((home / "onnx").glob("*.onnx"))
    # The FID alone loads no metric beyond it (the table's package costs about 60 ms of imports).
    assert not [name for name in second["fidkit"] if name.startswith("fidkit.metrics")], second["fidkit"]


def test_recipe_new_source_kind(fidkit_home, extractor):
    """docs/architecture.md, "Add a source kind": a Source subclass works wherever a source is taken."""
    import fidkit
    from fidkit._validate import as_image_batch
    from fidkit.sources import Source

    frames = np.random.default_rng(3).integers(0, 256, (7, 12, 12, 3), dtype=np.uint8)

    class Frames(Source):
        kind = "frames"

        def __init__(self, data: np.ndarray) -> None:
            super().__init__("frames.video", n_images=len(data))
            self._data = data

        def _identity(self, *, hash_content: bool) -> object:
            return {"sha256": __import__("hashlib").sha256(self._data.tobytes()).hexdigest()}

        def batches(self, batch_size: int):
            for start in range(0, len(self._data), batch_size):
                yield as_image_batch(self._data[start : start + batch_size], "frames")

    from_source = fidkit.compute_stats(Frames(frames), extractor=extractor)
    from_array = fidkit.compute_stats(frames, extractor=extractor, workers=0)
    np.testing.assert_allclose(from_source.mu, from_array.mu, rtol=1e-12)
    np.testing.assert_allclose(from_source.sigma, from_array.sigma, rtol=1e-9, atol=1e-12)
    from fidkit.api import compute_stats_with_report

    again, side = compute_stats_with_report(Frames(frames), extractor=extractor)
    assert side.cached and side.kind == "frames"


def test_no_module_is_over_600_lines():
    long = {
        str(path.relative_to(REPO)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 600
    }
    assert long == {}, "split these modules (docs/architecture.md says what each unit owns)"
