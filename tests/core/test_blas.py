"""The environment `lem` and the app re-execute with on Linux (lemcore/blas.py)."""

from __future__ import annotations

import sys

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
