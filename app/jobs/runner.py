"""The only place in the app where threads are created.

MLX jobs (generation, training, benchmarks, model loading) run one at a time on a single long-lived
`MLXWorker` thread, as the mlx-lm server does; network and keychain calls run on a small pool. Each job is
a plain function `fn(report, cancel)`; every `report(event)` becomes a queued Qt signal, so handlers run on
the GUI thread. Pages start work with one call (`JobRunner.start`) and never touch threads.

What keeps the worker threads away from Qt (docs/platform-notes.md, "PySide deadlocks"):
- automatic garbage collection runs only on the GUI thread (`collect_garbage_on_gui_thread`);
- a job function may not hold a Qt object (`start` refuses it);
- the modules a job needs are imported on the GUI thread before it starts (a preload, `modules=`,
  `loads_model=`);
- every job ends with exactly one signal (done, failed or cancelled), whatever it raised.
"""

from __future__ import annotations

import functools
import gc
import importlib
import json
import logging
import re
import threading
import time
import types
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, QTimer, Signal

from app.jobs.model_cache import ModelCache
from lemcore.errors import Cancelled
from lemcore.events import Event
from lemcore.jobs import CancelToken
from lemcore.mlx_thread import MLXWorker

log = logging.getLogger(__name__)

T = TypeVar("T")
EventHandler = Callable[[Event], None]
ResultHandler = Callable[[Any], None]
ErrorHandler = Callable[[BaseException], None]
CancelledHandler = Callable[[], None]

SHUTDOWN_TIMEOUT_S = 5.0


# -- garbage collection on the GUI thread ---------------------------------------------------------------
class GuiGarbageCollector(QObject):
    """CPython's automatic collection, moved onto a GUI-thread timer.

    CPython collects on whichever thread allocates past the threshold. So automatic collection is off, and
    every `interval_s` the GUI thread runs the generation checks CPython would have run (the same approach as
    pyqtgraph's GarbageCollector): memory stays bounded, and Qt objects in cycles die on the GUI thread.
    """

    def __init__(self, interval_s: float = 1.0) -> None:
        super().__init__()
        self.threshold = gc.get_threshold()
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.check)
        self._timer.start(max(1, int(interval_s * 1000)))
        gc.disable()

    def check(self) -> None:
        """Collect the oldest generation that is due, if gen 0 is due at all."""
        (c0, c1, c2), (t0, t1, t2) = gc.get_count(), self.threshold
        if c0 <= t0:
            return
        gc.collect(2 if c1 > t1 and c2 > t2 else 1 if c1 > t1 else 0)

    def stop(self) -> None:
        self._timer.stop()
        gc.enable()


_collector: GuiGarbageCollector | None = None


def collect_garbage_on_gui_thread(interval_s: float = 1.0) -> GuiGarbageCollector:
    """Turn automatic gc into a GUI-thread timer, once per process (later calls return the same one)."""
    global _collector
    app = QCoreApplication.instance()
    if app is None:
        raise RuntimeError("create the QApplication before moving garbage collection onto its thread")
    if QThread.currentThread() is not app.thread():
        raise RuntimeError("garbage collection must be set up from the GUI thread")
    if _collector is None:
        _collector = GuiGarbageCollector(interval_s)
    return _collector


def stop_collecting_on_gui_thread() -> None:
    """Give automatic collection back to CPython (tests, after their last Qt object)."""
    global _collector
    if _collector is not None:
        _collector.stop()
        _collector = None


# -- modules imported on the GUI thread ------------------------------------------------------------------
# Modules the engines import lazily, imported once on the GUI thread when the runner is made.
ENGINE_MODULES = (
    "mlx.core", "mlx.utils", "mlx.optimizers", "mlx_lm", "mlx_lm.utils", "mlx_lm.generate", "mlx_lm.sample_utils",
    "mlx_lm.models.cache", "mlx_lm.tuner.trainer", "mlx_lm.tuner.utils", "mlx_lm.tuner.datasets", "transformers",
    "influxdb_client",
    "mlx_lm.models.llama", "mlx_lm.models.gemma3", "mlx_lm.models.gemma3_text",  # the catalog's architectures
    "lemcore.contribute.engine", "lemcore.contribute.setup", "lemcore.contribute.queue.lab", "lemcore.models.loading",
    "lemcore.train.engine", "lemcore.train.fuse", "lemcore.benchmarks", "lemcore.benchmarks.run",
    "lemcore.models.embedded",
    # lemcore.benchmarks.suites.SUITE_IDS, each imported by name when a benchmark runs
    "lemcore.benchmarks.gsm8k", "lemcore.benchmarks.truthfulqa", "lemcore.benchmarks.do_not_answer",
    "lemcore.benchmarks.toxigen", "lemcore.benchmarks.ethics",
)


def import_modules(names: Iterable[str]) -> None:
    """Import `names` here (call it on the GUI thread). A module this build lacks is logged, not raised: the
    job that needs it reports the error when it runs."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            log.warning("could not import %s ahead of its job", name)


def preload_engine_modules() -> None:
    import_modules(ENGINE_MODULES + _settings_model_modules())


def _settings_model_modules() -> tuple[str, ...]:
    """The architecture module of the model chosen in Settings (or the recommended one)."""
    try:
        from lemcore.contribute.setup import resolve_generation_model
        from lemcore.settings import load_settings

        return model_modules(resolve_generation_model(load_settings().model_override))
    except Exception:  # noqa: BLE001 - only a preload: the job reports whatever is wrong
        log.warning("could not find the chosen model's architecture", exc_info=True)
        return ()


def architecture_module(config: dict[str, Any]) -> str | None:
    """The mlx_lm.models module that builds a model with this config.json (mlx-lm's own lookup), or None
    when mlx-lm cannot build it (loading the model then reports that)."""
    from lemcore.models.loading import supported_architecture

    if supported_architecture(config) is not None:
        return None
    from mlx_lm.utils import MODEL_ARCHITECTURE_REMAPPING, MODEL_REMAPPING

    model_type = str(config.get("model_type") or "")
    architectures = config.get("architectures") or ()
    for arch in [architectures] if isinstance(architectures, str) else architectures:
        remapped = MODEL_ARCHITECTURE_REMAPPING.get((model_type, arch))
        if remapped is not None:
            return f"mlx_lm.models.{remapped}"
    module = MODEL_REMAPPING.get(model_type, model_type)
    return f"mlx_lm.models.{module}" if re.fullmatch(r"\w+", module) else None


def model_modules(path_or_id: str) -> tuple[str, ...]:
    """Modules that build the model `path_or_id` names (a folder, catalog or hub id, or an adapter folder:
    its base model). Empty when its files are not on this computer yet, or anything is wrong with them."""
    try:
        from lemcore.models.fit import read_config
        from lemcore.models.loading import resolve_model

        adapter_config = Path(path_or_id).expanduser() / "adapter_config.json"
        if path_or_id and adapter_config.is_file():
            base = json.loads(adapter_config.read_text(encoding="utf-8")).get("model", "")
            return model_modules(base) if isinstance(base, str) and base != path_or_id else ()
        folder = resolve_model(path_or_id).folder
        module = architecture_module(read_config(folder)) if folder is not None else None
    except Exception:  # noqa: BLE001 - only a preload: the job reports whatever is wrong
        return ()
    return (module,) if module else ()


# -- jobs ------------------------------------------------------------------------------------------------
def qt_objects_held(fn: Callable[..., Any]) -> list[str]:
    """Where `fn` holds a Qt object: bound to one, closing over one, or defaulting to one (nested functions
    and functools.partial included). A job runs on a worker thread, so it must hold none."""
    found: list[str] = []
    seen: set[int] = set()

    def visit(obj: Any, where: str, depth: int) -> None:
        if id(obj) in seen or depth > 4:
            return
        seen.add(id(obj))
        if isinstance(obj, QObject):
            found.append(f"{where} ({type(obj).__name__})")
        elif isinstance(obj, functools.partial):
            visit(obj.func, where, depth + 1)
            for i, arg in enumerate(obj.args):
                visit(arg, f"{where} argument {i}", depth + 1)
            for key, value in obj.keywords.items():
                visit(value, f"{where} argument {key}", depth + 1)
        elif isinstance(obj, types.MethodType):
            visit(obj.__self__, f"{where}.__self__", depth + 1)
            visit(obj.__func__, where, depth + 1)
        elif isinstance(obj, types.BuiltinMethodType):  # a Qt method such as label.text
            visit(obj.__self__, f"{where}.__self__", depth + 1)
        elif isinstance(obj, types.FunctionType):
            for name, cell in zip(obj.__code__.co_freevars, obj.__closure__ or (), strict=True):
                try:
                    value = cell.cell_contents
                except ValueError:  # not assigned yet
                    continue
                visit(value, f"{obj.__qualname__}: {name}", depth + 1)
            defaults = [*(obj.__defaults__ or ()), *(obj.__kwdefaults__ or {}).values()]
            for value in defaults:
                visit(value, f"{obj.__qualname__}: a default", depth + 1)

    visit(fn, getattr(fn, "__qualname__", repr(fn)), 0)
    return found


@dataclass(eq=False)
class Job:
    """Handle to a running job: cancel it, or ask it to finish what is in flight (`drain`)."""

    name: str
    cancel_token: CancelToken = field(default_factory=CancelToken)
    drain_token: CancelToken = field(default_factory=CancelToken)
    on_event: EventHandler | None = None
    on_done: ResultHandler | None = None
    on_error: ErrorHandler | None = None
    on_cancelled: CancelledHandler | None = None
    future: Future[None] | None = None
    finished: bool = False

    def cancel(self, reason: str = "") -> None:
        self.cancel_token.cancel(reason)

    def drain(self) -> None:
        self.drain_token.cancel("finish in-flight work")

    @property
    def running(self) -> bool:
        return not self.finished


class _Bridge(QObject):
    """Signals emitted from worker threads; Qt queues them onto the GUI thread."""

    reported = Signal(object, object)
    done = Signal(object, object)
    failed = Signal(object, object)
    cancelled = Signal(object)


class JobRunner(QObject):
    job_started = Signal(object)
    job_finished = Signal(object)

    def __init__(self, parent: QObject | None = None, *, io_threads: int = 2) -> None:
        super().__init__(parent)
        collect_garbage_on_gui_thread()  # before any worker thread exists
        preload_engine_modules()
        self._mlx = MLXWorker("lem-engine")
        self._pool = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="lem-io")
        self._io_futures: set[Future[None]] = set()
        self._bridge = _Bridge()
        queued = Qt.ConnectionType.QueuedConnection  # even when emitted on the GUI thread (a cancelled queue)
        self._bridge.reported.connect(self._on_event, queued)
        self._bridge.done.connect(self._on_done, queued)
        self._bridge.failed.connect(self._on_failed, queued)
        self._bridge.cancelled.connect(self._on_cancelled, queued)
        self.jobs: list[Job] = []
        self.models = ModelCache(thread=self._mlx.thread)  # the model kept loaded between jobs
        self._closed = False

    @property
    def engine_thread(self) -> threading.Thread:
        """The thread every MLX job runs on."""
        return self._mlx.thread

    # -- starting ------------------------------------------------------------------------------------
    def start(self, name: str, fn: Callable[..., T], *, on_event: EventHandler | None = None,
              on_done: Callable[[T], None] | None = None, on_error: ErrorHandler | None = None,
              on_cancelled: CancelledHandler | None = None, kind: str = "mlx", modules: Iterable[str] = (),
              loads_model: str = "", pass_drain: bool = False, pass_models: bool = False,
              frees_models: bool = False) -> Job:
        """Run `fn(report=..., cancel=...)` on the MLX thread (kind "mlx") or the IO pool (kind "io"), plus
        `drain=` (finish in-flight work) and `models=` (the runner's ModelCache) when asked.

        `modules` are imported here, on the GUI thread, before the job is queued, and so is the architecture
        module of `loads_model` (a model name or folder, or an adapter folder). `frees_models` drops the
        cached model (on the MLX thread) before `fn` runs, for jobs that need the memory (training,
        benchmarks). `fn` must not hold Qt objects: bind what it needs (a token store, a config) to locals.
        Exactly one of on_done, on_error, on_cancelled runs afterwards, on the GUI thread.
        """
        if self._closed:
            raise RuntimeError("the app is quitting")
        if kind not in ("mlx", "io"):
            raise ValueError(f"unknown job kind {kind!r}: 'mlx' or 'io'")
        if kind != "mlx" and (pass_models or frees_models):
            raise ValueError("the model cache belongs to the MLX thread: only 'mlx' jobs may use it")
        held = qt_objects_held(fn)
        if held:
            raise TypeError(f"job {name!r} runs on a worker thread but holds Qt objects: {', '.join(held)}. "
                            "Bind what it needs to locals first.")
        import_modules([*modules, *(model_modules(loads_model) if loads_model else ())])
        job = Job(name, on_event=on_event, on_done=on_done, on_error=on_error, on_cancelled=on_cancelled)
        bridge, models = self._bridge, self.models

        def report(event: Event) -> None:
            bridge.reported.emit(job, event)

        def body() -> None:
            try:
                job.cancel_token.check()  # cancelled while it waited its turn
                kwargs: dict[str, Any] = {"report": report, "cancel": job.cancel_token}
                if pass_drain:
                    kwargs["drain"] = job.drain_token
                if pass_models:
                    kwargs["models"] = models
                if frees_models:
                    models.release()
                result = fn(**kwargs)
            except Cancelled:
                bridge.cancelled.emit(job)
            except BaseException as err:  # noqa: BLE001 - KeyboardInterrupt, SystemExit...: still a failure
                log.error("job %s failed", name, exc_info=err)
                bridge.failed.emit(job, err)
            else:
                bridge.done.emit(job, result)

        def never_ran(future: Future[None]) -> None:  # cancelled in the queue (shutdown): body never runs
            if future.cancelled():
                bridge.cancelled.emit(job)

        if kind == "mlx":
            job.future = self._mlx.submit(body)
        else:
            job.future = future = self._pool.submit(body)
            self._io_futures.add(future)
            future.add_done_callback(self._io_futures.discard)
        job.future.add_done_callback(never_ran)
        self.jobs.append(job)
        self.job_started.emit(job)
        return job

    def busy(self, kind_name: str | None = None) -> bool:
        return any(j.running and (kind_name is None or j.name == kind_name) for j in self.jobs)

    # -- GUI-thread dispatch --------------------------------------------------------------------------
    def _on_event(self, job: Job, event: Event) -> None:
        if job.on_event is not None and not job.finished:
            job.on_event(event)

    def _finish(self, job: Job) -> bool:
        if job.finished:
            return False
        job.finished = True
        if job in self.jobs:
            self.jobs.remove(job)
        self.job_finished.emit(job)
        return True

    def _on_done(self, job: Job, result: Any) -> None:
        if self._finish(job) and job.on_done is not None:
            job.on_done(result)

    def _on_failed(self, job: Job, err: BaseException) -> None:
        if self._finish(job) and job.on_error is not None:
            job.on_error(err)

    def _on_cancelled(self, job: Job) -> None:
        if self._finish(job) and job.on_cancelled is not None:
            job.on_cancelled()

    # -- quitting -----------------------------------------------------------------------------------
    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> bool:
        """Cancel every job and stop the threads, waiting at most `timeout` seconds in all.

        Runs once: later calls only report. Returns True when every thread has stopped, False when a job
        ignored its cancel and still runs (then nobody may wait for its thread: see app.main).
        """
        if not self._closed:
            self._closed = True
            deadline = time.monotonic() + timeout
            for job in list(self.jobs):
                job.cancel("quitting")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._mlx.shutdown(wait=False, cancel_pending=True)
            futures = [job.future for job in self.jobs if job.future is not None]
            wait_futures(futures, timeout=max(0.0, deadline - time.monotonic()))
            self._mlx.thread.join(max(0.0, deadline - time.monotonic()))
        return self.stopped

    @property
    def stopped(self) -> bool:
        """True once shut down and no thread of this runner runs a job any more."""
        return self._closed and not self._mlx.thread.is_alive() and not any(
            not f.done() for f in list(self._io_futures))
