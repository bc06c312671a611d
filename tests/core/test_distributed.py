"""Training over several machines, for real: two ranks on this machine (`127.0.0.1,127.0.0.1`, MLX's ring
backend through mlx.launch) stand in for two Macs.

Measured here (2 shared cores, tiny llama, 20 steps, global batch 4): the 2-rank curve follows the 1-process
curve within 2e-6 relative (train and validation losses; the test allows 1e-4; a plain mean of the ranks'
losses, as mlx-lm's own loss gives, is 4e-2 off on this data); trained tokens are equal. The run ends 0.1-0.2 s
after rank 1 is killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest

from lemcore.errors import Cancelled, ConfigError
from lemcore.jobs import CancelToken
from lemcore.train.config import TrainConfig
from lemcore.train.distributed import HostLost, HostSetupError
from lemcore.train.engine import TrainResult, resume_config, train_lora
from lemcore.train.events import (
    CheckpointSaved,
    HostChecked,
    HostStatus,
    TrainFinished,
    TrainStarted,
    TrainStep,
)
from lemcore.train.hosts import LOOPBACK, Host, HostList, launch_hostfile, load_hostfile, parse_hosts
from lemcore.train.launch import train_on_hosts
from lemcore.train.preflight import HostProbe, ProbeRequest, check_hosts, run_probe
from lemcore.train.resume import find_checkpoint
from lemcore.train.run import read_metrics

PAIR = parse_hosts("127.0.0.1,127.0.0.1")
TOLERANCE = 1e-4  # relative, per logged loss; measured 2e-6
REPLIES = ["Yes.", "The volunteers meet every Saturday morning in the old library.",
           "They sort books and repair chairs, then make tea for the others.", "No.",
           "At 9 o'clock the doors open.", "Twelve eggs make a dozen; two dozen is 24.",
           "Ethics is the habit of asking what you owe to other people.", "Keep a few examples aside."]
NAMES = ["Ana", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jon", "Kai", "Lia"]


@pytest.fixture(scope="module", autouse=True)
def _uncompiled(uncompiled_mlx: None) -> None:
    """This process trains uncompiled (tests/conftest.py); the ranks get MLX_DISABLE_COMPILE=1 below."""


@pytest.fixture(autouse=True)
def _uncompiled_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLX_DISABLE_COMPILE", "1")


def _write(folder: Path, name: str, rows: list[tuple[str, str]]) -> None:
    lines = [json.dumps({"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]})
             for p, r in rows]
    (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def varied_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Replies of very different lengths: the two halves of a batch hold different numbers of tokens, so a plain
    mean of the ranks' losses would not equal the batch's loss."""
    folder = tmp_path_factory.mktemp("varied")
    rows = [(f"Who meets on Saturday, {n}?", REPLIES[i % len(REPLIES)]) for i, n in enumerate(NAMES)]
    _write(folder, "train", rows[:8])
    _write(folder, "valid", rows[8:])
    return folder


def config(model: Path, data: Path, run: Path | str, **changes: Any) -> TrainConfig:
    base = dict(model=str(model), data=str(data), adapter_path=str(run), num_layers=-1, batch_size=4,
                learning_rate=1e-3, mask_prompt=True, val_batches=-1, steps_per_eval=10, save_every=10, iters=20,
                steps_per_report=5)
    return TrainConfig(**{**base, **changes})


def _curve(run: Path) -> dict[tuple[str, int], float]:
    return {(r["type"], r["iteration"]): r["train_loss" if r["type"] == "train" else "val_loss"]
            for r in read_metrics(run) if r["type"] in ("train", "val")}


def _assert_same_curve(got: dict[tuple[str, int], float], want: dict[tuple[str, int], float]) -> float:
    assert got.keys() == want.keys()
    worst = max(abs(got[k] - want[k]) / abs(want[k]) for k in want)
    assert worst < TOLERANCE, worst
    return worst


@pytest.fixture(scope="module")
def pair(tiny_llama: Path, varied_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One 2-rank run with global batch 4 (no run folder given: the launcher makes one), and the same run on one
    process."""
    root = tmp_path_factory.mktemp("pair")
    events: list[Any] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLX_DISABLE_COMPILE", "1")
        mp.setenv("LEM_DATA_DIR", str(root / "data"))
        tic = time.monotonic()
        two = train_on_hosts(config(tiny_llama, varied_data, ""), PAIR, report=events.append)
        two_seconds = time.monotonic() - tic
        tic = time.monotonic()
        one = train_lora(config(tiny_llama, varied_data, root / "one"))
        one_seconds = time.monotonic() - tic
    print(f"wall: 2 ranks {two_seconds:.1f} s (with pre-flight and start-up), 1 process {one_seconds:.1f} s; "
          f"training loop: {two.seconds:.2f} s and {one.seconds:.2f} s")
    return {"two": two, "one": one, "events": events, "runs": root / "data" / "runs"}


@pytest.mark.slow
def test_two_ranks_follow_the_one_process_loss_curve(pair: dict[str, Any]) -> None:
    two: TrainResult = pair["two"]
    one: TrainResult = pair["one"]
    assert two.status == one.status == "complete" and two.iterations == 20
    assert two.trained_tokens == one.trained_tokens > 0
    worst = _assert_same_curve(_curve(two.run_dir), _curve(one.run_dir))
    print(f"largest relative loss difference: {worst:.2e}")
    assert two.best_adapter_dir == two.run_dir / "best" and two.data.fingerprint == one.data.fingerprint


@pytest.mark.slow
def test_rank_zero_alone_writes_the_run_and_reports(pair: dict[str, Any]) -> None:
    run: Path = pair["two"].run_dir
    assert [p.name for p in pair["runs"].iterdir()] == [run.name]  # one run folder, made once
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["0000010", "0000020"]
    assert sorted(p.name for p in run.iterdir()) == ["adapter_config.json", "adapters.safetensors", "best",
                                                     "checkpoints", "config.yaml", "metrics.jsonl"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["iteration"] for r in records if r["type"] == "train"]
    assert steps == list(range(1, 21))  # each step once: the other rank wrote nothing
    assert [r["status"] for r in records if r["type"] == "finished"] == ["complete"]

    events = pair["events"]
    assert [type(e) for e in events[:3]] == [HostChecked, HostChecked, TrainStarted]
    assert all(e.ok for e in events[:2]) and [e.rank for e in events[:2]] == [0, 1]
    assert isinstance(events[-1], TrainFinished) and sum(isinstance(e, TrainFinished) for e in events) == 1
    assert [e.iteration for e in events if isinstance(e, TrainStep)] == list(range(1, 21))
    status = [(e.rank, e.iteration) for e in events if isinstance(e, HostStatus)]
    assert status == [(r, k) for k in (0, 5, 10, 15) for r in (0, 1)]
    assert [e.reason for e in events if isinstance(e, CheckpointSaved) and e.reason != "best"] == \
        ["periodic", "final"]


@pytest.mark.slow
def test_stop_and_resume_on_both_machines(tiny_llama: Path, varied_data: Path, tmp_path: Path,
                                          pair: dict[str, Any]) -> None:
    """Rank 1 gets rank 0's checkpoint over the wire (on two Macs it has no copy): the resumed curve is the
    uninterrupted one only if both ranks restored the adapter and the optimizer state."""
    cancel = CancelToken()
    events: list[Any] = []

    def report(event: Any) -> None:
        events.append(event)
        if isinstance(event, TrainStep) and event.iteration == 6:
            cancel.cancel()

    run = tmp_path / "split"
    with pytest.raises(Cancelled, match=r"Cancelled at iteration \d+"):
        train_on_hosts(config(tiny_llama, varied_data, run), PAIR, report=report, cancel=cancel)
    stopped = find_checkpoint(run)
    assert 6 <= stopped.iteration < 20
    assert isinstance(events[-1], TrainFinished) and events[-1].status == "cancelled"
    assert events[-1].iteration == stopped.iteration
    assert (run / "checkpoints" / f"{stopped.iteration:07d}" / "optimizer.safetensors").is_file()

    resumed: list[Any] = []
    result = train_on_hosts(resume_config(run), PAIR, report=resumed.append)
    assert result.iterations == 20 and result.run_dir == run
    started = next(e for e in resumed if isinstance(e, TrainStarted))
    assert started.resumed and started.start_iteration == stopped.iteration
    _assert_same_curve(_curve(run), _curve(pair["one"].run_dir))
    assert len(list((pair["runs"]).iterdir())) == 1  # resuming made no new run folder


@pytest.mark.slow
def test_a_killed_rank_ends_the_run_quickly_and_the_checkpoint_resumes(
        tiny_llama: Path, varied_data: Path, tmp_path: Path) -> None:
    killed_at: list[float] = []
    events: list[Any] = []

    def report(event: Any) -> None:
        events.append(event)
        if isinstance(event, TrainStep) and event.iteration == 12 and not killed_at:
            os.kill(_rank_one().pid, signal.SIGKILL)
            killed_at.append(time.monotonic())

    run = tmp_path / "killed"
    with pytest.raises(HostLost) as info:
        train_on_hosts(config(tiny_llama, varied_data, run, iters=2000, save_every=5), PAIR, report=report)
    seconds = time.monotonic() - killed_at[0]
    print(f"run ended {seconds:.1f} s after the kill")
    assert seconds < 30
    message = str(info.value)
    assert "127.0.0.1 (rank 1) ended unexpectedly (stopped by SIGKILL, signal 9)" in message
    checkpoint = find_checkpoint(run)
    assert checkpoint.iteration >= 10 and f"at iteration {checkpoint.iteration}, is intact in {run}" in message
    assert isinstance(events[-1], TrainFinished) and events[-1].status == "host_lost"
    assert read_metrics(run)[-1]["status"] == "host_lost"
    assert not list((run / "checkpoints").glob("*.tmp"))

    # The same run continues on fewer machines (here: one), from that checkpoint.
    result = train_lora(resume_config(run, iters=checkpoint.iteration + 2))
    assert result.iterations == checkpoint.iteration + 2


def _rank_one() -> psutil.Process:
    found = [p for p in psutil.Process().children(recursive=True)
             if "lemcore.train.worker" in " ".join(p.cmdline()) and p.environ().get("MLX_RANK") == "1"]
    assert len(found) == 1
    return found[0]


@pytest.mark.slow
def test_a_frozen_rank_is_caught_by_the_watchdog(tiny_llama: Path, varied_data: Path, tmp_path: Path) -> None:
    """A machine that stops answering without closing its connections (here: rank 1 frozen with SIGSTOP) would
    block rank 0 in the next collective for good; the launcher's watchdog ends the run."""
    frozen_at: list[float] = []

    def report(event: Any) -> None:
        if isinstance(event, TrainStep) and event.iteration == 12 and not frozen_at:
            os.kill(_rank_one().pid, signal.SIGSTOP)
            frozen_at.append(time.monotonic())

    run = tmp_path / "frozen"
    with pytest.raises(HostLost, match=r"No progress came from the run for \d+ s, so it was stopped") as info:
        train_on_hosts(config(tiny_llama, varied_data, run, iters=2000, save_every=5), PAIR, report=report,
                       stall_seconds=2)
    seconds = time.monotonic() - frozen_at[0]
    print(f"watchdog ended the run {seconds:.1f} s after the freeze")
    assert seconds < 60 and "is intact in" in str(info.value)
    assert find_checkpoint(run).iteration >= 10
    time.sleep(0.5)
    left = [p for p in psutil.process_iter(["cmdline"]) if str(run) in " ".join(p.info["cmdline"] or [])]
    assert not left  # the frozen rank too


@pytest.mark.slow
def test_an_error_on_the_ranks_comes_back_as_itself(tiny_llama: Path, varied_data: Path, tmp_path: Path) -> None:
    """Every rank fails before training (gathered, then raised on all); the launcher raises rank 0's error, of
    its own type, and leaves no empty run folder behind."""
    with pytest.raises(ConfigError, match="Layers is 16 but this model has only 2"):
        train_on_hosts(config(tiny_llama, varied_data, tmp_path / "r", num_layers=16), PAIR)
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_cli_prints_a_multi_machine_run_like_a_local_one(tiny_llama: Path, varied_data: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from lemcore.cli.main import main

    args = ["train", "--model", str(tiny_llama), "--data", str(varied_data), "--num-layers", "-1",
            "--batch-size", "4", "--iters", "4", "--steps-per-report", "2", "--steps-per-eval", "4",
            "--learning-rate", "1e-3", "--mask-prompt"]
    assert main([*args, "--adapter-path", str(tmp_path / "local")]) == 0
    local = capsys.readouterr().out.splitlines()
    assert main([*args, "--adapter-path", str(tmp_path / "two"), "--hosts", "127.0.0.1,127.0.0.1"]) == 0
    two = capsys.readouterr().out.splitlines()
    assert [line for line in two if line.startswith("Machine ")] == [
        line for line in two[:2]] and all(": ready (mlx " in line for line in two[:2])

    def shape(lines: list[str]) -> list[str]:  # what must match: losses, steps, endings (not speeds or paths)
        out = []
        for line in lines:
            if line.startswith("Iter "):
                out.append(line.split(", lr")[0].split(", ")[0])
            elif line.startswith(("Finished", "Warning")):
                out.append(line)
        return out

    assert shape(two[2:]) == shape(local) and "Finished 4 iterations." in two


# -- pre-flight --------------------------------------------------------------------------------------------

def test_preflight_on_this_machine_is_ready(tiny_llama: Path, varied_data: Path) -> None:
    seen: list[Any] = []
    result = check_hosts(parse_hosts("127.0.0.1,localhost"), config=config(tiny_llama, varied_data, ""),
                         report=seen.append)
    assert result.ok, result.problems
    assert [(e.rank, e.host) for e in seen] == [(0, LOOPBACK), (1, LOOPBACK)]
    assert "mlx 0.32" in seen[0].summary and f"port {result.port + 1} free" in seen[1].summary


def test_preflight_finds_a_missing_model_here(varied_data: Path, tmp_path: Path) -> None:
    result = check_hosts(PAIR, config=config(tmp_path / "no-such-model", varied_data, ""))
    assert not result.ok
    assert any("127.0.0.1 does not have the model" in p and "no-such-model" in p for p in result.problems)


def test_preflight_reports_a_version_mismatch_and_a_missing_model(tiny_llama: Path, varied_data: Path,
                                                                   tmp_path: Path) -> None:
    import socket

    here, other = Host(socket.gethostname(), ("10.0.0.1",)), Host("mac2", ("10.0.0.2",))

    def probe(host: Host, request: ProbeRequest) -> HostProbe:
        found = run_probe(Host(LOOPBACK), request)  # this machine's real answer
        if host.ssh == "mac2":  # the other Mac: an older MLX and no model
            return replace(found, hostname="mac2", versions={**found.versions, "mlx": "0.31.0"}, model_found=False)
        return found

    hosts = HostList((here, other))
    cfg = config(tiny_llama, varied_data, tmp_path / "never")
    result = check_hosts(hosts, config=cfg, probe=probe)
    assert [h.ok for h in result.hosts] == [True, False]
    problems = result.hosts[1].problems
    assert any(p.startswith("mac2 has mlx 0.31.0, this machine has 0.32") and "pip install mlx==" in p
               for p in problems), problems
    assert any(p.startswith(f"mac2 does not have the model {tiny_llama}") for p in problems), problems
    with pytest.raises(HostSetupError, match="(?s)Not every machine is ready.*mac2 has mlx 0.31.0"):
        train_on_hosts(cfg, hosts, probe=probe)
    assert not (tmp_path / "never").exists()  # nothing started


def test_preflight_names_a_machine_ssh_cannot_reach(tiny_llama: Path, varied_data: Path) -> None:
    result = check_hosts(parse_hosts("127.0.0.1,nowhere.invalid"))
    far = result.hosts[1]
    assert not far.ok and far.problems[0].startswith("Cannot log in to nowhere.invalid over SSH without a password")
    assert "ssh-copy-id nowhere.invalid" in far.problems[0]
    assert any("127.0.0.1 reaches only this machine" in p for p in result.hosts[0].problems)


def test_preflight_checks_where_the_ranks_run() -> None:
    here = run_probe(Host(LOOPBACK), ProbeRequest())

    def probe(host: Host, request: ProbeRequest) -> HostProbe:  # every machine answers like this one
        return replace(here, ports_free={p: True for p in request.ports})

    lan = HostList((Host(LOOPBACK, ("10.0.0.1",)), Host("mac2", ("10.0.0.2",))))  # this Mac, reached on the LAN
    assert check_hosts(lan, probe=probe).ok
    inward = check_hosts(HostList((Host(LOOPBACK, (LOOPBACK,)), Host("mac2", ("10.0.0.2",)))), probe=probe)
    assert [h.ok for h in inward.hosts] == [False, True]
    assert "127.0.0.1 reaches only this machine" in inward.hosts[0].problems[0]
    swapped = check_hosts(HostList((Host("mac2", ("10.0.0.2",)), Host(LOOPBACK, ("10.0.0.1",)))), probe=probe)
    assert swapped.hosts[0].problems[0].startswith("mac2 is first in the list, so it would write the run folder")


def test_doctor_hosts_runs_the_preflight_alone(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from lemcore.cli.main import main

    assert main(["doctor", "--hosts", "127.0.0.1,127.0.0.1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(line.startswith("OK ") and "mlx 0.32" in line for line in out)
    assert main(["doctor", "--hosts", "127.0.0.1,127.0.0.1", "--model", str(tmp_path / "gone")]) == 1
    out = capsys.readouterr().out
    assert out.count("FAIL") == 2 and "does not have the model" in out


# -- host lists ----------------------------------------------------------------------------------------------

def test_host_lists_and_hostfiles(tmp_path: Path) -> None:
    assert parse_hosts("localhost, mac2.local").names == (LOOPBACK, "mac2.local")
    with pytest.raises(ConfigError, match="empty name"):
        parse_hosts("mac1,,mac2")
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}, {"ssh": "mac2", "ips": ["10.0.0.2"]}]))
    hosts = load_hostfile(listed)
    assert hosts.names == (LOOPBACK, "mac2") and hosts.hosts[1].ips == ("10.0.0.2",)
    assert launch_hostfile(hosts, "ring")["hosts"][1] == {"ssh": "mac2", "ips": ["10.0.0.2"], "rdma": []}
    full = tmp_path / "full.json"
    full.write_text(json.dumps({"backend": "jaccl", "envs": ["MLX_METAL_FAST_SYNCH=1"],
                                "hosts": [{"ssh": "m1", "ips": ["10.0.0.1"], "rdma": [None, "rdma_en2"]},
                                          {"ssh": "m2", "ips": ["10.0.0.2"], "rdma": ["rdma_en2", None]}]}))
    jaccl = load_hostfile(full)
    assert jaccl.backend == "jaccl" and jaccl.envs == ("MLX_METAL_FAST_SYNCH=1",)
    assert launch_hostfile(jaccl, "jaccl")["hosts"][0]["rdma"] == [None, "rdma_en2"]
    (tmp_path / "bad.json").write_text('{"machines": []}')
    with pytest.raises(ConfigError, match="not in mlx.launch's format"):
        load_hostfile(tmp_path / "bad.json")


def test_the_batch_must_split_evenly(tiny_llama: Path, varied_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Batch size 3 cannot be split evenly over 2 machines"):
        train_on_hosts(config(tiny_llama, varied_data, tmp_path / "r", batch_size=3), PAIR)

