"""The main window: a sidebar of pages, menus with keyboard shortcuts, a status bar, and a tray icon that keeps
contributing when the window is closed."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QAction, QCloseEvent, QGuiApplication, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QAbstractButton,
    QApplication,
    QHBoxLayout,
    QListWidget,
    QMainWindow,
    QMenu,
    QStackedWidget,
    QSystemTrayIcon,
    QWidget,
)

from app.appearance import apply_appearance
from app.jobs.runner import JobRunner
from app.log_view import LogView
from app.pages.contribute.page import ContributePage
from app.pages.loop.page import LoopPage
from app.pages.results.page import ResultsPage
from app.pages.settings.page import SettingsPage
from app.pages.train.page import TrainPage
from app.widgets import PageScroll
from lemcore.contribute.setup import resolve_generation_model
from lemcore.errors import LemError
from lemcore.generate.cpu.decode import warm_kernels
from lemcore.models.loading import warm_tokenizer
from lemcore.resources import resource
from lemcore.secrets import KeyringTokenStore, TokenStore
from lemcore.settings import load_settings

TRAY_TEXT = {"idle": "LEM: idle", "running": "LEM: contributing", "paused": "LEM: paused",
             "waiting": "LEM: waiting for the server"}
# The window works from this size up (pages scroll rather than force a wider window); it opens larger.
MIN_SIZE = QSize(800, 560)
DEFAULT_SIZE = QSize(1180, 780)
# Keyboard shortcuts of the main actions (PortableText: Ctrl is Cmd on a Mac).
SHORTCUTS = {"Start contributing": "Ctrl+Shift+S", "Pause contributing": "Ctrl+Shift+P",
             "Start training": "Ctrl+Shift+T", "Stop training": "Ctrl+Shift+X", "Quit": "Ctrl+Q",
             "Show the log": "Ctrl+Shift+L"}


def shortcut_text(sequence: str) -> str:
    """A shortcut as this platform writes it (Ctrl+Shift+T, or ⇧⌘T on a Mac)."""
    return QKeySequence(sequence).toString(QKeySequence.SequenceFormat.NativeText)


class MainWindow(QMainWindow):
    def __init__(self, *, token_store: TokenStore | None = None, runner: JobRunner | None = None) -> None:
        super().__init__()
        self.token_store: TokenStore = token_store if token_store is not None else KeyringTokenStore()
        token_store = self.token_store
        self.runner = runner or JobRunner(self)
        self.setWindowTitle("LEM Desktop")
        apply_appearance(load_settings().appearance)  # palette and style sheet for the whole app
        self.setMinimumSize(MIN_SIZE)
        self.resize(self._default_size())
        self.nav = QListWidget()
        self.nav.setFixedWidth(170)
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
        self.train = TrainPage(self.runner)
        self.loop = LoopPage(self.runner)
        self.results = ResultsPage(self.runner)
        self.pages: dict[str, QWidget] = {}
        self.add_page("Contribute", self.contribute)
        self.add_page("Train", self.train)
        self.add_page("LEK loop", self.loop)
        self.add_page("Results", self.results)
        self.loop.open_comparison.connect(self.show_comparison)
        self.add_page("Settings", self.settings_page)
        self.settings_page.saved.connect(self.contribute._refresh_summary)
        self.nav.setCurrentRow(0)
        self.statusBar().showMessage("Ready")
        self.quitting = False  # set once by quit(): the window then closes instead of hiding in the tray
        self.log_view: LogView | None = None
        self.shortcut_actions: dict[str, QAction] = {}
        self._make_menus()
        self.tray = self._make_tray()
        self.contribute.state_changed.connect(self._on_state)
        self.notifications: list[tuple[str, str, bool]] = []  # what notify() was asked to show, newest last
        self.contribute.notify.connect(self.notify)
        self._warm_contribute_model()

    @staticmethod
    def _default_size() -> QSize:
        screen = QGuiApplication.primaryScreen()
        if screen is None:
            return DEFAULT_SIZE
        free = screen.availableGeometry().size() * 0.92
        return DEFAULT_SIZE.boundedTo(free).expandedTo(MIN_SIZE)

    @staticmethod
    def _warm_contribute_model() -> None:
        """Load the contribute model's tokenizer now, before the window shows: parsing it would freeze the
        window at the first Start (docs/platform-notes.md, "GIL release and GUI stalls"); and on Linux the
        decoding step's Numba kernels, whose library load holds the GIL (~0.2 s more start-up here)."""

        settings = load_settings()
        if settings.first_run_done:
            warm_tokenizer(resolve_generation_model(settings.model_override))
            if sys.platform.startswith("linux"):  # the NumPy decoding step's Numba kernels (MLX's CPU backend)
                warm_kernels()

    def add_page(self, title: str, page: QWidget) -> None:
        """A page in the sidebar. It sits in a scroll area, so a page that needs more room than a small window
        has scrolls instead of forcing the window's minimum size up."""
        self.pages[title] = page
        self.nav.addItem(title)
        self.stack.addWidget(PageScroll(page))

    def show_page(self, title: str) -> None:
        self.nav.setCurrentRow(list(self.pages).index(title))

    def show_comparison(self, base_run: Path, trained_run: Path) -> None:
        """The Results page on a pair of benchmark runs (a finished LEK loop's base and trained model)."""
        self.show_page("Results")
        try:
            self.results.show_pair(Path(base_run), Path(trained_run))
        except LemError as err:  # a run folder deleted meanwhile: said on the page, not raised in a slot
            self.results.status.set_state("error", str(err))

    # -- menus and shortcuts ------------------------------------------------------------------------
    def _action(self, menu: QMenu, text: str, slot: Callable[[], object], shortcut: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
            action.setToolTip(f"{text} ({shortcut_text(shortcut)})")
        action.triggered.connect(lambda _checked=False: slot())
        menu.addAction(action)
        self.addAction(action)  # also active when the menu bar is hidden (or global, on a Mac)
        self.shortcut_actions[text] = action
        return action

    def _make_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        quit_action = self._action(file_menu, "Quit", self.quit, SHORTCUTS["Quit"])
        quit_action.setMenuRole(QAction.MenuRole.QuitRole)
        view = bar.addMenu("&View")
        for n, title in enumerate(self.pages, start=1):
            key = f"Ctrl+{n}"
            self._action(view, title, functools.partial(self.show_page, title), key)
            item = self.nav.item(n - 1)
            item.setToolTip(f"{title} ({shortcut_text(key)})")
        contribute = bar.addMenu("&Contribute")
        for text, slot in (("Start contributing", self.start_contributing),
                           ("Pause contributing", self.pause_contributing)):
            self._action(contribute, text, slot, SHORTCUTS[text])
        train = bar.addMenu("&Train")
        for text, slot in (("Start training", self.start_training), ("Stop training", self.stop_training)):
            self._action(train, text, slot, SHORTCUTS[text])
        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "Show the log", self.show_log, SHORTCUTS["Show the log"])
        # The buttons say their shortcut in their tooltips.
        for button, text in ((self.contribute.start_btn, "Start contributing"),
                             (self.contribute.pause_btn, "Pause contributing"),
                             (self.train.start_btn, "Start training"), (self.train.stop_btn, "Stop training")):
            _add_shortcut_tip(button, text, SHORTCUTS[text])

    def start_contributing(self) -> None:
        self.show_page("Contribute")
        if load_settings().first_run_done:  # before that, the page's first steps come first
            self.contribute.start()

    def pause_contributing(self) -> None:
        self.contribute.pause()

    def start_training(self) -> None:
        self.show_page("Train")
        self.train.start()

    def stop_training(self) -> None:
        self.train.stop()

    def show_log(self) -> LogView:
        if self.log_view is None:
            self.log_view = LogView(self)
        else:
            self.log_view.refresh()
        self.log_view.show()
        self.log_view.raise_()
        self.log_view.activateWindow()
        return self.log_view

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
        menu.addAction("Start contributing", self.start_contributing)
        menu.addAction("Pause", self.pause_contributing)
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

    def notify(self, title: str, text: str, error: bool = False) -> bool:
        """Tell the volunteer from the tray while the window is closed or minimised: errors always,
        milestones only when they asked for them (the Contribute page's option). Returns whether it showed."""
        if self.isVisible() and not self.isMinimized():
            return False  # the page says it already
        if not error and not self.contribute.notify_milestones:
            return False
        self.notifications.append((title, text, error))
        if self.tray is None:
            return False
        icon = QSystemTrayIcon.MessageIcon.Warning if error else QSystemTrayIcon.MessageIcon.Information
        self.tray.showMessage(title, text, icon, 10_000)
        return True

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


def _add_shortcut_tip(button: QAbstractButton, action: str, shortcut: str) -> None:
    tip = button.toolTip()
    keys = shortcut_text(shortcut)
    button.setToolTip(f"{tip} ({keys})" if tip else f"{action} ({keys})")
