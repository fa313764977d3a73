"""Everything one decision rests on, as one value that can be logged and judged again.

The gate reads its inputs from Redis into a :class:`DecisionInputs`, judges the order with
:func:`judge`, and writes both to the audit log with a hash of them. ``navstream risk replay``
decodes the same value from the log and calls the same :func:`judge`, so a replay differs from
the original only if the rules or the config did. Of the prices, only those the decision
consulted are kept (:class:`RecordingMarket` notes them), so a record stays small while
judging it again sees exactly what the original saw.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

import msgspec
from navstream import Order
from navstream.plugins.nav.config import NavConfig
from navstream.plugins.nav.valuation import Market, Quote, Snapshot, SourceState, Unit

from .config import RiskConfig
from .decide import Decision, TradingState, decide, gross_exposure, last_price, split_symbol, worst_state
from .trading import TradingRecord, follow_nav


class PositionInput(msgspec.Struct, frozen=True, array_like=True):
    qty: Decimal
    mark_price: Decimal | None = None


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


class RecordingMarket(Market):
    """A :class:`Market` that notes every pair it was asked to price since :meth:`reset`,
    including those behind an asset's value that it had cached for an earlier order."""

    def __init__(self, config: NavConfig, quotes: list[Quote], sources: list[SourceState], now_ms: int):
        super().__init__(config, quotes, sources, now_ms)
        self.consulted: set[tuple[str, str]] = set()
        self._deps: dict[str, set[tuple[str, str]]] = {}

    def reset(self) -> None:
        self.consulted = set()

    def pick(self, base: str, quote: str) -> tuple[Quote | None, str, list[str], int]:
        self.consulted.add((base, quote))
        return super().pick(base, quote)

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
    NAVs (so a drawdown vetoes at once, before a tick has stored the record)."""
    account = follow_nav(inputs.account_state, inputs.nav, config, inputs.now_ms) if inputs.nav else inputs.account_state
    desk = follow_nav(inputs.desk_state, inputs.desk_nav, config, inputs.now_ms) if inputs.desk_nav \
        else inputs.desk_state
    return worst_state((account.state, desk.state))


def judge(order: Order, inputs: DecisionInputs, config: RiskConfig, nav_config: NavConfig,
          market: Market | None = None) -> Decision:
    """Decide ``order`` from ``inputs``. ``market`` (the live one, holding every price) may be
    given to save building one; it must hold what ``inputs.quotes`` holds for every pair the
    decision consults."""
    if market is None:
        market = Market(nav_config, inputs.quotes, inputs.sources, inputs.now_ms)
    venue_sources = [s for s in inputs.sources
                     if s.venue == order.venue and (s.account is None or s.account == order.account)]
    marks: dict[str, Decimal] = {}
    positions: dict[str, Decimal] = {}
    for symbol, held in inputs.positions.items():
        positions[symbol] = held.qty
        if not held.qty:
            continue
        if held.mark_price is not None:
            marks[symbol] = held.mark_price
        else:
            pair = split_symbol(symbol, config)
            price = last_price(pair[0], pair[1], market) if pair else None
            if price is not None:
                marks[symbol] = price
    return decide(
        order, config=config, now_ms=inputs.now_ms, nav=inputs.nav, market=market, sources=venue_sources,
        trading_state=trading_state(inputs, config), position=positions.get(order.symbol, Decimal(0)),
        exposure=gross_exposure(positions, marks, config, market),
        orders_last_minute=inputs.orders_last_minute,
    )


_canonical = msgspec.json.Encoder(order="deterministic", decimal_format="string").encode


def input_hash(order: Order, inputs: DecisionInputs) -> str:
    """SHA-256 of the order and its inputs, encoded canonically (sorted keys, exact decimals)."""
    return hashlib.sha256(_canonical([order, inputs])).hexdigest()
