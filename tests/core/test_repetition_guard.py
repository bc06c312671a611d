"""The repetition guard: mlx-lm's repetition penalty on both sampling paths, and the loop stop, on real (tiny)
models, on real answers of the built-in model (tests/fixtures/quality_answers.jsonl) and through the gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lemcore.generate.engine import GenItem, GenResult, MLXGenerator, Sampling, encode_prompt, load_mlx_model
from lemcore.generate.sampling import LOOP_MIN_TOKENS, loop_period, penalize_repeats, stack_histories
from lemcore.quality import REPETITION, QualityGate

QUESTIONS = ("Is it fair to read a partner's messages?", "Should a town put cameras in its parks?",
             "May I share a friend's photo without asking?")
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "quality_answers.jsonl"


def _generate(model, tokenizer, sampling: Sampling, *, batch_size: int = 2) -> dict[int, GenResult]:
    """The three questions through the engine, two slots: the third joins when a slot frees up."""
    items = iter([GenItem(i, [{"role": "user", "content": q}]) for i, q in enumerate(QUESTIONS)])
    results: dict[int, GenResult] = {}
    MLXGenerator(model, tokenizer, batch_size=batch_size).run(lambda: next(items, None), sampling,
                                                              lambda r: results.setdefault(r.key, r))
    assert sorted(results) == [0, 1, 2]
    return results


def _stock_ids(model, tokenizer, question: str, max_tokens: int, processors=None) -> list[int]:
    """mlx-lm's own one-by-one greedy generation (its processors see the prompt and the answer so far)."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    _text, ids = encode_prompt(tokenizer, [{"role": "user", "content": question}])
    out = []
    for token, _ in generate_step(mx.array(ids), model, max_tokens=max_tokens, logits_processors=processors):
        if token in tokenizer.eos_token_ids:
            break
        out.append(int(token))
    return out


# -- the penalty ------------------------------------------------------------------------------------------


def test_the_penalty_divides_positive_and_multiplies_negative_logits_of_recent_tokens_once() -> None:
    import mlx.core as mx

    logits = mx.array([[2.0, -1.0, 0.5, 3.0], [1.0, 1.0, -4.0, 0.0]])
    history = stack_histories([mx.array([0, 1, 1]), mx.array([2])])  # the second is padded with its own token
    assert history.tolist() == [[0, 1, 1], [2, 2, 2]]
    assert penalize_repeats(logits, history, 2.0).tolist() == [[1.0, -2.0, 0.5, 3.0], [1.0, 1.0, -8.0, 0.0]]


def test_the_batched_penalty_equals_mlx_lms_processor_row_by_row() -> None:
    import mlx.core as mx
    from mlx_lm.sample_utils import make_repetition_penalty

    mx.random.seed(5)
    logits = mx.random.normal((3, 300)) * 4
    histories = [mx.random.randint(0, 300, (n,)) for n in (40, 7, 20)]  # repeats included, by chance and by length
    stock = make_repetition_penalty(1.3, 20)
    expected = mx.concatenate([stock(h, logits[i:i + 1]) for i, h in enumerate(histories)])
    ours = penalize_repeats(logits, stack_histories([h[-20:] for h in histories]), 1.3)
    assert mx.array_equal(ours, expected).item()
    assert not mx.array_equal(ours, logits).item()


def test_penalty_one_gives_exactly_the_tokens_of_plain_greedy(tiny_llama: Path) -> None:
    model, tokenizer = load_mlx_model(tiny_llama)
    results = _generate(model, tokenizer, Sampling(temperature=0, max_tokens=40, repetition_penalty=1.0))
    for key, question in enumerate(QUESTIONS):
        assert results[key].text == tokenizer.decode(_stock_ids(model, tokenizer, question, 40))
        assert not results[key].stopped_loop


def test_the_cpu_path_and_mlx_lms_path_give_the_same_penalised_tokens(tiny_llama: Path, monkeypatch) -> None:
    from mlx_lm.sample_utils import make_logits_processors

    import lemcore.generate.engine as engine

    model, tokenizer = load_mlx_model(tiny_llama)
    penalised = Sampling(temperature=0, max_tokens=60, repetition_penalty=1.5, repetition_context=20)
    ours = _generate(model, tokenizer, penalised)  # the CPU path: sampled inside the model call
    plain = _generate(model, tokenizer, Sampling(temperature=0, max_tokens=60))
    monkeypatch.setattr(engine, "cpu_sampler", lambda *a: None)  # as on a GPU: mlx-lm's sampler and processor
    theirs = _generate(model, tokenizer, penalised)

    processors = make_logits_processors(repetition_penalty=1.5, repetition_context_size=20)
    for key, question in enumerate(QUESTIONS):
        stock = tokenizer.decode(_stock_ids(model, tokenizer, question, 60, processors))
        assert ours[key].text == theirs[key].text == stock
    assert any(ours[k].text != plain[k].text for k in ours), "the penalty changed nothing"


def test_a_penalty_outside_its_range_is_refused() -> None:
    from lemcore.errors import ConfigError

    for bad in (Sampling(repetition_penalty=0.9), Sampling(repetition_penalty=3.5), Sampling(repetition_context=0)):
        with pytest.raises(ConfigError, match="repetition"):
            bad.validate()
    Sampling(repetition_penalty=1.0).validate()  # off: the lab's sampling


# -- the loop stop -------------------------------------------------------------------------------------------


def test_loop_period_finds_the_loop_an_answer_ends_in() -> None:
    prose = list(range(100, 180))  # 80 tokens, none repeated
    sentence = list(range(7))
    assert loop_period(prose) == 0
    assert loop_period(prose + [5] * LOOP_MIN_TOKENS) == 0  # one token and 31 repeats of it
    assert loop_period(prose + [5] * (LOOP_MIN_TOKENS + 1)) == 1
    assert loop_period(prose + sentence * 5) == 0  # 28 tokens repeat the 7 before them: not yet
    assert loop_period(prose + sentence * 6) == 7  # 35 do
    assert loop_period(prose + sentence * 6 + [1, 2]) == 0  # the loop was left: nothing to stop
    assert loop_period(prose + sentence * 6 + [0, 1]) == 7  # ... or goes on
    paragraph = list(range(200, 260))
    assert loop_period(prose + paragraph + paragraph[:-1]) == 0  # a whole period must come round again
    assert loop_period(prose + paragraph * 2) == 60


def test_a_looping_answer_is_ended_early_and_says_so(tiny_llama: Path) -> None:
    # Greedy decoding on the tiny random model falls into a one-token loop on the third question.
    model, tokenizer = load_mlx_model(tiny_llama)
    free = _generate(model, tokenizer, Sampling(temperature=0, max_tokens=200))
    guarded = _generate(model, tokenizer, Sampling(temperature=0, max_tokens=200, stop_loops=True))

    assert all(r.truncated and not r.stopped_loop and r.tokens == 200 for r in free.values())
    looped = [k for k, r in guarded.items() if r.stopped_loop]
    assert looped == [2]
    stopped = guarded[2]
    assert LOOP_MIN_TOKENS < stopped.tokens < 200 and not stopped.truncated
    assert free[2].text.startswith(stopped.text)  # the same answer, ended where the loop showed
    for key in (0, 1):  # the other answers, in the same batch, are untouched by the removal
        assert guarded[key].text == free[key].text and guarded[key].tokens == 200


def test_the_gate_refuses_a_stopped_loop_without_finding_it_again() -> None:
    gate = QualityGate(["Reason from the axioms; do not cite them."])
    answer = ("Start with whose information this is. If it belongs to someone else, ask them before you pass it on, "
              "and tell them plainly why you want to.")
    assert gate.check("May I share it?", answer).passed
    verdict = gate.check("May I share it?", answer, looped=True)
    assert verdict.reasons == (REPETITION,) and verdict.measures["loop_stopped"] == 1
    assert gate.check("May I share it?", "Yes, yes.", looped=True).reasons == ("empty", REPETITION)


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    from lemcore.models.embedded import ensure_embedded_model

    return load_tokenizer(ensure_embedded_model())


def test_on_real_answers_the_stop_ends_loops_only(smollm2_tokenizer) -> None:
    """Each fixture answer of the built-in model, token by token as it was written: the stop would have ended
    most of the hand-labelled loops, early, never a good or poor answer, and only answers the gate refuses."""
    gate = QualityGate(refuse_truncated=False)
    rows = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    stopped_at: dict[str, int] = {}
    for row in rows:
        ids = smollm2_tokenizer.encode(row["response"], add_special_tokens=False)
        at = next((n for n in range(1, len(ids) + 1) if loop_period(ids[:n])), 0)
        if at:
            stopped_at[row["id"]] = at
            assert REPETITION in gate.check(row["prompt"], row["response"]).reasons, row["id"]
    loops = {r["id"] for r in rows if "loop" in r["labels"]}
    assert set(stopped_at) <= loops
    # As measured: 17 of the 19 loops, after 88 tokens on average (of 200); the two missed vary as they go.
    assert len(stopped_at) >= 16, sorted(loops - set(stopped_at))
    assert sum(stopped_at.values()) / len(stopped_at) < 110


def test_contribution_runs_with_the_guard_and_everything_else_without() -> None:
    from lemcore.contribute.engine import ContributeConfig
    from lemcore.contribute.setup import ContributionOptions, guarded_sampling, options_from_settings
    from lemcore.settings import Settings

    app = options_from_settings(Settings(worker_name="vol", max_tokens=64)).sampling
    assert app == guarded_sampling(max_tokens=64) == ContributionOptions(sampling=guarded_sampling(max_tokens=64)).sampling
    assert app.repetition_penalty > 1 and app.stop_loops and (app.temperature, app.top_p) == (0.3, 1.0)
    assert ContributionOptions().sampling == guarded_sampling()
    # Benchmarks, judges and a bare engine config keep the lab's sampling: their numbers stay comparable.
    for plain in (Sampling(), ContributeConfig().sampling):
        assert (plain.repetition_penalty, plain.stop_loops) == (1.0, False)
    lab = guarded_sampling(repetition_penalty=1.0, stop_loops=False)  # what --repetition-penalty 1 --no-loop-stop give
    assert (lab.temperature, lab.top_p, lab.max_tokens, lab.repetition_penalty, lab.stop_loops) == (0.3, 1.0, 512, 1.0,
                                                                                                 False)
