"""The paper's published figures as a read-only result set, labelled for what they are.

They give the charts something real to show before the user's first run, and let our runs be laid beside
the paper's. They are 50 items, one sample each, without intervals: the label says so wherever they appear.
A published proportion (GSM8K accuracy: each item right or wrong) still has a known noise band, the exact
(Clopper-Pearson) interval of k correct of n items, which `reference_intervals` gives for charts; judge
means have no such band without the per-item scores.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from typing import Any

from lemcore.benchmarks.stats import proportion_interval
from lemcore.errors import ConfigError

REFERENCE_LABEL = "reference, n=50, one sample, no intervals"
# The reference columns and the (suite, metric) of our runs they correspond to.
COLUMNS = {"gsm8k": ("gsm8k", "accuracy"), "truthfulness": ("truthfulqa", "truthfulness"),
           "safety": ("do_not_answer", "safety"), "nuance": ("do_not_answer", "nuance"),
           "kindness": ("toxigen", "kindness")}
# Columns that are a percentage of items answered right (0/1 per item), so k of n is known from the figure.
PROPORTIONS = frozenset({"gsm8k"})


@functools.cache
def _data() -> dict[str, Any]:
    text = resources.files("lemcore.benchmarks").joinpath("reference_results.json").read_text(encoding="utf-8")
    return dict(json.loads(text))


def load_reference() -> dict[str, Any]:
    """A copy of the whole set (callers cannot change the shipped figures)."""
    return copy.deepcopy(_data())


def reference_names() -> list[str]:
    """Names usable as `ref:<table>/<row>` in `lem compare` (absolute tables only)."""
    return [f"{t}/{r}" for t, table in _data()["tables"].items() if t == "1b_five_variant"
            for r in table["rows"]]


def reference_scores(name: str) -> dict[tuple[str, str], float]:
    """{(suite, metric): value} for an absolute row such as '1b_five_variant/lek'."""
    table_name, _, row_name = name.partition("/")
    table = _data()["tables"].get(table_name)
    if table is None or table.get("kind") != "absolute" or row_name not in table["rows"]:
        raise ConfigError(f"No reference row '{name}'. Choose one of: {', '.join(reference_names())}.")
    row = table["rows"][row_name]
    return {COLUMNS[c]: float(row[c]) for c in COLUMNS if row.get(c) is not None}


def reference_intervals(name: str, level: float = 0.95) -> dict[tuple[str, str], tuple[float, float]]:
    """{(suite, metric): (low, high)} in percent for the proportion figures of an absolute row: the exact
    Clopper-Pearson interval of the k correct of the table's n items the figure stands for (34% of 50 is
    17 of 50: [21.2, 48.8]). Judge means get none."""
    scores = reference_scores(name)
    n = int(_data().get("n_items", 50))
    out = {}
    for column in PROPORTIONS:
        key = COLUMNS[column]
        if key in scores:
            k = round(scores[key] / 100 * n)  # the figures are whole items of n, written in percent
            low, high = proportion_interval(k, n, level)
            out[key] = (100 * low, 100 * high)
    return out


def _cell(value: Any, delta: bool) -> str:
    if value is None:
        return "—"
    v = float(value)
    text = f"{v:.0f}" if isinstance(value, int) else f"{v:.2f}"
    return "+" + text if delta and v > 0 else text


def format_reference() -> str:
    data = _data()
    out = [f"{data['label']}", f"({REFERENCE_LABEL})", ""]
    for table in data["tables"].values():
        out.append(f"{table['title']} — judge: {table['judge']}")
        rows = table["rows"]
        columns = [c for c in next(iter(rows.values())) if c != "label"]
        out.append("  " + f"{'':18}" + "".join(f"{c:>14}" for c in columns))
        for row in rows.values():
            out.append("  " + f"{row['label']:18}" + "".join(
                f"{_cell(row.get(c), table['kind'] == 'delta'):>14}" for c in columns))
        if table.get("note"):
            out.append(f"  Note: {table['note']}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
