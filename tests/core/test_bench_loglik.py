"""Log-likelihood scoring: the batched, padded computation against a plain per-example forward on the tiny models,
and TruthfulQA MC1/MC2 (parsing both release layouts, the scoring formulas, `lem bench --suite truthfulqa_mc`)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pytest

from lemcore.benchmarks import store, truthfulqa_mc
from lemcore.benchmarks.run import BenchConfig, SuiteSpec, run_benchmark
from lemcore.benchmarks.score import ScoreConfig, score_responses
from lemcore.benchmarks.suites import BenchItem, load_suite
from lemcore.errors import ConfigError
from lemcore.generate.loglik import LoglikRequest, encode_pair, loglikelihood
from tests.bench_items import TRUTHFUL_MC_ITEMS, write_truthfulqa_mc

CONTEXTS = ["Q: How many days does a leap year have?\nA:",
            "Q: Does counting the chairs in a room change how many there are? " * 4 + "\nA:",  # > sliding window
            "Q: What is 3 times 333?\nA: "]  # trailing space: moved to the continuation
ANSWERS = [" A leap year has 366 days.", " No.",
           " The volunteers met every Saturday morning in the old library on Mill Street, and nobody paid them."]


def _per_example(model: Any, request: LoglikRequest) -> tuple[float, bool]:
    """The reference: one unbatched forward of mlx-lm's model, log_softmax at the continuation positions."""
    import mlx.core as mx

    ids = list(request.context) + list(request.continuation)
    logits = model(mx.array([ids[:-1]]))[0].astype(mx.float32)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    start = len(request.context) - 1
    total = sum(float(logprobs[start + j, t]) for j, t in enumerate(request.continuation))
    greedy = all(int(mx.argmax(logits[start + j])) == t for j, t in enumerate(request.continuation))
    return total, greedy


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma"])
def test_batched_loglikelihood_equals_a_plain_forward(fixture: str, request: pytest.FixtureRequest) -> None:
    from mlx_lm import load

    model, tokenizer = load(str(request.getfixturevalue(fixture)))
    requests = [encode_pair(tokenizer, c, a) for c in CONTEXTS for a in ANSWERS]
    lengths = {len(r.context) + len(r.continuation) for r in requests}
    assert max(lengths) > 40 and len(lengths) > 3  # padding really happens, past gemma's 32-token window
    for batch_size in (1, 4, 9):
        got = loglikelihood(model, requests, batch_size=batch_size, pad_id=0)
        assert [g.tokens for g in got] == [len(r.continuation) for r in requests]
        for r, g in zip(requests, got):
            want, greedy = _per_example(model, r)
            assert g.logprob == pytest.approx(want, rel=1e-4, abs=1e-3)
            assert g.greedy == greedy


def test_encode_pair_splits_the_joint_encoding(tiny_llama: Path) -> None:
    from mlx_lm import load

    _model, tokenizer = load(str(tiny_llama))
    r = encode_pair(tokenizer, "Q: What is 3 times 333?\nA: ", "999")
    whole = tokenizer.encode("Q: What is 3 times 333?\nA: 999")
    assert list(r.context) + list(r.continuation) == whole  # the trailing space went to the continuation
    assert list(r.context) == tokenizer.encode("Q: What is 3 times 333?\nA:")
    with pytest.raises(ValueError, match="non-empty"):
        loglikelihood(None, [LoglikRequest((1,), ())])


# -- TruthfulQA MC ------------------------------------------------------------------------------------------------
def _item(mc1: tuple[list[str], list[int]], mc2: tuple[list[str], list[int]]) -> BenchItem:
    return BenchItem("q", "question?", {"mc1": {"choices": mc1[0], "labels": mc1[1]},
                                        "mc2": {"choices": mc2[0], "labels": mc2[1]}})


def test_mc1_and_mc2_formulas() -> None:
    item = _item((["t", "f1", "f2"], [1, 0, 0]), (["t", "t2", "f1", "f2"], [1, 1, 0, 0]))
    lls = {"t": -3.0, "t2": -5.0, "f1": -2.0, "f2": -7.0}
    s = truthfulqa_mc.score_logliks(item, lls)
    assert s["mc1_correct"] is False and s["mc1_choice"] == "f1"  # a false answer is the most likely
    true_mass = math.exp(-3) + math.exp(-5)
    assert s["mc2"] == pytest.approx(true_mass / (true_mass + math.exp(-2) + math.exp(-7)))
    assert truthfulqa_mc.metric_values(s) == pytest.approx({"mc1": 0.0, "mc2": 100 * s["mc2"]})
    tie = truthfulqa_mc.score_logliks(item, {**lls, "t": -2.0})
    assert tie["mc1_correct"] is True  # equal maxima: the first choice in file order
    far = truthfulqa_mc.score_logliks(item, {"t": -2000.0, "t2": -2001.0, "f1": -2003.0, "f2": -2100.0})
    assert 0.9 < far["mc2"] < 1.0  # very negative log-likelihoods do not underflow to 0/0


def test_both_release_layouts_read_the_same(tmp_path: Path) -> None:
    hub = load_suite("truthfulqa_mc", write_truthfulqa_mc(tmp_path / "mc.jsonl"))
    original = load_suite("truthfulqa_mc", write_truthfulqa_mc(tmp_path / "mc_task.json", original_layout=True))
    assert len(hub.items) == len(TRUTHFUL_MC_ITEMS) == 20
    assert [i.reference for i in hub.items] == [i.reference for i in original.items]
    first = hub.items[0]
    assert first.reference["mc1"]["labels"] == [1, 0, 0, 0] and sum(first.reference["mc2"]["labels"]) == 2
    true, false = TRUTHFUL_MC_ITEMS[0][1], TRUTHFUL_MC_ITEMS[0][2]
    assert truthfulqa_mc.choices(first) == [true[0], *false, true[1]]  # each answer once, MC1's first
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "mc1_targets": {"choices": ["a", "b", "c"], "labels": [1, 1, 0]},
                               "mc2_targets": {"choices": ["a", "b"], "labels": [1, 0]}}) + "\n")
    with pytest.raises(Exception, match="exactly one true answer"):
        load_suite("truthfulqa_mc", bad)
    with pytest.raises(ConfigError, match="log-likelihood"):
        score_responses(ScoreConfig(responses=str(bad), suite="truthfulqa_mc"))


def test_lem_bench_truthfulqa_mc_gives_mc1_mc2_with_intervals_and_no_judge(
        tiny_llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mlx_lm import load

    from lemcore.cli.bench import register

    questions = write_truthfulqa_mc(tmp_path / "truthfulqa_mc.jsonl")
    parser = argparse.ArgumentParser(prog="lem")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", str(tiny_llama), "--suite", f"truthfulqa_mc={questions}",
                              "--run", str(tmp_path / "run"), "--batch-size", "4"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "TruthfulQA multiple choice (MC1, MC2): 20 items, 20 responses" in out
    assert "mc1" in out and "mc2" in out and "95% CI" in out and "nan" not in out.lower()

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    suite = summary["suites"]["truthfulqa_mc"]
    mc1, mc2 = suite["metrics"]["mc1"], suite["metrics"]["mc2"]
    assert mc1["n_items"] == mc2["n_items"] == 20 and mc1["method"].startswith("exact")
    assert mc2["method"].startswith("two-level") and mc2["low"] <= mc2["mean"] <= mc2["high"]
    assert "judge" not in suite and "extraction_methods" not in suite
    run = store.read_run(tmp_path / "run")
    assert run["judges"] == {} and run["samples"] == 3  # samples apply to generation; MC scores each item once
    assert "log-likelihood" in run["sampling"]["truthfulqa_mc"]["method"]
    assert "no chat template" in run["prompt_format"]

    # The stored figures follow from a plain per-example forward of the same model.
    model, tokenizer = load(str(tiny_llama))
    rows = store.latest_rows(tmp_path / "run", "truthfulqa_mc")
    assert sorted(k[1] for k in rows) == [0] * 20
    item = load_suite("truthfulqa_mc", questions).items[3]
    row = rows[(item.id, 0)]
    lls = {c: _per_example(model, encode_pair(tokenizer, truthfulqa_mc.context(item),
                                                truthfulqa_mc.continuation(c)))[0]
           for c in truthfulqa_mc.choices(item)}
    expected = truthfulqa_mc.score_logliks(item, lls)
    assert row["score"]["mc1_correct"] == expected["mc1_correct"] and row["response"] == expected["mc1_choice"]
    assert row["score"]["mc2"] == pytest.approx(expected["mc2"], rel=1e-3)
    values = [truthfulqa_mc.metric_values(r["score"]) for r in rows.values()]
    assert mc1["mean"] == pytest.approx(sum(v["mc1"] for v in values) / 20)
    assert mc2["mean"] == pytest.approx(sum(v["mc2"] for v in values) / 20)

    again = run_benchmark(BenchConfig(model=str(tiny_llama), suites=(SuiteSpec("truthfulqa_mc", str(questions)),),
                                      batch_size=4, run_dir=str(tmp_path / "run")))
    assert (again.generated, again.resumed) == (0, 20)  # resumes like any run
