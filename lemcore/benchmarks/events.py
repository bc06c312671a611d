"""Frozen events the benchmark engines report (the GUI's Results page listens to these)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lemcore.events import Event


@dataclass(frozen=True)
class BenchStarted(Event):
    run_dir: Path
    model: str
    suites: tuple[str, ...]
    total: int  # (item, sample) pairs to generate across all suites, resumed ones included
    resumed: int  # of those, already in the run folder from an earlier session


@dataclass(frozen=True)
class BenchProgress(Event):
    stage: str  # loading, generating, judging, scoring
    suite: str
    done: int
    total: int
    failed: int = 0  # judge stage: judgments that stayed failed after every retry


@dataclass(frozen=True)
class BenchRow(Event):
    """One finished generation (and its GSM8K score when the suite has one)."""

    suite: str
    item_id: str
    sample: int
    tokens: int
    seconds: float
    truncated: bool
    score: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JudgeRow(Event):
    suite: str
    item_id: str
    sample: int
    status: str  # ok or failed
    scores: dict[str, float]
    attempts: int


@dataclass(frozen=True)
class BenchFinished(Event):
    run_dir: Path
    summary: dict[str, Any]
    seconds: float
