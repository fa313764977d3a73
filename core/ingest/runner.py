"""``navstream ingest``: run every configured source on its interval and publish what it saw.

Each attempt, success or failure, ends with a ``source_status`` event (with the error), written
after the attempt's own events in one ``MULTI``/``EXEC``: a reader never sees a source report
``ok`` before the values it vouches for. A failed or missing value is never published; the NAV
turns stale or partial on its own, and the consumers' ``source_monitor`` alerts on the failure.
Problems that do not fail a fetch (an id missing from an answer) are alerted here
(``source_incomplete``), at most once per problem text and ``alert_every_s``.

If Redis is unreachable, each source keeps only its newest unwritten attempt (snapshots are
absolute: an older one is superseded) and it is written when Redis is back; what was
superseded is counted.

With ``[http] ingest_port`` set, the process serves ``/healthz`` (its source loops make
progress) and ``/metrics`` (fetches, failures by kind, events written per source; requests,
429/418 answers and limiter waits per host) through :mod:`navstream.serve.http`, the consumer's server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from navstream.app import Clock, SystemClock
from navstream.config import SOURCES_SECTION, ConfigError, Settings
from navstream.contract.events import SourceStatus, encode_fields, stream_fields
from navstream.contract.keys import Keys
from navstream.ingest.httppool import HttpPool
from navstream.ingest.pricecache import PriceCache
from navstream.ingest.ratelimit import RateLimited
from navstream.sources import (
    Fetched,
    Source,
    SourceConfigError,
    SourceContext,
    SourceError,
    SourceKind,
    SourceSettings,
    redact,
)

if TYPE_CHECKING:
    from navstream.serve.http import HttpServer, Request, Response
    from navstream.serve.ingest_metrics import IngestMetrics

log = logging.getLogger("navstream.ingest")

#: Longest error text kept in a ``source_status`` event.
MAX_ERROR = 500
#: The same ``source_incomplete`` problem of a source is alerted at most this often.
ALERT_EVERY_S = 300.0


class IngestError(RuntimeError):
    """The ingest process cannot start (no sources, a bad section, a missing credential)."""


def configure(settings: Settings, kinds: Mapping[str, SourceKind]) -> dict[str, tuple[SourceKind, SourceSettings]]:
    """Decode every ``[sources.<name>]`` table with its kind's settings type.

    :raises ConfigError: a section that is not a table, an unknown kind, an invalid value;
        every problem is listed, naming the section and the key.
    """
    raw = settings.extra.get(SOURCES_SECTION, {})
    problems: list[str] = []
    out: dict[str, tuple[SourceKind, SourceSettings]] = {}
    for name, table in raw.items():
        if not isinstance(table, dict):
            problems.append(f"[sources.{name}] must be a table")
            continue
        kind_name = table.get("kind") or name
        kind = kinds.get(kind_name) if isinstance(kind_name, str) else None
        if kind is None:
            problems.append(
                f"[sources.{name}]: unknown source kind {kind_name!r} (installed: {', '.join(sorted(kinds)) or 'none'})"
            )
            continue
        try:
            out[name] = (kind, msgspec.convert(table, kind.settings))
        except msgspec.ValidationError as exc:
            text = str(exc).replace("`$.", f"`sources.{name}.").replace("`$`", f"`[sources.{name}]`")
            problems.append(f"[sources.{name}] {text}")
    if problems:
        raise ConfigError(f"{settings.source}: " + "; ".join(problems))
    return out


@dataclass
class SourceRun:
    """One source instance and what the ingest process knows of it."""

    source: Source
    attempts: int = 0
    failures: int = 0
    last_ok_ms: int = 0
    last_error: str = ""
    #: The newest attempt not yet written (Redis was unreachable), as stream entries, and the
    #: alerts it raised (kept with it: an alert is counted as sent only once written).
    unwritten: list[dict[str, str]] | None = None
    unwritten_alerts: list[dict[str, str]] = field(default_factory=list)
    superseded: int = 0
    alerted: dict[str, float] = field(default_factory=dict)
    #: Failed attempts by kind (``timeout``, ``rate_limited``, ``error``), events written (not
    #: counting the ``source_status``), writes Redis refused, and when the loop last made progress.
    failure_kinds: Counter[str] = field(default_factory=Counter)
    events_written: int = 0
    write_failures: int = 0
    alive_at: float = field(default_factory=time.monotonic)


class Ingest:
    """Builds the configured sources and runs them.

    :param redis: a ``str``-decoding client; the process writes only to ``P:events`` and
        ``P:alerts``.
    """

    def __init__(
        self,
        settings: Settings,
        kinds: Mapping[str, SourceKind],
        redis: aioredis.Redis,
        *,
        clock: Clock | None = None,
        http: HttpPool | None = None,
        env: Mapping[str, str] | None = None,
        alert_every_s: float = ALERT_EVERY_S,
    ) -> None:
        self.settings = settings
        self.keys = Keys(settings.redis.prefix, cluster=settings.redis.cluster)
        self.redis = redis
        self.clock = clock or SystemClock()
        self.http = http or HttpPool()
        self.cache = PriceCache()
        self.alert_every_s = alert_every_s
        context = SourceContext(self.http, self.cache, self.clock, **({"env": env} if env is not None else {}))
        self.runs: dict[str, SourceRun] = {}
        problems: list[str] = []
        for name, (kind, source_settings) in configure(settings, kinds).items():
            if not source_settings.enabled:
                continue
            try:
                self.runs[name] = SourceRun(kind.factory(name, source_settings, context))
            except (SourceConfigError, ValueError) as exc:
                problems.append(str(exc))
        if problems:
            raise IngestError("; ".join(problems))
        if not self.runs:
            raise IngestError(
                f"{settings.source}: no [sources.<name>] section is enabled; nothing to ingest "
                f"(kinds installed: {', '.join(sorted(kinds)) or 'none'})"
            )
        self._stopping = asyncio.Event()
        #: ``starting`` until :meth:`run` runs the sources, then ``running``, then ``stopping``.
        self.phase = "starting"
        self.started_ms = self.clock.now_ms()
        #: The /healthz and /metrics server, while :meth:`run` runs with ``[http] ingest_port`` set.
        self.server: HttpServer | None = None
        self.metrics: IngestMetrics | None = None

    def request_stop(self) -> None:
        self._stopping.set()

    async def aclose(self) -> None:
        for run in self.runs.values():
            try:
                await run.source.aclose()
            except Exception as exc:  # noqa: BLE001 - closing; report and go on
                log.warning(
                    "source close failed",
                    extra={"event": "source_close_failed", "source": run.source.name, "error": str(exc)},
                )
        await self.http.aclose()

    # --- one attempt --------------------------------------------------------------------------

    async def attempt(self, run: SourceRun) -> bool:
        """Fetch once and publish the result; True if the source succeeded."""
        source = run.source
        run.attempts += 1
        started = time.monotonic()
        error = ""
        fetched = Fetched()
        kind = ""
        try:
            async with asyncio.timeout(source.settings.timeout_s):
                fetched = await source.fetch()
        except TimeoutError:
            error, kind = f"fetch did not finish within timeout_s = {source.settings.timeout_s:g}s", "timeout"
        except RateLimited as exc:
            error, kind = str(exc), "rate_limited"
        except SourceError as exc:
            error, kind = str(exc), "error"
        except Exception as exc:
            error, kind = f"{type(exc).__name__}: {exc}", "error"
            log.exception("source raised", extra={"event": "source_bug", "source": source.name})
        now = self.clock.now_ms()
        error = redact(error)
        ok = not error
        entries = [encode_fields(e) for e in fetched.events] if ok else []
        note = error or "; ".join(fetched.problems)
        status = SourceStatus(
            ts=now,
            venue=source.venue,
            source=source.name,
            ok=ok,
            account=source.account,
            error=note[:MAX_ERROR] if note else None,
        )
        entries.append(encode_fields(status))
        if ok:
            run.last_ok_ms = now
        else:
            run.failures += 1
            run.failure_kinds[kind or "error"] += 1
        run.last_error = error or run.last_error
        log.log(
            logging.INFO if ok else logging.WARNING,
            "source fetched" if ok else "source failed",
            extra={
                "event": "source_fetched" if ok else "source_failed",
                "source": source.name,
                "ok": ok,
                "events": len(entries) - 1,
                "error": error,
                "problems": fetched.problems,
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        if run.unwritten is not None:
            run.superseded += 1
        run.unwritten = entries
        if ok:
            run.unwritten_alerts += self._problem_alerts(run, fetched.problems, now)
        await self.flush(run)
        return ok

    def _problem_alerts(self, run: SourceRun, problems: list[str], now_ms: int) -> list[dict[str, str]]:
        out = []
        wall = time.monotonic()
        waiting = {a["message"] for a in run.unwritten_alerts}
        for problem in problems:
            last = run.alerted.get(problem)
            if last is not None and wall - last < self.alert_every_s:
                continue
            if any(problem in m for m in waiting):
                continue  # raised already, waiting for Redis with the attempt
            run.alerted[problem] = wall
            out.append(
                {
                    "code": "source_incomplete",
                    "severity": "warning",
                    "venue": run.source.venue,
                    "source": run.source.name,
                    "message": f"source {run.source.name}: {problem}; those values are not published (never as 0)",
                    "ts": str(now_ms),
                    **({"account": run.source.account} if run.source.account else {}),
                }
            )
        if len(run.alerted) > 1000:
            run.alerted.clear()
        return out

    async def flush(self, run: SourceRun) -> bool:
        """Write the source's newest unwritten attempt and its alerts; False if Redis refused."""
        if run.unwritten is None:
            return True
        alerts = run.unwritten_alerts
        pipe = self.redis.pipeline(transaction=True)
        for fields in run.unwritten:
            pipe.xadd(self.keys.events, stream_fields(fields))
        maxlen = self.settings.consumer.output_maxlen
        for alert in alerts:
            pipe.xadd(self.keys.alerts, stream_fields(alert), maxlen=maxlen, approximate=True)
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            run.write_failures += 1
            log.error(
                "could not write a source's events; kept until Redis answers",
                extra={"event": "ingest_write_failed", "source": run.source.name, "error": str(exc)},
            )
            return False
        run.events_written += len(run.unwritten) - 1  # the last one is the attempt's source_status
        run.unwritten = None
        run.unwritten_alerts = []
        return True

    # --- running --------------------------------------------------------------------------------

    async def run_once(self) -> dict[str, bool]:
        """Every source once, concurrently; name -> succeeded and written."""
        names = list(self.runs)
        results = await asyncio.gather(*(self.attempt(self.runs[n]) for n in names))
        return {n: ok and self.runs[n].unwritten is None for n, ok in zip(names, results)}

    async def run(self) -> None:
        """Every source on its own interval until :meth:`request_stop` (the attempts in
        flight finish first). With ``[http] ingest_port`` set, /healthz and /metrics are served
        meanwhile; a port that cannot be listened on stops the start
        (:class:`~navstream.loop.consumer.StartupError`, naming the port)."""
        await self.start_http()
        try:
            self.phase = "running"
            for run in self.runs.values():
                run.alive_at = time.monotonic()
            async with asyncio.TaskGroup() as group:
                for run in self.runs.values():
                    group.create_task(self._loop(run))
        finally:
            self.phase = "stopping"
            await self.stop_http()

    async def _loop(self, run: SourceRun) -> None:
        interval = run.source.settings.interval_s
        while not self._stopping.is_set():
            started = run.alive_at = time.monotonic()
            if run.unwritten is not None:  # a previous attempt still waits for Redis
                await self.flush(run)
            await self.attempt(run)
            run.alive_at = time.monotonic()
            delay = max(0.0, started + interval - time.monotonic())
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            except TimeoutError:
                pass

    # --- /healthz and /metrics ----------------------------------------------------------------

    def stall_limit_s(self, run: SourceRun) -> float:
        """A source loop that has not moved for this long is stalled: three of its cycles
        (interval and fetch timeout), and never less than a minute."""
        return max(60.0, 3 * (run.source.settings.interval_s + run.source.settings.timeout_s))

    def liveness(self) -> tuple[bool, str]:
        """``(alive, why)``: alive while starting or running with every source loop moving. A
        failing source or an unreachable Redis is not a stall (the loop goes on, and restarting
        would not fix either); a loop stuck in one call is."""
        if self.phase == "stopping":
            return False, "stopping: the ingest process is shutting down"
        if self.phase != "running":
            return True, self.phase
        now = time.monotonic()
        stalled = [
            f"source {name}: no progress for {now - run.alive_at:.0f}s (limit {self.stall_limit_s(run):.0f}s)"
            for name, run in self.runs.items()
            if now - run.alive_at > self.stall_limit_s(run)
        ]
        if stalled:
            return False, "loop stalled: " + "; ".join(stalled)
        return True, "running"

    async def start_http(self) -> None:
        from navstream.loop.consumer import StartupError
        from navstream.serve.http import HttpServer, HttpStartError
        from navstream.serve.ingest_metrics import IngestMetrics

        cfg = self.settings.http
        if cfg.ingest_port == 0 or self.server is not None:
            return
        self.metrics = IngestMetrics(self)
        server = HttpServer(
            {"/healthz": self._healthz, "/metrics": self._metrics},
            host=cfg.host,
            port=cfg.ingest_port,
            port_setting="[http] ingest_port or NAVSTREAM_INGEST_HTTP_PORT",
        )
        try:
            await server.start()
        except HttpStartError as exc:
            raise StartupError(str(exc)) from exc
        self.server = server

    async def stop_http(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await server.stop()

    async def _healthz(self, request: Request) -> Response:
        from navstream.serve.http import Response

        alive, why = self.liveness()
        body = {"alive": True, "status": why} if alive else {"alive": False, "reason": why}
        return Response(200 if alive else 503, json.dumps(body, separators=(",", ":")).encode(), "application/json")

    async def _metrics(self, request: Request) -> Response:
        from navstream.serve.http import Response
        from navstream.serve.metrics import CONTENT_TYPE

        assert self.metrics is not None  # made with the server
        return Response(200, self.metrics.render(), CONTENT_TYPE)

    def status(self) -> list[dict[str, Any]]:
        return [
            {
                "source": name,
                "kind": type(r.source).__name__,
                "attempts": r.attempts,
                "failures": r.failures,
                "last_ok_ms": r.last_ok_ms,
                "last_error": r.last_error,
                "superseded": r.superseded,
            }
            for name, r in self.runs.items()
        ]
