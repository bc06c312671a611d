"""GSM8K answer extraction: find the final number in a free-form answer, whatever style the model used.

The lab's extractor read only "#### N" (which models rarely write) or the last bare number, and so marked
answers like "$243", "\\boxed{18}" or "**42 apples**" wrong (docs/lab-formats.md, "Brittle GSM8K
extraction"). Here the explicit markers are tried first, most specific first, and the last number in the
text is the fallback. The method that matched is stored beside the value so a reviewer can see why an answer
counted. Beside it, the two filters GSM8K results are usually given with: strict (the "####" marker only)
and flexible (the last number in the text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

# A number as models write it: optional sign, currency, thousands separators (",", thin space, LaTeX "{,}"),
# decimals. Groups 1 and 2 are a sign before or after the currency, group 3 the digits. A dash right after a
# word or digit is a range or a subtraction ("5-10", "12-4"), not a sign.
_NUM = (r"((?<![\w)])[-−–])?(?:(?:\\?\$|£|€|USD\s?)\s*([-−–])?)?"
        r"((?:\d{1,3}(?:(?:,|\{,\}|\u2009|\u202f)\d{3})+|\d+)(?:\.\d+)?|\.\d+)")
_NUM_RE = re.compile(_NUM)
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL | re.IGNORECASE)
_HASH = re.compile(r"####\s*(?:\*\*)?\s*(?:answer\s*[:=]?\s*)?" + _NUM, re.IGNORECASE)
_ANSWER_IS = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:\*\*)?\s*(?:is|=|:|would\s+be|will\s+be)\s*(?:\*\*)?\s*[:=]?"
    r"[^\d\n.$\\-]{0,40}?" + _NUM,
    re.IGNORECASE,
)
_BOLD = re.compile(r"\*\*\s*(?:[A-Za-z ]{0,20}[:=]\s*)?" + _NUM + r"\s*[A-Za-z%/ ]{0,20}\*\*")
_FRACTION = re.compile(r"^\\[dt]?frac\{(-?\d+)\}\{(\d+)\}$")


@dataclass(frozen=True)
class Extraction:
    value: str | None  # canonical number text ("1234.5", "-3"); None when the answer holds no number
    method: str  # hash, boxed, answer_is, bold, last_number, none
    span: str = ""  # the text that matched, for review


def canonical_number(text: str) -> str | None:
    """'$1,234.50' -> '1234.5'; '18.00' -> '18'; None if it is not a plain number."""
    cleaned = re.sub(r"[\s$£€,]|\{,\}|\\\$|\\,|USD", "", text.replace("−", "-").replace("–", "-"))
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _from_match(m: re.Match[str]) -> str | None:
    sign = "-" if m.group(1) or m.group(2) else ""
    return canonical_number(sign + m.group(3))


def _boxed_contents(text: str) -> list[str]:
    """Contents of every \\boxed{...} (or \\fbox{...}), braces balanced."""
    found = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            found.append(text[m.end():i - 1])
    return found


def _boxed_value(content: str) -> str | None:
    inner = re.sub(r"\\text\{[^}]*\}|\\mathrm\{[^}]*\}|\\[,;!]|\\%|%", " ", content).strip()
    frac = _FRACTION.match(inner.replace(" ", ""))
    if frac:
        value = Decimal(frac.group(1)) / Decimal(frac.group(2))
        return canonical_number(str(value.quantize(Decimal("0.000001"))))
    m = _NUM_RE.search(inner)
    return _from_match(m) if m else None


def extract_answer(text: str) -> Extraction:
    """The final numeric answer of a GSM8K response, and how it was found."""
    text = _THINK.sub(" ", text or "")  # reasoning models: only the answer after the thinking counts
    for m in reversed(list(_HASH.finditer(text))):
        if (value := _from_match(m)) is not None:
            return Extraction(value, "hash", m.group(0).strip())
    for content in reversed(_boxed_contents(text)):
        if (value := _boxed_value(content)) is not None:
            return Extraction(value, "boxed", content.strip())
    for pattern, method in ((_ANSWER_IS, "answer_is"), (_BOLD, "bold")):
        matches = list(pattern.finditer(text))
        if matches:
            m = matches[-1]
            if (value := _from_match(m)) is not None:
                return Extraction(value, method, m.group(0).strip())
    numbers = list(_NUM_RE.finditer(text))
    if numbers:
        m = numbers[-1]
        if (value := _from_match(m)) is not None:
            return Extraction(value, "last_number", m.group(0).strip())
    return Extraction(None, "none")


# -- the two standard filters, reported side by side -------------------------------------------------------
# Strict measures whether the model followed the answer format; flexible, whether the right number ends its
# text at all. Both read only the answer after a reasoning model's thinking, as extract_answer does.
def strict_extract(text: str) -> str | None:
    """Strict: the number after the last "####" marker (the format our instruction asks for), nothing else."""
    text = _THINK.sub(" ", text or "")
    for m in reversed(list(_HASH.finditer(text))):
        if (value := _from_match(m)) is not None:
            return value
    return None


def flexible_extract(text: str) -> str | None:
    """Flexible: the last number anywhere in the text, whatever comes before it."""
    numbers = list(_NUM_RE.finditer(_THINK.sub(" ", text or "")))
    for m in reversed(numbers):
        if (value := _from_match(m)) is not None:
            return value
    return None


def expected_answer(answer_field: str) -> str | None:
    """The reference value of a GSM8K `answer` ("… #### 72") or the lab's `correct_answer` ("72")."""
    tail = answer_field.rsplit("####", 1)[-1]
    m = _NUM_RE.search(tail)
    return _from_match(m) if m else None


def answers_match(extracted: str | None, expected: str) -> bool:
    if extracted is None:
        return False
    a, b = canonical_number(extracted), canonical_number(expected)
    if a is None or b is None:
        return extracted.strip() == expected.strip()
    return abs(Decimal(a) - Decimal(b)) <= Decimal("1e-6") * max(Decimal(1), abs(Decimal(b)))


# -- the lab's rule, kept so re-scored old runs reproduce the lab's own scores -----------------------------
# docs/lab-formats.md, "Benchmark scoring". The marker captures any run of digits, commas, dots and dashes, so
# "####." captures "." and "#### 12-14" captures "12-14"; neither is a float, and the string comparison that
# follows marks them wrong, as the lab's scorer did. Without a marker: the last number preceded by the start
# of the text, whitespace or "=".
_LAB_HASH = re.compile(r"####\s*([\d,.-]+)")
_LAB_LAST = re.compile(r"(?:^|[\s=])(-?[\d,]+(?:\.\d+)?)")


def lab_extract(text: str) -> str | None:
    """The lab's extraction: the run after the first "####" (commas removed), else the last number after the
    start, whitespace or '='. None for an empty or `ERROR` response, or when there is no number."""
    if not text or text.startswith("ERROR"):
        return None
    m = _LAB_HASH.search(text)
    if m:
        return m.group(1).replace(",", "")
    found = _LAB_LAST.findall(text)
    return found[-1].replace(",", "") if found else None


def lab_match(extracted: str | None, expected: str) -> bool:
    """The lab's comparison: as floats within 0.01 (commas removed), else exact string equality."""
    if extracted is None:
        return False
    try:
        return abs(float(extracted.replace(",", "")) - float(expected.replace(",", ""))) < 0.01
    except ValueError:
        return extracted.strip() == expected.strip()


def score_gsm8k(response: str, expected: str) -> dict[str, object]:
    """The per-row record: ours (correct, extracted, method), the strict and flexible filters, and the lab
    rule's, for comparison."""
    found = extract_answer(response)
    lab = lab_extract(response)
    strict, flexible = strict_extract(response), flexible_extract(response)
    return {
        "correct": answers_match(found.value, expected),
        "extracted": found.value,
        "method": found.method,
        "span": found.span[:120],
        "expected": expected,
        "lab_extracted": lab,
        "lab_correct": lab_match(lab, expected),
        "strict_extracted": strict,
        "strict_correct": answers_match(strict, expected),
        "flexible_extracted": flexible,
        "flexible_correct": answers_match(flexible, expected),
    }
