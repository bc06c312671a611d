"""GSM8K run throughput: our benchmark engine vs one-item-at-a-time generation, same model, items and tokens.

Lab: one `mlx_lm.generate` call per question (scripts/lem_standard_benchmark.py did this), then scoring.
Ours: `run_benchmark` (continuous batching through MLXGenerator, shared-prefix cache, per-row provenance
written to disk, summary with bootstrap intervals). The model is loaded once and passed to both, so neither
side pays loading; our side does pay for writing its run folder and computing its intervals.
Greedy decoding on both sides so the answers (and so the token counts) are comparable. Run:

    .venv/bin/python -m tests.perf.bench_gsm8k [--model tiny|smollm2|PATH] [--items 10] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def _model(name: str) -> Path:
    if name == "tiny":
        from tests.tiny_models import make_tiny_model

        return make_tiny_model(Path(tempfile.mkdtemp()) / "tiny", arch="llama", hidden_size=256, num_layers=4)
    if name == "smollm2":
        from lemcore.models.embedded import ensure_embedded_model

        return ensure_embedded_model("float32")
    return Path(name)


def main() -> None:
    from lemcore.blas import openblas_path, reexec_with_openblas

    reexec_with_openblas()  # both sides on OpenBLAS, as `lem` runs on Linux
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--items", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=10)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp())
    os.environ.setdefault("LEM_DATA_DIR", str(tmp / "data"))
    import mlx_lm
    from mlx_lm.sample_utils import make_sampler

    from lemcore.benchmarks import gsm8k
    from lemcore.benchmarks.extract import score_gsm8k
    from lemcore.benchmarks.provenance import model_identity
    from lemcore.benchmarks.run import BenchConfig, SuiteSpec, run_benchmark
    from lemcore.benchmarks.suites import load_suite
    from lemcore.generate.engine import (
        MLXGenerator,
        Sampling,
        encode_prompt,
        generate_one_by_one,
        load_mlx_model,
    )
    from tests.bench_items import write_gsm8k

    path = _model(args.model)
    questions = write_gsm8k(tmp / "gsm8k.jsonl", count=min(args.items, 10))
    items = load_suite("gsm8k", questions).items
    model, tokenizer = load_mlx_model(path)
    model_identity(str(path))  # hash the weights once (cached per file afterwards, as in real use)
    print(f"model {args.model} ({path}), {len(items)} GSM8K items, max {args.max_tokens} tokens, batch "
          f"{args.batch_size}, BLAS {'OpenBLAS' if openblas_path() and 'LD_PRELOAD' in os.environ else 'bundled'}")

    generate_one_by_one(model, tokenizer, [{"role": "user", "content": "hello"}], Sampling(max_tokens=4))  # warm-up

    start = time.perf_counter()
    lab_tokens = lab_correct = 0
    for item in items:
        # mlx_lm.generate's own loop (what generate_one_by_one calls), read for its exact token count.
        prompt, _ids = encode_prompt(tokenizer, gsm8k.messages(item))
        text, last = "", None
        for last in mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=args.max_tokens,
                                           sampler=make_sampler(temp=0.0)):
            text += last.text
        lab_tokens += last.generation_tokens if last else 0
        lab_correct += bool(score_gsm8k(text, item.reference["expected"])["correct"])
    lab_s = time.perf_counter() - start

    config = BenchConfig(model=str(path), suites=(SuiteSpec("gsm8k", str(questions)),), samples=1,
                         temperature=0.0, max_tokens=args.max_tokens, batch_size=args.batch_size,
                         run_dir=str(tmp / "run"))
    start = time.perf_counter()
    result = run_benchmark(config, generator=MLXGenerator(model, tokenizer, batch_size=args.batch_size))
    ours_s = time.perf_counter() - start
    ours_tokens = result.summary["suites"]["gsm8k"]["tokens"]
    ours_acc = result.summary["suites"]["gsm8k"]["metrics"]["accuracy"]["mean"]

    print(f"one at a time: {lab_s:7.2f} s  {lab_tokens:5d} tokens  {lab_tokens / lab_s:7.1f} tok/s  "
          f"accuracy {100 * lab_correct / len(items):.0f}%")
    print(f"our run:       {ours_s:7.2f} s  {ours_tokens:5d} tokens  {ours_tokens / ours_s:7.1f} tok/s  "
          f"accuracy {ours_acc:.0f}%  (run folder, provenance and intervals included)")
    print(f"ratio (wall time, one-at-a-time / ours): {lab_s / ours_s:.2f}x")
    print(f"ratio (tokens per second, ours / one-at-a-time): {(ours_tokens / ours_s) / (lab_tokens / lab_s):.2f}x")


if __name__ == "__main__":
    main()
