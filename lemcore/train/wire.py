"""How the training processes of a multi-machine run talk to the process that launched them: one JSON record
per line, after a marker, on rank 0's standard output (mlx.launch forwards it, from this machine or over SSH).

Records: {"event": <class name>, "fields": {...}} for each engine event, {"result": {...}} for the
TrainResult, {"error": [<LemError class name>, <message>]} for an expected failure, {"lost": <text>} when the
distributed backend lost a peer, {"crash": <text>} for anything else. Lines without the marker are other
output (library warnings) and are only logged.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from lemcore.events import Event
from lemcore.train import events as train_events

MARK = "@lem-train "
EVENT_TYPES: dict[str, type[Event]] = {
    name: cls for name, cls in vars(train_events).items()
    if isinstance(cls, type) and issubclass(cls, Event) and cls is not Event}


def to_plain(value: Any) -> Any:
    """A dataclass (nested ones, paths, tuples and dicts included) as JSON-able values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    return value


def from_plain(kind: Any, value: Any) -> Any:
    """`to_plain`'s inverse, guided by the type annotation `kind`."""
    if value is None:
        return None
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return from_plain(next(a for a in args if a is not type(None)), value)
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        hints = typing.get_type_hints(kind)
        return kind(**{f.name: from_plain(hints[f.name], value[f.name]) for f in dataclasses.fields(kind)
                       if f.name in value})
    if kind is Path:
        return Path(value)
    if origin is tuple:
        return tuple(from_plain(args[0], v) for v in value)
    if origin is list:
        return [from_plain(args[0], v) for v in value]
    if origin is dict:
        return {k: from_plain(args[1], v) for k, v in value.items()}
    if kind is float:
        return float(value)
    return value


def record_line(record: dict[str, Any]) -> str:
    return MARK + json.dumps(record) + "\n"


def event_line(event: Event) -> str:
    return record_line({"event": type(event).__name__, "fields": to_plain(event)})


def read_record(line: str) -> dict[str, Any] | None:
    """The record on a line of output, or None for other output. (Over SSH a terminal adds carriage returns.)"""
    at = line.find(MARK)
    if at < 0:
        return None
    try:
        record = json.loads(line[at + len(MARK):].strip())
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def event_of(record: dict[str, Any]) -> Event | None:
    cls = EVENT_TYPES.get(str(record.get("event")))
    if cls is None:
        return None
    event: Event = from_plain(cls, record.get("fields", {}))
    return event
