"""SwiGLU for MLX's CPU backend, switched in (lemcore/generate/cpu/paths.py) while our generator runs a model.

mlx-lm's compiled `swiglu` computes `silu(gate) * x` with MLX's scalar x86 `sigmoid` (about 36 M values/s
here): ~1.9 s of each SmolLM2 sandwich's prefill. With the sigmoid written as 1 / (1 + 2 ** (-gate * log2 e)),
the same product took 6.8 ms instead of 22 ms for a 512-token chunk (0.37 vs 0.85 ms for a 16-sequence
decoding step). For prefill chunks NumPy now computes it (exp2 runs at several G values/s there): a 1.6K-token
SmolLM2 sandwich read 2-8% faster in four of five alternating pairs (median +4%). Equal to float32 rounding
(tests/core/test_cpu_paths.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_MINUS_LOG2E = -1.0 / math.log(2.0)
_NUMPY_FROM = 1 << 16  # values from which NumPy computes it (a prefill chunk; a decoding step stays in MLX)


def swiglu(gate: Any, x: Any) -> Any:
    """Drop-in for mlx_lm.models.activations.swiglu. For very negative gates 2 ** (...) overflows to inf and
    the result is the right limit, 0."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    if gate.size >= _NUMPY_FROM and gate.dtype == x.dtype == mx.float32 and gate.shape == x.shape:
        # Prefill chunks: NumPy's vectorised exp2 (several G values/s) instead of MLX's scalar power; the result
        # goes to a new array, since another lazy MLX op could still read `gate`.
        mx.eval(gate, x)
        return mx.array(swiglu_numpy(np.asarray(gate), np.asarray(x)))
    return gate * x / (1.0 + mx.power(2.0, gate * _MINUS_LOG2E))


def swiglu_numpy(gate: Any, x: Any) -> Any:
    """silu(gate) * x for float32 NumPy arrays, into a new array (the inputs are left as they are); also the
    NumPy decoding step's (decode.py)."""
    out = np.multiply(gate, np.float32(_MINUS_LOG2E))
    with np.errstate(over="ignore"):  # very negative gates: 2 ** (...) is inf and the result the limit, 0
        np.exp2(out, out=out)
    out += 1.0
    np.divide(gate, out, out=out)
    out *= x
    return out
