"""`lem judge calibrate` and `lem judge list`: how far a judge agrees with the lab's stored judgments."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lemcore.benchmarks.calibration import CalibrationConfig, calibrate_judge
from lemcore.benchmarks.calibration_store import describe_calibration, stored_calibrations
from lemcore.cli.bench import ProgressPrinter, add_judge_args, judge_config_from_args, judge_token_store
from lemcore.errors import ConfigError


def _num(x: Any, digits: int = 2, sign: bool = False) -> str:
    if not isinstance(x, (int, float)):
        return "—"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _ci(est: dict[str, Any]) -> str:
    return f"{_num(est.get('value'))} [{_num(est.get('low'))}, {_num(est.get('high'))}]"


def judge_name(identity: dict[str, Any]) -> str:
    if identity.get("kind") == "api":
        return f"{identity.get('model') or 'default model'} at {identity.get('url')}"
    return f"{identity.get('model')} (on this computer)"


def format_calibration(record: dict[str, Any]) -> str:
    ref = record["reference"]
    lines = [f"Judge: {judge_name(record['judge'])}, rubric {record['rubric_sha256'][:12]}, suite {record['suite']}",
             f"Against the lab's judgments in {ref['scores_file_name']}: {record['items']} responses"]
    for src in ref["responses"]:
        skipped = [f"{src[k]} {what}" for k, what in (
            ("failed_generations", "failed generations"), ("lab_failed", "lab judgments that had failed"),
            ("no_lab_judgment", "without a lab judgment"), ("lab_incomplete", "lab judgments missing a score"),
            ("unknown_ids", "ids not in the questions"), ("duplicates", "repeated ids")) if src.get(k)]
        if src.get("problems"):
            skipped.append(f"unreadable lines ({'; '.join(src['problems'][:3])})")
        lines.append(f"  {src['path']} ({src['model_key']}): {src['used']} used"
                     + (f"; left out: {', '.join(skipped)}" if skipped else ""))
    level = int(round(100 * record["bootstrap"]["level"]))
    lines.append(f"  {'dimension':16} {'n':>4}  {f'Spearman [{level}% CI]':24} {f'Kendall tau-b [{level}% CI]':24} "
                 f"{f'mean |ours − lab| [{level}% CI]':30} ours − lab")
    for dim, d in record["dimensions"].items():
        lines.append(f"  {dim:16} {d['n']:>4}  {_ci(d['spearman']):24} {_ci(d['kendall_tau_b']):24} "
                     f"{_ci(d['mean_abs_diff']):30} {_num(d['mean_diff'].get('value'), sign=True)}")
    refusal = record.get("refusal")
    if refusal and refusal.get("n"):
        lines += [f"  Refusal ({refusal['rule']}):",
                  f"    {'':18} {'ours: refusal':>14} {'ours: no refusal':>17}",
                  f"    {'lab: refusal':18} {refusal['both_yes']:>14} {refusal['lab_only']:>17}",
                  f"    {'lab: no refusal':18} {refusal['ours_only']:>14} {refusal['both_no']:>17}",
                  f"    agreement {100 * refusal['agreement']:.0f}% ({refusal['both_yes'] + refusal['both_no']} of "
                  f"{refusal['n']}), Cohen's kappa {_num(refusal.get('kappa'))}"]
    if record.get("judge_failed"):
        lines.append(f"  {record['judge_failed']} judgments failed and are left out (last error: "
                     f"{record.get('judge_error') or 'unknown'})")
    boot = record["bootstrap"]
    lines.append(f"  Intervals: percentile bootstrap over items, {boot['replicates']} replicates, seed {boot['seed']}.")
    return "\n".join(lines)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    judge = judge_config_from_args(args)
    if judge is None:
        raise ConfigError("Choose the judge to calibrate: --judge local:MODEL or api:URL (with --judge-model).")
    config = CalibrationConfig(suite=args.suite, responses=tuple(args.responses or ()), scores=args.scores or "",
                               score_models=tuple(args.scores_model or ()), suite_file=args.suite_file or "",
                               judge=judge, replicates=args.boot, seed=args.seed)
    printer = ProgressPrinter()
    try:
        result = calibrate_judge(config, token_store=judge_token_store(), report=printer)
    finally:
        printer.close()
    print(format_calibration(result.record))
    if result.path is None:
        print(f"Error: every judgment failed (last error: {result.record.get('judge_error') or 'unknown'}); "
              "nothing was stored. Fix the judge and run the calibration again.", file=sys.stderr)
        return 1
    print(f"Stored: {result.path}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    found = stored_calibrations(suite=args.suite or None)
    if not found:
        print("No judge calibrations yet: run `lem judge calibrate`.")
        return 0
    for record in found:
        print(f"{record.get('created')}  {record.get('suite')}  {judge_name(record.get('judge') or {})}  "
              f"rubric {str(record.get('rubric_sha256'))[:12]}")
        print(f"  {describe_calibration(record)}")
        print(f"  {record['path']}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("judge", help="measure how far a judge agrees with the lab's stored judgments")
    jsub = p.add_subparsers(dest="judge_command", metavar="ACTION")

    def _help(args: argparse.Namespace) -> int:
        p.print_help()
        return 0

    p.set_defaults(func=_help)

    c = jsub.add_parser("calibrate", help="judge the lab's stored responses and compare with the lab's judgments")
    c.add_argument("--suite", required=True, help="truthfulqa, do_not_answer, toxigen or ethics")
    c.add_argument("--responses", action="append", metavar="FILE",
                   help="the lab's result file for that suite, e.g. do_not_answer_lem_ethics.jsonl (repeatable)")
    c.add_argument("--scores", metavar="FILE", help="the lab's score file that judged them (standard_scores.json)")
    c.add_argument("--scores-model", action="append", metavar="KEY",
                   help="the model's key in the score file, one per --responses file in order (default: the "
                        "lines' model field, or the file name after the suite)")
    c.add_argument("--suite-file", help="the question file (the lab's 50-item file for its ids)")
    c.add_argument("--boot", type=int, default=2000, help="bootstrap replicates (default 2000)")
    c.add_argument("--seed", type=int, default=0)
    add_judge_args(c)
    c.set_defaults(func=_cmd_calibrate)

    s = jsub.add_parser("list", help="stored calibrations, newest first")
    s.add_argument("--suite", help="only this suite")
    s.set_defaults(func=_cmd_list)
