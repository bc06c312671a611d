"""The machines of a multi-machine training run: a comma-separated list (`--hosts mac1,mac2`) or mlx.launch's
JSON hostfile, and the hostfile we hand to `mlx.launch`.

The first machine runs rank 0, which writes the run folder, so it must be this one. `127.0.0.1` (or
`localhost`) means this machine without SSH, as in mlx.launch; listing it twice runs two ranks here, which is
how the tests stand in for two Macs. MLX's ring backend connects ranks by IP address, so names are resolved
here when the list gives none.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lemcore.errors import ConfigError

LOOPBACK = "127.0.0.1"
BACKENDS = ("ring", "mpi", "jaccl", "jaccl-ring")  # mlx.launch's, less nccl (CUDA only)
_NAME = re.compile(r"^[A-Za-z0-9_.@:%\[\]-]+$")


@dataclass(frozen=True)
class Host:
    ssh: str  # how to reach it: an address or SSH name ("user@mac2.local"); "127.0.0.1" is this machine
    ips: tuple[str, ...] = ()  # where the other ranks connect to it (ring backend); resolved when empty
    rdma: tuple[Any, ...] = ()  # RDMA devices per peer (jaccl backends), passed to mlx.launch unchanged

    @property
    def is_loopback(self) -> bool:
        return self.ssh == LOOPBACK


@dataclass(frozen=True)
class HostList:
    hosts: tuple[Host, ...]
    backend: str = ""  # from a hostfile; "" leaves the choice to the caller (ring by default)
    envs: tuple[str, ...] = field(default=())  # NAME=value for every rank, from a hostfile

    def __len__(self) -> int:
        return len(self.hosts)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(h.ssh for h in self.hosts)

    def describe(self) -> str:
        return ",".join(self.names)


def _normalise(name: str) -> str:
    name = name.strip()
    return LOOPBACK if name in ("localhost", "::1") else name


def parse_hosts(text: str) -> HostList:
    """`mac1,mac2` (SSH names or addresses; this machine first) -> HostList. Raises ConfigError."""
    names = [_normalise(n) for n in text.split(",")]
    if not text.strip() or any(not n for n in names):
        raise ConfigError(f"The machine list {text!r} has an empty name. List machines separated by commas, "
                          "this one first, e.g. 127.0.0.1,mac2.local.")
    bad = [n for n in names if not _NAME.match(n)]
    if bad:
        raise ConfigError(f"{bad[0]!r} is not a machine name or address. List machines separated by commas, "
                          "this one first, e.g. 127.0.0.1,mac2.local.")
    return HostList(tuple(Host(n, (n,) if _is_ip(n) else ()) for n in names))


def load_hostfile(path: Path | str) -> HostList:
    """mlx.launch's JSON hostfile: a list of {"ssh", "ips", "rdma"}, or {"backend", "envs", "hosts": [...]}."""
    path = Path(path).expanduser()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        body = raw if isinstance(raw, dict) else {"hosts": raw}
        hosts = tuple(Host(_normalise(str(h["ssh"])), tuple(str(ip) for ip in h.get("ips", [])),
                           tuple(h.get("rdma", []))) for h in body["hosts"])
        backend, envs = str(body.get("backend", "")), tuple(str(e) for e in body.get("envs", []))
    except OSError as err:
        raise ConfigError(f"Cannot read the hostfile {path} ({err.strerror}). Check the path.") from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"The hostfile {path} is not in mlx.launch's format ({type(err).__name__}: {err}). "
                          'Write a JSON list like [{"ssh": "mac1", "ips": ["10.0.0.1"]}, ...].') from None
    if not hosts:
        raise ConfigError(f"The hostfile {path} lists no machines. Add one entry per machine, this one first.")
    if backend and backend not in BACKENDS:
        raise ConfigError(f"The hostfile {path} asks for backend {backend!r}; use one of {', '.join(BACKENDS)}.")
    return HostList(hosts, backend, envs)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def resolve_ip(host: Host) -> str | None:
    """The address other ranks use to reach `host`: its first listed IP, else its name looked up here."""
    if host.ips:
        return host.ips[0]
    name = host.ssh.rsplit("@", 1)[-1]
    try:
        return socket.gethostbyname(name)
    except OSError:
        return None


def is_this_machine(host: Host) -> bool:
    """127.0.0.1, this machine's name (with or without .local), or one of its addresses."""
    if host.is_loopback:
        return True
    name = host.ssh.rsplit("@", 1)[-1].lower()
    here = socket.gethostname().lower()
    if name in (here, here.removesuffix(".local"), here + ".local"):
        return True
    ip = resolve_ip(host)
    return ip is not None and ip in _local_addresses()


def _local_addresses() -> set[str]:
    import psutil  # lazy: only needed to tell this machine from the others

    return {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family in (socket.AF_INET, socket.AF_INET6)}


def launch_hostfile(hosts: HostList, backend: str) -> dict[str, Any]:
    """The hostfile for `mlx.launch --hostfile`: every host with the address it is reached at. This machine is
    started without SSH (mlx.launch runs "127.0.0.1" directly), so it needs no Remote Login of its own."""
    return {"backend": backend, "envs": list(hosts.envs),
            "hosts": [{"ssh": LOOPBACK if is_this_machine(h) else h.ssh, "ips": [resolve_ip(h) or h.ssh],
                       "rdma": list(h.rdma)} for h in hosts.hosts]}
