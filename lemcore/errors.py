"""Errors the engines raise. Each message says what is wrong and what to do; none ever holds a secret."""

from __future__ import annotations


class LemError(Exception):
    """Base of every error a user may see. `str(err)` is the message to show."""


class Cancelled(LemError):
    """The user cancelled the job. Not a failure: the GUI ignores it."""

    def __init__(self, message: str = "Cancelled.") -> None:
        super().__init__(message)


class ConfigError(LemError):
    """A setting or input file is invalid."""


class DataError(LemError):
    """An input data file has bad content (the message names file and line)."""


class ModelLoadError(LemError):
    """A model could not be found, read or loaded."""


class ModelFitError(LemError):
    """A model would not fit in this machine's memory."""


class DownloadError(LemError):
    """A download failed or the hub could not be reached."""


class InfluxError(LemError):
    """The InfluxDB server refused or could not be reached."""


class AuthError(InfluxError):
    """The server rejected the token (HTTP 401/403)."""


class ServerUnreachable(InfluxError):
    """The server could not be reached at all (connection refused, DNS, timeout)."""


class SecretStoreError(LemError):
    """The system keychain is missing, locked or refused the request."""


class StorageError(LemError):
    """A local file or folder could not be written or read (read-only disk, disk full, no permission). The
    message names the path and what to do; work finished before the failure is kept."""
