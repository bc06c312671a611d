"""The lab's work queue on InfluxDB: claim and verify, with leases that mean what they say (docs/coordination.md).

A claim is a `lem_claim` point stamped by the server: tags `kind`, `i` (the item) and `w` (the worker name, as
on the lab's dashboards); fields `lease_s` (how long it holds without renewal) and `inst` (the worker instance:
the name plus a random id made at start, so two processes with one name are two workers). `lease_s = 0` marks a
release, or a claim that lost and was withdrawn.

Who holds an item. An instance's claims on an item form runs: a run goes on while each claim comes before the
previous one's own lease ends, and a release ends it. A run is live while its last claim's lease lasts. The
item belongs to the live run that started first (ties: the smaller instance id). Every reader judges every
claim by the lease that claim carries, so workers with different leases agree, and a worker back from a pause
after its lease ran out starts a new run, which loses to whoever took the item meanwhile. Readers look back
2 x MAX_LEASE_S, so a run that started before the window still shows as the earlier one. "Now" is the server's
stamp on the claims we just wrote; between a write and its read-back we wait `settle_s`, so that a claim the
server stamped earlier but stored later is seen.

A claim round asks only about its candidates (never every claim in the window): it writes claims, reads them
back, withdraws the ones it lost and checks the won ones' done marks; when claiming meets contention (the end of
a set, an idle worker) it first reads the candidates' claims and done marks and claims only free ones. Completed items are the lab's
`gold_gen` / `expansion_gen` points (their measurement, tags and fields unchanged; we add the fields `tokens`,
`truncated` and `inst`), so the lab's dashboards keep working.

All queries bound `time` and use only InfluxQL that 1.x and 3.x read the same way. Queries over done points
also bound time from above, far in the future: those points carry the worker's clock, and a query with no upper
bound stops at the server's now() on 1.x.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from lemcore.contribute.queue.base import (
    DONE,
    EXPANSION,
    GOLD,
    MAX_LEASE_S,
    OWNED,
    TAKEN,
    ClaimOutcome,
    Completion,
    check_lease,
    new_instance_id,
)
from lemcore.errors import InfluxError
from lemcore.influx import InfluxClient, RequestCounts, line

CLAIM_MEASUREMENT = "lem_claim"
DONE_MEASUREMENT = {GOLD: "gold_gen", EXPANSION: "expansion_gen"}
PROGRESS_MEASUREMENT = {GOLD: "golden_gen_progress", EXPANSION: "expansion_progress"}
ALL_TIME = "time > now() - 36500d AND time < now() + 3650d"
CLAIM_WINDOW = f"time > now() - {int(2 * MAX_LEASE_S)}s"
SETTLE_S = 0.1  # between writing claims and reading them back
CHUNK = 100  # items per query (keeps the URL short)
LEGACY_LEASE_S = 120.0  # a claim without lease_s (none of ours): the old default


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _in(tag: str, values: Iterable[int]) -> str:
    return "(" + " OR ".join(f"{tag} = {_quote(str(v))}" for v in values) + ")"


def _chunks(idxs: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(idxs), CHUNK):
        yield idxs[start:start + CHUNK]


@dataclass(frozen=True)
class Claim:
    t: int  # server time, ns
    lease_ns: int  # 0: a release
    owner: str  # the instance (the worker name for claims written before instances)


def tenures(claims: Iterable[Claim]) -> dict[str, tuple[int, int]]:
    """owner -> (start, end) of its latest run of claims, in ns; end 0 when the run was released."""
    by_owner: dict[str, list[Claim]] = {}
    for c in claims:
        by_owner.setdefault(c.owner, []).append(c)
    out: dict[str, tuple[int, int]] = {}
    for owner, runs in by_owner.items():
        runs.sort(key=lambda c: c.t)
        start = runs[0].t
        for prev, cur in zip(runs, runs[1:]):
            if prev.lease_ns <= 0 or cur.t - prev.t >= prev.lease_ns:
                start = cur.t
        last = runs[-1]
        out[owner] = (start, last.t + last.lease_ns if last.lease_ns > 0 else 0)
    return out


def holder(claims: Iterable[Claim], now_ns: int) -> tuple[str, int] | None:
    """(owner, end of its lease) of whoever holds the item at `now_ns`, or None."""
    live = [(start, owner, end) for owner, (start, end) in tenures(claims).items() if end > now_ns]
    if not live:
        return None
    _start, owner, end = min(live)
    return owner, end


def _lease_ns(value: Any) -> int:
    try:
        seconds = float(value) if value is not None else LEGACY_LEASE_S
    except (TypeError, ValueError):
        seconds = LEGACY_LEASE_S
    return int(min(max(seconds, 0.0), MAX_LEASE_S) * 1e9)


class InfluxQueue:
    def __init__(self, client: InfluxClient, kind: str, worker: str, *, lease_s: float = 120.0,
                 instance: str | None = None, settle_s: float = SETTLE_S) -> None:
        if kind not in DONE_MEASUREMENT:
            raise ValueError(kind)
        check_lease(lease_s)
        self.client, self.kind, self.worker, self.lease_s = client, kind, worker, lease_s
        self.instance = instance or new_instance_id(worker)
        self.settle_s = settle_s
        self._offset_ns = 0  # the server's clock minus ours, learnt from the stamps on our own claims
        self._look_first = True  # read candidates' claims before claiming (see claim_round)

    def for_thread(self) -> InfluxQueue:
        """The same queue (same instance) over a clone of the client: for the lease keeper's thread."""
        twin = InfluxQueue(self.client.clone(), self.kind, self.worker, lease_s=self.lease_s,
                           instance=self.instance, settle_s=self.settle_s)
        twin._offset_ns = self._offset_ns
        return twin

    def stats(self) -> RequestCounts:
        return self.client.stats()

    def check_access(self) -> None:
        """One cheap, bounded request that proves the address, the token and the database (not a read of the
        finished set: the run reads that itself)."""
        self.client.check_access()

    def close(self) -> None:
        self.client.close()

    # -- reads ---------------------------------------------------------------------------------------
    def _claims(self, idxs: list[int]) -> dict[int, list[Claim]]:
        out: dict[int, list[Claim]] = {}
        for chunk in _chunks(idxs):
            rows = self.client.query(f"SELECT lease_s, inst, i, w FROM {CLAIM_MEASUREMENT} WHERE "
                                     f"kind = {_quote(self.kind)} AND {CLAIM_WINDOW} AND {_in('i', chunk)}")
            for row in rows:
                try:
                    idx, t = int(row["i"]), int(row["time"])
                except (KeyError, TypeError, ValueError):
                    continue
                owner = str(row.get("inst") or row.get("w") or "")
                out.setdefault(idx, []).append(Claim(t, _lease_ns(row.get("lease_s")), owner))
        return out

    def done_among(self, idxs: list[int]) -> set[int]:
        done: set[int] = set()
        for chunk in _chunks(list(dict.fromkeys(idxs))):
            rows = self.client.query(
                f"SELECT chars, i FROM {DONE_MEASUREMENT[self.kind]} WHERE {ALL_TIME} AND {_in('i', chunk)}")
            done |= {int(r["i"]) for r in rows if str(r.get("i", "")).isdigit()}
        return done

    def completed(self) -> set[int]:
        """Every finished item (the whole set: a rare, full read)."""
        rows = self.client.query(f'SHOW TAG VALUES FROM {DONE_MEASUREMENT[self.kind]} WITH KEY = "i" WHERE {ALL_TIME}')
        return {int(r["value"]) for r in rows if str(r.get("value", "")).isdigit()}

    def completed_recent(self, seconds: float) -> set[int]:
        """Items whose done point is stamped within the last `seconds` (or in the future)."""
        rows = self.client.query(f"SELECT chars, i FROM {DONE_MEASUREMENT[self.kind]} WHERE "
                                 f"time > now() - {max(1, int(seconds))}s AND time < now() + 3650d")
        return {int(r["i"]) for r in rows if str(r.get("i", "")).isdigit()}

    # -- claims --------------------------------------------------------------------------------------
    def _write_claims(self, idxs: Iterable[int], lease_s: float) -> None:
        self.client.write(
            line(CLAIM_MEASUREMENT, {"kind": self.kind, "i": i, "w": self.worker},
                 {"lease_s": float(lease_s), "inst": self.instance})
            for i in idxs
        )

    def _claim_and_check(self, idxs: list[int]) -> tuple[list[int], dict[int, float]]:
        """Write claims on `idxs`, read them back: (won, lost -> seconds until the winner's lease ends)."""
        before = time.time_ns()
        self._write_claims(idxs, self.lease_s)
        after = time.time_ns()
        if self.settle_s > 0:
            time.sleep(self.settle_s)
        claims = self._claims(idxs)
        mine = [c.t for i in idxs for c in claims.get(i, []) if c.owner == self.instance]
        if not mine:  # our own claims are not visible: nothing can be proved ours
            return [], {i: self.lease_s for i in idxs}
        now = max(mine)
        self._offset_ns = now - (before + after) // 2
        won: list[int] = []
        lost: dict[int, float] = {}
        for i in idxs:
            found = holder(claims.get(i, []), now)
            if found is not None and found[0] == self.instance:
                won.append(i)
            else:
                lost[i] = max(0.0, (found[1] - now) / 1e9) if found is not None else self.lease_s
        if lost:
            try:
                self._write_claims(lost, 0.0)  # withdrawn: a claim that lost must not keep the item from anyone
            except InfluxError:
                pass  # then it simply lapses with its lease
        return won, lost

    def claim_round(self, candidates: list[int], want: int) -> ClaimOutcome:
        """Claim up to `want` of `candidates`. While claiming goes smoothly (the last round won all it asked
        for): write claims on the first `want`, read them back, check their done marks (3 requests). After a
        round that met others' claims or done items (the end of a set, an idle worker, a stale view): look
        first (the candidates' claims and done marks, 2 requests) and write claims only on free ones."""
        cands = list(dict.fromkeys(candidates))
        if not cands or want <= 0:
            return ClaimOutcome([])
        taken: dict[int, float] = {}
        done: set[int] = set()
        if self._look_first:
            seen = self._claims(cands)
            done = self.done_among(cands)
            now = time.time_ns() + self._offset_ns
            free: list[int] = []
            for i in cands:
                if i in done:
                    continue
                found = holder(seen.get(i, []), now)
                if found is not None and found[0] != self.instance:
                    taken[i] = max(0.0, (found[1] - now) / 1e9)
                else:
                    free.append(i)
            ask = free[:want]
        else:
            ask = cands[:want]
        if not ask:
            self._look_first = True
            return ClaimOutcome([], frozenset(done), taken)
        looked = self._look_first
        won, lost = self._claim_and_check(ask)
        taken.update(lost)
        if not looked and won:
            # Not looked at before claiming: check the done marks now. (After a look this is not needed: an
            # item reported since was held by its reporter, whose live claim beat ours.)
            done = self.done_among(won)
            won = [i for i in won if i not in done]
        self._look_first = bool(taken or done)
        return ClaimOutcome(won, frozenset(done), taken)

    def claim(self, candidates: list[int]) -> list[int]:
        return self.claim_round(candidates, len(candidates)).won

    def verify(self, idxs: list[int]) -> dict[int, str]:
        idxs = list(dict.fromkeys(idxs))
        if not idxs:
            return {}
        won, _lost = self._claim_and_check(idxs)
        done = self.done_among(idxs)
        return {i: DONE if i in done else OWNED if i in won else TAKEN for i in idxs}

    def renew(self, idxs: Iterable[int]) -> None:
        idxs = list(idxs)
        if idxs:
            self._write_claims(idxs, self.lease_s)

    def release(self, idxs: Iterable[int]) -> None:
        """A claim with lease 0: the item is free for others at once (there is no delete in the v1 API that
        3.x shares)."""
        idxs = list(idxs)
        if idxs:
            self._write_claims(idxs, 0.0)

    # -- reports -------------------------------------------------------------------------------------
    def report(self, completions: list[Completion]) -> None:
        lines = []
        for c in completions:
            if c.kind == GOLD:
                tags = {"i": c.idx, "w": c.worker, "d": c.domain, "v": c.voice}
                fields: dict[str, Any] = {"seed_id": c.seed_id, "gen_time": float(c.gen_time), "chars": int(c.chars)}
            else:
                tags = {"i": c.idx, "w": c.worker, "d": c.domain, "r": c.region}
                fields = {"seed_id": c.seed_id, "gen_time": float(c.gen_time), "chars": int(c.chars),
                          "model": c.model}
            # Our additions: the lab's dashboards ignore unknown fields.
            fields.update({"tokens": int(c.tokens), "truncated": bool(c.truncated)})
            if c.instance:
                fields["inst"] = c.instance
            lines.append(line(DONE_MEASUREMENT[c.kind], tags, fields, time_ns=c.time_ns or time.time_ns()))
        self.client.write(lines)

    def progress(self, completed: int, target: int) -> None:
        pct = round(100.0 * completed / target, 2) if target else 0.0
        self.client.write([line(PROGRESS_MEASUREMENT[self.kind], {"worker": self.worker},
                                {"completed": int(completed), "target": int(target), "pct": float(pct)})])

