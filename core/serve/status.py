"""What the HTTP endpoint reports about this consumer and its group, read cheaply from Redis.

Everything here reads keys of the wire contract that belong to navstream itself
(docs/contract.md: the input streams' groups, ``P:alerts``, ``P:dlq``, the heartbeats), never a
plugin's: what the plugins know comes through their reporting hooks
(:mod:`navstream.serve.contributions`). Reads are bounded (a fixed number of round trips,
counts capped), so a page left open or a scraper cannot load Redis more than a few small
commands each time.

:func:`read_desk` is shared by readiness, ``/metrics`` and ``/api/status``;
:func:`status_document` is the JSON the status page polls.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError, ResponseError

from navstream.app import App
from navstream.display import active as display_settings
from navstream.serve.contributions import PageReads
from navstream.serve.report import clip as _clip

ALERTS_SHOWN = 10
#: Caps on what one read looks at, so a runaway producer cannot make a status read large.
MAX_CONSUMERS = 100
MAX_SCAN_CALLS = 20
MAX_TEXT = 500


@dataclass
class DeskView:
    """What one round of reads saw; ``redis_error`` is set (and the rest empty) if Redis did not answer."""

    read_ms: int
    redis_error: str = ""
    #: stream -> this group's ``XINFO GROUPS`` row, or None when the group does not exist.
    groups: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    alerts: list[dict[str, str]] = field(default_factory=list)
    dlq_length: int | None = None


async def read_desk(app: App, streams: Sequence[str]) -> DeskView:
    """One round trip: a ``PING``, the group of each stream, the newest alerts, the DLQ's length.

    Callers bound the time (``asyncio.wait_for``); a Redis error is recorded, not raised.
    """
    view = DeskView(read_ms=app.clock.now_ms())
    keys = app.keys
    try:
        pipe = app.redis.pipeline(transaction=False)
        pipe.ping()
        for stream in streams:
            pipe.xinfo_groups(stream)
        pipe.xrevrange(keys.alerts, count=ALERTS_SHOWN)
        pipe.xlen(keys.dlq)
        results = await pipe.execute(raise_on_error=False)
        _raise_connection_errors(results)
        _, *rest = results
        group_rows, (alerts, dlq_length) = rest[: len(streams)], rest[len(streams) :]
        for stream, rows in zip(streams, group_rows, strict=True):
            if isinstance(rows, ResponseError):  # no such key: the stream (and group) is gone
                view.groups[stream] = None
                continue
            view.groups[stream] = next((g for g in rows if g.get("name") == app.group), None)
        view.alerts = [{"id": i, **{k: _clip(v) for k, v in f.items()}} for i, f in _ok(alerts, [])]
        view.dlq_length = int(_ok(dlq_length, 0))
    except (RedisError, OSError) as exc:
        return DeskView(read_ms=view.read_ms, redis_error=f"{type(exc).__name__}: {exc}")
    return view


async def read_consumers(app: App, streams: Sequence[str]) -> list[dict[str, Any]]:
    """The group's consumers with their heartbeats, for the status page.

    Redis lists a consumer in ``XINFO CONSUMERS`` only once it has read an entry, so a replica
    that started on a quiet desk is found by its heartbeat key instead: a ``SCAN`` bounded to
    :data:`MAX_SCAN_CALLS` calls (a huge keyspace shows what was found by then).
    """
    pipe = app.redis.pipeline(transaction=False)
    for stream in streams:
        pipe.xinfo_consumers(stream, app.group)
    infos = await pipe.execute(raise_on_error=False)
    _raise_connection_errors(infos)
    merged: dict[str, dict[str, Any]] = {}
    for rows in infos:
        for info in _ok(rows, []):
            name = str(info["name"])
            row = merged.setdefault(name, {"name": name, "pending": 0, "idle_ms": int(info.get("idle", 0))})
            row["pending"] += int(info.get("pending", 0))
            row["idle_ms"] = min(row["idle_ms"], int(info.get("idle", 0)))
    skip = len(app.keys.heartbeat(""))
    cursor, calls = 0, 0
    while calls < MAX_SCAN_CALLS and len(merged) < MAX_CONSUMERS:
        cursor, found = await app.scan_page(cursor, match=app.keys.heartbeat("*"), count=1000)
        calls += 1
        for key in found:
            name = str(key)[skip:]
            merged.setdefault(name, {"name": name, "pending": 0, "idle_ms": None})
        if cursor == 0:
            break
    names = sorted(merged)[:MAX_CONSUMERS]
    pipe = app.redis.pipeline(transaction=False)
    for name in names:
        pipe.hmget(app.keys.heartbeat(name), ["status", "processed", "health", "health_reasons", "ts", "role"])
    beats = await pipe.execute(raise_on_error=False) if names else []
    _raise_connection_errors(beats)
    out = []
    for name, beat in zip(names, beats, strict=False):
        status, processed, health, reasons, ts, role = _ok(beat, [None] * 6)
        out.append(
            {
                **merged[name],
                "status": status or "gone",
                # what it reads; "all" for a heartbeat from before roles, None without a heartbeat
                "role": role or ("all" if status else None),
                "processed": int(processed or 0),
                "health": health or "",
                "health_reasons": _clip(reasons or ""),
                "heartbeat_ts": int(ts) if ts and ts.isdigit() else None,
            }
        )
    return out


def _raise_connection_errors(results: list[Any]) -> None:
    for item in results:
        if isinstance(item, (ConnectionError, OSError)) or (
            isinstance(item, RedisError) and not isinstance(item, ResponseError)
        ):
            raise item


def _ok(item: Any, default: Any) -> Any:
    """A pipeline result, or ``default`` where the command failed (a key of the wrong type)."""
    return default if isinstance(item, Exception) else item


def status_document(
    *,
    consumer: Mapping[str, Any],
    ready: bool,
    reasons: Sequence[str],
    view: DeskView,
    consumers: Sequence[Mapping[str, Any]],
    health: Mapping[str, str],
    page: PageReads,
) -> dict[str, Any]:
    """The JSON of ``/api/status``: everything the status page draws.

    navstream's own keys, then what the plugins contribute: ``sections`` (each plugin's
    panels, or its error), ``status`` (each plugin's ``navstream_status`` section) and the
    top-level ``fields`` plugins keep for readers of this document (``nav``, ``risk``, ...).
    """
    now = view.read_ms
    shown = display_settings()
    plugins: dict[str, dict[str, str]] = {}
    for key, value in health.items():
        plugin, dot, name = key.partition(".")
        if dot:
            plugins.setdefault(plugin, {})[name] = _clip(value)
    doc: dict[str, Any] = {
        "generated_ms": now,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1000)),
        "consumer": dict(consumer),
        "ready": ready,
        "reasons": list(reasons),
        "redis_error": view.redis_error,
        "streams": {
            stream: None
            if g is None
            else {"lag": g.get("lag"), "pending": int(g.get("pending", 0)), "consumers": int(g.get("consumers", 0))}
            for stream, g in view.groups.items()
        },
        "dlq_length": view.dlq_length,
        "consumers": list(consumers),
        "alerts": view.alerts,
        "plugins": plugins,
        # how the page shows money, the CLI's way: decimals per quote currency ([display])
        "display": {"decimals": shown.decimals, "currency_decimals": shown.table()},
    }
    errors = list(page.errors)
    for plugin, fields in page.fields.items():
        for key, value in fields.items():
            if key in doc or key in ("sections", "status", "report_errors"):
                errors.append(f"plugin {plugin!r}: field {key!r} of /api/status is taken; left out")
                continue
            doc[key] = value
    doc["sections"] = page.sections
    doc["status"] = page.status
    doc["report_errors"] = errors
    return doc
