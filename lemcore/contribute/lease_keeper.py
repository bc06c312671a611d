"""Keeps a run's claims alive from a thread of its own, whatever the engine is doing (docs/coordination.md).

The engine's thread may sit in one prefill for minutes on a slow CPU, and claimed items may wait in the pool
for a whole batch: neither may let a lease run out. `run_contribution` starts one `LeaseKeeper` per run and
stops it at the end. Every claimed item, waiting or started, is held here until it is reported, released or
lost, and renewed every lease/3 on the keeper's thread through the queue's `for_thread()` handle (for the lab,
a clone of the InfluxDB client: its own connections). A queue without one (`for_thread()` is None) is renewed
from the engine's ticks instead (`tick_inline`).

Local leases. For each held item the keeper knows until when the claim is surely still ours: the time the
claim (or its last renewal) was *sent*, plus the lease, less a margin, on both clocks: `time.monotonic()`
(immune to clock changes; on Linux it does not count a system sleep) and `time.time()` (counts a sleep). A
renewal only extends the lease when it completed before the old one ran out (then the server sees one unbroken
run of claims); otherwise, and after any gap (the pause watch woke much later than planned: a sleeping laptop, a
SIGSTOP; a renewal failed; a wall-clock jump), the item is *stale* and is verified with the server
(`FencedQueue.verify`): still ours (renewed), or lost (someone took over, or it is done). Lost items are
handed to the engine (`take_lost`), which drops them from its pool or keeps their answer aside.

`state(idx)` is what the engine asks before starting an item and before reporting it: OWNED (surely ours,
no server call needed), LOST, or UNKNOWN (ask the server: `confirm`).

Pauses are noticed by a second thread that only sleeps (`PauseWatch`): the keeper's own thread may be inside a
request when the process is stopped, and then cannot tell a pause from a slow server. Right after a resume the
engine's thread may find a loss before the watch has woken; the watch is then overdue, which says the same.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from lemcore.contribute.queue.base import OWNED, FencedQueue
from lemcore.errors import LemError

LOST = "lost"
UNKNOWN = "unknown"

# Why a lease had run out when an item was found lost (for the message to the volunteer).
PAUSED = "paused"  # this computer slept or the process was stopped
UNREACHABLE = "unreachable"  # renewals failed
EXPIRED = "expired"  # anything else (a renewal arrived too late, a long prefill without a keeper thread)


@dataclass(frozen=True)
class LostClaim:
    idx: int
    verdict: str  # base.DONE or base.TAKEN
    cause: str  # PAUSED, UNREACHABLE or EXPIRED


class PauseWatch:
    """Wakes every `period_s` and notes when it woke much later than planned on either clock: the computer
    slept (macOS's and Linux's monotonic clocks skip a sleep, the wall clock counts it) or the process was
    stopped. A thread that only sleeps is not delayed by work or by slow requests."""

    def __init__(self, mono: Callable[[], float], wall: Callable[[], float], on_pause: Callable[[], None],
                 *, period_s: float = 0.5, slack_s: float = 2.0) -> None:
        self._mono, self._wall, self._on_pause = mono, wall, on_pause
        self.period_s, self.slack_s = period_s, slack_s
        self._beat = (mono(), wall())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._beat = (self._mono(), self._wall())
            self._thread = threading.Thread(target=self._run, name="lem-pause-watch", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def _late(self, now: tuple[float, float]) -> bool:
        last = self._beat
        return max(now[0] - last[0], now[1] - last[1]) > self.period_s + self.slack_s

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            now = (self._mono(), self._wall())
            if self._late(now):
                self._on_pause()
            self._beat = now

    def overdue(self) -> bool:
        """True while the watch is running but has not woken for much longer than planned: this process was
        stopped or the computer slept until a moment ago, and the watch has not run since."""
        return self._thread is not None and self._late((self._mono(), self._wall()))


@dataclass(frozen=True)
class KeeperStats:
    renewals: int  # renewal writes
    renewed: int  # items renewed, summed over renewals
    verifications: int  # server checks of stale items (keeper and engine)
    pauses: int  # gaps the pause watch noticed (it woke much later than planned)
    failures: int  # renewal rounds that failed (server unreachable)


class LeaseKeeper:
    def __init__(self, queue: FencedQueue, *, threaded: bool = True,
                 mono: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.queue = queue
        self.lease_s = float(queue.lease_s)
        self.interval_s = max(0.2, self.lease_s / 3)
        self.margin_s = min(max(0.5, 0.2 * self.lease_s), self.lease_s / 2)
        self._mono, self._wall = mono, wall
        self._io = queue.for_thread() if threaded else None
        self._lock = threading.Lock()
        self._leases: dict[int, tuple[float, float]] = {}  # idx -> surely ours until (monotonic, wall)
        self._lost: list[LostClaim] = []
        self._lost_causes: dict[int, str] = {}  # idx -> why, for items found lost and not yet dropped
        self._cause = ""
        self._watch = PauseWatch(mono, wall, self._paused)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_inline = (mono(), wall())
        self._renewals = self._renewed = self._verifications = self._pauses = self._failures = 0

    @property
    def threaded(self) -> bool:
        return self._io is not None

    # -- life --------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._io is not None and self._thread is None:
            self._stop.clear()
            self._watch.start()
            self._thread = threading.Thread(target=self._run, name="lem-lease", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)  # a request in flight ends within its timeout; the thread is a daemon
            self._watch.stop(timeout)
            close = getattr(self._io, "close", None)
            if self._io is not self.queue and callable(close) and not thread.is_alive():
                close()  # the thread's own handle (its connections)

    def _run(self) -> None:
        assert self._io is not None
        while not self._stop.wait(self.interval_s):
            try:
                self.tick(self._io)
            except Exception:  # a bug here must not end renewals; unrenewed items would still be fenced
                with self._lock:
                    self._failures += 1

    def _paused(self) -> None:
        with self._lock:
            self._cause = PAUSED
            self._pauses += 1

    def _cause_locked(self) -> str:
        if self._cause:
            return self._cause
        return PAUSED if self._watch.overdue() else EXPIRED

    def tick_inline(self) -> None:
        """Renew from the engine's thread when the queue has no handle for another thread (called often)."""
        if self._io is not None:
            return
        now = (self._mono(), self._wall())
        if now[0] - self._last_inline[0] >= self.interval_s or now[1] - self._last_inline[1] >= self.interval_s:
            self._last_inline = now
            self.tick(self.queue)

    # -- what the engine asks ----------------------------------------------------------------------
    def _until(self, sent: tuple[float, float]) -> tuple[float, float]:
        keep = self.lease_s - self.margin_s
        return sent[0] + keep, sent[1] + keep

    def clocks(self) -> tuple[float, float]:
        return self._mono(), self._wall()

    def hold(self, idxs: Iterable[int], sent: tuple[float, float]) -> None:
        """Items just won by a claim whose write was sent at `sent` (`clocks()` taken before the claim)."""
        until = self._until(sent)
        with self._lock:
            for i in idxs:
                self._leases[i] = until
                self._lost_causes.pop(i, None)

    def drop(self, idxs: Iterable[int]) -> None:
        """Reported, released or given up: no longer renewed."""
        with self._lock:
            for i in idxs:
                self._leases.pop(i, None)
                self._lost_causes.pop(i, None)

    def holding(self) -> set[int]:
        with self._lock:
            return set(self._leases)

    def state(self, idx: int) -> str:
        with self._lock:
            if idx in self._lost_causes:
                return LOST
            until = self._leases.get(idx)
        if until is None:
            return UNKNOWN
        return OWNED if self._mono() < until[0] and self._wall() < until[1] else UNKNOWN

    def cause(self, idx: int | None = None) -> str:
        """Why `idx` (or, without one, any item found lost now) is no longer ours: the reason recorded when
        the keeper found it lost, else the current one."""
        with self._lock:
            if idx is not None and idx in self._lost_causes:
                return self._lost_causes[idx]
            return self._cause_locked()

    def take_lost(self) -> list[LostClaim]:
        """Items the keeper found lost since the last call (each once)."""
        with self._lock:
            lost, self._lost = self._lost, []
        return lost

    def confirm(self, idxs: Iterable[int], queue: FencedQueue | None = None) -> dict[int, str]:
        """Ask the server now, on the caller's thread (through `queue`, default the engine's), whether `idxs`
        are still ours: OWNED ones are renewed and held again, the others are no longer held. Raises
        InfluxError (or the queue's LemError) when the server cannot say."""
        idxs = list(dict.fromkeys(idxs))
        if not idxs:
            return {}
        sent = self.clocks()
        verdicts = (queue or self.queue).verify(idxs)
        until = self._until(sent)
        with self._lock:
            self._verifications += 1
            for i, verdict in verdicts.items():
                if verdict == OWNED:
                    if i in self._leases:
                        self._leases[i] = until
                else:
                    self._leases.pop(i, None)
        return verdicts

    # -- renewal -----------------------------------------------------------------------------------
    def tick(self, queue: FencedQueue) -> None:
        """One renewal round: renew the items surely still ours, verify the stale ones."""
        with self._lock:
            held = dict(self._leases)
        if not held:
            with self._lock:
                self._cause = ""
            return
        now = self.clocks()
        fresh = [i for i, until in held.items() if now[0] < until[0] and now[1] < until[1]]
        fresh_set = set(fresh)
        stale = [i for i in held if i not in fresh_set]
        try:
            if fresh:
                sent = self.clocks()
                queue.renew(fresh)
                done = self.clocks()
                extended = self._until(sent)
                with self._lock:
                    self._renewals += 1
                    self._renewed += len(fresh)
                    for i in fresh:
                        until = self._leases.get(i)
                        if until is None:
                            continue
                        if done[0] < until[0] and done[1] < until[1]:
                            self._leases[i] = extended  # landed before the old lease ended: one unbroken run
                        else:
                            stale.append(i)  # too late to count as a renewal: verify below
            if stale:
                verdicts = self.confirm(stale, queue)
                with self._lock:
                    cause = self._cause_locked()
                    for i, verdict in verdicts.items():
                        if verdict != OWNED and i not in self._lost_causes:
                            self._lost_causes[i] = cause
                            self._lost.append(LostClaim(i, verdict, cause))
            with self._lock:
                self._cause = ""  # every held item is surely ours again
        except LemError:  # InfluxError, or a local queue's StorageError
            with self._lock:
                self._failures += 1
                if self._cause != PAUSED:
                    self._cause = UNREACHABLE

    def stats(self) -> KeeperStats:
        with self._lock:
            return KeeperStats(self._renewals, self._renewed, self._verifications, self._pauses, self._failures)
