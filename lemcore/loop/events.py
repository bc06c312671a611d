"""What the loop reports besides the events of the engine running each stage (which it passes on as they are)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lemcore.events import Event


@dataclass(frozen=True)
class LoopStarted(Event):
    folder: Path
    stages: tuple[str, ...]  # every stage of this loop, in order
    done: tuple[str, ...]  # those finished by an earlier session (a resumed loop skips them)


@dataclass(frozen=True)
class LoopStage(Event):
    stage: str
    state: str  # "started" or "done"
    detail: str = ""  # what the stage made, in words (done), or what it continues (started)


@dataclass(frozen=True)
class LoopFinished(Event):
    folder: Path
    base_run: Path
    trained_run: Path
    seconds: float
