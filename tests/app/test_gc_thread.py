"""Garbage collection runs only on the GUI thread, even while an engine job allocates on the MLX thread.

A collection on a worker thread frees whatever cyclic garbage exists, Qt objects included, on that thread;
PySide deadlocked there once (docs/platform-notes.md, "PySide deadlocks"). So the test fills the heap with cycles holding Qt objects while a job churns out
cycles of its own, and checks which thread every collection ran on.
"""

from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path

import pytest
from PySide6.QtCore import QObject, QTimer

from app.jobs.runner import JobRunner

ROUNDS = 50


def _qt_cycles(count: int) -> list[weakref.ref]:
    """`count` unreachable cycles, each holding a QObject with a child QTimer; weak references to them."""
    refs = []
    for _ in range(count):
        parent = QObject()
        QTimer(parent).setObjectName("child")
        node: list = [parent]
        node.append(node)
        parent.cycle = node  # a second cycle through the wrapper's own attributes
        refs.append(weakref.ref(parent))
    return refs


def _churn(allocated: threading.Event):
    """A job that allocates cycles until cancelled: past gen 0's threshold many times over."""

    def job(report, cancel) -> int:
        made = 0
        while not cancel.cancelled:
            for _ in range(2_000):
                a: dict = {}
                a["self"] = a
            made += 2_000
            allocated.set()
        return made

    return job


# A deadlock inside a collection never returns to Python, so the signal method could not interrupt it.
@pytest.mark.timeout(120, method="thread")
def test_collections_run_only_on_the_gui_thread_while_the_engine_allocates(qtbot) -> None:
    runner = JobRunner()
    collections: list[threading.Thread] = []

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(threading.current_thread())

    gc.callbacks.append(on_gc)
    refs: list[weakref.ref] = []
    try:
        for _ in range(ROUNDS):
            finished: list[int] = []
            allocated = threading.Event()
            job = runner.start("churn", _churn(allocated), on_done=finished.append)
            refs += _qt_cycles(100)
            qtbot.waitUntil(allocated.is_set, timeout=10_000)  # both threads made garbage
            with qtbot.waitSignal(runner.job_finished, timeout=10_000):
                job.cancel("next round")
            assert finished and finished[0] > 0
        qtbot.waitUntil(lambda: bool(collections), timeout=10_000)  # the GUI timer fires within its interval
        elsewhere = {t.name for t in collections if t is not threading.main_thread()}
        assert not elsewhere, f"garbage collected on {elsewhere}"
        # ...and those collections free the Qt cycles: memory does not grow without bound.
        qtbot.waitUntil(lambda: all(ref() is None for ref in refs), timeout=10_000)
    finally:
        gc.callbacks.remove(on_gc)
        assert runner.shutdown(timeout=30)


def test_start_up_objects_are_kept_out_of_full_collections_and_later_garbage_still_goes(tmp_path) -> None:
    # In a child process: gc.freeze() here would keep this test session's leftovers alive for good.
    script = tmp_path / "freeze.py"
    script.write_text(
        "import gc, weakref\n"
        "from app.jobs.gui_gc import keep_startup_objects_out_of_collections\n"
        "class Node: pass\n"
        "def cycle():\n"
        "    n = Node(); n.me = n; return weakref.ref(n)\n"
        "kept = [Node() for _ in range(5000)]\n"
        "old_garbage = cycle()\n"
        "gen2_before = len(gc.get_objects(generation=2))\n"
        "keep_startup_objects_out_of_collections()\n"
        "assert old_garbage() is None, 'garbage made before was frozen with the rest'\n"
        "assert gc.get_freeze_count() > len(kept), gc.get_freeze_count()\n"
        "gen2_after = len(gc.get_objects(generation=2))\n"
        "new_garbage = cycle()\n"
        "gc.collect()\n"
        "assert new_garbage() is None, 'garbage made later is no longer collected'\n"
        "print(gen2_before, gen2_after)\n")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         cwd=str(Path(__file__).resolve().parents[2]))
    assert out.returncode == 0, out.stderr
    before, after = map(int, out.stdout.split())
    assert before > 5000 and after < before / 10, (before, after)
