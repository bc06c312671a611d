"""The Train page against the real training engine: form -> live chart -> stop/resume -> Fuse."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt

from lemcore.settings import Settings


def _chat_data(folder, n_train: int = 24, n_valid: int = 6):
    folder.mkdir(parents=True, exist_ok=True)
    facts = ["Consent comes first.", "Privacy is kept.", "Dignity is never traded.", "Say what you know."]

    def rows(n, offset):
        return "\n".join(json.dumps({"messages": [
            {"role": "user", "content": f"Rule number {(i + offset) % 4}?"},
            {"role": "assistant", "content": facts[(i + offset) % 4]}]}) for i in range(n)) + "\n"

    (folder / "train.jsonl").write_text(rows(n_train, 0))
    (folder / "valid.jsonl").write_text(rows(n_valid, 1))
    return folder


def test_form_validation_shows_messages_next_to_fields(qtbot, make_window) -> None:
    window = make_window(settings=Settings(first_run_done=True))
    page = window.pages["Train"]
    qtbot.mouseClick(page.start_btn, Qt.MouseButton.LeftButton)
    assert page.form.errors["model"].isVisible() or page.form.errors["model"].text()
    assert "Choose a model" in page.form.errors["model"].text()
    assert page.status.state == "error" and page.job is None
    page.form.widgets["batch_size"].setValue(0)
    assert "Batch size must be at least 1" in page.form.errors["batch_size"].text()


def test_train_from_form_to_chart_stop_resume_and_fuse(qtbot, make_window, tiny_llama, tmp_path) -> None:
    window = make_window(settings=Settings(first_run_done=True))
    page = window.pages["Train"]
    page.preset.setCurrentText("Quick test")
    page._apply_preset()
    form = page.form
    form.widgets["model"].setText(str(tiny_llama))
    form.widgets["data"].setText(str(_chat_data(tmp_path / "data")))
    form.widgets["iters"].setValue(30)
    form.widgets["batch_size"].setValue(4)
    form.widgets["num_layers"].setValue(-1)
    form.widgets["learning_rate"].setText("0.001")
    form.advanced_box.setChecked(True)
    form.widgets["steps_per_eval"].setValue(10)
    form.widgets["save_every"].setValue(5)
    assert "mlx_lm" in page.command.toPlainText()
    qtbot.mouseClick(page.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.chart.raw.n >= 8, timeout=120000)
    qtbot.mouseClick(page.stop_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.start_btn.isEnabled(), timeout=60000)
    assert page.status.state == "paused"
    stopped_at = page.chart.raw.n
    assert page.history.currentItem() is not None and page.resume_btn.isEnabled()
    qtbot.mouseClick(page.resume_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.start_btn.isEnabled() and page.job is not None and not page.job.running,
                    timeout=180000)
    assert page.last_finished is not None and page.last_finished.status == "complete", page.status.text
    assert page.chart.raw.n >= 30 and page.chart.raw.n >= stopped_at
    assert page.chart.val.n >= 2 and page.chart.best_line.isVisible()
    assert page.fuse_btn.isEnabled()
    page.fuse(str(tmp_path / "fused"))
    qtbot.waitUntil(lambda: "Fused model saved" in page.status.text or page.status.state == "error", timeout=180000)
    assert "Fused model saved" in page.status.text, page.status.text
    import mlx_lm

    mlx_lm.load(str(tmp_path / "fused"))
