"""Built-in plugin ``risk``: the pre-trade gate that fails closed and explains every decision.

Each batch of orders is judged against one instant of Redis (:func:`.state.read_batch_state`):
the nav plugin's latest NAV of the order's account and of the desk, prices, source reports and
positions, the trading records, and the venue's approvals in the last minute. Every order gets
its answer on ``P:decisions`` through ``Outputs.emit_first``: the first decision for an
``order_id`` is stored and repeated on every later delivery, never recomputed. Each decision
also goes, with its inputs and their hash, to this consumer's audit log, written by a
background thread; a shortfall of that log is counted and alerted, never waited for.

The work that depends on an account alone (what its orders in flight add up to, its trading
state, its venue's source reports) is done once per account per batch, so an order costs
O(symbols of its account) however many orders are in flight; the batch forgets the orders in
flight it found no decision counts any more, behind its own write.

Ticks store the drawdown of each NAV against its high-water mark in the trading records
(compare-and-set, so an operator's command is never overwritten unseen), remind of trading that
drawdown reduced or halted, alert on audit shortfalls, and prune what the gate keeps per order.
See docs/risk.md.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from navstream import (
    AppProtocol,
    InvalidOrder,
    Order,
    Outputs,
    RegisterCommand,
    RegisterSection,
    encode_fields,
    hookimpl,
    raw_order_hash,
)
from navstream.plugins.nav.api import StateError, declare_reader_limit, escape

from . import ops
from .config import RiskConfig
from .decide import Decision, bad_order, content_hash, vetoed, worst_state
from .gate import SECTION, AuditRecord, Gate, config, health_report, nav_config, open_gate
from .inflight import InFlight, PendingBook, counts
from .inputs import (
    RULES,
    AccountView,
    DecisionInputs,
    PositionInput,
    RecordingMarket,
    account_view,
    judge,
    position_age_limit_ms,
)
from .report import RiskReport
from .state import (
    DECIDED,
    DECISIONS,
    DESK,
    INFLIGHT_ACCOUNTS,
    REUSED,
    REUSED_AT,
    VENUES,
    BatchState,
    account_member,
    approved_key,
    encode_inflight,
    inflight_key,
    read_batch_state,
    read_records,
    reused_member,
)
from .ticks import on_tick

__all__ = ["SECTION", "AuditRecord", "Gate", "RiskPlugin", "config", "nav_config"]

DECISIONS_STREAM = "decisions"

log = logging.getLogger("navstream.risk")


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


async def on_orders(app: AppProtocol, gate: Gate, orders: Sequence[Order | InvalidOrder], out: Outputs) -> None:
    cfg, navcfg = config(app), nav_config(app)
    now = out.now_ms
    contents = [content_of(o) for o in orders]
    state = await read_batch_state(app, orders, now, contents, gate.inflight)
    market = RecordingMarket(navcfg, state.quotes, state.sources, now)
    books, done = count_inflight(state, cfg.open_order_ttl_ms)
    views: dict[tuple[str, str], AccountView] = {}
    given: dict[str, dict[str, str]] = {}
    reused_given: dict[tuple[str, str], dict[str, str]] = {}
    approved_here: Counter[str] = Counter()
    approved_accounts: set[tuple[str, str]] = set()
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
            record = AuditRecord(
                now,
                app.consumer_name,
                order_id,
                decision,
                invalid=(
                    f"order_id {order_id!r} was answered for other content "
                    f"(order_hash {first.get('order_hash') or 'none'}); this order's is {content}"
                ),
                fields=_fields_of(order),
                rules=RULES,
            )
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
            _count(
                gate,
                decision,
                AuditRecord(
                    now,
                    app.consumer_name,
                    order_id,
                    decision,
                    invalid=unreadable,
                    fields=_fields_of(order),
                    rules=RULES,
                ),
            )
            continue
        if isinstance(order, InvalidOrder):
            decision = bad_order(order_id, now, trading, nav, content)
            record = AuditRecord(
                now, app.consumer_name, order_id, decision, invalid=order.reason, fields=dict(order.fields), rules=RULES
            )
        else:
            key = (order.venue, order.account)
            positions = state.positions.get(key, {})
            book = books.get(key) or books.setdefault(key, _book(positions, now, cfg.open_order_ttl_ms))
            inputs = DecisionInputs(
                now,
                nav=nav,
                desk_nav=state.desk_nav(),
                sources=state.sources,
                positions=positions,
                account_state=state.record(account_member(order.venue, order.account)),
                desk_state=state.record(DESK),
                orders_last_minute=state.approved.get(order.venue, 0) + approved_here[order.venue],
                pending=book.snapshot(),  # a copy: later approvals must not show in its record
                pending_error=book.error,
            )
            view = views.get(key) or views.setdefault(key, account_view(inputs, cfg, order.venue, order.account))
            market.reset()
            decision = judge(order, inputs, cfg, navcfg, market, view, content)
            inputs = msgspec.structs.replace(inputs, quotes=market.consulted_quotes())
            record = AuditRecord(now, app.consumer_name, order_id, decision, order=order, inputs=inputs, rules=RULES)
            if decision.decision == "approve":
                approved_here[order.venue] += 1
                out.index(approved_key(order.venue), {order_id: now})
                flying = InFlight(order_id, order.symbol, order.side, order.qty, now)
                book.approve(flying)  # later orders of this batch see it
                out.hset(inflight_key(order.venue, order.account), {order_id: encode_inflight(flying)})
                approved_accounts.add(key)
        fields = decision.fields()
        out.emit_first(DECISIONS_STREAM, fields, key=DECISIONS, field=order_id)
        out.index(DECIDED, {order_id: now})
        given[order_id] = fields
        _count(gate, decision, record)
    if approved_accounts:  # the venues and accounts with approvals: once per batch, not per order
        out.hset(VENUES, {escape(venue): venue for venue, _ in approved_accounts})
        out.hset(INFLIGHT_ACCOUNTS, {account_member(v, a): _encode_pair(v, a) for v, a in approved_accounts})
    if done:
        gate.inflight.discard(done)
        gate.forget_later(app, done)


def count_inflight(
    state: BatchState, ttl_ms: int
) -> tuple[dict[tuple[str, str], PendingBook], dict[str, dict[str, str]]]:
    """Each readable account's orders in flight summed once for the batch, and those no
    decision counts any more (``{hash: {member: value read}}``), to be forgotten. An account
    with an unreadable member has neither: its orders are vetoed, and nothing of it deleted."""
    books: dict[tuple[str, str], PendingBook] = {}
    done: dict[str, dict[str, str]] = {}
    now = state.now_ms
    for (venue, account), flying in state.inflight.items():
        positions = state.positions.get((venue, account), {})
        observed = {symbol: held.ts for symbol, held in positions.items()}
        book = books[(venue, account)] = PendingBook(observed, now, ttl_ms)
        counted: list[InFlight] = []
        forget: dict[str, str] = {}
        for member, raw, o in flying:
            if counts(o.at, observed.get(o.symbol), now, ttl_ms):
                counted.append(o)
            else:
                forget[member] = raw
        book.add_counted(counted)
        if forget:
            done[inflight_key(venue, account)] = forget
    return books, done


def _book(positions: Mapping[str, PositionInput], now_ms: int, ttl_ms: int) -> PendingBook:
    """An empty book (every readable account has one from :func:`count_inflight` already)."""
    return PendingBook({symbol: held.ts for symbol, held in positions.items()}, now_ms, ttl_ms)


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


async def status_section(app: AppProtocol) -> Mapping[str, Any]:
    try:
        records = await read_records(app)
    except StateError as exc:
        return {"error": str(exc)}
    trading = [ops.status_row(member, record) for member, (_, record) in sorted(records.items())]
    stored = await app.redis.hlen(app.keys.state(DECISIONS))
    return {
        "trading": trading or [{"scope": "desk", "state": "active", "reason": "", "by": "", "since": ""}],
        "decisions_stored": stored,
    }


#: How the gate is named beside each NAV (the status page, `navstream nav`).
READER = "risk gate"


async def declare_nav_limit(app: AppProtocol) -> None:
    """Tell the nav plugin how old an account's NAV the gate accepts, so the status page and
    `navstream nav` show it beside each NAV: the age :func:`.decide.decide` vetoes past (its
    ``nav_stale``, on ``now - min(as_of, computed_at)``), no longer than the NAV's own limit."""
    await declare_reader_limit(app, READER, position_age_limit_ms(config(app), nav_config(app)), ("account",))


class RiskPlugin(RiskReport):
    """The plugin object: one per application; ``gate`` is its consumer's audit log and
    counters, open from startup to shutdown (None outside)."""

    def __init__(self) -> None:
        self.gate: Gate | None = None

    def _open(self, app: AppProtocol) -> Gate:
        if self.gate is None:
            self.gate = open_gate(app)
        return self.gate

    @hookimpl
    def navstream_config_sections(self, register: RegisterSection) -> None:
        register(SECTION, RiskConfig)

    @hookimpl
    async def navstream_startup(self, app: AppProtocol) -> None:
        nav_config(app)
        gate = self._open(app)  # the audit file opens now: a directory we cannot write is a startup error
        if app.settings.consumer.role != "events":  # role events never decides nor ticks the gate
            await declare_nav_limit(app)
        log.info("risk gate ready", extra={"event": "risk_started", "audit_log": str(gate.audit.path)})

    @hookimpl
    async def navstream_orders(self, app: AppProtocol, orders: Sequence[Order | InvalidOrder], out: Outputs) -> None:
        await on_orders(app, self._open(app), orders, out)

    @hookimpl
    async def navstream_tick(self, app: AppProtocol, now_ms: int, out: Outputs) -> None:
        await on_tick(app, config(app), self._open(app), now_ms, out)
        await declare_nav_limit(app)  # kept fresh while this consumer runs the gate (a write now and then)

    @hookimpl
    def navstream_health(self, app: AppProtocol) -> Mapping[str, Any] | None:
        return None if self.gate is None else health_report(app, self.gate)

    @hookimpl
    async def navstream_status(self, app: AppProtocol) -> Mapping[str, Any]:
        return await status_section(app)

    @hookimpl
    def navstream_commands(self, register: RegisterCommand) -> None:
        ops.register_commands(register)

    @hookimpl
    async def navstream_shutdown(self, app: AppProtocol) -> None:
        gate, self.gate = self.gate, None
        if gate is None:
            return
        await gate.settle()
        if not gate.audit.close(timeout=5.0):
            log.error(
                "audit log not fully written at shutdown",
                extra={"event": "audit_unfinished", "dropped": gate.audit.stats.dropped, "path": str(gate.audit.path)},
            )
