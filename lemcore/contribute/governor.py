"""When a volunteer's computer should not be generating: on battery, low on memory, or in use.

`Governor.pause_reason()` returns a short reason to show ("Paused: on battery") or "" to go on. The
contribution engine asks before claiming new work, so an answer in progress always finishes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from lemcore.hardware import native_apple_silicon
from lemcore.models.fit import machine_batch

PRESETS = {
    # batch size (answers generated together) per preset; gentle keeps the computer usable. Maximum is this
    # machine's full-speed batch from its cores and memory (lemcore/models/fit.py, `machine_batch`).
    "gentle": 2,
    "balanced": 4,
    "max": machine_batch(psutil.virtual_memory().total, os.cpu_count() or 1, metal=native_apple_silicon()),
}


@dataclass
class GovernorRules:
    only_on_power: bool = True
    pause_when_in_use: bool = False
    idle_after_s: float = 120.0
    min_free_memory_gb: float = 2.0


def on_battery() -> bool | None:
    battery = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
    if battery is None:
        return None  # a desktop or no battery information
    return not battery.power_plugged


def free_memory_gb() -> float:
    return psutil.virtual_memory().available / 1024**3


def user_idle_seconds() -> float | None:
    """Seconds since the last keyboard or mouse input (macOS HIDIdleTime); None where unknown."""
    if sys.platform != "darwin":
        return None
    try:
        out = subprocess.run(["ioreg", "-c", "IOHIDSystem"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for row in out.splitlines():
        if "HIDIdleTime" in row:
            try:
                return int(row.rsplit("=", 1)[1].strip()) / 1e9
            except ValueError:
                return None
    return None


class Governor:
    def __init__(self, rules: GovernorRules, *, battery: Callable[[], bool | None] = on_battery,
                 memory: Callable[[], float] = free_memory_gb,
                 idle: Callable[[], float | None] = user_idle_seconds, check_every_s: float = 5.0) -> None:
        self.rules = rules
        self._battery, self._memory, self._idle = battery, memory, idle
        self._every = check_every_s
        self._last = -1e9
        self._reason = ""
        self.snoozed_until = 0.0

    def snooze(self, seconds: float) -> None:
        self.snoozed_until = time.monotonic() + seconds
        self._last = -1e9

    def pause_reason(self) -> str:
        now = time.monotonic()
        if now - self._last < self._every:
            return self._reason
        self._last = now
        self._reason = self._compute(now)
        return self._reason

    def _compute(self, now: float) -> str:
        if now < self.snoozed_until:
            minutes = int((self.snoozed_until - now) / 60) + 1
            return f"Paused: snoozed for {minutes} more min"
        if self.rules.only_on_power and self._battery() is True:
            return "Paused: on battery"
        free = self._memory()
        if free < self.rules.min_free_memory_gb:
            return f"Paused: low on memory ({free:.1f} GB free)"
        if self.rules.pause_when_in_use:
            idle = self._idle()
            if idle is not None and idle < self.rules.idle_after_s:
                return "Paused: computer in use"
        return ""
