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


def test_the_compiled_draw_picks_the_entry_the_mlx_form_picks_for_the_same_random_numbers() -> None:
    # Both invert the running total of the same weights: for random numbers away from the boundaries between
    # entries (where float32 sums in different orders may differ) they must pick the same entry, across blocks.
    import mlx.core as mx
    import numpy as np

    from lemcore.generate.cpu.sample_rows import draw
    from lemcore.generate.sampling import exp2_weights

    rng = np.random.default_rng(5)
    logits = rng.standard_normal((6, 1000)).astype(np.float32) * 3
    logits[5, 700] = 60.0  # one entry holding nearly all the weight, deep in the row
    scale = 1.0 / (math.log(2.0) * 0.7)
    cumulative = np.cumsum(np.asarray(exp2_weights(mx.array(logits) * scale)), axis=-1, dtype=np.float64)
    cumulative /= cumulative[:, -1:]
    for _ in range(50):
        uniform = rng.uniform(size=6)
        expected = (cumulative < uniform[:, None]).sum(axis=-1)
        near_a_boundary = np.abs(cumulative - uniform[:, None]).min(axis=-1) < 1e-5
        got = draw(logits, scale, uniform)
        assert ((got == expected) | near_a_boundary).all(), (got, expected)
    assert draw(logits, scale, np.array([0.0] * 5 + [0.5])).tolist() == [0] * 5 + [700]
    assert draw(logits, scale, np.full(6, 0.999999)).max() < 1000  # ids stay in range at the top end


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
