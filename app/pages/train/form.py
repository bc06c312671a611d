"""A form built from TrainConfig's field metadata: labels, tooltips, choices, errors beside each field."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QDoubleValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.widgets import OTHER_MODEL, ModelBox
from lemcore.train.config import TrainConfig

BASIC = ("model", "data", "iters", "batch_size", "learning_rate", "mask_prompt", "num_layers", "fine_tune_type",
         "grad_checkpoint")
HIDDEN = ("resume_from", "adapter_path")  # set by Resume and by the engine, not typed by hand
# Labels that read better in the window than the config's own (which follow mlx-lm's names).
LABELS = {"iters": "Steps"}
OTHER = OTHER_MODEL  # the data of the model list's "Other…" entry


FieldWidget = QComboBox | QCheckBox | QSpinBox | QLineEdit  # the editor of one field, chosen by its type


class TrainForm(QWidget):
    changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.widgets: dict[str, FieldWidget] = {}
        self.errors: dict[str, QLabel] = {}
        self.types: dict[str, str] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        basic = QFormLayout()
        self.advanced_box = QGroupBox("Advanced settings")
        self.advanced_box.setCheckable(True)
        self.advanced_box.setChecked(False)  # folded away until asked for
        advanced = QFormLayout(self.advanced_box)
        for form in (basic, advanced):  # in a narrow window a field goes under its label
            form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self._adv_rows: list[QWidget] = []
        for f in fields(TrainConfig):
            if f.name in HIDDEN:
                continue
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            self.types[f.name] = kind
            widget = self._make_widget(f.name, kind, f.metadata)
            widget.setToolTip(f.metadata.get("help", ""))
            err = QLabel("")
            err.setObjectName("error")  # coloured by the theme's style sheet
            err.setWordWrap(True)
            err.hide()
            self.errors[f.name] = err
            cell = QWidget()
            cl = QVBoxLayout(cell)
            cl.setContentsMargins(0, 0, 0, 0)
            cl.setSpacing(2)
            cl.addWidget(widget if f.name not in ("model", "data") else self._with_browse(f.name, widget))
            cl.addWidget(err)
            label = QLabel(LABELS.get(f.name, f.metadata.get("label", f.name)))
            label.setToolTip(f.metadata.get("help", ""))
            (basic if f.name in BASIC else advanced).addRow(label, cell)
            if f.name not in BASIC:
                self._adv_rows.append(cell)
        self.advanced_box.toggled.connect(self._fold)
        self._fold(False)
        layout.addLayout(basic)
        layout.addWidget(self.advanced_box)
        layout.addStretch(1)
        self.touched: set[str] = set()  # errors show on fields the user has edited, or all after Start

    def _fold(self, open_: bool) -> None:
        layout = self.advanced_box.layout()
        if not isinstance(layout, QFormLayout):
            return
        for row in range(layout.rowCount()):
            for role in (QFormLayout.ItemRole.LabelRole, QFormLayout.ItemRole.FieldRole):
                item = layout.itemAt(row, role)
                widget = item.widget() if item is not None else None
                if widget is not None:
                    widget.setVisible(open_)

    def _touch(self, name: str) -> None:
        self.touched.add(name)
        self.changed.emit()

    def _make_widget(self, name: str, kind: str, meta: Any) -> FieldWidget:
        w: FieldWidget
        choices = meta.get("choices")
        if name == "model":
            w = self.model_box = ModelBox()
            w.editTextChanged.connect(lambda *_: self._touch(name))
            w.currentIndexChanged.connect(lambda *_: self._touch(name))
        elif choices:
            w = QComboBox()
            w.addItems(list(choices))
            w.currentIndexChanged.connect(lambda *_: self._touch(name))
        elif kind == "bool":
            w = QCheckBox()
            w.toggled.connect(lambda *_: self._touch(name))
        elif kind == "int":
            w = QSpinBox()
            w.setRange(-1, 10_000_000)
            w.valueChanged.connect(lambda *_: self._touch(name))
        elif kind == "float":
            w = QLineEdit()
            w.setValidator(QDoubleValidator())
            w.textChanged.connect(lambda *_: self._touch(name))
        else:
            w = QLineEdit()
            w.textChanged.connect(lambda *_: self._touch(name))
        self.widgets[name] = w
        return w

    def _with_browse(self, name: str, edit: FieldWidget) -> QWidget:
        box = QWidget()
        box.setMinimumWidth(240)  # a narrower form puts this field under its label (WrapLongRows)
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(edit, 1)
        btn = QPushButton("Choose…")

        btn.setToolTip("Choose a folder on this computer.")

        def pick() -> None:
            folder = QFileDialog.getExistingDirectory(self, "Choose a folder")
            if folder and isinstance(edit, (QLineEdit, ModelBox)):
                edit.setText(folder)

        btn.clicked.connect(pick)
        row.addWidget(btn)
        return box

    def line_edit(self, name: str) -> QLineEdit:
        """The editor of a text or number-as-text field (model, data, learning_rate...); for the model, the
        text field of its list."""
        w = self.widgets[name]
        line = w.lineEdit() if isinstance(w, ModelBox) else None
        if line is not None:
            return line
        if not isinstance(w, QLineEdit):
            raise TypeError(f"The field {name} is edited with a {type(w).__name__}, not a text box.")
        return w

    def spin_box(self, name: str) -> QSpinBox:
        """The editor of a whole-number field (iters, batch_size...)."""
        w = self.widgets[name]
        if not isinstance(w, QSpinBox):
            raise TypeError(f"The field {name} is edited with a {type(w).__name__}, not a spin box.")
        return w

    # -- values ---------------------------------------------------------------------------------------
    def set_config(self, config: TrainConfig) -> None:
        for name, w in self.widgets.items():
            value = getattr(config, name)
            w.blockSignals(True)
            if isinstance(w, ModelBox):
                w.set_value(str(value or ""))
            elif isinstance(w, QComboBox):
                w.setCurrentText(str(value))
            elif isinstance(w, QCheckBox):
                w.setChecked(bool(value))
            elif isinstance(w, QSpinBox):
                w.setValue(int(value))
            else:
                w.setText("" if value is None else (f"{value:g}" if isinstance(value, float) else str(value)))
            w.blockSignals(False)
        self.changed.emit()

    def config(self) -> TrainConfig:
        values: dict[str, Any] = {}
        for name, w in self.widgets.items():
            if isinstance(w, ModelBox):
                values[name] = w.value()
            elif isinstance(w, QComboBox):
                values[name] = w.currentText()
            elif isinstance(w, QCheckBox):
                values[name] = w.isChecked()
            elif isinstance(w, QSpinBox):
                values[name] = w.value()
            elif self.types[name] == "float":
                try:
                    values[name] = float(w.text().replace(",", "."))
                except ValueError:
                    values[name] = w.text()  # problems() says "must be a number"
            else:
                values[name] = w.text().strip()
        return TrainConfig(**values)

    def show_problems(self, problems: dict[str, str], *, all_fields: bool = False) -> None:
        for name, label in self.errors.items():
            msg = problems.get(name, "") if all_fields or name in self.touched else ""
            label.setText(msg)
            label.setVisible(bool(msg))
            if msg and name not in BASIC:
                self.advanced_box.setChecked(True)
