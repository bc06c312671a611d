"""One training run over several machines: check them, start `train_lora` on each with `mlx.launch`, and follow
rank 0 from here, so the caller gets the same events and result as from a run on this machine.

- Pre-flight (preflight.py) first; then the run folder is made here (rank 0 is this machine).
- `mlx.launch` starts `python -m lemcore.train.worker` once per machine (ring backend unless told otherwise) in
  its own session, so Ctrl-C reaches only this process, which turns it into a stop request.
- Rank 0's events come back as records on its standard output (wire.py) and go to `report` unchanged.
- Cancel: a stop file on this machine, which rank 0 watches; the ranks agree on the step, rank 0 saves a
  checkpoint and the run ends with Cancelled, as on one machine.
- A machine lost mid-run: MLX's ring backend fails the next collective on the other ranks ("connection to a
  peer was lost"), and mlx.launch ends every rank once one has died: measured 0.1 s from a SIGKILL to the end of
  the run (tests/core/test_distributed.py).
  Should no progress come at all (a machine gone without closing its connections), a watchdog ends the run
  after `stall_seconds`, or three times the longest gap seen between two events if that is longer. Either way
  the run folder keeps its last checkpoint (written atomically), the message names the machine when it can,
  and the run resumes on the same machines or fewer (the global batch is the same on any number).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from lemcore.errors import Cancelled, ConfigError, LemError
from lemcore.jobs import CancelToken, Report, no_report
from lemcore.models.loading import resolve_model
from lemcore.train.config import TrainConfig
from lemcore.train.distributed import HOSTS_ENV, HostLost, error_named
from lemcore.train.engine import TrainResult
from lemcore.train.events import TrainFinished, TrainStarted, TrainStep
from lemcore.train.hosts import BACKENDS, HostList, launch_hostfile
from lemcore.train.preflight import Probe, check_hosts, run_probe
from lemcore.train.resume import find_checkpoint
from lemcore.train.run import MetricsLog, new_run_dir
from lemcore.train.wire import event_of, from_plain, read_record
from lemcore.train.worker import EXIT_LOST

log = logging.getLogger(__name__)

STALL_SECONDS = 120.0  # no event for this long (or 3x the longest gap so far) after the first step: stop
STOP_GRACE_SECONDS = 300.0  # after a cancel, how long the ranks get to reach the next step and save
_EXIT = re.compile(r"Node with rank (\d+) (?:(was killed)|exited with code (-?\d+))")  # mlx.launch's words
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class _Exit:
    rank: int
    code: int | None
    killed: bool  # mlx.launch stopped it because another rank had ended


def train_on_hosts(config: TrainConfig, hosts: HostList, *, report: Report = no_report,
                   cancel: CancelToken | None = None, backend: str = "", port: int | None = None,
                   probe: Probe = run_probe, stall_seconds: float = STALL_SECONDS) -> TrainResult:
    """`train_lora(config)` over `hosts` (this machine first); blocking. The global batch is
    `config.batch_size`, split evenly over the machines. Reports a HostChecked per machine, then the events of
    a local run plus a HostStatus per machine with each reported step. Raises what train_lora raises, plus
    HostSetupError (a machine is not ready: nothing started) and HostLost (a machine stopped mid-run)."""
    config.validate()
    cancel = cancel or CancelToken()
    backend = backend or hosts.backend or "ring"
    if backend not in BACKENDS:
        raise ConfigError(f"Unknown backend {backend!r}. Use one of {', '.join(BACKENDS)}.")
    if config.batch_size % len(hosts):
        raise ConfigError(f"Batch size {config.batch_size} cannot be split evenly over {len(hosts)} machines. "
                          f"Use a multiple of {len(hosts)}.")
    config = _same_paths_everywhere(config)
    run_dir = find_checkpoint(config.resume_from).run_dir if config.resume_from else None
    checked = check_hosts(hosts, config=config, port=port, probe=probe, report=report)
    checked.raise_for_problems()
    cancel.check()
    new = run_dir is None
    if run_dir is None:
        run_dir = new_run_dir(config)
        config = config.with_changes(adapter_path=str(run_dir))
    try:
        with tempfile.TemporaryDirectory(prefix="lem-hosts-") as tmp:
            hostfile = Path(tmp) / "hostfile.json"
            hostfile.write_text(json.dumps(launch_hostfile(hosts, backend)), encoding="utf-8")
            command = launch_command(hostfile, backend, checked.port, hosts, config, Path(tmp) / "stop")
            return _Follow(hosts, run_dir, Path(tmp) / "stop", report, cancel, stall_seconds).run(command)
    finally:
        if new and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # made here for rank 0, which stopped before writing anything: no empty run left


def _same_paths_everywhere(config: TrainConfig) -> TrainConfig:
    """Absolute data and model paths: every machine opens the same path (the pre-flight checks they exist)."""
    changes: dict[str, Any] = {"data": str(Path(config.data).expanduser().resolve())}
    try:
        ref = resolve_model(config.model)
    except LemError:
        ref = None
    if ref is not None and ref.kind == "folder" and ref.folder is not None:
        changes["model"] = str(Path(ref.folder).resolve())
    return config.with_changes(**changes)


def launch_command(hostfile: Path, backend: str, port: int, hosts: HostList, config: TrainConfig,
                   stop_file: Path) -> list[str]:
    """`mlx.launch` (the venv's script, else its module) starting the worker on every machine."""
    script = Path(sys.executable).with_name("mlx.launch")
    head = [str(script)] if script.is_file() else \
        [sys.executable, "-c", "import sys; from mlx._distributed_utils.launch import main; sys.exit(main())"]
    return [*head, "--hostfile", str(hostfile), "--backend", backend, "--starting-port", str(port),
            "--env", f"{HOSTS_ENV}={hosts.describe()}", "--",
            sys.executable, "-m", "lemcore.train.worker", "--config", json.dumps(asdict(config)),
            "--stop-file", str(stop_file)]


class _Follow:
    """Runs the launch command and follows it to the end (see the module docstring)."""

    def __init__(self, hosts: HostList, run_dir: Path, stop_file: Path, report: Report, cancel: CancelToken,
                 stall_seconds: float) -> None:
        self.hosts, self.run_dir, self.stop_file = hosts, run_dir, stop_file
        self.report, self.cancel, self.stall_seconds = report, cancel, stall_seconds
        self.lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self.result: TrainResult | None = None
        self.error: tuple[str, str] | None = None
        self.lost: str | None = None
        self.crash: tuple[int, str] | None = None
        self.others: dict[int, dict[str, Any]] = {}  # records of other ranks (on stderr)
        self.exits: list[_Exit] = []
        self.tail: deque[str] = deque(maxlen=20)
        self.started: TrainStarted | None = None
        self.finished: TrainFinished | None = None
        self.iteration = 0
        self.stalled = 0.0

    def where(self, rank: int) -> str:
        names = self.hosts.names
        return f"{names[rank] if rank < len(names) else 'a machine'} (rank {rank})"

    # -- following --------------------------------------------------------------------------------------------
    def run(self, command: list[str]) -> TrainResult:
        log.info("Starting %d ranks: %s", len(self.hosts), " ".join(command[:8]))
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)  # its own group: Ctrl-C comes here, we stop it
        assert proc.stdout is not None and proc.stderr is not None
        readers = [threading.Thread(target=self._read, args=(name, stream), name=f"lem-launch-{name}", daemon=True)
                   for name, stream in (("out", proc.stdout), ("err", proc.stderr))]
        for reader in readers:
            reader.start()
        try:
            self._follow(proc)
        finally:
            _stop_group(proc)
            for reader in readers:
                reader.join(5.0)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        return self._outcome()

    def _read(self, name: str, stream: IO[bytes]) -> None:
        for raw in stream:
            self.lines.put((name, raw.decode("utf-8", errors="replace")))
        self.lines.put((name, None))

    def _follow(self, proc: subprocess.Popen[bytes]) -> None:
        open_streams, stop_asked = 2, 0.0
        last = longest = 0.0
        while open_streams:
            try:
                name, line = self.lines.get(timeout=0.25)
            except queue.Empty:
                name, line = "", ""
            now = time.monotonic()
            if name and line is None:
                open_streams -= 1
            elif name == "out" and line and self._on_output(line):
                if last:
                    longest = max(longest, now - last)  # from TrainStarted on: the first validation counts
                last = now if self.started is not None else 0.0
            elif name == "err" and line:
                self._on_error_output(line)
            if self.cancel.cancelled and not stop_asked:
                self.stop_file.touch()
                stop_asked = now
            if stop_asked and now - stop_asked > STOP_GRACE_SECONDS:
                log.warning("The ranks did not stop within %.0f s of the request; ending them.", STOP_GRACE_SECONDS)
                _stop_group(proc)
            limit = max(self.stall_seconds, 3 * longest)
            if self.iteration and last and now - last > limit and not self.stalled and proc.poll() is None:
                self.stalled = now - last
                _stop_group(proc)
        proc.wait()

    def _on_output(self, line: str) -> bool:
        """Rank 0's output line; True when it was a record (progress)."""
        record = read_record(line)
        if record is None:
            log.info("rank 0: %s", line.rstrip())
            return False
        if "event" in record:
            event = event_of(record)
            if event is None:
                return True
            if isinstance(event, TrainStarted):
                self.started = event
            elif isinstance(event, TrainStep):
                self.iteration = event.iteration
            elif isinstance(event, TrainFinished):
                self.finished = event
            self.report(event)
        elif "result" in record:
            self.result = from_plain(TrainResult, record["result"])
        elif "error" in record:
            self.error = (str(record["error"][0]), str(record["error"][1]))
        elif "lost" in record:
            self.lost = str(record["lost"])
        elif "crash" in record:
            self.crash = (0, str(record["crash"]))
        return True

    def _on_error_output(self, line: str) -> None:
        line = _ANSI.sub("", line).rstrip()
        record = read_record(line)
        if record is not None:
            self.others[int(record.get("rank", -1))] = record
            return
        if found := _EXIT.search(line):
            code = int(found.group(3)) if found.group(3) else None
            self.exits.append(_Exit(int(found.group(1)), code, bool(found.group(2))))
        if line.strip():
            self.tail.append(line)
            log.info("ranks: %s", line)

    # -- the end --------------------------------------------------------------------------------------------
    def _outcome(self) -> TrainResult:
        if self.result is not None:
            return self.result
        if self.error is not None and not self.stalled:
            raise error_named(*self.error)
        crash = self.crash or next(((r, str(rec["crash"])) for r, rec in self.others.items() if "crash" in rec),
                                   None)
        if crash is not None:  # a bug, not a lost machine: shown with the log
            raise RuntimeError(f"Training failed on {self.where(crash[0])}: {crash[1]}")
        if self.cancel.cancelled and not self.stalled:
            raise Cancelled("Stopped before the machines could agree on a step to save; the run keeps its last "
                            f"checkpoint. {self._where_to_resume()}")
        culprit = self._culprit()
        if self.stalled:
            what = (f"No progress came from the run for {self.stalled:.0f} s, so it was stopped: a machine, or "
                    "the network between them, may have stopped.")
        elif culprit is not None:
            what = f"The training process on {self.where(culprit.rank)} ended unexpectedly ({_why(culprit)})."
        else:
            last = self.tail[-1] if self.tail else "no message"
            what = f"The training processes ended without finishing ({last})."
        if self.started is None:
            raise HostLost(f"{what} Training had not begun. Check that machine, then start again.")
        message = f"{what} {self._where_to_resume()}"
        if self.finished is None:
            self._record_end(message)
        raise HostLost(message)

    def _culprit(self) -> _Exit | None:
        """The rank that ended first on its own (not stopped by mlx.launch, not one that only noticed the loss)."""
        def own(e: _Exit) -> bool:
            return not e.killed and e.code not in (None, 0, -signal.SIGTERM, 128 + signal.SIGTERM)
        candidates = [e for e in self.exits if own(e)]
        first = [e for e in candidates if e.code != EXIT_LOST] or candidates
        return first[0] if first else None

    def _where_to_resume(self) -> str:
        try:
            checkpoint = find_checkpoint(self.run_dir)
        except LemError:
            return "No checkpoint had been saved yet: start the run again."
        return (f"The last checkpoint, at iteration {checkpoint.iteration}, is intact in {self.run_dir}: resume the "
                "run, on the same machines or fewer, to continue from there.")

    def _record_end(self, message: str) -> None:
        """What rank 0 could not write: the run's end, in its metrics and as the last event."""
        total = self.started.total_iters if self.started else 0
        metrics = MetricsLog(self.run_dir)
        try:
            metrics.write("finished", iteration=self.iteration, status="host_lost", message=message)
        finally:
            metrics.close()
        self.report(TrainFinished(status="host_lost", iteration=self.iteration, total_iters=total,
                                  train_loss=None, val_loss=None, best_val_loss=None, best_iteration=None,
                                  run_dir=self.run_dir, message=message))


def _why(e: _Exit) -> str:
    code = e.code or 0
    number = -code if code < 0 else code - 128 if code > 128 else 0
    if number:
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"stopped by {name}, signal {number}"
    return f"exit code {code}"


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """End mlx.launch and every process it started here (its process group), politely first. A rank that
    cannot act on SIGTERM (frozen) is still there once mlx.launch has gone: SIGKILL follows for the group."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            pass
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the whole group has ended
    proc.wait()

