"""Solo mode's work queue (no server): the same leases and reports as the lab's, in a local SQLite file.

Rows are keyed by job kind, prompt set (`lemcore.prompts.prompt_set_hash` of the prompt file) and index, so a
second prompt file starts from nothing instead of finding "60 done". Claims belong to a worker *instance* (the
name plus a random id made when the queue opens, `base.new_instance_id`, the lab's format), not to the bare
name: two processes started with the same worker name never take each other's work. The name still goes into
reports and progress.

The queue is a `FencedQueue` of its own (docs/coordination.md), with the lab queue's answers in one SQLite
transaction each: `claim_round` (done candidates, candidates another live instance holds with the seconds left on
its lease, and up to `want` claimed), `verify` (DONE, TAKEN, or renewed / claimed again for this instance:
OWNED), `done_among`, `completed_recent`, and `for_thread` (a second connection to the same file for the lease
keeper's thread). One row per item holds its current claim, so there are no runs to judge: a claim whose lease
ran out is free, and whoever writes the row next holds the item.

A claim ends when its holder reports or releases it, when its lease runs out, or at once when its holder was a
process on this computer that no longer runs (killed, crashed): a restart need not wait out the lease.

Files from before prompt sets (schema 1: rows keyed by kind and index only) are migrated when opened: their
done rows move to `legacy_done`, their claims and progress (short-lived) are dropped. A legacy row counts as done
for a prompt set whose item at that index has the same seed id, domain, voice and region as the row's report
(`adopt_legacy`, called by `lemcore.contribute.setup.open_queue`): those are the facts a report recorded, so a
second file with other prompts at the same indices adopts nothing.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path

from lemcore.contribute.queue.base import (
    DONE,
    OWNED,
    TAKEN,
    ClaimOutcome,
    Completion,
    FencedQueue,
    check_lease,
    new_instance_id,
)
from lemcore.contribute.storage import guarded, immediate_transaction, retry_while_locked
from lemcore.prompts import PromptItem
from lemcore.settings import data_dir

SCHEMA = 2
QUEUE_FIX = "Set LEM_SOLO_QUEUE to a file on a disk with space that you may write to"

_TABLES = """
CREATE TABLE IF NOT EXISTS claims (kind TEXT, prompt_set TEXT, idx INTEGER, instance TEXT, worker TEXT,
    host TEXT, pid INTEGER, until REAL, PRIMARY KEY (kind, prompt_set, idx));
CREATE TABLE IF NOT EXISTS done (kind TEXT, prompt_set TEXT, idx INTEGER, worker TEXT, report TEXT, at REAL,
    PRIMARY KEY (kind, prompt_set, idx));
CREATE TABLE IF NOT EXISTS progress (kind TEXT, prompt_set TEXT, worker TEXT, completed INTEGER,
    target INTEGER, at REAL, PRIMARY KEY (kind, prompt_set, worker));
"""


def _pid_alive(pid: int) -> bool:
    if sys.platform == "win32" or pid <= 0:
        return True  # os.kill(pid, 0) would send CTRL_C on Windows: assume alive, the lease still ends it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, someone else's
        return True
    return True


class SQLiteQueue:
    """Solo mode (no server): the same leases and reports in a local SQLite file; a `FencedQueue`.

    Several processes on one machine may share the file: every claim is one IMMEDIATE transaction. Every disk
    failure is a StorageError naming the file. `prompt_set` keys the rows (see the module doc); `instance`
    owns the claims (default: the worker name plus a random id, `base.new_instance_id`).
    """

    def __init__(self, path: Path, kind: str, worker: str, *, prompt_set: str = "", lease_s: float = 120.0,
                 instance: str | None = None, _any_thread: bool = False) -> None:
        check_lease(lease_s)
        self.path = Path(path)
        self.kind, self.worker, self.lease_s = kind, worker, lease_s
        self.prompt_set = prompt_set
        self.instance = instance or new_instance_id(worker)
        self._host, self._pid = socket.gethostname(), os.getpid()
        with self._guard("create the folder of the solo queue"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._guard("open the solo queue"):
            # _any_thread: a `for_thread` handle is made on one thread and then used only by another.
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                       check_same_thread=not _any_thread)
        try:
            with self._guard("open the solo queue"):
                retry_while_locked(self._open_tables)  # two copies may open a new queue at the same moment
        except BaseException:
            self._db.close()
            raise

    def _open_tables(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._migrate()

    def _guard(self, doing: str) -> AbstractContextManager[None]:
        return guarded(self.path, doing, QUEUE_FIX)

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate_transaction(self._db)

    def _migrate(self) -> None:
        with self._transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version >= SCHEMA:
                return
            old = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            columns = {r[1] for r in db.execute("PRAGMA table_info(done)")} if "done" in old else set()
            if "done" in old and "prompt_set" not in columns:
                db.execute("ALTER TABLE done RENAME TO legacy_done")
                db.execute("DROP TABLE IF EXISTS claims")
                db.execute("DROP TABLE IF EXISTS progress")
            for statement in _TABLES.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA}")

    def close(self) -> None:
        self._db.close()

    def for_thread(self) -> FencedQueue:
        """The same queue, instance and prompt set on a new connection, for use by one other thread."""
        return SQLiteQueue(self.path, self.kind, self.worker, prompt_set=self.prompt_set, lease_s=self.lease_s,
                           instance=self.instance, _any_thread=True)

    # -- schema 1 rows ------------------------------------------------------------------------------
    def has_legacy(self) -> bool:
        with self._guard("read the solo queue"):
            if not self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='legacy_done'"
                                    ).fetchone():
                return False
            return self._db.execute("SELECT 1 FROM legacy_done WHERE kind=? LIMIT 1", (self.kind,)).fetchone() \
                is not None

    def adopt_legacy(self, items: Iterable[PromptItem]) -> int:
        """Count as done, for this prompt set, the schema-1 rows whose report matches this set's item at the
        same index (seed id, domain, voice, region). Returns how many were adopted (again: idempotent)."""
        if not self.has_legacy():
            return 0
        by_idx = {it.idx: it for it in items}
        adopted = 0
        with self._guard("update the solo queue"), self._transaction() as db:
            rows = db.execute("SELECT idx, worker, report FROM legacy_done WHERE kind=?", (self.kind,)).fetchall()
            for idx, worker, report in rows:
                item = by_idx.get(idx)
                if item is None or not _same_item(item, report):
                    continue
                cur = db.execute("INSERT OR IGNORE INTO done VALUES (?,?,?,?,?,?)",
                                 (self.kind, self.prompt_set, idx, worker, report, 0.0))
                adopted += cur.rowcount
        return adopted

    # -- reads --------------------------------------------------------------------------------------
    def _done(self, db: sqlite3.Connection, since: float | None = None) -> set[int]:
        sql, args = "SELECT idx FROM done WHERE kind=? AND prompt_set=?", (self.kind, self.prompt_set)
        if since is not None:
            return {r[0] for r in db.execute(sql + " AND at>=?", (*args, since)).fetchall()}
        return {r[0] for r in db.execute(sql, args).fetchall()}

    def completed(self) -> set[int]:
        with self._guard("read the solo queue"):
            return self._done(self._db)

    def done_among(self, idxs: list[int]) -> set[int]:
        wanted = list(dict.fromkeys(idxs))
        done: set[int] = set()
        with self._guard("read the solo queue"):
            for start in range(0, len(wanted), 500):  # SQLite's host-parameter limit is 999 on old builds
                chunk = wanted[start:start + 500]
                rows = self._db.execute(
                    f"SELECT idx FROM done WHERE kind=? AND prompt_set=? AND idx IN ({','.join('?' * len(chunk))})",
                    (self.kind, self.prompt_set, *chunk)).fetchall()
                done |= {r[0] for r in rows}
        return done

    def completed_recent(self, seconds: float) -> set[int]:
        with self._guard("read the solo queue"):
            return self._done(self._db, since=time.time() - seconds)

    def _live_claims(self, db: sqlite3.Connection, now: float) -> dict[int, tuple[str, float]]:
        """item -> (holder instance, lease end) for every claim that still keeps others off its item."""
        rows = db.execute("SELECT idx, instance, host, pid, until FROM claims WHERE kind=? AND prompt_set=? "
                          "AND until>?", (self.kind, self.prompt_set, now)).fetchall()
        live: dict[int, tuple[str, float]] = {}
        for idx, instance, host, pid, until in rows:
            # A holder whose process on this computer is gone (killed, crashed) keeps nothing.
            if host == self._host and pid != self._pid and instance != self.instance and not _pid_alive(pid):
                continue
            live[idx] = (instance, until)
        return live

    # -- claims -------------------------------------------------------------------------------------
    def _take(self, db: sqlite3.Connection, idxs: list[int], now: float) -> None:
        db.executemany("INSERT OR REPLACE INTO claims VALUES (?,?,?,?,?,?,?,?)",
                       [(self.kind, self.prompt_set, i, self.instance, self.worker, self._host, self._pid,
                         now + self.lease_s) for i in idxs])

    def claim_round(self, candidates: list[int], want: int) -> ClaimOutcome:
        """Claim up to `want` of `candidates` in order, in one transaction; says which of the others are done
        and which are held (with the seconds left on the holder's lease)."""
        now = time.time()
        won: list[int] = []
        taken: dict[int, float] = {}
        with self._guard("claim work in the solo queue"), self._transaction() as db:
            done = self._done(db) & set(candidates)
            live = self._live_claims(db, now)
            for idx in candidates:
                if idx in done:
                    continue
                holder = live.get(idx)
                if holder is not None and holder[0] != self.instance:
                    taken[idx] = holder[1] - now
                elif len(won) < want:
                    won.append(idx)
            self._take(db, won, now)
        return ClaimOutcome(won, frozenset(done), taken)

    def claim(self, candidates: list[int]) -> list[int]:
        return self.claim_round(candidates, len(candidates)).won

    def verify(self, idxs: list[int]) -> dict[int, str]:
        """Renew our claims on `idxs`: OWNED (renewed; also an item whose lease lapsed that nobody took since),
        DONE (finished) or TAKEN (someone else holds it now)."""
        now = time.time()
        result: dict[int, str] = {}
        with self._guard("renew claims in the solo queue"), self._transaction() as db:
            done = self._done(db) & set(idxs)
            live = self._live_claims(db, now)
            for idx in idxs:
                holder = live.get(idx)
                if idx in done:
                    result[idx] = DONE
                elif holder is not None and holder[0] != self.instance:
                    result[idx] = TAKEN
                else:
                    result[idx] = OWNED
            self._take(db, [i for i, state in result.items() if state == OWNED], now)
        return result

    def renew(self, idxs: Iterable[int]) -> None:
        until = time.time() + self.lease_s
        with self._guard("renew claims in the solo queue"):
            self._db.executemany(
                "UPDATE claims SET until=? WHERE kind=? AND prompt_set=? AND idx=? AND instance=?",
                [(until, self.kind, self.prompt_set, i, self.instance) for i in idxs])

    def release(self, idxs: Iterable[int]) -> None:
        with self._guard("release claims in the solo queue"):
            self._db.executemany("DELETE FROM claims WHERE kind=? AND prompt_set=? AND idx=? AND instance=?",
                                 [(self.kind, self.prompt_set, i, self.instance) for i in idxs])

    # -- results ------------------------------------------------------------------------------------
    def report(self, completions: list[Completion]) -> None:
        now = time.time()
        with self._guard("record finished answers in the solo queue"), self._transaction() as db:
            for c in completions:
                db.execute("INSERT OR IGNORE INTO done VALUES (?,?,?,?,?,?)",
                           (c.kind, self.prompt_set, c.idx, c.worker, json.dumps(c.to_dict()), now))
                db.execute("DELETE FROM claims WHERE kind=? AND prompt_set=? AND idx=?",
                           (c.kind, self.prompt_set, c.idx))

    def progress(self, completed: int, target: int) -> None:
        with self._guard("update the solo queue"):
            self._db.execute("INSERT OR REPLACE INTO progress VALUES (?,?,?,?,?,?)",
                             (self.kind, self.prompt_set, self.worker, completed, target, time.time()))


def _same_item(item: PromptItem, report: str | None) -> bool:
    try:
        data = json.loads(report or "")
    except ValueError:
        return False
    if not isinstance(data, dict):
        return False
    return all(str(data.get(field) or "") == value for field, value in
               (("seed_id", item.seed_id), ("domain", item.domain), ("voice", item.voice), ("region", item.region)))


def default_solo_queue_path() -> Path:
    return Path(os.environ.get("LEM_SOLO_QUEUE", data_dir() / "solo-queue.sqlite"))
