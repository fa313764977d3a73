"""``/metrics``: the consumer's numbers in the Prometheus text format, through prometheus_client.

Each consumer gets its own :class:`~prometheus_client.CollectorRegistry` (never the library's
global one), so tests and several apps in one process do not clash. Almost everything is
computed when scraped, from what the consumer already keeps (``app.stats``, the heartbeat's
figures, the plugins' ``navstream_health``) and one :class:`~navstream.statusapi.DeskView` of
cheap Redis reads; the two things that must be observed as they happen, the batch latency
histogram and entries failed by type, are fed by :class:`MeteredBatchHandler`.

The metric names, labels and meanings are listed in docs/observability.md (keep in step).
"""

from __future__ import annotations

from collections import Counter as Tally
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__
from .app import App
from .events import EVENT_TYPES
from .handler import BatchHandler, Entry
from .probes import plugin_problems
from .statusapi import NAV_STATUSES, TRADING_STATES, DeskView

#: The ``type`` label's values: the contract's types; anything a producer invents is ``other``
#: (a label per invented type would let one bad producer grow the series without bound).
KNOWN_TYPES = frozenset(EVENT_TYPES) | {"order"}
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Scrape:
    """What one scrape reports beyond ``app.stats``: gathered by the endpoint, then rendered."""

    view: DeskView
    health: Mapping[str, str]
    ready: bool
    decisions: Mapping[str, Mapping[str, int]] | None


def entry_type(entry: Entry, orders_stream: str) -> str:
    if entry.stream == orders_stream:
        return "order"
    fields: Mapping[Any, Any] = entry.fields
    raw = fields.get(b"type", fields.get("type", b""))
    kind = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return kind if kind in KNOWN_TYPES else "other"


class Metrics:
    """One consumer's registry: its own collectors, the process's, and the batch observations."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.registry = CollectorRegistry()
        self.batch_duration = Histogram(
            "navstream_batch_duration_seconds", "Time to handle one batch: decode, plugins, write, acknowledge.",
            buckets=BATCH_BUCKETS, registry=self.registry)
        self.events_failed = Counter(
            "navstream_events_failed", "Entries a batch did not process: left pending for a retry, or "
            "dead-lettered. A retried entry counts once per failed delivery.", ["type"], registry=self.registry)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._desk = _DeskCollector(app)
        self.registry.register(self._desk)

    def observe_batch(self, entries: list[Entry], seconds: float, processed: Mapping[str, int]) -> None:
        """One handled batch: its duration, and its entries not in ``processed`` (type -> count)."""
        self.batch_duration.observe(seconds)
        if sum(processed.values()) >= len(entries):
            return
        attempted = Tally(entry_type(e, self.app.keys.orders) for e in entries)
        for kind, count in attempted.items():
            failed = count - processed.get(kind, 0)
            if failed > 0:
                self.events_failed.labels(type=kind).inc(failed)

    def render(self, scrape: Scrape) -> bytes:
        """The text exposition of everything, with ``scrape`` as the Redis-side view."""
        self._desk.scrape = scrape  # read and reset synchronously: concurrent scrapes cannot mix
        try:
            return generate_latest(self.registry)
        finally:
            self._desk.scrape = None


class MeteredBatchHandler(BatchHandler):
    """A :class:`BatchHandler` that reports each batch it finishes to :class:`Metrics`.

    Why a subclass: ``app.stats`` keeps only totals and the last batch's duration, and a
    histogram needs every batch; this sees each one (new and reclaimed alike) without the
    handler knowing about metrics.
    """

    def __init__(self, app: App, writer: Any, throttle: Any, metrics: Metrics) -> None:
        super().__init__(app, writer, throttle)
        self.metrics = metrics

    async def handle(self, entries: list[Entry]) -> None:
        stats = self.app.stats
        batches, by_type = stats.batches, dict(stats.by_type)
        await super().handle(entries)
        if stats.batches != batches:
            processed = {k: v - by_type.get(k, 0) for k, v in stats.by_type.items()}
            self.metrics.observe_batch(entries, stats.last_batch_duration_ms / 1000, processed)


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


class _DeskCollector(Collector):
    """Computes the families at scrape time from ``app.stats`` and the :class:`Scrape`."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.scrape: Scrape | None = None

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time; nothing to check for clashes at registration

    def collect(self) -> Iterable[Metric]:
        app, stats = self.app, self.app.stats
        info = InfoMetricFamily("navstream_consumer", "This consumer: its name, group and navstream version.")
        info.add_metric([], {"consumer": app.consumer_name, "group": app.group, "version": __version__})
        yield info
        yield GaugeMetricFamily("navstream_start_time_seconds", "When the consumer loop started (epoch seconds).",
                                value=stats.started_ms / 1000)

        processed = _counter("navstream_events_processed", "Entries processed and acknowledged, by type "
                             "(orders as `order`).", ["type"])
        for kind, count in sorted(stats.by_type.items()):
            processed.add_metric([kind], count)
        yield processed
        for name, value, doc in (
            ("navstream_dead_lettered", stats.dead_lettered, "Entries moved to P:dlq."),
            ("navstream_entries_lost", stats.lost, "Entries deleted or trimmed from an input stream before "
             "they were processed."),
            ("navstream_plugin_errors", stats.plugin_errors, "Plugin hook calls that raised or timed out."),
            ("navstream_write_failures", stats.write_failures, "Batches whose writes Redis refused (nothing "
             "acknowledged; retried)."),
            ("navstream_reconnects", stats.reconnects, "Times the loop lost Redis and retried."),
            ("navstream_batches", stats.batches, "Batches handled (new and reclaimed)."),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        if stats.last_batch_ms:
            yield GaugeMetricFamily("navstream_last_batch_timestamp_seconds",
                                    "When the last batch was handled (epoch seconds).", value=stats.last_batch_ms / 1000)

        lag = _gauge("navstream_stream_lag", "Entries of the stream not yet delivered to the group (as of "
                     "the last tick; absent while Redis cannot tell).", ["stream"])
        for stream, behind in sorted(stats.lag.items()):
            if behind is not None:
                lag.add_metric([stream], behind)
        yield lag
        pending = _gauge("navstream_stream_pending", "Entries delivered to the group but not yet "
                         "acknowledged (as of the last tick).", ["stream"])
        for stream, count in sorted(stats.pending.items()):
            pending.add_metric([stream], count)
        yield pending

        scrape = self.scrape
        if scrape is None:
            return
        yield from self._desk(scrape)

    def _desk(self, scrape: Scrape) -> Iterable[Metric]:
        view, stats = scrape.view, self.app.stats
        yield GaugeMetricFamily("navstream_redis_up", "1 when Redis answered this scrape's reads.",
                                value=0 if view.redis_error else 1)
        yield GaugeMetricFamily("navstream_ready", "1 when /readyz answers 200.", value=1 if scrape.ready else 0)
        dlq = stats.dlq_length if view.dlq_length is None else view.dlq_length
        yield GaugeMetricFamily("navstream_dlq_length", "Dead letters in P:dlq.", value=dlq)

        value = _gauge("navstream_nav_value", "Latest NAV of each scope in its quote currency "
                       "(a float: the exact decimal is in P:state:nav:latest).", ["scope", "quote"])
        age = _gauge("navstream_nav_age_seconds", "Age of the oldest input the scope's NAV rests on.", ["scope"])
        evaluated = _gauge("navstream_nav_evaluation_age_seconds", "Time since the scope's NAV was last "
                           "evaluated (every tick while a consumer runs the nav plugin).", ["scope"])
        status = _gauge("navstream_nav_status", "1 for the scope's current NAV status (ok, stale, partial, "
                        "failed), 0 for the others.", ["scope", "status"])
        now = view.read_ms
        for nav in view.nav:
            try:
                value.add_metric([nav.id, nav.quote], float(nav.nav))
            except ValueError:
                pass
            if nav.as_of:
                age.add_metric([nav.id], (now - nav.as_of) / 1000)
            evaluated.add_metric([nav.id], (now - nav.computed_at) / 1000)
            for name in NAV_STATUSES:
                status.add_metric([nav.id, name], 1 if nav.status == name else 0)
        yield from (value, age, evaluated, status)

        trading = _gauge("navstream_trading_state", "1 for the trading state of each scope with a trading "
                         "record (the desk is `desk`; no record means active).", ["scope", "state"])
        for row in view.trading:
            for name in TRADING_STATES:
                trading.add_metric([row["scope"], name], 1 if row["state"] == name else 0)
        yield trading

        decisions = _counter("navstream_risk_decisions", "Orders this consumer's risk gate answered, by "
                             "decision (approve, veto; repeated: a stored answer given again).", ["decision"])
        reasons = _counter("navstream_risk_decision_reasons", "Reason codes of this consumer's vetoes "
                           "(one veto may carry several).", ["reason"])
        if scrape.decisions is not None:
            for kind, count in scrape.decisions["decisions"].items():
                decisions.add_metric([kind], count)
            for code, count in scrape.decisions["reasons"].items():
                reasons.add_metric([code], count)
        yield from (decisions, reasons)

        up = _gauge("navstream_source_up", "1 when the source's last report was ok and it is not silent.",
                    ["venue", "source", "account"])
        report_age = _gauge("navstream_source_report_age_seconds", "Time since the source last reported.",
                            ["venue", "source", "account"])
        for src in view.sources:
            labels = [src.venue, src.source, src.account]
            up.add_metric(labels, 1 if src.up else 0)
            report_age.add_metric(labels, (now - src.ts) / 1000)
        yield from (up, report_age)

        healthy = _gauge("navstream_plugin_healthy", "1 when the plugin's navstream_health status is ok "
                         "(sinks, the risk gate's audit log, ...).", ["plugin"])
        values = _gauge("navstream_plugin_health_value", "Each number a plugin reports in navstream_health "
                        "(counters and gauges of its own).", ["plugin", "key"])
        unhealthy = {plugin for plugin, _, _ in plugin_problems(scrape.health)}
        reporting: set[str] = set()
        for key, raw in sorted(scrape.health.items()):
            plugin, dot, name = key.partition(".")
            if not dot:
                continue
            reporting.add(plugin)
            if name == "status":
                continue
            try:
                values.add_metric([plugin, name], float(raw))
            except ValueError:
                continue  # text (a reason, a holder's name): in /api/status, not a number
        for plugin in sorted(reporting):
            healthy.add_metric([plugin], 0 if plugin in unhealthy else 1)
        yield from (healthy, values)
