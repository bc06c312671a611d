"""User settings (never secrets), stored as JSON in the platform's config folder.

`LEM_CONFIG_DIR` and `LEM_DATA_DIR` override the folders (tests, portable installs).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import platformdirs

from lemcore.errors import ConfigError

APP_NAME = "lem-desktop"


def config_dir() -> Path:
    env = os.environ.get("LEM_CONFIG_DIR")
    if env:
        return Path(env)

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def data_dir() -> Path:
    env = os.environ.get("LEM_DATA_DIR")
    if env:
        return Path(env)

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def default_worker_name() -> str:
    return f"{socket.gethostname().split('.')[0]}-{os.getpid()}"


@dataclass
class Settings:
    influx_url: str = field(default="", metadata={"help": "Lab server address, e.g. http://host:8181. Empty: solo mode."})
    influx_db: str = field(default="training", metadata={"help": "InfluxDB database name."})
    worker_name: str = field(default="", metadata={"help": "Name shown on the lab dashboard. Empty: host name."})
    model_override: str = field(default="", metadata={"help": "Hub id or local folder instead of the recommended model."})
    only_on_power: bool = field(default=True, metadata={"help": "Pause while on battery."})
    pause_when_in_use: bool = field(default=False, metadata={"help": "Pause while the computer is in use."})
    min_free_memory_gb: float = field(default=2.0, metadata={"help": "Pause when less memory than this is free."})
    preset: str = field(default="gentle", metadata={"help": "gentle, balanced or max."})
    max_tokens: int = field(default=512, metadata={"help": "Longest answer in tokens (the lab's limit is 512)."})
    first_run_done: bool = field(default=False, metadata={"help": "The welcome steps were completed."})
    solo: bool = field(default=False, metadata={"help": "Contribute offline even if a server is set."})
    appearance: str = field(default="system", metadata={"help": "system (follow the computer), light or dark."})
    repetition_guard: bool = field(default=True, metadata={
        "help": "Steer answers away from repeating themselves and end one that loops (off: the lab's plain "
                "sampling, temperature 0.3 only)."})
    notify_milestones: bool = field(default=False, metadata={
        "help": "Tell from the tray icon at answer milestones (10, 25, 50, 100... this session) and when the "
                "questions run out. Problems are always told."})

    @property
    def server_configured(self) -> bool:
        return bool(self.influx_url.strip())

    def effective_worker(self) -> str:
        return self.worker_name.strip() or socket.gethostname().split(".")[0]


def settings_path() -> Path:
    return config_dir() / "settings.json"


# Before `notify_milestones` was a setting, the app kept it in a file of its own beside the settings, as
# {"milestones": true}. `load_settings` takes it from there while settings.json has no value yet, and the next
# `save_settings` writes it into settings.json and removes the old file.
LEGACY_NOTIFY_FILE = "contribute-notifications.json"


def _legacy_notify(folder: Path) -> bool | None:
    try:
        raw = json.loads((folder / LEGACY_NOTIFY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = raw.get("milestones") if isinstance(raw, dict) else None
    return value if isinstance(value, bool) else None


def load_settings(path: Path | None = None) -> Settings:
    path = path or settings_path()
    settings = Settings()
    if path.is_file():
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ConfigError(f"Settings file {path} is unreadable ({err}). Fix or delete it.") from None
        known = {f.name for f in fields(Settings)}
        for key, value in raw.items():
            if key in known:
                setattr(settings, key, value)
    else:
        raw = {}
    if "notify_milestones" not in raw:
        legacy = _legacy_notify(path.parent)
        if legacy is not None:
            settings.notify_milestones = legacy
    if os.environ.get("INFLUX_URL"):
        settings.influx_url = os.environ["INFLUX_URL"]
    if os.environ.get("INFLUX_DB"):
        settings.influx_db = os.environ["INFLUX_DB"]
    return settings


def save_settings(settings: Settings, path: Path | None = None) -> None:
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(settings), indent=2), encoding="utf-8")
    os.replace(tmp, path)
    try:
        (path.parent / LEGACY_NOTIFY_FILE).unlink(missing_ok=True)  # its value is in settings.json now
    except OSError:
        pass  # a leftover is harmless: settings.json's value wins from now on
