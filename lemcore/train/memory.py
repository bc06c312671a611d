"""Memory guard for LoRA training: estimate the peak before starting, refuse or suggest, watch while running.

The estimate is deliberately simple (weights + adapter/optimizer state + stored activations of the trained
blocks + the logits, which dominate for large vocabularies) and rough, about +-30%. Checked against the lab's
measured peaks for Gemma 3 4B/12B/27B (6.5 / 11.5 / 18.7 GB, docs/lab-formats.md, "Training recipe") it errs on
the high side, which is the safe side for a guard that exists to stop the OS from killing a run half way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import psutil

from lemcore.errors import ModelFitError
from lemcore.hardware import GB, detect_hardware
from lemcore.train.config import TrainConfig

OVERHEAD_BYTES = int(0.25 * GB)  # MLX, tokenizer, Python
USABLE_FRACTION = 0.9  # of available memory: leave the rest to the OS and the GUI
LOW_MEMORY_BYTES = int(0.5 * GB)  # stop a running job (with a checkpoint) below this much free memory


def flat_tree(tree: Any) -> list[tuple[str, Any]]:
    """`mlx.utils.tree_flatten(tree)`: (dotted name, leaf) pairs. Typed as a list: it returns a dict only when
    given a dict to fill, which nothing here does."""
    from mlx.utils import tree_flatten  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    flat = tree_flatten(tree)
    if not isinstance(flat, list):
        raise TypeError(f"tree_flatten returned {type(flat).__name__}, not a list")
    return flat


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    num_layers: int
    intermediate_size: int
    vocab_size: int
    num_heads: int
    weight_bytes: int
    activation_bytes: int  # bytes per activation element (2 for bf16/f16/quantized, 4 for float32)

    @classmethod
    def from_model(cls, model: Any, config: dict[str, Any]) -> ModelShape:
        """Read the shape from an mlx-lm model (lazy-loaded is fine: only shapes and dtypes are used)."""
        text = config.get("text_config") or config
        params = flat_tree(model.parameters())
        weight_bytes = sum(int(v.nbytes) for _, v in params)
        floats = [v.dtype for _, v in params if v.dtype.size in (2, 4) and "float" in str(v.dtype)]
        act = 4 if floats and all(d.size == 4 for d in floats) else 2
        hidden = int(text.get("hidden_size", 0) or 0)
        return cls(hidden_size=hidden, num_layers=len(model.layers),
                   intermediate_size=int(text.get("intermediate_size", 4 * hidden) or 4 * hidden),
                   vocab_size=int(text.get("vocab_size", 32000) or 32000),
                   num_heads=int(text.get("num_attention_heads", 8) or 8),
                   weight_bytes=weight_bytes, activation_bytes=act)


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    adapter_state: int
    activations: int
    logits: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.adapter_state + self.activations + self.logits + self.overhead

    @property
    def total_gb(self) -> float:
        return self.total / GB


def padded_length(longest_tokens: int, max_seq_length: int) -> int:
    """The sequence length of the longest batch, padded as mlx-lm's batcher does."""
    return min(1 + 32 * ((longest_tokens + 31) // 32), max_seq_length)


def estimate_peak(shape: ModelShape, config: TrainConfig, longest_tokens: int) -> MemoryEstimate:
    layers = shape.num_layers if config.num_layers == -1 else min(config.num_layers, shape.num_layers)
    seq = padded_length(max(longest_tokens, 1), config.max_seq_length)
    tokens = config.batch_size * seq
    h, i, a = shape.hidden_size, shape.intermediate_size, shape.activation_bytes
    # LoRA on q,k,v,o and the three MLP projections: rank x (in + out) each; float32 params, grads, Adam m and v.
    trainable = layers * config.lora_rank * (8 * h + 3 * (h + i))
    adapter_state = trainable * 4 * 4
    per_layer = tokens * (5 * h + 3 * i) * a  # what the backward pass needs from one block's forward pass
    scores = tokens * shape.num_heads * seq * 4  # attention probabilities of one block
    if config.grad_checkpoint:
        activations = layers * tokens * h * a + per_layer + scores  # block inputs only, one block recomputed
    else:
        activations = layers * (per_layer + scores)
    logits = tokens * shape.vocab_size * (2 * a + 4)  # logits, their gradient, float32 loss internals
    return MemoryEstimate(shape.weight_bytes, adapter_state, activations, logits, OVERHEAD_BYTES)


def usable_bytes() -> int:
    """Memory a training run may use on this machine now."""

    usable = int(detect_hardware().available_ram * USABLE_FRACTION)
    try:  # Apple GPUs: Metal's working-set limit binds before RAM does
        import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

        if mx.metal.is_available():
            usable = min(usable, int(mx.metal.device_info()["max_recommended_working_set_size"]))
    except (ImportError, AttributeError, KeyError):
        pass
    return usable


def suggestions(shape: ModelShape, config: TrainConfig, longest_tokens: int, limit: int) -> list[str]:
    """Cheaper settings, each with its estimate, that fit in `limit` bytes (cheapest change first)."""
    out: list[str] = []
    options: list[tuple[str, TrainConfig]] = []
    if not config.grad_checkpoint:
        options.append(("turn on gradient checkpointing", replace(config, grad_checkpoint=True)))
    base = replace(config, grad_checkpoint=True)
    batch = config.batch_size
    while batch > 1:
        batch //= 2
        accum = config.grad_accumulation_steps * (config.batch_size // batch)
        options.append((f"gradient checkpointing, batch size {batch} with gradient accumulation {accum} "
                        "(same effective batch)", replace(base, batch_size=batch, grad_accumulation_steps=accum)))
    layers = shape.num_layers if config.num_layers == -1 else config.num_layers
    while layers > 4:
        layers //= 2
        options.append((f"gradient checkpointing, batch size 1, {layers} layers",
                        replace(base, batch_size=1, num_layers=layers)))
    if config.max_seq_length > 512 and longest_tokens > 512:
        options.append(("gradient checkpointing, batch size 1, max sequence length 512 (cuts long examples)",
                        replace(base, batch_size=1, max_seq_length=512)))
    for text, cheaper in options:
        gb = estimate_peak(shape, cheaper, longest_tokens).total_gb
        if gb * GB <= limit:
            out.append(f"{text} (about {gb:.1f} GB)")
        if len(out) == 3:
            break
    return out


def check_fits(shape: ModelShape, config: TrainConfig, longest_tokens: int, limit: int | None = None) -> MemoryEstimate:
    """Raise ModelFitError (with cheaper settings that fit) when the estimate exceeds usable memory."""
    limit = usable_bytes() if limit is None else limit
    estimate = estimate_peak(shape, config, longest_tokens)
    if estimate.total <= limit:
        return estimate
    options = suggestions(shape, config, longest_tokens, limit)
    head = (f"This training run needs about {estimate.total_gb:.1f} GB of memory at its peak, but only "
            f"{limit / GB:.1f} GB is free to use. ")
    if options:
        tail = "Settings that should fit: " + "; or ".join(options) + "."
    else:
        tail = ("No setting change fits: use a smaller or 4-bit model, or close other applications. "
                "To try anyway, turn off the memory guard.")
    raise ModelFitError(head + tail)


class MemoryWatch:
    """Checks free system memory during a run (at most every `interval` seconds) so the engine can stop at a
    checkpoint before the OS kills it. MLX's own peak counter is reported in every TrainStep."""

    def __init__(self, interval: float = 1.0, low_bytes: int = LOW_MEMORY_BYTES) -> None:
        self.interval = interval
        self.low_bytes = low_bytes
        self._next = 0.0

    def low_memory(self) -> str | None:
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + self.interval

        free = free_memory_bytes()
        if free >= self.low_bytes:
            return None
        return low_memory_message(free)


def free_memory_bytes() -> int:
    return int(psutil.virtual_memory().available)


def low_memory_message(free: int, where: str = "") -> str:
    """Why a run stopped for memory; `where` names the machine in a run over several."""
    on = f" on {where}" if where else ""
    return (f"Memory ran low{on} ({free / GB:.1f} GB free): the run stopped at a checkpoint before the system "
            "would kill it. Close other applications, or resume with gradient checkpointing or a smaller "
            "batch size.")
