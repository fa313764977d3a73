"""Where an asset's name came from: a balance's ``venue_asset`` (Kraken's ``XXBT`` that its source
sent as ``BTC``) is kept with the holding and shown beside the desk's name, ``BTC (kraken:
XXBT)``, by ``navstream nav`` (text and ``--json``) and in the alert of a holding left out of the
NAV. Balances without it, and state stored before it existed, read as they always did."""

from __future__ import annotations

import argparse
import json
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from support import START_MS, run_step

from navstream import ManualClock
from navstream.loop.consumer import Consumer
from navstream.plugins.nav import explain
from navstream.plugins.nav.state import balances_key, read_detailed

T0 = START_MS - 1_000
KRAKEN = "account:kraken/main"


async def nav_app(make_app: Any) -> tuple[Any, Consumer]:
    extra = {"nav": {"max_age_s": 120, "pegs": {"USDT": "1"}, "routes": {"BTC": "BTC/USDT"}}}
    app = make_app(builtins=True, extra=extra, clock=ManualClock(START_MS), disabled=["risk"])
    consumer = Consumer(app)
    await consumer.setup()
    return app, consumer


def balance(asset: str, amount: str, ts: int = T0, **over: str) -> dict[str, str]:
    entry = {"type": "balance", "venue": "kraken", "account": "main", "asset": asset, "balance": amount}
    return {**entry, "ts": str(ts), **over}


def reports(ts: int = T0) -> list[dict[str, str]]:
    return [
        {"type": "source_status", "venue": "kraken", "source": "kraken-ccxt", "ok": "true", "ts": str(ts)},
        {"type": "source_status", "venue": "binance", "source": "binance-spot", "ok": "true", "ts": str(ts)},
        {"type": "price", "base": "BTC", "quote": "USDT", "price": "97000", "source": "binance-spot", "ts": str(ts)},
    ]


async def nav_out(app: Any, capsys: pytest.CaptureFixture[str], as_json: bool = False) -> str:
    capsys.readouterr()
    assert await explain.command(app, argparse.Namespace(venue="kraken", account="main", json=as_json)) == 0
    return capsys.readouterr().out


def holdings_json(out: str) -> dict[str, dict[str, Any]]:
    (scope,) = json.loads(out)
    return {h["asset"]: h for h in scope["breakdown"]["holdings"]}


def row(out: str, start: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith(start)]
    return line


async def test_navstream_nav_shows_the_venues_code_beside_the_desks(
    make_app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    app, consumer = await nav_app(make_app)
    await run_step(app, consumer, balance("BTC", "1.5", venue_asset="XXBT"), balance("USDT", "10"), *reports())
    out = await nav_out(app, capsys)
    btc = row(out, "BTC")
    assert btc.startswith("BTC (kraken: XXBT) ") and "1.5" in btc and "145,500.00" in btc
    assert row(out, "USDT ").split()[:2] == ["USDT", "10"], "a holding the venue calls the same: its name alone"
    assert "(kraken:" not in row(out, "USDT ")
    held = holdings_json(await nav_out(app, capsys, as_json=True))
    assert held["BTC"]["venue_asset"] == "XXBT" and held["BTC"]["asset"] == "BTC"
    assert "venue_asset" not in held["USDT"], "--json: absent when the venue's code is the desk's"


async def test_the_venues_code_is_stored_with_the_holding_and_goes_when_the_source_stops_sending_it(
    make_app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    app, consumer = await nav_app(make_app)
    await run_step(app, consumer, balance("BTC", "1.5", venue_asset="XXBT"), *reports())
    key = app.keys.state(*balances_key("kraken", "main"))
    stored = await app.redis.hget(key, "BTC")
    assert stored.endswith(',"XXBT"]') and '"1.5"' in stored
    assert (await read_detailed(app))[KRAKEN].holdings[0].venue_asset == "XXBT"
    # The next balance without it: the member is replaced whole (last ts wins), name and all.
    await run_step(app, consumer, balance("BTC", "1.5", ts=T0 + 1), *reports(T0 + 1))
    assert not (await app.redis.hget(key, "BTC")).endswith('"XXBT"]')
    assert row(await nav_out(app, capsys), "BTC").split()[:2] == ["BTC", "1.5"]
    assert "venue_asset" not in holdings_json(await nav_out(app, capsys, as_json=True))["BTC"]


@pytest.mark.parametrize("member", ['["1.5","0"]', f'["1.5","0",{T0}]'], ids=["before-received", "before-venue-asset"])
async def test_balances_stored_before_venue_asset_still_read(
    make_app: Any, capsys: pytest.CaptureFixture[str], member: str
) -> None:
    app, consumer = await nav_app(make_app)
    await run_step(app, consumer, balance("USDT", "1"), *reports(), tick=False)  # registers the account
    await app.redis.hset(app.keys.state(*balances_key("kraken", "main")), "BTC", f"{T0} {member}")
    await run_step(app, consumer, *reports())  # a tick reads every input again
    (held,) = [h for h in (await read_detailed(app))[KRAKEN].holdings if h.asset == "BTC"]
    assert (held.balance, held.venue_asset) == (Decimal("1.5"), "")
    assert row(await nav_out(app, capsys), "BTC").split()[:2] == ["BTC", "1.5"]


def test_an_earlier_navstream_reads_a_member_that_carries_the_venues_code() -> None:
    """Consumers of two releases may share a group during an upgrade: the trailing element is
    ignored by the payload an earlier release decodes with."""

    class EarlierPayload(msgspec.Struct, frozen=True, array_like=True):
        balance: Decimal
        unrealized_pnl: Decimal
        received: int | None = None

    old = msgspec.json.decode(b'["1.5","0",1790000000000,"XXBT"]', type=EarlierPayload)
    assert old == EarlierPayload(Decimal("1.5"), Decimal(0), 1790000000000)


async def test_a_holding_left_out_of_the_nav_is_alerted_under_both_names(make_app: Any) -> None:
    app, consumer = await nav_app(make_app)
    entries = [balance("DOGE", "100", venue_asset="XXDG"), balance("USDT", "10"), *reports()]
    alerts = await run_step(app, consumer, *entries)
    (missing,) = [a for a in alerts if a["code"] == "price_missing"]
    assert missing["message"].startswith("DOGE (kraken: XXDG) in kraken/main (100) is not in the NAV: ")
    assert missing["asset"] == "DOGE", "the alert's machine field stays the desk's code"


@pytest.mark.parametrize("columns", ["20", "1000"])
async def test_a_long_venue_code_is_shown_whole_at_any_width(
    make_app: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, columns: str
) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    code = "X" * 200 + "BT"
    app, consumer = await nav_app(make_app)
    await run_step(app, consumer, balance("BTC", "1.5", venue_asset=code), *reports())
    out = await nav_out(app, capsys)
    if columns == "1000":
        assert row(out, "BTC").startswith(f"BTC (kraken: {code}) ")
    else:  # each holding as a record, its name wrapped over lines, never cut
        assert f"BTC(kraken:{code})" in "".join(out.split())
        assert "…" not in out.split("balance")[0]
    assert holdings_json(await nav_out(app, capsys, as_json=True))["BTC"]["venue_asset"] == code
