"""Small shared widgets: page heading, card, stat tile, status line, the scroll area pages sit in, and the
model picker (`ModelBox`, listing `available_models()`) that pages choosing a model share."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QResizeEvent, QStandardItemModel
from PySide6.QtWidgets import QComboBox, QFrame, QLabel, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

from app.appearance import appearance, current_theme
from app.style import Theme
from lemcore.models.catalog import catalog
from lemcore.models.downloads import cached_snapshot
from lemcore.settings import data_dir

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


# -- the model picker ----------------------------------------------------------------------------------------
OTHER_MODEL = "\x00other"  # the data of the "Other…" entry of the model list


def _hub_cache() -> Path:
    from huggingface_hub import constants  # lazy: the hub client loads only for downloads

    return Path(constants.HF_HUB_CACHE)


def available_models() -> list[tuple[str, str, bool]]:
    """(text shown, value, usable now) for a model list: the catalog (usable once downloaded; the built-in
    model always), other downloaded hub models, and models converted by the app. Only reads folders."""
    out: list[tuple[str, str, bool]] = []
    seen: set[str] = set()
    for entry in catalog():
        if entry.embedded:
            out.append((entry.label, entry.id, True))
        else:
            here = cached_snapshot(entry.repo) is not None
            out.append((f"{entry.label}{'' if here else ' – not downloaded yet'}", entry.repo, here))
        seen.add(entry.repo.lower())
    try:
        cached = sorted(p.name for p in _hub_cache().glob("models--*") if p.is_dir())
    except OSError:
        cached = []
    for name in cached[:50]:
        repo = name[len("models--"):].replace("--", "/")
        if repo.lower() not in seen and cached_snapshot(repo) is not None:
            out.append((f"{repo} (downloaded)", repo, True))
            seen.add(repo.lower())
    converted = data_dir() / "models"
    if converted.is_dir():
        for folder in sorted(converted.iterdir()):
            if (folder / "config.json").is_file():
                out.append((f"{folder.name} (converted)", str(folder), True))
    return out


class ModelBox(QComboBox):
    """A model: pick one from the list, or type a hub id or folder ("Other…" clears the field for that).
    `value()` is what the engines take (a catalog id, hub id or folder)."""

    def __init__(self, value: str = "") -> None:
        super().__init__()
        self.setEditable(True)
        self.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(10)
        line = self.lineEdit()
        if line is not None:
            line.setPlaceholderText("A hub id (owner/name) or a model folder")
        self.activated.connect(self._picked)
        self.refresh()
        if value:
            self.set_value(value)

    def refresh(self) -> None:
        """Read the list again (a model may have been downloaded meanwhile); keeps the current value."""
        value = self.value()
        self.blockSignals(True)
        self.clear()
        model = self.model()
        for text, data, usable in available_models():
            self.addItem(text, data)
            if not usable and isinstance(model, QStandardItemModel):
                item = model.item(self.count() - 1)
                item.setEnabled(False)
                item.setToolTip("Not on this computer yet: choose a downloaded model, or type its hub id "
                                "once it is downloaded.")
        self.insertSeparator(self.count())
        self.addItem("Other: a hub id or a folder…", OTHER_MODEL)
        self.set_value(value)
        self.blockSignals(False)
        view = self.view()
        view.setMinimumWidth(view.sizeHintForColumn(0) + 24)  # the list shows whole names

    def _picked(self, index: int) -> None:
        if self.itemData(index) == OTHER_MODEL:
            self.setEditText("")
            line = self.lineEdit()
            if line is not None:
                line.setFocus(Qt.FocusReason.OtherFocusReason)

    def unavailable(self) -> bool:
        """The value is a catalog model that is not downloaded yet (its entry is greyed out)."""
        index = self.findData(self.value()) if self.value() else -1
        model = self.model()
        if index < 0 or not isinstance(model, QStandardItemModel):
            return False
        item = model.item(index)
        return item is not None and not item.isEnabled()

    def value(self) -> str:
        text = self.currentText().strip()
        index = self.findText(text)
        data = self.itemData(index) if index >= 0 else None
        if data == OTHER_MODEL:
            return ""
        return str(data) if data else text

    def set_value(self, value: str) -> None:
        index = self.findData(value) if value else -1
        if index >= 0:
            self.setCurrentIndex(index)
        else:
            self.setCurrentIndex(-1)
            self.setEditText(value)
        line = self.lineEdit()
        if line is not None:
            line.setCursorPosition(0)  # a narrow box shows the start of a long name, not its end

    # Line-edit style names, for callers that fill the field as text (tests, screenshots, probes).
    def setText(self, text: str) -> None:  # noqa: N802 - QLineEdit's name
        self.set_value(text)

    def text(self) -> str:
        return self.value()
