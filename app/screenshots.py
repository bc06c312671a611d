"""Screenshots of every page in its main states, for the README and for looking at what users see.

    QT_QPA_PLATFORM=offscreen .venv/bin/python -m app.screenshots docs/screenshots

Runs the real engines: the embedded SmolLM2 model writes a real answer for the "running" shots, and
errors come from real failures (an address where no server listens). Settings and data go to a temp
folder, so your own settings are untouched.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable


def _wait(app, cond: Callable[[], bool], timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app.processEvents()
        if cond():
            return True
        time.sleep(0.02)
    return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else "docs/screenshots")
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    tmp = Path(tempfile.mkdtemp(prefix="lem-shots-"))
    os.environ["LEM_CONFIG_DIR"] = str(tmp / "config")
    os.environ["LEM_DATA_DIR"] = str(tmp / "data")

    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from lemcore.secrets import MemoryTokenStore
    from lemcore.settings import Settings, save_settings

    app = QApplication.instance() or QApplication([])
    shots: list[str] = []

    def shot(window, name: str) -> None:  # type: ignore[no-untyped-def]
        _wait(app, lambda: False, 0.3)  # let charts and timers repaint
        path = out / f"{name}.png"
        window.grab().save(str(path))
        shots.append(path.name)

    # First run: welcome and connect steps.
    window = MainWindow(token_store=MemoryTokenStore())
    window.show()
    shot(window, "contribute-first-run")
    window.contribute.stack.setCurrentIndex(1)
    shot(window, "contribute-connect")
    window.runner.shutdown()
    window.close()

    # Dashboard, idle -> running (real answer from the embedded model) -> paused.
    save_settings(Settings(first_run_done=True, solo=True, worker_name="my-mac", max_tokens=160,
                           only_on_power=False, min_free_memory_gb=0.5))
    window = MainWindow(token_store=MemoryTokenStore())
    window.show()
    page = window.contribute
    shot(window, "contribute-idle")
    page.start()
    _wait(app, lambda: page.tile_session.value.text() not in ("0", "") and len(page.now_answer.toPlainText()) > 80,
          600)
    _wait(app, lambda: len(page.now_answer.toPlainText()) > 200, 60)
    shot(window, "contribute-running")
    page.pause()
    _wait(app, lambda: page.start_btn.isEnabled(), 120)
    shot(window, "contribute-paused")
    window.runner.shutdown()
    window.close()

    # Error: a server address where nothing listens.
    save_settings(Settings(first_run_done=True, influx_url="http://127.0.0.1:9", worker_name="my-mac",
                           only_on_power=False))
    window = MainWindow(token_store=MemoryTokenStore({"influx-token": "t"}))
    window.show()
    window.contribute.start()
    _wait(app, lambda: window.contribute.status.state == "error", 60)
    shot(window, "contribute-error")
    window.show_page("Settings")
    shot(window, "settings")
    for title in window.pages:
        if title not in ("Contribute", "Settings"):
            window.show_page(title)
            shot(window, f"{title.lower()}-idle")
            extra = getattr(window.pages[title], "screenshot_states", None)
            if extra is not None:
                for name in extra(lambda n, w=window: shot(w, n), lambda c, t: _wait(app, c, t)):
                    pass
    window.runner.shutdown()
    window.close()
    print("\n".join(str(out / s) for s in shots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
