"""Local durability for contributions: the output JSONL plus a SQLite journal with an outbox.

Order for every finished response: (1) append one line to the JSONL and fsync; (2) record it in the
journal as "done, not yet reported"; (3) report to the queue and mark it reported. On start the journal is
reconciled with the JSONL (a line written just before a crash is adopted, a torn last line is cut, a complete
last line that only lacks its newline gets one), so a finished response is never generated again, never lost,
and never written twice; unreported ones wait in the outbox until the server takes them.

Steps (1) and (2), and the start-up check, hold an advisory lock on the JSONL: two processes sharing one
output (two workers started with the same name) never see each other's half-written line. Every failure of the
disk (read-only, full, no permission) is a StorageError naming the file; a line that could not be written
completely is removed again, so the file only ever holds whole answers.

Answers that must not be reported are written beside the output, the same way (one locked, fsynced append;
a partial line cut back; a StorageError naming the file), and are never adopted into the journal:
`<output>.lost.jsonl` (`keep_aside`: the item was taken over or finished elsewhere, or is not confirmed yet) and
`<output>.held.jsonl` (`hold`: the quality gate refused the answer). Both carry a marker field (`lost`, `held`),
so a reader that meets one of their lines elsewhere still knows it is not training data.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from lemcore.contribute.queue.base import Completion
from lemcore.contribute.storage import guarded, immediate_transaction, locked, retry_while_locked, write_all
from lemcore.errors import DataError


def _is_complete_line(raw: bytes) -> bool:
    """A last line that parses as a JSON object is a whole record that only lacks its newline (written by
    another tool, or a crash between the text and the newline of a two-write writer); anything else is torn."""
    try:
        return isinstance(json.loads(raw.decode("utf-8")), dict)
    except ValueError:  # UnicodeDecodeError is a ValueError
        return False


def lost_output(output: Path) -> Path:
    """Where answers are kept that were finished for items another worker took over (never reported)."""
    return output.with_name(output.name + ".lost.jsonl")


def held_output(output: Path) -> Path:
    """Where answers are kept that the quality gate held back (never reported, never training data)."""
    return output.with_name(output.name + ".held.jsonl")


class Journal:
    def __init__(self, output: Path, kind: str, dataset: str) -> None:
        self.output = Path(output)
        self.kind, self.dataset = kind, dataset
        self.path = self.output.with_name(self.output.name + ".journal.sqlite")
        self.lost_path = lost_output(self.output)
        self.held_path = held_output(self.output)
        with guarded(self.output, "create the output folder"):
            self.output.parent.mkdir(parents=True, exist_ok=True)
        with guarded(self.path, "open the journal"):
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            with guarded(self.path, "open the journal"):
                retry_while_locked(self._make_tables)  # two copies may open a new journal at the same moment
            self._reconcile()
        except BaseException:
            self._db.close()
            raise

    def _make_tables(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS done (kind TEXT, dataset TEXT, idx INTEGER, completion TEXT, "
            "reported INTEGER DEFAULT 0, PRIMARY KEY (kind, dataset, idx))"
        )
        # Prompts the generator refused (e.g. longer than the model's context): not done, not reported;
        # kept so the user can see which and why. A later run may still generate them (another model).
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS skipped (kind TEXT, dataset TEXT, idx INTEGER, reason TEXT, "
            "at REAL, PRIMARY KEY (kind, dataset, idx))"
        )

    def close(self) -> None:
        self._db.close()

    # -- start-up -----------------------------------------------------------------------------------
    def _reconcile(self) -> None:
        if not self.output.exists():
            return
        with guarded(self.output, "read the output file"):
            fd = os.open(self.output, os.O_RDONLY)
        try:
            with guarded(self.output, "check the output file"), locked(fd):
                data = self._repair_end(fd)
                self._adopt(data)
        finally:
            os.close(fd)

    def _repair_end(self, fd: int) -> bytes:
        """The file's bytes after making its end whole: a complete last line without a newline gets one, a
        torn one (power loss mid-write: never journaled) is cut."""
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        data = b"".join(chunks)
        if not data or data.endswith(b"\n"):
            return data
        start = data.rfind(b"\n") + 1
        keep = _is_complete_line(data[start:])
        wfd = os.open(self.output, os.O_WRONLY | os.O_APPEND)
        try:
            if keep:
                write_all(wfd, b"\n")
            else:
                os.ftruncate(wfd, start)
            os.fsync(wfd)
        finally:
            os.close(wfd)
        return data + b"\n" if keep else data[:start]

    def _adopt(self, data: bytes) -> None:
        """Journal rows for lines written just before a crash (after step 1, before step 2)."""
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
                completion = Completion.from_dict(record["_completion"]) if "_completion" in record else None
                with guarded(self.path, "update the journal"):
                    self._insert(idx, completion)
                known.add(idx)

    def _insert(self, idx: int, completion: Completion | None) -> None:
        payload = json.dumps(completion.to_dict()) if completion else None
        with immediate_transaction(self._db) as db:
            db.execute("INSERT OR IGNORE INTO done (kind, dataset, idx, completion, reported) "
                       "VALUES (?,?,?,?,?)", (self.kind, self.dataset, idx, payload, 0 if completion else 1))
            db.execute("DELETE FROM skipped WHERE kind=? AND dataset=? AND idx=?", (self.kind, self.dataset, idx))

    # -- queries ------------------------------------------------------------------------------------
    def done_set(self) -> set[int]:
        with guarded(self.path, "read the journal"):
            rows = self._db.execute("SELECT idx FROM done WHERE kind=? AND dataset=?", (self.kind, self.dataset))
            return {r[0] for r in rows}

    def outbox(self) -> list[Completion]:
        with guarded(self.path, "read the journal"):
            rows = self._db.execute(
                "SELECT completion FROM done WHERE kind=? AND dataset=? AND reported=0 AND completion IS NOT NULL "
                "ORDER BY idx", (self.kind, self.dataset)).fetchall()
        return [Completion.from_dict(json.loads(r[0])) for r in rows]

    def count(self) -> int:
        return len(self.done_set())

    # -- writes -------------------------------------------------------------------------------------
    def record(self, record: dict[str, Any], completion: Completion) -> None:
        """Steps (1) and (2): the JSONL line (flushed to disk) and the journal entry. Raises StorageError
        when the disk refuses; the file then holds no part of this line."""
        record = dict(record, kind=self.kind, prompt_set=self.dataset, _completion=completion.to_dict())
        raw = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with guarded(self.output, "save a finished answer"):
            fd = os.open(self.output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            with guarded(self.output, "save a finished answer"), locked(fd):
                size = os.fstat(fd).st_size
                try:
                    write_all(fd, raw)  # one write on an O_APPEND descriptor: never interleaved with another line
                    os.fsync(fd)
                except OSError:
                    _cut_back(fd, size)  # never leave a partial line behind
                    raise
                with guarded(self.path, f"record a finished answer in the journal (the answer is saved in "
                                        f"{self.output} and is counted at the next start)"):
                    self._insert(completion.idx, completion)
        finally:
            os.close(fd)

    def keep_aside(self, record: dict[str, Any], status: dict[str, Any]) -> None:
        """One line in `<output>.lost.jsonl`: the record, our `kind` and `prompt_set`, and `status` (e.g.
        `{"lost": "taken", "cause": "paused"}`). Not journaled, never adopted, never reported."""
        self._append_aside(self.lost_path, record, status, "keep an answer aside")

    def hold(self, record: dict[str, Any], status: dict[str, Any]) -> None:
        """One line in `<output>.held.jsonl` (an answer the quality gate refused): the record plus `status`
        (`{"held": reasons, "quality": measures}`). Not journaled, never adopted, never reported."""
        self._append_aside(self.held_path, record, status, "keep a held-back answer")

    def _append_aside(self, path: Path, record: dict[str, Any], status: dict[str, Any], doing: str) -> None:
        line = dict(record, kind=self.kind, prompt_set=self.dataset, **status)
        raw = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
        with guarded(path, doing):
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            with guarded(path, doing), locked(fd):
                size = os.fstat(fd).st_size
                try:
                    write_all(fd, raw)
                    os.fsync(fd)
                except OSError:
                    _cut_back(fd, size)  # never leave a partial line behind
                    raise
        finally:
            os.close(fd)

    def skip(self, idx: int, reason: str) -> None:
        """Note a prompt that was not generated, and why. It does not count as done and is never reported."""
        with guarded(self.path, "update the journal"):
            self._db.execute("INSERT OR REPLACE INTO skipped VALUES (?,?,?,?,?)",
                             (self.kind, self.dataset, idx, reason, time.time()))

    def skipped(self) -> dict[int, str]:
        """Prompts skipped (and not generated since), with the reason."""
        with guarded(self.path, "read the journal"):
            rows = self._db.execute("SELECT idx, reason FROM skipped WHERE kind=? AND dataset=? ORDER BY idx",
                                    (self.kind, self.dataset)).fetchall()
        return {r[0]: r[1] for r in rows}

    def mark_reported(self, idxs: list[int]) -> None:
        with guarded(self.path, "update the journal"):
            self._db.executemany("UPDATE done SET reported=1 WHERE kind=? AND dataset=? AND idx=?",
                                 [(self.kind, self.dataset, i) for i in idxs])


def _cut_back(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError:
        pass  # the start-up check cuts a torn last line anyway
