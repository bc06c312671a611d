"""`lem compare`: the headline table with intervals for two runs, verdicts, caveats, and the reference set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from lemcore.benchmarks.compare import compare_runs, format_comparison
from lemcore.benchmarks.reference import REFERENCE_LABEL, load_reference, reference_scores
from lemcore.benchmarks.score import ScoreConfig, score_responses
from lemcore.errors import ConfigError
from tests.bench_items import (
    DNA_ITEMS,
    GSM8K_ITEMS,
    TOXIGEN_ITEMS,
    TRUTHFUL_ITEMS,
    write_do_not_answer,
    write_gsm8k,
    write_toxigen,
    write_truthfulqa,
)


class _Judge:
    """Constant scores per dimension, e.g. {"safety": 5, "nuance": 4}; `version` changes its identity."""

    batch_size = 16

    def __init__(self, scores: dict[str, int], version: int = 1) -> None:
        self.scores, self.version = scores, version

    def identity(self) -> dict[str, Any]:
        return {"kind": "scripted", "version": self.version}

    def ask(self, prompts: list, *, attempt: int, cancel: Any) -> list:
        out = []
        for p in prompts:
            text = p[0]["content"]
            keys = [k for k in self.scores if f'"{k}"' in text]
            out.append(json.dumps({k: self.scores[k] for k in keys}))
        return out


def _import_run(tmp: Path, name: str, correct: int, scores: dict[str, int], version: int = 1) -> Path:
    """One model's lab-style result files for all four benchmarks, imported into one run folder."""
    run = tmp / name
    files = {"gsm8k": write_gsm8k(tmp / "gsm8k.jsonl", lab=True),
             "truthfulqa": write_truthfulqa(tmp / "truthfulqa.jsonl", lab=True),
             "do_not_answer": write_do_not_answer(tmp / "do_not_answer.jsonl"),
             "toxigen": write_toxigen(tmp / "toxigen.jsonl")}
    counts = {"gsm8k": len(GSM8K_ITEMS), "truthfulqa": len(TRUTHFUL_ITEMS), "do_not_answer": len(DNA_ITEMS),
              "toxigen": len(TOXIGEN_ITEMS)}
    prefixes = {"gsm8k": "GSM8K", "truthfulqa": "TRUTHQA", "do_not_answer": "DNA", "toxigen": "TOXIGEN"}
    for bench, questions in files.items():
        results = tmp / f"{bench}_{name}.jsonl"
        with results.open("w") as f:
            for n in range(1, counts[bench] + 1):
                if bench == "gsm8k":
                    response = f"#### {GSM8K_ITEMS[n - 1][2] if n <= correct else '0'}"
                else:
                    response = "A considered reply."
                f.write(json.dumps({"id": f"{prefixes[bench]}_{n:03d}", "benchmark": bench, "model": name,
                                    "prompt": "", "response": response, "elapsed_seconds": 2.0}) + "\n")
        score_responses(ScoreConfig(responses=str(results), suite_file=str(questions), run_dir=str(run)),
                        judge=_Judge(scores, version))
    return run


def test_compare_prints_the_headline_table_with_intervals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _import_run(tmp_path, "it", correct=5, scores={"truthfulness": 6, "informativeness": 5, "safety": 5,
                                                          "nuance": 4, "kindness": 7, "awareness": 5})
    lek = _import_run(tmp_path, "lek", correct=6, scores={"truthfulness": 6, "informativeness": 5, "safety": 9,
                                                          "nuance": 8, "kindness": 7, "awareness": 6})
    cmp = compare_runs(base, lek, n_boot=2000)
    rows = {r.label: r for r in cmp.rows}
    assert list(rows)[:5] == ["GSM8K", "Truthfulness", "Safety", "Nuance", "Kindness"]
    gsm = rows["GSM8K"]
    assert (gsm.a.mean, gsm.b.mean, gsm.delta) == (50.0, 60.0, 10.0)
    assert gsm.difference.delta.low <= 0 <= gsm.difference.delta.high and gsm.verdict == "within noise"
    assert rows["Safety"].delta == 4.0 and rows["Safety"].verdict == "distinguishable"
    assert rows["Truthfulness"].delta == 0.0 and rows["Truthfulness"].verdict == "within noise"
    assert rows["Safety"].difference.delta.n_items == 4

    from lemcore.cli.bench import register

    parser = argparse.ArgumentParser(prog="lem")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["compare", str(base), str(lek), "--boot", "2000"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "A (base): it" in out and "B:        lek" in out
    for needle in ("GSM8K (%)", "Truthfulness", "Safety", "Nuance", "Kindness", "B − A (95% CI)",
                   "+10.0 pp [", "+4.00 [+4.00, +4.00]", "distinguishable", "within noise",
                   "imported responses: prompt template and sampling were not recorded"):
        assert needle in out, needle
    line = next(x for x in out.splitlines() if x.startswith("GSM8K"))
    assert line.count("[") == 3  # A, B and the difference each with an interval


def test_different_judges_are_called_out(tmp_path: Path) -> None:
    scores = {"truthfulness": 6, "informativeness": 5, "safety": 5, "nuance": 4, "kindness": 7, "awareness": 5}
    a = _import_run(tmp_path, "a", correct=5, scores=scores)
    b = _import_run(tmp_path, "b", correct=5, scores=scores, version=2)
    text = format_comparison(compare_runs(a, b, n_boot=500))
    assert "judged by different judges or rubrics" in text


def test_reference_figures_compare_without_intervals(capsys: pytest.CaptureFixture[str]) -> None:
    cmp = compare_runs("ref:1b_five_variant/it", "ref:1b_five_variant/lek")
    rows = {r.label: r for r in cmp.rows}
    assert rows["GSM8K"].delta == pytest.approx(-8.0) and rows["Truthfulness"].delta == pytest.approx(1.26)
    assert all(r.verdict == "no interval (reference)" and r.difference is None for r in cmp.rows)
    assert REFERENCE_LABEL in cmp.a
    text = format_comparison(cmp)
    assert "34.0" in text and "-8.0 pp" in text and "[" not in text.split("B − A")[1].split("Intervals")[0]

    from lemcore.cli.bench import register

    parser = argparse.ArgumentParser(prog="lem")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "--reference"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "no confidence intervals" in out and "8.74" in out and "+0.06" in out


def test_reference_set_is_read_only_and_complete() -> None:
    data = load_reference()
    data["tables"]["1b_five_variant"]["rows"]["it"]["gsm8k"] = 99
    assert reference_scores("1b_five_variant/it")[("gsm8k", "accuracy")] == 34.0
    scale = load_reference()["tables"]["multi_scale_deltas"]["rows"]
    assert [scale[s]["gsm8k"] for s in ("1b", "4b", "12b", "27b")] == [-6, -4, -2, 0]
    assert [scale[s]["safety"] for s in ("1b", "4b", "12b", "27b")] == [0.06, 0.04, 0.04, 0.08]
    five = load_reference()["tables"]["1b_five_variant"]["rows"]
    assert five["lek_allen"] == {"label": "LEK+Allen", "gsm8k": 28, "truthfulness": 4.20, "safety": 9.14,
                                 "nuance": 8.62, "kindness": 7.96}
    with pytest.raises(ConfigError, match="No reference row"):
        reference_scores("multi_scale_deltas/1b")


def test_gsm8k_delta_uses_the_exact_mcnemar_test(tmp_path: Path) -> None:
    """B gains 5 items and loses none: p = 0.0625 by the exact sign test, so 'within noise', with the p-value
    and the counts in the table, and an interval that contains 0."""
    scores = {"truthfulness": 6, "informativeness": 5, "safety": 5, "nuance": 4, "kindness": 7, "awareness": 5}
    a = _import_run(tmp_path, "a", correct=5, scores=scores)
    b = _import_run(tmp_path, "b", correct=10, scores=scores)
    cmp = compare_runs(a, b, n_boot=500)
    gsm = next(r for r in cmp.rows if r.label == "GSM8K")
    assert gsm.difference is not None and gsm.difference.p_value == 0.0625
    assert (gsm.difference.gains, gsm.difference.losses) == (5, 0) and gsm.delta == 50.0
    assert gsm.difference.delta.low < 0 < gsm.difference.delta.high and gsm.verdict == "within noise"
    assert gsm.a is not None and gsm.a.method.startswith("exact")  # Clopper-Pearson for 5 of 10
    text = format_comparison(cmp)
    line = next(x for x in text.splitlines() if x.startswith("GSM8K"))
    assert "within noise, p = 0.0625 (+5 / −0)" in line
    assert "exact McNemar" in text


def test_compare_json_has_no_nan(capsys: pytest.CaptureFixture[str]) -> None:
    from lemcore.cli.bench import register

    parser = argparse.ArgumentParser(prog="lem")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["compare", "ref:1b_five_variant/it", "ref:1b_five_variant/lek", "--json"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "NaN" not in out
    rows = json.loads(out)["rows"]
    assert rows[0]["a"]["mean"] == 34.0 and rows[0]["a"]["low"] is None
