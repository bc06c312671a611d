"""Gold generation throughput: the lab's approach vs ours, in one process, same model/prompts/token limit.

Lab: one `mlx_lm.generate` call per prompt, the sandwich built per prompt (worker/lem_generate.py), stock
mlx-lm (its default 2048-token prefill chunks, fused attention, categorical sampler).
Ours: lemcore's MLXGenerator as `lem gold` runs it: continuous batching, the shared system prefix prefilled
once, our own prefill (512-token chunks on the CPU, no vocabulary logits for prompt tokens), and on the CPU
our attention (lemcore/generate/cpu/attention.py), SwiGLU (lemcore/generate/cpu/activations.py) and sampler (lemcore/generate/sampling.py).
Prints responses/hour for both and the ratio. Models: `smollm2` (the real 135M instruct model, float32),
`tiny` (2 layers, 64 wide, random weights, SmolLM2's tokenizer: realistic token counts), `tiny-bytes` (the
tests' tiny model with its 512-token byte-level tokenizer: the sandwich is 2.4x as many tokens).

Measured here (2 cores, OpenBLAS, 512 tokens, batch 16), 2026-11-27, after attention's softmax moved to NumPy
and SwiGLU to power(2, x): smollm2 3.82x (16 prompts; lab 1598.7 s, ours 418.9 s); tiny 4.26x (32 prompts;
125.9 s vs 29.5 s) and 4.59x (64 prompts; 267.6 s vs 58.3 s); tiny-bytes 3.02x, 2.55x, 3.87x (16 prompts,
three runs: short runs swing with machine noise) and 2.77x (64 prompts; 159.4 s vs 57.6 s): attention over
its 3.7K-token prompts dominates both sides. Earlier the same day, with MLX-op attention: 2.98-3.05x, 4.52x,
2.23x; before any of the CPU paths: 1.01-1.09x. Run:

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 \
    .venv/bin/python -m tests.perf.bench_contribute [--model tiny|tiny-bytes|smollm2|PATH] [--prompts 16]
                                                    [--max-tokens 512] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def _model(name: str) -> Path:
    from lemcore.models.embedded import ensure_embedded_model
    from tests.tiny_models import make_tiny_model

    if name == "tiny":
        return _tiny_with_tokenizer(ensure_embedded_model("float32"))
    if name == "tiny-bytes":
        return make_tiny_model(Path(tempfile.mkdtemp()) / "tiny", arch="llama")
    if name == "smollm2":
        return ensure_embedded_model("float32")
    return Path(name)


def _tiny_with_tokenizer(real: Path) -> Path:
    """A tiny random llama (2 layers, 64 wide) that speaks a real model's tokenizer and chat template.

    Token counts then match what a real model sees (the sandwich is ~1.5K tokens for SmolLM2's tokenizer,
    3.7K for the tests' 512-token byte-level one), and so does the vocabulary-sized output layer, the way
    hub "tiny-random" test models pair a real tokenizer with small random weights.
    """
    from tests.tiny_models import make_tiny_model

    real_config = json.loads((real / "config.json").read_text())
    dest = make_tiny_model(Path(tempfile.mkdtemp()) / "tiny", arch="llama",
                           vocab_size=real_config["vocab_size"])
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (real / name).exists():
            shutil.copyfile(real / name, dest / name)
    config = json.loads((dest / "config.json").read_text())
    config["eos_token_id"] = real_config["eos_token_id"]
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    return dest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=512)  # the lab's gold setting
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    import mlx.core as mx

    from lemcore.blas import openblas_path
    from lemcore.contribute.kernel import build_sandwich, default_kernel_paths, load_axioms, load_kernel_text
    from lemcore.generate.engine import GenItem, MLXGenerator, Sampling, generate_one_by_one, load_mlx_model
    from lemcore.hardware import blas_library
    from lemcore.prompts import load_gold_prompts
    from lemcore.resources import seeds_dir

    path = _model(args.model)
    model, tokenizer = load_mlx_model(path)
    items = load_gold_prompts(seeds_dir() / "gold-prompts.jsonl")[: args.prompts]
    sampling = Sampling(temperature=0.3, max_tokens=args.max_tokens, seed=0)
    paths = default_kernel_paths()
    print(f"model {args.model} ({path}), {len(items)} prompts, max {args.max_tokens} tokens, BLAS {blas_library()}"
          f"{'' if openblas_path() else ' (OpenBLAS not installed)'}")

    # Warm-up (JIT kernels, caches) so neither side pays it.
    generate_one_by_one(model, tokenizer, [{"role": "user", "content": "hello"}], Sampling(max_tokens=4))

    mx.random.seed(0)
    start = time.perf_counter()
    lab_tokens = 0
    for item in items:
        # The lab re-reads the kernel files and rebuilds the sandwich for every prompt.
        messages = build_sandwich(load_axioms(paths.axioms), load_kernel_text(paths.text), item.prompt)
        text = generate_one_by_one(model, tokenizer, messages, sampling)
        lab_tokens += len(tokenizer.encode(text, add_special_tokens=False))
    lab_s = time.perf_counter() - start

    axioms, kernel_text = load_axioms(paths.axioms), load_kernel_text(paths.text)
    gen = MLXGenerator(model, tokenizer, batch_size=args.batch_size)
    queue = [GenItem(it.idx, build_sandwich(axioms, kernel_text, it.prompt)) for it in items]
    start = time.perf_counter()
    prefix = gen.set_shared_prefix([q.messages for q in queue[:2]])
    results: list = []
    feed = iter(queue)
    gen.run(lambda: next(feed, None), sampling, results.append)
    ours_s = time.perf_counter() - start
    ours_tokens = sum(r.tokens for r in results)

    lab_rph = len(items) * 3600 / lab_s
    ours_rph = len(results) * 3600 / ours_s
    print(f"lab : {lab_s:7.1f} s  {lab_rph:8.0f} responses/h  {lab_tokens / lab_s:7.1f} tok/s")
    print(f"ours: {ours_s:7.1f} s  {ours_rph:8.0f} responses/h  {ours_tokens / ours_s:7.1f} tok/s "
          f"(batch {args.batch_size}, shared prefix {prefix} tokens)")
    print(f"ratio (responses/hour, ours/lab): {ours_rph / lab_rph:.2f}x")


if __name__ == "__main__":
    main()
