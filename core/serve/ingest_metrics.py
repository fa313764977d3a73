"""``/metrics`` of ``navstream ingest`` (its ``[http] ingest_port``): per source, fetches,
failures by kind, events written, refused writes and the last success; per host, requests, 429
and 418 answers, waits for the weight budget and refusals. The consumer's own registry is
:mod:`navstream.serve.metrics`; the names are listed in docs/observability.md."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from navstream.serve.metrics import _counter, _gauge
from navstream.version import __version__


class IngestMetrics:
    """``navstream ingest``'s registry: per source, fetches, failures by kind, events written,
    writes Redis refused and the last success; per host, requests, 429 and 418 answers, waits
    for the weight budget and refusals; and the process's own collectors. Computed at scrape
    time from the :class:`~navstream.ingest.runner.Ingest` (typed loosely: this module does not import it)."""

    def __init__(self, ingest: Any) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(_IngestCollector(ingest))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _IngestCollector(Collector):
    def __init__(self, ingest: Any) -> None:
        self.ingest = ingest

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        ingest = self.ingest
        info = InfoMetricFamily("navstream_ingest", "This ingest process: its navstream version.")
        info.add_metric([], {"version": __version__})
        yield info
        yield GaugeMetricFamily(
            "navstream_ingest_start_time_seconds",
            "When the ingest process started (epoch seconds).",
            value=ingest.started_ms / 1000,
        )
        label = ["source"]
        fetches = _counter("navstream_ingest_fetches", "Fetch attempts of each source.", label)
        failures = _counter(
            "navstream_ingest_fetch_failures",
            "Failed fetch attempts of each source, by "
            "kind: timeout (past timeout_s), rate_limited (429/418, or no room in the host's "
            "budget before the deadline), error (anything else).",
            ["source", "kind"],
        )
        events = _counter(
            "navstream_ingest_events_written",
            "Events written to P:events for each source (its source_status events not counted).",
            label,
        )
        write_failures = _counter(
            "navstream_ingest_write_failures",
            "Attempts of each source Redis did not take (kept and retried; a newer attempt supersedes them).",
            label,
        )
        superseded = _counter(
            "navstream_ingest_superseded",
            "Unwritten attempts replaced by a newer one while Redis was unreachable.",
            label,
        )
        last_ok = _gauge(
            "navstream_ingest_last_success_timestamp_seconds",
            "When each source last fetched successfully (epoch seconds; absent before its first success).",
            label,
        )
        unwritten = _gauge("navstream_ingest_unwritten", "1 while a source's newest attempt waits for Redis.", label)
        for name, run in sorted(ingest.runs.items()):
            fetches.add_metric([name], run.attempts)
            for kind in ("timeout", "rate_limited", "error"):
                failures.add_metric([name, kind], run.failure_kinds.get(kind, 0))
            events.add_metric([name], run.events_written)
            write_failures.add_metric([name], run.write_failures)
            superseded.add_metric([name], run.superseded)
            if run.last_ok_ms:
                last_ok.add_metric([name], run.last_ok_ms / 1000)
            unwritten.add_metric([name], 0 if run.unwritten is None else 1)
        yield from (fetches, failures, events, write_failures, superseded, last_ok, unwritten)

        host = ["host"]
        requests = _counter("navstream_ingest_requests", "Requests sent to each venue host.", host)
        limited = _counter(
            "navstream_ingest_rate_limited_answers",
            "Answers 429 (rate limited) and 418 (IP banned) from each host; each blocks the host for every source.",
            ["host", "code"],
        )
        waits = _counter(
            "navstream_ingest_limiter_waits", "Requests that waited for room in the host's weight budget.", host
        )
        waited = _counter(
            "navstream_ingest_limiter_wait_seconds",
            "Time requests spent waiting for room in the host's weight budget.",
            host,
        )
        rejected = _counter(
            "navstream_ingest_limiter_rejections",
            "Requests not sent: the host was blocked or out of budget until after the fetch's deadline.",
            host,
        )
        blocked = _gauge("navstream_ingest_host_blocked", "1 while the host is blocked after a 429 or 418.", host)
        for name, limiter in sorted(ingest.http.limiters.items()):
            requests.add_metric([name], limiter.requests)
            limited.add_metric([name, "429"], getattr(limiter, "too_many", 0))
            limited.add_metric([name, "418"], getattr(limiter, "bans", 0))
            waits.add_metric([name], getattr(limiter, "waits", 0))
            waited.add_metric([name], limiter.waited_s)
            rejected.add_metric([name], limiter.rejections)
            blocked.add_metric([name], 1 if limiter.blocked_until > limiter.clock() else 0)
        yield from (requests, limited, waits, waited, rejected, blocked)
        server = ingest.server
        if server is not None:
            yield CounterMetricFamily(
                "navstream_http_requests",
                "Requests this process's HTTP endpoint received whole.",
                value=server.stats.requests,
            )
