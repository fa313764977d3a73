"""Entries trimmed or deleted before the group read them, found from Redis's own counters
(``XINFO STREAM`` entries-added against the group's entries-read): a burst trimmed to
``MAXLEN 10`` in one MULTI, read past by the consumer before any tick saw the gap, and a
deleted input stream. Redis 7 keeps the group's read count exact (the group is created with
``ENTRIESREAD 0``); fakeredis re-estimates it on a read, so what needs that runs on real Redis.
"""

from __future__ import annotations

from typing import Any

import pytest
from support import START_MS, Recorder

from navstream.loop.consumer import Consumer


def bal(i: int) -> dict[str, str]:
    return {
        "type": "balance",
        "venue": "binance",
        "account": "spot",
        "asset": f"A{i}",
        "balance": "1",
        "ts": str(START_MS - 1000),
    }


async def burst_trimmed(app: Any, n: int = 100, maxlen: int = 10) -> None:
    """``n`` entries, each XADD with ``MAXLEN maxlen``, in one MULTI (a producer's burst)."""
    pipe = app.raw.pipeline(transaction=True)
    for i in range(n):
        pipe.xadd(app.keys.events, bal(i), maxlen=maxlen, approximate=False)
    await pipe.execute()


async def lost_alerts(app: Any) -> list[dict[str, str]]:
    return [f for _, f in await app.redis.xrange(app.keys.alerts) if f["code"] == "entries_lost"]


async def drain(consumer: Consumer) -> None:
    while await consumer.step(block_ms=1):
        pass


@pytest.mark.real_redis
@pytest.mark.parametrize("first", ["the consumer reads", "a tick sees the gap"])
async def test_a_burst_trimmed_before_it_was_read_is_reported_lost(
    real_backend: Any, make_app: Any, first: str
) -> None:
    rec = Recorder()
    app = make_app(plugins=[("rec", rec)], on=real_backend)
    consumer = Consumer(app)
    await consumer.setup()
    await burst_trimmed(app)
    if first == "the consumer reads":  # it reads past the gap before any tick looks
        await drain(consumer)
        await consumer.tick()
    else:
        await consumer.tick()
        await drain(consumer)
    await consumer.tick()
    await consumer.tick()  # once, not every tick
    (alert,) = await lost_alerts(app)
    assert alert["message"].startswith("90 entries") and "trimmed" in alert["message"], alert
    assert alert["severity"] == "critical"
    assert app.stats.lost == 90
    assert await app.redis.hget(app.keys.heartbeat(app.consumer_name), "lost") == "90"
    assert rec.seen == [f"A{i}" for i in range(90, 100)]

    again = Consumer(app)  # a restarted consumer does not report the same loss again
    await again.setup()
    await again.tick()
    assert len(await lost_alerts(app)) == 1


async def test_a_burst_trimmed_before_a_tick_is_reported_on_either_backend(make_app: Any) -> None:
    """Without an exact read count (fakeredis re-estimates it on a read), a gap is still found
    while it lies ahead of the group."""
    app = make_app(plugins=[("rec", Recorder())])
    consumer = Consumer(app)
    await consumer.setup()
    await burst_trimmed(app)
    await consumer.tick()
    await drain(consumer)
    await consumer.tick()
    (alert,) = await lost_alerts(app)
    assert alert["message"].startswith("90 entries"), alert
    assert app.stats.lost == 90


@pytest.mark.real_redis
async def test_a_deleted_input_stream_reports_what_it_lost(real_backend: Any, make_app: Any) -> None:
    rec = Recorder()
    app = make_app(plugins=[("rec", rec)], on=real_backend)
    consumer = Consumer(app)
    await consumer.setup()
    for i in range(3):
        await app.redis.xadd(app.keys.events, bal(i))
    await drain(consumer)
    for i in range(3, 10):  # 7 more, never read
        await app.redis.xadd(app.keys.events, bal(i))
    await consumer.tick()  # sees 10 added, 3 read
    assert not await lost_alerts(app)
    await app.redis.delete(app.keys.events)
    with pytest.raises(Exception) as info:  # the loop finds the group gone and recreates it
        await consumer.tick()
    await consumer._group_missing(info.value)  # type: ignore[arg-type]
    await consumer.tick()
    await consumer.tick()
    (alert,) = await lost_alerts(app)
    assert alert["message"].startswith("7 entries") and "deleted" in alert["message"], alert
    assert app.stats.lost == 7
    await app.redis.xadd(app.keys.events, bal(42))  # what comes after is processed and not lost
    await drain(consumer)
    await consumer.tick()
    assert rec.seen[-1] == "A42" and len(await lost_alerts(app)) == 1


async def test_a_redis_restart_from_its_aof_is_no_loss(tmp_path: Any) -> None:
    """Redis 7 restores a group's entries-read stale from the AOF (reads are logged as XCLAIM
    ... LASTID): the deficit that shows after a restart is a new baseline, not a loss."""
    import asyncio
    import shutil

    from support.soakkit import RedisServer

    from navstream.app import App, ManualClock
    from navstream.config import load_settings
    from navstream.plugin.manager import build_plugin_manager

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary on PATH")
    server = RedisServer(binary, tmp_path / "redis", persistent=True)
    await asyncio.to_thread(server.start)
    settings = load_settings(
        env={}, overrides={"redis": {"url": server.url, "prefix": "aof", "group": "g"}, "consumer": {"name": "c"}}
    )
    app = App.create(
        settings,
        clock=ManualClock(START_MS),
        plugins=build_plugin_manager(load_entrypoints=False, extra=[("rec", Recorder())], env={}),
    )
    try:
        consumer = Consumer(app)
        await consumer.setup()
        for i in range(20):
            await app.redis.xadd(app.keys.events, bal(i))
        await drain(consumer)
        await consumer.tick()
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        await consumer.tick()
        await app.redis.xadd(app.keys.events, bal(99))
        await drain(consumer)
        await consumer.tick()
        assert not await lost_alerts(app) and app.stats.lost == 0
        (group,) = await app.redis.xinfo_groups(app.keys.events)
        assert group["lag"] == 0 and group["entries-read"] == 21, group  # the stale count corrected
        await burst_trimmed(app, 30, 5)  # a real loss after the restart is still found
        await drain(consumer)
        await consumer.tick()
        (alert,) = await lost_alerts(app)
        assert alert["message"].startswith("25 entries"), alert
    finally:
        await app.aclose()
        await asyncio.to_thread(server.cleanup)


async def test_a_server_without_entriesread_still_gets_its_groups(fake_backend: Any, make_app: Any) -> None:
    """Redis before 7 knows no ``XGROUP CREATE ... ENTRIESREAD``: the group is created without."""
    from redis.exceptions import ResponseError

    app = make_app(on=fake_backend)
    create = app.raw.xgroup_create
    calls: list[Any] = []

    async def old_server(*args: Any, entries_read: Any = None, **kwargs: Any) -> Any:
        calls.append(entries_read)
        if entries_read is not None:
            raise ResponseError("Unknown subcommand or wrong number of arguments for 'CREATE'. Try XGROUP HELP.")
        return await create(*args, **kwargs)

    app.raw.xgroup_create = old_server
    consumer = Consumer(app)
    await consumer.setup()
    assert [g["name"] for g in await app.redis.xinfo_groups(app.keys.events)] == ["g"]
    assert calls[0] == 0 and calls[1:] and set(calls[1:]) == {None}  # asked once, then never again
