"""The benchmark engine: a model (or base + adapter) × suites, several samples per item, batched on MLX.

Every (item, sample) is generated through `MLXGenerator` (continuous batching, shared-prefix cache) and
written to the run folder the moment it finishes, with the exact chat-templated prompt the model saw. A
second call with the same folder resumes: finished (item, sample) pairs are skipped. The folder refuses a
resume whose model, adapter, questions or sampling differ, so results never silently mix (docs/lab-formats.md,
"Results that cannot be reproduced or silently mix"). Judge-scored suites are judged after generation, when a
judge is configured.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lemcore.benchmarks import store
from lemcore.benchmarks.events import BenchFinished, BenchProgress, BenchRow, BenchStarted
from lemcore.benchmarks.judge import JudgeBackend, JudgeConfig
from lemcore.benchmarks.provenance import adapter_identity, host, library_versions, model_identity
from lemcore.benchmarks.score import judge_run
from lemcore.benchmarks.suites import Suite, load_suite, suite_module
from lemcore.errors import Cancelled, ConfigError
from lemcore.generate.engine import MLXGenerator, load_mlx_model
from lemcore.generate.protocol import Generator, GenItem, GenResult, Sampling
from lemcore.jobs import CancelToken, Report, no_report


@dataclass(frozen=True)
class SuiteSpec:
    id: str
    path: str = ""  # a question file; empty: the hub copy in the local cache (ethics: the seeds folder)
    n: int | None = None  # subsample size (seeded by BenchConfig.seed); None: every item
    stratify: bool = True


@dataclass(frozen=True)
class BenchConfig:
    model: str  # a folder, catalog id or downloaded hub id
    suites: tuple[SuiteSpec, ...]
    adapter: str = ""  # a LoRA adapter folder to apply on top of the model
    samples: int = 3  # per item: one sample at temperature 0.3 moved the lab's scores by 10 points
    seed: int = 0
    temperature: float = 0.3
    top_p: float = 1.0
    max_tokens: int = 0  # 0: each suite's default
    batch_size: int = 8
    run_dir: str = ""  # empty: a new folder <data folder>/benchmarks/<time>-<label>; a run folder: resume it
    label: str = ""  # the name tables show; empty: the model's (and adapter's) folder name
    judge: JudgeConfig | None = None


@dataclass(frozen=True)
class BenchResult:
    run_dir: Path
    summary: dict[str, Any]
    seconds: float
    generated: int  # (item, sample) pairs generated in this call
    resumed: int  # pairs found done from an earlier call
    judge_failed: dict[str, int] = field(default_factory=dict)


def suite_seed(seed: int, suite: str) -> int:
    return int(hashlib.sha256(f"{seed}:{suite}".encode()).hexdigest()[:8], 16)


def _label(config: BenchConfig) -> str:
    if config.label:
        return config.label
    name = Path(config.model.rstrip("/")).name or config.model
    return f"{name}+{Path(config.adapter.rstrip('/')).name}" if config.adapter else name


def _validate(config: BenchConfig) -> None:
    if not config.suites:
        raise ConfigError("Choose at least one benchmark suite.")
    ids = [s.id for s in config.suites]
    if len(set(ids)) != len(ids):
        raise ConfigError("Each suite may appear once per run.")
    if config.samples < 1:
        raise ConfigError("Samples per item must be at least 1.")
    if config.batch_size < 1:
        raise ConfigError("Batch size must be at least 1.")
    if config.adapter and not (Path(config.adapter).expanduser() / "adapter_config.json").is_file():
        raise ConfigError(f"{config.adapter} holds no adapter (adapter_config.json). Pick a training run "
                          "folder, its best/ folder or a checkpoint.")
    for spec in config.suites:
        suite_module(spec.id)


def _fingerprint(config: BenchConfig, model: dict[str, Any], adapter: dict[str, Any] | None,
                 suites: dict[str, Suite], max_tokens: dict[str, int]) -> dict[str, Any]:
    """What must be equal for two sessions to write into the same run folder."""
    return {
        "model_sha256": model.get("sha256") or model.get("name"),
        "adapter_sha256": adapter.get("sha256") if adapter else None,
        "seed": config.seed,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "max_tokens": max_tokens,
        "suites": {s: {"sha256": suite.sha256, "item_ids": [i.id for i in suite.items],
                       "instruction": suite_module(s).INSTRUCTION} for s, suite in suites.items()},
    }


def _prepare(run_dir: Path | None, config: BenchConfig, suites: dict[str, Suite], max_tokens: dict[str, int],
             label: str) -> tuple[Path, dict[str, Any]]:
    """The run folder and its run.json contents. `run_dir` None: a new folder; an existing run folder is
    resumed (refused if its settings differ)."""
    model = model_identity(config.model)
    adapter = adapter_identity(config.adapter) if config.adapter else None
    fingerprint = _fingerprint(config, model, adapter, suites, max_tokens)
    if run_dir is not None and (run_dir / store.RUN_FILE).is_file():
        run = store.read_run(run_dir)
        old = run.get("fingerprint", {})
        changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        if changed:
            raise ConfigError(f"{run_dir} holds a run with different {', '.join(changed)}. Resume it with the "
                              "same settings, or choose a new run folder.")
        run["samples"] = max(int(run.get("samples", 1)), config.samples)
        return run_dir, run
    if run_dir is None:
        run_dir = store.new_run_dir(label)  # never an earlier run's folder, even one from the same second
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, {
        "format": store.FORMAT,
        "kind": "generated",
        "label": label,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": model,
        "adapter": adapter,
        "samples": config.samples,
        "seed": config.seed,
        "sampling": {s: {"temperature": config.temperature, "top_p": config.top_p, "max_tokens": max_tokens[s],
                         "seed": suite_seed(config.seed, s)} for s in suites},
        "prompt_format": "chat template, one user turn, no system message",
        "suites": {s: {**suite.provenance(), "instruction": suite_module(s).INSTRUCTION}
                   for s, suite in suites.items()},
        "libraries": library_versions(),
        "host": host(),
        "judges": {},
        "sessions": [],
        "fingerprint": fingerprint,
    }


def load_generator(config: BenchConfig) -> Generator:
    """MLXGenerator for the model, with the adapter applied when one is given."""

    model, tokenizer = load_mlx_model(config.model)
    if config.adapter:
        from mlx_lm.tuner.utils import load_adapters

        try:
            load_adapters(model, str(Path(config.adapter).expanduser()))
        except (ValueError, KeyError, FileNotFoundError) as err:
            raise ConfigError(f"The adapter in {config.adapter} does not fit {config.model}: "
                              f"{str(err)[:300]}") from None
        model.eval()
    return MLXGenerator(model, tokenizer, batch_size=config.batch_size, name=config.model)


def run_benchmark(config: BenchConfig, *, report: Report = no_report, cancel: CancelToken | None = None,
                  generator: Generator | None = None, judge: JudgeBackend | None = None) -> BenchResult:
    """Generate, score and summarise. `generator`/`judge` may be passed in (tests, or a model already loaded)."""
    started = time.monotonic()
    cancel = cancel or CancelToken()
    _validate(config)
    suites = {s.id: load_suite(s.id, s.path or None, n=s.n, seed=config.seed, stratify=s.stratify)
              for s in config.suites}
    max_tokens = {s: config.max_tokens or suite_module(s).MAX_TOKENS for s in suites}
    label = _label(config)
    run_dir, run = _prepare(Path(config.run_dir).expanduser() if config.run_dir else None, config, suites,
                            max_tokens, label)
    store.write_json(run_dir / store.RUN_FILE, run)

    todo: dict[str, list[tuple[int, int]]] = {}
    total = resumed = 0
    for s, suite in suites.items():
        done = store.latest_rows(run_dir, s)
        pairs = [(i, k) for i, item in enumerate(suite.items) for k in range(config.samples)]
        todo[s] = [(i, k) for i, k in pairs if (suite.items[i].id, k) not in done]
        total += len(pairs)
        resumed += len(pairs) - len(todo[s])
    report(BenchStarted(run_dir, label, tuple(suites), total, resumed))

    session: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds"),
                               "batch_size": config.batch_size, "generated": 0, "suites": {}}
    run["sessions"].append(session)
    generated = 0
    try:
        if any(todo.values()):
            report(BenchProgress("loading", "", 0, 1))
            gen = generator if generator is not None else load_generator(config)
            for s, pairs in todo.items():
                if pairs:
                    cancel.check()
                    session["suites"][s] = _generate_suite(gen, run_dir, suites[s], pairs, run["sampling"][s],
                                                           report, cancel)
                    generated += len(pairs)
                    session["generated"] = generated
            del gen  # drop our reference so a local judge model has the memory
        session["outcome"] = "finished"
    except BaseException as err:
        session["outcome"] = "cancelled" if isinstance(err, Cancelled) else f"failed: {err}"[:300]
        raise
    finally:
        session["ended"] = datetime.now(UTC).isoformat(timespec="seconds")
        store.write_json(run_dir / store.RUN_FILE, run)

    judge_failed: dict[str, int] = {}
    judged_suites = [s for s in suites if suite_module(s).JUDGED]
    backend: JudgeBackend | JudgeConfig | None = judge if judge is not None else config.judge
    if judged_suites and backend is not None:

        # Retry settings come from config.judge also when the backend itself is passed in.
        tries = config.judge.retries if config.judge else None
        backoff = config.judge.backoff_s if config.judge else None
        judge_failed = judge_run(run_dir, backend, suites=judged_suites,
                                 retries=tries, backoff_s=backoff, report=report, cancel=cancel)
    summary = store.summarize_run(run_dir, seed=config.seed)
    seconds = time.monotonic() - started
    report(BenchFinished(run_dir, summary, seconds))
    return BenchResult(run_dir, summary, seconds, generated, resumed, judge_failed)


def _generate_suite(gen: Generator, run_dir: Path, suite: Suite, pairs: list[tuple[int, int]],
                    sampling_record: dict[str, Any], report: Report, cancel: CancelToken) -> dict[str, Any]:

    module = suite_module(suite.id)
    sampling = Sampling(**sampling_record)
    queue = iter(pairs)
    path = store.rows_path(run_dir, suite.id)
    done = tokens = 0
    started = time.perf_counter()
    if len(suite.items) > 1:
        gen.set_shared_prefix([module.messages(suite.items[0]), module.messages(suite.items[1])])

    def feed() -> GenItem | None:
        pair = next(queue, None)
        return None if pair is None else GenItem(pair, module.messages(suite.items[pair[0]]))

    def on_result(result: GenResult) -> None:
        nonlocal done, tokens
        index, sample = result.key
        item = suite.items[index]
        # A prompt too long for the model's context is recorded unscored, never scored as an empty answer.
        score = module.score(item, result.text) if not module.JUDGED and not result.refused else {}
        store.append_jsonl(path, {
            "id": item.id, "sample": sample, "status": "refused" if result.refused else "ok",
            **({"refused": result.refused} if result.refused else {}), "question": item.question,
            "reference": item.reference, "stratum": item.stratum, "messages": module.messages(item),
            "prompt_text": result.prompt_text, "prompt_tokens": result.prompt_tokens, "response": result.text, "tokens": result.tokens,
            "seconds": round(result.seconds, 4), "truncated": result.truncated, "score": score,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        })
        done += 1
        tokens += result.tokens
        report(BenchRow(suite.id, item.id, sample, result.tokens, result.seconds, result.truncated, score))
        report(BenchProgress("generating", suite.id, done, len(pairs)))

    gen.run(feed, sampling, on_result, report=report, cancel=cancel)
    wall = time.perf_counter() - started
    return {"generated": done, "tokens": tokens, "seconds": round(wall, 3),
            "tokens_per_second": round(tokens / wall, 2) if wall > 0 else None,
            "sampling": asdict(sampling)}
