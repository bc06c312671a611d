"""The Results page: paper figures on first launch; real benchmark runs from the page (any suite, several at
once, the file format said when a file is missing or wrong); intervals in the bars and the delta table;
answers side by side; opening on a pair of runs; PNG and CSV export."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from app.pages.results.model import MINUS, SUITE_TITLES
from lemcore.benchmarks import SUITE_IDS, list_runs, read_run
from lemcore.benchmarks.reference import reference_intervals
from lemcore.benchmarks.score import ScoreConfig, score_responses
from lemcore.benchmarks.stats import proportion_interval
from lemcore.benchmarks.suites import suite_module
from lemcore.errors import ConfigError
from lemcore.models.catalog import EMBEDDED_ID
from lemcore.settings import Settings, data_dir
from tests.bench_items import DNA_ITEMS, GSM8K_ITEMS, write_do_not_answer, write_gsm8k, write_truthfulqa_mc

DELTA = re.compile(r"([+-]\d+\.\d+)( pp)? \[([+-]\d+\.\d+), ([+-]\d+\.\d+)\]")


class _Judge:
    """Constant scores per dimension, with a reason, as a judge model would reply."""

    batch_size = 16

    def __init__(self, scores: dict[str, int], reason: str) -> None:
        self.scores, self.reason = scores, reason

    def identity(self) -> dict[str, Any]:
        return {"kind": "scripted"}

    def ask(self, prompts: list, *, attempt: int, cancel: Any) -> list:
        out = []
        for p in prompts:
            keys = [k for k in self.scores if f'"{k}"' in p[0]["content"]]
            out.append(json.dumps({**{k: self.scores[k] for k in keys}, "reasoning": self.reason}))
        return out


def _imported_run(tmp: Path, name: str, correct: int, safety: int, reason: str, run: Path | None = None) -> Path:
    """One model's answers to our 10 GSM8K items (`correct` of them right) and the Do Not Answer items
    (judged), imported with `lem score` into a run folder (by default one the Results page lists)."""
    run = run or data_dir() / "benchmarks" / name
    gsm = tmp / f"gsm8k_{name}.jsonl"
    with gsm.open("w") as f:
        for n, (_q, _w, final) in enumerate(GSM8K_ITEMS, start=1):
            answer = final if n <= correct else "4"
            f.write(json.dumps({"id": f"GSM8K_{n:03d}", "benchmark": "gsm8k", "model": name, "prompt": "",
                                "response": f"Let me work it out.\n#### {answer}"}) + "\n")
    score_responses(ScoreConfig(responses=str(gsm), suite_file=str(write_gsm8k(tmp / "gsm8k.jsonl", lab=True)),
                                run_dir=str(run)))
    dna = tmp / f"dna_{name}.jsonl"
    with dna.open("w") as f:
        for n in range(1, len(DNA_ITEMS) + 1):
            f.write(json.dumps({"id": f"DNA_{n:03d}", "benchmark": "do_not_answer", "model": name, "prompt": "",
                                "response": "I would rather not help with that, but here is a safer way."}) + "\n")
    score_responses(ScoreConfig(responses=str(dna), suite_file=str(write_do_not_answer(tmp / "dna.jsonl")),
                                run_dir=str(run)), judge=_Judge({"safety": safety, "nuance": 7}, reason))
    return run


def _tick_only(page, wanted) -> None:
    for n in range(page.picker.count()):
        on = wanted(page.sets[n])
        page.picker.item(n).setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)


def _normal(text: str) -> str:
    return text.replace(MINUS, "-")


def test_first_launch_shows_paper_figures(qtbot, make_window) -> None:
    page = make_window(settings=Settings(first_run_done=True)).pages["Results"]
    names = [rs.name for rs in page.selected()]
    assert names == ["Paper 1B: IT", "Paper 1B: LEK"]
    it = page.selected()[0].values[("gsm8k", "accuracy")]
    low, high = proportion_interval(17, 50)  # 34% of 50 items: the exact (Clopper-Pearson) interval
    assert it == (34, pytest.approx(100 * low), pytest.approx(100 * high))
    assert round(it[1], 1) == 21.2 and round(it[2], 1) == 48.8  # not the Wald [20.9, 47.1]
    lek = page.selected()[1].values[("gsm8k", "accuracy")]
    assert lek[1:] == reference_intervals("1b_five_variant/lek")[("gsm8k", "accuracy")]
    assert page.selected()[0].values[("do_not_answer", "safety")] == (8.74, None, None)  # judge means: none
    assert "no published intervals" in page.note.text()


def test_benchmark_run_from_page_then_compare_and_export(qtbot, make_window, tiny_llama, tmp_path) -> None:
    page = make_window(settings=Settings(first_run_done=True)).pages["Results"]
    items = write_gsm8k(tmp_path / "gsm8k.jsonl")
    assert page.form.checked() == ["gsm8k"] and page.bench_model.value() == EMBEDDED_ID  # the defaults
    for _ in range(2):  # two runs of the same model (different seeds per run folder) to compare
        page.bench_model.setText(str(tiny_llama))
        page.form.set_file("gsm8k", items)
        page.bench_samples.setValue(2)
        qtbot.mouseClick(page.run_btn, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: page.run_btn.isEnabled(), timeout=180000)
        assert page.status.state == "idle", page.status.text
    runs = [rs for rs in page.sets if rs.kind == "run"]
    assert len(runs) == 2
    mean, low, high = runs[0].values[("gsm8k", "accuracy")]
    assert low is not None and low <= mean <= high
    page.base.setCurrentIndex(page.sets.index(runs[1]))
    for n in range(page.picker.count()):
        item = page.picker.item(n)
        item.setCheckState(Qt.CheckState.Checked if page.sets[n].kind == "run" else Qt.CheckState.Unchecked)
    page.redraw()
    delta = page.table.item(0, 3).text()
    assert "[" in delta and "pp" in delta and "noise" in delta, delta
    page.tabs.setCurrentIndex(3)
    answer = page.answer_a.toPlainText()
    assert page.items.count() == 10 and "Answer" in answer and "How it was scored" in answer
    assert "{" not in answer and ("Correct." in answer or "Incorrect." in answer), answer
    page.tabs.setCurrentIndex(0)
    page.export_png(str(tmp_path / "chart.png"))
    page.export_csv(str(tmp_path / "table.csv"))
    assert (tmp_path / "chart.png").stat().st_size > 2000
    with open(tmp_path / "table.csv", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][0] == "Metric" and rows[1][0].startswith("GSM8K")


def test_cancelled_benchmark_resumes_in_its_folder(qtbot, make_window, tiny_llama, tmp_path) -> None:
    """Every run gets a new folder, except a cancelled one started again with the same settings."""
    page = make_window(settings=Settings(first_run_done=True)).pages["Results"]
    page.bench_model.setText(str(tiny_llama))
    page.form.set_file("gsm8k", write_gsm8k(tmp_path / "gsm8k.jsonl", count=3))
    page.bench_samples.setValue(1)
    qtbot.mouseClick(page.run_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page._run_dir is not None, timeout=60000)  # its folder exists: cancel now
    qtbot.mouseClick(page.cancel_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.run_btn.isEnabled(), timeout=60000)
    assert page.status.state == "paused", page.status.text
    cancelled = page._run_dir
    for _ in range(2):  # the cancelled run resumes; the one after it is a new run
        qtbot.mouseClick(page.run_btn, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: page.run_btn.isEnabled(), timeout=180000)
        assert page.status.state == "idle", page.status.text
    runs = sorted(r["path"] for r in list_runs())
    assert len(runs) == 2 and cancelled in runs
    assert [s["outcome"] for s in read_run(cancelled)["sessions"]] == ["cancelled", "finished"]


def _cell(page: Any, label: str, column: int) -> str:
    """The delta table's cell in the row whose metric starts with `label` (rows hold only metrics with data)."""
    row = next(r for r in range(page.table.rowCount()) if page.table.item(r, 0).text().startswith(label))
    return page.table.item(row, column).text()


def test_paper_figures_delta_in_the_metrics_units(qtbot, make_window, capsys) -> None:
    """IT 34% -> LEK 26% on GSM8K is -8.0 percentage points, as `lem compare` prints it; judge scores keep
    their 1-10 scale (safety 8.74 -> 8.58 is -0.16)."""
    page = make_window(settings=Settings(first_run_done=True)).pages["Results"]
    assert page.base.currentText() == "Paper 1B: IT" and [rs.name for rs in page.selected()][1] == "Paper 1B: LEK"
    assert page.table.horizontalHeaderItem(3).text() == "Δ Paper 1B: LEK vs base"
    gsm, safety = _cell(page, "GSM8K", 3), _cell(page, "Safety", 3)
    assert gsm == f"{MINUS}8.0 pp (paper figures: no interval)", gsm
    assert safety == f"{MINUS}0.16 (paper figures: no interval)", safety
    assert page.table.item(0, 1).text() == "34.0 [21.2, 48.8]"  # exact interval of 17 of 50

    from lemcore.cli.main import main

    capsys.readouterr()
    assert main(["compare", "ref:1b_five_variant/it", "ref:1b_five_variant/lek"]) == 0
    cli = capsys.readouterr().out
    assert "-8.0 pp" in next(x for x in cli.splitlines() if x.startswith("GSM8K"))
    assert "-0.16" in next(x for x in cli.splitlines() if x.startswith("Safety"))


def test_delta_table_shows_a_20_point_drop_as_the_cli_does(qtbot, make_window, tmp_path, capsys) -> None:
    base = _imported_run(tmp_path, "base-model", correct=10, safety=8, reason="Refuses and points to help.")
    lower = _imported_run(tmp_path, "tuned-model", correct=8, safety=9, reason="Kind refusal with a safer path.")
    page = make_window(settings=Settings(first_run_done=True)).pages["Results"]
    names = [rs.name for rs in page.sets]
    page.base.setCurrentIndex(names.index("base-model"))
    _tick_only(page, lambda rs: rs.kind == "run")
    page.redraw()
    headers = [page.table.horizontalHeaderItem(c).text() for c in range(page.table.columnCount())]
    assert headers == ["Metric", "Base: base-model", "tuned-model", "Δ tuned-model vs base"]
    assert page.table.item(0, 0).text().startswith("GSM8K")
    cell = page.table.item(0, 3).text()
    assert cell.startswith(f"{MINUS}20.0 pp ["), cell  # not -2000.00: GSM8K is already in percent
    assert page.table.item(0, 1).text().startswith("100.0") and page.table.item(0, 2).text().startswith("80.0")
    safety = _cell(page, "Safety", 3)
    assert safety.startswith("+1.00 [+1.00, +1.00]") and "larger than the noise" in safety, safety

    from lemcore.cli.main import main

    capsys.readouterr()
    assert main(["compare", str(base), str(lower)]) == 0
    cli = capsys.readouterr().out
    for label in ("GSM8K", "Safety", "Nuance"):
        line = next(x for x in cli.splitlines() if x.startswith(label))
        assert DELTA.search(line).groups() == DELTA.search(_normal(_cell(page, label, 3))).groups(), line

    page.export_csv(str(tmp_path / "table.csv"))
    with open(tmp_path / "table.csv", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[1][3].startswith("-20.0 pp [")  # plain minus signs for spreadsheets


def test_answers_side_by_side_are_written_for_people(qtbot, make_window, tmp_path) -> None:
    _imported_run(tmp_path, "base-model", correct=10, safety=8, reason="Refuses and points to help.")
    _imported_run(tmp_path, "tuned-model", correct=8, safety=9, reason="Kind refusal with a safer path.")
    page = make_window(settings=Settings(first_run_done=True)).pages["Results"]
    page.tabs.setCurrentIndex(3)
    page.drill_a.setCurrentIndex(page.drill_a.findText("base-model"))
    page.drill_b.setCurrentIndex(page.drill_b.findText("tuned-model"))
    page.drill_suite.setCurrentIndex(page.drill_suite.findData("gsm8k"))
    assert page.items.count() == 10
    page.items.setCurrentRow(9)  # the tuned model got this one wrong
    a, b = page.answer_a.toPlainText(), page.answer_b.toPlainText()
    for text in (a, b):
        assert "{" not in text and "'correct'" not in text and "extracted" not in text, text
        assert "Question" in text and "Answer" in text and GSM8K_ITEMS[9][0] in text
    assert "Correct." in a and f"final number: {GSM8K_ITEMS[9][2]}" in a
    assert "Incorrect." in b and "final number: 4" in b and f"The right answer is {GSM8K_ITEMS[9][2]}" in b

    page.drill_suite.setCurrentIndex(page.drill_suite.findData("do_not_answer"))
    page.items.setCurrentRow(0)
    a, b = page.answer_a.toPlainText(), page.answer_b.toPlainText()
    assert "Safety: 8 of 10" in a and "Nuance: 7 of 10" in a and "Refuses and points to help." in a, a
    assert "Safety: 9 of 10" in b and "Kind refusal with a safer path." in b, b
    assert "{" not in a + b and "'scores'" not in a + b


def _run(qtbot, page) -> None:
    qtbot.mouseClick(page.run_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.run_btn.isEnabled(), timeout=300000)


def test_the_form_lists_every_suite_with_what_it_needs(qtbot, make_window) -> None:
    page = make_window(settings=Settings(first_run_done=True)).pages["Results"]
    rows = [page.form.suites.item(r) for r in range(page.form.suites.count())]
    assert sorted(str(item.data(Qt.ItemDataRole.UserRole)) for item in rows) == sorted(SUITE_IDS)
    for item in rows:
        suite = str(item.data(Qt.ItemDataRole.UserRole))
        need = "(needs a judge)" if suite_module(suite).JUDGED else "(no judge)"
        assert item.text() == f"{SUITE_TITLES[suite]} {need}", item.text()
    assert rows[0].text() == "GSM8K maths (no judge)" and rows[1].text() == "TruthfulQA multiple choice (no judge)"
    page.form.suites.setCurrentRow(2)  # a judged one: what happens without a judge is said
    assert "Needs a judge" in page.form.details.text() and "unscored" in page.form.details.text()
    page.form.set_checked([])
    page.run_benchmark()
    assert page.status.state == "error" and "Tick at least one benchmark" in page.status.text
    assert page.job is None


def test_multiple_choice_and_ethics_run_together_from_the_page(qtbot, make_window, tiny_llama, tmp_path) -> None:
    """TruthfulQA MC from a 3-item file and the ethics prompts from their usual source, in one run: the run
    is listed and ticked with MC1/MC2 values, and the status says the ethics answers wait for a judge."""
    page = make_window(settings=Settings(first_run_done=True)).pages["Results"]
    page.left_tabs.setCurrentIndex(1)
    page.bench_model.setText(str(tiny_llama))
    page.form.set_checked(["ethics"])
    page.form.set_file("truthfulqa_mc", write_truthfulqa_mc(tmp_path / "mc.jsonl", count=3))
    assert page.form.checked() == ["truthfulqa_mc", "ethics"]  # choosing a file ticks its benchmark
    page.bench_n.setValue(3)
    page.bench_samples.setValue(1)
    _run(qtbot, page)
    assert page.status.state == "idle", page.status.text
    assert "need a judge (Ethics prompts: 3)" in page.status.text, page.status.text
    assert page.left_tabs.currentIndex() == 0  # back on the list, where the new run is
    runs = [rs for rs in page.sets if rs.kind == "run"]
    assert len(runs) == 1 and runs[0] in page.selected()
    run = read_run(runs[0].path)
    assert set(run["suites"]) == {"truthfulqa_mc", "ethics"}
    assert run["suites"]["ethics"]["subsample"]["n"] == 3 and run["suites"]["ethics"]["total_in_file"] == 100
    for metric in ("mc1", "mc2"):
        mean, low, high = runs[0].values[("truthfulqa_mc", metric)]
        assert low is not None and high is not None and low <= mean <= high
    labels = [page.table.item(r, 0).text() for r in range(page.table.rowCount())]
    assert "TruthfulQA MC1 (%)" in labels and "TruthfulQA MC2 (%)" in labels
    page.metric_box.setCurrentIndex(page.metric_box.findText("TruthfulQA MC1 (%)"))
    assert page.bars.plotItem.titleLabel.text == "TruthfulQA MC1 (%)"
    page.tabs.setCurrentIndex(3)
    page.drill_suite.setCurrentIndex(page.drill_suite.findData("truthfulqa_mc"))
    assert page.items.count() == 3
    answer = page.answer_a.toPlainText()
    assert "finds most likely" in answer and "(MC1)" in answer and "(MC2)" in answer, answer


@pytest.mark.parametrize("case", ["offline", "wrong format"])
def test_a_missing_or_wrong_question_file_shows_the_format(qtbot, make_window, tmp_path, monkeypatch,
                                                           case) -> None:
    page = make_window(settings=Settings(first_run_done=True)).pages["Results"]
    page.form.set_checked(["truthfulqa"] if case == "offline" else [])
    if case == "offline":
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        suite = "truthfulqa"
    else:
        page.form.set_file("truthfulqa_mc", write_gsm8k(tmp_path / "gsm8k.jsonl", count=3))
        suite = "truthfulqa_mc"
    _run(qtbot, page)
    text = page.status.text
    assert page.status.state == "error", text
    module = suite_module(suite)
    assert module.TITLE in text and module.FIELDS in text and text.endswith(module.FILE_EXAMPLE), text
    assert "--suite" not in text and "HF_HUB" not in text  # no command line in the window
    assert list_runs() == []  # nothing was started, so no empty run folder


def test_show_pair_opens_on_the_difference_of_two_runs(qtbot, make_window, tmp_path) -> None:
    base = _imported_run(tmp_path, "base-model", correct=10, safety=8, reason="Refuses and points to help.")
    _imported_run(tmp_path, "other-model", correct=9, safety=8, reason="Refuses.")
    # The tuned run lives in its own folder (as a loop keeps it), outside the data folder's list.
    tuned = _imported_run(tmp_path, "tuned-model", correct=8, safety=9, reason="Kind refusal with a safer path.",
                          run=tmp_path / "loop" / "bench-tuned")
    page = make_window(settings=Settings(first_run_done=True)).pages["Results"]
    assert "tuned-model" not in [rs.name for rs in page.sets]
    page.left_tabs.setCurrentIndex(1)
    page.show_pair(base, tuned)
    assert [rs.name for rs in page.selected()] == ["base-model", "tuned-model"]  # exactly these two
    assert page.base.currentText() == "base-model"
    assert page.tabs.currentWidget() is page.table and page.tabs.tabText(page.tabs.currentIndex()) == \
        "Difference from base"
    assert page.left_tabs.currentIndex() == 0
    headers = [page.table.horizontalHeaderItem(c).text() for c in range(page.table.columnCount())]
    assert headers == ["Metric", "Base: base-model", "tuned-model", "Δ tuned-model vs base"]
    assert page.table.item(0, 3).text().startswith(f"{MINUS}20.0 pp [")
    assert (page.drill_a.currentText(), page.drill_b.currentText()) == ("base-model", "tuned-model")
    page.show_pair(tuned, base)  # the other way round: reloaded, the base swapped
    assert page.base.currentText() == "tuned-model" and page.table.item(0, 3).text().startswith("+20.0 pp [")
    assert len([rs for rs in page.sets if rs.kind == "run"]) == 3
    with pytest.raises(ConfigError, match="holds no benchmark run"):
        page.show_pair(base, tmp_path / "not-a-run")


def test_judged_numbers_show_their_judges_calibration(make_window) -> None:
    """Beside a judged number: how far that run's judge agrees with the lab's judge, or that nobody measured it."""
    from lemcore.benchmarks import store
    from lemcore.settings import data_dir

    def judged_run(name: str, calibration: dict | None) -> None:
        folder = data_dir() / "benchmarks" / name
        folder.mkdir(parents=True)
        (folder / store.RUN_FILE).write_text(json.dumps({"format": store.FORMAT, "label": name, "kind": "generated"}))
        suite = {"metrics": {"truthfulness": {"mean": 6.5, "low": 6.0, "high": 7.0}},
                 "judge": {"kind": "api", "model": "judge-model"}, "judge_calibration": calibration}
        (folder / "summary.json").write_text(json.dumps({"suites": {"truthfulqa": suite}}))

    judged_run("calibrated", {"text": "agreement with standard_scores.json on 50 items: truthfulness Spearman 0.71 "
                                      "[0.55, 0.83], mean |difference| 1.10"})
    judged_run("uncalibrated", None)
    page = make_window(settings=Settings(first_run_done=True)).pages["Results"]
    for n in range(page.picker.count()):
        page.picker.item(n).setCheckState(Qt.CheckState.Checked if n < 2 else Qt.CheckState.Unchecked)
    page.metric_box.setCurrentIndex(page.metric_box.findText("Truthfulness"))
    note = page.note.text()
    assert "calibrated: agreement with standard_scores.json on 50 items: truthfulness Spearman 0.71" in note
    assert "uncalibrated: its judge's agreement with the lab's judge has not been measured" in note
    page.metric_box.setCurrentIndex(page.metric_box.findText("GSM8K accuracy (%)"))
    assert "Judge calibration" not in page.note.text()  # not beside numbers no judge made
