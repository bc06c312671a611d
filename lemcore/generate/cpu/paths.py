"""Switches our CPU kernels (attention, SwiGLU) into a model's modules while our generator runs it.

mlx-lm's model modules import `scaled_dot_product_attention` and `swiglu` by name, so replacing those names in
the modules the model is built from changes what its layers call, without touching its weights or code.
Only on MLX's CPU backend: on a Mac (Metal) the fused kernels are the fast ones and nothing changes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lemcore.generate.cpu.activations import swiglu
from lemcore.generate.cpu.attention import attention, release_workspace


def _replacements() -> dict[str, tuple[Any, Any]]:
    """name in a model module -> (mlx-lm's function, ours)."""
    from mlx_lm.models import activations, base  # lazy: mlx-lm pulls in MLX and transformers (seconds)


    return {"scaled_dot_product_attention": (base.scaled_dot_product_attention, attention),
            "swiglu": (activations.swiglu, swiglu)}


@contextmanager
def cpu_fast_paths(model: Any) -> Iterator[bool]:
    """Use our CPU kernels in the model's modules for the duration. Yields whether anything was switched.

    Use on the MLX thread, around code that runs this model (not under `mx.compile`: our attention evaluates);
    mlx-lm's functions are put back on exit, also after an error.
    """
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    if mx.default_device() != mx.cpu:
        yield False
        return
    replacements = _replacements()
    swapped: list[tuple[Any, str, Any]] = []
    for module_name in {type(m).__module__ for m in model.modules()}:
        module = sys.modules.get(module_name)
        for name, (stock, ours) in replacements.items():
            if module is not None and getattr(module, name, None) is stock:
                setattr(module, name, ours)
                swapped.append((module, name, stock))
    try:
        yield bool(swapped)
    finally:
        for module, name, stock in swapped:
            setattr(module, name, stock)
        release_workspace()  # the prefill's score buffer, tens of MB, not kept between runs
        tiled = sys.modules.get("lemcore.generate.cpu.prefill_products")  # loaded only where the NumPy prefill ran
        if tiled is not None:
            tiled.release_buffers()  # its layers' buffers, ~20 MB for SmolLM2's 512-token chunks
