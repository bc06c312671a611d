"""The one shape every engine event has: a frozen dataclass deriving from `Event`.

Engines call `report(event)`; the app's job runner hands each event to the page on the GUI thread, and the
page dispatches on its type. Each engine keeps its own event module (contribute/events.py, train/events.py,
benchmarks/events.py, ...); they all derive from this base so a handler can be typed and checked.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    """Base of every event an engine reports."""
