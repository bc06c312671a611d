"""Attention for MLX's CPU backend, switched in (lemcore/cpu_paths.py) while our generator runs a model.

On the CPU, `mx.fast.scaled_dot_product_attention` falls back to plain ops, and MLX's x86 element-wise kernels
are scalar: `exp` runs at about 50 M values/s here, `power(2, x)` at about 115 M/s. A gold sandwich is
1.5-3.7K tokens, so attention's softmax was most of a prompt's prefill and a large share of every batched
decoding step. For prefill chunks the score and value products stay in MLX (multi-threaded BLAS) and the
softmax runs in place on the evaluated scores through NumPy's vectorised `exp2` (about 300 M/s here), split
across the cores; a 512-token chunk over 1.7K keys took 210 ms with MLX ops, 63-77 ms this way. For decoding
steps (a few query rows per sequence) NumPy does the whole attention, the batch split across the cores: 16
sequences over 1.8K positions, 14 -> 8.3 ms per layer. Equal to MLX's fused attention to float32 rounding
(tests/core/test_cpu_attention.py).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

_LOG2E = 1.0 / math.log(2.0)
_SPLIT_AT = 1 << 20  # score elements above which a prefill softmax is split across threads
_FEW_ROWS = 64  # query rows per kv head up to which NumPy does the whole attention (decoding steps)
_POOL: ThreadPoolExecutor | None = None


def attention(queries: Any, keys: Any, values: Any, cache: Any, scale: float, mask: Any,
              sinks: Any = None) -> Any:
    """Drop-in for mlx_lm.models.base.scaled_dot_product_attention (float32, unquantized cache, no sinks;
    anything else goes to the stock function). Evaluates its inputs: not for use inside `mx.compile`."""
    import mlx.core as mx
    from mlx_lm.models import base

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
    """Prefill chunks: large products in MLX (multi-threaded BLAS), the softmax in NumPy on the scores."""
    import mlx.core as mx
    import numpy as np

    b, kv_heads, _, _ = rows.shape
    scores = rows @ keys.swapaxes(-1, -2)
    if mask is not None and not isinstance(mask, str):
        scores = _apply_array_mask(scores, mask, length)
    mx.eval(scores)
    n = np.asarray(scores)  # a view of MLX's buffer: the softmax below writes the weights in place
    if not (n.flags.writeable and n.flags.c_contiguous):
        n = np.array(n)
        scores = None
    if isinstance(mask, str):
        _add_causal_bias(n, length)
    denominators = _softmax_numerators(n.reshape(-1, n.shape[-1]))
    weights = scores if scores is not None else mx.array(n)
    # Normalise the (rows x dim) output rather than the (rows x span) weights: fewer elements.
    inverse = mx.array(np.reciprocal(denominators).reshape(b, kv_heads, -1, 1))
    return (weights @ values) * inverse


def _attention_few_rows(rows: Any, keys: Any, values: Any, mask: Any, length: int) -> Any:
    """Decoding steps: per sequence, a few query rows against its whole cache. MLX runs these many small
    products one after another on one core; NumPy does the whole attention here, the batch split across
    the cores."""
    import mlx.core as mx
    import numpy as np

    if isinstance(mask, str) or mask is None:
        mx.eval(rows, keys, values)
        m = None
    else:
        mx.eval(rows, keys, values, mask)
        m = _mask_5d(np.asarray(mask), keys.shape[1], rows.shape[2] // length)
    q, k, v = np.asarray(rows), np.asarray(keys), np.asarray(values)  # views of MLX's buffers
    b = q.shape[0]

    def part(lo: int, hi: int) -> Any:
        scores = np.matmul(q[lo:hi], k[lo:hi].swapaxes(-1, -2))
        if isinstance(mask, str):
            _add_causal_bias(scores, length)
        elif m is not None:
            part_mask = m[lo:hi] if m.shape[0] == b else m
            _mask_scores_np(scores, part_mask, length)
        denominators = _exp2_rows(scores.reshape(-1, scores.shape[-1]))
        out = np.matmul(scores, v[lo:hi])
        out /= denominators.reshape(*out.shape[:-1], 1)
        return out

    workers = min(_workers(), b)
    if workers < 2:
        return mx.array(part(0, b))
    bounds = [b * i // workers for i in range(workers + 1)]
    return mx.array(np.concatenate(list(_pool().map(part, bounds[:-1], bounds[1:]))))


def _apply_array_mask(scores: Any, mask: Any, length: int) -> Any:
    """MLX: a boolean or additive mask of mlx-lm's shapes applied to (b, kv_heads, group*length, span)."""
    import mlx.core as mx

    b, kv_heads, group_rows, span = scores.shape
    scores = scores.reshape(b, kv_heads, group_rows // length, length, span)
    if mask.ndim == 4:  # (batch, 1 or heads, length, span)
        if mask.shape[1] == 1:
            mask = mx.expand_dims(mask, 2)
        else:
            mask = mask.reshape(mask.shape[0], kv_heads, group_rows // length, *mask.shape[-2:])
    if mask.dtype == mx.bool_:
        # The float minimum, not -inf, so a fully masked (padding) row stays finite, as in mlx-lm.
        scores = mx.where(mask, scores, mx.finfo(mx.float32).min)
    else:
        scores = scores + mask * _LOG2E
    return scores.reshape(b, kv_heads, group_rows, span)


def _mask_5d(mask: Any, kv_heads: int, group: int) -> Any:
    """NumPy: an mlx-lm mask (length, span) or (batch, 1 or heads, length, span) as
    (batch or 1, kv_heads or 1, group or 1, length, span)."""
    if mask.ndim == 2:
        return mask[None, None, None]
    if mask.shape[1] == 1:
        return mask[:, :, None]
    return mask.reshape(mask.shape[0], kv_heads, group, *mask.shape[-2:])


def _mask_scores_np(scores: Any, mask: Any, length: int) -> None:
    """In place on fresh (contiguous) NumPy scores, as `_apply_array_mask` does in MLX."""
    import numpy as np

    b, kv_heads, group_rows, span = scores.shape
    s5 = scores.reshape(b, kv_heads, group_rows // length, length, span)
    if mask.dtype == np.bool_:
        np.copyto(s5, np.finfo(np.float32).min, where=~mask)
    else:
        s5 += mask * np.float32(_LOG2E)


def _add_causal_bias(scores: Any, length: int) -> None:
    """In place on (b, kv_heads, group*length, span) scores: the queries are the last `length` positions."""
    if length > 1:
        b, kv_heads, group_rows, span = scores.shape
        tail = scores.reshape(b, kv_heads, group_rows // length, length, span)[..., span - length:]
        tail += _causal_bias(length)


def _softmax_numerators(rows: Any) -> Any:
    """`_exp2_rows`, split across the cores for large score blocks (NumPy releases the GIL)."""
    import numpy as np

    workers = _workers()
    if rows.size < _SPLIT_AT or workers < 2 or len(rows) < workers:
        return _exp2_rows(rows)
    bounds = [len(rows) * i // workers for i in range(workers + 1)]
    return np.concatenate(list(_pool().map(_exp2_rows, [rows[s:e] for s, e in zip(bounds, bounds[1:])])))


def _exp2_rows(rows: Any) -> Any:
    """In place: each row of log2-scaled scores -> 2 ** (row - row maximum), clamped at the smallest normal
    float32 exponent (subnormal weights make the next matrix product many times slower). Returns row sums."""
    import numpy as np

    rows -= rows.max(axis=-1, keepdims=True)
    np.maximum(rows, -126.0, out=rows)
    np.exp2(rows, out=rows)
    return rows.sum(axis=-1)


def _workers() -> int:
    return min(os.cpu_count() or 1, 4)


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(_workers(), thread_name_prefix="lem-attention")
    return _POOL


@lru_cache(maxsize=8)
def _causal_bias(length: int) -> Any:
    """(length, length): 0 on and below the diagonal, the float32 minimum above (future positions)."""
    import numpy as np

    return np.triu(np.full((length, length), np.finfo(np.float32).min, np.float32), 1)


def exp2_weights(scores: Any) -> Any:
    """2 ** (scores - row maximum), clamped at the smallest normal float32 exponent (subnormal results make
    `power` several times slower): softmax weights from log2-scaled scores, unnormalised. Lazy MLX ops."""
    import mlx.core as mx

    return mx.power(2.0, mx.maximum(scores - scores.max(axis=-1, keepdims=True), -126.0))
