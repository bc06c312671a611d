"""Everything a contribution run needs, built from settings: the queue, the token, the generator.

Shared by `lem gold/expand` and the app's Contribute page, so both pick the same model and server.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lemcore.contribute.queue.lab import InfluxQueue
from lemcore.contribute.queue.solo import SQLiteQueue, default_solo_queue_path
from lemcore.errors import ConfigError, ServerUnreachable
from lemcore.generate.api import APIGenerator
from lemcore.generate.engine import MLXGenerator
from lemcore.hardware import detect_hardware, mlx_backend
from lemcore.influx import InfluxClient, InfluxTarget
from lemcore.jobs import Report, no_report
from lemcore.models.catalog import recommend
from lemcore.secrets import KeyringTokenStore, MemoryTokenStore, resolve_token
from lemcore.settings import data_dir


@dataclass(frozen=True)
class QueueChoice:
    server_url: str  # "" = solo mode
    db: str = "training"
    lease_s: float = 120.0


def open_queue(choice: QueueChoice, kind: str, worker: str, *, token_store: Any = None,
               notice: Report = no_report) -> Any:
    """The lab's InfluxDB queue when a server is set, else the local SQLite queue (solo mode)."""

    if not choice.server_url:
        return SQLiteQueue(default_solo_queue_path(), kind, worker, lease_s=choice.lease_s)

    store = token_store if token_store is not None else KeyringTokenStore()
    try:
        token, note = resolve_token(store)
    except Exception:  # noqa: BLE001 - no keychain at all: INFLUX_TOKEN may still be set
        token, note = resolve_token(MemoryTokenStore())
    if not token:
        raise ConfigError(f"No token for {choice.server_url}: paste it in Settings (or run `lem login`), "
                          "or contribute offline.")
    if "imported" in note:
        notice(note)
    client = InfluxClient(InfluxTarget(choice.server_url, choice.db), token)
    return InfluxQueue(client, kind, worker, lease_s=choice.lease_s)


def check_queue(queue: Any, url: str) -> None:
    """Fail fast on a wrong address or token, before loading a model."""
    try:
        queue.completed()
    except ServerUnreachable:
        raise ServerUnreachable(f"Cannot reach the InfluxDB server at {url}. Check the address in Settings, or "
                                "contribute offline (Settings, or --solo on the command line).") from None


def recommended_model() -> Any:
    """The lab's pick for this machine's memory and GPU (a catalog Recommendation)."""

    return recommend(detect_hardware(), mlx_backend())


def resolve_generation_model(model: str, *, report: Report = no_report, cancel: Any = None) -> str:
    """The model to generate with: the user's override (hub id or folder), else the recommended catalog id
    (which the Models engine downloads or, for the built-in model, converts once)."""
    return model or recommended_model().entry.id


def make_generator(backend: str, model: str, *, batch_size: int, api_url: str = "", api_model: str = "",
                   token_store: Any = None, report: Report = no_report, cancel: Any = None) -> Any:
    if backend == "api":

        key = None
        try:
            key = (token_store or KeyringTokenStore()).get("generation-api-key")
        except Exception:  # noqa: BLE001 - a key is optional for local servers
            pass
        return APIGenerator(api_url, api_model, api_key=key)

    path = resolve_generation_model(model, report=report, cancel=cancel)
    return MLXGenerator.load(path, batch_size=batch_size, report=report, cancel=cancel)


def print_notice(message: Any) -> None:
    print(message, file=sys.stderr)


def output_dir() -> Path:

    return data_dir() / "output"
