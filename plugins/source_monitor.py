"""Built-in plugin ``source_monitor``: every ingestor's health, visible and alerted.

Ingestors send a ``source_status`` event after every fetch attempt. This plugin keeps the latest
per (venue, source, account) in ``P:state:source:...``, raises ``source_failed`` when a source
starts failing and ``source_recovered`` when it comes back, and ``source_silent`` when it has
not reported for ``[source_monitor] max_silence_s``: a source that stopped trying is as broken as
one that fails, and the old system's mtime-based freshness never noticed either.

Transitions are judged per consumer from its own view (loaded from Redis at startup); with
several consumers an alert may repeat once per consumer, never go missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Sequence

import msgspec

from navstream import App, Event, Outputs, SourceStatus, hookimpl

SECTION = "source_monitor"
STATE_PREFIX = "source"


class SourceMonitorConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: A source that has not reported for this long is alerted as silent. Cannot be disabled.
    max_silence_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 120.0


@dataclass
class SourceView:
    ok: bool
    ts: int
    error: str = ""
    silent: bool = False


def _key(venue: str, source: str, account: str | None) -> str:
    return f"{STATE_PREFIX}:{venue}:{source}:{account or '*'}"


def _views(app: App) -> dict[str, SourceView]:
    return app.plugin_state.setdefault(SECTION, {})


@hookimpl
def navstream_config_sections(register: Any) -> None:
    register(SECTION, SourceMonitorConfig)


@hookimpl
async def navstream_startup(app: App) -> None:
    views = _views(app)
    async for key in app.redis.scan_iter(match=app.keys.state(STATE_PREFIX, "*"), count=500):
        data = await app.redis.hgetall(key)
        if "ts" in data:
            views[key.split(":state:", 1)[1]] = SourceView(ok=data.get("ok") == "true", ts=int(data["ts"]),
                                      error=data.get("error", ""), silent=data.get("silent") == "true")


@hookimpl
def navstream_events(app: App, events: Sequence[Event], out: Outputs) -> None:
    views = _views(app)
    for event in events:
        if not isinstance(event, SourceStatus):
            continue
        key = _key(event.venue, event.source, event.account)
        seen = views.get(key)
        if seen is not None and event.ts < seen.ts:
            continue  # an older report than the one applied: last ts wins
        fields = {"ok": "true" if event.ok else "false", "error": event.error or "",
                  "venue": event.venue, "source": event.source, "silent": "false"}
        if event.account:
            fields["account"] = event.account
        if event.ok:
            fields["last_ok_ts"] = str(event.ts)
        else:
            fields["last_error_ts"] = str(event.ts)
        out.put_latest(key, event.ts, fields)
        where = dict(venue=event.venue, account=event.account, source=event.source)
        was_ok = seen.ok and not seen.silent if seen is not None else True
        if not event.ok and was_ok:
            out.alert("source_failed", "warning",
                      f"source {event.source} of {event.venue} failed: {event.error or 'no error given'}",
                      **where)
        elif event.ok and seen is not None and not was_ok:
            out.alert("source_recovered", "info",
                      f"source {event.source} of {event.venue} is reporting ok again", **where)
        views[key] = SourceView(ok=event.ok, ts=event.ts, error=event.error or "")


@hookimpl
def navstream_tick(app: App, now_ms: int, out: Outputs) -> None:
    limit_ms = int(app.plugin_config(SECTION).max_silence_s * 1000)
    for key, view in _views(app).items():
        age = now_ms - view.ts
        if age > limit_ms and not view.silent:
            view.silent = True
            _, venue, source, account = key.split(":", 3)
            out.hset(key, {"silent": "true"})
            out.alert("source_silent", "warning",
                      f"source {source} of {venue} has not reported for {age // 1000}s "
                      f"(limit {limit_ms // 1000}s)",
                      venue=venue, source=source, account=None if account == "*" else account)


@hookimpl
async def navstream_status(app: App) -> dict[str, Any]:
    now = app.clock.now_ms()
    sources = []
    async for key in app.redis.scan_iter(match=app.keys.state(STATE_PREFIX, "*"), count=500):
        data = await app.redis.hgetall(key)
        if "ts" not in data:
            continue
        sources.append({
            "venue": data.get("venue", ""), "source": data.get("source", ""),
            "account": data.get("account", ""), "ok": data.get("ok") == "true",
            "silent": data.get("silent") == "true", "age_s": round((now - int(data["ts"])) / 1000, 1),
            "error": data.get("error", ""),
        })
    sources.sort(key=lambda s: (s["venue"], s["source"], s["account"]))
    return {"sources": sources}
