"""The frozen app: build the bundle with packaging/build.sh, then run `lem-desktop --self-test` from it.

Linux builds the one-folder bundle and runs it against the real Secret Service fixture, so the frozen keyring,
secretstorage and jeepney stack talks to a real keychain. On a Mac the same test builds `LEM Desktop.app` and runs
the executable inside it (the login Keychain answers). The app gets a clean environment: its own folders, a cold
model cache (so the frozen app converts the built-in model itself) and a cold MLX kernel cache.
"""

from __future__ import annotations

import os
import plistlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import servers

ROOT = Path(__file__).resolve().parents[2]
IS_MAC = sys.platform == "darwin"

pytestmark = pytest.mark.slow


def _size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def _say(request: pytest.FixtureRequest, line: str) -> None:
    """Shown in the test output even under capture (the CI log keeps the bundle's size and build time)."""
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        print(line)
        return
    with capman.global_and_fixture_disabled():
        print(line, flush=True)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    # The build must not inherit the test runner's LD_PRELOAD (tests/run.sh preloads OpenBLAS): ldd would then
    # report it as a dependency of every library and PyInstaller would bundle it.
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PYTHONPATH")}
    started = time.monotonic()
    out = subprocess.run(["bash", str(ROOT / "packaging" / "build.sh"), str(dist)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=2400)
    seconds = time.monotonic() - started
    assert out.returncode == 0, f"build failed:\n{out.stdout[-6000:]}\n{out.stderr[-6000:]}"
    folder = dist / "lem-desktop"
    _say(request, f"\nbundle {folder}: {_size_mb(folder):.0f} MB, built in {seconds:.0f} s")
    if IS_MAC:
        app = dist / "LEM Desktop.app"
        _say(request, f"app {app}: {_size_mb(app):.0f} MB")
    return dist


def _executable(dist: Path) -> Path:
    if IS_MAC:
        return dist / "LEM Desktop.app" / "Contents" / "MacOS" / "lem-desktop"
    return dist / "lem-desktop" / "lem-desktop"


def _clean_env(tmp: Path) -> dict[str, str]:
    for sub in ("home", "data", "config", "models", "tmp", "run"):
        (tmp / sub).mkdir(mode=0o700)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp / "home"),
        "LANG": "C.UTF-8",
        "TMPDIR": str(tmp / "tmp"),  # MLX's CPU kernel cache starts cold too
        "XDG_RUNTIME_DIR": str(tmp / "run"),
        "LEM_DATA_DIR": str(tmp / "data"),
        "LEM_CONFIG_DIR": str(tmp / "config"),
        "LEM_MODEL_CACHE": str(tmp / "models"),
        "QT_QPA_PLATFORM": "offscreen",
    }


@pytest.fixture
def keychain_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Linux: a private Secret Service session (a real gnome-keyring); a Mac has its login Keychain.

    Started here rather than through the session-wide fixture so that its pipes are closed right after use
    (filterwarnings=error turns a leaked pipe into a test error at whichever test tears the session down).
    """
    if IS_MAC:
        yield {}
        return
    service = servers.start_secret_service(tmp_path_factory.mktemp("bundle-keyring"))
    try:
        yield {"DBUS_SESSION_BUS_ADDRESS": service.bus_address}
    finally:
        service.stop()
        if service.dbus_proc.stdout is not None:
            service.dbus_proc.stdout.close()


def test_bundle_self_test(bundle: Path, tmp_path: Path, keychain_env: dict[str, str],
                          request: pytest.FixtureRequest) -> None:
    exe = _executable(bundle)
    assert exe.is_file(), f"no executable at {exe}"
    env = {**_clean_env(tmp_path), **keychain_env}
    started = time.monotonic()
    out = subprocess.run([str(exe), "--self-test"], env=env, capture_output=True, text=True, timeout=1200)
    seconds = time.monotonic() - started
    report = "\n".join(line for line in out.stdout.splitlines() if line.startswith("self-test:"))
    _say(request, f"frozen self-test ({seconds:.0f} s, exit {out.returncode}):\n{report}")
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr[-4000:]}"
    for check in ("environment", "resources", "gui", "model", "keychain backends", "keychain"):
        assert f"self-test: {check}: OK" in out.stdout, f"{check} did not pass:\n{report}"
    assert "frozen bundle" in out.stdout
    assert "Paris" in out.stdout  # the model answered, not just produced tokens
    assert "system store: yes" in out.stdout
    assert "self-test: PASSED" in out.stdout
    # The frozen app converted the built-in model into the clean cache it was given.
    assert any((tmp_path / "models").glob("SmolLM2-135M-Instruct-*/model.safetensors"))
    if IS_MAC:
        app = bundle / "LEM Desktop.app" / "Contents"
        info = plistlib.loads((app / "Info.plist").read_bytes())
        assert info["CFBundleIdentifier"] == "org.lem.desktop"
        assert info["NSHighResolutionCapable"] is True
        assert tuple(map(int, info["LSMinimumSystemVersion"].split("."))) >= (14, 0)
        assert (app / "Resources" / "icon.icns").is_file()

