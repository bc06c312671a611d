"""Modules a job needs, imported on the GUI thread before the job runs.

A first import on a worker thread can deadlock against a PySide call that holds the import machinery
(docs/platform-notes.md, "PySide deadlocks"). So the runner imports the engines' lazily imported modules once
when it is made, and each job's declared modules (and its model's architecture module) before it is queued.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path

from lemcore.contribute.setup import resolve_generation_model
from lemcore.models.fit import read_config
from lemcore.models.loading import architecture_module, resolve_model
from lemcore.settings import load_settings

log = logging.getLogger(__name__)


# Modules the engines import lazily, imported once on the GUI thread when the runner is made.
ENGINE_MODULES = (
    "mlx.core", "mlx.utils", "mlx.optimizers", "mlx_lm", "mlx_lm.utils", "mlx_lm.generate", "mlx_lm.sample_utils",
    "mlx_lm.models.cache", "mlx_lm.tuner.trainer", "mlx_lm.tuner.utils", "mlx_lm.tuner.datasets", "transformers",
    "influxdb_client",
    "mlx_lm.models.llama", "mlx_lm.models.gemma3", "mlx_lm.models.gemma3_text",  # the catalog's architectures
    "lemcore.contribute.engine", "lemcore.contribute.setup", "lemcore.contribute.queue.lab", "lemcore.models.loading",
    "lemcore.train.engine", "lemcore.train.fuse", "lemcore.benchmarks", "lemcore.benchmarks.run",
    "lemcore.models.embedded",
    # lemcore.benchmarks.suites.SUITE_IDS, each imported by name when a benchmark runs
    "lemcore.benchmarks.gsm8k", "lemcore.benchmarks.truthfulqa", "lemcore.benchmarks.do_not_answer",
    "lemcore.benchmarks.toxigen", "lemcore.benchmarks.ethics", "lemcore.benchmarks.truthfulqa_mc",
)


def import_modules(names: Iterable[str]) -> None:
    """Import `names` here (call it on the GUI thread). A module this build lacks is logged, not raised: the
    job that needs it reports the error when it runs."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            log.warning("could not import %s ahead of its job", name)


def preload_engine_modules() -> None:
    import_modules(ENGINE_MODULES + _settings_model_modules())


def _settings_model_modules() -> tuple[str, ...]:
    """The architecture module of the model chosen in Settings (or the recommended one)."""
    try:
        return model_modules(resolve_generation_model(load_settings().model_override))
    except Exception:  # noqa: BLE001 - only a preload: the job reports whatever is wrong
        log.warning("could not find the chosen model's architecture", exc_info=True)
        return ()


def model_modules(path_or_id: str) -> tuple[str, ...]:
    """Modules that build the model `path_or_id` names (a folder, catalog or hub id, or an adapter folder:
    its base model). Empty when its files are not on this computer yet, or anything is wrong with them."""
    try:
        adapter_config = Path(path_or_id).expanduser() / "adapter_config.json"
        if path_or_id and adapter_config.is_file():
            base = json.loads(adapter_config.read_text(encoding="utf-8")).get("model", "")
            return model_modules(base) if isinstance(base, str) and base != path_or_id else ()
        folder = resolve_model(path_or_id).folder
        module = architecture_module(read_config(folder)) if folder is not None else None
    except Exception:  # noqa: BLE001 - only a preload: the job reports whatever is wrong
        return ()
    return (module,) if module else ()
