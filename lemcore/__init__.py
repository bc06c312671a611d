"""lemcore: the GUI-free engines of LEM Desktop (generation, training, benchmarks).

Importing this package must stay cheap: it never imports mlx, Qt or network clients at import time, so
`lem --help` and the GUI start fast. Engines import mlx lazily inside the functions that need it.
"""

import os

# transformers (pulled in by mlx-lm for tokenizers) announces at import that PyTorch is absent; we never
# use PyTorch, so keep that line out of the CLI's and the app's output.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from lemcore.errors import (  # noqa: E402
    AuthError,
    Cancelled,
    ConfigError,
    DataError,
    DownloadError,
    InfluxError,
    LemError,
    ModelFitError,
    ModelLoadError,
    SecretStoreError,
    ServerUnreachable,
)
from lemcore.jobs import CancelToken, Report, no_report

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "CancelToken",
    "Cancelled",
    "ConfigError",
    "DataError",
    "DownloadError",
    "InfluxError",
    "LemError",
    "ModelFitError",
    "ModelLoadError",
    "Report",
    "SecretStoreError",
    "ServerUnreachable",
    "__version__",
    "no_report",
]
