"""`lem doctor` prints one line per component, each OK or with advice; and checks a real server."""

from __future__ import annotations

import subprocess
import sys

from lemcore.cli.doctor import run_checks
from lemcore.secrets import MemoryTokenStore
from lemcore.settings import Settings, save_settings


def test_doctor_lines_in_solo_mode() -> None:
    out = subprocess.run([sys.executable, "-m", "lemcore.cli.main", "doctor"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    names = [row.split()[1] for row in out.stdout.splitlines()]
    for name in ("OS:", "Chip:", "Memory:", "MLX:", "Keychain:", "InfluxDB:"):
        assert name in names
    for row in out.stdout.splitlines():
        assert row.split()[0] in ("OK", "WARN", "FAIL")
    assert "solo mode" in out.stdout


def test_doctor_checks_real_server(influx) -> None:
    save_settings(Settings(influx_url=influx.url))
    checks = {c.name: c for c in run_checks(MemoryTokenStore({"influx-token": influx.token}))}
    assert checks["InfluxDB"].status == "OK", checks["InfluxDB"].detail
    assert influx.token not in checks["InfluxDB"].detail
    bad = {c.name: c for c in run_checks(MemoryTokenStore({"influx-token": "nope"}))}
    assert bad["InfluxDB"].status == "FAIL" and "rejected the token" in bad["InfluxDB"].detail


def test_doctor_reports_missing_token(influx) -> None:
    save_settings(Settings(influx_url=influx.url))
    checks = {c.name: c for c in run_checks(MemoryTokenStore())}
    assert checks["InfluxDB"].status == "FAIL" and "lem login" in checks["InfluxDB"].detail
