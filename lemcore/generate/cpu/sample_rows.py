"""Temperature sampling of a decoding step's tokens, compiled with Numba, for the CPU sampler (sampling.py).

The MLX form (`exp2_weights`, a cumulative sum, a comparison and a count over the whole vocabulary) took 4.7-4.9
ms of a ~92 ms 16-sequence SmolLM2 step here: five passes over 16 x 49K logits on MLX's scalar CPU kernels. This
is one row per thread task: the row's maximum, the tempered weights and their total in one vectorised pass
(2 ** x from exp2.py, as the prefill softmax), then the block of 256 entries where the running total reaches the
target, and the entry inside it (docs/platform-notes.md, "Sampling"). Same arithmetic as the MLX form:
weights 2 ** max(scale * (logit - max), -126), the first entry whose running total reaches u times the total.

Imported only by sampling.py, inside its functions: loading Numba takes about a second.
"""

from __future__ import annotations

from typing import Any

from lemcore.blas import set_thread_wait

# How long Numba's OpenMP workers spin when idle (lemcore/blas.py, THREAD_WAIT): read when OpenMP loads, at the
# first parallel call. `lem` and the app set it at start already; this covers other hosts of the engine.
set_thread_wait()

import numba  # noqa: E402 - after the thread wait
import numpy as np  # noqa: E402

from lemcore.generate.cpu.exp2 import exp2_clamped  # noqa: E402
from lemcore.generate.cpu.row_max import row_max  # noqa: E402

_BLOCK = 256  # entries per block of the running total: one vectorised sum each, then a short scalar walk


def draw(logits: Any, scale: float, uniform: Any) -> Any:
    """Token ids (batch,) int64 from float32 logits (batch, vocab): row b's id is the first whose running total of
    weights 2 ** (scale * (logit - row maximum)) reaches uniform[b] (in [0, 1)) times the row's total."""
    tokens = np.empty(logits.shape[0], np.int64)
    weights = np.empty(logits.shape, np.float32)
    _draw(logits, np.float32(scale), uniform.astype(np.float32), weights, tokens)
    return tokens


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _draw(logits: Any, scale: Any, uniform: Any, weights: Any, tokens: Any) -> None:  # pragma: no cover
    """(Not measured by coverage: Numba runs the compiled loop, not this Python.)"""
    batch, vocab = logits.shape
    for b in numba.prange(batch):
        row, w = logits[b], weights[b]
        top = row_max(row, vocab)  # type: ignore[call-arg, var-annotated]  # Numba passes the context
        total = np.float32(0.0)
        for i in range(vocab):
            weight = exp2_clamped((row[i] - top) * scale)
            w[i] = weight
            total += weight
        target = uniform[b] * total
        # The block where the running total reaches the target, then the entry inside it. Float rounding can
        # leave the target above the last running total: the last entry then, as the MLX form's minimum gives.
        running = np.float32(0.0)
        token = vocab - 1
        for lo in range(0, vocab, _BLOCK):
            hi = min(vocab, lo + _BLOCK)
            block = np.float32(0.0)
            for i in range(lo, hi):
                block += w[i]
            if running + block < target:
                running += block
                continue
            token = hi - 1  # where rounding keeps the walk below the block's own sum
            for i in range(lo, hi):
                running += w[i]
                if running >= target:
                    token = i
                    break
            break
        tokens[b] = token
