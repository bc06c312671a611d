"""New folders named by the time they were made: `<prefix><YYYYmmdd-HHMMSS>-<name>` under a root.

Named to the second, so one made in the same second as another gets `-2`, `-3`, ...: a folder that exists always
belongs to something else, and writing into it would mix the two. Made with an atomic mkdir, so two processes
never get the same folder. Used for training runs, benchmark runs and LEK loops.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path


def new_stamped_folder(root: Path, name: str, *, prefix: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    base = f"{prefix}{datetime.now():%Y%m%d-%H%M%S}-{name}"
    folder, n = root / base, 1
    while True:
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            n += 1
            folder = root / f"{base}-{n}"
