"""Convert a Hugging Face checkpoint (folder or hub id) into a quantized MLX folder: the first step of the
lab's recipe, for base models with no ready MLX build. Wraps `mlx_lm.convert.convert`.

mlx-lm gives no progress hooks, only `[INFO] ...` lines on stdout. They are turned into stage events (and
never reach the user's terminal: engines do not print), and each one is a cancel point. The work happens in
a hidden sibling folder that is renamed into place at the end, so a cancelled or failed conversion leaves
nothing half-written. The fit check runs first: mlx-lm holds the source weights and the quantized copy at
once.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from lemcore.errors import Cancelled, ConfigError, LemError, ModelLoadError
from lemcore.events import Event
from lemcore.hardware import Hardware, detect_hardware
from lemcore.jobs import CancelToken, Report, no_report
from lemcore.models.downloads import pull_model
from lemcore.models.fit import (
    KVShape,
    ModelNeeds,
    assess_fit,
    metal_working_set,
    needs_from_folder,
    require_fit,
)
from lemcore.models.loading import check_model_folder, resolve_model, short_error
from lemcore.settings import data_dir

log = logging.getLogger(__name__)
DTYPES = ("float16", "bfloat16", "float32")
_STAGES = (("[INFO] Loading", "load"), ("[INFO] Using dtype", "load"), ("[INFO] Quantizing", "quantize"),
           ("[INFO] Quantized model", "save"), ("[INFO] Dequantizing", "quantize"))


@dataclass(frozen=True)
class ConvertStage(Event):
    """Progress of a conversion: check, download, load, quantize, save, verify, done."""

    stage: str
    detail: str = ""
    done: int = 0
    total: int = 0


class _StageWriter(io.TextIOBase):
    """Stands in for stdout while mlx-lm converts: its progress lines become events and cancel points."""

    def __init__(self, report: Report, cancel: CancelToken | None) -> None:
        self.report, self.cancel = report, cancel

    def write(self, text: str) -> int:
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            stage = next((s for prefix, s in _STAGES if line.startswith(prefix)), None)
            if stage:
                self.report(ConvertStage(stage, line.removeprefix("[INFO] ")))
            else:
                log.info("mlx_lm.convert: %s", line)
        if self.cancel is not None:
            self.cancel.check()
        return len(text)


def default_output(source: str, q_bits: int | None) -> Path:

    name = Path(source.rstrip("/")).name or "model"
    return data_dir() / "models" / f"{name}-{f'{q_bits}bit' if q_bits else 'float'}-mlx"


def _source_folder(source: str, *, endpoint: str | None, report: Report, cancel: CancelToken | None) -> Path:

    ref = resolve_model(source)
    if ref.folder is None:
        if ref.repo is None:
            raise ModelLoadError(f"{source} is not a folder or a hub id.")

        report(ConvertStage("download", ref.repo))
        # The conversion's own fit check follows (it needs more than running the model), so none here.
        ref_folder = pull_model(ref.repo, endpoint=endpoint, fit_check=False, report=report, cancel=cancel)
    else:
        ref_folder = ref.folder
    check_model_folder(ref_folder)
    return ref_folder


def convert_model(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    q_bits: int | None = 4,
    q_group_size: int = 64,
    dtype: str | None = None,
    overwrite: bool = False,
    force: bool = False,
    hw: Hardware | None = None,
    endpoint: str | None = None,
    report: Report = no_report,
    cancel: CancelToken | None = None,
) -> Path:
    """Convert `source` (HF folder or hub id) into an MLX folder, quantized to `q_bits` (None: keep floats).

    Returns the output folder. Raises ConfigError (bad options, output exists), ModelFitError (the conversion
    would not fit and not `force`), ModelLoadError (bad source or mlx-lm failure), DownloadError, Cancelled.
    """

    if q_bits is not None and q_bits not in (2, 3, 4, 5, 6, 8):
        raise ConfigError(f"--q-bits {q_bits} is not supported: use 2, 3, 4, 5, 6 or 8.")
    if q_group_size not in (32, 64, 128):
        raise ConfigError(f"--q-group-size {q_group_size} is not supported: use 32, 64 or 128.")
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"Unknown dtype '{dtype}': use one of {', '.join(DTYPES)}.")
    out = Path(out_dir) if out_dir else default_output(str(source), q_bits)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists. Delete it, choose another output folder, or overwrite it.")

    report(ConvertStage("check", str(source)))
    folder = _source_folder(str(source), endpoint=endpoint, report=report, cancel=cancel)
    src = needs_from_folder(folder)
    # The quantized copy: source bytes scaled from the source's bits per weight to the target's.
    src_bits = 8 * src.kv.dtype_bytes
    float_bytes = {"float32": 4, "float16": 2, "bfloat16": 2}.get(dtype or "", src.kv.dtype_bytes)
    out_bits = (q_bits + 32 / q_group_size) if q_bits else 8 * float_bytes
    out_bytes = int(src.weight_bytes * out_bits / src_bits)
    needs = ModelNeeds(f"Converting {folder.name}", src.weight_bytes + out_bytes, KVShape(0, 0, 0),
                       "safetensors headers")
    fit = assess_fit(needs, hw or detect_hardware(), gpu_limit=metal_working_set())
    report(fit)
    require_fit(fit, force=force)

    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.converting-{uuid.uuid4().hex[:8]}"
    try:
        _run_convert(folder, work / "mlx", q_bits, q_group_size, dtype, report, cancel)
        report(ConvertStage("verify", str(out)))

        check_model_folder(work / "mlx")
        if out.exists():  # overwrite: swap, so `out` is never half-written
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(work / "mlx", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(ConvertStage("done", str(out)))
    return out


def _run_convert(folder: Path, dest: Path, q_bits: int | None, q_group_size: int, dtype: str | None,
                 report: Report, cancel: CancelToken | None) -> None:
    from mlx_lm.convert import convert  # lazy: mlx-lm pulls in MLX and transformers (seconds)

    dest.parent.mkdir(parents=True)
    # stdout is process-wide: a print from another thread during a conversion lands in the log, not the
    # terminal. Engines do not print, so only mlx-lm's own lines are affected.
    try:
        with contextlib.redirect_stdout(_StageWriter(report, cancel)):
            convert(str(folder), str(dest), quantize=q_bits is not None, q_bits=q_bits,
                    q_group_size=q_group_size, dtype=dtype)
    except LemError:  # Cancelled from a progress line, or our own checks
        raise
    except Exception as err:  # noqa: BLE001 - mlx-lm raises bare ValueError/KeyError/OSError on bad input

        raise ModelLoadError(f"Could not convert the model in {folder}: {short_error(err)}") from None
    if cancel is not None and cancel.cancelled:
        raise Cancelled(cancel.reason or "Cancelled.")
