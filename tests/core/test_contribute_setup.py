"""The seams of a contribution run: both backends are `Generator`s, and `build_contribution` builds the run the
CLI and the app start (queue, generator through the caller's cache, config)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable

import pytest

from lemcore.contribute.engine import ContributeResult
from lemcore.contribute.events import Notice
from lemcore.contribute.governor import PRESETS
from lemcore.contribute.queue.solo import SQLiteQueue
from lemcore.contribute.setup import (
    ContributionOptions,
    QueueChoice,
    build_contribution,
    open_queue,
    options_from_settings,
)
from lemcore.errors import AuthError, ConfigError, StorageError
from lemcore.events import Event
from lemcore.generate import WAIT, APIGenerator, Feed, Generator, GenResult, Messages, MLXGenerator, Sampling
from lemcore.jobs import CancelToken, Report, no_report
from lemcore.secrets import MemoryTokenStore
from lemcore.settings import Settings
from tests.core.contribute_helpers import jsonl_indices, write_prompts, write_small_kernel


class EchoGenerator:
    """A backend without a model: answers each prompt with its last message."""

    name = "echo"

    def __init__(self, batch_size: int = 3) -> None:
        self.batch_size = batch_size
        self.prefix_samples: list[list[Messages]] = []

    def set_shared_prefix(self, sample_messages: list[Messages]) -> int:
        self.prefix_samples.append(sample_messages)
        return 0

    def run(self, feed: Feed, sampling: Sampling, on_result: Callable[[GenResult], None], *,
            report: Report = no_report, cancel: CancelToken | None = None,
            on_tick: Callable[[], None] | None = None) -> int:
        done = 0
        while (item := feed()) is not None:
            if item is WAIT:
                continue
            on_result(GenResult(item.key, item.messages[-1]["content"][:10], 5, 2, 0.01, False))
            done += 1
        return done


@pytest.mark.parametrize("make", [lambda: MLXGenerator(object(), object(), batch_size=4, name="m"),
                                  lambda: APIGenerator("http://127.0.0.1:9/v1", "m"), EchoGenerator],
                         ids=["mlx", "api", "fake"])
def test_backends_satisfy_the_generator_protocol(make: Callable[[], Generator]) -> None:
    gen = make()
    assert isinstance(gen, Generator)
    wanted = set(inspect.signature(Generator.run).parameters) - {"self"}
    assert wanted <= set(inspect.signature(gen.run).parameters)
    gen.batch_size = 5  # settable, typed: engines size their claims by it
    assert gen.batch_size == 5
    assert not isinstance(object(), Generator)


def test_mlx_batch_size_stays_positive() -> None:
    gen = MLXGenerator(object(), object(), batch_size=0)
    assert gen.batch_size == 1
    gen.batch_size = 0
    assert gen.batch_size == 1


def test_build_contribution_solo_loads_through_the_cache_and_runs(tmp_path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 5)
    kernel = write_small_kernel(tmp_path / "k")
    loads: list[Hashable] = []
    kept: dict[Hashable, Generator] = {}

    def cache(key: Hashable, load: Callable[[], Generator]) -> Generator:
        loads.append(key)
        return kept.setdefault(key, EchoGenerator())

    options = ContributionOptions(worker="w", model="some/model", batch_size=3, prompts=prompts,
                                  output=tmp_path / "o.jsonl", axioms_path=kernel[0], kernel_path=kernel[1],
                                  quality_gate=False)  # the echo is no answer
    run = build_contribution(options, MemoryTokenStore(), cache=cache)
    assert isinstance(run.queue, SQLiteQueue) and isinstance(run.generator, EchoGenerator)
    assert loads == [("mlx", "some/model", 3)]
    events: list[Event] = []
    result = run.start(report=events.append)
    assert isinstance(result, ContributeResult) and result.done_this_run == 5
    assert sorted(jsonl_indices(tmp_path / "o.jsonl")) == list(range(5))
    # A second run of the same options gets the same generator back from the cache.
    assert build_contribution(options, MemoryTokenStore(), cache=cache).generator is run.generator


def test_build_contribution_checks_options_before_loading(tmp_path) -> None:
    def cache(key: Hashable, load: Callable[[], Generator]) -> Generator:
        raise AssertionError("no model may load for a bad run")

    with pytest.raises(ConfigError, match="worker name is empty"):
        build_contribution(ContributionOptions(worker=" "), MemoryTokenStore(), cache=cache)
    with pytest.raises(ConfigError, match="unknown backend"):
        build_contribution(ContributionOptions(worker="w", backend="gpu"), MemoryTokenStore(), cache=cache)
    with pytest.raises(ConfigError, match="No token"):
        build_contribution(ContributionOptions(worker="w", server_url="http://127.0.0.1:9"),
                           MemoryTokenStore(), cache=cache)


def test_options_from_settings_are_the_apps_run() -> None:
    settings = Settings(influx_url=" http://lab:8181 ", worker_name="vol", model_override="m", preset="max",
                        max_tokens=64, only_on_power=False, min_free_memory_gb=1.5)
    options = options_from_settings(settings)
    assert (options.kind, options.worker, options.server_url, options.model) == ("gold", "vol", "http://lab:8181", "m")
    assert options.batch_size == PRESETS["max"] and options.sampling.max_tokens == 64
    assert options.pause_rules is not None and options.pause_rules.min_free_memory_gb == 1.5
    assert options.engine_config().pause_check is not None
    settings.solo = True
    assert options_from_settings(settings).server_url == ""
    # The repetition guard is on unless the volunteer turns it off; off is the lab's plain sampling.
    assert options.sampling.repetition_penalty > 1 and options.sampling.stop_loops
    settings.repetition_guard = False
    plain = options_from_settings(settings).sampling
    assert (plain.repetition_penalty, plain.stop_loops, plain.temperature, plain.max_tokens) == (1.0, False, 0.3, 64)


def test_legacy_token_import_is_reported_as_a_notice(tmp_path, monkeypatch) -> None:
    import lemcore.secrets as secrets

    legacy = tmp_path / ".influx_token"
    legacy.write_text("legacy-tok\n")
    monkeypatch.setattr(secrets, "LEGACY_TOKEN_FILE", legacy)
    events: list[Event] = []
    store = MemoryTokenStore()
    open_queue(QueueChoice("http://127.0.0.1:9"), "gold", "w", token_store=store, report=events.append)
    assert store.get() == "legacy-tok"
    (notice,) = events
    assert isinstance(notice, Notice) and "delete that file" in notice.message and "legacy-tok" not in notice.message


def test_the_lab_check_is_one_small_request_and_a_failed_build_closes_the_queue(tmp_path, influx,
                                                                               monkeypatch) -> None:
    """Checking the address and token costs a ping and one bounded query, not a read of every finished item
    (the run reads those itself); a build that fails after the queue opened closes it, solo or lab."""
    from lemcore.contribute.queue.lab import InfluxQueue
    from lemcore.influx import InfluxClient

    queries: list[str] = []
    real_query = InfluxClient.query

    def spy(self, influxql: str):
        queries.append(influxql)
        return real_query(self, influxql)

    monkeypatch.setattr(InfluxClient, "query", spy)
    prompts = write_prompts(tmp_path / "p.jsonl", 3)
    options = ContributionOptions(worker="w", server_url=influx.url, prompts=prompts, output=tmp_path / "o.jsonl",
                                  quality_gate=False)
    run = build_contribution(options, MemoryTokenStore({"influx-token": influx.token}),
                             cache=lambda key, load: EchoGenerator())
    assert isinstance(run.queue, InfluxQueue)
    assert run.queue.stats().requests == 2 and len(queries) == 1  # /ping and one query
    assert "LIMIT 1" in queries[0] and "now() - " in queries[0] and "SHOW TAG VALUES" not in queries[0]
    run.queue.close()

    closed: list[str] = []
    monkeypatch.setattr(InfluxQueue, "close", lambda self: closed.append("lab"))
    monkeypatch.setattr(SQLiteQueue, "close", lambda self: closed.append("solo"))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for server in (influx.url, ""):
        bad = ContributionOptions(worker="w", server_url=server, prompts=prompts, output=blocker / "o.jsonl")
        with pytest.raises(StorageError):
            build_contribution(bad, MemoryTokenStore({"influx-token": influx.token}),
                               cache=lambda key, load: EchoGenerator())
    assert closed == ["lab", "solo"]
    with pytest.raises(AuthError):  # a wrong token still fails at once
        build_contribution(options, MemoryTokenStore({"influx-token": "wrong"}),
                           cache=lambda key, load: EchoGenerator())
