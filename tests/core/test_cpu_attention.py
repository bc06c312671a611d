"""Our CPU attention equals MLX's fused attention, for every mask kind mlx-lm passes."""

from __future__ import annotations

import pytest

from lemcore.generate.cpu.attention import attention


def _inputs(batch: int, q_heads: int, kv_heads: int, length: int, span: int, dim: int = 16):
    import mlx.core as mx

    mx.random.seed(7)
    q = mx.random.normal((batch, q_heads, length, dim))
    k = mx.random.normal((batch, kv_heads, span, dim))
    v = mx.random.normal((batch, kv_heads, span, dim))
    return q, k, v


def _masks(batch: int, length: int, span: int):
    import mlx.core as mx

    causal = mx.arange(span - length, span)[:, None] >= mx.arange(span)[None]
    # Left padding, as a batch cache makes it: sequence b ignores its first 3*b positions.
    padded = causal[None, None] & (mx.arange(span)[None] >= (3 * mx.arange(batch))[:, None])[:, None, None, :]
    additive = mx.where(causal, 0.0, -1e9)
    return {"none": None, "causal": "causal", "bool-2d": causal, "bool-batch": padded, "additive": additive}


# Shapes with at most 64 query rows per kv head (group x length) take the all-NumPy decoding path, the
# others the prefill path (MLX products, NumPy softmax).
@pytest.mark.parametrize("shape", [(1, 4, 2, 7, 7), (2, 9, 3, 5, 40), (3, 4, 4, 1, 33), (2, 6, 1, 1, 20),
                                   (2, 4, 2, 40, 50), (1, 9, 3, 30, 70)])
@pytest.mark.parametrize("mask_kind", ["none", "causal", "bool-2d", "bool-batch", "additive"])
def test_matches_mlx_fused_attention(shape, mask_kind: str) -> None:
    import mlx.core as mx

    batch, q_heads, kv_heads, length, span = shape
    q, k, v = _inputs(batch, q_heads, kv_heads, length, span)
    mask = _masks(batch, length, span)[mask_kind]
    expected = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask=mask)
    got = attention(q, k, v, None, 0.25, mask)
    assert got.shape == expected.shape
    assert mx.allclose(got, expected, rtol=1e-4, atol=1e-5).item()


def test_quantized_cache_and_sinks_use_the_stock_function() -> None:
    import mlx.core as mx

    q, k, v = _inputs(1, 4, 2, 3, 9)
    sinks = mx.zeros((4,))
    expected = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.5, mask="causal", sinks=sinks)
    assert mx.allclose(attention(q, k, v, None, 0.5, "causal", sinks=sinks), expected).item()


@pytest.mark.parametrize("mask_kind", ["none", "causal", "bool-batch"])
def test_large_chunks_split_across_threads_match(mask_kind: str) -> None:
    """A prefill-sized chunk (over a million scores): the compiled softmax, or without Numba NumPy's split across
    threads (test_numpy_softmax_when_numba_is_missing)."""
    import mlx.core as mx

    from lemcore.generate.cpu import attention as cpu_attention

    q, k, v = _inputs(2, 6, 2, 160, 1200)
    assert cpu_attention._SPLIT_AT < 2 * 6 * 160 * 1200
    mask = _masks(2, 160, 1200)[mask_kind]
    expected = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask=mask)
    assert mx.allclose(attention(q, k, v, None, 0.25, mask), expected, rtol=1e-4, atol=1e-5).item()


def test_non_contiguous_keys_and_values_from_a_cache_buffer() -> None:
    """Batch caches hand attention slices of a larger buffer."""
    import mlx.core as mx

    q, k, v = _inputs(2, 4, 2, 1, 64)
    k, v = k[:, :, :50], v[:, :, :50]
    expected = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask=None)
    assert mx.allclose(attention(q, k, v, None, 0.25, None), expected, rtol=1e-4, atol=1e-5).item()


def test_scores_that_would_underflow_still_give_finite_weights() -> None:
    """Far-apart scores (2 ** -300 is below float32's range) and a fully masked padding row."""
    import mlx.core as mx

    q, k, v = _inputs(1, 2, 1, 2, 6)
    q = q * 200
    mask = mx.array([[True] * 6, [False] * 6])[None, None]
    expected = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask=mask)
    got = attention(q, k, v, None, 0.25, mask)
    assert mx.isfinite(got).all().item()
    assert mx.allclose(got, expected, rtol=1e-4, atol=1e-5).item()


def test_compiled_softmax_powers_of_two_within_float32_rounding() -> None:
    """The prefill kernel's 2 ** x is a polynomial: within 2e-7 relative over the whole clamped range."""
    import numpy as np

    from lemcore.generate.cpu.softmax_rows import exp2_rows

    x = np.linspace(-126.0, 0.0, 200_001, dtype=np.float32)[None]  # one row whose maximum is 0
    sums = np.empty(1, np.float32)
    weights = x.copy()
    exp2_rows(weights, 0, sums)
    exact = np.exp2(x.astype(np.float64))
    assert np.max(np.abs(weights / exact - 1)) < 2e-7
    assert abs(sums[0] / exact.sum() - 1) < 1e-5


def test_compiled_softmax_gives_future_keys_weight_zero() -> None:
    """Causal rows: a chunk of 3 positions, the last 3 of 5 keys, two query heads (rows 0-2 and 3-5)."""
    import numpy as np

    from lemcore.generate.cpu.softmax_rows import exp2_rows

    scores = np.zeros((6, 5), np.float32)
    sums = np.empty(6, np.float32)
    exp2_rows(scores, 3, sums)
    seen = np.array([3, 4, 5, 3, 4, 5])
    assert (scores == (np.arange(5)[None] < seen[:, None])).all()  # weight 1 (2 ** 0) up to the position, then 0
    assert (sums == seen).all()


def test_numpy_softmax_when_numba_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the compiled kernel the NumPy softmax gives the same attention."""
    import mlx.core as mx

    from lemcore.generate.cpu import attention as cpu_attention

    q, k, v = _inputs(1, 9, 3, 30, 70)
    expected = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask="causal")
    monkeypatch.setattr(cpu_attention, "_compiled_softmax", lambda: None)
    assert mx.allclose(attention(q, k, v, None, 0.25, "causal"), expected, rtol=1e-4, atol=1e-5).item()


def test_prefill_scores_reuse_one_buffer_that_grows_and_is_released() -> None:
    """Score sizes change with every chunk; as fresh buffers each was new memory (docs/platform-notes.md,
    "Prefill"). Results stay equal to MLX's attention through a smaller call on the same buffer."""
    import mlx.core as mx
    import numpy as np

    from lemcore.generate.cpu import attention as module

    module.release_workspace()
    rng = np.random.default_rng(3)
    seen = []
    for span in (700, 300, 900):
        q = mx.array(rng.standard_normal((1, 6, 128, 16), dtype=np.float32))
        k = mx.array(rng.standard_normal((1, 2, span, 16), dtype=np.float32))
        v = mx.array(rng.standard_normal((1, 2, span, 16), dtype=np.float32))
        ours = module.attention(q, k, v, None, 0.25, "causal")
        theirs = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask="causal")
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-4, atol=1e-5)
        seen.append(module._SCRATCH.buffer)
    assert seen[0] is seen[1] and seen[2] is not seen[1] and seen[2].size == 2 * 3 * 128 * 900
    module.release_workspace()
    assert module._SCRATCH.buffer is None
