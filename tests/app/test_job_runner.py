"""The job runner keeps worker threads away from Qt: handlers on the GUI thread, one ending signal per job
whatever it raised, modules imported on the GUI thread, and a quit that is bounded and happens once."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QLabel

import app.jobs.preload as preload
import app.jobs.priority as priority
import app.jobs.runner as runner_module
from app.jobs.model_cache import ModelCache
from app.jobs.preload import model_modules
from app.jobs.qt_guard import qt_objects_held
from app.jobs.runner import JobRunner
from lemcore.errors import Cancelled, SecretStoreError
from lemcore.events import Event
from lemcore.models.loading import architecture_module


@dataclass(frozen=True)
class Tick(Event):
    n: int


class Custom(BaseException):
    """Neither an Exception nor a Cancelled: the kind of error that used to leave a job running forever."""


@pytest.fixture
def runner(qtbot):
    runner = JobRunner()
    yield runner
    assert runner.shutdown(timeout=30), "a test job ignored its cancel"


def _on(seen: dict, key: str):
    def record(*args: object) -> None:
        seen[key] = (threading.current_thread(), args)

    return record


def test_handlers_run_on_the_gui_thread_and_jobs_on_the_engine_thread_or_the_io_pool(runner, qtbot) -> None:
    seen: dict = {}

    def engine_job(report, cancel) -> int:
        seen["engine body"] = threading.current_thread()
        report(Tick(1))
        return 1

    def io_job(report, cancel) -> int:
        seen["io body"] = threading.current_thread()
        return 2

    def failing(report, cancel) -> None:
        raise ValueError("broken")

    def waits_for_cancel(report, cancel) -> None:
        seen["waiting"] = True
        while not cancel.wait(0.01):
            pass
        cancel.check()

    runner.start("engine", engine_job, on_event=_on(seen, "on_event"), on_done=_on(seen, "on_done"))
    runner.start("io", io_job, kind="io", on_done=_on(seen, "io on_done"))
    runner.start("fails", failing, on_error=_on(seen, "on_error"))
    job = runner.start("cancelled", waits_for_cancel, on_cancelled=_on(seen, "on_cancelled"))
    qtbot.waitUntil(lambda: "waiting" in seen)
    job.cancel("test")
    qtbot.waitUntil(lambda: not runner.busy())

    gui = threading.main_thread()
    for key in ("on_event", "on_done", "io on_done", "on_error", "on_cancelled"):
        assert seen[key][0] is gui, key
    assert seen["engine body"] is runner.engine_thread
    assert seen["io body"] is not gui and seen["io body"].name.startswith("lem-io")
    assert seen["on_event"][1] == (Tick(1),) and seen["on_done"][1] == (1,) and seen["io on_done"][1] == (2,)
    assert isinstance(seen["on_error"][1][0], ValueError)


def test_events_arrive_in_order_and_all_before_done(runner, qtbot) -> None:
    events: list[int] = []
    at_done: list[list[int]] = []

    def job(report, cancel) -> str:
        for n in range(200):
            report(Tick(n))
        return "ok"

    with qtbot.waitSignal(runner.job_finished, timeout=10_000):
        runner.start("ticks", job, on_event=lambda e: events.append(e.n), on_done=lambda r: at_done.append(list(events)))
    assert at_done == [list(range(200))]
    assert events == list(range(200))


def test_cancel_ends_with_on_cancelled_only(runner, qtbot) -> None:
    outcome: list[str] = []
    started = threading.Event()

    def job(report, cancel) -> None:
        started.set()
        while not cancel.wait(0.01):
            pass
        raise Cancelled(cancel.reason)

    job = runner.start("loop", job, on_done=lambda r: outcome.append("done"), on_error=lambda e: outcome.append("error"),
                       on_cancelled=lambda: outcome.append("cancelled"))
    assert started.wait(10)
    assert runner.busy("loop")
    with qtbot.waitSignal(runner.job_finished, timeout=10_000):
        job.cancel("stopped by the test")
    assert outcome == ["cancelled"]
    assert not runner.busy() and not job.running


def test_a_job_cancelled_while_queued_never_runs(runner, qtbot) -> None:
    release, ran, outcome = threading.Event(), [], []
    first = runner.start("first", lambda report, cancel: release.wait(30))
    second = runner.start("second", lambda report, cancel: ran.append(1), on_cancelled=lambda: outcome.append("cancelled"))
    second.cancel("not wanted")
    release.set()
    qtbot.waitUntil(lambda: not first.running and not second.running)
    assert ran == [] and outcome == ["cancelled"]


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(3), Custom("odd")], ids=type)
def test_any_exception_ends_the_job_with_on_error(runner, qtbot, caplog, error: BaseException) -> None:
    errors: list[BaseException] = []

    def job(report, cancel) -> None:
        raise error

    with qtbot.waitSignal(runner.job_finished, timeout=10_000):
        job_ = runner.start("raises", job, on_error=errors.append)
    assert errors == [error]
    assert not runner.busy() and not job_.running
    assert any(r.levelno == logging.ERROR and "raises" in r.getMessage() for r in caplog.records)
    # The engine thread survived it and runs the next job.
    with qtbot.waitSignal(runner.job_finished, timeout=10_000):
        runner.start("next", lambda report, cancel: None)


def test_an_expected_error_is_one_warning_line_without_traceback(runner, qtbot, caplog) -> None:
    errors: list[BaseException] = []

    def job(report, cancel) -> None:
        raise SecretStoreError("No system keychain.")

    with qtbot.waitSignal(runner.job_finished, timeout=10_000):
        runner.start("read-token", job, on_error=errors.append)
    assert len(errors) == 1 and isinstance(errors[0], SecretStoreError)
    mine = [r for r in caplog.records if "read-token" in r.getMessage()]
    assert [r.levelno for r in mine] == [logging.WARNING] and mine[0].exc_info is None
    assert "No system keychain." in mine[0].getMessage()


def test_declared_modules_are_imported_on_the_gui_thread_before_the_job(runner, qtbot, tmp_path, monkeypatch) -> None:
    name = f"lem_probe_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text("import threading\nIMPORTED_ON = threading.current_thread()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        seen: dict = {}

        def job(report, cancel) -> None:
            seen["already imported"] = name in sys.modules

        with qtbot.waitSignal(runner.job_finished, timeout=10_000):
            runner.start("probe", job, modules=(name,))
        assert seen == {"already imported": True}
        assert sys.modules[name].IMPORTED_ON is threading.main_thread()
    finally:
        sys.modules.pop(name, None)


def test_the_models_architecture_module_is_imported_too(runner, qtbot, monkeypatch) -> None:
    imported: list[tuple[str, threading.Thread]] = []
    monkeypatch.setattr(runner_module, "model_modules", lambda model: (f"arch-of-{model}",))
    monkeypatch.setattr(runner_module, "import_modules",
                        lambda names: imported.extend((name, threading.current_thread()) for name in names))
    with qtbot.waitSignal(runner.job_finished, timeout=10_000):
        runner.start("load", lambda report, cancel: None, modules=("engine",), loads_model="tiny")
    assert imported == [("engine", threading.main_thread()), ("arch-of-tiny", threading.main_thread())]


def test_a_missing_module_is_logged_and_the_job_still_runs(runner, qtbot, caplog) -> None:
    with qtbot.waitSignal(runner.job_finished, timeout=10_000):
        job = runner.start("missing", lambda report, cancel: None, modules=("lem_no_such_module_here",))
    assert not job.running
    assert any("lem_no_such_module_here" in r.getMessage() for r in caplog.records)


def test_architecture_module_follows_mlx_lm(tmp_path: Path) -> None:
    assert architecture_module({"model_type": "llama"}) == "mlx_lm.models.llama"
    assert architecture_module({"model_type": "mistral"}) == "mlx_lm.models.llama"  # mlx-lm's remapping
    assert architecture_module({"model_type": "no_such_arch"}) is None

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "gemma3_text"}))
    assert model_modules(str(model)) == ("mlx_lm.models.gemma3_text",)
    adapter = tmp_path / "run"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"model": str(model)}))
    assert model_modules(str(adapter)) == ("mlx_lm.models.gemma3_text",)  # the adapter's base model
    assert model_modules(str(tmp_path / "missing")) == ()


def test_the_preload_covers_every_benchmark_suite() -> None:
    from lemcore.benchmarks.suites import SUITE_IDS

    assert {f"lemcore.benchmarks.{suite}" for suite in SUITE_IDS} <= set(preload.ENGINE_MODULES)
    assert "mlx.optimizers" in preload.ENGINE_MODULES


def test_the_preload_includes_the_model_chosen_in_settings(tmp_path: Path) -> None:
    from lemcore.settings import Settings, save_settings

    model = tmp_path / "chosen"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    save_settings(Settings(model_override=str(model)))
    assert preload._settings_model_modules() == ("mlx_lm.models.qwen2",)


def test_frees_models_releases_the_cache_on_the_engine_thread_before_the_job(runner, qtbot, monkeypatch) -> None:
    models = runner.models
    with qtbot.waitSignal(runner.job_finished, timeout=10_000):
        runner.start("load", lambda report, cancel, models: models.get("tiny", object), pass_models=True)
    assert models.loaded

    calls: list[tuple[str, object]] = []
    release = models.release
    monkeypatch.setattr(models, "release", lambda: (calls.append(("release", threading.current_thread())), release()))
    with qtbot.waitSignal(runner.job_finished, timeout=10_000):
        runner.start("train", lambda report, cancel: calls.append(("job sees a model", models.loaded)),
                     frees_models=True)
    assert calls == [("release", runner.engine_thread), ("job sees a model", False)]


def test_the_model_cache_refuses_other_threads(runner) -> None:
    with pytest.raises(RuntimeError, match="lem-engine"):
        runner.models.get("tiny", object)
    with pytest.raises(RuntimeError):
        runner.models.release()
    ModelCache().get("any thread", object)  # a cache nobody owns stays usable anywhere


def test_a_job_holding_a_qt_object_is_refused(runner, qtbot) -> None:
    label = QLabel()
    qtbot.addWidget(label)
    timer = QTimer()

    def nested(report, cancel) -> str:
        return label.text()

    refused = [
        lambda report, cancel: label.text(),
        label.text,
        functools.partial(lambda widget, report, cancel: None, timer),
        lambda report, cancel: nested(report, cancel),
        lambda report, cancel, obj=QObject(): None,
    ]
    for fn in refused:
        assert qt_objects_held(fn), fn
        with pytest.raises(TypeError, match="holds Qt objects"):
            runner.start("touches-qt", fn)
    text = label.text()
    assert qt_objects_held(lambda report, cancel: text) == []
    assert not runner.busy()


def test_shutdown_is_bounded_and_runs_once(qtbot) -> None:
    runner = JobRunner()
    release, started, outcome = threading.Event(), threading.Event(), []

    def stubborn(report, cancel) -> None:  # ignores its cancel
        started.set()
        release.wait(60)

    try:
        stuck = runner.start("stubborn", stubborn)
        runner.start("queued", lambda report, cancel: outcome.append("ran"), on_cancelled=lambda: outcome.append("cancelled"))
        assert started.wait(10)

        t0 = time.monotonic()
        assert runner.shutdown(timeout=0.5) is False  # a thread still runs
        assert time.monotonic() - t0 < 2.0
        assert stuck.cancel_token.cancelled

        t0 = time.monotonic()
        assert runner.shutdown(timeout=30) is False  # only reports: waits no more
        assert time.monotonic() - t0 < 0.2
        with pytest.raises(RuntimeError, match="quitting"):
            runner.start("late", lambda report, cancel: None)
        qtbot.waitUntil(lambda: outcome == ["cancelled"])  # the queued job ended, without running
    finally:
        release.set()
    qtbot.waitUntil(lambda: runner.stopped, timeout=10_000)
    assert not runner.engine_thread.is_alive()


def test_shutdown_of_cooperative_jobs_stops_every_thread(qtbot) -> None:
    runner = JobRunner()
    started = threading.Event()

    def job(report, cancel) -> None:
        started.set()
        while not cancel.wait(0.01):
            pass
        cancel.check()

    runner.start("engine", job)
    runner.start("io", job, kind="io")
    assert started.wait(10)
    assert runner.shutdown(timeout=10) is True
    assert not runner.engine_thread.is_alive()


@pytest.fixture
def background_runner(qtbot):
    runner = JobRunner(background_priority=True)  # the app's default; the suite itself runs at normal priority
    yield runner
    assert runner.shutdown(timeout=30)


@pytest.mark.skipif(not priority.supported(), reason="per-thread priority is read from Linux's /proc")
def test_work_threads_run_at_background_priority_and_the_gui_thread_does_not(background_runner, qtbot) -> None:
    runner = background_runner
    # A pool made before any job (as OpenBLAS's is, at import) and one a job starts (MLX's, the attention
    # pool's) both end up below the GUI thread, which keeps its own priority.
    before_release = threading.Event()
    early = threading.Thread(target=before_release.wait, name="made-before-the-job")
    early.start()
    seen: dict[str, int] = {}

    def engine_job(report, cancel) -> None:
        seen["engine"] = threading.get_native_id()
        child = threading.Thread(
            target=lambda: seen.setdefault("child nice", priority.thread_nice(threading.get_native_id())))
        child.start()
        child.join()
        seen["early nice"] = priority.thread_nice(early.native_id)

    try:
        gui_nice = priority.thread_nice(threading.get_native_id())
        done: list[bool] = []
        runner.start("engine", engine_job, on_done=lambda _r: done.append(True))
        qtbot.waitUntil(lambda: bool(done), timeout=10_000)
    finally:
        before_release.set()
        early.join()
    assert priority.thread_nice(seen["engine"]) >= priority.BACKGROUND_NICE
    assert seen["early nice"] >= priority.BACKGROUND_NICE
    assert seen["child nice"] >= priority.BACKGROUND_NICE
    assert priority.thread_nice(threading.get_native_id()) == gui_nice


def test_thread_nice_reads_what_setpriority_wrote() -> None:
    if not priority.supported():
        pytest.skip("Linux only")
    got: list[int] = []

    def lower_self() -> None:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, 7)
        got.append(priority.thread_nice(tid))

    t = threading.Thread(target=lower_self)
    t.start()
    t.join()
    assert got == [7]


def test_background_priority_is_the_default_unless_the_environment_says_normal(monkeypatch) -> None:
    monkeypatch.delenv(priority.ENV, raising=False)
    assert priority.wanted()
    monkeypatch.setenv(priority.ENV, "Normal")
    assert not priority.wanted()
    monkeypatch.setenv(priority.ENV, "background")
    assert priority.wanted()


@pytest.mark.skipif(not priority.supported(), reason="per-thread priority is read from Linux's /proc")
def test_normal_priority_leaves_the_work_threads_alone(qtbot) -> None:
    runner = JobRunner(background_priority=False)
    seen: list[int] = []
    try:
        runner.start("engine", lambda report, cancel: seen.append(priority.thread_nice(threading.get_native_id())))
        qtbot.waitUntil(lambda: bool(seen), timeout=10_000)
    finally:
        assert runner.shutdown(timeout=30)
    assert seen == [priority.thread_nice(threading.get_native_id())]  # the GUI thread's own value
