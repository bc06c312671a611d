"""One training session's live state: the trainer's callback and batch iterator (see engine.py).

The batch iterator is where everything between two optimizer steps happens: validation, best-checkpoint
tracking, early stopping, periodic and stop checkpoints, and cancellation. At that point the trainer has
evaluated the model and optimizer state of the step just taken, so a checkpoint is exact. With gradient
accumulation a stop waits for the next optimizer update (accumulated gradients are not saved).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lemcore.jobs import CancelToken, Report
from lemcore.train.config import TrainConfig
from lemcore.train.distributed import (
    SINGLE,
    STOP_CANCEL,
    STOP_MEMORY,
    STOP_NONE,
    World,
    exchange_status,
    loss_tokens,
)
from lemcore.train.events import CheckpointSaved, EvalDone, HostStatus, TrainFinished, TrainStep
from lemcore.train.memory import MemoryWatch, free_memory_bytes, low_memory_message
from lemcore.train.resume import (
    BatchOrder,
    RunState,
    check_loss,
    early_stop_due,
    record_eval,
    save_best,
    save_checkpoint,
    step_seed,
)
from lemcore.train.run import MetricsLog

PAD_TO = 32  # mlx-lm pads each batch to 1 + a multiple of 32 tokens


class Stop(Exception):
    """Ends the trainer's loop from inside it (cancel, low memory, early stop)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def batch_indices(dataset: Any, batch_size: int) -> list[list[int]]:
    """mlx-lm's batching: indices sorted by `itemlen` (stable), cut into full batches. Kept identical so a
    run here and `mlx_lm lora` with the same settings see the same batches."""
    length = dataset.itemlen if hasattr(dataset, "itemlen") else (lambda i: len(dataset[i][0]))
    order = sorted(range(len(dataset)), key=length)
    return [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]


def padded_width(longest: int, max_seq_length: int) -> int:
    return min(1 + PAD_TO * ((longest + PAD_TO - 1) // PAD_TO), max_seq_length)


def collate(dataset: Any, indices: list[int], max_seq_length: int) -> tuple[Any, Any]:
    """Token ids padded to 1 + a multiple of 32 (capped at max_seq_length), and (offset, length) pairs."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    items = [dataset[j] for j in indices]
    seqs = [item[0] for item in items]
    offsets = [item[1] for item in items]
    width = padded_width(max(len(s) for s in seqs), max_seq_length)
    arr = np.zeros((len(seqs), width), np.int32)
    lengths = []
    for row, seq in enumerate(seqs):
        n = min(len(seq), max_seq_length)
        arr[row, :n] = seq[:n]
        lengths.append(n)
    return mx.array(arr), mx.array(list(zip(offsets, lengths)))


class Session:
    def __init__(self, config: TrainConfig, model: Any, optimizer: Any, run_dir: Path, state: RunState,
                 train_set: Any, valid_set: Any, metrics: MetricsLog, report: Report, cancel: CancelToken,
                 *, resumed: bool, world: World = SINGLE) -> None:
        self.config, self.model, self.optimizer, self.run_dir = config, model, optimizer, run_dir
        self.state, self.train_set, self.valid_set = state, train_set, valid_set
        self.metrics, self.report, self.cancel, self.resumed = metrics, report, cancel, resumed
        self.world = world
        self.start_iteration = state.iteration
        self.base_tokens = state.trained_tokens
        self.last_train_loss: float | None = None
        self.last_checkpoint: int | None = state.iteration if resumed else None
        self.started = time.monotonic()
        self._step_seconds: float | None = None  # moving average, for the ETA
        self._eval_seconds = 0.0
        self._validated_at: int | None = None
        self._first_call = True
        self._stop: tuple[str, str] | None = None
        self._watch = MemoryWatch()
        self._n_batches = max(len(train_set) // config.batch_size, 1)

    # -- the trainer's hooks ------------------------------------------------------------------------------
    def callback(self) -> Any:
        from mlx_lm.tuner.callbacks import (
            TrainingCallback,  # lazy: mlx-lm pulls in MLX and transformers (seconds)
        )

        session = self

        class _Callback(TrainingCallback):
            def on_train_loss_report(self, train_info: dict[str, Any]) -> None:
                session.on_step(train_info)

        return _Callback()

    def iterate_batches(self, dataset: Any, batch_size: int, max_seq_length: int, loop: bool = False,
                        seed: int | None = None, comm_group: Any = None) -> Iterator[tuple[Any, ...]]:
        import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

        # Every rank builds the same global batches in the same order and takes its own rows of each (a single
        # process takes them all).
        world = self.world
        batches = batch_indices(dataset, batch_size)
        if not loop:  # validation: the same batches every time, so successive losses compare
            for i in np.random.RandomState(self.config.seed).permutation(len(batches)):
                yield collate(dataset, world.shard(batches[i]), max_seq_length)
            return
        order = BatchOrder(len(batches), self.config.seed, self.state)
        while True:
            self._between_steps()
            rows = batches[order.next()]
            batch = collate(dataset, world.shard(rows), max_seq_length)
            mx.random.seed(step_seed(self.config.seed, self.state.iteration + 1))
            if world.distributed:
                tokens = self._global_tokens(dataset, rows, max_seq_length)
                weight = world.size / tokens if tokens else float("nan")  # NaN like 0/0 on one machine
                yield (*batch, mx.array(weight, dtype=mx.float32))
            else:
                yield batch

    def _global_tokens(self, dataset: Any, rows: list[int], max_seq_length: int) -> int:
        """Tokens the loss covers in the whole global batch, counted as each rank pads its own slice."""
        total = 0
        for rank in range(self.world.size):
            items = [dataset[j] for j in rows[rank::self.world.size]]
            width = padded_width(max(len(item[0]) for item in items), max_seq_length)
            total += loss_tokens([(item[1], min(len(item[0]), max_seq_length)) for item in items], width)
        return total

    def on_step(self, info: dict[str, Any]) -> None:
        st, cfg = self.state, self.config
        k = self.start_iteration + int(info["iteration"])
        loss = float(info["train_loss"])
        tokens = self.base_tokens + int(info["trained_tokens"])
        step_tokens, st.iteration, st.trained_tokens = tokens - st.trained_tokens, k, tokens
        check_loss(st, k, loss, cfg.divergence_factor, cfg, self.last_checkpoint, step_tokens)
        self.last_train_loss = loss
        its = float(info["iterations_per_second"])
        seconds = 1.0 / its if its > 0 else 0.0
        self._step_seconds = seconds if self._step_seconds is None else 0.8 * self._step_seconds + 0.2 * seconds
        evals_left = 0
        if self.valid_set is not None:
            evals_left = (cfg.iters - 1) // cfg.steps_per_eval - k // cfg.steps_per_eval + (k < cfg.iters)
        eta = (cfg.iters - k) * self._step_seconds + max(evals_left, 0) * self._eval_seconds
        lr = float(info["learning_rate"])
        tps = float(info["tokens_per_second"])
        peak = float(info["peak_memory"])
        self.metrics.write("train", iteration=k, train_loss=loss, learning_rate=lr, tokens_per_second=tps,
                           iterations_per_second=its, trained_tokens=st.trained_tokens, peak_memory_gb=peak)
        self.report(TrainStep(iteration=k, total_iters=cfg.iters, train_loss=loss, val_loss=st.last_val_loss,
                              learning_rate=lr, tokens_per_second=tps, iterations_per_second=its,
                              trained_tokens=st.trained_tokens, peak_memory_gb=peak,
                              epoch=(st.epoch * self._n_batches + st.position) / self._n_batches,
                              elapsed_seconds=time.monotonic() - self.started, eta_seconds=eta))
        if self._stop is None and (low := self._watch.low_memory()):
            self._stop = ("memory", low)

    # -- between two steps ----------------------------------------------------------------------------------
    def _between_steps(self) -> None:
        st, cfg = self.state, self.config
        k = st.iteration
        if self._first_call:
            self._first_call = False
            if not self.resumed:
                self.validate_now()
            if self.world.distributed:
                self._share_status()
                if self._stop is not None and self._stop[0] == "memory":
                    raise Stop(*self._stop)
            if self.cancel.cancelled or self._stop is not None:
                raise Stop("cancel", f"Cancelled before training began (iteration {k}).")
            return
        if k % cfg.steps_per_eval == 0:
            self.validate_now()
            if early_stop_due(st, cfg.early_stopping_patience):
                raise Stop("early_stop", "early stop")
        if k % cfg.save_every == 0:
            self.checkpoint("periodic")
        if self._stop is None and self.cancel.cancelled:
            self._stop = ("cancel", "")
        if self.world.distributed:
            self._share_status()
        if self._stop is not None and k % cfg.grad_accumulation_steps == 0:
            reason, message = self._stop
            message = message or f"Cancelled at iteration {k}. Resume with: lem train --resume {self.run_dir}"
            if self.last_checkpoint != k:
                self.checkpoint(reason)
            raise Stop(reason, message)

    def _share_status(self) -> None:
        """Over several machines: tell every rank of a stop on any rank (cancel reaches rank 0 only, low memory
        any rank), so all stop after the same step; rank 0 reports each machine's memory."""
        import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

        world, k = self.world, self.state.iteration
        reason = self._stop[0] if self._stop is not None else ""
        code = STOP_MEMORY if reason == "memory" else STOP_CANCEL if reason == "cancel" else STOP_NONE
        rows = exchange_status(world, code, free_memory_bytes(), mx.get_peak_memory() / 1e9)
        low = [(rank, free) for rank, (c, free, _) in enumerate(rows) if c == STOP_MEMORY]
        if low:
            rank, free = low[0]
            self._stop = ("memory", low_memory_message(int(free * 2**30), world.where(rank)))
        elif any(c == STOP_CANCEL for c, _, _ in rows):
            self._stop = ("cancel", "")
        if k == self.start_iteration or k % self.config.steps_per_report == 0:
            for rank, (_, free, peak) in enumerate(rows):
                self.report(HostStatus(rank=rank, host=world.where(rank), iteration=k, free_memory_gb=free,
                                       peak_memory_gb=peak))

    def validate_now(self) -> None:
        """Measure the validation loss at the current iteration (once per iteration)."""
        from mlx_lm.tuner.trainer import evaluate  # lazy: mlx-lm pulls in MLX and transformers (seconds)

        k = self.state.iteration
        if self.valid_set is None or self._validated_at == k:
            return
        self._validated_at = k
        tic = time.perf_counter()
        val_loss = evaluate(model=self.model, dataset=self.valid_set, batch_size=self.config.batch_size,
                            num_batches=self.config.val_batches, max_seq_length=self.config.max_seq_length,
                            iterate_batches=self.iterate_batches)
        self.model.train()
        self._eval_seconds = time.perf_counter() - tic
        improved = record_eval(self.state, k, val_loss, self.config.early_stopping_min_delta)
        self.metrics.write("val", iteration=k, val_loss=val_loss, val_seconds=self._eval_seconds,
                           best=improved)
        self.report(EvalDone(iteration=k, val_loss=val_loss, val_seconds=self._eval_seconds,
                             best_val_loss=float(self.state.best_val_loss or val_loss),
                             best_iteration=int(self.state.best_iteration or 0), improved=improved))
        if improved and self.world.main:
            path = save_best(self.run_dir, self.model, self.state)
            self.report(CheckpointSaved(iteration=k, path=path, reason="best"))

    def checkpoint(self, reason: str) -> Path:
        if not self.world.main:  # rank 0 alone writes the run folder
            self.last_checkpoint = self.state.iteration
            return self.run_dir
        path = save_checkpoint(self.run_dir, self.model, self.optimizer, self.state)
        self.last_checkpoint = self.state.iteration
        self.metrics.write("checkpoint", iteration=self.state.iteration, path=str(path), reason=reason)
        self.report(CheckpointSaved(iteration=self.state.iteration, path=path, reason=reason))
        return path

    def finish(self, status: str, message: str) -> None:
        st = self.state
        self.metrics.write("finished", iteration=st.iteration, status=status, message=message)
        self.report(TrainFinished(status=status, iteration=st.iteration, total_iters=self.config.iters,
                                  train_loss=self.last_train_loss, val_loss=st.last_val_loss,
                                  best_val_loss=st.best_val_loss, best_iteration=st.best_iteration,
                                  run_dir=self.run_dir, message=message))
