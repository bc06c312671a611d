"""Contribute: the volunteer's page. First run walks through what happens, the token and the model;
then one big button, live progress, and an honest status line."""

from __future__ import annotations

import functools
import time

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.charts.live_chart import LiveChart
from app.errors import user_message
from app.jobs.contribute import contribute
from app.jobs.runner import Job, JobRunner
from app.pages.contribute.model_step import ModelStep
from app.widgets import Card, StatTile, StatusLine, heading
from lemcore.contribute import events as ev
from lemcore.contribute.engine import ContributeResult
from lemcore.contribute.governor import PRESETS
from lemcore.contribute.setup import recommended_model, resolve_generation_model
from lemcore.events import Event
from lemcore.generate.engine import TokenChunk
from lemcore.secrets import TokenStore
from lemcore.settings import Settings, load_settings, save_settings

MODEL_STEP, DASHBOARD = 2, 3

WHAT_HAPPENS = (
    "<p>Your computer will write answers to ethical questions, guided by five principles: "
    "<b>sovereignty, privacy, transparency, consent and dignity</b>. The lab uses these answers to teach "
    "small open models to reason about ethics.</p>"
    "<ul><li>Each answer takes a few seconds to a minute; pausing loses at most the answer being written.</li>"
    "<li>No question is ever done twice: the lab's server hands out work.</li>"
    "<li>By default it runs gently, only on power, and pauses when memory runs low.</li>"
    "<li>Nothing about you is sent except your worker name and the answers.</li></ul>"
)


class ContributePage(QWidget):
    state_changed = Signal(str)  # "idle", "running", "paused", "waiting" (tray icon follows it)

    def __init__(self, runner: JobRunner, token_store: TokenStore) -> None:
        super().__init__()
        self.runner, self.token_store = runner, token_store
        self.job: Job | None = None
        self.settings = load_settings()
        self.stack = QStackedWidget()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(32, 24, 32, 24)
        layout.addWidget(heading("Contribute", "Help build ethical training data with your computer's spare time."))
        layout.addWidget(self.stack, 1)
        self.stack.addWidget(self._build_welcome())
        self.stack.addWidget(self._build_connect())
        self.model_step = ModelStep(runner)
        self.model_step.done.connect(self._model_step_done)
        self.stack.addWidget(_page(self.model_step))
        self.stack.addWidget(self._build_dashboard())
        self.stack.setCurrentIndex(DASHBOARD if self.settings.first_run_done else 0)
        self._pending_text: tuple[str, str] | None = None
        self._text_timer = QTimer(self)
        self._text_timer.setInterval(150)  # the streaming answer repaints at most ~7 times a second
        self._text_timer.timeout.connect(self._flush_text)
        self._text_timer.start()
        self._t0 = time.monotonic()
        self._refresh_summary()

    # -- first run ---------------------------------------------------------------------------------
    def _build_welcome(self) -> QWidget:
        card = Card()
        text = QLabel(WHAT_HAPPENS)
        text.setWordWrap(True)
        text.setTextFormat(Qt.TextFormat.RichText)
        nxt = self.next_btn = QPushButton("Next: connect")
        nxt.setObjectName("primary")
        nxt.clicked.connect(lambda: self.stack.setCurrentIndex(1))
        card.body.addWidget(QLabel("<h3>What your computer will do</h3>"))
        card.body.addWidget(text)
        card.body.addWidget(nxt, 0, Qt.AlignmentFlag.AlignLeft)
        return _page(card)

    def _build_connect(self) -> QWidget:
        card = Card()
        card.body.addWidget(QLabel("<h3>Connect to the lab, or contribute offline</h3>"))
        self.online = QRadioButton("Contribute to the lab (recommended)")
        self.offline = QRadioButton("Contribute offline: answers are kept on this computer")
        group = QButtonGroup(self)
        group.addButton(self.online)
        group.addButton(self.offline)
        self.url_edit = QLineEdit(self.settings.influx_url)
        self.url_edit.setPlaceholderText("Server address from the lab, e.g. https://lab.example:8181")
        self.token_edit = QLineEdit()
        self.token_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.token_edit.setPlaceholderText("Paste the token the lab gave you (saved in the system keychain)")
        self.connect_msg = QLabel("")
        self.connect_msg.setWordWrap(True)
        self.connect_msg.setObjectName("hint")
        (self.offline if self.settings.solo or not self.settings.influx_url else self.online).setChecked(True)
        fields = QWidget()
        flayout = QVBoxLayout(fields)
        flayout.setContentsMargins(26, 0, 0, 6)  # indented under the option they belong to
        flayout.addWidget(self.url_edit)
        flayout.addWidget(self.token_edit)
        self.online.toggled.connect(fields.setEnabled)
        fields.setEnabled(self.online.isChecked())
        for w in (self.online, fields, self.offline, self.connect_msg):
            card.body.addWidget(w)
        row = QHBoxLayout()
        back = QPushButton("Back")
        back.clicked.connect(lambda: self.stack.setCurrentIndex(0))
        self.finish_btn = QPushButton("Save and continue")
        self.finish_btn.setObjectName("primary")
        self.finish_btn.clicked.connect(self._finish_first_run)
        row.addWidget(back)
        row.addWidget(self.finish_btn)
        row.addStretch(1)
        card.body.addLayout(row)
        return _page(card)

    def _finish_first_run(self) -> None:
        s = load_settings()
        if self.online.isChecked():
            url = self.url_edit.text().strip()
            if not url.startswith(("http://", "https://")):
                self.connect_msg.setText("Enter the server address the lab gave you (it starts with https://).")
                return
            s.influx_url, s.solo = url, False
            token = self.token_edit.text()
            self.token_edit.clear()  # the field never keeps the token
            if token.strip():
                self.finish_btn.setEnabled(False)
                self.connect_msg.setText("Saving the token in the keychain…")
                store = self.token_store  # the job runs on a worker thread: no widget in its closure
                self.runner.start("save-token", lambda report, cancel: store.set(token), kind="io",
                                  on_done=lambda _r: self._first_run_saved(s),
                                  on_error=self._token_failed)
                return
        else:
            s.solo = True
        self._first_run_saved(s)

    def _token_failed(self, err: BaseException) -> None:
        self.finish_btn.setEnabled(True)
        msg = user_message(err)
        self.connect_msg.setText(msg[1] if msg else "")

    def _first_run_saved(self, s: Settings) -> None:
        self.finish_btn.setEnabled(True)
        save_settings(s)
        self.settings = s
        self.connect_msg.setText("")
        self.model_step.refresh(s.model_override, PRESETS.get(s.preset, 2))
        self.stack.setCurrentIndex(MODEL_STEP)

    def _model_step_done(self) -> None:
        s = load_settings()
        s.first_run_done = True
        save_settings(s)
        self.settings = s
        self._refresh_summary()
        self.stack.setCurrentIndex(DASHBOARD)

    # -- dashboard ---------------------------------------------------------------------------------
    def _build_dashboard(self) -> QWidget:
        root = QWidget()
        layout = QVBoxLayout(root)
        layout.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        self.start_btn = QPushButton("Start contributing")
        self.start_btn.setObjectName("hero")
        self.start_btn.clicked.connect(self.start)
        self.pause_btn = QPushButton("Pause")
        self.pause_btn.setToolTip("Stop now. The answer being written is dropped; nothing finished is lost.")
        self.pause_btn.clicked.connect(self.pause)
        self.finish_btn2 = QPushButton("Finish this answer and stop")
        self.finish_btn2.clicked.connect(self.finish)
        top.addWidget(self.start_btn)
        top.addWidget(self.pause_btn)
        top.addWidget(self.finish_btn2)
        top.addStretch(1)
        self.preset = QComboBox()
        for key, label in (("gentle", "Gentle (computer stays usable)"), ("balanced", "Balanced"),
                           ("max", "Maximum (when idle)")):
            self.preset.addItem(label, key)
        self.preset.setCurrentIndex(max(0, self.preset.findData(self.settings.preset)))
        self.preset.currentIndexChanged.connect(self._save_options)
        top.addWidget(QLabel("Pace:"))
        top.addWidget(self.preset)
        layout.addLayout(top)

        self.status = StatusLine()
        layout.addWidget(self.status)
        self.summary = QLabel("")
        self.summary.setObjectName("hint")
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)

        tiles = QGridLayout()
        self.tile_session = StatTile("This session", "0")
        self.tile_total = StatTile("All time", "0")
        self.tile_rate = StatTile("Answers / hour", "–")
        self.tile_tps = StatTile("Tokens / s", "–")
        for n, tile in enumerate((self.tile_session, self.tile_total, self.tile_rate, self.tile_tps)):
            tiles.addWidget(tile, 0, n)
        layout.addLayout(tiles)
        fleet_row = QHBoxLayout()
        fleet_row.addWidget(QLabel("Lab progress:"))
        self.fleet = QProgressBar()
        self.fleet.setRange(0, 1)
        self.fleet.setValue(0)
        self.fleet.setFormat("shown once contributing starts")
        fleet_row.addWidget(self.fleet, 1)
        layout.addLayout(fleet_row)

        now = Card()
        now.body.addWidget(QLabel("<b>Writing now</b>"))
        self.now_prompt = QLabel("Nothing yet. Press Start contributing.")
        self.now_prompt.setWordWrap(True)
        self.now_answer = QPlainTextEdit()
        self.now_answer.setReadOnly(True)
        self.now_answer.setMaximumBlockCount(200)
        self.now_answer.setMinimumHeight(90)
        now.body.addWidget(self.now_prompt)
        now.body.addWidget(self.now_answer)
        layout.addWidget(now, 1)

        charts = QHBoxLayout()
        self.rate_chart = LiveChart("Answers per hour", x_label="minutes")
        self.rate_series = self.rate_chart.add_series("answers/h", symbol="o")
        self.tps_chart = LiveChart("Tokens per second", x_label="minutes")
        self.tps_series = self.tps_chart.add_series("tokens/s", color="#2aa876", symbol="o")
        charts.addWidget(self.rate_chart)
        charts.addWidget(self.tps_chart)
        layout.addLayout(charts)

        opts = QHBoxLayout()
        self.only_power = QCheckBox("Only when plugged in")
        self.only_power.setChecked(self.settings.only_on_power)
        self.in_use = QCheckBox("Pause while I use the computer")
        self.in_use.setChecked(self.settings.pause_when_in_use)
        for box in (self.only_power, self.in_use):
            box.toggled.connect(self._save_options)
            opts.addWidget(box)
        opts.addStretch(1)
        layout.addLayout(opts)
        self._set_running(False)
        return root

    def _save_options(self) -> None:
        s = load_settings()
        s.preset = self.preset.currentData() or "gentle"
        s.only_on_power = self.only_power.isChecked()
        s.pause_when_in_use = self.in_use.isChecked()
        save_settings(s)
        self.settings = s

    def _refresh_summary(self) -> None:
        s = self.settings = load_settings()
        where = "offline (answers stay on this computer)" if s.solo or not s.influx_url else f"to {s.influx_url}"
        if s.model_override:
            model = s.model_override
        else:

            model = f"{recommended_model().entry.label}, the model recommended for this computer"
        self.summary.setText(f"Contributing {where} as “{s.effective_worker()}”, with {model}. "
                             "Change this in Settings.")

    def _set_running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        self.start_btn.setText("Start contributing" if not running else "Contributing…")
        self.pause_btn.setEnabled(running)
        self.finish_btn2.setEnabled(running)
        self.preset.setEnabled(not running)

    # -- actions -----------------------------------------------------------------------------------
    def start(self) -> None:
        if self.job is not None and self.job.running:
            return
        self._save_options()
        self._refresh_summary()
        self.status.set_state("running", "Starting: loading the model…")
        self.state_changed.emit("running")
        self._t0 = time.monotonic()
        self.rate_chart.clear_all()
        self.tps_chart.clear_all()
        self.tile_session.set_value("0")
        settings = load_settings()
        self.job = self.runner.start(
            "contribute",
            functools.partial(contribute, settings, self.token_store),
            modules=("lemcore.contribute.engine", "mlx_lm.generate", "mlx_lm.sample_utils", "mlx_lm.models.cache"),
            loads_model=resolve_generation_model(settings.model_override),
            pass_drain=True, pass_models=True, on_event=self.on_event, on_done=self.on_done,
            on_error=self.on_error, on_cancelled=self.on_cancelled)
        self._set_running(True)

    def pause(self) -> None:
        if self.job is not None:
            self.job.cancel("paused by you")
            self.status.set_state("paused", "Pausing…")

    def finish(self) -> None:
        if self.job is not None:
            self.job.drain()
            self.status.set_state("running", "Finishing the answers in progress, then stopping…")

    # -- engine events (GUI thread) ------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        if isinstance(event, TokenChunk):
            self._pending_text = (str(event.key), event.text)
        elif isinstance(event, ev.ResponseDone):
            self.now_prompt.setText(f"<b>{event.domain}</b> · {event.voice} · {_elide(event.prompt, 300)}")
            self._pending_text = (str(event.idx), event.response)
        elif isinstance(event, ev.Rates):
            self.tile_session.set_value(str(event.session_done))
            self.tile_total.set_value(str(event.all_time_done))
            self.tile_rate.set_value(f"{event.responses_per_hour:.0f}")
            self.tile_tps.set_value(f"{event.tokens_per_s:.1f}")
            minutes = (time.monotonic() - self._t0) / 60
            self.rate_series.append(minutes, event.responses_per_hour)
            self.tps_series.append(minutes, event.tokens_per_s)
            # One point per finished answer (seconds apart), so drawing now costs nothing and never waits
            # for the chart timer.
            self.rate_chart.redraw()
            self.tps_chart.redraw()
        elif isinstance(event, ev.Started):
            self.tile_total.set_value(str(event.done_local))
            self._set_fleet(event.done_fleet, event.total)
            self.status.set_state("running", f"Contributing: {event.remaining} prompts left")
        elif isinstance(event, ev.FleetProgress):
            self._set_fleet(event.completed, event.target)
        elif isinstance(event, ev.StatusChanged):
            text = event.reason or "Contributing"
            self.status.set_state(event.state, text)
            self.state_changed.emit(event.state)
        elif isinstance(event, ev.Notice):
            self.status.set_note(event.message)

    def _set_fleet(self, done: int, target: int) -> None:
        self.fleet.setRange(0, max(1, target))
        self.fleet.setValue(done)
        self.fleet.setFormat("%v of %m prompts answered (%p%)")

    def _flush_text(self) -> None:
        if self._pending_text is None:
            return
        _key, text = self._pending_text
        self._pending_text = None
        if self.now_answer.toPlainText() != text:
            self.now_answer.setPlainText(text)

    def on_done(self, result: ContributeResult) -> None:
        self._set_running(False)
        left = result.unreported
        extra = f"; {left} answers are queued and will be sent when the server is back" if left else ""
        self.status.set_state("idle", f"Stopped: {result.done_this_run} answers this session{extra}.")
        self.state_changed.emit("idle")

    def on_cancelled(self) -> None:
        self._set_running(False)
        self._pending_text = None
        self.now_answer.setPlainText("The answer in progress was set aside; it is written again when you resume.")
        self.status.set_state("paused", "Paused. Press Start contributing to go on where you left off.")
        self.state_changed.emit("paused")

    def on_error(self, err: BaseException) -> None:
        self._set_running(False)
        msg = user_message(err)
        if msg:
            self.status.set_state("error", f"{msg[0]}. {msg[1]}")
        self.state_changed.emit("idle")


def _elide(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _page(card: QFrame) -> QWidget:
    holder = QWidget()
    layout = QVBoxLayout(holder)
    layout.setContentsMargins(0, 12, 0, 0)
    layout.addWidget(card)
    layout.addStretch(1)
    return holder
