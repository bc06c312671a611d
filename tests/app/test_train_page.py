"""The Train page against the real training engine: form -> live chart -> stop/resume -> Fuse."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert not page.form.errors["model"].text()  # the built-in model is filled in
    assert "Choose a data folder" in page.form.errors["data"].text()
    assert page.status.state == "error" and page.job is None
    page.form.model_box.set_value("")
    qtbot.mouseClick(page.start_btn, Qt.MouseButton.LeftButton)
    assert "Choose a model" in page.form.errors["model"].text()
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
    # Said in the window's words: no terminal command, no "Cancelled"; the time left is cleared.
    assert page.status.text == f"Stopped at step {page.last_finished.iteration} of 30. Press Resume to continue."
    assert "lem train" not in page.status.text and "ancel" not in page.status.text
    assert page.t_eta.value.text() == "–"
    assert "stopped at step" in page.history.currentItem().text()
    assert page.history.currentItem() is not None and page.resume_btn.isEnabled()
    qtbot.mouseClick(page.resume_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.start_btn.isEnabled() and page.job is not None and not page.job.running,
                    timeout=180000)
    assert page.last_finished is not None and page.last_finished.status == "complete", page.status.text
    assert page.chart.raw.n >= 30 and page.chart.raw.n >= stopped_at
    assert page.chart.val.n >= 2 and page.chart.best_line.isVisible()
    assert page.fuse_btn.isEnabled() and page.t_eta.value.text() == "–"
    assert page.status.text.startswith("Finished: all 30 steps done."), page.status.text
    assert "finished, 30 steps" in page.history.currentItem().text()
    assert not any(w in page.history.currentItem().text() for w in ("fused", "resumable"))
    page.fuse(str(tmp_path / "fused"))
    qtbot.waitUntil(lambda: "New model saved" in page.status.text or page.status.state == "error", timeout=180000)
    assert "New model saved" in page.status.text, page.status.text
    assert page.status.note.startswith("Made from the best adapter (step "), page.status.note
    assert json.loads((tmp_path / "fused" / "lem_fuse.json").read_text())["adapter"]["fused"] == "best"
    import mlx_lm

    mlx_lm.load(str(tmp_path / "fused"))
    # The other choice: the adapter where the run ended, said so and recorded.
    page.fuse_choice.setCurrentIndex(page.fuse_choice.findData("final"))
    page.fuse(str(tmp_path / "fused-final"))
    qtbot.waitUntil(lambda: page.job is not None and not page.job.running, timeout=180000)
    assert page.status.note.startswith("Made from the final adapter (step 30"), page.status.note
    assert json.loads((tmp_path / "fused-final" / "lem_fuse.json").read_text())["adapter"]["fused"] == "final"


def _fill(page, model, data, *, iters: int, lr: str) -> None:
    page.preset.setCurrentText("Quick test")
    page._apply_preset()
    page.form.widgets["model"].setText(str(model))
    page.form.widgets["data"].setText(str(data))
    page.form.widgets["iters"].setValue(iters)
    page.form.widgets["batch_size"].setValue(4)
    page.form.line_edit("learning_rate").setText(lr)


def test_lr_axis_and_each_past_run_shows_its_own_state(qtbot, make_window, tiny_llama, tmp_path,
                                                       uncompiled_mlx) -> None:
    window = make_window(settings=Settings(first_run_done=True))
    page = window.pages["Train"]
    data = _chat_data(tmp_path / "data")
    # A short run at the lab's learning rate, 1e-5, to the end.
    _fill(page, tiny_llama, data, iters=6, lr="1e-05")
    page.start()
    qtbot.waitUntil(lambda: page.job is not None and not page.job.running, timeout=180000)
    assert page.last_finished is not None and page.last_finished.status == "complete", page.status.text
    finished_run = page.run_dir
    page.chart.lr.redraw()
    # The learning rate reads as 1e-5 on a scientific axis from 0, not a flat 0 on a +-0.4 axis.
    low, high = page.chart.lr.getPlotItem().viewRange()[1]
    assert low == 0 and 1e-5 < high < 2e-5, (low, high)
    labels = page.chart.lr.y_tick_labels()
    assert "1e-5" in labels and all("e-" in t or t == "0" for t in labels), labels
    # A second run, stopped after two steps.
    _fill(page, tiny_llama, data, iters=200, lr="1e-05")
    page.start()
    qtbot.waitUntil(lambda: page.chart.raw.n >= 2, timeout=120000)
    page.stop()
    qtbot.waitUntil(lambda: page.job is not None and not page.job.running, timeout=120000)
    stopped_run, stopped_at = page.run_dir, page.last_finished.iteration
    assert stopped_run != finished_run

    rows = {page.history.item(n).data(Qt.ItemDataRole.UserRole): page.history.item(n)
            for n in range(page.history.count())}
    page.history.setCurrentItem(rows[str(finished_run)])
    assert page.status.state == "idle" and page.status.text.startswith("Finished: all 6 steps done.")
    assert str(finished_run) in page.status.note and page.t_iter.value.text() == "6 / 6"
    assert not page.resume_btn.isEnabled() and page.fuse_btn.isEnabled()
    assert page.chart.raw.n == 6
    page.history.setCurrentItem(rows[str(stopped_run)])
    assert page.status.state == "paused"
    assert page.status.text == f"Stopped at step {stopped_at} of 200. Press Resume to continue."
    assert str(stopped_run) in page.status.note and page.t_iter.value.text() == f"{stopped_at} / 200"
    assert page.resume_btn.isEnabled() and not page.fuse_btn.isEnabled()
    assert page.t_eta.value.text() == "–"


def test_model_is_a_list_of_models_with_other(qtbot, make_window, tmp_path) -> None:
    from PySide6.QtWidgets import QComboBox

    from app.pages.train.form import OTHER
    from lemcore.settings import data_dir

    converted = data_dir() / "models" / "my-model-4bit-mlx"
    converted.mkdir(parents=True)
    (converted / "config.json").write_text("{}")
    page = make_window(settings=Settings(first_run_done=True)).pages["Train"]
    box = page.form.model_box
    assert isinstance(box, QComboBox) and box.isEditable()
    assert page.form.config().model == "smollm2-135m"  # the built-in model until another is chosen
    texts = [box.itemText(i) for i in range(box.count())]
    assert "SmolLM2 135M (built in)" in texts and "my-model-4bit-mlx (converted)" in texts
    assert any(t.startswith("Gemma 3 1B") for t in texts) and texts[-1].startswith("Other")
    box.setCurrentIndex(box.findData(str(converted)))
    assert page.form.config().model == str(converted)
    box.setCurrentIndex(box.findData("smollm2-135m"))
    assert page.form.config().model == "smollm2-135m"
    other = box.findData(OTHER)
    box.setCurrentIndex(other)
    box.activated.emit(other)
    assert box.currentText() == "" and page.form.config().model == ""
    box.setEditText("mlx-community/some-model-4bit")  # typed: a hub id
    assert page.form.config().model == "mlx-community/some-model-4bit"
    gemma = box.findData("mlx-community/gemma-3-27b-it-qat-4bit")
    if not box.model().item(gemma).isEnabled():  # not downloaded here: said before Start, in words
        box.setCurrentIndex(gemma)
        page.start()
        assert page.job is None and "not downloaded yet" in page.form.errors["model"].text()


def _contributed(n_seeds: int) -> None:
    """Gold answers as the Contribute page writes them, in <data>/output (plus one that loops)."""
    from lemcore.settings import data_dir

    lines = ["Ask what the person wants before you act.", "Say what you know and what you are guessing.",
             "Offer two or three options with their likely costs.", "Keep what you were told in trust private.",
             "Agree when you will talk again.", "If someone is at risk, say so plainly and get help."]
    rows = []
    for seed in range(n_seeds):
        for v, voice in enumerate(("original", "student")):
            answer = " ".join(lines[(seed + v + k) % len(lines)] for k in range(5))
            rows.append({"idx": seed * 2 + v, "seed_id": f"S{seed}", "domain": "Privacy", "voice": voice,
                         "prompt": f"Case {seed} as told by a {voice}: what should I do?", "response": answer,
                         "gen_time": 1.0, "model": "smollm2-135m", "worker": "me", "tokens": 60,
                         "truncated": False, "kind": "gold"})
    rows.append(dict(rows[0], idx=999, prompt="A looping one?", response="I will help. " * 60))
    out = data_dir() / "output"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gold-me.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_use_contributed_answers_builds_data_and_fills_the_field(qtbot, make_window) -> None:
    from lemcore.settings import data_dir

    page = make_window(settings=Settings(first_run_done=True)).pages["Train"]
    page.use_contributed()  # nothing contributed yet: said, and no job
    assert page.status.state == "error" and "No contributed answers yet" in page.status.text
    assert page.data_job is None
    _contributed(30)
    qtbot.mouseClick(page.data_btn, Qt.MouseButton.LeftButton)
    assert page.data_job is not None and not page.data_btn.isEnabled()
    qtbot.waitUntil(lambda: not page.data_job.running, timeout=60000)
    assert page.status.state == "idle", page.status.text
    folder = Path(page.form.config().data)
    assert folder.parent == data_dir() / "datasets" and (folder / "train.jsonl").is_file()
    assert (folder / "DATA_CARD.md").is_file() and page.data_btn.isEnabled()
    assert "train /" in page.status.note and "61 answers read, 60 kept; left out: 1 repeats" in page.status.note
    assert "DATA_CARD.md" in page.status.note
    card = json.loads((folder / "data_card.json").read_text())
    assert sum(card["examples"].values()) == 60 and card["gate"]["kernel_checked"]
    assert "data" not in page.form.config().problems(check_paths=True)


def test_two_machines_from_the_page_with_live_metrics(qtbot, make_window, tiny_llama, tmp_path, monkeypatch,
                                                      uncompiled_mlx) -> None:
    """Two ranks on this machine stand in for two Macs: Check asks each, Start trains on both through
    mlx.launch, the chart and each machine's line move while it runs, and the run finishes as a local one does."""
    monkeypatch.setenv("MLX_DISABLE_COMPILE", "1")  # the ranks, as the test process: no minutes of JIT
    window = make_window(settings=Settings(first_run_done=True))
    page = window.pages["Train"]
    _fill(page, tiny_llama, _chat_data(tmp_path / "data"), iters=20, lr="1e-03")
    page.form.widgets["batch_size"].setValue(3)
    page.machines.mode.setCurrentIndex(page.machines.mode.findData("several"))
    page.machines.hosts_edit.setText("127.0.0.1, 127.0.0.1")
    assert "cannot be shared by 2 computers" in page.machines.batch.text()
    page.form.widgets["batch_size"].setValue(4)
    assert page.machines.batch.text() == "Batch 4 per step: 2 on each of 2 computers."

    page.check_machines()
    qtbot.waitUntil(lambda: page.machine_job is not None and not page.machine_job.running, timeout=120000)
    lines = page.machines.report.text().splitlines()
    assert len(lines) == 2 and all(line.startswith("✓ 127.0.0.1: ready (") for line in lines), lines
    assert page.status.text == "All 2 computers are ready."

    page.start()
    qtbot.waitUntil(lambda: page.chart.raw.n >= 2, timeout=180000)  # live, while both train
    assert page.t_iter.value.text().endswith("/ 20")
    # Each machine's own line: its step and memory, while the run goes on.
    qtbot.waitUntil(lambda: page.machines.report.text().count("● 127.0.0.1 (rank ") == 2, timeout=60000)
    assert "(rank 0): step " in page.machines.report.text() and "GB free" in page.machines.report.text()
    qtbot.waitUntil(lambda: page.job is not None and not page.job.running, timeout=180000)
    assert page.last_finished is not None and page.last_finished.status == "complete", page.status.text
    assert page.status.text.startswith("Finished: all 20 steps done."), page.status.text
    assert (page.run_dir / "adapters.safetensors").is_file()
