"""Contribution engine: outage survival, clear errors, bad lines, API backend, sandwich on the wire."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lemcore.contribute.engine import ContributeConfig, run_contribution
from lemcore.contribute.events import Finished, Notice, ResponseDone
from lemcore.contribute.queue.solo import SQLiteQueue
from lemcore.generate.api import APIGenerator
from lemcore.generate.engine import MLXGenerator, Sampling
from tests.core.contribute_helpers import (
    jsonl_indices,
    start,
    worker_cmd,
    worker_env,
    write_prompts,
    write_small_kernel,
)
from tests.servers import free_port


def test_server_outage_mid_run_loses_and_duplicates_nothing(tmp_path, influx, tiny_llama) -> None:
    n = 40
    prompts = write_prompts(tmp_path / "p.jsonl", n)
    kernel = write_small_kernel(tmp_path / "k")
    out = tmp_path / "out.jsonl"
    cmd = worker_cmd(tiny_llama, prompts, out, "w1", kernel, influx_url=influx.url,
                     extra=["--max-tokens", "64", "--batch-size", "2", "--lease", "30"])
    proc = start(cmd, worker_env(tmp_path, influx.token), tmp_path / "w.log")
    deadline = time.monotonic() + 120
    while len(jsonl_indices(out)) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    influx.stop()
    during = len(jsonl_indices(out))
    time.sleep(4)
    influx.start()
    assert proc.wait(timeout=300) == 0, (tmp_path / "w.log").read_text()[-3000:]
    log = (tmp_path / "w.log").read_text()
    # While it stops, the server first answers "shutting down", then refuses connections: either way the
    # worker says it is waiting and retrying.
    assert ("Server unreachable" in log or "Retrying" in log) and "Traceback" not in log
    assert len(jsonl_indices(out)) >= during
    assert sorted(jsonl_indices(out)) == list(range(n))
    res = influx.query("SELECT chars, i FROM gold_gen WHERE time > now() - 3650d")
    reported = [int(v[2]) for v in res["results"][0]["series"][0]["values"]]
    assert sorted(reported) == list(range(n)), "every report arrived exactly once"


def _cli(tmp_path, args: list[str], token: str = "") -> subprocess.CompletedProcess:
    import sys

    return subprocess.run([sys.executable, "-m", "lemcore.cli.main", *args], env=worker_env(tmp_path, token),
                          capture_output=True, text=True, timeout=300)


def test_wrong_token_is_clear(tmp_path, influx, tiny_llama) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 3)
    out = _cli(tmp_path, ["gold", "--model", str(tiny_llama), "--prompts", str(prompts), "--influx", influx.url,
                          "--worker", "w"], token="not-the-token")
    assert out.returncode == 2
    assert "rejected the token" in out.stderr and "Traceback" not in out.stderr and "not-the-token" not in out.stderr


def test_unreachable_server_is_clear(tmp_path, tiny_llama) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 3)
    out = _cli(tmp_path, ["gold", "--model", str(tiny_llama), "--prompts", str(prompts), "--influx",
                          f"http://127.0.0.1:{free_port()}", "--worker", "w"], token="tok")
    assert out.returncode == 2 and "Cannot reach" in out.stderr and "--solo" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_kernel_file_is_clear(tmp_path, tiny_llama) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 3)
    out = _cli(tmp_path, ["gold", "--solo", "--model", str(tiny_llama), "--prompts", str(prompts),
                          "--kernel", str(tmp_path / "nope.txt"), "--worker", "w"])
    assert out.returncode == 2 and "nope.txt" in out.stderr and "Traceback" not in out.stderr


def test_bad_lines_reported_and_run_continues(tmp_path, tiny_llama) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 6, bad_lines={2: "{not json", 4: '{"seed_id": "x"}'})
    kernel = write_small_kernel(tmp_path / "k")
    events: list = []
    config = ContributeConfig(prompts=prompts, output=tmp_path / "o.jsonl", worker="w",
                              sampling=Sampling(temperature=0, max_tokens=4), axioms_path=kernel[0],
                              kernel_path=kernel[1], quality_gate=False)
    gen = MLXGenerator.load(tiny_llama, batch_size=4)
    queue = SQLiteQueue(tmp_path / "q.sqlite", "gold", "w")
    result = run_contribution(config, queue, gen, report=events.append)
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert any("p.jsonl:3" in m for m in notices) and any("p.jsonl:5" in m for m in notices)
    assert sorted(jsonl_indices(tmp_path / "o.jsonl")) == [0, 1, 3, 5]  # indices stay the line numbers
    assert result.done_this_run == 4 and isinstance(events[-1], Finished)
    done = [e for e in events if isinstance(e, ResponseDone)]
    assert all(e.tokens == 4 and e.truncated for e in done)
    record = json.loads((tmp_path / "o.jsonl").read_text().splitlines()[0])
    for key in ("idx", "seed_id", "domain", "voice", "prompt", "response", "gen_time", "worker"):
        assert key in record  # the lab's gold fields


def test_restart_resumes_without_redoing(tmp_path, tiny_llama) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 8)
    kernel = write_small_kernel(tmp_path / "k")
    gen = MLXGenerator.load(tiny_llama, batch_size=2)
    base = dict(prompts=prompts, output=tmp_path / "o.jsonl", worker="w", axioms_path=kernel[0],
                kernel_path=kernel[1], sampling=Sampling(temperature=0, max_tokens=3), quality_gate=False)
    queue = SQLiteQueue(tmp_path / "q.sqlite", "gold", "w")
    assert run_contribution(ContributeConfig(limit=3, **base), queue, gen).done_this_run == 3
    second = run_contribution(ContributeConfig(**base), queue, gen)
    assert second.done_this_run == 5 and second.remaining == 0
    idx = jsonl_indices(tmp_path / "o.jsonl")
    assert sorted(idx) == list(range(8))


class _ChatServer(BaseHTTPRequestHandler):
    requests: list = []
    mode = "ok"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, dict(self.headers), body))
        if type(self).mode == "garbage":
            payload = b"<html>oops</html>"
        else:
            text = "Answer to: " + body["messages"][-1]["content"][:20]
            payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text},
                                               "finish_reason": "length"}],
                                  "usage": {"prompt_tokens": 50, "completion_tokens": 7}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def chat_server():
    _ChatServer.requests = []
    _ChatServer.mode = "ok"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", _ChatServer
    server.shutdown()
    server.server_close()


def test_api_backend_sends_the_sandwich_and_records_truncation(tmp_path, chat_server) -> None:
    url, handler = chat_server
    prompts = write_prompts(tmp_path / "p.jsonl", 3)
    config = ContributeConfig(prompts=prompts, output=tmp_path / "o.jsonl", worker="w",
                              sampling=Sampling(max_tokens=7))
    gen = APIGenerator(url, "local-model", api_key="sk-secret")
    run_contribution(config, SQLiteQueue(tmp_path / "q.sqlite", "gold", "w"), gen)
    path, headers, body = handler.requests[0]
    assert path == "/v1/chat/completions" and "sk-secret" not in path
    assert headers["Authorization"] == "Bearer sk-secret"
    assert body["messages"][0]["role"] == "system" and "Axiom 1 (sovereignty)" in body["messages"][0]["content"]
    assert "\n\n---\n\nConsider this ethical framework in your response:\n" in body["messages"][1]["content"]
    assert body["temperature"] == 0.3 and body["max_tokens"] == 7
    rows = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["truncated"] and r["tokens"] == 7 for r in rows)


def test_api_backend_bad_reply_is_clear(chat_server) -> None:
    from lemcore.generate.api import APIError

    url, handler = chat_server
    handler.mode = "garbage"
    with pytest.raises(APIError, match="not an OpenAI chat completion"):
        APIGenerator(url, "m").complete([{"role": "user", "content": "hi"}], Sampling())


def test_pause_rule_holds_new_work_until_it_clears(tmp_path, tiny_llama) -> None:
    from lemcore.contribute.events import StatusChanged
    from lemcore.contribute.governor import Governor, GovernorRules

    plugged = {"value": False}
    governor = Governor(GovernorRules(only_on_power=True), battery=lambda: not plugged["value"],
                        memory=lambda: 8.0, check_every_s=0)
    prompts = write_prompts(tmp_path / "p.jsonl", 3)
    kernel = write_small_kernel(tmp_path / "k")
    events: list = []

    def report(event) -> None:
        events.append(event)
        if isinstance(event, StatusChanged) and event.reason == "Paused: on battery":
            plugged["value"] = True  # the volunteer plugs the laptop in

    config = ContributeConfig(prompts=prompts, output=tmp_path / "o.jsonl", worker="w", axioms_path=kernel[0],
                              kernel_path=kernel[1], sampling=Sampling(temperature=0, max_tokens=2),
                              pause_check=governor.pause_reason, quality_gate=False)
    run_contribution(config, SQLiteQueue(tmp_path / "q.sqlite", "gold", "w"),
                     MLXGenerator.load(tiny_llama, batch_size=2), report=report)
    states = [(e.state, e.reason) for e in events if isinstance(e, StatusChanged)]
    assert states[0] == ("paused", "Paused: on battery") and ("running", "") in states
    assert sorted(jsonl_indices(tmp_path / "o.jsonl")) == [0, 1, 2]


def test_governor_reasons() -> None:
    from lemcore.contribute.governor import Governor, GovernorRules

    g = Governor(GovernorRules(pause_when_in_use=True, min_free_memory_gb=2), battery=lambda: None,
                 memory=lambda: 1.0, idle=lambda: 5.0, check_every_s=0)
    assert g.pause_reason() == "Paused: low on memory (1.0 GB free)"
    g = Governor(GovernorRules(pause_when_in_use=True), battery=lambda: False, memory=lambda: 9.0,
                 idle=lambda: 5.0, check_every_s=0)
    assert g.pause_reason() == "Paused: computer in use"
    g.snooze(3600)
    assert g.pause_reason().startswith("Paused: snoozed for 60")
