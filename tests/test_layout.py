"""The layout DESIGN.md keeps, one test per rule of its layout paragraph: services never import each other nor the
offline side; native imports nothing of the project; serving and training never read the simulator; a serving process
loads no training library; the error hierarchy sits below everything that raises it; the ranker's rollout reaches
the ranker through its interface alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVING = ("catalog", "engines", "errors", "gateway", "generator", "mesh", "native", "paramserver", "ranker")
SERVICES = ("gateway", "generator", "paramserver", "ranker")
PROJECT = (*SERVING, "bench", "cli", "feedserve", "learning", "tests", "world")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", (*SERVING, "learning"))
def test_no_serving_or_training_module_imports_the_simulator(package: str) -> None:
    """Nothing that serves or trains imports world/ (its constants or its hidden tastes and embeddings)."""
    offenders = [str(p.relative_to(ROOT)) for p in _modules(package) if "world" in _imports(p)]
    assert offenders == []


@pytest.mark.parametrize("package", SERVICES)
def test_services_never_import_each_other(package: str) -> None:
    """A service reaches another only through mesh/ or the store's change feed."""
    others = set(SERVICES) - {package}
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & others) for p in _modules(package) if _imports(p) & others}
    assert offenders == {}


@pytest.mark.parametrize("package", SERVICES)
def test_services_use_only_the_libraries_below_them(package: str) -> None:
    """A service imports catalog, mesh, engines, native, errors and the contracts (feedserve), never the CLI, the
    offline learning package, the simulator, benchmarks or tests."""
    above = {"cli", "learning", "world", "bench", "tests"}
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & above) for p in _modules(package) if _imports(p) & above}
    assert offenders == {}


@pytest.mark.parametrize("package", ("native", "errors"))
def test_the_bottom_layer_imports_nothing_of_the_project(package: str) -> None:
    """native (the C core's Python face) and the error hierarchy import no other package of the project, so that
    everything may use them: catalog reaches its errors without mesh."""
    project = set(PROJECT) - {package}
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & project) for p in _modules(package)
                 if _imports(p) & project}
    assert offenders == {}


def test_catalog_needs_no_mesh() -> None:
    """The catalog (the data plane as a library) imports nothing of mesh/, how services reach each other."""
    assert [str(p.relative_to(ROOT)) for p in _modules("catalog") if "mesh" in _imports(p)] == []


def _full_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


def test_the_rankers_rollout_asks_the_ranker_through_its_interface_only() -> None:
    """ranker/rollout.py imports nothing of ranker/service.py and reads none of the Ranker's state: it calls
    `item_rows`, `load_version` and `swap` (its Host protocol) and nothing else on the core."""
    path = ROOT / "ranker" / "rollout.py"
    assert "ranker.service" not in _full_imports(path)
    tree = ast.parse(path.read_text())
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute) and node.value.attr == "core"}
    assert used <= {"item_rows", "load_version", "swap"}, used


def test_no_module_reads_the_simulators_hidden_state() -> None:
    """user_tastes and item_embeddings (the answer key) are read only inside world/ and by tests and benchmarks."""
    readers = [str(p.relative_to(ROOT)) for package in (*SERVING, "cli") for p in _modules(package)
               if "user_tastes" in p.read_text() or "item_embeddings" in p.read_text()]
    assert readers == []


TRAINING_LIBRARIES = ("torch", "scipy", "implicit", "learning")


@pytest.mark.parametrize("package", SERVICES)
def test_a_serving_process_imports_no_training_library(package: str) -> None:
    """`python -m <service>` loads none of torch, scipy, implicit or the offline learning package: serving needs only
    ONNX Runtime (a fresh interpreter, so that nothing this test run imported hides a stray import)."""
    probe = (f"import sys, {package}.__main__; "
             f"print(','.join(m for m in {TRAINING_LIBRARIES!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == ""
