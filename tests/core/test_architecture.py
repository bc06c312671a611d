"""The dependency rules: lemcore never imports Qt or app, the layers of ARCHITECTURE.md hold, no module imports
itself through others, and `import lemcore` does not import mlx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]


def test_import_linter_contract() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: 4 kept, 0 broken" in out.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), counting imports inside functions too."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                group.append(other)
                if other == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("lemcore", "app")
    assert _cycles(graph) == []
    # The check itself can fail: a graph with a circle is reported.
    graph.add_import(importer="lemcore.errors", imported="lemcore.models.loading")
    assert any("lemcore.errors" in group for group in _cycles(graph))


def test_import_lemcore_stays_light() -> None:
    code = (
        "import sys, lemcore, lemcore.cli.main, lemcore.settings, lemcore.secrets, lemcore.influx;"
        "bad = [m for m in ('mlx', 'mlx_lm', 'PySide6', 'pyqtgraph', 'app', 'influxdb_client', 'transformers')"
        " if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_lemcore_source_mentions_no_qt() -> None:
    offenders = [
        str(p) for p in (ROOT / "lemcore").rglob("*.py")
        if any(tok in p.read_text() for tok in ("import PySide6", "from PySide6", "import pyqtgraph", "from app"))
    ]
    assert offenders == []
