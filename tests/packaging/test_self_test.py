"""`app.devtools.self_test` from the source checkout, with the model check stubbed (test_bundle.py runs the real one)."""

from __future__ import annotations

from pathlib import Path

import pytest

import app.devtools.self_test as st


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(st, "check_model", lambda timeout_s=0: "stubbed")


def test_all_required_checks_pass(qapp, no_model) -> None:
    lines: list[str] = []
    assert st.run_self_test(out=lines.append) == 0
    assert [line.split(":")[1].strip() for line in lines[:-1]] == [
        "environment", "resources", "gui", "model", "keychain backends", "keychain"]
    assert "self-test: environment: OK - source checkout" in lines[0]
    assert lines[2].startswith("self-test: gui: OK - main window")
    # The tests' default environment has no keychain service: a warning, never a failure.
    assert lines[5].startswith(("self-test: keychain: WARN", "self-test: keychain: OK"))
    assert lines[-1].startswith("self-test: PASSED")


def test_a_failed_check_fails_the_run(qapp, no_model, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("lemcore.resources.root", lambda: tmp_path)  # no kernel, seeds or icon here
    lines: list[str] = []
    assert st.run_self_test(out=lines.append) == 1
    assert any(line.startswith("self-test: resources: FAIL") for line in lines)
    assert lines[-1].startswith("self-test: FAILED (")
