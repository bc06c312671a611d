"""Our CPU attention equals MLX's fused attention, and is only switched in while a model runs on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from lemcore.cpu_attention import attention, fast_attention


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


@pytest.mark.parametrize("shape", [(1, 4, 2, 7, 7), (2, 9, 3, 5, 40), (3, 4, 4, 1, 33), (2, 6, 1, 1, 20)])
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


def test_switched_in_only_inside_the_block_and_put_back_after_an_error(tiny_llama: Path) -> None:
    import mlx.core as mx
    import mlx_lm
    from mlx_lm.models import base, llama

    model, _ = mlx_lm.load(str(tiny_llama))
    assert mx.default_device() == mx.cpu  # our machines; on a Mac (Metal) fast_attention changes nothing
    assert llama.scaled_dot_product_attention is base.scaled_dot_product_attention
    with pytest.raises(RuntimeError), fast_attention(model) as on:
        assert on is True
        assert llama.scaled_dot_product_attention is attention
        raise RuntimeError("engine failed")
    assert llama.scaled_dot_product_attention is base.scaled_dot_product_attention
