"""The only module that speaks to InfluxDB.

We use the v1-compatible HTTP API (`POST /write`, `GET /query` with InfluxQL) because it is the one API that
both the lab's InfluxDB 3 Core and Debian's InfluxDB 1.x (our test server) answer the same way. HTTP Basic
auth carries the token as the password (3.x ignores the user name). The token is passed in by the caller,
kept only on this object, and never put in a message, log line or exception.

Queries written here must mean the same on 1.x and 3.x (docs/platform-notes.md, "InfluxDB versions and API"): always bound `time`, never rely on
`SHOW TAG VALUES` without a time range, and never send SQL to `/query`.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from lemcore.errors import AuthError, ConfigError, InfluxError, ServerUnreachable

if TYPE_CHECKING:
    from urllib3 import BaseHTTPResponse

DEFAULT_DB = "training"
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class InfluxTarget:
    """Where the server is; holds no secret."""

    url: str
    db: str = DEFAULT_DB
    user: str = "lem"

    def validate(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"Server URL {self.url!r} is not a web address. Use the form http://host:8181 "
                "(ask the lab for the address)."
            )
        if not self.db:
            raise ConfigError("The InfluxDB database name is empty. The lab's database is 'training'.")


@dataclass(frozen=True)
class RequestCounts:
    """What a client (and its clones) asked of the server: requests (queries + writes + pings) and bytes.
    Sent bytes count the request line's path and query string plus the body; received bytes the body."""

    requests: int = 0
    queries: int = 0
    writes: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0

    def __sub__(self, other: RequestCounts) -> RequestCounts:
        return RequestCounts(self.requests - other.requests, self.queries - other.queries,
                             self.writes - other.writes, self.bytes_sent - other.bytes_sent,
                             self.bytes_received - other.bytes_received)


class _Counters:
    """Request counters shared by a client and its clones (each thread may use its own clone)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = RequestCounts()

    def add(self, path: str, sent: int, received: int) -> None:
        with self._lock:
            c = self._counts
            self._counts = RequestCounts(c.requests + 1, c.queries + (path == "/query"),
                                         c.writes + (path == "/write"), c.bytes_sent + sent,
                                         c.bytes_received + received)

    def snapshot(self) -> RequestCounts:
        with self._lock:
            return self._counts


class InfluxClient:
    """Thin client for `/ping`, `/write` and `/query` (v1 API).

    One client may be used from one thread at a time as far as we rely on it; a thread of its own (the lease
    keeper) takes a `clone()`: same server and credentials, its own connection pool, the same counters.
    """

    def __init__(self, target: InfluxTarget, token: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        target.validate()
        raw = f"{target.user}:{token}".encode()
        self._setup(target, "Basic " + base64.b64encode(raw).decode(), timeout, _Counters())

    def _setup(self, target: InfluxTarget, auth_header: str, timeout: float, counters: _Counters) -> None:
        import urllib3  # lazy: keeps `import lemcore` cheap

        self.target = target
        self._timeout_s = timeout
        self._timeout = urllib3.Timeout(connect=min(timeout, 5.0), read=timeout)
        # No retries here: the caller decides (the outbox retries later; claims must not double-write).
        # maxsize 2: a query and a write may overlap on one client without a pool-full warning.
        self._http = urllib3.PoolManager(retries=False, maxsize=2)
        self._auth_header = auth_header
        self._counters = counters

    def clone(self) -> InfluxClient:
        """Another client for the same server and token, with its own connections (for another thread);
        requests made by either count in `stats()` of both."""
        other = object.__new__(InfluxClient)
        other._setup(self.target, self._auth_header, self._timeout_s, self._counters)
        return other

    def stats(self) -> RequestCounts:
        """Requests and bytes so far, this client and its clones together."""
        return self._counters.snapshot()

    def __repr__(self) -> str:  # never show the token
        return f"InfluxClient({self.target.url!r}, db={self.target.db!r})"

    # -- HTTP ------------------------------------------------------------------------------------------
    def _request(
        self, method: str, path: str, params: dict[str, str], body: bytes | None = None
    ) -> BaseHTTPResponse:
        import urllib3

        url = self.target.url.rstrip("/") + path
        if params:
            url += "?" + urlencode(params)
        headers = {"Authorization": self._auth_header}
        if body is not None:
            headers["Content-Type"] = "text/plain; charset=utf-8"
        sent = len(url) - len(self.target.url.rstrip("/")) + (len(body) if body else 0)
        try:
            resp = self._http.request(method, url, body=body, headers=headers, timeout=self._timeout)
        except urllib3.exceptions.HTTPError as err:
            self._counters.add(path, sent, 0)
            # The error text of urllib3 names the URL (no secret in it: the token is only in a header).
            reason = type(err).__name__
            raise ServerUnreachable(
                f"Cannot reach the InfluxDB server at {self.target.url} ({reason}). Check the address and "
                "your network; work continues and results are kept locally until the server is back."
            ) from None
        self._counters.add(path, sent, len(resp.data or b""))
        return resp

    def _check(self, resp: BaseHTTPResponse, what: str) -> None:
        if resp.status in (200, 204):
            return
        if resp.status in (401, 403):
            raise AuthError(
                f"The InfluxDB server at {self.target.url} rejected the token (HTTP {resp.status}). "
                "Paste the current token in Settings (or run `lem login`)."
            )
        detail = _error_text(resp.data)
        if resp.status >= 500:
            # A server starting up or overloaded: worth retrying, like a refused connection.
            raise ServerUnreachable(
                f"The InfluxDB server at {self.target.url} is not ready (HTTP {resp.status}); "
                "results are kept locally until it is back."
            )
        if resp.status == 404 and "database not found" in detail:
            raise InfluxError(
                f"The database {self.target.db!r} does not exist on {self.target.url}. Ask the lab to create "
                "it, or check the database name in Settings."
            )
        raise InfluxError(f"InfluxDB {what} failed at {self.target.url}: HTTP {resp.status} {detail}".strip())

    def ping(self) -> str:
        """Returns the server version; raises ServerUnreachable. Does not check the token."""
        resp = self._request("GET", "/ping", {})
        if resp.status not in (200, 204):
            raise InfluxError(f"{self.target.url} answered /ping with HTTP {resp.status}: is it InfluxDB?")
        return str(resp.headers.get("X-Influxdb-Version", "unknown"))

    def write(self, lines: Iterable[str]) -> None:
        """Write line-protocol lines (server-assigned timestamps unless a line carries one)."""
        body = "\n".join(lines).encode("utf-8")
        if not body:
            return
        resp = self._request("POST", "/write", {"db": self.target.db}, body)
        self._check(resp, "write")

    def query(self, influxql: str) -> list[dict[str, Any]]:
        """Run one InfluxQL statement; returns rows as dicts (series tags merged into each row)."""
        resp = self._request("GET", "/query", {"db": self.target.db, "q": influxql, "epoch": "ns"})
        self._check(resp, "query")
        try:
            payload = json.loads(resp.data or b"{}")
        except ValueError:
            raise InfluxError(f"InfluxDB at {self.target.url} sent a reply that is not JSON.") from None
        rows: list[dict[str, Any]] = []
        for result in payload.get("results", []):
            if "error" in result:
                if "shutdown" in str(result["error"]):  # a server stopping: transient, like a refused connection
                    raise ServerUnreachable(f"The InfluxDB server at {self.target.url} is shutting down; "
                                            "results are kept locally until it is back.")
                raise InfluxError(f"InfluxDB query failed: {result['error']}.")
            for series in result.get("series", []):
                cols = series.get("columns", [])
                tags = series.get("tags", {})
                for values in series.get("values", []):
                    row = dict(zip(cols, values))
                    row.update(tags)
                    rows.append(row)
        return rows

    def check_access(self) -> None:
        """Ping, then one authenticated, time-bounded read: proves address, token and database."""
        self.ping()
        self.query("SELECT * FROM golden_gen_progress WHERE time > now() - 1m LIMIT 1")

    def close(self) -> None:
        self._http.clear()


def _error_text(data: bytes | None) -> str:
    if not data:
        return ""
    try:
        return str(json.loads(data).get("error", "")).strip()
    except (ValueError, AttributeError):
        return data[:200].decode("utf-8", "replace").strip()


def line(measurement: str, tags: dict[str, Any], fields: dict[str, Any], time_ns: int | None = None) -> str:
    """One line of line protocol, built (and escaped) by influxdb-client's Point."""
    from influxdb_client.client.write.point import Point  # lazy: the package pulls in reactivex

    point = Point(measurement)
    for key, value in tags.items():
        # Point alters tag values ending in a backslash or holding newlines/tabs (docs/platform-notes.md, "InfluxDB client library"): clean them.
        text = str(value).replace("\n", " ").replace("\t", " ").rstrip("\\")
        point = point.tag(key, text)
    for key, value in fields.items():
        if isinstance(value, str):
            value = value.replace("\n", " ")  # 3.x rejects raw newlines in string fields
        point = point.field(key, value)
    if time_ns is not None:
        point = point.time(time_ns)
    return str(point.to_line_protocol())
