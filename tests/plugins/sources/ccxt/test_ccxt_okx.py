"""The ``ccxt`` source kind with CCXT's real ``okx`` class against the local stub.

OKX v5 answers every amount as a JSON string inside ``{"code": "0", "msg": "", "data": [...]}``;
payloads/okx/ holds recorded-shape answers (instruments per ``instType``, the trading account's
balance with its ``uTime``, a net-mode short swap position, spot tickers) whose values a float
would corrupt, and OKX's error answers (50111 invalid key, 50120 no permission, 50011 too many
requests). The stub routes instruments by query (``instType=SPOT|SWAP|FUTURES``).
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from support import START_MS
from support.httpstub import Canned, HttpStub

from navstream.contract.events import Balance, Position, Price, SourceStatus
from navstream.ingest.ratelimit import RateLimited
from navstream.sources import SourceError

INSTRUMENTS = "/api/v5/public/instruments"
BALANCE, POSITIONS, TICKERS = "/api/v5/account/balance", "/api/v5/account/positions", "/api/v5/market/tickers"
VENUE_TS = 1765000000123
EMPTY = {"code": "0", "msg": "", "data": []}


def okx_venue(stub: HttpStub, payloads: Any) -> None:
    """Every answer a healthy OKX gives the source (queued answers of a test come first)."""
    stub.always(f"{INSTRUMENTS}?instType=SPOT", payloads.canned("okx", "instruments-spot"))
    stub.always(f"{INSTRUMENTS}?instType=SWAP", payloads.canned("okx", "instruments-swap"))
    stub.always(f"{INSTRUMENTS}?instType=FUTURES", Canned(json=EMPTY))
    stub.always(BALANCE, payloads.canned("okx", "account-balance"))
    stub.always(POSITIONS, payloads.canned("okx", "account-positions"))
    stub.always(TICKERS, payloads.canned("okx", "market-tickers-spot"))


def okx_table(rig_or_url: Any, **settings: Any) -> dict[str, Any]:
    url = rig_or_url if isinstance(rig_or_url, str) else rig_or_url.stub.url
    return {
        "kind": "ccxt",
        "exchange": "okx",
        "account": "main",
        "base_url": url,
        "api_key_env": "OKX_KEY",
        "secret_env": "OKX_SECRET",
        "password_env": "OKX_PASSPHRASE",
        "symbols": ["BTC/USDT", "ETH/USDT"],
        **settings,
    }


def assert_no_secret(secrets: dict[str, str], *texts: Any) -> None:
    blob = "\n".join(str(t) for t in texts)
    for name, value in secrets.items():
        assert value not in blob, f"{name}'s value leaked"


# --- end to end ------------------------------------------------------------------------------------


async def test_okx_balances_positions_and_prices_reach_p_events_exactly(
    stub: HttpStub, payloads: Any, ingest_once: Any, ccxt_secrets: dict[str, str]
) -> None:
    okx_venue(stub, payloads)
    before = int(time.time() * 1000)
    run = await ingest_once({"okx-main": okx_table(stub.url)})
    after = int(time.time() * 1000)
    assert run.ok == {"okx-main": True}
    balances = {e.asset: e for e in run.events if isinstance(e, Balance)}
    assert {a: b.balance for a, b in balances.items()} == {
        "BTC": Decimal("0.1000000000000000055511"),
        "USDT": Decimal("12345678901234567.89"),
        "ETH": Decimal("0"),  # the venue says 0: published as 0
    }
    assert {(b.venue, b.account, b.ts) for b in balances.values()} == {("okx", "main", VENUE_TS)}
    (position,) = [e for e in run.events if isinstance(e, Position)]
    # net mode, pos "-10.000000000000000001" contracts of ctVal 0.01 BTC: short, in BTC
    assert position.symbol == "BTC/USDT:USDT"
    assert position.qty == Decimal("-0.10000000000000000001")
    assert position.entry_price == Decimal("97012.123456789012345")
    assert position.mark_price == Decimal("97100.100000000000000001")
    assert position.unrealized_pnl == Decimal("-0.0000000000000000001")
    # OKX's positions answer has no time of its own; the position's uTime (1765000000111) is
    # when it last changed, not when the venue read it: the arrival time
    assert before <= position.ts <= after
    prices = {(e.base, e.quote): e for e in run.events if isinstance(e, Price)}
    assert {k: p.price for k, p in prices.items()} == {
        ("BTC", "USDT"): Decimal("97012.100000000000000001"),
        ("ETH", "USDT"): Decimal("3422.12"),
    }
    assert {(p.source, p.ts) for p in prices.values()} == {("okx-main", VENUE_TS)}
    status = run.events[-1]
    assert isinstance(status, SourceStatus)
    assert (status.source, status.venue, status.account, status.ok, status.error) == (
        "okx-main",
        "okx",
        "main",
        True,
        None,
    )
    assert not run.alerts
    asked = [(r.method, r.path) for r in stub.requests]
    assert ("GET", "/api/v5/asset/currencies") not in asked, "currencies are not asked (cost, permissions)"
    assert all(r.query.get("instType") != ["OPTION"] for r in stub.to(INSTRUMENTS)), "options are never loaded"
    signed = stub.to(BALANCE)[0].headers
    assert (
        signed["ok-access-key"] == ccxt_secrets["OKX_KEY"]
        and signed["ok-access-passphrase"] == ccxt_secrets["OKX_PASSPHRASE"]
    )


async def test_okx_a_failed_round_is_a_status_and_publishes_nothing(
    stub: HttpStub, payloads: Any, ingest_once: Any
) -> None:
    okx_venue(stub, payloads)
    stub.add(BALANCE, payloads.canned("okx", "error-50111-invalid-key", 401))
    run = await ingest_once({"okx-main": okx_table(stub.url)})
    assert run.ok == {"okx-main": False}
    (status,) = run.events
    assert isinstance(status, SourceStatus) and not status.ok
    assert "credentials rejected" in (status.error or "") and "50111" in (status.error or "")


async def test_okx_symbols_unknown_or_missing_are_problems_never_zero(
    stub: HttpStub, payloads: Any, ingest_once: Any
) -> None:
    okx_venue(stub, payloads)
    tickers = payloads.json("okx", "market-tickers-spot")
    tickers["data"] = [t for t in tickers["data"] if t["instId"] != "ETH-USDT"]  # listed, but not answered
    stub.always(TICKERS, Canned(json=tickers))
    table = okx_table(stub.url, fetch=["prices"], symbols=["BTC/USDT", "NOPE/USDT", "ETH/USDT"])
    run = await ingest_once({"okx-prices": table})
    assert run.ok == {"okx-prices": True}
    prices = {e.base: e.price for e in run.events if isinstance(e, Price)}
    assert prices == {"BTC": Decimal("97012.100000000000000001")}, "other prices are still published"
    status = run.events[-1]
    assert isinstance(status, SourceStatus) and status.ok
    assert "NOPE/USDT" in (status.error or "") and "does not list" in (status.error or "")
    assert "ETH/USDT: not in the venue's answer" in (status.error or "")
    assert sorted(a["code"] for a in run.alerts) == ["source_incomplete", "source_incomplete"]
    assert len(stub.to(TICKERS)) == 1, "one request for every spot ticker"


# --- exact numbers ---------------------------------------------------------------------------------


async def test_okx_amounts_sent_as_json_numbers_arrive_exact(ccxt_rig: Any, payloads: Any) -> None:
    okx_venue(ccxt_rig.stub, payloads)
    ccxt_rig.stub.always(BALANCE, payloads.canned("okx", "account-balance-numbers"))
    assert '"availBal": 0.1000000000000000055511,' in payloads.text("okx", "account-balance-numbers")
    source = ccxt_rig.build(okx_table(ccxt_rig, fetch=["balances"]))
    fetched = await ccxt_rig.fetch(source)
    assert {e.asset: e.balance for e in fetched.events if isinstance(e, Balance)} == {
        "BTC": Decimal("0.1000000000000000055511"),  # a float reads 0.1
        "USDT": Decimal("12345678901234567.89"),  # a float reads 12345678901234568
        "ETH": Decimal("0"),
    }
    assert not fetched.problems


async def test_okx_an_unreadable_amount_is_a_problem_not_zero(ccxt_rig: Any, payloads: Any) -> None:
    okx_venue(ccxt_rig.stub, payloads)
    balance = payloads.json("okx", "account-balance")
    balance["data"][0]["details"][0]["eq"] = "１２"  # unicode digits: CCXT passes them on, navstream refuses
    ccxt_rig.stub.add(BALANCE, Canned(json=balance))
    source = ccxt_rig.build(okx_table(ccxt_rig, fetch=["balances"]))
    fetched = await ccxt_rig.fetch(source)
    assert {e.asset for e in fetched.events} == {"USDT", "ETH"}
    (problem,) = fetched.problems
    assert problem.startswith("balance BTC: total '１２', which is not a decimal number: non-ASCII")
    assert problem.endswith(": not a usable amount; not published")
    balance["data"][0]["details"][0]["eq"] = "NaN"  # CCXT's own arithmetic chokes: the round fails
    ccxt_rig.stub.add(BALANCE, Canned(json=balance))
    with pytest.raises(SourceError, match="okx balances: the answer could not be read"):
        await ccxt_rig.fetch(source)


# --- rate limits -----------------------------------------------------------------------------------


async def test_okx_429_with_retry_after_blocks_the_host_for_that_long(ccxt_rig: Any, payloads: Any) -> None:
    okx_venue(ccxt_rig.stub, payloads)
    ccxt_rig.stub.add(BALANCE, payloads.canned("okx", "error-50011-rate-limit", 429, headers={"Retry-After": "7"}))
    source = ccxt_rig.build(okx_table(ccxt_rig, timeout_s=5))  # blocked past the deadline: no wait
    with pytest.raises(RateLimited, match="HTTP 429") as first:
        await ccxt_rig.fetch(source)
    assert first.value.until == pytest.approx(ccxt_rig.mono() + 7), "Retry-After: 7 s, not a default"
    started = time.monotonic()
    with pytest.raises(RateLimited, match="rate limited"):
        await ccxt_rig.fetch(source)
    assert time.monotonic() - started < 0.5, "a blocked host fails at once"
    assert len(ccxt_rig.stub.to(BALANCE)) == 1, "nothing is sent while the host is blocked"
    ccxt_rig.mono.advance(7.5)
    fetched = await ccxt_rig.fetch(source)
    assert len(ccxt_rig.stub.to(BALANCE)) == 2 and fetched.events and not fetched.problems


async def test_okx_429_is_a_rate_limited_status_and_the_next_round_asks_nothing(
    stub: HttpStub, payloads: Any, ingest_once: Any
) -> None:
    okx_venue(stub, payloads)
    stub.always(BALANCE, payloads.canned("okx", "error-50011-rate-limit", 429, headers={"Retry-After": "30"}))
    run = await ingest_once({"okx-main": okx_table(stub.url)})
    assert run.ok == {"okx-main": False}
    (status,) = run.events
    assert isinstance(status, SourceStatus) and not status.ok
    assert "HTTP 429" in (status.error or "") and "waits 30s" in (status.error or "")


async def test_okx_costs_are_the_pool_s_weights_under_ccxt_s_budget(ccxt_rig: Any, payloads: Any) -> None:
    okx_venue(ccxt_rig.stub, payloads)
    source = ccxt_rig.build(okx_table(ccxt_rig, fetch=["balances"]))
    limiter = ccxt_rig.http.limiters[ccxt_rig.stub.url.split("//")[1]]
    assert limiter.budget == 545, "60000 / rateLimit 110 ms"
    await ccxt_rig.fetch(source)
    # spot instruments of cost 1, the balance of cost 2 (CCXT's own cost table)
    assert [(r.path, r.raw_query) for r in ccxt_rig.stub.requests] == [(INSTRUMENTS, "instType=SPOT"), (BALANCE, "")]
    assert limiter.spent() == 3
    lower = ccxt_rig.build(okx_table(ccxt_rig, fetch=["balances"], weight_per_minute=100), name="lower")
    assert lower is not None and limiter.budget == 100, "a lower budget stands for the whole host"


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "reason"),
    [
        ("error-50111-invalid-key", 401, "credentials rejected (AuthenticationError: 50111: Invalid OK-ACCESS-KEY)"),
        ("error-50120-permission", 200, "the key lacks a permission (ExchangeError: 50120: API key doesn't have"),
        ("error-50001-maintenance", 503, "venue unavailable (maintenance) (OnMaintenance: 50001"),
    ],
)
async def test_okx_errors_say_what_is_wrong(name: str, status: int, reason: str, ccxt_rig: Any, payloads: Any) -> None:
    okx_venue(ccxt_rig.stub, payloads)
    ccxt_rig.stub.add(BALANCE, payloads.canned("okx", name, status))
    source = ccxt_rig.build(okx_table(ccxt_rig))
    with pytest.raises(SourceError) as caught:
        await ccxt_rig.fetch(source)
    assert str(caught.value).startswith("okx balances: " + reason)
    assert "127.0.0.1" not in str(caught.value), "never the URL"


async def test_okx_an_answer_slower_than_timeout_s_fails_the_fetch(ccxt_rig: Any, payloads: Any) -> None:
    okx_venue(ccxt_rig.stub, payloads)
    ccxt_rig.stub.add(BALANCE, payloads.canned("okx", "account-balance", delay_s=3.0))
    source = ccxt_rig.build(okx_table(ccxt_rig, fetch=["balances"], timeout_s=0.5))
    started = time.monotonic()
    with pytest.raises(SourceError, match="timed out"):
        await ccxt_rig.fetch(source)
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("body", ['{"code": "0", "data": [{"uTime": "17', "<html>502 Bad Gateway</html>", ""])
async def test_okx_malformed_json_fails_the_fetch(body: str, ccxt_rig: Any, payloads: Any) -> None:
    okx_venue(ccxt_rig.stub, payloads)
    ccxt_rig.stub.add(BALANCE, Canned(200, body=body))
    source = ccxt_rig.build(okx_table(ccxt_rig, fetch=["balances"]))
    with pytest.raises(SourceError, match="malformed JSON"):
        await ccxt_rig.fetch(source)


async def test_okx_an_empty_wallet_answer_fails_instead_of_reading_zero(ccxt_rig: Any, payloads: Any) -> None:
    okx_venue(ccxt_rig.stub, payloads)
    ccxt_rig.stub.add(BALANCE, Canned(json=EMPTY))
    source = ccxt_rig.build(okx_table(ccxt_rig, fetch=["balances"]))
    with pytest.raises(SourceError, match="holds no spot wallet"):
        await ccxt_rig.fetch(source)


# --- positions -------------------------------------------------------------------------------------


async def test_okx_positions_with_a_spot_wallet_ask_for_every_instrument_type(ccxt_rig: Any, payloads: Any) -> None:
    """market_type 'spot' (the default) must not narrow OKX's positions: no instType, so swaps
    and futures both come back."""
    okx_venue(ccxt_rig.stub, payloads)
    source = ccxt_rig.build(okx_table(ccxt_rig, fetch=["positions"], market_type="spot"))
    fetched = await ccxt_rig.fetch(source)
    assert [e.symbol for e in fetched.events] == ["BTC/USDT:USDT"] and fetched.problems == []
    assert [r.raw_query for r in ccxt_rig.stub.to(POSITIONS)] == [""]


async def test_okx_positions_long_closed_and_without_entry_price(ccxt_rig: Any, payloads: Any) -> None:
    okx_venue(ccxt_rig.stub, payloads)
    source = ccxt_rig.build(okx_table(ccxt_rig, fetch=["positions"]))
    first = await ccxt_rig.fetch(source)
    assert [(e.symbol, e.qty) for e in first.events if isinstance(e, Position)] == [
        ("BTC/USDT:USDT", Decimal("-0.10000000000000000001"))
    ]
    long = payloads.json("okx", "account-positions")
    long["data"][0]["pos"] = "3"
    ccxt_rig.stub.add(POSITIONS, Canned(json=long))
    assert [e.qty for e in (await ccxt_rig.fetch(source)).events if isinstance(e, Position)] == [Decimal("0.03")]
    ccxt_rig.stub.add(POSITIONS, Canned(json=EMPTY))  # closed: the venue stops listing it
    (closed,) = (await ccxt_rig.fetch(source)).events
    assert isinstance(closed, Position) and closed.qty == 0 and closed.ts == START_MS
    no_entry = payloads.json("okx", "account-positions")
    no_entry["data"][0]["avgPx"] = ""
    ccxt_rig.stub.add(POSITIONS, Canned(json=no_entry))
    fetched = await ccxt_rig.fetch(source)
    assert not fetched.events and "entryPrice None" in fetched.problems[0], "never published with entry 0"


async def test_okx_a_position_whose_market_is_not_loaded_is_a_problem_not_one_unit_per_contract(
    ccxt_rig: Any, payloads: Any
) -> None:
    """OKX lists option positions too, but options are never loaded (nor a contract listed
    since the last load): CCXT then has no contract size, and 5 BTC-USD option contracts
    (0.01 BTC each) must not be published as a qty of 5."""
    okx_venue(ccxt_rig.stub, payloads)
    source = ccxt_rig.build(okx_table(ccxt_rig, fetch=["positions"]))
    answer = payloads.json("okx", "account-positions")
    option = {**answer["data"][0], "instId": "BTC-USD-260327-60000-C", "instType": "OPTION", "pos": "5", "ccy": "BTC"}
    answer["data"].append(option)
    ccxt_rig.stub.add(POSITIONS, Canned(json=answer))
    fetched = await ccxt_rig.fetch(source)
    assert [e.symbol for e in fetched.events] == ["BTC/USDT:USDT"], "the swap (size loaded) is still published"
    assert len(fetched.problems) == 1 and "BTC/USD:BTC-260327-60000-C" in fetched.problems[0]
    assert "market is not loaded" in fetched.problems[0]


def test_a_negative_contract_count_is_a_problem_never_a_flipped_short() -> None:
    """CCXT's unified contracts are unsigned and the side signs them; an exchange whose parser
    kept the venue's sign would make -2 short contracts a long of 2."""
    from navstream.plugins.sources.ccxt.convert import Reader

    problems: list[str] = []
    entry = {"symbol": "BTC/USDT:USDT", "contracts": "-2", "contractSize": "0.01", "side": "short", "entryPrice": "1"}
    read = Reader("okx", "main", {}, "okx").positions([entry], START_MS, START_MS, problems, {"BTC/USDT:USDT": {}})
    assert read == {"BTC/USDT:USDT": None} and "negative" in problems[0]


# --- settings and secrets --------------------------------------------------------------------------


async def test_okx_a_missing_credential_fails_at_build_naming_the_variable(ccxt_rig: Any) -> None:
    with pytest.raises(ValueError, match="OKX_NOT_SET is not set"):
        ccxt_rig.build(okx_table(ccxt_rig, password_env="OKX_NOT_SET"))
    with pytest.raises(msgspec.ValidationError, match="password_env"):
        ccxt_rig.build(okx_table(ccxt_rig, password_env=""))


async def test_okx_credentials_appear_nowhere(
    stub: HttpStub, payloads: Any, ingest_once: Any, ccxt_secrets: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The key, secret and passphrase are sent (headers) and never seen again: not in an event,
    a status, a problem, an alert, a log record (every logger at DEBUG, CCXT's included) or an
    exception's text, even when the venue echoes the key in its error."""
    okx_venue(stub, payloads)
    echo = {
        "code": "50111",
        "msg": f"Invalid OK-ACCESS-KEY {ccxt_secrets['OKX_KEY']} with {ccxt_secrets['OKX_PASSPHRASE']}",
    }
    stub.add(BALANCE, Canned(401, json=echo))
    caplog.set_level(logging.DEBUG)
    failed = await ingest_once({"okx-main": okx_table(stub.url)})
    ok = await ingest_once({"okx-main": okx_table(stub.url, symbols=["BTC/USDT", "NOPE/USDT"])})
    assert failed.ok == {"okx-main": False} and ok.ok == {"okx-main": True}
    assert "credentials rejected" in str(failed.events[-1])
    records = [(r.getMessage(), r.__dict__) for r in caplog.records]
    assert records, "something was logged to check"
    assert_no_secret(ccxt_secrets, failed.events, failed.alerts, ok.events, ok.alerts, records)
    assert all(ccxt_secrets["OKX_KEY"] in r.headers.get("ok-access-key", "") for r in stub.to(BALANCE))


async def test_okx_an_error_echoing_the_credentials_is_masked_in_the_exception(
    ccxt_rig: Any, payloads: Any, ccxt_secrets: dict[str, str]
) -> None:
    """The exception the source raises is itself secret-free (not only once the runner masks it):
    a caller that logs or shows it never leaks the key or the passphrase the venue echoed."""
    okx_venue(ccxt_rig.stub, payloads)
    said = f"Invalid OK-ACCESS-KEY {ccxt_secrets['OKX_KEY']}, passphrase {ccxt_secrets['OKX_PASSPHRASE']}"
    ccxt_rig.stub.add(BALANCE, Canned(401, json={"code": "50111", "msg": said}))
    source = ccxt_rig.build(okx_table(ccxt_rig, fetch=["balances"]))
    with pytest.raises(SourceError, match="credentials rejected") as caught:
        await ccxt_rig.fetch(source)
    assert "50111: Invalid OK-ACCESS-KEY" in str(caught.value)
    assert_no_secret(ccxt_secrets, str(caught.value), repr(caught.value), caught.value.__cause__)


async def test_okx_a_non_json_answer_echoing_the_credentials_is_masked_in_the_exception(
    ccxt_rig: Any, payloads: Any, ccxt_secrets: dict[str, str]
) -> None:
    """The source's own 'malformed JSON' error quotes the answer: masked, like CCXT's errors."""
    okx_venue(ccxt_rig.stub, payloads)
    echo = f"<html>proxy refused key {ccxt_secrets['OKX_KEY']} / {ccxt_secrets['OKX_PASSPHRASE']}</html>"
    ccxt_rig.stub.add(BALANCE, Canned(200, body=echo.encode()))
    source = ccxt_rig.build(okx_table(ccxt_rig, fetch=["balances"]))
    with pytest.raises(SourceError, match="malformed JSON") as caught:
        await ccxt_rig.fetch(source)
    assert "proxy refused key" in str(caught.value), str(caught.value)
    assert "HTTP" not in str(caught.value), str(caught.value)
    assert_no_secret(ccxt_secrets, str(caught.value), repr(caught.value))
