"""What the Results page shows, gathered from lemcore: our run summaries and the paper's figures as one
list of result sets, each with per-metric values and 95% intervals (our runs; the paper's GSM8K figures), and
the benchmarks in plain words: their titles and what each needs to be scored."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lemcore.benchmarks import SUITE_IDS, list_runs, load_reference, summarize_run
from lemcore.benchmarks.compare import HEADLINE, MORE, CompareRow
from lemcore.benchmarks.reference import reference_intervals
from lemcore.benchmarks.store import current_judgments, read_run
from lemcore.benchmarks.suites import suite_module
from lemcore.errors import DataError

# (label, suite, metric): the headline metrics, in the lab's order
METRICS = (("GSM8K accuracy (%)", "gsm8k", "accuracy"), ("Truthfulness", "truthfulqa", "truthfulness"),
           ("Safety", "do_not_answer", "safety"), ("Nuance", "do_not_answer", "nuance"),
           ("Kindness", "toxigen", "kindness"), ("Informativeness", "truthfulqa", "informativeness"),
           ("Awareness", "toxigen", "awareness"), ("Ethics composite", "ethics", "composite"),
           ("TruthfulQA MC1 (%)", "truthfulqa_mc", "mc1"), ("TruthfulQA MC2 (%)", "truthfulqa_mc", "mc2"))
REF_KEYS = {"gsm8k": "gsm8k", "truthfulness": "truthfulness", "safety": "safety", "nuance": "nuance",
            "kindness": "kindness"}


# Every suite in plain words, for the benchmark chooser and the answers view.
SUITE_TITLES = {"gsm8k": "GSM8K maths", "truthfulqa": "TruthfulQA", "truthfulqa_mc": "TruthfulQA multiple choice",
                "do_not_answer": "Do Not Answer", "toxigen": "ToxiGen", "ethics": "Ethics prompts"}


def suite_title(suite: str) -> str:
    return SUITE_TITLES.get(suite) or str(getattr(suite_module(suite), "TITLE", suite))


def judged(suite: str) -> bool:
    """Scored by a judge model (truthfulness, safety, … on 1-10), not from the answer alone."""
    return bool(getattr(suite_module(suite), "JUDGED", False))


def suite_need(suite: str) -> str:
    """What a suite needs to be scored, in two or three words for the chooser."""
    return "needs a judge" if judged(suite) else "no judge"


def suite_details(suite: str) -> str:
    """How a suite is scored and where its questions come from when no file is given, in a sentence or two.
    A judged suite run without a judge keeps its answers unscored (lemcore.benchmarks.run): said so."""
    module = suite_module(suite)
    if getattr(module, "LOGLIK", False):
        how = ("Scored by which answers the model itself finds most likely: no judge, and nothing is written, "
               "so it is quick.")
    elif not judged(suite):
        how = "Scored by the final number in each answer: no judge needed."
    else:
        how = ("Scored 1–10 by a judge model. This page runs no judge, so the answers are saved without scores "
               "until a judge reads them.")
    source = ("Without a file: our 100 built-in prompts." if hasattr(module, "default_path") else
              "Without a file: the usual questions, downloaded from the dataset hub once and then kept.")
    return f"{how} {source}"


def suite_summary(suite: str) -> str:
    """`suite_details` in a line or two, for under the chooser."""
    if getattr(suite_module(suite), "LOGLIK", False):
        return "No judge: scored by the answers the model finds likeliest."
    if not judged(suite):
        return "No judge: scored by the final number of each answer."
    return "Needs a judge: this page runs none, so its answers are saved unscored."


def suite_order() -> list[str]:
    """Every suite, the ones scored without a judge first."""
    return sorted(SUITE_IDS, key=lambda s: (judged(s), SUITE_IDS.index(s)))


@dataclass
class ResultSet:
    name: str
    kind: str  # "run" or "reference"
    path: Path | None = None
    spec: str = ""  # what lemcore.benchmarks.compare.load_side accepts
    # (suite, metric) -> (mean, low, high); low/high are None for reference figures (no intervals published)
    values: dict[tuple[str, str], tuple[float, float | None, float | None]] = field(default_factory=dict)
    note: str = ""
    # suite -> how far its judge agrees with the lab's judge, in words ("" : never measured); judged suites only
    calibration: dict[str, str] = field(default_factory=dict)


# (suite, metric) -> unit: "%" for GSM8K accuracy (per-item values are 0 or 100), "" for 1-10 judge scores.
UNITS = {(suite, metric): unit for _label, suite, metric, unit in HEADLINE + MORE}
MINUS = "\u2212"  # a typographic minus in the window; CSV export writes "-"
VERDICTS = {"within noise": "within noise", "distinguishable": "larger than the noise",
            "no interval (reference)": "paper figures: no interval", "no common items": "no items in common"}


def calibration_note(chosen: list[ResultSet], suite: str) -> str:
    """What the page says beside judged numbers: each run's judge and how far it agrees with the lab's judge
    (the paper's), measured by `lem judge calibrate`; unmeasured ones are said to be unmeasured."""
    parts = []
    for rs in chosen:
        if rs.kind != "run" or suite not in rs.calibration:
            continue
        text = rs.calibration[suite]
        parts.append(f"{rs.name}: {text}" if text else
                     f"{rs.name}: its judge's agreement with the lab's judge has not been measured, so its scores "
                     "and the paper's may differ by judge as well as by model")
    return ("Judge calibration. " + "; ".join(parts) + ".") if parts else ""


def _num(value: float, digits: int, *, sign: bool) -> str:
    text = f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"
    return text.replace("-", MINUS)


def digits_for(unit: str) -> int:
    """Decimals shown, as `lem compare` prints them: one for percentages, two for 1-10 scores."""
    return 1 if unit == "%" else 2


def value_text(value: tuple[float, float | None, float | None] | None, unit: str) -> str:
    """A mean with its 95% interval, e.g. "34.0 [20.9, 47.1]" (a paper figure without one: "8.74")."""
    if value is None:
        return ""
    mean, low, high = value
    d = digits_for(unit)
    if low is None or high is None or low != low:
        return _num(mean, d, sign=False)
    return f"{_num(mean, d, sign=False)} [{_num(low, d, sign=False)}, {_num(high, d, sign=False)}]"


def delta_text(row: CompareRow | None) -> str:
    """The one way a difference B - A is written in the window: in the metric's own unit (percentage points
    for GSM8K, points on the 1-10 scale for judge scores), with the same numbers `lem compare` prints, e.g.
    "-20.0 pp [-40.0, -5.0] larger than the noise", or "-8.0 pp (paper figures: no interval)"; an exact test
    adds its p-value and counts, "+10.0 pp [-1.0, +21.8] within noise (p = 0.0625, +5 / −0)"."""
    if row is None or row.delta is None or row.delta != row.delta:
        return ""
    d = digits_for(row.unit)
    unit = " pp" if row.unit == "%" else ""
    verdict = VERDICTS.get(row.verdict, row.verdict)
    diff = row.difference
    if diff is None or diff.delta.n_items == 0:
        return f"{_num(row.delta, d, sign=True)}{unit} ({verdict})"
    iv = diff.delta
    # 0/1 scores with one sample per item: the exact McNemar test decides, so its p-value is shown with it.
    test = f" (p = {diff.p_value:.3g}, +{diff.gains} / {MINUS}{diff.losses})" if diff.p_value is not None else ""
    return (f"{_num(iv.mean, d, sign=True)}{unit} [{_num(iv.low, d, sign=True)}, {_num(iv.high, d, sign=True)}] "
            f"{verdict}{test}")


def _run_set(path: Path, label: str) -> ResultSet:
    summary_file = path / "summary.json"
    try:

        summary = json.loads(summary_file.read_text()) if summary_file.exists() else summarize_run(path)
    except Exception:  # noqa: BLE001 - a broken run folder is listed without numbers
        summary = {}
    rs = ResultSet(label, "run", path, str(path))
    for suite, data in (summary.get("suites") or {}).items():
        if data.get("judge"):
            rs.calibration[suite] = str((data.get("judge_calibration") or {}).get("text") or "")
        for metric, iv in (data.get("metrics") or {}).items():
            mean = iv.get("mean")
            if not isinstance(mean, (int, float)):  # a metric without values has no bar
                continue
            # Stored in the metric's unit already (GSM8K in percent), like lem compare reads them.
            low, high = iv.get("low"), iv.get("high")
            rs.values[(suite, metric)] = (float(mean), float(low) if isinstance(low, (int, float)) else None,
                                          float(high) if isinstance(high, (int, float)) else None)
    return rs


def load_result_sets(extra_runs: Sequence[Path] = ()) -> list[ResultSet]:
    """Our runs (newest first: those in the data folder, then `extra_runs` kept elsewhere, such as a loop's
    own folder), then the paper's figures."""
    sets: list[ResultSet] = []
    listed: set[Path] = set()
    for run in list_runs():
        path = Path(run["path"])
        listed.add(path.resolve())
        sets.append(_run_set(path, str(run.get("label") or path.name)))
    for path in extra_runs:
        if path.resolve() in listed:
            continue
        try:
            run = read_run(path)
        except DataError:  # gone, or not a run folder: nothing to list
            continue
        listed.add(path.resolve())
        sets.append(_run_set(path, str(run.get("label") or path.name)))
    ref = load_reference()
    table = ref["tables"]["1b_five_variant"]
    for key, row in table["rows"].items():
        rs = ResultSet(f"Paper 1B: {row['label']}", "reference", spec=f"ref:1b_five_variant/{key}",
                       note=f"{ref['label']}; {table['judge']}")
        # The paper gives no intervals; a GSM8K figure is k right of 50, whose exact interval shows how wide
        # the noise was (34% of 50 items: 21.2 to 48.8%). Judge means get none.
        bands = reference_intervals(f"1b_five_variant/{key}")
        for (_label, suite, metric) in METRICS:
            ref_key = REF_KEYS.get("gsm8k" if suite == "gsm8k" else metric)
            if ref_key and row.get(ref_key) is not None:
                low, high = bands.get((suite, metric), (None, None))
                rs.values[(suite, metric)] = (float(row[ref_key]), low, high)
        sets.append(rs)
    return sets


def read_items(run: Path, suite: str) -> dict[str, dict[str, Any]]:
    """item id -> the first sample's row (question, response, score) for the side-by-side view, with the
    judge's current verdict on it under "judgment" for judged suites."""

    out: dict[str, dict[str, Any]] = {}
    path = run / f"{suite}.jsonl"
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        key = str(row.get("id") or row.get("item_id") or "")
        if key and (key not in out or int(row.get("sample", 0)) == 0):
            out[key] = row  # later lines for the same sample win (a re-scored answer)
    try:
        judge = read_run(run).get("judges", {}).get(suite)
        judged = current_judgments(run, suite, judge)
    except Exception:  # noqa: BLE001 - the answers still show without the judge's verdicts
        judged = {}
    for key, row in out.items():
        judgment = judged.get((key, int(row.get("sample", 0))))
        if judgment is not None:
            row["judgment"] = judgment
    return out
