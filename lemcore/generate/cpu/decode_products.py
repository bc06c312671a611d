"""The matrix products of the NumPy decoding step and of its prompt chunks (decode.py), compiled with Numba.

A decoding step multiplies a few activation rows (one per sequence) by every weight matrix of the model. With
OpenBLAS doing these products and Numba's OpenMP pool doing the attention, two thread pools took turns on our
two cores 240 times per step, and each woke after the other: a synthetic 16-sequence step took 185-277 ms
(three alternating runs), 161-164 ms with these products on Numba's pool too (docs/platform-notes.md, "NumPy
decoding step"). The products themselves run at about OpenBLAS's speed: 4 weight rows x 4 activation rows per
block, 16 dot products vectorised over the inner dimension (AVX-512 where the CPU has it).

Prompt chunks (512 rows) use it too: 1.16-1.17x faster than OpenBLAS with the Haswell kernels this machine's
environment asks for (docs/platform-notes.md, "Prefill").

Imported only by decode.py, inside its functions: loading Numba takes about a second.
"""

from __future__ import annotations

from typing import Any

from lemcore.blas import set_thread_wait

# How long Numba's OpenMP workers spin when idle (lemcore/blas.py, THREAD_WAIT): read when OpenMP loads, at the
# first parallel call. `lem` and the app set it at start already; this covers other hosts of the engine.
set_thread_wait()

import numba  # noqa: E402 - after the thread wait
import numpy as np  # noqa: E402

# Activation rows per block: a block (with the 4 weight rows in use) stays in a core's L2 cache (1 MB on our
# machine) while every weight block passes over it. Without blocks a prompt chunk (512 rows) was read from L3 again
# for every 4 weight rows: 191-292 GFLOP/s for 512 x 576 x 1536, 303-321 in blocks of ~256 KB
# (docs/platform-notes.md, "Prefill").
_BLOCK_BYTES = 256 * 1024


def products(x: Any, weights: Any) -> Any:
    """x (batch, in) @ weights (out, in).T -> (batch, out), float32; both C-contiguous."""
    out = np.empty((x.shape[0], weights.shape[0]), np.float32)
    block = max(4, _BLOCK_BYTES // (4 * x.shape[1]) // 4 * 4)
    _products(weights, x, out, block)
    return out


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _products(w: Any, x: Any, out: Any, block: int) -> None:  # pragma: no cover
    """out[b, i] = w[i] . x[b]. Tasks of 4 weight rows against one block of `block` activation rows (a multiple
    of 4), block by block, so that each thread's tasks share a block while it is in cache; within a task each
    weight row is read once and used against the block's rows, 4 at a time (16 scalar sums that LLVM vectorises
    over k); the leftover rows one by one.
    (Not measured by coverage: Numba runs the compiled loop, not this Python.)"""
    rows, inner = w.shape
    batch = x.shape[0]
    weight_blocks = (rows + 3) // 4
    for task in numba.prange(weight_blocks * ((batch + block - 1) // block)):
        lo = task // weight_blocks * block
        hi = min(batch, lo + block)
        whole = hi - (hi - lo) % 4
        i = task % weight_blocks * 4
        if i + 4 > rows:  # the last rows of a matrix whose height is not a multiple of 4
            for r in range(i, rows):
                for b in range(lo, hi):
                    acc = np.float32(0.0)
                    for k in range(inner):
                        acc += w[r, k] * x[b, k]
                    out[b, r] = acc
            continue
        w0, w1, w2, w3 = w[i], w[i + 1], w[i + 2], w[i + 3]
        for b in range(lo, whole, 4):
            x0, x1, x2, x3 = x[b], x[b + 1], x[b + 2], x[b + 3]
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = np.float32(0.0)
            s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = np.float32(0.0)
            for k in range(inner):
                a0, a1, a2, a3 = w0[k], w1[k], w2[k], w3[k]
                c0, c1, c2, c3 = x0[k], x1[k], x2[k], x3[k]
                s00 += a0 * c0
                s01 += a0 * c1
                s02 += a0 * c2
                s03 += a0 * c3
                s10 += a1 * c0
                s11 += a1 * c1
                s12 += a1 * c2
                s13 += a1 * c3
                s20 += a2 * c0
                s21 += a2 * c1
                s22 += a2 * c2
                s23 += a2 * c3
                s30 += a3 * c0
                s31 += a3 * c1
                s32 += a3 * c2
                s33 += a3 * c3
            out[b, i], out[b, i + 1], out[b, i + 2], out[b, i + 3] = s00, s10, s20, s30
            out[b + 1, i], out[b + 1, i + 1], out[b + 1, i + 2], out[b + 1, i + 3] = s01, s11, s21, s31
            out[b + 2, i], out[b + 2, i + 1], out[b + 2, i + 2], out[b + 2, i + 3] = s02, s12, s22, s32
            out[b + 3, i], out[b + 3, i + 1], out[b + 3, i + 2], out[b + 3, i + 3] = s03, s13, s23, s33
        for b in range(whole, hi):  # the last activation rows of a batch not a multiple of 4
            xb = x[b]
            t0 = t1 = t2 = t3 = np.float32(0.0)
            for k in range(inner):
                c = xb[k]
                t0 += w0[k] * c
                t1 += w1[k] * c
                t2 += w2[k] * c
                t3 += w3[k] * c
            out[b, i], out[b, i + 1], out[b, i + 2], out[b, i + 3] = t0, t1, t2, t3
