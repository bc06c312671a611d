"""Linux CPU speed-up: run with Debian's OpenBLAS instead of the reference BLAS bundled in the mlx wheel.

Linux: re-exec once with Debian's OpenBLAS preloaded (it must load before libmlx); `LEM_NO_OPENBLAS=1` turns it
off (docs/platform-notes.md, "BLAS and OpenBLAS preload").
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


def openblas_path() -> str | None:
    for candidate in CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return None


def preload_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of `env` with OpenBLAS preloaded when available (for subprocesses)."""
    env = dict(os.environ if env is None else env)
    lib = openblas_path()
    if sys.platform.startswith("linux") and lib and lib not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    return env


def reexec_with_openblas() -> None:
    """Replace this process with itself under LD_PRELOAD=OpenBLAS, once. No-op where it does not apply."""
    if not sys.platform.startswith("linux") or os.environ.get("LEM_NO_OPENBLAS") or os.environ.get(_MARK):
        return
    if getattr(sys, "frozen", False) or "mlx" in sys.modules:
        return
    env = preload_env()
    if env.get("LD_PRELOAD", "") == os.environ.get("LD_PRELOAD", ""):
        return  # nothing to add
    env[_MARK] = "1"
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:
        return  # keep going with the bundled BLAS
