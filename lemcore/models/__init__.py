"""Models: which model fits this machine, getting it, and loading it without crashing on bad input.

catalog.py (the lab's recommended models, pick for this RAM), fit.py (will it fit? arithmetic in words),
downloads.py (resumable hub downloads into the Hugging Face cache), loading.py (resolve a name or folder, load,
check fit), convert.py (Hugging Face checkpoint -> MLX), embedded.py (the built-in SmolLM2), gguf/ (our GGUF
converter). Importing this package does not import mlx.
"""

from lemcore.models.catalog import CatalogEntry, Recommendation, catalog, find_entry, recommend
from lemcore.models.convert import convert_model
from lemcore.models.downloads import DownloadProgress, pull_model
from lemcore.models.embedded import ensure_embedded_model
from lemcore.models.fit import FitReport, ModelNeeds, assess_fit
from lemcore.models.loading import ModelLoaded, ModelRef, check_fit, load_model, resolve_model

__all__ = [
    "CatalogEntry",
    "DownloadProgress",
    "FitReport",
    "ModelLoaded",
    "ModelNeeds",
    "ModelRef",
    "Recommendation",
    "assess_fit",
    "catalog",
    "check_fit",
    "convert_model",
    "ensure_embedded_model",
    "find_entry",
    "load_model",
    "pull_model",
    "recommend",
    "resolve_model",
]
