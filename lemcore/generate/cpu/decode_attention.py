"""Decoding-step attention compiled with Numba, for the NumPy decoding step (decode.py).

One query token per sequence against its whole cache: a pass over the keys for the scores, a softmax over them
(small: kept in cache), a pass over the values. Reading the cache is the cost (16 sequences x 3 kv heads x
1.8K positions x 64 dims, ~44 MB of float32 per layer): the two Numba passes read it at 25-29 GB/s on our 2-core
machine, against ~13 GB/s for the best NumPy/BLAS arrangement (docs/platform-notes.md, "NumPy decoding step").

Numba compiles on first use (~3 s) and caches the machine code beside this file, or in the user's cache folder
where that is read-only. Imported only by decode.py, inside its functions: loading Numba takes about a second.
"""

from __future__ import annotations

from typing import Any

from lemcore.blas import set_thread_wait

# How long Numba's OpenMP workers spin when idle (lemcore/blas.py, THREAD_WAIT): read when OpenMP loads, at the
# first parallel call. `lem` and the app set it at start already; this covers other hosts of the engine.
set_thread_wait()

import numba  # noqa: E402 - after the thread wait
import numpy as np  # noqa: E402
from llvmlite import ir  # noqa: E402
from numba import types  # noqa: E402
from numba.extending import intrinsic, overload  # noqa: E402


@intrinsic
def _half_bits_to_float(typingctx: Any, bits: Any) -> Any:  # pragma: no cover - runs inside Numba's compiler
    """The float32 value of the IEEE half-precision float whose bits are `bits` (uint16): one conversion
    instruction (F16C), vectorised with the loop. Numba has no float16 arithmetic on the CPU."""
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(types.uint16), codegen


def as_float32(value: Any) -> Any:  # pragma: no cover - replaced by the overload inside compiled code
    """A cache element as float32: a float32 as it is, the bits of a float16 (uint16) converted."""
    return value


@overload(as_float32, inline="always")
def _as_float32(value: Any) -> Any:  # pragma: no cover - runs inside Numba's compiler
    if value == types.uint16:
        def convert(value: Any) -> Any:
            return _half_bits_to_float(value)  # type: ignore[call-arg]  # Numba passes the typing context
        return convert

    def same(value: Any) -> Any:
        return value
    return same


def attend(queries: Any, keys: Any, values: Any, length: int, first: Any, out: Any) -> None:
    """out[b, h, g] = softmax(queries[b, h, g] . keys[b, h, first[b]:length]) @ values[b, h, first[b]:length].

    queries (batch, kv_heads, group, dim) are scaled by 1/sqrt(dim) * log2(e) already, so the softmax is a base-2
    one; keys and values are the whole C-contiguous cache buffers (batch, kv_heads, capacity, dim), float32 or
    float16 (half the bytes to read: docs/platform-notes.md, "NumPy decoding step"), of which the first `length`
    positions are filled; `first[b]` is sequence b's first real position (before it: padding).
    Weights below 2 ** -126 of the largest are clamped there, as in attention.py (subnormals are slow).

    Three passes: Numba's scores (each row less its maximum), NumPy's vectorised `exp2` over all of them at once
    (Numba calls a scalar exp2 per score: a fused loop spent more time there than reading the cache), Numba's
    weighted sum of the values. With up to 4 query heads per kv head both Numba passes read and convert each
    cache row once for all of them: 24.8 -> 20.7 ms (scores) and 18.0-18.7 -> 14.5-15.2 ms (values) for 30 layers
    of 16 sequences x 1.8K float16 positions (docs/platform-notes.md, "NumPy decoding step").
    """
    batch, kv_heads, group, _ = queries.shape
    weights = np.empty((batch, kv_heads, group, length), np.float32)
    _scores(queries, _compiled_view(keys), length, first, weights)
    np.exp2(weights, out=weights)
    _weighted_values(weights, _compiled_view(values), length, first, out)


def _compiled_view(cache: Any) -> Any:
    """A float16 cache as its bits (uint16, which the kernels convert); a float32 one as it is."""
    return cache.view(np.uint16) if cache.dtype == np.float16 else cache


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _scores(queries: Any, keys: Any, length: int, first: Any, scores: Any) -> None:  # pragma: no cover
    """scores[b, h, g, t] = queries . keys[t] less the row's maximum, clamped at -126; padding positions -126.
    (Not measured by coverage: Numba runs the compiled loop, not this Python.)"""
    batch, kv_heads, group, dim = queries.shape
    for bh in numba.prange(batch * kv_heads):
        q = queries[bh // kv_heads, bh % kv_heads]
        k = keys[bh // kv_heads, bh % kv_heads]
        s = scores[bh // kv_heads, bh % kv_heads]
        start = first[bh // kv_heads]
        if group <= 4:  # each key converted and read once for all the group's queries (rows past it repeat)
            g1, g2, g3 = min(1, group - 1), min(2, group - 1), min(3, group - 1)
            for t in range(start, length):
                a0 = a1 = a2 = a3 = np.float32(0.0)
                for d in range(dim):
                    x = as_float32(k[t, d])
                    a0 += q[0, d] * x
                    a1 += q[g1, d] * x
                    a2 += q[g2, d] * x
                    a3 += q[g3, d] * x
                s[0, t], s[g1, t], s[g2, t], s[g3, t] = a0, a1, a2, a3
        else:
            for t in range(start, length):
                for g in range(group):
                    acc = np.float32(0.0)
                    for d in range(dim):
                        acc += q[g, d] * as_float32(k[t, d])
                    s[g, t] = acc
        for g in range(group):
            top = np.float32(-3.0e38)
            for t in range(start, length):
                top = max(top, s[g, t])
            for t in range(start):
                s[g, t] = np.float32(-126.0)
            for t in range(start, length):
                s[g, t] = max(s[g, t] - top, np.float32(-126.0))


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _weighted_values(weights: Any, values: Any, length: int, first: Any, out: Any) -> None:  # pragma: no cover
    """out[b, h, g] = sum over t of weights[b, h, g, t] * values[b, h, t] / sum of the weights. The sums build
    in a fresh local array, which the compiler knows nothing else writes (into `out` they were ~15% slower:
    docs/platform-notes.md, "NumPy decoding step").
    (Not measured by coverage: Numba runs the compiled loop, not this Python.)"""
    batch, kv_heads, group, dim = out.shape
    for bh in numba.prange(batch * kv_heads):
        w = weights[bh // kv_heads, bh % kv_heads]
        v = values[bh // kv_heads, bh % kv_heads]
        o = out[bh // kv_heads, bh % kv_heads]
        start = first[bh // kv_heads]
        acc = np.zeros((max(group, 4), dim), np.float32)
        if group <= 4:  # as in _scores: each value row converted and read once for the group
            g1, g2, g3 = min(1, group - 1), min(2, group - 1), min(3, group - 1)
            for t in range(start, length):
                w0, w1, w2, w3 = w[0, t], w[g1, t], w[g2, t], w[g3, t]
                for d in range(dim):
                    x = as_float32(v[t, d])
                    acc[0, d] += w0 * x
                    acc[1, d] += w1 * x
                    acc[2, d] += w2 * x
                    acc[3, d] += w3 * x
        else:
            for t in range(start, length):
                for g in range(group):
                    weight = w[g, t]
                    for d in range(dim):
                        acc[g, d] += weight * as_float32(v[t, d])
        for g in range(group):
            total = np.float32(0.0)
            for t in range(start, length):
                total += w[g, t]
            for d in range(dim):
                o[g, d] = acc[g, d] / total
