"""What a person reads of the NAV: money in the one format (alerts, the status page, `navstream
nav`) while every machine field stays exact, and one freshness story: each NAV row shows its first
reason and the limit its readers apply (the risk gate's, declared through nav.api), an ``ok`` NAV
the gate already refuses says so, and no limit is shown where no reader declared one."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from support import START_MS, run_step
from support.risk import funded, started

from navstream import Cell, ManualClock, Table
from navstream.cli import main
from navstream.loop.consumer import Consumer
from navstream.plugin.calls import call_impl
from navstream.plugin.calls import impls as hook_impls
from navstream.plugin.calls import resolve as await_me_maybe
from navstream.plugins.nav import explain
from navstream.plugins.nav.api import declare_reader_limit, read_reader_limits
from navstream.plugins.nav.readers import READERS
from navstream.plugins.nav.state import read_latest

T0 = START_MS - 1_000
SPOT = "account:binance/spot"
MAIN = "account:binance/main"
EXACT = "868311.144360"
TINY = "0.0000005"  # 5e-7: rounds to 0.00 USD for a person, stays itself everywhere else


def nav_only(**nav: Any) -> dict[str, Any]:
    return {
        "nav": {
            "max_age_s": 120,
            "publish_every_s": 600,
            "alert_every_s": 1,
            "jump_alert_pct": 10,
            "pegs": {"USDT": "1"},
            "routes": {"BTC": "BTC/USDT"},
            **nav,
        }
    }


async def nav_app(make_app: Any, **nav: Any) -> tuple[Any, Consumer]:
    """nav without the risk gate: nobody declares a reader limit."""
    app = make_app(builtins=True, extra=nav_only(**nav), clock=ManualClock(START_MS), disabled=["risk"])
    consumer = Consumer(app)
    await consumer.setup()
    return app, consumer


def balance(amount: str, ts: int, account: str = "spot", asset: str = "USDT") -> dict[str, str]:
    return {"type": "balance", "venue": "binance", "account": account, "asset": asset, "balance": amount, "ts": str(ts)}


def report(ts: int) -> dict[str, str]:
    return {"type": "source_status", "venue": "binance", "source": "binance-spot", "ok": "true", "ts": str(ts)}


async def nav_hook(app: Any, hook: str, **kwargs: Any) -> Any:
    (impl,) = [i for i in hook_impls(app.pm, hook) if i.plugin_name == "nav"]
    return await await_me_maybe(call_impl(impl, {"app": app, **kwargs}))


async def page(app: Any) -> tuple[list[str], dict[str, list[Cell]]]:
    """The nav plugin's NAV table on the status page: column titles, and row key -> cells."""
    section = await nav_hook(app, "navstream_status_page", now_ms=app.clock.now_ms())
    table = section.panels[0].blocks[0]
    assert isinstance(table, Table)
    return [c.title for c in table.columns], {r.key: r.cells for r in table.rows}


async def nav_text(app: Any, capsys: pytest.CaptureFixture[str], as_json: bool = False, **where: str) -> str:
    capsys.readouterr()
    args = argparse.Namespace(venue=where.get("venue"), account=where.get("account"), json=as_json)
    assert await explain.command(app, args) == 0
    return capsys.readouterr().out


def set_clock(app: Any, ms: int) -> None:
    app.clock.advance(ms - app.clock.now_ms())


# --- money: the one format for people, exact for machines ----------------------------------------


async def test_nav_alerts_show_money_grouped_and_fixed_and_the_machine_fields_stay_exact(make_app: Any) -> None:
    app, consumer = await nav_app(make_app)
    await run_step(app, consumer, balance(EXACT, T0), report(T0))
    set_clock(app, T0 + 121_000)  # stale, then back: the recovery names the money
    await run_step(app, consumer)
    alerts = await run_step(app, consumer, balance(EXACT, T0 + 121_000), report(T0 + 121_000), tick=False)
    (recovered,) = [a for a in alerts if a["code"] == "nav_recovered"]
    assert recovered["message"] == "NAV of binance/spot is ok again: 868,311.14 USD"
    alerts = await run_step(app, consumer, balance(TINY, T0 + 121_001), tick=False)
    (drop,) = [a for a in alerts if a["code"] == "nav_drop"]
    assert "fell 100.00% from 868,311.14 USD to 0.00 USD (limit 10%)" in drop["message"]
    assert set(drop) >= {"venue", "account"} and (drop["venue"], drop["account"]) == ("binance", "spot")
    # The exact values, where machines read them: P:nav and the state.
    navs = [f["nav"] for _, f in await app.redis.xrange(app.keys.nav) if f.get("account") == "spot"]
    assert EXACT in navs and navs[-1] == TINY
    assert str((await read_latest(app))[SPOT].nav) == "5E-7"  # the Decimal itself, unrounded
    section = await nav_hook(app, "navstream_status")  # `navstream status` and its --json: exact
    assert {r["name"]: r["nav"] for r in section["scopes"]}["binance/spot"] == TINY
    page_section = await nav_hook(app, "navstream_status_page", now_ms=app.clock.now_ms())
    assert {r["id"]: r["nav"] for r in page_section.fields["nav"]}[SPOT] == TINY  # /api/status


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("-868311.144360", "wallet binance/spot is negative: -868,311.14 USD"),
        ("-" + TINY, "wallet binance/spot is negative: 0.00 USD (exactly -0.0000005)"),
    ],
)
async def test_a_negative_wallet_reads_as_negative_money(make_app: Any, value: str, shown: str) -> None:
    app, consumer = await nav_app(make_app)
    alerts = await run_step(app, consumer, balance(value, T0), report(T0))
    (negative,) = [a for a in alerts if a["code"] == "wallet_negative"]
    assert negative["message"] == shown


async def test_the_page_and_navstream_nav_show_money_in_the_one_format(
    make_app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    app, consumer = await nav_app(make_app)
    await run_step(app, consumer, balance(EXACT, T0), balance(TINY, T0, account="dust"), report(T0))
    _, rows = await page(app)
    assert rows[SPOT][1].text == "868,311.14 USD" and rows["account:binance/dust"][1].text == "0.00 USD"
    assert rows["total"][1].text == "868,311.14 USD"  # 868311.1443605, half-even to cents
    out = await nav_text(app, capsys)
    assert "account binance/spot (unclassified): 868,311.14 USD  status OK" in out
    (usdt,) = [line for line in out.splitlines() if line.startswith("USDT") and EXACT in line]
    assert usdt.split()[1] == EXACT  # the balance explained is the input, exact
    assert usdt.split()[-1] == "868,311.14"  # its value, money in the one format
    scopes = json.loads(await nav_text(app, capsys, as_json=True))
    assert {s["scope"] + s.get("account", ""): s["nav"] for s in scopes}["accountspot"] == EXACT  # --json: exact


# --- one freshness story -------------------------------------------------------------------------


async def test_a_partial_row_shows_its_first_reason(make_app: Any, capsys: pytest.CaptureFixture[str]) -> None:
    app, consumer = await nav_app(make_app)
    entries = [balance("10", T0), balance("1", T0, asset="DOGE"), balance("5", T0, account="main"), report(T0)]
    await run_step(app, consumer, *entries)
    titles, rows = await page(app)
    assert titles == ["scope", "NAV", "status", "why", "inputs age", "evaluated"]
    status, why = rows[SPOT][2], rows[SPOT][3]
    assert (
        status.text == "partial"
        and why.text == "DOGE not valued: no price for DOGE/USD, and no route or peg for DOGE in [nav]"
    )
    assert why.title == "\n".join((await read_latest(app))[SPOT].reasons)  # every reason in the tooltip
    ok_why = rows[MAIN][3]  # an ok row: nothing to say, until the page itself sees it expire
    assert ok_why.text == "" and ok_why.expires_ms == (await read_latest(app))[MAIN].fresh_until
    assert ok_why.expired is not None and ok_why.expired.text.startswith("an input passed its age limit")
    lines = (await nav_text(app, capsys, account="spot")).splitlines()
    assert (
        lines[0].endswith("status PARTIAL")
        and lines[2] == "  why: DOGE not valued: no price for DOGE/USD, and no route or peg for DOGE in [nav]"
    )


async def test_no_reader_limit_is_shown_when_the_risk_gate_is_not_loaded(
    make_app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    app, consumer = await nav_app(make_app)
    await run_step(app, consumer, balance("10", T0), report(T0))
    titles, rows = await page(app)
    assert titles == ["scope", "NAV", "status", "why", "inputs age", "evaluated"]
    assert all(len(cells) == 6 for cells in rows.values())
    assert await app.redis.hlen(app.keys.state(*READERS)) == 0
    out = await nav_text(app, capsys)
    assert "gate" not in out and "vetoes" not in out
    assert all("readers" not in s for s in json.loads(await nav_text(app, capsys, as_json=True)))


async def test_the_gate_limit_shows_per_account_row_and_an_ok_nav_past_it_is_flagged(
    make_app: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """[nav] max_age_s 120 keeps the NAV ok for 2 minutes; the gate ([risk] max_nav_age_s 60)
    refuses it after one: the page and `navstream nav` say both."""
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded(START_MS))
    titles, rows = await page(app)
    assert titles[-1] == "risk gate"
    gate = rows[MAIN][-1]
    assert gate.text == "vetoes at age > 60s" and gate.tone == ""
    assert gate.expires_ms == START_MS + 60_001  # the page flags it itself from then on
    assert gate.expired is not None and gate.expired.tone == "warning"
    assert rows[MAIN][2].text == "ok" and rows[MAIN][2].tone == "ok"
    assert rows["total"][-1].text == "-"  # the gate reads account NAVs only: nothing claimed for the total
    out = await nav_text(app, capsys)
    (main_block,) = [b for b in out.split("\n\n") if b.startswith("account binance/main")]
    assert main_block.splitlines()[1].endswith("; the risk gate vetoes at age > 60s")
    assert "risk gate" not in [b for b in out.split("\n\n") if b.startswith("total")][0]

    set_clock(app, START_MS + 60_001)  # past the gate's limit, within the NAV's own
    await run_step(app, consumer)  # a tick: nav re-evaluates (still ok), the gate refreshes its limit
    assert (await read_latest(app))[MAIN].status == "ok"
    _, rows = await page(app)
    status, gate = rows[MAIN][2], rows[MAIN][-1]
    assert status.text == "ok" and status.tone == "warning"
    assert "the risk gate refuses it: its age 60.001s is past the risk gate's 60s" in status.title
    assert gate.text == "refuses it: older than 60s" and gate.tone == "warning"
    out = await nav_text(app, capsys, account="main")
    assert "; the risk gate REFUSES it: 60s old, past its 60s" in out.splitlines()[1]
    (scope,) = json.loads(await nav_text(app, capsys, as_json=True, account="main"))
    assert scope["readers"] == [
        {"reader": "risk gate", "max_age_ms": 60_000, "age_ms": 60_001, "refuses_for_age": True}
    ]


async def test_the_declared_limit_is_the_stricter_of_the_nav_and_gate_limits(make_app: Any, tmp_path: Path) -> None:
    app, _ = await started(make_app, tmp_path, max_nav_age_s=600)  # the gate allows more than [nav] 120 s
    (limit,), problems = await read_reader_limits(app, app.clock.now_ms())
    assert (limit.reader, limit.max_age_ms, limit.scopes, problems) == ("risk gate", 120_000, ["account"], [])


async def test_a_declaration_nobody_refreshes_is_not_shown(make_app: Any) -> None:
    app, consumer = await nav_app(make_app)
    await run_step(app, consumer, balance("10", T0), report(T0))
    await declare_reader_limit(app, "another reader", 30_000)
    titles, _ = await page(app)
    assert titles[-1] == "another reader"
    set_clock(app, app.clock.now_ms() + app.settings.consumer.heartbeat_ttl_ms + 1)
    titles, _ = await page(app)
    assert "another reader" not in titles  # its consumer stopped declaring: not shown, not invented


async def test_an_unreadable_declaration_is_said_and_shows_no_limit(make_app: Any) -> None:
    app, consumer = await nav_app(make_app)
    await run_step(app, consumer, balance("10", T0), report(T0))
    await app.redis.hset(app.keys.state(*READERS), "broken", '{"reader": "broken", "max_age_ms": -5}')
    section = await nav_hook(app, "navstream_status_page", now_ms=app.clock.now_ms())
    titles = [c.title for c in section.panels[0].blocks[0].columns]
    notes = [b.text for b in section.panels[0].blocks[1:]]
    assert "broken" not in titles
    assert any(n.startswith("A reader's declared NAV age limit is unreadable: broken: ") for n in notes)


@pytest.mark.parametrize(
    ("reader", "age", "scopes"),
    [("", 1, ("account",)), ("x" * 65, 1, ("account",)), ("r", 0, ("account",)), ("r", 1, ("planet",)), ("r", 1, ())],
)
async def test_a_bad_declaration_is_refused(make_app: Any, reader: str, age: int, scopes: tuple[str, ...]) -> None:
    app, _ = await nav_app(make_app)
    with pytest.raises(ValueError, match="reader"):
        await declare_reader_limit(app, reader, age, scopes)


async def test_a_long_scope_name_is_clipped_with_the_whole_name_in_its_tooltip(make_app: Any) -> None:
    app, consumer = await nav_app(make_app)
    long_a = "sub-account-of-the-emerging-markets-desk-" + "ü" * 40 + "-alpha"
    long_b = long_a.replace("alpha", "omega")
    await run_step(app, consumer, balance("10", T0, account=long_a), balance("20", T0, account=long_b), report(T0))
    _, rows = await page(app)
    a, b = rows[f"account:binance/{long_a}"][0], rows[f"account:binance/{long_b}"][0]
    assert len(a.text) == len(b.text) == 32 and "\u2026" in a.text
    assert a.text != b.text  # the tail is kept: two long names of one venue stay apart
    assert a.title == f"binance/{long_a}" and b.title == f"binance/{long_b}"
    assert rows["total"][0].text == "total" and rows["total"][0].title == ""  # short: as it is


@pytest.mark.real_redis
async def test_navstream_nav_in_its_own_process_shows_the_gate_limit_the_consumer_declared(
    make_app: Any, tmp_path: Path, backend: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`navstream nav` runs no plugin startup: the limit comes from the running gate's declaration."""
    if backend.kind != "real":
        pytest.skip("the CLI connects by URL: real Redis only")
    for name in [n for n in os.environ if n.startswith("NAVSTREAM_") and n != "NAVSTREAM_REQUIRE_REDIS"]:
        monkeypatch.delenv(name)
    now = time.time_ns() // 1_000_000
    app, consumer = await started(make_app, tmp_path, clock=ManualClock(now))
    await run_step(app, consumer, *funded(now))
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["nav", "--redis-url", backend.url, "--prefix", backend.prefix])
    out = capsys.readouterr().out
    assert code == 0
    (main_block,) = [b for b in out.split("\n\n") if b.startswith("account binance/main")]
    assert "the risk gate vetoes at age > 60s" in main_block
    assert "100,000.00 USD" in main_block.splitlines()[0]


def test_the_chart_draws_a_failed_nav_as_a_gap_in_the_desks_currency() -> None:
    from navstream import Chart
    from navstream.plugins.nav.report import Latest, panels

    history = {"total": [[1_000, "100.5", "ok"], [2_000, "0", "failed"], [3_000, "101", "stale"]]}
    chart = next(
        b
        for p in panels(Latest(4_000), history, unit="BTC", max_gap_ms=180_000)
        for b in p.blocks
        if isinstance(b, Chart)
    )
    assert chart.series["total"] == [(1_000, "100.5", "ok"), (2_000, None, "critical"), (3_000, "101", "warning")]
    assert chart.unit == "BTC" and chart.max_gap_ms == 180_000
    assert chart.tone_labels == {"ok": "ok", "warning": "stale", "degraded": "partial", "critical": "failed"}


async def test_a_zero_wallet_names_its_nav_in_the_one_format(make_app: Any) -> None:
    """wallet_zero said "NAV reports 0 USD" beside nav_drop's "to 0.00 USD" in the same incident."""
    app, consumer = await nav_app(make_app)
    alerts = await run_step(app, consumer, balance("0", T0), report(T0))
    (zero,) = [a for a in alerts if a["code"] == "wallet_zero"]
    assert zero["message"] == (
        "wallet binance/spot reads 0 in every asset it holds; NAV reports 0.00 USD, nothing is substituted"
    )


@pytest.mark.parametrize(("role", "declared"), [("events", False), ("orders", True), ("all", True)])
async def test_only_a_consumer_that_runs_the_gate_declares_its_limit(
    make_app: Any, tmp_path: Path, role: str, declared: bool
) -> None:
    """A consumer of role ``events`` loads the risk plugin but never decides an order nor ticks
    it: its startup must not declare the gate's limit, or the page shows a limit no running
    reader applies (for a heartbeat TTL after each restart, and over an orders consumer's own)."""
    from support.risk import sections

    app = make_app(
        builtins=True,
        extra=sections(tmp_path),
        clock=ManualClock(START_MS),
        disabled=["source_monitor"],
        consumer={"role": role},
    )
    await Consumer(app).setup()
    limits, _ = await read_reader_limits(app, app.clock.now_ms())
    assert [limit.reader for limit in limits] == (["risk gate"] if declared else [])
