"""The prompt chunk's tiled products and the passes that lay out their inputs (lemcore/generate/cpu/
prefill_products.py), against float64 NumPy and the untiled forms, across the tile's edges."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

from lemcore.generate.cpu import prefill_products as tiled  # noqa: E402
from lemcore.generate.cpu.activations import swiglu_numpy  # noqa: E402
from lemcore.generate.cpu.prefill_kernels import rms_norm  # noqa: E402

pytestmark = pytest.mark.skipif(not tiled.AVAILABLE, reason="the tiled kernel runs only where the CPU has AVX-512")


@pytest.mark.parametrize("tokens, inner, rows", [
    (512, 576, 1536),  # a chunk's gate product: rows of 1536 floats, the output padded (an odd count of lines)
    (512, 1536, 576),  # the down product
    (300, 576, 192),  # a last chunk: 6 tiles of 48 tokens, then 12 -> one of 16 with 4 padding columns
    (80, 64, 13),  # 48 + 32 tokens: the 2-vector tile; 13 rows: one tile of 8, then 5 one at a time
    (17, 9, 5),  # fewer rows than a tile: only the one-at-a-time rows; 17 tokens: two 16-token tiles
    (1, 3, 8),
])
def test_products_equal_float64_across_the_tiles_edges(tokens: int, inner: int, rows: int) -> None:
    rng = np.random.default_rng(tokens + rows)
    x = rng.standard_normal((tokens, inner), dtype=np.float32)
    weights = rng.standard_normal((rows, inner), dtype=np.float32)
    columns = tiled.columns(x)
    assert columns.shape == (inner, -(-tokens // 16) * 16)
    assert np.array_equal(columns[:, :tokens], x.T) and not columns[:, tokens:].any()  # padding is zero
    got = tiled.products(columns, tokens, weights)
    assert got.shape == (tokens, rows)
    expected = x.astype(np.float64) @ weights.T.astype(np.float64)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.sqrt(inner))


def test_slot_buffers_are_reused_grown_and_released_with_the_fast_paths(tiny_llama) -> None:
    from lemcore.generate.cpu.paths import cpu_fast_paths
    from lemcore.generate.engine import load_mlx_model

    rng = np.random.default_rng(1)
    model, _tokenizer = load_mlx_model(tiny_llama)
    with cpu_fast_paths(model):
        first = tiled.columns(rng.standard_normal((20, 8), dtype=np.float32), "test")
        smaller = tiled.columns(rng.standard_normal((5, 8), dtype=np.float32), "test")
        assert np.shares_memory(first, smaller)  # the same buffer, a smaller view
        larger = tiled.columns(rng.standard_normal((40, 8), dtype=np.float32), "test")
        assert not np.shares_memory(first, larger) and larger.shape == (8, 48)  # grown
        assert not np.shares_memory(tiled.columns(np.ones((5, 8), np.float32)), larger)  # no slot: a new array
        assert "test" in tiled._SCRATCH.__dict__
    assert not tiled._SCRATCH.__dict__  # freed when the run ends, as attention.py's scores buffer


def test_outputs_are_contiguous_unless_their_rows_would_share_cache_sets() -> None:
    rng = np.random.default_rng(0)
    columns = tiled.columns(rng.standard_normal((50, 32), dtype=np.float32))
    for rows, contiguous in ((192, True), (576, True), (1536, False), (1024, False), (200, True)):
        out = tiled.products(columns, 50, rng.standard_normal((rows, 32), dtype=np.float32))
        assert out.flags.c_contiguous is contiguous, rows
        if not contiguous:  # rows an odd number of 64-byte lines apart
            assert out.strides[0] // 64 % 2 == 1


def test_the_layout_passes_equal_the_untiled_forms() -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((37, 576), dtype=np.float32) * 4
    weight = rng.standard_normal(576, dtype=np.float32)
    normed = tiled.norm_columns(x, weight, np.float32(1e-5))
    assert normed.shape == (576, 48) and not normed[:, 37:].any()
    np.testing.assert_allclose(normed[:, :37], rms_norm(x, weight, np.float32(1e-5)).T, rtol=1e-5, atol=1e-6)

    # Gates from -100 to 100: past the clamp of 2 ** x at both ends, and 0 (silu(0) = 0).
    gate = np.concatenate([np.linspace(-100, 100, 37 * 100, dtype=np.float32).reshape(37, 100),
                           np.zeros((37, 4), np.float32)], axis=1)
    up = rng.standard_normal(gate.shape, dtype=np.float32)
    expected = swiglu_numpy(gate, up)
    assert tiled.swiglu_in_place(gate, up) is gate
    np.testing.assert_allclose(gate, expected, rtol=2e-6, atol=1e-30)


def test_products_laid_out_as_columns_feed_the_next_product() -> None:
    # The gate and up products come out as (out, padded tokens), the padding zero: the down product's input.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((37, 64), dtype=np.float32)
    weights = rng.standard_normal((136, 64), dtype=np.float32)  # 17 tiles of 8 rows
    got = tiled.products_as_columns(tiled.columns(x), weights)
    assert got.shape == (136, 48) and not got[:, 37:].any()
    np.testing.assert_allclose(got[:, :37], (x.astype(np.float64) @ weights.T).T, rtol=1e-5, atol=1e-4)
    odd = rng.standard_normal((13, 64), dtype=np.float32)  # a tile and 5 rows one at a time
    np.testing.assert_allclose(tiled.products_as_columns(tiled.columns(x), odd)[:, :37], (x @ odd.T).T,
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("at, length", [(0, 50), (40, 21), (1000, 512), (7, 1), (30, 77)])
def test_chunk_attention_equals_many_rows_laid_out_for_the_output_projection(at: int, length: int) -> None:
    # Positions at..at + length of a cache with room past them (the kernel must not read past at + length);
    # 3 kv heads of 3 query heads each, as SmolLM2's; chunks from the start, mid-prompt, a whole 512-token one,
    # and one token.
    from lemcore.generate.cpu.attention import many_rows

    kv_heads, group, dim = 3, 3, 64
    rng = np.random.default_rng(at + length)
    keys = rng.standard_normal((kv_heads, at + length + 30, dim), dtype=np.float32)
    values = rng.standard_normal(keys.shape, dtype=np.float32)
    keys[:, at + length:] = np.nan  # past the chunk: never read
    values[:, at + length:] = np.nan
    rows = rng.standard_normal((kv_heads, group * length, dim), dtype=np.float32) * np.float32(0.18)
    got = tiled.attention_columns(rows, keys, values, at, length)
    assert got.shape == (kv_heads * group * dim, -(-length // 16) * 16)
    span = at + length
    expected = many_rows(rows[None], keys[None, :, :span], values[None, :, :span], "causal", length)
    expected = expected.reshape(kv_heads * group, length, dim).transpose(0, 2, 1).reshape(-1, length)
    np.testing.assert_allclose(got[:, :length], expected, rtol=1e-4, atol=1e-5)
    assert not got[:, length:].any()
