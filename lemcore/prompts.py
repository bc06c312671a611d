"""Loaders for prompt sets: gold prompts (JSONL), expansion prompts (JSONL) and evaluation P-files (JSON).

They read the LEM lab's files unchanged and are tolerant by design: a bad line or entry is reported to
`on_bad_line` (or logged) and skipped, and loading carries on. Only a file that cannot be read at all
raises DataError. Tolerated quirks: a UTF-8 BOM, CRLF line ends, blank lines, extra keys, ids that are
ints, floats or null, and a missing domain.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lemcore.errors import DataError
from lemcore.events import Event

log = logging.getLogger(__name__)

_BOM = b"\xef\xbb\xbf"
_P_FILE = re.compile(r"^P(\d+)-P?\d+\.json$", re.IGNORECASE)


@dataclass(frozen=True)
class PromptItem:
    idx: int
    seed_id: str
    domain: str
    prompt: str
    voice: str = ""
    region: str = ""


@dataclass(frozen=True)
class BadLine(Event):
    path: Path
    line_no: int  # 1-based, as editors show it
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line_no}: {self.reason}"


OnBadLine = Callable[[BadLine], None]


def _log_bad_line(bad: BadLine) -> None:
    log.warning("Skipped bad prompt line %s", bad)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(
            f"The prompt file '{path}' does not exist. Check the path or pick another file."
        ) from None
    except IsADirectoryError:
        raise DataError(f"'{path}' is a folder; pick a prompt file inside it.") from None
    except OSError as exc:
        raise DataError(f"Cannot read the prompt file '{path}': {exc.strerror or exc}.") from None


def _id_text(value: Any) -> str | None:
    """An id as text: the lab's ids are str, int or float (12.0 means 12); None when unusable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (str, int)):
        return str(value).strip() or None
    return None


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else "" if value is None else str(value)


def _prompt_of(obj: dict[str, Any]) -> str | None:
    prompt = obj.get("prompt")
    # Kept verbatim (not stripped): the generator sends exactly the file's text.
    return prompt if isinstance(prompt, str) and prompt.strip() else None


def _jsonl_objects(path: Path, on_bad_line: OnBadLine) -> Iterator[tuple[int, dict[str, Any]]]:
    """(0-based line number, object) per usable line; blank lines are skipped silently."""
    raw = _read_bytes(path)
    raw = raw.removeprefix(_BOM)
    lines = raw.split(b"\n")
    if lines and not lines[-1].strip():
        lines.pop()  # the empty piece after the final newline is not a line
    for n, chunk in enumerate(lines):
        chunk = chunk.rstrip(b"\r")
        if not chunk.strip():
            continue
        try:
            obj = json.loads(chunk.decode("utf-8"))
        except UnicodeDecodeError as exc:
            on_bad_line(BadLine(path, n + 1, f"not UTF-8 (bad byte at column {exc.start + 1})"))
            continue
        except json.JSONDecodeError as exc:
            on_bad_line(BadLine(path, n + 1, f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        if not isinstance(obj, dict):
            on_bad_line(BadLine(path, n + 1, f"expected a JSON object, found {type(obj).__name__}"))
            continue
        yield n, obj


def load_gold_prompts(path: str | Path, *, on_bad_line: OnBadLine | None = None) -> list[PromptItem]:
    """Lab gold format `{seed_id, domain, voice, prompt}` per line.

    `idx` is the 0-based line number counting every line, blank and bad ones included, so it matches the
    lab generator's index (it has no idx field and numbers lines) and finished work stays aligned.
    """
    path = Path(path)
    report = on_bad_line or _log_bad_line
    items: list[PromptItem] = []
    for n, obj in _jsonl_objects(path, report):
        prompt = _prompt_of(obj)
        seed_id = _id_text(obj.get("seed_id"))
        if prompt is None:
            report(BadLine(path, n + 1, "no 'prompt' text"))
        elif seed_id is None:
            # Without a seed id the example cannot be kept out of other splits with its siblings.
            report(BadLine(path, n + 1, "no usable 'seed_id'"))
        else:
            items.append(
                PromptItem(
                    n,
                    seed_id,
                    _text(obj.get("domain")),
                    prompt,
                    _text(obj.get("voice")),
                    _text(obj.get("region")),
                )
            )
    return items


def _int_idx(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def load_expansion_prompts(path: str | Path, *, on_bad_line: OnBadLine | None = None) -> list[PromptItem]:
    """Lab expansion format `{idx, seed_id, region, domain, prompt}` per line; idx comes from the field.

    A repeated idx keeps the first line, as the lab's consolidation keeps the first record per idx.
    """
    path = Path(path)
    report = on_bad_line or _log_bad_line
    items: list[PromptItem] = []
    first_line: dict[int, int] = {}
    for n, obj in _jsonl_objects(path, report):
        idx = _int_idx(obj.get("idx"))
        prompt = _prompt_of(obj)
        seed_id = _id_text(obj.get("seed_id"))
        if idx is None:
            report(BadLine(path, n + 1, "no whole-number 'idx'"))
        elif idx in first_line:
            report(BadLine(path, n + 1, f"idx {idx} repeats line {first_line[idx]}; kept the first"))
        elif prompt is None:
            report(BadLine(path, n + 1, "no 'prompt' text"))
        elif seed_id is None:
            report(BadLine(path, n + 1, "no usable 'seed_id'"))
        else:
            first_line[idx] = n + 1
            items.append(
                PromptItem(idx, seed_id, _text(obj.get("domain")), prompt, region=_text(obj.get("region")))
            )
    return items


def eval_prompt_files(path_or_dir: str | Path) -> list[Path]:
    """The P-files a path names: the file itself, or a folder's `P<a>-P<b>.json` files in numeric order."""
    path = Path(path_or_dir)
    if not path.is_dir():
        return [path]
    found = [(int(m.group(1)), p) for p in path.iterdir() if (m := _P_FILE.match(p.name)) and p.is_file()]
    if not found:
        raise DataError(f"No evaluation prompt files (P01-P20.json …) in '{path}'. Pick the seeds folder.")
    return [p for _, p in sorted(found)]


def _json_array_entries(path: Path) -> list[tuple[int, Any]]:
    """(1-based line, entry) for each element of a file holding one JSON list. Raises DataError."""
    raw = _read_bytes(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"The prompt file '{path}' is not UTF-8 (bad byte at offset {exc.start}).") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"The prompt file '{path}' is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}). "
            "Fix the file or remove it from the set."
        ) from None
    if not isinstance(doc, list):
        raise DataError(
            f"The prompt file '{path}' must hold a JSON list of prompts, not {type(doc).__name__}."
        )
    # The file is valid, so re-walk it element by element only to learn where each entry starts.
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    entries: list[tuple[int, Any]] = []
    for _ in doc:
        while text[pos] in " \t\r\n,":
            pos += 1
        line = text.count("\n", 0, pos) + 1
        value, pos = decoder.raw_decode(text, pos)
        entries.append((line, value))
    return entries


def _flatten(entry: Any) -> list[Any]:
    # A few lab files nest scenarios under `{context, region, scenarios}`; the group's region/domain apply.
    if isinstance(entry, dict) and "prompt" not in entry and isinstance(entry.get("scenarios"), list):
        shared = {k: entry[k] for k in ("region", "domain") if k in entry}
        return [{**shared, **s} if isinstance(s, dict) else s for s in entry["scenarios"]]
    return [entry]


def load_eval_prompts(path_or_dir: str | Path, *, on_bad_line: OnBadLine | None = None) -> list[PromptItem]:
    """Evaluation P-files (JSON lists of `{id, domain, prompt}`), ours or the lab's.

    `idx` numbers every entry met in file order, bad ones included. A null id becomes `<file stem>#<n>`;
    an id seen before is reported and skipped, since results are keyed by id.
    """
    report = on_bad_line or _log_bad_line
    items: list[PromptItem] = []
    seen: dict[str, str] = {}
    idx = 0
    for path in eval_prompt_files(path_or_dir):
        for n, (line, entry) in enumerate(_json_array_entries(path), start=1):
            for obj in _flatten(entry):
                idx += 1
                if not isinstance(obj, dict):
                    report(BadLine(path, line, f"entry {n} is not a JSON object"))
                    continue
                prompt = _prompt_of(obj)
                raw_id = obj.get("id")
                seed_id = _id_text(raw_id) if raw_id is not None else f"{path.stem}#{n}"
                if prompt is None:
                    report(BadLine(path, line, f"entry {n} has no 'prompt' text"))
                elif seed_id is None:
                    report(BadLine(path, line, f"entry {n} has an unusable 'id' ({raw_id!r})"))
                elif seed_id in seen:
                    report(BadLine(path, line, f"id '{seed_id}' already used at {seen[seed_id]}"))
                else:
                    seen[seed_id] = f"{path.name}:{line}"
                    items.append(
                        PromptItem(
                            idx - 1,
                            seed_id,
                            _text(obj.get("domain")),
                            prompt,
                            region=_text(obj.get("region")),
                        )
                    )
    return items


def prompt_set_hash(path: str | Path) -> str:
    """sha256 hex of a prompt set: a file's bytes, or a folder's P-files (name, length, bytes) in order."""
    path = Path(path)
    if not path.is_dir():
        return hashlib.sha256(_read_bytes(path)).hexdigest()
    digest = hashlib.sha256()
    for file in eval_prompt_files(path):
        raw = _read_bytes(file)
        name = file.name.encode("utf-8")
        digest.update(len(name).to_bytes(8, "big") + name + len(raw).to_bytes(8, "big"))
        digest.update(raw)
    return digest.hexdigest()
