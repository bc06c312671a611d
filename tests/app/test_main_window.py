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
