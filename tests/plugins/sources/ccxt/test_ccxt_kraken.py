"""Kraken (spot and margin REST API) through the ``ccxt`` source kind: CCXT's real ``kraken``
class against the local HTTP stub, answering the recorded payloads in ``payloads/kraken/``
(shapes of Kraken's REST documentation; amounts as Kraken sends them, JSON strings, chosen so a
float corrupts them).

What Kraken adds to the other venues tested here: private calls are signed form POSTs
(``nonce=...`` in the body, ``API-Key``/``API-Sign`` headers); errors come with HTTP 200 and
``{"error": ["EAPI:Invalid key"]}``; its own asset codes (``XXBT``, ``XETH``, ``ZUSD``, ``XXDG``),
which CCXT renames (BTC, ETH, USD, DOGE) and which the desk sees with the venue's code kept
(``venue_asset``); a balance may hold bitcoin under two codes (``XXBT`` and ``XBT``); margin
positions without an entry price (CCXT leaves it None: Kraken sends ``cost`` and ``vol``); and no
answer carries a time, so every event is stamped on arrival.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
from support import START_MS
from support.ccxt import by_type, secret_free
from support.httpstub import Canned, HttpStub

from navstream.contract.events import Balance, Position, Price, SourceStatus
from navstream.ingest.ratelimit import RateLimited
from navstream.sources import SourceError

if TYPE_CHECKING:  # the shared rig's types (conftest.py is not importable as a module)
    from .conftest import CcxtRig, IngestRun, Payloads

ASSETS, PAIRS, TICKER = "/0/public/Assets", "/0/public/AssetPairs", "/0/public/Ticker"
BALANCE, POSITIONS = "/0/private/BalanceEx", "/0/private/OpenPositions"
Ingested = Callable[[dict[str, dict[str, Any]]], Awaitable["IngestRun"]]


def serve_kraken(stub: HttpStub, payloads: Payloads) -> None:
    """Kraken's recorded answers to everything the source asks, until a test queues another."""
    for route, name in (
        (ASSETS, "Assets"),
        (PAIRS, "AssetPairs"),
        (BALANCE, "BalanceEx"),
        (POSITIONS, "OpenPositions"),
        (TICKER, "Ticker"),
    ):
        stub.always(route, payloads.canned("kraken", name))


@pytest.fixture
def kraken(ccxt_rig: CcxtRig, payloads: Payloads) -> CcxtRig:
    serve_kraken(ccxt_rig.stub, payloads)
    return ccxt_rig


def table(rig: CcxtRig, **settings: Any) -> dict[str, Any]:
    """The spot wallet's balances, the margin positions, and two prices."""
    return rig.table("kraken", **{"account": "kr-main", "symbols": ["BTC/USD", "ETH/USD"], **settings})


# --- end to end -----------------------------------------------------------------------------------


async def test_balances_and_prices_reach_p_events_exactly_with_kraken_codes_kept(
    kraken: CcxtRig, ingest_once: Ingested
) -> None:
    before = int(time.time() * 1000)
    run = await ingest_once({"kraken-main": table(kraken)})
    after = int(time.time() * 1000)
    assert run.ok == {"kraken-main": True}
    balances = {e.asset: e for e in by_type(run.events, Balance)}
    # BalanceEx's ``balance`` as Kraken wrote it; a float would give 0.1 and 1.2345678901234568e+16
    assert {a: (str(e.balance), e.venue_asset) for a, e in balances.items()} == {
        "BTC": ("0.1000000000000000055511", "XXBT"),
        "USD": ("12345678901234567.89", "ZUSD"),
        "ETH": ("0E-10", "XETH"),  # "0.0000000000": listed by Kraken, a fact, published
        "DOGE": ("1234.56789012", "XXDG"),
        "EUR": ("500.0001", "ZEUR"),
    }
    assert all(e.venue == "kraken" and e.account == "kr-main" for e in balances.values())
    assert all(before <= e.ts <= after for e in balances.values()), "Kraken sends no time: arrival time"
    prices = {(e.base, e.quote): e for e in by_type(run.events, Price)}
    assert {k: str(e.price) for k, e in prices.items()} == {
        ("BTC", "USD"): "97012.100000000000000001",
        ("ETH", "USD"): "3422.12000",
    }
    assert all(e.source == "kraken-main" and before <= e.ts <= after for e in prices.values())
    (status,) = by_type(run.events, SourceStatus)
    assert (status.venue, status.account, status.ok) == ("kraken", "kr-main", True)
    assert run.events[-1] is status
    # the margin positions: CCXT leaves entryPrice None (and Kraken writes a gain "+51.8750"), so
    # each is a problem, alerted, and never a position published with 0
    assert by_type(run.events, Position) == []
    assert "position BTC/USD: entryPrice None" in (status.error or "")
    # Kraken writes a gain with a sign ("+51.8750", as its documentation shows): not in navstream's
    # number grammar, so named too
    assert "position ETH/USD: entryPrice None, unrealizedPnl '+51.8750'" in (status.error or "")
    assert [a["code"] for a in run.alerts] == ["source_incomplete", "source_incomplete"]
    secret_free(kraken, repr(run.events), repr(run.alerts))
    assert kraken.stub.errors == []


async def test_private_calls_are_signed_form_posts(kraken: CcxtRig) -> None:
    source = kraken.build(table(kraken))
    await kraken.fetch(source)
    (balance,) = kraken.stub.to(BALANCE)
    assert balance.method == "POST"
    assert balance.headers["content-type"] == "application/x-www-form-urlencoded"
    assert balance.headers["api-key"] == kraken.ctx.env["KRAKEN_KEY"]
    assert len(base64.b64decode(balance.headers["api-sign"])) == 64  # HMAC-SHA512
    assert int(balance.form["nonce"][0]) > 0
    (positions,) = kraken.stub.to(POSITIONS)
    assert positions.method == "POST"
    assert positions.form["docalcs"] == ["true"] and positions.form["consolidation"] == ["market"]
    assert set(positions.form) == {"nonce", "docalcs", "consolidation"}, "no extra parameter in the signed body"
    assert int(positions.form["nonce"][0]) > int(balance.form["nonce"][0]), "nonces only grow"
    (ticker,) = kraken.stub.to(TICKER)
    assert ticker.method == "GET" and ticker.param("pair") == "XXBTZUSD,XETHZUSD", "one request, Kraken's ids"
    assert kraken.ctx.env["KRAKEN_SECRET"] not in repr(kraken.stub.requests)


# --- asset codes ----------------------------------------------------------------------------------


async def test_xxbt_and_xbt_in_one_answer_are_a_problem_not_one_overwriting_the_other(
    kraken: CcxtRig, payloads: Payloads
) -> None:
    source = kraken.build(table(kraken, fetch=["balances"]))
    kraken.stub.add(BALANCE, payloads.canned("kraken", "BalanceEx-XXBT-and-XBT"))
    fetched = await kraken.fetch(source)
    assert {(e.asset, str(e.balance)) for e in by_type(fetched.events, Balance)} == {("USD", "100.0000")}
    (problem,) = fetched.problems
    assert problem.startswith("balance BTC: the venue reports it under 2 codes (XXBT, XBT)")


async def test_assets_cannot_map_the_two_codes_apart_ccxt_kept_one_value(kraken: CcxtRig, payloads: Payloads) -> None:
    """CCXT's unified total holds one value for BTC (XBT's 0.25 overwrote XXBT's 1.5): mapping the
    codes apart would publish 0.25 for both, so it stays a problem."""
    source = kraken.build(table(kraken, fetch=["balances"], assets={"XBT": "BTC-LEGACY"}))
    kraken.stub.add(BALANCE, payloads.canned("kraken", "BalanceEx-XXBT-and-XBT"))
    fetched = await kraken.fetch(source)
    assert {(e.asset, str(e.balance), e.venue_asset) for e in by_type(fetched.events, Balance)} == {
        ("USD", "100.0000", "ZUSD")
    }
    (problem,) = fetched.problems
    assert problem.startswith("balance BTC: the venue reports it under 2 codes (XXBT, XBT)")


# --- errors: Kraken says them with HTTP 200 ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("error-invalid-key", "kraken balances: credentials rejected (AuthenticationError: EAPI:Invalid key)"),
        (
            "error-permission-denied",
            "kraken balances: the key lacks a permission (PermissionDenied: EGeneral:Permission denied)",
        ),
        (
            "error-service-unavailable",
            "kraken balances: venue unavailable (ExchangeNotAvailable: EService:Unavailable)",
        ),
        ("error-rate-limit", "kraken balances: rate limited (DDoSProtection: EAPI:Rate limit exceeded)"),
        (
            "error-invalid-nonce",  # two processes signing with one key, or a clock set back
            "kraken balances: the venue refused the request's nonce or timestamp (check this host's clock) "
            "(InvalidNonce: EAPI:Invalid nonce)",
        ),
    ],
)
async def test_errors_in_a_200_answer_fail_the_round_with_a_secret_free_reason(
    kraken: CcxtRig, payloads: Payloads, name: str, reason: str
) -> None:
    source = kraken.build(table(kraken))
    kraken.stub.add(BALANCE, payloads.canned("kraken", name))
    with pytest.raises(SourceError) as caught:
        await kraken.fetch(source)
    assert str(caught.value) == reason
    secret_free(kraken, str(caught.value))


async def test_a_rejected_key_ends_as_a_failed_status_and_nothing_else(
    kraken: CcxtRig, payloads: Payloads, ingest_once: Ingested
) -> None:
    kraken.stub.always(BALANCE, payloads.canned("kraken", "error-invalid-key"))
    run = await ingest_once({"kraken-main": table(kraken)})
    assert run.ok == {"kraken-main": False}
    (status,) = run.events
    assert isinstance(status, SourceStatus) and not status.ok and status.account == "kr-main"
    assert "credentials rejected" in (status.error or "") and "EAPI:Invalid key" in (status.error or "")
    secret_free(kraken, status.error or "")


async def test_429_with_retry_after_blocks_the_host_then_recovers(kraken: CcxtRig) -> None:
    source = kraken.build(table(kraken))
    kraken.stub.add(BALANCE, Canned(429, body="Too Many Requests", headers={"Retry-After": "45"}))
    with pytest.raises(RateLimited, match="HTTP 429") as caught:
        await kraken.fetch(source)
    assert caught.value.until == pytest.approx(kraken.mono() + 45)
    asked = len(kraken.stub.requests)
    with pytest.raises(RateLimited, match="rate limited"):
        await kraken.fetch(source)
    assert len(kraken.stub.requests) == asked, "blocked: nothing is sent, public calls included"
    kraken.mono.advance(46)
    assert by_type((await kraken.fetch(source)).events, Balance)


async def test_an_answer_slower_than_timeout_s_fails_the_round(kraken: CcxtRig, payloads: Payloads) -> None:
    source = kraken.build(table(kraken, timeout_s=0.5))
    await kraken.fetch(source)  # markets loaded: the slow answer is the balance's
    kraken.stub.add(BALANCE, payloads.canned("kraken", "BalanceEx", delay_s=3.0))
    started = time.monotonic()
    with pytest.raises(SourceError, match="timed out"):
        await kraken.fetch(source)
    assert time.monotonic() - started < 1.5


# --- what is missing is a problem, never a zero ----------------------------------------------------


async def test_a_symbol_kraken_does_not_list_and_one_missing_from_the_answer_are_problems(
    kraken: CcxtRig, payloads: Payloads
) -> None:
    source = kraken.build(table(kraken, fetch=["prices"], symbols=["BTC/USD", "NOPE/USD", "ETH/USD"]))
    ticker = payloads.json("kraken", "Ticker")
    del ticker["result"]["XETHZUSD"]
    kraken.stub.add(TICKER, Canned(json=ticker))
    fetched = await kraken.fetch(source)
    assert [(e.base, e.quote, str(e.price)) for e in fetched.events] == [("BTC", "USD", "97012.100000000000000001")]
    assert fetched.problems == [
        "price NOPE/USD: kraken does not list this symbol (BadSymbol); not published",
        "price ETH/USD: not in the venue's answer; not published (never as 0)",
    ]
    assert kraken.stub.to(TICKER)[0].param("pair") == "XXBTZUSD,XETHZUSD", "the unlisted one is not asked"


async def test_an_asset_gone_from_the_balance_is_published_as_zero(kraken: CcxtRig, payloads: Payloads) -> None:
    """A withdrawn or liquidated wallet must read 0, never keep its last value until it ages out."""
    source = kraken.build(table(kraken, fetch=["balances"]))
    await kraken.fetch(source)
    balance = payloads.json("kraken", "BalanceEx")
    del balance["result"]["XXDG"]  # Kraken omits an asset no longer held
    kraken.stub.add(BALANCE, Canned(json=balance), Canned(json=balance))
    kraken.clock.advance(5000)
    fetched = await kraken.fetch(source)
    assert {(e.asset, str(e.balance)) for e in fetched.events if e.asset != "USD"} == {
        ("BTC", "0.1000000000000000055511"),
        ("ETH", "0E-10"),
        ("EUR", "500.0001"),
        ("DOGE", "0"),
    }
    (doge,) = [e for e in fetched.events if e.asset == "DOGE"]
    assert doge.venue_asset == "XXDG" and doge.ts == START_MS + 5000 and doge.account == "kr-main"
    assert fetched.problems == []
    again = await kraken.fetch(source)  # absolute snapshots: the 0 is sent again while it stays gone
    assert [str(e.balance) for e in again.events if e.asset == "DOGE"] == ["0"]


async def test_a_failed_or_unreadable_balance_answer_zeroes_nothing(kraken: CcxtRig, payloads: Payloads) -> None:
    source = kraken.build(table(kraken, fetch=["balances"]))
    await kraken.fetch(source)
    kraken.stub.add(BALANCE, Canned(json={"error": ["EService:Unavailable"]}))
    with pytest.raises(SourceError, match="venue unavailable"):
        await kraken.fetch(source)
    kraken.stub.add(BALANCE, Canned(json={"error": [], "result": {}}))
    with pytest.raises(SourceError, match="nothing published"):
        await kraken.fetch(source)
    balance = payloads.json("kraken", "BalanceEx")
    balance["result"]["XXDG"]["balance"] = "1.0000000000000000000000000000001"  # there, but not exact: no 0
    kraken.stub.add(BALANCE, Canned(json=balance))
    fetched = await kraken.fetch(source)
    assert "DOGE" not in {e.asset for e in fetched.events}
    (problem,) = fetched.problems
    assert problem.startswith("balance DOGE: total '1.0000000000000000000000000000001'")


async def test_an_asset_under_two_codes_is_neither_published_nor_zeroed(kraken: CcxtRig, payloads: Payloads) -> None:
    source = kraken.build(table(kraken, fetch=["balances"]))
    assert "BTC" in {e.asset for e in (await kraken.fetch(source)).events}
    kraken.stub.add(BALANCE, payloads.canned("kraken", "BalanceEx-XXBT-and-XBT"))
    fetched = await kraken.fetch(source)
    assert "BTC" not in {e.asset for e in fetched.events}, "its value is unknown: not 0 either"
    assert [p for p in fetched.problems if p.startswith("balance BTC:")]


async def test_an_empty_balance_answer_fails_rather_than_reporting_nothing_held(
    kraken: CcxtRig, payloads: Payloads
) -> None:
    source = kraken.build(table(kraken, fetch=["balances"]))
    kraken.stub.add(BALANCE, Canned(json={"error": [], "result": {}}))
    with pytest.raises(SourceError, match="nothing published"):
        await kraken.fetch(source)


async def test_every_event_is_stamped_on_arrival(kraken: CcxtRig) -> None:
    source = kraken.build(table(kraken))
    kraken.clock.advance(1234)
    fetched = await kraken.fetch(source)
    assert len(fetched.events) == 7 and {e.ts for e in fetched.events} == {START_MS + 1234}
