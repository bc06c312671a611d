"""`lem data build / check / stats`: contributed answers -> a training data folder, and what is in one.

- `build SOURCES --out DIR`: read gold/expansion answer files (default: this computer's contributions),
  drop duplicates and answers the quality gate refuses, split by seed (or the lab's way, by domain), write
  train/valid/test.jsonl in mlx-lm's chat format with a data card (lemcore/train/dataset.py).
- `check SOURCES`: the same reading and gate without writing: counts per reason, and a few refused answers
  to look at.
- `stats DIR`: a built folder's card, checked again as `lem train` would (token counts with --model).
"""

from __future__ import annotations

import argparse
import json
import sys

from lemcore.contribute.kernel import sandwich_text
from lemcore.errors import ConfigError
from lemcore.events import Event
from lemcore.quality import REASON_TEXT, QualityGate, tier1_score
from lemcore.settings import data_dir
from lemcore.train.data import check_data
from lemcore.train.dataset import (
    PROMPT_POLICIES,
    SPLIT_METHODS,
    DatasetConfig,
    DataStage,
    build_dataset,
    card_summary,
    load_tokenizer,
    read_card,
    select_answers,
    source_files,
)


def _ratios(text: str) -> tuple[float, float, float]:
    try:
        parts = [float(p) for p in text.replace(":", "/").split("/")]
    except ValueError:
        raise ConfigError(f"--ratios {text!r}: give three numbers such as 80/10/10.") from None
    if len(parts) != 3 or sum(parts) <= 0:
        raise ConfigError(f"--ratios {text!r}: give three numbers such as 80/10/10.")
    total = sum(parts)
    return (parts[0] / total, parts[1] / total, parts[2] / total)


def _config(args: argparse.Namespace, out_dir: str = "") -> DatasetConfig:
    sources = tuple(args.sources) or (str(data_dir() / "output"),)
    return DatasetConfig(
        sources=sources, out_dir=out_dir, split=args.split, ratios=_ratios(args.ratios), salt=args.salt,
        prompt_policy=args.prompt, sandwich_text=sandwich_text(args.axioms, args.kernel), gate=not args.no_gate,
        keep_truncated=args.keep_truncated, require_tier1=args.tier1, exclude_eval=args.exclude_eval,
        model=getattr(args, "model", "") or "", overwrite=getattr(args, "overwrite", False))


def _print_stage(event: Event) -> None:
    if isinstance(event, DataStage):
        what = {"reading": "Reading", "checking": "Checking", "tokenizer": "Loading the tokenizer of",
                "writing": "Writing", "measuring": "Measuring lengths"}.get(event.stage, event.stage)
        print(f"{what} {event.detail}".rstrip() + " ...", file=sys.stderr, flush=True)


def _cmd_build(args: argparse.Namespace) -> int:
    result = build_dataset(_config(args, args.out), report=_print_stage)
    print(result.summary())
    for warning in result.warnings:
        print(f"Warning: {warning}")
    print(f"Written to {result.out_dir} (data card: DATA_CARD.md). Train on it with: lem train --data "
          f"{result.out_dir} --preset 'LEK recipe'")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    config = _config(args, "-")  # nothing is written
    config.validate()
    files = source_files(config.sources)
    kept, filtered = select_answers(config, report=_print_stage)
    print(f"{len(files)} file(s), {filtered['read']} answers read, {len(kept)} would be kept.")
    for key in ("unreadable_line", "not_an_answer", "not_reported", "duplicate_answer", "tier1_failed",
                "duplicate_prompt", "evaluation_prompt"):
        if filtered[key]:
            print(f"  {key.replace('_', ' ')}: {filtered[key]}")
    gate = filtered["gate"]
    for reason, n in gate.get("refused_by_reason", {}).items():
        print(f"  refused, {REASON_TEXT[reason]}: {n}")
    for reason, n in gate.get("allowed_flags", {}).items():
        print(f"  kept although {REASON_TEXT[reason]}: {n}")
    if args.show and config.gate:
        _show_refused(config, args.show)
    return 0


def _show_refused(config: DatasetConfig, per_reason: int) -> None:
    """A few refused answers per reason, with the numbers behind the verdict, for a person to judge."""

    gate = QualityGate([config.sandwich_text], thresholds=config.thresholds,
                       refuse_truncated=not config.keep_truncated)
    shown: dict[str, int] = {}
    for path in source_files(config.sources):
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or not isinstance(record.get("response"), str):
                continue
            verdict = gate.check(str(record.get("prompt", "")), record["response"], truncated=record.get("truncated"),
                                 looped=record.get("stopped_loop") is True)
            fresh = [r for r in verdict.reasons if shown.get(r, 0) < per_reason]
            if not fresh:
                continue
            for r in fresh:
                shown[r] = shown.get(r, 0) + 1
            text = " ".join(record["response"].split())
            print(f"\n{path.name} line {number}: {verdict.describe()} {verdict.measures}, tier-1 "
                  f"{tier1_score(record['response']).total:+.1f}\n  {text[:300]}{'…' if len(text) > 300 else ''}")


def _cmd_stats(args: argparse.Namespace) -> int:
    card = read_card(args.folder)
    if card is not None:
        print(card_summary(card))
        for warning in card.get("warnings", []):
            print(f"Warning: {warning}")
    else:
        print(f"{args.folder} has no data card (not built with `lem data build`); checking the files only.")
    tokenizer = load_tokenizer(args.model) if args.model else None
    report = check_data(args.folder, tokenizer=tokenizer, mask_prompt=True, max_seq_length=args.max_seq_length)
    for stats in report.splits.values():
        tokens = (f", {stats.tokens} tokens ({stats.trained_tokens} trained), longest {stats.longest}"
                  if stats.tokens is not None else "")
        print(f"{stats.path.name}: {stats.examples} examples{tokens}")
    for warning in report.warnings:
        print(f"Warning: {warning}")
    report.raise_for_errors()
    print("lem train and mlx_lm lora can read this folder.")
    return 0


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="*", metavar="SOURCE",
                   help="answer files or folders of them (gold-*.jsonl, expand-*.jsonl, the lab's too); default: "
                        "this computer's contributions")
    p.add_argument("--split", choices=SPLIT_METHODS, default="seed",
                   help="seed (default): each seed's answers in one split, by a hash of its id; domain: the lab's "
                        "export (row number within each domain modulo 10), for comparison")
    p.add_argument("--ratios", default="80/10/10", help="train/valid/test shares for the seed split (80/10/10)")
    p.add_argument("--salt", default="lem-split-1", help="changes which seeds land in which split")
    p.add_argument("--prompt", choices=PROMPT_POLICIES, default="plain",
                   help="plain (default, the lab's): the prompt without the sandwich, which is distilled away; "
                        "system: gold answers keep the axioms and kernel as a system message")
    p.add_argument("--keep-truncated", action="store_true",
                   help="keep answers cut at the token limit (refused by default; counted either way)")
    p.add_argument("--no-gate", action="store_true", help="keep answers the quality gate would refuse")
    p.add_argument("--tier1", action="store_true",
                   help="also require the lab's tier-1 heuristic score above 0 (the lab's rule for expansion)")
    p.add_argument("--exclude-eval", action="store_true",
                   help="leave out answers to the evaluation prompts (seeds/P01-P100)")
    p.add_argument("--axioms", help="axioms file (default: the shipped kernel)")
    p.add_argument("--kernel", help="kernel text file (default: the shipped kernel)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("data", help="build training data from contributed answers, or look at it",
                       description="Contributed answers -> train/valid/test.jsonl that lem train and mlx_lm "
                                   "lora read, with a data card.")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    b = data_sub.add_parser("build", help="write a training data folder with a data card")
    _source_args(b)
    b.add_argument("--out", required=True, help="new folder for train/valid/test.jsonl and the data card")
    b.add_argument("--model", help="count lengths in this model's tokens (default: characters)")
    b.add_argument("--overwrite", action="store_true", help="rebuild a folder this command wrote before")
    b.set_defaults(func=_cmd_build)

    c = data_sub.add_parser("check", help="what a build would keep and refuse, without writing")
    _source_args(c)
    c.add_argument("--show", type=int, default=0, metavar="N", help="print up to N refused answers per reason")
    c.set_defaults(func=_cmd_check)

    s = data_sub.add_parser("stats", help="a data folder's card, checked as lem train would")
    s.add_argument("folder", help="a data folder (train.jsonl, valid.jsonl, test.jsonl)")
    s.add_argument("--model", help="count tokens with this model's tokenizer")
    s.add_argument("--max-seq-length", type=int, default=2048, help="warn about longer examples (2048)")
    s.set_defaults(func=_cmd_stats)
