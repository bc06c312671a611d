"""App test fixtures: a main window wired to real engines, shut down cleanly after each test."""

from __future__ import annotations

import pytest

from lemcore.secrets import MemoryTokenStore
from lemcore.settings import Settings, save_settings


@pytest.fixture
def make_window(qtbot):
    windows = []

    def make(token_store=None, settings: Settings | None = None):
        from app.main_window import MainWindow

        if settings is not None:
            save_settings(settings)
        window = MainWindow(token_store=token_store or MemoryTokenStore())
        qtbot.addWidget(window)
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.runner.shutdown()
