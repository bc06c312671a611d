"""What this computer has contributed today, this week and in all, read from what is on disk (read-only).

Two files beside a contribution's output say it all: the journal (`<output>.journal.sqlite`, see journal.py),
whose `done` rows are the saved answers, each with its report (when it finished, its tokens, how long the model
took, whether the queue has it), and the held file (`<output>.held.jsonl`), one line per answer the quality
check held back. Only the rows of one kind and prompt set are counted, so "saved, all time" is the journal's own
count, the number the engine reports as `Started.done_local` and `Rates.all_time_done`.

Periods follow the local calendar: today from midnight, this week from Monday midnight (ISO weeks). An answer
belongs to the period in which it finished. A held line is dated by its own `time_ns` where it has one, else by
the journal's note of the hold (its `skipped` row), which goes once the prompt is answered later. A few answers
thus have no time on record: those held lines, and lines adopted from the output file without their report.
They count in "all time" only.

"Time spent on answers" is the time during which the model worked on at least one answer (reading its question
or writing it): answers written together in one batch count once, not once each.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from lemcore.contribute.engine import default_output, prompt_file
from lemcore.contribute.journal import held_output
from lemcore.contribute.setup import ContributionOptions
from lemcore.contribute.storage import guarded
from lemcore.prompts import prompt_set_hash

READ_FIX = "Check that the data folder is on a working disk and readable (Settings, Open data folder)"
QUALITY_SKIP = "quality: "  # how the engine notes a held-back prompt in the journal's `skipped` table


@dataclass(frozen=True)
class Tally:
    """One period's figures."""

    saved: int = 0  # answers that passed the quality check and were saved (the journal's `done` rows)
    sent: int = 0  # of those, the ones reported to the queue (the lab's server; offline, this computer's list)
    held: int = 0  # answers held back by the quality check (kept in the held file, never sent)
    tokens: int = 0  # tokens written in the saved answers
    seconds: float = 0.0  # time the model spent on answers, saved and held (answers written together once)


@dataclass(frozen=True)
class History:
    today: Tally
    week: Tally
    all_time: Tally
    undated: int = 0  # answers (saved or held) with no time on record: in `all_time` only

    def periods(self) -> tuple[tuple[str, Tally], ...]:
        return (("Today", self.today), ("This week", self.week), ("All time", self.all_time))


@dataclass(frozen=True)
class _Answer:
    finished: float | None  # seconds since the epoch; None: no time on record
    seconds: float  # how long the model worked on it
    saved: bool
    sent: bool = False
    tokens: int = 0


def period_starts(now: float, tz: tzinfo | None = None) -> tuple[float, float]:
    """(start of today, start of this ISO week) in seconds since the epoch, for the local calendar (or `tz`).
    Each midnight is found from its own date, so a day that changes the clock (summer time) has its right start."""
    moment = datetime.fromtimestamp(now, tz)
    day = moment.date()
    return _midnight(day, tz), _midnight(day - timedelta(days=day.weekday()), tz)


def _midnight(day: date, tz: tzinfo | None) -> float:
    # A naive datetime's timestamp() is taken in the local time zone, with the offset of that date.
    return datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()


def contribution_history(output: Path, kind: str, dataset: str, *, now: float | None = None,
                         tz: tzinfo | None = None) -> History:
    """The figures of the answers of `kind` and prompt set `dataset` (its hash) kept beside `output`. Missing files
    count as nothing; a file that cannot be read raises a StorageError naming it."""
    output = Path(output)
    moment = datetime.now().timestamp() if now is None else now
    today, week = period_starts(moment, tz)
    answers = _saved(output, kind, dataset) + _held(output, kind, dataset)
    return History(
        today=_tally(answers, today, moment),
        week=_tally(answers, week, moment),
        all_time=_tally(answers, None, moment),
        undated=sum(1 for a in answers if a.finished is None),
    )


def history_for(options: ContributionOptions, *, now: float | None = None, tz: tzinfo | None = None) -> History:
    """The history of the output a run with these options writes (the app's: `options_from_settings`)."""
    output = Path(options.output) if options.output else default_output(options.kind, options.worker)
    return contribution_history(output, options.kind, prompt_set_hash(prompt_file(options.prompts)), now=now, tz=tz)


# -- reading ------------------------------------------------------------------------------------------------
def _journal_path(output: Path) -> Path:
    return output.with_name(output.name + ".journal.sqlite")  # as Journal names it


def _query(path: Path, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Rows from the journal, opened read-only (a running contribution may be writing it: WAL lets both)."""
    if not path.is_file():
        return []
    with guarded(path, "read the contribution journal", READ_FIX):
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql, args).fetchall()
        except sqlite3.OperationalError as err:
            if "no such table" in str(err):
                return []  # a journal made by a version without that table
            raise
        finally:
            db.close()


def _saved(output: Path, kind: str, dataset: str) -> list[_Answer]:
    rows = _query(_journal_path(output), "SELECT completion, reported FROM done WHERE kind=? AND dataset=?",
                  (kind, dataset))
    answers = []
    for completion, reported in rows:
        report: dict[str, Any] = {}
        if completion:
            try:
                loaded = json.loads(completion)
            except ValueError:
                loaded = None
            report = loaded if isinstance(loaded, dict) else {}
        time_ns = report.get("time_ns")
        finished = time_ns / 1e9 if isinstance(time_ns, int) and time_ns > 0 else None
        answers.append(_Answer(finished, _number(report.get("gen_time")), saved=True,
                               sent=bool(reported) and bool(report), tokens=int(_number(report.get("tokens")))))
    return answers


def _held(output: Path, kind: str, dataset: str) -> list[_Answer]:
    path = held_output(output)
    if not path.is_file():
        return []
    noted = {idx: at for idx, reason, at in _query(
        _journal_path(output), "SELECT idx, reason, at FROM skipped WHERE kind=? AND dataset=?", (kind, dataset))
        if isinstance(reason, str) and reason.startswith(QUALITY_SKIP) and isinstance(at, (int, float))}
    answers = []
    with guarded(path, "read the held-back answers", READ_FIX), path.open("rb") as fh:
        for raw in fh:
            try:
                line = json.loads(raw)
            except ValueError:
                continue  # a torn last line (the writer cuts those back at once)
            if not isinstance(line, dict) or line.get("kind", kind) != kind or line.get("prompt_set") != dataset:
                continue
            time_ns = line.get("time_ns")
            finished: float | None = time_ns / 1e9 if isinstance(time_ns, int) and time_ns > 0 else None
            if finished is None:
                finished = noted.get(line.get("idx"))
            answers.append(_Answer(finished, _number(line.get("gen_time")), saved=False))
    return answers


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else 0.0


# -- counting -----------------------------------------------------------------------------------------------
def _tally(answers: list[_Answer], start: float | None, now: float) -> Tally:
    """The answers that finished from `start` (None: ever) up to `now`."""
    if start is None:
        chosen = answers
    else:
        chosen = [a for a in answers if a.finished is not None and start <= a.finished <= now]
    saved = [a for a in chosen if a.saved]
    spans = ((a.finished - a.seconds, a.finished) for a in chosen if a.finished is not None and a.seconds > 0)
    return Tally(saved=len(saved), sent=sum(1 for a in saved if a.sent), held=len(chosen) - len(saved),
                 tokens=sum(a.tokens for a in saved), seconds=_covered(spans, start))


def _covered(spans: Iterable[tuple[float, float]], start: float | None) -> float:
    """Seconds covered by at least one span, counting only what lies after `start`."""
    total, reach = 0.0, float("-inf")
    for begin, end in sorted((max(b, start) if start is not None else b, e) for b, e in spans):
        if end <= begin:
            continue
        if begin > reach:
            total += end - begin
        elif end > reach:
            total += end - reach
        reach = max(reach, end)
    return total
