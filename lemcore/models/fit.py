"""Will a model fit in this machine's memory? Checked BEFORE any download or load, arithmetic in words.

needed  = weights + KV cache for batch x context + working memory (activations, runtime, tokenizer)
usable  = total RAM minus what the OS and other apps keep: 2.5 GB + 10 % of RAM. Jan (PR #7842) measured
          usable unified memory on Macs at 8 GB -> ~4.7, 16 -> ~11.9, 32 -> ~26.3, which this formula
          reproduces. On a Mac it is also capped by Metal's recommended working set when that is known.
verdict = red above usable (refused unless forced); yellow when tight or when other apps hold the memory right
          now; green otherwise. Labels must say which figures were compared (docs/platform-notes.md, "Memory
          fit"), so every report carries `words`.

Weights come from the catalog, the safetensors headers of a local folder (only the JSON header is read, never
the tensors) or the hub's metadata; the KV cache from config.json. Nothing here imports mlx at module level.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lemcore.errors import ModelFitError, ModelLoadError
from lemcore.events import Event
from lemcore.hardware import GB, Hardware

GREEN, YELLOW, RED = "green", "yellow", "red"
DEFAULT_CONTEXT = 4096  # prompt + answer of one volunteer unit, with room to spare
OS_RESERVE_FIXED = int(2.5 * GB)
OS_RESERVE_FRACTION = 0.10
WORKING_FIXED = GB // 4  # Python, MLX runtime, tokenizer
WORKING_FRACTION = 0.10  # activations and allocator slack, relative to the weights
TIGHT_FRACTION = 0.85  # above this share of usable memory other apps start swapping
_MAX_HEADER = 100 * 1024 * 1024  # a safetensors JSON header bigger than this is corrupt, not a model
# Tensors a text-only mlx-lm model drops on load (Gemma 3's SigLIP vision tower): downloaded, never in memory.
DROPPED_PREFIXES = ("vision_tower", "multi_modal_projector", "audio_tower", "vision_model",
                    "model.vision_tower", "model.multi_modal_projector")
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "U32": 4, "I16": 2, "U16": 2,
                "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_TORCH_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
# Answers generated together at full speed on a CPU, by total memory (docs/platform-notes.md, "Batched
# generation"): on a 2-core, 23 GB machine our engine wrote 889 gold answers an hour at 16 in flight against
# fewer at the 2/4/8 presets. Smaller machines get fewer so the caches leave room for the rest of the computer.
CPU_BATCH_BY_MEMORY = ((16 * GB, 16), (8 * GB, 8), (0, 4))
METAL_BATCH = 8  # not measured above 8 on Metal yet: the preset it had


@dataclass(frozen=True)
class KVShape:
    """What one token costs in the KV cache.

    Sliding-window layers keep only the last `sliding_window` tokens."""

    layers: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int = 2
    sliding_window: int | None = None
    sliding_layers: int = 0

    def bytes_for(self, batch: int, context: int) -> int:
        per_token_layer = 2 * self.kv_heads * self.head_dim * self.dtype_bytes  # keys and values
        window = min(context, self.sliding_window) if self.sliding_window else context
        tokens = (self.layers - self.sliding_layers) * context + self.sliding_layers * window
        return batch * per_token_layer * tokens


@dataclass(frozen=True)
class ModelNeeds:
    """The memory figures of one model. `source` says where the weight figure came from."""

    name: str
    weight_bytes: int
    kv: KVShape
    source: str


@dataclass(frozen=True)
class FitReport(Event):
    """The fit verdict for one model on one machine (also emitted as an event before downloads and loads)."""

    name: str
    verdict: str  # green, yellow or red
    needed_bytes: int
    weight_bytes: int
    kv_bytes: int
    working_bytes: int
    usable_bytes: int
    total_bytes: int
    available_bytes: int
    batch: int
    context: int
    words: str
    full_speed_batch: int = 0  # answers at once at full speed on this machine (0 = not worked out)

    @property
    def fits(self) -> bool:
        return self.verdict != RED


def gb(n: float) -> str:
    """Memory in the units people read on their Mac (GiB, written GB; MB below 0.1 GB)."""
    return f"{n / GB:.1f} GB" if n >= GB / 10 else f"{n / 1024**2:.0f} MB"


def os_reserve(total: int) -> int:
    return OS_RESERVE_FIXED + int(OS_RESERVE_FRACTION * total)


def usable_memory(hw: Hardware, gpu_limit: int | None = None) -> int:
    usable = max(0, hw.total_ram - os_reserve(hw.total_ram))
    return min(usable, gpu_limit) if gpu_limit else usable


def metal_working_set() -> int | None:
    """Metal's recommended working set (bytes), or None off Metal. Imports mlx: call only when needed."""
    try:
        import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")
    except ImportError:
        return None
    if not mx.metal.is_available():
        return None
    size = mx.device_info().get("max_recommended_working_set_size")
    return int(size) if size else None


def machine_batch(total_ram: int, cores: int, *, metal: bool = False) -> int:
    """Answers generated together at full speed on a machine with this memory and these cores (the table
    above). A single core gets at most 8: each decoding step takes twice as long, and so does every answer."""
    if metal:
        return METAL_BATCH
    batch = next(b for floor, b in CPU_BATCH_BY_MEMORY if total_ram >= floor)
    return min(batch, 8) if cores < 2 else batch


def full_speed_batch(needs: ModelNeeds, hw: Hardware, *, cores: int, context: int = DEFAULT_CONTEXT,
                     metal: bool = False, gpu_limit: int | None = None) -> int:
    """`machine_batch`, halved until this model's weights and caches for that many answers fit comfortably
    (within the share of usable memory that leaves other apps room); at least 1."""
    batch = machine_batch(hw.total_ram, cores, metal=metal)
    room = TIGHT_FRACTION * usable_memory(hw, gpu_limit)
    fixed = needs.weight_bytes + WORKING_FIXED + int(WORKING_FRACTION * needs.weight_bytes)
    while batch > 1 and fixed + needs.kv.bytes_for(batch, context) > room:
        batch //= 2
    return batch


def assess_fit(
    needs: ModelNeeds,
    hw: Hardware,
    *,
    batch: int = 1,
    context: int = DEFAULT_CONTEXT,
    gpu_limit: int | None = None,
    cores: int | None = None,
    metal: bool = False,
) -> FitReport:
    """Compare what `needs` takes with what `hw` can give. Pure arithmetic: no I/O. With `cores` given, the
    report also carries the batch that runs at full speed here (`full_speed_batch`)."""
    kv = needs.kv.bytes_for(batch, context)
    working = WORKING_FIXED + int(WORKING_FRACTION * needs.weight_bytes)
    needed = needs.weight_bytes + kv + working
    usable = usable_memory(hw, gpu_limit)
    machine = "this Mac" if hw.os_name.startswith("macOS") else "this computer"
    cache = f" + context cache {gb(kv)} for {batch} x {context} tokens" if kv else ""
    arithmetic = (
        f"{needs.name} needs ~{gb(needed)} (weights {gb(needs.weight_bytes)}{cache} + working memory "
        f"{gb(working)}); {machine} can give ~{gb(usable)} ({gb(hw.total_ram)} minus "
        f"~{gb(hw.total_ram - usable)} kept for the system and other apps)."
    )
    if needed > usable:
        verdict = RED
        advice = (f" Too big for {machine}: pick a smaller model, or force it at the risk of freezing the "
                  "machine.")
    elif needed > TIGHT_FRACTION * usable:
        verdict = YELLOW
        advice = " Tight: it fits, but other apps may slow down or swap while it runs."
    elif needed > hw.available_ram:
        verdict = YELLOW
        advice = f" It fits, but only ~{gb(hw.available_ram)} is free right now: close other apps first."
    else:
        verdict, advice = GREEN, " Fits."
    return FitReport(
        name=needs.name, verdict=verdict, needed_bytes=needed, weight_bytes=needs.weight_bytes, kv_bytes=kv,
        working_bytes=working, usable_bytes=usable, total_bytes=hw.total_ram,
        available_bytes=hw.available_ram, batch=batch, context=context, words=arithmetic + advice,
        full_speed_batch=0 if cores is None else full_speed_batch(needs, hw, cores=cores, context=context,
                                                                  metal=metal, gpu_limit=gpu_limit),
    )


def require_fit(report: FitReport, *, force: bool = False) -> None:
    """Refuse a red verdict unless the user forced it."""
    if report.verdict == RED and not force:
        raise ModelFitError(f"{report.words} (Use --force / \"Load anyway\" to try regardless.)")


# -- reading a model's figures from files --------------------------------------------------------------------


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a .safetensors file: 8-byte little-endian length, then that much JSON."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ValueError("file shorter than its 8-byte header length")
            (length,) = struct.unpack("<Q", raw)
            if length > _MAX_HEADER:
                raise ValueError(f"header length {length} is not plausible")
            header = json.loads(f.read(length))
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"The weights file {path} is damaged or not a safetensors file ({err}). "
                             "Download or convert the model again.") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"The weights file {path} has an unreadable header. Download or convert it "
                             "again.")
    try:
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (KeyError, IndexError, TypeError, ValueError):
        raise ModelLoadError(f"The weights file {path} has a malformed header. Download or convert it "
                             "again.") from None
    expected, actual = 8 + length + max(ends, default=0), path.stat().st_size
    if actual < expected:
        raise ModelLoadError(f"The weights file {path} is truncated ({actual} of {expected} bytes): its "
                             "download or conversion did not finish. Download or convert the model again.")
    return header


def tensor_bytes(header: dict[str, Any]) -> tuple[int, dict[str, int]]:
    """(bytes of the tensors a text model keeps, bytes per dtype) from one safetensors header."""
    kept = 0
    by_dtype: dict[str, int] = {}
    for name, info in header.items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        start, end = info.get("data_offsets", (0, 0))
        size = int(end) - int(start)
        if name.startswith(DROPPED_PREFIXES) or ".vision_tower." in name:
            continue
        kept += size
        by_dtype[info.get("dtype", "")] = by_dtype.get(info.get("dtype", ""), 0) + size
    return kept, by_dtype


def compute_dtype_bytes(by_dtype: dict[str, int]) -> int | None:
    """Bytes per value of the dtype the model computes (and caches) in, from its tensors' dtypes.

    F32 for a float32 CPU model, BF16/F16 scales and norms for a quantized one. U32 is packed quantized
    weights, not a compute dtype."""
    floats = {d: s for d, s in by_dtype.items() if d in ("F32", "F16", "BF16")}
    return _DTYPE_BYTES[max(floats, key=floats.__getitem__)] if floats else None


def weight_files(folder: Path) -> list[Path]:
    """The weight files mlx-lm loads (it globs `model*.safetensors`)."""
    return sorted(folder.glob("model*.safetensors"))


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"The model folder {folder} has no config.json: it is not a model folder, "
                             "or its download is incomplete.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ModelLoadError(f"The config.json in {folder} is corrupt ({err}). Download the model again.") \
            from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"The config.json in {folder} is not a JSON object. Download the model again.")
    return config


def kv_shape_from_config(config: dict[str, Any], dtype_bytes: int | None = None) -> KVShape:
    """KV-cache figures from a Hugging Face / mlx-lm config.json (multimodal configs nest a text_config)."""
    nested = config.get("text_config")
    text: dict[str, Any] = nested if isinstance(nested, dict) else config
    model_type = str(text.get("model_type") or config.get("model_type") or "")
    try:
        layers = int(text["num_hidden_layers"])
        heads = int(text.get("num_attention_heads") or 8)
        kv_heads = int(text.get("num_key_value_heads") or heads)
        head_dim = int(text.get("head_dim") or int(text["hidden_size"]) // heads)
    except (KeyError, TypeError, ValueError) as err:
        raise ModelLoadError(f"config.json lacks the model's shape ({err!s} is missing or invalid).") \
            from None
    if dtype_bytes is None:
        dtype = text.get("torch_dtype") or text.get("dtype") or config.get("torch_dtype") or "bfloat16"
        dtype_bytes = _TORCH_DTYPE_BYTES.get(str(dtype), 2)
    window = text.get("sliding_window")
    sliding = 0
    if isinstance(text.get("layer_types"), list):
        sliding = sum(1 for t in text["layer_types"] if t == "sliding_attention")
    elif window and model_type.startswith("gemma3"):
        # mlx-lm's gemma3: every `pattern`-th layer is global, the rest rotate over the window.
        pattern = int(text.get("sliding_window_pattern") or 6)
        sliding = layers - layers // pattern
    return KVShape(layers, kv_heads, head_dim, dtype_bytes, int(window) if sliding and window else None, sliding)


def needs_from_folder(folder: Path, name: str | None = None) -> ModelNeeds:
    """Weights from the safetensors headers (not the tensors) plus the KV shape from config.json."""
    folder = Path(folder)
    config = read_config(folder)
    files = weight_files(folder)
    if not files:
        raise ModelLoadError(f"The model folder {folder} has no weights (no model*.safetensors file). "
                             "Download or convert the model again.")
    total = 0
    by_dtype: dict[str, int] = {}
    for path in files:
        kept, dtypes = tensor_bytes(read_safetensors_header(path))
        total += kept
        for dtype, size in dtypes.items():
            by_dtype[dtype] = by_dtype.get(dtype, 0) + size
    return ModelNeeds(name or folder.name, total, kv_shape_from_config(config, compute_dtype_bytes(by_dtype)),
                      f"safetensors headers in {folder}")
