"""Token sampling for the generation engine on MLX's CPU backend.

Each decoding step, mlx-lm's BatchGenerator normalises the full-vocabulary logits (a logsumexp) into
log-probabilities we never use, then its categorical sampler draws one Gumbel variate per vocabulary entry.
On MLX's CPU backend both are slow element-wise passes (about 20 ms each per step for 16 sequences and a 49K
vocabulary), more than a small model's whole forward pass; Gemma 3's 262K vocabulary makes them 5x worse.
So on the CPU the engine samples inside the model call (`SamplingModel`): from the raw logits, by inverting
the cumulative sum of the tempered weights (one `power(2, x)` per entry and one random number per sequence;
the same distribution, checked in tests/core/test_sampling.py), and BatchGenerator sees one dummy logit per
sequence. Top-p sampling and GPUs keep mlx-lm's own path.

MLX is imported inside the functions, so that importing the generation engine does not load it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def cpu_sampler(temperature: float, top_p: float = 1.0) -> Callable[[Any], Any] | None:
    """(batch, vocab) raw logits -> (batch,) uint32 token ids, or None where mlx-lm's sampler is the one to use
    (a GPU, or top-p)."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    if top_p < 1 or mx.default_device() != mx.cpu:
        return None
    if temperature == 0:
        return lambda logits: mx.argmax(logits, axis=-1).astype(mx.uint32)
    scale = 1.0 / (math.log(2.0) * temperature)

    def sample(logits: Any) -> Any:
        scores = logits * scale  # log2 of the tempered, unnormalised probabilities
        weights = exp2_weights(scores)
        cumulative = mx.cumsum(weights, axis=-1)
        target = mx.random.uniform(shape=(logits.shape[0], 1)) * cumulative[:, -1:]
        # The first index whose running total reaches the target; the minimum guards float rounding.
        return mx.minimum((cumulative < target).sum(axis=-1), logits.shape[-1] - 1).astype(mx.uint32)

    return sample


class SamplingModel:
    """The model as one BatchGenerator lane calls it while decoding: samples right after the forward pass and
    returns one dummy logit per sequence, so BatchGenerator's own normalisation is trivial. Pass `take` as
    BatchGenerator's sampler: it hands over the tokens sampled in the call just made. Prompts must reach
    BatchGenerator already prefilled (the engine inserts only each prompt's last token)."""

    def __init__(self, model: Any, sample: Callable[[Any], Any]) -> None:
        self.model = model
        self.sample = sample
        self.tokens: Any = None

    def __call__(self, inputs: Any, cache: Any = None, **kwargs: Any) -> Any:
        import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

        logits = self.model(inputs, cache=cache, **kwargs)
        self.tokens = self.sample(logits[:, -1, :])
        return mx.zeros((inputs.shape[0], 1, 1), dtype=logits.dtype)

    def take(self, _logprobs: Any) -> Any:
        return self.tokens

    def __getattr__(self, name: str) -> Any:  # layers, make_cache, args: whatever else is asked of the model
        return getattr(self.__dict__["model"], name)


def exp2_weights(scores: Any) -> Any:
    """2 ** (scores - row maximum), clamped at the smallest normal float32 exponent (subnormal results make
    `power` several times slower): softmax weights from log2-scaled scores, unnormalised. Lazy MLX ops."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    return mx.power(2.0, mx.maximum(scores - scores.max(axis=-1, keepdims=True), -126.0))
