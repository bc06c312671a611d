"""Token samplers for the generation engine.

mlx-lm's categorical sampler draws one Gumbel variate per vocabulary entry (a random number and two logs each),
which on MLX's CPU backend costs ~1.2 ms per token for a 49K vocabulary, more than a small model's whole
batched decoding step. On the CPU we sample the same distribution by inverting its cumulative sum instead: one
`power(2, x)` per entry and one random number per sequence (tests/core/test_sampling.py checks the
frequencies). Metal keeps mlx-lm's sampler.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

_FLOOR = -126.0  # the smallest normal float32 exponent: weights are clamped there, never subnormal (slow)


def make_sampler(temperature: float, top_p: float = 1.0) -> Callable[[Any], Any]:
    """A sampler for (batch, vocab) normalised log-probabilities (as mlx-lm passes them), returning (batch,)
    token ids."""
    import mlx.core as mx
    from mlx_lm.sample_utils import make_sampler as mlx_lm_sampler

    if temperature == 0 or top_p < 1 or mx.default_device() != mx.cpu:
        return mlx_lm_sampler(temp=temperature, top_p=top_p if top_p < 1 else 0.0)
    scale = 1.0 / (math.log(2.0) * temperature)

    def sample(logprobs: Any) -> Any:
        scores = logprobs * scale  # log2 of the tempered, unnormalised probabilities (all <= 0)
        # The top log-probability is at least -log(vocab), so unless the temperature is very low the top
        # weight is far above the floor and subtracting the maximum (two more passes) is not needed.
        if math.log(logprobs.shape[-1]) * scale > 100:
            scores = scores - scores.max(axis=-1, keepdims=True)
        weights = mx.power(2.0, mx.maximum(scores, _FLOOR))
        cumulative = mx.cumsum(weights, axis=-1)
        target = mx.random.uniform(shape=(logprobs.shape[0], 1)) * cumulative[:, -1:]
        # The first index whose running total reaches the target; the minimum guards float rounding.
        return mx.minimum((cumulative < target).sum(axis=-1), logprobs.shape[-1] - 1).astype(mx.uint32)

    return sample
