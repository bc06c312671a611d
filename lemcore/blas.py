"""Linux CPU speed-up: run with Debian's OpenBLAS instead of the reference BLAS bundled in the mlx wheel.

Linux: re-exec once with Debian's OpenBLAS preloaded (it must load before libmlx); `LEM_NO_OPENBLAS=1` turns it
off (docs/platform-notes.md, "BLAS and OpenBLAS preload"). The same re-exec sets how long idle BLAS and OpenMP
worker threads spin before they sleep (`THREAD_WAIT`): both libraries read it only when they load, and with
their defaults a pool that has just finished keeps a core busy for tens of milliseconds, which halved the speed of
the NumPy decoding step on two cores (docs/platform-notes.md, "NumPy decoding step"), and how glibc's heap keeps
freed memory (`HEAP_REUSE`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
)
_MARK = "LEM_OPENBLAS_REEXEC"
# How long idle worker threads spin before they sleep. OpenBLAS's spin is 2 ** N cycles (default 28, ~0.1 s here;
# 12 is ~1 us): its pool sleeps at once, so it does not take a core from Numba's between two products. OpenMP
# (Numba's pool) sleeps after GOMP_SPINCOUNT spins (~100 per us; its default with a passive policy is none): the
# decoding step runs ~270 parallel loops a few microseconds apart, and waking sleeping workers for each made a
# 16-sequence step 140-180 ms instead of 105-114 (docs/platform-notes.md, "NumPy decoding step"). Not overridden
# when set.
THREAD_WAIT = {"OPENBLAS_THREAD_TIMEOUT": "12", "OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "5000"}
# glibc's heap, read when the process starts: blocks under 32 MB (every layer's cache buffer) from the heap rather
# than fresh mappings, and freed memory kept for the next allocation rather than handed back, so that later
# batches of a run reuse the pages of earlier ones (fresh pages cost 1-11 us per 4 KB on our VM;
# docs/platform-notes.md, "NumPy decoding step"). `trim_heap` hands the memory back when a run ends.
HEAP_REUSE = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "4294967296"}


def openblas_path() -> str | None:
    for candidate in CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return None


def preload_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of `env` with OpenBLAS preloaded when available and the worker threads' wait set (`THREAD_WAIT`),
    on Linux (for subprocesses)."""
    env = dict(os.environ if env is None else env)
    if not sys.platform.startswith("linux"):
        return env
    lib = openblas_path()
    if lib and lib not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    for name, value in {**THREAD_WAIT, **HEAP_REUSE}.items():
        env.setdefault(name, value)
    return env


def set_thread_wait() -> None:
    """Put `THREAD_WAIT` in this process's environment where not set, for hosts of the engine that did not
    re-exec (tests, scripts). Libraries read it when they load, so call it before the first OpenMP loop."""
    for name, value in THREAD_WAIT.items():
        os.environ.setdefault(name, value)


def trim_heap() -> None:
    """Hand glibc's free heap memory back to the system (kept during a run: `HEAP_REUSE`). Linux only; never
    raises."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def reexec_with_openblas() -> None:
    """Replace this process with itself under LD_PRELOAD=OpenBLAS, `THREAD_WAIT` and `HEAP_REUSE`, once. No-op where it does not
    apply."""
    if not sys.platform.startswith("linux") or os.environ.get("LEM_NO_OPENBLAS") or os.environ.get(_MARK):
        return
    if getattr(sys, "frozen", False) or "mlx" in sys.modules:
        return
    env = preload_env()
    if env == dict(os.environ):
        return  # nothing to add
    env[_MARK] = "1"
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:
        return  # keep going with the bundled BLAS
