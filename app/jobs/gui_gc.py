"""Automatic garbage collection moved onto the GUI thread, so Qt objects in reference cycles die there.

A collection on a worker thread can free Qt objects off the GUI thread, which PySide does not survive
(docs/platform-notes.md, "PySide deadlocks"). The app and the app tests turn this on once the QApplication
exists; the job runner makes sure of it before its first worker thread starts.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QCoreApplication, QObject, QThread, QTimer


class GuiGarbageCollector(QObject):
    """CPython's automatic collection, moved onto a GUI-thread timer.

    CPython collects on whichever thread allocates past the threshold. So automatic collection is off, and
    every `interval_s` the GUI thread runs the generation checks CPython would have run (the same approach as
    pyqtgraph's GarbageCollector): memory stays bounded, and Qt objects in cycles die on the GUI thread.
    """

    def __init__(self, interval_s: float = 1.0) -> None:
        super().__init__()
        self.threshold = gc.get_threshold()
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.check)
        self._timer.start(max(1, int(interval_s * 1000)))
        gc.disable()

    def check(self) -> None:
        """Collect the oldest generation that is due, if gen 0 is due at all."""
        (c0, c1, c2), (t0, t1, t2) = gc.get_count(), self.threshold
        if c0 <= t0:
            return
        gc.collect(2 if c1 > t1 and c2 > t2 else 1 if c1 > t1 else 0)

    def stop(self) -> None:
        self._timer.stop()
        gc.enable()


_collector: GuiGarbageCollector | None = None


def collect_garbage_on_gui_thread(interval_s: float = 1.0) -> GuiGarbageCollector:
    """Turn automatic gc into a GUI-thread timer, once per process (later calls return the same one)."""
    global _collector
    app = QCoreApplication.instance()
    if app is None:
        raise RuntimeError("create the QApplication before moving garbage collection onto its thread")
    if QThread.currentThread() is not app.thread():
        raise RuntimeError("garbage collection must be set up from the GUI thread")
    if _collector is None:
        _collector = GuiGarbageCollector(interval_s)
    return _collector


def keep_startup_objects_out_of_collections() -> None:
    """Move everything alive now (modules, classes, the engines' imports) out of the collector's sight.

    A full collection walked all ~160K of them and took ~100 ms on the GUI thread, a visible stall each time
    one was due; they live as long as the app, so after `gc.freeze()` a full collection looks only at what
    was made since (~0 ms). Collect first so that no garbage is frozen with them."""
    gc.collect()
    gc.freeze()


def stop_collecting_on_gui_thread() -> None:
    """Give automatic collection back to CPython (tests, after their last Qt object)."""
    global _collector
    if _collector is not None:
        _collector.stop()
        _collector = None
