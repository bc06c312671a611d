"""The dependency rule: lemcore never imports Qt or app; `import lemcore` does not import mlx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_linter_contract() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: 1 kept, 0 broken" in out.stdout


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
