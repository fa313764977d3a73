"""Redis losing navstream's data must not leave a consumer's memory holding back an alert.

A lasting problem (a wallet reading 0) is alerted once per ``alert_every_s`` across consumers,
de-duplicated by markers in Redis (``P:state:once:...``); each consumer also remembers, to save
work, which markers it knows run. When Redis loses the data (a FLUSHALL or FLUSHDB, a restart
without persistence, a rollback to an older snapshot), the alert is gone from ``P:alerts`` and
must be raised again at once, not after ``alert_every_s``, by whichever consumer judges it:
the one that recreated the group, one that never saw the group vanish, one restarted.

"Losing the data" here deletes (or rolls back) this test's own keys only: every test has its
own prefix, and the real Redis is shared.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pytest
from redis.exceptions import ResponseError
from support import START_MS

from navstream import Event, ManualClock, Outputs, hookimpl
from navstream.loop.consumer import Consumer
from navstream.store.writer import is_missing_group

TICK_MS = 1_000
#: Far longer than the test: an alert raised again came from the loss being noticed.
ALERT_EVERY_S = 3_600
NAV = {
    "nav": {
        "max_age_s": 60,
        "publish_every_s": 600,
        "alert_every_s": ALERT_EVERY_S,
        "pegs": {"USDT": "1"},
        "accounts": [{"venue": "binance", "account": "futures", "kind": "futures"}],
    }
}


def zero_wallet(clock: ManualClock) -> dict[str, str]:
    """The producer's reading of a futures wallet that holds 0 (a second old)."""
    return {
        "type": "balance",
        "venue": "binance",
        "account": "futures",
        "asset": "USDT",
        "balance": "0",
        "ts": str(clock.now_ms() - 1_000),
    }


async def started(make_app: Any, clock: ManualClock, name: str, **kwargs: Any) -> Consumer:
    app = make_app(builtins=True, extra=NAV, clock=clock, name=name, disabled=["risk"], **kwargs)
    consumer = Consumer(app)
    await consumer.setup()
    return consumer


async def handle_and_tick(consumer: Consumer) -> None:
    while await consumer.step(block_ms=1):
        pass
    await consumer.tick()


async def codes(consumer: Consumer, code: str) -> int:
    app = consumer.app
    return sum(1 for _, f in await app.redis.xrange(app.keys.alerts) if f["code"] == code)


async def prefix_keys(consumer: Consumer) -> list[str]:
    app = consumer.app
    return [k async for k in app.redis.scan_iter(match=f"{app.keys.prefix}:*", count=1000)]


async def wipe(consumer: Consumer, *, heartbeats: bool = True) -> None:
    """FLUSHALL, as far as this test's keys go (without ``heartbeats``: all but those)."""
    keys = await prefix_keys(consumer)
    if not heartbeats:
        keys = [k for k in keys if not k.startswith(consumer.app.keys.heartbeat(""))]
    assert keys
    await consumer.app.redis.delete(*keys)


async def group_vanished(consumer: Consumer) -> None:
    """What the loop does when a read finds the group gone: recreate it, alert."""
    with pytest.raises(ResponseError) as info:
        await consumer.step(block_ms=1)
    assert is_missing_group(info.value)
    await consumer._group_missing(info.value)


async def alerted_once(make_app: Any, clock: ManualClock) -> tuple[Consumer, Consumer]:
    """Two consumers, a zero wallet alerted once; both know its marker runs for the hour."""
    a = await started(make_app, clock, "a")
    b = await started(make_app, clock, "b")
    await a.app.redis.xadd(a.app.keys.events, zero_wallet(clock))
    await handle_and_tick(a)
    await b.tick()  # judges it too: the marker holds, nothing is written, b remembers it
    assert await codes(a, "wallet_zero") == 1
    clock.advance(TICK_MS)
    await handle_and_tick(a)
    await b.tick()
    assert await codes(a, "wallet_zero") == 1  # a lasting problem: not again within the period
    return a, b


@pytest.mark.parametrize("recreated_by", ["this consumer", "another consumer", "a restarted consumer"])
async def test_a_lasting_zero_wallet_is_alerted_again_at_once_after_a_flush(make_app: Any, recreated_by: str) -> None:
    clock = ManualClock(START_MS)
    a, b = await alerted_once(make_app, clock)
    await wipe(a)
    if recreated_by == "a restarted consumer":
        await started(make_app, clock, "c")  # its setup creates the group; a and b see nothing wrong
    else:
        await group_vanished(b if recreated_by == "another consumer" else a)
    clock.advance(TICK_MS)
    await a.app.redis.xadd(a.app.keys.events, zero_wallet(clock))  # the wallet still reads 0
    await handle_and_tick(a)  # one tick, well within alert_every_s
    assert await codes(a, "wallet_zero") == 1, "the zero wallet was not alerted again after the data loss"
    await b.tick()
    clock.advance(TICK_MS)
    await handle_and_tick(a)
    await b.tick()
    assert await codes(a, "wallet_zero") == 1, "once again, not once per consumer or tick"


@pytest.mark.parametrize("lost", ["everything", "all but the heartbeats"])
async def test_the_consumer_that_did_not_see_the_group_vanish_alerts_again_too(make_app: Any, lost: str) -> None:
    """Whether b finds its own heartbeat gone or not (the data deleted around it), the new
    epoch that a set on recreating the group tells it."""
    clock = ManualClock(START_MS)
    a, b = await alerted_once(make_app, clock)
    await wipe(a, heartbeats=lost == "everything")
    await group_vanished(a)  # a recreates the group; b never sees NOGROUP
    clock.advance(TICK_MS)
    await a.app.redis.xadd(a.app.keys.events, zero_wallet(clock))
    await handle_and_tick(b)  # b reads the new reading: its batch, then its tick
    assert await codes(b, "wallet_zero") == 1, "b's memory held back the zero wallet after the data loss"


async def test_a_rollback_to_an_older_snapshot_is_noticed(make_app: Any) -> None:
    """Redis restarted from an RDB snapshot taken before the alert: the group and the epoch are
    there, the alert and its marker are not."""
    clock = ManualClock(START_MS)
    a = await started(make_app, clock, "a")
    b = await started(make_app, clock, "b")
    await a.tick()
    await b.tick()
    redis = a.app.raw
    snapshot = {key: await redis.dump(key) for key in await prefix_keys(a)}
    await a.app.redis.xadd(a.app.keys.events, zero_wallet(clock))
    await handle_and_tick(a)
    await b.tick()
    assert await codes(a, "wallet_zero") == 1
    clock.advance(TICK_MS)
    await handle_and_tick(a)
    await b.tick()
    await wipe(a)
    for key, dumped in snapshot.items():
        await redis.restore(key, 0, dumped)
    assert await codes(a, "wallet_zero") == 0
    clock.advance(TICK_MS)
    await a.app.redis.xadd(a.app.keys.events, zero_wallet(clock))
    await handle_and_tick(b)
    assert await codes(a, "wallet_zero") == 1, "the rollback went unnoticed"


async def test_a_lasting_plugin_error_is_alerted_again_after_a_flush(make_app: Any) -> None:
    """The core's own cooldown (``alert_cooldown_s``) forgets too."""

    class Broken:
        @hookimpl
        def navstream_tick(self) -> None:
            raise RuntimeError("broken for good")

        @hookimpl
        def navstream_events(self, events: Sequence[Event], out: Outputs) -> None:
            pass

    app = make_app(plugins=[("broken", Broken())], consumer={"alert_cooldown_s": 3_600})
    consumer = Consumer(app)
    await consumer.setup()
    await consumer.tick()
    await consumer.tick()
    assert await codes(consumer, "plugin_error") == 1
    await wipe(consumer)
    await consumer.ensure_groups(consumer.streams)  # someone else recreated the group
    await consumer.tick()  # notices
    await consumer.tick()
    assert await codes(consumer, "plugin_error") == 1


# --- for real: navstream run processes, a redis-server restarted without persistence -------------


RUN_CONFIG = f"""
[consumer]
block_ms = 100
tick_ms = 200
claim_idle_ms = 2000
reconnect_max_ms = 300

[nav]
quote = "USD"
max_age_s = 600
publish_every_s = 600
alert_every_s = {ALERT_EVERY_S}
pegs = {{ USDT = "1" }}

[[nav.accounts]]
venue = "binance"
account = "futures"
kind = "futures"
"""


@pytest.mark.slow
def test_redis_restarted_empty_under_running_consumers_the_zero_wallet_is_alerted_again(tmp_path: Any) -> None:
    """Two ``navstream run`` processes on a private redis-server without persistence: a zero
    wallet is alerted once and both consumers judge it every tick; the server is killed and
    comes back empty, the wallet still reads 0, and the alert is back within seconds, not
    after the hour of ``alert_every_s``."""
    import shutil
    import time

    from support.soakkit import Fleet, RedisServer, poll

    binary = shutil.which("redis-server")
    if binary is None:
        from support import REQUIRE_REDIS

        if REQUIRE_REDIS or os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("this test needs a redis-server binary on PATH (CI)")
        pytest.skip("no redis-server binary on PATH")
    server = RedisServer(binary, tmp_path / "redis", persistent=False)
    server.start()
    config = tmp_path / "navstream.toml"
    config.write_text(RUN_CONFIG, encoding="utf-8")
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(server.url, "loss", "g", config, logs, "nav")
    r = server.client(decode_responses=True)

    def now_ms() -> int:
        return time.time_ns() // 1_000_000

    def zero() -> dict[str, str]:
        return {
            "type": "balance",
            "venue": "binance",
            "account": "futures",
            "asset": "USDT",
            "balance": "0",
            "ts": str(now_ms() - 1_000),
        }

    def zero_alerts() -> list[dict[str, str]]:
        return [f for _, f in r.xrange("loss:alerts") if f["code"] == "wallet_zero"]

    def ticked_since(ms: int) -> bool:
        """Both consumers wrote a heartbeat (so ran a tick, judging the zero wallet) after ``ms``."""
        return all(int(r.hget(f"loss:heartbeat:{name}", "ts") or 0) > ms for name in ("a", "b"))

    try:
        for name in ("a", "b"):
            fleet.start(name)
        assert poll(lambda: all(p.started() for p in fleet.live.values()), 60), fleet.tails()
        r.xadd("loss:events", zero())
        assert poll(zero_alerts, 60), fleet.tails()
        first = int(zero_alerts()[0]["ts"])
        # Each consumer has judged the lasting zero wallet on a couple of ticks since: each
        # knows the alert's marker runs for the hour.
        assert poll(lambda: ticked_since(first + 500), 60), fleet.tails()
        assert len(zero_alerts()) == 1

        server.kill()
        server.start()
        assert poll(lambda: r.xadd("loss:events", zero()), 30)  # the wallet still reads 0
        assert poll(zero_alerts, 30), "not alerted again after Redis came back empty\n" + fleet.tails()
        codes = {f["code"] for _, f in r.xrange("loss:alerts")}
        assert "group_recreated" in codes, sorted(codes)
        assert not fleet.crashed(), fleet.tails()
        assert fleet.logs_contain('"event": "data_lost"'), fleet.tails()
        stopped = fleet.stop_all(30)
        assert all(c == 0 for c in stopped.values()), f"{stopped}\n{fleet.tails()}"
        assert len(zero_alerts()) == 1, "once, not once per consumer"
    finally:
        fleet.kill_everything()
        r.close()
        server.cleanup()
