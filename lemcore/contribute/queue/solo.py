"""Solo mode's work queue (no server): the same leases and reports as the lab's, in a local SQLite file."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from lemcore.contribute.queue.base import Completion
from lemcore.settings import data_dir


class SQLiteQueue:
    """Solo mode (no server): the same leases and reports in a local SQLite file.

    Several processes on one machine may share the file: every claim is one IMMEDIATE transaction.
    """

    def __init__(self, path: Path, kind: str, worker: str, *, lease_s: float = 120.0) -> None:
        self.path = Path(path)
        self.kind, self.worker, self.lease_s = kind, worker, lease_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(
            """CREATE TABLE IF NOT EXISTS claims (kind TEXT, idx INTEGER, worker TEXT, until REAL,
                   PRIMARY KEY (kind, idx));
               CREATE TABLE IF NOT EXISTS done (kind TEXT, idx INTEGER, worker TEXT, report TEXT,
                   PRIMARY KEY (kind, idx));
               CREATE TABLE IF NOT EXISTS progress (kind TEXT, worker TEXT, completed INTEGER,
                   target INTEGER, at REAL, PRIMARY KEY (kind, worker));"""
        )

    def close(self) -> None:
        self._db.close()

    def completed(self) -> set[int]:
        return {r[0] for r in self._db.execute("SELECT idx FROM done WHERE kind=?", (self.kind,))}

    def claimed_by_others(self) -> set[int]:
        rows = self._db.execute("SELECT idx FROM claims WHERE kind=? AND worker<>? AND until>?",
                                (self.kind, self.worker, time.time()))
        return {r[0] for r in rows}

    def claim(self, candidates: list[int]) -> list[int]:
        won: list[int] = []
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for idx in candidates:
                if self._db.execute("SELECT 1 FROM done WHERE kind=? AND idx=?", (self.kind, idx)).fetchone():
                    continue
                row = self._db.execute("SELECT worker, until FROM claims WHERE kind=? AND idx=?",
                                       (self.kind, idx)).fetchone()
                if row and row[0] != self.worker and row[1] > now:
                    continue
                self._db.execute("INSERT OR REPLACE INTO claims VALUES (?,?,?,?)",
                                 (self.kind, idx, self.worker, now + self.lease_s))
                won.append(idx)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return won

    def renew(self, idxs: Iterable[int]) -> None:
        until = time.time() + self.lease_s
        self._db.executemany("UPDATE claims SET until=? WHERE kind=? AND idx=? AND worker=?",
                             [(until, self.kind, i, self.worker) for i in idxs])

    def release(self, idxs: Iterable[int]) -> None:
        self._db.executemany("DELETE FROM claims WHERE kind=? AND idx=? AND worker=?",
                             [(self.kind, i, self.worker) for i in idxs])

    def report(self, completions: list[Completion]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        for c in completions:
            self._db.execute("INSERT OR IGNORE INTO done VALUES (?,?,?,?)",
                             (c.kind, c.idx, c.worker, json.dumps(c.to_dict())))
            self._db.execute("DELETE FROM claims WHERE kind=? AND idx=?", (c.kind, c.idx))
        self._db.execute("COMMIT")

    def progress(self, completed: int, target: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO progress VALUES (?,?,?,?,?)",
                         (self.kind, self.worker, completed, target, time.time()))


def default_solo_queue_path() -> Path:
    return Path(os.environ.get("LEM_SOLO_QUEUE", data_dir() / "solo-queue.sqlite"))
