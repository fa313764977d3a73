"""Built-in plugin ``source_monitor``: every ingestor's health, visible and alerted.

Ingestors send a ``source_status`` event after every fetch attempt. This plugin keeps the latest
per (venue, source, account) in ``P:state:source:...``, raises ``source_failed`` when a source
starts failing and ``source_recovered`` when it comes back, and ``source_silent`` when it has
not reported for ``[source_monitor] max_silence_s``: a source that stopped trying is as broken as
one that fails, and the old system's mtime-based freshness never noticed either.

Redis is the only truth, because the consumers of a group share the work and any of them may
get a source's next report. A batch reads the state hashes of the sources it touches (one
pipeline) and judges each report against them and against the batch's earlier reports, in
``ts`` order; a report older than the one Redis holds, or the very report it holds (same ``ts``
and ``ok``: a duplicate), is ignored. Every source is registered in the hash
``P:state:sources``, so each consumer's tick reads all of them (no SCAN) and judges silence from
each hash's own ``ts``; it marks a source silent with that ``ts`` as guard, so a report that
arrived meanwhile wins. Nothing is kept in memory between calls, so nothing is taken as done
before it is written: a batch or tick whose write fails leaves Redis as it was, and is judged
again from it when redelivered or on the next tick.

Consumers handling one source at the same moment judge against what Redis held before either
wrote: both may raise the same alert (a repeat, accepted), or a flip seen by one hides the next
flip from the other (failed in one batch, back in the other's: the second is judged against the
state before the first). Hence ``P:state:source_alerts``, the code of the last alert raised per
source, written with the alert: every tick compares it with the state and raises what is
missing (``source_recovered`` when the last word was failed or silent but the source is fine,
``source_failed`` or ``source_silent`` the other way round). An alert may come twice; it does
not go missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from navstream import AppProtocol, Event, Outputs, RegisterSection, SourceStatus, as_str_list, hookimpl

from .report import SourceMonitorReport

SECTION = "source_monitor"
STATE_PREFIX = "source"
#: State hash ``P:state:sources``: ``<source key> -> "1"`` for every source ever reported.
REGISTRY = "sources"
#: State hash ``P:state:source_alerts``: ``<source key> -> `` code of the last alert raised for it.
ALERTED = "source_alerts"
#: Last alerts that say a source is not fine (no alert yet means fine).
BAD = ("source_failed", "source_silent")
READ_HELD_LUA = """
local rows = {}
for i, key in ipairs(KEYS) do rows[i] = redis.call('HMGET', key, 'ts', 'ok', 'silent') end
return rows
"""


class SourceMonitorConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: A source that has not reported for this long is alerted as silent. Cannot be disabled.
    max_silence_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 120.0


@dataclass(slots=True)
class Held:
    """A source's state as Redis holds it, or will once this batch is written."""

    ts: int
    ok: bool
    silent: bool

    @property
    def healthy(self) -> bool:
        return self.ok and not self.silent

    @classmethod
    def parse(cls, values: Sequence[str | None]) -> Held | None:
        """From ``HMGET key ts ok silent``."""
        ts, ok, silent = values
        if ts is None:
            return None
        return cls(int(ts), ok == "true", silent == "true")


def _key(venue: str, source: str, account: str | None) -> str:
    return f"{STATE_PREFIX}:{venue}:{source}:{account or '*'}"


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _where(key: str, data: Mapping[str, str]) -> dict[str, str | None]:
    """An alert's venue, source and account: the hash's fields, else the key's parts."""
    _, venue, source, account = key.split(":", 3)
    return {
        "venue": data.get("venue") or venue,
        "source": data.get("source") or source,
        "account": data.get("account") or (None if account == "*" else account),
    }


def _alert(out: Outputs, key: str, where: Mapping[str, str | None], code: str, message: str) -> None:
    out.alert(
        code,
        "info" if code == "source_recovered" else "warning",
        message,
        venue=where["venue"],
        source=where["source"],
        account=where["account"],
    )
    out.hset(ALERTED, {key: code})


def _failed(out: Outputs, key: str, where: Mapping[str, str | None], error: str | None) -> None:
    _alert(
        out,
        key,
        where,
        "source_failed",
        f"source {where['source']} of {where['venue']} failed: {error or 'no error given'}",
    )


def _recovered(out: Outputs, key: str, where: Mapping[str, str | None]) -> None:
    _alert(out, key, where, "source_recovered", f"source {where['source']} of {where['venue']} is reporting ok again")


def _silent(out: Outputs, key: str, where: Mapping[str, str | None], age_ms: int, limit_ms: int) -> None:
    _alert(
        out,
        key,
        where,
        "source_silent",
        f"source {where['source']} of {where['venue']} has not reported for {age_ms // 1000}s "
        f"(limit {limit_ms // 1000}s)",
    )


async def _read(app: AppProtocol, keys: Sequence[str], *, alerted: bool = False) -> list[dict[str, str]]:
    """The state hashes of ``keys`` as one snapshot, then (if asked) the last alert per source."""
    pipe = app.redis.pipeline(transaction=True)
    for key in keys:
        pipe.hgetall(app.keys.state(key))
    if alerted:
        pipe.hgetall(app.keys.state(ALERTED))
    return list(await pipe.execute()) if keys or alerted else []


async def _sources(app: AppProtocol) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Every registered source's state hash, and the last alert per source."""
    keys = sorted(as_str_list(await app.redis.hkeys(app.keys.state(REGISTRY))))
    *hashes, alerted = await _read(app, keys, alerted=True)
    return dict(zip(keys, hashes)), alerted


async def register_existing(app: AppProtocol) -> None:
    """Register every source hash already in Redis (written before the registry existed, or
    dropped from it), so that the ticks watch it for silence."""
    skip = len(app.keys.state(REGISTRY)) - len(REGISTRY)  # strip ``P:state:``
    found = [
        key[skip:]
        async for key in app.redis.scan_iter(match=app.keys.state(STATE_PREFIX, "*"), count=500, _type="hash")
    ]
    if found:
        await app.redis.hset(app.keys.state(REGISTRY), mapping=dict.fromkeys(found, "1"))


async def on_events(app: AppProtocol, reader: Any, events: Sequence[Event], out: Outputs) -> None:
    reports = sorted((e for e in events if isinstance(e, SourceStatus)), key=lambda e: e.ts)
    if not reports:
        return
    keys = list(dict.fromkeys(_key(e.venue, e.source, e.account) for e in reports))
    # One command for all of them (redis-py's cost is per command), and only the fields judged.
    rows = await reader(keys=[app.keys.state(k) for k in keys])
    held = {key: Held.parse(values) for key, values in zip(keys, rows)}
    new = [key for key, seen in held.items() if seen is None]
    if new:  # a source's hash and its registration are written together, in one batch write
        out.hset(REGISTRY, dict.fromkeys(new, "1"))
    stamps: dict[str, dict[str, str]] = {}  # last_ok_ts / last_error_ts set by this batch
    for event in reports:
        key = _key(event.venue, event.source, event.account)
        seen = held[key]
        if seen is not None and (event.ts < seen.ts or (event.ts == seen.ts and event.ok == seen.ok)):
            continue  # older than the report Redis holds, or that very report again
        was_ok = seen.healthy if seen is not None else True
        where = {"venue": event.venue, "source": event.source, "account": event.account}
        if not event.ok and was_ok:
            _failed(out, key, where, event.error)
        elif event.ok and not was_ok:
            _recovered(out, key, where)
        mine = stamps.setdefault(key, {})
        mine["last_ok_ts" if event.ok else "last_error_ts"] = str(event.ts)
        fields = {
            "ok": _flag(event.ok),
            "error": event.error or "",
            "venue": event.venue,
            "source": event.source,
            "silent": "false",
            **mine,
        }
        if event.account:
            fields["account"] = event.account
        out.put_latest(key, event.ts, fields)
        held[key] = Held(event.ts, event.ok, silent=False)


async def on_tick(app: AppProtocol, now_ms: int, out: Outputs) -> None:
    limit_ms = int(app.plugin_config(SECTION, SourceMonitorConfig).max_silence_s * 1000)
    sources, alerted = await _sources(app)
    for key, data in sources.items():
        if "ts" not in data:
            continue
        ts, silent, ok = int(data["ts"]), data.get("silent") == "true", data.get("ok") == "true"
        told_bad = alerted.get(key) in BAD
        if not silent and now_ms - ts > limit_ms:
            _silent(out, key, _where(key, data), now_ms - ts, limit_ms)
            # Applies only while the hash still holds this `ts`: a report that came meanwhile wins.
            out.put_latest(key, ts, {"silent": "true"})
        # Below, a state that the last alert contradicts: consumers raced on the source.
        elif silent and not told_bad:
            _silent(out, key, _where(key, data), now_ms - ts, limit_ms)
        elif not ok and not told_bad:
            _failed(out, key, _where(key, data), data.get("error"))
        elif ok and not silent and told_bad:
            _recovered(out, key, _where(key, data))


async def status_section(app: AppProtocol) -> dict[str, Any]:
    now = app.clock.now_ms()
    sources = []
    for data in (await _sources(app))[0].values():
        if "ts" not in data:
            continue
        sources.append(
            {
                "venue": data.get("venue", ""),
                "source": data.get("source", ""),
                "account": data.get("account", ""),
                "ok": data.get("ok") == "true",
                "silent": data.get("silent") == "true",
                "age_s": round((now - int(data["ts"])) / 1000, 1),
                "error": data.get("error", ""),
            }
        )
    sources.sort(key=lambda s: (s["venue"], s["source"], s["account"]))
    return {"sources": sources}


class SourceMonitorPlugin(SourceMonitorReport):
    """The plugin object: one per application, holding its registered read script."""

    def __init__(self) -> None:
        self.reader: Any = None  # the registered READ_HELD_LUA, made on first use

    @hookimpl
    def navstream_config_sections(self, register: RegisterSection) -> None:
        register(SECTION, SourceMonitorConfig)

    @hookimpl
    async def navstream_startup(self, app: AppProtocol) -> None:
        await register_existing(app)

    @hookimpl
    async def navstream_events(self, app: AppProtocol, events: Sequence[Event], out: Outputs) -> None:
        if self.reader is None:
            self.reader = app.redis.register_script(READ_HELD_LUA)
        await on_events(app, self.reader, events, out)

    @hookimpl
    async def navstream_tick(self, app: AppProtocol, now_ms: int, out: Outputs) -> None:
        await on_tick(app, now_ms, out)

    @hookimpl
    async def navstream_status(self, app: AppProtocol) -> dict[str, Any]:
        return await status_section(app)
