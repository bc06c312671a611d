"""The volunteer's job: generate gold (sandwich) or expansion answers, duplicate-free, nothing lost.

`run_contribution` claims prompts from a WorkQueue just in time, generates them in batches, and for every
finished answer writes the JSONL line and the journal entry before reporting it (lemcore.contribute.journal). When the
server is unreachable the worker keeps what it has, shows why it waits, and sends the queued reports when
the server is back; it never starts over from index 0.

Coordination (docs/coordination.md): a `LeaseKeeper` renews every claimed item from its own thread; the engine
checks that an item is still ours before starting it and before reporting it (a local lease answers at no
cost; after a gap the server is asked). An answer finished for an item someone else took over meanwhile is
kept in `<output>.lost.jsonl`, never in the output and never reported. Claim rounds ask the server only about
their candidates; finished items are read incrementally, in full only rarely; a worker with nothing to claim
waits longer and longer (with jitter, up to `idle_max_s`).

Every finished answer passes the quality gate (lemcore.quality) before anything else: a loop, an empty or
broken answer, a recital of the kernel, the prompt said back or another language is *held*: kept in
`<output>.held.jsonl`, noted as skipped in the journal, never counted done or reported, its claim released so
that another worker (or model) may try it; this run does not try it again. Answers cut at the token limit are
not held for that alone (`hold_truncated`): at 512 tokens most are; dataset builds leave them out instead.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lemcore.contribute.events import (
    AnswerHeld,
    AnswerStarted,
    ClaimLost,
    Finished,
    FleetProgress,
    Notice,
    Rates,
    ReportsSent,
    ResponseDone,
    Started,
    StatusChanged,
)
from lemcore.contribute.journal import Journal
from lemcore.contribute.kernel import (
    build_sandwich,
    default_kernel_paths,
    load_axioms,
    load_kernel_text,
    sandwich_text,
)
from lemcore.contribute.lease_keeper import PAUSED, UNREACHABLE, LeaseKeeper, LostClaim
from lemcore.contribute.queue.base import DONE, GOLD, OWNED, Completion, FencedQueue, WorkQueue, as_fenced
from lemcore.errors import ConfigError, InfluxError, LemError, ServerUnreachable
from lemcore.generate.protocol import WAIT, Generator, GenItem, GenResult, Messages, Sampling, Wait
from lemcore.influx import RequestCounts
from lemcore.jobs import CancelToken, Report, no_report
from lemcore.prompts import BadLine, PromptItem, load_expansion_prompts, load_gold_prompts, prompt_set_hash
from lemcore.quality import REASON_TEXT, QualityGate
from lemcore.resources import seeds_dir
from lemcore.settings import data_dir

SERVER_DOWN = "Server unreachable: results are saved locally and queued; retrying"
DONE_OVERLAP_S = 120.0  # incremental reads of finished items look this much further back (late reports, clocks)
CANDIDATES = 48  # items a claim round asks about at most
# A round that finds over half its candidates already done means our view of the done set is stale: read it
# again next round (at most this often), instead of sweeping the set 48 items a round.
STALE_VIEW_REFRESH_S = 5.0
INCREMENTAL_MAX_S = 600.0  # a refresh covering more than this since the last read reads the whole set instead


@dataclass
class ContributeConfig:
    kind: str = GOLD
    prompts: Path | None = None
    output: Path | None = None
    worker: str = ""
    sampling: Sampling = field(default_factory=Sampling)
    limit: int | None = None  # stop after this many answers in this run
    target: int | None = None  # only the first N prompts of the file (the lab's MAX_PROMPTS)
    axioms_path: Path | None = None
    kernel_path: Path | None = None
    progress_every: int = 25
    retry_s: float = 5.0
    # Asked before new work is claimed; a non-empty reason pauses (answers in progress still finish).
    pause_check: Callable[[], str] | None = None
    idle_max_s: float = 120.0  # longest wait between claim rounds when nothing is claimable (with jitter)
    done_poll_s: float = 600.0  # read newly finished items this often (claims stay correct without it)
    full_refresh_s: float = 3600.0  # read every finished item this often
    # Hold back answers the quality gate refuses (lemcore.quality): kept in `<output>.held.jsonl`, never reported.
    quality_gate: bool = True
    # Also hold answers only for being cut at the token limit. Off: at 512 tokens most answers are cut, and
    # dataset builds leave cut answers out anyway (their `truncated` field says so).
    hold_truncated: bool = False

    def validate(self) -> None:
        if self.kind not in ("gold", "expansion"):
            raise ConfigError(f"unknown job {self.kind!r}: use gold or expansion.")
        if not self.worker.strip():
            raise ConfigError("worker name is empty: set one in Settings or pass --worker.")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("limit must be at least 1.")
        if self.idle_max_s < 1 or self.done_poll_s <= 0 or self.full_refresh_s <= 0:
            raise ConfigError("idle_max_s must be at least 1 s, done_poll_s and full_refresh_s above 0.")
        self.sampling.validate()


@dataclass(frozen=True)
class ContributeResult:
    done_this_run: int
    done_local_total: int
    remaining: int
    unreported: int
    output: Path
    lost: int = 0  # answers for items someone else took over: in `<output>.lost.jsonl`, never reported
    server_requests: int = 0  # requests this run made to the lab's server (0 in solo mode)
    server_bytes: int = 0  # bytes sent and received in them
    held: int = 0  # answers the quality gate held back: in `<output>.held.jsonl`, never reported
    held_by_reason: dict[str, int] = field(default_factory=dict)  # per reason code (one answer may have several)


def default_output(kind: str, worker: str) -> Path:
    name = "gold" if kind == GOLD else "expand"
    return data_dir() / "output" / f"{name}-{worker}.jsonl"


def prompt_file(prompts: Path | None) -> Path:
    """The prompt file a run reads: the given one, else the shipped gold prompts. The one place this is decided:
    `load_work` reads it and `lemcore.contribute.setup` keys the solo queue by its hash."""
    return Path(prompts) if prompts else seeds_dir() / "gold-prompts.jsonl"


def load_work(config: ContributeConfig, report: Report) -> tuple[list[PromptItem], str]:
    path = prompt_file(config.prompts)
    bad: list[BadLine] = []
    loader = load_gold_prompts if config.kind == GOLD else load_expansion_prompts
    items = loader(path, on_bad_line=bad.append)
    for b in bad[:20]:
        report(Notice(f"Skipped {b}"))
    if len(bad) > 20:
        report(Notice(f"Skipped {len(bad) - 20} more bad lines in {path}"))
    if config.target is not None:
        items = [it for it in items if it.idx < config.target]
    if not items:
        raise ConfigError(f"{path} holds no usable prompts. Check the file or pick another prompt set.")
    return items, prompt_set_hash(path)


def build_messages(config: ContributeConfig) -> Callable[[PromptItem], Messages]:
    """Prompt -> chat messages: the axiom sandwich for gold, plain chat for expansion."""
    if config.kind != GOLD:
        return lambda item: [{"role": "user", "content": item.prompt}]

    defaults = default_kernel_paths()
    axioms = load_axioms(config.axioms_path or defaults.axioms)
    kernel_text = load_kernel_text(config.kernel_path or defaults.text)
    return lambda item: build_sandwich(axioms, kernel_text, item.prompt)


def build_gate(config: ContributeConfig) -> QualityGate | None:
    """The quality gate of a run (None when it is off). What an answer must not recite is the sandwich from the
    same kernel files `build_messages` reads, for expansion answers too (a fine-tuned model may recite it)."""
    if not config.quality_gate:
        return None
    return QualityGate([sandwich_text(config.axioms_path, config.kernel_path)],
                       refuse_truncated=config.hold_truncated)


class _Worker:
    """State of one run: the claim pool, in-flight items, fencing, outbox flushing and rates."""

    def __init__(self, config: ContributeConfig, queue: FencedQueue, keeper: LeaseKeeper, journal: Journal,
                 items: list[PromptItem], model_name: str, batch_size: int, report: Report,
                 drain: CancelToken | None) -> None:
        self.config, self.queue, self.keeper, self.journal, self.report = config, queue, keeper, journal, report
        self.drain = drain
        self.model_name = model_name
        self.batch_size = max(1, batch_size)  # prompts claimed per round: what the generator keeps in flight
        self.instance = queue.instance
        self.items = {it.idx: it for it in items}
        self.order = list(self.items)
        random.Random(self.instance).shuffle(self.order)  # workers (even twins with one name) start apart
        self.to_messages = build_messages(config)
        self.gate = build_gate(config)
        self.lost_path = journal.lost_path
        self.pool: list[int] = []  # claimed, not started
        self.in_flight: set[int] = set()
        self.completed: set[int] = set(journal.done_set())  # here or fleet-wide
        self.skip_until: dict[int, float] = {}  # held by others: not asked about again before (monotonic)
        self.refused: set[int] = set()  # the generator could not take them (too long): not claimed again
        self.held: set[int] = set()  # the quality gate held their answers back: not tried again in this run
        self.held_by_reason: Counter[str] = Counter()
        self.lost_in_flight: dict[int, LostClaim] = {}  # taken over while generating here
        self.unconfirmed: dict[int, tuple[dict[str, Any], Completion, GenResult]] = {}
        self.lost_kept = 0
        self.fed = 0
        self.done_run = 0
        self.tokens_run = 0
        self.started = time.monotonic()
        self.last_flush_try = 0.0
        self.next_round_at = 0.0
        self.idle_rounds = 0
        self.last_done_read = time.monotonic()
        self.last_full_read = float("-inf")
        self.view_stale = False
        self.fleet_done = -1
        self.status = ("", "")  # (state, reason) last reported
        self.rng = random.Random()

    def set_status(self, state: str, reason: str) -> None:
        if (state, reason) != self.status:
            self.status = (state, reason)
            self.report(StatusChanged(state, reason))

    def remaining(self) -> list[int]:
        busy = self.in_flight | self.refused | self.held | set(self.unconfirmed) | set(self.pool)
        return [i for i in self.order if i not in self.completed and i not in busy]

    # -- what is finished fleet-wide ----------------------------------------------------------------
    def refresh_done(self, *, full: bool) -> None:
        now = time.monotonic()
        if full:
            self.completed |= self.queue.completed()
            self.last_full_read = now
        else:
            self.completed |= self.queue.completed_recent(now - self.last_done_read + DONE_OVERLAP_S)
        self.last_done_read = now
        self.fleet_progress()

    def fleet_progress(self) -> None:
        count = len(self.completed & self.items.keys())
        if count != self.fleet_done:
            self.fleet_done = count
            self.report(FleetProgress(count, len(self.items)))

    # -- feed: claim just in time ------------------------------------------------------------------
    def feed(self) -> GenItem | Wait | None:
        if (self.drain is not None and self.drain.cancelled) or (
                self.config.limit is not None and self.fed >= self.config.limit):
            return None
        if self.config.pause_check is not None:
            reason = self.config.pause_check()
            if reason:
                self.set_status("paused", reason)
                return WAIT
            if self.status[0] == "paused":
                self.set_status("running", "")
        self.absorb_lost()
        self.retry_unconfirmed()
        while True:
            if self.pool and self.keeper.state(self.pool[0]) != OWNED and time.monotonic() < self.next_round_at:
                return WAIT  # the server could not confirm it a moment ago: ask again later
            if not self.pool:
                if time.monotonic() < self.next_round_at:
                    return WAIT
                try:
                    got = self._claim_round()
                except InfluxError as err:
                    self.next_round_at = time.monotonic() + self.config.retry_s
                    self.set_status("waiting", _server_reason(err))
                    return WAIT
                if got is None:
                    return None
                if not got:
                    return WAIT
                self.set_status("running", "")
            idx = self.pool.pop(0)
            if self.keeper.state(idx) != OWNED:  # the lease ran out while it waited: still ours?
                try:
                    verdict = self.keeper.confirm([idx])[idx]
                except InfluxError as err:
                    self.pool.insert(0, idx)
                    self.next_round_at = time.monotonic() + self.config.retry_s
                    self.set_status("waiting", _server_reason(err))
                    return WAIT
                if verdict != OWNED:
                    self.note_lost(LostClaim(idx, verdict, self.keeper.cause(idx)), generated=False)
                    continue
            self.in_flight.add(idx)
            if self.status[0] == "waiting":
                self.set_status("running", "")
            if self.fed == 0:
                self.started = time.monotonic()  # rates count generation time, not model loading
            self.fed += 1
            item = self.items[idx]
            messages = self.to_messages(item)
            self.report(AnswerStarted(idx, item.seed_id, item.domain, item.prompt, 0))
            return GenItem(idx, messages)

    def _claim_round(self) -> list[int] | None:
        now = time.monotonic()
        if now - self.last_full_read >= self.config.full_refresh_s:
            self.refresh_done(full=True)
        elif self.view_stale or now - self.last_done_read >= self.config.done_poll_s:
            self.refresh_done(full=now - self.last_done_read > INCREMENTAL_MAX_S)
        self.view_stale = False
        left = self.remaining()
        if not left:
            return None
        want = self.batch_size
        if self.config.limit is not None:
            want = min(want, self.config.limit - self.fed)
        ready = [i for i in left if self.skip_until.get(i, 0.0) <= now]
        # More candidates than wanted: when the queue looks before claiming, it learns about all of them in one
        # read (done ones, held ones); when it claims at once, it takes the first `want`.
        if ready:
            candidates = ready[:CANDIDATES]
        else:  # all left is held by others: ask again about those whose holders may be done or gone
            candidates = sorted(left, key=lambda i: self.skip_until.get(i, 0.0))[:CANDIDATES]
        sent = self.keeper.clocks()
        outcome = self.queue.claim_round(candidates, want)
        new_done = outcome.done - self.completed
        self.completed |= outcome.done
        if new_done:
            self.fleet_progress()
        for i, seconds in outcome.taken.items():
            self.skip_until[i] = now + max(seconds, 1.0)
        if outcome.won:
            self.keeper.hold(outcome.won, sent)
            self.pool.extend(outcome.won)
            self.idle_rounds = 0
            return list(outcome.won)
        if 2 * len(new_done) > len(candidates) and now - self.last_done_read >= STALE_VIEW_REFRESH_S:
            self.view_stale = True  # read what was finished meanwhile before the next round
            self.next_round_at = 0.0
        elif len(ready) > len(candidates):
            self.next_round_at = 0.0  # more to look at: the generator asks again shortly
        else:
            self._idle(now)
        return []

    def _idle(self, now: float) -> None:
        """Nothing claimable: wait before the next round, longer each time (1, 2, 4 ... s, up to idle_max_s),
        with jitter so that idle workers do not ask in step. (Not shortened to the end of the leases we saw: a
        live holder renews them; a crashed one's items are picked up within idle_max_s of their lease end.)"""
        self.idle_rounds += 1
        backoff = min(self.config.idle_max_s, 2.0 ** min(self.idle_rounds - 1, 20))
        self.next_round_at = now + max(1.0, min(self.config.idle_max_s, backoff * self.rng.uniform(0.75, 1.25)))

    # -- lost items ----------------------------------------------------------------------------------
    def absorb_lost(self) -> None:
        """Items the lease keeper found taken over or done elsewhere."""
        for lost in self.keeper.take_lost():
            i = lost.idx
            if i in self.pool:
                self.pool.remove(i)
                self.note_lost(lost, generated=False)
            elif i in self.in_flight:
                self.lost_in_flight[i] = lost  # its answer goes aside when it comes
            elif i in self.unconfirmed:
                record, _completion, _result = self.unconfirmed.pop(i)
                self.keep_aside(record, lost)
            # else: finished here already; the outbox asks the server before reporting it

    def note_lost(self, lost: LostClaim, *, generated: bool) -> None:
        self.keeper.drop([lost.idx])
        if lost.verdict == DONE:
            self.completed.add(lost.idx)
        if lost.verdict == DONE:
            head = f"Prompt {lost.idx} was finished by another volunteer"
        else:
            when = {PAUSED: "while this computer was asleep or paused",
                    UNREACHABLE: "while the server could not be reached"}.get(
                lost.cause, "after this computer's claim on it ran out")
            head = f"Another volunteer took over prompt {lost.idx} {when}"
        tail = (f"; the answer written here is kept in {self.lost_path.name} and not reported" if generated
                else "; it was not started here")
        self.report(ClaimLost(head + tail + ".", lost.idx, lost.verdict, lost.cause, generated))

    def keep_aside(self, record: dict[str, Any], lost: LostClaim | None) -> None:
        """An answer that must not be reported (lost) or not yet (unconfirmed): one line in the lost file."""
        status = {"lost": lost.verdict, "cause": lost.cause} if lost is not None else {"lost": "unconfirmed"}
        self.journal.keep_aside(record, status)
        if lost is not None:
            self.lost_kept += 1
            self.note_lost(lost, generated=True)

    def retry_unconfirmed(self) -> None:
        """Answers finished while the server could not confirm the claim: accept those the keeper has since
        confirmed (it verifies them every round; the ones it finds lost arrive through absorb_lost)."""
        for idx in [i for i in self.unconfirmed if self.keeper.state(i) == OWNED]:
            record, completion, result = self.unconfirmed.pop(idx)
            self.accept(record, completion, result)

    def settle_unconfirmed(self) -> bool:
        """At the end of a run: ask the server once more about each unconfirmed answer. True when none is left."""
        self.absorb_lost()
        self.retry_unconfirmed()
        if not self.unconfirmed:
            return True
        try:
            verdicts = self.keeper.confirm(list(self.unconfirmed))
        except InfluxError:
            return False
        for idx, verdict in verdicts.items():
            record, completion, result = self.unconfirmed.pop(idx)
            if verdict == OWNED:
                self.accept(record, completion, result)
            else:
                self.keep_aside(record, LostClaim(idx, verdict, self.keeper.cause(idx)))
        return True

    # -- results -----------------------------------------------------------------------------------
    def on_result(self, result: GenResult) -> None:
        idx = result.key
        item = self.items[idx]
        self.in_flight.discard(idx)
        if result.refused:
            self.refused.add(idx)
            self.fed -= 1  # `limit` counts answers, not refusals
            self.journal.skip(idx, result.refused)
            self.release_quietly([idx])
            self.report(Notice(f"Skipped prompt {idx} ({item.seed_id}): {result.refused}"))
            return
        completion = Completion(
            kind=self.config.kind, idx=item.idx, worker=self.config.worker, seed_id=item.seed_id,
            domain=item.domain, voice=item.voice, region=item.region, gen_time=round(result.seconds, 3),
            chars=len(result.text), tokens=result.tokens, truncated=result.truncated, model=self.model_name,
            time_ns=time.time_ns(), instance=self.instance,
        )
        record: dict[str, Any] = {"idx": item.idx, "seed_id": item.seed_id, "domain": item.domain}
        record.update({"voice": item.voice} if self.config.kind == GOLD else {"region": item.region})
        record.update({
            "prompt": item.prompt, "response": result.text, "gen_time": completion.gen_time,
            "model": self.model_name, "worker": self.config.worker, "tokens": result.tokens,
            "prompt_tokens": result.prompt_tokens, "truncated": result.truncated,
            "temperature": self.config.sampling.temperature, "max_tokens": self.config.sampling.max_tokens,
            "repetition_penalty": self.config.sampling.repetition_penalty,
            "repetition_context": self.config.sampling.repetition_context,
            "stop_loops": self.config.sampling.stop_loops, "stopped_loop": result.stopped_loop,
            "instance": self.instance,
        })
        if self.gate is not None:
            quality = self.gate.check(item.prompt, result.text, truncated=result.truncated,
                                      looped=result.stopped_loop)
            if not quality.passed:
                self.hold(item, record, quality.reasons, quality.measures, completion.time_ns)
                return
        self.absorb_lost()
        lost = self.lost_in_flight.pop(idx, None)
        if lost is None and self.keeper.state(idx) != OWNED:  # the lease ran out meanwhile: still ours?
            try:
                verdict = self.keeper.confirm([idx])[idx]
            except InfluxError:
                self.unconfirmed[idx] = (record, completion, result)
                self.keep_aside(record, None)  # on disk, marked, until the server can say
                self.report(Notice(f"Prompt {idx} finished after this computer's claim on it ran out, while the "
                                   "server could not be reached: its answer is kept aside until the server "
                                   "confirms that no one else took the prompt over."))
                return
            if verdict != OWNED:
                lost = LostClaim(idx, verdict, self.keeper.cause(idx))
        if lost is not None:
            self.keep_aside(record, lost)
            return
        self.accept(record, completion, result)

    def hold(self, item: PromptItem, record: dict[str, Any], reasons: tuple[str, ...],
             measures: dict[str, float], time_ns: int) -> None:
        """An answer the quality gate refused: on disk in the held file, noted as skipped, never done or
        reported; its claim is given up so that another worker (or model) may try the prompt. Dated by its own
        `time_ns`, so the Contribute page's totals keep it in its day after the prompt is answered again."""
        idx = item.idx
        self.journal.hold(record, {"held": list(reasons), "quality": measures, "time_ns": time_ns})
        self.journal.skip(idx, "quality: " + "; ".join(REASON_TEXT.get(r, r) for r in reasons))
        self.held.add(idx)
        self.held_by_reason.update(reasons)
        lost = self.lost_in_flight.pop(idx, None)
        if lost is not None:  # not ours any more anyway: nothing to release
            self.keeper.drop([idx])
            if lost.verdict == DONE:
                self.completed.add(idx)
        else:
            self.release_quietly([idx])
        self.report(AnswerHeld(idx, item.seed_id, tuple(reasons), len(self.held), dict(self.held_by_reason)))

    def accept(self, record: dict[str, Any], completion: Completion, result: GenResult) -> None:
        item = self.items[completion.idx]
        self.journal.record(record, completion)  # on disk before anything else happens
        self.completed.add(item.idx)
        self.done_run += 1
        self.tokens_run += result.tokens
        self.report(ResponseDone(item.idx, item.seed_id, item.domain, item.voice, item.prompt, result.text,
                                 result.tokens, result.seconds, result.truncated))
        elapsed = max(time.monotonic() - self.started, 1e-6)
        self.report(Rates(self.done_run, self.journal.count(), self.done_run * 3600 / elapsed,
                          self.tokens_run / elapsed))
        # Reported at once, not batched: a finished answer that is not on the server yet could be taken over
        # and done again if this computer slept before sending it (its claim is not renewed while asleep).
        self.flush(force=True)
        if self.done_run % self.config.progress_every == 0:
            self.send_progress()

    def flush(self, *, force: bool = False) -> bool:
        """Send queued reports. Returns True when the outbox is empty.

        Reports are idempotent. Each keeps the time its answer finished, so a resend overwrites the same point.
        An answer whose claim is surely still ours is reported as is: no one else can have reported it. Any
        other (from an earlier run, after an outage, or a twin's sharing this journal) is first verified with
        the server (`verify` claims it again if free): done there already (by anyone) -> marked reported here
        and not written again; held by someone else -> kept in the outbox for now; ours -> reported.
        """
        now = time.monotonic()
        if not force and now - self.last_flush_try < self.config.retry_s:
            return False
        self.last_flush_try = now
        pending = self.journal.outbox()
        if not pending:
            return True
        sent: list[int] = []
        settled = 0  # left the outbox without a report from here (done on the server already)
        try:
            send = [c for c in pending if self.keeper.state(c.idx) == OWNED]
            unsure = [c for c in pending if c not in send]
            held_elsewhere = 0
            if unsure:
                verdicts = self.queue.verify([c.idx for c in unsure])
                already = sorted(i for i, v in verdicts.items() if v == DONE)
                if already:
                    self.journal.mark_reported(already)
                    self.keeper.drop(already)
                    settled = len(already)
                send += [c for c in unsure if verdicts.get(c.idx) == OWNED]
                held_elsewhere = sum(1 for v in verdicts.values() if v not in (OWNED, DONE))
            for start in range(0, len(send), 500):
                chunk = send[start:start + 500]
                self.queue.report(chunk)
                idxs = [c.idx for c in chunk]
                self.journal.mark_reported(idxs)
                self.keeper.drop(idxs)
                sent += idxs
        except InfluxError as err:
            self.set_status("waiting" if not self.in_flight else "running", _server_reason(err))
            return False
        finally:
            if sent:
                self.report(ReportsSent(tuple(sent), len(pending) - len(sent) - settled))
        return held_elsewhere == 0

    def send_progress(self) -> None:
        try:
            self.queue.progress(self.journal.count(), len(self.items))
        except InfluxError:
            pass  # progress is advisory; the next one will carry the same totals

    def release_quietly(self, idxs: Iterable[int]) -> None:
        idxs = list(idxs)
        self.keeper.drop(idxs)
        if not idxs:
            return
        try:
            self.queue.release(idxs)
        except LemError:
            pass  # unreleased claims simply lapse with their lease

    def on_tick(self) -> None:
        self.keeper.tick_inline()
        self.absorb_lost()
        if self.unconfirmed:
            self.retry_unconfirmed()
        self.flush()


def _server_reason(err: InfluxError) -> str:
    if isinstance(err, ServerUnreachable):
        return SERVER_DOWN
    return f"{str(err).rstrip('.')}. Retrying; finished answers are saved locally and queued"


def _counts(queue: FencedQueue) -> RequestCounts:
    stats = getattr(queue, "stats", None)
    value = stats() if callable(stats) else None
    return value if isinstance(value, RequestCounts) else RequestCounts()


def run_contribution(config: ContributeConfig, queue: WorkQueue, generator: Generator, *,
                     report: Report = no_report, cancel: CancelToken | None = None,
                     drain: CancelToken | None = None) -> ContributeResult:
    """Generate until the work runs out, `limit` is reached, `drain` is set (finish in-flight answers,
    then stop) or `cancel` is set (stop now; in-flight answers are dropped and their claims released).

    Server trouble during a run (unreachable, restarting, even a rejected token) makes the worker wait and
    retry while showing the reason; finished answers stay in the outbox. Callers that want a wrong address
    or token to fail at once check the queue before starting (lemcore.contribute.setup.check_queue).
    """
    config.validate()
    output = Path(config.output) if config.output else default_output(config.kind, config.worker)
    items, dataset = load_work(config, report)
    queue_set = getattr(queue, "prompt_set", "")
    if isinstance(queue_set, str) and queue_set and queue_set != dataset:
        raise ConfigError(f"The work queue was opened for another prompt set than {prompt_file(config.prompts)} "
                          f"(queue {queue_set[:12]}, file {dataset[:12]}): open it for the same prompt file "
                          "(lemcore.contribute.setup.open_queue does).")
    journal = Journal(output, config.kind, dataset)
    fenced = as_fenced(queue)
    keeper = LeaseKeeper(fenced)
    before = _counts(fenced)
    if cancel is None:
        cancel = CancelToken()  # generators sleep on it between polls of an empty feed
    worker = _Worker(config, fenced, keeper, journal, items, generator.name, generator.batch_size, report, drain)
    try:
        worker.flush(force=True)
        try:
            worker.refresh_done(full=True)
        except InfluxError as err:
            worker.set_status("waiting", _server_reason(err))
        remaining = len(worker.remaining())
        report(Started(config.kind, config.worker, worker.model_name, len(items),
                       len(worker.completed & set(worker.items)), journal.count(), remaining))
        sample = [worker.to_messages(items[i]) for i in range(min(2, len(items)))]
        generator.set_shared_prefix(sample)
        keeper.start()
        reason = "done"
        try:
            generator.run(worker.feed, config.sampling, worker.on_result, report=report, cancel=cancel,
                          on_tick=worker.on_tick)
            if drain is not None and drain.cancelled:
                reason = "stopped after finishing the answers in progress"
            elif config.limit is not None and worker.fed >= config.limit:
                reason = "limit reached"
        except BaseException:
            keeper.stop()
            worker.release_quietly(worker.in_flight | set(worker.pool))
            raise
        worker.release_quietly(worker.pool)
        worker.pool.clear()
        # Last chance to deliver queued reports (the keeper still renews their claims meanwhile).
        deadline = time.monotonic() + 2 * config.retry_s
        while True:
            settled = worker.settle_unconfirmed()
            if worker.flush(force=True) and settled or time.monotonic() >= deadline or cancel.wait(0.5):
                break
        keeper.stop()
        if worker.unconfirmed:
            report(Notice(f"{len(worker.unconfirmed)} answers stay in {worker.lost_path.name}: the server could "
                          "not confirm that no one else took their prompts over. They are not reported."))
        worker.send_progress()
        unreported = len(journal.outbox())
        spent = _counts(fenced) - before
        result = ContributeResult(worker.done_run, journal.count(), len(worker.remaining()), unreported, output,
                                  lost=worker.lost_kept + len(worker.unconfirmed), server_requests=spent.requests,
                                  server_bytes=spent.bytes_sent + spent.bytes_received, held=len(worker.held),
                                  held_by_reason=dict(worker.held_by_reason))
        report(Finished(worker.done_run, reason, unreported, held=len(worker.held)))
        return result
    finally:
        keeper.stop()
        journal.close()
