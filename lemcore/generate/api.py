"""Generation through any OpenAI-compatible server (llama.cpp, Ollama, LM Studio, vLLM): same `run()` as
MLXGenerator.

Requests go one at a time (lemcore creates no threads; servers batch on their side). An API key, when one
is needed, is sent in the Authorization header, never in the URL. In `run()` each item's request gets its own
seed, derived from the sampling seed and the item's key, so several samples of one prompt differ on servers
that honour seeds, and the same item gets the same seed when a run is resumed. `server_report()` says what
the server tells of the model (`GET /models`), for provenance.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from lemcore.errors import ConfigError, LemError, ServerUnreachable
from lemcore.generate.protocol import WAIT, Feed, GenResult, Messages, Sampling
from lemcore.jobs import CancelToken, Report, no_report

WAIT_S = 0.5  # between polls of a feed that answered WAIT


# Fields of a /models entry that change between calls to an unchanged server (llama.cpp and vLLM stamp
# `created` with the time of the request; vLLM's `permission` carries fresh ids), left out of `weights_id`.
_VOLATILE = ("created", "permission", "object")


class APIError(LemError):
    """The generation server answered with an error."""


def public_url(url: str) -> str:
    """A server address without what may be secret in it: user and password, query string, fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def item_seed(seed: int | None, key: Any) -> int | None:
    """The seed one request of `run()` sends: fixed by the sampling seed and the item's key."""
    if seed is None:
        return None
    return int(hashlib.sha256(f"{seed}:{key!r}".encode()).hexdigest()[:8], 16)


class APIGenerator:
    def __init__(self, url: str, model: str, *, api_key: str | None = None, timeout: float = 120.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"API URL {url!r} is not a web address (e.g. http://localhost:8090/v1).")
        import urllib3  # lazy: only API runs need an HTTP pool

        self.url = url.rstrip("/")
        self.shown_url = public_url(self.url)  # for names and messages: no password from the address
        self.model = model
        self.name = f"{model or 'default'} @ {self.shown_url}"
        # Requests go one at a time whatever this says; callers size their claims by it (Generator protocol).
        self.batch_size = 1
        self._key = api_key
        self._http = urllib3.PoolManager(retries=False)
        self._timeout = urllib3.Timeout(connect=5.0, read=timeout)

    def __repr__(self) -> str:
        return f"APIGenerator({self.shown_url!r}, {self.model!r})"

    def complete(self, messages: Messages, sampling: Sampling) -> GenResult:
        import urllib3

        body: dict[str, Any] = {"messages": messages, "max_tokens": sampling.max_tokens,
                                "temperature": sampling.temperature, "stream": False}
        if self.model:
            body["model"] = self.model
        if sampling.top_p < 1:
            body["top_p"] = sampling.top_p
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        headers = self._headers()
        started = time.perf_counter()
        try:
            resp = self._http.request("POST", f"{self.url}/chat/completions", body=json.dumps(body).encode(),
                                      headers=headers, timeout=self._timeout)
        except urllib3.exceptions.HTTPError as err:
            raise ServerUnreachable(f"Cannot reach the generation server at {self.shown_url} ({type(err).__name__}). "
                                    "Is it running?") from None
        if resp.status in (401, 403):
            raise APIError(f"The generation server at {self.shown_url} refused the API key (HTTP {resp.status}).")
        if resp.status != 200:
            raise APIError(f"The generation server at {self.shown_url} answered HTTP {resp.status}: "
                           f"{resp.data[:200].decode('utf-8', 'replace')}")
        try:
            payload = json.loads(resp.data)
            choice = payload["choices"][0]
            text = choice["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise APIError(f"The server at {self.shown_url} sent a reply that is not an OpenAI chat completion.") from None
        usage = payload.get("usage") or {}
        return GenResult(key=None, text=text, prompt_tokens=int(usage.get("prompt_tokens", 0)),
                         tokens=int(usage.get("completion_tokens", 0)), seconds=time.perf_counter() - started,
                         truncated=choice.get("finish_reason") == "length")

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def server_report(self) -> dict[str, Any]:
        """What the server says of the model (its `GET /models` entry), for provenance: `server` (the address
        without secrets), `model`, `reported` (the entry, or None), `available` (every id it lists),
        `weights_id` (sha256 of the entry without the fields that change per call; None when not reported)
        and a `note` when something could not be told. Raises ServerUnreachable if the server is down, and
        APIError if it refuses the key."""
        import urllib3

        out: dict[str, Any] = {"server": self.shown_url, "model": self.model, "reported": None,
                               "available": [], "weights_id": None}
        try:
            resp = self._http.request("GET", f"{self.url}/models", headers=self._headers(), timeout=self._timeout)
        except urllib3.exceptions.HTTPError as err:
            raise ServerUnreachable(f"Cannot reach the generation server at {self.shown_url} "
                                    f"({type(err).__name__}). Is it running?") from None
        if resp.status in (401, 403):
            raise APIError(f"The generation server at {self.shown_url} refused the API key (HTTP "
                           f"{resp.status}).")
        try:
            entries = [e for e in json.loads(resp.data)["data"] if isinstance(e, dict)] if resp.status == 200 else []
        except (ValueError, KeyError, TypeError):
            entries = []
        if resp.status != 200 or not entries:
            out["note"] = f"the server lists no models (GET /models: HTTP {resp.status})"
            return out
        out["available"] = [str(e.get("id")) for e in entries]
        match = [e for e in entries if e.get("id") == self.model] if self.model else entries[:1]
        if not self.model and len(entries) == 1:
            out["model"] = str(entries[0].get("id"))  # the server's only model: what "default" means here
        elif not self.model:
            match = []
            out["note"] = "no model name given and the server lists several: it chooses"
        if not match:
            out.setdefault("note", f"the server does not list '{self.model}'; it may still answer to that "
                                   "name (llama.cpp answers every name with its one model)")
            return out
        out["reported"] = match[0]
        stable = {k: v for k, v in match[0].items() if k not in _VOLATILE}
        out["weights_id"] = hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()
        return out

    def set_shared_prefix(self, sample_messages: list[Messages]) -> int:
        return 0  # the server manages its own prompt cache

    def run(self, feed: Feed, sampling: Sampling, on_result: Callable[[GenResult], None], *,
            report: Report = no_report, cancel: CancelToken | None = None,
            on_tick: Callable[[], None] | None = None) -> int:
        sampling.validate()
        finished = 0
        while True:
            if cancel is not None:
                cancel.check()
            item = feed()
            if item is None:
                return finished
            if item is WAIT:
                if on_tick is not None:
                    on_tick()
                if cancel is not None:
                    cancel.wait(WAIT_S)
                else:
                    time.sleep(WAIT_S)  # never spin on a feed that has nothing yet
                continue
            result = self.complete(item.messages, replace(sampling, seed=item_seed(sampling.seed, item.key)))
            on_result(GenResult(key=item.key, text=result.text, prompt_tokens=result.prompt_tokens,
                                tokens=result.tokens, seconds=result.seconds, truncated=result.truncated))
            finished += 1
            if on_tick is not None:
                on_tick()
