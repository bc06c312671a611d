"""The answer quality gate and the lab's tier-1 score, on real answers of the built-in model (labelled by hand,
tests/fixtures/quality_answers.jsonl, made by tests/fixtures/make_quality_fixture.py) and on made-up edge cases."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lemcore.contribute.kernel import sandwich_text
from lemcore.quality import (
    BROKEN,
    EMPTY,
    RECITES_KERNEL,
    RECITES_PROMPT,
    REPETITION,
    TRUNCATED,
    WRONG_LANGUAGE,
    GateTally,
    QualityGate,
    Thresholds,
    longest_repeated_span,
    ngram_repeat_ratio,
    tier1_score,
    words,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "quality_answers.jsonl"
LABEL_REASONS = {"loop": {REPETITION}, "recites_kernel": {RECITES_KERNEL}, "good": set(), "poor": set()}

GOOD = ("Start with what your student wants: they asked you to use the new name in class, and that request is "
        "theirs to make. The policy was written to keep parents informed, but telling them now would take a "
        "private decision away from the person it belongs to. Talk to the head of pastoral care without naming "
        "anyone, and ask whether the policy allows for a pupil's safety. Meanwhile use the name in class as "
        "asked, keep emails neutral, and tell the student plainly what you can and cannot promise. If there is "
        "a sign of danger at home, that changes the balance, and you should say so to them first.")
PROMPT = ("I'm a teacher, and one of my students has asked me to use a new name and pronouns in class but not in "
          "emails home, because their parents don't know yet. School policy says staff must tell parents about "
          "any such change. What should I do?")


@pytest.fixture(scope="module")
def answers() -> list[dict[str, Any]]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def gate() -> QualityGate:
    return QualityGate([sandwich_text()], refuse_truncated=False)


def test_the_fixture_is_what_its_note_says(answers: list[dict[str, Any]]) -> None:
    labels = Counter(label for a in answers for label in a["labels"])
    assert len(answers) == 32 and labels == {"loop": 19, "recites_kernel": 5, "good": 4, "poor": 5}
    assert sum(a["truncated"] for a in answers) == 29 and all(a["note"] for a in answers)


def test_the_gate_agrees_with_the_hand_labels(answers: list[dict[str, Any]], gate: QualityGate) -> None:
    disagree = []
    for a in answers:
        verdict = gate.check(a["prompt"], a["response"], truncated=a["truncated"])
        expected = set().union(*(LABEL_REASONS[label] for label in a["labels"]))
        if set(verdict.reasons) - {TRUNCATED} != expected:
            disagree.append((a["id"], a["labels"], verdict.reasons, verdict.measures))
        assert (TRUNCATED in verdict.flags) == a["truncated"]
    assert not disagree, disagree


def test_cut_answers_are_refused_by_default_and_counted(answers: list[dict[str, Any]]) -> None:
    strict = QualityGate([sandwich_text()])
    tally = GateTally()
    for a in answers:
        tally.add(strict.check(a["prompt"], a["response"], truncated=a["truncated"]))
    # Only the three short, complete (and poor) answers pass: the gate checks form, not sense.
    assert (tally.checked, tally.passed) == (32, 3)
    assert tally.refused[TRUNCATED] == 29 and tally.refused[REPETITION] == 19 and tally.refused[RECITES_KERNEL] == 5
    kept = QualityGate([sandwich_text()], refuse_truncated=False)
    tally = GateTally()
    for a in answers:
        tally.add(kept.check(a["prompt"], a["response"], truncated=a["truncated"]))
    assert tally.passed == 9 and tally.allowed[TRUNCATED] == 6  # 4 good + 2 poor answers kept, though cut
    assert tally.as_dict()["refused_by_reason"] == {REPETITION: 19, RECITES_KERNEL: 5}


def test_the_labs_tier1_score_misses_most_real_loops(answers: list[dict[str, Any]]) -> None:
    """A measured fact for the data card's reader: 5-word chunks aligned at multiples of 5 rarely repeat when a
    loop's period is not a multiple of 5, so the lab's degeneration check passes most loops."""
    loops = [a for a in answers if "loop" in a["labels"]]
    caught = [a["id"] for a in loops if tier1_score(a["response"]).components["degeneration"] < 0]
    assert 0 < len(caught) < len(loops) / 2, caught
    assert all(tier1_score(a["response"]).passed for a in answers if "good" in a["labels"])
    short = [a for a in answers if "poor" in a["labels"] and not a["truncated"]]
    assert short and not any(tier1_score(a["response"]).passed for a in short)  # no length bonus, score 0


def test_good_text_passes_and_each_defect_is_named(gate: QualityGate) -> None:
    assert gate.check(PROMPT, GOOD).passed, gate.check(PROMPT, GOOD).measures
    assert gate.check(PROMPT, "  ").reasons == (EMPTY,)
    assert gate.check(PROMPT, "Fine.").reasons == (EMPTY,)
    assert gate.check(PROMPT, "ERROR: the server closed the connection").reasons == (BROKEN,)
    assert gate.check(PROMPT, "\ufffd\ufffd" * 30 + GOOD[:50]).reasons == (BROKEN,)
    assert gate.check(PROMPT, GOOD + " " + GOOD).reasons == (REPETITION,)  # a whole answer said twice
    assert gate.check(PROMPT, "-=" * 400).reasons == (REPETITION,)  # no words at all: compression catches it
    said_back = PROMPT + " " + PROMPT.split(".")[0] + "."
    assert RECITES_PROMPT in gate.check(PROMPT, said_back).reasons
    quoting = f'You wrote: "{PROMPT[:80]}". ' + GOOD  # quoting a line of the prompt is fine
    assert gate.check(PROMPT, quoting).passed


def test_kernel_recitation_by_text_and_by_heading(gate: QualityGate) -> None:
    kernel = sandwich_text()
    body = [line for line in kernel.splitlines() if len(line) > 300][0]
    assert gate.check(PROMPT, body[:600]).reasons == (RECITES_KERNEL,)
    assert gate.check(PROMPT, "THE AXIOMS IN PRACTICE\n" + GOOD).reasons == (RECITES_KERNEL,)
    assert gate.check(PROMPT, "A Plan In Practice\n" + GOOD).passed  # a title, not a copied heading
    without_kernel = QualityGate([], refuse_truncated=False)  # nothing to compare with: nothing flagged
    assert without_kernel.check(PROMPT, body[:600]).passed


def test_wrong_language_is_a_cheap_script_and_word_check(gate: QualityGate) -> None:
    russian = ("Начните с того, чего хочет ученик. Политика школы важна, но она написана для других случаев. "
               "Поговорите с руководством, не называя имени, и объясните ученику, что вы можете обещать.")
    assert gate.check(PROMPT, russian).reasons == (WRONG_LANGUAGE,)
    french = ("Commencez par ce que votre élève souhaite : c'est sa demande, et elle lui appartient. La règle de "
              "l'école veut informer les parents, mais les prévenir maintenant leur retirerait une décision qui "
              "ne leur revient pas. Parlez au responsable sans donner de nom, utilisez le prénom en classe, et "
              "dites clairement à l'élève ce que vous pouvez promettre ou non.")
    assert gate.check(PROMPT, french).reasons == (WRONG_LANGUAGE,)
    chinese_prompt = "我的学生请我在课堂上使用新的名字，但学校规定必须告诉家长。我该怎么办？"
    assert gate.check(chinese_prompt, "先问学生自己希望怎样。学校的规定很重要，但现在告诉家长会夺走学生自己的决定。").passed
    assert gate.check(chinese_prompt, GOOD).reasons == (WRONG_LANGUAGE,)
    # A Welsh prompt is not clearly English: an English answer is not judged.
    welsh = "Mae un o fy myfyrwyr wedi gofyn i mi ddefnyddio enw newydd yn y dosbarth. Beth ddylwn i ei wneud?"
    assert gate.check(welsh, GOOD).passed


def test_measures_on_small_cases() -> None:
    assert words("It's 2 o'clock, Ünïcode!") == ["it", "s", "2", "o", "clock", "ünïcode"]
    assert ngram_repeat_ratio(words("a b c d a b c d a b c d"), 4) == pytest.approx(1 - 4 / 9)
    assert ngram_repeat_ratio([], 4) == 0.0
    assert longest_repeated_span(words("x a b c y a b c z")) == 3
    assert longest_repeated_span(words("a b a b a b")) == 4  # overlapping, as in a loop
    assert longest_repeated_span(words("one two three")) == 0


def test_thresholds_are_one_frozen_place() -> None:
    import dataclasses

    t = Thresholds()
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.min_chars = 1  # type: ignore[misc]
    lenient = QualityGate([], thresholds=dataclasses.replace(t, max_repeated_span=10_000, max_ngram_repeat=1.0,
                                                                 min_compression=0.0))
    assert lenient.check(PROMPT, GOOD + " " + GOOD).passed


def test_tier1_components() -> None:
    assert tier1_score("too short").components["empty"] == -20 and tier1_score("too short").total == -20
    plain = tier1_score(GOOD)
    assert plain.components["length"] == 2 and plain.total == 2 and plain.passed
    text = ("Okay, let's see. As an AI I cannot decide for you, and it is important to note the policy. I think "
            "you should talk to the student first. Imagine how it feels. ") + GOOD
    scored = tier1_score(text)
    assert scored.components == {"empty": 0, "compliance": -15, "preamble": -3, "degeneration": 0, "length": 2,
                                 "structure": 0, "creative": 2, "first_person": 1.5}
    assert scored.total == pytest.approx(-12.5) and not scored.passed
    assert tier1_score("History shows " + GOOD).components["creative"] == 0  # "story" inside "history" is not
    listed = tier1_score("## Options\n- talk to the student\n- ask the head of year\n" + GOOD)
    assert listed.components["structure"] == 1
    loop = tier1_score("one two three four five " * 30)
    assert loop.components["degeneration"] == -10 and loop.components["length"] == 2
