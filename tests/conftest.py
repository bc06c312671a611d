"""Shared fixtures: real InfluxDB, real Secret Service, tiny MLX models, Qt offscreen, isolated folders."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Before anything imports Qt or mlx.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("LEM_NO_OPENBLAS", "1")  # tests never re-exec; the runner preloads OpenBLAS itself
# The app's work threads yield to every other program (app/jobs/priority.py); the suite's time limits
# assume its jobs get their share of a busy developer machine. The priority tests ask for it themselves.
os.environ.setdefault("LEM_WORK_PRIORITY", "normal")

from tests import servers
from tests.tiny_models import make_tiny_model, tiny_gemma, tiny_llama  # noqa: F401

# One shared cache for converted embedded models across test sessions (conversion takes seconds).
os.environ.setdefault("LEM_MODEL_CACHE", str(Path(tempfile.gettempdir()) / "lem-test-model-cache"))


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own config and data folders; no test touches the user's files."""
    monkeypatch.setenv("LEM_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("LEM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("INFLUX_TOKEN", raising=False)
    monkeypatch.delenv("INFLUX_URL", raising=False)


@pytest.fixture(scope="session")
def influx_server(tmp_path_factory: pytest.TempPathFactory):
    server = servers.start_influxd(tmp_path_factory.mktemp("influxd"))
    yield server
    server.stop()


@pytest.fixture
def influx(influx_server: servers.InfluxServer) -> servers.InfluxServer:
    """The session server with an empty `training` database."""
    if influx_server.proc.poll() is not None:
        influx_server.start()
    influx_server.drop_all()
    return influx_server


@pytest.fixture(scope="session")
def secret_service(tmp_path_factory: pytest.TempPathFactory):
    service = servers.start_secret_service(tmp_path_factory.mktemp("keyring-home"))
    yield service
    service.stop()


@pytest.fixture
def system_keyring(secret_service: servers.SecretService, monkeypatch: pytest.MonkeyPatch):
    """keyring's real Secret Service backend, talking to the private session's gnome-keyring."""
    import keyring
    from keyring.backends import SecretService as ss

    previous = keyring.get_keyring()  # before the bus address is set: keyring picks its default on first use
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", secret_service.bus_address)
    backend = ss.Keyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture(scope="module")
def uncompiled_mlx():
    """mx.compile JIT-builds C++ kernels on first use: ~90 s per new shape set on a cold cache with 2 cores.
    Training tests run uncompiled (the same losses); tests/perf/bench_training.py runs the compiled path and
    checks resume equivalence there too (docs/platform-notes.md, "JIT kernel cache")."""
    import mlx.core as mx

    mx.disable_compile()
    yield
    mx.enable_compile()
