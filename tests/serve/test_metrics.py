"""The metrics' shapes (docs/observability.md, "Metrics"): counts are counters, never numbers in
a gauge; the risk gate's repeated answers are not decisions; no ``_created`` series; the batch
histogram. Rendered from :class:`navstream.serve.metrics.Metrics` with a hand-made scrape, and
the plugins' parts gathered through their ``navstream_metrics`` hooks.
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from support import START_MS

from navstream.plugins.firestore.report import FirestoreReport
from navstream.plugins.risk.report import RiskReport
from navstream.serve.contributions import read_metrics
from navstream.serve.http import HttpStats
from navstream.serve.metrics import Metrics, Scrape
from navstream.serve.status import DeskView

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def gate(**decided: int) -> RiskReport:
    """The risk gate's reporting part, with a gate that decided ``decided``."""
    report = RiskReport()
    report.gate = SimpleNamespace(decided=Counter(decided))  # type: ignore[assignment]
    return report


async def render(app: Any, **scrape: Any) -> tuple[Samples, dict[str, str]]:
    metrics = Metrics(app)
    metrics.batch_duration.observe(0.003)
    metrics.batch_duration.observe(0.2)
    metrics.batch_duration.observe(100)
    args = {
        "view": DeskView(read_ms=START_MS),
        "health": {},
        "ready": True,
        "plugins": await read_metrics(app, START_MS, None),
        **scrape,
    }
    text = metrics.render(Scrape(**args)).decode()
    samples, types = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
            types[f"sample:{s.name}"] = family.type
    return samples, types


async def test_risk_decisions_and_repeated_answers_are_separate_counters(make_app: Any) -> None:
    risk = gate(approve=2, veto=1, repeated=4, order_notional=1)
    m, types = await render(make_app(plugins=[("risk", risk)]))
    assert m[("navstream_risk_decisions_total", (("decision", "approve"),))] == 2
    assert m[("navstream_risk_decisions_total", (("decision", "veto"),))] == 1
    assert ("navstream_risk_decisions_total", (("decision", "repeated"),)) not in m
    assert m[("navstream_risk_repeated_answers_total", ())] == 4
    assert m[("navstream_risk_decision_reasons_total", (("reason", "order_notional"),))] == 1
    assert types["navstream_risk_decisions"] == types["navstream_risk_repeated_answers"] == "counter"


async def test_plugin_counts_are_counters_and_values_are_gauges(make_app: Any) -> None:
    health = {
        "risk.status": "ok",
        "risk.approved": "5",
        "risk.vetoed": "1",
        "risk.repeated": "2",
        "risk.audit_written": "8",
        "risk.audit_missing": "0",
        "firestore.status": "degraded",
        "firestore.reason": "quota",
        "firestore.writes": "40",
        "firestore.failures": "3",
        "firestore.pending": "7",
        "firestore.deferred": "2",
        "firestore.writes_today": "900",
        "firestore.holder": "c-1",
        "mine.status": "ok",
        "mine.sent_total": "11",
        "mine.queue": "4",
    }
    app = make_app(plugins=[("risk", gate()), ("firestore", FirestoreReport())])
    m, types = await render(app, health=health)
    counter = "navstream_plugin_counter_total"
    gauge = "navstream_plugin_health_value"
    assert m[(counter, (("key", "audit_written"), ("plugin", "risk")))] == 8
    assert m[(counter, (("key", "writes"), ("plugin", "firestore")))] == 40
    assert m[(counter, (("key", "failures"), ("plugin", "firestore")))] == 3
    assert m[(counter, (("key", "sent"), ("plugin", "mine")))] == 11  # a plugin's own `_total` key
    assert m[(gauge, (("key", "pending"), ("plugin", "firestore")))] == 7
    assert m[(gauge, (("key", "deferred"), ("plugin", "firestore")))] == 2
    assert m[(gauge, (("key", "queue"), ("plugin", "mine")))] == 4
    for key in ("approved", "vetoed", "repeated"):  # navstream_risk_decisions_total has them
        assert not any(name in (counter, gauge) and ("key", key) in labels for name, labels in m)
    assert not any(labels and ("key", "writes") in labels for name, labels in m if name == gauge)
    assert m[("navstream_plugin_healthy", (("plugin", "firestore"),))] == 0
    assert types["navstream_plugin_counter"] == "counter" and types[gauge] == "gauge"


async def test_every_count_is_a_counter_and_nothing_has_created(make_app: Any) -> None:
    app = make_app(plugins=[("risk", gate(approve=1))])
    app.stats.processed, app.stats.dead_lettered, app.stats.batches = 5, 1, 3
    app.stats.by_type.update({"price": 5})
    app.stats.writes_refused = 2  # type: ignore[attr-defined,unused-ignore]
    app.stats.writes_refused_since = START_MS  # type: ignore[attr-defined,unused-ignore]
    m, types = await render(app, http=HttpStats(requests=9, evicted=2, timeouts=1, bad_requests=4))
    assert not [name for name, _ in m if name.endswith("_created")]
    for name, _ in m:
        if name.endswith("_total") and name.startswith("navstream_"):
            assert types[name[: -len("_total")]] == "counter", name
    for name, _ in m:
        if types[f"sample:{name}"] == "counter":
            assert name.endswith("_total"), name
    assert m[("navstream_events_processed_total", (("type", "price"),))] == 5
    assert m[("navstream_dead_lettered_total", ())] == 1
    assert m[("navstream_writes_refused_total", ())] == 2
    assert m[("navstream_writes_refused_since_timestamp_seconds", ())] == START_MS / 1000
    assert m[("navstream_http_connections_evicted_total", ())] == 2
    assert m[("navstream_http_request_timeouts_total", ())] == 1
    assert m[("navstream_http_bad_requests_total", ())] == 4


async def test_writes_working_is_zero(make_app: Any) -> None:
    m, _ = await render(make_app())
    assert m[("navstream_writes_refused_since_timestamp_seconds", ())] == 0


async def test_the_batch_histogram(make_app: Any) -> None:
    m, types = await render(make_app())
    bucket = "navstream_batch_duration_seconds_bucket"
    assert types["navstream_batch_duration_seconds"] == "histogram"
    assert m[(bucket, (("le", "0.001"),))] == 0
    assert m[(bucket, (("le", "0.005"),))] == 1
    assert m[(bucket, (("le", "0.25"),))] == 2
    assert m[(bucket, (("le", "30.0"),))] == 2
    assert m[(bucket, (("le", "+Inf"),))] == 3
    assert m[("navstream_batch_duration_seconds_count", ())] == 3
    assert abs(m[("navstream_batch_duration_seconds_sum", ())] - 100.203) < 1e-9
