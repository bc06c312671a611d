"""The Results page: paper figures on first launch; a real benchmark run from the page; intervals in the
bars and the delta table; answers side by side; PNG and CSV export."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt

from app.pages.results.model import MINUS
from lemcore.benchmarks import list_runs, read_run
from lemcore.benchmarks.score import ScoreConfig, score_responses
from lemcore.settings import Settings, data_dir
from tests.bench_items import DNA_ITEMS, GSM8K_ITEMS, write_do_not_answer, write_gsm8k

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


def _imported_run(tmp: Path, name: str, correct: int, safety: int, reason: str) -> Path:
    """One model's answers to our 10 GSM8K items (`correct` of them right) and the Do Not Answer items
    (judged), imported with `lem score` into a run folder the Results page lists."""
    run = data_dir() / "benchmarks" / name
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
    assert it[0] == 34 and it[1] < 22 and it[2] > 46  # about +/-13 points at n=50
    assert "no published intervals" in page.note.text()


def test_benchmark_run_from_page_then_compare_and_export(qtbot, make_window, tiny_llama, tmp_path) -> None:
    page = make_window(settings=Settings(first_run_done=True)).pages["Results"]
    items = write_gsm8k(tmp_path / "gsm8k.jsonl")
    for _ in range(2):  # two runs of the same model (different seeds per run folder) to compare
        page.bench_model.setText(str(tiny_llama))
        page.bench_file.setText(str(items))
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
    page.bench_file.setText(str(write_gsm8k(tmp_path / "gsm8k.jsonl", count=3)))
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


def test_paper_figures_delta_in_the_metrics_units(qtbot, make_window, capsys) -> None:
    """IT 34% -> LEK 26% on GSM8K is -8.0 percentage points, as `lem compare` prints it; judge scores keep
    their 1-10 scale (safety 8.74 -> 8.58 is -0.16)."""
    page = make_window(settings=Settings(first_run_done=True)).pages["Results"]
    assert page.base.currentText() == "Paper 1B: IT" and [rs.name for rs in page.selected()][1] == "Paper 1B: LEK"
    assert page.table.horizontalHeaderItem(3).text() == "Δ Paper 1B: LEK vs base"
    gsm, safety = page.table.item(0, 3).text(), page.table.item(2, 3).text()
    assert gsm == f"{MINUS}8.0 pp (paper figures: no interval)", gsm
    assert safety == f"{MINUS}0.16 (paper figures: no interval)", safety
    assert page.table.item(0, 1).text() == "34.0 [20.9, 47.1]"

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
    safety = page.table.item(2, 3).text()
    assert safety.startswith("+1.00 [+1.00, +1.00]") and "larger than the noise" in safety, safety

    from lemcore.cli.main import main

    capsys.readouterr()
    assert main(["compare", str(base), str(lower)]) == 0
    cli = capsys.readouterr().out
    for label, row in (("GSM8K", 0), ("Safety", 2), ("Nuance", 3)):
        line = next(x for x in cli.splitlines() if x.startswith(label))
        assert DELTA.search(line).groups() == DELTA.search(_normal(page.table.item(row, 3).text())).groups(), line

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
