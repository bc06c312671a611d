"""Gold generation throughput: the lab's approach vs ours, in one process, same model/prompts/token limit.

Lab: one `mlx_lm.generate` call per prompt, the sandwich built per prompt (worker/lem_generate.py).
Ours: lemcore's MLXGenerator (continuous batching + shared-prefix cache), as `lem gold` runs it.
Prints responses/hour for both and the ratio. Run:

    .venv/bin/python -m tests.perf.bench_contribute [--model tiny|smollm2|PATH] [--prompts 16] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def _model(name: str) -> Path:
    if name == "tiny":
        from tests.tiny_models import make_tiny_model

        return make_tiny_model(Path(tempfile.mkdtemp()) / "tiny", arch="llama")
    if name == "smollm2":
        from lemcore.embedded_model import ensure_embedded_model

        return ensure_embedded_model("float32")
    return Path(name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    import mlx.core as mx

    from lemcore.blas import openblas_path
    from lemcore.generation import GenItem, MLXGenerator, Sampling, generate_one_by_one, load_mlx_model
    from lemcore.hardware import blas_library
    from lemcore.kernel import build_sandwich, default_kernel_paths, load_axioms, load_kernel_text
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
