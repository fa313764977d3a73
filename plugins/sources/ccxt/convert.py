"""CCXT's unified balances, positions and tickers as the contract's events, exactly.

Every amount is the venue's decimal string (``number = str``), read with navstream's number
grammar (``common.exact``): a value that does not parse, or a ``None`` where the contract needs
a value, is a problem and the value is not published, never 0. Times are the venue's where the
answer has one (positions: the answer's, never a position's own last change; see
docs/sources.md for each exchange and kind), else the arrival time; a venue clock more than
5 s ahead is reported and not trusted, as in the other sources.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from navstream import Balance, Position, Price, numbers

from ..common import epoch_ms, exact, quoted, skew_problem, skewed

ZERO = Decimal(0)
#: Wide enough that contracts x contract size never rounds; the product is then bound-checked
#: (``Fetched`` moves an event out of bounds to the problems).
EXACT = decimal.Context(
    prec=2 * (numbers.MAX_INTEGER_DIGITS + numbers.MAX_FRACTION_DIGITS), traps=[decimal.InvalidOperation]
)


class Reader:
    """Turns one source's CCXT answers into events; holds what the source is called and maps."""

    def __init__(self, venue: str, account: str, assets: Mapping[str, str], source: str) -> None:
        self.venue = venue
        self.account = account
        self.assets = assets
        self.source = source

    def stamp(self, venue_ms: Any, arrival_ms: int, problems: list[str]) -> int:
        """The venue's time if it sent one that is not from the future, else the arrival time."""
        ts = epoch_ms(venue_ms)
        if ts is None:
            return arrival_ms
        if skewed(ts, arrival_ms):
            problem = skew_problem(self.venue)
            if problem not in problems:
                problems.append(problem)
            return arrival_ms
        return ts

    def desk_asset(self, venue_id: str, code: str) -> str:
        """The desk's code: an ``assets`` entry for the venue's id, else for CCXT's code, else CCXT's code."""
        return self.assets.get(venue_id) or self.assets.get(code) or code

    # --- balances ---------------------------------------------------------------------------

    def balances(
        self,
        balance: Any,
        ids: Mapping[str, list[str]],
        arrival_ms: int,
        problems: list[str],
        held: Mapping[str, str | None] | None = None,
    ) -> list[Balance]:
        """One ``balance`` per asset of CCXT's ``total`` (free + used, exact). ``ids`` is what CCXT
        mapped each code from; two venue ids on one desk asset are a problem for that asset.
        ``held`` (desk asset -> its ``venue_asset``) is what earlier answers published: an asset
        of it this answer does not mention at all is published as 0 (sold out, withdrawn,
        liquidated); one it mentions with a problem is neither published nor zeroed."""
        totals = balance.get("total") if isinstance(balance, dict) else None
        if not isinstance(totals, dict):
            raise ValueError("the balance answer has no totals")
        ts = self.stamp(balance.get("timestamp"), arrival_ms, problems)
        by_asset: dict[str, list[tuple[str, str]]] = {}
        mentioned: set[str] = set()
        for code in totals:
            venue_ids = ids.get(code) or [code]
            mentioned.update(self.desk_asset(venue_id, code) for venue_id in venue_ids)
            if len(venue_ids) > 1:  # CCXT kept one value for several venue codes: none can be told apart
                problems.append(
                    f"balance {code}: the venue reports it under {len(venue_ids)} codes ({', '.join(venue_ids)}) "
                    "that CCXT merges into one; not published"
                )
                continue
            by_asset.setdefault(self.desk_asset(venue_ids[0], code), []).append((venue_ids[0], code))
        out = []
        for asset, sources in by_asset.items():
            venue_ids = [venue_id for venue_id, _ in sources]
            if len(sources) > 1:
                problems.append(
                    f"balance {asset}: the venue reports it under {len(sources)} codes ({', '.join(venue_ids)}) "
                    "that `assets` maps to one asset; not published"
                )
                continue
            venue_id, code = sources[0]
            value = exact(totals[code])
            if value is None:
                problems.append(f"balance {asset}: total {quoted(totals[code])}: not a usable amount; not published")
                continue
            try:
                # the venue's own code, shown by `navstream nav` as "BTC (kraken: XXBT)"
                out.append(self._balance(ts, asset, value, venue_id if venue_id != asset else None))
            except ValueError as exc:
                problems.append(f"balance {quoted(asset)}: {exc}; not published")
        for asset, venue_asset in (held or {}).items():
            if asset not in mentioned:  # gone from a successful answer: the venue holds none now
                out.append(self._balance(ts, asset, ZERO, venue_asset))
        return out

    def _balance(self, ts: int, asset: str, value: Decimal, venue_asset: str | None) -> Balance:
        return Balance(
            ts=ts, venue=self.venue, account=self.account, asset=asset, balance=value, venue_asset=venue_asset
        )

    # --- positions --------------------------------------------------------------------------

    def positions(
        self, positions: Any, ts: int, arrival_ms: int, problems: list[str], markets: Mapping[str, Any] | None = None
    ) -> dict[str, Position | None]:
        """Symbol -> its ``position`` (signed qty = +/- contracts x contract size), or None when
        the venue listed it but a value the contract needs is unusable (a problem says which).
        Every position is stamped ``ts``, the answer's time: a position's own time is when it
        last *changed* (an untouched one would look hours old to the risk gate), and serves
        only to spot a venue clock running ahead of ours. With ``markets`` (the loaded ones), a
        position is read only on a loaded market: one whose market is not loaded (an OKX option,
        a contract listed since the last load) has an unknown size (CCXT may say 1) and is a
        problem, never a qty off by it; no size counts one unit per contract only off contracts."""
        if not isinstance(positions, list):
            raise ValueError("the positions answer is not a list")
        out: dict[str, Position | None] = {}
        for entry in positions:
            symbol = entry.get("symbol") if isinstance(entry, dict) else None
            if not isinstance(symbol, str) or not symbol:
                problems.append("a position without a symbol in the answer; not published")
                continue
            changed = epoch_ms(entry.get("lastUpdateTimestamp") or entry.get("timestamp"))
            if changed is not None and skewed(changed, arrival_ms) and skew_problem(self.venue) not in problems:
                problems.append(skew_problem(self.venue))
            position = self._position(symbol, entry, ts, problems, markets)
            if symbol in out:  # hedge mode: a long and a short leg of one symbol
                problems.append(f"position {symbol}: listed twice (hedge mode?); not published")
                out[symbol] = None
                continue
            out[symbol] = position
        return out

    def _position(
        self, symbol: str, entry: dict[str, Any], ts: int, problems: list[str], markets: Mapping[str, Any] | None
    ) -> Position | None:
        contracts, size = exact(entry.get("contracts")), entry.get("contractSize")
        multiplier = Decimal(1) if size is None else exact(size)
        market = markets.get(symbol) if markets is not None else None
        if markets is not None and not isinstance(market, dict):  # CCXT may make a size up (OKX: 1)
            multiplier, size = None, "unknown: its market is not loaded"
        elif size is None and isinstance(market, dict) and market.get("contract"):
            multiplier, size = None, "unknown: the contract's market has none"
        side = entry.get("side")
        entry_price, mark = exact(entry.get("entryPrice")), entry.get("markPrice")
        pnl = entry.get("unrealizedPnl")
        wrong = []
        if contracts is None:
            wrong.append(f"contracts {quoted(entry.get('contracts'))}")
        if multiplier is None:
            wrong.append(f"contractSize {quoted(size)}")
        if contracts is not None and contracts < 0:  # the side signs it: a signed count would flip a short
            wrong.append(f"contracts {quoted(entry.get('contracts'))} (negative beside side {quoted(side)})")
        elif contracts and side not in ("long", "short"):
            wrong.append(f"side {quoted(side)}")
        if entry_price is None:
            wrong.append(f"entryPrice {quoted(entry.get('entryPrice'))}")
        for name, value in (("markPrice", mark), ("unrealizedPnl", pnl)):
            if value is not None and exact(value) is None:
                wrong.append(f"{name} {quoted(value)}")
        if wrong or contracts is None or multiplier is None or entry_price is None:
            problems.append(f"position {symbol}: {', '.join(wrong)} not usable; not published")
            return None
        qty = EXACT.multiply(contracts, multiplier)
        if side == "short":
            qty = -qty
        try:
            return Position(
                ts=ts,
                venue=self.venue,
                account=self.account,
                symbol=symbol,
                qty=qty,
                entry_price=entry_price,
                mark_price=exact(mark) if mark is not None else None,
                unrealized_pnl=exact(pnl) if pnl is not None else None,
            )
        except ValueError as exc:
            problems.append(f"position {symbol}: {exc}; not published")
            return None

    def closed(self, symbol: str, ts: int) -> Position:
        """A position the venue no longer lists: closed (absolute snapshots need the 0)."""
        return Position(ts=ts, venue=self.venue, account=self.account, symbol=symbol, qty=ZERO, entry_price=ZERO)

    # --- prices -----------------------------------------------------------------------------

    def price(self, symbol: str, market: Any, ticker: Any, arrival_ms: int, problems: list[str]) -> Price | None:
        """The last price of ``symbol`` in its quote currency, or None and a problem."""
        if not isinstance(ticker, dict):
            problems.append(f"price {symbol}: not in the venue's answer; not published (never as 0)")
            return None
        if ticker.get("last") is None:
            problems.append(
                f"price {symbol}: no usable last price in the venue's answer; not published (never a derived one)"
            )
            return None
        last = exact(ticker.get("last"))
        if last is None or last <= 0:
            problems.append(f"price {symbol}: last {quoted(ticker.get('last'))}: not a usable price; not published")
            return None
        base, quote = market.get("base"), market.get("quote")
        base_id, quote_id = market.get("baseId") or base, market.get("quoteId") or quote
        ts = self.stamp(ticker.get("timestamp"), arrival_ms, problems)
        try:
            return Price(
                ts=ts,
                base=self.desk_asset(str(base_id), str(base)),
                quote=self.desk_asset(str(quote_id), str(quote)),
                price=last,
                source=self.source,
            )
        except ValueError as exc:
            problems.append(f"price {symbol}: {exc}; not published")
            return None
