"""Share of gold answers the quality gate passes, without and with the repetition guard (issue 15, item 3).

Both arms run what `lem gold --solo` runs: `build_contribution` -> the contribution engine -> `MLXGenerator`,
the real sandwich around the same N seed prompts (every (600/N)th line of seeds/gold-prompts.jsonl, so seeds,
domains and voices vary), the built-in model (SmolLM2-135M-Instruct, `ensure_embedded_model`), loaded once.
Each run gets its own solo queue and output file, so no arm sees another's answers.

- A: the lab's sampling, no guard (temperature 0.3, no top-p, penalty 1.0, loops written out to the limit).
- B: the guard `lem gold` now runs with (`guarded_sampling`), or the one given by --penalty/--context/--no-stop.

Arms alternate A, B, A, B ... (round r uses seed r in both arms), so load on the shared machine hits both alike.
Per run and per arm it prints: answers passing the gate as `lem gold` runs it (cut answers kept), passing
when cut answers are refused too (what `lem data` keeps), answers held per reason, cut answers, loops the
engine ended, mean tokens per answer, wall time, and the 1-minute load average before and after.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 \
    .venv/bin/python -m tests.perf.bench_quality_gate [--prompts 16] [--max-tokens 256] [--rounds 2]
        [--batch-size 8] [--penalty P] [--context N] [--no-stop]

Measured here 2026-11-27 (2 cores shared with other work, OpenBLAS, float32 model, 16 prompts, 256 tokens,
batch 8, 2 rounds; 1-minute load 0.0-3.0 during the four runs):

    A total: pass 3/32 (9%), pass if cut refused 1/32 (3%); held: recites_kernel 2, repetition 29; cut 30,
             mean 245 tokens; 352 s
    B total: pass 23/32 (72%), pass if cut refused 14/32 (44%); held: recites_kernel 1, repetition 9; cut 17,
             mean 210 tokens; 356 s (penalty 1.2 over 128 tokens, loop stop on: it ended no answer, the
             penalty leaves no exact loop; B's held repetitions are passages said again >128 tokens later)

Choosing the setting (one round each, `--only-b`, same prompts; pass share as `lem gold` runs it): penalty
1.0 without the stop 2/16; 1.0 with the stop 0/16 (12 loops ended, mean 155 tokens instead of 243); 1.1 over
20 tokens 2/16; 1.2 over 20 3/16; 1.2 over 64 8/16; 1.3 over 64 7/16; 1.1 over 128 12/16; 1.2 over 128 13/16;
1.2 over 256 13/16, but its text drifts into lists of words without punctuation (the penalty then reaches
every full stop and comma of the answer). Runs of 16 vary by a few answers from run to run (the order the
queue hands prompts out changes the batches), so only the large steps count: the context matters more than
the penalty, and 128 tokens is the shortest that holds the model's sentence loops.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass
class Arm:
    name: str
    answers: int = 0
    passed: int = 0
    passed_strict: int = 0  # passed and not cut at the token limit
    held: Counter[str] = field(default_factory=Counter)
    cut: int = 0
    looped: int = 0
    tokens: int = 0
    seconds: float = 0.0
    loads: list[float] = field(default_factory=list)

    def add(self, other: Arm) -> None:
        self.answers += other.answers
        self.passed += other.passed
        self.passed_strict += other.passed_strict
        self.held.update(other.held)
        self.cut += other.cut
        self.looped += other.looped
        self.tokens += other.tokens
        self.seconds += other.seconds
        self.loads += other.loads

    def line(self) -> str:
        n = max(self.answers, 1)
        held = ", ".join(f"{r} {c}" for r, c in sorted(self.held.items())) or "none"
        load = "/".join(f"{x:.2f}" for x in self.loads)
        return (f"{self.name}: pass {self.passed}/{self.answers} ({100 * self.passed / n:.0f}%), "
                f"pass if cut refused {self.passed_strict}/{self.answers} ({100 * self.passed_strict / n:.0f}%); "
                f"held: {held}; cut {self.cut}, loops ended {self.looped}; mean {self.tokens / n:.0f} tokens; "
                f"{self.seconds:.0f} s ({self.tokens / max(self.seconds, 1e-9):.1f} tok/s); load {load}")


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _prompt_subset(n: int, dest: Path) -> Path:
    from lemcore.resources import seeds_dir

    lines = [line for line in (seeds_dir() / "gold-prompts.jsonl").read_text(encoding="utf-8").splitlines()
             if line.strip()]
    step = max(len(lines) // n, 1)
    dest.write_text("".join(lines[i * step] + "\n" for i in range(n)), encoding="utf-8")
    return dest


def run_arm(name: str, sampling: Any, prompts: Path, model: str, batch_size: int, cache: Any, work: Path) -> Arm:
    from lemcore.contribute.journal import held_output
    from lemcore.contribute.setup import ContributionOptions, build_contribution

    work.mkdir(parents=True)
    os.environ["LEM_SOLO_QUEUE"] = str(work / "queue.sqlite")  # a fresh queue: every prompt is to do
    output = work / "gold.jsonl"
    options = ContributionOptions(worker="bench", server_url="", model=model, batch_size=batch_size,
                                  sampling=sampling, prompts=prompts, output=output)
    arm = Arm(name, loads=[os.getloadavg()[0]])
    run = build_contribution(options, cache=cache)
    start = time.perf_counter()
    run.start()
    arm.seconds = time.perf_counter() - start
    arm.loads.append(os.getloadavg()[0])
    kept, held = _rows(output), _rows(held_output(output))
    arm.answers, arm.passed = len(kept) + len(held), len(kept)
    arm.passed_strict = sum(not r["truncated"] for r in kept)
    for r in held:
        arm.held.update(r["held"])
    arm.cut = sum(r["truncated"] for r in kept + held)
    arm.looped = sum(r.get("stopped_loop", False) for r in kept + held)
    arm.tokens = sum(r["tokens"] for r in kept + held)
    return arm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--penalty", type=float, default=None, help="B's penalty (default: lem gold's)")
    parser.add_argument("--context", type=int, default=None, help="B's penalty context (default: lem gold's)")
    parser.add_argument("--no-stop", action="store_true", help="B without the loop stop")
    parser.add_argument("--only-b", action="store_true", help="skip A (exploring settings)")
    args = parser.parse_args()

    from lemcore.contribute.setup import guarded_sampling
    from lemcore.generate.protocol import Generator, Sampling
    from lemcore.hardware import blas_library
    from lemcore.models.embedded import ensure_embedded_model

    model = str(ensure_embedded_model())
    loaded: dict[Any, Generator] = {}

    def cache(key: Any, load: Any) -> Generator:  # one model for every run, as the app's ModelCache keeps it
        if key not in loaded:
            loaded[key] = load()
        return loaded[key]

    lab = Sampling(temperature=0.3, max_tokens=args.max_tokens)
    guard = guarded_sampling(max_tokens=args.max_tokens)
    guard = replace(guard, stop_loops=not args.no_stop,
                    repetition_penalty=guard.repetition_penalty if args.penalty is None else args.penalty,
                    repetition_context=guard.repetition_context if args.context is None else args.context)
    work = Path(tempfile.mkdtemp(prefix="lem-gate-bench-"))
    prompts = _prompt_subset(args.prompts, work / "prompts.jsonl")
    print(f"model {model}, {args.prompts} prompts, max {args.max_tokens} tokens, batch {args.batch_size}, "
          f"BLAS {blas_library()}, {os.cpu_count()} cores")
    print(f"A: temperature {lab.temperature}, penalty 1.0, loops written out")
    print(f"B: temperature {guard.temperature}, penalty {guard.repetition_penalty} over "
          f"{guard.repetition_context} tokens, loop stop {'on' if guard.stop_loops else 'off'}")
    totals = {"A": Arm("A total"), "B": Arm("B total")}
    for r in range(args.rounds):
        for name, sampling in (("A", lab), ("B", guard)):
            if name == "A" and args.only_b:
                continue
            arm = run_arm(f"{name} round {r + 1}", replace(sampling, seed=r), prompts, model, args.batch_size,
                          cache, work / f"{name}{r}")
            print(arm.line(), flush=True)
            totals[name].add(arm)
    for arm in totals.values():
        if arm.answers:
            print(arm.line())
    print(f"answers (kept and held) in {work}")


if __name__ == "__main__":
    main()
