"""Report a training run to the lab's InfluxDB in its existing shape (docs/lab-formats.md, "InfluxDB schema"),
so the lab's dashboard shows desktop runs beside its own:

- `training_loss`, tags model, run_id, loss_type (train/val); fields iteration (int), loss, and for train lines
  learning_rate, tokens_per_sec, iterations_per_sec. Train lines average the loss over each report window,
  as the lab's mlx-lm log parser did.
- `training_status`, tags model, run_id; fields status, iteration (int), total_iters (int), pct. Written at
  the start, every 100 iterations and at the end.

Use it as (or inside) the engine's `report`. Calls only format and enqueue; one daemon thread does the network
writes, so a slow or absent server never holds up training: failed lines wait in a bounded buffer and are
retried with back-off, the oldest dropped first. The thread runs no MLX code.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from pathlib import Path
from typing import Any

from lemcore.events import Event
from lemcore.influx import InfluxClient, line
from lemcore.train.events import EvalDone, TrainFinished, TrainStarted, TrainStep

STATUS_EVERY = 100
MAX_BUFFER = 5000
_FINAL_STATUS = {"complete": "complete", "early_stopped": "complete", "cancelled": "cancelled",
                 "diverged": "failed", "out_of_memory": "failed"}


class InfluxTrainReporter:
    def __init__(self, client: InfluxClient, *, model: str, run_id: str = "", every: int = 10,
                 retry_seconds: float = 5.0) -> None:
        self.client = client
        self.model = Path(model.rstrip("/")).name or model
        self.run_id = run_id
        self.every = max(every, 1)
        self.failures = 0
        self.last_error = ""
        self._retry = retry_seconds
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._window: list[TrainStep] = []
        self._thread = threading.Thread(target=self._run, name="lem-influx-train", daemon=True)
        self._thread.start()

    # -- the report callable: never blocks ----------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        if isinstance(event, TrainStarted):
            self.run_id = self.run_id or event.run_dir.name
            self._status("training", event.start_iteration, event.total_iters)
        elif isinstance(event, TrainStep):
            self._window.append(event)
            if event.iteration % self.every == 0 or event.iteration == event.total_iters:
                self._train_line()
            if event.iteration % STATUS_EVERY == 0:
                self._status("training", event.iteration, event.total_iters)
        elif isinstance(event, EvalDone):
            self._loss("val", event.iteration, event.val_loss, {})
        elif isinstance(event, TrainFinished):
            if self._window:
                self._train_line()
            self._status(_FINAL_STATUS.get(event.status, "failed"), event.iteration, event.total_iters)

    def status(self, status: str, iteration: int, total_iters: int) -> None:
        """For stages after training (the lab's `fusing`, `fuse_failed`)."""
        self._status(status, iteration, total_iters)

    def close(self, timeout: float = 5.0) -> None:
        """Try to deliver what is queued within `timeout` seconds, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    # -- formatting -------------------------------------------------------------------------------------------
    def _tags(self, **extra: str) -> dict[str, str]:
        return {"model": self.model, "run_id": self.run_id, **extra}

    def _train_line(self) -> None:
        window, self._window = self._window, []
        last = window[-1]
        loss = sum(s.train_loss for s in window) / len(window)
        self._loss("train", last.iteration, loss, {
            "learning_rate": last.learning_rate,
            "tokens_per_sec": sum(s.tokens_per_second for s in window) / len(window),
            "iterations_per_sec": sum(s.iterations_per_second for s in window) / len(window)})

    def _loss(self, kind: str, iteration: int, loss: float, extra: dict[str, float]) -> None:
        if loss != loss:  # NaN: a point whose fields are NaN is dropped by the client; say nothing instead
            return
        self._put("training_loss", self._tags(loss_type=kind), {"iteration": int(iteration), "loss": float(loss),
                                                                 **{k: float(v) for k, v in extra.items()}})

    def _status(self, status: str, iteration: int, total: int) -> None:
        pct = round(100.0 * iteration / total, 2) if total else 0.0
        self._put("training_status", self._tags(), {"status": status, "iteration": int(iteration),
                                                    "total_iters": int(total), "pct": pct})

    def _put(self, measurement: str, tags: dict[str, str], fields: dict[str, Any]) -> None:

        self._queue.put(line(measurement, tags, fields, time_ns=time.time_ns()))

    # -- the writer thread ------------------------------------------------------------------------------------
    def _run(self) -> None:
        pending: collections.deque[str] = collections.deque(maxlen=MAX_BUFFER)
        retry_at = 0.0
        backoff = self._retry
        stopping = False
        while True:
            items: list[str | None] = []
            try:
                items.append(self._queue.get(timeout=0.5))
                while True:  # take everything queued: one write per batch
                    items.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            for item in items:
                if item is None:
                    stopping = True
                else:
                    pending.append(item)
            if pending and time.monotonic() >= retry_at:
                batch = list(pending)
                try:
                    self.client.write(batch)
                except Exception as err:  # noqa: BLE001 - any failure: keep the lines, try later
                    self.failures += 1
                    self.last_error = str(err)
                    retry_at = time.monotonic() + backoff
                    backoff = min(backoff * 2, 60.0)
                else:
                    for _ in batch:
                        pending.popleft()
                    backoff = self._retry
            if stopping and (not pending or time.monotonic() < retry_at):
                return
