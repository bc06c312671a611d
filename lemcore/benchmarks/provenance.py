"""What a result needs to be repeated: model and adapter identity (content hashes), library versions, host.

Weight files are hashed once per (path, size, mtime) and remembered in the data folder, so a 15 GB model
costs its hashing time only on its first benchmark. Files in the Hugging Face cache are symlinks to blobs
named by their sha256 (LFS files), which is used directly.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lemcore
from lemcore.models.loading import resolve_model
from lemcore.settings import data_dir

_HASHED = ("*.safetensors", "*.json", "tokenizer.model", "*.tiktoken", "*.jinja", "*.txt")
_SHA256_NAME = re.compile(r"[0-9a-f]{64}")
_memo: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def _cache_file() -> Path:
    return data_dir() / "benchmarks" / ".file-hashes.json"


def file_sha256(path: Path) -> str:
    target = path.resolve()
    if path.is_symlink() and _SHA256_NAME.fullmatch(target.name):
        return target.name  # a hub blob: its name is its sha256
    st = target.stat()
    key = (str(target), st.st_size, st.st_mtime_ns)
    with _lock:
        if key in _memo:
            return _memo[key]
    cache_path = _cache_file()
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    ckey = f"{key[0]}|{key[1]}|{key[2]}"
    digest = cache.get(ckey)
    if not isinstance(digest, str):
        h = hashlib.sha256()
        with target.open("rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        digest = h.hexdigest()
        cache[ckey] = digest
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache), encoding="utf-8")
            tmp.replace(cache_path)
        except OSError:
            pass  # the cache is only a speed-up
    with _lock:
        _memo[key] = digest
    return digest


def folder_identity(folder: Path, patterns: tuple[str, ...] = _HASHED) -> dict[str, Any]:
    """sha256 of each relevant file and one combined sha256 over (name, hash) pairs."""
    files = sorted({p for pat in patterns for p in folder.glob(pat) if p.is_file()}, key=lambda p: p.name)
    hashes = {p.name: file_sha256(p) for p in files}
    combined = hashlib.sha256("".join(f"{n}\0{h}\n" for n, h in hashes.items()).encode()).hexdigest()
    return {"path": str(folder), "sha256": combined, "files": hashes}


def resolve_folder(name: str) -> Path | None:
    """The folder a model name points at, if it is on this computer."""
    try:
        return resolve_model(name).folder
    except Exception:  # noqa: BLE001 - identity is best effort; loading reports the real error
        return None


def model_identity(name: str) -> dict[str, Any]:
    folder = resolve_folder(name)
    if folder is None:
        return {"name": name, "path": None, "sha256": ""}
    ident = folder_identity(folder)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    return {"name": name, **ident, "model_type": config.get("model_type"),
            "quantization": config.get("quantization")}


def adapter_identity(path: str) -> dict[str, Any]:
    folder = Path(path).expanduser()
    ident = folder_identity(folder, ("adapters.safetensors", "adapter_config.json"))
    return {"name": path, **ident}


def library_versions() -> dict[str, str]:
    out = {"lem-desktop": lemcore.__version__, "python": platform.python_version()}
    for dist in ("mlx", "mlx-lm", "numpy", "transformers", "tokenizers", "huggingface_hub"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def host() -> dict[str, str]:
    return {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
            "python_executable": sys.executable}


# -- what the chat template did with our messages ---------------------------------------------------------
_PROBE = "LEMSYSTEMPROBE4b1d"  # a system message no template holds, to find where a system message goes
# Role markers that are not always registered as special tokens: ChatML/Llama/Phi-style <|...|>, Gemma's
# <start_of_turn>, Mistral's [INST], SentencePiece <s>.
_MARKUP = re.compile(r"<\|[^<>|]{1,40}\|>|</?(?:s|bos|eos|start_of_turn|end_of_turn)>|\[/?INST\]|\[/?SYSTEM_PROMPT\]")
_ROLE_LABEL = re.compile(r"^\s*(?:system|user)\s*[:\n]?", re.IGNORECASE)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _split_markup(text: str, special: tuple[str, ...]) -> list[str]:
    """Text between role markers and special tokens."""
    if special:
        text = re.sub("|".join(re.escape(t) for t in sorted(special, key=len, reverse=True)), "\0", text)
    return _MARKUP.sub("\0", text).split("\0")


def template_system_prompt(render: Callable[[list[dict[str, str]]], str], messages: list[dict[str, str]],
                           special_tokens: Iterable[str] = ()) -> dict[str, Any]:
    """What the chat template adds to our messages, found by rendering them as the generator does.

    `render(messages)` must be the generator's own rendering. When we send no system message, the template
    may still write one (Qwen 2.5 and SmolLM2 insert a default persona, Llama 3.1 a knowledge-cutoff date).
    The messages are rendered once as sent and once with a probe system message in front; where the two
    differ is the system slot, so the text the template put there without the probe is its own. Text the
    template writes inside the system turn whatever the system message is (Llama's dates) sits just before
    the slot, after the last role marker. Returns the rendered prompt, the system message we sent (None),
    and `template_system_prompt`: the system text the model saw that we did not send ("" for none, None when
    the template has no system slot and the difference cannot be located)."""
    special = tuple(t for t in special_tokens if t)
    rendered = render(messages)
    sent = messages[0]["content"] if messages and messages[0].get("role") == "system" else None
    out: dict[str, Any] = {"messages": "one user turn" if len(messages) == 1 else f"{len(messages)} turns",
                           "system_message_sent": sent, "rendered_example": rendered}
    if sent is not None:
        out["template_system_prompt"] = ""
        return out
    try:
        probed = render([{"role": "system", "content": _PROBE}, *messages])
    except Exception:  # noqa: BLE001 - templates raise anything; the rendered example is still recorded
        probed = ""
    if _PROBE not in probed:
        # No system slot: whatever is left once our text, role markers and role names are taken out is the
        # template's own.
        rest = rendered
        for m in messages:
            rest = rest.replace(m.get("content", ""), "\0")
        left = [_ROLE_LABEL.sub("", t).strip() for t in _split_markup(rest, special)]
        left = [t for t in left if t and t.lower() not in ("assistant", "model", "system", "user")]
        out["template_system_prompt"] = "" if not left else None
        if left:
            out["note"] = f"the template has no place for a system message but adds text: {' | '.join(left)[:300]}"
        return out
    p = _common_prefix(rendered, probed)
    s = _common_prefix(rendered[p:][::-1], probed[p:][::-1])
    injected = rendered[p:len(rendered) - s]
    slot = probed[p:len(probed) - s]
    if _PROBE not in slot:  # the difference is elsewhere (a template that reorders turns)
        out["template_system_prompt"] = None
        out["note"] = "the system slot could not be located in the rendered prompt"
        return out
    before = _split_markup(rendered[:p], special)[-1]  # fixed text of the system turn, before the slot
    before = _ROLE_LABEL.sub("", before, count=1)
    texts = [t for t in (before.strip(), injected.strip()) if t]
    out["template_system_prompt"] = "\n".join(texts)
    return out


def describe_prompt_format(info: dict[str, Any]) -> str:
    """One line for run.json: what was sent and what the template added."""
    sent = info.get("system_message_sent")
    head = f"chat template, {info.get('messages', 'one user turn')}, " + (
        "no system message sent" if sent is None else "with our system message")
    added = info.get("template_system_prompt")
    if added is None:
        return f"{head}; what the template added could not be determined ({info.get('note', 'unknown')})"
    if not added:
        return f"{head}; the template added no system text"
    short = added if len(added) <= 200 else added[:200] + "…"
    return f"{head}; the template added this system text: {short!r}"
