"""One long-lived thread for MLX work.

MLX work off the main thread must end with one `mx.clear_streams()` when that thread exits; `MLXWorker` is that
thread (docs/platform-notes.md, "MLX threads and stream release"). It runs tasks one at a time and clears the
streams once, when it ends.

mlx is imported only by the tasks themselves: importing this module stays cheap.
"""

from __future__ import annotations

import atexit
import queue
import sys
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Self, TypeVar

from lemcore.blas import trim_heap

T = TypeVar("T")

_STOP = object()  # queue sentinel: no more tasks
_IDLE_POLL_S = 0.5  # fallback only: how often an idle worker checks whether the main thread has finished

_live_workers: weakref.WeakSet[MLXWorker] = weakref.WeakSet()


class MLXWorker:
    """Runs submitted callables one at a time, in order, on one dedicated non-daemon thread.

    Use it for every MLX call of a job (load, generate, train): MLX arrays and streams belong to the thread
    that made them. Call `shutdown()` when done; if a program forgets, the worker stops by itself when the
    main thread ends, after finishing the tasks already queued, so the process still exits cleanly.
    Tasks should return Python values or evaluated arrays, not lazy graphs: the thread's streams go with it.
    """

    def __init__(self, name: str = "lem-mlx") -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=False)
        self._thread.start()
        _live_workers.add(self)

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def on_worker_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Queue `fn(*args, **kwargs)`; its result or exception arrives through the returned Future.

        From inside a task, do not wait on a Future of this worker: the thread is busy running you. Use
        `call()`, which runs inline there.
        """
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("This MLXWorker is shut down; create a new one.")
            self._queue.put((future, fn, args, kwargs))
        return future

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run `fn` on the worker thread and wait for its result (inline when already on that thread)."""
        if self.on_worker_thread():
            return fn(*args, **kwargs)
        return self.submit(fn, *args, **kwargs).result()

    def shutdown(self, wait: bool = True, *, cancel_pending: bool = False) -> None:
        """Stop accepting tasks; the thread finishes the queue (or cancels what has not started) and exits.

        A task already running cannot be interrupted here: stop it with its CancelToken first.
        """
        with self._lock:
            if not self._closed:
                self._closed = True
                if cancel_pending:
                    self._cancel_queued()
                self._queue.put(_STOP)
        if wait and not self.on_worker_thread():
            self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown(wait=True)

    def _cancel_queued(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                item[0].cancel()

    def _run(self) -> None:
        try:
            while True:
                try:
                    item = self._queue.get(timeout=_IDLE_POLL_S)
                except queue.Empty:
                    # Fallback if the exit hook below could not be registered: once the main thread is gone
                    # nobody can submit any more, and a blocked non-daemon thread would hang the exit.
                    if not threading.main_thread().is_alive():
                        self.shutdown(wait=False)
                    continue
                if item is _STOP:
                    return
                self._execute(*item)
                del item  # no task's arrays may outlive its run: the streams go at the end
                trim_heap()  # and the heap memory glibc kept for reuse during it (lemcore/blas.py, HEAP_REUSE)
        finally:
            _release_mlx_streams()

    @staticmethod
    def _execute(
        future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, as concurrent.futures does
            future.set_exception(exc)
        else:
            future.set_result(result)


def _release_mlx_streams() -> None:
    """The thread's last MLX call. Only if MLX was ever imported: otherwise there is nothing to release."""
    mx = sys.modules.get("mlx.core")
    clear = getattr(mx, "clear_streams", None)  # absent in older mlx: nothing to do
    if clear is not None:
        clear()


def _shutdown_live_workers() -> None:
    for worker in list(_live_workers):
        worker.shutdown(wait=False)


# Interpreter exit joins non-daemon threads BEFORE plain `atexit` hooks run, so an idle worker would block
# exit forever. threading's own exit hook (what concurrent.futures uses) runs before that join; if it is
# missing, the idle poll above notices the finished main thread. The plain atexit hook is a last resort.
_register_threading_atexit = getattr(threading, "_register_atexit", None)
if _register_threading_atexit is not None:
    _register_threading_atexit(_shutdown_live_workers)
atexit.register(_shutdown_live_workers)
