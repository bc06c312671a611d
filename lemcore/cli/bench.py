"""`lem bench`, `lem score`, `lem compare` and `lem judge-key`: benchmarks from the command line."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from dataclasses import asdict
from typing import Any

from lemcore.benchmarks.compare import compare_runs, format_comparison
from lemcore.benchmarks.events import BenchProgress, BenchStarted
from lemcore.benchmarks.judge import JUDGE_KEY_ENV, JudgeBackend, JudgeConfig, judge_key_advice, make_judge
from lemcore.benchmarks.reference import format_reference
from lemcore.benchmarks.run import BenchConfig, SuiteSpec, run_benchmark
from lemcore.benchmarks.score import ScoreConfig, rescore_run, score_responses
from lemcore.benchmarks.store import nothing_scored_reason
from lemcore.benchmarks.suites import fetch_suite
from lemcore.errors import ConfigError, SecretStoreError
from lemcore.events import Event
from lemcore.secrets import KeyringTokenStore, TokenStore


def add_judge_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("judge (TruthfulQA, Do Not Answer, ToxiGen, ethics)")
    g.add_argument("--judge", metavar="local:MODEL | api:URL",
                   help="local:MODEL judges on this computer with an MLX model; api:URL uses any OpenAI-compatible "
                        "server (key from the keychain, see `lem judge-key`)")
    g.add_argument("--judge-model", default="", help="model name to ask the API server for")
    g.add_argument("--judge-key-account", default="judge-api-key", help="keychain account that holds the API key")
    g.add_argument("--judge-retries", type=int, default=3, help="attempts per judgment (default 3)")
    g.add_argument("--judge-backoff", type=float, default=2.0, help="seconds before the first retry (doubles)")
    g.add_argument("--judge-max-tokens", type=int, default=300, help="longest judge reply (default 300)")


def judge_config_from_args(args: argparse.Namespace) -> JudgeConfig | None:
    if not args.judge:
        return None
    kind, _, target = args.judge.partition(":")
    if kind == "local" and target:
        return JudgeConfig("local", model=target, retries=args.judge_retries, backoff_s=0.0,
                           max_tokens=args.judge_max_tokens)
    if kind == "api" and target:
        return JudgeConfig("api", model=args.judge_model, url=target, key_account=args.judge_key_account,
                           retries=args.judge_retries, backoff_s=args.judge_backoff, max_tokens=args.judge_max_tokens)
    raise ConfigError("--judge takes local:MODEL or api:URL (e.g. api:http://localhost:8090/v1).")


def judge_token_store() -> TokenStore:
    key = os.environ.get(JUDGE_KEY_ENV, "").strip()
    if key:
        return _EnvStore(key)
    return KeyringTokenStore()


class _EnvStore:
    """A read-only TokenStore that answers every account with the key from the environment."""

    def __init__(self, key: str) -> None:
        self._key = key

    def get(self, account: str = "") -> str:
        return self._key

    def set(self, token: str, account: str = "") -> None:
        raise SecretStoreError(f"The judge key comes from {JUDGE_KEY_ENV} here; it cannot be saved.")

    def delete(self, account: str = "") -> None:
        raise SecretStoreError(f"The judge key comes from {JUDGE_KEY_ENV} here; unset it instead.")


class ProgressPrinter:
    """Progress on stderr: one line per stage and suite, updated in place on a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last: tuple[str, str] | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, BenchStarted):
            print(f"Run folder: {event.run_dir}", file=sys.stderr)
            if event.resumed:
                print(f"Resuming: {event.resumed} of {event.total} generations already done.", file=sys.stderr)
        elif isinstance(event, BenchProgress) and event.total:
            key = (event.stage, event.suite)
            text = f"{event.stage} {event.suite}: {event.done}/{event.total}"
            if event.failed:
                text += f" ({event.failed} failed)"
            if self.tty:
                print(("\n" if self.last not in (None, key) else "\r") + text, end="", file=sys.stderr, flush=True)
            elif event.done == event.total or event.done % 10 == 0:
                print(text, file=sys.stderr)
            self.last = key

    def close(self) -> None:
        if self.tty and self.last:
            print(file=sys.stderr)


def _num(value: Any, digits: int = 2) -> str:
    return "—" if not isinstance(value, (int, float)) or value != value else f"{value:.{digits}f}"


def format_summary(summary: dict[str, Any]) -> str:
    suites = list(summary.get("suites", {}).values())
    # Multiple-choice suites score each item once, whatever --samples says: name the samples only when used.
    sampled = any(int(s.get("rows") or 0) > int(s.get("items") or 0) for s in suites)
    lines = [f"{summary.get('label')}" + (f"  (samples per item: {summary.get('samples')})" if sampled else "")]
    for s in summary.get("suites", {}).values():
        counts = [f"{s['items']} items", f"{s['rows']} responses"]
        for key, text in (("generation_failed", "failed generations"), ("truncated", "truncated"),
                          ("judge_failed", "failed judgments"), ("not_judged", "not judged")):
            if s.get(key):
                counts.append(f"{s[key]} {text}")
        lines.append(f"  {s['title']}: {', '.join(counts)}")
        notes = s.get("metric_notes") or {}
        for metric, iv in s["metrics"].items():
            exact = "  (exact)" if str(iv.get("method", "")).startswith("exact") else ""
            note = f"  {notes[metric]}" if metric in notes else ""
            lines.append(f"    {metric:22} {_num(iv['mean']):>8}  95% CI [{_num(iv['low'])}, {_num(iv['high'])}]"
                         f"{exact}{note}")
        if not s["metrics"]:
            lines.append(f"    nothing could be scored: {nothing_scored_reason(s)}")
        if s.get("extraction_methods"):
            lines.append(f"    answers found by: {s['extraction_methods']}")
        if s.get("judge_calibration"):
            lines.append(f"    judge calibration: {s['judge_calibration']['text']}")
        for key, what in (("input_problems", "lines of the responses file could not be read and were skipped"),
                          ("unknown_ids", "responses name ids that are not in the questions and were skipped")):
            if s.get(key):
                lines.append(f"    {s[key]['count']} {what}:")
                lines += [f"      {p}" for p in s[key]["first"]]
                if s[key]["count"] > len(s[key]["first"]):
                    lines.append(f"      … and {s[key]['count'] - len(s[key]['first'])} more (run.json, sources)")
    for suite, entry in (summary.get("versus_original") or {}).items():
        for metric, v in entry["metrics"].items():
            head = f"  {suite} {metric}: original {_num(v['original']['mean'])}"
            c = v.get("changes") or {}
            if v.get("nothing_scored") or not isinstance(v["rescored"].get("mean"), (int, float)):
                lines.append(f"{head}; nothing could be scored: {v.get('nothing_scored') or 'no usable scores'}")
                continue
            text = f"{head}, re-scored {_num(v['rescored']['mean'])}; "
            if not c.get("n_items"):
                text += "no item was scored both times"
            else:
                text += f"{v['verdict']} of the {c['n_items']} scored both times"
                if c.get("only_original"):
                    text += f" ({c['only_original']} only in the original: failed generations or unknown here)"
            lines.append(text)
    return "\n".join(lines)


def all_judgments_failed(summary: dict[str, Any]) -> str:
    """A one-line reason when a judged suite had judgments and every one of them failed; "" otherwise."""
    bad = [f"{suite}: {nothing_scored_reason(s)}" for suite, s in summary.get("suites", {}).items()
           if s.get("judge_failed") and not s.get("judged_ok")]
    return "; ".join(bad)


def _judging_verdict(summary: dict[str, Any], where: Any) -> int:
    reason = all_judgments_failed(summary)
    if not reason:
        return 0
    print(f"Error: every judgment failed ({reason}). The responses are kept: fix the judge and run "
          f"`lem score --run {where} --judge …` to try again.", file=sys.stderr)
    return 1


def _suite_specs(args: argparse.Namespace) -> tuple[SuiteSpec, ...]:
    specs = []
    for text in args.suite or []:
        suite_id, _, path = text.partition("=")
        specs.append(SuiteSpec(suite_id.strip(), path.strip(), n=args.n, stratify=not args.no_stratify))
    return tuple(specs)


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.reference:
        print(format_reference(), end="")
        return 0
    if args.fetch:
        for suite_id in args.fetch:
            print(f"{suite_id}: {fetch_suite(suite_id)}")
        return 0
    if not (args.model or args.api_base) or not args.suite:
        raise ConfigError("Give a model (or a server with --api-base URL) and at least one --suite (e.g. lem bench "
                          "MODEL --suite gsm8k=gsm8k.jsonl).")
    if args.model and args.api_base:
        raise ConfigError("Give either a model to load here or --api-base for a server, not both (name the "
                          "server's model with --api-model).")

    config = BenchConfig(model=args.model or "", suites=_suite_specs(args), adapter=args.adapter or "",
                         samples=args.samples, seed=args.seed, temperature=args.temperature, top_p=args.top_p,
                         max_tokens=args.max_tokens, batch_size=args.batch_size, run_dir=args.run or "",
                         label=args.label or "", judge=judge_config_from_args(args), api_base=args.api_base or "",
                         api_model=args.api_model or "", api_key_account=args.api_key_account,
                         num_fewshot=args.num_fewshot)
    printer = ProgressPrinter()
    judge: JudgeBackend | None = None
    if config.judge is not None and config.judge.kind == "api":
        judge = make_judge(config.judge, store=judge_token_store())
    try:
        result = run_benchmark(config, report=printer, judge=judge)
    finally:
        printer.close()
    print(format_summary(result.summary))
    print(f"Results: {result.run_dir}")
    return _judging_verdict(result.summary, result.run_dir)


def _cmd_score(args: argparse.Namespace) -> int:
    printer = ProgressPrinter()
    try:
        if args.run:
            summary = rescore_run(args.run, judge=judge_config_from_args(args), token_store=judge_token_store(), report=printer)
            where = args.run
        else:
            if not args.responses:
                raise ConfigError("Give a responses file (JSONL of {id, response}) or --run RUN_FOLDER.")

            config = ScoreConfig(responses=args.responses, suite_file=args.suite_file or "", suite=args.suite or "",
                                 run_dir=args.out or "", label=args.label or "",
                                 original_scores=args.original or "", original_model=args.original_model or "",
                                 judge=judge_config_from_args(args))
            summary = score_responses(config, token_store=judge_token_store(), report=printer)
            where = summary["run_dir"]
    finally:
        printer.close()
    print(format_summary(summary))
    print(f"Results: {where}")
    return _judging_verdict(summary, where)


def _no_nan(obj: Any) -> Any:
    """JSON has no NaN: a missing number (a reference figure's interval) is written as null."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(v) for v in obj]
    return obj


def _cmd_compare(args: argparse.Namespace) -> int:
    if args.reference:
        print(format_reference(), end="")
        if not args.run_a:
            return 0
    if not (args.run_a and args.run_b):
        raise ConfigError("Give two run folders (the base first), or ref:1b_five_variant/it style names.")
    cmp = compare_runs(args.run_a, args.run_b, n_boot=args.boot, seed=args.seed)
    if args.json:
        print(json.dumps(_no_nan(asdict(cmp)), indent=2, default=str))
    else:
        print(format_comparison(cmp), end="")
    return 0


def _cmd_judge_key(args: argparse.Namespace) -> int:
    store = KeyringTokenStore()
    try:
        if args.delete:
            store.delete(args.account)
            print(f"Removed the judge API key '{args.account}' from the keychain.")
            return 0
        key = sys.stdin.readline().strip() if args.stdin else getpass.getpass("Paste the judge API key: ")
        if not key:
            raise ConfigError("The judge API key is empty: paste the key your judge server gave you.")
        store.set(key, args.account)
    except SecretStoreError as err:
        raise SecretStoreError(judge_key_advice(args.account, str(err), saving=True)) from None
    print(f"Saved the judge API key in the system keychain (account '{args.account}').")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="benchmark a model (GSM8K, TruthfulQA, Do Not Answer, ToxiGen, ethics, "
                                     "TruthfulQA MC)")
    p.add_argument("model", nargs="?", help="model folder, catalog id or downloaded hub id (or use --api-base)")
    p.add_argument("--suite", action="append", metavar="ID[=FILE]",
                   help="gsm8k, truthfulqa, do_not_answer, toxigen, ethics or truthfulqa_mc (MC1/MC2 by "
                        "log-likelihood, no judge), optionally with its question file (repeatable; without a "
                        "file: the hub copy in the cache, ethics: the seeds folder)")
    p.add_argument("--n", type=int, default=None, help="subsample each suite to N items (seeded, stratified)")
    p.add_argument("--no-stratify", action="store_true", help="plain random subsample")
    p.add_argument("--samples", type=int, default=3, help="samples per item (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.3)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, default=0, help="0: each suite's default")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--adapter", help="LoRA adapter folder to apply to the model")
    p.add_argument("--num-fewshot", type=int, default=0, metavar="K",
                   help="K solved examples from the same question file before each item, as earlier chat turns "
                        "(gsm8k, truthfulqa; seeded, never the item itself; default 0)")
    g = p.add_argument_group("model on a server (llama.cpp, Ollama, LM Studio, vLLM: any OpenAI-compatible API)")
    g.add_argument("--api-base", metavar="URL", help="the server's API address, e.g. http://localhost:8080/v1 "
                                                     "(instead of MODEL)")
    g.add_argument("--api-model", metavar="NAME", help="the model's name on that server (default: its only model)")
    g.add_argument("--api-key-account", default="generation-api-key",
                   help="keychain account holding the server's key, if it needs one")
    p.add_argument("--run", help="run folder (an existing one resumes)")
    p.add_argument("--label", help="name for tables")
    p.add_argument("--reference", action="store_true", help="print the paper's published figures and stop")
    p.add_argument("--fetch", nargs="+", metavar="SUITE", help="download suites from the dataset hub and stop")
    add_judge_args(p)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("score", help="score responses made elsewhere, or re-score / judge a run folder")
    p.add_argument("responses", nargs="?", help="JSONL of {id, response} (the lab's result files work)")
    p.add_argument("--suite-file", help="the question file the responses answer")
    p.add_argument("--suite", help="suite id (default: from the file)")
    p.add_argument("--run", help="re-score this run folder instead (new extractor, judge what is unjudged)")
    p.add_argument("--out", help="run folder to create for the imported responses")
    p.add_argument("--label", help="name for tables (default: the lines' model field)")
    p.add_argument("--original", help="the lab's score file, to compare with the original per-item scores")
    p.add_argument("--original-model", help="the model's key in that file (default: the label)")
    add_judge_args(p)
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("compare", help="compare two runs: headline table with 95%% intervals")
    p.add_argument("run_a", nargs="?", help="the base run folder (or ref:1b_five_variant/it)")
    p.add_argument("run_b", nargs="?", help="the run compared with it")
    p.add_argument("--boot", type=int, default=4000, help="bootstrap replicates")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--reference", action="store_true", help="also print the paper's published figures")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("judge-key", help="save (or delete) the judge API key in the system keychain")
    p.add_argument("--account", default="judge-api-key")
    p.add_argument("--stdin", action="store_true", help="read the key from standard input")
    p.add_argument("--delete", action="store_true")
    p.set_defaults(func=_cmd_judge_key)
