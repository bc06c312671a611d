"""Attention for MLX's CPU backend, switched in while our generator runs a model.

On the CPU, `mx.fast.scaled_dot_product_attention` falls back to plain ops, and its softmax spends most of its
time in `exp` (about 50 M elements/s on our x86 runners, single-threaded). A gold sandwich is 1.5-3.7K tokens,
so attention's softmax is most of a prompt's prefill and a large share of every batched decoding step. Written
with `power(2, x)` on log2-scaled scores (2-3x faster per element here) and grouped-query heads folded into
one matrix product, the same attention ran 1.3-2x faster in our measurements (512-token prefill chunks and
batched decoding steps), equal to float32 rounding (tests/core/test_cpu_attention.py).

Metal keeps MLX's fused kernel: `fast_attention()` changes nothing unless the default device is the CPU.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_LOG2E = 1.0 / math.log(2.0)
_NAME = "scaled_dot_product_attention"  # what mlx-lm's model modules import from mlx_lm.models.base


def attention(queries: Any, keys: Any, values: Any, cache: Any, scale: float, mask: Any,
              sinks: Any = None) -> Any:
    """Drop-in for mlx_lm.models.base.scaled_dot_product_attention (float32, unquantized cache, no sinks;
    anything else goes to the stock function)."""
    import mlx.core as mx
    from mlx_lm.models import base

    if sinks is not None or hasattr(cache, "bits") or queries.dtype != mx.float32:
        return base.scaled_dot_product_attention(queries, keys, values, cache=cache, scale=scale, mask=mask,
                                                 sinks=sinks)
    b, q_heads, length, dim = queries.shape
    kv_heads, span = keys.shape[1], keys.shape[2]
    group = q_heads // kv_heads
    # Query heads that share a key/value head become rows of one matrix: one BLAS call per kv head.
    scores = (queries * (scale * _LOG2E)).reshape(b, kv_heads, group * length, dim) @ keys.swapaxes(-1, -2)
    if mask is not None:
        scores = scores.reshape(b, kv_heads, group, length, span)
        if isinstance(mask, str):  # "causal": the queries are the last `length` positions
            mask = mx.arange(span - length, span)[:, None] >= mx.arange(span)[None]
        elif mask.ndim == 4:  # (batch, 1 or heads, length, span)
            if mask.shape[1] == 1:
                mask = mx.expand_dims(mask, 2)
            else:
                mask = mask.reshape(mask.shape[0], kv_heads, group, *mask.shape[-2:])
        if mask.dtype == mx.bool_:
            # The float minimum, not -inf, so a fully masked (padding) row stays finite, as in mlx-lm.
            scores = mx.where(mask, scores, mx.finfo(mx.float32).min)
        else:
            scores = scores + mask * _LOG2E
        scores = scores.reshape(b, kv_heads, group * length, span)
    weights = exp2_weights(scores)
    # Normalise the (length x dim) output rather than the (length x span) weights: fewer elements.
    out = (weights @ values) * mx.reciprocal(weights.sum(axis=-1, keepdims=True))
    return out.reshape(b, q_heads, length, dim)


def exp2_weights(scores: Any) -> Any:
    """2 ** (scores - row maximum), clamped at the smallest normal float32 exponent (subnormal results make
    `power` several times slower): softmax weights from log2-scaled scores, unnormalised."""
    import mlx.core as mx

    return mx.power(2.0, mx.maximum(scores - scores.max(axis=-1, keepdims=True), -126.0))


@contextmanager
def fast_attention(model: Any) -> Iterator[bool]:
    """Use `attention` in the model's modules for the duration (CPU only). Yields whether it is on.

    Use on the MLX thread, around code that runs this model; the stock function is put back on exit.
    """
    import mlx.core as mx
    from mlx_lm.models import base

    if mx.default_device() != mx.cpu:
        yield False
        return
    patched = []
    for name in {type(m).__module__ for m in model.modules()}:
        module = sys.modules.get(name)
        if module is not None and getattr(module, _NAME, None) is base.scaled_dot_product_attention:
            setattr(module, _NAME, attention)
            patched.append(module)
    try:
        yield bool(patched)
    finally:
        for module in patched:
            setattr(module, _NAME, base.scaled_dot_product_attention)
