"""First-run step: the model chosen for this computer, its fit verdict in words, and preparing it
(download from the hub, or converting the built-in model) with progress."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from app.errors import user_message
from app.jobs.runner import JobRunner
from app.widgets import Card
from lemcore.contribute.setup import recommended_model
from lemcore.events import Event
from lemcore.hardware import detect_hardware
from lemcore.jobs import CancelToken, Report
from lemcore.models.catalog import find_entry
from lemcore.models.downloads import DownloadProgress
from lemcore.models.fit import assess_fit
from lemcore.models.gguf.convert import ConvertProgress
from lemcore.models.loading import LoadStage, load_model

VERDICT_COLORS = {"green": "#2aa876", "yellow": "#e0a02a", "red": "#d64541"}


class ModelStep(Card):
    done = Signal()

    def __init__(self, runner: JobRunner) -> None:
        super().__init__()
        self.runner = runner
        self.body.addWidget(QLabel("<h3>The model your computer will use</h3>"))
        self.choice = QLabel("")
        self.choice.setWordWrap(True)
        self.fit = QLabel("")
        self.fit.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.hide()
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setObjectName("hint")
        for w in (self.choice, self.fit, self.progress, self.message):
            self.body.addWidget(w)
        row = QHBoxLayout()
        self.prepare_btn = QPushButton("Prepare the model")
        self.prepare_btn.setObjectName("primary")
        self.prepare_btn.clicked.connect(self.prepare)
        self.skip_btn = QPushButton("Continue")
        self.skip_btn.setToolTip("The model is prepared when you first press Start contributing.")
        self.skip_btn.clicked.connect(self.done)
        row.addWidget(self.prepare_btn)
        row.addWidget(self.skip_btn)
        row.addStretch(1)
        holder = QWidget()
        holder.setLayout(row)
        self.body.addWidget(holder)
        self.model_id = ""

    def refresh(self, override: str, batch: int) -> None:
        rec = recommended_model()
        entry = find_entry(override) if override else rec.entry
        self.model_id = override or rec.entry.id
        if entry is None:  # an override that is no catalog id: a hub id or a folder
            self.choice.setText(f"<b>{override}</b> (your choice in Settings).")
            self.fit.setText("Its memory needs are checked before it is loaded.")
            return
        self.choice.setText(f"<b>{entry.label}</b>. {rec.reason if not override else 'Your choice in Settings.'}")
        report = assess_fit(entry.needs(), detect_hardware(), batch=batch)
        color = VERDICT_COLORS.get(report.verdict, "#333")
        self.fit.setText(f"<span style='color:{color}; font-weight:600'>● {report.verdict.capitalize()}</span> "
                         f"{report.words}")

    def prepare(self) -> None:
        model_id = self.model_id
        self.prepare_btn.setEnabled(False)
        self.progress.show()
        self.progress.setRange(0, 0)
        self.message.setText("Preparing…")

        def job(report: Report, cancel: CancelToken) -> None:
            load_model(model_id, report=report, cancel=cancel)  # downloads/converts, fit-checked

        self.runner.start("prepare-model", job, modules=("lemcore.models.loading", "mlx_lm.utils"),
                          loads_model=model_id, on_event=self._on_event, on_done=self._on_done,
                          on_error=self._on_error)

    def _on_event(self, event: Event) -> None:
        # What load_model reports: its stages, the hub download's bytes, the built-in model's conversion.
        # (The fit verdict and ModelLoaded need nothing here: the step says "ready" when the job is done.)
        if isinstance(event, (DownloadProgress, ConvertProgress)):
            self._show_progress(event.done, event.total)
        if isinstance(event, (LoadStage, DownloadProgress, ConvertProgress)) and event.stage:
            self.message.setText(f"Preparing: {event.stage}…")

    def _show_progress(self, done: int, total: int) -> None:
        if total <= 0:
            return
        scale = 1024 * 1024 if total > 10_000_000 else 1  # QProgressBar takes 32-bit ints
        self.progress.setRange(0, max(1, total // scale))
        self.progress.setValue(done // scale)
        unit = " MB" if scale > 1 else ""
        self.progress.setFormat(f"%v of %m{unit}")

    def _on_done(self, _result: object) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.progress.setFormat("ready")
        self.message.setText("The model is ready.")
        self.prepare_btn.setEnabled(True)
        self.done.emit()

    def _on_error(self, err: BaseException) -> None:
        self.prepare_btn.setEnabled(True)
        self.progress.hide()
        msg = user_message(err)
        self.message.setText(f"{msg[0]}. {msg[1]}" if msg else "")
