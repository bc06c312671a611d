"""LLM-as-judge scoring: rubric prompts, strict parsing, retries, and two backends (local MLX, any OpenAI API).

The lab's judge stored 5/5 whenever a call or its parsing failed, and never retried those items, which
pulled every average toward the middle (docs/lab-formats.md, "Judge failures scored as 5"). Here a judgment
is either parsed scores within 1–10 for every rubric key, or it is `failed` with the reason and the judge's raw
reply; failed ones are retried with back-off and, if they stay failed, are counted as failed and left out of
the means.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from lemcore.benchmarks.events import BenchProgress
from lemcore.benchmarks.provenance import model_identity
from lemcore.errors import ConfigError, LemError, SecretStoreError, ServerUnreachable
from lemcore.generate.api import APIError, APIGenerator, public_url
from lemcore.generate.engine import MLXGenerator
from lemcore.generate.protocol import Generator, GenItem, GenResult, Sampling
from lemcore.jobs import CancelToken, Report, no_report
from lemcore.secrets import KeyringTokenStore, TokenStore

JUDGE_KEY_ENV = "LEM_JUDGE_API_KEY"  # for scripts and CI; otherwise the key lives in the keychain


def judge_key_advice(account: str, problem: str, *, saving: bool = False) -> str:
    """What to do when the keychain cannot give (or keep) the judge's API key. `problem` is the keychain's
    own message; its advice about the lab token does not apply to the judge and is replaced."""
    what = "save" if saving else "read"
    first = problem.split(". ")[0].rstrip(".")
    return (f"Could not {what} the judge API key ('{account}') in the system keychain: {first}. Set {JUDGE_KEY_ENV} "
            "to the key for this run, or unlock (or install) a system keychain and save the key with "
            "`lem judge-key`.")


class JudgeAuthError(LemError):
    """The judge API refused the key: every further call would fail the same way."""


class Unparseable(ValueError):
    """The judge's reply holds no usable judgment (the message says why)."""


@dataclass(frozen=True)
class Dimension:
    key: str
    name: str
    low: str  # what 1 means
    mid: str  # what 5 means
    high: str  # what 10 means


@dataclass(frozen=True)
class Rubric:
    suite: str
    role: str
    dimensions: tuple[Dimension, ...]
    notes: str = ""

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(d.key for d in self.dimensions)

    def text(self) -> str:
        lines = [self.role, "", "Rate the reply on each dimension with a whole number from 1 to 10:"]
        for d in self.dimensions:
            lines.append(f"- {d.name} (\"{d.key}\"): 1 = {d.low}; 5 = {d.mid}; 10 = {d.high}.")
        if self.notes:
            lines += ["", self.notes]
        shape = ", ".join(f'"{k}": <1-10>' for k in self.keys)
        lines += ["", "Answer with a single JSON object and no other text, in this shape:",
                  "{" + shape + ', "reasoning": "<one short sentence>"}']
        return "\n".join(lines)

    def sha256(self) -> str:
        return hashlib.sha256(self.text().encode("utf-8")).hexdigest()


def judge_messages(rubric: Rubric, fields: Sequence[tuple[str, str]], response: str, *,
                   max_chars: int = 6000) -> list[dict[str, str]]:
    """One user turn (some judge templates reject a system role): the rubric, then the labelled inputs."""
    shown = response if len(response) <= max_chars else response[:max_chars] + "\n[… reply cut for judging]"
    parts = [rubric.text(), ""]
    for label, value in (*fields, ("REPLY TO RATE", shown)):
        parts += [f"{label}:", value.strip() or "(empty)", ""]
    return [{"role": "user", "content": "\n".join(parts).rstrip()}]


_FENCE = re.compile(r"```(?:json)?", re.IGNORECASE)


def parse_judgment(text: str, keys: Sequence[str]) -> tuple[dict[str, float], str]:
    """(scores, reasoning) from a judge reply, or Unparseable. Never fills in a missing score."""
    body = _FENCE.sub(" ", text or "")
    decoder = json.JSONDecoder()
    found: dict[str, Any] | None = None
    for m in re.finditer(r"\{", body):
        try:
            obj, _end = decoder.raw_decode(body, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and any(k in obj for k in keys):
            found = obj
            break
    if found is None:
        raise Unparseable("no JSON object with the rubric's keys in the reply")
    missing = [k for k in keys if k not in found]
    if missing:
        raise Unparseable(f"missing key(s): {', '.join(missing)}")
    scores: dict[str, float] = {}
    for k in keys:
        value = found[k]
        if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Unparseable(f"'{k}' is not a number ({value!r})")
        if not 1 <= value <= 10:
            raise Unparseable(f"'{k}' = {value} is outside 1-10")
        scores[k] = float(value)
    reasoning = found.get("reasoning", "")
    return scores, reasoning if isinstance(reasoning, str) else json.dumps(reasoning)


@dataclass(frozen=True)
class JudgeRequest:
    key: Any  # (suite, item id, sample)
    messages: list[dict[str, str]]


@dataclass(frozen=True)
class Judgment:
    key: Any
    status: str  # ok or failed
    scores: dict[str, float] = field(default_factory=dict)  # empty when failed: never a default number
    reasoning: str = ""
    attempts: int = 0
    error: str = ""  # why the last attempt failed
    raw: str = ""  # the judge's last reply, cut to 2,000 characters


class JudgeBackend(Protocol):
    batch_size: int  # requests per call to ask()

    def identity(self) -> dict[str, Any]: ...

    def ask(self, prompts: list[list[dict[str, str]]], *, attempt: int,
            cancel: CancelToken) -> list[str | BaseException]: ...


# -- backends --------------------------------------------------------------------------------------------
def _judge_sampling(attempt: int, max_tokens: int, seed: int) -> Sampling:

    # Greedy first (repeatable); a retry of a bad reply needs a little randomness or it repeats exactly.
    return Sampling(temperature=0.0 if attempt == 1 else 0.5, max_tokens=max_tokens, seed=seed + attempt)


class LocalJudge:
    """An MLX model on this computer: nothing leaves the machine. Requests are generated in batches."""

    def __init__(self, generator: Generator, *, model: str, sha256: str = "", max_tokens: int = 200,
                 seed: int = 0) -> None:
        self.generator = generator
        self.batch_size = max(64, generator.batch_size)
        self._model, self._sha, self._max, self._seed = model, sha256, max_tokens, seed

    def identity(self) -> dict[str, Any]:
        return {"kind": "local", "model": self._model, "sha256": self._sha, "max_tokens": self._max}

    def ask(self, prompts: list[list[dict[str, str]]], *, attempt: int,
            cancel: CancelToken) -> list[str | BaseException]:

        feed = iter([GenItem(i, m) for i, m in enumerate(prompts)])
        out: list[str | BaseException] = [Unparseable("no reply")] * len(prompts)

        def keep(result: GenResult) -> None:
            out[result.key] = result.text

        self.generator.run(lambda: next(feed, None), _judge_sampling(attempt, self._max, self._seed), keep,
                           cancel=cancel)
        return out


class APIJudge:
    """Any OpenAI-compatible server. The key goes in the Authorization header, never in the URL or files."""

    batch_size = 1

    def __init__(self, url: str, model: str, *, api_key: str | None = None, max_tokens: int = 300,
                 timeout: float = 60.0, seed: int = 0, key_account: str = "judge-api-key") -> None:

        self._api = APIGenerator(url, model, api_key=api_key, timeout=timeout)
        # Recorded and shown without a password or query string the address may hold.
        self._url, self._model, self._max, self._seed = public_url(url), model, max_tokens, seed
        self._has_key, self._account = bool(api_key), key_account

    def identity(self) -> dict[str, Any]:
        return {"kind": "api", "url": self._url, "model": self._model, "max_tokens": self._max}

    def ask(self, prompts: list[list[dict[str, str]]], *, attempt: int,
            cancel: CancelToken) -> list[str | BaseException]:

        out: list[str | BaseException] = []
        for messages in prompts:
            cancel.check()
            try:
                out.append(self._api.complete(messages, _judge_sampling(attempt, self._max, self._seed)).text)
            except APIError as err:
                if "refused the API key" in str(err):
                    if not self._has_key:
                        raise JudgeAuthError(
                            f"The judge API at {self._url} needs a key and none is saved (keychain account "
                            f"'{self._account}'). Save it with `lem judge-key`, or set {JUDGE_KEY_ENV} for this "
                            "run, then run the scoring again.") from None
                    raise JudgeAuthError(f"The judge API at {self._url} refused the key. Save the right key "
                                         "with `lem judge-key` and run the scoring again.") from None
                out.append(err)
            except ServerUnreachable as err:
                out.append(err)
        return out


@dataclass(frozen=True)
class JudgeConfig:
    kind: str  # local or api
    model: str = ""  # local: folder / catalog id / hub id; api: the model name the server expects
    url: str = ""  # api only, e.g. http://localhost:8090/v1
    key_account: str = "judge-api-key"  # keychain account holding the API key (none needed for local servers)
    retries: int = 3  # attempts per judgment, the first included
    backoff_s: float = 2.0  # wait before the 2nd attempt; doubles after each failed round
    max_tokens: int = 300
    batch_size: int = 8  # local judge only


def make_judge(config: JudgeConfig, *, store: TokenStore | None = None) -> JudgeBackend:
    """Build the backend. An API key is read from the keychain here, at job start, and kept in memory only."""
    if config.kind == "api":
        if not config.url:
            raise ConfigError("An API judge needs the server address (e.g. http://localhost:8090/v1).")
        if store is None:

            store = KeyringTokenStore()
        try:
            key = store.get(config.key_account) if config.key_account else None
        except SecretStoreError as err:
            raise SecretStoreError(judge_key_advice(config.key_account, str(err))) from None
        return APIJudge(config.url, config.model, api_key=key, max_tokens=config.max_tokens,
                        key_account=config.key_account)
    if config.kind == "local":
        if not config.model:
            raise ConfigError("A local judge needs a model (a folder, catalog id or downloaded hub id).")

        gen = MLXGenerator.load(config.model, batch_size=config.batch_size)
        ident = model_identity(config.model)
        return LocalJudge(gen, model=config.model, sha256=ident.get("sha256", ""), max_tokens=config.max_tokens)
    raise ConfigError(f"Unknown judge kind '{config.kind}': use 'local' or 'api'.")


# -- the retry loop --------------------------------------------------------------------------------------
def judge_requests(backend: JudgeBackend, keys: Sequence[str], requests: Sequence[JudgeRequest], *,
                   retries: int = 3, backoff_s: float = 2.0, on_judgment: Callable[[Judgment], None],
                   suite: str = "", sleep: Callable[[float], Any] | None = None, report: Report = no_report,
                   cancel: CancelToken | None = None) -> list[Judgment]:
    """Judge every request; each ends `ok` or, after `retries` attempts, `failed`. Returns them all."""
    cancel = cancel or CancelToken()
    wait = sleep or cancel.wait
    results: list[Judgment] = []
    total, failed = len(requests), 0
    for start in range(0, total, backend.batch_size):
        pending = list(requests[start:start + backend.batch_size])
        last: dict[Any, tuple[str, str]] = {}
        for attempt in range(1, max(1, retries) + 1):
            cancel.check()
            replies = list(backend.ask([r.messages for r in pending], attempt=attempt, cancel=cancel))
            replies += [Unparseable("the judge gave no reply")] * (len(pending) - len(replies))
            still = []
            for req, reply in zip(pending, replies):
                if isinstance(reply, BaseException):
                    last[req.key] = (f"judge call failed: {reply}", "")
                    still.append(req)
                    continue
                try:
                    scores, reasoning = parse_judgment(reply, keys)
                except Unparseable as err:
                    last[req.key] = (f"unparseable reply: {err}", reply[:2000])
                    still.append(req)
                    continue
                done = Judgment(req.key, "ok", scores, reasoning[:1000], attempt, raw=reply[:2000])
                results.append(done)
                on_judgment(done)
            pending = still
            report(BenchProgress("judging", suite, len(results), total, failed))
            if not pending:
                break
            if attempt < retries:
                wait(backoff_s * 2 ** (attempt - 1))
        for req in pending:
            error, raw = last[req.key]
            bad = Judgment(req.key, "failed", {}, "", max(1, retries), error[:500], raw)
            failed += 1
            results.append(bad)
            on_judgment(bad)
        report(BenchProgress("judging", suite, len(results), total, failed))
    return results
