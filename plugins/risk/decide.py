"""The gate's rules: a pure function of one order and the state it is judged against.

Nothing here reads Redis or remembers anything, so a decision can be recomputed from its logged
inputs (``navstream risk replay``) and every rule is tested on its own. Every check that
applies adds its reason code; the order is approved only when none does. Whatever cannot be
established (a NAV, a price, a symbol's quote) vetoes: the gate fails closed.
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from typing import Iterable, Literal, Mapping

import msgspec
from navstream import Order
from navstream.plugins.nav.valuation import (
    CONTEXT,
    Market,
    Snapshot,
    SourceState,
    money,
    worst_by,
)

from .config import RiskConfig

TradingState = Literal["active", "reducing", "halted"]
#: Worse states win (an account halted while the desk is active is halted).
STATE_RANK: dict[str, int] = {"active": 0, "reducing": 1, "halted": 2}

#: Every reason code, in the order checks run (and reasons are listed).
REASONS = (
    "bad_order", "nav_missing", "nav_failed", "nav_partial", "nav_stale", "source_unhealthy",
    "trading_halted", "reduce_only", "symbol_unknown", "price_unknown", "order_notional",
    "order_pct_nav", "gross_exposure", "rate_limited",
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

    def fields(self) -> dict[str, str]:
        return {"order_id": self.order_id, "decision": self.decision, "reasons": ",".join(self.reasons),
                "trading_state": self.trading_state, "nav": self.nav, "nav_status": self.nav_status,
                "nav_age_ms": str(self.nav_age_ms), "ts": str(self.ts)}


def worst_state(states: Iterable[str]) -> TradingState:
    return worst_by(STATE_RANK, states, "active")  # type: ignore[return-value]


def split_symbol(symbol: str, config: RiskConfig) -> tuple[str, str] | None:
    """``BTCUSDT`` -> ``("BTC", "USDT")``: ``[risk.symbols]`` first, then the known quotes."""
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
    return CONTEXT.multiply(amount, unit.value)


def last_price(base: str, quote: str, market: Market) -> Decimal | None:
    """The newest fresh quote of ``base/quote``; None when there is none fresh."""
    quote_used, _, stale, _ = market.pick(base, quote)
    return None if quote_used is None or stale else quote_used.price


def gross_exposure(positions: Mapping[str, Decimal], marks: Mapping[str, Decimal], config: RiskConfig,
                   market: Market) -> Decimal | None:
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
        value = in_report_currency(CONTEXT.multiply(abs(qty), mark), pair[1], market)
        if value is None:
            return None
        total = CONTEXT.add(total, value)
    return total


def reduces(order: Order, position: Decimal) -> bool:
    """The order only shrinks the position (never flips or opens one)."""
    if order.side == "sell":
        return position > 0 and order.qty <= position
    return position < 0 and order.qty <= -position


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
) -> Decision:
    """Judge one order.

    :param nav: the NAV of the order's account, as the nav plugin stored it (None: none yet).
    :param market: prices and source reports now, and the NAV plugin's valuation rules.
    :param sources: the latest ``source_status`` of the order's venue (venue-wide or account).
    :param trading_state: the worse of the account's and the desk's.
    :param position: the account's current position in the order's symbol (signed).
    :param exposure: the account's gross exposure now (report currency); None: unknown.
    :param orders_last_minute: orders of the order's venue decided in the last 60 s, this one
        not included.
    """
    reasons: list[str] = []
    nav_age_ms = now_ms - min(nav.as_of, nav.computed_at) if nav is not None else 0
    if nav is None:
        reasons.append("nav_missing")
    else:
        if nav.status != "ok":
            reasons.append(f"nav_{nav.status}")
        if nav_age_ms > config.max_nav_age_ms and "nav_stale" not in reasons:
            reasons.append("nav_stale")
    if any(not s.ok or now_ms - s.ts > config.max_nav_age_ms for s in sources):
        reasons.append("source_unhealthy")
    if trading_state == "halted":
        reasons.append("trading_halted")
    elif trading_state == "reducing" and not reduces(order, position):
        reasons.append("reduce_only")
    pair = split_symbol(order.symbol, config)
    notional = None
    if pair is None:
        reasons.append("symbol_unknown")
    else:
        price = order.price if order.price is not None else last_price(pair[0], pair[1], market)
        if price is not None:
            notional = in_report_currency(CONTEXT.multiply(order.qty, price), pair[1], market)
        if notional is None:
            reasons.append("price_unknown")
    if notional is not None:
        if notional > config.max_order_notional:
            reasons.append("order_notional")
        nav_value = nav.nav if nav is not None else Decimal(0)
        # An order that only shrinks a position lowers the risk these two limits bound: it
        # passes them, so a desk in drawdown (or with no NAV headroom left) can still de-risk.
        opens = not reduces(order, position)
        with decimal.localcontext(CONTEXT):
            if opens and (nav_value <= 0 or notional > nav_value * Decimal(str(config.max_order_pct_nav)) / 100):
                reasons.append("order_pct_nav")
            if opens and (exposure is None or nav_value <= 0
                          or exposure + notional > nav_value * Decimal(str(config.max_gross_exposure_x))):
                reasons.append("gross_exposure")
    if orders_last_minute >= config.max_orders_per_minute:
        reasons.append("rate_limited")
    return Decision(
        order.order_id, "veto" if reasons else "approve", reasons, trading_state,
        money(nav.nav) if nav is not None else "", nav.status if nav is not None else "missing",
        nav_age_ms, now_ms,
    )


def bad_order(order_id: str, now_ms: int, trading_state: TradingState, nav: Snapshot | None) -> Decision:
    """The answer to an order that broke the contract but named itself."""
    return Decision(order_id, "veto", ["bad_order"], trading_state,
                    money(nav.nav) if nav is not None else "", nav.status if nav is not None else "missing",
                    now_ms - min(nav.as_of, nav.computed_at) if nav is not None else 0, now_ms)
