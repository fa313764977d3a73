"""``Outputs.index``: members added to a sorted set with ``ZADD NX`` in the batch write, on both
write paths: the first score stands (a redelivery does not move an order in the risk gate's
window), and a key of the wrong type refuses the whole batch, acknowledging nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from support import START_MS

from navstream import Event, Outputs, hookimpl
from navstream.loop.consumer import Consumer
from navstream.store.writer import WriteError


class Indexing:
    @hookimpl
    def navstream_events(self, events: Sequence[Event], out: Outputs) -> None:
        out.index("seen", {f"{e.asset}": e.ts for e in events})  # type: ignore[attr-defined]


def bal(asset: str, ts: int) -> dict[str, str]:
    return {"type": "balance", "venue": "v", "account": "a", "asset": asset, "balance": "1", "ts": str(ts)}


async def test_the_first_score_stands_across_batches(make_app: Any, path: str) -> None:
    app = make_app(plugins=[("p", Indexing())])
    consumer = Consumer(app)
    await consumer.setup()
    for e in (bal("BTC", START_MS), bal("ETH", START_MS + 5)):
        await app.redis.xadd(app.keys.events, e)
    while await consumer.step(block_ms=1):
        pass
    await app.redis.xadd(app.keys.events, bal("BTC", START_MS + 99))
    assert await consumer.step(block_ms=1) == 1
    key = app.keys.state("seen")
    assert await app.redis.zrange(key, 0, -1, withscores=True) == [("BTC", START_MS), ("ETH", START_MS + 5)]


async def test_a_wrong_typed_key_refuses_the_batch(make_app: Any, path: str) -> None:
    app = make_app(plugins=[("p", Indexing())])
    consumer = Consumer(app)
    await consumer.setup()
    await app.redis.set(app.keys.state("seen"), "a string")
    await app.redis.xadd(app.keys.events, bal("BTC", START_MS))
    with pytest.raises(WriteError, match="WRONGTYPE"):
        await consumer.step(block_ms=1)
    pending = await app.raw.xpending(app.keys.events, app.group)
    assert pending["pending"] == 1


def test_bad_members_and_scores_raise_in_the_plugins_call() -> None:
    out = Outputs(START_MS)
    with pytest.raises(ValueError, match="invalid member"):
        out.index("k", {"": 1})
    with pytest.raises(TypeError, match="must be an int"):
        out.index("k", {"m": 1.5})  # type: ignore[dict-item]
    out.index("k", {"m": 1})
    other = Outputs(START_MS)
    other.index("k", {"m": 2, "n": 3})
    out.merge(other)
    assert out.indexes == {"k": {"m": 1, "n": 3}}  # merged like Redis would: the first stands
