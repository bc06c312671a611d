"""The generation engine against mlx-lm's own one-by-one generation, on real (tiny) models and real sandwiches."""

from __future__ import annotations

from pathlib import Path

import pytest

from lemcore.contribute.kernel import build_sandwich, default_kernel_paths, load_axioms, load_kernel_text
from lemcore.generate.engine import GenItem, MLXGenerator, Sampling, encode_prompt, load_mlx_model
from tests.tiny_models import ARCHS, make_tiny_model

QUESTIONS = ("Is it fair to read a partner's messages?", "Should a town put cameras in its parks?",
             "May I share a friend's photo without asking?")


def _stock_greedy_ids(model, tokenizer, messages, max_tokens: int) -> list[int]:
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    _text, ids = encode_prompt(tokenizer, messages)
    out = []
    for token, _ in generate_step(mx.array(ids), model, max_tokens=max_tokens):
        if token in tokenizer.eos_token_ids:
            break
        out.append(int(token))
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_generation_with_our_prefill_matches_mlx_lm_one_by_one(arch: str, tmp_path: Path) -> None:
    # The sandwich is ~3.7K tokens with the tiny tokenizer: several 512-token prefill chunks, a shared
    # prefix, and (gemma) a 32-token sliding window, all through our CPU attention and prefill.
    model, tokenizer = load_mlx_model(make_tiny_model(tmp_path / "m", arch))
    paths = default_kernel_paths()
    axioms, kernel = load_axioms(paths.axioms), load_kernel_text(paths.text)
    items = [GenItem(i, build_sandwich(axioms, kernel, q)) for i, q in enumerate(QUESTIONS)]
    gen = MLXGenerator(model, tokenizer, batch_size=2)  # 3 prompts, 2 slots: one joins mid-run
    assert gen.set_shared_prefix([it.messages for it in items[:2]]) > 16
    results = {}
    feed = iter(items)
    gen.run(lambda: next(feed, None), Sampling(temperature=0, max_tokens=12), lambda r: results.setdefault(r.key, r))

    assert sorted(results) == [0, 1, 2]
    for it in items:
        expected = _stock_greedy_ids(model, tokenizer, it.messages, 12)
        assert results[it.key].text == tokenizer.decode(expected)
        assert results[it.key].tokens == len(expected)
        assert results[it.key].prompt_tokens > 2000


@pytest.mark.parametrize("layers", ["numpy", "mlx"])
def test_a_prompt_that_shares_less_than_the_samples_reuses_what_it_shares(tiny_llama: Path, layers: str) -> None:
    """The shared prefix comes from two sample prompts; one that parts from them earlier (here: the samples both
    go on with "Is it fair to") starts from a copy of the prefix's cache cut back to the tokens it shares, not
    from nothing, and answers exactly as mlx-lm does from scratch."""
    from lemcore.generate.protocol import PrefillProgress

    model, tokenizer = load_mlx_model(tiny_llama)
    paths = default_kernel_paths()
    axioms, kernel = load_axioms(paths.axioms), load_kernel_text(paths.text)
    questions = ("Is it fair to read a partner's messages?", "Is it fair to keep a friend's secret?",
                 "Should a town put cameras in its parks?")
    items = [GenItem(i, build_sandwich(axioms, kernel, q)) for i, q in enumerate(questions)]
    gen = MLXGenerator(model, tokenizer, batch_size=2)
    if layers == "mlx":
        gen._numpy_decoder = None  # as where the NumPy layers do not cover the model
    prefix = gen.set_shared_prefix([it.messages for it in items[:2]])
    ids = [encode_prompt(tokenizer, it.messages)[1] for it in items]
    shared = next(i for i, (a, b) in enumerate(zip(ids[0], ids[2])) if a != b)
    assert 16 <= shared < prefix
    held: dict[int, int] = {}

    def report(event) -> None:
        if isinstance(event, PrefillProgress):
            held.setdefault(event.key, event.done_tokens)  # the first event: what the copied cache held

    results = {}
    feed = iter(items)
    gen.run(lambda: next(feed, None), Sampling(temperature=0, max_tokens=10), lambda r: results.setdefault(r.key, r),
            report=report)
    assert held == {0: prefix, 1: prefix, 2: shared}
    for it in items:
        assert results[it.key].text == tokenizer.decode(_stock_greedy_ids(model, tokenizer, it.messages, 10))
    assert len(gen._prefix_cache[0].keys_and_values()[0][0, 0]) == prefix  # the prefix's own cache is untouched


def test_a_prompts_cache_grows_once_to_hold_the_whole_prompt(tiny_llama: Path) -> None:
    """mlx-lm grows a prompt cache chunk by chunk (a new buffer and a copy each time); ours grows it once, after
    the first chunk, to the whole prompt, with the same keys and values as mlx-lm's own prefill. (The MLX path,
    as for models the NumPy layers do not cover.)"""
    import mlx.core as mx
    import numpy as np
    from mlx_lm.models.cache import make_prompt_cache

    model, tokenizer = load_mlx_model(tiny_llama)
    paths = default_kernel_paths()
    _text, ids = encode_prompt(tokenizer, build_sandwich(load_axioms(paths.axioms), load_kernel_text(paths.text),
                                                         QUESTIONS[0]))
    gen = MLXGenerator(model, tokenizer)
    gen._numpy_decoder = None  # as where the NumPy layers do not cover the model: MLX runs the chunks
    cache = make_prompt_cache(model)
    sizes: list[int] = []
    gen._fill(cache, ids, 0, len(ids) - 1, None, lambda _end: sizes.append(cache[0].keys.shape[2]))
    full = -(-(len(ids) - 1) // 256) * 256
    assert len(sizes) >= 4 and sizes[0] == 512 and set(sizes[1:]) == {full}
    stock = make_prompt_cache(model)
    for at in range(0, len(ids) - 1, 512):  # mlx-lm's way: the cache grows as the chunks come
        model(mx.array(ids[at:min(at + 512, len(ids) - 1)])[None], cache=stock)
    for ours, theirs in zip(cache, stock):
        assert ours.offset == theirs.offset == len(ids) - 1
        for a, b in zip(ours.keys_and_values(), theirs.keys_and_values()):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("tiled", [True, False], ids=["tiled-products", "dot-products"])
def test_numpy_prefill_fills_the_cache_as_mlx_lm_does_and_leaves_the_shared_prefix_alone(tiny_llama: Path,
                                                                                          tiled: bool) -> None:
    """Covered models read prompts with their layers in NumPy (decode.py, `fill`): the same keys and values as
    mlx-lm's own chunked prefill, to float32 rounding; a prompt started from the shared prefix's cache leaves
    that cache as it was (the NumPy layers write in place, so into buffers of the prompt's own). Both ways of
    taking the chunk's products: prefill_products.py's tiles (where the CPU has AVX-512) and decode_products.py's
    dot products (elsewhere)."""
    import copy

    import mlx.core as mx
    import numpy as np
    from mlx_lm.models.cache import make_prompt_cache

    model, tokenizer = load_mlx_model(tiny_llama)
    paths = default_kernel_paths()
    _text, ids = encode_prompt(tokenizer, build_sandwich(load_axioms(paths.axioms), load_kernel_text(paths.text),
                                                         QUESTIONS[0]))
    gen = MLXGenerator(model, tokenizer)
    decoder = gen._decoder()
    assert decoder is not None and decoder.fills(make_prompt_cache(model))
    if tiled and decoder._tiled is None:
        pytest.skip("the tiled kernel runs only where the CPU has AVX-512")
    if not tiled:
        decoder._tiled = None
    calls: list[int] = []
    fill = decoder.fill

    def counted_fill(tokens: list[int], cache: list) -> None:
        calls.append(len(tokens))
        fill(tokens, cache)

    decoder.fill = counted_fill  # type: ignore[method-assign]
    prefix = make_prompt_cache(model)
    gen._fill(prefix, ids, 0, 300, None)
    held = [np.array(k) for c in prefix for k in c.keys_and_values()]
    cache = copy.deepcopy(prefix)
    read: list[int] = []
    gen._fill(cache, ids, 300, len(ids) - 1, None, read.append)
    assert calls[0] == 300 and sum(calls) == len(ids) - 1 and read[-1] == len(ids) - 1
    for was, now in zip(held, (k for c in prefix for k in c.keys_and_values())):
        assert np.array_equal(was, np.asarray(now))  # the shared prefix's cache is untouched
    stock = make_prompt_cache(model)
    for at in (0, 300, *range(812, len(ids) - 1, 512)):  # mlx-lm's layers, the same chunks
        model(mx.array(ids[at:min(at + 512 if at else 300, len(ids) - 1)])[None], cache=stock)
    for ours, theirs in zip(cache, stock):
        assert ours.offset == theirs.offset == len(ids) - 1
        for a, b in zip(ours.keys_and_values(), theirs.keys_and_values()):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


def test_cancel_during_prefill_stops_the_run(tiny_llama: Path) -> None:
    from lemcore.errors import Cancelled
    from lemcore.jobs import CancelToken

    model, tokenizer = load_mlx_model(tiny_llama)
    paths = default_kernel_paths()
    messages = build_sandwich(load_axioms(paths.axioms), load_kernel_text(paths.text), QUESTIONS[0])
    cancel = CancelToken()
    results: list = []

    def feed():
        cancel.cancel("user pressed Stop")
        return GenItem(0, messages)

    with pytest.raises(Cancelled):
        MLXGenerator(model, tokenizer).run(feed, Sampling(max_tokens=8), results.append, cancel=cancel)
    assert results == []


def test_leases_are_renewed_between_prompt_prefills(tiny_llama: Path) -> None:
    # A sandwich's prefill takes seconds on a CPU; filling 16 slots without a tick would let 120 s leases lapse.
    model, tokenizer = load_mlx_model(tiny_llama)
    paths = default_kernel_paths()
    axioms, kernel = load_axioms(paths.axioms), load_kernel_text(paths.text)
    queue = [GenItem(i, build_sandwich(axioms, kernel, q)) for i, q in enumerate(QUESTIONS)]
    events: list[str] = []

    def feed():
        events.append("claim")
        return queue.pop(0) if queue else None

    MLXGenerator(model, tokenizer, batch_size=3).run(feed, Sampling(max_tokens=2), lambda r: events.append("done"),
                                                     on_tick=lambda: events.append("tick"))
    assert events[:6] == ["claim", "tick", "claim", "tick", "claim", "tick"]
    assert events.count("done") == 3


def test_end_of_sequence_from_the_in_model_sampler_ends_the_answer(tiny_llama: Path, monkeypatch) -> None:
    import mlx.core as mx

    import lemcore.generate.engine as generation

    model, tokenizer = load_mlx_model(tiny_llama)
    eos = sorted(tokenizer.eos_token_ids)[0]
    calls: list[int] = []

    def forced(temperature: float, top_p: float = 1.0):
        def sample(logits):
            calls.append(1)  # three ordinary tokens, then end-of-sequence
            return mx.full((logits.shape[0],), eos if len(calls) > 3 else 5, dtype=mx.uint32)
        return sample

    monkeypatch.setattr(generation, "cpu_sampler", forced)
    queue = [GenItem("only", [{"role": "user", "content": "Say three words."}])]
    results: list = []
    MLXGenerator(model, tokenizer).run(lambda: queue.pop() if queue else None, Sampling(max_tokens=50),
                                       results.append)
    assert [(r.tokens, r.truncated) for r in results] == [(3, False)]
    assert results[0].text == tokenizer.decode([5, 5, 5])


def test_multimodal_gemma3_wrapper_prefills_through_its_text_model(tiny_gemma: Path) -> None:
    # The catalog's Gemma 3 models load as mlx-lm's `gemma3` wrapper around a `gemma3_text` model.
    import json

    import mlx.core as mx
    from mlx_lm.models import gemma3

    text_model, tokenizer = load_mlx_model(tiny_gemma)
    config = json.loads((tiny_gemma / "config.json").read_text())
    wrapper = gemma3.Model(gemma3.ModelArgs(model_type="gemma3", text_config=config,
                                            vocab_size=config["vocab_size"]))
    wrapper.language_model = text_model  # the same weights, in the wrapper's structure
    mx.eval(wrapper.parameters())
    gen = MLXGenerator(wrapper, tokenizer)
    assert gen._body is wrapper.language_model.model
    messages = [{"role": "user", "content": QUESTIONS[1]}]
    results: list = []
    queue = [GenItem("q", messages)]
    gen.run(lambda: queue.pop() if queue else None, Sampling(temperature=0, max_tokens=10), results.append)
    assert results[0].text == tokenizer.decode(_stock_greedy_ids(text_model, tokenizer, messages, 10))


def test_a_finished_answers_cache_slices_are_let_go_layer_by_layer() -> None:
    """mlx-lm hands each finished sequence lazy slices of the batch's cache, which keep the batch's old buffers
    alive; the engine drops them one layer at a time (freed then with the GIL free between), and copes with
    responses that carry none."""
    import weakref

    mx = pytest.importorskip("mlx.core")
    from lemcore.generate.engine import _let_go

    class Layer:  # stands in for a KVCache: a weak reference tells when it is gone
        def __init__(self) -> None:
            self.keys = mx.zeros((1, 2, 8, 4))

    class Response:
        def __init__(self, prompt_cache) -> None:
            self.prompt_cache = prompt_cache

    alive: list[weakref.ref] = []
    left_at_each_pop: list[int] = []

    class Layers(list):  # counts the layers still alive each time one is taken off
        def pop(self, *args):
            left_at_each_pop.append(sum(ref() is not None for ref in alive))
            return super().pop(*args)

    response = Response(Layers(Layer() for _ in range(3)))
    alive.extend(weakref.ref(layer) for layer in response.prompt_cache)
    _let_go(response)
    assert response.prompt_cache is None
    assert all(ref() is None for ref in alive)  # nothing else held them: gone
    assert left_at_each_pop == [3, 2, 1]  # one layer at a time, not the whole list at once
    for empty in (Response(None), object()):  # running answers carry None; other objects no such field
        _let_go(empty)
