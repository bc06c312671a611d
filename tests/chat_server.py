"""A local OpenAI-compatible stand-in (llama.cpp server, Ollama, LM Studio and vLLM all speak this API):
`POST /v1/chat/completions` answered by a function of the request body, `GET /v1/models` from a list.

The answer function returns the reply text, or `(status, bytes)` for an error or a raw body. Every request is
logged (path, headers, body) so tests can check what was sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

Answer = Callable[[dict[str, Any]], "str | tuple[int, bytes]"]


class ChatServer:
    def __init__(self, answer: Answer, *, models: list[dict[str, Any]] | None = None,
                 finish_reason: Callable[[dict[str, Any], str], str] | None = None) -> None:
        self.answer = answer
        self.models = models  # None: /v1/models answers 404, as some servers do
        self.models_status = 200  # e.g. 401: a server that wants a key before it lists anything
        self.finish_reason = finish_reason or (lambda body, text: "stop")
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="chat-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def chat_bodies(self) -> list[dict[str, Any]]:
        return [body for path, _h, body in self.requests if path.endswith("/chat/completions")]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                with server._lock:
                    server.requests.append((self.path, dict(self.headers), {}))
                if self.path.rstrip("/").endswith("/models") and server.models_status != 200:
                    self._send(server.models_status, b'{"error": "refused"}')
                elif self.path.rstrip("/").endswith("/models") and server.models is not None:
                    self._send(200, json.dumps({"object": "list", "data": server.models}).encode())
                else:
                    self._send(404, b'{"error": "not found"}')

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append((self.path, dict(self.headers), body))
                if not self.path.endswith("/chat/completions"):
                    self._send(404, b'{"error": "not found"}')
                    return
                reply = server.answer(body)
                if isinstance(reply, tuple):
                    self._send(*reply)
                    return
                payload = {"choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                        "finish_reason": server.finish_reason(body, reply)}],
                           "usage": {"prompt_tokens": sum(len(m["content"].split()) for m in body["messages"]),
                                     "completion_tokens": len(reply.split())}}
                self._send(200, json.dumps(payload).encode())

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def reply_to_rate(body: dict[str, Any]) -> str:
    """The reply a judge request asks to rate (the text after our judge prompt's "REPLY TO RATE:" label)."""
    content = body["messages"][-1]["content"]
    return content.rsplit("REPLY TO RATE:\n", 1)[-1].strip()
