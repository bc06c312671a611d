"""`python -m app.screenshots FOLDER` is the screenshot script (app/devtools/screenshots.py). The full run takes
minutes, so this only shows that the entry runs the script with the folder given: a folder that cannot be made
stops it at once, naming that folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_python_m_app_screenshots_runs_the_script_with_its_folder(tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", LEM_NO_OPENBLAS="1")
    done = subprocess.run([sys.executable, "-m", "app.screenshots", str(blocker / "shots")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert str(blocker) in done.stderr and "screenshots.py" in done.stderr, done.stderr[-2000:]
    assert not (blocker.parent / "shots").exists()
