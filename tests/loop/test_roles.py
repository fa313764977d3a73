"""Consumer roles (``[consumer] role``, ``navstream run --role``): orders consumers that never wait
for event batches, events consumers, and the same group, reclaim and dead-letter rules in each;
on fakeredis and on a real Redis."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from support import START_MS

from navstream import App, ConfigError, Event, Outputs, hookimpl
from navstream.cli import build_parser, main
from navstream.cli.commands import _settings
from navstream.config import load_settings
from navstream.loop.consumer import Consumer
from navstream.ops.admin import collect_status
from navstream.render import render_status
from navstream.testing import start_consumer

FAST = {"block_ms": 5, "claim_idle_ms": 40, "tick_ms": 50}
#: How long the slow event plugin sleeps in one batch: well under its hook_timeout_s.
SLOW_S = 2.0

ORDER = {
    "type": "order",
    "order_id": "o-1",
    "venue": "v",
    "account": "a",
    "symbol": "BTCUSDT",
    "side": "buy",
    "qty": "1",
    "ts": str(START_MS),
}
EVENT = {"type": "balance", "venue": "v", "account": "a", "asset": "BTC", "balance": "1", "ts": str(START_MS)}


class Gate:
    """Answers every order at once, as a risk gate does (a decision on ``P:decisions``)."""

    @hookimpl
    def navstream_orders(self, orders: Sequence[Any], out: Outputs) -> None:
        for order in orders:
            out.emit("decisions", {"order_id": order.order_id, "decision": "approve"})


class SlowEvents:
    """Takes :data:`SLOW_S` over each event batch; says when it is inside one and when done."""

    def __init__(self) -> None:
        self.inside = asyncio.Event()
        self.done = asyncio.Event()
        self.seen: list[Event] = []

    @hookimpl
    async def navstream_events(self, events: Sequence[Event]) -> None:
        self.inside.set()
        await asyncio.sleep(SLOW_S)
        self.seen += events
        self.done.set()


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Event] = []

    @hookimpl
    def navstream_events(self, events: Sequence[Event]) -> None:
        self.seen += events


class AlwaysFails:
    @hookimpl
    def navstream_events(self, events: Sequence[Event]) -> None:
        raise RuntimeError("cannot value this balance")


async def pending_for(app: App, stream: str) -> dict[str, int]:
    """Consumer name -> how many entries of ``stream`` are pending for it in the group."""
    rows = await app.redis.xpending_range(stream, app.group, min="-", max="+", count=100)
    out: dict[str, int] = {}
    for row in rows:
        name = str(row["consumer"])
        out[name] = out.get(name, 0) + 1
    return out


async def decisions(app: App) -> list[dict[str, str]]:
    return [cast("dict[str, str]", f) for _, f in await app.redis.xrange(app.keys.decisions) or []]


# --- settings ------------------------------------------------------------------------------------


def test_the_role_is_validated_and_named_in_one_line() -> None:
    assert load_settings(env={}).consumer.role == "all"
    for env, overrides in (({}, {"consumer": {"role": "ordres"}}), ({"NAVSTREAM_CONSUMER_ROLE": "ordres"}, None)):
        with pytest.raises(ConfigError) as caught:
            load_settings(env=env, overrides=overrides)
        message = str(caught.value)
        assert "`consumer.role`" in message and "'ordres'" in message and "\n" not in message


def test_the_role_comes_from_the_file_the_environment_and_the_flag(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[consumer]\nrole = "events"\n')
    assert load_settings(config, env={}).consumer.role == "events"
    assert load_settings(config, env={"NAVSTREAM_CONSUMER_ROLE": "orders"}).consumer.role == "orders"
    args = build_parser().parse_args(["run", "--config", str(config), "--role", "all"])
    assert _settings(args).consumer.role == "all"  # the flag wins over the file (and the environment)
    assert build_parser().parse_args(["run"]).role is None  # no flag: the file or environment decides


def test_an_unknown_role_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["run", "--role", "ordres"])
    assert caught.value.code == 2
    assert "--role: invalid choice: 'ordres'" in capsys.readouterr().err


def test_an_orders_consumer_without_an_order_plugin_does_not_start(
    make_app: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(plugins=[("rec", Recorder())], consumer={"role": "orders"})
    with pytest.raises(ConfigError, match='role is "orders", but no loaded plugin implements navstream_orders'):
        Consumer(app)
    Consumer(make_app(plugins=[("rec", Recorder())], consumer={"role": "events"}))  # events need no gate

    # From the command line: one line, exit code 2 as any config error, before Redis is asked.
    monkeypatch.setenv("NAVSTREAM_PLUGINS", "")  # no plugin at all
    code = main(["run", "--role", "orders", "--redis-url", "redis://127.0.0.1:1/0", "--until-idle", "0.1"])
    err = capsys.readouterr().err
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert line.startswith('navstream: error: <defaults>: [consumer] role is "orders"') and "loaded: none" in line


def test_config_check_refuses_an_orders_role_no_plugin_can_fill(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[consumer]\nrole = "orders"\n[plugins]\ndisabled = ["risk"]\n')
    assert main(["config", "check", str(config)]) == 2
    assert 'role is "orders"' in capsys.readouterr().err


# --- which streams each role reads -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "gate", "reads", "warned"),
    [
        ("all", True, ["events", "orders"], False),
        ("all", False, ["events"], True),
        ("orders", True, ["orders"], False),
        ("events", True, ["events"], False),
        ("events", False, ["events"], False),  # orders are another role's job: no warning
    ],
)
async def test_the_streams_each_role_reads(
    make_app: Any, caplog: pytest.LogCaptureFixture, role: str, gate: bool, reads: list[str], warned: bool
) -> None:
    plugins: list[tuple[str, object]] = [("rec", Recorder())] + ([("gate", Gate())] if gate else [])
    app = make_app(plugins=plugins, consumer={**FAST, "role": role})
    with caplog.at_level(logging.INFO, logger="navstream.consumer"):
        consumer = await start_consumer(app)
    streams = [getattr(app.keys, name) for name in reads]
    assert consumer.streams == streams
    for stream in app.keys.inputs:  # every consumer creates every input's group
        assert [g["name"] for g in await app.redis.xinfo_groups(stream)] == [app.group]
    codes = [f["code"] for _, f in await app.redis.xrange(app.keys.alerts)]
    assert ("no_order_handler" in codes) is warned
    (started,) = [r for r in caplog.records if getattr(r, "event", "") == "consumer_started"]
    assert (started.role, started.streams) == (role, streams)  # type: ignore[attr-defined]

    await app.redis.xadd(app.keys.events, EVENT)
    await app.redis.xadd(app.keys.orders, ORDER)
    while await consumer.step(block_ms=1):
        pass
    assert app.stats.by_type["balance"] == (1 if "events" in reads else 0)
    assert app.stats.by_type["order"] == (1 if "orders" in reads else 0)
    await consumer.tick()
    beat = await app.redis.hgetall(app.keys.heartbeat(app.consumer_name))
    assert beat["role"] == role and beat["streams"] == ",".join(streams)


# --- an order never waits for an event batch ---------------------------------------------------------


@pytest.mark.parametrize(
    ("split", "lane"),
    [(True, False), (False, True), (False, False)],
    ids=["orders-and-events-consumers", "one-all-consumer-with-orders-lane", "one-all-consumer"],
)
async def test_an_order_is_answered_while_an_event_batch_is_slow(make_app: Any, split: bool, lane: bool) -> None:
    """The order's decision is written while the event plugin is still in its sleep: split, by
    the orders consumer; with one consumer of role all and ``orders_lane``, by its lane
    (navstream.loop.lane), which reads orders on its own task while the loop's event batch
    awaits. One consumer of role all without the lane (the default) is the contrast, and the
    proof this test can fail: its order waits for the event batch."""
    slow = SlowEvents()
    plugins = [("slow", slow), ("gate", Gate())]
    settings = {**FAST, "claim_idle_ms": 60_000, "hook_timeout_s": 4 * SLOW_S, "orders_lane": lane}
    roles = ["orders", "events"] if split else ["all"]
    apps = [make_app(plugins=plugins, consumer={**settings, "role": role}, name=f"c-{role}") for role in roles]
    app = apps[0]
    consumers = [Consumer(a) for a in apps]
    tasks = [asyncio.create_task(c.run()) for c in consumers]

    async def answered() -> None:
        while not await app.redis.xlen(app.keys.decisions):
            await asyncio.sleep(0.005)

    try:
        await app.redis.xadd(app.keys.events, EVENT)
        await asyncio.wait_for(slow.inside.wait(), 10)  # the event batch is in the plugin now
        await app.redis.xadd(app.keys.orders, ORDER)
        decision, events_done = asyncio.create_task(answered()), asyncio.create_task(slow.done.wait())
        first, _ = await asyncio.wait({decision, events_done}, timeout=4 * SLOW_S, return_when=asyncio.FIRST_COMPLETED)
        if split or lane:
            assert first == {decision}, "the order waited for the event batch"
            assert not slow.done.is_set() and slow.seen == []  # still inside its sleep
        else:
            assert first == {events_done}, "the order was answered before the event batch finished"
            assert not decision.done() and consumers[0].lane is None
        if lane:
            held = consumers[0].lane
            assert held is not None and held.handler.handled == 1  # the lane answered it, not the loop
        await asyncio.wait_for(asyncio.gather(decision, events_done), 4 * SLOW_S)  # answered in the end
        assert [d["order_id"] for d in await decisions(app)] == ["o-1"]
    finally:
        for consumer in consumers:
            consumer.request_stop()
        assert await asyncio.wait_for(asyncio.gather(*tasks), 4 * SLOW_S) == [0] * len(tasks)
    if split:  # each consumer handled its own stream only
        assert (apps[0].stats.by_type["order"], apps[0].stats.by_type["balance"]) == (1, 0)
        assert (apps[1].stats.by_type["order"], apps[1].stats.by_type["balance"]) == (0, 1)
    for stream in app.keys.inputs:
        assert await pending_for(app, stream) == {}


# --- reclaiming and dead letters, per role ----------------------------------------------------------


async def test_an_orders_consumer_answers_the_order_a_crashed_one_left_pending(make_app: Any) -> None:
    # claim_idle_ms long enough that B's first reclaim surely comes before it (a loaded machine)
    settings = {**FAST, "claim_idle_ms": 500, "role": "orders"}
    app = make_app(plugins=[("gate", Gate())], consumer=settings, name="orders-b")
    b = await start_consumer(app)
    await app.redis.xadd(app.keys.orders, ORDER)
    # orders consumer A reads the order, then crashes before it answers or acknowledges it
    await app.raw.xreadgroup(app.group, "orders-a", {app.keys.orders: ">"}, count=10)
    assert await b.step(block_ms=1) == 0 and await b.reclaim() == 0  # A's, and not idle long enough
    assert await decisions(app) == []
    await asyncio.sleep(0.55)  # past claim_idle_ms
    assert await b.reclaim() == 1
    assert [d["order_id"] for d in await decisions(app)] == ["o-1"]
    assert await pending_for(app, app.keys.orders) == {}
    assert app.stats.by_type["order"] == 1 and app.stats.processed == 1


async def test_an_events_consumer_dead_letters_what_keeps_failing(make_app: Any) -> None:
    app = make_app(
        plugins=[("gate", Gate()), ("broken", AlwaysFails())],
        consumer={**FAST, "role": "events", "max_deliveries": 3},
    )
    consumer = await start_consumer(app)
    entry_id = await app.redis.xadd(app.keys.events, EVENT)
    assert await consumer.step(block_ms=1) == 1  # delivery 1: failed, still pending
    assert await pending_for(app, app.keys.events) == {app.consumer_name: 1}
    for _ in range(2):  # deliveries 2 and 3, reclaimed by this same consumer
        await asyncio.sleep(0.06)
        assert await consumer.reclaim() == 1
    ((_, dead),) = await app.redis.xrange(app.keys.dlq)
    assert (dead["dlq_id"], dead["dlq_stream"], dead["dlq_deliveries"]) == (entry_id, app.keys.events, "3")
    assert "cannot value this balance" in dead["dlq_error"]
    assert await pending_for(app, app.keys.events) == {}


async def test_each_role_reclaims_only_the_streams_it_reads(make_app: Any) -> None:
    rec = Recorder()
    plugins = [("rec", rec), ("gate", Gate())]
    orders_app = make_app(plugins=plugins, consumer={**FAST, "role": "orders"}, name="orders-1")
    events_app = make_app(plugins=plugins, consumer={**FAST, "role": "events"}, name="events-1")
    orders_consumer, events_consumer = await start_consumer(orders_app), await start_consumer(events_app)
    keys = orders_app.keys
    await orders_app.redis.xadd(keys.events, EVENT)
    await orders_app.redis.xadd(keys.orders, ORDER)
    # a consumer of role all reads both, then dies
    await orders_app.raw.xreadgroup(orders_app.group, "dead", {keys.events: ">", keys.orders: ">"}, count=10)
    await asyncio.sleep(0.06)

    assert await events_consumer.reclaim() == 1  # the event only
    assert len(rec.seen) == 1 and await decisions(orders_app) == []
    assert await pending_for(orders_app, keys.orders) == {"dead": 1}  # the order is left to an orders consumer
    assert await pending_for(orders_app, keys.events) == {}

    assert await orders_consumer.reclaim() == 1  # the order only
    assert [d["order_id"] for d in await decisions(orders_app)] == ["o-1"]
    assert await pending_for(orders_app, keys.orders) == {}
    assert len(rec.seen) == 1  # the orders consumer handled no event
    assert (orders_app.stats.processed, events_app.stats.processed) == (1, 1)


# --- ticks by role -----------------------------------------------------------------------------------


class _Ticks:
    def __init__(self, name: str, ticked: list[str]) -> None:
        self.name, self.ticked = name, ticked

    @hookimpl
    def navstream_tick(self) -> None:
        self.ticked.append(self.name)


class EventsTicker(_Ticks):
    @hookimpl
    def navstream_events(self) -> None: ...


class OrdersTicker(_Ticks):
    @hookimpl
    def navstream_orders(self) -> None: ...


class BothTicker(EventsTicker, OrdersTicker):
    pass


class BrokenOrdersTicker(OrdersTicker):
    @hookimpl
    def navstream_tick(self) -> None:
        raise ValueError("tick bug")


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("all", {"events", "orders", "both", "plain", "broken"}),
        ("orders", {"orders", "both", "broken"}),
        ("events", {"events", "both", "plain"}),
    ],
)
async def test_ticks_follow_the_role_and_the_hooks_a_plugin_implements(
    make_app: Any, role: str, expected: set[str]
) -> None:
    ticked: list[str] = []
    plugins = [
        ("events", EventsTicker("events", ticked)),
        ("orders", OrdersTicker("orders", ticked)),
        ("both", BothTicker("both", ticked)),
        ("plain", _Ticks("plain", ticked)),
        ("broken", BrokenOrdersTicker("broken", ticked)),
    ]
    app = make_app(plugins=plugins, consumer={**FAST, "role": role})
    consumer = await start_consumer(app)
    await consumer.tick()
    assert set(ticked) == expected - {"broken"} and len(ticked) == len(set(ticked))
    alerts = [f for _, f in await app.redis.xrange(app.keys.alerts) if f["code"] == "plugin_error"]
    # a failing tick is still isolated and alerted, where it runs
    assert bool(alerts) is ("broken" in expected)


# --- the role where consumers are listed ---------------------------------------------------------------


async def test_status_and_the_status_page_show_each_consumers_role(make_app: Any) -> None:
    from support.serving import serving

    plugins = [("rec", Recorder()), ("gate", Gate())]
    events_app = make_app(plugins=plugins, consumer={**FAST, "role": "events"}, name="events-1")
    await (await start_consumer(events_app)).tick()
    orders_app = make_app(plugins=plugins, consumer={**FAST, "role": "orders"}, name="orders-1")
    async with serving(orders_app) as (_, client):
        status = (await client.get("/api/status")).json()
        assert status["consumer"]["role"] == "orders" and status["consumer"]["streams"] == [orders_app.keys.orders]
        assert {c["name"]: c["role"] for c in status["consumers"]} == {"events-1": "events", "orders-1": "orders"}

    status = await collect_status(orders_app)
    assert {h["consumer"]: h["role"] for h in status["consumers"]} == {"events-1": "events", "orders-1": "orders"}
    rows = {line.split()[0]: line.split() for line in render_status(status).splitlines() if line.strip()}
    assert rows["events-1"][1:3] == ["running", "events"] and rows["orders-1"][1:3] == ["stopped", "orders"]


# --- the orders lane (role all, orders_lane on) --------------------------------------------------


async def test_an_orders_lane_that_dies_stops_the_consumer_with_its_error(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lane ended by an error the loop would not survive never leaves the consumer running
    without reading orders, nor exiting 0 as if nothing happened."""
    from navstream.loop.lane import OrdersLane

    async def broken(self: OrdersLane) -> int:
        raise RuntimeError("lane bug")

    monkeypatch.setattr(OrdersLane, "step", broken)
    app = make_app(plugins=[("gate", Gate())], consumer={**FAST, "orders_lane": True})
    consumer = Consumer(app)
    with pytest.raises(RuntimeError, match="lane bug"):
        await asyncio.wait_for(consumer.run(), 10)
    assert consumer.phase == "stopped"


async def test_the_loop_does_not_reclaim_orders_the_lane_holds_for_a_retry(make_app: Any) -> None:
    app = make_app(plugins=[("gate", Gate())], consumer={**FAST, "orders_lane": True})
    consumer = Consumer(app)
    task = asyncio.create_task(consumer.run())
    try:
        while consumer.lane is None:
            await asyncio.sleep(0.01)
        reclaims: list[int] = []
        original = consumer.upkeep.reclaim

        async def counted(streams: list[str]) -> int:
            reclaims.append(1)
            return await original(streams)

        consumer.upkeep.reclaim = counted  # type: ignore[method-assign]
        handler = consumer.lane.handler
        original_handle = handler.handle

        async def refused_again(entries: list[Any]) -> None:
            await asyncio.sleep(0.02)  # Redis refuses it again: it stays held

        handler.handle = refused_again  # type: ignore[method-assign]
        handler.held = []  # a batch Redis refused, waiting to be retried as it is
        await asyncio.sleep(0.3)  # several ticks (tick_ms 50)
        assert reclaims == []
        handler.held = None
        handler.handle = original_handle  # type: ignore[method-assign]
        await asyncio.sleep(0.3)
        assert reclaims  # and again once it is written
    finally:
        consumer.request_stop()
        assert await asyncio.wait_for(task, 10) == 0


async def test_a_batch_the_lane_cannot_write_is_reported_like_the_loops(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis refusing the writes of the lane's batch is counted, alerted and backed off from,
    as the loop does for its own: never only a log line."""
    from navstream.loop.lane import OrdersLane
    from navstream.store.errors import WriteError

    calls = {"n": 0}

    async def refused_once(self: OrdersLane) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise WriteError("batch writes failed, nothing acknowledged: WRONGTYPE")
        await asyncio.sleep(0.01)
        return 0

    monkeypatch.setattr(OrdersLane, "step", refused_once)
    app = make_app(plugins=[("gate", Gate())], consumer={**FAST, "orders_lane": True})
    consumer = Consumer(app)
    task = asyncio.create_task(consumer.run())
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while app.stats.write_failures == 0 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert app.stats.write_failures == 1 and "WRONGTYPE" in app.stats.last_error
        codes = [f["code"] for _, f in await app.redis.xrange(app.keys.alerts)]
        assert "write_failed" in codes
    finally:
        consumer.request_stop()
        assert await asyncio.wait_for(task, 10) == 0
