"""The built-in nav plugin through the real consumer loop, on fakeredis and on a real Redis.

Results are read where every reader reads them: ``P:state:nav:latest`` (``read_latest``), the
``P:nav`` stream and ``P:alerts``. Time only moves with the ``ManualClock``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from decimal import Decimal
from typing import Any

import pytest
from support import START_MS, run_step

from navstream import ManualClock, Outputs
from navstream.cli import main
from navstream.contract.events import decode_event
from navstream.loop.consumer import Consumer
from navstream.plugin.calls import call_impl
from navstream.plugin.calls import impls as hook_impls
from navstream.plugin.calls import resolve as await_me_maybe
from navstream.plugins.nav.state import read_latest, read_positions
from navstream.store.writer import BatchWrite

T0 = START_MS - 1_000  # when the sources observed the first values
FUTURES = "account:binance/futures"
SPOT = "account:binance/spot"
ACCOUNTS = [
    {"venue": "binance", "account": "futures", "kind": "futures"},
    {"venue": "binance", "account": "spot", "kind": "spot", "label": "hedge"},
]


def nav_section(**over: Any) -> dict[str, Any]:
    """``[nav]`` for these tests: 60 s freshness, publish and alert periods far apart."""
    return {
        "nav": {
            "max_age_s": 60,
            "publish_every_s": 600,
            "alert_every_s": 300,
            "jump_alert_pct": 10,
            "pegs": {"USDT": "1"},
            "routes": {"BTC": "BTC/USDT"},
            "accounts": ACCOUNTS,
            **over,
        }
    }


# --- entries ------------------------------------------------------------------------------------


def balance(
    asset: str, amount: str, ts: int, account: str = "futures", venue: str = "binance", upnl: str | None = None
) -> dict[str, str]:
    fields = {"type": "balance", "venue": venue, "account": account, "asset": asset, "balance": amount, "ts": str(ts)}
    if upnl is not None:
        fields["unrealized_pnl"] = upnl
    return fields


def price(pair: str, value: str, ts: int, source: str = "binance-spot") -> dict[str, str]:
    base, _, quote = pair.partition("/")
    return {"type": "price", "base": base, "quote": quote, "price": value, "source": source, "ts": str(ts)}


def source_status(
    ok: bool,
    ts: int,
    account: str | None = "futures",
    error: str = "",
    source: str = "binance-futures",
    venue: str = "binance",
) -> dict[str, str]:
    fields = {"type": "source_status", "venue": venue, "source": source, "ok": "true" if ok else "false", "ts": str(ts)}
    if account:
        fields["account"] = account
    if error:
        fields["error"] = error
    return fields


def position(symbol: str, qty: str, ts: int) -> dict[str, str]:
    return {
        "type": "position",
        "venue": "binance",
        "account": "futures",
        "symbol": symbol,
        "qty": qty,
        "entry_price": "97000",
        "mark_price": "97100.5",
        "ts": str(ts),
    }


def report(ts: int, venue: str = "binance", source: str = "binance-spot") -> dict[str, str]:
    """A healthy venue-wide ``source_status``: binance's vouches for every binance account and,
    by its source name, for the ``binance-spot`` prices (silence is not health: without one,
    accounts and prices are stale)."""
    return source_status(True, ts, account=None, source=source, venue=venue)


def desk(ts: int = T0) -> list[dict[str, str]]:
    """Both accounts funded and BTC priced, binance reporting: futures 49500.50 USD, spot 10 USD."""
    return [
        balance("USDT", "1000.5", ts, upnl="-0.25"),
        balance("BTC", "0.5", ts),
        balance("USDT", "10", ts, account="spot"),
        price("BTC/USDT", "97000.5", ts),
        report(ts),
    ]


# --- driving the loop ---------------------------------------------------------------------------


async def started(make_app: Any, nav: dict[str, Any] | None = None, clock: Any = None) -> tuple[Any, Consumer]:
    # The risk gate is left out: its drawdown alerts are its own tests' business.
    app = make_app(builtins=True, extra=nav or nav_section(), clock=clock or ManualClock(START_MS), disabled=["risk"])
    consumer = Consumer(app)
    await consumer.setup()
    return app, consumer


async def run(app: Any, consumer: Consumer, *entries: dict[str, str], tick: bool = True) -> list[dict[str, str]]:
    """Publish, handle, tick (unless told not to); return the nav alerts this step raised."""
    return [
        a
        for a in await run_step(app, consumer, *entries, tick=tick)
        if not a["code"].startswith("source_") and a["code"] != "no_order_handler"
    ]


async def nav_entries(app: Any, scope_id: str | None = None) -> list[dict[str, str]]:
    """``P:nav`` entries, all or of one scope (``account:v/a``, ``venue:v``, ``exchange``, ``total``)."""
    entries = [f for _, f in await app.redis.xrange(app.keys.nav)]
    if scope_id is None:
        return entries
    return [e for e in entries if _scope_id(e) == scope_id]


def _scope_id(e: dict[str, str]) -> str:
    if e["scope"] == "account":
        return f"account:{e['venue']}/{e['account']}"
    if e["scope"] == "venue":
        return f"venue:{e['venue']}"
    return e["scope"]


async def call_hook(app: Any, hook: str, **kwargs: Any) -> Any:
    """Call the nav plugin's implementation of ``hook`` alone, as the loop would."""
    (impl,) = [i for i in hook_impls(app.pm, hook) if i.plugin_name == "nav"]
    return await await_me_maybe(call_impl(impl, {"app": app, **kwargs}))


def money_of(value: Decimal) -> str:
    return format(value, "f")


def codes(alerts: list[dict[str, str]]) -> list[str]:
    return [a["code"] for a in alerts]


def holdings_of(scope: dict[str, Any]) -> list[dict[str, Any]]:
    """A scope of `navstream nav --json`: its holdings, from the last tick's breakdown."""
    return scope.get("breakdown", scope)["holdings"]  # type: ignore[no-any-return]


# --- a NAV appears, exact and complete ----------------------------------------------------------


async def test_nav_of_every_scope_with_exact_decimals(make_app: Any) -> None:
    app, consumer = await started(make_app)
    assert await run(app, consumer, *desk()) == []
    latest = await read_latest(app)
    assert sorted(latest) == ["account:binance/futures", "account:binance/spot", "exchange", "total", "venue:binance"]
    assert {k: (money_of(s.nav), s.status) for k, s in latest.items()} == {
        FUTURES: ("49500.50", "ok"),
        SPOT: ("10", "ok"),
        "venue:binance": ("49510.50", "ok"),
        "exchange": ("49500.50", "ok"),
        "total": ("49510.50", "ok"),
    }
    assert latest["exchange"].accounts == ["binance/futures"]
    assert (latest[SPOT].kind, latest[SPOT].label) == ("spot", "hedge")

    entries = await nav_entries(app)
    assert sorted(_scope_id(e) for e in entries) == sorted(latest)  # each scope once, the tick added none
    futures = (await nav_entries(app, FUTURES))[0]
    assert futures == {
        "scope": "account",
        "venue": "binance",
        "account": "futures",
        "nav": "49500.50",
        "quote": "USD",
        "status": "ok",
        "as_of": str(T0),
        "computed_at": str(START_MS),
        "kind": "futures",
    }
    total = (await nav_entries(app, "total"))[0]
    assert {k: total[k] for k in ("scope", "nav", "quote", "status", "as_of", "computed_at")} == {
        "scope": "total",
        "nav": "49510.50",
        "quote": "USD",
        "status": "ok",
        "as_of": str(T0),
        "computed_at": str(START_MS),
    }
    assert "venue" not in total and "account" not in total and "missing" not in total


async def test_contract_fields_when_something_is_missing_and_stale(make_app: Any) -> None:
    app, consumer = await started(make_app)
    await run(
        app,
        consumer,
        balance("USDT", "5", START_MS - 61_000, account="spot"),
        balance("DOGE", "1000", START_MS, account="spot"),
        report(START_MS),
    )
    (spot,) = await nav_entries(app, SPOT)
    assert (spot["status"], spot["nav"], spot["missing"]) == ("partial", "5", "binance/spot/DOGE")
    assert spot["stale_sources"] == "balance:binance/spot/USDT"
    assert spot["as_of"] == str(START_MS - 61_000)
    (venue,) = await nav_entries(app, "venue:binance")
    assert venue["status"] == "failed"  # binance/futures is configured and has no data
    assert venue["missing"] == "binance/spot/DOGE" and venue["stale_sources"] == "balance:binance/spot/USDT"


async def test_no_exchange_scope_without_a_futures_account(make_app: Any) -> None:
    app, consumer = await started(make_app, nav_section(accounts=[]))
    await run(app, consumer, balance("USDT", "1", T0, account="spot"), report(T0))
    latest = await read_latest(app)
    assert sorted(latest) == ["account:binance/spot", "total", "venue:binance"]
    assert latest[SPOT].kind == "unclassified"


# --- inputs: last ts wins -----------------------------------------------------------------------


async def test_out_of_order_and_duplicated_balances(make_app: Any) -> None:
    app, consumer = await started(make_app)
    await run(app, consumer, balance("USDT", "100", T0), report(T0))
    assert (await read_latest(app))[FUTURES].nav == Decimal("100")
    published = len(await nav_entries(app))

    await run(app, consumer, balance("USDT", "50", T0 - 1_000))  # older: ignored
    await run(app, consumer, balance("USDT", "100", T0))  # the same again: nothing new
    assert (await read_latest(app))[FUTURES].nav == Decimal("100")
    assert len(await nav_entries(app)) == published

    # one batch, out of order: the newest ts wins whatever the order of arrival
    await run(app, consumer, balance("USDT", "300", T0 + 2), balance("USDT", "200", T0 + 1))
    assert (await read_latest(app))[FUTURES].nav == Decimal("300")
    raw = await app.redis.hget(app.keys.state("nav", "balances", "binance", "futures"), "USDT")
    assert raw.startswith(f"{T0 + 2} ")


# --- freshness on the clock ---------------------------------------------------------------------


async def test_silence_turns_the_nav_stale_on_the_next_tick(make_app: Any) -> None:
    """No events at all: the tick alone judges freshness against the clock."""
    app, consumer = await started(make_app)
    await run(app, consumer, *desk(START_MS))
    app.clock.advance(60_000)
    assert await run(app, consumer) == []  # at the limit: still fresh
    assert (await read_latest(app))[FUTURES].status == "ok"

    app.clock.advance(1)  # no events at all: the tick alone must notice
    alerts = await run(app, consumer)
    latest = await read_latest(app)
    assert {k: s.status for k, s in latest.items()} == dict.fromkeys(latest, "stale")
    assert latest[FUTURES].stale_sources == [  # the venue's (and price source's) report, then each input
        "source:binance/binance-spot",
        "balance:binance/futures/BTC",
        "price:BTC/USDT@binance-spot",
        "balance:binance/futures/USDT",
    ]
    assert latest[FUTURES].computed_at == START_MS + 60_001
    assert sorted((a["code"], a["account"], a["severity"]) for a in alerts) == [
        ("nav_stale", "futures", "warning"),
        ("nav_stale", "spot", "warning"),
    ]
    assert all(a["venue"] == "binance" and "stale" in a["message"] for a in alerts)
    (_, stale) = await nav_entries(app, FUTURES)
    assert (stale["status"], stale["nav"]) == ("stale", "49500.50")  # the value stays, flagged


async def test_recovery_from_stale_alerts_nav_recovered(make_app: Any) -> None:
    app, consumer = await started(make_app, nav_section(accounts=[]))
    await run(app, consumer, balance("USDT", "100", START_MS, account="spot"), report(START_MS))
    app.clock.advance(61_000)
    assert codes(await run(app, consumer)) == ["nav_stale"]
    alerts = await run(
        app, consumer, balance("USDT", "100", START_MS + 61_000, account="spot"), report(START_MS + 61_000), tick=False
    )
    (recovered,) = alerts
    assert (recovered["code"], recovered["severity"], recovered["account"]) == ("nav_recovered", "info", "spot")
    assert recovered["message"].endswith("is ok again: 100.00 USD")  # money in the one format
    assert (await read_latest(app))[SPOT].status == "ok"


async def test_a_failing_balance_source_makes_its_account_stale(make_app: Any) -> None:
    app, consumer = await started(make_app)
    await run(app, consumer, *desk(), source_status(True, T0))
    alerts = await run(app, consumer, source_status(False, START_MS, error="HTTP 503 Service Unavailable"))
    latest = await read_latest(app)
    assert latest[FUTURES].status == "stale" and latest[SPOT].status == "ok"  # another account's source
    assert latest[FUTURES].stale_sources == ["source:binance/binance-futures/futures"]
    assert latest["total"].status == "stale" and latest["exchange"].status == "stale"
    (stale,) = alerts
    assert stale["code"] == "nav_stale" and stale["account"] == "futures" and "HTTP 503" in stale["message"]
    (_, entry) = await nav_entries(app, FUTURES)
    assert entry["stale_sources"] == "source:binance/binance-futures/futures"

    alerts = await run(app, consumer, source_status(True, START_MS + 1))
    assert codes(alerts) == ["nav_recovered"] and (await read_latest(app))[FUTURES].status == "ok"


async def test_a_venue_wide_source_failure_makes_every_account_of_the_venue_stale(make_app: Any) -> None:
    app, consumer = await started(make_app)
    await run(app, consumer, *desk())
    await run(app, consumer, source_status(False, START_MS, account=None, error="DNS"))
    latest = await read_latest(app)
    assert latest[FUTURES].status == "stale" and latest[SPOT].status == "stale"


# --- what is wrong is alerted -------------------------------------------------------------------


async def test_a_missing_price_alerts_and_the_nav_is_partial(make_app: Any) -> None:
    app, consumer = await started(make_app)
    alerts = await run(app, consumer, *desk(), balance("DOGE", "1000", T0, account="spot"))
    (missing,) = alerts
    assert (missing["code"], missing["severity"]) == ("price_missing", "warning")
    assert (missing["venue"], missing["account"], missing["asset"]) == ("binance", "spot", "DOGE")
    assert "DOGE" in missing["message"] and "DOGE/USD" in missing["message"]
    latest = await read_latest(app)
    assert (latest[SPOT].status, latest[SPOT].nav, latest[SPOT].missing) == (
        "partial",
        Decimal("10"),
        ["binance/spot/DOGE"],
    )
    assert (latest["total"].status, latest["total"].nav) == ("partial", Decimal("49510.50"))


async def test_diverging_prices_alert_price_divergence(make_app: Any) -> None:
    app, consumer = await started(make_app)
    alerts = await run(app, consumer, *desk(), price("BTC/USDT", "90000", T0, source="kraken"))
    (diverge,) = alerts
    assert diverge["code"] == "price_divergence" and diverge["asset"] == "BTC"
    assert "kraken" in diverge["message"] and "binance-spot" in diverge["message"]
    assert (await read_latest(app))[FUTURES].status == "partial"


async def test_a_zero_wallet_is_zero_with_a_critical_alert(make_app: Any) -> None:
    app, consumer = await started(make_app)
    alerts = await run(app, consumer, balance("USDT", "0", T0), balance("USDT", "10", T0, account="spot"), report(T0))
    (zero,) = alerts
    assert (zero["code"], zero["severity"], zero["account"]) == ("wallet_zero", "critical", "futures")
    assert "nothing is substituted" in zero["message"]
    (entry,) = await nav_entries(app, FUTURES)
    assert (entry["nav"], entry["status"]) == ("0", "ok")
    assert (await read_latest(app))["exchange"].nav == 0


async def test_a_configured_account_without_data_fails_loudly(make_app: Any) -> None:
    app, consumer = await started(make_app)
    alerts = await run(app, consumer, balance("USDT", "10", T0, account="spot"), report(T0))
    (failed,) = alerts
    assert (failed["code"], failed["severity"], failed["account"]) == ("nav_failed", "critical", "futures")
    assert "no balance data" in failed["message"]
    (entry,) = await nav_entries(app, FUTURES)
    assert (entry["status"], entry["nav"], entry["as_of"]) == ("failed", "0", "0")


async def test_an_unconfigured_account_is_alerted(make_app: Any) -> None:
    app, consumer = await started(make_app)
    alerts = await run(
        app,
        consumer,
        *desk(),
        balance("USDT", "5", T0, venue="okx", account="stray"),
        report(T0, venue="okx", source="okx-balances"),
    )
    (stray,) = alerts
    assert (stray["code"], stray["venue"], stray["account"]) == ("account_unconfigured", "okx", "stray")
    latest = await read_latest(app)
    assert latest["account:okx/stray"].kind == "unclassified"
    assert latest["total"].nav == Decimal("49515.50") and latest["exchange"].nav == Decimal("49500.50")


async def test_a_drop_above_the_limit_is_critical(make_app: Any) -> None:
    app, consumer = await started(make_app)
    await run(app, consumer, balance("USDT", "1000", T0), balance("USDT", "1", T0, account="spot"), report(T0))
    assert await run(app, consumer, balance("USDT", "2000", T0 + 1)) == []  # a rise
    assert await run(app, consumer, balance("USDT", "1900", T0 + 2)) == []  # 5%: under the limit
    (drop,) = await run(app, consumer, balance("USDT", "1700", T0 + 3))
    assert (drop["code"], drop["severity"], drop["account"]) == ("nav_drop", "critical", "futures")
    assert "10.53%" in drop["message"] and "from 1,900.00 USD to 1,700.00 USD" in drop["message"]


# --- de-duplication -----------------------------------------------------------------------------


async def test_a_lasting_condition_alerts_once_per_alert_every_s(make_app: Any) -> None:
    """Judged on every tick, raised once per alert_every_s (then as a reminder)."""
    app, consumer = await started(make_app, nav_section(max_age_s=3600, alert_every_s=120))
    alerts = await run(app, consumer, *desk(), balance("DOGE", "1", T0, account="spot"))
    assert codes(alerts) == ["price_missing"]
    for _ in range(3):
        app.clock.advance(30_000)
        assert await run(app, consumer) == []  # judged again every tick, alerted once
    app.clock.advance(30_000)  # 120 s after the first alert: a reminder
    assert codes(await run(app, consumer)) == ["price_missing"]
    assert await run(app, consumer) == []


async def test_a_lasting_stale_nav_alerts_once_per_period(make_app: Any) -> None:
    app, consumer = await started(make_app)
    await run(app, consumer, *desk(START_MS))
    app.clock.advance(61_000)
    assert codes(await run(app, consumer)) == ["nav_stale", "nav_stale"]
    for _ in range(5):
        app.clock.advance(10_000)
        assert await run(app, consumer) == []
    app.clock.advance(250_000)  # 300 s after the first alert
    assert codes(await run(app, consumer)) == ["nav_stale", "nav_stale"]


async def test_a_new_stale_episode_is_alerted_within_one_alert_period(make_app: Any) -> None:
    """Alerts are de-duplicated per code and account for alert_every_s (300 s), recovery or not,
    so a NAV flapping between ok and stale cannot flood P:alerts. A NAV stale again soon after
    recovering is in P:nav and the state at once, and alerted as soon as the period that the
    first alert began runs out: never later than alert_every_s after the first one."""
    app, consumer = await started(make_app, nav_section(accounts=[]))
    await run(app, consumer, balance("USDT", "100", START_MS, account="spot"), report(START_MS))
    app.clock.advance(61_000)
    assert codes(await run(app, consumer)) == ["nav_stale"]
    recovered = await run(
        app, consumer, balance("USDT", "100", START_MS + 61_000, account="spot"), report(START_MS + 61_000)
    )
    assert codes(recovered) == ["nav_recovered"]
    app.clock.advance(61_000)  # silent again, a new episode, 61 s after the first alert
    alerts = await run(app, consumer)
    assert (await read_latest(app))[SPOT].status == "stale"
    assert (await nav_entries(app, SPOT))[-1]["status"] == "stale"  # visible at once
    assert alerts == []  # inside the first alert's period
    app.clock.advance(239_000)  # 300 s after the first nav_stale
    assert codes(await run(app, consumer)) == ["nav_stale"]


# --- publication on P:nav -----------------------------------------------------------------------


async def test_p_nav_publishes_on_change_and_every_publish_every_s(make_app: Any) -> None:
    """A scope is published when its value or status changes, else once per publish_every_s."""
    app, consumer = await started(make_app, nav_section(max_age_s=3600, publish_every_s=60))
    await run(app, consumer, *desk())
    assert len(await nav_entries(app)) == 5
    for _ in range(3):
        app.clock.advance(19_000)
        await run(app, consumer)
    assert len(await nav_entries(app)) == 5  # nothing changed: nothing new

    await run(app, consumer, balance("USDT", "11", T0 + 1, account="spot"))  # a change, at once
    entries = await nav_entries(app)
    assert sorted(_scope_id(e) for e in entries[5:]) == ["account:binance/spot", "total", "venue:binance"]
    assert (await nav_entries(app, SPOT))[-1]["nav"] == "11"

    app.clock.advance(3_000)  # 60 s since the first publication: every unchanged scope again
    await run(app, consumer)
    fresh = (await nav_entries(app))[8:]
    assert sorted(_scope_id(e) for e in fresh) == ["account:binance/futures", "exchange"]
    assert fresh[0]["computed_at"] == str(START_MS + 60_000)
    app.clock.advance(57_000)  # 60 s after the change
    await run(app, consumer)
    assert sorted(_scope_id(e) for e in (await nav_entries(app))[10:]) == [
        "account:binance/spot",
        "total",
        "venue:binance",
    ]


async def test_a_status_change_alone_is_published(make_app: Any) -> None:
    app, consumer = await started(make_app)
    await run(app, consumer, *desk(START_MS))
    app.clock.advance(61_000)
    await run(app, consumer)
    assert [e["status"] for e in await nav_entries(app, "total")] == ["ok", "stale"]
    assert [e["nav"] for e in await nav_entries(app, "total")] == ["49510.50", "49510.50"]


# --- what a batch recomputes --------------------------------------------------------------------


async def test_a_balance_batch_recomputes_only_its_account(make_app: Any) -> None:
    """Another account keeps its stored snapshot (and computed_at); the aggregates are redone."""
    app, consumer = await started(make_app)
    await run(app, consumer, *desk())
    app.clock.advance(1_000)
    await run(app, consumer, balance("USDT", "20", T0 + 1, account="spot"), tick=False)
    latest = await read_latest(app)
    assert (latest[SPOT].nav, latest[SPOT].computed_at) == (Decimal("20"), START_MS + 1_000)
    assert latest[FUTURES].computed_at == START_MS  # untouched: its stored snapshot stays
    assert latest["total"].computed_at == START_MS + 1_000 and latest["total"].nav == Decimal("49520.50")
    assert latest["venue:binance"].nav == Decimal("49520.50")


async def test_a_balance_batch_never_presents_an_aggregate_on_stale_inputs_as_ok(make_app: Any) -> None:
    app, consumer = await started(make_app)
    await run(app, consumer, *desk(START_MS))
    app.clock.advance(61_000)  # every futures input is now past max_age_s; no tick since
    await run(app, consumer, balance("USDT", "20", START_MS + 61_000, account="spot"), tick=False)
    latest = await read_latest(app)
    total = latest["total"]
    assert (total.computed_at, total.as_of) == (START_MS + 61_000, START_MS)  # rests on 61 s old inputs
    (*_, entry) = await nav_entries(app, "total")
    assert entry["computed_at"] == str(START_MS + 61_000)
    assert entry["status"] != "ok"
    assert latest["exchange"].status != "ok"


async def test_a_price_recomputes_every_account(make_app: Any) -> None:
    app, consumer = await started(make_app)
    await run(app, consumer, *desk())
    app.clock.advance(1_000)
    await run(app, consumer, price("BTC/USDT", "100000", T0 + 1), tick=False)
    latest = await read_latest(app)
    assert latest[FUTURES].nav == Decimal("51000.25")
    assert latest[FUTURES].computed_at == latest[SPOT].computed_at == START_MS + 1_000


async def test_positions_are_stored_but_do_not_change_the_nav(make_app: Any) -> None:
    app, consumer = await started(make_app)
    await run(app, consumer, *desk())
    before = await read_latest(app)
    published = len(await nav_entries(app))
    app.clock.advance(1_000)
    await run(app, consumer, position("BTCUSDT", "2.5", T0 + 5), position("BTCUSDT", "1", T0 + 4), tick=False)
    ((symbol, (ts, pos)),) = (await read_positions(app, "binance", "futures")).items()
    assert (symbol, ts, pos.qty, pos.entry_price, pos.mark_price) == (
        "BTCUSDT",
        T0 + 5,
        Decimal("2.5"),
        Decimal("97000"),
        Decimal("97100.5"),
    )
    assert await read_latest(app) == before  # nothing recomputed
    assert len(await nav_entries(app)) == published


# --- several consumers --------------------------------------------------------------------------


async def test_a_second_consumer_values_from_the_state_the_first_wrote(make_app: Any) -> None:
    clock = ManualClock(START_MS)
    a_app, a = await started(make_app, clock=clock)
    await run(a_app, a, *desk())
    b_app, b = await started(make_app, clock=clock)
    clock.advance(1_000)
    await run(b_app, b, balance("USDT", "20", T0 + 1, account="spot"))
    assert (await read_latest(b_app))["total"].nav == Decimal("49520.50")
    clock.advance(1_000)
    await run(a_app, a)  # A's copy is out of date: B wrote since; A must read again
    latest = await read_latest(a_app)
    assert latest["total"].nav == Decimal("49520.50") and latest["total"].computed_at == START_MS + 2_000


async def test_consumers_racing_converge_on_the_state_both_wrote(make_app: Any) -> None:
    """A checks its copy is current, B writes, then A's write lands: A must not keep trusting a
    copy that lacks B's update (its ticks would overwrite the NAV without it)."""
    clock = ManualClock(START_MS)
    a_app, a = await started(make_app, clock=clock)
    await run(a_app, a, *desk())  # A holds a copy, and the writer token is A's
    b_app, b = await started(make_app, clock=clock)
    out = Outputs(clock.now_ms())  # A handles a batch: its token check passes...
    spot = decode_event(balance("USDT", "20", T0 + 1, account="spot"))
    await call_hook(a_app, "navstream_events", events=[spot], out=out)
    await run(b_app, b, balance("USDT", "2000", T0 + 1), tick=False)  # ...B writes in between...
    await a.writer.write(BatchWrite(out))  # ...then A's batch is written
    state = await a_app.redis.hgetall(a_app.keys.state("nav", "balances", "binance", "futures"))
    assert state["USDT"].startswith(f"{T0 + 1} ")  # Redis holds both updates
    clock.advance(1_000)
    await run(a_app, a)  # the next tick recomputes from the state both wrote
    latest = await read_latest(a_app)
    assert latest["total"].computed_at == START_MS + 1_000
    assert latest[FUTURES].nav == Decimal("50500.25")  # B's update is not lost
    assert latest[SPOT].nav == 20 and latest["total"].nav == Decimal("50520.25")


# --- failing closed on bad state ----------------------------------------------------------------


async def test_a_corrupt_state_member_fails_the_plugin_loudly(make_app: Any) -> None:
    """An unreadable member is a plugin error (alerted, entry left pending), never skipped."""
    app, consumer = await started(make_app)
    await run(app, consumer, *desk())
    await app.redis.hset(app.keys.state("nav", "prices"), "ETH/USDT@manual", "garbage")
    app.clock.advance(1_000)
    # a consumer that reads the state (a restart, a replica taking over): it must not value without it
    other, second = await started(make_app, clock=app.clock)
    alerts = await run(other, second, balance("USDT", "20", T0 + 1, account="spot"))
    errors = [a for a in alerts if a["code"] == "plugin_error"]
    assert len(errors) == 2  # the batch, and the tick
    assert all(
        "'nav'" in a["message"] and "ETH/USDT@manual" in a["message"] and "nav:prices" in a["message"] for a in errors
    )
    assert any("navstream_tick" in a["message"] for a in errors)
    assert other.stats.plugin_errors == 2
    assert (await app.redis.xpending(app.keys.events, app.group))["pending"] == 1  # not acknowledged
    latest = await read_latest(app)
    assert latest[SPOT].nav == 10 and latest["total"].computed_at == START_MS  # nothing valued without it


async def test_a_corrupt_latest_snapshot_fails_the_tick(make_app: Any) -> None:
    app, consumer = await started(make_app)
    await run(app, consumer, *desk())
    await app.redis.hset(app.keys.state("nav", "latest"), "total", f"{START_MS} {{not json")
    other, second = await started(make_app, clock=app.clock)
    (error,) = await run(other, second)
    assert error["code"] == "plugin_error" and "nav:latest" in error["message"] and "'total'" in error["message"]


async def test_a_corrupt_state_member_fails_a_consumer_that_already_read_the_state(make_app: Any) -> None:
    """A consumer trusting its copy does not see an edit made outside navstream at once, but
    its next tick reads everything again and fails loudly."""
    app, consumer = await started(make_app)
    await run(app, consumer, *desk())
    await app.redis.hset(app.keys.state("nav", "prices"), "BTC/USDT@binance-spot", "garbage")
    app.clock.advance(1_000)
    alerts = await run(app, consumer, balance("USDT", "20", T0 + 1, account="spot"))
    assert (await read_latest(app))["total"].computed_at == START_MS + 1_000  # the batch used its copy
    assert "plugin_error" in codes(alerts)  # the next tick reads everything again


# --- status and CLI -----------------------------------------------------------------------------


async def call_status(app: Any) -> Any:
    return await call_hook(app, "navstream_status")


async def test_status_section_lists_every_scope(make_app: Any) -> None:
    app, consumer = await started(make_app)
    await run(app, consumer, *desk(), balance("DOGE", "1", T0, account="spot"))
    app.clock.advance(5_000)
    section = await call_status(app)
    assert section["quote"] == "USD"
    assert [(r["scope"], r["name"], r["nav"], r["status"]) for r in section["scopes"]] == [
        ("account", "binance/futures", "49500.50", "ok"),
        ("account", "binance/spot", "10", "partial"),
        ("venue", "binance", "49510.50", "partial"),
        ("exchange", "exchange", "49500.50", "ok"),
        ("total", "total", "49510.50", "partial"),
    ]
    spot = section["scopes"][1]
    assert (spot["as_of_age_s"], spot["computed_age_s"], spot["missing"]) == (6.0, 5.0, ["binance/spot/DOGE"])


@pytest.fixture
def _no_navstream_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No NAVSTREAM_* variable of the caller's shell reaches the CLI under test."""
    for name in list(os.environ):
        if name.startswith("NAVSTREAM_") and name != "NAVSTREAM_REQUIRE_REDIS":
            monkeypatch.delenv(name)


async def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``navstream ARGS`` in-process, on a thread (it runs its own event loop)."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def cli_desk(backend: Any, make_app: Any) -> tuple[Any, list[str]]:
    """A desk valued on the real Redis, on a clock near the wall clock (the CLI ages by it)."""
    if backend.kind != "real":
        pytest.skip("the CLI connects by URL: real Redis only")
    now = time.time_ns() // 1_000_000
    app, consumer = await started(make_app, clock=ManualClock(now))
    await run(
        app,
        consumer,
        balance("USDT", "1000.5", now - 2_000, upnl="-0.25"),
        balance("BTC", "0.5", now),
        balance("USDT", "10", now, account="spot"),
        balance("DOGE", "1000", now, account="spot"),
        price("BTC/USDT", "97000.5", now - 1_000),
        position("BTCUSDT", "0.5", now),
        report(now),
    )
    return app, ["--redis-url", backend.url, "--prefix", backend.prefix]


@pytest.mark.usefixtures("_no_navstream_env")
async def test_cli_nav_explains_a_missing_asset(
    capsys: pytest.CaptureFixture[str], backend: Any, make_app: Any
) -> None:
    _, opts = await cli_desk(backend, make_app)
    code, out, err = await cli(capsys, "nav", *opts)
    assert code == 0, err
    assert "account binance/spot (spot, hedge): 10.00 USD  status PARTIAL" in out
    assert "account binance/futures (futures): 49,500.50 USD  status OK" in out
    (total,) = [line for line in out.splitlines() if line.startswith("total")]
    assert total.endswith(": 49,510.50 USD  status PARTIAL")
    doge = next(line for line in out.splitlines() if line.startswith("DOGE"))
    assert "NOT VALUED" in doge and "no price for DOGE/USD" in doge
    assert "missing (not in the NAV): binance/spot/DOGE" in out
    assert "why: DOGE not valued: no price for DOGE/USD" in out
    assert "BTC/USDT@binance-spot -> USDT peg 1" in out
    assert "BTCUSDT" in out  # the futures account's position


@pytest.mark.usefixtures("_no_navstream_env")
async def test_cli_nav_json_holds_holdings_with_ages(
    capsys: pytest.CaptureFixture[str], backend: Any, make_app: Any
) -> None:
    _, opts = await cli_desk(backend, make_app)
    code, out, err = await cli(capsys, "nav", *opts, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [(s["scope"], s.get("venue"), s.get("account")) for s in data] == [
        ("account", "binance", "futures"),
        ("account", "binance", "spot"),
        ("venue", "binance", None),
        ("exchange", None, None),
        ("total", None, None),
    ]
    futures = data[0]
    assert (futures["nav"], futures["status"]) == ("49500.50", "ok")
    usdt = next(h for h in holdings_of(futures) if h["asset"] == "USDT")
    assert (usdt["balance"], usdt["unrealized_pnl"], usdt["value"]) == ("1000.5", "-0.25", "1000.25")
    assert 2.0 <= usdt["age_s"] < 60
    btc = next(h for h in holdings_of(futures) if h["asset"] == "BTC")
    assert btc["prices"][0]["pair"] == "BTC/USDT" and 1.0 <= btc["prices"][0]["age_s"] < 60
    assert btc["route"] == ["BTC/USDT@binance-spot", "USDT peg 1"]
    assert futures["positions"]["BTCUSDT"]["qty"] == "0.5"
    assert 2.0 <= futures["as_of_age_s"] < 60 and futures["computed_age_s"] >= 0
    doge = next(h for h in holdings_of(data[1]) if h["asset"] == "DOGE")
    assert doge["missing_code"] == "price_missing" and "value" not in doge and "DOGE/USD" in doge["missing"]


@pytest.mark.usefixtures("_no_navstream_env")
async def test_cli_nav_filters_by_venue_and_account(
    capsys: pytest.CaptureFixture[str], backend: Any, make_app: Any
) -> None:
    _, opts = await cli_desk(backend, make_app)
    code, out, err = await cli(capsys, "nav", *opts, "--json", "--venue", "binance")
    assert code == 0, err
    assert [(s["scope"], s.get("account")) for s in json.loads(out)] == [
        ("account", "futures"),
        ("account", "spot"),
        ("venue", None),
    ]
    code, out, err = await cli(capsys, "nav", *opts, "--json", "--account", "spot")
    assert code == 0, err
    assert [(s["scope"], s["venue"], s["account"]) for s in json.loads(out)] == [("account", "binance", "spot")]
    code, out, err = await cli(capsys, "nav", *opts, "--venue", "binance", "--account", "futures")
    assert code == 0, err
    assert out.startswith("account binance/futures") and "binance/spot" not in out


@pytest.mark.usefixtures("_no_navstream_env")
async def test_cli_nav_exits_1_when_nothing_matches(
    capsys: pytest.CaptureFixture[str], backend: Any, make_app: Any
) -> None:
    _, opts = await cli_desk(backend, make_app)
    code, out, _ = await cli(capsys, "nav", *opts, "--venue", "kraken")
    assert code == 1
    assert out.startswith("no NAV for --venue kraken under ") and f"{backend.prefix}:state:nav:latest" in out
    code, out, _ = await cli(capsys, "nav", *opts, "--json", "--account", "nobody")
    assert code == 1
    data = json.loads(out)
    assert data["scopes"] == [] and data["error"].startswith("no NAV for --account nobody under ")


@pytest.mark.usefixtures("_no_navstream_env")
async def test_cli_nav_before_any_nav_exits_1(capsys: pytest.CaptureFixture[str], backend: Any) -> None:
    if backend.kind != "real":
        pytest.skip("the CLI connects by URL: real Redis only")
    code, out, _ = await cli(capsys, "nav", "--redis-url", backend.url, "--prefix", backend.prefix)
    assert code == 1 and out.startswith("no NAV computed yet under")


@pytest.mark.usefixtures("_no_navstream_env")
async def test_cli_status_json_has_the_nav_section(
    capsys: pytest.CaptureFixture[str], backend: Any, make_app: Any
) -> None:
    _, opts = await cli_desk(backend, make_app)
    code, out, err = await cli(capsys, "status", *opts, "--json")
    assert code == 0, err
    section = json.loads(out)["plugins"]["nav"]
    assert section["quote"] == "USD"
    rows = {r["name"]: r for r in section["scopes"]}
    assert set(rows) == {"binance/futures", "binance/spot", "binance", "exchange", "total"}
    assert (rows["binance/spot"]["status"], rows["binance/spot"]["missing"]) == ("partial", ["binance/spot/DOGE"])
    assert rows["total"]["nav"] == "49510.50" and 0 <= rows["total"]["computed_age_s"] < 60


@pytest.mark.usefixtures("_no_navstream_env")
async def test_cli_nav_json_never_uses_exponent_form(
    capsys: pytest.CaptureFixture[str], backend: Any, make_app: Any
) -> None:
    if backend.kind != "real":
        pytest.skip("the CLI connects by URL: real Redis only")
    now = time.time_ns() // 1_000_000
    app, consumer = await started(make_app, clock=ManualClock(now))
    await run(
        app, consumer, balance("DUST", "0.00000001", now, account="spot"), price("DUST/USD", "0.01", now), report(now)
    )
    code, out, err = await cli(
        capsys, "nav", "--redis-url", backend.url, "--prefix", backend.prefix, "--json", "--account", "spot"
    )
    assert code == 0, err
    (spot,) = json.loads(out)
    assert spot["nav"] == "0.0000000001"
    (dust,) = holdings_of(spot)
    assert (dust["balance"], dust["value"]) == ("0.00000001", "0.0000000001")  # never "1E-8"


async def test_navstream_nav_names_an_unreadable_member_instead_of_a_traceback(
    make_app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from navstream.plugins.nav import explain

    app, consumer = await started(make_app)
    await run(app, consumer, *desk())
    await app.redis.hset(app.keys.state("nav", "latest"), "total", "garbage")
    code = await explain.command(app, argparse.Namespace(venue=None, account=None, json=False))
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("navstream: error: ") and "nav:latest" in err and "'total'" in err


async def test_navstream_nav_names_an_unreadable_position(make_app: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from navstream.plugins.nav import explain

    app, consumer = await started(make_app)
    await run(app, consumer, *desk())
    spot = (await read_latest(app))[SPOT]
    await app.redis.hset(app.keys.state("nav", "positions", spot.venue, spot.account), "BTCUSDT", "no ts")
    code = await explain.command(app, argparse.Namespace(venue=None, account=spot.account, json=True))
    assert code == 1 and "nav:positions" in capsys.readouterr().err


# --- freshness belongs to readers, not ticks ----------------------------------------------------


async def test_every_reader_takes_an_ok_nav_as_stale_from_its_fresh_until_without_a_tick(
    make_app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A NAV stored ok; the clock passes its fresh_until and no tick runs: the stored state
    still says ok, yet `navstream nav` (text and --json) and `navstream status` say stale."""
    import argparse

    from navstream.plugins.nav import explain

    app, consumer = await started(make_app)
    await run(app, consumer, *desk(START_MS))
    stored = await read_latest(app)
    assert {s.status for s in stored.values()} == {"ok"}
    horizon = START_MS + 60_000 + 1  # the inputs, all observed and received at START_MS, pass 60 s
    assert {sid: s.fresh_until for sid, s in stored.items()} == dict.fromkeys(stored, horizon)

    async def readers() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        capsys.readouterr()
        assert await explain.command(app, argparse.Namespace(venue=None, account=None, json=True)) == 0
        as_json = {_json_name(s): s["status"] for s in json.loads(capsys.readouterr().out)}
        assert await explain.command(app, argparse.Namespace(venue=None, account=None, json=False)) == 0
        text = {
            line.split(":")[0]: line.rsplit("status ", 1)[1]
            for line in capsys.readouterr().out.splitlines()
            if " status " in line and not line.startswith(" ")
        }
        section = {r["name"]: r["status"] for r in (await call_hook(app, "navstream_status"))["scopes"]}
        return as_json, text, section

    set_clock(app, horizon - 1)  # one millisecond before: still ok for every reader
    as_json, text, section = await readers()
    assert set(as_json.values()) == set(section.values()) == {"ok"} and set(text.values()) == {"OK"}

    set_clock(app, horizon)  # no tick, no event: only the readers can tell
    as_json, text, section = await readers()
    assert set(as_json.values()) == {"stale"} and len(as_json) == 5
    assert set(text.values()) == {"STALE"} and len(text) == 5
    assert set(section.values()) == {"stale"} and len(section) == 5
    assert {s.status for s in (await read_latest(app)).values()} == {"ok"}  # the state itself is untouched
    capsys.readouterr()
    await explain.command(app, argparse.Namespace(venue=None, account="futures", json=False))
    out = capsys.readouterr().out
    assert "why: an input passed its age limit at " in out and "not re-evaluated since" in out


def set_clock(app: Any, ms: int) -> None:
    app.clock.advance(ms - app.clock.now_ms())


def _json_name(s: dict[str, Any]) -> str:
    if s["scope"] == "account":
        return f"{s['venue']}/{s['account']}"
    return s["venue"] if s["scope"] == "venue" else s["scope"]


# --- the future is not fresher: receipt times ---------------------------------------------------


async def test_a_balance_stamped_ahead_goes_stale_at_its_receipt_plus_max_age(make_app: Any) -> None:
    app, consumer = await started(make_app, nav_section(accounts=[]))
    await run(app, consumer, balance("USDT", "100", START_MS + 4_000, account="spot"), report(START_MS))
    raw = await app.redis.hget(app.keys.state("nav", "balances", "binance", "spot"), "USDT")
    assert raw == f'{START_MS + 4_000} ["100","0",{START_MS}]'  # ts kept for ordering, receipt beside it
    app.clock.advance(30_000)
    await run(app, consumer, report(START_MS + 30_000))  # the venue keeps reporting; the balance stops
    set_clock(app, START_MS + 60_000)
    await run(app, consumer)
    assert (await read_latest(app))[SPOT].status == "ok"
    set_clock(app, START_MS + 60_001)  # 60 s after it was received, though its ts is 4 s younger
    alerts = await run(app, consumer)
    spot = (await read_latest(app))[SPOT]
    assert (spot.status, spot.stale_sources) == ("stale", ["balance:binance/spot/USDT"])
    assert any("counted from its receipt (stamped 4 s ahead of it)" in r for r in spot.reasons)
    assert spot.as_of == START_MS  # never later than its receipt
    assert codes(alerts) == ["nav_stale"]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_future_stamps_within_the_skew_never_extend_freshness(make_app: Any, seed: int) -> None:
    rng = random.Random(seed)
    app, consumer = await started(make_app, nav_section(accounts=[]))
    offsets = [rng.randint(0, 5_000) for _ in range(12)]  # up to [consumer] max_future_ms, accepted
    entries = [balance("USDT", str(i + 1), START_MS + off, account=f"a{i}") for i, off in enumerate(offsets)]
    await run(app, consumer, *entries, report(START_MS))
    assert (await app.redis.xpending(app.keys.events, app.group))["pending"] == 0 and await app.redis.xlen(
        app.keys.dlq
    ) == 0
    set_clock(app, START_MS + 60_000)
    await run(app, consumer)
    accounts = {sid: s for sid, s in (await read_latest(app)).items() if s.scope == "account"}
    assert len(accounts) == 12 and {s.status for s in accounts.values()} == {"ok"}
    assert {s.fresh_until for s in accounts.values()} == {START_MS + 60_001}
    set_clock(app, START_MS + 60_001)  # whatever each stamp said, all were received at START_MS
    await run(app, consumer)
    accounts = {sid: s for sid, s in (await read_latest(app)).items() if s.scope == "account"}
    assert {s.status for s in accounts.values()} == {"stale"}
    assert all(f"balance:binance/{s.account}/USDT" in s.stale_sources for s in accounts.values())


async def test_an_event_stamped_past_max_future_ms_is_dead_lettered(make_app: Any) -> None:
    app, consumer = await started(make_app)
    assert app.settings.consumer.max_future_ms == 5_000  # the default: a few seconds of skew
    await run(app, consumer, balance("USDT", "1", START_MS + 5_001, account="spot"))
    (letter,) = [f for _, f in await app.redis.xrange(app.keys.dlq)]
    assert "in the future" in letter["dlq_error"] and "5000 ms" in letter["dlq_error"]


async def test_every_stored_input_carries_its_receipt_time(make_app: Any) -> None:
    app, consumer = await started(make_app)
    app.clock.advance(250)
    received = START_MS + 250
    await run(app, consumer, *desk(), source_status(True, T0), position("BTCUSDT", "2", T0))
    state = app.keys.state
    assert (await app.redis.hget(state("nav", "prices"), "BTC/USDT@binance-spot")).endswith(f",{received}]")
    sources = await app.redis.hgetall(state("nav", "sources"))
    assert all(json.loads(v.partition(" ")[2])["received"] == received for v in sources.values()) and sources
    ((_, (ts, pos)),) = (await read_positions(app, "binance", "futures")).items()
    assert (ts, pos.received) == (T0, received)


async def test_an_input_stored_without_a_receipt_time_is_stale_until_sent_again(make_app: Any) -> None:
    """A member written before receipt times were kept cannot show when it arrived: it is read
    (old payloads still decode), but counted stale until its source sends it again."""
    app, consumer = await started(make_app, nav_section(accounts=[]))
    await run(app, consumer, balance("USDT", "100", T0, account="spot"), report(T0))
    await app.redis.hset(app.keys.state("nav", "balances", "binance", "spot"), "USDT", f'{T0} ["100","0"]')
    await run(app, consumer)
    spot = (await read_latest(app))[SPOT]
    assert (spot.status, spot.nav, spot.stale_sources) == ("stale", Decimal("100"), ["balance:binance/spot/USDT"])
    assert any("stored without a receipt time" in r for r in spot.reasons)
    await run(app, consumer, balance("USDT", "100", T0 + 1, account="spot"))
    assert (await read_latest(app))[SPOT].status == "ok"


# --- silence is not health ---------------------------------------------------------------------


async def test_an_account_whose_venue_never_reported_is_not_ok(make_app: Any) -> None:
    app, consumer = await started(make_app, nav_section(accounts=[]))
    alerts = await run(app, consumer, balance("USDT", "10", T0, account="spot"))
    spot = (await read_latest(app))[SPOT]
    assert (spot.status, spot.stale_sources) == ("stale", ["source:binance/never-reported/spot"])
    (stale,) = alerts
    assert stale["code"] == "nav_stale" and "no source_status ever received from binance" in stale["message"]
    (entry,) = await nav_entries(app, SPOT)
    assert (entry["status"], entry["stale_sources"]) == ("stale", "source:binance/never-reported/spot")
    # the venue reports (for that account): ok
    alerts = await run(app, consumer, source_status(True, T0, account="spot", source="binance-spot-account"))
    assert (await read_latest(app))[SPOT].status == "ok" and codes(alerts) == ["nav_recovered"]


async def test_a_bank_fed_by_hand_that_opted_out_needs_no_report(make_app: Any) -> None:
    accounts = [
        {"venue": "bank", "account": "ops", "kind": "bank", "requires_source_status": False},
        {"venue": "bank", "account": "payroll", "kind": "bank"},
    ]
    app, consumer = await started(make_app, nav_section(accounts=accounts))
    await run(
        app,
        consumer,
        balance("USDT", "10", T0, venue="bank", account="ops"),
        balance("USDT", "5", T0, venue="bank", account="payroll"),
    )
    latest = await read_latest(app)
    assert (latest["account:bank/ops"].status, latest["account:bank/ops"].stale_sources) == ("ok", [])
    assert latest["account:bank/payroll"].stale_sources == ["source:bank/never-reported/payroll"]
    assert latest["venue:bank"].status == "stale"


async def test_a_price_whose_source_never_reported_is_stale(make_app: Any) -> None:
    app, consumer = await started(make_app)
    reports = [source_status(True, T0, account="futures"), source_status(True, T0, account="spot")]
    await run(app, consumer, *desk()[:4], *reports)  # the venue reports; the price source never did
    futures = (await read_latest(app))[FUTURES]
    assert (futures.status, futures.stale_sources) == ("stale", ["source:*/binance-spot/never-reported"])
    assert any("price source binance-spot never sent a source_status" in r for r in futures.reasons)
    assert (await read_latest(app))[SPOT].status == "ok"  # holds no BTC: needs no price
    await run(app, consumer, report(T0 + 1))  # binance-spot reports: its prices are fresh
    assert (await read_latest(app))[FUTURES].status == "ok"


async def test_an_unmonitored_price_source_may_stay_silent(make_app: Any) -> None:
    app, consumer = await started(make_app, nav_section(unmonitored_price_sources=["manual"]))
    await run(
        app, consumer, *desk(), price("ETH/USD", "3000", T0, source="manual"), balance("ETH", "1", T0, account="spot")
    )
    spot = (await read_latest(app))[SPOT]
    assert (spot.status, spot.nav) == ("ok", Decimal("3010"))
