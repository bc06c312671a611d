"""The decoding step's attention (lemcore/generate/cpu/decode_attention.py) against float64 NumPy: both kernels
(the register tiles where the CPU has AVX-512 and the head size is 64 or 128, the plain loops elsewhere), float32
and float16 caches, each group size a tile pass handles and the remainders, left padding, lengths that are not a
multiple of 16, and cache positions past the filled length that hold NaN (never read)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

from lemcore.generate.cpu import decode_attention  # noqa: E402


def _expected(queries, keys, values, length: int, first) -> np.ndarray:
    batch, kv_heads, group, dim = queries.shape
    out = np.zeros(queries.shape)
    for b in range(batch):
        for h in range(kv_heads):
            k = keys[b, h, first[b]:length].astype(np.float64)
            v = values[b, h, first[b]:length].astype(np.float64)
            scores = queries[b, h].astype(np.float64) @ k.T  # already scaled for a base-2 softmax
            weights = 2.0 ** (scores - scores.max(axis=1, keepdims=True))
            out[b, h] = weights @ v / weights.sum(axis=1, keepdims=True)
    return out


def _case(dim: int, group: int, dtype, length: int, first: list[int], seed: int = 0, scale: float = 0.3):
    rng = np.random.default_rng(seed)
    batch, kv_heads, capacity = len(first), 2, length + 9
    keys = rng.standard_normal((batch, kv_heads, capacity, dim)).astype(dtype)
    values = rng.standard_normal((batch, kv_heads, capacity, dim)).astype(dtype)
    keys[:, :, length:] = np.nan  # room the cache has but has not filled
    values[:, :, length:] = np.nan
    queries = (rng.standard_normal((batch, kv_heads, group, dim)) * scale).astype(np.float32)
    return queries, keys, values, np.asarray(first, np.int64)


@pytest.mark.parametrize("tiled", [True, False], ids=["tiles", "loops"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=["half", "float"])
@pytest.mark.parametrize("dim,group", [(64, 1), (64, 2), (64, 3), (64, 4), (64, 7), (128, 1), (128, 2), (128, 5),
                                       (32, 3)])
def test_attention_equals_float64(tiled: bool, dtype, dim: int, group: int, monkeypatch) -> None:
    if tiled and not decode_attention.TILED:
        pytest.skip("the tiles run only where the CPU has AVX-512")
    monkeypatch.setattr(decode_attention, "TILED", tiled)
    for length, first in ((83, [0, 5, 40]), (16, [0, 0, 3]), (1, [0, 0, 0]), (200, [0, 184, 199])):
        queries, keys, values, starts = _case(dim, group, dtype, length, first, seed=length)
        out = np.empty(queries.shape, np.float32)
        decode_attention.attend(queries, keys, values, length, starts, out)
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, _expected(queries, keys, values, length, starts), atol=5e-6)


@pytest.mark.parametrize("tiled", [True, False], ids=["tiles", "loops"])
def test_peaked_scores_clamp_the_smallest_weights_without_losing_the_answer(tiled: bool, monkeypatch) -> None:
    """Scores hundreds apart: weights under 2 ** -126 of the largest are clamped there (no subnormals), which
    leaves the result equal to float64's within float32 rounding."""
    if tiled and not decode_attention.TILED:
        pytest.skip("the tiles run only where the CPU has AVX-512")
    monkeypatch.setattr(decode_attention, "TILED", tiled)
    queries, keys, values, starts = _case(64, 3, np.float16, 300, [0, 7], scale=20.0)
    out = np.empty(queries.shape, np.float32)
    decode_attention.attend(queries, keys, values, 300, starts, out)
    np.testing.assert_allclose(out, _expected(queries, keys, values, 300, starts), atol=5e-6)
