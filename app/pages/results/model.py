"""What the Results page shows, gathered from lemcore: our run summaries and the paper's figures as one
list of result sets, each with per-metric values and (for our runs) 95% intervals."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from lemcore.benchmarks import list_runs, load_reference, summarize_run
from lemcore.benchmarks.stats import normal_proportion_interval

# (label, suite, metric): the headline metrics, in the lab's order
METRICS = (("GSM8K accuracy (%)", "gsm8k", "accuracy"), ("Truthfulness", "truthfulqa", "truthfulness"),
           ("Safety", "do_not_answer", "safety"), ("Nuance", "do_not_answer", "nuance"),
           ("Kindness", "toxigen", "kindness"), ("Informativeness", "truthfulqa", "informativeness"),
           ("Awareness", "toxigen", "awareness"), ("Ethics composite", "ethics", "composite"))
REF_KEYS = {"gsm8k": "gsm8k", "truthfulness": "truthfulness", "safety": "safety", "nuance": "nuance",
            "kindness": "kindness"}


@dataclass
class ResultSet:
    name: str
    kind: str  # "run" or "reference"
    path: Path | None = None
    spec: str = ""  # what lemcore.benchmarks.compare.load_side accepts
    # (suite, metric) -> (mean, low, high); low/high are None for reference figures (no intervals published)
    values: dict[tuple[str, str], tuple[float, float | None, float | None]] = field(default_factory=dict)
    note: str = ""


@overload
def _scale(suite: str, x: float) -> float: ...


@overload
def _scale(suite: str, x: float | None) -> float | None: ...


def _scale(suite: str, x: float | None) -> float | None:
    return None if x is None else (x * 100 if suite == "gsm8k" and x <= 1.0 else x)


def load_result_sets() -> list[ResultSet]:

    sets: list[ResultSet] = []
    for run in list_runs():
        path = Path(run["path"])
        summary_file = path / "summary.json"
        try:
            import json

            summary = json.loads(summary_file.read_text()) if summary_file.exists() else summarize_run(path)
        except Exception:  # noqa: BLE001 - a broken run folder is listed without numbers
            summary = {}
        rs = ResultSet(str(run.get("label") or path.name), "run", path, str(path))
        for suite, data in (summary.get("suites") or {}).items():
            for metric, iv in (data.get("metrics") or {}).items():
                mean = iv.get("mean")
                if not isinstance(mean, (int, float)):  # a metric without values has no bar
                    continue
                rs.values[(suite, metric)] = (_scale(suite, float(mean)), _scale(suite, iv.get("low")),
                                              _scale(suite, iv.get("high")))
        sets.append(rs)
    ref = load_reference()
    table = ref["tables"]["1b_five_variant"]
    for key, row in table["rows"].items():
        rs = ResultSet(f"Paper 1B: {row['label']}", "reference", spec=f"ref:1b_five_variant/{key}",
                       note=f"{ref['label']}; {table['judge']}")
        for (_label, suite, metric) in METRICS:
            ref_key = REF_KEYS.get("gsm8k" if suite == "gsm8k" else metric)
            if ref_key and row.get(ref_key) is not None:
                value = float(row[ref_key])
                if suite == "gsm8k":
                    # The paper gives no interval; for a proportion of n items the textbook one is exact
                    # enough to show how wide the noise was (about +/-13 points at n=50).
                    lo, hi = normal_proportion_interval(value / 100, int(ref.get("n_items", 50)))
                    rs.values[(suite, metric)] = (value, max(0.0, lo * 100), min(100.0, hi * 100))
                else:
                    rs.values[(suite, metric)] = (value, None, None)
        sets.append(rs)
    return sets


def read_items(run: Path, suite: str) -> dict[str, dict[str, Any]]:
    """item id -> the first sample's row (prompt, response, score) for the side-by-side view."""
    import json

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
        if key and key not in out:
            out[key] = row
    return out
