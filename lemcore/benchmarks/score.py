"""Scoring stored responses: judge a run folder, re-score it, or import responses produced elsewhere.

`score_responses` reads a JSONL of `{id, response}` lines (the lab's result files add `benchmark, model,
prompt, elapsed_seconds`) against a suite file and writes an ordinary run folder, so `lem compare` works on
old runs too. A response of the form `ERROR: …` is a failed generation: it is counted and left out, never
scored as if the model had said it (docs/lab-formats.md, "Errors and empty answers scored as answers"). With
the lab's score file beside it, the original per-item scores are kept and summarised next to ours, with the
number of items the re-scoring changed (exact: the responses are the same, so no interval and no noise verdict).
Lines of the responses file that cannot be read are counted and named (file:line) in run.json and the summary,
and everything that can refuse (the original scores, the judge and its key) is checked before a folder is made.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lemcore.benchmarks import store
from lemcore.benchmarks.events import JudgeRow
from lemcore.benchmarks.judge import (
    JudgeBackend,
    JudgeConfig,
    JudgeRequest,
    Judgment,
    judge_messages,
    judge_requests,
    make_judge,
)
from lemcore.benchmarks.provenance import library_versions
from lemcore.benchmarks.suites import (
    BenchItem,
    file_sha256,
    guess_suite_id,
    load_suite,
    read_records,
    suite_module,
)
from lemcore.errors import ConfigError, DataError
from lemcore.jobs import CancelToken, Report, no_report
from lemcore.secrets import TokenStore

_ERROR = re.compile(r"^\s*ERROR\b")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _item_of(row: dict[str, Any]) -> BenchItem:
    return BenchItem(str(row["id"]), str(row.get("question", "")), dict(row.get("reference") or {}),
                     str(row.get("stratum", "")))


def judge_run(run_dir: str | Path, judge: JudgeBackend | JudgeConfig, *, suites: list[str] | None = None,
              token_store: TokenStore | None = None, retries: int | None = None, backoff_s: float | None = None,
              sleep: Callable[[float], Any] | None = None, report: Report = no_report,
              cancel: CancelToken | None = None) -> dict[str, int]:
    """Judge every generated row that has no good judgment from this judge and rubric yet (earlier failures
    are tried again). Returns the number of judgments per suite that stayed failed."""
    run_dir = Path(run_dir)
    run = store.read_run(run_dir)
    config = judge if isinstance(judge, JudgeConfig) else None
    backend = make_judge(judge, store=token_store) if isinstance(judge, JudgeConfig) else judge
    tries = retries if retries is not None else (config.retries if config else 3)
    wait = backoff_s if backoff_s is not None else (config.backoff_s if config else 2.0)
    failed: dict[str, int] = {}
    for suite in suites or list(run.get("suites", {})):
        module = suite_module(suite)
        if not module.JUDGED:
            continue
        rubric = module.RUBRIC
        record = {"identity": backend.identity(), "rubric_sha256": rubric.sha256(), "rubric": rubric.text(),
                  "retries": tries, "since": _now()}
        previous = run.setdefault("judges", {}).get(suite) or {}
        if (previous.get("identity"), previous.get("rubric_sha256")) == (record["identity"], record["rubric_sha256"]):
            record["since"] = previous.get("since", record["since"])
        run["judges"][suite] = record
        store.write_json(run_dir / store.RUN_FILE, run)
        have = store.current_judgments(run_dir, suite, record)
        rows = store.latest_rows(run_dir, suite)
        requests = [JudgeRequest(key, judge_messages(rubric, module.judge_fields(_item_of(row)), row["response"]))
                    for key, row in sorted(rows.items())
                    if row.get("status") == "ok" and have.get(key, {}).get("status") != "ok"]
        path = store.judgments_path(run_dir, suite)

        def save(j: Judgment, path: Path = path, record: dict[str, Any] = record, suite: str = suite) -> None:
            report(JudgeRow(suite, j.key[0], j.key[1], j.status, j.scores, j.attempts))
            store.append_jsonl(path, {"id": j.key[0], "sample": j.key[1], "status": j.status, "scores": j.scores,
                                      "reasoning": j.reasoning, "attempts": j.attempts, "error": j.error,
                                      "raw": j.raw, "judge": record["identity"],
                                      "rubric_sha256": record["rubric_sha256"], "judged_at": _now()})

        results = judge_requests(backend, rubric.keys, requests, retries=tries, backoff_s=wait, on_judgment=save,
                                 suite=suite, sleep=sleep, report=report, cancel=cancel)
        failed[suite] = sum(j.status == "failed" for j in results)
    return failed


def rescore_run(run_dir: str | Path, *, judge: JudgeBackend | JudgeConfig | None = None,
                token_store: TokenStore | None = None, report: Report = no_report,
                cancel: CancelToken | None = None, **judge_options: Any) -> dict[str, Any]:
    """Re-extract GSM8K answers with the current extractor, judge what is unjudged, rewrite the summary."""
    run_dir = Path(run_dir)
    run = store.read_run(run_dir)
    for suite in run.get("suites", {}):
        module = suite_module(suite)
        if module.JUDGED or getattr(module, "LOGLIK", False):  # log-likelihoods need the model: nothing to redo
            continue
        for _key, row in sorted(store.latest_rows(run_dir, suite).items()):
            if row.get("status") != "ok":
                continue
            new = module.score(_item_of(row), row.get("response") or "")
            if new != row.get("score"):
                store.append_jsonl(store.rows_path(run_dir, suite), {**row, "score": new, "rescored_at": _now()})
    if judge is not None:
        judge_run(run_dir, judge, token_store=token_store, report=report, cancel=cancel, **judge_options)
    return store.summarize_run(run_dir, seed=int(run.get("seed", 0)))


# -- importing responses produced elsewhere --------------------------------------------------------------
@dataclass(frozen=True)
class ScoreConfig:
    responses: str  # JSONL: {id, response} per line (the lab's result files work as they are)
    suite_file: str = ""  # the questions; empty: the hub copy in the cache (ethics: the seeds folder)
    suite: str = ""  # suite id; empty: from the lines' `benchmark` field or the file names
    run_dir: str = ""  # empty: <data folder>/benchmarks/scored-<time>-<label>
    label: str = ""  # empty: the lines' `model` field, else the file name
    original_scores: str = ""  # the lab's score file ({"scores": {bench: {model: {id: {...}}}}})
    original_model: str = ""  # the model's key in that file; empty: the label
    judge: JudgeConfig | None = None


def load_lab_scores(path: str | Path, suite: str, model: str) -> dict[str, dict[str, Any]]:
    """Per-item score objects for one benchmark and model from a lab score file (shapes: docs/lab-formats.md,
    "Benchmark files")."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"Cannot read the score file {path} ({err}).") from None
    by_model = (doc.get("scores") or {}).get(suite) if "scores" in doc else doc.get("per_response")
    if not isinstance(by_model, dict) or not by_model:
        raise DataError(f"{path} holds no scores for {suite}.")
    if model not in by_model:
        raise DataError(f"{path} has no model '{model}' for {suite}; it has: {', '.join(sorted(by_model))}.")
    return {str(k): v for k, v in by_model[model].items() if isinstance(v, dict)}


def _original_values(suite: str, per_item: dict[str, dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    module = suite_module(suite)
    values: dict[str, dict[str, list[float]]] = {}
    for item_id, obj in per_item.items():
        if not module.JUDGED:
            # The lab's `correct` came from its own rule: it is also what our lab-rule column must reproduce.
            correct = 100.0 * bool(obj.get("correct"))
            per = {"accuracy": correct, "accuracy_lab_rule": correct}
        else:
            per = {k: float(obj[k]) for k in module.METRICS if isinstance(obj.get(k), (int, float))}
        for metric, v in per.items():
            values.setdefault(metric, {})[item_id] = [v]
    return values


def score_responses(config: ScoreConfig, *, judge: JudgeBackend | None = None, token_store: TokenStore | None = None,
                    report: Report = no_report, cancel: CancelToken | None = None) -> dict[str, Any]:
    """Import a responses file into a run folder, score it, and return its summary."""
    path = Path(config.responses).expanduser()
    problems: list[str] = []
    lines = read_records(path, problems.append)
    if not lines:
        raise DataError(f"{path} holds no response lines ({problems[0] if problems else 'empty file'}).")
    suite_id = (config.suite or guess_suite_id(str(lines[0].get("benchmark", ""))) or guess_suite_id(path.name)
                or (guess_suite_id(Path(config.suite_file).name) if config.suite_file else None))
    if not suite_id:
        raise ConfigError(f"Cannot tell which benchmark {path.name} belongs to. Say it with --suite.")
    if getattr(suite_module(suite_id), "LOGLIK", False):
        raise ConfigError(f"{suite_id} is scored from the model's log-likelihoods, not from written responses: run "
                          f"it with `lem bench MODEL --suite {suite_id}`.")
    suite = load_suite(suite_id, config.suite_file or None)
    items = {i.id: i for i in suite.items}
    label = config.label or str(lines[0].get("model") or path.stem)
    run_dir = Path(config.run_dir).expanduser() if config.run_dir else None  # None: a new folder
    run: dict[str, Any] | None = None
    if run_dir is not None and (run_dir / store.RUN_FILE).exists():
        # Adding another benchmark's responses of the same model builds one run, as the lab kept one file
        # per benchmark and model.
        run = store.read_run(run_dir)
        if run.get("kind") != "imported" or suite_id in run.get("suites", {}):
            raise ConfigError(f"{run_dir} already holds {suite_id} results. Choose a new folder, or re-score that "
                              "run with `lem score --run`.")
    module = suite_module(suite_id)
    samples: dict[str, int] = {}
    unknown: list[str] = []
    rows = []
    for obj in lines:
        item_id = str(obj.get("id", ""))
        item = items.get(item_id)
        if item is None:
            unknown.append(item_id)
            continue
        sample = samples.get(item_id, 0)
        samples[item_id] = sample + 1
        response = obj.get("response")
        failed = not isinstance(response, str) or bool(_ERROR.match(response))
        rows.append({
            "id": item_id, "sample": sample, "status": "failed_generation" if failed else "ok",
            "error": str(response)[:500] if failed else "", "question": item.question,
            "reference": item.reference, "stratum": item.stratum,
            "messages": None, "prompt_text": None, "source_prompt": obj.get("prompt"),
            "response": response if isinstance(response, str) else "", "tokens": None,
            "seconds": obj.get("elapsed_seconds"), "truncated": None,
            "score": module.score(item, response) if not failed and not module.JUDGED else {},
        })
    if not rows:
        raise DataError(f"None of the {len(lines)} ids in {path.name} is in the {suite_id} questions "
                        f"({suite.source}). Is that the question file these responses answered?")
    # Everything that can refuse is checked before a folder is made: a refused import leaves nothing behind.
    original: dict[str, Any] | None = None
    if config.original_scores:
        per_item = load_lab_scores(config.original_scores, suite_id, config.original_model or label)
        original = {"file": str(config.original_scores), "model": config.original_model or label,
                    "values": _original_values(suite_id, per_item)}
    backend: JudgeBackend | None = judge
    if backend is None and config.judge is not None and module.JUDGED:
        backend = make_judge(config.judge, store=token_store)
    if run_dir is None:
        run_dir = store.new_run_dir(label, prefix="scored-")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
    if run is None:
        run = {"format": store.FORMAT, "kind": "imported", "label": label, "created": _now(),
               "model": {"name": label, "sha256": None}, "adapter": None, "samples": 1, "seed": 0,
               "sampling": None, "suites": {}, "sources": {}, "libraries": library_versions(), "judges": {},
               "sessions": [], "original": {}}
    run["samples"] = max(int(run.get("samples") or 1), max(samples.values()))
    run["suites"][suite_id] = suite.provenance()
    run["sources"][suite_id] = {
        "path": str(path), "sha256": file_sha256(path), "lines": len(lines), "unknown_ids": unknown[:50],
        "unknown_count": len(unknown),
        # Lines that are not JSON objects: never dropped silently (file:line and why, for the summary).
        "problems": problems[:50], "problem_count": len(problems),
        "model_field": lines[0].get("model"),
        "note": "generated elsewhere: prompt template and sampling settings were not recorded"}
    if original is not None:
        run.setdefault("original", {})[suite_id] = original
    store.write_json(run_dir / store.RUN_FILE, run)
    for row in rows:
        store.append_jsonl(store.rows_path(run_dir, suite_id), row)
    if backend is not None and module.JUDGED:
        retries = config.judge.retries if config.judge is not None else None
        backoff = config.judge.backoff_s if config.judge is not None else None
        judge_run(run_dir, backend, suites=[suite_id], token_store=token_store, retries=retries, backoff_s=backoff,
                  report=report, cancel=cancel)
    summary = store.summarize_run(run_dir)
    summary["run_dir"] = str(run_dir)
    return summary
