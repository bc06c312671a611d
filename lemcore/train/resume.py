"""True resume: checkpoints that continue a run on the loss curve it would have had, plus the run's guards.

A checkpoint (`<run>/checkpoints/<iteration>/`) holds the adapter weights, the optimizer state (Adam moments,
step count, hence the learning-rate schedule position) and `state.json`: the iteration, trained tokens, the
data order (numpy MT19937 state at the start of the current epoch plus the position in it) and the bookkeeping
of best-checkpoint tracking, early stopping and the divergence watchdog. mlx-lm's `--resume-adapter-file`
restores only the weights (docs/platform-notes.md, "mlx-lm training API"), so Adam restarts cold and the data
order restarts from the first batch.

MLX's random key cannot be set from Python (`mx.random.state` only accepts `seed(int)`), so instead of saving
the key the engine reseeds MLX before every step from (seed, iteration). Dropout masks are then a pure
function of the step, the same in an uninterrupted run and in a resumed one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lemcore.errors import ConfigError, LemError
from lemcore.train.config import TrainConfig

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

CHECKPOINTS = "checkpoints"
BEST = "best"
ADAPTER_FILE = "adapters.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
ADAPTER_CONFIG = "adapter_config.json"
CHECKPOINT_FILES = (ADAPTER_FILE, OPTIMIZER_FILE, STATE_FILE)  # what `restore` reads

# Settings that shape the loss curve: a resumed run must keep them (grad_checkpoint, reporting and the number
# of iterations may change; iters only matters for a cosine schedule, whose decay length it sets).
CURVE_FIELDS = ("model", "fine_tune_type", "num_layers", "lora_rank", "lora_scale", "lora_dropout", "mask_prompt",
                "batch_size", "learning_rate", "lr_schedule", "warmup_steps", "min_learning_rate", "optimizer",
                "grad_accumulation_steps", "max_seq_length", "seed")


class TrainingDiverged(LemError):
    """The loss became NaN/infinite or exploded; the run stopped without saving the broken weights."""


def step_seed(seed: int, iteration: int) -> int:
    """The MLX random seed for step `iteration` (1-based): distinct per step, reproducible per run."""
    return (seed * 1_000_003 + iteration) % (2**63)


@dataclass
class RunState:
    """The engine's bookkeeping; saved as each checkpoint's state.json."""

    iteration: int = 0
    trained_tokens: int = 0
    epoch: int = 0
    position: int = 0  # batches of the current epoch already handed out
    epoch_rng_state: list[Any] | None = None  # numpy RandomState at the start of `epoch` (data order)
    last_val_loss: float | None = None
    best_val_loss: float | None = None
    best_iteration: int | None = None
    evals_without_improvement: int = 0
    reference_loss: float | None = None  # the watchdog's baseline: mean of the first steps' losses
    first_losses: list[float] = field(default_factory=list)
    data_fingerprint: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RunState:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


class BatchOrder:
    """Which batch comes next: a fresh permutation of the batches each epoch, from a private RandomState
    (global numpy randomness is used by others, e.g. mlx-lm's validation batcher). Its first epoch equals
    mlx-lm's own order for the same seed (`np.random.seed(seed); np.random.permutation(n)`)."""

    def __init__(self, n_batches: int, seed: int, state: RunState) -> None:

        self.n = n_batches
        self.state = state
        self._rng = np.random.RandomState(seed)
        if state.epoch_rng_state is not None:
            self._rng.set_state(_decode_rng(state.epoch_rng_state))
        else:
            state.epoch_rng_state = _encode_rng(self._rng.get_state(legacy=False))
        self._perm = self._rng.permutation(n_batches)

    def next(self) -> int:
        if self.state.position >= self.n:
            self.state.epoch += 1
            self.state.position = 0
            self.state.epoch_rng_state = _encode_rng(self._rng.get_state(legacy=False))
            self._perm = self._rng.permutation(self.n)
        index = int(self._perm[self.state.position])
        self.state.position += 1
        return index


def _encode_rng(state: dict[str, Any]) -> list[Any]:
    """`RandomState.get_state(legacy=False)` as JSON: the five fields of the legacy tuple, in its order."""
    mt = state["state"]
    return [state["bit_generator"], [int(k) for k in mt["key"]], int(mt["pos"]), int(state["has_gauss"]),
            float(state["gauss"])]


def _decode_rng(raw: list[Any]) -> tuple[str, NDArray[np.uint32], int, int, float]:

    return (str(raw[0]), np.array(raw[1], dtype=np.uint32), int(raw[2]), int(raw[3]), float(raw[4]))


# -- checkpoints -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Checkpoint:
    path: Path
    state: RunState

    @property
    def run_dir(self) -> Path:
        return self.path.parent.parent

    @property
    def iteration(self) -> int:
        return self.state.iteration


def write_adapter_config(folder: Path, config: TrainConfig, num_layers: int) -> None:
    """The adapter_config.json mlx-lm's load(adapter_path=...) and fuse read (num_layers resolved)."""
    body = {**config.to_mlx_dict(), "num_layers": num_layers, "adapter_path": str(folder)}
    body.pop("lem", None)
    (folder / ADAPTER_CONFIG).write_text(json.dumps(body, indent=2, sort_keys=True), encoding="utf-8")


def save_checkpoint(run_dir: Path, model: Any, optimizer: Any, state: RunState) -> Path:
    """Write checkpoint `state.iteration` atomically (temp folder, then rename)."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")
    from mlx.utils import tree_flatten  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    final = run_dir / CHECKPOINTS / f"{state.iteration:07d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    mx.save_safetensors(str(tmp / ADAPTER_FILE), dict(tree_flatten(model.trainable_parameters())))
    mx.save_safetensors(str(tmp / OPTIMIZER_FILE), dict(tree_flatten(optimizer.state)))
    (tmp / STATE_FILE).write_text(json.dumps(state.to_json()), encoding="utf-8")
    if (run_dir / ADAPTER_CONFIG).is_file():
        shutil.copy2(run_dir / ADAPTER_CONFIG, tmp / ADAPTER_CONFIG)  # each checkpoint loads on its own
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def save_best(run_dir: Path, model: Any, state: RunState) -> Path:
    """The adapter with the lowest validation loss so far, loadable as mlx-lm's adapter_path."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")
    from mlx.utils import tree_flatten  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    best = run_dir / BEST
    best.mkdir(exist_ok=True)
    mx.save_safetensors(str(best / ADAPTER_FILE), dict(tree_flatten(model.trainable_parameters())))
    if (run_dir / ADAPTER_CONFIG).is_file():
        shutil.copy2(run_dir / ADAPTER_CONFIG, best / ADAPTER_CONFIG)
    (best / "best.json").write_text(json.dumps({"iteration": state.best_iteration,
                                                "val_loss": state.best_val_loss}), encoding="utf-8")
    return best


def find_checkpoint(path: Path | str) -> Checkpoint:
    """A checkpoint folder, or a run folder (its latest checkpoint)."""
    path = Path(path).expanduser()
    if (path / STATE_FILE).is_file():
        folder = path
    else:
        # Only finished checkpoints: a process killed while saving leaves a "<iteration>.tmp" folder behind.
        found = sorted(p for p in (path / CHECKPOINTS).glob("[0-9]*")
                       if p.name.isdigit() and (p / STATE_FILE).is_file()) \
            if (path / CHECKPOINTS).is_dir() else []
        if not found:
            raise ConfigError(f"{path} holds no checkpoint to resume from. Pick a run folder that has a "
                              f"'{CHECKPOINTS}' folder, or start a new run.")
        folder = found[-1]
    try:
        state = RunState.from_json(json.loads((folder / STATE_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError) as err:
        raise ConfigError(f"Checkpoint {folder} is damaged ({err}). Resume from an earlier one.") from None
    return Checkpoint(folder, state)


def restore(checkpoint: Checkpoint, model: Any, optimizer: Any) -> None:
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")
    from mlx.utils import (
        tree_unflatten,  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")
    )

    model.load_weights(str(checkpoint.path / ADAPTER_FILE), strict=False)
    saved = mx.load(str(checkpoint.path / OPTIMIZER_FILE))
    if not isinstance(saved, dict):  # a .safetensors file always loads as a dict of arrays
        raise ConfigError(f"Checkpoint {checkpoint.path} has an unreadable optimizer state. Resume from an "
                          "earlier one.")
    optimizer.state = tree_unflatten(list(saved.items()))  # mlx re-inits missing leaves, keeps these
    mx.eval(model.parameters(), optimizer.state)


def curve_differences(before: TrainConfig, now: TrainConfig) -> list[str]:
    names = list(CURVE_FIELDS) + (["iters"] if now.lr_schedule == "cosine" else [])
    return [f"{n}: {getattr(before, n)!r} in the run, {getattr(now, n)!r} now" for n in names
            if getattr(before, n) != getattr(now, n)]


# -- guards ------------------------------------------------------------------------------------------------

def record_eval(state: RunState, iteration: int, val_loss: float, min_delta: float) -> bool:
    """Update best/early-stopping bookkeeping; True when this is the new best."""
    state.last_val_loss = val_loss
    if state.best_val_loss is None or val_loss < state.best_val_loss - min_delta:
        state.best_val_loss, state.best_iteration = val_loss, iteration
        state.evals_without_improvement = 0
        return True
    state.evals_without_improvement += 1
    return False


def early_stop_due(state: RunState, patience: int) -> bool:
    return patience > 0 and state.evals_without_improvement >= patience


WATCHDOG_WARMUP = 5  # steps whose mean loss is the baseline


def check_loss(state: RunState, iteration: int, loss: float, factor: float, config: TrainConfig,
               last_checkpoint: int | None, step_tokens: int = 1) -> None:
    """Raise TrainingDiverged on a NaN/infinite loss or one above `factor` x the starting loss."""
    if not math.isfinite(loss) and step_tokens == 0:
        raise TrainingDiverged(f"Training stopped at iteration {iteration}: the loss is NaN because that batch had "
                               "no tokens to train on (with mask-prompt, prompts longer than max_seq_length "
                               f"{config.max_seq_length} leave nothing of the reply). Raise max_seq_length or "
                               "shorten those prompts (the data check lists them).")
    where = (f"resume from checkpoint {last_checkpoint} with a lower learning rate"
             if last_checkpoint else "start again with a lower learning rate")
    advice = (f"The learning rate ({config.learning_rate:g}) is probably too high: {where} "
              f"(the lab uses 1e-5).")
    if not math.isfinite(loss):
        raise TrainingDiverged(f"Training stopped at iteration {iteration}: the loss became "
                               f"{'NaN' if math.isnan(loss) else 'infinite'}. {advice}")
    if state.reference_loss is None:
        state.first_losses.append(loss)
        if len(state.first_losses) >= WATCHDOG_WARMUP:
            state.reference_loss = sum(state.first_losses) / len(state.first_losses)
        return
    if loss > factor * state.reference_loss:
        raise TrainingDiverged(f"Training stopped at iteration {iteration}: the loss exploded to {loss:.3g}, "
                               f"over {factor:g}x its starting value {state.reference_loss:.3g}. {advice}")
