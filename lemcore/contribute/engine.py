"""The volunteer's job: generate gold (sandwich) or expansion answers, duplicate-free, nothing lost.

`run_contribution` claims prompts from a WorkQueue just in time, generates them in batches, and for every
finished answer writes the JSONL line and the journal entry before reporting it (lemcore.contribute.journal). When the
server is unreachable the worker keeps what it has, shows why it waits, and sends the queued reports when
the server is back; it never starts over from index 0.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lemcore.contribute.events import (
    Finished,
    FleetProgress,
    Notice,
    Rates,
    ResponseDone,
    Started,
    StatusChanged,
)
from lemcore.contribute.journal import Journal
from lemcore.contribute.kernel import build_sandwich, default_kernel_paths, load_axioms, load_kernel_text
from lemcore.contribute.queue.base import GOLD, Completion, WorkQueue
from lemcore.errors import ConfigError, InfluxError, ServerUnreachable
from lemcore.generate.protocol import WAIT, Generator, GenItem, GenResult, Messages, Sampling, Wait
from lemcore.jobs import CancelToken, Report, no_report
from lemcore.prompts import BadLine, PromptItem, load_expansion_prompts, load_gold_prompts, prompt_set_hash
from lemcore.resources import seeds_dir
from lemcore.settings import data_dir

SERVER_DOWN = "Server unreachable: results are saved locally and queued; retrying"


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

    def validate(self) -> None:
        if self.kind not in ("gold", "expansion"):
            raise ConfigError(f"unknown job {self.kind!r}: use gold or expansion.")
        if not self.worker.strip():
            raise ConfigError("worker name is empty: set one in Settings or pass --worker.")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("limit must be at least 1.")
        self.sampling.validate()


@dataclass(frozen=True)
class ContributeResult:
    done_this_run: int
    done_local_total: int
    remaining: int
    unreported: int
    output: Path


def default_output(kind: str, worker: str) -> Path:
    name = "gold" if kind == GOLD else "expand"
    return data_dir() / "output" / f"{name}-{worker}.jsonl"


def load_work(config: ContributeConfig, report: Report) -> tuple[list[PromptItem], str]:
    path = Path(config.prompts) if config.prompts else seeds_dir() / "gold-prompts.jsonl"
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


class _Worker:
    """State of one run: the claim pool, in-flight items, outbox flushing and rates."""

    def __init__(self, config: ContributeConfig, queue: WorkQueue, journal: Journal, items: list[PromptItem],
                 model_name: str, batch_size: int, report: Report, cancel: CancelToken | None,
                 drain: CancelToken | None) -> None:
        self.config, self.queue, self.journal, self.report = config, queue, journal, report
        self.cancel, self.drain = cancel, drain
        self.model_name = model_name
        self.batch_size = batch_size  # prompts claimed per round: what the generator keeps in flight
        self.items = {it.idx: it for it in items}
        self.order = list(self.items)
        random.Random(config.worker).shuffle(self.order)  # workers start in different places
        self.to_messages = build_messages(config)
        self.pool: list[int] = []
        self.in_flight: set[int] = set()
        self.completed: set[int] = set(journal.done_set())
        self.skip: set[int] = set()
        self.fed = 0
        self.done_run = 0
        self.tokens_run = 0
        self.started = time.monotonic()
        self.last_renew = time.monotonic()
        self.last_flush_try = 0.0
        self.retry_at = 0.0
        self.status = ("", "")  # (state, reason) last reported
        self.rounds = 0

    def set_status(self, state: str, reason: str) -> None:
        if (state, reason) != self.status:
            self.status = (state, reason)
            self.report(StatusChanged(state, reason))

    def remaining(self) -> list[int]:
        return [i for i in self.order if i not in self.completed and i not in self.in_flight]

    def refresh_completed(self) -> None:
        self.completed |= self.queue.completed()
        self.skip.clear()
        self.report(FleetProgress(len({i for i in self.completed if i in self.items}), len(self.items)))

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
        if not self.pool:
            if time.monotonic() < self.retry_at:
                return WAIT
            try:
                got = self._claim_round()
            except InfluxError as err:
                self.retry_at = time.monotonic() + self.config.retry_s
                self.set_status("waiting", _server_reason(err))
                return WAIT
            if got is None:
                return None
            if not got:
                return WAIT
            self.set_status("running", "")
        idx = self.pool.pop(0)
        self.in_flight.add(idx)
        if self.fed == 0:
            self.started = time.monotonic()  # rates count generation time, not model loading
        self.fed += 1
        return GenItem(idx, self.to_messages(self.items[idx]))

    def _claim_round(self) -> list[int] | None:
        if self.rounds % 10 == 0:
            self.refresh_completed()
        self.rounds += 1
        others = self.queue.claimed_by_others()
        left = self.remaining()
        if not left:
            return None
        want = self.batch_size
        if self.config.limit is not None:
            want = min(want, self.config.limit - self.fed)
        candidates = [i for i in left if i not in others and i not in self.skip][:want]
        if not candidates:
            self.refresh_completed()  # everything left is claimed by others: wait for their leases
            return []
        won = self.queue.claim(candidates)
        self.skip.update(set(candidates) - set(won))
        self.pool.extend(won)
        if won:
            self.last_renew = time.monotonic()
        return won

    # -- results -----------------------------------------------------------------------------------
    def on_result(self, result: GenResult) -> None:
        item = self.items[result.key]
        completion = Completion(
            kind=self.config.kind, idx=item.idx, worker=self.config.worker, seed_id=item.seed_id,
            domain=item.domain, voice=item.voice, region=item.region, gen_time=round(result.seconds, 3),
            chars=len(result.text), tokens=result.tokens, truncated=result.truncated, model=self.model_name,
            time_ns=time.time_ns(),
        )
        record: dict[str, Any] = {"idx": item.idx, "seed_id": item.seed_id, "domain": item.domain}
        record.update({"voice": item.voice} if self.config.kind == GOLD else {"region": item.region})
        record.update({
            "prompt": item.prompt, "response": result.text, "gen_time": completion.gen_time,
            "model": self.model_name, "worker": self.config.worker, "tokens": result.tokens,
            "prompt_tokens": result.prompt_tokens, "truncated": result.truncated,
            "temperature": self.config.sampling.temperature, "max_tokens": self.config.sampling.max_tokens,
        })
        self.journal.record(record, completion)  # on disk before anything else happens
        self.in_flight.discard(item.idx)
        self.completed.add(item.idx)
        self.done_run += 1
        self.tokens_run += result.tokens
        self.report(ResponseDone(item.idx, item.seed_id, item.domain, item.voice, item.prompt, result.text,
                                 result.tokens, result.seconds, result.truncated))
        elapsed = max(time.monotonic() - self.started, 1e-6)
        self.report(Rates(self.done_run, self.journal.count(), self.done_run * 3600 / elapsed,
                          self.tokens_run / elapsed))
        self.flush(force=True)
        if self.done_run % self.config.progress_every == 0:
            self.send_progress()

    def flush(self, *, force: bool = False) -> bool:
        """Send queued reports. Returns True when the outbox is empty."""
        now = time.monotonic()
        if not force and now - self.last_flush_try < self.config.retry_s:
            return False
        self.last_flush_try = now
        pending = self.journal.outbox()
        if not pending:
            return True
        try:
            for start in range(0, len(pending), 500):
                chunk = pending[start:start + 500]
                self.queue.report(chunk)
                self.journal.mark_reported([c.idx for c in chunk])
        except InfluxError as err:
            self.set_status("waiting" if not self.in_flight else "running", _server_reason(err))
            return False
        return True

    def send_progress(self) -> None:
        try:
            self.queue.progress(self.journal.count(), len(self.items))
        except InfluxError:
            pass  # progress is advisory; the next one will carry the same totals

    def on_tick(self) -> None:
        now = time.monotonic()
        if self.in_flight and now - self.last_renew >= self.queue.lease_s / 3:
            try:
                self.queue.renew(self.in_flight)
                self.last_renew = now
            except InfluxError as err:
                self.set_status("running", _server_reason(err))
        self.flush()


def _server_reason(err: InfluxError) -> str:
    if isinstance(err, ServerUnreachable):
        return SERVER_DOWN
    return f"{str(err).rstrip('.')}. Retrying; finished answers are saved locally and queued"


def run_contribution(config: ContributeConfig, queue: WorkQueue, generator: Generator, *,
                     report: Report = no_report, cancel: CancelToken | None = None,
                     drain: CancelToken | None = None) -> ContributeResult:
    """Generate until the work runs out, `limit` is reached, `drain` is set (finish in-flight answers,
    then stop) or `cancel` is set (stop now; in-flight answers are dropped and their leases expire).

    Server trouble during a run (unreachable, restarting, even a rejected token) makes the worker wait and
    retry while showing the reason; finished answers stay in the outbox. Callers that want a wrong address
    or token to fail at once check the queue before starting (lemcore.contribute.setup.check_queue).
    """
    config.validate()
    output = Path(config.output) if config.output else default_output(config.kind, config.worker)
    items, dataset = load_work(config, report)
    journal = Journal(output, config.kind, dataset)
    worker = _Worker(config, queue, journal, items, generator.name, generator.batch_size, report, cancel, drain)
    try:
        worker.flush(force=True)
        try:
            worker.refresh_completed()
        except InfluxError as err:
            worker.set_status("waiting", _server_reason(err))
        remaining = len(worker.remaining())
        report(Started(config.kind, config.worker, worker.model_name, len(items),
                       len(worker.completed & set(worker.items)), journal.count(), remaining))
        sample = [worker.to_messages(items[i]) for i in range(min(2, len(items)))]
        generator.set_shared_prefix(sample)
        reason = "done"
        try:
            generator.run(worker.feed, config.sampling, worker.on_result, report=report, cancel=cancel,
                          on_tick=worker.on_tick)
            if drain is not None and drain.cancelled:
                reason = "stopped after finishing the answers in progress"
            elif config.limit is not None and worker.fed >= config.limit:
                reason = "limit reached"
        except BaseException:
            queue.release(worker.in_flight | set(worker.pool))
            raise
        queue.release(set(worker.pool))
        # Last chance to deliver queued reports before returning.
        deadline = time.monotonic() + 2 * config.retry_s
        while not worker.flush(force=True) and time.monotonic() < deadline:
            if cancel is not None and cancel.wait(0.5):
                break
        worker.send_progress()
        unreported = len(journal.outbox())
        result = ContributeResult(worker.done_run, journal.count(), len(worker.remaining()), unreported, output)
        report(Finished(worker.done_run, reason, unreported))
        return result
    finally:
        journal.close()
