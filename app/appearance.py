"""Light or dark: follows the system's colour scheme (Qt's QStyleHints.colorScheme) unless Settings says
Light or Dark. One `Appearance` per application applies the palette and the style sheet to the whole app and
tells charts and status lines to recolour (`changed`), so they follow too, also when the system switches
while the app runs."""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QStyleFactory

from app.style import DARK, LIGHT, Theme, style_sheet

MODES = ("system", "light", "dark")
MODE_LABELS = {"system": "Same as the system", "light": "Light", "dark": "Dark"}
# Styles that draw with the application palette; others (the old Windows style) get Fusion when dark.
_PALETTE_STYLES = ("fusion", "macos", "windows11")


def dark_palette(theme: Theme = DARK) -> QPalette:
    t = theme
    p = QPalette()
    role = QPalette.ColorRole
    group = QPalette.ColorGroup
    for r, color in ((role.Window, t.window), (role.WindowText, t.text), (role.Base, t.base),
                     (role.AlternateBase, t.alt_base), (role.Text, t.text), (role.Button, t.button),
                     (role.ButtonText, t.text), (role.BrightText, "#ffffff"), (role.Highlight, t.accent),
                     (role.HighlightedText, t.accent_text), (role.ToolTipBase, t.alt_base),
                     (role.ToolTipText, t.text), (role.Link, t.link), (role.LinkVisited, t.link),
                     (role.PlaceholderText, t.hint), (role.Light, "#4a4d52"), (role.Midlight, "#3a3c41"),
                     (role.Mid, "#2e3034"), (role.Dark, "#151618"), (role.Shadow, "#000000")):
        p.setColor(r, QColor(color))
    disabled = QColor("#75797f")
    for r in (role.WindowText, role.Text, role.ButtonText, role.PlaceholderText):
        p.setColor(group.Disabled, r, disabled)
    p.setColor(group.Disabled, role.Base, QColor(t.window))
    p.setColor(group.Disabled, role.Button, QColor("#2a2b2f"))
    p.setColor(group.Disabled, role.Highlight, QColor("#3a3c41"))
    return p


class Appearance(QObject):
    """The app's theme. `mode` is the setting (system, light, dark); `theme` what is shown now."""

    changed = Signal(object)  # the new Theme

    def __init__(self, app: QApplication) -> None:
        super().__init__(app)
        self.app = app
        self.mode = "system"
        self.system_scheme = app.styleHints().colorScheme()
        self.theme = LIGHT
        self._style_name = app.style().name()
        app.styleHints().colorSchemeChanged.connect(self._system_changed)

    def set_mode(self, mode: str) -> Theme:
        self.mode = mode if mode in MODES else "system"
        hints = self.app.styleHints()
        # Ask the platform too (Qt 6.8+), so native parts (title bar, macOS widgets) match a forced choice.
        if self.mode == "system":
            hints.unsetColorScheme()
            self.system_scheme = hints.colorScheme()
        else:
            hints.setColorScheme(Qt.ColorScheme.Dark if self.mode == "dark" else Qt.ColorScheme.Light)
        return self.apply()

    def _system_changed(self, scheme: Qt.ColorScheme) -> None:
        if self.mode == "system":
            self.system_scheme = scheme
            self.apply()

    def effective_dark(self) -> bool:
        if self.mode != "system":
            return self.mode == "dark"
        return self.system_scheme == Qt.ColorScheme.Dark

    def apply(self) -> Theme:
        theme = DARK if self.effective_dark() else LIGHT
        app = self.app
        if theme.dark and app.style().name().lower() not in _PALETTE_STYLES:
            app.setStyle(QStyleFactory.create("Fusion"))
        elif not theme.dark and app.style().name() != self._style_name:
            app.setStyle(QStyleFactory.create(self._style_name))
        app.setPalette(dark_palette(theme) if theme.dark else app.style().standardPalette())
        app.setStyleSheet(style_sheet(theme))
        self.theme = theme
        self.changed.emit(theme)
        return theme


_instance: Appearance | None = None


def appearance() -> Appearance:
    """The application's Appearance (made on first use; needs a QApplication)."""
    global _instance
    app = QGuiApplication.instance()
    if _instance is None or _instance.app is not app:
        if not isinstance(app, QApplication):
            raise RuntimeError("appearance() needs a QApplication")
        _instance = Appearance(app)
    return _instance


def current_theme() -> Theme:
    """The theme in use, without making an Appearance (light before the app has one)."""
    return _instance.theme if _instance is not None else LIGHT


def apply_appearance(mode: str) -> Theme:
    return appearance().set_mode(mode)
