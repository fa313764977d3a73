"""The consumer loop, on fakeredis and on a real Redis: delivery, isolation, dead letters, recovery."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest
from support import START_MS

from navstream import App, Balance, Event, InvalidOrder, Order, Outputs, hookimpl
from navstream.loop.consumer import Consumer
from navstream.store.writer import WriteError

FAST = {"block_ms": 5, "claim_idle_ms": 40, "tick_ms": 50}


def bal(asset: str, amount: str = "1", ts: int = START_MS, account: str = "a") -> dict[str, str]:
    return {"type": "balance", "venue": "v", "account": account, "asset": asset, "balance": amount, "ts": str(ts)}


async def add(app: App, *entries: dict[str, Any], stream: str | None = None) -> list[str]:
    return [await app.redis.xadd(stream or app.keys.events, e) for e in entries]


async def pending(app: App, stream: str | None = None) -> int:
    return int((await app.redis.xpending(stream or app.keys.events, app.group))["pending"])


async def strand_with_one_deleted(app: App) -> list[str]:
    """Two entries held by a consumer that died, then one deleted by a producer's trim."""
    ids = await add(app, bal("BTC"), bal("ETH"))
    await app.raw.xreadgroup(app.group, "dead", {app.keys.events: ">"}, count=10)
    await app.raw.xdel(app.keys.events, ids[0])
    return ids


async def drain(consumer: Consumer) -> None:
    while await consumer.step(block_ms=1):
        pass


class Recorder:
    """Records balances as last-ts-wins state and every event it saw."""

    def __init__(self) -> None:
        self.seen: list[Event] = []

    @hookimpl
    def navstream_events(self, events: Sequence[Event], out: Outputs) -> None:
        for e in events:
            self.seen.append(e)
            if isinstance(e, Balance):
                out.put_latest(f"rec:{e.asset}", e.ts, {"balance": str(e.balance)})


class Poisoned:
    """Raises on any batch holding a balance of asset POISON (async, to cover awaitables)."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    async def navstream_events(self, events: Sequence[Event], out: Outputs) -> None:
        self.calls += 1
        if any(isinstance(e, Balance) and e.asset == "POISON" for e in events):
            raise RuntimeError("cannot value POISON")
        for e in events:
            out.emit("nav", {"asset": getattr(e, "asset", "-")})


async def test_batch_is_decoded_dispatched_written_and_acked(make_app: Any) -> None:
    rec = Recorder()
    app = make_app(plugins=[("rec", rec)])
    consumer = Consumer(app)
    await consumer.setup()
    await add(app, bal("BTC", "1.5"), bal("ETH", "10"))
    assert await consumer.step(block_ms=1) == 2
    assert [e.asset for e in rec.seen] == ["BTC", "ETH"]
    assert rec.seen[0].balance == Decimal("1.5")
    assert await app.redis.hgetall(app.keys.state("rec", "BTC")) == {"ts": str(START_MS), "balance": "1.5"}
    assert await pending(app) == 0
    assert app.stats.processed == 2 and app.stats.by_type["balance"] == 2


async def test_older_snapshot_never_overwrites_newer_state(make_app: Any) -> None:
    app = make_app(plugins=[("rec", Recorder())])
    consumer = Consumer(app)
    await consumer.setup()
    await add(app, bal("BTC", "2", ts=START_MS + 10))
    await drain(consumer)
    await add(app, bal("BTC", "1", ts=START_MS), bal("BTC", "3", ts=START_MS + 5))  # both older
    await drain(consumer)
    assert await app.redis.hget(app.keys.state("rec", "BTC"), "balance") == "2"
    await add(app, bal("BTC", "4", ts=START_MS + 20), bal("BTC", "9", ts=START_MS + 15))
    await drain(consumer)  # in one batch too: the newest ts wins, not the last entry
    assert await app.redis.hget(app.keys.state("rec", "BTC"), "balance") == "4"


async def test_undecodable_entries_go_to_dlq_at_once_and_the_rest_are_processed(make_app: Any) -> None:
    rec = Recorder()
    app = make_app(plugins=[("rec", rec)])
    consumer = Consumer(app)
    await consumer.setup()
    ids = await add(app, bal("BTC"), bal("ETH", "abc"), {"type": "trade", "x": "1"}, bal("SOL"))
    await app.raw.xadd(app.keys.events, {b"type": b"balance", b"asset": b"\xff", b"ts": b"1"})
    await drain(consumer)
    assert [e.asset for e in rec.seen] == ["BTC", "SOL"]
    dlq = await app.redis.xrange(app.keys.dlq)
    assert [f["dlq_id"] for _, f in dlq[:2]] == [ids[1], ids[2]]
    assert "field `balance`" in dlq[0][1]["dlq_error"]
    assert dlq[0][1]["balance"] == "abc" and dlq[0][1]["dlq_deliveries"] == "1"
    assert "unknown type 'trade'" in dlq[1][1]["dlq_error"]
    assert dlq[1][1]["dlq_stream"] == app.keys.events and dlq[1][1]["dlq_consumer"] == app.consumer_name
    raw = await app.raw.xrange(app.keys.dlq)
    assert raw[2][1][b"asset"] == b"\xff" and b"UTF-8" in raw[2][1][b"dlq_error"]
    assert dlq[2][1]["asset"] == "\\xff"  # the str client shows it escaped, and does not fail
    assert await pending(app) == 0
    assert app.stats.dead_lettered == 3 and app.stats.processed == 2


async def test_future_timestamps_are_dead_lettered(make_app: Any) -> None:
    app = make_app(plugins=[("rec", Recorder())])
    consumer = Consumer(app)
    await consumer.setup()
    await add(app, bal("BTC", ts=START_MS + 3_600_000))
    await drain(consumer)
    ((_, fields),) = await app.redis.xrange(app.keys.dlq)
    assert "in the future" in fields["dlq_error"] and "clock" in fields["dlq_error"]


async def test_a_failing_plugin_loses_only_its_poison_entry(make_app: Any) -> None:
    rec, poisoned = Recorder(), Poisoned()
    app = make_app(plugins=[("rec", rec), ("poisoned", poisoned)], consumer={**FAST, "max_deliveries": 3})
    consumer = Consumer(app)
    await consumer.setup()
    ids = await add(app, bal("BTC"), bal("POISON"), bal("ETH"))
    await drain(consumer)
    # the other plugin saw the whole batch once; the poisoned one was retried entry by entry
    assert [e.asset for e in rec.seen] == ["BTC", "POISON", "ETH"]
    assert poisoned.calls == 1 + 3
    nav = [f["asset"] for _, f in await app.redis.xrange(app.keys.nav)]
    assert nav == ["BTC", "ETH"]
    detail = await app.redis.xpending_range(app.keys.events, app.group, "-", "+", 10)
    assert [d["message_id"] for d in detail] == [ids[1]]
    (alert,) = [f for _, f in await app.redis.xrange(app.keys.alerts) if f["code"] == "plugin_error"]
    assert alert["severity"] == "critical"
    assert "poisoned" in alert["message"] and "cannot value POISON" in alert["message"]
    assert "cannot value POISON" in await app.redis.hget(app.keys.failures, f"{app.keys.events}/{ids[1]}")

    # reclaimed after claim_idle_ms and failed again until max_deliveries: then dead-lettered
    for _ in range(2):
        await asyncio.sleep(0.06)
        assert await consumer.reclaim() == 1
    assert await pending(app) == 0
    ((_, dead),) = await app.redis.xrange(app.keys.dlq)
    assert dead["dlq_id"] == ids[1] and dead["dlq_deliveries"] == "3" and dead["asset"] == "POISON"
    assert "plugin 'poisoned': RuntimeError: cannot value POISON" == dead["dlq_error"]
    assert not await app.redis.exists(app.keys.failures)
    assert app.stats.dead_lettered == 1 and app.stats.failed == 2


async def test_a_plugin_that_recovers_gets_the_entry_on_redelivery(make_app: Any) -> None:
    class Flaky:
        failures = 1

        @hookimpl
        def navstream_events(self, events: Sequence[Event], out: Outputs) -> None:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("venue API down")
            out.emit("nav", {"n": str(len(events))})

    app = make_app(plugins=[("flaky", Flaky())], consumer=FAST)
    consumer = Consumer(app)
    await consumer.setup()
    await add(app, bal("BTC"))
    await drain(consumer)
    assert await pending(app) == 1
    await asyncio.sleep(0.06)
    assert await consumer.reclaim() == 1
    assert await pending(app) == 0 and await app.redis.xlen(app.keys.nav) == 1
    assert not await app.redis.exists(app.keys.dlq)
    assert not await app.redis.exists(app.keys.failures)  # the recorded error is forgotten


async def test_a_failed_write_leaves_the_batch_pending(make_app: Any) -> None:
    class Emits:
        @hookimpl
        def navstream_events(self, events: Sequence[Event], out: Outputs) -> None:
            out.emit("nav", {"n": "1"})

    app = make_app(plugins=[("emits", Emits())])
    consumer = Consumer(app)
    await consumer.setup()
    await app.redis.set(app.keys.nav, "not a stream")  # every XADD to P:nav now fails
    await add(app, bal("BTC"), bal("ETH"))
    with pytest.raises(WriteError, match="writes failed"):
        await consumer.step(block_ms=1)
    assert await pending(app) == 2  # nothing acknowledged before its results are written
    assert app.stats.processed == 0


async def test_entries_deleted_while_pending_are_reported_lost(make_app: Any) -> None:
    app = make_app(plugins=[("rec", Recorder())], consumer=FAST)
    consumer = Consumer(app)
    await consumer.setup()
    ids = await strand_with_one_deleted(app)
    await asyncio.sleep(0.06)
    assert await consumer.reclaim() == 1
    assert app.stats.lost == 1
    alerts = [f for _, f in await app.redis.xrange(app.keys.alerts)]
    lost = [a for a in alerts if a["code"] == "entries_lost"]
    assert lost and ids[0] in lost[0]["message"] and lost[0]["severity"] == "critical"
    assert await pending(app) == 0


async def test_entries_past_max_deliveries_are_dead_lettered_without_running_plugins(make_app: Any) -> None:
    rec = Recorder()
    app = make_app(plugins=[("rec", rec)], consumer={**FAST, "max_deliveries": 3})
    consumer = Consumer(app)
    await consumer.setup()
    (entry_id,) = await add(app, bal("BTC"))
    await app.raw.xreadgroup(app.group, "crashy", {app.keys.events: ">"})
    # as if three consumers in a row crashed while handling it
    await app.raw.xclaim(app.keys.events, app.group, "crashy", 0, [entry_id], retrycount=3)
    await asyncio.sleep(0.06)
    await consumer.reclaim()
    assert rec.seen == []
    ((_, dead),) = await app.redis.xrange(app.keys.dlq)
    assert dead["dlq_deliveries"] == "4" and "crashed or hung" in dead["dlq_error"]
    assert await pending(app) == 0


async def test_orders_are_not_read_without_an_order_plugin(make_app: Any) -> None:
    app = make_app(plugins=[("rec", Recorder())])
    consumer = Consumer(app)
    await consumer.setup()
    await add(app, {"type": "order", "order_id": "o1"}, stream=app.keys.orders)
    await drain(consumer)
    assert consumer.streams == [app.keys.events]
    groups = await app.redis.xinfo_groups(app.keys.orders)
    assert groups[0]["lag"] == 1 and groups[0]["pending"] == 0  # waiting, not acknowledged
    codes = [f["code"] for _, f in await app.redis.xrange(app.keys.alerts)]
    assert "no_order_handler" in codes


async def test_orders_reach_order_plugins_including_invalid_ones(make_app: Any) -> None:
    seen: list[Any] = []

    class Gate:
        @hookimpl
        def navstream_orders(self, orders: Sequence[Order | InvalidOrder], out: Outputs) -> None:
            for order in orders:
                seen.append(order)
                out.emit("decisions", {"order_id": order.order_id, "decision": "veto"})

    app = make_app(plugins=[("gate", Gate())])
    consumer = Consumer(app)
    await consumer.setup()
    good = {
        "type": "order",
        "order_id": "o1",
        "venue": "v",
        "account": "a",
        "symbol": "BTCUSDT",
        "side": "buy",
        "qty": "1",
        "ts": str(START_MS),
    }
    await add(app, good, {**good, "order_id": "o2", "qty": "-1"}, {**good, "order_id": ""}, stream=app.keys.orders)
    await drain(consumer)
    assert isinstance(seen[0], Order) and isinstance(seen[1], InvalidOrder) and len(seen) == 2
    assert "qty" in seen[1].reason
    assert [f["order_id"] for _, f in await app.redis.xrange(app.keys.decisions)] == ["o1", "o2"]
    ((_, dead),) = await app.redis.xrange(app.keys.dlq)
    assert "order_id" in dead["dlq_error"]
    assert await pending(app, app.keys.orders) == 0


async def test_tick_drives_time_based_work_and_writes_a_heartbeat(make_app: Any) -> None:
    ticks: list[int] = []

    class Ticker:
        @hookimpl
        def navstream_tick(self, now_ms: int, out: Outputs) -> None:
            ticks.append(now_ms)
            out.alert("stale", "warning", "nothing arrived")

    class Broken:
        @hookimpl
        def navstream_tick(self) -> None:
            raise ValueError("tick bug")

    app = make_app(plugins=[("ticker", Ticker()), ("broken", Broken())])
    consumer = Consumer(app)
    await consumer.setup()
    app.clock.advance(5000)
    await consumer.tick()
    assert ticks == [START_MS + 5000]
    alerts = {f["code"]: f for _, f in await app.redis.xrange(app.keys.alerts)}
    assert alerts["stale"]["ts"] == str(START_MS + 5000)
    assert "tick bug" in alerts["plugin_error"]["message"]
    beat = await app.redis.hgetall(app.keys.heartbeat(app.consumer_name))
    assert beat["status"] == "running" and beat["consumer"] == app.consumer_name
    assert beat["processed"] == "0" and beat["lag:" + app.keys.events] == "0"
    ttl = await app.redis.pttl(app.keys.heartbeat(app.consumer_name))
    assert 0 < ttl <= app.settings.consumer.heartbeat_ttl_ms


async def test_run_until_idle_processes_everything_and_stops(make_app: Any) -> None:
    rec = Recorder()
    app = make_app(plugins=[("rec", rec)], consumer=FAST)
    await add(app, *(bal(f"A{i}") for i in range(25)))
    assert await Consumer(app, until_idle_s=0.2).run() == 0
    assert len(rec.seen) == 25 and await pending(app) == 0
    beat = await app.redis.hgetall(app.keys.heartbeat(app.consumer_name))
    assert beat["status"] == "stopped" and beat["processed"] == "25"


async def test_run_max_events_stops_after_n(make_app: Any) -> None:
    rec = Recorder()
    app = make_app(plugins=[("rec", rec)], consumer={**FAST, "batch_size": 4})
    await add(app, *(bal(f"A{i}") for i in range(10)))
    assert await Consumer(app, max_events=6).run() == 0
    assert len(rec.seen) == 6
    groups = await app.redis.xinfo_groups(app.keys.events)
    assert groups[0]["lag"] == 4 and groups[0]["pending"] == 0


async def test_request_stop_finishes_the_batch_in_flight(make_app: Any) -> None:
    consumer: Consumer

    class StopsMidBatch:
        @hookimpl
        async def navstream_events(self, events: Sequence[Event], out: Outputs) -> None:
            consumer.request_stop()  # as SIGTERM would, while this batch is in flight
            await asyncio.sleep(0.01)
            out.emit("nav", {"n": str(len(events))})

    app = make_app(plugins=[("s", StopsMidBatch())], consumer={**FAST, "batch_size": 5})
    await add(app, *(bal(f"A{i}") for i in range(12)))
    consumer = Consumer(app)
    assert await consumer.run() == 0
    assert await pending(app) == 0
    assert [f["n"] for _, f in await app.redis.xrange(app.keys.nav)] == ["5"]
    groups = await app.redis.xinfo_groups(app.keys.events)
    assert groups[0]["lag"] == 7  # the rest waits for the next consumer


async def test_vanished_group_is_recreated_and_reported(make_app: Any) -> None:
    rec = Recorder()
    app = make_app(plugins=[("rec", rec)], consumer=FAST)
    consumer = Consumer(app, until_idle_s=0.5)
    task = asyncio.create_task(consumer.run())
    await asyncio.sleep(0.1)
    await app.redis.delete(app.keys.events)  # a flush or a restart without persistence
    await asyncio.sleep(0.05)
    await add(app, bal("BTC"))
    assert await asyncio.wait_for(task, 5) == 0
    assert [e.asset for e in rec.seen] == ["BTC"]
    codes = [f["code"] for _, f in await app.redis.xrange(app.keys.alerts)]
    assert "group_recreated" in codes
    assert app.stats.groups_recreated >= 1


async def test_lost_connection_is_retried_and_reported(fake_backend: Any, make_app: Any) -> None:
    rec = Recorder()
    app = make_app(plugins=[("rec", rec)], consumer={**FAST, "reconnect_max_ms": 100}, on=fake_backend)
    consumer = Consumer(app, until_idle_s=0.6)
    await add(app, bal("BTC"))
    fake_backend._server.connected = False
    task = asyncio.create_task(consumer.run())
    await asyncio.sleep(0.3)
    assert not task.done() and app.stats.reconnects >= 1
    assert "redis" in app.stats.last_error
    fake_backend._server.connected = True
    assert await asyncio.wait_for(task, 5) == 0
    assert [e.asset for e in rec.seen] == ["BTC"]
    codes = [f["code"] for _, f in await app.redis.xrange(app.keys.alerts)]
    assert "redis_reconnected" in codes


async def test_idle_consumers_without_pending_entries_are_removed(make_app: Any) -> None:
    app = make_app(plugins=[("rec", Recorder())])
    consumer = Consumer(app)
    await consumer.setup()
    await add(app, bal("BTC"), bal("ETH"))
    await app.redis.xreadgroup(app.group, "holds-pending", {app.keys.events: ">"}, count=1)
    [[_, [(done, _)]]] = await app.redis.xreadgroup(app.group, "idle-empty", {app.keys.events: ">"}, count=1)
    await app.redis.xack(app.keys.events, app.group, done)
    await asyncio.sleep(0.02)
    assert await consumer.remove_idle_consumers(idle_ms=10_000) == []  # none idle that long
    assert await consumer.remove_idle_consumers(idle_ms=10) == ["idle-empty"]
    names = {c["name"] for c in await app.redis.xinfo_consumers(app.keys.events, app.group)}
    assert "holds-pending" in names and "idle-empty" not in names
    assert await pending(app) == 1


async def test_two_consumers_end_in_the_same_state_as_one(backend: Any, make_app: Any) -> None:
    import random

    from support import Backend

    rng = random.Random(7)
    stamps = rng.sample(range(5000), 300)  # distinct ts, in shuffled order
    entries = [bal(f"A{i % 20}", str(rng.randint(1, 10_000)), ts=START_MS + stamps[i]) for i in range(300)]
    single = make_app(plugins=[("rec", Recorder())], consumer={**FAST, "batch_size": 7})
    await add(single, *entries)
    await Consumer(single, until_idle_s=0.2).run()

    other = Backend(backend.kind)
    try:
        pair = [
            make_app(plugins=[("rec", Recorder())], consumer={**FAST, "batch_size": 7}, name=n, on=other)
            for n in ("x", "y")
        ]
        await add(pair[0], *entries)
        await asyncio.gather(*(Consumer(a, until_idle_s=0.2).run() for a in pair))
        assert all(a.stats.processed > 0 for a in pair)  # both really took part

        expected: dict[str, tuple[int, str]] = {}
        for e in entries:
            held = expected.get(e["asset"])
            if held is None or int(e["ts"]) > held[0]:
                expected[e["asset"]] = (int(e["ts"]), e["balance"])
        for asset, (ts, amount) in expected.items():
            one = await single.redis.hgetall(single.keys.state("rec", asset))
            two = await pair[0].redis.hgetall(pair[0].keys.state("rec", asset))
            assert one == two == {"ts": str(ts), "balance": amount}
    finally:
        await other.cleanup()


async def test_run_survives_refused_writes_and_retries_them(make_app: Any) -> None:
    class Emits:
        @hookimpl
        def navstream_events(self, events: Sequence[Event], out: Outputs) -> None:
            out.emit("nav", {"n": str(len(events))})

    app = make_app(plugins=[("emits", Emits())], consumer={**FAST, "reconnect_max_ms": 100})
    await app.redis.set(app.keys.nav, "not a stream")
    await add(app, bal("BTC"), bal("ETH"))
    assert await Consumer(app, until_idle_s=0.2).run() == 0
    assert await pending(app) == 2
    alerts = [f for _, f in await app.redis.xrange(app.keys.alerts) if f["code"] == "write_failed"]
    assert alerts and alerts[0]["severity"] == "critical" and "WRONGTYPE" in alerts[0]["message"].upper()
    assert "write" in app.stats.last_error

    await app.redis.delete(app.keys.nav)  # ops fixed it: the pending entries go through
    await asyncio.sleep(0.06)
    assert await Consumer(app, until_idle_s=0.2).run() == 0
    assert await pending(app) == 0 and await app.redis.xlen(app.keys.nav) >= 1


async def test_ticks_keep_coming_under_continuous_load(make_app: Any) -> None:
    ticks: list[int] = []

    class Slow:
        @hookimpl
        async def navstream_events(self, events: Sequence[Event]) -> None:
            await asyncio.sleep(0.01)

        @hookimpl
        def navstream_tick(self, now_ms: int) -> None:
            ticks.append(now_ms)

    app = make_app(plugins=[("slow", Slow())], consumer={**FAST, "batch_size": 1})
    await add(app, *(bal(f"A{i}") for i in range(60)))
    assert await Consumer(app, max_events=60).run() == 0
    # 60 batches of >= 10 ms with a 50 ms tick: the loop never waited for idleness, yet ticked
    assert len(ticks) >= 3


async def test_each_entry_a_plugin_fails_keeps_its_own_error(make_app: Any) -> None:
    class Picky:
        @hookimpl
        def navstream_events(self, events: Sequence[Event]) -> None:
            bad = [e.asset for e in events if isinstance(e, Balance) and e.asset.startswith("BAD")]
            if bad:
                raise ValueError(f"refuses {','.join(bad)}")

    app = make_app(plugins=[("picky", Picky())], consumer={**FAST, "max_deliveries": 1})
    consumer = Consumer(app)
    await consumer.setup()
    await add(app, bal("BAD1"), bal("OK"), bal("BAD2"))
    await drain(consumer)
    errors = {f["asset"]: f["dlq_error"] for _, f in await app.redis.xrange(app.keys.dlq)}
    assert errors == {
        "BAD1": "plugin 'picky': ValueError: refuses BAD1",
        "BAD2": "plugin 'picky': ValueError: refuses BAD2",
    }


async def test_a_huge_dead_letter_and_a_huge_batch_are_written_whole(make_app: Any) -> None:
    # max_batch_bytes: after the 40 kB entry, reads would otherwise ask for fewer entries
    app = make_app(plugins=[("rec", Recorder())], consumer={"batch_size": 2500, "max_batch_bytes": 1 << 30})
    consumer = Consumer(app)
    await consumer.setup()
    # too many fields for one script call: the pipelined path writes it, nothing is cut
    huge = {"type": "balance", **{f"f{i}": str(i) for i in range(4000)}}
    await add(app, huge)
    await drain(consumer)
    ((_, dead),) = await app.redis.xrange(app.keys.dlq)
    assert len(dead) == len(huge) + 6 and dead["f3999"] == "3999"
    # more ids than one XACK chunk in a single batch
    pipe = app.redis.pipeline(transaction=False)
    for i in range(2100):
        pipe.xadd(app.keys.events, bal(f"A{i}"))
    await pipe.execute()
    assert await consumer.step(block_ms=1) == 2100
    assert await pending(app) == 0 and app.stats.processed == 2100


@pytest.mark.real_redis
async def test_killed_connections_on_a_real_redis_lose_nothing(real_backend: Any) -> None:
    from navstream.config import load_settings
    from navstream.plugin.manager import build_plugin_manager

    rec = Recorder()
    settings = load_settings(
        env={},
        overrides={
            "redis": {"url": real_backend.url, "prefix": real_backend.prefix, "group": "g"},
            "consumer": {"name": f"killme-{real_backend.prefix}", **FAST, "reconnect_max_ms": 200},
        },
    )
    app = App.create(settings, plugins=build_plugin_manager(load_entrypoints=False, extra=[("rec", rec)], env={}))
    admin = real_backend.connect(True)
    try:
        consumer = Consumer(app, until_idle_s=1.0)
        task = asyncio.create_task(consumer.run())
        await add(app, *(bal(f"A{i}") for i in range(50)))
        await asyncio.sleep(0.2)
        name = f"navstream:{app.consumer_name}"
        clients = [c for c in await admin.client_list() if c["name"] == name]
        assert clients, "the consumer's connections carry its name"
        for client in clients:  # as a network blip or a Redis failover would
            await admin.client_kill_filter(_id=client["id"])
        for i in range(50):
            await admin.xadd(app.keys.events, bal(f"B{i}"))
        assert await asyncio.wait_for(task, 10) == 0
        assert {e.asset for e in rec.seen} >= {f"A{i}" for i in range(50)} | {f"B{i}" for i in range(50)}
        assert await pending(app) == 0
        for i in range(50):
            assert await app.redis.exists(app.keys.state("rec", f"B{i}"))
    finally:
        await admin.aclose()
        await app.aclose()


async def test_a_plugins_malformed_output_fails_that_plugin_alone(make_app: Any) -> None:
    class Sloppy:
        @hookimpl
        def navstream_events(self, events: Sequence[Event], out: Outputs) -> None:
            for e in events:
                out.put_latest(f"sloppy:{e.asset}", e.ts, {"balance": e.balance})  # a Decimal

    class Reserved:
        @hookimpl
        def navstream_events(self, out: Outputs) -> None:
            out.emit("orders", {"x": "1"})  # an input stream is no output

    rec = Recorder()
    app = make_app(
        plugins=[("rec", rec), ("sloppy", Sloppy()), ("reserved", Reserved())], consumer={**FAST, "max_deliveries": 1}
    )
    consumer = Consumer(app)
    await consumer.setup()
    await add(app, bal("BTC"))
    await drain(consumer)  # no crash: the mistakes raised inside the plugins' own calls
    assert await app.redis.hget(app.keys.state("rec", "BTC"), "balance") == "1"
    errors = {f["dlq_error"] for _, f in await app.redis.xrange(app.keys.dlq)}
    assert any("sloppy" in e and "TypeError" in e and "str(Decimal)" in e for e in errors)
    codes = [f["code"] for _, f in await app.redis.xrange(app.keys.alerts)]
    assert codes.count("plugin_error") == 2
    assert not await app.redis.exists(app.keys.orders) or await app.redis.xlen(app.keys.orders) == 0


async def test_a_refused_batch_leaves_nothing_behind(make_app: Any) -> None:
    class Writes:
        @hookimpl
        def navstream_events(self, events: Sequence[Event], out: Outputs) -> None:
            out.emit("nav", {"n": str(len(events))})  # comes first in the script
            out.put_latest("broken", START_MS, {"x": "1"})  # fails: the key is not a hash

    app = make_app(plugins=[("w", Writes())])
    consumer = Consumer(app)
    await consumer.setup()
    await app.redis.set(app.keys.state("broken"), "a string")
    await add(app, bal("BTC"))
    with pytest.raises(WriteError, match="WRONGTYPE"):
        await consumer.step(block_ms=1)
    assert not await app.redis.exists(app.keys.nav)  # checked before anything was written
    assert await pending(app) == 1


async def test_a_hanging_async_hook_times_out_as_a_plugin_failure(make_app: Any) -> None:
    rec = Recorder()

    class Hangs:
        @hookimpl
        async def navstream_events(self, events: Sequence[Event]) -> None:
            if any(getattr(e, "asset", "") == "HANG" for e in events):
                await asyncio.sleep(3600)

    app = make_app(
        plugins=[("rec", rec), ("hangs", Hangs())], consumer={**FAST, "max_deliveries": 1, "hook_timeout_s": 0.05}
    )
    consumer = Consumer(app)
    await consumer.setup()
    await add(app, bal("OK"), bal("HANG"), *(bal(f"H{i}") for i in range(40)))
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(drain(consumer), 5)
    # the batch call, then all entries alone within one more budget: not one timeout per entry
    assert asyncio.get_running_loop().time() - started < 40 * 0.05
    dead = {f["asset"]: f["dlq_error"] for _, f in await app.redis.xrange(app.keys.dlq)}
    assert "did not finish within hook_timeout_s = 0.05s" in dead["HANG"]
    assert set(dead) == {"HANG"}  # the healthy entries after it still got their turn
    assert await app.redis.exists(app.keys.state("rec", "H39"))
    assert await app.redis.exists(app.keys.state("rec", "OK")) and await pending(app) == 0


async def test_orders_from_the_future_are_answerable_not_dropped(make_app: Any) -> None:
    seen: list[Any] = []

    class Gate:
        @hookimpl
        def navstream_orders(self, orders: Sequence[Any]) -> None:
            seen.extend(orders)

    app = make_app(plugins=[("gate", Gate())])
    consumer = Consumer(app)
    await consumer.setup()
    await add(
        app,
        {
            "type": "order",
            "order_id": "o-f",
            "venue": "v",
            "account": "a",
            "symbol": "BTCUSDT",
            "side": "buy",
            "qty": "1",
            "ts": str(START_MS + 3_600_000),
        },
        stream=app.keys.orders,
    )
    await drain(consumer)
    (order,) = seen
    assert isinstance(order, InvalidOrder) and order.order_id == "o-f" and "future" in order.reason


async def test_a_refused_write_is_the_reason_given_when_dead_lettered(make_app: Any) -> None:
    class Emits:
        @hookimpl
        def navstream_events(self, out: Outputs) -> None:
            out.emit("nav", {"n": "1"})

    app = make_app(plugins=[("emits", Emits())], consumer={**FAST, "max_deliveries": 2})
    consumer = Consumer(app)
    await consumer.setup()
    await app.redis.set(app.keys.nav, "not a stream")
    await add(app, bal("BTC"))
    with pytest.raises(WriteError):
        await consumer.step(block_ms=1)
    await app.raw.xclaim(
        app.keys.events, app.group, "crashy", 0, [i for i, _ in await app.redis.xrange(app.keys.events)], retrycount=5
    )
    await asyncio.sleep(0.06)
    await consumer.reclaim()
    ((_, dead),) = await app.redis.xrange(app.keys.dlq)
    assert "batch writes failed" in dead["dlq_error"] and "WRONGTYPE" in dead["dlq_error"]


async def test_entries_trimmed_or_deleted_before_delivery_are_reported_lost(make_app: Any) -> None:
    app = make_app(plugins=[("rec", Recorder())])
    consumer = Consumer(app)
    await consumer.setup()
    ids = await add(app, *(bal(f"A{i}") for i in range(10)))
    [[_, read]] = await app.redis.xreadgroup(app.group, "other", {app.keys.events: ">"}, count=2)
    await app.redis.xack(app.keys.events, app.group, *[i for i, _ in read])
    await app.redis.xtrim(app.keys.events, maxlen=3, approximate=False)  # a producer's MAXLEN
    await consumer.tick()
    await consumer.tick()  # reported once, not every tick
    lost = [f for _, f in await app.redis.xrange(app.keys.alerts) if f["code"] == "entries_lost"]
    assert len(lost) == 1 and lost[0]["message"].startswith("5 entries") and "trimmed" in lost[0]["message"]
    assert app.stats.lost == 5

    await app.redis.xdel(app.keys.events, ids[-1])  # an unread entry deleted
    await consumer.tick()
    lost = [f for _, f in await app.redis.xrange(app.keys.alerts) if f["code"] == "entries_lost"]
    assert len(lost) == 2 and lost[1]["message"].startswith("1 entries") and app.stats.lost == 6

    # a restarted consumer (new memory) does not report the same loss again
    again = Consumer(app)
    await again.setup()
    await again.tick()
    assert len([f for _, f in await app.redis.xrange(app.keys.alerts) if f["code"] == "entries_lost"]) == 2


async def test_an_unread_entry_deleted_in_the_middle_is_reported(make_app: Any) -> None:
    app = make_app(plugins=[("rec", Recorder())])
    consumer = Consumer(app)
    await consumer.setup()
    ids = await add(app, *(bal(f"A{i}") for i in range(5)))
    await app.redis.xreadgroup(app.group, "other", {app.keys.events: ">"}, count=1)
    await app.redis.xack(app.keys.events, app.group, ids[0])
    await app.redis.xdel(app.keys.events, ids[2])  # the stream still starts at what was read
    await consumer.tick()
    (lost,) = [f for _, f in await app.redis.xrange(app.keys.alerts) if f["code"] == "entries_lost"]
    assert "XDEL" in lost["message"] and ids[2] in lost["message"]


async def test_acknowledged_entries_trimmed_are_not_reported(make_app: Any) -> None:
    app = make_app(plugins=[("rec", Recorder())])
    consumer = Consumer(app)
    await consumer.setup()
    await add(app, *(bal(f"A{i}") for i in range(10)))
    await drain(consumer)
    await add(app, bal("B"))
    await app.redis.xtrim(app.keys.events, maxlen=1, approximate=False)  # only acked ones go
    await consumer.tick()
    assert not [f for _, f in await app.redis.xrange(app.keys.alerts) if f["code"] == "entries_lost"]


async def test_alerts_of_a_tick_whose_write_failed_are_raised_again(make_app: Any) -> None:
    app = make_app(plugins=[("rec", Recorder())], consumer={"dlq_maxlen": 100})
    consumer = Consumer(app)
    await consumer.setup()
    for i in range(95):
        await app.redis.xadd(app.keys.dlq, {"n": str(i)})
    await app.redis.rename(app.keys.alerts, app.keys.alerts + ":saved")
    await app.redis.set(app.keys.alerts, "broken")
    with pytest.raises(WriteError):
        await consumer.tick()
    await app.redis.delete(app.keys.alerts)
    await consumer.tick()
    codes = [f["code"] for _, f in await app.redis.xrange(app.keys.alerts)]
    assert codes == ["dlq_near_capacity"]
    await consumer.tick()
    assert [f["code"] for _, f in await app.redis.xrange(app.keys.alerts)] == ["dlq_near_capacity"]


async def test_a_lost_entries_report_survives_a_failed_write(make_app: Any) -> None:
    app = make_app(plugins=[("rec", Recorder())], consumer=FAST)
    consumer = Consumer(app)
    await consumer.setup()
    ids = await strand_with_one_deleted(app)
    await app.redis.delete(app.keys.alerts)
    await app.redis.set(app.keys.alerts, "broken")
    await asyncio.sleep(0.06)
    with pytest.raises(WriteError):
        await consumer.reclaim()  # XAUTOCLAIM dropped the id from the PEL; the report must stay
    await app.redis.delete(app.keys.alerts)
    await consumer.tick()
    lost = [f for _, f in await app.redis.xrange(app.keys.alerts) if f["code"] == "entries_lost"]
    assert any(ids[0] in f["message"] for f in lost)


async def test_an_oversize_batch_is_pre_checked_too(make_app: Any) -> None:
    class Writes:
        @hookimpl
        def navstream_events(self, events: Sequence[Event], out: Outputs) -> None:
            out.emit("nav", {"n": str(len(events))})
            out.hset("broken", {"x": "1"})

    app = make_app(plugins=[("w", Writes())])
    consumer = Consumer(app)
    await consumer.setup()
    await app.redis.set(app.keys.state("broken"), "a string")
    # an undecodable entry this wide makes the batch take the pipelined path
    await add(app, bal("BTC"), {"type": "balance", **{f"f{i}": "1" for i in range(4000)}})
    with pytest.raises(WriteError, match="WRONGTYPE"):
        await consumer.step(block_ms=1)
    assert not await app.redis.exists(app.keys.nav) and not await app.redis.exists(app.keys.dlq)
    assert await pending(app) == 2


async def test_heartbeat_and_ticks_go_on_while_every_batch_is_refused(make_app: Any) -> None:
    ticks: list[int] = []

    class Writes:
        @hookimpl
        def navstream_events(self, out: Outputs) -> None:
            out.emit("nav", {"n": "1"})

        @hookimpl
        def navstream_tick(self, now_ms: int) -> None:
            ticks.append(now_ms)

    app = make_app(plugins=[("w", Writes())], consumer={**FAST, "reconnect_max_ms": 100, "alert_cooldown_s": 60})
    await app.redis.set(app.keys.nav, "not a stream")  # every batch, fresh or reclaimed, is refused
    await add(app, *(bal(f"A{i}") for i in range(5)))
    assert await Consumer(app, until_idle_s=0.6).run() == 0
    assert len(ticks) >= 5  # reclaims failed every tick, and the ticks still ran
    beat = await app.redis.hgetall(app.keys.heartbeat(app.consumer_name))
    assert int(beat["write_failures"]) >= 3
    codes = [f["code"] for _, f in await app.redis.xrange(app.keys.alerts)]
    assert codes.count("write_failed") == 1  # one alert per cooldown, not one per failure


async def test_a_recreated_groups_alert_is_owed_until_written(make_app: Any) -> None:
    app = make_app(plugins=[("rec", Recorder())])
    consumer = Consumer(app)
    await consumer.setup()
    await app.redis.delete(app.keys.events)
    await app.redis.set(app.keys.alerts, "broken")
    from redis.exceptions import ResponseError as RE

    with pytest.raises(WriteError):
        await consumer._group_missing(RE("NOGROUP gone"))
    await app.redis.delete(app.keys.alerts)
    await consumer._group_missing(RE("NOGROUP gone"))  # the group exists now (BUSYGROUP)
    codes = [f["code"] for _, f in await app.redis.xrange(app.keys.alerts)]
    assert codes == ["group_recreated"]


async def test_a_startup_hook_failing_with_an_os_error_is_not_a_redis_outage(make_app: Any) -> None:
    from navstream.loop.consumer import StartupError

    class NeedsFile:
        @hookimpl
        def navstream_startup(self) -> None:
            open("/nonexistent/navstream-credentials.json")

    app = make_app(plugins=[("nf", NeedsFile())])
    with pytest.raises(StartupError, match="FileNotFoundError"):
        await asyncio.wait_for(Consumer(app).run(), 5)
    assert app.stats.reconnects == 0


async def test_an_oversize_batch_with_a_corrupt_state_ts_writes_nothing(make_app: Any) -> None:
    class Writes:
        @hookimpl
        def navstream_events(self, events: Sequence[Event], out: Outputs) -> None:
            out.emit("nav", {"n": str(len(events))})
            out.put_latest("corrupt", START_MS, {"x": "1"})

    app = make_app(plugins=[("w", Writes())])
    consumer = Consumer(app)
    await consumer.setup()
    await app.redis.hset(app.keys.state("corrupt"), mapping={"ts": "yesterday"})
    await add(app, bal("BTC"), {"type": "balance", **{f"f{i}": "1" for i in range(4000)}})
    with pytest.raises(WriteError, match="BADSTATE"):
        await consumer.step(block_ms=1)
    assert not await app.redis.exists(app.keys.nav) and not await app.redis.exists(app.keys.dlq)


async def test_a_plugin_failing_every_batch_raises_one_alert_per_cooldown(make_app: Any) -> None:
    class Broken:
        @hookimpl
        def navstream_events(self) -> None:
            raise RuntimeError("venue API schema changed")

    app = make_app(plugins=[("broken", Broken())], consumer={"batch_size": 1})
    consumer = Consumer(app)
    await consumer.setup()
    await add(app, *(bal(f"A{i}") for i in range(4)))
    await drain(consumer)
    codes = [f["code"] for _, f in await app.redis.xrange(app.keys.alerts)]
    assert codes.count("plugin_error") == 1 and app.stats.plugin_errors == 4
    assert app.stats.failed == 4 and await pending(app) == 4  # each still pending, with its error
    assert await app.redis.hlen(app.keys.failures) == 4
