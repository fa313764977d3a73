"""The consumer's HTTP routes: ``/healthz``, ``/readyz``, ``/metrics``, ``/api/status`` and ``/``.

This is the glue between the generic server (:mod:`navstream.serve.http`), the probe rules
(:mod:`navstream.serve.probes`), the collectors (:mod:`navstream.serve.metrics`), the reads
(:mod:`navstream.serve.status`) and what the plugins contribute through their reporting hooks
(:mod:`navstream.serve.contributions`). Every answer is computed on request; the Redis reads
behind it, the plugins' included, are bounded in time (:data:`READ_TIMEOUT_S`) and shared:
concurrent requests, and requests within :data:`DESK_MAX_AGE_S` of each other, reuse one read,
so a busy scraper or a few open status pages cost Redis a handful of small commands per second
at most.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from redis.exceptions import RedisError

from navstream.serve.contributions import (
    MetricReads,
    PageReads,
    read_metrics,
    read_page,
    read_readiness,
)
from navstream.serve.http import Handler, HttpServer, Request, Response
from navstream.serve.metrics import CONTENT_TYPE, Scrape
from navstream.serve.probes import LoopState, liveness, readiness
from navstream.serve.status import DeskView, read_consumers, read_desk, status_document

if TYPE_CHECKING:
    from navstream.app import App
    from navstream.config import ConsumerSettings
    from navstream.serve.metrics import Metrics


class ServedLoop(Protocol):
    """What the routes read of the consumer they serve: the loop publishes these, the routes
    never reach further into it (so serve does not import the loop, nor the loop the routes'
    internals)."""

    app: App
    settings: ConsumerSettings
    streams: list[str]
    metrics: Metrics
    alive_at: float

    @property
    def phase(self) -> str: ...

    @property
    def down_for_s(self) -> float | None: ...

    @property
    def writes_refused_reason(self) -> str: ...

    def health(self) -> dict[str, str]: ...


#: Longest a request waits for Redis before answering with what it has (Redis unreachable).
READ_TIMEOUT_S = 2.0
#: How long one read of the desk, and of what the plugins report, serves further requests
#: (and the page's read of the group's consumers, which costs more and changes less).
DESK_MAX_AGE_S = 1.0
PAGE_MAX_AGE_S = 2.0
JSON = "application/json"

T = TypeVar("T")
#: The status page's own reads: the group's consumers, and the plugins' sections.
PageExtra = tuple[list[dict[str, Any]], PageReads]
#: The readiness reasons plugins give, per plugin.
PluginReasons = list[tuple[str, list[str]]]


class Coalesced(Generic[T]):
    """One call of ``fn`` shared by concurrent callers and reused for ``max_age_s``.

    The call is shielded: a client that disconnects cancels its own wait, not the read that
    others wait on too.
    """

    def __init__(self, fn: Callable[[], Awaitable[T]], max_age_s: float) -> None:
        self.fn = fn
        self.max_age_s = max_age_s
        self._value: tuple[float, T] | None = None
        self._task: asyncio.Task[T] | None = None

    async def get(self) -> T:
        if self._value is not None and time.monotonic() - self._value[0] < self.max_age_s:
            return self._value[1]
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        return await asyncio.shield(self._task)

    async def _run(self) -> T:
        try:
            value = await self.fn()
            self._value = (time.monotonic(), value)
            return value
        finally:
            self._task = None

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


def _json(status: int, data: Any) -> Response:
    return Response(status, json.dumps(data, separators=(",", ":"), default=str).encode(), JSON)


def _page() -> tuple[bytes, str]:
    """The status page and a Content-Security-Policy that allows its own inline script and
    style (by hash) and nothing else: no other origin, no eval, no frames."""
    page = resources.files("navstream.serve").joinpath("statuspage.html").read_bytes()
    text = page.decode()

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", text, flags=re.DOTALL)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks)

    csp = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return page, csp


class Endpoints:
    """The routes of one consumer."""

    def __init__(self, consumer: ServedLoop) -> None:
        self.consumer = consumer
        self.app = consumer.app
        self._desk: Coalesced[DeskView] = Coalesced(self._read_desk, DESK_MAX_AGE_S)
        self._consumers: Coalesced[list[dict[str, Any]]] = Coalesced(self._read_consumers, PAGE_MAX_AGE_S)
        self._sections: Coalesced[PageReads] = Coalesced(self._read_sections, DESK_MAX_AGE_S)
        self._ready: Coalesced[PluginReasons] = Coalesced(self._read_ready, DESK_MAX_AGE_S)
        self._metrics: Coalesced[MetricReads] = Coalesced(self._read_metrics, DESK_MAX_AGE_S)
        self._page, self._csp = _page()
        #: The server answering these routes (for its own counters in /metrics), once started.
        self.server: HttpServer | None = None

    def routes(self) -> dict[str, Handler]:
        return {
            "/": self.page,
            "/healthz": self.healthz,
            "/readyz": self.readyz,
            "/metrics": self.metrics,
            "/api/status": self.status,
        }

    def close(self) -> None:
        for read in (self._desk, self._consumers, self._sections, self._ready, self._metrics):
            read.cancel()

    # --- what the answers are made of ---------------------------------------------------------

    def loop_state(self) -> LoopState:
        c = self.consumer
        down = c.down_for_s
        # Set while Redis refuses this process's writes (OOM, READONLY, MISCONF); read with
        # getattr, as the consumer's stats and writer keep it (None or 0 while writes work).
        refused = self.app.stats.writes_refused_since
        return LoopState(
            phase=c.phase,
            idle_s=time.monotonic() - c.alive_at,
            stall_limit_s=c.settings.heartbeat_ttl_ms / 1000,
            reconnecting_s=down,
            writes_refused_since_ms=int(refused) if refused else None,
            writes_refused_reason=c.writes_refused_reason if refused else "",
        )

    def _streams(self) -> list[str]:
        return list(self.consumer.streams) or [self.app.keys.events]

    async def _read_desk(self) -> DeskView:
        try:
            return await asyncio.wait_for(read_desk(self.app, self._streams()), READ_TIMEOUT_S)
        except TimeoutError:
            return DeskView(read_ms=self.app.clock.now_ms(), redis_error=f"no answer within {READ_TIMEOUT_S:g}s")

    async def _read_extra(self) -> PageExtra:
        """The page's own reads: the group's consumers (every :data:`PAGE_MAX_AGE_S`), and the
        plugins' sections (every :data:`DESK_MAX_AGE_S`, as fresh as the desk read)."""

        async def consumers() -> list[dict[str, Any]]:
            try:
                return await self._consumers.get()
            except (TimeoutError, RedisError, OSError):
                return []  # the page says Redis is unreachable (from the desk read)

        return await asyncio.gather(consumers(), self._sections.get())

    async def _read_consumers(self) -> list[dict[str, Any]]:
        # Every input stream, not only this consumer's: with roles, the group's other consumers
        # read other streams, and their pending entries and idle times are there.
        return await asyncio.wait_for(read_consumers(self.app, list(self.app.keys.inputs)), READ_TIMEOUT_S)

    async def _read_sections(self) -> PageReads:
        return await read_page(self.app, self.app.clock.now_ms(), READ_TIMEOUT_S)

    async def _read_ready(self) -> PluginReasons:
        return await read_readiness(
            self.app, self.app.clock.now_ms(), self.app.settings.http.ready_on_stale_data, READ_TIMEOUT_S
        )

    async def _read_metrics(self) -> MetricReads:
        return await read_metrics(self.app, self.app.clock.now_ms(), READ_TIMEOUT_S)

    def _health(self) -> dict[str, str]:
        return self.consumer.health()

    async def _readiness(self, view: DeskView, health: dict[str, str]) -> list[str]:
        # The plugins are not asked while Redis does not answer: that is the reason then.
        plugin_reasons = [] if view.redis_error else await self._ready.get()
        return readiness(
            self.loop_state(),
            view,
            streams=self.consumer.streams,
            group=self.app.group,
            health=health,
            plugin_reasons=plugin_reasons,
        )

    # --- routes -------------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        alive, why = liveness(self.loop_state())
        if alive:
            return _json(200, {"alive": True, "status": why})
        return _json(503, {"alive": False, "reason": why})

    async def readyz(self, request: Request) -> Response:
        reasons = await self._readiness(await self._desk.get(), self._health())
        if reasons:
            return _json(503, {"ready": False, "reasons": reasons})
        return _json(200, {"ready": True})

    async def metrics(self, request: Request) -> Response:
        view, plugins = await asyncio.gather(self._desk.get(), self._metrics.get())
        health = self._health()
        ready = not await self._readiness(view, health)
        http = self.server.stats if self.server is not None else None
        body = self.consumer.metrics.render(Scrape(view, health, ready, http, plugins))
        return Response(200, body, CONTENT_TYPE)

    async def status(self, request: Request) -> Response:
        view, (consumers, page) = await asyncio.gather(self._desk.get(), self._read_extra())
        health = self._health()
        reasons = await self._readiness(view, health)
        stats = self.app.stats
        alive, why = liveness(self.loop_state())
        consumer = {
            "name": self.app.consumer_name,
            "group": self.app.group,
            "phase": self.consumer.phase,
            "role": self.consumer.settings.role,
            "alive": alive,
            "liveness": why,
            "streams": self._streams(),
            "started_ms": stats.started_ms,
            "processed": stats.processed,
            "failed": stats.failed,
            "dead_lettered": stats.dead_lettered,
            "batches": stats.batches,
            "last_batch_size": stats.last_batch_size,
            "last_batch_duration_ms": round(stats.last_batch_duration_ms, 3),
            "reconnects": stats.reconnects,
            "lag": stats.lag,
            "pending": stats.pending,
            "last_error": stats.last_error[:500],
        }
        doc = status_document(
            consumer=consumer,
            ready=not reasons,
            reasons=reasons,
            view=view,
            consumers=consumers,
            health=health,
            page=page,
        )
        return _json(200, doc)

    async def page(self, request: Request) -> Response:
        return Response(
            200,
            self._page,
            "text/html; charset=utf-8",
            (("Content-Security-Policy", self._csp), ("Referrer-Policy", "no-referrer")),
        )


async def start_http(consumer: ServedLoop, host: str, port: int) -> tuple[HttpServer, Endpoints]:
    """Serve ``consumer``'s routes; :class:`~navstream.serve.http.HttpStartError` if it cannot listen."""
    endpoints = Endpoints(consumer)
    server = endpoints.server = HttpServer(endpoints.routes(), host=host, port=port)
    await server.start()
    return server, endpoints
