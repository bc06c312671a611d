"""The Contribute page's job: runs on the engine thread, built from a snapshot of the settings."""

from __future__ import annotations

from app.jobs.model_cache import ModelCache
from lemcore.contribute.engine import ContributeResult
from lemcore.contribute.setup import build_contribution, options_from_settings
from lemcore.jobs import CancelToken, Report
from lemcore.secrets import TokenStore
from lemcore.settings import Settings


def contribute(settings: Settings, token_store: TokenStore, *, models: ModelCache, report: Report,
               cancel: CancelToken, drain: CancelToken) -> ContributeResult:
    """Start with `runner.start(..., pass_drain=True, pass_models=True)`: the model stays loaded in the
    runner's cache between Start presses, until a job that needs the memory releases it."""
    run = build_contribution(options_from_settings(settings), token_store, cache=models.get, report=report,
                             cancel=cancel)
    return run.start(report=report, cancel=cancel, drain=drain)
