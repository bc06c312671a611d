"""What the Contribute page says about each answer and about the session, in plain Python (no Qt).

`AnswerTracker` follows every answer from the moment it goes to the model: reading the question (the prefill,
with progress and a time estimate), writing (tokens so far), checked, saved on this computer, sent to the lab; or
held back by the quality check, or set aside by a pause. `Session` keeps one session's figures across Pause and
Resume: answers, tokens, the time spent contributing, answers held back per reason, pauses, and the points the
charts draw. The page feeds both the engine's events with the time they arrived and shows what they say; tests
can drive them with made-up times.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lemcore.quality import REASON_TEXT

READING, WRITING, CHECKING, SAVED, SENT, HELD, SET_ASIDE = (
    "reading", "writing", "checking", "saved", "sent", "held", "set aside")
IN_FLIGHT = (READING, WRITING)
FINISHED = (SAVED, SENT, HELD)
RECENT_KEPT = 6  # finished answers listed under the one shown
MILESTONES = (10, 25, 50, 100, 250, 500)  # answers this session (then every 500)


def duration_text(seconds: float) -> str:
    """'a few seconds', 'about 40 s', 'about 3 min', 'about 1 h 20 min'."""
    if seconds < 5:
        return "a few seconds"
    if seconds < 90:
        return f"about {int(round(seconds / 5) * 5)} s"
    minutes = int(round(seconds / 60))
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60:02d} min"


def reasons_text(reasons: Iterable[str]) -> str:
    return "; ".join(REASON_TEXT.get(r, r.replace("_", " ")) for r in reasons)


def held_summary(total: int, by_reason: Mapping[str, int]) -> str:
    """'3 answers held back this session (kept apart on this computer, never sent): repeats itself in a loop (2),
    cut off at the token limit (1).' `by_reason` counts each answer once, under its first reason (the check can
    find several), so the parts add up to `total`."""
    if total <= 0:
        return ""
    parts = ", ".join(f"{REASON_TEXT.get(r, r.replace('_', ' '))} ({n})"
                      for r, n in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])) if n > 0)
    noun = "answer" if total == 1 else "answers"
    return (f"{total} {noun} held back this session (kept apart on this computer, never sent)"
            + (f": {parts}." if parts else "."))


def spent_text(seconds: float) -> str:
    """Time spent, for the totals: '0 min', '< 1 min', '25 min', '3 h 05 min'."""
    if seconds <= 0:
        return "0 min"
    if seconds < 60:
        return "< 1 min"
    minutes = int(seconds // 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


@dataclass
class Answer:
    key: Any
    prompt: str = ""
    domain: str = ""
    seed_id: str = ""
    stage: str = READING
    history: list[str] = field(default_factory=list)  # every stage it went through, in order
    prompt_tokens: int = 0
    read_done: int = 0
    read_from: int = 0  # tokens a shared-prefix cache held when reading began
    read_at: float | None = None  # when reading began (monotonic seconds)
    read_last: float | None = None  # the last reading progress
    write_at: float | None = None  # reading done
    steps_at_write: int = 0  # the tracker's decoding steps when writing began
    tokens: int = 0  # written so far (exact while its text streams, else estimated from the batch's steps)
    text: str = ""
    streamed: bool = False  # its text has been streamed
    finished_at: float | None = None
    tokens_per_s: float | None = None  # its writing speed, once saved
    reasons: tuple[str, ...] = ()  # held back: the quality check's reasons

    def move(self, stage: str) -> None:
        if not self.history or self.history[-1] != stage:
            self.history.append(stage)
        self.stage = stage


class AnswerTracker:
    """Every answer of one run, keyed by the engine's item key (the prompt's index)."""

    def __init__(self, *, max_tokens: int = 512, reporting: bool = False) -> None:
        self.max_tokens = max(1, max_tokens)
        self.reporting = reporting  # a server takes the answers: "sent" follows "saved"
        self.answers: dict[Any, Answer] = {}
        self.featured_key: Any = None
        self.steps = 0  # decoding steps seen in the streamed text (every answer in the batch gets one per step)
        self._stream_key: Any = None
        self._step_samples: deque[tuple[float, int]] = deque(maxlen=40)
        self.read_tokens = 0  # prompt tokens read this session, and the seconds it took (an estimate's base)
        self.read_seconds = 0.0
        self.chunk: tuple[int, float] | None = None  # the last reading chunk: tokens, seconds
        # Reading chunks seen: (first token, end, seconds). A chunk further into the prompt takes longer (each
        # token attends to all before it), so the estimate fits time = a * tokens + b * (end^2 - first^2) / 2.
        self.chunks: deque[tuple[int, int, float]] = deque(maxlen=64)
        self.lengths: deque[int] = deque(maxlen=50)  # tokens of recent saved answers

    # -- events -----------------------------------------------------------------------------------
    def _get(self, key: Any) -> Answer:
        answer = self.answers.get(key)
        if answer is None:
            answer = self.answers[key] = Answer(key)
        return answer

    def _feature_new(self, key: Any) -> None:
        """A new answer begins: show it unless the one shown is still being written with visible text."""
        shown = self.answers.get(self.featured_key)
        if shown is None or shown.stage not in IN_FLIGHT or not shown.streamed:
            self.featured_key = key

    def started(self, key: Any, prompt: str, domain: str, seed_id: str, prompt_tokens: int, now: float) -> Answer:
        answer = self._get(key)
        answer.prompt, answer.domain, answer.seed_id = prompt, domain, seed_id
        answer.prompt_tokens = prompt_tokens or answer.prompt_tokens
        if not answer.history:
            answer.move(READING)
        self._feature_new(key)
        return answer

    def reading(self, key: Any, done: int, total: int, now: float) -> Answer:
        answer = self._get(key)
        new = answer.read_at is None
        answer.prompt_tokens = total
        if new:
            answer.read_at = answer.read_last = now
            answer.read_from = answer.read_done = done
            if answer.stage not in IN_FLIGHT or not answer.history:
                answer.move(READING)
            self._feature_new(key)
        else:
            assert answer.read_last is not None
            tokens, seconds = done - answer.read_done, now - answer.read_last
            if tokens > 0 and seconds > 0:
                self.read_tokens += tokens
                self.read_seconds += seconds
                self.chunk = (tokens, seconds)
                self.chunks.append((answer.read_done, done, seconds))
            answer.read_done, answer.read_last = done, now
        answer.read_done = done
        if done >= total and answer.stage == READING:
            answer.write_at = now
            answer.steps_at_write = self.steps
            answer.move(WRITING)
        return answer

    def writing(self, key: Any, text: str, tokens: int, now: float) -> Answer:
        answer = self._get(key)
        if answer.stage == READING or not answer.history:
            answer.move(WRITING)
        if answer.write_at is None:
            answer.write_at = now
            answer.steps_at_write = self.steps
        if key == self._stream_key and tokens > answer.tokens:
            self.steps += tokens - answer.tokens
        self._stream_key = key
        self._step_samples.append((now, self.steps))
        answer.tokens, answer.text, answer.streamed = tokens, text, True
        self.featured_key = key
        return answer

    def saved(self, key: Any, tokens: int, seconds: float, now: float, *, prompt: str = "", domain: str = "",
              seed_id: str = "", text: str = "") -> Answer:
        answer = self._get(key)
        answer.prompt = answer.prompt or prompt
        answer.domain = answer.domain or domain
        answer.seed_id = answer.seed_id or seed_id
        if text:
            answer.text = text
        answer.tokens = tokens
        answer.finished_at = now
        writing = (now - answer.write_at) if answer.write_at is not None else seconds
        answer.tokens_per_s = tokens / writing if writing > 0 and tokens > 0 else None
        answer.move(CHECKING)
        answer.move(SAVED)
        self.lengths.append(tokens)
        if self.featured_key is None:
            self.featured_key = key
        self._prune()
        return answer

    def held(self, key: Any, reasons: tuple[str, ...], now: float) -> Answer:
        answer = self._get(key)
        answer.reasons = reasons
        answer.finished_at = now
        answer.move(CHECKING)
        answer.move(HELD)
        self._prune()
        return answer

    def sent(self, keys: Iterable[Any]) -> list[Answer]:
        """The server has these answers. (Offline, the engine reports to the local queue: nothing is sent.)"""
        if not self.reporting:
            return []
        moved = []
        for key in keys:
            answer = self.answers.get(key)
            if answer is not None and answer.stage == SAVED:
                answer.move(SENT)
                moved.append(answer)
        return moved

    def set_aside(self, now: float) -> list[Answer]:
        """A pause dropped the answers in flight: they are written again after Resume."""
        dropped = [a for a in self.answers.values() if a.stage in IN_FLIGHT]
        for answer in dropped:
            answer.move(SET_ASIDE)
            answer.finished_at = now
        return dropped

    def _prune(self) -> None:
        done = [k for k, a in self.answers.items() if a.stage not in IN_FLIGHT and k != self.featured_key]
        for key in done[:-RECENT_KEPT]:
            del self.answers[key]

    # -- what to show -------------------------------------------------------------------------------
    @property
    def featured(self) -> Answer | None:
        return self.answers.get(self.featured_key)

    def in_flight(self) -> list[Answer]:
        return [a for a in self.answers.values() if a.stage in IN_FLIGHT]

    def others(self, finished: int = 3) -> list[Answer]:
        """The answers but the one shown: all in flight, then the `finished` most recently done."""
        rest = [a for a in self.answers.values() if a.key != self.featured_key]
        flying = [a for a in rest if a.stage in IN_FLIGHT]
        done = sorted((a for a in rest if a.stage not in IN_FLIGHT), key=lambda a: -(a.finished_at or 0.0))
        return flying + done[:finished]

    # -- estimates ----------------------------------------------------------------------------------
    def read_rate(self, answer: Answer) -> float | None:
        """Prompt tokens read per second: this answer's so far, else this session's."""
        if answer.read_at is not None and answer.read_last is not None and answer.read_last > answer.read_at:
            done = answer.read_done - answer.read_from
            if done > 0:
                return done / (answer.read_last - answer.read_at)
        return self.read_tokens / self.read_seconds if self.read_seconds > 0 else None

    def read_cost(self) -> tuple[float, float] | None:
        """(a, b): seconds per token, and per token per token before it, fitted to the chunks seen; None until
        chunks at two different depths have been read (or when the fit makes no sense)."""
        rows = [(float(end - first), (end * end - first * first) / 2.0, secs) for first, end, secs in self.chunks]
        if len({round(r[1] / max(r[0], 1.0)) for r in rows}) < 2:
            return None  # every chunk at the same depth: the two costs cannot be told apart
        sxx = sum(x * x for x, _q, _t in rows)
        sxq = sum(x * q for x, q, _t in rows)
        sqq = sum(q * q for _x, q, _t in rows)
        sxt = sum(x * t for x, _q, t in rows)
        sqt = sum(q * t for _x, q, t in rows)
        det = sxx * sqq - sxq * sxq
        if det <= 0:
            return None
        a, b = (sxt * sqq - sqt * sxq) / det, (sqt * sxx - sxt * sxq) / det
        if a < 0 or b < 0:
            return None
        return a, b

    def read_left_s(self, answer: Answer, now: float) -> float | None:
        since = now - answer.read_last if answer.read_last is not None else 0.0
        done, total = answer.read_done, answer.prompt_tokens
        cost = self.read_cost()
        if cost is not None:
            a, b = cost
            return max(0.0, a * (total - done) + b * (total * total - done * done) / 2.0 - since)
        rate = self.read_rate(answer)
        if rate is None or rate <= 0:
            return None
        return max(0.0, (total - done) / rate - since)

    def step_rate(self) -> float | None:
        """Tokens each answer gets per second while the batch writes."""
        if len(self._step_samples) < 2:
            return None
        (t0, s0), (t1, s1) = self._step_samples[0], self._step_samples[-1]
        return (s1 - s0) / (t1 - t0) if t1 - t0 >= 0.5 and s1 > s0 else None

    def written(self, answer: Answer) -> int:
        if answer.streamed or answer.stage != WRITING:
            return answer.tokens
        return max(0, self.steps - answer.steps_at_write)

    def expected_tokens(self, written: int = 0) -> tuple[int, bool]:
        """How long an answer will be: the mean of recent answers (an estimate), or the token limit (a bound,
        also once the answer is longer than the mean). Returns (tokens, is_a_bound)."""
        if self.lengths:
            mean = int(sum(self.lengths) / len(self.lengths))
            if written < mean:
                return min(mean, self.max_tokens), False
        return self.max_tokens, True

    def write_left_s(self, answer: Answer) -> tuple[float, bool] | None:
        rate = self.step_rate()
        if rate is None or rate <= 0:
            return None
        written = self.written(answer)
        expected, bound = self.expected_tokens(written)
        return max(0.0, (expected - written) / rate), bound

    def finish_left_s(self, now: float) -> tuple[float, bool] | None:
        """Until the answers in flight are finished (what "Finish this answer and stop" waits for): prompts are
        read one after the other, then the batch writes them together. None when nothing is known yet."""
        flying = self.in_flight()
        if not flying:
            return 0.0, False
        rate = self.step_rate()
        reading, writing, bound = 0.0, 0.0, False
        for answer in flying:
            if answer.stage == READING:
                left = self.read_left_s(answer, now)
                if left is None:
                    return None
                reading += left
                expected, is_bound = self.expected_tokens()
                if rate is None:
                    return None
                writing = max(writing, expected / rate)
                bound = bound or is_bound
            else:
                estimate = self.write_left_s(answer)
                if estimate is None:
                    return None
                writing = max(writing, estimate[0])
                bound = bound or estimate[1]
        return reading + writing, bound

    def stop_delay_s(self, now: float) -> float | None:
        """How long the engine takes to notice a pause: it checks between chunks of a question it reads and
        between tokens while writing. 0 when it is writing (a step takes well under a second)."""
        reading = [a for a in self.in_flight() if a.stage == READING]
        if not reading:
            return 0.0
        answer = reading[0]
        cost = self.read_cost()
        if cost is not None:
            step = self.chunk[0] if self.chunk is not None else 512  # 512 tokens a chunk on the CPU, 2048 on a GPU
            first, end = answer.read_done, min(answer.prompt_tokens, answer.read_done + step)
            chunk_s = cost[0] * (end - first) + cost[1] * (end * end - first * first) / 2.0
        elif self.chunk is not None:
            chunk_s = self.chunk[1]
        else:
            rate = self.read_rate(answer)
            if rate is None:
                return None
            chunk_s = min(512, answer.prompt_tokens) / rate
        since = now - answer.read_last if answer.read_last is not None else 0.0
        return max(0.0, chunk_s - since)

    # -- words --------------------------------------------------------------------------------------
    def stage_text(self, answer: Answer, now: float) -> str:
        """One sentence: where this answer is and how long it should take."""
        stage = answer.stage
        if stage == READING:
            done, total = answer.read_done, answer.prompt_tokens
            head = (f"Reading the question: {done:,} of {total:,} tokens" if total
                    else "Reading the question")
            read_left = self.read_left_s(answer, now)
            return head + (f" · {duration_text(read_left)} left" if read_left is not None
                           else " · measuring the speed")
        if stage == WRITING:
            if not answer.streamed and any(a.stage == READING for a in self.in_flight()):
                return "Question read; writing starts once the next question has been read"
            written = self.written(answer)
            head = f"Writing: {written:,} tokens so far" if written else "Writing"
            estimate = self.write_left_s(answer)
            if estimate is None:
                return head
            seconds, bound = estimate
            left = duration_text(seconds)
            if bound:  # the answer may stop sooner: only the token limit is sure
                left = "at most " + left.removeprefix("about ")
            return f"{head} · {left} left"
        if stage == SAVED:
            return ("Checked and saved on this computer; sending it to the lab" if self.reporting
                    else "Checked and saved on this computer")
        if stage == SENT:
            return "Checked, saved and sent to the lab"
        if stage == HELD:
            return (f"Held back by the quality check: {reasons_text(answer.reasons) or 'did not pass'}. "
                    "Kept on this computer, not sent")
        if stage == SET_ASIDE:
            return "Set aside by the pause: this question is written again when you resume"
        return "Checking the answer"

    def steps_for_strip(self) -> tuple[str, ...]:
        return (READING, WRITING, CHECKING, SAVED, SENT) if self.reporting else (READING, WRITING, CHECKING, SAVED)


@dataclass
class Session:
    """One session's figures: from Start until the run ends by itself or by Finish; Pause and Resume keep it."""

    started_wall: float | None = None  # seconds since the epoch, for the charts' clock axis
    done: int = 0
    tokens: int = 0
    all_time: int | None = None  # answers in this computer's output, all time (the engine's journal count)
    unreported: int = 0
    active_s: float = 0.0  # time spent contributing in finished runs (model loading and pauses excluded)
    run_work_from: float | None = None  # when the current run began working (monotonic)
    pauses: list[list[float | None]] = field(default_factory=list)  # [start, end] in epoch seconds
    answer_points: list[tuple[float, int]] = field(default_factory=list)  # (epoch seconds, answers so far)
    speed_points: list[tuple[float, float]] = field(default_factory=list)  # (epoch seconds, tokens/s)
    held_total: int = 0  # answers held back by the quality check
    held_by_reason: Counter[str] = field(default_factory=Counter)  # each held answer under its first reason
    milestones_told: set[int] = field(default_factory=set)

    @property
    def open(self) -> bool:
        return self.started_wall is not None

    def begin_run(self, wall: float) -> None:
        if self.started_wall is None:
            self.started_wall = wall
            self.answer_points.append((wall, 0))
        if self.pauses and self.pauses[-1][1] is None:
            self.pauses[-1][1] = wall
        self.run_work_from = None

    def work_started(self, now: float) -> None:
        if self.run_work_from is None:
            self.run_work_from = now

    def end_run(self, now: float, wall: float, *, paused: bool) -> None:
        if self.run_work_from is not None:
            self.active_s += max(0.0, now - self.run_work_from)
            self.run_work_from = None
        if paused:
            self.pauses.append([wall, None])

    def answer_done(self, wall: float, tokens: int, tokens_per_s: float | None) -> None:
        self.done += 1
        self.tokens += tokens
        self.answer_points.append((wall, self.done))
        if tokens_per_s is not None:
            self.speed_points.append((wall, tokens_per_s))

    def held_answer(self, reasons: Iterable[str]) -> None:
        """One answer held back. Counted once, under the first of its reasons (the quality check lists the
        most basic fault first: broken or empty, then repetition, recitation, language), so the counts per
        reason add up to the answers held back."""
        first = next(iter(reasons), "")
        self.held_total += 1
        self.held_by_reason[first or "other"] += 1

    def active_seconds(self, now: float) -> float:
        running = now - self.run_work_from if self.run_work_from is not None else 0.0
        return self.active_s + max(0.0, running)

    def answers_per_hour(self, now: float) -> float | None:
        active = self.active_seconds(now)
        return self.done * 3600 / active if self.done and active > 0 else None

    def tokens_per_s(self, now: float) -> float | None:
        """Tokens of saved answers per second spent contributing (reading the questions included)."""
        active = self.active_seconds(now)
        return self.tokens / active if self.tokens and active > 0 else None

    def writing_speed(self, last: int = 20) -> float | None:
        """How fast answers were written (tokens per second each), the mean of the last `last` answers."""
        speeds = [v for _t, v in self.speed_points[-last:]]
        return sum(speeds) / len(speeds) if speeds else None

    def milestone(self) -> int | None:
        """The answers-this-session milestone just reached (told once), or None."""
        n = self.done
        hit = n in MILESTONES or (n > MILESTONES[-1] and n % 500 == 0)
        if hit and n not in self.milestones_told:
            self.milestones_told.add(n)
            return n
        return None
