"""The one model the engine thread keeps loaded between jobs (Contribute's Start, Pause, Start again).

Owned by the job runner; touched only on the MLX thread, where the model's arrays were made. Jobs that need
the memory for themselves (training, benchmarks) start only after `release()` has dropped it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class ModelCache:
    def __init__(self, *, thread: threading.Thread | None = None) -> None:
        """`thread`: the only thread allowed to load or release (the runner's MLX thread); None: any."""
        self._key: Hashable | None = None
        self._value: Any = None
        self._thread = thread

    def _check_thread(self) -> None:
        if self._thread is not None and threading.current_thread() is not self._thread:
            raise RuntimeError(f"the model cache is used only on {self._thread.name}, not on "
                               f"{threading.current_thread().name}")

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        """The cached value for `key`, or `load()`'s, after dropping any other (one model in memory)."""
        self._check_thread()
        if self._key != key or self._value is None:
            self.release()
            self._value = load()
            self._key = key
        value: T = self._value
        return value

    @property
    def loaded(self) -> bool:
        return self._value is not None

    def release(self) -> None:
        """Drop the model and hand its memory back (MLX's buffer cache included)."""
        self._check_thread()
        if self._value is None:
            return
        self._key = self._value = None
        mx = sys.modules.get("mlx.core")  # only if MLX was ever used: nothing to free otherwise
        if mx is not None:
            mx.clear_cache()
