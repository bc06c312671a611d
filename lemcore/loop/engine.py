"""The LEK loop engine: each stage runs the engine that already does it, and the loop folder remembers where.

`run_loop(config)` runs the stages of `config` in order (lemcore/loop/config.py), passing each engine's events
on to `report` between its own `LoopStage` events. The loop folder (`loop.json`) records each stage's state
and what it made (the training run folder, the benchmark run folders) before the stage's engine writes
anything, so a stopped, crashed or cancelled loop resumes where it was: finished stages are skipped, and the
unfinished one continues with its own engine's resume (training from its last checkpoint, benchmarks from their
last written answer, gold answers from the solo queue's done list). `resume_loop(folder)` does that with the
settings the folder holds.

Where things go: the loop folder holds its state, the gold answers, the training set, the fused model and
the comparison; the training run goes with the other runs (the Train page lists it) and the benchmark runs
with the other benchmarks (the Results page lists them).

One process at a time per loop folder: a second copy of the app (or `lem loop`) on the same folder is
refused while the first holds the folder's lock.
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lemcore.benchmarks import store
from lemcore.benchmarks.compare import Comparison, compare_runs, format_comparison
from lemcore.benchmarks.run import BenchConfig, run_benchmark
from lemcore.contribute.engine import ContributeConfig, prompt_file, run_contribution
from lemcore.contribute.journal import held_output
from lemcore.contribute.kernel import sandwich_text
from lemcore.contribute.queue.base import GOLD
from lemcore.contribute.setup import (
    GeneratorCache,
    close_queue,
    load_uncached,
    make_generator,
    open_solo_queue,
)
from lemcore.contribute.storage import guarded
from lemcore.errors import ConfigError, DataError
from lemcore.folders import new_stamped_folder
from lemcore.generate.protocol import Sampling
from lemcore.jobs import CancelToken, Report, no_report
from lemcore.loop.config import LoopConfig, loop_config, to_spec
from lemcore.loop.events import LoopFinished, LoopStage, LoopStarted
from lemcore.settings import data_dir
from lemcore.train.data import check_data
from lemcore.train.dataset import DatasetConfig, build_dataset
from lemcore.train.engine import resume_config, train_lora
from lemcore.train.fuse import FuseConfig, fuse_adapter
from lemcore.train.resume import find_checkpoint
from lemcore.train.run import METRICS_FILE, read_metrics

LOOP_FIX = "Free some space or choose a loop folder on a disk you may write to, then continue the loop"
STATE_FILE = "loop.json"
LOCK_FILE = ".loop.lock"
FORMAT = 1
WORKER = "lem-loop"  # the worker name in the loop's own solo queue and gold file


@dataclass(frozen=True)
class LoopResult:
    folder: Path
    dataset: Path
    train_run: Path
    fused_model: Path
    base_run: Path
    trained_run: Path
    comparison: Comparison
    seconds: float


def loops_root() -> Path:
    return data_dir() / "loops"


def new_loop_folder(config: LoopConfig) -> Path:
    """A new folder under <data folder>/loops named after the time and the base model (atomic mkdir, so two
    loops started in the same second get two folders)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(config.base_model.rstrip("/")).name).strip("-")[:40] or "model"
    return new_stamped_folder(loops_root(), slug)


def read_loop(folder: Path | str) -> dict[str, Any]:
    """A loop folder's state: {"spec", "created", "stages": {stage: {"state", ...}}}."""
    path = Path(folder).expanduser() / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path.parent} is not a loop folder (it has no {STATE_FILE}). Start a loop, or pick the "
                          "folder a loop was started in.") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{path} cannot be read ({err}). The loop's outputs are still in the folder; start a "
                        "new loop to run the stages again.") from None
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
        raise DataError(f"{path} is not a loop state file. Start a new loop.")
    return data


def list_loops() -> list[Path]:
    """Loop folders in the data folder, newest first."""
    root = loops_root()
    return sorted((p.parent for p in root.glob(f"*/{STATE_FILE}")), reverse=True) if root.is_dir() else []


class _State:
    """loop.json: written whole (to a temporary file, then renamed) after each change."""

    def __init__(self, folder: Path, data: dict[str, Any]) -> None:
        self.folder, self.data = folder, data

    @classmethod
    def open(cls, folder: Path, config: LoopConfig) -> _State:
        spec = to_spec(replace(config, folder=str(folder)))
        if (folder / STATE_FILE).exists():
            data = read_loop(folder)
            before = {k: v for k, v in (data.get("spec") or {}).items() if k != "folder"}
            now = {k: v for k, v in spec.items() if k != "folder"}
            if before != now:
                changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
                raise ConfigError(f"{folder} holds a loop started with other {', '.join(changed)} settings. Resume "
                                  "it with its own settings (lem loop --resume), or start a new loop folder.")
            return cls(folder, data)
        state = cls(folder, {"format": FORMAT, "spec": spec,
                             "created": datetime.now(UTC).isoformat(timespec="seconds"), "stages": {}})
        state.save()
        return state

    def save(self) -> None:
        # A full or read-only disk is said in words; what the stages made so far stays, and Continue resumes.
        with guarded(self.folder / STATE_FILE, "save the loop's progress", LOOP_FIX):
            store.write_json(self.folder / STATE_FILE, self.data)

    def stage(self, name: str) -> dict[str, Any]:
        stage: dict[str, Any] = self.data["stages"].setdefault(name, {"state": "pending"})
        return stage

    def update(self, name: str, **values: Any) -> None:
        self.stage(name).update(values)
        self.save()

    def done(self, name: str) -> bool:
        return self.stage(name).get("state") == "done"


@contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Hold the loop folder's lock for the whole run (released by the OS if the process dies)."""
    fh = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(f"The loop in {folder} is already running (in another window or a `lem loop` "
                              "process). Wait for it to finish, or stop it there first.") from None
        yield
    finally:
        fh.close()


@dataclass
class _Run:
    config: LoopConfig
    state: _State
    report: Report
    cancel: CancelToken
    cache: GeneratorCache

    @property
    def folder(self) -> Path:
        return self.state.folder


# -- the stages -------------------------------------------------------------------------------------------
def _lines(path: Path) -> int:
    try:
        with path.open("rb") as fh:
            return sum(1 for line in fh if line.strip())
    except FileNotFoundError:
        return 0


def _gold(run: _Run) -> str:
    g = run.config.gold
    out = run.folder / "gold" / "gold.jsonl"
    prompts = prompt_file(Path(g.prompts).expanduser() if g.prompts else None)
    run.state.update("gold", output=str(out))
    # The loop's own solo queue: its done list is what makes a resumed gold step continue, not start over.
    queue = open_solo_queue(run.folder / "gold" / "queue.sqlite", GOLD, WORKER, prompts)
    try:
        generator = make_generator("mlx", g.model or run.config.base_model, batch_size=g.batch_size,
                                   cache=run.cache, report=run.report, cancel=run.cancel)
        config = ContributeConfig(kind=GOLD, prompts=prompts, output=out, worker=WORKER,
                                  sampling=Sampling(temperature=g.temperature, max_tokens=g.max_tokens),
                                  target=g.count, quality_gate=run.config.data.gate)
        run_contribution(config, queue, generator, report=run.report, cancel=run.cancel)
    finally:
        close_queue(queue)
    kept, held = _lines(out), _lines(held_output(out))
    run.state.update("gold", kept=kept, held=held)
    return f"{kept} answers kept, {held} held back by the quality gate"


def _dataset(run: _Run) -> str:
    d = run.config.data
    if d.folder:
        folder = Path(d.folder).expanduser()
        report = check_data(folder)
        report.raise_for_errors()
        run.state.update("dataset", folder=str(folder))
        return f"{folder} as it is: " + ", ".join(f"{n} {s.examples}" for n, s in report.splits.items())
    if d.sources:
        sources = d.sources
    elif run.config.gold.count:
        sources = (str(run.folder / "gold" / "gold.jsonl"),)
    else:
        sources = (str(data_dir() / "output"),)
    out = run.folder / "data"
    run.state.update("dataset", folder=str(out))
    config = DatasetConfig(sources=sources, out_dir=str(out), split=d.split, prompt_policy=d.prompt_policy,
                           gate=d.gate, keep_truncated=d.keep_truncated, overwrite=True,
                           sandwich_text=sandwich_text(None, None) if d.prompt_policy == "system" else "")
    result = build_dataset(config, report=run.report, cancel=run.cancel)
    if not result.examples.get("train"):
        raise DataError(f"No answers are left to train on ({_one_line(result.summary())}). Write more gold answers, or "
                        f"read the data card in {out} for what was left out and why.")
    return _one_line("\n".join(result.summary().splitlines()[:2]))


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _trained(run_dir: Path, iters: int) -> bool:
    """The run ended for good: every step done, or stopped early because validation stopped improving (its
    metrics end with that), with its final adapter written. A stopped or crashed run is not."""
    if not (run_dir / "adapters.safetensors").is_file():
        return False
    records = read_metrics(run_dir) if (run_dir / METRICS_FILE).is_file() else []
    last = records[-1] if records else {}
    if last.get("type") == "finished" and last.get("status") in ("complete", "early_stopped"):
        return True
    try:
        return find_checkpoint(run_dir).iteration >= iters
    except ConfigError:
        return False


def _train(run: _Run) -> str:
    stage = run.state.stage("train")
    run_dir = Path(stage.get("run_dir") or data_dir() / "runs" / f"loop-{run.folder.name}")
    run.state.update("train", run_dir=str(run_dir))
    data = run.state.stage("dataset")["folder"]
    fresh = run.config.train.with_changes(model=run.config.base_model, data=data, adapter_path=str(run_dir))
    if _trained(run_dir, fresh.iters):
        return f"{run_dir} had finished all {fresh.iters} steps"
    try:
        config = resume_config(run_dir)  # an earlier session's checkpoint: continue exactly there
    except ConfigError:
        config = fresh  # no step saved yet: start (the train engine clears a run that never took a step)
    result = train_lora(config, report=run.report, cancel=run.cancel)
    best = (f", best validation loss {result.best_val_loss:.3f} at step {result.best_iteration}"
            if result.best_val_loss is not None else "")
    return f"{result.iterations} steps{best}"


def _fuse(run: _Run) -> str:
    out = run.folder / "fused"
    run.state.update("fuse", model=str(out))
    if out.exists():  # a save cut short by a crash: ours to redo
        shutil.rmtree(out)
    result = fuse_adapter(FuseConfig(adapter_path=run.state.stage("train")["run_dir"], save_path=str(out),
                                     adapter=run.config.adapter), report=run.report, cancel=run.cancel)
    made = result.adapter.describe() if result.adapter is not None else "the adapter"
    run.state.update("fuse", adapter=result.adapter.fused if result.adapter is not None else "")
    return f"made from {made}"


def _bench(run: _Run, stage: str, model: str, label: str) -> str:
    b = run.config.bench
    run_dir = run.state.stage(stage).get("run_dir")
    if not run_dir:  # chosen (and recorded) before anything is written, so a crash resumes this folder
        run_dir = str(store.new_run_dir(label))
        run.state.update(stage, run_dir=run_dir)
    config = BenchConfig(model=model, suites=b.suites, samples=b.samples, seed=b.seed, max_tokens=b.max_tokens,
                         batch_size=b.batch_size, run_dir=run_dir, label=label, judge=b.judge)
    result = run_benchmark(config, report=run.report, cancel=run.cancel)
    return f"{result.generated + result.resumed} answers in {result.run_dir.name}"


def _label(run: _Run, role: str) -> str:
    """The name the Results page lists a run under: before/after first, so the pair reads apart in a narrow list."""
    created = datetime.fromisoformat(run.state.data["created"]).astimezone()
    model = Path(run.config.base_model.rstrip("/")).name or run.config.base_model
    return f"{role} training ({model}, loop {created:%d %b %H:%M})"


def _compare(run: _Run) -> tuple[str, Comparison]:
    base, trained = run.state.stage("bench_base")["run_dir"], run.state.stage("bench_trained")["run_dir"]
    comparison = compare_runs(base, trained)
    text = format_comparison(comparison)
    with guarded(run.folder / "comparison.txt", "save the comparison", LOOP_FIX):
        (run.folder / "comparison.txt").write_text(text + "\n", encoding="utf-8")
    run.state.update("compare", text=text)
    detail = comparison.rows[0].label + ": " + _delta_words(comparison) if comparison.rows else "no metric in common"
    return detail, comparison


def _delta_words(comparison: Comparison) -> str:
    row = comparison.rows[0]
    if row.delta is None:
        return row.verdict
    return f"{row.delta:+.1f}{row.unit} ({row.verdict})"


# -- running --------------------------------------------------------------------------------------------
def run_loop(config: LoopConfig, *, report: Report = no_report, cancel: CancelToken | None = None,
             cache: GeneratorCache = load_uncached) -> LoopResult:
    """Run (or continue) the loop in `config.folder` (a new folder when empty). Blocking; raises the stage
    engines' errors (their messages say what to do) and Cancelled, after which the loop can be resumed."""
    cancel = cancel or CancelToken()
    started = time.monotonic()
    folder = Path(config.folder).expanduser() if config.folder else new_loop_folder(config)
    with guarded(folder, "make the loop folder", LOOP_FIX):
        folder.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder):
        state = _State.open(folder, config)
        run = _Run(config, state, report, cancel, cache)
        stages = config.stages()
        report(LoopStarted(folder, stages, tuple(s for s in stages if state.done(s))))
        comparison: Comparison | None = None
        steps: dict[str, Callable[[], str]] = {
            "gold": lambda: _gold(run),
            "dataset": lambda: _dataset(run),
            "train": lambda: _train(run),
            "fuse": lambda: _fuse(run),
            "bench_base": lambda: _bench(run, "bench_base", config.base_model, _label(run, "Before")),
            "bench_trained": lambda: _bench(run, "bench_trained", state.stage("fuse")["model"],
                                            _label(run, "After")),
        }
        for stage in stages:
            if stage == "compare":
                report(LoopStage(stage, "started"))
                detail, comparison = _compare(run)
            elif state.done(stage):
                continue
            else:
                cancel.check()
                resumed = state.stage(stage).get("state") == "running"
                report(LoopStage(stage, "started", "continuing where it stopped" if resumed else ""))
                state.update(stage, state="running", started=datetime.now(UTC).isoformat(timespec="seconds"))
                detail = steps[stage]()
            state.update(stage, state="done", detail=detail, finished=datetime.now(UTC).isoformat(timespec="seconds"))
            report(LoopStage(stage, "done", detail))
        assert comparison is not None  # "compare" is every loop's last stage
        seconds = time.monotonic() - started
        base_run, trained_run = Path(state.stage("bench_base")["run_dir"]), Path(state.stage("bench_trained")["run_dir"])
        report(LoopFinished(folder, base_run, trained_run, seconds))
        return LoopResult(folder, Path(state.stage("dataset")["folder"]), Path(state.stage("train")["run_dir"]),
                          Path(state.stage("fuse")["model"]), base_run, trained_run, comparison, seconds)


def resume_loop(folder: Path | str, *, report: Report = no_report, cancel: CancelToken | None = None,
                cache: GeneratorCache = load_uncached) -> LoopResult:
    """Continue the loop in `folder` with the settings it was started with."""
    folder = Path(folder).expanduser()
    spec = dict(read_loop(folder).get("spec") or {})
    spec["folder"] = str(folder)
    return run_loop(loop_config(spec), report=report, cancel=cancel, cache=cache)
