"""Token sampling for the generation engine on MLX's CPU backend.

Each decoding step, mlx-lm's BatchGenerator normalises the full-vocabulary logits (a logsumexp) into
log-probabilities we never use, then its categorical sampler draws one Gumbel variate per vocabulary entry.
On MLX's CPU backend both are slow element-wise passes (about 20 ms each per step for 16 sequences and a 49K
vocabulary), more than a small model's whole forward pass; Gemma 3's 262K vocabulary makes them 5x worse.
So on the CPU the engine samples inside the model call (`SamplingModel`): from the raw logits, by inverting
the cumulative sum of the tempered weights (one 2 ** x per entry and one random number per sequence; the same
distribution, checked in tests/core/test_sampling.py), compiled with Numba where it is installed
(cpu/sample_rows.py) and in MLX ops otherwise, and BatchGenerator sees one dummy logit per sequence. Top-p
sampling and GPUs keep mlx-lm's own path.

The repetition guard lives here too. The penalty is mlx-lm's (`make_repetition_penalty`: the logit of each
token among the last N is divided by the penalty, multiplied where negative); on mlx-lm's path its own
processor applies it, and on ours `SamplingModel` applies the same arithmetic to the whole batch at once, on
the same token history (BatchGenerator's, handed over through a logits processor that only records it), so
both paths give the same tokens (tests/core/test_repetition_guard.py). `loop_period` finds an answer that has
fallen into an exact loop, so the engine can end it instead of writing the loop out to the token limit.

MLX is imported inside the functions, so that importing the generation engine does not load it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

# A loop is stopped once at least this many tokens repeat the ones before them exactly (and a whole period at
# least once): some 20-25 words, near the passage said twice that the gate refuses (lemcore.quality,
# `Thresholds.max_repeated_span`). On the built-in model's real answers it ends 17 of 19 loops, after 88 of
# 200 tokens on average, and no other answer (24 would also end one that recites the kernel without looping).
LOOP_MIN_TOKENS = 32
# The longest loop looked for, in tokens: a paragraph. A longer one could not repeat inside 512 tokens.
LOOP_MAX_PERIOD = 256


def cpu_sampler(temperature: float, top_p: float = 1.0) -> Callable[[Any], Any] | None:
    """(batch, vocab) raw logits -> (batch,) uint32 token ids, or None where mlx-lm's sampler is the one to use
    (a GPU, or top-p)."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    if top_p < 1 or mx.default_device() != mx.cpu:
        return None
    if temperature == 0:
        return lambda logits: mx.argmax(logits, axis=-1).astype(mx.uint32)
    scale = 1.0 / (math.log(2.0) * temperature)
    compiled = _compiled_draw()

    def sample(logits: Any) -> Any:
        if compiled is not None and logits.dtype == mx.float32 and logits.ndim == 2:
            # The same draw in one Numba pass per row (cpu/sample_rows.py); the random numbers stay MLX's, so
            # seeding works as before.
            uniform = mx.random.uniform(shape=(logits.shape[0],))
            mx.eval(logits, uniform)
            return mx.array(compiled(np.asarray(logits), scale, np.asarray(uniform)).astype(np.uint32))
        scores = logits * scale  # log2 of the tempered, unnormalised probabilities
        weights = exp2_weights(scores)
        cumulative = mx.cumsum(weights, axis=-1)
        target = mx.random.uniform(shape=(logits.shape[0], 1)) * cumulative[:, -1:]
        # The first index whose running total reaches the target; the minimum guards float rounding.
        return mx.minimum((cumulative < target).sum(axis=-1), logits.shape[-1] - 1).astype(mx.uint32)

    return sample


class SamplingModel:
    """The model as one BatchGenerator lane calls it while decoding: returns one dummy logit per sequence, so
    BatchGenerator's own normalisation is trivial, and keeps the real logits for `take`, which BatchGenerator
    calls as its sampler right after its logits processors: it samples there (the penalty applied first, when
    there is one) and hands the tokens over. Prompts must reach BatchGenerator already prefilled (the engine
    inserts only each prompt's last token).

    With a repetition penalty, pass `processors()` as BatchGenerator's logits processors: `record` is called
    once per sequence, in batch order, with that sequence's token history; it changes nothing and only keeps
    the history's tail for `take`."""

    def __init__(self, model: Any, sample: Callable[[Any], Any], *, penalty: float = 1.0,
                 context: int = 20, decoder: Any = None) -> None:
        self.model = model
        self.sample = sample
        # lemcore.generate.cpu.decode.NumpyDecoder, or None: the decoding steps it covers skip MLX's forward
        self.decoder = decoder
        self.penalty = penalty
        self.context = context
        self.logits: Any = None
        self.histories: list[Any] = []

    def __call__(self, inputs: Any, cache: Any = None, **kwargs: Any) -> Any:
        import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

        if self.decoder is not None and not kwargs and self.decoder.covers(inputs, cache):
            self.logits = mx.array(self.decoder(inputs, cache))
        else:
            self.logits = self.model(inputs, cache=cache, **kwargs)[:, -1, :]
        return mx.zeros((inputs.shape[0], 1, 1), dtype=self.logits.dtype)

    def processors(self) -> list[Callable[[Any, Any], Any]]:
        """BatchGenerator's logits processors for this model: none without a penalty."""
        return [self.record] if self.penalty != 1.0 else []

    def record(self, history: Any, logits: Any) -> Any:
        self.histories.append(history[-self.context:])
        return logits

    def take(self, _logprobs: Any) -> Any:
        logits, histories = self.logits, self.histories
        self.logits, self.histories = None, []
        if histories:
            if len(histories) != logits.shape[0]:  # every sequence gets the processor: a mismatch is a bug
                raise RuntimeError(f"{len(histories)} token histories for {logits.shape[0]} sequences")
            logits = penalize_repeats(logits, stack_histories(histories), self.penalty)
        return self.sample(logits)

    def __getattr__(self, name: str) -> Any:  # layers, make_cache, args: whatever else is asked of the model
        return getattr(self.__dict__["model"], name)


def penalize_repeats(logits: Any, history: Any, penalty: float) -> Any:
    """mlx-lm's repetition penalty for a batch: (batch, vocab) logits, (batch, n) token ids -> the logits with
    each listed token's logit divided by `penalty`, or multiplied where negative (a token listed twice is
    penalised once, as in mlx-lm). Lazy MLX ops."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    picked = mx.take_along_axis(logits, history, axis=-1)
    picked = mx.where(picked < 0, picked * penalty, picked / penalty)
    return mx.put_along_axis(logits, history, picked, axis=-1)


def stack_histories(histories: list[Any]) -> Any:
    """One (batch, n) array from token histories of different lengths (sequences join the batch at different
    steps): shorter ones are padded with their own first token, which the penalty counts once anyway."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    width = max(h.shape[0] for h in histories)
    return mx.stack([h if h.shape[0] == width else mx.concatenate([mx.repeat(h[:1], width - h.shape[0]), h])
                     for h in histories])


def loop_period(ids: Sequence[int], *, min_tokens: int = LOOP_MIN_TOKENS, max_period: int = LOOP_MAX_PERIOD) -> int:
    """The period, in tokens, of the exact loop `ids` ends in; 0 when it ends in none. A loop of period p: the
    last max(min_tokens, p) tokens equal the ones p tokens earlier (the same sentence said again and again, a
    run of one token). Cheap enough to ask after every token: a period is compared only where the last token
    recurs."""
    n = len(ids)
    if n <= min_tokens:
        return 0
    last = ids[-1]
    for p in range(1, min(max_period, n // 2) + 1):
        span = max(min_tokens, p)
        if span + p > n:
            break  # span + p only grows with p
        if ids[n - 1 - p] == last and ids[n - span:] == ids[n - span - p:n - p]:
            return p
    return 0


@lru_cache(maxsize=1)
def _compiled_draw() -> Callable[[Any, float, Any], Any] | None:
    """The Numba draw (cpu/sample_rows.py), or None where Numba is missing or cannot compile or cache it here (a
    frozen app, a read-only folder): the MLX form samples then."""
    try:
        from lemcore.generate.cpu.sample_rows import draw  # lazy: Numba loads in ~0.2 s
    except (ImportError, RuntimeError, OSError):
        return None
    return draw


def exp2_weights(scores: Any) -> Any:
    """2 ** (scores - row maximum), clamped at the smallest normal float32 exponent (subnormal results make
    `power` several times slower): softmax weights from log2-scaled scores, unnormalised. Lazy MLX ops."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    return mx.power(2.0, mx.maximum(scores - scores.max(axis=-1, keepdims=True), -126.0))
