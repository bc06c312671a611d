"""Few-shot examples as a multi-turn chat: K solved examples from the same question file before the item.

The examples are drawn once per suite from the whole file (not only the subsample being run), seeded by the
run's seed and the suite id, so a rerun or a resume shows the same ones. K + 1 candidates are drawn in order;
an item gets the first K candidates that are not itself, so an item is never shown its own answer, and every
item that is not a candidate sees the same K examples (which also lets the generator reuse their prefill).
Each example is the suite's own user turn (instruction and question, as the item gets) followed by an
assistant turn with the reference answer (`fewshot_answer` in the suite module). Suites without reference
answers to show (Do Not Answer, ToxiGen, ethics) and the log-likelihood suites take none.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from lemcore.benchmarks.suites import BenchItem
from lemcore.errors import ConfigError

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class FewShot:
    k: int
    seed: int
    candidates: tuple[BenchItem, ...]  # K + 1, in the order drawn
    pool_size: int  # items in the question file they were drawn from

    def examples_for(self, item: BenchItem) -> list[BenchItem]:
        return [c for c in self.candidates if c.id != item.id][: self.k]

    def messages(self, module: ModuleType, item: BenchItem) -> Messages:
        turns: Messages = []
        for example in self.examples_for(item):
            turns += module.messages(example)
            turns.append({"role": "assistant", "content": str(module.fewshot_answer(example))})
        own: Messages = module.messages(item)
        return turns + own

    def provenance(self) -> dict[str, Any]:
        return {"k": self.k, "seed": self.seed, "pool_items": self.pool_size,
                "candidates": [c.id for c in self.candidates],
                "rule": "each item gets the first k candidates that are not itself, as user/assistant turns "
                        "before its own question"}


def supports_fewshot(module: ModuleType) -> bool:
    return hasattr(module, "fewshot_answer") and not getattr(module, "LOGLIK", False)


def choose_fewshot(module: ModuleType, pool: Sequence[BenchItem], k: int, seed: int) -> FewShot:
    """Draw the candidates for `k`-shot prompts from `pool` (the whole question file)."""
    if not supports_fewshot(module):
        raise ConfigError(f"{module.ID} has no reference answers to show as examples, so it runs without "
                          "few-shot examples: leave it out of a --num-fewshot run, or run it in a separate one.")
    if k < 1:
        raise ConfigError("The number of few-shot examples must be at least 1 (0: none).")
    if len(pool) <= k:
        raise ConfigError(f"{module.ID} has {len(pool)} questions in its file: too few for {k} examples plus the "
                          "item itself. Use fewer examples.")
    rng = random.Random(f"{seed}:{module.ID}:fewshot")  # str seeds hash the same way in every process
    picked = rng.sample(range(len(pool)), k + 1)
    return FewShot(k, seed, tuple(pool[i] for i in picked), len(pool))
