"""Check a training data folder before any model work: per-line errors, counts, and warnings.

Formats are mlx-lm's (chosen per file by its first example, as mlx-lm does): chat `{"messages": [...]}`,
completions `{"prompt", "completion"}` and text `{"text"}`. Without a tokenizer only the structure is checked
(fast, for a form); with one, every example is tokenized exactly as mlx-lm's datasets do, which gives token
counts and catches chat templates that reject an example. The engine reuses those tokenized datasets.
"""

from __future__ import annotations

import hashlib
import json
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lemcore.errors import DataError

SPLITS = ("train", "valid", "test")
ROLES = ("system", "user", "assistant", "tool")
MAX_ERRORS_PER_FILE = 20


@dataclass(frozen=True)
class SplitStats:
    name: str
    path: Path
    examples: int
    tokens: int | None = None  # None when no tokenizer was given
    trained_tokens: int | None = None  # tokens the loss covers (after prompt masking and truncation)
    longest: int | None = None
    over_max_length: int = 0
    untrainable: int = 0  # examples with no reply token left after prompt masking and truncation


@dataclass(frozen=True)
class DataReport:
    folder: Path
    format: str  # "chat", "completions", "text" or "" when unknown
    splits: dict[str, SplitStats]
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    fingerprint: str = ""  # sha256 over the split files: a resumed run must see the same data

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_for_errors(self) -> None:
        if self.errors:
            raise DataError("The training data has problems:\n" + "\n".join(self.errors))


@dataclass
class _Split:
    name: str
    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # file line number of each record
    format: str = ""


def _line_format(obj: dict[str, Any]) -> str:
    if "prompt" in obj and "completion" in obj:
        return "completions"
    if "messages" in obj:
        return "chat"
    if "text" in obj:
        return "text"
    return ""


def _line_problem(obj: Any, fmt: str, mask_prompt: bool) -> str | None:
    """What is wrong with one example of format `fmt`, or None."""
    if not isinstance(obj, dict):
        return "each line must be a JSON object like {\"messages\": [...]}"
    found = _line_format(obj)
    if not found:
        return "no messages, prompt/completion or text field (mlx-lm's chat, completions or text format)"
    if found != fmt:
        return f"this line is {found} data but the file is {fmt} data (from its first example); use one format"
    if fmt == "chat":
        messages = obj["messages"]
        if not isinstance(messages, list) or not messages:
            return "messages must be a non-empty list of {\"role\", \"content\"} objects"
        for i, msg in enumerate(messages, 1):
            if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
                return f"message {i} has no role"
            if msg["role"] not in ROLES:
                return f"message {i} has role {msg['role']!r}; use one of {', '.join(ROLES)}"
            if not isinstance(msg.get("content"), str) and not msg.get("tool_calls"):
                return f"message {i} ({msg['role']}) has no text content"
        replies = [m for m in messages if m["role"] == "assistant"]
        if not replies:
            return "no assistant message"
        if not any((m.get("content") or "").strip() or m.get("tool_calls") for m in replies):
            return "the assistant message is empty"
        if mask_prompt and messages[-1]["role"] != "assistant":
            return "the last message must be the assistant's reply (mask-prompt trains only on that one)"
    elif fmt == "completions":
        if not isinstance(obj["prompt"], str) or not isinstance(obj["completion"], str):
            return "prompt and completion must both be text"
        if not obj["completion"].strip():
            return "the completion is empty"
    elif not isinstance(obj["text"], str) or not obj["text"].strip():
        return "text must be non-empty text"
    return None


def _read_split(name: str, path: Path, mask_prompt: bool, errors: list[str], warnings: list[str]) -> _Split:
    split = _Split(name, path)
    file_errors: list[str] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        errors.append(f"{path.name}: not UTF-8 text. Save it as UTF-8 JSON lines.")
        return split
    except OSError as err:
        errors.append(f"{path.name}: cannot be read ({err.strerror or err}).")
        return split
    blank = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            blank.append(number)
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as err:
            file_errors.append(f"{path.name} line {number}: not valid JSON ({err.msg} at column {err.colno})")
            continue
        if not split.format and isinstance(obj, dict):
            split.format = _line_format(obj)
        problem = _line_problem(obj, split.format or "chat", mask_prompt)
        if problem:
            file_errors.append(f"{path.name} line {number}: {problem}")
            continue
        split.records.append(obj)
        split.lines.append(number)
    if blank:
        where = ", ".join(map(str, blank[:5])) + (" …" if len(blank) > 5 else "")
        warnings.append(f"{path.name} has empty lines ({where}): skipped here, but `mlx_lm lora` fails on them.")
    if not split.records and not file_errors:
        file_errors.append(f"{path.name}: no examples (one JSON object per line).")
    if split.format == "text" and mask_prompt:
        file_errors.insert(0, f"{path.name}: text data has no prompt to mask. Turn off mask-prompt, or use chat "
                              "or completions data.")
    extra = len(file_errors) - MAX_ERRORS_PER_FILE
    errors.extend(file_errors[:MAX_ERRORS_PER_FILE])
    if extra > 0:
        errors.append(f"{path.name}: … and {extra} more lines with problems.")
    return split


def _prompt_key(obj: dict[str, Any], fmt: str) -> str:
    if fmt == "chat":
        msgs = obj["messages"]
        prompt = msgs[:-1] if msgs and msgs[-1].get("role") == "assistant" else msgs
        text = " | ".join(f"{m.get('role')}: {m.get('content') or ''}" for m in prompt)
    else:
        text = obj["prompt"] if fmt == "completions" else obj["text"]
    return re.sub(r"\s+", " ", str(text)).strip().casefold()


def _overlap_warning(train: _Split, other: _Split) -> str | None:
    seen = {_prompt_key(r, train.format) for r in train.records}
    shared = [line for r, line in zip(other.records, other.lines) if _prompt_key(r, other.format) in seen]
    if not shared:
        return None
    where = ", ".join(map(str, shared[:8])) + (" …" if len(shared) > 8 else "")
    return (f"{len(shared)} of {len(other.records)} {other.path.name} prompts also appear in train.jsonl "
            f"(lines {where}): the {other.name} loss will look better than it is. Split by prompt.")


def _tokenize(split: _Split, tokenizer: Any, mask_prompt: bool, max_seq_length: int,
              errors: list[str]) -> tuple[Any, SplitStats]:
    """Tokenize every example with mlx-lm's own dataset classes; returns (CacheDataset, stats)."""
    from mlx_lm.tuner.datasets import (  # lazy: mlx-lm pulls in MLX and transformers (seconds)
        CacheDataset,
        create_dataset,
    )

    dataset = CacheDataset(create_dataset(split.records, tokenizer, types.SimpleNamespace(mask_prompt=mask_prompt)))
    tokens = trained = longest = over = untrainable = 0
    bad = 0
    for i, line in enumerate(split.lines):
        try:
            ids, offset = dataset[i]
        except Exception as err:  # a chat template may reject an example (roles out of order, system turn...)
            bad += 1
            if bad <= MAX_ERRORS_PER_FILE:
                reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
                errors.append(f"{split.path.name} line {line}: the model's chat template rejected it ({reason})")
            continue
        n = len(ids)
        tokens += n
        longest = max(longest, n)
        over += n > max_seq_length
        kept = min(n, max_seq_length) - max(offset, 1)
        trained += max(kept, 0)
        untrainable += kept <= 0
    stats = SplitStats(split.name, split.path, len(split.records), tokens, trained, longest, over, untrainable)
    return dataset, stats


def _fingerprint(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def check_data(folder: Path | str, *, tokenizer: Any = None, batch_size: int = 1, mask_prompt: bool = False,
               max_seq_length: int = 2048, iters: int | None = None) -> DataReport:
    """Validate `folder` (train.jsonl, valid.jsonl, optional test.jsonl). Never raises for bad data."""
    report, _ = _check(Path(folder).expanduser(), tokenizer, batch_size, mask_prompt, max_seq_length, iters,
                       SPLITS)
    return report


def load_training_data(folder: Path | str, tokenizer: Any, *, batch_size: int, mask_prompt: bool,
                       max_seq_length: int, iters: int) -> tuple[DataReport, Any, Any]:
    """For the engine: the report plus mlx-lm CacheDatasets (train, valid or None), tokenized once.
    Raises DataError listing the problems."""
    report, datasets = _check(Path(folder).expanduser(), tokenizer, batch_size, mask_prompt, max_seq_length, iters,
                              ("train", "valid"))
    report.raise_for_errors()
    return report, datasets["train"], datasets.get("valid")


def _check(folder: Path, tokenizer: Any, batch_size: int, mask_prompt: bool, max_seq_length: int,
           iters: int | None, tokenize: tuple[str, ...]) -> tuple[DataReport, dict[str, Any]]:
    errors: list[str] = []
    warnings: list[str] = []
    if not folder.is_dir():
        return DataReport(folder, "", {}, (f"Data folder {folder} does not exist.",), ()), {}
    splits = {n: _read_split(n, folder / f"{n}.jsonl", mask_prompt, errors, warnings)
              for n in SPLITS if (folder / f"{n}.jsonl").is_file()}
    if "train" not in splits:
        errors.append(f"{folder} has no train.jsonl (one JSON example per line).")
    if "valid" not in splits:
        warnings.append("No valid.jsonl: no validation loss, so no best checkpoint and no early stopping.")
    fmt = splits["train"].format if "train" in splits else ""
    for split in splits.values():
        if fmt and split.format and split.format != fmt:
            errors.append(f"{split.path.name} is {split.format} data but train.jsonl is {fmt} data: use one format.")
    for name in ("train", "valid"):
        part = splits.get(name)
        if part and part.records and len(part.records) < batch_size:
            errors.append(f"{part.path.name} has {len(part.records)} example(s) but the batch size is "
                          f"{batch_size}: add examples or lower the batch size.")
    train = splits.get("train")
    if train and len(train.records) >= batch_size:
        n = len(train.records)
        if n < 4 * batch_size:
            warnings.append(f"train.jsonl has only {n} examples for batch size {batch_size}: every step sees "
                            "almost the same data. Add examples or lower the batch size.")
        if iters and iters * batch_size / n > 10:
            warnings.append(f"{iters} iterations x batch {batch_size} pass over the {n} training examples "
                            f"{iters * batch_size / n:.0f} times: expect memorisation. Use fewer iterations "
                            "or more data.")
    for other in ("valid", "test"):
        if (train and other in splits and train.format == splits[other].format
                and (msg := _overlap_warning(train, splits[other])) is not None):
            warnings.append(msg)

    stats: dict[str, SplitStats] = {}
    datasets: dict[str, Any] = {}
    for name, split in splits.items():
        if tokenizer is None or not split.records or errors or name not in tokenize:
            stats[name] = SplitStats(name, split.path, len(split.records))
            continue
        datasets[name], stats[name] = _tokenize(split, tokenizer, mask_prompt, max_seq_length, errors)
        if stats[name].over_max_length:
            warnings.append(f"{stats[name].over_max_length} example(s) in {split.path.name} are longer than "
                            f"max_seq_length {max_seq_length} (longest {stats[name].longest} tokens) and will be "
                            "cut. Raise max_seq_length or shorten them.")
        if stats[name].untrainable:
            what = (f"{stats[name].untrainable} example(s) in {split.path.name} have" if
                    stats[name].untrainable < stats[name].examples else f"All examples in {split.path.name} have")
            message = (f"{what} no reply tokens left to train on after masking the prompt and cutting to "
                       f"max_seq_length {max_seq_length}; a batch of only such examples has a NaN loss. Raise "
                       "max_seq_length or shorten the prompts.")
            (errors if stats[name].untrainable == stats[name].examples else warnings).append(message)
    paths = [s.path for s in splits.values()]
    fingerprint = _fingerprint(paths) if paths and not errors else ""
    return DataReport(folder, fmt, stats, tuple(errors), tuple(warnings), fingerprint), datasets
