"""The check that keeps Qt objects out of job functions: a job runs on a worker thread, and a widget used or
freed there can crash PySide."""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject


def qt_objects_held(fn: Callable[..., Any]) -> list[str]:
    """Where `fn` holds a Qt object: bound to one, closing over one, or defaulting to one (nested functions
    and functools.partial included). A job runs on a worker thread, so it must hold none."""
    found: list[str] = []
    seen: set[int] = set()

    def visit(obj: Any, where: str, depth: int) -> None:
        if id(obj) in seen or depth > 4:
            return
        seen.add(id(obj))
        if isinstance(obj, QObject):
            found.append(f"{where} ({type(obj).__name__})")
        elif isinstance(obj, functools.partial):
            visit(obj.func, where, depth + 1)
            for i, arg in enumerate(obj.args):
                visit(arg, f"{where} argument {i}", depth + 1)
            for key, value in obj.keywords.items():
                visit(value, f"{where} argument {key}", depth + 1)
        elif isinstance(obj, types.MethodType):
            visit(obj.__self__, f"{where}.__self__", depth + 1)
            visit(obj.__func__, where, depth + 1)
        elif isinstance(obj, types.BuiltinMethodType):  # a Qt method such as label.text
            visit(obj.__self__, f"{where}.__self__", depth + 1)
        elif isinstance(obj, types.FunctionType):
            for name, cell in zip(obj.__code__.co_freevars, obj.__closure__ or (), strict=True):
                try:
                    value = cell.cell_contents
                except ValueError:  # not assigned yet
                    continue
                visit(value, f"{obj.__qualname__}: {name}", depth + 1)
            defaults = [*(obj.__defaults__ or ()), *(obj.__kwdefaults__ or {}).values()]
            for value in defaults:
                visit(value, f"{obj.__qualname__}: a default", depth + 1)

    visit(fn, getattr(fn, "__qualname__", repr(fn)), 0)
    return found
