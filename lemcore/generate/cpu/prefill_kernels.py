"""The element-wise work of a prompt chunk's layers in NumPy (decode.py, `NumpyDecoder.fill`), compiled with Numba.

Between the products, a 512-token chunk's layer spent ~3 ms of ~40 in NumPy's element-wise passes, on one core:
RMSNorm (several passes over the activations, ~0.3-0.45 ms each time), RoPE with the transposes into the cache
and the query rows (~0.9 ms), SwiGLU (~0.6-0.85 ms). The first two read their inputs once and write their output
once here (docs/platform-notes.md, "Prefill"); SwiGLU stays NumPy's (activations.py), whose vectorised division
Numba did not match. One thread each: a second thread pool waking between OpenBLAS's calls cost more than it
gained in the decoding step (decode_products.py).

Imported only by decode.py, inside its functions (loading Numba takes ~0.2 s).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np


@numba.njit(fastmath=True, cache=True, nogil=True)
def rms_norm(x: Any, weight: Any, eps: Any) -> Any:  # pragma: no cover - Numba runs the compiled loop
    """mlx.nn.RMSNorm over the last axis of (rows, hidden) activations: a new array."""
    rows, hidden = x.shape
    out = np.empty_like(x)
    for r in range(rows):
        total = np.float32(0.0)
        for i in range(hidden):
            total += x[r, i] * x[r, i]
        scale = np.float32(1.0) / np.sqrt(total / np.float32(hidden) + eps)
        for i in range(hidden):
            out[r, i] = x[r, i] * scale * weight[i]
    return out


@numba.njit(fastmath=True, cache=True, nogil=True)
def rope_into(projected: Any, cos: Any, sin: Any, scale: Any, out: Any, group: int, first_row: int,
              ) -> None:  # pragma: no cover - Numba runs the compiled loop
    """mlx.nn.RoPE (not traditional) of a chunk's projections (length, heads * dim), times `scale`, written
    head-major into `out` (kv_heads, rows, dim): head h's position t goes to out[h // group, (h % group) *
    length + first_row + t]. Keys: group 1, `first_row` the chunk's first position in the cache; queries: the
    query heads that share a kv head as consecutive row blocks (attention.py's layout), `first_row` 0.
    cos and sin are (length, half); dims past 2 * half are copied unrotated."""
    length = projected.shape[0]
    dim = out.shape[2]
    heads = projected.shape[1] // dim
    half = cos.shape[1]
    for h in range(heads):
        target = out[h // group]
        base = (h % group) * length + first_row
        for t in range(length):
            src = projected[t, h * dim:(h + 1) * dim]
            row = target[base + t]
            for i in range(half):
                a, b = src[i], src[i + half]
                row[i] = (a * cos[t, i] - b * sin[t, i]) * scale
                row[i + half] = (a * sin[t, i] + b * cos[t, i]) * scale
            for i in range(2 * half, dim):
                row[i] = src[i] * scale
