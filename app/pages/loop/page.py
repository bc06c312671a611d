"""LEK loop page: the lab's whole method from one form, in one progress view (lemcore/loop).

Left: what to loop (base model, where the training answers come from, training length, which adapter to
save, which benchmarks), Start / Stop / Continue, and the past loops. Right: every stage with its state,
the running stage's progress, and "Open the comparison", which the page also does by itself when a loop
finishes (the main window shows the Results page on the pair).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.errors import user_message
from app.jobs.runner import Job, JobRunner
from app.widgets import ModelBox, StatusLine, heading
from lemcore.benchmarks.events import BenchProgress, BenchStarted
from lemcore.benchmarks.suites import SUITE_IDS, suite_module
from lemcore.contribute.events import AnswerHeld, ResponseDone
from lemcore.events import Event
from lemcore.generate.protocol import PrefillProgress
from lemcore.loop.config import STAGE_DOING, STAGE_TITLES, loop_config
from lemcore.loop.engine import LoopResult, list_loops, read_loop, resume_loop, run_loop
from lemcore.loop.events import LoopFinished, LoopStage, LoopStarted
from lemcore.models.catalog import EMBEDDED_ID
from lemcore.train.config import PRESETS
from lemcore.train.dataset import DATA_STAGE_WORDS, DataStage
from lemcore.train.events import EvalDone, TrainStarted, TrainStep
from lemcore.train.fuse import FUSE_STAGE_WORDS, FuseStage

IDLE_TEXT = "Set up a loop on the left and press Start loop."
ANSWER_SOURCES = (("gold", "Write new gold answers first"), ("contributed", "Answers this computer contributed"),
                  ("folder", "A training data folder made before"))
# Checked at first: the suites scored without a judge, so the comparison has numbers as soon as the loop ends.
DEFAULT_SUITES = ("gsm8k", "truthfulqa_mc")
MARKS = {"pending": "○", "running": "●", "done": "✓", "stopped": "‖"}
# Every module a loop's stages import, imported on the GUI thread before the job starts (app/jobs/runner.py).
LOOP_MODULES = ("lemcore.loop.engine", "lemcore.contribute.engine", "lemcore.train.engine", "lemcore.train.fuse",
                "lemcore.benchmarks.run", *(f"lemcore.benchmarks.{s}" for s in SUITE_IDS), "mlx.optimizers",
                "mlx.utils", "mlx_lm.utils", "mlx_lm.generate", "mlx_lm.sample_utils", "mlx_lm.models.cache",
                "mlx_lm.tuner.trainer", "mlx_lm.tuner.utils", "mlx_lm.tuner.datasets")


class LoopPage(QWidget):
    open_comparison = Signal(object, object)  # base run folder, trained run folder

    def __init__(self, runner: JobRunner) -> None:
        super().__init__()
        self.runner = runner
        self.job: Job | None = None
        self.result: LoopResult | None = None
        self.folder: Path | None = None
        self.stage_states: dict[str, str] = {}
        self.stage_details: dict[str, str] = {}
        self.suite_files: dict[str, str] = {}  # suite -> question file; absent: the suite's usual source
        self._gold_total = 0
        self._gold_done = 0
        layout = QVBoxLayout(self)
        layout.setContentsMargins(20, 16, 20, 12)
        layout.addWidget(heading("LEK loop", "The lab's method in one go: gold answers with the axioms, a training "
                                             "set, LoRA training, a standalone model, and the same benchmarks on "
                                             "the base and the trained model, compared item by item."))
        split = QSplitter(Qt.Orientation.Horizontal)
        layout.addWidget(split, 1)
        split.addWidget(self._build_form())
        split.addWidget(self._build_progress())
        split.setChildrenCollapsible(False)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setSizes([380, 660])
        self.refresh_loops()
        self._set_running(False)

    # -- building -------------------------------------------------------------------------------------------
    def _build_form(self) -> QWidget:
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 8, 0)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.model_box = ModelBox(EMBEDDED_ID)
        self.model_box.setToolTip("The model the loop trains, and the one the trained model is compared with.")
        form.addRow("Base model", self.model_box)
        self.source = QComboBox()
        for key, text in ANSWER_SOURCES:
            self.source.addItem(text, key)
        self.source.currentIndexChanged.connect(lambda _i: self._source_changed())
        form.addRow("Training answers", self.source)
        self.gold_count = QSpinBox()
        self.gold_count.setRange(1, 100000)
        self.gold_count.setValue(40)
        self.gold_count.setSuffix(" prompts")
        self.gold_count.setToolTip("How many prompts the base model answers with the axiom sandwich. Answers that "
                                   "repeat themselves, recite the kernel or come out empty are left out.")
        form.addRow("Gold answers", self.gold_count)
        folder_row = QHBoxLayout()
        self.data_folder = QLineEdit()
        self.data_folder.setPlaceholderText("A folder holding train.jsonl and valid.jsonl")
        browse = QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._pick_folder)
        folder_row.addWidget(self.data_folder, 1)
        folder_row.addWidget(browse)
        self.folder_widget = QWidget()
        self.folder_widget.setLayout(folder_row)
        folder_row.setContentsMargins(0, 0, 0, 0)
        form.addRow("Data folder", self.folder_widget)
        self.preset = QComboBox()
        self.preset.addItems(PRESETS)
        self.preset.setToolTip("LEK recipe: the lab's settings (batch 2, learning rate 1e-5, prompts masked). "
                               "Quick test: a few steps to check that everything works.")
        form.addRow("Training", self.preset)
        self.steps = QSpinBox()
        self.steps.setRange(1, 100000)
        self.steps.setValue(200)
        self.steps.setSuffix(" steps")
        form.addRow("Length", self.steps)
        self.adapter = QComboBox()
        self.adapter.addItem("The best step (lowest validation loss)", "best")
        self.adapter.addItem("The last step", "final")
        form.addRow("Keep", self.adapter)
        ll.addLayout(form)

        ll.addWidget(QLabel("<b>Benchmarks</b> (the same items for both models)"))
        suites = QGridLayout()
        self.suite_boxes: dict[str, QCheckBox] = {}
        self.suite_file_labels: dict[str, QToolButton] = {}
        for row, suite in enumerate(SUITE_IDS):
            module = suite_module(suite)
            short = str(getattr(module, "TITLE", suite)).split(" (")[0]  # "GSM8K (maths word problems)" -> GSM8K
            box = QCheckBox(short + (" · needs a judge" if module.JUDGED else ""))
            box.setChecked(suite in DEFAULT_SUITES)
            box.setToolTip("Scored by a judge model: the answers are written now and can be judged later on "
                           "the Results page." if module.JUDGED else "Scored from the answers alone, no judge.")
            pick = QToolButton()
            pick.setText("File…")
            pick.setToolTip("Questions from the suite's usual source. Choose a file to use your own copy.")
            pick.clicked.connect(lambda _c=False, s=suite: self._pick_suite_file(s))
            self.suite_boxes[suite] = box
            self.suite_file_labels[suite] = pick
            suites.addWidget(box, row, 0)
            suites.addWidget(pick, row, 1)
        ll.addLayout(suites)
        sizes = QHBoxLayout()
        self.bench_n = QSpinBox()
        self.bench_n.setRange(0, 100000)
        self.bench_n.setValue(50)
        self.bench_n.setSpecialValueText("all items")
        self.bench_n.setSuffix(" items")
        self.bench_n.setToolTip("Items per suite, the same for both models (the lab's files hold 50).")
        self.samples = QSpinBox()
        self.samples.setRange(1, 20)
        self.samples.setValue(3)
        self.samples.setPrefix("answers per item: ")
        sizes.addWidget(self.bench_n)
        sizes.addWidget(self.samples)
        ll.addLayout(sizes)

        buttons = QHBoxLayout()
        self.start_btn = QPushButton("Start loop")
        self.start_btn.setObjectName("primary")
        self.start_btn.clicked.connect(lambda: self.start())
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setToolTip("Stops at a safe point; Continue picks it up where it stopped.")
        self.stop_btn.clicked.connect(self.stop)
        self.resume_btn = QPushButton("Continue")
        self.resume_btn.setToolTip("Continue the selected loop where it stopped, with its own settings.")
        self.resume_btn.clicked.connect(lambda: self.resume())
        for b in (self.start_btn, self.stop_btn, self.resume_btn):
            buttons.addWidget(b)
        ll.addLayout(buttons)
        hint = QLabel("Past loops: select one to see its stages; Continue finishes a stopped one.")
        hint.setObjectName("hint")
        hint.setWordWrap(True)
        ll.addWidget(hint)
        self.loops = QListWidget()
        self.loops.setMinimumHeight(60)
        self.loops.currentItemChanged.connect(lambda _a, _b: self._show_selected())
        ll.addWidget(self.loops, 1)
        self._source_changed()
        return left

    def _build_progress(self) -> QWidget:
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(8, 0, 0, 0)
        self.status = StatusLine()
        self.status.set_state("idle", IDLE_TEXT)
        rl.addWidget(self.status)
        self.stage_list = QListWidget()
        self.stage_list.setSelectionMode(QListWidget.SelectionMode.NoSelection)
        self.stage_list.setWordWrap(True)
        rl.addWidget(self.stage_list, 1)
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        rl.addWidget(self.progress)
        self.detail = QLabel("")
        self.detail.setWordWrap(True)
        rl.addWidget(self.detail)
        self.open_btn = QPushButton("Open the comparison")
        self.open_btn.setToolTip("Show the base and the trained model side by side on the Results page.")
        self.open_btn.clicked.connect(self._open_comparison)
        rl.addWidget(self.open_btn, 0, Qt.AlignmentFlag.AlignLeft)
        return right

    # -- the form -------------------------------------------------------------------------------------------
    def _source_changed(self) -> None:
        key = self.source.currentData()
        self.gold_count.setEnabled(key == "gold")
        self.folder_widget.setEnabled(key == "folder")

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "A folder holding train.jsonl and valid.jsonl")
        if path:
            self.data_folder.setText(path)

    def _pick_suite_file(self, suite: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self, f"Questions for {suite}", "",
                                              "Question files (*.jsonl *.json *.csv *.parquet)")
        self.set_suite_file(suite, path)

    def set_suite_file(self, suite: str, path: str) -> None:
        """Use `path` for `suite`'s questions ("" : the suite's usual source)."""
        if path:
            self.suite_files[suite] = path
            self.suite_boxes[suite].setChecked(True)
        else:
            self.suite_files.pop(suite, None)
        button = self.suite_file_labels[suite]
        button.setText(Path(path).name[:18] if path else "File…")
        button.setToolTip(f"Questions from {path}" if path else "Questions from the suite's usual source. "
                          "Choose a file to use your own copy.")

    def spec(self) -> dict[str, Any]:
        """The loop the form describes, as `lem loop -c` would read it."""
        source = self.source.currentData()
        data: dict[str, Any] = {}
        if source == "folder":
            data["folder"] = self.data_folder.text().strip()
        spec: dict[str, Any] = {
            "base_model": self.model_box.value() or EMBEDDED_ID,
            "gold": {"count": self.gold_count.value() if source == "gold" else 0},
            "data": data,
            "train": {"preset": self.preset.currentText(), "iters": self.steps.value()},
            "fuse": {"adapter": self.adapter.currentData()},
            "bench": {"suites": [{"id": s, "path": self.suite_files.get(s, ""), "n": self.bench_n.value()}
                                 for s, box in self.suite_boxes.items() if box.isChecked()],
                      "samples": self.samples.value()},
        }
        return spec

    # -- actions --------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.job is not None and self.job.running:
            return
        try:
            config = loop_config(self.spec())
        except Exception as err:  # noqa: BLE001 - shown to the user
            self._error(err)
            return
        if self.source.currentData() == "folder" and not config.data.folder:
            self.status.set_state("error", "Choose the training data folder first (it holds train.jsonl).")
            return
        self._begin("Starting the loop…", config.gold.count)
        self.job = self.runner.start("loop", lambda report, cancel: run_loop(config, report=report, cancel=cancel),
                                     **self._job_args(config.base_model))

    def resume(self, folder: Path | None = None) -> None:
        if self.job is not None and self.job.running:
            return
        folder = folder or self._selected_folder()
        if folder is None:
            self.status.set_state("error", "Select a loop in the list to continue it.")
            return
        try:
            config = loop_config({**read_loop(folder)["spec"], "folder": str(folder)})
        except Exception as err:  # noqa: BLE001 - shown to the user
            self._error(err)
            return
        model = config.base_model
        self._begin("Continuing the loop where it stopped…", config.gold.count)
        self.job = self.runner.start("loop", lambda report, cancel: resume_loop(folder, report=report, cancel=cancel),
                                     **self._job_args(model))

    def _job_args(self, model: str) -> dict[str, Any]:
        return {"modules": LOOP_MODULES, "loads_model": model, "frees_models": True, "on_event": self.on_event,
                "on_done": self.on_done, "on_error": self._error, "on_cancelled": self.on_cancelled}

    def _begin(self, text: str, gold_total: int) -> None:
        self.result = None
        self.stage_states, self.stage_details = {}, {}
        self._gold_total, self._gold_done = gold_total, 0
        self.stage_list.clear()
        self.detail.setText("")
        self.progress.setRange(0, 0)
        self.status.set_state("running", text)
        self._set_running(True)

    def stop(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.status.set_state("paused", "Stopping at the next safe point (training saves its step first)…")

    def _set_running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        self.stop_btn.setEnabled(running)
        self.resume_btn.setEnabled(not running and self._selected_folder() is not None)
        self.open_btn.setEnabled(not running and self.result is not None)
        for w in (self.model_box, self.source, self.gold_count, self.folder_widget, self.preset, self.steps,
                  self.adapter, *self.suite_boxes.values(), *self.suite_file_labels.values(), self.bench_n,
                  self.samples):
            w.setEnabled(not running)
        if not running:
            self._source_changed()

    # -- progress -------------------------------------------------------------------------------------------
    def _draw_stages(self) -> None:
        self.stage_list.clear()
        for stage, state in self.stage_states.items():
            detail = self.stage_details.get(stage, "")
            text = f"{MARKS.get(state, '○')}  {STAGE_TITLES.get(stage, stage)}" + (f"\n      {detail}" if detail else "")
            item = QListWidgetItem(text)
            if state == "running":
                font = item.font()
                font.setBold(True)
                item.setFont(font)
            self.stage_list.addItem(item)

    def on_event(self, event: Event) -> None:
        if isinstance(event, LoopStarted):
            self.folder = event.folder
            self.stage_states = {s: ("done" if s in event.done else "pending") for s in event.stages}
            self.stage_details = {s: "done in an earlier session" for s in event.done}
            self._draw_stages()
            self.refresh_loops(select=event.folder)  # listed from its first second, so it can be continued
        elif isinstance(event, LoopStage):
            self.stage_states[event.stage] = "running" if event.state == "started" else "done"
            self.stage_details[event.stage] = event.detail
            doing = STAGE_DOING.get(event.stage, event.stage)
            if event.state == "started":
                self.status.set_state("running", f"{doing}…" + (f" ({event.detail})" if event.detail else ""))
                self.progress.setRange(0, 0)
                self.detail.setText("")
            self._draw_stages()
        elif isinstance(event, TrainStarted):
            self._bar(event.start_iteration, event.total_iters,
                      f"{'Continuing' if event.resumed else 'Training'} on {event.train_examples} examples")
        elif isinstance(event, TrainStep):
            self._bar(event.iteration, event.total_iters,
                      f"Step {event.iteration} of {event.total_iters}: loss {event.train_loss:.3f}")
        elif isinstance(event, EvalDone):
            self.detail.setText(f"Validation loss {event.val_loss:.3f} at step {event.iteration}")
        elif isinstance(event, BenchStarted):
            self._bar(event.resumed, event.total, f"{event.total} answers to write for {event.model}")
        elif isinstance(event, BenchProgress):
            words = {"loading": "Loading the model", "generating": "Writing answers", "judging": "Judging",
                     "scoring": "Scoring"}.get(event.stage, event.stage)
            self._bar(event.done, event.total, f"{words}: {event.suite} {event.done} of {event.total}".rstrip())
        elif isinstance(event, PrefillProgress):
            self.detail.setText(f"Reading the question: {event.done_tokens} of {event.total_tokens} tokens")
        elif isinstance(event, (ResponseDone, AnswerHeld)):
            self._gold_done += 1
            # Counted from this session: a resumed gold step shows what it adds.
            self._bar(self._gold_done, self._gold_total, f"Gold answers written this session: {self._gold_done}")
        elif isinstance(event, DataStage):
            self.detail.setText(_sentence(DATA_STAGE_WORDS.get(event.stage, event.stage)))
        elif isinstance(event, FuseStage):
            self.detail.setText(_sentence(FUSE_STAGE_WORDS.get(event.stage, event.stage)))
        elif isinstance(event, LoopFinished):
            self._bar(1, 1, f"Finished in {event.seconds / 60:.1f} min.")

    def _bar(self, value: int, total: int, text: str) -> None:
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(min(value, total))
        self.detail.setText(text)

    def on_done(self, result: LoopResult) -> None:
        self.result = result
        headline = self.stage_details.get("compare", "")
        self.status.set_state("idle", "Loop finished. " + (headline + ". " if headline else "")
                              + "The Results page shows the pair.")
        self._set_running(False)
        self.refresh_loops(select=self.folder)
        self._open_comparison()

    def on_cancelled(self) -> None:
        for stage, state in self.stage_states.items():
            if state == "running":
                self.stage_states[stage] = "stopped"
                self.stage_details[stage] = "stopped: Continue picks it up here"
        self._draw_stages()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status.set_state("paused", "Stopped. Press Continue to pick the loop up where it stopped.")
        self._set_running(False)
        self.refresh_loops(select=self.folder)

    def _error(self, err: BaseException) -> None:
        self._set_running(False)
        self.refresh_loops(select=self.folder)
        msg = user_message(err)
        if msg:
            self.status.set_state("error", f"{msg[0]}. {msg[1]}".replace("..", "."))
        self.progress.setRange(0, 1)
        self.progress.setValue(0)

    def _open_comparison(self) -> None:
        if self.result is not None:
            self.open_comparison.emit(self.result.base_run, self.result.trained_run)

    # -- past loops -----------------------------------------------------------------------------------------
    def refresh_loops(self, select: Path | None = None) -> None:
        self.loops.blockSignals(True)
        self.loops.clear()
        running = self.job is not None and self.job.running
        for folder in list_loops():
            words = "running now" if running and folder == self.folder else _loop_state_words(folder)
            item = QListWidgetItem(f"{folder.name}: {words}")
            item.setData(Qt.ItemDataRole.UserRole, str(folder))
            self.loops.addItem(item)
            if select is not None and folder == select:
                self.loops.setCurrentItem(item)
        self.loops.blockSignals(False)
        self.resume_btn.setEnabled(not running and self._selected_folder() is not None)

    def _selected_folder(self) -> Path | None:
        item = self.loops.currentItem() if hasattr(self, "loops") else None
        return Path(item.data(Qt.ItemDataRole.UserRole)) if item is not None else None

    def _show_selected(self) -> None:
        folder = self._selected_folder()
        running = self.job is not None and self.job.running
        self.resume_btn.setEnabled(not running and folder is not None)
        if folder is None or running:
            return
        try:
            state = read_loop(folder)
            spec = loop_config(state.get("spec") or {})
        except Exception:  # noqa: BLE001 - a damaged folder shows no stages
            return
        stages = state.get("stages") or {}
        self.stage_states = {s: str((stages.get(s) or {}).get("state", "pending")) for s in spec.stages()}
        self.stage_states = {s: ("stopped" if v == "running" else v) for s, v in self.stage_states.items()}
        self.stage_details = {s: str((stages.get(s) or {}).get("detail", "")) for s in spec.stages()}
        self._draw_stages()


def _sentence(words: str) -> str:
    return words[:1].upper() + words[1:]


def _loop_state_words(folder: Path) -> str:
    try:
        stages = read_loop(folder).get("stages") or {}
    except Exception:  # noqa: BLE001 - listed, but unreadable
        return "cannot be read"
    if (stages.get("compare") or {}).get("state") == "done":
        return "finished"
    stopped = [s for s, v in stages.items() if (v or {}).get("state") == "running"]
    if stopped:
        return f"stopped at: {STAGE_TITLES.get(stopped[0], stopped[0]).lower()}"
    return "not started"
