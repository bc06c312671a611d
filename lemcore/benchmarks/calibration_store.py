"""Where judge calibrations are kept, and how to find the one for a judge: for showing beside judged numbers.

A calibration (made by `calibration.calibrate_judge`, `lem judge calibrate`) is one JSON file in
`<data folder>/judge-calibrations/`, holding the judge's identity (what `JudgeBackend.identity()` gives: kind,
model or server address, weights hash for a local model, reply length), the suite, the rubric's sha256 (our
rubric version), the lab's files it was measured against, and the agreement figures.

`calibration_for(identity, suite, rubric_sha256)` returns the newest calibration of that judge, suite and
rubric, or None: the Results page and `summarize_run` call it with what a run folder recorded
(`run.json` "judges" -> identity and rubric_sha256).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from lemcore.generate.api import public_url
from lemcore.settings import data_dir

FORMAT = "lem-judge-calibration/1"
FOLDER = "judge-calibrations"


def calibrations_dir() -> Path:
    return data_dir() / FOLDER


def public_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """The identity as stored: a server address without secrets."""
    out = dict(identity)
    if isinstance(out.get("url"), str):
        out["url"] = public_url(out["url"])
    return out


def judge_key(identity: dict[str, Any]) -> dict[str, Any]:
    """What makes two judges the same: the weights (their hash, when known) or the name on a server, and the
    settings that change its replies. The name a local model was given (folder, catalog id) does not count."""
    ident = public_identity(identity)
    key = {k: v for k, v in ident.items() if k not in ("model", "sha256", "path")}
    if ident.get("kind") == "local" and ident.get("sha256"):
        key["weights"] = ident["sha256"]
    else:
        key["model"] = ident.get("model")
    return key


def save_calibration(record: dict[str, Any]) -> Path:
    """Write a new calibration file (never over an earlier one) and return its path."""
    folder = calibrations_dir()
    folder.mkdir(parents=True, exist_ok=True)
    judge = record.get("judge") or {}
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "-", Path(str(judge.get("model") or judge.get("kind") or "judge")).name)
    base = f"{datetime.now():%Y%m%d-%H%M%S}-{record.get('suite', 'suite')}-{slug.strip('-')[:40] or 'judge'}"
    data = json.dumps(record, indent=2, ensure_ascii=False)
    n = 1
    while True:
        path = folder / (f"{base}.json" if n == 1 else f"{base}-{n}.json")
        try:
            with path.open("x", encoding="utf-8") as f:  # exclusive: two calibrations never share a file
                f.write(data)
            return path
        except FileExistsError:
            n += 1


def stored_calibrations(identity: dict[str, Any] | None = None, suite: str | None = None,
                        rubric_sha256: str | None = None) -> list[dict[str, Any]]:
    """Stored calibrations, newest first, those of one judge / suite / rubric when given. Each has `path`."""
    folder = calibrations_dir()
    if not folder.is_dir():
        return []
    want = judge_key(identity) if identity is not None else None
    found = []
    for path in folder.glob("*.json"):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            continue
        if suite is not None and record.get("suite") != suite:
            continue
        if rubric_sha256 is not None and record.get("rubric_sha256") != rubric_sha256:
            continue
        if want is not None and judge_key(record.get("judge") or {}) != want:
            continue
        found.append({**record, "path": str(path)})
    return sorted(found, key=lambda r: (str(r.get("created", "")), r["path"]), reverse=True)


def calibration_for(identity: dict[str, Any] | None, suite: str,
                    rubric_sha256: str | None = None) -> dict[str, Any] | None:
    """The newest calibration of this judge on this suite (and rubric, when given), or None."""
    if not identity:
        return None
    found = stored_calibrations(identity, suite, rubric_sha256)
    return found[0] if found else None


def calibration_brief(record: dict[str, Any]) -> dict[str, Any]:
    """The figures to show beside a judged number (no per-item pairs)."""
    dims = {k: {"n": d.get("n"), "spearman": d.get("spearman", {}).get("value"),
                "spearman_interval": [d.get("spearman", {}).get("low"), d.get("spearman", {}).get("high")],
                "kendall_tau_b": d.get("kendall_tau_b", {}).get("value"),
                "kendall_interval": [d.get("kendall_tau_b", {}).get("low"), d.get("kendall_tau_b", {}).get("high")],
                "mean_abs_diff": d.get("mean_abs_diff", {}).get("value")}
            for k, d in (record.get("dimensions") or {}).items()}
    refusal = record.get("refusal")
    return {"path": record.get("path"), "created": record.get("created"),
            "reference": (record.get("reference") or {}).get("scores_file_name"), "dimensions": dims,
            "refusal_agreement": refusal.get("agreement") if isinstance(refusal, dict) else None,
            "text": describe_calibration(record)}


def _num(x: Any, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) else "—"


def describe_calibration(record: dict[str, Any]) -> str:
    """One line: 'agreement with the lab's judge on 50 items: truthfulness Spearman 0.71 [0.55, 0.83], …'."""
    parts = []
    n = 0
    for key, d in (record.get("dimensions") or {}).items():
        s = d.get("spearman") or {}
        n = max(n, int(d.get("n") or 0))
        parts.append(f"{key} Spearman {_num(s.get('value'))} [{_num(s.get('low'))}, {_num(s.get('high'))}], "
                     f"mean |difference| {_num((d.get('mean_abs_diff') or {}).get('value'))}")
    ref = (record.get("reference") or {}).get("scores_file_name") or "the lab's scores"
    refusal = record.get("refusal")
    tail = ""
    if isinstance(refusal, dict) and refusal.get("agreement") is not None:
        tail = f"; refusal agreement {100 * refusal['agreement']:.0f}%"
    return f"agreement with {ref} on {n} items: " + "; ".join(parts) + tail

