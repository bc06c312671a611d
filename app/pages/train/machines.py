"""Where a run trains: this computer, or several (lemcore/train/launch.py), with each machine's readiness and,
while training, each machine's step and memory."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QGridLayout, QLabel, QLineEdit, QPushButton, QWidget

from lemcore.train.events import HostChecked, HostStatus
from lemcore.train.hosts import HostList, parse_hosts

HOSTS_HINT = "this-mac.local, mac2.local (this computer first)"


class MachinesBox(QWidget):
    """"This computer only" or "Several computers" with their names; a Check button asks each one whether it is
    ready (same software, the model and data there, memory) and the answers show one line per machine."""

    changed = Signal()
    check_requested = Signal()

    def __init__(self) -> None:
        super().__init__()
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        self.mode = QComboBox()
        self.mode.addItem("This computer only", "one")
        self.mode.addItem("Several computers", "several")
        self.mode.setToolTip("Several computers share each step's batch: each needs the same software, and the "
                             "model and data at the same place, and this computer must reach the others by SSH "
                             "without a password (see the README, \"Train on several Macs\").")
        self.hosts_edit = QLineEdit()
        self.hosts_edit.setPlaceholderText(HOSTS_HINT)
        self.check_btn = QPushButton("Check them")
        self.check_btn.setToolTip("Ask each computer whether it is ready, before training starts.")
        self.batch = QLabel("")
        self.batch.setObjectName("hint")
        self.report = QLabel("")
        self.report.setWordWrap(True)
        grid.addWidget(QLabel("Machines"), 0, 0)
        grid.addWidget(self.mode, 0, 1)
        grid.addWidget(self.hosts_edit, 1, 0, 1, 2)
        self.batch.setWordWrap(True)
        grid.addWidget(self.check_btn, 2, 0)
        grid.addWidget(self.batch, 3, 0, 1, 2)
        grid.addWidget(self.report, 4, 0, 1, 2)
        grid.setColumnStretch(1, 1)
        self.mode.currentIndexChanged.connect(lambda _i: self._mode_changed())
        self.hosts_edit.textChanged.connect(lambda _t: self._edited())
        self.check_btn.clicked.connect(self.check_requested.emit)
        self._lines: dict[int, str] = {}
        self._batch_size = 0
        self._mode_changed()

    # -- what the user chose ----------------------------------------------------------------------------------
    def several(self) -> bool:
        return self.mode.currentData() == "several"

    def hosts(self) -> HostList | None:
        """The machines to train on, or None for this computer only. Raises ConfigError on a bad list."""
        return parse_hosts(self.hosts_edit.text()) if self.several() else None

    def set_batch_size(self, batch_size: int) -> None:
        self._batch_size = batch_size
        self._show_batch()

    def _mode_changed(self) -> None:
        several = self.several()
        for w in (self.hosts_edit, self.check_btn, self.batch):
            w.setVisible(several)
        self.report.setVisible(several)
        self._edited()

    def _edited(self) -> None:
        self._lines.clear()
        self.report.setText("")
        self._show_batch()
        self.changed.emit()

    def _show_batch(self) -> None:
        names = [n for n in self.hosts_edit.text().replace(";", ",").split(",") if n.strip()]
        if not names or not self._batch_size:
            self.batch.setText("")
        elif self._batch_size % len(names):
            self.batch.setText(f"Batch {self._batch_size} cannot be shared by {len(names)} computers: use a "
                               f"multiple of {len(names)}.")
        else:
            self.batch.setText(f"Batch {self._batch_size} per step: {self._batch_size // len(names)} on each of "
                               f"{len(names)} computers.")

    # -- what the machines said --------------------------------------------------------------------------------
    def show_checked(self, event: HostChecked) -> None:
        if event.ok:
            self._lines[event.rank] = f"✓ {event.host}: ready ({event.summary})"
        else:
            self._lines[event.rank] = f"✗ {event.host}: " + " ".join(event.problems)
        self._draw()

    def show_status(self, event: HostStatus) -> None:
        peak = f", peak {event.peak_memory_gb:.2f} GB" if event.peak_memory_gb >= 0.01 else ""
        self._lines[event.rank] = f"● {event.host}: step {event.iteration}, {event.free_memory_gb:.1f} GB free{peak}"
        self._draw()

    def show_message(self, text: str) -> None:
        self._lines.clear()
        self.report.setText(text)

    def _draw(self) -> None:
        self.report.setText("\n".join(self._lines[r] for r in sorted(self._lines)))
