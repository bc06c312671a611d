"""Past training runs in plain words: what state a run folder is in, read from its metrics.jsonl and config,
for the run list and the status line of the selected run."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lemcore.train.config import load_yaml
from lemcore.train.run import read_metrics

_FOLDER = re.compile(r"^(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})\d{2}-(.+)$")


@dataclass(frozen=True)
class RunInfo:
    path: Path
    title: str  # "2025-01-31 14:05 · gemma-3-1b-it-qat-4bit"
    state: str  # the status line's colour: idle, paused or error
    short: str  # for the run list: "finished, 200 steps"
    text: str  # for the status line: what happened and what to do next
    step: int
    total: int | None
    can_resume: bool
    tokens_per_second: float | None = None
    peak_memory_gb: float | None = None


def run_title(run: Path) -> str:
    m = _FOLDER.match(run.name)
    if not m:
        return run.name
    y, mo, d, h, mi, model = m.groups()
    return f"{y}-{mo}-{d} {h}:{mi} · {model}"


def _total_steps(run: Path) -> int | None:
    configs = sorted(run.glob("config*.yaml"), key=lambda p: p.stat().st_mtime)
    for path in reversed(configs):  # the newest (a resume may have changed the step count)
        try:
            return int(load_yaml(path).iters)
        except Exception:  # noqa: BLE001 - an unreadable config only loses the total
            continue
    return None


def stopped_text(step: int, total: int | None) -> str:
    of = f" of {total}" if total else ""
    return f"Stopped at step {step}{of}. Press Resume to continue."


def describe_run(run: Path, records: list[dict[str, Any]] | None = None) -> RunInfo:
    records = read_metrics(run) if records is None else records
    total = _total_steps(run)
    steps = [r for r in records if r.get("type") == "train"]
    vals = [r for r in records if r.get("type") == "val" and isinstance(r.get("val_loss"), (int, float))]
    finished = next((r for r in reversed(records) if r.get("type") == "finished"), None)
    step = int(steps[-1]["iteration"]) if steps else 0
    if finished is not None and int(finished.get("iteration", 0)) < step:
        finished = None  # resumed after that, then the app closed
    best = min(vals, key=lambda r: r["val_loss"]) if vals else None
    best_text = (f" Best validation loss {best['val_loss']:.3f}, at step {best['iteration']}." if best else "")
    has_checkpoint = any((run / "checkpoints").glob("[0-9]*"))
    tps = float(steps[-1].get("tokens_per_second", 0)) if steps else None
    peak = max((float(r.get("peak_memory_gb", 0)) for r in steps), default=None)
    status = finished.get("status") if finished else None
    of = f" of {total}" if total else ""
    title = run_title(run)

    def info(state: str, short: str, text: str, can_resume: bool) -> RunInfo:
        return RunInfo(run, title, state, short, text, step, total, can_resume, tps, peak)

    if status == "complete":
        return info("idle", f"finished, {step} steps",
                    f"Finished: all {step} steps done.{best_text} “Save as a model” makes a standalone model from it.", False)
    if status == "early_stopped":
        return info("idle", f"finished early at step {step}",
                    f"Finished early at step {step}{of}: the validation loss stopped improving.{best_text}", False)
    if status == "cancelled":
        return info("paused", f"stopped at step {step}{of}", stopped_text(step, total), True)
    if status == "out_of_memory":
        return info("error", f"stopped at step {step}: memory ran low",
                    f"Stopped at step {step}{of}: the computer was running out of memory. Lower the batch size "
                    "or the longest example length, then Resume.", True)
    if status == "host_lost":
        return info("error", f"stopped at step {step}: a computer dropped out",
                    f"Stopped at step {step}{of}: one of the computers training together stopped or could not be "
                    "reached. Check it, then Resume (on the same computers, or fewer).", has_checkpoint)
    if status == "diverged":
        return info("error", f"stopped at step {step}: the loss blew up",
                    f"Stopped at step {step}{of}: the loss grew far above its usual level, so the model was "
                    "no longer learning. Start again with a lower learning rate.", False)
    if step and has_checkpoint:
        return info("paused", f"interrupted at step {step}{of}",
                    f"Interrupted at step {step}{of} (the app closed during training). Press Resume to continue "
                    "from the last saved step.", True)
    if step:
        return info("paused", f"interrupted at step {step}{of}",
                    f"Interrupted at step {step}{of} before anything was saved. Start it again.", False)
    return info("idle", "not started", "This run stopped before its first step.", False)
