"""Bybit (API v5, unified trading account) through the ``ccxt`` source kind: CCXT's real
``bybit`` class against the local HTTP stub, answering the recorded payloads in
``payloads/bybit/`` (shapes of Bybit's v5 documentation and of the examples CCXT keeps in its
``parse_*`` methods; amounts as Bybit sends them, JSON strings, chosen so a float corrupts them).

What Bybit adds to the other venues tested here: an envelope ``{"retCode", "retMsg", "result",
"time"}`` whose ``time`` is the balances' and the positions' timestamp; errors as HTTP 200 with a ``retCode``
(10003 invalid key, 10005 permission denied) or as HTTP 401; instruments cursor-paginated
(``nextPageCursor``) with a second ``status=PreLaunch`` request for linear contracts; positions
with an unsigned ``size`` and a ``side``; tickers without a time of their own.
"""

from __future__ import annotations

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

#: The envelope ``time`` of the recorded wallet answer: the balances' ``ts``.
WALLET_TIME = 1_765_000_000_456
#: The envelope ``time`` of the recorded positions answer: every position's ``ts`` (the
#: positions' own ``updatedTime``, when each last changed, is never their ``ts``).
POSITIONS_TIME = 1_765_000_000_789
INSTRUMENTS, WALLET, POSITIONS, TICKERS = (
    "/v5/market/instruments-info",
    "/v5/account/wallet-balance",
    "/v5/position/list",
    "/v5/market/tickers",
)
#: The cursor of the recorded first page of linear instruments (Bybit's, already percent-encoded).
CURSOR = "first%3DBTCUSDT%26last%3DBTCUSDT"


def serve_bybit(stub: HttpStub, payloads: Payloads) -> None:
    """Bybit's recorded answers to everything the source asks, until a test queues another."""

    def always(route: str, name: str) -> None:
        stub.always(route, payloads.canned("bybit", name))

    always(f"{INSTRUMENTS}?category=spot", "instruments-info-spot")
    always(f"{INSTRUMENTS}?category=linear", "instruments-info-linear-page1")
    always(f"{INSTRUMENTS}?category=linear&cursor={CURSOR}", "instruments-info-linear-page2")
    always(f"{INSTRUMENTS}?category=linear&status=PreLaunch", "instruments-info-linear-prelaunch")
    always(f"{INSTRUMENTS}?category=inverse", "instruments-info-inverse")
    always(f"{INSTRUMENTS}?category=inverse&status=PreLaunch", "instruments-info-inverse-prelaunch")
    always("/v5/user/query-api", "user-query-api")
    always("/v5/account/info", "account-info")
    always(WALLET, "wallet-balance-unified")
    always(f"{POSITIONS}?category=linear", "position-list-linear")  # settleCoin=USDT
    always(f"{POSITIONS}?category=linear&settleCoin=USDC", "position-list-linear-usdc")
    always(f"{POSITIONS}?category=inverse", "position-list-inverse")
    always(POSITIONS, "error-10001-illegal-category")  # Bybit keeps positions of contracts only
    always(f"{TICKERS}?category=spot", "tickers-spot")
    always(f"{TICKERS}?category=linear", "tickers-linear")


@pytest.fixture
def bybit(ccxt_rig: CcxtRig, payloads: Payloads) -> CcxtRig:
    serve_bybit(ccxt_rig.stub, payloads)
    return ccxt_rig


def table(rig: CcxtRig, **settings: Any) -> dict[str, Any]:
    """The unified account's balances and linear positions, and two spot prices."""
    return rig.table(
        "bybit", **{"account": "uta-main", "market_type": "swap", "symbols": ["BTC/USDT", "ETH/USDT"], **settings}
    )


# --- end to end -----------------------------------------------------------------------------------


async def test_balances_positions_and_prices_reach_p_events_exactly(
    bybit: CcxtRig, ingest_once: Callable[[dict[str, dict[str, Any]]], Awaitable[IngestRun]]
) -> None:
    before = int(time.time() * 1000)
    run = await ingest_once({"bybit-uta": table(bybit)})
    after = int(time.time() * 1000)
    assert run.ok == {"bybit-uta": True}
    balances = {e.asset: e for e in by_type(run.events, Balance)}
    # the wallet's walletBalance, as Bybit wrote it; a float would give 0.1 and 1.2345678901234568e+16
    assert {a: str(e.balance) for a, e in balances.items()} == {
        "BTC": "0.1000000000000000055511",
        "USDT": "12345678901234567.89",
        "ETH": "0",  # listed by Bybit with 0: a fact, published
    }
    assert {(e.venue, e.account, e.ts, e.venue_asset) for e in balances.values()} == {
        ("bybit", "uta-main", WALLET_TIME, None)  # the envelope's time; Bybit's codes are the desk's
    }
    positions = {e.symbol: e for e in by_type(run.events, Position)}
    assert {
        s: (str(e.qty), str(e.entry_price), str(e.mark_price), str(e.unrealized_pnl), e.ts)
        for s, e in positions.items()
    } == {
        # side Sell: the size signed negative (x contractSize 1)
        "BTC/USDT:USDT": (
            "-0.100000000000000001",
            "97012.123456789012345",
            "97100.100000000000000001",
            "-8.7976543210987654",
            POSITIONS_TIME,
        ),
        # from the second page of linear instruments: the cursor was followed
        "ETH/USDT:USDT": ("2.5", "3401.37", "3422.12", "51.875", POSITIONS_TIME),
        # settled in USDC and inverse: asked apart (CCXT alone asks settleCoin=USDT only);
        # stamped with the oldest of the three answers' times
        "BTC/USDC:USDC": (
            "0.300000000000000003",
            "96999.900000000000000001",
            "97100.1",
            "30.06",
            POSITIONS_TIME,
        ),
        "BTC/USD:BTC": ("-12345", "97050.55", "97100.1", "-0.000065000000000001", POSITIONS_TIME),
    }
    prices = {(e.base, e.quote): e for e in by_type(run.events, Price)}
    assert {k: str(e.price) for k, e in prices.items()} == {
        ("BTC", "USDT"): "97012.100000000000000001",
        ("ETH", "USDT"): "3422.12",
    }
    assert all(e.source == "bybit-uta" and before <= e.ts <= after for e in prices.values()), (
        "Bybit's tickers carry no time: stamped on arrival"
    )
    (status,) = by_type(run.events, SourceStatus)
    assert (status.venue, status.account, status.ok, status.error) == ("bybit", "uta-main", True, None)
    assert run.events[-1] is status and run.alerts == []
    secret_free(bybit, repr(run.events))
    assert bybit.stub.errors == []


async def test_requests_are_signed_and_follow_the_instruments_cursor(bybit: CcxtRig) -> None:
    source = bybit.build(table(bybit))
    assert (await bybit.fetch(source)).problems == []
    (wallet,) = bybit.stub.to(WALLET)
    assert wallet.param("accountType") == "UNIFIED"
    assert wallet.headers["x-bapi-api-key"] == bybit.ctx.env["BYBIT_KEY"]
    assert len(wallet.headers["x-bapi-sign"]) == 64  # hex HMAC-SHA256
    assert bybit.ctx.env["BYBIT_SECRET"] not in repr(bybit.stub.requests)
    (page2,) = bybit.stub.to(f"{INSTRUMENTS}?cursor={CURSOR}")
    assert page2.param("category") == "linear"
    (positions,) = bybit.stub.to(f"{POSITIONS}?settleCoin=USDT")
    assert positions.param("category") == "linear" and "x-bapi-sign" in positions.headers
    assert [r.param("category") for r in bybit.stub.to(TICKERS)] == ["spot"], "one request for both symbols"


async def test_positions_are_asked_for_contracts_whatever_the_wallet_type(bybit: CcxtRig) -> None:
    """With market_type 'spot' (the default) CCXT alone asks /v5/position/list?category=spot,
    which Bybit refuses (positions exist for contracts only)."""
    source = bybit.build(table(bybit, market_type="spot"))
    fetched = await bybit.fetch(source)
    assert {e.symbol for e in by_type(fetched.events, Position)} == {
        "BTC/USDT:USDT",
        "ETH/USDT:USDT",
        "BTC/USDC:USDC",
        "BTC/USD:BTC",
    }
    assert sorted(r.param("category") for r in bybit.stub.to(POSITIONS)) == ["inverse", "linear", "linear"]


def slices(rig: CcxtRig) -> list[tuple[str, str | None]]:
    """(category, settleCoin) of each positions request, in order."""
    return [(r.param("category"), (r.query.get("settleCoin") or [None])[0]) for r in rig.stub.to(POSITIONS)]


async def test_positions_of_every_settle_coin_and_category_are_read(bybit: CcxtRig) -> None:
    """With no position_symbols CCXT asks Bybit for linear USDT positions only: USDC-settled and
    inverse ones would be missing silently and the risk gate would underestimate exposure."""
    source = bybit.build(table(bybit, fetch=["positions"]))
    fetched = await bybit.fetch(source)
    assert {(e.symbol, str(e.qty)) for e in fetched.events} == {
        ("BTC/USDT:USDT", "-0.100000000000000001"),
        ("ETH/USDT:USDT", "2.5"),
        ("BTC/USDC:USDC", "0.300000000000000003"),
        ("BTC/USD:BTC", "-12345"),
    }
    assert fetched.problems == []
    # one request per slice the loaded markets have, none with CCXT's own parameters
    assert slices(bybit) == [("linear", "USDC"), ("linear", "USDT"), ("inverse", None)]
    for request in bybit.stub.to(POSITIONS):
        assert "type" not in request.query and "subType" not in request.query
        assert "x-bapi-sign" in request.headers


async def test_several_position_symbols_are_read_per_slice(bybit: CcxtRig) -> None:
    """CCXT refuses more than one symbol for Bybit (ArgumentsRequired); the source asks each
    slice (category, settle coin) the symbols are in once, and keeps only those symbols."""
    wanted = ["BTC/USDT:USDT", "ETH/USDT:USDT", "BTC/USD:BTC", "BTC/USDT"]
    source = bybit.build(table(bybit, fetch=["positions"], position_symbols=wanted))
    fetched = await bybit.fetch(source)
    assert {(e.symbol, str(e.qty)) for e in fetched.events} == {
        ("BTC/USDT:USDT", "-0.100000000000000001"),
        ("ETH/USDT:USDT", "2.5"),
        ("BTC/USD:BTC", "-12345"),
    }, "BTC/USDC:USDC is not asked for"
    assert fetched.problems == ["position BTC/USDT: not a contract bybit keeps positions of; not published"]
    assert slices(bybit) == [("linear", "USDT"), ("inverse", None)]


async def test_a_slice_that_fails_fails_the_round_and_zeroes_nothing(bybit: CcxtRig, payloads: Payloads) -> None:
    """A complete read is every slice or nothing: a failed inverse read is never taken for
    'no inverse position' (which would publish it as 0), nor the other slices as the whole."""
    source = bybit.build(table(bybit, fetch=["positions"]))
    assert len((await bybit.fetch(source)).events) == 4
    bybit.stub.add(f"{POSITIONS}?category=inverse", payloads.canned("bybit", "error-10005-permission-denied"))
    with pytest.raises(SourceError, match=r"bybit positions: the key lacks a permission"):
        await bybit.fetch(source)
    # the inverse position gone, read completely: now, and only now, published as 0
    inverse = payloads.json("bybit", "position-list-inverse")
    inverse["result"]["list"] = []
    bybit.stub.add(f"{POSITIONS}?category=inverse", Canned(json=inverse))
    fetched = await bybit.fetch(source)
    assert {(e.symbol, str(e.qty)) for e in fetched.events} == {
        ("BTC/USDT:USDT", "-0.100000000000000001"),
        ("ETH/USDT:USDT", "2.5"),
        ("BTC/USDC:USDC", "0.300000000000000003"),
        ("BTC/USD:BTC", "0"),
    }


async def test_a_full_page_of_positions_fails_the_round_and_closes_nothing(bybit: CcxtRig, payloads: Payloads) -> None:
    """CCXT asks Bybit for one page (limit 200) and never follows its cursor: a full page may be
    one of several, and the positions on the next would be missed, or published as closed."""
    source = bybit.build(table(bybit, fetch=["positions"]))
    assert len((await bybit.fetch(source)).events) == 4
    inverse = payloads.json("bybit", "position-list-inverse")
    (one,) = inverse["result"]["list"]
    inverse["result"]["list"] = [one] * 200
    inverse["result"]["nextPageCursor"] = "page2"
    bybit.stub.add(f"{POSITIONS}?category=inverse", Canned(json=inverse))
    with pytest.raises(SourceError, match=r"bybit positions: one answer holds 200 positions, a full page of 200"):
        await bybit.fetch(source)


async def test_a_position_bybit_stops_listing_is_published_closed(bybit: CcxtRig, payloads: Payloads) -> None:
    source = bybit.build(table(bybit, fetch=["positions"]))
    await bybit.fetch(source)
    positions = payloads.json("bybit", "position-list-linear")
    positions["result"]["list"] = [p for p in positions["result"]["list"] if p["symbol"] != "ETHUSDT"]
    bybit.stub.add(f"{POSITIONS}?category=linear", Canned(json=positions))
    fetched = await bybit.fetch(source)
    assert {(e.symbol, str(e.qty), e.ts) for e in fetched.events if e.symbol.endswith(":USDT")} == {
        ("BTC/USDT:USDT", "-0.100000000000000001", POSITIONS_TIME),
        ("ETH/USDT:USDT", "0", POSITIONS_TIME),  # closed since the last answer: 0, at the answer's time
    }


async def test_a_position_is_stamped_with_the_answer_time_never_its_last_change(
    bybit: CcxtRig, payloads: Payloads
) -> None:
    """An untouched position is as fresh as the answer that lists it: stamped with its last
    change, it would look hours old and the risk gate would veto on its age."""
    source = bybit.build(table(bybit, fetch=["positions"]))
    positions = payloads.json("bybit", "position-list-linear")
    for entry in positions["result"]["list"]:
        entry["updatedTime"] = str(POSITIONS_TIME - 86_400_000)  # untouched for a day
    bybit.stub.add(f"{POSITIONS}?category=linear", Canned(json=positions))
    fetched = await bybit.fetch(source)
    assert {e.ts for e in fetched.events} == {POSITIONS_TIME} and fetched.problems == []
    del positions["time"]  # no envelope time: the arrival time, still not the last change
    positions["result"]["list"][0]["updatedTime"] = str(START_MS + 60_000)  # a venue clock ahead
    bybit.stub.add(f"{POSITIONS}?category=linear", Canned(json=positions))
    fetched = await bybit.fetch(source)
    assert {e.ts for e in fetched.events} == {START_MS}
    assert len(fetched.problems) == 1 and "ahead" in fetched.problems[0], "a venue clock ahead is still reported"


# --- errors ---------------------------------------------------------------------------------------


async def test_429_with_retry_after_blocks_the_host_then_recovers(bybit: CcxtRig, payloads: Payloads) -> None:
    source = bybit.build(table(bybit))
    busy = payloads.canned("bybit", "error-10006-rate-limit", status=429, headers={"Retry-After": "30"})
    bybit.stub.add(WALLET, busy)
    with pytest.raises(RateLimited, match="HTTP 429") as caught:
        await bybit.fetch(source)
    assert caught.value.until == pytest.approx(bybit.mono() + 30), "Bybit's Retry-After is honoured"
    asked = len(bybit.stub.requests)
    started = time.monotonic()
    with pytest.raises(RateLimited, match="rate limited"):
        await bybit.fetch(source)
    assert time.monotonic() - started < 0.5 and len(bybit.stub.requests) == asked, "blocked: nothing is sent"
    bybit.mono.advance(31)
    assert by_type((await bybit.fetch(source)).events, Balance)


async def test_a_rate_limit_retcode_with_http_200_fails_the_round(bybit: CcxtRig, payloads: Payloads) -> None:
    source = bybit.build(table(bybit))
    bybit.stub.add(WALLET, payloads.canned("bybit", "error-10006-rate-limit"))
    with pytest.raises(SourceError, match=r"bybit balances: rate limited \(RateLimitExceeded: 10006"):
        await bybit.fetch(source)


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (("error-10003-invalid-key", 200), "10003: API key is invalid."),
        ((None, 401), "AuthenticationError"),  # Bybit's gateway: HTTP 401, empty body
    ],
    ids=["retCode-10003", "http-401"],
)
async def test_rejected_credentials_fail_the_round_without_secrets(
    bybit: CcxtRig, payloads: Payloads, answer: tuple[str | None, int], said: str
) -> None:
    source = bybit.build(table(bybit))
    name, status = answer
    bybit.stub.add(WALLET, payloads.canned("bybit", name, status=status) if name else Canned(status, body=""))
    with pytest.raises(SourceError, match="bybit balances: credentials rejected") as caught:
        await bybit.fetch(source)
    message = str(caught.value)
    assert said in message
    assert "127.0.0.1" not in message and "accountType" not in message, "never the URL or its query"
    secret_free(bybit, message)


async def test_a_key_without_a_permission_says_so(bybit: CcxtRig, payloads: Payloads) -> None:
    source = bybit.build(table(bybit))
    bybit.stub.add(POSITIONS + "?category=linear", payloads.canned("bybit", "error-10005-permission-denied"))
    with pytest.raises(SourceError, match=r"bybit positions: the key lacks a permission \(PermissionDenied"):
        await bybit.fetch(source)


async def test_a_clock_out_of_sync_is_named(bybit: CcxtRig, payloads: Payloads) -> None:
    source = bybit.build(table(bybit))
    bybit.stub.add(WALLET, payloads.canned("bybit", "error-10002-timestamp"))
    with pytest.raises(SourceError, match="check this host's clock"):
        await bybit.fetch(source)


async def test_an_answer_slower_than_timeout_s_fails_the_round(bybit: CcxtRig, payloads: Payloads) -> None:
    source = bybit.build(table(bybit, timeout_s=0.5))
    await bybit.fetch(source)  # markets loaded: the slow answer is the wallet's
    bybit.stub.add(WALLET, payloads.canned("bybit", "wallet-balance-unified", delay_s=3.0))
    started = time.monotonic()
    with pytest.raises(SourceError, match="timed out"):
        await bybit.fetch(source)
    assert time.monotonic() - started < 1.5


async def test_a_failed_round_is_a_status_and_publishes_nothing(
    bybit: CcxtRig, payloads: Payloads, ingest_once: Callable[[dict[str, dict[str, Any]]], Awaitable[IngestRun]]
) -> None:
    bybit.stub.always(WALLET, payloads.canned("bybit", "error-10003-invalid-key"))
    run = await ingest_once({"bybit-uta": table(bybit)})
    assert run.ok == {"bybit-uta": False}
    (status,) = run.events
    assert isinstance(status, SourceStatus) and not status.ok
    assert "credentials rejected" in (status.error or "")
    secret_free(bybit, status.error or "")


# --- what is missing is a problem, never a zero ----------------------------------------------------


async def test_a_symbol_bybit_does_not_list_and_one_missing_from_the_answer_are_problems(
    bybit: CcxtRig, payloads: Payloads
) -> None:
    source = bybit.build(table(bybit, symbols=["BTC/USDT", "NOPE/USDT", "SOL/USDT"]))
    tickers = payloads.json("bybit", "tickers-spot")
    tickers["result"]["list"] = [t for t in tickers["result"]["list"] if t["symbol"] != "SOLUSDT"]
    bybit.stub.add(f"{TICKERS}?category=spot", Canned(json=tickers))
    fetched = await bybit.fetch(source)
    assert {(e.base, str(e.price)) for e in by_type(fetched.events, Price)} == {("BTC", "97012.100000000000000001")}
    assert fetched.problems == [
        "price NOPE/USDT: bybit does not list this symbol (BadSymbol); not published",
        "price SOL/USDT: not in the venue's answer; not published (never as 0)",
    ]
    assert by_type(fetched.events, Balance), "the rest of the round is published"


NO_LAST = "no usable last price in the venue's answer; not published (never a derived one)"


@pytest.mark.parametrize(
    ("last", "said"),
    [
        # CCXT's safe_ticker would make up last from prevPrice24h x (1 + price24hPcnt), 3435.7 here
        pytest.param("0", NO_LAST, id="zero"),
        pytest.param("", NO_LAST, id="empty"),
        pytest.param(None, NO_LAST, id="absent"),
        pytest.param("-3422.12", "last '-3422.12': not a usable price; not published", id="negative"),
    ],
)
async def test_a_zero_empty_absent_or_negative_last_price_is_a_problem(
    bybit: CcxtRig, payloads: Payloads, last: str | None, said: str
) -> None:
    source = bybit.build(table(bybit, fetch=["prices"]))
    tickers = payloads.json("bybit", "tickers-spot")
    (eth,) = [t for t in tickers["result"]["list"] if t["symbol"] == "ETHUSDT"]
    if last is None:
        del eth["lastPrice"]
    else:
        eth["lastPrice"] = last
    bybit.stub.add(f"{TICKERS}?category=spot", Canned(json=tickers))
    fetched = await bybit.fetch(source)
    assert [(e.base, str(e.price)) for e in fetched.events] == [("BTC", "97012.100000000000000001")]
    assert fetched.problems == [f"price ETH/USDT: {said}"]


async def test_a_price_ccxt_cannot_compute_with_fails_the_round_and_publishes_nothing(
    bybit: CcxtRig, payloads: Payloads, ingest_once: Callable[[dict[str, dict[str, Any]]], Awaitable[IngestRun]]
) -> None:
    """docs/sources.md: an amount CCXT's own arithmetic cannot read fails the round."""
    tickers = payloads.json("bybit", "tickers-spot")
    tickers["result"]["list"][1]["lastPrice"] = "3,422.12"
    bybit.stub.always(f"{TICKERS}?category=spot", Canned(json=tickers))
    run = await ingest_once({"bybit-uta": table(bybit)})
    assert run.ok == {"bybit-uta": False}
    (status,) = run.events
    assert isinstance(status, SourceStatus)
    assert (status.error or "").startswith("bybit prices: the answer could not be read")


async def test_an_answer_without_the_wallet_fails_rather_than_reporting_nothing_held(
    bybit: CcxtRig, payloads: Payloads
) -> None:
    source = bybit.build(table(bybit))
    wallet = payloads.json("bybit", "wallet-balance-unified")
    wallet["result"]["list"] = []
    bybit.stub.add(WALLET, Canned(json=wallet))
    with pytest.raises(SourceError, match="no swap wallet"):
        await bybit.fetch(source)


async def test_an_amount_navstream_cannot_hold_exactly_is_a_problem_not_rounded(
    bybit: CcxtRig, payloads: Payloads
) -> None:
    source = bybit.build(table(bybit, fetch=["balances"]))
    wallet = payloads.json("bybit", "wallet-balance-unified")
    wallet["result"]["list"][0]["coin"][0]["walletBalance"] = "0.1000000000000000000000000000001"  # 31 places
    bybit.stub.add(WALLET, Canned(json=wallet))
    fetched = await bybit.fetch(source)
    assert {e.asset for e in by_type(fetched.events, Balance)} == {"USDT", "ETH"}
    assert len(fetched.problems) == 1
    assert fetched.problems[0].startswith("balance BTC: total '0.1000000000000000000000000000001'")


async def test_a_bybit_clock_ahead_is_reported_and_arrival_time_used(bybit: CcxtRig, payloads: Payloads) -> None:
    source = bybit.build(table(bybit, fetch=["balances"]))
    wallet = payloads.json("bybit", "wallet-balance-unified")
    wallet["time"] = START_MS + 10_000  # the rig's clock reads START_MS
    bybit.stub.add(WALLET, Canned(json=wallet))
    fetched = await bybit.fetch(source)
    assert {e.ts for e in by_type(fetched.events, Balance)} == {START_MS}
    assert len(fetched.problems) == 1 and "ahead" in fetched.problems[0]
