"""2 ** x for x in [-126, 0], inlined into our Numba kernels (the prefill softmax, softmax_rows.py).

Numba's own `exp2` is a scalar library call per value, so the kernels use a polynomial for the fraction, which
the compiler vectorises, and build 2 ** n for the whole part n from its exponent bits. A lookup table for 2 ** n
was the slow part before: the compiler turns it into a gather, and the prefill softmax ran 1.5-1.6x longer with
it (docs/platform-notes.md, "Prefill attention"). Within 2e-7 relative of the exact value (tests/core/
test_cpu_attention.py), float32's own resolution.

Numba's on-disk cache records only the file of the function it compiled: after editing this file, delete the
`*.nbi`/`*.nbc` files beside the kernels (or in the user's cache folder) so that they compile again.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic


def _fit(degree: int = 6) -> tuple[np.float32, ...]:
    """Coefficients, highest power first, of a least-squares polynomial for 2 ** f on [0, 1] (at Chebyshev
    nodes, in float64): degree 6 is within 1e-7 relative, float32's resolution."""
    nodes = 0.5 - 0.5 * np.cos(np.pi * (np.arange(2000) + 0.5) / 2000)
    return tuple(np.float32(c) for c in np.polyfit(nodes, np.exp2(nodes), degree))


_C6, _C5, _C4, _C3, _C2, _C1, _C0 = _fit()
FLOOR = np.float32(-126.0)  # weights clamped at 2 ** -126, the smallest normal float32 (subnormals are slow)


@intrinsic
def _float_from_bits(typingctx: Any, bits: Any) -> Any:  # pragma: no cover - runs inside Numba's compiler
    """The float32 whose IEEE bits are the int32 `bits` (a register move, vectorised with the loop)."""
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@numba.njit(inline="always", fastmath=True, nogil=True)
def exp2_clamped(x: Any) -> Any:  # pragma: no cover - Numba inlines the compiled form
    """2 ** max(x, -126) for x <= 0, as float32."""
    x = max(x, FLOOR)
    whole = np.floor(x)
    f = x - whole
    weight = (((((_C6 * f + _C5) * f + _C4) * f + _C3) * f + _C2) * f + _C1) * f + _C0
    # 2 ** whole: the biased exponent (whole + 127, 1..127 here) in a float32's exponent bits.
    bits = (np.int32(whole) + np.int32(127)) << np.int32(23)
    return weight * _float_from_bits(bits)  # type: ignore[call-arg]  # Numba passes the typing context
