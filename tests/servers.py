"""Real servers for the test suite: InfluxDB 1.x (`influxd`) and a Secret Service (gnome-keyring).

Both run on loopback / a private D-Bus session inside a temp dir, are started once per test session and
stopped by PID afterwards. Nothing here fakes a server.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class InfluxServer:
    url: str
    db: str
    user: str
    token: str
    proc: subprocess.Popen
    base: Path
    port: int

    def query(self, q: str, *, db: str | None = None) -> dict:
        params = urllib.parse.urlencode({"q": q, "db": db or self.db})
        req = urllib.request.Request(f"{self.url}/query?{params}", method="POST")
        req.add_header("Authorization", "Basic " + b64encode(f"{self.user}:{self.token}".encode()).decode())
        with urllib.request.urlopen(req, timeout=10) as resp:
            import json

            return json.loads(resp.read())

    def stop(self) -> None:
        _stop(self.proc)

    def start(self) -> None:
        """Start again on the same port and data (for outage tests)."""
        self.proc = _spawn_influxd(self.base)
        _wait_ping(self.url, self.proc)

    def drop_all(self) -> None:
        """Fresh `training` database between tests."""
        self.query(f'DROP DATABASE "{self.db}"')
        self.query(f'CREATE DATABASE "{self.db}"')


def _spawn_influxd(base: Path) -> subprocess.Popen:
    with open(base / "influxd.log", "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(["influxd", "-config", str(base / "influxdb.conf")], stdout=log, stderr=log,
                                start_new_session=True)


def _wait_ping(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"influxd exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:
                if resp.status == 204:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.05)
    raise RuntimeError("influxd did not answer /ping in time")


def start_influxd(base: Path, db: str = "training") -> InfluxServer:
    if not shutil.which("influxd"):
        raise RuntimeError("influxd is not installed: run the README's test command (it installs it).")
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = f"""
reporting-disabled = true
bind-address = "127.0.0.1:0"
[meta]
  dir = "{base}/meta"
[data]
  dir = "{base}/data"
  wal-dir = "{base}/wal"
  query-log-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  auth-enabled = true
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"""
    (base / "influxdb.conf").write_text(conf)
    proc = _spawn_influxd(base)
    url = f"http://127.0.0.1:{port}"
    _wait_ping(url, proc)
    token = secrets.token_urlsafe(24)
    user = "lem"  # our client's default user name (3.x ignores it; 1.x checks it)
    # With auth enabled, the first admin user may be created without credentials.
    q = urllib.parse.urlencode({"q": f"CREATE USER {user} WITH PASSWORD '{token}' WITH ALL PRIVILEGES"})
    urllib.request.urlopen(urllib.request.Request(f"{url}/query?{q}", method="POST"), timeout=10).read()
    server = InfluxServer(url=url, db=db, user=user, token=token, proc=proc, base=base, port=port)
    server.query(f'CREATE DATABASE "{db}"')
    return server


@dataclass
class SecretService:
    bus_address: str
    dbus_proc: subprocess.Popen
    keyring_pid: int | None
    home: Path

    def stop(self) -> None:
        if self.keyring_pid:
            try:
                os.kill(self.keyring_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        _stop(self.dbus_proc)
        if self.dbus_proc.stdout is not None:
            self.dbus_proc.stdout.close()


def _name_has_owner(address: str, name: str) -> bool:
    from jeepney import DBusAddress, new_method_call
    from jeepney.io.blocking import open_dbus_connection

    conn = open_dbus_connection(bus=address)
    try:
        bus = DBusAddress("/org/freedesktop/DBus", bus_name="org.freedesktop.DBus",
                          interface="org.freedesktop.DBus")
        reply = conn.send_and_get_reply(new_method_call(bus, "NameHasOwner", "s", (name,)), timeout=5)
        return bool(reply.body[0])
    finally:
        conn.close()


def start_secret_service(home: Path) -> SecretService:
    """A private D-Bus session with an unlocked gnome-keyring; waits until the Secret Service is owned."""
    for tool in ("dbus-daemon", "gnome-keyring-daemon"):
        if not shutil.which(tool):
            raise RuntimeError(f"{tool} is not installed: run the README's test command (it installs it).")
    home.mkdir(parents=True, exist_ok=True)
    dbus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    assert dbus.stdout is not None
    address = dbus.stdout.readline().strip()
    if not address:
        _stop(dbus)
        dbus.stdout.close()
        raise RuntimeError("dbus-daemon did not print an address")
    env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS=address, XDG_DATA_HOME=str(home / "data"),
               XDG_RUNTIME_DIR=str(home / "run"), HOME=str(home))
    (home / "run").mkdir(mode=0o700, exist_ok=True)
    keyring = subprocess.run(
        ["gnome-keyring-daemon", "--unlock", "--components=secrets", "--daemonize"],
        input="test-keyring-password\n", capture_output=True, text=True, env=env, timeout=30,
    )
    pid = None
    for row in keyring.stdout.splitlines():
        if row.startswith("GNOME_KEYRING_PID="):
            pid = int(row.split("=", 1)[1])
    # The race in docs/platform-notes.md, "Keychain": wait for the name owner before any keyring call.
    deadline = time.monotonic() + 20
    while not _name_has_owner(address, "org.freedesktop.secrets"):
        if time.monotonic() > deadline:
            _stop(dbus)
            raise RuntimeError("gnome-keyring never took org.freedesktop.secrets")
        time.sleep(0.05)
    return SecretService(bus_address=address, dbus_proc=dbus, keyring_pid=pid, home=home)
