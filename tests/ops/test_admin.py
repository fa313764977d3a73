"""Operations: safe trimming, the dead-letter stream, status, and `publish`'s validation.

Every test runs on fakeredis and again on the real Redis (the ``backend`` fixture). Stream ids
are given explicitly (``1-0``, ``2-0``, ...) so the expected trim points are exact.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from redis.exceptions import ResponseError

from navstream import hookimpl
from navstream.app import App
from navstream.loop.consumer import Consumer
from navstream.ops.admin import (
    AdminError,
    InvalidIdError,
    Replayed,
    collect_status,
    dlq_list,
    dlq_purge,
    dlq_replay,
    next_id,
    parse_id,
    safe_trim_point,
    trim_input,
)
from navstream.ops.publish import (
    Prepared,
    PublishError,
    decode_text,
    parse_json_lines,
    parse_kv,
    prepare,
    publish,
)

GROUP = "g"  # make_app's group


# --- helpers ------------------------------------------------------------------------------------


async def fill(app: App, stream: str, n: int, start: int = 1) -> list[str]:
    """XADD ``n`` entries with ids ``start-0``, ``start+1-0``, ...; return the ids."""
    ids = []
    for i in range(start, start + n):
        ids.append(await app.redis.xadd(stream, {"n": str(i)}, id=f"{i}-0"))
    return ids


async def read(app: App, stream: str, group: str, consumer: str, count: int) -> list[str]:
    """XREADGROUP ``count`` new entries for ``consumer``; return their ids."""
    response = await app.redis.xreadgroup(group, consumer, {stream: ">"}, count=count)
    return [entry_id for _, items in response or [] for entry_id, _ in items]


async def pending_ids(app: App, stream: str, group: str) -> list[str]:
    rows = await app.redis.xpending_range(stream, group, min="-", max="+", count=1000)
    return [r["message_id"] for r in rows]


async def stream_ids(app: App, stream: str) -> list[str]:
    return [entry_id for entry_id, _ in await app.redis.xrange(stream)]


# --- ids ----------------------------------------------------------------------------------------


def test_parse_and_next_id() -> None:
    assert parse_id("5-3") == (5, 3)
    assert parse_id("7") == (7, 0)
    assert next_id("5-3") == "5-4"
    assert next_id("0-0") == "0-1"
    assert parse_id("10-0") > parse_id("9-99")  # numeric, not lexicographic


# --- trim ---------------------------------------------------------------------------------------


async def test_trim_refuses_a_stream_without_group(make_app: Any) -> None:
    app = make_app()
    await fill(app, app.keys.events, 3)
    with pytest.raises(AdminError, match="no consumer group"):
        await safe_trim_point(app, app.keys.events)
    with pytest.raises(AdminError, match="nothing is trimmed"):
        await trim_input(app, app.keys.events)
    assert await app.redis.xlen(app.keys.events) == 3


async def test_trim_refuses_a_missing_stream(make_app: Any) -> None:
    app = make_app()
    with pytest.raises(AdminError, match="no consumer group"):
        await trim_input(app, app.keys.orders)
    assert await app.redis.exists(app.keys.orders) == 0


async def test_trim_with_a_fresh_group_trims_nothing(make_app: Any) -> None:
    app = make_app()
    await fill(app, app.keys.events, 4)
    created = await Consumer(app).ensure_groups(app.keys.inputs)
    assert created == list(app.keys.inputs)
    point, groups = await safe_trim_point(app, app.keys.events)
    assert point == "0-1"
    assert groups == [{"group": GROUP, "bound": "0-1", "why": "first undelivered"}]
    result = await trim_input(app, app.keys.events)
    assert result["removed"] == 0
    assert await stream_ids(app, app.keys.events) == ["1-0", "2-0", "3-0", "4-0"]
    # The other input: a group but an empty stream.
    result = await trim_input(app, app.keys.orders)
    assert result["removed"] == 0 and result["length_before"] == 0


async def test_trim_stops_at_the_oldest_pending_entry(make_app: Any) -> None:
    app = make_app()
    events = app.keys.events
    await fill(app, events, 6)
    await Consumer(app).ensure_groups([events])
    assert await read(app, events, GROUP, "c1", 4) == ["1-0", "2-0", "3-0", "4-0"]
    await app.redis.xack(events, GROUP, "1-0", "2-0", "4-0")  # 3-0 stays pending

    point, groups = await safe_trim_point(app, events)
    assert point == "3-0"
    assert groups == [{"group": GROUP, "bound": "3-0", "why": "oldest pending"}]

    result = await trim_input(app, events)
    assert result == {
        "stream": events,
        "minid": "3-0",
        "length_before": 6,
        "removed": 2,
        "dry_run": False,
        "groups": groups,
    }
    assert await stream_ids(app, events) == ["3-0", "4-0", "5-0", "6-0"]
    # The pending entry is still pending and still readable, so it can be reclaimed.
    assert await pending_ids(app, events, GROUP) == ["3-0"]
    assert await app.redis.xrange(events, min="3-0", max="3-0") == [("3-0", {"n": "3"})]
    # Undelivered entries are still delivered afterwards.
    assert await read(app, events, GROUP, "c1", 10) == ["5-0", "6-0"]


async def test_trim_with_everything_acked_keeps_undelivered_entries(make_app: Any) -> None:
    app = make_app()
    events = app.keys.events
    await fill(app, events, 6)
    await Consumer(app).ensure_groups([events])
    delivered = await read(app, events, GROUP, "c1", 4)
    await app.redis.xack(events, GROUP, *delivered)

    point, groups = await safe_trim_point(app, events)
    assert point == "4-1"
    assert groups[0]["why"] == "first undelivered"

    result = await trim_input(app, events)
    assert result["removed"] == 4
    assert await stream_ids(app, events) == ["5-0", "6-0"]
    assert await pending_ids(app, events, GROUP) == []
    assert await read(app, events, GROUP, "c2", 10) == ["5-0", "6-0"]


@pytest.mark.parametrize("slow_first", [True, False], ids=["slow-created-first", "slow-created-last"])
async def test_trim_with_two_groups_the_slower_group_wins(make_app: Any, slow_first: bool) -> None:
    app = make_app()
    events = app.keys.events
    await fill(app, events, 8)
    order = ["slow", "fast"] if slow_first else ["fast", "slow"]
    for name in order:
        await app.redis.xgroup_create(events, name, id="0")
    # fast: everything delivered and acked.
    await app.redis.xack(events, "fast", *await read(app, events, "fast", "f", 100))
    # slow: five delivered, 3-0 and 5-0 still pending.
    await read(app, events, "slow", "s", 5)
    await app.redis.xack(events, "slow", "1-0", "2-0", "4-0")

    point, groups = await safe_trim_point(app, events)
    assert point == "3-0"
    by_group = {g["group"]: g for g in groups}
    assert by_group["fast"] == {"group": "fast", "bound": "8-1", "why": "first undelivered"}
    assert by_group["slow"] == {"group": "slow", "bound": "3-0", "why": "oldest pending"}

    result = await trim_input(app, events)
    assert result["removed"] == 2
    assert await stream_ids(app, events) == [f"{i}-0" for i in range(3, 9)]
    assert await pending_ids(app, events, "slow") == ["3-0", "5-0"]


async def test_trim_slow_group_with_nothing_pending_bounds_at_first_undelivered(make_app: Any) -> None:
    app = make_app()
    events = app.keys.events
    await fill(app, events, 5)
    for name in ("a", "b"):
        await app.redis.xgroup_create(events, name, id="0")
    await app.redis.xack(events, "a", *await read(app, events, "a", "x", 4))
    await app.redis.xack(events, "b", *await read(app, events, "b", "y", 2))
    point, _ = await safe_trim_point(app, events)
    assert point == "2-1"
    assert (await trim_input(app, events))["removed"] == 2
    assert await stream_ids(app, events) == ["3-0", "4-0", "5-0"]


async def test_trim_dry_run_trims_nothing(make_app: Any) -> None:
    app = make_app()
    events = app.keys.events
    await fill(app, events, 5)
    await Consumer(app).ensure_groups([events])
    await app.redis.xack(events, GROUP, *await read(app, events, GROUP, "c1", 3))
    result = await trim_input(app, events, dry_run=True)
    assert result["dry_run"] is True
    assert result["minid"] == "3-1"
    assert result["removed"] == 0
    assert result["length_before"] == 5
    assert await stream_ids(app, events) == ["1-0", "2-0", "3-0", "4-0", "5-0"]
    # The same call for real removes what the dry run announced.
    assert (await trim_input(app, events))["removed"] == 3


@pytest.mark.parametrize(
    ("delivered", "acked"),
    [
        (0, []),
        (10, []),
        (10, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
        (10, [2, 3, 4, 5, 6, 7, 8, 9, 10]),
        (7, [1, 2, 3, 5, 6]),
        (3, [1, 3]),
        (10, [1, 2, 3, 4, 5, 6, 7, 8, 9]),
    ],
)
async def test_trim_never_removes_pending_or_undelivered(make_app: Any, delivered: int, acked: list[int]) -> None:
    app = make_app()
    events = app.keys.events
    await fill(app, events, 10)
    await Consumer(app).ensure_groups([events])
    # Two consumers share the deliveries, so the pending list spans consumers.
    got = await read(app, events, GROUP, "c1", delivered // 2) if delivered // 2 else []
    got += await read(app, events, GROUP, "c2", delivered - len(got)) if delivered - len(got) else []
    assert len(got) == delivered
    if acked:
        await app.redis.xack(events, GROUP, *[f"{i}-0" for i in acked])
    pending_before = await pending_ids(app, events, GROUP)
    undelivered = [f"{i}-0" for i in range(delivered + 1, 11)]

    result = await trim_input(app, events)

    remaining = await stream_ids(app, events)
    assert await pending_ids(app, events, GROUP) == pending_before
    for entry_id in pending_before + undelivered:
        assert entry_id in remaining
    # And it trims as much as it safely can: exactly the entries below the first needed one.
    needed = pending_before + undelivered
    first = min(needed, key=parse_id) if needed else None
    expected = [f"{i}-0" for i in range(1, 11) if first is not None and parse_id(f"{i}-0") >= parse_id(first)]
    assert remaining == expected
    assert result["removed"] == 10 - len(expected)


# --- dead letters -------------------------------------------------------------------------------


def price_fields(at: int, **over: str) -> dict[str, str]:
    return {
        "type": "price",
        "base": "BTC",
        "quote": "USDT",
        "price": "97000.5",
        "source": "manual",
        "ts": str(at),
        **over,
    }


async def dead(app: App, fields: dict[str, str], stream: str | None = None, error: str = "boom") -> str:
    """Add a dead letter shaped like the writer's."""
    return await app.redis.xadd(
        app.keys.dlq,
        {
            **fields,
            "dlq_stream": app.keys.events if stream is None else stream,
            "dlq_id": "1-0",
            "dlq_error": error,
            "dlq_deliveries": "5",
            "dlq_consumer": "c-x",
            "dlq_ts": "1",
        },
    )


async def test_dlq_list_shows_fields_and_errors(make_app: Any) -> None:
    app = make_app()
    ts = app.clock.now_ms()
    a = await dead(app, price_fields(ts), error="first")
    b = await dead(app, price_fields(ts, base="ETH"), error="second")
    rows = await dlq_list(app)
    assert [r["id"] for r in rows] == [a, b]
    assert rows[0]["dlq_error"] == "first" and rows[0]["base"] == "BTC"
    assert rows[1]["dlq_error"] == "second" and rows[1]["base"] == "ETH"
    assert rows[0]["dlq_stream"] == app.keys.events
    assert [r["id"] for r in await dlq_list(app, limit=1)] == [a]
    assert [r["id"] for r in await dlq_list(app, start=b)] == [b]


async def test_dlq_list_empty(make_app: Any) -> None:
    assert await dlq_list(make_app()) == []


async def test_dead_letter_from_the_loop_is_replayed_without_dlq_fields(make_app: Any) -> None:
    app = make_app()
    consumer = Consumer(app)
    await consumer.setup()
    bogus = {"type": "bogus", "venue": "binance", "ts": str(app.clock.now_ms())}
    original_id = await app.redis.xadd(app.keys.events, bogus)
    assert await consumer.step(block_ms=10) == 1

    rows = await dlq_list(app)
    assert len(rows) == 1
    assert rows[0]["dlq_stream"] == app.keys.events
    assert rows[0]["dlq_id"] == original_id
    assert "unknown type" in rows[0]["dlq_error"]
    dlq_id = rows[0]["id"]

    moved = (await dlq_replay(app, [dlq_id])).moved
    assert len(moved) == 1
    assert moved[0][:2] == (dlq_id, app.keys.events)
    new_id = moved[0][2]
    assert isinstance(new_id, str)
    assert parse_id(new_id) > parse_id(original_id)
    assert await app.redis.xrange(app.keys.events, min=new_id, max=new_id) == [(new_id, bogus)]
    assert await app.redis.xlen(app.keys.dlq) == 0
    # It is a new, undelivered entry: the group delivers it again.
    assert await read(app, app.keys.events, GROUP, "again", 10) == [new_id]


async def test_dlq_replay_selected_ids_only_and_orders_go_back_to_orders(make_app: Any) -> None:
    app = make_app()
    ts = app.clock.now_ms()
    order = {
        "type": "order",
        "order_id": "o-1",
        "venue": "binance",
        "account": "main",
        "symbol": "BTCUSDT",
        "side": "buy",
        "qty": "0.5",
        "ts": str(ts),
    }
    a = await dead(app, price_fields(ts))
    b = await dead(app, order, stream=app.keys.orders)
    c = await dead(app, price_fields(ts, base="SOL"))

    moved = (await dlq_replay(app, [b, a])).moved
    assert [(m[0], m[1]) for m in moved] == [(b, app.keys.orders), (a, app.keys.events)]
    assert [f for _, f in await app.redis.xrange(app.keys.orders)] == [order]
    assert [f for _, f in await app.redis.xrange(app.keys.events)] == [price_fields(ts)]
    assert [r["id"] for r in await dlq_list(app)] == [c]


async def test_dlq_replay_all(make_app: Any) -> None:
    app = make_app()
    ts = app.clock.now_ms()
    ids = [await dead(app, price_fields(ts, base=b)) for b in ("A", "B", "C")]
    moved = (await dlq_replay(app, None)).moved
    assert [m[0] for m in moved] == ids
    assert [f["base"] for _, f in await app.redis.xrange(app.keys.events)] == ["A", "B", "C"]
    assert await app.redis.xlen(app.keys.dlq) == 0
    assert await dlq_replay(app, None) == Replayed([], [])


@pytest.mark.parametrize("source", ["nav", "decisions", "dlq", "other:events", "", None])
async def test_dlq_replay_refuses_a_non_input_source_and_changes_nothing(make_app: Any, source: str | None) -> None:
    app = make_app()
    ts = app.clock.now_ms()
    if source is None:  # no dlq_stream at all
        bad = await app.redis.xadd(app.keys.dlq, {**price_fields(ts), "dlq_error": "x"})
    else:
        target = {"nav": app.keys.nav, "decisions": app.keys.decisions, "dlq": app.keys.dlq}.get(source, source)
        bad = await dead(app, price_fields(ts), stream=target)
    before = await dlq_list(app)
    with pytest.raises(AdminError, match=bad):
        await dlq_replay(app, [bad])
    with pytest.raises(AdminError):
        await dlq_replay(app, None)
    assert await dlq_list(app) == before
    for key in (app.keys.events, app.keys.orders, app.keys.nav, app.keys.decisions):
        assert await app.redis.exists(key) == 0


async def test_dlq_replay_with_one_bad_source_replays_nothing(make_app: Any) -> None:
    app = make_app()
    ts = app.clock.now_ms()
    good = await dead(app, price_fields(ts))
    bad = await dead(app, price_fields(ts), stream=app.keys.nav)
    before = await dlq_list(app)
    for ids in ([good, bad], None):
        with pytest.raises(AdminError, match=bad):
            await dlq_replay(app, ids)
        assert await dlq_list(app) == before
        assert await app.redis.xlen(app.keys.events) == 0


async def test_dlq_replay_refuses_an_entry_without_original_fields(make_app: Any) -> None:
    app = make_app()
    empty = await app.redis.xadd(app.keys.dlq, {"dlq_stream": app.keys.events, "dlq_error": "x"})
    with pytest.raises(AdminError, match="no original fields"):
        await dlq_replay(app, [empty])
    assert await app.redis.xlen(app.keys.dlq) == 1
    assert await app.redis.xlen(app.keys.events) == 0


async def test_dlq_replay_with_one_empty_entry_replays_nothing(make_app: Any) -> None:
    app = make_app()
    good = await dead(app, price_fields(app.clock.now_ms()))
    empty = await app.redis.xadd(app.keys.dlq, {"dlq_stream": app.keys.events, "dlq_error": "x"})
    with pytest.raises(AdminError, match=empty):
        await dlq_replay(app, [good, empty])
    assert [r["id"] for r in await dlq_list(app)] == [good, empty]
    assert await app.redis.xlen(app.keys.events) == 0


async def test_dlq_replay_unknown_id_moves_nothing(make_app: Any) -> None:
    app = make_app()
    good = await dead(app, price_fields(app.clock.now_ms()))
    with pytest.raises(AdminError, match="no dead letter with id 1-1"):
        await dlq_replay(app, [good, "1-1"])
    assert [r["id"] for r in await dlq_list(app)] == [good]
    assert await app.redis.xlen(app.keys.events) == 0


async def test_dlq_replay_the_same_id_twice_replays_it_once(make_app: Any) -> None:
    app = make_app()
    ts = app.clock.now_ms()
    a = await dead(app, price_fields(ts))
    try:
        moved = await dlq_replay(app, [a, a])
    except AdminError:
        moved = None  # refusing the duplicate is fine too, as long as nothing doubled
    assert await app.redis.xlen(app.keys.dlq) == (0 if moved is not None else 1)
    assert await app.redis.xlen(app.keys.events) == (1 if moved is not None else 0)


async def test_dlq_purge_selected_ids(make_app: Any) -> None:
    app = make_app()
    ts = app.clock.now_ms()
    a, b, c = [await dead(app, price_fields(ts, base=x)) for x in "ABC"]
    assert await dlq_purge(app, [a, c]) == 2
    assert [r["id"] for r in await dlq_list(app)] == [b]
    assert await app.redis.xlen(app.keys.events) == 0  # purged, not replayed


async def test_dlq_purge_unknown_id_deletes_nothing(make_app: Any) -> None:
    app = make_app()
    a = await dead(app, price_fields(app.clock.now_ms()))
    with pytest.raises(AdminError, match="no dead letter with id 99-0"):
        await dlq_purge(app, [a, "99-0"])
    assert [r["id"] for r in await dlq_list(app)] == [a]


async def test_dlq_purge_all(make_app: Any) -> None:
    app = make_app()
    ts = app.clock.now_ms()
    for x in "ABCD":
        await dead(app, price_fields(ts, base=x))
    assert await dlq_purge(app, None) == 4
    assert await app.redis.xlen(app.keys.dlq) == 0
    assert await dlq_list(app) == []
    assert await dlq_purge(app, None) == 0


async def test_dlq_replay_racing_a_purge_after_the_read_reports_the_entry_gone(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purge between reading the dead letters and reading one's raw fields: that entry is
    reported gone (it raised ValueError from unpacking an empty reply), the others still move."""
    import navstream.ops.admin as admin

    app = make_app()
    ts = app.clock.now_ms()
    a, b, c = [await dead(app, price_fields(ts, base=x)) for x in "ABC"]
    select = admin._select

    async def then_purged(app_: App, ids: list[str] | None) -> list[tuple[str, dict[str, str]]]:
        rows = await select(app_, ids)
        await app_.redis.xdel(app_.keys.dlq, b)  # a second operator's `dlq purge`
        return rows

    monkeypatch.setattr(admin, "_select", then_purged)
    done = await dlq_replay(app, None)
    assert [m[0] for m in done.moved] == [a, c] and done.gone == [b]
    assert [f["base"] for _, f in await app.redis.xrange(app.keys.events)] == ["A", "C"]
    assert await app.redis.xlen(app.keys.dlq) == 0


async def test_dlq_replay_racing_a_purge_before_the_move_reports_the_entry_gone(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purge after the plan, just before the move: gone, not silently skipped."""
    import navstream.ops.admin as admin

    app = make_app()
    ts = app.clock.now_ms()
    a, b = [await dead(app, price_fields(ts, base=x)) for x in "AB"]
    move_back = admin._move_back

    async def purged_first(app_: App, entry_id: str, target: str, original: dict[bytes, bytes]) -> str | None:
        if entry_id == a:
            await app_.redis.xdel(app_.keys.dlq, a)
        return await move_back(app_, entry_id, target, original)

    monkeypatch.setattr(admin, "_move_back", purged_first)
    done = await dlq_replay(app, [a, b])
    assert done.gone == [a] and [m[0] for m in done.moved] == [b]
    assert [f["base"] for _, f in await app.redis.xrange(app.keys.events)] == ["B"]


@pytest.mark.parametrize(
    "bad",
    ["abc", "1-x", "1", "-", "+", "1-", "-1", "1-0-0", " 1-0", "1-0\n", "\uff11-0", "1-" + "9" * 21, f"{2**64}-0", ""],
)
async def test_dlq_ids_that_are_not_stream_ids_are_bad_input_and_touch_nothing(make_app: Any, bad: str) -> None:
    app = make_app()
    good = await dead(app, price_fields(app.clock.now_ms()))
    with pytest.raises(InvalidIdError, match="is not a dead-letter id"):
        await dlq_replay(app, [good, bad])
    with pytest.raises(InvalidIdError, match="is not a dead-letter id"):
        await dlq_purge(app, [good, bad])
    assert [i for i, _ in await app.redis.xrange(app.keys.dlq)] == [good]
    assert await app.redis.xlen(app.keys.events) == 0


async def test_the_largest_stream_id_is_a_valid_dead_letter_id(make_app: Any) -> None:
    app = make_app()
    top = f"{2**64 - 1}-{2**64 - 1}"
    with pytest.raises(AdminError, match="no dead letter with id"):  # well formed, just not there
        await dlq_purge(app, [top])


async def test_invalid_utf8_dead_letter_can_be_listed_and_replayed_byte_for_byte(make_app: Any) -> None:
    app = make_app()
    consumer = Consumer(app)
    await consumer.setup()
    raw_fields = {b"type": b"price", b"base": b"\xffBTC", b"ts": str(app.clock.now_ms()).encode()}
    await app.raw.xadd(app.keys.events, raw_fields)
    assert await consumer.step(block_ms=10) == 1

    rows = await dlq_list(app)  # must not raise UnicodeDecodeError
    assert len(rows) == 1
    assert "UTF-8" in rows[0]["dlq_error"]
    assert rows[0]["type"] == "price"
    moved = (await dlq_replay(app, [rows[0]["id"]])).moved
    assert len(moved) == 1
    ((_, fields),) = await app.raw.xrange(app.keys.events, min=moved[0][2], max=moved[0][2])
    assert fields == raw_fields


# --- status -------------------------------------------------------------------------------------


class GoodStatus:
    @hookimpl
    def navstream_status(self, app: App) -> dict[str, Any]:
        return {"answer": 42, "prefix": app.keys.prefix}


class AsyncStatus:
    @hookimpl
    async def navstream_status(self, app: App) -> dict[str, Any]:
        return {"dlq": await app.redis.xlen(app.keys.dlq)}


class BrokenStatus:
    @hookimpl
    def navstream_status(self, app: App) -> dict[str, Any]:
        raise RuntimeError("status exploded")


class BrokenAsyncStatus:
    @hookimpl
    async def navstream_status(self, app: App) -> dict[str, Any]:
        raise KeyError("missing")


class SilentStatus:
    @hookimpl
    def navstream_status(self, app: App) -> None:
        return None


async def test_collect_status_on_an_empty_deployment(make_app: Any) -> None:
    app = make_app()
    status = await collect_status(app)
    assert status == {
        "prefix": app.keys.prefix,
        "group": GROUP,
        "streams": {s: {"length": 0, "groups": [], "consumers": []} for s in app.keys.inputs},
        "dlq": {"length": 0},
        "consumers": [],
        "alerts": [],
        "plugins": {},
    }


async def test_collect_status_shows_everything(make_app: Any) -> None:
    app = make_app(
        plugins=[
            ("good", GoodStatus()),
            ("broken", BrokenStatus()),
            ("async", AsyncStatus()),
            ("broken_async", BrokenAsyncStatus()),
            ("silent", SilentStatus()),
        ],
        name="worker-1",
    )
    consumer = Consumer(app)
    await consumer.setup()  # creates the groups; alerts that no plugin answers orders
    events = app.keys.events
    await fill(app, events, 5)
    await read(app, events, GROUP, "reader", 3)
    await app.redis.xack(events, GROUP, "1-0")
    await dead(app, price_fields(app.clock.now_ms()))
    await dead(app, price_fields(app.clock.now_ms()))
    await consumer.tick()  # heartbeat

    status = await collect_status(app)
    assert status["prefix"] == app.keys.prefix and status["group"] == GROUP

    ev = status["streams"][events]
    assert ev["length"] == 5
    assert len(ev["groups"]) == 1
    group = ev["groups"][0]
    assert group["name"] == GROUP
    assert group["pending"] == 2
    assert int(group["lag"]) == 2
    assert group["last_delivered_id"] == "3-0"
    assert group["consumers"] == 1
    assert [(c["name"], c["pending"]) for c in ev["consumers"]] == [("reader", 2)]
    assert ev["consumers"][0]["idle_ms"] >= 0

    orders = status["streams"][app.keys.orders]
    assert orders["length"] == 0
    assert [g["name"] for g in orders["groups"]] == [GROUP]
    assert orders["groups"][0]["pending"] == 0

    assert status["dlq"] == {"length": 2}

    assert len(status["consumers"]) == 1
    beat = status["consumers"][0]
    assert beat["consumer"] == "worker-1"
    assert beat["group"] == GROUP
    assert beat["status"] == "running"
    assert beat["ts"] == str(app.clock.now_ms())
    assert 0 < int(beat["ttl_ms"]) <= app.settings.consumer.heartbeat_ttl_ms
    assert beat["lag:" + events] == "2"

    codes = [a["code"] for a in status["alerts"]]
    assert "no_order_handler" in codes
    assert all("id" in a and "severity" in a for a in status["alerts"])

    plugins = status["plugins"]
    assert plugins["good"] == {"answer": 42, "prefix": app.keys.prefix}
    assert plugins["async"] == {"dlq": 2}
    assert plugins["broken"] == {"error": "RuntimeError: status exploded"}
    assert plugins["broken_async"]["error"].startswith("KeyError")
    assert "silent" not in plugins


async def test_collect_status_latest_alerts_newest_first_and_limited(make_app: Any) -> None:
    app = make_app()
    for i in range(1, 6):
        await app.redis.xadd(
            app.keys.alerts, {"code": f"a{i}", "severity": "info", "message": f"m{i}", "ts": "1"}, id=f"{i}-0"
        )
    status = await collect_status(app, alerts=3)
    assert [a["code"] for a in status["alerts"]] == ["a5", "a4", "a3"]
    assert status["alerts"][0] == {"id": "5-0", "code": "a5", "severity": "info", "message": "m5", "ts": "1"}


async def test_collect_status_reports_heartbeats_of_a_consumer_that_ran(make_app: Any) -> None:
    app = make_app(name="runner")
    other = make_app(name="other")
    await app.redis.xadd(app.keys.events, price_fields(app.clock.now_ms()))
    assert await Consumer(app, until_idle_s=0.2).run() == 0
    consumer = Consumer(other)
    await consumer.setup()
    await consumer.tick()

    status = await collect_status(app)
    beats = {b["consumer"]: b for b in status["consumers"]}
    assert sorted(beats) == ["other", "runner"]
    assert beats["runner"]["status"] == "stopped"
    assert beats["runner"]["processed"] == "1"
    assert beats["other"]["status"] == "running"
    group = status["streams"][app.keys.events]["groups"][0]
    assert group["pending"] == 0 and int(group["lag"]) == 0


async def test_collect_status_shows_foreign_groups_but_only_our_consumers(make_app: Any) -> None:
    app = make_app()
    events = app.keys.events
    await fill(app, events, 3)
    await app.redis.xgroup_create(events, "foreign", id="0")
    await read(app, events, "foreign", "f1", 2)
    status = await collect_status(app)
    info = status["streams"][events]
    assert [(g["name"], g["pending"]) for g in info["groups"]] == [("foreign", 2)]
    assert info["consumers"] == []  # those of our group; ours does not exist


# --- publish: parsing ---------------------------------------------------------------------------


def test_parse_kv() -> None:
    assert parse_kv(["type=price", "base=BTC", "error=a=b", "empty="]) == {
        "type": "price",
        "base": "BTC",
        "error": "a=b",
        "empty": "",
    }


@pytest.mark.parametrize("bad", ["novalue", "=value"])
def test_parse_kv_rejects_a_pair_without_key_or_equals(bad: str) -> None:
    with pytest.raises(PublishError) as info:
        parse_kv(["type=price", bad])
    assert info.value.problems == [f"argument {bad!r} is not key=value"]


def test_parse_json_lines_reads_numbers_as_exact_decimals() -> None:
    lines = [
        '{"type": "price", "price": 0.1, "ts": 1790000000000}\n',
        "\n",
        '{"qty": 12345678901234567890.123456789, "big": 123456789012345678901234567890, "neg": -0.5}\n',
        '{"ok": true, "no": false, "skip": null, "s": "text", "tiny": 1e-7}\n',
    ]
    rows = parse_json_lines(lines, "f.jsonl")
    assert rows == [
        {"type": "price", "price": "0.1", "ts": "1790000000000"},
        {"qty": "12345678901234567890.123456789", "big": "123456789012345678901234567890", "neg": "-0.5"},
        {"ok": "true", "no": "false", "s": "text", "tiny": "0.0000001"},  # plain, as the contract writes it
    ]
    assert Decimal(rows[2]["tiny"]) == Decimal("0.0000001")


def test_parse_json_lines_rejects_nested_values_with_line_numbers() -> None:
    lines = [
        '{"type": "price"}',
        '{"type": "price", "meta": {"a": 1}}',
        "",
        '{"type": "price", "tags": [1, 2]}',
        "not json",
        '["a list"]',
    ]
    with pytest.raises(PublishError) as info:
        parse_json_lines(lines, "in.jsonl")
    problems = info.value.problems
    assert len(problems) == 4
    assert problems[0].startswith("in.jsonl:2: ") and "`meta`" in problems[0] and "dict" in problems[0]
    assert problems[1].startswith("in.jsonl:4: ") and "`tags`" in problems[1]
    assert problems[2].startswith("in.jsonl:5: ")
    assert problems[3].startswith("in.jsonl:6: ")


def test_parse_json_lines_empty_input() -> None:
    assert parse_json_lines(["", "  \n"]) == []


@pytest.mark.parametrize(
    ("data", "offset", "line"),
    [
        (b'{"a": "\xff"}\n', 7, 1),
        (b'{"a": "x"}\n{"b": "\xe2\x82"}\n', 18, 2),  # a character cut short
        (b'{"a": "\xe2\x82\xac"}\r\n\r\n{"b": "\xc0\xaf"}', 23, 3),  # after a valid euro sign; overlong
        (b"\xef\xbb\xbf\xed\xa0\x80", 3, 1),  # a surrogate, after a BOM
    ],
)
def test_decode_text_names_the_byte_offset_and_line_of_invalid_utf8(data: bytes, offset: int, line: int) -> None:
    with pytest.raises(PublishError) as info:
        decode_text(data, "in.jsonl")
    (problem,) = info.value.problems
    assert problem.startswith(f"in.jsonl: not UTF-8 at byte {offset} (line {line}): ")
    assert data[offset:].startswith(eval(problem.rsplit(" ", 1)[1]))  # the bad bytes it shows are there


def test_decode_text_splits_lines_as_a_text_file_does() -> None:
    # \r\n, \r and \n end a line; U+2028 inside a JSON string does not.
    assert decode_text('{"a": "x\u2028y"}\r\n{}\r{}\n'.encode(), "f") == ['{"a": "x\u2028y"}\n', "{}\n", "{}\n"]


async def test_a_missing_ts_suggests_stamp_and_stamp_fills_it(make_app: Any) -> None:
    app = make_app()
    no_ts = {k: v for k, v in price_fields(1).items() if k != "ts"}
    with pytest.raises(PublishError) as info:
        prepare(app, [no_ts])
    assert info.value.problems == ["entry 1: Object missing required field `ts` (--stamp sets a missing ts to now)"]
    order_no_ts = {k: v for k, v in order_fields(1).items() if k != "ts"}
    with pytest.raises(PublishError, match="--stamp sets a missing ts"):
        prepare(app, [order_no_ts])
    # another field's problem first: still says that ts is missing too
    with pytest.raises(PublishError, match="ts is missing too: --stamp sets it to now"):
        prepare(app, [{**no_ts, "type": "bogus"}])
    # with ts given, or with stamp, no hint
    with pytest.raises(PublishError) as info:
        prepare(app, [price_fields(1, price="oops")])
    assert "--stamp" not in info.value.problems[0]
    assert [p.fields["ts"] for p in prepare(app, [no_ts, order_no_ts], stamp=True)] == [str(app.clock.now_ms())] * 2


# --- publish: validation, routing, writing ------------------------------------------------------


def order_fields(at: int, **over: str) -> dict[str, str]:
    return {
        "type": "order",
        "order_id": "o-1",
        "venue": "binance",
        "account": "main",
        "symbol": "BTCUSDT",
        "side": "buy",
        "qty": "0.5",
        "ts": str(at),
        **over,
    }


async def test_prepare_routes_orders_and_events(make_app: Any) -> None:
    app = make_app()
    ts = app.clock.now_ms()
    balance = {"type": "balance", "venue": "b", "account": "a", "asset": "USDT", "balance": "0", "ts": str(ts)}
    status = {"type": "source_status", "venue": "b", "source": "spot", "ok": "true", "ts": str(ts)}
    prepared = prepare(app, [price_fields(ts), order_fields(ts), balance, status])
    assert prepared == [
        Prepared(app.keys.events, price_fields(ts)),
        Prepared(app.keys.orders, order_fields(ts)),
        Prepared(app.keys.events, balance),
        Prepared(app.keys.events, status),
    ]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda ts: {k: v for k, v in price_fields(ts).items() if k != "price"}, ["price", "missing"]),
        (lambda ts: price_fields(ts, price="12,5"), ["price"]),
        (lambda ts: price_fields(ts, price="NaN"), ["price"]),
        (lambda ts: price_fields(ts, price="-1"), ["price"]),
        (lambda ts: {**price_fields(ts), "type": "pricee"}, ["unknown type", "pricee"]),
        (lambda ts: {k: v for k, v in price_fields(ts).items() if k != "type"}, ["type"]),
        (lambda ts: price_fields(ts, ts=str(ts // 1000)), ["ts", "seconds"]),
        (lambda ts: price_fields(ts, ts=str(ts + 3_600_000)), ["ts", "future"]),
        (lambda ts: {k: v for k, v in price_fields(ts).items() if k != "ts"}, ["ts"]),
        (lambda ts: order_fields(ts, side="hold"), ["side"]),
        (lambda ts: order_fields(ts, qty="0"), ["qty"]),
        (lambda ts: {k: v for k, v in order_fields(ts, qty="x").items() if k != "order_id"}, ["order_id"]),
        (lambda ts: order_fields(ts, ts=str(ts + 3_600_000)), ["ts", "future"]),
    ],
    ids=[
        "missing-field",
        "bad-decimal",
        "nan",
        "negative-price",
        "unknown-type",
        "no-type",
        "ts-seconds",
        "ts-future",
        "no-ts",
        "order-side",
        "order-qty",
        "order-no-id",
        "order-future",
    ],
)
async def test_prepare_reports_the_entry_number_and_the_field(make_app: Any, make: Any, words: list[str]) -> None:
    app = make_app()
    ts = app.clock.now_ms()
    with pytest.raises(PublishError) as info:
        prepare(app, [price_fields(ts), make(ts), order_fields(ts)])
    assert len(info.value.problems) == 1
    problem = info.value.problems[0]
    assert problem.startswith("entry 2: ")
    for word in words:
        assert word in problem


async def test_prepare_reports_every_invalid_entry(make_app: Any) -> None:
    app = make_app()
    ts = app.clock.now_ms()
    with pytest.raises(PublishError) as info:
        prepare(
            app,
            [
                price_fields(ts, price="x"),
                price_fields(ts),
                order_fields(ts, side="x"),
                {"type": "nope", "ts": str(ts)},
            ],
        )
    problems = info.value.problems
    assert [p.split(":")[0] for p in problems] == ["entry 1", "entry 3", "entry 4"]
    assert "price" in problems[0] and "side" in problems[1] and "nope" in problems[2]
    assert str(info.value) == "; ".join(problems)


async def test_prepare_future_limit_is_inclusive(make_app: Any) -> None:
    app = make_app()
    now = app.clock.now_ms()
    limit = app.settings.consumer.max_future_ms
    assert len(prepare(app, [price_fields(now, ts=str(now + limit))])) == 1
    with pytest.raises(PublishError, match="entry 1: field `ts`"):
        prepare(app, [price_fields(now, ts=str(now + limit + 1))])


async def test_prepare_stamp_fills_a_missing_ts_only(make_app: Any) -> None:
    app = make_app()
    now = app.clock.now_ms()
    no_ts = {k: v for k, v in price_fields(now).items() if k != "ts"}
    with pytest.raises(PublishError, match="ts"):
        prepare(app, [no_ts])
    prepared = prepare(app, [no_ts, price_fields(now - 5000), order_fields(now, ts=str(now - 1))], stamp=True)
    assert prepared[0].fields["ts"] == str(now)
    assert prepared[1].fields["ts"] == str(now - 5000)
    assert prepared[2].fields["ts"] == str(now - 1)
    assert "ts" not in no_ts  # the caller's dict is not modified


async def test_publish_writes_every_entry_in_order(make_app: Any) -> None:
    app = make_app()
    ts = app.clock.now_ms()
    entries = [price_fields(ts, base="A"), order_fields(ts), price_fields(ts, base="B")]
    ids = await publish(app, prepare(app, entries))
    assert len(ids) == 3 and all(isinstance(i, str) for i in ids)
    assert await app.redis.xrange(app.keys.events) == [(ids[0], entries[0]), (ids[2], entries[2])]
    assert await app.redis.xrange(app.keys.orders) == [(ids[1], entries[1])]


async def test_publish_with_one_invalid_entry_writes_nothing(make_app: Any) -> None:
    app = make_app()
    ts = app.clock.now_ms()
    entries = [price_fields(ts), order_fields(ts), price_fields(ts, price="oops"), price_fields(ts)]
    with pytest.raises(PublishError, match="entry 3"):
        await publish(app, prepare(app, entries))
    assert await app.redis.exists(app.keys.events, app.keys.orders) == 0


async def test_publish_is_all_or_nothing_when_redis_refuses_one_entry(make_app: Any) -> None:
    app = make_app()
    ts = app.clock.now_ms()
    await app.redis.set(app.keys.orders, "not a stream")  # XADD to it fails with WRONGTYPE
    prepared = prepare(app, [price_fields(ts), order_fields(ts)])
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await publish(app, prepared)
    assert await app.redis.exists(app.keys.events) == 0, "the event was written although the order failed"


async def test_dlq_replay_moves_a_very_wide_dead_letter_whole(make_app: Any) -> None:
    app = make_app()
    fields = {"type": "balance", **{f"f{i}": str(i) for i in range(4100)}}
    dlq_id = await dead(app, fields)
    (moved,) = (await dlq_replay(app, [dlq_id])).moved
    ((_, back),) = await app.redis.xrange(app.keys.events)
    assert moved[0] == dlq_id and back == fields
    assert await app.redis.xlen(app.keys.dlq) == 0


async def test_dlq_replay_into_a_broken_target_keeps_the_dead_letter(make_app: Any) -> None:
    app = make_app()
    dlq_id = await dead(app, price_fields(1))
    await app.redis.set(app.keys.events, "not a stream")
    with pytest.raises(AdminError, match="not a stream"):
        await dlq_replay(app, [dlq_id])
    assert [i for i, _ in await app.redis.xrange(app.keys.dlq)] == [dlq_id]


async def test_publish_rejects_an_absurdly_wide_entry(make_app: Any) -> None:
    app = make_app()
    wide = {**price_fields(1), **{f"x{i}": "1" for i in range(1000)}}
    with pytest.raises(PublishError, match="more than 1000"):
        prepare(app, [price_fields(2), wide])
