"""Today, this week, all time: the history read from what real contribution runs left on disk."""

from __future__ import annotations

import json
import time
from datetime import datetime
from zoneinfo import ZoneInfo

from lemcore.contribute.engine import ContributeConfig, run_contribution
from lemcore.contribute.history import contribution_history, history_for, period_starts
from lemcore.contribute.journal import Journal
from lemcore.contribute.queue.solo import SQLiteQueue
from lemcore.contribute.setup import ContributionOptions
from lemcore.generate.protocol import Sampling
from lemcore.prompts import prompt_set_hash
from tests.core.contribute_helpers import (
    ScriptedGenerator,
    SleepyGenerator,
    write_prompts,
    write_small_kernel,
)

DAY = 86400.0


def _config(tmp_path, prompts, output, **kw) -> ContributeConfig:
    kernel = write_small_kernel(tmp_path / "k")
    return ContributeConfig(prompts=prompts, output=output, worker="w", axioms_path=kernel[0], kernel_path=kernel[1],
                            sampling=Sampling(max_tokens=64), retry_s=1.0, **kw)


def test_periods_follow_the_local_calendar_across_a_clock_change() -> None:
    paris = ZoneInfo("Europe/Paris")
    # Sunday 31 March 2024: the clocks go forward at 02:00. The day starts at 00:00 +01:00; its ISO week on the
    # Monday before.
    sunday = datetime(2024, 3, 31, 15, 0, tzinfo=paris).timestamp()
    assert period_starts(sunday, paris) == (datetime(2024, 3, 31, tzinfo=paris).timestamp(),
                                            datetime(2024, 3, 25, tzinfo=paris).timestamp())
    assert datetime.fromtimestamp(period_starts(sunday, paris)[0], paris).utcoffset().total_seconds() == 3600
    # Tuesday after: summer time, and a new week from Monday 1 April.
    tuesday = datetime(2024, 4, 2, 0, 30, tzinfo=paris).timestamp()
    today, week = period_starts(tuesday, paris)
    assert datetime.fromtimestamp(today, paris) == datetime(2024, 4, 2, tzinfo=paris)
    assert datetime.fromtimestamp(week, paris) == datetime(2024, 4, 1, tzinfo=paris)
    assert datetime.fromtimestamp(week, paris).utcoffset().total_seconds() == 7200
    # Without a zone: the computer's own calendar (a date's midnight, at that date's offset).
    now = time.time()
    local_today, local_week = period_starts(now)
    assert datetime.fromtimestamp(local_today).time().isoformat() == "00:00:00"
    assert datetime.fromtimestamp(local_week).weekday() == 0 and local_week <= local_today <= now


def test_counts_agree_with_the_journal_and_held_answers_are_counted_once(tmp_path) -> None:
    """A run with the real quality gate: saved answers, held ones; a second run answers the held prompts (the
    journal forgets their hold; the held lines keep their own time)."""
    n = 8
    prompts = write_prompts(tmp_path / "p.jsonl", n)
    dataset = prompt_set_hash(prompts)
    out = tmp_path / "gold-w.jsonl"
    # A line from the lab's own scripts (no report of ours): the journal adopts it as done, with no time.
    out.write_text(json.dumps({"idx": 7, "seed_id": "S007", "prompt": "Question 7", "response": "An answer."}) + "\n")

    def queue() -> SQLiteQueue:
        return SQLiteQueue(tmp_path / "q.sqlite", "gold", "w", prompt_set=dataset)

    q = queue()
    first = run_contribution(_config(tmp_path, prompts, out), q, ScriptedGenerator(loops={1, 4}))
    q.close()
    assert (first.done_this_run, first.held) == (5, 2)
    journal = Journal(out, "gold", dataset)
    on_record = journal.count()
    journal.close()
    history = contribution_history(out, "gold", dataset)
    assert history.all_time.saved == on_record == first.done_local_total == 6  # the engine's own "all time"
    assert history.today.saved == history.week.saved == 5  # the adopted line has no time
    assert history.all_time.held == history.today.held == 2  # dated by their own time
    assert history.undated == 1
    assert history.all_time.sent == 5  # reported to this computer's queue; the lab's line was never ours to send
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert history.today.tokens == sum(r.get("tokens", 0) for r in rows) > 0
    assert 0 < history.today.seconds <= 5 * 0.01 + 2 * 0.01 + 1e-6  # each answer took 0.01 s here

    # The held prompts are answered in a second run: the journal forgets their hold, their lines stay.
    q = queue()
    second = run_contribution(_config(tmp_path, prompts, out), q, ScriptedGenerator())
    q.close()
    assert second.done_this_run == 2
    history = contribution_history(out, "gold", dataset)
    assert history.all_time.saved == second.done_local_total == 8
    assert history.all_time.held == history.today.held == 2  # held lines carry their own time
    assert history.today.saved == 7 and history.undated == 1  # only the lab's line has none

    # A day and a half later: nothing today; this week still has them unless a new week began.
    finished = time.time()
    later = contribution_history(out, "gold", dataset, now=finished + 1.5 * DAY)
    assert later.today.saved == later.today.held == 0 and later.today.seconds == 0.0
    new_week = period_starts(finished + 1.5 * DAY)[1] > finished
    assert later.week.saved == (0 if new_week else 7)
    assert later.all_time == history.all_time
    # Another prompt set or kind beside the same output is not counted.
    assert contribution_history(out, "gold", "0" * 64).all_time.saved == 0
    assert contribution_history(out, "expansion", dataset).all_time.saved == 0


def test_answers_written_together_count_their_time_once(tmp_path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 6)
    dataset = prompt_set_hash(prompts)
    out = tmp_path / "gold-w.jsonl"
    q = SQLiteQueue(tmp_path / "q.sqlite", "gold", "w", prompt_set=dataset)
    # Three answers at a time, 0.3 s each batch: two batches.
    run_contribution(_config(tmp_path, prompts, out, quality_gate=False), q,
                     SleepyGenerator(0.3, batch_size=3, parallel=3))
    q.close()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    each = sum(r["gen_time"] for r in rows)
    spent = contribution_history(out, "gold", dataset).today.seconds
    assert each >= 6 * 0.3
    assert 2 * 0.3 <= spent < each / 2, (spent, each)


def test_the_apps_output_and_a_missing_one(tmp_path) -> None:
    """`history_for` reads the output the app's run writes; before any run everything is zero."""
    prompts = write_prompts(tmp_path / "p.jsonl", 3)
    out = tmp_path / "o.jsonl"
    options = ContributionOptions(worker="w", prompts=prompts, output=out)
    empty = history_for(options)
    assert empty.all_time.saved == empty.all_time.held == 0 and empty.undated == 0
    assert not out.with_name(out.name + ".journal.sqlite").exists()  # reading never makes a journal
    q = SQLiteQueue(tmp_path / "q.sqlite", "gold", "w", prompt_set=prompt_set_hash(prompts))
    run_contribution(_config(tmp_path, prompts, out), q, ScriptedGenerator())
    q.close()
    assert history_for(options).today.saved == 3


def test_a_held_line_that_carries_its_time_is_dated_by_it(tmp_path) -> None:
    """A held line with its own finishing time (as the engine's report has it) needs no note in the journal."""
    out = tmp_path / "gold-w.jsonl"
    dataset = "d" * 64
    journal = Journal(out, "gold", dataset)
    two_days_ago = time.time() - 2 * DAY
    journal.hold({"idx": 1, "seed_id": "S001", "response": "loop loop", "gen_time": 3.0},
                 {"held": ["repetition"], "time_ns": int(two_days_ago * 1e9)})
    journal.close()
    history = contribution_history(out, "gold", dataset)
    assert history.all_time.held == 1 and history.undated == 0 and history.today.held == 0
    assert history.all_time.seconds == 3.0
    then = contribution_history(out, "gold", dataset, now=two_days_ago)
    assert then.today.held == 1
