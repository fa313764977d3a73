"""Helpers of the HTTP endpoint's tests (tests/serve/, and the ingest's, plugins' and docs' tests
that run an endpoint): a consumer serving on a free port, a raw HTTP reader, /metrics parsed with
prometheus_client's own parser, a desk's worth of events and a stand-in sink plugin."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from navstream import App, Balance, Event, Outputs, hookimpl
from navstream.loop.consumer import Consumer
from navstream.serve import routes as endpoints_module
from navstream.serve.http import Request, Response
from navstream.testing import START_MS

__all__ = [
    "FAST",
    "SECTIONS",
    "T0",
    "Sink",
    "desk_events",
    "free_port",
    "metrics_of",
    "no_cache",
    "ok",
    "order",
    "read_answer",
    "sample",
    "serving",
    "until",
]

T0 = START_MS - 1_000


FAST = {"block_ms": 5, "claim_idle_ms": 40, "tick_ms": 50}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def ok(request: Request) -> Response:
    return Response.text(200, f"hello {request.method} {request.path}")


async def read_answer(reader: asyncio.StreamReader, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One answer: its status, headers (lower-case names) and body (by its Content-Length);
    ``(0, {}, b"")`` when the server closed without answering."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return 0, {}, b""
        raise
    lines = head[:-4].decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    body = b"" if method == "HEAD" else await reader.readexactly(int(headers["content-length"]))
    return int(lines[0].split(" ")[1]), headers, body


class Sink:
    """A stand-in for a sink plugin: healthy until told otherwise; can fail balances."""

    def __init__(self) -> None:
        self.degraded = ""
        self.fail_balances = False

    @hookimpl
    def navstream_health(self, app: App) -> Mapping[str, Any]:
        if self.degraded:
            return {"status": "degraded", "reason": self.degraded, "queued": 7}
        return {"status": "ok", "queued": 0, "holder": "someone"}

    @hookimpl
    def navstream_events(self, events: Sequence[Event], out: Outputs) -> None:
        if self.fail_balances and any(isinstance(e, Balance) for e in events):
            raise RuntimeError("sink refused balances")


SECTIONS = {
    "nav": {
        "max_age_s": 120,
        "publish_every_s": 600,
        "pegs": {"USDT": "1"},
        "routes": {"BTC": "BTC/USDT"},
        "accounts": [{"venue": "binance", "account": "main", "kind": "futures"}],
    },
    "risk": {"max_nav_age_s": 60, "max_order_notional": "50000", "max_order_pct_nav": 50, "max_gross_exposure_x": 3},
}


def desk_events(ts: int = T0) -> list[dict[str, str]]:
    return [
        {"type": "balance", "venue": "binance", "account": "main", "asset": "USDT", "balance": "100000", "ts": str(ts)},
        {"type": "balance", "venue": "binance", "account": "main", "asset": "BTC", "balance": "1", "ts": str(ts)},
        {"type": "price", "base": "BTC", "quote": "USDT", "price": "50000", "source": "binance-spot", "ts": str(ts)},
        {
            "type": "source_status",
            "venue": "binance",
            "source": "binance-futures",
            "account": "main",
            "ok": "true",
            "ts": str(ts),
        },
        # the price source reports too (a price whose source never reported is stale)
        {"type": "source_status", "venue": "binance", "source": "binance-spot", "ok": "true", "ts": str(ts)},
    ]


def order(order_id: str, qty: str) -> dict[str, str]:
    return {
        "type": "order",
        "order_id": order_id,
        "venue": "binance",
        "account": "main",
        "symbol": "BTCUSDT",
        "side": "buy",
        "qty": qty,
        "ts": str(START_MS),
    }


async def until(check: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def serving(app: App, host: str = "127.0.0.1") -> AsyncIterator[tuple[Consumer, httpx.AsyncClient]]:
    """``app``'s consumer running its real loop, with its HTTP endpoint on a free port."""
    app.settings = msgspec.structs.replace(
        app.settings, http=msgspec.structs.replace(app.settings.http, port=free_port(), host=host)
    )
    consumer = Consumer(app)
    task = asyncio.create_task(consumer.run())
    try:
        await until(lambda: consumer.phase == "running" or task.done(), what="the loop to run")
        if task.done():
            task.result()
        await until(lambda: app.stats.batches >= 0 and bool(app.stats.lag), what="a first tick")
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{app.settings.http.port}", trust_env=False, timeout=10
        ) as client:
            yield consumer, client
    finally:
        consumer.request_stop()
        assert await asyncio.wait_for(task, 20) == 0
    assert consumer.http is None and consumer.phase == "stopped"


def metrics_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``(sample name, sorted labels) -> value`` from the Prometheus text format."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def sample(samples: Mapping[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def no_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request reads Redis afresh (the endpoints otherwise share a read for a second)."""
    monkeypatch.setattr(endpoints_module, "DESK_MAX_AGE_S", 0.0)
    monkeypatch.setattr(endpoints_module, "PAGE_MAX_AGE_S", 0.0)
