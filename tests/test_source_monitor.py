"""The built-in source_monitor plugin: failing, recovering and silent sources are never quiet."""

from __future__ import annotations

from typing import Any

from conftest import START_MS

from navstream.consumer import Consumer
from navstream.pluginmanager import await_me_maybe, call_impl, hook_impls


def status(ok: bool, ts: int, error: str = "", source: str = "spot") -> dict[str, str]:
    fields = {"type": "source_status", "venue": "binance", "source": source, "ok": "true" if ok else "false",
              "ts": str(ts)}
    if error:
        fields["error"] = error
    return fields


async def run(app: Any, consumer: Consumer, *entries: dict[str, str]) -> list[dict[str, str]]:
    """Publish, handle, and return the alerts raised by this step."""
    before = await app.redis.xlen(app.keys.alerts)
    for e in entries:
        await app.redis.xadd(app.keys.events, e)
    while await consumer.step(block_ms=1):
        pass
    await consumer.tick()
    alerts = [f for _, f in await app.redis.xrange(app.keys.alerts)]
    return [a for a in alerts[before:] if a["code"].startswith("source_")]


async def started(make_app: Any, **kw: Any) -> tuple[Any, Consumer]:
    app = make_app(builtins=True, **kw)
    consumer = Consumer(app)
    await consumer.setup()
    return app, consumer


async def test_failure_recovery_and_state(make_app: Any) -> None:
    app, consumer = await started(make_app)
    assert await run(app, consumer, status(True, START_MS - 1000)) == []
    (failed,) = await run(app, consumer, status(False, START_MS, "HTTP 429 Too Many Requests"))
    assert failed["code"] == "source_failed" and failed["severity"] == "warning"
    assert failed["venue"] == "binance" and failed["source"] == "spot" and "429" in failed["message"]
    state = await app.redis.hgetall(app.keys.state("source", "binance", "spot", "*"))
    assert state["ok"] == "false" and state["last_ok_ts"] == str(START_MS - 1000)
    assert state["last_error_ts"] == str(START_MS) and "429" in state["error"]

    assert await run(app, consumer, status(False, START_MS + 100, "429")) == []  # no repeat
    (recovered,) = await run(app, consumer, status(True, START_MS + 200))
    assert recovered["code"] == "source_recovered" and recovered["severity"] == "info"


async def test_an_older_report_is_ignored(make_app: Any) -> None:
    app, consumer = await started(make_app)
    await run(app, consumer, status(True, START_MS))
    assert await run(app, consumer, status(False, START_MS - 5000, "stale retry")) == []
    assert await app.redis.hget(app.keys.state("source", "binance", "spot", "*"), "ok") == "true"


async def test_a_silent_source_is_alerted_once_on_time(make_app: Any) -> None:
    app, consumer = await started(make_app, extra={"source_monitor": {"max_silence_s": 30}})
    await run(app, consumer, status(True, START_MS))
    app.clock.advance(29_000)
    assert await run(app, consumer) == []
    app.clock.advance(2_000)  # no events at all: the tick alone must notice
    (silent,) = await run(app, consumer)
    assert silent["code"] == "source_silent" and "31s" in silent["message"]
    assert await run(app, consumer) == []
    assert await app.redis.hget(app.keys.state("source", "binance", "spot", "*"), "silent") == "true"
    (back,) = await run(app, consumer, status(True, START_MS + 31_000))
    assert back["code"] == "source_recovered"


async def test_a_new_consumer_remembers_what_it_already_alerted(backend: Any, make_app: Any) -> None:
    app, consumer = await started(make_app)
    await run(app, consumer, status(False, START_MS, "down"))
    other, second = await started(make_app, name="second")
    assert await run(other, second, status(False, START_MS + 10, "down")) == []


async def test_status_section_lists_sources_with_age(make_app: Any) -> None:
    app, consumer = await started(make_app)
    await run(app, consumer, status(False, START_MS - 4000, "timeout"), status(True, START_MS, source="futures"))
    (impl,) = [i for i in hook_impls(app.pm, "navstream_status") if i.plugin_name == "source_monitor"]
    section = await await_me_maybe(call_impl(impl, {"app": app}))
    assert [(s["source"], s["ok"], s["age_s"]) for s in section["sources"]] == [
        ("futures", True, 0.0), ("spot", False, 4.0)]
    assert section["sources"][1]["error"] == "timeout"
