"""The seam between generation backends and the engines that use them (contribute, benchmarks).

A backend (MLXGenerator on this computer, APIGenerator for any OpenAI-compatible server) pulls `GenItem`s
from a `feed` and hands back one `GenResult` per item. This module is light on purpose: no MLX, no HTTP,
so engines can be typed against `Generator` without importing a backend.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from lemcore.errors import ConfigError
from lemcore.events import Event
from lemcore.jobs import CancelToken, Report, no_report

Messages = list[dict[str, str]]  # chat messages: [{"role": ..., "content": ...}, ...]


@dataclass(frozen=True)
class Sampling:
    """How answers are sampled. The defaults are the lab's (temperature 0.3, no top-p, 512 tokens) with no
    repetition guard, so benchmarks and judges stay comparable with the lab's runs; contribution turns the
    guard on (lemcore.contribute.setup, `guarded_sampling`)."""

    temperature: float = 0.3
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None
    # mlx-lm's repetition penalty: the logits of tokens among the last `repetition_context` are divided by it
    # (multiplied, where negative) before sampling. 1.0 = off, the lab's sampling.
    repetition_penalty: float = 1.0
    repetition_context: int = 20
    # End an answer as soon as it ends in an exact loop (lemcore.generate.sampling, `loop_period`); its result
    # says so (`GenResult.stopped_loop`). Backends that cannot watch tokens (an API) ignore it.
    stop_loops: bool = False

    def validate(self) -> None:
        if self.max_tokens < 1:
            raise ConfigError("max tokens must be at least 1.")
        if not 0 <= self.temperature <= 5:
            raise ConfigError("temperature must be between 0 and 5 (0 = greedy, the lab uses 0.3).")
        if not 0 < self.top_p <= 1:
            raise ConfigError("top-p must be in (0, 1].")
        if not 1 <= self.repetition_penalty <= 3:
            raise ConfigError("repetition penalty must be between 1 and 3 (1 = off, the lab's sampling).")
        if not 1 <= self.repetition_context <= 4096:
            raise ConfigError("repetition context must be between 1 and 4096 tokens.")


@dataclass(frozen=True)
class GenItem:
    key: Any  # the caller's own id, handed back untouched in GenResult.key
    messages: Messages


@dataclass(frozen=True)
class GenResult:
    key: Any
    text: str
    prompt_tokens: int
    tokens: int
    seconds: float
    truncated: bool  # stopped at the token limit, not at end-of-sequence
    prompt_text: str = ""
    # Not generated, and why (e.g. the prompt does not fit the model's context): `text` is empty and the item
    # is not done. Callers record it as skipped and tell the user; "" for every generated answer.
    refused: str = ""
    # Ended early because it ended in a loop (`Sampling.stop_loops`): neither cut at the limit nor finished.
    # The quality gate refuses it as a repetition without looking again.
    stopped_loop: bool = False


@dataclass(frozen=True)
class PrefillProgress(Event):
    """The model is reading an item's prompt (prefill), before it writes anything: `done_tokens` of
    `total_tokens` read. Sent when the reading starts (`done_tokens` then counts the tokens a shared-prefix cache
    already holds) and after each chunk (512 tokens on the CPU, 2048 on a GPU); the last one has
    `done_tokens == total_tokens`. Backends that read no prompt themselves (an API) send none."""

    key: Any  # the GenItem's key
    done_tokens: int
    total_tokens: int


class Wait(enum.Enum):
    """The type of `WAIT` (an enum member, so `item is WAIT` narrows the feed's result for type checkers)."""

    WAIT = "wait"


WAIT = Wait.WAIT  # returned by a feed that has no item right now but may later (e.g. server down)

Feed = Callable[[], GenItem | Wait | None]  # the next item, WAIT (ask again shortly) or None (no more work)


@runtime_checkable
class Generator(Protocol):
    """What contribute and benchmarks need of a generation backend."""

    name: str  # shown to the user and recorded with every answer
    # Sequences in flight at once (an API backend sends one request at a time; callers still size their
    # claims by it). Settable between runs.
    batch_size: int

    def set_shared_prefix(self, sample_messages: list[Messages]) -> int:
        """Prepare for prompts that start like these (e.g. prefill their common prefix once); returns the
        shared length in tokens, 0 when the backend keeps no such cache."""
        ...

    def run(self, feed: Feed, sampling: Sampling, on_result: Callable[[GenResult], None], *,
            report: Report = no_report, cancel: CancelToken | None = None,
            on_tick: Callable[[], None] | None = None) -> int:
        """Generate until `feed` returns None and everything in flight is finished; returns the number of
        results (refused ones included: each item gets exactly one `GenResult`, see `GenResult.refused`).
        `on_tick` runs often while generating (lease renewal lives there)."""
        ...
