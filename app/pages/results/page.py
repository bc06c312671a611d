"""Results: pick result sets (our runs and the paper's figures); grouped bars per metric with 95% intervals,
the delta-vs-base table, a safety-vs-capability scatter, and per-item answers side by side. Run any of the
benchmarks from here (bench_form.py); export the chart as PNG and the table as CSV. `show_pair` opens the
page on two runs' paired comparison (for other parts of the app)."""

from __future__ import annotations

import csv
import html
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTextEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.appearance import appearance, current_theme
from app.charts.live_chart import PALETTE, follow_theme
from app.errors import user_message
from app.jobs.runner import Job, JobRunner
from app.pages.results.bench_form import BenchForm
from app.pages.results.model import (
    METRICS,
    MINUS,
    SUITE_TITLES,
    UNITS,
    ResultSet,
    calibration_note,
    delta_text,
    judged,
    load_result_sets,
    read_items,
    suite_title,
    value_text,
)
from app.style import Theme
from app.widgets import StatusLine, heading
from lemcore.benchmarks import (
    BenchConfig,
    BenchProgress,
    BenchResult,
    BenchStarted,
    compare_runs,
    run_benchmark,
)
from lemcore.benchmarks.compare import CompareRow
from lemcore.benchmarks.suites import SuiteDownloadError, suite_module
from lemcore.errors import ConfigError, LemError
from lemcore.events import Event

STAGES = {"loading": "Loading the model", "generating": "Writing answers", "scoring": "Scoring answers",
          "judging": "Judging answers"}


def _compact_combo(combo: QComboBox, chars: int = 14) -> QComboBox:
    """A combo box whose width does not grow with its longest entry (run names can be long)."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(chars)
    return combo


class ResultsPage(QWidget):
    def __init__(self, runner: JobRunner) -> None:
        super().__init__()
        self.runner = runner
        self.job: Job | None = None
        # Each run gets a new folder, except a cancelled run started again with the same settings: it resumes.
        self._started: BenchConfig | None = None
        self._run_dir: Path | None = None
        self._resume: tuple[BenchConfig, Path] | None = None
        self.sets: list[ResultSet] = []
        self._comparisons: dict[tuple[str, str], dict[tuple[str, str], CompareRow]] = {}
        self._rows_a: dict[str, dict[str, Any]] = {}
        self._rows_b: dict[str, dict[str, Any]] = {}
        self._extra_runs: list[Path] = []  # run folders outside the data folder that show_pair was given
        layout = QVBoxLayout(self)
        layout.setContentsMargins(24, 20, 24, 16)
        layout.addWidget(heading("Results", "Compare models with 95% intervals. Overlapping intervals mean the "
                                 "difference may be noise."))
        split = QSplitter(Qt.Orientation.Horizontal)
        layout.addWidget(split, 1)

        # Left: two tabs, the result sets to compare and the form that makes new ones. The status line goes
        # under the whole page: in sight on both tabs, and wide enough for an error's example line.
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 8, 0)
        self.left_tabs = QTabWidget()
        sets_tab = QWidget()
        sl = QVBoxLayout(sets_tab)
        sl.setContentsMargins(6, 6, 6, 6)
        sl.addWidget(QLabel("Tick the result sets to compare."))
        self.picker = QListWidget()
        self.picker.itemChanged.connect(lambda _i: self.redraw())
        sl.addWidget(self.picker, 1)
        self.left_tabs.addTab(sets_tab, "Result sets")
        run_tab = QWidget()
        run_layout = QVBoxLayout(run_tab)
        run_layout.setContentsMargins(6, 6, 6, 6)
        self.form = BenchForm()
        # The names tests and screenshots fill the form by.
        self.bench_model, self.bench_n, self.bench_samples = self.form.model, self.form.n, self.form.samples
        run_layout.addWidget(self.form)
        self.run_btn = QPushButton("Run benchmark")
        self.run_btn.setObjectName("primary")
        self.run_btn.clicked.connect(lambda: self.run_benchmark())
        self.cancel_btn = QPushButton("Stop")
        self.cancel_btn.setToolTip("Stop the benchmark. Running it again with the same settings continues "
                                   "where it stopped.")
        self.cancel_btn.clicked.connect(lambda: self.job.cancel() if self.job else None)
        self.cancel_btn.setEnabled(False)
        row = QHBoxLayout()
        row.addWidget(self.run_btn)
        row.addWidget(self.cancel_btn)
        run_layout.addLayout(row)
        run_layout.addStretch(1)
        self.left_tabs.addTab(run_tab, "Run a benchmark")
        ll.addWidget(self.left_tabs, 1)
        self.status = StatusLine()
        split.addWidget(left)

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(8, 0, 0, 0)
        top = QHBoxLayout()
        top.addWidget(QLabel("Metric:"))
        self.metric_box = _compact_combo(QComboBox(), 10)  # not `metric`: QPaintDevice.metric(), which Qt calls
        for label, suite, metric in METRICS:
            self.metric_box.addItem(label, (suite, metric))
        self.metric_box.currentIndexChanged.connect(lambda _i: self.redraw())
        top.addWidget(self.metric_box)
        top.addWidget(QLabel("Base:"))
        self.base = _compact_combo(QComboBox(), 8)
        self.base.setToolTip("The result set the others are compared with in the delta table.")
        self.base.currentIndexChanged.connect(lambda _i: self.redraw())
        top.addWidget(self.base, 1)
        export = QToolButton()
        export.setText("Export")
        export.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(export)
        menu.addAction("Chart or tab as PNG…", lambda: self.export_png())
        menu.addAction("Delta table as CSV…", lambda: self.export_csv())
        export.setMenu(menu)
        top.addWidget(export)
        rl.addLayout(top)
        self.tabs = QTabWidget()
        self.bars = pg.PlotWidget()
        self.bars.showGrid(y=True, alpha=0.2)
        self.scatter = pg.PlotWidget()
        self.scatter.setLabel("bottom", "GSM8K accuracy (%)  — capability")
        self.scatter.setLabel("left", "Do Not Answer safety (1–10)")
        self.scatter.showGrid(x=True, y=True, alpha=0.2)
        for plot in (self.bars, self.scatter):
            plot.setMinimumSize(200, 150)
            follow_theme(plot)
        self.table = QTableWidget()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.drill = self._build_drill()
        self.tabs.addTab(self.bars, "Bars with 95% intervals")
        self.tabs.addTab(self.table, "Difference from base")
        self.tabs.addTab(self.scatter, "Safety vs capability")
        self.tabs.addTab(self.drill, "Answers side by side")
        rl.addWidget(self.tabs, 1)
        self.note = QLabel("")
        self.note.setObjectName("hint")
        self.note.setWordWrap(True)
        rl.addWidget(self.note)
        split.addWidget(right)
        split.setChildrenCollapsible(False)
        split.setStretchFactor(1, 1)
        split.setSizes([290, 800])
        layout.addWidget(self.status)
        appearance().changed.connect(self._theme_changed)
        self.reload()

    # -- data ---------------------------------------------------------------------------------------
    def _theme_changed(self, _theme: Theme) -> None:
        self.redraw()  # the error bars are drawn in the theme's foreground colour

    def reload(self) -> None:
        self.sets = load_result_sets(self._extra_runs)
        self._comparisons.clear()
        self.picker.blockSignals(True)
        self.picker.clear()
        for n, rs in enumerate(self.sets):
            item = QListWidgetItem(("◆ " if rs.kind == "reference" else "● ") + rs.name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            # First launch: the paper's IT and LEK rows are ticked, so there is something real to see.
            on = rs.kind == "run" and n < 2 or rs.spec in ("ref:1b_five_variant/it", "ref:1b_five_variant/lek")
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
            item.setToolTip(rs.note or str(rs.path))
            self.picker.addItem(item)
        self.picker.blockSignals(False)
        self.base.blockSignals(True)
        self.base.clear()
        for rs in self.sets:
            self.base.addItem(rs.name)
        it = next((i for i, rs in enumerate(self.sets) if rs.spec == "ref:1b_five_variant/it"), 0)
        self.base.setCurrentIndex(it)
        self.base.blockSignals(False)
        self._fill_drill_runs()
        self.redraw()

    def show_pair(self, base_run: Path, other_run: Path) -> None:
        """Open on the paired comparison of two benchmark runs: the result sets read again, exactly these two
        ticked, `base_run` the base, the "Difference from base" tab shown (and the two runs side by side in
        the answers tab). Run folders outside the data folder are listed too. Raises ConfigError when a
        folder holds no benchmark run."""
        paths = [Path(base_run).expanduser(), Path(other_run).expanduser()]
        for path in paths:
            if all(path.resolve() != known.resolve() for known in self._extra_runs):
                self._extra_runs.append(path)
        self.reload()
        rows = []
        for path in paths:
            row = next((n for n, rs in enumerate(self.sets)
                        if rs.kind == "run" and rs.path is not None and rs.path.resolve() == path.resolve()), None)
            if row is None:
                raise ConfigError(f"{path} holds no benchmark run to compare. Choose a run folder (one with "
                                  "run.json in it).")
            rows.append(row)
        self.picker.blockSignals(True)
        for n in range(self.picker.count()):
            self.picker.item(n).setCheckState(Qt.CheckState.Checked if n in rows else Qt.CheckState.Unchecked)
        self.picker.blockSignals(False)
        self.base.blockSignals(True)
        self.base.setCurrentIndex(rows[0])
        self.base.blockSignals(False)
        for combo, path in ((self.drill_a, paths[0]), (self.drill_b, paths[1])):
            index = next((i for i in range(combo.count())
                          if Path(str(combo.itemData(i))).resolve() == path.resolve()), -1)
            if index >= 0:
                combo.setCurrentIndex(index)
        self.left_tabs.setCurrentIndex(0)
        pair = [self.sets[r] for r in rows]
        common = next((n for n, (_l, suite, metric) in enumerate(METRICS)
                       if all((suite, metric) in rs.values for rs in pair)), -1)
        if common >= 0:  # the bars show a metric the pair has
            self.metric_box.blockSignals(True)
            self.metric_box.setCurrentIndex(common)
            self.metric_box.blockSignals(False)
        self.tabs.setCurrentWidget(self.table)
        self.redraw()

    def selected(self) -> list[ResultSet]:
        return [rs for n, rs in enumerate(self.sets)
                if self.picker.item(n).checkState() == Qt.CheckState.Checked]

    # -- drawing ------------------------------------------------------------------------------------
    def redraw(self) -> None:
        chosen = self.selected()
        key = self.metric_box.currentData()
        self.bars.clear()
        ticks, notes = [], []
        for n, rs in enumerate(chosen):
            color = PALETTE[n % len(PALETTE)]
            if key not in rs.values:
                ticks.append((n, f"{rs.name}\n(no data)"))
                continue
            mean, low, high = rs.values[key]
            brush = pg.mkBrush(color) if rs.kind == "run" else pg.mkBrush(pg.mkColor(color).lighter(150))
            self.bars.addItem(pg.BarGraphItem(x=[n], height=[mean], width=0.6, brush=brush, pen=pg.mkPen(color)))
            if low is not None and high is not None:
                self.bars.addItem(pg.ErrorBarItem(x=np.array([n]), y=np.array([mean]), top=np.array([high - mean]),
                                                  bottom=np.array([mean - low]), beam=0.2,
                                                  pen=pg.mkPen(current_theme().chart_fg)))
            if rs.kind == "reference":
                notes.append(rs.name)
            ticks.append((n, rs.name if len(rs.name) < 28 else rs.name[:26] + "…"))
        self.bars.getAxis("bottom").setTicks([ticks])
        self.bars.setTitle(self.metric_box.currentText(), color=current_theme().chart_fg)
        paper = ("Paper figures (" + ", ".join(notes) + "): n=50, one sample per item, no published intervals. "
                 "GSM8K bars carry the exact 95% interval of that many right out of 50; judge scores have none. "
                 "The same 1B model scored 34% and 44% in two of the lab's runs.") if notes else ""
        judged_note = calibration_note(chosen, key[0]) if key else ""
        self.note.setText("\n".join(t for t in (paper, judged_note) if t))
        self._draw_scatter(chosen)
        self._fill_table(chosen)

    def _draw_scatter(self, chosen: list[ResultSet]) -> None:
        self.scatter.clear()
        self.scatter.addLegend()
        for n, rs in enumerate(chosen):
            cap, safe = rs.values.get(("gsm8k", "accuracy")), rs.values.get(("do_not_answer", "safety"))
            if not cap or not safe:
                continue
            color = PALETTE[n % len(PALETTE)]
            (x, x_low, x_high), (y, y_low, y_high) = cap, safe
            self.scatter.plot([x], [y], pen=None, symbol="o" if rs.kind == "run" else "d",
                              symbolBrush=color, symbolSize=12, name=rs.name)
            if x_low is not None and x_high is not None and y_low is not None and y_high is not None:
                self.scatter.addItem(pg.ErrorBarItem(
                    x=np.array([x]), y=np.array([y]), left=np.array([x - x_low]), right=np.array([x_high - x]),
                    bottom=np.array([y - y_low]), top=np.array([y_high - y]), pen=pg.mkPen(color)))

    def _fill_table(self, chosen: list[ResultSet]) -> None:
        base = self.sets[self.base.currentIndex()] if self.sets and self.base.currentIndex() >= 0 else None
        others = [rs for rs in chosen if rs is not base]
        headers = ["Metric", f"Base: {base.name}" if base else "Base"]
        for rs in others:
            headers += [rs.name, f"Δ {rs.name} vs base"]
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        shown = [rs for rs in (base, *others) if rs is not None]
        # Only the metrics some shown set has: a pair benchmarked on one suite is not lost among empty rows.
        metrics = [m for m in METRICS if any((m[1], m[2]) in rs.values for rs in shown)] or list(METRICS)
        self.table.setRowCount(len(metrics))
        rows = {rs.spec: self.comparison(base, rs) for rs in others} if base is not None else {}
        for r, (label, suite, metric) in enumerate(metrics):
            unit = UNITS.get((suite, metric), "")
            cells = [label, value_text(base.values.get((suite, metric)), unit) if base else ""]
            for rs in others:
                cells.append(value_text(rs.values.get((suite, metric)), unit))
                cells.append(delta_text(rows.get(rs.spec, {}).get((suite, metric))))
            for c, text in enumerate(cells):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()

    def comparison(self, base: ResultSet, rs: ResultSet) -> dict[tuple[str, str], CompareRow]:
        """rs against base, per metric, exactly as `lem compare BASE RS` computes it (same bootstrap and
        seed), for our runs and the paper's figures alike. Kept until the result sets are reloaded."""
        key = (base.spec, rs.spec)
        if key not in self._comparisons:
            try:
                cmp = compare_runs(base.spec, rs.spec)
            except LemError:  # a broken run folder: its cells stay empty
                cmp = None
            self._comparisons[key] = {(row.suite, row.metric): row for row in cmp.rows} if cmp else {}
        return self._comparisons[key]

    # -- drill-down ---------------------------------------------------------------------------------
    def _build_drill(self) -> QWidget:
        box = QWidget()
        layout = QVBoxLayout(box)
        row = QGridLayout()
        self.drill_a, self.drill_b = _compact_combo(QComboBox(), 8), _compact_combo(QComboBox(), 8)
        self.drill_suite = _compact_combo(QComboBox(), 8)
        for n, (w, label) in enumerate(((self.drill_a, "Run A"), (self.drill_b, "Run B"),
                                        (self.drill_suite, "Benchmark"))):
            row.addWidget(QLabel(label), n // 2, (n % 2) * 2)
            row.addWidget(w, n // 2, (n % 2) * 2 + 1)
            w.currentIndexChanged.connect(lambda _i: self._fill_items())
        row.setColumnStretch(1, 1)
        row.setColumnStretch(3, 1)
        layout.addLayout(row)
        self.items = QListWidget()
        self.items.currentItemChanged.connect(lambda *_: self._show_item())
        layout.addWidget(self.items, 1)
        pair = QHBoxLayout()
        self.answer_a, self.answer_b = QTextEdit(), QTextEdit()
        for view in (self.answer_a, self.answer_b):
            view.setReadOnly(True)
            pair.addWidget(view)
        layout.addLayout(pair, 2)
        return box

    def _fill_drill_runs(self) -> None:
        runs = [rs for rs in self.sets if rs.kind == "run"]
        for combo in (self.drill_a, self.drill_b):
            combo.blockSignals(True)
            combo.clear()
            for rs in runs:
                combo.addItem(rs.name, str(rs.path))
            combo.blockSignals(False)
        if len(runs) > 1:
            self.drill_b.setCurrentIndex(1)
        self.drill_suite.blockSignals(True)
        self.drill_suite.clear()
        for suite in dict.fromkeys(s for _l, s, _m in METRICS):
            self.drill_suite.addItem(suite_title(suite), suite)
        self.drill_suite.blockSignals(False)
        self._fill_items()

    def _fill_items(self) -> None:
        self.items.clear()
        a, b, suite = self.drill_a.currentData(), self.drill_b.currentData(), self.drill_suite.currentData()
        if not a or not suite:
            return
        self._rows_a = read_items(Path(a), suite)
        self._rows_b = read_items(Path(b), suite) if b else {}
        for key, row in self._rows_a.items():
            question = " ".join(str(row.get("question") or row.get("prompt") or "").split())
            item = QListWidgetItem(f"{key} · {question[:80]}" if question else key)
            item.setData(Qt.ItemDataRole.UserRole, key)
            self.items.addItem(item)
        if self.items.count():
            self.items.setCurrentRow(0)

    def _show_item(self) -> None:
        item = self.items.currentItem()
        if item is None:
            return
        key = item.data(Qt.ItemDataRole.UserRole)
        suite = self.drill_suite.currentData() or ""
        for rows, view, name in ((self._rows_a, self.answer_a, self.drill_a.currentText()),
                                 (self._rows_b, self.answer_b, self.drill_b.currentText())):
            view.setHtml(answer_html(name, rows.get(key), suite))

    # -- actions ------------------------------------------------------------------------------------
    def run_benchmark(self) -> None:
        """Run what the form describes: every ticked benchmark in one run folder."""
        try:
            config = self.form.config()
        except ConfigError as err:
            self.status.set_state("error", str(err))
            return
        suites = [s.id for s in config.suites]
        self._started, self._run_dir = config, None
        if self._resume is not None and self._resume[0] == config:
            config = replace(config, run_dir=str(self._resume[1]))  # the cancelled run, in its folder
        self._resume = None
        self.status.set_state("running", "Starting the benchmark…")
        modules = ["lemcore.benchmarks.run", *(f"lemcore.benchmarks.{s}" for s in suites), "mlx_lm.generate",
                   "mlx_lm.sample_utils", "mlx_lm.tuner.utils"]
        if any(not s.path and not hasattr(suite_module(s.id), "default_path") for s in config.suites):
            # Questions fetched from the dataset hub (or its cache), read from Parquet.
            modules += ["huggingface_hub", "huggingface_hub.errors", "pyarrow.parquet"]
        self.job = self.runner.start("bench", lambda report, cancel: run_benchmark(config, report=report,
                                                                                   cancel=cancel),
                                     modules=modules, loads_model=config.model, frees_models=True,
                                     on_event=self._on_event, on_done=self._on_done, on_error=self._on_error,
                                     on_cancelled=self._on_cancelled)
        self.run_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, BenchStarted):
            self._run_dir = event.run_dir
        elif isinstance(event, BenchProgress):
            stage = STAGES.get(event.stage, event.stage.capitalize())
            where = f" ({suite_title(event.suite)})" if event.suite else ""
            count = f": {event.done} of {event.total}" if event.total > 1 else "…"
            self.status.set_state("running", f"{stage}{where}{count}")

    def _finished(self) -> None:
        self.run_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)

    def _on_done(self, result: BenchResult) -> None:
        self._finished()
        suites = result.summary.get("suites") or {}
        unjudged = [f"{suite_title(s)}: {data['not_judged']}" for s, data in suites.items()
                    if judged(s) and data.get("not_judged")]
        note = (" Answers saved without scores, as they need a judge (" + "; ".join(unjudged) + ")."
                if unjudged else "")
        self.status.set_state("idle", f"Benchmark finished: {result.run_dir.name}.{note}")
        self.reload()
        self.left_tabs.setCurrentIndex(0)  # the new run is at the top of the list, ticked

    def _on_cancelled(self) -> None:
        self._finished()
        if self._started is not None and self._run_dir is not None:
            self._resume = (self._started, self._run_dir)
        self.status.set_state("paused", "Stopped. Press Run benchmark with the same settings to continue where "
                              "it stopped.")

    def _on_error(self, err: BaseException) -> None:
        self._finished()
        msg = user_message(err)
        if msg:
            # A suite that could not be downloaded: the same advice, without the command line's flags.
            text = err.for_window if isinstance(err, SuiteDownloadError) else msg[1]
            self.status.set_state("error", f"{msg[0]}. {text}")

    def export_png(self, path: str | None = None) -> None:
        path = path or QFileDialog.getSaveFileName(self, "Export chart", "results.png", "PNG (*.png)")[0]
        if path:
            self.tabs.currentWidget().grab().save(path)

    def export_csv(self, path: str | None = None) -> None:
        path = path or QFileDialog.getSaveFileName(self, "Export table", "results.csv", "CSV (*.csv)")[0]
        if not path:
            return
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow([head.text() if (head := self.table.horizontalHeaderItem(c)) else ""
                             for c in range(self.table.columnCount())])
            for r in range(self.table.rowCount()):  # plain "-" signs, so spreadsheets read the numbers
                writer.writerow([(cell.text().replace(MINUS, "-") if (cell := self.table.item(r, c)) else "")
                                 for c in range(self.table.columnCount())])


def _esc(value: Any) -> str:
    return html.escape(str(value))


def answer_html(run_name: str, row: dict[str, Any] | None, suite: str) -> str:
    """One run's answer to one item, for people: the question, the answer, and how it was scored (GSM8K: the
    number read from the answer and whether it is right; judged benchmarks: each score with the judge's
    reasons). Never a raw record."""
    if row is None:
        return f"<h3>{_esc(run_name)}</h3><p>No answer to this question in this run.</p>"
    question = row.get("question") or row.get("prompt") or ""
    question_html = f"<p><b>Question</b></p><p style='white-space: pre-wrap'>{_esc(question)}</p>"
    parts = [f"<h3>{_esc(run_name)}</h3>"]
    if row.get("status", "ok") != "ok":
        reason = row.get("error") or "no reason recorded"
        parts.append(f"<p><b>No answer:</b> it could not be generated ({_esc(reason)}).</p>")
        return "".join(parts) + question_html
    # How it was scored first (what differs between the two sides), then the answer, then the question.
    parts.append("<p><b>How it was scored</b></p>")
    score = row.get("score") or {}
    by_judge = judged(suite) if suite in SUITE_TITLES else "judgment" in row
    if isinstance(score, dict) and "mc1_correct" in score:  # multiple choice: what the model found likeliest
        verdict = "the true answer" if score.get("mc1_correct") else "a false answer"
        mc2 = score.get("mc2")
        parts.append(f"<p>The answer the model finds most likely is <b>{verdict}</b> (MC1)."
                     + (f" It gives <b>{100 * float(mc2):.0f}%</b> of its likelihood to the true answers (MC2)."
                        if isinstance(mc2, (int, float)) else "") + "</p>")
    elif not by_judge and isinstance(score, dict) and score:
        extracted = score.get("extracted")
        verdict = "Correct" if score.get("correct") else "Incorrect"
        found = (f"The answer's final number: <b>{_esc(extracted)}</b>." if extracted not in (None, "")
                 else "No final number was found in the answer.")
        expected = score.get("expected")
        parts.append(f"<p><b>{verdict}.</b> {found}"
                     + (f" The right answer is <b>{_esc(expected)}</b>." if expected not in (None, "") else "")
                     + "</p>")
    elif by_judge:
        parts.append(_judgment_html(row.get("judgment")))
    else:
        parts.append("<p>Not scored.</p>")
    parts += ["<p><b>Answer</b></p>", f"<p style='white-space: pre-wrap'>{_esc(row.get('response', ''))}</p>",
              question_html]
    return "".join(parts)


def _judgment_html(judgment: dict[str, Any] | None) -> str:
    if not judgment:
        return "<p>Not scored by a judge yet.</p>"
    if judgment.get("status") != "ok":
        why = judgment.get("error") or "no reason recorded"
        return f"<p>The judge could not score this answer ({_esc(why)}). It is left out of the averages.</p>"
    scores = judgment.get("scores") or {}
    items = "".join(f"<li>{_esc(str(k).replace('_', ' ').capitalize())}: <b>{float(v):g}</b> of 10</li>"
                    for k, v in scores.items())
    reasons = judgment.get("reasoning") or ""
    text = f"<p>The judge's scores:</p><ul>{items}</ul>"
    if reasons:
        text += f"<p><b>The judge's reasons:</b> {_esc(reasons)}</p>"
    return text
