"""Train: the LoRA form with presets, a preview of the equivalent command, live loss/validation/learning-rate
curves with the best checkpoint marked, Start / Stop / Resume, run history (each run's state in words), and
Save as a model (fuse) when a run is done. "Use contributed answers" builds a training data folder from this
computer's contributions (lemcore.train.dataset) and puts it in the data field."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.charts.loss_chart import LossChart
from app.errors import user_message
from app.jobs.runner import Job, JobRunner
from app.pages.train.form import TrainForm
from app.pages.train.history import RunInfo, describe_run, stopped_text
from app.pages.train.machines import MachinesBox
from app.widgets import StatTile, StatusLine, heading
from lemcore.contribute.kernel import sandwich_text
from lemcore.errors import LemError
from lemcore.events import Event
from lemcore.jobs import CancelToken, Report
from lemcore.models.catalog import EMBEDDED_ID
from lemcore.models.loading import resolve_model
from lemcore.settings import data_dir
from lemcore.train import events as ev
from lemcore.train.config import TrainConfig, load_yaml, preset
from lemcore.train.dataset import DATA_STAGE_WORDS, DatasetConfig, DatasetResult, DataStage, build_dataset
from lemcore.train.engine import TrainResult, resume_config, train_lora
from lemcore.train.fuse import FUSE_STAGE_WORDS, FuseConfig, FuseResult, FuseStage, fuse_adapter
from lemcore.train.launch import train_on_hosts
from lemcore.train.preflight import check_hosts
from lemcore.train.run import read_metrics

IDLE_TEXT = "Choose a model and a data folder, then press Start training."

def build_contributed_dataset(config: DatasetConfig, *, report: Report, cancel: CancelToken) -> DatasetResult:
    """The "Use contributed answers" job (an IO job: files and text only): the shipped kernel is what
    answers must not recite, then `build_dataset`."""
    return build_dataset(replace(config, sandwich_text=sandwich_text()), report=report, cancel=cancel)


def _fmt_eta(seconds: float) -> str:
    if seconds <= 0 or seconds != seconds:
        return "–"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"


class TrainPage(QWidget):
    def __init__(self, runner: JobRunner) -> None:
        super().__init__()
        self.runner = runner
        self.job: Job | None = None
        self.data_job: Job | None = None
        self.machine_job: Job | None = None
        self.run_dir: Path | None = None
        self.last_finished: ev.TrainFinished | None = None
        self.run_infos: dict[str, RunInfo] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(20, 16, 20, 12)
        layout.addWidget(heading("Train", "Fine-tune a model with LoRA on your data and watch it learn."))

        split = QSplitter(Qt.Orientation.Horizontal)
        layout.addWidget(split, 1)

        # Left: presets, form, command preview, buttons.
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 8, 0)
        top = QHBoxLayout()
        top.addWidget(QLabel("Preset:"))
        self.preset = QComboBox()
        self.preset.addItems(["LEK recipe", "Quick test"])
        self.preset.setToolTip("LEK recipe: the lab's settings (200 steps, batch 2, 1e-5, prompts masked). "
                               "Quick test: a few steps to check that everything works.")
        self.preset.activated.connect(self._apply_preset)
        top.addWidget(self.preset, 1)
        files = QToolButton()
        files.setText("Settings file")
        files.setToolTip("Open or save these training settings as a YAML file (mlx_lm lora -c reads it too).")
        files.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        files_menu = QMenu(files)
        files_menu.addAction("Open settings…", self._load_yaml)
        files_menu.addAction("Save settings…", self._save_yaml)
        files.setMenu(files_menu)
        top.addWidget(files)
        ll.addLayout(top)
        self.form = TrainForm()
        self.machines = MachinesBox()
        self.machines.check_requested.connect(self.check_machines)
        # The form and the machines scroll together: a small window keeps the buttons below in view.
        fields = QWidget()
        fl = QVBoxLayout(fields)
        fl.setContentsMargins(0, 0, 4, 0)
        fl.addWidget(self.form)
        fl.addWidget(self.machines)
        fl.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # fields narrow, not scroll
        scroll.setWidget(fields)
        ll.addWidget(scroll, 1)
        self.data_btn = QPushButton("Use contributed answers")
        self.data_btn.setToolTip("Make training data from the answers this computer contributed: answers that "
                                 "repeat themselves, recite the kernel or were cut off are left out, and each "
                                 "prompt's variants stay in one split. The new folder goes in Data folder.")
        self.data_btn.clicked.connect(lambda: self.use_contributed())
        ll.addWidget(self.data_btn)
        command_label = QLabel("The same run from the command line:")
        command_label.setObjectName("hint")
        ll.addWidget(command_label)
        self.command = QPlainTextEdit()
        self.command.setReadOnly(True)
        self.command.setMaximumHeight(64)
        ll.addWidget(self.command)
        buttons = QGridLayout()
        self.start_btn = QPushButton("Start training")
        self.start_btn.setObjectName("primary")
        self.start_btn.clicked.connect(lambda: self.start())
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setToolTip("Stops after the current step and saves the run, so you can resume it later.")
        self.stop_btn.clicked.connect(self.stop)
        self.resume_btn = QPushButton("Resume")
        self.resume_btn.setToolTip("Continue the selected run exactly where it stopped.")
        self.resume_btn.clicked.connect(self.resume)
        self.fuse_btn = QPushButton("Save as a model…")
        self.fuse_btn.setToolTip("Merge what the run learned into the base model and save it as a standalone "
                                 "model folder (also called fusing).")
        self.fuse_btn.clicked.connect(lambda: self.fuse())
        self.fuse_choice = QComboBox()
        self.fuse_choice.addItem("from its best step", "best")
        self.fuse_choice.addItem("from its last step", "final")
        self.fuse_choice.setToolTip("Best: the step with the lowest validation loss (a run without validation "
                                    "data has only its last step). Last: where the run ended.")
        for n, b in enumerate((self.start_btn, self.stop_btn, self.resume_btn, self.fuse_btn)):
            buttons.addWidget(b, n // 2, n % 2)
        buttons.addWidget(self.fuse_choice, 2, 1)
        ll.addLayout(buttons)
        split.addWidget(left)

        # Right: status, tiles, chart, history.
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(6, 0, 0, 0)
        self.status = StatusLine()
        self.status.set_state("idle", IDLE_TEXT)
        rl.addWidget(self.status)
        tiles = QGridLayout()
        tiles.setHorizontalSpacing(4)
        self.t_iter = StatTile("Step", "–", compact=True)
        self.t_tps = StatTile("Tokens / s", "–", compact=True)
        self.t_mem = StatTile("Peak memory", "–", compact=True)
        self.t_eta = StatTile("Time left", "–", compact=True)
        for n, t in enumerate((self.t_iter, self.t_tps, self.t_mem, self.t_eta)):
            tiles.addWidget(t, 0, n)
        rl.addLayout(tiles)
        self.chart = LossChart()
        rl.addWidget(self.chart, 3)
        runs_label = QLabel("Past runs: select one to see its curves and state; Resume and Save as a model act on it.")
        runs_label.setWordWrap(True)
        runs_label.setObjectName("hint")
        rl.addWidget(runs_label)
        self.history = QListWidget()
        self.history.setMinimumHeight(60)
        self.history.setMaximumHeight(130)
        self.history.currentItemChanged.connect(self._show_history)
        rl.addWidget(self.history)
        split.addWidget(right)
        split.setChildrenCollapsible(False)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setSizes([440, 660])

        self.form.changed.connect(self._validate)
        self.form.changed.connect(lambda: self.machines.set_batch_size(self.form.config().batch_size))
        self._apply_preset()
        self.refresh_history()
        self._set_running(False)

    # -- form ---------------------------------------------------------------------------------------
    def _apply_preset(self) -> None:
        # The built-in model until another is chosen: it needs no download, as `lem train` without --model.
        current = self.form.config() if self.form.model_box.value() else TrainConfig(model=EMBEDDED_ID)
        config = preset(self.preset.currentText(), model=current.model, data=current.data)
        self.form.set_config(config)

    def _validate(self, *, all_fields: bool = False) -> bool:
        config = self.form.config()
        problems = config.problems(check_paths=True)
        if "model" not in problems and self.form.model_box.unavailable():
            problems["model"] = ("This model is not downloaded yet. Choose a downloaded or built-in model, or a "
                                 "model folder.")
        self.form.show_problems(problems, all_fields=all_fields)
        try:
            self.command.setPlainText(config.command_line() if not problems else
                                      "(shown once the model and data folder are filled in correctly)")
        except Exception as err:  # noqa: BLE001 - preview only
            self.command.setPlainText(str(err))
        return not problems

    def _load_yaml(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a training config", "", "YAML (*.yaml *.yml)")
        if path:
            try:
                self.form.set_config(load_yaml(path))
            except Exception as err:  # noqa: BLE001 - shown to the user
                self._error(err)

    def _save_yaml(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the training config", "lora.yaml", "YAML (*.yaml)")
        if path:
            self.form.config().save_yaml(path)

    # -- actions ------------------------------------------------------------------------------------
    def _set_running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        self.stop_btn.setEnabled(running)
        run = self._selected_run()
        info = self.run_infos.get(str(run)) if run is not None else None
        self.resume_btn.setEnabled(not running and info is not None and info.can_resume)
        self.fuse_btn.setEnabled(not running and run is not None and (run / "adapters.safetensors").exists())
        self.fuse_choice.setEnabled(self.fuse_btn.isEnabled())
        self.form.setEnabled(not running)
        self.preset.setEnabled(not running)
        self.data_btn.setEnabled(not running and not (self.data_job is not None and self.data_job.running))

    def start(self, config: TrainConfig | None = None) -> None:
        if self.job is not None and self.job.running:
            return  # one training (or fuse) at a time; the shortcut may ask again
        if config is None:
            if not self._validate(all_fields=True):
                self.status.set_state("error", "Some fields need attention (marked in red).")
                return
            config = self.form.config()
        try:
            hosts = self.machines.hosts()
        except LemError as err:
            self._error(err)
            return
        self.chart.clear()
        self.last_finished = None
        self.run_dir = None
        self._clear_tiles()
        self.status.set_note("")
        if hosts is None:
            self.status.set_state("running", "Starting: loading the model and checking the data…")

            def job(report: Report, cancel: CancelToken) -> TrainResult:
                return train_lora(config, report=report, cancel=cancel)
        else:
            self.status.set_state("running", f"Starting: asking the {len(hosts)} computers whether they are "
                                  "ready, then loading the model on each…")

            def job(report: Report, cancel: CancelToken) -> TrainResult:
                return train_on_hosts(config, hosts, report=report, cancel=cancel)
        self.job = self.runner.start("train", job,
                                     modules=("mlx.optimizers", "mlx_lm.tuner.trainer", "mlx_lm.tuner.utils",
                                              "mlx_lm.tuner.datasets", "lemcore.train.engine"),
                                     loads_model=config.model, frees_models=True,
                                     on_event=self.on_event, on_done=self.on_done, on_error=self.on_error,
                                     on_cancelled=self.on_cancelled)
        self._set_running(True)

    def stop(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel("stopped by you")
            self.status.set_state("paused", "Stopping after this step and saving it, so you can resume…")

    def resume(self) -> None:

        run = self._selected_run()
        if run is None:
            return
        try:
            config = resume_config(run)
        except Exception as err:  # noqa: BLE001 - shown to the user
            self._error(err)
            return
        self.start(config)

    def fuse(self, save_path: str | None = None) -> None:

        run = self._selected_run()
        if run is None:
            return
        if save_path is None:
            save_path = QFileDialog.getExistingDirectory(self, "Choose an empty folder for the new model")
            if not save_path:
                return
        config = FuseConfig(adapter_path=str(run), save_path=save_path, adapter=str(self.fuse_choice.currentData()))
        self.status.set_state("running", "Making a standalone model: merging the adapter into the base model…")
        self.job = self.runner.start("fuse", lambda report, cancel: fuse_adapter(config, report=report, cancel=cancel),
                                     modules=("mlx.utils", "mlx_lm.utils", "mlx_lm.tuner.utils", "lemcore.train.fuse"),
                                     loads_model=config.model or config.adapter_path, frees_models=True,
                                     on_event=self._on_fuse_event, on_done=self._on_fused, on_error=self.on_error,
                                     on_cancelled=self.on_cancelled)
        self._set_running(True)

    def use_contributed(self) -> None:
        """Build a dataset from `<data>/output/*.jsonl` into a new folder under `<data>/datasets/`."""
        if (self.job is not None and self.job.running) or (self.data_job is not None and self.data_job.running):
            return
        sources = data_dir() / "output"
        if not any(sources.glob("*.jsonl")):
            self.status.set_state("error", "No contributed answers yet. Contribute some on the Contribute page "
                                  "first, or choose a data folder.")
            return
        out = data_dir() / "datasets" / f"contributed-{time.strftime('%Y%m%d-%H%M%S')}"
        model = self.form.model_box.value()
        try:  # token lengths when the model's files are here; characters otherwise
            counted = model if model and resolve_model(model).folder is not None else ""
        except LemError:
            counted = ""
        config = DatasetConfig(sources=(str(sources),), out_dir=str(out), model=counted)
        self.status.set_note("")
        self.status.set_state("running", "Making training data from your contributed answers…")
        self.data_job = self.runner.start(
            "dataset", lambda report, cancel: build_contributed_dataset(config, report=report, cancel=cancel),
            kind="io", modules=("lemcore.train.dataset", "lemcore.quality", "lemcore.train.data",
                                *(("mlx_lm.utils",) if counted else ())),
            on_event=self._on_data_event, on_done=self._on_dataset, on_error=self._on_data_error,
            on_cancelled=self._data_ended)
        self._data_ended()

    def _data_ended(self) -> None:
        self._set_running(bool(self.job and self.job.running))

    def _on_data_event(self, event: Event) -> None:
        if isinstance(event, DataStage):
            words = DATA_STAGE_WORDS.get(event.stage, event.stage)
            self.status.set_state("running", f"Making training data: {words}…")

    def _on_dataset(self, result: DatasetResult) -> None:
        self._data_ended()
        self.form.line_edit("data").setText(str(result.out_dir))
        self.status.set_state("idle", f"Training data ready in {result.out_dir} and set as the data folder.")
        self.status.set_note(result.summary() + " The data card (DATA_CARD.md) in the folder says more.")

    def _on_data_error(self, err: BaseException) -> None:
        self._data_ended()
        self._error(err)

    # -- events -------------------------------------------------------------------------------------
    def check_machines(self) -> None:
        """Ask each machine whether it is ready for this form's run (a job: SSH may take seconds per machine)."""
        if self.machine_job is not None and self.machine_job.running:
            return
        try:
            hosts = self.machines.hosts()
        except LemError as err:
            self.machines.show_message(str(err))
            return
        if hosts is None:
            return
        config = self.form.config()
        probe_config = config if not config.problems(check_paths=False) else None
        self.machines.show_message(f"Asking {len(hosts)} computers…")
        self.machine_job = self.runner.start(
            "check-machines", lambda report, cancel: check_hosts(hosts, config=probe_config, report=report),
            kind="io", modules=("lemcore.train.preflight",), on_event=self.on_event,
            on_done=lambda result: self.status.set_state(
                "idle" if result.ok else "error",
                f"All {len(result.hosts)} computers are ready." if result.ok else
                "Some computers are not ready: see the list under Machines."),
            on_error=lambda err: self.machines.show_message(str(err)))

    def on_event(self, event: Event) -> None:
        if isinstance(event, ev.HostChecked):
            self.machines.show_checked(event)
        elif isinstance(event, ev.HostStatus):
            self.machines.show_status(event)
        elif isinstance(event, ev.TrainStep):
            self.chart.add_train(event.iteration, event.train_loss, event.learning_rate)
            self.t_iter.set_value(f"{event.iteration} / {event.total_iters}")
            self.t_tps.set_value(f"{event.tokens_per_second:.0f}")
            self.t_mem.set_value(f"{event.peak_memory_gb:.2f} GB")
            self.t_eta.set_value(_fmt_eta(event.eta_seconds))
            self.status.set_state("running", f"Training: step {event.iteration} of {event.total_iters}, "
                                  f"loss {event.train_loss:.3f} ({event.epoch:.1f} passes over your data)")
        elif isinstance(event, ev.EvalDone):
            self.chart.add_val(event.iteration, event.val_loss)
            self.chart.mark_best(event.best_iteration)
        elif isinstance(event, ev.TrainStarted):
            self.run_dir = event.run_dir
            note = " ".join(event.warnings)
            self.status.set_note(f"Run folder: {event.run_dir}. Estimated peak memory {event.estimated_peak_gb:.1f} GB "
                                 f"of {event.usable_memory_gb:.1f} GB usable. {note}".strip())
            if event.resumed:

                self.chart.load_records(read_metrics(event.run_dir))
        elif isinstance(event, ev.TrainFinished):
            self.last_finished = event

    def _clear_tiles(self, eta_only: bool = False) -> None:
        self.t_eta.set_value("–")
        if not eta_only:
            for tile in (self.t_iter, self.t_tps, self.t_mem):
                tile.set_value("–")

    def _show_run_state(self, fallback: tuple[str, str]) -> None:
        """The status line for the run that just ended, in the same words as selecting it in the list."""
        if self.run_dir is not None and self.run_dir.is_dir():
            info = describe_run(self.run_dir)
            self.status.set_state(info.state, info.text)
        else:
            self.status.set_state(*fallback)

    def on_done(self, result: TrainResult) -> None:
        self._set_running(False)
        self._clear_tiles(eta_only=True)
        self.refresh_history(select=self.run_dir)
        self._show_run_state(("idle", "Finished."))

    def on_cancelled(self) -> None:
        self._set_running(False)
        self._clear_tiles(eta_only=True)
        self.refresh_history(select=self.run_dir)
        f = self.last_finished
        if f is not None:
            self.status.set_state("paused", stopped_text(f.iteration, f.total_iters))
        elif self.run_dir is not None:
            self._show_run_state(("paused", "Stopped."))
        else:
            self.status.set_state("idle", "Stopped before training began. " + IDLE_TEXT)

    def on_error(self, err: BaseException) -> None:
        self._set_running(False)
        self._clear_tiles(eta_only=True)
        self.refresh_history(select=self.run_dir)
        self._error(err)

    def _on_fuse_event(self, event: Event) -> None:
        if isinstance(event, FuseStage) and event.stage:
            self.status.set_state("running", f"Making a standalone model: "
                                  f"{FUSE_STAGE_WORDS.get(event.stage, event.stage)}…")

    def _on_fused(self, result: FuseResult) -> None:
        self._set_running(False)
        c = result.check
        self.status.set_state("idle", f"New model saved in {result.save_path}. It answers like the trained "
                              f"model: the same most likely next word {c.top1_agreement:.0%} of the time "
                              f"(largest difference in scores {c.max_abs_diff:.2g}).")
        if result.adapter is not None:
            made_from = result.adapter.describe()
            self.status.set_note(f"Made from {made_from}" + ("" if made_from.endswith(".") else "."))

    def _error(self, err: BaseException) -> None:
        msg = user_message(err)
        if msg:
            self.status.set_state("error", f"{msg[0]}. {msg[1]}")

    # -- history ------------------------------------------------------------------------------------
    def _selected_run(self) -> Path | None:
        item = self.history.currentItem()
        return Path(item.data(Qt.ItemDataRole.UserRole)) if item is not None else None

    def refresh_history(self, select: Path | None = None) -> None:

        runs_root = data_dir() / "runs"
        runs = sorted((p for p in runs_root.glob("*") if p.is_dir()), reverse=True) if runs_root.exists() else []
        if select is not None and select not in runs:
            runs.insert(0, select)
        self.history.blockSignals(True)
        self.history.clear()
        self.run_infos = {}
        for run in runs:
            info = describe_run(run)
            self.run_infos[str(run)] = info
            item = QListWidgetItem(f"{info.title}   ({info.short})")
            item.setData(Qt.ItemDataRole.UserRole, str(run))
            item.setToolTip(f"{info.text}\nFolder: {run}")
            self.history.addItem(item)
            if select is not None and run == select:
                self.history.setCurrentItem(item)
        self.history.blockSignals(False)
        self._set_running(bool(self.job and self.job.running))

    def _show_history(self, item: QListWidgetItem | None, _prev: Any = None) -> None:
        if item is None or (self.job and self.job.running):
            return
        run = Path(item.data(Qt.ItemDataRole.UserRole))
        records = read_metrics(run)
        self.chart.load_records(records)
        info = describe_run(run, records)
        self.run_infos[str(run)] = info
        self.status.set_state(info.state, info.text)
        self.status.set_note(f"Run folder: {run}")
        self.t_iter.set_value(f"{info.step} / {info.total}" if info.total else str(info.step))
        self.t_tps.set_value(f"{info.tokens_per_second:.0f}" if info.tokens_per_second else "–")
        self.t_mem.set_value(f"{info.peak_memory_gb:.2f} GB" if info.peak_memory_gb else "–")
        self.t_eta.set_value("–")
        self._set_running(False)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if not (self.job and self.job.running):
            self.form.model_box.refresh()  # a model may have been downloaded or converted meanwhile
