"""A volunteer fleet against one real InfluxDB on this machine: duplicates, gaps and server load per item as
the fleet grows (docs/coordination.md).

No model: each worker runs the real engine (run_contribution, the lab queue, the lease keeper) with a
generator that spends a fixed time per item without ticking (tests/core/contribute_helpers.SleepyGenerator).
Workers are threads inside 10 worker processes (1, 5 and 20 per process for 10, 50 and 200 workers); one
process in ten, that is 10% of the workers, is suspended (SIGSTOP) at a random moment for 2.5 leases, then
resumed (SIGCONT), like laptops that sleep; the last item is held by a straggler until the rest has been done
for `--hold-s`, so every worker idles a while at the end of the set. Only loopback traffic. Prints, for each fleet size: duplicates
(an item in two output lines or two server reports: must be 0), gaps (0), answers kept aside as lost, server
requests and bytes per completed item (the workers' own counters and influxd's), p50/p99 claim-round
latency, the idle polling rate (requests per second per worker between its last answer and its end), and the
1-minute load average beside each figure. Requests per item must stay flat from 10 to 200 workers.

    .venv/bin/python -m tests.perf.bench_fleet [--sizes 10,50,200] [--items-per-worker 8] [--item-s 2]
                                               [--lease 6] [--idle-max 20] [--seed 1]

Measured here, 2026-11-27 (2 cores shared with other work, influxd 1.6.7, defaults above; 1-minute load average
0.5-1.3 during the runs):

    workers  dup  gaps  kept aside  req/item (working)  bytes/item (working)  won-round p50/p99  idle req/s
    10       0    0     1           6.12 (3.21)          6821 (2304)           118 / 1210 ms      0.43
    50       0    0     5           6.33 (3.40)         12892 (2637)           121 / 1542 ms      0.44
    200      0    0     20          6.90 (3.42)         28503 (2823)           271 / 3529 ms      0.50

"working" counts each worker's requests up to its last answer; the rest is the 40 s idle tail at the end of the
set (2 requests per back-off round, up to --idle-max 20 s here, 120 s by default), where every worker also
reads once what the others finished: that read is the only part that grows with the fleet. influxd's own
counters agree with the workers' within the straggler's and this process's few requests.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 10


def _load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


# -- one worker process: several workers on threads --------------------------------------------------------

def _child(argv: list[str]) -> int:
    from lemcore.contribute import events as ev
    from lemcore.contribute.queue.lab import InfluxQueue
    from tests.core.contribute_helpers import run_sleepy, sleepy_queue

    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--prompts", required=True)
    p.add_argument("--outdir", required=True)
    p.add_argument("--workers", required=True)
    p.add_argument("--lease", type=float, required=True)
    p.add_argument("--item-s", type=float, required=True)
    p.add_argument("--idle-max", type=float, required=True)
    a = p.parse_args(argv)
    token = os.environ["INFLUX_TOKEN"]
    lock = threading.Lock()

    class TimedQueue(InfluxQueue):
        latencies: list[float]

        def claim_round(self, candidates, want):
            started = time.monotonic()
            outcome = super().claim_round(candidates, want)
            if outcome.won:  # the wait of a worker that needs work (idle rounds that find nothing are cheaper)
                self.latencies.append(time.monotonic() - started)
            return outcome

    def one(name: str) -> None:
        plain = sleepy_queue(a.url, token, name, lease_s=a.lease)
        queue = TimedQueue(plain.client, "gold", name, lease_s=a.lease, instance=plain.instance)
        queue.latencies = []
        last = {"t": time.monotonic(), "stats": queue.stats()}

        def report(event) -> None:  # noqa: ANN001
            if isinstance(event, ev.ResponseDone):
                last["t"], last["stats"] = time.monotonic(), queue.stats()

        result = run_sleepy(queue, Path(a.prompts), Path(a.outdir) / f"{name}.jsonl", item_s=a.item_s,
                            batch_size=4, idle_max_s=a.idle_max, report=report)
        end = time.monotonic()
        idle = queue.stats() - last["stats"]
        row = {"worker": name, "instance": queue.instance, "done": result.done_this_run, "lost": result.lost,
               "requests": result.server_requests, "bytes": result.server_bytes,
               "latencies": queue.latencies, "idle_s": end - last["t"], "idle_requests": idle.requests,
               "idle_bytes": idle.bytes_sent + idle.bytes_received}
        with lock:
            print("ROW " + json.dumps(row), flush=True)

    threads = [threading.Thread(target=one, args=(name,)) for name in a.workers.split(",")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 0


# -- the fleet ------------------------------------------------------------------------------------------------

def _run_fleet(server, n_workers: int, args: argparse.Namespace, rng: random.Random, base: Path) -> dict:
    from lemcore.contribute.lease_keeper import LeaseKeeper
    from lemcore.contribute.queue.base import Completion
    from tests.core.contribute_helpers import (
        duplicates,
        jsonl_indices,
        server_http_stats,
        server_reports,
        sleepy_queue,
        write_prompts,
    )

    server.drop_all()
    run_dir = base / f"fleet-{n_workers}"
    outdir = run_dir / "out"
    outdir.mkdir(parents=True)
    n_items = n_workers * args.items_per_worker
    prompts = write_prompts(run_dir / "prompts.jsonl", n_items)
    names = [f"v{k:03d}" for k in range(n_workers)]
    groups = [names[k::PROCESSES] for k in range(PROCESSES)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), INFLUX_TOKEN=server.token, LEM_NO_OPENBLAS="1",
               LEM_DATA_DIR=str(run_dir / "data"), LEM_CONFIG_DIR=str(run_dir / "config"))
    # A straggler: this process holds the last item (renewing it like a busy worker) until the rest has been
    # done for `hold_s`, so every worker spends a while idle at the end of the set (its polling is measured).
    holder = sleepy_queue(server.url, server.token, "straggler", lease_s=args.lease)
    assert holder.claim([n_items - 1]) == [n_items - 1]
    keeper = LeaseKeeper(holder)
    keeper.hold([n_items - 1], keeper.clocks())
    keeper.start()
    before = server_http_stats(server)
    load_start = _load()
    started = time.monotonic()
    procs = []
    for k, group in enumerate(groups):
        cmd = [sys.executable, "-m", "tests.perf.bench_fleet", "--child", "--url", server.url,
               "--prompts", str(prompts), "--outdir", str(outdir), "--workers", ",".join(group),
               "--lease", str(args.lease), "--item-s", str(args.item_s), "--idle-max", str(args.idle_max)]
        log = open(run_dir / f"proc{k}.log", "wb")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), log))
    # 10% of the workers (one process in ten) sleep for 2.5 leases at a random moment of the first half.
    victim = rng.randrange(PROCESSES)
    time.sleep(rng.uniform(2.0, 2.0 + args.items_per_worker * args.item_s / 2))
    pause = 2.5 * args.lease
    procs[victim][0].send_signal(signal.SIGSTOP)
    time.sleep(pause)
    procs[victim][0].send_signal(signal.SIGCONT)
    while len(server_reports(server)) < n_items - 1:
        time.sleep(1.0)
    time.sleep(args.hold_s)
    holder.report([Completion("gold", n_items - 1, "straggler", f"S{n_items - 1:03d}", "Health",
                              instance=holder.instance)])
    keeper.stop()
    for proc, log in procs:
        proc.wait(timeout=900)
        log.close()
    elapsed = time.monotonic() - started
    load_end = _load()
    after = server_http_stats(server)
    rows = []
    for k in range(PROCESSES):
        text = (run_dir / f"proc{k}.log").read_text()
        if "Traceback" in text:
            raise RuntimeError(f"worker process {k} failed:\n{text[-3000:]}")
        rows += [json.loads(line[4:]) for line in text.splitlines() if line.startswith("ROW ")]
    assert len(rows) == n_workers, (len(rows), n_workers)
    outputs = [outdir / f"{name}.jsonl" for name in names]
    reports = server_reports(server)
    dup_local, dup_server = duplicates(outputs, reports)
    local = set(jsonl_indices(*outputs)) | {n_items - 1}  # the straggler's item (no output file)
    on_server = {i for i, _w, _inst in reports}
    done = len(local)
    latencies = sorted(x for r in rows for x in r["latencies"])
    idle = [r for r in rows if r["idle_s"] >= args.hold_s / 2]
    # influxd's count includes the straggler's renewals and this process's polling: a little above the workers'.
    server_requests = after["queryReq"] + after["writeReq"] - before["queryReq"] - before["writeReq"] - 1
    server_bytes = (after["writeReqBytes"] + after["queryRespBytes"]
                    - before["writeReqBytes"] - before["queryRespBytes"])
    return {
        "workers": n_workers, "items": n_items, "elapsed_s": elapsed, "suspended": len(groups[victim]),
        "pause_s": pause, "duplicates": len(dup_local) + len(dup_server), "dup_local": dup_local,
        "dup_server": dup_server, "gaps": n_items - len(local & on_server),
        "lost_aside": sum(r["lost"] for r in rows),
        "requests_per_item": sum(r["requests"] for r in rows) / max(done, 1),
        "working_requests_per_item": sum(r["requests"] - r["idle_requests"] for r in rows) / max(done, 1),
        "working_bytes_per_item": sum(r["bytes"] - r["idle_bytes"] for r in rows) / max(done, 1),
        "bytes_per_item": sum(r["bytes"] for r in rows) / max(done, 1),
        "server_requests_per_item": server_requests / max(done, 1),
        "server_bytes_per_item": server_bytes / max(done, 1),
        "claim_p50_ms": 1000 * statistics.median(latencies) if latencies else 0.0,
        "claim_p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else 0.0,
        "claim_rounds": len(latencies),
        "idle_rate": (sum(r["idle_requests"] for r in idle) / sum(r["idle_s"] for r in idle)) if idle else 0.0,
        "idle_workers": len(idle),
        "per_worker_done": collections.Counter(r["done"] for r in rows).most_common(3),
        "load_start": load_start, "load_end": load_end,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        return _child(argv[1:])
    from tests import servers

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10,50,200")
    p.add_argument("--items-per-worker", type=int, default=8)
    p.add_argument("--item-s", type=float, default=2.0)
    p.add_argument("--lease", type=float, default=6.0)
    p.add_argument("--idle-max", type=float, default=20.0)
    p.add_argument("--hold-s", type=float, default=40.0, help="idle time at the end of the set")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="lem-bench-fleet-"))
    server = servers.start_influxd(base / "influxd")
    results = []
    try:
        for size in (int(x) for x in args.sizes.split(",")):
            r = _run_fleet(server, size, args, rng, base)
            results.append(r)
            print(f"\n{size} workers, {r['items']} items, {r['elapsed_s']:.0f} s; {r['suspended']} workers "
                  f"suspended {r['pause_s']:.0f} s ({r['load_start']} at start, {r['load_end']} at end)")
            print(f"  duplicates {r['duplicates']}, gaps {r['gaps']}, answers kept aside as lost "
                  f"{r['lost_aside']}   [{r['load_end']}]")
            print(f"  requests per item {r['requests_per_item']:.2f} (influxd counted "
                  f"{r['server_requests_per_item']:.2f}), bytes per item {r['bytes_per_item']:.0f} "
                  f"(influxd: {r['server_bytes_per_item']:.0f} written + answered)   [{r['load_end']}]")
            print(f"  of which until each worker's last answer (without the idle tail): "
                  f"{r['working_requests_per_item']:.2f} requests, {r['working_bytes_per_item']:.0f} bytes per "
                  f"item   [{r['load_end']}]")
            print(f"  claim rounds that won work: p50 {r['claim_p50_ms']:.0f} ms, p99 {r['claim_p99_ms']:.0f} ms "
                  f"over {r['claim_rounds']} rounds   [{r['load_end']}]")
            print(f"  idle polling {r['idle_rate']:.3f} requests/s per idle worker ({r['idle_workers']} workers "
                  f"idle >= {args.hold_s / 2:.0f} s at the end; back-off up to {args.idle_max:.0f} s)   "
                  f"[{r['load_end']}]", flush=True)
            if r["duplicates"] or r["gaps"]:
                print(f"  FAILED: duplicates {r['dup_local']} {r['dup_server']}")
    finally:
        server.stop()
    print("\nrequests per item by fleet size: "
          + ", ".join(f"{r['workers']}: {r['requests_per_item']:.2f} (working {r['working_requests_per_item']:.2f})"
                      for r in results))
    return 0 if all(r["duplicates"] == 0 and r["gaps"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
