"""Find and load a model without ever crashing on bad input.

`resolve_model` turns what the user typed (a catalog id, a hub id, a local folder) into one `ModelRef`; a
missing local path is reported as a missing folder, never silently tried as a hub id (mlx-lm would, and fail
with HFValidationError). `load_model` checks the folder before mlx-lm sees it (config, architecture, weights,
tokenizer), runs the fit check, and turns anything mlx-lm still raises into one ModelLoadError that names the
folder and the problem.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lemcore.errors import DownloadError, ModelLoadError
from lemcore.events import Event
from lemcore.hardware import Hardware, detect_hardware
from lemcore.jobs import CancelToken, Report, no_report
from lemcore.models.catalog import CatalogEntry, find_entry
from lemcore.models.downloads import cached_snapshot, hub_needs, pull_model
from lemcore.models.embedded import embedded_model_dir, ensure_embedded_model
from lemcore.models.fit import (
    DEFAULT_CONTEXT,
    FitReport,
    ModelNeeds,
    assess_fit,
    metal_working_set,
    needs_from_folder,
    read_config,
    require_fit,
    weight_files,
)

# Hub ids as the hub validates them: owner/name from letters, digits, '-', '_', '.'.
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tiktoken.model", "vocab.json")
log = logging.getLogger(__name__)

# Tokenizers parsed so far, by folder and file stamps: a parse holds the GIL long enough to freeze the window
# (docs/platform-notes.md, "GIL release and GUI stalls"), so each is parsed once; the app warms the chosen one
# before showing (warm_tokenizer).
_TOKENIZERS: dict[tuple[Any, ...], Any] = {}
_TOKENIZERS_LOCK = threading.Lock()
_TOKENIZERS_KEPT = 4


@dataclass(frozen=True)
class ModelRef:
    """What a model name points at. `folder` is set when the files are on this computer."""

    text: str
    kind: str  # folder, hub or embedded
    name: str
    folder: Path | None = None
    repo: str | None = None
    entry: CatalogEntry | None = None


@dataclass(frozen=True)
class LoadStage(Event):
    stage: str  # resolve, download, check, load; prepare (the CPU kernels compiled ahead: generate/cpu/kernel_cache.py)
    detail: str


@dataclass(frozen=True)
class ModelLoaded(Event):
    name: str
    folder: Path
    fit: FitReport


def _embedded_folder() -> Path | None:
    """The converted built-in model, if it has been converted (never converts)."""

    folder = embedded_model_dir()
    return folder if (folder / "config.json").is_file() and weight_files(folder) else None


def resolve_model(path_or_id: str, *, cache_dir: str | os.PathLike[str] | None = None) -> ModelRef:
    """Catalog id, local folder or hub id -> ModelRef. Raises ModelLoadError for anything else."""

    text = str(path_or_id).strip()
    if not text:
        raise ModelLoadError("No model given. Pick one from the list, or give a folder or a hub id "
                             "(owner/name).")
    entry = find_entry(text)
    if entry is not None and entry.embedded:
        return ModelRef(text, "embedded", entry.label, _embedded_folder(), None, entry)
    if entry is not None:
        folder = cached_snapshot(entry.repo, cache_dir=cache_dir)
        return ModelRef(text, "hub", entry.label, folder, entry.repo, entry)
    path = Path(text).expanduser()
    if path.is_dir():
        return ModelRef(text, "folder", path.name, path)
    if path.exists():
        hint = " Convert GGUF files first." if path.suffix == ".gguf" else ""
        raise ModelLoadError(f"{path} is a file, not a model folder. Give the folder that holds "
                             f"config.json.{hint}")
    # "owner/name" could be a relative path too: it is a path when its first part exists here.
    looks_like_repo = _REPO_ID.fullmatch(text) is not None and not Path(text.split("/")[0]).is_dir()
    if looks_like_repo and "--" not in text and ".." not in text:
        return ModelRef(text, "hub", text, cached_snapshot(text, cache_dir=cache_dir), text)
    if os.sep in text or "/" in text or text.startswith(("~", ".")):
        raise ModelLoadError(f"The model folder {path.resolve()} does not exist. Check the path.")
    raise ModelLoadError(f"'{text}' is not a model folder here, a catalog model or a hub id (owner/name). "
                         "Run `lem models list` to see the catalog.")


def short_error(err: BaseException) -> str:
    """A library's exception as one readable line (mlx-lm lists every missing tensor, one per line)."""
    lines = str(err).strip().splitlines()
    text = (lines[0] if lines else "").rstrip(" :") or type(err).__name__
    return f"{type(err).__name__}: {text[:200]}"


def architecture_module(config: dict[str, Any]) -> str | None:
    """The mlx_lm.models module that builds a model with this config.json (mlx-lm's own lookup: the
    (model_type, architecture) remapping, then the model_type remapping), or None when mlx-lm has none."""
    from mlx_lm.utils import (  # lazy: mlx-lm pulls in MLX and transformers (seconds)
        MODEL_ARCHITECTURE_REMAPPING,
        MODEL_REMAPPING,
    )

    model_type = str(config.get("model_type") or "")
    architectures = config.get("architectures") or ()
    for arch in [architectures] if isinstance(architectures, str) else architectures:
        remapped = MODEL_ARCHITECTURE_REMAPPING.get((model_type, arch))
        if remapped is not None:
            return f"mlx_lm.models.{remapped}"
    module = MODEL_REMAPPING.get(model_type, model_type)
    if module and re.fullmatch(r"\w+", module) and importlib.util.find_spec(f"mlx_lm.models.{module}"):
        return f"mlx_lm.models.{module}"
    return None


def supported_architecture(config: dict[str, Any]) -> str | None:
    """None if mlx-lm can build this architecture, else the model_type it cannot."""
    model_type = str(config.get("model_type") or "")
    # Cheap path first: importing mlx_lm pulls in transformers (seconds), so look for the module file.
    package = importlib.util.find_spec("mlx_lm")
    for location in (package.submodule_search_locations or []) if package else []:
        if re.fullmatch(r"\w+", model_type) and (Path(location) / "models" / f"{model_type}.py").is_file():
            return None
    return None if architecture_module(config) is not None else (model_type or "(none)")


def check_model_folder(folder: Path) -> dict[str, Any]:
    """Everything mlx-lm would trip on, found first. Returns the config."""
    if not folder.exists():
        raise ModelLoadError(f"The model folder {folder} does not exist. Pick another model or download it "
                             "again.")
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is a file, not a model folder.")
    config = read_config(folder)
    if not config.get("model_type"):
        raise ModelLoadError(f"The config.json in {folder} has no model_type: it is not a language-model "
                             "folder.")
    unknown = supported_architecture(config)
    if unknown:
        import mlx_lm  # lazy: mlx-lm pulls in MLX and transformers (seconds)

        version = getattr(mlx_lm, "__version__", "")
        raise ModelLoadError(f"The model in {folder} has architecture '{unknown}', which mlx-lm {version} "
                             "cannot run. Pick another model, or update LEM Desktop.")
    if not weight_files(folder):
        raise ModelLoadError(f"The model folder {folder} has no weights (no model*.safetensors). Download or "
                             "convert the model again.")
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES) and not any(folder.glob("*.tiktoken")):
        raise ModelLoadError(f"The model folder {folder} has no tokenizer (tokenizer.json or "
                             "tokenizer.model). Download the model again.")
    return config


def needs_for(path_or_id: str, *, endpoint: str | None = None) -> ModelNeeds:
    """Memory figures for a model name: from its files when on this computer, else catalog or hub metadata."""
    ref = resolve_model(path_or_id)
    if ref.folder is not None:
        check_model_folder(ref.folder)
        return needs_from_folder(ref.folder, ref.name)
    if ref.entry is not None:
        return ref.entry.needs()

    assert ref.repo is not None
    return hub_needs(ref.repo, endpoint=endpoint)


def load_model(
    path_or_id: str | os.PathLike[str],
    *,
    report: Report = no_report,
    cancel: CancelToken | None = None,
    force: bool = False,
    hw: Hardware | None = None,
    batch: int = 1,
    context: int = DEFAULT_CONTEXT,
    endpoint: str | None = None,
    download: bool = True,
) -> tuple[Any, Any]:
    """(model, tokenizer) for a catalog id, hub id or folder; downloads (with its own fit check) when allowed.

    Raises ModelLoadError with the folder and the problem, ModelFitError when the fit check says red and
    `force` is False, or Cancelled.
    """

    report(LoadStage("resolve", str(path_or_id)))
    ref = resolve_model(str(path_or_id))
    hw = hw or detect_hardware()
    folder = ref.folder
    if folder is None and ref.kind == "embedded":

        report(LoadStage("download", "converting the built-in model"))
        folder = ensure_embedded_model(report=report, cancel=cancel)
    elif folder is None:
        assert ref.repo is not None
        if not download:
            raise ModelLoadError(f"{ref.repo} is not downloaded yet. Download it first (in the app: choose it "
                                 f"in Settings; on the command line: `lem models pull {ref.text}`).")

        report(LoadStage("download", ref.repo))
        try:
            folder = pull_model(ref.repo, endpoint=endpoint, hw=hw, batch=batch, context=context, force=force,
                                report=report, cancel=cancel)
        except DownloadError as err:
            what = (f"{ref.name} ({ref.repo}) is" if ref.entry else
                    f"There is no folder {Path(ref.text).resolve()} here, and the hub model {ref.repo} is")
            raise ModelLoadError(f"{what} not on this computer yet and cannot be downloaded now. {err}") \
                from None
    if cancel is not None:
        cancel.check()

    report(LoadStage("check", str(folder)))
    check_model_folder(folder)
    fit = assess_fit(needs_from_folder(folder, ref.name), hw, batch=batch, context=context,
                     gpu_limit=metal_working_set())
    report(fit)
    require_fit(fit, force=force)
    if cancel is not None:
        cancel.check()

    report(LoadStage("load", str(folder)))
    from mlx_lm.utils import (
        load_model as load_weights,  # lazy: mlx-lm pulls in MLX and transformers (seconds)
    )

    try:
        model, config = load_weights(folder)
        tokenizer = cached_tokenizer(folder, config.get("eos_token_id"))
    except Exception as err:  # noqa: BLE001 - whatever mlx-lm raises on a bad folder is a load error
        raise ModelLoadError(f"Could not load the model in {folder}: {short_error(err)}. "
                             "Download or convert it again, or pick another model.") from None
    report(ModelLoaded(ref.name, folder, fit))
    return model, tokenizer


def cached_tokenizer(folder: Path, eos_token_ids: Any = None) -> Any:
    """mlx-lm's tokenizer for a model folder, loaded once per process (see _TOKENIZERS)."""
    from mlx_lm.utils import load_tokenizer  # lazy: mlx-lm pulls in MLX and transformers (seconds)

    folder = Path(folder).resolve()
    files = [f for f in sorted(folder.iterdir())
             if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "tiktoken"))
             or f.name == "chat_template.jinja"]
    stamps = tuple((f.name, st.st_mtime_ns, st.st_size) for f in files for st in [f.stat()])
    key = (str(folder), stamps, json.dumps(eos_token_ids))
    with _TOKENIZERS_LOCK:
        tokenizer = _TOKENIZERS.get(key)
        if tokenizer is None:
            tokenizer = load_tokenizer(folder, eos_token_ids=eos_token_ids)
            if len(_TOKENIZERS) >= _TOKENIZERS_KEPT:
                _TOKENIZERS.pop(next(iter(_TOKENIZERS)))
            _TOKENIZERS[key] = tokenizer
    return tokenizer


def warm_tokenizer(path_or_id: str) -> bool:
    """Load a model's tokenizer into the cache now, if the model is on this computer. Never raises: a model
    that cannot load says so, clearly, when a job loads it. Returns whether the tokenizer is ready."""
    try:
        folder = resolve_model(path_or_id).folder
        if folder is None:
            return False
        cached_tokenizer(folder, check_model_folder(folder).get("eos_token_id"))
        return True
    except Exception as err:  # noqa: BLE001 - a warm-up is best effort
        log.info("tokenizer not preloaded for %s: %s", path_or_id, short_error(err))
        return False


def check_fit(
    path_or_id: str,
    *,
    hw: Hardware | None = None,
    batch: int = 1,
    context: int = DEFAULT_CONTEXT,
    force: bool = False,
    endpoint: str | None = None,
    gpu_limit: int | None = None,
    cores: int | None = None,
) -> FitReport:
    """Fit of a catalog id, local folder or hub id (hub metadata when online); raises ModelFitError on red
    unless `force`. Nothing is downloaded except, for an uncached hub id, its small config.json. With `cores`,
    the report also carries the full-speed batch for this machine (`FitReport.full_speed_batch`)."""
    needs = needs_for(path_or_id, endpoint=endpoint)
    hw = hw or detect_hardware()
    limit = gpu_limit if gpu_limit is not None else metal_working_set()
    report = assess_fit(needs, hw, batch=batch, context=context, gpu_limit=limit, cores=cores,
                        metal=limit is not None)
    require_fit(report, force=force)
    return report
