"""The run folder of a training run, its metrics log, and loading the base model with clear errors.

A run folder holds: `config.yaml` (the immutable snapshot, written once; a resume adds
`config.resume-<iteration>.yaml`), `adapter_config.json` + `adapters.safetensors` (mlx-lm's adapter layout,
so `mlx_lm.load(model, adapter_path=run)` and `mlx_lm fuse` work on it), `metrics.jsonl`, `checkpoints/` and
`best/` (see resume.py).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import IO, Any

from lemcore.errors import ConfigError, ModelLoadError
from lemcore.folders import new_stamped_folder
from lemcore.jobs import CancelToken
from lemcore.models.embedded import ensure_embedded_model
from lemcore.models.loading import check_model_folder, resolve_model
from lemcore.settings import data_dir
from lemcore.train.config import TrainConfig

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"


def new_run_dir(config: TrainConfig) -> Path:
    """The folder for a new run: `adapter_path` if set (it must not hold a run), else a fresh one under
    the app's data folder named after the time and model."""
    if config.adapter_path:
        folder = Path(config.adapter_path).expanduser()
        if (folder / CONFIG_FILE).exists():
            if any((folder / "checkpoints").glob("[0-9]*")) or (folder / "adapters.safetensors").exists():
                raise ConfigError(f"Run folder {folder} already holds a run. Resume it (lem train --resume "
                                  f"{folder}) or choose another folder.")
            for name in (CONFIG_FILE, METRICS_FILE, "adapter_config.json"):  # a run that never took a step
                (folder / name).unlink(missing_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(config.model.rstrip("/")).name).strip("-") or "model"
    return new_stamped_folder(data_dir() / "runs", name)  # a run in the same second gets -2 (atomic mkdir)


def snapshot_config(run_dir: Path, config: TrainConfig, resumed_at: int | None) -> Path:
    """Write the config snapshot; never overwrite one (the run's record of what it was)."""
    name = CONFIG_FILE if resumed_at is None else f"config.resume-{resumed_at:07d}.yaml"
    path = run_dir / name
    n = 1
    while path.exists():
        n += 1
        path = run_dir / f"{path.stem.split('~')[0]}~{n}.yaml"
    snap = config.with_changes(adapter_path=str(run_dir))
    return snap.save_yaml(path)


class MetricsLog:
    """Append-only JSON lines: one record per step, validation, checkpoint, resume and finish."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / METRICS_FILE
        self._file: IO[str] = self.path.open("a", encoding="utf-8", buffering=1)  # line-buffered

    def write(self, kind: str, **fields: Any) -> None:
        self._file.write(json.dumps({"type": kind, "time": round(time.time(), 3), **fields}) + "\n")

    def close(self) -> None:
        self._file.close()


class NoMetrics(MetricsLog):
    """The metrics log of ranks other than 0 in a run over several machines: rank 0 alone writes the run."""

    def __init__(self) -> None:  # no file, on purpose
        pass

    def write(self, kind: str, **fields: Any) -> None:
        pass

    def close(self) -> None:
        pass


def read_metrics(run_dir: Path | str) -> list[dict[str, Any]]:
    """The run's records in order. After a resume from iteration k, the earlier records past k (steps the
    checkpoint did not keep) are dropped, so the log reads as one continuous run."""
    path = Path(run_dir) / METRICS_FILE
    out: list[dict[str, Any]] = []
    if not path.is_file():
        return out
    for raw in path.read_text(encoding="utf-8").splitlines():
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError:
            continue  # a line cut by a crash
        if rec.get("type") == "resume":
            k = rec.get("iteration", 0)
            out = [r for r in out if r.get("type") == "resume" or r.get("iteration", 0) <= k]
        out.append(rec)
    return out


def load_base_model(name: str, *, cancel: CancelToken | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Resolve `name` (catalog id, folder or downloaded hub id) as the rest of the app does, then load it with
    mlx-lm lazily (weights are read when first used, so the memory guard can run first)."""

    ref = resolve_model(name)
    folder = ref.folder
    if folder is None and ref.kind == "embedded":

        folder = ensure_embedded_model(cancel=cancel)
    elif folder is None:
        raise ModelLoadError(f"{ref.name} is not on this computer yet. Download it first (in the app: choose it "
                             f"for contributing in Settings; on the command line: lem models pull {ref.text}), "
                             "or choose a model folder on this computer.")
    check_model_folder(folder)
    from mlx_lm.utils import load  # lazy: mlx-lm pulls in MLX and transformers (seconds)

    try:
        # mlx-lm types the result as a 2- or 3-tuple (no overloads); return_config=True gives three.
        model, tokenizer, config = load(str(folder), lazy=True, return_config=True)  # type: ignore[misc]
    except Exception as err:  # noqa: BLE001 - whatever mlx-lm raises on a bad folder is a load error
        raise ModelLoadError(f"Could not load the model in {folder} ({type(err).__name__}: {str(err)[:200]}). "
                             "Download or convert it again, or pick another model.") from None
    return model, tokenizer, config
