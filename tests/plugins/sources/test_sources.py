"""The built-in sources against a real local HTTP server (tests/support/httpstub.py).

Payloads are shaped like the venues' documented answers: CoinGecko's ``/simple/price`` with
``include_last_updated_at`` (docs.coingecko.com, "Coin Price by IDs"), its error body
``{"status": {"error_code", "error_message"}}`` ("Common Errors & Rate Limit"); Binance's
``/api/v3/ticker/price`` array of ``{"symbol", "price"}`` strings and ``{"code", "msg"}`` error
bodies; Binance's USD-M "Account Information V3" (``GET /fapi/v3/account``, single-asset and
hedge mode). Each test builds its sources through the installed plugin's registration, so the
entry point is tested too. Time that matters (bans, cache TTLs) runs on injected clocks.
"""

from __future__ import annotations

import asyncio
import decimal
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from support import START_MS, Backend
from support.httpstub import Canned, HttpStub

from navstream.app import ManualClock
from navstream.config import load_settings
from navstream.contract.events import Balance, Position, Price, SourceStatus, decode_event
from navstream.ingest.httppool import HttpPool
from navstream.ingest.pricecache import PriceCache
from navstream.ingest.ratelimit import RateLimited
from navstream.ingest.runner import Ingest
from navstream.plugin.manager import build_plugin_manager
from navstream.sources import (
    Fetched,
    Source,
    SourceConfigError,
    SourceContext,
    SourceError,
    SourceKind,
    SourceSettings,
)

KINDS: dict[str, SourceKind] = build_plugin_manager(env={}).source_kinds
NOW_S = START_MS // 1000
KEY, SECRET = (
    "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A",
    "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j",
)
ENV = {"BN_KEY": KEY, "BN_SECRET": SECRET, "CG_KEY": "CG-demo-key-0123456789"}
CG_PATH, SPOT_PATH, ACCOUNT_PATH = "/api/v3/simple/price", "/api/v3/ticker/price", "/fapi/v3/account"


class Mono:
    """The pool's and the cache's monotonic clock, moved by hand (bans last minutes)."""

    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Rig:
    stub: HttpStub
    http: HttpPool
    mono: Mono
    clock: ManualClock
    ctx: SourceContext

    def build(self, kind: str, table: dict[str, Any], name: str | None = None) -> Source:
        spec = KINDS[kind]
        settings = msgspec.convert({"kind": kind, **table}, spec.settings)
        return spec.factory(name or kind, settings, self.ctx)


@pytest.fixture
def stub() -> Iterator[HttpStub]:
    with HttpStub() as server:
        yield server


@pytest.fixture
async def rig(stub: HttpStub) -> AsyncIterator[Rig]:
    mono = Mono()
    http = HttpPool(timeout_s=5.0, clock=mono)
    clock = ManualClock(START_MS)
    yield Rig(stub, http, mono, clock, SourceContext(http, PriceCache(clock=mono), clock, env=ENV))
    await http.aclose()


# --- recorded-shape payloads ----------------------------------------------------------------------


def coingecko_body(prices: dict[str, str], updated_s: int = NOW_S - 40) -> Canned:
    """Raw JSON text, so every number reaches the source exactly as CoinGecko writes it."""
    entries = ", ".join(
        f'"{cg_id}": {{"usd": {price}, "last_updated_at": {updated_s}}}' for cg_id, price in prices.items()
    )
    return Canned(body="{" + entries + "}")


def spot_body(prices: dict[str, str]) -> Canned:
    return Canned(json=[{"symbol": s, "price": p} for s, p in prices.items()], headers={"X-MBX-USED-WEIGHT-1M": "4"})


def account_v3(
    *,
    assets: list[dict[str, Any]] | None = None,
    positions: list[dict[str, Any]] | None = None,
    updated_ms: int = START_MS - 3_600_000,
) -> dict[str, Any]:
    """Account Information V3, single-asset mode: the ``total*`` fields count USDT only, so they
    differ from the assets' sum here on purpose."""

    def asset(name: str, wallet: str, pnl: str) -> dict[str, Any]:
        return {
            "asset": name,
            "walletBalance": wallet,
            "unrealizedProfit": pnl,
            "marginBalance": wallet,
            "maintMargin": "0.00000000",
            "initialMargin": "0.00000000",
            "positionInitialMargin": "0.00000000",
            "openOrderInitialMargin": "0.00000000",
            "crossWalletBalance": wallet,
            "crossUnPnl": pnl,
            "availableBalance": wallet,
            "maxWithdrawAmount": wallet,
            "updateTime": updated_ms,
        }

    def position(symbol: str, amt: str, pnl: str, notional: str, side: str = "BOTH") -> dict[str, Any]:
        return {
            "symbol": symbol,
            "positionSide": side,
            "positionAmt": amt,
            "unrealizedProfit": pnl,
            "isolatedMargin": "0.00000000",
            "notional": notional,
            "isolatedWallet": "0",
            "initialMargin": "0",
            "maintMargin": "0",
            "updateTime": updated_ms,
        }

    return {
        "totalInitialMargin": "0.00000000",
        "totalMaintMargin": "0.00000000",
        "totalWalletBalance": "103.12345678",
        "totalUnrealizedProfit": "0.00000000",
        "totalMarginBalance": "103.12345678",
        "totalPositionInitialMargin": "0.00000000",
        "totalOpenOrderInitialMargin": "0.00000000",
        "totalCrossWalletBalance": "103.12345678",
        "totalCrossUnPnl": "0.00000000",
        "availableBalance": "103.12345678",
        "maxWithdrawAmount": "103.12345678",
        "assets": assets
        if assets is not None
        else [
            asset("USDT", "23.72469206", "-1.25000000"),
            asset("USDC", "103.12345678", "0.00000000"),
            asset("BTC", "0.00000000", "0.00000000"),
        ],
        "positions": positions
        if positions is not None
        else [
            position("BTCUSDT", "0.250", "-1.25000000", "16796.83250000"),
            position("SOLUSDT", "0", "0.00000000", "0"),
        ],  # open orders only: listed with 0
    }


BINANCE_429 = {
    "code": -1003,
    "msg": "Too many requests; current limit of IP(203.0.113.7) is 6000 requests per "
    "minute. Please use the websocket for live updates to avoid polling the API.",
}
BINANCE_418 = {
    "code": -1003,
    "msg": "Way too many requests; IP(203.0.113.7) banned until 1790000120000. Please "
    "use the websocket for live updates to avoid bans.",
}
COINGECKO_429 = {
    "status": {
        "error_code": 429,
        "error_message": "You've exceeded the Rate Limit. Please visit "
        "https://www.coingecko.com/en/api/pricing to subscribe to our API plans for higher "
        "rate limits.",
    }
}


@dataclass(frozen=True)
class Spec:
    """One source kind, for the tests every kind must pass."""

    kind: str
    path: str
    table: Callable[[str], dict[str, Any]]
    ok: Callable[[], Canned]
    busy: dict[str, Any]


SPECS = [
    Spec(
        "coingecko",
        CG_PATH,
        lambda url: {"base_url": url + "/api/v3", "ids": {"BTC": "bitcoin", "ETH": "ethereum"}},
        lambda: coingecko_body({"bitcoin": "67187.3358936566", "ethereum": "3422.1192"}),
        COINGECKO_429,
    ),
    Spec(
        "binance-spot",
        SPOT_PATH,
        lambda url: {"base_url": url, "pairs": ["BTC/USDT", "ETH/USDT"]},
        lambda: spot_body({"BTCUSDT": "67187.33000000", "ETHUSDT": "3422.12000000"}),
        BINANCE_429,
    ),
    Spec(
        "binance-usdm-account",
        ACCOUNT_PATH,
        lambda url: {
            "base_url": url,
            "account": "futures-main",
            "api_key_env": "BN_KEY",
            "api_secret_env": "BN_SECRET",
        },
        lambda: Canned(json=account_v3()),
        BINANCE_429,
    ),
]
ids = [s.kind for s in SPECS]


def assert_honest(fetched: Fetched) -> None:
    """What every fetch keeps: no zero or negative price, every ts a plausible epoch ms."""
    for event in fetched.events:
        if isinstance(event, Price):
            assert event.price > 0 and isinstance(event.price, Decimal)
        assert START_MS - 86_400_000 * 365 * 5 < event.ts <= START_MS + 5_000


# --- every kind -----------------------------------------------------------------------------------


def test_the_plugin_registers_the_three_kinds() -> None:
    assert {k: KINDS[k].plugin for k in ("coingecko", "binance-spot", "binance-usdm-account")} == {
        "coingecko": "sources",
        "binance-spot": "sources",
        "binance-usdm-account": "sources",
    }
    for kind in KINDS.values():
        config = kind.settings.__struct_config__
        assert config.frozen and config.forbid_unknown_fields


@pytest.mark.parametrize("spec", SPECS, ids=ids)
async def test_unknown_settings_are_refused(spec: Spec, rig: Rig) -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field `base_ulr`"):
        rig.build(spec.kind, {**spec.table(rig.stub.url), "base_ulr": "x"})
    with pytest.raises(msgspec.ValidationError, match="base_url"):
        rig.build(spec.kind, {**spec.table(rig.stub.url), "base_url": "ftp://example.com"})
    with pytest.raises(msgspec.ValidationError, match="must not carry a user or password"):
        rig.build(spec.kind, {**spec.table(rig.stub.url), "base_url": "https://ops:hunter2@example.com"})


def test_the_pool_never_names_a_host_with_its_user_or_password() -> None:
    from navstream.ingest.httppool import HttpPool

    assert HttpPool.host("https://ops:hunter2@api.example.com:8443/v1") == "api.example.com:8443"
    assert HttpPool.host("http://127.0.0.1:9000/x") == "127.0.0.1:9000"


@pytest.mark.parametrize("spec", SPECS, ids=ids)
async def test_429_blocks_the_host_and_the_next_fetch_fails_fast(spec: Spec, rig: Rig) -> None:
    source = rig.build(spec.kind, spec.table(rig.stub.url))
    rig.stub.add(spec.path, Canned(429, json=spec.busy, headers={"Retry-After": "30"}), spec.ok())
    with pytest.raises(RateLimited, match="HTTP 429"):
        await source.fetch()
    started = time.monotonic()
    with pytest.raises(RateLimited, match="rate limited") as caught:
        await source.fetch()
    assert time.monotonic() - started < 0.5, "a blocked host fails at once, it does not wait"
    assert caught.value.until == pytest.approx(rig.mono() + 30)
    assert len(rig.stub.to(spec.path)) == 1, "no request is sent while the host is blocked"
    rig.mono.advance(31)
    fetched = await source.fetch()
    assert fetched.events and len(rig.stub.to(spec.path)) == 2
    assert_honest(fetched)


@pytest.mark.parametrize("spec", SPECS, ids=ids)
async def test_418_bans_hard_and_the_ban_doubles(spec: Spec, rig: Rig) -> None:
    source = rig.build(spec.kind, spec.table(rig.stub.url))
    rig.stub.add(spec.path, Canned(418, json=BINANCE_418), Canned(418, json=BINANCE_418), spec.ok())
    limiter = rig.http.limiters["127.0.0.1:" + rig.stub.url.rsplit(":", 1)[1]]
    with pytest.raises(RateLimited, match="IP banned"):
        await source.fetch()
    assert limiter.blocked_until - rig.mono() == 120
    rig.mono.advance(90)
    with pytest.raises(RateLimited, match="IP banned"):  # banned past this fetch's deadline: nothing sent
        await source.fetch()
    assert len(rig.stub.to(spec.path)) == 1
    rig.mono.advance(31)
    with pytest.raises(RateLimited, match="IP banned"):
        await source.fetch()
    assert limiter.blocked_until - rig.mono() == 240, "a second ban in a row lasts twice as long"
    rig.mono.advance(241)
    assert (await source.fetch()).events
    assert len(rig.stub.to(spec.path)) == 3


@pytest.mark.parametrize("spec", SPECS, ids=ids)
async def test_an_answer_slower_than_timeout_s_fails_the_fetch(spec: Spec, rig: Rig) -> None:
    source = rig.build(spec.kind, {**spec.table(rig.stub.url), "timeout_s": 0.3})
    slow = spec.ok()
    slow.delay_s = 3.0
    rig.stub.add(spec.path, slow)
    started = time.monotonic()
    with pytest.raises(SourceError, match="timed out"):
        await source.fetch()
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("spec", SPECS, ids=ids)
@pytest.mark.parametrize("body", ['{"bitcoin": {"usd": 6718', "<html>502 Bad Gateway</html>", ""])
async def test_malformed_json_fails_the_fetch(spec: Spec, body: str, rig: Rig) -> None:
    source = rig.build(spec.kind, spec.table(rig.stub.url))
    rig.stub.add(spec.path, Canned(200, body=body))
    with pytest.raises(SourceError, match="malformed JSON"):
        await source.fetch()


@pytest.mark.parametrize("spec", SPECS, ids=ids)
async def test_a_server_error_fails_the_fetch_with_the_status(spec: Spec, rig: Rig) -> None:
    source = rig.build(spec.kind, spec.table(rig.stub.url))
    rig.stub.add(spec.path, Canned(503, body="<html><body>503 Service Temporarily Unavailable</body></html>"))
    with pytest.raises(SourceError, match="HTTP 503.*Service Temporarily Unavailable"):
        await source.fetch()


# --- CoinGecko ------------------------------------------------------------------------------------


def many_ids(n: int) -> dict[str, str]:
    return {f"TOK{i:03d}": f"token-{i:03d}" for i in range(n)}


async def test_coingecko_asks_250_assets_in_3_requests(rig: Rig) -> None:
    assets = many_ids(250)
    source = rig.build("coingecko", {"base_url": rig.stub.url + "/api/v3", "ids": assets})
    cg_ids = list(assets.values())
    for chunk in (cg_ids[:100], cg_ids[100:200], cg_ids[200:]):
        rig.stub.add(CG_PATH, coingecko_body({i: f"{n + 1}.5" for n, i in enumerate(chunk)}))
    fetched = await source.fetch()
    requests = rig.stub.to(CG_PATH)
    assert [len(r.param("ids").split(",")) for r in requests] == [100, 100, 50]
    assert sum((r.param("ids").split(",") for r in requests), []) == cg_ids
    for r in requests:
        assert (r.param("vs_currencies"), r.param("include_last_updated_at"), r.param("precision")) == (
            "usd",
            "true",
            "full",
        )
        assert "x-cg-demo-api-key" not in r.headers and "x-cg-pro-api-key" not in r.headers
    assert len(fetched.events) == 250 and not fetched.problems
    assert {e.base for e in fetched.events if isinstance(e, Price)} == set(assets)
    assert all(
        isinstance(e, Price) and e.quote == "USD" and e.source == "coingecko" and e.ts == (NOW_S - 40) * 1000
        for e in fetched.events
    )
    assert rig.http.limiters[rig.stub.url.split("//")[1]].budget == 30


async def test_coingecko_prices_are_exact_decimals_never_floats(rig: Rig) -> None:
    source = rig.build(
        "coingecko",
        {
            "base_url": rig.stub.url + "/api/v3",
            "vs_currency": "eur",
            "ids": {"SHIB": "shiba-inu", "BTC": "bitcoin", "PEPE": "pepe"},
        },
    )
    rig.stub.add(
        CG_PATH,
        Canned(
            body='{"shiba-inu": {"eur": 0.000012345678901234, "last_updated_at": %d}, '
            '"bitcoin": {"eur": 61234.56789012345678901, "last_updated_at": %d}, '
            '"pepe": {"eur": 1.2345678901234567e-05, "last_updated_at": %d}}' % (NOW_S - 10, NOW_S - 20, NOW_S - 30)
        ),
    )
    fetched = await source.fetch()
    prices = {e.base: e for e in fetched.events if isinstance(e, Price)}
    assert prices["SHIB"].price == Decimal("0.000012345678901234")
    assert prices["BTC"].price == Decimal("61234.56789012345678901")  # 22 digits: no float holds that
    assert prices["PEPE"].price == Decimal("0.000012345678901234567")
    assert prices["SHIB"].quote == "EUR" and prices["SHIB"].ts == (NOW_S - 10) * 1000
    assert rig.stub.to(CG_PATH)[0].param("vs_currencies") == "eur"


async def test_coingecko_missing_or_partial_entries_are_problems_never_zero(rig: Rig) -> None:
    source = rig.build(
        "coingecko",
        {
            "base_url": rig.stub.url + "/api/v3",
            "ids": {
                "BTC": "bitcoin",
                "GONE": "delisted-coin",
                "NOPRICE": "no-price",
                "NOTIME": "no-time",
                "ZERO": "zero-coin",
                "NULL": "null-coin",
                "STR": "string-coin",
                "USDT": "tether",
                "USDT.E": "tether",
            },
        },
    )
    rig.stub.add(
        CG_PATH,
        Canned(
            body=(
                '{"bitcoin": {"usd": 67187.3358936566, "last_updated_at": %d}, "no-price": {"last_updated_at": %d}, '
                '"no-time": {"usd": 1.5}, "zero-coin": {"usd": 0.0, "last_updated_at": %d}, "null-coin": {"usd": null, '
                '"last_updated_at": %d}, "string-coin": "n/a", "tether": {"usd": 1.0002, "last_updated_at": %d}}'
                % ((NOW_S - 5,) * 5)
            )
        ),
    )
    fetched = await source.fetch()
    assert_honest(fetched)
    published = {e.base: e.price for e in fetched.events if isinstance(e, Price)}
    assert published == {"BTC": Decimal("67187.3358936566"), "USDT": Decimal("1.0002"), "USDT.E": Decimal("1.0002")}
    problems = "\n".join(fetched.problems)
    assert len(fetched.problems) == 6
    for asset, cg_id in [
        ("GONE", "delisted-coin"),
        ("NOPRICE", "no-price"),
        ("NOTIME", "no-time"),
        ("ZERO", "zero-coin"),
        ("NULL", "null-coin"),
        ("STR", "string-coin"),
    ]:
        assert f"{asset} (id '{cg_id}')" in problems
    assert "not in CoinGecko's answer" in problems and "no last_updated_at" in problems
    assert rig.stub.to(CG_PATH)[0].param("ids").count("tether") == 1, "an id shared by two assets is asked once"


async def test_coingecko_a_failed_batch_fails_the_round_and_stops_asking(rig: Rig) -> None:
    assets = many_ids(250)
    source = rig.build("coingecko", {"base_url": rig.stub.url + "/api/v3", "ids": assets})
    first = list(assets.values())[:100]
    rig.stub.add(
        CG_PATH,
        coingecko_body({i: "2.5" for i in first}),
        Canned(500, json={"status": {"error_code": 500, "error_message": "Internal Server Error"}}),
    )
    with pytest.raises(SourceError, match="HTTP 500 on coingecko /simple/price \\(100 ids\\)"):
        await source.fetch()
    assert len(rig.stub.to(CG_PATH)) == 2, "the third batch is not asked after the second failed"


async def test_coingecko_a_clock_ahead_is_reported_and_not_trusted(rig: Rig) -> None:
    source = rig.build(
        "coingecko", {"base_url": rig.stub.url + "/api/v3", "ids": {"BTC": "bitcoin", "ETH": "ethereum"}}
    )
    rig.stub.add(
        CG_PATH,
        Canned(
            body='{"bitcoin": {"usd": 67187.33, "last_updated_at": %d}, '
            '"ethereum": {"usd": 3422.11, "last_updated_at": %d}}' % (NOW_S + 90, NOW_S + 4)
        ),
    )
    fetched = await source.fetch()
    ts = {e.base: e.ts for e in fetched.events if isinstance(e, Price)}
    assert ts == {"BTC": START_MS, "ETH": (NOW_S + 4) * 1000}, "90 s ahead: arrival time; 4 s: within tolerance"
    assert len(fetched.problems) == 1 and "BTC (id 'bitcoin')" in fetched.problems[0]
    assert "clock reads more than 5s ahead of ours" in fetched.problems[0]
    rig.stub.add(
        CG_PATH,
        Canned(
            body='{"bitcoin": {"usd": 67187.35, "last_updated_at": %d}, '
            '"ethereum": {"usd": 3422.12, "last_updated_at": %d}}' % (NOW_S + 95, NOW_S)
        ),
    )
    assert (await source.fetch()).problems == fetched.problems, "the same text each round: alerted once a period"


async def test_coingecko_cache_ttl_republishes_with_the_original_ts(rig: Rig) -> None:
    source = rig.build(
        "coingecko",
        {"base_url": rig.stub.url + "/api/v3", "cache_ttl_s": 60, "ids": {"BTC": "bitcoin", "ETH": "ethereum"}},
    )
    rig.stub.add(
        CG_PATH,
        coingecko_body({"bitcoin": "67187.33", "ethereum": "3422.11"}, NOW_S - 40),
        coingecko_body({"bitcoin": "67190.01", "ethereum": "3423.50"}, NOW_S + 20),
    )
    first = await source.fetch()
    rig.mono.advance(59)
    rig.clock.advance(59_000)
    again = await source.fetch()
    assert len(rig.stub.to(CG_PATH)) == 1, "fresh in the cache: not asked again"
    assert sorted(again.events, key=lambda e: e.ts) == sorted(first.events, key=lambda e: e.ts)
    rig.mono.advance(2)
    later = await source.fetch()
    assert len(rig.stub.to(CG_PATH)) == 2
    assert {e.price for e in later.events if isinstance(e, Price)} == {Decimal("67190.01"), Decimal("3423.50")}


async def test_coingecko_keys_go_in_their_plans_header(rig: Rig) -> None:
    demo = rig.build(
        "coingecko",
        {"base_url": rig.stub.url + "/api/v3", "api_key_env": "CG_KEY", "ids": {"BTC": "bitcoin"}},
        name="cg-demo",
    )  # a key and no plan: demo
    pro = rig.build(
        "coingecko",
        {
            "base_url": rig.stub.url + "/api/v3",
            "plan": "pro",
            "api_key_env": "CG_KEY",
            "calls_per_minute": 500,
            "ids": {"BTC": "bitcoin"},
        },
        name="cg-pro",
    )
    rig.stub.always(CG_PATH, coingecko_body({"bitcoin": "67187.33"}))
    await demo.fetch()
    await pro.fetch()
    first, second = rig.stub.to(CG_PATH)
    assert first.headers["x-cg-demo-api-key"] == ENV["CG_KEY"] and "x-cg-pro-api-key" not in first.headers
    assert second.headers["x-cg-pro-api-key"] == ENV["CG_KEY"] and "x-cg-demo-api-key" not in second.headers
    assert ENV["CG_KEY"] not in first.raw_query + second.raw_query, "the key travels in a header, not the URL"


async def test_coingecko_a_rejected_key_says_so(rig: Rig) -> None:
    source = rig.build(
        "coingecko",
        {"base_url": rig.stub.url + "/api/v3", "plan": "demo", "api_key_env": "CG_KEY", "ids": {"BTC": "bitcoin"}},
    )
    rig.stub.add(CG_PATH, Canned(401, json={"status": {"error_code": 10002, "error_message": "API Key Missing"}}))
    with pytest.raises(SourceError, match="HTTP 401.*API Key Missing.*API key rejected") as caught:
        await source.fetch()
    assert ENV["CG_KEY"] not in str(caught.value)


@pytest.mark.parametrize(
    "table, message",
    [
        ({"ids": {}}, "`ids` must map at least one asset"),
        ({"ids": {"BTC": "bit coin"}}, "not a CoinGecko id"),
        ({"ids": {"BTC": "bitcoin,ethereum"}}, "not a CoinGecko id"),
        ({"ids": {"BTC": "bitcoin"}, "plan": "public", "api_key_env": "CG_KEY"}, 'plan = "demo" or "pro"'),
        ({"ids": {"BTC": "bitcoin"}, "plan": "pro"}, "needs `api_key_env`"),
        (
            {
                "ids": {"BTC": "bitcoin"},
                "plan": "pro",
                "api_key_env": "CG_KEY",
                "base_url": "https://api.coingecko.com/api/v3",
            },
            "only accepted on pro-api",
        ),
        (
            {"ids": {"BTC": "bitcoin"}, "api_key_env": "CG_KEY", "base_url": "https://pro-api.coingecko.com/api/v3"},
            'needs plan = "pro" \\(plan is "demo"\\)',
        ),
        ({"ids": {"BTC": "bitcoin"}, "vs_currency": "us dollar"}, "`vs_currency`"),
        ({"ids": {"BTC": "bitcoin"}, "batch_size": 0}, "batch_size"),
    ],
)
def test_coingecko_settings_are_validated(table: dict[str, Any], message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(table, KINDS["coingecko"].settings)


def test_coingecko_pro_defaults_to_the_pro_host() -> None:
    settings = msgspec.convert(
        {"plan": "pro", "api_key_env": "K", "ids": {"BTC": "bitcoin"}}, KINDS["coingecko"].settings
    )
    assert settings.root == "https://pro-api.coingecko.com/api/v3"  # type: ignore[attr-defined]
    public = msgspec.convert({"ids": {"BTC": "bitcoin"}}, KINDS["coingecko"].settings)
    assert public.root == "https://api.coingecko.com/api/v3"  # type: ignore[attr-defined]


async def test_coingecko_a_missing_key_fails_at_startup_naming_the_variable(rig: Rig) -> None:
    rig.ctx.env = {"OTHER": "secret-value-1"}
    with pytest.raises(SourceConfigError, match="CG_PRO_KEY is not set") as caught:
        rig.build("coingecko", {"plan": "pro", "api_key_env": "CG_PRO_KEY", "ids": {"BTC": "bitcoin"}})
    assert "secret-value-1" not in str(caught.value)


# --- Binance spot ---------------------------------------------------------------------------------


async def test_binance_spot_asks_every_pair_in_one_request_of_weight_4(rig: Rig) -> None:
    pairs = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "ETH/BTC", "BNB/FDUSD"]
    source = rig.build("binance-spot", {"base_url": rig.stub.url, "pairs": pairs}, name="binance-prices")
    rig.stub.add(
        SPOT_PATH,
        spot_body(
            {
                "BTCUSDT": "67187.33000000",
                "ETHUSDT": "3422.12000000",
                "SOLUSDT": "171.41000000",
                "ETHBTC": "0.05093000",
                "BNBFDUSD": "598.10000000",
            }
        ),
    )
    rig.clock.advance(250)
    fetched = await source.fetch()
    (request,) = rig.stub.to(SPOT_PATH)
    assert request.param("symbols") == '["BTCUSDT","ETHUSDT","SOLUSDT","ETHBTC","BNBFDUSD"]'
    assert request.raw_query.startswith("symbols=%5B%22BTCUSDT%22%2C%22ETHUSDT%22"), "compact and URL-encoded"
    assert rig.http.limiters[rig.stub.url.split("//")[1]].spent() == 4
    assert rig.http.limiters[rig.stub.url.split("//")[1]].budget == 6000
    assert [(e.base, e.quote, e.price) for e in fetched.events if isinstance(e, Price)] == [
        ("BTC", "USDT", Decimal("67187.33000000")),
        ("ETH", "USDT", Decimal("3422.12000000")),
        ("SOL", "USDT", Decimal("171.41000000")),
        ("ETH", "BTC", Decimal("0.05093000")),
        ("BNB", "FDUSD", Decimal("598.10000000")),
    ]
    assert {(e.ts, e.source) for e in fetched.events if isinstance(e, Price)} == {(START_MS + 250, "binance-prices")}
    assert (source.venue, source.account, source.name) == ("binance", None, "binance-prices")


async def test_binance_spot_prices_stay_exact(rig: Rig) -> None:
    source = rig.build("binance-spot", {"base_url": rig.stub.url, "pairs": ["PEPE/USDT"]})
    rig.stub.add(SPOT_PATH, spot_body({"PEPEUSDT": "0.00001234567890123456"}))
    (event,) = (await source.fetch()).events
    assert isinstance(event, Price) and event.price == Decimal("0.00001234567890123456")


async def test_binance_spot_missing_and_zero_prices_are_problems(rig: Rig) -> None:
    source = rig.build(
        "binance-spot", {"base_url": rig.stub.url, "pairs": ["BTC/USDT", "ETH/USDT", "LUNA/USDT", "XYZ/USDT"]}
    )
    rig.stub.add(
        SPOT_PATH,
        Canned(
            json=[
                {"symbol": "BTCUSDT", "price": "67187.33000000"},
                {"symbol": "LUNAUSDT", "price": "0.00000000"},
                {"symbol": "XYZUSDT", "price": None},
            ]
        ),
    )
    fetched = await source.fetch()
    assert_honest(fetched)
    assert [e.base for e in fetched.events if isinstance(e, Price)] == ["BTC"]
    assert fetched.problems == [
        "ETH/USDT (ETHUSDT): not in Binance's answer",
        "LUNA/USDT (LUNAUSDT): no usable price in Binance's answer (got '0.00000000')",
        "XYZ/USDT (XYZUSDT): no usable price in Binance's answer (got None)",
    ]


async def test_binance_spot_an_unknown_symbol_fails_quoting_binance(rig: Rig) -> None:
    source = rig.build("binance-spot", {"base_url": rig.stub.url, "pairs": ["BTC/USDT", "NOPE/USDT"]})
    rig.stub.add(SPOT_PATH, Canned(400, json={"code": -1121, "msg": "Invalid symbol."}))
    with pytest.raises(SourceError, match="HTTP 400 .*Binance error -1121: Invalid symbol\\."):
        await source.fetch()


async def test_binance_spot_weight_used_by_others_on_the_ip_counts(rig: Rig) -> None:
    source = rig.build("binance-spot", {"base_url": rig.stub.url, "pairs": ["BTC/USDT"], "timeout_s": 1})
    answer = spot_body({"BTCUSDT": "67187.33000000"})
    answer.headers["X-MBX-USED-WEIGHT-1M"] = "5999"  # another process on this IP spent the minute
    rig.stub.add(SPOT_PATH, answer)
    await source.fetch()
    with pytest.raises(RateLimited, match="weight budget 6000/60s spent"):
        await source.fetch()
    assert len(rig.stub.to(SPOT_PATH)) == 1


@pytest.mark.parametrize(
    "pairs, message",
    [
        ([], "at least one pair"),
        (["btc/usdt"], "not BASE/QUOTE in upper case"),
        (["BTCUSDT"], "not BASE/QUOTE"),
        (["BTC/USDT", "BTC/USDT"], "listed twice"),
        (["AB/CD", "A/BCD"], "both Binance symbol ABCD"),
    ],
)
def test_binance_spot_pairs_are_validated(pairs: list[str], message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert({"pairs": pairs}, KINDS["binance-spot"].settings)


# --- Binance USD-M futures account ----------------------------------------------------------------


def account_table(url: str, **more: Any) -> dict[str, Any]:
    return {"base_url": url, "account": "futures-main", "api_key_env": "BN_KEY", "api_secret_env": "BN_SECRET", **more}


async def test_binance_account_request_is_signed_over_its_query(rig: Rig) -> None:
    source = rig.build("binance-usdm-account", account_table(rig.stub.url, recv_window_ms=7000))
    rig.stub.add(ACCOUNT_PATH, Canned(json=account_v3()))
    await source.fetch()
    (request,) = rig.stub.to(ACCOUNT_PATH)
    signed, _, signature = request.raw_query.rpartition("&signature=")
    assert signed == f"timestamp={START_MS}&recvWindow=7000"
    assert signature == hmac.new(SECRET.encode(), signed.encode(), hashlib.sha256).hexdigest()
    assert request.headers["x-mbx-apikey"] == KEY
    assert SECRET not in request.raw_query and SECRET not in json.dumps(request.headers)
    assert rig.http.limiters[rig.stub.url.split("//")[1]].budget == 2400
    assert rig.http.limiters[rig.stub.url.split("//")[1]].spent() == 5


async def test_binance_account_publishes_every_asset_and_position_exactly(rig: Rig) -> None:
    source = rig.build("binance-usdm-account", account_table(rig.stub.url), name="bn-futures")
    rig.stub.add(ACCOUNT_PATH, Canned(json=account_v3()))
    rig.clock.advance(120)
    fetched = await source.fetch()
    assert not fetched.problems
    balances = [(e.asset, e.balance, e.unrealized_pnl) for e in fetched.events if isinstance(e, Balance)]
    assert balances == [
        ("USDT", Decimal("23.72469206"), Decimal("-1.25000000")),
        ("USDC", Decimal("103.12345678"), Decimal("0E-8")),
        ("BTC", Decimal("0E-8"), Decimal("0E-8")),
    ], "zeros included; never the total* fields"
    assert str(balances[2][1]) == "0E-8" and Decimal("103.12345678") not in {b[1] for b in balances[:1]}
    positions = {e.symbol: e for e in fetched.events if isinstance(e, Position)}
    assert set(positions) == {"BTCUSDT", "SOLUSDT"}
    btc = positions["BTCUSDT"]
    assert (btc.qty, btc.unrealized_pnl, btc.entry_price, btc.mark_price) == (
        Decimal("0.250"),
        Decimal("-1.25000000"),
        Decimal(0),
        None,
    ), "v3 sends no entry or mark price: none made up"
    assert positions["SOLUSDT"].qty == 0
    assert {(e.venue, e.account, e.ts) for e in fetched.events if not isinstance(e, Price)} == {
        ("binance", "futures-main", START_MS + 120)
    }, "per-entry updateTime is when it last changed, not when it was seen: ts is the arrival"
    assert (source.venue, source.account) == ("binance", "futures-main")


async def test_binance_account_hedge_mode_legs_are_netted(rig: Rig) -> None:
    source = rig.build("binance-usdm-account", account_table(rig.stub.url))
    legs = [
        {
            "symbol": "ETHUSDT",
            "positionSide": "LONG",
            "positionAmt": "2.000",
            "unrealizedProfit": "12.50000000",
            "isolatedMargin": "0",
            "notional": "6844.24",
            "isolatedWallet": "0",
            "initialMargin": "342.2",
            "maintMargin": "27.3",
            "updateTime": START_MS - 1000,
        },
        {
            "symbol": "ETHUSDT",
            "positionSide": "SHORT",
            "positionAmt": "-0.500",
            "unrealizedProfit": "-3.10000000",
            "isolatedMargin": "0",
            "notional": "-1711.06",
            "isolatedWallet": "0",
            "initialMargin": "85.5",
            "maintMargin": "6.8",
            "updateTime": START_MS - 1000,
        },
    ]
    rig.stub.add(ACCOUNT_PATH, Canned(json=account_v3(positions=legs)))
    (eth,) = [e for e in (await source.fetch()).events if isinstance(e, Position)]
    assert (eth.symbol, eth.qty, eth.unrealized_pnl) == ("ETHUSDT", Decimal("1.500"), Decimal("9.40000000"))


async def test_binance_account_a_closed_position_is_published_as_zero(rig: Rig) -> None:
    source = rig.build("binance-usdm-account", account_table(rig.stub.url))
    rig.stub.add(
        ACCOUNT_PATH,
        Canned(json=account_v3()),
        Canned(json=account_v3(positions=[])),
        Canned(json=account_v3(positions=[])),
    )
    await source.fetch()
    for _ in range(2):  # every round, so a superseded or lost write is repaired by the next
        rig.clock.advance(30_000)
        positions = {e.symbol: e.qty for e in (await source.fetch()).events if isinstance(e, Position)}
        assert positions == {"BTCUSDT": 0, "SOLUSDT": 0}


async def test_binance_account_an_asset_gone_from_the_answer_is_a_problem_not_zero(rig: Rig) -> None:
    source = rig.build("binance-usdm-account", account_table(rig.stub.url))
    second = account_v3()
    second["assets"] = second["assets"][:1]
    rig.stub.add(ACCOUNT_PATH, Canned(json=account_v3()), Canned(json=second))
    await source.fetch()
    fetched = await source.fetch()
    assert [e.asset for e in fetched.events if isinstance(e, Balance)] == ["USDT"]
    assert fetched.problems == [
        "USDC: in an earlier answer but not in this one; its balance is not published",
        "BTC: in an earlier answer but not in this one; its balance is not published",
    ]


async def test_binance_account_unreadable_amounts_are_problems(rig: Rig) -> None:
    source = rig.build("binance-usdm-account", account_table(rig.stub.url))
    body = account_v3()
    body["assets"][0]["walletBalance"] = None
    body["positions"][0]["positionAmt"] = 0.25  # a JSON number is exact here too (no float path)
    body["positions"][1]["unrealizedProfit"] = "n/a"
    rig.stub.add(ACCOUNT_PATH, Canned(json=body))
    fetched = await source.fetch()
    assert [e.asset for e in fetched.events if isinstance(e, Balance)] == ["USDC", "BTC"]
    assert [(e.symbol, e.qty) for e in fetched.events if isinstance(e, Position)] == [("BTCUSDT", Decimal("0.25"))]
    assert len(fetched.problems) == 2 and fetched.problems[0].startswith("USDT: walletBalance None")
    assert fetched.problems[1].startswith("SOLUSDT: positionAmt '0'")


async def test_binance_account_a_venue_clock_ahead_is_reported(rig: Rig) -> None:
    source = rig.build("binance-usdm-account", account_table(rig.stub.url))
    ahead = account_v3(updated_ms=START_MS + 45_000)
    ahead["updateTime"] = START_MS + 45_000  # a top-level time, as a proxy or a later API might send
    rig.stub.add(ACCOUNT_PATH, Canned(json=ahead), Canned(json=account_v3(updated_ms=START_MS + 3_000)))
    fetched = await source.fetch()
    assert {e.ts for e in fetched.events} == {START_MS}, "a future ts would be dead-lettered: arrival time instead"
    assert fetched.problems == [
        "Binance's clock reads more than 5s ahead of ours (check this host's clock, e.g. "
        "NTP); stamped with the arrival time instead"
    ]
    assert not (await source.fetch()).problems, "3 s is within tolerance"


async def test_binance_account_uses_a_top_level_update_time_when_sent(rig: Rig) -> None:
    source = rig.build("binance-usdm-account", account_table(rig.stub.url))
    body = account_v3()
    body["updateTime"] = START_MS - 700
    rig.stub.add(ACCOUNT_PATH, Canned(json=body))
    assert {e.ts for e in (await source.fetch()).events} == {START_MS - 700}


@pytest.mark.parametrize(
    "status, body",
    [
        (401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action, request ip: 203.0.113.7"}),
        (400, {"code": -1022, "msg": "Signature for this request is not valid."}),
        (400, {"code": -2014, "msg": "API-key format invalid."}),
        (403, "<html><head><title>403 Forbidden</title></head></html>"),
    ],
)
async def test_binance_account_rejected_credentials_say_so_without_secrets(status: int, body: Any, rig: Rig) -> None:
    source = rig.build("binance-usdm-account", account_table(rig.stub.url))
    rig.stub.add(ACCOUNT_PATH, Canned(status, json=body) if isinstance(body, dict) else Canned(status, body=body))
    with pytest.raises(SourceError, match="credentials rejected") as caught:
        await source.fetch()
    message = str(caught.value)
    assert "BN_KEY" in message and "BN_SECRET" in message, "names where the credentials come from"
    assert KEY not in message and SECRET not in message and "signature=" not in message


async def test_binance_account_timestamp_outside_recv_window_suggests_clock_sync(rig: Rig) -> None:
    source = rig.build("binance-usdm-account", account_table(rig.stub.url))
    rig.stub.add(
        ACCOUNT_PATH,
        Canned(400, json={"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}),
    )
    with pytest.raises(SourceError, match="-1021.*sync it \\(NTP"):
        await source.fetch()


async def test_binance_account_other_errors_quote_binance(rig: Rig) -> None:
    source = rig.build("binance-usdm-account", account_table(rig.stub.url))
    rig.stub.add(
        ACCOUNT_PATH,
        Canned(503, json={"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}),
    )
    with pytest.raises(SourceError, match="HTTP 503, Binance error -1001: Internal error"):
        await source.fetch()


@pytest.mark.parametrize(
    "env, missing",
    [
        ({"BN_SECRET": SECRET}, "BN_KEY"),
        ({"BN_KEY": KEY}, "BN_SECRET"),
        ({"BN_KEY": KEY, "BN_SECRET": ""}, "BN_SECRET"),
    ],
)
async def test_binance_account_missing_credentials_fail_at_startup(env: dict[str, str], missing: str, rig: Rig) -> None:
    rig.ctx.env = env
    with pytest.raises(SourceConfigError, match=f"environment variable {missing} is not set") as caught:
        rig.build("binance-usdm-account", account_table(rig.stub.url), name="bn")
    assert "[sources.bn]" in str(caught.value)
    assert KEY not in str(caught.value) and SECRET not in str(caught.value)
    assert not rig.stub.requests


@pytest.mark.parametrize(
    "table, message",
    [
        ({"api_key_env": "K", "api_secret_env": "S"}, "`account` must name"),
        ({"account": "a", "api_secret_env": "S"}, "`api_key_env` must name"),
        ({"account": "a", "api_key_env": "K"}, "`api_secret_env` must name"),
        ({"account": "a", "api_key_env": "K", "api_secret_env": "S", "recv_window_ms": 60_001}, "recv_window_ms"),
        ({"account": "a", "api_key_env": "K", "api_secret_env": "S", "weight_per_minute": 4}, "weight_per_minute"),
    ],
)
def test_binance_account_settings_are_validated(table: dict[str, Any], message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(table, KINDS["binance-usdm-account"].settings)


# --- end to end: ingest -> P:events ---------------------------------------------------------------


@dataclass
class Venues:
    """One server per venue host, as in production (api.coingecko.com, api.binance.com and
    fapi.binance.com each have their own budget: a 429 from one blocks only that one)."""

    coingecko: HttpStub
    spot: HttpStub
    futures: HttpStub


@pytest.fixture
def venues() -> Iterator[Venues]:
    with HttpStub() as coingecko, HttpStub() as spot, HttpStub() as futures:
        yield Venues(coingecko, spot, futures)


def live_answers(venues: Venues) -> None:
    """Answers stamped with the real clock (the ingest process runs on it)."""
    now_s = int(time.time())
    venues.coingecko.add(CG_PATH, coingecko_body({"bitcoin": "67187.3358936566", "euro-coin": "1.0812"}, now_s - 30))
    venues.spot.add(SPOT_PATH, spot_body({"BTCUSDT": "67187.33000000"}))
    venues.futures.add(ACCOUNT_PATH, Canned(json=account_v3(updated_ms=now_s * 1000 - 60_000)))


def ingest_for(backend: Backend, venues: Venues) -> Ingest:
    settings = load_settings(env={}, overrides={"redis": {"prefix": backend.prefix}})
    sources = {
        "coingecko": {
            "base_url": venues.coingecko.url + "/api/v3",
            "ids": {"BTC": "bitcoin", "EUR": "euro-coin", "GONE": "no-such-coin"},
        },
        "binance-prices": {"kind": "binance-spot", "base_url": venues.spot.url, "pairs": ["BTC/USDT"]},
        "bn-futures": {"kind": "binance-usdm-account", **account_table(venues.futures.url)},
    }
    settings = msgspec.structs.replace(settings, extra={"sources": sources})
    return Ingest(settings, KINDS, backend.connect(decode_responses=True), http=HttpPool(timeout_s=5.0), env=ENV)


async def read_events(backend: Backend) -> list[Any]:
    client = backend.connect(decode_responses=True)
    try:
        return [decode_event(fields) for _, fields in await client.xrange(f"{backend.prefix}:events")]
    finally:
        await client.aclose()


async def test_ingest_run_once_writes_events_and_statuses(backend: Backend, venues: Venues) -> None:
    live_answers(venues)
    ingest = ingest_for(backend, venues)
    try:
        assert await ingest.run_once() == {"coingecko": True, "binance-prices": True, "bn-futures": True}
        events = await read_events(backend)
        client = backend.connect(decode_responses=True)
        alerts = [f for _, f in await client.xrange(f"{backend.prefix}:alerts")]
        await client.aclose()
    finally:
        await ingest.aclose()
        await ingest.redis.aclose()  # the caller's client: Ingest does not close it
    prices = {(e.source, e.base, e.quote): e.price for e in events if isinstance(e, Price)}
    assert prices == {
        ("coingecko", "BTC", "USD"): Decimal("67187.3358936566"),
        ("coingecko", "EUR", "USD"): Decimal("1.0812"),
        ("binance-prices", "BTC", "USDT"): Decimal("67187.33000000"),
    }
    assert {(e.asset, e.balance) for e in events if isinstance(e, Balance)} == {
        ("USDT", Decimal("23.72469206")),
        ("USDC", Decimal("103.12345678")),
        ("BTC", Decimal("0E-8")),
    }
    assert {(e.symbol, e.qty) for e in events if isinstance(e, Position)} == {
        ("BTCUSDT", Decimal("0.250")),
        ("SOLUSDT", Decimal("0")),
    }
    statuses = {e.source: e for e in events if isinstance(e, SourceStatus)}
    assert {s: (e.venue, e.ok, e.account) for s, e in statuses.items()} == {
        "coingecko": ("coingecko", True, None),
        "binance-prices": ("binance", True, None),
        "bn-futures": ("binance", True, "futures-main"),
    }
    assert "GONE (id 'no-such-coin')" in (statuses["coingecko"].error or "")
    assert [a["code"] for a in alerts] == ["source_incomplete"] and "GONE" in alerts[0]["message"]
    for source in ("coingecko", "binance-prices", "bn-futures"):  # each status comes after its values
        kinds = [
            type(e)
            for e in events
            if getattr(e, "source", None) == source or (source == "bn-futures" and isinstance(e, (Balance, Position)))
        ]
        assert kinds[-1] is SourceStatus


async def test_ingest_failures_are_statuses_and_publish_nothing(backend: Backend, venues: Venues) -> None:
    venues.coingecko.add(CG_PATH, Canned(429, json=COINGECKO_429, headers={"Retry-After": "60"}))
    venues.spot.always(SPOT_PATH, Canned(200, body='[{"symbol": "BTCUSDT", "price": "6718'))
    venues.futures.always(
        ACCOUNT_PATH,
        Canned(
            401, json={"code": -2015, "msg": "Invalid API-key, IP, or permissions for action, request ip: 203.0.113.7"}
        ),
    )
    ingest = ingest_for(backend, venues)
    try:
        assert await ingest.run_once() == {"coingecko": False, "binance-prices": False, "bn-futures": False}
        assert await ingest.run_once() == {"coingecko": False, "binance-prices": False, "bn-futures": False}
        events = await read_events(backend)
    finally:
        await ingest.aclose()
        await ingest.redis.aclose()  # the caller's client: Ingest does not close it
    assert all(isinstance(e, SourceStatus) and not e.ok for e in events), "no value of a failed fetch is written"
    errors = {e.source: e.error or "" for e in events[-3:]}
    assert "rate limited" in errors["coingecko"]
    assert "malformed JSON" in errors["binance-prices"]
    assert "credentials rejected" in errors["bn-futures"] and SECRET not in errors["bn-futures"]
    assert len(venues.coingecko.to(CG_PATH)) == 1, "the second round did not ask a host that said 429"
    assert len(venues.spot.to(SPOT_PATH)) == 2, "other hosts are not blocked by it"


async def test_ingest_refuses_to_start_without_credentials(backend: Backend, stub: HttpStub) -> None:
    from navstream.ingest.runner import IngestError

    settings = load_settings(env={}, overrides={"redis": {"prefix": backend.prefix}})
    settings = msgspec.structs.replace(
        settings,
        extra={
            "sources": {
                "bn": {"kind": "binance-usdm-account", **account_table(stub.url, api_secret_env="NOT_SET_ANYWHERE")}
            }
        },
    )
    redis = backend.connect(decode_responses=True)
    try:
        with pytest.raises(IngestError, match="NOT_SET_ANYWHERE is not set"):
            Ingest(settings, KINDS, redis, http=HttpPool(), env=ENV)
    finally:
        await redis.aclose()
    assert not stub.requests


async def test_sources_in_one_round_share_the_host_budget(rig: Rig) -> None:
    """Two instances on one host: the lowest declared budget stands, and concurrent fetches queue."""
    a = rig.build(
        "binance-spot", {"base_url": rig.stub.url, "pairs": ["BTC/USDT"], "weight_per_minute": 1200}, name="a"
    )
    b = rig.build("binance-spot", {"base_url": rig.stub.url, "pairs": ["ETH/USDT"]}, name="b")
    rig.stub.always(SPOT_PATH, spot_body({"BTCUSDT": "67187.33", "ETHUSDT": "3422.12"}))
    results = await asyncio.gather(a.fetch(), b.fetch())
    assert all(r.events for r in results)
    limiter = rig.http.limiters[rig.stub.url.split("//")[1]]
    assert limiter.budget == 1200 and limiter.spent() == 8


# --- the number grammar: what a venue sends must be an amount the wire accepts ----------------------
#
# Decimal() reads " 1", "+5", "1_000", fullwidth "１２" and Arabic-Indic "١٢" (as 12) and "5e999994" (an
# overflow waiting for its first product): a source applies navstream.contract.numbers to every amount, and one
# it refuses is a problem (an alert), never a value.

REFUSED_TEXTS = [
    " 1",
    "1 ",
    "+5",
    "1_000",
    "１２",
    "١٢",
    "5e999994",
    "1e-999999",
    "NaN",
    "Infinity",
    "",
    ".5",
    "1" * 31,
    "0." + "1" * 31,
]


async def test_binance_spot_refuses_prices_outside_the_grammar(rig: Rig) -> None:
    pairs = [f"A{i}/USDT" for i in range(len(REFUSED_TEXTS))]
    source = rig.build("binance-spot", {"base_url": rig.stub.url, "pairs": ["BTC/USDT", "PEPE/USDT", *pairs]})
    rig.stub.add(
        SPOT_PATH,
        spot_body(
            {
                "BTCUSDT": "67187.33000000",
                "PEPEUSDT": "1.234E-5",
                **{f"A{i}USDT": text for i, text in enumerate(REFUSED_TEXTS)},
            }
        ),
    )
    fetched = await source.fetch()
    assert {e.base: e.price for e in fetched.events if isinstance(e, Price)} == {
        "BTC": Decimal("67187.33000000"),
        "PEPE": Decimal("0.00001234"),
    }  # an exponent form in bounds is a number
    assert len(fetched.problems) == len(REFUSED_TEXTS)
    for i, problem in enumerate(fetched.problems):
        assert problem.startswith(f"A{i}/USDT (A{i}USDT): no usable price in Binance's answer (got ")
        assert "which is" in problem and "\n" not in problem and len(problem) < 400, problem


async def test_coingecko_refuses_numbers_out_of_bounds(rig: Rig) -> None:
    source = rig.build(
        "coingecko",
        {
            "base_url": rig.stub.url + "/api/v3",
            "ids": {"BTC": "bitcoin", "TINY": "tiny", "HUGE": "huge", "LONG": "long", "WIDE": "wide"},
        },
    )
    rig.stub.add(
        CG_PATH,
        Canned(
            body=(
                '{"bitcoin": {"usd": 67187.3358936566, "last_updated_at": %d}, '
                '"tiny": {"usd": 1e-40, "last_updated_at": %d}, '
                '"huge": {"usd": 5e999994, "last_updated_at": %d}, "long": {"usd": 1.%s, "last_updated_at": %d}, '
                '"wide": {"usd": "\\uff11\\uff12", "last_updated_at": %d}}'
                % (NOW_S, NOW_S, NOW_S, "1" * 40, NOW_S, NOW_S)
            )
        ),
    )
    fetched = await source.fetch()
    assert [(e.base, e.price) for e in fetched.events if isinstance(e, Price)] == [("BTC", Decimal("67187.3358936566"))]
    problems = {p.split(" ")[0]: p for p in fetched.problems}
    assert set(problems) == {"TINY", "HUGE", "LONG", "WIDE"}
    assert "out of bounds" in problems["TINY"] and "out of bounds" in problems["HUGE"]
    assert "40 digits after the point" in problems["LONG"] and "non-ASCII" in problems["WIDE"]


async def test_binance_account_refuses_amounts_outside_the_grammar(rig: Rig) -> None:
    source = rig.build("binance-usdm-account", account_table(rig.stub.url))
    body = account_v3()
    body["assets"][0]["walletBalance"] = "１２"  # USDT: Decimal() would read 12
    body["assets"][1]["unrealizedProfit"] = "5e999994"  # USDC
    body["positions"][0]["positionAmt"] = " 0.250"  # BTCUSDT
    rig.stub.add(ACCOUNT_PATH, Canned(json=body))
    fetched = await source.fetch()
    assert [e.asset for e in fetched.events if isinstance(e, Balance)] == ["BTC"]
    assert [e.symbol for e in fetched.events if isinstance(e, Position)] == ["SOLUSDT"]
    assert [p.split(":")[0] for p in fetched.problems] == ["USDT", "USDC", "BTCUSDT"]
    assert "'１２', which is not a decimal number: non-ASCII" in fetched.problems[0]
    assert "'5e999994', which is out of bounds" in fetched.problems[1]
    assert "' 0.250', which is not a decimal number: whitespace" in fetched.problems[2]


async def test_binance_account_hedge_legs_net_exactly_and_within_the_bounds(rig: Rig) -> None:
    """Netting adds amounts: never rounded (the default context keeps 28 digits), and a net past the
    bounds is a problem, not a value."""
    source = rig.build("binance-usdm-account", account_table(rig.stub.url))

    def leg(symbol: str, side: str, amt: str, pnl: str, **more: str) -> dict[str, Any]:
        return {
            "symbol": symbol,
            "positionSide": side,
            "positionAmt": amt,
            "unrealizedProfit": pnl,
            "updateTime": START_MS - 1000,
            **more,
        }

    long_digits = "1234567890.12345678901234567890"  # 30 significant digits
    rig.stub.add(
        ACCOUNT_PATH,
        Canned(
            json=account_v3(
                positions=[
                    leg("ETHUSDT", "LONG", long_digits, "0"),
                    leg("ETHUSDT", "SHORT", "-0.00000000000000000001", "0"),
                    leg("XUSDT", "LONG", "9" * 30 + ".5", "0"),
                    leg("XUSDT", "SHORT", "9" * 30 + ".5", "0"),
                    leg("SOLUSDT", "BOTH", "1", "0", entryPrice="١٢", markPrice="1e-40"),
                ]
            )
        ),
    )
    fetched = await source.fetch()
    positions = {e.symbol: e for e in fetched.events if isinstance(e, Position)}
    assert str(positions["ETHUSDT"].qty) == "1234567890.12345678901234567889"  # 30 digits, none rounded off
    assert "XUSDT" not in positions
    assert (positions["SOLUSDT"].entry_price, positions["SOLUSDT"].mark_price) == (Decimal(0), None)
    problems = "\n".join(fetched.problems)
    assert "XUSDT: net positionAmt" in problems and "not below 10^30" in problems
    assert "SOLUSDT: entryPrice '١٢', which is not a decimal number" in problems
    assert "SOLUSDT: markPrice Decimal('1E-40')" not in problems and "SOLUSDT: markPrice '1e-40'" in problems


class Computing:
    """A third-party source whose own arithmetic makes a price with more digits than the wire takes."""

    account = None

    def __init__(self, name: str, settings: SourceSettings, ctx: SourceContext) -> None:
        self.name, self.venue, self.settings, self.ctx = name, "acme", settings, ctx

    async def fetch(self) -> Fetched:
        with decimal.localcontext(decimal.Context(prec=50)):
            third = Decimal(1) / Decimal(3)  # 50 digits after the point
        now = self.ctx.clock.now_ms()
        return Fetched(
            [
                Price(ts=now, base="ACME", quote="USD", price=third, source=self.name),
                Price(ts=now, base="BTC", quote="USD", price=Decimal("67187.33"), source=self.name),
            ]
        )

    async def aclose(self) -> None:
        pass


async def test_any_source_s_event_out_of_bounds_becomes_a_problem_not_an_entry(backend: Backend) -> None:
    kinds = {**KINDS, "computing": SourceKind("computing", SourceSettings, Computing)}
    settings = load_settings(env={}, overrides={"redis": {"prefix": backend.prefix}})
    settings = msgspec.structs.replace(settings, extra={"sources": {"acme": {"kind": "computing"}}})
    ingest = Ingest(settings, kinds, backend.connect(decode_responses=True), http=HttpPool(timeout_s=5.0), env=ENV)
    try:
        assert await ingest.run_once() == {"acme": True}
        events = await read_events(backend)  # every entry decodes: nothing a consumer would dead-letter
        client = backend.connect(decode_responses=True)
        alerts = [f for _, f in await client.xrange(f"{backend.prefix}:alerts")]
        await client.aclose()
    finally:
        await ingest.aclose()
        await ingest.redis.aclose()
    assert [(e.base, e.price) for e in events if isinstance(e, Price)] == [("BTC", Decimal("67187.33"))]
    (status,) = [e for e in events if isinstance(e, SourceStatus)]
    assert status.ok and "price ACME/USD: field `price`" in (status.error or "")
    assert [a["code"] for a in alerts] == ["source_incomplete"] and "50 digits after the point" in alerts[0]["message"]
