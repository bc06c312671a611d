"""One way to build a contribution run: `build_contribution` turns `ContributionOptions` into the queue, the
generator and the engine config.

`lem gold/expand` fills the options from its flags (falling back to the settings), the app's Contribute
page from the settings (`options_from_settings`); both then build the run here, so they pick the same model
and server the same way and fail the same way on a wrong address or token.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lemcore.contribute.engine import (
    ContributeConfig,
    ContributeResult,
    default_output,
    prompt_file,
    run_contribution,
)
from lemcore.contribute.events import Notice
from lemcore.contribute.governor import PRESETS, Governor, GovernorRules
from lemcore.contribute.queue.base import GOLD, WorkQueue, check_lease
from lemcore.contribute.queue.lab import InfluxQueue
from lemcore.contribute.queue.solo import SQLiteQueue, default_solo_queue_path
from lemcore.contribute.storage import probe_writable
from lemcore.errors import ConfigError, SecretStoreError, ServerUnreachable
from lemcore.generate.api import APIGenerator
from lemcore.generate.engine import MLXGenerator
from lemcore.generate.protocol import Generator, Sampling
from lemcore.hardware import detect_hardware, mlx_backend
from lemcore.influx import InfluxClient, InfluxTarget
from lemcore.jobs import CancelToken, Report, no_report
from lemcore.models.catalog import Recommendation, recommend
from lemcore.prompts import load_expansion_prompts, load_gold_prompts, prompt_set_hash
from lemcore.secrets import GENERATION_API_ACCOUNT, KeyringTokenStore, TokenStore, find_token_or_env
from lemcore.settings import Settings

BACKENDS = ("mlx", "api")

# The repetition guard contribution runs with (Sampling's own defaults leave it off, as the lab's sampling
# does): mlx-lm's repetition penalty over the last REPETITION_CONTEXT tokens, and loops ended as soon as they
# show. Measured on the built-in model (tests/perf/bench_quality_gate.py, figures in its note): 72% of gold
# answers pass the quality gate with it, 9% without. The context matters most: the model's loops are whole
# sentences, which mlx-lm's default 20 tokens do not reach (3 of 16 passed); at 256 the text loses its
# punctuation. `--repetition-penalty 1 --no-loop-stop` gives the lab's sampling back.
REPETITION_PENALTY = 1.2
REPETITION_CONTEXT = 128


def guarded_sampling(**fields: Any) -> Sampling:
    """Contribution's sampling: the lab's (temperature 0.3, no top-p) plus the repetition guard; `fields`
    override any of it (`max_tokens=...`, `repetition_penalty=1.0` for the lab's own)."""
    guard: dict[str, Any] = {"repetition_penalty": REPETITION_PENALTY, "repetition_context": REPETITION_CONTEXT,
                             "stop_loops": True}
    return Sampling(**{**guard, **fields})


# How a loaded generator is kept between runs: called with a key and a loader, returns the generator for
# that key (the app passes its ModelCache.get, which keeps one model in memory).
GeneratorCache = Callable[[Hashable, Callable[[], Generator]], Generator]


def load_uncached(key: Hashable, load: Callable[[], Generator]) -> Generator:
    """The `GeneratorCache` of a one-shot process (`lem gold`): load every time."""
    return load()


@dataclass(frozen=True)
class QueueChoice:
    server_url: str  # "" = solo mode
    db: str = "training"
    lease_s: float = 120.0


@dataclass(frozen=True)
class ContributionOptions:
    """Everything that decides a contribution run."""

    kind: str = GOLD
    worker: str = ""
    server_url: str = ""  # "" = solo mode: the local SQLite queue
    db: str = "training"
    lease_s: float = 120.0
    backend: str = "mlx"  # or "api": an OpenAI-compatible server
    model: str = ""  # MLX: catalog id, hub id or folder; "" = the model recommended for this computer
    batch_size: int = 8  # answers generated together (MLX)
    api_url: str = ""
    api_model: str = ""
    sampling: Sampling = field(default_factory=guarded_sampling)
    limit: int | None = None
    target: int | None = None
    prompts: Path | None = None
    output: Path | None = None
    axioms_path: Path | None = None
    kernel_path: Path | None = None
    pause_rules: GovernorRules | None = None  # battery, memory and in-use pauses; None never pauses
    quality_gate: bool = True  # hold back answers the quality gate refuses (never reported)
    hold_truncated: bool = False  # also hold answers only for being cut at the token limit

    @property
    def queue_choice(self) -> QueueChoice:
        return QueueChoice(self.server_url, self.db, self.lease_s)

    def engine_config(self) -> ContributeConfig:
        governor = Governor(self.pause_rules) if self.pause_rules is not None else None
        return ContributeConfig(
            kind=self.kind, prompts=self.prompts, output=self.output, worker=self.worker, sampling=self.sampling,
            limit=self.limit, target=self.target, axioms_path=self.axioms_path, kernel_path=self.kernel_path,
            pause_check=governor.pause_reason if governor is not None else None,
            quality_gate=self.quality_gate, hold_truncated=self.hold_truncated,
        )


def options_from_settings(settings: Settings) -> ContributionOptions:
    """The app's run: gold answers, the pace preset's batch, the governor's pauses."""
    return ContributionOptions(
        kind=GOLD, worker=settings.effective_worker(),
        server_url="" if settings.solo else settings.influx_url.strip(), db=settings.influx_db,
        model=settings.model_override, batch_size=PRESETS.get(settings.preset, 2),
        sampling=guarded_sampling(max_tokens=settings.max_tokens) if settings.repetition_guard
        else Sampling(max_tokens=settings.max_tokens),
        pause_rules=GovernorRules(only_on_power=settings.only_on_power,
                                  pause_when_in_use=settings.pause_when_in_use,
                                  min_free_memory_gb=settings.min_free_memory_gb),
    )


@dataclass(frozen=True)
class ContributionRun:
    """A run ready to start: `start()` generates until the work runs out, the limit, a drain or a cancel."""

    config: ContributeConfig
    queue: WorkQueue
    generator: Generator

    def start(self, *, report: Report = no_report, cancel: CancelToken | None = None,
              drain: CancelToken | None = None) -> ContributeResult:
        return run_contribution(self.config, self.queue, self.generator, report=report, cancel=cancel,
                                drain=drain)


def build_contribution(options: ContributionOptions, token_store: TokenStore | None = None, *,
                       cache: GeneratorCache = load_uncached, report: Report = no_report,
                       cancel: CancelToken | None = None) -> ContributionRun:
    """Check the options, open the queue (and, with a server, check the address and token) and check that the
    output can be written, then load the generator through `cache`: a wrong address or token, or a read-only
    or full disk, fails in seconds, not after a model download. `token_store` defaults to the system keychain."""
    if options.backend not in BACKENDS:
        raise ConfigError(f"unknown backend {options.backend!r}: use mlx or api.")
    config = options.engine_config()
    config.validate()
    check_lease(options.lease_s)  # solo or lab: the same range (1 s .. 1 h)
    queue = open_queue(options.queue_choice, options.kind, options.worker, prompts=options.prompts,
                       token_store=token_store, report=report)
    try:
        if options.server_url:
            check_queue(queue, options.server_url)
        probe_writable(Path(config.output) if config.output else default_output(config.kind, config.worker))
    except BaseException:
        close_queue(queue)
        raise
    generator = make_generator(options.backend, options.model, batch_size=options.batch_size,
                               api_url=options.api_url, api_model=options.api_model, token_store=token_store,
                               cache=cache, report=report, cancel=cancel)
    return ContributionRun(config, queue, generator)


def close_queue(queue: WorkQueue) -> None:
    """Close a queue's file or connections, where it has any (both of ours do)."""
    close = getattr(queue, "close", None)
    if callable(close):
        close()


def open_queue(choice: QueueChoice, kind: str, worker: str, *, prompts: Path | None = None,
               token_store: TokenStore | None = None, report: Report = no_report) -> WorkQueue:
    """The lab's InfluxDB queue when a server is set, else the local SQLite queue (solo mode), which keeps
    each prompt set (`prompts`, default the shipped gold prompts) apart."""
    if not choice.server_url:
        return open_solo_queue(default_solo_queue_path(), kind, worker, prompt_file(prompts), lease_s=choice.lease_s)

    resolved = find_token_or_env(token_store if token_store is not None else KeyringTokenStore())
    if not resolved.token:
        raise ConfigError(f"No token for {choice.server_url}: paste it in Settings (or run `lem login`), "
                          "or contribute offline.")
    if resolved.from_file:
        report(Notice(resolved.note[0].upper() + resolved.note[1:] + "."))
    client = InfluxClient(InfluxTarget(choice.server_url, choice.db), resolved.token)
    return InfluxQueue(client, kind, worker, lease_s=choice.lease_s)


def open_solo_queue(path: Path, kind: str, worker: str, prompts: Path, *, lease_s: float = 120.0) -> SQLiteQueue:
    """The solo queue for one prompt set. Rows of a queue file from before prompt sets count for this set
    where they match its items (`SQLiteQueue.adopt_legacy`)."""
    queue = SQLiteQueue(path, kind, worker, prompt_set=prompt_set_hash(prompts), lease_s=lease_s)
    try:
        if queue.has_legacy():
            loader = load_gold_prompts if kind == GOLD else load_expansion_prompts
            queue.adopt_legacy(loader(prompts, on_bad_line=lambda bad: None))
    except BaseException:
        queue.close()
        raise
    return queue


def check_queue(queue: WorkQueue, url: str) -> None:
    """Fail fast on a wrong address, token or database, before loading a model: one small, time-bounded request
    (`InfluxQueue.check_access`), not a read of the finished set, which the run itself makes at its start. A
    queue without `check_access` (solo, a test's) has nothing to check."""
    check = getattr(queue, "check_access", None)
    if not callable(check):
        return
    try:
        check()
    except ServerUnreachable:
        raise ServerUnreachable(f"Cannot reach the InfluxDB server at {url}. Check the address in Settings, or "
                                "contribute offline (Settings, or --solo on the command line).") from None


def recommended_model() -> Recommendation:
    """The lab's pick for this machine's memory and GPU."""
    return recommend(detect_hardware(), mlx_backend())


def resolve_generation_model(model: str) -> str:
    """The model to generate with: the user's override (hub id or folder), else the recommended catalog id
    (which the Models engine downloads or, for the built-in model, converts once)."""
    return model or recommended_model().entry.id


def make_generator(backend: str, model: str, *, batch_size: int, api_url: str = "", api_model: str = "",
                   token_store: TokenStore | None = None, cache: GeneratorCache = load_uncached,
                   report: Report = no_report, cancel: CancelToken | None = None) -> Generator:
    """An APIGenerator for `backend="api"`, else the MLX model loaded through `cache` (keyed by model and
    batch: the fit check counted `batch_size` sequences)."""
    if backend == "api":
        key = None
        try:
            key = (token_store if token_store is not None else KeyringTokenStore()).get(GENERATION_API_ACCOUNT)
        except SecretStoreError:
            pass  # a key is optional for local servers
        return APIGenerator(api_url, api_model, api_key=key)

    path = resolve_generation_model(model)
    return cache(("mlx", path, batch_size),
                 lambda: MLXGenerator.load(path, batch_size=batch_size, report=report, cancel=cancel))
