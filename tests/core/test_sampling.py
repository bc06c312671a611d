"""The CPU sampler draws from the same tempered distribution as mlx-lm's."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from lemcore.sampling import make_sampler


@pytest.mark.parametrize("temperature", [0.3, 1.0])
def test_frequencies_match_the_tempered_softmax(temperature: float) -> None:
    import mlx.core as mx

    probs = [0.45, 0.3, 0.15, 0.07, 0.03]
    logprobs = mx.log(mx.array([probs]))
    draws = 40_000
    mx.random.seed(3)
    sample = make_sampler(temperature)
    tokens = sample(mx.repeat(logprobs, draws, axis=0))
    assert tokens.shape == (draws,) and tokens.dtype == mx.uint32
    counts = Counter(tokens.tolist())
    tempered = [p ** (1 / temperature) for p in probs]
    expected = [t / sum(tempered) for t in tempered]
    for i, p in enumerate(expected):
        # Four standard errors of a binomial proportion, plus a little for float rounding.
        assert abs(counts[i] / draws - p) < 4 * math.sqrt(p * (1 - p) / draws) + 1e-4, (i, counts, expected)


def test_a_token_with_all_the_mass_is_always_drawn_and_ids_stay_in_range() -> None:
    import mlx.core as mx

    vocab = 49_152
    logits = mx.full((4, vocab), -30.0)
    logits[:, vocab - 1] = 0.0
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    assert make_sampler(0.3)(logprobs).tolist() == [vocab - 1] * 4


def test_greedy_and_top_p_use_mlx_lm() -> None:
    import mlx.core as mx

    logprobs = mx.log(mx.array([[0.1, 0.7, 0.2]]))
    assert make_sampler(0.0)(logprobs).tolist() == [1]
    assert make_sampler(0.01, top_p=0.5)(logprobs).tolist() == [1]
