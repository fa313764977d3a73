"""The speed-ups of the last two commits, held to the behaviour they must not change.

* Concurrent dispatch: the plugins of a batch run concurrently (``asyncio.gather``), their
  outputs are merged in plugin call order (pluggy's: the last registered plain hookimpl first,
  as ``hook_impls`` lists them, the order sequential dispatch used), whoever finishes first; a
  plugin that raises or times out costs only its own outputs, and only it is retried entry by
  entry.
* Stamp-guarded ``PUTFIELDS``: while a plugin's stamp still holds what it read, the batch script
  writes the members of the hashes it ``covers`` without comparing their held ``ts`` (the
  plugin's promise); any other hash, a stale stamp, and the pipelined path always compare.
* ``Outputs.merge`` takes over a spent buffer's member hashes and still keeps last-``ts``-wins.
* The batch script's TYPE memo (one TYPE per key) still refuses a wrong type however often a
  batch writes to the key.
* ``with_hiredis_packing``: commands packed in C by hiredis, byte for byte what redis-py packs.
* ``tune_gc``: the loop's garbage-collector settings, applied once startup is done.

Tests that take ``path`` run once through the batch script and once through the pipelined
fallback (``MAX_SCRIPT_ARGS`` forced to 0), and check that the path asked for is the one that
wrote (the fixture is a copy of ``tests/contract/test_outputs_once.py``'s).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.connection import PythonRespSerializer
from redis.exceptions import DataError
from redis.utils import HIREDIS_AVAILABLE
from support import REDIS_URL, START_MS

from navstream import App, Event, Outputs, hookimpl
from navstream.app import _HiredisPacking, default_connect, with_hiredis_packing
from navstream.config import load_settings
from navstream.contract.outputs import parse_field
from navstream.loop import consumer as consumer_module
from navstream.loop.consumer import GC_THRESHOLD, Consumer, tune_gc
from navstream.loop.gctune import SWITCH_INTERVAL_S, tune_switching
from navstream.plugin.calls import impls as hook_impls
from navstream.store.writer import WriteError

# --- helpers ---------------------------------------------------------------------------------------

EventsFn = Callable[[Sequence[Event], Outputs], Awaitable[None]]


class AsyncEvents:
    """A plugin whose async ``navstream_events`` runs ``fn``; records the size of each call."""

    def __init__(self, fn: EventsFn) -> None:
        self.fn = fn
        self.calls: list[int] = []

    @hookimpl
    async def navstream_events(self, events: Sequence[Event], out: Outputs) -> None:
        self.calls.append(len(events))
        await self.fn(events, out)


class Scripted:
    """Synchronous hooks that do what the test tells them (as in tests/contract/test_outputs_once.py)."""

    def __init__(
        self,
        on_tick: Callable[[Outputs], object] | None = None,
        on_events: Callable[[Sequence[Event], Outputs], object] | None = None,
    ) -> None:
        self.on_tick = on_tick
        self.on_events = on_events

    @hookimpl
    def navstream_tick(self, now_ms: int, out: Outputs) -> None:
        if self.on_tick is not None:
            self.on_tick(out)

    @hookimpl
    def navstream_events(self, events: Sequence[Event], out: Outputs) -> None:
        if self.on_events is not None:
            self.on_events(events, out)


async def started(make_app: Any, plugins: list[tuple[str, object]], **kw: Any) -> tuple[App, Consumer]:
    app = make_app(plugins=plugins, **kw)
    consumer = Consumer(app)
    await consumer.setup()
    return app, consumer


def call_order(app: App, hook: str = "navstream_events") -> list[str]:
    return [impl.plugin_name for impl in hook_impls(app.pm, hook)]


def bal(ts: int = START_MS) -> dict[str, str]:
    return {"type": "balance", "venue": "v", "account": "a", "asset": "BTC", "balance": "1", "ts": str(ts)}


async def entries(app: App, stream: str) -> list[dict[str, str]]:
    return [f for _, f in await app.redis.xrange(app.keys.stream(stream))]


async def alerts(app: App, code: str) -> list[dict[str, str]]:
    return [f for _, f in await app.redis.xrange(app.keys.alerts) if f["code"] == code]


async def pending(app: App) -> int:
    return int((await app.redis.xpending(app.keys.events, app.group))["pending"])


async def held(app: App, key: str) -> dict[str, tuple[int, str]]:
    return {k: parse_field(v) for k, v in (await app.redis.hgetall(app.keys.state(key))).items()}


async def within(seconds: float, awaitable: Awaitable[Any]) -> Any:
    """Fail instead of hanging (a sequential dispatch would wait forever on a rendezvous)."""
    return await asyncio.wait_for(awaitable, seconds)


# --- 1. concurrent dispatch -------------------------------------------------------------------------


async def test_plugins_of_a_batch_run_concurrently_and_merge_in_call_order(make_app: Any) -> None:
    """Each plugin waits for the other to start, and the first one called finishes last: only
    concurrent calls get through (sequentially, "first" waits for "second" in vain and fails),
    and the merged entries still come in call order, not finishing order."""
    began = {"first": asyncio.Event(), "second": asyncio.Event()}
    second_done = asyncio.Event()
    finished: list[str] = []

    async def first(events: Sequence[Event], out: Outputs) -> None:
        began["first"].set()
        await within(1, began["second"].wait())
        await within(1, second_done.wait())
        out.emit("out", {"by": "first", "n": "1"})
        out.emit("out", {"by": "first", "n": "2"})
        finished.append("first")

    async def second(events: Sequence[Event], out: Outputs) -> None:
        began["second"].set()
        await within(1, began["first"].wait())
        out.emit("out", {"by": "second", "n": "1"})
        out.emit("out", {"by": "second", "n": "2"})
        finished.append("second")
        second_done.set()

    # pluggy calls the last registered (plain) hookimpl first
    app, consumer = await started(make_app, [("second", AsyncEvents(second)), ("first", AsyncEvents(first))])
    assert call_order(app) == ["first", "second"]
    await app.redis.xadd(app.keys.events, bal())
    assert await within(5, consumer.step(block_ms=1)) == 1

    assert finished == ["second", "first"]
    assert [(e["by"], e["n"]) for e in await entries(app, "out")] == [
        ("first", "1"),
        ("first", "2"),
        ("second", "1"),
        ("second", "2"),
    ]
    assert await alerts(app, "plugin_error") == []
    assert await pending(app) == 0


async def test_a_failing_plugin_alone_is_retried_entry_by_entry(make_app: Any) -> None:
    """One plugin raises on the batch (a poison entry); the other succeeds, concurrently. Only
    the failing one is called again, entry by entry; the other's outputs are written once, and
    only the poison entry stays pending."""
    poison = START_MS + 2

    async def good(events: Sequence[Event], out: Outputs) -> None:
        await asyncio.sleep(0)
        for event in events:
            out.emit("out", {"by": "good", "ts": str(event.ts)})

    async def bad(events: Sequence[Event], out: Outputs) -> None:
        await asyncio.sleep(0)
        for event in events:
            if event.ts == poison:
                raise RuntimeError("poison")
            out.emit("out", {"by": "bad", "ts": str(event.ts)})

    good_plugin, bad_plugin = AsyncEvents(good), AsyncEvents(bad)
    app, consumer = await started(make_app, [("bad", bad_plugin), ("good", good_plugin)])
    assert call_order(app) == ["good", "bad"]
    for ts in (START_MS + 1, poison, START_MS + 3):
        await app.redis.xadd(app.keys.events, bal(ts))
    assert await within(5, consumer.step(block_ms=1)) == 3

    assert good_plugin.calls == [3]
    assert bad_plugin.calls == [3, 1, 1, 1]
    assert [(e["by"], int(e["ts"]) - START_MS) for e in await entries(app, "out")] == [
        ("good", 1),
        ("good", 2),
        ("good", 3),
        ("bad", 1),
        ("bad", 3),
    ]
    assert await pending(app) == 1
    (reason,) = (await app.redis.hgetall(app.keys.failures)).values()
    assert reason == "plugin 'bad': RuntimeError: poison"
    [failed] = await alerts(app, "plugin_error")
    assert "plugin 'bad'" in failed["message"] and "1 of 3 entries failed alone" in failed["message"]


async def test_a_plugin_that_times_out_does_not_hold_up_or_lose_the_other(make_app: Any) -> None:
    """The plugin called first hangs; the other runs while it hangs (sequentially it would only
    start once the hang had timed out), its outputs are written, and the batch takes about two
    timeouts (the batch call, then the entry-by-entry budget), not the hang."""
    timeout = 0.05
    slow_began = asyncio.Event()
    slow_ended: list[int] = []
    seen_by_quick: list[list[int]] = []

    async def slow(events: Sequence[Event], out: Outputs) -> None:
        slow_began.set()
        out.emit("out", {"by": "slow"})
        try:
            await asyncio.Event().wait()  # never set: only hook_timeout_s ends it
        finally:
            slow_ended.append(len(events))

    async def quick(events: Sequence[Event], out: Outputs) -> None:
        await within(1, slow_began.wait())
        seen_by_quick.append(list(slow_ended))
        for event in events:
            out.emit("out", {"by": "quick", "ts": str(event.ts)})

    quick_plugin, slow_plugin = AsyncEvents(quick), AsyncEvents(slow)
    app, consumer = await started(
        make_app, [("quick", quick_plugin), ("slow", slow_plugin)], consumer={"hook_timeout_s": timeout}
    )
    assert call_order(app) == ["slow", "quick"]
    for ts in (START_MS + 1, START_MS + 2):
        await app.redis.xadd(app.keys.events, bal(ts))
    began = time.monotonic()
    assert await within(5, consumer.step(block_ms=1)) == 2
    elapsed = time.monotonic() - began

    assert seen_by_quick == [[]]  # the slow plugin was still hanging while the quick one ran
    assert quick_plugin.calls == [2]
    assert slow_plugin.calls == [2, 1, 1] and slow_ended == [2, 1, 1]
    assert [(e["by"], e.get("ts")) for e in await entries(app, "out")] == [
        ("quick", str(START_MS + 1)),
        ("quick", str(START_MS + 2)),
    ]
    assert elapsed < 1.0, elapsed  # ~2 x 0.05 s and a few Redis calls
    assert await pending(app) == 2  # the slow plugin failed both, alone too
    reasons = (await app.redis.hgetall(app.keys.failures)).values()
    assert len(reasons) == 2 and all("plugin 'slow': HookTimeout" in r for r in reasons)


async def test_a_timeout_the_plugin_raises_itself_is_reported_as_its_own(make_app: Any) -> None:
    """The entry's recorded error (what P:dlq shows later) must be the plugin's, not a hook
    timeout that never happened: the hook failed at once, well inside hook_timeout_s."""

    async def upstream(events: Sequence[Event], out: Outputs) -> None:
        raise TimeoutError("price service did not answer")

    app, consumer = await started(make_app, [("p", AsyncEvents(upstream))])
    await app.redis.xadd(app.keys.events, bal())
    assert await within(5, consumer.step(block_ms=1)) == 1
    (reason,) = (await app.redis.hgetall(app.keys.failures)).values()
    assert reason == "plugin 'p': TimeoutError: price service did not answer"


# --- 2. stamp-guarded PUTFIELDS -------------------------------------------------------------------


def stamping(seen: str) -> Scripted:
    """Stamps ``st`` (read as ``seen``) covering hash ``h``; writes ts 100 members to ``h`` and to
    the uncovered ``h2``."""

    def on_tick(out: Outputs) -> None:
        out.stamp("st", seen, "m2", covers=["h"])
        out.put_latest_field("h", "f", 100, "sent")
        out.put_latest_field("h", "g", 100, "sent g")
        out.put_latest_field("h2", "f", 100, "sent")

    return Scripted(on_tick=on_tick)


async def seed_stamp_and_hashes(app: App, f_held: str = "200 held newer") -> None:
    await app.redis.set(app.keys.state("st"), "m1")
    await app.redis.hset(app.keys.state("h"), mapping={"f": f_held, "g": "50 held older"})
    await app.redis.hset(app.keys.state("h2"), "f", "200 held newer")


async def test_a_standing_stamp_writes_covered_members_without_comparing(make_app: Any, path: str) -> None:
    """The stamp holds ``seen``: on the script path a covered member held with a NEWER ts is
    overwritten (the plugin promised to send only winners, so the comparison is skipped); the
    uncovered ``h2`` is still compared; the pipelined path compares every member."""
    app, consumer = await started(make_app, [("p", stamping(seen="m1"))])
    await seed_stamp_and_hashes(app)
    await consumer.tick()

    covered_f = (100, "sent") if path == "script" else (200, "held newer")
    assert await held(app, "h") == {"f": covered_f, "g": (100, "sent g")}
    assert await held(app, "h2") == {"f": (200, "held newer")}
    assert await app.redis.get(app.keys.state("st")) == "m2"


async def test_a_stale_stamp_compares_covered_members_and_marks_the_stamp(make_app: Any, path: str) -> None:
    """The stamp holds something else than ``seen``: covered members are compared like any
    (the newer held one stays) and the stamp becomes ``"!" + mine``."""
    app, consumer = await started(make_app, [("p", stamping(seen="someone else's"))])
    await seed_stamp_and_hashes(app)
    await consumer.tick()

    assert await held(app, "h") == {"f": (200, "held newer"), "g": (100, "sent g")}
    assert await held(app, "h2") == {"f": (200, "held newer")}
    assert await app.redis.get(app.keys.state("st")) == "!m2"


@pytest.mark.parametrize("garbage", ["", "no ts here", "12"])
async def test_a_covered_member_without_ts_under_a_standing_stamp(make_app: Any, path: str, garbage: str) -> None:
    """A covered member whose held value has no ts: the guarded script reads nothing it
    compares, so it overwrites the member (no BADSTATE); the pipelined path checks every member
    and refuses the whole batch with BADSTATE, writing nothing."""
    app, consumer = await started(make_app, [("p", stamping(seen="m1"))])
    await seed_stamp_and_hashes(app, f_held=garbage)
    if path == "script":
        await consumer.tick()
        assert await held(app, "h") == {"f": (100, "sent"), "g": (100, "sent g")}
        assert await app.redis.get(app.keys.state("st")) == "m2"
    else:
        with pytest.raises(WriteError, match="BADSTATE .*h.* field 'f' has no ts; nothing written"):
            await consumer.tick()
        assert await app.redis.hgetall(app.keys.state("h")) == {"f": garbage, "g": "50 held older"}
        assert await app.redis.get(app.keys.state("st")) == "m1"
    assert await held(app, "h2") == {"f": (200, "held newer")}


@pytest.mark.parametrize("garbage", ["", "no ts here", "12"])
async def test_a_covered_member_without_ts_under_a_stale_stamp_is_badstate(
    make_app: Any, path: str, garbage: str
) -> None:
    """Unguarded (the stamp moved on), both paths compare, and refuse the batch with BADSTATE."""
    app, consumer = await started(make_app, [("p", stamping(seen="someone else's"))])
    await seed_stamp_and_hashes(app, f_held=garbage)
    with pytest.raises(WriteError, match="BADSTATE .*h.* field .?f.? has no ts; nothing written"):
        await consumer.tick()
    assert await app.redis.hgetall(app.keys.state("h")) == {"f": garbage, "g": "50 held older"}
    assert await held(app, "h2") == {"f": (200, "held newer")}
    assert await app.redis.get(app.keys.state("st")) == "m1"


@pytest.mark.parametrize(
    "path",
    [
        "script",
        "pipeline",
    ],
    indirect=True,
)
async def test_a_stamp_guards_only_the_members_of_the_plugin_that_stamped(make_app: Any, path: str) -> None:
    """Plugin X stamps ``st`` covering ``h``; plugin Y, which promised nothing, writes an OLDER
    member to the same hash in the same batch. Y's member must still lose to the newer one held
    (last-ts-wins is put_latest_field's contract); the guard is X's promise, not Y's."""

    def x(events: Sequence[Event], out: Outputs) -> None:
        out.stamp("st", "m1", "m2", covers=["h"])
        out.put_latest_field("h", "f", 300, "x wins")

    def y(events: Sequence[Event], out: Outputs) -> None:
        out.put_latest_field("h", "g", 100, "y older")

    app, consumer = await started(make_app, [("x", Scripted(on_events=x)), ("y", Scripted(on_events=y))])
    await app.redis.set(app.keys.state("st"), "m1")
    await app.redis.hset(app.keys.state("h"), mapping={"f": "200 held", "g": "200 held newer"})
    await app.redis.xadd(app.keys.events, bal())
    assert await consumer.step(block_ms=1) == 1
    assert await app.redis.get(app.keys.state("st")) == "m2"
    assert (await held(app, "h"))["f"] == (300, "x wins")
    assert (await held(app, "h"))["g"] == (200, "held newer")


# --- 3. Outputs.merge takes over hashes -----------------------------------------------------------


@pytest.mark.parametrize("target_holds_key", [False, True], ids=["takes-over", "member-wise"])
def test_merge_keeps_the_newest_member_whether_it_takes_over_or_not(target_holds_key: bool) -> None:
    """Into a target without the hash, the spent buffer's member dict is taken over; into one
    holding it, members are merged one by one. Either way the target holds the same, and later
    merges keep last-ts-wins (an equal ts: the later buffer's)."""
    target = Outputs(START_MS)
    extra: dict[str, tuple[int, str]] = {}
    if target_holds_key:
        target.put_latest_field("h", "mine", 1, "already here")
        extra = {"mine": (1, "already here")}
    b = Outputs(START_MS)
    b.put_latest_field("h", "f", 10, "b")
    b.put_latest_field("h", "g", 10, "b g")
    b.put_latest_field("other", "x", 3, "b x")
    target.merge(b)
    assert target.fields == {"h": {**extra, "f": (10, "b"), "g": (10, "b g")}, "other": {"x": (3, "b x")}}

    c = Outputs(START_MS)
    c.put_latest_field("h", "f", 9, "c older")
    c.put_latest_field("h", "k", 1, "c new member")
    target.merge(c)
    assert target.fields["h"] == {**extra, "f": (10, "b"), "g": (10, "b g"), "k": (1, "c new member")}

    d = Outputs(START_MS)
    d.put_latest_field("h", "f", 11, "d newer")
    d.put_latest_field("h", "g", 10, "d same ts")
    target.merge(d)
    assert target.fields["h"] == {**extra, "f": (11, "d newer"), "g": (10, "d same ts"), "k": (1, "c new member")}

    target.put_latest_field("h", "f", 5, "own call, older")  # the target's own calls: same rule
    assert target.fields["h"]["f"] == (11, "d newer")
    assert target.fields["other"] == {"x": (3, "b x")}


@pytest.mark.parametrize("newer", ["first", "second"])
async def test_two_plugins_writing_one_member_the_newer_ts_wins(make_app: Any, path: str, newer: str) -> None:
    """Through dispatch and the writer: whichever plugin is merged first, the newer ts is held."""
    ts = {"first": 10, "second": 20} if newer == "second" else {"first": 20, "second": 10}

    def writer_of(name: str) -> Scripted:
        return Scripted(on_events=lambda events, out: out.put_latest_field("h", "f", ts[name], name))

    app, consumer = await started(make_app, [("second", writer_of("second")), ("first", writer_of("first"))])
    assert call_order(app) == ["first", "second"]
    await app.redis.xadd(app.keys.events, bal())
    assert await consumer.step(block_ms=1) == 1
    assert await held(app, "h") == {"f": (20, newer)}


# --- 4. the TYPE memo -------------------------------------------------------------------------------


async def test_two_writes_to_a_stream_of_the_wrong_type_are_refused(make_app: Any, path: str) -> None:
    """The script asks TYPE once per key; the second write to the key is refused all the same,
    and so is everything else in the batch."""

    def on_tick(out: Outputs) -> None:
        out.emit("pub", {"n": "1"})
        out.emit("broken", {"n": "1"})
        out.emit("broken", {"n": "2"})
        out.put_latest_field("h", "f", START_MS, "x")

    app, consumer = await started(make_app, [("p", Scripted(on_tick=on_tick))])
    await app.redis.set(app.keys.stream("broken"), "a string, not a stream")
    with pytest.raises(WriteError, match="WRONGTYPE XADD .*broken"):
        await consumer.tick()
    assert await app.redis.get(app.keys.stream("broken")) == "a string, not a stream"
    assert not await app.redis.exists(app.keys.stream("pub"), app.keys.state("h"))


@pytest.mark.parametrize("holds", ["hash", "string"])
async def test_one_key_written_as_two_types_is_refused(make_app: Any, path: str, holds: str) -> None:
    """One key, written by HSET and by STAMP in one batch: whichever type it holds, the memo
    remembers that type (not just "checked"), so the command wanting the other one is refused
    and nothing is written."""

    def on_tick(out: Outputs) -> None:
        out.emit("pub", {"n": "1"})
        out.hset("k", {"n": "1"})
        out.stamp("k", "", "m")

    app, consumer = await started(make_app, [("p", Scripted(on_tick=on_tick))])
    key = app.keys.state("k")
    if holds == "hash":
        await app.redis.hset(key, "held", "x")
    else:
        await app.redis.set(key, "held")
    refused = "STAMP" if holds == "hash" else "HSET"
    with pytest.raises(WriteError, match=f"WRONGTYPE {refused} "):
        await consumer.tick()
    if holds == "hash":
        assert await app.redis.hgetall(key) == {"held": "x"}
    else:
        assert await app.redis.get(key) == "held"
    assert not await app.redis.exists(app.keys.stream("pub"))


# --- 5. hiredis packing -----------------------------------------------------------------------------

needs_hiredis = pytest.mark.skipif(not HIREDIS_AVAILABLE, reason="hiredis is not installed")


def navstream_client(decode_responses: bool = True) -> aioredis.Redis:
    settings = load_settings(env={}, overrides={"redis": {"url": REDIS_URL}})
    return default_connect(settings)(decode_responses)


def redis_py_packed(conn: Any, args: tuple[Any, ...]) -> bytes:
    return b"".join(PythonRespSerializer(conn._buffer_cutoff, conn.encoder.encode).pack(*args))


@needs_hiredis
@pytest.mark.parametrize("decode_responses", [True, False])
async def test_default_connect_packs_with_hiredis(decode_responses: bool) -> None:
    client = navstream_client(decode_responses)
    try:
        cls = client.connection_pool.connection_class
        assert issubclass(cls, _HiredisPacking) and issubclass(cls, aioredis.Connection)
        conn = client.connection_pool.make_connection()
        assert type(conn).pack_command is _HiredisPacking.pack_command
        assert with_hiredis_packing(client).connection_pool.connection_class is cls  # not wrapped twice
    finally:
        await client.aclose()


PACKED: dict[str, tuple[Any, ...]] = {
    "str": ("SET", "key", "value"),
    "empty str": ("SET", "key", ""),
    "non-ascii str": ("SET", "clé", "ünï € ✓"),
    "bytes": (b"SET", b"key", b"\x00\xff raw"),
    "int": ("XADD", "s", "MAXLEN", "~", 1000, "*", "n", -7),
    "big int": ("SET", "key", 2**70),
    "float": ("SET", "key", 0.1),
    "float 1/3": ("SET", "key", 1 / 3),
    "float exponent": ("SET", "key", 1.5e300),
    "float negative zero": ("SET", "key", -0.0),
    "long value": ("SET", "key", "x" * 100_000),
    "multi-word first arg": ("CONFIG GET", "maxmemory"),
    "multi-word first arg, bytes": (b"CLIENT SETNAME", "name"),
    "bytearray": ("SET", "key", bytearray(b"ab")),
    "memoryview": ("SET", "key", memoryview(b"ab")),
}
FALLS_BACK = {"multi-word first arg", "multi-word first arg, bytes"}
#: hiredis takes some buffer types itself (3.5: a memoryview, not a bytearray); either way right.
EITHER_WAY = {"bytearray", "memoryview"}


@needs_hiredis
@pytest.mark.parametrize("case", list(PACKED))
async def test_hiredis_packs_what_redis_py_packs(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Byte for byte redis-py's own (Python) packing. A multi-word command name goes through
    redis-py's hiredis serializer (which splits it), as does a buffer hiredis refuses."""
    fallback = _HiredisPacking._serializer
    fell_back: list[str] = []

    class Spy:
        def pack(self, *args: Any) -> list[bytes]:
            fell_back.append(case)
            return fallback.pack(*args)

    monkeypatch.setattr(_HiredisPacking, "_serializer", Spy())
    client = navstream_client()
    try:
        conn = client.connection_pool.make_connection()
        args = PACKED[case]
        assert b"".join(conn.pack_command(*args)) == redis_py_packed(conn, args)
        if case not in EITHER_WAY:
            assert fell_back == ([case] if case in FALLS_BACK else [])
    finally:
        await client.aclose()


@needs_hiredis
@pytest.mark.parametrize(
    "args", [("SET", "key", None), ("SET", None), ("CONFIG GET", None)], ids=["value", "key", "after a multi-word name"]
)
async def test_hiredis_packing_refuses_none_as_redis_py_does(args: tuple[Any, ...]) -> None:
    client = navstream_client()
    try:
        conn = client.connection_pool.make_connection()
        with pytest.raises(DataError):
            conn.pack_command(*args)
        with pytest.raises(DataError):
            redis_py_packed(conn, args)
    finally:
        await client.aclose()


@needs_hiredis
async def test_hiredis_packing_round_trips_on_a_real_redis(real_backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real server understands what hiredis packed: commands, a pipeline, non-ASCII, bytes."""
    packed: list[Any] = []
    pack = _HiredisPacking.pack_command

    def spy(self: Any, *args: Any) -> list[bytes]:
        packed.append(args[0])
        return pack(self, *args)

    monkeypatch.setattr(_HiredisPacking, "pack_command", spy)
    client, raw = navstream_client(True), navstream_client(False)
    key, hkey = f"{real_backend.prefix}:hiredis", f"{real_backend.prefix}:hiredis-h"
    text = "ünï € ✓ 価格"
    try:
        assert await client.set(key, text)
        assert await client.get(key) == text
        assert await raw.get(key) == text.encode()
        await raw.hset(hkey, mapping={"int": 7, "float": 0.1, "bytes": b"\x00\xff", "mv": memoryview(b"mv")})
        async with client.pipeline(transaction=True) as pipe:
            pipe.hset(hkey, "text", text)
            pipe.hincrby(hkey, "int", 3)
            pipe.execute_command("CONFIG GET", "maxmemory")
            results = await pipe.execute()
        assert results[:2] == [1, 10]
        assert await raw.hgetall(hkey) == {
            b"int": b"10",
            b"float": b"0.1",
            b"bytes": b"\x00\xff",
            b"mv": b"mv",
            b"text": text.encode(),
        }
        assert "SET" in packed and "HSET" in packed and "CONFIG GET" in packed
    finally:
        await client.aclose()
        await raw.aclose()


# --- 6. tune_gc -------------------------------------------------------------------------------------


@pytest.fixture
def gc_restored() -> Iterator[None]:
    """Starts from CPython's defaults with nothing frozen; gives the previous thresholds back."""
    previous = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*previous)


def test_tune_gc_freezes_startup_objects_and_raises_the_thresholds(gc_restored: None) -> None:
    assert gc.get_freeze_count() == 0 and gc.get_threshold() != GC_THRESHOLD
    tune_gc()
    assert gc.get_threshold() == GC_THRESHOLD
    assert gc.get_freeze_count() > 0


async def test_the_loop_tunes_gc_once_startup_is_done(make_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Consumer.run`` calls ``tune_gc`` after the startup hooks and before the first tick
    (the spy stands in for it, so this test leaves the collector as it found it)."""
    happened: list[str] = []

    class Recorder:
        @hookimpl
        def navstream_startup(self) -> None:
            happened.append("startup")

        @hookimpl
        def navstream_tick(self, now_ms: int, out: Outputs) -> None:
            happened.append("tick")

    monkeypatch.setattr(consumer_module, "tune_gc", lambda: happened.append("tune_gc"))
    monkeypatch.setattr(consumer_module, "tune_switching", lambda: happened.append("tune_switching"))
    app = make_app(plugins=[("recorder", Recorder())])
    assert await within(5, Consumer(app, until_idle_s=0.05).run()) == 0
    assert happened[:4] == ["startup", "tune_gc", "tune_switching", "tick"]
    assert happened.count("tune_gc") == happened.count("tune_switching") == 1


def test_tune_switching_lets_the_loop_take_the_gil_back_within_half_a_millisecond() -> None:
    previous = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        tune_switching()
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S) and SWITCH_INTERVAL_S <= 0.0005
    finally:
        sys.setswitchinterval(previous)
