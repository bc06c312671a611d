"""The calling convention shared by every engine: a `report` callback and a `CancelToken`."""

from __future__ import annotations

import threading
from collections.abc import Callable

from lemcore.errors import Cancelled
from lemcore.events import Event

Report = Callable[[Event], None]


def no_report(event: Event) -> None:
    """The default `report`: engines stay silent when nobody listens."""


class CancelToken:
    """Cooperative cancellation. Engines call `check()` at safe points (every batch, every token step)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str = "") -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled(self.reason or "Cancelled.")

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking early on cancel. Returns True if cancelled."""
        return self._event.wait(seconds)
