"""What source_monitor reports through navstream's reporting hooks: the sources table on the
status page (and ``sources`` in ``/api/status``), and ``navstream_source_up`` and
``navstream_source_report_age_seconds`` on ``/metrics``.

Read from the registry of sources (``P:state:sources``) and each source's state hash
(``P:state:source:...``), in two round trips; at most :data:`MAX_SOURCES` sources.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from navstream import (
    AppProtocol,
    Cell,
    Column,
    Metric,
    Panel,
    Row,
    StatusSection,
    Table,
    gauge_family,
    hookimpl,
)

#: The hash whose fields are the state keys of every source reported (source_monitor's REGISTRY).
REGISTRY = "sources"
MAX_SOURCES = 200
MAX_TEXT = 500


@dataclass(frozen=True)
class SourceRow:
    venue: str
    source: str
    account: str
    ok: bool
    silent: bool
    ts: int
    error: str = ""

    @property
    def up(self) -> bool:
        return self.ok and not self.silent

    def as_json(self, now_ms: int) -> dict[str, Any]:
        return {
            "venue": self.venue,
            "source": self.source,
            "account": self.account,
            "up": self.up,
            "ok": self.ok,
            "silent": self.silent,
            "age_s": round((now_ms - self.ts) / 1000, 1),
            "error": self.error,
        }


def source_row(data: Mapping[str, str]) -> SourceRow | None:
    """A source's state hash as a row; None when it has no valid ``ts`` (nothing reported yet)."""
    try:
        ts = int(data["ts"])
    except (KeyError, ValueError):
        return None
    error = data.get("error", "")
    return SourceRow(
        venue=data.get("venue", ""),
        source=data.get("source", ""),
        account=data.get("account", ""),
        ok=data.get("ok") == "true",
        silent=data.get("silent") == "true",
        ts=ts,
        error=error if len(error) <= MAX_TEXT else error[:MAX_TEXT] + "...",
    )


async def read_sources(app: AppProtocol) -> list[SourceRow]:
    keys = sorted(cast("list[str]", await app.redis.hkeys(app.keys.state(REGISTRY))))[:MAX_SOURCES]
    if not keys:
        return []
    pipe = app.redis.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(app.keys.state(key))
    rows = []
    for data in await pipe.execute(raise_on_error=False):
        row = source_row({} if isinstance(data, Exception) else data)
        if row is not None:
            rows.append(row)
    return sorted(rows, key=lambda s: (s.venue, s.source, s.account))


def _ago_s(now_ms: int, ts: int) -> float:
    return round((now_ms - ts) / 1000, 1)


def panel(rows: list[SourceRow], now_ms: int) -> Panel:
    table = Table(
        id="sources-table",
        columns=[Column("source"), Column("state"), Column("last report", num=True), Column("error")],
        rows=[
            Row(
                key=f"{s.venue}/{s.source}/{s.account}",
                cells=[
                    Cell(f"{s.venue}/{s.source}" + (f"/{s.account}" if s.account else "")),
                    Cell(
                        "up" if s.up else ("silent" if s.silent else "failing"),
                        badge="source",
                        tone="ok" if s.up else "critical",
                    ),
                    Cell(ago=True, age_s=_ago_s(now_ms, s.ts), num=True),
                    Cell(s.error, wrap=True),
                ],
            )
            for s in rows
        ],
        empty="No source has reported (no source_status events yet).",
    )
    return Panel(id="sources-section", title="Sources", blocks=[table])


class SourceMonitorReport:
    """source_monitor's reporting hook implementations, mixed into its plugin class."""

    @hookimpl
    async def navstream_status_page(self, app: AppProtocol, now_ms: int) -> StatusSection:
        rows = await read_sources(app)
        return StatusSection(panels=[panel(rows, now_ms)], fields={"sources": [s.as_json(now_ms) for s in rows]})

    @hookimpl
    async def navstream_metrics(self, app: AppProtocol, now_ms: int) -> list[Metric]:
        labels = ["venue", "source", "account"]
        up = gauge_family("navstream_source_up", "1 when the source's last report was ok and it is not silent.", labels)
        age = gauge_family("navstream_source_report_age_seconds", "Time since the source last reported.", labels)
        for s in await read_sources(app):
            up.add_metric([s.venue, s.source, s.account], 1 if s.up else 0)
            age.add_metric([s.venue, s.source, s.account], (now_ms - s.ts) / 1000)
        return [up, age]
