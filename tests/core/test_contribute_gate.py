"""The quality gate at generation time and the events of the stage line: answers a model wrote in a loop are
held back (in `<output>.held.jsonl`, never in the output, never on the server, their claims released), cut
answers pass unless asked, refusals do not count toward `--limit`, and each answer's events come in order
(started -> done -> sent). Real files, the real InfluxDB server, the real CLI with a real (tiny) model."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from lemcore.contribute.engine import ContributeConfig, run_contribution
from lemcore.contribute.events import AnswerHeld, AnswerStarted, Finished, ReportsSent, ResponseDone
from lemcore.contribute.journal import Journal
from lemcore.contribute.queue.solo import SQLiteQueue
from lemcore.generate.api import APIGenerator
from lemcore.generate.protocol import WAIT, Sampling
from lemcore.prompts import prompt_set_hash
from lemcore.quality import REPETITION, TRUNCATED
from tests.core.contribute_helpers import (
    ROOT,
    ScriptedGenerator,
    jsonl_indices,
    server_claims,
    server_reports,
    sleepy_queue,
    solo_reports,
    worker_cmd,
    worker_env,
    write_prompts,
    write_small_kernel,
)


def lines_of(path) -> list[dict]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n")
    return [json.loads(raw) for raw in data.splitlines() if raw.strip()]


def config_for(tmp_path, prompts, output, **kw) -> ContributeConfig:
    kernel = write_small_kernel(tmp_path / "k")
    return ContributeConfig(prompts=prompts, output=output, worker=kw.pop("worker", "w"), axioms_path=kernel[0],
                            kernel_path=kernel[1], sampling=Sampling(max_tokens=64), retry_s=1.0, **kw)


def check_order(events: list, accepted: set[int], held: set[int]) -> None:
    """Per item: AnswerStarted, then ResponseDone (saved), then the ReportsSent that carries it; a held item
    gets AnswerStarted then AnswerHeld, and is never saved or sent."""
    started = {e.idx: n for n, e in enumerate(events) if isinstance(e, AnswerStarted)}
    done = {e.idx: n for n, e in enumerate(events) if isinstance(e, ResponseDone)}
    sent: dict[int, int] = {}
    for n, e in enumerate(events):
        if isinstance(e, ReportsSent):
            for i in e.idxs:
                assert i not in sent, f"{i} sent twice"
                sent[i] = n
    held_at = {e.idx: n for n, e in enumerate(events) if isinstance(e, AnswerHeld)}
    assert set(done) == set(sent) == accepted and set(held_at) == held
    assert set(started) == accepted | held
    for i in accepted:
        assert started[i] < done[i] < sent[i], (i, started[i], done[i], sent[i])
    for i in held:
        assert started[i] < held_at[i]


def test_held_answers_stay_off_the_output_and_the_server(tmp_path, influx) -> None:
    n, loops = 10, {2, 5, 7}
    prompts = write_prompts(tmp_path / "p.jsonl", n)
    out = tmp_path / "gold-w.jsonl"
    queue = sleepy_queue(influx.url, influx.token, "w", lease_s=30)
    events: list = []
    result = run_contribution(config_for(tmp_path, prompts, out), queue, ScriptedGenerator(loops=loops),
                              report=events.append)
    good = set(range(n)) - loops

    assert sorted(jsonl_indices(out)) == sorted(good)
    held_path = out.with_name(out.name + ".held.jsonl")
    held_rows = lines_of(held_path)
    assert sorted(r["idx"] for r in held_rows) == sorted(loops)
    for row in held_rows:
        assert row["held"] == [REPETITION] and row["quality"]["ngram_repeat"] > 0.9
        assert row["kind"] == "gold" and row["prompt_set"] == prompt_set_hash(prompts)
        assert row["response"].startswith("I will share it with care.") and row["instance"] == queue.instance
        assert abs(row["time_ns"] / 1e9 - time.time()) < 600  # dated by its own finish, for the totals
    assert not out.with_name(out.name + ".lost.jsonl").exists()

    reports = server_reports(influx)
    assert sorted(i for i, _w, _inst in reports) == sorted(good), "held answers are never reported"
    for idx in loops:  # given up at once (a release: lease 0), so that another worker may try
        mine = [lease for _t, inst, lease in server_claims(influx, idx) if inst == queue.instance]
        assert mine and mine[-1] == 0.0, mine
    other = sleepy_queue(influx.url, influx.token, "other", lease_s=30)
    assert sorted(other.claim_round(sorted(loops), 3).won) == sorted(loops)

    assert (result.done_this_run, result.held, result.held_by_reason) == (7, 3, {REPETITION: 3})
    assert result.unreported == 0 and result.lost == 0
    held_events = [e for e in events if isinstance(e, AnswerHeld)]
    assert [e.held_total for e in held_events] == [1, 2, 3]
    assert all(e.reasons == (REPETITION,) for e in held_events)
    assert held_events[-1].held_by_reason == {REPETITION: 3}
    assert isinstance(events[-1], Finished) and events[-1].held == 3 and events[-1].done == 7
    check_order(events, good, loops)
    assert all(e.unreported == 0 for e in events if isinstance(e, ReportsSent))

    journal = Journal(out, "gold", prompt_set_hash(prompts))
    skipped = journal.skipped()
    assert set(skipped) == loops and all(r == "quality: repeats itself in a loop" for r in skipped.values())
    assert journal.done_set() == good
    journal.close()
    for q in (queue, other):
        q.close()


def test_cut_answers_pass_unless_asked_and_held_items_are_retried_next_run(tmp_path) -> None:
    n = 6
    prompts = write_prompts(tmp_path / "p.jsonl", n)
    path = tmp_path / "q.sqlite"
    out = tmp_path / "o.jsonl"

    def queue() -> SQLiteQueue:
        return SQLiteQueue(path, "gold", "w", prompt_set=prompt_set_hash(prompts))

    q = queue()
    events: list = []
    first = run_contribution(config_for(tmp_path, prompts, out, hold_truncated=True), q,
                             ScriptedGenerator(cut={0, 1}, loops={4}), report=events.append)
    assert (first.done_this_run, first.held, first.held_by_reason) == (3, 3, {TRUNCATED: 2, REPETITION: 1})
    assert sorted(jsonl_indices(out)) == [2, 3, 5]
    assert sorted(i for i, _w, _inst in solo_reports(path)) == [2, 3, 5]
    check_order(events, {2, 3, 5}, {0, 1, 4})
    q.close()

    # The default: an answer cut at the token limit is kept (and says so); the held items are tried again.
    q = queue()
    second = run_contribution(config_for(tmp_path, prompts, out), q, ScriptedGenerator(cut={0, 1}))
    assert (second.done_this_run, second.held, second.remaining) == (3, 0, 0)
    rows = {r["idx"]: r for r in lines_of(out)}
    assert sorted(rows) == list(range(n)) and rows[0]["truncated"] and not rows[4]["truncated"]
    assert q.completed() == set(range(n))
    journal = Journal(out, "gold", prompt_set_hash(prompts))
    assert journal.skipped() == {}  # done since: no longer listed as skipped
    journal.close()
    q.close()


def test_refused_prompts_do_not_count_toward_the_limit(tmp_path) -> None:
    n, limit = 12, 4
    refuse = set(range(n)) - {1, 4, 8, 11}  # only four prompts fit the model
    prompts = write_prompts(tmp_path / "p.jsonl", n)
    out = tmp_path / "o.jsonl"
    # A fixed instance id: the claim order (shuffled by it) puts refused prompts among the first fed.
    queue = SQLiteQueue(tmp_path / "q.sqlite", "gold", "w", prompt_set=prompt_set_hash(prompts), instance="w#0")
    gen = ScriptedGenerator(refuse=refuse)
    events: list = []
    result = run_contribution(config_for(tmp_path, prompts, out, limit=limit), queue, gen, report=events.append)
    assert result.done_this_run == limit and sorted(jsonl_indices(out)) == [1, 4, 8, 11]
    assert isinstance(events[-1], Finished) and events[-1].reason == "limit reached"
    refused_fed = [i for i in gen.fed if i in refuse]
    assert refused_fed, gen.fed  # refusals came before the limit was reached
    journal = Journal(out, "gold", prompt_set_hash(prompts))
    assert set(journal.skipped()) == set(refused_fed)
    assert all(r == "the prompt is too long" for r in journal.skipped().values())
    journal.close()
    assert queue.completed() == {1, 4, 8, 11}
    queue.close()


def test_cli_holds_back_a_tiny_models_nonsense(tmp_path, tiny_llama) -> None:
    """The real CLI and a real (tiny, untrained) model: every answer is a few broken tokens."""
    n = 4
    prompts = write_prompts(tmp_path / "p.jsonl", n)
    kernel = write_small_kernel(tmp_path / "k")
    out = tmp_path / "gold-w.jsonl"
    cmd = worker_cmd(tiny_llama, prompts, out, "w", kernel, gate=True,
                     extra=["--max-tokens", "8", "--batch-size", "2"])
    run = subprocess.run(cmd, env=worker_env(tmp_path), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    held_lines = [line for line in run.stderr.splitlines() if ": held back, not reported (" in line]
    assert len(held_lines) == n, run.stderr
    held_path = out.with_name(out.name + ".held.jsonl")
    assert f"{n} answers held back by the quality gate in {held_path}" in run.stdout, run.stdout
    assert sorted(r["idx"] for r in lines_of(held_path)) == list(range(n))
    assert jsonl_indices(out) == []
    assert "Finished: 0 answers" in run.stdout
    help_text = subprocess.run([sys.executable, "-m", "lemcore.cli.main", "gold", "--help"], env=worker_env(tmp_path),
                               capture_output=True, text=True, timeout=60, cwd=ROOT).stdout
    assert "--no-quality-gate" in help_text and "(1 to 3600)" in help_text


class LoopStoppingGenerator(ScriptedGenerator):
    """ScriptedGenerator whose answers for `stopped` keys come back as the engine ends a loop: a clean text (the
    loop was cut short before it showed), `stopped_loop` set."""

    def __init__(self, stopped, **kw) -> None:
        super().__init__(**kw)
        self.stopped = set(stopped)

    def run(self, feed, sampling, on_result, **kw) -> int:
        from dataclasses import replace

        def mark(result):
            on_result(replace(result, stopped_loop=True) if result.key in self.stopped else result)

        return super().run(feed, sampling, mark, **kw)


def test_an_answer_the_generator_ended_in_a_loop_is_held_as_a_repetition(tmp_path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 4)
    out = tmp_path / "o.jsonl"
    queue = SQLiteQueue(tmp_path / "q.sqlite", "gold", "w", prompt_set=prompt_set_hash(prompts))
    sampling = Sampling(max_tokens=64, repetition_penalty=1.2, repetition_context=30, stop_loops=True)
    config = config_for(tmp_path, prompts, out)
    config.sampling = sampling
    result = run_contribution(config, queue, LoopStoppingGenerator({1, 3}))
    queue.close()

    assert (result.done_this_run, result.held, result.held_by_reason) == (2, 2, {REPETITION: 2})
    held = {r["idx"]: r for r in lines_of(out.with_name(out.name + ".held.jsonl"))}
    assert sorted(held) == [1, 3]
    for row in held.values():  # the text alone passes: the gate took the generator's word for the loop
        assert row["held"] == [REPETITION] and row["quality"]["loop_stopped"] == 1
        assert row["quality"]["ngram_repeat"] < 0.3 and row["stopped_loop"] is True
    for row in lines_of(out):  # the guard's settings are recorded with every answer, beside the temperature
        assert row["stopped_loop"] is False and row["temperature"] == 0.3
        assert (row["repetition_penalty"], row["repetition_context"], row["stop_loops"]) == (1.2, 30, True)


def test_cli_runs_the_guard_by_default_and_the_labs_sampling_when_asked(tmp_path, tiny_llama) -> None:
    from lemcore.contribute.setup import REPETITION_CONTEXT, REPETITION_PENALTY

    prompts = write_prompts(tmp_path / "p.jsonl", 2)
    kernel = write_small_kernel(tmp_path / "k")
    recorded = {}
    for name, flags in (("guard", []), ("lab", ["--repetition-penalty", "1", "--no-loop-stop"])):
        out = tmp_path / f"{name}.jsonl"
        cmd = worker_cmd(tiny_llama, prompts, out, name, kernel, extra=["--max-tokens", "4", *flags])
        run = subprocess.run(cmd, env=worker_env(tmp_path / name), capture_output=True, text=True, timeout=300,
                             cwd=ROOT)
        assert run.returncode == 0, run.stderr
        rows = lines_of(out)
        assert len(rows) == 2
        recorded[name] = {(r["repetition_penalty"], r["repetition_context"], r["stop_loops"]) for r in rows}
    assert recorded == {"guard": {(REPETITION_PENALTY, REPETITION_CONTEXT, True)},
                        "lab": {(1.0, REPETITION_CONTEXT, False)}}
    assert REPETITION_PENALTY > 1
    help_text = " ".join(subprocess.run([sys.executable, "-m", "lemcore.cli.main", "expand", "--help"],
                                        env=worker_env(tmp_path), capture_output=True, text=True, timeout=60,
                                        cwd=ROOT).stdout.split())
    assert "--repetition-penalty" in help_text and "--no-loop-stop" in help_text and "1 = off" in help_text


def test_cli_summary_names_the_files_beside_the_output(tmp_path) -> None:
    from lemcore.cli.contribute import _summary
    from lemcore.contribute.engine import ContributeResult

    out = tmp_path / "gold-w.jsonl"
    lines = _summary(ContributeResult(5, 5, 0, 0, out, lost=2, held=3, held_by_reason={"repetition": 2, "empty": 1}))
    assert lines == [f"3 answers held back by the quality gate in {out}.held.jsonl (empty or shorter than a "
                     "sentence: 1, repeats itself in a loop: 2); not reported",
                     f"2 answers kept aside in {out}.lost.jsonl; not reported"]
    assert _summary(ContributeResult(5, 5, 0, 0, out)) == []


def test_api_generator_sleeps_on_wait_without_a_cancel_token() -> None:
    answers = iter([WAIT, WAIT, WAIT, None])
    calls: list[float] = []

    def feed():
        calls.append(time.monotonic())
        return next(answers)

    t0 = time.monotonic()
    assert APIGenerator("http://127.0.0.1:9/v1", "m").run(feed, Sampling(), lambda r: None) == 0
    assert len(calls) == 4 and time.monotonic() - t0 >= 1.4  # 3 x 0.5 s, not a busy loop
