"""What a GUI process does once, before its window: garbage collection onto the GUI thread, the engines'
imports, and then everything alive frozen out of full collections (the window lives as long as the app).

Used by `app.main` and by the responsiveness probe, so that the probe measures the app as it starts."""

from __future__ import annotations

from app.jobs.gui_gc import collect_garbage_on_gui_thread, keep_startup_objects_out_of_collections
from app.jobs.preload import preload_engine_modules


def prepare_gui_process() -> None:
    """Call on the GUI thread once the QApplication exists and before the main window is built."""
    collect_garbage_on_gui_thread()  # before the window's runner starts its threads
    preload_engine_modules()
    keep_startup_objects_out_of_collections()
