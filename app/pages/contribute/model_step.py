"""First-run step: the model chosen for this computer, its fit verdict in words, and preparing it
(download from the hub, or converting the built-in model) with progress."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from app.appearance import current_theme
from app.errors import user_message
from app.jobs.runner import JobRunner
from app.widgets import Card
from lemcore.contribute.setup import recommended_model
from lemcore.events import Event
from lemcore.hardware import detect_hardware
from lemcore.jobs import CancelToken, Report
from lemcore.models.catalog import Recommendation, find_entry
from lemcore.models.downloads import DownloadProgress
from lemcore.models.fit import GREEN, RED, FitReport, assess_fit, gb
from lemcore.models.gguf.convert import ConvertProgress
from lemcore.models.loading import LoadStage, load_model

VERDICT_COLORS = {"green": "#2aa876", "yellow": "#e0a02a", "red": "#d64541"}
VERDICT_WORDS = {"green": "Fits", "yellow": "Tight", "red": "Too big"}
# What the loading, download and conversion stages are called for a volunteer.
STAGE_WORDS = {
    LoadStage: {"resolve": "finding the model", "download": "getting the model", "check": "checking that it fits "
                "in memory", "load": "loading it",
                "prepare": "making it run fast on this processor (only the first time, up to a minute)"},
    DownloadProgress: {"listing": "looking up the files", "downloading": "downloading",
                       "linking": "putting the files in place", "done": "downloaded"},
    ConvertProgress: {"read": "reading the built-in model", "tensors": "converting the built-in model",
                      "tokenizer": "converting its vocabulary", "write": "saving the converted model",
                      "done": "converted", "waiting": "waiting for another window that is preparing it",
                      "hash": "checking the built-in model's file"},
}


def _why(rec: Recommendation) -> str:
    """Why this model, for a volunteer (the catalog's reason names the GPU framework and the backend)."""
    if rec.entry.embedded:
        return ("This computer has no graphics processor the larger models can use, so it runs the small "
                "built-in model, which works well on the processor; the larger models would be very slow here.")
    return rec.reason


def stage_words(event: Event) -> str:
    """A model-preparation event's stage in words ("" for others): never an internal stage name."""
    for kind, words in STAGE_WORDS.items():
        if isinstance(event, kind):
            stage = getattr(event, "stage", "")
            return words.get(stage, "")
    return ""


def fit_words(report: FitReport) -> str:
    """The fit verdict in a volunteer's words (the engine's sentence names the context cache and Metal)."""
    text = (f"It needs about {gb(report.needed_bytes)} of memory while it writes {report.batch} "
            f"answer{'s' if report.batch != 1 else ''} at a time (the model itself takes "
            f"{gb(report.weight_bytes)}); this computer can give about {gb(report.usable_bytes)} "
            f"({gb(report.total_bytes)} minus what is kept for the system and other apps).")
    if report.verdict == RED:
        return text + " Too big for this computer: pick a smaller model in Settings."
    if report.verdict == GREEN:
        return text + " It fits."
    if report.needed_bytes > report.available_bytes:
        return text + f" It fits, but only about {gb(report.available_bytes)} is free right now: close other apps first."
    return text + " It fits, but other apps may slow down while it runs."


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
        self.choice.setText(f"<b>{entry.label}</b>. {'Your choice in Settings.' if override else _why(rec)}")
        report = assess_fit(entry.needs(), detect_hardware(), batch=batch)
        color = VERDICT_COLORS.get(report.verdict, current_theme().text)
        verdict = VERDICT_WORDS.get(report.verdict, report.verdict.capitalize())
        self.fit.setText(f"<span style='color:{color}; font-weight:600'>● {verdict}.</span> {fit_words(report)}")

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
        words = stage_words(event)
        if words:
            self.message.setText(f"Preparing: {words}…")

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
