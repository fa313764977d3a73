"""``[risk]``: the pre-trade gate's limits. Every check has a safe default and none can be
switched off; the NAV age limit in particular is mandatory (zero or negative is an error)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

import msgspec

Percent = Annotated[float, msgspec.Meta(gt=0, le=100)]

#: Quote assets a symbol may end with when ``[risk.symbols]`` does not name it, longest first.
DEFAULT_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USD", "EUR", "BTC", "ETH")


class RiskConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: A NAV whose oldest input is older than this at decision time vetoes (``nav_stale``).
    max_nav_age_s: Annotated[float, msgspec.Meta(ge=0.001, le=3600)] = 60.0
    #: An order whose own ``ts`` is older than this at decision time vetoes (``order_stale``):
    #: an intent that waited in a queue was made for a market that has moved.
    max_order_age_s: Annotated[float, msgspec.Meta(ge=0.001, le=3600)] = 5.0
    #: A limit price further than this from the market price vetoes (``price_off_market``): the
    #: fat-finger collar, in either direction.
    max_price_deviation_pct: Percent = 5.0
    #: An approved order counts toward its account's position and exposure until a position
    #: update observed after its approval covers it, or this long at most.
    open_order_ttl_s: Annotated[float, msgspec.Meta(ge=1, le=86_400)] = 300.0
    #: Largest order notional, in the NAV report currency.
    max_order_notional: Decimal = Decimal("1000000")
    #: Largest order notional as a percentage of the account's NAV.
    max_order_pct_nav: Percent = 10.0
    #: Gross exposure after the order, as a multiple of the account's NAV.
    max_gross_exposure_x: Annotated[float, msgspec.Meta(gt=0, le=1000)] = 3.0
    #: Orders per venue in any 60 s.
    max_orders_per_minute: Annotated[int, msgspec.Meta(gt=0)] = 600
    #: Drawdown from the NAV's high-water mark that moves trading to ``reducing``.
    reduce_drawdown_pct: Percent = 5.0
    #: Drawdown from the high-water mark that halts trading.
    halt_drawdown_pct: Percent = 10.0
    #: Symbol -> ``BASE/QUOTE``: ``BTCUSDT = "BTC/USDT"``, ``"BTC-PERP" = "BTC/USD"``.
    symbols: dict[str, str] = {}
    #: Quote assets tried, in this order, to split a symbol not in ``symbols``.
    quote_assets: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_QUOTES))
    #: Directory of the audit log (each consumer appends to ``risk-<consumer>.jsonl`` there);
    #: empty: ``$XDG_STATE_HOME/navstream/audit``, else ``~/.local/state/navstream/audit``.
    audit_dir: str = ""
    #: Rotate an audit file once it is this large (MiB); rotated copies kept.
    audit_max_mb: Annotated[int, msgspec.Meta(ge=1)] = 64
    audit_backups: Annotated[int, msgspec.Meta(ge=1)] = 10
    #: Decisions that may wait for the audit writer before new ones are counted as dropped.
    audit_queue: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    #: How long a decision is stored to be repeated for its ``order_id`` (then forgotten).
    decision_retention_s: Annotated[int, msgspec.Meta(ge=60)] = 86_400
    #: A lasting condition (reduced or halted trading, audit shortfall) is alerted again this often.
    alert_every_s: Annotated[float, msgspec.Meta(ge=1)] = 300.0

    def __post_init__(self) -> None:
        if not self.max_order_notional.is_finite() or self.max_order_notional <= 0:
            raise ValueError("`risk.max_order_notional` must be a positive decimal")
        if self.halt_drawdown_pct <= self.reduce_drawdown_pct:
            raise ValueError("`risk.halt_drawdown_pct` must be greater than `risk.reduce_drawdown_pct`")
        for symbol, pair in self.symbols.items():
            base, sep, quote = pair.partition("/")
            if not sep or not base or not quote or "/" in quote:
                raise ValueError(f'`risk.symbols.{symbol}` must be a pair like "BTC/USDT", got {pair!r}')
        if not self.quote_assets or any(not q for q in self.quote_assets):
            raise ValueError("`risk.quote_assets` must list non-empty assets")

    @property
    def max_nav_age_ms(self) -> int:
        return round(self.max_nav_age_s * 1000)  # 1.001 s is 1001 ms, not 1000

    @property
    def max_order_age_ms(self) -> int:
        return round(self.max_order_age_s * 1000)

    @property
    def open_order_ttl_ms(self) -> int:
        return round(self.open_order_ttl_s * 1000)
