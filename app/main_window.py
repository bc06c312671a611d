"""The main window: a sidebar of pages (Contribute, Train, Results, Settings) and a status bar."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QStackedWidget,
    QWidget,
)

from app.pages.welcome_page import WelcomePage


class MainWindow(QMainWindow):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("LEM Desktop")
        self.resize(1100, 720)
        self.nav = QListWidget()
        self.nav.setFixedWidth(180)
        self.nav.setObjectName("nav")
        self.nav.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.nav.setStyleSheet(
            "QListWidget#nav { border: none; background: palette(window); font-size: 15px; padding-top: 12px; }"
            "QListWidget#nav::item { padding: 10px 16px; border-radius: 6px; margin: 2px 8px; }"
            "QListWidget#nav::item:selected { background: palette(highlight); color: palette(highlighted-text); }"
        )
        self.stack = QStackedWidget()
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.nav)
        layout.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self.nav.currentRowChanged.connect(self.stack.setCurrentIndex)
        self.add_page("Contribute", WelcomePage())
        self.nav.setCurrentRow(0)
        self.statusBar().showMessage("Ready")

    def add_page(self, title: str, page: QWidget) -> None:
        item = QListWidgetItem(title)
        self.nav.addItem(item)
        self.stack.addWidget(page)
