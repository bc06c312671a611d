"""The settings of one LoRA fine-tune, in a shape a form can fill and `mlx_lm lora -c` can read.

Field names follow mlx-lm's CLI/YAML keys so a saved config runs unchanged with `mlx_lm lora -c FILE`. Two
nested mlx-lm keys are flattened for the form (`lora_parameters` -> lora_rank/scale/dropout, `lr_schedule` ->
lr_schedule/warmup_steps/min_learning_rate) and rebuilt on save. Settings mlx-lm does not have live under a
`lem:` key, which mlx-lm ignores. Every field carries `help`/`label` metadata for the GUI form.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from lemcore.errors import ConfigError, LemError
from lemcore.models.embedded import embedded_model_dir
from lemcore.models.loading import resolve_model

FINE_TUNE_TYPES = ("lora", "dora")
OPTIMIZERS = ("adam", "adamw", "sgd", "adafactor")
LR_SCHEDULES = ("constant", "cosine")
NESTED_KEYS = {"lora_rank": "rank", "lora_scale": "scale", "lora_dropout": "dropout"}
SCHEDULE_KEYS = ("lr_schedule", "warmup_steps", "min_learning_rate")
# What a field's annotation allows (`problems` checks values loaded from YAML or typed in the form).
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {"int": int, "float": (int, float), "bool": bool, "str": str}


def _f(default: Any, label: str, help: str, *, lem: bool = False, **extra: Any) -> Any:
    return field(default=default, metadata={"label": label, "help": help, "lem": lem, **extra})


@dataclass
class TrainConfig:
    # What to train on.
    model: str = _f("", "Model", "Hub id (e.g. mlx-community/gemma-3-1b-it-qat-4bit) or a local model folder.")
    data: str = _f("", "Data folder", "Folder with train.jsonl and valid.jsonl (test.jsonl optional).")
    adapter_path: str = _f("", "Run folder", "Where the adapter, checkpoints and metrics go. Empty: a new "
                           "folder under the app's data folder.")
    # The method.
    fine_tune_type: str = _f("lora", "Fine-tune type", "lora, or dora (weight-decomposed LoRA, a bit slower).",
                             choices=FINE_TUNE_TYPES)
    num_layers: int = _f(16, "Layers", "How many of the last transformer blocks get adapters; -1 for all.")
    lora_rank: int = _f(8, "LoRA rank", "Size of the low-rank update. 8 is mlx-lm's default.")
    lora_scale: float = _f(20.0, "LoRA scale", "Multiplier of the low-rank update. 20 is mlx-lm's default.")
    lora_dropout: float = _f(0.0, "LoRA dropout", "Dropout on the adapter input, 0 to 1.")
    mask_prompt: bool = _f(False, "Mask prompt", "Train on the assistant's reply only (the lab's recipe).")
    # The optimisation.
    iters: int = _f(1000, "Steps", "Training steps (mlx-lm's iterations). The lab's recipe uses 200.")
    batch_size: int = _f(4, "Batch size", "Examples per step. Lower it to save memory.")
    learning_rate: float = _f(1e-5, "Learning rate", "Peak learning rate. The lab uses 1e-5 (5e-6 for 27B).")
    lr_schedule: str = _f("constant", "Schedule", "constant, or cosine decay to the minimum learning rate.",
                          choices=LR_SCHEDULES)
    warmup_steps: int = _f(0, "Warm-up steps", "Steps of linear warm-up from 0 to the learning rate.")
    min_learning_rate: float = _f(0.0, "Minimum learning rate", "Where cosine decay ends.")
    optimizer: str = _f("adam", "Optimizer", "adam (mlx-lm's default), adamw, sgd or adafactor.",
                        choices=OPTIMIZERS)
    grad_accumulation_steps: int = _f(1, "Gradient accumulation", "Steps whose gradients add up before one "
                                      "update: a larger effective batch without more memory.")
    grad_checkpoint: bool = _f(False, "Gradient checkpointing", "Recompute activations in the backward pass: "
                               "much less memory, about a third slower.")
    max_seq_length: int = _f(2048, "Max sequence length", "Longer examples are cut to this many tokens.")
    seed: int = _f(0, "Seed", "Random seed: same seed, data and settings give the same run.")
    # Reporting and saving.
    steps_per_report: int = _f(10, "Report every", "Steps between progress lines (events come every step).")
    steps_per_eval: int = _f(200, "Evaluate every", "Steps between validation-loss measurements.")
    val_batches: int = _f(25, "Validation batches", "Batches per validation; -1 for the whole valid.jsonl.")
    save_every: int = _f(100, "Save every", "Steps between resumable checkpoints.")
    # LEM additions (saved under `lem:`; mlx-lm ignores them).
    early_stopping_patience: int = _f(0, "Early-stopping patience", "Stop after this many validations "
                                      "without improvement; 0 never stops early.", lem=True)
    early_stopping_min_delta: float = _f(0.0, "Minimum improvement", "A validation loss must drop by more "
                                         "than this to count as better.", lem=True)
    divergence_factor: float = _f(4.0, "Divergence factor", "Stop when the training loss exceeds this many "
                                  "times its starting value (NaN always stops).", lem=True)
    memory_guard: bool = _f(True, "Memory guard", "Refuse to start when the estimated peak memory exceeds "
                            "what this computer can spare.", lem=True)
    resume_from: str = _f("", "Resume from", "A run folder or one of its checkpoints: continue that run "
                          "exactly (weights, optimizer, data order).", lem=True)

    # -- checks ---------------------------------------------------------------------------------------
    def problems(self, *, check_paths: bool = True) -> dict[str, str]:
        """Field name -> what is wrong and what to do. Empty when the config is valid."""
        out: dict[str, str] = {}

        def need(name: str, ok: bool, message: str) -> None:
            if not ok and name not in out:
                out[name] = message

        for f in fields(self):
            value = getattr(self, f.name)
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            if not isinstance(value, _FIELD_TYPES[kind]) or (kind in ("int", "float") and isinstance(value, bool)):
                out[f.name] = f"{f.metadata['label']} must be {'a number' if kind != 'str' else 'text'}."
        need("model", bool(self.model.strip()), "Choose a model: a hub id or a local model folder.")
        need("data", bool(self.data.strip()), "Choose a data folder holding train.jsonl and valid.jsonl.")
        if "data" not in out and check_paths:
            folder = Path(self.data).expanduser()
            need("data", folder.is_dir(), f"Data folder {self.data} does not exist.")
            need("data", (folder / "train.jsonl").is_file(),
                 f"Data folder {self.data} has no train.jsonl (one JSON example per line).")
        if "model" not in out and check_paths and _looks_like_path(self.model):
            need("model", Path(self.model).expanduser().is_dir(),
                 f"Model folder {self.model} does not exist. Pick a folder holding config.json, or a hub id.")
        if any(name not in ("model", "data") for name in out):
            return out  # range checks on values of the wrong type would only add noise
        need("fine_tune_type", self.fine_tune_type in FINE_TUNE_TYPES,
             f"Fine-tune type must be one of {', '.join(FINE_TUNE_TYPES)}.")
        need("optimizer", self.optimizer in OPTIMIZERS, f"Optimizer must be one of {', '.join(OPTIMIZERS)}.")
        need("lr_schedule", self.lr_schedule in LR_SCHEDULES, "Schedule must be constant or cosine.")
        need("num_layers", self.num_layers == -1 or self.num_layers >= 1,
             "Layers must be at least 1, or -1 for all layers.")
        need("lora_rank", self.lora_rank >= 1, "LoRA rank must be at least 1 (8 is usual).")
        need("lora_scale", self.lora_scale > 0, "LoRA scale must be greater than 0 (20 is mlx-lm's default).")
        need("lora_dropout", 0.0 <= self.lora_dropout < 1.0, "LoRA dropout must be between 0 and 1 (0 is usual).")
        need("iters", self.iters >= 1, "Steps must be at least 1.")
        need("batch_size", self.batch_size >= 1, "Batch size must be at least 1.")
        need("learning_rate", 0 < self.learning_rate < 1,
             "Learning rate must be greater than 0 and below 1 (the lab uses 1e-5).")
        need("warmup_steps", 0 <= self.warmup_steps < self.iters,
             "Warm-up steps must be 0 or more and fewer than the steps.")
        need("min_learning_rate", 0 <= self.min_learning_rate <= self.learning_rate,
             "Minimum learning rate must be between 0 and the learning rate.")
        need("grad_accumulation_steps", self.grad_accumulation_steps >= 1,
             "Gradient accumulation must be at least 1 (1 means none).")
        need("max_seq_length", self.max_seq_length >= 8, "Max sequence length must be at least 8 tokens.")
        need("seed", self.seed >= 0, "Seed must be 0 or more.")
        need("steps_per_report", self.steps_per_report >= 1, "Report every must be at least 1 step.")
        need("steps_per_eval", self.steps_per_eval >= 1, "Evaluate every must be at least 1 step.")
        need("val_batches", self.val_batches == -1 or self.val_batches >= 1,
             "Validation batches must be at least 1, or -1 for the whole validation set.")
        need("save_every", self.save_every >= 1, "Save every must be at least 1 step.")
        need("save_every", self.save_every % max(self.grad_accumulation_steps, 1) == 0,
             "Save every must be a multiple of the gradient accumulation steps (checkpoints are taken "
             "between optimizer updates).")
        need("early_stopping_patience", self.early_stopping_patience >= 0,
             "Early-stopping patience must be 0 (off) or more.")
        need("early_stopping_min_delta", self.early_stopping_min_delta >= 0,
             "Minimum improvement must be 0 or more.")
        need("divergence_factor", self.divergence_factor > 1, "Divergence factor must be greater than 1.")
        return out

    def validate(self, *, check_paths: bool = True) -> None:
        """Raise ConfigError listing every problem, one per line."""
        found = self.problems(check_paths=check_paths)
        if found:
            raise ConfigError("\n".join(found.values()))

    # -- mlx-lm shapes --------------------------------------------------------------------------------
    def lora_parameters(self) -> dict[str, float]:
        return {"rank": self.lora_rank, "scale": self.lora_scale, "dropout": self.lora_dropout}

    def schedule_dict(self) -> dict[str, Any] | None:
        """mlx-lm's `lr_schedule` (for tuner.utils.build_schedule), or None for a constant rate."""
        if self.lr_schedule == "cosine":
            out: dict[str, Any] = {"name": "cosine_decay",
                                   "arguments": [self.learning_rate, max(self.iters - self.warmup_steps, 1),
                                                 self.min_learning_rate]}
        elif self.warmup_steps:
            out = {"name": "linear_schedule", "arguments": [self.learning_rate, self.learning_rate, 1]}
        else:
            return None
        if self.warmup_steps:
            out.update(warmup=self.warmup_steps, warmup_init=0.0)
        return out

    def to_mlx_dict(self) -> dict[str, Any]:
        """The config as mlx-lm's `-c` YAML dict (plus a `lem:` section mlx-lm ignores)."""
        out: dict[str, Any] = {}
        lem: dict[str, Any] = {}
        for f in fields(self):
            if f.name in NESTED_KEYS or f.name in SCHEDULE_KEYS:
                continue
            (lem if f.metadata["lem"] else out)[f.name] = getattr(self, f.name)
        out["train"] = True
        out["lora_parameters"] = self.lora_parameters()
        if (schedule := self.schedule_dict()) is not None:
            out["lr_schedule"] = schedule
        out["lem"] = lem
        if not out["adapter_path"]:
            out.pop("adapter_path")
        return out

    def to_yaml(self) -> str:

        return yaml.safe_dump(self.to_mlx_dict(), sort_keys=False)

    def save_yaml(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml(), encoding="utf-8")
        return path

    def to_command(self, config_file: str | None = None) -> list[str]:
        """The equivalent `mlx_lm lora` argv. LoRA rank/scale/dropout and schedules have no flags in
        mlx-lm: when they differ from its defaults the command needs `-c FILE` (a YAML from `save_yaml`).
        Our model names (catalog ids, the built-in model) become what plain mlx-lm resolves: a folder or a
        hub repo."""
        argv = ["mlx_lm", "lora", "--train", "--model", mlx_lm_model_arg(self.model), "--data", self.data,
                "--fine-tune-type", self.fine_tune_type, "--optimizer", self.optimizer,
                "--num-layers", str(self.num_layers), "--batch-size", str(self.batch_size),
                "--iters", str(self.iters), "--learning-rate", repr(float(self.learning_rate)),
                "--val-batches", str(self.val_batches), "--steps-per-report", str(self.steps_per_report),
                "--steps-per-eval", str(self.steps_per_eval), "--save-every", str(self.save_every),
                "--max-seq-length", str(self.max_seq_length),
                "--grad-accumulation-steps", str(self.grad_accumulation_steps), "--seed", str(self.seed)]
        if self.adapter_path:
            argv += ["--adapter-path", self.adapter_path]
        if self.mask_prompt:
            argv.append("--mask-prompt")
        if self.grad_checkpoint:
            argv.append("--grad-checkpoint")
        if self.needs_config_file() or config_file:
            argv += ["-c", config_file or "config.yaml"]
        return argv

    def command_line(self, config_file: str | None = None) -> str:
        return shlex.join(self.to_command(config_file))

    def needs_config_file(self) -> bool:
        return self.lora_parameters() != {"rank": 8, "scale": 20.0, "dropout": 0.0} or bool(self.schedule_dict())

    def with_changes(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)


# Sections for a form, in order (every field appears once).
FORM_GROUPS: dict[str, tuple[str, ...]] = {
    "Model and data": ("model", "data", "adapter_path", "resume_from"),
    "Method": ("fine_tune_type", "num_layers", "lora_rank", "lora_scale", "lora_dropout", "mask_prompt"),
    "Optimisation": ("iters", "batch_size", "learning_rate", "lr_schedule", "warmup_steps", "min_learning_rate",
                     "optimizer", "grad_accumulation_steps", "grad_checkpoint", "max_seq_length", "seed"),
    "Reporting and saving": ("steps_per_report", "steps_per_eval", "val_batches", "save_every"),
    "Safeguards": ("early_stopping_patience", "early_stopping_min_delta", "divergence_factor", "memory_guard"),
}


# mlx-lm keys that say how to run the CLI, not what to train: accepted and ignored on load.
_IGNORED_KEYS = {"train", "test", "test_batches", "config", "report_to", "project_name", "trust_remote_code",
                 "clear_cache_threshold", "optimizer_config"}


def from_mlx_dict(raw: dict[str, Any], *, source: str = "config") -> TrainConfig:
    """Build a TrainConfig from mlx-lm's `-c` shape (what `to_mlx_dict` writes, or a lab YAML)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of settings (key: value), found {type(raw).__name__}.")
    known = {f.name: f for f in fields(TrainConfig)}
    values: dict[str, Any] = {}
    flat = dict(raw)
    lem = flat.pop("lem", None) or {}
    if not isinstance(lem, dict):
        raise ConfigError(f"{source}: 'lem' must be a mapping of settings.")
    lora = flat.pop("lora_parameters", None) or {}
    for ours, theirs in NESTED_KEYS.items():
        if theirs in lora:
            values[ours] = lora[theirs]
    if (schedule := flat.pop("lr_schedule", None)) is not None:
        values.update(_schedule_fields(schedule, source))
    if flat.pop("resume_adapter_file", None):
        raise ConfigError(f"{source}: resume_adapter_file restores weights only. Use `lem train --resume RUN` "
                          "(or resume_from under lem:), which also restores optimizer state and data order.")
    unknown = []
    for key, value in list(flat.items()) + list(lem.items()):
        if key in _IGNORED_KEYS:
            continue
        if key not in known or key in NESTED_KEYS or key in SCHEDULE_KEYS:
            unknown.append(key)
            continue
        values[key] = coerce_field(value, known[key].type, key, source)
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {', '.join(sorted(unknown))}. Remove them; "
                          f"supported: {', '.join(sorted(known))}.")
    for key in NESTED_KEYS:
        if key in values:
            values[key] = coerce_field(values[key], known[key].type, key, source)
    if "fine_tune_type" in values and values["fine_tune_type"] == "full":
        raise ConfigError(f"{source}: fine_tune_type full is not supported here; use lora or dora.")
    return TrainConfig(**values)


def load_yaml(path: Path | str) -> TrainConfig:

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"Cannot read config file {path}: {err.strerror or err}.") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"Config file {path} is not valid YAML ({err}).") from None
    return from_mlx_dict(raw or {}, source=path.name)


def _schedule_fields(schedule: Any, source: str) -> dict[str, Any]:
    if not isinstance(schedule, dict) or "name" not in schedule:
        raise ConfigError(f"{source}: lr_schedule needs a name and arguments (see mlx-lm's LORA.md).")
    args = list(schedule.get("arguments") or [])
    out: dict[str, Any] = {"warmup_steps": int(schedule.get("warmup", 0) or 0)}
    if schedule["name"] == "cosine_decay" and args:
        out.update(lr_schedule="cosine", learning_rate=float(args[0]),
                   min_learning_rate=float(args[2]) if len(args) > 2 else 0.0)
    elif schedule["name"] == "linear_schedule" and len(args) >= 2 and float(args[0]) == float(args[1]):
        out.update(lr_schedule="constant", learning_rate=float(args[0]))
    else:
        raise ConfigError(f"{source}: lr_schedule {schedule['name']!r} is not supported here; use "
                          "cosine_decay, or a constant rate with optional warm-up.")
    return out


def coerce_field(value: Any, kind: Any, key: str, source: str) -> Any:
    """A YAML value as the TrainConfig field's type wants it (PyYAML reads 1e-5 as text)."""
    kind = kind if isinstance(kind, str) else kind.__name__
    try:
        if kind == "float" and isinstance(value, str):
            return float(value)  # PyYAML reads 1e-5 as a string
        if kind == "int" and isinstance(value, float) and value.is_integer():
            return int(value)
        if kind == "str" and value is None:
            return ""
    except ValueError:
        raise ConfigError(f"{source}: {key} must be a number, found {value!r}.") from None
    return value


def _looks_like_path(model: str) -> bool:
    # Catalog ids and hub ids (owner/name) are resolved at run time; only an explicit path is checked here.
    return model.startswith(("/", ".", "~"))


def as_dict(config: TrainConfig) -> dict[str, Any]:
    return asdict(config)


# -- presets --------------------------------------------------------------------------------------------

PRESETS = ("LEK recipe", "Quick test")


def lek_recipe(model_size_b: float | None = None, **changes: Any) -> TrainConfig:
    """The lab's recipe (docs/lab-formats.md, "Training recipe"): `--mask-prompt`, 200 iterations, batch 2,
    lr 1e-5, save every 50; mlx-lm's defaults otherwise (16 layers, rank 8, scale 20). Per scale: gradient
    checkpointing from 12B, batch 1 and lr 5e-6 at 27B. Unknown size: the 1B-4B numbers."""
    size = model_size_b or 1.0
    base = TrainConfig(fine_tune_type="lora", mask_prompt=True, iters=200, batch_size=2, learning_rate=1e-5,
                       save_every=50, num_layers=16, max_seq_length=2048, val_batches=25, steps_per_eval=200)
    if size >= 20:
        base = replace(base, batch_size=1, learning_rate=5e-6, grad_checkpoint=True)
    elif size >= 8:
        base = replace(base, grad_checkpoint=True)
    return replace(base, **changes)


def quick_test(**changes: Any) -> TrainConfig:
    """A minute-long run that proves model, data and settings work end to end (not a useful adapter)."""
    base = TrainConfig(iters=10, batch_size=1, learning_rate=1e-4, num_layers=2, max_seq_length=512,
                       steps_per_report=1, steps_per_eval=5, val_batches=2, save_every=5, mask_prompt=True)
    return replace(base, **changes)


def model_size_b(model: str) -> float | None:
    """Billions of parameters, for picking the recipe: from a size in the name ("gemma-3-27b-it" -> 27),
    else counted from a local folder's config.json; None when neither tells."""

    found = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])", Path(model.rstrip("/")).name)
    if found:
        return float(found.group(1))
    try:
        raw = json.loads((Path(model).expanduser() / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    nested = raw.get("text_config") if isinstance(raw, dict) else None
    c = nested if isinstance(nested, dict) else raw
    if not isinstance(c, dict):
        return None
    h, n, v = c.get("hidden_size"), c.get("num_hidden_layers"), c.get("vocab_size")
    if not (h and n and v):
        return None
    i = c.get("intermediate_size") or 4 * h
    heads, kv = c.get("num_attention_heads") or 1, c.get("num_key_value_heads") or c.get("num_attention_heads") or 1
    attention = 2 * h * h + 2 * h * (h * kv // heads)
    return float(v * h + n * (attention + 3 * h * i)) / 1e9


def preset(name: str, *, model_size_b: float | None = None, **changes: Any) -> TrainConfig:
    if name == "LEK recipe":
        return lek_recipe(model_size_b, **changes)
    if name == "Quick test":
        return quick_test(**changes)
    raise ConfigError(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}.")


def mlx_lm_model_arg(model: str) -> str:
    """`model` as plain mlx-lm can load it: a catalog id becomes its hub repo (or its downloaded folder), the
    built-in model its converted folder; anything else is passed through unchanged."""
    try:
        ref = resolve_model(model)
    except LemError:  # a name nothing resolves: mlx-lm will say so in its own words
        return model
    if ref.folder is not None:
        return str(ref.folder)
    if ref.kind == "embedded":
        return str(embedded_model_dir())
    return ref.repo or model
