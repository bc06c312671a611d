"""The lab's work queue on InfluxDB: claim-and-verify with leases (platform-notes, measured 0 duplicates).

A claim is a `lem_claim` point (tags kind, i, w) stamped by the server. After writing claims the worker
reads back every claim on those items inside the lease window: for each item, the worker whose earliest
claim in the window is earliest wins (ties broken by worker name, so every reader agrees). Winners renew
every lease/3; an item whose owner stops renewing returns to the pool when the lease runs out. Completed
items are the lab's `gold_gen` / `expansion_gen` points, so the lab's dashboards keep working.

All queries bound `time` (InfluxDB 3 covers only the last day in SHOW TAG VALUES without one) and use only
InfluxQL that 1.x and 3.x read the same way.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from lemcore.contribute.queue.base import EXPANSION, GOLD, Completion
from lemcore.influx import InfluxClient, line

CLAIM_MEASUREMENT = "lem_claim"
DONE_MEASUREMENT = {GOLD: "gold_gen", EXPANSION: "expansion_gen"}
PROGRESS_MEASUREMENT = {GOLD: "golden_gen_progress", EXPANSION: "expansion_progress"}
ALL_TIME = "time > now() - 36500d"


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _in(tag: str, values: Iterable[int]) -> str:
    return "(" + " OR ".join(f"{tag} = {_quote(str(v))}" for v in values) + ")"


class InfluxQueue:
    def __init__(self, client: InfluxClient, kind: str, worker: str, *, lease_s: float = 120.0) -> None:
        if kind not in DONE_MEASUREMENT:
            raise ValueError(kind)
        self.client, self.kind, self.worker, self.lease_s = client, kind, worker, lease_s

    def completed(self) -> set[int]:
        rows = self.client.query(f'SHOW TAG VALUES FROM {DONE_MEASUREMENT[self.kind]} WITH KEY = "i" WHERE {ALL_TIME}')
        return {int(r["value"]) for r in rows if str(r.get("value", "")).isdigit()}

    def _claims(self, idxs: Iterable[int] | None = None) -> dict[int, dict[str, int]]:
        """item -> {worker: earliest claim time (ns)} inside the lease window."""
        where = f"kind = {_quote(self.kind)} AND time > now() - {int(self.lease_s * 1000)}ms"
        idxs = list(idxs) if idxs is not None else None
        if idxs:
            where += " AND " + _in("i", idxs)
        rows = self.client.query(f"SELECT lease_s, i, w FROM {CLAIM_MEASUREMENT} WHERE {where}")
        claims: dict[int, dict[str, int]] = {}
        for row in rows:
            per_item = claims.setdefault(int(row["i"]), {})
            t = int(row["time"])
            per_item[row["w"]] = min(t, per_item.get(row["w"], t))
        return claims

    def claimed_by_others(self) -> set[int]:
        return {i for i, owners in self._claims().items() if _winner(owners) != self.worker}

    def _write_claims(self, idxs: Iterable[int]) -> None:
        self.client.write(
            line(CLAIM_MEASUREMENT, {"kind": self.kind, "i": i, "w": self.worker}, {"lease_s": float(self.lease_s)})
            for i in idxs
        )

    def claim(self, candidates: list[int]) -> list[int]:
        if not candidates:
            return []
        self._write_claims(candidates)
        claims = self._claims(candidates)
        done_rows = self.client.query(
            f"SELECT chars, i FROM {DONE_MEASUREMENT[self.kind]} WHERE {ALL_TIME} AND {_in('i', candidates)}"
        )
        done = {int(r["i"]) for r in done_rows}
        return [i for i in candidates if i not in done and _winner(claims.get(i, {})) == self.worker]

    def renew(self, idxs: Iterable[int]) -> None:
        idxs = list(idxs)
        if idxs:
            self._write_claims(idxs)

    def release(self, idxs: Iterable[int]) -> None:
        """Nothing to do: an unrenewed claim expires after the lease (there is no delete in the v1 API
        that 3.x shares)."""

    def report(self, completions: list[Completion]) -> None:
        lines = []
        for c in completions:
            if c.kind == GOLD:
                tags = {"i": c.idx, "w": c.worker, "d": c.domain, "v": c.voice}
                fields = {"seed_id": c.seed_id, "gen_time": float(c.gen_time), "chars": int(c.chars)}
            else:
                tags = {"i": c.idx, "w": c.worker, "d": c.domain, "r": c.region}
                fields = {"seed_id": c.seed_id, "gen_time": float(c.gen_time), "chars": int(c.chars),
                          "model": c.model}
            # Our additions: the lab's dashboards ignore unknown fields.
            fields.update({"tokens": int(c.tokens), "truncated": bool(c.truncated)})
            lines.append(line(DONE_MEASUREMENT[c.kind], tags, fields, time_ns=c.time_ns or time.time_ns()))
        self.client.write(lines)

    def progress(self, completed: int, target: int) -> None:
        pct = round(100.0 * completed / target, 2) if target else 0.0
        self.client.write([line(PROGRESS_MEASUREMENT[self.kind], {"worker": self.worker},
                                {"completed": int(completed), "target": int(target), "pct": float(pct)})])


def _winner(owners: dict[str, int]) -> str | None:
    if not owners:
        return None
    return min(owners.items(), key=lambda kv: (kv[1], kv[0]))[0]
