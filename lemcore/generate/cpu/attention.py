"""Attention for MLX's CPU backend, switched in (lemcore/generate/cpu/paths.py) while our generator runs a model.

On the CPU, `mx.fast.scaled_dot_product_attention` falls back to plain ops, and MLX's x86 element-wise kernels
are scalar: `exp` runs at about 50 M values/s here, `power(2, x)` at about 115 M/s. A gold sandwich is
1.5-3.7K tokens, so attention's softmax was most of a prompt's prefill and a large share of every batched
decoding step. For prefill chunks the score and value products run with BLAS (NumPy's, multi-threaded; the
scores in a buffer kept between calls) and the softmax runs in place on the scores: NumPy's vectorised `exp2`
split across the cores took a 512-token chunk over 1.7K keys from 210 ms with MLX ops to 63-77 ms, and one
Numba pass per row (softmax_rows.py), where Numba is installed, halves that softmax again. For decoding steps
(a few query rows per sequence) NumPy does the whole attention, the batch split across the cores: 16 sequences
over 1.8K positions, 14 -> 8.3 ms per layer, then keys times queries rather than queries times keys for the
scores: 5.4 -> 3.3 ms per layer over 1.7K positions. Equal to MLX's fused attention to float32 rounding
(tests/core/test_cpu_attention.py).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

import numpy as np

_LOG2E = 1.0 / math.log(2.0)
_SPLIT_AT = 1 << 20  # score elements above which a prefill softmax is split across threads
_FEW_ROWS = 64  # query rows per kv head up to which NumPy does the whole attention (decoding steps)
_WORKERS = min(os.cpu_count() or 1, 4)  # threads for the softmax and the decoding steps' batch
_POOL: ThreadPoolExecutor | None = None


def attention(queries: Any, keys: Any, values: Any, cache: Any, scale: float, mask: Any,
              sinks: Any = None) -> Any:
    """Drop-in for mlx_lm.models.base.scaled_dot_product_attention (float32, unquantized cache, no sinks;
    anything else goes to the stock function). Evaluates its inputs: not for use inside `mx.compile`."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")
    from mlx_lm.models import base  # lazy: mlx-lm pulls in MLX and transformers (seconds)

    if sinks is not None or hasattr(cache, "bits") or queries.dtype != mx.float32:
        return base.scaled_dot_product_attention(queries, keys, values, cache=cache, scale=scale, mask=mask,
                                                 sinks=sinks)
    b, q_heads, length, dim = queries.shape
    kv_heads = keys.shape[1]
    # Query heads that share a key/value head become rows of one matrix: one BLAS call per kv head.
    rows = (queries * (scale * _LOG2E)).reshape(b, kv_heads, q_heads // kv_heads * length, dim)
    if rows.shape[2] <= _FEW_ROWS:
        out = _attention_few_rows(rows, keys, values, mask, length)
    else:
        out = _attention_many_rows(rows, keys, values, mask, length)
    return out.reshape(b, q_heads, length, dim)


def _attention_many_rows(rows: Any, keys: Any, values: Any, mask: Any, length: int) -> Any:
    """Prefill chunks through MLX's layers: `many_rows` on views of the evaluated MLX inputs."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    mx.eval(rows, keys, values, *_array_mask(mask))
    return mx.array(many_rows(np.asarray(rows), np.asarray(keys), np.asarray(values), mask, length))


def many_rows(q: Any, k: Any, v: Any, mask: Any, length: int) -> Any:
    """Attention of prefill chunks in NumPy (also the NumPy prefill's, decode.py): large products with BLAS
    (multi-threaded), the scores in a buffer kept between calls, the softmax in place on them (one Numba pass, or
    NumPy where Numba is missing). q (batch, kv_heads, group * length, dim), the query heads that share a kv head
    one after another, scaled by 1/sqrt(dim) * log2(e); k and v (batch, kv_heads, span, dim); `mask` as mlx-lm
    gives it (None, "causal" or an evaluated array). A new (batch, kv_heads, group * length, dim) array."""
    b, kv_heads, group_rows, _ = q.shape
    # The scores go into a buffer kept between calls: their size changes with every chunk's position, and as
    # MLX buffers each new size was fresh memory (docs/platform-notes.md, "Prefill").
    n = _workspace((b, kv_heads, group_rows, k.shape[2]))
    np.matmul(q, k.swapaxes(-1, -2), out=n)
    rows_2d = n.reshape(-1, n.shape[-1])
    kernel = _compiled_softmax()
    causal_in_kernel = kernel is not None and isinstance(mask, str)  # the kernel skips future keys itself
    if not causal_in_kernel:
        _mask_in_place(n, mask, _mask_5d(mask, kv_heads, group_rows // length), length)
    if kernel is not None:  # one pass over the scores (softmax_rows.py)
        denominators = np.empty(len(rows_2d), np.float32)
        kernel(rows_2d, length if causal_in_kernel and length > 1 else 0, denominators)
    elif rows_2d.size < _SPLIT_AT:
        denominators = _exp2_rows(rows_2d)
    else:
        denominators = np.concatenate(_in_parallel(lambda lo, hi: _exp2_rows(rows_2d[lo:hi]), len(rows_2d)))
    out = _times_values(n, v) if kernel is not None else np.matmul(n, v)
    # Normalise the (rows x dim) output rather than the (rows x span) weights: fewer elements.
    out *= np.reciprocal(denominators).reshape(b, kv_heads, -1, 1)
    return out


def _times_values(n: Any, v: Any) -> Any:
    """np.matmul(n, v) for softmax weights n (b, kv_heads, rows, span) and values v (b, kv_heads, span, dim), on
    the decoding step's Numba product kernel against the values transposed (the long span as its inner
    dimension): 262-292 vs OpenBLAS's 203-226 GFLOP/s with the Haswell kernels this machine's environment asks
    for (docs/platform-notes.md, "Prefill"). Where Numba is (the caller's softmax kernel loaded)."""
    from lemcore.generate.cpu.decode_products import products  # lazy, as the softmax kernel

    b, kv_heads = n.shape[:2]
    out = np.empty((b, kv_heads, n.shape[2], v.shape[3]), np.float32)
    for i, h in np.ndindex(b, kv_heads):
        out[i, h] = products(n[i, h], np.ascontiguousarray(v[i, h].T))
    return out


_SCRATCH = threading.local()


def _workspace(shape: tuple[int, ...]) -> Any:
    """A C-contiguous float32 array of `shape` on this thread's buffer, grown when too small (its contents are
    whatever the last call left)."""
    size = math.prod(shape)
    buffer = getattr(_SCRATCH, "buffer", None)
    if buffer is None or buffer.size < size:
        buffer = _SCRATCH.buffer = np.empty(size, np.float32)
    return buffer[:size].reshape(shape)


def release_workspace() -> None:
    """Free this thread's score buffer (at the end of a run)."""
    _SCRATCH.buffer = None


def _attention_few_rows(rows: Any, keys: Any, values: Any, mask: Any, length: int) -> Any:
    """Decoding steps: per sequence, a few query rows against its whole cache. MLX runs these many small
    products one after another on one core; NumPy does the whole attention here, the batch split across
    the cores."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    mx.eval(rows, keys, values, *_array_mask(mask))
    q, k, v = np.asarray(rows), np.asarray(keys), np.asarray(values)  # views of MLX's buffers
    b, kv_heads, group_rows, _ = q.shape
    mask_5d = _mask_5d(mask, kv_heads, group_rows // length)

    def part(lo: int, hi: int) -> Any:
        # Keys times queries, (span x dim) @ (dim x rows), then transposed into place: with a few rows, BLAS
        # runs this shape much faster than queries times keys, same values (16 sequences x 3 kv heads over
        # 1.7K positions, bool padding mask, 2 cores: 5.4 -> 3.3 ms per layer, median of 40 alternating runs).
        scores = np.ascontiguousarray(np.matmul(k[lo:hi], q[lo:hi].swapaxes(-1, -2)).swapaxes(-1, -2))
        part_mask = mask_5d[lo:hi] if mask_5d is not None and mask_5d.shape[0] == b else mask_5d
        _mask_in_place(scores, mask, part_mask, length)
        denominators = _exp2_rows(scores.reshape(-1, scores.shape[-1]))
        out = np.matmul(scores, v[lo:hi])
        out /= denominators.reshape(*out.shape[:-1], 1)
        return out

    return mx.array(np.concatenate(_in_parallel(part, b)))


def _array_mask(mask: Any) -> tuple[Any, ...]:
    """The mask, if it is an array, for evaluating with the other inputs."""
    return () if mask is None or isinstance(mask, str) else (mask,)


def _mask_5d(mask: Any, kv_heads: int, group: int) -> Any:
    """An mlx-lm array mask, (length, span) or (batch, 1 or heads, length, span), as a NumPy view shaped
    (batch or 1, kv_heads or 1, group or 1, length, span); None for no mask or "causal". Evaluated already."""

    if not _array_mask(mask):
        return None
    m = np.asarray(mask)
    if m.ndim == 2:
        return m[None, None, None]
    if m.shape[1] == 1:
        return m[:, :, None]
    return m.reshape(m.shape[0], kv_heads, group, *m.shape[-2:])


def _mask_in_place(scores: Any, mask: Any, mask_5d: Any, length: int) -> None:
    """Applies mlx-lm's mask (None, "causal", or `mask_5d`, its array as `_mask_5d` shapes it) to contiguous
    NumPy scores (b, kv_heads, group*length, span) of log2-scaled logits."""

    b, kv_heads, group_rows, span = scores.shape
    s5 = scores.reshape(b, kv_heads, group_rows // length, length, span)
    if isinstance(mask, str):  # "causal": the queries are the last `length` positions
        if length > 1:
            s5[..., span - length:] += _causal_bias(length)
    elif mask_5d is not None and mask_5d.dtype == np.bool_:
        # The float minimum, not -inf, so a fully masked (padding) row stays finite, as in mlx-lm.
        np.copyto(s5, np.finfo(np.float32).min, where=~mask_5d)
    elif mask_5d is not None:
        s5 += mask_5d * np.float32(_LOG2E)


def _in_parallel(fn: Callable[[int, int], Any], n: int) -> list[Any]:
    """fn(lo, hi) over [0, n) split into one range per core, on the pool (NumPy releases the GIL)."""
    workers = min(_WORKERS, n)
    if workers < 2:
        return [fn(0, n)]
    bounds = [n * i // workers for i in range(workers + 1)]
    return list(_pool().map(fn, bounds[:-1], bounds[1:]))


def _exp2_rows(rows: Any) -> Any:
    """In place: each row of log2-scaled scores -> 2 ** (row - row maximum), clamped at the smallest normal
    float32 exponent (subnormal weights make the next matrix product many times slower). Returns row sums."""

    rows -= rows.max(axis=-1, keepdims=True)
    np.maximum(rows, -126.0, out=rows)
    np.exp2(rows, out=rows)
    return rows.sum(axis=-1)


@lru_cache(maxsize=1)
def _compiled_softmax() -> Callable[[Any, int, Any], None] | None:
    """The Numba prefill softmax (softmax_rows.py), or None where Numba is missing or cannot compile or cache
    it here (a frozen app, a read-only folder): NumPy's softmax runs then."""
    try:
        from lemcore.generate.cpu.softmax_rows import exp2_rows  # lazy: Numba loads in ~0.2 s
    except (ImportError, RuntimeError, OSError):
        return None
    return exp2_rows


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(_WORKERS, thread_name_prefix="lem-attention")
    return _POOL


@lru_cache(maxsize=8)
def _causal_bias(length: int) -> Any:
    """(length, length): 0 on and below the diagonal, the float32 minimum above (future positions)."""

    return np.triu(np.full((length, length), np.finfo(np.float32).min, np.float32), 1)
