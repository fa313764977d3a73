"""Valuation and status rules: pure functions of the latest snapshots and the clock.

Nothing here reads Redis or remembers anything, so a NAV is the same whoever computes it, and
the property tests can recompute one from scratch. A value that cannot be established is never
replaced by 0, 1 or a configured figure: the holding is listed as missing, with the reason.

Money is computed exactly (:func:`exact_mul`, :func:`exact_add`, :func:`exact_sum`): a result
that would need more than :data:`MAX_DIGITS` significant digits is never rounded, the holding is
listed as missing (``value_inexact``) instead. An input counts as fresh from the earlier of its
``ts`` and the moment navstream received it (:func:`counted_from`): a ``ts`` ahead of the clock
is never fresher than the data's arrival.

The parts: exact arithmetic in :mod:`.money`, the inputs and the valuing of one unit in
:mod:`.market`, the snapshot and its freshness rules in :mod:`.snapshot`. Here: valuing an
account and adding accounts up (:func:`evaluate`). Every name of those modules stays importable
from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from navstream import scope_id

from .aggregate import aggregate
from .config import AccountSpec, NavConfig
from .market import (
    Holding,
    Market,
    Quote,
    SourceState,
    Unit,
    as_of_ts,
    never_reported_account,
    never_reported_source,
)
from .money import CONTEXT, MAX_DIGITS, ZERO, InexactError, exact_add, exact_mul, exact_sum, money
from .snapshot import (
    NEVER,
    RANK,
    UNKNOWN_RECEIPT,
    HoldingValue,
    PriceUsed,
    Snapshot,
    Status,
    as_read,
    counted_from,
    escape,
    worst,
    worst_by,
)

__all__ = [
    "CONTEXT",
    "MAX_DIGITS",
    "NEVER",
    "RANK",
    "UNKNOWN_RECEIPT",
    "ZERO",
    "Holding",
    "HoldingValue",
    "InexactError",
    "Market",
    "PriceUsed",
    "Quote",
    "Snapshot",
    "SourceState",
    "Status",
    "Unit",
    "aggregate",
    "as_of_ts",
    "as_read",
    "counted_from",
    "escape",
    "evaluate",
    "exact_add",
    "exact_mul",
    "exact_sum",
    "money",
    "never_reported_account",
    "never_reported_source",
    "scope_id",
    "value_account",
    "worst",
    "worst_by",
]


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
            said = (
                f"last reported {market.age_s(seen)} ago"
                if s.received >= s.ts
                else f"last report is {market.aged(s.ts, s.received)}"
            )
            reasons.append(f"source {s.label} {said} ({market.age_limit()})")
    if not reported and (spec is None or spec.requires_source_status):
        # Silence is not health: a venue that never said it fetched this account vouches for nothing.
        stale_sources.append(never_reported_account(venue, account))
        reasons.append(
            f"no source_status ever received from {venue} (venue-wide or for {account}); "
            "an account fed without one needs requires_source_status = false in [[nav.accounts]]"
        )
    if not holdings:
        reasons.insert(0, "no balance data for this account")
        return Snapshot(
            "account",
            ZERO,
            config.quote,
            "failed",
            0,
            market.now_ms,
            venue,
            account,
            kind,
            label,
            [],
            stale_sources,
            reasons,
        )
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
            _not_valued(
                asset,
                h,
                f"balance + unrealized PnL: {exc}",
                "value_inexact",
                Unit(None, [], []),
                stale,
                where,
                missing,
                reasons,
                values,
                stale_sources,
            )
            zero = False
            continue
        if not amount:  # 0 of anything is 0: a sold-out asset needs no price
            valued += 1
            if stale:
                stale_sources.extend(s for s in stale if s not in stale_sources)
            if details:
                values.append(
                    HoldingValue(
                        asset,
                        h.balance,
                        h.unrealized_pnl,
                        h.ts,
                        None,
                        ZERO,
                        ["zero holding: needs no price"],
                        [],
                        "",
                        "",
                        stale,
                        h.received,
                        h.venue_asset,
                    )
                )
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
            _not_valued(
                asset, h, unit.missing, unit.missing_code, unit, stale, where, missing, reasons, values, stale_sources
            )
            continue
        try:
            value = exact_mul(amount, unit.value)
            new_total = exact_add(total, value)
        except InexactError as exc:  # never rounded: not in the NAV, and said so
            _not_valued(
                asset,
                h,
                f"{money(amount)} x unit value {money(unit.value)}: {exc}",
                "value_inexact",
                unit,
                stale,
                where,
                missing,
                reasons,
                values,
                stale_sources,
            )
            continue
        total = new_total
        valued += 1
        for why in unit.stale:
            if why.startswith("price:"):
                reasons.append(f"{asset}: price {why[6:]} is older than {config.max_age_s:g} s")
            elif why.endswith("/never-reported"):
                reasons.append(
                    f"{asset}: price source {why[9:-15]} never sent a source_status "
                    "(name it in [nav] unmonitored_price_sources if it never will)"
                )
            else:
                reasons.append(f"{asset}: price source {why[7:]} failing or silent")
        if details:
            values.append(
                HoldingValue(
                    asset,
                    h.balance,
                    h.unrealized_pnl,
                    h.ts,
                    unit.value,
                    value,
                    unit.route,
                    unit.prices,
                    "",
                    "",
                    stale,
                    h.received,
                    h.venue_asset,
                )
            )
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
    return Snapshot(
        "account",
        total,
        config.quote,
        status,
        oldest,
        market.now_ms,
        venue,
        account,
        kind,
        label,
        missing,
        _unique(stale_sources),
        _unique(reasons),
        values,
        zero_wallet=zero,
        fresh_until=horizon + market.max_age_ms + 1,
    )


def _not_valued(
    asset: str,
    h: Holding,
    why: str,
    code: str,
    unit: Unit,
    stale: list[str],
    where: str,
    missing: list[str],
    reasons: list[str],
    values: list[HoldingValue],
    stale_sources: list[str],
) -> None:
    """Record a holding left out of the NAV (listed even without ``details``: alerts need it)."""
    missing.append(f"{where}/{asset}")
    reasons.append(f"{asset} not valued: {why}")
    values.append(
        HoldingValue(
            asset,
            h.balance,
            h.unrealized_pnl,
            h.ts,
            None,
            None,
            unit.route,
            unit.prices,
            why,
            code,
            stale,
            h.received,
            h.venue_asset,
        )
    )
    if stale:
        stale_sources.extend(s for s in stale if s not in stale_sources)


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


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
