"""The benchmark engine: a model (or base + adapter) × suites, several samples per item, batched on MLX.

Every (item, sample) is generated through `MLXGenerator` (continuous batching, shared-prefix cache) and
written to the run folder the moment it finishes, with the exact chat-templated prompt the model saw. A
second call with the same folder resumes: finished (item, sample) pairs are skipped. The folder refuses a
resume whose model, adapter, questions or sampling differ, so results never silently mix (docs/lab-formats.md,
"Results that cannot be reproduced or silently mix"). Judge-scored suites are judged after generation, when a
judge is configured. Multiple-choice suites scored by log-likelihood (`LOGLIK = True` in the suite module:
TruthfulQA MC) generate nothing: each item's answers are scored once on the same model
(`lemcore.generate.loglik`) and written as one row per item. run.json records the sessions (outcome
finished, cancelled, interrupted or failed, with the rows each really wrote) and what the model's chat
template added to our messages (`prompt_template`: a default system prompt, dates).

The model under test may also be any OpenAI-compatible server (`api_base`, `api_model`: llama.cpp's server,
Ollama, LM Studio, vLLM): the same suites, rows, resume and provenance, with the model identified by the
server's address (without secrets), the model name and what the server reports of it (`GET /models`);
a resume is refused when that report changed. Log-likelihood suites need a model loaded here and are refused
for servers. Few-shot prompts (`num_fewshot`) put K solved examples from the same question file before each
item as earlier chat turns (`fewshot.py`); which ones is recorded per suite.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lemcore.benchmarks import store
from lemcore.benchmarks.events import BenchFinished, BenchProgress, BenchRow, BenchStarted
from lemcore.benchmarks.fewshot import FewShot, choose_fewshot, supports_fewshot
from lemcore.benchmarks.judge import JudgeBackend, JudgeConfig
from lemcore.benchmarks.provenance import (
    adapter_identity,
    describe_prompt_format,
    host,
    library_versions,
    model_identity,
    template_system_prompt,
)
from lemcore.benchmarks.score import judge_run
from lemcore.benchmarks.suites import BenchItem, Suite, load_suite, suite_module
from lemcore.errors import Cancelled, ConfigError, SecretStoreError
from lemcore.generate.api import APIError, APIGenerator, public_url
from lemcore.generate.engine import MLXGenerator, encode_prompt, load_mlx_model, prepare_cpu_kernels
from lemcore.generate.loglik import encode_pair, loglikelihood
from lemcore.generate.protocol import Generator, GenItem, GenResult, Messages, Sampling
from lemcore.jobs import CancelToken, Report, no_report
from lemcore.models.loading import ModelLoaded
from lemcore.secrets import GENERATION_API_ACCOUNT, KeyringTokenStore, TokenStore


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
    # The model under test on an OpenAI-compatible server instead of MLX (then `model` may be empty).
    api_base: str = ""  # e.g. http://localhost:8080/v1
    api_model: str = ""  # the name the server knows it by; empty: the server's only model
    api_key_account: str = GENERATION_API_ACCOUNT  # keychain account of its key; none needed for local servers
    num_fewshot: int = 0  # solved examples before each item, as earlier chat turns (gsm8k, truthfulqa)


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


def _label(config: BenchConfig, server: dict[str, Any] | None = None) -> str:
    if config.label:
        return config.label
    if config.api_base:
        return str((server or {}).get("model") or config.api_model or "api-model")
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
    if config.num_fewshot < 0:
        raise ConfigError("The number of few-shot examples cannot be negative (0: none).")
    if config.api_base:
        if config.adapter:
            raise ConfigError("An adapter is applied to a model loaded here (MLX); a server's model already has "
                              "its weights. Benchmark the fused model on the server, or drop --api-base.")
        if not config.api_base.startswith(("http://", "https://")):
            raise ConfigError(f"--api-base {public_url(config.api_base)!r} is not a web address (e.g. "
                              "http://localhost:8080/v1).")
    elif not config.model:
        raise ConfigError("Give a model (a folder, catalog id or hub id), or a server with --api-base.")
    if config.adapter and not (Path(config.adapter).expanduser() / "adapter_config.json").is_file():
        raise ConfigError(f"{config.adapter} holds no adapter (adapter_config.json). Pick a training run "
                          "folder, its best/ folder or a checkpoint.")
    for spec in config.suites:
        module = suite_module(spec.id)
        if config.api_base and getattr(module, "LOGLIK", False):
            raise ConfigError(f"{spec.id} scores each answer by the model's log-likelihood, which a chat server "
                              f"does not give. Benchmark {spec.id} on a model loaded here (lem bench MODEL --suite "
                              f"{spec.id}), and leave it out of --api-base runs.")
        if config.num_fewshot and not supports_fewshot(module):
            raise ConfigError(f"{spec.id} has no reference answers to show as examples, so it runs without "
                              "few-shot examples: leave it out of a --num-fewshot run, or run it separately.")


def _fingerprint(config: BenchConfig, model: dict[str, Any], adapter: dict[str, Any] | None,
                 suites: dict[str, Suite], max_tokens: dict[str, int], fewshots: dict[str, FewShot]) -> dict[str, Any]:
    """What must be equal for two sessions to write into the same run folder."""
    suite_keys: dict[str, dict[str, Any]] = {}
    for s, suite in suites.items():
        suite_keys[s] = {"sha256": suite.sha256, "item_ids": [i.id for i in suite.items],
                         "instruction": suite_module(s).INSTRUCTION}
        if s in fewshots:  # only when used, so zero-shot runs made before few-shot existed still resume
            suite_keys[s]["fewshot"] = [fewshots[s].k, [c.id for c in fewshots[s].candidates]]
    server_model = (f"{model['server']} {model['name']} {model.get('weights_id') or 'weights not reported'}"
                    if model.get("kind") == "api" else None)
    return {
        "model_sha256": server_model or model.get("sha256") or model.get("name"),
        "adapter_sha256": adapter.get("sha256") if adapter else None,
        "seed": config.seed,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "max_tokens": max_tokens,
        "suites": suite_keys,
    }


def _api_identity(server: dict[str, Any]) -> dict[str, Any]:
    """run.json's `model` for a server: no files to hash, so what the server says of the weights stands in."""
    return {"name": server.get("model") or "", "kind": "api", "server": server.get("server"), "path": None,
            "sha256": None, "reported": server.get("reported"), "weights_id": server.get("weights_id"),
            **({"available": server["available"]} if not server.get("reported") and server.get("available") else {}),
            **({"note": server["note"]} if server.get("note") else {})}


def _prepare(run_dir: Path | None, config: BenchConfig, suites: dict[str, Suite], max_tokens: dict[str, int],
             label: str, fewshots: dict[str, FewShot], server: dict[str, Any] | None) -> tuple[Path, dict[str, Any]]:
    """The run folder and its run.json contents. `run_dir` None: a new folder; an existing run folder is
    resumed (refused if its settings differ)."""
    model = _api_identity(server) if server is not None else model_identity(config.model)
    adapter = adapter_identity(config.adapter) if config.adapter else None
    fingerprint = _fingerprint(config, model, adapter, suites, max_tokens, fewshots)
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
        "sampling": {s: ({"method": "log-likelihood of each answer: nothing sampled"} if _loglik(s) else
                         {"temperature": config.temperature, "top_p": config.top_p, "max_tokens": max_tokens[s],
                          "seed": suite_seed(config.seed, s)}) for s in suites},
        # Replaced by what the model's chat template really produced once it is loaded (see _record_template).
        "prompt_format": "chat template, one user turn, no system message sent",
        "suites": {s: {**suite.provenance(), "instruction": suite_module(s).INSTRUCTION,
                       **({"fewshot": fewshots[s].provenance()} if s in fewshots else {})}
                   for s, suite in suites.items()},
        "backend": ({"kind": "api", "server": model["server"], "model": model["name"],
                     "seeds": "one per request, from the suite's seed and the (item, sample); honoured only by "
                              "servers that take a seed"} if server is not None else {"kind": "mlx"}),
        "libraries": library_versions(),
        "host": host(),
        "judges": {},
        "sessions": [],
        "fingerprint": fingerprint,
    }


def load_generator(config: BenchConfig) -> Generator:
    """MLXGenerator for the model, with the adapter applied when one is given."""

    folders: list[Path] = []
    model, tokenizer = load_mlx_model(
        config.model, report=lambda event: folders.append(Path(event.folder)) if isinstance(event, ModelLoaded) else None)
    if folders and not config.adapter:  # with an adapter MLX runs the layers
        prepare_cpu_kernels(model, folders[-1])
    if config.adapter:
        from mlx_lm.tuner.utils import load_adapters  # lazy: mlx-lm pulls in MLX and transformers (seconds)

        try:
            load_adapters(model, str(Path(config.adapter).expanduser()))
        except (ValueError, KeyError, FileNotFoundError) as err:
            raise ConfigError(f"The adapter in {config.adapter} does not fit {config.model}: "
                              f"{str(err)[:300]}") from None
        model.eval()
    return MLXGenerator(model, tokenizer, batch_size=config.batch_size, name=config.model)


def api_generator(config: BenchConfig, token_store: TokenStore | None = None) -> APIGenerator:
    """The generator for `config.api_base`. Its key, if the keychain holds one, is read here at job start."""
    key = None
    if config.api_key_account:
        try:
            key = (token_store if token_store is not None else KeyringTokenStore()).get(config.api_key_account)
        except SecretStoreError:
            pass  # local servers need no key; one that does says so when asked for its models
    return APIGenerator(config.api_base, config.api_model, api_key=key)


def _server_report(gen: Generator, config: BenchConfig) -> dict[str, Any]:
    ask = getattr(gen, "server_report", None)
    if ask is None:  # a stand-in generator: nothing reported
        return {"server": public_url(config.api_base), "model": config.api_model, "reported": None,
                "available": [], "weights_id": None, "note": "the generator reports nothing of the model"}
    try:
        return dict(ask())
    except APIError as err:
        raise _key_advice(err, config) from None


def _key_advice(err: APIError, config: BenchConfig) -> APIError:
    """A refused key, with where the key goes; any other server error as it is."""
    if "refused the API key" not in str(err):
        return err
    return APIError(f"{err} Save the server's key in the system keychain (account '{config.api_key_account}'; "
                    f"`lem judge-key --account {config.api_key_account}` saves it) and try again.")


def _messages_fn(suite_id: str, fewshot: FewShot | None) -> Callable[[BenchItem], Messages]:
    module = suite_module(suite_id)
    if fewshot is None:
        return module.messages  # type: ignore[no-any-return]
    return lambda item: fewshot.messages(module, item)


def run_benchmark(config: BenchConfig, *, report: Report = no_report, cancel: CancelToken | None = None,
                  generator: Generator | None = None, judge: JudgeBackend | None = None,
                  token_store: TokenStore | None = None) -> BenchResult:
    """Generate, score and summarise. `generator`/`judge` may be passed in (tests, or a model already loaded);
    `token_store` holds the key of an `api_base` server (None: the system keychain)."""
    started = time.monotonic()
    cancel = cancel or CancelToken()
    _validate(config)
    suites = {s.id: load_suite(s.id, s.path or None, n=s.n, seed=config.seed, stratify=s.stratify)
              for s in config.suites}
    # Few-shot examples come from the whole file, also when the run is a subsample of it.
    fewshots = {s.id: choose_fewshot(suite_module(s.id), suites[s.id].items if s.n is None else
                                     load_suite(s.id, s.path or None).items, config.num_fewshot, config.seed)
                for s in config.suites if config.num_fewshot}
    max_tokens = {s: config.max_tokens or suite_module(s).MAX_TOKENS for s in suites}
    server: dict[str, Any] | None = None
    if config.api_base:
        if generator is None:
            generator = api_generator(config, token_store)
        server = _server_report(generator, config)  # before any folder is made: an unreachable server leaves none
    label = _label(config, server)
    run_dir, run = _prepare(Path(config.run_dir).expanduser() if config.run_dir else None, config, suites,
                            max_tokens, label, fewshots, server)
    store.write_json(run_dir / store.RUN_FILE, run)
    messages = {s: _messages_fn(s, fewshots.get(s)) for s in suites}

    todo: dict[str, list[tuple[int, int]]] = {}
    total = resumed = 0
    for s, suite in suites.items():
        done = store.latest_rows(run_dir, s)
        # A log-likelihood suite is deterministic: one "sample" per item.
        samples = 1 if _loglik(s) else config.samples
        pairs = [(i, k) for i, item in enumerate(suite.items) for k in range(samples)]
        todo[s] = [(i, k) for i, k in pairs if (suite.items[i].id, k) not in done]
        total += len(pairs)
        resumed += len(pairs) - len(todo[s])
    report(BenchStarted(run_dir, label, tuple(suites), total, resumed))

    session: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds"),
                               "batch_size": config.batch_size, "generated": 0, "suites": {}}
    run["sessions"].append(session)
    try:
        if any(todo.values()):
            report(BenchProgress("loading", "", 0, 1))
            gen = generator if generator is not None else load_generator(config)
            _record_template(run, gen, suites, messages)
            store.write_json(run_dir / store.RUN_FILE, run)
            for s, pairs in todo.items():
                if pairs:
                    cancel.check()
                    if _loglik(s):
                        _loglik_suite(gen, run_dir, suites[s], pairs, session, report, cancel)
                    else:
                        _generate_suite(gen, run_dir, suites[s], pairs, run["sampling"][s], session, report,
                                        cancel, messages[s])
            del gen  # drop our reference so a local judge model has the memory
        session["outcome"] = "finished"
    except BaseException as err:
        session["outcome"] = _outcome(err)
        if isinstance(err, APIError):
            raise _key_advice(err, config) from None
        raise
    finally:
        session["ended"] = datetime.now(UTC).isoformat(timespec="seconds")
        store.write_json(run_dir / store.RUN_FILE, run)
    generated = int(session["generated"])

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


def _loglik(suite_id: str) -> bool:
    return bool(getattr(suite_module(suite_id), "LOGLIK", False))


def _loglik_suite(gen: Generator, run_dir: Path, suite: Suite, pairs: list[tuple[int, int]],
                  session: dict[str, Any], report: Report, cancel: CancelToken, *, chunk: int = 8) -> None:
    """Score a multiple-choice suite by log-likelihood on the generator's own model (adapter applied), a few
    items per step, one row per item as it is done. Needs a local MLX model: an API server gives no
    log-likelihoods."""
    model, tokenizer = getattr(gen, "model", None), getattr(gen, "tokenizer", None)
    if model is None or tokenizer is None:
        raise ConfigError(f"{suite.id} scores answers by the model's log-likelihoods, which need a model loaded "
                          "here (MLX); a generation server cannot give them.")
    module = suite_module(suite.id)
    path = store.rows_path(run_dir, suite.id)
    record: dict[str, Any] = {"generated": 0, "tokens": 0, "method": "log-likelihood"}
    session["suites"][suite.id] = record
    started = time.perf_counter()
    batch = max(1, gen.batch_size)
    max_positions = getattr(gen, "max_positions", None)
    try:
        for start in range(0, len(pairs), chunk):
            cancel.check()
            items = [suite.items[i] for i, _k in pairs[start:start + chunk]]
            keys = [(item, c) for item in items for c in module.choices(item)]
            requests = [encode_pair(tokenizer, module.context(item), module.continuation(c)) for item, c in keys]
            t0 = time.perf_counter()
            results = loglikelihood(model, requests, batch_size=batch, max_positions=max_positions, cancel=cancel)
            per_item = (time.perf_counter() - t0) / len(items)
            scored: dict[str, dict[str, float]] = {}
            tokens: dict[str, int] = {}
            for (item, c), request, res in zip(keys, requests, results):
                scored.setdefault(item.id, {})[c] = res.logprob
                tokens[item.id] = tokens.get(item.id, 0) + len(request.context) + res.tokens
            for item in items:
                score = module.score_logliks(item, scored[item.id])
                store.append_jsonl(path, {
                    "id": item.id, "sample": 0, "status": "ok", "question": item.question,
                    "reference": item.reference, "stratum": item.stratum, "messages": None,
                    "prompt_text": module.context(item), "prompt_tokens": tokens[item.id],
                    "response": score["mc1_choice"], "tokens": 0, "seconds": round(per_item, 4),
                    "truncated": False, "score": score,
                    "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
                })
                record["generated"] += 1
                record["tokens"] += tokens[item.id]
                session["generated"] = int(session.get("generated", 0)) + 1
                report(BenchRow(suite.id, item.id, 0, 0, per_item, False, score))
                report(BenchProgress("scoring", suite.id, record["generated"], len(pairs)))
    finally:
        record["seconds"] = round(time.perf_counter() - started, 3)


def _outcome(err: BaseException) -> str:
    """How a session ended, for run.json: never an empty "failed: "."""
    if isinstance(err, Cancelled):
        return "cancelled"
    if isinstance(err, KeyboardInterrupt):
        return "interrupted"
    text = str(err).strip()
    return (f"failed: {type(err).__name__}" + (f": {text}" if text else ""))[:300]


def _record_template(run: dict[str, Any], gen: Generator, suites: dict[str, Suite],
                     messages_of: dict[str, Callable[[BenchItem], Messages]]) -> None:
    """Record what the model's chat template adds to our messages (a default system prompt, dates), from
    rendering the first item's messages exactly as the generator renders them."""
    tokenizer = getattr(gen, "tokenizer", None)
    first = next((s for s in suites.values() if s.items and not _loglik(s.id)), None)
    if first is None:  # only log-likelihood suites: plain text prompts (their `instruction` says which)
        run["prompt_format"] = "plain text prompts scored by log-likelihood; no chat template, no system message"
        run["prompt_template"] = None
        return
    messages = messages_of[first.id](first.items[0])
    if tokenizer is None:  # an API server renders the template itself: nothing to look at here
        turns = "one user turn" if len(messages) == 1 else f"{len(messages)} turns"
        run["prompt_format"] = (f"{turns}, no system message sent; the server applies the model's chat "
                                "template, so what it adds is not known here")
        run["prompt_template"] = None
        return
    special = [str(t) for t in getattr(tokenizer, "all_special_tokens", []) or []]
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special += [str(getattr(t, "content", t)) for t in added.values()]
    info = template_system_prompt(lambda m: encode_prompt(tokenizer, m)[0], messages, special)
    info["example_item"] = first.items[0].id
    run["prompt_format"] = describe_prompt_format(info)
    run["prompt_template"] = info


def _generate_suite(gen: Generator, run_dir: Path, suite: Suite, pairs: list[tuple[int, int]],
                    sampling_record: dict[str, Any], session: dict[str, Any], report: Report,
                    cancel: CancelToken, messages: Callable[[BenchItem], Messages]) -> None:
    """Generate `pairs` and append each row as it finishes. The session's counts are kept current per row,
    so a run that is interrupted records what it really wrote. `messages` gives an item's chat turns (its own
    question, after the few-shot examples when there are some)."""
    module = suite_module(suite.id)
    sampling = Sampling(**sampling_record)
    queue = iter(pairs)
    path = store.rows_path(run_dir, suite.id)
    record: dict[str, Any] = {"generated": 0, "tokens": 0, "sampling": asdict(sampling)}
    session["suites"][suite.id] = record
    done = tokens = 0
    started = time.perf_counter()
    if len(suite.items) > 1:
        gen.set_shared_prefix([messages(suite.items[0]), messages(suite.items[1])])

    def feed() -> GenItem | None:
        pair = next(queue, None)
        return None if pair is None else GenItem(pair, messages(suite.items[pair[0]]))

    def on_result(result: GenResult) -> None:
        nonlocal done, tokens
        index, sample = result.key
        item = suite.items[index]
        # A prompt too long for the model's context is recorded unscored, never scored as an empty answer.
        score = module.score(item, result.text) if not module.JUDGED and not result.refused else {}
        store.append_jsonl(path, {
            "id": item.id, "sample": sample, "status": "refused" if result.refused else "ok",
            **({"refused": result.refused} if result.refused else {}), "question": item.question,
            "reference": item.reference, "stratum": item.stratum, "messages": messages(item),
            "prompt_text": result.prompt_text, "prompt_tokens": result.prompt_tokens, "response": result.text, "tokens": result.tokens,
            "seconds": round(result.seconds, 4), "truncated": result.truncated, "score": score,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        })
        done += 1
        tokens += result.tokens
        record["generated"], record["tokens"] = done, tokens
        session["generated"] = int(session.get("generated", 0)) + 1
        report(BenchRow(suite.id, item.id, sample, result.tokens, result.seconds, result.truncated, score))
        report(BenchProgress("generating", suite.id, done, len(pairs)))

    try:
        gen.run(feed, sampling, on_result, report=report, cancel=cancel)
    finally:
        wall = time.perf_counter() - started
        record["seconds"] = round(wall, 3)
        record["tokens_per_second"] = round(tokens / wall, 2) if wall > 0 else None
