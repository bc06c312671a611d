"""The Contribute page driven like a volunteer would, against the real engine (tiny model, real servers)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections import Counter

import pytest
from PySide6.QtCore import Qt

from lemcore.secrets import KeyringTokenStore
from lemcore.settings import Settings, data_dir, load_settings

INTERNAL_WORDS = ("Metal", "context cache", "Cancelled", "INFLUX_TOKEN", "KV", "prefill", "resolve…", "check…")


def _answers(worker: str) -> list[dict]:
    path = data_dir() / "output" / f"gold-{worker}.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def no_quality_gate(monkeypatch):
    """The tiny test model writes gibberish, which the quality gate rightly holds back: tests of the saved path
    turn the gate off (the held-back test keeps it)."""
    from lemcore.contribute import engine

    monkeypatch.setattr(engine, "build_gate", lambda config: None)


class EventLog:
    """Wraps the page's event handler: every event, and what the stage line said after it."""

    def __init__(self, page) -> None:
        self.page, self.events, self.stage_lines = page, [], []
        self._handle = page.on_event
        page.on_event = self  # the job takes page.on_event when it starts

    def __call__(self, event) -> None:
        self._handle(event)
        self.events.append(event)
        answer = self.page.tracker.featured
        if answer is not None:
            self.stage_lines.append((answer.key, self.page.tracker.stage_text(answer, time.monotonic())))

    def of(self, kind) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def _visible_text(page) -> str:
    from PySide6.QtWidgets import QAbstractButton, QLabel

    parts = [w.text() for w in page.findChildren(QLabel) if w.isVisible()]
    parts += [w.text() for w in page.findChildren(QAbstractButton) if w.isVisible()]
    return "\n".join(parts)


def test_first_run_saves_token_in_real_keychain(qtbot, make_window, system_keyring, influx) -> None:
    store = KeyringTokenStore(service="lem-desktop-apptest")
    window = make_window(token_store=store)
    page = window.contribute
    assert page.stack.currentIndex() == 0  # welcome first
    qtbot.mouseClick(page.next_btn, Qt.MouseButton.LeftButton)
    assert page.stack.currentIndex() == 1
    page.online.setChecked(True)
    page.url_edit.setText(influx.url)
    qtbot.keyClicks(page.token_edit, influx.token)
    qtbot.mouseClick(page.finish_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.stack.currentIndex() == 2, timeout=10000)  # the model step
    assert store.get() == influx.token
    step = page.model_step
    assert "SmolLM2" in step.choice.text() and "needs" in step.fit.text()  # fit verdict in words
    assert not any(word in step.fit.text() for word in INTERNAL_WORDS), step.fit.text()
    seen: list[str] = []
    handler = step._on_event
    step._on_event = lambda e: (handler(e), seen.append(step.message.text()))  # type: ignore[method-assign]
    qtbot.mouseClick(step.prepare_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.stack.currentIndex() == 3, timeout=120000)  # converted, then the dashboard
    assert step.message.text() == "The model is ready."
    for text in seen:  # the stages in words, never the engine's stage names
        assert not any(word in text for word in INTERNAL_WORDS), text
    assert page.token_edit.text() == ""  # the field never keeps the token
    s = load_settings()
    assert s.first_run_done and s.influx_url == influx.url and not s.solo
    assert influx.token not in json.dumps(s.__dict__)
    store.delete()


def test_start_pause_resume_finish_offline(qtbot, make_window, tiny_llama, no_quality_gate) -> None:
    window = make_window(settings=Settings(first_run_done=True, solo=True, model_override=str(tiny_llama),
                                           worker_name="vol", max_tokens=8, only_on_power=False,
                                           min_free_memory_gb=0.5))
    page = window.contribute
    log = EventLog(page)
    assert page.stack.currentIndex() == 3
    assert "Nothing yet" not in page.now.question.text()
    qtbot.mouseClick(page.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.session.done >= 2, timeout=120000)  # the page has seen them (on disk before)
    assert len(_answers("vol")) >= 2
    assert not page.start_btn.isEnabled() and page.pause_btn.isEnabled()

    # The stage line followed the first answers: reading the question (with its size) -> writing -> saved.
    from app.pages.contribute.progress import CHECKING, READING, SAVED, SENT, WRITING
    from lemcore.generate.protocol import PrefillProgress

    reads = log.of(PrefillProgress)
    assert reads and reads[0].total_tokens > 1000  # the sandwich: principles, kernel, question
    assert any(e.done_tokens == e.total_tokens for e in reads)
    first = [e for e in reads if e.key == reads[0].key]  # one event as reading starts, then one per chunk
    left = first[0].total_tokens - 1 - first[0].done_tokens  # (the shared prefix is read already)
    assert len(first) in (1 + math.ceil(left / 512), 1 + math.ceil(left / 2048))  # CPU chunks, GPU chunks
    assert [e.done_tokens for e in first] == sorted(e.done_tokens for e in first)
    assert first[-1].done_tokens == first[-1].total_tokens
    saved = [a for a in page.tracker.answers.values() if a.stage == SAVED]
    assert saved, [(a.key, a.stage, a.history) for a in page.tracker.answers.values()] + [type(e).__name__ for e in log.events]
    assert saved[0].history == [READING, WRITING, CHECKING, SAVED]
    assert saved[0].prompt and saved[0].prompt_tokens > 1000  # the question, shown from AnswerStarted on
    lines = [text for _key, text in log.stage_lines]
    assert any(t.startswith("Reading the question:") and "tokens" in t for t in lines), lines
    assert any(t.startswith("Writing") for t in lines), lines
    assert any(t == "Checked and saved on this computer" for t in lines), lines  # solo: no "sent"
    assert all(SENT not in a.history for a in page.tracker.answers.values())
    assert "Sent to the lab" not in page.now.strip.text()

    # Pause acts within a second (the tiny model reads a chunk in milliseconds).
    clicked = time.monotonic()
    qtbot.mouseClick(page.pause_btn, Qt.MouseButton.LeftButton)
    assert page.status.state == "paused" and page.status.text.startswith("Pausing")  # said at once
    qtbot.waitUntil(lambda: page.start_btn.isEnabled(), timeout=60000)
    assert time.monotonic() - clicked < 1.0
    assert page.status.state == "paused"
    first = {a["idx"] for a in _answers("vol")}
    done_before = int(page.tile_session.value.text())
    assert done_before >= 2 and page.tile_rate.value.text() != "–"

    # Resume: the box says so at once; the session carries over and grows within 2 s.
    qtbot.mouseClick(page.start_btn, Qt.MouseButton.LeftButton)
    assert "resuming" in page.now.question.text() and "Set aside" not in page.now.stage.text()
    assert page.status.text == "Resuming…"
    resumed = time.monotonic()
    qtbot.waitUntil(lambda: int(page.tile_session.value.text()) > done_before, timeout=2000)
    assert time.monotonic() - resumed < 2.0
    assert page.session.pauses and page.session.pauses[0][1] is not None  # the pause is on the charts
    assert len(page.rate_chart.bands) == 1
    qtbot.waitUntil(lambda: len(_answers("vol")) >= len(first) + 2, timeout=120000)
    qtbot.mouseClick(page.finish_btn2, Qt.MouseButton.LeftButton)
    assert "Finishing" in page.status.text or "Stopping" in page.status.text
    qtbot.waitUntil(lambda: page.start_btn.isEnabled(), timeout=60000)
    assert page.status.state == "idle" and "Stopped" in page.status.text
    answers = _answers("vol")
    assert len(answers) == len({a["idx"] for a in answers}), "nothing done twice"
    assert first <= {a["idx"] for a in answers}, "nothing finished was lost"
    assert int(page.tile_session.value.text()) == page.session.done >= 4  # both runs: one session
    assert page.rate_series.n >= 1 and page.now.answer.toPlainText() != ""
    for word in INTERNAL_WORDS:
        assert word not in _visible_text(page), word

    # Today, this week, all time: read from the files, the same count as the tile (a fresh data folder: all
    # of it is today's).
    qtbot.waitUntil(lambda: page.history is not None and page.history.all_time.saved == len(answers), timeout=10000)
    page.side_tabs.setCurrentIndex(1)
    assert [cell.text() for cell in page.totals["saved"]] == [str(len(answers))] * 3
    assert page.tile_total.value.text() == str(len(answers))
    assert [cell.text() for cell in page.totals["tokens"]] == [f"{sum(a['tokens'] for a in answers):,}"] * 3
    assert page.totals["time"][0].text() != "0 min" and page.totals["held"][2].text() == "0"
    assert page.totals_rows["sent"][0].isHidden()  # offline nothing is sent


def test_contributing_to_real_server_and_wrong_token(qtbot, make_window, tiny_llama, influx,
                                                     no_quality_gate) -> None:
    from lemcore.contribute import events as ev
    from lemcore.secrets import MemoryTokenStore

    settings = Settings(first_run_done=True, influx_url=influx.url, model_override=str(tiny_llama),
                        worker_name="volx", max_tokens=8, only_on_power=False, min_free_memory_gb=0.5)
    window = make_window(token_store=MemoryTokenStore({"influx-token": "wrong"}), settings=settings)
    page = window.contribute
    window.show()
    window.hide()  # closed to the tray: an error is told there
    qtbot.mouseClick(page.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.status.state == "error", timeout=60000)
    assert "did not accept the token" in page.status.text and "Traceback" not in page.status.text
    assert window.notifications and window.notifications[-1][2] is True  # errors always
    assert "token" in window.notifications[-1][0] + window.notifications[-1][1]
    window.show()
    page.token_store.set(influx.token)
    log = EventLog(page)
    qtbot.mouseClick(page.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.session.done >= 2, timeout=120000)
    qtbot.mouseClick(page.finish_btn2, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.start_btn.isEnabled(), timeout=60000)
    res = influx.query("SELECT chars, i FROM gold_gen WHERE time > now() - 1h")
    reported = {int(v[2]) for v in res["results"][0]["series"][0]["values"]}
    assert reported == {a["idx"] for a in _answers("volx")}
    assert page.fleet.value() >= 0 and page.fleet.maximum() == 600
    assert "as the lab counts them" in page.fleet.format()

    # With a server the stage line goes on to "sent" (the engine's ReportsSent).
    from app.pages.contribute.progress import CHECKING, READING, SAVED, SENT, WRITING

    sent = log.of(ev.ReportsSent)
    assert sent and {i for e in sent for i in e.idxs} <= reported
    kept = [a for a in page.tracker.answers.values() if SENT in a.history]
    assert kept and kept[0].history == [READING, WRITING, CHECKING, SAVED, SENT]
    assert any(text == "Checked, saved and sent to the lab" for _k, text in log.stage_lines)
    assert page.tile_total.value.text() == str(len(_answers("volx")))  # this computer, all time
    # The totals say how many the lab has: every saved answer, once the run is over.
    qtbot.waitUntil(lambda: page.history is not None and page.history.all_time.sent == len(reported), timeout=10000)
    assert not page.totals_rows["sent"][0].isHidden()
    assert [cell.text() for cell in page.totals["sent"]] == [str(len(reported))] * 3
    assert page.totals["saved"][2].text() == page.tile_total.value.text()


def test_held_back_answers_are_counted_in_words(qtbot, make_window, tiny_llama) -> None:
    """The real quality gate on the tiny model's gibberish: the answers are held back, and the page says how
    many and why, in the words of lemcore.quality.REASON_TEXT."""
    from app.pages.contribute.progress import HELD
    from lemcore.contribute import events as ev
    from lemcore.quality import REASON_TEXT

    window = make_window(settings=Settings(first_run_done=True, solo=True, model_override=str(tiny_llama),
                                           worker_name="volh", max_tokens=24, only_on_power=False,
                                           min_free_memory_gb=0.5))
    page = window.contribute
    log = EventLog(page)
    assert not page.held_line.isVisibleTo(page)
    page.start()
    qtbot.waitUntil(lambda: len(log.of(ev.AnswerHeld)) >= 3, timeout=120000)
    page.pause()
    qtbot.waitUntil(lambda: page.start_btn.isEnabled(), timeout=60000)
    last = log.of(ev.AnswerHeld)[-1]
    text = page.held_line.text()
    assert page.held_line.isVisibleTo(page)
    assert text.startswith(f"{last.held_total} answers held back this session")
    # Each answer once, under its first reason: the counts add up to the answers held back.
    firsts = Counter(e.reasons[0] for e in log.of(ev.AnswerHeld))
    assert all(f"{REASON_TEXT[r]} ({n})" in text for r, n in firsts.items()), text
    assert sum(int(n) for n in re.findall(r"\((\d+)\)", text)) == last.held_total
    # The totals count the held-back file's lines: all of them today (a fresh data folder).
    held_file = data_dir() / "output" / "gold-volh.jsonl.held.jsonl"
    on_disk = len(held_file.read_text().splitlines())
    assert on_disk >= last.held_total
    qtbot.waitUntil(lambda: page.history is not None and page.history.all_time.held == on_disk, timeout=10000)
    assert [cell.text() for cell in page.totals["held"]] == [str(on_disk)] * 3
    held = [a for a in page.tracker.answers.values() if a.stage == HELD]
    assert held and page.tracker.stage_text(held[0], time.monotonic()).startswith("Held back by the quality check")


def test_window_fits_900_by_600_at_every_first_run_step(qtbot, make_window) -> None:
    window = make_window(settings=Settings(influx_url="https://lab.example:8181", worker_name="a-long-worker-name"))
    window.show()
    qtbot.waitExposed(window)
    page = window.contribute
    scroll = window.stack.currentWidget()
    for step in range(4):  # welcome, connect, model, dashboard
        window.resize(1331, 900)
        page.stack.setCurrentIndex(step)
        if step == 2:
            page.model_step.refresh("", 2)
        window.resize(900, 600)
        qtbot.wait(30)
        assert window.size().width() == 900 and window.size().height() == 600, step
        assert not scroll.horizontalScrollBar().isVisible(), step
        assert not scroll.verticalScrollBar().isVisible(), step
        assert page.width() <= scroll.viewport().width(), step
    # The smallest window the app allows: the dashboard scrolls down, never sideways.
    window.resize(window.minimumSize())
    qtbot.wait(30)
    assert not scroll.horizontalScrollBar().isVisible()


def test_charts_have_a_clock_axis(qtbot, make_window) -> None:
    """One answer in: the x axis reads clock times (14:05, 14:05:30), never '9.1221'."""
    from lemcore.contribute import events as ev

    window = make_window(settings=Settings(first_run_done=True, solo=True))
    window.show()
    page = window.contribute
    page.session.begin_run(time.time() - 40)
    page.session.work_started(time.monotonic() - 40)
    page.on_event(ev.ResponseDone(3, "s3", "Privacy", "a", "What is fair?", "An answer.", 120, 12.0, False))
    qtbot.waitUntil(lambda: page.rate_series.n >= 1, timeout=2000)  # drawn once per burst of answers
    page.rate_chart.redraw()
    page.tps_chart.redraw()
    qtbot.wait(50)
    for chart in (page.rate_chart, page.tps_chart):
        labels = [x for x in chart.x_tick_labels() if x]
        assert labels, chart.title
        assert all(re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", x) for x in labels), labels
        low, high = chart.getPlotItem().viewRange()[0]
        assert high - low >= 300  # at least five minutes shown
    assert [x for x in page.rate_chart.y_tick_labels() if x] and all(
        re.fullmatch(r"\d+", x) for x in page.rate_chart.y_tick_labels() if x)  # whole answers


def test_milestones_in_the_tray_only_when_asked(qtbot, make_window) -> None:
    from lemcore.contribute import events as ev

    window = make_window(settings=Settings(first_run_done=True, solo=True))
    page = window.contribute
    window.hide()
    page.session.begin_run(time.time())

    def answers(n: int) -> None:
        for i in range(n):
            page.on_event(ev.ResponseDone(i, f"s{i}", "Privacy", "a", "Q?", "A.", 10, 1.0, False))

    answers(10)
    assert window.notifications == []  # not asked for
    page.notify_box.setChecked(True)
    assert load_settings().notify_milestones is True  # a setting, saved at once
    answers(15)
    assert [n[1] for n in window.notifications] == ["25 answers written this session. Thank you!"]

    # The same choice on the Settings page, both ways.
    settings_page = window.settings_page
    window.show()
    window.show_page("Settings")
    assert settings_page.notify.isChecked()
    settings_page.notify.setChecked(False)
    assert load_settings().notify_milestones is False and not page.notify_box.isChecked()
    window.hide()
    answers(25)  # 50: not told any more
    assert len(window.notifications) == 1


def test_the_milestone_choice_of_an_older_version_is_kept(qtbot, make_window) -> None:
    """Older versions kept the choice in a file of their own: it becomes the setting, silently."""
    from lemcore.settings import LEGACY_NOTIFY_FILE, config_dir, save_settings, settings_path

    save_settings(Settings(first_run_done=True, solo=True))
    raw = json.loads(settings_path().read_text())
    del raw["notify_milestones"]  # as an older version wrote it
    settings_path().write_text(json.dumps(raw))
    (config_dir() / LEGACY_NOTIFY_FILE).write_text(json.dumps({"milestones": True}))
    window = make_window()
    assert window.contribute.notify_box.isChecked() and window.settings_page.notify.isChecked()
    assert window.contribute.notify_milestones
    window.contribute.preset.setCurrentIndex(1)  # any change saves the settings: the old file goes
    assert json.loads(settings_path().read_text())["notify_milestones"] is True
    assert not (config_dir() / LEGACY_NOTIFY_FILE).exists()
    assert load_settings().notify_milestones is True


def test_the_goal_reached_is_told_from_the_tray(qtbot, make_window, monkeypatch, tmp_path) -> None:
    """The real engine answers a three-question set (a scripted generator instead of a model) to the end while
    the window is closed: the tray says so, and the totals count the three answers."""
    from app.pages.contribute import page as page_module
    from lemcore.contribute.engine import run_contribution
    from lemcore.contribute.queue.solo import default_solo_queue_path
    from lemcore.contribute.setup import open_solo_queue
    from tests.core.contribute_helpers import ScriptedGenerator, write_prompts

    prompts = write_prompts(tmp_path / "three.jsonl", 3)
    app_options = page_module.options_from_settings
    # The app's options with this question set: the run below and the totals both use them.
    monkeypatch.setattr(page_module, "options_from_settings",
                        lambda settings: dataclasses.replace(app_options(settings), prompts=prompts))

    def three_questions(settings, token_store, *, models, report, cancel, drain):
        options = page_module.options_from_settings(settings)
        queue = open_solo_queue(default_solo_queue_path(), "gold", options.worker, prompts)
        try:
            return run_contribution(options.engine_config(), queue, ScriptedGenerator(), report=report,
                                    cancel=cancel, drain=drain)
        finally:
            queue.close()

    monkeypatch.setattr(page_module, "contribute", three_questions)
    window = make_window(settings=Settings(first_run_done=True, solo=True, worker_name="volg",
                                           notify_milestones=True, only_on_power=False))
    page = window.contribute
    window.hide()
    page.start()
    qtbot.waitUntil(lambda: page.start_btn.isEnabled(), timeout=60000)
    assert page.status.state == "idle" and page.session.done == 3
    assert window.notifications[-1] == (
        "LEM Desktop", "Every question in the set is answered on this computer. Thank you!", False)
    qtbot.waitUntil(lambda: page.history is not None and page.history.today.saved == 3, timeout=10000)
    assert page.tile_total.value.text() == "3" and page.totals["saved"][0].text() == "3"


def test_a_burst_of_saved_answers_is_drawn_once(qtbot, make_window, monkeypatch) -> None:
    """A batch's answers end within moments of each other: tiles, charts and the fleet bar follow once per
    burst (16 redraws in one go stalled the window for 100-225 ms), and no answer goes uncounted."""
    from lemcore.contribute import events as ev

    window = make_window(settings=Settings(first_run_done=True, solo=True))
    window.show()
    page = window.contribute
    page.session.begin_run(time.time() - 40)
    page.session.work_started(time.monotonic() - 40)
    page._set_fleet(0, 600)
    draws: list[int] = []
    draw = page._draw_charts
    monkeypatch.setattr(page, "_draw_charts", lambda: (draws.append(1), draw()))
    for i in range(16):
        page.on_event(ev.ResponseDone(i, f"s{i}", "Privacy", "a", "Q?", "A.", 10, 1.0, False))
    assert draws == [] and page.fleet.value() == 0  # not yet: the burst may go on
    qtbot.waitUntil(lambda: draws != [], timeout=2000)
    qtbot.wait(250)
    assert len(draws) == 1
    assert page.fleet.value() == 16
    assert int(page.tile_session.value.text()) == 16
    assert page.rate_series.n >= 1


def test_the_writing_now_card_keeps_its_height_while_answers_stream(qtbot) -> None:
    """Other answers' lines come and go; the card keeps the tallest height it needed, so the page is not
    resized (and its charts relaid out) several times a second. A message (idle, getting ready) lets go."""
    from app.pages.contribute.answer_view import AnswerView
    from app.pages.contribute.progress import AnswerTracker

    view = AnswerView()
    qtbot.addWidget(view)
    view.resize(600, 200)
    view.show()
    tracker = AnswerTracker(max_tokens=128, reporting=False)
    view.follow(tracker)
    now = time.monotonic()
    heights = []
    for i in range(8):
        tracker.started(i, f"Question {i}?", "Privacy", f"s{i}", 100, now)
        view.refresh()
        heights.append(view.minimumHeight())
    assert heights == sorted(heights) and heights[-1] > heights[0]  # grew with the lines
    tall = heights[-1]
    for i in range(1, 8):  # most answers finish: only the 3 latest stay listed, fewer lines
        tracker.saved(i, 10, 1.0, now + i, prompt=f"Question {i}?", domain="Privacy", seed_id=f"s{i}", text="A.")
        view.refresh()
        assert view.minimumHeight() == tall
    assert view.layout().totalHeightForWidth(view.width()) < tall  # it needs less now, and keeps its height
    view.let_go()  # the run ended: the last answer stays, without the held room
    assert view.minimumHeight() == 0
    view.refresh()
    assert view.minimumHeight() == view.layout().totalHeightForWidth(view.width()) < tall
    view.show_message("idle")
    assert view.minimumHeight() == 0
