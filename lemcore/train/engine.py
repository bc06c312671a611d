"""LoRA training engine: mlx-lm's own trainer, driven so it reports every step, stops on request and resumes
(docs/platform-notes.md, "mlx-lm training API").

We call `mlx_lm.tuner.trainer.train` directly (never `lora.run`, which drops callbacks) with:
- a TrainingCallback that receives every step (the trainer is told to report each step; the values are
  already evaluated, so this costs a few scalar reads) and turns it into a TrainStep event;
- our own `iterate_batches`, called by the trainer between steps. It builds batches exactly as mlx-lm does,
  but from a resumable data order, and is where cancellation, validation, checkpoints and early stopping
  happen: between steps the model and optimizer state are fully evaluated and consistent.
Validation runs here rather than inside the trainer so that a resumed run validates at the same iterations
as an uninterrupted one (the trainer counts iterations from 1 on every call).
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lemcore.errors import Cancelled, ConfigError, DataError, LemError, ModelFitError, ModelLoadError
from lemcore.jobs import CancelToken, Report, no_report
from lemcore.train.config import TrainConfig, load_yaml
from lemcore.train.data import DataReport, load_training_data
from lemcore.train.distributed import (
    World,
    agree,
    broadcast_bytes,
    broadcast_parameters,
    current_world,
    shard_loss,
)
from lemcore.train.events import CheckpointSaved, TrainStarted
from lemcore.train.memory import (
    MemoryEstimate,
    ModelShape,
    check_fits,
    estimate_peak,
    flat_tree,
    usable_bytes,
)
from lemcore.train.resume import (
    ADAPTER_FILE,
    CHECKPOINT_FILES,
    STATE_FILE,
    Checkpoint,
    RunState,
    TrainingDiverged,
    curve_differences,
    find_checkpoint,
    restore,
    save_checkpoint,
    write_adapter_config,
)
from lemcore.train.run import (
    CONFIG_FILE,
    MetricsLog,
    NoMetrics,
    load_base_model,
    new_run_dir,
    snapshot_config,
)
from lemcore.train.session import Session, Stop

_one_run = threading.Lock()  # mlx-lm's trainer patches classes process-wide: one run at a time


@dataclass(frozen=True)
class TrainResult:
    status: str  # "complete" or "early_stopped" (other endings raise)
    run_dir: Path
    adapter_file: Path
    best_adapter_dir: Path | None
    iterations: int
    train_loss: float | None
    val_loss: float | None
    best_val_loss: float | None
    best_iteration: int | None
    trained_tokens: int
    seconds: float
    data: DataReport
    memory: MemoryEstimate


def resume_config(run_dir: Path | str, **changes: Any) -> TrainConfig:
    """The config of an existing run set to resume from its latest checkpoint (`changes`: e.g. iters)."""
    checkpoint = find_checkpoint(run_dir)
    snapshot = load_yaml(checkpoint.run_dir / CONFIG_FILE)
    return snapshot.with_changes(resume_from=str(checkpoint.path), adapter_path=str(checkpoint.run_dir),
                                 **changes)


def train_lora(config: TrainConfig, *, report: Report = no_report, cancel: CancelToken | None = None) -> TrainResult:
    """Fine-tune `config.model` with LoRA/DoRA on `config.data`; blocking. Raises ConfigError, DataError,
    ModelLoadError, ModelFitError, TrainingDiverged, or Cancelled (after saving a resumable checkpoint)."""
    config.validate()
    cancel = cancel or CancelToken()
    if not _one_run.acquire(blocking=False):
        raise ConfigError("Another training run is active in this process. Wait for it or cancel it first.")
    try:
        return _train(config, report, cancel)
    finally:
        _one_run.release()


@dataclass(frozen=True)
class _Ready:
    """What a rank has once its model and data are loaded and checked, before any training state exists."""

    checkpoint: Checkpoint | None  # rank 0 only when resuming (the others receive its files)
    model: Any
    data: DataReport
    train_set: Any
    valid_set: Any
    layers: int
    shape: ModelShape
    memory: MemoryEstimate
    limit: int


def _train(config: TrainConfig, report: Report, cancel: CancelToken) -> TrainResult:
    world = current_world()
    if world.distributed:
        if config.batch_size % world.size:
            raise ConfigError(f"Batch size {config.batch_size} cannot be split evenly over {world.size} machines. "
                              f"Use a multiple of {world.size}.")
        if not world.main:
            report = no_report  # rank 0 alone reports (and writes the run folder)
    problem: LemError | None = None
    ready: _Ready | None = None
    try:
        ready = _prepare(config, cancel, world)
    except LemError as err:
        if not world.distributed:
            raise
        problem = err
    if world.distributed:
        facts = agree(world, problem, {"data": ready.data.fingerprint, "shape": asdict(ready.shape)}
                      if ready else {})
        _check_same_inputs(world, config, facts)
    assert ready is not None  # a failed _prepare raised above, on every rank
    checkpoint, model, data, train_set, valid_set = (ready.checkpoint, ready.model, ready.data, ready.train_set,
                                                     ready.valid_set)

    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")
    import mlx.optimizers as optim  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")
    from mlx_lm.tuner.utils import (  # lazy: mlx-lm pulls in MLX and transformers (seconds)
        build_schedule,
        linear_to_lora_layers,
    )

    mx.eval(model.parameters())
    mx.random.seed(config.seed)  # same adapter initialisation as `mlx_lm lora` with this seed
    model.freeze()
    linear_to_lora_layers(model, ready.layers, config.lora_parameters(), use_dora=config.fine_tune_type == "dora")
    schedule = config.schedule_dict()
    lr = build_schedule(schedule) if schedule else config.learning_rate
    opt_class = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD, "adafactor": optim.Adafactor}
    optimizer = opt_class[config.optimizer](learning_rate=lr)

    resumed = bool(config.resume_from)
    if world.main:
        run_dir = checkpoint.run_dir if checkpoint else new_run_dir(config)
        snapshot_config(run_dir, config, checkpoint.iteration if checkpoint else None)
        write_adapter_config(run_dir, config, ready.layers)
    else:
        run_dir = Path(config.adapter_path)  # on rank 0's machine; the other ranks write nothing
    if checkpoint:
        restore(checkpoint, model, optimizer)
        state = checkpoint.state
    else:
        state = RunState(data_fingerprint=data.fingerprint)
    if world.distributed:
        state = _same_start_everywhere(world, checkpoint, resumed, model, optimizer, state)
    metrics = MetricsLog(run_dir) if world.main else NoMetrics()
    if checkpoint:
        metrics.write("resume", iteration=checkpoint.iteration, checkpoint=str(checkpoint.path))
    session = Session(config, model, optimizer, run_dir, state, train_set, valid_set, metrics, report, cancel,
                      resumed=resumed, world=world)
    trainable = sum(v.size for _, v in flat_tree(model.trainable_parameters()))
    memory, limit = ready.memory, ready.limit
    report(TrainStarted(run_dir=run_dir, model=config.model, start_iteration=state.iteration,
                        total_iters=config.iters, train_examples=len(train_set),
                        valid_examples=len(valid_set) if valid_set is not None else 0,
                        trainable_parameters=int(trainable),
                        total_parameters=int(sum(v.size for _, v in flat_tree(model.parameters()))),
                        estimated_peak_gb=memory.total_gb, usable_memory_gb=limit / 2**30,
                        resumed=resumed, warnings=data.warnings))
    started = time.monotonic()
    try:
        status = _finish_run(session, config, model, optimizer, train_set, run_dir)
    finally:
        metrics.close()
    best = run_dir / "best"
    return TrainResult(status=status, run_dir=run_dir, adapter_file=run_dir / ADAPTER_FILE,
                       best_adapter_dir=best if world.main and best.is_dir() else None, iterations=state.iteration,
                       train_loss=session.last_train_loss, val_loss=state.last_val_loss,
                       best_val_loss=state.best_val_loss, best_iteration=state.best_iteration,
                       trained_tokens=state.trained_tokens, seconds=time.monotonic() - started, data=data,
                       memory=memory)


def _prepare(config: TrainConfig, cancel: CancelToken, world: World) -> _Ready:
    """Find the checkpoint (rank 0), load the model and data, check the layers and the memory guard (each rank
    for its own slice of the batch). Raises the LemError a user sees."""
    checkpoint = None
    if config.resume_from and world.main:
        checkpoint = find_checkpoint(config.resume_from)
        before = load_yaml(checkpoint.run_dir / CONFIG_FILE)
        if diffs := curve_differences(before, config):
            raise ConfigError("Resuming must keep the settings that shape training; these differ:\n"
                              + "\n".join(diffs) + "\nPut them back, or start a new run.")
        if checkpoint.iteration >= config.iters:
            raise ConfigError(f"That run already reached iteration {checkpoint.iteration} of {config.iters}. "
                              "Raise the iterations to continue it.")
    cancel.check()

    model, tokenizer, model_config = load_base_model(config.model, cancel=cancel)
    data, train_set, valid_set = load_training_data(
        config.data, tokenizer, batch_size=config.batch_size, mask_prompt=config.mask_prompt,
        max_seq_length=config.max_seq_length, iters=config.iters)
    if checkpoint and checkpoint.state.data_fingerprint not in ("", data.fingerprint):
        raise DataError("The data files changed since this run started, so resuming would not continue the same "
                        "run. Put the original files back, or start a new run on the new data.")
    n_layers = len(model.layers)
    if config.num_layers > n_layers:
        raise ConfigError(f"Layers is {config.num_layers} but this model has only {n_layers}. Use -1 for all "
                          f"layers, or at most {n_layers}.")
    layers = n_layers if config.num_layers == -1 else config.num_layers
    shape = ModelShape.from_model(model, model_config)
    longest = max((s.longest or 0) for s in data.splits.values())
    limit = usable_bytes()
    # Each rank holds its slice of the batch: that is what must fit on its machine.
    mine = config.with_changes(batch_size=config.batch_size // world.size) if world.distributed else config
    memory = check_fits(shape, mine, longest, limit) if config.memory_guard else estimate_peak(shape, mine, longest)
    cancel.check()
    return _Ready(checkpoint, model, data, train_set, valid_set, layers, shape, memory, limit)


def _check_same_inputs(world: World, config: TrainConfig, facts: list[dict[str, Any]]) -> None:
    """Every rank must train on rank 0's data and model (each loads its own copy): the same on every rank."""
    for rank, got in enumerate(facts[1:], start=1):
        if got["data"] != facts[0]["data"]:
            raise DataError(f"The training data in {config.data} on {world.where(rank)} is not the same as on "
                            f"{world.where(0)}. Copy the same files to every machine, then start again.")
        if got["shape"] != facts[0]["shape"]:
            raise ModelLoadError(f"The model {config.model} on {world.where(rank)} is not the same as on "
                                 f"{world.where(0)}. Put the same model on every machine, then start again.")


def _same_start_everywhere(world: World, checkpoint: Checkpoint | None, resumed: bool, model: Any,
                           optimizer: Any, state: RunState) -> RunState:
    """Every rank starts from rank 0's adapter: its checkpoint when resuming (the files are sent, since the
    run folder is on rank 0's disk only), else its freshly initialised weights. Returns the run state."""
    if not resumed:
        broadcast_parameters(world, model)
        return state
    blobs = {name: (checkpoint.path / name).read_bytes() for name in CHECKPOINT_FILES} if checkpoint else None
    files = broadcast_bytes(world, blobs)
    if world.main:
        return state
    with tempfile.TemporaryDirectory(prefix="lem-resume-") as tmp:
        for name, raw in files.items():
            (Path(tmp) / name).write_bytes(raw)
        received = Checkpoint(Path(tmp), RunState.from_json(json.loads(files[STATE_FILE])))
        restore(received, model, optimizer)
    return received.state


def _finish_run(session: Session, config: TrainConfig, model: Any, optimizer: Any, train_set: Any,
                run_dir: Path) -> str:
    """Run the trainer and end the run: "complete" or "early_stopped"; raises on cancel, low memory and
    divergence (after reporting TrainFinished)."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    state = session.state
    try:
        status = _run_trainer(session, config, model, optimizer, train_set, run_dir)
    except Stop as stop:
        status = stop.reason
        if status in ("cancel", "memory"):
            session.finish("cancelled" if status == "cancel" else "out_of_memory", stop.message)
            if status == "cancel":
                raise Cancelled(stop.message) from None
            raise ModelFitError(stop.message) from None
    except TrainingDiverged as err:
        session.finish("diverged", str(err))
        raise
    if status == "complete":
        session.validate_now()
    if session.world.main:
        mx.save_safetensors(str(run_dir / ADAPTER_FILE), dict(flat_tree(model.trainable_parameters())))
        path = save_checkpoint(run_dir, model, optimizer, state)
        session.report(CheckpointSaved(iteration=state.iteration, path=path, reason="final"))
    status = "complete" if status == "complete" else "early_stopped"
    message = (f"Finished {state.iteration} iterations." if status == "complete" else
               f"Stopped early at iteration {state.iteration}: no better validation loss for "
               f"{config.early_stopping_patience} validations (best {state.best_val_loss:.4f} at iteration "
               f"{state.best_iteration}).")
    session.finish(status, message)
    return status


def _run_trainer(session: Session, config: TrainConfig, model: Any, optimizer: Any, train_set: Any,
                 run_dir: Path) -> str:
    from mlx_lm.tuner.trainer import (  # lazy: mlx-lm pulls in MLX and transformers (seconds)
        TrainingArgs,
        train,
    )

    remaining = config.iters - session.state.iteration
    never = config.iters + 1  # the trainer's own validation and saving are replaced by the session's
    args = TrainingArgs(batch_size=config.batch_size, iters=remaining, val_batches=config.val_batches,
                        steps_per_report=1, steps_per_eval=never, steps_per_save=never,
                        max_seq_length=config.max_seq_length, adapter_file=str(run_dir / ADAPTER_FILE),
                        grad_checkpoint=config.grad_checkpoint,
                        grad_accumulation_steps=config.grad_accumulation_steps)
    # Over several machines each rank's loss is weighted by the global batch's tokens (distributed.py); on one
    # machine mlx-lm's own loss runs, unchanged.
    loss = {"loss": shard_loss} if session.world.distributed else {}
    with _quiet_trainer(model):
        train(model=model, optimizer=optimizer, train_dataset=train_set, val_dataset=None, args=args,
              iterate_batches=session.iterate_batches, training_callback=session.callback(), **loss)
    return "complete"


class _SilentUI:
    """Stands in for mlx-lm's rich TrainUI: the engine never prints (the session reports everything)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> _SilentUI:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def advance(self) -> None:
        pass

    def report_train(self, *args: Any) -> None:
        pass

    def report_val(self, *args: Any) -> None:
        pass

    def report_save(self, *args: Any) -> None:
        pass

    @contextmanager
    def val_task(self, total: int) -> Iterator[Any]:
        yield lambda: None


@contextmanager
def _quiet_trainer(model: Any) -> Iterator[None]:
    """Silence mlx-lm's terminal UI for the call, and undo its process-wide gradient-checkpointing patch
    (it rewrites the block class's __call__, which would leak into later runs and wrap twice)."""
    from mlx_lm.tuner import trainer  # lazy: mlx-lm pulls in MLX and transformers (seconds)

    block = type(model.layers[0])
    saved_call = block.__call__
    saved_ui = getattr(trainer, "TrainUI", None)
    # mlx-lm has no option to silence its UI, so the class is swapped for the call (a stand-in, not a subclass).
    trainer.TrainUI = _SilentUI  # type: ignore[misc, assignment]
    try:
        yield
    finally:
        block.__call__ = saved_call
        if saved_ui is not None:
            trainer.TrainUI = saved_ui  # type: ignore[misc]  # restoring the class swapped above
