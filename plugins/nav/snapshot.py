"""What a valuation produces: the NAV :class:`Snapshot` of a scope with its holdings as valued,
the statuses and how they combine, and the freshness rules every reader applies to a stored one.

An input counts as fresh from the earlier of its ``ts`` and the moment navstream received it
(:func:`counted_from`): a ``ts`` ahead of the clock is never fresher than the data's arrival. A
stored ``ok`` holds only until its ``fresh_until`` (:func:`as_read`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Literal, TypeVar

import msgspec

from navstream import escape_name, scope_id, stale_as_read

from .money import exact_add, money

Status = Literal["ok", "stale", "partial", "failed"]
#: Worse statuses win upward (account to venue to total).
RANK: dict[str, int] = {"ok": 0, "stale": 1, "partial": 2, "failed": 3}
#: A ts no input will ever reach: "time alone never changes this".
NEVER = 2**62
#: ``received`` of an input stored without a receipt time (by a navstream from before receipt
#: times were kept): it cannot show it is fresh, so it is stale until its source sends it again.
UNKNOWN_RECEIPT = 0


def counted_from(ts: int, received: int) -> int:
    """When an input counts from for freshness: its ``ts``, or the moment navstream received
    it if that was earlier (a ``ts`` ahead of the receiving clock is never fresher than the
    data's arrival). :data:`UNKNOWN_RECEIPT` gives 0: never fresh."""
    return received if received < ts else ts


#: A status-like value that ``worst_by`` ranks (its result is one of them).
_Ranked = TypeVar("_Ranked", bound=str)


def worst_by(rank: Mapping[str, int], values: Iterable[_Ranked], best: _Ranked) -> _Ranked:
    """The value of highest ``rank`` among ``values`` (``best`` when there are none)."""
    return max(values, key=rank.__getitem__, default=best)


def worst(statuses: Iterable[Status]) -> Status:
    return worst_by(RANK, statuses, "ok")


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
    #: The venue's own code for ``asset`` (see :attr:`Holding.venue_asset`); "" when the same.
    venue_asset: str = ""

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
        fields = {
            "scope": self.scope,
            "nav": money(self.nav),
            "quote": self.quote,
            "status": self.status,
            "as_of": str(self.as_of),
            "computed_at": str(self.computed_at),
        }
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
