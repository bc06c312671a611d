"""The app starts offscreen, shows its main window, and renders real text (a font exists)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QApplication

from app.main_window import MainWindow
from lemcore.settings import Settings, load_settings


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


# -- appearance, size, shortcuts, log -------------------------------------------------------------------

@pytest.fixture
def light_again():
    """Tests below change the whole application's look: put it back to the system's (light, offscreen)."""
    yield
    from app.appearance import appearance

    QApplication.instance().styleHints().colorSchemeChanged.emit(Qt.ColorScheme.Light)
    appearance().set_mode("system")


def _is_dark(color) -> bool:
    return color.lightnessF() < 0.3


def test_dark_palette_follows_the_system_and_the_setting(qtbot, make_window, light_again) -> None:
    from app.appearance import appearance
    from app.style import DARK

    window = make_window(settings=Settings(first_run_done=True))
    app = QApplication.instance()
    chart = window.train.chart.loss
    assert not _is_dark(app.palette().window().color()) and appearance().mode == "system"
    # The system turns dark while the app runs (what QStyleHints reports on macOS, Windows and GNOME).
    app.styleHints().colorSchemeChanged.emit(Qt.ColorScheme.Dark)
    assert _is_dark(app.palette().window().color()) and _is_dark(app.palette().base().color())
    assert not _is_dark(app.palette().windowText().color())  # text stays readable
    assert _is_dark(chart.backgroundBrush().color())
    assert f"QLabel#hint {{ color: {DARK.hint}; }}" in app.styleSheet()  # the dark sheet: light grey hints
    app.styleHints().colorSchemeChanged.emit(Qt.ColorScheme.Light)
    assert not _is_dark(app.palette().window().color()) and not _is_dark(chart.backgroundBrush().color())

    # The setting wins over the system: Dark in Settings, saved and applied at once.
    settings = window.settings_page
    settings.appearance.setCurrentIndex(settings.appearance.findData("dark"))
    assert _is_dark(app.palette().window().color()) and _is_dark(chart.backgroundBrush().color())
    assert load_settings().appearance == "dark"
    image = window.grab().toImage()
    assert _is_dark(image.pixelColor(image.width() - 20, image.height() // 2))
    settings.appearance.setCurrentIndex(settings.appearance.findData("light"))
    app.styleHints().colorSchemeChanged.emit(Qt.ColorScheme.Dark)  # ignored: Light was chosen
    assert not _is_dark(app.palette().window().color())


def test_window_is_usable_at_900_by_600(qtbot, make_window) -> None:
    window = make_window(settings=Settings(first_run_done=True))
    window.show()
    qtbot.waitExposed(window)
    assert window.minimumSize().width() <= 900 and window.minimumSize().height() <= 600
    window.resize(900, 600)
    qtbot.waitUntil(lambda: window.size().width() == 900 and window.size().height() == 600)
    for title in ("Train", "Results", "Settings"):  # these pages fit without scrolling
        window.show_page(title)
        scroll = window.stack.currentWidget()
        qtbot.wait(50)
        assert not scroll.horizontalScrollBar().isVisible(), title
        assert not scroll.verticalScrollBar().isVisible(), title
    window.show_page("Contribute")  # the window does not grow to fit this page: it scrolls
    qtbot.wait(50)
    assert window.size().width() == 900


def test_shortcuts_trigger_their_actions(qtbot, make_window, monkeypatch) -> None:
    window = make_window(settings=Settings(first_run_done=True, solo=True))
    window.show()
    qtbot.waitExposed(window)
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    ctrl, shift = Qt.KeyboardModifier.ControlModifier, Qt.KeyboardModifier.ShiftModifier
    for n, title in enumerate(("Contribute", "Train", "LEK loop", "Results", "Settings"), start=1):
        qtbot.keyClick(window, getattr(Qt.Key, f"Key_{n}"), ctrl)
        assert window.stack.currentIndex() == n - 1, title
        assert f"Ctrl+{n}" in window.nav.item(n - 1).toolTip()
    calls: list[str] = []
    monkeypatch.setattr(window.contribute, "start", lambda: calls.append("start"))
    monkeypatch.setattr(window.contribute, "pause", lambda: calls.append("pause"))
    qtbot.keyClick(window, Qt.Key.Key_S, ctrl | shift)
    assert calls == ["start"] and window.stack.currentIndex() == 0
    qtbot.keyClick(window, Qt.Key.Key_P, ctrl | shift)
    assert calls == ["start", "pause"]
    # Start training with an empty form: the page opens and says what is missing (nothing starts).
    qtbot.keyClick(window, Qt.Key.Key_T, ctrl | shift)
    assert window.stack.currentIndex() == 1 and window.train.status.state == "error"
    assert window.train.job is None and "Choose a data folder" in window.train.form.errors["data"].text()
    monkeypatch.setattr(window.train, "stop", lambda: calls.append("stop training"))
    qtbot.keyClick(window, Qt.Key.Key_X, ctrl | shift)
    assert calls[-1] == "stop training"
    for button, keys in ((window.train.start_btn, "Ctrl+Shift+T"), (window.train.stop_btn, "Ctrl+Shift+X"),
                         (window.contribute.start_btn, "Ctrl+Shift+S"),
                         (window.contribute.pause_btn, "Ctrl+Shift+P")):
        assert keys in button.toolTip(), button.text()
    qtbot.keyClick(window, Qt.Key.Key_Q, ctrl)
    assert window.quitting and not window.isVisible()


def test_log_view_shows_lines_copies_them_and_hides_secrets(qtbot, make_window) -> None:
    import logging

    from app.errors import log_path, setup_logging
    from lemcore.errors import SecretStoreError

    path = setup_logging()
    handler = logging.getLogger().handlers[-1]
    try:
        logging.getLogger("lem.test").info("training started in %s", "/runs/a")
        logging.getLogger("lem.test").info("sent header Authorization: Token abcdefghijklmnop0123")
        try:
            raise SecretStoreError("No system keychain was found. Install one, or set INFLUX_TOKEN.")
        except SecretStoreError as err:
            logging.getLogger("app.jobs.runner").error("job %s failed", "read-token", exc_info=err)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert path == log_path()
    written = path.read_text(encoding="utf-8")
    # An expected failure is one warning line, without a traceback.
    assert "WARNING app.jobs.runner: job read-token failed: SecretStoreError: No system keychain" in written
    assert "Traceback" not in written

    window = make_window(settings=Settings(first_run_done=True))
    window.shortcut_actions["Show the log"].trigger()
    view = window.log_view
    assert view is not None and view.isVisible()
    lines = view.lines()
    assert any("training started in /runs/a" in line for line in lines)
    assert any("Authorization: [hidden]" in line for line in lines)
    assert "abcdefghijklmnop0123" not in view.text.toPlainText()
    QApplication.clipboard().clear()
    qtbot.mouseClick(view.copy_btn, Qt.MouseButton.LeftButton)
    assert QApplication.clipboard().text() == view.text.toPlainText() and len(lines) == 3


def test_no_keychain_is_said_in_the_windows_words(qtbot, make_window) -> None:
    from lemcore.errors import SecretStoreError

    class NoKeychain:
        """What KeyringTokenStore raises on a computer without a system keychain (first launch on Linux)."""

        def get(self, account: str = "influx-token") -> str | None:
            raise SecretStoreError("No system keychain is available. On Linux install and unlock a Secret "
                                   "Service (gnome-keyring or KWallet); until then use INFLUX_TOKEN or "
                                   "contribute offline.")

        def set(self, token: str, account: str = "influx-token") -> None:
            self.get()

        def delete(self, account: str = "influx-token") -> None:
            self.get()

    window = make_window(token_store=NoKeychain(), settings=Settings(first_run_done=True, solo=True))
    state = window.settings_page.token_state
    qtbot.waitUntil(lambda: "keychain" in state.text(), timeout=10000)
    assert "INFLUX_TOKEN" not in state.text() and "contribute offline" in state.text(), state.text()


def test_the_repetition_guard_is_a_setting_the_contribute_run_uses(make_window) -> None:
    from lemcore.contribute.setup import options_from_settings

    window = make_window(settings=Settings(first_run_done=True))
    page = window.settings_page
    assert page.guard.isChecked()  # on by default: more answers pass the quality gate
    page.guard.setChecked(False)
    page.save()
    assert load_settings().repetition_guard is False
    assert options_from_settings(load_settings()).sampling.repetition_penalty == 1.0  # the lab's plain sampling
