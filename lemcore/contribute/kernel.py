"""The ethics kernel: loading the axioms and kernel text, and building the "sandwich" prompt.

The sandwich is byte-for-byte the message list the LEM lab's gold generator builds, so gold data made
here matches theirs:

- system: the intro line, a blank line, then per axiom in id order `Axiom {id} ({name}): {statement}`
  followed by a blank line. The lab appends "\\n\\n" after every axiom line, so the system text ends in
  "\\n\\n"; we keep that rather than tidy it, since chat templates see the exact string.
- user: the prompt, "\\n\\n---\\n\\n", the line "Consider this ethical framework in your response:",
  "\\n", then the whole kernel text after `.strip()`.

Only `statement` reaches the model; `function` and `resolution` are kept for display.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from lemcore.errors import ConfigError
from lemcore.resources import kernel_dir

SYSTEM_INTRO = "You are guided by the following axioms of conscious interaction:"
SEPARATOR = "\n\n---\n\n"
KERNEL_INTRO = "Consider this ethical framework in your response:"

AXIOMS_FILE = "axioms.json"
KERNEL_TEXT_FILE = "lek-kernel.txt"

_FIX = "Pick a valid kernel file in Settings, or restore the one shipped with the app."


@dataclass(frozen=True)
class Axiom:
    id: int
    name: str
    statement: str
    function: str = ""
    resolution: str = ""


@dataclass(frozen=True)
class Axioms:
    framework: str
    version: str
    axioms: tuple[Axiom, ...]  # sorted by id

    def __len__(self) -> int:
        return len(self.axioms)


class KernelPaths(NamedTuple):
    axioms: Path
    text: Path


def default_kernel_paths() -> KernelPaths:
    """The kernel shipped with the app (source checkout or frozen bundle)."""
    folder = kernel_dir()
    return KernelPaths(folder / AXIOMS_FILE, folder / KERNEL_TEXT_FILE)


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"The {what} file '{path}' does not exist. {_FIX}") from None
    except IsADirectoryError:
        raise ConfigError(f"The {what} path '{path}' is a folder, not a file. {_FIX}") from None
    except OSError as exc:
        raise ConfigError(f"Cannot read the {what} file '{path}': {exc.strerror or exc}. {_FIX}") from None


def _decode(raw: bytes, path: Path, what: str) -> str:
    if b"\x00" in raw:
        raise ConfigError(f"The {what} file '{path}' looks binary, not text. {_FIX}")
    try:
        # utf-8-sig drops a BOM some editors add; the lab's files have none, so their text is unchanged.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"The {what} file '{path}' is not UTF-8 text (bad byte at offset {exc.start}). "
            "Save it as UTF-8, or pick another file in Settings."
        ) from None


def _text_field(obj: dict[str, Any], key: str, where: str, path: Path, *, required: bool) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise ConfigError(f"The axioms file '{path}' is missing '{key}' in {where}. {_FIX}")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"The axioms file '{path}' has a non-text '{key}' in {where}. {_FIX}")
    text = str(value).strip()
    if required and not text:
        raise ConfigError(f"The axioms file '{path}' has an empty '{key}' in {where}. {_FIX}")
    return text


def _parse_axiom(item: Any, n: int, path: Path) -> Axiom:
    where = f"axiom #{n + 1}"
    if not isinstance(item, dict):
        raise ConfigError(f"The axioms file '{path}': {where} is not a JSON object. {_FIX}")
    raw_id = item.get("id")
    # bool is an int subclass; `"id": true` is a typo, not axiom 1.
    if isinstance(raw_id, bool) or not isinstance(raw_id, int):
        raise ConfigError(f"The axioms file '{path}': {where} needs a whole-number 'id'. {_FIX}")
    where = f"axiom {raw_id}"
    return Axiom(
        id=raw_id,
        name=_text_field(item, "name", where, path, required=True),
        statement=_text_field(item, "statement", where, path, required=True),
        # Not used in the prompt, so a file without them still works.
        function=_text_field(item, "function", where, path, required=False),
        resolution=_text_field(item, "resolution", where, path, required=False),
    )


def load_axioms(path: str | Path) -> Axioms:
    """Read an axioms file (ours or the lab's `kernel/axioms.json`). Raises ConfigError."""
    path = Path(path)
    text = _decode(_read_bytes(path, "axioms"), path, "axioms")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"The axioms file '{path}' is not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}). {_FIX}"
        ) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"The axioms file '{path}' must hold one JSON object. {_FIX}")
    framework = _text_field(doc, "framework", "the top level", path, required=True)
    version = _text_field(doc, "version", "the top level", path, required=True)
    items = doc.get("axioms")
    if not isinstance(items, list) or not items:
        raise ConfigError(f"The axioms file '{path}' needs a non-empty 'axioms' list. {_FIX}")
    axioms = sorted((_parse_axiom(item, n, path) for n, item in enumerate(items)), key=lambda a: a.id)
    ids = [a.id for a in axioms]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"The axioms file '{path}' repeats axiom id(s) {dupes}. {_FIX}")
    return Axioms(framework=framework, version=version, axioms=tuple(axioms))


def load_kernel_text(path: str | Path) -> str:
    """The kernel "postfix", stripped as the lab strips it.

    Any text is accepted: ours is prose, the lab's `lek-1-kernel.txt` is four JSON documents written one
    after another (not valid JSON as a whole), and both are pasted into the prompt verbatim, so the
    content is deliberately not parsed.
    """
    path = Path(path)
    text = _decode(_read_bytes(path, "kernel text"), path, "kernel text").strip()
    if not text:
        raise ConfigError(f"The kernel text file '{path}' is empty. {_FIX}")
    return text


def system_prompt(axioms: Axioms) -> str:
    """The system half of the sandwich (ends with a blank line, as the lab's does)."""
    parts = [SYSTEM_INTRO, "\n\n"]
    for axiom in sorted(axioms.axioms, key=lambda a: a.id):
        parts.append(f"Axiom {axiom.id} ({axiom.name}): {axiom.statement}\n\n")
    return "".join(parts)


def user_prompt(kernel_text: str, prompt: str) -> str:
    """The user half: the prompt followed by the kernel postfix."""
    return prompt + SEPARATOR + KERNEL_INTRO + "\n" + kernel_text.strip()


def build_sandwich(axioms: Axioms, kernel_text: str, prompt: str) -> list[dict[str, str]]:
    """The `[system, user]` message list sent to the chat template for gold generation."""
    return [
        {"role": "system", "content": system_prompt(axioms)},
        {"role": "user", "content": user_prompt(kernel_text, prompt)},
    ]


def sandwich_text(axioms_path: str | Path | None = None, kernel_path: str | Path | None = None) -> str:
    """The gold sandwich without its prompt (the shipped kernel unless paths are given): what a good answer
    must not recite, and the system text of a dataset that keeps the sandwich."""
    defaults = default_kernel_paths()
    axioms = load_axioms(axioms_path or defaults.axioms)
    return system_prompt(axioms) + KERNEL_INTRO + "\n" + load_kernel_text(kernel_path or defaults.text)


def kernel_hash(axioms_path: str | Path, kernel_path: str | Path) -> str:
    """sha256 hex over both files, for provenance records.

    Each file's bytes are preceded by their length, so moving text from one file to the other changes
    the hash (plain concatenation would not).
    """
    digest = hashlib.sha256()
    for path, what in ((Path(axioms_path), "axioms"), (Path(kernel_path), "kernel text")):
        raw = _read_bytes(path, what)
        digest.update(len(raw).to_bytes(8, "big"))
        digest.update(raw)
    return digest.hexdigest()
