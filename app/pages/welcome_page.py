"""First page: what LEM is and what this computer can do (hardware summary from lemcore)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from lemcore.hardware import detect_hardware


class WelcomePage(QWidget):
    def __init__(self) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(40, 40, 40, 40)
        title = QLabel("LEM Desktop")
        title.setStyleSheet("font-size: 28px; font-weight: 600;")
        intro = QLabel(
            "LEM teaches small open language models ethics directly. Volunteers' computers write "
            "training answers guided by five axioms (sovereignty, privacy, transparency, consent, dignity); "
            "researchers fine-tune and benchmark the results."
        )
        intro.setWordWrap(True)
        hw = detect_hardware()
        self.machine = QLabel(
            f"This computer: {hw.chip}, {hw.total_gb:.0f} GB memory ({hw.available_gb:.0f} GB free), {hw.os_name}."
        )
        self.machine.setWordWrap(True)
        self.machine.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        for widget in (title, intro, self.machine):
            layout.addWidget(widget)
        layout.addStretch(1)
