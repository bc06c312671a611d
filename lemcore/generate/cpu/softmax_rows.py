"""The prefill softmax compiled with Numba, for our CPU attention (attention.py).

A 512-token chunk of a SmolLM2 sandwich scores 9 query heads against ~1.5K keys: 7M scores, 28 MB, more than
the caches hold. NumPy's softmax went over them six times (causal mask, row maximum, subtraction, clamp, exp2,
row sum): 10-12 ms per layer, as long as either of the two matrix products around it. This kernel reads each
row once from memory and does the rest while it is in the core's cache: 5.4 ms on the same scores (2 cores,
docs/platform-notes.md, "Prefill attention"); 2 ** x is exp2.py's, which the compiler vectorises with the
loop (3.45 ms on the same scores), within 2e-7 of the exact value, below float32's own rounding of the scores.

Imported only by attention.py, inside its functions (loading Numba takes ~0.2 s); without Numba the NumPy
softmax runs, as before.
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


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def exp2_rows(rows: Any, causal: int, sums: Any) -> None:  # pragma: no cover
    """In place, each row of log2-scaled scores (n_rows, span) -> 2 ** (score - the row's maximum), clamped at
    2 ** -126; sums[r] = the row's total. With `causal` > 0 the rows are query positions of a chunk of that
    many tokens, the last of the keys (row r is position r % causal of it): keys after a row's position get
    weight 0, as a causal mask gives. `causal` = 0: every key counts (masks already applied to the scores).
    (Not measured by coverage: Numba runs the compiled loop, not this Python.)"""
    n_rows, span = rows.shape
    for r in numba.prange(n_rows):
        seen = span if causal == 0 else span - causal + r % causal + 1
        sums[r] = softmax_row(rows[r], seen, span)


@numba.njit(inline="always", fastmath=True, nogil=True)
def softmax_row(row: Any, seen: int, end: int) -> Any:  # pragma: no cover - Numba inlines the compiled form
    """In place: row[:seen] -> 2 ** (score - their maximum), clamped at 2 ** -126, and row[seen:end] -> 0 (keys
    the mask hides); returns the weights' total. Also the tiled prefill attention's (prefill_products.py)."""
    top = row_max(row, seen)  # type: ignore[call-arg, var-annotated]  # Numba passes the context
    total = np.float32(0.0)
    for t in range(seen):
        weight = exp2_clamped(row[t] - top)
        row[t] = weight
        total += weight
    for t in range(seen, end):
        row[t] = np.float32(0.0)
    return total
