"""GSM8K answer extraction on a table of answer styles, and the lab rule kept for re-scoring old runs."""

from __future__ import annotations

import pytest

from lemcore.benchmarks.extract import (
    answers_match,
    canonical_number,
    expected_answer,
    extract_answer,
    flexible_extract,
    lab_extract,
    lab_match,
    score_gsm8k,
    strict_extract,
)

# (response, expected value, expected method). Responses are our own, in the styles models actually use.
STYLES = [
    ("She has 7 apples left.\n#### 7", "7", "hash"),
    ("#### 1,250", "1250", "hash"),
    ("####  $18", "18", "hash"),
    ("#### **42**", "42", "hash"),
    ("#### -3", "-3", "hash"),
    ("Step 1: 3 + 4 = 7\n#### 7.00", "7", "hash"),
    ("#### Step 1: count the eggs\n16 - 3 - 4 = 9 eggs are sold.", "9", "last_number"),  # a heading, not the answer
    ("The answer is 18.", "18", "answer_is"),
    ("The final answer is $1,234.50.", "1234.5", "answer_is"),
    ("Final Answer: The final answer is $18$. I hope it is correct.", "18", "answer_is"),
    ("**Answer:** 72", "72", "answer_is"),
    ("Answer: −3", "-3", "answer_is"),
    ("So the answer would be 3.0", "3", "answer_is"),
    ("answer: .5 of the cake", "0.5", "answer_is"),
    ("Therefore, the answer is: she earns $2,520 in four weeks.", "2520", "answer_is"),
    ("The answer is **150 km**.", "150", "answer_is"),
    (r"So the total is $\boxed{42}$.", "42", "boxed"),
    (r"$\boxed{\$1{,}200}$", "1200", "boxed"),
    (r"\boxed{\frac{3}{4}}", "0.75", "boxed"),
    (r"\boxed{18 \text{ dollars}}", "18", "boxed"),
    (r"\boxed{-12}", "-12", "boxed"),
    (r"First 5, then \boxed{8}, and we check 3 more times.", "8", "boxed"),
    ("**18 eggs**", "18", "bold"),
    ("**Total: $45**", "45", "bold"),
    ("So she makes **$2,520** in the end. That is a lot for 4 weeks of work", "2520", "bold"),  # bold beats a later number
    ("She pays $18 per day.", "18", "last_number"),
    ("Total = 2,520 dollars", "2520", "last_number"),
    ("It is 25%.", "25", "last_number"),
    ("He owes -5 dollars", "-5", "last_number"),
    ("between 5-10 apples", "10", "last_number"),  # a range dash is not a minus sign
    ("12-4=8", "8", "last_number"),
    ("owes -$5", "-5", "last_number"),
    ("So, $\\$-4$", "-4", "last_number"),
    ("costs $0.75 each", "0.75", "last_number"),
    ("USD 1,500 in total", "1500", "last_number"),
    ("£30 for the tickets", "30", "last_number"),
    ("The tank holds 300 litres more.", "300", "last_number"),
    ("<think>maybe 5, or 6?</think> The answer is 6", "6", "answer_is"),
    ("<think>it is 40", None, "none"),  # unfinished thinking: nothing after it
    ("The answer is: twelve", None, "none"),
    ("", None, "none"),
    ("I cannot solve this problem.", None, "none"),
]


def test_table_has_at_least_thirty_styles() -> None:
    assert len(STYLES) >= 30


@pytest.mark.parametrize(("response", "value", "method"), STYLES)
def test_extraction_styles(response: str, value: str | None, method: str) -> None:
    found = extract_answer(response)
    assert (found.value, found.method) == (value, method)


@pytest.mark.parametrize(("text", "value"), [("$1,234.50", "1234.5"), ("18.00", "18"), ("-0", "0"),
                                              ("1{,}000", "1000"), ("abc", None), ("1e400x", None)])
def test_canonical_number(text: str, value: str | None) -> None:
    assert canonical_number(text) == value


def test_expected_answer_reads_both_formats() -> None:
    assert expected_answer("45 / 3 = <<45/3=15>>15 each\n#### 1,017") == "1017"
    assert expected_answer("8.75") == "8.75"
    assert expected_answer("no number here") is None


def test_match_is_numeric() -> None:
    assert answers_match("18", "18.0")
    assert answers_match("8.75", "8.750")
    assert not answers_match("18", "19")
    assert not answers_match(None, "3")


def test_ours_finds_what_the_lab_rule_missed() -> None:
    """docs/lab-formats.md, "Brittle GSM8K extraction": "$243", boxed and bold answers were marked wrong."""
    for response, expected in (("She spends $243.", "243"), (r"\boxed{18}", "18"), ("**42**", "42")):
        row = score_gsm8k(response, expected)
        assert row["correct"] is True
        assert row["lab_correct"] is False
        assert row["extracted"] == expected


def test_lab_rule_as_described() -> None:
    assert lab_extract("#### 1,200") == "1200"
    assert lab_extract("x=5 and then 7") == "7"
    assert lab_extract("ERROR: timeout") is None
    assert lab_extract("") is None
    # The marker takes any run of digits, commas, dots and dashes, not only a number (the lab's pattern).
    assert lab_extract("So 108 pages.\n####.") == "." and not lab_match(".", "108")
    assert lab_extract("#### 12-14") == "12-14" and not lab_match("12-14", "12")
    assert lab_extract("#### 18.") == "18." and lab_match("18.", "18")
    assert lab_extract("#### $18 in all, 4 each") == "4"  # "####" then "$": no match, the last number
    assert lab_extract("no digits here") is None
    assert lab_match("1,200", "1200") and lab_match("3.004", "3") and not lab_match("3.02", "3")


@pytest.mark.parametrize(("response", "strict", "flexible"), [
    ("3 + 4 = 7\n#### 7", "7", "7"),
    ("#### 80\nChecked: 150 - 50 - 20.", "80", "20"),  # strict reads the marker, flexible the last number
    ("The answer is 2,520.", None, "2520"),  # no marker: strict finds nothing
    ("#### **$1,200**", "1200", "1200"),
    ("<think>#### 5</think> So it is 9 in the end.", None, "9"),  # only the text after the thinking counts
    ("####. I am not sure.", None, None),
    ("first #### 3, then corrected: #### 4", "4", "4"),
])
def test_strict_and_flexible_filters(response: str, strict: str | None, flexible: str | None) -> None:
    assert strict_extract(response) == strict
    assert flexible_extract(response) == flexible
    row = score_gsm8k(response, "80")
    assert (row["strict_extracted"], row["flexible_extracted"]) == (strict, flexible)
    assert row["strict_correct"] is (strict == "80") and row["flexible_correct"] is (flexible == "80")


def test_gsm8k_reports_four_named_accuracy_columns() -> None:
    from lemcore.benchmarks import gsm8k

    item = gsm8k.parse({"question": "q", "answer": "4 * 20 = <<4*20=80>>80\n#### 80"}, "GSM8K_001")
    values = gsm8k.metric_values(gsm8k.score(item, "#### 80\nChecked: 150 - 50 - 20."))
    assert values == {"accuracy": 100.0, "accuracy_strict": 100.0, "accuracy_flexible": 0.0,
                      "accuracy_lab_rule": 100.0}
    assert list(values) == list(gsm8k.METRICS) and set(gsm8k.METRIC_NOTES) == set(gsm8k.METRICS)
    # A row scored before the two filters existed keeps its columns; it gains them when re-scored.
    assert set(gsm8k.metric_values({"correct": True, "lab_correct": False})) == {"accuracy", "accuracy_lab_rule"}
    assert gsm8k.fewshot_answer(item) == "4 * 20 = 80\n#### 80"
    lab = gsm8k.parse({"id": "GSM8K_002", "question": "q", "correct_answer": "12"}, "x")
    assert gsm8k.fewshot_answer(lab) == "#### 12"

