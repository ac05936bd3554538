"""The layout DESIGN.md keeps: serving and training never read the simulator, and services never import each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVING = ("catalog", "engines", "gateway", "generator", "mesh", "native", "paramserver", "ranker")
SERVICES = ("gateway", "generator", "paramserver", "ranker")


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


@pytest.mark.parametrize("package", SERVING)
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
