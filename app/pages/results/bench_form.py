"""The Results page's "Run a benchmark" form: a model, the benchmarks to run (each with what it needs and an
optional question file of its own), questions per benchmark and samples per item; `config()` turns it into
the BenchConfig that `lem bench` would build from the same choices."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.pages.results.model import suite_details, suite_need, suite_order, suite_summary, suite_title
from app.widgets import ModelBox
from lemcore.benchmarks import BenchConfig, SuiteSpec
from lemcore.errors import ConfigError
from lemcore.models.catalog import EMBEDDED_ID

SUITE_ROLE = Qt.ItemDataRole.UserRole  # the suite id of a chooser row
FILE_ROLE = Qt.ItemDataRole.UserRole + 1  # its question file ("" = the usual source)


class BenchForm(QWidget):
    def __init__(self) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.model = ModelBox(EMBEDDED_ID)  # the built-in model: runs anywhere, no download
        self.model.setMinimumContentsLength(6)  # the column is narrow at the smallest window size
        self.model.setToolTip("The model to benchmark: the built-in one, a downloaded one, or a model folder "
                              "(a fused model, for example).")
        folder = QToolButton()
        folder.setText("…")
        folder.setToolTip("Choose a model folder on this computer.")
        folder.clicked.connect(self._pick_model_folder)
        model_row = QHBoxLayout()
        model_row.addWidget(QLabel("Model"))
        model_row.addWidget(self.model, 1)
        model_row.addWidget(folder)
        layout.addLayout(model_row)

        self.suites = QListWidget()
        self.suites.setToolTip("Tick the benchmarks to run; they run one after the other, into one result set.")
        self.suites.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.suites.setWordWrap(True)  # a long title wraps in a narrow column instead of scrolling sideways
        self.suites.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.suites.setResizeMode(QListView.ResizeMode.Adjust)
        for suite in suite_order():
            item = QListWidgetItem(f"{suite_title(suite)} ({suite_need(suite)})")
            item.setData(SUITE_ROLE, suite)
            item.setData(FILE_ROLE, "")
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if suite == "gsm8k" else Qt.CheckState.Unchecked)
            item.setToolTip(suite_details(suite))
            self.suites.addItem(item)
        # Every benchmark in sight, with room for one title wrapped onto a second line in a narrow column.
        rows = self.suites.count() + 1
        self.suites.setFixedHeight(self.suites.sizeHintForRow(0) * rows + 2 * self.suites.frameWidth() + 2)
        self.suites.currentItemChanged.connect(lambda *_: self._show_current())
        layout.addWidget(self.suites)
        self.details = QLabel("")
        self.details.setObjectName("hint")
        self.details.setWordWrap(True)
        # Wraps to the column's width instead of widening it; room for two lines, as a tab page does not pass
        # the height a wrapped label needs up to the window.
        self.details.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
        self.details.setMinimumHeight(self.fontMetrics().lineSpacing() * 2 + 2)
        layout.addWidget(self.details)

        self.file = QLineEdit()
        self.file.setClearButtonEnabled(True)
        self.file.textChanged.connect(self._file_edited)
        browse = QPushButton("File…")
        browse.setToolTip("Choose a question file for this benchmark (JSON lines, CSV, JSON or Parquet).")
        browse.clicked.connect(self._pick_file)
        file_row = QHBoxLayout()
        file_row.addWidget(self.file, 1)
        file_row.addWidget(browse)
        layout.addLayout(file_row)

        self.n = QSpinBox()
        self.n.setRange(0, 100000)
        self.n.setSpecialValueText("all")
        self.n.setToolTip("Questions per benchmark: a reproducible sample covering every category, or all.")
        self.samples = QSpinBox()
        self.samples.setRange(1, 20)
        self.samples.setValue(3)
        self.samples.setToolTip("Answers per question. Several show how much one model's scores vary between "
                                "runs; a multiple-choice benchmark needs only one.")
        counts = QGridLayout()
        for row, (text, spin) in enumerate((("Questions", self.n), ("Answers per question", self.samples))):
            label = QLabel(text)
            label.setToolTip(spin.toolTip())
            counts.addWidget(label, row, 0)
            counts.addWidget(spin, row, 1)
        counts.setColumnStretch(1, 1)
        layout.addLayout(counts)
        self.suites.setCurrentRow(0)

    # -- the chooser --------------------------------------------------------------------------------
    def _item(self, suite: str) -> QListWidgetItem:
        for row in range(self.suites.count()):
            item = self.suites.item(row)
            if item.data(SUITE_ROLE) == suite:
                return item
        raise KeyError(suite)

    def _show_current(self) -> None:
        item = self.suites.currentItem()
        if item is None:
            return
        suite = str(item.data(SUITE_ROLE))
        self.details.setText(suite_summary(suite))
        self.file.blockSignals(True)
        self.file.setText(str(item.data(FILE_ROLE) or ""))
        self.file.blockSignals(False)
        self.file.setPlaceholderText(f"{suite_title(suite)}: usual questions")
        self.file.setToolTip(f"A question file for {suite_title(suite)}, or blank for the usual questions. "
                             + suite_details(suite))

    def _file_edited(self, text: str) -> None:
        item = self.suites.currentItem()
        if item is None:
            return
        item.setData(FILE_ROLE, text.strip())
        suite = str(item.data(SUITE_ROLE))
        name = Path(text.strip()).name
        item.setText(f"{suite_title(suite)} ({suite_need(suite)})" + (f" · {name}" if name else ""))
        if text.strip():  # a file given for a benchmark means it is meant to run
            item.setCheckState(Qt.CheckState.Checked)

    def checked(self) -> list[str]:
        return [str(self.suites.item(r).data(SUITE_ROLE)) for r in range(self.suites.count())
                if self.suites.item(r).checkState() == Qt.CheckState.Checked]

    def set_checked(self, suites: list[str]) -> None:
        for row in range(self.suites.count()):
            item = self.suites.item(row)
            on = item.data(SUITE_ROLE) in suites
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    def set_file(self, suite: str, path: str | Path) -> None:
        """Give `suite` its question file (and tick it), as choosing the file in the form does."""
        self.suites.setCurrentItem(self._item(suite))
        self.file.setText(str(path))

    def file_for(self, suite: str) -> str:
        return str(self._item(suite).data(FILE_ROLE) or "")

    # -- dialogs ------------------------------------------------------------------------------------
    def _pick_file(self) -> None:
        item = self.suites.currentItem()
        title = suite_title(str(item.data(SUITE_ROLE))) if item is not None else "the benchmark"
        path, _ = QFileDialog.getOpenFileName(self, f"A question file for {title}", "",
                                              "Question files (*.jsonl *.json *.csv *.parquet);;All files (*)")
        if path:
            self.file.setText(path)

    def _pick_model_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder")
        if folder:
            self.model.set_value(folder)

    # -- the run ------------------------------------------------------------------------------------
    def config(self) -> BenchConfig:
        """The run these choices describe. Raises ConfigError, in words, when something is missing."""
        model = self.model.value()
        if not model:
            raise ConfigError("Choose a model first: the built-in one, a downloaded one, or a model folder.")
        if self.model.unavailable():
            raise ConfigError("This model is not downloaded yet. Choose a downloaded or built-in model, or a "
                              "model folder.")
        suites = self.checked()
        if not suites:
            raise ConfigError("Tick at least one benchmark to run.")
        n = self.n.value() or None
        return BenchConfig(model=model, suites=tuple(SuiteSpec(s, self.file_for(s), n=n) for s in suites),
                           samples=self.samples.value())
