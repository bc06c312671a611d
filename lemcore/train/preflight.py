"""Before a multi-machine run, and alone as `lem doctor --hosts`: is every machine ready?

Each machine runs one small Python program (PROBE) that prints JSON: its host name, the mlx / mlx-lm / LEM
versions, free memory, whether the model and the data are there, and whether its ring port is free. This
machine runs it directly for 127.0.0.1; any other machine runs it over SSH with `BatchMode=yes`, so a machine
that would ask for a password fails here, in words, instead of hanging the launch. Each problem names the
machine and what to do. The memory check here is the floor (the model's weights must fit); the precise check
for the chosen batch runs on every machine when training starts (engine.py), before the first step.
"""

from __future__ import annotations

import ipaddress
import json
import random
import shlex
import socket
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from lemcore.errors import LemError
from lemcore.hardware import GB
from lemcore.jobs import Report, no_report
from lemcore.models.loading import resolve_model
from lemcore.train.config import TrainConfig
from lemcore.train.distributed import HostSetupError
from lemcore.train.events import HostChecked
from lemcore.train.hosts import Host, HostList, is_this_machine, resolve_ip
from lemcore.train.memory import OVERHEAD_BYTES

PACKAGES = {"mlx": "mlx", "mlx-lm": "mlx-lm", "lem": "lem-desktop"}  # shown name -> distribution name
DEFAULT_PORT = 32323  # mlx.launch's
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=10")
PROBE_SECONDS = 60

# Runs on each machine with its own Python: argv[1] is the request (JSON), the answer is one JSON line.
PROBE = r"""
import json, os, socket, sys
from importlib import metadata
req = json.loads(sys.argv[1])
out = {"hostname": socket.gethostname(), "python": sys.executable, "versions": {}, "ports": {}}
for name in req["packages"]:
    try:
        out["versions"][name] = metadata.version(name)
    except Exception:
        out["versions"][name] = None
try:
    import psutil
    vm = psutil.virtual_memory()
    out["free"], out["total"] = int(vm.available), int(vm.total)
except Exception:
    out["free"] = out["total"] = None
if req.get("data"):
    out["data"] = os.path.isfile(os.path.join(req["data"], "train.jsonl"))
if req.get("model"):
    try:
        from lemcore.models.loading import resolve_model
        ref = resolve_model(req["model"])
        out["model"] = ref.kind == "embedded" or (
            ref.folder is not None and os.path.isfile(os.path.join(str(ref.folder), "config.json")))
    except Exception as err:
        out["model"], out["model_note"] = False, str(err)[:300]
for port in req.get("ports", []):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("", port))
        out["ports"][str(port)] = True
    except OSError:
        out["ports"][str(port)] = False
    finally:
        s.close()
print(json.dumps(out))
"""


@dataclass(frozen=True)
class ProbeRequest:
    model: str = ""  # "" skips the model check
    data: str = ""  # a folder; "" skips the data check
    ports: tuple[int, ...] = ()


@dataclass(frozen=True)
class HostProbe:
    """What one machine said about itself."""
    hostname: str
    python: str
    versions: dict[str, str | None]  # distribution name -> version, None when not installed
    free_bytes: int | None = None
    total_bytes: int | None = None
    model_found: bool | None = None  # None: not asked
    model_note: str = ""
    data_found: bool | None = None
    ports_free: dict[int, bool] = field(default_factory=dict)


Probe = Callable[[Host, ProbeRequest], HostProbe]  # raises HostSetupError when the machine cannot be asked


@dataclass(frozen=True)
class PreflightResult:
    hosts: tuple[HostChecked, ...]  # one per machine, in rank order
    port: int  # the ring backend's first port: rank r listens on port + r

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hosts)

    @property
    def problems(self) -> list[str]:
        return [p for h in self.hosts for p in h.problems]

    def raise_for_problems(self) -> None:
        if not self.ok:
            raise HostSetupError("Not every machine is ready for this run:\n" + "\n".join(self.problems))


def probe_command(host: Host, request: ProbeRequest) -> list[str]:
    """The command that asks `host` about itself: this machine's Python, over SSH unless it is this machine.
    (Other machines must have LEM's environment at the same path: the run starts the same command there.)"""
    body = json.dumps({"packages": list(PACKAGES.values()), "model": request.model, "data": request.data,
                       "ports": list(request.ports)})
    command = [sys.executable, "-c", PROBE, body]
    if is_this_machine(host):
        return command
    return ["ssh", *SSH_OPTIONS, host.ssh, shlex.join(command)]


def run_probe(host: Host, request: ProbeRequest) -> HostProbe:
    """Ask `host` about itself. Raises HostSetupError, naming the host, when it cannot be asked."""
    try:
        done = subprocess.run(probe_command(host, request), capture_output=True, text=True,
                              timeout=PROBE_SECONDS, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise HostSetupError(f"{host.ssh} did not answer within {PROBE_SECONDS} s. Check that it is awake and on "
                             "the same network, then try again.") from None
    except OSError as err:
        raise HostSetupError(f"Could not start ssh to reach {host.ssh} ({err.strerror}). Install the OpenSSH "
                             "client on this machine.") from None
    said = (done.stderr.strip().splitlines() or [""])[-1][:200]
    if done.returncode == 255 and not is_this_machine(host):
        raise HostSetupError(
            f"Cannot log in to {host.ssh} over SSH without a password ({said or 'no answer'}). On this Mac run "
            f"`ssh-copy-id {host.ssh}` (after `ssh-keygen` if you have no key), and on {host.ssh} turn on Remote "
            "Login (System Settings > General > Sharing).")
    if done.returncode == 127:
        raise HostSetupError(f"{host.ssh} has no {sys.executable}. Install LEM Desktop there in the same folder "
                             "as on this Mac (every machine runs the same command).")
    lines = done.stdout.strip().splitlines()
    try:
        raw = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise HostSetupError(f"{host.ssh} could not run LEM's check ({said or 'no output'}). Check that LEM "
                             f"Desktop's Python at {sys.executable} works there.") from None
    return HostProbe(hostname=str(raw["hostname"]), python=str(raw["python"]), versions=dict(raw["versions"]),
                     free_bytes=raw.get("free"), total_bytes=raw.get("total"), model_found=raw.get("model"),
                     model_note=str(raw.get("model_note", "")), data_found=raw.get("data"),
                     ports_free={int(k): bool(v) for k, v in raw.get("ports", {}).items()})


def local_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in PACKAGES.values():
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def choose_port(count: int, port: int | None = None) -> int:
    """The first of `count` ring ports: `port` when given, else a block free on this machine (the probe checks
    the other machines)."""
    if port is not None:
        return port
    rng = random.Random()
    for _ in range(100):
        start = rng.randrange(20000, 60000 - count)
        if all(port_free(start + i) for i in range(count)):
            return start
    return DEFAULT_PORT


def weights_bytes(model: str) -> int | None:
    """The model's weight files on this machine, or None when it is not here."""
    try:
        folder = resolve_model(model).folder
    except LemError:
        return None
    if folder is None:
        return None
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))


def check_hosts(hosts: HostList, *, config: TrainConfig | None = None, port: int | None = None,
                probe: Probe = run_probe, report: Report = no_report) -> PreflightResult:
    """Ask every machine whether it is ready (in parallel) and report a HostChecked for each, in rank order.
    With `config`, also check the model and data there and that the weights fit in free memory."""
    first = choose_port(len(hosts), port)
    need = weights_bytes(config.model) if config else None
    # A ring address of 127.0.0.1 works only when every rank is on this machine.
    inward = [_loopback(resolve_ip(h)) for h in hosts.hosts]
    mixed = any(inward) and not all(inward)
    mine = local_versions()

    def ask(rank: int) -> HostChecked:
        host = hosts.hosts[rank]
        request = ProbeRequest(model=config.model if config else "", data=config.data if config else "",
                               ports=(first + rank,))
        try:
            found = probe(host, request)
        except HostSetupError as err:
            return HostChecked(rank=rank, host=host.ssh, ok=False, summary="", problems=(str(err),))
        problems = _problems(rank, host, found, request, mine, need, mixed and inward[rank])
        return HostChecked(rank=rank, host=host.ssh, ok=not problems, summary=_summary(found, request),
                           problems=tuple(problems))

    with ThreadPoolExecutor(max_workers=min(len(hosts), 8), thread_name_prefix="lem-probe") as pool:
        checked = tuple(pool.map(ask, range(len(hosts))))
    for one in checked:
        report(one)
    return PreflightResult(checked, first)


def _loopback(ip: str | None) -> bool:
    try:
        return ip is not None and ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def _summary(found: HostProbe, request: ProbeRequest) -> str:
    versions = ", ".join(f"{shown} {found.versions.get(dist) or 'missing'}" for shown, dist in PACKAGES.items())
    parts = [versions]
    if found.free_bytes is not None and found.total_bytes:
        parts.append(f"{found.free_bytes / GB:.1f} GB free of {found.total_bytes / GB:.0f} GB")
    for port in request.ports:
        parts.append(f"port {port} {'free' if found.ports_free.get(port, True) else 'in use'}")
    return "; ".join(parts)


def _problems(rank: int, host: Host, found: HostProbe, request: ProbeRequest, mine: dict[str, str | None],
              need: int | None, unreachable_address: bool) -> list[str]:
    name = host.ssh
    out: list[str] = []
    if rank == 0 and not is_this_machine(host):
        out.append(f"{name} is first in the list, so it would write the run folder, but it is not this machine "
                   f"({socket.gethostname()}). Put this machine first.")
    if unreachable_address:
        out.append(f"{name} reaches only this machine, so the other machines could not connect to it. Give "
                   "this machine's network address or name (e.g. its-name.local) instead.")
    if not host.is_loopback and resolve_ip(host) is None:
        out.append(f"Cannot find the network address of {name} from here. Check the name, or give its IP "
                   "address (or a hostfile with \"ips\").")
    for shown, dist in PACKAGES.items():
        theirs, ours = found.versions.get(dist), mine.get(dist)
        if theirs != ours:
            has = f"has {shown} {theirs}" if theirs else f"does not have {shown}"
            out.append(f"{name} {has}, this machine has {ours or 'none'}. Install the same version on every "
                       f"machine (pip install {dist}=={ours} in LEM's environment there).")
    if request.model and found.model_found is False:
        note = f" ({found.model_note})" if found.model_note else ""
        out.append(f"{name} does not have the model {request.model}{note}. Copy it there to the same place, or "
                   "download it there first.")
    if request.data and found.data_found is False:
        out.append(f"{name} does not have the training data {request.data}/train.jsonl. Copy the data folder "
                   "there, to the same path.")
    if need is not None and found.free_bytes is not None and found.free_bytes < need + OVERHEAD_BYTES:
        out.append(f"{name} has {found.free_bytes / GB:.1f} GB of memory free, but the model alone needs about "
                   f"{(need + OVERHEAD_BYTES) / GB:.1f} GB. Close applications there or use a smaller model.")
    for port in request.ports:
        if not found.ports_free.get(port, True):
            out.append(f"Port {port} on {name} is in use, and the run needs it. Stop what uses it, or choose "
                       "another first port.")
    return out
