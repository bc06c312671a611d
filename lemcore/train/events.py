"""What the training engine reports, as frozen dataclasses (one `report(event)` call each).

Order within a run: TrainStarted, then EvalDone (iteration 0, if there is a validation set), then per step a
TrainStep, with EvalDone and CheckpointSaved after the step they belong to, and finally TrainFinished (also on
cancel, early stop, divergence or a memory stop; then the engine raises or returns). A run over several
machines adds HostChecked (one per machine, before TrainStarted) and HostStatus (one per machine after each
reported step); a lost machine ends it with TrainFinished status "host_lost".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lemcore.events import Event


@dataclass(frozen=True)
class TrainStarted(Event):
    run_dir: Path
    model: str
    start_iteration: int  # 0 for a new run, the checkpoint's iteration when resuming
    total_iters: int
    train_examples: int
    valid_examples: int
    trainable_parameters: int
    total_parameters: int
    estimated_peak_gb: float
    usable_memory_gb: float
    resumed: bool
    warnings: tuple[str, ...] = ()  # from the data check: show them before the first step


@dataclass(frozen=True)
class TrainStep(Event):
    iteration: int
    total_iters: int
    train_loss: float  # this step's loss (mean over its unmasked tokens)
    val_loss: float | None  # the latest validation loss, if any
    learning_rate: float
    tokens_per_second: float  # this step
    iterations_per_second: float  # this step
    trained_tokens: int  # since the run began (resumes included)
    peak_memory_gb: float
    epoch: float  # passes over train.jsonl so far
    elapsed_seconds: float  # wall clock since this session of the run started
    eta_seconds: float  # remaining steps at the recent pace, plus the validations still to come


@dataclass(frozen=True)
class EvalDone(Event):
    iteration: int  # the number of steps taken when the adapter was measured
    val_loss: float
    val_seconds: float
    best_val_loss: float
    best_iteration: int
    improved: bool  # this measurement is the new best


@dataclass(frozen=True)
class CheckpointSaved(Event):
    iteration: int
    path: Path
    reason: str  # "periodic", "best", "cancel", "memory", "early_stop" or "final"


@dataclass(frozen=True)
class TrainFinished(Event):
    status: str  # "complete", "early_stopped", "cancelled", "diverged", "out_of_memory" or "host_lost"
    iteration: int
    total_iters: int
    train_loss: float | None
    val_loss: float | None
    best_val_loss: float | None
    best_iteration: int | None
    run_dir: Path
    message: str


# -- runs over several machines (train/launch.py, train/preflight.py) ----------------------------------------

@dataclass(frozen=True)
class HostChecked(Event):
    """One machine's pre-flight result, before a run over several machines (and from `lem doctor --hosts`)."""
    rank: int
    host: str
    ok: bool
    summary: str  # "mlx 0.32.4, mlx-lm 0.32.2, lem 0.1.0; 12.0 GB free" when it answered, else ""
    problems: tuple[str, ...]  # each names the machine and what to do


@dataclass(frozen=True)
class HostStatus(Event):
    """One machine of a running multi-machine run, sent with each reported step (every steps_per_report)."""
    rank: int
    host: str
    iteration: int
    free_memory_gb: float
    peak_memory_gb: float  # MLX's peak on that machine
