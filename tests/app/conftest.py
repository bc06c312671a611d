"""App test fixtures: a main window wired to real engines, shut down cleanly after each test."""

from __future__ import annotations

import pytest

from lemcore.secrets import MemoryTokenStore
from lemcore.settings import Settings, save_settings


@pytest.fixture(scope="package", autouse=True)
def _gc_on_gui_thread(qapp):
    """As in the app: automatic garbage collection runs only on the GUI thread, from a timer (the runner's
    worker threads must never free Qt objects). Package scope: tests outside tests/app get CPython's gc."""
    from app.jobs.gui_gc import collect_garbage_on_gui_thread, stop_collecting_on_gui_thread

    collector = collect_garbage_on_gui_thread()
    yield collector
    stop_collecting_on_gui_thread()


@pytest.fixture(autouse=True)
def _collect_after_each_test(_gc_on_gui_thread):
    """A test that never runs the event loop never lets the timer fire: collect what is due after it."""
    yield
    _gc_on_gui_thread.check()


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
        # Longer than the app's bound: a test's job must really have stopped before the next test starts.
        assert window.runner.shutdown(timeout=60), "a job ignored its cancel for 60 s"
