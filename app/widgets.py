"""Small shared widgets: page heading, card, stat tile, status line."""

from __future__ import annotations

import html

from PySide6.QtWidgets import QFrame, QLabel, QVBoxLayout, QWidget

from app.appearance import appearance, current_theme
from app.style import Theme

STATE_COLORS = {"running": "#2aa876", "waiting": "#e0a02a", "paused": "#e0a02a", "idle": "#8a8f98",
                "error": "#d64541"}


def heading(title: str, subtitle: str = "") -> QWidget:
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 8)
    t = QLabel(title)
    t.setObjectName("title")
    layout.addWidget(t)
    if subtitle:
        s = QLabel(subtitle)
        s.setObjectName("hint")
        s.setWordWrap(True)
        layout.addWidget(s)
    return box


class Card(QFrame):
    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("card")
        self.body = QVBoxLayout(self)
        self.body.setContentsMargins(18, 14, 18, 14)


class StatTile(QFrame):
    def __init__(self, label: str, value: str) -> None:
        super().__init__()
        self.setObjectName("card")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 10, 14, 10)
        self.value = QLabel(value)
        self.value.setObjectName("statValue")
        name = QLabel(label)
        name.setObjectName("hint")
        layout.addWidget(self.value)
        layout.addWidget(name)

    def set_value(self, text: str) -> None:
        self.value.setText(text)


class StatusLine(QWidget):
    """A coloured dot and one honest sentence about what is happening.

    `state`, `text` and `note` hold what it shows. A widget around a label rather than a QLabel itself, so
    that `text` (the sentence, read by pages and tests) does not hide QLabel.text()."""

    def __init__(self) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.label = QLabel()
        self.label.setWordWrap(True)
        layout.addWidget(self.label)
        self.state, self.text, self.note = "idle", "Ready.", ""
        self._render()
        appearance().changed.connect(self._recolour)

    def _recolour(self, _theme: Theme) -> None:
        self._render()

    def set_state(self, state: str, text: str) -> None:
        self.state, self.text = state, text
        self._render()

    def set_note(self, note: str) -> None:
        self.note = note
        self._render()

    def _render(self) -> None:
        color = STATE_COLORS.get(self.state, "#8a8f98")
        hint = current_theme().hint
        note = f"<br><span style='color:{hint}'>{html.escape(self.note)}</span>" if self.note else ""
        self.label.setText(f"<span style='color:{color}; font-size:16px'>●</span> {html.escape(self.text)}{note}")
