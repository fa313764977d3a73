"""Built-in plugin ``nav``: exchange and treasury NAV that fails closed and never hides a loss.

Each batch stores its balances, positions, prices and source reports as last-``ts``-wins state,
then recomputes the NAV of the accounts it touched (a price or a source report touches every
account, a balance only its own) once, from Redis state with the batch applied on top; with
``[nav] eval_interval_ms``, at most once per interval unless that could hide a worse NAV
(conflate.py). Every tick recomputes every scope against the clock, so with no events at all a
NAV turns ``stale`` on time. Results go to ``P:state:nav:latest`` (what every reader uses) and to ``P:nav`` when
a scope's value or status changed, and at least every ``publish_every_s``.

Each consumer keeps a copy of the inputs and trusts it only while Redis holds the stamp of its
own last write (:meth:`Outputs.stamp`); otherwise it reads everything again, and every tick
does. Two consumers racing on one account may each publish a view missing the other's update
for one tick, after which every tick converges on the state both wrote. Periodic
re-publication and alerts are de-duplicated across consumers in the batch write itself
(:meth:`Outputs.emit` with ``subject``, :meth:`Outputs.alert` with ``every_s``). See
docs/nav.md.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from navstream import (
    AppProtocol,
    Balance,
    Event,
    Outputs,
    Position,
    Price,
    RegisterCommand,
    RegisterSection,
    SourceStatus,
    as_str,
    format_money,
    hookimpl,
)

from . import conflate, explain
from .config import NavConfig
from .report import NavReport
from .state import (
    HOLDINGS,
    LATEST,
    POSITIONS,
    WRITER,
    Inputs,
    buffer_writes,
    encode_snapshot,
    newest,
    read_inputs,
    read_latest,
)
from .valuation import InexactError, Market, Snapshot, evaluate, exact_add, money

SECTION = "nav"
NAV_STREAM = "nav"
#: Event types a NAV rests on (positions are stored for exposure only).
VALUED = {Balance, Price, SourceStatus}


def config(app: AppProtocol) -> NavConfig:
    return app.plugin_config(SECTION, NavConfig)


async def on_events(app: AppProtocol, cache: Cache, events: Sequence[Event], out: Outputs) -> None:
    kinds = {type(e) for e in events}
    if not kinds & VALUED:
        if Position in kinds:  # positions feed exposure, not NAV
            buffer_writes(out, newest(events))
        return
    broad = Price in kinds or SourceStatus in kinds  # a price or a source may touch any account
    touched = None if broad else {(e.venue, e.account) for e in events if type(e) is Balance}
    stamp = asyncio.ensure_future(writer_stamp(app, cache))  # its round trip overlaps newest()
    try:
        candidates = newest(events)
    finally:
        held = cache.inputs
        inputs = await current_inputs(app, cache, await stamp)
    # Only what wins against the state is written: then, while nobody else writes, the batch
    # write need not compare each member's ts again (see remember()).
    received = out.now_ms  # the receipt time of every input of the batch
    won = [e for e in candidates if type(e) is Position or inputs.apply(e, received)]
    buffer_writes(out, won)
    cfg = config(app)
    if cfg.eval_interval_ms:
        publish_conflated(cfg, cache.conflation, inputs, won, inputs is not held, out)
    else:
        publish(cfg, inputs, out.now_ms, out, only=touched, details=False)
    remember(app, cache, inputs, out)


async def on_tick(app: AppProtocol, cache: Cache, now_ms: int, out: Outputs) -> None:
    cache.inputs = None  # a tick reads everything: an edit made outside navstream shows within a tick
    inputs = await current_inputs(app, cache, None)
    publish(config(app), inputs, now_ms, out, only=None, details=True)
    cache.conflation.done(now_ms)
    remember(app, cache, inputs, out)


@dataclass
class Cache:
    """This consumer's copy of the NAV inputs, exact while ``P:state:nav:writer`` holds
    ``stamp``: every write of NAV state stamps it (``Outputs.stamp``), with this consumer's
    own stamp only if nobody wrote since it read, so finding that stamp there proves its copy
    is what Redis holds. Any other value (another consumer wrote, or this one's write failed)
    means reading everything again."""

    inputs: Inputs | None = None
    stamp: str = ""
    writes: int = 0
    identity: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: Which accounts wait for evaluation (``[nav] eval_interval_ms``): beside the copy, not in
    #: it, so a distrusted copy is dropped without dropping a mark.
    conflation: conflate.Conflation = field(default_factory=conflate.Conflation)


async def writer_stamp(app: AppProtocol, cache: Cache) -> str | None:
    """The stamp Redis holds (None when this consumer holds no copy: nothing to check)."""
    if cache.inputs is None:
        return None
    return as_str(await app.redis.get(app.keys.state(*WRITER)) or "")


async def current_inputs(app: AppProtocol, cache: Cache, stamp: str | None) -> Inputs:
    """The inputs as Redis holds them: the cached copy if ``stamp`` (just read from Redis) is
    this consumer's own, else read afresh."""
    held, cache.inputs = cache.inputs, None  # taken: a call that fails must not leave it behind
    if held is not None and stamp is not None and stamp == cache.stamp:
        held.stamp = stamp
        return held
    return await read_inputs(app)


def remember(app: AppProtocol, cache: Cache, inputs: Inputs, out: Outputs) -> None:
    """Keep ``inputs`` (what this call's write leaves in Redis) under a new stamp, which Redis
    takes only if it still holds the stamp read with them. Every hash written here but the
    positions (not part of the copy) holds only members that won against the copy, so while
    that stamp stands they are written without comparing each held ts."""
    cache.writes += 1
    cache.stamp = f"{app.consumer_name}:{cache.identity}:{cache.writes}"
    covers = [key for key in out.fields if not key.startswith(POSITIONS)]
    out.stamp(":".join(WRITER), inputs.stamp, cache.stamp, covers=covers)
    cache.inputs = inputs


def publish_conflated(
    cfg: NavConfig, state: conflate.Conflation, inputs: Inputs, won: list[Event], afresh: bool, out: Outputs
) -> None:
    """Mark what the batch's winning events changed (everything if the inputs were read afresh:
    another consumer may have written anything), then evaluate what :func:`conflate.plan` says
    cannot wait. See conflate.py."""
    if afresh:
        state.mark(None)
    elif any(type(e) is Price or type(e) is SourceStatus for e in won):
        state.mark(None)
    else:
        state.mark({(e.venue, e.account) for e in won if isinstance(e, Balance)})
    known = {(s.venue, s.account): s for s in inputs.latest.values() if s.scope == "account"}
    now = out.now_ms
    only, round_, market = conflate.plan(
        state, cfg, inputs.balances, known, inputs.quotes.values(), inputs.sources.values(), now
    )
    if only is None or only:
        snapshots = publish(cfg, inputs, now, out, only=only, details=False, market=market)
        conflate.settle(state, only, snapshots, now, round_)


def publish(
    cfg: NavConfig,
    inputs: Inputs,
    now_ms: int,
    out: Outputs,
    only: set[tuple[str, str]] | None,
    details: bool,
    market: Market | None = None,
) -> list[Snapshot]:
    """Evaluate, store every scope's NAV, publish what changed, raise what is wrong; with
    ``details`` (ticks), also store each account's holding-by-holding valuation. ``market``:
    one already built of ``inputs`` at ``now_ms``, if the caller has it."""
    if market is None:
        market = Market(cfg, inputs.quotes.values(), inputs.sources.values(), now_ms)
    known = {(s.venue, s.account): s for s in inputs.latest.values() if s.scope == "account"}
    snapshots = evaluate(cfg, inputs.balances, market, only, known, details)
    latest, holdings = ":".join(LATEST), ":".join(HOLDINGS)
    every_ms = int(cfg.publish_every_s * 1000)
    for snap in snapshots:
        sid = snap.scope_id
        previous = inputs.latest.get(sid)
        fields = snap.stream_fields()
        version = Snapshot.version(fields)
        published, published_at = (previous.published, previous.published_at) if previous else ("", 0)
        if version != published:
            # A change, judged against the NAV last stored (this consumer's exact copy, or what
            # it just read): written at once. Two consumers racing may both write it.
            out.emit(NAV_STREAM, fields)
            published, published_at = version, now_ms
        elif now_ms - published_at >= every_ms:
            # Unchanged for a period: once, whichever consumers judge it at the same moment.
            out.emit(NAV_STREAM, fields, subject=sid, version=version, every_s=cfg.publish_every_s)
            published_at = now_ms
        since = previous.since if previous is not None and previous.status == snap.status and previous.since else now_ms
        snap = msgspec.structs.replace(snap, since=since, published=published, published_at=published_at)
        out.put_latest_field(latest, sid, now_ms, encode_snapshot(snap))
        if details and snap.scope == "account":
            out.put_latest_field(holdings, sid, now_ms, encode_snapshot(snap, holdings=True))
        inputs.latest[sid] = snap
        if snap.scope == "account":
            raise_alerts(cfg, snap, previous, out)
    return snapshots


def raise_alerts(cfg: NavConfig, snap: Snapshot, previous: Snapshot | None, out: Outputs) -> None:
    """Judged again at every evaluation; ``alert_every_s`` keeps each (code, account) to one
    alert per period across consumers, so a lasting problem is reminded once per period and a
    flapping one cannot flood P:alerts (its every flip is in P:nav and the state at once)."""
    where = {"venue": snap.venue, "account": snap.account}
    every = cfg.alert_every_s
    name = f"{snap.venue}/{snap.account}"
    if snap.status == "failed":
        out.alert("nav_failed", "critical", f"NAV of {name} failed: {'; '.join(snap.reasons)}", **where, every_s=every)
    for h in snap.holdings:
        if h.missing:
            out.alert(
                h.missing_code or "price_missing",
                "warning",
                f"{explain.shown_asset(h.asset, h.venue_asset, snap.venue)} in {name} "
                f"({_amount(h.balance, h.unrealized_pnl)}) is not in the NAV: {h.missing}",
                **where,
                asset=h.asset,
                every_s=every,
            )
    if snap.status == "stale":
        out.alert("nav_stale", "warning", f"NAV of {name} is stale: {'; '.join(snap.reasons)}", **where, every_s=every)
    if snap.zero_wallet:
        out.alert(
            "wallet_zero",
            "critical",
            f"wallet {name} reads 0 in every asset it holds; NAV reports {format_money(snap.nav, snap.quote)}, "
            "nothing is substituted",
            **where,
            every_s=every,
        )
    elif snap.nav < 0 and snap.status != "failed":
        out.alert(
            "wallet_negative",
            "critical",
            f"wallet {name} is negative: {_signed(snap.nav, snap.quote)}",
            **where,
            every_s=every,
        )
    if (
        previous is not None
        and previous.status in ("ok", "stale")
        and snap.status in ("ok", "stale")
        and previous.nav > 0
    ):
        drop = (previous.nav - snap.nav) / previous.nav * 100
        if drop > Decimal(str(cfg.jump_alert_pct)):
            out.alert(
                "nav_drop",
                "critical",
                f"NAV of {name} fell {drop:.2f}% from {format_money(previous.nav, previous.quote)} to "
                f"{format_money(snap.nav, snap.quote)} (limit {cfg.jump_alert_pct:g}%)",
                **where,
                every_s=every,
            )
    if previous is not None and previous.status != "ok" and snap.status == "ok":
        out.alert(
            "nav_recovered",
            "info",
            f"NAV of {name} is ok again: {format_money(snap.nav, snap.quote)}",
            **where,
            every_s=every,
        )
    if cfg.accounts and snap.kind == "unclassified":
        out.alert(
            "account_unconfigured",
            "warning",
            f"{name} has balances but is not in [[nav.accounts]]: counted in its venue and the "
            "total, not in exchange NAV",
            **where,
            every_s=every,
        )


def _signed(value: Decimal, quote: str) -> str:
    """Money in the one format, with the exact value beside it when rounding hides its sign
    (``-0.0000005`` shows ``0.00 USD``: not what "negative" should read)."""
    shown = format_money(value, quote)
    return shown if shown.startswith("-") else f"{shown} (exactly {money(value)})"


def _amount(balance: Decimal, upnl: Decimal) -> str:
    """Balance plus unrealized PnL for a message: exact, or both terms when the sum cannot be."""
    try:
        return money(exact_add(balance, upnl))
    except InexactError:
        return f"{money(balance)} + unrealized PnL {money(upnl)}"


async def status_section(app: AppProtocol) -> Mapping[str, Any]:
    """Every scope as a reader must take it now (``explain.summary_row`` applies ``as_read``):
    a stored ``ok`` past its ``fresh_until`` shows ``stale`` even before a tick says so."""
    now = app.clock.now_ms()
    latest = await read_latest(app)
    return {
        "quote": config(app).quote,
        "scopes": [explain.summary_row(s, now) for s in explain.ordered(latest.values())],
    }


def add_commands(register: RegisterCommand) -> None:
    p = register(
        "nav",
        explain.command,
        help="explain a NAV: every holding, its price route, ages, and why",
        description="Explain the NAV as the nav plugin last computed it (P:state:nav:latest): each "
        "holding with balance, unrealized PnL, the price route and source used, each input's age, its "
        "value, and why anything is missing or stale.",
    )
    p.add_argument("--venue", help="only this venue")
    p.add_argument("--account", help="only this account")
    p.add_argument("--json", action="store_true", help="machine-readable output")


class NavPlugin(NavReport):
    """The plugin object: one per application, holding that consumer's copy of the inputs."""

    def __init__(self) -> None:
        self.cache = Cache()

    @hookimpl
    def navstream_config_sections(self, register: RegisterSection) -> None:
        register(SECTION, NavConfig)

    @hookimpl
    async def navstream_events(self, app: AppProtocol, events: Sequence[Event], out: Outputs) -> None:
        await on_events(app, self.cache, events, out)

    @hookimpl
    async def navstream_tick(self, app: AppProtocol, now_ms: int, out: Outputs) -> None:
        await on_tick(app, self.cache, now_ms, out)

    @hookimpl
    async def navstream_status(self, app: AppProtocol) -> Mapping[str, Any]:
        return await status_section(app)

    @hookimpl
    def navstream_commands(self, register: RegisterCommand) -> None:
        add_commands(register)
