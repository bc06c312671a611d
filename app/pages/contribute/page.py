"""Contribute: the volunteer's page. First run walks through what happens, the token and the model;
then one big button, live progress, and an honest status line.

While it contributes, the "Writing now" card follows each answer through its stages (reading the question, with
progress and a time estimate; writing; checked; saved; sent), the tiles and charts cover the session (Pause and
Resume keep it; a new Start after the run ended begins a new one), and Pause and Finish say how long they take.
Beside the charts, the Totals tab has today, this week and all time, read from the files on this computer
(lemcore.contribute.history), so that its "all time" is the tile's count."""

from __future__ import annotations

import functools
import time

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSizePolicy,
    QStackedLayout,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.charts.live_chart import LiveChart
from app.errors import for_the_window, user_message
from app.jobs.contribute import contribute
from app.jobs.runner import Job, JobRunner
from app.pages.contribute.answer_view import AnswerView
from app.pages.contribute.model_step import ModelStep, stage_words
from app.pages.contribute.progress import (
    AnswerTracker,
    Session,
    duration_text,
    held_summary,
    spent_text,
)
from app.widgets import Card, StatTile, StatusLine, heading
from lemcore.contribute import events as ev
from lemcore.contribute.engine import ContributeResult
from lemcore.contribute.governor import PRESETS
from lemcore.contribute.history import History, history_for
from lemcore.contribute.setup import options_from_settings, recommended_model, resolve_generation_model
from lemcore.errors import LemError
from lemcore.events import Event
from lemcore.generate.engine import TokenChunk
from lemcore.generate.protocol import PrefillProgress
from lemcore.models.downloads import DownloadProgress
from lemcore.models.gguf.convert import ConvertProgress
from lemcore.models.loading import LoadStage, ModelLoaded
from lemcore.secrets import TokenStore
from lemcore.settings import Settings, load_settings, save_settings

WELCOME, CONNECT, MODEL_STEP, DASHBOARD = 0, 1, 2, 3
REDRAW_DELAY_MS = 100  # tiles, charts and fleet bar after saved answers: one redraw per burst of answers
TOTALS_DELAY_MS = 1500  # the totals are read again this long after an answer is saved, held back or sent

TAGLINE = "Help build ethical training data with your computer's spare time."
WHAT_HAPPENS = (
    "<p>Your computer will write answers to ethical questions, guided by five principles: "
    "<b>sovereignty, privacy, transparency, consent and dignity</b>. The lab uses these answers to teach "
    "small open models to reason about ethics.</p>"
    "<ul><li>Each answer takes a few seconds to a few minutes: the model first reads the question (a long one, "
    "with the principles), then writes. Pausing loses at most the answers being written.</li>"
    "<li>No question is ever done twice: the lab's server hands out work.</li>"
    "<li>By default it runs gently, only on power, and pauses when memory runs low.</li>"
    "<li>Nothing about you is sent except your worker name and the answers.</li></ul>"
)
PACES = (("gentle", "Gentle", f"{PRESETS['gentle']} answers at a time: the computer stays usable."),
         ("balanced", "Balanced", f"{PRESETS['balanced']} answers at a time."),
         # Maximum is measured per machine (lemcore/models/fit.py): 16 on this kind of CPU, 8 on a Mac's GPU.
         ("max", "Maximum", f"{PRESETS['max']} answers at a time, the fastest on this computer: best when you "
                            "are not using it."))
# The totals' rows: key, label, what it counts.
TOTALS_ROWS = (
    ("saved", "Answers saved", "Answers that passed the quality check and were saved on this computer. “All time” "
     "is the count of the tile above."),
    ("sent", "Sent to the lab", "Saved answers the lab's server has received."),
    ("held", "Held back", "Answers the quality check held back: kept apart on this computer, never sent."),
    ("tokens", "Tokens written", "Tokens in the saved answers."),
    ("time", "Time spent", "How long the model worked on answers, reading the questions and writing them. "
     "Answers written together count once."),
)


class _StepLayout(QStackedLayout):
    """A stacked layout sized by the page shown. (QStackedLayout takes the largest of all its pages, so the
    dashboard made every first-run step need a wide and tall window, and the window then refused to shrink.)"""

    def _current(self) -> QWidget | None:
        return self.currentWidget()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt override
        page = self._current()
        return page.sizeHint() if page is not None else QSize(0, 0)

    def minimumSize(self) -> QSize:  # noqa: N802 - Qt override
        page = self._current()
        return page.minimumSizeHint().expandedTo(page.minimumSize()) if page is not None else QSize(0, 0)

    def hasHeightForWidth(self) -> bool:  # noqa: N802 - Qt override
        page = self._current()
        layout = page.layout() if page is not None else None
        return layout is not None and layout.hasHeightForWidth()

    def heightForWidth(self, width: int) -> int:  # noqa: N802 - Qt override
        # The page's minimum height at this width: the page scroll gives it the room there is beyond that.
        page = self._current()
        layout = page.layout() if page is not None else None
        if layout is None or not layout.hasHeightForWidth():
            return -1
        return max(layout.minimumHeightForWidth(width), layout.minimumSize().height())


class StepStack(QWidget):
    """The first-run steps and the dashboard, one shown at a time (the part of QStackedWidget's API we use)."""

    def __init__(self) -> None:
        super().__init__()
        self._layout = _StepLayout(self)
        self.currentChanged = self._layout.currentChanged
        self._layout.currentChanged.connect(lambda _i: self._layout.invalidate())

    def addWidget(self, page: QWidget) -> int:  # noqa: N802 - QStackedWidget's name
        return self._layout.addWidget(page)

    def setCurrentIndex(self, index: int) -> None:  # noqa: N802
        self._layout.setCurrentIndex(index)

    def currentIndex(self) -> int:  # noqa: N802
        return self._layout.currentIndex()

    def currentWidget(self) -> QWidget | None:  # noqa: N802
        return self._layout.currentWidget()

    def widget(self, index: int) -> QWidget | None:
        return self._layout.widget(index)

    def count(self) -> int:
        return self._layout.count()


class ContributePage(QWidget):
    state_changed = Signal(str)  # "idle", "running", "paused", "waiting" (tray icon follows it)
    # (title, sentence, is_error): the main window shows it in the tray while the window is closed; errors
    # always, milestones when the volunteer asked for them (`notify_milestones`).
    notify = Signal(str, str, bool)

    def __init__(self, runner: JobRunner, token_store: TokenStore) -> None:
        super().__init__()
        self.runner, self.token_store = runner, token_store
        self.job: Job | None = None
        self.settings = load_settings()
        self.stack = StepStack()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(24, 16, 24, 16)
        head = heading("Contribute", TAGLINE)
        # The subtitle: the tagline during the first steps, then what is contributed where (`_refresh_summary`).
        subtitle = head.findChild(QLabel, "hint")
        assert subtitle is not None
        self.summary: QLabel = subtitle
        self.summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        layout.addWidget(head)
        layout.addWidget(self.stack, 1)
        self.stack.addWidget(self._build_welcome())
        self.stack.addWidget(self._build_connect())
        self.model_step = ModelStep(runner)
        self.model_step.done.connect(self._model_step_done)
        self.stack.addWidget(_page(self.model_step))
        self.stack.addWidget(self._build_dashboard())
        self.stack.setCurrentIndex(DASHBOARD if self.settings.first_run_done else WELCOME)
        self.stack.currentChanged.connect(lambda _i: self._refresh_summary())
        self.session = Session()
        self.tracker = AnswerTracker(max_tokens=self.settings.max_tokens, reporting=False)
        self.stopping = ""  # "pause" or "finish" while the job winds down
        self.last_stop = ""  # how the last run ended: "paused", "error", "done" ("" before any)
        self.ticker = QTimer(self)
        self.ticker.setInterval(1000)  # estimates count down, the charts' clock axis reaches the present
        self.ticker.timeout.connect(self._tick)
        # Answers finish in bursts (a batch's answers end within moments of each other): their tiles, charts and
        # fleet bar are drawn once per burst, not once per answer (docs/platform-notes.md, "GUI stalls while
        # answers stream").
        self.answered_pending = 0  # answers counted on the fleet bar at the next redraw
        self.redraw_timer = QTimer(self)
        self.redraw_timer.setSingleShot(True)
        self.redraw_timer.setInterval(REDRAW_DELAY_MS)
        self.redraw_timer.timeout.connect(self._redraw_dashboard)
        self._refresh_summary()

    # -- first run ---------------------------------------------------------------------------------
    def _build_welcome(self) -> QWidget:
        card = Card()
        text = QLabel(WHAT_HAPPENS)
        text.setWordWrap(True)
        text.setTextFormat(Qt.TextFormat.RichText)
        nxt = self.next_btn = QPushButton("Next: connect")
        nxt.setObjectName("primary")
        nxt.clicked.connect(lambda: self.stack.setCurrentIndex(CONNECT))
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
        self.token_edit.setPlaceholderText("Paste the token the lab gave you (kept in the system keychain)")
        for edit in (self.url_edit, self.token_edit):
            edit.setMinimumWidth(120)  # long placeholders must not widen the window
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
        back.clicked.connect(lambda: self.stack.setCurrentIndex(WELCOME))
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
        layout.setSpacing(5)
        top = QHBoxLayout()
        self.start_btn = QPushButton("Start contributing")
        self.start_btn.setObjectName("hero")
        self.start_btn.clicked.connect(self.start)
        self.pause_btn = QPushButton("Pause")
        self.pause_btn.setToolTip("Stop now. The answers being written are set aside; nothing finished is lost.")
        self.pause_btn.clicked.connect(self.pause)
        self.finish_btn2 = QPushButton("Finish this answer and stop")
        self.finish_btn2.setToolTip("Finish the answers being written, then stop.")
        self.finish_btn2.clicked.connect(self.finish)
        top.addWidget(self.start_btn)
        top.addWidget(self.pause_btn)
        top.addWidget(self.finish_btn2)
        top.addStretch(1)
        layout.addLayout(top)

        self.status = StatusLine()
        layout.addWidget(self.status)

        tiles = QGridLayout()
        self.tile_session = StatTile("Saved this session", "0", compact=True)
        self.tile_session.setToolTip("Answers written this session that passed the quality check and were "
                                     "saved (held-back answers are counted below the tiles).")
        self.tile_total = StatTile("Saved here, all time", "–", compact=True)
        self.tile_rate = StatTile("Answers per hour", "–", compact=True)
        self.tile_rate.setToolTip("This session's answers per hour spent contributing (pauses not counted).")
        self.tile_tps = StatTile("Writing speed, tokens/s", "–", compact=True)
        self.tile_tps.setToolTip("How fast the model writes an answer, in tokens per second: the mean over this "
                                 "session's answers (the chart beside the answer shows each one).")
        for n, tile in enumerate((self.tile_session, self.tile_total, self.tile_rate, self.tile_tps)):
            tiles.addWidget(tile, 0, n)
            tiles.setColumnStretch(n, 1)
            for caption in tile.findChildren(QLabel, "hint"):
                caption.setWordWrap(True)  # a narrow window wraps the captions instead of scrolling
        layout.addLayout(tiles)
        self.held_line = QLabel("")
        self.held_line.setToolTip("The quality check holds back answers that are empty, broken, looping, cut off, "
                                  "in another language or that recite the principles or the question. They stay "
                                  "in a separate file on this computer and are never sent as training data. An "
                                  "answer can have several of these faults: each is counted once, under the "
                                  "first one found.")
        self.held_line.setObjectName("hint")
        self.held_line.setWordWrap(True)
        self.held_line.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.held_line.hide()
        layout.addWidget(self.held_line)
        fleet_row = QHBoxLayout()
        self.fleet_label = QLabel("Lab progress:")
        fleet_row.addWidget(self.fleet_label)
        self.fleet = QProgressBar()
        self.fleet.setRange(0, 1)
        self.fleet.setValue(0)
        self.fleet.setFormat("shown once contributing starts")
        fleet_row.addWidget(self.fleet, 1)
        layout.addLayout(fleet_row)

        work = QHBoxLayout()  # the answer being written, and beside it the session's charts
        self.now = AnswerView()
        self.now.show_message("nothing yet", "Press Start contributing.")
        work.addWidget(self.now, 3)
        self.side_tabs = QTabWidget()  # this session's charts, and the totals per day, week and in all
        self.side_tabs.setDocumentMode(True)
        session_tab = QWidget()
        charts = QVBoxLayout(session_tab)
        charts.setContentsMargins(0, 4, 0, 0)
        self.rate_chart = LiveChart("Answers this session", time_axis=True, integer_y=True, y_from_zero=True)
        self.rate_series = self.rate_chart.add_series("answers", color="#2f6fdf")
        self.tps_chart = LiveChart("Writing speed, tokens/s", time_axis=True, y_from_zero=True)
        self.tps_series = self.tps_chart.add_series("tokens/s", color="#2aa876", symbol="o")
        for chart in (self.rate_chart, self.tps_chart):
            chart.setMinimumHeight(96)
            chart.setMinimumWidth(200)
            legend = chart.getPlotItem().legend
            if legend is not None:
                legend.hide()  # one series each: the title names it
            charts.addWidget(chart)
        self.side_tabs.addTab(session_tab, "This session")
        self.side_tabs.addTab(self._build_totals(), "Totals")
        self.side_tabs.setTabToolTip(1, "What this computer has contributed today, this week and in all")
        self.side_tabs.currentChanged.connect(lambda _i: self.refresh_totals())
        work.addWidget(self.side_tabs, 2)
        layout.addLayout(work, 1)

        opts = QGridLayout()
        opts.setContentsMargins(0, 0, 0, 0)
        self.preset = QComboBox()
        for n, (key, label, tip) in enumerate(PACES):
            self.preset.addItem(label, key)
            self.preset.setItemData(n, tip, Qt.ItemDataRole.ToolTipRole)
        self.preset.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.preset.setMinimumContentsLength(10)
        self.preset.setCurrentIndex(max(0, self.preset.findData(self.settings.preset)))
        self.preset.currentIndexChanged.connect(self._save_options)
        self.preset.setToolTip("How many answers are written together. Gentle keeps the computer usable. "
                               "Changed while stopped; applies from the next start.")
        pace = QHBoxLayout()
        pace.addWidget(QLabel("Pace:"))
        pace.addWidget(self.preset)
        self.only_power = QCheckBox("Only when plugged in")
        self.only_power.setChecked(self.settings.only_on_power)
        self.in_use = QCheckBox("Pause while I use the computer")
        self.in_use.setChecked(self.settings.pause_when_in_use)
        for box in (self.only_power, self.in_use):
            box.toggled.connect(self._save_options)
        self.notify_box = QCheckBox("Notify me of milestones")
        self.notify_box.setToolTip("While the window is closed, the tray icon tells you at 10, 25, 50, 100... "
                                   "answers this session and when the lab's questions run out. Problems that "
                                   "stop contributing are always shown there.")
        self.notify_box.setChecked(self.settings.notify_milestones)
        self.notify_box.toggled.connect(self._save_notify)
        opts.addLayout(pace, 0, 0)
        opts.addWidget(self.only_power, 0, 1)
        opts.addWidget(self.in_use, 1, 1)
        opts.addWidget(self.notify_box, 1, 0)
        opts.setColumnStretch(2, 1)
        layout.addLayout(opts)
        self._set_running(False)
        return root

    def _build_totals(self) -> QWidget:
        """Today, this week, all time: a grid read from the files on this computer (`refresh_totals`)."""
        box = QWidget()
        outer = QVBoxLayout(box)
        outer.setContentsMargins(4, 8, 4, 4)
        grid = QGridLayout()
        grid.setHorizontalSpacing(10)
        grid.setVerticalSpacing(4)
        for col, period in enumerate(("Today", "This week", "All time"), start=1):
            head = QLabel(f"<b>{period}</b>")
            head.setAlignment(Qt.AlignmentFlag.AlignRight)
            grid.addWidget(head, 0, col)
        self.totals: dict[str, list[QLabel]] = {}
        self.totals_rows: dict[str, list[QWidget]] = {}
        for row, (key, label, tip) in enumerate(TOTALS_ROWS, start=1):
            name = QLabel(label)
            name.setToolTip(tip)
            grid.addWidget(name, row, 0)
            cells = []
            for col in range(1, 4):
                cell = QLabel("–")
                cell.setAlignment(Qt.AlignmentFlag.AlignRight)
                cell.setToolTip(tip)
                grid.addWidget(cell, row, col)
                cells.append(cell)
            self.totals[key] = cells
            self.totals_rows[key] = [name, *cells]
        grid.setColumnStretch(0, 1)
        outer.addLayout(grid)
        self.totals_note = QLabel("")
        self.totals_note.setObjectName("hint")
        self.totals_note.setWordWrap(True)
        self.totals_note.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        outer.addWidget(self.totals_note)
        outer.addStretch(1)
        self.history: History | None = None
        self.history_job: Job | None = None
        self.history_again = False  # asked for while a read was under way
        self.totals_timer = QTimer(self)
        self.totals_timer.setSingleShot(True)
        self.totals_timer.setInterval(TOTALS_DELAY_MS)
        self.totals_timer.timeout.connect(self.refresh_totals)
        return box

    @property
    def notify_milestones(self) -> bool:
        """The volunteer's choice (Settings or this page's box), as saved: the tray asks while the window is
        closed, when this page's box may not have been shown since Settings changed it."""
        try:
            return load_settings().notify_milestones
        except LemError:
            return self.notify_box.isChecked()

    def _save_notify(self, on: bool) -> None:
        s = load_settings()
        s.notify_milestones = on
        save_settings(s)
        self.settings = s

    def _save_options(self) -> None:
        s = load_settings()
        s.preset = self.preset.currentData() or "gentle"
        s.only_on_power = self.only_power.isChecked()
        s.pause_when_in_use = self.in_use.isChecked()
        save_settings(s)
        self.settings = s

    def _refresh_summary(self) -> None:
        s = self.settings = load_settings()
        if self.stack.currentIndex() != DASHBOARD:
            self.summary.setText(TAGLINE)
            return
        where = "offline (answers stay on this computer)" if _solo(s) else f"to {s.influx_url}"
        if s.model_override:
            model = s.model_override
        else:
            model = f"{recommended_model().entry.label}, the model recommended for this computer"
        self.summary.setText(f"Contributing {where} as “{s.effective_worker()}”, with {model}. "
                             "Change this in Settings.")
        self.fleet_label.setText("Questions answered:" if _solo(s) else "Lab progress:")
        if self.notify_box.isChecked() != s.notify_milestones:  # changed on the Settings page
            self.notify_box.blockSignals(True)
            self.notify_box.setChecked(s.notify_milestones)
            self.notify_box.blockSignals(False)
        self.refresh_totals()

    # -- totals: today, this week, all time ------------------------------------------------------------
    def refresh_totals(self) -> None:
        """Read the totals from disk again, on the IO pool (the held-back file can be long); `_show_totals`
        shows them."""
        if self.stack.currentIndex() != DASHBOARD:
            return
        if self.history_job is not None and self.history_job.running:
            self.history_again = True
            return
        try:
            options = options_from_settings(load_settings())
        except LemError:
            return  # the settings file is unreadable: the page says so when Start is pressed
        self.history_again = False
        try:
            self.history_job = self.runner.start("read-totals", lambda report, cancel: history_for(options),
                                                 kind="io", on_done=self._show_totals,
                                                 on_error=self._totals_failed)
        except RuntimeError:
            self.totals_timer.stop()  # the app is quitting: nothing more to read

    def _show_totals(self, history: History) -> None:
        self.history = history
        solo = _solo(self.settings)
        for n, (_name, tally) in enumerate(history.periods()):
            values = {"saved": f"{tally.saved:,}", "sent": f"{tally.sent:,}", "held": f"{tally.held:,}",
                      "tokens": f"{tally.tokens:,}", "time": spent_text(tally.seconds)}
            for key, cells in self.totals.items():
                cells[n].setText(values[key])
        for widget in self.totals_rows["sent"]:
            widget.setVisible(not solo)  # offline nothing is sent
        note = "Counted from the files on this computer."
        note += (" Offline, answers stay here." if solo
                 else " The lab's progress bar counts every volunteer's answers, as the lab has them.")
        if history.undated:
            older = "answer has" if history.undated == 1 else "answers have"
            note += f" {history.undated:,} older {older} no time on record: they count in “All time” only."
        self.totals_note.setText(note)
        running = self.job is not None and self.job.running
        saved = history.all_time.saved
        # While a run goes on, the engine's own count may be a moment ahead of what was read.
        self.session.all_time = max(saved, self.session.all_time or 0) if running else saved
        self._show_tiles()
        if self.history_again:
            self.refresh_totals()

    def _totals_failed(self, err: BaseException) -> None:
        msg = user_message(err)
        self.totals_note.setText(msg[1] if msg else "")
        if self.history_again:
            self.refresh_totals()

    def _set_running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        self.start_btn.setText("Start contributing" if not running else "Contributing…")
        self.pause_btn.setEnabled(running and self.stopping != "pause")
        self.finish_btn2.setEnabled(running and not self.stopping)
        self.preset.setEnabled(not running)

    # -- actions -----------------------------------------------------------------------------------
    def start(self) -> None:
        if self.job is not None and self.job.running:
            return
        self._save_options()
        self._refresh_summary()
        settings = load_settings()
        resume = self.session.open and self.last_stop in ("paused", "error")
        if not resume:
            self._new_session()
        self.session.begin_run(time.time())
        self.tracker = AnswerTracker(max_tokens=settings.max_tokens, reporting=not _solo(settings))
        self.now.follow(self.tracker)
        self.now.show_message("resuming" if resume else "getting ready",
                              "Opening the question list and the model…")
        self.status.set_state("running", "Resuming…" if resume else "Starting…")
        self.status.set_note("")
        self.state_changed.emit("running")
        self.stopping = ""
        self.last_stop = ""
        self._show_tiles()
        self._draw_charts()
        self.job = self.runner.start(
            "contribute",
            functools.partial(contribute, settings, self.token_store),
            modules=("lemcore.contribute.engine", "mlx_lm.generate", "mlx_lm.sample_utils", "mlx_lm.models.cache"),
            loads_model=resolve_generation_model(settings.model_override),
            pass_drain=True, pass_models=True, on_event=self.on_event, on_done=self.on_done,
            on_error=self.on_error, on_cancelled=self.on_cancelled)
        self._set_running(True)
        self.ticker.start()

    def _new_session(self) -> None:
        self.session = Session(all_time=self.session.all_time)
        self.rate_chart.clear_all()
        self.tps_chart.clear_all()

    def pause(self) -> None:
        """Stop now: the answers in flight are set aside. The engine notices at its next check: at once while
        writing, after the chunk of the question it is reading otherwise (the page says how long)."""
        if self.job is None or not self.job.running:
            return
        self.job.cancel("paused by you")
        self.stopping = "pause"
        self._set_running(True)
        self._say_stopping()

    def finish(self) -> None:
        """Finish the answers in flight, then stop (the engine takes no new question)."""
        if self.job is None or not self.job.running:
            return
        self.job.drain()
        self.stopping = "finish"
        self._set_running(True)
        self._say_stopping()

    def _say_stopping(self) -> None:
        now = time.monotonic()
        if self.stopping == "pause":
            delay = self.tracker.stop_delay_s(now)
            if delay is not None and delay >= 1.5:
                text = (f"Pausing: the model stops after the part of the question it is reading "
                        f"({duration_text(delay)}). Nothing finished is lost.")
            else:
                text = "Pausing… Nothing finished is lost."
            self.status.set_state("paused", text)
        elif self.stopping == "finish":
            flying = len(self.tracker.in_flight())
            if not flying:
                self.status.set_state("running", "Stopping: no answer is in progress…")
                return
            what = "the answer in progress" if flying == 1 else f"the {flying} answers in progress"
            estimate = self.tracker.finish_left_s(now)
            if estimate is None:
                when = "measuring how long that takes"
            else:
                when = duration_text(estimate[0])
                if estimate[1]:
                    when = "at most " + when.removeprefix("about ")
            self.status.set_state("running", f"Finishing {what} ({when}), then stopping. Press Pause to stop now.")

    # -- engine events (GUI thread) ------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        now = time.monotonic()
        tracker = self.tracker
        if isinstance(event, TokenChunk):
            tracker.writing(event.key, event.text, event.tokens, now)
            self.session.work_started(now)
            self.now.mark_dirty()
        elif isinstance(event, PrefillProgress):
            tracker.reading(event.key, event.done_tokens, event.total_tokens, now)
            self.session.work_started(now)
            self.now.mark_dirty()
        elif isinstance(event, ev.AnswerStarted):
            tracker.started(event.idx, event.prompt, event.domain, event.seed_id, event.prompt_tokens, now)
            self.session.work_started(now)
            self.now.mark_dirty()
        elif isinstance(event, ev.ResponseDone):
            answer = tracker.saved(event.idx, event.tokens, event.seconds, now, prompt=event.prompt,
                                   domain=event.domain, seed_id=event.seed_id, text=event.response)
            self.session.answer_done(time.time(), event.tokens, answer.tokens_per_s)
            if not tracker.reporting:
                self.answered_pending += 1  # offline, a saved answer is an answered question at once
            self.now.mark_dirty()
            self._redraw_soon()
            self._check_milestone()
        elif isinstance(event, ev.AnswerHeld):
            tracker.held(event.idx, tuple(event.reasons), now)
            self.session.held_answer(event.reasons)
            self.now.mark_dirty()
            self._show_held()
        elif isinstance(event, ev.ReportsSent):
            if tracker.reporting:
                self.answered_pending += len(tracker.sent(event.idxs))  # the lab has them now
            self.session.unreported = event.unreported
            self.now.mark_dirty()
            self._redraw_soon()
        elif isinstance(event, ev.Rates):
            self.session.all_time = event.all_time_done
            self._show_tiles()
        elif isinstance(event, ev.Started):
            self.session.all_time = event.done_local
            self._set_fleet(event.done_fleet, event.total)
            if not self.stopping:
                self.status.set_state("running", f"Contributing: {event.remaining} questions left")
            self.now.show_message("getting the first question ready",
                                  "The model reads the principles every answer starts with, then takes a question.")
            self._show_tiles()
        elif isinstance(event, ev.FleetProgress):
            self._set_fleet(event.completed, event.target)
        elif isinstance(event, ev.StatusChanged):
            if not self.stopping:
                where = "Contributing to the lab" if self.tracker.reporting else "Contributing offline"
                self.status.set_state(event.state, event.reason or where)
                self.state_changed.emit(event.state)
        elif isinstance(event, ev.Notice):
            self.status.set_note(for_the_window(event.message))
        elif isinstance(event, ev.Finished):
            self.session.unreported = event.unreported
        elif isinstance(event, (LoadStage, DownloadProgress, ConvertProgress, ModelLoaded)):
            self._model_stage(event)
        if isinstance(event, (ev.ResponseDone, ev.AnswerHeld, ev.ReportsSent)) and not self.totals_timer.isActive():
            self.totals_timer.start()  # the totals follow, read from disk a moment later
        if isinstance(event, (TokenChunk, PrefillProgress, ev.AnswerStarted)) and self.now.message is not None:
            self.now.message = None  # an answer is under way: show it
            self.now.refresh()

    def _model_stage(self, event: Event) -> None:
        if isinstance(event, ModelLoaded):
            self.now.show_message("getting ready", "The model is loaded; preparing the first question…")
            return
        words = stage_words(event)
        if words:
            self.now.show_message("getting ready", f"Preparing the model: {words}…")

    def _redraw_soon(self) -> None:
        if not self.redraw_timer.isActive():
            self.redraw_timer.start()

    def _redraw_dashboard(self) -> None:
        self._count_answered(self.answered_pending)
        self.answered_pending = 0
        self._show_tiles()
        self._draw_charts()

    def _count_answered(self, n: int) -> None:
        """Between the engine's FleetProgress counts (which also take in other volunteers' answers)."""
        if n > 0 and self.fleet.maximum() > 1:
            self.fleet.setValue(min(self.fleet.maximum(), self.fleet.value() + n))

    def _set_fleet(self, done: int, target: int) -> None:
        self.answered_pending = 0  # a count from the engine: it takes in the answers still waiting to be drawn
        self.fleet.setRange(0, max(1, target))
        self.fleet.setValue(done)
        if self.tracker.reporting:
            self.fleet.setFormat("%v of %m questions answered by all volunteers, as the lab counts them (%p%)")
        else:
            self.fleet.setFormat("%v of %m questions of this set answered on this computer (%p%)")

    def _show_tiles(self) -> None:
        now = time.monotonic()
        s = self.session
        self.tile_session.set_value(str(s.done))
        if s.all_time is not None:
            self.tile_total.set_value(str(s.all_time))
        rate, tps = s.answers_per_hour(now), s.writing_speed()
        self.tile_rate.set_value(f"{rate:.0f}" if rate is not None else "–")
        self.tile_tps.set_value(f"{tps:.1f}" if tps is not None else "–")
        self.tile_total.setToolTip(
            "Answers saved on this computer (they passed the quality check), in every session"
            + (f"; {s.unreported} not sent to the lab yet" if s.unreported else "")
            + ". The Totals tab has them per day and week. The lab's progress bar counts every volunteer's "
            "answers, as the lab has them.")
        self._show_held()

    def _show_held(self) -> None:
        text = held_summary(self.session.held_total, self.session.held_by_reason)
        self.held_line.setText(text)
        self.held_line.setVisible(bool(text))

    def _draw_charts(self) -> None:
        s = self.session
        if s.started_wall is None:
            return
        # Answers so far, as steps: flat between answers, one up at each.
        steps = self.rate_series
        if steps.n > 2 * len(s.answer_points):
            steps.clear()
        for x, y in s.answer_points[(steps.n + 1) // 2:]:
            if steps.n:
                steps.append(x, steps.last() or 0.0)
            steps.append(x, y)
        speeds = self.tps_series
        if speeds.n > len(s.speed_points):
            speeds.clear()
        for when, speed in s.speed_points[speeds.n:]:
            speeds.append(when, speed)
        self._draw_pauses()
        self._follow_clock()
        self.rate_chart.redraw()
        self.tps_chart.redraw()

    def _draw_pauses(self) -> None:
        s = self.session
        for chart in (self.rate_chart, self.tps_chart):
            for band, (start, end) in zip(chart.bands, s.pauses, strict=False):
                band.setRegion((start, end if end is not None else time.time()))
            for start, end in s.pauses[len(chart.bands):]:
                assert start is not None
                chart.add_band(start, end if end is not None else time.time())

    def _follow_clock(self) -> None:
        start = self.session.started_wall
        if start is None:
            return
        now = time.time()
        for chart in (self.rate_chart, self.tps_chart):
            chart.show_time_span(start, now)

    def _tick(self) -> None:
        """Once a second while a run is on (and while a pause is shown): estimates, the clock axis."""
        self.now.mark_dirty()
        if self.stopping and self.job is not None and self.job.running:
            self._say_stopping()
        if self.session.open:
            self._draw_pauses()
            self._follow_clock()
            self._show_tiles()
        pausing = bool(self.session.pauses) and self.session.pauses[-1][1] is None
        if (self.job is None or not self.job.running) and not pausing:
            self.ticker.stop()

    def _check_milestone(self) -> None:
        n = self.session.milestone()
        if n is not None:
            self.notify.emit("LEM Desktop", f"{n} answers written this session. Thank you!", False)

    # -- the end of a run ------------------------------------------------------------------------------
    def _run_ended(self, how: str) -> None:
        self.session.end_run(time.monotonic(), time.time(), paused=how == "paused")
        self.last_stop = how
        self.stopping = ""
        self.now.let_go()  # the last answer stays shown, without the room other answers' lines needed
        self._set_running(False)
        self._show_tiles()
        self._draw_charts()
        self.totals_timer.stop()
        self.refresh_totals()

    def on_done(self, result: ContributeResult) -> None:
        left = result.unreported
        self.session.unreported = left
        self._run_ended("done")
        extra = f"; {left} answers are queued and will be sent when the server is back" if left else ""
        self.status.set_state("idle", f"Stopped: {self.session.done} answers this session{extra}.")
        if self.tracker.featured is None:
            self.now.show_message("nothing", "Stopped. Press Start contributing to begin a new session.")
        else:
            self.now.refresh()  # the last answer stays in view, with where it ended (saved, sent, held back)
        self.state_changed.emit("idle")
        if result.remaining == 0:
            where = "on this computer" if not self.tracker.reporting else "by the volunteers"
            self.notify.emit("LEM Desktop", f"Every question in the set is answered {where}. Thank you!", False)

    def on_cancelled(self) -> None:
        now = time.monotonic()
        dropped = self.tracker.set_aside(now)
        self._run_ended("paused")
        self.now.mark_dirty()
        if dropped:
            self.now.refresh()
        else:
            self.now.show_message("paused", "Nothing was in progress.", clear_text=False)
        self.status.set_state("paused", "Paused. Press Start contributing to go on where you left off.")
        self.state_changed.emit("paused")
        self.ticker.start()  # the pause grows on the charts

    def on_error(self, err: BaseException) -> None:
        self.tracker.set_aside(time.monotonic())
        self._run_ended("error")
        msg = user_message(err)
        if msg:
            self.status.set_state("error", f"{msg[0]}. {msg[1]}")
            self.now.show_message("stopped by a problem", "See the line above; Start tries again.",
                                  clear_text=False)
            self.notify.emit(f"LEM Desktop: {msg[0].lower()}", msg[1], True)
        self.state_changed.emit("idle")


def _solo(s: Settings) -> bool:
    return s.solo or not s.influx_url.strip()


def _page(card: QFrame) -> QWidget:
    holder = QWidget()
    layout = QVBoxLayout(holder)
    layout.setContentsMargins(0, 12, 0, 0)
    layout.addWidget(card)
    layout.addStretch(1)
    return holder
