"""Everything one decision rests on, as one value that can be logged and judged again.

The gate reads its inputs from Redis into a :class:`DecisionInputs`, judges the order with
:func:`judge`, and writes both to the audit log with a hash of them. ``navstream risk replay``
decodes the same value from the log and calls the same :func:`judge`, so a replay differs from
the original only if the rules or the config did. Of the prices, only those the decision
consulted are kept (:class:`RecordingMarket` notes them), and of the orders in flight only
what they add up to per symbol (:class:`PendingQty`), so a record stays small however much is
in flight, while judging it again sees exactly what the original saw.

Within one batch the clock is fixed, so what depends on the account alone is computed once per
account (:class:`PendingBook`, :class:`AccountView`), not once per order: an order costs
O(symbols of its account), never O(orders in flight).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from decimal import Decimal

import msgspec

from navstream import Order
from navstream.plugins.nav.api import Market, NavConfig, Quote, Snapshot, SourceState, Unit, as_read, exact_add

from .config import RiskConfig
from .decide import (
    Decision,
    TradingState,
    content_hash,
    decide,
    gross_exposure,
    last_price,
    split_symbol,
    vetoed,
    worst_state,
)
from .inflight import InFlight, PendingBook, PendingQty
from .trading import TradingRecord, follow_nav

log = logging.getLogger("navstream.risk")


#: Version of the rules and of what a record holds: 1 before the gate valued orders at the
#: worst price and counted positions' ages and orders in flight; records without one are 1.
#: 2 recorded the account's orders in flight one by one (``inflight``); 3 records what they
#: add up to per symbol (``pending``), the same rules on a record that does not grow with them.
RULES = 3


class PositionInput(msgspec.Struct, frozen=True, array_like=True):
    qty: Decimal
    mark_price: Decimal | None = None
    #: When the position was observed, never later than when navstream received it (epoch ms);
    #: 0 when unknown (a record from rules 1): then it is too old to rest on.
    ts: int = 0


class DecisionInputs(msgspec.Struct, frozen=True, omit_defaults=True):
    """The state one order was judged against."""

    #: The clock at decision time (epoch ms).
    now_ms: int
    #: The account's NAV and the desk's (scope ``total``), as the nav plugin stored them.
    nav: Snapshot | None = None
    desk_nav: Snapshot | None = None
    #: Every quote of every pair the decision looked at, and every source report.
    quotes: list[Quote] = []
    sources: list[SourceState] = []
    #: The account's positions: symbol -> (qty, mark price).
    positions: dict[str, PositionInput] = {}
    account_state: TradingRecord = TradingRecord()
    desk_state: TradingRecord = TradingRecord()
    #: Approved orders of the order's venue in the 60 s before it.
    orders_last_minute: int = 0
    #: Rules 2: the account's approved orders that may still be in flight, one by one (see
    #: :func:`pending`). Empty in records of rules 3, which hold ``pending`` instead.
    inflight: list[InFlight] = []
    #: Rules 3: symbol -> what the orders in flight the decision counted add up to. None in
    #: records of rules 1 and 2, whose ``inflight`` is summed when they are judged again.
    pending: dict[str, PendingQty] | None = None
    #: Rules 3: why those orders could not be summed exactly (a hand-written entry): then the
    #: order is vetoed ``inputs_invalid``, as it was when the sum was taken per order.
    pending_error: str = ""


class RecordingMarket(Market):
    """A :class:`Market` that notes every pair it was asked to price since :meth:`reset`,
    including those behind an asset's value that it had cached for an earlier order."""

    def __init__(self, config: NavConfig, quotes: list[Quote], sources: list[SourceState], now_ms: int):
        super().__init__(config, quotes, sources, now_ms)
        self.consulted: set[tuple[str, str]] = set()
        self._deps: dict[str, set[tuple[str, str]]] = {}
        #: Each pair's pick, made once: the clock and the quotes are those of one batch.
        self._picks: dict[tuple[str, str], tuple[Quote | None, str, list[str], int]] = {}

    def reset(self) -> None:
        self.consulted = set()

    def pick(self, base: str, quote: str) -> tuple[Quote | None, str, list[str], int]:
        pair = (base, quote)
        self.consulted.add(pair)  # noted for every order that asks, cached or not
        picked = self._picks.get(pair)
        if picked is None:  # one that raises is not kept: it raises again for the next order
            picked = self._picks[pair] = super().pick(base, quote)
        return picked

    def unit(self, asset: str) -> Unit:
        deps = self._deps.get(asset)
        if deps is None:  # computed now: note what it consults, for every later order too
            outer, self.consulted = self.consulted, set()
            try:
                result = super().unit(asset)
            finally:
                deps = self._deps[asset] = self.consulted
                self.consulted = outer
        else:
            result = super().unit(asset)
        self.consulted |= deps
        return result

    def consulted_quotes(self) -> list[Quote]:
        return [q for pair in sorted(self.consulted) for q in self.quotes.get(pair, ())]


def trading_state(inputs: DecisionInputs, config: RiskConfig) -> TradingState:
    """The worse of the account's and the desk's state, with drawdown judged on these very
    NAVs as read now (so a drawdown vetoes at once, before a tick has stored the record)."""
    now = inputs.now_ms
    account = (
        follow_nav(inputs.account_state, as_read(inputs.nav, now), config, now) if inputs.nav else inputs.account_state
    )
    desk = (
        follow_nav(inputs.desk_state, as_read(inputs.desk_nav, now), config, now)
        if inputs.desk_nav
        else inputs.desk_state
    )
    return worst_state((account.state, desk.state))


def position_age_limit_ms(config: RiskConfig, nav_config: NavConfig) -> int:
    """A position is an input like a balance: no older than the NAV's limit, nor the gate's."""
    return min(nav_config.max_age_ms, config.max_nav_age_ms)


def pending(inputs: DecisionInputs, config: RiskConfig) -> dict[str, tuple[Decimal, Decimal]]:
    """symbol -> (buys, sells) approved and still in flight (:func:`counts`). A record of
    rules 3 holds the sums (``pending``); one of rules 2 the orders, summed here in the order
    it lists them, as when it was decided."""
    if inputs.pending_error:
        raise ArithmeticError(inputs.pending_error)
    if inputs.pending is not None:
        return {symbol: (p.buys, p.sells) for symbol, p in inputs.pending.items()}
    observed = {symbol: held.ts for symbol, held in inputs.positions.items()}
    book = PendingBook(observed, inputs.now_ms, config.open_order_ttl_ms)
    book.add_counted([o for o in inputs.inflight if book.counts(o)], ordered=True)
    if book.error:
        raise ArithmeticError(book.error)
    return {symbol: (p.buys, p.sells) for symbol, p in book.sums.items()}


@dataclass
class AccountView:
    """What one batch computes once per account rather than per order: the venue's source
    reports and the trading state (two drawdowns judged in Decimal). An error computing the
    state is kept and raised again for each order, where the per-order computation raised it."""

    sources: list[SourceState]
    state: TradingState | None = None
    error: ArithmeticError | ValueError | TypeError | None = None

    def trading_state(self) -> TradingState:
        if self.error is not None:
            raise self.error.with_traceback(None)
        assert self.state is not None
        return self.state


def venue_sources(inputs: DecisionInputs, venue: str, account: str) -> list[SourceState]:
    """The source reports of ``venue``: venue-wide, or of ``account``."""
    return [s for s in inputs.sources if s.venue == venue and (s.account is None or s.account == account)]


def account_view(inputs: DecisionInputs, config: RiskConfig, venue: str, account: str) -> AccountView:
    view = AccountView(venue_sources(inputs, venue, account))
    try:
        view.state = trading_state(inputs, config)
    except (ArithmeticError, ValueError, TypeError) as exc:
        view.error = exc
    return view


def judge(
    order: Order,
    inputs: DecisionInputs,
    config: RiskConfig,
    nav_config: NavConfig,
    market: Market | None = None,
    account: AccountView | None = None,
    order_hash: str = "",
) -> Decision:
    """Decide ``order`` from ``inputs``. ``market`` (the live one, holding every price) may be
    given to save building one; it must hold what ``inputs.quotes`` holds for every pair the
    decision consults. ``account`` (:func:`account_view` of these inputs, shared by the
    batch's orders of the account) may be given to save computing it per order, and
    ``order_hash`` (the order's content hash). Never raises
    on what the inputs hold: an input that breaks the arithmetic (an overflow) vetoes with
    ``inputs_invalid``."""
    if market is None:
        market = Market(nav_config, inputs.quotes, inputs.sources, inputs.now_ms)
    try:
        return _judge(order, inputs, config, nav_config, market, account, order_hash)
    except (ArithmeticError, ValueError, TypeError) as exc:
        log.warning(
            "an order could not be judged from its inputs: vetoed",
            extra={
                "event": "inputs_invalid",
                "order_id": order.order_id,
                "error": f"{type(exc).__name__}: {exc}"[:500],
            },
        )
        return vetoed(
            order.order_id,
            "inputs_invalid",
            inputs.now_ms,
            _safe_state(inputs, config),
            _safe_nav(inputs),
            order_hash or content_hash(order),
        )


def _safe_state(inputs: DecisionInputs, config: RiskConfig) -> TradingState:
    try:
        return trading_state(inputs, config)
    except (ArithmeticError, ValueError, TypeError):
        return "halted"


def _safe_nav(inputs: DecisionInputs) -> Snapshot | None:
    nav = inputs.nav
    return nav if nav is None or nav.nav.is_finite() else None


def _judge(
    order: Order,
    inputs: DecisionInputs,
    config: RiskConfig,
    nav_config: NavConfig,
    market: Market,
    account: AccountView | None,
    order_hash: str = "",
) -> Decision:
    # The steps, and the point where an error stops them (and so the quotes consulted), are
    # those of the per-order computation; ``account`` only saves repeating its parts.
    now = inputs.now_ms
    limit = position_age_limit_ms(config, nav_config)
    sources = account.sources if account is not None else venue_sources(inputs, order.venue, order.account)
    in_flight = pending(inputs, config)
    # What the account could hold once every order in flight filled, one side or the other:
    # |position| at its worst is at one end of [pos - sells, pos + buys].
    worst_abs: dict[str, Decimal] = {}
    marks: dict[str, Decimal] = {}
    stale = False
    for symbol in sorted(set(inputs.positions) | set(in_flight)):
        held = inputs.positions.get(symbol)
        qty = held.qty if held is not None else Decimal(0)
        if held is not None and (qty or symbol == order.symbol) and now - held.ts > limit:
            stale = True  # an old position may be anything now: no exemption, no exposure
        buys, sells = in_flight.get(symbol, (Decimal(0), Decimal(0)))
        worst = max(exact_add(qty, buys).copy_abs(), exact_add(qty, sells.copy_negate()).copy_abs())
        worst_abs[symbol] = worst
        if not worst:
            continue
        if held is not None and held.mark_price is not None:
            marks[symbol] = held.mark_price
        else:
            pair = split_symbol(symbol, config)
            price = last_price(pair[0], pair[1], market) if pair else None
            if price is not None:
                marks[symbol] = price
    own = inputs.positions.get(order.symbol)
    buys, sells = in_flight.get(order.symbol, (Decimal(0), Decimal(0)))
    return decide(
        order,
        config=config,
        now_ms=now,
        nav=inputs.nav,
        market=market,
        sources=sources,
        trading_state=account.trading_state() if account is not None else trading_state(inputs, config),
        position=own.qty if own is not None else Decimal(0),
        exposure=gross_exposure(worst_abs, marks, config, market),
        orders_last_minute=inputs.orders_last_minute,
        pending_buys=buys,
        pending_sells=sells,
        position_stale=stale,
        order_hash=order_hash,
    )


#: The canonical encoding: sorted keys, exact decimals, no whitespace.
canonical = msgspec.json.Encoder(order="deterministic", decimal_format="string").encode


def input_hash(order: Order, inputs: DecisionInputs) -> str:
    """SHA-256 of the order and its inputs, encoded canonically (sorted keys, exact decimals)."""
    return hashlib.sha256(canonical([order, inputs])).hexdigest()
