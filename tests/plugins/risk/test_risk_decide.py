"""The risk gate's rules (issue 6) as pure functions: ``[risk]`` config checks and ``decide``.

No Redis: every decision here is a function of one order and the state it is judged against.
Every reason code is shown firing on its own (with the exact list of reasons), at its limit and
just past it; every figure is an exact ``Decimal``.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import START_MS

from navstream import Order
from navstream.plugins.nav.config import NavConfig
from navstream.plugins.nav.valuation import CONTEXT, Market, Quote, Snapshot, SourceState
from navstream.plugins.risk.config import DEFAULT_QUOTES, RiskConfig
from navstream.plugins.risk.decide import (
    REASONS,
    STATE_RANK,
    Decision,
    bad_order,
    content_hash,
    decide,
    gross_exposure,
    in_report_currency,
    last_price,
    reduces,
    split_symbol,
    worst_state,
)

NOW = START_MS
LIMIT_MS = 60_000  # RiskConfig's default max_nav_age_s, in ms
NAV_BASE: dict[str, Any] = {"max_age_s": 120, "pegs": {"USDT": "1", "EUR": "1.08"}, "routes": {"BTC": "BTC/USDT"}}
D = Decimal


# --- helpers ------------------------------------------------------------------------------------


def risk_config(**over: Any) -> RiskConfig:
    """A config decoded like the ``[risk]`` section of a TOML file."""
    return msgspec.convert(over, RiskConfig)


def nav_config(**over: Any) -> NavConfig:
    return msgspec.convert({**NAV_BASE, **over}, NavConfig)


def quote(pair: str, price: str, source: str = "binance-spot", age_ms: int = 0) -> Quote:
    base, _, quote_ = pair.partition("/")
    return Quote(base, quote_, source, D(price), NOW - age_ms)


def market(quotes: Iterable[Quote] = (quote("BTC/USDT", "50000"),), cfg: NavConfig | None = None) -> Market:
    quotes = list(quotes)
    return Market(cfg or nav_config(), quotes, reporting(quotes), NOW)


def reporting(quotes: Iterable[Quote]) -> list[SourceState]:
    """A fresh, ok ``source_status`` of every price source quoted: a source that never reported
    makes its prices stale (issue 13), which is not what these tests are about."""
    return [SourceState(name, name, None, True, "", NOW) for name in sorted({q.source for q in quotes})]


def source(ok: bool = True, age_ms: int = 0, account: str | None = None) -> SourceState:
    return SourceState("binance", "positions", account, ok, "" if ok else "HTTP 503", NOW - age_ms)


def snapshot(
    nav: str = "1000000", status: str = "ok", age_ms: int = 1_000, computed_age_ms: int | None = None
) -> Snapshot:
    """An account NAV whose oldest input is ``age_ms`` old (computed ``computed_age_ms`` ago)."""
    computed = NOW - (age_ms if computed_age_ms is None else computed_age_ms)
    return Snapshot(
        "account",
        D(nav),
        "USD",
        status,
        NOW - age_ms,
        computed,  # type: ignore[arg-type]
        venue="binance",
        account="main",
        fresh_until=NOW - age_ms + 120_000,
    )


def order(
    side: str = "buy",
    qty: str = "0.1",
    price: str | None = "50000",
    symbol: str = "BTCUSDT",
    order_id: str = "o-1",
    reduce_only: bool = False,
) -> Order:
    return Order(
        ts=NOW - 5,
        order_id=order_id,
        venue="binance",
        account="main",
        symbol=symbol,
        side=side,
        qty=D(qty),
        price=None if price is None else D(price),  # type: ignore[arg-type]
        reduce_only=reduce_only,
    )


_DEFAULT_NAV = object()


def judge(
    o: Order | None = None,
    *,
    config: RiskConfig | None = None,
    nav: Any = _DEFAULT_NAV,
    mkt: Market | None = None,
    sources: Iterable[SourceState] = (),
    state: str = "active",
    position: str = "0",
    exposure: str | None = "0",
    per_minute: int = 0,
    now: int = NOW,
) -> Decision:
    """``decide`` with a clean default: a 0.1 BTCUSDT buy at 50000 (5000 USD) against a fresh,
    ok NAV of 1,000,000 USD, no position, no exposure, nothing else sent this minute."""
    return decide(
        o or order(),
        config=config or RiskConfig(),
        now_ms=now,
        nav=snapshot() if nav is _DEFAULT_NAV else nav,
        market=mkt or market(),
        sources=list(sources),
        trading_state=state,  # type: ignore[arg-type]
        position=D(position),
        exposure=None if exposure is None else D(exposure),
        orders_last_minute=per_minute,
    )


def reasons(**kw: Any) -> list[str]:
    d = judge(**kw)
    assert (d.decision == "approve") == (d.reasons == [])
    return d.reasons


def notional_is(expected: Decimal, o: Order, mkt: Market | None = None) -> bool:
    """The order's notional is exactly ``expected``: approved at ``max_order_notional = expected``
    and vetoed at the next decimal below it (60 digits)."""
    at = judge(
        o,
        mkt=mkt,
        config=risk_config(max_order_notional=str(expected), max_order_pct_nav=100, max_gross_exposure_x=1000),
        nav=snapshot("1E+30"),
    )
    below = judge(
        o,
        mkt=mkt,
        config=risk_config(
            max_order_notional=str(CONTEXT.next_minus(expected)), max_order_pct_nav=100, max_gross_exposure_x=1000
        ),
        nav=snapshot("1E+30"),
    )
    return at.reasons == [] and below.reasons == ["order_notional"]


# --- a clean order, and the Decision ------------------------------------------------------------


def test_a_clean_order_is_approved_with_every_field_right() -> None:
    nav = snapshot("123456.78900000", age_ms=4_000, computed_age_ms=1_500)
    d = judge(nav=nav)
    assert d == Decision("o-1", "approve", [], "active", "123456.78900000", "ok", 4_000, NOW, content_hash(order()))
    assert d.fields() == {
        "order_id": "o-1",
        "decision": "approve",
        "reasons": "",
        "trading_state": "active",
        "nav": "123456.78900000",
        "nav_status": "ok",
        "nav_age_ms": "4000",
        "ts": str(NOW),
        "order_hash": content_hash(order()),
    }


def test_nav_age_is_measured_from_the_older_of_as_of_and_computed_at() -> None:
    assert judge(nav=snapshot(age_ms=2_000, computed_age_ms=7_000)).nav_age_ms == 7_000
    assert judge(nav=snapshot(age_ms=7_000, computed_age_ms=2_000)).nav_age_ms == 7_000


def test_the_nav_is_reported_as_an_exact_string_never_in_exponent_form() -> None:
    assert judge(nav=snapshot("1.5E+6")).nav == "1500000"
    d = judge(nav=snapshot("0E-8"))
    assert d.nav == "0.00000000" and d.decision == "veto"


def test_decision_fields_are_strings_with_reasons_comma_joined() -> None:
    d = judge(nav=None, state="halted", o=order(symbol="BTC-PERP"), per_minute=600)
    fields = d.fields()
    assert all(isinstance(v, str) for v in fields.values())
    assert fields == {
        "order_id": "o-1",
        "decision": "veto",
        "reasons": "nav_missing,trading_halted,symbol_unknown,rate_limited",
        "trading_state": "halted",
        "nav": "",
        "nav_status": "missing",
        "nav_age_ms": "0",
        "ts": str(NOW),
        "order_hash": content_hash(order(symbol="BTC-PERP")),
    }


def test_several_reasons_accumulate_in_reasons_order() -> None:
    d = judge(
        o=order(qty="100"),
        nav=snapshot("1000", "partial", age_ms=LIMIT_MS + 1),
        sources=[source(ok=False)],
        state="reducing",
        exposure=None,
        per_minute=10_000,
        config=risk_config(max_order_notional="1000"),
    )
    assert d.reasons == [
        "nav_partial",
        "nav_stale",
        "source_unhealthy",
        "reduce_only",
        "order_notional",
        "order_pct_nav",
        "gross_exposure",
        "rate_limited",
    ]
    assert d.reasons == sorted(d.reasons, key=REASONS.index)
    d = judge(o=order(symbol="DOGEJPY"), nav=snapshot(status="failed", age_ms=LIMIT_MS + 1), state="halted")
    assert d.reasons == ["nav_failed", "nav_stale", "trading_halted", "symbol_unknown"]


# --- NAV reasons --------------------------------------------------------------------------------


def test_nav_missing() -> None:
    d = judge(nav=None)
    # without a NAV the percentage and exposure limits cannot be met either: NAV counts as 0
    assert d.reasons == ["nav_missing", "order_pct_nav", "gross_exposure"]
    assert (d.decision, d.nav, d.nav_status, d.nav_age_ms) == ("veto", "", "missing", 0)


@pytest.mark.parametrize("status", ["failed", "partial", "stale"])
def test_a_nav_that_is_not_ok_vetoes_with_its_status(status: str) -> None:
    d = judge(nav=snapshot(status=status, age_ms=1_000))
    assert d.reasons == [f"nav_{status}"]
    assert (d.decision, d.nav_status, d.nav_age_ms) == ("veto", status, 1_000)


def test_a_stale_nav_past_its_age_says_nav_stale_once() -> None:
    assert reasons(nav=snapshot(status="stale", age_ms=LIMIT_MS + 1)) == ["nav_stale"]


def test_nav_one_millisecond_past_max_nav_age_vetoes_and_exactly_at_it_approves() -> None:
    assert reasons(nav=snapshot(age_ms=LIMIT_MS)) == []
    d = judge(nav=snapshot(age_ms=LIMIT_MS + 1))
    assert (d.decision, d.reasons, d.nav_status, d.nav_age_ms) == ("veto", ["nav_stale"], "ok", LIMIT_MS + 1)


def test_nav_age_limit_follows_the_config() -> None:
    cfg = risk_config(max_nav_age_s=2.5)
    assert cfg.max_nav_age_ms == 2_500
    assert reasons(config=cfg, nav=snapshot(age_ms=2_500)) == []
    assert reasons(config=cfg, nav=snapshot(age_ms=2_501)) == ["nav_stale"]


def test_a_nav_computed_long_ago_on_fresh_inputs_is_stale() -> None:
    # as_of is recent but the snapshot itself was computed too long ago (the plugin stopped)
    assert reasons(nav=snapshot(age_ms=0, computed_age_ms=LIMIT_MS + 1)) == ["nav_stale"]
    assert reasons(nav=snapshot(age_ms=0, computed_age_ms=LIMIT_MS)) == []


def test_a_nav_resting_on_nothing_is_stale_whatever_its_status() -> None:
    nav = Snapshot("account", D(0), "USD", "failed", 0, NOW, venue="binance", account="main")
    d = judge(nav=nav)
    assert d.reasons == ["nav_failed", "nav_stale", "order_pct_nav", "gross_exposure"]
    assert d.nav_age_ms == NOW


def test_nav_exactly_at_a_fractional_max_nav_age_approves() -> None:
    """1.001 s is 1001 ms (not truncated to 1000)."""
    cfg = risk_config(max_nav_age_s=1.001)
    assert cfg.max_nav_age_ms == 1_001
    assert reasons(config=cfg, nav=snapshot(age_ms=1_001)) == []


def test_a_sub_millisecond_max_nav_age_is_refused() -> None:
    """An age limit that would round to 0 ms is a config error, not "no limit"."""
    with pytest.raises(msgspec.ValidationError, match="max_nav_age_s"):
        risk_config(max_nav_age_s=0.0004)
    assert risk_config(max_nav_age_s=0.001).max_nav_age_ms == 1


# --- sources ------------------------------------------------------------------------------------


def test_a_failing_source_vetoes_although_the_nav_is_fresh() -> None:
    assert reasons(sources=[source(ok=True), source(ok=False, account="main")]) == ["source_unhealthy"]


def test_a_silent_source_vetoes_past_max_nav_age_and_not_at_it() -> None:
    assert reasons(sources=[source(age_ms=LIMIT_MS)]) == []
    assert reasons(sources=[source(age_ms=LIMIT_MS + 1)]) == ["source_unhealthy"]


def test_healthy_sources_pass() -> None:
    assert reasons(sources=[source(), source(age_ms=30_000, account="main")]) == []


# --- trading state ------------------------------------------------------------------------------


def test_halted_lets_nothing_through_not_even_a_reducing_order() -> None:
    assert reasons(state="halted") == ["trading_halted"]
    d = judge(o=order("sell", "0.1"), position="1", state="halted")
    assert (d.reasons, d.trading_state) == (["trading_halted"], "halted")


def test_reducing_vetoes_an_order_that_opens_a_position() -> None:
    assert reasons(state="reducing", o=order("buy")) == ["reduce_only"]
    assert reasons(state="reducing", o=order("sell")) == ["reduce_only"]


@pytest.mark.parametrize(
    ("side", "qty", "position", "expected"),
    [
        ("sell", "0.1", "0.5", []),  # shrinks a long
        ("sell", "0.5", "0.5", []),  # closes it exactly
        ("sell", "0.6", "0.5", ["reduce_only"]),  # flips it short
        ("buy", "0.1", "0.5", ["reduce_only"]),  # grows the long
        ("buy", "0.2", "-0.5", []),  # shrinks a short
        ("buy", "0.5", "-0.5", []),  # closes it exactly
        ("buy", "0.50000001", "-0.5", ["reduce_only"]),  # flips it long
        ("sell", "0.1", "-0.5", ["reduce_only"]),  # grows the short
        ("buy", "0.1", "0", ["reduce_only"]),
        ("sell", "0.1", "0", ["reduce_only"]),
    ],
)
def test_reducing_lets_only_reducing_orders_through(side: str, qty: str, position: str, expected: list[str]) -> None:
    o = order(side, qty)
    assert reduces(o, D(position)) is (expected == [])
    d = judge(o=o, state="reducing", position=position)
    assert (d.reasons, d.trading_state) == (expected, "reducing")


def test_gross_exposure_is_not_checked_for_reducing_orders() -> None:
    # unknown exposure vetoes any other order, in any state
    assert reasons(o=order("sell", "0.1"), position="0.5", exposure=None) == []
    assert reasons(o=order("sell", "0.1"), position="0.5", exposure="1E+20") == []
    assert reasons(o=order("sell", "0.1"), position="0.5", exposure=None, state="reducing") == []
    assert reasons(o=order("sell", "0.6"), position="0.5", exposure=None) == ["gross_exposure"]
    assert reasons(o=order("buy", "0.1"), position="0.5", exposure=None) == ["gross_exposure"]


def test_the_reduce_only_flag_alone_does_not_make_an_order_reducing() -> None:
    assert reasons(state="reducing", o=order("buy", reduce_only=True)) == ["reduce_only"]


# --- symbol and price ---------------------------------------------------------------------------


def test_an_unknown_symbol_vetoes_and_no_price_is_looked_for() -> None:
    assert reasons(o=order(symbol="BTC-PERP")) == ["symbol_unknown"]
    assert reasons(o=order(symbol="BTC-PERP", price=None), mkt=market([])) == ["symbol_unknown"]


def test_a_mapped_symbol_is_known() -> None:
    cfg = risk_config(symbols={"BTC-PERP": "BTC/USD"})
    assert reasons(o=order(symbol="BTC-PERP", price=None), config=cfg, mkt=market([quote("BTC/USD", "50000")])) == []


def test_no_order_price_and_no_quote_is_price_unknown() -> None:
    assert reasons(o=order(price=None), mkt=market([])) == ["price_unknown"]
    # a quote of another pair does not price this one
    assert reasons(o=order(price=None), mkt=market([quote("BTC/USD", "50000")])) == ["price_unknown"]


def test_a_quote_currency_that_cannot_be_valued_is_price_unknown() -> None:
    # JPY: no peg, no route, no JPY/USD quote
    cfg = risk_config(symbols={"BTCJPY": "BTC/JPY"})
    assert reasons(o=order(symbol="BTCJPY", price="7500000"), config=cfg) == ["price_unknown"]
    # BTC routes through BTC/USDT, which has no quote here
    assert reasons(o=order(symbol="ETHBTC", price="0.035"), mkt=market([])) == ["price_unknown"]


def test_diverging_fresh_quotes_are_price_unknown() -> None:
    mkt = market([quote("BTC/USDT", "50000", "a"), quote("BTC/USDT", "52000", "b")])  # 4% > 2%
    assert reasons(o=order(price=None), mkt=mkt) == ["price_unknown"]
    # its own price is not enough: without a market price the order cannot be sized (issue 13)
    assert reasons(o=order(price="50000"), mkt=mkt) == ["price_unknown"]


def test_the_worse_of_the_limit_and_the_market_price_sizes_the_order() -> None:
    mkt = market([quote("BTC/USDT", "50000")])
    assert notional_is(D("5200.0"), order(qty="0.1", price="52000"), mkt)  # a buy limit above the market
    assert notional_is(D("5000.0"), order(qty="0.1", price="48000"), mkt)  # below: it fills at the market
    assert notional_is(D("5000.0"), order("sell", qty="0.1", price="48000"), mkt)
    assert notional_is(D("5000.0"), order(qty="0.1", price=None), mkt)


def test_without_a_price_the_newest_fresh_quote_is_used() -> None:
    quotes = [
        quote("BTC/USDT", "50500", "a", age_ms=2_000),
        quote("BTC/USDT", "50000", "b", age_ms=1_000),
        quote("BTC/USDT", "49900", "c", age_ms=1_000),
        quote("BTC/USDT", "1", "d", age_ms=10_000_000),
    ]
    mkt = market(quotes)
    assert last_price("BTC", "USDT", mkt) == D("50000")  # ts tie: source "b" before "c"
    assert notional_is(D("1.00000000E+5"), order(qty="2", price=None), mkt)
    assert last_price("ETH", "USDT", mkt) is None


def test_notional_is_converted_through_a_peg_into_the_report_currency() -> None:
    # BTCUSDT in a USD NAV: USDT is pegged at 1
    assert in_report_currency(D("5000.0"), "USDT", market()) == D("5000.0")
    assert notional_is(D("5000.0"), order(qty="0.1", price="50000"))
    # EUR at 1.08
    assert in_report_currency(D("100"), "EUR", market()) == D("108.00")
    eur = market([quote("BTC/USDT", "50000"), quote("BTC/EUR", "100")])
    assert notional_is(D("108.00"), order(symbol="BTCEUR", qty="1", price="100"), eur)
    # the report currency itself
    assert in_report_currency(D("123.45"), "USD", market()) == D("123.45")


def test_notional_is_converted_through_a_route_into_the_report_currency() -> None:
    mkt = market([quote("BTC/USDT", "97000")])
    # ETHBTC: 2 x 0.035 = 0.070 BTC, at BTC/USDT 97000, USDT peg 1
    assert in_report_currency(D("0.070"), "BTC", mkt) == D("6790.000")
    # the order's price is below ETH/BTC's own quote (0.036): the market's sizes it
    mkt = market([quote("BTC/USDT", "97000"), quote("ETH/BTC", "0.036")])
    assert notional_is(D("6984.000"), order(symbol="ETHBTC", qty="2", price="0.035"), mkt)
    # without the order's price, ETH/BTC's own quote
    assert notional_is(D("6984.000"), order(symbol="ETHBTC", qty="2", price=None), mkt)
    assert in_report_currency(D("1"), "JPY", mkt) is None


# --- limits -------------------------------------------------------------------------------------


def test_order_notional_above_the_limit_vetoes_and_at_it_approves() -> None:
    assert reasons(config=risk_config(max_order_notional="5000")) == []
    assert reasons(config=risk_config(max_order_notional="4999.99999999")) == ["order_notional"]


def test_order_notional_default_limit() -> None:
    nav = snapshot("1E+12")
    assert reasons(o=order(qty="20", price="50000"), nav=nav) == []  # 1,000,000
    assert reasons(o=order(qty="20.00000001", price="50000"), nav=nav) == ["order_notional"]


def test_order_pct_nav_above_the_limit_vetoes_and_at_it_approves() -> None:
    # 10% of 50000 is 5000, the order's notional
    assert reasons(nav=snapshot("50000")) == []
    assert reasons(nav=snapshot("49999.99999999")) == ["order_pct_nav"]
    cfg = risk_config(max_order_pct_nav=0.5)  # 0.5% of 1,000,000 = 5000
    assert reasons(config=cfg) == []
    assert reasons(config=cfg, o=order(qty="0.10000001")) == ["order_pct_nav"]


@pytest.mark.parametrize("nav", ["0", "-1000"])
def test_a_nav_of_zero_or_less_vetoes_any_sized_order_that_opens(nav: str) -> None:
    assert reasons(nav=snapshot(nav)) == ["order_pct_nav", "gross_exposure"]
    # an order that only shrinks a position passes both NAV-relative limits: de-risking stays possible
    assert reasons(nav=snapshot(nav), o=order("sell", "0.1"), position="1") == []


def test_gross_exposure_after_the_order_above_the_limit_vetoes_and_at_it_approves() -> None:
    # 3 x 1,000,000 = 3,000,000; the order adds 5000
    assert reasons(exposure="2995000") == []
    assert reasons(exposure="2995000.00000001") == ["gross_exposure"]
    cfg = risk_config(max_gross_exposure_x=0.5)  # 500,000
    assert reasons(config=cfg, exposure="495000") == []
    assert reasons(config=cfg, exposure="495000.01") == ["gross_exposure"]


def test_unknown_gross_exposure_vetoes() -> None:
    assert reasons(exposure=None) == ["gross_exposure"]


def test_rate_limit_vetoes_at_exactly_max_orders_per_minute() -> None:
    # orders_last_minute excludes this one: at 599 this is the 600th, at 600 the 601st
    assert reasons(per_minute=599) == []
    assert reasons(per_minute=600) == ["rate_limited"]
    cfg = risk_config(max_orders_per_minute=3)
    assert reasons(config=cfg, per_minute=2) == []
    assert reasons(config=cfg, per_minute=3) == ["rate_limited"]


# --- split_symbol -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "pair"),
    [
        ("BTCUSDT", ("BTC", "USDT")),
        ("BTC/USD", ("BTC", "USD")),
        ("BTC-USDT", ("BTC", "USDT")),
        ("BTC_USDC", ("BTC", "USDC")),
        ("ETHBTC", ("ETH", "BTC")),
        ("PEPEFDUSD", ("PEPE", "FDUSD")),  # not PEPEFD/USD: FDUSD is tried first
        ("BTCTUSD", ("BTC", "TUSD")),
        ("ETH/EUR", ("ETH", "EUR")),
        ("USDCUSDT", ("USDC", "USDT")),
        ("BTC-PERP", None),
        ("USDT", None),
        ("/USDT", None),
        ("-USDT", None),
        ("BTC--USDT", None),
        ("DOGEJPY", None),
    ],
)
def test_split_symbol_by_known_quote_assets(symbol: str, pair: tuple[str, str] | None) -> None:
    assert split_symbol(symbol, RiskConfig()) == pair


def test_split_symbol_prefers_risk_symbols() -> None:
    cfg = risk_config(symbols={"BTC-PERP": "BTC/USD", "BTCUSDT": "XBT/USDC"})
    assert split_symbol("BTC-PERP", cfg) == ("BTC", "USD")
    assert split_symbol("BTCUSDT", cfg) == ("XBT", "USDC")
    assert split_symbol("ETHUSDT", cfg) == ("ETH", "USDT")


def test_split_symbol_tries_quote_assets_in_their_order() -> None:
    assert split_symbol("BTCUSDT", risk_config(quote_assets=["T", "USDT"])) == ("BTCUSD", "T")
    assert split_symbol("BTCUSDT", risk_config(quote_assets=["USDT", "T"])) == ("BTC", "USDT")
    assert split_symbol("BTCUSDT", risk_config(quote_assets=["EUR"])) is None


def test_split_symbol_separators_come_before_a_bare_suffix() -> None:
    # "/" is tried before "": the base never keeps the separator
    assert split_symbol("A/USDT", RiskConfig()) == ("A", "USDT")
    assert split_symbol("A_USDT", risk_config(quote_assets=["USDT"])) == ("A", "USDT")


# --- gross_exposure -----------------------------------------------------------------------------


def test_gross_exposure_sums_abs_qty_times_mark_in_the_report_currency() -> None:
    mkt = market([quote("BTC/USDT", "50000")])
    positions = {"BTCUSDT": D("0.5"), "ETHBTC": D("-2"), "SOLUSDT": D("0"), "BTC-PERP": D("0"), "ETHEUR": D("-1.5")}
    marks = {"BTCUSDT": D("50000"), "ETHBTC": D("0.035"), "ETHEUR": D("3000")}
    # 25000 + 2 x 0.035 x 50000 + 1.5 x 3000 x 1.08 = 25000 + 3500 + 4860
    assert gross_exposure(positions, marks, RiskConfig(), mkt) == D("33360.000")
    assert gross_exposure({}, {}, RiskConfig(), mkt) == D(0)
    assert gross_exposure({"BTCUSDT": D(0)}, {}, RiskConfig(), mkt) == D(0)


def test_gross_exposure_is_unknown_when_a_position_cannot_be_valued() -> None:
    mkt = market([quote("BTC/USDT", "50000")])
    cfg = RiskConfig()
    assert gross_exposure({"BTCUSDT": D("1"), "ETHUSDT": D("1")}, {"BTCUSDT": D("50000")}, cfg, mkt) is None
    assert gross_exposure({"BTC-PERP": D("1")}, {"BTC-PERP": D("50000")}, cfg, mkt) is None
    assert gross_exposure({"ETHBTC": D("1")}, {"ETHBTC": D("0.035")}, cfg, market([])) is None
    mapped = risk_config(symbols={"BTC-PERP": "BTC/USD"})
    assert gross_exposure({"BTC-PERP": D("-2")}, {"BTC-PERP": D("50000.5")}, mapped, mkt) == D("100001.0")


# --- states and bad orders ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("states", "worst"),
    [
        ([], "active"),
        (["active"], "active"),
        (["active", "reducing"], "reducing"),
        (["reducing", "active"], "reducing"),
        (["halted", "active"], "halted"),
        (["reducing", "halted", "active"], "halted"),
    ],
)
def test_worst_state(states: list[str], worst: str) -> None:
    assert worst_state(states) == worst
    assert worst_state(iter(states)) == worst


def test_state_rank_orders_every_state() -> None:
    assert sorted(STATE_RANK, key=STATE_RANK.get) == ["active", "reducing", "halted"]  # type: ignore[arg-type]


def test_bad_order_is_vetoed_with_bad_order_only() -> None:
    d = bad_order("o-9", NOW, "reducing", snapshot("2500.50", "stale", age_ms=3_000, computed_age_ms=9_000))
    assert d == Decision("o-9", "veto", ["bad_order"], "reducing", "2500.50", "stale", 9_000, NOW)
    assert bad_order("o-9", NOW, "reducing", None, "ab" * 32).fields()["order_hash"] == "ab" * 32
    assert d.fields()["reasons"] == "bad_order"
    d = bad_order("o-10", NOW, "active", None)
    assert d.fields() == {
        "order_id": "o-10",
        "decision": "veto",
        "reasons": "bad_order",
        "trading_state": "active",
        "nav": "",
        "nav_status": "missing",
        "nav_age_ms": "0",
        "ts": str(NOW),
    }


def test_reasons_lists_every_code_once() -> None:
    assert len(set(REASONS)) == len(REASONS) == 20
    assert REASONS[0] == "bad_order" and REASONS[-1] == "rate_limited"


# --- config -------------------------------------------------------------------------------------


def test_defaults_are_sane() -> None:
    cfg = RiskConfig()
    assert cfg.max_nav_age_s > 0 and cfg.max_nav_age_ms == LIMIT_MS
    assert cfg.max_order_notional == D("1000000") and cfg.max_order_notional > 0
    assert 0 < cfg.max_order_pct_nav <= 100 and cfg.max_gross_exposure_x > 0
    assert cfg.max_orders_per_minute > 0
    assert 0 < cfg.reduce_drawdown_pct < cfg.halt_drawdown_pct <= 100
    assert cfg.symbols == {} and cfg.quote_assets == list(DEFAULT_QUOTES)
    assert msgspec.convert({}, RiskConfig) == cfg


def test_a_full_config_decodes() -> None:
    cfg = risk_config(
        max_nav_age_s=30,
        max_order_notional="250000.50",
        max_order_pct_nav=5,
        max_gross_exposure_x=2,
        max_orders_per_minute=100,
        reduce_drawdown_pct=3,
        halt_drawdown_pct=6,
        symbols={"BTC-PERP": "BTC/USD"},
        quote_assets=["USDT", "USD"],
    )
    assert cfg.max_nav_age_ms == 30_000 and cfg.max_order_notional == D("250000.50")
    assert cfg.symbols == {"BTC-PERP": "BTC/USD"} and cfg.quote_assets == ["USDT", "USD"]


@pytest.mark.parametrize(
    ("over", "words"),
    [
        ({"max_nav_age_s": 0}, "max_nav_age_s"),
        ({"max_nav_age_s": -1}, "max_nav_age_s"),
        ({"max_nav_age_s": 3601}, "max_nav_age_s"),
        ({"max_order_notional": "0"}, "max_order_notional"),
        ({"max_order_notional": "-5"}, "max_order_notional"),
        ({"max_order_notional": "NaN"}, "max_order_notional"),
        ({"max_order_notional": "Infinity"}, "max_order_notional"),
        ({"max_order_pct_nav": 0}, "max_order_pct_nav"),
        ({"max_gross_exposure_x": 0}, "max_gross_exposure_x"),
        ({"max_orders_per_minute": 0}, "max_orders_per_minute"),
        ({"reduce_drawdown_pct": 10, "halt_drawdown_pct": 10}, "halt_drawdown_pct"),
        ({"reduce_drawdown_pct": 8, "halt_drawdown_pct": 4}, "halt_drawdown_pct"),
        ({"halt_drawdown_pct": 5}, "halt_drawdown_pct"),  # not above the default reduce (5)
        ({"symbols": {"X": "BTCUSDT"}}, "risk.symbols.X"),
        ({"symbols": {"X": "/USDT"}}, "risk.symbols.X"),
        ({"symbols": {"X": "BTC/"}}, "risk.symbols.X"),
        ({"symbols": {"X": "A/B/C"}}, "risk.symbols.X"),
        ({"quote_assets": []}, "quote_assets"),
        ({"quote_assets": ["USDT", ""]}, "quote_assets"),
        ({"nav_freshness_seconds": 30}, "nav_freshness_seconds"),  # the old gate's optional knob
    ],
)
def test_config_errors(over: dict[str, Any], words: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=words):
        risk_config(**over)


# --- property: never approve on a NAV that is not ok and fresh -----------------------------------


SIDES = st.sampled_from(["buy", "sell"])
AMOUNTS = st.decimals(min_value=D("0.00000001"), max_value=D("1000"), places=8)


def rarely(draw: st.DrawFn, usual: Any, other: st.SearchStrategy[Any]) -> Any:
    """``usual`` nine times in ten: the other checks must pass often, or approvals never happen
    and the property says nothing."""
    return usual if draw(st.integers(0, 9)) else draw(other)


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    limit_s = draw(st.sampled_from([1, 5, 60, 300]))
    limit = limit_s * 1000
    near = st.one_of(st.integers(limit - 3, limit + 3), st.integers(-5, 2 * limit))
    nav = rarely(draw, "draw", st.none())
    if nav is not None:
        nav = Snapshot(
            "account",
            rarely(draw, D("1E+9"), st.decimals(min_value=-1000, max_value=10**9, places=2)),
            "USD",
            draw(st.sampled_from(["ok", "ok", "ok", "stale", "partial", "failed"])),
            NOW - draw(near),
            NOW - draw(near),
            venue="binance",
            account="main",
            fresh_until=NOW + draw(st.integers(-3, 3)) if draw(st.integers(0, 4)) == 0 else NOW + limit,
        )
    o = Order(
        ts=NOW,
        order_id="p",
        venue="binance",
        account="main",
        symbol=rarely(draw, "BTCUSDT", st.sampled_from(["ETHBTC", "BTC/USD", "BTCEUR", "BTC-PERP", "XJPY"])),
        side=draw(SIDES),
        qty=draw(AMOUNTS),
        price=draw(st.none() | AMOUNTS),
        reduce_only=draw(st.booleans()),
    )
    source_ok = st.builds(
        SourceState,
        st.just("binance"),
        st.just("positions"),
        st.none(),
        st.booleans(),
        st.just(""),
        st.integers(NOW - 2 * limit, NOW),
    )
    return {
        "order": o,
        "config": RiskConfig(
            max_nav_age_s=limit_s, max_order_notional=D("1E+12"), max_order_pct_nav=100, max_gross_exposure_x=1000
        ),
        "now_ms": NOW,
        "nav": nav,
        "sources": rarely(draw, [], st.lists(source_ok, max_size=2)),
        "trading_state": rarely(draw, "active", st.sampled_from(["reducing", "halted"])),
        "position": draw(st.decimals(min_value=-1000, max_value=1000, places=8)),
        "exposure": rarely(draw, D(0), st.none() | st.decimals(min_value=0, max_value=10**6, places=2)),
        "orders_last_minute": rarely(draw, 0, st.integers(0, 700)),
    }


PROPERTY_QUOTES = [
    Quote("BTC", "USDT", "s", D("50000"), NOW - 1_000),
    Quote("ETH", "BTC", "s", D("0.035"), NOW - 1_000),
    Quote("BTC", "USD", "s", D("50010"), NOW - 1_000),
]
PROPERTY_MARKET = Market(nav_config(), PROPERTY_QUOTES, reporting(PROPERTY_QUOTES), NOW)


@settings(
    max_examples=200, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(cases())
def test_never_approves_unless_the_nav_is_ok_and_fresh(case: dict[str, Any]) -> None:
    d = decide(market=PROPERTY_MARKET, **case)
    nav: Snapshot | None = case["nav"]
    cfg: RiskConfig = case["config"]
    if d.decision == "approve":
        assert nav is not None and nav.status == "ok" and NOW < nav.fresh_until
        assert NOW - min(nav.as_of, nav.computed_at) <= cfg.max_nav_age_ms
    # and the decision is always consistent with its reasons
    assert (d.decision == "approve") == (d.reasons == [])
    assert d.reasons == sorted(set(d.reasons), key=REASONS.index)
    assert "bad_order" not in d.reasons
    if nav is None:
        assert d.reasons[0] == "nav_missing"
    else:
        assert ("nav_stale" in d.reasons) == (
            nav.status == "stale"
            or (nav.status == "ok" and NOW >= nav.fresh_until)
            or NOW - min(nav.as_of, nav.computed_at) > cfg.max_nav_age_ms
        )
        if nav.status != "ok":
            assert f"nav_{nav.status}" in d.reasons
        assert "nav_missing" not in d.reasons
        assert {"nav_failed", "nav_partial"} & set(d.reasons) <= {f"nav_{nav.status}"}


def test_the_property_inputs_do_reach_approvals() -> None:
    """The property above is only worth something if its generator produces approvable cases."""
    d = decide(
        Order(
            ts=NOW, order_id="p", venue="binance", account="main", symbol="ETHBTC", side="buy", qty=D("1"), price=None
        ),
        config=RiskConfig(max_nav_age_s=5),
        now_ms=NOW,
        nav=Snapshot("account", D("1000000"), "USD", "ok", NOW - 5_000, NOW, fresh_until=NOW + 1),
        market=PROPERTY_MARKET,
        sources=[],
        trading_state="active",
        position=D(0),
        exposure=D(0),
        orders_last_minute=0,
    )
    assert (d.decision, d.nav_age_ms) == ("approve", 5_000)


def test_a_stale_quote_is_no_price() -> None:
    """Without an order price, only a fresh quote sets the notional: a stale one is price_unknown."""
    stale = market(quotes=[quote("BTC/USDT", "50000", age_ms=120_001)])  # NAV_BASE max_age_s 120
    assert reasons(mkt=stale, o=order(price=None)) == ["price_unknown"]
    assert reasons(mkt=market(quotes=[quote("BTC/USDT", "50000", age_ms=120_000)]), o=order(price=None)) == []


def test_a_notional_converted_through_a_stale_price_is_unknown() -> None:
    """An order priced in BTC is valued through BTC's route; a stale BTC quote makes it unknown."""
    stale_route = market(quotes=[quote("BTC/USDT", "50000", age_ms=120_001)])
    assert reasons(mkt=stale_route, o=order(symbol="ETHBTC", price="0.05")) == ["price_unknown"]


def test_the_opening_limits_skip_an_order_that_only_shrinks_a_position() -> None:
    """order_pct_nav and gross_exposure bound new risk: a close-out larger than them passes."""
    cfg = risk_config(max_order_pct_nav=0.1, max_gross_exposure_x=0.001)
    assert reasons(config=cfg, o=order("sell", "2"), position="5") == []
    assert reasons(config=cfg, o=order("buy", "2")) == ["order_pct_nav", "gross_exposure"]
