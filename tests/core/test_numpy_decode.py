"""The NumPy decoding step (lemcore/generate/cpu/decode.py) against MLX's forward pass, step by step, through the
batch cache's life (padding, a sequence leaving, one joining, growth past the buffer), and in the engine."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")
pytest.importorskip("numba")

from mlx_lm.models import llama  # noqa: E402
from mlx_lm.models.cache import BatchKVCache  # noqa: E402

from lemcore.generate.cpu.decode import MAX_ROOM, NumpyDecoder, batch_caches_in_numpy, unsupported  # noqa: E402
from lemcore.generate.cpu.paths import cpu_fast_paths  # noqa: E402

VOCAB = 300


def _model(**overrides) -> llama.Model:
    mx.random.seed(3)
    fields = dict(model_type="llama", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                  num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=VOCAB,
                  rope_theta=10000.0, tie_word_embeddings=True)
    fields.update(overrides)
    model = llama.Model(llama.ModelArgs(**fields))
    mx.eval(model.parameters())
    return model


def _prefilled(model, lengths: list[int], seed: int = 0) -> list[BatchKVCache]:
    """Batch caches holding left-padded random prompts of these lengths, filled by MLX."""
    rng = np.random.default_rng(seed)
    width = max(lengths)
    padding = [width - n for n in lengths]
    tokens = np.zeros((len(lengths), width), np.int32)
    for row, n in enumerate(lengths):
        tokens[row, padding[row]:] = rng.integers(0, VOCAB, n)
    caches = [BatchKVCache(padding) for _ in model.layers]
    model(mx.array(tokens), cache=caches)
    mx.eval([c.state for c in caches])
    return caches


def _step_both(model, decoder, mlx_caches, numpy_caches, tokens) -> float:
    """One decoding step through MLX (with our CPU kernels, as the engine runs it) and through the decoder;
    returns the largest logit difference after checking both caches hold the same keys and values."""
    inputs = mx.array(np.asarray(tokens, np.int32)[:, None])
    assert decoder.covers(inputs, numpy_caches)
    with cpu_fast_paths(model):
        expected = model(inputs, cache=mlx_caches)[:, -1, :]
    got = decoder(inputs, numpy_caches)
    for ours, theirs in zip(numpy_caches, mlx_caches):
        assert ours._idx == theirs._idx
        assert np.asarray(ours.offset).tolist() == np.asarray(theirs.offset).tolist()
        k_ours, v_ours = ours.keys_and_values()
        k_theirs, v_theirs = theirs.keys_and_values()
        np.testing.assert_allclose(np.asarray(k_ours), np.asarray(k_theirs), atol=2e-5)
        np.testing.assert_allclose(np.asarray(v_ours), np.asarray(v_theirs), atol=2e-5)
    return float(np.abs(np.asarray(expected) - got).max())


@pytest.mark.parametrize("tiled", [True, False], ids=["tiled-products", "dot-products"])
@pytest.mark.parametrize("variant", [{}, {"tie_word_embeddings": False},
                                     {"rope_scaling": {"type": "linear", "factor": 2.0}},
                                     {"hidden_size": 80, "num_attention_heads": 10}],
                         ids=["tied-head", "own-head", "linear-rope", "five-heads-per-kv-head"])
def test_steps_match_mlx_through_padding_growth_a_sequence_leaving_and_one_joining(variant: dict, tiled: bool) -> None:
    # Both ways of taking the step's products: prefill_products.py's tiles where the CPU has AVX-512,
    # decode_products.py's dot products elsewhere.
    model = _model(**variant)
    decoder = NumpyDecoder.for_model(model)
    assert decoder is not None
    if tiled and decoder._tiled is None:
        pytest.skip("the tiled kernel runs only where the CPU has AVX-512")
    if not tiled:
        decoder._tiled = None
    rng = np.random.default_rng(1)
    # 250 + 10 steps crosses the cache's 256-position step: the decoder grows the buffer itself.
    mlx_caches = _prefilled(model, [250, 40, 7])
    numpy_caches = copy.deepcopy(mlx_caches)
    for _ in range(10):
        assert _step_both(model, decoder, mlx_caches, numpy_caches, rng.integers(0, VOCAB, 3)) < 1e-4
    assert numpy_caches[0].keys.shape[2] >= numpy_caches[0]._idx > 256

    # The long sequence finishes: BatchGenerator filters the batch, and the cache drops the padding columns.
    for caches in (mlx_caches, numpy_caches):
        for c in caches:
            c.filter([1, 2])
    assert not np.asarray(numpy_caches[0].keys).flags.c_contiguous  # a strided view now: the decoder copies
    for _ in range(3):
        assert _step_both(model, decoder, mlx_caches, numpy_caches, rng.integers(0, VOCAB, 2)) < 1e-4

    # A new sequence joins: mlx-lm merges its cache into the batch, exactly as long as what it holds.
    joining = _prefilled(model, [30], seed=5)
    for caches in (mlx_caches, numpy_caches):
        for c, new in zip(caches, copy.deepcopy(joining)):
            c.extend(new)
    for _ in range(3):
        assert _step_both(model, decoder, mlx_caches, numpy_caches, rng.integers(0, VOCAB, 3)) < 1e-4


def _single(model, length: int, seed: int):
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    model(mx.array(np.random.default_rng(seed).integers(0, VOCAB, (1, length)).astype(np.int32)), cache=cache)
    mx.eval([c.state for c in cache])
    return cache


def _same_batch(ours, theirs) -> None:
    for a, b in zip(ours, theirs):
        assert a._idx == b._idx
        for name in ("offset", "left_padding"):
            assert np.asarray(getattr(a, name)).tolist() == np.asarray(getattr(b, name)).tolist()
        for x, y in zip(a.keys_and_values(), b.keys_and_values()):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert a.keys.shape[2] > a._idx  # room for the next step: no copy at the first decoding step


def test_batches_built_in_numpy_equal_mlx_lms_and_leave_room() -> None:
    from mlx_lm.models.cache import KVCache

    model = _model()
    prompts = [_single(model, n, seed) for seed, n in enumerate((40, 7, 256))]
    stock = [KVCache.merge([p[i] for p in prompts]) for i in range(len(model.layers))]
    with batch_caches_in_numpy():
        ours = [KVCache.merge([p[i] for p in prompts]) for i in range(len(model.layers))]
    assert ours[0].keys.shape[2] == 512 and stock[0].keys.shape[2] == 256
    _same_batch(ours, stock)
    # Ours consumes the prompts' caches (their memory goes to the next layer's batch buffers).
    assert all(c.keys is None and c.values is None for p in prompts for c in p)

    joining = [_single(model, n, seed) for seed, n in ((7, 300), (8, 3))]
    for side, patched in ((stock, False), (ours, True)):
        new = [KVCache.merge([p[i] for p in joining]) for i in range(len(model.layers))]
        if patched:
            with batch_caches_in_numpy():
                for c, n in zip(side, new):
                    c.extend(n)
        else:
            for c, n in zip(side, new):
                c.extend(n)
    _same_batch(ours, stock)
    assert ours[0].keys.shape[0] == 5 and ours[0]._idx == 300


def test_half_batch_caches_hold_the_prompts_rounded_and_decode_within_a_stated_tolerance() -> None:
    """float16 batch caches (the engine's default where the NumPy step decodes): the merged keys and values are
    the prompts' float32 ones rounded to float16, and each step's logits stay within 2e-3 of MLX's float32
    decoding (logits up to ~7 here; float32 caches agree within 1e-4), through growth, a filter and a join."""
    from mlx_lm.models.cache import KVCache

    model = _model()
    decoder = NumpyDecoder.for_model(model)
    stock = [KVCache.merge([p[i] for p in [_single(model, n, seed) for seed, n in enumerate((40, 7, 250))]])
             for i in range(len(model.layers))]
    with batch_caches_in_numpy(half=True):
        ours = [KVCache.merge([p[i] for p in [_single(model, n, seed) for seed, n in enumerate((40, 7, 250))]])
                for i in range(len(model.layers))]
    assert ours[0].keys.dtype == ours[0].values.dtype == mx.float16
    for a, b in zip(ours, stock):
        for x, y in zip(a.keys_and_values(), b.keys_and_values()):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y).astype(np.float16))
    rng = np.random.default_rng(2)

    def steps(n: int, batch: int) -> None:
        for _ in range(n):
            inputs = mx.array(rng.integers(0, VOCAB, (batch, 1)).astype(np.int32))
            assert decoder.covers(inputs, ours)
            with cpu_fast_paths(model):
                expected = np.asarray(model(inputs, cache=stock)[:, -1, :])
            assert np.abs(decoder(inputs, ours) - expected).max() < 2e-3

    steps(8, 3)  # 250 + 8 crosses the 256-position step: the buffer grows, still float16
    assert ours[0].keys.dtype == mx.float16 and ours[0].keys.shape[2] > 256
    for caches in (stock, ours):
        for c in caches:
            c.filter([0, 2])
    steps(3, 2)
    joining = [_single(model, 30, 5)]
    with batch_caches_in_numpy(half=True):
        for side in (stock, ours):
            for c, new in zip(side, [KVCache.merge([p[i] for p in copy.deepcopy(joining)])
                                     for i in range(len(model.layers))]):
                c.extend(new)
    assert ours[0].keys.dtype == mx.float16 and ours[0].keys.shape[0] == 3
    steps(3, 3)


def test_batches_get_room_for_whole_answers_up_to_a_limit() -> None:
    """Built with room for the answers, a batch never grows while it decodes (each growth copied the whole
    cache); the room is capped, beyond it the cache grows in mlx-lm's steps as before."""
    from mlx_lm.models.cache import KVCache

    model = _model()
    prompts = [_single(model, n, seed) for seed, n in enumerate((40, 7, 256))]
    stock = [KVCache.merge([p[i] for p in prompts]) for i in range(len(model.layers))]
    with batch_caches_in_numpy(300):
        ours = [KVCache.merge([p[i] for p in prompts]) for i in range(len(model.layers))]
    assert ours[0].keys.shape[2] == ours[0].values.shape[2] == 768  # 256 + 300, in steps of 256
    _same_batch(ours, stock)
    joining = [_single(model, 500, 9)]
    with batch_caches_in_numpy(300):
        for c, n in zip(ours, [KVCache.merge([p[i] for p in joining]) for i in range(len(model.layers))]):
            c.extend(n)
    assert ours[0]._idx == 500 and ours[0].keys.shape[2] == 1024  # 500 + 300
    again = [_single(model, n, seed) for seed, n in enumerate((40, 7, 256))]  # merging consumed the first ones
    with batch_caches_in_numpy(50_000):
        capped = [KVCache.merge([p[i] for p in again]) for i in range(len(model.layers))]
    assert capped[0].keys.shape[2] == 256 + MAX_ROOM


def test_mlx_lms_batch_functions_are_back_after_the_block() -> None:
    from mlx_lm.models.cache import BatchKVCache

    merge, extend = BatchKVCache.__dict__["merge"], BatchKVCache.__dict__["extend"]
    with pytest.raises(RuntimeError), batch_caches_in_numpy():
        assert BatchKVCache.__dict__["extend"] is not extend
        raise RuntimeError("engine failed")
    assert BatchKVCache.__dict__["merge"] is merge and BatchKVCache.__dict__["extend"] is extend


def test_prompt_chunks_and_other_calls_are_left_to_mlx() -> None:
    model = _model()
    decoder = NumpyDecoder.for_model(model)
    caches = _prefilled(model, [12, 9])
    assert not decoder.covers(mx.array(np.zeros((2, 4), np.int32)), caches)  # several tokens: a prompt chunk
    assert not decoder.covers(mx.array(np.zeros((2, 1), np.int32)), [BatchKVCache([0, 0]) for _ in caches])
    assert not decoder.covers(mx.array(np.zeros((2, 1), np.int32)), caches[:1])


def test_models_it_does_not_cover_say_why() -> None:
    import mlx.nn as nn

    assert unsupported(_model()) == ""
    assert "biases" in unsupported(_model(attention_bias=True))
    quantized = _model()
    nn.quantize(quantized, group_size=32, bits=4)
    assert "quantized" in unsupported(quantized)
    half = _model()
    half.set_dtype(mx.float16)
    assert unsupported(half) == "weights not float32"
    scaled = _model(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    assert unsupported(scaled) == "a RoPE variant"
    for model in (quantized, half, scaled):
        assert NumpyDecoder.for_model(model) is None


def test_the_engine_decodes_with_it_and_matches_mlx_lm_greedy(tiny_llama: Path, monkeypatch) -> None:
    from lemcore.generate import engine
    from lemcore.generate.engine import GenItem, MLXGenerator, Sampling, load_mlx_model
    from tests.core.test_generation import _stock_greedy_ids

    calls = []
    real_call = NumpyDecoder.__call__
    monkeypatch.setattr(NumpyDecoder, "__call__", lambda self, inputs, cache: calls.append(1) or
                        real_call(self, inputs, cache))
    rooms = []
    real_block = engine.batch_caches_in_numpy
    monkeypatch.setattr(engine, "batch_caches_in_numpy",
                        lambda room, half: rooms.append(room) or real_block(room, half=half))
    model, tokenizer = load_mlx_model(tiny_llama)
    items = [GenItem(i, [{"role": "user", "content": q}]) for i, q in
             enumerate(("Name three birds.", "Why keep a promise?", "What is a fair price?"))]
    gen = MLXGenerator(model, tokenizer, batch_size=2)  # three prompts, two slots: one joins mid-run
    gen.half_cache = False  # float32 caches: equal to mlx-lm to float32 rounding (float16: the test below)
    results = {}
    feed = iter(items)
    gen.run(lambda: next(feed, None), Sampling(temperature=0, max_tokens=10), lambda r: results.setdefault(r.key, r))
    assert len(calls) >= 10  # the decoding steps ran through the NumPy step
    assert rooms == [10]  # batch caches are built with room for whole answers
    for it in items:
        assert results[it.key].text == tokenizer.decode(_stock_greedy_ids(model, tokenizer, it.messages, 10))


def test_the_engine_decodes_on_half_caches_by_default(tiny_llama: Path, monkeypatch) -> None:
    from lemcore.generate.engine import GenItem, MLXGenerator, Sampling, load_mlx_model

    dtypes = set()
    real_call = NumpyDecoder.__call__
    monkeypatch.setattr(NumpyDecoder, "__call__", lambda self, inputs, cache: dtypes.add(cache[0].keys.dtype) or
                        real_call(self, inputs, cache))
    model, tokenizer = load_mlx_model(tiny_llama)
    gen = MLXGenerator(model, tokenizer, batch_size=2)
    assert gen.half_cache
    results = []
    feed = iter([GenItem(i, [{"role": "user", "content": f"Question {i}?"}]) for i in range(3)])
    gen.run(lambda: next(feed, None), Sampling(temperature=0, max_tokens=6), results.append)
    assert dtypes == {mx.float16} and len(results) == 3 and all(r.tokens > 0 for r in results)


@pytest.mark.parametrize("rows, inner, batch", [(16, 64, 16), (13, 37, 7), (3, 5, 2), (8, 9, 1), (97, 576, 15),
                                                 (30, 576, 250), (9, 1536, 47)])
def test_products_equal_numpys_including_leftover_rows(rows: int, inner: int, batch: int) -> None:
    # Heights and batches that are not multiples of the kernel's 4 x 4 blocks go through its leftover loops; the
    # last two are prompt chunks split into blocks of activation rows (112 and 40 rows here), the last block short.
    from lemcore.generate.cpu.decode_products import products

    rng = np.random.default_rng(rows)
    weights = rng.standard_normal((rows, inner), dtype=np.float32)
    x = rng.standard_normal((batch, inner), dtype=np.float32)
    got = products(x, weights)
    assert got.shape == (batch, rows)
    np.testing.assert_allclose(got, x @ weights.T, rtol=1e-5, atol=1e-4)


def test_the_prefill_norm_equals_mlxs() -> None:
    from lemcore.generate.cpu.prefill_kernels import rms_norm

    rng = np.random.default_rng(5)
    x = rng.standard_normal((37, 576), dtype=np.float32) * 4
    weight = rng.standard_normal(576, dtype=np.float32)
    expected = mx.fast.rms_norm(mx.array(x), mx.array(weight), 1e-5)
    before = x.copy()
    got = rms_norm(x, weight, np.float32(1e-5))
    np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-5, atol=1e-5)
    assert np.array_equal(x, before)  # a new array; the activations are left as they are


@pytest.mark.parametrize("dims", [64, 32], ids=["whole-head", "partial-rotary"])
def test_the_prefill_rope_equals_mlxs_for_keys_into_the_cache_and_for_grouped_query_rows(dims: int) -> None:
    import mlx.nn as nn

    from lemcore.generate.cpu.prefill_kernels import rope_into

    heads, kv_heads, dim, length, at = 6, 2, 64, 11, 40
    group = heads // kv_heads
    rope = nn.RoPE(dims, base=10000.0)
    angles = np.multiply.outer(np.arange(at, at + length), 10000.0 ** (-np.arange(dims // 2) / (dims // 2)))
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)  # (length, dims / 2)
    rng = np.random.default_rng(1)
    projected = rng.standard_normal((length, heads * dim), dtype=np.float32)
    # mlx-lm's layout: (batch, heads, length, dim), the chunk's positions from `at`.
    expected = np.asarray(rope(mx.array(projected.reshape(1, length, heads, dim).transpose(0, 2, 1, 3)), offset=at))[0]

    cache = np.full((heads, 64, dim), 7.0, np.float32)  # keys: group 1, written at positions at..at+length
    rope_into(projected, cos, sin, np.float32(1.0), cache, 1, at)
    np.testing.assert_allclose(cache[:, at:at + length], expected, rtol=1e-5, atol=2e-5)
    assert (cache[:, :at] == 7.0).all() and (cache[:, at + length:] == 7.0).all()  # nothing else written

    rows = np.empty((kv_heads, group * length, dim), np.float32)  # queries: a kv head's group, scaled
    rope_into(projected, cos, sin, np.float32(0.5), rows, group, 0)
    np.testing.assert_allclose(rows.reshape(heads, length, dim), expected * 0.5, rtol=1e-5, atol=2e-5)


def test_a_prompt_chunk_past_the_caches_room_is_refused_not_written() -> None:
    from mlx_lm.models.cache import make_prompt_cache

    model = _model()
    decoder = NumpyDecoder(model)
    cache = make_prompt_cache(model)
    decoder.own_buffers(cache, 10)  # room rounded up to mlx-lm's 256-position step
    room = np.asarray(cache[0].keys).shape[2]
    before = np.asarray(cache[0].keys).copy()
    with pytest.raises(ValueError, match="own_buffers"):
        decoder.fill(list(range(room + 1)), cache)
    assert np.array_equal(np.asarray(cache[0].keys), before) and cache[0].offset == 0
    decoder.fill(list(range(room)), cache)  # exactly the room: fine
    assert cache[0].offset == room


def test_warming_the_kernels_loads_numba_or_says_it_could_not(monkeypatch) -> None:
    import sys

    from lemcore.generate.cpu.decode import warm_kernels

    assert warm_kernels() is True
    assert "lemcore.generate.cpu.decode_products" in sys.modules
    assert "lemcore.generate.cpu.softmax_rows" in sys.modules
    assert "lemcore.generate.cpu.prefill_kernels" in sys.modules
    assert "lemcore.generate.cpu.sample_rows" in sys.modules
    assert "lemcore.generate.cpu.prefill_products" in sys.modules
    import lemcore.generate.cpu as package

    kernels = ("decode_attention", "decode_products", "prefill_kernels", "prefill_products", "sample_rows",
               "softmax_rows")
    for name in kernels:  # as if never imported
        monkeypatch.delitem(sys.modules, f"lemcore.generate.cpu.{name}")
        monkeypatch.delattr(package, name)
    monkeypatch.setitem(sys.modules, "numba", None)  # as where Numba is not installed: ImportError
    assert warm_kernels() is False
