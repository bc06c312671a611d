"""The Results page: paper figures on first launch; a real benchmark run from the page; intervals in the
bars and the delta table; answers side by side; PNG and CSV export."""

from __future__ import annotations

import csv

from PySide6.QtCore import Qt

from lemcore.benchmarks import list_runs, read_run
from lemcore.settings import Settings
from tests.bench_items import write_gsm8k


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
    assert "[" in delta and ("noise" in delta or "distinguishable" in delta), delta
    page.tabs.setCurrentIndex(3)
    assert page.items.count() == 10 and "Answer:" in page.answer_a.toPlainText()
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
