"""Work queues: one protocol (base.py), the lab's claim-and-verify queue on InfluxDB (lab.py) and the
local SQLite queue of solo mode (solo.py).
"""

from lemcore.contribute.queue.base import EXPANSION, GOLD, Completion, WorkQueue
from lemcore.contribute.queue.lab import InfluxQueue
from lemcore.contribute.queue.solo import SQLiteQueue

__all__ = [
    "Completion",
    "EXPANSION",
    "GOLD",
    "InfluxQueue",
    "SQLiteQueue",
    "WorkQueue",
]
