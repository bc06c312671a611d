"""Quitting happens once, is bounded, and ends the process even when a job ignores its cancel."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The app's own exit path (app.main.run_until_quit) with a job that finishes one answer, then hangs.
STUBBORN_APP = textwrap.dedent("""
    import sys, time
    from pathlib import Path

    from PySide6.QtWidgets import QApplication

    from app.jobs.gui_gc import collect_garbage_on_gui_thread
    from app.main import run_until_quit
    from app.main_window import MainWindow
    from lemcore.events import Event
    from lemcore.secrets import MemoryTokenStore

    app = QApplication([sys.argv[0]])
    collect_garbage_on_gui_thread()
    app.setQuitOnLastWindowClosed(False)
    window = MainWindow(token_store=MemoryTokenStore())
    window.show()
    journal = Path(sys.argv[1])

    def stubborn(report, cancel):
        with journal.open("a") as f:
            f.write("answer 1 finished\\n")
        report(Event())
        while True:  # never checks its cancel
            time.sleep(0.05)

    def quit_now(event):
        print("quitting", flush=True)
        window.quit()

    window.runner.start("contribute", stubborn, on_event=quit_now)
    sys.exit(run_until_quit(app, window))
""")


@pytest.mark.slow
def test_the_app_exits_promptly_when_a_job_ignores_cancel(tmp_path: Path) -> None:
    script, journal, log = tmp_path / "stubborn_app.py", tmp_path / "journal.txt", tmp_path / "stderr.txt"
    script.write_text(STUBBORN_APP)
    with log.open("w") as stderr, subprocess.Popen([sys.executable, str(script), str(journal)], cwd=ROOT,
                                                   stdout=subprocess.PIPE, stderr=stderr, text=True) as proc:
        assert proc.stdout is not None
        try:
            line = proc.stdout.readline()  # startup (imports, window) takes a while on a small machine
            assert line.strip() == "quitting", log.read_text()
            t0 = time.monotonic()
            code = proc.wait(timeout=10)
            assert time.monotonic() - t0 < 10
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 0, log.read_text()
    assert journal.read_text() == "answer 1 finished\n"


def test_quitting_shuts_the_runner_down_once(make_window, monkeypatch) -> None:
    window = make_window()
    calls: list[float] = []
    shutdown = window.runner.shutdown
    monkeypatch.setattr(window.runner, "shutdown", lambda timeout=5.0: calls.append(timeout) or shutdown(timeout))
    window.quit()
    window.quit()
    window.close()
    assert calls == [5.0]
    assert window.quitting and not window.isVisible()


def test_closing_the_window_quits_when_nothing_keeps_it_in_the_tray(make_window) -> None:
    window = make_window()
    window.show()
    window.close()
    assert window.quitting
    assert window.runner.stopped
