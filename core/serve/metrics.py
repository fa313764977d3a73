"""``/metrics``: the consumer's numbers in the Prometheus text format, through prometheus_client.

Each consumer gets its own :class:`~prometheus_client.CollectorRegistry` (never the library's
global one), so tests and several apps in one process do not clash. Almost everything is
computed when scraped, from what the consumer already keeps (``app.stats``, the heartbeat's
figures, the plugins' ``navstream_health``), one :class:`~navstream.serve.status.DeskView` of
cheap Redis reads, and the families plugins contribute at scrape time (``navstream_metrics``,
gathered by :mod:`navstream.serve.contributions`); the two things that must be observed as
they happen, the batch latency histogram and entries failed by type, are fed by
:meth:`Metrics.observe_batch` (the loop's observer calls it for each finished batch).

Every count is a real counter (``_total``, type ``counter``), never a number inside a gauge, so
``rate()`` and ``increase()`` work and survive restarts; gauges are only values "as of now".
No ``_created`` series: every family is built here (none of prometheus_client's stateful
``Counter``/``Histogram``, which add one per series; its ``disable_created_metrics()`` is
process-global and would reach other registries).

The metric names, labels and meanings are listed in docs/observability.md (keep in step;
tests/serve/test_metrics_docs.py checks that every name its PromQL uses is exported).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from navstream.app import App
from navstream.contract.events import EVENT_TYPES
from navstream.loop.entries import Entry
from navstream.serve.contributions import MetricReads
from navstream.serve.probes import plugin_problems
from navstream.serve.status import DeskView
from navstream.version import __version__

#: The ``type`` label's values: the contract's types; anything a producer invents is ``other``
#: (a label per invented type would let one bad producer grow the series without bound).
KNOWN_TYPES = frozenset(EVENT_TYPES) | {"order"}
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Numbers plugins report in ``navstream_health`` are exported as ``navstream_plugin_counter_total``
#: when they are running counts (a key ending in ``_total``, or one the plugin names in
#: :attr:`~navstream.serve.report.PluginMetrics.health_counters`), else as
#: ``navstream_plugin_health_value``; a plugin's ``health_hidden`` keys are not exported there.


@dataclass(frozen=True)
class Scrape:
    """What one scrape reports beyond ``app.stats``: gathered by the endpoint, then rendered."""

    view: DeskView
    health: Mapping[str, str]
    ready: bool
    #: The HTTP server's own counters (an :class:`~navstream.serve.http.HttpStats`), when it runs.
    http: Any = None
    #: What the plugins contribute (``navstream_metrics``).
    plugins: MetricReads = field(default_factory=MetricReads)


def entry_type(entry: Entry, orders_stream: str) -> str:
    if entry.stream == orders_stream:
        return "order"
    fields: Mapping[Any, Any] = entry.fields
    raw = fields.get(b"type", fields.get("type", b""))
    kind = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return kind if kind in KNOWN_TYPES else "other"


class Buckets:
    """A histogram's state, exported as a family without ``_created``."""

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...]) -> None:
        self.name, self.doc, self.bounds = name, doc, buckets
        self.counts = [0] * len(buckets)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1

    def family(self) -> HistogramMetricFamily:
        pairs = zip(self.bounds, self.counts, strict=True)
        buckets = [(floatToGoString(b), n) for b, n in pairs] + [("+Inf", self.count)]
        return HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=self.sum)


class Metrics:
    """One consumer's registry: its own collectors, the process's, and the batch observations."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.registry = CollectorRegistry()
        self.batch_duration = Buckets(
            "navstream_batch_duration_seconds",
            "Time to handle one batch: decode, plugins, write, acknowledge.",
            BATCH_BUCKETS,
        )
        #: Entries not processed, by type (see :meth:`observe_batch`).
        self.events_failed: Tally[str] = Tally()
        #: Failed ``navstream_metrics`` calls and refused families, by plugin.
        self.report_errors: Tally[str] = Tally()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._desk = _DeskCollector(app, self)
        self.registry.register(self._desk)

    def observe_batch(self, entries: Sequence[Entry], seconds: float, processed: Mapping[str, int]) -> None:
        """One handled batch: its duration, and its entries not in ``processed`` (type -> count)."""
        self.batch_duration.observe(seconds)
        if sum(processed.values()) >= len(entries):
            return
        attempted = Tally(entry_type(e, self.app.keys.orders) for e in entries)
        for kind, count in attempted.items():
            failed = count - processed.get(kind, 0)
            if failed > 0:
                self.events_failed[kind] += failed

    def render(self, scrape: Scrape) -> bytes:
        """The text exposition of everything, with ``scrape`` as the Redis-side view."""
        self._desk.scrape = scrape  # read and reset synchronously: concurrent scrapes cannot mix
        try:
            return generate_latest(self.registry)
        finally:
            self._desk.scrape = None


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


class _DeskCollector(Collector):
    """Computes the families at scrape time from ``app.stats`` and the :class:`Scrape`."""

    def __init__(self, app: App, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.scrape: Scrape | None = None

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time; nothing to check for clashes at registration

    def collect(self) -> Iterable[Metric]:
        """navstream's families, then the plugins' (a name already taken is left out and
        counted as that plugin's reporting error), then the count of those errors."""
        core = list(self._core())
        yield from core
        scrape = self.scrape
        if scrape is None:
            return
        report_errors = self.metrics.report_errors
        for plugin, _ in scrape.plugins.errors:
            report_errors[plugin] += 1
        taken = {f.name for f in core} | {"navstream_plugin_report_errors"}
        for plugin, family in scrape.plugins.families:
            if family.name in taken or family.name.startswith(("process_", "python_")):
                report_errors[plugin] += 1
                continue
            taken.add(family.name)
            yield family
        errors = _counter(
            "navstream_plugin_report_errors",
            "Reporting hook calls of a plugin that failed at "
            "a scrape (raised, ran late, or gave a family name already exported): its families "
            "are missing from that scrape.",
            ["plugin"],
        )
        for plugin, count in sorted(report_errors.items()):
            errors.add_metric([plugin], count)
        yield errors

    def _core(self) -> Iterable[Metric]:
        app, stats = self.app, self.app.stats
        info = InfoMetricFamily("navstream_consumer", "This consumer: its name, group and navstream version.")
        info.add_metric([], {"consumer": app.consumer_name, "group": app.group, "version": __version__})
        yield info
        yield GaugeMetricFamily(
            "navstream_start_time_seconds",
            "When the consumer loop started (epoch seconds).",
            value=stats.started_ms / 1000,
        )

        processed = _counter(
            "navstream_events_processed", "Entries processed and acknowledged, by type (orders as `order`).", ["type"]
        )
        for kind, count in sorted(stats.by_type.items()):
            processed.add_metric([kind], count)
        yield processed
        failed = _counter(
            "navstream_events_failed",
            "Entries a batch did not process: left pending for a "
            "retry, or dead-lettered. A retried entry counts once per failed delivery.",
            ["type"],
        )
        for kind, count in sorted(self.metrics.events_failed.items()):
            failed.add_metric([kind], count)
        yield failed
        yield self.metrics.batch_duration.family()
        for name, value, doc in (
            ("navstream_dead_lettered", stats.dead_lettered, "Entries moved to P:dlq."),
            (
                "navstream_entries_lost",
                stats.lost,
                "Entries deleted or trimmed from an input stream before they were processed.",
            ),
            ("navstream_plugin_errors", stats.plugin_errors, "Plugin hook calls that raised or timed out."),
            (
                "navstream_write_failures",
                stats.write_failures,
                "Batches whose writes Redis refused (nothing acknowledged; retried).",
            ),
            ("navstream_reconnects", stats.reconnects, "Times the loop lost Redis and retried."),
            ("navstream_batches", stats.batches, "Batches handled (new and reclaimed)."),
            (
                "navstream_writes_refused",
                getattr(stats, "writes_refused", 0) or 0,
                "Writes Redis refused (OOM, READONLY, MISCONF), every attempt counted.",
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        since = getattr(stats, "writes_refused_since", None) or 0
        yield GaugeMetricFamily(
            "navstream_writes_refused_since_timestamp_seconds",
            "When Redis began refusing this consumer's writes (epoch seconds); 0 while writes work.",
            value=since / 1000,
        )
        if stats.last_batch_ms:
            yield GaugeMetricFamily(
                "navstream_last_batch_timestamp_seconds",
                "When the last batch was handled (epoch seconds).",
                value=stats.last_batch_ms / 1000,
            )

        lag = _gauge(
            "navstream_stream_lag",
            "Entries of the stream not yet delivered to the group (as of "
            "the last tick; absent while Redis cannot tell).",
            ["stream"],
        )
        for stream, behind in sorted(stats.lag.items()):
            if behind is not None:
                lag.add_metric([stream], behind)
        yield lag
        pending = _gauge(
            "navstream_stream_pending",
            "Entries delivered to the group but not yet acknowledged (as of the last tick).",
            ["stream"],
        )
        for stream, count in sorted(stats.pending.items()):
            pending.add_metric([stream], count)
        yield pending

        scrape = self.scrape
        if scrape is None:
            return
        yield from self._desk(scrape)

    def _desk(self, scrape: Scrape) -> Iterable[Metric]:
        view, stats = scrape.view, self.app.stats
        yield GaugeMetricFamily(
            "navstream_redis_up", "1 when Redis answered this scrape's reads.", value=0 if view.redis_error else 1
        )
        yield GaugeMetricFamily("navstream_ready", "1 when /readyz answers 200.", value=1 if scrape.ready else 0)
        dlq = stats.dlq_length if view.dlq_length is None else view.dlq_length
        yield GaugeMetricFamily("navstream_dlq_length", "Dead letters in P:dlq.", value=dlq)

        healthy = _gauge(
            "navstream_plugin_healthy",
            "1 when the plugin's navstream_health status is ok (sinks, the risk gate's audit log, ...).",
            ["plugin"],
        )
        values = _gauge(
            "navstream_plugin_health_value",
            "Each number a plugin reports in navstream_health "
            "that is a value as of now (queue lengths, budgets, timestamps).",
            ["plugin", "key"],
        )
        counts = _counter(
            "navstream_plugin_counter",
            "Each running count a plugin reports in "
            "navstream_health (writes, failures, audit records, ...), since the process started.",
            ["plugin", "key"],
        )
        unhealthy = {plugin for plugin, _, _ in plugin_problems(scrape.health)}
        reporting: set[str] = set()
        for key, raw in sorted(scrape.health.items()):
            plugin, dot, name = key.partition(".")
            if not dot:
                continue
            reporting.add(plugin)
            if name == "status" or name in scrape.plugins.health_hidden.get(plugin, ()):
                continue
            try:
                number = float(raw)
            except ValueError:
                continue  # text (a reason, a holder's name): in /api/status, not a number
            if name.endswith("_total"):
                counts.add_metric([plugin, name[: -len("_total")]], number)
            elif name in scrape.plugins.health_counters.get(plugin, ()):
                counts.add_metric([plugin, name], number)
            else:
                values.add_metric([plugin, name], number)
        for plugin in sorted(reporting):
            healthy.add_metric([plugin], 0 if plugin in unhealthy else 1)
        yield from (healthy, values, counts)

        http = scrape.http
        if http is not None:
            for name, value, doc in (
                ("navstream_http_requests", http.requests, "Requests this process's HTTP endpoint received whole."),
                (
                    "navstream_http_connections_evicted",
                    http.evicted,
                    "Idle or slow connections closed to make room for a new one at the connection cap.",
                ),
                (
                    "navstream_http_request_timeouts",
                    http.timeouts,
                    "Requests not received whole within the read deadline (answered 408).",
                ),
                (
                    "navstream_http_bad_requests",
                    http.bad_requests,
                    "Requests refused as malformed, too large, or of an unsupported method or version.",
                ),
            ):
                yield CounterMetricFamily(name, doc, value=value)
