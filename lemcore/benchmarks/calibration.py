"""Judge calibration: how far our judge agrees with the lab's stored judgments on the lab's own responses.

The paper's judged numbers came from the lab's judge (docs/lab-formats.md, "Benchmark scoring"). Before a
re-judged number is set beside them, a user needs to know whether the judge they run (a local model, any
OpenAI-compatible server) rates answers the way the lab's did. `calibrate_judge` takes the lab's stored
responses for a suite (result files `{id, benchmark, model, prompt, response, elapsed_seconds}`) and its score
file (`{"scores": {bench: {model: {item id: {dimension: 1-10, ...}}}}}`, both in docs/lab-formats.md,
"Benchmark files"), judges every response that has a lab judgment with our rubric, and measures the agreement
per rubric dimension (`agreement.py`: Spearman, Kendall tau-b, mean absolute difference, bootstrap
intervals over items) plus, for suites that define a refusal reading (`REFUSAL` in the suite module), the
refused / not refused table. What cannot be compared is counted, never guessed: failed generations (`ERROR:`
responses), lab judgments the lab's scorer stored as "API failed" (its 5/5 default), our failed judgments.

The result is stored next to the judge's identity (`calibration_store.py`), where the Results page finds it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lemcore.benchmarks.agreement import agreement, confusion
from lemcore.benchmarks.calibration_store import FORMAT, public_identity, save_calibration
from lemcore.benchmarks.judge import (
    JudgeBackend,
    JudgeConfig,
    JudgeRequest,
    Judgment,
    judge_messages,
    judge_requests,
    make_judge,
)
from lemcore.benchmarks.score import load_lab_scores
from lemcore.benchmarks.suites import file_sha256, load_suite, read_records, suite_module
from lemcore.errors import ConfigError, DataError
from lemcore.jobs import CancelToken, Report, no_report
from lemcore.secrets import TokenStore

_ERROR = re.compile(r"^\s*ERROR\b")


@dataclass(frozen=True)
class CalibrationConfig:
    suite: str  # a judged suite: truthfulqa, do_not_answer, toxigen, ethics
    responses: tuple[str, ...]  # the lab's result files for that suite (one per model)
    scores: str  # the lab's score file holding its per-item judgments of those responses
    score_models: tuple[str, ...] = ()  # each responses file's model key in the score file; empty: guessed
    suite_file: str = ""  # the questions; empty: the hub copy in the cache (ethics: the seeds folder)
    judge: JudgeConfig | None = None
    replicates: int = 2000  # bootstrap replicates
    seed: int = 0
    level: float = 0.95

    def validate(self) -> None:
        module = suite_module(self.suite)
        if not module.JUDGED:
            raise ConfigError(f"{self.suite} is scored without a judge: there is no judge to calibrate on it. "
                              "Choose truthfulqa, do_not_answer, toxigen or ethics.")
        if not self.responses:
            raise ConfigError("Give at least one of the lab's responses files (--responses).")
        if not self.scores:
            raise ConfigError("Give the lab's score file that judged those responses (--scores), e.g. "
                              "standard_scores.json.")
        if len(self.score_models) > len(self.responses):
            raise ConfigError("There are more --scores-model names than --responses files: give one per file, "
                              "in the same order.")
        if self.replicates < 100:
            raise ConfigError("Use at least 100 bootstrap replicates.")


@dataclass(frozen=True)
class CalibrationResult:
    record: dict[str, Any]  # what is stored (see `calibrate_judge`)
    path: Path | None  # the stored file; None when no judgment succeeded (nothing to store)


@dataclass
class _Source:
    path: Path
    model_key: str
    lines: int
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _model_candidates(path: Path, lines: list[dict[str, Any]], suite: str) -> list[str]:
    """The model key a lab result file stands for: its lines' `model`, else its name `<bench>_<model>`."""
    out = [str(lines[0].get("model") or "")]
    stem = path.stem
    for prefix in (f"{suite}_", f"{suite.replace('_', '')}_"):
        if stem.startswith(prefix):
            out.append(stem[len(prefix):])
    return [c for c in dict.fromkeys(out) if c]


def _lab_scores_for(config: CalibrationConfig, path: Path, lines: list[dict[str, Any]],
                    explicit: str) -> tuple[str, dict[str, dict[str, Any]]]:
    candidates = [explicit] if explicit else _model_candidates(path, lines, config.suite)
    last: DataError | None = None
    for key in candidates:
        try:
            return key, load_lab_scores(config.scores, config.suite, key)
        except DataError as err:
            if "has no model" not in str(err):
                raise
            last = err
    why = f"{last}" if last else f"{path.name} names no model."
    raise DataError(f"{why} Say which model these responses are with --scores-model (one per --responses file, "
                    "in order).")


def _lab_failed(obj: dict[str, Any]) -> bool:
    """The lab's scorer stored 5s with this reasoning when its judge call failed: not a judgment."""
    return str(obj.get("reasoning") or "").strip().lower() == "api failed"


def calibrate_judge(config: CalibrationConfig, *, judge: JudgeBackend | None = None,
                    token_store: TokenStore | None = None, sleep: Callable[[float], Any] | None = None,
                    report: Report = no_report, cancel: CancelToken | None = None) -> CalibrationResult:
    """Judge the lab's responses, measure the agreement with the lab's judgments, store it (see the module
    docstring). `judge` may be passed in (tests, a model already loaded); otherwise `config.judge` is built."""
    config.validate()
    module = suite_module(config.suite)
    rubric = module.RUBRIC
    keys = rubric.keys
    suite = load_suite(config.suite, config.suite_file or None)
    items = {i.id: i for i in suite.items}
    sources: list[_Source] = []
    requests: list[JudgeRequest] = []
    lab_values: dict[tuple[str, str], dict[str, float]] = {}
    for n, name in enumerate(config.responses):
        path = Path(name).expanduser()
        problems: list[str] = []
        lines = read_records(path, problems.append)
        if not lines:
            raise DataError(f"{path} holds no response lines ({problems[0] if problems else 'empty file'}).")
        explicit = config.score_models[n] if n < len(config.score_models) else ""
        model_key, lab = _lab_scores_for(config, path, lines, explicit)
        src = _Source(path, model_key, len(lines), problems=problems)
        counts = dict.fromkeys(("used", "unknown_ids", "failed_generations", "no_lab_judgment", "lab_failed",
                                "lab_incomplete", "duplicates"), 0)
        for obj in lines:
            item_id = str(obj.get("id", ""))
            item, response, lab_obj = items.get(item_id), obj.get("response"), lab.get(item_id)
            if item is None:
                counts["unknown_ids"] += 1
            elif (model_key, item_id) in lab_values:
                counts["duplicates"] += 1
            elif not isinstance(response, str) or _ERROR.match(response):
                counts["failed_generations"] += 1
            elif lab_obj is None:
                counts["no_lab_judgment"] += 1
            elif _lab_failed(lab_obj):
                counts["lab_failed"] += 1
            elif not all(isinstance(lab_obj.get(k), (int, float)) and not isinstance(lab_obj.get(k), bool)
                         for k in keys):
                counts["lab_incomplete"] += 1
            else:
                counts["used"] += 1
                lab_values[(model_key, item_id)] = {k: float(lab_obj[k]) for k in keys}
                requests.append(JudgeRequest((model_key, item_id),
                                             judge_messages(rubric, module.judge_fields(item), response)))
        src.counts = counts
        sources.append(src)
    if not requests:
        raise DataError(f"No response in {', '.join(s.path.name for s in sources)} has both a usable response and a "
                        f"judgment in {Path(config.scores).name} for {config.suite}: "
                        f"{'; '.join(f'{s.path.name}: {s.counts}' for s in sources)}. Check the files belong "
                        "together (the same benchmark and model).")
    # Everything that can refuse was checked above: only now is a (possibly large) local judge loaded.
    if judge is None:
        if config.judge is None:
            raise ConfigError("Choose the judge to calibrate: --judge local:MODEL or api:URL.")
        judge = make_judge(config.judge, store=token_store)
    retries = config.judge.retries if config.judge else 3
    backoff = config.judge.backoff_s if config.judge else 2.0
    identity = public_identity(judge.identity())
    results = judge_requests(judge, keys, requests, retries=retries, backoff_s=backoff, on_judgment=lambda j: None,
                             suite=config.suite, sleep=sleep, report=report, cancel=cancel)
    record = _record(config, suite.source, identity, rubric.sha256(), sources, lab_values, results)
    return CalibrationResult(record, save_calibration(record) if record["judged_ok"] else None)


def _record(config: CalibrationConfig, suite_source: str, identity: dict[str, Any], rubric_sha256: str,
            sources: list[_Source], lab_values: dict[tuple[str, str], dict[str, float]],
            results: list[Judgment]) -> dict[str, Any]:
    module = suite_module(config.suite)
    keys = module.RUBRIC.keys
    ours = {j.key: j for j in results}
    ok = [k for k in lab_values if ours.get(k) is not None and ours[k].status == "ok"]
    dims = {}
    for dim in keys:
        est = agreement([lab_values[k][dim] for k in ok], [ours[k].scores[dim] for k in ok],
                        replicates=config.replicates, seed=config.seed, level=config.level)
        dims[dim] = est.as_dict()
    refusal: dict[str, Any] | None = None
    rule = getattr(module, "REFUSAL", None)
    if rule is not None:
        dim, threshold = rule
        table = confusion([lab_values[k][dim] >= threshold for k in ok], [ours[k].scores[dim] >= threshold for k in ok])
        refusal = {**table.as_dict(), "rule": f"refusal when {dim} is {threshold:g} or more; otherwise no refusal"}
    failed = [j for j in results if j.status != "ok"]
    scores_path = Path(config.scores).expanduser()
    return {
        "format": FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "suite": config.suite,
        "judge": identity,
        "rubric_sha256": rubric_sha256,
        "questions": {"source": suite_source},
        "reference": {
            "scores_file": str(scores_path), "scores_file_name": scores_path.name,
            "scores_sha256": file_sha256(scores_path),
            "responses": [{"path": str(s.path), "sha256": file_sha256(s.path), "model_key": s.model_key,
                           "lines": s.lines, **s.counts, "problems": s.problems[:20]} for s in sources],
        },
        "items": len(lab_values),
        "judged_ok": len(ok),
        "judge_failed": len(failed),
        "judge_error": failed[-1].error[:300] if failed else "",
        "bootstrap": {"unit": "items", "replicates": config.replicates, "seed": config.seed,
                      "level": config.level, "method": "percentile"},
        "dimensions": dims,
        "refusal": refusal,
        "pairs": [{"model": k[0], "id": k[1], "lab": lab_values[k],
                   "ours": ours[k].scores if k in ours else {}, "status": ours[k].status if k in ours else "missing",
                   "error": ours[k].error if k in ours else ""} for k in lab_values],
    }
