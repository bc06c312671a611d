"""The Contribute page's job: runs on the engine thread, built from a snapshot of the settings."""

from __future__ import annotations

from typing import Any

from lemcore.contribute.engine import ContributeConfig, ContributeResult, run_contribution
from lemcore.contribute.events import Notice
from lemcore.contribute.governor import PRESETS, Governor, GovernorRules
from lemcore.contribute.queue.base import GOLD
from lemcore.contribute.setup import QueueChoice, check_queue, make_generator, open_queue
from lemcore.generate.engine import Sampling
from lemcore.jobs import CancelToken, Report
from lemcore.settings import Settings

_loaded: dict[tuple[str, int], Any] = {}  # model kept loaded between Start presses (engine thread only)


def contribute(settings: Settings, token_store: Any, *, report: Report, cancel: CancelToken,
               drain: CancelToken) -> ContributeResult:
    worker = settings.effective_worker()
    url = "" if settings.solo else settings.influx_url.strip()
    queue = open_queue(QueueChoice(url, settings.influx_db), GOLD, worker, token_store=token_store,
                       notice=lambda m: report(Notice(str(m))))
    if url:
        check_queue(queue, url)
    batch = PRESETS.get(settings.preset, 2)
    key = (settings.model_override, batch)
    if key not in _loaded:
        _loaded.clear()  # one model in memory at a time
        _loaded[key] = make_generator("mlx", settings.model_override, batch_size=batch, report=report,
                                      cancel=cancel)
    governor = Governor(GovernorRules(only_on_power=settings.only_on_power,
                                      pause_when_in_use=settings.pause_when_in_use,
                                      min_free_memory_gb=settings.min_free_memory_gb))
    config = ContributeConfig(kind=GOLD, worker=worker, pause_check=governor.pause_reason,
                              sampling=Sampling(max_tokens=settings.max_tokens))
    return run_contribution(config, queue, _loaded[key], report=report, cancel=cancel, drain=drain)
