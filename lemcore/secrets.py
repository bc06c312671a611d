"""Where the server token lives: the OS keychain, behind a small `TokenStore` interface.

The token is read when a job starts and handed to the client as an argument; it never goes into settings,
events, logs or exception messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from lemcore.errors import SecretStoreError

SERVICE = "lem-desktop"
INFLUX_ACCOUNT = "influx-token"
GENERATION_API_ACCOUNT = "generation-api-key"  # key for an OpenAI-compatible generation server, if it needs one

T = TypeVar("T")


class TokenStore(Protocol):
    """Where secrets live, by account. Implementations raise SecretStoreError (with advice) and nothing else."""

    def get(self, account: str = INFLUX_ACCOUNT) -> str | None: ...
    def set(self, token: str, account: str = INFLUX_ACCOUNT) -> None: ...
    def delete(self, account: str = INFLUX_ACCOUNT) -> None: ...


@dataclass(frozen=True)
class BackendInfo:
    name: str
    is_system: bool  # a real OS store (macOS Keychain, Secret Service, Windows Credential Locker)
    advice: str


_SYSTEM_BACKENDS = ("macOS", "SecretService", "Windows", "kwallet", "libsecret")


def backend_info() -> BackendInfo:
    import keyring  # lazy: ~90 ms to import; only code that touches secrets pays for it

    kr = keyring.get_keyring()
    name = f"{type(kr).__module__}.{type(kr).__name__}"
    chain = getattr(kr, "backends", None)  # a ChainerBackend wraps the real ones
    names = [f"{type(b).__module__}.{type(b).__name__}" for b in chain] if chain else [name]
    is_system = any(marker in n for n in names for marker in _SYSTEM_BACKENDS) and "fail" not in name
    if is_system:
        return BackendInfo(name, True, "")
    if "fail" in name:
        advice = (
            "No system keychain is available. On Linux install and unlock a Secret Service "
            "(gnome-keyring or KWallet); until then use INFLUX_TOKEN or contribute offline."
        )
    else:
        advice = "This keychain backend is not a system store (secrets may be kept in a plain file)."
    return BackendInfo(name, False, advice)


class KeyringTokenStore:
    """The system keychain through `keyring`. Errors become SecretStoreError with advice."""

    def __init__(self, service: str = SERVICE) -> None:
        self.service = service

    def _call(self, what: str, fn: Callable[..., T], *args: str) -> T | None:
        import keyring.errors  # lazy: keyring discovers its backends at import

        try:
            return fn(*args)
        except keyring.errors.NoKeyringError:
            raise SecretStoreError(backend_info().advice) from None
        except keyring.errors.KeyringLocked:
            raise SecretStoreError(f"The keychain is locked, so the token could not be {what}. Unlock it.") from None
        except keyring.errors.PasswordDeleteError:
            return None
        except Exception as err:  # noqa: BLE001 - backends raise their own types (e.g. no D-Bus session)
            raise SecretStoreError(f"The keychain refused: the token could not be {what} ({type(err).__name__}). "
                                   "Check that the system keychain is running and unlocked.") from None

    def get(self, account: str = INFLUX_ACCOUNT) -> str | None:
        import keyring  # lazy: keyring discovers its backends at import

        token: str | None = self._call("read", keyring.get_password, self.service, account)
        return token

    def set(self, token: str, account: str = INFLUX_ACCOUNT) -> None:
        import keyring  # lazy: keyring discovers its backends at import

        if not token or not token.strip():
            raise SecretStoreError("The token is empty. Paste the token the lab gave you.")
        self._call("saved", keyring.set_password, self.service, account, token.strip())

    def delete(self, account: str = INFLUX_ACCOUNT) -> None:
        import keyring  # lazy: keyring discovers its backends at import

        self._call("removed", keyring.delete_password, self.service, account)


class MemoryTokenStore:
    """In-process store for tests and for `INFLUX_TOKEN` runs."""

    def __init__(self, initial: dict[str, str] | None = None) -> None:
        self._data = dict(initial or {})

    def get(self, account: str = INFLUX_ACCOUNT) -> str | None:
        return self._data.get(account)

    def set(self, token: str, account: str = INFLUX_ACCOUNT) -> None:
        self._data[account] = token

    def delete(self, account: str = INFLUX_ACCOUNT) -> None:
        self._data.pop(account, None)


LEGACY_TOKEN_FILE = Path.home() / ".influx_token"

# Where a resolved token came from.
FROM_ENV, FROM_KEYCHAIN, FROM_FILE_IMPORTED, FROM_FILE_SESSION, NO_TOKEN = (
    "env", "keychain", "file-imported", "file-session", "none")


@dataclass(frozen=True)
class ResolvedToken:
    """The token to use (None when there is none), a note for the user (never the token itself) and where it
    came from (`FROM_*`). A token read from the lab's file is worth a notice: `from_file`."""

    token: str | None = field(repr=False)
    note: str
    source: str

    @property
    def from_file(self) -> bool:
        return self.source in (FROM_FILE_IMPORTED, FROM_FILE_SESSION)


def _session_only(legacy: Path, err: SecretStoreError | None) -> str:
    why = f"the keychain could not be used ({str(err).rstrip('.')})" if err else "no keychain is available"
    return (f"using the token from {legacy} for this session only, because {why}. Keep that file, or set up a "
            "keychain and save the token there (Settings, or `lem login`)")


def _read_legacy(legacy: Path) -> str:
    try:
        return legacy.read_text(encoding="utf-8", errors="replace").strip() if legacy.is_file() else ""
    except OSError:
        return ""  # unreadable: as if absent (the note then says no token is saved)


def find_token(store: TokenStore | None, *, legacy_file: Path | None = None) -> ResolvedToken:
    """Order: `INFLUX_TOKEN` env, then the keychain, then the lab's `~/.influx_token`, which is imported into
    the keychain once (the user is told the file can now be deleted). When the keychain cannot take it (or
    `store` is None: no keychain at all) the file's token is used for this session only, and the note says so
    and that the file must stay. Raises SecretStoreError only when reading the keychain fails."""
    env = os.environ.get("INFLUX_TOKEN", "").strip()
    if env:
        return ResolvedToken(env, "token from INFLUX_TOKEN", FROM_ENV)
    if store is not None:
        token = store.get()
        if token:
            return ResolvedToken(token, "token from the keychain", FROM_KEYCHAIN)
    legacy = legacy_file if legacy_file is not None else LEGACY_TOKEN_FILE
    text = _read_legacy(legacy)
    if text:
        if store is None:
            return ResolvedToken(text, _session_only(legacy, None), FROM_FILE_SESSION)
        try:
            store.set(text)
        except SecretStoreError as err:
            return ResolvedToken(text, _session_only(legacy, err), FROM_FILE_SESSION)
        return ResolvedToken(text, f"imported the token from {legacy} into the keychain; you can now delete "
                             "that file", FROM_FILE_IMPORTED)
    return ResolvedToken(None, "no token saved: run `lem login` or paste it in Settings", NO_TOKEN)


def find_token_or_env(store: TokenStore, *, legacy_file: Path | None = None) -> ResolvedToken:
    """`find_token`, but a keychain that cannot be used at all does not stop a run that has its token in
    `INFLUX_TOKEN` or the lab's file (which is then used for this session only, and the note says so)."""
    try:
        return find_token(store, legacy_file=legacy_file)
    except SecretStoreError as err:
        resolved = find_token(None, legacy_file=legacy_file)
        if resolved.source == FROM_FILE_SESSION:
            legacy = legacy_file if legacy_file is not None else LEGACY_TOKEN_FILE
            return ResolvedToken(resolved.token, _session_only(legacy, err), FROM_FILE_SESSION)
        return resolved


def resolve_token(store: TokenStore, *, legacy_file: Path | None = None) -> tuple[str | None, str]:
    """(token, note) of `find_token`."""
    resolved = find_token(store, legacy_file=legacy_file)
    return resolved.token, resolved.note


def resolve_token_or_env(store: TokenStore, *, legacy_file: Path | None = None) -> tuple[str | None, str]:
    """(token, note) of `find_token_or_env`."""
    resolved = find_token_or_env(store, legacy_file=legacy_file)
    return resolved.token, resolved.note
