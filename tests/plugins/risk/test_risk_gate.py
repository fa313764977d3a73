"""The risk gate end to end (issue 6): events and orders through the real consumer loop, with the
nav plugin computing the NAV it rests on, on fakeredis and a real Redis.

Each test drives time with a ManualClock, so "one millisecond past the limit" is exact. The
rules themselves are tested one by one in test_risk_decide.py; here: that the gate reads the
right state, answers every order once and forever the same way, keeps trading state in Redis
for every consumer, logs what it decided, and says why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from support import START_MS, run_step
from support.risk import (
    T0,
    balance,
    cli,
    config_toml,
    decide,
    funded,
    gate_of,
    one,
    open_gate_of,
    order,
    position,
    reasons,
    sections,
    source,
    started,
)

from navstream.app import ManualClock
from navstream.loop.consumer import Consumer, StartupError
from navstream.plugins.risk import AuditRecord
from navstream.plugins.risk.state import DESK, TRADING, compare_and_set, read_records
from navstream.plugins.risk.trading import TradingRecord

LIMIT_MS = 60_000


# --- freshness and status ---------------------------------------------------------------------


async def test_a_fresh_ok_nav_approves_with_the_nav_it_used(make_app: Any, tmp_path: Path) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded())
    d = await one(app, consumer, order("o-1"))
    assert d == {
        "order_id": "o-1",
        "decision": "approve",
        "reasons": "",
        "trading_state": "active",
        "nav": "100000",
        "nav_status": "ok",
        "nav_age_ms": str(START_MS - T0),
        "ts": str(START_MS),
    }


async def test_nav_one_millisecond_past_the_limit_vetoes(make_app: Any, tmp_path: Path) -> None:
    clock = ManualClock(START_MS)
    app, consumer = await started(make_app, tmp_path, clock=clock)
    await run_step(app, consumer, *funded(ts=START_MS))
    clock.advance(LIMIT_MS)  # exactly at the limit: still fresh
    at_limit = await one(app, consumer, order("at-limit"))
    assert (at_limit["decision"], at_limit["nav_age_ms"]) == ("approve", str(LIMIT_MS))
    clock.advance(1)
    await run_step(app, consumer, source(True, clock.now_ms()))  # the source itself reports on time
    past = await one(app, consumer, order("past"))
    assert (past["decision"], reasons(past), past["nav_age_ms"]) == ("veto", ["nav_stale"], str(LIMIT_MS + 1))
    assert past["nav_status"] == "ok"  # the nav plugin's own limit (120 s) is not reached: the gate's is


async def test_no_events_at_all_for_a_while_vetoes_on_time(make_app: Any, tmp_path: Path) -> None:
    clock = ManualClock(START_MS)
    app, consumer = await started(make_app, tmp_path, clock=clock)
    await run_step(app, consumer, *funded(ts=START_MS))
    assert (await one(app, consumer, order("before")))["decision"] == "approve"
    for _ in range(125):  # two minutes of ticks and nothing else
        clock.advance(1_000)
        await consumer.tick()
    d = await one(app, consumer, order("after"))
    assert d["decision"] == "veto"
    assert reasons(d)[:2] == ["nav_stale", "source_unhealthy"]  # the NAV turned stale; the source is silent
    assert d["nav_status"] == "stale" and int(d["nav_age_ms"]) >= 125_000


async def test_missing_failed_and_partial_navs_veto_with_their_codes(make_app: Any, tmp_path: Path) -> None:
    app, consumer = await started(make_app, tmp_path)
    missing = await one(app, consumer, order("none-yet"))
    assert (missing["decision"], missing["nav_status"], missing["nav"]) == ("veto", "missing", "")
    assert reasons(missing)[0] == "nav_missing"
    # ARB has no price: the account is partial, not ok
    await run_step(app, consumer, *funded(), balance("ARB", "1000", T0))
    partial = await one(app, consumer, order("partial"))
    assert partial["nav_status"] == "partial" and "nav_partial" in reasons(partial)


async def test_a_positions_source_failure_vetoes_although_balances_are_fresh(make_app: Any, tmp_path: Path) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded(ts=START_MS))
    assert (await one(app, consumer, order("ok")))["decision"] == "approve"
    await run_step(
        app,
        consumer,
        source(False, START_MS, name="binance-positions", error="HTTP 503"),
        balance("USDT", "100000", START_MS),
    )
    d = await one(app, consumer, order("blind"))
    assert d["decision"] == "veto" and "source_unhealthy" in reasons(d)


# --- trading state ----------------------------------------------------------------------------


async def set_record(app: Any, member: str, record: TradingRecord) -> None:
    seen = (await read_records(app)).get(member, ("", None))[0]
    assert await compare_and_set(app, member, seen, record)


async def test_halted_lets_nothing_through_not_even_a_reducing_order(make_app: Any, tmp_path: Path) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded(), position("BTCUSDT", "1", T0))
    await set_record(app, DESK, TradingRecord("halted", "exchange outage", "ops:alice", START_MS))
    for o in (order("open"), order("close", side="sell", qty="0.5")):
        d = await one(app, consumer, o)
        assert (d["decision"], d["trading_state"]) == ("veto", "halted")
        assert "trading_halted" in reasons(d)


async def test_reducing_lets_only_orders_that_shrink_a_position_through(make_app: Any, tmp_path: Path) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded(), position("BTCUSDT", "1", T0))
    member = "binance/main"
    await set_record(app, member, TradingRecord("reducing", "cut risk", "ops:bob", START_MS))
    shrink = await one(app, consumer, order("shrink", side="sell", qty="0.5"))
    assert (shrink["decision"], shrink["trading_state"]) == ("approve", "reducing")
    grow = await one(app, consumer, order("grow", side="buy", qty="0.01"))
    assert (grow["decision"], reasons(grow)) == ("veto", ["reduce_only"])
    flip = await one(app, consumer, order("flip", side="sell", qty="1.5"))
    assert flip["decision"] == "veto" and "reduce_only" in reasons(flip)


async def test_drawdown_moves_the_state_and_recovery_does_not_resume_without_ops(
    make_app: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = ManualClock(START_MS)
    app, consumer = await started(make_app, tmp_path, clock=clock)
    await run_step(app, consumer, *funded(ts=START_MS))
    clock.advance(1_000)
    alerts = await run_step(app, consumer, balance("USDT", "94000", clock.now_ms()))  # 6 % down
    moved = sorted((a["code"], a.get("account", "")) for a in alerts if a["code"].startswith("trading_"))
    assert moved == [("trading_reducing", ""), ("trading_reducing", "main")]  # the desk, the account
    records = await read_records(app)
    assert records["binance/main"][1].state == "reducing" and records["binance/main"][1].by == "drawdown"
    assert records[DESK][1].state == "reducing"  # the desk's total fell as much
    assert (await one(app, consumer, order("open")))["decision"] == "veto"
    clock.advance(1_000)
    await run_step(app, consumer, balance("USDT", "89000", clock.now_ms()))  # 11 %: halted
    d = await one(app, consumer, order("halted"))
    assert (d["trading_state"], "trading_halted" in reasons(d)) == ("halted", True)
    clock.advance(1_000)
    await run_step(app, consumer, balance("USDT", "120000", clock.now_ms()))  # recovered, and more
    d = await one(app, consumer, order("recovered"))
    assert (d["decision"], d["trading_state"]) == ("veto", "halted")
    # ops resume, with a reason and a name: trading is active, the high-water mark restarts
    for member in ("--account", "main"), ():  # the account, then the desk
        code = await _risk_cli(app, "resume", *member, "--reason", "loss understood", "--by", "carol")
        assert code == 0
    assert "is now active (by ops:carol: loss understood)" in capsys.readouterr().out
    d = await one(app, consumer, order("resumed"))
    assert (d["decision"], d["trading_state"]) == ("approve", "active")


async def _risk_cli(app: Any, *args: str) -> int:
    """``navstream risk ...`` against this app's Redis (the command's own handler)."""
    import argparse

    from navstream.plugins.risk import ops

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    ops.register_commands(lambda name, handler, **kw: sub.add_parser(name, **kw))
    return await ops.command(app, parser.parse_args(["risk", *args]))


async def test_ops_commands_record_who_when_and_why_and_status_shows_them(
    make_app: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded())
    assert await _risk_cli(app, "halt", "--account", "main", "--reason", "venue incident", "--by", "dave") == 0
    assert await _risk_cli(app, "reduce", "--reason", "month end", "--by", "erin") == 0
    from navstream.ops.admin import collect_status  # the data behind `navstream status`

    status = await collect_status(app)
    rows = {r["scope"]: r for r in status["plugins"]["risk"]["trading"]}
    assert rows["binance/main"]["state"] == "halted" and rows["binance/main"]["by"] == "ops:dave"
    assert rows["binance/main"]["reason"] == "venue incident" and rows["binance/main"]["since"]
    assert rows["desk"]["state"] == "reducing" and rows["desk"]["by"] == "ops:erin"
    codes = [f["code"] for _, f in await app.redis.xrange(app.keys.alerts)]
    assert codes.count("trading_state_set") == 2
    capsys.readouterr()
    # no reason: refused by the parser; an unknown account: refused with a message
    with pytest.raises(SystemExit):
        await _risk_cli(app, "halt", "--account", "main")
    assert await _risk_cli(app, "halt", "--account", "nobody", "--reason", "x", "--by", "f") == 2
    assert "no account 'nobody'" in capsys.readouterr().err


async def test_a_tick_never_overwrites_an_operators_change_it_did_not_see(make_app: Any, tmp_path: Path) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded())
    records = await read_records(app)
    seen, _ = records["binance/main"]
    assert await compare_and_set(app, "binance/main", seen, TradingRecord("halted", "ops", "ops:x", START_MS))
    # a tick that read before the operator's write must lose
    assert not await compare_and_set(app, "binance/main", seen, TradingRecord("active", high_water="1"))
    assert (await read_records(app))["binance/main"][1].state == "halted"


async def test_an_unreadable_trading_record_halts_that_scope_and_says_so(make_app: Any, tmp_path: Path) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded())
    await app.redis.hset(app.keys.state(TRADING), DESK, "{not json")
    d = await one(app, consumer, order("o"))
    assert (d["decision"], d["trading_state"]) == ("veto", "halted")


# --- once and forever the same answer -----------------------------------------------------------


async def test_an_order_id_sent_again_gets_the_first_answer_even_after_the_state_changed(
    make_app: Any, tmp_path: Path
) -> None:
    clock = ManualClock(START_MS)
    app, consumer = await started(make_app, tmp_path, clock=clock)
    await run_step(app, consumer, *funded(ts=START_MS))
    first = await one(app, consumer, order("same"))
    clock.advance(LIMIT_MS + 1)  # now the NAV is too old: a new decision would veto
    twice = await decide(app, consumer, order("same"), order("same"), order("fresh"))
    assert twice[0] == first and twice[1] == first  # sent again later (a new ts): the same order
    assert twice[2]["decision"] == "veto"
    assert first["decision"] == "approve"
    (reused,) = await decide(app, consumer, order("same", qty="99"))  # the id, with other content
    assert (reused["decision"], reasons(reused)) == ("veto", ["order_id_reused"])


async def test_a_bad_order_with_an_id_is_vetoed_and_one_without_goes_to_the_dlq(make_app: Any, tmp_path: Path) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded())
    (d,) = await decide(app, consumer, order("broken", qty="lots"), {"type": "order", "qty": "1", "ts": str(START_MS)})
    assert (d["order_id"], d["decision"], reasons(d)) == ("broken", "veto", ["bad_order"])
    dlq = [f for _, f in await app.redis.xrange(app.keys.dlq)]
    assert len(dlq) == 1 and "order_id" in dlq[0]["dlq_error"]


async def test_unknown_symbols_and_unknown_prices_veto(make_app: Any, tmp_path: Path) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded())
    sym = await one(app, consumer, order("sym", symbol="WHATEVER"))
    assert "symbol_unknown" in reasons(sym)
    unpriced = await one(app, consumer, order("eth", symbol="ETHUSDT"))
    assert "price_unknown" in reasons(unpriced)
    priced = await one(app, consumer, order("eth-limit", symbol="ETHUSDT", price="3000"))
    assert reasons(priced) == ["price_unknown"]  # its own price is not enough: no market to size it by


async def test_orders_per_venue_per_minute_count_approvals_across_consumers(make_app: Any, tmp_path: Path) -> None:
    clock = ManualClock(START_MS)
    app, consumer = await started(make_app, tmp_path, clock=clock, max_orders_per_minute=2)
    other, second = await started(make_app, tmp_path, clock=clock, name="other", max_orders_per_minute=2)
    await run_step(app, consumer, *funded(ts=START_MS))
    assert [d["decision"] for d in await decide(app, consumer, order("a"), order("b"), order("c"))] == [
        "approve",
        "approve",
        "veto",
    ]
    d = await one(other, second, order("d"))
    assert reasons(d) == ["rate_limited"]  # the other consumer sees the same window
    clock.advance(LIMIT_MS)  # the first two leave the window (the NAV is exactly at its limit)
    assert (await one(other, second, order("e")))["decision"] == "approve"


async def test_decisions_are_pruned_after_their_retention(make_app: Any, tmp_path: Path) -> None:
    clock = ManualClock(START_MS)
    app, consumer = await started(make_app, tmp_path, clock=clock, decision_retention_s=60)
    await run_step(app, consumer, *funded(ts=START_MS))
    await decide(app, consumer, order("old"))
    clock.advance(30_000)
    await decide(app, consumer, order("young"))
    clock.advance(31_000)
    await consumer.tick()
    stored = await app.redis.hkeys(app.keys.state("risk", "decisions"))
    assert stored == ["young"]
    assert await app.redis.zrange(app.keys.state("risk", "decided"), 0, -1) == ["young"]


# --- audit --------------------------------------------------------------------------------------


async def test_every_decision_is_logged_with_its_inputs_and_replays_the_same(
    make_app: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded(), position("BTCUSDT", "0.5", T0))
    decisions = await decide(
        app, consumer, order("a"), order("b", qty="5"), order("c", qty="x"), order("d", side="sell", qty="0.2")
    )
    gate = open_gate_of(app)
    path = gate.audit.path
    await consumer.shutdown()  # closes the log: every record written
    assert gate_of(app) is None  # shutdown let go of it
    records = [msgspec.json.decode(line, type=AuditRecord) for line in path.read_bytes().splitlines()]
    assert [{k: v for k, v in r.decision.fields().items() if k != "order_hash"} for r in records] == decisions
    assert all(r.rules == 3 for r in records)
    assert [len(r.input_hash) for r in records] == [64, 64, 0, 64]
    assert records[2].invalid and records[2].fields["qty"] == "x"
    assert records[0].inputs is not None and records[0].inputs.quotes  # BTC/USDT was consulted
    config_file = tmp_path / "navstream.toml"
    nav, risk = sections(tmp_path)["nav"], sections(tmp_path)["risk"]
    config_file.write_text(config_toml(nav, risk))
    assert await cli("risk", "replay", "--config", str(config_file), str(path)) == 0
    assert "replayed 4 decisions: 4 the same, 0 different" in capsys.readouterr().out
    # a stricter rule: the replay names the decision that would change, and exits 1
    config_file.write_text(config_toml(nav, {**risk, "max_order_notional": "1000"}))
    assert await cli("risk", "replay", "--config", str(config_file), "--json", str(path)) == 1
    report = json.loads(capsys.readouterr().out)
    # b was vetoed anyway (same reasons); a and d (a reducing sell of 10,000) now exceed it
    assert [d["order_id"] for d in report["differences"]] == ["a", "d"]
    assert [d["now"]["reasons"] for d in report["differences"]] == ["order_notional"] * 2
    # an edited record is reported, not trusted
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace('"qty":"0.1"', '"qty":"0.2"')
    path.write_text("\n".join(lines) + "\n")
    config_file.write_text(config_toml(nav, risk))
    assert await cli("risk", "replay", "--config", str(config_file), str(path)) == 1
    assert "input hash does not match" in capsys.readouterr().out
    assert await cli("risk", "replay", "--config", str(config_file), str(tmp_path / "nope.jsonl")) == 2


async def test_an_audit_shortfall_is_alerted_and_the_loop_keeps_deciding(make_app: Any, tmp_path: Path) -> None:
    app, consumer = await started(make_app, tmp_path)
    await run_step(app, consumer, *funded())
    gate = open_gate_of(app)
    gate.audit.encode = lambda record: (_ for _ in ()).throw(OSError(28, "No space left on device"))
    decisions = await decide(app, consumer, order("a"), order("b"), tick=False)
    assert [d["decision"] for d in decisions] == ["approve", "approve"]
    gate.audit.close()  # the writer thread has met both records
    alerts = await run_step(app, consumer)
    (short,) = [a for a in alerts if a["code"] == "audit_shortfall"]
    assert short["severity"] == "critical" and "missing 2 decisions" in short["message"]
    assert "No space left on device" in short["message"]
    assert [a for a in await run_step(app, consumer) if a["code"] == "audit_shortfall"] == []  # told once
    beat = await app.redis.hgetall(app.keys.heartbeat(app.consumer_name))
    assert (beat["health"], beat["risk.status"], beat["risk.audit_missing"]) == ("degraded", "degraded", "2")
    assert "audit log missing 2 decisions" in beat["health_reasons"]


async def test_the_gate_refuses_to_start_without_its_audit_log_or_the_nav_plugin(make_app: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    app = make_app(
        builtins=True, extra=sections(tmp_path, audit_dir=str(blocker / "audit")), disabled=["source_monitor"]
    )
    with pytest.raises(StartupError, match="plugin 'risk' failed to start"):
        await Consumer(app).setup()
    app = make_app(builtins=True, extra={"risk": {"audit_dir": str(tmp_path)}}, disabled=["source_monitor", "nav"])
    with pytest.raises(StartupError, match="nav plugin is not loaded"):
        await Consumer(app).setup()


@pytest.mark.real_redis
async def test_redelivery_to_another_consumer_yields_identical_decisions(
    make_app: Any, real_backend: Any, tmp_path: Path
) -> None:
    """On a real Redis: consumer A decides a mix of orders; then the state changes (the desk is
    halted, the NAV ages past the limit) and every order is delivered again, to consumer B,
    through the group itself (XGROUP SETID 0): B answers each exactly as A did."""
    clock = ManualClock(START_MS)
    kw = {
        "builtins": True,
        "extra": sections(tmp_path),
        "clock": clock,
        "disabled": ["source_monitor"],
        "on": real_backend,
    }
    a_app = make_app(name="consumer-a", **kw)
    a = Consumer(a_app)
    await a.setup()
    await run_step(a_app, a, *funded(ts=START_MS), position("BTCUSDT", "1", START_MS))
    sent = [
        order("r-1"),
        order("r-2", qty="50"),
        order("r-3", side="sell", qty="0.5"),
        order("r-4", symbol="NOPE"),
        order("r-5", qty="bad"),
    ]
    first = await decide(a_app, a, *sent)
    assert [d["decision"] for d in first] == ["approve", "veto", "approve", "veto", "veto"]
    await set_record(a_app, DESK, TradingRecord("halted", "after the fact", "ops:test", START_MS))
    clock.advance(10 * LIMIT_MS)
    await a_app.raw.xgroup_setid(a_app.keys.orders, a_app.group, id="0")
    b_app = make_app(name="consumer-b", **kw)
    b = Consumer(b_app)
    await b.setup()
    again = await decide(b_app, b)  # nothing new sent: only the redelivered entries
    assert again == first
    pending = await b_app.raw.xpending(b_app.keys.orders, b_app.group)
    assert pending["pending"] == 0  # all acknowledged again
    fresh = await one(b_app, b, order("r-6"))
    assert (fresh["decision"], fresh["trading_state"]) == ("veto", "halted")  # a new id sees the new state
