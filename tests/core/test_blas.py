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


def test_engine_hosts_that_did_not_re_exec_get_the_thread_wait_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from lemcore.blas import set_thread_wait

    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice stays
    set_thread_wait()
    assert os.environ["GOMP_SPINCOUNT"] == THREAD_WAIT["GOMP_SPINCOUNT"]
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
