"""Fuse an adapter into its base model: a standalone mlx-lm model folder, checked against base+adapter.

The check is the point: it reloads the saved folder with `mlx_lm.load` (proving it loads on its own) and
compares its logits on a few prompts with the base model running the adapter. A float fuse matches to rounding;
a fuse back into a quantized base (the lab's default, no de-quantize) re-quantizes the fused weights, so the
logits move a little and the check accepts that with a looser tolerance and a top-token agreement test.

Which adapter of a run is fused is explicit (`FuseConfig.adapter`: best by default, or final), and the result
and `lem_fuse.json` say which one it was, with its step and validation loss.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lemcore.errors import ConfigError, LemError
from lemcore.events import Event
from lemcore.jobs import CancelToken, Report, no_report
from lemcore.train.memory import flat_tree
from lemcore.train.resume import ADAPTER_CONFIG, ADAPTER_FILE, BEST, CHECKPOINTS
from lemcore.train.run import load_base_model, read_metrics

CHECK_PROMPTS = (
    "What do you owe to the people who help you?",
    "Count the chairs: 8, 10 and 14 make",
    "A good answer is honest about what it does not know.",
)


class FuseMismatch(LemError):
    """The fused model's logits differ from base+adapter beyond the tolerance (the folder is kept)."""


ADAPTER_CHOICES = ("best", "final")


@dataclass(frozen=True)
class FuseConfig:
    adapter_path: str  # a run folder, its best/ folder or a checkpoint (adapter_config.json + adapters)
    save_path: str  # a new or empty folder
    model: str = ""  # the base model; empty: the one recorded in adapter_config.json
    dequantize: bool = False  # save float weights even when the base is quantized
    prompts: tuple[str, ...] = CHECK_PROMPTS
    # For a run folder: "best" (the lowest validation loss, best/) or "final" (the adapter at the last step).
    # A run without a best/ (no validation data) fuses its final adapter and says so. A best/ or checkpoint
    # folder given directly is fused as it is.
    adapter: str = "best"


@dataclass(frozen=True)
class AdapterChoice:
    """Which adapter was fused, and why that one."""

    requested: str  # "best" or "final"
    fused: str  # "best", "final" or "checkpoint"
    path: Path  # the folder holding the fused adapters.safetensors
    iteration: int | None = None
    val_loss: float | None = None
    note: str = ""  # set when the fused one is not the one requested

    def describe(self) -> str:
        what = {"best": "the best adapter", "final": "the final adapter", "checkpoint": "the checkpoint"}[self.fused]
        where = f" (step {self.iteration}" if self.iteration is not None else ""
        if where and self.val_loss is not None:
            where += f", validation loss {self.val_loss:.3f}"
        return what + (where + ")" if where else "") + (f". {self.note}" if self.note else "")


def choose_adapter(path: Path | str, requested: str = "best") -> AdapterChoice:
    """The adapter folder to fuse: see FuseConfig.adapter. Raises ConfigError when there is none."""
    if requested not in ADAPTER_CHOICES:
        raise ConfigError(f"Unknown adapter choice {requested!r}: use best or final.")
    folder = Path(path).expanduser()
    if (folder / "best.json").is_file():  # a best/ folder given directly
        if requested == "final":
            raise ConfigError(f"{folder} is a run's best adapter, not its final one. Give the run folder "
                              f"({folder.parent}) to fuse the final adapter.")
        return AdapterChoice(requested, "best", folder, *_best_numbers(folder))
    if folder.parent.name == CHECKPOINTS and folder.name.isdigit():
        return AdapterChoice(requested, "checkpoint", folder, int(folder.name))
    best = folder / BEST
    if requested == "best" and (best / ADAPTER_FILE).is_file():
        return AdapterChoice(requested, "best", best, *_best_numbers(best))
    if not (folder / ADAPTER_FILE).is_file():
        if requested == "final" and (folder / CHECKPOINTS).is_dir():
            raise ConfigError(f"The run in {folder} has no final adapter: it stopped before its last step. "
                              "Resume it, or fuse its best adapter or one of its checkpoints.")
        return AdapterChoice(requested, "final", folder)  # the folder check below says what is missing
    note = "" if requested == "final" else ("This run has no best adapter (no validation loss was measured), "
                                            "so its final adapter was fused.")
    return AdapterChoice(requested, "final", folder, _final_iteration(folder), note=note)


def _best_numbers(best: Path) -> tuple[int | None, float | None]:
    try:
        raw = json.loads((best / "best.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    iteration, loss = raw.get("iteration"), raw.get("val_loss")
    return (iteration if isinstance(iteration, int) else None,
            float(loss) if isinstance(loss, (int, float)) else None)


def _final_iteration(run: Path) -> int | None:
    finished = [r for r in read_metrics(run) if r.get("type") == "finished"
                and r.get("status") in ("complete", "early_stopped")]
    value = finished[-1].get("iteration") if finished else None
    return value if isinstance(value, int) else None


# Each FuseStage in words, for the pages that show it.
FUSE_STAGE_WORDS = {"loading": "loading the base model and the adapter", "measuring": "measuring the trained model",
                    "fusing": "merging the adapter into the model", "saving": "saving the new model",
                    "checking": "checking that the new model answers like the trained one"}


@dataclass(frozen=True)
class FuseStage(Event):
    stage: str  # "loading", "measuring", "fusing", "saving", "checking"


@dataclass(frozen=True)
class FuseCheck:
    prompts: int
    max_abs_diff: float  # largest logit difference, fused vs base+adapter
    relative_diff: float  # ||fused - reference|| / ||reference - base||: the share of the adapter's effect missed
    adapter_effect: float  # ||reference - base|| / ||base||: how much the adapter changes the logits at all
    top1_agreement: float  # share of positions whose most likely next token is the same
    tolerance: float
    passed: bool


@dataclass(frozen=True)
class FuseResult:
    save_path: Path
    base_model: str
    quantized: bool
    check: FuseCheck
    seconds: float
    adapter: AdapterChoice | None = None


def _base_and_adapter(config: FuseConfig) -> tuple[str, AdapterChoice]:
    choice = choose_adapter(config.adapter_path, config.adapter)
    adapter = choice.path
    cfg_file = adapter / ADAPTER_CONFIG
    if not cfg_file.is_file() or not (adapter / ADAPTER_FILE).is_file():
        raise ConfigError(f"{adapter} holds no adapter (adapter_config.json and adapters.safetensors). Pick a "
                          "training run folder, its best/ folder or one of its checkpoints.")
    try:
        recorded = json.loads(cfg_file.read_text(encoding="utf-8")).get("model", "")
    except ValueError:
        raise ConfigError(f"{cfg_file} is not valid JSON.") from None
    base = config.model or recorded
    if not base:
        raise ConfigError("The adapter does not record its base model: choose the base model explicitly.")
    return base, choice


def fuse_adapter(config: FuseConfig, *, report: Report = no_report, cancel: CancelToken | None = None) -> FuseResult:
    cancel = cancel or CancelToken()
    base, choice = _base_and_adapter(config)
    adapter = choice.path
    save_path = Path(config.save_path).expanduser()
    if save_path.exists() and any(save_path.iterdir()):
        raise ConfigError(f"{save_path} already exists and is not empty. Choose a new folder for the fused model.")
    if not config.prompts:
        raise ConfigError("The fuse check needs at least one prompt.")
    started = time.monotonic()
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")
    from mlx.utils import (
        tree_unflatten,  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")
    )
    from mlx_lm.utils import (  # lazy: mlx-lm pulls in MLX and transformers (seconds)
        dequantize_model,
        load,
        save_config,
        save_model,
    )


    report(FuseStage("loading"))
    model, tokenizer, model_config = load_base_model(base, cancel=cancel)
    from mlx_lm.tuner.utils import load_adapters  # lazy: mlx-lm pulls in MLX and transformers (seconds)

    ids = [tokenizer.encode(p) for p in config.prompts]
    base_logits = [_logits(model, x) for x in ids]
    try:
        load_adapters(model, str(adapter))
    except (ValueError, KeyError) as err:
        raise ConfigError(f"The adapter in {adapter} does not fit model {base}: {str(err)[:300]}") from None
    model.eval()
    cancel.check()

    report(FuseStage("measuring"))
    reference = [_logits(model, x) for x in ids]
    quantized = "quantization" in model_config and not config.dequantize
    half = _uses_half_precision(model)

    report(FuseStage("fusing"))
    fused = [(name, module.fuse(dequantize=config.dequantize)) for name, module in model.named_modules()
             if hasattr(module, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))
    if config.dequantize:
        model = dequantize_model(model)
        model_config.pop("quantization", None)
        model_config.pop("quantization_config", None)
    cancel.check()

    report(FuseStage("saving"))
    save_path.mkdir(parents=True, exist_ok=True)
    save_model(save_path, model, donate_model=True)  # frees the in-memory weights: peak stays one model
    save_config(dict(model_config), save_path / "config.json")
    tokenizer.save_pretrained(str(save_path))
    base_dir = Path(base).expanduser()
    for pattern in ("*.py", "generation_config.json"):
        for extra in base_dir.glob(pattern) if base_dir.is_dir() else []:
            shutil.copy2(extra, save_path / extra.name)
    # Dropped by reference count: no gc.collect() on the engine thread
    # (docs/platform-notes.md, "PySide deadlocks").
    del model, fused
    mx.clear_cache()

    report(FuseStage("checking"))
    fused_model = load(str(save_path))[0]
    check = _compare(base_logits, reference, [_logits(fused_model, x) for x in ids], quantized, half)
    provenance = {"base_model": base, "adapter_path": str(adapter), "dequantized": config.dequantize,
                  "adapter": {"requested": choice.requested, "fused": choice.fused, "path": str(choice.path),
                              "iteration": choice.iteration, "val_loss": choice.val_loss, "note": choice.note},
                  "check": asdict(check)}
    (save_path / "lem_fuse.json").write_text(json.dumps(provenance, indent=2), encoding="utf-8")
    if not check.passed:
        why = (f"Re-quantizing the fused weights to {model_config['quantization'].get('bits', '?')} bits rounds "
               "away much of the adapter's small change: fuse with de-quantize (a larger float model that keeps "
               "it), or use base + adapter unfused." if quantized else
               "This should not happen with float weights: keep the adapter and report the problem.")
        raise FuseMismatch(f"The fused model in {save_path} does not reproduce base+adapter: it misses "
                           f"{check.relative_diff:.1%} of the adapter's effect on the logits (allowed "
                           f"{check.tolerance:.0%}) and the top token agrees at {check.top1_agreement:.0%} of "
                           f"positions. {why}")
    return FuseResult(save_path=save_path, base_model=base, quantized=quantized, check=check,
                      seconds=time.monotonic() - started, adapter=choice)


def _logits(model: Any, ids: list[int]) -> Any:
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    out = model(mx.array(ids)[None]).astype(mx.float32)
    mx.eval(out)
    return np.array(out[0])


def _uses_half_precision(model: Any) -> bool:
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    return any(v.dtype in (mx.float16, mx.bfloat16) for _, v in flat_tree(model.parameters()))


def _compare(base: list[Any], reference: list[Any], fused: list[Any], quantized: bool, half: bool) -> FuseCheck:

    def norm(arrays: list[Any]) -> float:
        return float(np.sqrt(sum(float((a.astype(np.float64) ** 2).sum()) for a in arrays)))

    error = norm([f - r for f, r in zip(fused, reference)])
    effect = norm([r - b for r, b in zip(reference, base)])
    scale = norm(reference) or 1.0
    # Measured against what the adapter changes (not the logits' size), so a re-quantization that rounds the
    # adapter away cannot hide behind large logits. An adapter with no effect is measured against the logits.
    relative = error / max(effect, 1e-3 * scale)
    same = sum(int((r.argmax(-1) == f.argmax(-1)).sum()) for r, f in zip(reference, fused))
    total = sum(r.shape[0] for r in reference)
    # Float32 differs only by summation order; half precision rounds the fused weights once; re-quantizing
    # moves every weight by up to half a quantization step.
    tolerance = 0.5 if quantized else (0.05 if half else 1e-3)
    min_agreement = 0.8 if quantized else 0.95
    passed = relative <= tolerance and same / total >= min_agreement
    return FuseCheck(prompts=len(reference), max_abs_diff=max(float(np.abs(f - r).max()) for f, r in
                                                               zip(fused, reference)),
                     relative_diff=relative, adapter_effect=effect / scale, top1_agreement=same / total,
                     tolerance=tolerance, passed=passed)
