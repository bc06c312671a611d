"""Convert a llama.cpp GGUF model file into an mlx-lm model folder.

The folder holds config.json, model.safetensors and a tokenizer rebuilt from the GGUF metadata, so
`mlx_lm.load(folder)` works offline. Supported: the `llama` and `gemma3` architectures with F32, F16, Q4_0,
Q4_1 and Q8_0 tensors (read exactly by `mx.load`); BF16, K-quants and other types only when the optional
`gguf` package is installed, because `mx.load` reads those wrongly or not at all.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from lemcore.errors import ConfigError, ModelLoadError
from lemcore.events import Event
from lemcore.jobs import CancelToken, Report, no_report
from lemcore.models.gguf.tokenizer import write_tokenizer

if TYPE_CHECKING:
    import mlx.core as mx

CONVERTER_VERSION = 1
DTYPES = ("float32", "4bit")


@dataclass(frozen=True)
class ConvertProgress(Event):
    """Progress of a conversion.

    `stage`: read, tensors (done/total = tensors converted), tokenizer, write, done; `ensure_embedded_model`
    adds waiting (another process is converting) and hash (checking the source file).
    """

    stage: str
    done: int
    total: int


# GGML tensor type ids (ggml.h). mx.load reads these exactly; Q4_0/Q4_1/Q8_0 come back as MLX affine
# quantization triples (weight, scales, biases) with group size 32. (It would squeeze BF16 through F16.)
_F32, _F16, _Q4_0, _Q4_1, _Q8_0 = 0, 1, 2, 3, 8
_PLAIN = {_F32, _F16}
_PACKED = {_Q4_0, _Q4_1, _Q8_0}
_TYPE_NAMES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
               10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 30: "BF16"}
# Source types with more than 4 bits of precision: in "4bit" output they are re-quantized to 8 bits.
_HIGH_PRECISION = {6, 7, 8, 9, 13, 14, 15}
_GROUP = 32  # GGML's block size, and the group size every quantized weight is written with

_COMMON_BLOCK = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
}
_LLAMA_BLOCK = {**_COMMON_BLOCK, "ffn_norm": "post_attention_layernorm"}
_GEMMA3_BLOCK = {
    **_COMMON_BLOCK, "post_attention_norm": "post_attention_layernorm", "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm", "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
}
_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.(\w+)")


@dataclass(frozen=True)
class GGUFTensor:
    """One entry of the GGUF tensor table: GGML type id, shape (rows first) and absolute data offset."""

    ggml_type: int
    shape: tuple[int, ...]
    offset: int


_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


class _HeaderReader:
    """Reads the GGUF header: metadata key/values and the tensor table (names and GGML types)."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.size = f, size

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        n = struct.calcsize(fmt)
        data = self.f.read(n)
        if len(data) != n:
            raise ValueError("unexpected end of file")
        return struct.unpack(fmt, data)

    def string(self) -> str:
        (n,) = self.unpack("<Q")
        if n > self.size:
            raise ValueError("string length beyond end of file")
        return self.f.read(n).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.unpack("<" + _SCALARS[vtype])[0]
        if vtype == 8:
            return self.string()
        if vtype == 9:
            etype, count = self.unpack("<IQ")
            if count > self.size:
                raise ValueError("array length beyond end of file")
            if etype in _SCALARS:  # numeric arrays (token types, scores) in one unpack
                return list(self.unpack(f"<{count}{_SCALARS[etype]}"))
            return [self.value(etype) for _ in range(count)]
        raise ValueError(f"unknown metadata value type {vtype}")


def read_gguf_header(path: Path) -> tuple[dict[str, Any], dict[str, GGUFTensor]]:
    """(metadata, {tensor name: GGUFTensor}) of a GGUF file, without reading the tensor data.

    Parsed here rather than taken from mx.load because mx.load reports no tensor types and fails outright
    on some files (e.g. Q5_0 tensors).
    """
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise ModelLoadError(
                    f"{path} is not a GGUF model file (it does not start with the GGUF signature). "
                    "Choose a .gguf file exported by llama.cpp, or a folder in MLX format."
                )
            reader = _HeaderReader(f, path.stat().st_size)
            version, n_tensors, n_kv = reader.unpack("<IQQ")
            if version not in (2, 3):
                raise ModelLoadError(f"{path} is GGUF version {version}; only versions 2 and 3 can be read.")
            meta = {}
            for _ in range(n_kv):
                key = reader.string()
                meta[key] = reader.value(reader.unpack("<I")[0])
            table = []
            for _ in range(n_tensors):
                name = reader.string()
                (n_dims,) = reader.unpack("<I")
                dims = reader.unpack(f"<{n_dims}Q")  # GGML order: fastest-varying first
                table.append((name, dims, *reader.unpack("<IQ")))
            align = int(meta.get("general.alignment", 32))
            start = -(-f.tell() // align) * align  # tensor data begins at the next aligned offset
            tensors = {name: GGUFTensor(ttype, tuple(reversed(dims)), start + off) for name, dims, ttype, off in table}
            return meta, tensors
    except (struct.error, ValueError) as err:
        raise ModelLoadError(f"{path} is damaged or truncated ({err}). Download it again.") from None
    except OSError as err:
        raise ModelLoadError(f"Cannot read {path}: {err.strerror or err}.") from None


def _get(meta: dict[str, Any], key: str, default: Any = None) -> Any:
    value = meta.get(key)
    return default if value is None else value


def _config(arch: str, meta: dict[str, Any], tensors: dict[str, GGUFTensor], path: Path) -> dict[str, Any]:
    """config.json for mlx-lm's llama or gemma3_text model from the `<arch>.*` metadata keys."""
    def need(key: str) -> Any:
        if meta.get(key) is None:
            raise ModelLoadError(f"{path} lacks the setting '{key}'; the file may be damaged or incomplete.")
        return meta[key]

    if "token_embd.weight" not in tensors:
        raise ModelLoadError(f"{path} has no token embedding tensor; it is not a complete language model.")
    hidden = int(need(f"{arch}.embedding_length"))
    layers = int(need(f"{arch}.block_count"))
    n_head = int(need(f"{arch}.attention.head_count"))
    config: dict[str, Any] = {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": int(need(f"{arch}.feed_forward_length")),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(_get(meta, f"{arch}.attention.head_count_kv", n_head)),
        "head_dim": int(_get(meta, f"{arch}.attention.key_length", hidden // n_head)),
        "rms_norm_eps": float(need(f"{arch}.attention.layer_norm_rms_epsilon")),
        "vocab_size": tensors["token_embd.weight"].shape[0],  # may exceed the token list (padding)
        "max_position_embeddings": int(_get(meta, f"{arch}.context_length", 2048)),
        "tie_word_embeddings": "output.weight" not in tensors,
    }

    scaling = _get(meta, f"{arch}.rope.scaling.type", "none")
    if scaling == "linear":
        config["rope_scaling"] = {"type": "linear", "factor": float(_get(meta, f"{arch}.rope.scaling.factor"))}
    elif scaling != "none" or "rope_freqs.weight" in tensors:
        raise ModelLoadError(
            f"{path} uses a rotary-embedding scaling ({scaling if scaling != 'none' else 'rope_freqs'}) that "
            "this converter does not support. Use the model in MLX format instead."
        )
    rope_dims = _get(meta, f"{arch}.rope.dimension_count")
    if rope_dims is not None and int(rope_dims) != config["head_dim"]:
        raise ModelLoadError(f"{path} uses partial rotary embeddings, which mlx-lm's {arch} model lacks.")

    if arch == "llama":
        config.update(model_type="llama", architectures=["LlamaForCausalLM"], rope_traditional=False,
                      rope_theta=float(_get(meta, "llama.rope.freq_base", 10000.0)),
                      attention_bias=any(n.endswith(".attn_q.bias") for n in tensors),
                      mlp_bias=any(n.endswith(".ffn_up.bias") for n in tensors))
    else:
        # Gemma 3 27B scales queries by hidden/heads, the other sizes by head_dim (as llama.cpp does).
        scalar = hidden // n_head if layers == 62 else config["head_dim"]
        config.update(
            model_type="gemma3_text", architectures=["Gemma3ForCausalLM"],
            rope_theta=float(_get(meta, "gemma3.rope.freq_base", 1_000_000.0)),
            rope_local_base_freq=float(_get(meta, "gemma3.rope.freq_base_swa", 10_000.0)),
            sliding_window=int(_get(meta, "gemma3.attention.sliding_window", 512)),
            # Every 6th layer is global in Gemma 3; mlx-lm needs the pattern to fit the layer count.
            sliding_window_pattern=min(6, layers), query_pre_attn_scalar=scalar,
        )
    return config


def _mlx_name(gguf_name: str, block_names: dict[str, str], path: Path) -> str:
    base, _, suffix = gguf_name.rpartition(".")
    if base in _TOP:
        return f"{_TOP[base]}.{suffix}"
    match = _BLOCK_RE.fullmatch(base)
    if match and match.group(2) in block_names:
        return f"model.layers.{match.group(1)}.{block_names[match.group(2)]}.{suffix}"
    raise ModelLoadError(
        f"{path} holds a tensor '{gguf_name}' this converter does not know; the model is probably a variant "
        "it cannot convert. Use the model in MLX format instead."
    )


def _unpermute(a: mx.array, n_head: int) -> mx.array:
    """Undo llama.cpp's rotary row permutation (its convert script interleaves the two halves per head).

    A pure row reordering, so it applies unchanged to packed quantized rows, scales and biases.
    """
    return a.reshape(n_head, a.shape[0] // n_head // 2, 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)


def _tensor_reader(path: Path, tensors: dict[str, GGUFTensor]) -> Callable[[str], list[mx.array]]:
    """A function name -> list of mx.arrays: [weight, scales, biases] for Q4_0/Q4_1/Q8_0, else [float32].

    mx.load reads F32/F16/Q4_0/Q4_1/Q8_0 exactly and K-quants wrongly (docs/platform-notes.md, "GGUF
    conversion"), so a file holding any other type is read entirely with the optional `gguf` package; without
    it the user gets a clear error before any work is done.
    """
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    other = {n for n, t in tensors.items() if t.ggml_type not in _PLAIN | _PACKED}
    if not other:
        try:
            loaded = mx.load(str(path), format="gguf")
        except (RuntimeError, ValueError) as err:
            raise ModelLoadError(f"MLX could not read the tensors of {path}: {err}") from None
        if not isinstance(loaded, dict):  # without return_metadata, mx.load gives a dict for a GGUF file
            raise ModelLoadError(f"MLX read {path} as a single array, not a model's tensors.")

        def read_native(name: str) -> list[mx.array]:
            if tensors[name].ggml_type in _PLAIN:
                return [loaded.pop(name)]
            base = name.rpartition(".")[0]
            return [loaded.pop(name), loaded.pop(f"{base}.scales"), loaded.pop(f"{base}.biases")]

        return read_native
    try:
        import gguf  # lazy: optional, only for K-quant GGUF files
    except ImportError:
        kinds = sorted({_TYPE_NAMES.get(tensors[n].ggml_type, f"type {tensors[n].ggml_type}") for n in other})
        raise ModelLoadError(
            f"{path} stores tensors as {', '.join(kinds)}, which MLX cannot read exactly. Install the "
            "optional reader with `pip install gguf`, or choose a Q4_0, Q4_1, Q8_0 or F16 file of the model."
        ) from None
    # gguf's own GGUFReader takes half a minute on a 262k-token vocabulary; the header parsed here already
    # gives each tensor's offset, so read the raw blocks directly (docs/platform-notes.md, "GGUF conversion").
    def read_with_gguf(name: str) -> list[mx.array]:
        t = tensors[name]
        qtype = gguf.GGMLQuantizationType(t.ggml_type)
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        row_bytes = t.shape[-1] // block * type_size
        rows = math.prod(t.shape[:-1])
        raw = np.fromfile(path, dtype=np.uint8, count=rows * row_bytes, offset=t.offset)
        try:
            values = gguf.quants.dequantize(raw.reshape(rows, row_bytes), qtype)
        except NotImplementedError:
            raise ModelLoadError(f"{path}: tensor {name} uses {qtype.name}, which cannot be read.") from None
        return [mx.array(values.reshape(t.shape).astype(np.float32, copy=False))]

    return read_with_gguf


def _convert_tensors(
    path: Path,
    tensors: dict[str, GGUFTensor],
    arch: str,
    config: dict[str, Any],
    dtype: str,
    report: Report,
    cancel: CancelToken | None,
) -> tuple[dict[str, mx.array], dict[str, int]]:
    """Renamed, un-permuted weights for mlx-lm, and the bits of each quantized module."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    read = _tensor_reader(path, tensors)
    block_names = _LLAMA_BLOCK if arch == "llama" else _GEMMA3_BLOCK
    weights: dict[str, mx.array] = {}
    bits_of: dict[str, int] = {}
    for done, (name, info) in enumerate(tensors.items()):
        if cancel is not None:
            cancel.check()
        out = _mlx_name(name, block_names, path)
        base = name.rpartition(".")[0]
        parts = read(name)
        # Packed weights hold 32/bits values per uint32 word; scales hold one value per group of 32.
        bits = parts[0].shape[-1] // parts[1].shape[-1] if len(parts) == 3 else None
        if arch == "llama" and base.endswith((".attn_q", ".attn_k")):
            heads = config["num_attention_heads" if base.endswith("q") else "num_key_value_heads"]
            parts = [_unpermute(p, heads) for p in parts]
        if bits is None:
            value = parts[0].astype(mx.float32)
            if arch == "gemma3" and base.endswith("norm"):
                value = value - 1.0  # Gemma GGUFs store RMSNorm weights as 1+w; mlx-lm adds the 1 itself
            is_matrix = value.ndim == 2 and not base.endswith("norm") and value.shape[-1] % _GROUP == 0
            if dtype == "4bit" and is_matrix:
                bits = 8 if info.ggml_type in _HIGH_PRECISION else 4
                parts = list(mx.quantize(value, group_size=_GROUP, bits=bits))
            else:
                parts = [value]
        elif dtype == "float32":
            scales, biases = parts[1].astype(mx.float32), parts[2].astype(mx.float32)
            parts = [mx.dequantize(parts[0], scales, biases, group_size=_GROUP, bits=bits)]
            bits = None
        module = out.rpartition(".")[0]
        added = {out: parts[0]}
        if len(parts) == 3:
            # float32 on the CPU (docs/platform-notes.md, "Float32 on the CPU")
            added.update({f"{module}.scales": parts[1].astype(mx.float32),
                          f"{module}.biases": parts[2].astype(mx.float32)})
            assert bits is not None  # a (weight, scales, biases) triple always has its bits by here
            bits_of[module] = bits
        mx.eval(list(added.values()))  # one tensor at a time: bounded memory and a prompt cancel
        weights.update(added)
        report(ConvertProgress("tensors", done + 1, len(tensors)))
    return weights, bits_of


def _quantization_entry(bits_of: dict[str, int]) -> dict[str, Any]:
    """Top-level quantization (the most common bits) plus per-module overrides for the rest."""
    default = Counter(bits_of.values()).most_common(1)[0][0]
    entry: dict[str, Any] = {"group_size": _GROUP, "bits": default, "mode": "affine"}
    for module, bits in sorted(bits_of.items()):
        if bits != default:
            entry[module] = {"group_size": _GROUP, "bits": bits, "mode": "affine"}
    return entry


def _publish(tmp: Path, out_dir: Path) -> None:
    """Move the finished folder into place; a reader never sees a half-written `out_dir`."""
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def convert_gguf(
    gguf_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    report: Report = no_report,
    cancel: CancelToken | None = None,
) -> Path:
    """Convert `gguf_path` into an mlx-lm folder at `out_dir` (replaced if it exists). Returns `out_dir`.

    dtype "float32" dequantizes every weight (the fast path on a Linux CPU with OpenBLAS); "4bit" keeps the
    quantized weights (the fast path on Apple Silicon). Raises ModelLoadError for files it cannot convert and
    Cancelled if `cancel` fires; either way nothing is left at `out_dir` that was not there before.
    """
    if dtype not in DTYPES:
        raise ConfigError(f"Unknown model precision '{dtype}'. Choose one of: {', '.join(DTYPES)}.")
    path, out_dir = Path(gguf_path), Path(out_dir)
    report(ConvertProgress("read", 0, 1))
    meta, tensors = read_gguf_header(path)
    arch = _get(meta, "general.architecture")
    if arch not in ("llama", "gemma3"):
        raise ModelLoadError(
            f"{path} holds a '{arch}' model; this converter handles only llama and gemma3 models. "
            "Use the model in MLX format (a Hugging Face folder) instead."
        )
    config = _config(arch, meta, tensors, path)
    report(ConvertProgress("read", 1, 1))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        weights, bits_of = _convert_tensors(path, tensors, arch, config, dtype, report, cancel)
        report(ConvertProgress("tokenizer", 0, 1))
        ids = write_tokenizer(meta, tmp, path, config["max_position_embeddings"])
        extra = [_get(meta, f"tokenizer.ggml.{k}_token_id") for k in ("eot", "eom")]
        eos = [ids["eos_token_id"], *(int(e) for e in extra if e is not None)]
        eos = list(dict.fromkeys(e for e in eos if e is not None))
        config.update(bos_token_id=ids["bos_token_id"], eos_token_id=eos[0] if len(eos) == 1 else eos,
                      torch_dtype="float32")
        if bits_of:
            config["quantization"] = config["quantization_config"] = _quantization_entry(bits_of)
        report(ConvertProgress("tokenizer", 1, 1))
        if cancel is not None:
            cancel.check()

        report(ConvertProgress("write", 0, 1))
        import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        del weights
        (tmp / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        _check_loads(tmp, path)
        if cancel is not None:
            cancel.check()
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report(ConvertProgress("write", 1, 1))
    report(ConvertProgress("done", 1, 1))
    return out_dir


def _check_loads(folder: Path, source: Path) -> None:
    """Build the mlx-lm model from the written folder (lazily) so a mismatch fails here, not on first use."""
    from mlx_lm.utils import load_model  # lazy: mlx-lm pulls in MLX and transformers (seconds)

    try:
        load_model(folder, lazy=True)
    except (ValueError, KeyError, TypeError) as err:
        raise ModelLoadError(f"The conversion of {source} does not load in mlx-lm: {err}") from None
