"""Valuation and status rules: pure functions of the latest snapshots and the clock.

Nothing here reads Redis or remembers anything, so a NAV is the same whoever computes it, and
the property tests can recompute one from scratch. A value that cannot be established is never
replaced by 0, 1 or a configured figure: the holding is listed as missing, with the reason.

Money is computed exactly (:func:`exact_mul`, :func:`exact_add`, :func:`exact_sum`): a result
that would need more than :data:`MAX_DIGITS` significant digits is never rounded, the holding is
listed as missing (``value_inexact``) instead. An input counts as fresh from the earlier of its
``ts`` and the moment navstream received it (:func:`counted_from`): a ``ts`` ahead of the clock
is never fresher than the data's arrival.
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from typing import Iterable, Literal, Mapping, Sequence

import msgspec

from navstream import escape_name, scope_id, stale_as_read

from .config import AccountSpec, NavConfig

Status = Literal["ok", "stale", "partial", "failed"]
#: Worse statuses win upward (account to venue to total).
RANK: dict[str, int] = {"ok": 0, "stale": 1, "partial": 2, "failed": 3}
ZERO = Decimal(0)
#: A ts no input will ever reach: "time alone never changes this".
NEVER = 2**62
#: ``received`` of an input stored without a receipt time (by a navstream from before receipt
#: times were kept): it cannot show it is fresh, so it is stale until its source sends it again.
UNKNOWN_RECEIPT = 0
#: The general-purpose context of earlier releases (kept importable). Money must not go through
#: it: it rounds past 60 digits. Use :func:`exact_mul`, :func:`exact_add` and :func:`exact_sum`.
CONTEXT = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN)
#: Most significant digits an exact money result may have. Far beyond any real figure (an
#: 18-decimal amount of 10^30 through a three-hop route needs under 200); past it a value is not
#: rounded but refused (:class:`InexactError`), and the holding is reported missing.
MAX_DIGITS = 400
#: Every signal that would change a result is an error: an exact result or none.
_EXACT = decimal.Context(prec=MAX_DIGITS, rounding=decimal.ROUND_HALF_EVEN,
                         traps=[decimal.Inexact, decimal.Rounded, decimal.Clamped, decimal.Overflow,
                                decimal.Underflow, decimal.InvalidOperation, decimal.DivisionByZero])


class InexactError(ArithmeticError):
    """A money figure that cannot be computed exactly within :data:`MAX_DIGITS` digits."""


def exact_mul(a: Decimal, b: Decimal) -> Decimal:
    """``a * b``, exactly: never rounded. :class:`InexactError` when the exact product needs
    more than :data:`MAX_DIGITS` significant digits (or is not finite)."""
    try:
        return _EXACT.multiply(a, b)
    except decimal.DecimalException as exc:
        raise InexactError(f"{a} x {b} cannot be computed exactly within {MAX_DIGITS} significant digits "
                           f"({type(exc).__name__})") from exc


def exact_add(a: Decimal, b: Decimal) -> Decimal:
    """``a + b``, exactly: never rounded. :class:`InexactError` when the exact sum needs more
    than :data:`MAX_DIGITS` significant digits (``1E+300 + 1E-300``), or is not finite."""
    try:
        return _EXACT.add(a, b)
    except decimal.DecimalException as exc:
        raise InexactError(f"{a} + {b} cannot be computed exactly within {MAX_DIGITS} significant digits "
                           f"({type(exc).__name__})") from exc


def exact_sum(values: Iterable[Decimal]) -> Decimal:
    """The exact sum of ``values`` (0 for none); :class:`InexactError` as :func:`exact_add`."""
    total = ZERO
    for value in values:
        total = exact_add(total, value)
    return total


def counted_from(ts: int, received: int) -> int:
    """When an input counts from for freshness: its ``ts``, or the moment navstream received
    it if that was earlier (a ``ts`` ahead of the receiving clock is never fresher than the
    data's arrival). :data:`UNKNOWN_RECEIPT` gives 0: never fresh."""
    return received if received < ts else ts


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
    #: The source's stamp: orders snapshots (last ``ts`` wins) and is shown as the input's age.
    ts: int
    #: When navstream received it (the batch's clock, epoch ms): freshness is judged from
    #: ``min(ts, received)`` (:attr:`seen`). :data:`UNKNOWN_RECEIPT` for one stored without;
    #: NEVER (the default, for inputs built in code) judges by ``ts`` alone.
    received: int = NEVER

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


# --- outputs ------------------------------------------------------------------------------------


class PriceUsed(msgspec.Struct, frozen=True, omit_defaults=True):
    pair: str
    source: str
    price: Decimal
    ts: int
    #: When navstream received the quote (see :attr:`Holding.received`).
    received: int = NEVER

    @property
    def seen(self) -> int:
        return self.received if self.received < self.ts else self.ts


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
    #: ``price_missing``, ``price_divergence`` or ``value_inexact`` when ``missing``.
    missing_code: str = ""
    #: Why an input of it is stale.
    stale: list[str] = []
    #: When navstream received the balance (see :attr:`Holding.received`).
    received: int = NEVER

    @property
    def seen(self) -> int:
        return self.received if self.received < self.ts else self.ts

    @property
    def amount(self) -> Decimal:
        """Balance plus unrealized PnL, exactly (:class:`InexactError` if it cannot be)."""
        return exact_add(self.balance, self.unrealized_pnl)


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
    #: The first moment (epoch ms) at which an input this NAV rests on is past its age limit
    #: (for venue, exchange and total: the earliest of their accounts'; 0 for none). Every
    #: reader takes a stored ``ok`` as ``stale`` from then on (:func:`as_read`), and a batch may
    #: add up a stored account snapshot unchanged only before then.
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
    age limit. A snapshot without ``fresh_until`` (0) cannot show it is fresh: stale. The rule
    itself is the core's (:func:`navstream.contract.navread.stale_as_read`), shared with the readers that
    do not import this plugin (the status API behind ``/api/status``, ``/readyz``, ``/metrics``).
    """
    why = stale_as_read(snap.status, snap.fresh_until, now_ms)
    if why is None:
        return snap
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
            return (f"{self.age_s(received)} old counted from its receipt (stamped "
                    f"{(ts - received) / 1000:g} s ahead of it)")
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
                return None, (f"{pair} quotes diverge: {low.source} {low.price} vs {high.source} {high.price} "
                              f"({spread:.2f}% > {self.config.max_price_divergence_pct:g}%)"), [], horizon
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
                unit, price_ts=min((as_of_ts(p.ts, p.received) for p in unit.prices), default=NEVER))
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
            return Unit(None, route, prices, f"{pair_quote}: {rest.missing}", stale + rest.stale, rest.missing_code,
                        horizon)
        try:
            value = exact_mul(quote.price, rest.value)
        except InexactError as exc:  # never rounded: not valued, and said so
            return Unit(None, route, prices, f"unit value along {' -> '.join(route)}: {exc}", stale + rest.stale,
                        "value_inexact", horizon)
        return Unit(value, route, prices, "", stale + rest.stale, "", horizon)


# --- one account --------------------------------------------------------------------------------


def value_account(
    venue: str,
    account: str,
    spec: AccountSpec | None,
    holdings: Mapping[str, Holding],
    market: Market,
    details: bool = True,
) -> Snapshot:
    """The NAV of one account: sum over assets of (balance + unrealized PnL) x unit value,
    computed exactly.

    ``details`` lists every holding as valued (what ``navstream nav`` shows); without it, only
    the holdings that could not be valued are listed (what alerts need): the hot path.

    ``fresh_until`` is the first moment any input it rests on is past ``max_age_s``: the
    balances (zero ones too), the prices used and every fresh quote of their pairs (one ageing
    out can change the pick), the reports of those prices' sources, and the reports of the
    account's venue; each counting from :attr:`~Holding.seen`.
    """
    config = market.config
    kind = spec.kind if spec else "unclassified"
    label = spec.label if spec else ""
    where = f"{venue}/{account}"
    stale_sources: list[str] = []
    reasons: list[str] = []
    limit = market.now_ms - market.max_age_ms  # an input counting from before this is stale
    horizon = market.now_ms  # the earliest moment an input counts from: fixes fresh_until
    reported = False
    for s in market.by_venue.get(venue, ()):
        if s.account is not None and s.account != account:
            continue
        reported = True
        seen = s.seen
        if seen < horizon:
            horizon = seen
        if not s.ok:
            stale_sources.append(f"source:{s.label}")
            reasons.append(f"source {s.label} reports failure: {s.error or 'no error given'}")
        elif seen < limit:
            stale_sources.append(f"source:{s.label}")
            said = (f"last reported {market.age_s(seen)} ago" if s.received >= s.ts
                    else f"last report is {market.aged(s.ts, s.received)}")
            reasons.append(f"source {s.label} {said} ({market.age_limit()})")
    if not reported and (spec is None or spec.requires_source_status):
        # Silence is not health: a venue that never said it fetched this account vouches for nothing.
        stale_sources.append(never_reported_account(venue, account))
        reasons.append(f"no source_status ever received from {venue} (venue-wide or for {account}); "
                       "an account fed without one needs requires_source_status = false in [[nav.accounts]]")
    if not holdings:
        reasons.insert(0, "no balance data for this account")
        return Snapshot("account", ZERO, config.quote, "failed", 0, market.now_ms, venue, account, kind, label,
                        [], stale_sources, reasons)
    total = ZERO
    valued = 0
    zero = True
    missing: list[str] = []
    values: list[HoldingValue] = []
    oldest = NEVER  # as_of: the oldest moment the inputs the value rests on count from
    unit_of = market.unit
    for asset in sorted(holdings):
        h = holdings[asset]
        seen = h.seen
        if seen < horizon:
            horizon = seen
        at = as_of_ts(h.ts, h.received)
        if at < oldest:
            oldest = at
        stale: list[str] = [f"balance:{where}/{asset}"] if seen < limit else []
        if stale:
            reasons.append(f"balance of {asset} is {market.aged(h.ts, h.received)} ({market.age_limit()})")
        try:
            amount = exact_add(h.balance, h.unrealized_pnl)
        except InexactError as exc:
            _not_valued(asset, h, f"balance + unrealized PnL: {exc}", "value_inexact", Unit(None, [], []), stale,
                        where, missing, reasons, values, stale_sources)
            zero = False
            continue
        if not amount:  # 0 of anything is 0: a sold-out asset needs no price
            valued += 1
            if stale:
                stale_sources.extend(s for s in stale if s not in stale_sources)
            if details:
                values.append(HoldingValue(asset, h.balance, h.unrealized_pnl, h.ts, None, ZERO,
                                           ["zero holding: needs no price"], [], "", "", stale, h.received))
            continue
        zero = False
        unit = unit_of(asset)
        if unit.oldest < horizon:
            horizon = unit.oldest
        if unit.price_ts < oldest:
            oldest = unit.price_ts
        if unit.stale:
            stale += [s for s in unit.stale if s not in stale]
        if unit.value is None:
            _not_valued(asset, h, unit.missing, unit.missing_code, unit, stale, where, missing, reasons, values,
                        stale_sources)
            continue
        try:
            value = exact_mul(amount, unit.value)
            new_total = exact_add(total, value)
        except InexactError as exc:  # never rounded: not in the NAV, and said so
            _not_valued(asset, h, f"{money(amount)} x unit value {money(unit.value)}: {exc}", "value_inexact",
                        unit, stale, where, missing, reasons, values, stale_sources)
            continue
        total = new_total
        valued += 1
        for why in unit.stale:
            if why.startswith("price:"):
                reasons.append(f"{asset}: price {why[6:]} is older than {config.max_age_s:g} s")
            elif why.endswith("/never-reported"):
                reasons.append(f"{asset}: price source {why[9:-15]} never sent a source_status "
                               "(name it in [nav] unmonitored_price_sources if it never will)")
            else:
                reasons.append(f"{asset}: price source {why[7:]} failing or silent")
        if details:
            values.append(HoldingValue(asset, h.balance, h.unrealized_pnl, h.ts, unit.value, value,
                                       unit.route, unit.prices, "", "", stale, h.received))
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
                    fresh_until=horizon + market.max_age_ms + 1)


def _not_valued(asset: str, h: Holding, why: str, code: str, unit: Unit, stale: list[str], where: str,
                missing: list[str], reasons: list[str], values: list[HoldingValue], stale_sources: list[str]) -> None:
    """Record a holding left out of the NAV (listed even without ``details``: alerts need it)."""
    missing.append(f"{where}/{asset}")
    reasons.append(f"{asset} not valued: {why}")
    values.append(HoldingValue(asset, h.balance, h.unrealized_pnl, h.ts, None, None, unit.route, unit.prices, why,
                               code, stale, h.received))
    if stale:
        stale_sources.extend(s for s in stale if s not in stale_sources)


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


# --- adding up ----------------------------------------------------------------------------------


def aggregate(scope: str, accounts: Sequence[Snapshot], quote: str, now_ms: int, venue: str = "") -> Snapshot:
    """Venue, exchange and total NAV: the exact sum of their accounts, as bad as the worst of
    them, fresh until the first of them is not (``fresh_until``: the earliest of theirs, 0 for
    no account). An account whose NAV cannot be added exactly is left out and listed as
    ``<venue>/<account>/*`` in ``missing`` (``partial``), never rounded in."""
    total = ZERO
    left_out: list[Snapshot] = []
    for a in accounts:
        try:
            total = exact_add(total, a.nav)
        except InexactError:
            left_out.append(a)
    status = worst(a.status for a in accounts) if accounts else "failed"
    reasons = [f"{a.venue}/{a.account} is {a.status}" + (f": {a.reasons[0]}" if a.reasons else "")
               for a in accounts if a.status != "ok"]
    missing = [m for a in accounts for m in a.missing]
    if left_out:
        status = worst([status, "partial"])
        missing += [f"{a.venue}/{a.account}/*" for a in left_out]
        reasons += [f"{a.venue}/{a.account} ({money(a.nav)}) cannot be added in exactly within {MAX_DIGITS} "
                    "significant digits: left out" for a in left_out]
    if not accounts:
        reasons = ["no accounts"]
    return Snapshot(
        scope, total, quote, status, min((a.as_of for a in accounts), default=0), now_ms, venue=venue,
        missing=_unique(missing),
        stale_sources=_unique([s for a in accounts for s in a.stale_sources]),
        reasons=reasons, accounts=[f"{a.venue}/{a.account}" for a in accounts],
        fresh_until=min((a.fresh_until for a in accounts), default=0),
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

    Accounts outside ``only`` keep their ``known`` snapshot while time alone cannot have changed
    it (before its ``fresh_until``); from that moment they are valued again. Accounts listed in
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
