"""The docs and the metrics cannot drift: every metric name the docs' PromQL uses (the
``promql`` blocks and the marked rules files, tests/support/docs_promql.py) and every metric in their
tables is exported by a running consumer or ingest process, and every navstream metric those
export is in a table of docs/observability.md. (``.ci/promtool.sh`` checks the same PromQL's
syntax with promtool.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from support.docs_promql import DOCS, ROOT, blocks, expressions, metric_names, rule_expressions
from support.ingest import answers, build
from support.serving import SECTIONS, Sink, desk_events, order, serving, until

from navstream.serve.ingest_metrics import IngestMetrics

OBSERVABILITY = ROOT / "docs" / "observability.md"


def exported(text: str) -> tuple[set[str], set[str]]:
    """(every name a query may use: sample names, and the names a family's samples take even
    when it has none yet; the family names as the docs' tables list them)."""
    usable: set[str] = set()
    families: set[str] = set()
    for family in text_string_to_metric_families(text):
        name = family.name
        families.add(name + "_total" if family.type == "counter" else name)
        usable.add(name)
        usable |= {s.name for s in family.samples}
        if family.type == "counter":
            usable.add(name + "_total")
        if family.type == "histogram":
            usable |= {name + suffix for suffix in ("_bucket", "_sum", "_count")}
        if family.type == "info":
            usable.add(name + "_info")
            families.add(name + "_info")
    return usable, families


def documented_names() -> dict[str, str]:
    """Metric name -> where the docs use it: PromQL blocks, rules files, and table rows."""
    names: dict[str, str] = {}
    for block in blocks():
        exprs = (
            expressions(block) if block.kind == "promql" else rule_expressions(block) if block.kind == "rules" else []
        )
        for expr in exprs:
            for name in metric_names(expr):
                names.setdefault(name, block.where)
    for path in DOCS:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.startswith("| `navstream_") and "(fixture)" not in line.split("|")[1]:  # not a metric
                for name in re.findall(r"`(navstream_[a-z0-9_]+)`", line.split("|")[1]):
                    names.setdefault(name, f"{path.relative_to(ROOT)}:{n}")
    return names


def table_names() -> set[str]:
    out = set()
    for line in OBSERVABILITY.read_text().splitlines():
        if line.startswith("| `navstream_"):
            out |= set(re.findall(r"`(navstream_[a-z0-9_]+)`", line.split("|")[1]))
    return out


def test_the_docs_mark_their_promql() -> None:
    found = blocks()
    assert {b.kind for b in found} == {"promql", "rules", "config"}
    names = documented_names()
    for expected in ("navstream_stream_lag", "navstream_events_processed_total", "navstream_ingest_fetches_total"):
        assert expected in names
    assert metric_names(
        'max by (stream) (navstream_stream_lag{stream="navstream_x"}) > 0 and '
        "rate(process_cpu_seconds_total[5m]) > histogram_quantile(0.9, x)"
    ) == {"navstream_stream_lag", "process_cpu_seconds_total"}


async def test_every_metric_the_docs_name_is_exported(make_app: Any, tmp_path: Path, fake_backend: Any) -> None:
    sections = {**SECTIONS, "risk": {**SECTIONS["risk"], "audit_dir": str(tmp_path)}}
    app = make_app(
        builtins=True,
        plugins=[("sink", Sink())],
        extra=sections,
        consumer={"block_ms": 5, "claim_idle_ms": 40, "tick_ms": 50},
    )
    async with serving(app) as (_, client):
        for fields in desk_events():
            await app.redis.xadd(app.keys.events, fields)
        await until(lambda: app.stats.processed >= 5, what="the events")
        await app.redis.xadd(app.keys.orders, order("o-1", "0.1"))
        await until(lambda: app.stats.processed >= 6, what="the order")
        await until(lambda: app.stats.lag.get(app.keys.events) == 0, what="a tick")
        consumer_text = (await client.get("/metrics")).text

    ingest = build(
        fake_backend,
        {"cg": {"kind": "fake-prices", "prices": {"BTC": "1"}}, "venue": {"kind": "stub-http", "timeout_s": 5}},
        0,
        answers([]),
    )
    try:
        await ingest.run_once()
        ingest_text = IngestMetrics(ingest).render().decode()
    finally:
        await ingest.aclose()
        await ingest.redis.aclose()

    usable_c, families_c = exported(consumer_text)
    usable_i, families_i = exported(ingest_text)
    usable = usable_c | usable_i
    missing = {name: where for name, where in documented_names().items() if name not in usable}
    assert not missing, f"the docs name metrics nothing exports: {missing}"

    documented = table_names()
    undocumented = sorted(n for n in families_c | families_i if n.startswith("navstream_") and n not in documented)
    assert not undocumented, f"exported but not in docs/observability.md's tables: {undocumented}"
