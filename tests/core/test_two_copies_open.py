"""Two copies of the app (or the app and `lem gold`) starting on one output file at the same moment.

SQLite answers "database is locked" at once, without its busy timeout, to a connection that holds a read lock
and needs a write lock while another does the same (a new file switched to WAL, a first CREATE TABLE): one of
two twins started together failed to open the journal in a CI run. `retry_while_locked` makes it wait its turn.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from lemcore.contribute.journal import Journal
from lemcore.contribute.queue.solo import SQLiteQueue
from lemcore.contribute.storage import retry_while_locked


def test_retry_while_locked_waits_out_a_lock_and_nothing_else() -> None:
    calls: list[int] = []

    def locked_twice() -> str:
        calls.append(1)
        if len(calls) <= 2:
            raise sqlite3.OperationalError("database is locked")
        return "open"

    assert retry_while_locked(locked_twice) == "open" and len(calls) == 3

    def broken() -> None:
        calls.append(1)
        raise sqlite3.OperationalError("no such table: done")

    calls.clear()
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        retry_while_locked(broken)
    assert len(calls) == 1  # not a lock: no retry

    def always_locked() -> None:
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        retry_while_locked(always_locked, wait_s=0.05)  # gives up after its wait


def _open_together(make, rounds: int, copies: int, tmp_path: Path) -> list[str]:
    errors: list[str] = []
    for r in range(rounds):
        folder = tmp_path / f"round{r}"
        folder.mkdir()
        barrier = threading.Barrier(copies)

        def one(barrier: threading.Barrier = barrier, folder: Path = folder) -> None:
            barrier.wait()
            try:
                make(folder).close()
            except Exception as err:  # noqa: BLE001 - collected for the assertion
                errors.append(f"{type(err).__name__}: {err}")

        threads = [threading.Thread(target=one) for _ in range(copies)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return errors


def test_copies_opening_one_new_journal_at_once_all_open(tmp_path) -> None:
    # Before the retry: 2 of 180 such opens failed here (30 rounds of 6).
    errors = _open_together(lambda folder: Journal(folder / "gold.jsonl", "gold", "seeds"), 30, 6, tmp_path)
    assert errors == []


def test_copies_opening_one_new_solo_queue_at_once_all_open(tmp_path) -> None:
    errors = _open_together(lambda folder: SQLiteQueue(folder / "solo.sqlite", "gold", "mac"), 30, 6, tmp_path)
    assert errors == []
