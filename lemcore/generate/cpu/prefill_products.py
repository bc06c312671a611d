"""The matrix products of prompt chunks and decoding steps (decode.py, `NumpyDecoder`) on a register-tiled kernel.

decode_products.py's kernel takes dot products along the inner dimension and sums each vector's lanes at the end:
~290 GFLOP/s for a 512-token chunk here, about 60% of what the cores' FMA units do. This one keeps its sums
in 24 AVX-512 registers, each 16 tokens' outputs for one weight row, so nothing is summed across lanes: per
inner index it loads 3 vectors of 16 tokens' activations and 8 weights (one per weight row), and issues 24 FMAs.
That needs the activations token-contiguous, (inner, tokens): the passes that make them write them so, padded
with zeros to a multiple of 16 tokens (`columns`, `norm_columns`; the gate and up products come out that way,
`products_as_columns`, so SwiGLU is element-wise on them). 385-452 vs 242-352 GFLOP/s on a chunk's shapes; a
decoding step's 16 rows are one column of tiles (docs/platform-notes.md, "Prefill", "NumPy decoding step").

The tile is written in LLVM IR (a Numba intrinsic) because LLVM does not build this register tiling from
Numba's loops: scalar source for the same tile compiled to 14 GFLOP/s. Outputs are stored in place in the
usual (tokens, out) layout, in a buffer whose row length is an odd number of cache lines: with 1536 floats
(exactly 96 lines) the 48 rows of one tile fell into two of L1's sets and the product ran at 229 GFLOP/s.

A chunk's causal attention runs on the same tile (`attention_columns`): per head and block of 64 query rows, the
scores, their softmax and the weighted values while the block's scores are in L2, only up to each tile's last
position, written as the output projection's input.

Only where the CPU has AVX-512 (`AVAILABLE`): with 16 vector registers (AVX2) or 128-bit ones (NEON) the tile's
24 sums would not fit in registers; decode.py keeps decode_products.py's kernel and attention.py's there.

Imported only by decode.py, inside its functions: loading Numba takes about a second.
"""

from __future__ import annotations

from typing import Any

from lemcore.blas import set_thread_wait

set_thread_wait()  # before Numba's OpenMP pool starts (decode_products.py says why)

import math  # noqa: E402
import os  # noqa: E402
import threading  # noqa: E402

import numba  # noqa: E402 - after the thread wait
import numpy as np  # noqa: E402
from llvmlite import binding, ir  # noqa: E402
from numba import types  # noqa: E402
from numba.core import cgutils  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

from lemcore.generate.cpu import vector_ir  # noqa: E402
from lemcore.generate.cpu.exp2 import exp2_clamped  # noqa: E402
from lemcore.generate.cpu.softmax_rows import softmax_row  # noqa: E402

# Numba compiles for this machine's CPU unless told another (NUMBA_CPU_NAME, NUMBA_CPU_FEATURES: then we cannot
# tell whether the target has AVX-512, and keep the other kernel).
AVAILABLE = ("+avx512f" in binding.get_host_cpu_features().flatten().split(",")
             and not (os.environ.get("NUMBA_CPU_NAME") or os.environ.get("NUMBA_CPU_FEATURES")))
ROWS = 8  # weight rows per tile
LANES = vector_ir.LANES  # float32 values per AVX-512 register
PAD = LANES  # activation columns are padded to a multiple of this
# Activation columns per block: a block of `columns`' output (inner x block floats, ~256 KB) stays in a core's L2
# while every weight tile passes over it (decode_products.py says the same of its blocks).
_BLOCK_BYTES = 256 * 1024

_VEC = vector_ir.VEC
_I32 = vector_ir.I32


def _tile_intrinsic(vectors: int, transposed: bool) -> Any:
    """An intrinsic tile(w, xt, out, j, m, inner): for r < ROWS and t < 16 * vectors the sums
    w[j + r, :inner] . xt[:inner, m + t], kept in registers along the inner dimension, stored to out[m + t, j + r]
    (one value at a time), or with `transposed` to out[j + r, m + t] (16 at a time)."""

    @intrinsic
    def tile(typingctx: Any, w: Any, xt: Any, out: Any, j: Any, m: Any, inner: Any,
             ) -> Any:  # pragma: no cover - runs inside Numba's compiler
        signature = types.void(w, xt, out, types.intp, types.intp, types.intp)

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            weights, acts, outs = (context.make_array(t)(context, builder, a) for t, a in zip(sig.args[:3], args[:3]))
            first_row, first_col, count = args[3], args[4], args[5]
            row_stride, act_stride, out_stride = (vector_ir.row_stride(builder, a, 4) for a in (weights, acts, outs))
            intp = row_stride.type
            fma = vector_ir.fma(builder)
            sums = vector_ir.zeroed_sums(builder, ROWS, vectors)  # in registers: the sums never touch memory
            rows = [builder.gep(weights.data, [builder.mul(builder.add(first_row, ir.Constant(intp, r)), row_stride)])
                    for r in range(ROWS)]
            with cgutils.for_range(builder, count) as loop:
                k = loop.index
                at = builder.gep(acts.data, [builder.add(builder.mul(k, act_stride), first_col)])
                loaded = [builder.load(builder.bitcast(builder.gep(at, [ir.Constant(intp, LANES * v)]),
                                                       _VEC.as_pointer()), align=4) for v in range(vectors)]
                for r in range(ROWS):
                    broadcast = vector_ir.broadcast(builder, builder.load(builder.gep(rows[r], [k])))
                    for v in range(vectors):
                        builder.store(builder.call(fma, [broadcast, loaded[v], builder.load(sums[r][v])]), sums[r][v])
            for r in range(ROWS):
                row_index = builder.add(first_row, ir.Constant(intp, r))
                for v in range(vectors):
                    total = builder.load(sums[r][v])
                    first = builder.add(first_col, ir.Constant(intp, LANES * v))
                    if transposed:
                        place = builder.gep(outs.data, [builder.add(builder.mul(row_index, out_stride), first)])
                        builder.store(total, builder.bitcast(place, _VEC.as_pointer()), align=4)
                        continue
                    for lane in range(LANES):
                        token = builder.add(first, ir.Constant(intp, lane))
                        place = builder.gep(outs.data, [builder.add(builder.mul(token, out_stride), row_index)])
                        builder.store(builder.extract_element(total, ir.Constant(_I32, lane)), place)
            return context.get_dummy_value()

        return signature, codegen

    return tile


_tile3, _tile2, _tile1 = (_tile_intrinsic(n, False) for n in (3, 2, 1))
_tile3_t, _tile2_t, _tile1_t = (_tile_intrinsic(n, True) for n in (3, 2, 1))
_WIDE = 3 * LANES
_LOG2E = np.float32(1.0 / math.log(2.0))


_SCRATCH = threading.local()


def _buffer(slot: str | None, shape: tuple[int, ...]) -> Any:
    """A float32 array of `shape`: new without a slot; else a view of this thread's buffer for `slot`, kept between
    calls and grown when too small, so valid until the next call with that slot. A chunk's layers ask for ~10 MB
    of arrays each, and fresh pages cost ~3.5 us per 4 KB here (docs/platform-notes.md, "Prefill"), as
    attention.py's scores buffer is kept for; a whole prompt's `fill` measured level either way (1.218 vs 1.223x
    the old path), so this guards against glibc handing the memory back rather than being a measured gain."""
    if slot is None:
        return np.empty(shape, np.float32)
    buffers = _SCRATCH.__dict__
    size = math.prod(shape)
    if slot not in buffers or buffers[slot].size < size:
        buffers[slot] = np.empty(size, np.float32)
    return buffers[slot][:size].reshape(shape)


def release_buffers() -> None:
    """Free this thread's buffers (at the end of a run)."""
    _SCRATCH.__dict__.clear()


def columns(x: Any, slot: str | None = None) -> Any:
    """(tokens, inner) activations -> (inner, tokens padded to a multiple of 16) float32, the padding zero: the
    layout `products` reads."""
    out = _buffer(slot, (x.shape[1], -(-x.shape[0] // PAD) * PAD))
    _columns(x, out)
    return out


def norm_columns(x: Any, weight: Any, eps: Any, slot: str | None = None) -> Any:
    """mlx.nn.RMSNorm of (tokens, hidden) activations, written as `columns` lays them out (one pass)."""
    out = _buffer(slot, (x.shape[1], -(-x.shape[0] // PAD) * PAD))
    _norm_columns(x, weight, eps, out)
    return out


def swiglu_in_place(gate: Any, up: Any) -> Any:
    """gate <- silu(gate) * up, element by element (same shapes, C-contiguous); returns gate. For the gate and up
    products laid out as columns (`products_as_columns`): the result is the down projection's input as it is, and
    the padding columns stay zero (silu(0) = 0)."""
    _swiglu(gate.reshape(-1), up.reshape(-1))
    return gate


def products(xt: Any, tokens: int, weights: Any, slot: str | None = None) -> Any:
    """The first `tokens` columns of xt (inner, padded tokens), from `columns`, times weights (out, inner).T:
    (tokens, out) float32, a view of a buffer whose rows are an odd number of cache lines long."""
    out_rows, inner = weights.shape
    lines = -(-out_rows // LANES)
    # 48 rows a cache line's multiple of 64 apart share 48 / 12 (ways) sets of L1 at best; 1536 floats (96 lines)
    # put them in 2. Rows an odd number of lines long instead; shorter strides are left as they are, and so is
    # the output C-contiguous for the consumers that vectorise on that (RoPE).
    padded = lines + 1 if math.gcd(lines, 64) >= 16 else lines
    out = _buffer(slot, (xt.shape[1], padded * LANES if padded != lines else out_rows))
    _products(weights, xt, out, _block(inner), inner, False)
    return out[:tokens, :out_rows]


def products_as_columns(xt: Any, weights: Any, slot: str | None = None) -> Any:
    """weights (out, inner) times xt (inner, padded tokens), from `columns`, laid out as `columns` lays out its
    result: (out, padded tokens), stored 16 tokens at a time; the padding columns come out zero."""
    out_rows, inner = weights.shape
    out = _buffer(slot, (out_rows, xt.shape[1]))
    _products(weights, xt, out, _block(inner), inner, True)
    return out


def attention_columns(rows: Any, keys: Any, values: Any, at: int, length: int, slot: str | None = None) -> Any:
    """Causal attention of a chunk of `length` tokens from position `at`, laid out as `columns` lays out the output
    projection's input: (heads * dim, length padded), inner index head * dim + d. rows (kv_heads, group * length,
    dim): the queries, scaled by log2(e) / sqrt(dim), the query heads that share a kv head one after another (as
    attention.py's `many_rows` takes them); keys and values (kv_heads, >= at + length, dim), C-contiguous, read
    up to at + length. One parallel pass (`_chunk_attention`) over blocks of 64 query rows per head."""
    kv_heads, group_rows, dim = rows.shape
    span = at + length
    padded_span = -(-span // PAD) * PAD
    key_columns = _buffer("keys", (kv_heads, dim, padded_span))
    for h in range(kv_heads):
        _columns(keys[h, :span], key_columns[h])
    out = _buffer(slot, (kv_heads * group_rows // length * dim, -(-length // PAD) * PAD))  # heads * dim rows
    out[:, length:] = 0.0
    scratch = _buffer("scores", (numba.get_num_threads(), _ATTENTION_ROWS, padded_span))
    _chunk_attention(rows, key_columns, values, out, scratch, at, length, _ATTENTION_ROWS)
    return out


_ATTENTION_ROWS = 64  # query rows per block: 64 x 1.6K scores (~400 KB) stay in L2


def _block(inner: int) -> int:
    return max(_WIDE, _BLOCK_BYTES // (4 * max(inner, 1)) // _WIDE * _WIDE)


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _columns(x: Any, out: Any) -> None:  # pragma: no cover - Numba runs the compiled loop
    """out[i, t] = x[t, i], zero past x's last token, in 16 x 16 blocks (both sides a cache line wide)."""
    tokens, inner = x.shape
    padded = out.shape[1]
    for block in numba.prange(padded // PAD):
        t0 = block * PAD
        for i0 in range(0, inner, PAD):
            for i in range(i0, min(inner, i0 + PAD)):
                for t in range(t0, t0 + PAD):
                    out[i, t] = x[t, i] if t < tokens else np.float32(0.0)


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _norm_columns(x: Any, weight: Any, eps: Any, out: Any) -> None:  # pragma: no cover - compiled loop
    """out[i, t] = RMSNorm(x[t])[i], zero past the last token, 16 tokens per task."""
    tokens, hidden = x.shape
    for block in numba.prange(out.shape[1] // PAD):
        t0 = block * PAD
        scale = np.zeros(PAD, np.float32)
        for t in range(t0, min(tokens, t0 + PAD)):
            total = np.float32(0.0)
            for i in range(hidden):
                total += x[t, i] * x[t, i]
            scale[t - t0] = np.float32(1.0) / np.sqrt(total / np.float32(hidden) + eps)
        for i in range(hidden):
            for t in range(PAD):
                out[i, t0 + t] = x[t0 + t, i] * scale[t] * weight[i] if t0 + t < tokens else np.float32(0.0)


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _swiglu(gate: Any, up: Any) -> None:  # pragma: no cover - compiled loop
    """gate[i] <- silu(gate[i]) * up[i]. The sigmoid from e = 2 ** -(|g| log2 e) (exp2.py's, which takes exponents
    <= 0, clamped at 2 ** -126): 1 / (1 + e) for g >= 0, e / (1 + e) below; no overflow either way."""
    # One flat parallel loop: LLVM vectorises it (0.09 ms for 1536 x 528 values); with an inner loop over blocks of
    # 4,096 it did not (1.3 ms).
    for i in numba.prange(gate.shape[0]):
        g = gate[i]
        e = exp2_clamped(-abs(g) * _LOG2E)
        gate[i] = g * up[i] * (np.float32(1.0) if g >= 0 else e) / (np.float32(1.0) + e)


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _chunk_attention(rows: Any, key_columns: Any, values: Any, out: Any, scratch: Any, at: int, length: int,
                     block: int) -> None:  # pragma: no cover - Numba runs the compiled loop
    """Causal attention of a chunk, one task per (query head, block of `block` of its rows): the block's scores on
    the tile (16-wide stores against key_columns (kv_heads, dim, padded span)), its softmax, and its weights times
    values on the tile, into out's rows for that head (head * dim + d, token), all while the block's scores (in
    this thread's scratch, (block, padded span)) are in L2. Only what the causal mask keeps: each tile's keys up
    to its last row's position. Tasks go low and high blocks in turn, so each thread's contiguous share of them
    holds as many keys."""
    kv_heads, group_rows, dim = rows.shape
    group = group_rows // length
    heads = kv_heads * group
    blocks = (length + block - 1) // block
    for task in numba.prange(heads * blocks):
        turn = task // heads
        b = turn // 2 if turn % 2 == 0 else blocks - 1 - turn // 2
        head = task % heads
        h = head // group
        lo = b * block
        n = min(length, lo + block) - lo
        first = (head % group) * length + lo
        queries = rows[h, first:first + n]
        keys = key_columns[h]
        scores = scratch[numba.get_thread_id()]
        result = out[head * dim:(head + 1) * dim, lo:]
        tiles = n // ROWS
        for tile in range(tiles):
            j = tile * ROWS
            _span(queries, keys, scores, j, 0, (at + lo + j + ROWS + LANES - 1) // LANES * LANES, dim, True)
        left = tiles * ROWS
        if left < n:  # the last rows on a tile too, from a copy padded with zero rows (scalar loops: ~4x the chunk)
            padded_rows = np.zeros((ROWS, dim), np.float32)
            padded_rows[:n - left] = queries[left:n]
            _span(padded_rows, keys, scores[left:], 0, 0, (at + lo + n + LANES - 1) // LANES * LANES, dim, True)
        sums = np.empty(n, np.float32)
        for r in range(n):  # zeros up to the block's last position: what a tile of later rows reads
            sums[r] = softmax_row(scores[r], at + lo + r + 1, at + lo + n)
        for tile in range(tiles):
            j = tile * ROWS
            _span(scores, values[h], result, j, 0, dim, at + lo + j + ROWS, False)
        if left < n:  # up to the block's last position, where the softmax's zeros end; the padding rows give 0
            _span(scores[left:], values[h], result[:, left:], 0, 0, dim, at + lo + n, False)
        for d in range(dim):
            for r in range(n):
                result[d, r] /= sums[r]


@numba.njit(inline="always", nogil=True)
def _span(w: Any, xt: Any, out: Any, j: int, lo: int, hi: int, inner: int,
          transposed: bool) -> None:  # pragma: no cover - Numba inlines the compiled form
    """Tiles of weight rows j..j+7 over columns lo..hi (a multiple of 16 apart): 48 at a time, the rest as 32
    and 16 (64 as two of 32, the head size's case)."""
    m = lo
    while m + _WIDE <= hi and hi - m != 4 * LANES:
        if transposed:
            _tile3_t(w, xt, out, j, m, inner)
        else:
            _tile3(w, xt, out, j, m, inner)
        m += _WIDE
    while m + 2 * LANES <= hi:
        if transposed:
            _tile2_t(w, xt, out, j, m, inner)
        else:
            _tile2(w, xt, out, j, m, inner)
        m += 2 * LANES
    if m < hi:
        if transposed:
            _tile1_t(w, xt, out, j, m, inner)
        else:
            _tile1(w, xt, out, j, m, inner)


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _products(w: Any, xt: Any, out: Any, block: int, inner: int,
              transposed: bool) -> None:  # pragma: no cover - Numba runs the compiled loop
    """out[t, j] (or with `transposed` out[j, t]) = w[j, :inner] . xt[:inner, t] for every column t of xt (a
    multiple of 16). Tasks of 4 tiles of weight rows against one block of `block` columns (a multiple of 48), so
    that a thread's tasks share a block while it is in L2; weight rows past the last multiple of 8 one dot product
    at a time."""
    rows = w.shape[0]
    padded = xt.shape[1]
    tiles = rows // ROWS
    groups = max(1, (tiles + 3) // 4)  # one task group at least: the rows of a matrix under 8 rows high
    blocks = (padded + block - 1) // block
    for task in numba.prange(groups * blocks):
        lo = task // groups * block
        hi = min(padded, lo + block)
        group = task % groups
        for tile in range(group * 4, min(tiles, group * 4 + 4)):
            _span(w, xt, out, tile * ROWS, lo, hi, inner, transposed)
        if group == groups - 1:
            for r in range(tiles * ROWS, rows):
                for t in range(lo, hi):
                    acc = np.float32(0.0)
                    for k in range(inner):
                        acc += w[r, k] * xt[k, t]
                    if transposed:
                        out[r, t] = acc
                    else:
                        out[t, r] = acc
