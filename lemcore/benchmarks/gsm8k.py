"""GSM8K: grade-school maths word problems, scored by exact match on the final number (no judge).

Reads the public format (`question`, `answer` ending in "#### N") and the lab's 50-item file (`id`,
`question`, `answer_cot`, `correct_answer`).
"""

from __future__ import annotations

from typing import Any

from lemcore.benchmarks.extract import expected_answer, score_gsm8k
from lemcore.benchmarks.suites import BenchItem, HubSource

ID = "gsm8k"
TITLE = "GSM8K (maths word problems)"
ID_PREFIX = "GSM8K"
FIELDS = "question, answer with '#### N' (or the lab's correct_answer)"
METRICS = ("accuracy", "accuracy_lab_rule")
# 0/1 per item (in percent): with one sample per item these get exact intervals (stats.py).
BINARY_METRICS = {"accuracy": 100.0, "accuracy_lab_rule": 100.0}
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
    return BenchItem(item_id, question.strip(), {"expected": expected}, "")


def messages(item: BenchItem) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{INSTRUCTION}\n\n{item.question}"}]


def score(item: BenchItem, response: str) -> dict[str, Any]:
    return score_gsm8k(response, item.reference["expected"])


def metric_values(row_score: dict[str, Any]) -> dict[str, float]:
    """Per-row values the summary averages: accuracy in percent, and the lab rule's (extract.lab_extract) for
    comparison with the lab's published figures."""
    return {"accuracy": 100.0 * bool(row_score.get("correct")),
            "accuracy_lab_rule": 100.0 * bool(row_score.get("lab_correct"))}
