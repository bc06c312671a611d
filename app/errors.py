"""Engine errors become one readable sentence with what to do; details go to the log file only."""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path

from lemcore.errors import (
    AuthError,
    Cancelled,
    ConfigError,
    DataError,
    DownloadError,
    LemError,
    ModelFitError,
    ModelLoadError,
    SecretStoreError,
    ServerUnreachable,
    StorageError,
)
from lemcore.settings import data_dir

log = logging.getLogger("lem.app")
LOG_FILE = "lem-desktop.log"

_TITLES = [
    (AuthError, "The server did not accept the token"),
    (ServerUnreachable, "The server cannot be reached"),
    (SecretStoreError, "The keychain is not available"),
    (ModelFitError, "This model does not fit in memory"),
    (ModelLoadError, "The model could not be loaded"),
    (DownloadError, "The download did not finish"),
    (StorageError, "A file on this computer could not be used"),
    (DataError, "A data file has a problem"),
    (ConfigError, "A setting needs attention"),
]


def user_message(err: BaseException) -> tuple[str, str] | None:
    """(title, message) to show, or None for a cancellation (not an error)."""
    if isinstance(err, Cancelled):
        return None
    if isinstance(err, LemError):
        for cls, title in _TITLES:
            if isinstance(err, cls):
                return title, _for_the_window(err)
        return "Something went wrong", str(err)
    log.error("unexpected error", exc_info=err)
    return ("Something went wrong",
            f"An unexpected error happened ({type(err).__name__}). Details are in the log file; "
            "please include it when you report the problem.")


# The engines' sentences serve the command line too, where some advice names a command, a flag or an environment
# variable. In the window each such aside is said as what to do in the app instead. Pattern -> replacement,
# applied in order.
_WINDOW_WORDS: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), r) for p, r in (
    (r"\s*\(or run `lem login`\)", ""),
    (r"\s*\(Settings, or `lem login`\)", " in Settings"),
    (r"contribute offline \(Settings, or --solo on the command line\)", "choose to contribute offline in Settings"),
    (r";? ?on the command line:? `?lem [^)`]*`?", ""),
    (r"[Cc]hoose an output file on a disk with space that you may write to \(`--output` on the command line, or "
     r"move the data folder with LEM_DATA_DIR\)",
     "make room on the disk that holds the data folder, and check that you may write to it (Settings, Open data "
     "folder)"),
    (r"\(in the app: ", "("),
    (r"run `lem login` or paste it in Settings", "paste it in Settings"),
    (r"[Tt]he InfluxDB server", "the lab's server"),  # the name of its software says nothing to a volunteer
))


def for_the_window(text: str) -> str:
    """An engine's sentence, said for the window: command-line advice becomes what to do in the app."""
    for pattern, words in _WINDOW_WORDS:
        text = pattern.sub(functools.partial(_same_case, words), text)
    return text


def _same_case(words: str, found: re.Match[str]) -> str:
    """`words`, starting with a capital where the text it replaces did (a sentence's start)."""
    return words[:1].upper() + words[1:] if found.group(0)[:1].isupper() else words


def _for_the_window(err: LemError) -> str:
    """The error's sentence, said for the window: the keychain's advice names an environment variable that
    only the command line can use, so the window says what to do instead."""
    text = str(err)
    if isinstance(err, SecretStoreError) and "INFLUX_TOKEN" in text:
        return ("No system keychain is available, so a token cannot be kept safely on this computer. Install "
                "and unlock one (on Linux: GNOME Keyring or KWallet), or contribute offline.")
    return for_the_window(text)


def log_path() -> Path:
    """The app's log file (the Help menu's log view reads it)."""
    return data_dir() / "logs" / LOG_FILE


class _LogFormatter(logging.Formatter):
    """An expected failure (a LemError: no keychain, server down, bad data...) is one warning line with its
    sentence; only unexpected errors keep their traceback."""

    def format(self, record: logging.LogRecord) -> str:
        err = record.exc_info[1] if record.exc_info else None
        if isinstance(err, LemError):
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None,
                                            "levelno": logging.WARNING, "levelname": "WARNING",
                                            "msg": f"{record.getMessage()}: {type(err).__name__}: {err}",
                                            "args": None})
        return super().format(record)


def setup_logging() -> Path:
    """Log to a file in the app's data folder (never to a dialog). No secret is ever logged."""

    path = log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(_LogFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return path
