"""A local stand-in for the Hugging Face hub: the endpoints huggingface_hub 2.x and lemcore.models.downloads call.

- GET  /api/models/{owner}/{name}[/revision/{rev}] repo info: sha + siblings (sizes, blob ids, LFS sha256)
- GET  /api/models/{owner}/{name}/tree/{rev}        the file list snapshot_download reads
- HEAD /{owner}/{name}/resolve/{rev}/{file}         X-Repo-Commit, ETag / X-Linked-Etag / X-Linked-Size; LFS
                                                    files answer 302 to a "CDN" URL, as the real hub does
- GET  /{owner}/{name}/resolve/{rev}/{file}         content (LFS: 302 to /cdn/{sha256}); Range supported
- GET  /cdn/{sha256}                                LFS content with Range (206 + Content-Range)

`throttle` slows content down (seconds per chunk) so a test can cancel mid-file; `drop_after` closes the first
GET of a file after that many bytes (a flaky network). Every request is logged with its Range header and the
bytes sent, so tests can prove a resumed download did not start again from zero.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import pytest

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin")


@dataclass
class Logged:
    method: str
    path: str
    range: str | None
    status: int = 0
    sent: int = 0


@dataclass
class _File:
    data: bytes
    blob_id: str
    sha256: str
    lfs: bool


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


class HubServer:
    """Serve repos ({repo_id: {filename: bytes}}) on 127.0.0.1 until `stop()`; use as a context manager."""

    def __init__(self, repos: dict[str, dict[str, bytes]], *, chunk: int = 16384, throttle: float = 0.0,
                 drop_after: dict[str, int] | None = None) -> None:
        self.repos: dict[str, dict[str, _File]] = {}
        self.commits: dict[str, str] = {}
        for repo, files in repos.items():
            self.add_repo(repo, files)
        self.chunk = chunk
        self.throttle = throttle
        self.drop_after = dict(drop_after or {})  # filename -> bytes before the connection drops (once)
        self.log: list[Logged] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)

    def add_repo(self, repo: str, files: dict[str, bytes]) -> None:
        self.repos[repo] = {
            name: _File(data, _git_blob_id(data), hashlib.sha256(data).hexdigest(),
                        name.endswith(LFS_SUFFIXES))
            for name, data in files.items()
        }
        content = repo.encode() + b"".join(files[n] for n in sorted(files))
        self.commits[repo] = hashlib.sha1(content).hexdigest()

    @classmethod
    def from_folder(cls, repo: str, folder: Path, **kwargs) -> HubServer:
        files = {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
        return cls({repo: files}, **kwargs)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def cdn_url(self) -> str:
        """The same server under another host name: huggingface_hub treats it as a CDN (a foreign origin)."""
        return f"http://localhost:{self._httpd.server_address[1]}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests_for(self, filename: str, method: str = "GET") -> list[Logged]:
        """Content requests that served `filename` (directly or through its /cdn/ address)."""
        sha = {f.sha256 for files in self.repos.values() for n, f in files.items() if n == filename}
        with self._lock:
            return [e for e in self.log if e.method == method and (
                e.path.endswith("/" + filename) and "/resolve/" in e.path and e.status in (200, 206)
                or any(e.path == f"/cdn/{s}" for s in sha))]

    # -- request handling ------------------------------------------------------------------------------
    def _find(self, repo: str, rev: str) -> dict[str, _File] | None:
        files = self.repos.get(repo)
        if files is None or rev not in ("main", self.commits[repo]):
            return None
        return files

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet: the test log is `server.log`
                pass

            def do_HEAD(self) -> None:
                self._serve(head=True)

            def do_GET(self) -> None:
                self._serve(head=False)

            def _send(self, status: int, headers: dict[str, str], body: bytes = b"",
                      head: bool = False) -> None:
                self.entry.status = status
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head and body:
                    self.wfile.write(body)
                    self.entry.sent = len(body)

            def _json(self, obj: object, status: int = 200, headers: dict[str, str] | None = None) -> None:
                self._send(status, {"Content-Type": "application/json", **(headers or {})},
                           json.dumps(obj).encode())

            def _not_found(self, code: str) -> None:
                self._json({"error": code}, 404, {"X-Error-Code": code, "X-Error-Message": code})

            def _serve(self, head: bool) -> None:
                path = self.path.split("?", 1)[0]
                self.entry = Logged(self.command, path, self.headers.get("Range"))
                with server._lock:
                    server.log.append(self.entry)
                try:
                    self._route(path, head)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client went away (cancel): nothing to clean up

            def _route(self, path: str, head: bool) -> None:
                if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
                    files = server._find(m[1], m[2] or "main")
                    if files is None:
                        return self._not_found("RepoNotFound")
                    siblings = [{"rfilename": n, "size": len(f.data), "blobId": f.blob_id,
                                 **({"lfs": {"size": len(f.data), "sha256": f.sha256, "pointerSize": 134}}
                                    if f.lfs else {})} for n, f in files.items()]
                    return self._json({"id": m[1], "modelId": m[1], "sha": server.commits[m[1]],
                                       "private": False, "siblings": siblings})
                if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", path):
                    files = server._find(m[1], m[2])
                    if files is None:
                        return self._not_found("RepoNotFound")
                    return self._json([{"type": "file", "oid": f.blob_id, "size": len(f.data), "path": n,
                                        **({"lfs": {"oid": f.sha256, "size": len(f.data), "pointerSize": 134}}
                                           if f.lfs else {})} for n, f in files.items()])
                if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                    files = server._find(m[1], m[2])
                    if files is None:
                        return self._not_found("RepoNotFound")
                    f = files.get(m[3])
                    if f is None:
                        return self._send(404, {"X-Error-Code": "EntryNotFound",
                                                "X-Repo-Commit": server.commits[m[1]]}, head=head)
                    meta = {"X-Repo-Commit": server.commits[m[1]], "ETag": f'"{f.blob_id}"'}
                    if f.lfs:
                        meta.update({"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(len(f.data)),
                                     "Location": f"{server.cdn_url}/cdn/{f.sha256}"})
                        return self._send(302, meta, head=head)
                    return self._content(m[3], f, meta, head)
                if m := re.fullmatch(r"/cdn/([0-9a-f]{64})", path):
                    for files in server.repos.values():
                        for name, f in files.items():
                            if f.sha256 == m[1]:
                                return self._content(name, f, {"ETag": f'"{f.sha256}"'}, head)
                return self._not_found("NotFound")

            def _content(self, name: str, f: _File, headers: dict[str, str], head: bool) -> None:
                data, start, status = f.data, 0, 200
                if rng := re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or ""):
                    start = int(rng[1])
                    end = min(int(rng[2]) if rng[2] else len(data) - 1, len(data) - 1)
                    if start >= len(data):
                        return self._send(416, {"Content-Range": f"bytes */{len(data)}"}, head=head)
                    headers = {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}
                    data, status = data[start:end + 1], 206
                self.entry.status = status
                self.send_response(status)
                for key, value in {"Accept-Ranges": "bytes", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if head:
                    return
                with server._lock:  # drop the first response long enough to be cut (not a header read)
                    drop = server.drop_after.get(name)
                    if drop is not None and len(data) > drop:
                        del server.drop_after[name]
                    else:
                        drop = None
                for pos in range(0, len(data), server.chunk):
                    if drop is not None and pos >= drop:
                        self.close_connection = True  # a flaky network: the stream just ends early
                        return
                    piece = data[pos:pos + server.chunk]
                    self.wfile.write(piece)
                    self.wfile.flush()
                    self.entry.sent += len(piece)
                    if server.throttle:
                        time.sleep(server.throttle)

        return Handler


# -- fixtures (import them into a test module, or re-export from conftest) ---------------------------------


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache for this test, offline by default (no test may reach the real hub).

    huggingface_hub reads its settings once, at import, so the module constants are patched as well as the
    environment (which subprocesses inherit). No token is read from the developer's home either.
    """
    from huggingface_hub import constants

    home = tmp_path / "hf-home"
    cache = home / "hub"
    for key, value in {"HF_HOME": home, "HF_HUB_CACHE": cache, "HF_TOKEN_PATH": home / "token"}.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def hub_online(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`hf_cache` with downloads allowed: only for tests that pass `endpoint=` of a local HubServer."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return hf_cache
