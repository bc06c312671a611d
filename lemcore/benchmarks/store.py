"""The run folder: how results are laid out on disk, read back, and summarised with intervals.

    <run>/run.json                  provenance: model/adapter hashes, sampling, seed, suites (file sha256 and
                                    item ids), instructions, library versions, judges, one entry per session
    <run>/<suite>.jsonl             one line per (item, sample): exact messages and chat-templated prompt,
                                    response, tokens, timings, truncation, and the GSM8K extraction
    <run>/<suite>.judgments.jsonl   one line per judgment: ok with scores, or failed with the reason and the
                                    judge's raw reply; tagged with the judge's identity and rubric hash
    <run>/summary.json              per suite and metric: mean and 95% interval (method named, see
                                    stats.py), and every count that qualifies it (failed generations,
                                    truncations, failed judgments, input lines that could not be read);
                                    for judged suites, the judge's stored calibration against the lab's
                                    judge (`judge_calibration`, calibration_store.py) or None;
                                    for imports with the lab's scores, `versus_original`: how many items
                                    the re-scoring changed (exact counts, no interval: same responses)

Lines are appended as results arrive, so a crash loses only work in flight; later lines for the same
(item, sample) win, so re-scoring appends instead of rewriting.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from lemcore.benchmarks.calibration_store import calibration_brief, calibration_for
from lemcore.benchmarks.stats import BOOTSTRAP, CLOPPER_PEARSON, mean_interval, rescoring_changes
from lemcore.benchmarks.suites import suite_module
from lemcore.errors import DataError
from lemcore.folders import new_stamped_folder
from lemcore.settings import data_dir

RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
FORMAT = "lem-bench/1"


def new_run_dir(label: str, *, prefix: str = "") -> Path:
    """A new, empty run folder under <data folder>/benchmarks, named `<prefix><time>-<label>`.

    Named to the second, so a run started in the same second as another gets `-2`, `-3`, ...: a folder that
    exists always holds another run, and writing into it would resume or mix that run. Created here with an
    atomic mkdir, so two processes never get the same folder. Resuming is only ever asked for explicitly,
    by passing an existing folder (`lem bench --run`, `BenchConfig.run_dir`).
    """
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "-", label).strip("-")[:60] or "run"
    return new_stamped_folder(data_dir() / "benchmarks", slug, prefix=prefix)


def rows_path(run_dir: Path, suite: str) -> Path:
    return run_dir / f"{suite}.jsonl"


def judgments_path(run_dir: Path, suite: str) -> Path:
    return run_dir / f"{suite}.judgments.jsonl"


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


def append_jsonl(path: Path, obj: dict[str, Any]) -> None:
    data = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
    with path.open("ab+") as f:
        f.seek(0, os.SEEK_END)
        if f.tell():
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":  # a line cut by a crash: end it, so this record starts a line of its own
                data = b"\n" + data
        f.write(data)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash: its (item, sample) is simply redone
        if isinstance(obj, dict):
            out.append(obj)
    return out


def read_run(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir).expanduser() / RUN_FILE
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{Path(run_dir)} is not a benchmark run folder (no {RUN_FILE}). Give a folder made by "
                        "`lem bench` or `lem score`.") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{path} cannot be read ({err}).") from None
    if run.get("format") != FORMAT:
        raise DataError(f"{path} has format {run.get('format')!r}; this version reads {FORMAT}.")
    return dict(run)


def list_runs(folder: str | Path | None = None) -> list[dict[str, Any]]:
    """Run folders under `folder` (default: <data folder>/benchmarks), newest first, for pickers and charts."""
    if folder is None:

        folder = data_dir() / "benchmarks"
    runs = []
    for path in Path(folder).glob(f"*/{RUN_FILE}"):
        try:
            run = read_run(path.parent)
        except DataError:
            continue
        runs.append({"path": path.parent, "label": run.get("label"), "kind": run.get("kind"),
                     "created": run.get("created", ""), "suites": list(run.get("suites", {})),
                     "has_summary": (path.parent / SUMMARY_FILE).is_file()})
    return sorted(runs, key=lambda r: str(r["created"]), reverse=True)


def latest_rows(run_dir: Path, suite: str) -> dict[tuple[str, int], dict[str, Any]]:
    return {(str(r["id"]), int(r.get("sample", 0))): r for r in read_jsonl(rows_path(run_dir, suite))
            if "id" in r}


def current_judgments(
    run_dir: Path, suite: str, judge: dict[str, Any] | None
) -> dict[tuple[str, int], dict[str, Any]]:
    """The latest judgment per (item, sample) made by the judge and rubric the run now uses."""
    if not judge:
        return {}
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for j in read_jsonl(judgments_path(run_dir, suite)):
        if j.get("judge") == judge.get("identity") and j.get("rubric_sha256") == judge.get("rubric_sha256"):
            out[(str(j["id"]), int(j.get("sample", 0)))] = j
    return out


def metric_values(run_dir: Path, suite: str, run: dict[str, Any] | None = None) -> dict[str, dict[str, list[float]]]:
    """{metric: {item id: [value per usable sample]}} for the statistics."""
    run = run or read_run(run_dir)
    module = suite_module(suite)
    rows = latest_rows(run_dir, suite)
    values: dict[str, dict[str, list[float]]] = {}

    def add(item_id: str, per_metric: dict[str, float]) -> None:
        for metric, v in per_metric.items():
            values.setdefault(metric, {}).setdefault(item_id, []).append(v)

    if not module.JUDGED:
        # Metrics that count a failed generation as a wrong answer, as the lab's scorer did (gsm8k's lab rule).
        failed_values = getattr(module, "FAILED_GENERATION_VALUES", {})
        for (item_id, _s), row in sorted(rows.items()):
            if row.get("status") == "ok" and row.get("score"):
                add(item_id, module.metric_values(row["score"]))
            elif row.get("status") == "failed_generation" and failed_values:
                add(item_id, dict(failed_values))
        return values
    judged = current_judgments(run_dir, suite, run.get("judges", {}).get(suite))
    for key, j in sorted(judged.items()):
        answer = rows.get(key)
        if answer is not None and answer.get("status") == "ok" and j.get("status") == "ok":
            add(key[0], module.metric_values(j["scores"]))
    return values


def binary_scale(suite: str, metric: str) -> float | None:
    """The full scale of a 0/1 metric (100 for a percentage), None for other metrics: which interval applies."""
    scales: dict[str, float] = getattr(suite_module(suite), "BINARY_METRICS", {})
    return scales.get(metric)


def summarize_suite(run_dir: Path, suite: str, run: dict[str, Any], *, n_boot: int, seed: int) -> dict[str, Any]:
    module = suite_module(suite)
    rows = latest_rows(run_dir, suite)
    ok = [r for r in rows.values() if r.get("status") == "ok"]
    values = metric_values(run_dir, suite, run)
    out: dict[str, Any] = {
        "title": module.TITLE,
        "items": len({k[0] for k in rows}),
        "rows": len(rows),
        "generation_failed": len(rows) - len(ok),
        "refused": sum(r.get("status") == "refused" for r in rows.values()),  # prompt beyond the context
        "truncated": sum(bool(r.get("truncated")) for r in ok),
        "tokens": sum(int(r.get("tokens") or 0) for r in ok),
        "generation_seconds": round(sum(float(r.get("seconds") or 0) for r in ok), 3),
        "metrics": {m: mean_interval(v, binary_scale=binary_scale(suite, m), n_boot=n_boot, seed=seed).as_dict()
                    for m, v in values.items()},
    }
    notes: dict[str, str] = getattr(module, "METRIC_NOTES", {})
    if notes:  # what each column counts (GSM8K: ours, strict, flexible, the lab's rule)
        out["metric_notes"] = {m: notes[m] for m in out["metrics"] if m in notes}
    source = (run.get("sources") or {}).get(suite) or {}
    if source.get("problems"):  # lines of an imported responses file that could not be read
        out["input_problems"] = {"count": int(source.get("problem_count") or len(source["problems"])),
                                 "first": list(source["problems"][:5])}
    if source.get("unknown_ids"):
        out["unknown_ids"] = {"count": int(source.get("unknown_count") or len(source["unknown_ids"])),
                              "first": list(source["unknown_ids"][:5])}
    if module.JUDGED:
        judge = run.get("judges", {}).get(suite)
        judged = current_judgments(run_dir, suite, judge)
        usable = [judged[k] for k in judged if rows.get(k, {}).get("status") == "ok"]
        out["judge"] = judge.get("identity") if judge else None
        # How far this judge agrees with the lab's (lem judge calibrate), to read its numbers by; None: unknown.
        calibration = calibration_for(out["judge"], suite, judge.get("rubric_sha256")) if judge else None
        out["judge_calibration"] = calibration_brief(calibration) if calibration else None
        out["judged_ok"] = sum(j.get("status") == "ok" for j in usable)
        out["judge_failed"] = sum(j.get("status") == "failed" for j in usable)
        out["not_judged"] = len(ok) - len(usable)
        failures = [j for j in usable if j.get("status") == "failed"]
        if failures:
            out["judge_error"] = str(failures[-1].get("error") or "")[:300]  # one reason, for the one-line report
    elif any("method" in (r.get("score") or {}) for r in ok):
        out["extraction_methods"] = dict(Counter(str(r.get("score", {}).get("method")) for r in ok))
    return out


def summarize_run(run_dir: str | Path, *, n_boot: int = 4000, seed: int = 0) -> dict[str, Any]:
    """Compute and write summary.json (it is derived: rows and judgments are the record)."""
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    summary = {
        "format": FORMAT,
        "label": run.get("label", run_dir.name),
        "model": run.get("model", {}).get("name"),
        "model_sha256": run.get("model", {}).get("sha256"),
        "adapter_sha256": (run.get("adapter") or {}).get("sha256"),
        "samples": run.get("samples"),
        "interval": {"method": f"{CLOPPER_PEARSON} for 0/1 metrics with one sample per item; otherwise "
                               f"{BOOTSTRAP} (items, then samples)", "replicates": n_boot, "seed": seed,
                     "level": 0.95},
        "suites": {s: summarize_suite(run_dir, s, run, n_boot=n_boot, seed=seed) for s in run.get("suites", {})},
    }
    if run.get("original"):
        summary["versus_original"] = _versus_original(run_dir, run, summary["suites"], n_boot=n_boot, seed=seed)
    write_json(run_dir / SUMMARY_FILE, summary)
    return summary


def nothing_scored_reason(suite_summary: dict[str, Any]) -> str:
    """Why a suite has no scores, in words (for "nothing could be scored: …")."""
    s = suite_summary
    if not s.get("rows"):
        return "there are no responses"
    if s.get("generation_failed", 0) >= s["rows"]:
        return f"all {s['rows']} responses are failed generations"
    if "judged_ok" in s:
        if s.get("judge_failed") and not s.get("judged_ok"):
            why = f" (last error: {s['judge_error']})" if s.get("judge_error") else ""
            return f"all {s['judge_failed']} judgments failed{why}"
        if s.get("not_judged") and not s.get("judge"):
            return "no judge was given: judge it with `lem score --run RUN --judge …`"
        if s.get("not_judged"):
            return f"{s['not_judged']} responses are not judged yet"
    return "no response produced a usable score"


def _versus_original(run_dir: Path, run: dict[str, Any], suites: dict[str, Any], *, n_boot: int,
                     seed: int) -> dict[str, Any]:
    """The lab's original per-item scores beside ours for the same responses. Nothing was sampled again, so the
    difference is exact: counts of items the re-scoring changed, not an interval."""
    out: dict[str, Any] = {}
    for suite, original in run["original"].items():
        ours = metric_values(run_dir, suite, run)
        entry: dict[str, Any] = {"file": original.get("file"), "model": original.get("model"), "metrics": {}}
        for metric, theirs in original.get("values", {}).items():
            mine = ours.get(metric, {})
            scale = binary_scale(suite, metric)
            changes = rescoring_changes(theirs, mine)
            entry["metrics"][metric] = {
                "original": mean_interval(theirs, binary_scale=scale, n_boot=n_boot, seed=seed).as_dict(),
                "rescored": mean_interval(mine, binary_scale=scale, n_boot=n_boot, seed=seed).as_dict(),
                "changes": changes.as_dict(),
                "verdict": changes.text() if changes.n_items else None,
                "nothing_scored": (None if mine else nothing_scored_reason(suites.get(suite, {}))),
            }
        out[suite] = entry
    return out
