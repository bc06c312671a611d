"""The prefill softmax compiled with Numba, for our CPU attention (attention.py).

A 512-token chunk of a SmolLM2 sandwich scores 9 query heads against ~1.5K keys: 7M scores, 28 MB, more than
the caches hold. NumPy's softmax went over them six times (causal mask, row maximum, subtraction, clamp, exp2,
row sum): 10-12 ms per layer, as long as either of the two matrix products around it. This kernel reads each
row once from memory and does the rest while it is in the core's cache: 5.4 ms on the same scores (2 cores,
docs/platform-notes.md, "Prefill attention"). Numba's own `exp2` is a scalar library call per score, so 2 ** x
is a polynomial here, which the compiler vectorises: within 1e-7 of the exact value (tests/core/
test_cpu_attention.py), below float32's own rounding of the scores.

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


def _fit_exp2(degree: int = 6) -> tuple[np.float32, ...]:
    """Coefficients, highest power first, of a least-squares polynomial for 2 ** f on [0, 1] (at Chebyshev
    nodes, in float64): degree 6 is within 1e-7 relative, float32's resolution."""
    nodes = 0.5 - 0.5 * np.cos(np.pi * (np.arange(2000) + 0.5) / 2000)
    return tuple(np.float32(c) for c in np.polyfit(nodes, np.exp2(nodes), degree))


_C6, _C5, _C4, _C3, _C2, _C1, _C0 = _fit_exp2()
# 2 ** n for the whole part n of an exponent in [-126, 0]: a table lookup the compiler vectorises as a gather.
_POW2 = np.exp2(np.arange(-126, 1, dtype=np.float64)).astype(np.float32)
_FLOOR = np.float32(-126.0)  # weights clamped at 2 ** -126, the smallest normal float32 (subnormals are slow)


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def exp2_rows(rows: Any, causal: int, sums: Any) -> None:  # pragma: no cover
    """In place, each row of log2-scaled scores (n_rows, span) -> 2 ** (score - the row's maximum), clamped at
    2 ** -126; sums[r] = the row's total. With `causal` > 0 the rows are query positions of a chunk of that
    many tokens, the last of the keys (row r is position r % causal of it): keys after a row's position get
    weight 0, as a causal mask gives. `causal` = 0: every key counts (masks already applied to the scores).
    (Not measured by coverage: Numba runs the compiled loop, not this Python.)"""
    n_rows, span = rows.shape
    for r in numba.prange(n_rows):
        row = rows[r]
        seen = span if causal == 0 else span - causal + r % causal + 1
        top = np.float32(-3.0e38)
        for t in range(seen):
            top = max(top, row[t])
        total = np.float32(0.0)
        for t in range(seen):
            x = max(row[t] - top, _FLOOR)
            whole = np.floor(x)
            f = x - whole
            weight = (((((_C6 * f + _C5) * f + _C4) * f + _C3) * f + _C2) * f + _C1) * f + _C0
            weight *= _POW2[np.int32(whole) + 126]
            row[t] = weight
            total += weight
        for t in range(seen, span):
            row[t] = np.float32(0.0)
        sums[r] = total
