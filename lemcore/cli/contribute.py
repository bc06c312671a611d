"""`lem gold` and `lem expand`: the lab's worker flags over the contribution engine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lemcore.contribute import events as ev
from lemcore.contribute.engine import ContributeResult, default_output, load_work
from lemcore.contribute.journal import held_output, lost_output
from lemcore.contribute.setup import (
    REPETITION_CONTEXT,
    REPETITION_PENALTY,
    ContributionOptions,
    build_contribution,
    guarded_sampling,
)
from lemcore.events import Event
from lemcore.quality import REASON_TEXT
from lemcore.settings import load_settings


class _Printer:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, event: Event) -> None:
        if isinstance(event, ev.ResponseDone) and not self.quiet:
            cut = " (cut at the token limit)" if event.truncated else ""
            print(f"[{event.idx}] {event.seed_id} {event.voice}: {event.tokens} tokens in {event.seconds:.1f}s{cut}")
        elif isinstance(event, ev.Started):
            print(f"{event.kind}: {event.total} prompts, {event.done_fleet} done, {event.remaining} left "
                  f"(worker {event.worker}, model {event.model})")
        elif isinstance(event, ev.StatusChanged) and event.reason:
            print(f"{event.state}: {event.reason}", file=sys.stderr)
        elif isinstance(event, ev.AnswerHeld):
            why = "; ".join(REASON_TEXT.get(r, r) for r in event.reasons)
            print(f"[{event.idx}] {event.seed_id}: held back, not reported ({why})", file=sys.stderr)
        elif isinstance(event, ev.Notice):
            print(event.message, file=sys.stderr)
        elif isinstance(event, ev.Finished):
            print(f"Finished: {event.done} answers this run ({event.reason}); {event.unreported} waiting to be sent")


def _options(args: argparse.Namespace, kind: str) -> ContributionOptions:
    """The lab's flags; where a flag is not given, the settings (worker name, server, database)."""
    settings = load_settings()
    return ContributionOptions(
        kind=kind, worker=args.worker or settings.effective_worker(),
        server_url="" if args.solo else (args.influx or settings.influx_url).strip(), db=settings.influx_db,
        lease_s=args.lease, backend=args.backend, model=args.model, batch_size=args.batch_size,
        api_url=args.api_url, api_model=args.api_model,
        sampling=guarded_sampling(temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed,
                                  repetition_penalty=args.repetition_penalty,
                                  repetition_context=args.repetition_context, stop_loops=not args.no_loop_stop),
        limit=args.limit, target=args.target, prompts=Path(args.prompts) if args.prompts else None,
        output=Path(args.output) if args.output else None,
        axioms_path=Path(args.axioms) if getattr(args, "axioms", None) else None,  # gold only
        kernel_path=Path(args.kernel) if getattr(args, "kernel", None) else None,
        quality_gate=not args.no_quality_gate,
    )


def _summary(result: ContributeResult) -> list[str]:
    """The run's answers that were not reported, and where they are."""
    lines = []
    if result.held:
        reasons = ", ".join(f"{REASON_TEXT.get(r, r)}: {n}" for r, n in sorted(result.held_by_reason.items()))
        lines.append(f"{result.held} answers held back by the quality gate in {held_output(result.output)} "
                     f"({reasons}); not reported")
    if result.lost:
        lines.append(f"{result.lost} answers kept aside in {lost_output(result.output)}; not reported")
    return lines


def _run(args: argparse.Namespace, kind: str) -> int:
    options = _options(args, kind)
    printer = _Printer(args.quiet)
    if args.dry_run:
        config = options.engine_config()
        config.validate()
        items, dataset = load_work(config, _Printer(False))
        out = config.output or default_output(kind, config.worker)
        print(f"Dry run: {len(items)} prompts (set {dataset[:12]}), worker {config.worker}, output {out}, "
              f"backend {options.backend}")
        return 0
    run = build_contribution(options, report=printer)
    result = run.start(report=printer)
    for line in _summary(result):
        print(line)
    print(f"Output: {result.output}")
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--worker", default="", help="worker name on the dashboard (default: host name)")
    p.add_argument("--model", default="", help="MLX model folder or hub id (default: the embedded model)")
    p.add_argument("--limit", type=int, default=None, help="stop after this many answers")
    p.add_argument("--target", type=int, default=None, help="only the first N prompts (the lab used 15000)")
    p.add_argument("--dry-run", action="store_true", help="load and check everything, generate nothing")
    p.add_argument("--output", default="", help="JSONL output file (default: in the data folder)")
    p.add_argument("--influx", default="", help="InfluxDB URL (default: from Settings; none = solo mode)")
    p.add_argument("--solo", action="store_true", help="ignore the server; coordinate locally")
    p.add_argument("--backend", choices=["mlx", "api"], default="mlx")
    p.add_argument("--api-url", default="http://localhost:8090/v1", help="OpenAI-compatible server")
    p.add_argument("--api-model", default="", help="model name on that server")
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--repetition-penalty", type=float, default=REPETITION_PENALTY,
                   help=f"make recently used tokens less likely (default {REPETITION_PENALTY}; 1 = off, the lab's "
                        "sampling)")
    p.add_argument("--repetition-context", type=int, default=REPETITION_CONTEXT,
                   help=f"how many recent tokens the penalty looks at (default {REPETITION_CONTEXT})")
    p.add_argument("--no-loop-stop", action="store_true",
                   help="write answers that fall into a loop out to --max-tokens (default: end them at once; "
                        "the quality gate holds them back either way)")
    p.add_argument("--batch-size", type=int, default=8, help="answers generated together (MLX)")
    p.add_argument("--lease", type=float, default=120.0, help="seconds a claim lasts without renewal (1 to 3600)")
    p.add_argument("--prompts", default="", help="prompt file (lab format)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--no-quality-gate", action="store_true",
                   help="keep and report every answer, even loops, empty or broken ones (default: hold them back "
                        "in <output>.held.jsonl)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("gold", help="generate gold answers with the axiom sandwich")
    _add_common(p)
    p.add_argument("--axioms", default="", help="axioms.json (ours or the lab's)")
    p.add_argument("--kernel", default="", help="kernel text (ours or the lab's lek-1-kernel.txt)")
    p.set_defaults(func=lambda a: _run(a, "gold"))
    p = sub.add_parser("expand", help="generate expansion answers with a fine-tuned model (no sandwich)")
    _add_common(p)
    p.set_defaults(func=lambda a: _run(a, "expansion"))
