"""The one accessor for files shipped with the app (kernel, seeds, icons).

Works from a source checkout (files beside the packages) and from a PyInstaller bundle (files under
`sys._MEIPASS`). The GUI uses this too, so there is a single path helper for both.
"""

from __future__ import annotations

import sys
from pathlib import Path


def root() -> Path:
    """Folder that holds `kernel/`, `seeds/` and `resources/`."""
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen)
    return Path(__file__).resolve().parent.parent


def kernel_dir() -> Path:
    return root() / "kernel"


def seeds_dir() -> Path:
    return root() / "seeds"


def resource(name: str) -> Path:
    """A file under `resources/` (icons, style sheets)."""
    return root() / "resources" / name
