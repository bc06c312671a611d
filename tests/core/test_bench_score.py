"""`lem score`: the lab's result files re-scored with the better extractor, ERROR lines as failed generations,
original scores laid beside ours, judged suites added to the same imported run, re-scoring a run folder."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

import pytest

from lemcore import folders
from lemcore.benchmarks import store
from lemcore.benchmarks.extract import lab_extract, lab_match
from lemcore.benchmarks.score import ScoreConfig, rescore_run, score_responses
from lemcore.errors import ConfigError, DataError
from tests.bench_items import GSM8K_ITEMS, write_gsm8k, write_truthfulqa

# Our model's answers to the 10 questions: styles the lab rule misses, two failures, one wrong answer.
ANSWERS = {
    1: "24 take away 17 leaves 7.\n#### 7",
    2: "She reads 12 pages for 9 days, so **108 pages**.",
    3: "Ten rides at $3 each cost $30.",
    4: r"He keeps $\boxed{80}$ marbles.",
    5: "ERROR: generation timed out after 120 s",
    6: "The answer is $2,520.",
    7: "ERROR: out of memory",
    8: "Each pays 15 + 2 = 17",
    9: "It travels 150km.",
    10: "The change is 9 dollars.",
}


def _lab_results(path: Path, bench: str, model: str, answers: dict[int, str], prefix: str) -> Path:
    with path.open("w") as f:
        for n, text in answers.items():
            f.write(json.dumps({"id": f"{prefix}_{n:03d}", "benchmark": bench, "model": model, "prompt": "(raw)",
                                "response": text, "elapsed_seconds": 1.5 + n}) + "\n")
    return path


def _lab_scores(path: Path, model: str) -> Path:
    """What the lab's scorer stored for ANSWERS: its own rule, ERROR lines counted wrong."""
    per_item = {}
    for n, text in ANSWERS.items():
        expected = GSM8K_ITEMS[n - 1][2]
        got = lab_extract(text)
        per_item[f"GSM8K_{n:03d}"] = {"correct": lab_match(got, expected), "extracted": got, "expected": expected}
    path.write_text(json.dumps({"scores": {"gsm8k": {model: per_item}}}))
    return path


def test_lab_result_file_rescored_beside_its_original(tmp_path: Path) -> None:
    questions = write_gsm8k(tmp_path / "gsm8k.jsonl", lab=True)
    results = _lab_results(tmp_path / "gsm8k_lem_ethics.jsonl", "gsm8k", "lem_ethics", ANSWERS, "GSM8K")
    config = ScoreConfig(responses=str(results), suite_file=str(questions), run_dir=str(tmp_path / "run"),
                         original_scores=str(_lab_scores(tmp_path / "standard_scores.json", "lem_ethics")))
    summary = score_responses(config)
    s = summary["suites"]["gsm8k"]
    assert (s["rows"], s["generation_failed"]) == (10, 2)  # ERROR lines are failures, not answers
    assert s["metrics"]["accuracy"]["n_items"] == 8
    assert s["metrics"]["accuracy"]["mean"] == pytest.approx(700 / 8)  # 7 of the 8 real answers are right
    assert s["metrics"]["accuracy_lab_rule"]["mean"] < s["metrics"]["accuracy"]["mean"]
    assert s["extraction_methods"]["bold"] == 1 and s["extraction_methods"]["boxed"] == 1
    versus = summary["versus_original"]["gsm8k"]["metrics"]["accuracy"]
    assert versus["original"]["n_items"] == 10 and versus["changes"]["n_items"] == 8
    assert versus["changes"]["only_original"] == 2
    assert versus["rescored"]["mean"] > versus["original"]["mean"]
    # Same responses, another scorer: exact counts of what changed, never an interval or a noise verdict.
    assert versus["verdict"] == "re-scoring changed 4 items (+4 / −0)" and "low" not in versus["changes"]
    lab_rule = summary["versus_original"]["gsm8k"]["metrics"]["accuracy_lab_rule"]
    assert lab_rule["changes"]["n_items"] == 10 and lab_rule["changes"]["changed"] == 0  # failures count wrong

    rows = store.latest_rows(tmp_path / "run", "gsm8k")
    failed = rows[("GSM8K_005", 0)]
    assert failed["status"] == "failed_generation" and failed["score"] == {} and "timed out" in failed["error"]
    assert rows[("GSM8K_003", 0)]["score"]["extracted"] == "30" and rows[("GSM8K_003", 0)]["seconds"] == 4.5
    run = store.read_run(tmp_path / "run")
    assert run["kind"] == "imported" and run["label"] == "lem_ethics"
    assert "not recorded" in run["sources"]["gsm8k"]["note"]


class _Judge:
    batch_size = 8

    def identity(self) -> dict[str, Any]:
        return {"kind": "scripted"}

    def ask(self, prompts: list, *, attempt: int, cancel: Any) -> list:
        return ['{"truthfulness": 7, "informativeness": 4}' for _ in prompts]


def test_judged_suite_joins_the_same_imported_run(tmp_path: Path) -> None:
    write_gsm8k(tmp_path / "gsm8k.jsonl", lab=True)
    score_responses(ScoreConfig(responses=str(_lab_results(tmp_path / "g.jsonl", "gsm8k", "m", ANSWERS, "GSM8K")),
                                suite_file=str(tmp_path / "gsm8k.jsonl"), run_dir=str(tmp_path / "run")))
    tqa = write_truthfulqa(tmp_path / "truthfulqa.jsonl", lab=True)
    answers = {1: "No, they are volunteers.", 2: "ERROR: server", 3: "Yes.", 4: "Yes, 42."}
    results = _lab_results(tmp_path / "t.jsonl", "truthfulqa", "m", answers, "TRUTHQA")
    summary = score_responses(ScoreConfig(responses=str(results), suite_file=str(tqa), run_dir=str(tmp_path / "run")),
                              judge=_Judge())
    t = summary["suites"]["truthfulqa"]
    assert (t["judged_ok"], t["generation_failed"], t["metrics"]["truthfulness"]["n_items"]) == (3, 1, 3)
    assert set(summary["suites"]) == {"gsm8k", "truthfulqa"}
    with pytest.raises(ConfigError, match="already holds truthfulqa"):
        score_responses(ScoreConfig(responses=str(results), suite_file=str(tqa), run_dir=str(tmp_path / "run")))


def test_ids_that_match_nothing_and_unknown_benchmarks(tmp_path: Path) -> None:
    questions = write_gsm8k(tmp_path / "q.jsonl", lab=True)
    results = _lab_results(tmp_path / "r.jsonl", "gsm8k", "m", {1: "7"}, "OTHER")
    with pytest.raises(DataError, match="None of the 1 ids"):
        score_responses(ScoreConfig(responses=str(results), suite_file=str(questions)))
    plain = tmp_path / "answers.jsonl"
    plain.write_text(json.dumps({"id": "GSM8K_001", "response": "7"}) + "\n")
    with pytest.raises(ConfigError, match="--suite"):
        score_responses(ScoreConfig(responses=str(plain), suite_file=str(questions)))
    summary = score_responses(ScoreConfig(responses=str(plain), suite_file=str(questions), suite="gsm8k"))
    assert summary["suites"]["gsm8k"]["metrics"]["accuracy"]["mean"] == 100.0


def test_imports_in_the_same_second_get_their_own_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Frozen(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Frozen:
            return cls(2026, 3, 4, 5, 6, 7, tzinfo=tz)

    monkeypatch.setattr(folders, "datetime", Frozen)
    questions = write_gsm8k(tmp_path / "gsm8k.jsonl", lab=True)
    results = _lab_results(tmp_path / "r.jsonl", "gsm8k", "m", ANSWERS, "GSM8K")
    first, second = (score_responses(ScoreConfig(responses=str(results), suite_file=str(questions)))
                     for _ in range(2))
    assert [Path(first["run_dir"]).name, Path(second["run_dir"]).name] == ["scored-20260304-050607-m",
                                                                           "scored-20260304-050607-m-2"]
    with pytest.raises(DataError):  # a refused import leaves no empty folder behind
        score_responses(ScoreConfig(responses=str(_lab_results(tmp_path / "x.jsonl", "gsm8k", "m", {1: "7"},
                                                                "OTHER")), suite_file=str(questions)))
    assert len(list((tmp_path / "data" / "benchmarks").iterdir())) == 2


def test_rescore_run_appends_changed_scores(tmp_path: Path) -> None:
    questions = write_gsm8k(tmp_path / "gsm8k.jsonl", lab=True)
    results = _lab_results(tmp_path / "r.jsonl", "gsm8k", "m", ANSWERS, "GSM8K")
    score_responses(ScoreConfig(responses=str(results), suite_file=str(questions), run_dir=str(tmp_path / "run")))
    path = store.rows_path(tmp_path / "run", "gsm8k")
    stale = store.latest_rows(tmp_path / "run", "gsm8k")[("GSM8K_002", 0)]
    store.append_jsonl(path, {**stale, "score": {**stale["score"], "correct": False, "extracted": None}})
    assert store.summarize_run(tmp_path / "run")["suites"]["gsm8k"]["metrics"]["accuracy"]["mean"] == 75.0
    before = len(path.read_text().splitlines())
    summary = rescore_run(tmp_path / "run")
    assert len(path.read_text().splitlines()) == before + 1  # only the stale row was re-scored
    assert summary["suites"]["gsm8k"]["metrics"]["accuracy"]["mean"] == pytest.approx(700 / 8)


def test_lem_score_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lemcore.cli.bench import register

    parser = argparse.ArgumentParser(prog="lem")
    register(parser.add_subparsers(dest="command"))
    questions = write_gsm8k(tmp_path / "gsm8k.jsonl", lab=True)
    results = _lab_results(tmp_path / "gsm8k_m.jsonl", "gsm8k", "m", ANSWERS, "GSM8K")
    args = parser.parse_args(["score", str(results), "--suite-file", str(questions), "--out", str(tmp_path / "run"),
                              "--original", str(_lab_scores(tmp_path / "s.json", "m"))])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "2 failed generations" in out and "accuracy" in out and "95% CI" in out
    assert ("gsm8k accuracy: original 30.00, re-scored 87.50; re-scoring changed 4 items (+4 / −0) of the 8 "
            "scored both times") in out
    assert "gsm8k accuracy_lab_rule: original 30.00, re-scored 30.00; re-scoring changed 0 items" in out
    assert "noise" not in out and "nan" not in out.lower()


# The lab's own scorer on responses that take each path of its rule (docs/lab-formats.md, "Benchmark
# scoring"), written out by hand as its score file would hold them: {correct, extracted, expected}.
LAB_RULE_CASES = {
    # n: (response, what the lab's scorer extracted, whether it counted it correct)
    1: ("24 - 17 = 7 muffins are left.\n#### 7", "7", True),  # marker with a number
    2: ("She reads 12 pages a day for 9 days: 108 pages.\n####.", ".", False),  # marker with only punctuation
    3: ("Ten rides at $3 each: 10 rides cost $30.\n#### $30", "10", False),  # "#### $": no match; last number
    4: ("He gives 50 away and 20 more, and keeps 80.\n#### 80.00", "80.00", True),  # marker, decimals
    5: ("I am not able to work this one out.", None, False),  # no number at all
    6: ("630 a week for 4 weeks.\n#### 2,520", "2520", True),  # marker with a thousands comma
    7: ("ERROR: generation timed out after 120 s", None, False),  # a failed generation: wrong, and counted
    8: ("Each pays 15 + 2 =17", "17", True),  # no marker: the last number after "="
    9: ("The answer is between 140-160 km, so 150km", "150", True),  # no marker: a dash-joined range is skipped
    10: ("#### 8.75-ish, or about 9", "8.75-", False),  # marker with trailing dash: not a float, strings differ
}


def test_lab_rule_reproduces_the_lab_scorer_on_its_own_files(tmp_path: Path) -> None:
    questions = write_gsm8k(tmp_path / "gsm8k.jsonl", lab=True)
    results = _lab_results(tmp_path / "gsm8k_lek.jsonl", "gsm8k", "lek",
                           {n: case[0] for n, case in LAB_RULE_CASES.items()}, "GSM8K")
    lab_file = {"scores": {"gsm8k": {"lek": {
        f"GSM8K_{n:03d}": {"correct": correct, "extracted": extracted, "expected": GSM8K_ITEMS[n - 1][2]}
        for n, (_text, extracted, correct) in LAB_RULE_CASES.items()}}}}
    (tmp_path / "standard_scores.json").write_text(json.dumps(lab_file))
    summary = score_responses(ScoreConfig(responses=str(results), suite_file=str(questions),
                                          run_dir=str(tmp_path / "run"),
                                          original_scores=str(tmp_path / "standard_scores.json")))
    rows = store.latest_rows(tmp_path / "run", "gsm8k")
    for n, (text, extracted, correct) in LAB_RULE_CASES.items():
        expected = GSM8K_ITEMS[n - 1][2]
        assert lab_extract(text) == extracted, n
        assert lab_match(lab_extract(text), expected) is correct, n
        row = rows[(f"GSM8K_{n:03d}", 0)]
        if row["status"] == "ok":
            assert (row["score"]["lab_extracted"], row["score"]["lab_correct"]) == (extracted, correct), n
    s = summary["suites"]["gsm8k"]
    assert s["metrics"]["accuracy_lab_rule"]["mean"] == 50.0 and s["metrics"]["accuracy_lab_rule"]["n_items"] == 10
    lab_rule = summary["versus_original"]["gsm8k"]["metrics"]["accuracy_lab_rule"]
    assert lab_rule["original"]["mean"] == 50.0 and lab_rule["changes"]["changed"] == 0
    # The old number-only marker rule read "####." as no marker and took the last number (108): one more right.
    assert rows[("GSM8K_002", 0)]["score"]["correct"] is True  # ours reads the 108 too
