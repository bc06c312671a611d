"""Settings: server, worker name, token (set / replace / remove, never shown), model, limits, appearance,
notifications, folders."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices, QShowEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.appearance import MODE_LABELS, MODES, apply_appearance
from app.errors import user_message
from app.jobs.runner import JobRunner
from app.widgets import Card, heading
from lemcore.errors import LemError
from lemcore.jobs import CancelToken, Report
from lemcore.secrets import TokenStore
from lemcore.settings import config_dir, data_dir, load_settings, save_settings


class SettingsPage(QWidget):
    saved = Signal()

    def __init__(self, runner: JobRunner, token_store: TokenStore) -> None:
        super().__init__()
        self.runner, self.token_store = runner, token_store
        s = load_settings()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(24, 16, 24, 12)
        layout.addWidget(heading("Settings", "Everything is stored on this computer; the token only in the "
                                 "system keychain."))

        server = Card()
        form = QFormLayout()
        server.body.addWidget(QLabel("<b>Lab server</b>"))
        server.body.addLayout(form)
        self.url = QLineEdit(s.influx_url)
        self.url.setPlaceholderText("e.g. https://lab.example:8181 (empty: contribute offline)")
        self.db = QLineEdit(s.influx_db)
        self.worker = QLineEdit(s.worker_name)
        self.worker.setPlaceholderText(s.effective_worker())
        self.solo = QCheckBox("Contribute offline even when a server is set")
        self.solo.setChecked(s.solo)
        form.addRow("Server address", self.url)
        form.addRow("Database", self.db)
        form.addRow("Worker name", self.worker)
        form.addRow("", self.solo)
        token_row = QHBoxLayout()
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("Paste a new token to set or replace it")
        self.save_token = QPushButton("Save token")
        self.save_token.clicked.connect(self._save_token)
        self.remove_token = QPushButton("Remove token")
        self.remove_token.clicked.connect(self._remove_token)
        token_row.addWidget(self.token, 1)
        token_row.addWidget(self.save_token)
        token_row.addWidget(self.remove_token)
        form.addRow("Token", token_row)
        self.token_state = QLabel("")
        self.token_state.setObjectName("hint")
        form.addRow("", self.token_state)
        layout.addWidget(server)

        compute = Card()
        cform = QFormLayout()
        compute.body.addWidget(QLabel("<b>Model and limits</b>"))
        compute.body.addLayout(cform)
        self.model = QLineEdit(s.model_override)
        self.model.setPlaceholderText("Empty: the model recommended for this computer")
        self.min_free = QDoubleSpinBox()
        self.min_free.setRange(0.5, 64)
        self.min_free.setSuffix(" GB")
        self.min_free.setValue(s.min_free_memory_gb)
        self.guard = QCheckBox("Keep answers from going round in circles (recommended)")
        self.guard.setChecked(s.repetition_guard)
        self.guard.setToolTip("Small models often repeat a sentence until they run out of room. This steers the "
                              "model away from repeating itself and stops an answer that loops, so more answers "
                              "are good enough to send. Off: the lab's plain settings.")
        cform.addRow("Model (hub id or folder)", self.model)
        cform.addRow("Pause when free memory is below", self.min_free)
        cform.addRow("Answers", self.guard)
        layout.addWidget(compute)

        look = Card()
        lform = QFormLayout()
        look.body.addWidget(QLabel("<b>Appearance and notifications</b>"))
        look.body.addLayout(lform)
        self.appearance = QComboBox()
        for mode in MODES:
            self.appearance.addItem(MODE_LABELS[mode], mode)
        self.appearance.setCurrentIndex(max(0, self.appearance.findData(s.appearance)))
        self.appearance.setToolTip("Light or dark. “Same as the system” follows your computer's setting, also "
                                   "when it changes. Applied at once.")
        self.appearance.currentIndexChanged.connect(self._appearance_changed)
        lform.addRow("Colours", self.appearance)
        self.notify = QCheckBox("Tell me from the tray icon when I reach answer milestones")
        self.notify.setChecked(s.notify_milestones)
        self.notify.setToolTip("While the window is closed, the tray icon tells you at 10, 25, 50, 100... answers "
                               "this session and when the lab's questions run out. Saved at once; the same choice as "
                               "“Notify me of milestones” on the Contribute page.")
        self.notify.toggled.connect(self._notify_changed)
        notify_hint = QLabel("Problems that stop contributing are always shown there.")
        notify_hint.setObjectName("hint")
        lform.addRow("Notifications", self.notify)
        lform.addRow("", notify_hint)
        layout.addWidget(look)

        bottom = QHBoxLayout()
        self.save_btn = QPushButton("Save settings")
        self.save_btn.setObjectName("primary")
        self.save_btn.clicked.connect(self.save)
        self.message = QLabel("")
        self.message.setObjectName("hint")
        bottom.addWidget(self.save_btn)
        bottom.addWidget(self.message, 1)
        # The folders, on the same row (a card of their own would make the page scroll at 900x600).
        for label, path in (("Open data folder", data_dir()), ("Open settings folder", config_dir())):
            btn = QPushButton(label)
            btn.setToolTip(f"{path} (answers, runs and the log are in the data folder)" if path == data_dir()
                           else str(path))
            btn.clicked.connect(lambda _=False, p=path: self._open(p))
            bottom.addWidget(btn)
        layout.addLayout(bottom)
        layout.addStretch(1)
        self.refresh_token_state()

    def save(self) -> None:
        s = load_settings()
        url = self.url.text().strip()
        if url and not url.startswith(("http://", "https://")):
            self.message.setText("The server address must start with https:// (or http:// on a lab network).")
            return
        s.influx_url, s.influx_db = url, self.db.text().strip() or "training"
        s.worker_name, s.solo = self.worker.text().strip(), self.solo.isChecked()
        s.model_override, s.min_free_memory_gb = self.model.text().strip(), self.min_free.value()
        s.repetition_guard = self.guard.isChecked()
        save_settings(s)
        self.message.setText("Saved.")
        self.saved.emit()

    def _appearance_changed(self) -> None:
        mode = self.appearance.currentData() or "system"
        apply_appearance(mode)
        s = load_settings()
        s.appearance = mode
        save_settings(s)

    def _notify_changed(self, on: bool) -> None:
        s = load_settings()
        if s.notify_milestones == on:
            return
        s.notify_milestones = on
        save_settings(s)
        self.saved.emit()  # the Contribute page shows the same choice

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt override
        # The Contribute page may have changed the milestone choice meanwhile.
        try:
            on = load_settings().notify_milestones
        except LemError:
            on = self.notify.isChecked()  # an unreadable settings file is reported where it is saved
        if self.notify.isChecked() != on:
            self.notify.blockSignals(True)
            self.notify.setChecked(on)
            self.notify.blockSignals(False)
        super().showEvent(event)

    def refresh_token_state(self) -> None:
        store = self.token_store  # the job runs on a worker thread: no widget in its closure

        def read(report: Report, cancel: CancelToken) -> bool:
            return bool(store.get())

        self.runner.start("read-token", read, kind="io",
                          on_done=lambda has: self.token_state.setText(
                              "A token is saved in the keychain." if has else "No token saved."),
                          on_error=self._show_error)

    def _save_token(self) -> None:
        token = self.token.text()
        self.token.clear()
        if not token.strip():
            self.token_state.setText("Paste the token first.")
            return
        store = self.token_store  # the job runs on a worker thread: no widget in its closure
        self.runner.start("save-token", lambda report, cancel: store.set(token), kind="io",
                          on_done=lambda _r: self.refresh_token_state(), on_error=self._show_error)

    def _remove_token(self) -> None:
        store = self.token_store  # the job runs on a worker thread: no widget in its closure
        self.runner.start("remove-token", lambda report, cancel: store.delete(), kind="io",
                          on_done=lambda _r: self.refresh_token_state(), on_error=self._show_error)

    def _show_error(self, err: BaseException) -> None:
        msg = user_message(err)
        if msg:
            self.token_state.setText(msg[1])

    @staticmethod
    def _open(path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))

