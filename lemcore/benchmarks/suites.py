"""Benchmark suites: read a question file in any of the usual formats, subsample it reproducibly, fetch it.

A suite's own module (gsm8k.py, truthfulqa.py, …; the file name is the suite id) knows its fields, prompt
and scoring; this module does what they share. Files are read as JSONL (the lab's 50-item files and most
exports), a JSON list, CSV (TruthfulQA's original release) or Parquet (the dataset hub; needs pyarrow). Every
suite records the sha256 of the bytes it was read from, so results can never silently mix question files.
When a suite's file cannot be fetched or read, the error says what the file must hold: the suite's fields and
one example line (`FILE_EXAMPLE` in its module, see `file_format`).
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from lemcore.errors import ConfigError, DataError, DownloadError
from lemcore.prompts import prompt_set_hash

SUITE_IDS = ("gsm8k", "truthfulqa", "do_not_answer", "toxigen", "ethics", "truthfulqa_mc")


@dataclass(frozen=True)
class BenchItem:
    id: str
    question: str  # the text put to the model: a question, a request or a statement
    reference: dict[str, Any] = field(default_factory=dict)  # what scoring needs (expected answer, risk area…)
    stratum: str = ""  # the group used for stratified subsampling (category, risk area, target group, domain)


@dataclass(frozen=True)
class HubSource:
    repo: str  # a dataset repo on the hub
    pattern: str  # which file(s) in it hold the split we use
    note: str = ""


@dataclass(frozen=True)
class Suite:
    id: str
    items: tuple[BenchItem, ...]
    source: str  # the file (or folder) it was read from
    sha256: str  # of those bytes
    total: int  # items in the file before subsampling
    subsample: dict[str, Any] | None = None  # {n, seed, stratified} when subsampled

    def provenance(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256, "total_in_file": self.total,
                "subsample": self.subsample, "items": len(self.items), "item_ids": [i.id for i in self.items]}


class SuiteDownloadError(DownloadError):
    """A suite's questions could not be fetched. `str()` gives the advice for the command line;
    `for_window` says the same without command-line flags, for the app."""

    def __init__(self, message: str, for_window: str) -> None:
        super().__init__(message)
        self.for_window = for_window


def suite_module(suite_id: str) -> ModuleType:
    if suite_id not in SUITE_IDS:
        raise ConfigError(f"Unknown benchmark '{suite_id}'. Choose one of: {', '.join(SUITE_IDS)}.")
    return importlib.import_module(f"lemcore.benchmarks.{suite_id}")


def file_format(suite_id: str) -> str:
    """What a question file for the suite must hold, in one sentence ending with one example line."""
    module = suite_module(suite_id)
    return (f"A {module.TITLE} question file has one JSON object per line with the fields {module.FIELDS}, "
            f"for example: {module.FILE_EXAMPLE}")


def guess_suite_id(name: str) -> str | None:
    """The suite a lab `benchmark` value or a file name points at (gsm8k.jsonl, truthfulqa_lek.jsonl…)."""
    low = name.lower().replace("-", "_")
    for suite_id in sorted(SUITE_IDS, key=len, reverse=True):
        if suite_id in low or suite_id.replace("_", "") in low.replace("_", ""):
            return suite_id
    return None


# -- reading ---------------------------------------------------------------------------------------------
OnBadRecord = Callable[[str], None]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"The question file {path} does not exist. Check the path.") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder; give the question file inside it.") from None
    except OSError as err:
        raise DataError(f"Cannot read the question file {path}: {err.strerror or err}.") from None


def _norm_key(key: str) -> str:
    return key.strip().lower().replace(" ", "_")


def read_records(path: Path, on_bad: OnBadRecord) -> list[dict[str, Any]]:
    """Every object in a question file, in file order. Bad lines go to `on_bad` and are skipped."""
    raw = _read(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path)
    try:
        text = raw.decode("utf-8-sig", errors="strict") if raw else ""
    except UnicodeDecodeError as err:  # a binary file (an archive, a Parquet file renamed .jsonl)
        raise DataError(f"{path} is not a text file (not UTF-8 at byte {err.start}).") from None
    if suffix == ".csv":
        try:
            return [{_norm_key(k): v for k, v in row.items() if k} for row in csv.DictReader(io.StringIO(text))]
        except csv.Error as err:
            raise DataError(f"{path} is not a readable CSV file ({err}).") from None
    if suffix == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path} is not valid JSON (line {err.lineno}: {err.msg}).") from None
        if not isinstance(doc, list):
            raise DataError(f"{path} must hold a JSON list of questions (or use JSONL, one per line).")
        out = [o for o in doc if isinstance(o, dict)]
        if len(out) != len(doc):
            on_bad(f"{path}: {len(doc) - len(out)} entries are not JSON objects; skipped")
        return out
    records = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            on_bad(f"{path}:{n}: not valid JSON ({err.msg})")
            continue
        if isinstance(obj, dict):
            records.append(obj)
        else:
            on_bad(f"{path}:{n}: not a JSON object")
    return records


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq  # optional: only hub downloads are Parquet
    except ImportError:
        raise DataError(f"{path} is a Parquet file, which needs pyarrow: `pip install pyarrow`, or convert it "
                        "to JSONL and pass that file instead.") from None
    try:
        return list(pq.read_table(path).to_pylist())
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path} is not a readable Parquet file ({type(err).__name__}).") from None


def file_sha256(path: Path) -> str:
    if path.is_dir():

        return prompt_set_hash(path)
    return hashlib.sha256(_read(path)).hexdigest()


def build_items(module: ModuleType, records: list[dict[str, Any]], source: str,
                on_bad: OnBadRecord) -> list[BenchItem]:
    """Parse records with the suite's `parse`; items without an id get `<PREFIX>_<n>` by position."""
    items: list[BenchItem] = []
    seen: set[str] = set()
    for n, obj in enumerate(records, start=1):
        try:
            item = module.parse(obj, f"{module.ID_PREFIX}_{n:03d}")
        except (ValueError, TypeError, KeyError) as err:
            on_bad(f"{source}: record {n}: {err}")
            continue
        if item.id in seen:
            on_bad(f"{source}: record {n}: id {item.id} is used twice; kept the first")
            continue
        seen.add(item.id)
        items.append(item)
    return items


def load_suite(suite_id: str, path: str | Path | None = None, *, n: int | None = None, seed: int = 0,
               stratify: bool = True, on_bad: OnBadRecord | None = None) -> Suite:
    """Read a suite from a file (or, with no path, the hub copy in the local cache / the seeds folder)."""
    module = suite_module(suite_id)
    problems: list[str] = []
    report = on_bad or problems.append
    if path is None or str(path) == "":
        path = module.default_path() if hasattr(module, "default_path") else fetch_suite(suite_id)
    path = Path(path).expanduser()
    try:
        if hasattr(module, "load_items"):
            items = module.load_items(path, report)  # the ethics P-files have a loader of their own
        else:
            items = build_items(module, read_records(path, report), str(path), report)
    except DataError as err:
        if not path.is_file():  # a missing file or an empty folder: the format is not the problem
            raise
        raise DataError(f"{err} {file_format(suite_id)}") from None
    if not items:
        detail = f" First problem: {problems[0]}" if problems else ""
        raise DataError(f"{path} holds no usable {suite_id} questions.{detail} Check that it is the right file "
                        f"for this benchmark. {file_format(suite_id)}")
    total = len(items)
    chosen = subsample(items, n, seed=seed, stratify=stratify) if n else items
    info = {"n": n, "seed": seed, "stratified": stratify} if n and n < total else None
    return Suite(suite_id, tuple(chosen), str(path), file_sha256(path), total, info)


def subsample(items: list[BenchItem], n: int | None, *, seed: int = 0, stratify: bool = True) -> list[BenchItem]:
    """`n` items, the same for the same seed. Stratified: every stratum is represented (when n allows),
    the rest shared out in proportion to stratum size. File order is kept."""
    if n is None or n >= len(items):
        return list(items)
    if n < 1:
        raise ConfigError("A subsample needs at least one item.")
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item.stratum if stratify else "", []).append(i)
    if len(groups) > n:  # too few slots for every stratum: a plain random sample
        groups = {"": list(range(len(items)))}
    quota = {k: 1 for k in groups} if len(groups) > 1 else {k: 0 for k in groups}
    spare = n - sum(quota.values())
    total = len(items)
    shares = {k: spare * len(v) / total for k, v in groups.items()}
    for k in groups:
        quota[k] += min(int(shares[k]), len(groups[k]) - quota[k])
    left = n - sum(quota.values())
    # Largest remainder first; ties broken by stratum name so the result does not depend on dict order.
    for k in sorted(groups, key=lambda k: (-(shares[k] - int(shares[k])), k)):
        if left == 0:
            break
        if quota[k] < len(groups[k]):
            quota[k] += 1
            left -= 1
    for k in sorted(groups):  # still short (small strata full): fill from the largest
        while left and quota[k] < len(groups[k]):
            quota[k] += 1
            left -= 1
    picked: list[int] = []
    for k in sorted(groups):
        rng = random.Random(f"{seed}:{k}")  # str seeds hash the same way in every process
        picked += rng.sample(groups[k], quota[k])
    return [items[i] for i in sorted(picked)]


# -- fetching from the dataset hub -----------------------------------------------------------------------
def fetch_suite(suite_id: str, *, cache_dir: str | Path | None = None, endpoint: str | None = None) -> Path:
    """The suite's file from the dataset hub, via huggingface_hub into its standard cache (reused offline)."""
    module = suite_module(suite_id)
    source: HubSource | None = getattr(module, "HUB", None)
    if source is None:
        raise ConfigError(f"{suite_id} is not on the dataset hub; give its file.")
    from huggingface_hub import errors as hub_errors  # lazy: the hub client loads only for downloads
    from huggingface_hub import snapshot_download  # lazy: the hub client loads only for downloads

    title, fmt = module.TITLE, file_format(suite_id)
    give = f"or pass a file you downloaded yourself: --suite {suite_id}=PATH. {fmt}"
    choose = f"or choose a question file for it. {fmt}"
    try:
        folder = Path(snapshot_download(source.repo, repo_type="dataset", allow_patterns=[source.pattern],
                                        cache_dir=cache_dir, endpoint=endpoint, etag_timeout=10))
    except hub_errors.GatedRepoError:
        raise SuiteDownloadError(
            f"{source.repo} is gated: accept its terms on the hub's web page, log in with `hf auth login` and "
            f"try again, {give}",
            f"{source.repo} can only be downloaded after accepting its terms on the dataset hub's web page and "
            f"signing in to the hub on this computer; {choose}") from None
    except (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled):
        raise SuiteDownloadError(
            f"The {title} questions ({source.repo}) are not in the local cache and the dataset hub cannot be "
            f"reached (offline, or HF_HUB_OFFLINE is set). Connect and try again, {give}",
            f"The {title} questions ({source.repo}) are not saved on this computer and the dataset hub cannot "
            f"be reached. Connect and try again, {choose}") from None
    except (hub_errors.HfHubHTTPError, OSError) as err:
        raise SuiteDownloadError(
            f"Fetching the {title} questions ({source.repo}) from the dataset hub failed "
            f"({type(err).__name__}). Try again later, {give}",
            f"Fetching the {title} questions ({source.repo}) from the dataset hub failed. Try again later, "
            f"{choose}") from None
    files = sorted(p for p in folder.glob(source.pattern) if p.is_file())
    if not files:
        raise SuiteDownloadError(
            f"{source.repo} has no file matching {source.pattern}; the dataset's layout may have changed. "
            f"Pass a local file instead: --suite {suite_id}=PATH. {fmt}",
            f"{source.repo} no longer holds the {title} questions where expected; choose a question file for "
            f"{title}. {fmt}")
    return files[0]
