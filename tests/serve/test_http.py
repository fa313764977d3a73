"""The consumer's HTTP endpoint (docs/observability.md): the server, /healthz, /readyz with its
reasons, /metrics parsed with prometheus_client's own parser, /api/status, the flag, the config
and the container health check run against a real consumer process.

The server's input handling is tested with raw bytes on a socket; the endpoints on a consumer
whose real loop runs (``Consumer.run``), on fakeredis and on a real Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import ROOT, START_MS
from support.serving import (
    FAST,
    SECTIONS,
    T0,
    Sink,
    desk_events,
    free_port,
    metrics_of,
    ok,
    order,
    read_answer,
    sample,
    serving,
    until,
)

from navstream import App
from navstream.app import ManualClock
from navstream.cli import main
from navstream.config import ConfigError, HttpSettings, load_settings
from navstream.loop.consumer import Consumer, StartupError
from navstream.plugin.manager import build_plugin_manager
from navstream.plugins.nav.report import Latest, NavReport, Scope, stale_data
from navstream.plugins.nav.state import decode_snapshot
from navstream.plugins.nav.valuation import Snapshot, as_read
from navstream.serve import routes as endpoints_module
from navstream.serve.http import MAX_HEAD, HttpServer, HttpStartError, Request, Response, local_url
from navstream.serve.metrics import Metrics
from navstream.serve.probes import LoopState, liveness, readiness
from navstream.serve.status import DeskView

HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
DOCKERFILE = ROOT / "Dockerfile"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


# --- the server, on raw sockets ---------------------------------------------------------------


async def boom(request: Request) -> Response:
    raise RuntimeError("broken handler")


async def slow(request: Request) -> Response:
    await asyncio.sleep(30)
    return Response.text(200, "late")


@contextlib.asynccontextmanager
async def server(**kwargs: Any) -> AsyncIterator[HttpServer]:
    srv = HttpServer({"/": ok, "/healthz": ok, "/boom": boom, "/slow": slow}, port=0, **kwargs)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def raw(srv: HttpServer, data: bytes, *, close_write: bool = False) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` on a new connection and read one answer. An error answer closes the
    connection (checked here); a success keeps it open for the next request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.bound_port)
    try:
        writer.write(data)
        await writer.drain()
        if close_write:
            writer.write_eof()
        status, headers, body = await asyncio.wait_for(
            read_answer(reader, data.split(b" ", 1)[0].decode("latin-1")), 10
        )
        if status >= 400:
            assert headers["connection"] == "close"
            assert await asyncio.wait_for(reader.read(), 10) == b"", "an error answer closes the connection"
        return status, headers, body
    finally:
        writer.close()


async def test_get_and_head() -> None:
    async with server() as srv:
        status, headers, body = await raw(srv, b"GET /healthz?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert (status, body) == (200, b"hello GET /healthz\n")
        assert headers["content-length"] == str(len(body))
        assert headers["connection"] == "close" and headers["cache-control"] == "no-store"
        assert headers["x-content-type-options"] == "nosniff"
        status, headers, body = await raw(srv, b"HEAD / HTTP/1.0\r\n\r\n")
        assert (status, body) == (200, b"")
        assert headers["content-length"] == str(len(b"hello HEAD /\n"))


BAD_REQUESTS = [
    (b"POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 405, b"method POST is not allowed"),
    (b"DELETE / HTTP/1.1\r\nHost: a\r\n\r\n", 405, b"read-only"),
    (b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n", 404, b"not found: /nope; endpoints: / /boom /healthz /slow"),
    (b"GET /healthz/ HTTP/1.1\r\nHost: a\r\n\r\n", 404, b"not found"),
    (b"GET /../../../etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n", 404, b"not found"),
    (b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n", 404, b"not found"),
    (b"GET //etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n", 404, b"not found"),
    (b"GET http://example.com/healthz HTTP/1.1\r\nHost: a\r\n\r\n", 400, b"expected a path starting with /"),
    (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400, b"bad request target"),
    (b"HELLO\r\n\r\n", 400, b"bad request line"),
    (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, b"bad request line"),
    (b"GET / HTTP/2.0\r\n\r\n", 505, b"not supported"),
    (b"GET / HTTP/1.1\r\n\r\n", 400, b"Host"),  # HTTP/1.1 requires it (RFC 9112)
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, b"multiple Host"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n", 400, b"bad header line"),
    (b"GET / HTTP/1.1\r\n folded: header\r\nHost: a\r\n\r\n", 400, b"bad header line"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", 400, b"no body"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, b"no body"),
    (b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n", 400, b"must be ASCII"),
    (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431, b"more than 100 headers"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * MAX_HEAD + b"\r\n\r\n", 431, b"larger than 8192 bytes"),
]


@pytest.mark.parametrize(
    ("request_bytes", "status", "message"), BAD_REQUESTS, ids=[str(i) for i in range(len(BAD_REQUESTS))]
)
async def test_bad_requests_get_a_clear_answer(request_bytes: bytes, status: int, message: bytes) -> None:
    async with server() as srv:
        got, headers, body = await raw(srv, request_bytes)
        assert got == status, body
        assert message in body, body
        assert b"root:" not in body
        if status == 405:
            assert headers["allow"] == "GET, HEAD"
        # The server is unaffected: the next request is answered.
        assert (await raw(srv, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"))[0] == 200


async def test_error_echo_cannot_forge_lines() -> None:
    async with server() as srv:
        _, _, body = await raw(srv, b"GET /a\x1b[31mred" + b"x" * 200 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        assert b"\x1b" not in body and body.count(b"\n") == 1 and b"..." in body


async def test_timeouts_and_failing_handlers() -> None:
    async with server(request_timeout_s=0.2, handler_timeout_s=0.2) as srv:
        started = time.monotonic()
        status, _, body = await raw(srv, b"GET / HTTP/1.1\r\nHost: a\r\n")  # never finishes its head
        assert status == 408 and b"not received within 0.2s" in body
        assert time.monotonic() - started < 5
        status, _, body = await raw(srv, b"GET /boom HTTP/1.1\r\nHost: a\r\n\r\n")
        assert status == 500 and b"internal error answering /boom" in body and b"broken handler" not in body
        status, _, body = await raw(srv, b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        assert status == 503 and b"took longer than 0.2s" in body
        # A client that leaves halfway gets nothing and costs nothing.
        assert await raw(srv, b"GET / HT", close_write=True) == (0, {}, b"")
        assert (await raw(srv, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"))[0] == 200


async def test_connection_cap_makes_room_and_stop_ends_everything() -> None:
    """At the cap, the connection that has waited longest for its request is closed to make
    room: idle clients never lock a probe out. Only connections inside a handler are never
    closed for room; when every slot is one, a new connection gets 503."""
    async with server(max_connections=2, request_timeout_s=30, handler_timeout_s=30) as srv:
        idle = [await asyncio.open_connection("127.0.0.1", srv.bound_port) for _ in range(2)]
        await until(lambda: srv.open_connections == 2, what="two idle connections")
        status, _, body = await raw(srv, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (status, body) == (200, b"hello GET /\n")
        assert await asyncio.wait_for(idle[0][0].read(), 5) == b""  # the oldest idle one made room
        assert srv.stats.evicted >= 1
        for _, writer in idle:
            writer.close()

        busy = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.bound_port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
            busy.append((reader, writer))
        await until(lambda: srv.open_connections == 2 and srv.stats.requests >= 3, what="two handlers")
        status, _, body = await raw(srv, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert status == 503 and b"busy" in body
        started = time.monotonic()
        await srv.stop()  # ends the handlers in flight rather than waiting 30 s for them
        assert time.monotonic() - started < 5
        for reader, writer in busy:
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()


async def test_port_in_use_is_a_clear_startup_error() -> None:
    async with server() as first:
        second = HttpServer({"/": ok}, port=first.bound_port)
        with pytest.raises(
            HttpStartError,
            match=rf"cannot serve HTTP on 127.0.0.1:{first.bound_port}: the port "
            "is already in use.*--http-port",
        ):
            await second.start()


def test_local_url() -> None:
    assert local_url("0.0.0.0", 8080, "/healthz") == "http://127.0.0.1:8080/healthz"
    assert local_url("::", 8080) == "http://[::1]:8080/"
    assert local_url("10.1.2.3", 80, "/x") == "http://10.1.2.3:80/x"


# --- the probe rules --------------------------------------------------------------------------


def nav(name: str = "total", status: str = "ok", computed_at: int = START_MS, reasons: Sequence[str] = ()) -> Scope:
    snap = Snapshot(
        scope=name,
        nav=Decimal(100),
        quote="USD",
        status=status,
        as_of=START_MS,  # type: ignore[arg-type]
        computed_at=computed_at,
        reasons=list(reasons),
    )
    return Scope(name, snap, status)


RUNNING = LoopState(phase="running", idle_s=0.1, stall_limit_s=10)
GROUPS: dict[str, dict[str, Any] | None] = {"p:events": {"name": "g"}}


def ready(
    state: LoopState = RUNNING, view: DeskView | None = None, health: Mapping[str, str] | None = None, **options: Any
) -> list[str]:
    view = view or DeskView(read_ms=START_MS, groups=dict(GROUPS))
    return readiness(state, view, streams=["p:events"], group="g", health=health or {"health": "ok"}, **options)


def test_liveness_rules() -> None:
    assert liveness(RUNNING) == (True, "running")
    assert liveness(LoopState("starting", idle_s=500, stall_limit_s=10)) == (True, "starting")
    assert liveness(LoopState("running", idle_s=10.5, stall_limit_s=10)) == (
        False,
        "loop stalled: no progress for 10s (limit 10s, the heartbeat TTL)",
    )
    assert liveness(LoopState("stopping", 0, 10))[0] is False
    # Reconnecting counts as progress: a Redis outage does not make the process unhealthy.
    assert liveness(LoopState("running", 0.5, 10, reconnecting_s=300)) == (True, "running")


def test_readiness_rules() -> None:
    assert ready() == []
    assert ready(LoopState("starting", 0, 10)) == [
        "starting: waiting for Redis, the consumer groups and the plugins' startup"
    ]
    assert ready(LoopState("stopping", 0, 10)) == ["stopping: the consumer is shutting down"]
    down = DeskView(read_ms=START_MS, redis_error="ConnectionError: refused")
    assert ready(view=down) == ["redis unreachable: ConnectionError: refused"]
    assert ready(LoopState("running", 0, 10, reconnecting_s=12.4)) == [
        "redis connection lost 12s ago; the loop is reconnecting"
    ]
    assert ready(view=DeskView(read_ms=START_MS, groups={"p:events": None})) == [
        "consumer group 'g' is missing on p:events (the loop recreates it)"
    ]
    # A plugin's readiness reasons (navstream_readiness), at most five of each plugin.
    given = [("nav", ["NAV total is stale: price BTC/USDT is 200s old"]), ("acme", ["acme is warming up"])]
    assert ready(plugin_reasons=given) == ["NAV total is stale: price BTC/USDT is 200s old", "acme is warming up"]
    reasons = ready(plugin_reasons=[("nav", [f"s{i} is stale" for i in range(8)])])
    assert len(reasons) == 6 and reasons[-1] == "... and 3 more like these"
    health = {
        "sink.status": "degraded",
        "sink.reason": "Firestore unreachable",
        "risk.status": "ok",
        "risk.approved": "3",
        "health": "degraded",
    }
    assert ready(health=health) == ["plugin sink is degraded: Firestore unreachable"]
    # Redis refusing this process's writes (OOM, READONLY, MISCONF) makes it not ready.
    refusing = LoopState(
        "running",
        0.1,
        10,
        writes_refused_since_ms=START_MS - 12_000,
        writes_refused_reason="OOM command not allowed when used memory > 'maxmemory'.",
    )
    assert ready(refusing) == [
        "Redis refuses writes since 2026-09-21T14:13:08Z (12s): OOM command not allowed when used memory > "
        "'maxmemory'.; nothing is acknowledged until it takes them again"
    ]
    assert ready(LoopState("running", 0.1, 10, writes_refused_since_ms=0)) == []


def test_the_nav_plugins_stale_data_rule() -> None:
    """nav's readiness reasons (given only with ``[http] ready_on_stale_data = false``)."""
    latest = Latest(
        START_MS,
        scopes=[
            nav("total", "stale", reasons=["price BTC/USDT is 200s old"]),
            nav("exchange", "ok", computed_at=START_MS - 30_000),
            nav("venue", "failed"),  # not a readiness matter: the page and metrics show it
        ],
        unreadable=["account:x/y: ValueError: bad"],
    )
    assert stale_data(latest, 10_000) == [
        "NAV total is stale: price BTC/USDT is 200s old",
        "NAV exchange was last evaluated 30s ago (limit 10s): no consumer is ticking the nav plugin",
        "NAV account:x/y: ValueError: bad is unreadable",
    ]
    assert stale_data(Latest(START_MS, scopes=[nav("total")]), 10_000) == []


# --- the endpoints of a running consumer ------------------------------------------------------


async def test_a_running_consumer_serves_probes_metrics_and_status(
    make_app: Any, tmp_path: Path, no_cache: None
) -> None:
    sink = Sink()
    sections = {**SECTIONS, "risk": {**SECTIONS["risk"], "audit_dir": str(tmp_path)}}
    app = make_app(builtins=True, plugins=[("sink", sink)], extra=sections, consumer=FAST)
    async with serving(app) as (consumer, client):
        for fields in desk_events():
            await app.redis.xadd(app.keys.events, fields)
        await app.redis.xadd(app.keys.events, {"type": "mystery", "ts": str(T0)})  # dead-lettered: `other`
        await until(lambda: app.stats.processed >= 5 and app.stats.dead_lettered == 1, what="the events")
        # Orders once the NAV they rest on is there (orders are judged on what Redis holds).
        for fields in (order("o-small", "0.1"), order("o-huge", "10")):
            await app.redis.xadd(app.keys.orders, fields)
        await until(lambda: app.stats.processed + app.stats.dead_lettered >= 8, what="the entries")

        health = await client.get("/healthz")
        assert (health.status_code, health.json()) == (200, {"alive": True, "status": "running"})
        await until(lambda: _ready(client), what="readiness")
        readyz = await client.get("/readyz")
        assert (readyz.status_code, readyz.json()) == (200, {"ready": True})
        assert readyz.headers["content-type"] == "application/json"

        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        await until(lambda: app.redis.hlen(app.keys.state("risk:trading")), what="the desk's trading record")
        await until(
            lambda: app.stats.lag.get(app.keys.events) == 0 == app.stats.pending.get(app.keys.events),
            what="a tick after the events were read",
        )
        response = await client.get("/metrics")
        m = metrics_of(response.text)
        assert sample(m, "navstream_events_processed_total", type="balance") == 2
        assert sample(m, "navstream_events_processed_total", type="price") == 1
        assert sample(m, "navstream_events_processed_total", type="order") == 2
        assert sample(m, "navstream_events_failed_total", type="other") == 1
        assert sample(m, "navstream_dead_lettered_total") == 1
        assert sample(m, "navstream_batch_duration_seconds_count") >= 1
        assert sample(m, "navstream_batch_duration_seconds_bucket", le="+Inf") == sample(
            m, "navstream_batch_duration_seconds_count"
        )
        assert sample(m, "navstream_stream_pending", stream=app.keys.events) == 0
        assert sample(m, "navstream_stream_lag", stream=app.keys.events) == 0
        assert sample(m, "navstream_dlq_length") == 1
        account = "account:binance/main"
        assert sample(m, "navstream_nav_value", scope=account, quote="USD") == 150_000
        assert sample(m, "navstream_nav_value", scope="total", quote="USD") == 150_000
        assert sample(m, "navstream_nav_age_seconds", scope=account) == 1.0
        assert sample(m, "navstream_nav_evaluation_age_seconds", scope=account) == 0.0
        assert sample(m, "navstream_nav_status", scope=account, status="ok") == 1
        assert sample(m, "navstream_nav_status", scope=account, status="stale") == 0
        assert sample(m, "navstream_risk_decisions_total", decision="approve") == 1
        assert sample(m, "navstream_risk_decisions_total", decision="veto") == 1
        assert sample(m, "navstream_risk_decision_reasons_total", reason="order_notional") == 1
        assert sample(m, "navstream_risk_decision_reasons_total", reason="order_pct_nav") == 1
        source = {"venue": "binance", "source": "binance-futures", "account": "main"}
        assert sample(m, "navstream_source_up", **source) == 1
        assert sample(m, "navstream_source_report_age_seconds", **source) == 1.0
        assert sample(m, "navstream_plugin_healthy", plugin="sink") == 1
        assert sample(m, "navstream_plugin_healthy", plugin="risk") == 1
        # Counts are counters, not numbers in a gauge; the risk gate's decisions have their own.
        assert ("navstream_plugin_health_value", (("key", "approved"), ("plugin", "risk"))) not in m
        assert sample(m, "navstream_plugin_counter_total", plugin="risk", key="audit_missing") == 0
        assert ("navstream_risk_decisions_total", (("decision", "repeated"),)) not in m
        assert sample(m, "navstream_risk_repeated_answers_total") == 0
        types = {f.name: f.type for f in text_string_to_metric_families(response.text)}
        assert types["navstream_risk_decisions"] == types["navstream_plugin_counter"] == "counter"
        assert types["navstream_events_processed"] == types["navstream_dead_lettered"] == "counter"
        assert types["navstream_batch_duration_seconds"] == "histogram"
        assert not [name for name, _ in m if name.endswith("_created")]
        assert sample(m, "navstream_http_requests_total") >= 1
        assert sample(m, "navstream_plugin_health_value", plugin="sink", key="queued") == 0
        assert ("navstream_plugin_health_value", (("key", "holder"), ("plugin", "sink"))) not in m
        assert sample(m, "navstream_redis_up") == 1 and sample(m, "navstream_ready") == 1
        assert sample(m, "navstream_consumer_info", consumer=app.consumer_name, group="g", version="0.1.0") == 1
        assert sample(m, "navstream_trading_state", scope="desk", state="active") == 1
        assert any(name == "process_cpu_seconds_total" for name, _ in m)
        head = await client.head("/metrics")
        assert head.status_code == 200 and head.content == b""

        status = (await client.get("/api/status")).json()
        assert status["ready"] is True and status["reasons"] == []
        assert status["consumer"]["name"] == app.consumer_name and status["consumer"]["phase"] == "running"
        rows = {row["id"]: row for row in status["nav"]}
        assert [row["id"] for row in status["nav"]] == ["total", "exchange", "venue:binance", account]
        assert rows[account]["nav"] == "150000" and rows[account]["status"] == "ok"
        assert status["history"]["total"][-1][1:] == ["150000", "ok"]
        assert status["risk"]["loaded"] is True
        assert status["risk"]["decisions"]["decisions"] == {"approve": 1, "veto": 1, "repeated": 0}
        assert status["sources"][0]["up"] is True
        assert any(a["code"] == "dead_lettered" for a in status["alerts"])
        assert app.consumer_name in {c["name"] for c in status["consumers"]}
        assert status["streams"][app.keys.events]["pending"] == 0
        assert status["plugins"]["sink"]["status"] == "ok"

        page = await client.get("/")
        assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
        assert "function drawChart" in page.text and "api/status" in page.text
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'sha256-" in csp and "connect-src 'self'" in csp


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def test_readiness_reasons_stale_nav_and_degraded_plugin(make_app: Any, no_cache: None) -> None:
    """With ``[http] ready_on_stale_data = false``: stale data is a readiness reason (the old rule)."""
    sink = Sink()
    app = make_app(plugins=[("nav", NavReport()), ("sink", sink)], consumer=FAST)
    app.settings = msgspec.structs.replace(
        app.settings, http=msgspec.structs.replace(app.settings.http, ready_on_stale_data=False)
    )
    latest = app.keys.state("nav", "latest")

    def snapshot(scope: str, status: str, computed_at: int, **extra: Any) -> str:
        data = {
            "scope": scope,
            "nav": "12.5",
            "quote": "USD",
            "status": status,
            "as_of": T0,
            "computed_at": computed_at,
            **extra,
        }
        return f"{computed_at} {json.dumps(data)}"

    limit_s = app.settings.consumer.heartbeat_ttl_ms // 1000  # max(10 s, 5 ticks, 4 hook timeouts)
    fresh = START_MS + 60_000  # fresh_until: its inputs are within their age limit until then
    async with serving(app) as (consumer, client):
        await app.redis.hset(
            latest,
            mapping={
                "account:v/a": snapshot(
                    "account",
                    "stale",
                    START_MS,
                    venue="v",
                    account="a",
                    reasons=["balance v/a/USDT is 200s old (limit 120s)"],
                ),
                "total": snapshot("total", "ok", START_MS - 60_000, fresh_until=fresh),
            },
        )
        sink.degraded = "Firestore unreachable: 3 writes queued"
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json() == {
            "ready": False,
            "reasons": [
                f"NAV total was last evaluated 60s ago (limit {limit_s}s): no consumer is ticking the nav plugin",
                "NAV v/a is stale: balance v/a/USDT is 200s old (limit 120s)",
                "plugin sink is degraded: Firestore unreachable: 3 writes queued",
            ],
        }
        # Alive all the same: a stale desk is not a reason to restart the process.
        assert (await client.get("/healthz")).status_code == 200

        m = metrics_of((await client.get("/metrics")).text)
        assert sample(m, "navstream_ready") == 0
        assert sample(m, "navstream_plugin_healthy", plugin="sink") == 0
        assert sample(m, "navstream_plugin_health_value", plugin="sink", key="queued") == 7
        assert sample(m, "navstream_nav_status", scope="account:v/a", status="stale") == 1
        assert sample(m, "navstream_nav_evaluation_age_seconds", scope="total") == 60
        assert sample(m, "navstream_nav_value", scope="total", quote="USD") == 12.5
        doc = (await client.get("/api/status")).json()
        assert doc["ready"] is False and len(doc["reasons"]) == 3

        # Each cause fixed: ready again, with nothing changed by the requests themselves.
        sink.degraded = ""
        await app.redis.hset(
            latest,
            mapping={
                "account:v/a": snapshot("account", "ok", START_MS, venue="v", account="a", fresh_until=fresh),
                "total": snapshot("total", "ok", START_MS, fresh_until=fresh),
            },
        )
        response = await client.get("/readyz")
        assert (response.status_code, response.json()) == (200, {"ready": True})
        # An unreadable member is a reason too, not an error of the endpoint.
        await app.redis.hset(latest, "total", "garbage")
        response = await client.get("/readyz")
        assert response.status_code == 503 and response.json()["reasons"][0].startswith("NAV total: ")


async def test_stale_data_leaves_the_consumer_ready_by_default(make_app: Any, no_cache: None) -> None:
    """Readiness is about this process: a stale or unevaluated NAV leaves /readyz 200 (every
    replica would otherwise turn not-ready at once and stall a rollout); the metrics, the status
    page and the alerts say it is stale."""
    app = make_app(plugins=[("nav", NavReport())], consumer=FAST)
    assert app.settings.http.ready_on_stale_data is True
    latest = app.keys.state("nav", "latest")
    data = {
        "scope": "total",
        "nav": "12.5",
        "quote": "USD",
        "status": "stale",
        "as_of": T0,
        "computed_at": START_MS - 60_000,
        "reasons": ["price BTC/USDT is 200s old (limit 120s)"],
    }
    async with serving(app) as (_, client):
        await app.redis.hset(
            latest, mapping={"total": f"{START_MS - 60_000} {json.dumps(data)}", "account:x/y": "garbage"}
        )
        response = await client.get("/readyz")
        assert (response.status_code, response.json()) == (200, {"ready": True})
        m = metrics_of((await client.get("/metrics")).text)
        assert sample(m, "navstream_ready") == 1
        assert sample(m, "navstream_nav_status", scope="total", status="stale") == 1
        assert sample(m, "navstream_nav_evaluation_age_seconds", scope="total") == 60
        doc = (await client.get("/api/status")).json()
        assert doc["ready"] is True and doc["nav"][0]["status"] == "stale"


async def test_readyz_is_503_while_redis_refuses_writes(make_app: Any, no_cache: None) -> None:
    """``app.stats.writes_refused_since`` (the first refused write of the episode, epoch ms) set:
    not ready, saying since when; cleared: the reason is gone."""
    app = make_app(consumer=FAST)
    endpoints = endpoints_module.Endpoints(Consumer(app))
    get = Request("GET", "/readyz", "", {})
    app.stats.writes_refused_since = START_MS - 12_000  # type: ignore[attr-defined,unused-ignore]
    response = await endpoints.readyz(get)
    reasons = json.loads(response.body)["reasons"]
    assert response.status == 503
    assert any(r.startswith("Redis refuses writes since 2026-09-21T14:13:08Z (12s)") for r in reasons), reasons
    app.stats.writes_refused_since = None  # type: ignore[attr-defined,unused-ignore]
    reasons = json.loads((await endpoints.readyz(get)).body)["reasons"]
    assert not any("refuses writes" in r for r in reasons)
    endpoints.close()


async def test_events_failed_by_type(make_app: Any) -> None:
    sink = Sink()
    sink.fail_balances = True
    app = make_app(plugins=[("sink", sink)], consumer=FAST)
    async with serving(app) as (consumer, client):
        await app.redis.xadd(app.keys.events, desk_events()[0])
        await app.redis.xadd(app.keys.events, desk_events()[2])
        await until(lambda: app.stats.failed >= 1 and app.stats.processed >= 1, what="a failed balance")
        m = metrics_of((await client.get("/metrics")).text)
        assert sample(m, "navstream_events_failed_total", type="balance") >= 1
        assert ("navstream_events_failed_total", (("type", "price"),)) not in m
        assert sample(m, "navstream_plugin_errors_total") >= 1


async def test_redis_unreachable_at_startup(tmp_path: Path) -> None:
    """The endpoint starts before setup: alive while it waits for Redis, not ready, saying why."""
    port = free_port()
    settings = load_settings(
        env={},
        overrides={
            "redis": {"url": "redis://127.0.0.1:1/0", "prefix": "nstest-down"},
            "http": {"port": port},
            "consumer": {"reconnect_max_ms": 200},
        },
    )
    app = App.create(
        settings,
        plugins=build_plugin_manager(load_entrypoints=False, env={}, extra=[("nav", NavReport())]),
        clock=ManualClock(START_MS),
    )
    consumer = Consumer(app)
    task = asyncio.create_task(consumer.run())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10) as client:
            await until(lambda: consumer.http is not None, what="the endpoint")
            health = await client.get("/healthz")
            assert (health.status_code, health.json()) == (200, {"alive": True, "status": "starting"})
            readyz = await client.get("/readyz")
            assert readyz.status_code == 503
            reasons = readyz.json()["reasons"]
            assert reasons[0].startswith("starting:") and reasons[1].startswith("redis unreachable: ")
            m = metrics_of((await client.get("/metrics")).text)
            assert sample(m, "navstream_redis_up") == 0 and sample(m, "navstream_ready") == 0
            doc = (await client.get("/api/status")).json()
            assert doc["redis_error"] and doc["nav"] == [] and doc["consumer"]["phase"] == "starting"
    finally:
        consumer.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 20)
        await app.aclose()
    assert consumer.http is None


async def test_port_in_use_stops_the_consumer(make_app: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = make_app()
        app.settings = msgspec.structs.replace(app.settings, http=HttpSettings(port=port))
        with pytest.raises(StartupError, match=f"127.0.0.1:{port}: the port is already in use"):
            await Consumer(app).run()
        assert await app.redis.exists(app.keys.events) == 0  # it stopped before touching Redis


def test_port_in_use_is_exit_1_naming_the_port(capsys: pytest.CaptureFixture[str]) -> None:
    """Before it ever contacts Redis (unreachable here): exit 1, the port named."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["run", "--redis-url", "redis://127.0.0.1:1/0", "--http-port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"navstream: error: cannot serve HTTP on 127.0.0.1:{port}: the port is already in use" in err


def test_two_apps_in_one_process_have_their_own_registries(make_app: Any) -> None:
    first, second = Metrics(make_app()), Metrics(make_app())
    assert first.registry is not second.registry
    first.batch_duration.observe(0.5)
    assert first.registry.get_sample_value("navstream_batch_duration_seconds_count") == 1
    assert second.registry.get_sample_value("navstream_batch_duration_seconds_count") == 0
    assert prometheus_client.REGISTRY.get_sample_value("navstream_batch_duration_seconds_count") is None


# --- configuration and the command line -------------------------------------------------------


def test_http_settings_from_file_env_and_flag(tmp_path: Path) -> None:
    assert load_settings(env={}).http == HttpSettings(port=0, host="127.0.0.1")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[http]\nport = 9100\nhost = "0.0.0.0"\n')
    assert load_settings(cfg, env={}).http == HttpSettings(port=9100, host="0.0.0.0")
    env = {"NAVSTREAM_HTTP_PORT": " 9200 ", "NAVSTREAM_HTTP_HOST": "::"}
    assert load_settings(cfg, env=env).http == HttpSettings(port=9200, host="::")
    assert load_settings(cfg, env=env, overrides={"http": {"port": 9300}}).http.port == 9300
    with pytest.raises(ConfigError, match="NAVSTREAM_HTTP_PORT: 'eighty' is not a whole number"):
        load_settings(env={"NAVSTREAM_HTTP_PORT": "eighty"})
    with pytest.raises(ConfigError, match=r"http.port.*environment variable NAVSTREAM_HTTP_PORT"):
        load_settings(env={"NAVSTREAM_HTTP_PORT": "70000"})
    cfg.write_text('[http]\nport = "80"\n')
    with pytest.raises(ConfigError, match=r"c.toml: \[http\] Expected `int`, got `str` - at `http.port`"):
        load_settings(cfg, env={})
    cfg.write_text("[http]\nprot = 80\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings(cfg, env={})


@pytest.mark.parametrize(
    ("value", "message"), [("abc", "'abc' is not a port number"), ("70000", "70000 is not a port number (0-65535")]
)
def test_http_port_flag_is_checked(value: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--http-port", value])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_env_port_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NAVSTREAM_HTTP_PORT", "http")
    assert main(["run", "--redis-url", "redis://127.0.0.1:1/0"]) == 2
    assert "NAVSTREAM_HTTP_PORT: 'http' is not a whole number" in capsys.readouterr().err


# --- the container health check, against a real consumer process -------------------------------


def _dockerfile_healthcheck() -> tuple[list[str], dict[str, str]]:
    """The final stage's HEALTHCHECK command and the ENV it runs with, as the Dockerfile says."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    final = text[text.rindex("\nFROM ") :]
    command = json.loads(final[final.index("HEALTHCHECK") :].split("CMD", 1)[1].splitlines()[0])
    env: dict[str, str] = {}
    for line in final.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                key, _, value = pair.partition("=")
                env[key] = value
    return command, env


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAVSTREAM_")}
    env["NAVSTREAM_LOG_STREAM"] = "stderr"
    env.update(extra)
    return env


def _healthcheck(command: list[str], pid: int, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The image's paths, mapped to this checkout: the same script, the same interpreter role.
    assert command[0] == "/opt/venv/bin/python" and command[1].endswith("/healthcheck.py"), command
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), *command[2:], "--pid", str(pid)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )


@pytest.mark.real_redis
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_healthcheck_command_asks_healthz_of_a_running_consumer(tmp_path: Path) -> None:
    command, image_env = _dockerfile_healthcheck()
    assert image_env["NAVSTREAM_HTTP_PORT"] == "8080" and image_env["NAVSTREAM_HTTP_HOST"] == "0.0.0.0"
    port = free_port()  # the image's 8080 may be taken on this machine; everything else as in the image
    env = _clean_env(
        NAVSTREAM_REDIS_URL=REDIS_URL,
        NAVSTREAM_HTTP_PORT=str(port),
        NAVSTREAM_HTTP_HOST=image_env["NAVSTREAM_HTTP_HOST"],
        NAVSTREAM_PREFIX=f"nstest-hc-{os.getpid()}-{port}",
    )
    navstream = Path(sys.executable).parent / "navstream"
    log = (tmp_path / "consumer.log").open("w")
    consumer = subprocess.Popen(
        [sys.executable, str(navstream), "run"], env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=log
    )
    try:
        deadline = time.monotonic() + 30
        result = _healthcheck(command, consumer.pid, env)
        while result.returncode != 0 and time.monotonic() < deadline and consumer.poll() is None:
            time.sleep(0.3)
            result = _healthcheck(command, consumer.pid, env)
        assert result.returncode == 0, (result.stdout, result.stderr, (tmp_path / "consumer.log").read_text())
        assert result.stdout.startswith(f"ok: http://127.0.0.1:{port}/healthz ")
        assert '"alive":true' in result.stdout

        # The flag on the consumer's command line is followed too (read from /proc/<pid>/cmdline).
        flagged_port = free_port()
        flagged = subprocess.Popen(
            [sys.executable, str(navstream), "run", "--http-port", str(flagged_port)],
            env={**env, "NAVSTREAM_HTTP_PORT": "0", "NAVSTREAM_CONSUMER": "flagged"},
            cwd="/",
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            check_env = {**env, "NAVSTREAM_HTTP_PORT": "0"}
            deadline = time.monotonic() + 30
            second = _healthcheck(command, flagged.pid, check_env)
            while second.returncode != 0 and time.monotonic() < deadline and flagged.poll() is None:
                time.sleep(0.3)
                second = _healthcheck(command, flagged.pid, check_env)
            assert second.returncode == 0 and f":{flagged_port}/healthz" in second.stdout, second
        finally:
            flagged.send_signal(signal.SIGTERM)
            assert flagged.wait(timeout=30) == 0

        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(timeout=30) == 0
        gone = _healthcheck(command, consumer.pid, env)
        assert gone.returncode == 1
        assert gone.stdout.startswith(f"unhealthy: http://127.0.0.1:{port}/healthz cannot be reached"), gone.stdout
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait(timeout=10)
        log.close()
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{env['NAVSTREAM_PREFIX']}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


# --- freshness belongs to readers: a stored ok past its fresh_until ----------------------------


def test_the_status_api_reads_an_ok_past_its_fresh_until_as_stale() -> None:
    def raw(status: str, **extra: Any) -> str:
        data = {
            "scope": "total",
            "nav": "1",
            "quote": "USD",
            "status": status,
            "as_of": T0,
            "computed_at": START_MS,
            **extra,
        }
        return f"{START_MS} {json.dumps(data)}"

    def parse_nav_latest(member: str, raw: str, now_ms: int) -> Scope:
        stored = decode_snapshot(member, raw)
        return Scope(member, as_read(stored, now_ms), stored.status)

    fresh = parse_nav_latest("total", raw("ok", fresh_until=START_MS + 1), START_MS)
    assert (fresh.snap.status, fresh.stored_status, fresh.snap.reasons) == ("ok", "ok", [])
    past = parse_nav_latest("total", raw("ok", fresh_until=START_MS, reasons=["x"]), START_MS)
    assert (past.snap.status, past.stored_status) == ("stale", "ok")
    assert past.snap.reasons == [
        "an input passed its age limit at 2026-09-21T14:13:20.000Z (fresh_until); not re-evaluated since",
        "x",
    ]
    unknown = parse_nav_latest("total", raw("ok"), START_MS)  # stored without fresh_until
    assert unknown.snap.status == "stale" and unknown.snap.reasons[0].startswith("stored without a freshness horizon")
    partial = parse_nav_latest("total", raw("partial", fresh_until=START_MS - 1), START_MS)
    assert (partial.snap.status, partial.snap.reasons) == ("partial", [])  # already not ok: kept as stored
    assert past.as_json(START_MS)["status"] == "stale" and past.as_json(START_MS)["stored_status"] == "ok"


async def test_api_status_readyz_and_metrics_read_a_nav_past_its_fresh_until_as_stale(
    make_app: Any, no_cache: None
) -> None:
    """A NAV stored ok whose inputs passed their limit, and no tick since (no nav plugin runs
    here): /readyz, /api/status and /metrics say stale; before its fresh_until, ok."""
    clock = ManualClock(START_MS)
    app = make_app(plugins=[("nav", NavReport())], consumer=FAST, clock=clock)  # its reports, not its ticks
    app.settings = msgspec.structs.replace(
        app.settings, http=msgspec.structs.replace(app.settings.http, ready_on_stale_data=False)
    )
    latest = app.keys.state("nav", "latest")

    def snapshot(scope: str, **extra: Any) -> str:
        data = {
            "scope": scope,
            "nav": "12.5",
            "quote": "USD",
            "status": "ok",
            "as_of": T0,
            "computed_at": START_MS,
            "fresh_until": START_MS + 5_000,
            **extra,
        }
        return f"{START_MS} {json.dumps(data)}"

    async with serving(app) as (_, client):
        await app.redis.hset(
            latest, mapping={"account:v/a": snapshot("account", venue="v", account="a"), "total": snapshot("total")}
        )
        clock.advance(4_999)
        assert (await client.get("/readyz")).json() == {"ready": True}
        assert {r["id"]: r["status"] for r in (await client.get("/api/status")).json()["nav"]} == {
            "total": "ok",
            "account:v/a": "ok",
        }
        clock.advance(1)
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["reasons"] == [
            "NAV total is stale: an input passed its age limit at 2026-09-21T14:13:25.000Z (fresh_until); "
            "not re-evaluated since",
            "NAV v/a is stale: an input passed its age limit at 2026-09-21T14:13:25.000Z (fresh_until); "
            "not re-evaluated since",
        ]
        rows = {r["id"]: r for r in (await client.get("/api/status")).json()["nav"]}
        assert {k: (r["status"], r["stored_status"]) for k, r in rows.items()} == {
            "total": ("stale", "ok"),
            "account:v/a": ("stale", "ok"),
        }
        assert rows["total"]["reasons"][0].startswith("an input passed its age limit")
        m = metrics_of((await client.get("/metrics")).text)
        assert sample(m, "navstream_nav_status", scope="total", status="stale") == 1
        assert sample(m, "navstream_nav_status", scope="total", status="ok") == 0
        assert await app.redis.hget(latest, "total") == snapshot("total")  # reading changed nothing
