"""``Outputs.emit_first``: the first version of an entry is stored and every later emit of the
same field repeats it, on both write paths and across consumers (the risk gate's decisions)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from support import START_MS

from navstream import App, Event, Outputs, hookimpl
from navstream.loop.consumer import Consumer
from navstream.store.writer import WriteError


class Answering:
    """Emits, for every event, ``answer`` as the first-stored entry of field ``order``."""

    def __init__(self, answer: str, order: str = "o-1") -> None:
        self.answer = answer
        self.order = order

    @hookimpl
    def navstream_events(self, events: Sequence[Event], out: Outputs) -> None:
        out.emit_first(
            "decisions",
            {"order_id": self.order, "decision": self.answer, "note": "é ünï"},
            key="answers",
            field=self.order,
        )


def bal(ts: int = START_MS) -> dict[str, str]:
    return {"type": "balance", "venue": "v", "account": "a", "asset": "BTC", "balance": "1", "ts": str(ts)}


async def started(make_app: Any, plugin: Any, name: str) -> tuple[App, Consumer]:
    app = make_app(plugins=[("p", plugin)], name=name)
    consumer = Consumer(app)
    await consumer.setup()
    return app, consumer


async def decisions(app: App) -> list[dict[str, str]]:
    return [f for _, f in await app.redis.xrange(app.keys.stream("decisions"))]


async def test_the_first_answer_is_stored_and_repeated(make_app: Any, path: str) -> None:
    """A second consumer with another answer emits the first one, byte for byte."""
    first, c1 = await started(make_app, Answering("approve"), "one")
    _, c2 = await started(make_app, Answering("veto"), "two")
    await first.redis.xadd(first.keys.events, bal())
    assert await c1.step(block_ms=1) == 1
    await first.redis.xadd(first.keys.events, bal(START_MS + 1))
    assert await c2.step(block_ms=1) == 1
    answers = await decisions(first)
    assert answers == [{"order_id": "o-1", "decision": "approve", "note": "é ünï"}] * 2
    stored = await first.redis.hget(first.keys.state("answers"), "o-1")
    assert json.loads(stored) == ["order_id", "o-1", "decision", "approve", "note", "é ünï"]


async def test_each_field_keeps_its_own_first_answer(make_app: Any, path: str) -> None:
    app, consumer = await started(make_app, Answering("approve", "o-1"), "one")
    _, other = await started(make_app, Answering("veto", "o-2"), "two")
    await app.redis.xadd(app.keys.events, bal())
    await consumer.step(block_ms=1)
    await app.redis.xadd(app.keys.events, bal(START_MS + 1))
    await other.step(block_ms=1)
    assert [(d["order_id"], d["decision"]) for d in await decisions(app)] == [("o-1", "approve"), ("o-2", "veto")]


@pytest.mark.parametrize("garbage", ["not json", "[]", '["odd"]', "[1, 2]", '{"a": "b"}'])
async def test_a_stored_value_that_is_no_entry_refuses_the_batch(make_app: Any, path: str, garbage: str) -> None:
    """Nothing is written (no answer made up, nothing acknowledged) until the member is fixed."""
    app, consumer = await started(make_app, Answering("approve"), "one")
    await app.redis.hset(app.keys.state("answers"), "o-1", garbage)
    await app.redis.xadd(app.keys.events, bal())
    with pytest.raises(WriteError, match="BADSTATE .*answers.* is no stored entry; nothing written"):
        await consumer.step(block_ms=1)
    assert await decisions(app) == []
    assert await app.redis.hget(app.keys.state("answers"), "o-1") == garbage


async def test_a_state_key_of_another_type_refuses_the_batch(make_app: Any, path: str) -> None:
    app, consumer = await started(make_app, Answering("approve"), "one")
    await app.redis.set(app.keys.state("answers"), "a string")
    await app.redis.xadd(app.keys.events, bal())
    with pytest.raises(WriteError, match="WRONGTYPE"):
        await consumer.step(block_ms=1)
    assert await decisions(app) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda o: o.emit_first("events", {"a": "b"}, key="k", field="f"),
        lambda o: o.emit_first("x:y", {"a": "b"}, key="k", field="f"),
        lambda o: o.emit_first("d", {"a": "b"}, key="bad key", field="f"),
        lambda o: o.emit_first("d", {"a": "b"}, key="k", field=""),
        lambda o: o.emit_first("d", {}, key="k", field="f"),
        lambda o: o.emit_first("d", {"a": 1}, key="k", field="f"),
    ],
    ids=["reserved stream", "colon", "key", "field", "no fields", "not str"],
)
def test_bad_arguments_raise_in_the_call(call: Any) -> None:
    out = Outputs(START_MS)
    with pytest.raises((ValueError, TypeError)):
        call(out)
    assert out.streams_first == []
