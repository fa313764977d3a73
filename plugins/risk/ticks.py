"""What the risk gate does on every tick: follow drawdown, report the audit log's shortfall,
prune what it keeps per order and the orders in flight that no decision counts any more."""

from __future__ import annotations

import logging
import time

import msgspec

from navstream import AppProtocol, Outputs, as_str_list
from navstream.plugins.nav.api import Snapshot, StateError, as_read, parse_positions, positions_key, read_latest

from . import ops
from .audit import AuditStats
from .config import RiskConfig
from .gate import Gate
from .inflight import InFlight, counts
from .state import (
    DECIDED,
    DECISIONS,
    DESK,
    INFLIGHT_ACCOUNTS,
    REUSED,
    REUSED_AT,
    VENUES,
    WINDOW_MS,
    InFlightCache,
    account_member,
    approved_key,
    compare_and_set,
    decode_inflight,
    forget_inflight,
    inflight_key,
    observed_at,
    read_records,
)
from .trading import DRAWDOWN, TradingRecord, follow_nav

#: Decisions stored and forgotten per tick at most (pruning is spread over ticks).
PRUNE_BATCH = 5_000

log = logging.getLogger("navstream.risk")


async def on_tick(app: AppProtocol, cfg: RiskConfig, gate: Gate, now_ms: int, out: Outputs) -> None:
    await follow_drawdown(app, cfg, gate, now_ms, out)
    report_audit(cfg, gate, out)
    await prune(app, cfg, now_ms, gate)


async def follow_drawdown(app: AppProtocol, cfg: RiskConfig, gate: Gate, now_ms: int, out: Outputs) -> None:
    """Store each scope's drawdown state and high-water mark, and remind of trading that
    drawdown reduced or halted until an operator resumes it."""
    records = await read_records(app)
    await restore_vanished(app, gate, records, now_ms, out)
    latest = {sid: as_read(snap, now_ms) for sid, snap in (await read_latest(app)).items()}
    scopes: dict[str, Snapshot] = {
        account_member(s.venue, s.account): s for s in latest.values() if s.scope == "account"
    }
    if "total" in latest:
        scopes[DESK] = latest["total"]
    for member, snap in scopes.items():
        seen, record = records.get(member, ("", TradingRecord()))
        updated = follow_nav(record, snap, cfg, now_ms)
        if updated != record and await compare_and_set(app, member, seen, updated):
            records[member] = ("", updated)
            if updated.state != record.state:
                log.warning(
                    "trading state moved by drawdown",
                    extra={
                        "event": "trading_state_changed",
                        "scope": member,
                        "state": updated.state,
                        "reason": updated.reason,
                    },
                )
    for member, (_, record) in records.items():
        if record.by == DRAWDOWN and record.state != "active":
            where = {} if member == DESK else dict(zip(("venue", "account"), ops.split_member(member)))
            out.alert(
                f"trading_{record.state}",
                "critical" if record.state == "halted" else "warning",
                f"trading of {ops.describe_member(member)} is {record.state}: {record.reason}; "
                "`navstream risk resume` once understood",
                **where,
                subject=member,
                version=str(record.at),
                every_s=cfg.alert_every_s,
            )


async def restore_vanished(
    app: AppProtocol, gate: Gate, records: dict[str, tuple[str, TradingRecord]], now_ms: int, out: Outputs
) -> None:
    """Write back every trading record this consumer saw that Redis no longer holds: data was
    lost (a restart without persistence, a flush), and a halt an operator set must not read as
    "active" because of it. Records are changed by commands (`navstream risk`), never deleted,
    so a vanished one is a loss. A consumer that started after the loss never saw them: the
    limit of this (docs/risk.md)."""
    lost = {member: record for member, record in gate.records.items() if member not in records}
    for member, record in lost.items():
        if await compare_and_set(app, member, "", record):
            records[member] = ("", record)
    if lost:
        where = ", ".join(f"{ops.describe_member(m)} ({r.state})" for m, r in sorted(lost.items()))
        log.critical(
            "trading records vanished from Redis and were written back",
            extra={"event": "trading_records_restored", "scopes": sorted(lost)},
        )
        out.alert(
            "trading_records_restored",
            "critical",
            f"the trading records of {where} vanished from Redis (data lost?) and were written back as "
            "this consumer last saw them; check the trading state with `navstream risk show`",
            version=str(now_ms),
            subject="trading",
            every_s=1,
        )
    gate.records = {member: record for member, (_, record) in records.items()}


def report_audit(cfg: RiskConfig, gate: Gate, out: Outputs) -> None:
    stats: AuditStats = gate.audit.stats
    short = stats.dropped + stats.failed
    if short > gate.reported:
        out.alert(
            "audit_shortfall",
            "critical",
            f"risk audit log {gate.audit.path} is missing {short - gate.reported} decisions "
            f"({stats.dropped} dropped by a full queue, {stats.failed} refused by the disk in all; "
            f"last error: {stats.last_error or 'none'}); decisions on P:decisions are complete",
        )
        gate.reported = short
        gate.short_at = time.monotonic()


async def prune(app: AppProtocol, cfg: RiskConfig, now_ms: int, gate: Gate | None = None) -> None:
    """Forget decisions past their retention, approvals past the rate window, and orders in
    flight once a position update covers them or ``open_order_ttl_s`` passed."""
    keys = app.keys
    horizon = now_ms - cfg.decision_retention_s * 1000
    old = await app.redis.zrangebyscore(keys.state(DECIDED), "-inf", horizon, start=0, num=PRUNE_BATCH)
    old_reused = await app.redis.zrangebyscore(keys.state(REUSED_AT), "-inf", horizon, start=0, num=PRUNE_BATCH)
    venues = as_str_list(await app.redis.hvals(keys.state(VENUES)))
    pipe = app.redis.pipeline(transaction=True)
    if old:
        pipe.hdel(keys.state(DECISIONS), *old)
        pipe.zrem(keys.state(DECIDED), *old)
    if old_reused:
        pipe.hdel(keys.state(REUSED), *old_reused)
        pipe.zrem(keys.state(REUSED_AT), *old_reused)
    for venue in venues:
        pipe.zremrangebyscore(keys.state(approved_key(venue)), "-inf", now_ms - 2 * WINDOW_MS)
    if old or old_reused or venues:
        await pipe.execute()
    await prune_inflight(app, cfg, now_ms, gate.inflight if gate is not None else None)


async def prune_inflight(app: AppProtocol, cfg: RiskConfig, now_ms: int, cache: InFlightCache | None = None) -> None:
    """Drop each account's orders in flight that no decision counts any more (see
    :func:`.inflight.counts`), each only if it still holds what was read. An entry that cannot
    be read stays: it keeps the account's orders vetoed (``state_unreadable``) until someone
    looks. ``cache`` saves decoding what a batch or an earlier tick decoded."""
    keys = app.keys
    cache = cache if cache is not None else InFlightCache()
    accounts = [_pair.decode(raw) for raw in (await app.redis.hvals(keys.state(INFLIGHT_ACCOUNTS)))]
    if not accounts:
        return
    pipe = app.redis.pipeline(transaction=True)
    for venue, account in accounts:
        pipe.hgetall(keys.state(inflight_key(venue, account)))
        pipe.hgetall(keys.state(*positions_key(venue, account)))
    replies = await pipe.execute()
    ttl = cfg.open_order_ttl_ms
    pipe = app.redis.pipeline(transaction=False)
    done: dict[str, dict[str, str]] = {}
    for n, (venue, account) in enumerate(accounts):
        raw_inflight, raw_positions = replies[2 * n], replies[2 * n + 1]
        where = inflight_key(venue, account)
        if not raw_inflight:  # untracked only if still empty: a batch may have just approved one
            cache.forget(where)
            pipe.eval(
                FORGET_EMPTY_LUA, 2, keys.state(INFLIGHT_ACCOUNTS), keys.state(where), account_member(venue, account)
            )
            continue
        try:
            seen = {
                symbol: observed_at(ts, p) for symbol, (ts, p) in parse_positions(venue, account, raw_positions).items()
            }
        except StateError:
            seen = {}
        try:
            flying = cache.decode(where, raw_inflight)
        except StateError:  # one unreadable: the readable ones, one by one
            flying = [(m, v, o) for m, v in raw_inflight.items() if (o := _readable(where, m, v)) is not None]
        for member, raw, o in flying:
            if not counts(o.at, seen.get(o.symbol), now_ms, ttl):
                done.setdefault(where, {})[member] = raw
    if len(pipe):
        await pipe.execute()
    if done:
        cache.discard(done)
        await forget_inflight(app, done)


def _readable(where: str, member: str, raw: str) -> InFlight | None:
    try:
        return decode_inflight(where, member, raw)
    except StateError:
        return None


_pair = msgspec.json.Decoder(tuple[str, str])
# KEYS[1] the accounts hash, KEYS[2] the account's in-flight hash, ARGV[1] the account's member.
FORGET_EMPTY_LUA = """
if redis.call('HLEN', KEYS[2]) == 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""
