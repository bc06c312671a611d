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
from pathlib import Path
from typing import Any

_HASHED = ("*.safetensors", "*.json", "tokenizer.model", "*.tiktoken", "*.jinja", "*.txt")
_SHA256_NAME = re.compile(r"[0-9a-f]{64}")
_memo: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def _cache_file() -> Path:
    from lemcore.settings import data_dir

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
        from lemcore.models.loading import resolve_model
    except ImportError:  # without the model loader, only a plain folder path can be resolved
        path = Path(name).expanduser()
        return path if path.is_dir() else None
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
    import lemcore

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
