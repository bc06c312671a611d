"""Our CPU kernels are switched into a model's modules only inside the block, and our SwiGLU equals mlx-lm's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lemcore.generate.cpu.activations import swiglu
from lemcore.generate.cpu.attention import attention
from lemcore.generate.cpu.paths import cpu_fast_paths


def test_swiglu_matches_mlx_lm() -> None:
    import mlx.core as mx
    from mlx_lm.models import activations

    mx.random.seed(3)
    gate = mx.concatenate([mx.random.normal((4, 300)) * 4, mx.array([[-200.0, -90.0, 0.0, 90.0] * 75])])
    x = mx.random.normal((5, 300))
    expected = activations.swiglu(gate, x)
    got = swiglu(gate, x)
    assert mx.isfinite(got).all().item()
    assert mx.allclose(got, expected, rtol=1e-5, atol=1e-6).item()


def test_swiglu_of_a_prefill_chunk_matches_mlx_lm_and_leaves_its_inputs_alone() -> None:
    import mlx.core as mx
    from mlx_lm.models import activations

    mx.random.seed(4)
    gate = mx.random.normal((1, 512, 384)) * 6  # a 512-token chunk: the NumPy branch
    gate[0, 0, :4] = mx.array([-200.0, -90.0, 0.0, 90.0])
    x = mx.random.normal((1, 512, 384))
    expected = activations.swiglu(gate, x)
    also_reads_gate = gate * 2  # another lazy op on the same input, evaluated only afterwards
    before = np.array(gate)
    got = swiglu(gate, x)
    assert got.shape == expected.shape and got.dtype == mx.float32
    assert mx.isfinite(got).all().item()
    assert mx.allclose(got, expected, rtol=1e-5, atol=1e-6).item()
    np.testing.assert_array_equal(np.array(gate), before)
    np.testing.assert_array_equal(np.array(also_reads_gate), before * 2)


def test_switched_in_only_inside_the_block_and_put_back_after_an_error(tiny_llama: Path) -> None:
    import mlx.core as mx
    import mlx_lm
    from mlx_lm.models import activations, base, llama

    model, _ = mlx_lm.load(str(tiny_llama))
    assert mx.default_device() == mx.cpu  # our machines; on a Mac (Metal) cpu_fast_paths changes nothing
    assert llama.scaled_dot_product_attention is base.scaled_dot_product_attention
    with pytest.raises(RuntimeError), cpu_fast_paths(model) as on:
        assert on is True
        assert llama.scaled_dot_product_attention is attention
        assert llama.swiglu is swiglu
        raise RuntimeError("engine failed")
    assert llama.scaled_dot_product_attention is base.scaled_dot_product_attention
    assert llama.swiglu is activations.swiglu


def test_model_output_unchanged(tiny_llama: Path) -> None:
    """A whole forward pass (causal prefill) gives the same logits with our kernels as with mlx-lm's."""
    import mlx.core as mx
    import mlx_lm

    model, _ = mlx_lm.load(str(tiny_llama))
    tokens = mx.array([[5, 17, 99, 3, 250, 41, 8, 77, 12]])
    expected = model(tokens)
    with cpu_fast_paths(model):
        got = model(tokens)
    assert mx.allclose(got, expected, rtol=1e-4, atol=1e-4).item()
