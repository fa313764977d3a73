"""Outputs primitives through the real writer, on fakeredis and a real Redis, both write paths.

``put_latest_field`` (last-``ts``-wins per field), ``emit(..., subject=, version=, every_s=)``
and ``alert(..., every_s=, version=)`` (at most once per version and period, across consumers),
``stamp``, the BADSTATE refusal, and the argument checks. Every test that takes ``path`` runs once through the
batch script and once through the pipelined fallback (``MAX_SCRIPT_ARGS`` forced to 0), and
checks afterwards that the path it asked for is the one that wrote.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from support import START_MS

from navstream import App, Event, ManualClock, Outputs, hookimpl
from navstream.contract.outputs import MAX_EVERY_S, Once, parse_field
from navstream.loop.batch import Entry
from navstream.loop.consumer import Consumer
from navstream.store.writer import BatchWrite, WriteError, Writer

TickFn = Callable[[Outputs], object]
EventsFn = Callable[[Sequence[Event], Outputs], object]


class Scripted:
    """A plugin whose hooks do what the test tells them; it records what its calls raised."""

    def __init__(self, on_tick: TickFn | None = None, on_events: EventsFn | None = None) -> None:
        self.on_tick = on_tick
        self.on_events = on_events
        self.raised: list[BaseException] = []

    def _call(self, fn: Callable[..., object] | None, *args: Any) -> None:
        if fn is None:
            return
        try:
            fn(*args)
        except Exception as exc:
            self.raised.append(exc)
            raise

    @hookimpl
    def navstream_tick(self, now_ms: int, out: Outputs) -> None:
        self._call(self.on_tick, out)

    @hookimpl
    def navstream_events(self, events: Sequence[Event], out: Outputs) -> None:
        self._call(self.on_events, events, out)


async def started(make_app: Any, plugin: Any, **kw: Any) -> tuple[App, Consumer]:
    app = make_app(plugins=[("p", plugin)], **kw)
    consumer = Consumer(app)
    await consumer.setup()
    return app, consumer


async def entries(app: App, stream: str) -> list[dict[str, str]]:
    return [f for _, f in await app.redis.xrange(app.keys.stream(stream))]


async def alerts(app: App, code: str) -> list[dict[str, str]]:
    return [f for _, f in await app.redis.xrange(app.keys.alerts) if f["code"] == code]


async def held(app: App, key: str) -> dict[str, tuple[int, str]]:
    return {k: parse_field(v) for k, v in (await app.redis.hgetall(app.keys.state(key))).items()}


async def redeliver(app: App, consumer: Consumer) -> int:
    """Hand this consumer's pending entries to its handler again (what a reclaim does), at once."""
    [[stream, items]] = await app.raw.xreadgroup(app.group, app.consumer_name, {app.keys.events: "0"})
    found = [Entry(stream.decode(), i.decode(), f, deliveries=2) for i, f in items]
    if found:
        await consumer.handler.handle(found)
    return len(found)


async def pending(app: App) -> int:
    return int((await app.redis.xpending(app.keys.events, app.group))["pending"])


def bal(ts: int = START_MS) -> dict[str, str]:
    return {"type": "balance", "venue": "v", "account": "a", "asset": "BTC", "balance": "1", "ts": str(ts)}


# --- put_latest_field ---------------------------------------------------------------------------


async def test_put_latest_field_last_ts_wins_per_field(make_app: Any, path: str) -> None:
    todo: list[tuple[str, str, int, str]] = []
    plugin = Scripted(on_tick=lambda out: [out.put_latest_field(*w) for w in todo])
    app, consumer = await started(make_app, plugin)

    todo[:] = [("h", "a", 100, "a@100"), ("h", "b", 100, "b@100"), ("other", "a", 1, "o@1")]
    await consumer.tick()
    assert await held(app, "h") == {"a": (100, "a@100"), "b": (100, "b@100")}

    # older ignored, per field; equal ts applies (a redelivered duplicate rewrites itself)
    todo[:] = [("h", "a", 99, "a@99"), ("h", "b", 100, "b@100 again"), ("h", "c", 5, "c@5")]
    await consumer.tick()
    assert await held(app, "h") == {"a": (100, "a@100"), "b": (100, "b@100 again"), "c": (5, "c@5")}

    todo[:] = [("h", "a", 101, "a@101")]  # a newer one, for that field alone
    await consumer.tick()
    assert await held(app, "h") == {"a": (101, "a@101"), "b": (100, "b@100 again"), "c": (5, "c@5")}
    assert await held(app, "other") == {"a": (1, "o@1")}  # keys are independent


async def test_put_latest_field_coalesces_within_one_buffer(make_app: Any, path: str) -> None:
    def writes(out: Outputs) -> None:
        out.put_latest_field("h", "f", 20, "new")
        out.put_latest_field("h", "f", 15, "older, later in the batch")
        out.put_latest_field("h", "g", 7, "first")
        out.put_latest_field("h", "g", 7, "same ts, later: wins")

    out = Outputs(START_MS)
    writes(out)
    assert out.fields == {"h": {"f": (20, "new"), "g": (7, "same ts, later: wins")}}
    merged = Outputs(START_MS)
    merged.put_latest_field("h", "f", 25, "merged later but newer")
    merged.put_latest_field("h", "g", 8, "newer in the target")
    merged.merge(out)  # the same rule across plugin buffers
    assert merged.fields == {"h": {"f": (25, "merged later but newer"), "g": (8, "newer in the target")}}

    app, consumer = await started(make_app, Scripted(on_tick=writes))
    await consumer.tick()
    assert await held(app, "h") == {"f": (20, "new"), "g": (7, "same ts, later: wins")}


@pytest.mark.parametrize("payload", ["", "x", "two words", " leading space", '{"json": "a b"}', "ünï €", "7 8"])
@pytest.mark.parametrize("ts", [0, 1, START_MS, -5])
def test_parse_field_round_trip(payload: str, ts: int) -> None:
    assert parse_field(f"{ts} {payload}") == (ts, payload)


@pytest.mark.parametrize("raw", ["", "garbage", "12", "abc def", "1.5 x", " 12 x"])
def test_parse_field_rejects_garbage(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_field(raw)


async def test_parse_field_reads_what_the_writer_wrote(make_app: Any, path: str) -> None:
    payloads = {"p": "", "q": "a b  c", "r": '{"balance": "1.5"}'}
    plugin = Scripted(on_tick=lambda out: [out.put_latest_field("h", k, START_MS, v) for k, v in payloads.items()])
    app, consumer = await started(make_app, plugin)
    await consumer.tick()
    assert await app.redis.hget(app.keys.state("h"), "q") == f"{START_MS} a b  c"
    assert await held(app, "h") == {k: (START_MS, v) for k, v in payloads.items()}


# --- BADSTATE -----------------------------------------------------------------------------------


def badstate_plugin() -> Scripted:
    def on_events(events: Sequence[Event], out: Outputs) -> None:
        out.put_latest_field("h", "good", START_MS, "fine")
        out.put_latest_field("h", "bad", START_MS, "would overwrite")
        out.put_latest_field("h2", "x", START_MS, "another key")
        out.emit("pub", {"n": "1"})
        out.emit("pub", {"n": "once"}, subject="s", version="1", every_s=10)
        out.alert("thing", "warning", "once-alert", every_s=10)

    return Scripted(on_events=on_events)


async def assert_nothing_written(app: App, garbage: str) -> None:
    assert await app.redis.hgetall(app.keys.state("h")) == {"bad": garbage}
    assert not await app.redis.exists(app.keys.state("h2"), app.keys.stream("pub"))
    assert await app.redis.keys(app.keys.state("once", "*")) == []
    assert await alerts(app, "thing") == []


# Values every path refuses ("" and "1.5 x" hold no integer ts; "x 12" starts with text).
GARBAGE = ["", "abc", "1.5 x", "x 12", "no ts here"]
# Values that hold digits but no '<ts> <payload>': refused just the same.
BARE = ["12", "--12 x"]


@pytest.mark.parametrize("garbage", GARBAGE + BARE)
async def test_a_field_without_ts_refuses_the_whole_batch(make_app: Any, path: str, garbage: str) -> None:
    """On both write paths alike, digits without "<ts> <payload>" included."""
    app, consumer = await started(make_app, badstate_plugin())
    await app.redis.hset(app.keys.state("h"), "bad", garbage)
    await app.redis.xadd(app.keys.events, bal())
    with pytest.raises(WriteError, match="BADSTATE .*bad.* has no ts; nothing written"):
        await consumer.step(block_ms=1)
    await assert_nothing_written(app, garbage)
    assert await pending(app) == 1  # not acknowledged: it comes back
    (reason,) = (await app.redis.hgetall(app.keys.failures)).values()
    assert "BADSTATE" in reason

    await app.redis.hdel(app.keys.state("h"), "bad")  # an operator deletes the bad member
    assert await redeliver(app, consumer) == 1
    assert await pending(app) == 0
    assert await held(app, "h") == {"good": (START_MS, "fine"), "bad": (START_MS, "would overwrite")}
    assert [e["n"] for e in await entries(app, "pub")] == ["1", "once"]
    assert len(await alerts(app, "thing")) == 1


@pytest.mark.parametrize("held_ts", ["abc", "", "--5", "1.5", " 12", "0x10", "1e3"])
async def test_a_put_latest_ts_that_is_no_integer_refuses_the_whole_batch(
    make_app: Any, path: str, held_ts: str
) -> None:
    """Both paths refuse a snapshot whose held ``ts`` is no integer, before writing anything
    ("--5" once passed the pipelined check and failed inside MULTI/EXEC, after other writes ran)."""

    def on_events(events: Sequence[Event], out: Outputs) -> None:
        out.put_latest("snap", START_MS, {"a": "new"})
        out.emit("pub", {"n": "1"})
        out.emit("pub", {"v": "A"}, subject="s", version="A", every_s=10)

    app, consumer = await started(make_app, Scripted(on_events=on_events))
    await app.redis.hset(app.keys.state("snap"), mapping={"ts": held_ts, "a": "old"})
    await app.redis.xadd(app.keys.events, bal())
    with pytest.raises(WriteError) as refused:
        await consumer.step(block_ms=1)
    assert await app.redis.hgetall(app.keys.state("snap")) == {"ts": held_ts, "a": "old"}
    assert not await app.redis.exists(app.keys.stream("pub"))  # nothing else was written either
    assert await app.redis.keys(app.keys.state("once", "*")) == []
    assert await pending(app) == 1
    assert re.search("BADSTATE .*snap.* has a non-numeric ts; nothing written", str(refused.value))


# --- emit once per version and period ----------------------------------------------------------


async def versions(app: App, stream: str = "pub") -> list[str]:
    return [e["v"] for e in await entries(app, stream)]


async def markers(app: App) -> list[str]:
    return sorted(await app.redis.keys(app.keys.state("once", "*")))


def emitting(todo: list[tuple[str, str]]) -> Scripted:
    """Emits to ``pub``, on every tick, one once-entry per (subject, version) in ``todo``, every 10 s."""
    return Scripted(
        on_tick=lambda out: [out.emit("pub", {"s": s, "v": v}, subject=s, version=v, every_s=10) for s, v in todo]
    )


async def test_emit_once_same_version_is_written_once_per_period(make_app: Any, path: str) -> None:
    clock = ManualClock(START_MS)
    app, consumer = await started(make_app, emitting([("s", "A")]), clock=clock)
    await consumer.tick()
    await consumer.tick()  # the same instant
    assert await versions(app) == ["A"]
    # the marker documented on Once: "<until ms> <version>", until judged by the consumer's clock
    assert await app.redis.get(app.keys.state("once", "entry:pub:s")) == f"{START_MS + 10_000} A"

    clock.advance(9_999)
    await consumer.tick()
    assert await versions(app) == ["A"]  # +9.999 s: still inside the period
    clock.advance(1)
    await consumer.tick()
    assert await versions(app) == ["A", "A"]  # +10 s: written again, and a new period starts
    clock.advance(9_999)
    await consumer.tick()
    assert await versions(app) == ["A", "A"]
    clock.advance(1)
    await consumer.tick()
    assert await versions(app) == ["A", "A", "A"]


async def test_emit_once_a_new_version_is_written_at_once_and_an_old_one_again(make_app: Any, path: str) -> None:
    todo = [("s", "A")]
    clock = ManualClock(START_MS)
    app, consumer = await started(make_app, emitting(todo), clock=clock)
    await consumer.tick()
    todo[:] = [("s", "B")]
    clock.advance(1)
    await consumer.tick()
    assert await versions(app) == ["A", "B"]  # a change is published at once

    todo[:] = [("s", "A")]  # A -> B -> A within the period: A is a change again
    clock.advance(1)
    await consumer.tick()
    await consumer.tick()
    assert await versions(app) == ["A", "B", "A"]

    clock.advance(9_999)  # +10.001 s: the period runs from the last A written (+2 ms)
    await consumer.tick()
    assert await versions(app) == ["A", "B", "A"]
    clock.advance(1)
    await consumer.tick()
    assert await versions(app) == ["A", "B", "A", "A"]


async def test_emit_once_subjects_are_independent_and_the_newest_in_a_buffer_wins(make_app: Any, path: str) -> None:
    def writes(out: Outputs) -> None:
        out.emit("pub", {"v": "1"}, subject="s", version="1", every_s=10)
        out.emit("pub", {"v": "2"}, subject="s", version="2", every_s=10)  # newer, same subject: wins
        out.emit("pub", {"v": "t"}, subject="t", version="1", every_s=10)  # another subject
        out.emit("other", {"v": "o"}, subject="s", version="1", every_s=10)  # same subject, another stream
        out.emit("pub", {"v": "plain"})  # not once: written every time

    out = Outputs(START_MS)
    writes(out)
    assert [(s, f["v"], o.key, o.version) for s, f, o in out.streams_once] == [
        ("pub", "2", "entry:pub:s", "2"),
        ("pub", "t", "entry:pub:t", "1"),
        ("other", "o", "entry:other:s", "1"),
    ]
    merged = Outputs(START_MS)
    merged.emit("pub", {"v": "0"}, subject="s", version="0", every_s=10)
    merged.emit("pub", {"v": "u"}, subject="u", version="1", every_s=10)
    merged.merge(out)  # across plugin buffers too, the buffer merged last wins (in the subject's place)
    assert [f["v"] for _, f, _ in merged.streams_once] == ["2", "u", "t", "o"]

    app, consumer = await started(make_app, Scripted(on_tick=writes))
    await consumer.tick()
    assert await versions(app) == ["plain", "2", "t"]
    assert await versions(app, "other") == ["o"]
    await consumer.tick()
    assert await versions(app) == ["plain", "2", "t", "plain"]
    assert await versions(app, "other") == ["o"]
    assert [m.rsplit(":state:once:", 1)[1] for m in await markers(app)] == [
        "entry:other:s",
        "entry:pub:s",
        "entry:pub:t",
    ]


@pytest.mark.parametrize("concurrently", [False, True])
async def test_two_consumers_racing_write_one_entry_per_version(make_app: Any, path: str, concurrently: bool) -> None:
    todo = [("s", "A")]
    clock = ManualClock(START_MS)
    one, c1 = await started(make_app, emitting(todo), clock=clock, name="one")
    two, c2 = await started(make_app, emitting(todo), clock=clock, name="two")

    async def both() -> None:
        if concurrently:
            await asyncio.gather(c1.tick(), c2.tick())
        else:
            await c1.tick()
            await c2.tick()

    await both()
    assert await versions(one) == await versions(two) == ["A"]  # one stream, one entry
    todo[:] = [("s", "B")]
    clock.advance(1)
    await both()
    todo[:] = [("s", "A")]
    clock.advance(1)
    await both()
    assert await versions(one) == ["A", "B", "A"]
    clock.advance(9_999)
    await both()
    assert await versions(one) == ["A", "B", "A"]
    clock.advance(1)
    await both()
    assert await versions(one) == ["A", "B", "A", "A"]


async def test_an_entry_and_an_alert_never_share_a_marker(make_app: Any, path: str) -> None:
    """Marker keys are ``entry:<stream>:<subject>`` and ``alert:<code>:<subject>``, with ':' (and '%')
    escaped in the parts, so no stream, code or subject can run into another's marker."""

    def on_tick(out: Outputs) -> None:
        out.alert("stale", "warning", "v is stale", subject="v", every_s=10)
        out.emit("alert", {"v": "1"}, subject="stale:v", version="1", every_s=10)  # was alert:stale:v too
        out.alert("a:b", "warning", "one", subject="c", every_s=10)
        out.alert("a", "warning", "another", subject="b:c", every_s=10)  # was alert:a:b:c too
        out.emit("pub", {"v": "%"}, subject="x%3Ay", version="1", every_s=10)
        out.emit("pub", {"v": ":"}, subject="x:y", version="1", every_s=10)  # escaped: not x%3Ay

    app, consumer = await started(make_app, Scripted(on_tick=on_tick))
    await consumer.tick()
    assert len(await alerts(app, "stale")) == 1
    assert await versions(app, "alert") == ["1"]
    assert len(await alerts(app, "a:b")) == len(await alerts(app, "a")) == 1
    assert await versions(app) == ["%", ":"]
    assert [m.rsplit(":state:once:", 1)[1] for m in await markers(app)] == [
        "alert:a%3Ab:c",
        "alert:a:b%3Ac",
        "alert:stale:v",
        "entry:alert:stale%3Av",
        "entry:pub:x%253Ay",
        "entry:pub:x%3Ay",
    ]


# --- alert every_s -------------------------------------------------------------------------------


def alerting() -> Scripted:
    """Raises, on every tick, the alert ``thing`` about venue ``v`` at most every 10 s."""
    return Scripted(on_tick=lambda out: out.alert("thing", "warning", "still wrong", venue="v", every_s=10))


async def test_alert_every_s_is_one_alert_per_period(make_app: Any, path: str) -> None:
    def on_tick(out: Outputs) -> None:
        out.alert("thing", "warning", "first in the buffer", venue="v", every_s=10)  # replaced
        out.alert("thing", "warning", "still wrong", venue="v", every_s=10)  # the newest stands
        out.alert("thing", "warning", "another venue", venue="w", every_s=10)
        out.alert("thing", "warning", "own subject", venue="v", subject="x", every_s=10)

    clock = ManualClock(START_MS)
    one, c1 = await started(make_app, Scripted(on_tick=on_tick), clock=clock, name="one")
    _, c2 = await started(make_app, Scripted(on_tick=on_tick), clock=clock, name="two")
    await c1.tick()
    await c1.tick()
    await c2.tick()
    first = await alerts(one, "thing")
    assert [(a["message"], a.get("venue"), a["ts"]) for a in first] == [
        ("still wrong", "v", str(START_MS)),
        ("another venue", "w", str(START_MS)),
        ("own subject", "v", str(START_MS)),
    ]
    assert first[0] == {
        "code": "thing",
        "severity": "warning",
        "message": "still wrong",
        "ts": str(START_MS),
        "venue": "v",
    }

    clock.advance(9_999)
    await c2.tick()
    await c1.tick()
    assert await alerts(one, "thing") == first
    clock.advance(1)
    await c2.tick()
    await c1.tick()
    later = (await alerts(one, "thing"))[3:]
    assert [(a["message"], a["ts"]) for a in later] == [
        ("still wrong", str(START_MS + 10_000)),
        ("another venue", str(START_MS + 10_000)),
        ("own subject", str(START_MS + 10_000)),
    ]


def episodes(version: list[str]) -> Scripted:
    """Raises, on every tick, the alert ``thing`` at most every 10 s, as version ``version[0]``."""
    return Scripted(
        on_tick=lambda out: out.alert("thing", "warning", f"episode {version[0]}", every_s=10, version=version[0])
    )


async def messages(app: App) -> list[str]:
    return [a["message"] for a in await alerts(app, "thing")]


async def test_alert_a_new_version_is_written_at_once(make_app: Any, path: str) -> None:
    version = ["1"]
    clock = ManualClock(START_MS)
    app, consumer = await started(make_app, episodes(version), clock=clock)
    await consumer.tick()
    await consumer.tick()
    version[0] = "2"  # a new episode: not swallowed by the last one's period
    clock.advance(1)
    await consumer.tick()
    await consumer.tick()
    assert await messages(app) == ["episode 1", "episode 2"]
    version[0] = "1"  # back to 1 within the period: the marker holds 2, so 1 is new again
    clock.advance(1)
    await consumer.tick()
    await consumer.tick()
    assert await messages(app) == ["episode 1", "episode 2", "episode 1"]
    clock.advance(9_999)
    await consumer.tick()
    assert await messages(app) == ["episode 1", "episode 2", "episode 1"]
    clock.advance(1)
    await consumer.tick()
    assert await messages(app) == ["episode 1", "episode 2", "episode 1", "episode 1"]


async def test_two_consumers_write_an_alert_version_again_like_one_does(make_app: Any, path: str) -> None:
    """A consumer skips sending only alerts without versions (their marker can hold nothing
    else); a versioned alert another consumer replaced meanwhile is written again at once."""
    version = ["1"]
    clock = ManualClock(START_MS)
    one, c1 = await started(make_app, episodes(version), clock=clock, name="one")
    _, c2 = await started(make_app, episodes(version), clock=clock, name="two")
    await c1.tick()
    version[0] = "2"
    clock.advance(1)
    await c2.tick()
    assert await messages(one) == ["episode 1", "episode 2"]
    version[0] = "1"
    clock.advance(1)
    await c1.tick()  # Redis holds version 2: 1 is new again, as in the test above
    assert await messages(one) == ["episode 1", "episode 2", "episode 1"]


async def test_a_once_alert_is_logged_only_when_written(
    make_app: Any, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    def on_tick(out: Outputs) -> None:
        out.alert("thing", "warning", "still wrong", venue="v", every_s=10)
        out.alert("plain", "info", "logged every time")

    caplog.set_level(logging.INFO, logger="navstream.alerts")
    clock = ManualClock(START_MS)
    one, c1 = await started(make_app, Scripted(on_tick=on_tick), clock=clock, name="one")
    _, c2 = await started(make_app, Scripted(on_tick=on_tick), clock=clock, name="two")

    def logged(code: str) -> list[str]:
        return [
            str(r.alert_ts)
            for r in caplog.records  # type: ignore[attr-defined]
            if r.name == "navstream.alerts" and getattr(r, "code", None) == code
        ]

    await c1.tick()
    await c1.tick()
    assert logged("thing") == [str(START_MS)]
    await c2.tick()  # not written by this one: not logged either
    assert logged("thing") == [str(START_MS)]
    clock.advance(10_000)
    await c2.tick()
    await c1.tick()
    await c2.tick()
    assert logged("thing") == [str(START_MS), str(START_MS + 10_000)]
    assert [a["ts"] for a in await alerts(one, "thing")] == logged("thing")
    assert len(logged("plain")) == len(await alerts(one, "plain")) == 6


async def test_a_consumer_does_not_send_a_once_alert_it_knows_written(
    make_app: Any, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []  # consumer name per once-alert sent to Redis
    commands = Writer._commands

    def spy(self: Writer, batch: BatchWrite) -> Any:
        writes, acks, once = commands(self, batch)
        sent.extend(self.app.consumer_name for c in writes if c[0] == "XADDONCE" and c[1] == self.app.keys.alerts)
        return writes, acks, once

    monkeypatch.setattr(Writer, "_commands", spy)
    clock = ManualClock(START_MS)
    one, c1 = await started(make_app, alerting(), clock=clock, name="one")
    _, c2 = await started(make_app, alerting(), clock=clock, name="two")
    await c1.tick()
    assert sent == ["one"] and len(await alerts(one, "thing")) == 1
    await c1.tick()
    clock.advance(9_999)
    await c1.tick()
    assert sent == ["one"]  # known written until +10 s: not even sent
    await c2.tick()  # another consumer knows nothing: it sends, and Redis's marker refuses
    assert sent == ["one", "two"] and len(await alerts(one, "thing")) == 1
    await c2.tick()
    assert sent == ["one", "two"]  # now it knows too

    clock.advance(1)
    await c1.tick()
    await c2.tick()  # its marker ran out too: sent, refused (c1 wrote it), and known until +20 s
    await c2.tick()
    assert sent == ["one", "two", "one", "two"]
    assert [a["ts"] for a in await alerts(one, "thing")] == [str(START_MS), str(START_MS + 10_000)]


# --- a failed batch write ---------------------------------------------------------------------


async def test_a_failed_batch_write_does_not_spend_the_period(make_app: Any, path: str) -> None:
    """On the tick path: a refused write leaves no marker, so the fixed tick writes at once.

    The refused write comes last in the batch, after the alert's and the first entry's."""

    def on_tick(out: Outputs) -> None:
        out.alert("thing", "warning", "once", every_s=10)
        out.emit("pub", {"v": "A"}, subject="s", version="A", every_s=10)
        out.emit("broken", {"v": "B"}, subject="s", version="B", every_s=10)

    app, consumer = await started(make_app, Scripted(on_tick=on_tick))
    await app.redis.set(app.keys.stream("broken"), "a string, not a stream")
    for _ in range(2):
        with pytest.raises(WriteError, match="WRONGTYPE"):
            await consumer.tick()
        assert await alerts(app, "thing") == []
        assert await versions(app) == []
        assert await markers(app) == []

    await app.redis.delete(app.keys.stream("broken"))
    await consumer.tick()  # the same instant: nothing of the period was spent
    assert len(await alerts(app, "thing")) == 1
    assert await versions(app) == ["A"]
    assert await versions(app, "broken") == ["B"]
    await consumer.tick()  # and now it is spent
    assert len(await alerts(app, "thing")) == 1
    assert await versions(app) == ["A"]
    assert await versions(app, "broken") == ["B"]


@pytest.mark.parametrize("broken", ["hash", "marker"])
async def test_a_failed_batch_keeps_its_entries_pending_and_its_period_unspent(
    make_app: Any, path: str, broken: str
) -> None:
    """On the events path: the batch stays pending and its redelivery writes what it owed.

    Broken is a state hash that holds a list, or the marker of the batch's last once-entry."""

    def on_events(events: Sequence[Event], out: Outputs) -> None:
        out.alert("thing", "warning", "once", every_s=10)
        out.emit("pub", {"v": "A"}, subject="s", version="A", every_s=10)
        out.hset("h", {"n": "1"})
        out.emit("late", {"v": "L"}, subject="s", version="L", every_s=10)

    app, consumer = await started(make_app, Scripted(on_events=on_events))
    key = app.keys.state("h") if broken == "hash" else app.keys.state("once", "entry:late:s")
    await app.redis.rpush(key, "a list")
    await app.redis.xadd(app.keys.events, bal())
    with pytest.raises(WriteError, match="WRONGTYPE"):
        await consumer.step(block_ms=1)
    assert await alerts(app, "thing") == []
    assert await versions(app) == await versions(app, "late") == []
    assert await markers(app) == ([] if broken == "hash" else [key])
    assert await pending(app) == 1

    await app.redis.delete(key)
    assert await redeliver(app, consumer) == 1
    assert await pending(app) == 0
    assert len(await alerts(app, "thing")) == 1
    assert await versions(app) == ["A"]
    assert await versions(app, "late") == ["L"]
    assert await app.redis.hgetall(app.keys.state("h")) == {"n": "1"}

    await app.redis.xadd(app.keys.events, bal(START_MS + 1))  # within the period: nothing again
    assert await consumer.step(block_ms=1) == 1
    assert len(await alerts(app, "thing")) == 1
    assert await versions(app) == ["A"]
    assert await versions(app, "late") == ["L"]


async def test_a_refused_batch_still_logs_its_once_alerts(
    make_app: Any, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """As Writer.write says: if the write fails, the alert still reached the logs (the pipelined
    path's own WriteError once skipped that)."""

    def on_tick(out: Outputs) -> None:
        out.alert("thing", "warning", "once", every_s=10)
        out.emit("broken", {"n": "1"})

    caplog.set_level(logging.INFO, logger="navstream.alerts")
    app, consumer = await started(make_app, Scripted(on_tick=on_tick))
    await app.redis.set(app.keys.stream("broken"), "a string, not a stream")
    with pytest.raises(WriteError, match="WRONGTYPE"):
        await consumer.tick()
    assert await alerts(app, "thing") == []
    assert [r.getMessage() for r in caplog.records if getattr(r, "code", None) == "thing"] == ["once"]


# --- stamp ----------------------------------------------------------------------------------------


async def test_stamp_sets_mine_while_seen_holds_and_marks_any_other_writer(make_app: Any, path: str) -> None:
    todo: list[tuple[str, str, str]] = []
    app, consumer = await started(make_app, Scripted(on_tick=lambda out: [out.stamp(*s) for s in todo]))

    async def stamp(key: str, seen: str, mine: str) -> str | None:
        todo[:] = [(key, seen, mine)]
        await consumer.tick()
        return await app.redis.get(app.keys.state(key))  # type: ignore[no-any-return]

    assert await stamp("k", "", "m1") == "m1"  # no stamp yet, none seen
    assert await stamp("k", "m1", "m2") == "m2"  # still the one read: nobody wrote since
    assert await stamp("k", "m1", "m3") == "!m3"  # someone wrote since: every copy is stale
    assert await stamp("k", "!m3", "m4") == "m4"  # read again after the '!': exact again
    assert await stamp("k", "", "m5") == "!m5"  # "no stamp yet", but there was one
    assert await stamp("gone", "m4", "m6") == "!m6"  # a stamp seen that is not there any more

    todo[:] = [("a", "", "x"), ("b", "y", "z"), ("a", "", "x2")]  # per key, the last call wins
    await consumer.tick()
    assert await app.redis.mget(app.keys.state("a"), app.keys.state("b")) == ["x2", "!z"]

    await app.redis.hset(app.keys.state("h"), "f", "v")  # not a string: the whole batch is refused
    todo[:] = [("k", "!m5", "m7"), ("h", "", "x")]
    with pytest.raises(WriteError, match="WRONGTYPE"):
        await consumer.tick()
    assert await app.redis.get(app.keys.state("k")) == "!m5"


# --- argument checks -------------------------------------------------------------------------------


BAD_CALLS: dict[str, tuple[type[Exception], Callable[[Outputs], object]]] = {
    "alert subject without every_s": (ValueError, lambda o: o.alert("c", "warning", "m", subject="s")),
    "emit every_s without subject": (ValueError, lambda o: o.emit("pub", {"k": "v"}, every_s=10)),
    "emit subject without every_s": (ValueError, lambda o: o.emit("pub", {"k": "v"}, subject="s")),
    "emit every_s = 0": (ValueError, lambda o: o.emit("pub", {"k": "v"}, subject="s", every_s=0)),
    "alert every_s = 0": (ValueError, lambda o: o.alert("c", "warning", "m", every_s=0.0)),
    "emit every_s < 0": (ValueError, lambda o: o.emit("pub", {"k": "v"}, subject="s", every_s=-1)),
    "alert every_s < 0": (ValueError, lambda o: o.alert("c", "warning", "m", every_s=-0.5)),
    "emit every_s 1e16": (ValueError, lambda o: o.emit("pub", {"k": "v"}, subject="s", every_s=1e16)),
    "alert every_s past MAX_EVERY_S": (ValueError, lambda o: o.alert("c", "warning", "m", every_s=MAX_EVERY_S + 1)),
    "emit every_s inf": (ValueError, lambda o: o.emit("pub", {"k": "v"}, subject="s", every_s=math.inf)),
    "emit every_s nan": (ValueError, lambda o: o.emit("pub", {"k": "v"}, subject="s", every_s=math.nan)),
    "alert every_s inf": (ValueError, lambda o: o.alert("c", "warning", "m", every_s=math.inf)),
    "alert every_s nan": (ValueError, lambda o: o.alert("c", "warning", "m", every_s=math.nan)),
    "emit every_s str": (ValueError, lambda o: o.emit("pub", {"k": "v"}, subject="s", every_s="10")),
    "emit every_s bool": (ValueError, lambda o: o.emit("pub", {"k": "v"}, subject="s", every_s=True)),
    "emit subject int": (TypeError, lambda o: o.emit("pub", {"k": "v"}, subject=1, every_s=10)),
    "alert subject int": (TypeError, lambda o: o.alert("c", "warning", "m", subject=1, every_s=10)),
    "emit version int": (TypeError, lambda o: o.emit("pub", {"k": "v"}, subject="s", version=7, every_s=10)),
    "put_latest_field payload int": (TypeError, lambda o: o.put_latest_field("h", "f", START_MS, 1)),
    "put_latest_field payload bytes": (TypeError, lambda o: o.put_latest_field("h", "f", START_MS, b"x")),
    "alert version without every_s": (ValueError, lambda o: o.alert("c", "warning", "m", version="2")),
    "alert version int": (TypeError, lambda o: o.alert("c", "warning", "m", version=2, every_s=10)),
    "stamp seen None": (TypeError, lambda o: o.stamp("k", None, "m")),
    "stamp mine empty": (ValueError, lambda o: o.stamp("k", "", "")),
    "stamp mine starts with !": (ValueError, lambda o: o.stamp("k", "", "!m")),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_arguments_raise_in_the_call(case: str) -> None:
    """...and buffer nothing."""
    error, call = BAD_CALLS[case]
    out = Outputs(START_MS)
    with pytest.raises(error):
        call(out)
    assert (out.streams, out.streams_once, out.fields, out.stamps, out.alerts) == ({}, [], {}, {}, [])


@pytest.mark.parametrize("case", list(BAD_CALLS))
async def test_a_bad_call_fails_that_plugin_alone(make_app: Any, path: str, case: str) -> None:
    error, call = BAD_CALLS[case]
    reached: list[bool] = []

    def bad(out: Outputs) -> None:
        out.emit("lost", {"n": "1"})
        out.emit("lost", {"v": "A"}, subject="s", version="A", every_s=10)
        out.alert("lost", "warning", "lost too", every_s=10)
        out.put_latest_field("lost", "f", START_MS, "lost")
        out.stamp("lost-stamp", "", "m")
        call(out)
        reached.append(True)

    def good(out: Outputs) -> None:
        out.emit("pub", {"v": "plain"})
        out.emit("pub", {"v": "A"}, subject="s", version="A", every_s=10)
        out.alert("fine", "info", "from the good plugin", every_s=10)
        out.put_latest_field("h", "f", START_MS, "kept")

    bad_plugin, good_plugin = Scripted(on_tick=bad), Scripted(on_tick=good)
    app = make_app(plugins=[("good", good_plugin), ("bad", bad_plugin)])
    consumer = Consumer(app)
    await consumer.setup()
    await consumer.tick()

    assert [type(e) for e in bad_plugin.raised] == [error] and reached == []
    assert good_plugin.raised == []
    assert await versions(app) == ["plain", "A"]
    assert len(await alerts(app, "fine")) == 1
    assert await held(app, "h") == {"f": (START_MS, "kept")}
    assert not await app.redis.exists(app.keys.stream("lost"), app.keys.state("lost"), app.keys.state("lost-stamp"))
    assert await alerts(app, "lost") == []
    [failed] = await alerts(app, "plugin_error")
    assert f"plugin 'bad': {error.__name__}" in failed["message"]


async def test_a_period_redis_cannot_store_is_refused_in_the_call(make_app: Any, path: str) -> None:
    """1e16 s is past what ``SET ... PX`` takes: refused by the plugin's call, not the batch
    write (where it would fail part way); MAX_EVERY_S itself is stored."""
    out = Outputs(START_MS)
    for every_s in (1e16, MAX_EVERY_S * (1 + 1e-9)):
        with pytest.raises(ValueError, match="every_s"):
            out.emit("pub", {"k": "v"}, subject="s", every_s=every_s)
        with pytest.raises(ValueError, match="every_s"):
            out.alert("c", "warning", "m", every_s=every_s)

    def on_tick(out: Outputs) -> None:
        out.emit("pub", {"v": "A"}, subject="s", version="A", every_s=MAX_EVERY_S)
        out.alert("thing", "warning", "rarely", every_s=MAX_EVERY_S)

    app, consumer = await started(make_app, Scripted(on_tick=on_tick))
    await consumer.tick()
    assert await versions(app) == ["A"]
    assert len(await alerts(app, "thing")) == 1
    for marker in await markers(app):
        assert (MAX_EVERY_S - 60) * 1000 < await app.redis.pttl(marker) <= MAX_EVERY_S * 1000


def test_once_records_the_period_in_ms() -> None:
    out = Outputs(START_MS)
    out.emit("pub", {"k": "v"}, subject="s", version="7", every_s=0.0001)
    assert out.streams_once == [("pub", {"k": "v"}, Once("entry:pub:s", "7", 1))]  # never 0 ms

    out.alert(
        "c",
        "critical",
        "same code and subject: replaced by the newest",
        venue="v",
        account="a",
        asset="BTC",
        source="src",
        every_s=1,
    )
    out.alert("c", "warning", "m", venue="v", account="a", asset="BTC", source="src", every_s=2.5)
    out.alert("d", "info", "m", asset="BTC", every_s=1)
    out.alert("e", "info", "m", subject="mine", every_s=60)
    out.alert("f", "info", "m", subject="x:y", every_s=1, version="ep-5")
    assert [(a.code, a.message, a.once) for a in out.alerts] == [
        ("c", "m", Once("alert:c:v/a/BTC/src", "1", 2500, versioned=False)),
        ("d", "m", Once("alert:d://BTC/", "1", 1000, versioned=False)),
        ("e", "m", Once("alert:e:mine", "1", 60_000, versioned=False)),
        ("f", "m", Once("alert:f:x%3Ay", "ep-5", 1000)),
    ]
    assert "once" not in out.alerts[0].fields()
