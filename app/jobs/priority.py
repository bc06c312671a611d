"""The window answers first: the app's work threads run at background priority (Linux).

On two busy cores the GUI thread competed on equal terms with the engine, MLX's and OpenBLAS's threads
and waited up to ~40 ms for a turn; at a lower priority for all of them it waits a few ms
(docs/platform-notes.md, "GIL release and GUI stalls"). Volunteer-computing clients do the same for their work: idle CPU
still goes to the engine, other programs and the window win when they need it.

Linux lets a process raise the nice value of each of its own threads (never lower it back without
privileges, so this is one-way). macOS has no per-thread nice and already runs a GUI app's main thread at
interactive priority; there this does nothing.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

BACKGROUND_NICE = 10  # the nice value of every thread but the GUI thread while the app works
_TASKS = "/proc/self/task"
ENV = "LEM_WORK_PRIORITY"  # "background" (the default) or "normal"


def wanted() -> bool:
    """Whether the work threads should run at background priority: yes unless LEM_WORK_PRIORITY=normal
    (the test suite sets it, so that its time limits hold on a busy machine)."""
    return os.environ.get(ENV, "background").strip().lower() != "normal"


def supported() -> bool:
    return sys.platform.startswith("linux") and os.path.isdir(_TASKS)


def thread_nice(native_id: int) -> int:
    """One thread's nice value (Linux), read from /proc."""
    with open(f"{_TASKS}/{native_id}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[16])  # field 19 of stat; the split starts at field 3


def lower_all_but(gui_native_id: int, nice: int = BACKGROUND_NICE) -> int:
    """Give every thread of this process except the GUI thread at least `nice`; returns how many changed.

    Called at the start of each engine job, so it also catches the pools MLX, OpenBLAS and NumPy made since
    the last job (threads a lowered thread starts inherit its value anyway)."""
    if not supported():
        return 0
    changed = 0
    for name in os.listdir(_TASKS):
        tid = int(name)
        if tid == gui_native_id:
            continue
        try:
            if thread_nice(tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                changed += 1
        except (OSError, ValueError):  # the thread ended meanwhile, or the system refuses: not worth a failure
            continue
    if changed:
        log.debug("lowered %d worker threads to nice %d", changed, nice)
    return changed
