"""Built-in plugin ``risk``: the pre-trade gate that fails closed and explains every decision.

Each batch of orders is judged against one instant of Redis (:func:`.state.read_batch_state`):
the nav plugin's latest NAV of the order's account and of the desk, prices, source reports and
positions, the trading records, and the venue's approvals in the last minute. Every order gets
its answer on ``P:decisions`` through ``Outputs.emit_first``: the first decision for an
``order_id`` is stored and repeated on every later delivery, never recomputed. Each decision
also goes, with its inputs and their hash, to this consumer's audit log, written by a
background thread; a shortfall of that log is counted and alerted, never waited for.

Ticks store the drawdown of each NAV against its high-water mark in the trading records
(compare-and-set, so an operator's command is never overwritten unseen), remind of trading that
drawdown reduced or halted, alert on audit shortfalls, and prune what the gate keeps per order.
See docs/risk.md.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import msgspec
from navstream import App, encode_fields, hookimpl, InvalidOrder, Order, Outputs, raw_order_hash
from navstream.plugins.nav.api import NavConfig
from navstream.plugins.nav.api import StateError, parse_positions, positions_key, read_latest
from navstream.plugins.nav.api import Snapshot, as_read, escape

from . import ops
from .audit import AuditLog, AuditStats
from .config import RiskConfig
from .decide import Decision, bad_order, content_hash, vetoed, worst_state
from .inputs import RULES, DecisionInputs, InFlight, RecordingMarket, input_hash, judge
from .state import (
    DECIDED,
    DECISIONS,
    DESK,
    INFLIGHT_ACCOUNTS,
    REUSED,
    REUSED_AT,
    VENUES,
    WINDOW_MS,
    account_member,
    approved_key,
    compare_and_set,
    decode_inflight,
    encode_inflight,
    inflight_key,
    observed_at,
    read_batch_state,
    read_records,
    reused_member,
)
from .trading import DRAWDOWN, TradingRecord, follow_nav

SECTION = "risk"
DECISIONS_STREAM = "decisions"
#: Decisions stored and forgotten per tick at most (pruning is spread over ticks).
PRUNE_BATCH = 5_000

log = logging.getLogger("navstream.risk")


def config(app: App) -> RiskConfig:
    return app.plugin_config(SECTION)  # type: ignore[no-any-return]


def nav_config(app: App) -> NavConfig:
    try:
        return app.plugin_config("nav")  # type: ignore[no-any-return]
    except KeyError:
        raise RuntimeError("the risk gate judges orders by the nav plugin's NAV and prices, and the nav "
                           "plugin is not loaded (is it in [plugins] disabled?)") from None


class AuditRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """One line of the audit log."""

    ts: int
    consumer: str
    order_id: str
    decision: Decision
    #: The order as decoded, and what it was judged against (absent for a bad order).
    order: Order | None = None
    inputs: DecisionInputs | None = None
    input_hash: str = ""
    #: For an order vetoed whatever the rules (bad, reused id, unreadable state): why, and its
    #: fields as received.
    invalid: str = ""
    fields: dict[str, str] = {}
    #: The rules version it was decided under (:data:`.inputs.RULES`); 1 for older records.
    rules: int = 1


def audit_record(record: AuditRecord) -> AuditRecord:
    """Completed in the audit writer's thread: the hash costs the loop nothing."""
    if record.order is not None and record.inputs is not None:
        return msgspec.structs.replace(record, input_hash=input_hash(record.order, record.inputs))
    return record


@dataclass
class Gate:
    """This consumer's audit log and what it has told about it."""

    audit: AuditLog
    #: Shortfall (dropped + failed) already alerted, and when it last grew (monotonic).
    reported: int = 0
    short_at: float | None = None
    decided: Counter[str] = field(default_factory=Counter)
    #: The trading records as this consumer last read them: one that vanishes from Redis (data
    #: lost, a flush) is written back, never read as "active".
    records: dict[str, TradingRecord] = field(default_factory=dict)


def audit_path(app: App, cfg: RiskConfig) -> Path:
    base = Path(cfg.audit_dir) if cfg.audit_dir else default_audit_dir()
    return base / f"risk-{escape(app.consumer_name).replace('%', '_')}.jsonl"


def default_audit_dir() -> Path:
    """``$NAVSTREAM_STATE_DIR/audit`` when that variable is set (the container image sets it to
    its volume ``/var/lib/navstream``: the root filesystem is read-only and HOME is
    ``/nonexistent``), else ``$XDG_STATE_HOME/navstream/audit``
    (``~/.local/state/navstream/audit``): the user's state directory, never the working
    directory."""
    state_dir = os.environ.get("NAVSTREAM_STATE_DIR")
    if state_dir:
        return Path(state_dir) / "audit"
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "navstream" / "audit"


def _gate(app: App) -> Gate:
    gate = app.plugin_state.get(SECTION)
    if gate is None:
        cfg = config(app)
        audit = AuditLog(audit_path(app, cfg), max_bytes=cfg.audit_max_mb << 20, backups=cfg.audit_backups,
                         queue_size=cfg.audit_queue, encode=audit_record)
        gate = app.plugin_state[SECTION] = Gate(audit)
    return gate  # type: ignore[no-any-return]


@hookimpl
def navstream_config_sections(register: Any) -> None:
    register(SECTION, RiskConfig)


@hookimpl
def navstream_startup(app: App) -> None:
    nav_config(app)
    gate = _gate(app)  # the audit file opens now: a directory we cannot write is a startup error
    log.info("risk gate ready", extra={"event": "risk_started", "audit_log": str(gate.audit.path)})


@hookimpl
def navstream_shutdown(app: App) -> None:
    gate = app.plugin_state.pop(SECTION, None)
    if gate is None:
        return
    if not gate.audit.close(timeout=5.0):
        log.error("audit log not fully written at shutdown", extra={
            "event": "audit_unfinished", "dropped": gate.audit.stats.dropped, "path": str(gate.audit.path)})


def content_of(order: Order | InvalidOrder) -> str:
    """The order's content hash (navstream.contract.fingerprint): what "sent again" is judged by."""
    if isinstance(order, InvalidOrder):
        return raw_order_hash(order.fields)
    return content_hash(order)


def answers(first: Mapping[str, str], content: str) -> bool:
    """Whether ``first`` (a decision given for this order_id) is the answer to an order of
    ``content``: the same content, or a veto given before decisions carried their order's
    hash (repeating a veto lets nothing through)."""
    held = first.get("order_hash", "")
    return held == content if held else first.get("decision") == "veto"


@hookimpl
async def navstream_orders(app: App, orders: Sequence[Order | InvalidOrder], out: Outputs) -> None:
    cfg, navcfg, gate = config(app), nav_config(app), _gate(app)
    now = out.now_ms
    contents = [content_of(o) for o in orders]
    state = await read_batch_state(app, orders, now, contents)
    market = RecordingMarket(navcfg, state.quotes, state.sources, now)
    given: dict[str, dict[str, str]] = {}
    reused_given: dict[tuple[str, str], dict[str, str]] = {}
    approved_here: Counter[str] = Counter()
    for order, content in zip(orders, contents):
        order_id = order.order_id
        first = state.decided.get(order_id) or given.get(order_id)
        if first is not None and answers(first, content):  # sent again: the stored answer, never a new one
            out.emit_first(DECISIONS_STREAM, first, key=DECISIONS, field=order_id)
            gate.decided["repeated"] += 1
            continue
        venue, account = _where(order)
        trading = worst_state((state.record(account_member(venue, account)).state, state.record(DESK).state))
        nav = state.nav(venue, account) if venue and account else None
        unreadable = state.unreadable_for(order_id, venue, account)
        if first is not None:  # the id was answered for other content: this order is refused
            member = reused_member(content, order_id)
            repeat = state.reused.get((content, order_id)) or reused_given.get((content, order_id))
            if repeat is not None:
                out.emit_first(DECISIONS_STREAM, repeat, key=REUSED, field=member)
                gate.decided["repeated"] += 1
                continue
            decision = vetoed(order_id, "order_id_reused", now, trading, nav, content)
            record = AuditRecord(now, app.consumer_name, order_id, decision, invalid=(
                f"order_id {order_id!r} was answered for other content (order_hash {first.get('order_hash') or 'none'}); "
                f"this order's is {content}"), fields=_fields_of(order), rules=RULES)
            fields = decision.fields()
            out.emit_first(DECISIONS_STREAM, fields, key=REUSED, field=member)
            out.index(REUSED_AT, {member: now})
            reused_given[(content, order_id)] = fields
            _count(gate, decision, record)
            continue
        if unreadable is not None:
            # Vetoed, and not stored: once the state is repaired, a re-send is judged.
            decision = vetoed(order_id, "state_unreadable", now, trading, nav, content)
            out.emit(DECISIONS_STREAM, decision.fields())
            _count(gate, decision, AuditRecord(now, app.consumer_name, order_id, decision, invalid=unreadable,
                                              fields=_fields_of(order), rules=RULES))
            continue
        if isinstance(order, InvalidOrder):
            decision = bad_order(order_id, now, trading, nav, content)
            record = AuditRecord(now, app.consumer_name, order_id, decision, invalid=order.reason,
                                 fields=dict(order.fields), rules=RULES)
        else:
            key = (order.venue, order.account)
            inputs = DecisionInputs(
                now, nav=nav, desk_nav=state.desk_nav(),
                sources=state.sources, positions=state.positions.get(key, {}),
                account_state=state.record(account_member(order.venue, order.account)),
                desk_state=state.record(DESK),
                orders_last_minute=state.approved.get(order.venue, 0) + approved_here[order.venue],
                inflight=list(state.inflight.get(key, ())))  # a copy: later approvals must not show in its record
            market.reset()
            decision = judge(order, inputs, cfg, navcfg, market)
            inputs = msgspec.structs.replace(inputs, quotes=market.consulted_quotes())
            record = AuditRecord(now, app.consumer_name, order_id, decision, order=order, inputs=inputs,
                                 rules=RULES)
            if decision.decision == "approve":
                approved_here[order.venue] += 1
                out.index(approved_key(order.venue), {order_id: now})
                out.hset(VENUES, {escape(order.venue): order.venue})
                flying = InFlight(order_id, order.symbol, order.side, order.qty, now)
                state.inflight.setdefault(key, []).append(flying)  # later orders of this batch see it
                out.hset(inflight_key(order.venue, order.account), {order_id: encode_inflight(flying)})
                out.hset(INFLIGHT_ACCOUNTS, {account_member(order.venue, order.account):
                                             _encode_pair(order.venue, order.account)})
        fields = decision.fields()
        out.emit_first(DECISIONS_STREAM, fields, key=DECISIONS, field=order_id)
        out.index(DECIDED, {order_id: now})
        given[order_id] = fields
        _count(gate, decision, record)


def _count(gate: Gate, decision: Decision, record: AuditRecord) -> None:
    gate.decided[decision.decision] += 1
    gate.decided.update(decision.reasons)
    gate.audit.submit(record)


def _where(order: Order | InvalidOrder) -> tuple[str, str]:
    if isinstance(order, InvalidOrder):
        return order.fields.get("venue", ""), order.fields.get("account", "")
    return order.venue, order.account


def _fields_of(order: Order | InvalidOrder) -> dict[str, str]:
    return dict(order.fields) if isinstance(order, InvalidOrder) else encode_fields(order)


_encode_json = msgspec.json.Encoder().encode


def _encode_pair(venue: str, account: str) -> str:
    return _encode_json((venue, account)).decode()


@hookimpl
async def navstream_tick(app: App, now_ms: int, out: Outputs) -> None:
    cfg, gate = config(app), _gate(app)
    await follow_drawdown(app, cfg, now_ms, out)
    report_audit(cfg, gate, out)
    await prune(app, cfg, now_ms)


async def follow_drawdown(app: App, cfg: RiskConfig, now_ms: int, out: Outputs) -> None:
    """Store each scope's drawdown state and high-water mark, and remind of trading that
    drawdown reduced or halted until an operator resumes it."""
    records = await read_records(app)
    await restore_vanished(app, _gate(app), records, now_ms, out)
    latest = {sid: as_read(snap, now_ms) for sid, snap in (await read_latest(app)).items()}
    scopes: dict[str, Snapshot] = {account_member(s.venue, s.account): s for s in latest.values()
                                   if s.scope == "account"}
    if "total" in latest:
        scopes[DESK] = latest["total"]
    for member, snap in scopes.items():
        seen, record = records.get(member, ("", TradingRecord()))
        updated = follow_nav(record, snap, cfg, now_ms)
        if updated != record and await compare_and_set(app, member, seen, updated):
            records[member] = ("", updated)
            if updated.state != record.state:
                log.warning("trading state moved by drawdown", extra={
                    "event": "trading_state_changed", "scope": member, "state": updated.state,
                    "reason": updated.reason})
    for member, (_, record) in records.items():
        if record.by == DRAWDOWN and record.state != "active":
            where = {} if member == DESK else dict(zip(("venue", "account"), ops.split_member(member)))
            out.alert(f"trading_{record.state}", "critical" if record.state == "halted" else "warning",
                      f"trading of {ops.describe_member(member)} is {record.state}: {record.reason}; "
                      "`navstream risk resume` once understood", **where, subject=member,
                      version=str(record.at), every_s=cfg.alert_every_s)


async def restore_vanished(app: App, gate: Gate, records: dict[str, tuple[str, TradingRecord]], now_ms: int,
                           out: Outputs) -> None:
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
        log.critical("trading records vanished from Redis and were written back", extra={
            "event": "trading_records_restored", "scopes": sorted(lost)})
        out.alert("trading_records_restored", "critical",
                  f"the trading records of {where} vanished from Redis (data lost?) and were written back as "
                  "this consumer last saw them; check the trading state with `navstream risk show`",
                  version=str(now_ms), subject="trading", every_s=1)
    gate.records = {member: record for member, (_, record) in records.items()}


def report_audit(cfg: RiskConfig, gate: Gate, out: Outputs) -> None:
    stats: AuditStats = gate.audit.stats
    short = stats.dropped + stats.failed
    if short > gate.reported:
        out.alert("audit_shortfall", "critical",
                  f"risk audit log {gate.audit.path} is missing {short - gate.reported} decisions "
                  f"({stats.dropped} dropped by a full queue, {stats.failed} refused by the disk in all; "
                  f"last error: {stats.last_error or 'none'}); decisions on P:decisions are complete")
        gate.reported = short
        gate.short_at = time.monotonic()


async def prune(app: App, cfg: RiskConfig, now_ms: int) -> None:
    """Forget decisions past their retention, approvals past the rate window, and orders in
    flight once a position update covers them or ``open_order_ttl_s`` passed."""
    keys = app.keys
    horizon = now_ms - cfg.decision_retention_s * 1000
    old = await app.redis.zrangebyscore(keys.state(DECIDED), "-inf", horizon, start=0, num=PRUNE_BATCH)
    old_reused = await app.redis.zrangebyscore(keys.state(REUSED_AT), "-inf", horizon, start=0, num=PRUNE_BATCH)
    venues = await app.redis.hvals(keys.state(VENUES))
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
    await prune_inflight(app, cfg, now_ms)


async def prune_inflight(app: App, cfg: RiskConfig, now_ms: int) -> None:
    """Drop each account's orders in flight that no decision counts any more (see
    :func:`.inputs.pending`). An entry that cannot be read stays: it keeps the account's orders
    vetoed (``state_unreadable``) until someone looks."""
    keys = app.keys
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
    writes = 0
    for n, (venue, account) in enumerate(accounts):
        raw_inflight, raw_positions = replies[2 * n], replies[2 * n + 1]
        if not raw_inflight:  # untracked only if still empty: a batch may have just approved one
            pipe.eval(FORGET_EMPTY_LUA, 2, keys.state(INFLIGHT_ACCOUNTS), keys.state(inflight_key(venue, account)),
                      account_member(venue, account))
            writes += 1
            continue
        try:
            seen = {symbol: observed_at(ts, p)
                    for symbol, (ts, p) in parse_positions(venue, account, raw_positions).items()}
        except StateError:
            seen = {}
        done = []
        for member, raw in raw_inflight.items():
            try:
                flying = decode_inflight(inflight_key(venue, account), member, raw)
            except StateError:
                continue
            if now_ms - flying.at > ttl or seen.get(flying.symbol, -1) > flying.at:
                done.append(member)
        if done:
            pipe.hdel(keys.state(inflight_key(venue, account)), *done)
            writes += 1
    if writes:
        await pipe.execute()


_pair = msgspec.json.Decoder(tuple[str, str])
# KEYS[1] the accounts hash, KEYS[2] the account's in-flight hash, ARGV[1] the account's member.
FORGET_EMPTY_LUA = """
if redis.call('HLEN', KEYS[2]) == 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""


@hookimpl
def navstream_health(app: App) -> Mapping[str, Any] | None:
    gate: Gate | None = app.plugin_state.get(SECTION)
    if gate is None:
        return None
    stats = gate.audit.stats
    short = stats.dropped + stats.failed
    # Degraded while the log cannot keep every decision: its writer is gone, or a shortfall
    # happened within the last alert period (a past one stays counted in audit_missing).
    recent = gate.short_at is not None and time.monotonic() - gate.short_at < config(app).alert_every_s
    report: dict[str, Any] = {"status": "ok", "approved": gate.decided["approve"],
                              "vetoed": gate.decided["veto"], "repeated": gate.decided["repeated"],
                              "audit_written": stats.written, "audit_missing": short}
    if not gate.audit.alive:
        report.update(status="degraded", reason=f"audit writer stopped ({stats.last_error or 'unknown'}); "
                      "decisions are not being logged")
    elif recent:
        report.update(status="degraded", reason=(
            f"audit log missing {short} decisions ({stats.dropped} dropped, {stats.failed} refused: "
            f"{stats.last_error or 'queue full'})"))
    return report


@hookimpl
async def navstream_status(app: App) -> Mapping[str, Any]:
    try:
        records = await read_records(app)
    except StateError as exc:
        return {"error": str(exc)}
    trading = [ops.status_row(member, record) for member, (_, record) in sorted(records.items())]
    stored = await app.redis.hlen(app.keys.state(DECISIONS))
    return {"trading": trading or [{"scope": "desk", "state": "active", "reason": "", "by": "", "since": ""}],
            "decisions_stored": stored}


@hookimpl
def navstream_commands(register: Any) -> None:
    ops.register_commands(register)
