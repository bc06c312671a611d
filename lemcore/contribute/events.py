"""Events the contribution engine emits (the GUI turns each into a Qt signal)."""

from __future__ import annotations

from dataclasses import dataclass

from lemcore.events import Event


@dataclass(frozen=True)
class Started(Event):
    kind: str
    worker: str
    model: str
    total: int
    done_fleet: int
    done_local: int
    remaining: int


@dataclass(frozen=True)
class ResponseDone(Event):
    idx: int
    seed_id: str
    domain: str
    voice: str
    prompt: str
    response: str
    tokens: int
    seconds: float
    truncated: bool


@dataclass(frozen=True)
class Rates(Event):
    session_done: int
    all_time_done: int
    responses_per_hour: float
    tokens_per_s: float


@dataclass(frozen=True)
class FleetProgress(Event):
    completed: int
    target: int


@dataclass(frozen=True)
class StatusChanged(Event):
    state: str  # "running", "waiting", "paused"
    reason: str


@dataclass(frozen=True)
class Notice(Event):
    message: str


@dataclass(frozen=True)
class ClaimLost(Notice):
    """Another volunteer now holds, or has finished, an item this computer had claimed (after a sleep, a pause
    or an outage longer than the lease). It is not reported from here; an answer already written for it is
    kept in the `.lost.jsonl` file beside the output. `message` says all this in words."""

    idx: int
    verdict: str  # "taken" (someone else holds it) or "done" (someone else finished it)
    cause: str  # "paused" (this computer slept or was stopped), "unreachable" (the server was), "expired"
    generated: bool  # an answer had been written here


@dataclass(frozen=True)
class AnswerStarted(Event):
    """An item went to the model: the question is known before any text (the model first reads it)."""

    idx: int
    seed_id: str
    domain: str
    prompt: str
    prompt_tokens: int  # 0 when not known yet


@dataclass(frozen=True)
class AnswerHeld(Event):
    """A finished answer failed the quality gate (lemcore.quality): kept on disk in `<output>.held.jsonl`,
    marked, never reported as gold. `held_by_reason` counts this run's held answers per reason code."""

    idx: int
    seed_id: str
    reasons: tuple[str, ...]
    held_total: int
    held_by_reason: dict[str, int]


@dataclass(frozen=True)
class ReportsSent(Event):
    """Finished answers the server now has (after the outbox flushed)."""

    idxs: tuple[int, ...]
    unreported: int  # still queued locally


@dataclass(frozen=True)
class Finished(Event):
    done: int
    reason: str
    unreported: int
    held: int = 0  # answers the quality gate held back in this run (in `<output>.held.jsonl`)
