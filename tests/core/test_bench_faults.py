"""Faults of `lem score` / `lem bench` and the run record: every failed judgment exits non-zero, nothing prints NaN,
the judge's key advice, unreadable response lines reported, no empty folder after a refused import, an interrupted
run recorded as such with its true counts, and the system text a chat template adds recorded in run.json."""

from __future__ import annotations

import argparse
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lemcore.benchmarks import store
from lemcore.benchmarks.judge import JudgeAuthError, JudgeConfig, JudgeRequest, judge_requests, make_judge
from lemcore.benchmarks.provenance import describe_prompt_format, template_system_prompt
from lemcore.benchmarks.run import BenchConfig, SuiteSpec, run_benchmark
from lemcore.benchmarks.score import ScoreConfig, score_responses
from lemcore.cli.command import run_command
from lemcore.errors import DataError, SecretStoreError
from lemcore.generate.protocol import Feed, GenItem, GenResult, Sampling
from lemcore.jobs import CancelToken, Report, no_report
from lemcore.secrets import KeyringTokenStore
from tests.bench_items import write_gsm8k, write_truthfulqa
from tests.core.test_bench_judge import judge_server  # noqa: F401 - a fixture, used by name
from tests.tiny_models import make_tiny_model


def _parser() -> argparse.ArgumentParser:
    from lemcore.cli.bench import register

    parser = argparse.ArgumentParser(prog="lem")
    register(parser.add_subparsers(dest="command"))
    return parser


def _lem(*argv: str) -> int:
    return run_command(_parser().parse_args(list(argv)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _tqa_answers(path: Path) -> Path:
    return _answers(path, [json.dumps({"id": f"TRUTHQA_{n:03d}", "response": "No."}) for n in (1, 2, 3)])


# -- judging that fails entirely, and summaries with nothing scored ---------------------------------------------
def test_lem_score_exits_non_zero_when_every_judgment_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LEM_JUDGE_API_KEY", "sk-test")
    questions = write_truthfulqa(tmp_path / "truthfulqa.jsonl", lab=True)
    code = _lem("score", str(_tqa_answers(tmp_path / "a.jsonl")), "--suite", "truthfulqa", "--suite-file",
                str(questions), "--out", str(tmp_path / "run"), "--judge",
                f"api:http://127.0.0.1:{_free_port()}/v1", "--judge-retries", "1", "--judge-backoff", "0")
    out, err = capsys.readouterr()
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "every judgment failed (truthfulqa: all 3 judgments failed" in errors[0]
    assert "Cannot reach" in errors[0] and f"lem score --run {tmp_path / 'run'}" in errors[0]
    assert "nothing could be scored: all 3 judgments failed" in out
    assert "nan" not in out.lower()


def test_a_summary_with_nothing_judged_says_why_and_prints_no_nan(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    questions = write_truthfulqa(tmp_path / "truthfulqa.jsonl", lab=True)
    lab = {"scores": {"truthfulqa": {"m": {f"TRUTHQA_{n:03d}": {"truthfulness": 7, "informativeness": 6}
                                           for n in (1, 2, 3)}}}}
    (tmp_path / "scores.json").write_text(json.dumps(lab))
    code = _lem("score", str(_tqa_answers(tmp_path / "a.jsonl")), "--suite", "truthfulqa", "--suite-file",
                str(questions), "--out", str(tmp_path / "run"), "--original", str(tmp_path / "scores.json"),
                "--original-model", "m")
    out = capsys.readouterr().out
    assert code == 0  # nothing failed: it is just not judged yet
    assert "truthfulqa truthfulness: original 7.00; nothing could be scored: no judge was given" in out
    assert "nan" not in out.lower()
    summary = (tmp_path / "run" / "summary.json").read_text()
    assert "NaN" not in summary and "Infinity" not in summary


# -- the judge's key --------------------------------------------------------------------------------------------
@pytest.fixture
def no_keychain() -> Iterator[None]:
    import keyring
    from keyring.backends import fail

    before = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        yield
    finally:
        keyring.set_keyring(before)


def test_api_judge_without_a_keychain_says_how_to_give_the_judge_its_key(
        no_keychain: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("LEM_JUDGE_API_KEY", raising=False)
    with pytest.raises(SecretStoreError) as caught:
        make_judge(JudgeConfig("api", model="m", url="http://127.0.0.1:9/v1"), store=KeyringTokenStore())
    text = str(caught.value)
    assert "judge API key" in text and "LEM_JUDGE_API_KEY" in text and "`lem judge-key`" in text
    assert "INFLUX_TOKEN" not in text and "contribute" not in text

    questions = write_truthfulqa(tmp_path / "truthfulqa.jsonl", lab=True)
    code = _lem("score", str(_tqa_answers(tmp_path / "a.jsonl")), "--suite", "truthfulqa", "--suite-file",
                str(questions), "--out", str(tmp_path / "run"), "--judge", "api:http://127.0.0.1:9/v1")
    err = capsys.readouterr().err
    assert code == 2 and "LEM_JUDGE_API_KEY" in err and "INFLUX_TOKEN" not in err
    assert not (tmp_path / "run").exists()  # the judge is checked before the import makes a folder

    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("sk-new\n"))
    assert _lem("judge-key", "--stdin") == 2
    err = capsys.readouterr().err
    assert "Could not save the judge API key" in err and "INFLUX_TOKEN" not in err


def test_api_judge_with_no_saved_key_refused_by_the_server(judge_server: Any) -> None:  # noqa: F811
    url, handler = judge_server
    handler.script = [(401, b'{"error": "missing key"}')]

    class Empty:
        def get(self, account: str = "") -> str | None:
            return None

    judge = make_judge(JudgeConfig("api", model="m", url=url, key_account="judge-key"), store=Empty())  # type: ignore[arg-type]
    request = JudgeRequest(("x", 0), [{"role": "user", "content": "rate"}])
    with pytest.raises(JudgeAuthError, match="needs a key and none is saved .*lem judge-key.*LEM_JUDGE_API_KEY"):
        judge_requests(judge, ("safety",), [request], on_judgment=lambda j: None, sleep=lambda s: None)


# -- reading the responses file ----------------------------------------------------------------------------------
def test_lines_that_are_not_json_are_counted_and_reported_with_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    questions = write_gsm8k(tmp_path / "gsm8k.jsonl", lab=True)
    answers = _answers(tmp_path / "gsm8k_m.jsonl", [
        json.dumps({"id": "GSM8K_001", "response": "#### 7"}),
        '{"id": "GSM8K_002", "response": "#### 108"',  # cut short
        json.dumps({"id": "GSM8K_003", "response": "#### 30"}),
        "not json at all",
        json.dumps(["a", "list"]),
    ])
    summary = score_responses(ScoreConfig(responses=str(answers), suite_file=str(questions),
                                          run_dir=str(tmp_path / "run")))
    problems = summary["suites"]["gsm8k"]["input_problems"]
    assert problems["count"] == 3
    assert [p.split(": ")[0] for p in problems["first"]] == [f"{answers}:2", f"{answers}:4", f"{answers}:5"]
    assert "not valid JSON" in problems["first"][0] and "not a JSON object" in problems["first"][2]
    assert store.read_run(tmp_path / "run")["sources"]["gsm8k"]["problem_count"] == 3

    assert _lem("score", str(answers), "--suite-file", str(questions), "--out", str(tmp_path / "run2")) == 0
    out = capsys.readouterr().out
    assert "3 lines of the responses file could not be read and were skipped:" in out
    assert f"{answers}:2: not valid JSON" in out and f"{answers}:4: not valid JSON" in out


def test_an_unknown_original_model_leaves_no_run_folder(tmp_path: Path) -> None:
    questions = write_gsm8k(tmp_path / "gsm8k.jsonl", lab=True)
    answers = _answers(tmp_path / "gsm8k_m.jsonl", [json.dumps({"id": "GSM8K_001", "response": "#### 7"})])
    (tmp_path / "scores.json").write_text(json.dumps({"scores": {"gsm8k": {"it": {"GSM8K_001": {"correct": True}}}}}))
    for out in ("", str(tmp_path / "run")):
        with pytest.raises(DataError, match="no model 'lek'"):
            score_responses(ScoreConfig(responses=str(answers), suite_file=str(questions), run_dir=out,
                                        original_scores=str(tmp_path / "scores.json"), original_model="lek"))
    assert not (tmp_path / "run").exists()
    benchmarks = tmp_path / "data" / "benchmarks"
    assert not benchmarks.exists() or not any(benchmarks.iterdir())


# -- the run record --------------------------------------------------------------------------------------------
class _OneThenStop:
    """A generator that finishes one item, then the user presses Ctrl-C (or something breaks)."""

    name = "scripted"
    batch_size = 2

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def set_shared_prefix(self, sample_messages: list[Any]) -> int:
        return 0

    def run(self, feed: Feed, sampling: Sampling, on_result: Callable[[GenResult], None], *,
            report: Report = no_report, cancel: CancelToken | None = None,
            on_tick: Callable[[], None] | None = None) -> int:
        item = feed()
        assert isinstance(item, GenItem)
        on_result(GenResult(item.key, "#### 7", 20, 3, 0.1, False, prompt_text="(rendered)"))
        raise self.error


@pytest.mark.parametrize(("error", "outcome"), [(KeyboardInterrupt(), "interrupted"),
                                                (RuntimeError(), "failed: RuntimeError"),
                                                (OSError("disk full"), "failed: OSError: disk full")])
def test_an_interrupted_run_records_interrupted_and_the_rows_it_wrote(tmp_path: Path, error: BaseException,
                                                                      outcome: str) -> None:
    questions = write_gsm8k(tmp_path / "gsm8k.jsonl", count=4)
    config = BenchConfig(model="scripted-model", suites=(SuiteSpec("gsm8k", str(questions)),), samples=1,
                         run_dir=str(tmp_path / "run"))
    with pytest.raises(type(error)):
        run_benchmark(config, generator=_OneThenStop(error))  # type: ignore[arg-type]
    session = store.read_run(tmp_path / "run")["sessions"][-1]
    assert session["outcome"] == outcome
    assert session["generated"] == 1 == session["suites"]["gsm8k"]["generated"]
    assert session["suites"]["gsm8k"]["tokens"] == 3 and "ended" in session
    assert len(store.latest_rows(tmp_path / "run", "gsm8k")) == 1


def _qwen_like(messages: list[dict[str, str]]) -> str:
    out = "" if messages[0]["role"] == "system" else "<|im_start|>system\nYou are Tiny, a helpful assistant.<|im_end|>\n"
    out += "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return out + "<|im_start|>assistant\n"


def _llama_like(messages: list[dict[str, str]]) -> str:
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    turns = messages[1:] if system else messages
    out = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
           f"Today Date: 26 Jul 2024\n\n{system}<|eot_id|>")
    out += "".join(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}<|eot_id|>" for m in turns)
    return out + "<|start_header_id|>assistant<|end_header_id|>\n\n"


def _gemma_like(messages: list[dict[str, str]]) -> str:
    system = messages[0]["content"] + "\n\n" if messages[0]["role"] == "system" else ""
    turns = messages[1:] if system else messages
    return ("<bos>" + "".join(f"<start_of_turn>user\n{system if i == 0 else ''}{m['content']}<end_of_turn>\n"
                              for i, m in enumerate(turns)) + "<start_of_turn>model\n")


def _no_system_role(messages: list[dict[str, str]]) -> str:
    if messages[0]["role"] == "system":
        raise ValueError("System role not supported")
    return "".join(f"[INST] {m['content']} [/INST]" for m in messages)


@pytest.mark.parametrize(("render", "added"), [
    (_qwen_like, "You are Tiny, a helpful assistant."),
    (_llama_like, "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024"),
    (_gemma_like, ""),
    (_no_system_role, ""),
])
def test_what_a_template_adds_is_found_by_rendering(render: Callable[[list[dict[str, str]]], str],
                                                    added: str) -> None:
    messages = [{"role": "user", "content": "Work through it.\n\nA baker makes 24 muffins..."}]
    info = template_system_prompt(render, messages)
    assert info["template_system_prompt"] == added and info["system_message_sent"] is None
    assert info["rendered_example"] == render(messages)
    line = describe_prompt_format(info)
    assert line.startswith("chat template, one user turn, no system message sent; ")
    assert (repr(added) in line) if added else line.endswith("the template added no system text")


def test_run_json_records_the_system_prompt_the_template_injected(tiny_llama: Path, tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "qwen-like", "llama")
    tok_config = json.loads((model / "tokenizer_config.json").read_text())
    tok_config["chat_template"] = (
        "{% if messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\\nYou are Tiny, a helpful assistant.<|im_end|>\\n' }}{% endif %}"
        + tok_config["chat_template"])
    (model / "tokenizer_config.json").write_text(json.dumps(tok_config))
    questions = write_gsm8k(tmp_path / "gsm8k.jsonl", count=2)
    for folder, added in ((model, "You are Tiny, a helpful assistant."), (tiny_llama, "")):
        run_dir = tmp_path / f"run-{folder.name}"
        run_benchmark(BenchConfig(model=str(folder), suites=(SuiteSpec("gsm8k", str(questions)),), samples=1,
                                  max_tokens=3, run_dir=str(run_dir)))
        run = store.read_run(run_dir)
        assert run["prompt_template"]["template_system_prompt"] == added
        assert run["prompt_template"]["system_message_sent"] is None
        first = store.latest_rows(run_dir, "gsm8k")[(run["prompt_template"]["example_item"], 0)]
        assert run["prompt_template"]["rendered_example"] == first["prompt_text"]
        if added:
            assert added in first["prompt_text"] and repr(added) in run["prompt_format"]
        else:
            assert run["prompt_format"].endswith("the template added no system text")
