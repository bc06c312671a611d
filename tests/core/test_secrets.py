"""TokenStore against the REAL Secret Service (gnome-keyring in a private D-Bus session)."""

from __future__ import annotations

import pytest

from lemcore import secrets
from lemcore.errors import SecretStoreError


def test_round_trip_through_real_secret_service(system_keyring) -> None:
    store = secrets.KeyringTokenStore(service="lem-desktop-test")
    store.set("  tok-123-secret  ")
    assert store.get() == "tok-123-secret"  # trimmed
    info = secrets.backend_info()
    assert info.is_system and "SecretService" in info.name
    store.delete()
    assert store.get() is None
    store.delete()  # deleting twice is fine


def test_empty_token_refused(system_keyring) -> None:
    with pytest.raises(SecretStoreError, match="empty"):
        secrets.KeyringTokenStore(service="lem-desktop-test").set("   ")


def test_no_backend_gives_advice(monkeypatch) -> None:
    import keyring
    from keyring.backends import fail

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        with pytest.raises(SecretStoreError, match="No system keychain"):
            secrets.KeyringTokenStore().get()
        assert not secrets.backend_info().is_system
    finally:
        keyring.set_keyring(previous)


def test_resolve_token_order_and_legacy_import(tmp_path, monkeypatch) -> None:
    store = secrets.MemoryTokenStore()
    legacy = tmp_path / ".influx_token"
    assert secrets.resolve_token(store, legacy_file=legacy)[0] is None
    legacy.write_text("legacy-tok\n")
    token, note = secrets.resolve_token(store, legacy_file=legacy)
    assert token == "legacy-tok" and store.get() == "legacy-tok"
    assert "delete" in note and "legacy-tok" not in note
    monkeypatch.setenv("INFLUX_TOKEN", "env-tok")
    assert secrets.resolve_token(store, legacy_file=legacy)[0] == "env-tok"
