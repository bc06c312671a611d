"""Compiling the CPU kernels ahead in a child process (lemcore/generate/cpu/kernel_cache.py), against a real empty
Numba cache: the child fills it with every signature the engine then uses, so the engine compiles nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba")
pytest.importorskip("mlx.core")

# Run in a fresh interpreter: Numba reads NUMBA_CACHE_DIR when it loads, and this test process has loaded it.
_SCRIPT = """
import json, sys
from lemcore.generate.cpu import kernel_cache
from lemcore.generate.engine import GenItem, MLXGenerator, Sampling
from lemcore.models.loading import LoadStage

events = []
before = kernel_cache.cold(sys.argv[1])
gen = MLXGenerator.load(sys.argv[1], batch_size=2, report=events.append)  # compiles ahead when cold
after = kernel_cache.cold(sys.argv[1])
again = kernel_cache.compile_ahead(sys.argv[1])
items = iter([GenItem(i, [{"role": "user", "content": "Tell me about trust and sharing " * (i + 3)}]) for i in range(3)])
results = []
gen.run(lambda: next(items, None), Sampling(temperature=0.5, max_tokens=6), results.append)
from numba.core.registry import CPUDispatcher
import importlib
misses = {}
for name in kernel_cache.KERNEL_MODULES:
    module = importlib.import_module("lemcore.generate.cpu." + name)
    for attr, value in vars(module).items():
        if isinstance(value, CPUDispatcher) and value.stats.cache_misses:
            misses[name + "." + attr] = sum(value.stats.cache_misses.values())
print(json.dumps({"before": before, "after": after, "again": again, "answers": len(results), "misses": misses,
                  "stages": [e.stage for e in events if isinstance(e, LoadStage)]}))
"""


def _run(tiny_llama: Path, cache: Path) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(tiny_llama)], capture_output=True, text=True, env=env,
                          timeout=600, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_cold_cache_is_filled_by_a_child_and_the_engine_then_compiles_nothing(tiny_llama: Path,
                                                                                 tmp_path: Path) -> None:
    got = _run(tiny_llama, tmp_path / "numba")
    assert got["before"] is True and got["after"] is False
    assert "prepare" in got["stages"]  # the window says what the wait is
    assert got["again"] is False  # warm now: nothing to do
    assert got["answers"] == 3
    assert got["misses"] == {}, "the engine compiled kernels the child had not"
    assert any(p.suffix == ".nbc" for p in (tmp_path / "numba").rglob("*"))


def test_a_warm_cache_starts_no_child(tiny_llama: Path, tmp_path: Path) -> None:
    cache = tmp_path / "numba"
    _run(tiny_llama, cache)
    got = _run(tiny_llama, cache)
    assert got["before"] is False and "prepare" not in got["stages"] and got["misses"] == {}


def test_a_child_that_fails_leaves_the_engine_to_compile_and_a_cancel_stops_it(tmp_path: Path, caplog) -> None:
    from lemcore.errors import Cancelled
    from lemcore.generate.cpu import kernel_cache
    from lemcore.jobs import CancelToken

    missing = tmp_path / "no-model-here"
    assert kernel_cache.cold(missing)  # never compiled for it
    with caplog.at_level("WARNING", logger=kernel_cache.__name__):
        assert kernel_cache.compile_ahead(missing) is False  # the child could not load it
    assert "compiling in process" in caplog.text
    assert kernel_cache.cold(missing)  # no stamp left behind
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled):
        kernel_cache.compile_ahead(missing, cancel=cancel)
