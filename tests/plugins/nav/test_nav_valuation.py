"""The nav plugin's valuation rules and config checks, as pure functions (no Redis).

Every expected figure is an exact ``Decimal``: a NAV is never rounded, never in exponent form,
and a value that cannot be established is listed as missing, never replaced by anything.
"""

from __future__ import annotations

import decimal
import random
from collections.abc import Iterable, Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any

import msgspec
import pytest
from support import START_MS

from navstream.plugins.nav.config import AccountSpec, NavConfig
from navstream.plugins.nav.valuation import (
    CONTEXT,
    MAX_DIGITS,
    UNKNOWN_RECEIPT,
    Holding,
    InexactError,
    Market,
    Quote,
    Snapshot,
    SourceState,
    aggregate,
    as_read,
    evaluate,
    exact_add,
    exact_mul,
    exact_sum,
    money,
    value_account,
    worst,
)

NOW = START_MS
MAX_AGE_MS = 60_000
#: The price sources these tests quote from may stay silent (``unmonitored_price_sources``): a
#: price whose source never reported is stale, tested on its own with a config that lists none.
BASE: dict[str, Any] = {
    "max_age_s": 60,
    "pegs": {"USDT": "1", "EUR": "1.08"},
    "routes": {"BTC": "BTC/USDT"},
    "unmonitored_price_sources": ["binance-spot", "coingecko", "kraken", "a", "b"],
}
#: The venues these tests value accounts of. Unless a test says otherwise, each has sent a
#: healthy venue-wide ``source_status`` when the market is built: an account whose venue never
#: reported is stale (silence is not health), tested on its own with ``vouched=False``.
VENUES = ("binance", "okx", "bank", "bybit", "a", "a:b", "x/y")


# --- helpers ------------------------------------------------------------------------------------


def nav_config(**over: Any) -> NavConfig:
    """A config decoded like the ``[nav]`` section of a TOML file (``BASE`` with overrides)."""
    return msgspec.convert({**BASE, **over}, NavConfig)


def hold(balance: str, upnl: str = "0", age_ms: int = 0) -> Holding:
    return Holding(Decimal(balance), Decimal(upnl), NOW - age_ms)


def quote(pair: str, price: str, source: str = "binance-spot", age_ms: int = 0) -> Quote:
    base, _, quote_ = pair.partition("/")
    return Quote(base, quote_, source, Decimal(price), NOW - age_ms)


def source(
    venue: str, name: str, ok: bool = True, account: str | None = None, error: str = "", age_ms: int = 0
) -> SourceState:
    return SourceState(venue, name, account, ok, error, NOW - age_ms)


def vouches(now: int) -> list[SourceState]:
    """A healthy venue-wide report of every venue in :data:`VENUES`, made at ``now``."""
    return [SourceState(venue, "balances-api", None, True, "", now) for venue in VENUES]


def market(
    cfg: NavConfig | None = None,
    quotes: Iterable[Quote] = (),
    sources: Iterable[SourceState] = (),
    now: int = NOW,
    vouched: bool = True,
) -> Market:
    return Market(cfg or nav_config(), quotes, [*sources, *(vouches(now) if vouched else [])], now)


def value(
    holdings: Mapping[str, Holding],
    quotes: Iterable[Quote] = (),
    sources: Iterable[SourceState] = (),
    cfg: NavConfig | None = None,
    venue: str = "binance",
    account: str = "main",
    spec: AccountSpec | None = None,
    vouched: bool = True,
) -> Snapshot:
    """The NAV of one account ``venue/account`` holding ``holdings``."""
    return value_account(venue, account, spec, holdings, market(cfg, quotes, sources, vouched=vouched))


def holding(snap: Snapshot, asset: str) -> Any:
    (found,) = [h for h in snap.holdings if h.asset == asset]
    return found


def by_id(snapshots: Iterable[Snapshot]) -> dict[str, Snapshot]:
    return {s.scope_id: s for s in snapshots}


# --- unit values: report currency, pegs, routes, direct prices ----------------------------------


def test_the_report_currency_is_worth_one() -> None:
    assert market().unit("USD").value == Decimal(1)
    snap = value({"USD": hold("1234.56", age_ms=5_000)})
    assert (snap.status, snap.nav, snap.quote) == ("ok", Decimal("1234.56"), "USD")
    assert snap.as_of == NOW - 5_000 and snap.computed_at == NOW
    assert holding(snap, "USD").route == ["USD is the report currency"]
    assert snap.missing == [] and snap.stale_sources == [] and snap.reasons == []


def test_a_report_currency_other_than_usd() -> None:
    cfg = nav_config(quote="EUR", pegs={"USDT": "0.92"})
    snap = value({"EUR": hold("100"), "USDT": hold("50")}, cfg=cfg)
    assert (snap.status, snap.nav, snap.quote) == ("ok", Decimal("146.00"), "EUR")


def test_pegs_value_at_their_fixed_rate() -> None:
    snap = value({"USDT": hold("50"), "EUR": hold("100")})
    assert (snap.status, snap.nav) == ("ok", Decimal("158.00"))
    assert holding(snap, "EUR").unit == Decimal("1.08")
    assert holding(snap, "EUR").value == Decimal("108.00")
    assert holding(snap, "EUR").route == ["EUR peg 1.08"]
    assert holding(snap, "EUR").prices == []


def test_a_route_chains_through_a_peg() -> None:
    snap = value({"BTC": hold("0.5", age_ms=1_000)}, [quote("BTC/USDT", "97000.5", age_ms=3_000)])
    btc = holding(snap, "BTC")
    assert (snap.status, snap.nav) == ("ok", Decimal("48500.25"))
    assert btc.unit == Decimal("97000.5")
    assert btc.route == ["BTC/USDT@binance-spot", "USDT peg 1"]
    assert [(p.pair, p.source, p.price, p.ts) for p in btc.prices] == [
        ("BTC/USDT", "binance-spot", Decimal("97000.5"), NOW - 3_000)
    ]
    assert snap.as_of == NOW - 3_000  # the oldest input the value rests on: the price


def test_a_two_hop_route_through_another_route() -> None:
    cfg = nav_config(routes={"BTC": "BTC/USDT", "ETH": "ETH/BTC"})
    quotes = [quote("ETH/BTC", "0.035", age_ms=2_000), quote("BTC/USDT", "97000", age_ms=4_000)]
    snap = value({"ETH": hold("2")}, quotes, cfg=cfg)
    eth = holding(snap, "ETH")
    assert eth.unit == Decimal("3395.000")
    assert (snap.status, snap.nav) == ("ok", Decimal("6790.000"))
    assert eth.route == ["ETH/BTC@binance-spot", "BTC/USDT@binance-spot", "USDT peg 1"]
    assert [p.pair for p in eth.prices] == ["ETH/BTC", "BTC/USDT"]
    assert snap.as_of == NOW - 4_000


def test_a_direct_price_in_the_report_currency_needs_no_route() -> None:
    snap = value({"SOL": hold("3")}, [quote("SOL/USD", "150.25", "coingecko")])
    sol = holding(snap, "SOL")
    assert (snap.status, snap.nav) == ("ok", Decimal("450.75"))
    assert sol.route == ["SOL/USD@coingecko"] and sol.unit == Decimal("150.25")


def test_a_route_to_the_report_currency_itself() -> None:
    cfg = nav_config(routes={"BTC": "BTC/USD"})
    snap = value({"BTC": hold("2")}, [quote("BTC/USD", "97000.10")], cfg=cfg)
    assert (snap.status, snap.nav) == ("ok", Decimal("194000.20"))
    assert holding(snap, "BTC").route == ["BTC/USD@binance-spot"]


# --- missing values: listed, never replaced -----------------------------------------------------


def test_an_unknown_asset_without_a_price_is_missing_not_zero() -> None:
    snap = value({"USDT": hold("100"), "DOGE": hold("1000")}, [quote("DOGE/USDT", "0.1")])
    doge = holding(snap, "DOGE")
    assert snap.status == "partial"
    assert snap.nav == Decimal("100")  # DOGE is left out, not counted as 0 or 1
    assert snap.missing == ["binance/main/DOGE"]
    assert doge.value is None and doge.unit is None and doge.missing_code == "price_missing"
    assert "no price for DOGE/USD" in doge.missing and "no route or peg for DOGE" in doge.missing
    assert any("DOGE" in r and "DOGE/USD" in r for r in snap.reasons)
    assert snap.stream_fields()["missing"] == "binance/main/DOGE"


def test_a_route_whose_next_hop_has_no_price_is_missing() -> None:
    cfg = nav_config(routes={"BTC": "BTC/USDT", "ETH": "ETH/BTC"})
    snap = value({"ETH": hold("2"), "USDT": hold("1")}, [quote("ETH/BTC", "0.035")], cfg=cfg)
    eth = holding(snap, "ETH")
    assert (snap.status, snap.nav, snap.missing) == ("partial", Decimal("1"), ["binance/main/ETH"])
    assert eth.missing.startswith("BTC: no price for BTC/USDT") and eth.missing_code == "price_missing"
    assert eth.route[0] == "ETH/BTC@binance-spot"


def test_a_zero_holding_needs_no_price() -> None:
    snap = value({"DOGE": hold("0"), "USDT": hold("10")})
    assert (snap.status, snap.nav, snap.missing) == ("ok", Decimal("10"), [])
    assert holding(snap, "DOGE").value == 0 and holding(snap, "DOGE").route == ["zero holding: needs no price"]


def test_balance_and_unrealized_pnl_that_cancel_need_no_price() -> None:
    snap = value({"DOGE": hold("5", "-5"), "USDT": hold("10")})
    assert (snap.status, snap.nav) == ("ok", Decimal("10"))


def test_a_futures_wallet_reading_zero_is_zero_and_ok() -> None:
    spec = AccountSpec("binance", "main", "futures")
    snap = value({"USDT": hold("0"), "BTC": hold("0.00000000")}, spec=spec)
    assert snap.nav == Decimal(0) and money(snap.nav) == "0"
    assert (snap.status, snap.missing, snap.kind) == ("ok", [], "futures")
    assert snap.stream_fields()["nav"] == "0"
    assert snap.zero_wallet and not value({"USDT": hold("0"), "EUR": hold("1")}).zero_wallet


def test_no_holding_can_be_valued_fails_the_account() -> None:
    snap = value({"DOGE": hold("1000"), "SHIB": hold("5")})
    assert (snap.status, snap.nav) == ("failed", Decimal(0))
    assert snap.missing == ["binance/main/DOGE", "binance/main/SHIB"]
    assert snap.reasons[0] == "no holding of this account could be valued"


def test_a_configured_account_without_data_fails() -> None:
    cfg = nav_config(accounts=[{"venue": "okx", "account": "treasury", "kind": "reserve", "label": "cold"}])
    (account, venue, total) = evaluate(cfg, {}, market(cfg))
    assert (account.scope, account.venue, account.account) == ("account", "okx", "treasury")
    assert (account.status, account.nav, account.as_of) == ("failed", Decimal(0), 0)
    assert (account.kind, account.label) == ("reserve", "cold")
    assert account.reasons == ["no balance data for this account"]
    assert (venue.scope, venue.status, total.scope, total.status) == ("venue", "failed", "total", "failed")


# --- exact decimals -----------------------------------------------------------------------------


def test_balance_plus_unrealized_pnl_times_unit_value_exactly() -> None:
    snap = value({"USDT": hold("1000.5", "-200.25"), "BTC": hold("0.1", "0.02")}, [quote("BTC/USDT", "97000.5")])
    assert holding(snap, "USDT").value == Decimal("800.25")
    assert holding(snap, "BTC").amount == Decimal("0.12")
    assert holding(snap, "BTC").value == Decimal("11640.060")
    assert snap.nav == Decimal("12440.310") and money(snap.nav) == "12440.310"


def test_a_negative_wallet_is_reported_negative() -> None:
    snap = value({"USDT": hold("100", "-250.5")})
    assert (snap.status, snap.nav) == ("ok", Decimal("-150.5"))


@pytest.mark.parametrize(
    ("number", "text"),
    [("0E-8", "0.00000000"), ("1E+3", "1000"), ("1E-10", "0.0000000001"), ("-2.50", "-2.50"), ("0", "0")],
)
def test_money_never_uses_exponent_form(number: str, text: str) -> None:
    assert money(Decimal(number)) == text


def test_tiny_values_are_published_without_exponent() -> None:
    snap = value({"XYZ": hold("0.00000001")}, [quote("XYZ/USD", "0.01")])
    assert snap.nav == Decimal("1E-10")
    assert snap.stream_fields()["nav"] == "0.0000000001"


def test_long_chains_are_never_rounded() -> None:
    cfg = nav_config(routes={"BTC": "BTC/USDT", "ETH": "ETH/BTC"}, pegs={"USDT": "0.999912345678"})
    quotes = [quote("ETH/BTC", "0.0350012345678901"), quote("BTC/USDT", "97000.123456789")]
    snap = value({"ETH": hold("12.34567891", "-0.00000001")}, quotes, cfg=cfg)
    with decimal.localcontext(prec=200):
        expected = (
            Decimal("12.34567890")
            * Decimal("0.0350012345678901")
            * Decimal("97000.123456789")
            * Decimal("0.999912345678")
        )
    assert len(expected.as_tuple().digits) > 28  # more than the default context would keep
    assert snap.nav == expected and money(snap.nav) == str(expected)


# --- freshness ----------------------------------------------------------------------------------


def test_a_balance_at_the_age_limit_is_fresh_and_past_it_stale() -> None:
    assert value({"USDT": hold("1", age_ms=MAX_AGE_MS)}).status == "ok"
    snap = value({"USDT": hold("1", age_ms=MAX_AGE_MS + 1)})
    assert (snap.status, snap.nav) == ("stale", Decimal("1"))
    assert snap.stale_sources == ["balance:binance/main/USDT"]
    assert any("USDT" in r and "limit 60 s" in r for r in snap.reasons)
    assert holding(snap, "USDT").stale == ["balance:binance/main/USDT"]


def test_a_stale_price_makes_the_nav_stale_but_still_values() -> None:
    snap = value({"BTC": hold("1")}, [quote("BTC/USDT", "97000", age_ms=MAX_AGE_MS + 1)])
    assert (snap.status, snap.nav) == ("stale", Decimal("97000"))
    assert snap.stale_sources == ["price:BTC/USDT@binance-spot"]
    assert snap.as_of == NOW - MAX_AGE_MS - 1
    assert any("BTC/USDT@binance-spot" in r for r in snap.reasons)


def test_a_stale_price_two_hops_away_makes_the_nav_stale() -> None:
    cfg = nav_config(routes={"BTC": "BTC/USDT", "ETH": "ETH/BTC"})
    quotes = [quote("ETH/BTC", "0.035"), quote("BTC/USDT", "97000", age_ms=MAX_AGE_MS + 1)]
    snap = value({"ETH": hold("1")}, quotes, cfg=cfg)
    assert (snap.status, snap.stale_sources) == ("stale", ["price:BTC/USDT@binance-spot"])


def test_a_stale_zero_balance_still_counts_as_stale() -> None:
    snap = value({"USDT": hold("0", age_ms=MAX_AGE_MS + 1)})
    assert (snap.status, snap.nav, snap.stale_sources) == ("stale", Decimal(0), ["balance:binance/main/USDT"])


def test_a_failing_source_of_the_account_makes_it_stale() -> None:
    failing = source("binance", "futures-api", ok=False, account="main", error="HTTP 503")
    snap = value({"USDT": hold("100")}, sources=[failing])
    assert (snap.status, snap.nav) == ("stale", Decimal("100"))
    assert snap.stale_sources == ["source:binance/futures-api/main"]
    assert any("HTTP 503" in r for r in snap.reasons)


def test_a_failing_venue_wide_source_makes_every_account_of_the_venue_stale() -> None:
    failing = source("binance", "balances", ok=False, error="timeout")
    snap = value({"USDT": hold("100")}, sources=[failing])
    assert (snap.status, snap.stale_sources) == ("stale", ["source:binance/balances"])


@pytest.mark.parametrize(
    "other",
    [
        source("binance", "balances", ok=False, account="other", error="401"),  # another account
        source("okx", "balances", ok=False, error="down"),  # another venue
        source("binance", "balances", ok=True),  # fine
    ],
)
def test_a_source_of_someone_else_does_not_touch_the_account(other: SourceState) -> None:
    snap = value({"USDT": hold("100")}, sources=[other])
    assert (snap.status, snap.stale_sources) == ("ok", [])


def test_a_silent_source_of_the_account_makes_it_stale() -> None:
    silent = source("binance", "balances", ok=True, account="main", age_ms=MAX_AGE_MS + 1)
    snap = value({"USDT": hold("100")}, sources=[silent])
    assert (snap.status, snap.stale_sources) == ("stale", ["source:binance/balances/main"])
    assert any("last reported 60.001 s ago" in r for r in snap.reasons)


def test_a_failing_price_source_makes_its_prices_stale() -> None:
    failing = source("coingecko", "coingecko", ok=False, error="HTTP 429")
    snap = value({"SOL": hold("2")}, [quote("SOL/USD", "150", "coingecko")], [failing], venue="okx")
    assert (snap.status, snap.nav) == ("stale", Decimal("300"))
    assert snap.stale_sources == ["source:coingecko/coingecko"]
    assert any("coingecko" in r and "failing or silent" in r for r in snap.reasons)


def test_a_fine_price_source_is_not_stale() -> None:
    fine = source("coingecko", "coingecko", ok=True)
    snap = value({"SOL": hold("2")}, [quote("SOL/USD", "150", "coingecko")], [fine], venue="okx")
    assert snap.status == "ok"


# --- choosing among quotes ----------------------------------------------------------------------


def test_diverging_fresh_quotes_leave_the_holding_out() -> None:
    quotes = [quote("BTC/USDT", "100", "binance-spot"), quote("BTC/USDT", "103", "kraken")]
    snap = value({"BTC": hold("1"), "USDT": hold("5")}, quotes)
    btc = holding(snap, "BTC")
    assert (snap.status, snap.nav, snap.missing) == ("partial", Decimal("5"), ["binance/main/BTC"])
    assert btc.missing_code == "price_divergence" and btc.value is None
    assert "binance-spot 100" in btc.missing and "kraken 103" in btc.missing and "3.00% > 2%" in btc.missing


def test_quotes_within_the_divergence_limit_are_fine() -> None:
    quotes = [quote("BTC/USDT", "100", "binance-spot", age_ms=10), quote("BTC/USDT", "101.9", "kraken")]
    snap = value({"BTC": hold("1")}, quotes)
    assert (snap.status, snap.nav) == ("ok", Decimal("101.9"))  # the newest fresh quote


def test_divergence_with_a_stale_quote_is_ignored() -> None:
    quotes = [quote("BTC/USDT", "100", "binance-spot"), quote("BTC/USDT", "150", "kraken", age_ms=MAX_AGE_MS + 1)]
    snap = value({"BTC": hold("1")}, quotes)
    assert (snap.status, snap.nav, snap.stale_sources) == ("ok", Decimal("100"), [])
    assert holding(snap, "BTC").route[0] == "BTC/USDT@binance-spot"


def test_the_newest_fresh_quote_is_chosen() -> None:
    quotes = [
        quote("BTC/USDT", "100", "a-source", age_ms=5),
        quote("BTC/USDT", "101", "z-source", age_ms=1),
        quote("BTC/USDT", "100.5", "m-source", age_ms=3),
    ]
    for order in (quotes, quotes[::-1]):
        snap = value({"BTC": hold("1")}, order)
        assert holding(snap, "BTC").prices[0].source == "z-source" and snap.nav == Decimal("101")


def test_a_tie_on_ts_is_broken_by_source_name() -> None:
    quotes = [
        quote("BTC/USDT", "100", "kraken"),
        quote("BTC/USDT", "101", "binance"),
        quote("BTC/USDT", "100.5", "binance-spot"),
    ]
    for order in (quotes, quotes[::-1], quotes[1:] + quotes[:1]):
        snap = value({"BTC": hold("1")}, order)
        assert holding(snap, "BTC").prices[0].source == "binance" and snap.nav == Decimal("101")


def test_when_every_quote_is_stale_the_newest_is_used_and_flagged() -> None:
    quotes = [
        quote("BTC/USDT", "100", "a", age_ms=MAX_AGE_MS + 50),
        quote("BTC/USDT", "150", "b", age_ms=MAX_AGE_MS + 10),
    ]
    snap = value({"BTC": hold("1")}, quotes)
    assert (snap.status, snap.nav, snap.stale_sources) == ("stale", Decimal("150"), ["price:BTC/USDT@b"])


# --- statuses adding up -------------------------------------------------------------------------


def test_worst_status_ranks() -> None:
    assert worst([]) == "ok"
    assert worst(["ok", "stale", "ok"]) == "stale"
    assert worst(["stale", "partial"]) == "partial"
    assert worst(["partial", "failed", "ok"]) == "failed"


def desk_config() -> NavConfig:
    return nav_config(
        accounts=[
            {"venue": "binance", "account": "futures", "kind": "futures"},
            {"venue": "binance", "account": "spot", "kind": "spot"},
            {"venue": "okx", "account": "perp", "kind": "futures"},
            {"venue": "bank", "account": "ops", "kind": "bank", "label": "operating"},
        ]
    )


def desk_balances() -> dict[tuple[str, str], dict[str, Holding]]:
    return {
        ("binance", "futures"): {"USDT": hold("1000")},  # ok
        ("binance", "spot"): {"USDT": hold("10", age_ms=MAX_AGE_MS + 1)},  # stale
        ("okx", "perp"): {"USDT": hold("500"), "DOGE": hold("7")},  # partial
        ("bybit", "stray"): {"USDT": hold("3")},  # unconfigured, ok
        # bank/ops: configured, no data: failed
    }


def test_the_worst_status_wins_upward_and_exchange_is_futures_only() -> None:
    cfg = desk_config()
    snaps = evaluate(cfg, desk_balances(), market(cfg))
    assert [s.scope_id for s in snaps] == [
        "account:bank/ops",
        "account:binance/futures",
        "account:binance/spot",
        "account:bybit/stray",
        "account:okx/perp",
        "venue:bank",
        "venue:binance",
        "venue:bybit",
        "venue:okx",
        "exchange",
        "total",
    ]
    got = by_id(snaps)
    assert {k: (s.status, s.nav) for k, s in got.items() if k.startswith("venue:")} == {
        "venue:bank": ("failed", Decimal(0)),
        "venue:binance": ("stale", Decimal("1010")),
        "venue:bybit": ("ok", Decimal("3")),
        "venue:okx": ("partial", Decimal("500")),
    }
    exchange, total = got["exchange"], got["total"]
    assert exchange.accounts == ["binance/futures", "okx/perp"]
    assert (exchange.status, exchange.nav, exchange.missing) == ("partial", Decimal("1500"), ["okx/perp/DOGE"])
    assert total.accounts == ["bank/ops", "binance/futures", "binance/spot", "bybit/stray", "okx/perp"]
    assert (total.status, total.nav) == ("failed", Decimal("1513"))
    assert total.stale_sources == ["balance:binance/spot/USDT"]
    assert total.as_of == 0  # rests on an account with no data at all
    assert any(r.startswith("bank/ops is failed") for r in total.reasons)
    assert got["venue:binance"].reasons == ["binance/spot is stale: balance of USDT is 60.001 s old (limit 60 s)"]


def test_unconfigured_accounts_are_unclassified_in_venue_and_total_not_exchange() -> None:
    cfg = desk_config()
    got = by_id(evaluate(cfg, desk_balances(), market(cfg)))
    stray = got["account:bybit/stray"]
    assert (stray.kind, stray.label) == ("unclassified", "")
    assert got["venue:bybit"].accounts == ["bybit/stray"]
    assert "bybit/stray" in got["total"].accounts and "bybit/stray" not in got["exchange"].accounts
    assert got["account:bank/ops"].label == "operating"


def test_without_futures_accounts_there_is_no_exchange_scope() -> None:
    cfg = nav_config()
    snaps = evaluate(cfg, {("binance", "spot"): {"USDT": hold("1")}}, market(cfg))
    assert [s.scope_id for s in snaps] == ["account:binance/spot", "venue:binance", "total"]
    assert snaps[0].kind == "unclassified"


def test_aggregate_sums_exactly_and_takes_the_oldest_input() -> None:
    a = value({"USDT": hold("0.1", age_ms=500)}, account="a")
    b = value({"USDT": hold("0.2", age_ms=900)}, account="b")
    venue = aggregate("venue", [a, b], "USD", NOW, venue="binance")
    assert (venue.nav, venue.status, venue.as_of, venue.scope_id) == (Decimal("0.3"), "ok", NOW - 900, "venue:binance")
    assert venue.stream_fields() == {
        "scope": "venue",
        "nav": "0.3",
        "quote": "USD",
        "status": "ok",
        "as_of": str(NOW - 900),
        "computed_at": str(NOW),
        "venue": "binance",
    }


def test_aggregate_of_nothing_fails() -> None:
    total = aggregate("total", [], "USD", NOW)
    assert (total.status, total.nav, total.reasons) == ("failed", Decimal(0), ["no accounts"])


def test_accounts_outside_only_keep_their_known_snapshot() -> None:
    cfg = nav_config()
    old = value_account("binance", "spot", None, {"USDT": hold("7")}, market(cfg, now=NOW - 5_000))
    balances = {("binance", "futures"): {"USDT": hold("100")}}
    snaps = evaluate(cfg, balances, market(cfg), only={("binance", "futures")}, known={("binance", "spot"): old})
    got = by_id(snaps)
    assert "account:binance/spot" not in got  # not recomputed, not republished
    assert got["account:binance/futures"].computed_at == NOW
    assert got["total"].nav == Decimal("107") and got["total"].accounts == ["binance/futures", "binance/spot"]


def test_scope_ids_escape_separators() -> None:
    a = value({"USDT": hold("1")}, venue="a:b", account="c")
    b = value({"USDT": hold("1")}, venue="a", account="b:c")
    assert a.scope_id != b.scope_id
    assert value({"USDT": hold("1")}, venue="x/y", account="z").scope_id == "account:x%2Fy/z"


def test_stream_fields_carry_the_contract_fields_as_strings() -> None:
    snap = value(
        {"USDT": hold("100", age_ms=MAX_AGE_MS + 1), "DOGE": hold("3")},
        spec=AccountSpec("binance", "main", "spot", "desk"),
    )
    fields = snap.stream_fields()
    assert fields == {
        "scope": "account",
        "nav": "100",
        "quote": "USD",
        "status": "partial",
        "as_of": str(NOW - MAX_AGE_MS - 1),
        "computed_at": str(NOW),
        "venue": "binance",
        "account": "main",
        "kind": "spot",
        "label": "desk",
        "missing": "binance/main/DOGE",
        "stale_sources": "balance:binance/main/USDT",
        "reasons": fields["reasons"],
    }
    assert "DOGE not valued" in fields["reasons"]
    assert all(type(v) is str for v in fields.values())


def test_version_changes_with_value_status_missing_and_stale_sources() -> None:
    def version(holdings: dict[str, Holding]) -> str:
        return Snapshot.version(value(holdings).stream_fields())

    base = version({"USDT": hold("100")})
    assert base == version({"USDT": hold("100")})
    assert base != version({"USDT": hold("101")})
    assert base != version({"USDT": hold("100", age_ms=MAX_AGE_MS + 1)})
    assert base != version({"USDT": hold("100"), "DOGE": hold("1")})


# --- config -------------------------------------------------------------------------------------


def test_defaults_are_safe() -> None:
    cfg = msgspec.convert({}, NavConfig)
    assert (cfg.quote, cfg.max_age_s, cfg.max_age_ms, cfg.publish_every_s, cfg.alert_every_s) == (
        "USD",
        120.0,
        120_000,
        60.0,
        300.0,
    )
    assert cfg.pegs == {} and cfg.routes == {} and cfg.accounts == []


def test_a_full_config_decodes() -> None:
    cfg = desk_config()
    assert cfg.pegs == {"USDT": Decimal("1"), "EUR": Decimal("1.08")}
    assert cfg.accounts[3] == AccountSpec("bank", "ops", "bank", "operating")


@pytest.mark.parametrize(
    ("over", "words"),
    [
        ({"max_age_s": 0}, "max_age_s"),
        ({"max_age_s": -5}, "max_age_s"),
        ({"publish_every_s": 0}, "publish_every_s"),
        ({"alert_every_s": -1}, "alert_every_s"),
        ({"jump_alert_pct": 0}, "jump_alert_pct"),
        ({"max_price_divergence_pct": 101}, "max_price_divergence_pct"),
        ({"routes": {"A": "A/B", "B": "B/A"}}, "loop"),
        ({"routes": {"X": "X/A", "A": "A/B", "B": "B/A"}}, "loop"),
        ({"routes": {"BTC": "ETH/USDT"}}, "must price BTC itself"),
        ({"routes": {"BTC": "BTC/BTC"}}, "prices BTC in itself"),
        ({"routes": {"BTC": "BTCUSDT"}}, "must be a pair"),
        ({"routes": {"BTC": "BTC/USDT/X"}}, "must be a pair"),
        ({"pegs": {"USDT": "0"}}, "positive"),
        ({"pegs": {"USDT": "-1"}}, "positive"),
        ({"pegs": {"USDT": "NaN"}}, "positive"),
        ({"pegs": {"USDT": "1", "USD": "1"}}, "report currency"),
        ({"routes": {"USD": "USD/USDT"}}, "report currency"),
        ({"quote": "EUR", "pegs": {"EUR": "1.08"}}, "report currency"),
        (
            {
                "accounts": [
                    {"venue": "b", "account": "a", "kind": "spot"},
                    {"venue": "b", "account": "a", "kind": "futures"},
                ]
            },
            "listed twice",
        ),
        ({"accounts": [{"venue": "b", "account": "a", "kind": "margin"}]}, "kind"),
        ({"max_age": 5}, "max_age"),
    ],
)
def test_config_errors(over: dict[str, Any], words: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=words):
        nav_config(**over)


# --- silence is not health: a venue or price source that never reported ------------------------


def test_an_account_whose_venue_never_reported_is_stale() -> None:
    snap = value({"USDT": hold("100")}, vouched=False)
    assert (snap.status, snap.nav) == ("stale", Decimal("100"))
    assert snap.stale_sources == ["source:binance/never-reported/main"]
    assert snap.reasons[0].startswith("no source_status ever received from binance (venue-wide or for main)")


@pytest.mark.parametrize(
    "report",
    [
        source("binance", "balances"),  # venue-wide
        source("binance", "balances", account="main"),  # for this account
    ],
)
def test_an_account_whose_venue_reported_is_ok(report: SourceState) -> None:
    snap = value({"USDT": hold("100")}, sources=[report], vouched=False)
    assert (snap.status, snap.stale_sources, snap.reasons) == ("ok", [], [])


def test_a_report_for_another_account_does_not_vouch_for_this_one() -> None:
    snap = value({"USDT": hold("100")}, sources=[source("binance", "balances", account="other")], vouched=False)
    assert (snap.status, snap.stale_sources) == ("stale", ["source:binance/never-reported/main"])


@pytest.mark.parametrize("kind", ["futures", "spot", "bank", "reserve"])
def test_every_kind_requires_a_report_by_default(kind: str) -> None:
    spec = AccountSpec("binance", "main", kind)  # type: ignore[arg-type]
    assert spec.requires_source_status is True
    assert value({"USDT": hold("100")}, spec=spec, vouched=False).status == "stale"


@pytest.mark.parametrize("kind", ["bank", "reserve"])
def test_an_account_fed_by_hand_may_opt_out_explicitly(kind: str) -> None:
    cfg = nav_config(accounts=[{"venue": "bank", "account": "ops", "kind": kind, "requires_source_status": False}])
    snap = value({"USD": hold("100")}, cfg=cfg, venue="bank", account="ops", spec=cfg.accounts[0], vouched=False)
    assert (snap.status, snap.stale_sources, snap.reasons) == ("ok", [], [])
    # the opt-out covers silence only: a report that says failure still counts
    failing = source("bank", "statements", ok=False, error="login expired")
    snap = value(
        {"USD": hold("100")},
        sources=[failing],
        cfg=cfg,
        venue="bank",
        account="ops",
        spec=cfg.accounts[0],
        vouched=False,
    )
    assert (snap.status, snap.stale_sources) == ("stale", ["source:bank/statements"])


@pytest.mark.parametrize("kind", ["futures", "spot"])
def test_an_exchange_account_cannot_opt_out(kind: str) -> None:
    with pytest.raises(msgspec.ValidationError, match="only for accounts fed by hand"):
        nav_config(accounts=[{"venue": "binance", "account": "a", "kind": kind, "requires_source_status": False}])


def test_an_account_without_data_and_reports_fails_and_says_both() -> None:
    cfg = nav_config(accounts=[{"venue": "okx", "account": "perp", "kind": "futures"}])
    (account, _, _, _) = evaluate(cfg, {}, market(cfg, vouched=False))
    assert account.status == "failed"
    assert account.stale_sources == ["source:okx/never-reported/perp"]
    assert account.reasons[0] == "no balance data for this account"
    assert any(r.startswith("no source_status ever received from okx") for r in account.reasons)


def test_a_price_whose_source_never_reported_is_stale() -> None:
    cfg = nav_config(unmonitored_price_sources=[])
    snap = value({"BTC": hold("1")}, [quote("BTC/USDT", "97000")], cfg=cfg)
    assert (snap.status, snap.nav) == ("stale", Decimal("97000"))
    assert snap.stale_sources == ["source:*/binance-spot/never-reported"]
    assert any("price source binance-spot never sent a source_status" in r for r in snap.reasons)
    assert holding(snap, "BTC").stale == ["source:*/binance-spot/never-reported"]
    # once the source has reported (any venue, any account), its prices are fresh
    reported = value({"BTC": hold("1")}, [quote("BTC/USDT", "97000")], [source("binance", "binance-spot")], cfg=cfg)
    assert (reported.status, reported.stale_sources) == ("ok", [])


def test_a_price_source_never_reported_down_a_route_is_stale_too() -> None:
    cfg = nav_config(unmonitored_price_sources=["binance-spot"], routes={"BTC": "BTC/USDT", "ETH": "ETH/BTC"})
    quotes = [quote("ETH/BTC", "0.035", "okx-spot"), quote("BTC/USDT", "97000")]
    snap = value({"ETH": hold("2")}, quotes, cfg=cfg)
    assert (snap.status, snap.stale_sources) == ("stale", ["source:*/okx-spot/never-reported"])


def test_an_unmonitored_price_source_may_stay_silent_but_not_fail() -> None:
    cfg = nav_config(unmonitored_price_sources=["manual"])
    snap = value({"BTC": hold("1")}, [quote("BTC/USDT", "97000", "manual")], cfg=cfg)
    assert (snap.status, snap.stale_sources) == ("ok", [])
    failing = source("ops", "manual", ok=False, error="sheet unreachable")
    snap = value({"BTC": hold("1")}, [quote("BTC/USDT", "97000", "manual")], [failing], cfg=cfg)
    assert (snap.status, snap.stale_sources) == ("stale", ["source:ops/manual"])


def test_unmonitored_price_sources_default_to_none() -> None:
    assert msgspec.convert({}, NavConfig).unmonitored_price_sources == []
    assert AccountSpec("b", "a", "bank").requires_source_status is True


# --- the future is not fresher: receipt times --------------------------------------------------


def test_an_input_stamped_ahead_counts_from_its_receipt() -> None:
    received = NOW - MAX_AGE_MS  # received exactly max_age ago, stamped 4 s ahead of that
    ahead = Holding(Decimal("100"), Decimal(0), received + 4_000, received)
    assert ahead.seen == received
    snap = value({"USDT": ahead})
    assert (snap.status, snap.as_of) == ("ok", received)  # exactly max_age old: still fresh
    assert snap.fresh_until == received + MAX_AGE_MS + 1
    later = value_account("binance", "main", None, {"USDT": ahead}, market(now=NOW + 1))
    assert (later.status, later.stale_sources) == ("stale", ["balance:binance/main/USDT"])
    assert any("counted from its receipt (stamped 4 s ahead of it)" in r for r in later.reasons)
    # judged by ts alone it would have been fresh for 4 s more
    by_ts = Holding(Decimal("100"), Decimal(0), received + 4_000)
    assert value_account("binance", "main", None, {"USDT": by_ts}, market(now=NOW + 1)).status == "ok"


def test_a_quote_and_a_report_stamped_ahead_count_from_their_receipt() -> None:
    received = NOW - MAX_AGE_MS - 1
    ahead_quote = Quote("BTC", "USDT", "binance-spot", Decimal("97000"), NOW + 4_000, received)
    snap = value({"BTC": hold("1")}, [ahead_quote])
    assert (snap.status, snap.stale_sources) == ("stale", ["price:BTC/USDT@binance-spot"])
    assert holding(snap, "BTC").prices[0].received == received
    ahead_report = SourceState("binance", "balances", "main", True, "", NOW + 4_000, received)
    snap = value({"USDT": hold("1")}, sources=[ahead_report])
    assert (snap.status, snap.stale_sources) == ("stale", ["source:binance/balances/main"])
    assert any("counted from its receipt" in r for r in snap.reasons)


def test_an_input_stored_without_a_receipt_time_is_stale_until_sent_again() -> None:
    legacy = Holding(Decimal("100"), Decimal(0), NOW - 1_000, UNKNOWN_RECEIPT)
    snap = value({"USDT": legacy})
    assert (snap.status, snap.stale_sources) == ("stale", ["balance:binance/main/USDT"])
    assert snap.as_of == NOW - 1_000  # its age is still told by its ts
    assert any("stored without a receipt time" in r and "stale until sent again" in r for r in snap.reasons)


@pytest.mark.parametrize("seed", range(5))
def test_random_future_stamps_never_make_an_input_fresher_than_its_receipt(seed: int) -> None:
    """Whatever the stamp, an input is fresh exactly while its receipt (or its ts, if earlier)
    is within max_age: never longer."""
    rng = random.Random(seed)
    for _ in range(200):
        received = NOW - rng.randint(0, 2 * MAX_AGE_MS)
        ts = received + rng.randint(-MAX_AGE_MS, 10 * MAX_AGE_MS)
        counted = min(ts, received)
        h = Holding(Decimal("1"), Decimal(0), ts, received)
        snap = value({"USD": h})
        assert snap.status == ("ok" if NOW - counted <= MAX_AGE_MS else "stale"), (ts, received)
        assert snap.fresh_until <= received + MAX_AGE_MS + 1
        assert snap.as_of == counted <= received


# --- fresh_until: the real horizon -------------------------------------------------------------


@pytest.mark.parametrize("oldest", ["balance", "zero_balance", "price", "price_report", "venue_report"])
def test_fresh_until_is_the_first_moment_any_input_is_past_its_limit(oldest: str) -> None:
    """Whichever input is the oldest (a zero holding needs no price, but its balance still
    ages), fresh_until is when it passes max_age; at that very moment a re-evaluation and every
    reader agree: stale, and a millisecond before, ok."""
    cfg = nav_config(unmonitored_price_sources=[])
    ages = {name: 500 for name in ("balance", "zero_balance", "price", "price_report", "venue_report")}
    ages[oldest] = 7_000

    def at(now: int) -> Snapshot:
        m = Market(
            cfg,
            [quote("BTC/USDT", "97000", age_ms=ages["price"])],
            [
                source("coingecko", "binance-spot", age_ms=ages["price_report"]),  # judged by source name
                source("binance", "balances", account="main", age_ms=ages["venue_report"]),
            ],
            now,
        )
        return value_account(
            "binance",
            "main",
            None,
            {"BTC": hold("1", age_ms=ages["balance"]), "DOGE": hold("0", age_ms=ages["zero_balance"])},
            m,
        )

    snap = at(NOW)
    assert (snap.status, snap.fresh_until) == ("ok", NOW - 7_000 + MAX_AGE_MS + 1)
    assert (at(snap.fresh_until - 1).status, as_read(snap, snap.fresh_until - 1).status) == ("ok", "ok")
    assert (at(snap.fresh_until).status, as_read(snap, snap.fresh_until).status) == ("stale", "stale")


def test_fresh_until_of_stale_and_partial_snapshots_is_already_past_or_the_horizon() -> None:
    stale = value({"USDT": hold("1", age_ms=MAX_AGE_MS + 1)})
    assert stale.status == "stale" and stale.fresh_until <= NOW
    partial = value({"USDT": hold("1", age_ms=2_000), "DOGE": hold("5")})
    assert partial.status == "partial" and partial.fresh_until == NOW - 2_000 + MAX_AGE_MS + 1
    # a divergence ends when a quote ages out: its horizon counts
    quotes = [quote("BTC/USDT", "100", "binance-spot", age_ms=4_000), quote("BTC/USDT", "103", "kraken")]
    diverged = value({"BTC": hold("1")}, quotes)
    assert diverged.status == "failed" and diverged.fresh_until == NOW - 4_000 + MAX_AGE_MS + 1
    assert value({}).fresh_until == 0  # no data: judged again every time


def test_aggregates_are_fresh_until_their_first_account_is_not() -> None:
    a = value({"USDT": hold("0.1", age_ms=500)}, account="a")
    b = value({"USDT": hold("0.2", age_ms=900)}, account="b")
    venue = aggregate("venue", [a, b], "USD", NOW, venue="binance")
    assert venue.fresh_until == min(a.fresh_until, b.fresh_until) == NOW - 900 + MAX_AGE_MS + 1
    assert as_read(venue, venue.fresh_until - 1).status == "ok"
    read = as_read(venue, venue.fresh_until)
    assert read.status == "stale" and "passed its age limit" in read.reasons[0]
    assert aggregate("total", [], "USD", NOW).fresh_until == 0
    cfg = desk_config()
    for snap in evaluate(cfg, desk_balances(), market(cfg)):
        if snap.scope != "account":
            members = [
                s
                for s in evaluate(cfg, desk_balances(), market(cfg))
                if s.scope == "account" and f"{s.venue}/{s.account}" in snap.accounts
            ]
            assert snap.fresh_until == min(m.fresh_until for m in members), snap.scope_id


def test_a_known_snapshot_is_reused_only_before_its_fresh_until() -> None:
    cfg = nav_config()
    old = value_account("binance", "spot", None, {"USDT": hold("7", age_ms=10_000)}, market(cfg))
    balances = {("binance", "futures"): {"USDT": hold("100")}, ("binance", "spot"): {"USDT": hold("7", age_ms=10_000)}}
    before = by_id(
        evaluate(
            cfg,
            balances,
            market(cfg, now=old.fresh_until - 1),
            only={("binance", "futures")},
            known={("binance", "spot"): old},
        )
    )
    assert "account:binance/spot" not in before and before["total"].status == "ok"
    at = by_id(
        evaluate(
            cfg,
            balances,
            market(cfg, now=old.fresh_until),
            only={("binance", "futures")},
            known={("binance", "spot"): old},
        )
    )
    assert at["account:binance/spot"].status == "stale" and at["total"].status == "stale"


def test_as_read_leaves_other_statuses_and_fresh_oks_alone() -> None:
    snap = value({"USDT": hold("1")})
    assert as_read(snap, NOW) is snap
    partial = value({"DOGE": hold("1"), "USDT": hold("1")})
    assert as_read(partial, NOW + 10 * MAX_AGE_MS) is partial
    unknown = msgspec.structs.replace(snap, fresh_until=0)
    assert as_read(unknown, NOW).status == "stale"
    assert as_read(unknown, NOW).reasons[0].startswith("stored without a freshness horizon")


# --- exact means exact -------------------------------------------------------------------------


def test_an_18_decimal_asset_through_a_two_hop_route_is_exact() -> None:
    cfg = nav_config(routes={"BTC": "BTC/USDT", "ETH": "ETH/BTC", "PEPE": "PEPE/ETH"})
    amount, pepe_eth, eth_btc, btc_usdt = (
        "123456789012.123456789012345678",
        "0.000000004123456789012345678",
        "0.035123456789012345678",
        "97000.123456789012345678",
    )
    quotes = [quote("PEPE/ETH", pepe_eth), quote("ETH/BTC", eth_btc), quote("BTC/USDT", btc_usdt)]
    snap = value({"PEPE": hold(amount, "-0.000000000000000001")}, quotes, cfg=cfg)
    expected = (
        (Fraction(amount) - Fraction("0.000000000000000001"))
        * Fraction(pepe_eth)
        * Fraction(eth_btc)
        * Fraction(btc_usdt)
    )
    assert snap.status == "ok"
    assert Fraction(snap.nav) == expected  # not one digit lost
    assert Fraction(holding(snap, "PEPE").unit) == Fraction(pepe_eth) * Fraction(eth_btc) * Fraction(btc_usdt)
    # a 60-digit context (the old one) would have rounded this
    with decimal.localcontext(decimal.Context(prec=60)):
        rounded = (
            (Decimal(amount) - Decimal("0.000000000000000001"))
            * Decimal(pepe_eth)
            * Decimal(eth_btc)
            * Decimal(btc_usdt)
        )
    assert Fraction(rounded) != expected


def test_a_sum_of_many_values_is_exact() -> None:
    rng = random.Random(7)
    amounts = [f"{rng.randint(0, 10**12)}.{rng.randint(0, 10**18 - 1):018d}" for _ in range(300)]
    assert exact_sum(Decimal(a) for a in amounts) == sum((Fraction(a) for a in amounts), Fraction(0))
    holdings = {f"A{i}": hold(a) for i, a in enumerate(amounts)}
    cfg = nav_config(pegs={f"A{i}": "1.000000000000000001" for i in range(300)})
    snap = value(holdings, cfg=cfg)
    assert snap.status == "ok"
    assert Fraction(snap.nav) == sum((Fraction(a) * Fraction("1.000000000000000001") for a in amounts), Fraction(0))
    accounts = [value({"USDT": hold(a)}, account=f"a{i}") for i, a in enumerate(amounts[:50])]
    assert Fraction(aggregate("total", accounts, "USD", NOW).nav) == sum(Fraction(a) for a in amounts[:50])


def test_exact_helpers_never_round() -> None:
    assert exact_mul(
        Decimal("1.5"), Decimal("0.000000000000000000000000000000000000000000000000000000000001")
    ) == Decimal("1.5E-60")
    big = Decimal("9" * 200)
    assert exact_mul(big, big) == Decimal(int("9" * 200) ** 2)
    assert exact_add(Decimal("1E+30"), Decimal("1E-30")) == Decimal("1" + "0" * 30 + "." + "0" * 29 + "1")
    with pytest.raises(InexactError, match=f"within {MAX_DIGITS} significant digits"):
        exact_mul(Decimal("9" * 300), Decimal("9" * 300))
    with pytest.raises(InexactError):
        exact_add(Decimal("1E+300"), Decimal("1E-300"))
    assert CONTEXT.prec == 60  # still importable, for what is not money


def test_a_value_that_cannot_be_exact_is_missing_never_rounded() -> None:
    cfg = nav_config(pegs={"USDT": "1", "HUGE": "1." + "3" * 250})
    snap = value({"HUGE": hold("1." + "7" * 250), "USDT": hold("5")}, cfg=cfg)
    huge = holding(snap, "HUGE")
    assert (snap.status, snap.nav, snap.missing) == ("partial", Decimal("5"), ["binance/main/HUGE"])
    assert (huge.value, huge.missing_code) == (None, "value_inexact")
    assert f"within {MAX_DIGITS} significant digits" in huge.missing
    # and a route whose unit value cannot be exact
    cfg = nav_config(routes={"BTC": "BTC/USDT", "X": "X/BTC"})
    snap = value({"X": hold("1")}, [quote("X/BTC", "0." + "1" * 250), quote("BTC/USDT", "9." + "9" * 250)], cfg=cfg)
    assert (snap.status, holding(snap, "X").missing_code) == ("failed", "value_inexact")


def test_an_account_that_cannot_be_added_exactly_is_left_out_of_the_aggregate() -> None:
    a = value({"USD": hold("1E+300")}, account="a")
    b = value({"USD": hold("1E-300")}, account="b")
    total = aggregate("total", [a, b], "USD", NOW)
    assert (total.status, total.nav, total.missing) == ("partial", Decimal("1E+300"), ["binance/b/*"])
    assert any("cannot be added in exactly" in r for r in total.reasons)
