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

And what keeps the window responsive while they work: every thread but the GUI thread runs at background
priority (`priority.py`); `app.main` keeps the objects made at start-up out of full garbage collections
(`startup.py`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any, TypeVar

from PySide6.QtCore import QObject, Qt, Signal

from app.jobs import priority
from app.jobs.gui_gc import collect_garbage_on_gui_thread
from app.jobs.model_cache import ModelCache
from app.jobs.preload import import_modules, model_modules, preload_engine_modules
from app.jobs.qt_guard import qt_objects_held
from lemcore.errors import Cancelled, LemError
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

    def __init__(self, parent: QObject | None = None, *, io_threads: int = 2,
                 background_priority: bool | None = None) -> None:
        """`background_priority`: run every thread but the GUI thread at background priority (Linux); None =
        yes unless LEM_WORK_PRIORITY=normal (`priority.wanted`)."""
        super().__init__(parent)
        self._background = priority.wanted() if background_priority is None else background_priority
        collect_garbage_on_gui_thread()  # before any worker thread exists
        preload_engine_modules()
        self._gui_thread_id = threading.get_native_id()
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
        gui_thread_id = self._gui_thread_id if self._background else None

        def report(event: Event) -> None:
            bridge.reported.emit(job, event)

        def body() -> None:
            try:
                if gui_thread_id is not None:
                    priority.lower_all_but(gui_thread_id)  # the window answers first (app/jobs/priority.py)
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
            except LemError as err:  # expected (no keychain, server down, bad data): one line, no traceback
                log.warning("job %s failed: %s: %s", name, type(err).__name__, err)
                bridge.failed.emit(job, err)
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
