"""Decoding-step attention compiled with Numba, for the NumPy decoding step (decode.py).

One query token per sequence against its whole cache: a pass over the keys for the scores, a softmax over them
(small: kept in cache), a pass over the values. Reading the cache is the cost (16 sequences x 3 kv heads x
1.8K positions x 64 dims, ~44 MB of float32 per layer): the two Numba passes read it at 25-29 GB/s on our 2-core
machine, against ~13 GB/s for the best NumPy/BLAS arrangement (docs/platform-notes.md, "NumPy decoding step").

Where the CPU has AVX-512 and heads are 64 or 128 wide, both passes run on tiles written in LLVM IR (Numba
intrinsics, as prefill_products.py's): the scores of 16 positions summed across lanes together, the weighted
values' sums kept in registers. LLVM's code for the plain loops summed each score's lanes alone and kept the
values' sums in memory.

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
from numba.core import cgutils  # noqa: E402
from numba.extending import intrinsic, overload  # noqa: E402

# The tiles below keep up to 16 sums and partial trees in registers: AVX-512's 32 (prefill_products.py's rule).
from lemcore.generate.cpu import vector_ir  # noqa: E402
from lemcore.generate.cpu.prefill_products import AVAILABLE as TILED  # noqa: E402
from lemcore.generate.cpu.row_max import row_max  # noqa: E402
from lemcore.generate.cpu.softmax_rows import softmax_row  # noqa: E402


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


_LANES, _VEC, _IDX = vector_ir.LANES, vector_ir.VEC, vector_ir.INDICES


def _cache_row(context: Any, builder: Any, cache: Any, half: bool, at: Any) -> Any:
    """16 elements of a cache buffer from element index `at`, as <16 x float> (float16 bits converted)."""
    place = builder.gep(cache.data, [at])
    if not half:
        return builder.load(builder.bitcast(place, _VEC.as_pointer()), align=4)
    bits = builder.load(builder.bitcast(place, ir.VectorType(ir.IntType(16), _LANES).as_pointer()), align=2)
    return builder.fpext(builder.bitcast(bits, ir.VectorType(ir.HalfType(), _LANES)), _VEC)


def _pair_sums(builder: Any, a: Any, b: Any, sources: int) -> Any:
    """a and b each hold 16 / sources lanes of partial sums for each of `sources` dot products, in order; the
    result holds half as many lanes for each of a's and then b's, each the sum of a pair of theirs. Four levels
    take 16 vectors to one whose lane i is the sum of vector i's lanes."""
    width = _LANES // sources
    low = [i * width + j for i in range(sources) for j in range(width // 2)]
    low += [_LANES + x for x in low]
    high = [x + width // 2 for x in low]
    return builder.fadd(builder.shuffle_vector(a, b, ir.Constant(_IDX, low)),
                        builder.shuffle_vector(a, b, ir.Constant(_IDX, high)))


def _score_tile(queries: int, chunks: int) -> Any:
    """An intrinsic tile(q, k, s, t, g): s[g + i, t:t + 16] = q[g + i] . k[t + r] for i < `queries`, r < 16,
    with 16 * `chunks` dims. Each key row is read and converted once for the queries; each query's 16 sums are
    reduced across lanes together (a tree of shuffles, 45 instructions for 16 rows, against ~8 per row alone)."""

    @intrinsic
    def tile(typingctx: Any, q: Any, k: Any, s: Any, t: Any, g: Any) -> Any:  # pragma: no cover - Numba's compiler
        signature = types.void(q, k, s, types.intp, types.intp)
        half = k.dtype == types.uint16

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            qa, ka, sa = (context.make_array(a)(context, builder, v) for a, v in zip(sig.args[:3], args[:3]))
            row, g0 = args[3], args[4]
            stride = vector_ir.row_stride
            q_stride, k_stride, s_stride = (stride(builder, qa, 4), stride(builder, ka, 2 if half else 4),
                                            stride(builder, sa, 4))
            intp = q_stride.type
            fma = vector_ir.fma(builder)
            query_rows = [builder.mul(builder.add(g0, ir.Constant(intp, i)), q_stride) for i in range(queries)]
            pending: list[list[tuple[int, Any]]] = [[] for _ in range(queries)]
            for r in range(_LANES):
                at = builder.mul(builder.add(row, ir.Constant(intp, r)), k_stride)
                keys = [_cache_row(context, builder, ka, half, builder.add(at, ir.Constant(intp, _LANES * c)))
                        for c in range(chunks)]
                for i in range(queries):
                    total = None
                    for c in range(chunks):
                        place = builder.gep(qa.data, [builder.add(query_rows[i], ir.Constant(intp, _LANES * c))])
                        weight = builder.load(builder.bitcast(place, _VEC.as_pointer()), align=4)
                        total = builder.fmul(keys[c], weight) if total is None else builder.call(
                            fma, [keys[c], weight, total])
                    stack, level = pending[i], 0
                    while stack and stack[-1][0] == level:  # two of a level make one of the next
                        total = _pair_sums(builder, stack.pop()[1], total, 1 << level)
                        level += 1
                    stack.append((level, total))
            for i in range(queries):
                place = builder.gep(sa.data, [builder.add(builder.mul(builder.add(g0, ir.Constant(intp, i)), s_stride),
                                                          row)])
                builder.store(pending[i][0][1], builder.bitcast(place, _VEC.as_pointer()), align=4)
            return context.get_dummy_value()

        return signature, codegen

    return tile


def _value_span(queries: int, chunks: int) -> Any:
    """An intrinsic span(w, v, acc, lo, hi, g): acc[g + i] = sum over lo <= t < hi of w[g + i, t] * v[t] for
    i < `queries`, with 16 * `chunks` dims: the sums stay in registers (queries * chunks <= 16 of them), each value
    row is read and converted once for the queries."""

    @intrinsic
    def span(typingctx: Any, w: Any, v: Any, acc: Any, lo: Any, hi: Any,
             g: Any) -> Any:  # pragma: no cover - runs inside Numba's compiler
        signature = types.void(w, v, acc, types.intp, types.intp, types.intp)
        half = v.dtype == types.uint16

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            wa, va, aa = (context.make_array(a)(context, builder, x) for a, x in zip(sig.args[:3], args[:3]))
            first, last, g0 = args[3], args[4], args[5]
            stride = vector_ir.row_stride
            w_stride, v_stride, a_stride = (stride(builder, wa, 4), stride(builder, va, 2 if half else 4),
                                            stride(builder, aa, 4))
            intp = w_stride.type
            fma = vector_ir.fma(builder)
            sums = vector_ir.zeroed_sums(builder, queries, chunks)
            weight_rows = [builder.mul(builder.add(g0, ir.Constant(intp, i)), w_stride) for i in range(queries)]
            with cgutils.for_range(builder, builder.sub(last, first)) as loop:
                t = builder.add(first, loop.index)
                at = builder.mul(t, v_stride)
                rows = [_cache_row(context, builder, va, half, builder.add(at, ir.Constant(intp, _LANES * c)))
                        for c in range(chunks)]
                for i in range(queries):
                    weight = builder.load(builder.gep(wa.data, [builder.add(weight_rows[i], t)]))
                    broadcast = vector_ir.broadcast(builder, weight)
                    for c in range(chunks):
                        builder.store(builder.call(fma, [broadcast, rows[c], builder.load(sums[i][c])]), sums[i][c])
            for i in range(queries):
                out_row = builder.mul(builder.add(g0, ir.Constant(intp, i)), a_stride)
                for c in range(chunks):
                    place = builder.gep(aa.data, [builder.add(out_row, ir.Constant(intp, _LANES * c))])
                    builder.store(builder.load(sums[i][c]), builder.bitcast(place, _VEC.as_pointer()), align=4)
            return context.get_dummy_value()

        return signature, codegen

    return span


# Head sizes 64 (4 vectors) and 128 (8): up to 4 and 2 queries per pass, so that the sums fit in registers.
_score64_1, _score64_2, _score64_3, _score64_4 = (_score_tile(n, 4) for n in (1, 2, 3, 4))
_score128_1, _score128_2 = (_score_tile(n, 8) for n in (1, 2))
_value64_1, _value64_2, _value64_3, _value64_4 = (_value_span(n, 4) for n in (1, 2, 3, 4))
_value128_1, _value128_2 = (_value_span(n, 8) for n in (1, 2))


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
    of 16 sequences x 1.8K float16 positions (docs/platform-notes.md, "NumPy decoding step"). The tiles
    (`TILED`, head size 64 or 128) took the same to 11.8-14.3 ms (scores) and 9.5-11.3 ms (values), against
    14.4-22.6 and 15.3-22.9 ms alternating with the loops; a 16-sequence engine step 47-48 vs 70-77 ms. On the
    tiles the softmax is softmax_rows.py's one vectorised pass per row (row_max.py's maximum, exp2.py's 2 ** x),
    inside the scores' parallel loop: no NumPy pass between.
    """
    batch, kv_heads, group, dim = queries.shape
    weights = np.empty((batch, kv_heads, group, length), np.float32)
    if TILED and dim in (64, 128) and queries.flags.c_contiguous:
        totals = np.empty((batch, kv_heads, group), np.float32)
        _scores_tiled(queries, _compiled_view(keys), length, first, weights, totals)
        _values_tiled(weights, _compiled_view(values), length, first, totals, out)
        return
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
            top = row_max(s[g, start:], length - start)  # type: ignore[call-arg, var-annotated]  # Numba: the context
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


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _scores_tiled(queries: Any, keys: Any, length: int, first: Any, scores: Any,
                  totals: Any) -> None:  # pragma: no cover - Numba runs the compiled loop
    """The softmax weights of the scores, unnormalised (2 ** (score - the row's maximum), clamped at 2 ** -126),
    from first[b] on, and totals[b, h, g] their sum; positions before first[b] are left as they are. The scores on
    the intrinsic tiles (head size 64 or 128): 16 positions at a time, up to 4 (or 2) queries per pass; the
    positions past the last multiple of 16 one dot product at a time."""
    batch, kv_heads, group, dim = queries.shape
    step = 4 if dim == 64 else 2
    for bh in numba.prange(batch * kv_heads):
        q = queries[bh // kv_heads, bh % kv_heads]
        k = keys[bh // kv_heads, bh % kv_heads]
        s = scores[bh // kv_heads, bh % kv_heads]
        start = first[bh // kv_heads]
        tiled_end = start + (length - start) // 16 * 16
        for g in range(0, group, step):
            n = min(step, group - g)
            for t in range(start, tiled_end, 16):
                if dim == 64:
                    if n == 4:
                        _score64_4(q, k, s, t, g)
                    elif n == 3:
                        _score64_3(q, k, s, t, g)
                    elif n == 2:
                        _score64_2(q, k, s, t, g)
                    else:
                        _score64_1(q, k, s, t, g)
                elif n == 2:
                    _score128_2(q, k, s, t, g)
                else:
                    _score128_1(q, k, s, t, g)
        for t in range(tiled_end, length):
            for g in range(group):
                acc = np.float32(0.0)
                for d in range(dim):
                    acc += q[g, d] * as_float32(k[t, d])
                s[g, t] = acc
        for g in range(group):
            totals[bh // kv_heads, bh % kv_heads, g] = softmax_row(s[g, start:], length - start, length - start)


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _values_tiled(weights: Any, values: Any, length: int, first: Any, totals: Any,
                  out: Any) -> None:  # pragma: no cover - Numba runs the compiled loop
    """_weighted_values on the intrinsic spans (head size 64 or 128): the sums in registers, up to 4 (or 2)
    queries per pass over the values."""
    batch, kv_heads, group, dim = out.shape
    step = 4 if dim == 64 else 2
    for bh in numba.prange(batch * kv_heads):
        w = weights[bh // kv_heads, bh % kv_heads]
        v = values[bh // kv_heads, bh % kv_heads]
        o = out[bh // kv_heads, bh % kv_heads]
        start = first[bh // kv_heads]
        acc = np.empty((group, dim), np.float32)
        for g in range(0, group, step):
            n = min(step, group - g)
            if dim == 64:
                if n == 4:
                    _value64_4(w, v, acc, start, length, g)
                elif n == 3:
                    _value64_3(w, v, acc, start, length, g)
                elif n == 2:
                    _value64_2(w, v, acc, start, length, g)
                else:
                    _value64_1(w, v, acc, start, length, g)
            elif n == 2:
                _value128_2(w, v, acc, start, length, g)
            else:
                _value128_1(w, v, acc, start, length, g)
        for g in range(group):
            total = totals[bh // kv_heads, bh % kv_heads, g]
            for d in range(dim):
                o[g, d] = acc[g, d] / total
