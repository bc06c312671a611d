"""The work queue interface shared by the InfluxDB (lab, lab.py) and SQLite (solo, solo.py) backends.

A queue knows which prompt indices are done fleet-wide, hands out leases so no two workers generate the
same prompt, and receives completion reports. Reports carry a fixed timestamp so re-sending one (after an
outage) overwrites the same point instead of counting it twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

GOLD = "gold"
EXPANSION = "expansion"


@dataclass(frozen=True)
class Completion:
    kind: str
    idx: int
    worker: str
    seed_id: str
    domain: str
    voice: str = ""
    region: str = ""
    gen_time: float = 0.0
    chars: int = 0
    tokens: int = 0
    truncated: bool = False
    model: str = ""
    time_ns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class WorkQueue(Protocol):
    kind: str
    worker: str
    lease_s: float

    def completed(self) -> set[int]: ...
    def claimed_by_others(self) -> set[int]: ...
    def claim(self, candidates: list[int]) -> list[int]: ...
    def renew(self, idxs: Iterable[int]) -> None: ...
    def release(self, idxs: Iterable[int]) -> None: ...
    def report(self, completions: list[Completion]) -> None: ...
    def progress(self, completed: int, target: int) -> None: ...
