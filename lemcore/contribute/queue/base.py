"""The work queue interface shared by the InfluxDB (lab, lab.py) and SQLite (solo, solo.py) backends.

A queue knows which prompt indices are done fleet-wide, hands out leases so no two workers generate the
same prompt, and receives completion reports. Reports carry a fixed timestamp so re-sending one (after an
outage) overwrites the same point instead of counting it twice.

Two levels (docs/coordination.md):

- `WorkQueue`, the minimum: claim, renew, release, report. Claims belong to the queue's worker.
- `FencedQueue`, what the engine uses: claims belong to a worker *instance* (`instance`: the name plus a random
  id made when the queue opens, `new_instance_id`), so two processes with one name are two workers; a claim
  round reports what it learnt about every candidate (`ClaimOutcome`); `verify` re-checks held items after a
  gap (sleep, pause, failed renewals) and says which are still ours; `for_thread` gives the lease keeper a
  handle it may use from its own thread. `as_fenced` turns any `WorkQueue` into one, with plain defaults for
  the methods a queue does not have (then renewals run on the engine's thread, between decoding steps, and
  `verify` trusts the queue's own renew).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol, cast

from lemcore.errors import ConfigError

GOLD = "gold"
EXPANSION = "expansion"

# Longest lease a claim may carry (and that readers believe): readers look back twice this far, so a holder
# whose claims started before the window still shows as the earlier one (lab.py). Shortest: renewals every
# lease/3 must be possible.
MAX_LEASE_S = 3600.0
MIN_LEASE_S = 1.0

# What `FencedQueue.verify` says of an item.
OWNED = "owned"  # still ours: the claim is renewed
DONE = "done"  # finished fleet-wide (by someone else, or reported by us already)
TAKEN = "taken"  # someone else holds it now


def check_lease(lease_s: float) -> None:
    """Refuse a lease outside MIN_LEASE_S .. MAX_LEASE_S with a ConfigError (both queues, and the run's setup)."""
    if not MIN_LEASE_S <= lease_s <= MAX_LEASE_S:
        raise ConfigError(f"A lease of {lease_s:g} s is not allowed: use {MIN_LEASE_S:g} to {MAX_LEASE_S:g} s "
                          "(the default, 120 s, suits most computers).")


def new_instance_id(worker: str) -> str:
    """The worker name plus a random id: unique per running worker, still readable."""
    return f"{worker}#{uuid.uuid4().hex[:12]}"


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
    instance: str = ""  # the worker instance that generated it ("" in journals from before instances)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Completion:
        """A stored report: rows written before a field existed get its default; fields this version does
        not know (a newer version's journal) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class ClaimOutcome:
    """One claim round: what was won, and what the round learnt about the other candidates."""

    won: list[int]
    done: frozenset[int] = frozenset()  # finished fleet-wide
    # Held by someone else, with the seconds until that holder's lease ends unless renewed (a hint for when
    # to ask again; the queue's own lease when unknown).
    taken: dict[int, float] = field(default_factory=dict)


class WorkQueue(Protocol):
    kind: str
    worker: str
    lease_s: float

    def completed(self) -> set[int]: ...
    def claim(self, candidates: list[int]) -> list[int]: ...
    def renew(self, idxs: Iterable[int]) -> None: ...
    def release(self, idxs: Iterable[int]) -> None: ...
    def report(self, completions: list[Completion]) -> None: ...
    def progress(self, completed: int, target: int) -> None: ...


class FencedQueue(WorkQueue, Protocol):
    instance: str

    def claim_round(self, candidates: list[int], want: int) -> ClaimOutcome:
        """Claim up to `want` of `candidates` (in order), skipping those done or held by someone else."""
        ...

    def verify(self, idxs: list[int]) -> dict[int, str]:
        """Renew the claims on `idxs` if they are still ours; OWNED, DONE or TAKEN for each."""
        ...

    def done_among(self, idxs: list[int]) -> set[int]:
        """Which of `idxs` are finished fleet-wide (one cheap read, whatever the size of the set)."""
        ...

    def completed_recent(self, seconds: float) -> set[int]:
        """Items finished in about the last `seconds` (may miss late reports; `completed` reads all)."""
        ...

    def for_thread(self) -> FencedQueue | None:
        """A handle on the same queue for another thread (the lease keeper), or None when the queue must stay
        on the thread that made it (the keeper then renews from the engine's ticks)."""
        ...


_FENCED_METHODS = ("claim_round", "verify", "done_among", "completed_recent", "for_thread")


def as_fenced(queue: WorkQueue) -> FencedQueue:
    """`queue` itself when it implements FencedQueue, else an adapter with plain defaults."""
    if all(callable(getattr(queue, name, None)) for name in _FENCED_METHODS) and \
            isinstance(getattr(queue, "instance", None), str):
        return cast(FencedQueue, queue)  # checked above: it has every FencedQueue member
    return _PlainQueue(queue)


class _PlainQueue:
    """FencedQueue defaults over a plain WorkQueue (the queue's worker name is its instance unless it has an
    `instance` attribute). Claims are still exclusive as far as the queue's own `claim` makes them so; `verify`
    cannot tell a lost claim from a held one, so it trusts the renew."""

    def __init__(self, queue: WorkQueue) -> None:
        self.inner = queue
        self.kind, self.worker, self.lease_s = queue.kind, queue.worker, queue.lease_s
        instance = getattr(queue, "instance", None)
        self.instance: str = instance if isinstance(instance, str) and instance else queue.worker

    def completed(self) -> set[int]:
        return self.inner.completed()

    def claim(self, candidates: list[int]) -> list[int]:
        return self.inner.claim(candidates)

    def renew(self, idxs: Iterable[int]) -> None:
        self.inner.renew(idxs)

    def release(self, idxs: Iterable[int]) -> None:
        self.inner.release(idxs)

    def report(self, completions: list[Completion]) -> None:
        self.inner.report(completions)

    def progress(self, completed: int, target: int) -> None:
        self.inner.progress(completed, target)

    def claim_round(self, candidates: list[int], want: int) -> ClaimOutcome:
        done = self.inner.completed() & set(candidates)
        ask = [i for i in candidates if i not in done][:want]
        won = self.inner.claim(ask) if ask else []
        return ClaimOutcome(won, frozenset(done), {i: self.lease_s for i in set(ask) - set(won)})

    def verify(self, idxs: list[int]) -> dict[int, str]:
        done = self.inner.completed()
        mine = [i for i in idxs if i not in done]
        if mine:
            self.inner.renew(mine)
        return {i: DONE if i in done else OWNED for i in idxs}

    def done_among(self, idxs: list[int]) -> set[int]:
        return self.inner.completed() & set(idxs)

    def completed_recent(self, seconds: float) -> set[int]:
        return self.inner.completed()

    def for_thread(self) -> FencedQueue | None:
        return None
