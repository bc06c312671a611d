"""Log-likelihood of continuations on an MLX model, batched: what multiple-choice benchmarks score with.

For a context and a continuation, the number is the sum over the continuation's tokens of
log softmax(logits) at the position before each token, i.e. log P(continuation | context) under the model, from
one plain forward pass of mlx-lm's model (no cache, no sampling), the same forward `model(ids)` a caller would
run per example. `greedy` says whether every continuation token was also the most likely one there.

Tokenization follows the common multiple-choice definition: the context is encoded alone and the context plus
continuation together, and the continuation's tokens are what the joint encoding holds after the context's
length, so tokens that merge across the boundary are not split apart; whitespace at the end of the context is
moved to the front of the continuation first.

Batches are right-padded: with a causal mask a real token never attends to padding after it, so padding changes
no real position's logits. Requests are sorted by length (longest first) so a batch pads little, and results
come back in the caller's order. MLX is imported inside the functions, so importing this module stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lemcore.jobs import CancelToken


@dataclass(frozen=True)
class LoglikRequest:
    context: tuple[int, ...]  # token ids, BOS included where the model wants one; never empty
    continuation: tuple[int, ...]  # token ids scored; never empty


@dataclass(frozen=True)
class Loglik:
    logprob: float  # sum of the continuation tokens' log-probabilities (natural log)
    tokens: int  # continuation tokens scored
    greedy: bool  # every continuation token was the argmax at its position


def encode_pair(tokenizer: Any, context: str, continuation: str) -> LoglikRequest:
    """Token ids of context and continuation, split from the joint encoding (see the module docstring).
    `tokenizer` is mlx-lm's TokenizerWrapper (or a Hugging Face tokenizer): its `encode` adds BOS as the model
    expects for plain text."""
    stripped = context.rstrip()
    moved = context[len(stripped):]
    context, continuation = stripped, moved + continuation
    whole = list(tokenizer.encode(context + continuation))
    ctx = list(tokenizer.encode(context))
    cont = whole[len(ctx):]
    if not ctx:
        raise ValueError("the context encodes to no tokens")
    if not cont:
        raise ValueError(f"the continuation {continuation[:40]!r} encodes to no tokens after the context")
    return LoglikRequest(tuple(ctx), tuple(cont))


def loglikelihood(model: Any, requests: Sequence[LoglikRequest], *, batch_size: int = 8, pad_id: int = 0,
                  max_positions: int | None = None, cancel: CancelToken | None = None) -> list[Loglik]:
    """log P(continuation | context) for each request, in order, `batch_size` sequences per forward pass.

    `max_positions`: a longer sequence loses tokens from the start of its context (the continuation is always
    kept whole). `cancel` is checked between batches."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")

    out: list[Loglik | None] = [None] * len(requests)
    seqs = []
    for r in requests:
        if not r.context or not r.continuation:
            raise ValueError("a log-likelihood request needs a non-empty context and continuation")
        ids = list(r.context) + list(r.continuation)
        if max_positions is not None and len(ids) > max_positions:
            if len(r.continuation) >= max_positions:
                raise ValueError(f"a continuation of {len(r.continuation)} tokens does not fit {max_positions} "
                                 "positions")
            ids = ids[len(ids) - max_positions:]
        seqs.append(ids)
    order = sorted(range(len(requests)), key=lambda i: -len(seqs[i]))
    for start in range(0, len(order), max(1, batch_size)):
        if cancel is not None:
            cancel.check()
        batch = order[start:start + max(1, batch_size)]
        inputs = [seqs[i][:-1] for i in batch]  # the last token is only ever a target
        width = max(len(x) for x in inputs)
        n_cont = max(len(requests[i].continuation) for i in batch)
        grid = np.full((len(batch), width), pad_id, dtype=np.int32)
        positions = np.zeros((len(batch), n_cont), dtype=np.int32)
        targets = np.zeros((len(batch), n_cont), dtype=np.int32)
        mask = np.zeros((len(batch), n_cont), dtype=bool)
        for row, i in enumerate(batch):
            grid[row, :len(inputs[row])] = inputs[row]
            cont = requests[i].continuation
            first = len(seqs[i]) - len(cont) - 1  # the position whose logits predict the first continuation token
            positions[row, :len(cont)] = np.arange(first, first + len(cont))
            targets[row, :len(cont)] = cont
            mask[row, :len(cont)] = True
        logits = model(mx.array(grid))  # (B, L, V)
        picked = mx.take_along_axis(logits, mx.array(positions)[..., None], axis=1).astype(mx.float32)  # (B, C, V)
        logprobs = picked - mx.logsumexp(picked, axis=-1, keepdims=True)
        chosen = mx.take_along_axis(logprobs, mx.array(targets)[..., None], axis=-1)[..., 0]  # (B, C)
        best = mx.argmax(picked, axis=-1)
        mx.eval(chosen, best)
        chosen_np = np.array(chosen, dtype=np.float64)
        best_np = np.array(best)
        for row, i in enumerate(batch):
            m = mask[row]
            out[i] = Loglik(float(chosen_np[row][m].sum()), int(m.sum()),
                            bool((best_np[row][m] == targets[row][m]).all()))
    return [x for x in out if x is not None]
