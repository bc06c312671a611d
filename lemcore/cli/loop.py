"""`lem loop`: the whole LEK loop headless, from a YAML file, resumable (lemcore/loop).

- `lem loop -c loop.yaml`: run a loop (continue it, when the file's `folder` holds one with the same settings).
- `lem loop --resume FOLDER`: continue a stopped loop with the settings it started with.
- `lem loop --example`: print a commented loop file to start from.
- `lem loop --list`: the loops in the data folder and how far each got.
"""

from __future__ import annotations

import argparse

from lemcore.benchmarks.compare import format_comparison
from lemcore.benchmarks.events import BenchProgress
from lemcore.cli.train import ProgressPrinter, first_ctrl_c_cancels
from lemcore.contribute.events import AnswerHeld, ResponseDone
from lemcore.errors import ConfigError
from lemcore.events import Event
from lemcore.jobs import CancelToken
from lemcore.loop.config import EXAMPLE, STAGE_TITLES, load_loop_yaml, loop_config, to_spec
from lemcore.loop.engine import list_loops, read_loop, resume_loop, run_loop
from lemcore.loop.events import LoopStage, LoopStarted
from lemcore.train.dataset import DataStage
from lemcore.train.events import CheckpointSaved, EvalDone, TrainFinished, TrainStarted, TrainStep
from lemcore.train.fuse import FuseStage


class _Printer:
    """A line per stage start and end, and the stage engines' progress as `lem train`/`lem bench` print it."""

    def __init__(self) -> None:
        self.train = ProgressPrinter(10)
        self._bench: tuple[str, str, int] | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, LoopStarted):
            print(f"Loop folder: {event.folder}", flush=True)
            if event.done:
                print("Already done: " + ", ".join(STAGE_TITLES[s].lower() for s in event.done), flush=True)
        elif isinstance(event, LoopStage):
            title = STAGE_TITLES.get(event.stage, event.stage)
            if event.state == "started":
                print(f"== {title}" + (f" ({event.detail})" if event.detail else ""), flush=True)
            else:
                print(f"   done: {event.detail}", flush=True)
        elif isinstance(event, (TrainStarted, TrainStep, EvalDone, CheckpointSaved, TrainFinished)):
            self.train(event)
        elif isinstance(event, BenchProgress):
            # One line per stage and suite, then every tenth of the way, not one per answer.
            step = max(event.total // 10, 1)
            key = (event.stage, event.suite, event.done // step)
            if key != self._bench:
                self._bench = key
                print(f"   {event.stage} {event.suite}: {event.done} of {event.total}", flush=True)
        elif isinstance(event, ResponseDone):
            print(f"   gold answer saved ({event.tokens} tokens)", flush=True)
        elif isinstance(event, AnswerHeld):
            print(f"   gold answer held back: {', '.join(event.reasons)}", flush=True)
        elif isinstance(event, (DataStage, FuseStage)):
            print(f"   {event.stage} {getattr(event, 'detail', '')}".rstrip(), flush=True)


def _cmd_loop(args: argparse.Namespace) -> int:
    if args.example:
        print(EXAMPLE, end="")
        return 0
    if args.list:
        for folder in list_loops():
            state = read_loop(folder)
            stages = state.get("stages", {})
            done = [s for s, v in stages.items() if v.get("state") == "done"]
            running = [s for s, v in stages.items() if v.get("state") == "running"]
            where = f"stopped in: {STAGE_TITLES.get(running[0], running[0]).lower()}" if running else \
                ("finished" if "compare" in done else f"{len(done)} stages done")
            print(f"{folder}  ({where})")
        return 0
    cancel = CancelToken()
    printer = _Printer()
    with first_ctrl_c_cancels(cancel):
        if args.resume:
            result = resume_loop(args.resume, report=printer, cancel=cancel)
        elif args.config:
            config = load_loop_yaml(args.config)
            if args.folder:
                config = loop_config({**to_spec(config), "folder": args.folder})
            result = run_loop(config, report=printer, cancel=cancel)
        else:
            raise ConfigError("Give a loop file (-c loop.yaml; `lem loop --example` prints one) or a loop folder to "
                              "continue (--resume FOLDER).")
    print()
    print(format_comparison(result.comparison))
    print(f"\nBase: {result.base_run}\nTrained: {result.trained_run}\nFused model: {result.fused_model}\n"
          f"Loop folder: {result.folder}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("loop", help="the whole LEK loop: gold answers, dataset, train, fuse, benchmark both, compare",
                       description="Run the LEK loop from a YAML file: write gold answers with the axiom sandwich, "
                                   "build a training set, train LoRA, fuse, benchmark the base and the trained "
                                   "model on the same items, and compare them pair by pair. Every stage resumes "
                                   "where it stopped (Ctrl-C stops at a safe point).")
    p.add_argument("-c", "--config", help="the loop file (YAML)")
    p.add_argument("--folder", help="the loop folder (overrides the file's `folder`)")
    p.add_argument("--resume", metavar="FOLDER", help="continue the loop in FOLDER with its own settings")
    p.add_argument("--example", action="store_true", help="print a commented loop file to start from")
    p.add_argument("--list", action="store_true", help="list the loops in the data folder and how far each got")
    p.set_defaults(func=_cmd_loop)
