"""Small shared widgets: page heading, card, stat tile, status line, and the scroll area pages sit in."""

from __future__ import annotations

import html

from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QFrame, QLabel, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

from app.appearance import appearance, current_theme
from app.style import Theme

STATE_COLORS = {"running": "#2aa876", "waiting": "#e0a02a", "paused": "#e0a02a", "idle": "#8a8f98",
                "error": "#d64541"}


def _breakable(text: str) -> str:
    """Escaped for a rich-text label, with a line-break chance after each / and \\ (long folder paths)."""
    return html.escape(text).replace("/", "/\u200b").replace("\\", "\\\u200b")


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
        self.body.setContentsMargins(16, 10, 16, 10)


class StatTile(QFrame):
    def __init__(self, label: str, value: str, *, compact: bool = False) -> None:
        super().__init__()
        self.setObjectName("card")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(*((8, 6, 8, 6) if compact else (10, 8, 10, 8)))
        self.value = QLabel(value)
        self.value.setObjectName("statValueCompact" if compact else "statValue")
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
        # Long sentences and folder paths wrap; they never make the page wider.
        self.label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
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
        note = f"<br><span style='color:{hint}'>{_breakable(self.note)}</span>" if self.note else ""
        self.label.setText(f"<span style='color:{color}; font-size:16px'>●</span> {_breakable(self.text)}{note}")


class PageScroll(QScrollArea):
    """Holds one page. The page fills the window, and scrolls only when the window is smaller than the page's
    minimum size, so no page forces the window's minimum size up.

    (QScrollArea's own widgetResizable sizes a page with word-wrapped labels to its preferred height, which
    would make every page scroll; here the page gets its minimum height for the width at most.)"""

    def __init__(self, page: QWidget) -> None:
        super().__init__()
        self.setObjectName("pageScroll")
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setWidgetResizable(False)
        self.setWidget(page)
        page.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.fit()
        return super().eventFilter(watched, event)

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self.fit()

    def fit(self) -> None:
        page = self.widget()
        if page is None:
            return
        room = self.maximumViewportSize()  # the viewport's size without scroll bars
        bar_w = self.verticalScrollBar().sizeHint().width()
        bar_h = self.horizontalScrollBar().sizeHint().height()
        hint = page.minimumSizeHint()
        min_w = max(hint.width(), page.minimumWidth())
        layout = page.layout()

        def min_h(width: int) -> int:
            hfw = layout.minimumHeightForWidth(width) if layout is not None and layout.hasHeightForWidth() else 0
            return max(hfw, hint.height(), page.minimumHeight())

        scroll_x = min_w > room.width()
        width = max(min_w, room.width())
        if min_h(width) > room.height() - (bar_h if scroll_x else 0):  # a vertical bar takes some width
            scroll_x = min_w > room.width() - bar_w
            width = max(min_w, room.width() - bar_w)
        page.resize(width, max(min_h(width), room.height() - (bar_h if scroll_x else 0)))
