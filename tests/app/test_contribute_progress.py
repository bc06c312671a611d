"""The Contribute page's view model with made-up times: stages, estimates, and what Pause and Finish say."""

from __future__ import annotations

from app.pages.contribute.progress import (
    CHECKING,
    HELD,
    READING,
    SAVED,
    SENT,
    SET_ASIDE,
    WRITING,
    AnswerTracker,
    Session,
    duration_text,
    held_summary,
    spent_text,
)


def _read(tracker: AnswerTracker, key: int, total: int, *, start: float, chunk_s: float, chunks: int) -> None:
    """An answer read in 512-token chunks of `chunk_s` seconds each, stopping after `chunks` of them."""
    tracker.started(key, f"Question {key}?", "Privacy", f"s{key}", 0, start)
    tracker.reading(key, 0, total, start)
    for n in range(1, chunks + 1):
        tracker.reading(key, min(total, 512 * n), total, start + n * chunk_s)


def test_a_slow_first_answer_says_it_is_reading_and_how_long() -> None:
    tracker = AnswerTracker(max_tokens=512)
    tracker.started(7, "Is it fair?", "Fairness", "s7", 0, 100.0)
    answer = tracker.featured
    assert answer is not None and answer.stage == READING and answer.prompt == "Is it fair?"
    assert tracker.stage_text(answer, 100.0) == "Reading the question · measuring the speed"
    tracker.reading(7, 0, 1536, 100.0)
    assert tracker.stage_text(answer, 101.0) == "Reading the question: 0 of 1,536 tokens · measuring the speed"
    tracker.reading(7, 512, 1536, 140.0)  # 512 tokens in 40 s: a slow computer
    assert tracker.stage_text(answer, 140.0) == "Reading the question: 512 of 1,536 tokens · about 80 s left"
    assert tracker.stage_text(answer, 170.0).endswith("about 50 s left")  # counts down between chunks
    # Pause now: the engine notices after the chunk it is reading (40 s a chunk, 30 s of it gone).
    assert tracker.stop_delay_s(170.0) == 10.0
    tracker.reading(7, 1024, 1536, 180.0)
    tracker.reading(7, 1536, 1536, 220.0)
    assert answer.stage == WRITING
    for n in range(1, 11):  # 10 tokens a second
        tracker.writing(7, "word " * n * 10, n * 10, 220.0 + n)
    assert tracker.stage_text(answer, 230.0) == "Writing: 100 tokens so far · at most 40 s left"  # 512 at most
    assert tracker.stop_delay_s(230.0) == 0.0
    tracker.saved(7, 120, 130.0, 232.0)
    assert answer.history == [READING, WRITING, CHECKING, SAVED]
    assert tracker.stage_text(answer, 232.0) == "Checked and saved on this computer"
    assert tracker.sent([7]) == [] and answer.stage == SAVED  # offline: nothing is sent


def test_reading_estimate_knows_later_chunks_take_longer() -> None:
    """Each token attends to all before it: the second chunk took twice the first, so the third takes ~3x."""
    tracker = AnswerTracker()
    tracker.reading(1, 0, 1536, 0.0)
    tracker.reading(1, 512, 1536, 2.0)
    tracker.reading(1, 1024, 1536, 6.0)
    a, b = tracker.read_cost() or (0.0, 0.0)
    assert abs(a * 512 + b * 512 * 512 / 2 - 2.0) < 1e-9 and b > 0
    assert abs(tracker.read_left_s(tracker.answers[1], 6.0) - 6.0) < 1e-6  # not 4 s, as a flat rate would say
    assert abs(tracker.stop_delay_s(7.0) - 5.0) < 1e-6  # Pause: the chunk under way needs 6 s, 1 s of it gone


def test_with_a_server_saved_answers_go_on_to_sent() -> None:
    tracker = AnswerTracker(max_tokens=512, reporting=True)
    _read(tracker, 1, 1024, start=0.0, chunk_s=1.0, chunks=2)
    tracker.writing(1, "text", 5, 3.0)
    tracker.saved(1, 5, 3.0, 4.0)
    answer = tracker.answers[1]
    assert tracker.stage_text(answer, 4.0) == "Checked and saved on this computer; sending it to the lab"
    tracker.sent([1])
    assert answer.history == [READING, WRITING, CHECKING, SAVED, SENT]
    assert tracker.stage_text(answer, 5.0) == "Checked, saved and sent to the lab"
    assert SENT in tracker.steps_for_strip() and SENT not in AnswerTracker().steps_for_strip()


def test_finish_estimate_covers_reading_then_writing_together() -> None:
    tracker = AnswerTracker(max_tokens=400)
    tracker.lengths.extend([200, 200])  # earlier answers: 200 tokens
    _read(tracker, 1, 1024, start=0.0, chunk_s=2.0, chunks=2)  # read: 1024 tokens in 4 s
    _read(tracker, 2, 1024, start=4.0, chunk_s=2.0, chunks=1)  # half read
    for n in range(1, 5):
        tracker.writing(1, "x", 10 * n, 8.0 + n)  # (the engine streams one answer) 10 tokens a second
    estimate = tracker.finish_left_s(8.0 + 4)
    assert estimate is not None
    seconds, bound = estimate
    # Answer 2: 512 tokens left to read at 256/s (2 s, 6 s ago: 0 left), then 200 tokens at 10/s = 20 s; answer 1
    # has 160 of its expected 200 left... together: 20 s (the longest), not a bound (from the mean length).
    assert 19.0 <= seconds <= 21.0 and not bound
    assert duration_text(seconds) == "about 20 s"


def test_pause_sets_answers_aside_and_held_ones_say_why() -> None:
    tracker = AnswerTracker()
    _read(tracker, 1, 1024, start=0.0, chunk_s=1.0, chunks=1)
    dropped = tracker.set_aside(5.0)
    assert [a.key for a in dropped] == [1] and tracker.answers[1].history == [READING, SET_ASIDE]
    assert "written again when you resume" in tracker.stage_text(tracker.answers[1], 5.0)
    tracker.held(2, ("repetition",), 6.0)
    assert tracker.stage_text(tracker.answers[2], 6.0).startswith(
        "Held back by the quality check: repeats itself in a loop.")
    assert tracker.answers[2].stage == HELD


def test_session_carries_over_pause_and_counts_held_answers_per_reason() -> None:
    s = Session()
    s.begin_run(1000.0)
    s.work_started(10.0)
    s.answer_done(1010.0, 300, 12.0)
    s.held_answer(("repetition",))
    s.held_answer(("repetition", "recites_kernel"))  # two faults: counted once, under the first
    s.end_run(70.0, 1060.0, paused=True)  # 60 s of work, then a pause
    assert s.answers_per_hour(70.0) == 60.0 and s.pauses == [[1060.0, None]]
    assert s.writing_speed() == 12.0 and s.tokens_per_s(70.0) == 5.0
    s.begin_run(1120.0)  # resumed a minute later: same session, the pause closed
    assert s.pauses == [[1060.0, 1120.0]] and s.done == 1
    s.work_started(130.0)
    s.held_answer(("repetition", "wrong_language"))
    s.held_answer(("empty",))
    assert s.held_total == 4 and s.held_by_reason == {"repetition": 3, "empty": 1}
    assert sum(s.held_by_reason.values()) == s.held_total
    assert held_summary(s.held_total, s.held_by_reason) == (
        "4 answers held back this session (kept apart on this computer, never sent): repeats itself in a loop "
        "(3), empty or shorter than a sentence (1).")
    assert s.answers_per_hour(190.0) == 30.0  # 1 answer in 120 s of work: pauses do not count


def test_time_spent_in_words() -> None:
    assert [spent_text(x) for x in (0, 30, 60, 25 * 60 + 59, 3 * 3600 + 5 * 60)] == [
        "0 min", "< 1 min", "1 min", "25 min", "3 h 05 min"]


def test_milestones_are_told_once() -> None:
    s = Session()
    told = []
    for _ in range(26):
        s.answer_done(0.0, 1, None)
        n = s.milestone()
        if n is not None:
            told.append(n)
    assert told == [10, 25] and s.milestone() is None
