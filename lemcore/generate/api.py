"""Generation through any OpenAI-compatible server (llama.cpp, Ollama, vLLM): same `run()` as MLXGenerator.

Requests go one at a time (lemcore creates no threads; servers batch on their side). An API key, when one
is needed, is sent in the Authorization header, never in the URL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from lemcore.errors import ConfigError, LemError, ServerUnreachable
from lemcore.generate.protocol import WAIT, Feed, GenResult, Messages, Sampling
from lemcore.jobs import CancelToken, Report, no_report

WAIT_S = 0.5  # between polls of a feed that answered WAIT


class APIError(LemError):
    """The generation server answered with an error."""


class APIGenerator:
    def __init__(self, url: str, model: str, *, api_key: str | None = None, timeout: float = 120.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"API URL {url!r} is not a web address (e.g. http://localhost:8090/v1).")
        import urllib3  # lazy: only API runs need an HTTP pool

        self.url = url.rstrip("/")
        self.model = model
        self.name = f"{model or 'default'} @ {self.url}"
        # Requests go one at a time whatever this says; callers size their claims by it (Generator protocol).
        self.batch_size = 1
        self._key = api_key
        self._http = urllib3.PoolManager(retries=False)
        self._timeout = urllib3.Timeout(connect=5.0, read=timeout)

    def __repr__(self) -> str:
        return f"APIGenerator({self.url!r}, {self.model!r})"

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
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        started = time.perf_counter()
        try:
            resp = self._http.request("POST", f"{self.url}/chat/completions", body=json.dumps(body).encode(),
                                      headers=headers, timeout=self._timeout)
        except urllib3.exceptions.HTTPError as err:
            raise ServerUnreachable(f"Cannot reach the generation server at {self.url} ({type(err).__name__}). "
                                    "Is it running?") from None
        if resp.status in (401, 403):
            raise APIError(f"The generation server at {self.url} refused the API key (HTTP {resp.status}).")
        if resp.status != 200:
            raise APIError(f"The generation server at {self.url} answered HTTP {resp.status}: "
                           f"{resp.data[:200].decode('utf-8', 'replace')}")
        try:
            payload = json.loads(resp.data)
            choice = payload["choices"][0]
            text = choice["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise APIError(f"The server at {self.url} sent a reply that is not an OpenAI chat completion.") from None
        usage = payload.get("usage") or {}
        return GenResult(key=None, text=text, prompt_tokens=int(usage.get("prompt_tokens", 0)),
                         tokens=int(usage.get("completion_tokens", 0)), seconds=time.perf_counter() - started,
                         truncated=choice.get("finish_reason") == "length")

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
            result = self.complete(item.messages, sampling)
            on_result(GenResult(key=item.key, text=result.text, prompt_tokens=result.prompt_tokens,
                                tokens=result.tokens, seconds=result.seconds, truncated=result.truncated))
            finished += 1
            if on_tick is not None:
                on_tick()
