"""The model under test on an OpenAI-compatible server (llama.cpp, Ollama, LM Studio, vLLM): a local stand-in
answering GSM8K from a table, through the same run engine: rows, strict/flexible columns, provenance from
`GET /v1/models`, per-request seeds, resume, refusals; and few-shot prompts as earlier chat turns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lemcore.benchmarks import store
from lemcore.benchmarks.run import BenchConfig, SuiteSpec, run_benchmark
from lemcore.cli.main import main
from lemcore.errors import ConfigError, ServerUnreachable
from lemcore.generate.api import APIError
from lemcore.secrets import MemoryTokenStore
from tests.bench_items import GSM8K_ITEMS, write_do_not_answer, write_gsm8k, write_truthfulqa_mc
from tests.chat_server import ChatServer

# The server model's replies, by question number: marker answers, answers without the marker, one whose
# last number is not its answer, two wrong ones.
REPLIES = {
    1: "24 - 17 = 7 muffins.\n#### 7", 2: "12 * 9 = 108.\n#### 108", 3: "Ten rides at 3 each.\n#### 30",
    4: "#### 80\nChecked: 150 - 50 - 20.", 5: "8 * 14 - 26.\n#### 86",
    6: "The answer is 2520.", 7: "So 300 more litres fit.", 8: "Each pays 17",
    9: "#### 1", 10: "#### 2",
}
MODELS = [{"id": "llama-3.2-1b-q4", "object": "model", "created": 1700000000, "owned_by": "llamacpp",
           "meta": {"n_params": 1235814432, "size": 807690240, "n_ctx_train": 131072}}]


def _answer(body: dict[str, Any]) -> str:
    question = body["messages"][-1]["content"]
    for n, (text, _worked, _final) in enumerate(GSM8K_ITEMS, start=1):
        if text in question:
            return REPLIES[n]
    raise AssertionError(f"unknown question: {question[:80]}")


@pytest.fixture
def server() -> Any:
    with ChatServer(_answer, models=json.loads(json.dumps(MODELS)),
                    finish_reason=lambda body, text: "length" if text == REPLIES[8] else "stop") as srv:
        yield srv


def _config(tmp_path: Path, url: str, **kw: Any) -> BenchConfig:
    questions = write_gsm8k(tmp_path / "gsm8k.jsonl")
    base = {"model": "", "suites": (SuiteSpec("gsm8k", str(questions)),), "samples": 2, "seed": 5,
            "max_tokens": 64, "run_dir": str(tmp_path / "run"), "api_base": url, "api_model": "llama-3.2-1b-q4"}
    return BenchConfig(**{**base, **kw})


KEYS = MemoryTokenStore({"generation-api-key": "sk-gen-secret"})


def test_a_server_model_runs_the_same_benchmark_with_provenance_and_resume(tmp_path: Path, server: Any) -> None:
    secret_url = server.url.replace("http://", "http://lab:hunter2@")
    result = run_benchmark(_config(tmp_path, secret_url), token_store=KEYS)
    assert (result.generated, result.resumed) == (20, 0)
    bodies = server.chat_bodies()
    assert len(bodies) == 20 and all(h["Authorization"] == "Bearer sk-gen-secret" for _p, h, _b in server.requests)
    assert server.requests[0][0] == "/v1/models"  # asked before anything was generated
    assert {(b["model"], b["temperature"], b["max_tokens"]) for b in bodies} == {("llama-3.2-1b-q4", 0.3, 64)}
    # One seed per request: the two samples of an item differ, every request has its own.
    seeds = [b["seed"] for b in bodies]
    assert len(set(seeds)) == 20

    run = store.read_run(result.run_dir)
    text = (result.run_dir / "run.json").read_text()
    assert "hunter2" not in text and "sk-gen-secret" not in text
    model = run["model"]
    assert (model["kind"], model["name"], model["server"]) == ("api", "llama-3.2-1b-q4", server.url)
    assert model["reported"]["meta"]["size"] == 807690240 and len(model["weights_id"]) == 64
    assert run["backend"]["kind"] == "api" and "one per request" in run["backend"]["seeds"]
    assert run["prompt_format"].startswith("one user turn, no system message sent; the server applies")
    assert run["label"] == "llama-3.2-1b-q4" and run["sessions"][-1]["outcome"] == "finished"

    rows = store.latest_rows(result.run_dir, "gsm8k")
    assert len(rows) == 20 and rows[("GSM8K_008", 0)]["truncated"] is True
    assert rows[("GSM8K_004", 1)]["response"] == REPLIES[4] and rows[("GSM8K_004", 1)]["prompt_text"] == ""
    metrics = result.summary["suites"]["gsm8k"]["metrics"]
    # Ours: 1-5 by the marker, 6-8 without it; strict: only 1-5; flexible: the last number (4 ends on 20).
    assert {m: v["mean"] for m, v in metrics.items()} == {
        "accuracy": 80.0, "accuracy_strict": 50.0, "accuracy_flexible": 70.0, "accuracy_lab_rule": 80.0}
    assert metrics["accuracy_strict"]["n_items"] == 10  # two samples agree on every item: one value each
    notes = result.summary["suites"]["gsm8k"]["metric_notes"]
    assert "strict" in notes["accuracy_strict"] and "last number" in notes["accuracy_flexible"]

    # Resume: nothing to do; then lost lines are redone with the seeds they had.
    assert run_benchmark(_config(tmp_path, server.url), token_store=KEYS).generated == 0
    path = result.run_dir / "gsm8k.jsonl"
    path.write_text("\n".join(path.read_text().splitlines()[:17]) + "\n")
    before = {(b["messages"][-1]["content"], b["seed"]) for b in bodies}
    third = run_benchmark(_config(tmp_path, server.url), token_store=KEYS)
    assert (third.generated, third.resumed) == (3, 17)
    assert {(b["messages"][-1]["content"], b["seed"]) for b in server.chat_bodies()[20:]} <= before

    # The server's clock stamp changes nothing; different weights under the same name refuse the resume.
    server.models[0]["created"] = 1800000000
    assert run_benchmark(_config(tmp_path, server.url), token_store=KEYS).generated == 0
    server.models[0]["meta"]["size"] = 999
    with pytest.raises(ConfigError, match="different model_sha256"):
        run_benchmark(_config(tmp_path, server.url), token_store=KEYS)


def test_what_a_server_cannot_do_is_refused_before_any_folder(tmp_path: Path, server: Any) -> None:
    mc = write_truthfulqa_mc(tmp_path / "mc.jsonl", count=4)
    with pytest.raises(ConfigError, match="log-likelihood, which a chat server does not give"):
        run_benchmark(_config(tmp_path, server.url, suites=(SuiteSpec("truthfulqa_mc", str(mc)),), run_dir=""))
    with pytest.raises(ConfigError, match="adapter is applied to a model loaded here"):
        run_benchmark(_config(tmp_path, server.url, adapter=str(tmp_path), run_dir=""))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServerUnreachable, match="Is it running"):
        run_benchmark(_config(tmp_path, f"http://127.0.0.1:{port}/v1", run_dir=""), token_store=KEYS)
    assert not (tmp_path / "data" / "benchmarks").exists() or not any((tmp_path / "data" / "benchmarks").iterdir())
    assert server.chat_bodies() == []


def test_a_server_that_wants_a_key_says_where_it_goes(tmp_path: Path) -> None:
    # /v1/models answers 404 here, so the refusal comes from the first chat request.
    with ChatServer(lambda body: (401, b'{"error": "no key"}'), models=None) as srv, pytest.raises(
            APIError, match="refused the API key .*HTTP 401.*account 'generation-api-key'"):
        run_benchmark(_config(tmp_path, srv.url), token_store=MemoryTokenStore())
    run = store.read_run(tmp_path / "run")
    assert run["model"]["reported"] is None and "lists no models" in run["model"]["note"]
    assert run["sessions"][-1]["outcome"].startswith("failed: APIError")

    with ChatServer(_answer, models=MODELS) as srv:
        srv.models_status = 401
        with pytest.raises(APIError, match="lem judge-key --account generation-api-key"):
            run_benchmark(_config(tmp_path, srv.url, run_dir=""), token_store=MemoryTokenStore())


def test_fewshot_examples_are_earlier_turns_seeded_and_never_the_item(tmp_path: Path, server: Any) -> None:
    config = _config(tmp_path, server.url, samples=1, num_fewshot=3, suites=(
        SuiteSpec("gsm8k", str(write_gsm8k(tmp_path / "gsm8k.jsonl")), n=6),))
    result = run_benchmark(config, token_store=KEYS)
    run = store.read_run(result.run_dir)
    shot = run["suites"]["gsm8k"]["fewshot"]
    assert (shot["k"], shot["seed"], shot["pool_items"], len(shot["candidates"])) == (3, 5, 10, 4)
    chosen = {r["id"] for r in store.latest_rows(result.run_dir, "gsm8k").values()}
    assert len(chosen) == 6
    for body in server.chat_bodies():
        msgs = body["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant"] * 3 + ["user"]
        own = msgs[-1]["content"]
        assert all(m["content"] != own for m in msgs[:-1])  # never the item itself
        for m in msgs[1:-1:2]:
            assert "<<" not in m["content"] and m["content"].splitlines()[-1].startswith("#### ")
        shown = [m["content"] for m in msgs[:-1:2]]
        ids = [f"GSM8K_{n:03d}" for n, item in enumerate(GSM8K_ITEMS, start=1) if any(item[0] in s for s in shown)]
        own_id = next(f"GSM8K_{n:03d}" for n, item in enumerate(GSM8K_ITEMS, start=1) if item[0] in own)
        # The first three candidates that are not the item, in the order drawn.
        assert sorted(ids) == sorted([c for c in shot["candidates"] if c != own_id][:3])
    rows = store.latest_rows(result.run_dir, "gsm8k")
    assert all(len(r["messages"]) == 7 for r in rows.values())
    assert run["prompt_format"].startswith("7 turns, no system message sent")
    # The same seed draws the same examples (a resume, or a rerun elsewhere); another seed other ones.
    again = run_benchmark(_config(tmp_path, server.url, samples=1, num_fewshot=3, run_dir=str(tmp_path / "other"),
                                  suites=config.suites), token_store=KEYS)
    assert store.read_run(again.run_dir)["suites"]["gsm8k"]["fewshot"]["candidates"] == shot["candidates"]
    with pytest.raises(ConfigError, match="different suites"):
        run_benchmark(BenchConfig(**{**config.__dict__, "num_fewshot": 2}), token_store=KEYS)
    seven = run_benchmark(BenchConfig(**{**config.__dict__, "seed": 6, "run_dir": str(tmp_path / "seed6")}),
                          token_store=KEYS)
    assert store.read_run(seven.run_dir)["suites"]["gsm8k"]["fewshot"]["candidates"] != shot["candidates"]


def test_fewshot_refusals(tmp_path: Path, server: Any) -> None:
    dna = write_do_not_answer(tmp_path / "dna.jsonl")
    with pytest.raises(ConfigError, match="no reference answers to show as examples"):
        run_benchmark(_config(tmp_path, server.url, num_fewshot=2, suites=(SuiteSpec("do_not_answer", str(dna)),)))
    few = write_gsm8k(tmp_path / "three.jsonl", count=3)
    with pytest.raises(ConfigError, match="too few for 3 examples"):
        run_benchmark(_config(tmp_path, server.url, num_fewshot=3, suites=(SuiteSpec("gsm8k", str(few)),)))


def test_lem_bench_on_a_server_prints_the_columns_side_by_side(tmp_path: Path, server: Any,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    questions = write_gsm8k(tmp_path / "gsm8k.jsonl")
    code = main(["bench", "--api-base", server.url, "--api-model", "llama-3.2-1b-q4", "--suite",
                 f"gsm8k={questions}", "--samples", "1", "--run", str(tmp_path / "run"),
                 "--api-key-account", ""])
    out = capsys.readouterr().out
    assert code == 0
    assert "accuracy_strict           50.00" in out and "strict: only the number after '####'" in out
    assert "accuracy_flexible         70.00" in out and "flexible: the last number in the answer" in out
    assert "accuracy                  80.00" in out and "accuracy_lab_rule         80.00" in out
    assert main(["bench", "--suite", "gsm8k"]) == 2  # neither a model nor a server
    assert "Give a model (or a server with --api-base URL)" in capsys.readouterr().err
