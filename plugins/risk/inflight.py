"""Orders in flight: what the gate keeps of each order it approved, when one still counts, and
what an account's add up to per symbol.

An approved order counts toward its account's position and exposure until a position of its
symbol observed after its approval covers it, or ``open_order_ttl_s`` passes (:func:`counts`).
Within one batch the clock and the positions are fixed, so an account's orders in flight are
summed once per batch (:class:`PendingBook`) and the sums kept up to date with the batch's own
approvals: each order then reads its account's sums, O(symbols), never the orders themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

import msgspec

from navstream.plugins.nav.api import exact_add


class InFlight(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """An order the gate approved and no position update has covered yet. Untracked by the
    garbage collector (it holds no references that could form a cycle): a backlog of them,
    kept decoded across batches, would otherwise lengthen every full collection."""

    order_id: str
    symbol: str
    side: str
    qty: Decimal
    #: When it was approved (epoch ms, the gate's clock).
    at: int


class PendingQty(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What one symbol's orders in flight add up to, as a decision counted them (:func:`counts`)."""

    buys: Decimal
    sells: Decimal
    #: How many orders were counted, and when the oldest was approved (epoch ms): not judged,
    #: kept so an auditor can tell a burst from a backlog.
    orders: int
    oldest: int


def counts(at: int, observed: int | None, now_ms: int, ttl_ms: int) -> bool:
    """Whether an order approved at ``at`` still counts in flight at ``now_ms``: approved at
    most ``ttl_ms`` ago, and not covered by a position of its symbol observed after it
    (``observed``; None: none). The same millisecond may be before it: it does not cover.
    Once it does not count, it never will again (positions are last-``ts``-wins, ages grow)."""
    return now_ms - at <= ttl_ms and (observed is None or observed <= at)


class PendingBook:
    """One account's orders in flight, summed per symbol as :func:`counts` counts them, for one
    batch (one clock, one read of the positions): built once from what Redis holds, then kept
    up to date with each approval of the batch, so each order reads the sums instead of
    walking every order in flight.

    Exact sums of positive quantities do not depend on the order they are added in (nor does
    whether one exceeds the exact digits); a sum over anything else (an entry written by hand)
    is taken in the order the gate always took it: by approval time, then order id."""

    def __init__(self, observed: Mapping[str, int], now_ms: int, ttl_ms: int) -> None:
        #: symbol -> when the account's position in it was observed (epoch ms).
        self.observed = observed
        self.now_ms = now_ms
        self.ttl_ms = ttl_ms
        self.sums: dict[str, PendingQty] = {}
        #: Why the sums cannot be taken exactly ('' while they can): every later order vetoes.
        self.error = ""

    def counts(self, order: InFlight) -> bool:
        return counts(order.at, self.observed.get(order.symbol), self.now_ms, self.ttl_ms)

    def add_counted(self, orders: Sequence[InFlight], ordered: bool = False) -> None:
        """Sum ``orders``, each one that :meth:`counts`. ``ordered``: they come in the order
        to sum them in already."""
        if self.error:
            return
        if not ordered and orders and not _all_positive(orders):
            orders, ordered = sorted(orders, key=lambda o: (o.at, o.order_id)), True
        if ordered:
            for o in orders:
                self._add(o)
            return
        # Positive quantities: per symbol and side, in one pass, with no record built per order.
        groups: dict[str, tuple[list[Decimal], list[Decimal], list[int]]] = {}
        for o in orders:
            group = groups.get(o.symbol)
            if group is None:
                group = groups[o.symbol] = ([], [], [])
            (group[0] if o.side == "buy" else group[1]).append(o.qty)
            group[2].append(o.at)
        for symbol, (buys, sells, ats) in groups.items():
            held = self.sums.get(symbol) or PendingQty(Decimal(0), Decimal(0), 0, min(ats))
            try:
                total_buys, total_sells = _sum(held.buys, buys), _sum(held.sells, sells)
            except ArithmeticError as exc:  # the exact sum needs more digits than money may have
                self.error = self.error or f"{type(exc).__name__}: {exc}"
                return
            self.sums[symbol] = PendingQty(total_buys, total_sells, held.orders + len(ats), min(held.oldest, min(ats)))

    def approve(self, order: InFlight) -> None:
        """An order of this batch was approved: the orders after it see it in flight."""
        if self.counts(order):
            self._add(order)

    def _add(self, o: InFlight) -> None:
        if self.error:
            return
        held = self.sums.get(o.symbol)
        try:
            if held is None:
                zero = Decimal(0)
                buys, sells = (exact_add(zero, o.qty), zero) if o.side == "buy" else (zero, exact_add(zero, o.qty))
                self.sums[o.symbol] = PendingQty(buys, sells, 1, o.at)
                return
            buys, sells = held.buys, held.sells
            if o.side == "buy":
                buys = exact_add(buys, o.qty)
            else:
                sells = exact_add(sells, o.qty)
        except ArithmeticError as exc:  # the exact sum needs more digits than money may have
            self.error = f"{type(exc).__name__}: {exc}"
            return
        self.sums[o.symbol] = PendingQty(buys, sells, held.orders + 1, min(held.oldest, o.at))

    def snapshot(self) -> dict[str, PendingQty]:
        """The sums as they stand (a copy: later approvals must not show in a record); none
        once they cannot be taken (then :attr:`error` says why)."""
        return {} if self.error else dict(self.sums)


def _all_positive(orders: Sequence[InFlight]) -> bool:
    try:
        return min(o.qty for o in orders) > 0
    except ArithmeticError:  # a NaN, written by hand
        return False


def _sum(start: Decimal, values: list[Decimal]) -> Decimal:
    total = start
    for value in values:
        total = exact_add(total, value)
    return total
