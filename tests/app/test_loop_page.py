"""The LEK loop page, driven as a researcher would: contributed answers -> train -> fuse -> benchmark both ->
the Results page opens on the pair. Stopped mid-way and continued. Real engines, tiny model."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import Qt

from lemcore.settings import Settings, data_dir
from tests.bench_items import write_gsm8k


def _contributed_answers() -> Path:
    """Answers as the Contribute page writes them (our gold format), where the loop looks by default."""
    out = data_dir() / "output"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gold-test.jsonl"
    path.write_text("".join(json.dumps({"idx": i, "seed_id": f"S{i % 10}", "domain": "Ethics", "voice": "plain",
                                        "prompt": f"Should a neighbour read my letter number {i}?",
                                        "response": f"No. A letter is private; ask first, as in case {i}.",
                                        "truncated": False}) + "\n" for i in range(40)))
    return path


def test_a_loop_from_the_page_ends_on_the_results_pair(qtbot, make_window, tiny_llama, tmp_path,
                                                       uncompiled_mlx) -> None:
    _contributed_answers()
    window = make_window(settings=Settings(first_run_done=True))
    window.show_page("LEK loop")
    page = window.pages["LEK loop"]
    page.model_box.set_value(str(tiny_llama))
    page.source.setCurrentIndex(page.source.findData("contributed"))
    assert not page.gold_count.isEnabled()
    page.preset.setCurrentText("Quick test")
    page.steps.setValue(40)
    for box in page.suite_boxes.values():
        box.setChecked(False)
    page.set_suite_file("gsm8k", str(write_gsm8k(tmp_path / "gsm8k.jsonl", count=3)))
    page.bench_n.setValue(0)
    page.samples.setValue(1)
    assert page.spec()["bench"]["suites"] == [{"id": "gsm8k", "path": str(tmp_path / "gsm8k.jsonl"), "n": 0}]

    # Start, and stop while training: the stage list says where it stopped; Continue finishes it.
    qtbot.mouseClick(page.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.stage_states.get("train") == "running" and page.progress.value() >= 2,
                    timeout=120000)
    assert page.stage_states["dataset"] == "done" and "train" in page.stage_details
    assert page.detail.text().startswith("Step ")  # the running stage's own progress, in words
    window.grab().save(str(tmp_path / "loop-training.png"))
    qtbot.mouseClick(page.stop_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.job is not None and not page.job.running, timeout=120000)
    assert page.status.state == "paused", page.status.text
    assert page.stage_states["train"] == "stopped"
    assert page.loops.currentItem() is not None and "stopped at: train" in page.loops.currentItem().text()
    assert page.resume_btn.isEnabled() and not page.open_btn.isEnabled()

    qtbot.mouseClick(page.resume_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.job is not None and not page.job.running, timeout=300000)
    assert page.result is not None, page.status.text
    assert all(state == "done" for state in page.stage_states.values()), page.stage_states
    assert page.stage_details["dataset"] == "done in an earlier session"
    assert page.status.text.startswith("Loop finished. GSM8K"), page.status.text
    assert "finished" in page.loops.currentItem().text()

    # The window is on the Results page, the pair ticked, base first, on the difference table.
    results = window.pages["Results"]
    assert window.stack.currentIndex() == list(window.pages).index("Results")
    ticked = {rs.path for rs in results.selected()}
    assert ticked == {page.result.base_run, page.result.trained_run}
    assert results.tabs.tabText(results.tabs.currentIndex()) == "Difference from base"
    # Only what the pair was benchmarked on, with the difference beside it.
    assert results.table.rowCount() == 1 and results.table.item(0, 0).text().startswith("GSM8K")
    assert results.table.horizontalHeaderItem(1).text().startswith("Base: Before training (")
    assert results.table.item(0, 3).text()  # the paired difference
    assert results.metric_box.currentText().startswith("GSM8K")
    window.grab().save(str(tmp_path / "loop-results.png"))
