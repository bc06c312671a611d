"""GSM8K: grade-school maths word problems, scored by exact match on the final number (no judge).

Reads the public format (`question`, `answer` ending in "#### N") and the lab's 50-item file (`id`,
`question`, `answer_cot`, `correct_answer`). Four accuracy columns side by side: ours, strict, flexible and the
lab's rule (`METRIC_NOTES`). With few-shot examples (`lem bench --num-fewshot K`) an example's assistant turn
is its worked solution (`fewshot_answer`).
"""

from __future__ import annotations

import re
from typing import Any

from lemcore.benchmarks.extract import expected_answer, score_gsm8k
from lemcore.benchmarks.suites import BenchItem, HubSource

ID = "gsm8k"
TITLE = "GSM8K (maths word problems)"
ID_PREFIX = "GSM8K"
FIELDS = "question, answer with '#### N' (or the lab's correct_answer)"
# One line of a question file in this suite's format, shown when a file is missing or wrong.
FILE_EXAMPLE = ('{"question": "Tom has 3 apples and buys 4 more. How many apples does he have?", '
                '"answer": "3 + 4 = 7\\n#### 7"}')
METRICS = ("accuracy", "accuracy_strict", "accuracy_flexible", "accuracy_lab_rule")
# What each accuracy column counts, for summaries and `lem bench` output (extract.py has the rules).
METRIC_NOTES = {
    "accuracy": "ours: '####', \\boxed{}, 'the answer is', bold, then the last number",
    "accuracy_strict": "strict: only the number after '####' (the asked-for format)",
    "accuracy_flexible": "flexible: the last number in the answer",
    "accuracy_lab_rule": "the lab's scorer, reproduced (failed generations count as wrong)",
}
# 0/1 per item (in percent): with one sample per item these get exact intervals (stats.py).
BINARY_METRICS = {m: 100.0 for m in METRICS}
# The lab's scorer counted a failed generation ("ERROR: …") as a wrong answer; its rule does here too, so the
# lab-rule accuracy of imported responses reproduces the lab's own figure. Ours leaves failures out.
FAILED_GENERATION_VALUES = {"accuracy_lab_rule": 0.0}
JUDGED = False
MAX_TOKENS = 1024  # chain-of-thought answers cut at the lab's 512 often lost their final line
HUB = HubSource("openai/gsm8k", "main/test-*.parquet")
# Ours. "####" is the dataset's own answer marker, so asking for it keeps extraction simple when obeyed.
INSTRUCTION = ("Work through the problem below step by step, showing your reasoning. On the last line write "
               "'#### ' followed by the final answer as a number only.")


def parse(obj: dict[str, Any], default_id: str) -> BenchItem:
    question = obj.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("no 'question' text")
    raw = obj.get("correct_answer")
    expected = expected_answer(str(raw)) if raw not in (None, "") else None
    if expected is None and isinstance(obj.get("answer"), str):
        expected = expected_answer(obj["answer"])
    if expected is None:
        raise ValueError("no expected answer ('answer' ending in '#### N', or 'correct_answer')")
    item_id = str(obj.get("id") or default_id)
    reference: dict[str, Any] = {"expected": expected}
    worked = obj.get("answer_cot") or obj.get("answer")
    if isinstance(worked, str) and worked.strip():
        reference["worked"] = worked.strip()  # the example answer when the item is shown as a few-shot example
    return BenchItem(item_id, question.strip(), reference, "")


def messages(item: BenchItem) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{INSTRUCTION}\n\n{item.question}"}]


def fewshot_answer(item: BenchItem) -> str:
    """The assistant turn when this item is a few-shot example: its worked solution without the dataset's
    calculator marks ("<<12*9=108>>"), ending in "#### N" as our instruction asks."""
    worked = re.sub(r"<<[^<>]*>>", "", str(item.reference.get("worked") or "")).strip()
    if "####" not in worked:
        worked = f"{worked}\n#### {item.reference['expected']}".strip()
    return worked


def score(item: BenchItem, response: str) -> dict[str, Any]:
    return score_gsm8k(response, item.reference["expected"])


def metric_values(row_score: dict[str, Any]) -> dict[str, float]:
    """Per-row values the summary averages, in percent: ours, strict, flexible (rows scored before those two
    existed have none until re-scored with `lem score --run`), and the lab rule's (extract.lab_extract) for
    comparison with the lab's published figures."""
    values = {"accuracy": 100.0 * bool(row_score.get("correct"))}
    for metric, key in (("accuracy_strict", "strict_correct"), ("accuracy_flexible", "flexible_correct")):
        if key in row_score:
            values[metric] = 100.0 * bool(row_score[key])
    values["accuracy_lab_rule"] = 100.0 * bool(row_score.get("lab_correct"))
    return values
