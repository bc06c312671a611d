"""The Contribute page driven like a volunteer would, against the real engine (tiny model, real servers)."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt

from lemcore.secrets import KeyringTokenStore
from lemcore.settings import Settings, data_dir, load_settings


def _answers(worker: str) -> list[dict]:
    path = data_dir() / "output" / f"gold-{worker}.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_first_run_saves_token_in_real_keychain(qtbot, make_window, system_keyring, influx) -> None:
    store = KeyringTokenStore(service="lem-desktop-apptest")
    window = make_window(token_store=store)
    page = window.contribute
    assert page.stack.currentIndex() == 0  # welcome first
    qtbot.mouseClick(page.next_btn, Qt.MouseButton.LeftButton)
    assert page.stack.currentIndex() == 1
    page.online.setChecked(True)
    page.url_edit.setText(influx.url)
    qtbot.keyClicks(page.token_edit, influx.token)
    qtbot.mouseClick(page.finish_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.stack.currentIndex() == 2, timeout=10000)  # the model step
    assert store.get() == influx.token
    step = page.model_step
    assert "SmolLM2" in step.choice.text() and "needs" in step.fit.text()  # fit verdict in words
    qtbot.mouseClick(step.prepare_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.stack.currentIndex() == 3, timeout=120000)  # converted, then the dashboard
    assert step.message.text() == "The model is ready."
    assert page.token_edit.text() == ""  # the field never keeps the token
    s = load_settings()
    assert s.first_run_done and s.influx_url == influx.url and not s.solo
    assert influx.token not in json.dumps(s.__dict__)
    store.delete()


def test_start_pause_resume_finish_offline(qtbot, make_window, tiny_llama) -> None:
    window = make_window(settings=Settings(first_run_done=True, solo=True, model_override=str(tiny_llama),
                                           worker_name="vol", max_tokens=8, only_on_power=False,
                                           min_free_memory_gb=0.5))
    page = window.contribute
    assert page.stack.currentIndex() == 3
    qtbot.mouseClick(page.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(_answers("vol")) >= 2, timeout=120000)
    assert not page.start_btn.isEnabled() and page.pause_btn.isEnabled()
    qtbot.mouseClick(page.pause_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.start_btn.isEnabled(), timeout=60000)
    assert page.status.state == "paused"
    first = {a["idx"] for a in _answers("vol")}
    qtbot.mouseClick(page.start_btn, Qt.MouseButton.LeftButton)  # resume
    qtbot.waitUntil(lambda: len(_answers("vol")) >= len(first) + 2, timeout=120000)
    qtbot.mouseClick(page.finish_btn2, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.start_btn.isEnabled(), timeout=60000)
    assert page.status.state == "idle" and "Stopped" in page.status.text
    answers = _answers("vol")
    assert len(answers) == len({a["idx"] for a in answers}), "nothing done twice"
    assert first <= {a["idx"] for a in answers}, "nothing finished was lost"
    assert int(page.tile_session.value.text()) >= 2
    assert page.rate_series.n >= 1 and page.now_answer.toPlainText() != ""


def test_contributing_to_real_server_and_wrong_token(qtbot, make_window, tiny_llama, influx) -> None:
    from lemcore.secrets import MemoryTokenStore

    settings = Settings(first_run_done=True, influx_url=influx.url, model_override=str(tiny_llama),
                        worker_name="volx", max_tokens=8, only_on_power=False, min_free_memory_gb=0.5)
    window = make_window(token_store=MemoryTokenStore({"influx-token": "wrong"}), settings=settings)
    page = window.contribute
    qtbot.mouseClick(page.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.status.state == "error", timeout=60000)
    assert "did not accept the token" in page.status.text and "Traceback" not in page.status.text
    page.token_store.set(influx.token)
    qtbot.mouseClick(page.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(_answers("volx")) >= 2, timeout=120000)
    qtbot.mouseClick(page.finish_btn2, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.start_btn.isEnabled(), timeout=60000)
    res = influx.query("SELECT chars, i FROM gold_gen WHERE time > now() - 1h")
    reported = {int(v[2]) for v in res["results"][0]["series"][0]["values"]}
    assert reported == {a["idx"] for a in _answers("volx")}
    assert page.fleet.value() >= 0 and page.fleet.maximum() == 600
