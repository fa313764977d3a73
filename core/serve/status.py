"""What the HTTP endpoint reports about the desk, read cheaply from Redis on request.

Everything here reads keys of the wire contract (docs/contract.md: ``P:state:nav:latest``,
``P:nav``, ``P:state:risk:trading``, ``P:state:source:*``, ``P:alerts``, the heartbeats), never a
plugin's module, so the endpoint works with whatever plugins a deployment loads and shows
nothing it has not. Reads are bounded (a fixed number of round trips, counts capped), so a
page left open or a scraper cannot load Redis more than a few small commands each time.

A stored NAV is read as every reader reads it (:func:`navstream.contract.navread.stale_as_read`): an
``ok`` past its ``fresh_until`` is ``stale`` at the time of the read, whether or not a tick has
re-evaluated it, so ``/api/status``, the status page, ``/readyz`` and ``/metrics`` never show a
NAV fresher than its own age limit allows.

:func:`read_desk` is shared by readiness, ``/metrics`` and ``/api/status``;
:func:`status_document` is the JSON the status page polls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Sequence, cast

from redis.exceptions import RedisError, ResponseError

from navstream.app import App
from navstream.contract.keys import scope_id, unescape_name
from navstream.contract.navread import stale_as_read

#: ``P:nav`` entries read for the history chart (newest first), and points kept per scope.
HISTORY_ENTRIES = 1000
HISTORY_POINTS = 120
ALERTS_SHOWN = 10
#: Caps on what one read looks at, so a runaway producer cannot make a status read large.
MAX_SOURCES = 200
MAX_CONSUMERS = 100
MAX_SCAN_CALLS = 20
MAX_TEXT = 500

NAV_LATEST = "nav:latest"
TRADING = "risk:trading"
SOURCES = "sources"
NAV_STATUSES = ("ok", "stale", "partial", "failed")
TRADING_STATES = ("active", "reducing", "halted")
#: Keys of the risk gate's decision counter that are decisions, not reason codes.
DECISION_KINDS = ("approve", "veto", "repeated")


def scope_name(scope: str, venue: str, account: str) -> str:
    if scope == "account":
        return f"{venue}/{account}"
    return venue if scope == "venue" else scope


SCOPE_ORDER = {"total": 0, "exchange": 1, "venue": 2, "account": 3}


def _clip(text: Any, limit: int = MAX_TEXT) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class NavScope:
    """One scope's latest NAV as ``P:state:nav:latest`` holds it, read at one moment: its
    ``status`` and ``reasons`` are the reader's (see :func:`parse_nav_latest`)."""

    id: str
    scope: str
    name: str
    nav: str
    quote: str
    status: str
    as_of: int
    computed_at: int
    reasons: tuple[str, ...] = ()
    label: str = ""
    #: The first moment an input of it is past its age limit (0: none recorded).
    fresh_until: int = 0
    #: The status the nav plugin stored (``status`` is what a reader takes it for now).
    stored_status: str = ""

    def as_json(self, now_ms: int) -> dict[str, Any]:
        return {"id": self.id, "scope": self.scope, "name": self.name, "label": self.label, "nav": self.nav,
                "quote": self.quote, "status": self.status, "stored_status": self.stored_status,
                "fresh_until": self.fresh_until or None,
                "as_of_age_s": round((now_ms - self.as_of) / 1000, 1) if self.as_of else None,
                "computed_age_s": round((now_ms - self.computed_at) / 1000, 1),
                "reasons": [_clip(r) for r in self.reasons[:5]]}


def parse_nav_latest(member: str, raw: str, now_ms: int) -> NavScope:
    """``"<computed_at> <snapshot JSON>"``, as read at ``now_ms``: a stored ``ok`` past its
    ``fresh_until`` (or without one) is ``stale``, its reason first. ValueError when it is not
    that."""
    _, _, payload = raw.partition(" ")
    data = json.loads(payload)
    if not isinstance(data, dict):
        raise ValueError("the snapshot is not a JSON object")
    scope = str(data.get("scope", ""))
    venue, account = str(data.get("venue", "")), str(data.get("account", ""))
    stored = str(data.get("status", ""))
    fresh_until = int(data.get("fresh_until", 0))
    reasons = tuple(str(r) for r in data.get("reasons", []) or [])
    status = stored
    why = stale_as_read(stored, fresh_until, now_ms)
    if why is not None:
        status, reasons = "stale", (why, *reasons)
    return NavScope(
        id=member, scope=scope, name=scope_name(scope, venue, account), nav=str(data["nav"]),
        quote=str(data.get("quote", "")), status=status,
        as_of=int(data.get("as_of", 0)), computed_at=int(data.get("computed_at", 0)),
        reasons=reasons, label=str(data.get("label", "")), fresh_until=fresh_until, stored_status=stored)


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


@dataclass
class DeskView:
    """What one round of reads saw; ``redis_error`` is set (and the rest empty) if Redis did not answer."""

    read_ms: int
    redis_error: str = ""
    #: stream -> this group's ``XINFO GROUPS`` row, or None when the group does not exist.
    groups: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    nav: list[NavScope] = field(default_factory=list)
    #: Members of ``P:state:nav:latest`` that could not be read, with why.
    nav_unreadable: list[str] = field(default_factory=list)
    sources: list[SourceRow] = field(default_factory=list)
    #: ``[{"scope", "state", "reason", "by", "at"}]``; empty when no trading record exists.
    trading: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, str]] = field(default_factory=list)
    dlq_length: int | None = None


def _trading_rows(raw: Mapping[str, str]) -> list[dict[str, Any]]:
    rows = []
    for member, value in sorted(raw.items()):
        try:
            record = json.loads(value)
            if not isinstance(record, dict):
                raise ValueError("not an object")
            state = str(record.get("state") or "active")  # defaults are left out of the JSON
        except ValueError:
            record, state = {}, "unreadable"
        rows.append({"scope": "desk" if member == "*" else unescape_name(member), "state": state,
                     "reason": _clip(record.get("reason", "")), "by": _clip(record.get("by", ""), 100),
                     "at": record.get("at")})
    return rows


def _source_row(data: Mapping[str, str]) -> SourceRow | None:
    try:
        ts = int(data["ts"])
    except (KeyError, ValueError):
        return None
    return SourceRow(venue=data.get("venue", ""), source=data.get("source", ""), account=data.get("account", ""),
                     ok=data.get("ok") == "true", silent=data.get("silent") == "true", ts=ts,
                     error=_clip(data.get("error", "")))


async def read_desk(app: App, streams: Sequence[str]) -> DeskView:
    """Two round trips: the fixed reads, then one per registered source (pipelined).

    Callers bound the time (``asyncio.wait_for``); a Redis error is recorded, not raised.
    """
    view = DeskView(read_ms=app.clock.now_ms())
    keys = app.keys
    try:
        pipe = app.redis.pipeline(transaction=False)
        pipe.ping()
        for stream in streams:
            pipe.xinfo_groups(stream)
        pipe.hgetall(keys.state(NAV_LATEST))
        pipe.hkeys(keys.state(SOURCES))
        pipe.hgetall(keys.state(TRADING))
        pipe.xrevrange(keys.alerts, count=ALERTS_SHOWN)
        pipe.xlen(keys.dlq)
        results = await pipe.execute(raise_on_error=False)
        _raise_connection_errors(results)
        _, *rest = results
        group_rows, rest = rest[:len(streams)], rest[len(streams):]
        latest, registry, trading, alerts, dlq_length = rest
        for stream, rows in zip(streams, group_rows):
            if isinstance(rows, ResponseError):  # no such key: the stream (and group) is gone
                view.groups[stream] = None
                continue
            view.groups[stream] = next((g for g in rows if g.get("name") == app.group), None)
        for member, raw in sorted(_ok(latest, {}).items()):
            try:
                view.nav.append(parse_nav_latest(member, raw, view.read_ms))
            except (ValueError, KeyError, TypeError) as exc:
                view.nav_unreadable.append(f"{member}: {type(exc).__name__}: {exc}")
        view.nav.sort(key=lambda s: (SCOPE_ORDER.get(s.scope, 9), s.name))
        view.trading = _trading_rows(_ok(trading, {}))
        view.alerts = [{"id": i, **{k: _clip(v) for k, v in f.items()}} for i, f in _ok(alerts, [])]
        view.dlq_length = int(_ok(dlq_length, 0))

        source_keys = sorted(_ok(registry, []))[:MAX_SOURCES]
        if source_keys:
            pipe = app.redis.pipeline(transaction=False)
            for key in source_keys:
                pipe.hgetall(keys.state(key))
            results = await pipe.execute(raise_on_error=False)
            _raise_connection_errors(results)
            for data in results:
                row = _source_row(_ok(data, {}))
                if row is not None:
                    view.sources.append(row)
            view.sources.sort(key=lambda s: (s.venue, s.source, s.account))
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
        pipe.hmget(app.keys.heartbeat(name), ["status", "processed", "health", "health_reasons", "ts"])
    beats = await pipe.execute(raise_on_error=False) if names else []
    _raise_connection_errors(beats)
    out = []
    for name, beat in zip(names, beats):
        status, processed, health, reasons, ts = _ok(beat, [None] * 5)
        out.append({**merged[name], "status": status or "gone", "processed": int(processed or 0),
                    "health": health or "", "health_reasons": _clip(reasons or ""),
                    "heartbeat_ts": int(ts) if ts and ts.isdigit() else None})
    return out


def _raise_connection_errors(results: list[Any]) -> None:
    for item in results:
        if isinstance(item, (ConnectionError, OSError)) or (
                isinstance(item, RedisError) and not isinstance(item, ResponseError)):
            raise item


def _ok(item: Any, default: Any) -> Any:
    """A pipeline result, or ``default`` where the command failed (a key of the wrong type)."""
    return default if isinstance(item, Exception) else item


async def read_history(app: App, entries: int = HISTORY_ENTRIES,
                       points: int = HISTORY_POINTS) -> dict[str, list[list[Any]]]:
    """scope id -> ``[[computed_at, nav, status], ...]`` (oldest first) from the newest ``P:nav`` entries.

    ``P:nav`` holds every scope in one stream, so one ``XREVRANGE`` of the newest entries is
    split by scope: a scope published rarely has fewer points, never a costlier read.
    """
    rows = cast("list[tuple[str, dict[str, str]]]", await app.redis.xrevrange(app.keys.nav, count=entries))
    history: dict[str, list[list[Any]]] = {}
    for _, f in rows:
        sid = scope_id(f.get("scope", ""), f.get("venue", ""), f.get("account", ""))
        series = history.setdefault(sid, [])
        if len(series) >= points:
            continue
        try:
            at = int(f.get("computed_at") or 0)
            float(f["nav"])  # a chart point must be a number; the exact string is what is sent
        except (KeyError, ValueError):
            continue
        series.append([at, f["nav"], f.get("status", "")])
    for series in history.values():
        series.reverse()
    return history


def risk_decisions(app: App) -> dict[str, dict[str, int]] | None:
    """This process's risk decisions so far: ``{"decisions": {approve, veto, repeated},
    "reasons": {code: n}}``, or None when no risk gate runs here.

    Read from the gate's own counter (``app.plugin_state["risk"].decided``, where it counts
    decisions and reason codes together) because ``navstream_health`` reports only the
    approve/veto totals; if the gate ever reports its reason counts there, read them there.
    """
    gate = app.plugin_state.get("risk")
    decided = getattr(gate, "decided", None)
    if not isinstance(decided, Mapping):
        return None
    counts = {str(k): int(v) for k, v in decided.items()}
    return {"decisions": {kind: counts.get(kind, 0) for kind in DECISION_KINDS},
            "reasons": {k: v for k, v in sorted(counts.items()) if k not in DECISION_KINDS}}


def status_document(*, consumer: Mapping[str, Any], ready: bool, reasons: Sequence[str], view: DeskView,
                    history: Mapping[str, list[list[Any]]], consumers: Sequence[Mapping[str, Any]],
                    health: Mapping[str, str],
                    decisions: Mapping[str, Any] | None, risk_loaded: bool) -> dict[str, Any]:
    """The JSON of ``/api/status``: everything the status page draws."""
    now = view.read_ms
    plugins: dict[str, dict[str, str]] = {}
    for key, value in health.items():
        plugin, dot, name = key.partition(".")
        if dot:
            plugins.setdefault(plugin, {})[name] = _clip(value)
    return {
        "generated_ms": now,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1000)),
        "consumer": dict(consumer),
        "ready": ready,
        "reasons": list(reasons),
        "redis_error": view.redis_error,
        "nav": [s.as_json(now) for s in view.nav],
        "history": dict(history),
        "risk": {"loaded": risk_loaded, "trading": view.trading, "decisions": decisions},
        "sources": [{"venue": s.venue, "source": s.source, "account": s.account, "up": s.up, "ok": s.ok,
                     "silent": s.silent, "age_s": round((now - s.ts) / 1000, 1), "error": s.error}
                    for s in view.sources],
        "streams": {stream: None if g is None else {"lag": g.get("lag"), "pending": int(g.get("pending", 0)),
                                                    "consumers": int(g.get("consumers", 0))}
                    for stream, g in view.groups.items()},
        "dlq_length": view.dlq_length,
        "consumers": list(consumers),
        "alerts": view.alerts,
        "plugins": plugins,
    }
