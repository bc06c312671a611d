"""The main window: a sidebar of pages, a status bar, and a tray icon that keeps contributing when the
window is closed."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QCloseEvent, QIcon
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QListWidget,
    QMainWindow,
    QMenu,
    QStackedWidget,
    QSystemTrayIcon,
    QWidget,
)

from app.jobs.runner import JobRunner
from app.pages.contribute.page import ContributePage
from app.pages.results.page import ResultsPage
from app.pages.settings.page import SettingsPage
from app.pages.train.page import TrainPage
from app.style import STYLE
from lemcore.contribute.setup import resolve_generation_model
from lemcore.models.loading import warm_tokenizer
from lemcore.resources import resource
from lemcore.secrets import KeyringTokenStore, TokenStore
from lemcore.settings import load_settings

TRAY_TEXT = {"idle": "LEM: idle", "running": "LEM: contributing", "paused": "LEM: paused",
             "waiting": "LEM: waiting for the server"}


class MainWindow(QMainWindow):
    def __init__(self, *, token_store: TokenStore | None = None, runner: JobRunner | None = None) -> None:
        super().__init__()
        self.token_store: TokenStore = token_store if token_store is not None else KeyringTokenStore()
        token_store = self.token_store
        self.runner = runner or JobRunner(self)
        self.setWindowTitle("LEM Desktop")
        self.resize(1180, 780)
        self.setStyleSheet(STYLE)
        self.nav = QListWidget()
        self.nav.setFixedWidth(190)
        self.nav.setObjectName("nav")
        self.nav.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.stack = QStackedWidget()
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.nav)
        layout.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self.nav.currentRowChanged.connect(self.stack.setCurrentIndex)

        self.contribute = ContributePage(self.runner, token_store)
        self.settings_page = SettingsPage(self.runner, token_store)
        self.pages: dict[str, QWidget] = {}
        self.add_page("Contribute", self.contribute)
        self.add_page("Train", TrainPage(self.runner))
        self.add_page("Results", ResultsPage(self.runner))
        self.add_page("Settings", self.settings_page)
        self.settings_page.saved.connect(self.contribute._refresh_summary)
        self.nav.setCurrentRow(0)
        self.statusBar().showMessage("Ready")
        self.quitting = False  # set once by quit(): the window then closes instead of hiding in the tray
        self.tray = self._make_tray()
        self.contribute.state_changed.connect(self._on_state)
        self._warm_contribute_model()

    @staticmethod
    def _warm_contribute_model() -> None:
        """Load the contribute model's tokenizer now, before the window shows: parsing it would freeze the
        window at the first Start (docs/platform-notes.md, "GIL release and GUI stalls")."""

        settings = load_settings()
        if settings.first_run_done:
            warm_tokenizer(resolve_generation_model(settings.model_override))

    def add_page(self, title: str, page: QWidget) -> None:
        self.pages[title] = page
        self.nav.addItem(title)
        self.stack.addWidget(page)

    def show_page(self, title: str) -> None:
        self.nav.setCurrentRow(list(self.pages).index(title))

    # -- tray ---------------------------------------------------------------------------------------
    def _make_tray(self) -> QSystemTrayIcon | None:
        if not QSystemTrayIcon.isSystemTrayAvailable():
            return None
        icon_path = resource("icon.png")
        tray = QSystemTrayIcon(QIcon(str(icon_path)) if icon_path.exists() else self.windowIcon(), self)
        menu = QMenu()
        self.tray_state = QAction("LEM: idle", menu)
        self.tray_state.setEnabled(False)
        menu.addAction(self.tray_state)
        menu.addAction("Start contributing", self.contribute.start)
        menu.addAction("Pause", self.contribute.pause)
        menu.addSeparator()
        menu.addAction("Show window", self._show_window)
        menu.addAction("Quit LEM Desktop", self.quit)
        tray.setContextMenu(menu)
        tray.setToolTip("LEM Desktop")
        tray.show()
        return tray

    def _on_state(self, state: str) -> None:
        text = TRAY_TEXT.get(state, f"LEM: {state}")
        self.statusBar().showMessage(text.replace("LEM: ", "").capitalize())
        if self.tray is not None:
            self.tray_state.setText(text)
            self.tray.setToolTip(text)

    def _show_window(self) -> None:
        self.show()
        self.raise_()
        self.activateWindow()

    # -- quitting -----------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        if not self.quitting and self.tray is not None and self.runner.busy("contribute"):
            event.ignore()  # keep contributing from the tray
            self.hide()
            self.tray.showMessage("LEM Desktop", "Still contributing. Use the tray icon to pause or quit.")
            return
        event.accept()
        self.quit()

    def quit(self) -> None:
        """The one way out (tray menu, closing the window, app.aboutToQuit): close the window, stop the jobs
        (at most a few seconds: finished answers are already on disk) and end the event loop. Runs once."""
        if self.quitting:
            return
        self.quitting = True
        self.close()
        self.runner.shutdown()
        QApplication.quit()
