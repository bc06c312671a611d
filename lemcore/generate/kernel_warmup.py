"""The child process of cpu/kernel_cache.py's `compile_ahead`: a short generation with the model, as the engine
runs it, so that Numba compiles every kernel with the engine's own argument types and caches them.

    python -m lemcore.generate.kernel_warmup MODEL_FOLDER
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from lemcore.generate.cpu.kernel_cache import mark_compiled
from lemcore.generate.engine import GenItem, MLXGenerator, Sampling, load_mlx_model


def warm_up(model_path: str) -> None:
    """The generator's prefill, decoding steps and both samplers on three short prompts that share a prefix,
    through two slots (the third prompt decodes alone, and a one-row batch's arrays can type differently, e.g.
    C-contiguous); then the stamp."""
    model, tokenizer = load_mlx_model(model_path, batch=2)
    generator = MLXGenerator(model, tokenizer, batch_size=2)
    opening = "Please answer in one short sentence, thinking first about who is affected and how. "
    messages = [[{"role": "user", "content": opening + question}]
                for question in ("Is it fair to read a partner's messages?", "Should a town film its parks?",
                                 "May I share a friend's photo?")]
    generator.set_shared_prefix(messages[:2])
    for sampling in (Sampling(temperature=0.7, max_tokens=3, seed=0), Sampling(temperature=0.0, max_tokens=3)):
        feed = iter([GenItem(i, m) for i, m in enumerate(messages)])
        results: list[Any] = []
        generator.run(functools.partial(next, feed, None), sampling, results.append)
    mark_compiled(model_path)


if __name__ == "__main__":
    warm_up(sys.argv[1])
