"""Coordination of volunteers against the REAL InfluxDB server (docs/coordination.md): instances, leases that mean
what they say, fencing after gaps, and a server load that grows with the work, not the fleet.

"Duplicate" = an item executed twice that reached an output file or the server. Every fleet test also checks
gaps (an item nobody finished) and losses (a finished answer missing from every output).
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from lemcore.contribute.events import FleetProgress
from lemcore.contribute.lease_keeper import EXPIRED, LOST, PAUSED, UNKNOWN, LeaseKeeper, PauseWatch
from lemcore.contribute.queue.base import DONE, OWNED, TAKEN, ClaimOutcome, Completion, as_fenced
from lemcore.contribute.queue.lab import Claim, holder
from tests.core.contribute_helpers import (
    duplicates,
    jsonl_indices,
    run_sleepy,
    server_claims,
    server_http_stats,
    server_reports,
    sleepy_queue,
    sleepy_worker_cmd,
    start,
    worker_cmd,
    worker_env,
    write_prompts,
    write_small_kernel,
)

S = 1_000_000_000  # ns


def check_fleet(n_items: int, outputs: list, reports: list) -> None:
    """0 duplicates, 0 gaps, nothing lost: every item in exactly one output line and one server report."""
    dup_local, dup_server = duplicates(outputs, reports)
    assert dup_local == [], f"generated twice and written to an output: {dup_local}"
    assert dup_server == [], f"reported twice: {dup_server}"
    local = sorted(jsonl_indices(*outputs))
    assert local == list(range(n_items)), f"gaps in the outputs: {sorted(set(range(n_items)) - set(local))}"
    assert sorted(i for i, _w, _inst in reports) == list(range(n_items)), "gaps on the server"


def run_threads(jobs: dict, timeout: float = 300) -> dict:
    """Run each job (name -> callable) on its own thread; re-raise the first failure."""
    results: dict = {}
    errors: list[BaseException] = []

    def go(name, fn) -> None:
        try:
            results[name] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test's thread
            errors.append(err)

    threads = [threading.Thread(target=go, args=item, name=f"worker-{item[0]}") for item in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    if errors:
        raise errors[0]
    assert all(not t.is_alive() for t in threads), "a worker did not finish in time"
    return results


# -- the rule that decides who holds an item (no server) ----------------------------------------------------

def test_each_claim_is_judged_by_its_own_lease() -> None:
    # A claimed with a 600 s lease and renews every 200 s; B (5 s lease) comes 100 s later: A still holds it.
    claims = [Claim(0, 600 * S, "A"), Claim(100 * S, 5 * S, "B")]
    assert holder(claims, 100 * S)[0] == "A"
    assert holder(claims, 599 * S)[0] == "A"
    assert holder(claims, 601 * S) is None  # A's lease over, B's long gone


def test_a_run_broken_by_a_gap_loses_to_whoever_came_meanwhile() -> None:
    # A (10 s lease) renews at 5 s, then sleeps; B claims at 20 s and renews at 27 s; A wakes at 30 s and
    # renews: a new run, which started after B's.
    claims = [Claim(0, 10 * S, "A"), Claim(5 * S, 10 * S, "A"), Claim(20 * S, 10 * S, "B"),
              Claim(27 * S, 10 * S, "B"), Claim(30 * S, 10 * S, "A")]
    assert holder(claims, 30 * S)[0] == "B"
    # Had nobody come, A's new run holds it.
    assert holder([c for c in claims if c.owner == "A"], 30 * S)[0] == "A"


def test_release_and_ties() -> None:
    assert holder([Claim(0, 10 * S, "A"), Claim(1 * S, 0, "A")], 2 * S) is None  # released
    assert holder([Claim(0, 10 * S, "b#2"), Claim(0, 10 * S, "b#1")], 1 * S)[0] == "b#1"  # same stamp: smaller id
    # A claim from before instances (no inst field) belongs to its worker name.
    assert holder([Claim(0, 120 * S, "old-host"), Claim(S, 120 * S, "new#1")], 2 * S)[0] == "old-host"


class _FakeQueue:
    """A FencedQueue stand-in for the lease keeper's unit test: records renewals, answers verify."""

    kind, worker, lease_s, instance = "gold", "w", 3.0, "w#1"

    def __init__(self) -> None:
        self.renewed: list[list[int]] = []
        self.verified: list[list[int]] = []
        self.taken: set[int] = set()

    def renew(self, idxs) -> None:
        self.renewed.append(list(idxs))

    def verify(self, idxs) -> dict[int, str]:
        self.verified.append(list(idxs))
        return {i: TAKEN if i in self.taken else OWNED for i in idxs}

    def for_thread(self):
        return self


def test_keeper_renews_on_time_and_rechecks_everything_after_a_pause() -> None:
    clock = {"t": 1000.0}
    queue = _FakeQueue()
    keeper = LeaseKeeper(queue, threaded=False, mono=lambda: clock["t"], wall=lambda: clock["t"])
    keeper.hold([1, 2, 3], keeper.clocks())
    assert keeper.state(1) == OWNED and keeper.state(9) == UNKNOWN
    for _ in range(10):  # 10 s of a 3 s lease, ticked every second: renewed, never stale
        clock["t"] += 1.0
        keeper.tick_inline()
    assert keeper.state(1) == OWNED and len(queue.renewed) >= 9 and queue.verified == []
    # The computer sleeps 20 s; meanwhile someone took item 2.
    queue.taken = {2}
    clock["t"] += 20.0
    assert keeper.state(1) == UNKNOWN  # no longer surely ours: the engine would ask before reporting
    keeper.tick_inline()
    assert sorted(queue.verified[-1]) == [1, 2, 3]
    assert keeper.state(1) == OWNED and keeper.state(2) == LOST
    assert [(x.idx, x.verdict) for x in keeper.take_lost()] == [(2, TAKEN)]
    assert keeper.holding() == {1, 3}


def test_keeper_thread_notices_a_pause() -> None:
    clock = {"t": 0.0}
    queue = _FakeQueue()
    keeper = LeaseKeeper(queue, mono=lambda: clock["t"], wall=lambda: clock["t"])  # threaded, fake clocks
    keeper.interval_s = 0.05
    keeper.hold([7], keeper.clocks())
    queue.taken = {7}
    keeper.start()
    try:
        clock["t"] += 30.0  # the thread "wakes" 30 s late
        deadline = time.monotonic() + 5
        while keeper.state(7) != LOST and time.monotonic() < deadline:
            time.sleep(0.02)
        lost = keeper.take_lost()
        assert [(x.idx, x.verdict, x.cause) for x in lost] == [(7, TAKEN, PAUSED)]
        # Nothing is held any more: the next rounds clear the pause, but item 7 keeps the cause it was lost
        # with, so a message written later about it (the engine's) still says why.
        while keeper.cause() == PAUSED and time.monotonic() < deadline:
            time.sleep(0.02)
        assert keeper.cause() == EXPIRED and keeper.cause(7) == PAUSED
    finally:
        keeper.stop()


def test_pause_watch_is_overdue_right_after_a_resume_before_it_wakes() -> None:
    """The engine's thread may find a loss before the watch has run again: an overdue watch says "paused"."""
    clock = {"t": 0.0}
    noted: list[float] = []
    watch = PauseWatch(lambda: clock["t"], lambda: clock["t"], lambda: noted.append(clock["t"]),
                       period_s=5.0, slack_s=1.0)  # its thread sleeps 5 real seconds: it will not run below
    assert not watch.overdue()  # not started: it says nothing
    watch.start()
    try:
        clock["t"] += 5.5
        assert not watch.overdue()  # within the period and slack
        clock["t"] += 30.0
        assert watch.overdue() and noted == []
    finally:
        watch.stop()
    assert not watch.overdue()


def test_pause_watch_notes_a_late_wake_once_and_only_when_late() -> None:
    clock = {"mono": 0.0, "wall": 0.0}
    noted: list[float] = []
    watch = PauseWatch(lambda: clock["mono"], lambda: clock["wall"], lambda: noted.append(clock["wall"]),
                       period_s=0.02, slack_s=1.0)
    watch.start()
    try:
        for _ in range(20):  # on time: the fake clocks move with each wake, well within the slack
            clock["mono"] += 0.02
            clock["wall"] += 0.02
            time.sleep(0.02)
        assert noted == []
        clock["wall"] += 30.0  # a system sleep: the wall clock jumps, the monotonic clock does not
        deadline = time.monotonic() + 5
        while not noted and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
    finally:
        watch.stop()
    assert len(noted) == 1 and not watch.overdue()


def test_plain_queues_get_defaults(tmp_path) -> None:
    class Plain:
        kind, worker, lease_s = "gold", "w", 60.0

        def __init__(self) -> None:
            self.claims: list[list[int]] = []

        def completed(self) -> set[int]:
            return {2}

        def claim(self, candidates):
            self.claims.append(list(candidates))
            return candidates[:1]

        def renew(self, idxs) -> None:
            pass

        def release(self, idxs) -> None:
            pass

        def report(self, completions) -> None:
            pass

        def progress(self, completed, target) -> None:
            pass

    plain = Plain()
    fenced = as_fenced(plain)
    assert fenced.instance == "w" and fenced.for_thread() is None
    out = fenced.claim_round([1, 2, 3, 4], 2)
    assert out == ClaimOutcome([1], frozenset({2}), {3: 60.0}) and plain.claims == [[1, 3]]
    assert fenced.verify([1, 2]) == {1: OWNED, 2: DONE}


# -- against the real server --------------------------------------------------------------------------------

@pytest.mark.slow
def test_twins_with_the_same_name_do_no_item_twice(tmp_path, influx, tiny_llama) -> None:
    """The app and `lem gold` on one Mac: same worker name (the host name), same output file."""
    n = 60
    prompts = write_prompts(tmp_path / "prompts.jsonl", n)
    kernel = write_small_kernel(tmp_path / "kernel")
    out = tmp_path / "gold-mac.jsonl"
    env = worker_env(tmp_path, influx.token)
    extra = ["--lease", "30", "--max-tokens", "12", "--batch-size", "4"]
    procs = [start(worker_cmd(tiny_llama, prompts, out, "mac", kernel, influx_url=influx.url, extra=extra), env,
                   tmp_path / f"twin{k}.log") for k in range(2)]
    for k, proc in enumerate(procs):
        assert proc.wait(timeout=600) == 0, (tmp_path / f"twin{k}.log").read_text()[-2000:]
    reports = server_reports(influx)
    check_fleet(n, [out], reports)
    assert {w for _i, w, _inst in reports} == {"mac"}  # the dashboards still show the name
    instances = {inst for _i, _w, inst in reports}
    assert len(instances) == 2 and all(inst.startswith("mac#") for inst in instances), instances  # both worked


@pytest.mark.slow
def test_different_leases_600_and_5_do_no_item_twice(tmp_path, influx) -> None:
    n = 16
    prompts = write_prompts(tmp_path / "p.jsonl", n)
    outs = {"long": tmp_path / "long.jsonl", "short": tmp_path / "short.jsonl"}
    queues = {"long": sleepy_queue(influx.url, influx.token, "long", lease_s=600),
              "short": sleepy_queue(influx.url, influx.token, "short", lease_s=5)}
    # 2 s per item, 4 claimed at a time: the long-lease worker's waiting claims are far older than 5 s.
    run_threads({name: (lambda name=name: run_sleepy(queues[name], prompts, outs[name], item_s=2.0, batch_size=4,
                                                     idle_max_s=5))
                 for name in queues})
    reports = server_reports(influx)
    check_fleet(n, list(outs.values()), reports)
    assert {w for _i, w, _inst in reports} == {"long", "short"}


@pytest.mark.slow
def test_slow_worker_whose_items_outlast_the_lease(tmp_path, influx) -> None:
    """Each of the slow worker's items takes 5 s against a 3 s lease, the engine's thread never ticks while it
    works (a long prefill), and the second item of each claim waits 5 s in the pool: the keeper renews both."""
    n = 12
    prompts = write_prompts(tmp_path / "p.jsonl", n)
    outs = {"slow": tmp_path / "slow.jsonl", "fast": tmp_path / "fast.jsonl"}
    slow = sleepy_queue(influx.url, influx.token, "slow", lease_s=3)
    fast = sleepy_queue(influx.url, influx.token, "fast", lease_s=3)
    results = run_threads({
        "slow": lambda: run_sleepy(slow, prompts, outs["slow"], item_s=5.0, batch_size=2, idle_max_s=3),
        "fast": lambda: run_sleepy(fast, prompts, outs["fast"], item_s=0.4, batch_size=2, idle_max_s=3),
    })
    reports = server_reports(influx)
    check_fleet(n, list(outs.values()), reports)
    mine = [i for i, _w, inst in reports if inst == slow.instance]
    assert mine and results["slow"].lost == 0, (mine, results["slow"])
    for idx in mine:  # the slow worker's claims on its items: no gap as long as the lease
        stamps = [t for t, inst, lease in server_claims(influx, idx) if inst == slow.instance and lease > 0]
        gaps = [(b - a) / S for a, b in zip(stamps, stamps[1:])]
        assert len(stamps) >= 4 and max(gaps) < 3.0, (idx, gaps)


@pytest.mark.slow
def test_worker_stopped_past_its_lease_reports_nothing_it_lost(tmp_path, influx) -> None:
    """SIGSTOP (a laptop asleep) for 12 s against a 4 s lease while another worker goes on, then SIGCONT."""
    n = 24
    prompts = write_prompts(tmp_path / "p.jsonl", n)
    env = worker_env(tmp_path, influx.token)
    outs = {"sleeper": tmp_path / "sleeper.jsonl", "other": tmp_path / "other.jsonl"}
    logs = {name: tmp_path / f"{name}.log" for name in outs}
    sleeper = start(sleepy_worker_cmd(influx.url, prompts, outs["sleeper"], "sleeper", lease_s=4, item_s=1.5,
                                      batch_size=4, idle_max_s=3), env, logs["sleeper"])
    deadline = time.monotonic() + 60
    while len(jsonl_indices(outs["sleeper"])) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    other = start(sleepy_worker_cmd(influx.url, prompts, outs["other"], "other", lease_s=4, item_s=0.5,
                                    batch_size=2, idle_max_s=3), env, logs["other"])
    time.sleep(0.5)
    sleeper.send_signal(signal.SIGSTOP)
    try:
        time.sleep(12)
    finally:
        sleeper.send_signal(signal.SIGCONT)
    for name, proc in (("sleeper", sleeper), ("other", other)):
        assert proc.wait(timeout=300) == 0, logs[name].read_text()[-3000:]
    reports = server_reports(influx)
    check_fleet(n, list(outs.values()), reports)
    log = logs["sleeper"].read_text()
    assert "Traceback" not in log
    noted = [row for row in log.splitlines() if row.startswith("ClaimLost: ")]
    assert noted, log[-3000:]  # it held items when it stopped: each is noted as lost, none reported
    assert all("while this computer was asleep or paused" in row or "finished by another volunteer" in row
               for row in noted), noted
    lost_file = outs["sleeper"].with_name(outs["sleeper"].name + ".lost.jsonl")
    kept_aside = jsonl_indices(lost_file)
    assert not set(kept_aside) & {i for i, w, _inst in reports if w == "sleeper"}  # aside, not reported


@pytest.mark.slow
def test_idle_worker_at_the_end_of_a_set_backs_off(tmp_path, influx) -> None:
    """Everything left is held by someone else: the idle worker asks less and less often, then ends as soon
    as the holder has reported."""
    n = 6
    prompts = write_prompts(tmp_path / "p.jsonl", n)
    holder_q = sleepy_queue(influx.url, influx.token, "holder", lease_s=20)
    assert sorted(holder_q.claim(list(range(n)))) == list(range(n))
    keeper = LeaseKeeper(holder_q)  # keeps the holder's claims alive like a busy worker would
    keeper.hold(range(n), keeper.clocks())
    keeper.start()
    idle_q = sleepy_queue(influx.url, influx.token, "idle", lease_s=20)
    events: list = []
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault(
        "r", run_sleepy(idle_q, prompts, tmp_path / "idle.jsonl", item_s=0.1, idle_max_s=30,
                        report=events.append)))
    try:
        thread.start()
        time.sleep(15)
        before, t0 = idle_q.stats(), time.monotonic()
        time.sleep(30)
        window = idle_q.stats() - before
        rate = window.requests / (time.monotonic() - t0)
        print(f"idle worker after its back-off: {window.requests} requests in 30 s = {rate:.3f}/s, "
              f"{window.bytes_sent + window.bytes_received} bytes")
        assert rate < 0.35, window
        holder_q.report([Completion("gold", i, "holder", f"S{i:03d}", "Health", instance=holder_q.instance)
                         for i in range(n)])
    finally:
        keeper.stop()
        thread.join(60)
    assert not thread.is_alive() and result["r"].done_this_run == 0 and result["r"].remaining == 0
    assert [e for e in events if isinstance(e, FleetProgress)][-1].completed == n


@pytest.mark.slow
def test_queries_per_completed_item(tmp_path, influx) -> None:
    n, fleet = 60, 4
    prompts = write_prompts(tmp_path / "p.jsonl", n)
    queues = [sleepy_queue(influx.url, influx.token, f"w{k}", lease_s=10) for k in range(fleet)]
    outs = [tmp_path / f"w{k}.jsonl" for k in range(fleet)]
    server_before = server_http_stats(influx)
    results = run_threads({k: (lambda k=k: run_sleepy(queues[k], prompts, outs[k], item_s=0.2, batch_size=4,
                                                      idle_max_s=5))
                           for k in range(fleet)})
    server_after = server_http_stats(influx)
    reports = server_reports(influx)
    check_fleet(n, outs, reports)
    requests = sum(r.server_requests for r in results.values())
    spent = sum(r.server_bytes for r in results.values())
    server_requests = (server_after["queryReq"] + server_after["writeReq"]
                       - server_before["queryReq"] - server_before["writeReq"] - 1)  # - our SHOW STATS
    print(f"{fleet} workers, {n} items: {requests / n:.2f} requests and {spent / n:.0f} bytes per item "
          f"(server counted {server_requests / n:.2f} requests per item)")
    assert requests / n < 3.5  # measured 2.7: one report each, claim rounds of 4, the start and the end
    assert abs(server_requests - requests) <= 2 * fleet  # our counters agree with the server's

