"""Small prompt sets and worker commands for the contribution tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def write_prompts(path: Path, n: int, *, bad_lines: dict[int, str] | None = None) -> Path:
    bad_lines = bad_lines or {}
    rows = []
    for i in range(n):
        if i in bad_lines:
            rows.append(bad_lines[i])
        else:
            rows.append(json.dumps({"seed_id": f"S{i:03d}", "domain": ["Health", "Privacy"][i % 2],
                                    "voice": "original", "prompt": f"Question {i}: should I share this?"}))
    path.write_text("\n".join(rows) + "\n")
    return path


def write_small_kernel(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    axioms = {"framework": "test", "version": "1", "axioms": [
        {"id": 1, "name": "consent", "statement": "Ask first.", "function": "permission", "resolution": "I asked."},
        {"id": 2, "name": "dignity", "statement": "Respect people.", "function": "regard", "resolution": "I did."},
    ]}
    (folder / "axioms.json").write_text(json.dumps(axioms))
    (folder / "kernel.txt").write_text("Reason from the axioms; do not cite them.")
    return folder / "axioms.json", folder / "kernel.txt"


def worker_cmd(model: Path, prompts: Path, output: Path, worker: str, kernel: tuple[Path, Path], *,
               influx_url: str = "", extra: list[str] | None = None, gate: bool = False) -> list[str]:
    """`lem gold` for one worker. The quality gate is off unless `gate`: the tiny test models write short,
    broken text that the gate would hold back, and these runs are about coordination and durability."""
    cmd = [sys.executable, "-m", "lemcore.cli.main", "gold", "--model", str(model), "--prompts", str(prompts),
           "--output", str(output), "--worker", worker, "--axioms", str(kernel[0]), "--kernel", str(kernel[1]),
           "--temperature", "0", "--quiet"]
    cmd += ["--influx", influx_url] if influx_url else ["--solo"]
    if not gate:
        cmd.append("--no-quality-gate")
    return cmd + (extra or [])


def worker_env(tmp: Path, token: str = "") -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), LEM_DATA_DIR=str(tmp / "data"),
               LEM_CONFIG_DIR=str(tmp / "config"), LEM_NO_OPENBLAS="1")
    if token:
        env["INFLUX_TOKEN"] = token
    return env


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)


def jsonl_indices(*paths: Path) -> list[int]:
    out: list[int] = []
    for path in paths:
        if path.exists():
            out += [json.loads(line)["idx"] for line in path.read_text().splitlines() if line.strip()]
    return out


# -- a worker without a model, for the coordination tests (tests/core/test_coordination.py, tests/perf) -------

def server_reports(influx) -> list[tuple[int, str, str]]:
    """Every gold_gen point on the server as (item, worker, instance); a duplicate report shows as two."""
    res = influx.query("SELECT chars, i, inst, w FROM gold_gen WHERE time > now() - 3650d AND time < now() + 3650d")
    out = []
    for series in res["results"][0].get("series", []):
        for values in series["values"]:
            row = dict(zip(series["columns"], values))
            out.append((int(row["i"]), row["w"], row.get("inst") or ""))
    return out


def server_claims(influx, idx: int) -> list[tuple[int, str, float]]:
    """Every lem_claim point on one item as (server time ns, instance, lease_s), oldest first."""
    from lemcore.influx import InfluxClient, InfluxTarget

    client = InfluxClient(InfluxTarget(influx.url, influx.db), influx.token)
    try:
        rows = client.query(f"SELECT lease_s, inst FROM lem_claim WHERE time > now() - 1d AND i = '{idx}'")
    finally:
        client.close()
    return sorted((int(r["time"]), r["inst"], float(r["lease_s"])) for r in rows)


def server_http_stats(influx) -> dict[str, int]:
    """influxd's own request counters (all clients): queryReq, writeReq, writeReqBytes, queryRespBytes, ..."""
    res = influx.query("SHOW STATS FOR 'httpd'")
    series = res["results"][0]["series"][0]
    return dict(zip(series["columns"], series["values"][0]))


def duplicates(outputs: list[Path], reports: list[tuple[int, str, str]]) -> tuple[list[int], list[int]]:
    """(items in more than one output line, items reported more than once)."""
    import collections

    local = collections.Counter(jsonl_indices(*outputs))
    server = collections.Counter(i for i, _w, _inst in reports)
    return sorted(i for i, n in local.items() if n > 1), sorted(i for i, n in server.items() if n > 1)


class SleepyGenerator:
    """A Generator without a model: each round takes up to `parallel` items from the feed and spends `item_s`
    seconds on them without calling `on_tick`, the way one long prefill holds the engine's thread. The engine
    claims `batch_size` items per round, so the rest of a claim waits in the pool."""

    def __init__(self, item_s: float, *, batch_size: int = 4, parallel: int = 1, name: str = "sleepy") -> None:
        self.item_s, self.batch_size, self.parallel, self.name = item_s, batch_size, parallel, name

    def set_shared_prefix(self, sample_messages) -> int:
        return 0

    def run(self, feed, sampling, on_result, *, report=None, cancel=None, on_tick=None) -> int:
        import time

        from lemcore.generate.protocol import WAIT, GenResult

        finished, feed_done = 0, False
        while True:
            if cancel is not None:
                cancel.check()
            batch = []
            while not feed_done and len(batch) < self.parallel:
                item = feed()
                if item is None:
                    feed_done = True
                elif item is WAIT:
                    break
                else:
                    batch.append(item)
            if not batch:
                if feed_done:
                    return finished
                if on_tick is not None:
                    on_tick()
                if cancel is not None:
                    cancel.wait(0.2)
                else:
                    time.sleep(0.2)
                continue
            started = time.perf_counter()
            time.sleep(self.item_s)  # busy: no on_tick
            for item in batch:
                on_result(GenResult(item.key, f"answer to {item.key}", 10, 5, time.perf_counter() - started, False))
                finished += 1
            if on_tick is not None:
                on_tick()


# A sensible answer (it passes the quality gate) and a model stuck in a loop (it does not).
GOOD_ANSWER = ("Start with whose information this is. If it belongs to someone else, ask them before you pass it "
               "on, and tell them plainly why you want to. Where asking is not possible, share only what the other "
               "person needs in order to act, keep the rest private, and note what you decided and why. (item {idx})")
LOOP_ANSWER = "I will share it with care. " * 60


class ScriptedGenerator:
    """A Generator without a model, one item at a time: GOOD_ANSWER for most items, LOOP_ANSWER (a repetition
    loop) for the keys in `loops`, `truncated` set for the keys in `cut`, and a refusal (as for a prompt longer
    than the model's context) for the keys in `refuse`."""

    name = "scripted"

    def __init__(self, *, loops=(), cut=(), refuse=(), batch_size: int = 2) -> None:
        self.loops, self.cut, self.refuse = set(loops), set(cut), set(refuse)
        self.batch_size = batch_size
        self.fed: list[int] = []

    def set_shared_prefix(self, sample_messages) -> int:
        return 0

    def run(self, feed, sampling, on_result, *, report=None, cancel=None, on_tick=None) -> int:
        import time

        from lemcore.generate.protocol import WAIT, GenResult

        finished = 0
        while True:
            if cancel is not None:
                cancel.check()
            item = feed()
            if item is None:
                return finished
            if item is WAIT:
                if on_tick is not None:
                    on_tick()
                time.sleep(0.05)
                continue
            self.fed.append(item.key)
            if item.key in self.refuse:
                result = GenResult(item.key, "", 9000, 0, 0.0, False, refused="the prompt is too long")
            else:
                text = LOOP_ANSWER if item.key in self.loops else GOOD_ANSWER.format(idx=item.key)
                result = GenResult(item.key, text, 40, len(text) // 4, 0.01, item.key in self.cut)
            on_result(result)
            finished += 1
            if on_tick is not None:
                on_tick()


def solo_reports(path: Path) -> list[tuple[int, str, str]]:
    """Every finished item in a solo queue file as (item, worker, instance): the solo queue's "server"."""
    import sqlite3

    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT idx, worker, report FROM done").fetchall()
    finally:
        db.close()
    return [(idx, worker, json.loads(report).get("instance", "")) for idx, worker, report in rows]


def sleepy_queue(url: str, token: str, worker: str, *, lease_s: float, settle_s: float | None = None):
    """The lab queue for one worker, with a client of its own (its `stats()` count only this worker)."""
    from lemcore.contribute.queue.lab import SETTLE_S, InfluxQueue
    from lemcore.influx import InfluxClient, InfluxTarget

    return InfluxQueue(InfluxClient(InfluxTarget(url, "training"), token), "gold", worker, lease_s=lease_s,
                       settle_s=SETTLE_S if settle_s is None else settle_s)


def run_sleepy(queue, prompts: Path, output: Path, *, item_s: float, batch_size: int = 4, parallel: int = 1,
               idle_max_s: float = 120.0, report=None, cancel=None):
    """One worker in this process: run_contribution with a SleepyGenerator on `queue`."""
    from lemcore.contribute.engine import ContributeConfig, run_contribution

    config = ContributeConfig(prompts=prompts, output=output, worker=queue.worker, retry_s=1.0,
                              idle_max_s=idle_max_s, quality_gate=False)  # "answer to 3" is no answer
    gen = SleepyGenerator(item_s, batch_size=batch_size, parallel=parallel)
    return run_contribution(config, queue, gen, report=report or (lambda event: None), cancel=cancel)


def sleepy_worker_cmd(url: str, prompts: Path, output: Path, worker: str, *, lease_s: float, item_s: float,
                      batch_size: int = 4, parallel: int = 1, idle_max_s: float = 120.0,
                      solo_queue: Path | None = None) -> list[str]:
    """A sleepy worker process on the lab's server at `url`, or on the solo queue file `solo_queue`."""
    where = ["--solo-queue", str(solo_queue)] if solo_queue is not None else ["--influx", url]
    return [sys.executable, "-m", "tests.core.contribute_helpers", *where, "--prompts", str(prompts),
            "--output", str(output), "--worker", worker, "--lease", str(lease_s), "--item-s", str(item_s),
            "--batch-size", str(batch_size), "--parallel", str(parallel), "--idle-max", str(idle_max_s)]


def _sleepy_main(argv: list[str]) -> int:
    """`python -m tests.core.contribute_helpers ...`: one sleepy worker process (on the lab's server, token in
    INFLUX_TOKEN, or on a solo queue file); prints its events, one a line, and a RESULT line."""
    import argparse
    import dataclasses

    from lemcore.contribute import events as ev

    p = argparse.ArgumentParser()
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--influx")
    where.add_argument("--solo-queue")
    for flag in ("--prompts", "--output", "--worker"):
        p.add_argument(flag, required=True)
    for flag, default in (("--lease", 120.0), ("--item-s", 1.0), ("--idle-max", 120.0)):
        p.add_argument(flag, type=float, default=default)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--parallel", type=int, default=1)
    a = p.parse_args(argv)

    def report(event) -> None:
        if isinstance(event, ev.Notice):
            print(f"{type(event).__name__}: {event.message}", flush=True)
        elif isinstance(event, ev.ResponseDone):
            print(f"ResponseDone: {event.idx}", flush=True)

    if a.solo_queue:
        from lemcore.contribute.queue.solo import SQLiteQueue
        from lemcore.prompts import prompt_set_hash

        queue = SQLiteQueue(Path(a.solo_queue), "gold", a.worker, prompt_set=prompt_set_hash(Path(a.prompts)),
                            lease_s=a.lease)
    else:
        queue = sleepy_queue(a.influx, os.environ["INFLUX_TOKEN"], a.worker, lease_s=a.lease)
    print(f"INSTANCE {queue.instance}", flush=True)
    result = run_sleepy(queue, Path(a.prompts), Path(a.output), item_s=a.item_s, batch_size=a.batch_size,
                        parallel=a.parallel, idle_max_s=a.idle_max, report=report)
    row = dataclasses.asdict(result)
    row["output"] = str(row["output"])
    print("RESULT " + json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_sleepy_main(sys.argv[1:]))
