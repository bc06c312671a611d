"""The only place in the app where threads are created.

MLX jobs (generation, training, benchmarks, model loading) run one at a time on a single long-lived
`MLXWorker` thread, as the mlx-lm server does; network and keychain calls run on a small pool. Each job is
a plain function `fn(report, cancel)`; every `report(event)` becomes a queued Qt signal, so handlers run on
the GUI thread. Pages start work with one call (`JobRunner.start`) and never touch threads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, Signal

from app.jobs.model_cache import ModelCache
from lemcore.errors import Cancelled
from lemcore.jobs import CancelToken
from lemcore.mlx_thread import MLXWorker

log = logging.getLogger(__name__)

Handler = Callable[[Any], None]


@dataclass(eq=False)
class Job:
    """Handle to a running job: cancel it, or ask it to finish what is in flight (`drain`)."""

    name: str
    cancel_token: CancelToken = field(default_factory=CancelToken)
    drain_token: CancelToken = field(default_factory=CancelToken)
    on_event: Handler | None = None
    on_done: Handler | None = None
    on_error: Handler | None = None
    on_cancelled: Callable[[], None] | None = None
    future: Future | None = None
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

    event = Signal(object, object)
    done = Signal(object, object)
    failed = Signal(object, object)
    cancelled = Signal(object)


# Modules the engines import lazily. Importing them for the first time on a worker thread while the GUI
# thread is inside PySide can deadlock (seen once in a test run: the engine thread stuck in an import while
# the GUI thread sat in a Qt call). So the runner imports them once, on the GUI thread, before any job runs.
ENGINE_MODULES = (
    "mlx.core", "mlx_lm", "mlx_lm.generate", "mlx_lm.tuner.trainer", "transformers", "influxdb_client",
    "mlx_lm.models.llama", "mlx_lm.models.gemma3", "mlx_lm.models.gemma3_text",  # the catalog's architectures
    "lemcore.contribute.engine", "lemcore.contribute.setup", "lemcore.contribute.queue.lab", "lemcore.models.loading",
    "lemcore.train.engine", "lemcore.train.fuse", "lemcore.benchmarks", "lemcore.models.embedded",
)


def preload_engine_modules() -> None:
    import importlib

    for name in ENGINE_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # an engine this build lacks: its job reports the error when started
            log.warning("could not preload %s", name)


class JobRunner(QObject):
    job_started = Signal(object)
    job_finished = Signal(object)

    def __init__(self, parent: QObject | None = None, *, io_threads: int = 2) -> None:
        super().__init__(parent)
        preload_engine_modules()
        self._mlx = MLXWorker("lem-engine")
        self._pool = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="lem-io")
        self._bridge = _Bridge()
        self._bridge.event.connect(self._on_event)
        self._bridge.done.connect(self._on_done)
        self._bridge.failed.connect(self._on_failed)
        self._bridge.cancelled.connect(self._on_cancelled)
        self.jobs: list[Job] = []
        self.models = ModelCache()  # the loaded model kept between jobs (MLX thread only)
        self._closed = False

    # -- starting ------------------------------------------------------------------------------------
    def start(self, name: str, fn: Callable[..., Any], *, on_event: Handler | None = None,
              on_done: Handler | None = None, on_error: Handler | None = None,
              on_cancelled: Callable[[], None] | None = None, kind: str = "mlx",
              pass_drain: bool = False, pass_models: bool = False, frees_models: bool = False) -> Job:
        """Run `fn(report=..., cancel=...)` on the MLX thread or the IO pool, plus `drain=` (finish in-flight
        work) and `models=` (the runner's ModelCache) when asked. `frees_models` drops the cached model before
        the job starts, for jobs that need the memory (training, benchmarks)."""
        if self._closed:
            raise RuntimeError("the app is quitting")
        job = Job(name, on_event=on_event, on_done=on_done, on_error=on_error, on_cancelled=on_cancelled)

        def report(event: Any) -> None:
            self._bridge.event.emit(job, event)

        def body() -> None:
            try:
                kwargs: dict[str, Any] = {"report": report, "cancel": job.cancel_token}
                if pass_drain:
                    kwargs["drain"] = job.drain_token
                if pass_models:
                    kwargs["models"] = self.models
                if frees_models:
                    self.models.release()
                result = fn(**kwargs)
            except Cancelled:
                self._bridge.cancelled.emit(job)
            except BaseException as err:
                if not isinstance(err, Exception):
                    raise
                log.exception("job %s failed", name)
                self._bridge.failed.emit(job, err)
            else:
                self._bridge.done.emit(job, result)

        executor = self._mlx.submit if kind == "mlx" else self._pool.submit
        job.future = executor(body)
        self.jobs.append(job)
        self.job_started.emit(job)
        return job

    def busy(self, kind_name: str | None = None) -> bool:
        return any(j.running and (kind_name is None or j.name == kind_name) for j in self.jobs)

    # -- GUI-thread dispatch --------------------------------------------------------------------------
    def _on_event(self, job: Job, event: Any) -> None:
        if job.on_event is not None:
            job.on_event(event)

    def _finish(self, job: Job) -> None:
        job.finished = True
        if job in self.jobs:
            self.jobs.remove(job)
        self.job_finished.emit(job)

    def _on_done(self, job: Job, result: Any) -> None:
        self._finish(job)
        if job.on_done is not None:
            job.on_done(result)

    def _on_failed(self, job: Job, err: Exception) -> None:
        self._finish(job)
        if job.on_error is not None:
            job.on_error(err)

    def _on_cancelled(self, job: Job) -> None:
        self._finish(job)
        if job.on_cancelled is not None:
            job.on_cancelled()

    # -- quitting -----------------------------------------------------------------------------------
    def shutdown(self, timeout: float = 30.0) -> None:
        """Cancel every job, wait for them, stop the threads (the MLX thread releases its streams)."""
        self._closed = True
        for job in list(self.jobs):
            job.cancel("quitting")
        for job in list(self.jobs):
            if job.future is not None:
                try:
                    job.future.result(timeout=timeout)
                except BaseException:  # noqa: BLE001 - outcome already reported through the bridge
                    pass
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._mlx.shutdown(wait=True, cancel_pending=True)
