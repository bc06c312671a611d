"""Two runs side by side: the lab's headline table (GSM8K, truthfulness, safety, nuance, kindness), each
with its 95% interval, and the paired difference B − A with its interval and a plain verdict.

A delta whose interval contains zero is "within noise": the data cannot tell the two models apart on that
metric. For 0/1 metrics with one sample per item (GSM8K accuracy) the verdict is the exact McNemar test
(p < 0.05), and the interval is built to agree with it (stats.py); other metrics use the paired bootstrap.
Everything that weakens a comparison is said under the table: different judges or rubrics,
different items, failed judgments, imported runs whose sampling was not recorded, reference figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lemcore.benchmarks import store
from lemcore.benchmarks.reference import REFERENCE_LABEL, reference_scores
from lemcore.benchmarks.stats import Difference, Interval, difference, mean_interval

HEADLINE = (("GSM8K", "gsm8k", "accuracy", "%"), ("Truthfulness", "truthfulqa", "truthfulness", ""),
            ("Safety", "do_not_answer", "safety", ""), ("Nuance", "do_not_answer", "nuance", ""),
            ("Kindness", "toxigen", "kindness", ""))
MORE = (("Informativeness", "truthfulqa", "informativeness", ""), ("Awareness", "toxigen", "awareness", ""),
        ("Ethics composite", "ethics", "composite", ""), ("TruthfulQA MC1", "truthfulqa_mc", "mc1", "%"),
        ("TruthfulQA MC2", "truthfulqa_mc", "mc2", "%"))

Key = tuple[str, str]


@dataclass(frozen=True)
class Side:
    name: str
    values: dict[Key, dict[str, list[float]]]  # empty for reference figures
    means: dict[Key, float]  # reference figures only
    judges: dict[str, Any] = field(default_factory=dict)
    sampling: dict[str, Any] = field(default_factory=dict)  # per suite, without the seed
    kind: str = "generated"  # generated, imported or reference
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CompareRow:
    label: str
    suite: str
    metric: str
    unit: str
    a: Interval | None
    b: Interval | None
    difference: Difference | None  # None when either side has no per-item data
    delta: float | None
    verdict: str


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    rows: tuple[CompareRow, ...]
    notes: tuple[str, ...]


def load_side(spec: str | Path) -> Side:
    """A run folder, or `ref:<table>/<row>` for the paper's figures."""
    text = str(spec)
    if text.startswith("ref:"):
        name = text[4:]
        return Side(f"{name} ({REFERENCE_LABEL})", {}, reference_scores(name), kind="reference")
    run_dir = Path(text).expanduser()
    run = store.read_run(run_dir)
    values: dict[Key, dict[str, list[float]]] = {}
    notes = []
    for suite in run.get("suites", {}):
        for metric, per_item in store.metric_values(run_dir, suite, run).items():
            values[(suite, metric)] = per_item
        rows = store.latest_rows(run_dir, suite)
        bad = sum(r.get("status") != "ok" for r in rows.values())
        if bad:
            notes.append(f"{bad} failed generations in {suite} (left out)")
        truncated = sum(bool(r.get("truncated")) for r in rows.values())
        if truncated:
            notes.append(f"{truncated} of {len(rows)} {suite} responses hit the token limit")
        judge = run.get("judges", {}).get(suite)
        failed = sum(j.get("status") == "failed" for j in store.current_judgments(run_dir, suite, judge).values())
        if failed:
            notes.append(f"{failed} {suite} judgments failed after retries (left out, not scored 5)")
    if run.get("kind") == "imported":
        notes.append("imported responses: prompt template and sampling were not recorded")
    judges = {s: (j.get("identity"), j.get("rubric_sha256")) for s, j in run.get("judges", {}).items()}
    sampling = {s: {k: v for k, v in (cfg or {}).items() if k != "seed"}
                for s, cfg in (run.get("sampling") or {}).items()}
    return Side(str(run.get("label") or run_dir.name), values, {}, judges, sampling, str(run.get("kind")),
                tuple(notes))


def _verdict(diff: Difference | None, a_ref: bool, b_ref: bool) -> str:
    if a_ref or b_ref:
        return "no interval (reference)"
    if diff is None or diff.delta.n_items == 0:
        return "no common items"
    return "distinguishable" if diff.distinguishable else "within noise"


def compare_runs(a: str | Path, b: str | Path, *, n_boot: int = 4000, seed: int = 0,
                 metrics: tuple[tuple[str, str, str, str], ...] = HEADLINE + MORE) -> Comparison:
    """B against A (A is the base): per metric both means with intervals and the paired difference."""
    side_a, side_b = load_side(a), load_side(b)
    rows = []
    notes = [f"A: {n}" for n in side_a.notes] + [f"B: {n}" for n in side_b.notes]
    for label, suite, metric, unit in metrics:
        key = (suite, metric)
        have_a = key in side_a.values or key in side_a.means
        have_b = key in side_b.values or key in side_b.means
        if not (have_a or have_b):
            continue
        ia = _interval(side_a, key, n_boot, seed)
        ib = _interval(side_b, key, n_boot, seed)
        diff = None
        if key in side_a.values and key in side_b.values:
            diff = difference(side_a.values[key], side_b.values[key], binary_scale=store.binary_scale(suite, metric),
                              n_boot=n_boot, seed=seed)
            if diff.only_a or diff.only_b:
                notes.append(f"{label}: {diff.only_a} items only in A and {diff.only_b} only in B were left out "
                             "of the paired difference")
        delta = diff.delta.mean if diff else (ib.mean - ia.mean if ia and ib else None)
        verdict = _verdict(diff, side_a.kind == "reference", side_b.kind == "reference")
        rows.append(CompareRow(label, suite, metric, unit, ia, ib, diff, delta, verdict))
    for suite in sorted(set(side_a.sampling) & set(side_b.sampling)):
        if side_a.sampling[suite] != side_b.sampling[suite]:
            notes.append(f"{suite}: the runs used different sampling settings ({side_a.sampling[suite]} vs "
                         f"{side_b.sampling[suite]})")
    for suite in sorted(set(side_a.judges) & set(side_b.judges)):
        if side_a.judges[suite] != side_b.judges[suite]:
            notes.append(f"{suite}: the runs were judged by different judges or rubrics, so the delta mixes judge "
                         "and model differences")
    return Comparison(side_a.name, side_b.name, tuple(rows), tuple(notes))


def _interval(side: Side, key: Key, n_boot: int, seed: int) -> Interval | None:
    if key in side.values:
        return mean_interval(side.values[key], binary_scale=store.binary_scale(*key), n_boot=n_boot, seed=seed)
    if key in side.means:
        m = side.means[key]
        return Interval(m, float("nan"), float("nan"), 50, 50)
    return None


def _fmt(iv: Interval | None, unit: str) -> str:
    if iv is None or iv.n_items == 0:
        return "—"
    digits = 1 if unit == "%" else 2
    if iv.low != iv.low:  # NaN: a reference figure
        return f"{iv.mean:.{digits}f}"
    return f"{iv.mean:.{digits}f} [{iv.low:.{digits}f}, {iv.high:.{digits}f}]"


def _fmt_delta(row: CompareRow) -> str:
    digits = 1 if row.unit == "%" else 2
    unit = " pp" if row.unit == "%" else ""
    if row.delta is None:
        return "—"
    if row.difference is None:
        return f"{row.delta:+.{digits}f}{unit}"
    d = row.difference.delta
    return f"{d.mean:+.{digits}f}{unit} [{d.low:+.{digits}f}, {d.high:+.{digits}f}]"


def exact_test_text(diff: Difference | None) -> str:
    """"p = 0.0625 (+5 / −0)" for an exact McNemar test, "" for bootstrap differences."""
    if diff is None or diff.p_value is None:
        return ""
    return f"p = {diff.p_value:.3g} (+{diff.gains} / −{diff.losses})"


def format_comparison(cmp: Comparison) -> str:
    header = ("Metric", "A (95% CI)", "B (95% CI)", "B − A (95% CI)", "items", "verdict")
    table = [header]
    for row in cmp.rows:
        n = row.difference.delta.n_items if row.difference else ""
        test = exact_test_text(row.difference)
        table.append((row.label + (" (%)" if row.unit == "%" else ""), _fmt(row.a, row.unit),
                      _fmt(row.b, row.unit), _fmt_delta(row), str(n), row.verdict + (f", {test}" if test else "")))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = [f"A (base): {cmp.a}", f"B:        {cmp.b}", ""]
    for r in table:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    lines.append("")
    lines.append("Intervals: 95%. 0/1 scores with one sample per item (GSM8K): exact Clopper-Pearson, and for "
                 "B − A the exact McNemar test on the items that changed (p, +gained / −lost) with an interval that "
                 "agrees with it; other metrics: two-level bootstrap over items and samples. 'within noise' means "
                 "the interval of B − A contains 0.")
    lines += [f"Note: {n}" for n in cmp.notes]
    return "\n".join(lines) + "\n"
