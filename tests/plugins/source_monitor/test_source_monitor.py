"""The built-in source_monitor plugin: failing, recovering and silent sources are never quiet."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support import START_MS, run_step

from navstream import ManualClock, Outputs
from navstream.contract.events import decode_event
from navstream.loop.consumer import Consumer
from navstream.plugin.calls import call_impl
from navstream.plugin.calls import impls as hook_impls
from navstream.plugin.calls import resolve as await_me_maybe
from navstream.store.writer import BatchWrite, WriteError

FAST = {"block_ms": 5, "claim_idle_ms": 40, "tick_ms": 50}
SILENCE_30S = {"source_monitor": {"max_silence_s": 30}}
SPOT = ("source", "binance", "spot", "*")


def status(ok: bool, ts: int, error: str = "", source: str = "spot") -> dict[str, str]:
    fields = {
        "type": "source_status",
        "venue": "binance",
        "source": source,
        "ok": "true" if ok else "false",
        "ts": str(ts),
    }
    if error:
        fields["error"] = error
    return fields


async def source_alerts(app: Any) -> list[dict[str, str]]:
    return [f for _, f in await app.redis.xrange(app.keys.alerts) if f["code"].startswith("source_")]


async def run(app: Any, consumer: Consumer, *entries: dict[str, str], tick: bool = True) -> list[dict[str, str]]:
    """Publish, handle, tick (unless told not to), and return the source alerts this step raised."""
    return [a for a in await run_step(app, consumer, *entries, tick=tick) if a["code"].startswith("source_")]


async def started(make_app: Any, **kw: Any) -> tuple[Any, Consumer]:
    app = make_app(builtins=True, **kw)
    consumer = Consumer(app)
    await consumer.setup()
    return app, consumer


async def call_hook(app: Any, hook: str, **kwargs: Any) -> Any:
    """Call source_monitor's implementation of ``hook`` alone, as the loop would."""
    (impl,) = [i for i in hook_impls(app.pm, hook) if i.plugin_name == "source_monitor"]
    return await await_me_maybe(call_impl(impl, {"app": app, **kwargs}))


def codes(alerts: list[dict[str, str]]) -> list[str]:
    return [a["code"] for a in alerts]


async def test_failure_recovery_and_state(make_app: Any) -> None:
    app, consumer = await started(make_app)
    assert await run(app, consumer, status(True, START_MS - 1000)) == []
    (failed,) = await run(app, consumer, status(False, START_MS, "HTTP 429 Too Many Requests"))
    assert failed["code"] == "source_failed" and failed["severity"] == "warning"
    assert failed["venue"] == "binance" and failed["source"] == "spot" and "429" in failed["message"]
    state = await app.redis.hgetall(app.keys.state(*SPOT))
    assert state["ok"] == "false" and state["last_ok_ts"] == str(START_MS - 1000)
    assert state["last_error_ts"] == str(START_MS) and "429" in state["error"]
    assert await app.redis.hgetall(app.keys.state("sources")) == {"source:binance:spot:*": "1"}

    assert await run(app, consumer, status(False, START_MS + 100, "429")) == []  # no repeat
    (recovered,) = await run(app, consumer, status(True, START_MS + 200))
    assert recovered["code"] == "source_recovered" and recovered["severity"] == "info"


async def test_an_older_report_is_ignored(make_app: Any) -> None:
    app, consumer = await started(make_app)
    await run(app, consumer, status(True, START_MS))
    assert await run(app, consumer, status(False, START_MS - 5000, "stale retry")) == []
    assert await app.redis.hget(app.keys.state(*SPOT), "ok") == "true"


async def test_a_duplicate_of_the_report_redis_holds_changes_nothing(make_app: Any) -> None:
    app, consumer = await started(make_app, extra=SILENCE_30S)
    await run(app, consumer, status(True, START_MS))
    app.clock.advance(31_000)
    assert codes(await run(app, consumer)) == ["source_silent"]
    assert await run(app, consumer, status(True, START_MS)) == []  # delivered again, late
    assert await app.redis.hget(app.keys.state(*SPOT), "silent") == "true"


async def test_a_batch_is_judged_in_ts_order(make_app: Any) -> None:
    app, consumer = await started(make_app)
    await run(app, consumer, status(True, START_MS - 1000))
    # one batch, out of order: the failure at START_MS happened, then the source came back
    alerts = await run(app, consumer, status(True, START_MS + 1000), status(False, START_MS, "502"))
    assert codes(alerts) == ["source_failed", "source_recovered"]
    state = await app.redis.hgetall(app.keys.state(*SPOT))
    assert (state["ok"], state["ts"]) == ("true", str(START_MS + 1000))
    assert (state["last_ok_ts"], state["last_error_ts"]) == (str(START_MS + 1000), str(START_MS))


async def test_the_same_report_twice_in_a_batch_alerts_once(make_app: Any) -> None:
    app, consumer = await started(make_app)
    await run(app, consumer, status(True, START_MS - 1000))
    alerts = await run(app, consumer, status(False, START_MS, "down"), status(False, START_MS, "down"))
    assert codes(alerts) == ["source_failed"]


async def test_a_silent_source_is_alerted_once_on_time(make_app: Any) -> None:
    app, consumer = await started(make_app, extra=SILENCE_30S)
    await run(app, consumer, status(True, START_MS))
    app.clock.advance(29_000)
    assert await run(app, consumer) == []
    app.clock.advance(2_000)  # no events at all: the tick alone must notice
    (silent,) = await run(app, consumer)
    assert silent["code"] == "source_silent" and "31s" in silent["message"]
    assert await run(app, consumer) == []
    await app.redis.delete(app.keys.alerts)  # the state remembers it was alerted, not the stream
    app.clock.advance(60_000)
    assert await run(app, consumer) == []
    assert await app.redis.hget(app.keys.state(*SPOT), "silent") == "true"
    (back,) = await run(app, consumer, status(True, START_MS + 91_000), tick=False)
    assert back["code"] == "source_recovered"
    assert await app.redis.hget(app.keys.state(*SPOT), "silent") == "false"


async def test_a_consumer_that_did_not_see_a_failure_knows_it_from_redis(make_app: Any) -> None:
    app, consumer = await started(make_app, name="first")
    other, second = await started(make_app, name="second")  # started before the failure
    (failed,) = await run(app, consumer, status(False, START_MS, "down"))
    assert failed["code"] == "source_failed"
    assert await run(other, second, status(False, START_MS + 10, "down")) == []  # no repeat
    assert codes(await run(other, second, status(True, START_MS + 20), tick=False)) == ["source_recovered"]


async def test_two_consumers_alternating_never_miss_a_transition(make_app: Any) -> None:
    clock = ManualClock(START_MS + 8_000)  # every report below is from the last 8 s, none from the future
    a_app, a = await started(make_app, name="a", clock=clock)
    assert await run(a_app, a, status(True, START_MS)) == []
    assert codes(await run(a_app, a, status(False, START_MS + 1000, "down"))) == ["source_failed"]
    b_app, b = await started(make_app, name="b", clock=clock)  # starts while the source fails
    steps = [  # (consumer, report, alerts it must raise)
        ("a", status(True, START_MS + 2000), ["source_recovered"]),
        ("b", status(False, START_MS + 3000, "down"), ["source_failed"]),
        ("a", status(True, START_MS + 4000), ["source_recovered"]),
        ("b", status(True, START_MS + 5000), []),
        ("b", status(False, START_MS + 6000, "down"), ["source_failed"]),
        ("a", status(False, START_MS + 7000, "down"), []),
        ("a", status(True, START_MS + 8000), ["source_recovered"]),
    ]
    for who, report, expected in steps:
        app, consumer = (a_app, a) if who == "a" else (b_app, b)
        # judged by the batch itself, not left for a tick to notice
        assert codes(await run(app, consumer, report, tick=False)) == expected, (who, report)
    assert await a_app.redis.hget(a_app.keys.state(*SPOT), "ok") == "true"
    assert await run(a_app, a) == [] and await run(b_app, b) == []


async def test_a_tick_does_not_call_silent_a_source_that_reported_to_another_consumer(make_app: Any) -> None:
    clock = ManualClock(START_MS)
    a_app, a = await started(make_app, name="a", clock=clock, extra=SILENCE_30S)
    await run(a_app, a, status(True, START_MS))
    b_app, b = await started(make_app, name="b", clock=clock, extra=SILENCE_30S)
    clock.advance(29_000)
    assert await run(a_app, a, status(True, START_MS + 29_000)) == []  # reaches A only
    clock.advance(2_000)
    assert await run(b_app, b) == []  # B's tick: it reported 2 s ago
    assert await b_app.redis.hget(b_app.keys.state(*SPOT), "silent") == "false"
    clock.advance(29_000)  # now it has been silent for 31 s: any consumer's tick says so
    (silent,) = await run(b_app, b)
    assert silent["code"] == "source_silent" and "31s" in silent["message"]
    assert await run(a_app, a) == []  # and the other does not repeat it


async def test_a_silence_mark_never_overrides_a_newer_report(make_app: Any) -> None:
    app, consumer = await started(make_app, extra=SILENCE_30S)
    await run(app, consumer, status(True, START_MS))
    app.clock.advance(31_000)
    out = Outputs(app.clock.now_ms())
    await call_hook(app, "navstream_tick", now_ms=app.clock.now_ms(), out=out)  # judged silent...
    assert [a.code for a in out.alerts] == ["source_silent"]
    assert await run(app, consumer, status(True, START_MS + 31_000)) == []  # ...a report lands...
    await consumer.writer.write(BatchWrite(out))  # ...and then the tick's writes
    state = await app.redis.hgetall(app.keys.state(*SPOT))
    assert (state["ts"], state["silent"]) == (str(START_MS + 31_000), "false")
    # the silence alert did go out, for a source that is fine: the next tick says so
    assert codes(await run(app, consumer)) == ["source_recovered"]
    assert await run(app, consumer) == []


@pytest.mark.parametrize("first", ["failing", "ok"])
@pytest.mark.parametrize("written", ["in order", "reversed"])
async def test_consumers_racing_on_a_source_miss_no_transition(make_app: Any, first: str, written: str) -> None:
    a_app, a = await started(make_app, name="a")
    b_app, b = await started(make_app, name="b")
    fine = first == "ok"
    start = codes(await run(a_app, a, status(fine, START_MS, "" if fine else "down")))
    assert start == ([] if fine else ["source_failed"])
    # A's batch flips the source, B's flips it back; both read the state before either writes
    reports = [
        status(not fine, START_MS + 1000, "down" if fine else ""),
        status(fine, START_MS + 2000, "" if fine else "down"),
    ]
    writes = []
    for app, consumer, report in ((a_app, a, reports[0]), (b_app, b, reports[1])):
        out = Outputs(app.clock.now_ms())
        await call_hook(app, "navstream_events", events=[decode_event(report)], out=out)
        writes.append((consumer, out))
    for consumer, out in writes if written == "in order" else writes[::-1]:
        await consumer.writer.write(BatchWrite(out))
    flip, flop = ("source_failed", "source_recovered") if fine else ("source_recovered", "source_failed")
    assert codes(await source_alerts(a_app)) == start + [flip]  # B judged against the old state
    assert codes(await run(b_app, b)) == [flop]  # the next tick raises what the race hid
    assert await run(a_app, a) == [] and await run(b_app, b) == []
    assert await a_app.redis.hget(a_app.keys.state(*SPOT), "ok") == ("true" if fine else "false")


async def test_a_failed_batch_write_is_redelivered_and_still_alerts(make_app: Any) -> None:
    app, consumer = await started(make_app, consumer=FAST)
    assert await run(app, consumer, status(True, START_MS - 1000)) == []
    await app.redis.delete(app.keys.alerts)
    await app.redis.set(app.keys.alerts, "not a stream")  # the batch's alert cannot be written
    await app.redis.xadd(app.keys.events, status(False, START_MS, "HTTP 502"))
    with pytest.raises(WriteError):
        await consumer.step(block_ms=1)
    await app.redis.delete(app.keys.alerts)
    await asyncio.sleep(0.06)
    assert await consumer.reclaim() == 1
    (failed,) = await source_alerts(app)
    assert failed["code"] == "source_failed" and "502" in failed["message"]
    assert await app.redis.hget(app.keys.state(*SPOT), "ok") == "false"
    assert (await app.redis.xpending(app.keys.events, app.group))["pending"] == 0


async def test_a_failed_tick_write_alerts_silence_on_the_next_tick(make_app: Any) -> None:
    app, consumer = await started(make_app, extra=SILENCE_30S)
    await run(app, consumer, status(True, START_MS))
    app.clock.advance(31_000)
    await app.redis.delete(app.keys.alerts)
    await app.redis.set(app.keys.alerts, "not a stream")  # the tick's alert cannot be written
    with pytest.raises(WriteError):
        await consumer.tick()
    await app.redis.delete(app.keys.alerts)
    (silent,) = await run(app, consumer)
    assert silent["code"] == "source_silent"
    assert await run(app, consumer) == []
    assert await app.redis.hget(app.keys.state(*SPOT), "silent") == "true"


async def test_sources_written_before_the_registry_are_registered_at_startup(make_app: Any) -> None:
    app = make_app(builtins=True, extra=SILENCE_30S)
    await app.redis.hset(
        app.keys.state(*SPOT),
        mapping={
            "ok": "true",
            "error": "",
            "venue": "binance",
            "source": "spot",
            "silent": "false",
            "ts": str(START_MS),
            "last_ok_ts": str(START_MS),
        },
    )
    consumer = Consumer(app)
    await consumer.setup()
    assert await app.redis.hgetall(app.keys.state("sources")) == {"source:binance:spot:*": "1"}
    app.clock.advance(31_000)
    (silent,) = await run(app, consumer)
    assert silent["code"] == "source_silent"


async def test_an_account_has_its_own_state_and_is_named_in_alerts(make_app: Any) -> None:
    app, consumer = await started(make_app, extra=SILENCE_30S)
    await run(app, consumer, status(True, START_MS))
    (failed,) = await run(app, consumer, {**status(False, START_MS, "401"), "account": "main"})
    assert (failed["code"], failed["account"]) == ("source_failed", "main")
    assert await app.redis.hget(app.keys.state("source", "binance", "spot", "main"), "account") == "main"
    assert await app.redis.hget(app.keys.state(*SPOT), "ok") == "true"
    app.clock.advance(31_000)
    alerts = await run(app, consumer)
    assert sorted((a["code"], a.get("account", "-")) for a in alerts) == [
        ("source_silent", "-"),
        ("source_silent", "main"),
    ]


async def test_status_section_lists_sources_with_age(make_app: Any) -> None:
    app, consumer = await started(make_app)
    await run(app, consumer, status(False, START_MS - 4000, "timeout"), status(True, START_MS, source="futures"))
    section = await call_hook(app, "navstream_status")
    assert [(s["source"], s["ok"], s["age_s"]) for s in section["sources"]] == [
        ("futures", True, 0.0),
        ("spot", False, 4.0),
    ]
    assert section["sources"][1]["error"] == "timeout"
