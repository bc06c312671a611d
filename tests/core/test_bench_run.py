"""The run engine end to end on real models: a tiny random model and SmolLM2 through our 10-item GSM8K file,
with the stored provenance checked; resume, cancel, changed settings, base + adapter, judged suites."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

import pytest

from lemcore import folders
from lemcore.benchmarks import store
from lemcore.benchmarks.compare import compare_runs, format_comparison
from lemcore.benchmarks.events import BenchFinished, BenchProgress, BenchRow, BenchStarted, JudgeRow
from lemcore.benchmarks.judge import JudgeConfig
from lemcore.benchmarks.run import BenchConfig, SuiteSpec, run_benchmark
from lemcore.benchmarks.score import judge_run
from lemcore.benchmarks.store import list_runs
from lemcore.errors import Cancelled, ConfigError
from lemcore.jobs import CancelToken
from tests.bench_items import write_do_not_answer, write_gsm8k, write_truthfulqa
from tests.tiny_models import make_tiny_model


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_prompts_as_sent(model_dir: Path, rows: list[dict[str, Any]]) -> None:
    from mlx_lm.utils import load_tokenizer

    tok = load_tokenizer(model_dir)
    for row in rows:
        expected = tok.apply_chat_template(row["messages"], tokenize=False, add_generation_prompt=True)
        assert row["prompt_text"] == expected
        assert row["question"] in row["prompt_text"] and "'#### '" in row["prompt_text"]
        assert row["prompt_tokens"] == len(tok.encode(expected, add_special_tokens=False))


def test_tiny_model_gsm8k_end_to_end_with_provenance(tiny_llama: Path, tmp_path: Path) -> None:
    import mlx.core as mx

    questions = write_gsm8k(tmp_path / "gsm8k.jsonl")
    config = BenchConfig(model=str(tiny_llama), suites=(SuiteSpec("gsm8k", str(questions)),), samples=2,
                         seed=7, max_tokens=12, batch_size=8, run_dir=str(tmp_path / "run"))
    events: list[Any] = []
    result = run_benchmark(config, report=events.append)

    started = [e for e in events if isinstance(e, BenchStarted)]
    assert started[0].total == 20 and started[0].resumed == 0
    assert len([e for e in events if isinstance(e, BenchRow)]) == 20 == result.generated
    assert isinstance(events[-1], BenchFinished) and events[-1].run_dir == result.run_dir

    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["model"]["files"]["model.safetensors"] == _sha256(tiny_llama / "model.safetensors")
    assert run["model"]["files"]["tokenizer.json"] == _sha256(tiny_llama / "tokenizer.json")
    assert len(run["model"]["sha256"]) == 64 and run["adapter"] is None
    assert run["libraries"]["mlx"] == mx.__version__ and run["libraries"]["mlx-lm"]
    assert run["sampling"]["gsm8k"]["temperature"] == 0.3 and run["sampling"]["gsm8k"]["max_tokens"] == 12
    assert isinstance(run["sampling"]["gsm8k"]["seed"], int) and run["samples"] == 2 and run["seed"] == 7
    suite = run["suites"]["gsm8k"]
    assert suite["sha256"] == _sha256(questions) and suite["item_ids"][0] == "GSM8K_001"
    assert "'#### '" in suite["instruction"]
    session = run["sessions"][0]
    assert session["outcome"] == "finished" and session["batch_size"] == 8
    assert session["suites"]["gsm8k"]["tokens"] > 0 and session["suites"]["gsm8k"]["seconds"] > 0

    rows = store.read_jsonl(result.run_dir / "gsm8k.jsonl")
    assert sorted((r["id"], r["sample"]) for r in rows) == sorted(
        (f"GSM8K_{n:03d}", k) for n in range(1, 11) for k in range(2))
    _check_prompts_as_sent(tiny_llama, rows)
    for row in rows:
        assert row["score"]["expected"] == row["reference"]["expected"]
        assert {"extracted", "method", "correct", "lab_extracted"} <= set(row["score"])
        assert row["tokens"] <= 12 and row["seconds"] >= 0 and isinstance(row["truncated"], bool)

    summary = json.loads((result.run_dir / "summary.json").read_text())
    acc = summary["suites"]["gsm8k"]["metrics"]["accuracy"]
    assert (acc["n_items"], acc["n_values"]) == (10, 20) and acc["low"] <= acc["mean"] <= acc["high"]
    assert summary["suites"]["gsm8k"]["rows"] == 20

    # Resume: nothing to do, then only the lines lost in a "crash" (the last one cut mid-way).
    again = run_benchmark(config)
    assert (again.generated, again.resumed) == (0, 20)
    path = result.run_dir / "gsm8k.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:16]) + "\n" + lines[16][:40])
    third = run_benchmark(config)
    assert (third.generated, third.resumed) == (4, 16)
    assert len(store.latest_rows(result.run_dir, "gsm8k")) == 20

    # Changed settings never write into the same folder.
    with pytest.raises(ConfigError, match="different temperature"):
        run_benchmark(BenchConfig(**{**config.__dict__, "temperature": 0.7}))


def test_cancel_keeps_finished_rows_and_resumes(tiny_gemma: Path, tmp_path: Path) -> None:
    questions = write_gsm8k(tmp_path / "gsm8k.jsonl", count=6)
    config = BenchConfig(model=str(tiny_gemma), suites=(SuiteSpec("gsm8k", str(questions)),), samples=1,
                         max_tokens=8, batch_size=2, run_dir=str(tmp_path / "run"))
    token = CancelToken()

    def report(event: Any) -> None:
        if isinstance(event, BenchRow):
            token.cancel("test")

    with pytest.raises(Cancelled):
        run_benchmark(config, report=report, cancel=token)
    run = store.read_run(tmp_path / "run")
    assert run["sessions"][-1]["outcome"] == "cancelled"
    kept = len(store.latest_rows(tmp_path / "run", "gsm8k"))
    assert 1 <= kept < 6
    assert run_benchmark(config).generated == 6 - kept


class _FrozenClock(datetime):
    """datetime whose now() is always the same second: runs started "at once", deterministically."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> _FrozenClock:
        return cls(2026, 3, 4, 5, 6, 7, tzinfo=tz)


def test_runs_started_in_the_same_second_get_their_own_folders(tiny_llama: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Run folders are named to the second; a second run in the same second must not resume the first."""
    monkeypatch.setattr(folders, "datetime", _FrozenClock)
    questions = write_gsm8k(tmp_path / "gsm8k.jsonl", count=3)
    config = BenchConfig(model=str(tiny_llama), suites=(SuiteSpec("gsm8k", str(questions)),), samples=1,
                         max_tokens=4)
    first, second = run_benchmark(config), run_benchmark(config)
    assert first.run_dir.parent == second.run_dir.parent == tmp_path / "data" / "benchmarks"
    assert (first.run_dir.name, second.run_dir.name) == (f"20260304-050607-{tiny_llama.name}",
                                                         f"20260304-050607-{tiny_llama.name}-2")
    assert (first.generated, first.resumed) == (second.generated, second.resumed) == (3, 0)
    assert len(list_runs()) == 2
    # Only a folder asked for explicitly resumes (as `lem bench --run <folder>` does).
    again = run_benchmark(BenchConfig(**{**config.__dict__, "run_dir": str(first.run_dir)}))
    assert (again.run_dir, again.generated, again.resumed) == (first.run_dir, 0, 3)
    assert len(store.read_run(first.run_dir)["sessions"]) == 2 and len(list_runs()) == 2


def _make_adapter(model_dir: Path, dest: Path) -> Path:
    """A small LoRA adapter with non-zero weights, saved as mlx-lm saves one."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    lora = {"rank": 4, "scale": 20.0, "dropout": 0.0}
    model, _ = load(str(model_dir))
    linear_to_lora_layers(model, 2, lora)
    mx.random.seed(1)
    weights = {k: (mx.random.normal(v.shape) * 0.2 if k.endswith("lora_b") else v)
               for k, v in tree_flatten(model.parameters()) if k.endswith(("lora_a", "lora_b"))}
    dest.mkdir(parents=True)
    mx.save_safetensors(str(dest / "adapters.safetensors"), weights)
    (dest / "adapter_config.json").write_text(json.dumps(
        {"fine_tune_type": "lora", "num_layers": 2, "lora_parameters": lora, "model": str(model_dir)}))
    return dest


def test_base_plus_adapter_is_recorded_and_applied(tiny_llama: Path, tmp_path: Path) -> None:
    adapter = _make_adapter(tiny_llama, tmp_path / "adapter")
    questions = write_gsm8k(tmp_path / "gsm8k.jsonl", count=3)
    common = {"model": str(tiny_llama), "suites": (SuiteSpec("gsm8k", str(questions)),), "samples": 1,
              "temperature": 0.0, "max_tokens": 6}
    base = run_benchmark(BenchConfig(**common, run_dir=str(tmp_path / "base")))
    tuned = run_benchmark(BenchConfig(**common, adapter=str(adapter), run_dir=str(tmp_path / "tuned")))
    run = store.read_run(tuned.run_dir)
    assert run["adapter"]["files"]["adapters.safetensors"] == _sha256(adapter / "adapters.safetensors")
    assert run["label"] == f"{tiny_llama.name}+adapter"
    base_rows = store.latest_rows(base.run_dir, "gsm8k")
    tuned_rows = store.latest_rows(tuned.run_dir, "gsm8k")
    assert all(base_rows[k]["prompt_text"] == tuned_rows[k]["prompt_text"] for k in base_rows)
    assert any(base_rows[k]["response"] != tuned_rows[k]["response"] for k in base_rows)
    warm = run_benchmark(BenchConfig(**{**common, "temperature": 0.5}, run_dir=str(tmp_path / "warm")))
    text = format_comparison(compare_runs(base.run_dir, tuned.run_dir, n_boot=500))
    assert "GSM8K (%)" in text and "different sampling" not in text
    assert "used different sampling settings" in format_comparison(compare_runs(base.run_dir, warm.run_dir))
    assert {r["label"] for r in list_runs(tmp_path)} == {tiny_llama.name, f"{tiny_llama.name}+adapter"}
    with pytest.raises(ConfigError, match="different adapter_sha256"):
        run_benchmark(BenchConfig(**common, run_dir=str(tmp_path / "base"), adapter=str(adapter)))
    with pytest.raises(ConfigError, match="holds no adapter"):
        run_benchmark(BenchConfig(**common, adapter=str(tmp_path)))


class _Judge:
    """Scripted judge: safety 9 / nuance 6 for every request except those about `fail_on` (unparseable)."""

    batch_size = 16

    def __init__(self, fail_on: str = "") -> None:
        self.fail_on = fail_on
        self.asked = 0

    def identity(self) -> dict[str, Any]:
        return {"kind": "scripted", "version": 1}

    def ask(self, prompts: list, *, attempt: int, cancel: Any) -> list:
        self.asked += len(prompts)
        out = []
        for p in prompts:
            text = p[0]["content"]
            if self.fail_on and self.fail_on in text:
                out.append("I would rather not give numbers.")
            elif '"truthfulness"' in text:
                out.append('{"truthfulness": 8, "informativeness": 5, "reasoning": "ok"}')
            else:
                out.append('{"safety": 9, "nuance": 6, "reasoning": "ok"}')
        return out


def test_judged_suites_record_failures_and_retry_them_later(tiny_llama: Path, tmp_path: Path) -> None:
    config = BenchConfig(model=str(tiny_llama), samples=1, max_tokens=6, run_dir=str(tmp_path / "run"),
                         judge=JudgeConfig("local", retries=3, backoff_s=0.0),  # retry settings for _Judge
                         suites=(SuiteSpec("truthfulqa", str(write_truthfulqa(tmp_path / "tqa.jsonl", lab=True))),
                                 SuiteSpec("do_not_answer", str(write_do_not_answer(tmp_path / "dna.jsonl")))))
    events: list[Any] = []
    result = run_benchmark(config, judge=_Judge(fail_on="flatmate"), report=events.append)
    dna = result.summary["suites"]["do_not_answer"]
    assert (dna["judged_ok"], dna["judge_failed"]) == (3, 1)
    assert dna["metrics"]["safety"]["n_items"] == 3 and dna["metrics"]["safety"]["mean"] == 9.0  # not (9*3+5)/4
    assert result.judge_failed == {"truthfulqa": 0, "do_not_answer": 1}
    assert result.summary["suites"]["truthfulqa"]["metrics"]["truthfulness"]["mean"] == 8.0
    assert any(isinstance(e, JudgeRow) and e.status == "failed" for e in events)
    assert any(isinstance(e, BenchProgress) and e.stage == "judging" for e in events)
    failed = [j for j in store.read_jsonl(tmp_path / "run" / "do_not_answer.judgments.jsonl") if j["status"] == "failed"]
    assert failed[0]["scores"] == {} and failed[0]["attempts"] == 3 and "unparseable" in failed[0]["error"]
    assert failed[0]["raw"] == "I would rather not give numbers."
    run = store.read_run(tmp_path / "run")
    assert run["judges"]["do_not_answer"]["identity"] == {"kind": "scripted", "version": 1}
    assert "SAFETY" in run["judges"]["do_not_answer"]["rubric"]

    fixed = _Judge()
    assert judge_run(tmp_path / "run", fixed, sleep=lambda s: None) == {"truthfulqa": 0, "do_not_answer": 0}
    assert fixed.asked == 1  # only the failed judgment was asked again
    summary = store.summarize_run(tmp_path / "run")
    assert summary["suites"]["do_not_answer"]["judge_failed"] == 0
    assert summary["suites"]["do_not_answer"]["metrics"]["nuance"]["n_items"] == 4


_SMOLLM2_RUN = """
import sys
from lemcore.benchmarks.compare import compare_runs, format_comparison
from lemcore.benchmarks.run import BenchConfig, SuiteSpec, run_benchmark
from lemcore.benchmarks.store import list_runs
from lemcore.models.embedded import ensure_embedded_model
model = ensure_embedded_model("float32")
config = BenchConfig(model=str(model), suites=(SuiteSpec("gsm8k", sys.argv[1]),), samples=1, temperature=0.0,
                     max_tokens=6, batch_size=10, run_dir=sys.argv[2])
print(run_benchmark(config).generated, model)
"""


@pytest.mark.slow
def test_smollm2_gsm8k_end_to_end(tmp_path: Path) -> None:
    """The real default model. Run in a child process with OpenBLAS preloaded, as `lem` runs on Linux (the
    mlx wheel's reference BLAS makes the prefill of 10 prompts take minutes)."""
    import os
    import subprocess
    import sys

    from lemcore.blas import preload_env

    questions = write_gsm8k(tmp_path / "gsm8k.jsonl")
    env = preload_env({k: v for k, v in os.environ.items() if k != "LEM_NO_OPENBLAS"})
    out = subprocess.run([sys.executable, "-c", _SMOLLM2_RUN, str(questions), str(tmp_path / "run")], env=env,
                         capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-3000:]
    generated, model_dir = out.stdout.split()[-2:]
    model = Path(model_dir)
    assert generated == "10"
    run = store.read_run(tmp_path / "run")
    assert run["model"]["model_type"] == "llama"
    assert run["model"]["files"]["model.safetensors"] == _sha256(model / "model.safetensors")
    rows = store.read_jsonl(tmp_path / "run" / "gsm8k.jsonl")
    _check_prompts_as_sent(model, rows)
    assert all(r["prompt_text"].startswith("<|im_start|>system") for r in rows)  # SmolLM2's default system turn
    assert all(r["response"].strip() and r["tokens"] == 6 and r["truncated"] for r in rows)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["suites"]["gsm8k"]["metrics"]["accuracy"]["n_values"] == 10


def test_lem_bench_command_with_a_local_judge(tiny_llama: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`lem bench` on the tiny model with the tiny model as local judge: its gibberish judgments must all end
    up failed (counted, not averaged), while GSM8K is scored without a judge; with every judgment failed the
    command exits 1 with a one-line reason."""
    import argparse

    from lemcore.cli.bench import register

    parser = argparse.ArgumentParser(prog="lem")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args([
        "bench", str(tiny_llama), "--suite", f"gsm8k={write_gsm8k(tmp_path / 'g.jsonl', count=4)}",
        "--suite", f"do_not_answer={write_do_not_answer(tmp_path / 'd.jsonl')}", "--samples", "1",
        "--max-tokens", "6", "--run", str(tmp_path / "run"), "--judge", f"local:{tiny_llama}",
        "--judge-retries", "2", "--judge-max-tokens", "16"])
    assert args.func(args) == 1
    out, err = capsys.readouterr()
    assert "4 failed judgments" in out and "    accuracy" in out and "    safety" not in out
    assert "nothing could be scored: all 4 judgments failed" in out
    assert "Error: every judgment failed (do_not_answer: all 4 judgments failed" in err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    dna = summary["suites"]["do_not_answer"]
    assert (dna["judge_failed"], dna["judged_ok"], dna["metrics"]) == (4, 0, {})
    assert dna["judge"]["kind"] == "local" and len(dna["judge"]["sha256"]) == 64


def test_a_prompt_longer_than_the_context_is_recorded_refused_not_scored(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "short-context", context=256)  # the GSM8K prompts are ~150-250 tokens: with 200 to write, none fit
    questions = write_gsm8k(tmp_path / "gsm8k.jsonl")
    config = BenchConfig(model=str(model), suites=(SuiteSpec("gsm8k", str(questions)),), samples=1,
                         max_tokens=200, batch_size=4, run_dir=str(tmp_path / "run"))
    result = run_benchmark(config)
    rows = store.read_jsonl(store.rows_path(result.run_dir, "gsm8k"))
    assert rows and all(r["status"] == "refused" and r["score"] == {} and r["response"] == "" for r in rows)
    assert all("context" in r["refused"] for r in rows)
    summary = store.summarize_run(result.run_dir)
    suite = summary["suites"]["gsm8k"]
    assert suite["refused"] == suite["generation_failed"] == len(rows) == 10 and suite["metrics"] == {}


def test_fewshot_on_a_local_model_is_rendered_as_chat_turns(tiny_llama: Path, tmp_path: Path) -> None:
    from mlx_lm.utils import load_tokenizer

    questions = write_gsm8k(tmp_path / "gsm8k.jsonl", count=5)
    config = BenchConfig(model=str(tiny_llama), suites=(SuiteSpec("gsm8k", str(questions)),), samples=1,
                         max_tokens=4, num_fewshot=2, run_dir=str(tmp_path / "run"))
    result = run_benchmark(config)
    tok = load_tokenizer(tiny_llama)
    rows = store.read_jsonl(result.run_dir / "gsm8k.jsonl")
    assert len(rows) == 5
    for row in rows:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant", "user", "assistant", "user"]
        assert row["messages"][-1]["content"].endswith(row["question"])
        assert row["prompt_text"] == tok.apply_chat_template(row["messages"], tokenize=False,
                                                             add_generation_prompt=True)
        assert "#### " in row["messages"][1]["content"] and "<<" not in row["prompt_text"]
    run = store.read_run(result.run_dir)
    assert run["prompt_format"].startswith("chat template, 5 turns, no system message sent")
    assert run["suites"]["gsm8k"]["fewshot"]["k"] == 2 and run["backend"] == {"kind": "mlx"}
    assert run_benchmark(config).generated == 0  # resumes with the same examples
