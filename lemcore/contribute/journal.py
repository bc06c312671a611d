"""Local durability for contributions: the output JSONL plus a SQLite journal with an outbox.

Order for every finished response: (1) append one line to the JSONL and fsync; (2) record it in the
journal as "done, not yet reported"; (3) report to the queue and mark it reported. On start the journal is
reconciled with the JSONL (a line written just before a crash is adopted, a torn last line is cut), so a
finished response is never generated again, never lost, and never written twice; unreported ones wait in
the outbox until the server takes them.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from lemcore.contribute.queue.base import Completion
from lemcore.errors import DataError


class Journal:
    def __init__(self, output: Path, kind: str, dataset: str) -> None:
        self.output = Path(output)
        self.kind, self.dataset = kind, dataset
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.path = self.output.with_name(self.output.name + ".journal.sqlite")
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS done (kind TEXT, dataset TEXT, idx INTEGER, completion TEXT, "
            "reported INTEGER DEFAULT 0, PRIMARY KEY (kind, dataset, idx))"
        )
        self._reconcile()

    def close(self) -> None:
        self._db.close()

    # -- start-up -----------------------------------------------------------------------------------
    def _reconcile(self) -> None:
        if not self.output.exists():
            return
        data = self.output.read_bytes()
        if data and not data.endswith(b"\n"):
            # A torn last line (power loss mid-write): cut it; that response was never journaled.
            cut = data.rfind(b"\n") + 1
            with open(self.output, "r+b") as fh:
                fh.truncate(cut)
                os.fsync(fh.fileno())
            data = data[:cut]
        known = self.done_set()
        for n, raw in enumerate(data.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                raise DataError(f"{self.output} line {n} is not JSON. Move the file aside to start a new one.") from None
            if record.get("kind", self.kind) != self.kind or record.get("prompt_set", self.dataset) != self.dataset:
                continue
            idx = record.get("idx")
            if isinstance(idx, int) and idx not in known:
                completion = Completion(**record["_completion"]) if "_completion" in record else None
                self._insert(idx, completion)
                known.add(idx)

    def _insert(self, idx: int, completion: Completion | None) -> None:
        payload = json.dumps(completion.to_dict()) if completion else None
        self._db.execute("INSERT OR IGNORE INTO done (kind, dataset, idx, completion, reported) VALUES (?,?,?,?,?)",
                         (self.kind, self.dataset, idx, payload, 0 if completion else 1))

    # -- queries ------------------------------------------------------------------------------------
    def done_set(self) -> set[int]:
        rows = self._db.execute("SELECT idx FROM done WHERE kind=? AND dataset=?", (self.kind, self.dataset))
        return {r[0] for r in rows}

    def outbox(self) -> list[Completion]:
        rows = self._db.execute(
            "SELECT completion FROM done WHERE kind=? AND dataset=? AND reported=0 AND completion IS NOT NULL "
            "ORDER BY idx", (self.kind, self.dataset))
        return [Completion(**json.loads(r[0])) for r in rows]

    def count(self) -> int:
        return len(self.done_set())

    # -- writes -------------------------------------------------------------------------------------
    def record(self, record: dict[str, Any], completion: Completion) -> None:
        """Steps (1) and (2): the JSONL line (flushed to disk) and the journal entry."""
        record = dict(record, kind=self.kind, prompt_set=self.dataset, _completion=completion.to_dict())
        raw = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(self.output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, raw)  # one write on an O_APPEND descriptor: never interleaved with another line
            os.fsync(fd)
        finally:
            os.close(fd)
        self._insert(completion.idx, completion)

    def mark_reported(self, idxs: list[int]) -> None:
        self._db.executemany("UPDATE done SET reported=1 WHERE kind=? AND dataset=? AND idx=?",
                             [(self.kind, self.dataset, i) for i in idxs])
