"""`lem doctor`: one line per component, each saying OK or what to do."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from lemcore import hardware, secrets
from lemcore.errors import LemError
from lemcore.influx import InfluxClient, InfluxTarget
from lemcore.secrets import TokenStore, resolve_token
from lemcore.settings import Settings, load_settings
from lemcore.train.config import TrainConfig
from lemcore.train.hosts import HostList
from lemcore.train.preflight import Probe, check_hosts, run_probe


@dataclass(frozen=True)
class Check:
    status: str  # "OK", "WARN" or "FAIL"
    name: str
    detail: str


def run_checks(store: TokenStore | None = None) -> list[Check]:
    checks: list[Check] = []
    hw = hardware.detect_hardware()
    checks.append(Check("OK", "OS", hw.os_name))
    if hw.rosetta:
        checks.append(Check("WARN", "Chip", f"{hw.chip}. Install the arm64 (native) Python to use Metal."))
    else:
        checks.append(Check("OK", "Chip", hw.chip))
    mem = f"{hw.total_gb:.1f} GB total, {hw.available_gb:.1f} GB available"
    checks.append(Check("OK" if hw.available_gb >= 2 else "WARN", "Memory",
                        mem if hw.available_gb >= 2 else mem + ". Close other apps before generating."))

    backend = hardware.mlx_backend()
    if backend == "not installed":
        checks.append(Check("FAIL", "MLX", "mlx is not installed. Reinstall LEM Desktop (pip install -e .)."))
    elif backend == "CPU" and sys.platform == "darwin":
        checks.append(Check("WARN", "MLX", "CPU backend on a Mac: Metal is unavailable (Intel Mac or Rosetta)."))
    else:
        checks.append(Check("OK", "MLX", f"{backend} backend"))
    if sys.platform.startswith("linux"):
        blas = hardware.blas_library()
        if blas == "OpenBLAS":
            checks.append(Check("OK", "BLAS", "OpenBLAS (fast float32 on the CPU)"))
        else:
            checks.append(Check("WARN", "BLAS", f"{blas}: float32 is slow. Install Debian's libopenblas0-pthread; "
                                "`lem` and the app then preload it."))

    info = secrets.backend_info()
    if info.is_system:
        checks.append(Check("OK", "Keychain", f"{info.name} (system store)"))
    else:
        checks.append(Check("WARN", "Keychain", f"{info.name}: {info.advice}"))

    settings = load_settings()
    if not settings.server_configured:
        checks.append(Check("OK", "InfluxDB", "no server configured: solo mode (results stay on this computer)"))
    else:
        checks.append(_influx_check(settings, store if store is not None else secrets.KeyringTokenStore()))
    return checks


def _influx_check(settings: Settings, store: TokenStore) -> Check:
    target = InfluxTarget(settings.influx_url, settings.influx_db)
    try:
        token, _note = resolve_token(store)
    except LemError as err:
        return Check("FAIL", "InfluxDB", str(err))
    if not token:
        return Check("FAIL", "InfluxDB", f"{target.url}: no token saved. Run `lem login`.")
    try:
        client = InfluxClient(target, token)
        version = client.ping()
        client.check_access()
    except LemError as err:
        return Check("FAIL", "InfluxDB", str(err))
    return Check("OK", "InfluxDB", f"{target.url} answers (version {version}), token accepted, "
                 f"database {target.db!r}")


def host_checks(hosts: HostList, *, model: str = "", data: str = "", port: int | None = None,
                probe: Probe = run_probe) -> list[Check]:
    """`lem doctor --hosts`: the pre-flight of a multi-machine run alone, one line per machine (one per problem).
    With `model`/`data`, also whether each machine has them."""
    config = TrainConfig(model=model, data=str(Path(data).expanduser().resolve()) if data else "") \
        if model or data else None
    result = check_hosts(hosts, config=config, port=port, probe=probe)
    checks: list[Check] = []
    for host in result.hosts:
        name = f"{host.host} (rank {host.rank})"
        if host.ok:
            checks.append(Check("OK", name, host.summary))
        checks.extend(Check("FAIL", name, problem) for problem in host.problems)
    return checks


def format_checks(checks: list[Check]) -> str:
    return "\n".join(f"{c.status:<5} {c.name + ':':<10} {c.detail}" for c in checks)
