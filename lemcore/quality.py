"""Is a generated answer fit to train on? Cheap text checks, and the lab's tier-1 heuristic score.

Pure text in, verdict out: no model, no engine, no file access. The texts an answer must not recite (the
kernel, the axioms) are passed in by the caller, so this module stays a leaf that generation, datasets and
benchmarks can all use.

`QualityGate.check(prompt, answer, truncated=...)` returns a `Verdict`: every problem found (`flags`) and
the ones that refuse the answer (`reasons`). Checks, each with its reason name:

- `empty`: nothing, or less than a sentence; `broken`: a stored generation error (`ERROR: ...`) or text
  that is mostly control characters or replacement characters (a decoding failure).
- `repetition`: a loop: many repeated word n-grams, one long passage said twice, or text that compresses far
  better than prose does; or the generator ended the answer because it looped (`looped=True`, from
  `GenResult.stopped_loop`: the loop was cut short, so the text alone may not show it).
- `recites_kernel`: long verbatim runs of the kernel or axiom texts, or a copy of one of the kernel's
  headings (small models open answers with "LEM DESKTOP ETHICS KERNEL (version 1.0 ..."); `recites_prompt`:
  the answer is mostly the prompt said back.
- `truncated`: cut at the token limit (the generator's flag; unknown for the lab's files, which lack it).
- `wrong_language`: letters mostly in another script than the prompt's, or an English prompt answered in
  another Latin-script language (an English function-word count). Cheap: it cannot tell French from
  Spanish, and it leaves prompts that are not clearly English or clearly one script alone.

Every number the checks use lives in `Thresholds`, with the reason for its value.

`tier1_score` is the lab's tier-1 heuristic ("lek score") as docs/lab-formats.md, "Answer quality
heuristic", states it: the components and weights are the lab's, the phrase lists are ours (the lab's are
not published with the weights), so scores are comparable in kind, not to the decimal.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

EMPTY = "empty"
BROKEN = "broken"
REPETITION = "repetition"
RECITES_KERNEL = "recites_kernel"
RECITES_PROMPT = "recites_prompt"
TRUNCATED = "truncated"
WRONG_LANGUAGE = "wrong_language"
REASONS = (EMPTY, BROKEN, REPETITION, RECITES_KERNEL, RECITES_PROMPT, TRUNCATED, WRONG_LANGUAGE)

# What each reason means, for data cards and the Contribute page.
REASON_TEXT = {
    EMPTY: "empty or shorter than a sentence",
    BROKEN: "a generation error or unreadable text",
    REPETITION: "repeats itself in a loop",
    RECITES_KERNEL: "recites the ethics kernel or the axioms instead of answering",
    RECITES_PROMPT: "mostly repeats the prompt",
    TRUNCATED: "cut off at the token limit",
    WRONG_LANGUAGE: "answers in another language than the prompt's",
}


@dataclass(frozen=True)
class Thresholds:
    """Every limit the gate uses. The values were checked against real answers of the built-in model
    (tests/fixtures/quality_answers.jsonl) and against the shape of good answers: set to catch what a reader
    calls broken, looping or recited, and to leave long, list-shaped or quoting answers alone."""

    # An answer under this many characters is not an answer (the lab's tier-1 "empty" limit is the same 30).
    min_chars: int = 30
    # Share of characters that are control characters or U+FFFD: above this the text is broken (decoding).
    max_garbage_share: float = 0.05
    # Word n-grams for the repetition ratio. 4 words: prose seldom repeats a 4-word run; a loop always does.
    ngram: int = 4
    # Share of the answer's n-grams that repeat an earlier one. Good answers measure under 0.15 (a few set
    # phrases); loops of a sentence or a paragraph measure 0.5 and more.
    max_ngram_repeat: float = 0.3
    # The ratio says little about short answers: only answers with at least this many words are judged by it.
    min_words_for_ratio: int = 40
    # Longest passage (in words) that occurs twice. Good answers re-use phrases of 5-12 words ("the right to
    # decide what happens to"); a passage of this length said twice is a loop.
    max_repeated_span: int = 25
    # zlib-compressed size / raw size. English prose stays above 0.35; a loop, even of varied characters
    # that are not words (dashes, emoji), falls far below. Only judged from `min_bytes_for_compression`.
    min_compression: float = 0.2
    min_bytes_for_compression: int = 400
    # Verbatim runs matched against the kernel and axiom texts are found through n-grams of this many words.
    recite_ngram: int = 8
    # A run of this many words copied from the kernel is recitation (one axiom statement is about 25-35).
    max_kernel_run: int = 20
    # Or: this share of the answer's words lies in runs copied from the kernel.
    max_kernel_share: float = 0.3
    # Kernel headings: lines of the reference text whose letters are mostly capitals. An answer line as
    # capitalised, of at least `heading_min_words` words, most of which (`heading_overlap`) are one heading's
    # words, copies that heading (misspelt copies too: "LEM DESKTOP ETHIC KERNEL").
    heading_min_upper: float = 0.6
    heading_min_words: int = 3
    heading_overlap: float = 0.75
    # The prompt may be quoted (a question, a sentence); an answer whose words are mostly a copy of the
    # prompt, or that copies a run this long, says the prompt back instead of answering.
    max_prompt_share: float = 0.5
    max_prompt_run: int = 50
    # Language: the prompt's main script must hold this share of its letters before the answer is judged,
    min_script_share: float = 0.8
    # and the answer fails when under this share of its letters are in that script.
    min_answer_script_share: float = 0.5
    # Letters needed on each side before the script is judged (a few foreign names do not count).
    min_letters: int = 20
    # English function words ("the", "and", "of" ...): an English prompt has at least this share of them ...
    english_prompt_share: float = 0.2
    # ... and an English answer of `min_words_for_language` words or more has at least this share.
    min_english_answer_share: float = 0.08
    min_words_for_language: int = 30
    # ... with at least this many different words (a loop of one name is a loop, not another language).
    min_distinct_words_for_language: int = 20


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Verdict:
    """What the gate found in one answer. `reasons` refuse it; `flags` also hold what was allowed (a cut
    answer when cut answers are kept). `measures` are the numbers behind the flags, for a person to check."""

    flags: tuple[str, ...]
    reasons: tuple[str, ...]
    measures: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.reasons

    def describe(self) -> str:
        return "; ".join(REASON_TEXT[r] for r in self.reasons) or "passed"


@dataclass
class GateTally:
    """Counts over many verdicts: checked, passed, and answers per reason (one answer may have several)."""

    checked: int = 0
    passed: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # answers refused, per reason
    allowed: Counter[str] = field(default_factory=Counter)  # flags seen on answers that were kept

    def add(self, verdict: Verdict) -> None:
        self.checked += 1
        if verdict.passed:
            self.passed += 1
            self.allowed.update(verdict.flags)
        self.refused.update(verdict.reasons)

    def as_dict(self) -> dict[str, object]:
        return {"checked": self.checked, "passed": self.passed, "refused": self.checked - self.passed,
                "refused_by_reason": {r: self.refused[r] for r in REASONS if self.refused[r]},
                "allowed_flags": {r: self.allowed[r] for r in REASONS if self.allowed[r]}}


# -- text measures -----------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, underscore); punctuation and spacing are ignored."""
    return _WORD.findall(text.casefold())


def ngram_repeat_ratio(tokens: Sequence[str], n: int) -> float:
    """Share of the n-grams that repeat an earlier one: 0 for text that never repeats, near 1 for a loop."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def longest_repeated_span(tokens: Sequence[str]) -> int:
    """Length in words of the longest passage that occurs at least twice (the two may overlap, as in a
    loop). Binary search on the length: if a k-word passage repeats, so does every shorter one."""

    def repeats(k: int) -> bool:
        seen: set[tuple[str, ...]] = set()
        for i in range(len(tokens) - k + 1):
            gram = tuple(tokens[i:i + k])
            if gram in seen:
                return True
            seen.add(gram)
        return False

    low, high = 0, max(len(tokens) - 1, 0)
    while low < high:
        mid = (low + high + 1) // 2
        if repeats(mid):
            low = mid
        else:
            high = mid - 1
    return low


def compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return len(zlib.compress(raw, 9)) / len(raw) if raw else 1.0


def copied_runs(tokens: Sequence[str], source: set[tuple[str, ...]], n: int) -> tuple[int, float]:
    """(longest run of words copied verbatim, share of words inside copied runs), where a run is a chain of
    the answer's n-grams that all occur in `source` (the n-grams of the reference texts)."""
    if len(tokens) < n or not source:
        return 0, 0.0
    covered = [False] * len(tokens)
    longest = chain = 0
    for i in range(len(tokens) - n + 1):
        if tuple(tokens[i:i + n]) in source:
            chain += 1
            longest = max(longest, chain + n - 1)
            for j in range(i, i + n):
                covered[j] = True
        else:
            chain = 0
    return longest, sum(covered) / len(tokens)


def ngram_set(texts: Iterable[str], n: int) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    for text in texts:
        tokens = words(text)
        out.update(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    return out


def script_of(char: str) -> str:
    """The writing system of a letter from its Unicode name ("LATIN", "CYRILLIC", "CJK", "ARABIC" ...);
    Japanese kana and Korean hangul count as CJK, so a Japanese answer to a Chinese prompt is not flagged."""
    name = unicodedata.name(char, "")
    first = name.split(" ", 1)[0] if name else "UNKNOWN"
    return "CJK" if first in ("CJK", "HIRAGANA", "KATAKANA", "HANGUL") else first


def script_shares(text: str) -> tuple[Counter[str], int]:
    """Letters per script, and the number of letters."""
    counts: Counter[str] = Counter(script_of(c) for c in text if c.isalpha())
    return counts, sum(counts.values())


# Our list of very common English function words (a language check, not a vocabulary).
ENGLISH_FUNCTION_WORDS = frozenset((
    "the", "a", "an", "and", "or", "but", "of", "to", "in", "on", "at", "for", "with", "by", "from", "as",
    "is", "are", "was", "were", "be", "been", "it", "this", "that", "these", "those", "not", "no", "you",
    "your", "we", "our", "they", "their", "he", "she", "his", "her", "i", "my", "me", "do", "does", "can",
    "could", "should", "would", "will", "if", "then", "than", "so", "what", "which", "who", "how", "when",
    "there", "here", "have", "has", "had", "about", "into", "also",
))


def _upper_share(line: str) -> float:
    letters = [c for c in line if c.isalpha()]
    return sum(c.isupper() for c in letters) / len(letters) if letters else 0.0


def headings(texts: Iterable[str], min_upper: float, min_words: int) -> list[frozenset[str]]:
    """The words of each heading line (mostly capital letters, `min_words` words or more) in `texts`."""
    return [frozenset(words(line)) for text in texts for line in text.splitlines()
            if len(words(line)) >= min_words and _upper_share(line) >= min_upper]


def english_share(tokens: Sequence[str]) -> float:
    return sum(t in ENGLISH_FUNCTION_WORDS for t in tokens) / len(tokens) if tokens else 0.0


def _garbage_share(text: str) -> float:
    bad = sum(1 for c in text if c == "\ufffd" or (unicodedata.category(c) == "Cc" and c not in "\n\r\t"))
    return bad / len(text) if text else 0.0


# -- the gate --------------------------------------------------------------------------------------------


class QualityGate:
    """Checks answers against `thresholds`; `references` are the texts an answer must not recite (the
    kernel text, the axiom statements, the sandwich's fixed lines). `refuse_truncated=False` keeps answers
    cut at the token limit (still flagged and counted)."""

    def __init__(self, references: Sequence[str] = (), *, thresholds: Thresholds = DEFAULT_THRESHOLDS,
                 refuse_truncated: bool = True) -> None:
        self.thresholds = thresholds
        self.refuse_truncated = refuse_truncated
        self._reference = ngram_set(references, thresholds.recite_ngram)
        self._headings = headings(references, thresholds.heading_min_upper, thresholds.heading_min_words)

    def check(self, prompt: str, answer: str, *, truncated: bool | None = None, looped: bool = False) -> Verdict:
        t = self.thresholds
        flags: list[str] = []
        measures: dict[str, float] = {}
        text = answer.strip()
        if text.startswith("ERROR:") or _garbage_share(text) > t.max_garbage_share:
            flags.append(BROKEN)
        elif len(text) < t.min_chars:
            flags.append(EMPTY)
        if truncated:
            flags.append(TRUNCATED)
        if looped:  # the generator saw the loop and ended it: no need to find it again
            flags.append(REPETITION)
            measures["loop_stopped"] = 1
        if flags and flags[0] in (BROKEN, EMPTY):
            return self._verdict(flags, measures)

        tokens = words(text)
        measures["words"] = len(tokens)
        ratio = ngram_repeat_ratio(tokens, t.ngram)
        span = longest_repeated_span(tokens)
        squeeze = compression_ratio(text)
        measures.update(ngram_repeat=round(ratio, 3), repeated_span=span, compression=round(squeeze, 3))
        if not looped and ((len(tokens) >= t.min_words_for_ratio and ratio > t.max_ngram_repeat)
                           or span >= t.max_repeated_span
                           or (len(text.encode("utf-8")) >= t.min_bytes_for_compression
                               and squeeze < t.min_compression)):
            flags.append(REPETITION)

        run, share = copied_runs(tokens, self._reference, t.recite_ngram)
        copied_heading = self._copied_heading(text)
        measures.update(kernel_run=run, kernel_share=round(share, 3), kernel_heading=int(copied_heading))
        if run >= t.max_kernel_run or share >= t.max_kernel_share or copied_heading:
            flags.append(RECITES_KERNEL)
        prun, pshare = copied_runs(tokens, ngram_set([prompt], t.recite_ngram), t.recite_ngram)
        measures.update(prompt_run=prun, prompt_share=round(pshare, 3))
        if prun >= t.max_prompt_run or pshare >= t.max_prompt_share:
            flags.append(RECITES_PROMPT)

        if self._wrong_language(prompt, text, tokens, measures):
            flags.append(WRONG_LANGUAGE)
        return self._verdict(flags, measures)

    def _copied_heading(self, text: str) -> bool:
        t = self.thresholds
        for line in text.splitlines():
            found = words(line)
            if len(found) < t.heading_min_words or _upper_share(line) < t.heading_min_upper:
                continue
            if any(sum(w in h for w in found) / len(found) >= t.heading_overlap for h in self._headings):
                return True
        return False

    def _wrong_language(self, prompt: str, text: str, tokens: list[str], measures: dict[str, float]) -> bool:
        t = self.thresholds
        p_counts, p_letters = script_shares(prompt)
        a_counts, a_letters = script_shares(text)
        if p_letters >= t.min_letters and a_letters >= t.min_letters:
            script, n = p_counts.most_common(1)[0]
            if n / p_letters >= t.min_script_share:
                measures["answer_script_share"] = round(a_counts[script] / a_letters, 3)
                if a_counts[script] / a_letters < t.min_answer_script_share:
                    return True
                if script == "LATIN":
                    prompt_en = english_share(words(prompt))
                    if (prompt_en >= t.english_prompt_share and len(tokens) >= t.min_words_for_language
                            and len(set(tokens)) >= t.min_distinct_words_for_language):
                        measures["answer_english_share"] = round(english_share(tokens), 3)
                        return english_share(tokens) < t.min_english_answer_share
        return False

    def _verdict(self, flags: list[str], measures: dict[str, float]) -> Verdict:
        reasons = tuple(f for f in flags if f != TRUNCATED or self.refuse_truncated)
        return Verdict(tuple(flags), reasons, measures)


# -- the lab's tier-1 heuristic ------------------------------------------------------------------------------

# Weights and limits: the lab's (docs/lab-formats.md, "Answer quality heuristic").
TIER1_EMPTY_CHARS = 30
TIER1_EMPTY = -20.0
TIER1_COMPLIANCE = -5.0  # per phrase present
TIER1_PREAMBLE = -3.0
TIER1_DEGENERATION = -10.0
TIER1_DEGENERATION_CHUNK = 5  # words per chunk
TIER1_DEGENERATION_UNIQUE = 0.5  # unique chunks / chunks below this is degenerate
TIER1_LONG = ((100, 2.0), (300, 2.0))  # (more than this many words, bonus)
TIER1_STRUCTURE = 1.0
TIER1_CREATIVE = 2.0
TIER1_FIRST_PERSON = 1.5  # per phrase present


def _plain(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u2018", "'").casefold()


def _phrase_pattern(phrases: Sequence[str]) -> list[re.Pattern[str]]:
    """Whole-word matches ("story" must not match "history")."""
    return [re.compile(r"\b" + re.escape(p) + (r"\b" if p[-1].isalnum() else "")) for p in phrases]


def _present(text: str, patterns: list[re.Pattern[str]]) -> int:
    return sum(1 for p in patterns if p.search(text))


# Phrase lists: ours (nine compliance phrases, as in the lab's count).
COMPLIANCE_PHRASES = ("as an ai", "as a language model", "i cannot", "i can't help", "i am unable to",
                      "i'm not able to", "it is important to note", "it's important to note", "i must stress")
_PREAMBLE = re.compile(r"^\s*(okay|ok|sure)\s*,\s*let", re.IGNORECASE)
_STRUCTURE = re.compile(r"^\s*(#{1,6}\s|[-*\u2022]\s|\d{1,2}[.)]\s)|\*\*[^*\n]+\*\*", re.MULTILINE)
CREATIVE_WORDS = ("imagine", "picture this", "story", "metaphor", "as if", "poem", "once upon")
FIRST_PERSON_PHRASES = ("i think", "i believe", "i feel", "in my view", "my view is", "i would suggest",
                        "i'd suggest", "i would argue", "to me,")
_COMPLIANCE = _phrase_pattern(COMPLIANCE_PHRASES)
_CREATIVE = _phrase_pattern(CREATIVE_WORDS)
_FIRST_PERSON = _phrase_pattern(FIRST_PERSON_PHRASES)


@dataclass(frozen=True)
class Tier1Score:
    total: float
    components: dict[str, float]  # empty, compliance, preamble, degeneration, length, structure, creative,
    # first_person: each one's contribution to `total`

    @property
    def passed(self) -> bool:
        return self.total > 0  # the lab's pass rule


def tier1_score(text: str) -> Tier1Score:
    """The lab's tier-1 heuristic: penalties for empty answers, compliance phrases, a formulaic "Okay, let's"
    opening and degeneration; bonuses for length, structure, creative words and first-person opinions."""
    names = ("empty", "compliance", "preamble", "degeneration", "length", "structure", "creative", "first_person")
    parts = dict.fromkeys(names, 0.0)
    if len(text.strip()) < TIER1_EMPTY_CHARS:
        parts["empty"] = TIER1_EMPTY  # nothing else to score in an empty answer
        return Tier1Score(sum(parts.values()), parts)
    low = _plain(text)
    parts["compliance"] = TIER1_COMPLIANCE * _present(low, _COMPLIANCE)
    parts["preamble"] = TIER1_PREAMBLE if _PREAMBLE.match(text) else 0.0
    tokens = words(text)
    size = TIER1_DEGENERATION_CHUNK
    chunks = [tuple(tokens[i:i + size]) for i in range(0, len(tokens), size)]
    if chunks and len(set(chunks)) / len(chunks) < TIER1_DEGENERATION_UNIQUE:
        parts["degeneration"] = TIER1_DEGENERATION
    parts["length"] = sum(bonus for limit, bonus in TIER1_LONG if len(tokens) > limit)
    parts["structure"] = TIER1_STRUCTURE if _STRUCTURE.search(text) else 0.0
    parts["creative"] = TIER1_CREATIVE if _present(low, _CREATIVE) else 0.0
    parts["first_person"] = TIER1_FIRST_PERSON * _present(low, _FIRST_PERSON)
    return Tier1Score(sum(parts.values()), parts)
