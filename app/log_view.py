"""The log, for bug reports: the end of the app's log file in a window, with Copy to clipboard.

Tokens and API keys are never logged; as a second guard, anything shaped like a credential (an
Authorization header, `token=...`, the value of INFLUX_TOKEN) is hidden before it is shown or copied."""

from __future__ import annotations

import os
import re
from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices, QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.errors import log_path

MAX_BYTES = 512 * 1024  # the end of a long log is what a bug report needs
HIDDEN = "[hidden]"
_SECRET_PATTERNS = (
    # Authorization: Token abc / Bearer abc / Basic abc
    re.compile(r"(?i)\b(authorization\s*[:=]\s*)(\S+(?:\s+\S+)?)"),
    re.compile(r"(?i)\b(bearer|basic|token)(\s+)([A-Za-z0-9._~+/=-]{16,})"),
    # token=..., api_key: ..., password = ...
    re.compile(r"(?i)\b((?:[a-z_]*token|api[_-]?key|password|secret)\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|\S+)"),
)


def redact(text: str) -> str:
    """The text with anything that looks like a credential replaced by [hidden]."""
    for name in ("INFLUX_TOKEN", "LEM_JUDGE_API_KEY", "OPENAI_API_KEY"):
        value = os.environ.get(name, "")
        if len(value) >= 8:
            text = text.replace(value, HIDDEN)
    for pattern in _SECRET_PATTERNS:
        if pattern.groups == 3:
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{HIDDEN}", text)
        else:
            text = pattern.sub(lambda m: f"{m.group(1)}{HIDDEN}", text)
    return text


def read_log(path: Path | None = None, max_bytes: int = MAX_BYTES) -> str:
    """The end of the log file (whole lines), redacted; a sentence when there is no log yet."""
    path = path or log_path()
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            if size > max_bytes:
                fh.seek(size - max_bytes)
                fh.readline()  # drop the cut line
            data = fh.read()
    except OSError:
        return ""
    return redact(data.decode("utf-8", errors="replace"))


class LogView(QDialog):
    def __init__(self, parent: QWidget | None = None, path: Path | None = None) -> None:
        super().__init__(parent)
        self.path = path or log_path()
        self.setWindowTitle("Log — LEM Desktop")
        self.resize(820, 520)
        layout = QVBoxLayout(self)
        intro = QLabel("What the app has recorded. When you report a problem, copy this and include it. "
                       "Tokens and keys are never written here.")
        intro.setWordWrap(True)
        intro.setObjectName("hint")
        layout.addWidget(intro)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        layout.addWidget(self.text, 1)
        self.where = QLabel(f"Log file: {self.path}")
        self.where.setObjectName("hint")
        self.where.setWordWrap(True)
        layout.addWidget(self.where)
        row = QHBoxLayout()
        self.copy_btn = QPushButton("Copy to clipboard")
        self.copy_btn.setObjectName("primary")
        self.copy_btn.setToolTip("Copy the whole log shown here, to paste into a bug report.")
        self.copy_btn.clicked.connect(self.copy)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        folder = QPushButton("Open log folder")
        folder.clicked.connect(self._open_folder)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        for b in (self.copy_btn, refresh, folder):
            row.addWidget(b)
        row.addStretch(1)
        row.addWidget(close)
        layout.addLayout(row)
        self.message = QLabel("")
        self.message.setObjectName("hint")
        layout.addWidget(self.message)
        self.refresh()

    def refresh(self) -> None:
        text = read_log(self.path)
        self.text.setPlainText(text or "Nothing has been logged yet.")
        self.copy_btn.setEnabled(bool(text))
        bar = self.text.verticalScrollBar()
        bar.setValue(bar.maximum())  # the newest lines

    def lines(self) -> list[str]:
        return self.text.toPlainText().splitlines()

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.text.toPlainText())
        self.message.setText(f"Copied {len(self.lines())} lines to the clipboard.")

    def _open_folder(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.path.parent)))
