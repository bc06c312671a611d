"""Text generation engine: continuous batched generation on MLX, with a shared-prefix prompt cache.

`MLXGenerator.run()` keeps up to `batch_size` sequences in flight. It pulls the next item from a `feed`
callable whenever a slot frees up (so the caller claims work just in time) and hands each finished response
to `on_result` at once, so a crash loses only what is in flight. Tokens of the shared prefix (e.g. the axiom
system message every sandwich starts with) are prefilled once and the cache is copied for each sequence.

A prompt that does not fit the model's context (its tokens plus `max_tokens` beyond the positions the model
was trained on, `max_position_embeddings` in its config) is refused as soon as it is tokenized: never prefilled,
it holds up no other sequence, and its `GenResult` carries the reason in `refused`.

The repetition guard (`Sampling.repetition_penalty`, `Sampling.stop_loops`; lemcore.generate.sampling): the
penalty is applied on both sampling paths, and a sequence that ends in an exact loop is removed from the batch
at once, its `GenResult.stopped_loop` set, so its slot goes to the next prompt.

MLX and mlx-lm are imported inside the functions that use them, so importing this module stays light.
"""

from __future__ import annotations

import copy
import functools
import json
import time
from collections.abc import Callable
from contextlib import closing, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lemcore.blas import trim_heap
from lemcore.errors import ModelLoadError
from lemcore.events import Event
from lemcore.generate.cpu.decode import batch_caches_in_numpy
from lemcore.generate.cpu.paths import cpu_fast_paths
from lemcore.generate.protocol import WAIT, Feed, Messages, PrefillProgress

# Re-exported (`as`): benchmarks, tests and the perf scripts import these from here.
from lemcore.generate.protocol import GenItem as GenItem
from lemcore.generate.protocol import GenResult as GenResult
from lemcore.generate.protocol import Sampling as Sampling
from lemcore.generate.sampling import SamplingModel, cpu_sampler, loop_period
from lemcore.jobs import CancelToken, Report, no_report
from lemcore.models.loading import ModelLoaded, load_model


@dataclass(frozen=True)
class TokenChunk(Event):
    """The answer being written right now (sent a few times per second, not per token)."""

    key: Any
    text: str
    tokens: int


@dataclass
class _Slot:
    item: GenItem
    started: float
    prompt_text: str
    prompt_tokens: int
    ids: list[int] = field(default_factory=list)


def _reserve(cache: list[Any], positions: int) -> None:
    """Grow each started KVCache in `cache` to hold `positions` at once. mlx-lm grows them chunk by chunk, each
    time a new buffer and a copy of everything before: for a 1.6K-token sandwich ~9 MB of fresh memory per layer,
    a share of the ~1.2-1.5M page faults in a run of 16 (docs/platform-notes.md, "Prefill")."""
    import mlx.core as mx
    from mlx_lm.models.cache import KVCache  # lazy: mlx-lm pulls in MLX and transformers (seconds)

    for c in cache:
        old_keys, old_values = (c.keys, c.values) if type(c) is KVCache else (None, None)
        if old_keys is None or old_values is None or old_keys.shape[2] >= positions:
            continue
        capacity = -(-positions // c.step) * c.step
        keys = mx.zeros((*old_keys.shape[:2], capacity, old_keys.shape[3]), old_keys.dtype)
        values = mx.zeros((*old_values.shape[:2], capacity, old_values.shape[3]), old_values.dtype)
        keys[..., :c.offset, :] = old_keys[..., :c.offset, :]
        values[..., :c.offset, :] = old_values[..., :c.offset, :]
        c.keys, c.values = keys, values


def _let_go(response: Any) -> None:
    """Drop a finished answer's cache, layer by layer. mlx-lm gives each finished sequence its `prompt_cache`:
    lazy slices of the batch's buffers, which we never read but which kept the batch's old buffers alive until the
    step's responses went, and then all of them were freed in one chain holding the GIL (a GUI timer 49-79 ms
    late as a batch's answers ended). One layer at a time, the GIL is free between the frees
    (docs/platform-notes.md, "GUI stalls while answers stream")."""
    layers = getattr(response, "prompt_cache", None)
    if isinstance(layers, list):
        response.prompt_cache = None
        while layers:
            layers.pop()


def _report_prefill(report: Report, key: Any, total: int, done: int) -> None:
    report(PrefillProgress(key, done, total))


def _apply_template(tokenizer: Any, messages: Messages) -> str:
    try:
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    except Exception as err:  # noqa: BLE001 - templates raise anything (jinja errors, ValueError)
        if messages and messages[0].get("role") == "system" and len(messages) > 1:
            # Some templates reject a system role: fold it into the first user turn, as Gemma's does.
            folded = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}]
            return _apply_template(tokenizer, folded + messages[2:])
        raise ModelLoadError(f"The model's chat template failed: {err}") from None


def encode_prompt(tokenizer: Any, messages: Messages) -> tuple[str, list[int]]:
    text = _apply_template(tokenizer, messages)
    # The template already holds BOS where the model wants one.
    return text, list(tokenizer.encode(text, add_special_tokens=False))


def _quiet_transformers() -> None:
    # Sandwich prompts exceed some tokenizers' nominal max length; the warning is noise for us.
    try:
        import transformers  # lazy: heavy, and only MLX loading needs it

        transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    except ImportError:
        pass


# Config keys that hold the number of positions a model was trained on, most common first.
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "max_seq_len",
                 "n_ctx")


def context_from_config(config: dict[str, Any]) -> int | None:
    """The model's context length from its config.json (multimodal configs keep it in `text_config`)."""
    for source in (config, config.get("text_config")):
        if isinstance(source, dict):
            for key in _CONTEXT_KEYS:
                value = source.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return value
    return None


def context_from_model(model: Any) -> int | None:
    """The context length from an mlx-lm model's arguments (`model.args`, or its `language_model`'s), where
    its architecture keeps the field; None when it does not say."""
    for holder in (model, getattr(model, "language_model", None)):
        args = getattr(holder, "args", None)
        for key in _CONTEXT_KEYS:
            value = getattr(args, key, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _read_context(folder: Path) -> int | None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return context_from_config(config) if isinstance(config, dict) else None


def load_mlx_model(path: str | Path, *, batch: int = 1, report: Report = no_report,
                   cancel: CancelToken | None = None) -> tuple[Any, Any]:
    """Load through the Models engine: the fit check (counting `batch` sequences) and one clear message
    for every bad input (missing folder, no weights, corrupt config, unknown architecture, offline hub)."""
    _quiet_transformers()

    return load_model(str(path), batch=batch, report=report, cancel=cancel)


def _common_length(sequences: list[list[int]]) -> int:
    """How many leading tokens all the sequences share."""
    common = 0
    for column in zip(*sequences):
        if len(set(column)) != 1:
            break
        common += 1
    return common


def prepare_cpu_kernels(model: Any, folder: str | Path, *, report: Report = no_report,
                        cancel: CancelToken | None = None) -> None:
    """Where our NumPy layers will run this model (loaded from `folder`), have their Numba kernels compiled in a
    child process first if the cache lacks them (lemcore/generate/cpu/kernel_cache.py: the GUI's sake)."""
    from lemcore.generate.cpu.decode import unsupported  # lazy, as the rest of cpu/

    if not unsupported(model):
        from lemcore.generate.cpu.kernel_cache import compile_ahead

        compile_ahead(folder, report=report, cancel=cancel)


class MLXGenerator:
    """Loads a model once and generates batches on it. Use from a single (MLX) thread.

    `model` and `tokenizer` are mlx-lm's (an nn.Module and a TokenizerWrapper): untyped third-party objects.
    """

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 8, name: str = "",
                 max_positions: int | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self._batch_size = max(1, batch_size)
        self.name = name
        # Positions the model was trained on (prompt + answer); None = unknown, nothing is refused.
        self.max_positions = max_positions if max_positions is not None else context_from_model(model)
        self._prefix_ids: list[int] = []
        self._prefix_cache: list[Any] | None = None
        # The layers without the vocabulary head: prompt tokens need their keys and values, not their logits.
        # (Multimodal wrappers such as Gemma 3's keep the text model in `language_model`.)
        text_model = getattr(model, "language_model", model)
        self._body = getattr(text_model, "model", text_model)
        self._numpy_decoder: Any = False  # not built yet (see _decoder)
        # Where the NumPy step decodes, batch caches in float16, as llama.cpp keeps its cache by default: the step's
        # attention reads half the bytes (lemcore/generate/cpu/decode.py, `batch_caches_in_numpy`). False keeps
        # float32, equal to mlx-lm's decoding to float32 rounding (the greedy-equality tests).
        self.half_cache = True

    @classmethod
    def load(cls, path: str | Path, *, batch_size: int = 8, report: Report = no_report,
             cancel: CancelToken | None = None) -> MLXGenerator:
        folders: list[Path] = []

        def tap(event: Event) -> None:  # the folder the model came from: its config.json says the context
            if isinstance(event, ModelLoaded):
                folders.append(Path(event.folder))
            report(event)

        model, tokenizer = load_mlx_model(path, batch=batch_size, report=tap, cancel=cancel)
        context = _read_context(folders[-1]) if folders else None
        if folders:
            prepare_cpu_kernels(model, folders[-1], report=report, cancel=cancel)
        return cls(model, tokenizer, batch_size=batch_size, name=str(path), max_positions=context)

    @property
    def batch_size(self) -> int:
        """Sequences decoded together; a change applies from the next `run()`."""
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self._batch_size = max(1, int(value))

    # -- shared prefix ------------------------------------------------------------------------------
    def set_shared_prefix(self, sample_messages: list[Messages]) -> int:
        """Prefill the token prefix common to the given prompts once. Returns its length in tokens."""
        from mlx_lm.models.cache import make_prompt_cache

        encoded = [encode_prompt(self.tokenizer, m)[1] for m in sample_messages]
        if len(encoded) < 2:
            self._prefix_ids, self._prefix_cache = [], None
            return 0
        common = min(_common_length(encoded), min(len(e) for e in encoded) - 1)  # keep one token to process
        if common < 16 or (self.max_positions is not None and common >= self.max_positions):
            # Not worth a cache copy; or longer than any prompt the model takes (those are refused anyway).
            self._prefix_ids, self._prefix_cache = [], None
            return 0
        self._prefix_ids = encoded[0][:common]
        cache = make_prompt_cache(self.model)
        with cpu_fast_paths(self.model):
            self._fill(cache, self._prefix_ids, 0, len(self._prefix_ids), None)
        self._prefix_cache = cache
        return common

    def _prefill(self, ids: list[int], cancel: CancelToken | None, progress: Callable[[int], None] | None = None,
                 ) -> list[Any]:
        """A cache holding every prompt token but the last (which starts decoding), one sequence at a time.

        Done here rather than by BatchGenerator, which pads prompts to a common length, masks them with arrays
        and computes vocabulary logits for every prompt token only to drop them; on the CPU, prefill is
        compute-bound, so batching prompts gains nothing. Chunks are smaller on the CPU (the attention scores of
        a 512-token chunk stay in cache; measured 2x faster than 2048 on a 3.7K-token sandwich).

        `progress` gets the number of prompt tokens read: once before the first chunk (what the shared-prefix
        cache already holds), then after each chunk, the last time `len(ids)` (the last token is read by the
        first decoding step, a moment later).
        """
        from mlx_lm.models.cache import make_prompt_cache

        cache, start = self._prefix_for(ids), 0
        if cache is None:
            cache = make_prompt_cache(self.model)
        else:
            start = cache[0].offset
        stop = len(ids) - 1
        chunk_read: Callable[[int], None] | None = None
        if progress is not None:
            tell = progress

            def chunk_read(end: int) -> None:
                tell(len(ids) if end >= stop else end)

            tell(start)
        self._fill(cache, ids, start, stop, cancel, chunk_read)
        if progress is not None and start >= stop:
            progress(len(ids))  # nothing left to read beyond the shared prefix
        return cache

    def _prefix_for(self, ids: list[int]) -> list[Any] | None:
        """A copy of the shared prefix's cache holding the tokens `ids` starts with (at least 16, and not the
        last, which starts decoding), or None. The prefix comes from two sample prompts and can run past what
        the others share (two gold sandwiches went on with "I'm a", 300 tokens, where the rest share 297-299:
        11 of 16 prompts were read from the start): a trimmable cache is cut back to what this prompt shares."""
        prefix, held = self._prefix_ids, self._prefix_cache
        if held is None or not prefix:
            return None
        shared = _common_length([ids[: len(ids) - 1], prefix])
        if shared < 16 or (shared < len(prefix) and not all(c.is_trimmable() for c in held)):
            return None
        cache = copy.deepcopy(held)
        if shared < len(prefix):
            for c in cache:
                c.trim(len(prefix) - shared)
        return cache

    def refusal(self, prompt_tokens: int, max_tokens: int) -> str:
        """Why a prompt of this length is not generated with this token limit ("" = it fits): the prompt and
        its answer must fit in the positions the model was trained on."""
        limit = self.max_positions
        if limit is None or prompt_tokens + max_tokens <= limit:
            return ""
        if prompt_tokens >= limit:
            return (f"the prompt is {prompt_tokens:,} tokens, longer than the {limit:,} the model reads; it was not "
                    "generated (use a model with a longer context)")
        return (f"the prompt ({prompt_tokens:,} tokens) plus up to {max_tokens:,} answer tokens exceeds the "
                f"{limit:,} the model reads; it was not generated (lower max tokens to {limit - prompt_tokens:,} "
                "or less, or use a model with a longer context)")

    def _fill(self, cache: list[Any], ids: list[int], start: int, stop: int, cancel: CancelToken | None,
              progress: Callable[[int], None] | None = None) -> None:
        """Run ids[start:stop] through the model body into `cache`, in chunks; `progress` gets the tokens
        read so far after each chunk."""
        import mlx.core as mx

        step = 512 if mx.default_device() == mx.cpu else 2048
        decoder = self._decoder() if start < stop else None
        numpy_layers = decoder if decoder is not None and decoder.fills(cache) else None  # cpu/decode.py
        if numpy_layers is not None:
            numpy_layers.own_buffers(cache, stop)
        else:
            tokens = mx.array(ids)
        for at in range(start, stop, step):
            if cancel is not None:
                cancel.check()
            end = min(at + step, stop)
            if numpy_layers is not None:
                numpy_layers.fill(ids[at:end], cache)
            else:
                _reserve(cache, stop)
                self._body(tokens[at:end][None], cache=cache)
                mx.eval([c.state for c in cache])
            if progress is not None:
                progress(end)

    def _batch_generator(self, sampling: Sampling) -> Any:
        from mlx_lm.generate import BatchGenerator
        from mlx_lm.sample_utils import make_logits_processors, make_sampler

        model: Any = self.model
        fast = cpu_sampler(sampling.temperature, sampling.top_p)
        if fast is not None:  # sample inside the model call (why: lemcore.generate.sampling)
            model = SamplingModel(self.model, fast, penalty=sampling.repetition_penalty,
                                  context=sampling.repetition_context, decoder=self._decoder())
            sampler, processors = model.take, model.processors()
        else:
            sampler = make_sampler(temp=sampling.temperature, top_p=sampling.top_p if sampling.top_p < 1 else 0.0)
            processors = (make_logits_processors(repetition_penalty=sampling.repetition_penalty,
                                                 repetition_context_size=sampling.repetition_context)
                          if sampling.repetition_penalty != 1.0 else [])
        eos = [[t] for t in sorted(self.tokenizer.eos_token_ids)]
        return BatchGenerator(model, max_tokens=sampling.max_tokens, stop_tokens=eos, sampler=sampler,
                              logits_processors=processors, completion_batch_size=self.batch_size,
                              prefill_batch_size=self.batch_size)

    def _decoder(self) -> Any:
        """The NumPy decoding step for this model (lemcore/generate/cpu/decode.py), built once; None where it
        does not cover the model (the decoding steps then run on MLX)."""
        if self._numpy_decoder is False:
            from lemcore.generate.cpu.decode import NumpyDecoder

            self._numpy_decoder = NumpyDecoder.for_model(self.model)
        return self._numpy_decoder

    # -- the loop -----------------------------------------------------------------------------------
    def run(
        self,
        feed: Feed,
        sampling: Sampling,
        on_result: Callable[[GenResult], None],
        *,
        report: Report = no_report,
        cancel: CancelToken | None = None,
        on_tick: Callable[[], None] | None = None,
        stream_every_s: float = 0.25,
    ) -> int:
        """Generate until `feed` returns None and all sequences finish. Returns the number of results.

        `feed` returns a GenItem, None (no more work) or WAIT (nothing now; asked again shortly).
        `on_tick` runs after every decoding step and every prompt's prefill (lease renewal lives there). On
        cancel, sequences in flight are dropped: their items were never reported as done. A prompt that does
        not fit the context (`refusal`) gets a result with `refused` set at once, and takes no slot.
        """
        try:
            return self._run(feed, sampling, on_result, report=report, cancel=cancel, on_tick=on_tick,
                             stream_every_s=stream_every_s)
        finally:
            # The run's caches are gone with its frame: glibc kept their memory for reuse while it ran
            # (lemcore/blas.py, HEAP_REUSE); hand it back now.
            trim_heap()

    def _run(self, feed: Feed, sampling: Sampling, on_result: Callable[[GenResult], None], *, report: Report,
             cancel: CancelToken | None, on_tick: Callable[[], None] | None, stream_every_s: float) -> int:
        import mlx.core as mx

        sampling.validate()
        if sampling.seed is not None:
            mx.random.seed(sampling.seed)
        slots: dict[int, _Slot] = {}
        finished = 0
        feed_done = False
        featured: int | None = None
        last_stream = 0.0
        # Batch caches built in NumPy where the NumPy step decodes (why: lemcore/generate/cpu/decode.py).
        caches = (batch_caches_in_numpy(sampling.max_tokens, half=self.half_cache) if self._decoder() is not None
                  else nullcontext())
        with cpu_fast_paths(self.model), caches, closing(self._batch_generator(sampling)) as gen:
            while True:
                if cancel is not None:
                    cancel.check()
                waiting = False
                while not feed_done and len(slots) < self.batch_size:
                    item = feed()
                    if item is None:
                        feed_done = True
                        break
                    if item is WAIT:
                        waiting = True
                        break
                    started = time.perf_counter()
                    text, ids = encode_prompt(self.tokenizer, item.messages)
                    refused = self.refusal(len(ids), sampling.max_tokens)
                    if refused:
                        finished += 1
                        on_result(GenResult(key=item.key, text="", prompt_tokens=len(ids), tokens=0,
                                            seconds=time.perf_counter() - started, truncated=False,
                                            prompt_text=text, refused=refused))
                        continue
                    cache = self._prefill(ids, cancel, functools.partial(_report_prefill, report, item.key, len(ids)))
                    # With a penalty, BatchGenerator's token history starts with the prompt, as in mlx-lm's
                    # own generate: the first answer tokens are penalised for the prompt's last ones too.
                    history = [ids[:-1]] if sampling.repetition_penalty != 1.0 else None
                    (uid,) = gen.insert([ids[-1:]], [sampling.max_tokens], caches=[cache], all_tokens=history)
                    slots[uid] = _Slot(item, started, text, len(ids))
                    if on_tick is not None:  # a prefill takes seconds on a CPU: keep the leases fresh
                        on_tick()
                if not slots:
                    if feed_done:
                        break
                    if waiting:
                        if on_tick is not None:
                            on_tick()
                        if cancel is not None:
                            cancel.wait(0.5)
                        else:
                            time.sleep(0.5)
                    continue
                for resp in gen.next_generated():
                    slot = slots.get(resp.uid)
                    if slot is None:
                        continue
                    if resp.finish_reason != "stop":
                        slot.ids.append(resp.token)
                    looped = sampling.stop_loops and resp.finish_reason is None and loop_period(slot.ids) > 0
                    if looped:  # the rest would be more of the loop: free the slot now
                        gen.remove([resp.uid])
                    if resp.finish_reason is not None or looped:
                        _let_go(resp)
                        del slots[resp.uid]
                        finished += 1
                        on_result(GenResult(
                            key=slot.item.key, text=self.tokenizer.decode(slot.ids),
                            prompt_tokens=slot.prompt_tokens, tokens=len(slot.ids),
                            seconds=time.perf_counter() - slot.started,
                            truncated=resp.finish_reason == "length", prompt_text=slot.prompt_text,
                            stopped_loop=looped,
                        ))
                if on_tick is not None:
                    on_tick()
                now = time.perf_counter()
                if featured not in slots:
                    featured = next(iter(slots), None)
                if featured is not None and now - last_stream >= stream_every_s:
                    last_stream = now
                    slot = slots[featured]
                    report(TokenChunk(slot.item.key, self.tokenizer.decode(slot.ids), len(slot.ids)))
        return finished


def generate_one_by_one(model: Any, tokenizer: Any, messages: Messages, sampling: Sampling) -> str:
    """The lab's way (one `mlx_lm.generate` call per prompt): the baseline for tests/perf."""
    import mlx_lm
    from mlx_lm.sample_utils import make_sampler

    text, _ids = encode_prompt(tokenizer, messages)
    return str(mlx_lm.generate(model, tokenizer, text, max_tokens=sampling.max_tokens,
                               sampler=make_sampler(temp=sampling.temperature)))
