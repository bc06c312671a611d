"""The decoding step of a llama-family model in NumPy, for MLX's CPU backend.

A 16-sequence decoding step of SmolLM2 through MLX took ~232 ms here: ~99 ms of MLX evaluating each layer's
small products and element-wise work (one evaluation per layer, forced by the NumPy attention), ~108 ms of
attention, ~25 ms for the vocabulary head and bookkeeping. This step runs the same arithmetic with the
products and the attention compiled with Numba (decode_products.py, decode_attention.py), all on Numba's one
thread pool, and element-wise work between them (RMSNorm compiled too, prefill_kernels.py; the rest NumPy's).
Measurements: docs/platform-notes.md, "NumPy decoding step".

It reads the weights as NumPy views of the model's MLX arrays (no copy) and writes each step's keys and values
into mlx-lm's `BatchKVCache` buffers in place, keeping the cache's own bookkeeping (`_idx`, `offset`) as
mlx-lm's `update_and_fetch` would, so BatchGenerator's insert, filter and extend work on it unchanged. The
engine's prompt chunks go through the same layers in NumPy too (`NumpyDecoder.fill`: BLAS products,
attention.py's prefill attention), into a prompt's `KVCache`; anything not covered stays on MLX (`covers`,
`fills`).

Covered: mlx-lm's `llama` model class (Llama, SmolLM, Mistral-style checkpoints) in float32, unquantized, no
biases, plain RoPE, full attention in every layer. Everything else returns None from `for_model` and decodes
on MLX as before. Equal to MLX's step to float32 rounding (tests/core/test_numpy_decode.py) with float32 batch
caches; the engine builds them in float16 (`batch_caches_in_numpy`, `half`), within a stated tolerance.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from lemcore.generate.cpu.activations import swiglu_numpy

_LOG2E = 1.0 / math.log(2.0)
_ONE = np.float32(1.0)  # keys are rotated, not scaled


@dataclass(frozen=True)
class _Layer:
    norm1: Any
    wq: Any
    wk: Any
    wv: Any
    wo: Any
    norm2: Any
    wg: Any
    wu: Any
    wd: Any


@dataclass(frozen=True)
class _Normed:
    """A prompt chunk's or a decoding step's normalised activations: as `columns` for prefill_products.py's tiled
    kernel (its products' results live in its buffer for the slot named until that slot's next use), else as rows
    for decode_products.py's. Called with weights: the product, (tokens, out)."""
    tokens: int
    rows: Any
    columns: Any
    tiled: Any
    dot: Any

    def __call__(self, weights: Any, slot: str = "product") -> Any:
        if self.columns is not None:
            return self.tiled(self.columns, self.tokens, weights, slot)
        return self.dot(self.rows, weights)


def _np(array: Any) -> Any:
    """A read-only NumPy view of an evaluated MLX array (no copy)."""
    view = np.asarray(array)
    view.flags.writeable = False  # the weights are MLX's: never written through here
    return view


class NumpyDecoder:
    """One decoding step (one token per sequence) of an mlx-lm llama model, in NumPy. Build with `for_model`."""

    def __init__(self, model: Any) -> None:
        import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

        from lemcore.generate.cpu import (  # Numba
            decode_attention,
            decode_products,
            prefill_kernels,
            prefill_products,
        )

        self._attend = decode_attention.attend
        self._products = decode_products.products
        self._tiled: Any = prefill_products if prefill_products.AVAILABLE else None
        self._rms_norm, self._rope_into = prefill_kernels.rms_norm, prefill_kernels.rope_into
        body = model.model
        first = body.layers[0].self_attn
        self.q_heads, self.kv_heads, self.head_dim = first.n_heads, first.n_kv_heads, first.head_dim
        self.query_scale = np.float32(first.scale * _LOG2E)
        self.eps = np.float32(body.norm.eps)
        rope = first.rope
        half = rope.dims // 2
        # MLX's RoPE frequencies: base ** (-i / half), positions multiplied by `scale`.
        self.inv_freq = (rope.base ** (-np.arange(half, dtype=np.float64) / half)).astype(np.float32)
        self.rope_scale = np.float32(rope.scale)
        mx.eval(model.parameters())
        self.embed = _np(body.embed_tokens.weight)
        self.head = self.embed if model.args.tie_word_embeddings else _np(model.lm_head.weight)
        self.final_norm = _np(body.norm.weight)
        self.layers = [_Layer(
            norm1=_np(layer.input_layernorm.weight), wq=_np(layer.self_attn.q_proj.weight),
            wk=_np(layer.self_attn.k_proj.weight), wv=_np(layer.self_attn.v_proj.weight),
            wo=_np(layer.self_attn.o_proj.weight), norm2=_np(layer.post_attention_layernorm.weight),
            wg=_np(layer.mlp.gate_proj.weight), wu=_np(layer.mlp.up_proj.weight), wd=_np(layer.mlp.down_proj.weight),
        ) for layer in body.layers]

    @classmethod
    def for_model(cls, model: Any) -> NumpyDecoder | None:
        """A decoder for this model, or None where it is not covered (see the module's docstring) or Numba is
        missing: the caller then decodes on MLX."""
        reason = unsupported(model)
        if reason:
            return None
        try:
            return cls(model)
        except (ImportError, RuntimeError, OSError):
            # Numba missing, or unable to compile or cache its kernel here (a frozen app, a read-only
            # folder): MLX decodes, as before this step existed.
            return None

    # -- the step ------------------------------------------------------------------------------------
    def covers(self, inputs: Any, cache: Any) -> bool:
        """Whether this call is a decoding step this class runs: one token per sequence into mlx-lm batch
        caches (float32, or float16 as `batch_caches_in_numpy` builds them with `half`) that hold a prompt
        already and have no pending right padding."""
        from mlx_lm.models.cache import BatchKVCache  # lazy: mlx-lm pulls in MLX and transformers (seconds)

        if inputs.ndim != 2 or inputs.shape[1] != 1 or not cache or len(cache) != len(self.layers):
            return False
        first = cache[0]
        return _float_caches(cache) and all(type(c) is BatchKVCache and c._right_padding is None
                                            and c._idx == first._idx for c in cache)

    def __call__(self, inputs: Any, cache: Any) -> Any:
        """Logits (batch, vocab), float32 NumPy, for `inputs` (batch, 1) after the cached positions; the
        caches gain this step's keys and values."""
        import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

        tokens = np.asarray(inputs)[:, 0]
        batch = tokens.shape[0]
        first = cache[0]
        at = first._idx
        positions = np.asarray(first.offset).astype(np.float32)  # each sequence's position of this token
        starts = np.ascontiguousarray(np.asarray(first.left_padding), dtype=np.int64)
        cos, sin = self._rotation(positions)
        x = self.embed[tokens]  # (batch, hidden): a new array (fancy indexing), added to in place below
        attended = np.empty((batch, self.kv_heads, self.q_heads // self.kv_heads, self.head_dim), np.float32)
        for layer, layer_cache in zip(self.layers, cache):
            keys, values = _writable_buffers(layer_cache)
            by = self._normed(x, layer.norm1)
            q = self._rope(by(layer.wq), self.q_heads, cos, sin)  # (batch, heads, dim)
            keys[:, :, at, :] = self._rope(by(layer.wk), self.kv_heads, cos, sin)
            values[:, :, at, :] = by(layer.wv).reshape(batch, self.kv_heads, self.head_dim)
            queries = q.reshape(attended.shape)  # query heads grouped by the kv head they share
            queries *= self.query_scale
            self._attend(queries, keys, values, at + 1, starts, attended)
            x += self._rows_times(attended.reshape(batch, -1), layer.wo)
            x += self._mlp(self._normed(x, layer.norm2), layer)
        offset = mx.array(np.asarray(first.offset) + 1)
        for layer_cache in cache:  # what update_and_fetch would have done
            layer_cache._idx = at + 1
            layer_cache.offset = offset
        # In a buffer kept between steps on the tiled kernel: the caller copies the logits into MLX at once.
        return self._normed(x, self.final_norm)(self.head, "logits")

    # -- prefill -------------------------------------------------------------------------------------
    def fills(self, cache: Any) -> bool:
        """Whether `fill` can read a prompt into this cache: one plain float32 mlx-lm KVCache per layer."""
        import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")
        from mlx_lm.models.cache import KVCache  # lazy: mlx-lm pulls in MLX and transformers (seconds)

        return (len(cache) == len(self.layers)
                and all(type(c) is KVCache and (c.keys is None or c.keys.dtype == mx.float32) for c in cache))

    def own_buffers(self, cache: Any, positions: int) -> None:
        """Give each KVCache in `cache` new key and value buffers with room for `positions`, holding what it
        held, for `fill` to write into. Always new: a cache copied from the shared prefix's may share its
        buffers with it, and `fill` writes in place."""
        import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

        shape = (1, self.kv_heads, _room(positions, cache[0].step, 0), self.head_dim)
        for c in cache:
            old_keys, old_values, filled = c.keys, c.values, c.offset
            c.keys, keys = _zeros(shape)
            c.values, values = _zeros(shape)
            if old_keys is not None and filled:
                mx.eval(old_keys, old_values)
                keys[:, :, :filled] = np.asarray(old_keys)[:, :, :filled]
                values[:, :, :filled] = np.asarray(old_values)[:, :, :filled]

    def fill(self, tokens: Any, cache: Any) -> None:
        """Prefill: the model's layers over `tokens` (one prompt's next positions, token ids) in NumPy,
        their keys and values written into `cache` (after `own_buffers`), as mlx-lm's layers would with MLX.
        Through MLX a 512-token chunk's layer spent ~10 ms of ~50 on element-wise work (MLX's scalar CPU
        kernels) and conversions to and from NumPy around the attention (docs/platform-notes.md, "Prefill");
        RMSNorm and RoPE here are Numba passes (prefill_kernels.py)."""
        length = len(tokens)
        at = cache[0].offset
        cos, sin = self._rotation(np.arange(at, at + length, dtype=np.float32))
        heads, kv_heads, dim = self.q_heads, self.kv_heads, self.head_dim
        group = heads // kv_heads
        # Query heads that share a kv head become rows of one matrix, as attention.py's callers give them.
        rows = np.empty((1, kv_heads, group * length, dim), np.float32)
        x = self.embed[np.asarray(tokens, dtype=np.int64)]  # (length, hidden): a new array, added to below
        for layer, layer_cache in zip(self.layers, cache):
            keys, values = np.asarray(layer_cache.keys), np.asarray(layer_cache.values)
            if keys.shape[2] < at + length:  # the compiled RoPE writes without bounds checks: never past the end
                raise ValueError(f"the cache holds {keys.shape[2]} positions, not {at + length}: call own_buffers")
            by = self._normed(x, layer.norm1)
            self._rope_into(by(layer.wk), cos, sin, _ONE, keys[0], 1, at)
            values[0, :, at:at + length] = by(layer.wv).reshape(length, kv_heads, dim).transpose(1, 0, 2)
            self._rope_into(by(layer.wq), cos, sin, self.query_scale, rows[0], group, 0)
            x += self._attention(rows, keys, values, at, length, layer.wo)
            x += self._mlp(self._normed(x, layer.norm2), layer)
        for layer_cache in cache:  # what update_and_fetch would have done
            layer_cache.offset = at + length

    # The products of prompt chunks and of decoding steps: on prefill_products.py's tiled kernel where the CPU has
    # AVX-512, its inputs written token-contiguous by the pass that makes them; else on decode_products.py's
    # (1.16-1.17x OpenBLAS's Haswell kernels for chunks here). Figures: docs/platform-notes.md, "Prefill" and
    # "NumPy decoding step".
    def _normed(self, x: Any, weight: Any) -> _Normed:
        """RMSNorm(x) of a chunk's activations x (tokens, hidden), ready for its products."""
        tiled = self._tiled
        if tiled is not None:
            return _Normed(len(x), None, tiled.norm_columns(x, weight, self.eps, "normed"), tiled.products, None)
        return _Normed(len(x), self._rms_norm(x, weight, self.eps), None, None, self._products)

    def _rows_times(self, x: Any, weights: Any) -> Any:
        """x (tokens, inner) @ weights.T, on the tiled kernel (x laid out first) where there is one."""
        tiled = self._tiled
        if tiled is not None:
            return tiled.products(tiled.columns(x, "rows"), len(x), weights, "product")
        return self._products(x, weights)

    def _attention(self, rows: Any, keys: Any, values: Any, at: int, length: int, weights: Any) -> Any:
        """The chunk's causal attention through the output projection: (length, hidden). rows: the queries as
        attention.py's `many_rows` takes them; keys and values: the cache's buffers, filled up to at + length."""
        from lemcore.generate.cpu.attention import many_rows  # lazy, as the module's other kernels

        tiled = self._tiled
        if tiled is not None and self.head_dim % tiled.PAD == 0:
            attended = tiled.attention_columns(rows[0], keys[0], values[0], at, length, "attended")
            return tiled.products(attended, length, weights, "product")
        out = many_rows(rows, keys[:, :, :at + length], values[:, :, :at + length], "causal", length)
        out = out.reshape(self.q_heads, length, self.head_dim).transpose(1, 0, 2)
        return self._products(np.ascontiguousarray(out).reshape(length, -1), weights)

    def _mlp(self, by: _Normed, layer: _Layer) -> Any:
        """The SwiGLU MLP of a layer, `by` from `_normed`; on the tiled kernel the gate and up products come out
        laid out for the down product, and SwiGLU is element-wise on them."""
        if by.columns is not None:
            tiled = self._tiled
            gate = tiled.products_as_columns(by.columns, layer.wg, "gate")
            gated = tiled.swiglu_in_place(gate, tiled.products_as_columns(by.columns, layer.wu, "up"))
            return tiled.products(gated, by.tokens, layer.wd, "product")
        return self._products(swiglu_numpy(by(layer.wg), by(layer.wu)), layer.wd)

    def _rotation(self, positions: Any) -> tuple[Any, Any]:
        """RoPE's cos and sin for float32 `positions`: (positions, half) each."""
        angles = np.multiply.outer(positions * self.rope_scale, self.inv_freq)
        return np.cos(angles), np.sin(angles)

    def _rope(self, projected: Any, heads: int, cos: Any, sin: Any) -> Any:
        """mlx.nn.RoPE (not traditional) on (batch, heads * dim) projections -> (batch, heads, dim), a new
        C-contiguous array. cos and sin from `_rotation`, one row per batch row."""
        x = projected.reshape(projected.shape[0], heads, self.head_dim)
        half = cos.shape[1]
        cos, sin = cos[:, None], sin[:, None]  # broadcast over the heads
        x1, x2 = x[:, :, :half], x[:, :, half:2 * half]
        out = x.copy()
        out[:, :, :half] = x1 * cos - x2 * sin
        out[:, :, half:2 * half] = x1 * sin + x2 * cos
        return out


def _writable_buffers(cache: Any) -> tuple[Any, Any]:
    """NumPy views of a BatchKVCache's key and value buffers, made C-contiguous, writable and with room for one
    more position first where they are not (after a filter they are strided views; mlx-lm grows them in steps
    of `cache.step` positions, and so do we)."""
    keys, values = np.asarray(cache.keys), np.asarray(cache.values)
    filled = cache._idx
    if (keys.shape[2] > filled and keys.flags.c_contiguous and keys.flags.writeable
            and values.flags.c_contiguous and values.flags.writeable):
        return keys, values
    # One copy (after a filter; or past the buffer's end, mlx-lm growing it in steps of `cache.step`).
    capacity = max(keys.shape[2], _room(filled, cache.step))
    batch, heads, _, dim = keys.shape
    cache.keys, keys_grown = _zeros((batch, heads, capacity, dim), cache.keys.dtype)
    cache.values, values_grown = _zeros((batch, heads, capacity, values.shape[3]), cache.values.dtype)
    keys_grown[:, :, :filled] = keys[:, :, :filled]
    values_grown[:, :, :filled] = values[:, :, :filled]
    return keys_grown, values_grown


def warm_kernels() -> bool:
    """Load Numba and the generator's compiled kernels (the decoding step's, the prefill softmax) now. Loading
    LLVM's library holds the GIL in one call (a GUI timer was 70-74 ms late when the engine thread did it at the
    first Start), so the app does it before its window shows (docs/platform-notes.md, "GUI stalls while answers
    stream"). Whether they loaded; never raises: without Numba, MLX decodes and NumPy does the softmax."""
    try:
        for kernels in ("decode_attention", "decode_products", "prefill_kernels", "prefill_products", "sample_rows",
                        "softmax_rows"):
            importlib.import_module(f"lemcore.generate.cpu.{kernels}")  # loading is the point
    except Exception:  # noqa: BLE001 - best effort: the engine says nothing either and decodes on MLX
        return False
    return True


def unsupported(model: Any) -> str:
    """Why the NumPy decoding step does not cover this model ("" = it does)."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    if mx.default_device() != mx.cpu:
        return "a GPU (mlx-lm's fused kernels decode there)"
    if type(model) is not llama.Model:
        return f"architecture {type(model).__module__}.{type(model).__name__} (only mlx-lm's llama is covered)"
    args = model.args
    if any(t != "full_attention" for t in args.layer_types or []):
        return "sliding-window layers"
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        linears = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
        if any(type(lin) is not nn.Linear or "bias" in lin for lin in linears):
            return "quantized layers, biases or adapters"
        if type(attn.rope) is not nn.RoPE or attn.rope.traditional or attn.rope.dims % 2:
            return "a RoPE variant"
    if type(model.model.embed_tokens) is not nn.Embedding:
        return "quantized layers, biases or adapters"
    parameters = model.parameters()  # type: ignore[no-untyped-call]  # mlx-lm's classes are untyped
    leaves: Any = tree_flatten(parameters)  # (name, array) pairs
    if any(value.dtype != mx.float32 for _, value in leaves):
        return "weights not float32"
    return ""


# -- building the batch cache ------------------------------------------------------------------------------
# The most answer positions a batch cache is built with room for at once (positions beyond grow in steps).
MAX_ROOM = 1024


@contextmanager
def batch_caches_in_numpy(room: int = 1, *, half: bool = False) -> Iterator[None]:
    """While the engine decodes with `NumpyDecoder`: mlx-lm's `BatchKVCache.merge` (prompts forming a batch) and
    `BatchKVCache.extend` (a prompt joining one) build float32 caches in NumPy, one copy of each sequence's keys
    and values, with room for `room` more positions (at most `MAX_ROOM`; the engine passes its answers' token
    limit). mlx-lm's merge writes each sequence into the batch with an MLX slice update that copied the whole
    batch buffer every time (~120 ms per layer for 15 sandwiches, ~3.6 s per batch of SmolLM2), and both left no
    room, so the first decoding step copied everything again, and every 256 positions after that (~1.2 s for 16
    sandwiches each time). With `half`, the batch caches hold float16 (the prompts' float32 keys and values
    rounded once, as they are copied in; each step's rounded as they are written): the decoding attention reads
    half the bytes, 52-57 -> 40-48 ms of a ~92 ms 16-sequence step here (docs/platform-notes.md, "NumPy decoding
    step").
    Other caches and dtypes keep mlx-lm's code; mlx-lm's functions are put back on exit."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")
    from mlx_lm.models.cache import BatchKVCache  # lazy: mlx-lm pulls in MLX and transformers (seconds)

    stock_merge, stock_extend = BatchKVCache.__dict__["merge"], BatchKVCache.__dict__["extend"]

    room = max(1, min(room, MAX_ROOM))
    dtype = mx.float16 if half else mx.float32

    def merge(cls: Any, caches: list[Any]) -> Any:
        if not _float_caches(caches):
            return stock_merge.__func__(cls, caches)
        return _merged(cls, caches, room, dtype)

    def extend(self: Any, other: Any) -> None:
        if not _float_caches([self, other]):
            stock_extend(self, other)
        else:
            _extended(self, other, room)

    BatchKVCache.merge, BatchKVCache.extend = classmethod(merge), extend  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        BatchKVCache.merge, BatchKVCache.extend = stock_merge, stock_extend  # type: ignore[method-assign]


def _float_caches(caches: list[Any]) -> bool:
    """Caches our merge, extend and decoding step take: float32 (prompts') or float16 (our half batch caches)."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    return all(c.keys is not None and c.keys.dtype == c.values.dtype and c.keys.dtype in (mx.float32, mx.float16)
               and c.keys.ndim == 4 for c in caches)


def _zeros(shape: tuple[int, ...], dtype: Any = None) -> tuple[Any, Any]:
    """An MLX array of zeros (float32 unless `dtype` says otherwise) and a writable NumPy view of it. Allocated by
    MLX, whose buffer cache hands back memory it already holds: a fresh NumPy array and a copy into MLX took ~130
    ms per layer in the engine (new pages touched twice), this ~6 ms for a batch of 16 SmolLM2 sandwiches."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    dtype = mx.float32 if dtype is None else dtype
    array = mx.zeros(shape, dtype)
    mx.eval(array)
    view = np.asarray(array)
    if view.flags.writeable and view.flags.c_contiguous:
        return array, view
    array = mx.array(np.zeros(shape, view.dtype))  # an MLX whose buffers export otherwise: copy once
    view = np.asarray(array)
    if not view.flags.writeable:  # MLX exports its buffers writable: a change there
        raise RuntimeError("MLX returned read-only cache buffers; the NumPy decoding step cannot run")
    return array, view


def _room(filled: int, step: int, room: int = 1) -> int:
    """Buffer positions for `filled` ones and at least `room` more, in mlx-lm's steps."""
    return -(-(filled + room) // step) * step


def _merged(cls: Any, caches: list[Any], room: int = 1, dtype: Any = None) -> Any:
    """mlx-lm's BatchKVCache.merge for non-empty float32 KVCaches: right-justified at the longest, left padding,
    in `dtype` (float32 unless given).
    Consumes the prompts' caches: each one's buffers are let go as soon as they are copied (BatchGenerator drops
    them after the merge anyway), so the next layer's batch buffers can take that memory. Holding them to the
    end, building a 16-sandwich batch took 3.6-4.0 s (318K page faults); letting go, 0.56-0.64 s (82K)
    (docs/platform-notes.md, "NumPy decoding step")."""
    lengths = [c.size() for c in caches]
    longest = max(lengths)
    padding = [longest - n for n in lengths]
    _, heads, _, key_dim = caches[0].keys.shape
    value_dim = caches[0].values.shape[3]
    capacity = _room(longest, cls.step, room)
    keys, key_view = _zeros((len(caches), heads, capacity, key_dim), dtype)
    values, value_view = _zeros((len(caches), heads, capacity, value_dim), dtype)
    for row, (pad, cache, n) in enumerate(zip(padding, caches, lengths)):
        key_view[row, :, pad:pad + n] = np.asarray(cache.keys)[0, :, :n]
        value_view[row, :, pad:pad + n] = np.asarray(cache.values)[0, :, :n]
        cache.keys = cache.values = None
    merged = cls(padding)
    merged.keys, merged.values = keys, values
    merged.offset = merged.offset + longest
    merged._idx = longest
    return merged


def _extended(cache: Any, other: Any, room: int = 1) -> None:
    """mlx-lm's BatchKVCache.extend for our batch caches: `other`'s sequences join `cache`'s, both
    right-justified at the later position, in `cache`'s dtype."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    filled = max(cache._idx, other._idx)
    capacity = _room(filled, cache.step, room)
    parts = [(c, filled - c._idx) for c in (cache, other)]
    batch = sum(c.keys.shape[0] for c, _ in parts)
    heads, key_dim, value_dim = cache.keys.shape[1], cache.keys.shape[3], cache.values.shape[3]
    keys, key_view = _zeros((batch, heads, capacity, key_dim), cache.keys.dtype)
    values, value_view = _zeros((batch, heads, capacity, value_dim), cache.values.dtype)
    row = 0
    for c, shift in parts:
        rows = c.keys.shape[0]
        key_view[row:row + rows, :, shift:filled] = np.asarray(c.keys)[:, :, :c._idx]
        value_view[row:row + rows, :, shift:filled] = np.asarray(c.values)[:, :, :c._idx]
        row += rows
    cache.offset = mx.concatenate([cache.offset, other.offset])
    cache.left_padding = mx.concatenate([cache.left_padding + parts[0][1], other.left_padding + parts[1][1]])
    cache.keys, cache.values = keys, values
    cache._idx = filled
