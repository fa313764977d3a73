"""Redis refusing writes (OOM under ``noeviction``, READONLY after a failover, MISCONF after a
failed RDB save) and Redis going away for a while, on a private ``redis-server`` of the test's
own (tests/support/soakkit.py): the consumer stays up, holds its batch pending, retries with backoff,
says so (``app.stats.writes_refused_since``, its health, logs, counters), and once writes work
processes the batch and alerts how long writes were refused. Nothing is lost.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from support import START_MS
from support.soakkit import RedisServer, free_port

from navstream import Event, ManualClock, Outputs, hookimpl
from navstream.app import App
from navstream.config import load_settings
from navstream.loop.consumer import Consumer
from navstream.plugin.manager import build_plugin_manager

CONSUMER = {"tick_ms": 100, "block_ms": 50, "claim_idle_ms": 60_000, "reconnect_max_ms": 200, "hook_timeout_s": 60}
DEADLINE_S = 20  # generous: these tests must pass under CPU load


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        from support import REQUIRE_REDIS

        if REQUIRE_REDIS or os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("this test needs a redis-server binary on PATH (CI)")
        pytest.skip("no redis-server binary on PATH")
    return binary


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    srv = RedisServer(redis_binary(), tmp_path / "redis", persistent=True)
    await asyncio.to_thread(srv.start)
    try:
        yield srv
    finally:
        await asyncio.to_thread(srv.cleanup)


class Gated:
    """Records what it handled and emits one output per batch; its first batch waits for
    ``gate`` (so the test can make Redis refuse writes while the batch is in flight)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.seen: list[str] = []

    @hookimpl
    async def navstream_events(self, events: Sequence[Event], out: Outputs) -> None:
        self.entered.set()
        await self.gate.wait()
        self.seen += [e.asset for e in events]  # type: ignore[attr-defined]
        out.emit("nav", {"n": str(len(events))})


def make_app(srv: RedisServer, plugin: object, clock: ManualClock, name: str = "c") -> App:
    settings = load_settings(
        env={},
        overrides={"redis": {"url": srv.url, "prefix": "rr", "group": "g"}, "consumer": {"name": name, **CONSUMER}},
    )
    plugins = build_plugin_manager(load_entrypoints=False, extra=[("gated", plugin)], env={})
    return App.create(settings, clock=clock, plugins=plugins)


def bal(asset: str) -> dict[str, str]:
    return {
        "type": "balance",
        "venue": "binance",
        "account": "spot",
        "asset": asset,
        "balance": "1",
        "ts": str(START_MS - 1000),
    }


async def until(pred: Callable[[], Awaitable[Any]], what: str, timeout: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = await pred()
        except Exception:  # noqa: BLE001 - Redis refusing or away while we poll: not yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def refuse_oom(r: aioredis.Redis, srv: RedisServer) -> Callable[[], Awaitable[None]]:
    await r.set("big", "x" * 3_000_000)
    await r.config_set("maxmemory-policy", "noeviction")
    await r.config_set("maxmemory", "2mb")

    async def undo() -> None:
        await r.delete("big")  # DEL is allowed under OOM
        await r.config_set("maxmemory", "0")

    return undo


async def refuse_readonly(r: aioredis.Redis, srv: RedisServer) -> Callable[[], Awaitable[None]]:
    await r.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))  # a master that never answers

    async def undo() -> None:
        await r.execute_command("REPLICAOF", "NO", "ONE")

    return undo


async def refuse_misconf(r: aioredis.Redis, srv: RedisServer) -> Callable[[], Awaitable[None]]:
    # The server's directory (its working directory) deleted under it: an RDB save cannot
    # create its temporary file there, so it fails (``dir`` itself is a protected config).
    shutil.rmtree(srv.dir)
    await r.config_set("save", "3600 1")  # MISCONF applies only with save points
    await r.config_set("stop-writes-on-bgsave-error", "yes")
    await r.bgsave()

    async def failed() -> bool:
        return (await r.info("persistence"))["rdb_last_bgsave_status"] == "err"

    await until(failed, "the RDB save to fail")

    async def undo() -> None:
        await r.config_set("stop-writes-on-bgsave-error", "no")
        await r.config_set("save", "")  # else its shutdown tries to save there, fails and waits

    return undo


MODES = {"oom": (refuse_oom, "OOM"), "readonly": (refuse_readonly, "READONLY"), "misconf": (refuse_misconf, "MISCONF")}


@pytest.mark.parametrize("mode", sorted(MODES))
async def test_a_consumer_survives_redis_refusing_writes_and_loses_nothing(server: RedisServer, mode: str) -> None:
    refuse, code = MODES[mode]
    r = aioredis.Redis.from_url(server.url, decode_responses=True)
    clock = ManualClock(START_MS)
    plugin = Gated()
    app = make_app(server, plugin, clock)
    consumer = Consumer(app)
    task = asyncio.create_task(consumer.run())
    later: App | None = None
    try:
        for asset in ("BTC", "ETH", "SOL"):
            await r.xadd("rr:events", bal(asset))
        await asyncio.wait_for(plugin.entered.wait(), DEADLINE_S)  # the batch is in flight
        undo = await refuse(r, server)
        plugin.gate.set()  # its write is refused

        async def refused() -> bool:
            return bool(app.stats.writes_refused_since) and consumer.handler.held is not None

        await until(refused, "the refusal to be noticed")
        assert app.stats.writes_refused_since == START_MS
        await asyncio.sleep(0.5)  # some retries with backoff: the consumer stays up
        assert not task.done(), task
        assert app.stats.writes_refused >= 2
        health = consumer.upkeep.health()
        assert health["health"] == "degraded" and "Redis refuses writes since" in health["health_reasons"]
        assert code in health["health_reasons"], health
        assert (await r.xpending("rr:events", "g"))["pending"] == 3  # held, not acknowledged
        assert code in app.stats.last_error

        if mode == "oom":  # a consumer (re)started under OOM starts and waits, it does not exit
            later = make_app(server, Gated(), clock, name="later")
            second = Consumer(later)
            started = asyncio.create_task(second.run())
            await until(lambda: asyncio.sleep(0, second.phase == "running"), "the second consumer to start")
            second.request_stop()
            assert await asyncio.wait_for(started, DEADLINE_S) == 0

        clock.advance(42_000)
        await undo()

        async def restored() -> list[dict[str, str]]:
            return [f for _, f in await r.xrange("rr:alerts") if f["code"] == "writes_restored"]

        (alert,) = await until(restored, "the writes_restored alert")
        assert "refused writes for 42.0s" in alert["message"] and code in alert["message"], alert
        assert alert["severity"] == "critical"
        assert (await r.xpending("rr:events", "g"))["pending"] == 0
        assert set(plugin.seen) == {"BTC", "ETH", "SOL"}  # handled again on each retry: idempotent
        assert [f["n"] for _, f in await r.xrange("rr:nav")] == ["3"]
        assert not await r.exists("rr:dlq")
        assert app.stats.writes_refused_since is None and consumer.handler.held is None
        assert app.stats.processed == 3

        async def healthy_beat() -> bool:
            return (await r.hget("rr:heartbeat:c", "health")) == "ok"

        await until(healthy_beat, "a healthy heartbeat")
        consumer.request_stop()
        assert await asyncio.wait_for(task, DEADLINE_S) == 0
    finally:
        plugin.gate.set()
        if not task.done():
            task.cancel()
        await app.aclose()
        if later is not None:
            await later.aclose()
        await r.aclose()


async def test_the_reconnect_alert_gives_the_real_outage(server: RedisServer) -> None:
    """Redis stopped for a few seconds: the alert says how long, from the first failure to
    the first success (not from the last retry)."""
    outage_s = 3.0
    r = aioredis.Redis.from_url(server.url, decode_responses=True)
    plugin = Gated()
    plugin.gate.set()
    app = make_app(server, plugin, ManualClock(START_MS))
    consumer = Consumer(app)
    task = asyncio.create_task(consumer.run())
    try:
        await until(lambda: asyncio.sleep(0, consumer.phase == "running"), "the consumer to start")
        await asyncio.to_thread(server.stop)
        await until(lambda: asyncio.sleep(0, consumer.down_for_s is not None), "the outage to be noticed")
        await asyncio.sleep(outage_s)
        await asyncio.to_thread(server.start)

        async def reconnected() -> list[dict[str, str]]:
            return [f for _, f in await r.xrange("rr:alerts") if f["code"] == "redis_reconnected"]

        (alert,) = await until(reconnected, "the redis_reconnected alert")
        said = float(alert["message"].split("restored after ")[1].split("s")[0])
        assert outage_s <= said <= outage_s + 15, alert  # generous above: CPU load, the restart itself
        await r.xadd("rr:events", bal("BTC"))
        await until(lambda: asyncio.sleep(0, plugin.seen == ["BTC"]), "the entry after the outage")
        consumer.request_stop()
        assert await asyncio.wait_for(task, DEADLINE_S) == 0
    finally:
        if not task.done():
            task.cancel()
        await app.aclose()
        await r.aclose()


RUN_CONFIG = """
[consumer]
block_ms = 100
tick_ms = 200
claim_idle_ms = 5000
reconnect_max_ms = 300
"""


@pytest.mark.slow
def test_navstream_run_started_under_oom_stays_up_and_catches_up(tmp_path: Path) -> None:
    """The crash loop as reported: ``navstream run`` against a Redis that is out of memory
    (``noeviction``) starts and waits, instead of exiting 1; once memory is freed it
    processes what comes and alerts how long writes were refused; SIGTERM exits 0."""
    from support.soakkit import Fleet, poll

    srv = RedisServer(redis_binary(), tmp_path / "redis", persistent=False)
    srv.start()
    config = tmp_path / "navstream.toml"
    config.write_text(RUN_CONFIG, encoding="utf-8")
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(srv.url, "oom", "g", config, logs, "source_monitor")
    r = srv.client(decode_responses=True)
    try:
        r.xgroup_create("oom:events", "g", id="0", mkstream=True)  # an existing deployment
        r.set("big", "x" * 3_000_000)
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", "2mb")
        proc = fleet.start("c")
        assert poll(lambda: proc.started() and '"event": "writes_refused"' in proc.log.read_text(), 60), fleet.tails()
        time.sleep(2)  # ten ticks and more: still up
        assert proc.alive(), fleet.tails()
        r.delete("big")
        r.config_set("maxmemory", "0")
        for asset in ("BTC", "ETH"):
            r.xadd("oom:events", bal(asset))

        def caught_up() -> bool:
            return r.xpending("oom:events", "g")["pending"] == 0 and r.xinfo_groups("oom:events")[0]["lag"] == 0

        assert poll(caught_up, 60), fleet.tails()
        codes = [f["code"] for _, f in r.xrange("oom:alerts")]
        assert "writes_restored" in codes, (codes, fleet.tails())
        assert fleet.stop_all(30) == {"c": 0}, fleet.tails()
    finally:
        fleet.kill_everything()
        r.close()
        srv.cleanup()
