"""Valuation and status rules: pure functions of the latest snapshots and the clock.

Nothing here reads Redis or remembers anything, so a NAV is the same whoever computes it, and
the property tests can recompute one from scratch. A value that cannot be established is never
replaced by 0, 1 or a configured figure: the holding is listed as missing, with the reason.
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from typing import Iterable, Literal, Mapping, Sequence

import msgspec

from navstream.keys import escape_name, scope_id

from .config import AccountSpec, NavConfig

Status = Literal["ok", "stale", "partial", "failed"]
#: Worse statuses win upward (account to venue to total).
RANK: dict[str, int] = {"ok": 0, "stale": 1, "partial": 2, "failed": 3}
ZERO = Decimal(0)
#: A ts no input will ever reach: "time alone never changes this".
NEVER = 2**62
#: Enough digits that chained prices times 8-decimal balances are never rounded.
CONTEXT = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN)


def money(value: Decimal) -> str:
    """An exact decimal string, never in exponent form (``0E-8`` reads as ``0.00000000``)."""
    return format(value, "f")


def worst_by(rank: Mapping[str, int], values: Iterable[str], best: str) -> str:
    """The value of highest ``rank`` among ``values`` (``best`` when there are none)."""
    return max(values, key=rank.__getitem__, default=best)


def worst(statuses: Iterable[str]) -> Status:
    return worst_by(RANK, statuses, "ok")  # type: ignore[return-value]


# --- inputs -------------------------------------------------------------------------------------


class Holding(msgspec.Struct, frozen=True):
    """The latest ``balance`` of one asset in one account."""

    balance: Decimal
    unrealized_pnl: Decimal
    ts: int


class Quote(msgspec.Struct, frozen=True):
    """The latest ``price`` of one pair from one source."""

    base: str
    quote: str
    source: str
    price: Decimal
    ts: int


class SourceState(msgspec.Struct, frozen=True):
    """The latest ``source_status`` of one source (of one account, or venue-wide)."""

    venue: str
    source: str
    account: str | None
    ok: bool
    error: str
    ts: int

    @property
    def label(self) -> str:
        return f"{self.venue}/{self.source}" + (f"/{self.account}" if self.account else "")


# --- outputs ------------------------------------------------------------------------------------


class PriceUsed(msgspec.Struct, frozen=True):
    pair: str
    source: str
    price: Decimal
    ts: int


class HoldingValue(msgspec.Struct, frozen=True, omit_defaults=True):
    """One holding as valued, with everything needed to explain it."""

    asset: str
    balance: Decimal
    unrealized_pnl: Decimal
    ts: int
    #: Value of one unit in the report currency; None when it could not be established.
    unit: Decimal | None = None
    value: Decimal | None = None
    #: How the unit value was found: ``["BTC/USDT@binance-spot", "USDT peg 1"]``.
    route: list[str] = []
    prices: list[PriceUsed] = []
    #: Why the holding is not in the NAV (then it is listed in ``missing``).
    missing: str = ""
    #: ``price_missing`` or ``price_divergence`` when ``missing``.
    missing_code: str = ""
    #: Why an input of it is stale.
    stale: list[str] = []

    @property
    def amount(self) -> Decimal:
        return self.balance + self.unrealized_pnl


class Snapshot(msgspec.Struct, frozen=True, omit_defaults=True):
    """The NAV of one scope at one evaluation: what ``P:nav`` and ``P:state:nav:latest`` hold."""

    scope: str
    nav: Decimal
    quote: str
    status: Status
    #: Oldest ``ts`` of the balances and prices the value rests on; 0 when it rests on nothing.
    as_of: int
    computed_at: int
    venue: str = ""
    account: str = ""
    kind: str = ""
    label: str = ""
    #: ``venue/account/ASSET`` of every holding that could not be valued.
    missing: list[str] = []
    #: ``balance:...``, ``price:...``, ``source:...`` inputs past their limit or failing.
    stale_sources: list[str] = []
    #: Human-readable reasons for any status but ``ok``.
    reasons: list[str] = []
    #: Account scope: every holding as valued.
    holdings: list[HoldingValue] = []
    #: Aggregate scopes: the accounts added up.
    accounts: list[str] = []
    #: Account scope: it has holdings and every one reads 0 (a wallet reading 0 is alerted).
    zero_wallet: bool = False
    #: Account scope: until when (epoch ms) no input it rests on can pass its age limit; a batch
    #: may add up this snapshot unchanged only before then (0: judge again every time).
    fresh_until: int = 0
    #: When this scope entered its current status (epoch ms), as its consumer saw it.
    since: int = 0
    #: The ``P:nav`` version last published for this scope, and when: a change is published at
    #: once, an unchanged scope again after ``publish_every_s``.
    published: str = ""
    published_at: int = 0

    @property
    def scope_id(self) -> str:
        return scope_id(self.scope, self.venue, self.account)

    def stream_fields(self) -> dict[str, str]:
        """The ``P:nav`` entry (contract fields, plus ``kind``, ``label`` and ``reasons``)."""
        fields = {"scope": self.scope, "nav": money(self.nav), "quote": self.quote, "status": self.status,
                  "as_of": str(self.as_of), "computed_at": str(self.computed_at)}
        if self.venue:
            fields["venue"] = self.venue
        if self.account:
            fields["account"] = self.account
        if self.kind:
            fields["kind"] = self.kind
        if self.label:
            fields["label"] = self.label
        if self.missing:
            fields["missing"] = ",".join(self.missing)
        if self.stale_sources:
            fields["stale_sources"] = ",".join(self.stale_sources)
        if self.reasons:
            fields["reasons"] = "; ".join(self.reasons)
        return fields

    @staticmethod
    def version(fields: Mapping[str, str]) -> str:
        """What makes a publication of ``stream_fields()`` new: the value and all said of it."""
        return "|".join((fields["nav"], fields["status"], fields.get("missing", ""), fields.get("stale_sources", "")))


def as_read(snap: Snapshot, now_ms: int) -> Snapshot:
    """``snap`` as a reader must take it at ``now_ms``: a stored ``ok`` holds only before its
    ``fresh_until``; from that moment it is ``stale``, whatever tick has not yet said so.

    Every reader of ``P:state:nav:latest`` (the risk gate, ``navstream nav``, the status page,
    ``/readyz``, sinks) goes through this, so no reader trusts a NAV longer than the NAV's own
    age limit. A snapshot without ``fresh_until`` (0) cannot show it is fresh: stale.
    """
    if snap.status != "ok" or now_ms < snap.fresh_until:
        return snap
    why = (f"an input passed its age limit {(now_ms - snap.fresh_until) / 1000:g} s ago (not yet re-evaluated)"
           if snap.fresh_until else "stored without a freshness horizon (not yet re-evaluated)")
    return msgspec.structs.replace(snap, status="stale", reasons=[why, *snap.reasons])


# The core's, so every reader of P:state:nav:latest (status page, sinks) names scopes alike.
escape = escape_name


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
    #: The oldest ts of the prices used (what ``as_of`` rests on); set by ``Market.unit``.
    price_ts: int = NEVER


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
        self._units: dict[str, Unit] = {}

    def age_limit(self) -> str:
        return f"limit {self.config.max_age_s:g} s"

    def too_old(self, ts: int) -> bool:
        return self.now_ms - ts > self.max_age_ms

    def age_s(self, ts: int) -> str:
        return f"{(self.now_ms - ts) / 1000:g} s"

    def pick(self, base: str, quote: str) -> tuple[Quote | None, str, list[str], int]:
        """The quote that prices ``base/quote``: the newest fresh one, else the newest at all
        (then stale). Returns (quote, why not, stale reasons, horizon): before the horizon (the
        oldest fresh quote's ts, or its source's report's) the answer cannot change by time."""
        pair = f"{base}/{quote}"
        quotes = self.quotes.get((base, quote), [])
        if not quotes:
            return None, f"no price for {pair}", [], NEVER
        fresh = [q for q in quotes if not self.too_old(q.ts)]
        horizon = min((q.ts for q in fresh), default=NEVER)
        if len({q.source for q in fresh}) >= 2:
            low = min(fresh, key=lambda q: (q.price, q.source))
            high = max(fresh, key=lambda q: (q.price, q.source))
            spread = (high.price - low.price) / low.price * 100
            if spread > Decimal(str(self.config.max_price_divergence_pct)):
                return None, (f"{pair} quotes diverge: {low.source} {low.price} vs {high.source} {high.price} "
                              f"({spread:.2f}% > {self.config.max_price_divergence_pct:g}%)"), [], horizon
        chosen = None  # the newest; on equal ts the first source by name, as every consumer picks
        for q in fresh or quotes:
            if chosen is None or q.ts > chosen.ts or (q.ts == chosen.ts and q.source < chosen.source):
                chosen = q
        assert chosen is not None
        stale = []
        if self.too_old(chosen.ts):
            stale.append(f"price:{pair}@{chosen.source}")
        stale.extend(self._source_problems(chosen.source))
        for s in self.by_source.get(chosen.source, ()):
            if s.ts < horizon:
                horizon = s.ts
        return chosen, "", stale, horizon

    def _source_problems(self, source: str) -> list[str]:
        """A price source that reports failure, or stopped reporting, makes its prices stale."""
        return [f"source:{s.label}" for s in self.by_source.get(source, ())
                if not s.ok or self.too_old(s.ts)]

    def unit(self, asset: str) -> Unit:
        """Value of one ``asset`` in the report currency, by the explicit routing rules."""
        held = self._units.get(asset)
        if held is None:
            unit = self._unit(asset)
            held = self._units[asset] = msgspec.structs.replace(
                unit, price_ts=min((p.ts for p in unit.prices), default=NEVER))
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
        used = PriceUsed(f"{asset}/{pair_quote}", quote.source, quote.price, quote.ts)
        step = f"{asset}/{pair_quote}@{quote.source}"
        if pair_quote == config.quote:
            return Unit(quote.price, [step], [used], "", stale, "", horizon)
        rest = self.unit(pair_quote)
        horizon = min(horizon, rest.oldest)
        if rest.value is None:
            return Unit(None, [step, *rest.route], [used, *rest.prices], f"{pair_quote}: {rest.missing}",
                        stale + rest.stale, rest.missing_code, horizon)
        value = CONTEXT.multiply(quote.price, rest.value)  # exact: 60 digits
        return Unit(value, [step, *rest.route], [used, *rest.prices], "", stale + rest.stale, "", horizon)


# --- one account --------------------------------------------------------------------------------


def value_account(
    venue: str,
    account: str,
    spec: AccountSpec | None,
    holdings: Mapping[str, Holding],
    market: Market,
    details: bool = True,
) -> Snapshot:
    """The NAV of one account: sum over assets of (balance + unrealized PnL) x unit value.

    ``details`` lists every holding as valued (what ``navstream nav`` shows); without it, only
    the holdings that could not be valued are listed (what alerts need): the hot path.
    """
    config = market.config
    kind = spec.kind if spec else "unclassified"
    label = spec.label if spec else ""
    where = f"{venue}/{account}"
    stale_sources: list[str] = []
    reasons: list[str] = []
    limit = market.now_ms - market.max_age_ms  # an input stamped before this is stale
    earliest = market.now_ms  # the oldest input ts, sources included: fixes fresh_until
    for s in market.by_venue.get(venue, ()):
        if s.account is not None and s.account != account:
            continue
        earliest = min(earliest, s.ts)
        if not s.ok:
            stale_sources.append(f"source:{s.label}")
            reasons.append(f"source {s.label} reports failure: {s.error or 'no error given'}")
        elif s.ts < limit:
            stale_sources.append(f"source:{s.label}")
            reasons.append(f"source {s.label} last reported {market.age_s(s.ts)} ago ({market.age_limit()})")
    if not holdings:
        reasons.insert(0, "no balance data for this account")
        return Snapshot("account", ZERO, config.quote, "failed", 0, market.now_ms, venue, account, kind, label,
                        [], stale_sources, reasons)
    total = ZERO
    valued = 0
    zero = True
    missing: list[str] = []
    values: list[HoldingValue] = []
    oldest = min(h.ts for h in holdings.values())
    unit_of = market.unit
    with decimal.localcontext(CONTEXT):
        for asset in sorted(holdings):
            h = holdings[asset]
            stale: list[str] = [f"balance:{where}/{asset}"] if h.ts < limit else []
            if stale:
                reasons.append(f"balance of {asset} is {market.age_s(h.ts)} old ({market.age_limit()})")
            amount = h.balance + h.unrealized_pnl
            if not amount:  # 0 of anything is 0: a sold-out asset needs no price
                valued += 1
                if stale:
                    stale_sources.extend(stale)
                if details:
                    values.append(HoldingValue(asset, h.balance, h.unrealized_pnl, h.ts, None, ZERO,
                                               ["zero holding: needs no price"], [], "", "", stale))
                continue
            zero = False
            unit = unit_of(asset)
            if unit.oldest < earliest:
                earliest = unit.oldest
            if unit.price_ts < oldest:
                oldest = unit.price_ts
            if unit.stale:
                stale += [s for s in unit.stale if s not in stale]
            if unit.value is None:
                missing.append(f"{where}/{asset}")
                reasons.append(f"{asset} not valued: {unit.missing}")
                values.append(HoldingValue(asset, h.balance, h.unrealized_pnl, h.ts, None, None, unit.route,
                                           unit.prices, unit.missing, unit.missing_code, stale))
            else:
                value = amount * unit.value
                total += value
                valued += 1
                for why in unit.stale:
                    if why.startswith("price:"):
                        reasons.append(f"{asset}: price {why[6:]} is older than {config.max_age_s:g} s")
                    else:
                        reasons.append(f"{asset}: price source {why[7:]} failing or silent")
                if details:
                    values.append(HoldingValue(asset, h.balance, h.unrealized_pnl, h.ts, unit.value, value,
                                               unit.route, unit.prices, "", "", stale))
            if stale:
                stale_sources.extend(s for s in stale if s not in stale_sources)
    if valued == 0:
        status: Status = "failed"
        reasons.insert(0, "no holding of this account could be valued")
    elif missing:
        status = "partial"
    elif stale_sources:
        status = "stale"
    else:
        status = "ok"
    return Snapshot("account", total, config.quote, status, oldest, market.now_ms, venue, account, kind,
                    label, missing, _unique(stale_sources), _unique(reasons), values, zero_wallet=zero,
                    fresh_until=min(earliest, oldest) + market.max_age_ms)


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


# --- adding up ----------------------------------------------------------------------------------


def aggregate(scope: str, accounts: Sequence[Snapshot], quote: str, now_ms: int, venue: str = "") -> Snapshot:
    """Venue, exchange and total NAV: the sum of their accounts, as bad as the worst of them."""
    total = ZERO
    with decimal.localcontext(CONTEXT):
        for a in accounts:
            total += a.nav
    status = worst(a.status for a in accounts) if accounts else "failed"
    reasons = [f"{a.venue}/{a.account} is {a.status}" + (f": {a.reasons[0]}" if a.reasons else "")
               for a in accounts if a.status != "ok"]
    if not accounts:
        reasons = ["no accounts"]
    return Snapshot(
        scope, total, quote, status, min((a.as_of for a in accounts), default=0), now_ms, venue=venue,
        missing=_unique([m for a in accounts for m in a.missing]),
        stale_sources=_unique([s for a in accounts for s in a.stale_sources]),
        reasons=reasons, accounts=[f"{a.venue}/{a.account}" for a in accounts],
    )


def evaluate(
    config: NavConfig,
    balances: Mapping[tuple[str, str], Mapping[str, Holding]],
    market: Market,
    only: Iterable[tuple[str, str]] | None = None,
    known: Mapping[tuple[str, str], Snapshot] | None = None,
    details: bool = True,
) -> list[Snapshot]:
    """Every scope's NAV: accounts (those in ``only``, else all), then venues, exchange, total.

    Accounts outside ``only`` keep their ``known`` snapshot. Accounts listed in
    ``[[nav.accounts]]`` without any data are ``failed``: a missing wallet is reported missing.
    """
    specs = {(s.venue, s.account): s for s in config.accounts}
    known = known or {}
    everyone = sorted(set(balances) | set(specs) | set(known))
    if only is None:
        recompute = set(everyone)
    else:  # a stored snapshot is reused only while time alone cannot have changed it
        now = market.now_ms
        recompute = set(only) | {key for key in everyone if key not in known or known[key].fresh_until <= now}
    accounts: list[Snapshot] = []
    fresh: list[Snapshot] = []
    for key in everyone:
        if key in recompute:
            snap = value_account(key[0], key[1], specs.get(key), balances.get(key, {}), market, details)
            fresh.append(snap)
        else:
            snap = known[key]
        accounts.append(snap)
    now = market.now_ms
    out = list(fresh)
    for venue in sorted({a.venue for a in accounts}):
        out.append(aggregate("venue", [a for a in accounts if a.venue == venue], config.quote, now, venue))
    futures = [a for a in accounts if a.kind == "futures"]
    if futures:
        out.append(aggregate("exchange", futures, config.quote, now))
    if accounts:
        out.append(aggregate("total", accounts, config.quote, now))
    return out
