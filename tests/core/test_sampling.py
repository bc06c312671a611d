"""The CPU sampler draws from the same tempered distribution as mlx-lm's, from raw logits, inside the model call."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest

from lemcore.generate.sampling import SamplingModel, cpu_sampler


@pytest.mark.parametrize("temperature", [0.3, 1.0])
def test_frequencies_match_the_tempered_softmax(temperature: float) -> None:
    import mlx.core as mx

    probs = [0.45, 0.3, 0.15, 0.07, 0.03]
    logits = mx.log(mx.array([probs])) + 7.5  # raw logits: any offset
    draws = 40_000
    mx.random.seed(3)
    sample = cpu_sampler(temperature)
    assert sample is not None
    tokens = sample(mx.repeat(logits, draws, axis=0))
    assert tokens.shape == (draws,) and tokens.dtype == mx.uint32
    counts = Counter(tokens.tolist())
    tempered = [p ** (1 / temperature) for p in probs]
    expected = [t / sum(tempered) for t in tempered]
    for i, p in enumerate(expected):
        # Four standard errors of a binomial proportion, plus a little for float rounding.
        assert abs(counts[i] / draws - p) < 4 * math.sqrt(p * (1 - p) / draws) + 1e-4, (i, counts, expected)


def test_large_logits_do_not_overflow_and_ids_stay_in_range() -> None:
    import mlx.core as mx

    vocab = 49_152
    logits = mx.full((4, vocab), 300.0)
    logits[:, vocab - 1] = 400.0  # 2**(100/(0.3 ln 2)) would overflow without subtracting the maximum
    tokens = cpu_sampler(0.3)(logits).tolist()
    assert tokens == [vocab - 1] * 4


def test_greedy_is_argmax_and_top_p_is_left_to_mlx_lm() -> None:
    import mlx.core as mx

    logits = mx.array([[0.1, 2.0, 1.0], [3.0, 0.0, -1.0]])
    assert cpu_sampler(0.0)(logits).tolist() == [1, 0]
    assert cpu_sampler(0.7, top_p=0.9) is None


def test_sampling_model_hands_the_sampled_tokens_to_batch_generator(tiny_llama: Path) -> None:
    import mlx.core as mx
    import mlx_lm

    model, _ = mlx_lm.load(str(tiny_llama))
    wrapped = SamplingModel(model, cpu_sampler(0.0))
    inputs = mx.array([[5, 9, 11], [7, 7, 3]])
    dummy = wrapped(inputs)
    assert dummy.shape == (2, 1, 1)
    assert wrapped.take(None).tolist() == mx.argmax(model(inputs)[:, -1, :], axis=-1).tolist()
    assert wrapped.layers is model.layers  # BatchGenerator and the caches still see the model's parts
