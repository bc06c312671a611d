"""Numba's on-disk cache of our CPU kernels: whether it holds them, and filling it ahead in a child process.

The first prompt after an install compiles the kernels for ~10 s (docs/platform-notes.md, "NumPy decoding step").
Numba's compiler holds the GIL in long stretches, so a window in the same process stalls: the responsiveness
probe with an empty cache saw 9 stalls over 50 ms, the worst 187 ms. `compile_ahead` instead runs a short
generation with the same model in a child process (`lemcore/generate/kernel_warmup.py`), which compiles the
kernels with the engine's own argument types and writes the cache; this process waits on it with the GIL free,
and its first prompt loads machine code.

Best effort throughout: where the cache cannot be read (a Numba whose internals differ), the child cannot start
(a frozen app) or it fails, the engine compiles in its own process as before.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lemcore.jobs import CancelToken, Report, no_report

log = logging.getLogger(__name__)

KERNEL_MODULES = ("decode_attention", "decode_products", "prefill_kernels", "prefill_products", "sample_rows",
                  "softmax_rows")
_CHILD = "lemcore.generate.kernel_warmup"  # the child's module: it runs the engine, which sits above this one
_CHILD_FLAG = "LEM_COMPILING_KERNELS"  # set in the child: its own load must not start another
_TIMEOUT_S = 900.0  # a slow machine compiles for minutes; past this the child is stopped


def _stamp(model_path: str | Path) -> Path | None:
    """The file that says a child compiled the kernels for a model of this configuration and these kernel
    sources, in Numba's cache folder for them (emptying the cache empties it too); None where that cannot be
    told."""
    try:
        import numba

        modules = [importlib.import_module(f"lemcore.generate.cpu.{name}") for name in KERNEL_MODULES]
        folder = Path(modules[0]._scores.stats.cache_path)  # where Numba keeps decode_attention's machine code
        sources = [Path(m.__file__ or "") for m in modules]
        # The model by its config: the kernels' argument types follow its shapes, not its folder (copies and
        # fine-tunes of one architecture share the machine code).
        config = Path(model_path) / "config.json"
        model = config.read_text(errors="replace") if config.is_file() else str(Path(model_path).resolve())
        key = "|".join([numba.__version__, model, sys.version]
                       + [f"{p.name}:{p.stat().st_mtime_ns}:{p.stat().st_size}" for p in sources])
    except Exception:  # noqa: BLE001 - best effort: the engine compiles in process, as without this
        log.debug("could not find Numba's kernel cache", exc_info=True)
        return None
    return folder / f"lem-kernels-{hashlib.sha256(key.encode()).hexdigest()[:16]}.done"


def cold(model_path: str | Path) -> bool:
    """Whether no child has compiled the kernels for this model since their sources last changed, as far as
    Numba's cache folder tells (False when it cannot be told, or Numba is missing). Numba keeps one index per
    kernel, but which kernels a model uses depends on the model and the CPU, so the child leaves a stamp."""
    stamp = _stamp(model_path)
    return stamp is not None and not stamp.exists()


def compile_ahead(model_path: str | Path, *, report: Report = no_report, cancel: CancelToken | None = None,
                  timeout_s: float = _TIMEOUT_S) -> bool:
    """If the kernel cache is cold, fill it from a child process that generates a few tokens with the model at
    `model_path`, and wait for it. Returns whether a child compiled them (False: nothing to do, or it could not,
    and the engine will compile in process). Cancelling stops the child."""
    if os.environ.get(_CHILD_FLAG) or getattr(sys, "frozen", False) or not cold(model_path):
        return False
    from lemcore.models.loading import LoadStage

    report(LoadStage("prepare", "compiling the CPU kernels (first run)"))
    started = time.monotonic()
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: a chatty child cannot fill it and block
        child = subprocess.Popen([sys.executable, "-m", _CHILD, str(model_path)], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=errors, env={**os.environ, _CHILD_FLAG: "1"})
        try:
            while child.poll() is None:
                if cancel is not None and cancel.cancelled:
                    break
                if time.monotonic() - started > timeout_s:
                    log.warning("compiling the CPU kernels ahead took over %.0f s; stopped, compiling in process",
                                timeout_s)
                    break
                time.sleep(0.1)
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
        errors.seek(0)
        said = errors.read()
    if cancel is not None:
        cancel.check()
    if child.returncode != 0:
        tail = said.decode(errors="replace").strip().splitlines()[-1:]
        log.warning("compiling the CPU kernels ahead failed (exit %s%s); compiling in process", child.returncode,
                    f": {tail[0]}" if tail else "")
        return False
    log.info("CPU kernels compiled ahead in %.1f s", time.monotonic() - started)
    return True


def mark_compiled(model_path: str | Path) -> None:
    """Leave the stamp `cold` looks for (the child, once its generation has compiled everything)."""
    stamp = _stamp(model_path)
    if stamp is not None:
        stamp.write_text("compiled ahead by lemcore.generate.kernel_warmup\n")
