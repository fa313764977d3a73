"""The market a NAV is valued in: the inputs (balances, quotes, source reports) at one instant,
and how one unit of an asset is valued in the report currency by the config's routing rules.

Nothing here reads Redis or remembers anything beyond one evaluation: a :class:`Market` is built
from the latest snapshots and the clock, so every consumer picks the same quotes.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

import msgspec

from .config import NavConfig
from .money import InexactError, exact_mul
from .snapshot import NEVER, UNKNOWN_RECEIPT, PriceUsed, counted_from

# --- inputs -------------------------------------------------------------------------------------


class Holding(msgspec.Struct, frozen=True):
    """The latest ``balance`` of one asset in one account."""

    balance: Decimal
    unrealized_pnl: Decimal
    #: The source's stamp: orders snapshots (last ``ts`` wins) and is shown as the input's age.
    ts: int
    #: When navstream received it (the batch's clock, epoch ms): freshness is judged from
    #: ``min(ts, received)`` (:attr:`seen`). :data:`UNKNOWN_RECEIPT` for one stored without;
    #: NEVER (the default, for inputs built in code) judges by ``ts`` alone.
    received: int = NEVER
    #: The venue's own code for the asset when its source renamed it (``XXBT`` for ``BTC``);
    #: "" when the venue calls it the same, or the balance was stored without it.
    venue_asset: str = ""

    @property
    def seen(self) -> int:
        """When it counts from for freshness (:func:`counted_from`)."""
        return self.received if self.received < self.ts else self.ts


class Quote(msgspec.Struct, frozen=True):
    """The latest ``price`` of one pair from one source."""

    base: str
    quote: str
    source: str
    price: Decimal
    ts: int
    #: As :attr:`Holding.received`.
    received: int = NEVER

    @property
    def seen(self) -> int:
        return self.received if self.received < self.ts else self.ts


class SourceState(msgspec.Struct, frozen=True):
    """The latest ``source_status`` of one source (of one account, or venue-wide)."""

    venue: str
    source: str
    account: str | None
    ok: bool
    error: str
    ts: int
    #: As :attr:`Holding.received`.
    received: int = NEVER

    @property
    def seen(self) -> int:
        return self.received if self.received < self.ts else self.ts

    @property
    def label(self) -> str:
        return f"{self.venue}/{self.source}" + (f"/{self.account}" if self.account else "")


# --- valuing one unit ---------------------------------------------------------------------------


class Unit(msgspec.Struct, frozen=True):
    value: Decimal | None
    route: list[str]
    prices: list[PriceUsed]
    missing: str = ""
    stale: list[str] = []
    missing_code: str = ""
    #: Before ``oldest + max_age``, time alone cannot change this unit (see ``Market.pick``).
    oldest: int = NEVER
    #: The oldest moment the prices used count from (what ``as_of`` rests on); set by ``Market.unit``.
    price_ts: int = NEVER


def never_reported_source(source: str) -> str:
    """The ``stale_sources`` entry of a price source that never sent a ``source_status``."""
    return f"source:*/{source}/never-reported"


def never_reported_account(venue: str, account: str) -> str:
    """The ``stale_sources`` entry of an account whose venue never sent a ``source_status``
    (venue-wide or for that account)."""
    return f"source:{venue}/never-reported/{account}"


def as_of_ts(ts: int, received: int) -> int:
    """What an input adds to ``as_of``: when it counts from (:func:`counted_from`), or its
    ``ts`` when its receipt time is unknown (then it is stale anyway)."""
    return ts if received == UNKNOWN_RECEIPT else counted_from(ts, received)


class Market:
    """Prices and source reports at one instant, and the config's routing rules."""

    def __init__(self, config: NavConfig, quotes: Iterable[Quote], sources: Iterable[SourceState], now_ms: int):
        self.config = config
        self.now_ms = now_ms
        self.max_age_ms = config.max_age_ms
        self.quotes: dict[tuple[str, str], list[Quote]] = {}
        for q in quotes:
            self.quotes.setdefault((q.base, q.quote), []).append(q)
        self.sources = list(sources)
        #: venue -> its reports; source name -> its reports (price sources are judged by name).
        self.by_venue: dict[str, list[SourceState]] = {}
        self.by_source: dict[str, list[SourceState]] = {}
        for s in self.sources:
            self.by_venue.setdefault(s.venue, []).append(s)
            self.by_source.setdefault(s.source, []).append(s)
        self.unmonitored = frozenset(config.unmonitored_price_sources)
        self._units: dict[str, Unit] = {}

    def age_limit(self) -> str:
        return f"limit {self.config.max_age_s:g} s"

    def too_old(self, ts: int) -> bool:
        """Whether an input counting from ``ts`` (its :attr:`~Holding.seen`) is past the limit."""
        return self.now_ms - ts > self.max_age_ms

    def age_s(self, ts: int) -> str:
        return f"{(self.now_ms - ts) / 1000:g} s"

    def aged(self, ts: int, received: int) -> str:
        """How old an input is, for a reason: ``130 s old``, with why when its receipt decides."""
        if received == UNKNOWN_RECEIPT:
            return "stored without a receipt time (by an earlier navstream), so stale until sent again"
        if received < ts:
            return (
                f"{self.age_s(received)} old counted from its receipt (stamped "
                f"{(ts - received) / 1000:g} s ahead of it)"
            )
        return f"{self.age_s(ts)} old"

    def pick(self, base: str, quote: str) -> tuple[Quote | None, str, list[str], int]:
        """The quote that prices ``base/quote``: the newest fresh one, else the newest at all
        (then stale); "newest" and "fresh" by when each counts from (:attr:`Quote.seen`).
        Returns (quote, why not, stale reasons, horizon): before the horizon (the oldest fresh
        quote's, or its source's report's) the answer cannot change by time."""
        pair = f"{base}/{quote}"
        quotes = self.quotes.get((base, quote), [])
        if not quotes:
            return None, f"no price for {pair}", [], NEVER
        fresh = [q for q in quotes if not self.too_old(q.seen)]
        horizon = min((q.seen for q in fresh), default=NEVER)
        if len({q.source for q in fresh}) >= 2:
            low = min(fresh, key=lambda q: (q.price, q.source))
            high = max(fresh, key=lambda q: (q.price, q.source))
            spread = (high.price - low.price) / low.price * 100
            if spread > Decimal(str(self.config.max_price_divergence_pct)):
                return (
                    None,
                    (
                        f"{pair} quotes diverge: {low.source} {low.price} vs {high.source} {high.price} "
                        f"({spread:.2f}% > {self.config.max_price_divergence_pct:g}%)"
                    ),
                    [],
                    horizon,
                )
        chosen = None  # the newest; on equal times the first source by name, as every consumer picks
        for q in fresh or quotes:
            if chosen is None or q.seen > chosen.seen or (q.seen == chosen.seen and q.source < chosen.source):
                chosen = q
        assert chosen is not None
        stale = []
        if self.too_old(chosen.seen):
            stale.append(f"price:{pair}@{chosen.source}")
        stale.extend(self._source_problems(chosen.source))
        for s in self.by_source.get(chosen.source, ()):
            if s.seen < horizon:
                horizon = s.seen
        return chosen, "", stale, horizon

    def _source_problems(self, source: str) -> list[str]:
        """A price source that reports failure, stopped reporting, or never reported (unless
        ``[nav] unmonitored_price_sources`` names it) makes its prices stale."""
        reports = self.by_source.get(source)
        if not reports:
            return [] if source in self.unmonitored else [never_reported_source(source)]
        return [f"source:{s.label}" for s in reports if not s.ok or self.too_old(s.seen)]

    def unit(self, asset: str) -> Unit:
        """Value of one ``asset`` in the report currency, by the explicit routing rules."""
        held = self._units.get(asset)
        if held is None:
            unit = self._unit(asset)
            held = self._units[asset] = msgspec.structs.replace(
                unit, price_ts=min((as_of_ts(p.ts, p.received) for p in unit.prices), default=NEVER)
            )
        return held

    def _unit(self, asset: str) -> Unit:
        config = self.config
        if asset == config.quote:
            return Unit(Decimal(1), [f"{asset} is the report currency"], [])
        if asset in config.pegs:
            return Unit(config.pegs[asset], [f"{asset} peg {config.pegs[asset]}"], [])
        if asset in config.routes:
            pair_quote = config.routes[asset].partition("/")[2]
            how = "route"
        else:
            pair_quote = config.quote
            how = "direct"
        quote, why, stale, horizon = self.pick(asset, pair_quote)
        if quote is None:
            code = "price_missing" if why.startswith("no price for") else "price_divergence"
            if how == "direct" and code == "price_missing":
                why = f"{why}, and no route or peg for {asset} in [nav]"
            return Unit(None, [], [], why, [], code, horizon)
        used = PriceUsed(f"{asset}/{pair_quote}", quote.source, quote.price, quote.ts, quote.received)
        step = f"{asset}/{pair_quote}@{quote.source}"
        if pair_quote == config.quote:
            return Unit(quote.price, [step], [used], "", stale, "", horizon)
        rest = self.unit(pair_quote)
        horizon = min(horizon, rest.oldest)
        route, prices = [step, *rest.route], [used, *rest.prices]
        if rest.value is None:
            return Unit(
                None, route, prices, f"{pair_quote}: {rest.missing}", stale + rest.stale, rest.missing_code, horizon
            )
        try:
            value = exact_mul(quote.price, rest.value)
        except InexactError as exc:  # never rounded: not valued, and said so
            return Unit(
                None,
                route,
                prices,
                f"unit value along {' -> '.join(route)}: {exc}",
                stale + rest.stale,
                "value_inexact",
                horizon,
            )
        return Unit(value, route, prices, "", stale + rest.stale, "", horizon)
