"""The app starts offscreen, shows its main window, and renders real text (a font exists)."""

from __future__ import annotations

import subprocess
import sys

from PySide6.QtGui import QFontDatabase

from app.main_window import MainWindow


def test_main_window_opens(qtbot) -> None:
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    assert window.windowTitle() == "LEM Desktop"
    assert window.nav.count() >= 1
    assert QFontDatabase.families(), "no fonts: Qt would draw boxes instead of text"
    image = window.grab().toImage()
    assert image.width() > 500 and not image.isNull()


def test_app_entry_point_renders_screenshot(tmp_path) -> None:
    png = tmp_path / "main.png"
    out = subprocess.run([sys.executable, "-m", "app", "--screenshot", str(png)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert png.stat().st_size > 5000


def test_window_loads_the_contribute_models_tokenizer_before_it_shows(make_window, tmp_path) -> None:
    # Parsing a tokenizer holds the GIL for a few hundred ms: done at the first Start it froze the window.
    from lemcore.models import loading as model_loading
    from lemcore.settings import Settings
    from tests.tiny_models import make_tiny_model

    first_run = make_tiny_model(tmp_path / "first")
    make_window(settings=Settings(first_run_done=False, solo=True, model_override=str(first_run)))
    assert not any(str(first_run.resolve()) == key[0] for key in model_loading._TOKENIZERS)

    chosen = make_tiny_model(tmp_path / "chosen")
    make_window(settings=Settings(first_run_done=True, solo=True, model_override=str(chosen)))
    assert any(str(chosen.resolve()) == key[0] for key in model_loading._TOKENIZERS)
