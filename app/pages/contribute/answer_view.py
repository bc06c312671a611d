"""The "Writing now" card: the question being answered, a stage line (reading the question -> writing ->
checked -> saved -> sent) with a progress bar and a time estimate, the answer as it is written, and one line for
each other answer in flight or just finished. It draws an `AnswerTracker` (progress.py); the page marks it dirty
on events and it repaints at most every 150 ms (the streaming text and the estimates with it)."""

from __future__ import annotations

import html
import time

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QLabel, QPlainTextEdit, QProgressBar, QSizePolicy

from app.appearance import appearance, current_theme
from app.pages.contribute.progress import (
    CHECKING,
    HELD,
    READING,
    SAVED,
    SENT,
    SET_ASIDE,
    WRITING,
    Answer,
    AnswerTracker,
)
from app.style import Theme
from app.widgets import Card

STEP_WORDS = {READING: "Reading the question", WRITING: "Writing", CHECKING: "Checking", SAVED: "Saved",
              SENT: "Sent to the lab"}
SOLO_STEP_WORDS = {**STEP_WORDS, SAVED: "Saved on this computer"}
SHORT_STAGE = {READING: "reading the question", WRITING: "writing", CHECKING: "checking", SAVED: "saved",
               SENT: "sent to the lab", HELD: "held back", SET_ASIDE: "set aside"}
GOOD, WARN = "#2aa876", "#e0a02a"
IDLE_TEXT = "Nothing is being written. Press Start contributing."


def _elide(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


class AnswerView(Card):
    def __init__(self) -> None:
        super().__init__()
        self.tracker: AnswerTracker | None = None
        self.question = QLabel(IDLE_TEXT)
        self.question.setWordWrap(True)
        self.question.setTextFormat(Qt.TextFormat.RichText)
        self.strip = QLabel("")
        self.strip.setTextFormat(Qt.TextFormat.RichText)
        self.strip.setWordWrap(True)
        self.stage = QLabel("")  # one sentence: where the answer is and how long it should take
        self.stage.setWordWrap(True)
        self.stage.setObjectName("hint")
        self.bar = QProgressBar()
        self.bar.setMaximumHeight(14)
        self.bar.setTextVisible(False)
        self.bar.hide()
        self.answer = QPlainTextEdit()
        self.answer.setReadOnly(True)
        self.answer.setMaximumBlockCount(200)
        self.answer.setMinimumHeight(52)
        self.answer.setPlaceholderText("The answer appears here as the model writes it.")
        self.others = QLabel("")
        self.others.setObjectName("hint")
        self.others.setTextFormat(Qt.TextFormat.RichText)
        self.others.setWordWrap(True)
        self.others.hide()
        for label in (self.question, self.strip, self.stage, self.others):
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # wrap, never widen
        for widget in (self.question, self.strip, self.stage, self.bar, self.answer, self.others):
            self.body.addWidget(widget)
        self.body.setSpacing(4)
        self.message: tuple[str, str] | None = None  # (title, sentence) shown instead of an answer
        self._held_width = 0  # the width at which the minimum height holds the tallest needed (_hold_height)
        self._dirty = False
        self._text_key: object = None
        self.timer = QTimer(self)
        self.timer.setInterval(150)  # the streaming answer repaints at most ~7 times a second
        self.timer.timeout.connect(self._tick)
        self.timer.start()
        appearance().changed.connect(self._recolour)

    # -- what the page calls ------------------------------------------------------------------------
    def follow(self, tracker: AnswerTracker) -> None:
        self.tracker = tracker
        self.message = None
        self.mark_dirty()

    def show_message(self, title: str, sentence: str = "", *, clear_text: bool = True) -> None:
        """Not an answer: getting ready, loading the model, idle."""
        self.message = (title, sentence)
        self.let_go()
        if clear_text:
            self.answer.setPlainText("")
            self._text_key = None
        self.refresh()

    def let_go(self) -> None:
        """Answers stopped streaming (a message, or the run ended): the card takes the height its content needs
        again instead of the tallest it held (_hold_height)."""
        self._held_width = 0
        self.setMinimumHeight(0)

    def mark_dirty(self) -> None:
        self._dirty = True

    def _tick(self) -> None:
        if self._dirty:
            self.refresh()

    def _recolour(self, _theme: Theme) -> None:
        self.refresh()

    # -- drawing ------------------------------------------------------------------------------------
    def refresh(self) -> None:
        self._dirty = False
        tracker = self.tracker
        answer = tracker.featured if tracker is not None else None
        if self.message is not None or tracker is None or answer is None:
            title, sentence = self.message or ("Getting ready", "")
            self.question.setText(f"<b>Writing now:</b> {html.escape(title)}")
            self.strip.setText("")
            self.stage.setText(html.escape(sentence))
            self.stage.setVisible(bool(sentence))
            self.bar.hide()
            self.others.hide()
            return
        now = time.monotonic()
        self.question.setText(self._question_html(answer))
        self.strip.setText(self._strip_html(tracker, answer))
        self.stage.setText(html.escape(tracker.stage_text(answer, now)))
        self.stage.show()
        self._show_bar(tracker, answer)
        if answer.text and (self._text_key != answer.key or self.answer.toPlainText() != answer.text):
            self.answer.setPlainText(answer.text)
            self.answer.verticalScrollBar().setValue(self.answer.verticalScrollBar().maximum())
        elif not answer.text and self._text_key != answer.key:
            self.answer.setPlainText("")
        self._text_key = answer.key
        lines = [self._other_line(tracker, a, now) for a in tracker.others()]
        self.others.setText("<br>".join(lines))
        self.others.setVisible(bool(lines))
        self._hold_height()

    def _hold_height(self) -> None:
        """While answers stream the card keeps the tallest height it has needed at its width. Lines came and went
        (other answers' lines, a question wrapping onto one more line, the bar) and each change resized the
        whole page several times a second: every resize relaid out the dashboard and repainted its charts,
        50-225 ms of GUI work in a burst (docs/platform-notes.md, "GUI stalls while answers stream")."""
        layout = self.layout()
        if layout is None or not layout.hasHeightForWidth():
            return
        width = self.width()
        need = layout.totalHeightForWidth(width)
        if width != self._held_width:  # the window was resized (or a message let go): start again at this width
            self._held_width = width
            self.setMinimumHeight(need)
        elif need > self.minimumHeight():
            self.setMinimumHeight(need)

    @staticmethod
    def _question_html(answer: Answer) -> str:
        what = "Writing now" if answer.stage in (READING, WRITING) else "Last answer"
        head = f"<b>{what}: question {html.escape(str(answer.key))}</b>"
        if not answer.prompt:
            return head
        domain = f" ({html.escape(answer.domain)})" if answer.domain else ""
        return f"{head}{domain} · {html.escape(_elide(answer.prompt, 180))}"

    @staticmethod
    def _strip_html(tracker: AnswerTracker, answer: Answer) -> str:
        """The steps in a row: done ones ticked, the current one in bold, the rest dim."""
        theme = current_theme()
        steps = tracker.steps_for_strip()
        words = STEP_WORDS if tracker.reporting else SOLO_STEP_WORDS
        stage = answer.stage
        if stage in (HELD, SET_ASIDE):  # the steps it passed, then where it stopped
            before = answer.history[-2] if len(answer.history) > 1 else READING
            reached = steps.index(before) if before in steps else 0
            parts = [f"<span style='color:{theme.text}'>✓ {words[s]}</span>" for s in steps[:reached]]
            label = "Held back" if stage == HELD else "Set aside"
            parts.append(f"<span style='color:{WARN}; font-weight:600'>● {label}</span>")
            return " &nbsp;›&nbsp; ".join(parts)
        at = steps.index(stage) if stage in steps else len(steps) - 1
        last = at == len(steps) - 1
        parts = []
        for n, step in enumerate(steps):
            if n < at or (n == at and last):
                parts.append(f"<span style='color:{GOOD if n == at else theme.text}'>✓ {words[step]}</span>")
            elif n == at:
                parts.append(f"<span style='color:{theme.accent}; font-weight:600'>● {words[step]}</span>")
            else:
                parts.append(f"<span style='color:{theme.hint}'>{words[step]}</span>")
        return " &nbsp;›&nbsp; ".join(parts)

    def _show_bar(self, tracker: AnswerTracker, answer: Answer) -> None:
        if answer.stage == READING and answer.prompt_tokens:
            self.bar.setRange(0, answer.prompt_tokens)
            self.bar.setValue(min(answer.read_done, answer.prompt_tokens))
            self.bar.show()
        elif answer.stage == WRITING and (answer.streamed or tracker.written(answer)):
            expected, _bound = tracker.expected_tokens(tracker.written(answer))
            self.bar.setRange(0, max(1, expected))
            self.bar.setValue(min(tracker.written(answer), expected))
            self.bar.show()
        else:
            self.bar.hide()

    @staticmethod
    def _other_line(tracker: AnswerTracker, answer: Answer, now: float) -> str:
        name = f"Question {answer.key}" + (f" ({answer.domain})" if answer.domain else "")
        if answer.stage == READING and answer.prompt_tokens:
            pct = int(100 * answer.read_done / max(1, answer.prompt_tokens))
            what = f"reading the question, {pct}%"
        elif answer.stage == WRITING:
            written = tracker.written(answer)
            what = f"writing, {written:,} tokens" if written else "read; waiting for its turn to be written"
        elif answer.stage == SAVED:
            what = "saved; sending it to the lab" if tracker.reporting else "saved on this computer"
        elif answer.stage == HELD:
            what = "held back by the quality check"
        else:
            what = SHORT_STAGE.get(answer.stage, answer.stage)
        return html.escape(f"{name}: {what}")
