"""The gate's rules: a pure function of one order and the state it is judged against.

Nothing here reads Redis or remembers anything, so a decision can be recomputed from its logged
inputs (``navstream risk replay``) and every rule is tested on its own. Every check that
applies adds its reason code; the order is approved only when none does. Whatever cannot be
established (a NAV, a price, a symbol's quote) vetoes: the gate fails closed. Nothing the
order says about itself is trusted where the market can be asked: its notional is taken at
the worse of its limit price and the market's, and a limit far from the market is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Literal

import msgspec

from navstream import Order, order_hash
from navstream.plugins.nav.api import (
    Market,
    Snapshot,
    SourceState,
    as_read,
    exact_add,
    exact_mul,
    money,
    worst_by,
)

from .config import RiskConfig

TradingState = Literal["active", "reducing", "halted"]
#: Worse states win (an account halted while the desk is active is halted).
STATE_RANK: dict[str, int] = {"active": 0, "reducing": 1, "halted": 2}

#: Every reason code, in the order checks run (and reasons are listed).
REASONS = (
    "bad_order",
    "order_id_reused",
    "state_unreadable",
    "inputs_invalid",
    "order_stale",
    "nav_missing",
    "nav_failed",
    "nav_partial",
    "nav_stale",
    "source_unhealthy",
    "position_stale",
    "trading_halted",
    "reduce_only",
    "symbol_unknown",
    "price_unknown",
    "price_off_market",
    "order_notional",
    "order_pct_nav",
    "gross_exposure",
    "rate_limited",
)


class Decision(msgspec.Struct, frozen=True):
    """A ``P:decisions`` entry (contract fields)."""

    order_id: str
    decision: Literal["approve", "veto"]
    reasons: list[str]
    trading_state: TradingState
    nav: str
    nav_status: str
    nav_age_ms: int
    ts: int
    #: The content hash of the order answered (:func:`navstream.contract.fingerprint.order_hash`): a
    #: client accepts only the answer to what it sent. Empty in records from before it existed.
    order_hash: str = ""

    def fields(self) -> dict[str, str]:
        fields = {
            "order_id": self.order_id,
            "decision": self.decision,
            "reasons": ",".join(self.reasons),
            "trading_state": self.trading_state,
            "nav": self.nav,
            "nav_status": self.nav_status,
            "nav_age_ms": str(self.nav_age_ms),
            "ts": str(self.ts),
        }
        if self.order_hash:
            fields["order_hash"] = self.order_hash
        return fields


def worst_state(states: Iterable[TradingState]) -> TradingState:
    return worst_by(STATE_RANK, states, "active")


#: Symbols split so far, per config (the config is kept with its entry, so its id is not reused
#: while the entry lives): a decision splits several symbols, the same ones order after order.
#: Bounded, since symbols come from orders: past the bound, symbols are split without caching.
_SPLITS: dict[int, tuple[RiskConfig, dict[str, tuple[str, str] | None]]] = {}
SPLIT_CACHE_MAX = 4096


def split_symbol(symbol: str, config: RiskConfig) -> tuple[str, str] | None:
    """``BTCUSDT`` -> ``("BTC", "USDT")``: ``[risk.symbols]`` first, then the known quotes."""
    entry = _SPLITS.get(id(config))
    if entry is None or entry[0] is not config:
        if len(_SPLITS) >= 64:  # configs come and go in tests and reloads: start again
            _SPLITS.clear()
        entry = _SPLITS[id(config)] = (config, {})
    cache = entry[1]
    if symbol in cache:
        return cache[symbol]
    pair = _split(symbol, config)
    if len(cache) < SPLIT_CACHE_MAX:
        cache[symbol] = pair
    return pair


def _split(symbol: str, config: RiskConfig) -> tuple[str, str] | None:
    pair = config.symbols.get(symbol)
    if pair is not None:
        base, _, quote = pair.partition("/")
        return base, quote
    for quote in config.quote_assets:
        for sep in ("/", "-", "_", ""):
            tail = sep + quote
            base = symbol[: -len(tail)]
            if symbol.endswith(tail) and base and base[-1] not in "/-_":
                return base, quote
    return None


def in_report_currency(amount: Decimal, quote: str, market: Market) -> Decimal | None:
    """``amount`` of ``quote`` valued by the NAV plugin's rules; None when it cannot be, or
    only from a stale price or a failing price source."""
    unit = market.unit(quote)
    if unit.value is None or unit.stale:
        return None
    return exact_mul(amount, unit.value)


def last_price(base: str, quote: str, market: Market) -> Decimal | None:
    """The newest fresh quote of ``base/quote``; None when there is none fresh."""
    quote_used, _, stale, _ = market.pick(base, quote)
    return None if quote_used is None or stale else quote_used.price


def market_value(base: str, quote: str, market: Market) -> Decimal | None:
    """What one ``base`` is worth now, in the report currency: the symbol's own fresh quote
    valued like its quote asset, else ``base`` valued by the NAV's routes and pegs; None when
    neither can be had fresh."""
    direct = last_price(base, quote, market)
    if direct is not None:
        value = in_report_currency(direct, quote, market)
        if value is not None:
            return value
    unit = market.unit(base)
    return None if unit.value is None or unit.stale else unit.value


def gross_exposure(
    positions: Mapping[str, Decimal], marks: Mapping[str, Decimal], config: RiskConfig, market: Market
) -> Decimal | None:
    """Sum of |qty| x mark over an account's positions, in the report currency; None when a
    position cannot be valued (then exposure is unknown, and the gate vetoes)."""
    total = Decimal(0)
    for symbol, qty in positions.items():
        if not qty:
            continue
        pair = split_symbol(symbol, config)
        mark = marks.get(symbol)
        if pair is None or mark is None:
            return None
        value = in_report_currency(exact_mul(qty.copy_abs(), mark), pair[1], market)
        if value is None:
            return None
        total = exact_add(total, value)
    return total


def reduces(
    order: Order, position: Decimal, pending_buys: Decimal = Decimal(0), pending_sells: Decimal = Decimal(0)
) -> bool:
    """The order only shrinks the position (never flips or opens one), even once every approved
    order still in flight on its side has filled: three sells of 0.03 against a long of 0.06
    are not all reducing. In-flight orders on the other side may never fill, so they lend no
    room."""
    if order.side == "sell":
        room = exact_add(position, pending_sells.copy_negate())
        return room > 0 and order.qty <= room
    room = exact_add(position.copy_negate(), pending_buys.copy_negate())
    return room > 0 and order.qty <= room


def decide(
    order: Order,
    *,
    config: RiskConfig,
    now_ms: int,
    nav: Snapshot | None,
    market: Market,
    sources: Iterable[SourceState],
    trading_state: TradingState,
    position: Decimal,
    exposure: Decimal | None,
    orders_last_minute: int,
    pending_buys: Decimal = Decimal(0),
    pending_sells: Decimal = Decimal(0),
    position_stale: bool = False,
    order_hash: str = "",
) -> Decision:
    """Judge one order.

    :param nav: the NAV of the order's account, as the nav plugin stored it (None: none yet);
        judged as read now (:func:`as_read`): stale from its ``fresh_until`` on.
    :param market: prices and source reports now, and the NAV plugin's valuation rules.
    :param sources: the latest ``source_status`` of the order's venue (venue-wide or account).
    :param trading_state: the worse of the account's and the desk's.
    :param position: the account's current position in the order's symbol (signed).
    :param exposure: the account's gross exposure now (report currency), approved orders in
        flight counted at their worst; None: unknown.
    :param orders_last_minute: orders of the order's venue decided in the last 60 s, this one
        not included.
    :param pending_buys: approved buys of the symbol still in flight (not yet in ``position``).
    :param pending_sells: the same for sells.
    :param position_stale: a position the decision rests on is past its age limit: it lends no
        exemption and the order vetoes.
    :param order_hash: the order's :func:`content_hash`, when the caller has it already.
    """
    reasons: list[str] = []
    if now_ms - order.ts > config.max_order_age_ms:
        reasons.append("order_stale")
    if nav is not None:
        nav = as_read(nav, now_ms)
    nav_age_ms = now_ms - min(nav.as_of, nav.computed_at) if nav is not None else 0
    if nav is None:
        reasons.append("nav_missing")
    else:
        if nav.status != "ok":
            reasons.append(f"nav_{nav.status}")
        if nav_age_ms > config.max_nav_age_ms and "nav_stale" not in reasons:
            reasons.append("nav_stale")
    if any(not s.ok or now_ms - s.seen > config.max_nav_age_ms for s in sources):
        reasons.append("source_unhealthy")
    if position_stale:
        reasons.append("position_stale")
    shrinks = not position_stale and reduces(order, position, pending_buys, pending_sells)
    if trading_state == "halted":
        reasons.append("trading_halted")
    elif trading_state == "reducing" and not shrinks:
        reasons.append("reduce_only")
    pair = split_symbol(order.symbol, config)
    notional = None
    if pair is None:
        reasons.append("symbol_unknown")
    else:
        # Valued at the worse of the limit and the market: a sell limited at 0.01 fills at the
        # market, so its own price says nothing of its size. No fresh market: no notional.
        market_px = market_value(pair[0], pair[1], market)
        limit_px = in_report_currency(order.price, pair[1], market) if order.price is not None else None
        if market_px is None or (order.price is not None and limit_px is None):
            reasons.append("price_unknown")
        else:
            notional = exact_mul(order.qty, worst_price(limit_px, market_px))
            if limit_px is not None and off_market(limit_px, market_px, config.max_price_deviation_pct):
                reasons.append("price_off_market")
    if notional is not None:
        if notional > config.max_order_notional:
            reasons.append("order_notional")
        nav_value = nav.nav if nav is not None else Decimal(0)
        # An order that only shrinks a position lowers the risk these two limits bound: it
        # passes them, so a desk in drawdown (or with no NAV headroom left) can still de-risk.
        opens = not shrinks
        # Exact, and without a division: notional x 100 against NAV x pct.
        if opens and (
            nav_value <= 0
            or exact_mul(notional, Decimal(100)) > exact_mul(nav_value, Decimal(str(config.max_order_pct_nav)))
        ):
            reasons.append("order_pct_nav")
        if opens and (
            exposure is None
            or nav_value <= 0
            or exact_add(exposure, notional) > exact_mul(nav_value, Decimal(str(config.max_gross_exposure_x)))
        ):
            reasons.append("gross_exposure")
    if orders_last_minute >= config.max_orders_per_minute:
        reasons.append("rate_limited")
    return Decision(
        order.order_id,
        "veto" if reasons else "approve",
        reasons,
        trading_state,
        money(nav.nav) if nav is not None else "",
        nav.status if nav is not None else "missing",
        nav_age_ms,
        now_ms,
        order_hash or content_hash(order),
    )


def worst_price(limit_px: Decimal | None, market_px: Decimal) -> Decimal:
    """The price an order is sized at: the worse (higher) of its limit and the market, each in
    the report currency. A buy limited above the market may fill up to its limit; a sell
    limited at 0.01 fills at the market."""
    return market_px if limit_px is None else max(market_px, limit_px)


def off_market(limit_px: Decimal, market_px: Decimal, max_deviation_pct: float) -> bool:
    """The fat-finger collar: the limit is more than ``max_deviation_pct`` % from the market
    (exact: compared as |limit - market| x 100 against market x pct, no division)."""
    return exact_mul(exact_add(limit_px, market_px.copy_negate()).copy_abs(), Decimal(100)) > exact_mul(
        market_px, Decimal(str(max_deviation_pct))
    )


def content_hash(order: Order) -> str:
    return order_hash(
        venue=order.venue,
        account=order.account,
        symbol=order.symbol,
        side=order.side,
        qty=order.qty,
        price=order.price,
        reduce_only=order.reduce_only,
    )


def vetoed(
    order_id: str, reason: str, now_ms: int, trading_state: TradingState, nav: Snapshot | None, order_hash: str = ""
) -> Decision:
    """A veto for one reason, whatever the rules: an order that broke the contract
    (``bad_order``), an id reused for other content (``order_id_reused``), inputs that could
    not be read (``state_unreadable``) or judged (``inputs_invalid``). The NAV is shown as
    read now, for the record."""
    if nav is not None:
        nav = as_read(nav, now_ms)
    return Decision(
        order_id,
        "veto",
        [reason],
        trading_state,
        money(nav.nav) if nav is not None else "",
        nav.status if nav is not None else "missing",
        now_ms - min(nav.as_of, nav.computed_at) if nav is not None else 0,
        now_ms,
        order_hash,
    )


def bad_order(
    order_id: str, now_ms: int, trading_state: TradingState, nav: Snapshot | None, order_hash: str = ""
) -> Decision:
    """The answer to an order that broke the contract but named itself."""
    return vetoed(order_id, "bad_order", now_ms, trading_state, nav, order_hash)
