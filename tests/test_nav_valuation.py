"""The nav plugin's valuation rules and config checks, as pure functions (no Redis).

Every expected figure is an exact ``Decimal``: a NAV is never rounded, never in exponent form,
and a value that cannot be established is listed as missing, never replaced by anything.
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from typing import Any, Iterable, Mapping

import msgspec
import pytest
from conftest import START_MS

from navstream.plugins.nav.config import AccountSpec, NavConfig
from navstream.plugins.nav.valuation import (
    Holding,
    Market,
    Quote,
    Snapshot,
    SourceState,
    aggregate,
    evaluate,
    money,
    value_account,
    worst,
)

NOW = START_MS
MAX_AGE_MS = 60_000
BASE: dict[str, Any] = {"max_age_s": 60, "pegs": {"USDT": "1", "EUR": "1.08"}, "routes": {"BTC": "BTC/USDT"}}


# --- helpers ------------------------------------------------------------------------------------


def nav_config(**over: Any) -> NavConfig:
    """A config decoded like the ``[nav]`` section of a TOML file (``BASE`` with overrides)."""
    return msgspec.convert({**BASE, **over}, NavConfig)


def hold(balance: str, upnl: str = "0", age_ms: int = 0) -> Holding:
    return Holding(Decimal(balance), Decimal(upnl), NOW - age_ms)


def quote(pair: str, price: str, source: str = "binance-spot", age_ms: int = 0) -> Quote:
    base, _, quote_ = pair.partition("/")
    return Quote(base, quote_, source, Decimal(price), NOW - age_ms)


def source(venue: str, name: str, ok: bool = True, account: str | None = None, error: str = "",
           age_ms: int = 0) -> SourceState:
    return SourceState(venue, name, account, ok, error, NOW - age_ms)


def market(cfg: NavConfig | None = None, quotes: Iterable[Quote] = (), sources: Iterable[SourceState] = (),
           now: int = NOW) -> Market:
    return Market(cfg or nav_config(), quotes, sources, now)


def value(holdings: Mapping[str, Holding], quotes: Iterable[Quote] = (), sources: Iterable[SourceState] = (),
          cfg: NavConfig | None = None, venue: str = "binance", account: str = "main",
          spec: AccountSpec | None = None) -> Snapshot:
    """The NAV of one account ``venue/account`` holding ``holdings``."""
    return value_account(venue, account, spec, holdings, market(cfg, quotes, sources))


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
        ("BTC/USDT", "binance-spot", Decimal("97000.5"), NOW - 3_000)]
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
    snap = value({"USDT": hold("1000.5", "-200.25"), "BTC": hold("0.1", "0.02")},
                 [quote("BTC/USDT", "97000.5")])
    assert holding(snap, "USDT").value == Decimal("800.25")
    assert holding(snap, "BTC").amount == Decimal("0.12")
    assert holding(snap, "BTC").value == Decimal("11640.060")
    assert snap.nav == Decimal("12440.310") and money(snap.nav) == "12440.310"


def test_a_negative_wallet_is_reported_negative() -> None:
    snap = value({"USDT": hold("100", "-250.5")})
    assert (snap.status, snap.nav) == ("ok", Decimal("-150.5"))


@pytest.mark.parametrize(("number", "text"), [
    ("0E-8", "0.00000000"), ("1E+3", "1000"), ("1E-10", "0.0000000001"), ("-2.50", "-2.50"), ("0", "0")])
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
        expected = Decimal("12.34567890") * Decimal("0.0350012345678901") * Decimal("97000.123456789") \
            * Decimal("0.999912345678")
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


@pytest.mark.parametrize("other", [
    source("binance", "balances", ok=False, account="other", error="401"),  # another account
    source("okx", "balances", ok=False, error="down"),  # another venue
    source("binance", "balances", ok=True),  # fine
])
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
    quotes = [quote("BTC/USDT", "100", "a-source", age_ms=5), quote("BTC/USDT", "101", "z-source", age_ms=1),
              quote("BTC/USDT", "100.5", "m-source", age_ms=3)]
    for order in (quotes, quotes[::-1]):
        snap = value({"BTC": hold("1")}, order)
        assert holding(snap, "BTC").prices[0].source == "z-source" and snap.nav == Decimal("101")


def test_a_tie_on_ts_is_broken_by_source_name() -> None:
    quotes = [quote("BTC/USDT", "100", "kraken"), quote("BTC/USDT", "101", "binance"),
              quote("BTC/USDT", "100.5", "binance-spot")]
    for order in (quotes, quotes[::-1], quotes[1:] + quotes[:1]):
        snap = value({"BTC": hold("1")}, order)
        assert holding(snap, "BTC").prices[0].source == "binance" and snap.nav == Decimal("101")


def test_when_every_quote_is_stale_the_newest_is_used_and_flagged() -> None:
    quotes = [quote("BTC/USDT", "100", "a", age_ms=MAX_AGE_MS + 50), quote("BTC/USDT", "150", "b",
                                                                           age_ms=MAX_AGE_MS + 10)]
    snap = value({"BTC": hold("1")}, quotes)
    assert (snap.status, snap.nav, snap.stale_sources) == ("stale", Decimal("150"), ["price:BTC/USDT@b"])


# --- statuses adding up -------------------------------------------------------------------------


def test_worst_status_ranks() -> None:
    assert worst([]) == "ok"
    assert worst(["ok", "stale", "ok"]) == "stale"
    assert worst(["stale", "partial"]) == "partial"
    assert worst(["partial", "failed", "ok"]) == "failed"


def desk_config() -> NavConfig:
    return nav_config(accounts=[
        {"venue": "binance", "account": "futures", "kind": "futures"},
        {"venue": "binance", "account": "spot", "kind": "spot"},
        {"venue": "okx", "account": "perp", "kind": "futures"},
        {"venue": "bank", "account": "ops", "kind": "bank", "label": "operating"},
    ])


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
        "account:bank/ops", "account:binance/futures", "account:binance/spot", "account:bybit/stray",
        "account:okx/perp", "venue:bank", "venue:binance", "venue:bybit", "venue:okx", "exchange", "total"]
    got = by_id(snaps)
    assert {k: (s.status, s.nav) for k, s in got.items() if k.startswith("venue:")} == {
        "venue:bank": ("failed", Decimal(0)), "venue:binance": ("stale", Decimal("1010")),
        "venue:bybit": ("ok", Decimal("3")), "venue:okx": ("partial", Decimal("500"))}
    exchange, total = got["exchange"], got["total"]
    assert exchange.accounts == ["binance/futures", "okx/perp"]
    assert (exchange.status, exchange.nav, exchange.missing) == ("partial", Decimal("1500"), ["okx/perp/DOGE"])
    assert total.accounts == ["bank/ops", "binance/futures", "binance/spot", "bybit/stray", "okx/perp"]
    assert (total.status, total.nav) == ("failed", Decimal("1513"))
    assert total.stale_sources == ["balance:binance/spot/USDT"]
    assert total.as_of == 0  # rests on an account with no data at all
    assert any(r.startswith("bank/ops is failed") for r in total.reasons)
    assert got["venue:binance"].reasons == [
        "binance/spot is stale: balance of USDT is 60.001 s old (limit 60 s)"]


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
    assert (venue.nav, venue.status, venue.as_of, venue.scope_id) == (
        Decimal("0.3"), "ok", NOW - 900, "venue:binance")
    assert venue.stream_fields() == {"scope": "venue", "nav": "0.3", "quote": "USD", "status": "ok",
                                     "as_of": str(NOW - 900), "computed_at": str(NOW), "venue": "binance"}


def test_aggregate_of_nothing_fails() -> None:
    total = aggregate("total", [], "USD", NOW)
    assert (total.status, total.nav, total.reasons) == ("failed", Decimal(0), ["no accounts"])


def test_accounts_outside_only_keep_their_known_snapshot() -> None:
    cfg = nav_config()
    old = value_account("binance", "spot", None, {"USDT": hold("7")}, market(cfg, now=NOW - 5_000))
    balances = {("binance", "futures"): {"USDT": hold("100")}}
    snaps = evaluate(cfg, balances, market(cfg), only={("binance", "futures")},
                     known={("binance", "spot"): old})
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
    snap = value({"USDT": hold("100", age_ms=MAX_AGE_MS + 1), "DOGE": hold("3")},
                 spec=AccountSpec("binance", "main", "spot", "desk"))
    fields = snap.stream_fields()
    assert fields == {
        "scope": "account", "nav": "100", "quote": "USD", "status": "partial",
        "as_of": str(NOW - MAX_AGE_MS - 1), "computed_at": str(NOW), "venue": "binance", "account": "main",
        "kind": "spot", "label": "desk", "missing": "binance/main/DOGE",
        "stale_sources": "balance:binance/main/USDT", "reasons": fields["reasons"]}
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
        "USD", 120.0, 120_000, 60.0, 300.0)
    assert cfg.pegs == {} and cfg.routes == {} and cfg.accounts == []


def test_a_full_config_decodes() -> None:
    cfg = desk_config()
    assert cfg.pegs == {"USDT": Decimal("1"), "EUR": Decimal("1.08")}
    assert cfg.accounts[3] == AccountSpec("bank", "ops", "bank", "operating")


@pytest.mark.parametrize(("over", "words"), [
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
    ({"accounts": [{"venue": "b", "account": "a", "kind": "spot"},
                   {"venue": "b", "account": "a", "kind": "futures"}]}, "listed twice"),
    ({"accounts": [{"venue": "b", "account": "a", "kind": "margin"}]}, "kind"),
    ({"max_age": 5}, "max_age"),
])
def test_config_errors(over: dict[str, Any], words: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=words):
        nav_config(**over)
