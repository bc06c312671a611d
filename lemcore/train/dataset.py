"""Contributed answers -> a training data folder that `lem train` and plain `mlx_lm lora` both read.

`build_dataset(DatasetConfig)` reads gold and expansion answer files (ours and the lab's, docs/lab-formats.md,
"Generation outputs"), drops what should not be trained on, splits, and writes `train.jsonl`, `valid.jsonl`,
`test.jsonl` in mlx-lm's chat format plus a data card (`data_card.json`, `DATA_CARD.md`) saying what went in,
what was left out and why. In order:

1. Read: every line that is a JSON object with text `prompt` and `response`. Lines of answers that were not
   reported (our `*.lost.jsonl` files, lines marked `lost` or `held`) are not read.
2. Exact duplicates (same prompt and same answer, whitespace aside) are dropped: the first copy stays.
3. The quality gate (lemcore.quality) refuses empty, broken, looping, reciting, cut and wrong-language answers.
4. One answer per prompt: when the same prompt has several answers that passed, the first one read stays
   (files in the order given, a folder's files by name, lines in file order), as the lab's consolidation keeps
   the first record per index.
5. Split. By seed (default): every answer of one seed (one `seed_id`: a prompt and its voice variants) goes to
   the same split, chosen by a hash of the seed id, so no prompt family is in two splits and a seed keeps its
   split when more answers arrive. By domain (the lab's export, for comparison): within each domain, answers
   ordered by index, row number (from 1) modulo 10: 0-7 train, 8 test, 9 valid; families can then cross splits.

The prompt policy is explicit. "plain" (default, the lab's): the user turn is the prompt alone, so the sandwich
the gold answers were generated with is distilled away. "system": gold answers keep the sandwich's text (the
axioms and the kernel) as a system message before the plain prompt; expansion answers, made without it, stay
plain.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lemcore.errors import ConfigError, DataError, ModelLoadError
from lemcore.events import Event
from lemcore.jobs import CancelToken, Report, no_report
from lemcore.models.embedded import ensure_embedded_model
from lemcore.models.loading import cached_tokenizer, check_model_folder, resolve_model
from lemcore.prompts import load_eval_prompts
from lemcore.quality import REASON_TEXT, REASONS, GateTally, QualityGate, Thresholds, tier1_score
from lemcore.resources import seeds_dir
from lemcore.train.data import SPLITS, check_data

CARD_JSON = "data_card.json"
CARD_MD = "DATA_CARD.md"
SPLIT_METHODS = ("seed", "domain")
PROMPT_POLICIES = ("plain", "system")
NOT_READ_SUFFIXES = (".lost.jsonl", ".held.jsonl")  # answers that were not reported: never training data
GOLD, EXPANSION = "gold", "expansion"

POLICY_TEXT = {
    "plain": "The user turn is the plain prompt, without the axiom sandwich the gold answers were generated "
             "with, as in the lab's training data: the model learns to answer this way without the kernel in "
             "front of it (the sandwich is distilled away).",
    "system": "Gold answers keep the sandwich's text (the axioms and the kernel) as a system message before "
              "the plain prompt, so the model learns with the kernel in view; expansion answers, generated "
              "without it, stay plain. Chat templates without a system role fold it into the user turn.",
}


@dataclass(frozen=True)
class DatasetConfig:
    sources: tuple[str, ...]  # answer files, or folders whose *.jsonl files are read
    out_dir: str  # a new or empty folder (or one this builder wrote, with overwrite)
    split: str = "seed"  # "seed" or "domain" (the lab's export)
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, valid, test (seed split only)
    salt: str = "lem-split-1"  # changes which seeds land where; part of the card
    prompt_policy: str = "plain"
    # The sandwich without the prompt (axioms system text, kernel intro line and kernel): answers must not
    # recite it, and policy "system" puts it in a system message. Callers build it from the kernel files
    # (lemcore.contribute.kernel); empty: no recitation check against the kernel.
    sandwich_text: str = ""
    gate: bool = True
    keep_truncated: bool = False  # keep answers cut at the token limit (still counted in the card)
    require_tier1: bool = False  # also drop answers whose lab tier-1 score is not above 0 (the lab's rule)
    exclude_eval: bool = False  # leave out answers to the evaluation prompts (seeds/P01-P100)
    model: str = ""  # count lengths with this model's tokenizer; empty: characters
    max_seq_length: int = 2048  # examples longer than this (in tokens) are counted in the card
    overwrite: bool = False
    thresholds: Thresholds = field(default_factory=Thresholds)

    def validate(self) -> None:
        if not self.sources:
            raise ConfigError("No answer files given: name files or folders of gold/expansion answers.")
        if not str(self.out_dir).strip():
            raise ConfigError("No output folder given for the dataset.")
        if self.split not in SPLIT_METHODS:
            raise ConfigError(f"Unknown split {self.split!r}: use seed (default) or domain (the lab's).")
        if self.prompt_policy not in PROMPT_POLICIES:
            raise ConfigError(f"Unknown prompt policy {self.prompt_policy!r}: use plain or system.")
        if self.prompt_policy == "system" and not self.sandwich_text.strip():
            raise ConfigError("Prompt policy 'system' needs the sandwich text (the kernel files).")
        if len(self.ratios) != 3 or any(r < 0 for r in self.ratios) or abs(sum(self.ratios) - 1) > 1e-6 \
                or self.ratios[0] <= 0:
            raise ConfigError(f"Split ratios {self.ratios} must be three shares (train, valid, test) that add up "
                              "to 1, with some for train, e.g. 0.8 0.1 0.1.")
        if self.split == "domain" and tuple(self.ratios) != (0.8, 0.1, 0.1):
            raise ConfigError("The domain split is the lab's fixed 8:1:1 (row number modulo 10); ratios apply "
                              "to the seed split only.")


# Each DataStage in words, for the pages that show it.
DATA_STAGE_WORDS = {"reading": "reading the answers", "checking": "checking each answer",
                    "tokenizer": "loading the model's tokenizer", "writing": "writing the files",
                    "measuring": "measuring lengths"}


@dataclass(frozen=True)
class DataStage(Event):
    stage: str  # "reading", "checking", "tokenizer", "writing", "measuring"
    detail: str = ""


@dataclass(frozen=True)
class DatasetResult:
    out_dir: Path
    examples: dict[str, int]  # per split
    refused: dict[str, int]  # answers refused by the gate, per reason
    card: dict[str, Any]
    warnings: tuple[str, ...]

    def summary(self) -> str:
        """A few lines for a person: what was written and what was left out."""
        return card_summary(self.card)


@dataclass
class _Answer:
    source: int  # index into the card's sources
    line: int
    kind: str
    seed: str
    domain: str
    idx: int | None
    prompt: str
    response: str
    truncated: bool | None
    model: str
    order: int  # position in reading order
    looped: bool = False  # the generator ended it for repeating itself (our `stopped_loop` field)


# -- reading ---------------------------------------------------------------------------------------------

def source_files(paths: Iterable[str | Path]) -> list[Path]:
    """The answer files named: files as given, folders' `*.jsonl` by name, minus answers never reported."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.glob("*.jsonl") if p.is_file() and not p.name.endswith(NOT_READ_SUFFIXES))
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise ConfigError(f"{path} does not exist. Name answer files (gold-*.jsonl, expand-*.jsonl) or the "
                              "folder that holds them.")
    seen: set[Path] = set()
    unique = []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def record_kind(record: dict[str, Any], path: Path) -> str:
    """Gold (made with the sandwich) or expansion (plain prompt): our `kind` field; else the lab's file name
    (gold-*, expand-*); else the lab's keys: `voice` is gold, `region` with a `worker` is the expansion
    worker's, `region` without one is the Gemini generators' (which used the sandwich)."""
    kind = record.get("kind")
    if kind in (GOLD, EXPANSION):
        return str(kind)
    name = path.name.lower()
    if name.startswith("gold"):
        return GOLD
    if name.startswith("expand"):
        return EXPANSION
    if "voice" in record:
        return GOLD
    return EXPANSION if "region" in record and "worker" in record else GOLD


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def _read(files: list[Path], cancel: CancelToken, counts: Counter[str]) -> tuple[list[_Answer], list[dict[str, Any]]]:
    answers: list[_Answer] = []
    sources: list[dict[str, Any]] = []
    for n, path in enumerate(files):
        cancel.check()
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise DataError(f"Cannot read {path}: {err.strerror or err}.") from None
        used = 0
        lines = raw.decode("utf-8", errors="replace").splitlines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                counts["unreadable_line"] += 1
                continue
            if not isinstance(record, dict):
                counts["unreadable_line"] += 1
                continue
            prompt, response = record.get("prompt"), record.get("response")
            if not isinstance(prompt, str) or not isinstance(response, str) or not prompt.strip():
                counts["not_an_answer"] += 1
                continue
            if record.get("lost") or record.get("held"):
                counts["not_reported"] += 1
                continue
            seed = record.get("seed_id")
            idx = record.get("idx")
            truncated = record.get("truncated")
            answers.append(_Answer(
                source=n, line=number, kind=record_kind(record, path),
                seed=str(seed) if seed not in (None, "") else "prompt:" + _norm(prompt),
                domain=str(record.get("domain") or ""), idx=idx if isinstance(idx, int) and not isinstance(idx, bool)
                else None, prompt=prompt.strip(), response=response.strip(),
                truncated=truncated if isinstance(truncated, bool) else None, model=str(record.get("model") or ""),
                order=len(answers), looped=record.get("stopped_loop") is True))
            used += 1
        sources.append({"path": str(path), "sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw),
                        "lines": len(lines), "answers_read": used})
    return answers, sources


# -- splitting -------------------------------------------------------------------------------------------

def seed_bucket(seed: str, salt: str) -> float:
    """Where a seed falls in [0, 1): the first 64 bits of sha256(salt, seed). Stable across runs and machines."""
    digest = hashlib.sha256(f"{salt}\x00{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_seed(answers: list[_Answer], ratios: tuple[float, float, float], salt: str,
                  notes: list[str]) -> dict[str, list[_Answer]]:
    buckets = {a.seed: seed_bucket(a.seed, salt) for a in answers}
    edges = (ratios[0], ratios[0] + ratios[1])

    def place(u: float) -> str:
        return "train" if u < edges[0] else "valid" if u < edges[1] else "test"

    where = {seed: place(u) for seed, u in buckets.items()}
    # Few seeds: a split with a share may get none by chance. Move the train seed nearest to it, so valid has
    # examples (no best checkpoint without them) and test is not silently empty.
    for name, ratio in (("valid", ratios[1]), ("test", ratios[2])):
        if ratio > 0 and name not in where.values():
            train = sorted((s for s, w in where.items() if w == "train"), key=lambda s: buckets[s])
            if len(train) >= 2:
                moved = train[-1]  # the highest bucket: the nearest to the valid and test ranges
                where[moved] = name
                notes.append(f"No seed hashed into {name}: seed {moved!r} was moved there from train "
                             f"(only {len(buckets)} seeds).")
    out: dict[str, list[_Answer]] = {s: [] for s in SPLITS}
    for a in answers:
        out[where[a.seed]].append(a)
    return out


def split_by_domain(answers: list[_Answer]) -> dict[str, list[_Answer]]:
    """The lab's export: row_number() over (partition by domain order by idx) % 10: 0-7 train, 8 test, 9 valid
    (row numbers start at 1). Answers without an index come after those with one, in reading order."""
    out: dict[str, list[_Answer]] = {s: [] for s in SPLITS}
    by_domain: dict[str, list[_Answer]] = {}
    for a in answers:
        by_domain.setdefault(a.domain, []).append(a)
    for group in by_domain.values():
        group.sort(key=lambda a: (a.idx is None, a.idx if a.idx is not None else 0, a.order))
        for row, a in enumerate(group, 1):
            r = row % 10
            out["train" if r <= 7 else "test" if r == 8 else "valid"].append(a)
    return out


# -- lengths -----------------------------------------------------------------------------------------------

def load_tokenizer(model: str, *, cancel: CancelToken | None = None) -> Any:
    """The model's tokenizer (catalog id, folder or downloaded hub id; the built-in model is converted if it
    has not been yet). Raises ModelLoadError when it is not on this computer."""

    ref = resolve_model(model)
    folder = ref.folder
    if folder is None and ref.kind == "embedded":
        folder = ensure_embedded_model(cancel=cancel)
    if folder is None:
        raise ModelLoadError(f"{ref.name} is not on this computer, so its tokenizer cannot count tokens. "
                             "Download it first, or build without a model (lengths in characters).")
    return cached_tokenizer(folder, check_model_folder(folder).get("eos_token_id"))


def _spread(values: list[int]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    return {"count": len(values), "min": min(values), "median": statistics.median(values),
            "mean": round(statistics.fmean(values), 1), "max": max(values)}


def _lengths(rows: list[dict[str, Any]], tokenizer: Any, max_seq_length: int) -> dict[str, Any]:
    prompts: list[int] = []
    replies: list[int] = []
    whole: list[int] = []
    for row in rows:
        messages = row["messages"]
        prompt = messages[-2]["content"]  # the user turn (a system turn is counted in the whole example)
        reply = messages[-1]["content"]
        if tokenizer is None:
            prompts.append(len(prompt))
            replies.append(len(reply))
            whole.append(sum(len(m["content"]) for m in messages))
        else:
            prompts.append(len(tokenizer.encode(prompt, add_special_tokens=False)))
            replies.append(len(tokenizer.encode(reply, add_special_tokens=False)))
            whole.append(len(tokenizer.apply_chat_template(messages, return_dict=False)))
    out: dict[str, Any] = {"prompt": _spread(prompts), "answer": _spread(replies), "example": _spread(whole)}
    if tokenizer is not None:
        out["over_max_seq_length"] = sum(n > max_seq_length for n in whole)
    return out


# -- building ---------------------------------------------------------------------------------------------

def _example(a: _Answer, config: DatasetConfig) -> dict[str, Any]:
    messages = [{"role": "user", "content": a.prompt}, {"role": "assistant", "content": a.response}]
    if config.prompt_policy == "system" and a.kind == GOLD:
        messages.insert(0, {"role": "system", "content": config.sandwich_text.strip()})
    return {"messages": messages}


def _eval_seed_ids() -> set[str]:
    try:
        return {p.seed_id for p in load_eval_prompts(seeds_dir())}
    except Exception:  # noqa: BLE001 - a missing seeds folder only removes the contamination count
        return set()


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an output that is a file, or a folder holding anything but a dataset built here (overwrite)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; choose a folder for the dataset.")
    if out.is_dir() and any(out.iterdir()):
        ours = (out / CARD_JSON).is_file()
        if not (overwrite and ours):
            raise ConfigError(f"{out} is not empty. Choose a new folder" + (
                ", or rebuild it with overwrite (it holds a dataset built here)." if ours else "."))


def _prepare_out(out: Path, overwrite: bool) -> None:
    _check_out(out, overwrite)
    if out.is_dir():
        for name in (*(f"{s}.jsonl" for s in SPLITS), CARD_JSON, CARD_MD):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


def select_answers(config: DatasetConfig, *, report: Report = no_report, cancel: CancelToken | None = None
                   ) -> tuple[list[_Answer], dict[str, Any]]:
    """Steps 1-4 (read, exact duplicates, gate, one answer per prompt) without writing anything. Returns the
    kept answers and the card's `filtered` section (counts, with the gate's tally)."""
    cancel = cancel or CancelToken()
    files = source_files(config.sources)
    if not files:
        raise DataError(f"No answer files (*.jsonl) in {', '.join(config.sources)}. Contribute some answers "
                        "first, or name the files.")
    report(DataStage("reading", f"{len(files)} file(s)"))
    counts: Counter[str] = Counter()
    answers, sources = _read(files, cancel, counts)
    seen_pairs: set[tuple[str, str]] = set()
    unique: list[_Answer] = []
    for a in answers:
        key = (_norm(a.prompt), _norm(a.response))
        if key in seen_pairs:
            counts["duplicate_answer"] += 1
            continue
        seen_pairs.add(key)
        unique.append(a)

    report(DataStage("checking", f"{len(unique)} answers"))
    gate = QualityGate([config.sandwich_text] if config.sandwich_text else [], thresholds=config.thresholds,
                       refuse_truncated=not config.keep_truncated)
    tally = GateTally()
    tier1: list[float] = []
    passed: list[_Answer] = []
    for n, a in enumerate(unique):
        if n % 256 == 0:
            cancel.check()
        if config.gate:
            verdict = gate.check(a.prompt, a.response, truncated=a.truncated, looped=a.looped)
            tally.add(verdict)
            if not verdict.passed:
                continue
        score = tier1_score(a.response).total
        if config.require_tier1 and score <= 0:
            counts["tier1_failed"] += 1
            continue
        tier1.append(score)
        passed.append(a)

    kept: list[_Answer] = []
    seen_prompts: set[str] = set()
    for a in passed:
        prompt_key = _norm(a.prompt)
        if prompt_key in seen_prompts:
            counts["duplicate_prompt"] += 1
            continue
        seen_prompts.add(prompt_key)
        kept.append(a)

    eval_ids = _eval_seed_ids()
    on_eval = [a for a in kept if a.seed in eval_ids]
    if config.exclude_eval and on_eval:
        counts["evaluation_prompt"] += len(on_eval)
        kept = [a for a in kept if a.seed not in eval_ids]
    filtered = {
        "read": len(answers),
        "unreadable_line": counts["unreadable_line"],
        "not_an_answer": counts["not_an_answer"],
        "not_reported": counts["not_reported"],
        "duplicate_answer": counts["duplicate_answer"],
        "gate": tally.as_dict() if config.gate else {"off": True},
        "tier1_failed": counts["tier1_failed"],
        "duplicate_prompt": counts["duplicate_prompt"],
        "evaluation_prompt": counts["evaluation_prompt"],
        "kept": len(kept),
        "on_evaluation_prompts": 0 if config.exclude_eval else len(on_eval),
        "truncation_unknown": sum(a.truncated is None for a in kept),
        "tier1": {"mean": round(statistics.fmean(tier1), 2) if tier1 else None,
                  "passing": sum(s > 0 for s in tier1), "scored": len(tier1)},
        "sources": sources,
    }
    return kept, filtered


def build_dataset(config: DatasetConfig, *, report: Report = no_report,
                  cancel: CancelToken | None = None) -> DatasetResult:
    """Read, filter, split and write; see the module docstring. Raises ConfigError (bad settings or output
    folder), DataError (nothing usable), ModelLoadError (a model given whose tokenizer is not here)."""
    config.validate()
    cancel = cancel or CancelToken()
    out = Path(config.out_dir).expanduser()
    _check_out(out, config.overwrite)  # before any reading
    kept, filtered = select_answers(config, report=report, cancel=cancel)
    sources = filtered.pop("sources")
    if not kept:
        raise DataError(f"No answers are left to train on: {_answers(filtered['read'])} read; left out: "
                        + _left_out_text(filtered) + ".")

    notes: list[str] = []
    if config.split == "seed":
        parts = split_by_seed(kept, config.ratios, config.salt, notes)
    else:
        parts = split_by_domain(kept)
    if not parts["train"]:
        raise DataError("The split left train.jsonl empty: too few seeds. Add answers to more prompts.")

    tokenizer = None
    if config.model:
        report(DataStage("tokenizer", config.model))
        tokenizer = load_tokenizer(config.model, cancel=cancel)

    report(DataStage("writing", str(out)))
    _prepare_out(out, config.overwrite)
    rows = {name: [_example(a, config) for a in parts[name]] for name in SPLITS}
    for name in SPLITS:
        if rows[name]:
            _write_jsonl(out / f"{name}.jsonl", rows[name])

    report(DataStage("measuring"))
    unit = "tokens" if tokenizer is not None else "characters"
    lengths = {}
    for name in SPLITS:
        try:
            lengths[name] = _lengths(rows[name], tokenizer, config.max_seq_length)
        except Exception as err:  # noqa: BLE001 - a template that rejects an example: characters instead
            notes.append(f"{config.model}'s tokenizer could not measure {name} ({type(err).__name__}: "
                         f"{str(err)[:120]}); lengths in characters.")
            lengths[name] = _lengths(rows[name], None, config.max_seq_length)
            unit = "characters (tokenizer failed)"

    check = check_data(out, mask_prompt=True)
    families = {name: {a.seed for a in parts[name]} for name in SPLITS}
    crossing = len((families["train"] & (families["valid"] | families["test"])) | (families["valid"] & families["test"]))
    warnings = list(notes) + list(check.warnings) + list(check.errors)
    if crossing:
        warnings.append(f"{crossing} seed(s) have answers in more than one split (domain split): the valid and "
                        "test losses will look better than they are.")
    if filtered["on_evaluation_prompts"]:
        warnings.append(f"{filtered['on_evaluation_prompts']} of {len(kept)} examples answer the evaluation "
                        "prompts (seeds/P01-P100). A model trained on them must not be scored on those prompts, "
                        "except on the seeds in test.jsonl, which it never saw.")
    if filtered["truncation_unknown"]:
        warnings.append(f"{filtered['truncation_unknown']} answers come from files that do not record whether "
                        "they were cut at the token limit (the lab's); they were kept.")
    card = {
        "card": "lem-data-card", "version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "folder": str(out), "format": "chat (mlx-lm)",
        "examples": {name: len(rows[name]) for name in SPLITS},
        "seeds": {name: len(families[name]) for name in SPLITS},
        "split": {"method": config.split, "ratios": list(config.ratios) if config.split == "seed" else [0.8, 0.1, 0.1],
                  "salt": config.salt if config.split == "seed" else None,
                  "rule": ("sha256(salt, seed_id) -> [0, 1): below train share -> train, then valid, then test"
                           if config.split == "seed" else
                           "row number (from 1, ordered by idx) within each domain, modulo 10: 0-7 train, 8 "
                           "test, 9 valid")},
        "prompt_policy": {"name": config.prompt_policy, "text": POLICY_TEXT[config.prompt_policy]},
        "lengths": {"unit": unit, "model": config.model or None, "max_seq_length": config.max_seq_length,
                    **lengths},
        "domains": {d: {name: sum(a.domain == d for a in parts[name]) for name in SPLITS}
                    for d in sorted({a.domain for a in kept})},
        "kinds": dict(Counter(a.kind for a in kept)),
        "generated_by": dict(Counter(a.model or "unknown" for a in kept).most_common()),
        "filtered": filtered,
        "gate": {"on": config.gate, "refuse_truncated": not config.keep_truncated,
                 "require_tier1": config.require_tier1,
                 "kernel_checked": bool(config.sandwich_text), "thresholds": asdict(config.thresholds),
                 "reasons": {r: REASON_TEXT[r] for r in REASONS}},
        "duplicates": "exact copies (same prompt and answer) dropped; of several answers to one prompt the first "
                      "read is kept (files in the order given, lines in file order)",
        "sources": sources,
        "warnings": warnings,
    }
    (out / CARD_JSON).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / CARD_MD).write_text(card_markdown(card), encoding="utf-8")
    refused = dict(filtered["gate"].get("refused_by_reason", {})) if config.gate else {}
    return DatasetResult(out, card["examples"], refused, card, tuple(warnings))


# -- the card in words --------------------------------------------------------------------------------------

def _left_out_text(filtered: dict[str, Any]) -> str:
    """What was left out, in words ("nothing" when nothing was)."""
    parts = []
    labels = (("unreadable_line", "unreadable lines"), ("not_an_answer", "lines without prompt and answer"),
              ("not_reported", "answers never reported"), ("duplicate_answer", "exact duplicates"),
              ("tier1_failed", "lab tier-1 scores of 0 or less"),
              ("duplicate_prompt", "second answers to a prompt"),
              ("evaluation_prompt", "answers to evaluation prompts"))
    for key, label in labels:
        if filtered.get(key):
            parts.append(f"{filtered[key]} {label}")
    gate = filtered.get("gate", {})
    for reason, n in gate.get("refused_by_reason", {}).items():
        parts.append(f"{n} {REASON_TEXT[reason]}")
    return ", ".join(parts) or "nothing"


def _answers(n: int) -> str:
    return f"{n} answer" + ("" if n == 1 else "s")


def card_summary(card: dict[str, Any]) -> str:
    ex = card["examples"]
    lines = [f"{ex['train']} train / {ex['valid']} valid / {ex['test']} test examples "
             f"({card['seeds']['train']}/{card['seeds']['valid']}/{card['seeds']['test']} seeds), split by "
             f"{card['split']['method']}; prompts: {card['prompt_policy']['name']}.",
             f"{_answers(card['filtered']['read'])} read, {card['filtered']['kept']} kept; left out: "
             + _left_out_text(card["filtered"]) + "."]
    answer = card["lengths"]["train"]["answer"]
    if answer.get("count"):
        lines.append(f"Answer length ({card['lengths']['unit']}): median {answer['median']:g}, "
                     f"longest {answer['max']}.")
    return "\n".join(lines)


def card_markdown(card: dict[str, Any]) -> str:
    ex, f = card["examples"], card["filtered"]
    out = ["# Data card", "",
           f"Built {card['created']} by LEM Desktop. Format: mlx-lm chat (`train.jsonl`, `valid.jsonl`, "
           "`test.jsonl`); `lem train` and `mlx_lm lora` read this folder as it is.", "",
           "## Splits", "", "| Split | Examples | Seeds |", "|---|---|---|"]
    out += [f"| {s} | {ex[s]} | {card['seeds'][s]} |" for s in SPLITS]
    out += ["", f"Split by **{card['split']['method']}**: {card['split']['rule']}"
            + (f" (ratios {card['split']['ratios']}, salt `{card['split']['salt']}`)." if card['split']['salt'] else "."),
            "", "## Prompts", "", f"Policy **{card['prompt_policy']['name']}**: {card['prompt_policy']['text']}",
            "", f"## Lengths ({card['lengths']['unit']})", "",
            "| Split | Part | Min | Median | Mean | Max |", "|---|---|---|---|---|---|"]
    for s in SPLITS:
        for part in ("prompt", "answer", "example"):
            v = card["lengths"][s][part]
            if v.get("count"):
                out.append(f"| {s} | {part} | {v['min']} | {v['median']:g} | {v['mean']} | {v['max']} |")
    if card["lengths"]["unit"] == "characters":
        out += ["", "Counted in characters: no model was given (give one to count tokens)."]
    out += ["", "## Domains", "", "| Domain | Train | Valid | Test |", "|---|---|---|---|"]
    out += [f"| {d or '(none)'} | {v['train']} | {v['valid']} | {v['test']} |" for d, v in card["domains"].items()]
    out += ["", "## What was left out, and why", "", f"{f['read']} answers read, {f['kept']} kept, in this order "
            "of steps: exact duplicates, the quality gate, the lab's tier-1 score (when required), one answer per "
            "prompt, evaluation prompts (when excluded).", ""]
    rows = [("Unreadable lines", f["unreadable_line"]), ("Lines without a prompt and an answer", f["not_an_answer"]),
            ("Answers never reported (lost or held back)", f["not_reported"]),
            ("Exact duplicates (same prompt and answer)", f["duplicate_answer"])]
    gate = f["gate"]
    rows += [(f"Quality gate: {REASON_TEXT[r]}", n) for r, n in gate.get("refused_by_reason", {}).items()]
    rows += [("Lab tier-1 score 0 or less (required on request)", f["tier1_failed"]),
             ("Another answer to the same prompt was kept (the first read)", f["duplicate_prompt"]),
             ("Answers to evaluation prompts (excluded on request)", f["evaluation_prompt"])]
    out += ["| Reason | Answers |", "|---|---|"] + [f"| {label} | {n} |" for label, n in rows]
    if gate.get("off"):
        out += ["", "The quality gate was off."]
    else:
        out += ["", "An answer refused for several reasons counts under each. Cut answers are "
                + ("refused." if card["gate"]["refuse_truncated"] else "kept.")
                + ("" if card["gate"]["kernel_checked"] else " Kernel recitation was not checked (no kernel given).")]
    t1 = f["tier1"]
    if t1["scored"]:
        out += ["", f"Lab tier-1 heuristic on the answers that passed: mean {t1['mean']}, {t1['passing']} of "
                f"{t1['scored']} score above 0."]
    out += ["", "## Sources", "", "| File | Answers read | sha256 |", "|---|---|---|"]
    out += [f"| {s['path']} | {s['answers_read']} | `{s['sha256'][:16]}…` |" for s in card["sources"]]
    out += ["", "Generated by: " + ", ".join(f"{m} ({n})" for m, n in card["generated_by"].items()) + "."]
    if card["warnings"]:
        out += ["", "## Warnings", ""] + [f"- {w}" for w in card["warnings"]]
    return "\n".join(out) + "\n"


def read_card(folder: Path | str) -> dict[str, Any] | None:
    path = Path(folder).expanduser() / CARD_JSON
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None
