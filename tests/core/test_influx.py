"""lemcore.influx against the REAL test InfluxDB server."""

from __future__ import annotations

import pytest

from lemcore.errors import AuthError, ConfigError, ServerUnreachable
from lemcore.influx import InfluxClient, InfluxTarget, line
from tests.servers import free_port


def client_for(server, token=None) -> InfluxClient:  # type: ignore[no-untyped-def]
    return InfluxClient(InfluxTarget(server.url, server.db), token if token is not None else server.token)


def test_write_and_query_round_trip(influx) -> None:
    client = client_for(influx)
    assert client.ping()
    client.write([line("gold_gen", {"i": 7, "w": "host a,b=c", "d": "Health", "v": "elder"},
                       {"seed_id": 'P07 "quoted"', "gen_time": 1.5, "chars": 120})])
    rows = client.query("SELECT * FROM gold_gen WHERE time > now() - 1h")
    assert len(rows) == 1
    assert rows[0]["i"] == "7" and rows[0]["w"] == "host a,b=c"
    assert rows[0]["seed_id"] == 'P07 "quoted"' and rows[0]["chars"] == 120


def test_wrong_token_is_auth_error_without_the_token(influx) -> None:
    bad = "wrong-secret-value"
    with pytest.raises(AuthError) as info:
        client_for(influx, bad).query("SELECT * FROM gold_gen WHERE time > now() - 1h")
    assert "401" in str(info.value) and bad not in str(info.value) and influx.token not in str(info.value)


def test_unreachable_server_is_clear_and_fast() -> None:
    client = InfluxClient(InfluxTarget(f"http://127.0.0.1:{free_port()}"), "tok", timeout=2)
    with pytest.raises(ServerUnreachable, match="Cannot reach"):
        client.ping()


def test_bad_url_is_config_error() -> None:
    with pytest.raises(ConfigError, match="not a web address"):
        InfluxClient(InfluxTarget("10.0.0.1:8181"), "tok")


def test_line_protocol_cleans_tag_values() -> None:
    text = line("m", {"t": "a\nb\\"}, {"f": "x\ny"})
    assert "\n" not in text and text.startswith("m,t=a\\ b ")
