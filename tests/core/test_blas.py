"""The environment `lem` and the app re-execute with on Linux (lemcore/blas.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lemcore.blas import THREAD_WAIT, preload_env


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the re-exec is Linux-only")
def test_idle_worker_threads_are_told_to_sleep_unless_the_user_chose_otherwise() -> None:
    env = preload_env({"PATH": "/bin"})
    for name, value in THREAD_WAIT.items():
        assert env[name] == value
    assert env["PATH"] == "/bin"
    chosen = preload_env({"OMP_WAIT_POLICY": "ACTIVE", "OPENBLAS_THREAD_TIMEOUT": "20"})
    assert chosen["OMP_WAIT_POLICY"] == "ACTIVE" and chosen["OPENBLAS_THREAD_TIMEOUT"] == "20"


def test_nothing_is_added_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert preload_env({"PATH": "/bin"}) == {"PATH": "/bin"}


def test_engine_hosts_that_did_not_re_exec_get_the_thread_wait_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from lemcore.blas import set_thread_wait

    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice stays
    set_thread_wait()
    assert os.environ["GOMP_SPINCOUNT"] == THREAD_WAIT["GOMP_SPINCOUNT"]
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the re-exec is Linux-only")
def test_the_heap_keeps_freed_memory_for_the_run_and_hands_it_back_after() -> None:
    """The re-exec asks glibc to keep freed blocks (`HEAP_REUSE`) unless the user set otherwise; `trim_heap`
    then gives them back: a real process's resident memory falls after it (4 KB pages were touched)."""
    import subprocess

    from lemcore.blas import HEAP_REUSE

    env = preload_env({"PATH": "/bin", "MALLOC_TRIM_THRESHOLD_": "1"})
    assert env["MALLOC_MMAP_THRESHOLD_"] == HEAP_REUSE["MALLOC_MMAP_THRESHOLD_"]
    assert env["MALLOC_TRIM_THRESHOLD_"] == "1"  # the user's choice stays
    script = (
        "import numpy as np\n"
        "from lemcore.blas import trim_heap\n"
        "def rss():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * 4096\n"
        "blocks = [np.ones(1_000_000, np.float32) for _ in range(100)]\n"  # 4 MB each, under the threshold
        "del blocks\n"
        "kept = rss()\n"
        "trim_heap()\n"
        "print(kept, rss())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**preload_env({"PATH": "/bin"}), "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.returncode == 0, done.stderr[-1000:]
    kept, after = map(int, done.stdout.split())
    assert kept - after > 300_000_000  # the 400 MB freed above stayed with the process until the trim
