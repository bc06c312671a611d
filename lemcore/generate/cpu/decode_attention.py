"""Decoding-step attention compiled with Numba, for the NumPy decoding step (decode.py).

One query token per sequence against its whole cache: a pass over the keys for the scores, a softmax over them
(small: kept in cache), a pass over the values. Reading the cache is the cost (16 sequences x 3 kv heads x
1.8K positions x 64 dims, ~44 MB of float32 per layer): this loop reads it at ~21 GB/s on our 2-core machine,
against ~13 GB/s for the best NumPy/BLAS arrangement (docs/platform-notes.md, "NumPy decoding step").

Numba compiles on first use (~3 s) and caches the machine code beside this file, or in the user's cache folder
where that is read-only. Imported only by decode.py, inside its functions: loading Numba takes about a second.
"""

from __future__ import annotations

import os
from typing import Any

# Numba's OpenMP workers sleep when idle rather than spin (a spinning pool takes a core from the BLAS products
# between two attention calls); OpenMP reads this when it loads, at the first parallel call. `lem` and the app
# set it at start already (lemcore.blas.THREAD_WAIT); this covers other hosts of the engine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402 - after the wait policy
import numpy as np  # noqa: E402


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def attend(queries: Any, keys: Any, values: Any, length: int, first: Any, out: Any) -> None:  # pragma: no cover
    """out[b, h, g] = softmax(queries[b, h, g] . keys[b, h, first[b]:length]) @ values[b, h, first[b]:length].

    queries (batch, kv_heads, group, dim) are scaled by 1/sqrt(dim) * log2(e) already, so the softmax is a base-2
    one; keys and values are the whole C-contiguous cache buffers (batch, kv_heads, capacity, dim), of which the
    first `length` positions are filled; `first[b]` is sequence b's first real position (before it: padding).
    Weights below 2 ** -126 of the largest are clamped there, as in attention.py (subnormals are slow).
    (Not measured by coverage: Numba runs the compiled loop, not this Python.)
    """
    batch, kv_heads, group, dim = queries.shape
    for bh in numba.prange(batch * kv_heads):
        b = bh // kv_heads
        h = bh % kv_heads
        start = first[b]
        scores = np.empty((group, length), np.float32)
        for t in range(start, length):
            for g in range(group):
                acc = np.float32(0.0)
                for d in range(dim):
                    acc += queries[b, h, g, d] * keys[b, h, t, d]
                scores[g, t] = acc
        for g in range(group):
            top = np.float32(-3.0e38)
            for t in range(start, length):
                top = max(top, scores[g, t])
            total = np.float32(0.0)
            for t in range(start, length):
                weight = np.exp2(max(scores[g, t] - top, np.float32(-126.0)))
                scores[g, t] = weight
                total += weight
            acc_row = np.zeros(dim, np.float32)
            for t in range(start, length):
                weight = scores[g, t]
                for d in range(dim):
                    acc_row[d] += weight * values[b, h, t, d]
            inverse = np.float32(1.0) / total
            for d in range(dim):
                out[b, h, g, d] = acc_row[d] * inverse
