"""``[nav]``: the report currency, how each asset is valued, freshness and alert limits.

Every limit has a safe default and none can be switched off: a zero or negative freshness limit
is a config error, not "never stale".
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

import msgspec

Kind = Literal["futures", "spot", "reserve", "bank"]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Percent = Annotated[float, msgspec.Meta(gt=0, le=100)]


class AccountSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One ``[[nav.accounts]]`` entry: an account the desk expects data for."""

    venue: Name
    account: Name
    kind: Kind
    label: str = ""
    #: An account is ``stale`` until its venue has sent a ``source_status`` (venue-wide or for
    #: the account): silence is not health. Only an account fed by hand (kind ``bank`` or
    #: ``reserve``) may opt out, explicitly, with ``false``.
    requires_source_status: bool = True

    def __post_init__(self) -> None:
        if not self.requires_source_status and self.kind not in ("bank", "reserve"):
            raise ValueError(
                f"`nav.accounts` {self.venue}/{self.account}: requires_source_status = false is only for "
                f"accounts fed by hand (kind bank or reserve), not kind {self.kind}: an exchange account's "
                "ingestor reports source_status after every fetch"
            )


class NavConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: Report currency every NAV is expressed in.
    quote: Name = "USD"
    #: An input (balance, price, source report) older than this makes the NAV `stale`.
    max_age_s: Annotated[float, msgspec.Meta(ge=0.001, le=86_400)] = 120.0
    #: Every scope is published on P:nav at least this often, changed or not.
    publish_every_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 60.0
    #: An account NAV falling by more than this percentage between two evaluations alerts.
    jump_alert_pct: Percent = 10.0
    #: Fresh quotes of one pair from two sources further apart than this: not valued.
    max_price_divergence_pct: Percent = 2.0
    #: The same alert (code and subject) at most once per this many seconds.
    alert_every_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 300.0
    #: Fixed rates into ``quote`` set by ops: ``USDT = "1"``, ``EUR = "1.08"``.
    pegs: dict[str, Decimal] = {}
    #: The pair that values an asset: ``BTC = "BTC/USDT"``, chained through the pair's quote.
    routes: dict[str, str] = {}
    accounts: list[AccountSpec] = []
    #: Price sources (the ``source`` of a ``price``) allowed never to send a ``source_status``,
    #: such as ``manual`` quotes typed by ops. Any other source's prices are ``stale`` until it
    #: has reported; a listed source that does report is judged by its reports like any other.
    unmonitored_price_sources: list[Name] = []
    #: Conflation: a scope whose inputs changed is evaluated (stored, published) at most once per
    #: this many ms, on the leading edge, and on every tick; 0 evaluates in every batch. Inputs are
    #: stored in every batch, and a change that could make a stored ``ok`` NAV worse or fresh for
    #: less long is evaluated at once (see conflate.py).
    eval_interval_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 0

    def __post_init__(self) -> None:
        for asset, rate in self.pegs.items():
            if not rate.is_finite() or rate <= 0:
                raise ValueError(f"`nav.pegs.{asset}` must be a positive decimal, got {rate}")
        for asset, pair in self.routes.items():
            base, sep, quote = pair.partition("/")
            if not sep or not base or not quote or "/" in quote:
                raise ValueError(f'`nav.routes.{asset}` must be a pair like "{asset}/USDT", got {pair!r}')
            if base != asset:
                raise ValueError(f"`nav.routes.{asset}` must price {asset} itself, got {pair!r}")
            if quote == asset:
                raise ValueError(f"`nav.routes.{asset}` prices {asset} in itself")
        for asset in self.routes:
            seen = [asset]
            step = asset
            while step in self.routes and step != self.quote and step not in self.pegs:
                step = self.routes[step].partition("/")[2]
                if step in seen:
                    raise ValueError(f"`nav.routes` loop: {' -> '.join(seen + [step])}")
                seen.append(step)
        if self.quote in self.routes:
            raise ValueError(f"`nav.routes.{self.quote}`: the report currency is worth 1 by definition")
        if self.quote in self.pegs:
            raise ValueError(f"`nav.pegs.{self.quote}`: the report currency is worth 1 by definition")
        seen_accounts: set[tuple[str, str]] = set()
        for spec in self.accounts:
            if (spec.venue, spec.account) in seen_accounts:
                raise ValueError(f"`nav.accounts`: {spec.venue}/{spec.account} is listed twice")
            seen_accounts.add((spec.venue, spec.account))

    @property
    def max_age_ms(self) -> int:
        return round(self.max_age_s * 1000)  # 1.001 s is 1001 ms, not 1000
